//! The engine over real AF_UNIX sockets, against scripted (and misbehaving)
//! services written here. Every test is bounded in time.

mod common;

use std::time::{Duration, Instant};

use common::*;
use opipe::engine::{Backend, BackendChoice, BufferMode, Engine, EngineConfig, Tree};
use opipe::protocol::{fsctl, NtStatus, PeekReply};

const MODES: [BufferMode; 2] = [BufferMode::Plain, BufferMode::Registered];
/// Every test runs on both backends: the same semantics by construction.
const BACKENDS: [BackendChoice; 2] = [BackendChoice::IoUring, BackendChoice::Epoll];
const T: Duration = Duration::from_secs(30);
/// The open deadline of the engines made here (the engine's default):
/// far above any handshake of the scripted services, which on a loaded
/// 2-core machine took up to 1.6 s from an open's start to the service's
/// answer (256 opens at once, each waiting for a service thread; a test
/// process paused for half a second); 400 ms failed opens there. A hung
/// open still fails, at 5 s, well inside every test's bound. The tests of
/// the deadline itself set their own.
const OPEN_TIMEOUT: Duration = Duration::from_secs(5);

/// An engine on `backend`; `None` (skipped, loudly) where io_uring is refused.
fn engine(dir: &std::path::Path, mode: BufferMode, backend: BackendChoice) -> Option<Engine> {
    engine_with_open_timeout(dir, mode, backend, OPEN_TIMEOUT)
}

/// [`engine`] with its opens' deadline `open_timeout`.
fn engine_with_open_timeout(
    dir: &std::path::Path,
    mode: BufferMode,
    backend: BackendChoice,
    open_timeout: Duration,
) -> Option<Engine> {
    let mut cfg = EngineConfig::new(dir);
    cfg.buffers = mode;
    cfg.backend = backend;
    cfg.open_timeout = open_timeout;
    cfg.reg_slots = 64;
    let e = start_engine(cfg)?;
    let want = match backend {
        BackendChoice::Epoll => Some(Backend::Epoll),
        BackendChoice::IoUring => Some(Backend::IoUring),
        BackendChoice::Auto => None,
    };
    if let Some(b) = want {
        assert_eq!(e.backend(), b);
    }
    if e.backend() == Backend::Epoll {
        assert_eq!(e.config().buffers, BufferMode::Plain, "effective mode");
    }
    Some(e)
}

/// Runs `body` once per backend and buffer mode, each time with a fresh
/// service in a temp dir (`name` answered by `conn` after handshake `hs`)
/// and an engine on that backend in that mode (skipped, loudly, where
/// io_uring is refused).
fn each_backend_and_mode(
    name: &str,
    hs: Handshake,
    conn: ConnFn,
    body: impl Fn(BackendChoice, BufferMode, &Engine),
) {
    for_engines(name, hs, conn, &MODES, body)
}

/// [`each_backend_and_mode`] with plain buffers only.
fn each_backend(name: &str, hs: Handshake, conn: ConnFn, body: impl Fn(BackendChoice, &Engine)) {
    for_engines(name, hs, conn, &[BufferMode::Plain], |backend, _, eng| {
        body(backend, eng)
    })
}

fn for_engines(
    name: &str,
    hs: Handshake,
    conn: ConnFn,
    modes: &[BufferMode],
    body: impl Fn(BackendChoice, BufferMode, &Engine),
) {
    for backend in BACKENDS {
        for &mode in modes {
            let dir = tempfile::tempdir().unwrap();
            let _svc = Scripted::spawn(dir.path(), name, hs, conn.clone());
            let Some(eng) = engine(dir.path(), mode, backend) else {
                continue;
            };
            body(backend, mode, &eng);
        }
    }
}

#[test]
fn open_transceive_echo_both_modes() {
    bounded(T, || {
        each_backend_and_mode("srvsvc", Handshake::Accept, echo(), |_, mode, eng| {
            let pipe = eng
                .open("\\PIPE\\SrvSvc", user(1), None)
                .wait()
                .expect("open");
            let info = pipe.info();
            assert_eq!(info.name.as_str(), "srvsvc");
            assert_eq!(info.smb_name(), "\\srvsvc");
            assert_eq!(info.device_state, 0x05ff);
            assert_eq!(info.dos_attributes, 0x80);
            assert_eq!(info.allocation_size, 4280);
            for i in 0..50u8 {
                let msg = vec![i; 10 + i as usize];
                let t = pipe
                    .transceive(msg.clone(), 4280)
                    .wait()
                    .expect("transceive");
                assert_eq!(t.status, NtStatus::SUCCESS, "{mode:?}");
                assert_eq!(t.data, msg, "{mode:?}");
            }
            pipe.close().wait().expect("close");
        });
    });
}

