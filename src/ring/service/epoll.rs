//! The service event loop on epoll: the fallback for machines where
//! io_uring is switched off (`kernel.io_uring_disabled`, container seccomp
//! profiles, RHEL 9 defaults; see KERNEL-NOTES.md).
//!
//! It drives the same [`Session`]s made by the same [`Acceptor`] as the
//! io_uring loop in [`super::uring`], takes the same [`LoopConfig`] and
//! updates the same [`LoopCounters`], so the handshake, the accept policy,
//! the limits, the handlers, the deadlines and the stats are shared; only
//! the way bytes move differs.
//!
//! # Readiness
//!
//! One level-triggered epoll instance per thread watches:
//!
//! * the shutdown eventfd (`EPOLLIN`): once readable, the loop closes every
//!   connection and returns;
//! * every listener (`EPOLLIN | EPOLLEXCLUSIVE`, so one connection wakes one
//!   of the service threads, not all): a wake-up drains the accept queue
//!   with nonblocking `accept4` (at most [`ACCEPT_BATCH`] at a time; level
//!   triggering brings the loop back for the rest). `EMFILE`, `ENFILE`,
//!   `ENOMEM` and `ENOBUFS` take the listener out of the set for
//!   100 ms, like the io_uring loop pauses its multishot accept;
//! * the loop's wake eventfd (`EPOLLIN`): connections woken from other
//!   threads ([`ConnWaker`](super::ConnWaker)) get
//!   [`Session::on_wake`];
//! * every connection, with `EPOLLIN` while the session wants input and
//!   `EPOLLOUT` only while output is waiting for room in the socket. The
//!   registered mask is cached so `epoll_ctl` runs only when it changes.
//!
//! # Buffers
//!
//! Receives go into one scratch buffer per loop of
//! [`LoopConfig::recv_buffer_bytes`], handed to the session and reused at
//! once: like the io_uring loop's provided-buffer ring, an idle connection
//! pins no receive memory. A receive that came back short emptied the
//! socket (AF_UNIX stream rule, KERNEL-NOTES.md), so only a full one is
//! followed by another, at most [`READ_BUDGET`] per wake-up for fairness.
//! Each connection has one output vector: the session appends to it, the
//! loop sends from an offset with nonblocking `send` and compacts it when
//! the sent prefix outgrows the rest.
//!
//! # Backpressure
//!
//! Output is sent as soon as it is produced. What the socket does not take
//! stays queued; over the high-water mark the connection leaves `EPOLLIN`
//! (its client stops being read) until the queue drains below the low one.
//! A session with a backlog is asked for its next batch whenever the queue
//! is at or below the low-water mark, at most [`BACKLOG_ROUNDS`] times per
//! wake-up; past that the loop keeps `EPOLLOUT` armed so it comes back.
//! The loop's budget of buffered bytes (shared with the io_uring loop) is
//! checked before every `recv` and every batch: over it, connections leave
//! `EPOLLIN` (first those with output waiting, then all) until it comes
//! down. `EMFILE`/`ENFILE` on accept evicts the oldest connection still in
//! its handshake and accepts again at once.
//!
//! # Closing and shutdown
//!
//! Nothing is in flight between two system calls, so a connection is closed
//! (its session told, its fd closed, which also takes it out of the epoll
//! set) as soon as it must: at once on an abort, once its output is sent on
//! a graceful close. Events carry the slot's index and generation, never
//! the fd, so an event for a closed connection whose fd number was reused
//! is recognised and dropped.

use crate::ring::sys::{
    accept_nonblocking, epoll_ctl, epoll_new, epoll_wait, recv_nonblocking, send_nonblocking,
    set_nonblocking,
};
use crate::slab::Slab;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fmt;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::shared::{
    abort, admit, apply, backpressure, fire_deadlines, next_wake, pick_eviction, Acceptor, Budget,
    CloseReason, ConnPhase, Deadlines, LoopConfig, LoopCounters, Phase, Session, Verdict,
    WakeQueue,
};
use crate::ring::op::Token;

