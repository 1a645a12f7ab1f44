//! The SMB-server side of the pipe transport: open, transceive, read,
//! write, peek, wait, cancel and close pipes, every socket operation an SQE.
//!
//! An [`Engine`] owns one or more rings, each driven by its own thread;
//! pipes are spread over them. Every operation can be started from any
//! thread and returns a [`Request`]: a runtime-agnostic [`Future`](std::future::Future)
//! (no async runtime needed) with a blocking [`Request::wait`] and a
//! [`CancelHandle`]. Callers that want to stay on the ring thread (the
//! benchmark's fast path, a thread-per-core server) use
//! [`Pipe::transceive_with`] / [`RingContext::transceive_with`]: the callback
//! runs on the ring thread and may start the next request there at once.
//!
//! ```no_run
//! use opipe::engine::{Engine, EngineConfig};
//! use opipe::protocol::NetUserInfo;
//!
//! let engine = Engine::new(EngineConfig::new("/var/smb/pipe"))?;
//! let user = NetUserInfo { session_id: 7, account: "alice".into(), ..Default::default() };
//! let pipe = engine.open("\\PIPE\\srvsvc", user, None).wait()?;
//! let reply = pipe.transceive(b"request bytes".to_vec(), 4280).wait()?;
//! println!("{} {} bytes", reply.status, reply.data.len());
//! // Inputs are `Bytes`: a shared buffer is sent in place, without a copy.
//! let request = opipe::engine::Bytes::from_static(b"request bytes");
//! let again = pipe.transceive(request.clone(), 4280).wait()?;
//! assert_eq!(again.data, reply.data);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![forbid(unsafe_code)]

/// Request inputs are [`Bytes`] (re-exported, so callers need no
/// dependency of their own to share a buffer).
pub use bytes::Bytes;

mod command;
mod config;
mod request;
mod ring;
mod types;

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub use self::command::RingContext;
use self::command::{
    transfer_callback, Callback, Command, CommandQueue, Notify, Outcome, PipeIo, Shared,
};
use self::ring::Core;
pub use config::{BufferMode, EngineConfig, EngineError, EngineStats, OpenOptions};
pub use request::{CancelHandle, Request};
pub use types::{
    FileType, OpenAction, OpenInfo, PipeId, Transfer, Tree, FILE_ATTRIBUTE_NORMAL,
    PIPE_DEVICE_STATE,
};

pub use crate::protocol::Dialect;
use crate::protocol::{fsctl, NetUserInfo, NtStatus, PipeName, WaitRequest};
pub use crate::ring::{Backend, BackendChoice};
use crate::ring::{Driver, DriverConfig, EpollDriver, OpDriver, SendBuf};

struct RingHandle {
    queue: Arc<CommandQueue>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

pub(crate) struct EngineInner {
    rings: Vec<RingHandle>,
    next_ring: AtomicUsize,
    cfg: Arc<EngineConfig>,
    sock_nonempty: bool,
    backend: Backend,
}

impl EngineInner {
    pub(crate) fn send(&self, ring: usize, c: Command) {
        if let Some(r) = self.rings.get(ring) {
            r.queue.push(c);
        }
    }
}

thread_local! {
    /// Set on ring threads: an engine dropped there must not join itself.
    static ON_RING_THREAD: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

impl Drop for EngineInner {
    fn drop(&mut self) {
        for r in &self.rings {
            r.queue.push(Command::Shutdown);
        }
        if ON_RING_THREAD.with(|f| f.get()) {
            // The last handle died inside a ring-thread callback: the rings
            // stop on their own after the shutdown command; joining here
            // would wait for ourselves.
            return;
        }
        for r in &self.rings {
            if let Some(t) = r.thread.lock().unwrap_or_else(|e| e.into_inner()).take() {
                let _ = t.join();
            }
        }
    }
}

/// The engine: cheap to clone, usable from any thread. The rings stop when
/// the engine and every [`Pipe`] and [`Request`] of it are dropped.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<EngineInner>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("rings", &self.inner.rings.len())
            .field("backend", &self.inner.backend)
            .field("dir", &self.inner.cfg.dir)
            .finish()
    }
}

fn conv_pipe(engine: &Arc<EngineInner>, _ring: usize, o: Outcome) -> Result<Pipe, NtStatus> {
    match o {
        Outcome::Opened { pipe, info } => Ok(Pipe {
            engine: engine.clone(),
            id: pipe,
            info: *info,
            closed: false,
        }),
        _ => Err(NtStatus::INTERNAL_ERROR),
    }
}

