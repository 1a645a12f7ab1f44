//! The SMB2 load client of `opipe bench --smb2`: one TCP connection per
//! [`Connection`], logged in and bound once, then one
//! `FSCTL_PIPE_TRANSCEIVE` of `NetrServerGetInfo` level 101 at a time,
//! each reply decoded and its server name checked.
//!
//! Setup, in the order a real client sends it (`rpcclient -U%`):
//!
//! 1. NEGOTIATE offering 2.0.2 to 3.1.1 (3.1.1 with the preauth integrity
//!    context; SecurityMode "signing enabled", nothing required);
//! 2. SESSION_SETUP twice: SPNEGO NegTokenInit carrying an NTLMSSP
//!    NEGOTIATE, then NegTokenResp carrying an anonymous AUTHENTICATE
//!    (no user, no NT response, LM response one zero byte: MS-NLMP
//!    3.2.5.1.2); nothing is signed, no key is derived;
//! 3. TREE_CONNECT `\\<ip>\IPC$`;
//! 4. CREATE `srvsvc`;
//! 5. the DCE/RPC bind to SRVSVC 3.0 (NDR), itself one transceive.
//!
//! The loop then sends a request encoded once at setup, with only its
//! MessageId and DCE/RPC call_id patched in place, so the client's cost
//! per call is two system calls, one header and one stub decode: what is
//! measured is the server.
//!
//! Every message read is bounded ([`MAX_MESSAGE_BYTES`]); nothing a server
//! sends can make the client panic.

use std::fmt;
use std::io;
use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use opipe::protocol::dcerpc::{self, NDR_SYNTAX, SRVSVC_SYNTAX};
use opipe::protocol::srvsvc;
use opipe::protocol::status::NtStatus;
use opipe::smb2::file::{CreateRequest, IoctlRequest, FSCTL_PIPE_TRANSCEIVE, IOCTL_IS_FSCTL};
use opipe::smb2::frame::{frame, frame_len, FRAME_HEADER_LEN};
use opipe::smb2::header::{HeaderIds, HEADER_LEN};
use opipe::smb2::negotiate::{
    NegotiateContext, NegotiateRequest, DIALECT_202, DIALECT_210, DIALECT_300, DIALECT_302,
    DIALECT_311, HASH_SHA512, SIGNING_ENABLED,
};
use opipe::smb2::ntlmssp;
use opipe::smb2::session::{SessionSetupRequest, TreeConnectRequest, SHARE_TYPE_PIPE};
use opipe::smb2::spnego::{NegTokenInit, NegTokenResp, SpnegoToken, OID_NTLMSSP};
use opipe::smb2::status::MORE_PROCESSING_REQUIRED;
use opipe::smb2::{Command, Header, Request, Response};

/// The largest message the client accepts from a server.
pub const MAX_MESSAGE_BYTES: usize = 1 << 20;
/// MaxOutputResponse of every transceive (what `rpcclient` asks).
pub const MAX_OUT_BYTES: u32 = dcerpc::DEFAULT_MAX_FRAG as u32;
/// Bytes read from the socket at once (a response is far smaller).
const RX_BUFFER_BYTES: usize = 16 * 1024;
/// Credits asked in every request: enough that one request in flight
/// never runs out, whatever the server grants back.
const CREDITS_ASKED: u16 = 8;
/// Interim (STATUS_PENDING) responses accepted before one final response.
const MAX_INTERIM: usize = 4;
/// The pipe every connection opens.
pub const PIPE: &str = "srvsvc";
/// The dialects offered, lowest first.
const DIALECTS: [u16; 5] = [
    DIALECT_202,
    DIALECT_210,
    DIALECT_300,
    DIALECT_302,
    DIALECT_311,
];
/// DesiredAccess of the CREATE (read/write data, attributes, EAs, sync:
/// what Samba's client asks for a pipe).
const PIPE_ACCESS: u32 = 0x0012_019F;
/// ImpersonationLevel: Impersonation.
const IMPERSONATION: u32 = 2;
/// ShareAccess: read and write.
const SHARE_READ_WRITE: u32 = 0x0000_0003;
/// CreateDisposition: FILE_OPEN.
const FILE_OPEN: u32 = 1;

