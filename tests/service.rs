//! The pipe service library over real AF_UNIX sockets, with small blocking
//! clients written here from the protocol encoders.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use opipe::protocol::{
    encode_open_message, NetUserInfo, NtStatus, PipeHeader, PipeName, PIPE_MAGIC,
    USER_FLAG_ANONYMOUS,
};
use opipe::service::{
    Backend, BackendChoice, Handler, HandlerError, Service, ServiceBuilder, ServiceError,
    ServiceHandle, Stats,
};

use common::client::*;

on_both_backends!(
    good_handshake_then_echo,
    bad_magic_closes_without_status,
    uilen_over_8192_closes_without_status,
    undecodable_xdr_closes_without_status,
    truncated_then_closed_is_closed_without_status,
    silence_past_the_deadline_is_closed_without_status,
    open_limit_answers_pipe_not_available,
    deny_anonymous_answers_access_denied,
    policy_closure_decides_per_pipe_and_user,
    echo_of_one_mebibyte_in_pieces_is_intact_and_in_order,
    custom_handler_factory_sees_pipe_and_user,
    two_thousand_concurrent_echo_clients_on_one_thread,
    client_that_never_reads_is_paused_and_does_not_disturb_others,
    stale_socket_is_replaced_live_one_refused_and_removed_on_drop,
    shutdown_closes_open_connections_and_removes_sockets,
    several_threads_share_the_listeners,
    idle_connections_hold_no_receive_buffer,
    receives_starved_of_buffers_are_rearmed,
    sockets_get_their_mode_whatever_the_umask,
    peers_of_other_uids_are_refused_before_the_handshake,
    live_listener_with_a_full_backlog_is_in_use_at_once,
);

/// A service on `backend` in a fresh temporary directory; skips (returns
/// None) loudly when io_uring is asked for and unavailable here.
struct Fixture {
    svc: Option<ServiceHandle>,
    dir: tempfile::TempDir,
}