fn conv_transfer(_: &Arc<EngineInner>, _: usize, o: Outcome) -> Result<Transfer, NtStatus> {
    o.into_transfer()
}

fn conv_data(e: &Arc<EngineInner>, r: usize, o: Outcome) -> Result<Vec<u8>, NtStatus> {
    conv_transfer(e, r, o).map(|t| t.data)
}

fn conv_written(_: &Arc<EngineInner>, _: usize, o: Outcome) -> Result<usize, NtStatus> {
    match o {
        Outcome::Written(n) => Ok(n),
        _ => Err(NtStatus::INTERNAL_ERROR),
    }
}

fn conv_unit(_: &Arc<EngineInner>, _: usize, o: Outcome) -> Result<(), NtStatus> {
    match o {
        Outcome::Done => Ok(()),
        _ => Err(NtStatus::INTERNAL_ERROR),
    }
}

/// Starts ring `index` on its own thread (the ring is created there: with
/// SINGLE_ISSUER/DEFER_TASKRUN only that thread may use it) and waits until
/// it is ready. Returns its handle and whether its kernel flags leftover
/// data on receive completions.
/// Slots of each io_uring ring's registered file table: one per descriptor
/// the process may hold (the kernel refuses more), at most
/// [`MAX_FILE_SLOTS`]. Pipes opened beyond it keep plain descriptors.
fn file_table_slots() -> u32 {
    crate::ring::sys::nofile_soft_limit().map_or(0, |n| n.min(MAX_FILE_SLOTS) as u32)
}

/// The largest registered file table a ring asks for (16 bytes of kernel
/// memory per slot).
const MAX_FILE_SLOTS: u64 = 65_536;

fn start_ring(
    cfg: &Arc<EngineConfig>,
    backend: Backend,
    index: usize,
    file_ids: &Arc<AtomicU64>,
) -> Result<(RingHandle, bool), EngineError> {
    let (tx, rx) = mpsc::channel();
    let dcfg = DriverConfig {
        sq_entries: cfg.sq_entries,
        cq_entries: cfg.cq_entries,
        reg_slots: if cfg.buffers == BufferMode::Registered {
            cfg.reg_slots
        } else {
            0
        },
        reg_slot_bytes: cfg.reg_slot_bytes,
        file_slots: file_table_slots(),
        recv_pool_bufs: cfg.recv_pool_bufs,
        recv_pool_buf_bytes: cfg.recv_pool_buf_bytes,
    };
    let (cfg2, ids) = (cfg.clone(), file_ids.clone());
    let thread = std::thread::Builder::new()
        .name(format!("opipe-ring-{index}"))
        .spawn(move || {
            ON_RING_THREAD.with(|f| f.set(true));
            match backend {
                Backend::IoUring => match Driver::new(&dcfg) {
                    Ok(d) => ring_main(d, tx, cfg2, index, ids),
                    Err(e) => drop(tx.send(Err(EngineError::Ring(e)))),
                },
                Backend::Epoll => match EpollDriver::new() {
                    Ok(d) => ring_main(d, tx, cfg2, index, ids),
                    Err(e) => drop(tx.send(Err(EngineError::Epoll(e)))),
                },
            }
        })
        .map_err(EngineError::Thread)?;
    let (queue, nonempty) = match rx.recv() {
        Ok(Ok(started)) => started,
        Ok(Err(e)) => {
            let _ = thread.join();
            return Err(e);
        }
        Err(_) => {
            let _ = thread.join();
            return Err(EngineError::Config("ring thread died during start-up"));
        }
    };
    let ring = RingHandle {
        queue,
        thread: Mutex::new(Some(thread)),
    };
    Ok((ring, nonempty))
}

/// A ring thread's body once its driver exists: report ready, then run.
fn ring_main<D: OpDriver>(
    drv: D,
    tx: mpsc::Sender<Result<(Arc<CommandQueue>, bool), EngineError>>,
    cfg: Arc<EngineConfig>,
    index: usize,
    ids: Arc<AtomicU64>,
) {
    let queue = Arc::new(CommandQueue::with_cap(
        drv.wake_handle(),
        cfg.max_queued_commands,
    ));
    let _ = tx.send(Ok((queue.clone(), drv.features().sock_nonempty)));
    let mut core = Core::new(drv, cfg, index, ids, Instant::now());
    ring::run(&mut core, &queue);
}

