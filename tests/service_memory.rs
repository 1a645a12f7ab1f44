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

fn start(
    backend: BackendChoice,
    dir: &std::path::Path,
    budget: usize,
    ring_bufs: u16,
) -> Option<ServiceHandle> {
    match Service::builder(dir)
        .pipe("srvsvc")
        .backend(backend)
        .recv_buffers(ring_bufs, 16 * 1024)
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

/// `hogs` clients write until the service stops reading them; the service
/// holds at most `budget` plus a receive batch (`ring_bufs` x 16 KiB); then
/// every client reads back what it wrote, whole and in order.
fn budget_bounds_clients_that_never_read(
    backend: BackendChoice,
    budget: usize,
    ring_bufs: u16,
    hogs: usize,
) {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let Some(svc) = start(backend, dir.path(), budget, ring_bufs) else {
        return;
    };
    let path = dir.path().join("srvsvc");
    let before = rss_bytes();

    // Every client writes its pattern until the service stops taking it.
    let n_hogs = hogs;
    let mut hogs: Vec<(UnixStream, usize)> = (0..n_hogs).map(|_| (open_ok(&path), 0)).collect();
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
        "{backend}: {n_hogs} clients wrote {total} bytes; service holds {} (peak {}), \
         {} budget pauses; RSS grew {grown}",
        st.buffered_bytes, st.buffered_bytes_peak, st.budget_pauses
    );
    // The budget held: over it, at most the output of one batch of
    // receives plus the input stashed from the next (io_uring).
    let batch = usize::from(ring_bufs) * (16 << 10);
    assert!(st.budget_pauses >= 1, "{st:?}");
    assert!(
        st.buffered_bytes_peak <= (budget + 2 * batch + (64 << 10)) as u64,
        "{st:?}"
    );
    // And so did the process's memory (before: about 400 KB per client,
    // 48 MB for 120).
    assert!(
        grown < (budget + 2 * batch + (12 << 20)) as u64,
        "RSS grew {grown} bytes with {n_hogs} clients that never read"
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
        budget_bounds_clients_that_never_read(BackendChoice::IoUring, BUDGET, 64, HOGS)
    });
}

#[test]
fn epoll_budget_bounds_clients_that_never_read() {
    bounded(Duration::from_secs(120), || {
        budget_bounds_clients_that_never_read(BackendChoice::Epoll, BUDGET, 64, HOGS)
    });
}

/// The smallest budget (256 KiB) under the default receive ring (512 x 16
/// KiB, 8 MiB): input held back while paused can outweigh the budget, and
/// must not keep the service paused once every reply was read.
#[test]
fn uring_budget_smaller_than_the_receive_ring_does_not_stall() {
    bounded(Duration::from_secs(120), || {
        budget_bounds_clients_that_never_read(BackendChoice::IoUring, 256 << 10, 512, 60)
    });
}

#[test]
fn epoll_budget_smaller_than_the_receive_ring_does_not_stall() {
    bounded(Duration::from_secs(120), || {
        budget_bounds_clients_that_never_read(BackendChoice::Epoll, 256 << 10, 512, 60)
    });
}

/// DCE/RPC clients that each ask for several 64 KiB responses at once and
/// read nothing: the handler's output, many times the input, stays within
/// the budget plus a receive batch; then every client reads its responses
/// whole and in order.
fn dcerpc_budget_bounds_clients_that_never_read(backend: BackendChoice) {
    use opipe::protocol::dcerpc::{
        decode_response, encode_bind, encode_request, pdu_len, DEFAULT_MAX_FRAG, NDR_SYNTAX,
        PFC_LAST_FRAG, SRVSVC_SYNTAX,
    };
    use opipe::service::dcerpc::reply_stub_byte;
    use opipe::service::DceRpcFactory;
    const CLIENTS: usize = 200;
    const CALLS: u32 = 4;
    const REPLY: usize = 64 << 10;
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let svc = match Service::builder(dir.path())
        .pipe("srvsvc")
        .backend(backend)
        .recv_buffers(64, 16 * 1024)
        .max_buffered_bytes(BUDGET)
        .handler(DceRpcFactory::new(REPLY))
        .start()
    {
        Ok(svc) => svc,
        Err(ServiceError::Ring(e)) => return eprintln!("SKIPPED: {e}"),
        Err(e) => panic!("service start failed: {e}"),
    };
    let path = dir.path().join("srvsvc");
    let mut burst = encode_bind(
        1,
        (SRVSVC_SYNTAX.uuid, SRVSVC_SYNTAX.version),
        (NDR_SYNTAX.uuid, NDR_SYNTAX.version),
    );
    for id in 0..CALLS {
        burst.extend_from_slice(&encode_request(100 + id, 0, 15, b"args", DEFAULT_MAX_FRAG));
    }
    let mut clients: Vec<UnixStream> = (0..CLIENTS).map(|_| open_ok(&path)).collect();
    // All at once, so that many completions come in one batch.
    for c in &mut clients {
        c.write_all(&burst).unwrap();
    }
    // Settled: nothing more moves.
    let mut last = svc.stats();
    loop {
        std::thread::sleep(Duration::from_millis(200));
        let st = svc.stats();
        if st.bytes_out == last.bytes_out && st.bytes_in == last.bytes_in {
            break;
        }
        last = st;
    }
    let st = svc.stats();
    eprintln!(
        "{backend} dcerpc: {CLIENTS} clients; service holds {} (peak {}), {} budget pauses",
        st.buffered_bytes, st.buffered_bytes_peak, st.budget_pauses
    );
    assert!(st.budget_pauses >= 1, "{st:?}");
    assert!(
        st.buffered_bytes_peak <= (BUDGET + (1 << 20) + (64 << 10)) as u64,
        "{st:?}"
    );
    let readers: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(i, mut s)| {
            std::thread::spawn(move || {
                let mut buf = Vec::new();
                let mut chunk = vec![0u8; 64 * 1024];
                let mut calls = 0;
                let mut stub = Vec::new();
                let mut acked = false;
                while calls < CALLS {
                    let n = s.read(&mut chunk).unwrap();
                    assert!(n > 0, "client {i}: end of stream after {calls} calls");
                    buf.extend_from_slice(&chunk[..n]);
                    // (pdu_len gives the length once the header is in.)
                    while let Some(len) = pdu_len(&buf, DEFAULT_MAX_FRAG).unwrap() {
                        if buf.len() < len {
                            break;
                        }
                        let pdu: Vec<u8> = buf.drain(..len).collect();
                        if !acked {
                            acked = true; // the bind_ack
                            continue;
                        }
                        let r = decode_response(&pdu).unwrap();
                        assert_eq!(r.header.call_id, 100 + calls, "client {i}");
                        stub.extend_from_slice(r.stub);
                        if r.header.pfc_flags & PFC_LAST_FRAG != 0 {
                            assert_eq!(stub.len(), REPLY, "client {i}");
                            assert!(stub
                                .iter()
                                .enumerate()
                                .all(|(k, &b)| b == reply_stub_byte(k)));
                            stub.clear();
                            calls += 1;
                        }
                    }
                }
                assert!(buf.is_empty(), "client {i}: bytes after the last response");
            })
        })
        .collect();
    for r in readers {
        r.join().unwrap();
    }
    svc.shutdown().unwrap();
    svc.join().unwrap();
}

