//! The ring thread: one [`Core`] per ring owns the driver (io_uring's
//! [`Driver`], or the epoll fallback: any [`OpDriver`], monomorphised), the
//! table of open pipes and the table of requests in flight, and turns
//! requests into SQE chains and completions into results.
//!
//! Ownership: a pipe's socket is an `Rc<OwnedFd>` held by the pipe entry,
//! which is released only once the pipe is closed AND none of its op
//! entries is left; a request keeps its op entry (and so its place on the
//! pipe) until its last SQE completed, even when its caller was already told
//! `STATUS_CANCELLED`. So the descriptor is closed only after the last
//! operation on it had its final completion, and the pipe's ops name it by
//! number (`Sock::Kept`, no reference count touched per request) wherever
//! the driver allows; the epoll fallback's ops hold it (`Sock::Held`). An
//! open's ops, before the pipe entry exists, hold their socket. The driver
//! is dropped before the pipe entries (field order of `Core`): a ring that
//! ends with ops in flight waits for them before any socket closes.
//!
//! Sans-IO: the core makes no syscall (sockets, FIONREAD, shutdown and
//! close go through the [`OpDriver`]), reads no clock (the loop, [`run()`],
//! passes `now` with each event: [`Core::on_command`],
//! [`Core::on_completion`], [`Core::on_turn`]) and logs nothing. So the
//! whole state machine runs under the scripted `FakeDriver` in `tests.rs`.
//!
//! Files: `complete` (routing a completion, and what an op does once its
//! chain is over), `open` (opens and their deadline), `io` (how requests
//! start), `io_done` (what each I/O completion means), `input` (a
//! transceive's bytes, ready or held by a send), `overflow` (the overflow rule),
//! `pushback` (a pipe's bytes waiting for a reply, behind a read offset),
//! `multishot` (a pipe's multishot receive), `reply` (finishing and
//! results), `wait` (FSCTL_PIPE_WAIT), `cancel` (cancel, close,
//! disconnect).

mod cancel;
mod complete;
mod input;
mod io;
mod io_done;
mod multishot;
mod open;
mod overflow;
mod pushback;
mod reply;
mod run;
mod wait;
mod waiters;

#[cfg(test)]
mod fake;
#[cfg(test)]
mod tests;

use std::collections::VecDeque;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::command::{Callback, Command, Notify, Outcome, PipeIo, RingContext, RingCore};
use super::{EngineConfig, PipeId, Tree};
use crate::protocol::{fsctl, NetUserInfo, NpaIdentity, NpaLevel, NpaReply, NtStatus, PipeName};
use crate::ring::sys::prefetch_bytes;
use crate::ring::{Completion, Driver, Op, OpDriver, RegBuf, SendBuf, Sock, SqeId, Token};
use crate::slab::Slab;

use input::Input;
use pushback::Pushback;
pub(crate) use run::run;
use waiters::Waiters;

/// Replies of at least this size never report overflow (the seed's rule).
pub(crate) const SMB_PIPE_MAX_MSGSIZE: usize = fsctl::SMB_PIPE_MAX_MSGSIZE;

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
const ST_MULTISHOT: u8 = 11;
const ST_WAIT_DEADLINE: u8 = 12;

/// Bytes a pipe's multishot receive may pile up in its pushback with no
/// request waiting (replies to cancelled requests, unsolicited data) before
/// the receive is stopped; the rest then stays in the socket, and the
/// receive is re-armed once a request needs data and the pushback is empty.
const MULTISHOT_PUSHBACK_CAP: usize = 64 * 1024;

/// Largest `max_out` a request may ask for, and largest input of a
/// transceive or write (16 MiB, above SMB2's 8 MiB maximum read, write and
/// transact sizes); more is `STATUS_INVALID_PARAMETER`.
pub(crate) const MAX_IO_BYTES: usize = 16 << 20;

/// Timers longer than this (`Duration::MAX`: "no deadline") are armed for
/// this long: a year, which every clock and the kernel's timespec can hold.
const LONGEST_TIMER: Duration = Duration::from_secs(365 * 86_400);