impl Engine {
    /// Starts the engine's ring threads on the backend `cfg.backend` asks
    /// for. With [`BackendChoice::Auto`] a machine where io_uring is refused
    /// gets the epoll backend (and one line on stderr saying so); with
    /// [`BackendChoice::IoUring`] it gets a plain-words [`EngineError::Ring`].
    pub fn new(mut cfg: EngineConfig) -> Result<Engine, EngineError> {
        if cfg.rings == 0 || cfg.rings > 64 {
            return Err(EngineError::Config("rings must be 1..=64"));
        }
        if cfg.max_queued_commands == 0 {
            return Err(EngineError::Config("max_queued_commands must be positive"));
        }
        if cfg.sq_entries == 0 {
            return Err(EngineError::Config("sq_entries must be positive"));
        }
        if cfg.recv_pool_bufs != 0 && !cfg.recv_pool_bufs.is_power_of_two() {
            return Err(EngineError::Config(
                "recv_pool_bufs must be 0 or a power of two",
            ));
        }
        let (backend, why) = crate::ring::backend::resolve(cfg.backend);
        if let Some(e) = why {
            tracing::warn!("opipe: io_uring unavailable ({e}); engine uses the epoll backend");
        }
        if backend == Backend::Epoll {
            // No registered pool on epoll: the effective mode is Plain.
            cfg.buffers = BufferMode::Plain;
        }
        let cfg = Arc::new(cfg);
        let file_ids = Arc::new(AtomicU64::new(1));
        // Built up ring by ring: on any error below, dropping it stops the
        // rings already started (see `Drop for EngineInner`).
        let mut inner = EngineInner {
            rings: Vec::with_capacity(cfg.rings),
            next_ring: AtomicUsize::new(0),
            cfg: cfg.clone(),
            sock_nonempty: true,
            backend,
        };
        for index in 0..cfg.rings {
            let (ring, nonempty) = start_ring(&cfg, backend, index, &file_ids)?;
            inner.sock_nonempty &= nonempty;
            inner.rings.push(ring);
        }
        Ok(Engine {
            inner: Arc::new(inner),
        })
    }

    /// The configuration the engine runs with: `buffers` is the effective
    /// mode (always [`BufferMode::Plain`] on the epoll backend).
    pub fn config(&self) -> &EngineConfig {
        &self.inner.cfg
    }

    /// The engine's counters, summed over its rings (each ring publishes
    /// its own after every batch of completions).
    pub fn stats(&self) -> EngineStats {
        let mut st = EngineStats::default();
        for r in &self.inner.rings {
            st.recv_pool_fallbacks += r.queue.pool_fallbacks();
            st.queue_full_refusals += r.queue.refused();
        }
        st
    }

    /// The backend the rings run on (the outcome of [`BackendChoice::Auto`]).
    pub fn backend(&self) -> Backend {
        self.inner.backend
    }

    /// Whether every ring's kernel flags leftover data on receive
    /// completions (`IORING_CQE_F_SOCK_NONEMPTY`), so a transceive needs no
    /// third SQE to detect overflow.
    pub fn sock_nonempty(&self) -> bool {
        self.inner.sock_nonempty
    }

    /// Opens the pipe named by the SMB path `path` (e.g. `\PIPE\srvsvc`)
    /// for `user`: name validation first (a bad name is
    /// `STATUS_OBJECT_NAME_INVALID` before any socket is made), then connect,
    /// send the open message and receive its answer as one linked SQE chain
    /// under a deadline. Failures map as the seed maps them. In the Samba
    /// dialect the identity sent is [`NpaIdentity::from_net_user_info`](crate::protocol::NpaIdentity::from_net_user_info) of
    /// `user` (see [`Engine::open_with`] to pass one).
    pub fn open(&self, path: &str, user: NetUserInfo, tree: Option<&Tree>) -> Request<Pipe> {
        self.open_with(path, user, OpenOptions::default(), tree)
    }

