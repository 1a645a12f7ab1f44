//! The sans-IO SMB2 server core with a fake pipe backend: the client
//! requests recorded from smbclient and rpcclient are replayed (their
//! smbd-given ids swapped for ours) and our responses are held against
//! smbd's; then the cases the captures do not show: an async transceive, a
//! blocking READ cancelled by CANCEL, LOGOFF with pipes open, compounds,
//! refusals, limits and malformed input.
#![cfg(feature = "smb2")]

mod common;

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::task::Poll;

use common::smb2::{create, login, negotiate, open, read, transceive, tree_connect, Ids, Smb2Call};
use opipe::protocol::userinfo::{NetUserInfo, USER_FLAG_ANONYMOUS, USER_FLAG_GUEST};
use opipe::protocol::NtStatus;
use opipe::smb2::file::{
    CloseRequest, FileId, IoctlRequest, QueryInfoRequest, QueryInfoResponse, SetInfoRequest,
    WriteRequest, FSCTL_PIPE_TRANSCEIVE, IOCTL_IS_FSCTL,
};
use opipe::smb2::frame::frame_len;
use opipe::smb2::header::{FLAGS_RELATED_OPERATIONS, HEADER_LEN};
use opipe::smb2::negotiate::{NegotiateContext, NegotiateRequest, DIALECT_311, HASH_SHA512};
use opipe::smb2::ntlmssp;
use opipe::smb2::server::{
    Completion, Connection, ConnectionError, OpId, PipeBackend, PipeData, PipeRef, ServerConfig,
};
use opipe::smb2::session::{SESSION_FLAG_IS_GUEST, SESSION_FLAG_IS_NULL, SHARE_TYPE_PIPE};
use opipe::smb2::spnego::SpnegoToken;
use opipe::smb2::status;
use opipe::smb2::{frame, split_compound, Command, Header, HeaderIds, Request, Response};

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/vectors/smb2");
const NOW: u64 = 134_000_000_000_000_000;

fn records(name: &str) -> Vec<(bool, Vec<u8>)> {
    let data = std::fs::read(format!("{DIR}/{name}")).expect("vector file");
    let mut out = Vec::new();
    let mut rest = &data[..];
    while let Some((&tag, tail)) = rest.split_first() {
        let len = frame_len(tail[..4].try_into().unwrap()).unwrap();
        out.push((tag == b'C', tail[4..4 + len].to_vec()));
        rest = &tail[4 + len..];
    }
    out
}

/// Framed output -> decoded response parts.
fn responses(out: &[u8]) -> Vec<(Header, Response)> {
    let mut v = Vec::new();
    let mut rest = out;
    while !rest.is_empty() {
        let len = frame_len(rest[..4].try_into().unwrap()).unwrap();
        for part in split_compound(&rest[4..4 + len]).unwrap() {
            v.push(Response::decode(part).unwrap());
        }
        rest = &rest[4 + len..];
    }
    v
}

#[derive(Default)]
struct Fake {
    /// Transceive input -> output (smbd's answers from the captures).
    answers: HashMap<Vec<u8>, Vec<u8>>,
    next: u64,
    open_pipes: HashMap<u64, String>,
    opens: Vec<(String, NetUserInfo)>,
    /// Data waiting to be read, per pipe.
    queued: HashMap<u64, VecDeque<Vec<u8>>>,
    /// Transceives and reads go pending instead of answering.
    go_async: bool,
    /// Opens go pending (parked here) instead of answering.
    opens_async: bool,
    parked_opens: Vec<(OpId, String)>,
    parked: Vec<(OpId, PipeRef, Vec<u8>)>,
    reads: Vec<(OpId, PipeRef)>,
    cancelled: Vec<OpId>,
    closed: Vec<PipeRef>,
    logoffs: Vec<u64>,
}

impl Fake {
    /// A fake that answers each transceive as smbd did in capture `name`.
    fn with_capture_answers(name: &str) -> Fake {
        let mut f = Fake::default();
        {
            let mut inputs: HashMap<u64, Vec<u8>> = HashMap::new();
            for (from_client, msg) in records(name) {
                if opipe::smb2::Smb1Negotiate::is_smb1(&msg) {
                    continue;
                }
                if from_client {
                    if let Ok((h, Request::Ioctl(io))) = Request::decode(&msg) {
                        inputs.insert(h.message_id, io.input);
                    }
                } else if let Ok((h, Response::Ioctl(io))) = Response::decode(&msg) {
                    if let Some(input) = inputs.get(&h.message_id) {
                        f.answers.insert(input.clone(), io.output);
                    }
                }
            }
        }
        f
    }

    fn answer(&self, input: &[u8]) -> Result<PipeData, NtStatus> {
        match self.answers.get(input) {
            Some(out) => Ok(PipeData::ok(out.clone())),
            // Anything else: echo the input back.
            None => Ok(PipeData::ok(input.to_vec())),
        }
    }
}

impl PipeBackend for Fake {
    fn open(
        &mut self,
        op: OpId,
        name: &str,
        user: &NetUserInfo,
    ) -> Poll<Result<PipeRef, NtStatus>> {
        self.opens.push((name.to_owned(), user.clone()));
        if self.opens_async {
            self.parked_opens.push((op, name.to_owned()));
            return Poll::Pending;
        }
        if !["srvsvc", "lsarpc"].contains(&name.to_ascii_lowercase().as_str()) {
            return Poll::Ready(Err(NtStatus::OBJECT_NAME_NOT_FOUND));
        }
        self.next += 1;
        self.open_pipes.insert(self.next, name.to_owned());
        Poll::Ready(Ok(PipeRef(self.next)))
    }

