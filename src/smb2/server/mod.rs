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
mod chain;
mod credits;
mod dispatch;
mod pipe;

pub use backend::{Completion, OpId, PipeBackend, PipeData, PipeRef};

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::task::Poll;

use super::file::FileId;
use super::frame::Unframer;
use super::header::Header;
use super::message::{ErrorResponse, Response};
use super::negotiate::{DIALECT_202, DIALECT_210, DIALECT_300, DIALECT_302, DIALECT_311};
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