    /// [`Engine::open`] with options. In the Samba dialect the open
    /// sends Samba's NPA request (level 7 first; a level the server refuses,
    /// by `STATUS_INVALID_LEVEL` or by closing before any reply byte as
    /// Samba 4.17 does, is retried once at the other level, and the level
    /// that worked is the one later opens of the ring try first) and
    /// returns the reply's status as is; the pipe's [`OpenInfo`] carries the
    /// reply's file type, device state and allocation size.
    pub fn open_with(
        &self,
        path: &str,
        user: NetUserInfo,
        options: OpenOptions,
        tree: Option<&Tree>,
    ) -> Request<Pipe> {
        if let Err(s) = PipeName::parse(path) {
            return Request::ready(self.inner.clone(), Err(s), conv_pipe);
        }
        let ring = self.inner.next_ring.fetch_add(1, Ordering::Relaxed) % self.inner.rings.len();
        let shared = Shared::new();
        self.inner.send(
            ring,
            Command::Open {
                path: path.to_owned(),
                user: Box::new(user),
                identity: options.identity.map(Box::new),
                tree: tree.cloned(),
                notify: Notify::Shared(shared.clone()),
            },
        );
        Request::new(shared, self.inner.clone(), ring, conv_pipe)
    }

    /// Ends every request of SMB session `session_id` with
    /// `STATUS_CANCELLED` and closes its pipes. The request completes when
    /// every ring has done so.
    pub fn disconnect_session(&self, session_id: u64) -> Request<()> {
        let n = self.inner.rings.len();
        let shared = Shared::new();
        let left = Arc::new(AtomicUsize::new(n));
        for ring in 0..n {
            let (s, left) = (shared.clone(), left.clone());
            let cb = Callback::new(move |_, _| {
                if left.fetch_sub(1, Ordering::AcqRel) == 1 {
                    let _ = s.complete(Ok(Outcome::Done));
                }
            });
            self.inner.send(
                ring,
                Command::Disconnect {
                    session: session_id,
                    notify: Some(Notify::Callback(cb)),
                },
            );
        }
        Request::new(shared, self.inner.clone(), 0, conv_unit)
    }

    /// FSCTL_PIPE_WAIT: waits until a listener for `name` (no `\PIPE\`
    /// prefix needed) accepts, or `timeout` passes (`STATUS_IO_TIMEOUT`),
    /// whatever the listener does (one that never accepts, its backlog
    /// full, included).
    pub fn wait_for_pipe(&self, name: &str, timeout: Option<Duration>) -> Request<()> {
        let name = match PipeName::parse(name) {
            Ok(n) => n,
            Err(s) => return Request::ready(self.inner.clone(), Err(s), conv_unit),
        };
        let timeout = timeout.unwrap_or(self.inner.cfg.wait_default_timeout);
        let ring = self.inner.next_ring.fetch_add(1, Ordering::Relaxed) % self.inner.rings.len();
        let shared = Shared::new();
        self.inner.send(
            ring,
            Command::WaitPipe {
                name,
                timeout,
                notify: Notify::Shared(shared.clone()),
            },
        );
        Request::new(shared, self.inner.clone(), ring, conv_unit)
    }

    /// FSCTL_PIPE_WAIT from its wire form (MS-FSCC 2.3.49): bad input is
    /// `STATUS_INVALID_PARAMETER`.
    pub fn fsctl_wait(&self, input: &[u8]) -> Request<()> {
        match WaitRequest::decode(input) {
            Ok(w) => self.wait_for_pipe(&w.name, w.timeout()),
            Err(_) => Request::ready(
                self.inner.clone(),
                Err(NtStatus::INVALID_PARAMETER),
                conv_unit,
            ),
        }
    }
}

/// An open pipe. Dropping it closes it (without waiting); [`Pipe::close`]
/// closes it and tells when the socket is gone.
pub struct Pipe {
    engine: Arc<EngineInner>,
    id: PipeId,
    info: OpenInfo,
    closed: bool,
}

impl std::fmt::Debug for Pipe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipe")
            .field("id", &self.id)
            .field("name", &self.info.name)
            .finish()
    }
}

impl Pipe {
    /// What the open reported.
    pub fn info(&self) -> &OpenInfo {
        &self.info
    }

    /// The pipe's id (for ring-thread callbacks).
    pub fn id(&self) -> PipeId {
        self.id
    }

    fn io<T>(&self, io: PipeIo, convert: request::Convert<T>) -> Request<T> {
        let shared = Shared::new();
        self.engine.send(
            self.id.ring,
            Command::Io {
                pipe: self.id,
                io,
                notify: Notify::Shared(shared.clone()),
            },
        );
        Request::new(shared, self.engine.clone(), self.id.ring, convert)
    }