/// Why a connection failed: what it was doing and what went wrong.
#[derive(Debug)]
pub struct ClientError {
    /// The step (`"NEGOTIATE"`, `"transceive"`, ...).
    pub step: &'static str,
    /// What happened.
    pub what: String,
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.step, self.what)
    }
}

impl std::error::Error for ClientError {}

fn fail(step: &'static str, what: impl fmt::Display) -> ClientError {
    ClientError {
        step,
        what: what.to_string(),
    }
}

/// What every connection is pointed at and checks.
#[derive(Debug, Clone)]
pub struct Target {
    /// The SMB server's address.
    pub addr: SocketAddr,
    /// The server name each NetrServerGetInfo reply must carry (what the
    /// pipe service behind the SMB server is configured with).
    pub server_name: String,
}

/// What a finished setup learnt about the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Negotiated {
    /// The dialect the server chose.
    pub dialect: u16,
    /// SessionFlags of the session (0x2: anonymous, 0x1: guest).
    pub session_flags: u16,
}

/// One logged-in connection with `srvsvc` open and bound.
#[derive(Debug)]
pub struct Connection {
    stream: TcpStream,
    /// The next MessageId.
    message_id: u64,
    /// Credits granted and not yet used.
    credits: u64,
    /// CreditCharge of a request (0 in 2.0.2, else 1).
    charge: u16,
    session_id: u64,
    tree_id: u32,
    file_id: opipe::smb2::FileId,
    /// The framed transceive request, patched per call.
    call: Vec<u8>,
    /// Where the DCE/RPC PDU starts in `call`.
    pdu_at: usize,
    call_id: u32,
    /// What was read from the socket: the last message read (one
    /// response, framing header stripped) is `rx[msg_at..msg_end]`, and
    /// `rx[msg_end..rx_end]` what came after it.
    rx: Vec<u8>,
    msg_at: usize,
    msg_end: usize,
    rx_end: usize,
    expect_name: String,
    negotiated: Negotiated,
}

impl Connection {
    /// Connects to `target` and runs the whole setup.
    pub async fn open(target: &Target) -> Result<Connection, ClientError> {
        let stream = TcpStream::connect(target.addr)
            .await
            .map_err(|e| fail("connect", format!("{}: {e}", target.addr)))?;
        stream
            .set_nodelay(true)
            .map_err(|e| fail("connect", format!("TCP_NODELAY: {e}")))?;
        let mut c = Connection::on(stream, target);
        c.negotiate().await?;
        c.session_setup().await?;
        c.tree_connect(target.addr).await?;
        c.create().await?;
        c.bind().await?;
        c.build_call()?;
        Ok(c)
    }

    /// A connection on `stream` that has not negotiated anything yet.
    fn on(stream: TcpStream, target: &Target) -> Connection {
        Connection {
            stream,
            message_id: 0,
            credits: 1,
            charge: 0,
            session_id: 0,
            tree_id: 0,
            file_id: opipe::smb2::FileId::default(),
            call: Vec::new(),
            pdu_at: 0,
            call_id: 1,
            rx: vec![0; RX_BUFFER_BYTES],
            msg_at: 0,
            msg_end: 0,
            rx_end: 0,
            expect_name: target.server_name.clone(),
            negotiated: Negotiated {
                dialect: 0,
                session_flags: 0,
            },
        }
    }

    /// What the setup negotiated.
    pub fn negotiated(&self) -> Negotiated {
        self.negotiated
    }

    /// One NetrServerGetInfo level 101 through FSCTL_PIPE_TRANSCEIVE,
    /// its reply decoded and its server name checked.
    pub async fn call(&mut self) -> Result<(), ClientError> {
        const STEP: &str = "transceive";
        self.call_id = self.call_id.wrapping_add(1).max(2);
        let mid = self.take_message_id(STEP)?;
        let at = FRAME_HEADER_LEN + 24;
        self.call[at..at + 8].copy_from_slice(&mid.to_le_bytes());
        let at = self.pdu_at + 12;
        self.call[at..at + 4].copy_from_slice(&self.call_id.to_le_bytes());
        self.stream
            .write_all(&self.call)
            .await
            .map_err(|e| fail(STEP, e))?;
        let header = self.read_response(STEP, mid).await?;
        let pdu = self.ioctl_output(STEP, &header)?;
        check_info_reply(&pdu, self.call_id, &self.expect_name).map_err(|e| fail(STEP, e))
    }