    fn transceive(
        &mut self,
        op: OpId,
        pipe: PipeRef,
        input: Vec<u8>,
        max_out: usize,
    ) -> Poll<Result<PipeData, NtStatus>> {
        if !self.open_pipes.contains_key(&pipe.0) {
            return Poll::Ready(Err(NtStatus::INVALID_HANDLE));
        }
        if self.go_async {
            self.parked.push((op, pipe, input));
            return Poll::Pending;
        }
        let mut d = match self.answer(&input) {
            Ok(d) => d,
            Err(e) => return Poll::Ready(Err(e)),
        };
        if d.data.len() > max_out {
            d.data.truncate(max_out);
            d.status = NtStatus::BUFFER_OVERFLOW;
        }
        Poll::Ready(Ok(d))
    }

    fn peek(
        &mut self,
        _op: OpId,
        _pipe: PipeRef,
        _max_out: usize,
    ) -> Poll<Result<PipeData, NtStatus>> {
        Poll::Ready(Ok(PipeData::ok(vec![0; 16])))
    }

    fn wait(&mut self, _op: OpId, _input: &[u8]) -> Poll<Result<(), NtStatus>> {
        Poll::Ready(Ok(()))
    }

    fn read(
        &mut self,
        op: OpId,
        pipe: PipeRef,
        max_out: usize,
    ) -> Poll<Result<PipeData, NtStatus>> {
        match self.queued.get_mut(&pipe.0).and_then(VecDeque::pop_front) {
            Some(mut d) => {
                d.truncate(max_out);
                Poll::Ready(Ok(PipeData::ok(d)))
            }
            None => {
                self.reads.push((op, pipe));
                Poll::Pending
            }
        }
    }

    fn write(&mut self, _op: OpId, pipe: PipeRef, data: Vec<u8>) -> Poll<Result<usize, NtStatus>> {
        let n = data.len();
        self.queued.entry(pipe.0).or_default().push_back(data);
        Poll::Ready(Ok(n))
    }

    fn cancel(&mut self, op: OpId) {
        self.cancelled.push(op);
    }

    fn close(&mut self, pipe: PipeRef) {
        self.open_pipes.remove(&pipe.0);
        self.closed.push(pipe);
    }

    fn logoff(&mut self, session_id: u64) {
        self.logoffs.push(session_id);
    }
}

fn client() -> SocketAddr {
    "127.0.0.1:40000".parse().unwrap()
}

/// Replays a capture against our core; returns (smbd's final response,
/// ours) pairs by message id, and the fake backend.
/// A decoded response part.
type Answer = (Header, Response);

fn replay(name: &str) -> (Vec<(Answer, Answer)>, Fake) {
    let mut fake = Fake::with_capture_answers(name);
    let mut conn = Connection::new(ServerConfig::default(), client(), 7);
    let recs = records(name);
    let (mut sess, mut tree, mut file): (
        HashMap<u64, u64>,
        HashMap<u32, u32>,
        HashMap<FileId, FileId>,
    ) = (HashMap::new(), HashMap::new(), HashMap::new());
    let mut ours: HashMap<u64, (Header, Response)> = HashMap::new();
    let mut pairs = Vec::new();
    for (from_client, msg) in recs {
        if from_client {
            let bytes = if opipe::smb2::Smb1Negotiate::is_smb1(&msg) {
                msg
            } else {
                let (mut h, mut req) = Request::decode(&msg).unwrap();
                h.session_id = *sess.get(&h.session_id).unwrap_or(&h.session_id);
                if let HeaderIds::Sync {
                    process_id,
                    tree_id,
                } = h.ids
                {
                    h.ids = HeaderIds::Sync {
                        process_id,
                        tree_id: *tree.get(&tree_id).unwrap_or(&tree_id),
                    };
                }
                let fid = match &mut req {
                    Request::Close(r) => Some(&mut r.file_id),
                    Request::Ioctl(r) => Some(&mut r.file_id),
                    Request::Read(r) => Some(&mut r.file_id),
                    Request::Write(r) => Some(&mut r.file_id),
                    Request::QueryInfo(r) => Some(&mut r.file_id),
                    _ => None,
                };
                if let Some(f) = fid {
                    *f = *file.get(f).unwrap_or(f);
                }
                req.encode(&h).unwrap()
            };
            conn.receive(&frame(&bytes).unwrap(), NOW, &mut fake)
                .unwrap_or_else(|e| panic!("{name}: {e:?}"));
            for (h, r) in responses(&conn.take_output()) {
                ours.insert(h.message_id, (h, r));
            }
        } else {
            let (sh, sr) = Response::decode(&msg).unwrap();
            if sh.status == NtStatus::PENDING {
                continue;
            }
            let (oh, or) = ours
                .remove(&sh.message_id)
                .unwrap_or_else(|| panic!("{name}: no answer to message {}", sh.message_id));
            if let (Response::SessionSetup(_), true) = (&sr, sh.session_id != 0) {
                sess.insert(sh.session_id, oh.session_id);
            }
            if let Response::TreeConnect(_) = sr {
                tree.insert(sh.tree_id(), oh.tree_id());
            }
            if let (Response::Create(s), Response::Create(o)) = (&sr, &or) {
                file.insert(s.file_id, o.file_id);
            }
            pairs.push(((sh, sr), (oh, or)));
        }
    }
    assert!(!conn.is_closed());
    (pairs, fake)
}