/// Connections accepted per listener wake-up at most.
pub const ACCEPT_BATCH: usize = 64;
/// Full receives per connection wake-up at most.
pub const READ_BUDGET: usize = 16;
/// `on_writable` calls per connection wake-up at most.
pub const BACKLOG_ROUNDS: usize = 16;
/// Events taken per `epoll_wait`.
const EVENTS_PER_WAIT: usize = 256;
/// Zero-timeout waits at most before due deadlines fire (each takes in a
/// full `events` array; a bound, so a flood cannot hold timers off).
const CATCH_UP_BATCHES: usize = 64;

/// Whether the loop goes on after a batch of events.
#[derive(Debug, PartialEq, Eq)]
enum Flow {
    Go,
    Shutdown,
}

/// How long accepts pause after the process ran out of fds or memory.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// Output vectors bigger than this are not kept around on idle connections.
const KEEP_CAPACITY_BYTES: usize = 4 * 1024;

const EV_IN: u32 = libc::EPOLLIN as u32;
const EV_OUT: u32 = libc::EPOLLOUT as u32;
const EV_HUP_ERR: u32 = (libc::EPOLLHUP | libc::EPOLLERR) as u32;

// ---------------------------------------------------------------------------
// Events: what an `epoll_data` names, packed as a [`Token`] (the kind,
// a 24-bit generation, a 32-bit index), like the io_uring loop's user_data.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Event {
    Listener(usize),
    Conn(u32, u32),
    Shutdown,
    Wake,
}

const TOKEN_LISTENER: u8 = 1;
const TOKEN_CONN: u8 = 2;
const TOKEN_SHUTDOWN: u8 = 3;
const TOKEN_WAKE: u8 = 4;

fn token(t: Event) -> u64 {
    match t {
        Event::Listener(i) => Token::new(TOKEN_LISTENER, 0, i as u32),
        Event::Conn(idx, gen) => Token::new(TOKEN_CONN, gen, idx),
        Event::Shutdown => Token::new(TOKEN_SHUTDOWN, 0, 0),
        Event::Wake => Token::new(TOKEN_WAKE, 0, 0),
    }
    .raw()
}

fn token_parts(t: u64) -> Option<Event> {
    let t = Token::from_raw(t);
    match t.kind() {
        TOKEN_LISTENER => Some(Event::Listener(t.index() as usize)),
        TOKEN_CONN => Some(Event::Conn(t.index(), t.gen())),
        TOKEN_SHUTDOWN => Some(Event::Shutdown),
        TOKEN_WAKE => Some(Event::Wake),
        _ => None,
    }
}

// ---------------------------------------------------------------------------

struct Conn<S> {
    fd: OwnedFd,
    session: S,
    accepted: Instant,
    phase: Phase,
    reason: CloseReason,
    /// Not read because the output went over the high-water mark.
    paused: bool,
    /// The last send met a full socket: wait for `EPOLLOUT` before the next.
    blocked: bool,
    /// A backlog is left after [`BACKLOG_ROUNDS`]: come back on `EPOLLOUT`.
    kick: bool,
    /// Output; bytes `sent..` are still to go.
    out: Vec<u8>,
    sent: usize,
    /// The event mask registered with epoll.
    interest: u32,
    /// What the connection counts against the loop's [`Budget`].
    charge: usize,
}

impl<S> Conn<S> {
    /// A connection just accepted: open, read (interest `EPOLLIN`), no
    /// output.
    fn new(fd: OwnedFd, session: S) -> Conn<S> {
        Conn {
            fd,
            session,
            accepted: Instant::now(),
            phase: Phase::Open,
            reason: CloseReason::Session,
            paused: false,
            blocked: false,
            kick: false,
            out: Vec::new(),
            sent: 0,
            interest: EV_IN,
            charge: 0,
        }
    }

    fn queued(&self) -> usize {
        self.out.len() - self.sent
    }

    /// Drops the sent prefix of the output once it is at least as long as
    /// the unsent rest, so the vector stays within twice the queue and each
    /// byte is moved at most once on average.
    fn compact(&mut self) {
        if self.sent == 0 {
            return;
        }
        if self.sent == self.out.len() {
            self.out.clear();
            self.sent = 0;
            if self.out.capacity() > KEEP_CAPACITY_BYTES {
                self.out = Vec::new();
            }
        } else if self.sent >= self.out.len() - self.sent {
            self.out.drain(..self.sent);
            self.sent = 0;
        }
    }
}

