//! One test alone in its binary, so that the process's descriptor count is
//! not disturbed by other tests: after opens (good and failing), transceives,
//! cancels, a session disconnect and dropping the engine, no fd is left.

mod common;

use std::time::Duration;

use common::*;
use opipe::engine::{BackendChoice, BufferMode, Engine, EngineConfig};
use opipe::protocol::NtStatus;

#[test]
fn no_descriptor_leaks_after_everything() {
    bounded(Duration::from_secs(60), || {
        maybe_refuse_io_uring();
        let dir = tempfile::tempdir().unwrap();
        let base = fd_count();
        {
            let _ok = Scripted::spawn(dir.path(), "ok", Handshake::Accept, hang_or_echo());
            let _silent = Scripted::spawn(dir.path(), "silent", Handshake::Silent, echo());
            let _partial = Scripted::spawn(dir.path(), "partial", Handshake::Partial, echo());
            let _deny = Scripted::spawn(dir.path(), "deny", Handshake::Status(0xC000_0022), echo());
            let runs = [BackendChoice::IoUring, BackendChoice::Epoll]
                .into_iter()
                .flat_map(|b| [(b, BufferMode::Plain), (b, BufferMode::Registered)]);
            for (backend, mode) in runs {
                // Two engines: a short open deadline for the opens that must
                // fail by it, a generous one for the opens that must succeed
                // (a thread-per-connection service on a loaded machine can
                // take longer than 200 ms to answer a handshake).
                let start = |open_timeout| {
                    let mut cfg = EngineConfig::new(dir.path());
                    cfg.buffers = mode;
                    cfg.backend = backend;
                    cfg.open_timeout = open_timeout;
                    match Engine::new(cfg) {
                        Ok(e) => Some(e),
                        Err(e) if io_uring_refused(backend, &e) => {
                            eprintln!("SKIPPED the {backend:?} {mode:?} half: {e}");
                            None
                        }
                        Err(e) => panic!("engine on {backend:?} {mode:?}: {e}"),
                    }
                };
                let (Some(failing), Some(eng)) = (
                    start(Duration::from_millis(200)),
                    start(Duration::from_secs(20)),
                ) else {
                    continue;
                };
                for name in ["silent", "partial", "deny", "missing", "a/b"] {
                    assert!(failing.open(name, user(9), None).wait().is_err());
                }
                drop(failing);
                let pipes: Vec<_> = (0..50)
                    .map(|_| eng.open("ok", user(1), None).wait().unwrap())
                    .collect();
                for p in &pipes {
                    assert_eq!(
                        p.transceive(b"hi".to_vec(), 100).wait().unwrap().data,
                        b"hi"
                    );
                }
                let hung: Vec<_> = pipes
                    .iter()
                    .map(|p| p.transceive(b"H.".to_vec(), 100))
                    .collect();
                hung[0].cancel();
                assert_eq!(
                    hung.into_iter().next().unwrap().wait().unwrap_err(),
                    NtStatus::CANCELLED
                );
                eng.disconnect_session(1).wait().unwrap();
                // An open abandoned before it completed: its pipe must be closed.
                drop(eng.open("ok", user(3), None));
                drop(pipes);
            }
        }
        // Scripted services' connection threads end when their sockets close.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while fd_count() > base && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(fd_count(), base, "descriptors leaked");
    });
}