fn check_replay(name: &str, guest: bool) {
    let (pairs, fake) = replay(name);
    assert!(pairs.len() >= 9, "{name}: {} answers", pairs.len());
    for ((sh, sr), (oh, or)) in &pairs {
        assert_eq!(
            oh.status, sh.status,
            "{name}: status of {sr:?} vs ours {or:?}"
        );
        assert_eq!(oh.command, sh.command);
        assert!(
            oh.credits >= 1 || sh.credits == 0,
            "{name}: no credit granted"
        );
        match (sr, or) {
            (Response::Negotiate(s), Response::Negotiate(o)) => {
                assert_eq!(o.dialect_revision, s.dialect_revision);
                if o.dialect_revision == DIALECT_311 {
                    let has_preauth = o.contexts.iter().any(|c| {
                        matches!(c, NegotiateContext::PreauthIntegrity { hash_algorithms, salt }
                            if hash_algorithms == &[HASH_SHA512] && salt.len() == 32)
                    });
                    assert!(has_preauth, "{name}: {o:?}");
                }
                assert!(matches!(
                    SpnegoToken::decode(&o.security_buffer),
                    Ok(SpnegoToken::Init(_))
                ));
            }
            (Response::SessionSetup(s), Response::SessionSetup(o)) => {
                let tok = SpnegoToken::decode(&o.security_buffer).unwrap();
                if oh.status == status::MORE_PROCESSING_REQUIRED {
                    let c = ntlmssp::Challenge::decode(tok.mech_token().unwrap()).unwrap();
                    assert!(c.flags & ntlmssp::NEGOTIATE_UNICODE != 0);
                } else {
                    assert_eq!(
                        s.session_flags,
                        if guest { SESSION_FLAG_IS_GUEST } else { 0 }
                    );
                    let want = if guest {
                        SESSION_FLAG_IS_GUEST
                    } else {
                        SESSION_FLAG_IS_NULL
                    };
                    assert_eq!(o.session_flags, want, "{name}");
                    assert_eq!(
                        o.security_buffer, s.security_buffer,
                        "accept-completed as smbd"
                    );
                }
            }
            (Response::TreeConnect(s), Response::TreeConnect(o)) => {
                assert_eq!(o.share_type, SHARE_TYPE_PIPE);
                assert_eq!(o, s);
            }
            (Response::Ioctl(s), Response::Ioctl(o)) => {
                assert_eq!(
                    o.output, s.output,
                    "{name}: the pipe's answer passes unchanged"
                );
                assert_eq!(o.ctl_code, FSCTL_PIPE_TRANSCEIVE);
            }
            (Response::Create(_), Response::Create(_))
            | (Response::Close(_), Response::Close(_))
            | (Response::TreeDisconnect, Response::TreeDisconnect) => {}
            other => panic!("{name}: unexpected pair {other:?}"),
        }
    }
    assert_eq!(fake.opens.len(), 1);
    let (pipe, user) = &fake.opens[0];
    assert_eq!(pipe, "srvsvc");
    if guest {
        assert_eq!(user.flags, USER_FLAG_GUEST);
        assert_eq!(user.account, "root");
    } else {
        assert_eq!(user.flags, USER_FLAG_ANONYMOUS);
        assert_eq!(user.account, "");
    }
    // Both clients named their workstation "VM" in the AUTHENTICATE.
    assert_eq!(user.workstation, "VM");
    assert_ne!(user.session_id, 0);
    assert_eq!(fake.closed.len(), 1, "CLOSE closed the pipe");
}

#[test]
fn replay_rpcclient_anonymous() {
    check_replay("rpcclient_srvinfo_0.bin", false);
}

#[test]
fn replay_smbclient_guest() {
    check_replay("smbclient_L_0.bin", true);
}

#[test]
fn replay_smbclient_smb1_upgrade() {
    check_replay("smbclient_nt1_0.bin", true);
}

// ---- a small scripted client for the cases the captures lack ------------

struct Client {
    conn: Connection,
    fake: Fake,
    ids: Ids,
}

impl Smb2Call for Client {
    fn ids(&mut self) -> &mut Ids {
        &mut self.ids
    }

    fn call(&mut self, req: Request) -> (Header, Response) {
        let h = self.header(Command::from_u16(req.command()).unwrap());
        let bytes = req.encode(&h).unwrap();
        let mut r = self.send_raw(&bytes).unwrap();
        assert_eq!(r.len(), 1, "{r:?}");
        r.remove(0)
    }
}

impl Client {
    fn new(cfg: ServerConfig) -> Client {
        Client {
            conn: Connection::new(cfg, client(), 99),
            fake: Fake::default(),
            ids: Ids::default(),
        }
    }

    fn header(&mut self, cmd: Command) -> Header {
        self.ids.header(cmd)
    }