struct Listener {
    fd: Arc<OwnedFd>,
    /// In the epoll set (out of it while accepts are paused).
    registered: bool,
    /// Accepts paused until then (after EMFILE and friends).
    resume_at: Option<Instant>,
}

/// Everything one `run` owns besides the epoll instance.
struct State<A: Acceptor> {
    acceptor: A,
    conns: Slab<Conn<A::Session>>,
    deadlines: Deadlines,
}

/// One epoll event loop, run on one service thread.
pub struct EpollLoop {
    ep: OwnedFd,
    cfg: LoopConfig,
    listeners: Vec<Listener>,
    /// Kept open (and registered) while the loop runs.
    _shutdown_fd: Arc<OwnedFd>,
    /// Connections woken from other threads; its eventfd is in the set.
    wake: Arc<WakeQueue>,
    counters: Arc<LoopCounters>,
    budget: Budget,
    scratch: Vec<u8>,
    events: Vec<libc::epoll_event>,
}

impl fmt::Debug for EpollLoop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EpollLoop")
            .field("listeners", &self.listeners.len())
            .field("scratch_bytes", &self.scratch.len())
            .finish()
    }
}

impl EpollLoop {
    /// Creates the epoll instance and registers the shutdown eventfd and the
    /// listeners (which are switched to nonblocking mode). Only
    /// `recv_buffer_bytes` (the scratch buffer), the water marks and
    /// `max_connections` of `cfg` apply here.
    pub fn new(
        cfg: LoopConfig,
        listeners: Vec<Arc<OwnedFd>>,
        shutdown_fd: Arc<OwnedFd>,
        counters: Arc<LoopCounters>,
    ) -> io::Result<EpollLoop> {
        if cfg.output_low_water_bytes > cfg.output_high_water_bytes {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "output low-water mark above the high-water mark",
            ));
        }
        if cfg.recv_buffer_bytes == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "receive buffer size must not be zero",
            ));
        }
        let ep = epoll_new()?;
        let watch = |fd: i32, event: Event| {
            epoll_ctl(ep.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, EV_IN, token(event))
                .map_err(io::Error::from_raw_os_error)
        };
        watch(shutdown_fd.as_raw_fd(), Event::Shutdown)?;
        let wake = WakeQueue::new()?;
        watch(wake.raw_fd(), Event::Wake)?;
        let mut ls = Vec::with_capacity(listeners.len());
        for (i, fd) in listeners.into_iter().enumerate() {
            set_nonblocking(&fd)?;
            let mut l = Listener {
                fd,
                registered: false,
                resume_at: None,
            };
            register_listener(&ep, &mut l, i).map_err(io::Error::from_raw_os_error)?;
            ls.push(l);
        }
        let budget = Budget::new(cfg.max_buffered_bytes, counters.clone());
        Ok(EpollLoop {
            ep,
            scratch: vec![0u8; cfg.recv_buffer_bytes as usize],
            cfg,
            listeners: ls,
            _shutdown_fd: shutdown_fd,
            wake,
            budget,
            counters,
            events: vec![libc::epoll_event { events: 0, u64: 0 }; EVENTS_PER_WAIT],
        })
    }

    /// Serves until the shutdown eventfd becomes readable, then closes every
    /// connection (each session is told [`CloseReason::Shutdown`]) and
    /// returns. On an error the connections are closed the same way.
    pub fn run<A: Acceptor>(mut self, acceptor: A) -> io::Result<()> {
        let mut st = State {
            acceptor,
            conns: Slab::new(),
            deadlines: BinaryHeap::new(),
        };
        let result = self.serve(&mut st);
        for (idx, _) in st.conns.keys() {
            if let Some(mut c) = st.conns.take(idx) {
                self.budget.set(&mut c.charge, 0);
                self.budget.closed();
                abort(&mut c, CloseReason::Shutdown);
                c.session.on_close(c.reason);
            }
        }
        result
    }

    fn serve<A: Acceptor>(&mut self, st: &mut State<A>) -> io::Result<()> {
        loop {
            let timeout = self.timeout_ms(st);
            let n = epoll_wait(&self.ep, &mut self.events, timeout)?;
            if self.on_events(st, n)? == Flow::Shutdown {
                return Ok(());
            }
            let now = Instant::now();
            if self.next_wake(st).is_some_and(|t| t <= now) {
                // Something is due. First take in what is ready by now:
                // the loop may have been held up (preempted, or a slow
                // session) while a connection's data came in time.
                for _ in 0..CATCH_UP_BATCHES {
                    let n = epoll_wait(&self.ep, &mut self.events, 0)?;
                    if self.on_events(st, n)? == Flow::Shutdown {
                        return Ok(());
                    }
                    if n < self.events.len() {
                        break;
                    }
                }
            }
            self.fire_timers(st, now)?;
            if self.budget.take_changed() {
                // Over the budget (or back under): every connection leaves
                // (or rejoins) the read set.
                for (idx, gen) in st.conns.keys() {
                    self.update(st, idx, gen);
                }
            }
            let _trimmed = self.budget.trim_after_burst(st.conns.len() == 0);
        }
    }

    /// Handles the first `n` of `events`.
    fn on_events<A: Acceptor>(&mut self, st: &mut State<A>, n: usize) -> io::Result<Flow> {
        for i in 0..n {
            let ev = self.events[i];
            let (mask, tok) = (ev.events, ev.u64);
            match token_parts(tok) {
                Some(Event::Shutdown) => return Ok(Flow::Shutdown),
                Some(Event::Listener(li)) => self.on_listener(st, li)?,
                Some(Event::Conn(idx, gen)) => self.on_conn(st, idx, gen, mask),
                Some(Event::Wake) => self.on_wakes(st),
                None => {}
            }
        }
        Ok(Flow::Go)
    }

    fn next_wake<A: Acceptor>(&self, st: &State<A>) -> Option<Instant> {
        next_wake(&st.deadlines, self.listeners.iter().map(|l| l.resume_at))
    }

    /// Milliseconds until the next deadline or accept resumption (rounded
    /// up, so the loop never wakes just before it), or -1.
    fn timeout_ms<A: Acceptor>(&self, st: &State<A>) -> i32 {
        match self.next_wake(st) {
            None => -1,
            Some(t) => {
                let d = t.saturating_duration_since(Instant::now());
                let ms = d.as_nanos().div_ceil(1_000_000);
                ms.min(i32::MAX as u128) as i32
            }
        }
    }

    fn on_listener<A: Acceptor>(&mut self, st: &mut State<A>, li: usize) -> io::Result<()> {
        if li >= self.listeners.len() || !self.listeners[li].registered {
            return Ok(());
        }
        for _ in 0..ACCEPT_BATCH {
            match accept_nonblocking(&self.listeners[li].fd) {
                Ok(fd) => {
                    let full = st.conns.len() >= self.cfg.max_connections;
                    if let Some((idx, gen, session)) = admit(
                        &mut st.acceptor,
                        &mut st.conns,
                        &self.wake,
                        &self.counters,
                        (li, fd.as_fd()),
                        full,
                    ) {
                        self.add_conn(st, idx, gen, fd, session);
                    }
                }
                Err(libc::EAGAIN) => break,
                Err(libc::EINTR) => {}
                Err(e) => {
                    self.counters.accept_errors.fetch_add(1, Ordering::Relaxed);
                    if matches!(e, libc::EMFILE | libc::ENFILE) {
                        if let Some((idx, gen)) =
                            pick_eviction(&mut st.deadlines, &mut st.conns, Instant::now())
                        {
                            // Closed at once: its fd is free for the next
                            // accept, in this very batch.
                            self.counters.evicted.fetch_add(1, Ordering::Relaxed);
                            self.update(st, idx, gen);
                            continue;
                        }
                    }
                    if matches!(
                        e,
                        libc::EMFILE | libc::ENFILE | libc::ENOMEM | libc::ENOBUFS
                    ) {
                        let l = &mut self.listeners[li];
                        epoll_ctl(
                            self.ep.as_raw_fd(),
                            libc::EPOLL_CTL_DEL,
                            l.fd.as_raw_fd(),
                            0,
                            0,
                        )
                        .map_err(io::Error::from_raw_os_error)?;
                        l.registered = false;
                        l.resume_at = Some(Instant::now() + ACCEPT_BACKOFF);
                        break;
                    }
                    // ECONNABORTED and friends concern one connection only.
                }
            }
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
    ) {
        let deadline = session.deadline();
        let raw = fd.as_raw_fd();
        st.conns.insert_at(idx, Conn::new(fd, session));
        if let Err(e) = epoll_ctl(
            self.ep.as_raw_fd(),
            libc::EPOLL_CTL_ADD,
            raw,
            EV_IN,
            token(Event::Conn(idx, gen)),
        ) {
            if let Some(mut c) = st.conns.take(idx) {
                c.session.on_close(CloseReason::Error(e));
            }
            return;
        }
        if let Some(t) = deadline {
            st.deadlines.push(Reverse((t, idx, gen)));
        }
    }

    /// The wake eventfd fired: every woken connection still open (the
    /// generation matches) produces what is ready, and is brought up to date.
    fn on_wakes<A: Acceptor>(&mut self, st: &mut State<A>) {
        for (idx, gen) in self.wake.take() {
            let Some(c) = st.conns.get_mut(idx, gen) else {
                continue;
            };
            if matches!(c.phase, Phase::Open | Phase::Draining) {
                c.compact();
                let v = c.session.on_wake(&mut c.out);
                apply(c, v, CloseReason::Session);
            }
            self.update(st, idx, gen);
        }
    }

    fn on_conn<A: Acceptor>(&mut self, st: &mut State<A>, idx: u32, gen: u32, mask: u32) {
        let Some(c) = st.conns.get_mut(idx, gen) else {
            return;
        };
        if mask & (EV_OUT | EV_HUP_ERR) != 0 {
            c.blocked = false;
        }
        if mask & (EV_IN | EV_HUP_ERR) != 0 {
            self.read(c);
            let held = c.out.capacity();
            self.budget.set(&mut c.charge, held);
        }
        self.update(st, idx, gen);
    }

    /// True while the connection's input is wanted (and the loop is not
    /// over its budget).
    fn wants_input<S: Session>(&self, c: &Conn<S>) -> bool {
        c.phase == Phase::Open
            && !c.paused
            && !c.session.has_backlog()
            && self.budget.allows(c.queued())
    }

    /// Receives and feeds the session while it wants input, the socket has
    /// data and the budget lasts; sends the replies as they come.
    fn read<S: Session>(&mut self, c: &mut Conn<S>) {
        for _ in 0..READ_BUDGET {
            if !self.wants_input(c) {
                return;
            }
            match recv_nonblocking(&c.fd, &mut self.scratch) {
                Ok(0) => {
                    c.phase = Phase::Draining;
                    c.reason = CloseReason::PeerClosed;
                    return;
                }
                Ok(n) => {
                    self.counters
                        .bytes_in
                        .fetch_add(n as u64, Ordering::Relaxed);
                    c.compact();
                    let v = c.session.on_data(&self.scratch[..n], &mut c.out);
                    apply(c, v, CloseReason::Session);
                    self.flush(c);
                    self.check_pause(c);
                    let held = c.out.capacity();
                    self.budget.set(&mut c.charge, held);
                    if n < self.scratch.len() {
                        // A short receive emptied the socket.
                        return;
                    }
                }
                Err(libc::EAGAIN) => return,
                Err(libc::EINTR) => {}
                Err(e) => {
                    abort(c, CloseReason::Error(e));
                    return;
                }
            }
        }
    }

    /// Sends queued output until it is all sent or the socket is full.
    fn flush<S: Session>(&mut self, c: &mut Conn<S>) {
        while !c.blocked && c.phase != Phase::Aborting && c.sent < c.out.len() {
            match send_nonblocking(&c.fd, &c.out[c.sent..]) {
                Ok(0) => abort(c, CloseReason::Error(libc::EPIPE)),
                Ok(n) => {
                    c.sent += n;
                    self.counters
                        .bytes_out
                        .fetch_add(n as u64, Ordering::Relaxed);
                    c.session.on_sent(n);
                }
                Err(libc::EAGAIN) => c.blocked = true,
                Err(libc::EINTR) => {}
                Err(e) => abort(c, CloseReason::Error(e)),
            }
        }
        if c.sent == c.out.len() {
            c.compact();
        }
    }

    /// Pauses reading over the high-water mark, resumes below the low one.
    fn check_pause<S: Session>(&self, c: &mut Conn<S>) {
        if c.phase != Phase::Open {
            return;
        }
        let queued = c.queued();
        backpressure(&mut c.paused, queued, &self.cfg, &self.counters);
    }

    /// Brings a connection in line with its state: sends, lets a session
    /// with a backlog produce, closes it when it is done, and registers the
    /// events it now waits for.
    fn update<A: Acceptor>(&mut self, st: &mut State<A>, idx: u32, gen: u32) {
        let Some(c) = st.conns.get_mut(idx, gen) else {
            return;
        };
        c.kick = false;
        let mut rounds = 0;
        loop {
            self.flush(c);
            // A session with a backlog produces its next batch once the
            // output has drained (also when draining: the peer may have
            // closed only its sending side). One that makes no progress
            // would stall the connection: it is aborted instead.
            if c.phase == Phase::Aborting
                || c.queued() > self.cfg.output_low_water_bytes
                || !c.session.has_backlog()
                || !self.budget.allows(c.queued())
            {
                break;
            }
            if rounds == BACKLOG_ROUNDS {
                c.kick = true;
                break;
            }
            rounds += 1;
            c.compact();
            let before = c.queued();
            let v = c.session.on_writable(&mut c.out);
            apply(c, v, CloseReason::Session);
            if c.queued() == before && c.session.has_backlog() {
                abort(c, CloseReason::Session);
            }
        }
        self.check_pause(c);
        let done = match c.phase {
            Phase::Open => false,
            Phase::Draining => c.queued() == 0 && !c.session.has_backlog(),
            Phase::Aborting => true,
        };
        if done {
            if let Some(mut c) = st.conns.take(idx) {
                self.budget.set(&mut c.charge, 0);
                self.budget.closed();
                c.session.on_close(c.reason);
                // Closing the fd also takes it out of the epoll set.
                drop(c);
            }
            return;
        }
        let held = c.out.capacity();
        self.budget.set(&mut c.charge, held);
        let mut want = 0;
        if self.wants_input(c) {
            want |= EV_IN;
        }
        if c.queued() > 0 || c.kick {
            want |= EV_OUT;
        }
        // Nothing to wait for only while the budget holds the connection:
        // the sweep when the budget frees up brings it back.
        debug_assert!(
            want != 0 || !self.budget.allows(c.queued()),
            "a live connection must wait for something"
        );
        if want != c.interest {
            let raw = c.fd.as_raw_fd();
            match epoll_ctl(
                self.ep.as_raw_fd(),
                libc::EPOLL_CTL_MOD,
                raw,
                want,
                token(Event::Conn(idx, gen)),
            ) {
                Ok(()) => c.interest = want,
                Err(e) => {
                    if let Some(mut c) = st.conns.take(idx) {
                        self.budget.set(&mut c.charge, 0);
                        self.budget.closed();
                        abort(&mut c, CloseReason::Error(e));
                        c.session.on_close(c.reason);
                    }
                }
            }
        }
    }

    /// Fires what is due at `now` (read before the last events were taken
    /// in, so nothing that arrived in time is judged late).
    fn fire_timers<A: Acceptor>(&mut self, st: &mut State<A>, now: Instant) -> io::Result<()> {
        for i in 0..self.listeners.len() {
            if self.listeners[i].resume_at.is_some_and(|r| r <= now) {
                self.listeners[i].resume_at = None;
                if let Err(e) = register_listener(&self.ep, &mut self.listeners[i], i) {
                    // Still short of memory: try again later.
                    self.counters.accept_errors.fetch_add(1, Ordering::Relaxed);
                    if e != libc::ENOMEM && e != libc::ENOSPC {
                        return Err(io::Error::from_raw_os_error(e));
                    }
                    self.listeners[i].resume_at = Some(now + ACCEPT_BACKOFF);
                }
            }
        }
        for (idx, gen) in fire_deadlines(&mut st.deadlines, &mut st.conns, now) {
            self.update(st, idx, gen);
        }
        Ok(())
    }
}

