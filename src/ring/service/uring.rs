//! The service event loop: one io_uring per thread serving many stream
//! connections accepted from one or more listening sockets.
//!
//! The loop knows nothing of pipes: each connection is driven by a
//! [`Session`] (bytes in, bytes out, a verdict), made by an [`Acceptor`].
//!
//! # Operations in flight
//!
//! * per listener: one multishot `ACCEPT` (re-armed when it ends; paused for
//!   a moment on `EMFILE`/`ENFILE`/`ENOMEM`);
//! * per connection: at most one multishot `RECV` selecting from the loop's
//!   [`BufRing`] and at most one `SEND` of the connection's own output
//!   buffer (partial sends are resubmitted from where they stopped);
//! * one `POLL_ADD` on the shutdown eventfd, and one on the loop's wake
//!   eventfd (re-armed after each wake; see [`ConnWaker`]);
//! * `ASYNC_CANCEL`s, which refer only to a target's `user_data`.
//!
//! # Buffers
//!
//! A receive completion names a provided buffer; the loop hands its bytes to
//! the session and puts it back into the ring before the next completion,
//! so buffers are held only while a batch of completions is processed and
//! idle connections hold none. `-ENOBUFS` (ring empty) ends a multishot
//! receive: that connection then receives once into a buffer of its own
//! (allocated for that receive, freed after it) and goes back to the ring.
//! So a connection the ring ran dry for is served at the next submit, however
//! many other connections keep taking the ring's buffers first (without
//! `DEFER_TASKRUN`, armed receives run before any re-arm and could starve
//! the same connections round after round). Each connection owns two output
//! vectors: `sending`, lent to the kernel by the one `SEND` in flight and not
//! touched until its completion, and `pending`, where the session appends
//! replies meanwhile.
//!
//! # Backpressure
//!
//! When a connection's unsent output exceeds the high-water mark its receive
//! is cancelled (a client that does not read its replies stops being read);
//! it is re-armed once the output drains below the low-water mark. Output can
//! overshoot the mark by what the completions already in the queue produce,
//! never by more.
//!
//! Across connections, the loop's budget (`max_buffered_bytes`) stops
//! reading first the connections with output waiting, then all of them,
//! and re-arms them as the total comes down. Data that completions already
//! in the queue bring to a paused connection is stashed and handed to its
//! session, in order, once the budget allows.
//!
//! # Descriptors
//!
//! An accept that fails with `EMFILE`/`ENFILE` evicts the connection still
//! in its handshake that is closest to its deadline (at least
//! 250 ms old) and is retried once that connection's fd closed.
//!
//! # Closing
//!
//! A connection that must close stops receiving (its receive is cancelled),
//! then, for a graceful close, flushes its output; an abort cancels the send
//! too. The fd is closed and the connection's memory freed only once neither
//! a receive nor a send on it is in flight, i.e. after their final
//! completions, whatever the cancel answered (`-EALREADY` included).
//!
//! # Shutdown
//!
//! A shared eventfd becomes readable: every loop cancels its accepts, aborts
//! all connections (an fd an accept returns meanwhile is closed at once) and
//! returns when no operation of its ring is in flight any more. Only then is
//! the buffer ring unregistered and freed.

use crate::slab::Slab;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fmt;
use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use io_uring::{cqueue, opcode, squeue, types, IoUring};

#[cfg(doc)]
use super::shared::ConnWaker;
use super::shared::{
    abort, admit, apply, backpressure, fire_deadlines, next_wake, pick_eviction, Acceptor, Budget,
    CloseReason, ConnPhase, Deadlines, LoopConfig, LoopCounters, Phase, Session, Verdict,
    WakeQueue, EVICT_RETRY,
};
use crate::ring::bufring::BufRing;
use crate::ring::op::Token;
use crate::ring::setup::{new_ring, probe_features, RingError};

/// Operation kinds: the kind of a [`Token`] in `user_data`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Accept = 1,
    Recv = 2,
    Send = 3,
    Cancel = 4,
    ShutdownPoll = 5,
    WakePoll = 6,
}

