//! A DCE/RPC test handler: answers binds and requests the way a pipe
//! service does, with a configurable amount of deterministic stub data.
//!
//! * Request PDUs are cut out of the stream by `frag_length`
//!   ([`PduReassembler`], fragments of at most 4280 bytes); bad framing ends
//!   the connection.
//! * A bind (or alter_context) gets a bind_ack (alter_context_resp)
//!   accepting the first presentation context, secondary address
//!   `\PIPE\<name>`.
//! * A request gets, once its last fragment arrived, a response with the
//!   same `call_id` and context carrying `reply_size` stub bytes
//!   ([`reply_stub_byte`]), in fragments of at most 4280 bytes with the
//!   first/last flags right.
//! * Output is produced in batches of about [`OUTPUT_BATCH_BYTES`], one
//!   fragment at a time: a response is written as the client reads it (a
//!   16 MiB reply is never built whole) and a burst of requests is answered
//!   as the replies drain, so a client that never reads makes the service
//!   hold at most a batch plus one fragment.

use std::sync::Arc;

use crate::protocol::dcerpc::{
    decode_bind, decode_request, encode_bind_ack, CommonHeader, PduReassembler, SyntaxId,
    DEFAULT_MAX_FRAG, PFC_FIRST_FRAG, PFC_LAST_FRAG, PTYPE_ALTER_CONTEXT, PTYPE_BIND,
    PTYPE_REQUEST, PTYPE_RESPONSE, RESPONSE_HEADER_LEN, SRVSVC_SYNTAX,
};
use crate::protocol::{NetUserInfo, PipeName};

use super::handler::{
    Handler, HandlerError, HandlerFactory, MessageBoundaries, OUTPUT_BATCH_BYTES,
};

/// Packet types a client may send that need no answer: auth3 (16),
/// co_cancel (18), orphaned (19).
pub(crate) const PTYPES_IGNORED: [u8; 3] = [16, 18, 19];

/// Byte `i` of every response's stub: `i mod 251`. A prime period makes a
/// dropped, duplicated or reordered fragment show.
pub fn reply_stub_byte(i: usize) -> u8 {
    (i % 251) as u8
}

/// Makes [`DceRpc`] handlers answering every request with `reply_size`
/// stub bytes.
#[derive(Debug, Clone)]
pub struct DceRpcFactory {
    stub: Arc<[u8]>,
    log_calls: bool,
}

impl DceRpcFactory {
    /// Responses carry `reply_size` bytes of stub data.
    pub fn new(reply_size: usize) -> DceRpcFactory {
        DceRpcFactory {
            stub: (0..reply_size).map(reply_stub_byte).collect(),
            log_calls: false,
        }
    }

    /// Log (tracing `info`) every bind (interface) and request (opnum)
    /// of its handlers (default off: a bench makes millions).
    pub fn log_calls(mut self, yes: bool) -> DceRpcFactory {
        self.log_calls = yes;
        self
    }
}

/// A syntax as text: the UUID in its usual form, and the version
/// (`major.minor`), with the name of the interfaces opipe knows.
pub(crate) fn syntax_text(s: &SyntaxId) -> String {
    let u = &s.uuid;
    let name = if s.uuid == SRVSVC_SYNTAX.uuid {
        " (srvsvc)"
    } else {
        ""
    };
    format!(
        "{:08x}-{:04x}-{:04x}-{:02x}{:02x}-{:02x}{:02x}{:02x}{:02x}{:02x}{:02x} v{}.{}{name}",
        u32::from_le_bytes([u[0], u[1], u[2], u[3]]),
        u16::from_le_bytes([u[4], u[5]]),
        u16::from_le_bytes([u[6], u[7]]),
        u[8],
        u[9],
        u[10],
        u[11],
        u[12],
        u[13],
        u[14],
        u[15],
        s.version & 0xffff,
        s.version >> 16
    )
}

impl HandlerFactory for DceRpcFactory {
    fn open(&self, pipe: &PipeName, _user: &NetUserInfo) -> Box<dyn Handler> {
        let mut h = DceRpc::new(pipe, self.stub.clone());
        h.log_calls = self.log_calls;
        Box::new(h)
    }
}

/// The DCE/RPC handler of one open pipe.
#[derive(Debug)]
pub struct DceRpc {
    reassembler: PduReassembler,
    sec_addr: String,
    stub: Arc<[u8]>,
    /// The response being written, fragment by fragment as the output
    /// drains: a 16 MiB reply is never built whole.
    reply: Option<Reply>,
    /// Stopped at a full batch with a reply unfinished or input maybe left
    /// in the reassembler.
    stalled: bool,
    /// Log binds and requests (tracing `info`).
    log_calls: bool,
}