    fn take_message_id(&mut self, step: &'static str) -> Result<u64, ClientError> {
        let cost = u64::from(self.charge.max(1));
        if self.credits < cost {
            return Err(fail(step, "no credits left (the server granted none)"));
        }
        self.credits -= cost;
        let mid = self.message_id;
        self.message_id += cost;
        Ok(mid)
    }

    fn header(&self, command: Command, message_id: u64) -> Header {
        let mut h = Header::request(command);
        h.credit_charge = self.charge;
        h.credits = CREDITS_ASKED;
        h.message_id = message_id;
        h.session_id = self.session_id;
        h.ids = HeaderIds::Sync {
            process_id: 0xFEFF,
            tree_id: self.tree_id,
        };
        h
    }

    /// Sends `body` as one request and reads its final response into
    /// `self.rx`; returns the response's header.
    async fn request(&mut self, step: &'static str, body: Request) -> Result<Header, ClientError> {
        let mid = self.take_message_id(step)?;
        let command = Command::from_u16(body.command())
            .ok_or_else(|| fail(step, "request of an unknown command"))?;
        let msg = body
            .encode(&self.header(command, mid))
            .map_err(|e| fail(step, format!("encoding: {e}")))?;
        let framed = frame(&msg).map_err(|e| fail(step, format!("framing: {e}")))?;
        self.stream
            .write_all(&framed)
            .await
            .map_err(|e| fail(step, e))?;
        self.read_response(step, mid).await
    }

    /// Reads until the final response to `message_id` (skipping interim
    /// STATUS_PENDING ones), leaves it in `self.rx`, counts its credits.
    async fn read_response(
        &mut self,
        step: &'static str,
        message_id: u64,
    ) -> Result<Header, ClientError> {
        for _ in 0..=MAX_INTERIM {
            self.next_message(step).await?;
            let h = Header::decode(self.message()).map_err(|e| fail(step, e))?;
            if !h.is_response() || h.next_command != 0 {
                return Err(fail(step, "not a single response"));
            }
            if h.message_id != message_id {
                return Err(fail(
                    step,
                    format!(
                        "response to MessageId {} while waiting for {message_id}",
                        h.message_id
                    ),
                ));
            }
            self.credits += u64::from(h.credits);
            let interim = h.status == NtStatus::PENDING && h.async_id().is_some();
            if !interim {
                return Ok(h);
            }
        }
        Err(fail(step, "too many interim responses"))
    }

    /// The last message read.
    fn message(&self) -> &[u8] {
        &self.rx[self.msg_at..self.msg_end]
    }

    /// Reads the next message: from what is buffered if it is all there,
    /// else with as few reads as it takes (usually one: a response
    /// arrives whole). A message longer than the buffer grows it, up to
    /// [`MAX_MESSAGE_BYTES`].
    async fn next_message(&mut self, step: &'static str) -> Result<(), ClientError> {
        let mut at = self.msg_end;
        loop {
            let have = self.rx_end - at;
            if have >= FRAME_HEADER_LEN {
                let fh = [
                    self.rx[at],
                    self.rx[at + 1],
                    self.rx[at + 2],
                    self.rx[at + 3],
                ];
                let len = frame_len(fh).map_err(|e| fail(step, e))?;
                if !(HEADER_LEN..=MAX_MESSAGE_BYTES).contains(&len) {
                    return Err(fail(
                        step,
                        format!(
                            "a {len}-byte message (from {HEADER_LEN} to \
                             {MAX_MESSAGE_BYTES} accepted)"
                        ),
                    ));
                }
                if have >= FRAME_HEADER_LEN + len {
                    self.msg_at = at + FRAME_HEADER_LEN;
                    self.msg_end = self.msg_at + len;
                    return Ok(());
                }
                if self.rx.len() < FRAME_HEADER_LEN + len {
                    self.rx.resize(FRAME_HEADER_LEN + len, 0);
                }
            }
            // Keep the partial message at the front, then read more.
            if at > 0 {
                self.rx.copy_within(at..self.rx_end, 0);
                self.rx_end -= at;
                at = 0;
                self.msg_at = 0;
                self.msg_end = 0;
            }
            let n = self
                .stream
                .read(&mut self.rx[self.rx_end..])
                .await
                .map_err(|e| fail(step, read_error(e)))?;
            if n == 0 {
                return Err(fail(step, "the server closed the connection"));
            }
            self.rx_end += n;
        }
    }

