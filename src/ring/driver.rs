//! The owned-resource SQE driver the engine runs on.
//!
//! Every operation is described by an [`Op`] that OWNS everything the kernel
//! may touch while the operation is in flight: its buffer, its socket address,
//! its timespec, and a strong hold (`Rc<OwnedFd>`) on its descriptor. The
//! driver keeps the `Op` in a slot until the operation's final completion and
//! then hands it back in a [`Completion`]. So no buffer can be freed and no
//! descriptor closed (let alone reused) while the kernel still uses it, no
//! matter how cancels race with completions. This is the one place where the
//! engine's SQEs are pushed, and the only `unsafe` of the engine's data path.
//!
//! Chains: [`Driver::push_chain`] links operations with `IOSQE_IO_LINK`, so
//! the kernel starts each one only after the previous one succeeded; the
//! whole chain is placed in the submission queue in one piece.

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use io_uring::{cqueue, opcode, squeue, types, IoUring};

use super::bufring::{BufRing, Lent};
use super::files::FixedFiles;
use super::op::{
    keeps_spare, Backend, Completion, Features, HeldSend, Op, OpDriver, RegBuf, SendBuf, Sock,
    SqeId, Token, WakeFd,
};
use super::reap::{self, Reaped, Slot, KIND_CANCEL, KIND_HELD, KIND_OP, KIND_WAKE, NOT_MULTI};
use super::setup::{new_ring, probe_features, RingError, SetupFlags};
use crate::slab::Slab;

mod held;
mod sqe;

use sqe::timer_spec;

/// Buffer group id of the engine's receive pool.
const RECV_POOL_GROUP: u16 = 0;

fn user_data(kind: u8, index: u32, gen: u32) -> u64 {
    Token::new(kind, gen, index).raw()
}

/// Registered-buffer pool: one allocation split into equal slots, registered
/// with the ring as a fixed-buffer table.
struct RegPool {
    /// Start of the pool's memory (from `Box::<[u8]>::into_raw`); freed in
    /// `Drop`. Kept raw so that handing out one slot never asserts exclusive
    /// access to the slots the kernel may be writing at the same time.
    mem: *mut u8,
    total: usize,
    slot_bytes: usize,
    free: Vec<u16>,
}

impl RegPool {
    fn slot_ptr(&self, index: u16) -> *mut u8 {
        // In bounds: index < slots and slots * slot_bytes == total.
        self.mem.wrapping_add(index as usize * self.slot_bytes)
    }
}

impl Drop for RegPool {
    fn drop(&mut self) {
        // SAFETY: `mem`/`total` came from Box::into_raw of a boxed slice of
        // exactly `total` bytes, and this is the only place that frees it.
        drop(unsafe { Box::from_raw(std::ptr::slice_from_raw_parts_mut(self.mem, self.total)) });
    }
}

/// Sizes of a driver.
#[derive(Debug, Clone, Copy)]
pub struct DriverConfig {
    /// Submission queue entries (at least [`MIN_SQ_ENTRIES`]: a chain
    /// enters the queue whole, so the longest must fit).
    pub sq_entries: u32,
    /// Completion queue entries (the kernel keeps overflow beyond this).
    pub cq_entries: u32,
    /// Registered buffer slots (0: no registered buffers).
    pub reg_slots: u16,
    /// Bytes per registered slot.
    pub reg_slot_bytes: usize,
    /// Slots of the registered file table for adopted pipe sockets (0:
    /// none; the kernel refuses more than RLIMIT_NOFILE).
    pub file_slots: u32,
    /// Buffers in the provided-buffer receive pool (a power of two; 0: none).
    pub recv_pool_bufs: u16,
    /// Bytes per receive-pool buffer.
    pub recv_pool_buf_bytes: u32,
}

/// A ring owned by one thread, with owned-resource operations.
pub struct Driver {
    ring: IoUring,
    flags: SetupFlags,
    features: Features,
    /// Operations pushed and not finally completed; their (index,
    /// generation) is the SQE's user_data.
    slots: Slab<Slot>,
    /// Per slot index: `(user_data, token)` of the multishot receive in
    /// that slot ([`NOT_MULTI`] when there is none), so a chunk's CQE finds
    /// its token here, in 16 bytes, without touching the slot (at 1 024
    /// busy pipes a slot is a cache miss away).
    multi: Vec<(u64, u64)>,
    /// Per index of the pusher's tokens: the token of the held send in
    /// flight under that index ([`NOT_HELD`] when none). A held send's
    /// user_data is `KIND_HELD` with its token's index and generation, so
    /// its completion finds the token here (8 bytes, no slot) and
    /// `take_back` tells whether its bytes are still read.
    held: Vec<u64>,
    /// SQEs that did not fit in the SQ yet (their ops are already in
    /// slots), each with whether it links on to the next: a chain moves
    /// into the SQ whole (see [`Driver::push_chain`]).
    backlog: VecDeque<(squeue::Entry, bool)>,
    wake: Arc<WakeFd>,
    wake_buf: Box<u64>,
    wake_armed: bool,
    reg: Option<RegPool>,
    recv_pool: Option<BufRing>,
    /// Emptied buffers given back by [`Driver::recycle`] (a finished
    /// request's), reused for the next pooled receives (multishot chunks
    /// and one-shot) so that a reply costs no allocation once warm.
    spare: Vec<Vec<u8>>,
    /// The pool buffer of the chunk last reaped, lent to the engine until
    /// the next reap ([`Op::Chunk`]).
    lent: Option<Lent>,
    /// CQEs copied out of the completion queue and not handed out yet
    /// (from `batch_at` on): [`Driver::reap_one`] reads the queue up to
    /// [`REAP_BATCH`] entries at a time, so the queue's indices are read and
    /// its head published once per batch, not once per CQE.
    batch: Vec<cqueue::Entry>,
    batch_at: usize,
    /// Pipe sockets registered with the ring (`None`: the kernel refused a
    /// file table); see [`FixedFiles`].
    files: Option<FixedFiles>,
}

