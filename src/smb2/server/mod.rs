//! A sans-IO SMB2 server core for IPC$: one [`Connection`] per TCP
//! connection turns bytes in into framed responses out, and drives the
//! pipes through a [`PipeBackend`]. No sockets, no clocks (the caller
//! passes the time), no threads.
//!
//! What it serves: NEGOTIATE (2.0.2 to 3.1.1, and the SMB1 negotiate
//! answered with the SMB2 upgrade), anonymous and guest SESSION_SETUP over
//! SPNEGO/NTLMSSP (no signing), LOGOFF, TREE_CONNECT to IPC$ only,
//! TREE_DISCONNECT, CREATE/CLOSE of pipes, IOCTL (TRANSCEIVE, PEEK, WAIT,
//! VALIDATE_NEGOTIATE_INFO), READ (async when nothing waits; CANCEL
//! cancels it), WRITE, QUERY_INFO and SET_INFO of pipe information, ECHO, compound
//! chains and credits. Limits: [`ServerConfig`].

mod auth;
mod backend;
mod credits;
mod pipe;

pub use backend::{Completion, OpId, PipeBackend, PipeData, PipeRef};

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::task::Poll;

use super::file::{CloseResponse, FileId};
use super::frame::{frame, Unframer};
use super::header::{
    split_compound, Command, Header, HeaderIds, FLAGS_RELATED_OPERATIONS, FLAGS_SERVER_TO_REDIR,
};
use super::message::{ErrorResponse, Request, Response};
use super::negotiate::{
    Smb1Negotiate, DIALECT_202, DIALECT_210, DIALECT_300, DIALECT_302, DIALECT_311,
};
use super::session::{TreeConnectResponse, SHARE_TYPE_PIPE};
use super::status;
use crate::protocol::error::DecodeError;
use crate::protocol::status::NtStatus;
use crate::protocol::userinfo::NetUserInfo;
use credits::SeqWindow;

/// FSCTL_VALIDATE_NEGOTIATE_INFO (3.0 and 3.0.2 clients send it).
pub const FSCTL_VALIDATE_NEGOTIATE_INFO: u32 = 0x0014_0204;
/// FSCTL_DFS_GET_REFERRALS.
pub const FSCTL_DFS_GET_REFERRALS: u32 = 0x0006_0194;
/// FSCTL_DFS_GET_REFERRALS_EX.
pub const FSCTL_DFS_GET_REFERRALS_EX: u32 = 0x0006_01B0;
/// SMB2_GLOBAL_CAP_LARGE_MTU.
const CAP_LARGE_MTU: u32 = 0x0000_0004;
/// STATUS_INFO_LENGTH_MISMATCH.
const INFO_LENGTH_MISMATCH: NtStatus = NtStatus(0xC000_0004);
/// How far (in credits) the window may span past the oldest unused id:
/// a client that leaves an id unused gets no more credits beyond it.
const MAX_SEQ_SPAN_FACTOR: u64 = 4;
/// The uid pipe opens of anonymous and guest sessions carry (nobody).
pub const NOBODY_UID: u32 = 65534;

/// The dialects served, lowest first.
pub const DIALECTS: [u16; 5] = [
    DIALECT_202,
    DIALECT_210,
    DIALECT_300,
    DIALECT_302,
    DIALECT_311,
];

/// Server-wide settings and limits.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// ServerGuid.
    pub server_guid: [u8; 16],
    /// The NetBIOS name in NTLM challenges.
    pub server_name: String,
    /// Sessions per connection.
    pub max_sessions: usize,
    /// Tree connects per session.
    pub max_trees_per_session: usize,
    /// Open pipes per session.
    pub max_opens_per_session: usize,
    /// Outstanding (pending) backend operations per connection.
    pub max_pending: usize,
    /// The most credits a client may hold.
    pub max_credits: u16,
    /// MaxTransactSize, MaxReadSize and MaxWriteSize announced (and enforced).
    pub max_io_bytes: u32,
    /// The largest SMB2 message (a whole compound) accepted.
    pub max_message_bytes: usize,
    /// Which operations that go pending get an interim `STATUS_PENDING`
    /// response at once.
    pub interim: InterimPolicy,
}

