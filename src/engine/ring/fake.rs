//! A scripted [`OpDriver`] for deterministic tests of the core: it records
//! every pushed op and completes nothing by itself. A test completes, fails,
//! short-completes or cancels ops in whatever order it wants, delivers
//! multishot chunks, and moves a fake clock that fires timers. No io_uring,
//! no socket: "sockets" are descriptors of `/dev/null`.

use std::collections::VecDeque;
use std::io;
use std::os::fd::OwnedFd;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::ring::{
    Backend, Completion, Features, HeldSend, Op, OpDriver, RegBuf, SendBuf, Sock, SqeId, WakeFd,
};

/// `IORING_CQE_F_SOCK_NONEMPTY`.
pub(crate) const SOCK_NONEMPTY: u32 = 1 << 2;

/// The kinds of op a test looks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum K {
    Connect,
    Send,
    Recv,
    Peek,
    RecvPooled,
    RecvMulti,
    WriteFixed,
    ReadFixed,
    Timer,
}

pub(crate) fn kind_of(op: &Op) -> K {
    match op {
        Op::Connect { .. } => K::Connect,
        Op::Send { .. } | Op::Sent => K::Send,
        Op::Recv { flags, .. } if flags & libc::MSG_PEEK != 0 => K::Peek,
        Op::Recv { .. } => K::Recv,
        Op::RecvPooled { .. } => K::RecvPooled,
        Op::RecvMulti { .. } | Op::Chunk => K::RecvMulti,
        Op::WriteFixed { .. } => K::WriteFixed,
        Op::ReadFixed { .. } => K::ReadFixed,
        Op::Timer { .. } => K::Timer,
    }
}

struct InFlight {
    id: u64,
    token: u64,
    op: Op,
    /// The op linked after this one (`IOSQE_IO_LINK`).
    next: Option<u64>,
    /// Waits for the op linked before it.
    behind: bool,
    deadline: Option<Instant>,
    /// A held send (`op` is a copy of its bytes, for the test to look
    /// at): it completes as an [`Op::Sent`].
    held: bool,
}

/// Spare buffers the fake keeps (the io_uring driver keeps as many as its
/// receive pool has buffers, 256 by default).
const FAKE_SPARES: usize = 256;

/// The fake driver. Its fields are the script's knobs and records.
pub(crate) struct FakeDriver {
    /// The fake clock: timers fire when [`FakeDriver::advance`] passes them.
    pub(crate) now: Instant,
    next_id: u64,
    flight: Vec<InFlight>,
    ready: VecDeque<Completion>,
    /// Every cancel the core asked for, in order.
    pub(crate) cancels: Vec<SqeId>,
    /// Sockets shut down (by `shutdown`), and sockets let go (by `close`).
    pub(crate) shutdowns: usize,
    pub(crate) closes: usize,
    /// Sockets made; `socket_errno` makes the next ones fail.
    pub(crate) sockets: usize,
    pub(crate) socket_errno: Option<i32>,
    /// What `queued_bytes` (FIONREAD) answers.
    pub(crate) queued: Option<usize>,
    pub(crate) features: Features,
    pub(crate) pool_buf: usize,
    /// Buffers given back by the core.
    pub(crate) recycled: usize,
    /// Calls of `submit_and_wait`, and the error each returns if set.
    pub(crate) submits: usize,
    pub(crate) submit_errno: Option<i32>,
    /// The bytes of the lent chunks in `ready`, in order, and of the one
    /// last reaped (valid until the next reap, as a pool buffer is).
    lent_queue: VecDeque<Vec<u8>>,
    lent_now: Vec<u8>,
    /// Buffers handed out by `spare_buf`.
    pub(crate) spares_taken: usize,
    /// Buffers given back, handed out again by `spare_buf` (as the io_uring
    /// driver keeps them: at most [`FAKE_SPARES`], each at most a pool
    /// buffer large), so a steady loop allocates no buffer per reply.
    spares: Vec<Vec<u8>>,
    /// Every socket made, to find one an op names by number.
    made: Vec<std::rc::Weak<OwnedFd>>,
    /// Whether sends on kept sockets may be held (as the io_uring driver
    /// holds them); false: every send takes the slot path.
    pub(crate) holds_sends: bool,
    /// Held sends pushed.
    pub(crate) held_sends: usize,
}

