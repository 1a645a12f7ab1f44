//! Binding a presentation context: bind / alter_context and their answer,
//! bind_ack / alter_context_resp, with the fragment-size negotiation.

use super::header::{
    split_pdu, CommonHeader, COMMON_HEADER_LEN, DEFAULT_MAX_FRAG, MUST_RECV_FRAG_SIZE,
    PFC_FIRST_FRAG, PFC_LAST_FRAG, PTYPE_ALTER_CONTEXT, PTYPE_ALTER_CONTEXT_RESP, PTYPE_BIND,
    PTYPE_BIND_ACK,
};
use super::syntax::SyntaxId;
use crate::protocol::error::DecodeError;

/// `p_cont_def_result_t`: acceptance.
pub const RESULT_ACCEPTANCE: u16 = 0;
/// `p_cont_def_result_t`: user rejection.
pub const RESULT_USER_REJECTION: u16 = 1;
/// `p_cont_def_result_t`: provider rejection.
pub const RESULT_PROVIDER_REJECTION: u16 = 2;
/// `p_provider_reason_t`: reason not specified.
pub const REASON_NOT_SPECIFIED: u16 = 0;
/// `p_provider_reason_t`: abstract syntax not supported.
pub const REASON_ABSTRACT_SYNTAX_NOT_SUPPORTED: u16 = 1;
/// `p_provider_reason_t`: proposed transfer syntaxes not supported.
pub const REASON_TRANSFER_SYNTAXES_NOT_SUPPORTED: u16 = 2;

/// The `assoc_group_id` a bind_ack gives a client that asked for a new
/// association group (0). Any non-zero value works; this one is fixed so
/// tests are deterministic.
pub const DEFAULT_ASSOC_GROUP_ID: u32 = 0x0000_53F0;

/// Longest secondary address (`sec_addr`, with its NUL) accepted.
pub const MAX_SEC_ADDR_BYTES: usize = 256;

/// One presentation context proposed by a bind (`p_cont_elem_t`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PresentationContext {
    /// The context id the client will use in requests.
    pub context_id: u16,
    /// The interface.
    pub abstract_syntax: SyntaxId,
    /// The transfer syntaxes proposed, in the client's order of preference.
    pub transfer_syntaxes: Vec<SyntaxId>,
}

/// A decoded bind or alter_context PDU (C706 12.6.4.3).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bind {
    /// The common header.
    pub header: CommonHeader,
    /// Largest fragment the client will send.
    pub max_xmit_frag: u16,
    /// Largest fragment the client can receive.
    pub max_recv_frag: u16,
    /// The association group asked for (0: a new one).
    pub assoc_group_id: u32,
    /// The proposed presentation contexts.
    pub contexts: Vec<PresentationContext>,
}

/// Decodes one whole bind or alter_context PDU (`pdu` exactly
/// `frag_length` bytes), either byte order. Bounded: every count is checked
/// against the bytes left before anything is stored; bytes after the
/// contexts are refused unless an authentication verifier is present.
pub fn decode_bind(pdu: &[u8]) -> Result<Bind, DecodeError> {
    let (header, mut r) = split_pdu(pdu, &[PTYPE_BIND, PTYPE_ALTER_CONTEXT])?;
    let max_xmit_frag = r.u16("max_xmit_frag")?;
    let max_recv_frag = r.u16("max_recv_frag")?;
    let assoc_group_id = r.u32("assoc_group_id")?;
    let n_context = r.u8("n_context_elem")?;
    let _reserved = r.take::<3>("reserved")?;
    let mut contexts = Vec::new();
    for _ in 0..n_context {
        let context_id = r.u16("p_cont_id")?;
        let n_transfer = r.u8("n_transfer_syn")?;
        let _reserved = r.u8("reserved")?;
        let abstract_syntax = r.syntax("abstract_syntax")?;
        // Check the whole list is there before allocating for it.
        if usize::from(n_transfer) * 20 > r.rest.len() {
            return Err(DecodeError::UnexpectedEnd {
                field: "transfer_syntaxes",
                needed: usize::from(n_transfer) * 20,
                remaining: r.rest.len(),
            });
        }
        let mut transfer_syntaxes = Vec::with_capacity(usize::from(n_transfer));
        for _ in 0..n_transfer {
            transfer_syntaxes.push(r.syntax("transfer_syntaxes")?);
        }
        contexts.push(PresentationContext {
            context_id,
            abstract_syntax,
            transfer_syntaxes,
        });
    }
    if header.auth_length == 0 {
        r.finish()?;
    }
    Ok(Bind {
        header,
        max_xmit_frag,
        max_recv_frag,
        assoc_group_id,
        contexts,
    })
}