/// Adds a listener to the set, with `EPOLLEXCLUSIVE` (Linux 4.5+) where
/// the kernel takes it, so a connection wakes one service thread, not all.
fn register_listener(ep: &OwnedFd, l: &mut Listener, i: usize) -> Result<(), i32> {
    let (fd, tok) = (l.fd.as_raw_fd(), token(Event::Listener(i)));
    let exclusive = EV_IN | libc::EPOLLEXCLUSIVE as u32;
    match epoll_ctl(ep.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, exclusive, tok) {
        Err(libc::EINVAL) => epoll_ctl(ep.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, EV_IN, tok)?,
        r => r?,
    }
    l.registered = true;
    Ok(())
}

impl<S: Session> ConnPhase for Conn<S> {
    fn phase_and_reason(&mut self) -> (&mut Phase, &mut CloseReason) {
        (&mut self.phase, &mut self.reason)
    }

    fn deadline(&self) -> Option<Instant> {
        self.session.deadline()
    }

    fn on_deadline(&mut self) -> Verdict {
        self.compact();
        self.session.on_deadline(&mut self.out)
    }

    fn accepted_at(&self) -> Instant {
        self.accepted
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixStream;

    #[test]
    fn tokens_round_trip() {
        for t in [
            Event::Listener(0),
            Event::Listener(7),
            Event::Conn(0, 1),
            Event::Conn(u32::MAX, 0x00ff_ffff),
            Event::Shutdown,
        ] {
            assert_eq!(token_parts(token(t)), Some(t));
        }
        assert_eq!(token_parts(0), None);
    }

    #[test]
    fn compaction_keeps_the_unsent_rest() {
        let (a, _b) = UnixStream::pair().unwrap();
        let mut c = Conn {
            out: b"abcdef".to_vec(),
            sent: 2,
            ..Conn::new(OwnedFd::from(a), ())
        };
        c.compact();
        assert_eq!((c.out.as_slice(), c.sent), (&b"abcdef"[..], 2));
        c.sent = 3;
        c.compact();
        assert_eq!((c.out.as_slice(), c.sent), (&b"def"[..], 0));
        c.sent = 3;
        c.compact();
        assert!(c.out.is_empty() && c.sent == 0);
    }

    #[test]
    fn echo_close_deadline_and_shutdown() {
        // Big message through a 64-byte scratch buffer and a 4 KiB output
        // limit (partial sends, pauses), "bye", a silent client, an idle
        // client closed by the shutdown.
        let cfg = LoopConfig {
            recv_buffer_bytes: 64,
            output_high_water_bytes: 4096,
            output_low_water_bytes: 1024,
            ..LoopConfig::default()
        };
        let counters =
            crate::ring::service::shared::test_echo::run_echo_script(move |l, s, k, acceptor| {
                EpollLoop::new(cfg, vec![l], s, k)?.run(acceptor)?;
                Ok(true)
            })
            .expect("epoll always runs");
        assert_eq!(counters.bytes_out.load(Ordering::Relaxed), 100_005);
    }

    #[test]
    fn a_wake_from_another_thread_produces_output_and_stale_wakes_are_dropped() {
        crate::ring::service::shared::test_echo::run_wake_script(|l, s, k, acceptor| {
            EpollLoop::new(LoopConfig::default(), vec![l], s, k)?.run(acceptor)?;
            Ok(true)
        });
    }

    #[test]
    fn a_loop_held_up_past_deadlines_first_takes_in_data_that_came_in_time() {
        crate::ring::service::shared::test_echo::run_stall_script(|l, s, k, acceptor| {
            EpollLoop::new(LoopConfig::default(), vec![l], s, k)?.run(acceptor)?;
            Ok(true)
        });
    }
}