/// On io_uring a finished request's buffer carries a later reply, with the
/// multishot receive and with the linked SEND -> RECV chain alike: once
/// warm, a reply costs no allocation. The request's distinctive capacity
/// shows up on the reply (a fresh buffer for 20 bytes would not have it);
/// the bytes are still the reply's.
#[test]
fn a_sent_requests_buffer_carries_a_later_reply() {
    fn check(pipe: &opipe::engine::Pipe, reuses: bool, what: &str) {
        let mut first = Vec::with_capacity(3001);
        first.extend_from_slice(&[7u8; 20]);
        let t = pipe.transceive(first, 4280).wait().expect("transceive");
        assert_eq!(t.data, [7u8; 20]);
        let t = pipe
            .transceive(vec![9u8; 20], 4280)
            .wait()
            .expect("transceive");
        assert_eq!(t.data, [9u8; 20]);
        if reuses {
            assert_eq!(
                t.data.capacity(),
                3001,
                "{what}: the reply is not in the first request's buffer"
            );
        }
    }
    bounded(T, || {
        each_backend("srvsvc", Handshake::Accept, echo(), |backend, eng| {
            let pipe = eng
                .open("\\PIPE\\srvsvc", user(1), None)
                .wait()
                .expect("open");
            check(&pipe, backend == BackendChoice::IoUring, "multishot");
            pipe.close().wait().expect("close");
        });
        let dir = tempfile::tempdir().unwrap();
        let _svc = Scripted::spawn(dir.path(), "srvsvc", Handshake::Accept, echo());
        let mut cfg = EngineConfig::new(dir.path());
        cfg.backend = BackendChoice::IoUring;
        cfg.multishot = false;
        if let Some(eng) = start_engine(cfg) {
            let pipe = eng.open("srvsvc", user(1), None).wait().expect("open");
            check(&pipe, true, "linked");
            pipe.close().wait().expect("close");
        }
    });
}

#[test]
fn file_ids_are_unique() {
    bounded(T, || {
        each_backend("lsarpc", Handshake::Accept, echo(), |_, eng| {
            let a = eng.open("lsarpc", user(1), None).wait().unwrap();
            let b = eng.open("lsarpc", user(1), None).wait().unwrap();
            assert_ne!(a.info().file_id, b.info().file_id);
        });
    });
}

#[test]
fn no_listener_is_object_name_not_found() {
    bounded(T, || {
        for backend in BACKENDS {
            let dir = tempfile::tempdir().unwrap();
            let Some(eng) = engine(dir.path(), BufferMode::Plain, backend) else {
                continue;
            };
            let r = eng.open("\\PIPE\\winreg", user(1), None).wait();
            assert_eq!(r.unwrap_err(), NtStatus::OBJECT_NAME_NOT_FOUND);
            // A socket file nobody listens on: connect is refused.
            let path = dir.path().join("samr");
            drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
            let r = eng.open("samr", user(1), None).wait();
            assert_eq!(r.unwrap_err(), NtStatus::OBJECT_NAME_NOT_FOUND);
        }
    });
}

#[test]
fn silent_handshake_hits_the_deadline() {
    bounded(T, || {
        for backend in BACKENDS {
            let dir = tempfile::tempdir().unwrap();
            let _svc = Scripted::spawn(dir.path(), "netlogon", Handshake::Silent, echo());
            let deadline = Duration::from_millis(400);
            let Some(eng) =
                engine_with_open_timeout(dir.path(), BufferMode::Plain, backend, deadline)
            else {
                continue;
            };
            let t0 = Instant::now();
            let r = eng.open("netlogon", user(1), None).wait();
            let took = t0.elapsed();
            assert_eq!(r.unwrap_err(), NtStatus::PIPE_NOT_AVAILABLE);
            assert!(
                took >= Duration::from_millis(350),
                "ended before the deadline: {took:?}"
            );
            assert!(
                took < Duration::from_secs(5),
                "deadline not enforced: {took:?}"
            );
        }
    });
}

/// Runs `body` once per backend with a fresh echo service (`name`, answering
/// the handshake with `hs`) and an engine running at most `max` opens at
/// once, each with `open_timeout` (skipped, loudly, where io_uring is
/// refused).
fn each_backend_open_limit(
    name: &str,
    hs: Handshake,
    max: usize,
    open_timeout: Duration,
    body: impl Fn(BackendChoice, Engine, &Scripted),
) {
    for backend in BACKENDS {
        let dir = tempfile::tempdir().unwrap();
        let svc = Scripted::spawn(dir.path(), name, hs, echo());
        let mut cfg = EngineConfig::new(dir.path());
        cfg.backend = backend;
        cfg.max_opens_in_flight = max;
        cfg.open_timeout = open_timeout;
        let Some(eng) = start_engine(cfg) else {
            continue;
        };
        body(backend, eng, &svc);
    }
}

#[test]
fn opens_beyond_the_limit_wait_their_turn_and_all_succeed() {
    bounded(T, || {
        each_backend_open_limit(
            "srvsvc",
            Handshake::Accept,
            2,
            Duration::from_secs(5),
            |backend, eng, svc| {
                let opens: Vec<_> = (0..20).map(|i| eng.open("srvsvc", user(i), None)).collect();
                for (i, o) in opens.into_iter().enumerate() {
                    let pipe = o
                        .wait()
                        .unwrap_or_else(|s| panic!("{backend:?} open {i}: {s}"));
                    let t = pipe
                        .transceive(vec![i as u8; 9], 4280)
                        .wait()
                        .expect("transceive");
                    assert_eq!(t.data, [i as u8; 9]);
                }
                assert_eq!(svc.accepted.load(std::sync::atomic::Ordering::SeqCst), 20);
            },
        );
    });
}

