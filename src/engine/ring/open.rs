//! Opening a pipe: the queue of opens waiting their turn, the linked
//! CONNECT -> SEND -> RECV chain under its deadline, and the pipe entry
//! made when it succeeds.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;

use super::*;
use crate::engine::command::{Notify, Outcome};
use crate::engine::{OpenInfo, PipeId, Tree};
use crate::protocol::{encode_open_message, NetUserInfo, NtStatus, PipeName};
use crate::ring::{Completion, Op, OpDriver, UnixAddr};

impl<D: OpDriver> Core<D> {
    /// Starts waiting opens while fewer than the limit run (one whose
    /// caller cancelled meanwhile ends `STATUS_CANCELLED`).
    pub(super) fn start_queued_opens(&mut self) {
        let max = self.cfg.max_opens_in_flight;
        while max == 0 || self.opening < max {
            let Some(q) = self.queued_opens.pop_front() else {
                return;
            };
            if let Notify::Shared(s) = &q.notify {
                if s.cancel_requested.load(Ordering::SeqCst) {
                    self.reject(q.notify, NtStatus::CANCELLED);
                    continue;
                }
            }
            self.start_open(&q.path, &q.user, q.tree, q.notify);
        }
    }

    /// Ends the waiting opens `which` picks with `status`.
    pub(super) fn reject_queued_opens(
        &mut self,
        which: impl Fn(&QueuedOpen) -> bool,
        status: NtStatus,
    ) {
        if self.queued_opens.iter().any(&which) {
            let (out, keep) = std::mem::take(&mut self.queued_opens)
                .into_iter()
                .partition(&which);
            self.queued_opens = keep;
            for q in out {
                self.reject(q.notify, status);
            }
        }
    }

    pub(super) fn start_open(
        &mut self,
        path: &str,
        user: &NetUserInfo,
        tree: Option<Tree>,
        notify: Notify,
    ) {
        let name = match PipeName::parse(path) {
            Ok(n) => n,
            Err(s) => return self.reject(notify, s),
        };
        if self.stopping {
            return self.reject(notify, NtStatus::PIPE_NOT_AVAILABLE);
        }
        let Some(addr) = UnixAddr::new(&self.cfg.dir.join(name.as_str())) else {
            return self.reject(notify, NtStatus::OBJECT_NAME_INVALID);
        };
        let msg = match encode_open_message(user) {
            Ok(m) => m,
            Err(_) => return self.reject(notify, NtStatus::INTERNAL_ERROR),
        };
        let fd = match self.drv.unix_socket() {
            Ok(fd) => fd,
            Err(errno) => {
                let st = match errno {
                    libc::EMFILE | libc::ENFILE => NtStatus::TOO_MANY_OPENED_FILES,
                    libc::ENOBUFS | libc::ENOMEM => NtStatus::INSUFFICIENT_RESOURCES,
                    _ => NtStatus::INTERNAL_ERROR,
                };
                return self.reject(notify, st);
            }
        };
        self.opening += 1;
        let key = self.new_op(
            None,
            user.session_id,
            notify,
            Kind::Open {
                fd: fd.clone(),
                name,
                tree,
                timer: None,
                status: None,
            },
        );
        self.push_open_chain(key, fd, addr, msg);
        let after = self.cfg.open_timeout.min(LONGEST_TIMER);
        let timer = self.push_one(key, Op::Timer { after }, ST_DEADLINE);
        if let Some(OpEntry {
            kind: Kind::Open { timer: t, .. },
            ..
        }) = self.ops.get_mut(key.0, key.1)
        {
            *t = Some(timer);
        }
    }

