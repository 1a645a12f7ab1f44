//! Starting and stopping a service: the backend choice, the sockets on
//! disk, the service threads (one event loop each: io_uring or epoll), the
//! shutdown eventfd, and the handle.

use std::fmt;
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::OwnedFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::protocol::{NtStatus, PipeName};
use crate::ring::server::{EventLoop, LoopConfig, LoopCounters};
use crate::ring::server_epoll::EpollLoop;
use crate::ring::sys::eventfd;
use crate::ring::RingError;

use super::backend::{resolve, Backend, BackendChoice};
use super::handler::{EchoFactory, HandlerFactory};
use super::session::{AcceptAll, AcceptPolicy, PipeAcceptor, PipeSlot, Shared};
use super::stats::{Counters, Stats};

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
                "{}: address in use (another service is accepting on it)",
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
    pipes: Vec<String>,
    factory: Box<dyn HandlerFactory>,
    policy: Box<dyn AcceptPolicy>,
    deny_anonymous: bool,
    max_opens: Option<u64>,
    threads: usize,
    handshake_timeout: Duration,
    loop_cfg: LoopConfig,
    backend: BackendChoice,
}

impl fmt::Debug for ServiceBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceBuilder")
            .field("dir", &self.dir)
            .field("pipes", &self.pipes)
            .field("deny_anonymous", &self.deny_anonymous)
            .field("max_opens", &self.max_opens)
            .field("threads", &self.threads)
            .field("handshake_timeout", &self.handshake_timeout)
            .field("loop_cfg", &self.loop_cfg)
            .field("backend", &self.backend)
            .finish_non_exhaustive()
    }
}

/// Entry point of the service API; see [`Service::builder`].
#[derive(Debug)]
pub struct Service;