/// With one open at a time and a service that never answers: the second
/// and third opens wait without connecting; cancelling the second ends it
/// at once (long before the first's deadline), and the third starts only
/// when the first has ended.
#[test]
fn a_waiting_open_never_connects_and_cancels_at_once() {
    use std::sync::atomic::Ordering::SeqCst;
    let deadline = Duration::from_millis(1500);
    bounded(T, move || {
        each_backend_open_limit(
            "slow",
            Handshake::Silent,
            1,
            deadline,
            |backend, eng, svc| {
                let t0 = Instant::now();
                let first = eng.open("slow", user(1), None);
                let second = eng.open("slow", user(2), None);
                let third = eng.open("slow", user(3), None);
                while svc.accepted.load(SeqCst) == 0 && t0.elapsed() < Duration::from_secs(5) {
                    std::thread::sleep(Duration::from_millis(5));
                }
                std::thread::sleep(Duration::from_millis(100));
                assert_eq!(
                    svc.accepted.load(SeqCst),
                    1,
                    "{backend:?}: only the first connects"
                );
                second.cancel();
                assert_eq!(
                    second.wait().unwrap_err(),
                    NtStatus::CANCELLED,
                    "{backend:?}"
                );
                // Ended by the cancel itself, not when its turn came (the first
                // open's deadline).
                assert!(t0.elapsed() < deadline, "{backend:?}: {:?}", t0.elapsed());
                assert_eq!(first.wait().unwrap_err(), NtStatus::PIPE_NOT_AVAILABLE);
                assert_eq!(third.wait().unwrap_err(), NtStatus::PIPE_NOT_AVAILABLE);
                assert!(
                    t0.elapsed() >= deadline * 2,
                    "the third waited for the first"
                );
                assert_eq!(
                    svc.accepted.load(SeqCst),
                    2,
                    "{backend:?}: the cancelled one never connected"
                );
            },
        );
    });
}

/// Waiting opens end with their session's disconnect (others keep their
/// place) and with the engine's shutdown.
#[test]
fn waiting_opens_end_with_their_session_and_with_the_engine() {
    let deadline = Duration::from_millis(600);
    bounded(T, move || {
        each_backend_open_limit("slow", Handshake::Silent, 1, deadline, |backend, eng, _| {
            let running = eng.open("slow", user(1), None);
            let other = eng.open("slow", user(2), None);
            let mine = eng.open("slow", user(1), None);
            eng.disconnect_session(1).wait().expect("disconnect");
            // Both of session 1's opens end cancelled (the waiting one would
            // otherwise start after the other session's and time out).
            for r in [running, mine] {
                assert_eq!(r.wait().unwrap_err(), NtStatus::CANCELLED, "{backend:?}");
            }
            // Session 2's open then ran, against a silent service.
            assert_eq!(other.wait().unwrap_err(), NtStatus::PIPE_NOT_AVAILABLE);

            let running = eng.open("slow", user(3), None);
            let waiting = eng.open("slow", user(4), None);
            drop(eng);
            assert!(running.wait().is_err(), "{backend:?}");
            assert_eq!(
                waiting.wait().unwrap_err(),
                NtStatus::PIPE_NOT_AVAILABLE,
                "{backend:?}"
            );
        });
    });
}

#[test]
fn partial_status_word_is_pipe_not_available() {
    bounded(T, || {
        each_backend("spoolss", Handshake::Partial, echo(), |_, eng| {
            let r = eng.open("spoolss", user(1), None).wait();
            assert_eq!(r.unwrap_err(), NtStatus::PIPE_NOT_AVAILABLE);
        });
    });
}

#[test]
fn refused_open_returns_the_service_status() {
    bounded(T, || {
        each_backend(
            "svcctl",
            Handshake::Status(NtStatus::ACCESS_DENIED.raw()),
            echo(),
            |_, eng| {
                let r = eng.open("svcctl", user(1), None).wait();
                assert_eq!(r.unwrap_err(), NtStatus::ACCESS_DENIED);
            },
        );
    });
}

#[test]
fn bad_names_are_rejected_before_any_socket() {
    bounded(T, || {
        for backend in BACKENDS {
            let dir = tempfile::tempdir().unwrap();
            let svc = Scripted::spawn(dir.path(), "x", Handshake::Accept, echo());
            let Some(eng) = engine(dir.path(), BufferMode::Plain, backend) else {
                continue;
            };
            let long = "a".repeat(40);
            for bad in [
                "..\\x",
                "\\PIPE\\..\\x",
                "a/b",
                "",
                "\\PIPE\\",
                long.as_str(),
                "x\0y",
                ".",
                "..",
            ] {
                let r = eng.open(bad, user(1), None).wait();
                assert_eq!(
                    r.unwrap_err(),
                    NtStatus::OBJECT_NAME_INVALID,
                    "name {bad:?}"
                );
            }
            std::thread::sleep(Duration::from_millis(50));
            assert_eq!(
                svc.accepted.load(std::sync::atomic::Ordering::SeqCst),
                0,
                "a bad name reached the service"
            );
        }
    });
}

#[test]
fn overflow_then_reads_drain_in_order_both_modes() {
    bounded(T, || {
        each_backend_and_mode(
            "srvsvc",
            Handshake::Accept,
            big_reply(10_000),
            |_, mode, eng| {
                let pipe = eng.open("srvsvc", user(1), None).wait().unwrap();
                let expect = pattern(10_000);
                for _round in 0..3 {
                    let t = pipe.transceive(b"req".to_vec(), 1024).wait().unwrap();
                    assert_eq!(t.status, NtStatus::BUFFER_OVERFLOW, "{mode:?}");
                    assert_eq!(t.data.len(), 1024);
                    let mut got = t.data;
                    while got.len() < expect.len() {
                        let d = pipe.read(1024).wait().expect("read rest");
                        assert!(!d.is_empty());
                        got.extend_from_slice(&d);
                    }
                    assert_eq!(got, expect, "{mode:?}: bytes intact and in order");
                }
            },
        );
    });
}

