//! What both service event loops share: the [`Session`] and [`Acceptor`]
//! traits a service plugs in, the loop's configuration and counters, a
//! connection's [`Phase`], the memory [`Budget`], and the deadline,
//! eviction and verdict helpers. Each loop ([`uring`](super::uring),
//! [`epoll`](super::epoll)) imports this file and not the other loop.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::slab::Slab;

/// What a session wants after it was fed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Keep the connection.
    Continue,
    /// Stop receiving, send what is queued, then close.
    Close,
    /// Close now; queued output is dropped.
    Abort,
}

/// Why a connection was closed, as told to [`Session::on_close`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// The peer closed its end (a receive returned 0).
    PeerClosed,
    /// A receive or send failed with this errno.
    Error(i32),
    /// The session asked for it ([`Verdict::Close`] or [`Verdict::Abort`]).
    Session,
    /// The session's deadline passed and it chose to close.
    Deadline,
    /// The service is shutting down.
    Shutdown,
    /// Still in its handshake when the process ran out of descriptors:
    /// closed, the oldest first, to let a new connection in.
    Evicted,
}

/// One connection's protocol logic. Called only on the loop's thread.
pub trait Session {
    /// Bytes received, in order. Append replies to `out`.
    fn on_data(&mut self, data: &[u8], out: &mut Vec<u8>) -> Verdict;

    /// The instant at which [`on_deadline`](Self::on_deadline) is due, if
    /// any. Asked after the connection is accepted and again when the
    /// recorded instant passes (so a later answer postpones it).
    fn deadline(&self) -> Option<Instant> {
        None
    }

    /// The deadline passed.
    fn on_deadline(&mut self, _out: &mut Vec<u8>) -> Verdict {
        Verdict::Abort
    }

    /// True while the session holds input it has not answered yet because
    /// it stopped producing output (a session should stop appending to
    /// `out` once it holds a batch, rather than turn a small request burst
    /// into unbounded output). The loop then stops receiving from this
    /// connection and calls [`on_writable`](Self::on_writable) each time
    /// the output has drained below the low-water mark.
    fn has_backlog(&self) -> bool {
        false
    }

    /// The output drained while [`has_backlog`](Self::has_backlog) was
    /// true: produce the next batch.
    fn on_writable(&mut self, _out: &mut Vec<u8>) -> Verdict {
        Verdict::Continue
    }

    /// `bytes` of output reached the socket.
    fn on_sent(&mut self, _bytes: usize) {}

    /// The connection is closed (its fd is closed right after this call).
    fn on_close(&mut self, _reason: CloseReason) {}

    /// Its [`ConnWaker`] was woken (from any thread): produce what is
    /// ready. Called on the loop's thread, once per batch of wakes, while
    /// the connection is open or draining; never after
    /// [`on_close`](Self::on_close).
    fn on_wake(&mut self, _out: &mut Vec<u8>) -> Verdict {
        Verdict::Continue
    }
}

/// Makes a [`Session`] for each accepted connection.
pub trait Acceptor {
    /// The session type.
    type Session: Session;

    /// A connection arrived on listener number `listener` (its index in the
    /// list given to the loop); `conn` is its socket, e.g. for the peer's
    /// credentials. `None` closes it at once, before anything is read.
    fn accept(&mut self, listener: usize, conn: BorrowedFd<'_>) -> Option<Self::Session>;

    /// [`accept`](Self::accept) for sessions that are woken from other
    /// threads: `waker` makes the connection's [`ConnWaker`] (only when
    /// asked, so a service that never wakes pays nothing). By default the
    /// waker is ignored and [`accept`](Self::accept) runs.
    fn accept_with_waker(
        &mut self,
        listener: usize,
        conn: BorrowedFd<'_>,
        waker: WakerSlot<'_>,
    ) -> Option<Self::Session> {
        let _ = waker;
        self.accept(listener, conn)
    }
}

// ---------------------------------------------------------------------------
// Waking a connection from another thread.

/// A loop's queue of woken connections and the eventfd that tells the loop
/// to look at it.
#[derive(Debug)]
pub(crate) struct WakeQueue {
    /// Nonblocking eventfd the loop watches (readable while signalled).
    fd: OwnedFd,
    /// The fd was written since the loop last cleared this: further wakes
    /// only queue (one write per batch).
    signalled: AtomicBool,
    ready: Mutex<Vec<Arc<WakeEntry>>>,
}

impl WakeQueue {
    pub(crate) fn new() -> std::io::Result<Arc<WakeQueue>> {
        // SAFETY: eventfd takes no pointers; it returns a new fd or -1.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Arc::new(WakeQueue {
            // SAFETY: `fd` was just returned by eventfd; nobody else owns it.
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
            signalled: AtomicBool::new(false),
            ready: Mutex::new(Vec::new()),
        }))
    }

    /// The eventfd the loop polls.
    pub(crate) fn raw_fd(&self) -> i32 {
        self.fd.as_raw_fd()
    }

    /// The connections woken since the last call, as (index, generation).
    /// Each is woken again by its next wake. Order: empty the eventfd, clear
    /// the signal, then take the queue. A waker that finds the signal clear
    /// writes the eventfd after that, so the loop comes back; one that finds
    /// it set pushed before the clear, so its entry is in this take. (The
    /// other order could clear a signal whose write was just drained, and
    /// no wake would ever write again.)
    pub(crate) fn take(&self) -> Vec<(u32, u32)> {
        let mut n = [0u8; 8];
        // SAFETY: reads at most 8 bytes into `n`, which lives for the call;
        // the fd is nonblocking (EAGAIN when nothing was written).
        let _ = unsafe { libc::read(self.fd.as_raw_fd(), n.as_mut_ptr().cast(), n.len()) };
        self.signalled.store(false, Ordering::SeqCst);
        let list = std::mem::take(&mut *self.ready.lock().unwrap_or_else(|e| e.into_inner()));
        list.into_iter()
            .map(|e| {
                e.queued.store(false, Ordering::SeqCst);
                (e.idx, e.gen)
            })
            .collect()
    }

    fn push(&self, e: Arc<WakeEntry>) {
        self.ready.lock().unwrap_or_else(|p| p.into_inner()).push(e);
        if !self.signalled.swap(true, Ordering::SeqCst) {
            let one = 1u64.to_ne_bytes();
            // SAFETY: writes 8 bytes from `one`, which lives for the call.
            // A full counter (EAGAIN) is still readable: nothing is lost.
            let _ = unsafe { libc::write(self.fd.as_raw_fd(), one.as_ptr().cast(), one.len()) };
        }
    }
}