impl Service {
    /// A service whose sockets live in `dir` (which must exist). Defaults:
    /// echo handler, every open accepted, no open limit, 1 thread, 10 s
    /// handshake deadline, [`BackendChoice::Auto`].
    pub fn builder(dir: impl Into<PathBuf>) -> ServiceBuilder {
        ServiceBuilder {
            dir: dir.into(),
            pipes: Vec::new(),
            factory: Box::new(EchoFactory),
            policy: Box::new(AcceptAll),
            deny_anonymous: false,
            max_opens: None,
            threads: 1,
            handshake_timeout: Duration::from_secs(10),
            loop_cfg: LoopConfig::default(),
            backend: BackendChoice::Auto,
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
    /// socket is `<dir>/<name>`.
    pub fn pipe(mut self, name: impl Into<String>) -> Self {
        self.pipes.push(name.into());
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

    /// Creates the sockets, starts the threads and returns once every
    /// thread's event loop is up.
    ///
    /// With [`BackendChoice::Auto`], io_uring is probed first (a ring, the
    /// opcodes the loop needs, a provided-buffer ring); if that fails the
    /// service runs on epoll and one line on stderr says so and why
    /// ([`ServiceHandle::fallback_reason`] has the same text).
    pub fn start(self) -> Result<ServiceHandle, ServiceError> {
        if self.threads == 0 || self.threads > 1024 {
            return Err(ServiceError::Config(format!(
                "thread count {} not in 1..=1024",
                self.threads
            )));
        }
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
        let (backend, why) = resolve(self.backend);
        let fallback_reason = why.map(|e| e.to_string());
        if let Some(why) = &fallback_reason {
            tracing::warn!("opipe service: using epoll: {why}");
        }
        let mut sockets = Sockets::default();
        for name in &names {
            sockets.bind(&self.dir.join(name.as_str()))?;
        }
        let shutdown = Arc::new(eventfd().map_err(|err| ServiceError::Io {
            what: "eventfd".into(),
            err,
        })?);
        let loop_counters = Arc::new(LoopCounters::default());
        let shared = Arc::new(Shared {
            pipes: names
                .into_iter()
                .map(|name| PipeSlot {
                    name,
                    open: AtomicU64::new(0),
                })
                .collect(),
            factory: self.factory,
            policy: self.policy,
            deny_anonymous: self.deny_anonymous,
            max_opens: self.max_opens,
            handshake_timeout: self.handshake_timeout,
            counters: Counters::default(),
            loop_counters: loop_counters.clone(),
        });
        let mut handle = ServiceHandle {
            shared,
            threads: Vec::new(),
            shutdown_fd: shutdown.clone(),
            sockets,
            backend,
            fallback_reason,
        };
        let (ready_tx, ready_rx) = mpsc::channel::<Result<(), ServiceError>>();
        for i in 0..self.threads {
            let mut cfg = self.loop_cfg.clone();
            cfg.max_buffered_bytes = thread_budget;
            let listeners = handle.sockets.fds();
            let (shutdown, counters, shared) = (
                shutdown.clone(),
                loop_counters.clone(),
                handle.shared.clone(),
            );
            let ready = ready_tx.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("opipe-svc-{i}"))
                .spawn(move || {
                    // The loop is made on the thread that runs it.
                    let acceptor = PipeAcceptor { shared };
                    let r = match backend {
                        Backend::IoUring => {
                            match EventLoop::new(cfg, listeners, shutdown.clone(), counters) {
                                Ok(ev) => {
                                    let _ = ready.send(Ok(()));
                                    ev.run(acceptor)
                                }
                                Err(e) => {
                                    let _ = ready.send(Err(ServiceError::Ring(e)));
                                    return Ok(());
                                }
                            }
                        }
                        Backend::Epoll => {
                            match EpollLoop::new(cfg, listeners, shutdown.clone(), counters) {
                                Ok(ev) => {
                                    let _ = ready.send(Ok(()));
                                    ev.run(acceptor)
                                }
                                Err(err) => {
                                    let _ = ready.send(Err(ServiceError::Io {
                                        what: "setting up epoll".into(),
                                        err,
                                    }));
                                    return Ok(());
                                }
                            }
                        }
                    };
                    if r.is_err() {
                        // Fail loudly: stop the whole service rather
                        // than serve on with a dead thread.
                        let _ = signal_eventfd(&shutdown);
                    }
                    r
                });
            match spawned {
                Ok(t) => handle.threads.push(t),
                Err(err) => {
                    return Err(ServiceError::Io {
                        what: "spawning a service thread".into(),
                        err,
                    })
                }
            }
        }
        drop(ready_tx);
        for _ in 0..handle.threads.len() {
            match ready_rx.recv() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(e),
                Err(_) => {
                    return Err(ServiceError::Io {
                        what: "service thread start-up".into(),
                        err: io::Error::other("a service thread ended during start-up"),
                    })
                }
            }
        }
        Ok(handle)
    }
}

/// Makes the shutdown eventfd readable (for every loop watching it).
fn signal_eventfd(fd: &OwnedFd) -> io::Result<()> {
    File::from(fd.try_clone()?).write_all(&1u64.to_ne_bytes())
}

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
    fn bind(&mut self, path: &Path) -> Result<(), ServiceError> {
        let io_err = |what: &str, err| ServiceError::Io {
            what: format!("{what} {}", path.display()),
            err,
        };
        let listener = match UnixListener::bind(path) {
            Ok(l) => l,
            Err(e) if e.kind() == io::ErrorKind::AddrInUse => {
                let meta = std::fs::symlink_metadata(path).map_err(|e| io_err("stat", e))?;
                if !meta.file_type().is_socket() {
                    return Err(ServiceError::NotASocket(path.to_owned()));
                }
                match UnixStream::connect(path) {
                    Ok(_) => return Err(ServiceError::AddrInUse(path.to_owned())),
                    Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                        // Stale: left by a service that is gone.
                        std::fs::remove_file(path)
                            .map_err(|e| io_err("removing stale socket", e))?;
                        UnixListener::bind(path).map_err(|e| io_err("binding", e))?
                    }
                    Err(e) => return Err(io_err("probing existing socket", e)),
                }
            }
            Err(e) => return Err(io_err("binding", e)),
        };
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

/// A running service. Dropping it shuts the service down, waits for its
/// threads and removes its sockets.
pub struct ServiceHandle {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<io::Result<()>>>,
    shutdown_fd: Arc<OwnedFd>,
    sockets: Sockets,
    backend: Backend,
    fallback_reason: Option<String>,
}

impl fmt::Debug for ServiceHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceHandle")
            .field("sockets", &self.sockets.paths())
            .field("threads", &self.threads.len())
            .field("backend", &self.backend)
            .finish()
    }
}

impl ServiceHandle {
    /// The socket paths, in the order the pipes were given.
    pub fn socket_paths(&self) -> Vec<PathBuf> {
        self.sockets.paths()
    }

    /// The event loop backend the service threads run.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Why [`BackendChoice::Auto`] fell back to epoll (the io_uring set-up
    /// error, as text); `None` when the backend is the one asked for.
    pub fn fallback_reason(&self) -> Option<&str> {
        self.fallback_reason.as_deref()
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
        signal_eventfd(&self.shutdown_fd)
    }

    /// True once any service thread has ended: after [`shutdown`](Self::shutdown),
    /// or after a thread failed (which shuts the whole service down;
    /// [`join`](Self::join) returns the error).
    pub fn is_finished(&self) -> bool {
        self.threads.iter().any(|t| t.is_finished())
    }

    /// Waits for the threads to end (call [`shutdown`](Self::shutdown)
    /// first, or this waits forever), then removes the sockets. Returns the
    /// first thread error.
    pub fn join(mut self) -> io::Result<()> {
        self.join_threads()
    }

    fn join_threads(&mut self) -> io::Result<()> {
        let mut result = Ok(());
        for t in self.threads.drain(..) {
            let r = match t.join() {
                Ok(r) => r,
                Err(_) => Err(io::Error::other("a service thread panicked")),
            };
            if result.is_ok() {
                result = r;
            }
        }
        self.sockets.remove();
        result
    }
}

impl Drop for ServiceHandle {
    fn drop(&mut self) {
        if !self.threads.is_empty() {
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
