//! A server process of the `--smb2` bench: started in its own process
//! group with its files in a private temporary directory, stopped by the
//! group's id and its directory removed when the guard drops.

use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::DirBuilderExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::group;
use crate::bench::sys;

/// How long a server gets to exit after SIGTERM before its group is killed.
const TERM_GRACE: Duration = Duration::from_secs(3);

/// Process groups and directories to clean up should the bench be
/// interrupted (the guards' `Drop` does not run then).
#[derive(Debug, Clone, Default)]
pub struct Cleanup(Arc<Mutex<CleanupList>>);

#[derive(Debug, Default)]
struct CleanupList {
    groups: Vec<u32>,
    dirs: Vec<PathBuf>,
}

impl Cleanup {
    fn list(&self) -> std::sync::MutexGuard<'_, CleanupList> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds a directory to remove.
    pub fn dir(&self, dir: &Path) {
        self.list().dirs.push(dir.to_owned());
    }

    /// Removes a directory from the list (it was removed already).
    pub fn forget_dir(&self, dir: &Path) {
        self.list().dirs.retain(|d| d != dir);
    }

    fn group(&self, pgid: u32) {
        self.list().groups.push(pgid);
    }

    fn forget_group(&self, pgid: u32) {
        self.list().groups.retain(|g| *g != pgid);
    }

    /// Kills every group still listed and removes every directory.
    pub fn now(&self) {
        let list = self.list();
        for &g in &list.groups {
            sys::signal_group(g, libc::SIGKILL);
        }
        for d in &list.dirs {
            let _ = fs::remove_dir_all(d);
        }
    }
}

/// Makes a fresh directory only this user can enter, under `$TMPDIR`.
pub fn private_dir(prefix: &str) -> io::Result<PathBuf> {
    let base = std::env::temp_dir();
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    for attempt in 0..100u32 {
        let dir = base.join(format!(
            "{prefix}-{}-{:08x}",
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

/// A running server: its process (the group's leader) and its directory.
#[derive(Debug)]
pub struct Daemon {
    child: Option<Child>,
    pgid: u32,
    /// Its private directory (configuration, logs, state).
    pub dir: PathBuf,
    cleanup: Cleanup,
}

impl Daemon {
    /// Spawns `cmd` as the leader of a new process group, killed should
    /// the calling thread die first (call from the main thread). `dir` is
    /// the daemon's (removed on drop).
    pub fn spawn(mut cmd: Command, dir: PathBuf, cleanup: &Cleanup) -> io::Result<Daemon> {
        cmd.process_group(0);
        sys::kill_with_parent(&mut cmd);
        cleanup.dir(&dir);
        let child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => {
                let _ = fs::remove_dir_all(&dir);
                cleanup.forget_dir(&dir);
                return Err(e);
            }
        };
        let pgid = child.id();
        cleanup.group(pgid);
        Ok(Daemon {
            child: Some(child),
            pgid,
            dir,
            cleanup: cleanup.clone(),
        })
    }

    /// The process group (the leader's pid).
    pub fn pgid(&self) -> u32 {
        self.pgid
    }

    /// The leader's stdout, when it was piped (once).
    pub fn take_stdout(&mut self) -> Option<std::process::ChildStdout> {
        self.child.as_mut().and_then(|c| c.stdout.take())
    }

    /// The leader's exit status once it has exited; `None` while it runs.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// The last lines of the files `names` in the daemon's directory.
    pub fn log_tail(&self, names: &[&str]) -> String {
        let mut out = String::new();
        for name in names {
            let mut text = String::new();
            if let Ok(mut f) = fs::File::open(self.dir.join(name)) {
                let _ = f.read_to_string(&mut text);
            }
            let lines: Vec<&str> = text.lines().collect();
            if lines.is_empty() {
                continue;
            }
            let from = lines.len().saturating_sub(10);
            out.push_str(&format!(
                "\n  {name}:\n    {}",
                lines[from..].join("\n    ")
            ));
        }
        out
    }

    /// SIGTERM to the leader, up to 3 s for it to exit, then SIGKILL to
    /// whatever is left of the group; the leader reaped. Waits (bounded)
    /// until no member of the group is left.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if let Ok(None) = child.try_wait() {
            // Not reaped yet: the pid is still ours.
            sys::signal(self.pgid, libc::SIGTERM);
            let begin = Instant::now();
            while begin.elapsed() < TERM_GRACE {
                match child.try_wait() {
                    Ok(Some(_)) | Err(_) => break,
                    Ok(None) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        }
        // The leader may be a zombie still (not reaped): the group id is
        // not reused before that.
        sys::signal_group(self.pgid, libc::SIGKILL);
        let _ = child.wait();
        let begin = Instant::now();
        while group::group_alive(self.pgid) && begin.elapsed() < TERM_GRACE {
            std::thread::sleep(Duration::from_millis(10));
        }
        self.cleanup.forget_group(self.pgid);
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop();
        let _ = fs::remove_dir_all(&self.dir);
        self.cleanup.forget_dir(&self.dir);
    }
}
