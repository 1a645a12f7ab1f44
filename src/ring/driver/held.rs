//! Held sends ([`OpDriver::push_send_held`](crate::ring::OpDriver::push_send_held)):
//! a send whose bytes its pusher keeps (a [`HeldSend`]), recorded only by
//! its token in `Driver::held`, and the bytes handed back
//! ([`Driver::take_back`]) once its final completion was reaped.

use io_uring::cqueue;

use super::{user_data, Driver};
use crate::ring::op::{Completion, HeldSend, Op, SendBuf, Sock, SqeId, Token};
use crate::ring::reap::{held_token, KIND_HELD, NOT_HELD};

impl Driver {
    /// See [`OpDriver::push_send_held`]. Only a send on a [`Sock::Kept`]
    /// socket is held: nothing else keeps a held socket open meanwhile.
    pub fn push_send_held(
        &mut self,
        fd: Sock,
        buf: SendBuf,
        start: usize,
        token: u64,
    ) -> Result<(SqeId, HeldSend), SendBuf> {
        let t = Token::from_raw(token);
        let i = t.index() as usize;
        if !matches!(fd, Sock::Kept(_)) || self.held.get(i).is_some_and(|&h| h != NOT_HELD) {
            return Err(buf);
        }
        if self.held.len() <= i {
            self.held.resize(i + 1, NOT_HELD);
        }
        let ud = user_data(KIND_HELD, t.index(), t.gen());
        // Moving the `SendBuf` below moves no byte: the SQE points at its
        // heap (or static) bytes, which stay where they are while held.
        let sqe = self.send_sqe(&fd, &buf, start).user_data(ud);
        self.held[i] = token;
        self.queue(sqe);
        Ok((
            SqeId::from_token(Token::from_raw(ud)),
            HeldSend::new(ud, buf),
        ))
    }

    /// See [`OpDriver::take_back`].
    pub fn take_back(&mut self, held: HeldSend) -> Result<SendBuf, HeldSend> {
        match held_token(&self.held, Token::from_raw(held.ud())) {
            Some(_) => Err(held),
            None => Ok(held.release()),
        }
    }

    /// Whether any held send is still in flight (a ring being dropped
    /// waits for them as for its slots).
    pub(super) fn held_in_flight(&self) -> bool {
        self.held.iter().any(|&t| t != NOT_HELD)
    }

    /// The final completion of the held send `ud` names (`None`: stale).
    #[inline(always)]
    pub(super) fn held_done(&mut self, ud: Token, cqe: &cqueue::Entry) -> Option<Completion> {
        let token = held_token(&self.held, ud)?;
        self.held[ud.index() as usize] = NOT_HELD;
        Some(Completion {
            token,
            result: cqe.result(),
            flags: cqe.flags(),
            op: Op::Sent,
            more: false,
        })
    }
}
