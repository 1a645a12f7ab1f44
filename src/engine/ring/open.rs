//! Opening a pipe: the queue of opens waiting their turn, the linked
//! CONNECT -> SEND -> RECV chain under its deadline, and the pipe entry
//! made when it succeeds.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;

use super::*;
use crate::engine::command::{Notify, Outcome};
use crate::engine::{OpenInfo, PipeId, Tree};
use crate::protocol::npa::{NPA_REPLY_LEN, STATUS_INVALID_LEVEL};
use crate::protocol::{
    encode_open_message, Dialect, NetUserInfo, NpaIdentity, NpaReply, NtStatus, PipeName,
    STATUS_WORD_LEN,
};
use crate::ring::{Completion, Op, OpDriver, Sock, UnixAddr};

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
            self.start_open(q);
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

    pub(super) fn start_open(&mut self, q: QueuedOpen) {
        let name = match PipeName::parse(&q.path) {
            Ok(n) => n,
            Err(s) => return self.reject(q.notify, s),
        };
        let samba = (self.cfg.dialect == Dialect::Samba).then(|| {
            Box::new(SambaOpen {
                level: self.npa_level,
                retried: false,
                retry: false,
                reply: None,
                user: q.user.clone(),
                identity: q.identity,
            })
        });
        self.start_attempt(name, &q.user, q.tree, q.notify, samba);
    }

    /// One attempt at an open: a socket, the linked chain, the deadline.
    fn start_attempt(
        &mut self,
        name: PipeName,
        user: &NetUserInfo,
        tree: Option<Tree>,
        notify: Notify,
        samba: Option<Box<SambaOpen>>,
    ) {
        if self.stopping {
            return self.reject(notify, NtStatus::PIPE_NOT_AVAILABLE);
        }
        let path = self.cfg.dialect.socket_path(&self.cfg.dir, &name);
        let Some(addr) = UnixAddr::new(&path) else {
            return self.reject(notify, NtStatus::OBJECT_NAME_INVALID);
        };
        let msg = match &samba {
            None => encode_open_message(user),
            Some(sa) => {
                let req = match &sa.identity {
                    Some(id) => id.to_request(sa.level),
                    None => NpaIdentity::from_net_user_info(user).to_request(sa.level),
                };
                req.encode()
            }
        };
        let msg = match msg {
            Ok(m) => m,
            Err(e) => {
                tracing::debug!("opipe: open message of {name} not encodable: {e}");
                return self.reject(notify, NtStatus::INTERNAL_ERROR);
            }
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
        let reply_len = if samba.is_some() {
            NPA_REPLY_LEN
        } else {
            STATUS_WORD_LEN
        };
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
                samba,
            },
        );
        self.push_open_chain(key, fd, addr, msg, reply_len);
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

    /// CONNECT -> SEND(open message) -> RECV(its answer), linked. The
    /// answer is `reply_len` bytes: the illumos status word, or Samba's
    /// NPA reply (36 bytes at both levels, length prefix included; the
    /// decoder checks the prefix). MSG_WAITALL: a close before the whole
    /// answer is a short result.
    fn push_open_chain(
        &mut self,
        key: (u32, u32),
        fd: Rc<OwnedFd>,
        addr: UnixAddr,
        msg: Vec<u8>,
        reply_len: usize,
    ) {
        let connect = Op::Connect {
            fd: Sock::Held(fd.clone()),
            addr: Box::new(addr),
        };
        let hello = Op::Send {
            fd: Sock::Held(fd.clone()),
            buf: msg.into(),
            start: 0,
        };
        let status = Op::Recv {
            fd: Sock::Held(fd),
            buf: Vec::with_capacity(reply_len),
            len: reply_len as u32,
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
        let Kind::Open {
            status,
            timer,
            samba,
            ..
        } = &mut e.kind
        else {
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
                    *status = Some(match (&c.op, samba.as_deref_mut()) {
                        (Op::Recv { buf, .. }, Some(sa)) => samba_answer(sa, c.result, buf),
                        (Op::Recv { buf, .. }, None) if c.result == 4 && buf.len() == 4 => {
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

    pub(super) fn finish_open(&mut self, kind: Kind, notify: Option<Notify>, session: u64) {
        let Kind::Open {
            fd,
            name,
            tree,
            status,
            samba,
            ..
        } = kind
        else {
            return debug_assert!(false, "finish_open of another kind of op");
        };
        let Some(notify) = notify else { return };
        let status = status.unwrap_or(NtStatus::PIPE_NOT_AVAILABLE);
        let (samba, retry) = match samba {
            Some(sa) if sa.retry && !sa.retried => (None, Some(sa)),
            other => (other, None),
        };
        if let Some(mut sa) = retry {
            drop(fd);
            let level = sa.level.other();
            tracing::debug!(
                "opipe: {name} refused NPA level {}; trying level {level}",
                sa.level
            );
            sa.level = level;
            sa.retried = true;
            sa.retry = false;
            let user = sa.user.clone();
            return self.start_attempt(name, &user, tree, notify, Some(sa));
        }
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
        let mut info = OpenInfo::new(name, file_id, session);
        if let Some(sa) = &samba {
            // The level that worked is the one the next open tries first.
            self.npa_level = sa.level;
            if let Some(reply) = &sa.reply {
                info.apply_npa_reply(reply);
            }
        }
        // From here on every op of the pipe names this socket.
        self.drv.adopt(&fd);
        let (index, gen) = self.pipes.insert(PipeEntry {
            raw: fd.as_raw_fd(),
            fd,
            session,
            ops: None,
            closing: false,
            close_waiters: Vec::new(),
            draining: 0,
            deferred: VecDeque::new(),
            pushback: Pushback::default(),
            msg_left: 0,
            multishot: Multishot::Off,
            eof: false,
            waiters: Waiters::default(),
        });
        let pipe = PipeId {
            ring: self.ring_index,
            index,
            gen,
        };
        let info = Box::new(info);
        self.notify(notify, Ok(Outcome::Opened { pipe, info }));
    }
}

/// The status a Samba-dialect open's reply (`result`, `buf`) decides. A
/// refused level (`STATUS_INVALID_LEVEL`, or a close before any reply
/// byte, which is what Samba 4.17 does) on the first attempt marks the
/// open for one retry at the other level; the level that worked is kept.
fn samba_answer(sa: &mut SambaOpen, result: i32, buf: &[u8]) -> NtStatus {
    if result == 0 {
        sa.retry = !sa.retried;
        return NtStatus::PIPE_NOT_AVAILABLE;
    }
    if result < 0 || usize::try_from(result) != Ok(buf.len()) {
        return NtStatus::PIPE_NOT_AVAILABLE;
    }
    match NpaReply::decode(buf) {
        Ok(reply) if reply.status == STATUS_INVALID_LEVEL => {
            sa.retry = !sa.retried;
            reply.status
        }
        Ok(reply) => {
            sa.reply = Some(reply);
            reply.status
        }
        Err(e) => {
            tracing::debug!("opipe: bad NPA reply: {e}");
            NtStatus::PIPE_NOT_AVAILABLE
        }
    }
}