#[derive(Debug)]
struct WakeEntry {
    /// Weak: a queued entry holds its queue otherwise, and wakes that come
    /// after the loop ended would keep both (and the eventfd) alive.
    queue: std::sync::Weak<WakeQueue>,
    idx: u32,
    gen: u32,
    /// In the queue already (a second wake before the loop looked is free).
    queued: AtomicBool,
}

impl std::task::Wake for WakeEntry {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        let Some(queue) = self.queue.upgrade() else {
            // The loop is gone.
            return;
        };
        if !self.queued.swap(true, Ordering::SeqCst) {
            queue.push(self.clone());
        }
    }
}

/// Wakes one connection of a service loop from any thread: the loop then
/// calls its session's [`Session::on_wake`]. Cheap to clone; a wake of a
/// connection that has closed meanwhile (even if its slot was reused) is
/// dropped by the loop (the key carries a generation).
#[derive(Debug, Clone)]
pub struct ConnWaker {
    entry: Arc<WakeEntry>,
}

impl ConnWaker {
    /// Wakes the connection (several wakes before the loop runs count as one).
    pub fn wake(&self) {
        std::task::Wake::wake_by_ref(&self.entry);
    }

    /// The same, as a [`std::task::Waker`] (e.g. to poll engine requests).
    pub fn waker(&self) -> std::task::Waker {
        std::task::Waker::from(self.entry.clone())
    }
}

/// What [`Acceptor::accept_with_waker`] gets to make a connection's
/// [`ConnWaker`] with.
#[derive(Debug)]
pub struct WakerSlot<'a> {
    queue: &'a Arc<WakeQueue>,
    idx: u32,
    gen: u32,
}

impl<'a> WakerSlot<'a> {
    pub(crate) fn new(queue: &'a Arc<WakeQueue>, idx: u32, gen: u32) -> Self {
        WakerSlot { queue, idx, gen }
    }

    /// The waker of the connection being accepted.
    pub fn waker(&self) -> ConnWaker {
        ConnWaker {
            entry: Arc::new(WakeEntry {
                queue: Arc::downgrade(self.queue),
                idx: self.idx,
                gen: self.gen,
                queued: AtomicBool::new(false),
            }),
        }
    }
}