    /// One request with a header of the caller's.
    fn call_with(&mut self, h: Header, req: Request) -> (Header, Response) {
        let mut r = self.send_raw(&req.encode(&h).unwrap()).unwrap();
        assert_eq!(r.len(), 1, "{r:?}");
        r.remove(0)
    }

    fn send_raw(&mut self, msg: &[u8]) -> Result<Vec<(Header, Response)>, ConnectionError> {
        self.conn
            .receive(&frame(msg).unwrap(), NOW, &mut self.fake)?;
        Ok(responses(&self.conn.take_output()))
    }

    /// NEGOTIATE (2.0.2 and 3.1.1), anonymous login, IPC$.
    fn login(cfg: ServerConfig) -> Client {
        Client::login_with(cfg, &[0x202, 0x311])
    }

    /// NEGOTIATE offering `dialects`, anonymous login, IPC$.
    fn login_with(cfg: ServerConfig, dialects: &[u16]) -> Client {
        let mut c = Client::new(cfg);
        login(&mut c, negotiate([3; 16], dialects), r"\\srv\IPC$");
        c
    }

    fn create(&mut self, name: &str) -> (Header, Response) {
        self.call(Request::Create(create(name)))
    }

    /// Completes the last parked transceive with `answer(its input)` and
    /// returns what the connection sends then.
    fn answer_parked(
        &mut self,
        answer: impl FnOnce(Vec<u8>) -> PipeData,
    ) -> Vec<(Header, Response)> {
        let (op, _, input) = self.fake.parked.pop().unwrap();
        self.conn
            .complete(op, Completion::Data(Ok(answer(input))), NOW, &mut self.fake)
            .unwrap();
        responses(&self.conn.take_output())
    }

    /// A related compound CREATE + IOCTL(transceive `data`) + CLOSE, each
    /// part after the first with FLAGS_RELATED_OPERATIONS (and, with
    /// `wildcard_ids`, the session and tree ids all ones, as clients send).
    fn related_create_ioctl_close(&mut self, data: &[u8], wildcard_ids: bool) -> Vec<u8> {
        let mut msg = Vec::new();
        let reqs = [
            Request::Create(create("srvsvc")),
            transceive(FileId::RELATED, data, 100),
            Request::Close(CloseRequest {
                flags: 0,
                file_id: FileId::RELATED,
            }),
        ];
        for (i, req) in reqs.iter().enumerate() {
            let mut h = self.header(Command::from_u16(req.command()).unwrap());
            if i > 0 {
                h.flags |= FLAGS_RELATED_OPERATIONS;
                if wildcard_ids {
                    h.session_id = u64::MAX;
                    h.ids = HeaderIds::Sync {
                        process_id: 0xFEFF,
                        tree_id: u32::MAX,
                    };
                }
            }
            let mut b = req.encode(&h).unwrap();
            if i + 1 < reqs.len() {
                let len = b.len().div_ceil(8) * 8;
                b.resize(len, 0);
                b[20..24].copy_from_slice(&(len as u32).to_le_bytes());
            }
            msg.extend_from_slice(&b);
        }
        msg
    }

    fn open(&mut self, name: &str) -> FileId {
        open(self, name)
    }
}

#[test]
fn refusals_answer_as_windows() {
    let mut c = Client::login(ServerConfig::default());
    let (h, _) = c.call(tree_connect(r"\\srv\C$"));
    assert_eq!(h.status, status::BAD_NETWORK_NAME);
    let (h, _) = c.create("nosuchpipe");
    assert_eq!(h.status, NtStatus::OBJECT_NAME_NOT_FOUND);
    let f = c.open("srvsvc");
    let (h, _) = c.call(Request::Ioctl(IoctlRequest {
        ctl_code: 0x0009_0000,
        ..match transceive(f, b"x", 10) {
            Request::Ioctl(io) => io,
            _ => unreachable!(),
        }
    }));
    assert_eq!(h.status, NtStatus::INVALID_DEVICE_REQUEST);
    // A DFS referral request on IPC$: no DFS, as MS-SMB2 3.3.5.15.2 says.
    let (h, _) = c.call(Request::Ioctl(IoctlRequest {
        ctl_code: opipe::smb2::server::FSCTL_DFS_GET_REFERRALS,
        ..match transceive(FileId::RELATED, b"\0\0", 4096) {
            Request::Ioctl(io) => io,
            _ => unreachable!(),
        }
    }));
    assert_eq!(h.status, status::FS_DRIVER_REQUIRED);
    let (h, _) = c.call(transceive(
        FileId {
            persistent: 9,
            volatile: 9,
        },
        b"x",
        10,
    ));
    assert_eq!(h.status, status::FILE_CLOSED);
    let (h, r) = c.call(Request::Echo);
    assert_eq!((h.status, r), (NtStatus(0), Response::Echo));
    // FileStandardInformation of a pipe.
    let (h, r) = c.call(Request::QueryInfo(QueryInfoRequest {
        info_type: 1,
        file_info_class: 5,
        output_buffer_length: 24,
        additional_information: 0,
        flags: 0,
        file_id: f,
        input: vec![],
    }));
    assert_eq!(h.status, NtStatus(0));
    let Response::QueryInfo(q) = r else { panic!() };
    assert_eq!(q.output.len(), 24);
    assert!(!c.conn.is_closed());
}

