//! Finishing a request: releasing what it holds, keeping bytes that
//! belong to the stream, and building the caller's result.

use std::collections::VecDeque;

use super::*;
use crate::engine::command::Outcome;
use crate::engine::{PipeId, Transfer};
use crate::protocol::PeekReply;
use crate::protocol::{fsctl, NtStatus};
use crate::ring::OpDriver;

impl<D: OpDriver> Core<D> {
    pub(super) fn finish(&mut self, key: (u32, u32)) {
        let Some(mut e) = self.ops.remove(key.0, key.1) else {
            return;
        };
        if matches!(e.kind, Kind::Open { .. }) {
            // The next waiting open starts in the ring loop.
            self.opening -= 1;
        }
        let mut resume = VecDeque::new();
        if let Some(pe) = e.pipe.and_then(|p| self.pipes.get_mut(p.index, p.gen)) {
            if let Some(i) = pe.waiters.iter().position(|k| *k == key) {
                // A waiter that ends without its chunk (cancelled, failed).
                pe.waiters.remove(i);
            }
            if e.cancelled {
                // Bytes the cancelled request took after all stay in the
                // stream, in FRONT of the pushback: they came off the socket
                // before anything there (a multishot waiter takes the front
                // of a chunk whose rest went to the pushback; a linked
                // receive runs only while the pushback is empty).
                if let Kind::Transceive { out: Some(d), .. } | Kind::Read { out: Some(d), .. } =
                    &mut e.kind
                {
                    d.append(&mut pe.pushback);
                    pe.pushback = std::mem::take(d);
                }
                pe.draining = pe.draining.saturating_sub(1);
            }
            resume = pe.startable();
        }
        if let Some(p) = e.pipe {
            self.pipe_op_done(p, key, e.pipe_next);
        }
        for (io, notify) in resume {
            if let Some(p) = e.pipe {
                self.start_io(p, io, notify);
            }
        }
        // Registered slots go back to the pool (no op holds them any more);
        // the sent request's buffer goes to the driver for a later reply.
        if let Kind::Transceive { reg, input, .. } = &mut e.kind {
            if let Some(r) = reg.take() {
                self.drv.reg_release(r);
            }
            self.drv.recycle(std::mem::take(input));
        }
        if e.cancelled || e.notify.is_none() {
            return;
        }
        if matches!(e.kind, Kind::Open { .. }) {
            return self.finish_open(e);
        }
        let notify = e.notify.take().expect("checked");
        let res = match e.kind {
            Kind::Transceive {
                status: Some(s), ..
            } => Err(s),
            Kind::Transceive {
                max_out,
                from_pushback: true,
                ..
            } => {
                let drv = &self.drv;
                let t = match e.pipe.and_then(|p| self.pipes.get_mut(p.index, p.gen)) {
                    Some(pe) => {
                        let data = take_pushback(&mut pe.pushback, max_out);
                        transceive_result(max_out, data, || {
                            !pe.pushback.is_empty()
                                || drv.queued_bytes(&pe.fd).is_some_and(|q| q > 0)
                        })
                    }
                    None => transceive_result(max_out, Vec::new(), || false),
                };
                Ok(Outcome::Transfer(t))
            }
            Kind::Transceive {
                out, more, max_out, ..
            } => {
                let mut data = out.unwrap_or_default();
                let read_ahead = self.keep_read_ahead(e.pipe, &mut data, max_out);
                Ok(Outcome::Transfer(transceive_result(max_out, data, || {
                    read_ahead || more.unwrap_or(false)
                })))
            }
            Kind::Read {
                status: Some(s), ..
            } => Err(s),
            Kind::Read { out, max_out, .. } => {
                let mut data = out.unwrap_or_default();
                self.keep_read_ahead(e.pipe, &mut data, max_out);
                Ok(Outcome::Transfer(Transfer {
                    status: NtStatus::SUCCESS,
                    data,
                }))
            }
            Kind::Write {
                status: Some(s), ..
            } => Err(s),
            Kind::Write { sent, .. } => Ok(Outcome::Written(sent)),
            Kind::Peek {
                status: Some(s), ..
            } => Err(s),
            Kind::Peek {
                data, eof, room, ..
            } => {
                let mut data = data.unwrap_or_default();
                let mut avail_extra = 0;
                if let Some(pe) = e.pipe.and_then(|p| self.pipes.get_mut(p.index, p.gen)) {
                    if !pe.pushback.is_empty() {
                        // Pushed-back bytes come first in the stream.
                        avail_extra = pe.pushback.len();
                        let mut all = pe.pushback.clone();
                        all.extend_from_slice(&data);
                        data = all;
                    }
                }
                // The total queued is only needed when the data did not fit.
                let avail = if data.len() > room {
                    e.pipe
                        .and_then(|p| self.available(p))
                        .map(|a| a + avail_extra)
                } else {
                    None
                };
                Ok(Outcome::Transfer(peek_reply(data, room, eof, avail)))
            }
            Kind::WaitPipe { status, .. } => match status {
                Some(NtStatus::SUCCESS) => Ok(Outcome::Done),
                Some(s) => Err(s),
                // Decided before its last CQE, always (see wait.rs).
                None => Err(NtStatus::INTERNAL_ERROR),
            },
            Kind::Multishot => Ok(Outcome::Done),
            Kind::Open { .. } => unreachable!("handled above"),
        };
        self.notify(notify, res);
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

/// the buffer over instead of copying it (the common case: the rest of an
/// overflowed reply, read in one go).
pub(super) fn take_pushback(pushback: &mut Vec<u8>, max_out: usize) -> Vec<u8> {
    if max_out >= pushback.len() {
        std::mem::take(pushback)
    } else {
        pushback.drain(..max_out).collect()
    }
}

/// ([`fsctl::transceive_status`]); `more` (is more waiting?) is asked only
/// when the rule needs it, so the common case costs nothing.
/// The first `max_out` bytes of a pipe's pushback. Taking all of it hands
pub(super) fn transceive_result(
    max_out: usize,
    data: Vec<u8>,
    more: impl FnOnce() -> bool,
) -> Transfer {
    let filled = max_out < SMB_PIPE_MAX_MSGSIZE && data.len() >= max_out;
    let status = fsctl::transceive_status(clamp_u32(max_out), data.len(), filled && more());
    Transfer { status, data }
}