impl FakeDriver {
    pub(crate) fn new(now: Instant) -> FakeDriver {
        FakeDriver {
            now,
            next_id: 1,
            flight: Vec::new(),
            ready: VecDeque::new(),
            cancels: Vec::new(),
            shutdowns: 0,
            closes: 0,
            sockets: 0,
            socket_errno: None,
            queued: Some(0),
            features: Features {
                sock_nonempty: true,
                op_socket: true,
                kept_sockets: true,
            },
            pool_buf: 4280,
            recycled: 0,
            submits: 0,
            submit_errno: None,
            lent_queue: VecDeque::new(),
            lent_now: Vec::new(),
            spares_taken: 0,
            spares: Vec::new(),
            made: Vec::new(),
            holds_sends: true,
            held_sends: 0,
        }
    }

    /// The live socket with descriptor number `raw` that this driver made.
    pub(crate) fn socket(&self, raw: std::os::fd::RawFd) -> std::rc::Weak<OwnedFd> {
        use std::os::fd::AsRawFd;
        self.made
            .iter()
            .find(|w| w.upgrade().is_some_and(|fd| fd.as_raw_fd() == raw))
            .cloned()
            .unwrap_or_default()
    }

    /// The ids of the ops of kind `k` in flight, oldest first.
    pub(crate) fn ids(&self, k: K) -> Vec<SqeId> {
        self.flight
            .iter()
            .filter(|f| kind_of(&f.op) == k)
            .map(|f| SqeId::from_raw(f.id))
            .collect()
    }

    /// The one op of kind `k` in flight (panics otherwise: a test bug).
    pub(crate) fn one(&self, k: K) -> SqeId {
        let ids = self.ids(k);
        assert_eq!(
            ids.len(),
            1,
            "expected one {k:?} in flight: {:?}",
            self.kinds()
        );
        ids[0]
    }

    /// The kinds of every op in flight, oldest first.
    pub(crate) fn kinds(&self) -> Vec<K> {
        self.flight.iter().map(|f| kind_of(&f.op)).collect()
    }

    /// Ops in flight.
    pub(crate) fn in_flight(&self) -> usize {
        self.flight.len()
    }

    /// The ops in flight that may complete now (not behind an op linked
    /// before them), oldest first.
    pub(crate) fn startable(&self) -> Vec<SqeId> {
        self.flight
            .iter()
            .filter(|f| !f.behind)
            .map(|f| SqeId::from_raw(f.id))
            .collect()
    }

    /// Ops in flight other than those of kind `k`.
    pub(crate) fn in_flight_except(&self, k: K) -> usize {
        self.flight.iter().filter(|f| kind_of(&f.op) != k).count()
    }

    /// The record of `id` (panics when it is not in flight: a test bug).
    fn flight(&self, id: SqeId) -> &InFlight {
        match self.flight.iter().find(|f| f.id == id.raw()) {
            Some(f) => f,
            None => panic!("op {id:?} not in flight"),
        }
    }

    /// The op `id` while it is in flight.
    pub(crate) fn op(&self, id: SqeId) -> &Op {
        &self.flight(id).op
    }

    /// The token the core gave op `id`, while it is in flight.
    pub(crate) fn token(&self, id: SqeId) -> u64 {
        self.flight(id).token
    }

    /// Whether the core asked to cancel `id`.
    pub(crate) fn cancel_asked(&self, id: SqeId) -> bool {
        self.cancels.contains(&id)
    }

    fn take(&mut self, id: SqeId) -> InFlight {
        let Some(i) = self.flight.iter().position(|f| f.id == id.raw()) else {
            panic!("op {id:?} not in flight");
        };
        let f = self.flight.remove(i);
        assert!(!f.behind, "{id:?} completed before the op linked before it");
        f
    }

    fn push_done(&mut self, f: InFlight, result: i32, flags: u32, breaks: bool) {
        let next = f.next;
        self.ready.push_back(Completion {
            token: f.token,
            result,
            flags,
            op: if f.held { Op::Sent } else { f.op },
            more: false,
        });
        let Some(n) = next else { return };
        if breaks {
            // The kernel fails the rest of a broken chain.
            if let Some(i) = self.flight.iter().position(|x| x.id == n) {
                self.flight[i].behind = false;
                let nf = self.flight.remove(i);
                self.push_done(nf, -libc::ECANCELED, 0, true);
            }
        } else if let Some(x) = self.flight.iter_mut().find(|x| x.id == n) {
            x.behind = false;
        }
    }

