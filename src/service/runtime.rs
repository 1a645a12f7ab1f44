//! Starting and stopping a service: the backend choice, the sockets on
//! disk, the service threads (one event loop each: io_uring or epoll), the
//! shutdown eventfd, and the handle.

use std::fmt;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::protocol::{Dialect, NtStatus, PipeName};
use crate::ring::service::runner::{check_thread_count, LoopRole, LoopStartError, LoopThreads};
use crate::ring::service::{LoopConfig, LoopCounters};
use crate::ring::sys::{effective_uid, probe_unix_listener};
use crate::ring::RingError;

use super::handler::{EchoFactory, HandlerFactory};
use super::session::{AcceptAll, AcceptPolicy, PeerUids, PipeAcceptor, PipeSlot, Shared};
use super::stats::{Counters, Stats};
use crate::ring::{Backend, BackendChoice};

/// Why a service could not start.
#[derive(Debug)]
#[non_exhaustive]
pub enum ServiceError {
    /// No pipe name was configured.
    NoPipes,
    /// A pipe name is not a valid flat name.
    BadPipeName {
        /// The name as given.
        name: String,
        /// What [`PipeName::parse`] answered.
        status: NtStatus,
    },
    /// The same pipe name was given twice.
    DuplicatePipe(String),
    /// The socket directory does not exist (or is not a directory).
    NoSuchDir(PathBuf),
    /// A service is already accepting on this socket.
    AddrInUse(PathBuf),
    /// Something that is not a socket sits where a socket should be made.
    NotASocket(PathBuf),
    /// A configuration value is out of range.
    Config(String),
    /// io_uring could not be set up.
    Ring(RingError),
    /// Another system error, with the path it concerned if any.
    Io {
        /// What was being done.
        what: String,
        /// The error.
        err: io::Error,
    },
}

impl fmt::Display for ServiceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServiceError::NoPipes => f.write_str("no pipe name to serve"),
            ServiceError::BadPipeName { name, status } => {
                write!(f, "invalid pipe name {name:?}: {status}")
            }
            ServiceError::DuplicatePipe(n) => write!(f, "pipe name {n:?} given twice"),
            ServiceError::NoSuchDir(d) => {
                write!(
                    f,
                    "socket directory {} does not exist or is not a directory",
                    d.display()
                )
            }
            ServiceError::AddrInUse(p) => write!(
                f,
                "{}: address in use (another service is listening on it)",
                p.display()
            ),
            ServiceError::NotASocket(p) => write!(
                f,
                "{}: exists and is not a socket; refusing to replace it",
                p.display()
            ),
            ServiceError::Config(m) => write!(f, "invalid service configuration: {m}"),
            ServiceError::Ring(e) => write!(f, "{e}"),
            ServiceError::Io { what, err } => write!(f, "{what}: {err}"),
        }
    }
}

impl std::error::Error for ServiceError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ServiceError::Ring(e) => Some(e),
            ServiceError::Io { err, .. } => Some(err),
            _ => None,
        }
    }
}

impl From<ServiceError> for io::Error {
    fn from(e: ServiceError) -> io::Error {
        let kind = match &e {
            ServiceError::NoSuchDir(_) => io::ErrorKind::NotFound,
            ServiceError::AddrInUse(_) => io::ErrorKind::AddrInUse,
            ServiceError::NotASocket(_) => io::ErrorKind::AlreadyExists,
            ServiceError::Io { err, .. } => err.kind(),
            ServiceError::Ring(_) => io::ErrorKind::Unsupported,
            _ => io::ErrorKind::InvalidInput,
        };
        io::Error::new(kind, e)
    }
}