/// A transceive with a small `max_out` may take more of the reply off the
/// socket than it returns (io_uring reads a whole pool buffer ahead). The
/// rest must still come out of peek, read and the next transceive in
/// stream order, with the same statuses as if it were still queued.
#[test]
fn overflowed_reply_rest_keeps_stream_order_both_modes() {
    bounded(T, || {
        each_backend_and_mode(
            "srvsvc",
            Handshake::Accept,
            big_reply(3000),
            |backend, mode, eng| {
                let reply = pattern(3000);
                let pipe = eng.open("srvsvc", user(1), None).wait().unwrap();
                let t = pipe.transceive(b"one".to_vec(), 100).wait().unwrap();
                assert_eq!(t.status, NtStatus::BUFFER_OVERFLOW, "{backend:?} {mode:?}");
                assert_eq!(t.data, &reply[..100]);
                // Peek sees the whole rest, wherever the engine holds it.
                let t = pipe.peek(16 + 4000).wait().unwrap();
                let (hdr, data) = PeekReply::decode(&t.data).unwrap();
                assert_eq!(t.status, NtStatus::SUCCESS);
                assert_eq!(hdr.read_data_available, 2900, "{backend:?} {mode:?}");
                assert_eq!(data, &reply[100..]);
                // A small peek reports the rest available and overflows.
                let t = pipe.peek(16 + 10).wait().unwrap();
                let (hdr, data) = PeekReply::decode(&t.data).unwrap();
                assert_eq!(t.status, NtStatus::BUFFER_OVERFLOW);
                assert_eq!((hdr.read_data_available, data), (2900, &reply[100..110]));
                // Reads continue where the transceive stopped.
                assert_eq!(pipe.read(50).wait().unwrap(), &reply[100..150]);
                // A new transceive first gets what is left of the old reply
                // (the stream is a stream), then the new reply follows.
                let mut stream = Vec::new();
                let t = pipe.transceive(b"two".to_vec(), 4280).wait().unwrap();
                assert_eq!(t.status, NtStatus::SUCCESS);
                stream.extend_from_slice(&t.data);
                while stream.len() < 2850 + 3000 {
                    let d = pipe.read(4280).wait().expect("read rest");
                    assert!(!d.is_empty());
                    stream.extend_from_slice(&d);
                }
                let mut want = reply[150..].to_vec();
                want.extend_from_slice(&reply);
                assert_eq!(stream, want, "{backend:?} {mode:?}: in order, nothing lost");
                // Nothing left: an empty peek.
                let t = pipe.peek(64).wait().unwrap();
                let (hdr, _) = PeekReply::decode(&t.data).unwrap();
                assert_eq!(hdr.read_data_available, 0);
            },
        );
    });
}

#[test]
fn overflow_rule_matches_the_seed() {
    bounded(T, || {
        for backend in BACKENDS {
            let dir = tempfile::tempdir().unwrap();
            let _a = Scripted::spawn(dir.path(), "big", Handshake::Accept, big_reply(6000));
            let _b = Scripted::spawn(dir.path(), "exact", Handshake::Accept, big_reply(1024));
            let Some(eng) = engine(dir.path(), BufferMode::Plain, backend) else {
                continue;
            };
            // max_out >= 4280: never overflow, even with more waiting.
            let p = eng.open("big", user(1), None).wait().unwrap();
            let t = p.transceive(b"q".to_vec(), 4280).wait().unwrap();
            assert_eq!((t.status, t.data.len()), (NtStatus::SUCCESS, 4280));
            // Exactly filled, nothing more waiting: success.
            let p = eng.open("exact", user(1), None).wait().unwrap();
            let t = p.transceive(b"q".to_vec(), 1024).wait().unwrap();
            assert_eq!((t.status, t.data.len()), (NtStatus::SUCCESS, 1024));
            // Short read: success.
            let t = p.transceive(b"q".to_vec(), 2000).wait().unwrap();
            assert_eq!((t.status, t.data.len()), (NtStatus::SUCCESS, 1024));
        }
    });
}

#[test]
fn cancel_one_request_pipe_stays_usable_both_modes() {
    bounded(T, || {
        each_backend_and_mode(
            "wkssvc",
            Handshake::Accept,
            hang_or_echo(),
            |_, mode, eng| {
                let pipe = eng.open("wkssvc", user(1), None).wait().unwrap();
                let req = pipe.transceive(b"H.".to_vec(), 1024);
                std::thread::sleep(Duration::from_millis(50));
                let t0 = Instant::now();
                req.cancel();
                assert_eq!(req.wait().unwrap_err(), NtStatus::CANCELLED, "{mode:?}");
                assert!(t0.elapsed() < Duration::from_secs(2));
                let t = pipe
                    .transceive(b"hello".to_vec(), 1024)
                    .wait()
                    .expect("pipe usable after cancel");
                assert_eq!(t.data, b"hello");
            },
        );
    });
}

