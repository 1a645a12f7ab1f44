//! Limits and odd values: the receive pool (with a tiny pool, concurrent
//! receives exhaust it (-ENOBUFS) and must fall back to a buffer of their
//! own, still getting exactly their own reply), absurd sizes and endless
//! timeouts: a status or the right behaviour, never a panic.

mod common;

use std::time::Duration;

use common::*;
use opipe::engine::{Backend, BackendChoice, Engine, EngineConfig, EngineError};
use opipe::protocol::NtStatus;

fn engine(dir: &std::path::Path, pool: u16) -> Option<Engine> {
    let mut cfg = EngineConfig::new(dir);
    cfg.recv_pool_bufs = pool;
    start_engine(cfg)
}

/// The receive paths a pool test runs on: the pool exists on io_uring only
/// (multishot and linked receives); the epoll half says so and checks the
/// delivery alone.
const POOL_PATHS: [(BackendChoice, bool); 3] = [
    (BackendChoice::IoUring, true),
    (BackendChoice::IoUring, false),
    (BackendChoice::Epoll, true),
];

fn pool_engine(
    dir: &std::path::Path,
    pool: u16,
    backend: BackendChoice,
    multishot: bool,
) -> Option<Engine> {
    let mut cfg = EngineConfig::new(dir);
    cfg.recv_pool_bufs = pool;
    cfg.backend = backend;
    cfg.multishot = multishot;
    let eng = start_engine(cfg)?;
    if eng.backend() == Backend::Epoll {
        eprintln!("epoll backend: no receive pool here, delivery checked only");
    }
    Some(eng)
}

#[test]
fn exhausted_receive_pool_falls_back_and_delivers_every_reply() {
    bounded(Duration::from_secs(90), || {
        for (backend, multishot) in POOL_PATHS {
            let dir = tempfile::tempdir().unwrap();
            let _svc = Scripted::spawn(dir.path(), "srvsvc", Handshake::Accept, echo());
            let Some(eng) = pool_engine(dir.path(), 2, backend, multishot) else {
                continue;
            };
            let what = format!("{backend:?} multishot={multishot}");
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
                    assert_eq!(t.status, NtStatus::SUCCESS, "{what}");
                    assert_eq!(t.data, msg, "{what}");
                }
            }
            // Reads too: unsolicited data waits in the socket, pool empty or not.
            let writes: Vec<_> = pipes.iter().map(|p| p.write(b"ping".to_vec())).collect();
            for w in writes {
                assert_eq!(w.wait().unwrap(), 4, "{what}");
            }
            let reads: Vec<_> = pipes.iter().map(|p| p.read(100)).collect();
            for r in reads {
                assert_eq!(r.wait().unwrap(), b"ping", "{what}");
            }
            let fallbacks = eng.stats().recv_pool_fallbacks;
            eprintln!("{what}: {fallbacks} receives found the pool empty and ran again");
            match eng.backend() {
                Backend::IoUring => assert!(
                    fallbacks > 0,
                    "{what}: the pool of 2 never ran dry: the fallback was not tested"
                ),
                Backend::Epoll => assert_eq!(fallbacks, 0, "{what}: epoll has no pool"),
            }
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
        for (backend, multishot) in POOL_PATHS {
            let dir = tempfile::tempdir().unwrap();
            let _svc = Scripted::spawn(dir.path(), "srvsvc", Handshake::Accept, big_reply(3000));
            let Some(eng) = pool_engine(dir.path(), 0, backend, multishot) else {
                continue;
            };
            let p = eng.open("srvsvc", user(1), None).wait().unwrap();
            let t = p.transceive(b"x".to_vec(), 1024).wait().unwrap();
            assert_eq!(
                (t.status, t.data.len()),
                (NtStatus::BUFFER_OVERFLOW, 1024),
                "{backend:?} multishot={multishot}"
            );
            assert_eq!(eng.stats().recv_pool_fallbacks, 0, "no pool, no fallback");
        }
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
        on_both_backends(
            |cfg| {
                cfg.open_timeout = Duration::MAX;
            },
            |backend, eng, _| {
                let p = eng
                    .open("srvsvc", user(1), None)
                    .wait_timeout(Duration::MAX)
                    .expect("open");
                let t = p
                    .transceive(b"long".to_vec(), 100)
                    .wait_timeout(Duration::MAX)
                    .unwrap();
                assert_eq!(t.data, b"long", "{backend:?}");
            },
        );
    });
}