/// A response in progress: its call and the stub bytes already written.
#[derive(Debug, Clone, Copy)]
struct Reply {
    call_id: u32,
    context_id: u16,
    offset: usize,
}

/// Stub bytes per response fragment: the room after the 24-byte header in
/// a [`DEFAULT_MAX_FRAG`] fragment, a multiple of 8 (as
/// [`crate::protocol::dcerpc::encode_response`] cuts them).
const STUB_PER_FRAG: usize = (DEFAULT_MAX_FRAG as usize - RESPONSE_HEADER_LEN) & !7;

impl DceRpc {
    /// A handler for `pipe` answering requests with `stub`.
    pub fn new(pipe: &PipeName, stub: Arc<[u8]>) -> DceRpc {
        DceRpc {
            reassembler: PduReassembler::new(DEFAULT_MAX_FRAG),
            sec_addr: format!("\\PIPE\\{}", pipe.as_str()),
            stub,
            reply: None,
            stalled: false,
            log_calls: false,
        }
    }

    /// Writes response fragments and answers whole PDUs until the input
    /// runs out or this call wrote a batch ([`OUTPUT_BATCH_BYTES`], plus at
    /// most one fragment or bind_ack). Always writes something when it has
    /// anything to write, so every call makes progress.
    fn process(&mut self, out: &mut Vec<u8>) -> Result<(), HandlerError> {
        let start = out.len();
        self.stalled = false;
        loop {
            if out.len() - start >= OUTPUT_BATCH_BYTES {
                self.stalled = self.reply.is_some() || self.reassembler.buffered() > 0;
                return Ok(());
            }
            if let Some(mut r) = self.reply.take() {
                self.write_fragment(&mut r, out);
                if r.offset < self.stub.len() {
                    self.reply = Some(r);
                }
                continue;
            }
            match self.reassembler.next_pdu() {
                None => return Ok(()),
                Some(pdu) => self.answer(&pdu?, out)?,
            }
        }
    }

    /// Appends the next fragment of `r` (C706 12.6.4.10: `alloc_hint` the
    /// stub bytes left from this fragment on, first/last flags) and moves
    /// its offset on. An empty stub is one fragment, first and last.
    fn write_fragment(&self, r: &mut Reply, out: &mut Vec<u8>) {
        let remaining = self.stub.len() - r.offset;
        let chunk = remaining.min(STUB_PER_FRAG);
        let mut flags = 0;
        if r.offset == 0 {
            flags |= PFC_FIRST_FRAG;
        }
        if chunk == remaining {
            flags |= PFC_LAST_FRAG;
        }
        // chunk <= STUB_PER_FRAG, so the fragment fits in a u16.
        let frag_length = (RESPONSE_HEADER_LEN + chunk) as u16;
        out.reserve(usize::from(frag_length));
        out.extend_from_slice(
            &CommonHeader::new(PTYPE_RESPONSE, flags, frag_length, r.call_id).encode(),
        );
        out.extend_from_slice(&u32::try_from(remaining).unwrap_or(u32::MAX).to_le_bytes());
        out.extend_from_slice(&r.context_id.to_le_bytes());
        out.extend_from_slice(&[0, 0]); // cancel_count, reserved
        out.extend_from_slice(&self.stub[r.offset..r.offset + chunk]);
        r.offset += chunk;
    }

    fn answer(&mut self, pdu: &[u8], out: &mut Vec<u8>) -> Result<(), HandlerError> {
        let header = CommonHeader::decode(pdu)?;
        match header.ptype {
            PTYPE_BIND | PTYPE_ALTER_CONTEXT => {
                let log_as = self.log_calls.then_some("dcerpc");
                answer_bind(pdu, header.call_id, &self.sec_addr, log_as, out)?;
            }
            PTYPE_REQUEST => {
                let req = decode_request(pdu)?;
                if self.log_calls {
                    tracing::info!(
                        "opipe dcerpc: {} request call {} context {} opnum {} ({} stub bytes)",
                        self.sec_addr,
                        req.header.call_id,
                        req.context_id,
                        req.opnum,
                        req.stub.len()
                    );
                }
                if req.header.pfc_flags & PFC_LAST_FRAG != 0 {
                    let mut r = Reply {
                        call_id: req.header.call_id,
                        context_id: req.context_id,
                        offset: 0,
                    };
                    self.write_fragment(&mut r, out);
                    if r.offset < self.stub.len() {
                        self.reply = Some(r);
                    }
                }
            }
            p if PTYPES_IGNORED.contains(&p) => {}
            p => return Err(HandlerError::new(format!("unexpected DCE/RPC ptype {p}"))),
        }
        Ok(())
    }
}

