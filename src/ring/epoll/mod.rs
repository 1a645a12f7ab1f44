//! The epoll fallback: [`EpollDriver`] runs the engine's [`Op`]s with
//! nonblocking syscalls and epoll, completing each one with exactly the
//! result an io_uring CQE would carry on an AF_UNIX stream socket. It exists
//! for machines where `io_uring_setup(2)` is refused (the
//! `kernel.io_uring_disabled` sysctl, Docker 25+ / containerd seccomp
//! profiles, RHEL 9): the engine above it is the same code, so statuses,
//! the overflow rule, cancel and session disconnect are the same by
//! construction.
//!
//! Emulation rules (see DESIGN.md, "epoll fallback"):
//!
//! * nothing runs at push time: ops start at the next
//!   [`submit_and_wait`](OpDriver::submit_and_wait), in push order, like SQEs;
//! * `Connect`: the socket is made `O_NONBLOCK` (every other op uses
//!   `MSG_DONTWAIT` anyway); `EINPROGRESS` waits for `EPOLLOUT` then reads
//!   `SO_ERROR`; `EAGAIN` (an AF_UNIX listener's backlog is full: the connect
//!   did not start, and an unconnected socket polls writable at once) is
//!   retried on a 1..16 ms backoff, as a blocking connect would wait;
//! * `Send` (`MSG_WAITALL | MSG_NOSIGNAL`): `send(MSG_DONTWAIT|MSG_NOSIGNAL)`
//!   until everything went, waiting for `EPOLLOUT` in between; an error after
//!   some bytes gives the byte count (short), before any gives `-errno`;
//! * `Recv` into the spare capacity: plain = one receive once readable;
//!   `MSG_WAITALL` = until `len` bytes, EOF or an error; with `MSG_DONTWAIT`
//!   (the `MSG_PEEK` probe) never waits: `-EAGAIN` when empty;
//! * `Timer`: `-ETIME` at its deadline (a min-heap gives `epoll_wait` its
//!   timeout). Readiness is polled before due timers fire, so an op whose
//!   descriptor became ready while this thread was away (preempted past a
//!   deadline on a loaded machine) completes before the timer guarding it,
//!   the order io_uring, which sees both as they happen, would give;
//! * chains: only the head runs; the next starts when it completes without
//!   breaking the link (a negative result, a short send, a short
//!   `MSG_WAITALL` receive break it, a short plain receive does not); a
//!   broken link completes the rest `-ECANCELED`, in order;
//! * `cancel`: a started op that has not completed completes `-ECANCELED`
//!   (or with the bytes it already moved), its successors `-ECANCELED`; an op
//!   already completed, or linked and not started, is left alone (io_uring's
//!   `ASYNC_CANCEL` finds neither and answers `-ENOENT`);
//! * `WriteFixed` / `ReadFixed`: there is no registered pool; they complete
//!   `-EOPNOTSUPP` (the engine runs plain buffers on this backend);
//! * no `SOCK_NONEMPTY` flag: [`Features::sock_nonempty`] is false, so the
//!   engine links its one-byte peek probe, emulated as above.
//!
//! Readiness: each descriptor an op had to wait on is registered once,
//! edge-triggered (`EPOLLIN | EPOLLRDHUP`, plus `EPOLLOUT` only while a
//! sender or connect waits), with FIFO queues of waiting ops. Ops always try
//! the syscall first and park only on `EAGAIN`, so edges are never missed.
//! The registration stays while the descriptor lives (an idle pipe costs no
//! `epoll_ctl` per request); the driver holds only a `Weak` on the
//! descriptor, calls `epoll_ctl` only while an op's `Rc` keeps it open, and
//! the kernel drops the registration when the descriptor is closed.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::rc::{Rc, Weak};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::op::{Backend, Completion, Features, Op, OpDriver, RegBuf, Sock, SqeId, Token, WakeFd};

const NONE: u32 = u32::MAX;
/// epoll data of the wake eventfd (descriptor keys never have all bits set).
const WAKE_KEY: u64 = u64::MAX;
const EVENTS_MAX: usize = 256;
/// `epoll_wait` batches taken in one look at readiness.
const POLL_BATCHES_MAX: usize = 64;
const CONNECT_RETRY_MAX: Duration = Duration::from_millis(16);