impl Fixture {
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
    fn svc(&self) -> &ServiceHandle {
        self.svc.as_ref().unwrap()
    }
    fn stats(&self) -> Stats {
        self.svc().stats()
    }
    /// Polls the stats until `ok` holds (the service works asynchronously).
    fn wait_stats(&self, what: &str, ok: impl Fn(&Stats) -> bool) -> Stats {
        let end = Instant::now() + IO_TIMEOUT;
        loop {
            let s = self.stats();
            if ok(&s) {
                return s;
            }
            assert!(Instant::now() < end, "timed out waiting for {what}: {s:#?}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    fn stop(mut self) {
        let svc = self.svc.take().unwrap();
        svc.shutdown().unwrap();
        svc.join().unwrap();
    }
}

fn start(
    backend: BackendChoice,
    configure: impl FnOnce(ServiceBuilder) -> ServiceBuilder,
) -> Option<Fixture> {
    let dir = tempfile::tempdir().unwrap();
    let builder = Service::builder(dir.path()).pipe("srvsvc").backend(backend);
    match configure(builder).start() {
        Ok(svc) => {
            let want = match backend {
                BackendChoice::Epoll => Backend::Epoll,
                _ => Backend::IoUring,
            };
            assert_eq!(svc.backend(), want);
            Some(Fixture {
                svc: Some(svc),
                dir,
            })
        }
        Err(ServiceError::Ring(e)) => {
            eprintln!("SKIPPED: {e}");
            None
        }
        Err(e) => panic!("service start failed: {e}"),
    }
}

/// The service closed with nothing more to say: the next read gives 0 bytes.
fn assert_closed_silently(s: &mut UnixStream) {
    let mut b = [0u8; 16];
    match s.read(&mut b) {
        Ok(0) => {}
        Ok(n) => panic!("expected EOF, got {n} bytes: {:?}", &b[..n]),
        Err(e) => panic!("expected EOF, got {e}"),
    }
}

fn good_handshake_then_echo(backend: BackendChoice) {
    let Some(fx) = start(backend, |b| b) else {
        return;
    };
    let mut s = open_ok(&fx.path("srvsvc"));
    echo_once(&mut s, b"hello, pipe");
    echo_once(&mut s, &[0u8; 1]);
    let st = fx.wait_stats("one open", |s| s.open("srvsvc") == 1);
    assert_eq!(
        (st.accepted, st.handshakes_ok, st.connections_open),
        (1, 1, 1)
    );
    drop(s);
    let st = fx.wait_stats("close", |s| s.connections_open == 0);
    assert_eq!(st.open("srvsvc"), 0);
    assert_eq!(st.bytes_out, 4 + 11 + 1);
    fx.stop();
}

/// Runs one bad handshake, checks the silent close, the counters, and that
/// the next client is served.
fn bad_handshake_case(
    backend: BackendChoice,
    configure: impl FnOnce(ServiceBuilder) -> ServiceBuilder,
    bad: impl FnOnce(&mut UnixStream),
) {
    let Some(fx) = start(backend, configure) else {
        return;
    };
    let path = fx.path("srvsvc");
    let mut s = connect(&path);
    bad(&mut s);
    assert_closed_silently(&mut s);
    let st = fx.wait_stats("silent close", |s| {
        s.handshakes_closed_silently == 1 && s.connections_open == 0
    });
    assert_eq!((st.handshakes_ok, st.handshakes_rejected), (0, 0));
    let mut next = open_ok(&path);
    echo_once(&mut next, b"next");
    fx.stop();
}

fn bad_magic_closes_without_status(backend: BackendChoice) {
    bad_handshake_case(
        backend,
        |b| b,
        |s| {
            // A whole valid open whose only fault is the magic (one bit
            // off): without the magic check it would be accepted. One
            // write: were the body to arrive after the service closed on
            // the header, AF_UNIX would reset the connection (unread data)
            // instead of showing an orderly close.
            let msg = open_message_with_magic(&named_user("mallory", 0), PIPE_MAGIC ^ 0x20);
            s.write_all(&msg).unwrap();
        },
    );
}

fn uilen_over_8192_closes_without_status(backend: BackendChoice) {
    bad_handshake_case(
        backend,
        |b| b,
        |s| {
            let hdr = PipeHeader {
                magic: PIPE_MAGIC,
                uilen: 8193,
            }
            .encode();
            s.write_all(&hdr).unwrap();
        },
    );
}

fn undecodable_xdr_closes_without_status(backend: BackendChoice) {
    bad_handshake_case(
        backend,
        |b| b,
        |s| {
            // A valid message with its flags word cut off, header adjusted.
            let msg = encode_open_message(&named_user("bob", 0)).unwrap();
            let body = &msg[8..msg.len() - 4];
            s.write_all(&PipeHeader::new(body.len() as u32).encode())
                .unwrap();
            s.write_all(body).unwrap();
        },
    );
}

fn truncated_then_closed_is_closed_without_status(backend: BackendChoice) {
    bad_handshake_case(
        backend,
        |b| b,
        |s| {
            let msg = encode_open_message(&named_user("bob", 0)).unwrap();
            s.write_all(&msg[..msg.len() / 2]).unwrap();
            s.shutdown(std::net::Shutdown::Write).unwrap();
        },
    );
}

fn silence_past_the_deadline_is_closed_without_status(backend: BackendChoice) {
    let t0 = Instant::now();
    bad_handshake_case(
        backend,
        |b| b.handshake_timeout(Duration::from_millis(200)),
        |s| s.write_all(&PipeHeader::new(100).encode()[..5]).unwrap(),
    );
    assert!(t0.elapsed() >= Duration::from_millis(200));
}

fn open_limit_answers_pipe_not_available(backend: BackendChoice) {
    let Some(fx) = start(backend, |b| b.max_opens(3)) else {
        return;
    };
    let path = fx.path("srvsvc");
    let mut held: Vec<UnixStream> = (0..3).map(|_| open_ok(&path)).collect();
    let (mut s, st) = open_as(&path, &named_user("alice", 0));
    assert_eq!(st, NtStatus::PIPE_NOT_AVAILABLE);
    assert_closed_silently(&mut s);
    drop(held.pop());
    fx.wait_stats("a slot to free", |s| s.open("srvsvc") == 2);
    let mut again = open_ok(&path);
    echo_once(&mut again, b"in");
    let st = fx.stats();
    assert_eq!((st.handshakes_ok, st.handshakes_rejected), (4, 1));
    fx.stop();
}

fn deny_anonymous_answers_access_denied(backend: BackendChoice) {
    let Some(fx) = start(backend, |b| b.deny_anonymous(true)) else {
        return;
    };
    let path = fx.path("srvsvc");
    let (mut anon, st) = open_as(&path, &named_user("", USER_FLAG_ANONYMOUS));
    assert_eq!(st, NtStatus::ACCESS_DENIED);
    assert_closed_silently(&mut anon);
    let (mut named, st) = open_as(&path, &named_user("alice", 0));
    assert_eq!(st, NtStatus::SUCCESS);
    echo_once(&mut named, b"ok");
    fx.stop();
}

fn policy_closure_decides_per_pipe_and_user(backend: BackendChoice) {
    let Some(fx) = start(backend, |b| {
        b.pipe("lsarpc").policy(|pipe: &PipeName, u: &NetUserInfo| {
            if pipe.as_str() == "lsarpc" && u.account != "admin" {
                NtStatus::ACCESS_DENIED
            } else {
                NtStatus::SUCCESS
            }
        })
    }) else {
        return;
    };
    assert_eq!(
        open_as(&fx.path("lsarpc"), &named_user("bob", 0)).1,
        NtStatus::ACCESS_DENIED
    );
    assert_eq!(
        open_as(&fx.path("lsarpc"), &named_user("admin", 0)).1,
        NtStatus::SUCCESS
    );
    assert_eq!(
        open_as(&fx.path("srvsvc"), &named_user("bob", 0)).1,
        NtStatus::SUCCESS
    );
    fx.stop();
}

fn echo_of_one_mebibyte_in_pieces_is_intact_and_in_order(backend: BackendChoice) {
    // Small receive buffers and a small output limit make the loop go
    // through many buffers, partial sends and backpressure pauses.
    let Some(fx) = start(backend, |b| b.recv_buffers(8, 4096).output_limit(64 * 1024)) else {
        return;
    };
    let mut s = open_ok(&fx.path("srvsvc"));
    let data: Vec<u8> = (0..(1u32 << 20))
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    let mut r = s.try_clone().unwrap();
    let n = data.len();
    let reader = std::thread::spawn(move || {
        let mut got = vec![0u8; n];
        r.read_exact(&mut got).unwrap();
        got
    });
    let mut off = 0;
    let mut piece = 1;
    while off < data.len() {
        let end = (off + piece).min(data.len());
        s.write_all(&data[off..end]).unwrap();
        off = end;
        piece = piece * 3 % 65_521 + 1;
    }
    let got = reader.join().unwrap();
    assert!(got == data, "echo differs");
    fx.stop();
}

/// A handler that answers each 4-byte little-endian number with its square.
struct Square(Vec<u8>);

impl Handler for Square {
    fn on_data(&mut self, data: &[u8], out: &mut Vec<u8>) -> Result<(), HandlerError> {
        self.0.extend_from_slice(data);
        let whole = self.0.len() / 4 * 4;
        for c in self.0[..whole].chunks_exact(4) {
            let v = u32::from_le_bytes(c.try_into().unwrap()) as u64;
            out.extend_from_slice(&(v * v).to_le_bytes());
        }
        self.0.drain(..whole);
        Ok(())
    }
}

fn custom_handler_factory_sees_pipe_and_user(backend: BackendChoice) {
    let seen = Arc::new(AtomicUsize::new(0));
    let seen2 = seen.clone();
    let Some(fx) = start(backend, move |b| {
        b.handler(move |pipe: &PipeName, u: &NetUserInfo| {
            assert_eq!(pipe.as_str(), "srvsvc");
            assert_eq!(u.account, "alice");
            seen2.fetch_add(1, Ordering::SeqCst);
            Square(Vec::new())
        })
    }) else {
        return;
    };
    let mut s = open_ok(&fx.path("srvsvc"));
    s.write_all(&7u32.to_le_bytes()[..3]).unwrap();
    s.write_all(&[0, 3, 0, 0, 0]).unwrap();
    let mut b = [0u8; 16];
    s.read_exact(&mut b).unwrap();
    assert_eq!(u64::from_le_bytes(b[..8].try_into().unwrap()), 49);
    assert_eq!(u64::from_le_bytes(b[8..].try_into().unwrap()), 9);
    assert_eq!(seen.load(Ordering::SeqCst), 1);
    fx.stop();
}

fn two_thousand_concurrent_echo_clients_on_one_thread(backend: BackendChoice) {
    opipe::ring::sys::raise_nofile_limit().unwrap();
    const CLIENTS: usize = 2000;
    const THREADS: usize = 4;
    let Some(fx) = start(backend, |b| b.threads(1)) else {
        return;
    };
    let path = fx.path("srvsvc");
    let barrier = Arc::new(std::sync::Barrier::new(THREADS + 1));
    let done = Arc::new(std::sync::Barrier::new(THREADS + 1));
    let workers: Vec<_> = (0..THREADS)
        .map(|t| {
            let (path, barrier, done) = (path.clone(), barrier.clone(), done.clone());
            std::thread::spawn(move || {
                let mut conns: Vec<UnixStream> =
                    (0..CLIENTS / THREADS).map(|_| open_ok(&path)).collect();
                barrier.wait();
                // Every connection is open now: each sends, then each reads.
                for round in 0..3u32 {
                    for (i, c) in conns.iter_mut().enumerate() {
                        let msg = format!("t{t} c{i} r{round}");
                        c.write_all(msg.as_bytes()).unwrap();
                    }
                    for (i, c) in conns.iter_mut().enumerate() {
                        let msg = format!("t{t} c{i} r{round}");
                        let mut got = vec![0u8; msg.len()];
                        c.read_exact(&mut got).unwrap();
                        assert_eq!(got, msg.as_bytes());
                    }
                }
                done.wait();
                drop(conns);
            })
        })
        .collect();
    barrier.wait();
    let st = fx.wait_stats("all clients open", |s| s.open("srvsvc") == CLIENTS as u64);
    assert_eq!(st.connections_open, CLIENTS as u64);
    done.wait();
    for w in workers {
        w.join().unwrap();
    }
    let st = fx.wait_stats("all closed", |s| s.connections_open == 0);
    assert_eq!(st.handshakes_ok, CLIENTS as u64);
    assert_eq!(st.open("srvsvc"), 0);
    eprintln!("stats after {CLIENTS} clients: {st:?}");
    fx.stop();
}

fn client_that_never_reads_is_paused_and_does_not_disturb_others(backend: BackendChoice) {
    let Some(fx) = start(backend, |b| b.output_limit(64 * 1024)) else {
        return;
    };
    let path = fx.path("srvsvc");
    let hog = open_ok(&path);
    hog.set_write_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    // Write until the socket stops taking data: the service stopped reading.
    let chunk = vec![0x55u8; 64 * 1024];
    let mut written = 0usize;
    let mut w = &hog;
    loop {
        match w.write(&chunk) {
            Ok(n) => written += n,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => break,
            Err(e) => panic!("{e}"),
        }
        assert!(written < 256 << 20, "the service never pushed back");
    }
    let st = fx.wait_stats("a backpressure pause", |s| s.backpressure_pauses >= 1);
    // Bounded: what the service read is at most its output limit plus the
    // socket buffers plus a batch of receive buffers, far from `written`.
    assert!(st.bytes_in < 16 << 20, "{st:?}");
    // A well-behaved client is served meanwhile.
    let mut good = open_ok(&path);
    for i in 0..100u32 {
        echo_once(&mut good, &i.to_le_bytes());
    }
    drop(hog);
    fx.wait_stats("hog gone", |s| s.connections_open == 1);
    echo_once(&mut good, b"still here");
    fx.stop();
}

fn stale_socket_is_replaced_live_one_refused_and_removed_on_drop(backend: BackendChoice) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("srvsvc");
    // A stale socket: bound, then its listener closed.
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    assert!(path.exists());
    let svc = match Service::builder(dir.path())
        .pipe("srvsvc")
        .backend(backend)
        .start()
    {
        Ok(s) => s,
        Err(ServiceError::Ring(e)) => return eprintln!("SKIPPED: {e}"),
        Err(e) => panic!("{e}"),
    };
    let mut s = open_ok(&path);
    echo_once(&mut s, b"x");
    // A second service on the same live socket is refused.
    let e = Service::builder(dir.path())
        .pipe("srvsvc")
        .backend(backend)
        .start()
        .unwrap_err();
    assert!(matches!(e, ServiceError::AddrInUse(_)), "{e}");
    // The refused start did not remove the live socket.
    let mut s2 = open_ok(&path);
    echo_once(&mut s2, b"y");
    drop(svc);
    assert!(!path.exists(), "socket left behind after drop");
    assert_closed_silently(&mut s);
}

fn shutdown_closes_open_connections_and_removes_sockets(backend: BackendChoice) {
    let Some(fx) = start(backend, |b| b.pipe("lsarpc").threads(2)) else {
        return;
    };
    let paths = fx.svc().socket_paths();
    assert_eq!(paths, vec![fx.path("srvsvc"), fx.path("lsarpc")]);
    let mut a = open_ok(&paths[0]);
    let mut b = open_ok(&paths[1]);
    let mut half = connect(&paths[0]);
    half.write_all(&PipeHeader::new(64).encode()).unwrap();
    echo_once(&mut a, b"a");
    echo_once(&mut b, b"b");
    fx.wait_stats("three connections", |s| s.connections_open == 3);
    let svc = fx.svc.as_ref().unwrap();
    svc.shutdown().unwrap();
    assert_closed_silently(&mut a);
    assert_closed_silently(&mut b);
    assert_closed_silently(&mut half);
    let Fixture { svc, dir } = fx;
    svc.unwrap().join().unwrap();
    assert!(!dir.path().join("srvsvc").exists());
    assert!(!dir.path().join("lsarpc").exists());
}

fn several_threads_share_the_listeners(backend: BackendChoice) {
    let Some(fx) = start(backend, |b| b.threads(3)) else {
        return;
    };
    let path = fx.path("srvsvc");
    let clients: Vec<_> = (0..8)
        .map(|t| {
            let path = path.clone();
            std::thread::spawn(move || {
                for i in 0..25u32 {
                    let mut s = open_ok(&path);
                    echo_once(&mut s, format!("{t}/{i}").as_bytes());
                }
            })
        })
        .collect();
    for c in clients {
        c.join().unwrap();
    }
    let st = fx.wait_stats("all closed", |s| s.connections_open == 0);
    assert_eq!(st.handshakes_ok, 200);
    fx.stop();
}

fn idle_connections_hold_no_receive_buffer(backend: BackendChoice) {
    // 1000 open connections, each with a receive armed, and a ring of 4
    // buffers: used one at a time, the ring never runs dry.
    opipe::ring::sys::raise_nofile_limit().unwrap();
    let Some(fx) = start(backend, |b| b.recv_buffers(4, 4096)) else {
        return;
    };
    let path = fx.path("srvsvc");
    let mut conns: Vec<UnixStream> = (0..1000).map(|_| open_ok(&path)).collect();
    for (i, c) in conns.iter_mut().enumerate() {
        echo_once(c, format!("message {i}").as_bytes());
    }
    let st = fx.stats();
    assert_eq!(
        (st.connections_open, st.recv_no_buffers),
        (1000, 0),
        "{st:?}"
    );
    drop(conns);
    fx.wait_stats("all closed", |s| s.connections_open == 0);
    fx.stop();
}

fn receives_starved_of_buffers_are_rearmed(backend: BackendChoice) {
    // Two 64-byte buffers for 100 clients sending 1000 bytes each: the ring
    // runs dry again and again; every byte must still come back.
    let Some(fx) = start(backend, |b| b.recv_buffers(2, 64)) else {
        return;
    };
    let path = fx.path("srvsvc");
    let mut conns: Vec<UnixStream> = (0..100).map(|_| open_ok(&path)).collect();
    let msgs: Vec<Vec<u8>> = (0..100u32)
        .map(|i| (0..1000u32).map(|j| (i * 7 + j) as u8).collect())
        .collect();
    for (c, m) in conns.iter_mut().zip(&msgs) {
        c.write_all(m).unwrap();
    }
    for (c, m) in conns.iter_mut().zip(&msgs) {
        let mut got = vec![0u8; m.len()];
        c.read_exact(&mut got).unwrap();
        assert!(&got == m);
    }
    let st = fx.stats();
    if backend == BackendChoice::IoUring {
        // epoll has no buffer ring to run dry: one scratch buffer per thread.
        assert!(st.recv_no_buffers > 0, "{st:?}");
    }
    drop(conns);
    fx.wait_stats("all closed", |s| s.connections_open == 0);
    fx.stop();
}

mod dcerpc {
    use super::*;
    use opipe::protocol::dcerpc::{
        decode_bind_ack, decode_response, encode_bind, encode_request, pdu_len, DEFAULT_MAX_FRAG,
        NDR_SYNTAX, PFC_FIRST_FRAG, PFC_LAST_FRAG, SRVSVC_SYNTAX,
    };
    use opipe::service::dcerpc::reply_stub_byte;
    use opipe::service::DceRpcFactory;

