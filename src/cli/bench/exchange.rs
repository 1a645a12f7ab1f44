//! The transceive every peer performs, and the checks on every reply, in one
//! place so that all engines do exactly the same work per operation.
//!
//! A transceive (FSCTL_PIPE_TRANSCEIVE, seed semantics):
//!
//! 1. write the whole request PDU(s), from [`Exchange::request`];
//! 2. ONE read of up to `max_out` bytes, handed to [`Exchange::first_read`];
//!    when `max_out < 4280` and that read filled the buffer and bytes are
//!    still queued (`FIONREAD`), the SMB client would get
//!    `STATUS_BUFFER_OVERFLOW` ([`ReplyProgress::overflow`]);
//! 3. ordinary reads of [`ReplyProgress::missing`] until the whole reply,
//!    whose length is known, has arrived ([`ReplyProgress::advance`]);
//! 4. [`Exchange::verify`]: length, every fragment's header (response type,
//!    the request's call id, first/last flags) and the stub bytes against the
//!    pattern the service writes. A reply that fails is an error, never a
//!    transceive.
//!
//! In Samba's dialect ([`Dialect::Samba`]) the open is the named-pipe-auth
//! handshake of an anonymous caller, every message travels behind a `u16`
//! length, and a transceive's first read is the first reply MESSAGE, cut at
//! `max_out` (`STATUS_BUFFER_OVERFLOW` when it is longer, the rest read by
//! the next read, as an SMB server does on a message-mode pipe). What is
//! sent and verified is the same; the peers read and write
//! the framing with `bench/framed.rs` and the library's `frame_messages`.
//!
//! Two calls can be measured ([`Call`]): the pattern call of `opipe serve
//! --handler dcerpc`, or, against Samba's own `rpcd_classic` (`--target
//! samba-rpcd`), a real `NetrServerGetInfo` level 101 after one bind, whose
//! reply is decoded and must name the configured server.

use std::fmt;
use std::io;
use std::net::Ipv4Addr;
use std::ops::Range;

use opipe::protocol::dcerpc;
use opipe::protocol::npa::{frame_messages, FILE_TYPE_MESSAGE_MODE, NPA_REPLY_LEN};
use opipe::protocol::srvsvc::{
    decode_netr_server_get_info_101, encode_netr_server_get_info, OPNUM_NETR_SERVER_GET_INFO,
};
use opipe::protocol::{
    decode_status_word, encode_open_message, transceive_status, ClientAddr, Dialect, NetUserInfo,
    NpaIdentity, NpaLevel, NpaReply, NtStatus, SMB_PIPE_MAX_MSGSIZE, STATUS_WORD_LEN,
};
use opipe::service::dcerpc::reply_stub_byte;

pub use super::spec::Call;
use super::spec::{RunSpec, WireSize};

/// Bytes of the open handshake's reply (one native-order NT status).
pub const STATUS_WORD_BYTES: usize = STATUS_WORD_LEN;
/// Presentation context and operation number of every bench request.
const CONTEXT_ID: u16 = 0;
const OPNUM: u16 = 0;
/// The byte every request stub is filled with (the service ignores it).
const REQUEST_STUB_BYTE: u8 = 0x5a;
/// Call id of the one bind a [`Call::ServerInfo`] pipe makes after its open
/// (the transceives count from 1 again: Samba does not mind).
pub const BIND_CALL_ID: u32 = 1;
/// The `NetrServerGetInfo` level asked for.
const SERVER_INFO_LEVEL: u32 = 101;

impl Call {
    /// The request stub and operation number of every transceive.
    fn request_stub(&self, stub_bytes: usize) -> Result<(Vec<u8>, u16), String> {
        match self {
            Call::Pattern => Ok((vec![REQUEST_STUB_BYTE; stub_bytes], OPNUM)),
            Call::ServerInfo { server_name } => {
                let unc = format!("\\\\{server_name}");
                encode_netr_server_get_info(Some(&unc), SERVER_INFO_LEVEL)
                    .map(|stub| (stub, OPNUM_NETR_SERVER_GET_INFO))
                    .map_err(|e| format!("encoding NetrServerGetInfo: {e}"))
            }
        }
    }