use super::sys::last_errno as errno;

mod attempt;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Behind an op of its chain that has not completed.
    Linked,
    /// To be tried at the next submit.
    Queued,
    /// Waiting for its descriptor to be readable.
    WaitRead,
    /// Waiting for its descriptor to be writable.
    WaitWrite,
    /// Waiting for its deadline (a timer, or a connect retry).
    WaitTime,
}

struct Slot {
    gen: u32,
    token: u64,
    op: Option<Op>,
    state: State,
    /// The chain successor (NONE: last or alone).
    next: u32,
    /// Bytes moved so far (Send from `start`, Recv from the first spare byte).
    done: usize,
    /// Recv: bytes asked for, bounded by the spare capacity at push time.
    want: usize,
    /// Connect: attempts made; `u32::MAX` once the connect is in progress.
    tries: u32,
    deadline: Option<Instant>,
}

/// One registered descriptor and the ops waiting on it.
struct FdEntry {
    /// The descriptor, alive while some holder (pipe, op) has it.
    fd: Weak<OwnedFd>,
    /// Distinguishes this registration from earlier ones of the same number.
    serial: u32,
    out_armed: bool,
    readers: VecDeque<(u32, u32)>,
    writers: VecDeque<(u32, u32)>,
}

/// The `epoll_data` of a descriptor's registration: the [`Token`] with the
/// registration serial as its generation and the descriptor as its index.
fn key_of(fd: RawFd, serial: u32) -> u64 {
    Token::new(0, serial, fd as u32).raw()
}

/// The id of the op in slot `index` at generation `gen`.
fn slot_id(index: u32, gen: u32) -> SqeId {
    SqeId::from_token(Token::new(0, gen, index))
}

/// The epoll backend: same operations, same completions as [`Driver`](super::Driver).
pub struct EpollDriver {
    epfd: OwnedFd,
    wake: Arc<WakeFd>,
    slots: Vec<Slot>,
    free: Vec<u32>,
    in_flight: usize,
    /// Ops to try at the next submit, in order.
    start: VecDeque<(u32, u32)>,
    ready: VecDeque<Completion>,
    fds: HashMap<RawFd, FdEntry>,
    serial: u32,
    timers: BinaryHeap<Reverse<(Instant, u32, u32)>>,
    /// Ops in `WaitTime` (for rebuilding a heap full of stale entries).
    timers_live: usize,
    events: Vec<libc::epoll_event>,
    /// Where a receive whose buffer has no room lands before it is appended.
    scratch: Vec<u8>,
}

impl std::fmt::Debug for EpollDriver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EpollDriver")
            .field("in_flight", &self.in_flight)
            .field("fds", &self.fds.len())
            .finish()
    }
}

impl EpollDriver {
    /// Operations pushed and not yet finally completed.
    #[cfg(test)]
    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// Creates the epoll instance and the wake eventfd.
    pub fn new() -> io::Result<EpollDriver> {
        let epfd = super::sys::epoll_new()?;
        let wake = Arc::new(WakeFd::new()?);
        super::sys::epoll_ctl(
            epfd.as_raw_fd(),
            libc::EPOLL_CTL_ADD,
            wake.as_fd().as_raw_fd(),
            libc::EPOLLIN as u32,
            WAKE_KEY,
        )
        .map_err(io::Error::from_raw_os_error)?;
        Ok(EpollDriver {
            epfd,
            wake,
            slots: Vec::new(),
            free: Vec::new(),
            in_flight: 0,
            start: VecDeque::new(),
            ready: VecDeque::new(),
            fds: HashMap::new(),
            serial: 0,
            timers: BinaryHeap::new(),
            timers_live: 0,
            events: Vec::with_capacity(EVENTS_MAX),
            scratch: Vec::new(),
        })
    }

