//! The automatic backend choice where io_uring is really refused: the test
//! re-executes its own binary in a child that installs a seccomp filter
//! answering `io_uring_setup(2)` with EPERM (what Docker 25+ / containerd
//! profiles do), then opens and transceives through an `Auto` engine there.

#![cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;
use opipe::engine::{Backend, BackendChoice, Engine, EngineConfig, EngineError};
use opipe::protocol::NtStatus;

const CHILD_ENV: &str = "OPIPE_FALLBACK_CHILD";
const TEST_NAME: &str = "auto_picks_epoll_where_seccomp_refuses_io_uring";

/// The child's side: io_uring refused, Auto must work on epoll.
fn child() {
    // The engine reports its fallback through tracing; print it as the CLI does.
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .without_time()
        .with_target(false)
        .with_level(false)
        .with_ansi(false)
        .try_init();
    seccomp::refuse_io_uring_here().expect("install the seccomp filter");
    let dir = tempfile::tempdir().unwrap();
    let _svc = Scripted::spawn(dir.path(), "srvsvc", Handshake::Accept, big_reply(3000));

    // Explicit io_uring: the plain-words error, no fallback.
    let mut cfg = EngineConfig::new(dir.path());
    cfg.backend = BackendChoice::IoUring;
    match Engine::new(cfg) {
        Err(EngineError::Ring(e)) => println!("CHILD io_uring error: {e}"),
        Err(e) => panic!("wrong error for explicit io_uring: {e}"),
        Ok(_) => panic!("io_uring worked under the seccomp filter"),
    }

    // Auto, two rings: epoll, said once.
    let mut cfg = EngineConfig::new(dir.path());
    cfg.rings = 2;
    cfg.buffers = opipe::engine::BufferMode::Registered;
    let eng = Engine::new(cfg).expect("Auto engine without io_uring");
    assert_eq!(eng.backend(), Backend::Epoll);
    assert_eq!(eng.config().buffers, opipe::engine::BufferMode::Plain);
    let pipes: Vec<_> = (0..4)
        .map(|i| {
            eng.open("\\PIPE\\srvsvc", user(i), None)
                .wait()
                .expect("open")
        })
        .collect();
    for p in &pipes {
        let t = p
            .transceive(b"req".to_vec(), 1024)
            .wait()
            .expect("transceive");
        assert_eq!((t.status, t.data.len()), (NtStatus::BUFFER_OVERFLOW, 1024));
        let mut rest = 0;
        while rest < 3000 - 1024 {
            rest += p.read(4280).wait().expect("read").len();
        }
        assert_eq!(rest, 3000 - 1024);
        let t = p
            .transceive(b"again".to_vec(), 4280)
            .wait()
            .expect("transceive");
        assert_eq!((t.status, t.data.len()), (NtStatus::SUCCESS, 3000));
    }
    println!(
        "CHILD backend={} transceived on {} pipes",
        eng.backend(),
        pipes.len()
    );
}

#[test]
fn auto_picks_epoll_where_seccomp_refuses_io_uring() {
    if std::env::var_os(CHILD_ENV).is_some() {
        return child();
    }
    bounded(Duration::from_secs(60), || {
        let exe = std::env::current_exe().unwrap();
        let out = Command::new(exe)
            .args(["--exact", TEST_NAME, "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, "1")
            .output()
            .expect("re-run the test binary");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "child failed: {:?}\nstdout:\n{stdout}\nstderr:\n{stderr}",
            out.status
        );
        assert!(
            stdout.contains("CHILD backend=epoll transceived on 4 pipes"),
            "stdout:\n{stdout}"
        );
        // (libtest prints the test name on the same line as our first output.)
        let err_line = stdout
            .lines()
            .find_map(|l| l.split_once("CHILD io_uring error: ").map(|(_, e)| e))
            .unwrap_or_else(|| panic!("no explicit-io_uring error in:\n{stdout}"));
        assert!(err_line.contains("io_uring is not available"), "{err_line}");
        assert!(err_line.contains("EPERM"), "{err_line}");
        assert!(err_line.contains("seccomp"), "{err_line}");
        let notices: Vec<_> = stderr
            .lines()
            .filter(|l| l.contains("engine uses the epoll backend"))
            .collect();
        assert_eq!(notices.len(), 1, "one notice per engine; stderr:\n{stderr}");
        assert!(
            notices[0].starts_with("opipe: io_uring unavailable (io_uring is not available (EPERM"),
            "{}",
            notices[0]
        );
    });
}