/// CQEs [`Driver::reap_one`] copies out of the completion queue at once.
const REAP_BATCH: usize = 64;

impl std::fmt::Debug for Driver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Driver")
            .field("flags", &self.flags)
            .field("features", &self.features)
            .field("in_flight", &self.slots.len())
            .finish()
    }
}

/// The smallest submission queue a driver makes: room for the longest
/// chain the engine pushes (3 SQEs) and the cancels around it, which
/// enter the queue whole (see [`Driver::push_chain`]).
pub const MIN_SQ_ENTRIES: u32 = 8;

impl Driver {
    /// Creates the ring (on the calling thread, which must be the only one to
    /// use it), probes the kernel, and registers the buffer pool if asked.
    pub fn new(cfg: &DriverConfig) -> Result<Driver, RingError> {
        let (ring, flags) = new_ring(cfg.sq_entries.max(MIN_SQ_ENTRIES), cfg.cq_entries)?;
        let features = probe_features(&ring)?;
        let wake = Arc::new(WakeFd::new().map_err(RingError::Io)?);
        let reg = if cfg.reg_slots > 0 && cfg.reg_slot_bytes > 0 {
            let total = (cfg.reg_slots as usize)
                .checked_mul(cfg.reg_slot_bytes)
                .ok_or_else(|| RingError::Io(io::Error::other("registered pool too large")))?;
            let mem = Box::into_raw(vec![0u8; total].into_boxed_slice()) as *mut u8;
            let pool = RegPool {
                mem,
                total,
                slot_bytes: cfg.reg_slot_bytes,
                free: (0..cfg.reg_slots).rev().collect(),
            };
            let iovecs: Vec<libc::iovec> = (0..cfg.reg_slots)
                .map(|i| libc::iovec {
                    iov_base: pool.slot_ptr(i).cast(),
                    iov_len: cfg.reg_slot_bytes,
                })
                .collect();
            // SAFETY: every iovec points into the pool's allocation, which is
            // owned by the Driver and freed only after the ring is dropped
            // (field order: `ring` is declared before `reg`) or leaked.
            unsafe { ring.submitter().register_buffers(&iovecs) }.map_err(RingError::Io)?;
            Some(pool)
        } else {
            None
        };
        let files = FixedFiles::new(&ring, cfg.file_slots);
        let recv_pool = if cfg.recv_pool_bufs > 0 && cfg.recv_pool_buf_bytes > 0 {
            Some(
                BufRing::new(
                    &ring,
                    RECV_POOL_GROUP,
                    cfg.recv_pool_bufs,
                    cfg.recv_pool_buf_bytes,
                )
                .map_err(RingError::Io)?,
            )
        } else {
            None
        };
        Ok(Driver {
            ring,
            flags,
            features,
            slots: Slab::new(),
            multi: Vec::new(),
            held: Vec::new(),
            backlog: VecDeque::new(),
            wake,
            wake_buf: Box::new(0),
            wake_armed: false,
            reg,
            recv_pool,
            spare: Vec::new(),
            lent: None,
            batch: Vec::with_capacity(REAP_BATCH),
            batch_at: 0,
            files,
        })
    }

    /// Takes back a buffer its owner is done with, to copy a later pooled
    /// receive into; dropped if the ring keeps enough already or it is
    /// larger than a receive-pool buffer.
    pub fn recycle(&mut self, mut buf: Vec<u8>) {
        let cap = buf.capacity();
        // As many spares as pool buffers, each at most one pool buffer
        // large: at most the pool's memory again. Fewer (64) ran dry at
        // 1 024 busy pipes, where a batch of replies takes a spare each
        // before the sends that give them back complete.
        let max_spare = self
            .recv_pool
            .as_ref()
            .map_or(0, |p| usize::from(p.count()));
        if keeps_spare(cap, self.recv_pool_buf_bytes(), self.spare.len(), max_spare) {
            buf.clear();
            // The top spare is the next one handed out: start fetching it
            // now (with many pipes it was last touched a round trip ago).
            super::sys::prefetch(buf.as_ptr());
            self.spare.push(buf);
        }
    }

    /// Probed kernel features.
    pub fn features(&self) -> Features {
        self.features
    }

    /// The handle other threads use to wake this driver.
    pub fn wake_handle(&self) -> Arc<WakeFd> {
        self.wake.clone()
    }

    /// Takes a free registered slot, if there is a pool and a free slot.
    /// Ops that use it hold clones of the `Rc`; give the last clone back
    /// with [`Driver::reg_release`] once no op holds it any more.
    pub fn reg_alloc(&mut self) -> Option<Rc<RegBuf>> {
        self.reg
            .as_mut()?
            .free
            .pop()
            .map(|index| Rc::new(RegBuf::new(index)))
    }

    /// Returns a registered slot to the pool if `buf` is its last holder
    /// (no operation in flight uses it); otherwise just drops this hold.
    pub fn reg_release(&mut self, buf: Rc<RegBuf>) {
        if let (Ok(b), Some(pool)) = (Rc::try_unwrap(buf), self.reg.as_mut()) {
            pool.free.push(b.index());
        }
    }

    /// Size of a receive-pool buffer (0: no pool): pooled receives ask for
    /// at most this much.
    pub fn recv_pool_buf_bytes(&self) -> usize {
        self.recv_pool.as_ref().map_or(0, |p| p.buf_len() as usize)
    }

    /// Bytes per registered slot (0 without a pool).
    pub fn reg_slot_bytes(&self) -> usize {
        self.reg.as_ref().map_or(0, |p| p.slot_bytes)
    }