/// The longest chain an op pushes (open: connect, hello, status).
const MAX_CHAIN: usize = 3;

/// The token of an SQE of op `key` at `step`: the one `user_data` layout
/// of `ring` ([`Token`]), the step as its kind (op table generations are
/// 24 bits, as a token keeps them).
fn token(key: (u32, u32), step: u8) -> u64 {
    Token::new(step, key.1, key.0).raw()
}

/// The key a request's [`Shared`](super::command::Shared) cell records
/// (`op_key`) once it started: the same layout, kind 0 (never `NO_OP`).
fn op_key(key: (u32, u32)) -> u64 {
    Token::new(0, key.1, key.0).raw()
}

/// The op key of an [`op_key`] value.
fn from_op_key(k: u64) -> (u32, u32) {
    let t = Token::from_raw(k);
    (t.index(), t.gen())
}

struct PipeEntry {
    fd: Rc<OwnedFd>,
    /// `fd`'s number, to name it without a look at its count.
    raw: RawFd,
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
    pushback: Pushback,
    /// Message mode (Samba dialect): bytes of the message being delivered
    /// still at the pushback's front (see overflow.rs); 0 otherwise.
    msg_left: usize,
    /// The pipe's multishot receive.
    multishot: Multishot,
    /// The multishot receive saw the end of the stream.
    eof: bool,
    /// Requests waiting for the multishot receive's chunks, in the order
    /// they started. While any waits, the pushback is empty: bytes that
    /// arrive go to the first waiter, what it cannot take to the next.
    waiters: Waiters,
}

impl PipeEntry {
    /// The socket as the pipe's ops name it: by descriptor where the
    /// driver runs such ops (the entry outlives them), else with a hold.
    fn sock(&self, kept: bool) -> Sock {
        if kept {
            Sock::Kept(self.raw)
        } else {
            Sock::Held(self.fd.clone())
        }
    }

    /// The deferred requests that may start now: none while a cancelled
    /// request still has SQEs in the kernel, a request waits for the
    /// multishot receive, or that receive is being stopped. `None` when
    /// there are none (the common case: no queue is moved or dropped).
    fn startable(&mut self) -> Option<VecDeque<(PipeIo, Notify)>> {
        let stopping = matches!(self.multishot, Multishot::Stopping(_));
        let ready = self.draining == 0 && self.waiters.is_empty() && !stopping;
        (ready && !self.deferred.is_empty()).then(|| std::mem::take(&mut self.deferred))
    }
}

enum Kind {
    Open {
        fd: Rc<OwnedFd>,
        name: PipeName,
        tree: Option<Tree>,
        timer: Option<SqeId>,
        status: Option<NtStatus>,
        /// Samba dialect only: the handshake's level, reply and retry.
        samba: Option<Box<SambaOpen>>,
    },
    Transceive {
        max_out: usize,
        /// The request: moved into the Send op while a slot holds it, or
        /// held here while a held send reads it (see [`Input`]).
        input: Input,
        /// Bytes of `input` the kernel confirmed sent.
        sent: usize,
        /// Registered mode: the slot holding the input, then the reply.
        reg: Option<Rc<RegBuf>>,
        from: ReplyFrom,
        reply: Reply,
        status: Option<NtStatus>,
    },
    Read {
        max_out: usize,
        /// [`ReplyFrom::Multishot`] (no SQE) or [`ReplyFrom::Chain`]; a read
        /// of pushed-back bytes ends when it starts.
        from: ReplyFrom,
        reply: Reply,
        status: Option<NtStatus>,
    },
    /// A pipe's multishot receive (no caller: its chunks go to the pipe's
    /// waiting request or pushback).
    Multishot,
    Write {
        data: SendBuf,
        sent: usize,
        /// The caller's byte count (message mode: `data` is framed).
        payload: usize,
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
        phase: WaitPhase,
        /// The timer that ends the wait at its deadline, while armed.
        timer: Option<SqeId>,
        /// `SUCCESS` once a connect was accepted.
        status: Option<NtStatus>,
    },
}

