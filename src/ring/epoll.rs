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
//!   timeout);
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

use super::op::{Backend, Completion, Features, Op, OpDriver, RegBuf, SqeId, Token, WakeFd};

const NONE: u32 = u32::MAX;
/// epoll data of the wake eventfd (descriptor keys never have all bits set).
const WAKE_KEY: u64 = u64::MAX;
const EVENTS_MAX: usize = 256;
const CONNECT_RETRY_MAX: Duration = Duration::from_millis(16);

use super::sys::last_errno as errno;

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
    ready: Vec<Completion>,
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
            ready: Vec::new(),
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
            self.ready.push(Completion {
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
        match op {
            Op::Timer { after } => {
                // A timer too long for the clock fires in a year.
                let now = Instant::now();
                let at = now
                    .checked_add(*after)
                    .unwrap_or_else(|| now + Duration::from_secs(365 * 86_400));
                self.park_time(index, at);
            }
            Op::Connect { fd, addr } => {
                let raw = fd.as_raw_fd();
                if s.tries == u32::MAX {
                    // In progress: the outcome is in SO_ERROR.
                    let mut err: libc::c_int = 0;
                    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
                    // SAFETY: `raw` is open (the op holds its Rc); `err` and
                    // `len` are valid for getsockopt to write.
                    let rc = unsafe {
                        libc::getsockopt(
                            raw,
                            libc::SOL_SOCKET,
                            libc::SO_ERROR,
                            (&mut err as *mut libc::c_int).cast(),
                            &mut len,
                        )
                    };
                    let r = if rc < 0 { -errno() } else { -err };
                    return self.complete(index, r);
                }
                if s.tries == 0 {
                    // A failure here shows up as a blocking connect's error.
                    let _ = super::sys::set_nonblocking(fd);
                }
                s.tries += 1;
                let (ptr, len) = addr.as_raw();
                // SAFETY: `raw` is open; `ptr`/`len` describe the boxed
                // sockaddr_un owned by the op, alive for the call.
                let rc = unsafe { libc::connect(raw, ptr, len) };
                let e = if rc == 0 { 0 } else { errno() };
                match e {
                    0 => self.complete(index, 0),
                    libc::EINPROGRESS => {
                        s.tries = u32::MAX;
                        let fd = fd.clone();
                        self.park_fd(index, &fd, true);
                    }
                    libc::EAGAIN | libc::EINTR => {
                        // Backlog full: nothing started; try again shortly.
                        let shift = (s.tries - 1).min(4);
                        let wait = Duration::from_millis(1 << shift).min(CONNECT_RETRY_MAX);
                        self.park_time(index, Instant::now() + wait);
                    }
                    e => self.complete(index, -e),
                }
            }
            Op::Send { fd, buf, start } => {
                let raw = fd.as_raw_fd();
                let begin = (*start).min(buf.len());
                loop {
                    let rest = &buf[(begin + s.done).min(buf.len())..];
                    if rest.is_empty() {
                        let r = s.done as i32;
                        return self.complete(index, r);
                    }
                    // SAFETY: `raw` is open; `rest` is valid for reads of its length.
                    let n = unsafe {
                        libc::send(
                            raw,
                            rest.as_ptr().cast(),
                            rest.len(),
                            libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
                        )
                    };
                    if n > 0 {
                        s.done += n as usize;
                        continue;
                    }
                    let e = if n == 0 { libc::EIO } else { errno() };
                    match e {
                        libc::EINTR => continue,
                        libc::EAGAIN => {
                            let fd = fd.clone();
                            return self.park_fd(index, &fd, true);
                        }
                        e => {
                            let r = if s.done > 0 { s.done as i32 } else { -e };
                            return self.complete(index, r);
                        }
                    }
                }
            }
            Op::Recv { fd, buf, flags, .. } => {
                let raw = fd.as_raw_fd();
                let flags = *flags;
                let waitall = flags & libc::MSG_WAITALL != 0 && flags & libc::MSG_PEEK == 0;
                loop {
                    let left = s.want - s.done;
                    if left == 0 && s.want > 0 {
                        let r = s.done as i32;
                        return self.complete(index, r);
                    }
                    // Straight into the buffer's spare capacity when it has
                    // room; otherwise (the engine hands this driver empty
                    // buffers, so a pipe that waits holds no receive memory)
                    // into the scratch buffer, appended below.
                    let direct = buf.capacity() - buf.len() >= left;
                    let ptr = if direct {
                        // The spare capacity starts right after the initialised part.
                        buf.as_mut_ptr().wrapping_add(buf.len())
                    } else {
                        if self.scratch.len() < left {
                            self.scratch.resize(left, 0);
                        }
                        self.scratch.as_mut_ptr()
                    };
                    // SAFETY: `raw` is open; `ptr` points at `left` writable
                    // bytes: `buf`'s spare capacity (checked just above) or
                    // the scratch buffer (at least `left` long).
                    let n = unsafe {
                        libc::recv(
                            raw,
                            ptr.cast(),
                            left,
                            (flags & !libc::MSG_WAITALL) | libc::MSG_DONTWAIT,
                        )
                    };
                    if n > 0 {
                        let n = (n as usize).min(left);
                        if direct {
                            // SAFETY: recv initialised `n` bytes of spare
                            // capacity starting at `buf.len()`; n <= left <= spare.
                            unsafe { buf.set_len(buf.len() + n) };
                        } else {
                            buf.extend_from_slice(&self.scratch[..n]);
                        }
                        s.done += n;
                        if waitall && s.done < s.want {
                            continue;
                        }
                        let r = s.done as i32;
                        return self.complete(index, r);
                    }
                    if n == 0 {
                        let r = s.done as i32;
                        return self.complete(index, r);
                    }
                    match errno() {
                        libc::EINTR => continue,
                        libc::EAGAIN if flags & libc::MSG_DONTWAIT == 0 => {
                            let fd = fd.clone();
                            return self.park_fd(index, &fd, false);
                        }
                        e => {
                            let r = if s.done > 0 { s.done as i32 } else { -e };
                            return self.complete(index, r);
                        }
                    }
                }
            }
            // No registered buffers and no provided-buffer pool on epoll
            // (the driver reports sizes 0, so the engine never asks).
            Op::WriteFixed { .. }
            | Op::ReadFixed { .. }
            | Op::RecvPooled { .. }
            | Op::RecvMulti { .. } => self.complete(index, -libc::EOPNOTSUPP),
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
    fn park_fd(&mut self, index: u32, fd: &Rc<OwnedFd>, write: bool) {
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

    /// One epoll_wait of at most `timeout_ms` (-1: no limit). Returns
    /// whether the wake eventfd fired.
    fn poll(&mut self, timeout_ms: i32) -> io::Result<bool> {
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
                Ok(false)
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
        self.events = events;
        Ok(woke)
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
        self.fire_timers(Instant::now());
        loop {
            let enough = want == 0 || self.ready.len() >= want;
            if enough && !self.has_waiters() {
                return Ok(());
            }
            let timeout_ms = if enough {
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
            let woke = self.poll(timeout_ms)?;
            self.fire_timers(Instant::now());
            let expired = deadline.is_some_and(|d| Instant::now() >= d);
            if timeout_ms == 0 || woke || expired || self.ready.len() >= want {
                return Ok(());
            }
        }
    }

    fn reap(&mut self, out: &mut Vec<Completion>) {
        out.append(&mut self.ready);
    }

    fn features(&self) -> Features {
        Features {
            sock_nonempty: false,
            op_socket: false,
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
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::unix::net::{UnixListener, UnixStream};

    /// Our end as an op descriptor, and the peer end as a std stream.
    fn pair() -> (Rc<OwnedFd>, UnixStream) {
        let (a, b) = UnixStream::pair().expect("socketpair");
        (Rc::new(OwnedFd::from(a)), b)
    }

    fn recv(fd: &Rc<OwnedFd>, len: u32, flags: i32) -> Op {
        Op::Recv {
            fd: fd.clone(),
            buf: Vec::with_capacity(len as usize),
            len,
            flags,
        }
    }

    fn send(fd: &Rc<OwnedFd>, data: &[u8]) -> Op {
        Op::Send {
            fd: fd.clone(),
            buf: data.to_vec().into(),
            start: 0,
        }
    }

    fn timer(d: Duration) -> Op {
        Op::Timer { after: d }
    }

    /// Runs the driver until `n` completions arrived (bounded), in order.
    fn collect(d: &mut EpollDriver, n: usize) -> Vec<Completion> {
        let mut out = Vec::new();
        let end = Instant::now() + Duration::from_secs(5);
        while out.len() < n {
            assert!(
                Instant::now() < end,
                "only {} of {n} completions",
                out.len()
            );
            d.submit_and_wait(1, Some(Duration::from_millis(100)))
                .expect("wait");
            d.reap(&mut out);
        }
        out
    }

    fn results(c: &[Completion]) -> Vec<(u64, i32)> {
        c.iter().map(|c| (c.token, c.result)).collect()
    }

    fn data(c: &Completion) -> &[u8] {
        match &c.op {
            Op::Recv { buf, .. } => buf,
            _ => panic!("not a recv"),
        }
    }

    #[test]
    fn send_recv_chain_with_short_recv_runs_the_peek() {
        let mut d = EpollDriver::new().unwrap();
        let (fd, mut peer) = pair();
        let mut ids = Vec::new();
        d.push_chain(
            [
                (send(&fd, b"ping"), 1),
                (recv(&fd, 100, 0), 2),
                (recv(&fd, 1, libc::MSG_PEEK | libc::MSG_DONTWAIT), 3),
            ],
            &mut ids,
        );
        let t = std::thread::spawn(move || {
            let mut b = [0u8; 4];
            peer.read_exact(&mut b).unwrap();
            std::thread::sleep(Duration::from_millis(20));
            peer.write_all(b"pong").unwrap();
            peer
        });
        let c = collect(&mut d, 3);
        // A short plain recv does not break the link; the probe finds nothing.
        assert_eq!(results(&c), [(1, 4), (2, 4), (3, -libc::EAGAIN)]);
        assert_eq!(data(&c[1]), b"pong");
        assert_eq!(c[1].flags, 0, "no SOCK_NONEMPTY on epoll");
        assert_eq!(d.in_flight(), 0);
        drop(t.join());
    }

    #[test]
    fn peek_nowait_answers_at_once() {
        let mut d = EpollDriver::new().unwrap();
        let (fd, mut peer) = pair();
        d.push(recv(&fd, 8, libc::MSG_PEEK | libc::MSG_DONTWAIT), 7);
        let c = collect(&mut d, 1);
        assert_eq!(results(&c), [(7, -libc::EAGAIN)]);
        peer.write_all(b"abc").unwrap();
        d.push(recv(&fd, 8, libc::MSG_PEEK | libc::MSG_DONTWAIT), 8);
        d.push(recv(&fd, 8, 0), 9);
        let c = collect(&mut d, 2);
        assert_eq!(results(&c), [(8, 3), (9, 3)]);
        assert_eq!((data(&c[0]), data(&c[1])), (&b"abc"[..], &b"abc"[..]));
    }

    #[test]
    fn waitall_recv_waits_for_every_byte_and_breaks_the_link_when_short() {
        let mut d = EpollDriver::new().unwrap();
        let (fd, mut peer) = pair();
        d.push(recv(&fd, 8, libc::MSG_WAITALL), 1);
        peer.write_all(b"1234").unwrap();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(30));
            peer.write_all(b"5678").unwrap();
            peer
        });
        let c = collect(&mut d, 1);
        assert_eq!((results(&c), data(&c[0])), (vec![(1, 8)], &b"12345678"[..]));
        let mut peer = t.join().unwrap();
        // EOF after 2 of 4: short, so the linked op is cancelled.
        peer.write_all(b"ab").unwrap();
        drop(peer);
        let mut ids = Vec::new();
        d.push_chain(
            [(recv(&fd, 4, libc::MSG_WAITALL), 2), (recv(&fd, 4, 0), 3)],
            &mut ids,
        );
        let c = collect(&mut d, 2);
        assert_eq!(results(&c), [(2, 2), (3, -libc::ECANCELED)]);
    }

    /// A receive pushed with an empty buffer (as the engine does here)
    /// allocates nothing while it waits and grows its buffer as bytes come,
    /// a MSG_WAITALL one across several arrivals.
    #[test]
    fn empty_buffers_grow_as_bytes_arrive() {
        let mut d = EpollDriver::new().unwrap();
        let (fd, mut peer) = pair();
        let empty = |len: u32, flags: i32| Op::Recv {
            fd: fd.clone(),
            buf: Vec::new(),
            len,
            flags,
        };
        d.push(empty(8, libc::MSG_WAITALL), 1);
        d.submit_and_wait(0, None).unwrap();
        let waiting = d.slots.iter().find_map(|s| match &s.op {
            Some(Op::Recv { buf, .. }) => Some(buf.capacity()),
            _ => None,
        });
        assert_eq!(waiting, Some(0), "a waiting receive holds no buffer");
        peer.write_all(b"1234").unwrap();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(30));
            peer.write_all(b"5678abc").unwrap();
            peer
        });
        let c = collect(&mut d, 1);
        assert_eq!((results(&c), data(&c[0])), (vec![(1, 8)], &b"12345678"[..]));
        let _peer = t.join().unwrap();
        d.push(empty(100, 0), 2);
        let c = collect(&mut d, 1);
        assert_eq!((results(&c), data(&c[0])), (vec![(2, 3)], &b"abc"[..]));
    }

    #[test]
    fn failed_head_cancels_the_rest_in_order() {
        let mut d = EpollDriver::new().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let fd = Rc::new(crate::ring::unix_stream_socket().unwrap());
        let addr = super::super::UnixAddr::new(&dir.path().join("nobody")).unwrap();
        let mut ids = Vec::new();
        d.push_chain(
            [
                (
                    Op::Connect {
                        fd: fd.clone(),
                        addr: Box::new(addr),
                    },
                    1,
                ),
                (send(&fd, b"hello"), 2),
                (recv(&fd, 4, libc::MSG_WAITALL), 3),
            ],
            &mut ids,
        );
        let c = collect(&mut d, 3);
        assert_eq!(
            results(&c),
            [
                (1, -libc::ENOENT),
                (2, -libc::ECANCELED),
                (3, -libc::ECANCELED)
            ]
        );
        // A peer gone: the send fails with EPIPE (no SIGPIPE), the recv is cancelled.
        let (fd, peer) = pair();
        drop(peer);
        d.push_chain([(send(&fd, b"x"), 4), (recv(&fd, 4, 0), 5)], &mut ids);
        let c = collect(&mut d, 2);
        assert_eq!(results(&c), [(4, -libc::EPIPE), (5, -libc::ECANCELED)]);
    }

    #[test]
    fn connect_succeeds_and_is_refused() {
        let mut d = EpollDriver::new().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("l");
        let l = UnixListener::bind(&path).unwrap();
        let fd = Rc::new(crate::ring::unix_stream_socket().unwrap());
        let addr = super::super::UnixAddr::new(&path).unwrap();
        d.push(
            Op::Connect {
                fd,
                addr: Box::new(addr.clone()),
            },
            1,
        );
        assert_eq!(results(&collect(&mut d, 1)), [(1, 0)]);
        drop(l);
        let fd = Rc::new(crate::ring::unix_stream_socket().unwrap());
        d.push(
            Op::Connect {
                fd,
                addr: Box::new(addr),
            },
            2,
        );
        assert_eq!(results(&collect(&mut d, 1)), [(2, -libc::ECONNREFUSED)]);
    }

    #[test]
    fn big_send_waits_for_room() {
        let mut d = EpollDriver::new().unwrap();
        let (fd, mut peer) = pair();
        let big: Vec<u8> = (0..4 << 20).map(|i| i as u8).collect();
        d.push(send(&fd, &big), 1);
        let want = big.clone();
        let t = std::thread::spawn(move || {
            let mut got = vec![0u8; want.len()];
            peer.read_exact(&mut got).unwrap();
            assert!(got == want, "bytes intact");
        });
        assert_eq!(results(&collect(&mut d, 1)), [(1, 4 << 20)]);
        t.join().unwrap();
    }

    #[test]
    fn cancel_a_waiting_recv_and_its_successors() {
        let mut d = EpollDriver::new().unwrap();
        let (fd, mut peer) = pair();
        let mut ids = Vec::new();
        d.push_chain(
            [
                (recv(&fd, 8, 0), 1),
                (recv(&fd, 1, libc::MSG_PEEK | libc::MSG_DONTWAIT), 2),
            ],
            &mut ids,
        );
        d.submit_and_wait(0, None).unwrap();
        let mut out = Vec::new();
        d.reap(&mut out);
        assert!(out.is_empty(), "the recv waits");
        // Cancelling a linked, not started op does nothing (ENOENT on io_uring).
        d.cancel(ids[1]);
        d.cancel(ids[0]);
        let c = collect(&mut d, 2);
        assert_eq!(results(&c), [(1, -libc::ECANCELED), (2, -libc::ECANCELED)]);
        // Cancelling a completed op: nothing, and the next recv gets the data.
        d.cancel(ids[0]);
        peer.write_all(b"late").unwrap();
        d.push(recv(&fd, 8, 0), 3);
        let c = collect(&mut d, 1);
        assert_eq!((results(&c), data(&c[0])), (vec![(3, 4)], &b"late"[..]));
        assert_eq!(d.in_flight(), 0);
    }

    #[test]
    fn timers_fire_in_deadline_order_and_cancel() {
        let mut d = EpollDriver::new().unwrap();
        let t0 = Instant::now();
        d.push(timer(Duration::from_millis(60)), 1);
        let id = d.push(timer(Duration::from_secs(30)), 2);
        d.push(timer(Duration::from_millis(20)), 3);
        let c = collect(&mut d, 2);
        assert_eq!(results(&c), [(3, -libc::ETIME), (1, -libc::ETIME)]);
        assert!(t0.elapsed() >= Duration::from_millis(60));
        d.cancel(id);
        let c = collect(&mut d, 1);
        assert_eq!(results(&c), [(2, -libc::ECANCELED)]);
        assert!(t0.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn wake_interrupts_the_wait() {
        let mut d = EpollDriver::new().unwrap();
        let (fd, _peer) = pair();
        d.push(recv(&fd, 8, 0), 1); // never completes
        let wake = d.wake_handle();
        wake.prepare_park();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(30));
            wake.wake();
        });
        let t0 = Instant::now();
        d.submit_and_wait(1, Some(Duration::from_secs(10))).unwrap();
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "woken, not timed out"
        );
        t.join().unwrap();
    }

    #[test]
    fn no_registered_buffers() {
        let mut d = EpollDriver::new().unwrap();
        assert!(d.reg_alloc().is_none());
        assert_eq!(d.reg_slot_bytes(), 0);
        assert!(!d.features().sock_nonempty);
        assert_eq!(d.backend(), Backend::Epoll);
    }
}