/// Configures and starts a pipe service.
///
/// ```no_run
/// use opipe::service::{EchoFactory, Service};
/// let svc = Service::builder("/run/opipe")
///     .pipe("srvsvc")
///     .handler(EchoFactory)
///     .max_opens(200)
///     .start()?;
/// // ... later:
/// svc.shutdown()?;
/// svc.join()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct ServiceBuilder {
    dir: PathBuf,
    dialect: Dialect,
    pipes: Vec<String>,
    factory: Box<dyn HandlerFactory>,
    policy: Box<dyn AcceptPolicy>,
    deny_anonymous: bool,
    max_opens: Option<u64>,
    threads: usize,
    handshake_timeout: Duration,
    loop_cfg: LoopConfig,
    backend: BackendChoice,
    socket_mode: u32,
    allowed_uids: Vec<u32>,
    any_uid: bool,
}

/// The default mode of a service's sockets: owner only. Connecting to an
/// AF_UNIX socket needs write permission on it (`unix(7)`).
pub const DEFAULT_SOCKET_MODE: u32 = 0o600;

impl fmt::Debug for ServiceBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceBuilder")
            .field("dir", &self.dir)
            .field("dialect", &self.dialect)
            .field("pipes", &self.pipes)
            .field("deny_anonymous", &self.deny_anonymous)
            .field("max_opens", &self.max_opens)
            .field("threads", &self.threads)
            .field("handshake_timeout", &self.handshake_timeout)
            .field("loop_cfg", &self.loop_cfg)
            .field("backend", &self.backend)
            .field("socket_mode", &format_args!("{:04o}", self.socket_mode))
            .field("allowed_uids", &self.allowed_uids)
            .field("any_uid", &self.any_uid)
            .finish_non_exhaustive()
    }
}

/// Entry point of the service API; see [`Service::builder`].
#[derive(Debug)]
pub struct Service;

impl Service {
    /// A service whose sockets live in `dir` (which must exist). Defaults:
    /// echo handler, every open accepted, no open limit, 1 thread, 10 s
    /// handshake deadline, [`BackendChoice::Auto`], sockets of mode 0600
    /// whatever the umask, and only peers running as the service's own uid
    /// or root.
    pub fn builder(dir: impl Into<PathBuf>) -> ServiceBuilder {
        ServiceBuilder {
            dir: dir.into(),
            dialect: Dialect::Illumos,
            pipes: Vec::new(),
            factory: Box::new(EchoFactory),
            policy: Box::new(AcceptAll),
            deny_anonymous: false,
            max_opens: None,
            threads: 1,
            handshake_timeout: Duration::from_secs(10),
            loop_cfg: LoopConfig::default(),
            backend: BackendChoice::Auto,
            socket_mode: DEFAULT_SOCKET_MODE,
            allowed_uids: Vec::new(),
            any_uid: false,
        }
    }
}

/// The smallest share of [`ServiceBuilder::max_buffered_bytes`] a thread
/// may get: a thread must be able to hold a few replies.
const MIN_THREAD_BUDGET_BYTES: usize = 256 << 10;

/// The default handshake deadline.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

impl ServiceBuilder {
    /// Serves the pipe `name`: a flat name such as `srvsvc` (lower-cased,
    /// like the SMB side does) or an SMB path such as `\PIPE\srvsvc`. The
    /// socket is `<dir>/<name>`, or `<dir>/np/<name>` in the Samba dialect.
    pub fn pipe(mut self, name: impl Into<String>) -> Self {
        self.pipes.push(name.into());
        self
    }

    /// The dialect the service speaks (default [`Dialect::Illumos`]).
    ///
    /// [`Dialect::Samba`]: the sockets are `<dir>/np/<name>` (the `np`
    /// directory is created with mode 0700 if missing; smbd connects as
    /// root), each connection opens with Samba's named-pipe-auth request
    /// (levels 7 and 8, at most
    /// [`MAX_NPA_REQUEST_BYTES`](super::handshake::MAX_NPA_REQUEST_BYTES),
    /// within the handshake timeout; bad input is closed without a reply
    /// like bad illumos input), is decided like an illumos open (anonymous
    /// users, policy, open limit) and answered with the NPA reply (message
    /// mode, device state 0x05ff, allocation 4096, the status); after it,
    /// every message both ways has a `u16` little-endian length, the
    /// handler gets each received message whole in one call, and its
    /// output is cut into messages by
    /// [`Handler::message_boundaries`](super::Handler::message_boundaries).
    /// Point smbd at it with `external_rpc_pipe:socket_dir = <dir>`.
    pub fn dialect(mut self, dialect: Dialect) -> Self {
        self.dialect = dialect;
        self
    }