#[test]
fn uring_dcerpc_budget_bounds_clients_that_never_read() {
    bounded(Duration::from_secs(120), || {
        dcerpc_budget_bounds_clients_that_never_read(BackendChoice::IoUring)
    });
}

#[test]
fn epoll_dcerpc_budget_bounds_clients_that_never_read() {
    bounded(Duration::from_secs(120), || {
        dcerpc_budget_bounds_clients_that_never_read(BackendChoice::Epoll)
    });
}

const RELEASE_CHILD_ENV: &str = "OPIPE_MEMORY_RELEASE_CHILD";

/// The child of [`memory_goes_back_after_the_clients_close`]: a service with
/// default limits until stdin closes; prints `READY <socket>` or `SKIPPED`.
fn release_child(backend: BackendChoice) {
    opipe::ring::sys::raise_nofile_limit().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let started = Service::builder(dir.path())
        .pipe("srvsvc")
        .backend(backend)
        .start();
    let Some(svc) = common::child::serve_until_stdin_closes(dir.path(), "srvsvc", started) else {
        return;
    };
    svc.shutdown().unwrap();
    svc.join().unwrap();
}

fn child_rss(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// 400 clients fill the service (default budget) and never read, then
/// close: the service's RSS comes back within twice its idle size (before:
/// the thread's heap kept what the connections had freed).
fn memory_goes_back_after_the_clients_close(backend: BackendChoice, name: &str) {
    const CLIENTS: usize = 400;
    // Its 400 clients would disturb the in-process RSS measurements.
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let Some((mut child, _out, path)) = common::child::spawn(name, RELEASE_CHILD_ENV) else {
        return;
    };
    let pid = child.0.id();
    opipe::ring::sys::raise_nofile_limit().unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let idle = child_rss(pid);
    let mut hogs: Vec<UnixStream> = (0..CLIENTS).map(|_| open_ok(&path)).collect();
    for s in &hogs {
        s.set_nonblocking(true).unwrap();
    }
    let chunk = vec![0x5au8; 64 * 1024];
    let mut quiet = 0;
    let end = Instant::now() + Duration::from_secs(60);
    let mut peak = 0;
    while quiet < 3 && Instant::now() < end {
        let mut moved = 0;
        for s in &mut hogs {
            while let Ok(n) = s.write(&chunk) {
                moved += n;
            }
        }
        peak = peak.max(child_rss(pid));
        quiet = if moved == 0 { quiet + 1 } else { 0 };
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(hogs);
    // Give the service a moment to see every close.
    let end = Instant::now() + Duration::from_secs(10);
    let mut after = child_rss(pid);
    while after > 2 * idle && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(100));
        after = child_rss(pid);
    }
    eprintln!("{backend}: service RSS idle {idle}, peak {peak}, after close {after}");
    assert!(
        peak > idle + (16 << 20),
        "the clients did not load the service"
    );
    assert!(
        after <= 2 * idle,
        "RSS {after} after the clients closed, idle {idle}"
    );
    drop(child.0.stdin.take());
    assert!(child.0.wait().unwrap().success());
}

#[test]
fn uring_memory_goes_back_after_the_clients_close() {
    common::child::child_or_parent(
        RELEASE_CHILD_ENV,
        "uring_memory_goes_back_after_the_clients_close",
        BackendChoice::IoUring,
        Duration::from_secs(120),
        release_child,
        memory_goes_back_after_the_clients_close,
    );
}

#[test]
fn epoll_memory_goes_back_after_the_clients_close() {
    common::child::child_or_parent(
        RELEASE_CHILD_ENV,
        "epoll_memory_goes_back_after_the_clients_close",
        BackendChoice::Epoll,
        Duration::from_secs(120),
        release_child,
        memory_goes_back_after_the_clients_close,
    );
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