#[test]
fn transceive_overflow_is_passed_through() {
    let mut c = Client::login(ServerConfig::default());
    let f = c.open("srvsvc");
    let (h, r) = c.call(transceive(f, &[7; 100], 40));
    assert_eq!(h.status, NtStatus::BUFFER_OVERFLOW);
    let Response::Ioctl(io) = r else {
        panic!("{r:?}")
    };
    assert_eq!(io.output, vec![7; 40]);
}

#[test]
fn async_transceive_gets_interim_then_answer() {
    let mut c = Client::login(ServerConfig::default());
    let f = c.open("srvsvc");
    c.fake.go_async = true;
    let h = c.header(Command::Ioctl);
    let r = c
        .send_raw(&transceive(f, b"ping", 100).encode(&h).unwrap())
        .unwrap();
    assert_eq!(r.len(), 1);
    let (ih, ir) = &r[0];
    assert_eq!(ih.status, NtStatus::PENDING);
    assert_eq!(ih.message_id, h.message_id);
    assert!(ih.async_id().is_some() && ih.credits >= 1);
    assert!(matches!(ir, Response::Error(_)));
    assert_eq!(c.conn.pending_ops(), 1);
    let r = c.answer_parked(PipeData::ok);
    let (fh, fr) = &r[0];
    assert_eq!(
        (fh.status, fh.message_id, fh.async_id()),
        (NtStatus(0), h.message_id, ih.async_id())
    );
    let Response::Ioctl(io) = fr else { panic!() };
    assert_eq!(io.output, b"ping");
    assert_eq!(c.conn.pending_ops(), 0);
}

#[test]
fn blocking_read_is_cancelled_and_the_pipe_stays_usable() {
    let mut c = Client::login(ServerConfig::default());
    let f = c.open("srvsvc");
    let h = c.header(Command::Read);
    let r = c.send_raw(&read(f, 1024).encode(&h).unwrap()).unwrap();
    assert_eq!(r[0].0.status, NtStatus::PENDING);
    let async_id = r[0].0.async_id().unwrap();
    let (op, _) = c.fake.reads[0];
    // CANCEL by AsyncId: no response of its own; the backend is told.
    let mut ch = c.header(Command::Cancel);
    ch.message_id = h.message_id;
    ch.ids = HeaderIds::Async { async_id };
    let r = c.send_raw(&Request::Cancel.encode(&ch).unwrap()).unwrap();
    assert!(r.is_empty());
    assert_eq!(c.fake.cancelled, [op]);
    c.conn
        .complete(
            op,
            Completion::Data(Err(NtStatus::CANCELLED)),
            NOW,
            &mut c.fake,
        )
        .unwrap();
    let r = responses(&c.conn.take_output());
    assert_eq!(r[0].0.status, NtStatus::CANCELLED);
    assert_eq!(r[0].0.message_id, h.message_id);
    // The pipe still works: write then read.
    let (h, _) = c.call(Request::Write(WriteRequest {
        offset: 0,
        file_id: f,
        channel: 0,
        remaining_bytes: 0,
        flags: 0,
        data: b"hello".to_vec(),
    }));
    assert_eq!(h.status, NtStatus(0));
    let (h, r) = c.call(read(f, 1024));
    assert_eq!(h.status, NtStatus(0));
    assert_eq!(
        r,
        Response::Read(opipe::smb2::file::ReadResponse {
            data_remaining: 0,
            data: b"hello".to_vec()
        })
    );
}

#[test]
fn logoff_closes_pipes_and_cancels_reads() {
    let mut c = Client::login(ServerConfig::default());
    let a = c.open("srvsvc");
    let _b = c.open("lsarpc");
    let h = c.header(Command::Read);
    c.send_raw(&read(a, 100).encode(&h).unwrap()).unwrap();
    let (op, _) = c.fake.reads[0];
    let sid = c.ids.session_id;
    let (h, r) = c.call(Request::Logoff);
    assert_eq!((h.status, r), (NtStatus(0), Response::Logoff));
    assert_eq!(c.fake.closed.len(), 2);
    assert_eq!(c.fake.cancelled, [op]);
    assert_eq!(c.fake.logoffs, [sid]);
    // The session is gone.
    let (h, _) = c.create("srvsvc");
    assert_eq!(h.status, status::USER_SESSION_DELETED);
}

#[test]
fn related_compound_create_ioctl_close() {
    let mut c = Client::login(ServerConfig::default());
    let msg = c.related_create_ioctl_close(b"abc", true);
    let r = c.send_raw(&msg).unwrap();
    assert_eq!(r.len(), 3, "one compound answer of three parts");
    assert!(r.iter().all(|(h, _)| h.status == NtStatus(0)), "{r:?}");
    let Response::Ioctl(io) = &r[1].1 else {
        panic!()
    };
    assert_eq!(io.output, b"abc");
    assert!(r[1].0.flags & FLAGS_RELATED_OPERATIONS != 0);
    assert_eq!(c.fake.closed.len(), 1);
}

