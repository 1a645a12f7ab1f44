//! The SMB2 front: an IPC$-only SMB2 server on TCP that embeds the engine.
//!
//! Each thread runs one service event loop (io_uring, or epoll where
//! io_uring is refused) on a shared TCP listener; every accepted
//! connection gets a [`Connection`](super::server::Connection) (the
//! sans-IO SMB2 core) whose pipe operations become [`Engine`] requests.
//! A request's completion wakes the connection on its loop
//! ([`ConnWaker`](crate::ring::service::ConnWaker)), which feeds the
//! result back to the core and sends the response.
//!
//! ```no_run
//! use opipe::engine::{Engine, EngineConfig};
//! use opipe::smb2::front::Smb2Front;
//! let engine = Engine::new(EngineConfig::new("/var/smb/pipe"))?;
//! let front = Smb2Front::builder(engine)
//!     .listen("127.0.0.1:4450".parse()?)
//!     .threads(2)
//!     .start()?;
//! println!("listening on {}", front.local_addr());
//! // ... later:
//! front.shutdown()?;
//! front.join()?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod backend;
mod session;

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use self::backend::EngineBackend;
use self::session::FrontSession;
use super::server::{InterimPolicy, ServerConfig};
use crate::engine::Engine;
use crate::ring::service::runner::{check_thread_count, LoopRole, LoopStartError, LoopThreads};
use crate::ring::service::tcp::{peer_addr, set_tcp_nodelay, tcp_listener};
use crate::ring::service::{Acceptor, LoopConfig, LoopCounters, WakerSlot};
use crate::ring::{Backend, BackendChoice};

/// Counters of a front, shared by its threads (see [`FrontStats`]).
#[derive(Debug, Default)]
pub(crate) struct FrontCounters {
    pub(crate) connections_open: AtomicU64,
    pub(crate) sessions: AtomicU64,
    pub(crate) opens: AtomicU64,
    pub(crate) calls: AtomicU64,
    pub(crate) failed_calls: AtomicU64,
    pub(crate) errors: AtomicU64,
    pub(crate) login_timeouts: AtomicU64,
}

/// A snapshot of a front's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct FrontStats {
    /// TCP connections accepted from the kernel.
    pub connections: u64,
    /// Connections refused (over [`Smb2FrontBuilder::max_connections`]).
    pub refused: u64,
    /// Connections open now.
    pub connections_open: u64,
    /// SMB sessions set up (anonymous or guest).
    pub sessions: u64,
    /// Pipes opened on the engine.
    pub opens: u64,
    /// Pipe operations completed (transceive, read, write, peek, wait).
    pub calls: u64,
    /// Of those and of the opens, the ones that ended with an error status.
    pub failed_calls: u64,
    /// Connections closed for malformed input or a protocol violation.
    pub errors: u64,
    /// Connections closed because no session was set up in time.
    pub login_timeouts: u64,
}

/// Entry point; see [`Smb2Front::builder`].
#[derive(Debug)]
pub struct Smb2Front;

impl Smb2Front {
    /// A front over `engine` (whose dialect and directory say where the
    /// pipes are). Defaults: 127.0.0.1:4450, one thread, 16 384
    /// connections, [`BackendChoice::Auto`], [`ServerConfig::default`].
    pub fn builder(engine: Engine) -> Smb2FrontBuilder {
        Smb2FrontBuilder {
            engine,
            listen: SocketAddr::from(([127, 0, 0, 1], 4450)),
            threads: 1,
            max_connections: 16 * 1024,
            backend: BackendChoice::Auto,
            server: ServerConfig::default(),
            loop_cfg: LoopConfig::default(),
            login_timeout: DEFAULT_LOGIN_TIMEOUT,
        }
    }
}

/// Configures and starts an SMB2 front.
pub struct Smb2FrontBuilder {
    engine: Engine,
    listen: SocketAddr,
    threads: usize,
    max_connections: usize,
    backend: BackendChoice,
    server: ServerConfig,
    loop_cfg: LoopConfig,
    login_timeout: Duration,
}

/// How long a new connection has to set up a session (default of
/// [`Smb2FrontBuilder::login_timeout`]).
pub const DEFAULT_LOGIN_TIMEOUT: Duration = Duration::from_secs(30);