    /// The bytes of a registered slot; `None` while an operation in flight
    /// holds the slot (the `Rc` is shared) or without a pool.
    pub fn reg_bytes(&self, buf: &Rc<RegBuf>) -> Option<&[u8]> {
        let p = self.reg.as_ref()?;
        if Rc::strong_count(buf) != 1 {
            return None;
        }
        // SAFETY: the slot lies inside the pool allocation; no operation in
        // flight holds this slot (we hold the only Rc), so the kernel does not
        // write it while the shared borrow of `self` lives.
        Some(unsafe { std::slice::from_raw_parts(p.slot_ptr(buf.index()), p.slot_bytes) })
    }

    /// The bytes of a registered slot, writable; same conditions as
    /// [`Driver::reg_bytes`].
    pub fn reg_bytes_mut(&mut self, buf: &Rc<RegBuf>) -> Option<&mut [u8]> {
        let p = self.reg.as_ref()?;
        if Rc::strong_count(buf) != 1 {
            return None;
        }
        // SAFETY: as in reg_bytes, and `&mut self` excludes other borrows.
        Some(unsafe { std::slice::from_raw_parts_mut(p.slot_ptr(buf.index()), p.slot_bytes) })
    }

    /// Registers `fd` (a pipe's socket) in the ring's file table, if there
    /// is one with a free slot: SQEs on it then name the slot. Without a
    /// slot it keeps working by its descriptor.
    pub fn adopt(&mut self, fd: &OwnedFd) {
        if let Some(files) = self.files.as_mut() {
            files.register(&self.ring, fd.as_raw_fd());
        }
    }

    /// Lets go of a socket: takes it out of the file table first (the
    /// table holds the file open, so a socket left there would never
    /// close), then drops this handle; the descriptor closes once no
    /// operation holds it either. Operations already in the kernel keep
    /// their own reference to the file.
    pub fn close(&mut self, fd: Rc<OwnedFd>) {
        if let Some(files) = self.files.as_mut() {
            files.unregister(&self.ring, fd.as_raw_fd());
        }
        drop(fd)
    }

    /// Pushes one operation. Its [`Completion`] carries `token`.
    pub fn push(&mut self, op: Op, token: u64) -> SqeId {
        let (ud, sqe) = self.insert(op, token);
        self.queue(sqe);
        SqeId::from_token(Token::from_raw(ud))
    }

    /// Puts `op` in a slot: its SQE's user_data and the SQE (not queued).
    fn insert(&mut self, op: Op, token: u64) -> (u64, squeue::Entry) {
        let ts = timer_spec(&op);
        let sqe = self.build_sqe(&op, ts.as_deref());
        let multi = matches!(op, Op::RecvMulti { .. });
        let (index, gen) = self.slots.insert(Slot { token, op, _ts: ts });
        let ud = user_data(KIND_OP, index, gen);
        if multi {
            let i = index as usize;
            if self.multi.len() <= i {
                self.multi.resize(i + 1, (NOT_MULTI, 0));
            }
            self.multi[i] = (ud, token);
        }
        (ud, sqe.user_data(ud))
    }

    /// Pushes operations linked in order (`IOSQE_IO_LINK` on all but the
    /// last): each starts only when the previous one fully succeeded; a
    /// failure or short read completes the rest with `-ECANCELED`.
    pub fn push_chain(&mut self, ops: impl IntoIterator<Item = (Op, u64)>, ids: &mut Vec<SqeId>) {
        ids.clear();
        let ops = ops.into_iter();
        // A chain enters the SQ whole: the kernel ends a link at the end of
        // a submission, so a chain split over two would run as two, its
        // second part not waiting for the first. One that may not fit (or
        // would overtake the backlog) waits in the backlog, whole.
        let fits = match ops.size_hint().1 {
            // One SQE cannot be split; `queue` keeps the order.
            Some(n) if n <= 1 => true,
            Some(n) => self.backlog.is_empty() && n <= self.sq_room(),
            None => false,
        };
        // Each SQE is queued once the next one is known, so the link flag
        // goes on every entry but the last without a temporary vector.
        let mut prev: Option<squeue::Entry> = None;
        for (op, token) in ops {
            let (ud, sqe) = self.insert(op, token);
            ids.push(SqeId::from_token(Token::from_raw(ud)));
            if let Some(p) = prev.take() {
                self.queue_link(p.flags(squeue::Flags::IO_LINK), true, fits);
            }
            prev = Some(sqe);
        }
        if let Some(p) = prev {
            self.queue_link(p, false, fits);
        }
    }

    /// One SQE of a chain (`links`: the chain goes on after it): into the
    /// SQ if the whole chain `fits`, else to the backlog.
    fn queue_link(&mut self, e: squeue::Entry, links: bool, fits: bool) {
        if fits {
            self.queue(e);
        } else {
            self.backlog.push_back((e, links));
        }
    }

    /// Free entries in the submission queue right now.
    fn sq_room(&mut self) -> usize {
        let sq = self.ring.submission();
        sq.capacity().saturating_sub(sq.len())
    }

    /// Asks the kernel to cancel one operation. Its completion then arrives
    /// as usual (with `-ECANCELED`, or its real result if it won the race).
    pub fn cancel(&mut self, id: SqeId) {
        let e = opcode::AsyncCancel::new(id.token().raw())
            .build()
            .user_data(user_data(KIND_CANCEL, 0, 0));
        self.queue(e);
    }

    fn queue(&mut self, e: squeue::Entry) {
        // Keep order: never let a new SQE overtake the backlog, so chains
        // stay contiguous and in order.
        if self.backlog.is_empty() {
            // SAFETY: every pointer in `e` points into an Op held in
            // `self.slots` (buffers and boxes with stable heap addresses) or
            // into `self.wake_buf`/`self.reg`, all of which stay alive and
            // unmoved until the operation's final CQE is reaped in
            // `reap`, and fds are held by `Rc<OwnedFd>` in the slot.
            if unsafe { self.ring.submission().push(&e) }.is_ok() {
                return;
            }
        }
        self.backlog.push_back((e, false));
    }

