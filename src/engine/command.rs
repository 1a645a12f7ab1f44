//! What travels between caller threads and a ring thread: the commands
//! (with how each one's result is delivered), the queue they go through,
//! the result cell a [`Request`](super::Request) waits on, and the
//! [`RingContext`] that ring-thread callbacks get.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::task::Waker;
use std::time::Duration;

use bytes::Bytes;

use super::{OpenInfo, PipeId, Transfer, Tree};
use crate::inline_box::InlineOnce;
use crate::protocol::{NetUserInfo, NpaIdentity, NtStatus, PipeName};
use crate::ring::{SendBuf, WakeFd};

/// What a finished request produced, before typing at the API edge.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// Boxed: an open is rare, and every transfer's result is moved a few
    /// times on its way to the caller (88 bytes unboxed, 40 boxed).
    Opened {
        pipe: PipeId,
        info: Box<OpenInfo>,
    },
    Transfer(Transfer),
    Written(usize),
    Done,
}

/// What an inline [`Callback`] is called with: the ring (its
/// [`RingContext`] is made around it for the caller's function) and the
/// result.
type InlineCallback = InlineOnce<dyn RingCore, Result<Outcome, NtStatus>>;

/// A [`Callback`] too large to keep in place.
type BoxedCallback = Box<dyn FnOnce(&mut RingContext<'_>, Result<Outcome, NtStatus>) + Send>;

/// A ring-thread callback: runs once, on the ring thread, with access to
/// the ring. Kept in place when small (most are: a few handles and a
/// timestamp), so it travels inside the request's entry instead of a heap
/// block of its own (see `crate::inline_box`).
pub(crate) struct Callback(CallbackRepr);

enum CallbackRepr {
    Inline(InlineCallback),
    Boxed(BoxedCallback),
}

impl Callback {
    pub(crate) fn new(
        f: impl FnOnce(&mut RingContext<'_>, Result<Outcome, NtStatus>) + Send + 'static,
    ) -> Callback {
        let inline =
            move |core: &mut (dyn RingCore + 'static), res| f(&mut RingContext { core }, res);
        Callback(match InlineOnce::new(inline) {
            Ok(b) => CallbackRepr::Inline(b),
            Err(inline) => CallbackRepr::Boxed(Box::new(move |ctx: &mut RingContext<'_>, res| {
                inline(ctx.core, res)
            })),
        })
    }

    /// Runs the callback (its only run: it is consumed).
    #[inline(always)]
    pub(crate) fn call(self, ctx: &mut RingContext<'_>, res: Result<Outcome, NtStatus>) {
        match self.0 {
            CallbackRepr::Inline(b) => b.call(ctx.core, res),
            CallbackRepr::Boxed(b) => b(ctx, res),
        }
    }

    /// Whether the callback is kept in place (for tests).
    #[cfg(test)]
    pub(crate) fn is_inline(&self) -> bool {
        matches!(self.0, CallbackRepr::Inline(_))
    }
}

pub(crate) enum Notify {
    Shared(Arc<Shared>),
    Callback(Callback),
}

/// What a request asks of a pipe.
#[derive(Debug)]
pub(crate) enum PipeIo {
    Transceive { input: SendBuf, max_out: usize },
    Read { max_out: usize },
    Write { data: SendBuf },
    Peek { max_out: usize },
}

/// Messages from other threads to a ring thread.
pub(crate) enum Command {
    Open {
        path: String,
        user: Box<NetUserInfo>,
        /// Samba dialect: the identity to send instead of the one mapped
        /// from `user`.
        identity: Option<Box<NpaIdentity>>,
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
    /// A request with a ring-thread callback refused because the queue was
    /// full: what it carried is dropped at once, the callback hears
    /// `STATUS_INSUFFICIENT_RESOURCES` on the ring thread.
    Refused {
        notify: Notify,
    },
    Shutdown,
}

/// Commands a ring's queue holds (not yet taken by the ring thread) before
/// it refuses new requests with `STATUS_INSUFFICIENT_RESOURCES` (the
/// default of `EngineConfig::max_queued_commands`).
pub const MAX_QUEUED_COMMANDS: usize = 1 << 20;

/// The queue other threads push commands into, bounded: once `cap`
/// commands wait for the ring thread, a new request (open, I/O, WAIT) ends
/// `STATUS_INSUFFICIENT_RESOURCES` at once instead of growing the queue
/// (with a ring-thread callback: a `Refused` marker without the request's
/// data, answered on the ring thread). Commands that end or release
/// something (cancel, close, session disconnect, shutdown) are always
/// taken: a cancel is queued at most once per request, a close once per pipe.
pub(crate) struct CommandQueue {
    cmds: Mutex<Vec<Command>>,
    pending: AtomicBool,
    cap: usize,
    refused: AtomicU64,
    /// The ring's `Core::pool_fallbacks`, as the loop last published it.
    pool_fallbacks: AtomicU64,
    pub(crate) wake: Arc<WakeFd>,
}

impl CommandQueue {
    #[cfg(test)]
    pub(crate) fn new(wake: Arc<WakeFd>) -> CommandQueue {
        CommandQueue::with_cap(wake, MAX_QUEUED_COMMANDS)
    }

    pub(crate) fn with_cap(wake: Arc<WakeFd>, cap: usize) -> CommandQueue {
        CommandQueue {
            cmds: Mutex::new(Vec::new()),
            pending: AtomicBool::new(false),
            cap: cap.max(1),
            refused: AtomicU64::new(0),
            pool_fallbacks: AtomicU64::new(0),
            wake,
        }
    }

    pub(crate) fn push(&self, c: Command) {
        {
            let mut q = lock(&self.cmds);
            let c = if q.len() >= self.cap {
                match self.refuse(c) {
                    Some(c) => c,
                    None => return,
                }
            } else {
                c
            };
            q.push(c);
        }
        self.pending.store(true, Ordering::SeqCst);
        self.wake.wake();
    }

    /// A command that arrived with the queue full: a request with a shared
    /// result ends now (`None`); a request with a callback becomes a small
    /// `Refused` marker; anything else is queued as it is.
    fn refuse(&self, c: Command) -> Option<Command> {
        let notify = match c {
            Command::Open { notify, .. }
            | Command::Io { notify, .. }
            | Command::WaitPipe { notify, .. } => notify,
            other => return Some(other),
        };
        let n = self.refused.fetch_add(1, Ordering::Relaxed) + 1;
        if n.is_power_of_two() {
            tracing::warn!(
                "opipe: command queue full ({} waiting): {n} requests refused with STATUS_INSUFFICIENT_RESOURCES",
                self.cap
            );
        }
        match notify {
            Notify::Shared(s) => {
                // Nothing was opened or started: nothing to release.
                let _ = s.complete(Err(NtStatus::INSUFFICIENT_RESOURCES));
                None
            }
            notify @ Notify::Callback(_) => Some(Command::Refused { notify }),
        }
    }

    /// Requests refused because the queue was full, since the start.
    pub(crate) fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// The ring loop publishes its count of receive-pool fallbacks.
    pub(crate) fn publish_pool_fallbacks(&self, n: u64) {
        self.pool_fallbacks.store(n, Ordering::Relaxed);
    }

    pub(crate) fn pool_fallbacks(&self) -> u64 {
        self.pool_fallbacks.load(Ordering::Relaxed)
    }

    pub(crate) fn take(&self, into: &mut Vec<Command>) {
        // A plain load first: the swap is a locked instruction, and the
        // ring takes this path once per turn, mostly with nothing queued.
        // A flag set meanwhile is not lost: the loop checks it again
        // (`is_pending`, sequentially consistent) before it parks.
        if self.pending.load(Ordering::Relaxed) && self.pending.swap(false, Ordering::SeqCst) {
            std::mem::swap(
                &mut *self.cmds.lock().unwrap_or_else(|e| e.into_inner()),
                into,
            );
        }
    }

    pub(crate) fn is_pending(&self) -> bool {
        self.pending.load(Ordering::SeqCst)
    }
}

/// The ring thread's context, given to ring-thread callbacks so they can
/// start the next request without leaving the thread.
pub struct RingContext<'a> {
    core: &'a mut (dyn RingCore + 'static),
}

impl<'a> RingContext<'a> {
    pub(crate) fn new(core: &'a mut (dyn RingCore + 'static)) -> RingContext<'a> {
        RingContext { core }
    }
}