impl fmt::Debug for Smb2FrontBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Smb2FrontBuilder")
            .field("listen", &self.listen)
            .field("threads", &self.threads)
            .field("max_connections", &self.max_connections)
            .field("backend", &self.backend)
            .field("server", &self.server)
            .field("login_timeout", &self.login_timeout)
            .finish_non_exhaustive()
    }
}

impl Smb2FrontBuilder {
    /// The TCP address to listen on (port 0: a free port, see
    /// [`Smb2FrontHandle::local_addr`]).
    pub fn listen(mut self, addr: SocketAddr) -> Self {
        self.listen = addr;
        self
    }

    /// Loop threads (1..=1024), each accepting from the one listener.
    pub fn threads(mut self, n: usize) -> Self {
        self.threads = n;
        self
    }

    /// Connections open at once at most; more are closed as they come.
    pub fn max_connections(mut self, n: usize) -> Self {
        self.max_connections = n;
        self
    }

    /// The event loop backend (default [`BackendChoice::Auto`]).
    pub fn backend(mut self, choice: BackendChoice) -> Self {
        self.backend = choice;
        self
    }

    /// The SMB2 server settings and per-connection limits. Its
    /// [`interim`](ServerConfig::interim) policy is set to
    /// [`InterimPolicy::BlockingOnly`] (every engine request completes
    /// later; only what waits on a peer is answered `STATUS_PENDING`).
    pub fn server_config(mut self, cfg: ServerConfig) -> Self {
        self.server = cfg;
        self
    }

    /// A connection that has not set up a session after `d` is closed
    /// (default [`DEFAULT_LOGIN_TIMEOUT`]).
    pub fn login_timeout(mut self, d: Duration) -> Self {
        self.login_timeout = d;
        self
    }

    /// Unsent response bytes per connection above which its requests stop
    /// being read (default 256 KiB; reading resumes below a quarter), and
    /// response bytes each thread may hold in all (default 256 MiB).
    pub fn output_limits(mut self, per_connection: usize, per_thread: usize) -> Self {
        self.loop_cfg.output_high_water_bytes = per_connection;
        self.loop_cfg.output_low_water_bytes = per_connection / 4;
        self.loop_cfg.max_buffered_bytes = per_thread;
        self
    }

    /// The NetBIOS name in NTLM challenges (default `OPIPE`).
    pub fn server_name(mut self, name: impl Into<String>) -> Self {
        self.server.server_name = name.into();
        self
    }

    /// Binds the listener, starts the threads and returns once every
    /// thread's loop is up.
    pub fn start(self) -> io::Result<Smb2FrontHandle> {
        check_thread_count(self.threads)
            .map_err(|m| io::Error::new(io::ErrorKind::InvalidInput, m))?;
        if self.max_connections == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "max connections must be at least 1",
            ));
        }
        let (listener, local_addr) = tcp_listener(self.listen)?;
        let loop_counters = Arc::new(LoopCounters::default());
        let counters = Arc::new(FrontCounters::default());
        let mut server = self.server;
        server.interim = InterimPolicy::BlockingOnly;
        let shared = Arc::new(Shared {
            engine: self.engine,
            server,
            max_connections: self.max_connections as u64,
            counters,
            seed: crate::rng::SplitMix64::mix(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos() as u64)
                    .unwrap_or(0)
                    ^ u64::from(std::process::id()),
            ),
            next_conn: AtomicU64::new(0),
            login_timeout: self.login_timeout,
        });
        let loops = LoopThreads::start(
            ROLE,
            self.backend,
            self.threads,
            &self.loop_cfg,
            &[Arc::new(listener)],
            &loop_counters,
            || FrontAcceptor {
                shared: shared.clone(),
            },
        )
        .map_err(|e| match e {
            LoopStartError::Eventfd(e) | LoopStartError::Epoll(e) | LoopStartError::Spawn(e) => e,
            LoopStartError::Ring(e) => io::Error::other(e.to_string()),
            LoopStartError::Ended => io::Error::other("a front thread ended at start"),
        })?;
        Ok(Smb2FrontHandle {
            shared,
            loop_counters,
            loops,
            local_addr,
        })
    }
}

/// The front's loop threads.
const ROLE: LoopRole = LoopRole {
    thread_prefix: "opipe-smb2",
    log: "smb2",
    noun: "front",
};