/// An accepted connection (from listener `conn.0`, counted as accepted)
/// offered to the acceptor with the waker of the slot it would take;
/// `full`: refused without asking (at the connection limit, shutting
/// down). The slot and the session, or `None` (counted as refused; the
/// caller closes the connection).
pub(crate) fn admit<A: Acceptor, C>(
    acceptor: &mut A,
    conns: &mut Slab<C>,
    wake: &Arc<WakeQueue>,
    counters: &LoopCounters,
    conn: (usize, BorrowedFd<'_>),
    full: bool,
) -> Option<(u32, u32, A::Session)> {
    counters.accepted.fetch_add(1, Ordering::Relaxed);
    let admitted = if full {
        None
    } else {
        let (idx, gen) = conns.vacant();
        let slot = WakerSlot::new(wake, idx, gen);
        let session = acceptor.accept_with_waker(conn.0, conn.1, slot);
        if session.is_none() {
            conns.release(idx);
        }
        session.map(|s| (idx, gen, s))
    };
    if admitted.is_none() {
        counters.refused.fetch_add(1, Ordering::Relaxed);
    }
    admitted
}

/// Sizes and limits of one event loop.
#[derive(Debug, Clone)]
pub struct LoopConfig {
    /// Submission queue entries (the completion queue gets 4 times more).
    pub sq_entries: u32,
    /// Number of provided receive buffers (a power of two, <= 32768).
    pub recv_buffers: u16,
    /// Size of each receive buffer in bytes.
    pub recv_buffer_bytes: u32,
    /// Unsent output above which a connection stops being read.
    pub output_high_water_bytes: usize,
    /// Unsent output below which a paused connection is read again.
    pub output_low_water_bytes: usize,
    /// Connections this loop holds at most; more are closed on accept.
    pub max_connections: usize,
    /// Output bytes this loop's connections may hold in all (the capacity
    /// of their output and own receive buffers). Above 7/8 of it only
    /// connections with no output waiting are read; above it none, and no
    /// session is asked for more output, until back at 3/4 resp. 7/8.
    /// Connections are paused, never dropped.
    pub max_buffered_bytes: usize,
}

impl Default for LoopConfig {
    fn default() -> Self {
        LoopConfig {
            sq_entries: 2048,
            recv_buffers: 512,
            recv_buffer_bytes: 16 * 1024,
            output_high_water_bytes: 256 * 1024,
            output_low_water_bytes: 64 * 1024,
            max_connections: 1 << 20,
            max_buffered_bytes: DEFAULT_MAX_BUFFERED_BYTES,
        }
    }
}

/// The default of [`LoopConfig::max_buffered_bytes`] (256 MiB).
pub const DEFAULT_MAX_BUFFERED_BYTES: usize = 256 << 20;

/// Counters of the loop machinery, shared by every loop of a service.
#[derive(Debug, Default)]
pub struct LoopCounters {
    /// Connections accepted from the kernel.
    pub accepted: AtomicU64,
    /// Connections closed at once because the loop was full or the acceptor said no.
    pub refused: AtomicU64,
    /// Multishot receives ended by an empty buffer ring (each followed by
    /// one receive into the connection's own buffer).
    pub recv_no_buffers: AtomicU64,
    /// Times a connection stopped being read because its output was full.
    pub backpressure_pauses: AtomicU64,
    /// Accept completions that failed (and were re-armed).
    pub accept_errors: AtomicU64,
    /// Bytes received on connections.
    pub bytes_in: AtomicU64,
    /// Bytes sent on connections.
    pub bytes_out: AtomicU64,
    /// Bytes the connections of every loop hold now (see
    /// [`LoopConfig::max_buffered_bytes`]).
    pub buffered_bytes: AtomicU64,
    /// The most `buffered_bytes` has been.
    pub buffered_bytes_peak: AtomicU64,
    /// Times a loop stopped reading because its connections held more than
    /// its budget.
    pub budget_pauses: AtomicU64,
    /// Connections still in their handshake closed to make room for a new
    /// one when the process ran out of descriptors.
    pub evicted: AtomicU64,
}

/// Where a connection is in its life (both service loops).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    Open,
    /// Stop reading, flush, close.
    Draining,
    /// Stop everything, close now.
    Aborting,
}

/// A connection of either service loop, as the close rules and the
/// deadline heap see it.
pub(crate) trait ConnPhase {
    /// The connection's phase and the reason it is closing.
    fn phase_and_reason(&mut self) -> (&mut Phase, &mut CloseReason);
    /// Its session's deadline, if it has one.
    fn deadline(&self) -> Option<Instant>;
    /// Runs its session's deadline (output goes where the loop sends from).
    fn on_deadline(&mut self) -> Verdict;
    /// When it was accepted.
    fn accepted_at(&self) -> Instant;
}

/// How soon accepts are retried after a connection was evicted to make room.
pub(crate) const EVICT_RETRY: Duration = Duration::from_millis(2);
/// A connection in its handshake is evicted only once it is this old: an
/// honest client sends its open message right after connecting, so a
/// handshake still unfinished after this is a slow or idle client.
pub(crate) const EVICT_MIN_AGE: Duration = Duration::from_millis(250);

/// A loop's budget of buffered bytes ([`LoopConfig::max_buffered_bytes`]):
/// what its connections hold in all (the capacity of their output and own
/// receive buffers). Shared by both loops. Three levels:
///
/// * up to 7/8 of the limit, every connection is read;
/// * above it, only connections with no reply waiting are read (a client
///   that reads its replies goes on; one that does not holds what it has
///   and gets no more), until the total is back at 3/4;
/// * above the limit, no connection is read and no session is asked for
///   more output, until the total is back at 7/8.
///
/// Connections are paused, never dropped.
#[derive(Debug)]
pub(crate) struct Budget {
    limit: usize,
    held: usize,
    /// 0, 1 or 2, as above.
    level: u8,
    /// `level` changed since the loop last looked ([`Budget::take_changed`]).
    changed: bool,
    /// The most `held` has been since the heap was last trimmed.
    peak_since_trim: usize,
    /// Connections closed since the heap was last trimmed.
    closed_since_trim: usize,
    counters: Arc<LoopCounters>,
}

/// Free heap memory is given back to the system once a loop's buffered
/// bytes fell from at least this much to a quarter of it.
const TRIM_AFTER_BYTES: usize = 16 << 20;

impl Budget {
    pub(crate) fn new(limit: usize, counters: Arc<LoopCounters>) -> Budget {
        Budget {
            limit,
            held: 0,
            level: 0,
            changed: false,
            peak_since_trim: 0,
            closed_since_trim: 0,
            counters,
        }
    }

    /// True when a connection with `queued` unsent output bytes may be
    /// read and asked for more output.
    pub(crate) fn allows(&self, queued: usize) -> bool {
        match self.level {
            0 => true,
            1 => queued == 0,
            _ => false,
        }
    }

    /// A connection closed (its charge is set to 0 separately).
    pub(crate) fn closed(&mut self) {
        self.closed_since_trim += 1;
    }