    on_both_backends!(
        bind_then_request_of_ten_thousand_bytes_in_three_fragments,
        garbage_after_handshake_closes_only_that_client,
        request_burst_is_answered_as_the_client_reads,
        half_closed_client_gets_every_reply_then_eof,
    );

    fn read_pdu(s: &mut UnixStream) -> Vec<u8> {
        let mut pdu = vec![0u8; 16];
        s.read_exact(&mut pdu).unwrap();
        let n = pdu_len(&pdu, DEFAULT_MAX_FRAG).unwrap().unwrap();
        pdu.resize(n, 0);
        s.read_exact(&mut pdu[16..]).unwrap();
        pdu
    }

    fn bind(s: &mut UnixStream, call_id: u32) {
        s.write_all(&encode_bind(
            call_id,
            (SRVSVC_SYNTAX.uuid, SRVSVC_SYNTAX.version),
            (NDR_SYNTAX.uuid, NDR_SYNTAX.version),
        ))
        .unwrap();
        let ack = decode_bind_ack(&read_pdu(s)).unwrap();
        assert_eq!(ack.header.call_id, call_id);
        assert_eq!(ack.sec_addr, "\\PIPE\\srvsvc");
        assert_eq!(ack.results[0].result, 0);
    }

    /// Sends a request and checks the whole fragmented response; returns
    /// the fragment lengths.
    fn call(s: &mut UnixStream, call_id: u32, reply: usize) -> Vec<usize> {
        s.write_all(&encode_request(call_id, 0, 15, b"in", DEFAULT_MAX_FRAG))
            .unwrap();
        let mut stub = Vec::new();
        let mut lens = Vec::new();
        loop {
            let pdu = read_pdu(s);
            let r = decode_response(&pdu).unwrap();
            assert_eq!(r.header.call_id, call_id);
            assert_eq!(r.header.pfc_flags & PFC_FIRST_FRAG != 0, lens.is_empty());
            lens.push(pdu.len());
            stub.extend_from_slice(r.stub);
            if r.header.pfc_flags & PFC_LAST_FRAG != 0 {
                break;
            }
        }
        assert_eq!(stub.len(), reply);
        assert!(stub
            .iter()
            .enumerate()
            .all(|(i, &b)| b == reply_stub_byte(i)));
        lens
    }

