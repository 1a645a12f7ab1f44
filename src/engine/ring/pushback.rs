//! A pipe's pushback: bytes that came off the socket before any request
//! took them (the rest of an overflowed reply, a multishot chunk nobody
//! waited for, what a cancelled receive took after all), in stream order.
//!
//! The bytes handed out from the front are skipped with a read offset, not
//! shifted out: a long pushback read in small pieces (or a message's
//! header dropped) moves no byte twice. A short rest behind the first
//! share is split off instead (copied once), so that share keeps the
//! whole buffer: the common overflow (a 4280-byte reply read as 1024 +
//! 3256) hands the caller the received buffer, whose room then holds the
//! whole reply when the caller appends the rest. An empty pushback holds
//! no memory.

use super::SMB_PIPE_MAX_MSGSIZE;

/// Rests up to this long are split off behind a first share (see above);
/// longer ones stay in place behind the read offset.
const SPLIT_MAX: usize = SMB_PIPE_MAX_MSGSIZE;

#[derive(Debug, Default)]
pub(super) struct Pushback {
    buf: Vec<u8>,
    /// Bytes at the front of `buf` already handed out (always < `buf.len()`
    /// unless both are 0).
    off: usize,
}

impl Pushback {
    /// Bytes waiting.
    pub(super) fn len(&self) -> usize {
        self.buf.len() - self.off
    }

    pub(super) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The waiting bytes.
    pub(super) fn as_slice(&self) -> &[u8] {
        &self.buf[self.off..]
    }

    /// Takes the first `n` bytes (all of them if fewer wait). Taking all
    /// hands the buffer over without a copy.
    pub(super) fn take(&mut self, n: usize) -> Vec<u8> {
        let len = self.len();
        if n >= len {
            return self.take_all();
        }
        if self.off == 0 && len - n <= SPLIT_MAX {
            let rest = self.buf.split_off(n);
            return std::mem::replace(&mut self.buf, rest);
        }
        let out = self.buf[self.off..self.off + n].to_vec();
        self.off += n;
        out
    }

    /// Takes every waiting byte.
    pub(super) fn take_all(&mut self) -> Vec<u8> {
        let mut buf = std::mem::take(&mut self.buf);
        let off = std::mem::take(&mut self.off);
        if off > 0 {
            buf.drain(..off);
        }
        buf
    }

    /// Empties the pushback and hands over its buffer, emptied too (its
    /// bytes were read some other way): for the driver to reuse.
    pub(super) fn take_emptied(&mut self) -> Vec<u8> {
        let mut buf = std::mem::take(&mut self.buf);
        self.off = 0;
        buf.clear();
        buf
    }

    /// Drops the first `n` bytes (a message's header) without moving the rest.
    pub(super) fn advance(&mut self, n: usize) {
        self.off += n.min(self.len());
        if self.off == self.buf.len() {
            *self = Pushback::default();
        }
    }

    /// Bytes that came off the socket after the waiting ones. Into an
    /// empty pushback they move without a copy.
    pub(super) fn append(&mut self, mut data: Vec<u8>) {
        if data.is_empty() {
            return;
        }
        if self.is_empty() {
            *self = Pushback { buf: data, off: 0 };
            return;
        }
        self.compact();
        self.buf.append(&mut data);
    }

    /// Bytes that came off the socket BEFORE the waiting ones (a cancelled
    /// request's reply, given back): they go in front, into the room the
    /// read offset left when they fit there.
    pub(super) fn give_back(&mut self, mut data: Vec<u8>) {
        if data.is_empty() {
            return;
        }
        if self.is_empty() {
            *self = Pushback { buf: data, off: 0 };
            return;
        }
        if data.len() <= self.off {
            let start = self.off - data.len();
            self.buf[start..self.off].copy_from_slice(&data);
            self.off = start;
            return;
        }
        data.extend_from_slice(self.as_slice());
        *self = Pushback { buf: data, off: 0 };
    }

