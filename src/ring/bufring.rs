//! A provided-buffer ring (`IORING_REGISTER_PBUF_RING`, Linux 5.19+; see
//! `io_uring_register_buf_ring(3)`).
//!
//! The kernel picks a buffer from the ring only when data actually arrives
//! for a `RECV` that asked for buffer selection, so thousands of idle
//! connections with a multishot receive armed pin no memory at all. When the
//! ring is empty a receive completes with `-ENOBUFS` (which also ends a
//! multishot receive): the owner re-arms once buffers are back.
//!
//! Ownership: a buffer is either in the ring (the kernel may write it at any
//! time) or handed out by one completion (ours until it goes back).
//! [`BufRing::take`] turns a completion into a [`RecvBuf`] guard that reads
//! the bytes and puts the buffer back into the ring when dropped.
//!
//! Lifetime: the memory must stay valid while the ring is registered and
//! while any receive that may select from it is in flight. [`BufRing`] is
//! freed only after [`BufRing::unregister`] succeeded; dropped while still
//! registered, it leaks its memory on purpose rather than risk the kernel
//! writing into freed memory.

use std::alloc::{self, Layout};
use std::fmt;
use std::io;
use std::ops::Deref;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU16, Ordering};

use io_uring::types::BufRingEntry;
use io_uring::{cqueue, IoUring};

/// Why a completion's buffer could not be taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BufError {
    /// The completion carries no `IORING_CQE_F_BUFFER` flag.
    NoBuffer,
    /// The buffer id is out of range or was not in the ring (a kernel or
    /// bookkeeping bug; never trust it with a read).
    BadId(u16),
    /// The completion claims more bytes than a buffer holds.
    TooLong(usize),
}

impl fmt::Display for BufError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BufError::NoBuffer => f.write_str("completion has no provided buffer"),
            BufError::BadId(id) => write!(f, "provided buffer id {id} is not ours to take"),
            BufError::TooLong(n) => write!(f, "completion length {n} exceeds the buffer size"),
        }
    }
}

impl std::error::Error for BufError {}

/// A ring of `count` receive buffers of `buf_len` bytes each, registered as
/// buffer group `bgid` of one io_uring instance.
pub struct BufRing {
    /// Page-aligned array of `count` ring entries shared with the kernel.
    entries: NonNull<BufRingEntry>,
    entries_layout: Layout,
    /// `count * buf_len` bytes of buffer memory the kernel writes into.
    data: NonNull<u8>,
    data_layout: Layout,
    count: u16,
    buf_len: u32,
    bgid: u16,
    /// Our copy of the ring tail (the kernel only reads the shared one).
    tail: u16,
    /// `in_ring[bid]`: the buffer is in the ring, i.e. the kernel's to use.
    in_ring: Vec<bool>,
    registered: bool,
}

impl fmt::Debug for BufRing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BufRing")
            .field("count", &self.count)
            .field("buf_len", &self.buf_len)
            .field("bgid", &self.bgid)
            .field("registered", &self.registered)
            .finish()
    }
}

const PAGE: usize = 4096;