    /// The request PDU of one `NetrServerGetInfo` call with `call_id`: what
    /// `--target samba-rpcd` sends (and measures the size of).
    pub fn server_info_request(server_name: &str, call_id: u32) -> Result<Vec<u8>, String> {
        let call = Call::ServerInfo {
            server_name: server_name.to_owned(),
        };
        let (stub, opnum) = call.request_stub(0)?;
        Ok(dcerpc::encode_request(
            call_id,
            CONTEXT_ID,
            opnum,
            &stub,
            dcerpc::DEFAULT_MAX_FRAG,
        ))
    }
}

/// Why one transceive (or open) failed.
#[derive(Debug)]
pub enum TransceiveError {
    /// A system call failed.
    Io(io::Error),
    /// The service closed the pipe (a read returned 0): STATUS_PIPE_BROKEN.
    Closed,
    /// The open was refused, or the handshake message could not be made.
    Open(String),
    /// The reply is not the one the request asked for.
    BadReply(String),
}

impl From<io::Error> for TransceiveError {
    fn from(e: io::Error) -> Self {
        TransceiveError::Io(e)
    }
}

impl fmt::Display for TransceiveError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TransceiveError::Io(e) => write!(f, "{e}"),
            TransceiveError::Closed => write!(f, "the service closed the pipe"),
            TransceiveError::Open(why) => write!(f, "open refused: {why}"),
            TransceiveError::BadReply(why) => write!(f, "wrong reply: {why}"),
        }
    }
}

impl std::error::Error for TransceiveError {}

fn bad(why: String) -> TransceiveError {
    TransceiveError::BadReply(why)
}

/// Checks the status word that ends a successful open handshake.
pub fn check_open_status(word: [u8; STATUS_WORD_BYTES]) -> Result<(), TransceiveError> {
    let status = decode_status_word(word);
    if status == NtStatus::SUCCESS {
        Ok(())
    } else {
        Err(TransceiveError::Open(format!(
            "the service answered {status}"
        )))
    }
}

/// Request encoding and reply verification for one run.
#[derive(Debug)]
pub struct Exchange {
    dialect: Dialect,
    call: Call,
    request_stub: Vec<u8>,
    opnum: u16,
    reply: WireSize,
    max_out: usize,
    /// The stub bytes every reply must carry, from the service's pattern
    /// ([`Call::Pattern`]).
    expected_stub: Vec<u8>,
}

impl Exchange {
    /// Prepares the exchange of `spec`; fails only when the request of a
    /// [`Call::ServerInfo`] cannot be encoded (a server name too long).
    pub fn new(spec: &RunSpec) -> Result<Exchange, String> {
        let (request_stub, opnum) = spec.call.request_stub(spec.request.stub_bytes)?;
        Ok(Exchange {
            dialect: spec.dialect,
            call: spec.call.clone(),
            request_stub,
            opnum,
            reply: spec.reply,
            max_out: spec.max_out,
            expected_stub: match spec.call {
                Call::Pattern => expected_reply_stub(spec.reply.stub_bytes),
                Call::ServerInfo { .. } => Vec::new(),
            },
        })
    }

    /// The pipes' dialect.
    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// The open handshake message of pipe number `pipe`. illumos: the
    /// 8-byte pipe header and the XDR netuserinfo of a fixed bench user
    /// (session id = pipe number + 1). Samba: the level-7 named-pipe-auth
    /// request of [`Exchange::identity`].
    pub fn open_message(&self, pipe: usize) -> Result<Vec<u8>, TransceiveError> {
        match self.dialect {
            Dialect::Illumos => encode_open_message(&self.user(pipe)),
            Dialect::Samba => self.identity(pipe).to_request(NpaLevel::V7).encode(),
        }
        .map_err(|e| TransceiveError::Open(format!("encoding: {e}")))
    }