    /// The handler factory for every pipe of this service.
    pub fn handler(mut self, factory: impl HandlerFactory) -> Self {
        self.factory = Box::new(factory);
        self
    }

    /// The accept policy (default: accept everybody).
    pub fn policy(mut self, policy: impl AcceptPolicy) -> Self {
        self.policy = Box::new(policy);
        self
    }

    /// Answer `STATUS_ACCESS_DENIED` to users with the anonymous flag.
    pub fn deny_anonymous(mut self, yes: bool) -> Self {
        self.deny_anonymous = yes;
        self
    }

    /// At most `n` concurrent opens per pipe name; over it the answer is
    /// `STATUS_PIPE_NOT_AVAILABLE` (illumos: 200 for srvsvc, 50 others).
    pub fn max_opens(mut self, n: u64) -> Self {
        self.max_opens = Some(n);
        self
    }

    /// Number of service threads, each with its own event loop (default 1).
    pub fn threads(mut self, n: usize) -> Self {
        self.threads = n;
        self
    }

    /// A connection that has not completed its handshake after `d` is
    /// closed without a status (default 10 s).
    pub fn handshake_timeout(mut self, d: Duration) -> Self {
        self.handshake_timeout = d;
        self
    }

    /// Receive buffers per thread: `count` (a power of two) of `bytes` each
    /// (default 512 x 16 KiB). The epoll backend uses one scratch buffer of
    /// `bytes` per thread instead.
    pub fn recv_buffers(mut self, count: u16, bytes: u32) -> Self {
        self.loop_cfg.recv_buffers = count;
        self.loop_cfg.recv_buffer_bytes = bytes;
        self
    }

    /// Per-connection unsent output above which the client stops being read
    /// (default 256 KiB); reading resumes below a quarter of it.
    pub fn output_limit(mut self, bytes: usize) -> Self {
        self.loop_cfg.output_high_water_bytes = bytes;
        self.loop_cfg.output_low_water_bytes = bytes / 4;
        self
    }

    /// Output bytes the whole service may hold for its connections
    /// (default 256 MiB, split evenly among the threads): over it, a
    /// thread stops reading requests, and handlers stop producing replies,
    /// until its connections are back under three quarters of its share.
    /// Connections are paused, not dropped. With
    /// [`output_limit`](Self::output_limit) per connection, this bounds the
    /// service's memory whatever the number of clients that never read.
    pub fn max_buffered_bytes(mut self, bytes: usize) -> Self {
        self.loop_cfg.max_buffered_bytes = bytes;
        self
    }

    /// Connections each thread holds at most (default 1 Mi); more are
    /// closed as soon as they are accepted.
    pub fn max_connections_per_thread(mut self, n: usize) -> Self {
        self.loop_cfg.max_connections = n;
        self
    }

    /// The event loop backend (default [`BackendChoice::Auto`]: io_uring
    /// where the kernel grants it, else epoll).
    pub fn backend(mut self, choice: BackendChoice) -> Self {
        self.backend = choice;
        self
    }

    /// The permission bits of the sockets (default 0600, [`DEFAULT_SOCKET_MODE`]);
    /// set exactly, whatever the umask. Widen it (e.g. 0660 with a group
    /// the SMB server is in) when the SMB server runs as another user.
    /// Only the 0777 bits are allowed.
    pub fn socket_mode(mut self, mode: u32) -> Self {
        self.socket_mode = mode;
        self
    }

