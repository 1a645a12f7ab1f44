//! The PDUs of a call: request and response fragments (encoded cut to
//! `max_frag`, decoded one fragment at a time) and the fault PDU.

use super::header::{
    split_pdu, CommonHeader, FAULT_LEN, MIN_MAX_FRAG, PFC_FIRST_FRAG, PFC_LAST_FRAG,
    PFC_OBJECT_UUID, PTYPE_FAULT, PTYPE_REQUEST, PTYPE_RESPONSE, REQUEST_HEADER_LEN,
};
use crate::protocol::error::DecodeError;

/// Fault status `nca_s_op_rng_error`: unknown operation number.
pub const NCA_S_OP_RNG_ERROR: u32 = 0x1C01_0002;
/// Fault status `nca_s_unk_if`: unknown interface.
pub const NCA_S_UNK_IF: u32 = 0x1C01_0003;
/// Fault status `nca_s_proto_error`: protocol error.
pub const NCA_S_PROTO_ERROR: u32 = 0x1C01_000B;

/// The stub bytes one fragment can carry with `max_frag`: the room after a
/// 24-byte header, rounded down to a multiple of 8 so that every fragment
/// but the last keeps the stub 8-byte aligned (with the default 4280 this
/// is 4256, already a multiple of 8).
fn stub_room(max_frag: u16) -> usize {
    let max = usize::from(max_frag.max(MIN_MAX_FRAG));
    (max - REQUEST_HEADER_LEN) & !7
}

/// Total bytes of the fragments [`encode_request`] or [`encode_response`]
/// produce for `stub_len` bytes of stub.
pub fn encoded_call_len(stub_len: usize, max_frag: u16) -> usize {
    let room = stub_room(max_frag);
    let frags = stub_len.div_ceil(room).max(1);
    frags
        .saturating_mul(REQUEST_HEADER_LEN)
        .saturating_add(stub_len)
}

/// The per-call fields of every fragment header of one call.
struct CallFields {
    ptype: u8,
    call_id: u32,
    context_id: u16,
    /// The opnum for a request; `cancel_count` and a reserved byte for a
    /// response.
    tail: [u8; 2],
}

/// Appends the fragments of one call to `out`: each a 24-byte header
/// (common header, `alloc_hint`, `p_cont_id`, then the `tail`) and up to
/// `stub_room` bytes that `write_stub` appends for the given range.
fn fragment_call(
    out: &mut Vec<u8>,
    call: CallFields,
    stub_len: usize,
    max_frag: u16,
    mut write_stub: impl FnMut(&mut Vec<u8>, std::ops::Range<usize>),
) {
    let CallFields {
        ptype,
        call_id,
        context_id,
        tail,
    } = call;
    let room = stub_room(max_frag);
    out.reserve(encoded_call_len(stub_len, max_frag));
    let mut start = 0;
    loop {
        let remaining = stub_len - start;
        let chunk = remaining.min(room);
        let mut flags = 0;
        if start == 0 {
            flags |= PFC_FIRST_FRAG;
        }
        if chunk == remaining {
            flags |= PFC_LAST_FRAG;
        }
        // chunk <= room <= u16::MAX - 24, so this fits.
        let frag_length = (REQUEST_HEADER_LEN + chunk) as u16;
        out.extend_from_slice(&CommonHeader::new(ptype, flags, frag_length, call_id).encode());
        // alloc_hint: the stub bytes of this and every later fragment
        // (MS-RPCE "alloc_hint Interpretation").
        out.extend_from_slice(&u32::try_from(remaining).unwrap_or(u32::MAX).to_le_bytes());
        out.extend_from_slice(&context_id.to_le_bytes());
        out.extend_from_slice(&tail);
        write_stub(out, start..start + chunk);
        start += chunk;
        if start == stub_len {
            break;
        }
    }
}

/// The request fragments of one call (C706 12.6.4.9): as many as needed
/// for fragments of at most `max_frag` bytes (raised to [`MIN_MAX_FRAG`]),
/// `PFC_FIRST_FRAG` on the first, `PFC_LAST_FRAG` on the last, `alloc_hint`
/// the stub bytes left from each fragment on. An empty stub is one
/// fragment. Little-endian.
pub fn encode_request(
    call_id: u32,
    context_id: u16,
    opnum: u16,
    stub: &[u8],
    max_frag: u16,
) -> Vec<u8> {
    let mut out = Vec::new();
    encode_request_into(&mut out, call_id, context_id, opnum, stub, max_frag);
    out
}

/// [`encode_request`] into `out`, replacing its contents and keeping its
/// allocation (a caller that recycles its buffers allocates nothing).
pub fn encode_request_into(
    out: &mut Vec<u8>,
    call_id: u32,
    context_id: u16,
    opnum: u16,
    stub: &[u8],
    max_frag: u16,
) {
    out.clear();
    let call = CallFields {
        ptype: PTYPE_REQUEST,
        call_id,
        context_id,
        tail: opnum.to_le_bytes(),
    };
    fragment_call(out, call, stub.len(), max_frag, |out, range| {
        out.extend_from_slice(stub.get(range).unwrap_or(&[]))
    });
}

