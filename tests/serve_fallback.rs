//! `opipe serve` where io_uring is switched off. The child runs under a
//! seccomp filter that makes `io_uring_setup(2)` fail with EPERM, as the
//! Docker 25+ / containerd default profiles do: `--backend auto` must say it
//! falls back to epoll, and serve; `--backend io-uring` must fail clearly.
#![cfg(all(
    target_os = "linux",
    any(target_arch = "x86_64", target_arch = "aarch64")
))]

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

mod common;

use common::seccomp;

const TIMEOUT: Duration = Duration::from_secs(20);

/// `opipe serve --dir DIR ARGS` with io_uring_setup refused; its stderr
/// lines come through the receiver.
fn spawn_without_io_uring(dir: &Path, args: &[&str]) -> (Child, mpsc::Receiver<String>) {
    let mut cmd = common::serve_command(env!("CARGO_BIN_EXE_opipe"), dir, args);
    seccomp::refuse_io_uring_in(&mut cmd);
    common::spawn_with_stderr_lines(&mut cmd)
}

/// Kills and reaps the child whatever happens.
struct Reap(Child);

impl Drop for Reap {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Reap {
    fn wait_exit(&mut self) -> ExitStatus {
        common::wait_exit(&mut self.0, TIMEOUT)
    }
}

#[test]
fn auto_falls_back_to_epoll_when_io_uring_setup_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (child, stderr) = spawn_without_io_uring(
        dir.path(),
        &["--pipe", "srvsvc", "--pipe", "lsarpc", "--backend", "auto"],
    );
    let mut child = Reap(child);
    // Lines up to the banner: the fallback line comes first.
    let mut lines = Vec::new();
    let end = Instant::now() + TIMEOUT;
    let banner = loop {
        match stderr.recv_timeout(Duration::from_millis(50)) {
            Ok(line) if line.contains("serving") => break line,
            Ok(line) => lines.push(line),
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                panic!("opipe serve exited: {:?}: {lines:?}", child.0.wait())
            }
        }
        assert!(Instant::now() < end, "no banner: {lines:?}");
    };
    eprintln!("stderr of opipe serve: {lines:?}, then {banner:?}");
    assert!(banner.contains("epoll backend"), "{banner}");
    assert_eq!(lines.len(), 1, "one line about the fallback: {lines:?}");
    assert!(
        lines[0].contains("epoll") && lines[0].contains("EPERM"),
        "{lines:?}"
    );

    // A real client: handshake, then echo, on both pipes, a few at once.
    let mut conns: Vec<UnixStream> = Vec::new();
    for i in 0..8 {
        let name = if i % 2 == 0 { "srvsvc" } else { "lsarpc" };
        conns.push(common::client::open_ok(&dir.path().join(name)));
    }
    for round in 0..20u32 {
        for (i, s) in conns.iter_mut().enumerate() {
            let msg: Vec<u8> = (0..(100 + 997 * round as usize))
                .map(|j| (i + j) as u8)
                .collect();
            s.write_all(&msg).unwrap();
            let mut got = vec![0u8; msg.len()];
            s.read_exact(&mut got).unwrap();
            assert!(got == msg, "echo differs on conn {i} round {round}");
        }
    }

    // SAFETY: kill takes no pointers; the pid is our own child, not reaped.
    assert_eq!(unsafe { libc::kill(child.0.id() as i32, libc::SIGTERM) }, 0);
    let st = child.wait_exit();
    assert!(st.success(), "{st}");
    assert!(!dir.path().join("srvsvc").exists(), "socket left behind");
    assert!(!dir.path().join("lsarpc").exists(), "socket left behind");
    let mut b = [0u8; 1];
    assert_eq!(conns[0].read(&mut b).unwrap(), 0, "connection not closed");
}

#[test]
fn io_uring_only_fails_clearly_when_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (child, stderr) =
        spawn_without_io_uring(dir.path(), &["--pipe", "srvsvc", "--backend", "io-uring"]);
    let mut child = Reap(child);
    let st = child.wait_exit();
    let text: Vec<String> = stderr.iter().collect();
    let text = text.join("\n");
    assert_eq!(st.code(), Some(1), "{text}");
    assert!(
        text.contains("io_uring is not available") && text.contains("EPERM"),
        "{text}"
    );
    // Nothing left behind.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

/// `opipe bench` where io_uring is refused: its service child falls back
/// (seccomp filters are inherited), the engine `uring` runs on epoll and
/// says so in its JSON.
#[test]
fn bench_uring_engine_reports_epoll_without_io_uring() {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_opipe"));
    cmd.args([
        "bench",
        "--engine",
        "uring",
        "--pipes",
        "4",
        "--requests",
        "400",
        "--json",
    ])
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    seccomp::refuse_io_uring_in(&mut cmd);
    let child = cmd.spawn().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let out = rx
        .recv_timeout(TIMEOUT)
        .expect("bench did not finish in time")
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "bench failed: {stderr}");
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("--json output");
    let r = &json["results"][0];
    assert_eq!(r["engine"], "uring", "{json}");
    assert_eq!(r["backend"], "epoll", "{json}");
    assert_eq!(r["errors"], 0, "{json}");
    assert_eq!(r["transceives"], 400, "{json}");
    assert!(stderr.contains("epoll"), "no fallback notice: {stderr}");
}
