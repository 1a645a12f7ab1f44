//! The pipe service a bench runs against: either a child process of this
//! same binary (`opipe serve ...`) in a private temporary directory, or a
//! service somebody else already runs (`--dir`).
//!
//! The child is owned by a guard: dropping [`ServiceChild`] (end of the run,
//! an error, a panic unwinding) stops and reaps the process and removes its
//! directory, so a bench never leaves a process or a socket behind.

use std::fmt;
use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::DirBuilderExt;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::sys;

/// How long a freshly started service may take to accept its first connection.
const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a service gets to exit after SIGTERM before it is killed.
const TERM_GRACE: Duration = Duration::from_secs(2);

/// Where a pipe service listens: `<dir>/<pipe>`.
#[derive(Debug, Clone)]
pub struct ServiceAddr {
    /// The pipe directory (illumos: `/var/smb/pipe`).
    pub dir: PathBuf,
    /// The pipe's flat name, e.g. `bench` or `srvsvc`.
    pub pipe: String,
}

impl ServiceAddr {
    /// The path of the listening socket.
    pub fn socket_path(&self) -> PathBuf {
        self.dir.join(&self.pipe)
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
}

/// A running `opipe serve` child and its temporary pipe directory.
#[derive(Debug)]
pub struct ServiceChild {
    child: Option<Child>,
    addr: ServiceAddr,
    log: PathBuf,
}

impl ServiceChild {
    /// Starts `<this binary> serve --dir <tmp> --pipe <name> --handler dcerpc
    /// --reply-size <stub>` and waits until its socket accepts connections.
    pub fn start(cfg: &ChildConfig) -> io::Result<ServiceChild> {
        let exe = std::env::current_exe()?;
        let dir = make_private_dir()?;
        let log = dir.join("service.log");
        let addr = ServiceAddr {
            dir: dir.clone(),
            pipe: cfg.pipe.clone(),
        };
        // From here on the guard owns `dir`: every early return cleans up.
        let mut guard = ServiceChild {
            child: None,
            addr,
            log,
        };
        let log_file = fs::File::create(&guard.log)?;
        let mut cmd = Command::new(exe);
        cmd.arg("serve")
            .arg("--dir")
            .arg(&dir)
            .arg("--pipe")
            .arg(&cfg.pipe)
            .args(["--handler", "dcerpc"])
            .arg("--reply-size")
            .arg(cfg.reply_stub_bytes.to_string());
        if let Some(t) = cfg.threads {
            cmd.arg("--threads").arg(t.to_string());
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log_file));
        // Should this process die without running its guard (SIGKILL), the
        // service goes with it. Started from the main thread, which lives
        // until the process ends.
        sys::kill_with_parent(&mut cmd);
        guard.child = Some(cmd.spawn()?);
        guard.wait_ready()?;
        Ok(guard)
    }

    /// Where the child listens.
    pub fn addr(&self) -> &ServiceAddr {
        &self.addr
    }

    /// The child's process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// What another thread must clean up if it has to end the process.
    pub fn abort(&self) -> Abort {
        Abort {
            child_pid: self.pid(),
            dir: Some(self.addr.dir.clone()),
        }
    }

    fn wait_ready(&mut self) -> io::Result<()> {
        let path = self.addr.socket_path();
        let begin = Instant::now();
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Some(status) = child.try_wait()? {
                    return Err(io::Error::other(format!(
                        "the service exited before accepting connections ({status}){}",
                        self.log_tail()
                    )));
                }
            }
            match UnixStream::connect(&path) {
                // A bare connect and close: the service must shrug that off,
                // like any peer that gives up before its handshake.
                Ok(_) => return Ok(()),
                Err(e) if begin.elapsed() > READY_TIMEOUT => {
                    return Err(io::Error::new(
                        e.kind(),
                        format!(
                            "the service did not accept on {} within {:?}: {e}{}",
                            path.display(),
                            READY_TIMEOUT,
                            self.log_tail()
                        ),
                    ))
                }
                Err(_) => std::thread::sleep(Duration::from_millis(10)),
            }
        }
    }

    /// Fails if the child has exited (between runs: a dead service would
    /// make every later run a wall of errors).
    pub fn check_alive(&mut self) -> io::Result<()> {
        if let Some(child) = self.child.as_mut() {
            if let Some(status) = child.try_wait()? {
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

    fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if let Ok(None) = child.try_wait() {
            // Polite first, so a service can remove its sockets; then firm.
            // Not reaped yet (try_wait said it runs): the pid is still ours.
            sys::signal(child.id(), libc::SIGTERM);
            let begin = Instant::now();
            while begin.elapsed() < TERM_GRACE {
                match child.try_wait() {
                    Ok(Some(_)) | Err(_) => break,
                    Ok(None) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
            let _ = child.kill();
        }
        let _ = child.wait();
    }
}

impl Drop for ServiceChild {
    fn drop(&mut self) {
        self.stop();
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
}

impl Abort {
    /// Cleans up and exits the process with `code`.
    pub fn exit(&self, code: u8) -> ! {
        if let Some(pid) = self.child_pid {
            sys::kill_and_reap(pid);
        }
        if let Some(dir) = &self.dir {
            let _ = fs::remove_dir_all(dir);
        }
        std::process::exit(i32::from(code));
    }
}
