//! Finishing a request: releasing what it holds, keeping bytes that
//! belong to the stream, and building the caller's result.

use std::collections::VecDeque;

use super::io::live_entry;
use super::overflow::{self, message_result, transceive_result};
use super::*;
use crate::engine::command::Outcome;
use crate::engine::{PipeId, Transfer};
use crate::protocol::PeekReply;
use crate::protocol::{fsctl, NtStatus};
use crate::ring::OpDriver;

impl<D: OpDriver> Core<D> {
    /// A read the pipe's pushback answers at once: at most `max_out` of its
    /// bytes (message mode: of its next message).
    pub(super) fn read_pushback(&mut self, pipe: PipeId, max_out: usize, notify: Notify) {
        let msg_mode = self.message_mode();
        let t = match self.pipes.get_mut(pipe.index, pipe.gen) {
            Some(pe) if msg_mode => {
                let (data, more) =
                    overflow::take_message(&mut pe.pushback, &mut pe.msg_left, max_out)
                        .unwrap_or_default();
                overflow::message_result(data, more)
            }
            Some(pe) => Transfer {
                status: NtStatus::SUCCESS,
                data: overflow::take_pushback(&mut pe.pushback, max_out),
            },
            None => Transfer {
                status: NtStatus::SUCCESS,
                data: Vec::new(),
            },
        };
        self.notify(notify, Ok(Outcome::Transfer(t)))
    }