    /// Also admits peers running as `uid` (the kernel's `SO_PEERCRED` of
    /// the connection, checked on accept, before the handshake is read).
    /// The service's own uid and root are always admitted; any other peer
    /// is closed at once and counted in [`Stats::peers_refused`].
    pub fn allow_uid(mut self, uid: u32) -> Self {
        self.allowed_uids.push(uid);
        self
    }

    /// Admits every peer that can reach the socket (no `SO_PEERCRED`
    /// check; the socket's mode and directory are then the only guard).
    pub fn allow_any_uid(mut self) -> Self {
        self.any_uid = true;
        self
    }

    /// Creates the sockets, starts the threads and returns once every
    /// thread's event loop is up.
    ///
    /// Sockets are made with [`socket_mode`](Self::socket_mode) and no
    /// moment of a wider one (see `Sockets::bind`). A socket file already
    /// at a pipe's path is probed with a nonblocking connect: a live
    /// listener (one that accepts, or one whose backlog is full) is
    /// [`ServiceError::AddrInUse`]; a stale file is replaced. Start never
    /// waits on another process. A directory writable by other users is
    /// warned about (tracing `warn`): they could put their own socket
    /// under a pipe's name while the service is down.
    ///
    /// With [`BackendChoice::Auto`], io_uring is probed first (a ring, the
    /// opcodes the loop needs, a provided-buffer ring); if that fails the
    /// service runs on epoll and one line on stderr says so and why
    /// ([`ServiceHandle::fallback_reason`] has the same text).
    pub fn start(self) -> Result<ServiceHandle, ServiceError> {
        check_thread_count(self.threads).map_err(ServiceError::Config)?;
        if self.pipes.is_empty() {
            return Err(ServiceError::NoPipes);
        }
        let thread_budget = self.loop_cfg.max_buffered_bytes / self.threads;
        if thread_budget < MIN_THREAD_BUDGET_BYTES {
            return Err(ServiceError::Config(format!(
                "max buffered bytes {} is below {} KiB per thread",
                self.loop_cfg.max_buffered_bytes,
                MIN_THREAD_BUDGET_BYTES >> 10
            )));
        }
        let mut names: Vec<PipeName> = Vec::new();
        for raw in &self.pipes {
            let name = parse_service_name(raw).map_err(|status| ServiceError::BadPipeName {
                name: raw.clone(),
                status,
            })?;
            if names.contains(&name) {
                return Err(ServiceError::DuplicatePipe(name.as_str().to_owned()));
            }
            names.push(name);
        }
        if !self.dir.is_dir() {
            return Err(ServiceError::NoSuchDir(self.dir));
        }
        if self.socket_mode & !0o777 != 0 {
            return Err(ServiceError::Config(format!(
                "socket mode {:o} has bits beyond 0777",
                self.socket_mode
            )));
        }
        let socket_dir = self.dialect.socket_dir(&self.dir);
        if socket_dir != self.dir {
            match std::fs::DirBuilder::new().mode(0o700).create(&socket_dir) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists && socket_dir.is_dir() => {}
                Err(err) => {
                    return Err(ServiceError::Io {
                        what: format!("creating {}", socket_dir.display()),
                        err,
                    })
                }
            }
        }
        warn_if_dir_writable_by_others(&socket_dir);
        let peers = if self.any_uid {
            PeerUids::Any
        } else {
            let mut uids = vec![effective_uid(), 0];
            uids.extend(&self.allowed_uids);
            uids.sort_unstable();
            uids.dedup();
            PeerUids::Only(uids)
        };
        let mut sockets = Sockets::default();
        for name in &names {
            sockets.bind(&self.dialect.socket_path(&self.dir, name), self.socket_mode)?;
        }
        let loop_counters = Arc::new(LoopCounters::default());
        let shared = Arc::new(Shared {
            dialect: self.dialect,
            pipes: names
                .into_iter()
                .map(|name| PipeSlot {
                    name,
                    open: AtomicU64::new(0),
                })
                .collect(),
            peers,
            factory: self.factory,
            policy: self.policy,
            deny_anonymous: self.deny_anonymous,
            max_opens: self.max_opens,
            handshake_timeout: self.handshake_timeout,
            counters: Counters::default(),
            loop_counters: loop_counters.clone(),
        });
        let mut cfg = self.loop_cfg;
        cfg.max_buffered_bytes = thread_budget;
        let loops = LoopThreads::start(
            ROLE,
            self.backend,
            self.threads,
            &cfg,
            &sockets.fds(),
            &loop_counters,
            || PipeAcceptor {
                shared: shared.clone(),
            },
        )
        .map_err(|e| match e {
            LoopStartError::Eventfd(err) => ServiceError::Io {
                what: "eventfd".into(),
                err,
            },
            LoopStartError::Ring(e) => ServiceError::Ring(e),
            LoopStartError::Epoll(err) => ServiceError::Io {
                what: "setting up epoll".into(),
                err,
            },
            LoopStartError::Spawn(err) => ServiceError::Io {
                what: "spawning a service thread".into(),
                err,
            },
            LoopStartError::Ended => ServiceError::Io {
                what: "service thread start-up".into(),
                err: io::Error::other("a service thread ended during start-up"),
            },
        })?;
        Ok(ServiceHandle {
            shared,
            loops,
            sockets,
        })
    }
}