#[test]
fn limits() {
    let cfg = ServerConfig {
        max_opens_per_session: 2,
        max_pending: 1,
        ..ServerConfig::default()
    };
    let mut c = Client::login(cfg);
    let f = c.open("srvsvc");
    c.open("srvsvc");
    let (h, _) = c.create("srvsvc");
    assert_eq!(h.status, NtStatus::TOO_MANY_OPENED_FILES);
    let h = c.header(Command::Read);
    c.send_raw(&read(f, 10).encode(&h).unwrap()).unwrap();
    let (h, _) = c.call(read(f, 10));
    assert_eq!(h.status, NtStatus::INSUFFICIENT_RESOURCES);
    // A READ over the announced size.
    let (h, _) = c.call(read(f, 1 << 20));
    assert_eq!(h.status, NtStatus::INVALID_PARAMETER);
}

#[test]
fn malformed_input_closes_only_this_connection() {
    let mut c = Client::login(ServerConfig::default());
    let _f = c.open("srvsvc");
    let mut other = Client::login(ServerConfig::default());
    let g = other.open("srvsvc");
    // Garbage that is not SMB2.
    let e = c.send_raw(b"\xfeSMBgarbage").unwrap_err();
    assert!(matches!(e, ConnectionError::Malformed(_)), "{e:?}");
    assert!(c.conn.is_closed());
    assert_eq!(c.fake.closed.len(), 1, "its pipe was closed");
    assert_eq!(c.fake.logoffs.len(), 1);
    assert_eq!(c.send_raw(b"x"), Err(ConnectionError::Closed));
    // The other connection goes on.
    let (h, _) = other.call(transceive(g, b"still here", 100));
    assert_eq!(h.status, NtStatus(0));
    // A length over the limit is refused at the header.
    let mut d = Client::login(ServerConfig::default());
    let e = d
        .conn
        .receive(&[0, 0xff, 0xff, 0xff], NOW, &mut d.fake)
        .unwrap_err();
    assert!(matches!(e, ConnectionError::Malformed(_)));
}

#[test]
fn message_ids_outside_the_credit_window_close() {
    let mut c = Client::login(ServerConfig::default());
    let mut h = c.header(Command::Echo);
    h.message_id += 100_000;
    let e = c.send_raw(&Request::Echo.encode(&h).unwrap()).unwrap_err();
    assert!(matches!(e, ConnectionError::Protocol(_)));
}

#[test]
fn a_message_id_used_twice_closes() {
    let mut c = Client::login(ServerConfig::default());
    let h = c.header(Command::Echo);
    let (r, _) = c.call_with(h.clone(), Request::Echo);
    assert_eq!(r.status, NtStatus(0));
    // The same id again, although well inside the credit window.
    let e = c.send_raw(&Request::Echo.encode(&h).unwrap()).unwrap_err();
    assert_eq!(e, ConnectionError::Protocol("MessageId used twice"));
    assert!(c.conn.is_closed());
    // Out of order is fine: a later id first, then the skipped one.
    let mut c = Client::login(ServerConfig::default());
    let first = c.header(Command::Echo);
    let second = c.header(Command::Echo);
    assert_eq!(c.call_with(second, Request::Echo).0.status, NtStatus(0));
    assert_eq!(c.call_with(first, Request::Echo).0.status, NtStatus(0));
    assert!(!c.conn.is_closed());
}

#[test]
fn requests_before_negotiate_or_session_are_refused() {
    let mut c = Client::new(ServerConfig::default());
    let (h, _) = c.call(Request::Echo);
    assert_eq!(h.status, NtStatus::ACCESS_DENIED);
    let mut c = Client::new(ServerConfig::default());
    c.call(Request::Negotiate(NegotiateRequest {
        security_mode: 1,
        capabilities: 0,
        client_guid: [0; 16],
        dialects: vec![0x202],
        contexts: vec![],
        client_start_time: 0,
    }));
    let (h, _) = c.call(tree_connect(r"\\srv\IPC$"));
    assert_eq!(h.status, status::USER_SESSION_DELETED);
    // A body that does not decode: INVALID_PARAMETER, connection kept.
    let h = c.header(Command::Create);
    let mut b = h.encode().to_vec();
    b.extend_from_slice(&[57, 0, 1]);
    let r = c.send_raw(&b).unwrap();
    assert_eq!(r[0].0.status, NtStatus::INVALID_PARAMETER);
    assert!(!c.conn.is_closed());
    assert_eq!(HEADER_LEN, 64);
}

#[test]
fn pending_in_the_middle_of_a_chain_holds_the_rest() {
    let mut c = Client::login(ServerConfig::default());
    c.fake.go_async = true;
    let msg = c.related_create_ioctl_close(b"held", false);
    let r = c.send_raw(&msg).unwrap();
    assert!(
        r.is_empty(),
        "nothing goes out while the chain is held: {r:?}"
    );
    assert!(
        c.fake.closed.is_empty(),
        "the CLOSE waits for the transceive"
    );
    let r = c.answer_parked(PipeData::ok);
    assert_eq!(r.len(), 3, "{r:?}");
    assert!(r
        .iter()
        .all(|(h, _)| h.status == NtStatus(0) && h.async_id().is_none()));
    let Response::Ioctl(io) = &r[1].1 else {
        panic!()
    };
    assert_eq!(io.output, b"held");
    assert_eq!(c.fake.closed.len(), 1);
}

