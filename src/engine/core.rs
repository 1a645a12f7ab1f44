//! The ring thread: one [`Core`] per ring owns the driver (io_uring's
//! [`Driver`], or the epoll fallback: any [`OpDriver`], monomorphised), the
//! table of open pipes and the table of requests in flight, and turns
//! requests into SQE chains and completions into results.
//!
//! Ownership: a pipe's socket is an `Rc<OwnedFd>` held by the pipe entry and
//! by every operation in flight on it, so the descriptor is closed only after
//! the pipe is closed AND the last operation's final completion arrived. A
//! request keeps its op entry (and so its accounting on the pipe) until its
//! last SQE completed, even when its caller was already told
//! `STATUS_CANCELLED`.

use std::collections::VecDeque;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use io_uring::types::Timespec;

use super::request::{Shared, NO_OP};
use super::{BufferMode, EngineConfig, OpenInfo, PipeId, Transfer, Tree};
use crate::protocol::{encode_open_message, fsctl, NetUserInfo, NtStatus, PeekReply, PipeName};
use crate::ring::{Completion, Driver, Op, OpDriver, RegBuf, SqeId, UnixAddr, WakeFd};
use crate::slab::Slab;

/// Replies of at least this size never report overflow (the seed's rule).
pub(crate) const SMB_PIPE_MAX_MSGSIZE: usize = fsctl::SMB_PIPE_MAX_MSGSIZE;

/// What a finished request produced, before typing at the API edge.
#[derive(Debug)]
pub(crate) enum Outcome {
    Opened { pipe: PipeId, info: OpenInfo },
    Transfer(Transfer),
    Written(usize),
    Done,
}

/// A ring-thread callback: runs on the ring thread with access to the ring.
pub(crate) type Callback = Box<dyn FnOnce(&mut RingContext<'_>, Result<Outcome, NtStatus>) + Send>;

pub(crate) enum Notify {
    Shared(Arc<Shared>),
    Callback(Callback),
}

/// What a request asks of a pipe.
#[derive(Debug)]
pub(crate) enum PipeIo {
    Transceive { input: Vec<u8>, max_out: usize },
    Read { max_out: usize },
    Write { data: Vec<u8> },
    Peek { max_out: usize },
}

/// Messages from other threads to a ring thread.
pub(crate) enum Command {
    Open {
        path: String,
        user: Box<NetUserInfo>,
        tree: Option<Tree>,
        notify: Notify,
    },
    Io {
        pipe: PipeId,
        io: PipeIo,
        notify: Notify,
    },
    Close {
        pipe: PipeId,
        notify: Option<Notify>,
    },
    Cancel {
        shared: Arc<Shared>,
    },
    Disconnect {
        session: u64,
        notify: Option<Notify>,
    },
    WaitPipe {
        name: PipeName,
        timeout: Duration,
        notify: Notify,
    },
    Shutdown,
}

/// The queue other threads push commands into.
pub(crate) struct CommandQueue {
    cmds: Mutex<Vec<Command>>,
    pending: AtomicBool,
    pub(crate) wake: Arc<WakeFd>,
}

impl CommandQueue {
    pub(crate) fn new(wake: Arc<WakeFd>) -> CommandQueue {
        CommandQueue {
            cmds: Mutex::new(Vec::new()),
            pending: AtomicBool::new(false),
            wake,
        }
    }

    pub(crate) fn push(&self, c: Command) {
        self.cmds.lock().unwrap_or_else(|e| e.into_inner()).push(c);
        self.pending.store(true, Ordering::SeqCst);
        self.wake.wake();
    }

    fn take(&self, into: &mut Vec<Command>) {
        if self.pending.swap(false, Ordering::SeqCst) {
            std::mem::swap(
                &mut *self.cmds.lock().unwrap_or_else(|e| e.into_inner()),
                into,
            );
        }
    }

    fn is_pending(&self) -> bool {
        self.pending.load(Ordering::SeqCst)
    }
}

// Steps, the low byte of a token.
const ST_CONNECT: u8 = 1;
const ST_HELLO: u8 = 2;
const ST_STATUS: u8 = 3;
const ST_DEADLINE: u8 = 4;
const ST_SEND: u8 = 5;
const ST_RECV: u8 = 6;
const ST_MORE: u8 = 7;
const ST_PEEK: u8 = 8;
const ST_WAIT_CONNECT: u8 = 9;
const ST_WAIT_TIMER: u8 = 10;
const ST_MULTI: u8 = 11;

/// Bytes a pipe's multishot receive may pile up in its pushback with no
/// request waiting (replies to cancelled requests, unsolicited data) before
/// the receive is stopped; the rest then stays in the socket, and the
/// receive is re-armed once a request needs data and the pushback is empty.
const MS_PUSHBACK_CAP: usize = 64 * 1024;

/// Largest `max_out` a request may ask for (16 MiB, above SMB2's 8 MiB
/// maximum read and transact sizes); more is `STATUS_INVALID_PARAMETER`.
pub(crate) const MAX_IO_BYTES: usize = 16 << 20;

/// The longest chain an op pushes (open: connect, hello, status).
const MAX_CHAIN: usize = 3;

/// A chain being built, without a heap allocation.
#[derive(Default)]
struct ChainBuf {
    ops: [Option<(Op, u8)>; MAX_CHAIN],
    len: usize,
}

impl ChainBuf {
    fn push(&mut self, op: (Op, u8)) {
        debug_assert!(self.len < MAX_CHAIN, "chain longer than MAX_CHAIN");
        if let Some(slot) = self.ops.get_mut(self.len) {
            *slot = Some(op);
            self.len += 1;
        }
    }
}

impl IntoIterator for ChainBuf {
    type Item = (Op, u8);
    type IntoIter = std::iter::Flatten<std::array::IntoIter<Option<(Op, u8)>, MAX_CHAIN>>;
    fn into_iter(self) -> Self::IntoIter {
        self.ops.into_iter().flatten()
    }
}

fn token(op: u32, gen: u32, step: u8) -> u64 {
    ((op as u64) << 32) | (((gen & 0x00ff_ffff) as u64) << 8) | step as u64
}

fn untoken(t: u64) -> (u32, u32, u8) {
    (
        (t >> 32) as u32,
        ((t >> 8) & 0x00ff_ffff) as u32,
        (t & 0xff) as u8,
    )
}

struct PipeEntry {
    fd: Rc<OwnedFd>,
    session: u64,
    /// The first of the pipe's op entries not finished yet, linked through
    /// `OpEntry::pipe_next` (a few at most): closing the pipe cancels these
    /// without looking at any other pipe's ops, and no op means idle.
    ops: Option<(u32, u32)>,
    closing: bool,
    close_waiters: Vec<Notify>,
    /// Cancelled requests whose SQEs are still in the kernel. While any
    /// is, new requests wait in `deferred`: a cancelled RECV still armed
    /// must not take the reply meant for the next request.
    draining: u32,
    deferred: VecDeque<(PipeIo, Notify)>,
    /// Bytes a cancelled receive took off the socket after all (it won the
    /// race with its cancel). They belong to the stream: the next read,
    /// transceive or peek gets them first, so nothing is lost or reordered.
    /// With a multishot receive armed, every chunk that arrives while no
    /// request waits for data lands here too.
    pushback: Vec<u8>,
    /// The pipe's multishot receive (its op entry), while armed.
    ms: Option<(u32, u32)>,
    /// The multishot receive is being stopped (pushback over its cap, or a
    /// deferred read needs a receive of its own).
    ms_stopping: bool,
    /// The multishot receive saw the end of the stream.
    eof: bool,
    /// Requests waiting for the multishot receive's chunks, in the order
    /// they started. While any waits, the pushback is empty: bytes that
    /// arrive go to the first waiter, what it cannot take to the next.
    waiters: VecDeque<(u32, u32)>,
}

impl PipeEntry {
    /// The deferred requests that may start now: none while a cancelled
    /// request still has SQEs in the kernel, a request waits for the
    /// multishot receive, or that receive is being stopped.
    fn startable(&mut self) -> VecDeque<(PipeIo, Notify)> {
        if self.draining == 0 && self.waiters.is_empty() && !self.ms_stopping {
            std::mem::take(&mut self.deferred)
        } else {
            VecDeque::new()
        }
    }
}

enum Kind {
    Open {
        fd: Rc<OwnedFd>,
        name: PipeName,
        tree: Option<Tree>,
        timer: Option<SqeId>,
        status: Option<NtStatus>,
    },
    Transceive {
        max_out: usize,
        /// The request; moved into the Send op while it is in flight.
        input: Vec<u8>,
        /// Bytes of `input` the kernel confirmed sent.
        sent: usize,
        /// Registered mode: the slot holding the input, then the reply.
        reg: Option<Rc<RegBuf>>,
        out: Option<Vec<u8>>,
        /// Some(more waiting?) once known.
        more: Option<bool>,
        /// The pooled receive found the pool empty: receive again, plain.
        retry_recv: bool,
        /// The pipe had pushed-back bytes: send only, the reply comes from
        /// them.
        from_pushback: bool,
        /// Send only: the reply comes from the pipe's multishot receive.
        via_ms: bool,
        status: Option<NtStatus>,
    },
    Read {
        max_out: usize,
        out: Option<Vec<u8>>,
        retry_recv: bool,
        /// No SQE: the data comes from the pipe's multishot receive.
        via_ms: bool,
        status: Option<NtStatus>,
    },
    /// A pipe's multishot receive (no caller: its chunks go to the pipe's
    /// waiting request or pushback).
    Multishot,
    Write {
        data: Vec<u8>,
        sent: usize,
        status: Option<NtStatus>,
    },
    Peek {
        room: usize,
        data: Option<Vec<u8>>,
        eof: bool,
        status: Option<NtStatus>,
    },
    WaitPipe {
        name: PipeName,
        deadline: Instant,
        attempt: u32,
        connected: bool,
        status: Option<NtStatus>,
    },
}

struct OpEntry {
    pipe: Option<PipeId>,
    session: u64,
    notify: Option<Notify>,
    /// SQEs pushed and not yet completed.
    pending: u32,
    /// The current chain's SQE ids (at most [`MAX_CHAIN`]), how many there
    /// are, and how many of them completed.
    chain: [SqeId; MAX_CHAIN],
    chain_len: u8,
    chain_done: u8,
    /// The next op of the same pipe (see `PipeEntry::ops`).
    pipe_next: Option<(u32, u32)>,
    /// The caller was told the request was cancelled; remaining CQEs only
    /// release resources.
    cancelled: bool,
    kind: Kind,
}

/// Fills the unused places of `OpEntry::chain` (only the first `chain_len`
/// are ids).
const NO_SQE: SqeId = SqeId::NONE;

impl OpEntry {
    /// The id of the `i`-th SQE of the current chain, if there is one.
    fn chain_id(&self, i: usize) -> Option<SqeId> {
        (i < usize::from(self.chain_len)).then(|| self.chain[i])
    }
}

/// The per-ring state, driven by [`run`] on the ring's own thread.
pub(crate) struct Core<D: OpDriver = Driver> {
    /// Open op entries in the table (see `EngineConfig::max_opens_in_flight`).
    opening: usize,
    /// Opens waiting for their turn, in the order they came.
    queued_opens: VecDeque<QueuedOpen>,
    drv: D,
    cfg: Arc<EngineConfig>,
    ring_index: usize,
    pipes: Slab<PipeEntry>,
    ops: Slab<OpEntry>,
    queue: Arc<CommandQueue>,
    file_ids: Arc<AtomicU64>,
    done: Vec<Completion>,
    /// Scratch for the SQE ids of the chain being pushed (no allocation).
    ids: Vec<SqeId>,
    stopping: bool,
    /// The kernel refused a multishot receive: pipes use one receive per
    /// request instead.
    ms_disabled: bool,
}

/// An open waiting for its turn.
struct QueuedOpen {
    path: String,
    user: Box<NetUserInfo>,
    tree: Option<Tree>,
    notify: Notify,
}

/// The ring thread's context, given to ring-thread callbacks so they can
/// start the next request without leaving the thread.
pub struct RingContext<'a> {
    core: &'a mut (dyn RingCore + 'a),
}