/// The service's loop threads.
const ROLE: LoopRole = LoopRole {
    thread_prefix: "opipe-svc",
    log: "service",
    noun: "service",
};

/// A configured name as a pipe name: flat names are taken as the part after
/// `\PIPE\` (so `pipeline` stays `pipeline`); SMB paths are parsed as such.
fn parse_service_name(raw: &str) -> Result<PipeName, NtStatus> {
    if raw.starts_with('\\') {
        PipeName::parse(raw)
    } else {
        PipeName::parse(&format!("\\PIPE\\{raw}"))
    }
}

/// The listening sockets of a service, removed from disk on drop (only if
/// the file is still the one we made).
#[derive(Debug, Default)]
struct Sockets {
    items: Vec<(PathBuf, Arc<OwnedFd>, (u64, u64))>,
}

impl Sockets {
    /// Binds a listening socket at `path` with permission bits `mode`.
    ///
    /// The socket must never be reachable with a wider mode than `mode`,
    /// whatever the umask (a process-wide setting a library must not
    /// touch). So it is bound inside a fresh private directory
    /// (`<dir>/.opipe.N`, created 0700 by us: nobody else may traverse it,
    /// and connecting needs search permission on every directory of the
    /// path), given its mode there with chmod, and only then linked under
    /// its real name, which is the first moment another user can reach it.
    /// The link is a hard link, which fails if the name exists, so a
    /// listener that appeared meanwhile is never replaced; a stale file
    /// found by the probe is removed first. Where the filesystem has no
    /// hard links, a rename puts it in place instead.
    fn bind(&mut self, path: &Path, mode: u32) -> Result<(), ServiceError> {
        let io_err = |what: &str, err| ServiceError::Io {
            what: format!("{what} {}", path.display()),
            err,
        };
        let stale = match std::fs::symlink_metadata(path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => false,
            Err(e) => return Err(io_err("stat", e)),
            Ok(meta) if !meta.file_type().is_socket() => {
                return Err(ServiceError::NotASocket(path.to_owned()))
            }
            Ok(_) => match probe_unix_listener(path) {
                // Queued on a live listener, or its backlog is full: a
                // service is there, busy or not. Never waits.
                Ok(()) => return Err(ServiceError::AddrInUse(path.to_owned())),
                Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => {
                    return Err(ServiceError::AddrInUse(path.to_owned()))
                }
                // Left by a service that is gone.
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => true,
                Err(e) if e.kind() == io::ErrorKind::NotFound => false,
                Err(e) => return Err(io_err("probing existing socket", e)),
            },
        };
        let dir = path.parent().unwrap_or(Path::new("."));
        let private =
            PrivateDir::create(dir).map_err(|e| io_err("making a private directory for", e))?;
        let tmp = private.path.join("s");
        let listener = UnixListener::bind(&tmp).map_err(|e| io_err("binding", e))?;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode))
            .map_err(|e| io_err("setting the mode of", e))?;
        if stale {
            match std::fs::remove_file(path) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => {
                    return Err(io_err("removing stale socket", e))
                }
                _ => {}
            }
        }
        match std::fs::hard_link(&tmp, path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                return Err(ServiceError::AddrInUse(path.to_owned()))
            }
            Err(_) => {
                std::fs::rename(&tmp, path).map_err(|e| io_err("placing the socket at", e))?
            }
        }
        drop(private);
        let meta = std::fs::symlink_metadata(path).map_err(|e| io_err("stat", e))?;
        self.items.push((
            path.to_owned(),
            Arc::new(OwnedFd::from(listener)),
            (meta.dev(), meta.ino()),
        ));
        Ok(())
    }

    fn fds(&self) -> Vec<Arc<OwnedFd>> {
        self.items.iter().map(|(_, fd, _)| fd.clone()).collect()
    }

    fn paths(&self) -> Vec<PathBuf> {
        self.items.iter().map(|(p, _, _)| p.clone()).collect()
    }

    fn remove(&mut self) {
        for (path, _fd, id) in self.items.drain(..) {
            if let Ok(meta) = std::fs::symlink_metadata(&path) {
                if (meta.dev(), meta.ino()) == id {
                    let _ = std::fs::remove_file(&path);
                }
            }
        }
    }
}