    /// Bytes of the open handshake's answer: the 4-byte status word, or
    /// Samba's 36-byte reply.
    pub fn open_reply_len(&self) -> usize {
        match self.dialect {
            Dialect::Illumos => STATUS_WORD_BYTES,
            Dialect::Samba => NPA_REPLY_LEN,
        }
    }

    /// Checks the open handshake's answer (exactly
    /// [`open_reply_len`](Self::open_reply_len) bytes): success, and in
    /// Samba's dialect a message-mode pipe at the level asked for.
    pub fn check_open_reply(&self, reply: &[u8]) -> Result<(), TransceiveError> {
        match self.dialect {
            Dialect::Illumos => {
                let word: [u8; STATUS_WORD_BYTES] = reply
                    .try_into()
                    .map_err(|_| TransceiveError::Open(format!("a {}-byte answer", reply.len())))?;
                check_open_status(word)
            }
            Dialect::Samba => {
                let r = NpaReply::decode(reply)
                    .map_err(|e| TransceiveError::Open(format!("bad NPA reply: {e}")))?;
                if r.status != NtStatus::SUCCESS {
                    return Err(TransceiveError::Open(format!(
                        "the service answered {}",
                        r.status
                    )));
                }
                if r.level != NpaLevel::V7 || r.file_type != FILE_TYPE_MESSAGE_MODE {
                    return Err(TransceiveError::Open(format!(
                        "NPA reply at level {} with file type {} (asked level 7, message mode)",
                        r.level, r.file_type
                    )));
                }
                Ok(())
            }
        }
    }

    /// The identity pipe number `pipe` opens with in Samba's dialect: an
    /// anonymous caller (the token Samba gives `rpcclient -U%`), the session
    /// GUID's first 8 bytes the pipe number + 1.
    pub fn identity(&self, pipe: usize) -> NpaIdentity {
        let mut id = NpaIdentity::anonymous();
        id.session_guid[..8].copy_from_slice(&(pipe as u64 + 1).to_le_bytes());
        id
    }

    /// The bind PDU every pipe sends once after its open, if the call needs
    /// one ([`Call::ServerInfo`]: srvsvc over NDR, call id [`BIND_CALL_ID`]).
    pub fn bind_request(&self) -> Option<Vec<u8>> {
        match self.call {
            Call::Pattern => None,
            Call::ServerInfo { .. } => Some(dcerpc::encode_bind(
                BIND_CALL_ID,
                dcerpc::SRVSVC_SYNTAX.into(),
                dcerpc::NDR_SYNTAX.into(),
            )),
        }
    }

    /// Checks the answer to [`bind_request`](Self::bind_request): a
    /// bind_ack for its call id that accepts the context.
    pub fn check_bind_ack(&self, pdu: &[u8]) -> Result<(), TransceiveError> {
        let ack = dcerpc::decode_bind_ack(pdu)
            .map_err(|e| TransceiveError::Open(format!("bind: not a bind_ack: {e}")))?;
        if ack.header.call_id != BIND_CALL_ID {
            return Err(TransceiveError::Open(format!(
                "bind: bind_ack for call {}, sent {BIND_CALL_ID}",
                ack.header.call_id
            )));
        }
        match ack.results.first() {
            Some(r) if r.result == dcerpc::RESULT_ACCEPTANCE => Ok(()),
            Some(r) => Err(TransceiveError::Open(format!(
                "bind: srvsvc refused (result {}, reason {})",
                r.result, r.reason
            ))),
            None => Err(TransceiveError::Open("bind: no context result".into())),
        }
    }

    /// The request of one transceive as written to the socket by a peer
    /// that frames for itself: [`request`](Self::request), in Samba's
    /// dialect behind its `u16` length as one message (more than 65535
    /// bytes as several, as opipe's engine writes them).
    pub fn wire_request(&self, call_id: u32) -> Vec<u8> {
        let pdus = self.request(call_id);
        match self.dialect {
            Dialect::Illumos => pdus,
            Dialect::Samba => frame_messages(&pdus),
        }
    }