    /// Moves the waiting bytes to the front of the buffer.
    fn compact(&mut self) {
        if self.off > 0 {
            self.buf.drain(..self.off);
            self.off = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pb(bytes: &[u8]) -> Pushback {
        let mut p = Pushback::default();
        p.append(bytes.to_vec());
        p
    }

    #[test]
    fn a_first_share_keeps_the_buffer_and_a_short_rest_is_split_off() {
        let mut chunk = Vec::with_capacity(4280);
        chunk.extend((0..4280u32).map(|i| i as u8));
        let ptr = chunk.as_ptr();
        let mut p = Pushback::default();
        p.append(chunk);
        let first = p.take(1024);
        assert_eq!(first.as_ptr(), ptr, "the received buffer, not a copy");
        assert!(first.capacity() >= 4280, "room for the whole reply");
        assert_eq!(p.len(), 3256);
        assert_eq!(p.off, 0);
        let rest = p.take(usize::MAX);
        assert_eq!(rest[0], 1024u32 as u8);
        assert!(p.is_empty() && p.buf.capacity() == 0, "empty holds nothing");
    }

    #[test]
    fn a_long_pushback_is_read_in_pieces_behind_an_offset() {
        let all: Vec<u8> = (0..20_000u32).map(|i| (i % 251) as u8).collect();
        let mut p = pb(&all);
        let ptr = p.buf.as_ptr();
        let mut got = Vec::new();
        while !p.is_empty() {
            let piece = p.take(1000);
            assert!(piece.len() <= 1000);
            got.extend_from_slice(&piece);
            if p.len() > SPLIT_MAX {
                assert_eq!(p.buf.as_ptr(), ptr, "the rest did not move");
            }
        }
        assert_eq!(got, all);
        assert_eq!((p.off, p.buf.capacity()), (0, 0));
    }

    #[test]
    fn append_and_give_back_keep_stream_order_across_the_offset() {
        let all: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        let mut p = pb(&all);
        let a = p.take(100);
        let b = p.take(200);
        assert_eq!(p.off, 300);
        // A cancelled request gives its share back: in front, in place.
        p.give_back(b.clone());
        assert_eq!(p.off, 100);
        p.give_back(a.clone());
        assert_eq!(p.off, 0);
        assert_eq!(p.as_slice(), &all[..]);
        // Given back more than the offset's room: still in front.
        let a = p.take(50);
        let mut big = vec![9u8; 60];
        big.extend_from_slice(&a);
        p.give_back(big.clone());
        assert_eq!(&p.as_slice()[..110], &big[..]);
        assert_eq!(&p.as_slice()[110..], &all[50..]);
        // Bytes that arrive later go behind, after the offset is dropped.
        let _ = p.take(6_000);
        p.append(b"tail".to_vec());
        assert_eq!(p.off, 0);
        assert!(p.as_slice().ends_with(b"tail"));
        assert_eq!(p.take_all().len(), 10_060 - 6_000 + 4);
    }

    #[test]
    fn take_emptied_hands_over_the_buffer_without_moving_bytes() {
        // Longer than a split: read behind an offset.
        let mut p = pb(&[7u8; 10_000]);
        let ptr = p.buf.as_ptr();
        let _ = p.take(30);
        assert_eq!(p.off, 30);
        let buf = p.take_emptied();
        assert_eq!((buf.as_ptr(), buf.len()), (ptr, 0));
        assert!(buf.capacity() >= 10_000);
        assert!(p.is_empty() && p.off == 0 && p.buf.capacity() == 0);
    }

    #[test]
    fn advance_skips_without_moving_and_frees_at_the_end() {
        let mut p = pb(b"\x03\x00abc");
        p.advance(2);
        assert_eq!(p.as_slice(), b"abc");
        assert_eq!(p.off, 2);
        p.advance(10);
        assert!(p.is_empty());
        assert_eq!(p.buf.capacity(), 0);
        p.give_back(Vec::new());
        p.append(Vec::new());
        assert!(p.is_empty());
    }
}