impl Drop for Sockets {
    fn drop(&mut self) {
        self.remove();
    }
}

/// A directory only this process's user can enter (mode 0700 whatever the
/// umask, which can only remove bits), removed with what is left in it on
/// drop.
struct PrivateDir {
    path: PathBuf,
}

impl PrivateDir {
    fn create(parent: &Path) -> io::Result<PrivateDir> {
        let mut last = None;
        for n in 0..1000u32 {
            let path = parent.join(format!(".opipe.{n}"));
            match std::fs::DirBuilder::new().mode(0o700).create(&path) {
                Ok(()) => return Ok(PrivateDir { path }),
                // Another service binding meanwhile, or a leftover.
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| io::Error::other("no free private directory name")))
    }
}

impl Drop for PrivateDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(self.path.join("s"));
        let _ = std::fs::remove_dir(&self.path);
    }
}

/// Warns (tracing) when users other than the owner may create or remove
/// files in `dir`: one of them could put a socket of theirs under a pipe's
/// name while the service is down, or remove the service's.
fn warn_if_dir_writable_by_others(dir: &Path) {
    let Ok(meta) = std::fs::metadata(dir) else {
        return;
    };
    let mode = meta.mode() & 0o7777;
    if mode & 0o002 != 0 {
        tracing::warn!(
            "opipe service: socket directory {} is writable by other users (mode {mode:04o}){}; \
             prefer a directory only the service's user can write",
            dir.display(),
            if mode & 0o1000 != 0 { ", sticky" } else { "" }
        );
    }
}

/// A running service. Dropping it shuts the service down, waits for its
/// threads and removes its sockets.
pub struct ServiceHandle {
    shared: Arc<Shared>,
    loops: LoopThreads,
    sockets: Sockets,
}

impl fmt::Debug for ServiceHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceHandle")
            .field("sockets", &self.sockets.paths())
            .field("threads", &self.loops.len())
            .field("backend", &self.loops.backend())
            .finish()
    }
}

impl ServiceHandle {
    /// The socket paths, in the order the pipes were given.
    pub fn socket_paths(&self) -> Vec<PathBuf> {
        self.sockets.paths()
    }