/// What a [`RingContext`] needs of its ring's core, whatever its driver.
pub(crate) trait RingCore {
    fn start_io(&mut self, pipe: PipeId, io: PipeIo, notify: Notify);
    fn ring_index(&self) -> usize;
}

impl<D: OpDriver> RingCore for Core<D> {
    fn start_io(&mut self, pipe: PipeId, io: PipeIo, notify: Notify) {
        Core::start_io(self, pipe, io, notify)
    }
    fn ring_index(&self) -> usize {
        self.ring_index
    }
}

impl std::fmt::Debug for RingContext<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RingContext")
            .field("ring", &self.core.ring_index())
            .finish()
    }
}

impl Outcome {
    /// The transfer of a transceive, read or FSCTL outcome.
    pub(crate) fn into_transfer(self) -> Result<Transfer, NtStatus> {
        match self {
            Outcome::Transfer(t) => Ok(t),
            _ => Err(NtStatus::INTERNAL_ERROR),
        }
    }
}

/// Wraps a ring-thread transfer callback as the engine's untyped callback.
pub(crate) fn transfer_callback(
    f: impl FnOnce(&mut RingContext<'_>, Result<Transfer, NtStatus>) + Send + 'static,
) -> Callback {
    Box::new(move |ctx, res| f(ctx, res.and_then(Outcome::into_transfer)))
}

impl RingContext<'_> {
    /// Starts a transceive on `pipe` (which must live on this ring) whose
    /// result is given to `f` on this ring thread.
    pub fn transceive_with(
        &mut self,
        pipe: PipeId,
        input: Vec<u8>,
        max_out: usize,
        f: impl FnOnce(&mut RingContext<'_>, Result<Transfer, NtStatus>) + Send + 'static,
    ) {
        let cb = transfer_callback(f);
        self.core.start_io(
            pipe,
            PipeIo::Transceive { input, max_out },
            Notify::Callback(cb),
        );
    }

    /// Starts one read of up to `max_out` bytes on `pipe` whose result is
    /// given to `f` on this ring thread.
    pub fn read_with(
        &mut self,
        pipe: PipeId,
        max_out: usize,
        f: impl FnOnce(&mut RingContext<'_>, Result<Vec<u8>, NtStatus>) + Send + 'static,
    ) {
        let cb: Callback =
            Box::new(move |ctx, res| f(ctx, res.and_then(Outcome::into_transfer).map(|t| t.data)));
        self.core
            .start_io(pipe, PipeIo::Read { max_out }, Notify::Callback(cb));
    }

    /// Index of this ring in its engine.
    pub fn ring_index(&self) -> usize {
        self.core.ring_index()
    }
}

/// Maps a socket errno to the status the seed would give.
pub(crate) fn socket_status(errno: i32) -> NtStatus {
    match errno {
        // A peer that went away: what the seed sees as EPIPE.
        libc::EPIPE | libc::ECONNRESET | libc::ENOTCONN | libc::ESHUTDOWN => NtStatus::PIPE_BROKEN,
        libc::ENOBUFS | libc::ENOMEM => NtStatus::INSUFFICIENT_RESOURCES,
        libc::ECANCELED => NtStatus::CANCELLED,
        e => NtStatus::from_errno(e),
    }
}

impl<D: OpDriver> Core<D> {
    pub(crate) fn new(
        drv: D,
        cfg: Arc<EngineConfig>,
        ring_index: usize,
        queue: Arc<CommandQueue>,
        file_ids: Arc<AtomicU64>,
    ) -> Core<D> {
        Core {
            opening: 0,
            queued_opens: VecDeque::new(),
            drv,
            cfg,
            ring_index,
            pipes: Slab::new(),
            ops: Slab::new(),
            queue,
            file_ids,
            done: Vec::with_capacity(256),
            ids: Vec::with_capacity(MAX_CHAIN),
            stopping: false,
            ms_disabled: false,
        }
    }

    /// The ring thread's loop: commands in, SQEs out, completions back.
    pub(crate) fn run(mut self) {
        let mut cmds = Vec::new();
        let wake = self.queue.wake.clone();

        loop {
            self.queue.take(&mut cmds);
            for c in cmds.drain(..) {
                self.command(c);
            }
            self.start_queued_opens();
            if self.stopping && self.ops.len() == 0 && self.pipes.len() == 0 {
                break;
            }
            let res = if self.queue.is_pending() {
                self.drv.submit_and_wait(0, None)
            } else {
                wake.prepare_park();
                if self.queue.is_pending() {
                    wake.unpark();
                    self.drv.submit_and_wait(0, None)
                } else {
                    let r = self.drv.submit_and_wait(1, None);
                    wake.unpark();
                    r
                }
            };
            if let Err(e) = res {
                tracing::error!("opipe: ring {} submit failed: {e}", self.ring_index);
                std::thread::sleep(Duration::from_millis(1));
            }
            let mut done = std::mem::take(&mut self.done);
            self.drv.reap(&mut done);

            for c in done.drain(..) {
                self.completion(c);
            }
            self.done = done;
        }
    }

    fn command(&mut self, c: Command) {
        match c {
            Command::Open {
                path,
                user,
                tree,
                notify,
            } => self.queued_opens.push_back(QueuedOpen {
                path,
                user,
                tree,
                notify,
            }),
            Command::Io { pipe, io, notify } => self.start_io(pipe, io, notify),
            Command::Close { pipe, notify } => self.close_pipe(pipe, notify),
            Command::Cancel { shared } => self.cancel_shared(&shared),
            Command::Disconnect { session, notify } => {
                self.disconnect(session);
                if let Some(n) = notify {
                    self.notify(n, Ok(Outcome::Done));
                }
            }
            Command::WaitPipe {
                name,
                timeout,
                notify,
            } => self.start_wait(name, timeout, notify),
            Command::Shutdown => {
                self.stopping = true;
                for q in std::mem::take(&mut self.queued_opens) {
                    self.reject(q.notify, NtStatus::PIPE_NOT_AVAILABLE);
                }
                for (i, g) in self.ops.keys() {
                    self.cancel_op(i, g, NtStatus::CANCELLED);
                }
                for (i, g) in self.pipes.keys() {
                    self.close_pipe(
                        PipeId {
                            ring: self.ring_index,
                            index: i,
                            gen: g,
                        },
                        None,
                    );
                }
            }
        }
    }

    fn notify(&mut self, n: Notify, res: Result<Outcome, NtStatus>) {
        match n {
            Notify::Shared(s) => {
                if let Some(Ok(Outcome::Opened { pipe, .. })) = s.complete(res) {
                    // The caller gave up on this open: close what we opened.
                    self.close_pipe(pipe, None);
                }
            }
            Notify::Callback(f) => f(&mut RingContext { core: self }, res),
        }
    }

    fn reject(&mut self, n: Notify, status: NtStatus) {
        self.notify(n, Err(status));
    }

    fn new_op(
        &mut self,
        pipe: Option<PipeId>,
        session: u64,
        notify: Notify,
        kind: Kind,
    ) -> (u32, u32) {
        let shared = match &notify {
            Notify::Shared(s) => Some(s.clone()),
            Notify::Callback(_) => None,
        };
        let key = self.insert_op(pipe, session, Some(notify), kind);
        if let Some(s) = shared {
            s.op_key
                .store(((key.0 as u64) << 32) | key.1 as u64, Ordering::SeqCst);
        }
        key
    }

    /// Adds an op entry (first in its pipe's `ops` list); `notify` is
    /// `None` for the engine's own ops (a pipe's multishot receive).
    fn insert_op(
        &mut self,
        pipe: Option<PipeId>,
        session: u64,
        notify: Option<Notify>,
        kind: Kind,
    ) -> (u32, u32) {
        let pipe_next = pipe
            .and_then(|p| self.pipes.get_mut(p.index, p.gen))
            .and_then(|pe| pe.ops);
        let key = self.ops.insert(OpEntry {
            pipe,
            session,
            notify,
            pending: 0,
            chain: [NO_SQE; MAX_CHAIN],
            chain_len: 0,
            chain_done: 0,
            pipe_next,
            cancelled: false,
            kind,
        });
        if let Some(pe) = pipe.and_then(|p| self.pipes.get_mut(p.index, p.gen)) {
            pe.ops = Some(key);
        }
        key
    }

    fn push_chain(&mut self, key: (u32, u32), ops: impl IntoIterator<Item = (Op, u8)>) {
        let mut ids = std::mem::take(&mut self.ids);
        self.drv.push_chain(
            ops.into_iter()
                .map(|(op, st)| (op, token(key.0, key.1, st))),
            &mut ids,
        );
        if let Some(e) = self.ops.get_mut(key.0, key.1) {
            debug_assert!(ids.len() <= MAX_CHAIN);
            e.pending += ids.len() as u32;
            e.chain = [NO_SQE; MAX_CHAIN];
            for (slot, id) in e.chain.iter_mut().zip(&ids) {
                *slot = *id;
            }
            e.chain_len = ids.len().min(MAX_CHAIN) as u8;
            e.chain_done = 0;
        }
        self.ids = ids;
    }

    fn push_one(&mut self, key: (u32, u32), op: Op, st: u8) -> SqeId {
        let id = self.drv.push(op, token(key.0, key.1, st));
        if let Some(e) = self.ops.get_mut(key.0, key.1) {
            e.pending += 1;
        }
        id
    }

    // ---- open -------------------------------------------------------------

    /// Starts waiting opens while fewer than the limit run (one whose
    /// caller cancelled meanwhile ends `STATUS_CANCELLED`).
    fn start_queued_opens(&mut self) {
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
    fn reject_queued_opens(&mut self, which: impl Fn(&QueuedOpen) -> bool, status: NtStatus) {
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

    fn start_open(&mut self, path: &str, user: &NetUserInfo, tree: Option<Tree>, notify: Notify) {
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
        let fd = match crate::ring::unix_stream_socket() {
            Ok(fd) => Rc::new(fd),
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
        self.push_chain(
            key,
            [
                (
                    Op::Connect {
                        fd: fd.clone(),
                        addr: Box::new(addr),
                    },
                    ST_CONNECT,
                ),
                (
                    Op::Send {
                        fd: fd.clone(),
                        buf: msg,
                        start: 0,
                    },
                    ST_HELLO,
                ),
                (
                    Op::Recv {
                        fd,
                        buf: Vec::with_capacity(4),
                        len: 4,
                        flags: libc::MSG_WAITALL,
                    },
                    ST_STATUS,
                ),
            ],
        );
        let ts = Box::new(Timespec::from(self.cfg.open_timeout));
        let timer = self.push_one(key, Op::Timer { ts }, ST_DEADLINE);
        if let Some(OpEntry {
            kind: Kind::Open { timer: t, .. },
            ..
        }) = self.ops.get_mut(key.0, key.1)
        {
            *t = Some(timer);
        }
    }

    fn open_step(&mut self, key: (u32, u32), step: u8, c: &Completion) {
        let Some(e) = self.ops.get_mut(key.0, key.1) else {
            return;
        };
        let chain_left = usize::from(e.chain_len.saturating_sub(e.chain_done));
        let Kind::Open { status, timer, .. } = &mut e.kind else {
            return;
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
                if c.result == -libc::ETIME && status.is_none() && chain_left > 0 {
                    // Deadline passed with the handshake unfinished.
                    *status = Some(NtStatus::PIPE_NOT_AVAILABLE);
                    self.cancel_chain(key);
                }
            }
            _ => {}
        }
    }

    fn finish_open(&mut self, e: OpEntry) {
        let Kind::Open {
            fd,
            name,
            tree,
            status,
            ..
        } = e.kind
        else {
            return;
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
            ms: None,
            ms_stopping: false,
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

    // ---- I/O on an open pipe ----------------------------------------------

    fn pipe_fd(&mut self, pipe: PipeId) -> Result<(Rc<OwnedFd>, u64), NtStatus> {
        if pipe.ring != self.ring_index {
            return Err(NtStatus::INVALID_HANDLE);
        }
        match self.pipes.get_mut(pipe.index, pipe.gen) {
            None => Err(NtStatus::INVALID_HANDLE),
            Some(p) if p.closing => Err(NtStatus::FILE_CLOSED),
            Some(p) => Ok((p.fd.clone(), p.session)),
        }
    }

    pub(crate) fn start_io(&mut self, pipe: PipeId, io: PipeIo, notify: Notify) {
        if let Notify::Shared(s) = &notify {
            if s.cancel_requested.load(Ordering::SeqCst) {
                return self.reject(notify, NtStatus::CANCELLED);
            }
        }
        let (fd, session) = match self.pipe_fd(pipe) {
            Ok(x) => x,
            Err(s) => return self.reject(notify, s),
        };
        let max_out = match &io {
            PipeIo::Transceive { max_out, .. }
            | PipeIo::Read { max_out }
            | PipeIo::Peek { max_out } => *max_out,
            PipeIo::Write { .. } => 0,
        };
        if max_out > MAX_IO_BYTES {
            // Larger than any SMB2 read or IOCTL response: refuse rather
            // than allocate it.
            return self.reject(notify, NtStatus::INVALID_PARAMETER);
        }
        let Some(pe) = self.pipes.get_mut(pipe.index, pipe.gen) else {
            return self.reject(notify, NtStatus::INVALID_HANDLE);
        };
        if pe.draining > 0 {
            // A cancelled request still has SQEs in the kernel: start this
            // one when they are done (see PipeEntry::draining).
            pe.deferred.push_back((io, notify));
            return;
        }
        let has_pushback = !pe.pushback.is_empty();
        // The reply of a transceive, or a read's data, comes from the pipe's
        // multishot receive: the request is one SEND SQE or none at all.
        // Larger reads keep one receive of their own size (a chunk is at
        // most one pool buffer).
        let pool_buf = self.drv.recv_pool_buf_bytes();
        let via_ms = !has_pushback
            && pool_buf > 0
            && max_out <= pool_buf
            && self.cfg.multishot
            && !self.ms_disabled
            && self.cfg.buffers == BufferMode::Plain
            && !pe.eof
            && !pe.closing;
        let reads_socket = matches!(io, PipeIo::Transceive { .. } | PipeIo::Read { .. });
        if reads_socket && !via_ms && !has_pushback && (pe.ms.is_some() || !pe.waiters.is_empty()) {
            // A receive of its own (a read above a pool buffer) must not
            // race the multishot receive: it starts once the waiting
            // requests have their bytes and the receive has stopped (what
            // it took by then is in the pushback, which comes first).
            let stop = pe.waiters.is_empty();
            pe.deferred.push_back((io, notify));
            if stop {
                self.stop_multishot(pipe);
            }
            return;
        }
        match io {
            PipeIo::Read { max_out } if has_pushback => {
                let data = take_pushback(&mut pe.pushback, max_out);
                let t = Transfer {
                    status: NtStatus::SUCCESS,
                    data,
                };
                self.notify(notify, Ok(Outcome::Transfer(t)))
            }
            PipeIo::Transceive { input, max_out } => {
                let kind = Kind::Transceive {
                    max_out,
                    input,
                    sent: 0,
                    reg: None,
                    out: None,
                    more: None,
                    retry_recv: false,
                    from_pushback: has_pushback,
                    via_ms,
                    status: None,
                };
                let key = self.new_op(Some(pipe), session, notify, kind);
                if via_ms {
                    self.await_chunk(pipe, key, &fd, session);
                }
                self.push_transceive(key, fd);
                if self
                    .ops
                    .get_mut(key.0, key.1)
                    .is_some_and(|e| e.pending == 0)
                {
                    // Nothing to send and the reply is already here.
                    self.finish(key);
                }
            }
            PipeIo::Read { max_out } => {
                let kind = Kind::Read {
                    max_out,
                    out: None,
                    retry_recv: false,
                    via_ms,
                    status: None,
                };
                let key = self.new_op(Some(pipe), session, notify, kind);
                if via_ms {
                    // No SQE: the next chunk of the multishot receive ends it.
                    self.await_chunk(pipe, key, &fd, session);
                } else {
                    let op = recv_op(&self.drv, fd, max_out, true);
                    self.push_chain(key, [(op, ST_RECV)]);
                }
            }
            PipeIo::Write { data } => {
                let key = self.new_op(
                    Some(pipe),
                    session,
                    notify,
                    Kind::Write {
                        data: Vec::new(),
                        sent: 0,
                        status: None,
                    },
                );
                self.push_chain(
                    key,
                    vec![(
                        Op::Send {
                            fd,
                            buf: data,
                            start: 0,
                        },
                        ST_SEND,
                    )],
                );
            }
            PipeIo::Peek { max_out } => {
                let room = match fsctl::peek_data_room(clamp_u32(max_out)) {
                    Ok(room) => room,
                    Err(s) => return self.reject(notify, s),
                };
                let kind = Kind::Peek {
                    room,
                    data: None,
                    eof: false,
                    status: None,
                };
                let key = self.new_op(Some(pipe), session, notify, kind);
                // Ask for one byte more than fits, so a full buffer with more
                // behind it is told apart from an exact fit.
                let want = room.saturating_add(1);
                let op = Op::Recv {
                    fd,
                    buf: Vec::with_capacity(want),
                    len: clamp_u32(want),
                    flags: crate::ring::driver::PEEK_NOWAIT,
                };
                self.push_chain(key, [(op, ST_PEEK)]);
            }
        }
    }

    /// Pushes the transceive chain for what is left to send:
    /// send -> recv [-> one-byte peek, when the kernel cannot flag leftover
    /// data on the recv completion]. Registered mode: WRITE_FIXED ->
    /// READ_FIXED on the same slot (the read starts only after the write
    /// completed) -> peek; a short READ_FIXED breaks the link, which is fine:
    /// short means nothing was left.
    fn push_transceive(&mut self, key: (u32, u32), fd: Rc<OwnedFd>) {
        let reg_mode = self.cfg.buffers == BufferMode::Registered;
        let slot_bytes = self.drv.reg_slot_bytes();
        let nonempty_flag = self.drv.features().sock_nonempty;
        let Some(e) = self.ops.get_mut(key.0, key.1) else {
            return;
        };
        let Kind::Transceive {
            max_out,
            input,
            sent,
            reg,
            retry_recv,
            from_pushback,
            via_ms,
            ..
        } = &mut e.kind
        else {
            return;
        };
        if *from_pushback || *via_ms {
            // The reply is in the pipe's pushback, or comes from its
            // multishot receive: just send the request.
            if input.len() > *sent {
                let (buf, start) = (std::mem::take(input), *sent);
                self.push_chain(key, [(Op::Send { fd, buf, start }, ST_SEND)]);
            }
            return;
        }
        let max_out = *max_out;
        let check_more = max_out < SMB_PIPE_MAX_MSGSIZE;
        let mut chain = ChainBuf::default();
        if reg_mode && max_out <= slot_bytes && input.len() <= slot_bytes {
            let slot = match reg.take() {
                Some(r) => r,
                None => match self.drv.reg_alloc() {
                    Some(r) => {
                        if let Some(bytes) = self.drv.reg_bytes_mut(&r) {
                            bytes[..input.len()].copy_from_slice(input);
                        }
                        r
                    }
                    // Registered pool exhausted.
                    None => return self.fail_now(key, NtStatus::INSUFFICIENT_RESOURCES),
                },
            };
            if input.len() > *sent {
                let (start, end) = (*sent as u32, input.len() as u32);
                chain.push((
                    Op::WriteFixed {
                        fd: fd.clone(),
                        buf: slot.clone(),
                        start,
                        end,
                    },
                    ST_SEND,
                ));
            }
            chain.push((
                Op::ReadFixed {
                    fd: fd.clone(),
                    buf: slot.clone(),
                    len: clamp_u32(max_out),
                },
                ST_RECV,
            ));
            *reg = Some(slot);
            if check_more {
                chain.push((more_probe(fd), ST_MORE));
            }
        } else {
            if input.len() > *sent {
                let buf = std::mem::take(input);
                chain.push((
                    Op::Send {
                        fd: fd.clone(),
                        buf,
                        start: *sent,
                    },
                    ST_SEND,
                ));
            }
            let recv = recv_op(&self.drv, fd.clone(), max_out, !*retry_recv);
            *retry_recv = false;
            chain.push((recv, ST_RECV));
            if check_more && !nonempty_flag {
                chain.push((more_probe(fd), ST_MORE));
            }
        }
        self.push_chain(key, chain);
    }

    fn fail_now(&mut self, key: (u32, u32), status: NtStatus) {
        if let Some(e) = self.ops.get_mut(key.0, key.1) {
            set_status(&mut e.kind, status);
            if e.pending == 0 {
                self.finish(key);
            }
        }
    }

    fn io_step(&mut self, key: (u32, u32), step: u8, c: Completion) {
        let features = self.drv.features();
        let sock_nonempty = c.sock_nonempty();
        let Some(e) = self.ops.get_mut(key.0, key.1) else {
            return;
        };
        let r = c.result;
        // A send that fell short (its link then cancelled the rest) is
        // resumed when the chain is over; its -ECANCELED followers are no error.
        let resuming = |input: &Vec<u8>, sent: usize| sent < input.len();
        match (&mut e.kind, step, c.op) {
            (
                Kind::Transceive {
                    status,
                    input,
                    sent,
                    ..
                },
                ST_SEND,
                op,
            ) => {
                let (start, end) = match op {
                    Op::Send { buf, start, .. } => {
                        let end = buf.len();
                        *input = buf;
                        (start, end)
                    }
                    Op::WriteFixed { start, end, .. } => (start as usize, end as usize),
                    _ => return,
                };
                if r < 0 {
                    if status.is_none() {
                        *status = Some(socket_status(-r));
                    }
                } else {
                    *sent = (start + r as usize).min(end);
                }
            }
            (
                Kind::Transceive {
                    status,
                    out,
                    more,
                    max_out,
                    reg,
                    input,
                    sent,
                    retry_recv,
                    ..
                },
                ST_RECV,
                op,
            ) => {
                let resend = resuming(input, *sent) && status.is_none();
                if r == -libc::ECANCELED && resend {
                    return;
                }
                if r == -libc::ENOBUFS && matches!(op, Op::RecvPooled { .. }) && status.is_none() {
                    // The receive pool was empty: receive again with a
                    // buffer of our own once this chain is over.
                    *retry_recv = true;
                    return;
                }
                if r <= 0 {
                    if status.is_none() {
                        *status = Some(if r == 0 {
                            NtStatus::PIPE_BROKEN
                        } else {
                            socket_status(-r)
                        });
                    }
                    return;
                }
                // What the receive asked for: more than `max_out` when it
                // read ahead (see `recv_op`).
                let asked = match &op {
                    Op::Recv { len, .. }
                    | Op::RecvPooled { len, .. }
                    | Op::ReadFixed { len, .. } => *len as usize,
                    _ => return,
                };
                let data = match op {
                    Op::Recv { buf, .. } => buf,
                    Op::RecvPooled { data, .. } => data,
                    Op::ReadFixed { buf, .. } => {
                        drop(buf);
                        let n = (r as usize).min(*max_out);
                        match reg.as_ref().and_then(|slot| self.drv.reg_bytes(slot)) {
                            Some(bytes) => bytes[..n].to_vec(),
                            None => return set_status(&mut e.kind, NtStatus::INTERNAL_ERROR),
                        }
                    }
                    _ => return,
                };
                if data.len() < asked {
                    // A short receive emptied the socket (a stream recv
                    // copies until its buffer is full or the queue is empty).
                    *more = Some(false);
                } else if features.sock_nonempty && self.cfg.buffers == BufferMode::Plain {
                    *more = Some(sock_nonempty);
                }
                *out = Some(data);
            }
            // 1: a byte is waiting; -EAGAIN: empty; 0: peer closed.
            (
                Kind::Transceive {
                    more: more @ None, ..
                },
                ST_MORE,
                _,
            ) => *more = Some(r > 0),
            (
                Kind::Read {
                    out,
                    status,
                    retry_recv,
                    ..
                },
                ST_RECV,
                op,
            ) => {
                let buf = match op {
                    Op::Recv { buf, .. } => buf,
                    Op::RecvPooled { data, .. } => {
                        if r == -libc::ENOBUFS {
                            *retry_recv = true;
                            return;
                        }
                        data
                    }
                    _ => return,
                };
                if r > 0 {
                    *out = Some(buf);
                } else if status.is_none() {
                    *status = Some(if r == 0 {
                        NtStatus::PIPE_BROKEN
                    } else {
                        socket_status(-r)
                    });
                }
            }
            (Kind::Write { status, data, sent }, ST_SEND, Op::Send { buf, start, .. }) => {
                if r < 0 {
                    if status.is_none() {
                        *status = Some(socket_status(-r));
                    }
                } else {
                    *sent = start + r as usize;
                }
                *data = buf;
            }
            (
                Kind::Peek {
                    data, eof, status, ..
                },
                ST_PEEK,
                Op::Recv { buf, len, .. },
            ) => {
                if r > 0 {
                    *data = Some(buf);
                } else if r == 0 && len > 0 {
                    *eof = true;
                    *data = Some(Vec::new());
                } else if r == 0 || r == -libc::EAGAIN {
                    *data = Some(Vec::new());
                } else if status.is_none() {
                    *status = Some(socket_status(-r));
                }
            }
            _ => {}
        }
    }

    // ---- WAIT (FSCTL_PIPE_WAIT) -------------------------------------------

    fn start_wait(&mut self, name: PipeName, timeout: Duration, notify: Notify) {
        // A timeout too long for the clock (Duration::MAX) waits "forever":
        // a year.
        let now = Instant::now();
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

    fn wait_attempt(&mut self, key: (u32, u32)) {
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
        match crate::ring::unix_stream_socket() {
            Ok(fd) => {
                let op = Op::Connect {
                    fd: Rc::new(fd),
                    addr: Box::new(addr),
                };
                self.push_chain(key, [(op, ST_WAIT_CONNECT)]);
            }
            Err(_) => self.fail_now(key, NtStatus::INSUFFICIENT_RESOURCES),
        }
    }

    fn wait_step(&mut self, key: (u32, u32), step: u8, r: i32) {
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
                let now = Instant::now();
                if now >= *deadline {
                    *status = Some(NtStatus::IO_TIMEOUT);
                    return;
                }
                // Back off 1, 2, 4 .. 50 ms between attempts.
                let wait =
                    Duration::from_millis((1u64 << (*attempt).min(6)).min(50)).min(*deadline - now);
                *attempt += 1;
                let ts = Box::new(Timespec::from(wait));
                self.push_one(key, Op::Timer { ts }, ST_WAIT_TIMER);
            }
            _ => {
                if e.pending == 0 {
                    self.wait_attempt(key);
                }
            }
        }
    }

    // ---- completion, cancel, close -----------------------------------------

    fn completion(&mut self, c: Completion) {
        let (index, gen, step) = untoken(c.token);
        let key = (index, gen);
        let cancelled = {
            let Some(e) = self.ops.get_mut(index, gen) else {
                return;
            };
            if !c.more {
                e.pending = e.pending.saturating_sub(1);
                if step != ST_DEADLINE && step != ST_WAIT_TIMER {
                    e.chain_done = (e.chain_done + 1).min(e.chain_len);
                }
            }
            e.cancelled
        };
        match step {
            ST_CONNECT | ST_HELLO | ST_STATUS | ST_DEADLINE => self.open_step(key, step, &c),
            ST_MULTI => return self.ms_step(key, c),
            ST_WAIT_CONNECT | ST_WAIT_TIMER => {
                let r = c.result;
                drop(c);
                self.wait_step(key, step, r);
            }
            _ => self.io_step(key, step, c),
        }
        if cancelled {
            // Keep cancelling whatever part of the chain is still running.
            self.cancel_chain(key);
        }
        let Some(e) = self.ops.get_mut(index, gen) else {
            return;
        };
        if e.pending > 0 {
            return;
        }
        // The chain is over: resume a send that fell short, or finish.
        let resume = !e.cancelled
            && match &e.kind {
                Kind::Transceive {
                    input,
                    sent,
                    retry_recv,
                    status: None,
                    ..
                } => *sent < input.len() || *retry_recv,
                Kind::Read {
                    retry_recv,
                    status: None,
                    ..
                } => *retry_recv,
                Kind::Write {
                    data,
                    sent,
                    status: None,
                } => *sent < data.len(),
                _ => false,
            };
        if resume {
            let pipe = e.pipe;
            match pipe.map(|p| self.pipe_fd(p)) {
                Some(Ok((fd, _))) => return self.push_resume(key, fd),
                Some(Err(s)) => self.fail_now(key, s),
                None => {}
            }
            return;
        }
        if let Some(OpEntry {
            kind:
                Kind::WaitPipe {
                    status: None,
                    connected: false,
                    ..
                },
            cancelled: false,
            ..
        }) = self.ops.get_mut(index, gen)
        {
            // A wait between attempts: wait_step pushed the next one.
            return;
        }
        if let Some(OpEntry {
            kind:
                Kind::Transceive {
                    via_ms: true,
                    out: None,
                    status: None,
                    ..
                }
                | Kind::Read {
                    via_ms: true,
                    out: None,
                    status: None,
                    ..
                },
            cancelled: false,
            ..
        }) = self.ops.get_mut(index, gen)
        {
            // Sent; the reply comes with the multishot receive's next chunk.
            return;
        }
        self.finish(key);
    }

    // ---- multishot receive ------------------------------------------------

    /// Hands the pipe's pushback to its waiting requests, first come first
    /// served, each at most its `max_out`. `nonempty`: the kernel said more
    /// is queued on the socket.
    fn feed_waiters(&mut self, pipe: PipeId, nonempty: bool) {
        loop {
            let Some(pe) = self.pipes.get_mut(pipe.index, pipe.gen) else {
                return;
            };
            if pe.pushback.is_empty() {
                return;
            }
            let Some(w) = pe.waiters.pop_front() else {
                return;
            };
            let Some(e) = self.ops.get_mut(w.0, w.1) else {
                continue;
            };
            let (out, more, max_out) = match &mut e.kind {
                Kind::Transceive {
                    out: out @ None,
                    more,
                    max_out,
                    ..
                } => (out, Some(more), *max_out),
                Kind::Read {
                    out: out @ None,
                    max_out,
                    ..
                } => (out, None, *max_out),
                _ => continue,
            };
            let data = take_pushback(&mut pe.pushback, max_out);
            let left = !pe.pushback.is_empty();
            *out = Some(data);
            if let Some(m) = more {
                *m = Some(left || nonempty);
            }
            if e.pending == 0 {
                self.finish(w);
            }
        }
    }

    /// Queues `key` among the requests waiting for chunks of `pipe`'s
    /// multishot receive, arming the receive if it is not.
    fn await_chunk(&mut self, pipe: PipeId, key: (u32, u32), fd: &Rc<OwnedFd>, session: u64) {
        let Some(pe) = self.pipes.get_mut(pipe.index, pipe.gen) else {
            return;
        };
        pe.waiters.push_back(key);
        if pe.ms.is_some() {
            // Armed, or being stopped: its end re-arms it for the waiter.
            return;
        }
        self.arm_multishot(pipe, fd.clone(), session);
    }

    fn arm_multishot(&mut self, pipe: PipeId, fd: Rc<OwnedFd>, session: u64) {
        let key = self.insert_op(Some(pipe), session, None, Kind::Multishot);
        if let Some(pe) = self.pipes.get_mut(pipe.index, pipe.gen) {
            pe.ms = Some(key);
            pe.ms_stopping = false;
        }
        let op = Op::RecvMulti {
            fd,
            data: Vec::new(),
        };
        self.push_chain(key, [(op, ST_MULTI)]);
    }

    /// One completion of a pipe's multishot receive: a chunk for the
    /// waiting request or the pushback; on the last one, re-arm for a
    /// request still waiting, or end it.
    fn ms_step(&mut self, key: (u32, u32), c: Completion) {
        let nonempty = self.drv.features().sock_nonempty && c.sock_nonempty();
        let Some(e) = self.ops.get_mut(key.0, key.1) else {
            return;
        };
        let (pipe, session, pending) = (e.pipe, e.session, e.pending);
        let r = c.result;
        let Op::RecvMulti { fd, data } = c.op else {
            return;
        };
        if let Some(p) = pipe {
            if r > 0 && !data.is_empty() {
                self.ms_chunk(p, data, nonempty);
            }
        }
        if c.more || pending > 0 {
            return;
        }
        // The receive is over.
        if r == -libc::EINVAL {
            // No multishot receive on this kernel (before 6.0).
            self.ms_disabled = true;
        }
        let mut resume = VecDeque::new();
        if let Some(pe) = pipe.and_then(|p| self.pipes.get_mut(p.index, p.gen)) {
            pe.ms = None;
            pe.ms_stopping = false;
            if r == 0 {
                pe.eof = true;
            }
            resume = pe.startable();
        }
        self.finish(key);
        let Some(p) = pipe else { return };
        for (io, notify) in resume {
            self.start_io(p, io, notify);
        }
        let Some(pe) = self.pipes.get_mut(p.index, p.gen) else {
            return;
        };
        if pe.ms.is_some() {
            return;
        }
        if pe.waiters.is_empty() || pe.closing {
            return;
        }
        let fail = match r {
            0 => Some(NtStatus::PIPE_BROKEN),
            r if r > 0 => None,
            r if r == -libc::ENOBUFS || r == -libc::ECANCELED || r == -libc::EINVAL => None,
            r => Some(socket_status(-r)),
        };
        if fail.is_none() && !self.ms_disabled {
            return self.arm_multishot(p, fd, session);
        }
        let waiters = std::mem::take(&mut pe.waiters);
        for w in waiters {
            match fail {
                Some(s) => self.fail_now(w, s),
                None => {
                    // No multishot receive here: one receive per waiter.
                    let Some(we) = self.ops.get_mut(w.0, w.1) else {
                        continue;
                    };
                    let max_out = match &mut we.kind {
                        Kind::Transceive {
                            max_out, via_ms, ..
                        }
                        | Kind::Read {
                            max_out, via_ms, ..
                        } => {
                            *via_ms = false;
                            *max_out
                        }
                        _ => continue,
                    };
                    let op = recv_op(&self.drv, fd.clone(), max_out, true);
                    self.push_chain(w, [(op, ST_RECV)]);
                }
            }
        }
    }

    /// A chunk of `pipe`'s stream from its multishot receive: to the
    /// waiting requests in order (each takes at most its `max_out`), the
    /// rest to the pushback.
    fn ms_chunk(&mut self, pipe: PipeId, mut data: Vec<u8>, nonempty: bool) {
        let Some(pe) = self.pipes.get_mut(pipe.index, pipe.gen) else {
            return;
        };
        // Waiters exist only while the pushback is empty: the chunk is next.
        if pe.pushback.is_empty() {
            pe.pushback = data;
        } else {
            pe.pushback.append(&mut data);
        }
        self.feed_waiters(pipe, nonempty);
        let Some(pe) = self.pipes.get_mut(pipe.index, pipe.gen) else {
            return;
        };
        if pe.pushback.len() > MS_PUSHBACK_CAP {
            // Nobody is reading: leave the rest in the socket.
            self.stop_multishot(pipe);
        }
    }

    /// Cancels the pipe's multishot receive, once; its final completion
    /// (`ms_step`) then re-arms it for a waiter or starts deferred requests.
    fn stop_multishot(&mut self, pipe: PipeId) {
        let Some(pe) = self.pipes.get_mut(pipe.index, pipe.gen) else {
            return;
        };
        let Some(k) = pe.ms.filter(|_| !pe.ms_stopping) else {
            return;
        };
        pe.ms_stopping = true;
        if let Some(id) = self.ops.get_mut(k.0, k.1).and_then(|e| e.chain_id(0)) {
            self.drv.cancel(id);
        }
    }

    fn push_resume(&mut self, key: (u32, u32), fd: Rc<OwnedFd>) {
        let Some(e) = self.ops.get_mut(key.0, key.1) else {
            return;
        };
        match &mut e.kind {
            Kind::Write { data, sent, .. } => {
                let (buf, start) = (std::mem::take(data), *sent);
                self.push_chain(key, [(Op::Send { fd, buf, start }, ST_SEND)]);
            }
            Kind::Read {
                max_out,
                retry_recv,
                ..
            } => {
                *retry_recv = false;
                let op = recv_op(&self.drv, fd, *max_out, false);
                self.push_chain(key, [(op, ST_RECV)]);
            }
            _ => self.push_transceive(key, fd),
        }
    }

    /// Moves what a read-ahead receive got beyond `max_out` to the front of
    /// the pipe's pushback: requests on a pipe with pushback are served from
    /// it, so anything already there came from a receive that started
    /// after this one. True if anything was kept.
    fn keep_read_ahead(
        &mut self,
        pipe: Option<PipeId>,
        data: &mut Vec<u8>,
        max_out: usize,
    ) -> bool {
        if data.len() <= max_out {
            return false;
        }
        let tail = data.split_off(max_out);
        match pipe.and_then(|p| self.pipes.get_mut(p.index, p.gen)) {
            Some(pe) => {
                let mut rest = tail;
                rest.append(&mut pe.pushback);
                pe.pushback = rest;
                true
            }
            // The pipe is gone: so are its bytes.
            None => false,
        }
    }

    fn finish(&mut self, key: (u32, u32)) {
        let Some(mut e) = self.ops.remove(key.0, key.1) else {
            return;
        };
        if matches!(e.kind, Kind::Open { .. }) {
            // The next waiting open starts in the ring loop.
            self.opening -= 1;
        }
        let mut resume = VecDeque::new();
        if let Some(pe) = e.pipe.and_then(|p| self.pipes.get_mut(p.index, p.gen)) {
            if let Some(i) = pe.waiters.iter().position(|k| *k == key) {
                // A waiter that ends without its chunk (cancelled, failed).
                pe.waiters.remove(i);
            }
            if e.cancelled {
                // Bytes the cancelled receive took after all stay in the stream.
                if let Kind::Transceive { out: Some(d), .. } | Kind::Read { out: Some(d), .. } =
                    &mut e.kind
                {
                    pe.pushback.append(d);
                }
                pe.draining = pe.draining.saturating_sub(1);
            }
            resume = pe.startable();
        }
        if let Some(p) = e.pipe {
            self.pipe_op_done(p, key, e.pipe_next);
        }
        for (io, notify) in resume {
            if let Some(p) = e.pipe {
                self.start_io(p, io, notify);
            }
        }
        // Registered slots go back to the pool (no op holds them any more);
        // the sent request's buffer goes to the driver for a later reply.
        if let Kind::Transceive { reg, input, .. } = &mut e.kind {
            if let Some(r) = reg.take() {
                self.drv.reg_release(r);
            }
            self.drv.recycle(std::mem::take(input));
        }
        if e.cancelled || e.notify.is_none() {
            return;
        }
        if matches!(e.kind, Kind::Open { .. }) {
            return self.finish_open(e);
        }
        let notify = e.notify.take().expect("checked");
        let res = match e.kind {
            Kind::Transceive {
                status: Some(s), ..
            } => Err(s),
            Kind::Transceive {
                max_out,
                from_pushback: true,
                ..
            } => {
                let t = match e.pipe.and_then(|p| self.pipes.get_mut(p.index, p.gen)) {
                    Some(pe) => {
                        let data = take_pushback(&mut pe.pushback, max_out);
                        transceive_result(max_out, data, || {
                            !pe.pushback.is_empty()
                                || crate::ring::fionread(pe.fd.as_raw_fd()).is_ok_and(|q| q > 0)
                        })
                    }
                    None => transceive_result(max_out, Vec::new(), || false),
                };
                Ok(Outcome::Transfer(t))
            }
            Kind::Transceive {
                out, more, max_out, ..
            } => {
                let mut data = out.unwrap_or_default();
                let read_ahead = self.keep_read_ahead(e.pipe, &mut data, max_out);
                Ok(Outcome::Transfer(transceive_result(max_out, data, || {
                    read_ahead || more.unwrap_or(false)
                })))
            }
            Kind::Read {
                status: Some(s), ..
            } => Err(s),
            Kind::Read { out, max_out, .. } => {
                let mut data = out.unwrap_or_default();
                self.keep_read_ahead(e.pipe, &mut data, max_out);
                Ok(Outcome::Transfer(Transfer {
                    status: NtStatus::SUCCESS,
                    data,
                }))
            }
            Kind::Write {
                status: Some(s), ..
            } => Err(s),
            Kind::Write { sent, .. } => Ok(Outcome::Written(sent)),
            Kind::Peek {
                status: Some(s), ..
            } => Err(s),
            Kind::Peek {
                data, eof, room, ..
            } => {
                let mut data = data.unwrap_or_default();
                let mut avail_extra = 0;
                if let Some(pe) = e.pipe.and_then(|p| self.pipes.get_mut(p.index, p.gen)) {
                    if !pe.pushback.is_empty() {
                        // Pushed-back bytes come first in the stream.
                        avail_extra = pe.pushback.len();
                        let mut all = pe.pushback.clone();
                        all.extend_from_slice(&data);
                        data = all;
                    }
                }
                // The total queued is only needed when the data did not fit.
                let avail = if data.len() > room {
                    e.pipe
                        .and_then(|p| self.available(p))
                        .map(|a| a + avail_extra)
                } else {
                    None
                };
                Ok(Outcome::Transfer(peek_reply(data, room, eof, avail)))
            }
            Kind::WaitPipe {
                status: Some(s), ..
            } => Err(s),
            Kind::WaitPipe { .. } => Ok(Outcome::Done),
            Kind::Multishot => Ok(Outcome::Done),
            Kind::Open { .. } => unreachable!("handled above"),
        };
        self.notify(notify, res);
    }

    /// Bytes queued on a pipe's socket right now (FIONREAD). Used by PEEK
    /// only, which must report the total even when its buffer is smaller.
    fn available(&mut self, pipe: PipeId) -> Option<usize> {
        let p = self.pipes.get_mut(pipe.index, pipe.gen)?;
        crate::ring::fionread(p.fd.as_raw_fd()).ok()
    }

    /// Unlinks the finished op `key` (already out of the op table; `next`
    /// was its `pipe_next`) from its pipe's list, and releases a closing
    /// pipe whose last op it was.
    fn pipe_op_done(&mut self, pipe: PipeId, key: (u32, u32), next: Option<(u32, u32)>) {
        let Some(p) = self.pipes.get_mut(pipe.index, pipe.gen) else {
            return;
        };
        if p.ops == Some(key) {
            p.ops = next;
        } else {
            let mut cur = p.ops;
            while let Some(c) = cur {
                let Some(e) = self.ops.get_mut(c.0, c.1) else {
                    break;
                };
                if e.pipe_next == Some(key) {
                    e.pipe_next = next;
                    break;
                }
                cur = e.pipe_next;
            }
        }
        let Some(p) = self.pipes.get_mut(pipe.index, pipe.gen) else {
            return;
        };
        if p.closing && p.ops.is_none() {
            self.release_pipe(pipe);
        }
    }

    fn release_pipe(&mut self, pipe: PipeId) {
        if let Some(p) = self.pipes.remove(pipe.index, pipe.gen) {
            // The socket closes here unless an op still holds it (none: `ops` is empty).
            drop(p.fd);
            for (_, n) in p.deferred {
                self.reject(n, NtStatus::CANCELLED);
            }
            for n in p.close_waiters {
                self.notify(n, Ok(Outcome::Done));
            }
        }
    }

    fn close_pipe(&mut self, pipe: PipeId, notify: Option<Notify>) {
        if pipe.ring != self.ring_index {
            if let Some(n) = notify {
                self.reject(n, NtStatus::INVALID_HANDLE);
            }
            return;
        }
        let Some(p) = self.pipes.get_mut(pipe.index, pipe.gen) else {
            if let Some(n) = notify {
                self.reject(n, NtStatus::FILE_CLOSED);
            }
            return;
        };
        if let Some(n) = notify {
            p.close_waiters.push(n);
        }
        if p.closing {
            return;
        }
        p.closing = true;
        // Requests waiting for a cancelled one to drain end with the pipe.
        let deferred = std::mem::take(&mut p.deferred);
        // Shut the socket down both ways (as the seed does): whatever is in
        // flight on it completes, then the last completion releases the fd.
        crate::ring::shutdown(&p.fd);
        for (_, n) in deferred {
            self.reject(n, NtStatus::CANCELLED);
        }
        let Some(first) = self.pipes.get_mut(pipe.index, pipe.gen).map(|p| p.ops) else {
            return;
        };
        if first.is_none() {
            return self.release_pipe(pipe);
        }
        // Cancelling may finish ops (and unlink them): walk the list first.
        let mut ops = Vec::new();
        let mut cur = first;
        while let Some(k) = cur {
            ops.push(k);
            cur = self.ops.get_mut(k.0, k.1).and_then(|e| e.pipe_next);
        }
        for (i, g) in ops {
            self.cancel_op(i, g, NtStatus::CANCELLED);
        }
    }

    fn cancel_shared(&mut self, shared: &Arc<Shared>) {
        let k = shared.op_key.load(Ordering::SeqCst);
        if k == NO_OP {
            // Not started yet: an open waiting its turn ends now; anything
            // else sees the flag when it starts.
            let mine =
                |q: &QueuedOpen| matches!(&q.notify, Notify::Shared(s) if Arc::ptr_eq(s, shared));
            return self.reject_queued_opens(mine, NtStatus::CANCELLED);
        }
        let (i, g) = ((k >> 32) as u32, (k & 0xffff_ffff) as u32);
        let same = self.ops.get_mut(i, g).is_some_and(|e| match &e.notify {
            Some(Notify::Shared(s)) => Arc::ptr_eq(s, shared),
            _ => false,
        });
        if same {
            self.cancel_op(i, g, NtStatus::CANCELLED);
        }
    }

    /// Tells the caller `status` now and cancels the op's SQEs; the op entry
    /// stays until its last CQE so its buffers and fd outlive the kernel's use.
    fn cancel_op(&mut self, i: u32, g: u32, status: NtStatus) {
        let Some(e) = self.ops.get_mut(i, g) else {
            return;
        };
        if e.cancelled {
            return;
        }
        e.cancelled = true;
        if let Some(p) = e.pipe {
            // Until its SQEs are done, later requests on the pipe wait.
            if let Some(pe) = self.pipes.get_mut(p.index, p.gen) {
                pe.draining += 1;
            }
        }
        let Some(e) = self.ops.get_mut(i, g) else {
            return;
        };
        let timer = match &mut e.kind {
            Kind::Open { timer, .. } => timer.take(),
            _ => None,
        };
        let notify = e.notify.take();
        if let Some(t) = timer {
            self.drv.cancel(t);
        }
        self.cancel_chain((i, g));
        if let Some(n) = notify {
            self.reject(n, status);
        }
        // A request waiting only for a multishot chunk has no CQE to come.
        if self.ops.get_mut(i, g).is_some_and(|e| e.pending == 0) {
            self.finish((i, g));
        }
    }

    fn cancel_chain(&mut self, key: (u32, u32)) {
        let Some(e) = self.ops.get_mut(key.0, key.1) else {
            return;
        };
        if let Some(id) = e.chain_id(usize::from(e.chain_done)) {
            self.drv.cancel(id);
        }
    }

    fn disconnect(&mut self, session: u64) {
        self.reject_queued_opens(|q| q.user.session_id == session, NtStatus::CANCELLED);
        for (i, g) in self.ops.keys() {
            if self.ops.get_mut(i, g).is_some_and(|e| e.session == session) {
                self.cancel_op(i, g, NtStatus::CANCELLED);
            }
        }
        for (i, g) in self.pipes.keys() {
            if self
                .pipes
                .get_mut(i, g)
                .is_some_and(|p| p.session == session)
            {
                self.close_pipe(
                    PipeId {
                        ring: self.ring_index,
                        index: i,
                        gen: g,
                    },
                    None,
                );
            }
        }
    }
}

fn set_status(kind: &mut Kind, s: NtStatus) {
    let slot = match kind {
        Kind::Open { status, .. }
        | Kind::Transceive { status, .. }
        | Kind::Read { status, .. }
        | Kind::Write { status, .. }
        | Kind::Peek { status, .. }
        | Kind::WaitPipe { status, .. } => status,
        Kind::Multishot => return,
    };
    if slot.is_none() {
        *slot = Some(s);
    }
}

/// Builds the FSCTL_PIPE_PEEK output: the 16-byte header then the data that
/// fits. `room` is how much data fits; `data` may hold one byte more (the
/// probe for "cut short").
fn peek_reply(mut data: Vec<u8>, room: usize, eof: bool, avail: Option<usize>) -> Transfer {
    // `data` may hold one byte more than fits, which alone says "cut short".
    let available = avail.unwrap_or(0).max(data.len());
    data.truncate(room);
    let hdr = PeekReply {
        named_pipe_state: if eof {
            fsctl::PIPE_STATE_CLOSING
        } else {
            fsctl::PIPE_STATE_CONNECTED
        },
        read_data_available: available.min(u32::MAX as usize) as u32,
        number_of_messages: 0,
        message_length: 0,
    };
    Transfer {
        status: fsctl::peek_status(data.len(), available),
        data: hdr.encode_with_data(&data),
    }
}

/// A transceive's result by the seed's overflow rule
/// ([`fsctl::transceive_status`]); `more` (is more waiting?) is asked only
/// when the rule needs it, so the common case costs nothing.
/// The first `max_out` bytes of a pipe's pushback. Taking all of it hands
/// the buffer over instead of copying it (the common case: the rest of an
/// overflowed reply, read in one go).
fn take_pushback(pushback: &mut Vec<u8>, max_out: usize) -> Vec<u8> {
    if max_out >= pushback.len() {
        std::mem::take(pushback)
    } else {
        pushback.drain(..max_out).collect()
    }
}

fn transceive_result(max_out: usize, data: Vec<u8>, more: impl FnOnce() -> bool) -> Transfer {
    let filled = max_out < SMB_PIPE_MAX_MSGSIZE && data.len() >= max_out;
    let status = fsctl::transceive_status(clamp_u32(max_out), data.len(), filled && more());
    Transfer { status, data }
}

/// The receive of one transceive or read: from the driver's receive pool
/// when the request fits a pool buffer (no memory held while waiting),
/// else into a buffer of its own.
///
/// A pooled receive reads ahead: it asks for a whole pool buffer even when
/// `max_out` is smaller, because the pool buffer costs the same either way.
/// Whatever arrives beyond `max_out` goes to the pipe's pushback (see
/// [`Core::finish`]), so an overflowed reply's follow-up reads are served
/// from memory instead of one more receive each.
fn recv_op<D: OpDriver>(drv: &D, fd: Rc<OwnedFd>, max_out: usize, pooled: bool) -> Op {
    let pool_buf = drv.recv_pool_buf_bytes();
    if pooled && max_out > 0 && max_out <= pool_buf {
        Op::RecvPooled {
            fd,
            len: clamp_u32(pool_buf),
            flags: 0,
            data: Vec::new(),
        }
    } else {
        Op::Recv {
            fd,
            // A driver that grows the buffer as bytes arrive gets it empty:
            // a pipe waiting for its reply then holds no receive memory.
            buf: if drv.recv_allocates() {
                Vec::new()
            } else {
                Vec::with_capacity(max_out)
            },
            len: clamp_u32(max_out),
            flags: 0,
        }
    }
}

/// A one-byte `MSG_PEEK | MSG_DONTWAIT` receive: 1 = more is waiting.
fn more_probe(fd: Rc<OwnedFd>) -> Op {
    Op::Recv {
        fd,
        buf: Vec::with_capacity(1),
        len: 1,
        flags: crate::ring::driver::PEEK_NOWAIT,
    }
}

fn clamp_u32(n: usize) -> u32 {
    n.min(u32::MAX as usize) as u32
}