/// A pipe's multishot receive (its op entry while it exists).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Multishot {
    /// Not armed: the next request that waits for a chunk arms it.
    Off,
    /// Armed: its chunks go to the pipe's waiters, else the pushback.
    Armed((u32, u32)),
    /// Being cancelled (pushback over its cap, or a request needs a receive
    /// of its own); its final completion re-arms it for a waiter or starts
    /// the deferred requests.
    Stopping((u32, u32)),
}

impl Multishot {
    fn is_off(self) -> bool {
        self == Multishot::Off
    }

    /// The receive's op key while it exists.
    fn key(self) -> Option<(u32, u32)> {
        match self {
            Multishot::Off => None,
            Multishot::Armed(k) | Multishot::Stopping(k) => Some(k),
        }
    }
}

/// Where a transceive's or a read's reply comes from, decided when it
/// starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ReplyFrom {
    /// A receive of its own, linked after the send.
    Chain,
    /// The pipe's pushback, which already holds bytes: the request only
    /// sends, and takes its reply from there when the send is done.
    Pushback,
    /// The next chunk of the pipe's multishot receive: the request only
    /// sends (a read: no SQE at all) and waits among the pipe's `waiters`.
    Multishot,
    /// No reply at all: `max_out` 0 asks for a zero-length read, which the
    /// seed takes for the end of the stream (`recvcnt == 0`: `EPIPE`). The
    /// request sends its input, then ends `STATUS_PIPE_BROKEN`, on every
    /// backend and receive path alike.
    Nothing,
}

impl ReplyFrom {
    /// Whether a transceive's SEND goes alone, with no receive linked
    /// after it (its reply comes from elsewhere, or there is none).
    fn sends_alone(self) -> bool {
        self != ReplyFrom::Chain
    }
}

/// How far a receiving request's reply is.
#[derive(Debug, Default)]
enum Reply {
    /// Nothing received yet.
    #[default]
    Awaited,
    /// The pooled receive found the pool empty: when the chain is over,
    /// receive again with a buffer of its own.
    Retry,
    /// Received (a read-ahead may hold more than `max_out`), and whether
    /// more bytes wait behind it (see overflow.rs).
    Got { data: Vec<u8>, more: More },
}

impl Reply {
    /// The bytes received (none if nothing was) and whether more wait.
    fn into_data(self) -> (Vec<u8>, More) {
        match self {
            Reply::Got { data, more } => (data, more),
            Reply::Awaited | Reply::Retry => (Vec::new(), More::Unknown),
        }
    }
}

/// The overflow rule's question: are more bytes waiting behind a reply?
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum More {
    /// Not known (not asked: the rule may not need it).
    Unknown,
    Yes,
    No,
}

/// Where a WAIT is between its attempts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WaitPhase {
    /// A CONNECT is in flight.
    Connecting,
    /// The backoff timer before the next attempt is in flight.
    BackingOff,
    /// Decided (accepted, deadline, failure); what is in flight only drains.
    Over,
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
    /// A new request's entry, no SQE pushed yet; `pipe_next` is the
    /// pipe's op list it goes in front of.
    fn new(
        pipe: Option<PipeId>,
        session: u64,
        notify: Option<Notify>,
        pipe_next: Option<(u32, u32)>,
        kind: Kind,
    ) -> OpEntry {
        OpEntry {
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
        }
    }

    /// The id of the `i`-th SQE of the current chain, if there is one.
    fn chain_id(&self, i: usize) -> Option<SqeId> {
        (i < usize::from(self.chain_len)).then(|| self.chain[i])
    }

    /// The current chain is now `ids` (just pushed, none done).
    fn record_chain(&mut self, ids: &[SqeId]) {
        debug_assert!(ids.len() <= MAX_CHAIN);
        self.pending += ids.len() as u32;
        self.chain = [NO_SQE; MAX_CHAIN];
        for (slot, id) in self.chain.iter_mut().zip(ids) {
            *slot = *id;
        }
        self.chain_len = ids.len().min(MAX_CHAIN) as u8;
        self.chain_done = 0;
    }
}