    fn bind_then_request_of_ten_thousand_bytes_in_three_fragments(backend: BackendChoice) {
        let Some(fx) = start(backend, |b| b.handler(DceRpcFactory::new(10_000))) else {
            return;
        };
        let mut s = open_ok(&fx.path("srvsvc"));
        bind(&mut s, 1);
        assert_eq!(
            call(&mut s, 2, 10_000),
            [4280, 4280, 10_000 - 2 * 4256 + 24]
        );
        assert_eq!(call(&mut s, 3, 10_000).len(), 3);
        fx.stop();
    }

    fn garbage_after_handshake_closes_only_that_client(backend: BackendChoice) {
        let Some(fx) = start(backend, |b| b.handler(DceRpcFactory::new(100))) else {
            return;
        };
        let path = fx.path("srvsvc");
        let mut good = open_ok(&path);
        bind(&mut good, 1);
        let mut bad = open_ok(&path);
        bad.write_all(&[0xee; 300]).unwrap();
        assert_closed_silently(&mut bad);
        // A PDU claiming to be longer than 4280 bytes, after a good bind.
        let mut liar = open_ok(&path);
        bind(&mut liar, 1);
        let mut req = encode_request(2, 0, 1, b"x", DEFAULT_MAX_FRAG);
        req[8..10].copy_from_slice(&60_000u16.to_le_bytes());
        liar.write_all(&req).unwrap();
        assert_closed_silently(&mut liar);
        for id in 2..50 {
            call(&mut good, id, 100);
        }
        let st = fx.wait_stats("two handler errors", |s| {
            s.handler_errors == 2 && s.connections_open == 1
        });
        assert_eq!(st.open("srvsvc"), 1);
        fx.stop();
    }