/// The response fragments of one call (C706 12.6.4.10), cut like
/// [`encode_request`]'s: fragments of at most `max_frag` bytes, flags and
/// `alloc_hint` right, `cancel_count` 0. Little-endian.
pub fn encode_response(call_id: u32, context_id: u16, stub: &[u8], max_frag: u16) -> Vec<u8> {
    let mut out = Vec::new();
    fragment_call(
        &mut out,
        response_fields(call_id, context_id),
        stub.len(),
        max_frag,
        |out, range| out.extend_from_slice(stub.get(range).unwrap_or(&[])),
    );
    out
}

fn response_fields(call_id: u32, context_id: u16) -> CallFields {
    CallFields {
        ptype: PTYPE_RESPONSE,
        call_id,
        context_id,
        tail: [0, 0],
    }
}

/// Like [`encode_response`] for a stub of `stub_len` bytes all equal to
/// `fill`, without building the stub first (for load generators).
pub fn encode_response_filled(
    call_id: u32,
    context_id: u16,
    stub_len: usize,
    fill: u8,
    max_frag: u16,
) -> Vec<u8> {
    let mut out = Vec::new();
    fragment_call(
        &mut out,
        response_fields(call_id, context_id),
        stub_len,
        max_frag,
        |out, range| out.resize(out.len() + range.len(), fill),
    );
    out
}

/// A fault PDU (C706 12.6.4.7) for `call_id` with an `nca_s_*` (or
/// Win32) `status`: 32 bytes, first and last fragment, little-endian.
pub fn encode_fault(call_id: u32, context_id: u16, status: u32) -> Vec<u8> {
    let mut out = Vec::with_capacity(FAULT_LEN);
    out.extend_from_slice(
        &CommonHeader::new(
            PTYPE_FAULT,
            PFC_FIRST_FRAG | PFC_LAST_FRAG,
            FAULT_LEN as u16,
            call_id,
        )
        .encode(),
    );
    out.extend_from_slice(&0u32.to_le_bytes()); // alloc_hint
    out.extend_from_slice(&context_id.to_le_bytes());
    out.push(0); // cancel_count
    out.push(0); // reserved
    out.extend_from_slice(&status.to_le_bytes());
    out.extend_from_slice(&[0; 4]); // reserved
    out
}

/// A decoded request fragment (C706 12.6.4.9), borrowing its stub.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request<'a> {
    /// The common header (flags tell first/last fragment).
    pub header: CommonHeader,
    /// Stub bytes expected from this fragment on (0 if the sender does not say).
    pub alloc_hint: u32,
    /// The presentation context (from the bind).
    pub context_id: u16,
    /// The operation number.
    pub opnum: u16,
    /// The object UUID, when `PFC_OBJECT_UUID` is set.
    pub object: Option<[u8; 16]>,
    /// The stub data of this fragment.
    pub stub: &'a [u8],
}

/// Decodes one whole request PDU (`pdu` exactly `frag_length` bytes), in
/// either byte order; the stub excludes any authentication verifier.
pub fn decode_request(pdu: &[u8]) -> Result<Request<'_>, DecodeError> {
    let (header, mut r) = split_pdu(pdu, &[PTYPE_REQUEST])?;
    let alloc_hint = r.u32("alloc_hint")?;
    let context_id = r.u16("p_cont_id")?;
    let opnum = r.u16("opnum")?;
    let object = if header.pfc_flags & PFC_OBJECT_UUID != 0 {
        Some(r.uuid("object")?)
    } else {
        None
    };
    Ok(Request {
        header,
        alloc_hint,
        context_id,
        opnum,
        object,
        stub: r.rest,
    })
}

/// A decoded response fragment (C706 12.6.4.10), borrowing its stub.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response<'a> {
    /// The common header (flags tell first/last fragment).
    pub header: CommonHeader,
    /// Stub bytes expected from this fragment on.
    pub alloc_hint: u32,
    /// The presentation context.
    pub context_id: u16,
    /// Cancels the server received.
    pub cancel_count: u8,
    /// The stub data of this fragment.
    pub stub: &'a [u8],
}

/// Decodes one whole response PDU (`pdu` exactly `frag_length` bytes), in
/// either byte order; the stub excludes any authentication verifier.
pub fn decode_response(pdu: &[u8]) -> Result<Response<'_>, DecodeError> {
    let (header, mut r) = split_pdu(pdu, &[PTYPE_RESPONSE])?;
    let alloc_hint = r.u32("alloc_hint")?;
    let context_id = r.u16("p_cont_id")?;
    let cancel_count = r.u8("cancel_count")?;
    let _reserved = r.u8("reserved")?;
    Ok(Response {
        header,
        alloc_hint,
        context_id,
        cancel_count,
        stub: r.rest,
    })
}

/// A decoded fault PDU: its call and status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fault {
    /// The common header.
    pub header: CommonHeader,
    /// The presentation context.
    pub context_id: u16,
    /// The fault status (`nca_s_*` or a Win32 error).
    pub status: u32,
}

/// Decodes one whole fault PDU; bytes after the status are ignored.
pub fn decode_fault(pdu: &[u8]) -> Result<Fault, DecodeError> {
    let (header, mut r) = split_pdu(pdu, &[PTYPE_FAULT])?;
    let _alloc_hint = r.u32("alloc_hint")?;
    let context_id = r.u16("p_cont_id")?;
    let _cancel_count = r.u8("cancel_count")?;
    let _reserved = r.u8("reserved")?;
    let status = r.u32("status")?;
    Ok(Fault {
        header,
        context_id,
        status,
    })
}
