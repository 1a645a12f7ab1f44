//! Limits and odd values: the receive pool (with a tiny pool, concurrent
//! receives exhaust it (-ENOBUFS) and must fall back to a buffer of their
//! own, still getting exactly their own reply), absurd sizes and endless
//! timeouts: a status or the right behaviour, never a panic.

mod common;

use std::time::Duration;

use common::*;
use opipe::engine::{Engine, EngineConfig, EngineError};
use opipe::protocol::NtStatus;

fn engine(dir: &std::path::Path, pool: u16) -> Option<Engine> {
    let mut cfg = EngineConfig::new(dir);
    cfg.recv_pool_bufs = pool;
    start_engine(cfg)
}

#[test]
fn exhausted_receive_pool_falls_back_and_delivers_every_reply() {
    bounded(Duration::from_secs(60), || {
        let dir = tempfile::tempdir().unwrap();
        let _svc = Scripted::spawn(dir.path(), "srvsvc", Handshake::Accept, echo());
        let Some(eng) = engine(dir.path(), 2) else {
            return;
        };
        let pipes: Vec<_> = (0..64)
            .map(|i| eng.open("srvsvc", user(i), None).wait().unwrap())
            .collect();
        for round in 0..20 {
            let reqs: Vec<_> = pipes
                .iter()
                .enumerate()
                .map(|(i, p)| {
                    let msg = format!("{i}:{round}:{}", "z".repeat(i * 13 % 300)).into_bytes();
                    (msg.clone(), p.transceive(msg, 1024))
                })
                .collect();
            for (msg, r) in reqs {
                let t = r.wait().expect("transceive");
                assert_eq!(t.status, NtStatus::SUCCESS);
                assert_eq!(t.data, msg);
            }
        }
        // Reads too: unsolicited data waits in the socket, pool empty or not.
        let writes: Vec<_> = pipes.iter().map(|p| p.write(b"ping".to_vec())).collect();
        for w in writes {
            assert_eq!(w.wait().unwrap(), 4);
        }
        let reads: Vec<_> = pipes.iter().map(|p| p.read(100)).collect();
        for r in reads {
            assert_eq!(r.wait().unwrap(), b"ping");
        }
    });
}

#[test]
fn bad_pool_size_is_a_config_error() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = EngineConfig::new(dir.path());
    cfg.recv_pool_bufs = 3;
    assert!(matches!(Engine::new(cfg), Err(EngineError::Config(_))));
}

#[test]
fn pool_disabled_still_works() {
    bounded(Duration::from_secs(30), || {
        let dir = tempfile::tempdir().unwrap();
        let _svc = Scripted::spawn(dir.path(), "srvsvc", Handshake::Accept, big_reply(3000));
        let Some(eng) = engine(dir.path(), 0) else {
            return;
        };
        let p = eng.open("srvsvc", user(1), None).wait().unwrap();
        let t = p.transceive(b"x".to_vec(), 1024).wait().unwrap();
        assert_eq!((t.status, t.data.len()), (NtStatus::BUFFER_OVERFLOW, 1024));
    });
}

#[test]
fn absurd_max_out_is_invalid_parameter_not_a_panic() {
    bounded(Duration::from_secs(30), || {
        let dir = tempfile::tempdir().unwrap();
        let _svc = Scripted::spawn(dir.path(), "srvsvc", Handshake::Accept, echo());
        let Some(eng) = engine(dir.path(), 256) else {
            return;
        };
        let p = eng.open("srvsvc", user(1), None).wait().unwrap();
        for max in [usize::MAX, (16 << 20) + 1] {
            assert_eq!(
                p.transceive(b"x".to_vec(), max).wait().unwrap_err(),
                NtStatus::INVALID_PARAMETER
            );
            assert_eq!(p.read(max).wait().unwrap_err(), NtStatus::INVALID_PARAMETER);
            assert_eq!(p.peek(max).wait().unwrap_err(), NtStatus::INVALID_PARAMETER);
        }
        // The pipe is still fine, and 16 MiB itself is allowed.
        assert_eq!(
            p.transceive(b"ok".to_vec(), 16 << 20).wait().unwrap().data,
            b"ok"
        );
    });
}

#[test]
fn endless_wait_timeout_is_not_a_panic() {
    bounded(Duration::from_secs(30), || {
        let dir = tempfile::tempdir().unwrap();
        let _svc = Scripted::spawn(dir.path(), "here", Handshake::Accept, echo());
        let Some(eng) = engine(dir.path(), 256) else {
            return;
        };
        eng.wait_for_pipe("here", Some(Duration::MAX))
            .wait()
            .expect("listener is there");
    });
}

#[test]
fn endless_open_timeout_and_wait_on_both_backends() {
    bounded(Duration::from_secs(30), || {
        for backend in [
            opipe::engine::BackendChoice::IoUring,
            opipe::engine::BackendChoice::Epoll,
        ] {
            let dir = tempfile::tempdir().unwrap();
            let _svc = Scripted::spawn(dir.path(), "srvsvc", Handshake::Accept, echo());
            let mut cfg = EngineConfig::new(dir.path());
            cfg.backend = backend;
            cfg.open_timeout = Duration::MAX;
            let Some(eng) = start_engine(cfg) else {
                continue;
            };
            let p = eng
                .open("srvsvc", user(1), None)
                .wait_timeout(Duration::MAX)
                .expect("open");
            let t = p
                .transceive(b"long".to_vec(), 100)
                .wait_timeout(Duration::MAX)
                .unwrap();
            assert_eq!(t.data, b"long", "{backend:?}");
        }
    });
}