    /// A read of a byte pipe that the bytes already received answer at
    /// once (`reply_from` says the pushback, as `start_io` would serve
    /// it), appended to `buf` from where they are: the rest of the chunk
    /// being handled, in the driver's pool buffer, or the pushback, whose
    /// buffer goes back to the driver once emptied. `None`: the read takes
    /// the regular way.
    pub(super) fn read_append_now(
        &mut self,
        pipe: PipeId,
        buf: &mut Vec<u8>,
        max_out: usize,
    ) -> Option<usize> {
        if self.message_mode() || max_out > MAX_IO_BYTES {
            return None;
        }
        // The pipe's entry is looked up once (as in `start_io`).
        let rules = self.reply_rules(pipe);
        let lent = self.lent_rest.filter(|&(p, _)| p == pipe);
        let pe = live_entry(&mut self.pipes, self.ring_index, pipe).ok()?;
        let io = PipeIo::Read { max_out };
        if rules.reply_from(pe, &io, max_out) != Ok(ReplyFrom::Pushback) {
            return None;
        }
        if let Some((p, off)) = lent {
            let rest = self.drv.lent_chunk().get(off..).unwrap_or_default();
            let n = rest.len().min(max_out);
            buf.extend_from_slice(&rest[..n]);
            self.lent_rest = (n < rest.len()).then_some((p, off + n));
            return Some(n);
        }
        let n = pe.pushback.len().min(max_out);
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&pe.pushback.as_slice()[..n]);
        if n == pe.pushback.len() {
            let emptied = pe.pushback.take_emptied();
            self.drv.recycle(emptied);
        } else {
            pe.pushback.advance(n);
        }
        Some(n)
    }

    /// Moves the rest of a lent chunk (`Core::lent_rest`) into its pipe's
    /// pushback, before anything else may look there. Inlined: every
    /// request and chunk passes here, and mostly there is no rest.
    #[inline(always)]
    pub(super) fn settle_lent(&mut self) {
        if let Some((pipe, off)) = self.lent_rest.take() {
            self.settle_lent_rest(pipe, off);
        }
    }

    fn settle_lent_rest(&mut self, pipe: PipeId, off: usize) {
        let mut rest = self.drv.spare_buf();
        rest.extend_from_slice(self.drv.lent_chunk().get(off..).unwrap_or_default());
        match self.pipes.get_mut(pipe.index, pipe.gen) {
            Some(pe) => pe.pushback.give_back(rest),
            None => self.drv.recycle(rest),
        }
    }

    /// Removes a request whose last SQE completed (or that needs none any
    /// more), lets its pipe go on, and tells its caller the result.
    pub(super) fn finish(&mut self, key: (u32, u32)) {
        // What is needed is taken out and the rest dropped in place: moving
        // the whole entry out read all of its cache lines (a `memmove` of
        // 208 bytes, most of them cold, at 4 096 busy pipes).
        let Some(e) = self.ops.get_mut(key.0, key.1) else {
            return;
        };
        let (pipe, pipe_next, cancelled, session) = (e.pipe, e.pipe_next, e.cancelled, e.session);
        let notify = e.notify.take();
        // The common request (a byte-pipe transceive whose reply was
        // claimed from the stream) gives up only its reply, `max_out` and
        // input; any other its whole state, moved out here and again into
        // `result_of`.
        let claimed = if cancelled || self.cfg.dialect.is_message_mode() {
            None
        } else {
            take_claimed(&mut e.kind)
        };
        let mut taken = match claimed {
            Some(c) => Taken::Claimed(c),
            None => Taken::Whole(std::mem::replace(&mut e.kind, Kind::Multishot)),
        };
        self.ops.discard(key.0);
        match taken {
            // The next waiting open starts in the ring loop.
            Taken::Whole(Kind::Open { .. }) => self.opening -= 1,
            Taken::Whole(Kind::WaitPipe { .. }) => self.waits -= 1,
            _ => {}
        }
        let kind = match &mut taken {
            Taken::Whole(kind) => Some(kind),
            Taken::Claimed(_) => None,
        };
        let resume = self.leave_pipe(key, pipe, cancelled, kind);
        if let Some(p) = pipe {
            self.pipe_op_done(p, key, pipe_next);
            if let Some(resume) = resume {
                for (io, notify) in resume {
                    self.start_io(p, io, notify);
                }
            }
        }
        let mut kind = match taken {
            Taken::Claimed(c) => {
                self.recycle_input(c.input);
                let Some(notify) = notify else {
                    return;
                };
                let t = claimed_transfer(c.max_out, c.reply);
                return self.notify(notify, Ok(Outcome::Transfer(t)));
            }
            Taken::Whole(kind) => kind,
        };
        // Registered slots go back to the pool (no op holds them any more);
        // the sent request's buffer goes to the driver for a later reply.
        if let Kind::Transceive { reg, input, .. } = &mut kind {
            if let Some(r) = reg.take() {
                self.drv.reg_release(r);
            }
            self.recycle_input(std::mem::take(input));
        }
        if cancelled {
            return;
        }
        if matches!(kind, Kind::Open { .. }) {
            return self.finish_open(kind, notify, session);
        }
        let Some(notify) = notify else {
            return;
        };
        let res = self.result_of(pipe, kind);
        self.notify(notify, res);
    }

    /// A finished transceive's request bytes go to the driver for a later
    /// reply (a held send's once the driver gives them back).
    fn recycle_input(&mut self, mut input: Input) {
        input.settle(&mut self.drv);
        if let Input::Ready(b) = input {
            self.drv.recycle_sent(b);
        }
    }

    /// The finished op `key` leaves its pipe's waiters; a cancelled one
    /// gives back the bytes it took (from `kind`, the op's kind; `None` for
    /// a claimed transceive, never a cancelled one) and stops holding later
    /// requests back. Returns the deferred requests that may start now.
    fn leave_pipe(
        &mut self,
        key: (u32, u32),
        pipe: Option<PipeId>,
        cancelled: bool,
        kind: Option<&mut Kind>,
    ) -> Option<VecDeque<(PipeIo, Notify)>> {
        let pe = pipe.and_then(|p| self.pipes.get_mut(p.index, p.gen))?;
        // A waiter that ends without its chunk (cancelled, failed).
        pe.waiters.remove(key);
        if cancelled {
            // Bytes the cancelled request took after all stay in the
            // stream, in FRONT of the pushback: they came off the socket
            // before anything there (a multishot waiter takes the front of
            // a chunk whose rest went to the pushback; a linked receive runs
            // only while the pushback is empty).
            if let Some(
                Kind::Transceive {
                    reply: Reply::Got { data: d, .. },
                    ..
                }
                | Kind::Read {
                    reply: Reply::Got { data: d, .. },
                    ..
                },
            ) = kind
            {
                if self.cfg.dialect.is_message_mode() {
                    overflow::give_back_message(&mut pe.pushback, &mut pe.msg_left, d);
                } else {
                    pe.pushback.give_back(std::mem::take(d));
                }
            }
            pe.draining = pe.draining.saturating_sub(1);
        }
        pe.startable()
    }

    /// The caller's result of a finished request (not an open).
    fn result_of(&mut self, pipe: Option<PipeId>, kind: Kind) -> Result<Outcome, NtStatus> {
        let msg_mode = self.message_mode();
        match kind {
            Kind::Transceive {
                status: Some(s), ..
            }
            | Kind::Read {
                status: Some(s), ..
            }
            | Kind::Write {
                status: Some(s), ..
            }
            | Kind::Peek {
                status: Some(s), ..
            } => Err(s),
            // Message mode: the framing decided whether more of the
            // message is left (overflow.rs).
            Kind::Transceive {
                from: ReplyFrom::Chain | ReplyFrom::Pushback | ReplyFrom::Multishot,
                reply: Reply::Got { data, more },
                ..
            }
            | Kind::Read {
                reply: Reply::Got { data, more },
                ..
            } if msg_mode => Ok(Outcome::Transfer(message_result(data, more == More::Yes))),
            Kind::Write { payload, .. } if msg_mode => Ok(Outcome::Written(payload)),
            Kind::Transceive {
                max_out,
                from: ReplyFrom::Pushback,
                reply,
                ..
            } => Ok(Outcome::Transfer(
                self.reply_from_pushback(pipe, max_out, reply),
            )),
            Kind::Transceive {
                from: ReplyFrom::Nothing,
                ..
            } => Err(NtStatus::PIPE_BROKEN),
            // The reply was claimed from the stream when it arrived
            // (`claim_reply`, `waiter_share`): at most `max_out` bytes.
            Kind::Transceive { reply, max_out, .. } => {
                Ok(Outcome::Transfer(claimed_transfer(max_out, reply)))
            }
            Kind::Read { reply, .. } => Ok(Outcome::Transfer(Transfer {
                status: NtStatus::SUCCESS,
                data: reply.into_data().0,
            })),
            Kind::Write { sent, .. } => Ok(Outcome::Written(sent)),
            Kind::Peek {
                data, eof, room, ..
            } => Ok(Outcome::Transfer(self.peek_result(
                pipe,
                data.unwrap_or_default(),
                room,
                eof,
            ))),
            Kind::WaitPipe { status, .. } => match status {
                Some(NtStatus::SUCCESS) => Ok(Outcome::Done),
                Some(s) => Err(s),
                // Decided before its last CQE, always (see wait.rs).
                None => Err(NtStatus::INTERNAL_ERROR),
            },
            Kind::Multishot => Ok(Outcome::Done),
            Kind::Open { .. } => {
                debug_assert!(false, "an open's result is built by finish_open");
                Err(NtStatus::INTERNAL_ERROR)
            }
        }
    }

    /// A transceive whose reply it took from the pipe's pushback when it
    /// started: more is waiting if some was left there then, is there now,
    /// or is queued on the socket.
    fn reply_from_pushback(
        &mut self,
        pipe: Option<PipeId>,
        max_out: usize,
        reply: Reply,
    ) -> Transfer {
        let (data, more) = reply.into_data();
        let drv = &self.drv;
        let pe = pipe.and_then(|p| self.pipes.get_mut(p.index, p.gen));
        transceive_result(max_out, data, || {
            more == More::Yes
                || pe.is_some_and(|pe| {
                    !pe.pushback.is_empty() || drv.queued_bytes(&pe.fd).is_some_and(|q| q > 0)
                })
        })
    }

    /// A peek's reply: pushed-back bytes first (they come first in the
    /// stream), then what the socket showed.
    fn peek_result(
        &mut self,
        pipe: Option<PipeId>,
        mut data: Vec<u8>,
        room: usize,
        eof: bool,
    ) -> Transfer {
        if self.message_mode() {
            return self.peek_message_result(pipe, data, room, eof);
        }
        let mut avail_extra = 0;
        if let Some(pe) = pipe.and_then(|p| self.pipes.get_mut(p.index, p.gen)) {
            if !pe.pushback.is_empty() {
                avail_extra = pe.pushback.len();
                let mut all = pe.pushback.as_slice().to_vec();
                all.extend_from_slice(&data);
                data = all;
            }
        }
        // The total queued is only needed when the data did not fit.
        let avail = if data.len() > room {
            pipe.and_then(|p| self.available(p))
                .map(|a| a + avail_extra)
        } else {
            None
        };
        peek_reply(data, room, eof, avail)
    }

    /// PEEK of a message pipe: the current message (up to `room` bytes),
    /// its length as `ReadDataAvailable` and `MessageLength`, and the whole
    /// messages in view as `NumberOfMessages`; a message not whole yet is
    /// not reported.
    fn peek_message_result(
        &mut self,
        pipe: Option<PipeId>,
        data: Vec<u8>,
        room: usize,
        eof: bool,
    ) -> Transfer {
        let (all, msg_left) = match pipe.and_then(|p| self.pipes.get_mut(p.index, p.gen)) {
            Some(pe) if !pe.pushback.is_empty() => {
                let mut all = pe.pushback.as_slice().to_vec();
                all.extend_from_slice(&data);
                (all, pe.msg_left)
            }
            Some(pe) => (data, pe.msg_left),
            None => (data, 0),
        };
        let (msg, count) = overflow::peek_messages(&all, msg_left);
        let msg = msg.unwrap_or_default();
        let shown = &msg[..msg.len().min(room)];
        let len = clamp_u32(msg.len());
        let hdr = PeekReply {
            named_pipe_state: if eof {
                fsctl::PIPE_STATE_CLOSING
            } else {
                fsctl::PIPE_STATE_CONNECTED
            },
            read_data_available: len,
            number_of_messages: clamp_u32(count),
            message_length: len,
        };
        Transfer {
            status: fsctl::peek_status(shown.len(), msg.len()),
            data: hdr.encode_with_data(shown),
        }
    }

    /// Bytes queued on a pipe's socket right now (FIONREAD). Used by PEEK
    /// only, which must report the total even when its buffer is smaller.
    pub(super) fn available(&mut self, pipe: PipeId) -> Option<usize> {
        let p = self.pipes.get_mut(pipe.index, pipe.gen)?;
        self.drv.queued_bytes(&p.fd)
    }
}