    /// Input a connection holds back until the budget lets it produce
    /// output (`charge`) is now `bytes`: counted in the stats, not in the
    /// levels. It cannot grow past what the receives in flight when the
    /// connection was paused brought in (the receive ring), and it is only
    /// drained by the levels coming down, so it must not keep them up.
    pub(crate) fn set_parked(&mut self, charge: &mut usize, bytes: usize) {
        let old = std::mem::replace(charge, bytes);
        self.count(old, bytes);
    }

    /// Moves the service-wide counters from `old` to `new` bytes.
    fn count(&self, old: usize, new: usize) {
        if new > old {
            let d = (new - old) as u64;
            let total = self.counters.buffered_bytes.fetch_add(d, Ordering::Relaxed) + d;
            self.counters
                .buffered_bytes_peak
                .fetch_max(total, Ordering::Relaxed);
        } else if new < old {
            let d = (old - new) as u64;
            self.counters.buffered_bytes.fetch_sub(d, Ordering::Relaxed);
        }
    }

    /// A connection's holding (`charge`) is now `bytes`.
    pub(crate) fn set(&mut self, charge: &mut usize, bytes: usize) {
        let old = std::mem::replace(charge, bytes);
        if bytes == old {
            return;
        }
        self.count(old, bytes);
        self.held = self.held - old + bytes;
        self.peak_since_trim = self.peak_since_trim.max(self.held);
        let (soft, low) = (self.limit / 8 * 7, self.limit / 4 * 3);
        let level = match self.level {
            _ if self.held > self.limit => 2,
            2 if self.held > soft => 2,
            _ if self.held > soft => 1,
            1 | 2 if self.held > low => 1,
            _ => 0,
        };
        if level != self.level {
            if self.level == 0 {
                self.counters.budget_pauses.fetch_add(1, Ordering::Relaxed);
            }
            self.level = level;
            self.changed = true;
        }
    }

    /// True once after the level changed: every connection must then be
    /// brought in line (its receive stopped or restarted).
    pub(crate) fn take_changed(&mut self) -> bool {
        std::mem::take(&mut self.changed)
    }

    /// After a burst, gives free heap memory back to the system (the
    /// allocator keeps it otherwise, per thread arena): once the bytes held
    /// fell to a quarter of a peak of at least [`TRIM_AFTER_BYTES`], or to
    /// nothing with no connection left (`idle`) after at least 1 MiB or 64
    /// connections (so not after every lone short connection). True when
    /// it did.
    pub(crate) fn trim_after_burst(&mut self, idle: bool) -> bool {
        let big_fall =
            self.peak_since_trim >= TRIM_AFTER_BYTES && self.held <= self.peak_since_trim / 4;
        let emptied = idle
            && self.held == 0
            && (self.peak_since_trim >= 1 << 20 || self.closed_since_trim >= 64);
        if big_fall || emptied {
            self.peak_since_trim = self.held;
            self.closed_since_trim = 0;
            release_free_heap();
            return true;
        }
        false
    }
}

/// Gives the allocator's free memory back to the system (glibc keeps what
/// a thread arena freed, even a whole burst's worth; other C libraries need
/// nothing here).
fn release_free_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks and trims the allocator's own free
    // lists; it takes the allocator's locks and touches no memory of ours.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// The deadline heap of either service loop: (when, connection index, generation).
pub(crate) type Deadlines = BinaryHeap<Reverse<(Instant, u32, u32)>>;

/// Pops the deadlines due at `now` and runs those of open connections that
/// have really come (a session may have moved its deadline later: it goes
/// back into the heap). Returns the connections whose deadline ran, for the
/// loop to bring up to date, and prunes the heap.
pub(crate) fn fire_deadlines<C: ConnPhase>(
    heap: &mut Deadlines,
    conns: &mut Slab<C>,
    now: Instant,
) -> Vec<(u32, u32)> {
    let mut fired = Vec::new();
    while let Some(&Reverse((t, idx, gen))) = heap.peek() {
        if t > now {
            break;
        }
        heap.pop();
        let Some(c) = conns.get_mut(idx, gen) else {
            continue;
        };
        if *c.phase_and_reason().0 != Phase::Open {
            continue;
        }
        match c.deadline() {
            Some(d) if d <= now => {
                let v = c.on_deadline();
                apply(c, v, CloseReason::Deadline);
                fired.push((idx, gen));
            }
            Some(d) => heap.push(Reverse((d, idx, gen))),
            None => {}
        }
    }
    prune_deadlines(heap, conns.len(), |idx, gen| {
        conns
            .get_mut(idx, gen)
            .is_some_and(|c| c.deadline().is_some())
    });
    fired
}

/// The connection to evict when the process is out of descriptors: the
/// open connection whose session deadline (the handshake's) comes first,
/// if it is at least [`EVICT_MIN_AGE`] old at `now`. Takes it from the
/// heap, marks it aborted ([`CloseReason::Evicted`]) and returns it;
/// entries of connections gone or past their handshake are dropped on the
/// way.
pub(crate) fn pick_eviction<C: ConnPhase>(
    heap: &mut Deadlines,
    conns: &mut Slab<C>,
    now: Instant,
) -> Option<(u32, u32)> {
    while let Some(&Reverse((_, idx, gen))) = heap.peek() {
        let Some(c) = conns.get_mut(idx, gen) else {
            heap.pop();
            continue;
        };
        if *c.phase_and_reason().0 != Phase::Open || c.deadline().is_none() {
            heap.pop();
            continue;
        }
        if now.saturating_duration_since(c.accepted_at()) < EVICT_MIN_AGE {
            // The oldest handshake is young: nobody to evict yet.
            return None;
        }
        heap.pop();
        abort(c, CloseReason::Evicted);
        return Some((idx, gen));
    }
    None
}