    fn alloc(&mut self, op: Op, token: u64, state: State) -> (u32, u32) {
        let want = match &op {
            // Its buffer may have less spare room: the rest of a receive
            // goes through the scratch buffer (see `attempt`).
            Op::Recv { len, .. } => *len as usize,
            _ => 0,
        };
        let index = match self.free.pop() {
            Some(i) => i,
            None => {
                self.slots.push(Slot {
                    gen: 0,
                    token: 0,
                    op: None,
                    state: State::Queued,
                    next: NONE,
                    done: 0,
                    want: 0,
                    tries: 0,
                    deadline: None,
                });
                (self.slots.len() - 1) as u32
            }
        };
        let s = &mut self.slots[index as usize];
        s.gen = s.gen.wrapping_add(1) & Token::GEN_MASK;
        s.token = token;
        s.op = Some(op);
        s.state = state;
        s.next = NONE;
        s.done = 0;
        s.want = want;
        s.tries = 0;
        s.deadline = None;
        self.in_flight += 1;
        (index, s.gen)
    }

    fn live(&self, index: u32, gen: u32) -> bool {
        self.slots
            .get(index as usize)
            .is_some_and(|s| s.gen == gen && s.op.is_some())
    }

    /// Final completion of one op; starts or cancels its successor.
    fn complete(&mut self, index: u32, result: i32) {
        let mut index = index;
        let mut result = result;
        loop {
            let s = &mut self.slots[index as usize];
            let Some(op) = s.op.take() else { return };
            if s.state == State::WaitTime {
                self.timers_live -= 1;
            }
            let breaks = result < 0
                || match &op {
                    Op::Send { buf, start, .. } => {
                        (result as usize) < buf.len().saturating_sub(*start)
                    }
                    Op::Recv { flags, .. } => {
                        flags & libc::MSG_WAITALL != 0 && (result as usize) < s.want
                    }
                    _ => false,
                };
            let next = std::mem::replace(&mut s.next, NONE);
            let token = s.token;
            self.free.push(index);
            self.in_flight -= 1;
            self.ready.push_back(Completion {
                token,
                result,
                flags: 0,
                op,
                more: false,
            });
            if next == NONE {
                return;
            }
            if breaks {
                index = next;
                result = -libc::ECANCELED;
                continue;
            }
            let n = &mut self.slots[next as usize];
            n.state = State::Queued;
            self.start.push_back((next, n.gen));
            return;
        }
    }

    /// Tries one op; it completes or parks.
    fn attempt(&mut self, index: u32) {
        let s = &mut self.slots[index as usize];
        s.state = State::Queued;
        let Some(op) = s.op.as_mut() else { return };
        if matches!(op.fd(), Some(Sock::Kept(_))) {
            // Not run here (`Features::kept_sockets`): this driver tells a
            // reused descriptor number by the op's hold on it.
            return self.complete(index, -libc::EOPNOTSUPP);
        }
        match op {
            Op::Timer { after } => {
                // A timer too long for the clock fires in a year.
                let now = Instant::now();
                let at = now
                    .checked_add(*after)
                    .unwrap_or_else(|| now + Duration::from_secs(365 * 86_400));
                self.park_time(index, at);
            }
            Op::Connect { .. } => self.attempt_connect(index),
            Op::Send { .. } => self.attempt_send(index),
            Op::Recv { .. } => self.attempt_recv(index),
            // No registered buffers and no provided-buffer pool on epoll
            // (the driver reports sizes 0, so the engine never asks).
            Op::WriteFixed { .. }
            | Op::ReadFixed { .. }
            | Op::RecvPooled { .. }
            | Op::RecvMulti { .. }
            | Op::Chunk
            | Op::Sent => self.complete(index, -libc::EOPNOTSUPP),
        }
    }

    fn park_time(&mut self, index: u32, at: Instant) {
        let s = &mut self.slots[index as usize];
        s.state = State::WaitTime;
        s.deadline = Some(at);
        self.timers_live += 1;
        self.timers.push(Reverse((at, index, s.gen)));
        // Cancelled timers leave stale heap entries: drop them now and then.
        if self.timers.len() > 64 && self.timers.len() > 4 * self.timers_live {
            let slots = &self.slots;
            self.timers.retain(|Reverse((_, i, g))| {
                slots
                    .get(*i as usize)
                    .is_some_and(|s| s.gen == *g && s.op.is_some() && s.state == State::WaitTime)
            });
        }
    }