impl BufRing {
    /// Allocates `count` buffers (a power of two, at most 32768) of
    /// `buf_len` bytes, registers them with `ring` as group `bgid` and fills
    /// the ring with all of them.
    pub fn new(ring: &IoUring, bgid: u16, count: u16, buf_len: u32) -> io::Result<BufRing> {
        if count == 0 || !count.is_power_of_two() || count > 32768 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("buffer count {count} must be a power of two in 1..=32768"),
            ));
        }
        if buf_len == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "buffer length must not be zero",
            ));
        }
        let entries_layout = Layout::from_size_align(
            usize::from(count) * std::mem::size_of::<BufRingEntry>(),
            PAGE,
        )
        .map_err(io::Error::other)?;
        let data_size = usize::from(count)
            .checked_mul(buf_len as usize)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "buffers too large"))?;
        let data_layout = Layout::from_size_align(data_size, PAGE).map_err(io::Error::other)?;
        // SAFETY: both layouts have a non-zero size (count >= 1, buf_len >= 1).
        let (entries, data) = unsafe {
            (
                alloc::alloc_zeroed(entries_layout).cast::<BufRingEntry>(),
                alloc::alloc(data_layout),
            )
        };
        let (Some(entries), Some(data)) = (NonNull::new(entries), NonNull::new(data)) else {
            alloc::handle_alloc_error(entries_layout);
        };
        let mut br = BufRing {
            entries,
            entries_layout,
            data,
            data_layout,
            count,
            buf_len,
            bgid,
            tail: 0,
            in_ring: vec![false; usize::from(count)],
            registered: false,
        };
        // SAFETY: the entry array is page aligned, `count` entries long, and
        // stays allocated until after `unregister` succeeds (or forever:
        // Drop leaks it while registered).
        unsafe {
            ring.submitter().register_buf_ring_with_flags(
                br.entries.as_ptr() as u64,
                count,
                bgid,
                0,
            )?;
        }
        br.registered = true;
        for bid in 0..count {
            br.put_back(bid);
        }
        Ok(br)
    }

    /// Gives the pages of the buffer memory back to the system (they read
    /// as zeros when next used). Only while no receive can be writing into
    /// them: the caller has no receive selecting from this ring in flight.
    pub fn release_pages(&self) {
        let len = self.data_layout.size() & !(PAGE - 1);
        if len == 0 {
            return;
        }
        // SAFETY: `data` is page aligned (its layout) and owns at least
        // `len` bytes; MADV_DONTNEED only replaces the pages of our own
        // allocation with zero pages, and the caller guarantees that the
        // kernel is not writing into them meanwhile.
        unsafe {
            libc::madvise(self.data.as_ptr().cast(), len, libc::MADV_DONTNEED);
        }
    }

    /// The buffer group id to put in receive SQEs.
    pub fn bgid(&self) -> u16 {
        self.bgid
    }

    /// Size of each buffer in bytes.
    pub fn buf_len(&self) -> u32 {
        self.buf_len
    }

    /// Number of buffers.
    pub fn count(&self) -> u16 {
        self.count
    }

    /// Takes the buffer a completion names (`flags` are the CQE's flags,
    /// `len` its positive result). The guard derefs to the received bytes and
    /// returns the buffer to the ring when dropped.
    pub fn take(&mut self, flags: u32, len: usize) -> Result<RecvBuf<'_>, BufError> {
        let Lent { bid, len } = self.lend(flags, len)?;
        Ok(RecvBuf {
            ring: self,
            bid,
            len,
        })
    }

    /// Takes the buffer a completion names out of the ring until
    /// [`BufRing::give_back`]: the lent bytes are read with
    /// [`BufRing::lent`] meanwhile, without the guard's borrow of the ring
    /// (a driver lends a multishot chunk to the engine this way, which
    /// copies each share straight to where it belongs).
    pub(crate) fn lend(&mut self, flags: u32, len: usize) -> Result<Lent, BufError> {
        let bid = cqueue::buffer_select(flags).ok_or(BufError::NoBuffer)?;
        if bid >= self.count || !self.in_ring[usize::from(bid)] {
            return Err(BufError::BadId(bid));
        }
        // The kernel handed this buffer to the completion: it is out of the
        // ring now, even if the length check below fails (put it back then).
        self.in_ring[usize::from(bid)] = false;
        if len > self.buf_len as usize {
            self.put_back(bid);
            return Err(BufError::TooLong(len));
        }
        Ok(Lent { bid, len })
    }

    /// The bytes of a buffer lent by [`BufRing::lend`]; empty once it was
    /// given back (the kernel may be writing it again).
    pub(crate) fn lent(&self, lent: Lent) -> &[u8] {
        if lent.bid >= self.count || self.in_ring[usize::from(lent.bid)] {
            return &[];
        }
        // SAFETY: `bid < count` and `len <= buf_len` (checked by `take` in
        // `lend`), so the range is inside the data allocation. The buffer
        // is out of the ring (checked above): the kernel filled it before
        // posting the completion and will not write it again until
        // `give_back` publishes it, which needs `&mut self`.
        unsafe {
            std::slice::from_raw_parts(
                self.data
                    .as_ptr()
                    .add(usize::from(lent.bid) * self.buf_len as usize),
                lent.len,
            )
        }
    }

    /// Puts a lent buffer back into the ring (once: a second call, or one
    /// for a buffer already back, does nothing).
    pub(crate) fn give_back(&mut self, lent: Lent) {
        if lent.bid < self.count && !self.in_ring[usize::from(lent.bid)] {
            self.put_back(lent.bid);
        }
    }

    /// Returns the buffer a completion names without reading it (for a
    /// completion whose data nobody wants).
    pub fn discard(&mut self, flags: u32) {
        if let Some(bid) = cqueue::buffer_select(flags) {
            if bid < self.count && self.in_ring[usize::from(bid)] {
                self.in_ring[usize::from(bid)] = false;
                self.put_back(bid);
            }
        }
    }

    /// Appends buffer `bid` at the tail of the ring and publishes the tail.
    fn put_back(&mut self, bid: u16) {
        debug_assert!(bid < self.count && !self.in_ring[usize::from(bid)]);
        let idx = usize::from(self.tail & (self.count - 1));
        // SAFETY: `idx < count`, so the slot is inside the entry array. The
        // kernel reads only slots between its head and our published tail;
        // at most `count` buffers exist and `bid` is not in the ring, so this
        // slot is not among them. Only addr/len/bid are written: the tail
        // field that overlays slot 0 is left alone.
        let entry = unsafe { &mut *self.entries.as_ptr().add(idx) };
        // SAFETY: `bid < count`, so the offset stays inside the data allocation.
        let addr = unsafe {
            self.data
                .as_ptr()
                .add(usize::from(bid) * self.buf_len as usize)
        };
        entry.set_addr(addr as u64);
        entry.set_len(self.buf_len);
        entry.set_bid(bid);
        self.in_ring[usize::from(bid)] = true;
        self.tail = self.tail.wrapping_add(1);
        // SAFETY: the entry array is valid and page aligned, so the tail
        // field of slot 0 is a valid, aligned u16 that only we write; the
        // kernel reads it with acquire ordering, pairing with this release
        // store, which publishes the entry written above.
        unsafe {
            let tail = BufRingEntry::tail(self.entries.as_ptr()) as *const AtomicU16;
            (*tail).store(self.tail, Ordering::Release);
        }
    }

    /// Unregisters the group from `ring`. Call it only when no receive that
    /// selects from this group is in flight; afterwards the memory is freed
    /// on drop.
    pub fn unregister(&mut self, ring: &IoUring) -> io::Result<()> {
        if self.registered {
            ring.submitter().unregister_buf_ring(self.bgid)?;
            self.registered = false;
        }
        Ok(())
    }
}