fn ud(kind: Kind, idx: u32, gen: u32) -> u64 {
    Token::new(kind as u8, gen, idx).raw()
}

fn ud_parts(ud: u64) -> (Option<Kind>, u32, u32) {
    let t = Token::from_raw(ud);
    let kind = match t.kind() {
        1 => Some(Kind::Accept),
        2 => Some(Kind::Recv),
        3 => Some(Kind::Send),
        4 => Some(Kind::Cancel),
        5 => Some(Kind::ShutdownPoll),
        6 => Some(Kind::WakePoll),
        _ => None,
    };
    (kind, t.gen(), t.index())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RecvState {
    /// No receive in flight.
    Idle,
    /// A receive is in flight: the multishot one, or (`Conn::own` has a
    /// capacity) one into the connection's own buffer.
    Armed,
    /// A cancel was sent; the final completion is still to come.
    Cancelling,
}

impl<S: Session> ConnPhase for Conn<S> {
    fn phase_and_reason(&mut self) -> (&mut Phase, &mut CloseReason) {
        (&mut self.phase, &mut self.reason)
    }

    fn deadline(&self) -> Option<Instant> {
        self.session.deadline()
    }

    fn on_deadline(&mut self) -> Verdict {
        self.session.on_deadline(&mut self.pending)
    }

    fn accepted_at(&self) -> Instant {
        self.accepted
    }
}

struct Conn<S> {
    fd: OwnedFd,
    session: S,
    accepted: Instant,
    phase: Phase,
    reason: CloseReason,
    recv: RecvState,
    /// A receive ended with -ENOBUFS: the next one uses `own`.
    starved: bool,
    /// The buffer of a receive of the connection's own, lent to the kernel
    /// (its capacity) while it is in flight; no capacity otherwise.
    own: Vec<u8>,
    /// Receive cancelled because of backpressure.
    paused: bool,
    send_inflight: bool,
    send_cancelling: bool,
    /// Output lent to the send in flight (bytes `sent..` still to go).
    sending: Vec<u8>,
    sent: usize,
    /// Output produced while a send was in flight.
    pending: Vec<u8>,
    /// Bytes received while the budget allowed this connection no more
    /// output (completions already in the queue when its receive was
    /// cancelled): given to the session, before anything received later,
    /// once the budget allows.
    stash: Vec<u8>,
    /// What the connection counts against the loop's [`Budget`].
    charge: usize,
    /// What its stash counts in the stats ([`Budget::set_parked`]).
    stash_charge: usize,
}

impl<S> Conn<S> {
    fn queued(&self) -> usize {
        self.sending.len() - self.sent + self.pending.len()
    }

    /// The memory the connection holds for output and its own receive.
    fn held_bytes(&self) -> usize {
        self.sending.capacity() + self.pending.capacity() + self.own.capacity()
    }
}

/// Gives received bytes to the session, or keeps them in the stash while
/// the budget allows the connection no more output (or the stash already
/// holds earlier bytes), so a batch of completions cannot multiply into
/// output past the budget.
fn feed_or_stash<S: Session>(c: &mut Conn<S>, data: &[u8], budget: &Budget) {
    if c.stash.is_empty() && budget.allows(c.queued()) {
        let v = c.session.on_data(data, &mut c.pending);
        apply(c, v, CloseReason::Session);
    } else {
        c.stash.extend_from_slice(data);
    }
}

struct Listener {
    fd: Arc<OwnedFd>,
    armed: bool,
    /// Accepts paused until then (after EMFILE and friends).
    resume_at: Option<Instant>,
}

/// How long accepts pause after the process ran out of fds or memory.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// One io_uring event loop. Create it on the thread that will run it.
pub struct EventLoop {
    ring: IoUring,
    bufs: BufRing,
    cfg: LoopConfig,
    listeners: Vec<Listener>,
    shutdown_fd: Arc<OwnedFd>,
    /// Connections woken from other threads, and the eventfd that says so.
    wake: Arc<WakeQueue>,
    /// The poll on the wake eventfd is in flight.
    wake_armed: bool,
    counters: Arc<LoopCounters>,
    budget: Budget,
    /// A ring buffer was used since the ring's pages were last released.
    bufs_touched: bool,
    /// Evicted connections whose fd is not closed yet (their receive's
    /// cancel is under way): accepts wait for them rather than evict more.
    evicting: usize,
    /// Operations submitted whose final completion has not been seen.
    inflight: usize,
    shutting_down: bool,
}

impl fmt::Debug for EventLoop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventLoop")
            .field("bufs", &self.bufs)
            .field("listeners", &self.listeners.len())
            .field("inflight", &self.inflight)
            .field("shutting_down", &self.shutting_down)
            .finish()
    }
}