    /// Parks an op until `fd` is readable (or writable), registering `fd`
    /// with epoll if needed. `fd` is open: the op holds it.
    fn park_fd(&mut self, index: u32, fd: &Sock, write: bool) {
        let Sock::Held(fd) = fd else {
            // Refused before any attempt (see `attempt`).
            return self.complete(index, -libc::EOPNOTSUPP);
        };
        let raw = fd.as_raw_fd();
        let gen = self.slots[index as usize].gen;
        let fresh = match self.fds.get(&raw) {
            Some(e) => !e.fd.upgrade().is_some_and(|live| Rc::ptr_eq(&live, fd)),
            None => true,
        };
        if fresh {
            // A number seen before belonged to a descriptor now closed: the
            // kernel already removed that registration.
            self.serial = self.serial.wrapping_add(1) & Token::GEN_MASK;
            self.fds.insert(
                raw,
                FdEntry {
                    fd: Rc::downgrade(fd),
                    serial: self.serial,
                    out_armed: false,
                    readers: VecDeque::new(),
                    writers: VecDeque::new(),
                },
            );
        }
        let epfd = self.epfd.as_raw_fd();
        let entry = self.fds.get_mut(&raw).expect("inserted above");
        let ctl = if fresh {
            Some(libc::EPOLL_CTL_ADD)
        } else if write && !entry.out_armed {
            Some(libc::EPOLL_CTL_MOD)
        } else {
            None
        };
        if let Some(ctl) = ctl {
            let out = write || entry.out_armed;
            if let Err(e) = epoll_ctl(epfd, ctl, raw, key_of(raw, entry.serial), out) {
                if fresh {
                    self.fds.remove(&raw);
                }
                return self.complete(index, -e);
            }
            entry.out_armed = out;
        }
        if write {
            entry.writers.push_back((index, gen));
        } else {
            entry.readers.push_back((index, gen));
        }
        self.slots[index as usize].state = if write {
            State::WaitWrite
        } else {
            State::WaitRead
        };
    }

    /// Removes a parked op from its descriptor's queue.
    fn unpark_fd(&mut self, index: u32, gen: u32) {
        let s = &self.slots[index as usize];
        let write = s.state == State::WaitWrite;
        let Some(raw) = s.op.as_ref().and_then(|o| o.fd()).map(|f| f.as_raw_fd()) else {
            return;
        };
        if let Some(e) = self.fds.get_mut(&raw) {
            let q = if write {
                &mut e.writers
            } else {
                &mut e.readers
            };
            q.retain(|&k| k != (index, gen));
        }
    }

    fn run_started(&mut self) {
        while let Some((i, g)) = self.start.pop_front() {
            if self.live(i, g) && self.slots[i as usize].state == State::Queued {
                self.attempt(i);
            }
        }
    }

    fn fire_timers(&mut self, now: Instant) {
        while let Some(Reverse((at, i, g))) = self.timers.peek().copied() {
            if at > now {
                break;
            }
            self.timers.pop();
            if !self.live(i, g) || self.slots[i as usize].state != State::WaitTime {
                continue;
            }
            self.timers_live -= 1;
            self.slots[i as usize].state = State::Queued;
            if matches!(self.slots[i as usize].op, Some(Op::Timer { .. })) {
                self.complete(i, -libc::ETIME);
            } else {
                self.attempt(i);
            }
        }
        self.run_started();
    }

    /// Fires the timers due now, after taking in every readiness event
    /// already there (more than one `epoll_wait` batch if need be): what
    /// became ready before this look completes first. Returns whether the
    /// wake eventfd fired.
    fn expire_timers(&mut self) -> io::Result<bool> {
        let now = Instant::now();
        if !self.next_deadline().is_some_and(|at| at <= now) {
            return Ok(false);
        }
        let woke = self.poll(0)?;
        self.fire_timers(now);
        Ok(woke)
    }

    fn next_deadline(&mut self) -> Option<Instant> {
        while let Some(Reverse((at, i, g))) = self.timers.peek().copied() {
            if self.live(i, g) && self.slots[i as usize].state == State::WaitTime {
                return Some(at);
            }
            self.timers.pop();
        }
        None
    }