    /// Moves the backlog into the SQ, a whole chain at a time, while the
    /// next chain fits.
    fn flush_backlog(&mut self) {
        // The room is read once: only this loop fills the queue meanwhile.
        let mut room = self.sq_room();
        // The backlog's first chain ends at its first entry that does not
        // link on (`push_chain` adds chains whole, so there is one).
        while let Some(last) = self.backlog.iter().position(|&(_, links)| !links) {
            if room <= last {
                return;
            }
            room -= last + 1;
            for _ in 0..=last {
                let Some((e, links)) = self.backlog.pop_front() else {
                    break;
                };
                // SAFETY: as in `queue`: the entry's resources live in a slot.
                if unsafe { self.ring.submission().push(&e) }.is_err() {
                    debug_assert!(false, "the SQ had room for the whole chain");
                    self.backlog.push_front((e, links));
                    return;
                }
            }
        }
        debug_assert!(self.backlog.is_empty(), "a chain without its end");
    }

    fn arm_wake(&mut self) {
        if self.wake_armed {
            return;
        }
        let ptr = &mut *self.wake_buf as *mut u64 as *mut u8;
        let e = opcode::Read::new(types::Fd(self.wake.as_fd().as_raw_fd()), ptr, 8)
            .build()
            .user_data(user_data(KIND_WAKE, 0, 0));
        self.wake_armed = true;
        self.queue(e);
    }

    /// Submits what is queued and waits until at least `want` completions
    /// are ready (0: do not wait), or `timeout` passes. With `park` the
    /// wake eventfd is armed first so [`WakeFd::wake`] interrupts the wait.
    pub fn submit_and_wait(&mut self, want: usize, timeout: Option<Duration>) -> io::Result<()> {
        if want > 0 {
            self.arm_wake();
        }
        // Drain the backlog into the SQ, submitting as often as needed, but
        // never more SQEs than the CQ has room for: a send issued inline
        // completes at once, and completions beyond the CQ go to the
        // kernel's overflow list, a slow path that measured 4x slower with
        // 4096 busy pipes on a 1024-entry CQ. What does not fit waits until
        // the caller has reaped (the CQ then holds completions to reap).
        self.flush_backlog();
        loop {
            if self.cq_room() < self.ring.submission().len() {
                return Ok(());
            }
            if self.backlog.is_empty() {
                break;
            }
            let before = self.backlog.len();
            match self.ring.submit() {
                Ok(_) => {}
                Err(e) if is_transient(&e) => return Ok(()),
                Err(e) => return Err(e),
            }
            self.flush_backlog();
            if self.backlog.len() == before {
                // No room even after submitting: completions must be reaped.
                return Ok(());
            }
        }
        let res = match (want, timeout) {
            (0, _) => self.ring.submit(),
            (w, Some(t)) => {
                let ts = types::Timespec::from(t);
                let args = types::SubmitArgs::new().timespec(&ts);
                self.ring.submitter().submit_with_args(w, &args)
            }
            (w, None) => self.ring.submit_and_wait(w),
        };
        match res {
            Ok(_) => Ok(()),
            Err(e) if is_transient(&e) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Free entries in the completion queue right now.
    fn cq_room(&mut self) -> usize {
        let cq = self.ring.completion();
        cq.capacity().saturating_sub(cq.len())
    }

    /// Reaps every ready CQE: completions of pushed operations are
    /// appended to `out` (see [`Driver::reap_one`]).
    pub fn reap(&mut self, out: &mut Vec<Completion>) {
        while let Some(c) = self.reap_one() {
            out.push(c);
        }
    }

    /// The next completion of a pushed operation (a final one, or a
    /// multishot chunk), from the CQEs last copied out of the completion
    /// queue (a batch at a time, see `refill_batch`); cancel and wake-up
    /// CQEs on the way are handled here.
    #[inline(always)]
    pub fn reap_one(&mut self) -> Option<Completion> {
        // The last chunk's reader is done with it.
        if let Some(lent) = self.lent.take() {
            if let Some(pool) = self.recv_pool.as_mut() {
                pool.give_back(lent);
            }
        }
        loop {
            if self.batch_at == self.batch.len() && !self.refill_batch() {
                return None;
            }
            let cqe = self.batch[self.batch_at].clone();
            self.batch_at += 1;
            let ud = Token::from_raw(cqe.user_data());
            match ud.kind() {
                KIND_OP => {
                    let mut reaped = Reaped {
                        slots: &mut self.slots,
                        multi: &mut self.multi,
                        pool: self.recv_pool.as_mut(),
                        spare: &mut self.spare,
                        lent: &mut self.lent,
                    };
                    if let Some(c) = reaped.op(ud, &cqe) {
                        return Some(c);
                    }
                }
                KIND_HELD => {
                    if let Some(c) = self.held_done(ud, &cqe) {
                        return Some(c);
                    }
                }
                KIND_WAKE => self.wake_armed = false,
                _ => {} // cancel requests: the target's own CQE tells.
            }
        }
    }

    /// Copies up to [`REAP_BATCH`] ready CQEs into `batch`; false when
    /// none is ready. Dropping the queue view publishes the head, so the
    /// kernel may post into the room at once.
    fn refill_batch(&mut self) -> bool {
        self.batch.clear();
        self.batch_at = 0;
        self.batch.extend(self.ring.completion().take(REAP_BATCH));
        reap::prefetch_lookups(&self.batch, &self.slots, &self.multi, &self.held);
        !self.batch.is_empty()
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        // Operations still in flight reference memory in `self.slots`: cancel
        // everything and reap until the kernel is done with all of it, so the
        // memory is freed only after the kernel let go (bounded wait).
        if self.slots.len() == 0 && !self.held_in_flight() && !self.wake_armed {
            if let Some(p) = self.recv_pool.as_mut() {
                let _ = p.unregister(&self.ring);
            }
            return;
        }
        let e = opcode::AsyncCancel2::new(types::CancelBuilder::any())
            .build()
            .user_data(user_data(KIND_CANCEL, 0, 0));
        self.backlog.clear();
        // SAFETY: a cancel SQE references no memory.
        let _ = unsafe { self.ring.submission().push(&e) };
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while (self.slots.len() > 0 || self.held_in_flight() || self.wake_armed)
            && std::time::Instant::now() < deadline
        {
            let _ = self.ring.submitter().submit_with_args(
                1,
                &types::SubmitArgs::new()
                    .timespec(&types::Timespec::from(Duration::from_millis(50))),
            );
            let mut sink = Vec::new();
            self.reap(&mut sink);
            if self.wake_armed {
                self.wake.prepare_park();
                self.wake.wake();
            }
        }
        if self.slots.len() == 0 {
            if let Some(p) = self.recv_pool.as_mut() {
                let _ = p.unregister(&self.ring);
            }
        }
        if self.slots.len() > 0 || self.wake_armed {
            // The kernel still holds pointers into our memory: leaking it is
            // the only memory-safe choice left.
            std::mem::forget(std::mem::replace(&mut self.slots, Slab::new()));
            if let Some(pool) = self.reg.take() {
                std::mem::forget(pool);
            }
            std::mem::forget(std::mem::replace(&mut self.wake_buf, Box::new(0)));
        }
    }
}

/// EINTR, a timed-out wait, a full CQ (EBUSY: overflowed completions wait to
/// be reaped) or EAGAIN (no memory for task work right now): reap and retry.
fn is_transient(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EINTR) | Some(libc::ETIME) | Some(libc::EBUSY) | Some(libc::EAGAIN)
    )
}

