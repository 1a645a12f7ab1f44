//! The overflow rule, in one place: how much of what was received a
//! transceive or read returns, what goes back to the pipe's pushback, and
//! how "are more bytes waiting?" is answered when the seed's rule needs it
//! (`STATUS_BUFFER_OVERFLOW` exactly when `max_out` < 4280, the reply
//! filled `max_out`, and more is waiting: [`fsctl::transceive_status`]).
//!
//! Where the answer comes from, cheapest first (DESIGN.md):
//! 1. bytes beyond `max_out` in what was received (read ahead): yes;
//! 2. a short receive emptied the socket: no;
//! 3. the kernel's `SOCK_NONEMPTY` flag on the receive, when trustworthy;
//! 4. the linked one-byte `MSG_PEEK | MSG_DONTWAIT` probe;
//! 5. for a reply served from the pushback, what is left there or queued
//!    on the socket (FIONREAD through the driver).

use super::{More, SMB_PIPE_MAX_MSGSIZE};
use crate::engine::Transfer;
use crate::protocol::fsctl;

/// Whether a reply of `max_out` bytes can overflow at all (so whether a
/// transceive chain needs a way to answer "more waiting?").
pub(super) fn may_overflow(max_out: usize) -> bool {
    max_out < SMB_PIPE_MAX_MSGSIZE
}

/// "More waiting?" after a receive that asked for `asked` bytes and got
/// `received`; `nonempty` is the kernel's flag when it can be trusted.
pub(super) fn more_after_receive(received: usize, asked: usize, nonempty: Option<bool>) -> More {
    if received < asked {
        // A stream recv copies until its buffer is full or the queue is empty.
        More::No
    } else {
        match nonempty {
            Some(true) => More::Yes,
            Some(false) => More::No,
            None => More::Unknown,
        }
    }
}

/// The one-byte peek probe's answer: 1 = a byte waits; `-EAGAIN`: empty;
/// 0: the peer closed.
pub(super) fn more_from_probe(result: i32) -> More {
    if result > 0 {
        More::Yes
    } else {
        More::No
    }
}

/// The first `max_out` bytes of a pipe's pushback. Taking all of it hands
/// the buffer over instead of copying it (the common case: the rest of an
/// overflowed reply, read in one go).
pub(super) fn take_pushback(pushback: &mut Vec<u8>, max_out: usize) -> Vec<u8> {
    if max_out >= pushback.len() {
        std::mem::take(pushback)
    } else {
        pushback.drain(..max_out).collect()
    }
}

/// A multishot waiter's share of the pushback (the chunk that just came):
/// at most `max_out` bytes, and whether more waits behind them.
pub(super) fn waiter_share(
    pushback: &mut Vec<u8>,
    max_out: usize,
    nonempty: bool,
) -> (Vec<u8>, More) {
    let data = take_pushback(pushback, max_out);
    let more = if !pushback.is_empty() || nonempty {
        More::Yes
    } else {
        More::No
    };
    (data, more)
}

/// A receive's bytes (`data`) join the stream behind the pushback (which
/// holds bytes that came off the socket before them); `data` becomes the
/// first `max_out` bytes of that, the rest is the pushback. True if bytes
/// are left waiting there (read ahead, or older bytes): more is waiting.
pub(super) fn claim(pushback: &mut Vec<u8>, data: &mut Vec<u8>, max_out: usize) -> bool {
    if pushback.is_empty() {
        if data.len() <= max_out {
            return false;
        }
        *pushback = data.split_off(max_out);
        return true;
    }
    pushback.append(data);
    *data = take_pushback(pushback, max_out);
    !pushback.is_empty()
}

/// A transceive's result by the seed's overflow rule; `more` is asked only
/// when the rule needs it, so the common case costs nothing.
pub(super) fn transceive_result(
    max_out: usize,
    data: Vec<u8>,
    more: impl FnOnce() -> bool,
) -> Transfer {
    let filled = may_overflow(max_out) && data.len() >= max_out;
    let status = fsctl::transceive_status(super::clamp_u32(max_out), data.len(), filled && more());
    Transfer { status, data }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::NtStatus;

    #[test]
    fn more_answers() {
        assert_eq!(more_after_receive(10, 4280, Some(true)), More::No, "short");
        assert_eq!(more_after_receive(4280, 4280, Some(true)), More::Yes);
        assert_eq!(more_after_receive(4280, 4280, None), More::Unknown);
        assert_eq!(more_from_probe(1), More::Yes);
        assert_eq!(more_from_probe(-libc::EAGAIN), More::No);
    }

    #[test]
    fn a_receive_claims_the_oldest_bytes_of_the_stream() {
        // Read ahead: the tail waits in the pushback.
        let mut pushback = Vec::new();
        let mut data = b"0123456789".to_vec();
        assert!(claim(&mut pushback, &mut data, 4));
        assert_eq!(data, b"0123");
        assert_eq!(pushback, b"456789");
        // A receive that completes while older bytes wait gets those first.
        let mut data = b"abc".to_vec();
        assert!(claim(&mut pushback, &mut data, 4));
        assert_eq!(data, b"4567");
        assert_eq!(pushback, b"89abc");
        let mut data = Vec::new();
        assert!(!claim(&mut pushback, &mut data, 10));
        assert_eq!(data, b"89abc");
        let (share, more) = waiter_share(&mut b"xyz".to_vec(), 2, false);
        assert_eq!((share.as_slice(), more), (&b"xy"[..], More::Yes));
    }

    #[test]
    fn overflow_only_when_filled_below_the_message_size_and_more_waits() {
        let t = transceive_result(4, b"abcd".to_vec(), || true);
        assert_eq!(t.status, NtStatus::BUFFER_OVERFLOW);
        let t = transceive_result(4, b"abc".to_vec(), || panic!("not asked when short"));
        assert_eq!(t.status, NtStatus::SUCCESS);
        let t = transceive_result(4280, vec![0; 4280], || panic!("not asked at 4280"));
        assert_eq!(t.status, NtStatus::SUCCESS);
        let t = transceive_result(4, b"abcd".to_vec(), || false);
        assert_eq!(t.status, NtStatus::SUCCESS);
    }
}