    /// The bench user of pipe number `pipe` (session id = pipe number + 1).
    pub fn user(&self, pipe: usize) -> NetUserInfo {
        NetUserInfo {
            session_id: pipe as u64 + 1,
            domain: "OPIPE".into(),
            account: "bench".into(),
            posix_uid: 60001,
            workstation: "BENCH".into(),
            client_addr: ClientAddr::V4(Ipv4Addr::LOCALHOST),
            numopens: 1,
            ..NetUserInfo::default()
        }
    }

    /// The request PDU(s) of one transceive with `call_id`.
    pub fn request(&self, call_id: u32) -> Vec<u8> {
        let mut out = Vec::new();
        self.request_into(call_id, &mut out);
        out
    }

    /// [`request`](Self::request) into `out` (replacing its contents, keeping
    /// its allocation).
    pub fn request_into(&self, call_id: u32, out: &mut Vec<u8>) {
        dcerpc::encode_request_into(
            out,
            call_id,
            CONTEXT_ID,
            self.opnum,
            &self.request_stub,
            dcerpc::DEFAULT_MAX_FRAG,
        )
    }

    /// Takes the result of the transceive's one read of `max_out` bytes and
    /// decides its status the seed's way ([`transceive_status`]). `queued`
    /// reports the bytes still waiting on the socket (FIONREAD); it is asked
    /// only when the read filled a buffer under 4280 bytes, so the common
    /// case costs no system call.
    pub fn first_read(
        &self,
        n: usize,
        queued: impl FnOnce() -> io::Result<usize>,
    ) -> Result<ReplyProgress, TransceiveError> {
        let may_overflow = self.max_out < SMB_PIPE_MAX_MSGSIZE && n >= self.max_out;
        let pending = may_overflow && queued()? > 0;
        self.progress(n, transceive_status(self.max_out_u32(), n, pending))
    }

    /// Like [`first_read`](Self::first_read) for an engine that decides the
    /// status itself (e.g. from `IORING_CQE_F_SOCK_NONEMPTY`): checks that
    /// `status` is one the seed could have given for this read.
    pub fn first_read_with_status(
        &self,
        n: usize,
        status: NtStatus,
    ) -> Result<ReplyProgress, TransceiveError> {
        let legal = match status {
            NtStatus::SUCCESS => true,
            // Overflow needs a full buffer under 4280 and bytes left over,
            // which a read of the whole reply cannot have.
            NtStatus::BUFFER_OVERFLOW => {
                n < self.reply.wire_bytes
                    && transceive_status(self.max_out_u32(), n, true) == status
            }
            _ => false,
        };
        if !legal {
            return Err(bad(format!(
                "{status} for a first read of {n} bytes (max_out {}, reply {} bytes)",
                self.max_out, self.reply.wire_bytes
            )));
        }
        self.progress(n, status)
    }

    fn max_out_u32(&self) -> u32 {
        u32::try_from(self.max_out).unwrap_or(u32::MAX)
    }

    fn progress(&self, n: usize, status: NtStatus) -> Result<ReplyProgress, TransceiveError> {
        if n == 0 {
            return Err(TransceiveError::Closed);
        }
        let expected = self.reply.wire_bytes;
        if n > expected {
            return Err(bad(format!(
                "the first read returned {n} bytes, the reply is {expected}"
            )));
        }
        Ok(ReplyProgress {
            got: n,
            expected,
            status,
        })
    }

    /// MaxOutputResponse: the length of a transceive's one read.
    pub fn max_out(&self) -> usize {
        self.max_out
    }

    /// Bytes of every whole reply.
    pub fn reply_len(&self) -> usize {
        self.reply.wire_bytes
    }

