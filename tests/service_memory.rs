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