/// A cancel that reaches the ring before the request does: the ring thread
/// is held in a ring-thread callback (so it cannot pick up commands) while
/// the caller starts a request and cancels it. The request must end
/// `STATUS_CANCELLED` and its bytes must never reach the service; a cancel
/// after a request finished does nothing. Every backend and buffer mode.
#[test]
fn cancel_before_start_and_after_finish() {
    bounded(T, || {
        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let conn = logged_echo(Duration::ZERO, Some(log.clone()));
        each_backend_and_mode("echo", Handshake::Accept, conn, |backend, mode, eng| {
            log.lock().unwrap().clear();
            let pipe = eng.open("echo", user(1), None).wait().unwrap();
            // Hold the ring thread inside the callback of a first request.
            let (entered_tx, entered_rx) = std::sync::mpsc::channel::<()>();
            let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
            let (gate_tx, gate_rx) = std::sync::mpsc::channel();
            pipe.transceive_with(b"gate".to_vec(), 100, move |_, res| {
                let _ = entered_tx.send(());
                // Bounded: a test that goes wrong must not hang the ring.
                let _ = release_rx.recv_timeout(Duration::from_secs(10));
                let _ = gate_tx.send(res.map(|t| t.data));
            });
            entered_rx
                .recv_timeout(Duration::from_secs(5))
                .expect("the ring thread ran the callback");
            // The ring thread is busy: this request and its cancel wait in
            // the command queue, the cancel flag set before the start.
            let r = pipe.transceive(b"never".to_vec(), 100);
            r.cancel();
            release_tx.send(()).unwrap();
            let gate = gate_rx.recv_timeout(Duration::from_secs(5)).unwrap();
            assert_eq!(gate.unwrap(), b"gate", "{backend:?} {mode:?}");
            assert_eq!(
                r.wait_timeout(Duration::from_secs(5)).unwrap_err(),
                NtStatus::CANCELLED,
                "{backend:?} {mode:?}: cancelled before it started"
            );
            // After the end: the cancel does nothing.
            let r = pipe.transceive(b"abc".to_vec(), 100);
            let h = r.cancel_handle();
            let t = r.wait().expect("not cancelled yet");
            h.cancel();
            assert_eq!(t.data, b"abc", "{backend:?} {mode:?}");
            let t = pipe.transceive(b"def".to_vec(), 100).wait().unwrap();
            assert_eq!(t.data, b"def", "{backend:?} {mode:?}");
            // The service logs what it echoed just after writing it.
            let until = Instant::now() + Duration::from_secs(2);
            while log.lock().unwrap().len() < b"gateabcdef".len() && Instant::now() < until {
                std::thread::sleep(Duration::from_millis(1));
            }
            assert_eq!(
                String::from_utf8_lossy(&log.lock().unwrap()),
                "gateabcdef",
                "{backend:?} {mode:?}: the cancelled request was sent"
            );
        });
    });
}

#[test]
fn service_closing_mid_reply() {
    bounded(T, || {
        each_backend(
            "eventlog",
            Handshake::Accept,
            close_mid_reply(50),
            |_, eng| {
                let pipe = eng.open("eventlog", user(1), None).wait().unwrap();
                let t = pipe.transceive(b"req".to_vec(), 1024).wait().unwrap();
                assert_eq!(t.data, vec![0x42; 50]);
                assert_eq!(pipe.read(1024).wait().unwrap_err(), NtStatus::PIPE_BROKEN);
                let r = pipe.transceive(b"again".to_vec(), 1024).wait();
                assert_eq!(r.unwrap_err(), NtStatus::PIPE_BROKEN);
            },
        );
    });
}

#[test]
fn tree_disconnect_during_open() {
    bounded(T, || {
        each_backend(
            "netdfs",
            Handshake::Delay(Duration::from_millis(150)),
            echo(),
            |_, eng| {
                let tree = Tree::new();
                let req = eng.open("netdfs", user(1), Some(&tree));
                tree.disconnect();
                assert_eq!(req.wait().unwrap_err(), NtStatus::NETWORK_NAME_DELETED);
                let live = Tree::new();
                assert!(eng.open("netdfs", user(1), Some(&live)).wait().is_ok());
            },
        );
    });
}