/// When an operation the backend left pending is answered with an interim
/// `STATUS_PENDING` (and later asynchronously).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InterimPolicy {
    /// Every pending operation that ends a chain (a backend that answers
    /// most operations at once, pending only what blocks).
    Always,
    /// Only the operations that wait on the pipe's peer: READ and
    /// FSCTL_PIPE_WAIT. Others (CREATE, WRITE, TRANSCEIVE, PEEK) are
    /// answered synchronously when they complete, however late (a backend
    /// whose every operation completes later, like the engine). CANCEL
    /// reaches either kind.
    BlockingOnly,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            server_guid: *b"opipe-smb2-front",
            server_name: "OPIPE".into(),
            max_sessions: 16,
            max_trees_per_session: 16,
            max_opens_per_session: 64,
            max_pending: 64,
            max_credits: 512,
            max_io_bytes: 65536,
            max_message_bytes: 4 * 65536 + 4096,
            interim: InterimPolicy::Always,
        }
    }
}

/// Why a connection was closed by the core.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConnectionError {
    /// Bytes that are not SMB2 (framing, header, compound chain, or an
    /// SMB1 message after the start).
    Malformed(DecodeError),
    /// A request outside the credit window, an SMB1 negotiate that offers
    /// no SMB2 dialect, a second NEGOTIATE, a VALIDATE_NEGOTIATE_INFO that
    /// does not match (their error response is still in the output).
    Protocol(&'static str),
    /// The connection was already closed.
    Closed,
}

#[derive(Debug)]
enum SessionState {
    /// CHALLENGE sent; the AUTHENTICATE is awaited. `spnego`: whether the
    /// client wraps NTLMSSP in SPNEGO.
    Challenged {
        spnego: bool,
    },
    Valid {
        user: NetUserInfo,
    },
}

#[derive(Debug)]
struct Open {
    pipe: PipeRef,
    tree_id: u32,
}

#[derive(Debug)]
struct Session {
    state: SessionState,
    trees: Vec<u32>,
    opens: HashMap<FileId, Open>,
}

/// What a pending backend operation will answer.
#[derive(Clone, Copy, Debug)]
enum Kind {
    Open { session_id: u64, tree_id: u32 },
    Ioctl { ctl_code: u32, file_id: FileId },
    Read,
    Write,
}

/// The state of a compound chain being answered.
#[derive(Debug, Default)]
struct Chain {
    /// The whole message and where each part lies in it.
    msg: Vec<u8>,
    parts: Vec<std::ops::Range<usize>>,
    next: usize,
    responses: Vec<Vec<u8>>,
    /// Session, tree and file of the part before (related operations).
    session_id: u64,
    tree_id: u32,
    file_id: Option<FileId>,
    failed: Option<NtStatus>,
}

#[derive(Debug)]
struct Pending {
    header: Header,
    kind: Kind,
    /// Set when an interim response went out (the answer is async).
    async_id: Option<u64>,
    /// The rest of the chain, when the op was not its last part.
    chain: Option<Chain>,
}

enum Step {
    Reply(NtStatus, Response),
    Backend(Kind, OpId, Poll<Completion>),
    /// CANCEL: no response.
    Silent,
}

/// One client connection.
#[derive(Debug)]
pub struct Connection {
    cfg: ServerConfig,
    client: SocketAddr,
    unframer: Unframer,
    out: Vec<u8>,
    closed: bool,
    dialect: Option<u16>,
    client_guid: [u8; 16],
    client_security_mode: u16,
    client_capabilities: u32,
    smb1_seen: bool,
    /// The MessageIds granted and used (MS-SMB2's command sequence window).
    seq: SeqWindow,
    sessions: BTreeMap<u64, Session>,
    next_session: u64,
    next_tree: u32,
    next_file: u64,
    next_op: u64,
    next_async: u64,
    pending: BTreeMap<OpId, Pending>,
    seed: u64,
    /// An id the response being built assigns (SESSION_SETUP, TREE_CONNECT).
    new_session: Option<u64>,
    new_tree: Option<u32>,
    /// Set by a request that ends the connection once it is answered.
    close_after: Option<&'static str>,
    /// Sessions that completed their SESSION_SETUP.
    sessions_started: u64,
}

/// The challenge and salt bytes, volatile file ids and session ids: a hash
/// of the connection's seed (no secret rides on them: anonymous and guest
/// logins check no response).
fn mix(x: u64) -> u64 {
    crate::rng::SplitMix64::mix(x)
}