/// The per-ring state, driven by [`run()`] on the ring's own thread.
pub(crate) struct Core<D: OpDriver = Driver> {
    /// Open op entries in the table (see `EngineConfig::max_opens_in_flight`).
    opening: usize,
    /// Opens waiting for their turn, in the order they came.
    queued_opens: VecDeque<QueuedOpen>,
    /// Before `pipes`, so dropped first (see the module's ownership note).
    drv: D,
    cfg: Arc<EngineConfig>,
    ring_index: usize,
    pipes: Slab<PipeEntry>,
    ops: Slab<OpEntry>,
    /// Scratch for `prefetch_upcoming`: the pipes the next chunks go to.
    upcoming_chunks: Vec<(u32, u32)>,
    file_ids: Arc<AtomicU64>,
    /// The time the loop last passed in (the core reads no clock itself).
    /// Only WAIT relies on it; the loop reads the clock for commands and,
    /// while `waits` > 0, for completions.
    now: Instant,
    /// WAIT ops in the table.
    waits: usize,
    /// Scratch for the SQE ids of the chain being pushed (no allocation).
    ids: Vec<SqeId>,
    stopping: bool,
    /// The kernel refused a multishot receive: pipes use one receive per
    /// request instead.
    multishot_disabled: bool,
    /// Samba dialect: the NPA level an open tries first (7 until an open
    /// succeeded at the other level; the engine has one socket dir, so this
    /// is the level remembered for it).
    npa_level: NpaLevel,
    /// Ring-thread callbacks running inside one another right now (a
    /// callback's next read served from the pushback calls the next
    /// callback inline).
    callback_depth: u32,
    /// The rest of the chunk being handled, still in the driver's lent
    /// pool buffer (from this offset on): it belongs at the front of this
    /// pipe's pushback (empty meanwhile). Only while the chunk's first
    /// share is delivered, so the callback that reads the rest at once
    /// copies it from there; anything else first moves it into the
    /// pushback (`settle_lent`).
    lent_rest: Option<(PipeId, usize)>,
    /// Callbacks that would have nested deeper than
    /// [`MAX_CALLBACK_DEPTH`]: they run when the current event is done.
    later: VecDeque<(Callback, Result<Outcome, NtStatus>)>,
    /// Receives that found the pool empty (-ENOBUFS) and ran again: with a
    /// buffer of their own, or (a multishot receive) re-armed for the
    /// requests waiting (published through the command queue).
    pool_fallbacks: u64,
}

/// Requests one pipe holds back (behind a cancelled request's SQEs, or a
/// receive being stopped) before more are refused with
/// `STATUS_INSUFFICIENT_RESOURCES`. SMB credits keep a client far below.
const MAX_DEFERRED: usize = 1024;

/// Opens one ring keeps waiting for their turn before more are refused with
/// `STATUS_INSUFFICIENT_RESOURCES`.
const MAX_QUEUED_OPENS: usize = 65_536;

/// How deep ring-thread callbacks may nest before the next one waits for
/// the current event to end (a bounded stack, whatever a callback does).
const MAX_CALLBACK_DEPTH: u32 = 16;

/// What a Samba-dialect open keeps besides the illumos fields: the level
/// it tries, what it needs to try once more at the other level, and the
/// reply it got.
struct SambaOpen {
    level: NpaLevel,
    /// This attempt is already the retry at the other level.
    retried: bool,
    /// The server refused the level (`STATUS_INVALID_LEVEL`, or Samba
    /// 4.17's close before any reply byte): try the other one.
    retry: bool,
    reply: Option<NpaReply>,
    user: Box<NetUserInfo>,
    identity: Option<Box<NpaIdentity>>,
}

/// An open waiting for its turn.
struct QueuedOpen {
    path: String,
    user: Box<NetUserInfo>,
    identity: Option<Box<NpaIdentity>>,
    tree: Option<Tree>,
    notify: Notify,
}

impl<D: OpDriver> Core<D> {
    /// Whether this engine's pipes carry messages (the Samba dialect).
    fn message_mode(&self) -> bool {
        self.cfg.dialect.is_message_mode()
    }
}