/// Everything one `run` owns besides the ring.
struct State<A: Acceptor> {
    acceptor: A,
    conns: Slab<Conn<A::Session>>,
    deadlines: Deadlines,
}

/// Output vectors bigger than this are not kept around on idle connections.
const KEEP_CAPACITY_BYTES: usize = 4 * 1024;

impl EventLoop {
    /// Creates the ring (through [`new_ring`]) and the buffer ring. The loop
    /// keeps the listeners and the shutdown eventfd open while it runs.
    pub fn new(
        cfg: LoopConfig,
        listeners: Vec<Arc<OwnedFd>>,
        shutdown_fd: Arc<OwnedFd>,
        counters: Arc<LoopCounters>,
    ) -> Result<EventLoop, RingError> {
        if cfg.output_low_water_bytes > cfg.output_high_water_bytes {
            return Err(RingError::Io(io::Error::new(
                io::ErrorKind::InvalidInput,
                "output low-water mark above the high-water mark",
            )));
        }
        let cfg_budget = cfg.max_buffered_bytes;
        let (ring, _flags) = new_ring(cfg.sq_entries, cfg.sq_entries.saturating_mul(4))?;
        probe_features(&ring)?;
        let bufs = BufRing::new(&ring, 0, cfg.recv_buffers, cfg.recv_buffer_bytes)
            .map_err(RingError::Io)?;
        let wake = WakeQueue::new().map_err(RingError::Io)?;
        Ok(EventLoop {
            ring,
            bufs,
            cfg,
            listeners: listeners
                .into_iter()
                .map(|fd| Listener {
                    fd,
                    armed: false,
                    resume_at: None,
                })
                .collect(),
            shutdown_fd,
            wake,
            wake_armed: false,
            budget: Budget::new(cfg_budget, counters.clone()),
            bufs_touched: false,
            evicting: 0,
            counters,
            inflight: 0,
            shutting_down: false,
        })
    }

    /// Serves until the shutdown eventfd becomes readable, then closes every
    /// connection and returns once nothing is in flight.
    pub fn run<A: Acceptor>(mut self, acceptor: A) -> io::Result<()> {
        let mut st = State {
            acceptor,
            conns: Slab::new(),
            deadlines: BinaryHeap::new(),
        };
        let result = self.serve(&mut st);
        if result.is_err() {
            // Try to end what is in flight so memory can be freed; what
            // cannot be drained is leaked below rather than freed early.
            let _ = self.begin_shutdown(&mut st);
            let _ = self.drain(&mut st, Duration::from_secs(2));
        }
        if self.inflight == 0 {
            self.bufs.unregister(&self.ring)?;
        } else {
            // Operations may still write into connection buffers or receive
            // buffers: leak them (BufRing leaks itself while registered).
            std::mem::forget(st);
        }
        result
    }

    fn serve<A: Acceptor>(&mut self, st: &mut State<A>) -> io::Result<()> {
        let poll =
            opcode::PollAdd::new(types::Fd(self.shutdown_fd.as_raw_fd()), libc::POLLIN as u32)
                .build()
                .user_data(ud(Kind::ShutdownPoll, 0, 0));
        self.push(poll)?;
        self.arm_wake()?;
        for i in 0..self.listeners.len() {
            self.arm_accept(i)?;
        }
        let mut cqes: Vec<cqueue::Entry> = Vec::with_capacity(1024);

        loop {
            if self.shutting_down && self.inflight == 0 {
                return Ok(());
            }
            let wake_at = self.next_wake(st);
            self.wait(wake_at)?;
            loop {
                cqes.clear();
                cqes.extend(self.ring.completion().take(4096));
                if cqes.is_empty() {
                    break;
                }
                for cqe in cqes.drain(..) {
                    self.dispatch(st, cqe)?;
                }
                self.check_budget(st)?;
            }
            self.fire_timers(st)?;
            self.check_budget(st)?;
        }
    }