    /// The decoded response in `self.rx`, which must succeed (or carry
    /// `also_ok`).
    fn response(
        &self,
        step: &'static str,
        header: &Header,
        also_ok: Option<NtStatus>,
    ) -> Result<Response, ClientError> {
        if header.status.0 != 0 && Some(header.status) != also_ok {
            return Err(fail(step, format!("answered {}", header.status)));
        }
        let (_, body) = Response::decode(self.message()).map_err(|e| fail(step, e))?;
        Ok(body)
    }

    async fn negotiate(&mut self) -> Result<(), ClientError> {
        const STEP: &str = "NEGOTIATE";
        let mut salt = [0u8; 32];
        let mut rng = opipe::rng::SplitMix64::new(salt_seed());
        for chunk in salt.chunks_mut(8) {
            chunk.copy_from_slice(&rng.next_u64().to_le_bytes());
        }
        let mut client_guid = [0u8; 16];
        client_guid[..8].copy_from_slice(&rng.next_u64().to_le_bytes());
        client_guid[8..].copy_from_slice(&rng.next_u64().to_le_bytes());
        let req = NegotiateRequest {
            security_mode: SIGNING_ENABLED,
            capabilities: 0,
            client_guid,
            dialects: DIALECTS.to_vec(),
            contexts: vec![NegotiateContext::PreauthIntegrity {
                hash_algorithms: vec![HASH_SHA512],
                salt: salt.to_vec(),
            }],
            client_start_time: 0,
        };
        let h = self.request(STEP, Request::Negotiate(req)).await?;
        let Response::Negotiate(r) = self.response(STEP, &h, None)? else {
            return Err(fail(STEP, "not a NEGOTIATE response"));
        };
        if !DIALECTS.contains(&r.dialect_revision) {
            return Err(fail(
                STEP,
                format!("the server chose dialect {:#06x}", r.dialect_revision),
            ));
        }
        self.negotiated.dialect = r.dialect_revision;
        self.charge = u16::from(r.dialect_revision != DIALECT_202);
        Ok(())
    }