/// A bind PDU proposing one presentation context (id 0) with one transfer
/// syntax; `max_xmit_frag` and `max_recv_frag` are [`DEFAULT_MAX_FRAG`],
/// `assoc_group_id` 0. Syntaxes are (UUID in this module's layout, version).
/// For clients and tests.
pub fn encode_bind(
    call_id: u32,
    abstract_syntax: ([u8; 16], u32),
    transfer_syntax: ([u8; 16], u32),
) -> Vec<u8> {
    const LEN: usize = COMMON_HEADER_LEN + 8 + 4 + 4 + 20 + 20;
    let mut out = Vec::with_capacity(LEN);
    out.extend_from_slice(
        &CommonHeader::new(
            PTYPE_BIND,
            PFC_FIRST_FRAG | PFC_LAST_FRAG,
            LEN as u16,
            call_id,
        )
        .encode(),
    );
    out.extend_from_slice(&DEFAULT_MAX_FRAG.to_le_bytes()); // max_xmit_frag
    out.extend_from_slice(&DEFAULT_MAX_FRAG.to_le_bytes()); // max_recv_frag
    out.extend_from_slice(&0u32.to_le_bytes()); // assoc_group_id
    out.extend_from_slice(&[1, 0, 0, 0]); // n_context_elem, reserved
    out.extend_from_slice(&0u16.to_le_bytes()); // p_cont_id
    out.extend_from_slice(&[1, 0]); // n_transfer_syn, reserved
    put_syntax(&mut out, abstract_syntax.into());
    put_syntax(&mut out, transfer_syntax.into());
    debug_assert_eq!(out.len(), LEN);
    out
}

fn put_syntax(out: &mut Vec<u8>, s: SyntaxId) {
    out.extend_from_slice(&s.uuid);
    out.extend_from_slice(&s.version.to_le_bytes());
}

/// The fragment size a server grants for a client's offer: the smaller of
/// the two, but not below [`MUST_RECV_FRAG_SIZE`] (unless `ours` is).
fn negotiate(client: u16, ours: u16) -> u16 {
    client.min(ours).max(MUST_RECV_FRAG_SIZE.min(ours))
}