    /// The dialect the service speaks.
    pub fn dialect(&self) -> Dialect {
        self.shared.dialect
    }

    /// The event loop backend the service threads run.
    pub fn backend(&self) -> Backend {
        self.loops.backend()
    }

    /// Why [`BackendChoice::Auto`] fell back to epoll (the io_uring set-up
    /// error, as text); `None` when the backend is the one asked for.
    pub fn fallback_reason(&self) -> Option<&str> {
        self.loops.fallback_reason()
    }

    /// The pipe names served, in the order they were given.
    pub fn pipe_names(&self) -> Vec<PipeName> {
        self.shared.pipes.iter().map(|p| p.name.clone()).collect()
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> Stats {
        Stats::collect(
            &self.shared.counters,
            &self.shared.loop_counters,
            self.shared
                .pipes
                .iter()
                .map(|p| (p.name.as_str(), p.open.load(Ordering::Relaxed))),
        )
    }

    /// Asks every service thread to stop: accepts end, every connection is
    /// closed. Returns at once; [`join`](Self::join) waits.
    pub fn shutdown(&self) -> io::Result<()> {
        self.loops.shutdown()
    }

    /// True once any service thread has ended: after [`shutdown`](Self::shutdown),
    /// or after a thread failed (which shuts the whole service down;
    /// [`join`](Self::join) returns the error).
    pub fn is_finished(&self) -> bool {
        self.loops.is_finished()
    }

    /// Waits for the threads to end (call [`shutdown`](Self::shutdown)
    /// first, or this waits forever), then removes the sockets. Returns the
    /// first thread error.
    pub fn join(mut self) -> io::Result<()> {
        self.join_threads()
    }

    fn join_threads(&mut self) -> io::Result<()> {
        let result = self.loops.join();
        self.sockets.remove();
        result
    }
}

impl Drop for ServiceHandle {
    fn drop(&mut self) {
        if self.loops.len() != 0 {
            let _ = self.shutdown();
            let _ = self.join_threads();
        }
        self.sockets.remove();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_names() {
        assert_eq!(parse_service_name("SrvSvc").unwrap().as_str(), "srvsvc");
        assert_eq!(parse_service_name("pipeline").unwrap().as_str(), "pipeline");
        assert_eq!(
            parse_service_name("\\PIPE\\lsarpc").unwrap().as_str(),
            "lsarpc"
        );
        assert!(parse_service_name("..").is_err());
        assert!(parse_service_name("a/b").is_err());
        assert!(parse_service_name("").is_err());
        assert!(parse_service_name(&"x".repeat(32)).is_err());
    }

    #[test]
    fn config_errors() {
        let dir = tempfile::tempdir().unwrap();
        let e = Service::builder(dir.path()).start().unwrap_err();
        assert!(matches!(e, ServiceError::NoPipes), "{e}");
        let e = Service::builder(dir.path())
            .pipe("a")
            .pipe("A")
            .start()
            .unwrap_err();
        assert!(matches!(e, ServiceError::DuplicatePipe(_)), "{e}");
        let e = Service::builder(dir.path().join("nope"))
            .pipe("a")
            .start()
            .unwrap_err();
        assert!(matches!(e, ServiceError::NoSuchDir(_)), "{e}");
        assert!(e.to_string().contains("does not exist"), "{e}");
        let e = Service::builder(dir.path())
            .pipe("a")
            .threads(0)
            .start()
            .unwrap_err();
        assert!(matches!(e, ServiceError::Config(_)), "{e}");
        std::fs::write(dir.path().join("file"), b"x").unwrap();
        let e = Service::builder(dir.path())
            .pipe("file")
            .start()
            .unwrap_err();
        assert!(matches!(e, ServiceError::NotASocket(_)), "{e}");
        // The regular file is left alone, and nothing else was created.
        assert!(dir.path().join("file").is_file());
    }
}