    async fn session_setup(&mut self) -> Result<(), ClientError> {
        const STEP: &str = "SESSION_SETUP";
        let flags = ntlmssp::NEGOTIATE_UNICODE
            | ntlmssp::REQUEST_TARGET
            | ntlmssp::NEGOTIATE_NTLM
            | ntlmssp::NEGOTIATE_ALWAYS_SIGN
            | ntlmssp::NEGOTIATE_EXTENDED_SESSIONSECURITY
            | ntlmssp::NEGOTIATE_128
            | ntlmssp::NEGOTIATE_56;
        let negotiate = ntlmssp::Negotiate {
            flags,
            domain: Vec::new(),
            workstation: Vec::new(),
            version: None,
        }
        .encode()
        .map_err(|e| fail(STEP, e))?;
        let init = SpnegoToken::Init(NegTokenInit {
            mech_types: vec![OID_NTLMSSP.to_vec()],
            mech_token: Some(negotiate),
            neg_hints: None,
            mech_list_mic: None,
        })
        .encode()
        .map_err(|e| fail(STEP, e))?;
        let h = self
            .request(STEP, Request::SessionSetup(setup_request(init)))
            .await?;
        let Response::SessionSetup(r) = self.response(STEP, &h, Some(MORE_PROCESSING_REQUIRED))?
        else {
            return Err(fail(STEP, "not a SESSION_SETUP response"));
        };
        if h.status != MORE_PROCESSING_REQUIRED {
            return Err(fail(STEP, "the first leg finished the login"));
        }
        self.session_id = h.session_id;
        let token = SpnegoToken::decode(&r.security_buffer).map_err(|e| fail(STEP, e))?;
        let challenge = token
            .mech_token()
            .ok_or_else(|| fail(STEP, "no NTLMSSP CHALLENGE in the answer"))?;
        let challenge = ntlmssp::Challenge::decode(challenge).map_err(|e| fail(STEP, e))?;
        // MS-NLMP's anonymous response: a one-byte zero LM response.
        let auth = ntlmssp::Authenticate {
            lm_response: vec![0],
            ..ntlmssp::Authenticate::anonymous((challenge.flags & flags) | ntlmssp::ANONYMOUS)
        }
        .encode()
        .map_err(|e| fail(STEP, e))?;
        let resp = SpnegoToken::Resp(NegTokenResp {
            neg_state: None,
            supported_mech: None,
            response_token: Some(auth),
            mech_list_mic: None,
        })
        .encode()
        .map_err(|e| fail(STEP, e))?;
        let h = self
            .request(STEP, Request::SessionSetup(setup_request(resp)))
            .await?;
        let Response::SessionSetup(r) = self.response(STEP, &h, None)? else {
            return Err(fail(STEP, "not a SESSION_SETUP response"));
        };
        if h.session_id != self.session_id {
            return Err(fail(STEP, "the session id changed between the legs"));
        }
        self.negotiated.session_flags = r.session_flags;
        Ok(())
    }

    async fn tree_connect(&mut self, addr: SocketAddr) -> Result<(), ClientError> {
        const STEP: &str = "TREE_CONNECT";
        let req = TreeConnectRequest {
            flags: 0,
            path: format!(r"\\{}\IPC$", addr.ip()),
        };
        let h = self.request(STEP, Request::TreeConnect(req)).await?;
        let Response::TreeConnect(r) = self.response(STEP, &h, None)? else {
            return Err(fail(STEP, "not a TREE_CONNECT response"));
        };
        if r.share_type != SHARE_TYPE_PIPE {
            return Err(fail(
                STEP,
                format!("share type {} is not a pipe share", r.share_type),
            ));
        }
        self.tree_id = h.tree_id();
        Ok(())
    }

    async fn create(&mut self) -> Result<(), ClientError> {
        const STEP: &str = "CREATE";
        let req = CreateRequest {
            security_flags: 0,
            requested_oplock_level: 0,
            impersonation_level: IMPERSONATION,
            smb_create_flags: 0,
            desired_access: PIPE_ACCESS,
            file_attributes: 0,
            share_access: SHARE_READ_WRITE,
            create_disposition: FILE_OPEN,
            create_options: 0,
            name: PIPE.to_owned(),
            create_contexts: Vec::new(),
        };
        let h = self.request(STEP, Request::Create(req)).await?;
        let Response::Create(r) = self.response(STEP, &h, None)? else {
            return Err(fail(STEP, "not a CREATE response"));
        };
        self.file_id = r.file_id;
        Ok(())
    }

    fn transceive(&self, input: Vec<u8>) -> Request {
        Request::Ioctl(IoctlRequest {
            ctl_code: FSCTL_PIPE_TRANSCEIVE,
            file_id: self.file_id,
            max_input_response: 0,
            max_output_response: MAX_OUT_BYTES,
            flags: IOCTL_IS_FSCTL,
            input,
            output: Vec::new(),
        })
    }

    /// The IOCTL response in `self.rx`: its output (a DCE/RPC PDU).
    fn ioctl_output(&self, step: &'static str, h: &Header) -> Result<Vec<u8>, ClientError> {
        match self.response(step, h, None)? {
            Response::Ioctl(r) => Ok(r.output),
            _ => Err(fail(step, "not an IOCTL response")),
        }
    }