/// Answers a bind (or alter_context) PDU with a bind_ack (or
/// alter_context_resp), C706 12.6.4.4, little-endian.
///
/// The first presentation context is accepted (result 0) with its first
/// transfer syntax; every other context, and a first context with no
/// transfer syntax, is refused with provider rejection (2), reason
/// "proposed transfer syntaxes not supported" (2). The ack has the bind's
/// `call_id`; its fragment sizes are the client's offers capped at
/// `max_frag` (and not below [`MUST_RECV_FRAG_SIZE`] unless `max_frag`
/// is); its association group is the client's, or
/// [`DEFAULT_ASSOC_GROUP_ID`] when the client asked for a new one.
/// `sec_addr` is the pipe's secondary address, such as `\PIPE\srvsvc`
/// (sent NUL-terminated; an alter_context_resp carries none).
///
/// Errors: anything [`decode_bind`] refuses; a bind longer than
/// `max_frag`; a bind with no presentation context; a `sec_addr` with a
/// NUL or longer than [`MAX_SEC_ADDR_BYTES`] with its NUL.
pub fn encode_bind_ack(
    bind_pdu: &[u8],
    sec_addr: &str,
    max_frag: u16,
) -> Result<Vec<u8>, DecodeError> {
    if bind_pdu.len() > usize::from(max_frag) {
        return Err(DecodeError::TooLong {
            field: "frag_length",
            len: bind_pdu.len() as u64,
            max: u64::from(max_frag),
        });
    }
    let bind = decode_bind(bind_pdu)?;
    let Some((first, others)) = bind.contexts.split_first() else {
        return Err(DecodeError::InvalidValue {
            field: "n_context_elem",
            value: 0,
        });
    };
    let alter = bind.header.ptype == PTYPE_ALTER_CONTEXT;
    let sec_addr: &[u8] = if alter { b"" } else { sec_addr.as_bytes() };
    if sec_addr.contains(&0) {
        return Err(DecodeError::EmbeddedNul { field: "sec_addr" });
    }
    let sec_addr_len = if sec_addr.is_empty() {
        0
    } else {
        sec_addr.len() + 1
    };
    if sec_addr_len > MAX_SEC_ADDR_BYTES {
        return Err(DecodeError::TooLong {
            field: "sec_addr",
            len: sec_addr_len as u64,
            max: MAX_SEC_ADDR_BYTES as u64,
        });
    }

    let mut out = Vec::with_capacity(64 + sec_addr_len + 24 * bind.contexts.len());
    out.extend_from_slice(&[0; COMMON_HEADER_LEN]); // header, filled in below
    out.extend_from_slice(&negotiate(bind.max_recv_frag, max_frag).to_le_bytes()); // max_xmit_frag
    out.extend_from_slice(&negotiate(bind.max_xmit_frag, max_frag).to_le_bytes()); // max_recv_frag
    let assoc = if bind.assoc_group_id != 0 {
        bind.assoc_group_id
    } else {
        DEFAULT_ASSOC_GROUP_ID
    };
    out.extend_from_slice(&assoc.to_le_bytes());
    // sec_addr: port_any_t, length with the NUL (<= MAX_SEC_ADDR_BYTES).
    out.extend_from_slice(&(sec_addr_len as u16).to_le_bytes());
    if sec_addr_len > 0 {
        out.extend_from_slice(sec_addr);
        out.push(0);
    }
    // Align the result list to 4 bytes from the start of the PDU.
    out.resize(out.len().next_multiple_of(4), 0);
    // p_result_list_t: n_results (<= 255, one per context), reserved.
    out.extend_from_slice(&[bind.contexts.len() as u8, 0, 0, 0]);
    match first.transfer_syntaxes.first() {
        Some(&ts) => {
            out.extend_from_slice(&RESULT_ACCEPTANCE.to_le_bytes());
            out.extend_from_slice(&REASON_NOT_SPECIFIED.to_le_bytes());
            put_syntax(&mut out, ts);
        }
        None => put_rejection(&mut out),
    }
    for _ in others {
        put_rejection(&mut out);
    }
    let frag_length = u16::try_from(out.len()).map_err(|_| DecodeError::TooLong {
        field: "bind_ack",
        len: out.len() as u64,
        max: u64::from(u16::MAX),
    })?;
    let ptype = if alter {
        PTYPE_ALTER_CONTEXT_RESP
    } else {
        PTYPE_BIND_ACK
    };
    let header = CommonHeader::new(
        ptype,
        PFC_FIRST_FRAG | PFC_LAST_FRAG,
        frag_length,
        bind.header.call_id,
    );
    if let Some(h) = out.get_mut(..COMMON_HEADER_LEN) {
        h.copy_from_slice(&header.encode());
    }
    Ok(out)
}

fn put_rejection(out: &mut Vec<u8>) {
    out.extend_from_slice(&RESULT_PROVIDER_REJECTION.to_le_bytes());
    out.extend_from_slice(&REASON_TRANSFER_SYNTAXES_NOT_SUPPORTED.to_le_bytes());
    put_syntax(out, SyntaxId::default());
}