#[test]
fn a_second_negotiate_closes_the_connection_and_its_pipes() {
    let mut c = Client::login(ServerConfig::default());
    c.open("srvsvc");
    let h = c.header(Command::Negotiate);
    let req = Request::Negotiate(NegotiateRequest {
        security_mode: 1,
        capabilities: 0,
        client_guid: [1; 16],
        dialects: vec![0x202],
        contexts: vec![],
        client_start_time: 0,
    });
    let e = c.send_raw(&req.encode(&h).unwrap()).unwrap_err();
    assert!(matches!(e, ConnectionError::Protocol(_)), "{e:?}");
    assert!(c.conn.is_closed());
    assert_eq!(c.fake.closed.len(), 1, "its pipe was closed");
    assert_eq!(c.fake.logoffs.len(), 1);
}

/// Logs in with 3.0.2 (so VALIDATE_NEGOTIATE_INFO applies) and sends it
/// with `dialects_claimed` as the client's list.
fn validate_negotiate(dialects_claimed: &[u16]) -> (Client, Result<Vec<Answer>, ConnectionError>) {
    let mut c = Client::login_with(ServerConfig::default(), &[0x202, 0x302]);
    let mut input = Vec::new();
    input.extend_from_slice(&0x44u32.to_le_bytes());
    input.extend_from_slice(&[3; 16]);
    input.extend_from_slice(&1u16.to_le_bytes());
    input.extend_from_slice(&(dialects_claimed.len() as u16).to_le_bytes());
    for d in dialects_claimed {
        input.extend_from_slice(&d.to_le_bytes());
    }
    let req = Request::Ioctl(IoctlRequest {
        ctl_code: opipe::smb2::server::FSCTL_VALIDATE_NEGOTIATE_INFO,
        file_id: FileId::RELATED,
        max_input_response: 0,
        max_output_response: 24,
        flags: IOCTL_IS_FSCTL,
        input,
        output: vec![],
    });
    let h = c.header(Command::Ioctl);
    let r = c.send_raw(&req.encode(&h).unwrap());
    (c, r)
}

#[test]
fn validate_negotiate_info_matches_or_closes() {
    let (c, r) = validate_negotiate(&[0x202, 0x302]);
    let r = r.unwrap();
    assert_eq!(r[0].0.status, NtStatus(0));
    let Response::Ioctl(io) = &r[0].1 else {
        panic!()
    };
    assert_eq!(io.output.len(), 24);
    assert_eq!(&io.output[22..24], &0x302u16.to_le_bytes());
    assert!(!c.conn.is_closed());
    // A downgrade attempt: the client thinks it offered 2.0.2 only.
    let (c, r) = validate_negotiate(&[0x202]);
    assert!(matches!(r, Err(ConnectionError::Protocol(_))), "{r:?}");
    assert!(c.conn.is_closed());
}

mod mutated {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        /// A logged-in connection with an open pipe gets a valid request with
        /// bytes changed, cut or appended: no panic; either it is closed
        /// (and then its pipe too) or it still answers.
        #[test]
        fn mutated_requests_never_panic_the_core(
            which in 0usize..9,
            flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..6),
            cut in 0usize..40,
            tail in proptest::collection::vec(any::<u8>(), 0..16),
        ) {
            let mut c = Client::login(ServerConfig::default());
            let f = c.open("srvsvc");
            let req = match which {
                0 => transceive(f, b"abc", 100),
                1 => read(f, 10),
                2 => Request::Write(WriteRequest { offset: 0, file_id: f, channel: 0, remaining_bytes: 0, flags: 0, data: b"xyz".to_vec() }),
                3 => Request::Close(CloseRequest { flags: 0, file_id: f }),
                4 => Request::Create(create("srvsvc")),
                5 => tree_connect(r"\\srv\IPC$"),
                6 => Request::Logoff,
                7 => Request::QueryInfo(QueryInfoRequest { info_type: 1, file_info_class: 5, output_buffer_length: 24, additional_information: 0, flags: 0, file_id: f, input: vec![] }),
                _ => Request::Echo,
            };
            let h = c.header(Command::from_u16(req.command()).unwrap());
            let mut b = req.encode(&h).unwrap();
            for (at, v) in flips {
                let i = at % b.len();
                b[i] = v;
            }
            b.truncate(b.len().saturating_sub(cut));
            b.extend_from_slice(&tail);
            let r = c.send_raw(&b);
            if c.conn.is_closed() {
                prop_assert!(r.is_err());
                prop_assert!(c.fake.open_pipes.is_empty(), "closed with a pipe open");
            } else {
                prop_assert!(r.is_ok());
                // The mutated request used the ids its (mutated) header
                // names: the next request takes one past them (a CANCEL
                // uses none).
                if let Ok(mh) = Header::decode(&b) {
                    if mh.command != Command::Cancel as u16 {
                        let end = mh.message_id.saturating_add(u64::from(mh.credit_charge.max(1)));
                        c.ids.mid = c.ids.mid.max(end);
                    }
                }
                let (h, resp) = c.call(Request::Echo);
                prop_assert_eq!((h.status, resp), (NtStatus(0), Response::Echo));
            }
        }
    }
}

