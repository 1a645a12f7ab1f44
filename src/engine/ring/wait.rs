//! FSCTL_PIPE_WAIT: connect attempts with a backoff until the listener
//! accepts, under a deadline timer armed for the whole wait, so it ends by
//! its deadline even when a CONNECT never completes (a listener whose
//! backlog is full and who never accepts).
//!
//! Phases: `Connecting` (a CONNECT in flight) -> `BackingOff` (a short timer
//! in flight) -> `Connecting` ... -> `Over`. The deadline timer runs beside
//! them; whichever decides first (accepted, deadline, no socket) makes the
//! wait `Over` and cancels the rest.

use std::path::PathBuf;
use std::time::Duration;

use super::*;
use crate::engine::command::Notify;
use crate::protocol::{NtStatus, PipeName};
use crate::ring::{Op, OpDriver, Sock, UnixAddr};

impl<D: OpDriver> Core<D> {
    pub(super) fn start_wait(&mut self, name: PipeName, timeout: Duration, notify: Notify) {
        let now = self.now;
        // A timeout too long for the clock or the kernel waits a year.
        let timeout = timeout.min(LONGEST_TIMER);
        self.waits += 1;
        let key = self.new_op(
            None,
            0,
            notify,
            Kind::WaitPipe {
                name,
                deadline: now + timeout,
                attempt: 0,
                phase: WaitPhase::Connecting,
                timer: None,
                status: None,
            },
        );
        let timer = self.push_one(key, Op::Timer { after: timeout }, ST_WAIT_DEADLINE);
        if let Some(OpEntry {
            kind: Kind::WaitPipe { timer: t, .. },
            ..
        }) = self.ops.get_mut(key.0, key.1)
        {
            *t = Some(timer);
        }
        self.wait_attempt(key);
    }

    fn wait_attempt(&mut self, key: (u32, u32)) {
        let (dir, dialect) = (self.cfg.dir.clone(), self.cfg.dialect);
        let Some(OpEntry {
            kind: Kind::WaitPipe { name, phase, .. },
            ..
        }) = self.ops.get_mut(key.0, key.1)
        else {
            return;
        };
        *phase = WaitPhase::Connecting;
        // `<dir>/<name>`, or `<dir>/np/<name>` in the Samba dialect.
        let path: PathBuf = dialect.socket_path(&dir, name);
        let Some(addr) = UnixAddr::new(&path) else {
            return self.wait_over(key, NtStatus::OBJECT_NAME_INVALID);
        };
        match self.drv.unix_socket() {
            Ok(fd) => {
                let op = Op::Connect {
                    fd: Sock::Held(fd),
                    addr: Box::new(addr),
                };
                self.push_chain(key, [(op, ST_WAIT_CONNECT)]);
            }
            Err(_) => self.wait_over(key, NtStatus::INSUFFICIENT_RESOURCES),
        }
    }

    /// Decides the wait: `status` (`SUCCESS`: accepted), the deadline timer
    /// and any attempt in flight cancelled; it finishes with its last CQE.
    fn wait_over(&mut self, key: (u32, u32), status: NtStatus) {
        let Some(e) = self.ops.get_mut(key.0, key.1) else {
            return;
        };
        let Kind::WaitPipe {
            phase,
            timer,
            status: st,
            ..
        } = &mut e.kind
        else {
            return debug_assert!(false, "wait_over on another kind of op");
        };
        *phase = WaitPhase::Over;
        if st.is_none() {
            *st = Some(status);
        }
        let timer = timer.take();
        if let Some(t) = timer {
            self.drv.cancel(t);
        }
        self.cancel_chain(key);
        self.finish_if_idle(key);
    }

    pub(super) fn wait_step(&mut self, key: (u32, u32), step: u8, r: i32) {
        let now = self.now;
        let Some(e) = self.ops.get_mut(key.0, key.1) else {
            return;
        };
        if e.cancelled {
            return;
        }
        let Kind::WaitPipe {
            deadline,
            attempt,
            phase,
            timer,
            ..
        } = &mut e.kind
        else {
            debug_assert!(false, "a WAIT step on another kind of op");
            return;
        };
        match (step, *phase) {
            (ST_WAIT_DEADLINE, _) => {
                *timer = None;
                if *phase != WaitPhase::Over {
                    // The deadline passed first (or the timer could not
                    // run: the wait must end either way).
                    self.wait_over(key, NtStatus::IO_TIMEOUT);
                }
            }
            (ST_WAIT_CONNECT, WaitPhase::Connecting) if r == 0 => {
                self.wait_over(key, NtStatus::SUCCESS)
            }
            (ST_WAIT_CONNECT, WaitPhase::Connecting) => {
                if now >= *deadline {
                    return self.wait_over(key, NtStatus::IO_TIMEOUT);
                }
                // Back off 1, 2, 4 .. 50 ms between attempts.
                let wait =
                    Duration::from_millis((1u64 << (*attempt).min(6)).min(50)).min(*deadline - now);
                *attempt += 1;
                *phase = WaitPhase::BackingOff;
                self.push_chain(key, [(Op::Timer { after: wait }, ST_WAIT_TIMER)]);
            }
            (ST_WAIT_TIMER, WaitPhase::BackingOff) => self.wait_attempt(key),
            // What drains after the wait was decided.
            (ST_WAIT_CONNECT | ST_WAIT_TIMER, WaitPhase::Over) => {}
            (step, phase) => {
                debug_assert!(false, "WAIT step {step} in phase {phase:?}");
            }
        }
    }
}
