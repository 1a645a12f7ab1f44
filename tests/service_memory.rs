//! The service's memory under clients that send requests and never read
//! the replies (issue 12, item 5): bounded by the configured budget, not by
//! the number of clients; paused connections resume and get every byte, in
//! order, once they read.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use opipe::service::{BackendChoice, Service, ServiceError, ServiceHandle};

use common::bounded;
use common::client::*;

/// The tests measure this process's RSS: one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn rss_bytes() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// Byte `j` of the stream client `i` sends.
fn pattern_byte(i: usize, j: usize) -> u8 {
    ((i * 31 + j) % 251) as u8
}

fn start(backend: BackendChoice, dir: &std::path::Path, budget: usize) -> Option<ServiceHandle> {
    match Service::builder(dir)
        .pipe("srvsvc")
        .backend(backend)
        .recv_buffers(64, 16 * 1024)
        .max_buffered_bytes(budget)
        .start()
    {
        Ok(svc) => Some(svc),
        Err(ServiceError::Ring(e)) => {
            eprintln!("SKIPPED: {e}");
            None
        }
        Err(e) => panic!("service start failed: {e}"),
    }
}

const BUDGET: usize = 4 << 20;
const HOGS: usize = 120;

fn budget_bounds_clients_that_never_read(backend: BackendChoice) {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let Some(svc) = start(backend, dir.path(), BUDGET) else {
        return;
    };
    let path = dir.path().join("srvsvc");
    let before = rss_bytes();

    // Every client writes its pattern until the service stops taking it.
    let mut hogs: Vec<(UnixStream, usize)> = (0..HOGS).map(|_| (open_ok(&path), 0)).collect();
    for (s, _) in &hogs {
        s.set_nonblocking(true).unwrap();
    }
    let mut chunk = vec![0u8; 64 * 1024];
    let end = Instant::now() + Duration::from_secs(30);
    let mut quiet = 0;
    while quiet < 3 {
        assert!(Instant::now() < end, "the service never stopped reading");
        let mut moved = 0;
        for (i, (s, written)) in hogs.iter_mut().enumerate() {
            loop {
                for (k, b) in chunk.iter_mut().enumerate() {
                    *b = pattern_byte(i, *written + k);
                }
                match s.write(&chunk) {
                    Ok(n) => {
                        *written += n;
                        moved += n;
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) => panic!("client {i}: {e}"),
                }
            }
        }
        quiet = if moved == 0 { quiet + 1 } else { 0 };
        std::thread::sleep(Duration::from_millis(50));
    }
    let grown = rss_bytes().saturating_sub(before);
    let st = svc.stats();
    let total: usize = hogs.iter().map(|(_, w)| w).sum();
    eprintln!(
        "{backend}: {HOGS} clients wrote {total} bytes; service holds {} (peak {}), \
         {} budget pauses; RSS grew {grown}",
        st.buffered_bytes, st.buffered_bytes_peak, st.budget_pauses
    );
    // The budget held: at most a batch of receives (64 x 16 KiB) over it.
    assert!(st.budget_pauses >= 1, "{st:?}");
    assert!(
        st.buffered_bytes_peak <= (BUDGET + (1 << 20) + (64 << 10)) as u64,
        "{st:?}"
    );
    // And so did the process's memory (before: about 400 KB per client,
    // here 48 MB).
    assert!(
        grown < (BUDGET + (12 << 20)) as u64,
        "RSS grew {grown} bytes with {HOGS} clients that never read"
    );

    // Every client now reads: each gets back exactly what it wrote, in
    // order (the service resumes reading the requests it left unread).
    let readers: Vec<_> = hogs
        .into_iter()
        .enumerate()
        .map(|(i, (mut s, written))| {
            std::thread::spawn(move || {
                s.set_nonblocking(false).unwrap();
                s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
                let mut buf = vec![0u8; 64 * 1024];
                let mut got = 0;
                while got < written {
                    let want = (written - got).min(buf.len());
                    let n = s.read(&mut buf[..want]).unwrap();
                    assert!(n > 0, "client {i}: end of stream at {got} of {written}");
                    for (k, &b) in buf[..n].iter().enumerate() {
                        assert_eq!(b, pattern_byte(i, got + k), "client {i}, byte {}", got + k);
                    }
                    got += n;
                }
                s
            })
        })
        .collect();
    let conns: Vec<UnixStream> = readers.into_iter().map(|t| t.join().unwrap()).collect();
    // Drained: a well-behaved client is served.
    let mut good = open_ok(&path);
    echo_once(&mut good, b"after the storm");
    drop(conns);
    drop(good);
    let end = Instant::now() + IO_TIMEOUT;
    while svc.stats().connections_open > 0 {
        assert!(Instant::now() < end, "{:?}", svc.stats());
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(svc.stats().buffered_bytes, 0, "{:?}", svc.stats());
    svc.shutdown().unwrap();
    svc.join().unwrap();
}

#[test]
fn uring_budget_bounds_clients_that_never_read() {
    bounded(Duration::from_secs(120), || {
        budget_bounds_clients_that_never_read(BackendChoice::IoUring)
    });
}

#[test]
fn epoll_budget_bounds_clients_that_never_read() {
    bounded(Duration::from_secs(120), || {
        budget_bounds_clients_that_never_read(BackendChoice::Epoll)
    });
}

#[test]
fn a_budget_below_the_minimum_is_a_config_error() {
    let dir = tempfile::tempdir().unwrap();
    let e = Service::builder(dir.path())
        .pipe("srvsvc")
        .threads(4)
        .max_buffered_bytes(512 << 10)
        .start()
        .unwrap_err();
    assert!(matches!(e, ServiceError::Config(_)), "{e}");
}
