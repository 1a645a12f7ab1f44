//! The processes the CLI starts for a bench (the `opipe serve` child,
//! samba-dcerpcd, smbd, `opipe smb2`): their private temporary directories,
//! the guard of a server that leads its own process group ([`Daemon`]),
//! and the list of what to clean up should the bench be ended from another
//! thread (a signal, the stall watchdog), when no guard's `Drop` runs
//! ([`Cleanup`]).

use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::DirBuilderExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, ExitStatus};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::sys;

/// How long a server gets to exit after SIGTERM before its group is killed.
const TERM_GRACE: Duration = Duration::from_secs(3);
/// Lines of a log quoted in an error message.
const TAIL_LINES: usize = 10;

/// Process groups, child processes and directories to clean up should the
/// bench be ended from another thread: the guards register what they own
/// and take it off their list when they clean it up themselves.
#[derive(Debug, Clone, Default)]
pub struct Cleanup(Arc<Mutex<CleanupList>>);

#[derive(Debug, Default)]
struct CleanupList {
    /// Process groups whose leader is our child, not yet reaped.
    groups: Vec<u32>,
    /// Child processes that lead no group, not yet reaped.
    children: Vec<u32>,
    dirs: Vec<PathBuf>,
}

impl Cleanup {
    fn list(&self) -> MutexGuard<'_, CleanupList> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds a directory to remove.
    pub fn dir(&self, dir: &Path) {
        self.list().dirs.push(dir.to_owned());
    }

    /// Takes a directory off the list (its owner removed it).
    pub fn forget_dir(&self, dir: &Path) {
        self.list().dirs.retain(|d| d != dir);
    }

    /// Adds a child process (leading no group) to kill and reap.
    pub fn child(&self, pid: u32) {
        self.list().children.push(pid);
    }

    /// Takes a child off the list (its owner stops it).
    pub fn forget_child(&self, pid: u32) {
        self.list().children.retain(|c| *c != pid);
    }

    fn group(&self, pgid: u32) {
        self.list().groups.push(pgid);
    }

    fn forget_group(&self, pgid: u32) {
        self.list().groups.retain(|g| *g != pgid);
    }

    /// Kills every listed group (SIGKILL to the group, its leader reaped)
    /// and child (killed and reaped), and removes every listed directory.
    pub fn now(&self) {
        let list = self.list();
        for &g in &list.groups {
            sys::signal_group(g, libc::SIGKILL);
            sys::kill_and_reap(g);
        }
        for &c in &list.children {
            sys::kill_and_reap(c);
        }
        for d in &list.dirs {
            let _ = fs::remove_dir_all(d);
        }
    }

    /// [`now`](Self::now), then exits the process with `code`.
    pub fn exit(&self, code: u8) -> ! {
        self.now();
        std::process::exit(i32::from(code));
    }
}

/// Makes a fresh directory `<prefix>-<pid>-<n>` only this user can enter,
/// under `$TMPDIR`.
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

/// The last lines of the files `names` in `dir`, each under its name, for
/// error messages; empty when they are all empty or missing.
pub fn log_tail(dir: &Path, names: &[&str]) -> String {
    let mut out = String::new();
    for name in names {
        let mut text = String::new();
        if let Ok(mut f) = fs::File::open(dir.join(name)) {
            let _ = f.read_to_string(&mut text);
        }
        let lines: Vec<&str> = text.lines().collect();
        if lines.is_empty() {
            continue;
        }
        let from = lines.len().saturating_sub(TAIL_LINES);
        out.push_str(&format!(
            "\n  {name}:\n    {}",
            lines[from..].join("\n    ")
        ));
    }
    out
}

/// A running server that leads its own process group (the processes it
/// forks stay in it), with its files in a private directory: stopped by
/// the group's id and its directory removed when the guard drops.
#[derive(Debug)]
pub struct Daemon {
    child: Option<Child>,
    pgid: u32,
    /// What to call it in messages (`smbd`, `samba-dcerpcd`).
    name: &'static str,
    /// Its log files in `dir`, quoted in error messages.
    logs: &'static [&'static str],
    /// Its private directory (configuration, logs, state).
    dir: PathBuf,
    cleanup: Cleanup,
}

