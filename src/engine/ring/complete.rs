//! What a completion means for the op it belongs to: routing it by step
//! to the open, WAIT, multishot or I/O code, and what the op does once
//! none of its SQEs is in flight (resume, keep waiting, or finish).

use super::io_done::io_step;
use super::*;
use crate::engine::{BufferMode, PipeId};
use crate::protocol::NtStatus;
use crate::ring::{Completion, Op, OpDriver, Token};

impl<D: OpDriver> Core<D> {
    #[inline(always)]
    pub(super) fn completion(&mut self, c: Completion) {
        let t = Token::from_raw(c.token);
        let (index, gen, step) = (t.index(), t.gen(), t.kind());
        let mut key = (index, gen);
        if step == ST_MULTISHOT {
            // The token names the pipe (see `arm_multishot`).
            let pipe = PipeId {
                ring: self.ring_index,
                index,
                gen,
            };
            if c.more {
                return self.multishot_chunk_cqe(pipe, c);
            }
            match self
                .pipes
                .get_mut(index, gen)
                .and_then(|pe| pe.multishot.key())
            {
                Some(k) => key = k,
                None => return debug_assert!(false, "a multishot receive its pipe does not know"),
            }
        }
        let (index, gen) = key;
        let Core { ops, drv, cfg, .. } = self;
        let Some(e) = ops.get_mut(index, gen) else {
            return;
        };
        if !c.more {
            e.pending = e.pending.saturating_sub(1);
            if step != ST_DEADLINE && step != ST_WAIT_DEADLINE {
                e.chain_done = (e.chain_done + 1).min(e.chain_len);
            }
        }
        let cancelled = e.cancelled;
        match step {
            ST_CONNECT | ST_HELLO | ST_STATUS | ST_DEADLINE => self.open_step(key, step, &c),
            ST_MULTISHOT => return self.multishot_step(key, c),
            ST_WAIT_CONNECT | ST_WAIT_TIMER | ST_WAIT_DEADLINE => {
                let r = c.result;
                drop(c);
                self.wait_step(key, step, r);
            }
            _ => {
                let plain = cfg.buffers == BufferMode::Plain;
                if io_step(&mut e.kind, step, c, drv, plain) {
                    self.claim_reply(key);
                } else if !cancelled {
                    // Most I/O completions (a SEND, a probe): `chain_over`
                    // with the entry in hand.
                    return match e.next_if_over() {
                        // Still in flight, or sent and waiting for the
                        // multishot receive's next chunk (the common case).
                        None | Some(Next::Wait) => {}
                        Some(next) => {
                            let pipe = e.pipe;
                            self.after_chain(key, next, pipe)
                        }
                    };
                }
            }
        }
        if cancelled {
            // Keep cancelling whatever part of the chain is still running.
            self.cancel_chain(key);
        }
        self.chain_over(key);
    }

    /// A chunk of a pipe's multishot receive (the receive stays armed): to
    /// the pipe's waiting requests or its pushback. Routed by the pipe,
    /// which the chunk needs anyway; the receive's op entry is not touched
    /// (with many busy pipes, one cache miss less per reply).
    #[inline(always)]
    fn multishot_chunk_cqe(&mut self, pipe: PipeId, c: Completion) {
        let nonempty = self.drv.features().sock_nonempty && c.sock_nonempty();
        match c.op {
            Op::Chunk if c.result > 0 => self.multishot_lent_chunk(pipe, nonempty),
            Op::Chunk => {}
            _ => debug_assert!(false, "a multishot chunk of another op"),
        }
    }

    /// What an op does once none of its SQEs is in flight: resume (the
    /// rest of a short send, a receive after an empty pool), keep waiting
    /// (for a multishot chunk), or finish.
    pub(super) fn chain_over(&mut self, key: (u32, u32)) {
        let Some(e) = self.ops.get_mut(key.0, key.1) else {
            return;
        };
        let Some(next) = e.next_if_over() else {
            return;
        };
        let pipe = e.pipe;
        self.after_chain(key, next, pipe);
    }

    /// Does what `next` says for op `key` (of `pipe`), whose chain is over.
    fn after_chain(&mut self, key: (u32, u32), next: Next, pipe: Option<PipeId>) {
        match next {
            Next::Finish => self.finish(key),
            // Sent; the reply comes with the multishot receive's next chunk.
            Next::Wait => {}
            Next::Resume => match pipe.map(|p| self.pipe_fd(p)) {
                Some(Ok((fd, _))) => self.push_resume(key, fd),
                Some(Err(s)) => self.fail_now(key, s),
                None => debug_assert!(false, "a resumed request without a pipe"),
            },
        }
    }

    pub(super) fn fail_now(&mut self, key: (u32, u32), status: NtStatus) {
        if let Some(e) = self.ops.get_mut(key.0, key.1) {
            set_status(&mut e.kind, status);
        }
        self.finish_if_idle(key);
    }
}

impl OpEntry {
    /// What the op does next once none of its SQEs is in flight (`None`
    /// while one is): a cancelled op finishes, any other as its kind says.
    #[inline(always)]
    fn next_if_over(&self) -> Option<Next> {
        if self.pending > 0 {
            return None;
        }
        Some(if self.cancelled {
            Next::Finish
        } else {
            next_step(&self.kind)
        })
    }
}

/// See [`Core::chain_over`].
enum Next {
    Finish,
    Wait,
    Resume,
}

#[inline(always)]
fn next_step(kind: &Kind) -> Next {
    match kind {
        Kind::Transceive {
            status: None,
            input,
            sent,
            reply,
            from,
            ..
        } => {
            if *sent < input.len() || matches!(reply, Reply::Retry) {
                Next::Resume
            } else if *from == ReplyFrom::Multishot && matches!(reply, Reply::Awaited) {
                Next::Wait
            } else {
                Next::Finish
            }
        }
        Kind::Read {
            status: None,
            reply,
            from,
            ..
        } => match reply {
            Reply::Retry => Next::Resume,
            Reply::Awaited if *from == ReplyFrom::Multishot => Next::Wait,
            _ => Next::Finish,
        },
        Kind::Write {
            status: None,
            data,
            sent,
            ..
        } if *sent < data.len() => Next::Resume,
        Kind::WaitPipe { status: None, .. } => {
            debug_assert!(false, "a WAIT undecided with nothing in flight");
            Next::Wait
        }
        _ => Next::Finish,
    }
}

fn set_status(kind: &mut Kind, s: NtStatus) {
    let slot = match kind {
        Kind::Open { status, .. }
        | Kind::Transceive { status, .. }
        | Kind::Read { status, .. }
        | Kind::Write { status, .. }
        | Kind::Peek { status, .. }
        | Kind::WaitPipe { status, .. } => status,
        Kind::Multishot => return,
    };
    if slot.is_none() {
        *slot = Some(s);
    }
}
