//! `opipe serve` as a child of this binary, for the commands that need a
//! pipe service of their own (`bench`, `soak`): started with the arguments
//! given, tied to this process's life, ready once its socket accepts, and
//! stopped and reaped when dropped.

use std::ffi::OsStr;
use std::io;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::bench::sys;

/// A running `opipe serve` child.
#[derive(Debug)]
pub struct ServeChild {
    child: Option<Child>,
}

impl ServeChild {
    /// Starts `<this binary> serve <args>` (stdin and stdout closed, stderr
    /// to `stderr`) and waits up to `ready_within` until `socket` accepts a
    /// connection. An early exit or no acceptance in time is an error whose
    /// message ends with `detail()` (the child's log, say); the child is
    /// then stopped.
    pub fn start<S: AsRef<OsStr>>(
        args: &[S],
        stderr: Stdio,
        socket: &Path,
        ready_within: Duration,
        detail: impl Fn() -> String,
    ) -> io::Result<ServeChild> {
        let mut cmd = Command::new(std::env::current_exe()?);
        cmd.arg("serve")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr);
        // Should this process die without running the guard (SIGKILL), the
        // service goes with it.
        sys::kill_with_parent(&mut cmd);
        let mut me = ServeChild {
            child: Some(cmd.spawn()?),
        };
        let begin = Instant::now();
        loop {
            if let Some(status) = me.exited()? {
                return Err(io::Error::other(format!(
                    "the service exited before accepting connections ({status}){}",
                    detail()
                )));
            }
            match UnixStream::connect(socket) {
                // A bare connect and close: the service must shrug that off,
                // like any peer that gives up before its handshake.
                Ok(_) => return Ok(me),
                Err(e) if begin.elapsed() > ready_within => {
                    return Err(io::Error::new(
                        e.kind(),
                        format!(
                            "the service did not accept on {} within {ready_within:?}: {e}{}",
                            socket.display(),
                            detail()
                        ),
                    ));
                }
                Err(_) => std::thread::sleep(Duration::from_millis(10)),
            }
        }
    }

    /// The child's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The child's exit status once it has exited (it is then reaped and
    /// forgotten); `None` while it runs.
    pub fn exited(&mut self) -> io::Result<Option<ExitStatus>> {
        let Some(child) = self.child.as_mut() else {
            return Ok(None);
        };
        let status = child.try_wait()?;
        if status.is_some() {
            self.child = None;
        }
        Ok(status)
    }

    /// Stops the child: SIGTERM and up to `grace` for it to exit (so it can
    /// remove its sockets), then SIGKILL; reaped either way. A zero `grace`
    /// kills at once.
    pub fn stop(&mut self, grace: Duration) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if let Ok(None) = child.try_wait() {
            if !grace.is_zero() {
                // Not reaped yet (try_wait said it runs): the pid is ours.
                sys::signal(child.id(), libc::SIGTERM);
                let begin = Instant::now();
                while begin.elapsed() < grace {
                    match child.try_wait() {
                        Ok(Some(_)) | Err(_) => break,
                        Ok(None) => std::thread::sleep(Duration::from_millis(5)),
                    }
                }
            }
            let _ = child.kill();
        }
        let _ = child.wait();
    }
}

impl Drop for ServeChild {
    fn drop(&mut self) {
        self.stop(Duration::ZERO);
    }
}