/// Builds the FSCTL_PIPE_PEEK output: the 16-byte header then the data that
/// fits. `room` is how much data fits; `data` may hold one byte more (the
/// probe for "cut short").
pub(super) fn peek_reply(
    mut data: Vec<u8>,
    room: usize,
    eof: bool,
    avail: Option<usize>,
) -> Transfer {
    // `data` may hold one byte more than fits, which alone says "cut short".
    let available = avail.unwrap_or(0).max(data.len());
    data.truncate(room);
    let hdr = PeekReply {
        named_pipe_state: if eof {
            fsctl::PIPE_STATE_CLOSING
        } else {
            fsctl::PIPE_STATE_CONNECTED
        },
        read_data_available: available.min(u32::MAX as usize) as u32,
        number_of_messages: 0,
        message_length: 0,
    };
    Transfer {
        status: fsctl::peek_status(data.len(), available),
        data: hdr.encode_with_data(&data),
    }
}

/// What `finish` takes out of an op entry before the rest is dropped in
/// place: a claimed transceive's reply, `max_out` and input only, or any
/// other op's whole kind.
enum Taken {
    Claimed(Claimed),
    Whole(Kind),
}

/// What `finish` takes out of a transceive whose reply was claimed.
struct Claimed {
    reply: Reply,
    max_out: usize,
    input: Input,
}

/// Takes the reply, `max_out` and input out of a transceive that ended
/// with a reply claimed from the stream (its own receive or the multishot
/// receive's chunk), no status and no registered slot: what `result_of`
/// would answer with [`claimed_transfer`]. `None` (the entry untouched)
/// for anything else.
fn take_claimed(kind: &mut Kind) -> Option<Claimed> {
    let Kind::Transceive {
        from: ReplyFrom::Chain | ReplyFrom::Multishot,
        status: None,
        reg: None,
        reply: reply @ Reply::Got { .. },
        max_out,
        input,
        ..
    } = kind
    else {
        return None;
    };
    Some(Claimed {
        reply: std::mem::take(reply),
        max_out: *max_out,
        input: std::mem::take(input),
    })
}

/// The result of a transceive whose reply was claimed from the stream
/// when it arrived: at most `max_out` bytes, and the overflow rule's
/// status.
fn claimed_transfer(max_out: usize, reply: Reply) -> Transfer {
    let (data, more) = reply.into_data();
    transceive_result(max_out, data, || more == More::Yes)
}