#[test]
fn peek_never_blocks_and_does_not_consume() {
    bounded(T, || {
        for backend in BACKENDS {
            let dir = tempfile::tempdir().unwrap();
            let first: Vec<u8> = (0..100u8).collect();
            let _svc = Scripted::spawn(
                dir.path(),
                "lsass",
                Handshake::Accept,
                unsolicited(first.clone()),
            );
            let Some(eng) = engine(dir.path(), BufferMode::Plain, backend) else {
                continue;
            };
            let pipe = eng.open("lsass", user(1), None).wait().unwrap();
            std::thread::sleep(Duration::from_millis(50));
            assert_eq!(
                pipe.peek(10).wait().unwrap_err(),
                NtStatus::BUFFER_TOO_SMALL
            );
            let t = pipe.peek(16 + 50).wait().unwrap();
            assert_eq!(t.status, NtStatus::BUFFER_OVERFLOW);
            let (hdr, data) = PeekReply::decode(&t.data).unwrap();
            assert_eq!(hdr.named_pipe_state, fsctl::PIPE_STATE_CONNECTED);
            assert_eq!(hdr.read_data_available, 100);
            assert_eq!(data, &first[..50]);
            let t = pipe.peek(16 + 200).wait().unwrap();
            assert_eq!(t.status, NtStatus::SUCCESS);
            let (hdr, data) = PeekReply::decode(&t.data).unwrap();
            assert_eq!((hdr.read_data_available, data), (100, &first[..]));
            // Not consumed: a read gets the same bytes.
            assert_eq!(pipe.read(1000).wait().unwrap(), first);
            // Nothing waiting: answers at once with 0 available.
            let t0 = Instant::now();
            let t = pipe.peek(64).wait().unwrap();
            let (hdr, data) = PeekReply::decode(&t.data).unwrap();
            assert_eq!(
                (t.status, hdr.read_data_available, data.len()),
                (NtStatus::SUCCESS, 0, 0)
            );
            assert!(t0.elapsed() < Duration::from_secs(1));
            // FSCTL dispatch.
            let t = pipe
                .fsctl(fsctl::FSCTL_PIPE_PEEK, vec![], 32)
                .wait()
                .unwrap();
            assert_eq!(t.data.len(), 16);
            assert_eq!(
                pipe.fsctl(0x1234, vec![], 32).wait().unwrap_err(),
                NtStatus::INVALID_DEVICE_REQUEST
            );
            let t = pipe
                .fsctl(fsctl::FSCTL_PIPE_TRANSCEIVE, b"xy".to_vec(), 32)
                .wait()
                .unwrap();
            assert_eq!(t.data, b"xy");
        }
    });
}

#[test]
fn wait_for_pipe_success_and_timeout() {
    bounded(T, || {
        for backend in BACKENDS {
            let dir = tempfile::tempdir().unwrap();
            let Some(eng) = engine(dir.path(), BufferMode::Plain, backend) else {
                continue;
            };
            let t0 = Instant::now();
            let r = eng
                .wait_for_pipe("nosuch", Some(Duration::from_millis(200)))
                .wait();
            assert_eq!(r.unwrap_err(), NtStatus::IO_TIMEOUT);
            assert!(t0.elapsed() >= Duration::from_millis(190));
            let req = eng.wait_for_pipe("\\PIPE\\later", Some(Duration::from_secs(5)));
            std::thread::sleep(Duration::from_millis(100));
            let _svc = Scripted::spawn(dir.path(), "later", Handshake::Accept, echo());
            req.wait().expect("listener appeared");
            // The wire form, and a malformed one.
            let w = opipe::protocol::WaitRequest {
                timeout_100ns: 1_000_000,
                timeout_specified: true,
                name: "later".into(),
            };
            eng.fsctl_wait(&w.encode()).wait().expect("wait via fsctl");
            assert_eq!(
                eng.fsctl_wait(&[1, 2, 3]).wait().unwrap_err(),
                NtStatus::INVALID_PARAMETER
            );
        }
    });
}

#[test]
fn session_disconnect_with_requests_in_flight() {
    bounded(T, || {
        each_backend("samr", Handshake::Accept, hang_or_echo(), |_, eng| {
            let doomed: Vec<_> = (0..20)
                .map(|_| eng.open("samr", user(1), None).wait().unwrap())
                .collect();
            let kept: Vec<_> = (0..5)
                .map(|_| eng.open("samr", user(2), None).wait().unwrap())
                .collect();
            let reqs: Vec<_> = doomed
                .iter()
                .map(|p| p.transceive(b"H.".to_vec(), 512))
                .collect();
            std::thread::sleep(Duration::from_millis(50));
            eng.disconnect_session(1).wait().unwrap();
            for r in reqs {
                assert_eq!(r.wait().unwrap_err(), NtStatus::CANCELLED);
            }
            // Session 1's pipes are closed; session 2's still work.
            let r = doomed[0].transceive(b"x".to_vec(), 10).wait();
            assert!(
                matches!(
                    r,
                    Err(NtStatus::INVALID_HANDLE) | Err(NtStatus::FILE_CLOSED)
                ),
                "{r:?}"
            );
            for p in &kept {
                assert_eq!(p.transceive(b"ok".to_vec(), 10).wait().unwrap().data, b"ok");
            }
        });
    });
}

#[test]
fn close_with_requests_in_flight_ends_them_all() {
    // One, then three requests wait on a pipe (and, with io_uring, the
    // pipe's multishot receive): closing it must cancel every one of them.
    bounded(T, || {
        each_backend("samr", Handshake::Accept, hang_or_echo(), |_, eng| {
            for n in [1, 3] {
                let p = eng.open("samr", user(1), None).wait().unwrap();
                let reqs: Vec<_> = (0..n).map(|_| p.transceive(b"H.".to_vec(), 512)).collect();
                std::thread::sleep(Duration::from_millis(30));
                p.close().wait().unwrap();
                for r in reqs {
                    assert_eq!(r.wait().unwrap_err(), NtStatus::CANCELLED, "{n} requests");
                }
            }
        });
    });
}