    async fn bind(&mut self) -> Result<(), ClientError> {
        const STEP: &str = "bind";
        let bind = dcerpc::encode_bind(
            self.call_id,
            (SRVSVC_SYNTAX.uuid, SRVSVC_SYNTAX.version),
            (NDR_SYNTAX.uuid, NDR_SYNTAX.version),
        );
        let h = self.request(STEP, self.transceive(bind)).await?;
        let pdu = self.ioctl_output(STEP, &h)?;
        let ack = dcerpc::decode_bind_ack(&pdu).map_err(|e| fail(STEP, e))?;
        if ack.header.call_id != self.call_id {
            return Err(fail(STEP, "bind_ack of another call"));
        }
        match ack.results.first() {
            Some(r) if r.result == dcerpc::RESULT_ACCEPTANCE => Ok(()),
            other => Err(fail(STEP, format!("SRVSVC refused: {other:?}"))),
        }
    }

    /// Encodes the loop's request once; [`Connection::call`] patches it.
    fn build_call(&mut self) -> Result<(), ClientError> {
        const STEP: &str = "encoding the call";
        let stub = srvsvc::encode_netr_server_get_info(Some(r"\\127.0.0.1"), 101)
            .map_err(|e| fail(STEP, e))?;
        let pdu = dcerpc::encode_request(
            0,
            0,
            srvsvc::OPNUM_NETR_SERVER_GET_INFO,
            &stub,
            dcerpc::DEFAULT_MAX_FRAG,
        );
        let body = self.transceive(pdu.clone());
        let msg = body
            .encode(&self.header(Command::Ioctl, 0))
            .map_err(|e| fail(STEP, e))?;
        // InputOffset: 24 bytes into the IOCTL body.
        let at = HEADER_LEN + 24;
        let input_offset = u32::from_le_bytes([msg[at], msg[at + 1], msg[at + 2], msg[at + 3]]);
        let pdu_at = FRAME_HEADER_LEN + input_offset as usize;
        self.call = frame(&msg).map_err(|e| fail(STEP, e))?;
        if self.call.get(pdu_at..pdu_at + pdu.len()) != Some(&pdu[..]) {
            return Err(fail(STEP, "the PDU is not where InputOffset says"));
        }
        self.pdu_at = pdu_at;
        Ok(())
    }
}

fn setup_request(token: Vec<u8>) -> SessionSetupRequest {
    SessionSetupRequest {
        flags: 0,
        security_mode: SIGNING_ENABLED as u8,
        capabilities: 0,
        channel: 0,
        previous_session_id: 0,
        security_buffer: token,
    }
}

/// A server that closes the connection is the usual failure: say so.
fn read_error(e: io::Error) -> String {
    if e.kind() == io::ErrorKind::UnexpectedEof {
        "the server closed the connection".to_owned()
    } else {
        e.to_string()
    }
}

/// A different salt and GUID per connection (no secret rides on them).
fn salt_seed() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    nanos ^ NEXT.fetch_add(0x9E37_79B9, Ordering::Relaxed) ^ u64::from(std::process::id())
}