impl<D: OpDriver> RingCore for Core<D> {
    fn start_io(&mut self, pipe: PipeId, io: PipeIo, notify: Notify) {
        Core::start_io(self, pipe, io, notify)
    }
    fn ring_index(&self) -> usize {
        self.ring_index
    }
    fn recycle(&mut self, buf: Vec<u8>) {
        self.drv.recycle(buf)
    }
    fn read_append_now(
        &mut self,
        pipe: PipeId,
        buf: &mut Vec<u8>,
        max_out: usize,
    ) -> Option<usize> {
        Core::read_append_now(self, pipe, buf, max_out)
    }
    fn nest(&mut self) -> bool {
        if self.callback_depth >= MAX_CALLBACK_DEPTH {
            return false;
        }
        self.callback_depth += 1;
        true
    }
    fn unnest(&mut self) {
        self.callback_depth -= 1;
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
        file_ids: Arc<AtomicU64>,
        now: Instant,
    ) -> Core<D> {
        Core {
            opening: 0,
            queued_opens: VecDeque::new(),
            drv,
            cfg,
            ring_index,
            pipes: Slab::new(),
            ops: Slab::new(),
            upcoming_chunks: Vec::new(),
            file_ids,
            now,
            waits: 0,
            ids: Vec::with_capacity(MAX_CHAIN),
            stopping: false,
            multishot_disabled: false,
            npa_level: NpaLevel::V7,
            callback_depth: 0,
            lent_rest: None,
            later: VecDeque::new(),
            pool_fallbacks: 0,
        }
    }

    /// A command from another thread (or a ring-thread callback's).
    pub(crate) fn on_command(&mut self, c: Command, now: Instant) {
        self.now = now;
        self.command(c);
        self.run_later();
    }

    /// Starts fetching the entries the next batch of completions goes to
    /// (a chunk's pipe, another completion's op): with many busy pipes each
    /// is a cache miss, and these overlap instead of being waited for one
    /// completion at a time.
    #[inline(always)]
    pub(crate) fn prefetch_upcoming(&mut self) {
        let (pipes, ops) = (&self.pipes, &self.ops);
        let chunks = &mut self.upcoming_chunks;
        chunks.clear();
        self.drv.upcoming(&mut |token| {
            let t = Token::from_raw(token);
            if t.kind() == ST_MULTISHOT {
                // All its lines: the second step below reads its waiters,
                // the chunk its pushback and receive state too.
                prefetch_bytes(pipes.slot_ptr(t.index()), Slab::<PipeEntry>::SLOT_BYTES);
                chunks.push((t.index(), t.gen()));
            } else {
                // All its lines: a completion reads the op's counts, at
                // the entry's end, as well as its kind.
                prefetch_bytes(ops.slot_ptr(t.index()), Slab::<OpEntry>::SLOT_BYTES);
            }
        });
        // Second step: the op entries of the requests the chunks will go
        // to (named in the pipe entries fetched above), all their lines.
        for &(i, g) in chunks.iter() {
            if let Some(w) = pipes.get(i, g).and_then(|pe| pe.waiters.front()) {
                prefetch_bytes(ops.slot_ptr(w.0), Slab::<OpEntry>::SLOT_BYTES);
            }
        }
    }

    /// Not inlined into the loop: the completion is then read where the
    /// driver wrote it (inlined, it was first copied in 16-byte pieces out
    /// of fields just written one by one, which the CPU cannot forward, a
    /// stall per completion).
    #[inline(never)]
    pub(crate) fn on_completion(&mut self, c: Completion, now: Instant) {
        self.now = now;
        self.completion(c);
        self.run_later();
    }

    /// Work that waits for room rather than for an event: opens waiting for
    /// their turn start here. The loop calls it once per turn.
    pub(crate) fn on_turn(&mut self, now: Instant) {
        self.now = now;
        self.start_queued_opens();
        self.run_later();
    }

    /// Runs the callbacks that waited for the event to end (one after the
    /// other: each may nest up to the limit again). Inline: almost always
    /// none did.
    #[inline(always)]
    fn run_later(&mut self) {
        if !self.later.is_empty() {
            self.run_later_now();
        }
    }