/// The result for one proposed presentation context (`p_result_t`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ContextResult {
    /// `RESULT_*`: 0 acceptance, 1 user rejection, 2 provider rejection.
    pub result: u16,
    /// `REASON_*` for a rejection; 0 when accepted.
    pub reason: u16,
    /// The accepted transfer syntax (zero when rejected).
    pub transfer_syntax: SyntaxId,
}

/// A decoded bind_ack or alter_context_resp.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BindAck {
    /// The common header (`call_id` must match the bind's).
    pub header: CommonHeader,
    /// Largest fragment the server will send.
    pub max_xmit_frag: u16,
    /// Largest fragment the server can receive.
    pub max_recv_frag: u16,
    /// The association group.
    pub assoc_group_id: u32,
    /// The secondary address, without its NUL (empty when none).
    pub sec_addr: String,
    /// One result per proposed context, in order.
    pub results: Vec<ContextResult>,
}

/// Decodes one whole bind_ack or alter_context_resp PDU, either byte order.
/// Refuses a `sec_addr` over [`MAX_SEC_ADDR_BYTES`], not NUL-terminated,
/// with an inner NUL or not UTF-8, and bytes after the results unless an
/// authentication verifier is present. Alignment padding is not checked.
pub fn decode_bind_ack(pdu: &[u8]) -> Result<BindAck, DecodeError> {
    let (header, mut r) = split_pdu(pdu, &[PTYPE_BIND_ACK, PTYPE_ALTER_CONTEXT_RESP])?;
    let max_xmit_frag = r.u16("max_xmit_frag")?;
    let max_recv_frag = r.u16("max_recv_frag")?;
    let assoc_group_id = r.u32("assoc_group_id")?;
    let sec_len = usize::from(r.u16("sec_addr length")?);
    if sec_len > MAX_SEC_ADDR_BYTES {
        return Err(DecodeError::TooLong {
            field: "sec_addr",
            len: sec_len as u64,
            max: MAX_SEC_ADDR_BYTES as u64,
        });
    }
    let raw = r.bytes("sec_addr", sec_len)?;
    let sec_addr = match raw.split_last() {
        None => String::new(),
        Some((0, text)) => {
            if text.contains(&0) {
                return Err(DecodeError::EmbeddedNul { field: "sec_addr" });
            }
            std::str::from_utf8(text)
                .map_err(|_| DecodeError::InvalidUtf8 { field: "sec_addr" })?
                .to_owned()
        }
        Some((&last, _)) => {
            return Err(DecodeError::InvalidValue {
                field: "sec_addr terminator",
                value: u64::from(last),
            })
        }
    };
    // Padding to a 4-byte boundary from the start of the PDU: the header
    // (16) and the fields above (10) make 26 + sec_len.
    let pad = (4 - (26 + sec_len) % 4) % 4;
    r.bytes("sec_addr padding", pad)?;
    let n_results = r.u8("n_results")?;
    let _reserved = r.take::<3>("reserved")?;
    if usize::from(n_results) * 24 > r.rest.len() {
        return Err(DecodeError::UnexpectedEnd {
            field: "p_results",
            needed: usize::from(n_results) * 24,
            remaining: r.rest.len(),
        });
    }
    let mut results = Vec::with_capacity(usize::from(n_results));
    for _ in 0..n_results {
        let result = r.u16("result")?;
        let reason = r.u16("reason")?;
        let transfer_syntax = r.syntax("transfer_syntax")?;
        results.push(ContextResult {
            result,
            reason,
            transfer_syntax,
        });
    }
    if header.auth_length == 0 {
        r.finish()?;
    }
    Ok(BindAck {
        header,
        max_xmit_frag,
        max_recv_frag,
        assoc_group_id,
        sec_addr,
        results,
    })
}