impl Drop for BufRing {
    fn drop(&mut self) {
        if self.registered {
            // The kernel may still use this memory: leak it rather than
            // free it under the kernel's feet.
            return;
        }
        // SAFETY: both blocks were allocated in `new` with these layouts and
        // the kernel no longer refers to them (unregistered).
        unsafe {
            alloc::dealloc(self.entries.as_ptr().cast(), self.entries_layout);
            alloc::dealloc(self.data.as_ptr(), self.data_layout);
        }
    }
}

/// A buffer lent out of the ring by [`BufRing::lend`]: its id and how many
/// bytes the kernel put in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Lent {
    bid: u16,
    len: usize,
}

/// The bytes of one received buffer; the buffer goes back into the ring when
/// this guard is dropped.
pub struct RecvBuf<'a> {
    ring: &'a mut BufRing,
    bid: u16,
    len: usize,
}

impl fmt::Debug for RecvBuf<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RecvBuf")
            .field("bid", &self.bid)
            .field("len", &self.len)
            .finish()
    }
}

impl Deref for RecvBuf<'_> {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        // SAFETY: `bid < count` and `len <= buf_len` were checked in `take`,
        // so the range is inside the data allocation. The kernel filled the
        // buffer before posting the completion (whose load had acquire
        // ordering) and will not touch it until `put_back` on drop; the
        // guard holds the ring mutably, so nothing else writes it meanwhile.
        unsafe {
            std::slice::from_raw_parts(
                self.ring
                    .data
                    .as_ptr()
                    .add(usize::from(self.bid) * self.ring.buf_len as usize),
                self.len,
            )
        }
    }
}

