//! Cancels racing replies on ONE pipe, both backends: whatever the timing,
//! every reply the service sends is delivered exactly once, whole and in
//! order (to the request that asked, or, as on any byte stream, to a later
//! read after a cancel), and never swallowed by a cancelled request. A
//! cancelled request may not have been sent at all (cancelled before its
//! send); every request that was not cancelled must find its reply.
//!
//! It runs on every receive path: io_uring with the multishot receive,
//! io_uring with linked SEND+RECV chains (`multishot = false`, where the
//! cancel-race rule `PipeEntry::draining` matters most), io_uring with
//! registered buffers, and epoll.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use opipe::engine::{BackendChoice, BufferMode, EngineConfig};
use opipe::protocol::NtStatus;

/// Requests per run.
const ROUNDS: u32 = 6000;

/// The receive paths the race runs on.
#[derive(Debug, Clone, Copy)]
enum Path {
    Multishot,
    Linked,
    Registered,
    Epoll,
}

fn config(dir: &std::path::Path, path: Path) -> EngineConfig {
    let mut cfg = EngineConfig::new(dir);
    cfg.rings = 1;
    match path {
        Path::Multishot => cfg.backend = BackendChoice::IoUring,
        Path::Linked => {
            cfg.backend = BackendChoice::IoUring;
            cfg.multishot = false;
        }
        Path::Registered => {
            cfg.backend = BackendChoice::IoUring;
            cfg.buffers = BufferMode::Registered;
        }
        Path::Epoll => cfg.backend = BackendChoice::Epoll,
    }
    cfg
}

fn run(path: Path) {
    let dir = tempfile::tempdir().unwrap();
    let echoed = Arc::new(Mutex::new(Vec::new()));
    let _svc = Scripted::spawn(
        dir.path(),
        "race",
        Handshake::Accept,
        logged_echo(Duration::from_micros(300), Some(echoed.clone())),
    );
    let cfg = config(dir.path(), path);
    let Some(eng) = start_engine(cfg) else {
        return;
    };
    let pipe = eng.open("race", user(1), None).wait().unwrap();
    // Keep the ring busy with other pipes, so cancels meet completions that
    // are already on their way (the narrow window where a cancel loses).
    let _busy_svc = Scripted::spawn(dir.path(), "busy", Handshake::Accept, echo());
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = {
        let (eng, stop) = (eng.clone(), stop.clone());
        std::thread::spawn(move || {
            let pipes: Vec<_> = (0..64)
                .map(|i| eng.open("busy", user(100 + i), None).wait().unwrap())
                .collect();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let reqs: Vec<_> = pipes
                    .iter()
                    .map(|p| p.transceive(vec![7u8; 256], 4280))
                    .collect();
                for r in reqs {
                    assert_eq!(r.wait().unwrap().data.len(), 256);
                }
            }
        })
    };
    let mut got: Vec<u8> = Vec::new();
    let mut not_cancelled = Vec::new();
    // Every other cancel is followed at once by the next request, before
    // the cancelled one is waited for: the cancel and the next start reach
    // the ring together, while the cancelled request's receive may still be
    // in the kernel (the case the cancel-race rule exists for).
    let mut cancelled_pending: Option<(u32, opipe::engine::Request<_>)> = None;
    let mut settle = |i: u32, res: Result<opipe::engine::Transfer, NtStatus>| match res {
        Ok(t) => {
            got.extend_from_slice(&t.data);
            not_cancelled.push(i);
        }
        Err(s) => {
            assert_eq!(s, NtStatus::CANCELLED);
            assert!(
                i % 5 != 0,
                "uncancelled request {i} got no reply within 5 s (reply stolen)"
            );
        }
    };
    for i in 0..ROUNDS {
        let msg = format!("<{i}:{}>", "x".repeat((i % 7) as usize)).into_bytes();
        let req = pipe.transceive(msg, 4280);
        if let Some((j, r)) = cancelled_pending.take() {
            settle(j, r.wait_timeout(Duration::from_secs(5)));
        }
        // Cancel at once (every 3rd: while the request's chain is being
        // started, when its receive may not be armed yet) or around the
        // moment the reply comes back (0..600 us), or not at all (every 5th),
        // so that a stolen reply shows as a hang.
        if i % 3 != 0 {
            std::thread::sleep(Duration::from_micros(u64::from(i * 37 % 600)));
        }
        if i % 5 != 0 {
            req.cancel();
            if i % 2 == 0 {
                cancelled_pending = Some((i, req));
                continue;
            }
        }
        settle(i, req.wait_timeout(Duration::from_secs(5)));
    }
    if let Some((j, r)) = cancelled_pending.take() {
        settle(j, r.wait_timeout(Duration::from_secs(5)));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    load.join().unwrap();
    // Let the last replies arrive, then read whatever is still in the stream.
    std::thread::sleep(Duration::from_millis(100));
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        assert!(Instant::now() < deadline, "draining took too long");
        let t = pipe.peek(16).wait().expect("peek");
        let (hdr, _) = opipe::protocol::PeekReply::decode(&t.data).unwrap();
        if hdr.read_data_available == 0 {
            break;
        }
        got.extend_from_slice(&pipe.read(65536).wait().expect("read the rest"));
    }
    // The oracle: exactly the bytes the service sent, in order.
    let sent_back = echoed.lock().unwrap().clone();
    assert_eq!(
        String::from_utf8_lossy(&got),
        String::from_utf8_lossy(&sent_back),
        "the client did not get exactly what the service sent"
    );
    // Whole tokens, strictly increasing: nothing duplicated, reordered or cut.
    let text = String::from_utf8(got).expect("ascii");
    let mut seen = Vec::new();
    let mut rest = text.as_str();
    while !rest.is_empty() {
        let end = rest
            .find('>')
            .unwrap_or_else(|| panic!("cut token in {rest:?}"));
        let tok = &rest[..=end];
        let i: u32 = tok[1..tok.find(':').unwrap()].parse().unwrap();
        assert_eq!(
            tok,
            format!("<{i}:{}>", "x".repeat((i % 7) as usize)),
            "damaged token"
        );
        assert!(
            seen.last().map_or(true, |&l| l < i),
            "token {i} after {seen:?}"
        );
        seen.push(i);
        rest = &rest[end + 1..];
    }
    for i in &not_cancelled {
        assert!(seen.contains(i), "reply of uncancelled request {i} lost");
    }
    let cancelled = ROUNDS as usize - not_cancelled.len();
    assert!(
        cancelled > 0,
        "no request was cancelled: the test did not test"
    );
    eprintln!(
        "{path:?}: {cancelled} of {ROUNDS} cancelled, {} replies delivered whole and in order",
        seen.len()
    );
}

#[test]
fn cancel_races_lose_nothing_io_uring_multishot() {
    bounded(Duration::from_secs(120), || run(Path::Multishot));
}

#[test]
fn cancel_races_lose_nothing_io_uring_linked() {
    bounded(Duration::from_secs(120), || run(Path::Linked));
}

#[test]
fn cancel_races_lose_nothing_io_uring_registered() {
    bounded(Duration::from_secs(120), || run(Path::Registered));
}

#[test]
fn cancel_races_lose_nothing_epoll() {
    bounded(Duration::from_secs(120), || run(Path::Epoll));
}
