//! `opipe smb2`, the io_uring SMB2 server, as the bench starts it:
//!
//! ```text
//! opipe smb2 --listen 127.0.0.1:0 --dir DIR --dialect samba [--backend B] [--threads N]
//! ```
//!
//! It prints exactly one line, `listening on <ip>:<port>`, on stdout once
//! it accepts, and stops cleanly on SIGTERM. It runs in its own process
//! group like smbd, so that both are measured and stopped the same way.

use std::io::{self, BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::bench::daemon::{private_dir, Cleanup, Daemon};

/// How long `opipe smb2` may take to say where it listens.
const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// Its stderr, for error messages.
const LOGS: &[&str] = &["stderr.log"];

/// What to start `opipe smb2` with.
#[derive(Debug, Clone)]
pub struct FrontConfig {
    /// The binary that has the `smb2` subcommand (normally this one).
    pub exe: PathBuf,
    /// The pipe service's directory (`--dir`), Samba dialect.
    pub pipe_dir: PathBuf,
    /// `--backend`, when given.
    pub backend: Option<&'static str>,
    /// `--threads`, when given.
    pub threads: Option<u16>,
}

/// Whether `exe` has the `smb2` subcommand: `Err` says why not.
pub fn available(exe: &Path) -> Result<(), String> {
    let mut child = Command::new(exe)
        .args(["smb2", "--help"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", exe.display()))?;
    let begin = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(st)) if st.success() => return Ok(()),
            Ok(Some(st)) => {
                return Err(format!(
                    "`{} smb2 --help` failed ({st}): this build has no `opipe smb2` subcommand",
                    exe.display()
                ))
            }
            Ok(None) if begin.elapsed() < READY_TIMEOUT => {
                std::thread::sleep(Duration::from_millis(10))
            }
            Ok(None) | Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("`{} smb2 --help` did not finish", exe.display()));
            }
        }
    }
}

/// A running `opipe smb2`.
#[derive(Debug)]
pub struct Front {
    /// Its guard (liveness, logs, the stop).
    pub daemon: Daemon,
    /// Where it listens.
    pub addr: SocketAddr,
}

impl Front {
    /// Starts it and waits (bounded) for its `listening on` line.
    pub fn start(cfg: &FrontConfig, cleanup: &Cleanup) -> io::Result<Front> {
        let dir = private_dir("opipe-bench-smb2")?;
        let stderr = match std::fs::File::create(dir.join("stderr.log")) {
            Ok(f) => f,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&dir);
                return Err(e);
            }
        };
        let mut cmd = Command::new(&cfg.exe);
        cmd.args(["smb2", "--listen", "127.0.0.1:0", "--dir"])
            .arg(&cfg.pipe_dir)
            .args(["--dialect", "samba"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr);
        if let Some(b) = cfg.backend {
            cmd.args(["--backend", b]);
        }
        if let Some(t) = cfg.threads {
            cmd.args(["--threads", &t.to_string()]);
        }
        let mut daemon = Daemon::spawn(cmd, "opipe smb2", LOGS, dir, cleanup)?;
        let stdout = daemon.take_stdout();
        let (tx, rx) = mpsc::channel();
        // Reads its stdout to the end, so that it never blocks on a full
        // pipe; the first line is what the bench waits for.
        let _ = std::thread::Builder::new()
            .name("smb2-stdout".into())
            .spawn(move || {
                let Some(out) = stdout else { return };
                for line in BufReader::new(out).lines() {
                    let Ok(line) = line else { return };
                    if tx.send(line).is_err() {
                        // Nobody listens any more: keep draining.
                        continue;
                    }
                }
            });
        let begin = Instant::now();
        loop {
            let left = READY_TIMEOUT.saturating_sub(begin.elapsed());
            match rx.recv_timeout(left.min(Duration::from_millis(100))) {
                Ok(line) => {
                    let addr = parse_listening(&line).ok_or_else(|| {
                        daemon.error(format_args!(
                            "printed {line:?} instead of `listening on <ip>:<port>`"
                        ))
                    })?;
                    return Ok(Front { daemon, addr });
                }
                Err(mpsc::RecvTimeoutError::Timeout) if !left.is_zero() => {
                    if let Some(status) = daemon.exited() {
                        return Err(
                            daemon.error(format_args!("exited ({status}) before listening"))
                        );
                    }
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    // Its stdout closed without a line: it is exiting.
                    let grace = Instant::now();
                    while daemon.exited().is_none() && grace.elapsed() < Duration::from_secs(2) {
                        std::thread::sleep(Duration::from_millis(10));
                    }
                    let how = daemon.exited().map_or_else(
                        || "closed its stdout".to_owned(),
                        |s| format!("exited ({s})"),
                    );
                    return Err(daemon.error(format_args!("{how} before saying where it listens")));
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    return Err(daemon.error(format_args!(
                        "did not say where it listens within {READY_TIMEOUT:?}"
                    )))
                }
            }
        }
    }

    /// Its process group.
    pub fn pgid(&self) -> u32 {
        self.daemon.pgid()
    }
}

/// `listening on 127.0.0.1:4450` -> the address.
fn parse_listening(line: &str) -> Option<SocketAddr> {
    line.trim()
        .strip_prefix("listening on ")?
        .trim()
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ready_line_is_parsed() {
        assert_eq!(
            parse_listening("listening on 127.0.0.1:4450\n"),
            Some(SocketAddr::from(([127, 0, 0, 1], 4450)))
        );
        assert_eq!(parse_listening("listening on nowhere"), None);
        assert_eq!(parse_listening("ready 127.0.0.1:1"), None);
    }

    #[test]
    fn a_binary_without_the_subcommand_is_refused() {
        // `false` exits 1 whatever it is given.
        let e = available(Path::new("/bin/false")).unwrap_err();
        assert!(e.contains("no `opipe smb2` subcommand"), "{e}");
        assert!(available(Path::new("/nonexistent/opipe")).is_err());
        assert_eq!(available(Path::new("/bin/true")), Ok(()));
    }
}