    /// Completes `id` with `result` and no data (a send's byte count, an
    /// error, a connect's 0...). Link rules as the kernel's: an error, a
    /// short send or a short `MSG_WAITALL` receive fails what follows.
    pub(crate) fn complete(&mut self, id: SqeId, result: i32) {
        let f = self.take(id);
        let breaks = result < 0
            || match &f.op {
                Op::Send { buf, start, .. } => (result as usize) < buf.len() - start,
                Op::WriteFixed { start, end, .. } => (result as u32) < end - start,
                Op::Recv { len, flags, .. } => {
                    flags & libc::MSG_WAITALL != 0 && (result as u32) < *len
                }
                Op::ReadFixed { len, .. } => (result as u32) < *len,
                _ => false,
            };
        self.push_done(f, result, 0, breaks);
    }

    /// Completes receive `id` with `bytes` (result: their count); `flags`
    /// are the CQE's (e.g. [`SOCK_NONEMPTY`]).
    pub(crate) fn complete_recv(&mut self, id: SqeId, bytes: &[u8], flags: u32) {
        let mut f = self.take(id);
        let breaks = match &mut f.op {
            Op::Recv {
                buf, len, flags, ..
            } => {
                assert!(bytes.len() <= *len as usize, "more than the receive asked");
                buf.extend_from_slice(bytes);
                *flags & libc::MSG_WAITALL != 0 && bytes.len() < *len as usize
            }
            Op::RecvPooled { data, len, .. } => {
                assert!(bytes.len() <= *len as usize, "more than the receive asked");
                data.extend_from_slice(bytes);
                false
            }
            Op::RecvMulti { data, .. } => {
                data.extend_from_slice(bytes);
                false
            }
            other => panic!("not a receive: {:?}", kind_of(other)),
        };
        self.push_done(f, bytes.len() as i32, flags, breaks);
    }

    /// One chunk of the multishot receive `id`, which stays armed.
    pub(crate) fn chunk(&mut self, id: SqeId, bytes: &[u8], flags: u32) {
        let f = self.flight(id);
        if !matches!(f.op, Op::RecvMulti { .. }) {
            panic!("not a multishot receive");
        }
        let token = f.token;
        // Lent, as the io_uring driver lends them (see `reap_one`).
        self.lent_queue.push_back(bytes.to_vec());
        self.ready.push_back(Completion {
            token,
            result: bytes.len() as i32,
            flags,
            op: Op::Chunk,
            more: true,
        });
    }

    /// Completes every op the core asked to cancel and that is still in
    /// flight with `-ECANCELED` (the kernel honouring the cancels).
    pub(crate) fn honour_cancels(&mut self) {
        for id in std::mem::take(&mut self.cancels) {
            if let Some(f) = self.flight.iter().find(|f| f.id == id.raw()) {
                if f.behind {
                    continue;
                }
                self.complete(id, -libc::ECANCELED);
            }
        }
    }

    /// Moves the clock on; timers that are due complete `-ETIME`.
    pub(crate) fn advance(&mut self, d: Duration) {
        self.now += d;
        loop {
            let due = self
                .flight
                .iter()
                .filter(|f| f.deadline.is_some_and(|t| t <= self.now))
                .min_by_key(|f| f.deadline)
                .map(|f| SqeId::from_raw(f.id));
            match due {
                Some(id) => self.complete(id, -libc::ETIME),
                None => return,
            }
        }
    }

    fn record(&mut self, op: Op, token: u64, behind: bool) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        let deadline = match &op {
            Op::Timer { after } => Some(self.now + *after),
            _ => None,
        };
        self.flight.push(InFlight {
            id,
            token,
            op,
            next: None,
            behind,
            deadline,
            held: false,
        });
        id
    }
}

impl OpDriver for FakeDriver {
    fn backend(&self) -> Backend {
        Backend::IoUring
    }

    fn push(&mut self, op: Op, token: u64) -> SqeId {
        SqeId::from_raw(self.record(op, token, false))
    }

