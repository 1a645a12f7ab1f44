//! FSCTL_PIPE_WAIT: connect attempts with a backoff until the listener
//! accepts or the deadline passes.

use std::path::PathBuf;
use std::time::Duration;

use super::*;
use crate::engine::command::Notify;
use crate::protocol::{NtStatus, PipeName};
use crate::ring::{Op, OpDriver, UnixAddr};

impl<D: OpDriver> Core<D> {
    pub(super) fn start_wait(&mut self, name: PipeName, timeout: Duration, notify: Notify) {
        // A timeout too long for the clock (Duration::MAX) waits "forever":
        // a year.
        let now = self.now;
        let deadline = now
            .checked_add(timeout)
            .unwrap_or_else(|| now + Duration::from_secs(365 * 86_400));
        let key = self.new_op(
            None,
            0,
            notify,
            Kind::WaitPipe {
                name,
                deadline,
                attempt: 0,
                connected: false,
                status: None,
            },
        );
        self.wait_attempt(key);
    }

    pub(super) fn wait_attempt(&mut self, key: (u32, u32)) {
        let dir = self.cfg.dir.clone();
        let Some(OpEntry {
            kind: Kind::WaitPipe { name, .. },
            ..
        }) = self.ops.get_mut(key.0, key.1)
        else {
            return;
        };
        let path: PathBuf = dir.join(name.as_str());
        let Some(addr) = UnixAddr::new(&path) else {
            return self.fail_now(key, NtStatus::OBJECT_NAME_INVALID);
        };
        match self.drv.unix_socket() {
            Ok(fd) => {
                let op = Op::Connect {
                    fd,
                    addr: Box::new(addr),
                };
                self.push_chain(key, [(op, ST_WAIT_CONNECT)]);
            }
            Err(_) => self.fail_now(key, NtStatus::INSUFFICIENT_RESOURCES),
        }
    }

    pub(super) fn wait_step(&mut self, key: (u32, u32), step: u8, r: i32) {
        let Some(e) = self.ops.get_mut(key.0, key.1) else {
            return;
        };
        if e.cancelled {
            return;
        }
        let Kind::WaitPipe {
            deadline,
            attempt,
            connected,
            status,
            ..
        } = &mut e.kind
        else {
            return;
        };
        match step {
            ST_WAIT_CONNECT if r == 0 => *connected = true,
            ST_WAIT_CONNECT => {
                let now = self.now;
                if now >= *deadline {
                    *status = Some(NtStatus::IO_TIMEOUT);
                    return;
                }
                // Back off 1, 2, 4 .. 50 ms between attempts.
                let wait =
                    Duration::from_millis((1u64 << (*attempt).min(6)).min(50)).min(*deadline - now);
                *attempt += 1;
                self.push_one(key, Op::Timer { after: wait }, ST_WAIT_TIMER);
            }
            _ => {
                if e.pending == 0 {
                    self.wait_attempt(key);
                }
            }
        }
    }
}
