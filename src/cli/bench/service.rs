//! The pipe service a bench runs against: either a child process of this
//! same binary (`opipe serve ...`) in a private temporary directory, or a
//! service somebody else already runs (`--dir`).
//!
//! The child is owned by a guard: dropping [`ServiceChild`] (end of the run,
//! an error, a panic unwinding) stops and reaps the process and removes its
//! directory, so a bench never leaves a process or a socket behind.

use std::ffi::OsString;
use std::fmt;
use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::DirBuilderExt;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use opipe::protocol::Dialect;

use super::sys;
use crate::serve_child::ServeChild;

/// How long a freshly started service may take to accept its first connection.
const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a service gets to exit after SIGTERM before it is killed.
const TERM_GRACE: Duration = Duration::from_secs(2);

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
    /// Stub bytes the dcerpc handler puts in each reply (`serve --reply-size`).
    pub reply_stub_bytes: usize,
    /// `serve --threads`, if given.
    pub threads: Option<u16>,
    /// `serve --dialect`.
    pub dialect: Dialect,
}

/// A running `opipe serve` child and its temporary pipe directory.
#[derive(Debug)]
pub struct ServiceChild {
    child: Option<ServeChild>,
    addr: ServiceAddr,
    log: PathBuf,
}

impl ServiceChild {
    /// Starts `<this binary> serve --dir <tmp> --pipe <name> --handler dcerpc
    /// --reply-size <stub>` and waits until its socket accepts connections.
    pub fn start(cfg: &ChildConfig) -> io::Result<ServiceChild> {
        let dir = make_private_dir()?;
        let log = dir.join("service.log");
        let addr = ServiceAddr {
            dir: dir.clone(),
            pipe: cfg.pipe.clone(),
            dialect: cfg.dialect,
        };
        // From here on the guard owns `dir`: every early return cleans up.
        let mut guard = ServiceChild {
            child: None,
            addr,
            log,
        };
        let log_file = fs::File::create(&guard.log)?;
        let mut args: Vec<OsString> = vec![
            "--dir".into(),
            dir.into(),
            "--pipe".into(),
            cfg.pipe.clone().into(),
            "--handler".into(),
            "dcerpc".into(),
            "--reply-size".into(),
            cfg.reply_stub_bytes.to_string().into(),
            "--dialect".into(),
            cfg.dialect.as_str().into(),
        ];
        if let Some(t) = cfg.threads {
            args.extend(["--threads".into(), t.to_string().into()]);
        }
        // Started from the main thread, which lives until the process ends
        // (the child dies with its parent thread).
        guard.child = Some(ServeChild::start(
            &args,
            Stdio::from(log_file),
            &guard.addr.socket_path(),
            READY_TIMEOUT,
            || guard.log_tail(),
        )?);
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

    /// What another thread must clean up if it has to end the process.
    pub fn abort(&self) -> Abort {
        Abort {
            child_pid: self.pid(),
            dir: Some(self.addr.dir.clone()),
            group: false,
        }
    }

    /// Fails if the child has exited (between runs: a dead service would
    /// make every later run a wall of errors).
    pub fn check_alive(&mut self) -> io::Result<()> {
        if let Some(child) = self.child.as_mut() {
            if let Some(status) = child.exited()? {
                self.child = None;
                return Err(io::Error::other(format!(
                    "the service exited ({status}){}",
                    self.log_tail()
                )));
            }
        }
        Ok(())
    }

    /// The end of the child's stderr, for error messages.
    pub fn log_tail(&self) -> String {
        let mut text = String::new();
        if let Ok(mut f) = fs::File::open(&self.log) {
            let _ = f.read_to_string(&mut text);
        }
        let lines: Vec<&str> = text.lines().collect();
        if lines.is_empty() {
            return String::new();
        }
        let from = lines.len().saturating_sub(10);
        format!("; service stderr:\n  {}", lines[from..].join("\n  "))
    }
}

impl Drop for ServiceChild {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.stop(TERM_GRACE);
        }
        let _ = fs::remove_dir_all(&self.addr.dir);
    }
}

/// Makes a fresh directory only this user can enter, under `$TMPDIR`.
fn make_private_dir() -> io::Result<PathBuf> {
    let base = std::env::temp_dir();
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    for attempt in 0..100u32 {
        let dir = base.join(format!(
            "opipe-bench-{}-{:08x}",
            std::process::id(),
            nanos.wrapping_add(attempt)
        ));
        match fs::DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::other("could not make a temporary directory"))
}

/// Ends the bench from a thread other than the one owning the
/// [`ServiceChild`] (a stall, a signal): kills the child and removes its
/// directory, since the guard's `Drop` will not run.
#[derive(Debug, Clone, Default)]
pub struct Abort {
    child_pid: Option<u32>,
    dir: Option<PathBuf>,
    /// The child leads its own process group (samba-dcerpcd and its
    /// workers): the whole group is killed.
    group: bool,
}

impl Abort {
    /// Kills child `pid` and, with `group`, the process group it leads,
    /// then removes `dir`.
    pub fn new(child_pid: Option<u32>, dir: Option<PathBuf>, group: bool) -> Abort {
        Abort {
            child_pid,
            dir,
            group,
        }
    }

    /// Cleans up and exits the process with `code`.
    pub fn exit(&self, code: u8) -> ! {
        if let Some(pid) = self.child_pid {
            if self.group {
                sys::kill_group(pid);
            }
            sys::kill_and_reap(pid);
        }
        if let Some(dir) = &self.dir {
            let _ = fs::remove_dir_all(dir);
        }
        std::process::exit(i32::from(code));
    }
}