/// What every thread of a front shares.
struct Shared {
    engine: Engine,
    server: ServerConfig,
    max_connections: u64,
    counters: Arc<FrontCounters>,
    seed: u64,
    next_conn: AtomicU64,
    login_timeout: Duration,
}

/// Makes a [`FrontSession`] for each accepted TCP connection.
struct FrontAcceptor {
    shared: Arc<Shared>,
}

impl fmt::Debug for FrontAcceptor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FrontAcceptor").finish_non_exhaustive()
    }
}

impl Acceptor for FrontAcceptor {
    type Session = FrontSession;

    fn accept(&mut self, _listener: usize, _conn: BorrowedFd<'_>) -> Option<FrontSession> {
        // The loops call accept_with_waker; a session without a waker
        // could never hear of its engine requests.
        None
    }

    fn accept_with_waker(
        &mut self,
        _listener: usize,
        conn: BorrowedFd<'_>,
        waker: WakerSlot<'_>,
    ) -> Option<FrontSession> {
        let s = &self.shared;
        let open = s.counters.connections_open.fetch_add(1, Ordering::Relaxed);
        if open >= s.max_connections {
            s.counters.connections_open.fetch_sub(1, Ordering::Relaxed);
            tracing::debug!("opipe smb2: connection refused: at the connection limit");
            return None;
        }
        if let Err(e) = set_tcp_nodelay(conn.as_fd()) {
            tracing::debug!(error = %e, "opipe smb2: TCP_NODELAY");
        }
        let client = peer_addr(conn).unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
        let n = s.next_conn.fetch_add(1, Ordering::Relaxed);
        let backend =
            EngineBackend::new(s.engine.clone(), waker.waker().waker(), s.counters.clone());
        Some(FrontSession::new(
            s.server.clone(),
            client,
            s.seed ^ crate::rng::SplitMix64::mix(n),
            backend,
            s.counters.clone(),
            Instant::now() + s.login_timeout,
        ))
    }
}

/// A running front. Dropping it does not stop it: call
/// [`shutdown`](Self::shutdown) and [`join`](Self::join).
pub struct Smb2FrontHandle {
    shared: Arc<Shared>,
    loop_counters: Arc<LoopCounters>,
    loops: LoopThreads,
    local_addr: SocketAddr,
}

impl fmt::Debug for Smb2FrontHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Smb2FrontHandle")
            .field("local_addr", &self.local_addr)
            .field("threads", &self.loops.len())
            .field("backend", &self.loops.backend())
            .finish_non_exhaustive()
    }
}

impl Smb2FrontHandle {
    /// The address the listener is bound to (the port picked, for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The event loop backend in use.
    pub fn backend(&self) -> Backend {
        self.loops.backend()
    }

    /// Why [`BackendChoice::Auto`] fell back to epoll, if it did.
    pub fn fallback_reason(&self) -> Option<&str> {
        self.loops.fallback_reason()
    }

    /// The engine behind the front.
    pub fn engine(&self) -> &Engine {
        &self.shared.engine
    }

    /// The counters now.
    pub fn stats(&self) -> FrontStats {
        let c = &self.shared.counters;
        FrontStats {
            connections: self.loop_counters.accepted.load(Ordering::Relaxed),
            refused: self.loop_counters.refused.load(Ordering::Relaxed),
            connections_open: c.connections_open.load(Ordering::Relaxed),
            sessions: c.sessions.load(Ordering::Relaxed),
            opens: c.opens.load(Ordering::Relaxed),
            calls: c.calls.load(Ordering::Relaxed),
            failed_calls: c.failed_calls.load(Ordering::Relaxed),
            errors: c.errors.load(Ordering::Relaxed),
            login_timeouts: c.login_timeouts.load(Ordering::Relaxed),
        }
    }

    /// True once a thread has ended (after a shutdown, or a failure).
    pub fn is_finished(&self) -> bool {
        self.loops.is_finished()
    }

    /// Asks every thread to close its connections and stop.
    pub fn shutdown(&self) -> io::Result<()> {
        self.loops.shutdown()
    }

    /// Waits for the threads to end (after [`shutdown`](Self::shutdown));
    /// the first thread error, if any.
    pub fn join(mut self) -> io::Result<()> {
        self.loops.join()
    }
}