    /// Retries the ops waiting on the descriptor behind `key`.
    fn on_event(&mut self, key: u64, events: u32) {
        let token = Token::from_raw(key);
        let (raw, serial) = (token.index() as RawFd, token.gen());
        let Some(e) = self.fds.get_mut(&raw) else {
            return;
        };
        if e.serial != serial {
            return;
        }
        let trouble = (libc::EPOLLHUP | libc::EPOLLERR) as u32;
        let readers = if events & (libc::EPOLLIN as u32 | libc::EPOLLRDHUP as u32 | trouble) != 0 {
            std::mem::take(&mut e.readers)
        } else {
            VecDeque::new()
        };
        let writers = if events & (libc::EPOLLOUT as u32 | trouble) != 0 {
            std::mem::take(&mut e.writers)
        } else {
            VecDeque::new()
        };
        for (i, g) in readers.into_iter().chain(writers) {
            if self.live(i, g)
                && matches!(
                    self.slots[i as usize].state,
                    State::WaitRead | State::WaitWrite
                )
            {
                self.attempt(i);
            }
        }
        // No sender waits any more: stop the EPOLLOUT edges (while the
        // descriptor is still open, which a live Weak proves).
        let epfd = self.epfd.as_raw_fd();
        if let Some(e) = self.fds.get_mut(&raw) {
            if e.serial == serial && e.out_armed && e.writers.is_empty() {
                if let Some(_held) = e.fd.upgrade() {
                    if epoll_ctl(epfd, libc::EPOLL_CTL_MOD, raw, key, false).is_ok() {
                        e.out_armed = false;
                    }
                }
            }
        }
        self.run_started();
    }

    /// One epoll_wait of at most `timeout_ms` (-1: no limit), then more
    /// without waiting while each fills its batch (at most
    /// `POLL_BATCHES_MAX` in all: descriptors that keep getting new edges
    /// cannot hold the thread here). Returns whether the wake eventfd fired.
    fn poll(&mut self, timeout_ms: i32) -> io::Result<bool> {
        let mut woke = false;
        let mut timeout_ms = timeout_ms;
        for _ in 0..POLL_BATCHES_MAX {
            let (fired, full) = self.poll_batch(timeout_ms)?;
            woke |= fired;
            if !full {
                break;
            }
            timeout_ms = 0;
        }
        Ok(woke)
    }

    /// One epoll_wait of at most `timeout_ms`: whether the wake eventfd
    /// fired, and whether the batch was full (more may be waiting).
    fn poll_batch(&mut self, timeout_ms: i32) -> io::Result<(bool, bool)> {
        self.events.clear();
        // SAFETY: `events` has room for EVENTS_MAX entries, which the kernel
        // fills (at most maxevents) and we then mark as initialised.
        let n = unsafe {
            libc::epoll_wait(
                self.epfd.as_raw_fd(),
                self.events.as_mut_ptr(),
                EVENTS_MAX as i32,
                timeout_ms,
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            return if e.raw_os_error() == Some(libc::EINTR) {
                Ok((false, false))
            } else {
                Err(e)
            };
        }
        // SAFETY: the kernel initialised the first `n` (<= EVENTS_MAX) entries.
        unsafe { self.events.set_len(n as usize) };
        let mut woke = false;
        let events = std::mem::take(&mut self.events);
        for ev in &events {
            let (key, mask) = (ev.u64, ev.events);
            if key == WAKE_KEY {
                woke = true;
                let mut v: u64 = 0;
                // SAFETY: reads 8 bytes into a valid u64 from our nonblocking eventfd.
                let _ = unsafe {
                    libc::read(
                        self.wake.as_fd().as_raw_fd(),
                        (&mut v as *mut u64).cast(),
                        8,
                    )
                };
            } else {
                self.on_event(key, mask);
            }
        }
        let full = events.len() == EVENTS_MAX;
        self.events = events;
        Ok((woke, full))
    }

    fn has_waiters(&self) -> bool {
        self.in_flight > 0
    }
}

/// Registers (or modifies) `fd` edge-triggered for input, and for output
/// when `out`. The caller guarantees `fd` is open (an op's Rc holds it).
fn epoll_ctl(epfd: RawFd, op: i32, fd: RawFd, key: u64, out: bool) -> Result<(), i32> {
    let mut events = (libc::EPOLLIN | libc::EPOLLRDHUP | libc::EPOLLET) as u32;
    if out {
        events |= libc::EPOLLOUT as u32;
    }
    super::sys::epoll_ctl(epfd, op, fd, events, key)
}

impl OpDriver for EpollDriver {
    fn backend(&self) -> Backend {
        Backend::Epoll
    }