/// Checks one NetrServerGetInfo reply PDU: a whole single-fragment
/// response to `call_id` whose level-101 info names `server_name`.
pub fn check_info_reply(pdu: &[u8], call_id: u32, server_name: &str) -> Result<(), String> {
    if let Ok(f) = dcerpc::decode_fault(pdu) {
        return Err(format!("DCE/RPC fault {:#010x}", f.status));
    }
    let r = dcerpc::decode_response(pdu).map_err(|e| format!("response PDU: {e}"))?;
    let whole = dcerpc::PFC_FIRST_FRAG | dcerpc::PFC_LAST_FRAG;
    if r.header.pfc_flags & whole != whole {
        return Err("a fragmented reply".to_owned());
    }
    if r.header.call_id != call_id {
        return Err(format!(
            "reply to call {} while waiting for {call_id}",
            r.header.call_id
        ));
    }
    let (info, werror) =
        srvsvc::decode_netr_server_get_info_101(r.stub).map_err(|e| format!("stub: {e}"))?;
    if werror != 0 {
        return Err(format!("WERROR {werror}"));
    }
    match info.and_then(|i| i.server_name) {
        Some(name) if name == server_name => Ok(()),
        other => Err(format!("server name {other:?}, expected {server_name:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(call_id: u32, name: &str, werror: u32) -> Vec<u8> {
        let info = srvsvc::ServerInfo101 {
            platform_id: 500,
            server_name: Some(name.to_owned()),
            version_major: 6,
            version_minor: 1,
            server_type: 0x9a03,
            comment: None,
        };
        let stub = srvsvc::encode_netr_server_get_info_101_response(Some(&info), werror).unwrap();
        dcerpc::encode_response(call_id, 0, &stub, dcerpc::DEFAULT_MAX_FRAG)
    }

    /// A message of `len` bytes (framing header not counted): an SMB2
    /// header with `tag` as its MessageId, then a byte pattern.
    fn message(len: usize, tag: u64) -> Vec<u8> {
        let mut h = Header::request(Command::Echo);
        h.message_id = tag;
        let mut m = h.encode().to_vec();
        m.extend((HEADER_LEN..len).map(|i| i as u8));
        m
    }

    /// A connection whose server writes `chunks` (a pause between each),
    /// then closes.
    async fn fed(chunks: Vec<Vec<u8>>) -> Connection {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            for c in chunks {
                s.write_all(&c).await.unwrap();
                s.flush().await.unwrap();
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
        });
        let target = Target {
            addr,
            server_name: String::new(),
        };
        Connection::on(TcpStream::connect(addr).await.unwrap(), &target)
    }

    #[test]
    fn messages_are_cut_from_any_split_of_the_stream() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let a = frame(&message(100, 1)).unwrap();
            let b = frame(&message(40_000, 2)).unwrap(); // over the buffer
            let c = frame(&message(64, 3)).unwrap();
            let mut stream: Vec<u8> = [a.clone(), b.clone(), c.clone()].concat();
            // Split: 2 bytes of a's header, then a's rest with half of b,
            // then b's rest with all of c at once.
            let tail = stream.split_off(a.len() + b.len() / 2);
            let middle = stream.split_off(2);
            let mut conn = fed(vec![stream, middle, tail]).await;
            for want in [&a, &b, &c] {
                conn.next_message("test").await.unwrap();
                assert_eq!(conn.message(), &want[FRAME_HEADER_LEN..]);
            }
            let e = conn.next_message("test").await.unwrap_err();
            assert!(e.to_string().contains("closed the connection"), "{e}");
        });
    }

    #[test]
    fn oversized_and_tiny_frames_are_refused() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let big = (MAX_MESSAGE_BYTES as u32 + 1).to_be_bytes().to_vec();
            let e = fed(vec![big]).await.next_message("t").await.unwrap_err();
            assert!(e.to_string().contains("accepted"), "{e}");
            let tiny = frame(&[0xFE, b'S', b'M', b'B']).unwrap();
            let e = fed(vec![tiny]).await.next_message("t").await.unwrap_err();
            assert!(e.to_string().contains("a 4-byte message"), "{e}");
            let nbss = vec![0x85, 0, 0, 0];
            assert!(fed(vec![nbss]).await.next_message("t").await.is_err());
        });
    }

    #[test]
    fn info_replies_are_checked() {
        assert_eq!(check_info_reply(&reply(7, "SRV", 0), 7, "SRV"), Ok(()));
        assert!(check_info_reply(&reply(7, "OTHER", 0), 7, "SRV")
            .unwrap_err()
            .contains("OTHER"));
        assert!(check_info_reply(&reply(6, "SRV", 0), 7, "SRV")
            .unwrap_err()
            .contains("call 6"));
        assert!(check_info_reply(&reply(7, "SRV", 5), 7, "SRV")
            .unwrap_err()
            .contains("WERROR 5"));
        let fault = dcerpc::encode_fault(7, 0, dcerpc::NCA_S_OP_RNG_ERROR);
        assert!(check_info_reply(&fault, 7, "SRV")
            .unwrap_err()
            .contains("fault"));
        let mut cut = reply(7, "SRV", 0);
        cut.truncate(30);
        assert!(check_info_reply(&cut, 7, "SRV").is_err());
        assert!(check_info_reply(&[], 7, "SRV").is_err());
    }
}