    fn push_chain<I: IntoIterator<Item = (Op, u64)>>(&mut self, ops: I, ids: &mut Vec<SqeId>) {
        ids.clear();
        let mut prev: Option<u64> = None;
        for (op, token) in ops {
            let id = self.record(op, token, prev.is_some());
            if let Some(p) = prev {
                if let Some(f) = self.flight.iter_mut().find(|f| f.id == p) {
                    f.next = Some(id);
                }
            }
            prev = Some(id);
            ids.push(SqeId::from_raw(id));
        }
    }

    fn push_send_held(
        &mut self,
        fd: Sock,
        buf: SendBuf,
        start: usize,
        token: u64,
    ) -> Result<(SqeId, HeldSend), SendBuf> {
        if !self.holds_sends || !matches!(fd, Sock::Kept(_)) {
            return Err(buf);
        }
        let copy = Op::Send {
            fd,
            buf: buf.clone(),
            start,
        };
        let id = self.record(copy, token, false);
        if let Some(f) = self.flight.last_mut() {
            f.held = true;
        }
        self.held_sends += 1;
        Ok((SqeId::from_raw(id), HeldSend::new(id, buf)))
    }

    fn take_back(&mut self, held: HeldSend) -> Result<SendBuf, HeldSend> {
        if self.flight.iter().any(|f| f.held && f.id == held.ud()) {
            return Err(held);
        }
        Ok(held.release())
    }

    fn cancel(&mut self, id: SqeId) {
        self.cancels.push(id);
    }

    fn submit_and_wait(&mut self, _want: usize, _timeout: Option<Duration>) -> io::Result<()> {
        self.submits += 1;
        match self.submit_errno {
            Some(e) => Err(io::Error::from_raw_os_error(e)),
            None => Ok(()),
        }
    }

    fn reap_one(&mut self) -> Option<Completion> {
        // The last lent chunk goes back: its bytes are gone.
        self.lent_now = Vec::new();
        let c = self.ready.pop_front()?;
        if matches!(c.op, Op::Chunk) {
            self.lent_now = self.lent_queue.pop_front().unwrap_or_default();
        }
        Some(c)
    }

    fn lent_chunk(&self) -> &[u8] {
        &self.lent_now
    }

    fn spare_buf(&mut self) -> Vec<u8> {
        self.spares_taken += 1;
        self.spares.pop().unwrap_or_default()
    }

    fn features(&self) -> Features {
        self.features
    }

    fn wake_handle(&self) -> Arc<WakeFd> {
        // Only the real loop wakes a ring; the core never asks.
        unreachable!("the core does not use the wake handle")
    }

    fn reg_alloc(&mut self) -> Option<Rc<RegBuf>> {
        None
    }

    fn reg_release(&mut self, _buf: Rc<RegBuf>) {}

    fn reg_slot_bytes(&self) -> usize {
        0
    }

    fn recv_pool_buf_bytes(&self) -> usize {
        self.pool_buf
    }

    fn reg_bytes(&self, _buf: &Rc<RegBuf>) -> Option<&[u8]> {
        None
    }

    fn reg_bytes_mut(&mut self, _buf: &Rc<RegBuf>) -> Option<&mut [u8]> {
        None
    }

    fn recycle(&mut self, mut buf: Vec<u8>) {
        self.recycled += 1;
        let cap = buf.capacity();
        if crate::ring::keeps_spare(cap, self.pool_buf, self.spares.len(), FAKE_SPARES) {
            buf.clear();
            self.spares.push(buf);
        }
    }

    fn recv_allocates(&self) -> bool {
        false
    }

    fn unix_socket(&mut self) -> Result<Rc<OwnedFd>, i32> {
        if let Some(e) = self.socket_errno {
            return Err(e);
        }
        self.sockets += 1;
        let fd = std::fs::File::open("/dev/null")
            .map(|f| Rc::new(OwnedFd::from(f)))
            .map_err(|e| e.raw_os_error().unwrap_or(libc::EIO))?;
        self.made.push(Rc::downgrade(&fd));
        Ok(fd)
    }

    fn queued_bytes(&self, _fd: &OwnedFd) -> Option<usize> {
        self.queued
    }

    fn shutdown(&mut self, _fd: &OwnedFd) {
        self.shutdowns += 1;
    }

    fn close(&mut self, fd: Rc<OwnedFd>) {
        self.closes += 1;
        drop(fd);
    }
}
