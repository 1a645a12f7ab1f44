//! At the descriptor limit the service evicts the oldest connections still
//! in their handshake so an honest client gets in (issue 12, item 7).
//!
//! The service runs in a child process (this test binary re-run with
//! [`CHILD_ENV`] set) whose `RLIMIT_NOFILE` is low; the clients live in the
//! parent, whose descriptors do not count against it.

mod common;

use std::io::{BufRead, Read, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use opipe::protocol::{decode_status_word, encode_open_message, NtStatus};
use opipe::service::{BackendChoice, Service};

use common::child;
use common::client::*;

const CHILD_ENV: &str = "OPIPE_EVICT_CHILD";
/// The child's descriptor limit: stdio, the listener, the eventfd, the
/// ring or epoll fd and a few more leave room for about 20 connections.
const NOFILE: u64 = 28;
/// Far longer than the test: without eviction nobody would get in.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(60);

/// The child: a service with few descriptors until stdin closes; prints
/// `READY <socket>` (or `SKIPPED ...`), then `EVICTED <n>` at the end.
fn serve(backend: BackendChoice) {
    let lim = libc::rlimit {
        rlim_cur: NOFILE,
        rlim_max: NOFILE,
    };
    // SAFETY (test code): setrlimit with a valid struct.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) }, 0);
    let dir = tempfile::tempdir().unwrap();
    let started = Service::builder(dir.path())
        .pipe("srvsvc")
        .backend(backend)
        .handshake_timeout(HANDSHAKE_TIMEOUT)
        .start();
    let Some(svc) = child::serve_until_stdin_closes(dir.path(), "srvsvc", started) else {
        return;
    };
    println!("EVICTED {}", svc.stats().evicted);
    svc.shutdown().unwrap();
    svc.join().unwrap();
}

fn honest_client_gets_in_past_slow_handshakes(backend: BackendChoice, name: &str) {
    let Some((mut child, out, path)) = child::spawn(name, CHILD_ENV) else {
        return;
    };

    // Slow clients fill the service's descriptors (and its listen queue
    // behind them), each stuck inside its handshake: 4 bytes of 8.
    let mut slow: Vec<UnixStream> = Vec::new();
    for _ in 0..40 {
        let mut s = connect(&path);
        s.write_all(&[0x45, 0x50, 0x0a, 0x47]).unwrap();
        slow.push(s);
    }
    std::thread::sleep(Duration::from_millis(400));

    // An honest client: in and answered long before any handshake deadline.
    let t0 = Instant::now();
    let mut honest = connect(&path);
    honest
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    honest
        .write_all(&encode_open_message(&named_user("honest", 0)).unwrap())
        .unwrap();
    let mut w = [0u8; 4];
    honest
        .read_exact(&mut w)
        .expect("the honest open was not answered: nobody was evicted");
    assert_eq!(decode_status_word(w), NtStatus::SUCCESS);
    echo_once(&mut honest, b"in");
    let waited = t0.elapsed();
    eprintln!("{backend}: honest open answered in {waited:?}");
    assert!(waited < Duration::from_secs(5), "{waited:?}");

    // The oldest slow client was the one evicted: closed without a status.
    slow[0]
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    assert_eq!(slow[0].read(&mut [0u8; 4]).unwrap(), 0);

    drop(child.0.stdin.take());
    let mut evicted = None;
    for l in out.lines() {
        let l = l.unwrap();
        if let Some((_, n)) = l.split_once("EVICTED ") {
            evicted = n.trim().parse::<u64>().ok();
        }
    }
    let evicted = evicted.expect("the child's count of evictions");
    eprintln!("{backend}: {evicted} evicted");
    assert!((1..=40).contains(&evicted), "{evicted}");
    assert!(child.0.wait().unwrap().success());
}

#[test]
fn uring_honest_client_gets_in_past_slow_handshakes() {
    child::child_or_parent(
        CHILD_ENV,
        "uring_honest_client_gets_in_past_slow_handshakes",
        BackendChoice::IoUring,
        Duration::from_secs(60),
        serve,
        honest_client_gets_in_past_slow_handshakes,
    );
}

#[test]
fn epoll_honest_client_gets_in_past_slow_handshakes() {
    child::child_or_parent(
        CHILD_ENV,
        "epoll_honest_client_gets_in_past_slow_handshakes",
        BackendChoice::Epoll,
        Duration::from_secs(60),
        serve,
        honest_client_gets_in_past_slow_handshakes,
    );
}
