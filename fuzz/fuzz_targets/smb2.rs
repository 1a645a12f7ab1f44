//! The SMB2 front's decoders on arbitrary bytes: the unframer, compound
//! splitting, request and response decoding, SPNEGO, NTLMSSP and the SMB1
//! negotiate; then the server core: the input fed to a fresh connection,
//! and (cut into messages) to one that has logged in and opened a pipe.
//! Checks: no panic; whatever decodes encodes again, and that encoding
//! decodes to the same value; a connection the core closes has no pipe
//! left open.
#![no_main]

use std::collections::HashSet;
use std::task::Poll;

use libfuzzer_sys::fuzz_target;
use opipe::protocol::{NetUserInfo, NtStatus};
use opipe::smb2::file::CreateRequest;
use opipe::smb2::negotiate::{NegotiateContext, NegotiateRequest};
use opipe::smb2::ntlmssp::{self, Authenticate, Challenge, Negotiate};
use opipe::smb2::server::{
    Connection, InterimPolicy, OpId, PipeBackend, PipeData, PipeRef, ServerConfig,
};
use opipe::smb2::session::{SessionSetupRequest, TreeConnectRequest};
use opipe::smb2::spnego::{NegTokenInit, NegTokenResp, SpnegoToken, OID_NTLMSSP};
use opipe::smb2::{
    frame, split_compound, Command, Header, HeaderIds, Request, Response, Smb1Negotiate, Unframer,
};

/// Every operation answers at once, except reads with an even pipe id.
#[derive(Default)]
struct Fake {
    next: u64,
    open: HashSet<u64>,
}

impl PipeBackend for Fake {
    fn open(&mut self, _: OpId, name: &str, _: &NetUserInfo) -> Poll<Result<PipeRef, NtStatus>> {
        if name.len() > 20 {
            return Poll::Ready(Err(NtStatus::OBJECT_NAME_NOT_FOUND));
        }
        self.next += 1;
        self.open.insert(self.next);
        Poll::Ready(Ok(PipeRef(self.next)))
    }
    fn transceive(
        &mut self,
        _: OpId,
        _: PipeRef,
        input: Vec<u8>,
        max: usize,
    ) -> Poll<Result<PipeData, NtStatus>> {
        let mut d = PipeData::ok(input);
        if d.data.len() > max {
            d.data.truncate(max);
            d.status = NtStatus::BUFFER_OVERFLOW;
        }
        Poll::Ready(Ok(d))
    }
    fn peek(&mut self, _: OpId, _: PipeRef, _: usize) -> Poll<Result<PipeData, NtStatus>> {
        Poll::Ready(Ok(PipeData::ok(vec![0; 16])))
    }
    fn wait(&mut self, _: OpId, _: &[u8]) -> Poll<Result<(), NtStatus>> {
        Poll::Ready(Err(NtStatus::IO_TIMEOUT))
    }
    fn read(&mut self, _: OpId, p: PipeRef, _: usize) -> Poll<Result<PipeData, NtStatus>> {
        if p.0 & 1 == 0 {
            Poll::Pending
        } else {
            Poll::Ready(Ok(PipeData::ok(b"data".to_vec())))
        }
    }
    fn write(&mut self, _: OpId, _: PipeRef, data: Vec<u8>) -> Poll<Result<usize, NtStatus>> {
        Poll::Ready(Ok(data.len()))
    }
    fn cancel(&mut self, _: OpId) {}
    fn close(&mut self, p: PipeRef) {
        self.open.remove(&p.0);
    }
    fn logoff(&mut self, _: u64) {}
}

const NOW: u64 = 134_000_000_000_000_000;

/// Sends one request and returns the header of the (single) answer.
fn call(conn: &mut Connection, fake: &mut Fake, h: &Header, req: &Request) -> Header {
    conn.receive(
        &frame(&req.encode(h).expect("encodes")).expect("frames"),
        NOW,
        fake,
    )
    .expect("login step accepted");
    let out = conn.take_output();
    Response::decode(&out[4..]).expect("answer decodes").0
}