    fn push(&mut self, op: Op, token: u64) -> SqeId {
        let (i, g) = self.alloc(op, token, State::Queued);
        self.start.push_back((i, g));
        slot_id(i, g)
    }

    fn push_chain<I: IntoIterator<Item = (Op, u64)>>(&mut self, ops: I, ids: &mut Vec<SqeId>) {
        ids.clear();
        let mut prev = NONE;
        for (op, token) in ops {
            let state = if prev == NONE {
                State::Queued
            } else {
                State::Linked
            };
            let (i, g) = self.alloc(op, token, state);
            if prev == NONE {
                self.start.push_back((i, g));
            } else {
                self.slots[prev as usize].next = i;
            }
            prev = i;
            ids.push(slot_id(i, g));
        }
    }

    fn cancel(&mut self, id: SqeId) {
        let (index, gen) = (id.token().index(), id.token().gen());
        if !self.live(index, gen) {
            return; // completed already: io_uring would answer -ENOENT
        }
        let s = &self.slots[index as usize];
        let result = if s.done > 0 {
            s.done as i32
        } else {
            -libc::ECANCELED
        };
        match s.state {
            State::Linked => {}
            State::Queued | State::WaitTime => self.complete(index, result),
            State::WaitRead | State::WaitWrite => {
                self.unpark_fd(index, gen);
                self.complete(index, result);
            }
        }
    }

    fn submit_and_wait(&mut self, want: usize, timeout: Option<Duration>) -> io::Result<()> {
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        self.run_started();
        let mut woke = self.expire_timers()?;
        loop {
            let enough = want == 0 || self.ready.len() >= want;
            if enough && !self.has_waiters() {
                return Ok(());
            }
            let timeout_ms = if enough || woke {
                0
            } else {
                let now = Instant::now();
                let until = match (deadline, self.next_deadline()) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
                match until {
                    None => -1,
                    Some(t) => {
                        let d = t.saturating_duration_since(now);
                        // Round up: waking early would only spin.
                        let ms = d.as_nanos().div_ceil(1_000_000);
                        ms.min(i32::MAX as u128) as i32
                    }
                }
            };
            woke |= self.poll(timeout_ms)?;
            woke |= self.expire_timers()?;
            let expired = deadline.is_some_and(|d| Instant::now() >= d);
            if timeout_ms == 0 || woke || expired || self.ready.len() >= want {
                return Ok(());
            }
        }
    }

    fn reap_one(&mut self) -> Option<Completion> {
        self.ready.pop_front()
    }

    fn features(&self) -> Features {
        Features {
            sock_nonempty: false,
            op_socket: false,
            kept_sockets: false,
        }
    }

    fn wake_handle(&self) -> Arc<WakeFd> {
        self.wake.clone()
    }

    fn reg_alloc(&mut self) -> Option<Rc<RegBuf>> {
        None
    }

    fn reg_release(&mut self, buf: Rc<RegBuf>) {
        drop(buf);
    }

    fn reg_slot_bytes(&self) -> usize {
        0
    }

    fn recv_pool_buf_bytes(&self) -> usize {
        0
    }

    fn recycle(&mut self, _buf: Vec<u8>) {
        // No multishot receive here: nothing to receive into.
    }

    fn recv_allocates(&self) -> bool {
        true
    }

    fn reg_bytes(&self, _buf: &Rc<RegBuf>) -> Option<&[u8]> {
        None
    }

    fn reg_bytes_mut(&mut self, _buf: &Rc<RegBuf>) -> Option<&mut [u8]> {
        None
    }
}

#[cfg(test)]
mod tests;