/// Runs `f` once per backend, in a fresh dir with an echo `srvsvc`, on an
/// engine of that backend whose config `tweak` adjusts; a backend the
/// kernel refuses is skipped.
fn on_both_backends(
    tweak: impl Fn(&mut EngineConfig),
    mut f: impl FnMut(BackendChoice, &Engine, &std::path::Path),
) {
    for backend in [BackendChoice::IoUring, BackendChoice::Epoll] {
        let dir = tempfile::tempdir().unwrap();
        let _svc = Scripted::spawn(dir.path(), "srvsvc", Handshake::Accept, echo());
        let mut cfg = EngineConfig::new(dir.path());
        cfg.backend = backend;
        tweak(&mut cfg);
        if let Some(eng) = start_engine(cfg) {
            f(backend, &eng, dir.path());
        }
    }
}

/// Holds `eng`'s only ring thread inside a ring-thread callback of a
/// transceive on `pipe` until the returned sender is used (or 10 s pass).
fn hold_ring(pipe: &opipe::engine::Pipe) -> std::sync::mpsc::Sender<()> {
    let (entered_tx, entered_rx) = std::sync::mpsc::channel::<()>();
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    // (No assert on the ring thread: a panic there would end the ring.)
    pipe.transceive_with(b"gate".to_vec(), 100, move |_, _| {
        let _ = entered_tx.send(());
        let _ = release_rx.recv_timeout(Duration::from_secs(10));
    });
    entered_rx
        .recv_timeout(Duration::from_secs(5))
        .expect("the ring thread ran the callback");
    release_tx
}