/// A connection logged in anonymously on IPC$ with two pipes open, with
/// interim responses as `interim` says; returns it with the next message
/// id, session and tree ids.
fn logged_in(fake: &mut Fake, interim: InterimPolicy) -> (Connection, u64, u64, u32) {
    let mut conn = Connection::new(
        ServerConfig {
            interim,
            ..ServerConfig::default()
        },
        "127.0.0.1:1".parse().expect("addr"),
        5,
    );
    let mut h = Header::request(Command::Negotiate);
    h.credits = 256;
    let neg = Request::Negotiate(NegotiateRequest {
        security_mode: 1,
        capabilities: 0,
        client_guid: [1; 16],
        dialects: vec![0x202, 0x311],
        contexts: vec![NegotiateContext::PreauthIntegrity {
            hash_algorithms: vec![1],
            salt: vec![0; 32],
        }],
        client_start_time: 0,
    });
    call(&mut conn, fake, &h, &neg);
    let t1 = Negotiate {
        flags: ntlmssp::NEGOTIATE_UNICODE,
        domain: vec![],
        workstation: vec![],
        version: None,
    };
    let ss = |tok: SpnegoToken| {
        Request::SessionSetup(SessionSetupRequest {
            flags: 0,
            security_mode: 1,
            capabilities: 0,
            channel: 0,
            previous_session_id: 0,
            security_buffer: tok.encode().expect("token"),
        })
    };
    h.message_id = 1;
    let init = NegTokenInit {
        mech_types: vec![OID_NTLMSSP.to_vec()],
        mech_token: Some(t1.encode().expect("t1")),
        ..Default::default()
    };
    let r = call(&mut conn, fake, &h, &ss(SpnegoToken::Init(init)));
    h.session_id = r.session_id;
    h.message_id = 2;
    let t3 = Authenticate::anonymous(ntlmssp::NEGOTIATE_UNICODE);
    let resp = NegTokenResp {
        response_token: Some(t3.encode().expect("t3")),
        ..Default::default()
    };
    call(&mut conn, fake, &h, &ss(SpnegoToken::Resp(resp)));
    h.message_id = 3;
    let r = call(
        &mut conn,
        fake,
        &h,
        &Request::TreeConnect(TreeConnectRequest {
            flags: 0,
            path: r"\\s\IPC$".into(),
        }),
    );
    let tree_id = r.tree_id();
    h.ids = HeaderIds::Sync {
        process_id: 1,
        tree_id,
    };
    for mid in [4, 5] {
        h.message_id = mid;
        let create = Request::Create(CreateRequest {
            security_flags: 0,
            requested_oplock_level: 0,
            impersonation_level: 2,
            smb_create_flags: 0,
            desired_access: 0x12019f,
            file_attributes: 0,
            share_access: 3,
            create_disposition: 1,
            create_options: 0,
            name: "srvsvc".into(),
            create_contexts: vec![],
        });
        call(&mut conn, fake, &h, &create);
    }
    (conn, 6, h.session_id, tree_id)
}

fuzz_target!(|data: &[u8]| {
    let mut u = Unframer::new(1 << 20);
    u.push(data);
    while let Ok(Some(_)) = u.next_message() {}

    let _ = Smb1Negotiate::decode(data);
    if let Ok(parts) = split_compound(data) {
        for part in parts {
            if let Ok((h, req)) = Request::decode(part) {
                if !matches!(req, Request::Other(_)) {
                    let enc = req.encode(&h).expect("a decoded request encodes");
                    assert_eq!(Request::decode(&enc).expect("re-decodes"), (h, req));
                }
            }
            if let Ok((h, resp)) = Response::decode(part) {
                let enc = resp.encode(&h).expect("a decoded response encodes");
                assert_eq!(Response::decode(&enc).expect("re-decodes"), (h, resp));
            }
        }
    }
    if let Ok(t) = SpnegoToken::decode(data) {
        let enc = t.encode().expect("a decoded token encodes");
        assert_eq!(SpnegoToken::decode(&enc).expect("re-decodes"), t);
    }
    if let Ok(m) = Negotiate::decode(data) {
        assert_eq!(Negotiate::decode(&m.encode().expect("encodes")), Ok(m));
    }
    if let Ok(m) = Challenge::decode(data) {
        assert_eq!(Challenge::decode(&m.encode().expect("encodes")), Ok(m));
    }
    if let Ok(m) = Authenticate::decode(data) {
        assert_eq!(Authenticate::decode(&m.encode().expect("encodes")), Ok(m));
    }

    // The core, fresh: the input as a byte stream.
    let mut fake = Fake::default();
    let mut conn = Connection::new(
        ServerConfig::default(),
        "127.0.0.1:1".parse().expect("addr"),
        9,
    );
    let _ = conn.receive(data, NOW, &mut fake);
    if conn.is_closed() {
        assert!(fake.open.is_empty());
    }

    // The core, logged in with two pipes open: the input cut at 0xFE 'S' 'M'
    // 'B' into messages, each framed, with the session and tree ids of the
    // login written in where the header has room for them.
    let mut fake = Fake::default();
    // Odd first byte: the policy of the engine front (pending operations
    // other than READ held without an interim response).
    let interim = if data.first().is_some_and(|b| b & 1 == 1) {
        InterimPolicy::BlockingOnly
    } else {
        InterimPolicy::Always
    };
    let (mut conn, mid0, session_id, tree_id) = logged_in(&mut fake, interim);
    for (i, piece) in data.split(|&b| b == 0xFF).enumerate() {
        let mut msg = piece.to_vec();
        if msg.len() >= 64 {
            msg[..4].copy_from_slice(&[0xFE, b'S', b'M', b'B']);
            msg[24..32].copy_from_slice(&(mid0 + i as u64).to_le_bytes());
            if msg[16] & 2 == 0 {
                msg[36..40].copy_from_slice(&tree_id.to_le_bytes());
            }
            msg[40..48].copy_from_slice(&session_id.to_le_bytes());
        }
        let Ok(f) = frame(&msg) else { break };
        if conn.receive(&f, NOW, &mut fake).is_err() {
            assert!(conn.is_closed());
            assert!(fake.open.is_empty(), "a closed connection left a pipe open");
            break;
        }
        let _ = conn.take_output();
    }
});