impl Drop for RecvBuf<'_> {
    fn drop(&mut self) {
        self.ring.put_back(self.bid);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ring::setup::ring_or_skip;
    use io_uring::{opcode, types};
    use std::io::Write;
    use std::os::fd::AsRawFd;
    use std::os::unix::net::UnixStream;

    #[test]
    fn rejects_bad_counts() {
        let Some(ring) = ring_or_skip() else { return };
        assert!(BufRing::new(&ring, 0, 3, 64).is_err());
        assert!(BufRing::new(&ring, 0, 0, 64).is_err());
        assert!(BufRing::new(&ring, 0, 4, 0).is_err());
    }

    /// Two buffers, three receives: the third finds the ring empty
    /// (-ENOBUFS); after a buffer comes back a receive works again.
    #[test]
    fn recv_selects_buffers_and_runs_dry() {
        let Some(mut ring) = ring_or_skip() else {
            return;
        };
        let mut br = BufRing::new(&ring, 7, 2, 16).unwrap();
        let (mut a, b) = UnixStream::pair().unwrap();
        let recv = |ud: u64| {
            opcode::Recv::new(types::Fd(b.as_raw_fd()), std::ptr::null_mut(), 0)
                .buf_group(7)
                .build()
                .flags(io_uring::squeue::Flags::BUFFER_SELECT)
                .user_data(ud)
        };
        let mut held = Vec::new();
        for (i, msg) in [&b"one"[..], b"two"].iter().enumerate() {
            a.write_all(msg).unwrap();
            // SAFETY: the receive uses only provided buffers, which `br` keeps alive.
            unsafe { ring.submission().push(&recv(i as u64)).unwrap() };
            ring.submit_and_wait(1).unwrap();
            let cqe = ring.completion().next().unwrap();
            assert_eq!(cqe.result(), msg.len() as i32);
            held.push(cqe.flags());
        }
        a.write_all(b"three").unwrap();
        // SAFETY: as above.
        unsafe { ring.submission().push(&recv(2)).unwrap() };
        ring.submit_and_wait(1).unwrap();
        let cqe = ring.completion().next().unwrap();
        assert_eq!(cqe.result(), -libc::ENOBUFS);
        {
            let got = br.take(held[0], 3).unwrap();
            assert_eq!(&*got, b"one");
        }
        // A buffer id we never registered, or a completion without a
        // buffer, is refused.
        // IORING_CQE_F_BUFFER is bit 0; the id sits in the upper 16 bits.
        let bogus = 1 | (99 << 16);
        assert_eq!(br.take(bogus, 3).err(), Some(BufError::BadId(99)));
        assert_eq!(br.take(0, 3).err(), Some(BufError::NoBuffer));
        // SAFETY: as above.
        unsafe { ring.submission().push(&recv(3)).unwrap() };
        ring.submit_and_wait(1).unwrap();
        let cqe = ring.completion().next().unwrap();
        assert_eq!(cqe.result(), 5);
        assert_eq!(&*br.take(cqe.flags(), 5).unwrap(), b"three");
        br.discard(held[1]);
        br.unregister(&ring).unwrap();
    }
}
