//! The connection I/O path of the io_uring loop: receive and send
//! completions, and [`EventLoop::update`], which brings a connection's
//! operations in line with its state (sends what is queued, pauses or
//! resumes receiving, cancels what must stop, closes it when nothing is in
//! flight any more).

use std::io;
use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering;

use io_uring::{opcode, squeue, types};

use super::conn::{feed_or_stash, RecvState};
use super::{ud, EventLoop, Kind, State};
use crate::ring::service::shared::{
    abort, apply, backpressure, Acceptor, CloseReason, Phase, Session,
};

/// Output vectors bigger than this are not kept around on idle connections.
const KEEP_CAPACITY_BYTES: usize = 4 * 1024;

impl EventLoop {
    pub(super) fn on_recv<A: Acceptor>(
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

    pub(super) fn on_send<A: Acceptor>(
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
    pub(super) fn update<A: Acceptor>(
        &mut self,
        st: &mut State<A>,
        idx: u32,
        gen: u32,
    ) -> io::Result<()> {
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
}
