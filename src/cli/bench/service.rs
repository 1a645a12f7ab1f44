//! The pipe service a bench runs against: either a child process of this
//! same binary (`opipe serve ...`) in a private temporary directory, or a
//! service somebody else already runs (`--dir`).
//!
//! The child is owned by a guard: dropping [`ServiceChild`] (end of the run,
//! an error, a panic unwinding) stops and reaps the process and removes its
//! directory, so a bench never leaves a process or a socket behind; while
//! they exist, both are listed in the bench's [`Cleanup`] for its signal
//! thread and stall watchdog. The `--smb2` bench starts the same child with
//! the srvsvc handler ([`ChildHandler::Srvsvc`]).

use std::ffi::OsString;
use std::fmt;
use std::fs;
use std::io;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use opipe::protocol::Dialect;

use super::daemon::{self, private_dir, Cleanup};
use crate::serve_child::ServeChild;

/// How long a freshly started service may take to accept its first connection.
const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a service gets to exit after SIGTERM before it is killed.
const TERM_GRACE: Duration = Duration::from_secs(2);
/// The child's stderr, in its directory.
const LOG: &str = "service.log";

/// Where a pipe service listens: `<dir>/<pipe>` (illumos) or
/// `<dir>/np/<pipe>` (Samba).
#[derive(Debug, Clone)]
pub struct ServiceAddr {
    /// The pipe directory (illumos: `/var/smb/pipe`; Samba: the directory
    /// that holds `np/`, e.g. samba-dcerpcd's ncalrpc dir).
    pub dir: PathBuf,
    /// The pipe's flat name, e.g. `bench` or `srvsvc` (lower case).
    pub pipe: String,
    /// The pipes' dialect, which decides the socket path.
    pub dialect: Dialect,
}

impl ServiceAddr {
    /// The path of the listening socket.
    pub fn socket_path(&self) -> PathBuf {
        self.dialect.socket_dir(&self.dir).join(&self.pipe)
    }
}

impl fmt::Display for ServiceAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.socket_path().display())
    }
}

/// What to start the child service with.
#[derive(Debug, Clone)]
pub struct ChildConfig {
    /// The pipe name to serve.
    pub pipe: String,
    /// What answers on it.
    pub handler: ChildHandler,
    /// `serve --threads`, if given.
    pub threads: Option<u16>,
    /// `serve --dialect`.
    pub dialect: Dialect,
}

/// The child's `serve --handler`.
#[derive(Debug, Clone)]
pub enum ChildHandler {
    /// `--handler dcerpc --reply-size <stub bytes>`: the pattern replies of
    /// the pipe bench.
    Dcerpc {
        /// Stub bytes the handler puts in each reply.
        reply_stub_bytes: usize,
    },
    /// `--handler srvsvc --server-name <name>`: NetrServerGetInfo, for the
    /// `--smb2` bench.
    Srvsvc {
        /// The server name it reports.
        server_name: String,
    },
}

/// A running `opipe serve` child and its temporary pipe directory.
#[derive(Debug)]
pub struct ServiceChild {
    child: Option<ServeChild>,
    addr: ServiceAddr,
    cleanup: Cleanup,
}

impl ServiceChild {
    /// Starts `<this binary> serve --dir <tmp> --pipe <name> --handler ...
    /// --dialect ...` and waits until its socket accepts connections. The
    /// child and its directory are listed in `cleanup` while they exist.
    pub fn start(cfg: &ChildConfig, cleanup: &Cleanup) -> io::Result<ServiceChild> {
        let dir = private_dir("opipe-bench")?;
        cleanup.dir(&dir);
        let addr = ServiceAddr {
            dir: dir.clone(),
            pipe: cfg.pipe.clone(),
            dialect: cfg.dialect,
        };
        // From here on the guard owns `dir`: every early return cleans up.
        let mut guard = ServiceChild {
            child: None,
            addr,
            cleanup: cleanup.clone(),
        };
        let log_file = fs::File::create(dir.join(LOG))?;
        let mut args: Vec<OsString> = vec![
            "--dir".into(),
            dir.into(),
            "--pipe".into(),
            cfg.pipe.clone().into(),
            "--dialect".into(),
            cfg.dialect.as_str().into(),
        ];
        match &cfg.handler {
            ChildHandler::Dcerpc { reply_stub_bytes } => args.extend([
                "--handler".into(),
                "dcerpc".into(),
                "--reply-size".into(),
                reply_stub_bytes.to_string().into(),
            ]),
            ChildHandler::Srvsvc { server_name } => args.extend([
                "--handler".into(),
                "srvsvc".into(),
                "--server-name".into(),
                server_name.into(),
            ]),
        }
        if let Some(t) = cfg.threads {
            args.extend(["--threads".into(), t.to_string().into()]);
        }
        // Started from the main thread, which lives until the process ends
        // (the child dies with its parent thread).
        let child = ServeChild::start(
            &args,
            Stdio::from(log_file),
            &guard.addr.socket_path(),
            READY_TIMEOUT,
            || guard.log_tail(),
        )?;
        if let Some(pid) = child.pid() {
            cleanup.child(pid);
        }
        guard.child = Some(child);
        Ok(guard)
    }

    /// Where the child listens.
    pub fn addr(&self) -> &ServiceAddr {
        &self.addr
    }

    /// The child's process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(ServeChild::pid)
    }

    /// Fails if the child has exited (between runs: a dead service would
    /// make every later run a wall of errors).
    pub fn check_alive(&mut self) -> Result<(), String> {
        let Some(child) = self.child.as_mut() else {
            return Ok(());
        };
        let pid = child.pid();
        match child.exited() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => {
                self.forget_child(pid);
                Err(format!("the service exited ({status}){}", self.log_tail()))
            }
            Err(e) => Err(format!("the service: {e}")),
        }
    }

    fn forget_child(&mut self, pid: Option<u32>) {
        if let Some(pid) = pid {
            self.cleanup.forget_child(pid);
        }
        self.child = None;
    }

    /// The end of the child's stderr, for error messages.
    pub fn log_tail(&self) -> String {
        daemon::log_tail(&self.addr.dir, &[LOG])
    }
}

impl Drop for ServiceChild {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            if let Some(pid) = child.pid() {
                self.cleanup.forget_child(pid);
            }
            child.stop(TERM_GRACE);
        }
        let _ = fs::remove_dir_all(&self.addr.dir);
        self.cleanup.forget_dir(&self.addr.dir);
    }
}
