//! The accept path of the io_uring loop: one multishot accept per
//! listener, a new connection's admission and slot, the pause after
//! `EMFILE`/`ENFILE`/`ENOMEM`, and the eviction of a connection still in
//! its handshake to make room.

use std::cmp::Reverse;
use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use io_uring::{opcode, types};

use super::conn::{Conn, RecvState};
use super::{ud, EventLoop, Kind, State};
use crate::ring::service::shared::{
    admit, pick_eviction, Acceptor, CloseReason, Phase, Session, EVICT_RETRY,
};

/// How long accepts pause after the process ran out of fds or memory.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

impl EventLoop {
    pub(super) fn arm_accept(&mut self, i: usize) -> io::Result<()> {
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

    pub(super) fn on_accept<A: Acceptor>(
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
}