#[test]
fn thousand_pipes_concurrent_transceives_each_reply_to_its_request() {
    bounded(Duration::from_secs(60), || {
        for backend in BACKENDS {
            raise_nofile();
            let dir = tempfile::tempdir().unwrap();
            let _svc = Scripted::spawn(dir.path(), "srvsvc", Handshake::Accept, echo());
            let Some(eng) = engine(dir.path(), BufferMode::Plain, backend) else {
                continue;
            };
            let opens: Vec<_> = (0..1000)
                .map(|i| eng.open("srvsvc", user(i), None))
                .collect();
            let pipes: Vec<_> = opens.into_iter().map(|r| r.wait().expect("open")).collect();
            for round in 0..3u32 {
                let reqs: Vec<_> = pipes
                    .iter()
                    .enumerate()
                    .map(|(i, p)| {
                        let msg =
                            format!("pipe {i} round {round} {}", "x".repeat(i % 97)).into_bytes();
                        (msg.clone(), p.transceive(msg, 4280))
                    })
                    .collect();
                for (msg, r) in reqs {
                    assert_eq!(r.wait().unwrap().data, msg);
                }
            }
        }
    });
}

#[test]
fn futures_work_without_a_runtime() {
    bounded(T, || {
        each_backend("echo", Handshake::Accept, echo(), |_, eng| {
            // A minimal executor: poll with a thread-unparking waker.
            let fut = async {
                let p = eng.open("echo", user(1), None).await?;
                let t = p.transceive(b"async".to_vec(), 64).await?;
                Ok::<_, NtStatus>(t.data)
            };
            assert_eq!(block_on(fut).unwrap(), b"async");
        });
    });
}