impl OpDriver for Driver {
    #[inline]
    fn backend(&self) -> Backend {
        Backend::IoUring
    }
    #[inline]
    fn push(&mut self, op: Op, token: u64) -> SqeId {
        Driver::push(self, op, token)
    }
    #[inline]
    fn push_chain<I: IntoIterator<Item = (Op, u64)>>(&mut self, ops: I, ids: &mut Vec<SqeId>) {
        Driver::push_chain(self, ops, ids)
    }
    #[inline]
    fn push_send_held(
        &mut self,
        fd: Sock,
        buf: SendBuf,
        start: usize,
        token: u64,
    ) -> Result<(SqeId, HeldSend), SendBuf> {
        Driver::push_send_held(self, fd, buf, start, token)
    }
    #[inline]
    fn take_back(&mut self, held: HeldSend) -> Result<SendBuf, HeldSend> {
        Driver::take_back(self, held)
    }
    #[inline]
    fn cancel(&mut self, id: SqeId) {
        Driver::cancel(self, id)
    }
    #[inline]
    fn submit_and_wait(&mut self, want: usize, timeout: Option<Duration>) -> io::Result<()> {
        Driver::submit_and_wait(self, want, timeout)
    }
    #[inline]
    fn reap_one(&mut self) -> Option<Completion> {
        Driver::reap_one(self)
    }
    #[inline]
    fn upcoming(&mut self, f: &mut dyn FnMut(u64)) {
        if self.batch_at == self.batch.len() && !self.refill_batch() {
            return;
        }
        reap::tokens(
            &self.batch[self.batch_at..],
            &self.slots,
            &self.multi,
            &self.held,
            f,
        );
    }
    #[inline]
    fn features(&self) -> Features {
        Driver::features(self)
    }
    #[inline]
    fn wake_handle(&self) -> Arc<WakeFd> {
        Driver::wake_handle(self)
    }
    #[inline]
    fn reg_alloc(&mut self) -> Option<Rc<RegBuf>> {
        Driver::reg_alloc(self)
    }
    #[inline]
    fn reg_release(&mut self, buf: Rc<RegBuf>) {
        Driver::reg_release(self, buf)
    }
    #[inline]
    fn reg_slot_bytes(&self) -> usize {
        Driver::reg_slot_bytes(self)
    }
    #[inline]
    fn recv_pool_buf_bytes(&self) -> usize {
        Driver::recv_pool_buf_bytes(self)
    }
    #[inline]
    fn reg_bytes(&self, buf: &Rc<RegBuf>) -> Option<&[u8]> {
        Driver::reg_bytes(self, buf)
    }
    #[inline]
    fn reg_bytes_mut(&mut self, buf: &Rc<RegBuf>) -> Option<&mut [u8]> {
        Driver::reg_bytes_mut(self, buf)
    }
    #[inline]
    fn recycle(&mut self, buf: Vec<u8>) {
        Driver::recycle(self, buf)
    }
    #[inline]
    fn spare_buf(&mut self) -> Vec<u8> {
        // A new one is as large as a pool buffer, like most recycled ones:
        // a buffer that later holds a whole reply never has to grow.
        let buf = self
            .spare
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(self.recv_pool_buf_bytes()));
        if let Some(next) = self.spare.last() {
            super::sys::prefetch(next.as_ptr());
        }
        buf
    }
    #[inline]
    fn lent_chunk(&self) -> &[u8] {
        match (self.lent, self.recv_pool.as_ref()) {
            (Some(lent), Some(pool)) => pool.lent(lent),
            _ => &[],
        }
    }
    #[inline]
    fn recv_allocates(&self) -> bool {
        false
    }
    #[inline]
    fn adopt(&mut self, fd: &OwnedFd) {
        Driver::adopt(self, fd)
    }
    #[inline]
    fn close(&mut self, fd: Rc<OwnedFd>) {
        Driver::close(self, fd)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ring::files::FdRef;
    use std::io::Read;
    use std::os::fd::OwnedFd;
    use std::os::unix::net::UnixStream;

    /// A small ring: 8 SQ and 16 CQ entries, no pools, no file table.
    /// [`small_config`] with a receive pool of 8 buffers of 64 bytes.
    fn pooled_config() -> DriverConfig {
        DriverConfig {
            recv_pool_bufs: 8,
            recv_pool_buf_bytes: 64,
            ..small_config()
        }
    }

    fn small_config() -> DriverConfig {
        DriverConfig {
            sq_entries: 8,
            cq_entries: 16,
            reg_slots: 0,
            reg_slot_bytes: 0,
            file_slots: 0,
            recv_pool_bufs: 0,
            recv_pool_buf_bytes: 0,
        }
    }

    /// A driver on `cfg`, or `None` (skipped, loudly) without io_uring.
    fn test_driver(cfg: DriverConfig) -> Option<Driver> {
        match Driver::new(&cfg) {
            Ok(d) => Some(d),
            Err(e) => {
                eprintln!("SKIPPED: no io_uring here ({e})");
                None
            }
        }
    }

    /// A send of `bytes` on `fd`.
    fn send_op(fd: &Rc<OwnedFd>, bytes: Vec<u8>) -> Op {
        Op::Send {
            fd: fd.clone().into(),
            buf: bytes.into(),
            start: 0,
        }
    }

    /// Submits, waits (which also runs the ring's deferred task work) and
    /// reaps into `done` until it holds `n` completions or `patience` has
    /// passed.
    fn reap_until(drv: &mut Driver, done: &mut Vec<Completion>, n: usize, patience: Duration) {
        let deadline = std::time::Instant::now() + patience;
        while done.len() < n && std::time::Instant::now() < deadline {
            drv.submit_and_wait(1, Some(Duration::from_millis(50)))
                .unwrap();
            drv.reap(done);
        }
    }

    #[test]
    fn sock_nonempty_flag_is_the_kernels() {
        assert!(cqueue::sock_nonempty(super::super::op::CQE_F_SOCK_NONEMPTY));
        assert!(!cqueue::sock_nonempty(
            !super::super::op::CQE_F_SOCK_NONEMPTY
        ));
    }

    /// A chain pushed when the SQ has room for only part of it waits in the
    /// backlog and enters the SQ whole: still linked, its second SQE is
    /// cancelled when the first fails. (Split over two submissions, the
    /// second would run on its own and succeed.)
    #[test]
    fn a_chain_enters_the_submission_queue_whole() {
        let Some(mut drv) = test_driver(small_config()) else {
            return;
        };
        let (ours, mut theirs) = UnixStream::pair().unwrap();
        let fd = Rc::new(OwnedFd::from(ours));
        let room = drv.sq_room();
        assert!(room >= 2, "SQ of {room}");
        for i in 0..room - 1 {
            drv.push(send_op(&fd, vec![1u8]), i as u64);
        }
        assert_eq!(drv.sq_room(), 1);
        // Nothing to read: the receive fails (EAGAIN), which cancels the
        // send linked after it.
        let recv = Op::Recv {
            fd: fd.clone().into(),
            buf: Vec::with_capacity(8),
            len: 8,
            flags: libc::MSG_DONTWAIT,
        };
        let send = send_op(&fd, vec![2u8; 4]);
        let mut ids = Vec::new();
        drv.push_chain([(recv, 100), (send, 101)], &mut ids);
        assert_eq!(ids.len(), 2);
        assert_eq!(drv.sq_room(), 1, "the chain waits whole in the backlog");
        let mut done = Vec::new();
        // Waiting runs the deferred task work that ends the chain.
        reap_until(&mut drv, &mut done, room + 1, Duration::from_secs(10));
        let result = |t: u64| done.iter().find(|c| c.token == t).map(|c| c.result);
        assert_eq!(
            result(100),
            Some(-libc::EAGAIN),
            "the receive found nothing"
        );
        assert_eq!(
            result(101),
            Some(-libc::ECANCELED),
            "the send stayed linked"
        );
        let mut got = vec![0u8; room - 1];
        theirs.read_exact(&mut got).unwrap();
        assert!(got.iter().all(|&b| b == 1), "only the single sends arrived");
    }

    /// A submission queue asked for smaller than a chain is made large
    /// enough: a chain of three sends on a driver configured with one SQE
    /// completes (it would otherwise wait in the backlog for good).
    #[test]
    fn a_chain_longer_than_the_asked_queue_still_runs() {
        let Some(mut drv) = test_driver(DriverConfig {
            sq_entries: 1,
            ..small_config()
        }) else {
            return;
        };
        let (ours, mut theirs) = UnixStream::pair().unwrap();
        let fd = Rc::new(OwnedFd::from(ours));
        let chain = (0..3u8).map(|i| (send_op(&fd, vec![i; 2]), u64::from(i)));
        let mut ids = Vec::new();
        drv.push_chain(chain, &mut ids);
        let mut done = Vec::new();
        reap_until(&mut drv, &mut done, 3, Duration::from_secs(10));
        assert_eq!(done.len(), 3, "the chain ran");
        assert!(done.iter().all(|c| c.result == 2), "every send complete");
        let mut got = [0u8; 6];
        theirs.read_exact(&mut got).unwrap();
        assert_eq!(got, [0, 0, 1, 1, 2, 2]);
    }

    /// A backlog four times the submission queue, every SQE a send that
    /// completes at once: the driver submits it in steps the completion
    /// queue has room for, so the kernel never overflows it, and every
    /// send completes.
    #[test]
    fn backlog_submission_never_overflows_the_completion_queue() {
        let Some(mut drv) = test_driver(DriverConfig {
            sq_entries: 16,
            cq_entries: 32,
            ..small_config()
        }) else {
            return;
        };
        let (ours, mut theirs) = UnixStream::pair().unwrap();
        let fd = Rc::new(OwnedFd::from(ours));
        const SENDS: usize = 200;
        for i in 0..SENDS {
            drv.push(send_op(&fd, vec![i as u8; 8]), i as u64);
        }
        let mut done = Vec::new();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while done.len() < SENDS && std::time::Instant::now() < deadline {
            drv.submit_and_wait(0, None).unwrap();
            assert!(!drv.ring.submission().cq_overflow(), "CQ overflowed");
            assert_eq!(drv.ring.completion().overflow(), 0, "CQEs dropped");
            drv.reap(&mut done);
        }
        assert_eq!(done.len(), SENDS);
        assert!(done.iter().all(|c| c.result == 8), "every send complete");
        let mut got = vec![0u8; SENDS * 8];
        theirs.read_exact(&mut got).unwrap();
        // In the order pushed.
        assert!(got.chunks(8).enumerate().all(|(i, c)| c == [i as u8; 8]));
    }

    /// A multishot receive's chunks carry its token (found through the
    /// driver's `multi` table, not the slot), one completion each, their
    /// bytes lent in the pool buffer until the next reap, and its final
    /// completion clears the table's entry; a chunk CQE naming a slot that
    /// holds no multishot receive is dropped.
    #[test]
    fn multishot_chunks_carry_the_token_without_the_slot() {
        let Some(mut drv) = test_driver(pooled_config()) else {
            return;
        };
        let (ours, theirs) = UnixStream::pair().unwrap();
        let fd = Rc::new(OwnedFd::from(ours));
        let op = Op::RecvMulti {
            fd: fd.into(),
            data: Vec::new(),
        };
        let id = drv.push(op, 42);
        let index = id.token().index() as usize;
        assert_eq!(drv.multi[index], (id.token().raw(), 42));
        let wait_for = |drv: &mut Driver, n: usize| {
            let mut got = Vec::new();
            let patience = Duration::from_millis(if n == 0 { 200 } else { 5000 });
            let deadline = std::time::Instant::now() + patience;
            while got.len() <= n.saturating_sub(1) && std::time::Instant::now() < deadline {
                drv.submit_and_wait(1, Some(Duration::from_millis(50)))
                    .unwrap();
                while let Some(c) = drv.reap_one() {
                    // Lent until the next reap: read now.
                    let bytes = drv.lent_chunk().to_vec();
                    got.push((c, bytes));
                }
            }
            got
        };
        let mut writer = &theirs;
        // More chunks than the pool has buffers: each lent buffer goes back
        // at the next reap, or the pool would run dry (ENOBUFS ends the
        // receive).
        for i in 0..20u8 {
            let chunk = [b'a' + i; 3];
            std::io::Write::write_all(&mut writer, &chunk).unwrap();
            let got = wait_for(&mut drv, 1);
            assert_eq!(got.len(), 1);
            let (c, bytes) = &got[0];
            assert!(c.more, "a chunk, the receive stays armed");
            assert_eq!((c.token, c.result), (42, 3));
            assert!(matches!(c.op, Op::Chunk), "a chunk");
            assert_eq!(bytes, &chunk);
        }
        // A chunk CQE whose slot holds no multishot receive: dropped.
        let stale = drv.multi[index];
        drv.multi[index] = (NOT_MULTI, 0);
        std::io::Write::write_all(&mut writer, b"lost").unwrap();
        assert!(wait_for(&mut drv, 0).is_empty(), "no completion for it");
        drv.multi[index] = stale;
        drop(theirs);
        let got = wait_for(&mut drv, 1);
        assert_eq!(got.len(), 1);
        assert!(!got[0].0.more, "the end of the stream ends the receive");
        assert_eq!(got[0].0.token, 42);
        assert_eq!(drv.multi[index].0, NOT_MULTI, "the entry is cleared");
    }

    /// `upcoming` names, before they are reaped, the tokens of the
    /// completions in the batch, in order; the completions handed out next
    /// are those.
    #[test]
    fn upcoming_names_the_batch_before_it_is_reaped() {
        let Some(mut drv) = test_driver(pooled_config()) else {
            return;
        };
        let (a, a_peer) = UnixStream::pair().unwrap();
        let (b, b_peer) = UnixStream::pair().unwrap();
        let recv = |fd: UnixStream| Op::RecvMulti {
            fd: Rc::new(OwnedFd::from(fd)).into(),
            data: Vec::new(),
        };
        drv.push(recv(a), 7);
        drv.push(recv(b), 9);
        drv.push(
            Op::Timer {
                after: Duration::from_millis(1),
            },
            5,
        );
        let mut w = &a_peer;
        std::io::Write::write_all(&mut w, b"a1").unwrap();
        let mut w = &b_peer;
        std::io::Write::write_all(&mut w, b"b1").unwrap();
        // Both chunks and the timer's end are in the completion queue.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        let mut seen = Vec::new();
        while seen.len() < 3 && std::time::Instant::now() < deadline {
            drv.submit_and_wait(3, Some(Duration::from_millis(50)))
                .unwrap();
            seen.clear();
            drv.upcoming(&mut |t| seen.push(t));
        }
        seen.sort_unstable();
        assert_eq!(seen, [5, 7, 9], "the chunks and the timer, by token");
        let mut seen_again = Vec::new();
        drv.upcoming(&mut |t| seen_again.push(t));
        let mut reaped = Vec::new();
        while let Some(c) = drv.reap_one() {
            reaped.push(c.token);
        }
        assert_eq!(reaped, seen_again, "named in the order they are handed out");
    }

    /// A send longer than 4 GiB is not cut to its length modulo 2^32 (which
    /// sent 1 byte of 2^32 + 1 and reported it done): it moves what the
    /// socket takes, like any send, and stays in flight for the rest.
    #[test]
    fn send_longer_than_u32_is_not_truncated() {
        let Some(mut drv) = test_driver(small_config()) else {
            return;
        };
        let (ours, _theirs) = UnixStream::pair().unwrap();
        let fd = Rc::new(OwnedFd::from(ours));
        // Zeroed and never written: the pages stay unallocated. Where the
        // system refuses 4 GiB of address space, there is nothing to test.
        let n = (1usize << 32) + 1;
        let layout = std::alloc::Layout::array::<u8>(n).unwrap();
        // SAFETY: a non-zero-sized layout, as alloc_zeroed requires.
        let ptr = unsafe { std::alloc::alloc_zeroed(layout) };
        if ptr.is_null() {
            return eprintln!("SKIPPED: 4 GiB of address space refused");
        }
        // SAFETY: `ptr` comes from the global allocator with the layout of
        // `n` bytes (align 1), and all `n` bytes are initialised (zeroed).
        let buf = unsafe { Vec::from_raw_parts(ptr, n, n) };
        let buf = super::super::op::SendBuf::from(buf);
        let id = drv.push(
            Op::Send {
                fd: fd.into(),
                buf,
                start: 0,
            },
            1,
        );
        let mut done = Vec::new();
        drv.submit_and_wait(0, None).unwrap();
        std::thread::sleep(Duration::from_millis(100));
        drv.reap(&mut done);
        assert!(
            done.is_empty(),
            "a send of 4 GiB + 1 completed: {:?}",
            done.first().map(|c| c.result)
        );
        // The peer never reads: cancel; the send reports what it moved.
        drv.cancel(id);
        reap_until(&mut drv, &mut done, 1, Duration::from_secs(5));
        assert_eq!(done.len(), 1);
        assert!(
            done[0].result > 1 || done[0].result == -libc::ECANCELED,
            "{}",
            done[0].result
        );
    }

    /// An adopted socket's SQEs name its registered slot (the sends still
    /// arrive, in order), and closing it takes it out of the ring's file
    /// table: the peer sees the end of the stream at once, though the table
    /// alone would hold the socket open. The slot then serves the next
    /// adopted socket.
    #[test]
    fn an_adopted_socket_is_sent_to_by_slot_and_closes_when_let_go() {
        let Some(mut drv) = test_driver(DriverConfig {
            file_slots: 4,
            ..small_config()
        }) else {
            return;
        };
        if drv.files.is_none() {
            return eprintln!("SKIPPED: no registered file table on this kernel");
        }
        for round in 0..3u8 {
            let (ours, mut theirs) = UnixStream::pair().unwrap();
            let fd = Rc::new(OwnedFd::from(ours));
            drv.adopt(&fd);
            assert!(
                matches!(drv.fd_ref(&fd.clone().into()), FdRef::Fixed(_)),
                "round {round}: adopted into a slot"
            );
            for i in 0..3u8 {
                // Held by the op, or named by number as the engine's pipe
                // ops do (the test keeps the socket open meanwhile).
                let sock = if i == 1 {
                    Sock::Kept(fd.as_raw_fd())
                } else {
                    fd.clone().into()
                };
                let op = Op::Send {
                    fd: sock,
                    buf: vec![round * 10 + i; 8].into(),
                    start: 0,
                };
                drv.push(op, u64::from(i));
            }
            let mut done = Vec::new();
            reap_until(&mut drv, &mut done, 3, Duration::from_secs(10));
            assert!(done.iter().all(|c| c.result == 8), "round {round}: sent");
            let mut got = [0u8; 24];
            theirs.read_exact(&mut got).unwrap();
            assert_eq!(got[..8], [round * 10; 8]);
            assert_eq!(got[8..16], [round * 10 + 1; 8]);
            assert_eq!(got[16..], [round * 10 + 2; 8]);
            // Every op's copy of the handle is gone with its completion:
            // this is the last one.
            drop(done);
            drv.close(fd);
            theirs
                .set_read_timeout(Some(Duration::from_secs(5)))
                .unwrap();
            let mut rest = [0u8; 1];
            let n = theirs
                .read(&mut rest)
                .expect("end of stream, not a timeout");
            assert_eq!(n, 0, "round {round}: the peer sees the socket closed");
        }
    }

    #[test]
    fn a_held_send_is_given_back_only_after_its_final_completion() {
        let Some(mut drv) = test_driver(small_config()) else {
            return;
        };
        let (ours, mut theirs) = UnixStream::pair().unwrap();
        let fd = Rc::new(OwnedFd::from(ours));
        let kept = Sock::Kept(fd.as_raw_fd());
        // Only a kept socket's send is held: nothing else would keep a
        // held socket open meanwhile.
        let refused = drv.push_send_held(fd.clone().into(), b"x".to_vec().into(), 0, 7);
        assert!(matches!(refused, Err(SendBuf::Owned(v)) if v == b"x"));
        // More than the socket buffer takes: the send stays in flight until
        // the peer reads.
        let big: Vec<u8> = (0..4u32 << 20).map(|i| i as u8).collect();
        let token = Token::new(5, 3, 9).raw();
        let (id, held) = drv
            .push_send_held(kept.clone(), big.clone().into(), 0, token)
            .unwrap();
        assert_eq!(Token::from_raw(id.token().raw()).kind(), KIND_HELD);
        // A second held send under the same index waits for the first.
        let second = drv.push_send_held(kept.clone(), b"y".to_vec().into(), 0, token);
        assert!(second.is_err(), "one held send per index in flight");
        drv.submit_and_wait(0, None).unwrap();
        let mut done = Vec::new();
        drv.reap(&mut done);
        assert!(done.is_empty(), "the peer has not read yet");
        let held = drv.take_back(held).expect_err("the kernel still reads it");
        assert_eq!(held.len(), big.len(), "readable while held");
        let reader = std::thread::spawn(move || {
            let mut got = vec![0u8; 4 << 20];
            theirs.read_exact(&mut got).map(|()| got)
        });
        reap_until(&mut drv, &mut done, 1, Duration::from_secs(10));
        assert_eq!(done.len(), 1, "one final completion");
        assert_eq!(done[0].token, token, "the pusher's token");
        assert!(matches!(done[0].op, Op::Sent));
        assert_eq!(done[0].result, big.len() as i32);
        let back = drv
            .take_back(held)
            .expect("given back after its completion");
        assert_eq!(&*back, &big[..], "the same bytes, untouched");
        assert_eq!(reader.join().unwrap().unwrap(), big, "all of it arrived");
        // The index is free again.
        let (_, again) = drv
            .push_send_held(kept, b"z".to_vec().into(), 0, token)
            .unwrap();
        done.clear();
        reap_until(&mut drv, &mut done, 1, Duration::from_secs(10));
        assert!(drv.take_back(again).is_ok());
    }
}
