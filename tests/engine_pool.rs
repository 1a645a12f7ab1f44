//! The engine's receive pool: receives take a kernel-selected buffer only
//! when data arrives. With a tiny pool, many concurrent transceives and
//! reads exhaust it (-ENOBUFS); each must then fall back to a buffer of its
//! own and still get exactly its own reply.

mod common;

use std::time::Duration;

use common::*;
use opipe::engine::{Engine, EngineConfig, EngineError};
use opipe::protocol::NtStatus;

fn engine(dir: &std::path::Path, pool: u16) -> Option<Engine> {
    let mut cfg = EngineConfig::new(dir);
    cfg.recv_pool_bufs = pool;
    match Engine::new(cfg) {
        Ok(e) => Some(e),
        Err(EngineError::Ring(e)) => {
            eprintln!("SKIPPED: {e}");
            None
        }
        Err(e) => panic!("engine: {e}"),
    }
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