#[test]
fn an_open_that_completes_after_logoff_is_closed() {
    let mut c = Client::login(ServerConfig::default());
    c.fake.opens_async = true;
    let h = c.header(Command::Create);
    let r = c
        .send_raw(&Request::Create(create("srvsvc")).encode(&h).unwrap())
        .unwrap();
    assert_eq!(r[0].0.status, NtStatus::PENDING);
    let (op, _) = c.fake.parked_opens.pop().unwrap();
    let (h, _) = c.call(Request::Logoff);
    assert_eq!(h.status, NtStatus(0));
    assert_eq!(c.fake.cancelled, [op], "LOGOFF cancels the open in flight");
    // The backend's open succeeded anyway: the core closes that pipe.
    c.fake.next += 1;
    let pipe = PipeRef(c.fake.next);
    c.fake.open_pipes.insert(pipe.0, "srvsvc".into());
    c.conn
        .complete(op, Completion::Open(Ok(pipe)), NOW, &mut c.fake)
        .unwrap();
    let r = responses(&c.conn.take_output());
    assert_eq!(r[0].0.status, status::USER_SESSION_DELETED);
    assert_eq!(c.fake.closed, [pipe]);
    assert!(c.fake.open_pipes.is_empty());
}

/// The core's own cost per transceive (no pipe behind it: the fake answers
/// at once). Run: cargo test --release --test smb2_server -- --ignored --nocapture
#[test]
#[ignore]
fn measure_core_transceive() {
    let mut c = Client::login(ServerConfig::default());
    let f = c.open("srvsvc");
    let calls = 200_000u64;
    let input = vec![5u8; 160];
    let mut msgs = Vec::with_capacity(calls as usize);
    for _ in 0..calls {
        let h = c.header(Command::Ioctl);
        msgs.push(frame(&transceive(f, &input, 4280).encode(&h).unwrap()).unwrap());
    }
    let start = std::time::Instant::now();
    let mut out_bytes = 0;
    for m in &msgs {
        c.conn.receive(m, NOW, &mut c.fake).unwrap();
        out_bytes += c.conn.take_output().len();
    }
    let el = start.elapsed();
    assert_eq!(out_bytes as u64, calls * (4 + 64 + 48 + 160));
    eprintln!(
        "core transceive: {calls} calls in {el:?}: {:.0} ns per call (bytes in -> framed response out, 160-byte payload)",
        el.as_nanos() as f64 / calls as f64
    );
}

/// A backend whose transceive reports an error status inside Ok data.
#[test]
fn an_error_status_inside_backend_data_is_an_error_answer() {
    let mut c = Client::login(ServerConfig::default());
    let f = c.open("srvsvc");
    c.fake.go_async = true;
    let h = c.header(Command::Ioctl);
    c.send_raw(&transceive(f, b"x", 10).encode(&h).unwrap())
        .unwrap();
    let r = c.answer_parked(|_| PipeData {
        status: NtStatus::PIPE_BROKEN,
        data: b"ignored".to_vec(),
    });
    assert_eq!(r[0].0.status, NtStatus::PIPE_BROKEN);
    assert!(matches!(r[0].1, Response::Error(_)));
}

#[test]
fn pipe_information_query_and_set() {
    let mut c = Client::login(ServerConfig::default());
    let f = c.open("srvsvc");
    let query = |class: u8, len: u32| {
        Request::QueryInfo(QueryInfoRequest {
            info_type: 1,
            file_info_class: class,
            output_buffer_length: len,
            additional_information: 0,
            flags: 0,
            file_id: f,
            input: vec![],
        })
    };
    // FilePipeInformation: message read mode, queued completion.
    let (h, r) = c.call(query(23, 8));
    assert_eq!(h.status, NtStatus(0));
    assert_eq!(
        r,
        Response::QueryInfo(QueryInfoResponse {
            output: vec![1, 0, 0, 0, 0, 0, 0, 0]
        })
    );
    // FilePipeLocalInformation: 40 bytes, message type, full duplex,
    // connected, the client end.
    let (h, r) = c.call(query(24, 100));
    assert_eq!(h.status, NtStatus(0));
    let Response::QueryInfo(q) = r else { panic!() };
    let words: Vec<u32> = q
        .output
        .chunks(4)
        .map(|w| u32::from_le_bytes(w.try_into().unwrap()))
        .collect();
    assert_eq!(
        (words.len(), words[0], words[1], words[8], words[9]),
        (10, 1, 2, 3, 0)
    );
    let (h, _) = c.call(query(24, 39));
    assert_eq!(
        h.status,
        NtStatus(0xC000_0004),
        "STATUS_INFO_LENGTH_MISMATCH"
    );
    let (h, _) = c.call(query(4, 100));
    assert_eq!(h.status, status::INVALID_INFO_CLASS);
    // SetNamedPipeHandleState(PIPE_READMODE_MESSAGE) as SET_INFO.
    let set = |buf: Vec<u8>| {
        Request::SetInfo(SetInfoRequest {
            info_type: 1,
            file_info_class: 23,
            additional_information: 0,
            file_id: f,
            buffer: buf,
        })
    };
    let (h, r) = c.call(set(vec![1, 0, 0, 0, 0, 0, 0, 0]));
    assert_eq!((h.status, r), (NtStatus(0), Response::SetInfo));
    let (h, _) = c.call(set(vec![2, 0, 0, 0, 0, 0, 0, 0]));
    assert_eq!(h.status, NtStatus::INVALID_PARAMETER);
    let (h, _) = c.call(set(vec![1, 0, 0, 0]));
    assert_eq!(h.status, NtStatus::INVALID_PARAMETER);
}
