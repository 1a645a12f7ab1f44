//! Held sends ([`OpDriver::push_send_held`](crate::ring::OpDriver::push_send_held)):
//! a send whose bytes its pusher keeps (a [`HeldSend`]), recorded only by
//! its token in `Driver::held`, and the bytes handed back
//! ([`Driver::take_back`]) once its final completion was reaped. A quiet
//! one's completion that sent every byte is not handed out at all.

use io_uring::cqueue;

use super::sqe::MAX_SQE_BYTES;
use super::{user_data, Driver};
use crate::ring::op::{Completion, HeldSend, Op, SendBuf, Sock, SqeId, Token};
use crate::ring::reap::{held_rec, HeldRec, KIND_HELD};

impl Driver {
    /// See [`OpDriver::push_send_held`]. Only a send on a [`Sock::Kept`]
    /// socket is held: nothing else keeps a held socket open meanwhile.
    pub fn push_send_held(
        &mut self,
        fd: Sock,
        buf: SendBuf,
        start: usize,
        token: u64,
        quiet: bool,
    ) -> Result<(SqeId, HeldSend), SendBuf> {
        let t = Token::from_raw(token);
        let i = t.index() as usize;
        if !matches!(fd, Sock::Kept(_)) || self.held.get(i).is_some_and(HeldRec::in_flight) {
            return Err(buf);
        }
        if self.held.len() <= i {
            self.held.resize(i + 1, HeldRec::NONE);
        }
        let ud = user_data(KIND_HELD, t.index(), t.gen());
        // Moving the `SendBuf` below moves no byte: the SQE points at its
        // heap (or static) bytes, which stay where they are while held.
        let sqe = self.send_sqe(&fd, &buf, start).user_data(ud);
        // Untold only when this one SQE carries every byte left (a longer
        // send goes in pieces, each one told).
        let rest = buf.len().saturating_sub(start);
        let quiet = match u32::try_from(rest) {
            Ok(n) if quiet && n > 0 && rest <= MAX_SQE_BYTES => n,
            _ => 0,
        };
        self.held[i] = HeldRec { token, quiet };
        self.queue(sqe);
        Ok((
            SqeId::from_token(Token::from_raw(ud)),
            HeldSend::new(ud, buf),
        ))
    }

    /// See [`OpDriver::take_back`].
    pub fn take_back(&mut self, held: HeldSend) -> Result<SendBuf, HeldSend> {
        match held_rec(&self.held, Token::from_raw(held.ud())) {
            Some(_) => Err(held),
            None => Ok(held.release()),
        }
    }

    /// See [`OpDriver::tell_held`].
    pub fn tell_held(&mut self, held: &HeldSend) {
        let ud = Token::from_raw(held.ud());
        if held_rec(&self.held, ud).is_some() {
            self.held[ud.index() as usize].quiet = 0;
        }
    }

    /// Whether any held send is still in flight (a ring being dropped
    /// waits for them as for its slots).
    pub(super) fn held_in_flight(&self) -> bool {
        self.held.iter().any(HeldRec::in_flight)
    }

    /// The final completion of the held send `ud` names (`None`: stale,
    /// or a quiet send's that sent every byte, which goes untold).
    #[inline(always)]
    pub(super) fn held_done(&mut self, ud: Token, cqe: &cqueue::Entry) -> Option<Completion> {
        let rec = held_rec(&self.held, ud)?;
        self.held[ud.index() as usize] = HeldRec::NONE;
        if rec.untold(cqe.result()) {
            return None;
        }
        Some(Completion {
            token: rec.token,
            result: cqe.result(),
            flags: cqe.flags(),
            op: Op::Sent,
            more: false,
        })
    }
}