impl Handler for DceRpc {
    fn on_data(&mut self, data: &[u8], out: &mut Vec<u8>) -> Result<(), HandlerError> {
        self.reassembler.push(data);
        self.process(out)
    }

    fn has_backlog(&self) -> bool {
        self.stalled
    }

    fn resume(&mut self, out: &mut Vec<u8>) -> Result<(), HandlerError> {
        self.process(out)
    }

    fn message_boundaries(&self) -> MessageBoundaries {
        MessageBoundaries::DceRpcPdus
    }
}

/// Answers a BIND or ALTER_CONTEXT with a BIND_ACK accepting every
/// context (appended to `out`); with `log_as` (the handler's name), each
/// context's interface is logged first (tracing `info`).
pub(super) fn answer_bind(
    pdu: &[u8],
    call_id: u32,
    sec_addr: &str,
    log_as: Option<&str>,
    out: &mut Vec<u8>,
) -> Result<(), HandlerError> {
    if let Some(name) = log_as {
        if let Ok(bind) = decode_bind(pdu) {
            for c in &bind.contexts {
                tracing::info!(
                    "opipe {name}: {sec_addr} bind call {call_id} context {}: {}",
                    c.context_id,
                    syntax_text(&c.abstract_syntax)
                );
            }
        }
    }
    out.extend_from_slice(&encode_bind_ack(pdu, sec_addr, DEFAULT_MAX_FRAG)?);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::dcerpc::{
        decode_bind_ack, decode_response, encode_bind, encode_request, encode_response,
        encoded_call_len, pdu_len, NDR_SYNTAX, PTYPE_BIND_ACK, SRVSVC_SYNTAX,
    };
    use crate::service::testutil::user;

    fn handler(reply: usize) -> Box<dyn Handler> {
        DceRpcFactory::new(reply).open(&PipeName::parse("srvsvc").unwrap(), &user(0))
    }

    /// Splits a byte stream into PDUs.
    fn pdus(mut buf: &[u8]) -> Vec<Vec<u8>> {
        let mut v = Vec::new();
        while !buf.is_empty() {
            let n = pdu_len(buf, DEFAULT_MAX_FRAG).unwrap().unwrap();
            v.push(buf[..n].to_vec());
            buf = &buf[n..];
        }
        v
    }

    fn bind() -> Vec<u8> {
        encode_bind(
            1,
            (SRVSVC_SYNTAX.uuid, SRVSVC_SYNTAX.version),
            (NDR_SYNTAX.uuid, NDR_SYNTAX.version),
        )
    }

    #[test]
    fn bind_gets_bind_ack_with_pipe_address() {
        let mut h = handler(0);
        let mut out = Vec::new();
        h.on_data(&bind(), &mut out).unwrap();
        let acks = pdus(&out);
        assert_eq!(acks.len(), 1);
        assert_eq!(
            CommonHeader::decode(&acks[0]).unwrap().ptype,
            PTYPE_BIND_ACK
        );
        let ack = decode_bind_ack(&acks[0]).unwrap();
        assert_eq!(ack.header.call_id, 1);
        assert_eq!(ack.sec_addr, "\\PIPE\\srvsvc");
    }

    #[test]
    fn request_of_ten_thousand_bytes_is_three_fragments() {
        let mut h = handler(10_000);
        let mut out = Vec::new();
        let req = encode_request(7, 0, 15, b"args", DEFAULT_MAX_FRAG);
        // Fed one byte at a time: nothing until the request is whole.
        for b in &req[..req.len() - 1] {
            h.on_data(std::slice::from_ref(b), &mut out).unwrap();
        }
        assert!(out.is_empty());
        h.on_data(&req[req.len() - 1..], &mut out).unwrap();
        let frags = pdus(&out);
        let lens: Vec<usize> = frags.iter().map(Vec::len).collect();
        assert_eq!(lens, [4280, 4280, 10_000 - 2 * 4256 + 24]);
        let mut stub = Vec::new();
        for (i, f) in frags.iter().enumerate() {
            let r = decode_response(f).unwrap();
            assert_eq!(r.header.ptype, PTYPE_RESPONSE);
            assert_eq!(r.header.call_id, 7);
            let first = r.header.pfc_flags & PFC_FIRST_FRAG != 0;
            let last = r.header.pfc_flags & PFC_LAST_FRAG != 0;
            assert_eq!((first, last), (i == 0, i == 2));
            stub.extend_from_slice(r.stub);
        }
        assert!(stub
            .iter()
            .enumerate()
            .all(|(i, &b)| b == reply_stub_byte(i)));
        assert_eq!(stub.len(), 10_000);
    }

    #[test]
    fn multi_fragment_request_is_answered_once() {
        let mut h = handler(8);
        let mut out = Vec::new();
        let req = encode_request(9, 0, 1, &vec![0xab; 9000], DEFAULT_MAX_FRAG);
        assert_eq!(pdus(&req).len(), 3);
        h.on_data(&req, &mut out).unwrap();
        assert_eq!(pdus(&out).len(), 1);
    }

    #[test]
    fn a_burst_of_requests_is_answered_in_batches() {
        let mut h = handler(10_000);
        let mut burst = Vec::new();
        for id in 0..100 {
            burst.extend_from_slice(&encode_request(id, 0, 1, b"", DEFAULT_MAX_FRAG));
        }
        let mut out = Vec::new();
        h.on_data(&burst, &mut out).unwrap();
        assert!(h.has_backlog());
        let mut total = out.len();
        assert!(total < OUTPUT_BATCH_BYTES + 11_000, "{total}");
        let mut calls = 0;
        while h.has_backlog() {
            out.clear();
            h.resume(&mut out).unwrap();
            assert!(out.len() < OUTPUT_BATCH_BYTES + 11_000);
            total += out.len();
            calls += 1;
        }
        assert!(calls > 5);
        assert_eq!(total, 100 * (10_000 + 3 * 24));
    }

    /// Feeds `input` then resumes while there is a backlog; returns every
    /// byte written and the most one call wrote.
    fn drain(h: &mut dyn Handler, input: &[u8]) -> (Vec<u8>, usize) {
        let mut all = Vec::new();
        let mut out = Vec::new();
        h.on_data(input, &mut out).unwrap();
        let mut most = out.len();
        all.append(&mut out);
        while h.has_backlog() {
            h.resume(&mut out).unwrap();
            assert!(!out.is_empty(), "a resume with a backlog made no progress");
            most = most.max(out.len());
            all.append(&mut out);
        }
        (all, most)
    }

    #[test]
    fn responses_written_fragment_by_fragment_match_the_encoder() {
        for size in [0, 1, 4255, 4256, 4257, 10_000, 3 * 4256, 200_003] {
            let mut h = handler(size);
            let req = encode_request(5, 3, 1, b"x", DEFAULT_MAX_FRAG);
            let (got, _) = drain(h.as_mut(), &req);
            let stub: Vec<u8> = (0..size).map(reply_stub_byte).collect();
            let want = encode_response(5, 3, &stub, DEFAULT_MAX_FRAG);
            assert!(
                got == want,
                "reply of {size} bytes differs from encode_response"
            );
        }
    }

    #[test]
    fn a_sixteen_mebibyte_reply_is_never_built_whole() {
        // Before: the whole 16 MiB response went into `out` at once.
        let mut h = handler(16 << 20);
        let mut burst = Vec::new();
        for id in 0..3 {
            burst.extend_from_slice(&encode_request(id, 0, 1, b"", DEFAULT_MAX_FRAG));
        }
        let mut out = Vec::new();
        h.on_data(&burst, &mut out).unwrap();
        assert!(h.has_backlog());
        assert!(out.len() <= OUTPUT_BATCH_BYTES + 4280, "{}", out.len());
        // Even with output already pending, each call makes progress and
        // stays within a batch plus a fragment.
        let (rest, most) = drain(h.as_mut(), &[]);
        assert!(most <= OUTPUT_BATCH_BYTES + 4280, "{most}");
        let total = out.len() + rest.len();
        assert_eq!(total, 3 * encoded_call_len(16 << 20, DEFAULT_MAX_FRAG));
    }

    #[test]
    fn bad_framing_is_an_error() {
        let mut h = handler(8);
        let mut out = Vec::new();
        let mut junk = encode_request(1, 0, 1, b"x", DEFAULT_MAX_FRAG);
        junk[8..10].copy_from_slice(&5000u16.to_le_bytes()); // frag_length > 4280
        assert!(h.on_data(&junk, &mut out).is_err());
        let mut h = handler(8);
        assert!(h.on_data(&[0xff; 64], &mut out).is_err());
        assert!(out.is_empty());
    }

    #[test]
    fn unexpected_ptype_is_an_error_and_ignored_ones_are_not() {
        let mut h = handler(8);
        let mut out = Vec::new();
        let resp = encode_response(1, 0, b"", DEFAULT_MAX_FRAG);
        assert!(h.on_data(&resp, &mut out).is_err());
        let mut h = handler(8);
        let mut auth3 = CommonHeader::new(16, PFC_FIRST_FRAG | PFC_LAST_FRAG, 20, 3)
            .encode()
            .to_vec();
        auth3.extend_from_slice(&[0; 4]);
        h.on_data(&auth3, &mut out).unwrap();
        assert!(out.is_empty());
    }
}