    #[inline(never)]
    fn run_later_now(&mut self) {
        while let Some((f, res)) = self.later.pop_front() {
            self.call(f, res);
        }
    }

    fn call(&mut self, f: Callback, res: Result<Outcome, NtStatus>) {
        self.callback_depth += 1;
        f.call(&mut RingContext::new(self), res);
        self.callback_depth -= 1;
    }

    /// Shut down, and nothing left in flight: the loop may end.
    pub(crate) fn is_done(&self) -> bool {
        self.stopping && self.ops.len() == 0 && self.pipes.len() == 0
    }

    fn command(&mut self, c: Command) {
        match c {
            Command::Open {
                path,
                user,
                identity,
                tree,
                notify,
            } => {
                if self.queued_opens.len() >= MAX_QUEUED_OPENS {
                    return self.reject(notify, NtStatus::INSUFFICIENT_RESOURCES);
                }
                self.queued_opens.push_back(QueuedOpen {
                    path,
                    user,
                    identity,
                    tree,
                    notify,
                })
            }
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
            Command::Refused { notify } => self.reject(notify, NtStatus::INSUFFICIENT_RESOURCES),
            Command::Shutdown => {
                self.stopping = true;
                self.reject_queued_opens(|_| true, NtStatus::PIPE_NOT_AVAILABLE);
                self.end_sessions(|_| true);
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
            Notify::Callback(f) if self.callback_depth >= MAX_CALLBACK_DEPTH => {
                self.later.push_back((f, res))
            }
            Notify::Callback(f) => self.call(f, res),
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
        let shared = matches!(notify, Notify::Shared(_));
        let key = self.insert_op(pipe, session, Some(notify), kind);
        if shared {
            self.publish_op_key(key);
        }
        key
    }

    /// Tells a request's [`Shared`](super::command::Shared) cell, if it has
    /// one, which op entry is its (a cancel from another thread finds it so).
    fn publish_op_key(&self, key: (u32, u32)) {
        if let Some(Notify::Shared(s)) = self.ops.get(key.0, key.1).and_then(|e| e.notify.as_ref())
        {
            s.op_key.store(op_key(key), Ordering::SeqCst);
        }
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
        let pe = pipe.and_then(|p| self.pipes.get_mut(p.index, p.gen));
        let pipe_next = pe.as_ref().and_then(|pe| pe.ops);
        let key = self
            .ops
            .insert(OpEntry::new(pipe, session, notify, pipe_next, kind));
        if let Some(pe) = pe {
            pe.ops = Some(key);
        }
        key
    }

    /// Pushes `ops` as one linked chain of op `key` and records it as the
    /// op's current chain.
    fn push_chain(&mut self, key: (u32, u32), ops: impl IntoIterator<Item = (Op, u8)>) {
        let mut ids = std::mem::take(&mut self.ids);
        self.drv.push_chain(
            ops.into_iter().map(|(op, st)| (op, token(key, st))),
            &mut ids,
        );
        self.record_chain(key, &ids);
        self.ids = ids;
    }

    /// A chain of one op (a transceive's SEND, a multishot receive), with
    /// no iterator or scratch list of ids; its token names `by` (a
    /// multishot receive's SQE names its pipe: see [`Core::completion`]).
    fn push_single_as(&mut self, key: (u32, u32), by: (u32, u32), op: Op, st: u8) {
        let id = self.drv.push(op, token(by, st));
        self.record_chain(key, &[id]);
    }

    /// Op `key`'s current chain is now `ids` (just pushed, none done).
    fn record_chain(&mut self, key: (u32, u32), ids: &[SqeId]) {
        if let Some(e) = self.ops.get_mut(key.0, key.1) {
            e.record_chain(ids);
        }
    }

    fn push_one(&mut self, key: (u32, u32), op: Op, st: u8) -> SqeId {
        let id = self.drv.push(op, token(key, st));
        if let Some(e) = self.ops.get_mut(key.0, key.1) {
            e.pending += 1;
        }
        id
    }
}

fn clamp_u32(n: usize) -> u32 {
    n.min(u32::MAX as usize) as u32
}