    /// CONNECT -> SEND(header + userinfo) -> RECV(status word), linked.
    fn push_open_chain(&mut self, key: (u32, u32), fd: Rc<OwnedFd>, addr: UnixAddr, msg: Vec<u8>) {
        let connect = Op::Connect {
            fd: fd.clone(),
            addr: Box::new(addr),
        };
        let hello = Op::Send {
            fd: fd.clone(),
            buf: msg,
            start: 0,
        };
        let status = Op::Recv {
            fd,
            buf: Vec::with_capacity(4),
            len: 4,
            flags: libc::MSG_WAITALL,
        };
        self.push_chain(
            key,
            [
                (connect, ST_CONNECT),
                (hello, ST_HELLO),
                (status, ST_STATUS),
            ],
        );
    }

    pub(super) fn open_step(&mut self, key: (u32, u32), step: u8, c: &Completion) {
        let Some(e) = self.ops.get_mut(key.0, key.1) else {
            return;
        };
        let chain_left = usize::from(e.chain_len.saturating_sub(e.chain_done));
        let Kind::Open { status, timer, .. } = &mut e.kind else {
            return debug_assert!(false, "an open step on another kind of op");
        };
        match step {
            ST_CONNECT if c.result < 0 && status.is_none() => {
                *status = Some(if c.result == -libc::ECANCELED {
                    NtStatus::PIPE_NOT_AVAILABLE
                } else {
                    NtStatus::OBJECT_NAME_NOT_FOUND
                })
            }
            ST_HELLO if c.result < 0 && status.is_none() => {
                *status = Some(NtStatus::PIPE_NOT_AVAILABLE)
            }
            ST_STATUS => {
                if status.is_none() {
                    *status = Some(match &c.op {
                        Op::Recv { buf, .. } if c.result == 4 && buf.len() == 4 => {
                            crate::protocol::decode_status_word([buf[0], buf[1], buf[2], buf[3]])
                        }
                        _ => NtStatus::PIPE_NOT_AVAILABLE,
                    });
                }
                // The handshake is over: the deadline timer is no longer needed.
                if let Some(t) = timer.take() {
                    self.drv.cancel(t);
                }
            }
            ST_DEADLINE => {
                *timer = None;
                // The deadline passed with the handshake unfinished; or the
                // timer itself failed (a duration the kernel refuses): then
                // the open ends now rather than run with no deadline.
                if c.result != -libc::ECANCELED && status.is_none() && chain_left > 0 {
                    *status = Some(NtStatus::PIPE_NOT_AVAILABLE);
                    self.cancel_chain(key);
                }
            }
            // Connected or sent; or a later failure of a decided open.
            ST_CONNECT | ST_HELLO => {}
            other => debug_assert!(false, "open step {other}"),
        }
    }

    pub(super) fn finish_open(&mut self, e: OpEntry) {
        let Kind::Open {
            fd,
            name,
            tree,
            status,
            ..
        } = e.kind
        else {
            return debug_assert!(false, "finish_open of another kind of op");
        };
        let Some(notify) = e.notify else { return };
        let status = status.unwrap_or(NtStatus::PIPE_NOT_AVAILABLE);
        if status != NtStatus::SUCCESS {
            // `fd` drops here: the half-opened socket is closed.
            return self.reject(notify, status);
        }
        if tree.as_ref().is_some_and(|t| !t.is_connected()) {
            return self.reject(notify, NtStatus::NETWORK_NAME_DELETED);
        }
        if self.stopping {
            return self.reject(notify, NtStatus::CANCELLED);
        }
        let file_id = self.file_ids.fetch_add(1, Ordering::Relaxed);
        let info = OpenInfo::new(name, file_id, e.session);
        let (index, gen) = self.pipes.insert(PipeEntry {
            fd,
            session: e.session,
            ops: None,
            closing: false,
            close_waiters: Vec::new(),
            draining: 0,
            deferred: VecDeque::new(),
            pushback: Vec::new(),
            multishot: Multishot::Off,
            eof: false,
            waiters: VecDeque::new(),
        });
        let pipe = PipeId {
            ring: self.ring_index,
            index,
            gen,
        };
        self.notify(notify, Ok(Outcome::Opened { pipe, info }));
    }
}