    /// FSCTL_PIPE_TRANSCEIVE: write `input`, then one read of up to
    /// `max_out` bytes, as ONE linked SQE chain. The status is
    /// `STATUS_BUFFER_OVERFLOW` exactly when the seed gives it: `max_out` <
    /// 4280, the read filled it, and more bytes are waiting.
    ///
    /// `input` is anything that becomes [`Bytes`] without a copy (a
    /// `Vec<u8>`, a `&'static [u8]`, a `Bytes` the caller shares): the
    /// engine sends that buffer itself.
    pub fn transceive(
        &self,
        input: impl Into<Bytes> + 'static,
        max_out: usize,
    ) -> Request<Transfer> {
        let input = SendBuf::from_input(input);
        self.io(PipeIo::Transceive { input, max_out }, conv_transfer)
    }

    /// Like [`Pipe::transceive`], but `f` runs on the ring thread with the
    /// result, and can start the next request there without a thread hop.
    pub fn transceive_with(
        &self,
        input: impl Into<Bytes> + 'static,
        max_out: usize,
        f: impl FnOnce(&mut RingContext<'_>, Result<Transfer, NtStatus>) + Send + 'static,
    ) {
        let cb = transfer_callback(f);
        let input = SendBuf::from_input(input);
        self.engine.send(
            self.id.ring,
            Command::Io {
                pipe: self.id,
                io: PipeIo::Transceive { input, max_out },
                notify: Notify::Callback(cb),
            },
        );
    }

    /// One receive of up to `max_out` bytes (no loop, like the seed). The
    /// service having closed is `STATUS_PIPE_BROKEN`.
    pub fn read(&self, max_out: usize) -> Request<Vec<u8>> {
        self.io(PipeIo::Read { max_out }, conv_data)
    }

    /// [`Pipe::read`] with its status: in the Samba dialect (message mode)
    /// a message longer than `max_out` gives `STATUS_BUFFER_OVERFLOW` and
    /// the rest by the next reads, as an SMB2 READ of a message pipe does;
    /// in the illumos dialect (a byte stream) the status is always success.
    pub fn read_message(&self, max_out: usize) -> Request<Transfer> {
        self.io(PipeIo::Read { max_out }, conv_transfer)
    }

    /// Sends all of `data`; the result is the byte count. In the Samba
    /// dialect `data` goes as one message (a longer one than 65535 bytes
    /// as several; the count is still `data`'s).
    pub fn write(&self, data: impl Into<Bytes> + 'static) -> Request<usize> {
        let data = SendBuf::from_input(data);
        self.io(PipeIo::Write { data }, conv_written)
    }

    /// FSCTL_PIPE_PEEK (MS-FSCC): the 16-byte reply header then up to
    /// `max_out - 16` bytes, without consuming them; never blocks.
    pub fn peek(&self, max_out: usize) -> Request<Transfer> {
        self.io(PipeIo::Peek { max_out }, conv_transfer)
    }

    /// The FSCTL dispatcher for an SMB2 IOCTL on this pipe: TRANSCEIVE and
    /// PEEK; WAIT belongs to [`Engine::fsctl_wait`] (no open handle), and any
    /// other code is `STATUS_INVALID_DEVICE_REQUEST`.
    pub fn fsctl(
        &self,
        code: u32,
        input: impl Into<Bytes> + 'static,
        max_out: usize,
    ) -> Request<Transfer> {
        match code {
            fsctl::FSCTL_PIPE_TRANSCEIVE => self.transceive(input, max_out),
            fsctl::FSCTL_PIPE_PEEK => self.peek(max_out),
            fsctl::FSCTL_PIPE_WAIT => Request::ready(
                self.engine.clone(),
                Err(NtStatus::INVALID_PARAMETER),
                conv_transfer,
            ),
            _ => Request::ready(
                self.engine.clone(),
                Err(NtStatus::INVALID_DEVICE_REQUEST),
                conv_transfer,
            ),
        }
    }

    /// Closes the pipe: the socket is shut down both ways, requests in
    /// flight end (`STATUS_CANCELLED`), and the descriptor is closed after
    /// the last of them completed. The request completes then.
    pub fn close(mut self) -> Request<()> {
        self.closed = true;
        let shared = Shared::new();
        self.engine.send(
            self.id.ring,
            Command::Close {
                pipe: self.id,
                notify: Some(Notify::Shared(shared.clone())),
            },
        );
        Request::new(shared, self.engine.clone(), self.id.ring, conv_unit)
    }
}

impl Drop for Pipe {
    fn drop(&mut self) {
        if !self.closed {
            self.engine.send(
                self.id.ring,
                Command::Close {
                    pipe: self.id,
                    notify: None,
                },
            );
        }
    }
}
