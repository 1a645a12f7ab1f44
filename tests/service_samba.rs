//! The pipe service in Samba's dialect over real AF_UNIX sockets, on both
//! backends: a client playing smbd (the NPA handshake with
//! `protocol::npa`'s encoder, then `u16`-framed messages).

mod common;

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use opipe::protocol::dcerpc::{
    decode_bind_ack, decode_response, encode_bind, encode_request, CommonHeader, NDR_SYNTAX,
    PTYPE_RESPONSE, SRVSVC_SYNTAX,
};
use opipe::protocol::{
    frame_message, Dialect, FramedReader, IdentityKind, NpaIdentity, NpaLevel, NpaReply, NtStatus,
    PipeName, USER_FLAG_ANONYMOUS,
};
use opipe::service::{
    BackendChoice, Caller, DceRpcFactory, Echo, Handler, HandlerFactory, Service, ServiceBuilder,
    ServiceHandle, Stats, MAX_NPA_REQUEST_BYTES,
};

use common::client::{connect, IO_TIMEOUT};

on_both_backends!(
    anonymous_open_then_framed_echo_keeps_message_boundaries,
    user_identity_reaches_the_handler_factory,
    dcerpc_bind_and_request_one_pdu_per_message,
    bad_npa_input_is_closed_without_a_reply,
    deny_anonymous_answers_access_denied_in_the_reply,
    a_large_reply_written_in_batches_stays_one_pdu_per_message,
    refused_identities_get_samba_statuses_and_silence_times_out,
);

fn samba(backend: BackendChoice, dir: &Path) -> ServiceBuilder {
    Service::builder(dir)
        .dialect(Dialect::Samba)
        .backend(backend)
        .pipe("SrvSvc")
        .handshake_timeout(Duration::from_secs(10))
}

fn sock(dir: &Path) -> PathBuf {
    dir.join("np").join("srvsvc")
}

/// Connects and sends `id`'s request at `level`; returns the stream and
/// the decoded reply.
fn npa_open(path: &Path, id: &NpaIdentity, level: NpaLevel) -> (UnixStream, NpaReply) {
    let mut s = connect(path);
    s.write_all(&id.to_request(level).encode().unwrap())
        .unwrap();
    let mut reply = [0u8; opipe::protocol::npa::NPA_REPLY_LEN];
    s.read_exact(&mut reply).unwrap();
    (s, NpaReply::decode(&reply).unwrap())
}

fn read_msg(s: &mut UnixStream) -> Vec<u8> {
    let mut r = FramedReader::new(&mut *s);
    r.read_message().unwrap().expect("a message, not the end")
}