    /// Once the budget went over (or back under): every connection stops
    /// (or restarts) reading. Then, after a burst, free memory goes back.
    fn check_budget<A: Acceptor>(&mut self, st: &mut State<A>) -> io::Result<()> {
        if self.budget.take_changed() {
            for (idx, gen) in st.conns.keys() {
                self.update(st, idx, gen)?;
            }
        }
        let idle = st.conns.len() == 0;
        if self.budget.trim_after_burst(idle) && idle && self.bufs_touched {
            // After a burst, with no connection, so no receive in flight:
            // the buffer ring's pages can go back until the next one
            // arrives.
            self.bufs_touched = false;
            self.bufs.release_pages();
        }
        Ok(())
    }

    /// Closes the connection still in its handshake that is closest to its
    /// deadline (the oldest, as every handshake gets the same time), to
    /// make room for a new one. Returns false when there is none.
    fn evict_one<A: Acceptor>(&mut self, st: &mut State<A>) -> io::Result<bool> {
        if self.evicting > 0 {
            // One is closing already: its fd is what the accept needs.
            return Ok(true);
        }
        match pick_eviction(&mut st.deadlines, &mut st.conns, Instant::now()) {
            Some((idx, gen)) => {
                self.counters.evicted.fetch_add(1, Ordering::Relaxed);
                self.evicting += 1;
                self.update(st, idx, gen)?;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Waits for the end of every operation in flight, at most `limit`.
    fn drain<A: Acceptor>(&mut self, st: &mut State<A>, limit: Duration) -> io::Result<()> {
        let end = Instant::now() + limit;
        while self.inflight > 0 && Instant::now() < end {
            self.wait(Some(end))?;
            let cqes: Vec<cqueue::Entry> = self.ring.completion().collect();
            for cqe in cqes {
                self.dispatch(st, cqe)?;
            }
        }
        Ok(())
    }

    /// Submits what is queued and waits for one completion or `wake_at`.
    fn wait(&mut self, wake_at: Option<Instant>) -> io::Result<()> {
        let res = match wake_at {
            None => self.ring.submit_and_wait(1),
            Some(t) => {
                let d = t.saturating_duration_since(Instant::now());
                let ts = types::Timespec::new()
                    .sec(d.as_secs())
                    .nsec(d.subsec_nanos());
                let args = types::SubmitArgs::new().timespec(&ts);
                self.ring.submitter().submit_with_args(1, &args)
            }
        };
        match res {
            Ok(_) => Ok(()),
            Err(e) => match e.raw_os_error() {
                Some(libc::ETIME) | Some(libc::EINTR) | Some(libc::EBUSY) | Some(libc::EAGAIN) => {
                    Ok(())
                }
                _ => Err(e),
            },
        }
    }

    fn next_wake<A: Acceptor>(&self, st: &State<A>) -> Option<Instant> {
        next_wake(&st.deadlines, self.listeners.iter().map(|l| l.resume_at))
    }

    /// Queues an SQE, submitting first if the queue is full.
    fn push(&mut self, sqe: squeue::Entry) -> io::Result<()> {
        loop {
            // SAFETY: every SQE built by this loop refers only to fds and
            // buffers that stay alive until the op's final completion: the
            // listeners and shutdown eventfd are held (Arc) by the loop; a
            // connection's fd, `sending` buffer and `own` receive buffer live
            // in its slab entry, which is freed only when no op on it is in
            // flight (`own` is taken back only at its receive's completion);
            // ring buffers belong to `bufs`, freed only after unregistering
            // with nothing in flight; cancels carry only a user_data value.
            let pushed = unsafe { self.ring.submission().push(&sqe) };
            if pushed.is_ok() {
                self.inflight += 1;
                return Ok(());
            }
            match self.ring.submit() {
                Ok(_) => {}
                Err(e) if matches!(e.raw_os_error(), Some(libc::EINTR) | Some(libc::EAGAIN)) => {}
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                    // The completion queue is backed up: the kernel wants us
                    // to reap; let the next wait flush the overflow.
                    self.ring.submit_and_wait(0).ok();
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn arm_accept(&mut self, i: usize) -> io::Result<()> {
        let l = &mut self.listeners[i];
        if l.armed || self.shutting_down || l.resume_at.is_some() {
            return Ok(());
        }
        l.armed = true;
        let sqe = opcode::AcceptMulti::new(types::Fd(l.fd.as_raw_fd()))
            .flags(libc::SOCK_CLOEXEC)
            .build()
            .user_data(ud(Kind::Accept, i as u32, 0));
        self.push(sqe)
    }

    fn arm_wake(&mut self) -> io::Result<()> {
        if self.wake_armed || self.shutting_down {
            return Ok(());
        }
        self.wake_armed = true;
        let sqe = opcode::PollAdd::new(types::Fd(self.wake.raw_fd()), libc::POLLIN as u32)
            .build()
            .user_data(ud(Kind::WakePoll, 0, 0));
        self.push(sqe)
    }

    /// The wake eventfd fired: every woken connection still open (the
    /// generation matches) produces what is ready; then the poll is re-armed.
    fn on_wakes<A: Acceptor>(&mut self, st: &mut State<A>) -> io::Result<()> {
        for (idx, gen) in self.wake.take() {
            let Some(c) = st.conns.get_mut(idx, gen) else {
                continue;
            };
            if matches!(c.phase, Phase::Open | Phase::Draining) && !self.shutting_down {
                let v = c.session.on_wake(&mut c.pending);
                apply(c, v, CloseReason::Session);
            }
            self.update(st, idx, gen)?;
        }
        self.arm_wake()
    }

    fn cancel(&mut self, target: u64) -> io::Result<()> {
        let sqe = opcode::AsyncCancel::new(target)
            .build()
            .user_data(ud(Kind::Cancel, 0, 0));
        self.push(sqe)
    }

    fn dispatch<A: Acceptor>(&mut self, st: &mut State<A>, cqe: cqueue::Entry) -> io::Result<()> {
        let flags = cqe.flags();
        let res = cqe.result();
        let more = cqueue::more(flags);
        if !more {
            self.inflight -= 1;
        }
        let (kind, gen, idx) = ud_parts(cqe.user_data());
        match kind {
            Some(Kind::Accept) => self.on_accept(st, idx as usize, res, more),
            Some(Kind::Recv) => self.on_recv(st, idx, gen, res, flags, more),
            Some(Kind::Send) => self.on_send(st, idx, gen, res),
            Some(Kind::Cancel) => Ok(()),
            Some(Kind::ShutdownPoll) => self.begin_shutdown(st),
            Some(Kind::WakePoll) => {
                self.wake_armed = false;
                self.on_wakes(st)
            }
            None => {
                // Not ours; never happens. Return a buffer if it took one.
                self.bufs.discard(flags);
                Ok(())
            }
        }
    }

    /// Cancels the accepts and aborts every connection; the loop ends when
    /// their last completions are in.
    fn begin_shutdown<A: Acceptor>(&mut self, st: &mut State<A>) -> io::Result<()> {
        if self.shutting_down {
            return Ok(());
        }
        self.shutting_down = true;
        if self.wake_armed {
            self.cancel(ud(Kind::WakePoll, 0, 0))?;
        }
        for i in 0..self.listeners.len() {
            self.listeners[i].resume_at = None;
            if self.listeners[i].armed {
                self.cancel(ud(Kind::Accept, i as u32, 0))?;
            }
        }
        for (idx, gen) in st.conns.keys() {
            if let Some(c) = st.conns.get_mut(idx, gen) {
                abort(c, CloseReason::Shutdown);
            }
            self.update(st, idx, gen)?;
        }
        Ok(())
    }

    fn on_accept<A: Acceptor>(
        &mut self,
        st: &mut State<A>,
        li: usize,
        res: i32,
        more: bool,
    ) -> io::Result<()> {
        if li >= self.listeners.len() {
            return Ok(());
        }
        if !more {
            self.listeners[li].armed = false;
        }
        if res >= 0 {
            // SAFETY: a non-negative accept result is a new fd the kernel
            // just created for us; nobody else owns it.
            let fd = unsafe { OwnedFd::from_raw_fd(res as RawFd) };
            let full = self.shutting_down || st.conns.len() >= self.cfg.max_connections;
            if let Some((idx, gen, session)) = admit(
                &mut st.acceptor,
                &mut st.conns,
                &self.wake,
                &self.counters,
                (li, fd.as_fd()),
                full,
            ) {
                self.add_conn(st, idx, gen, fd, session)?;
            }
        } else if res != -libc::ECANCELED {
            self.counters.accept_errors.fetch_add(1, Ordering::Relaxed);
            let out_of_fds = matches!(-res, libc::EMFILE | libc::ENFILE);
            if out_of_fds && !self.shutting_down && self.evict_one(st)? {
                // The evicted connection's fd closes once its receive is
                // cancelled: try again in a moment.
                self.listeners[li].resume_at = Some(Instant::now() + EVICT_RETRY);
            } else if out_of_fds || matches!(-res, libc::ENOMEM | libc::ENOBUFS) {
                self.listeners[li].resume_at = Some(Instant::now() + ACCEPT_BACKOFF);
            }
        }
        if !self.listeners[li].armed {
            self.arm_accept(li)?;
        }
        Ok(())
    }

    fn add_conn<A: Acceptor>(
        &mut self,
        st: &mut State<A>,
        idx: u32,
        gen: u32,
        fd: OwnedFd,
        session: A::Session,
    ) -> io::Result<()> {
        if let Some(t) = session.deadline() {
            st.deadlines.push(Reverse((t, idx, gen)));
        }
        st.conns.insert_at(
            idx,
            Conn {
                fd,
                session,
                accepted: Instant::now(),
                phase: Phase::Open,
                reason: CloseReason::Session,
                recv: RecvState::Idle,
                starved: false,
                own: Vec::new(),
                paused: false,
                send_inflight: false,
                send_cancelling: false,
                sending: Vec::new(),
                sent: 0,
                pending: Vec::new(),
                stash: Vec::new(),
                charge: 0,
                stash_charge: 0,
            },
        );
        self.update(st, idx, gen)
    }

    fn on_recv<A: Acceptor>(
        &mut self,
        st: &mut State<A>,
        idx: u32,
        gen: u32,
        res: i32,
        flags: u32,
        more: bool,
    ) -> io::Result<()> {
        let Some(c) = st.conns.get_mut(idx, gen) else {
            // A receive always keeps its connection alive; never happens.
            self.bufs.discard(flags);
            return Ok(());
        };
        if !more {
            c.recv = RecvState::Idle;
        }
        // The receive's own buffer, if it had one: the kernel is done with it.
        let own = std::mem::take(&mut c.own);
        if res > 0 {
            self.counters
                .bytes_in
                .fetch_add(res as u64, Ordering::Relaxed);
            if own.capacity() > 0 {
                let n = res as usize;
                if n > own.capacity() {
                    abort(c, CloseReason::Error(libc::EIO));
                } else if c.phase == Phase::Open {
                    let mut own = own;
                    // SAFETY: the receive wrote `n` bytes at the start of the
                    // buffer's capacity (`n` checked above), and the kernel
                    // is done with it (this is its final completion).
                    unsafe { own.set_len(n) };
                    feed_or_stash(c, &own, &self.budget);
                }
            } else {
                self.bufs_touched = true;
                match self.bufs.take(flags, res as usize) {
                    Ok(buf) => {
                        if c.phase == Phase::Open {
                            feed_or_stash(c, &buf, &self.budget);
                        }
                    }
                    Err(_) => {
                        // `take` put back a buffer it could not hand out.
                        abort(c, CloseReason::Error(libc::EIO));
                    }
                }
            }
        } else if res == 0 {
            if c.phase == Phase::Open {
                c.phase = Phase::Draining;
                c.reason = CloseReason::PeerClosed;
            }
        } else if res == -libc::ENOBUFS {
            self.counters
                .recv_no_buffers
                .fetch_add(1, Ordering::Relaxed);
            c.starved = true;
        } else if res != -libc::ECANCELED {
            abort(c, CloseReason::Error(-res));
        }
        self.update(st, idx, gen)
    }

    fn on_send<A: Acceptor>(
        &mut self,
        st: &mut State<A>,
        idx: u32,
        gen: u32,
        res: i32,
    ) -> io::Result<()> {
        let Some(c) = st.conns.get_mut(idx, gen) else {
            return Ok(());
        };
        c.send_inflight = false;
        c.send_cancelling = false;
        if res > 0 {
            let n = res as usize;
            c.sent += n;
            self.counters
                .bytes_out
                .fetch_add(n as u64, Ordering::Relaxed);
            c.session.on_sent(n);
            if c.sent >= c.sending.len() {
                c.sending.clear();
                c.sent = 0;
                if c.sending.capacity() > KEEP_CAPACITY_BYTES {
                    c.sending = Vec::new();
                }
            }
        } else if res == 0 {
            abort(c, CloseReason::Error(libc::EPIPE));
        } else if res != -libc::ECANCELED || c.phase != Phase::Aborting {
            abort(c, CloseReason::Error(-res));
        }
        self.update(st, idx, gen)
    }

    /// Brings a connection's operations in line with its state: sends what
    /// is queued, pauses or resumes receiving, cancels what must stop, and
    /// closes it when nothing is in flight any more.
    fn update<A: Acceptor>(&mut self, st: &mut State<A>, idx: u32, gen: u32) -> io::Result<()> {
        let Some(c) = st.conns.get_mut(idx, gen) else {
            return Ok(());
        };
        let fd = c.fd.as_raw_fd();
        let mut sqes: [Option<squeue::Entry>; 2] = [None, None];

        // A session with a backlog produces its next batch once the output
        // has drained (also when draining: the peer may have closed only
        // its sending side). A session that makes no progress would stall
        // the connection with its receive off: it is aborted instead.
        if matches!(c.phase, Phase::Open | Phase::Draining)
            && !self.shutting_down
            && self.budget.allows(c.queued())
            && c.queued() <= self.cfg.output_low_water_bytes
            && c.session.has_backlog()
        {
            let before = c.queued();
            let v = c.session.on_writable(&mut c.pending);
            apply(c, v, CloseReason::Session);
            if c.queued() == before && c.session.has_backlog() {
                abort(c, CloseReason::Session);
            }
        }

        // Stashed input, once the budget allows (before any new receive).
        if !c.stash.is_empty()
            && matches!(c.phase, Phase::Open | Phase::Draining)
            && !self.shutting_down
            && self.budget.allows(c.queued())
            && !c.session.has_backlog()
        {
            let stash = std::mem::take(&mut c.stash);
            let v = c.session.on_data(&stash, &mut c.pending);
            apply(c, v, CloseReason::Session);
        }

        // Output.
        if c.phase == Phase::Aborting {
            c.pending = Vec::new();
            if c.send_inflight && !c.send_cancelling {
                c.send_cancelling = true;
                sqes[0] = Some(
                    opcode::AsyncCancel::new(ud(Kind::Send, idx, gen))
                        .build()
                        .user_data(ud(Kind::Cancel, 0, 0)),
                );
            }
        } else if !c.send_inflight {
            if c.sent >= c.sending.len() && !c.pending.is_empty() {
                std::mem::swap(&mut c.sending, &mut c.pending);
                c.sent = 0;
            }
            if c.sent < c.sending.len() {
                let rest = &c.sending[c.sent..];
                let len = rest.len().min(u32::MAX as usize) as u32;
                c.send_inflight = true;
                sqes[0] = Some(
                    opcode::Send::new(types::Fd(fd), rest.as_ptr(), len)
                        .flags(libc::MSG_NOSIGNAL)
                        .build()
                        .user_data(ud(Kind::Send, idx, gen)),
                );
            }
        }

        // Input: not while shutting down or closing, not while the output
        // is over the high-water mark (until it is back under the low one),
        // not while the session holds a backlog.
        let open = c.phase == Phase::Open && !self.shutting_down;
        if open {
            let queued = c.queued();
            backpressure(&mut c.paused, queued, &self.cfg, &self.counters);
        }
        if open
            && !c.paused
            && !c.session.has_backlog()
            && c.stash.is_empty()
            && self.budget.allows(c.queued())
        {
            if c.recv == RecvState::Idle {
                c.recv = RecvState::Armed;
                let sqe = if c.starved {
                    // The ring ran dry for this connection: one receive
                    // into a buffer of its own, then back to the ring.
                    c.starved = false;
                    let len = self.bufs.buf_len();
                    c.own = Vec::with_capacity(len as usize);
                    opcode::Recv::new(types::Fd(fd), c.own.as_mut_ptr(), len).build()
                } else {
                    opcode::RecvMulti::new(types::Fd(fd), self.bufs.bgid()).build()
                };
                sqes[1] = Some(sqe.user_data(ud(Kind::Recv, idx, gen)));
            }
        } else if c.recv == RecvState::Armed {
            c.recv = RecvState::Cancelling;
            sqes[1] = Some(
                opcode::AsyncCancel::new(ud(Kind::Recv, idx, gen))
                    .build()
                    .user_data(ud(Kind::Cancel, 0, 0)),
            );
        }

        let done = match c.phase {
            Phase::Open => false,
            Phase::Draining => {
                c.recv == RecvState::Idle
                    && !c.send_inflight
                    && c.queued() == 0
                    && c.stash.is_empty()
                    && !c.session.has_backlog()
            }
            Phase::Aborting => c.recv == RecvState::Idle && !c.send_inflight,
        };
        if done {
            if let Some(mut c) = st.conns.take(idx) {
                self.budget.set(&mut c.charge, 0);
                self.budget.set_parked(&mut c.stash_charge, 0);
                self.budget.closed();
                if c.reason == CloseReason::Evicted {
                    self.evicting = self.evicting.saturating_sub(1);
                }
                c.session.on_close(c.reason);
                // Nothing is in flight on this fd: closing it is safe.
                drop(c);
            }
            return Ok(());
        }
        let held = c.held_bytes();
        self.budget.set(&mut c.charge, held);
        let stashed = c.stash.capacity();
        self.budget.set_parked(&mut c.stash_charge, stashed);
        for sqe in sqes.into_iter().flatten() {
            self.push(sqe)?;
        }
        Ok(())
    }

    fn fire_timers<A: Acceptor>(&mut self, st: &mut State<A>) -> io::Result<()> {
        let now = Instant::now();
        for i in 0..self.listeners.len() {
            if let Some(r) = self.listeners[i].resume_at {
                if r <= now {
                    self.listeners[i].resume_at = None;
                    self.arm_accept(i)?;
                }
            }
        }
        for (idx, gen) in fire_deadlines(&mut st.deadlines, &mut st.conns, now) {
            self.update(st, idx, gen)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echo_close_deadline_and_shutdown() {
        // Big message through 64-byte buffers, "bye", a silent client, an
        // idle client closed by the shutdown.
        let cfg = LoopConfig {
            recv_buffers: 4,
            recv_buffer_bytes: 64,
            ..LoopConfig::default()
        };
        super::super::shared::test_echo::run_echo_script(move |l, s, k, acceptor| {
            match EventLoop::new(cfg, vec![l], s, k) {
                Ok(ev) => ev.run(acceptor).map(|_| true),
                Err(RingError::Unavailable { .. }) => Ok(false),
                Err(e) => Err(e.into()),
            }
        });
    }

    #[test]
    fn a_wake_from_another_thread_produces_output_and_stale_wakes_are_dropped() {
        super::super::shared::test_echo::run_wake_script(|l, s, k, acceptor| match EventLoop::new(
            LoopConfig::default(),
            vec![l],
            s,
            k,
        ) {
            Ok(ev) => ev.run(acceptor).map(|_| true),
            Err(RingError::Unavailable { .. }) => Ok(false),
            Err(e) => Err(e.into()),
        });
    }
}