/// When either service loop must wake next: the earliest deadline or
/// accept resumption (`resume_at` of each listener).
pub(crate) fn next_wake(
    deadlines: &Deadlines,
    resume_at: impl Iterator<Item = Option<Instant>>,
) -> Option<Instant> {
    let first = deadlines.peek().map(|Reverse((t, _, _))| *t);
    resume_at
        .flatten()
        .fold(first, |t, r| Some(t.map_or(r, |x| x.min(r))))
}

/// Backpressure of either service loop: a connection whose unsent output
/// (`queued`) is over the high-water mark stops being read (`paused`,
/// counted) until it is back at or below the low-water mark.
pub(crate) fn backpressure(
    paused: &mut bool,
    queued: usize,
    cfg: &LoopConfig,
    counters: &LoopCounters,
) {
    if !*paused && queued > cfg.output_high_water_bytes {
        *paused = true;
        counters.backpressure_pauses.fetch_add(1, Ordering::Relaxed);
    } else if *paused && queued <= cfg.output_low_water_bytes {
        *paused = false;
    }
}

/// Entries of connections gone or past their deadline phase are dropped
/// lazily; rebuild the heap when they outnumber the `live_conns` connections,
/// so connection churn cannot grow it without bound. `still_due` says
/// whether a connection still has a deadline.
pub(crate) fn prune_deadlines(
    heap: &mut Deadlines,
    live_conns: usize,
    mut still_due: impl FnMut(u32, u32) -> bool,
) {
    if heap.len() > 2 * live_conns + 1024 {
        let live: Vec<_> = heap
            .drain()
            .filter(|Reverse((_, idx, gen))| still_due(*idx, *gen))
            .collect();
        *heap = live.into_iter().collect();
    }
}

/// Applies a session's verdict: a close drains first (once), an abort wins.
pub(crate) fn apply<C: ConnPhase>(c: &mut C, v: Verdict, reason: CloseReason) {
    match v {
        Verdict::Continue => {}
        Verdict::Close => {
            let (phase, why) = c.phase_and_reason();
            if *phase == Phase::Open {
                *phase = Phase::Draining;
                *why = reason;
            }
        }
        Verdict::Abort => abort(c, reason),
    }
}

/// Closes a connection at once (the first reason given is kept).
pub(crate) fn abort<C: ConnPhase>(c: &mut C, reason: CloseReason) {
    let (phase, why) = c.phase_and_reason();
    if *phase != Phase::Aborting {
        *phase = Phase::Aborting;
        *why = reason;
    }
}