    fn rss_bytes() -> u64 {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
        let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
        kib * 1024
    }

    fn request_burst_is_answered_as_the_client_reads(backend: BackendChoice) {
        // 2000 requests of 26 bytes ask for 2000 x 64 KiB = 131 MB of replies.
        const CALLS: u32 = 2000;
        const REPLY: usize = 64 * 1024;
        let Some(fx) = start(backend, |b| b.handler(DceRpcFactory::new(REPLY))) else {
            return;
        };
        let mut s = open_ok(&fx.path("srvsvc"));
        bind(&mut s, 1);
        let mut burst = Vec::new();
        for id in 0..CALLS {
            burst.extend_from_slice(&encode_request(id, 0, 1, b"", DEFAULT_MAX_FRAG));
        }
        let before = rss_bytes();
        s.write_all(&burst).unwrap();
        std::thread::sleep(Duration::from_millis(300));
        let st = fx.stats();
        assert!(
            st.bytes_out < 8 << 20,
            "service did not wait for the reader: {st:?}"
        );
        let grown = rss_bytes().saturating_sub(before);
        assert!(grown < 48 << 20, "service memory grew by {grown} bytes");
        for id in 0..CALLS {
            let lens = call_reply_only(&mut s, id, REPLY);
            assert_eq!(lens, 16);
        }
        fx.stop();
    }

