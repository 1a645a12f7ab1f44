//! The service event loop: one io_uring per thread serving many stream
//! connections accepted from one or more listening sockets.
//!
//! The loop knows nothing of pipes: each connection is driven by a
//! [`Session`] (bytes in, bytes out, a verdict), made by an [`Acceptor`].
//!
//! This file holds the loop itself (ring, listeners, completion dispatch,
//! wakes, timers, shutdown); `accept` the accept path, `conn` one
//! connection's state and `conn_io` its receive and send path.
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

mod accept;
mod conn;
mod conn_io;

use crate::slab::Slab;
use std::collections::BinaryHeap;
use std::fmt;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use io_uring::{cqueue, opcode, squeue, types, IoUring};

#[cfg(doc)]
use super::shared::ConnWaker;
use super::shared::{
    abort, apply, fire_deadlines, next_wake, Acceptor, Budget, CloseReason, Deadlines, LoopConfig,
    LoopCounters, Phase, Session, WakeQueue,
};
use crate::ring::bufring::BufRing;
use crate::ring::op::Token;
use crate::ring::setup::{new_ring, probe_features, RingError};
use conn::Conn;

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

struct Listener {
    fd: Arc<OwnedFd>,
    armed: bool,
    /// Accepts paused until then (after EMFILE and friends).
    resume_at: Option<Instant>,
}

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
            self.take_completions(st, &mut cqes)?;
            let now = Instant::now();
            if wake_at.is_some_and(|t| t <= now) {
                // Something is due. First take in what completed by now:
                // the loop may have been held up (preempted, or a slow
                // session) while a connection's data came in time, and
                // with `DEFER_TASKRUN` its completion waits for an enter.
                self.wait(Some(now))?;
                self.take_completions(st, &mut cqes)?;
            }
            self.fire_timers(st, now)?;
            self.check_budget(st)?;
        }
    }

    /// Dispatches every completion in the queue, in batches.
    fn take_completions<A: Acceptor>(
        &mut self,
        st: &mut State<A>,
        cqes: &mut Vec<cqueue::Entry>,
    ) -> io::Result<()> {
        loop {
            cqes.clear();
            cqes.extend(self.ring.completion().take(4096));
            if cqes.is_empty() {
                return Ok(());
            }
            for cqe in cqes.drain(..) {
                self.dispatch(st, cqe)?;
            }
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

    /// Fires what is due at `now` (read before the last completions were
    /// taken in, so nothing that arrived in time is judged late).
    fn fire_timers<A: Acceptor>(&mut self, st: &mut State<A>, now: Instant) -> io::Result<()> {
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
    fn a_loop_held_up_past_deadlines_first_takes_in_data_that_came_in_time() {
        super::super::shared::test_echo::run_stall_script(
            |l, s, k, acceptor| match EventLoop::new(LoopConfig::default(), vec![l], s, k) {
                Ok(ev) => ev.run(acceptor).map(|_| true),
                Err(RingError::Unavailable { .. }) => Ok(false),
                Err(e) => Err(e.into()),
            },
        );
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