    /// Verifies a whole reply to the request with `call_id`: length, every
    /// fragment's header, then the stub: the service's pattern, or for
    /// [`Call::ServerInfo`] a `NetrServerGetInfo` level-101 answer that
    /// decodes, with `WERR_OK` and the expected server name.
    pub fn verify(&self, reply: &[u8], call_id: u32) -> Result<(), TransceiveError> {
        if reply.len() != self.reply.wire_bytes {
            return Err(bad(format!(
                "{} bytes, expected {}",
                reply.len(),
                self.reply.wire_bytes
            )));
        }
        match &self.call {
            Call::Pattern => self.verify_pattern(reply, call_id),
            Call::ServerInfo { server_name } => {
                let mut stub = Vec::new();
                for_each_fragment(reply, call_id, |_, s| {
                    stub.extend_from_slice(s);
                    Ok(())
                })?;
                let (info, werror) = decode_netr_server_get_info_101(&stub)
                    .map_err(|e| bad(format!("NetrServerGetInfo reply: {e}")))?;
                if werror != 0 {
                    return Err(bad(format!("NetrServerGetInfo answered WERROR {werror}")));
                }
                let name = info.and_then(|i| i.server_name);
                if name.as_deref() != Some(server_name.as_str()) {
                    return Err(bad(format!(
                        "NetrServerGetInfo names server {name:?}, expected {server_name:?}"
                    )));
                }
                Ok(())
            }
        }
    }

    fn verify_pattern(&self, reply: &[u8], call_id: u32) -> Result<(), TransceiveError> {
        let stub_bytes = for_each_fragment(reply, call_id, |stub_at, stub| {
            let want = self
                .expected_stub
                .get(stub_at..stub_at + stub.len())
                .ok_or_else(|| bad(format!("more than {} stub bytes", self.reply.stub_bytes)))?;
            if stub != want {
                let i = stub.iter().zip(want).position(|(a, b)| a != b).unwrap_or(0);
                return Err(bad(format!(
                    "stub byte {} is {:#04x}, the service's pattern has {:#04x}",
                    stub_at + i,
                    stub[i],
                    want[i]
                )));
            }
            Ok(())
        })?;
        if stub_bytes != self.reply.stub_bytes {
            return Err(bad(format!(
                "{stub_bytes} stub bytes, expected {}",
                self.reply.stub_bytes
            )));
        }
        Ok(())
    }
}

/// Walks the response fragments of `reply` (to the request with `call_id`),
/// checking each one's header and first/last flags, and hands `on_stub`
/// each fragment's stub with its offset in the whole stub. Returns the
/// stub bytes seen.
fn for_each_fragment(
    reply: &[u8],
    call_id: u32,
    mut on_stub: impl FnMut(usize, &[u8]) -> Result<(), TransceiveError>,
) -> Result<usize, TransceiveError> {
    let mut at = 0;
    let mut stub_at = 0;
    let mut fragment = 0;
    while at < reply.len() {
        let rest = &reply[at..];
        let len = match dcerpc::pdu_len(rest, dcerpc::DEFAULT_MAX_FRAG) {
            Ok(Some(len)) if len <= rest.len() => len,
            Ok(_) => {
                return Err(bad(format!(
                    "fragment {fragment} at byte {at} runs past the reply's {} bytes",
                    reply.len()
                )))
            }
            Err(e) => return Err(bad(format!("fragment {fragment} at byte {at}: {e}"))),
        };
        let pdu = dcerpc::decode_response(&rest[..len])
            .map_err(|e| bad(format!("fragment {fragment} at byte {at}: {e}")))?;
        let h = pdu.header;
        if h.call_id != call_id {
            return Err(bad(format!(
                "fragment {fragment}: call id {} answers no request of ours (sent {call_id})",
                h.call_id
            )));
        }
        let last = at + len == reply.len();
        let want_flags = (if fragment == 0 {
            dcerpc::PFC_FIRST_FRAG
        } else {
            0
        }) | (if last { dcerpc::PFC_LAST_FRAG } else { 0 });
        let have_flags = h.pfc_flags & (dcerpc::PFC_FIRST_FRAG | dcerpc::PFC_LAST_FRAG);
        if have_flags != want_flags {
            return Err(bad(format!(
                "fragment {fragment}: flags {have_flags:#04x}, expected {want_flags:#04x}"
            )));
        }
        on_stub(stub_at, pdu.stub)?;
        stub_at += pdu.stub.len();
        at += len;
        fragment += 1;
    }
    Ok(stub_at)
}