impl Daemon {
    /// Spawns `cmd` as the leader of a new process group, killed should
    /// the calling thread die first (call from the main thread). `dir` is
    /// the daemon's: listed in `cleanup` at once, removed on drop (and
    /// here, should the spawn fail).
    pub fn spawn(
        mut cmd: Command,
        name: &'static str,
        logs: &'static [&'static str],
        dir: PathBuf,
        cleanup: &Cleanup,
    ) -> io::Result<Daemon> {
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
            name,
            logs,
            dir,
            cleanup: cleanup.clone(),
        })
    }

    /// The process group (the leader's pid).
    pub fn pgid(&self) -> u32 {
        self.pgid
    }

    /// Its private directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The leader's stdout, when it was piped (once).
    pub fn take_stdout(&mut self) -> Option<ChildStdout> {
        self.child.as_mut().and_then(|c| c.stdout.take())
    }

    /// The leader's exit status once it has exited; `None` while it runs.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// The end of its logs.
    pub fn log_tail(&self) -> String {
        log_tail(&self.dir, self.logs)
    }

    /// An error `<name> <what><its logs>`.
    pub fn error(&self, what: impl std::fmt::Display) -> io::Error {
        io::Error::other(format!("{} {what}{}", self.name, self.log_tail()))
    }

    /// Fails, with its logs, if the leader has exited.
    pub fn check_alive(&mut self) -> Result<(), String> {
        match self.exited() {
            None => Ok(()),
            Some(status) => Err(self.error(format_args!("exited ({status})")).to_string()),
        }
    }

    /// Polls `ready` every 20 ms until it holds. Fails, with the logs,
    /// should the leader exit first (`<name> exited (<status>) before
    /// <goal>`) or `within` pass (`<name> not <goal> within <within>`).
    pub fn wait_until(
        &mut self,
        goal: &str,
        within: Duration,
        mut ready: impl FnMut() -> bool,
    ) -> io::Result<()> {
        let begin = Instant::now();
        loop {
            if ready() {
                return Ok(());
            }
            if let Some(status) = self.exited() {
                return Err(self.error(format_args!("exited ({status}) before {goal}")));
            }
            if begin.elapsed() > within {
                return Err(self.error(format_args!("not {goal} within {within:?}")));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
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
        // not reused before that. Off the clean-up list before the reaping,
        // so that no other thread signals a group id that may be reused.
        sys::signal_group(self.pgid, libc::SIGKILL);
        self.cleanup.forget_group(self.pgid);
        let _ = child.wait();
        let begin = Instant::now();
        while sys::group_alive(self.pgid) && begin.elapsed() < TERM_GRACE {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop();
        let _ = fs::remove_dir_all(&self.dir);
        self.cleanup.forget_dir(&self.dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `sh -c script` as a daemon, with a log in its private dir.
    fn shell(script: &str, cleanup: &Cleanup) -> Daemon {
        let dir = private_dir("opipe-unit-daemon").unwrap();
        fs::write(dir.join("log"), "first\nlast words\n").unwrap();
        let mut cmd = Command::new("sh");
        cmd.args(["-c", script]);
        Daemon::spawn(cmd, "the shell", &["log"], dir, cleanup).unwrap()
    }

    /// Waits (bounded) until group `pgid` has at least `n` processes.
    fn members(pgid: u32, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while sys::group_cpu(pgid).unwrap().processes < n {
            assert!(Instant::now() < deadline, "group {pgid}: fewer than {n}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits (bounded) until nothing of group `pgid` is left.
    fn gone(pgid: u32) -> bool {
        let deadline = Instant::now() + Duration::from_secs(5);
        while sys::group_alive(pgid) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        !sys::group_alive(pgid)
    }

    #[test]
    fn drop_stops_the_whole_group_and_removes_the_dir() {
        let cleanup = Cleanup::default();
        // A leader that ignores SIGTERM, and a member it forked.
        let d = shell("trap '' TERM; sleep 30 & sleep 30; wait", &cleanup);
        let (pgid, dir) = (d.pgid(), d.dir().to_owned());
        members(pgid, 3);
        assert_eq!(cleanup.list().groups, [pgid]);
        let begin = Instant::now();
        drop(d);
        // SIGTERM ignored: 3 s of grace, then SIGKILL to the group.
        assert!(
            begin.elapsed() < Duration::from_secs(15),
            "{:?}",
            begin.elapsed()
        );
        assert!(!sys::group_alive(pgid), "group {pgid} outlived its guard");
        assert!(!dir.exists());
        let list = cleanup.list();
        assert!(list.groups.is_empty() && list.dirs.is_empty(), "{list:?}");
    }

    #[test]
    fn cleanup_kills_the_listed_groups_and_children_and_removes_the_dirs() {
        let cleanup = Cleanup::default();
        let d = shell("sleep 30 & sleep 30; wait", &cleanup);
        let (pgid, dir) = (d.pgid(), d.dir().to_owned());
        members(pgid, 3);
        let mut plain = Command::new("sleep").arg("30").spawn().unwrap();
        cleanup.child(plain.id());
        cleanup.now();
        // Both our children were killed and reaped by `now`.
        assert!(plain.try_wait().is_err(), "the plain child is not reaped");
        assert!(gone(pgid), "group {pgid} outlived the clean-up");
        assert!(!dir.exists());
        // Its guard must not signal a group id that may be reused now.
        std::mem::forget(d);
    }

    #[test]
    fn waiting_for_a_daemon_that_exits_or_is_late_says_so_with_its_log() {
        let cleanup = Cleanup::default();
        let mut d = shell("exit 3", &cleanup);
        let e = d
            .wait_until("ready", Duration::from_secs(10), || false)
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("the shell exited (exit status: 3) before ready"),
            "{e}"
        );
        assert!(e.ends_with("\n  log:\n    first\n    last words"), "{e}");
        let mut d = shell("sleep 30", &cleanup);
        let e = d
            .wait_until("ready", Duration::from_millis(100), || false)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("the shell not ready within 100ms"), "{e}");
        let mut ready = 0;
        d.wait_until("ready", Duration::from_secs(10), || {
            ready += 1;
            ready == 3
        })
        .unwrap();
    }
}
