//! A service in a re-run of the test binary, for tests that must measure
//! or limit a whole process (RSS, descriptor limits): the parent re-runs
//! its own test with an environment variable set, the child serves until
//! its stdin closes.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::Duration;

use opipe::service::{BackendChoice, ServiceError, ServiceHandle};

/// Runs `child(backend)` when this process is the child (`env` set), else
/// `parent(backend, name)` bounded by `limit`; `name` is the test's own.
pub fn child_or_parent(
    env: &str,
    name: &'static str,
    backend: BackendChoice,
    limit: Duration,
    child: fn(BackendChoice),
    parent: fn(BackendChoice, &str),
) {
    if std::env::var_os(env).is_some() {
        return child(backend);
    }
    super::bounded(limit, move || parent(backend, name));
}

/// The child's side: prints `READY <socket>` (or `SKIPPED <why>` when the
/// kernel refuses the backend, then `None`) and serves until stdin closes.
pub fn serve_until_stdin_closes(
    dir: &Path,
    pipe: &str,
    started: Result<ServiceHandle, ServiceError>,
) -> Option<ServiceHandle> {
    let svc = match started {
        Ok(s) => s,
        Err(ServiceError::Ring(e)) => {
            println!("SKIPPED {e}");
            return None;
        }
        Err(e) => panic!("{e}"),
    };
    println!("READY {}", dir.join(pipe).display());
    std::io::stdout().flush().unwrap();
    let _ = std::io::stdin().read(&mut [0u8; 1]);
    Some(svc)
}

/// Kills the child (in its own process group) if the test ends early.
pub struct ChildGuard(pub Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The parent's side: re-runs test `name` with `env` set and waits for its
/// `READY` line. `None` (after a loud skip notice) when the child skipped.
pub fn spawn(name: &str, env: &str) -> Option<(ChildGuard, BufReader<ChildStdout>, PathBuf)> {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args(["--exact", name, "--nocapture", "--test-threads=1"])
        .env(env, "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .process_group(0);
    let mut child = ChildGuard(cmd.spawn().expect("re-run the test binary"));
    let mut out = BufReader::new(child.0.stdout.take().unwrap());
    let mut line = String::new();
    loop {
        line.clear();
        assert!(out.read_line(&mut line).unwrap() > 0, "child ended early");
        // (libtest may print the test name on the same line.)
        if let Some((_, p)) = line.trim_end().split_once("READY ") {
            return Some((child, out, PathBuf::from(p)));
        }
        if let Some((_, why)) = line.split_once("SKIPPED ") {
            eprintln!("SKIPPED: {why}");
            return None;
        }
    }
}