/// The command queue between caller threads and a ring is bounded: with
/// the ring thread busy (held in a callback) and `max_queued_commands`
/// commands waiting, a new open, transceive, read, WAIT or callback
/// request ends `STATUS_INSUFFICIENT_RESOURCES` at once; cancels are still
/// taken; the queued requests then run normally. Both backends.
#[test]
fn full_command_queue_refuses_at_once() {
    bounded(Duration::from_secs(60), || {
        on_both_backends(
            |cfg| {
                cfg.rings = 1;
                cfg.max_queued_commands = 8;
            },
            |backend, eng, _| {
                let p = eng.open("srvsvc", user(1), None).wait().unwrap();
                // One queued transceive per pipe: each reply is its own.
                let pipes: Vec<_> = (0..8)
                    .map(|i| eng.open("srvsvc", user(10 + i), None).wait().unwrap())
                    .collect();
                let release = hold_ring(&p);
                let mut queued: Vec<_> = pipes[..6]
                    .iter()
                    .zip(b'a'..)
                    .map(|(q, c)| q.transceive(vec![c], 100))
                    .collect();
                // One cancel of a queued request is taken even now, and repeating
                // it queues nothing more: 7 commands wait, so one more request
                // fits (the 8th) ...
                for _ in 0..100 {
                    queued[5].cancel();
                }
                let mut g = pipes[6].transceive(b"g".to_vec(), 100);
                assert!(
                poll_once(&mut g).is_none(),
                "{backend:?}: refused with 7 of 8 commands waiting (cancels queued more than once?)"
            );
                queued.push(g);
                // ... and the queue is full now.
                let full = Some(Err(NtStatus::INSUFFICIENT_RESOURCES));
                let what = format!("{backend:?}: not refused at once with the queue full");
                let mut t = p.transceive(b"over".to_vec(), 100);
                assert_eq!(
                    poll_once(&mut t).map(|r| r.map(drop)),
                    full,
                    "transceive {what}"
                );
                let mut r = p.read(100);
                assert_eq!(poll_once(&mut r).map(|r| r.map(drop)), full, "read {what}");
                let mut w = p.write(b"over".to_vec());
                assert_eq!(poll_once(&mut w).map(|r| r.map(drop)), full, "write {what}");
                let mut o = eng.open("srvsvc", user(2), None);
                assert_eq!(poll_once(&mut o).map(|r| r.map(drop)), full, "open {what}");
                let mut wt = eng.wait_for_pipe("srvsvc", None);
                assert_eq!(poll_once(&mut wt), full, "WAIT {what}");
                let (cb_tx, cb_rx) = std::sync::mpsc::channel();
                p.transceive_with(b"over".to_vec(), 100, move |_, res| {
                    let _ = cb_tx.send(res.map(|t| t.data));
                });
                release.send(()).unwrap();
                assert_eq!(
                    cb_rx.recv_timeout(Duration::from_secs(5)).unwrap(),
                    Err(NtStatus::INSUFFICIENT_RESOURCES),
                    "{backend:?}: callback request"
                );
                let mut got = Vec::new();
                for (i, r) in queued.into_iter().enumerate() {
                    match r.wait_timeout(Duration::from_secs(5)) {
                        Ok(t) => got.extend_from_slice(&t.data),
                        Err(s) => {
                            assert_eq!((i, s), (5, NtStatus::CANCELLED), "{backend:?}")
                        }
                    }
                }
                assert_eq!(got, b"abcdeg", "{backend:?}: the queued requests ran");
                // Room again: the pipe works.
                assert_eq!(
                    p.transceive(b"ok".to_vec(), 100).wait().unwrap().data,
                    b"ok",
                    "{backend:?}"
                );
            },
        );
    });
}

/// Inputs above 16 MiB (SMB2 writes and IOCTLs are at most 8 MiB) are
/// refused with `STATUS_INVALID_PARAMETER` before anything is sent; 16 MiB
/// itself goes through. Both backends.
#[test]
fn oversized_input_is_invalid_parameter() {
    bounded(Duration::from_secs(60), || {
        on_both_backends(
            |_| {},
            |backend, eng, dir| {
                // Takes what it is sent, answers nothing.
                let sink: ConnFn = std::sync::Arc::new(|mut s: std::os::unix::net::UnixStream| {
                    let mut buf = vec![0u8; 65536];
                    while matches!(std::io::Read::read(&mut s, &mut buf), Ok(n) if n > 0) {}
                });
                let _sink = Scripted::spawn(dir, "sink", Handshake::Accept, sink);
                let p = eng.open("srvsvc", user(1), None).wait().unwrap();
                let big = vec![7u8; (16 << 20) + 1];
                assert_eq!(
                    p.transceive(big.clone(), 100)
                        .wait_timeout(Duration::from_secs(5))
                        .unwrap_err(),
                    NtStatus::INVALID_PARAMETER,
                    "{backend:?}"
                );
                assert_eq!(
                    p.write(big)
                        .wait_timeout(Duration::from_secs(5))
                        .unwrap_err(),
                    NtStatus::INVALID_PARAMETER,
                    "{backend:?}"
                );
                // Nothing of them was sent: the next reply is the next request's.
                assert_eq!(
                    p.transceive(b"next".to_vec(), 100).wait().unwrap().data,
                    b"next",
                    "{backend:?}"
                );
                let max = vec![9u8; 16 << 20];
                let sink = eng.open("sink", user(2), None).wait().unwrap();
                assert_eq!(
                    sink.write(max).wait_timeout(Duration::from_secs(20)),
                    Ok(16 << 20),
                    "{backend:?}: 16 MiB is allowed"
                );
            },
        );
    });
}