/// A test session shared by both loops' tests: echoes; closes on "bye"; a
/// deadline 200 ms after accept unless data came.
#[cfg(test)]
pub(crate) mod test_echo {
    use super::{Acceptor, CloseReason, Session, Verdict};
    use std::fs::File;
    use std::io::{Read, Write};
    use std::os::fd::BorrowedFd;
    use std::os::unix::net::UnixStream;
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, Instant};

    pub(crate) struct Echo {
        deadline: Option<Instant>,
        closes: Arc<Mutex<Vec<CloseReason>>>,
    }

    impl Session for Echo {
        fn on_data(&mut self, data: &[u8], out: &mut Vec<u8>) -> Verdict {
            self.deadline = None;
            out.extend_from_slice(data);
            if data.ends_with(b"bye") {
                Verdict::Close
            } else {
                Verdict::Continue
            }
        }
        fn deadline(&self) -> Option<Instant> {
            self.deadline
        }
        fn on_close(&mut self, reason: CloseReason) {
            self.closes.lock().unwrap().push(reason);
        }
    }

    /// The client side both loops' unit tests run against an echo loop at
    /// `path`: 100 000 bytes then "bye" (echoed whole, then a graceful
    /// close), a silent client (closed at its deadline), then an idle client
    /// after which `shutdown` is signalled. Returns the idle client, whose
    /// close by the shutdown the caller checks.
    pub(crate) fn client_script(
        path: &std::path::Path,
        shutdown: &std::os::fd::OwnedFd,
    ) -> UnixStream {
        let mut a = UnixStream::connect(path).unwrap();
        let msg: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let reader = {
            let mut a2 = a.try_clone().unwrap();
            let n = msg.len() + 3;
            std::thread::spawn(move || {
                let mut got = vec![0u8; n];
                a2.read_exact(&mut got).unwrap();
                let mut rest = Vec::new();
                a2.read_to_end(&mut rest).unwrap();
                assert!(rest.is_empty());
                got
            })
        };
        a.write_all(&msg).unwrap();
        a.write_all(b"bye").unwrap();
        let got = reader.join().unwrap();
        assert_eq!(&got[..msg.len()], &msg[..]);
        assert_eq!(&got[msg.len()..], b"bye");

        // Silent client: closed at its deadline.
        let mut b = UnixStream::connect(path).unwrap();
        b.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut x = [0u8; 1];
        assert_eq!(b.read(&mut x).unwrap(), 0);

        // An idle client is closed by shutdown.
        let mut c = UnixStream::connect(path).unwrap();
        c.write_all(b"hi").unwrap();
        let mut y = [0u8; 2];
        c.read_exact(&mut y).unwrap();
        File::from(shutdown.try_clone().unwrap())
            .write_all(&1u64.to_ne_bytes())
            .unwrap();
        c
    }

    /// How a test starts the loop under test: on the listener, with the
    /// shutdown eventfd, the counters and the acceptor. `Ok(false)`: that
    /// loop cannot run here.
    pub(crate) trait StartLoop<A>:
        FnOnce(
            Arc<std::os::fd::OwnedFd>,
            Arc<std::os::fd::OwnedFd>,
            Arc<super::LoopCounters>,
            A,
        ) -> std::io::Result<bool>
        + Send
        + 'static
    {
    }

    impl<A, F> StartLoop<A> for F where
        F: FnOnce(
                Arc<std::os::fd::OwnedFd>,
                Arc<std::os::fd::OwnedFd>,
                Arc<super::LoopCounters>,
                A,
            ) -> std::io::Result<bool>
            + Send
            + 'static
    {
    }

    /// What a loop under test runs on: a temp dir (kept alive by the
    /// caller), an AF_UNIX listener at `<dir>/<name>`, the shutdown
    /// eventfd and the counters.
    #[allow(clippy::type_complexity)]
    fn loop_fixture(
        name: &str,
    ) -> (
        tempfile::TempDir,
        std::path::PathBuf,
        Arc<std::os::fd::OwnedFd>,
        Arc<std::os::fd::OwnedFd>,
        Arc<super::LoopCounters>,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(name);
        let listener: std::os::fd::OwnedFd = std::os::unix::net::UnixListener::bind(&path)
            .unwrap()
            .into();
        let shutdown = Arc::new(crate::ring::sys::eventfd().unwrap());
        let counters = Arc::new(super::LoopCounters::default());
        (dir, path, Arc::new(listener), shutdown, counters)
    }

    /// Runs [`client_script`] against a service loop started by `run` on a
    /// listener in a temp dir (with the shutdown eventfd, the counters and
    /// an [`EchoAcceptor`]) and checks how the three connections closed.
    /// `run` returns `Ok(false)` when its loop cannot run here (then `None`,
    /// after saying so); otherwise the counters, for more checks.
    pub(crate) fn run_echo_script(
        run: impl StartLoop<EchoAcceptor>,
    ) -> Option<Arc<super::LoopCounters>> {
        let (_dir, path, listener, shutdown, counters) = loop_fixture("echo");
        let closes = Arc::new(Mutex::new(Vec::new()));
        let t = {
            let (s, k, c) = (shutdown.clone(), counters.clone(), closes.clone());
            std::thread::spawn(move || run(listener, s, k, EchoAcceptor(c)))
        };
        let mut c = client_script(&path, &shutdown);
        if !t.join().unwrap().unwrap() {
            eprintln!("SKIPPED: this service loop cannot run here");
            return None;
        }
        assert_eq!(c.read(&mut [0u8; 1]).unwrap(), 0);
        let closes = closes.lock().unwrap().clone();
        assert_eq!(
            closes,
            vec![
                CloseReason::Session,
                CloseReason::Deadline,
                CloseReason::Shutdown
            ]
        );
        assert_eq!(
            counters.accepted.load(std::sync::atomic::Ordering::Relaxed),
            3
        );
        Some(counters)
    }

    /// A session woken from another thread: "go" starts a thread that
    /// wakes it 20 ms later; each wake answers "woken"; `wakes` counts them.
    pub(crate) struct Woken {
        waker: super::ConnWaker,
        wakes: Arc<std::sync::atomic::AtomicUsize>,
    }

    impl Session for Woken {
        fn on_data(&mut self, data: &[u8], _out: &mut Vec<u8>) -> Verdict {
            if data == b"bye" {
                return Verdict::Close;
            }
            let w = self.waker.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(20));
                w.wake();
                w.waker().wake();
            });
            Verdict::Continue
        }
        fn on_wake(&mut self, out: &mut Vec<u8>) -> Verdict {
            self.wakes.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            out.extend_from_slice(b"woken");
            Verdict::Continue
        }
    }

    /// Makes [`Woken`] sessions; keeps every waker it gave out.
    pub(crate) struct WokenAcceptor {
        pub(crate) wakers: Arc<Mutex<Vec<super::ConnWaker>>>,
        pub(crate) wakes: Arc<std::sync::atomic::AtomicUsize>,
    }

    impl Acceptor for WokenAcceptor {
        type Session = Woken;
        fn accept(&mut self, _listener: usize, _conn: BorrowedFd<'_>) -> Option<Woken> {
            None
        }
        fn accept_with_waker(
            &mut self,
            _listener: usize,
            _conn: BorrowedFd<'_>,
            waker: super::WakerSlot<'_>,
        ) -> Option<Woken> {
            let waker = waker.waker();
            self.wakers.lock().unwrap().push(waker.clone());
            Some(Woken {
                waker,
                wakes: self.wakes.clone(),
            })
        }
    }

    /// Runs a loop (started by `run` like in [`run_echo_script`]) with a
    /// [`WokenAcceptor`]: a wake from another thread produces output; a
    /// wake of a closed connection whose slot was reused reaches nobody.
    pub(crate) fn run_wake_script(run: impl StartLoop<WokenAcceptor>) {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let (_dir, path, listener, shutdown, counters) = loop_fixture("wake");
        let wakers = Arc::new(Mutex::new(Vec::new()));
        let wakes = Arc::new(AtomicUsize::new(0));
        let acceptor = WokenAcceptor {
            wakers: wakers.clone(),
            wakes: wakes.clone(),
        };
        let t = {
            let (s, k) = (shutdown.clone(), counters.clone());
            std::thread::spawn(move || run(listener, s, k, acceptor))
        };
        let mut a = UnixStream::connect(&path).unwrap();
        a.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        a.write_all(b"go").unwrap();
        let mut got = [0u8; 5];
        a.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"woken");
        // The two wakes of that thread came as one (or two) on_wake calls.
        std::thread::sleep(Duration::from_millis(50));
        let first = wakes.load(Ordering::SeqCst);
        assert!((1..=2).contains(&first), "{first}");
        a.write_all(b"bye").unwrap();
        // Then the end of the stream (after the second wake's answer, if
        // the two wakes came apart).
        let mut rest = Vec::new();
        a.read_to_end(&mut rest).unwrap();
        assert_eq!(rest.len(), 5 * (first - 1), "{rest:?}");
        // A new connection takes the freed slot with a new generation: the
        // old waker must not reach it.
        let mut b = UnixStream::connect(&path).unwrap();
        b.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        b.write_all(b"x").ok();
        std::thread::sleep(Duration::from_millis(100));
        let before = wakes.load(Ordering::SeqCst);
        let old = wakers.lock().unwrap()[0].clone();
        old.wake();
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(
            wakes.load(Ordering::SeqCst),
            before,
            "a stale wake reached a new connection"
        );
        File::from(shutdown.try_clone().unwrap())
            .write_all(&1u64.to_ne_bytes())
            .unwrap();
        if !t.join().unwrap().unwrap() {
            eprintln!("SKIPPED: this service loop cannot run here");
        }
        drop(old);
    }

    /// A session that answers "ok" to each input. Input starting with
    /// "stall" first holds the loop's thread for [`STALL`], as a preempted
    /// thread or a slow session would. Until it answers, a session is due
    /// to be closed [`STALL_DEADLINE`] after its accept.
    pub(crate) struct Staller {
        deadline: Option<Instant>,
        closes: Arc<Mutex<Vec<CloseReason>>>,
    }

    const STALL: Duration = Duration::from_millis(1500);
    const STALL_DEADLINE: Duration = Duration::from_millis(1000);

    impl Session for Staller {
        fn on_data(&mut self, data: &[u8], out: &mut Vec<u8>) -> Verdict {
            if data.starts_with(b"stall") {
                std::thread::sleep(STALL);
            }
            self.deadline = None;
            out.extend_from_slice(b"ok");
            Verdict::Continue
        }
        fn deadline(&self) -> Option<Instant> {
            self.deadline
        }
        fn on_close(&mut self, reason: CloseReason) {
            self.closes.lock().unwrap().push(reason);
        }
    }

    pub(crate) struct StallAcceptor(Arc<Mutex<Vec<CloseReason>>>);

    impl Acceptor for StallAcceptor {
        type Session = Staller;
        fn accept(&mut self, _listener: usize, _conn: BorrowedFd<'_>) -> Option<Staller> {
            Some(Staller {
                deadline: Some(Instant::now() + STALL_DEADLINE),
                closes: self.0.clone(),
            })
        }
    }

    /// A loop (started by `run` as in [`run_echo_script`]) is held up
    /// past its connections' deadlines while their data comes in time:
    /// each of them gets its answer, and none is closed at its deadline.
    pub(crate) fn run_stall_script(run: impl StartLoop<StallAcceptor>) {
        use std::sync::atomic::Ordering;
        let (_dir, path, listener, shutdown, counters) = loop_fixture("stall");
        let closes = Arc::new(Mutex::new(Vec::new()));
        let t = {
            let (s, k, c) = (shutdown.clone(), counters.clone(), closes.clone());
            std::thread::spawn(move || run(listener, s, k, StallAcceptor(c)))
        };
        let mut staller = UnixStream::connect(&path).unwrap();
        let mut others: Vec<UnixStream> = (0..4)
            .map(|_| UnixStream::connect(&path).unwrap())
            .collect();
        // Every deadline starts at its accept.
        let start = Instant::now();
        while counters.accepted.load(Ordering::SeqCst) < 5 {
            if t.is_finished() {
                assert!(!t.join().unwrap().unwrap(), "the loop ended early");
                eprintln!("SKIPPED: this service loop cannot run here");
                return;
            }
            assert!(start.elapsed() < Duration::from_secs(5), "accepts");
            std::thread::sleep(Duration::from_millis(5));
        }
        let accepted = Instant::now();
        staller.write_all(b"stall").unwrap();
        // The loop is inside the stall now; the others' data comes well
        // before their deadlines, and waits for the loop.
        std::thread::sleep(Duration::from_millis(100));
        for o in &mut others {
            o.write_all(b"hi").unwrap();
        }
        let sent = accepted.elapsed();
        for (i, o) in others.iter_mut().enumerate() {
            o.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut got = [0u8; 2];
            o.read_exact(&mut got)
                .unwrap_or_else(|e| panic!("connection {i}, data sent {sent:?} after accept: {e}"));
            assert_eq!(&got, b"ok");
        }
        staller.read_exact(&mut [0u8; 2]).unwrap();
        File::from(shutdown.try_clone().unwrap())
            .write_all(&1u64.to_ne_bytes())
            .unwrap();
        assert!(t.join().unwrap().unwrap());
        let closes = closes.lock().unwrap().clone();
        assert_eq!(
            closes,
            vec![CloseReason::Shutdown; 5],
            "data sent {sent:?} after accept"
        );
    }

    pub(crate) struct EchoAcceptor(pub(crate) Arc<Mutex<Vec<CloseReason>>>);

    impl Acceptor for EchoAcceptor {
        type Session = Echo;
        fn accept(&mut self, _listener: usize, _conn: BorrowedFd<'_>) -> Option<Echo> {
            Some(Echo {
                deadline: Some(Instant::now() + Duration::from_millis(200)),
                closes: self.0.clone(),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A waker that outlives its loop wakes nothing and keeps nothing
    /// alive: the queue (and its eventfd) go with the loop.
    #[test]
    fn a_waker_outliving_its_loop_holds_nothing() {
        let q = WakeQueue::new().unwrap();
        let w = WakerSlot::new(&q, 0, 1).waker();
        w.wake();
        assert_eq!(q.take(), vec![(0, 1)]);
        // Queued, never taken: the loop ends with it in its queue.
        w.wake();
        let weak = Arc::downgrade(&q);
        drop(q);
        assert!(
            weak.upgrade().is_none(),
            "a queued waker keeps its queue alive"
        );
        w.wake();
        w.waker().wake_by_ref();
    }

    /// Wakers on several threads against a loop that waits on the eventfd
    /// (poll(2)) and takes: every wake is seen, none is stranded behind a
    /// signal already drained.
    #[test]
    fn no_wake_is_lost_under_contention() {
        const THREADS: usize = 4;
        const ROUNDS: usize = 10_000;
        let q = WakeQueue::new().unwrap();
        let done = Arc::new(AtomicU64::new(0));
        let seen: Vec<Arc<AtomicU64>> = (0..THREADS).map(|_| Arc::new(AtomicU64::new(0))).collect();
        let wakers: Vec<_> = (0..THREADS)
            .map(|i| {
                let w = WakerSlot::new(&q, i as u32, 1).waker();
                let seen = seen[i].clone();
                std::thread::spawn(move || {
                    for r in 0..ROUNDS as u64 {
                        w.wake();
                        // Wait (bounded) until the loop saw this round.
                        let t = Instant::now();
                        while seen.load(Ordering::SeqCst) <= r {
                            assert!(
                                t.elapsed() < Duration::from_secs(5),
                                "wake {r} of waker {i} lost"
                            );
                            std::hint::spin_loop();
                        }
                    }
                })
            })
            .collect();
        let loop_done = done.clone();
        let consumer = {
            let q = q.clone();
            let seen = seen.clone();
            std::thread::spawn(move || {
                while loop_done.load(Ordering::SeqCst) == 0 {
                    let mut p = libc::pollfd {
                        fd: q.raw_fd(),
                        events: libc::POLLIN,
                        revents: 0,
                    };
                    // SAFETY: one pollfd that lives for the call.
                    if unsafe { libc::poll(&mut p, 1, 100) } <= 0 {
                        // Only a readable eventfd may lead to a take.
                        continue;
                    }
                    for (idx, _) in q.take() {
                        seen[idx as usize].fetch_add(1, Ordering::SeqCst);
                    }
                }
            })
        };
        for w in wakers {
            w.join().unwrap();
        }
        done.store(1, Ordering::SeqCst);
        consumer.join().unwrap();
    }

    #[test]
    fn budget_levels_and_hysteresis() {
        let counters = Arc::new(LoopCounters::default());
        let mut b = Budget::new(800, counters.clone());
        let (mut x, mut y) = (0, 0);
        b.set(&mut x, 700);
        assert!(b.allows(5) && !b.take_changed());
        // Over 7/8: only connections with nothing queued are read.
        b.set(&mut y, 50);
        assert!(b.allows(0) && !b.allows(1) && b.take_changed());
        // Over the limit: nobody.
        b.set(&mut y, 101);
        assert!(!b.allows(0) && b.take_changed());
        // Back to 7/8 (700): level 1; to 3/4 (600): everybody.
        b.set(&mut y, 1);
        assert!(!b.allows(0));
        b.set(&mut y, 0);
        assert!(b.allows(0) && !b.allows(1) && b.take_changed());
        b.set(&mut x, 601);
        assert!(!b.allows(1));
        b.set(&mut x, 600);
        assert!(b.allows(1) && b.take_changed());
        assert_eq!(counters.buffered_bytes.load(Ordering::Relaxed), 600);
        assert_eq!(counters.buffered_bytes_peak.load(Ordering::Relaxed), 801);
        assert_eq!(counters.budget_pauses.load(Ordering::Relaxed), 1);
        b.set(&mut x, 0);
        assert_eq!(counters.buffered_bytes.load(Ordering::Relaxed), 0);
    }
}