/// What a [`RingContext`] needs of its ring's core, whatever its driver.
pub(crate) trait RingCore {
    fn start_io(&mut self, pipe: PipeId, io: PipeIo, notify: Notify);
    fn ring_index(&self) -> usize;
    /// Takes back a buffer a callback is done with (see
    /// [`RingContext::read_append_with`]).
    fn recycle(&mut self, buf: Vec<u8>);
    /// A read that the bytes already received answer at once, appended
    /// to `buf` straight from where they are; `None`: it needs the
    /// regular way (an op, or a wait).
    fn read_append_now(&mut self, pipe: PipeId, buf: &mut Vec<u8>, max_out: usize)
        -> Option<usize>;
    /// One callback level deeper, if the limit allows (see `unnest`).
    fn nest(&mut self) -> bool;
    fn unnest(&mut self);
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
    Callback::new(move |ctx, res| f(ctx, res.and_then(Outcome::into_transfer)))
}

impl RingContext<'_> {
    /// Starts a transceive on `pipe` (which must live on this ring) whose
    /// result is given to `f` on this ring thread.
    pub fn transceive_with(
        &mut self,
        pipe: PipeId,
        input: impl Into<Bytes> + 'static,
        max_out: usize,
        f: impl FnOnce(&mut RingContext<'_>, Result<Transfer, NtStatus>) + Send + 'static,
    ) {
        let cb = transfer_callback(f);
        self.core.start_io(
            pipe,
            PipeIo::Transceive {
                input: SendBuf::from_input(input),
                max_out,
            },
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
        let cb = Callback::new(move |ctx, res| {
            f(ctx, res.and_then(Outcome::into_transfer).map(|t| t.data))
        });
        self.core
            .start_io(pipe, PipeIo::Read { max_out }, Notify::Callback(cb));
    }

    /// [`RingContext::read_with`] that APPENDS what it reads to `buf`: `f`
    /// gets `buf` back with the count appended (on failure `buf` as it
    /// was, and the status). The buffer the bytes came in goes back to the
    /// ring for a later receive, so reading the rest of an overflowed
    /// reply behind its first part costs one copy and no allocation.
    pub fn read_append_with(
        &mut self,
        pipe: PipeId,
        mut buf: Vec<u8>,
        max_out: usize,
        f: impl FnOnce(&mut RingContext<'_>, Vec<u8>, Result<usize, NtStatus>) + Send + 'static,
    ) {
        // Bytes already here: copied once, into `buf`, and `f` called now
        // (nested no deeper than other callbacks).
        if self.core.nest() {
            if let Some(n) = self.core.read_append_now(pipe, &mut buf, max_out) {
                f(self, buf, Ok(n));
                return self.core.unnest();
            }
            self.core.unnest();
        }
        self.read_with(pipe, max_out, move |ctx, res| match res {
            Ok(data) => {
                buf.extend_from_slice(&data);
                let n = data.len();
                ctx.core.recycle(data);
                f(ctx, buf, Ok(n))
            }
            Err(s) => f(ctx, buf, Err(s)),
        })
    }

    /// Index of this ring in its engine.
    pub fn ring_index(&self) -> usize {
        self.core.ring_index()
    }
}

/// No op slot assigned yet.
pub(crate) const NO_OP: u64 = u64::MAX;

pub(crate) enum State {
    Pending(Option<Waker>),
    Done(Result<Outcome, NtStatus>),
    Taken,
}

/// The cell shared by a request's caller and the ring thread.
pub(crate) struct Shared {
    pub(crate) state: Mutex<State>,
    pub(crate) cond: Condvar,
    /// Set by a cancel before the ring thread saw the request.
    pub(crate) cancel_requested: AtomicBool,
    /// The ring-side op key once the ring thread started the request.
    pub(crate) op_key: AtomicU64,
    /// The caller dropped the request without taking its result.
    pub(crate) abandoned: AtomicBool,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("op_key", &self.op_key)
            .finish()
    }
}

impl Shared {
    pub(crate) fn new() -> Arc<Shared> {
        Arc::new(Shared {
            state: Mutex::new(State::Pending(None)),
            cond: Condvar::new(),
            cancel_requested: AtomicBool::new(false),
            op_key: AtomicU64::new(NO_OP),
            abandoned: AtomicBool::new(false),
        })
    }

    /// Delivers the result. Returns it back when the caller abandoned the
    /// request, so the ring thread can release what it holds (an opened pipe).
    pub(crate) fn complete(
        &self,
        res: Result<Outcome, NtStatus>,
    ) -> Option<Result<Outcome, NtStatus>> {
        let waker = {
            let mut st = lock(&self.state);
            if self.abandoned.load(Ordering::Relaxed) {
                return Some(res);
            }
            match std::mem::replace(&mut *st, State::Done(res)) {
                State::Pending(w) => w,
                // Completed twice: keep the first result.
                other => {
                    let second = std::mem::replace(&mut *st, other);
                    return match second {
                        State::Done(r) => Some(r),
                        _ => None,
                    };
                }
            }
        };
        self.cond.notify_all();
        if let Some(w) = waker {
            w.wake();
        }
        None
    }

    /// Whether the result has been delivered.
    pub(crate) fn is_done(&self) -> bool {
        !matches!(*lock(&self.state), State::Pending(_))
    }

    /// The delivered result, taken (tests of the core).
    #[cfg(test)]
    pub(crate) fn try_take(&self) -> Option<Result<Outcome, NtStatus>> {
        let mut st = lock(&self.state);
        match std::mem::replace(&mut *st, State::Taken) {
            State::Done(r) => Some(r),
            other => {
                *st = other;
                None
            }
        }
    }
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn io(shared: &Arc<Shared>) -> Command {
        Command::Io {
            pipe: PipeId {
                ring: 0,
                index: 0,
                gen: 0,
            },
            io: PipeIo::Read { max_out: 1 },
            notify: Notify::Shared(shared.clone()),
        }
    }

    #[test]
    fn a_full_queue_refuses_requests_and_keeps_control_commands() {
        let wake = Arc::new(WakeFd::new().expect("eventfd"));
        let q = CommandQueue::with_cap(wake, 2);
        let (a, b, c) = (Shared::new(), Shared::new(), Shared::new());
        q.push(io(&a));
        q.push(io(&b));
        q.push(io(&c));
        assert!(!a.is_done() && !b.is_done());
        assert!(matches!(
            c.try_take(),
            Some(Err(NtStatus::INSUFFICIENT_RESOURCES))
        ));
        q.push(Command::Cancel { shared: a.clone() });
        q.push(Command::Shutdown);
        let cb = Callback::new(|_, _| {});
        q.push(Command::Io {
            pipe: PipeId {
                ring: 0,
                index: 0,
                gen: 0,
            },
            io: PipeIo::Write {
                data: vec![0; 1000].into(),
            },
            notify: Notify::Callback(cb),
        });
        assert_eq!(q.refused(), 2);
        let mut got = Vec::new();
        q.take(&mut got);
        let kinds: Vec<_> = got
            .iter()
            .map(|c| match c {
                Command::Io { .. } => "io",
                Command::Cancel { .. } => "cancel",
                Command::Shutdown => "shutdown",
                Command::Refused { .. } => "refused",
                _ => "other",
            })
            .collect();
        assert_eq!(kinds, ["io", "io", "cancel", "shutdown", "refused"]);
        // Taken: room again.
        let d = Shared::new();
        q.push(io(&d));
        assert!(!d.is_done());
    }
}