/// Waits (bounded) until `f(stats)` holds.
fn stats_until(svc: &ServiceHandle, what: &str, f: impl Fn(&Stats) -> bool) -> Stats {
    let until = Instant::now() + IO_TIMEOUT;
    loop {
        let st = svc.stats();
        if f(&st) {
            return st;
        }
        assert!(Instant::now() < until, "{what}: {st:?}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A factory that records every caller and echoes.
#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<Vec<Caller>>>);

impl HandlerFactory for Recorder {
    fn open(&self, _: &PipeName, _: &opipe::protocol::NetUserInfo) -> Box<dyn Handler> {
        unreachable!("the service calls open_caller")
    }

    fn open_caller(&self, _: &PipeName, caller: &Caller) -> Box<dyn Handler> {
        self.0.lock().unwrap().push(caller.clone());
        Box::new(Echo)
    }
}

/// A Samba-dialect service in `dir` whose callers `Recorder` keeps.
fn recording(backend: BackendChoice, dir: &Path) -> (Recorder, ServiceHandle) {
    let rec = Recorder::default();
    let svc = samba(backend, dir).handler(rec.clone()).start().unwrap();
    (rec, svc)
}

fn anonymous_open_then_framed_echo_keeps_message_boundaries(backend: BackendChoice) {
    let dir = tempfile::tempdir().unwrap();
    let (rec, svc) = recording(backend, dir.path());
    assert_eq!(svc.socket_paths(), vec![sock(dir.path())]);
    let np = std::fs::metadata(dir.path().join("np")).unwrap();
    assert_eq!(np.permissions().mode() & 0o777, 0o700);
    for level in [NpaLevel::V7, NpaLevel::V8] {
        let (mut s, reply) = npa_open(&sock(dir.path()), &NpaIdentity::anonymous(), level);
        assert_eq!(reply, NpaReply::success(level));
        assert_eq!(
            (reply.file_type, reply.device_state, reply.allocation_size),
            (2, 0x05ff, 4096)
        );
        // Three messages in one write (one of them empty, which has no
        // answer), and one cut across two writes: each answered as one
        // message, in order.
        let mut burst = frame_message(b"first").unwrap();
        burst.extend(frame_message(b"").unwrap());
        burst.extend(frame_message(&[7u8; 3000]).unwrap());
        let big = common::pattern(60_000);
        let framed_big = frame_message(&big).unwrap();
        burst.extend_from_slice(&framed_big[..100]);
        s.write_all(&burst).unwrap();
        assert_eq!(read_msg(&mut s), b"first");
        assert_eq!(read_msg(&mut s), vec![7u8; 3000]);
        s.write_all(&framed_big[100..]).unwrap();
        assert_eq!(read_msg(&mut s), big);
    }
    let callers = rec.0.lock().unwrap().clone();
    assert_eq!(callers.len(), 2);
    for c in &callers {
        assert_eq!(c.dialect, Dialect::Samba);
        assert!(c.is_anonymous());
        assert_eq!(c.user.flags, USER_FLAG_ANONYMOUS);
        assert_eq!(c.npa.as_ref().unwrap().kind, IdentityKind::Anonymous);
        assert_eq!(c.user.account, "ANONYMOUS LOGON");
    }
    let st = svc.stats();
    assert_eq!((st.handshakes_ok, st.handshakes_closed_silently), (2, 0));
}

fn user_identity_reaches_the_handler_factory(backend: BackendChoice) {
    let dir = tempfile::tempdir().unwrap();
    let (rec, svc) = recording(backend, dir.path());
    let mut id = NpaIdentity::user(
        "alice",
        "TESTDOM",
        "S-1-5-21-1-2-3-1000".parse().unwrap(),
        &["S-1-5-21-1-2-3-513".parse().unwrap()],
        1000,
        100,
        &[100, 27],
    );
    id.client_addr = "192.0.2.7:50123".parse().unwrap();
    id.client_name = "PC7".into();
    let (mut s, reply) = npa_open(&sock(dir.path()), &id, NpaLevel::V8);
    assert_eq!(reply.status, NtStatus::SUCCESS);
    s.write_all(&frame_message(b"x").unwrap()).unwrap();
    assert_eq!(read_msg(&mut s), b"x");
    let c = rec.0.lock().unwrap()[0].clone();
    let got = c.npa.clone().unwrap();
    assert_eq!(got.kind, IdentityKind::User);
    assert_eq!(
        (got.uid, got.gid, got.groups.clone()),
        (1000, 100, vec![100, 27])
    );
    assert_eq!(got.sids, id.sids);
    assert_eq!(got.client_addr, id.client_addr);
    assert_eq!(
        (
            c.user.account.as_str(),
            c.user.domain.as_str(),
            c.user.posix_uid,
            c.user.flags
        ),
        ("alice", "TESTDOM", 1000, 0)
    );
    assert_eq!(c.user.workstation, "PC7");
    drop(svc);
}

fn dcerpc_bind_and_request_one_pdu_per_message(backend: BackendChoice) {
    let dir = tempfile::tempdir().unwrap();
    let svc = samba(backend, dir.path())
        .handler(DceRpcFactory::new(10_000).log_calls(true))
        .start()
        .unwrap();
    let (mut s, reply) = npa_open(&sock(dir.path()), &NpaIdentity::anonymous(), NpaLevel::V7);
    assert_eq!(reply.status, NtStatus::SUCCESS);
    let bind = encode_bind(1, SRVSVC_SYNTAX.into(), NDR_SYNTAX.into());
    s.write_all(&frame_message(&bind).unwrap()).unwrap();
    let ack = read_msg(&mut s);
    let ack = decode_bind_ack(&ack).unwrap();
    assert_eq!(ack.sec_addr, "\\PIPE\\srvsvc");
    // Two requests in one write: their 10 000-byte replies are 3
    // fragments each, and every fragment comes as its own message.
    let mut two = Vec::new();
    for call in [2u32, 3] {
        two.extend(frame_message(&encode_request(call, 0, 21, b"stub", 4280)).unwrap());
    }
    s.write_all(&two).unwrap();
    for call in [2u32, 3] {
        let mut stub = Vec::new();
        for i in 0..3 {
            let msg = read_msg(&mut s);
            let h = CommonHeader::decode(&msg).unwrap();
            assert_eq!(usize::from(h.frag_length), msg.len(), "one PDU per message");
            assert_eq!((h.ptype, h.call_id), (PTYPE_RESPONSE, call));
            let r = decode_response(&msg).unwrap();
            assert_eq!(r.header.pfc_flags & 1 != 0, i == 0, "first flag");
            assert_eq!(r.header.pfc_flags & 2 != 0, i == 2, "last flag");
            stub.extend_from_slice(r.stub);
        }
        let want: Vec<u8> = (0..10_000)
            .map(opipe::service::dcerpc::reply_stub_byte)
            .collect();
        assert_eq!(stub, want);
    }
    assert_eq!(svc.stats().handler_errors, 0);
}

/// Sends `bytes` (then, with `close`, shuts the write side) and expects
/// the connection to end without a single byte back.
fn expect_silent_close(path: &Path, bytes: &[u8], close: bool, what: &str) {
    let mut s = connect(path);
    s.write_all(bytes).unwrap();
    if close {
        s.shutdown(std::net::Shutdown::Write).unwrap();
    }
    let mut got = Vec::new();
    match s.read_to_end(&mut got) {
        Ok(_) => assert!(got.is_empty(), "{what}: got {got:?}"),
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{what}"),
    }
}

fn bad_npa_input_is_closed_without_a_reply(backend: BackendChoice) {
    let dir = tempfile::tempdir().unwrap();
    let svc = samba(backend, dir.path()).start().unwrap();
    let path = sock(dir.path());
    let good = NpaIdentity::anonymous()
        .to_request(NpaLevel::V7)
        .encode()
        .unwrap();
    let mut cases: Vec<(&str, Vec<u8>, bool)> = Vec::new();
    let mut m = good.clone();
    m[4..8].copy_from_slice(b"NPAX");
    cases.push(("bad magic", m, false));
    let mut m = good.clone();
    m[8] = 5;
    m[12] = 5;
    cases.push(("level 5", m, false));
    let mut m = good.clone();
    m[12] = 8;
    cases.push(("levels differ", m, false));
    cases.push(("truncated", good[..good.len() - 3].to_vec(), true));
    let mut m = good.clone();
    m.extend_from_slice(&[0; 8]);
    let len = (m.len() - 4) as u32;
    m[..4].copy_from_slice(&len.to_be_bytes());
    cases.push(("trailing bytes", m, false));
    cases.push((
        "oversize length",
        ((MAX_NPA_REQUEST_BYTES - 3) as u32).to_be_bytes().to_vec(),
        false,
    ));
    cases.push(("length too short", 4u32.to_be_bytes().to_vec(), false));
    // An illumos open on a Samba pipe.
    cases.push((
        "illumos open",
        opipe::protocol::encode_open_message(&common::client::named_user("bob", 0)).unwrap(),
        false,
    ));
    for (what, bytes, close) in &cases {
        expect_silent_close(&path, bytes, *close, what);
    }
    let n = cases.len() as u64;
    let st = stats_until(&svc, "every bad input counted", |st| {
        st.handshakes_closed_silently == n && st.connections_open == 0
    });
    assert_eq!((st.handshakes_ok, st.handshakes_rejected), (0, 0));
    // The service still answers a good open.
    let (_s, reply) = npa_open(&path, &NpaIdentity::anonymous(), NpaLevel::V7);
    assert_eq!(reply.status, NtStatus::SUCCESS);
}

fn deny_anonymous_answers_access_denied_in_the_reply(backend: BackendChoice) {
    let dir = tempfile::tempdir().unwrap();
    let svc = samba(backend, dir.path())
        .deny_anonymous(true)
        .max_opens(1)
        .start()
        .unwrap();
    let path = sock(dir.path());
    let (mut s, reply) = npa_open(&path, &NpaIdentity::anonymous(), NpaLevel::V8);
    assert_eq!(
        reply,
        NpaReply::error(NpaLevel::V8, NtStatus::ACCESS_DENIED)
    );
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest);
    assert!(rest.is_empty(), "closed after the refusal");
    let guest = NpaIdentity::guest("WG", &"S-1-5-21-9-9-9".parse().unwrap());
    let (_held, reply) = npa_open(&path, &guest, NpaLevel::V7);
    assert_eq!(reply.status, NtStatus::SUCCESS);
    // Over the open limit.
    let (_s, reply) = npa_open(&path, &guest, NpaLevel::V7);
    assert_eq!(reply.status, NtStatus::PIPE_NOT_AVAILABLE);
    // The SYSTEM token is refused as Samba refuses it.
    let mut system = NpaIdentity::anonymous();
    system.sids = vec!["S-1-5-18".parse().unwrap()];
    let (_s, reply) = npa_open(&path, &system, NpaLevel::V7);
    assert_eq!(reply.status, NtStatus::ACCESS_DENIED);
    let st = svc.stats();
    assert_eq!((st.handshakes_ok, st.handshakes_rejected), (1, 3));
}

#[test]
fn illumos_stays_the_default_and_its_path() {
    let dir = tempfile::tempdir().unwrap();
    let svc = Service::builder(dir.path()).pipe("srvsvc").start().unwrap();
    assert_eq!(svc.dialect(), Dialect::Illumos);
    assert_eq!(svc.socket_paths(), vec![dir.path().join("srvsvc")]);
    assert!(!dir.path().join("np").exists());
}

/// A 2 MiB reply is produced in batches as the client reads (the
/// handler's backlog and resume path): every fragment still comes as one
/// whole message, and a request sent meanwhile is answered after it.
fn a_large_reply_written_in_batches_stays_one_pdu_per_message(backend: BackendChoice) {
    let dir = tempfile::tempdir().unwrap();
    let reply = 2 << 20;
    let svc = samba(backend, dir.path())
        .handler(DceRpcFactory::new(reply))
        .start()
        .unwrap();
    let (mut s, r) = npa_open(&sock(dir.path()), &NpaIdentity::anonymous(), NpaLevel::V7);
    assert_eq!(r.status, NtStatus::SUCCESS);
    let mut burst =
        frame_message(&encode_bind(1, SRVSVC_SYNTAX.into(), NDR_SYNTAX.into())).unwrap();
    for call in [2u32, 3] {
        burst.extend(frame_message(&encode_request(call, 0, 21, b"x", 4280)).unwrap());
    }
    s.write_all(&burst).unwrap();
    decode_bind_ack(&read_msg(&mut s)).unwrap();
    for call in [2u32, 3] {
        let mut got = 0;
        loop {
            let msg = read_msg(&mut s);
            let h = CommonHeader::decode(&msg).unwrap();
            assert_eq!(usize::from(h.frag_length), msg.len(), "one PDU per message");
            assert_eq!(h.call_id, call);
            let r = decode_response(&msg).unwrap();
            for (i, b) in r.stub.iter().enumerate() {
                assert_eq!(*b, opipe::service::dcerpc::reply_stub_byte(got + i));
            }
            got += r.stub.len();
            if r.header.pfc_flags & 2 != 0 {
                break;
            }
        }
        assert_eq!(got, reply);
    }
    assert_eq!(svc.stats().handler_errors, 0);
}

/// A request that decodes but carries an identity Samba refuses is
/// answered with Samba's status; a client silent inside the handshake is
/// closed at the deadline with no reply.
fn refused_identities_get_samba_statuses_and_silence_times_out(backend: BackendChoice) {
    let dir = tempfile::tempdir().unwrap();
    let svc = samba(backend, dir.path())
        .handshake_timeout(Duration::from_millis(300))
        .start()
        .unwrap();
    let path = sock(dir.path());
    let send = |req: opipe::protocol::NpaRequest| {
        let mut s = connect(&path);
        s.write_all(&req.encode().unwrap()).unwrap();
        let mut reply = [0u8; opipe::protocol::npa::NPA_REPLY_LEN];
        s.read_exact(&mut reply).unwrap();
        NpaReply::decode(&reply).unwrap()
    };
    let mut req = NpaIdentity::anonymous().to_request(NpaLevel::V7);
    req.remote_client_addr = Some("not-an-address".into());
    assert_eq!(
        send(req).status,
        opipe::protocol::npa::STATUS_INVALID_ADDRESS
    );
    let mut req = NpaIdentity::anonymous().to_request(NpaLevel::V8);
    req.session_info = None;
    assert_eq!(
        send(req),
        NpaReply::error(NpaLevel::V8, NtStatus::ACCESS_DENIED)
    );
    // Half a length prefix, then nothing.
    let started = Instant::now();
    let mut s = connect(&path);
    s.write_all(&[0, 0]).unwrap();
    let mut got = Vec::new();
    let _ = s.read_to_end(&mut got);
    assert!(got.is_empty(), "{got:?}");
    assert!(
        started.elapsed() >= Duration::from_millis(250),
        "{:?}",
        started.elapsed()
    );
    let st = stats_until(&svc, "the timeout counted", |st| st.handshake_timeouts == 1);
    assert_eq!((st.handshakes_rejected, st.handshakes_ok), (2, 0));
}