    fn half_closed_client_gets_every_reply_then_eof(backend: BackendChoice) {
        let Some(fx) = start(backend, |b| b.handler(DceRpcFactory::new(30_000))) else {
            return;
        };
        let mut s = open_ok(&fx.path("srvsvc"));
        let mut burst = Vec::new();
        for id in 0..200 {
            burst.extend_from_slice(&encode_request(id, 0, 1, b"", DEFAULT_MAX_FRAG));
        }
        s.write_all(&burst).unwrap();
        s.shutdown(std::net::Shutdown::Write).unwrap();
        for id in 0..200 {
            assert_eq!(call_reply_only(&mut s, id, 30_000), 8);
        }
        assert_closed_silently(&mut s);
        fx.wait_stats("closed", |s| s.connections_open == 0);
        fx.stop();
    }

    /// Reads the response to a request already sent; returns its fragment count.
    fn call_reply_only(s: &mut UnixStream, call_id: u32, reply: usize) -> usize {
        let mut n = 0;
        let mut len = 0;
        loop {
            let pdu = read_pdu(s);
            let r = decode_response(&pdu).unwrap();
            assert_eq!(r.header.call_id, call_id);
            n += 1;
            len += r.stub.len();
            if r.header.pfc_flags & PFC_LAST_FRAG != 0 {
                break;
            }
        }
        assert_eq!(len, reply);
        n
    }
}

fn socket_mode(path: &std::path::Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::symlink_metadata(path)
        .unwrap()
        .permissions()
        .mode()
        & 0o7777
}

fn sockets_get_their_mode_whatever_the_umask(backend: BackendChoice) {
    // The test process's umask (often 022) would leave 0755 on a plain
    // bind; the mode is set exactly, never from the umask.
    let Some(fx) = start(backend, |b| b.pipe("lsarpc")) else {
        return;
    };
    assert_eq!(socket_mode(&fx.path("srvsvc")), 0o600);
    assert_eq!(socket_mode(&fx.path("lsarpc")), 0o600);
    // Nothing is left of the private directories the sockets were bound in.
    let names: Vec<String> = std::fs::read_dir(fx.dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
    echo_once(&mut open_ok(&fx.path("lsarpc")), b"still served");
    fx.stop();
    let Some(fx) = start(backend, |b| b.socket_mode(0o660)) else {
        return;
    };
    assert_eq!(socket_mode(&fx.path("srvsvc")), 0o660);
    fx.stop();
    let dir = tempfile::tempdir().unwrap();
    let e = Service::builder(dir.path())
        .pipe("x")
        .backend(backend)
        .socket_mode(0o4700)
        .start()
        .unwrap_err();
    assert!(matches!(e, ServiceError::Config(_)), "{e}");
}

fn peers_of_other_uids_are_refused_before_the_handshake(backend: BackendChoice) {
    use common::peer::*;
    if !can_switch_uid() {
        eprintln!("SKIPPED: peers_of_other_uids_are_refused_before_the_handshake needs root (to run a client as uid {NOBODY})");
        return;
    }
    let msg = encode_open_message(&named_user("nobody", 0)).unwrap();
    // A socket everybody may reach (mode 0666 in a 0755 directory): only
    // the peer check stands between `nobody` and an open.
    let Some(fx) = start(backend, |b| b.socket_mode(0o666)) else {
        return;
    };
    open_dir_to_all(fx.dir.path());
    let path = fx.path("srvsvc");
    assert_eq!(
        open_as_uid(&path, NOBODY, &msg),
        PeerOutcome::ClosedWithoutStatus
    );
    let st = fx.wait_stats("the refused peer", |s| s.peers_refused == 1);
    assert_eq!(
        (
            st.accepted,
            st.refused,
            st.handshakes_closed_silently,
            st.handshakes_ok
        ),
        (1, 1, 0, 0),
        "refused on accept, before any handshake: {st:#?}"
    );
    // The service's own uid is admitted.
    echo_once(&mut open_ok(&path), b"own uid");
    fx.stop();

    // --allow-uid admits it.
    let Some(fx) = start(backend, |b| b.socket_mode(0o666).allow_uid(NOBODY)) else {
        return;
    };
    open_dir_to_all(fx.dir.path());
    assert_eq!(
        open_as_uid(&fx.path("srvsvc"), NOBODY, &msg),
        PeerOutcome::Status(0)
    );
    let st = fx.wait_stats("the admitted peer", |s| s.handshakes_ok == 1);
    assert_eq!(st.peers_refused, 0);
    fx.stop();

    // With the default mode, `nobody` cannot even connect.
    let Some(fx) = start(backend, |b| b.allow_uid(NOBODY)) else {
        return;
    };
    open_dir_to_all(fx.dir.path());
    assert_eq!(
        open_as_uid(&fx.path("srvsvc"), NOBODY, &msg),
        PeerOutcome::ConnectDenied
    );
    fx.stop();
}

fn live_listener_with_a_full_backlog_is_in_use_at_once(backend: BackendChoice) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("srvsvc");
    let _full = common::full_backlog(&path);
    let p = path.clone();
    let r = common::bounded(Duration::from_secs(5), move || {
        let dir = p.parent().unwrap().to_owned();
        let t0 = Instant::now();
        let r = Service::builder(dir)
            .pipe("srvsvc")
            .backend(backend)
            .start();
        (r.map(|_| ()), t0.elapsed())
    });
    match r {
        (Err(ServiceError::AddrInUse(p)), took) => {
            assert_eq!(p, path);
            assert!(took < Duration::from_secs(1), "{took:?}");
        }
        (Err(ServiceError::Ring(e)), _) => eprintln!("SKIPPED: {e}"),
        (other, _) => panic!("expected AddrInUse, got {other:?}"),
    }
    // The live listener's socket is left alone.
    assert!(path.exists());
}
