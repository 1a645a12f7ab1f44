//! What the completion of a transceive's, read's or peek's SQE means for
//! its request: bytes sent, a reply received (and whether more waits), a
//! retry, or a status.

use super::overflow;
use super::*;
use crate::protocol::NtStatus;
use crate::ring::{Completion, Op, OpDriver};

/// Sets a request's status unless an earlier cause set it.
pub(super) fn set_once(status: &mut Option<NtStatus>, s: NtStatus) {
    if status.is_none() {
        *status = Some(s);
    }
}

/// A completion of a transceive's, read's, write's or peek's SQE, applied
/// to its request's `kind` (`plain`: the ring's buffers are plain, so the
/// kernel's "more is waiting" flag may be read). True when a receive got
/// bytes the request must now claim (`Core::claim_reply`). Inlined into
/// `Core::completion`, which holds the entry (out of line, the completion
/// was copied to call it: 11 instructions a transceive more,
/// `perf/instructions.py`).
#[inline(always)]
pub(super) fn io_step<D: OpDriver>(
    kind: &mut Kind,
    step: u8,
    c: Completion,
    drv: &mut D,
    plain: bool,
) -> bool {
    let r = c.result;
    match (&mut *kind, step) {
        (Kind::Transceive { .. }, ST_SEND) => transceive_sent(kind, r, c.op, drv),
        (Kind::Transceive { .. }, ST_RECV) => {
            // The kernel's flag is trusted only where the probe proved it.
            let nonempty = (drv.features().sock_nonempty && plain).then(|| c.sock_nonempty());
            transceive_received(kind, r, c.op, nonempty, drv);
            return true;
        }
        (Kind::Transceive { reply, .. }, ST_MORE) => {
            // Only a probe that ran after this chain's receive answers.
            if let Reply::Got {
                more: more @ More::Unknown,
                ..
            } = reply
            {
                *more = overflow::more_from_probe(r);
            }
        }
        (Kind::Read { .. }, ST_RECV) => {
            read_received(kind, r, c.op);
            return true;
        }
        (
            Kind::Write {
                status, data, sent, ..
            },
            ST_SEND,
        ) => match c.op {
            Op::Send { buf, start, .. } => {
                if r < 0 {
                    set_once(status, socket_status(-r));
                } else {
                    *sent = start + r as usize;
                }
                *data = buf;
            }
            _ => debug_assert!(false, "a write's SEND step on another op"),
        },
        (Kind::Peek { .. }, ST_PEEK) => peek_done(kind, r, c.op),
        (_, step) => debug_assert!(false, "I/O step {step} on an op of another kind"),
    }
    false
}

/// A transceive's SEND (or WRITE_FIXED) completed: count what was sent.
pub(super) fn transceive_sent<D: OpDriver>(kind: &mut Kind, r: i32, op: Op, drv: &mut D) {
    let Kind::Transceive {
        status,
        input,
        sent,
        ..
    } = kind
    else {
        return;
    };
    let (start, end) = match op {
        Op::Send { buf, start, .. } => {
            let end = buf.len();
            *input = Input::Ready(buf);
            (start, end)
        }
        // A held send: from the first unsent byte to the end.
        Op::Sent => {
            input.settle(drv);
            (*sent, input.len())
        }
        Op::WriteFixed { start, end, .. } => (start as usize, end as usize),
        _ => return debug_assert!(false, "a transceive's SEND step on another op"),
    };
    if r < 0 {
        set_once(status, socket_status(-r));
    } else {
        *sent = (start + r as usize).min(end);
    }
}

/// A transceive's receive completed: its reply, a retry after an empty
/// pool, a failure, or (after a short send broke the link) nothing.
pub(super) fn transceive_received<D: OpDriver>(
    kind: &mut Kind,
    r: i32,
    op: Op,
    nonempty: Option<bool>,
    drv: &D,
) {
    let Kind::Transceive {
        status,
        reply,
        max_out,
        reg,
        input,
        sent,
        ..
    } = kind
    else {
        return;
    };
    if r == -libc::ECANCELED && *sent < input.len() && status.is_none() {
        // A send that fell short cancelled the rest of its chain: it is
        // resumed when the chain is over; this is no error.
        return;
    }
    if r == -libc::ENOBUFS && matches!(op, Op::RecvPooled { .. }) && status.is_none() {
        // The receive pool was empty: receive again with a buffer of our
        // own once this chain is over.
        *reply = Reply::Retry;
        return;
    }
    if r <= 0 {
        let s = if r == 0 {
            NtStatus::PIPE_BROKEN
        } else {
            socket_status(-r)
        };
        return set_once(status, s);
    }
    let (data, asked) = match op {
        Op::Recv { buf, len, .. } => (buf, len as usize),
        Op::RecvPooled { data, len, .. } => (data, len as usize),
        Op::ReadFixed { buf, len, .. } => {
            // The slot's bytes are readable once no op holds it.
            drop(buf);
            let n = (r as usize).min(*max_out);
            match reg.as_ref().and_then(|slot| drv.reg_bytes(slot)) {
                Some(bytes) => (bytes[..n].to_vec(), len as usize),
                None => return set_once(status, NtStatus::INTERNAL_ERROR),
            }
        }
        _ => return debug_assert!(false, "a transceive's receive step on another op"),
    };
    let more = overflow::more_after_receive(data.len(), asked, nonempty);
    *reply = Reply::Got { data, more };
}

/// A read's receive completed.
pub(super) fn read_received(kind: &mut Kind, r: i32, op: Op) {
    let Kind::Read { reply, status, .. } = kind else {
        return;
    };
    let data = match op {
        Op::Recv { buf, .. } => buf,
        Op::RecvPooled { data, .. } => {
            if r == -libc::ENOBUFS {
                *reply = Reply::Retry;
                return;
            }
            data
        }
        _ => return debug_assert!(false, "a read's receive step on another op"),
    };
    if r > 0 {
        *reply = Reply::Got {
            data,
            more: More::Unknown,
        };
    } else {
        let s = if r == 0 {
            NtStatus::PIPE_BROKEN
        } else {
            socket_status(-r)
        };
        set_once(status, s);
    }
}

/// A peek's `MSG_PEEK | MSG_DONTWAIT` receive completed.
pub(super) fn peek_done(kind: &mut Kind, r: i32, op: Op) {
    let Kind::Peek {
        data, eof, status, ..
    } = kind
    else {
        return;
    };
    let Op::Recv { buf, len, .. } = op else {
        return debug_assert!(false, "a peek's step on another op");
    };
    if r > 0 {
        *data = Some(buf);
    } else if r == 0 && len > 0 {
        *eof = true;
        *data = Some(Vec::new());
    } else if r == 0 || r == -libc::EAGAIN {
        *data = Some(Vec::new());
    } else {
        set_once(status, socket_status(-r));
    }
}