/// How much of a reply has arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplyProgress {
    got: usize,
    expected: usize,
    status: NtStatus,
}

impl ReplyProgress {
    /// The byte range of the reply buffer still to read, if any.
    pub fn missing(&self) -> Option<Range<usize>> {
        (self.got < self.expected).then_some(self.got..self.expected)
    }

    /// Takes the result of one ordinary read into [`missing`](Self::missing).
    pub fn advance(&mut self, n: usize) -> Result<(), TransceiveError> {
        if n == 0 {
            return Err(TransceiveError::Closed);
        }
        self.got += n;
        debug_assert!(self.got <= self.expected);
        Ok(())
    }

    /// Bytes received so far (the whole reply once `missing` is `None`).
    pub fn len(&self) -> usize {
        self.got
    }

    /// Did the first read end with STATUS_BUFFER_OVERFLOW?
    pub fn overflow(&self) -> bool {
        self.status == NtStatus::BUFFER_OVERFLOW
    }
}

/// The stub bytes the service's dcerpc handler puts in a reply of
/// `stub_bytes`: its own pattern function, byte by byte.
fn expected_reply_stub(stub_bytes: usize) -> Vec<u8> {
    (0..stub_bytes).map(reply_stub_byte).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::measure::StopRule;

    fn exchange(request: usize, reply: usize, max_out: usize) -> Exchange {
        Exchange::new(&RunSpec {
            pipes: 1,
            request: WireSize::from_wire(request).unwrap(),
            reply: WireSize::from_wire(reply).unwrap(),
            max_out,
            stop: StopRule::Requests(1),
            dialect: Dialect::Illumos,
            call: Call::Pattern,
            open_concurrency: 0,
        })
        .unwrap()
    }

    /// The reply a correct service sends, built with the protocol's encoder.
    fn good_reply(x: &Exchange, call_id: u32) -> Vec<u8> {
        dcerpc::encode_response(
            call_id,
            CONTEXT_ID,
            &x.expected_stub,
            dcerpc::DEFAULT_MAX_FRAG,
        )
    }

    #[test]
    fn request_has_the_asked_wire_size() {
        for size in [24, 64, 4280, 8192, 65536] {
            let x = exchange(size, 64, 4280);
            let req = x.request(7);
            assert_eq!(req.len(), size);
            let h = dcerpc::CommonHeader::decode(&req).unwrap();
            assert_eq!((h.ptype, h.call_id), (dcerpc::PTYPE_REQUEST, 7));
        }
    }

    #[test]
    fn good_replies_verify() {
        for size in [24, 64, 4280, 4305, 8192, 65536] {
            let x = exchange(64, size, 4280);
            let reply = good_reply(&x, 42);
            assert_eq!(reply.len(), size);
            x.verify(&reply, 42).unwrap();
        }
    }

    #[test]
    fn corrupted_replies_are_rejected() {
        let x = exchange(64, 8192, 4280);
        let good = good_reply(&x, 9);
        let reject = |reply: &[u8], what: &str| {
            let err = x.verify(reply, 9).expect_err(what);
            assert!(matches!(err, TransceiveError::BadReply(_)), "{what}: {err}");
        };
        // Wrong call id: the reply to some other request.
        reject(&good_reply(&x, 10), "call id");
        // One stub byte flipped, in the second fragment.
        let mut r = good.clone();
        let last = r.len() - 1;
        r[last] ^= 0xff;
        reject(&r, "stub byte");
        // Not a response PDU (a request with the same call id).
        let mut r = good.clone();
        r[2] = dcerpc::PTYPE_REQUEST;
        reject(&r, "packet type");
        // Last-fragment flag missing on the last fragment.
        let mut r = good.clone();
        let second = usize::from(dcerpc::CommonHeader::decode(&r).unwrap().frag_length);
        r[second + 3] &= !dcerpc::PFC_LAST_FRAG;
        reject(&r, "flags");
        // Last-fragment flag set on the first of two fragments.
        let mut r = good.clone();
        r[3] |= dcerpc::PFC_LAST_FRAG;
        reject(&r, "early last flag");
        // Truncated and overlong.
        reject(&good[..good.len() - 1], "short");
        let mut r = good.clone();
        r.push(0);
        reject(&r, "long");
        // A frag_length pointing past the end.
        let mut r = good;
        r[8] = 0xff;
        r[9] = 0x0f;
        reject(&r, "frag_length");
    }

    #[test]
    fn first_read_applies_the_overflow_rule() {
        // max_out < 4280, the read filled it, bytes queued: overflow.
        let x = exchange(64, 200, 100);
        let p = x.first_read(100, || Ok(100)).unwrap();
        assert!(p.overflow());
        assert_eq!(p.missing(), Some(100..200));
        // Filled but nothing queued yet: success, the rest comes later.
        let p = x.first_read(100, || Ok(0)).unwrap();
        assert!(!p.overflow());
        // Short read: FIONREAD is not even asked.
        let p = x
            .first_read(60, || panic!("no FIONREAD on a short read"))
            .unwrap();
        assert!(!p.overflow());
        // max_out of 4280 or more never overflows.
        let x = exchange(64, 8192, 4280);
        let p = x
            .first_read(4280, || panic!("no FIONREAD at 4280"))
            .unwrap();
        assert!(!p.overflow());
        // End of stream and overlong reads are errors.
        assert!(matches!(
            x.first_read(0, || Ok(0)),
            Err(TransceiveError::Closed)
        ));
        let x = exchange(64, 64, 4280);
        assert!(x.first_read(65, || Ok(0)).is_err());
    }

    #[test]
    fn engine_reported_status_is_checked() {
        let x = exchange(64, 200, 100);
        let p = x
            .first_read_with_status(100, NtStatus::BUFFER_OVERFLOW)
            .unwrap();
        assert!(p.overflow());
        assert_eq!(p.missing(), Some(100..200));
        x.first_read_with_status(100, NtStatus::SUCCESS).unwrap();
        x.first_read_with_status(60, NtStatus::SUCCESS).unwrap();
        // Overflow on a short read, or at max_out >= 4280, is a lie.
        assert!(x
            .first_read_with_status(60, NtStatus::BUFFER_OVERFLOW)
            .is_err());
        let x = exchange(64, 8192, 4280);
        assert!(x
            .first_read_with_status(4280, NtStatus::BUFFER_OVERFLOW)
            .is_err());
        // Overflow when the read got the whole reply: nothing can be left.
        let x = exchange(64, 100, 100);
        assert!(x
            .first_read_with_status(100, NtStatus::BUFFER_OVERFLOW)
            .is_err());
        // Any other status is not a transceive result.
        assert!(x.first_read_with_status(10, NtStatus::PIPE_BROKEN).is_err());
    }

    #[test]
    fn progress_reads_the_rest() {
        let x = exchange(64, 200, 100);
        let mut p = x.first_read(100, || Ok(100)).unwrap();
        p.advance(50).unwrap();
        assert_eq!(p.missing(), Some(150..200));
        p.advance(50).unwrap();
        assert_eq!((p.missing(), p.len()), (None, 200));
        assert!(matches!(p.advance(0), Err(TransceiveError::Closed)));
    }

    #[test]
    fn open_status_must_be_success() {
        check_open_status(0u32.to_ne_bytes()).unwrap();
        let err = check_open_status(0xC000_00ACu32.to_ne_bytes()).unwrap_err();
        assert!(err.to_string().contains("PIPE_NOT_AVAILABLE"), "{err}");
        assert!(Exchange::new(&RunSpec {
            pipes: 1,
            request: WireSize::from_wire(64).unwrap(),
            reply: WireSize::from_wire(64).unwrap(),
            max_out: 4280,
            stop: StopRule::Requests(1),
            dialect: Dialect::Illumos,
            call: Call::Pattern,
            open_concurrency: 0,
        })
        .unwrap()
        .open_message(0)
        .is_ok());
    }
}