impl Connection {
    /// A connection from `client`; `seed` varies the server challenge and
    /// preauth salt, and offsets session ids so that they differ between
    /// connections (give each connection its own).
    pub fn new(cfg: ServerConfig, client: SocketAddr, seed: u64) -> Connection {
        let max = cfg.max_message_bytes;
        Connection {
            cfg,
            client,
            unframer: Unframer::new(max),
            out: Vec::new(),
            closed: false,
            dialect: None,
            client_guid: [0; 16],
            client_security_mode: 0,
            client_capabilities: 0,
            smb1_seen: false,
            seq: SeqWindow::new(),
            sessions: BTreeMap::new(),
            next_session: (mix(seed) & 0x0000_FFFF_FFFF_0000) | 1,
            next_tree: 1,
            next_file: 1,
            next_op: 1,
            next_async: 1,
            pending: BTreeMap::new(),
            seed,
            new_session: None,
            new_tree: None,
            close_after: None,
            sessions_started: 0,
        }
    }

    /// Framed bytes to send, taken.
    pub fn take_output(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.out)
    }

    /// Whether the core closed the connection (send what is left, then close).
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// Backend operations not yet completed.
    pub fn pending_ops(&self) -> usize {
        self.pending.len()
    }

    /// Sessions set up on this connection so far (anonymous or guest).
    pub fn sessions_started(&self) -> u64 {
        self.sessions_started
    }

    fn interim_now(&self, kind: Kind) -> bool {
        match self.cfg.interim {
            InterimPolicy::Always => true,
            InterimPolicy::BlockingOnly => matches!(
                kind,
                Kind::Read
                    | Kind::Ioctl {
                        ctl_code: super::file::FSCTL_PIPE_WAIT,
                        ..
                    }
            ),
        }
    }

    /// Bytes from the client. `now` is the time as a FILETIME (100 ns since
    /// 1601). On an error the connection is closed: its pipes are closed
    /// and its sessions logged off through `backend`, and the caller drops
    /// the socket.
    pub fn receive(
        &mut self,
        bytes: &[u8],
        now: u64,
        backend: &mut dyn PipeBackend,
    ) -> Result<(), ConnectionError> {
        if self.closed {
            return Err(ConnectionError::Closed);
        }
        self.unframer.push(bytes);
        loop {
            let msg = match self.unframer.next_message() {
                Ok(Some(m)) => m.to_vec(),
                Ok(None) => break,
                Err(e) => return self.fail(backend, ConnectionError::Malformed(e)),
            };
            if let Err(e) = self.message(msg, now, backend) {
                return self.fail(backend, e);
            }
            if let Some(why) = self.close_after.take() {
                return self.fail(backend, ConnectionError::Protocol(why));
            }
        }
        self.unframer.compact();
        Ok(())
    }

    /// Ends the connection (the client went away): cancels what is pending,
    /// closes the pipes, logs the sessions off.
    pub fn shutdown(&mut self, backend: &mut dyn PipeBackend) {
        self.closed = true;
        let ops: Vec<OpId> = self.pending.keys().copied().collect();
        for op in ops {
            backend.cancel(op);
        }
        let ids: Vec<u64> = self.sessions.keys().copied().collect();
        for id in ids {
            self.end_session(id, backend);
        }
    }

    fn fail(
        &mut self,
        backend: &mut dyn PipeBackend,
        e: ConnectionError,
    ) -> Result<(), ConnectionError> {
        tracing::debug!(client = %self.client, error = ?e, "smb2: closing connection");
        self.shutdown(backend);
        Err(e)
    }

    fn message(
        &mut self,
        msg: Vec<u8>,
        now: u64,
        backend: &mut dyn PipeBackend,
    ) -> Result<(), ConnectionError> {
        if Smb1Negotiate::is_smb1(&msg) {
            return self.smb1_negotiate(&msg, now);
        }
        let base = msg.as_ptr() as usize;
        let parts = split_compound(&msg)
            .map_err(ConnectionError::Malformed)?
            .into_iter()
            .map(|p| {
                let start = p.as_ptr() as usize - base;
                start..start + p.len()
            })
            .collect();
        let chain = Chain {
            msg,
            parts,
            ..Chain::default()
        };
        self.run_chain(chain, now, backend)
    }

    fn run_chain(
        &mut self,
        mut chain: Chain,
        now: u64,
        backend: &mut dyn PipeBackend,
    ) -> Result<(), ConnectionError> {
        while chain.next < chain.parts.len() {
            let idx = chain.next;
            chain.next += 1;
            let last = chain.next == chain.parts.len();
            let range = chain.parts[idx].clone();
            let Some(part) = chain.msg.get(range) else {
                return Err(ConnectionError::Protocol("compound part out of range"));
            };
            // The body is decoded (copying what it keeps) before anything
            // else borrows the chain.
            let decoded = Request::decode(part);
            let mut header = Header::decode(part).map_err(ConnectionError::Malformed)?;
            if header.is_response() {
                return Err(ConnectionError::Protocol("a response from the client"));
            }
            self.check_credits(&header)?;
            if header.is_related() && idx > 0 {
                header.session_id = chain.session_id;
                if let HeaderIds::Sync { process_id, .. } = header.ids {
                    header.ids = HeaderIds::Sync {
                        process_id,
                        tree_id: chain.tree_id,
                    };
                }
            }
            let step = if let (true, Some(st)) = (header.is_related(), chain.failed) {
                Step::Reply(st, error_body())
            } else {
                match decoded {
                    Ok((_, mut req)) => {
                        if header.is_related() {
                            relate_file_id(&mut req, chain.file_id);
                        }
                        self.dispatch(&header, req, now, backend)
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "smb2: undecodable request body");
                        Step::Reply(NtStatus::INVALID_PARAMETER, error_body())
                    }
                }
            };
            match step {
                Step::Silent => {}
                Step::Reply(st, resp) => self.add_response(&mut chain, &header, st, resp),
                Step::Backend(kind, _op, Poll::Ready(c)) => {
                    let (st, resp) = self.finish(kind, c, backend);
                    self.add_response(&mut chain, &header, st, resp);
                }
                Step::Backend(kind, op, Poll::Pending) => {
                    if last && self.interim_now(kind) {
                        // Interim STATUS_PENDING, then the answer later.
                        let async_id = self.next_async;
                        self.next_async += 1;
                        let mut h = self.response_header(&header, NtStatus::PENDING);
                        h.ids = HeaderIds::Async { async_id };
                        h.credits = self.grant(&header);
                        h.credit_charge = header.credit_charge;
                        let interim =
                            self.encode_response(&h, &Response::Error(ErrorResponse::default()));
                        chain.responses.push(interim);
                        self.emit_parts(std::mem::take(&mut chain.responses));
                        self.pending.insert(
                            op,
                            Pending {
                                header,
                                kind,
                                async_id: Some(async_id),
                                chain: None,
                            },
                        );
                    } else {
                        self.pending.insert(
                            op,
                            Pending {
                                header,
                                kind,
                                async_id: None,
                                chain: Some(chain),
                            },
                        );
                    }
                    return Ok(());
                }
            }
        }
        if !chain.responses.is_empty() {
            self.emit_parts(std::mem::take(&mut chain.responses));
        }
        Ok(())
    }

    /// The result of a backend operation that returned `Poll::Pending`.
    pub fn complete(
        &mut self,
        op: OpId,
        completion: Completion,
        now: u64,
        backend: &mut dyn PipeBackend,
    ) -> Result<(), ConnectionError> {
        let Some(p) = self.pending.remove(&op) else {
            tracing::debug!(?op, "smb2: completion of an unknown operation");
            return Ok(());
        };
        if self.closed {
            // Late completions after shutdown: close what they opened.
            if let Completion::Open(Ok(pipe)) = completion {
                backend.close(pipe);
            }
            return Ok(());
        }
        let (st, resp) = self.finish(p.kind, completion, backend);
        match (p.async_id, p.chain) {
            (Some(async_id), _) => {
                let mut h = self.response_header(&p.header, st);
                h.ids = HeaderIds::Async { async_id };
                h.credits = 0;
                let bytes = self.encode_response(&h, &resp);
                self.emit_parts(vec![bytes]);
                Ok(())
            }
            (None, Some(mut chain)) => {
                self.add_response(&mut chain, &p.header, st, resp);
                match self.run_chain(chain, now, backend) {
                    Ok(()) => match self.close_after.take() {
                        Some(why) => self.fail(backend, ConnectionError::Protocol(why)),
                        None => Ok(()),
                    },
                    Err(e) => self.fail(backend, e),
                }
            }
            (None, None) => Ok(()),
        }
    }

    fn check_credits(&mut self, h: &Header) -> Result<(), ConnectionError> {
        if h.command == Command::Cancel as u16 {
            return Ok(());
        }
        let charge = u64::from(h.credit_charge.max(1));
        self.seq
            .consume(h.message_id, charge)
            .map_err(|e| ConnectionError::Protocol(e.reason()))
    }

    /// Credits granted on a response to `req`; raises the window.
    fn grant(&mut self, req: &Header) -> u16 {
        if req.command == Command::Cancel as u16 {
            return 0;
        }
        let max = self.cfg.max_credits;
        self.seq
            .grant(req.credits, max, MAX_SEQ_SPAN_FACTOR * u64::from(max))
    }

    fn response_header(&self, req: &Header, st: NtStatus) -> Header {
        Header {
            credit_charge: req.credit_charge,
            status: st,
            command: req.command,
            credits: 0,
            flags: FLAGS_SERVER_TO_REDIR | (req.flags & FLAGS_RELATED_OPERATIONS),
            next_command: 0,
            message_id: req.message_id,
            ids: req.ids,
            session_id: req.session_id,
            signature: [0; 16],
        }
    }

    fn add_response(&mut self, chain: &mut Chain, req: &Header, st: NtStatus, resp: Response) {
        let mut h = self.response_header(req, st);
        h.credits = self.grant(req);
        // New ids a response makes (session setup, tree connect).
        if let Some(id) = self.new_session.take() {
            h.session_id = id;
        }
        if let Some(tree_id) = self.new_tree.take() {
            if let HeaderIds::Sync { process_id, .. } = h.ids {
                h.ids = HeaderIds::Sync {
                    process_id,
                    tree_id,
                };
            }
        }
        chain.session_id = h.session_id;
        chain.tree_id = h.tree_id();
        if let Response::Create(c) = &resp {
            chain.file_id = Some(c.file_id);
        }
        if st.is_error()
            && !(req.command == Command::SessionSetup as u16
                && st == status::MORE_PROCESSING_REQUIRED)
        {
            chain.failed = Some(st);
        }
        let bytes = self.encode_response(&h, &resp);
        chain.responses.push(bytes);
    }

    fn encode_response(&self, h: &Header, resp: &Response) -> Vec<u8> {
        match resp.encode(h) {
            Ok(b) => b,
            Err(e) => {
                // Only an oversized body gets here (the limits keep it
                // out); answer with the error body instead.
                tracing::warn!(error = %e, "smb2: response did not encode");
                let h = Header {
                    status: NtStatus::INTERNAL_ERROR,
                    ..h.clone()
                };
                Response::Error(ErrorResponse::default())
                    .encode(&h)
                    .unwrap_or_default()
            }
        }
    }

    /// Joins response parts into one compound message (8-aligned,
    /// NextCommand set) and frames it.
    fn emit_parts(&mut self, parts: Vec<Vec<u8>>) {
        let n = parts.len();
        if let [one] = parts.as_slice() {
            match super::frame::frame_header(one.len()) {
                Ok(h) => {
                    self.out.extend_from_slice(&h);
                    self.out.extend_from_slice(one);
                }
                Err(e) => tracing::warn!(error = %e, "smb2: response too long to frame"),
            }
            return;
        }
        let mut msg = Vec::new();
        for (i, mut p) in parts.into_iter().enumerate() {
            if i + 1 < n {
                let len = p.len().div_ceil(8) * 8;
                p.resize(len, 0);
                p[20..24].copy_from_slice(&(len as u32).to_le_bytes());
            }
            msg.extend_from_slice(&p);
        }
        match frame(&msg) {
            Ok(f) => self.out.extend_from_slice(&f),
            Err(e) => tracing::warn!(error = %e, "smb2: response too long to frame"),
        }
    }

    // ---- dispatch ------------------------------------------------------

    fn dispatch(
        &mut self,
        h: &Header,
        req: Request,
        now: u64,
        backend: &mut dyn PipeBackend,
    ) -> Step {
        if self.dialect.is_none() && !matches!(req, Request::Negotiate(_)) {
            return Step::Reply(NtStatus::ACCESS_DENIED, error_body());
        }
        match req {
            Request::Negotiate(n) => self.negotiate(n, now),
            Request::SessionSetup(s) => self.session_setup(h, s, now),
            Request::Echo => Step::Reply(NtStatus(0), Response::Echo),
            Request::Cancel => {
                self.cancel(h, backend);
                Step::Silent
            }
            Request::Logoff => match self.valid_session(h.session_id) {
                Ok(_) => {
                    self.end_session(h.session_id, backend);
                    Step::Reply(NtStatus(0), Response::Logoff)
                }
                Err(st) => Step::Reply(st, error_body()),
            },
            Request::TreeConnect(t) => self.tree_connect(h, t.share()),
            Request::TreeDisconnect => match self.valid_tree(h) {
                Ok(()) => {
                    let tree_id = h.tree_id();
                    if let Some(s) = self.sessions.get_mut(&h.session_id) {
                        s.trees.retain(|t| *t != tree_id);
                        let gone: Vec<FileId> = s
                            .opens
                            .iter()
                            .filter(|(_, o)| o.tree_id == tree_id)
                            .map(|(id, _)| *id)
                            .collect();
                        for id in gone {
                            if let Some(o) = s.opens.remove(&id) {
                                backend.close(o.pipe);
                            }
                        }
                    }
                    Step::Reply(NtStatus(0), Response::TreeDisconnect)
                }
                Err(st) => Step::Reply(st, error_body()),
            },
            Request::Create(c) => {
                if let Err(st) = self.valid_tree(h) {
                    return Step::Reply(st, error_body());
                }
                let Some(Session {
                    state: SessionState::Valid { user },
                    opens,
                    ..
                }) = self.sessions.get(&h.session_id)
                else {
                    return Step::Reply(status::USER_SESSION_DELETED, error_body());
                };
                if opens.len() >= self.cfg.max_opens_per_session {
                    return Step::Reply(NtStatus::TOO_MANY_OPENED_FILES, error_body());
                }
                if c.name.is_empty() {
                    return Step::Reply(NtStatus::OBJECT_NAME_INVALID, error_body());
                }
                let user = user.clone();
                let kind = Kind::Open {
                    session_id: h.session_id,
                    tree_id: h.tree_id(),
                };
                self.start(
                    kind,
                    |op, b| b.open(op, &c.name, &user).map(Completion::Open),
                    backend,
                )
            }
            Request::Close(c) => match self.take_open(h, c.file_id) {
                Ok(o) => {
                    backend.close(o.pipe);
                    Step::Reply(NtStatus(0), Response::Close(CloseResponse::default()))
                }
                Err(st) => Step::Reply(st, error_body()),
            },
            Request::Ioctl(io) => self.ioctl(h, io, backend),
            Request::Read(r) => {
                let pipe = match self.open_pipe(h, r.file_id) {
                    Ok(p) => p,
                    Err(st) => return Step::Reply(st, error_body()),
                };
                if r.length > self.cfg.max_io_bytes {
                    return Step::Reply(NtStatus::INVALID_PARAMETER, error_body());
                }
                let max = r.length as usize;
                self.start(
                    Kind::Read,
                    |op, b| b.read(op, pipe, max).map(Completion::Data),
                    backend,
                )
            }
            Request::Write(w) => {
                let pipe = match self.open_pipe(h, w.file_id) {
                    Ok(p) => p,
                    Err(st) => return Step::Reply(st, error_body()),
                };
                if w.data.len() > self.cfg.max_io_bytes as usize {
                    return Step::Reply(NtStatus::INVALID_PARAMETER, error_body());
                }
                self.start(
                    Kind::Write,
                    |op, b| b.write(op, pipe, w.data).map(Completion::Written),
                    backend,
                )
            }
            Request::QueryInfo(q) => match self.open_pipe(h, q.file_id) {
                Ok(_) => pipe::query_info(q.info_type, q.file_info_class, q.output_buffer_length),
                Err(st) => Step::Reply(st, error_body()),
            },
            Request::SetInfo(q) => match self.open_pipe(h, q.file_id) {
                Ok(_) => pipe::set_info(q.info_type, q.file_info_class, &q.buffer),
                Err(st) => Step::Reply(st, error_body()),
            },
            Request::Other(_) => Step::Reply(NtStatus::NOT_SUPPORTED, error_body()),
        }
    }

    fn tree_connect(&mut self, h: &Header, share: &str) -> Step {
        let max = self.cfg.max_trees_per_session;
        let sess = match self.sessions.get_mut(&h.session_id) {
            Some(
                s @ Session {
                    state: SessionState::Valid { .. },
                    ..
                },
            ) => s,
            _ => return Step::Reply(status::USER_SESSION_DELETED, error_body()),
        };
        if !share.eq_ignore_ascii_case("IPC$") {
            return Step::Reply(status::BAD_NETWORK_NAME, error_body());
        }
        if sess.trees.len() >= max {
            return Step::Reply(status::REQUEST_NOT_ACCEPTED, error_body());
        }
        let id = self.next_tree;
        self.next_tree = self.next_tree.wrapping_add(1).max(1);
        sess.trees.push(id);
        self.new_tree = Some(id);
        Step::Reply(
            NtStatus(0),
            Response::TreeConnect(TreeConnectResponse {
                share_type: SHARE_TYPE_PIPE,
                share_flags: 0,
                capabilities: 0,
                maximal_access: 0x001F_00A9,
            }),
        )
    }

    fn cancel(&mut self, h: &Header, backend: &mut dyn PipeBackend) {
        let target = self.pending.iter().find(|(_, p)| match h.async_id() {
            Some(a) => p.async_id == Some(a),
            None => p.header.message_id == h.message_id && p.header.session_id == h.session_id,
        });
        if let Some((op, _)) = target {
            backend.cancel(*op);
        }
    }

    fn end_session(&mut self, id: u64, backend: &mut dyn PipeBackend) {
        let ops: Vec<OpId> = self
            .pending
            .iter()
            .filter(|(_, p)| p.header.session_id == id)
            .map(|(op, _)| *op)
            .collect();
        for op in ops {
            backend.cancel(op);
        }
        if let Some(s) = self.sessions.remove(&id) {
            for (_, o) in s.opens {
                backend.close(o.pipe);
            }
            if let SessionState::Valid { .. } = s.state {
                backend.logoff(id);
            }
        }
    }

    fn valid_session(&self, id: u64) -> Result<&Session, NtStatus> {
        match self.sessions.get(&id) {
            Some(
                s @ Session {
                    state: SessionState::Valid { .. },
                    ..
                },
            ) => Ok(s),
            _ => Err(status::USER_SESSION_DELETED),
        }
    }

    fn valid_tree(&self, h: &Header) -> Result<(), NtStatus> {
        let s = self.valid_session(h.session_id)?;
        if s.trees.contains(&h.tree_id()) {
            Ok(())
        } else {
            Err(status::NETWORK_NAME_DELETED)
        }
    }

    fn open_pipe(&self, h: &Header, file_id: FileId) -> Result<PipeRef, NtStatus> {
        let s = self.valid_session(h.session_id)?;
        match s.opens.get(&file_id) {
            Some(o) => Ok(o.pipe),
            None => Err(status::FILE_CLOSED),
        }
    }

    fn take_open(&mut self, h: &Header, file_id: FileId) -> Result<Open, NtStatus> {
        self.valid_session(h.session_id)?;
        self.sessions
            .get_mut(&h.session_id)
            .and_then(|s| s.opens.remove(&file_id))
            .ok_or(status::FILE_CLOSED)
    }
}

fn error_body() -> Response {
    Response::Error(ErrorResponse::default())
}

/// A failure status as the client sees it: success or warning values from
/// a backend error are turned into an internal error.
fn error_status(st: NtStatus) -> NtStatus {
    if st.is_error() {
        st
    } else {
        NtStatus::INTERNAL_ERROR
    }
}

fn relate_file_id(req: &mut Request, prev: Option<FileId>) {
    let id = match req {
        Request::Close(r) => &mut r.file_id,
        Request::Read(r) => &mut r.file_id,
        Request::Write(r) => &mut r.file_id,
        Request::Ioctl(r) => &mut r.file_id,
        Request::QueryInfo(r) => &mut r.file_id,
        Request::SetInfo(r) => &mut r.file_id,
        _ => return,
    };
    if *id == FileId::RELATED {
        if let Some(p) = prev {
            *id = p;
        }
    }
}
