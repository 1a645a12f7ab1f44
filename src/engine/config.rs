//! The engine's settings, counters, per-open options and start-up errors.

use std::path::PathBuf;
use std::time::Duration;

use super::command;
use crate::protocol::{fsctl, Dialect, NpaIdentity};
use crate::ring::{BackendChoice, RingError};

/// How socket data moves between the ring and user memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BufferMode {
    /// `IORING_OP_SEND` / `IORING_OP_RECV` on ordinary heap buffers; the
    /// received bytes land directly in the `Vec` handed to the caller.
    Plain,
    /// `IORING_OP_WRITE_FIXED` / `READ_FIXED` on a pool of buffers
    /// registered with the ring (copied in and out). Requests larger than a
    /// slot use plain buffers; a full pool is `STATUS_INSUFFICIENT_RESOURCES`.
    Registered,
}

/// Engine settings. [`EngineConfig::new`] gives the defaults.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// The pipe directory (illumos: `/var/smb/pipe`; Samba: the directory
    /// that holds `np/`, e.g. samba-dcerpcd's ncalrpc dir).
    pub dir: PathBuf,
    /// The pipes' dialect (default [`Dialect::Illumos`]): the handshake an
    /// open runs, the framing after it, and the socket path
    /// (`<dir>/<name>` or `<dir>/np/<name>`).
    pub dialect: Dialect,
    /// Rings, each with its own thread (default 1). Pipes are spread over
    /// them at open time. One ring per CPU is what `opipe bench` uses; what
    /// one and two rings measured is in perf/README.md.
    pub rings: usize,
    /// Buffer mode (default [`BufferMode::Plain`], the faster of the two on
    /// AF_UNIX: perf/README.md).
    /// The epoll backend has no registered buffers and always runs
    /// [`BufferMode::Plain`]; [`Engine::config`](super::Engine::config) reports the effective mode.
    pub buffers: BufferMode,
    /// I/O backend (default [`BackendChoice::Auto`]).
    pub backend: BackendChoice,
    /// Deadline of an open's connect + handshake (default 5 s).
    pub open_timeout: Duration,
    /// WAIT's timeout when the request does not specify one (default 5 s).
    pub wait_default_timeout: Duration,
    /// Submission queue entries per ring (default 256; at least 8, a
    /// smaller value is raised: a chain of SQEs enters the queue whole).
    /// The queue only carries a turn's SQEs to the next submit (more wait
    /// in the driver's backlog), and each SQE is written in its next slot:
    /// a large queue is a cache miss per SQE (perf/README.md, session 15).
    pub sq_entries: u32,
    /// Completion queue entries per ring (default 16384). At least twice
    /// the busy pipes one ring drives is comfortable (a busy pipe can have
    /// a send's completion and a reply chunk pending at once). A smaller
    /// queue is safe: the ring never submits more SQEs than the queue has
    /// room for, and reaps first (its cost is measured in perf/README.md).
    pub cq_entries: u32,
    /// Registered buffer slots per ring (Registered mode; default 1024).
    pub reg_slots: u16,
    /// Bytes per registered slot (default 8192).
    pub reg_slot_bytes: usize,
    /// Buffers in each ring's receive pool (a power of two, default 256;
    /// 0 disables the pool). Receives of up to `recv_pool_buf_bytes` use a
    /// buffer the kernel picks when data ARRIVES, so a pipe waiting for a
    /// reply holds no receive memory.
    pub recv_pool_bufs: u16,
    /// Bytes per receive-pool buffer (default 4280, the pipe message size).
    pub recv_pool_buf_bytes: u32,
    /// Receive through one multishot receive per active pipe (default
    /// true; io_uring with plain buffers and a receive pool): a transceive
    /// is then ONE SEND SQE, its reply the receive's next chunk, and a read
    /// needs no SQE. False: a linked SEND -> RECV chain per transceive.
    pub multishot: bool,
    /// Opens (connect + handshake) one ring runs at once (default 256; 0:
    /// no limit). Later opens wait their turn in order, so a burst of
    /// thousands (a logon storm, a benchmark opening every pipe at once)
    /// neither floods the service's listen queue nor grows the ring's
    /// tables to the burst's size. `open_timeout` counts from an open's
    /// start, not from its wait in line; a waiting open can be cancelled.
    pub max_opens_in_flight: usize,
    /// Commands (opens, I/O, WAITs, cancels, closes) that may wait for one
    /// ring thread to take them (default 1 << 20). Beyond, a new request
    /// ends `STATUS_INSUFFICIENT_RESOURCES` at once: callers that outrun a
    /// ring cannot grow its queue without bound.
    pub max_queued_commands: usize,
}

impl EngineConfig {
    /// Defaults for pipes under `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> EngineConfig {
        EngineConfig {
            dir: dir.into(),
            dialect: Dialect::Illumos,
            rings: 1,
            buffers: BufferMode::Plain,
            backend: BackendChoice::Auto,
            open_timeout: Duration::from_secs(5),
            wait_default_timeout: Duration::from_secs(5),
            sq_entries: 256,
            cq_entries: 16384,
            reg_slots: 1024,
            reg_slot_bytes: 8192,
            recv_pool_bufs: 256,
            recv_pool_buf_bytes: fsctl::SMB_PIPE_MAX_MSGSIZE as u32,
            multishot: true,
            max_opens_in_flight: 256,
            max_queued_commands: command::MAX_QUEUED_COMMANDS,
        }
    }
}

/// Counters of an engine, summed over its rings (see [`Engine::stats`](super::Engine::stats)).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct EngineStats {
    /// Receives that found the receive pool empty (`-ENOBUFS`) and ran
    /// again: with a buffer of their own, or (a pipe's multishot receive)
    /// re-armed for the requests still waiting (io_uring; 0 on epoll,
    /// which has no pool).
    pub recv_pool_fallbacks: u64,
    /// Requests refused with `STATUS_INSUFFICIENT_RESOURCES` because a
    /// ring's command queue was full (see
    /// [`EngineConfig::max_queued_commands`]).
    pub queue_full_refusals: u64,
}

/// Per-open options of [`Engine::open_with`](super::Engine::open_with).
#[derive(Debug, Clone, Default)]
pub struct OpenOptions {
    /// Samba dialect: the caller's identity as sent in the NPA request
    /// (SIDs, uid/gid, groups, addresses). `None`: mapped from the
    /// `NetUserInfo` by [`NpaIdentity::from_net_user_info`]. Ignored in
    /// the illumos dialect.
    pub identity: Option<NpaIdentity>,
}

/// Why an engine could not start.
#[derive(Debug)]
pub enum EngineError {
    /// io_uring could not be set up (the message says why, in plain words).
    Ring(RingError),
    /// A ring thread could not be spawned.
    Thread(std::io::Error),
    /// The epoll backend could not be set up (epoll_create1, eventfd).
    Epoll(std::io::Error),
    /// The configuration is unusable.
    Config(&'static str),
}

impl std::fmt::Display for EngineError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EngineError::Ring(e) => write!(f, "{e}"),
            EngineError::Thread(e) => write!(f, "cannot start a ring thread: {e}"),
            EngineError::Epoll(e) => write!(f, "epoll set-up failed: {e}"),
            EngineError::Config(what) => write!(f, "bad engine configuration: {what}"),
        }
    }
}

impl std::error::Error for EngineError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            EngineError::Ring(e) => Some(e),
            EngineError::Thread(e) => Some(e),
            EngineError::Epoll(e) => Some(e),
            EngineError::Config(_) => None,
        }
    }
}