fn block_on<F: std::future::Future>(fut: F) -> F::Output {
    use std::sync::Arc;
    use std::task::{Context, Poll, Wake};
    struct Unpark(std::thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Arc::new(Unpark(std::thread::current())).into();
    let mut cx = Context::from_waker(&waker);
    let mut fut = std::pin::pin!(fut);
    loop {
        if let Poll::Ready(v) = fut.as_mut().poll(&mut cx) {
            return v;
        }
        std::thread::park_timeout(Duration::from_millis(100));
    }
}

/// A reply far larger than the engine keeps in memory for a pipe nobody
/// reads (the multishot receive stops at its pushback cap and the rest
/// stays in the socket): after a pause, reads still get every byte in
/// order, and peek counts what is held plus what is queued.
#[test]
fn flood_after_a_transceive_is_read_back_whole_and_in_order() {
    const LEN: usize = 1 << 20;
    bounded(T, || {
        each_backend(
            "flood",
            Handshake::Accept,
            one_reply(LEN, LEN, Duration::ZERO),
            |backend, eng| {
                let want = pattern(LEN);
                let pipe = eng.open("flood", user(1), None).wait().unwrap();
                let t = pipe.transceive(b"go".to_vec(), 1024).wait().unwrap();
                assert_eq!(t.status, NtStatus::BUFFER_OVERFLOW, "{backend:?}");
                let mut got = t.data;
                // Let the service fill the socket and the engine its pushback.
                std::thread::sleep(Duration::from_millis(200));
                let t = pipe.peek(16 + 8).wait().unwrap();
                let (hdr, data) = PeekReply::decode(&t.data).unwrap();
                assert!(hdr.read_data_available > 0, "{backend:?}");
                assert_eq!(data, &want[got.len()..got.len() + 8]);
                while got.len() < LEN {
                    let d = pipe.read(4280).wait().expect("read");
                    assert!(
                        !d.is_empty() && d.len() <= 4280,
                        "{backend:?}: {} bytes",
                        d.len()
                    );
                    got.extend_from_slice(&d);
                }
                assert!(got == want, "{backend:?}: bytes lost or reordered");
                pipe.close().wait().unwrap();
            },
        );
    });
}

/// Reads larger than a receive-pool buffer take a receive of their own;
/// one must never race the pipe's multishot receive for the same bytes
/// (which would hand the caller later bytes while earlier ones sit in the
/// pushback). Also two requests at once on one pipe: both complete, and
/// together they get the stream in order.
#[test]
fn big_reads_after_transceives_keep_stream_order() {
    const LEN: usize = 3 << 20;
    bounded(T, || {
        each_backend(
            "flood",
            Handshake::Accept,
            one_reply(LEN, LEN, Duration::ZERO),
            |backend, eng| {
                let want = pattern(LEN);
                let pipe = eng.open("flood", user(1), None).wait().unwrap();
                let t = pipe.transceive(b"go".to_vec(), 100).wait().unwrap();
                let mut got = t.data;
                let mut i = 0usize;
                while got.len() < LEN {
                    // Alternate big reads (own receive) with small ones (the
                    // multishot receive), and now and then two reads at once.
                    // Two reads at once only while more than the first can
                    // take is left: the second must have bytes to wait for.
                    let two_ok = LEN - got.len() > 4280;
                    let d = match i % 3 {
                        0 => pipe.read(65536).wait().expect("big read"),
                        2 if two_ok => {
                            let a = pipe.read(4280);
                            let b = pipe.read(65536);
                            let mut d = a.wait().expect("first of two");
                            d.extend_from_slice(&b.wait().expect("second of two"));
                            d
                        }
                        _ => pipe.read(1000).wait().expect("small read"),
                    };
                    assert!(!d.is_empty());
                    got.extend_from_slice(&d);
                    i += 1;
                }
                assert_eq!(got.len(), LEN, "{backend:?}");
                assert!(
                    got == want,
                    "{backend:?}: bytes reordered or lost after {i} reads"
                );
            },
        );
    });
}

/// A big read issued while the socket is empty and the pipe's multishot
/// receive is armed must not lose the race for the next bytes to it (the
/// caller would get later bytes while earlier ones sit in the pushback).
#[test]
fn big_read_on_an_empty_socket_keeps_stream_order() {
    const LEN: usize = 1000 * 200;
    bounded(T, || {
        each_backend(
            "trickle",
            Handshake::Accept,
            one_reply(LEN, 200, Duration::from_micros(200)),
            |backend, eng| {
                let want = pattern(LEN);
                let pipe = eng.open("trickle", user(1), None).wait().unwrap();
                let mut got = pipe.transceive(b"go".to_vec(), 100).wait().unwrap().data;
                let mut i = 0usize;
                while got.len() < LEN {
                    let max = if i % 2 == 0 { 1000 } else { 65536 };
                    let d = pipe.read(max).wait().expect("read");
                    assert!(!d.is_empty());
                    got.extend_from_slice(&d);
                    i += 1;
                }
                assert!(
                    got == want,
                    "{backend:?}: bytes reordered or lost after {i} reads"
                );
            },
        );
    });
}

/// io_uring with the multishot receive switched off: the linked
/// SEND -> RECV chain per transceive keeps every semantic (echo, overflow
/// then reads, cancel with the pipe reused, peek).
#[test]
fn linked_receive_path_without_multishot() {
    bounded(T, || {
        let dir = tempfile::tempdir().unwrap();
        let _echo = Scripted::spawn(dir.path(), "echo", Handshake::Accept, hang_or_echo());
        let _big = Scripted::spawn(dir.path(), "big", Handshake::Accept, big_reply(10_000));
        let mut cfg = EngineConfig::new(dir.path());
        cfg.backend = BackendChoice::IoUring;
        cfg.multishot = false;
        let Some(eng) = start_engine(cfg) else {
            return;
        };
        let pipe = eng.open("echo", user(1), None).wait().unwrap();
        for i in 0..20u8 {
            let msg = vec![i; 1 + i as usize * 50];
            let t = pipe.transceive(msg.clone(), 4280).wait().unwrap();
            assert_eq!((t.status, t.data), (NtStatus::SUCCESS, msg));
        }
        let req = pipe.transceive(b"H.".to_vec(), 1024);
        std::thread::sleep(Duration::from_millis(30));
        req.cancel();
        assert_eq!(req.wait().unwrap_err(), NtStatus::CANCELLED);
        let t = pipe.transceive(b"after".to_vec(), 1024).wait().unwrap();
        assert_eq!(t.data, b"after");
        let t = pipe.peek(64).wait().unwrap();
        let (hdr, _) = PeekReply::decode(&t.data).unwrap();
        assert_eq!(hdr.read_data_available, 0);

        let big = eng.open("big", user(1), None).wait().unwrap();
        let expect = pattern(10_000);
        let t = big.transceive(b"q".to_vec(), 1024).wait().unwrap();
        assert_eq!(t.status, NtStatus::BUFFER_OVERFLOW);
        let mut got = t.data;
        while got.len() < expect.len() {
            got.extend_from_slice(&big.read(1024).wait().unwrap());
        }
        assert_eq!(got, expect);
    });
}

/// Several requests waiting on one pipe at once get the stream's bytes in
/// the order they started; a cancelled one leaves its bytes to the next.
/// (io_uring's multishot receive; the epoll backend, like the seed, lets
/// concurrent receives race.)
#[test]
fn concurrent_requests_on_one_pipe_are_served_in_order() {
    bounded(T, || {
        let dir = tempfile::tempdir().unwrap();
        let _svc = Scripted::spawn(
            dir.path(),
            "slow",
            Handshake::Accept,
            slow_echo(Duration::from_millis(5)),
        );
        let Some(eng) = engine(dir.path(), BufferMode::Plain, BackendChoice::IoUring) else {
            return;
        };
        let pipe = eng.open("slow", user(1), None).wait().unwrap();
        assert_eq!(
            pipe.transceive(b"one".to_vec(), 100).wait().unwrap().data,
            b"one"
        );
        // The read waits first, so the reply to t3 is the read's.
        let r2 = pipe.read(100);
        let t3 = pipe.transceive(b"two".to_vec(), 100);
        assert_eq!(r2.wait().unwrap(), b"two", "the read started before t3");
        assert_eq!(pipe.write(b"three".to_vec()).wait().unwrap(), 5);
        assert_eq!(t3.wait().unwrap().data, b"three");

        // A cancelled waiter leaves the next bytes to the one after it.
        let r4 = pipe.read(100);
        let r5 = pipe.read(100);
        std::thread::sleep(Duration::from_millis(20));
        r4.cancel();
        assert_eq!(r4.wait().unwrap_err(), NtStatus::CANCELLED);
        assert_eq!(pipe.write(b"four".to_vec()).wait().unwrap(), 4);
        assert_eq!(r5.wait().unwrap(), b"four");

        // A big read (a receive of its own) queued behind a waiter.
        let r6 = pipe.read(100);
        let r7 = pipe.read(65536);
        assert_eq!(pipe.write(b"five".to_vec()).wait().unwrap(), 4);
        assert_eq!(r6.wait().unwrap(), b"five");
        assert_eq!(pipe.write(b"six".to_vec()).wait().unwrap(), 3);
        assert_eq!(r7.wait().unwrap(), b"six");
    });
}
