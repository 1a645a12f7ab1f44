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

use super::pushback::Pushback;
use super::{More, SMB_PIPE_MAX_MSGSIZE};
use crate::engine::Transfer;
use crate::protocol::npa::{unframe_message, FRAME_HEADER_LEN};
use crate::protocol::{fsctl, NtStatus};

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

/// The first `max_out` bytes of a pipe's pushback (see [`Pushback::take`]:
/// taking all of it hands the buffer over instead of copying it, the
/// common case of the rest of an overflowed reply read in one go).
pub(super) fn take_pushback(pushback: &mut Pushback, max_out: usize) -> Vec<u8> {
    pushback.take(max_out)
}

/// A multishot waiter's share of the pushback (the chunk that just came):
/// at most `max_out` bytes, and whether more waits behind them.
pub(super) fn waiter_share(
    pushback: &mut Pushback,
    max_out: usize,
    nonempty: bool,
) -> (Vec<u8>, More) {
    let data = take_pushback(pushback, max_out);
    (data, more_behind(pushback, nonempty))
}

/// Whether more is waiting behind a share just taken: bytes left in the
/// pushback, or queued on the socket (`nonempty`, the kernel's flag).
pub(super) fn more_behind(pushback: &Pushback, nonempty: bool) -> More {
    if !pushback.is_empty() || nonempty {
        More::Yes
    } else {
        More::No
    }
}

/// A receive's bytes (`data`) join the stream behind the pushback (which
/// holds bytes that came off the socket before them); `data` becomes the
/// first `max_out` bytes of that, the rest is the pushback. True if bytes
/// are left waiting there (read ahead, or older bytes): more is waiting.
pub(super) fn claim(pushback: &mut Pushback, data: &mut Vec<u8>, max_out: usize) -> bool {
    if pushback.is_empty() && data.len() <= max_out {
        return false;
    }
    pushback.append(std::mem::take(data));
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

// ---------------------------------------------------------------------------
// Message mode (the Samba dialect)
// ---------------------------------------------------------------------------
//
// A message pipe's pushback holds the raw stream (u16 LE length, then the
// message); `msg_left` counts the bytes of the message being delivered
// that are still at the pushback's front, its header already taken (0:
// the front is a header). A request's reply is taken only once its whole
// message is buffered: a transceive's reply is one message, a message
// longer than `max_out` gives `max_out` bytes with STATUS_BUFFER_OVERFLOW
// and the rest to the next reads, as SMB message-mode pipes do.

/// Whether a message pipe's pushback holds a deliverable message.
pub(super) fn message_ready(pushback: &Pushback, msg_left: usize) -> bool {
    msg_left > 0 || unframe_message(pushback.as_slice()).is_some()
}

/// The next reply of a message pipe: at most `max_out` bytes of the
/// current message, and whether more of that message is left; `None`
/// (nothing taken) while the message is incomplete.
pub(super) fn take_message(
    pushback: &mut Pushback,
    msg_left: &mut usize,
    max_out: usize,
) -> Option<(Vec<u8>, bool)> {
    if *msg_left == 0 {
        let (msg, _) = unframe_message(pushback.as_slice())?;
        let len = msg.len();
        pushback.advance(FRAME_HEADER_LEN);
        *msg_left = len;
    }
    let n = max_out.min(*msg_left);
    let data = take_pushback(pushback, n);
    *msg_left -= n;
    Some((data, *msg_left > 0))
}

/// A receive's raw bytes (`data`) join a message pipe's stream behind the
/// pushback; `data` becomes the next reply. `None`: the message is not
/// whole yet (`data` is then empty, its bytes wait in the pushback).
pub(super) fn claim_message(
    pushback: &mut Pushback,
    msg_left: &mut usize,
    data: &mut Vec<u8>,
    max_out: usize,
) -> Option<bool> {
    pushback.append(std::mem::take(data));
    let (reply, more) = take_message(pushback, msg_left, max_out)?;
    *data = reply;
    Some(more)
}

/// A cancelled request gives its reply back: it goes in front of the
/// pushback as the rest of the current message.
pub(super) fn give_back_message(pushback: &mut Pushback, msg_left: &mut usize, data: &mut Vec<u8>) {
    *msg_left += data.len();
    pushback.give_back(std::mem::take(data));
}

/// PEEK of a message pipe over `buf` (the pushback, then what the socket
/// showed): the current message's bytes (`None` while no message is
/// whole) and how many whole messages `buf` holds.
pub(super) fn peek_messages(buf: &[u8], msg_left: usize) -> (Option<&[u8]>, usize) {
    let (first, mut rest) = if msg_left > 0 {
        let cur = buf.get(..msg_left);
        (cur, buf.get(msg_left..).unwrap_or_default())
    } else {
        match unframe_message(buf) {
            Some((m, used)) => (Some(m), &buf[used..]),
            None => (None, buf),
        }
    };
    let mut count = usize::from(first.is_some());
    while let Some((_, used)) = unframe_message(rest) {
        count += 1;
        rest = &rest[used..];
    }
    (first, count)
}

/// A message pipe's reply: `STATUS_BUFFER_OVERFLOW` when more of its
/// message is left, whatever `max_out` (unlike the byte stream's seed rule).
pub(super) fn message_result(data: Vec<u8>, more: bool) -> Transfer {
    let status = if more {
        NtStatus::BUFFER_OVERFLOW
    } else {
        NtStatus::SUCCESS
    };
    Transfer { status, data }
}

pub(super) use crate::protocol::npa::frame_messages;

/// The bytes a message-mode receive asks for: a whole pool buffer when
/// the reply fits one (read ahead as the stream does; a longer message
/// takes more receives), else the reply and its header.
pub(super) fn message_recv_len(max_out: usize, pool_buf: usize) -> usize {
    if pool_buf > 0 && max_out <= pool_buf {
        pool_buf
    } else {
        max_out.saturating_add(FRAME_HEADER_LEN)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::npa::MAX_FRAMED_MESSAGE;
    use crate::protocol::NtStatus;

    fn pushback(bytes: Vec<u8>) -> Pushback {
        let mut p = Pushback::default();
        p.append(bytes);
        p
    }

    fn framed(msgs: &[&[u8]]) -> Vec<u8> {
        msgs.iter().flat_map(|m| frame_messages(m)).collect()
    }

    #[test]
    fn message_split_across_chunks_is_taken_whole() {
        let raw = framed(&[b"hello world"]);
        let (mut pb, mut left) = (Pushback::default(), 0);
        for cut in [1, 5] {
            let mut part = raw[..cut].to_vec();
            let already = pb.len();
            part.drain(..already.min(part.len()));
            assert_eq!(claim_message(&mut pb, &mut left, &mut part, 100), None);
            assert!(part.is_empty() && !message_ready(&pb, left));
        }
        let mut rest = raw[5..].to_vec();
        assert_eq!(
            claim_message(&mut pb, &mut left, &mut rest, 100),
            Some(false)
        );
        assert_eq!(rest, b"hello world");
        assert!(pb.is_empty() && left == 0);
    }

    #[test]
    fn several_messages_in_one_chunk_are_one_reply_each() {
        let mut data = framed(&[b"one", b"", b"three"]);
        let (mut pb, mut left) = (Pushback::default(), 0);
        assert_eq!(
            claim_message(&mut pb, &mut left, &mut data, 100),
            Some(false)
        );
        assert_eq!(data, b"one");
        assert!(message_ready(&pb, left));
        assert_eq!(
            take_message(&mut pb, &mut left, 100),
            Some((Vec::new(), false))
        );
        assert_eq!(
            take_message(&mut pb, &mut left, 100),
            Some((b"three".to_vec(), false))
        );
        assert_eq!(take_message(&mut pb, &mut left, 100), None);
    }

    #[test]
    fn message_longer_than_max_out_overflows_then_gives_the_rest() {
        let mut pb = pushback(framed(&[b"0123456789", b"next"]));
        let mut left = 0;
        assert_eq!(
            take_message(&mut pb, &mut left, 4),
            Some((b"0123".to_vec(), true))
        );
        assert_eq!(
            take_message(&mut pb, &mut left, 4),
            Some((b"4567".to_vec(), true))
        );
        // A cancelled reader gives its part back in front.
        let mut back = b"4567".to_vec();
        give_back_message(&mut pb, &mut left, &mut back);
        assert_eq!(
            take_message(&mut pb, &mut left, 100),
            Some((b"456789".to_vec(), false))
        );
        assert_eq!(
            take_message(&mut pb, &mut left, 100),
            Some((b"next".to_vec(), false))
        );
        assert_eq!(
            message_result(b"ab".to_vec(), true).status,
            NtStatus::BUFFER_OVERFLOW
        );
        assert_eq!(
            message_result(vec![0; 5000], false).status,
            NtStatus::SUCCESS
        );
    }

    #[test]
    fn long_writes_are_split_into_messages() {
        let data = vec![7u8; MAX_FRAMED_MESSAGE + 10];
        let raw = frame_messages(&data);
        assert_eq!(raw.len(), data.len() + 4);
        let (mut pb, mut left) = (pushback(raw), 0);
        let (a, _) = take_message(&mut pb, &mut left, usize::MAX).unwrap();
        let (b, _) = take_message(&mut pb, &mut left, usize::MAX).unwrap();
        assert_eq!((a.len(), b.len()), (MAX_FRAMED_MESSAGE, 10));
        assert_eq!(frame_messages(b""), vec![0, 0]);
    }

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
        let mut pb = Pushback::default();
        let mut data = b"0123456789".to_vec();
        assert!(claim(&mut pb, &mut data, 4));
        assert_eq!(data, b"0123");
        assert_eq!(pb.as_slice(), b"456789");
        // A receive that completes while older bytes wait gets those first.
        let mut data = b"abc".to_vec();
        assert!(claim(&mut pb, &mut data, 4));
        assert_eq!(data, b"4567");
        assert_eq!(pb.as_slice(), b"89abc");
        let mut data = Vec::new();
        assert!(!claim(&mut pb, &mut data, 10));
        assert_eq!(data, b"89abc");
        let (share, more) = waiter_share(&mut pushback(b"xyz".to_vec()), 2, false);
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
