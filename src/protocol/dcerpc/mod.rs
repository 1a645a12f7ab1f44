//! Connection-oriented DCE/RPC framing (C706 chapter 12, with the
//! MS-RPCE 2.2.2 extensions): what crosses a pipe after the open
//! (PROTOCOL.md section 3).
//!
//! This is only the framing a pipe transport and a simple service need:
//! the 16-byte common header and `frag_length` framing of a byte stream
//! ([`pdu_len`], [`PduReassembler`]), request and response fragments, fault
//! PDUs, and bind / bind_ack (also alter_context / alter_context_resp).
//! No NDR, no authentication (verifiers are skipped over, never checked).
//!
//! Integers follow the data representation label `drep` of each PDU: the
//! high nibble of `drep[0]` is 1 for little-endian, 0 for big-endian
//! (C706 14.1). Decoders accept both; encoders here always write
//! little-endian ([`DREP_LE`]), the order of every Windows and illumos peer.
//!
//! UUIDs are kept as 16 bytes in the layout of a little-endian PDU (the
//! Microsoft GUID layout: first three fields little-endian, last eight
//! bytes as they are); decoders convert the UUIDs of a big-endian PDU.

use super::error::{take_array, DecodeError};

/// Length of the common header every PDU starts with.
pub const COMMON_HEADER_LEN: usize = 16;
/// Length of a request PDU's header: common header, `alloc_hint`,
/// `p_cont_id`, `opnum`.
pub const REQUEST_HEADER_LEN: usize = 24;
/// Length of a response PDU's header: common header, `alloc_hint`,
/// `p_cont_id`, `cancel_count`, a reserved byte.
pub const RESPONSE_HEADER_LEN: usize = 24;
/// Length of a fault PDU (without authentication).
pub const FAULT_LEN: usize = 32;

/// The default maximum fragment size, both ways (illumos smbd, Windows).
pub const DEFAULT_MAX_FRAG: u16 = 4280;
/// The fragment size every implementation must accept (C706 12.6.3.1,
/// `MustRecvFragSize`); a bind_ack never negotiates below it unless the
/// server's own maximum is smaller.
pub const MUST_RECV_FRAG_SIZE: u16 = 1432;
/// The smallest `max_frag` the encoders honour: a request/response header
/// and 8 bytes of stub. A smaller value is raised to this.
pub const MIN_MAX_FRAG: u16 = 32;

/// `PTYPE` request.
pub const PTYPE_REQUEST: u8 = 0;
/// `PTYPE` response.
pub const PTYPE_RESPONSE: u8 = 2;
/// `PTYPE` fault.
pub const PTYPE_FAULT: u8 = 3;
/// `PTYPE` bind.
pub const PTYPE_BIND: u8 = 11;
/// `PTYPE` bind_ack.
pub const PTYPE_BIND_ACK: u8 = 12;
/// `PTYPE` bind_nak.
pub const PTYPE_BIND_NAK: u8 = 13;
/// `PTYPE` alter_context (a bind on an existing association).
pub const PTYPE_ALTER_CONTEXT: u8 = 14;
/// `PTYPE` alter_context_resp.
pub const PTYPE_ALTER_CONTEXT_RESP: u8 = 15;

/// `pfc_flags`: first fragment of a call.
pub const PFC_FIRST_FRAG: u8 = 0x01;
/// `pfc_flags`: last fragment of a call.
pub const PFC_LAST_FRAG: u8 = 0x02;
/// `pfc_flags`: an object UUID follows a request's header.
pub const PFC_OBJECT_UUID: u8 = 0x80;

/// The data representation opipe writes: little-endian integers, ASCII
/// characters, IEEE floats.
pub const DREP_LE: [u8; 4] = [0x10, 0, 0, 0];

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

/// Fault status `nca_s_op_rng_error`: unknown operation number.
pub const NCA_S_OP_RNG_ERROR: u32 = 0x1C01_0002;
/// Fault status `nca_s_unk_if`: unknown interface.
pub const NCA_S_UNK_IF: u32 = 0x1C01_0003;
/// Fault status `nca_s_proto_error`: protocol error.
pub const NCA_S_PROTO_ERROR: u32 = 0x1C01_000B;

/// The `assoc_group_id` a bind_ack gives a client that asked for a new
/// association group (0). Any non-zero value works; this one is fixed so
/// tests are deterministic.
pub const DEFAULT_ASSOC_GROUP_ID: u32 = 0x0000_53F0;

/// Longest secondary address (`sec_addr`, with its NUL) accepted.
pub const MAX_SEC_ADDR_BYTES: usize = 256;

/// Builds a UUID in the 16-byte layout this module uses, from its textual
/// fields (`time_low-time_mid-time_hi-clock_seq-node`).
pub const fn uuid(time_low: u32, time_mid: u16, time_hi: u16, tail: [u8; 8]) -> [u8; 16] {
    let a = time_low.to_le_bytes();
    let b = time_mid.to_le_bytes();
    let c = time_hi.to_le_bytes();
    [
        a[0], a[1], a[2], a[3], b[0], b[1], c[0], c[1], tail[0], tail[1], tail[2], tail[3],
        tail[4], tail[5], tail[6], tail[7],
    ]
}

/// The NDR transfer syntax, `8a885d04-1ceb-11c9-9fe8-08002b104860` version 2.
pub const NDR_SYNTAX: SyntaxId = SyntaxId {
    uuid: uuid(
        0x8a88_5d04,
        0x1ceb,
        0x11c9,
        [0x9f, 0xe8, 0x08, 0x00, 0x2b, 0x10, 0x48, 0x60],
    ),
    version: 2,
};

/// The SRVSVC interface, `4b324fc8-1670-01d3-1278-5a47bf6ee188` version 3.0.
pub const SRVSVC_SYNTAX: SyntaxId = SyntaxId {
    uuid: uuid(
        0x4b32_4fc8,
        0x1670,
        0x01d3,
        [0x12, 0x78, 0x5a, 0x47, 0xbf, 0x6e, 0xe1, 0x88],
    ),
    version: 3,
};

/// A presentation syntax identifier (`p_syntax_id_t`): an interface or
/// transfer syntax UUID and its version (for interfaces, major in the low
/// 16 bits, minor in the high 16 bits, as MS-RPCE lays it out).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct SyntaxId {
    /// The UUID, in little-endian PDU layout (see the module documentation).
    pub uuid: [u8; 16],
    /// The version.
    pub version: u32,
}

impl From<([u8; 16], u32)> for SyntaxId {
    fn from((uuid, version): ([u8; 16], u32)) -> Self {
        SyntaxId { uuid, version }
    }
}

impl From<SyntaxId> for ([u8; 16], u32) {
    fn from(s: SyntaxId) -> Self {
        (s.uuid, s.version)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Order {
    Little,
    Big,
}

impl Order {
    fn of(drep: [u8; 4]) -> Result<Order, DecodeError> {
        match drep[0] >> 4 {
            1 => Ok(Order::Little),
            0 => Ok(Order::Big),
            _ => Err(DecodeError::InvalidValue {
                field: "drep",
                value: u64::from(drep[0]),
            }),
        }
    }

    fn u16(self, b: [u8; 2]) -> u16 {
        match self {
            Order::Little => u16::from_le_bytes(b),
            Order::Big => u16::from_be_bytes(b),
        }
    }

    fn u32(self, b: [u8; 4]) -> u32 {
        match self {
            Order::Little => u32::from_le_bytes(b),
            Order::Big => u32::from_be_bytes(b),
        }
    }

    fn u16_bytes(self, v: u16) -> [u8; 2] {
        match self {
            Order::Little => v.to_le_bytes(),
            Order::Big => v.to_be_bytes(),
        }
    }

    fn u32_bytes(self, v: u32) -> [u8; 4] {
        match self {
            Order::Little => v.to_le_bytes(),
            Order::Big => v.to_be_bytes(),
        }
    }
}

/// A bounded reader over part of a PDU, in the PDU's byte order.
struct Reader<'a> {
    rest: &'a [u8],
    order: Order,
}

impl<'a> Reader<'a> {
    fn take<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], DecodeError> {
        take_array(&mut self.rest, field)
    }

    fn bytes(&mut self, field: &'static str, n: usize) -> Result<&'a [u8], DecodeError> {
        if n > self.rest.len() {
            return Err(DecodeError::UnexpectedEnd {
                field,
                needed: n,
                remaining: self.rest.len(),
            });
        }
        let (head, rest) = self.rest.split_at(n);
        self.rest = rest;
        Ok(head)
    }

    fn u8(&mut self, field: &'static str) -> Result<u8, DecodeError> {
        self.take::<1>(field).map(|[b]| b)
    }

    fn u16(&mut self, field: &'static str) -> Result<u16, DecodeError> {
        let b = self.take::<2>(field)?;
        Ok(self.order.u16(b))
    }

    fn u32(&mut self, field: &'static str) -> Result<u32, DecodeError> {
        let b = self.take::<4>(field)?;
        Ok(self.order.u32(b))
    }

    /// A UUID, converted to the little-endian layout if the PDU is
    /// big-endian (its first three fields are integers).
    fn uuid(&mut self, field: &'static str) -> Result<[u8; 16], DecodeError> {
        let mut uuid = self.take::<16>(field)?;
        if self.order == Order::Big {
            uuid[0..4].reverse();
            uuid[4..6].reverse();
            uuid[6..8].reverse();
        }
        Ok(uuid)
    }

    fn syntax(&mut self, field: &'static str) -> Result<SyntaxId, DecodeError> {
        let uuid = self.uuid(field)?;
        let version = self.u32(field)?;
        Ok(SyntaxId { uuid, version })
    }

    fn finish(self) -> Result<(), DecodeError> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::TrailingBytes {
                count: self.rest.len(),
            })
        }
    }
}

/// The common header of every connection-oriented PDU (C706 12.6.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CommonHeader {
    /// Major version: always 5.
    pub rpc_vers: u8,
    /// Minor version: 0 or 1 (not checked).
    pub rpc_vers_minor: u8,
    /// The PDU type (`PTYPE_*`).
    pub ptype: u8,
    /// `PFC_*` flags.
    pub pfc_flags: u8,
    /// Data representation label; `drep[0]` high nibble 1 = little-endian.
    pub drep: [u8; 4],
    /// Length of the whole PDU, header included.
    pub frag_length: u16,
    /// Length of the authentication verifier's credentials.
    pub auth_length: u16,
    /// The call this PDU belongs to.
    pub call_id: u32,
}

impl CommonHeader {
    /// A little-endian header with version 5.0.
    pub fn new(ptype: u8, pfc_flags: u8, frag_length: u16, call_id: u32) -> Self {
        CommonHeader {
            rpc_vers: 5,
            rpc_vers_minor: 0,
            ptype,
            pfc_flags,
            drep: DREP_LE,
            frag_length,
            auth_length: 0,
            call_id,
        }
    }

    /// Decodes the first 16 bytes of `buf` (which may hold more: the rest
    /// of the PDU). Refuses a short buffer, `rpc_vers` other than 5, and an
    /// integer representation other than big- or little-endian. The lengths
    /// are not checked here: see [`pdu_len`].
    pub fn decode(buf: &[u8]) -> Result<CommonHeader, DecodeError> {
        let (head, _) =
            buf.split_first_chunk::<COMMON_HEADER_LEN>()
                .ok_or(DecodeError::UnexpectedEnd {
                    field: "common header",
                    needed: COMMON_HEADER_LEN,
                    remaining: buf.len(),
                })?;
        let [vers, minor, ptype, flags, d0, d1, d2, d3, f0, f1, a0, a1, c0, c1, c2, c3] = *head;
        if vers != 5 {
            return Err(DecodeError::InvalidValue {
                field: "rpc_vers",
                value: u64::from(vers),
            });
        }
        let drep = [d0, d1, d2, d3];
        let order = Order::of(drep)?;
        Ok(CommonHeader {
            rpc_vers: vers,
            rpc_vers_minor: minor,
            ptype,
            pfc_flags: flags,
            drep,
            frag_length: order.u16([f0, f1]),
            auth_length: order.u16([a0, a1]),
            call_id: order.u32([c0, c1, c2, c3]),
        })
    }

    /// The 16 wire bytes, integers in the order `drep` names (big-endian
    /// unless `drep[0]`'s high nibble is 1).
    pub fn encode(&self) -> [u8; COMMON_HEADER_LEN] {
        let order = if self.drep[0] >> 4 == 1 {
            Order::Little
        } else {
            Order::Big
        };
        let [d0, d1, d2, d3] = self.drep;
        let [f0, f1] = order.u16_bytes(self.frag_length);
        let [a0, a1] = order.u16_bytes(self.auth_length);
        let [c0, c1, c2, c3] = order.u32_bytes(self.call_id);
        [
            self.rpc_vers,
            self.rpc_vers_minor,
            self.ptype,
            self.pfc_flags,
            d0,
            d1,
            d2,
            d3,
            f0,
            f1,
            a0,
            a1,
            c0,
            c1,
            c2,
            c3,
        ]
    }

    /// True when `drep` says little-endian integers.
    pub fn is_little_endian(&self) -> bool {
        self.drep[0] >> 4 == 1
    }

    fn order(&self) -> Order {
        if self.is_little_endian() {
            Order::Little
        } else {
            Order::Big
        }
    }
}

/// The smallest `frag_length` a PDU of type `ptype` can have.
fn min_frag_length(ptype: u8) -> usize {
    match ptype {
        PTYPE_REQUEST | PTYPE_RESPONSE | PTYPE_FAULT => REQUEST_HEADER_LEN,
        _ => COMMON_HEADER_LEN,
    }
}

/// How long the PDU at the start of `buf` is, from its `frag_length`
/// (PROTOCOL.md section 3).
///
/// `Ok(None)`: fewer than 16 bytes yet. `Err`: the header is invalid (see
/// [`CommonHeader::decode`]), or `frag_length` is under the header size (16,
/// or 24 for request, response and fault) or over `max_frag`; the stream
/// cannot be framed any further. `Ok(Some(n))`: the PDU is `n` bytes, which
/// `buf` may or may not hold yet.
pub fn pdu_len(buf: &[u8], max_frag: u16) -> Result<Option<usize>, DecodeError> {
    if buf.len() < COMMON_HEADER_LEN {
        return Ok(None);
    }
    let header = CommonHeader::decode(buf)?;
    let len = usize::from(header.frag_length);
    let min = min_frag_length(header.ptype);
    if len < min {
        return Err(DecodeError::TooShort {
            field: "frag_length",
            len: len as u64,
            min: min as u64,
        });
    }
    if len > usize::from(max_frag) {
        return Err(DecodeError::TooLong {
            field: "frag_length",
            len: len as u64,
            max: u64::from(max_frag),
        });
    }
    Ok(Some(len))
}

/// Cuts a byte stream into whole PDUs by their `frag_length`.
///
/// Use: [`push`](PduReassembler::push) what the socket gave, then call
/// [`next_pdu`](PduReassembler::next_pdu) until it returns `None`. Done that
/// way, it never holds more than `max_frag - 1` bytes between pushes, so a
/// hostile stream can make it buffer at most `max_frag` plus the bytes just
/// pushed, whatever `frag_length` it claims.
///
/// A framing error (see [`pdu_len`]) is final: the stream cannot be
/// re-synchronised. `next_pdu` returns the error once and then `None`
/// forever, and the reassembler drops its buffer and all later input; the
/// connection should be closed.
#[derive(Debug)]
pub struct PduReassembler {
    max_frag: u16,
    /// Received bytes; those before `start` were already handed out.
    buf: Vec<u8>,
    start: usize,
    failed: Option<DecodeError>,
    reported: bool,
}

impl PduReassembler {
    /// A reassembler refusing PDUs longer than `max_frag` bytes.
    pub fn new(max_frag: u16) -> Self {
        PduReassembler {
            max_frag,
            buf: Vec::new(),
            start: 0,
            failed: None,
            reported: false,
        }
    }

    fn pending(&self) -> &[u8] {
        self.buf.get(self.start..).unwrap_or(&[])
    }

    /// Appends bytes read from the stream (dropped after a framing error).
    /// A header that fails [`pdu_len`] at the front of the buffer is
    /// detected here already, so bytes behind it are never kept.
    pub fn push(&mut self, bytes: &[u8]) {
        if self.failed.is_some() {
            return;
        }
        // Drop what was handed out before growing, so the buffer holds only
        // pending bytes plus this push. Amortised: each byte moves at most
        // once per push.
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
        if let Err(e) = pdu_len(&self.buf, self.max_frag) {
            self.fail(e);
        }
    }

    fn fail(&mut self, e: DecodeError) {
        self.failed = Some(e);
        self.buf = Vec::new();
        self.start = 0;
    }

    /// The next whole PDU, if the buffer holds one; `Some(Err)` once after
    /// a framing error. Each PDU is copied out into its own exactly-sized
    /// vector, so taking many PDUs from one large push costs linear time.
    pub fn next_pdu(&mut self) -> Option<Result<Vec<u8>, DecodeError>> {
        if let Some(e) = &self.failed {
            if self.reported {
                return None;
            }
            self.reported = true;
            return Some(Err(e.clone()));
        }
        let pending = self.pending();
        match pdu_len(pending, self.max_frag) {
            Ok(None) => None,
            Ok(Some(len)) => {
                let pdu = pending.get(..len)?.to_vec();
                self.start += len;
                if self.start == self.buf.len() {
                    self.buf.clear();
                    self.start = 0;
                }
                // The next header, if complete, is checked now rather than
                // at the next push.
                if let Err(e) = pdu_len(self.pending(), self.max_frag) {
                    self.fail(e);
                }
                Some(Ok(pdu))
            }
            Err(e) => {
                self.fail(e.clone());
                self.reported = true;
                Some(Err(e))
            }
        }
    }

    /// Bytes held that have not been handed out as a PDU yet.
    pub fn buffered(&self) -> usize {
        self.pending().len()
    }

    /// The framing error that stopped this stream, if any.
    pub fn error(&self) -> Option<&DecodeError> {
        self.failed.as_ref()
    }

    /// The maximum fragment length this reassembler accepts.
    pub fn max_frag(&self) -> u16 {
        self.max_frag
    }
}

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

/// Checks that `pdu` is exactly one PDU of one of `ptypes` and returns its
/// header and body: the bytes after the common header, without the
/// authentication verifier (`auth_length` bytes of credentials, the 8-byte
/// `sec_trailer` before them, and the `auth_pad_length` bytes of padding
/// the trailer announces).
fn split_pdu<'a>(pdu: &'a [u8], ptypes: &[u8]) -> Result<(CommonHeader, Reader<'a>), DecodeError> {
    let header = CommonHeader::decode(pdu)?;
    if !ptypes.contains(&header.ptype) {
        return Err(DecodeError::InvalidValue {
            field: "ptype",
            value: u64::from(header.ptype),
        });
    }
    let frag_length = usize::from(header.frag_length);
    let min = min_frag_length(header.ptype);
    if frag_length < min {
        return Err(DecodeError::TooShort {
            field: "frag_length",
            len: frag_length as u64,
            min: min as u64,
        });
    }
    if pdu.len() < frag_length {
        return Err(DecodeError::UnexpectedEnd {
            field: "PDU",
            needed: frag_length,
            remaining: pdu.len(),
        });
    }
    if pdu.len() > frag_length {
        return Err(DecodeError::TrailingBytes {
            count: pdu.len() - frag_length,
        });
    }
    let mut body = pdu.get(COMMON_HEADER_LEN..).unwrap_or(&[]);
    if header.auth_length > 0 {
        let verifier = 8 + usize::from(header.auth_length);
        let keep = body
            .len()
            .checked_sub(verifier)
            .ok_or(DecodeError::TooLong {
                field: "auth_length",
                len: u64::from(header.auth_length),
                max: body.len().saturating_sub(8) as u64,
            })?;
        // sec_trailer: auth_type, auth_level, auth_pad_length, ...
        let pad = body.get(keep + 2).copied().map(usize::from).unwrap_or(0);
        let keep = keep.checked_sub(pad).ok_or(DecodeError::TooLong {
            field: "auth_pad_length",
            len: pad as u64,
            max: keep as u64,
        })?;
        body = body.get(..keep).unwrap_or(&[]);
    }
    let order = header.order();
    Ok((header, Reader { rest: body, order }))
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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// NDR64, for multi-context binds.
    const NDR64: SyntaxId = SyntaxId {
        uuid: uuid(
            0x7171_0533,
            0xbeba,
            0x4937,
            [0x83, 0x19, 0xb5, 0xdb, 0xef, 0x9c, 0xcc, 0x36],
        ),
        version: 1,
    };

    #[test]
    fn uuid_layout() {
        assert_eq!(
            NDR_SYNTAX.uuid,
            [
                0x04, 0x5d, 0x88, 0x8a, 0xeb, 0x1c, 0xc9, 0x11, 0x9f, 0xe8, 0x08, 0x00, 0x2b, 0x10,
                0x48, 0x60
            ]
        );
    }

    #[test]
    fn header_little_endian() {
        let bytes = [
            5, 0, 0, 3, 0x10, 0, 0, 0, 0x18, 0x01, 0, 0, 0x78, 0x56, 0x34, 0x12,
        ];
        let h = CommonHeader::decode(&bytes).unwrap();
        assert_eq!(
            h,
            CommonHeader {
                rpc_vers: 5,
                rpc_vers_minor: 0,
                ptype: PTYPE_REQUEST,
                pfc_flags: 3,
                drep: DREP_LE,
                frag_length: 0x118,
                auth_length: 0,
                call_id: 0x1234_5678,
            }
        );
        assert!(h.is_little_endian());
        assert_eq!(h.encode(), bytes);
    }

    #[test]
    fn header_big_endian() {
        let bytes = [
            5, 0, 2, 3, 0x00, 0, 0, 0, 0x01, 0x18, 0, 0x10, 0x12, 0x34, 0x56, 0x78,
        ];
        let h = CommonHeader::decode(&bytes).unwrap();
        assert_eq!(h.frag_length, 0x118);
        assert_eq!(h.auth_length, 0x10);
        assert_eq!(h.call_id, 0x1234_5678);
        assert!(!h.is_little_endian());
        assert_eq!(h.encode(), bytes);
    }

    #[test]
    fn header_errors() {
        let good = CommonHeader::new(PTYPE_REQUEST, 3, 24, 1).encode();
        for cut in 0..COMMON_HEADER_LEN {
            assert!(matches!(
                CommonHeader::decode(&good[..cut]),
                Err(DecodeError::UnexpectedEnd { .. })
            ));
        }
        let mut v4 = good;
        v4[0] = 4;
        assert!(matches!(
            CommonHeader::decode(&v4),
            Err(DecodeError::InvalidValue {
                field: "rpc_vers",
                ..
            })
        ));
        let mut drep = good;
        drep[4] = 0x20;
        assert!(matches!(
            CommonHeader::decode(&drep),
            Err(DecodeError::InvalidValue { field: "drep", .. })
        ));
    }

    #[test]
    fn pdu_len_limits() {
        let at = |ptype: u8, len: u16| CommonHeader::new(ptype, 3, len, 1).encode();
        assert_eq!(pdu_len(&[], 4280), Ok(None));
        assert_eq!(pdu_len(&at(PTYPE_REQUEST, 24)[..15], 4280), Ok(None));
        assert_eq!(pdu_len(&at(PTYPE_REQUEST, 24), 4280), Ok(Some(24)));
        assert_eq!(pdu_len(&at(PTYPE_REQUEST, 4280), 4280), Ok(Some(4280)));
        assert_eq!(
            pdu_len(&at(PTYPE_REQUEST, 4281), 4280),
            Err(DecodeError::TooLong {
                field: "frag_length",
                len: 4281,
                max: 4280
            })
        );
        assert!(matches!(
            pdu_len(&at(PTYPE_REQUEST, 23), 4280),
            Err(DecodeError::TooShort { min: 24, .. })
        ));
        assert!(matches!(
            pdu_len(&at(PTYPE_RESPONSE, 16), 4280),
            Err(DecodeError::TooShort { min: 24, .. })
        ));
        assert_eq!(pdu_len(&at(PTYPE_BIND, 16), 4280), Ok(Some(16)));
        assert!(matches!(
            pdu_len(&at(PTYPE_BIND, 15), 4280),
            Err(DecodeError::TooShort { min: 16, .. })
        ));
        assert!(matches!(
            pdu_len(&at(PTYPE_BIND, 0), 4280),
            Err(DecodeError::TooShort { .. })
        ));
        assert!(matches!(
            pdu_len(&at(PTYPE_BIND, u16::MAX), 4280),
            Err(DecodeError::TooLong { .. })
        ));
    }

    fn sample_stream() -> (Vec<u8>, Vec<Vec<u8>>) {
        let mut pdus = vec![encode_bind(1, SRVSVC_SYNTAX.into(), NDR_SYNTAX.into())];
        for (i, len) in [0usize, 1, 100, 5000].into_iter().enumerate() {
            let stub: Vec<u8> = (0..len).map(|b| b as u8).collect();
            let frags = encode_request(i as u32 + 2, 0, 15, &stub, 1000);
            let mut rest = &frags[..];
            while !rest.is_empty() {
                let n = pdu_len(rest, 1000).unwrap().unwrap();
                pdus.push(rest[..n].to_vec());
                rest = &rest[n..];
            }
        }
        (pdus.concat(), pdus)
    }

    fn drain(r: &mut PduReassembler, got: &mut Vec<Vec<u8>>) {
        while let Some(p) = r.next_pdu() {
            got.push(p.unwrap());
        }
    }

    #[test]
    fn reassembler_split_at_every_byte() {
        let (stream, pdus) = sample_stream();
        for split in 0..=stream.len() {
            let mut r = PduReassembler::new(1000);
            let mut got = Vec::new();
            r.push(&stream[..split]);
            drain(&mut r, &mut got);
            assert!(r.buffered() < 1000);
            r.push(&stream[split..]);
            drain(&mut r, &mut got);
            assert_eq!(got, pdus, "split at {split}");
            assert_eq!(r.buffered(), 0);
        }
    }

    #[test]
    fn reassembler_byte_by_byte() {
        let (stream, pdus) = sample_stream();
        let mut r = PduReassembler::new(1000);
        let mut got = Vec::new();
        for b in &stream {
            r.push(std::slice::from_ref(b));
            drain(&mut r, &mut got);
        }
        assert_eq!(got, pdus);
    }

    #[test]
    fn reassembler_hostile_frag_length() {
        // frag_length 0xFFFF against max 4280: refused from the header
        // alone; nothing behind it is kept.
        let mut r = PduReassembler::new(4280);
        let mut hostile = CommonHeader::new(PTYPE_REQUEST, 3, u16::MAX, 1)
            .encode()
            .to_vec();
        hostile.extend_from_slice(&[0xAA; 100]);
        r.push(&hostile);
        assert_eq!(r.buffered(), 0);
        assert!(matches!(
            r.next_pdu(),
            Some(Err(DecodeError::TooLong { .. }))
        ));
        assert!(r.next_pdu().is_none());
        r.push(&[0; 10_000]);
        assert_eq!(r.buffered(), 0);
        assert!(r.next_pdu().is_none());
        assert!(r.error().is_some());

        // A valid PDU, then a too-short frag_length.
        let mut r = PduReassembler::new(4280);
        let mut s = encode_request(1, 0, 0, b"abc", 4280);
        s.extend_from_slice(&CommonHeader::new(PTYPE_REQUEST, 3, 8, 2).encode());
        r.push(&s);
        assert!(matches!(r.next_pdu(), Some(Ok(_))));
        assert!(matches!(
            r.next_pdu(),
            Some(Err(DecodeError::TooShort { .. }))
        ));
        assert_eq!(r.buffered(), 0);
        assert!(r.next_pdu().is_none());

        // A bad header behind a PDU found by next_pdu.
        let mut r = PduReassembler::new(4280);
        r.push(&encode_request(1, 0, 0, b"abc", 4280));
        let mut bad = CommonHeader::new(PTYPE_REQUEST, 3, 24, 2).encode();
        bad[0] = 9;
        r.push(&bad[..8]);
        assert!(matches!(r.next_pdu(), Some(Ok(_))));
        r.push(&bad[8..]);
        assert!(matches!(
            r.next_pdu(),
            Some(Err(DecodeError::InvalidValue { .. }))
        ));
        assert!(r.next_pdu().is_none());
    }

    #[test]
    fn reassembler_many_pdus_in_one_push() {
        let one = encode_fault(1, 0, NCA_S_PROTO_ERROR);
        let stream = one.repeat(10_000);
        let mut r = PduReassembler::new(4280);
        r.push(&stream);
        let mut n = 0;
        while let Some(p) = r.next_pdu() {
            let p = p.unwrap();
            assert_eq!(p, one);
            assert_eq!(p.capacity(), one.len());
            n += 1;
        }
        assert_eq!(n, 10_000);
        assert_eq!(r.buffered(), 0);
    }

    #[test]
    fn reassembler_bounded_while_waiting() {
        // A valid header announcing max_frag: bytes are kept only up to it.
        let mut r = PduReassembler::new(4280);
        let mut pdu = CommonHeader::new(PTYPE_REQUEST, 3, 4280, 1)
            .encode()
            .to_vec();
        pdu.resize(4280, 0);
        for chunk in pdu.chunks(1000) {
            assert!(r.buffered() <= 4280);
            r.push(chunk);
        }
        assert_eq!(r.next_pdu(), Some(Ok(pdu)));
        assert_eq!(r.buffered(), 0);
    }

    fn split_frags(frags: &[u8], max_frag: u16) -> Vec<&[u8]> {
        let mut out = Vec::new();
        let mut rest = frags;
        while !rest.is_empty() {
            let n = pdu_len(rest, max_frag).unwrap().unwrap();
            out.push(&rest[..n]);
            rest = &rest[n..];
        }
        out
    }

    #[test]
    fn response_fragmentation() {
        let stub: Vec<u8> = (0..10_000u32).map(|i| (i * 7) as u8).collect();
        let frags = encode_response(9, 1, &stub, DEFAULT_MAX_FRAG);
        assert_eq!(frags.len(), encoded_call_len(stub.len(), DEFAULT_MAX_FRAG));
        let parts = split_frags(&frags, DEFAULT_MAX_FRAG);
        assert_eq!(parts.len(), 3); // 4256 + 4256 + 1488
        let mut joined = Vec::new();
        let mut total = 0;
        for (i, p) in parts.iter().enumerate() {
            assert!(p.len() <= 4280);
            total += p.len();
            let r = decode_response(p).unwrap();
            assert_eq!(r.header.call_id, 9);
            assert_eq!(r.context_id, 1);
            assert_eq!(r.header.ptype, PTYPE_RESPONSE);
            let first = r.header.pfc_flags & PFC_FIRST_FRAG != 0;
            let last = r.header.pfc_flags & PFC_LAST_FRAG != 0;
            assert_eq!(first, i == 0);
            assert_eq!(last, i == parts.len() - 1);
            assert_eq!(r.alloc_hint as usize, stub.len() - joined.len());
            if !last {
                assert_eq!(p.len(), 4280);
            }
            joined.extend_from_slice(r.stub);
        }
        assert_eq!(total, frags.len());
        assert_eq!(joined, stub);
        assert_eq!(
            encode_response_filled(9, 1, 10_000, 0xAB, 4280).len(),
            frags.len()
        );
    }

    #[test]
    fn single_fragment_and_empty() {
        let f = encode_response(1, 0, b"", 4280);
        assert_eq!(f.len(), 24);
        let r = decode_response(&f).unwrap();
        assert_eq!(r.header.pfc_flags, PFC_FIRST_FRAG | PFC_LAST_FRAG);
        assert_eq!(r.alloc_hint, 0);
        assert!(r.stub.is_empty());

        let stub = vec![1u8; 4256];
        let f = encode_request(2, 3, 4, &stub, 4280);
        assert_eq!(f.len(), 4280);
        let q = decode_request(&f).unwrap();
        assert_eq!((q.header.pfc_flags, q.context_id, q.opnum), (3, 3, 4));
        assert_eq!(q.stub, &stub[..]);
        assert_eq!(
            split_frags(&encode_request(2, 3, 4, &[1; 4257], 4280), 4280).len(),
            2
        );

        // Into a used buffer: the same bytes, the buffer's allocation kept.
        let mut buf = Vec::with_capacity(8192);
        buf.extend_from_slice(b"old contents");
        let at = buf.as_ptr();
        encode_request_into(&mut buf, 2, 3, 4, &[1; 4257], 4280);
        assert_eq!(buf, encode_request(2, 3, 4, &[1; 4257], 4280));
        assert_eq!(buf.as_ptr(), at);

        // A tiny max_frag is raised to MIN_MAX_FRAG: 8 stub bytes each.
        let f = encode_request(1, 0, 0, &[5; 20], 0);
        let parts = split_frags(&f, MIN_MAX_FRAG);
        assert_eq!(
            parts.iter().map(|p| p.len()).collect::<Vec<_>>(),
            [32, 32, 28]
        );
    }

    #[test]
    fn request_big_endian_and_object() {
        // A hand-built big-endian request with an object UUID.
        let mut pdu = vec![
            5,
            0,
            PTYPE_REQUEST,
            0x83,
            0,
            0,
            0,
            0,
            0,
            44,
            0,
            0,
            0,
            0,
            0,
            7,
        ];
        pdu.extend_from_slice(&[0, 0, 0, 4, 0, 1, 0, 2]); // alloc_hint, ctx, opnum
        pdu.extend_from_slice(&[0x8a, 0x88, 0x5d, 0x04, 0x1c, 0xeb, 0x11, 0xc9]);
        pdu.extend_from_slice(&[0x9f, 0xe8, 0x08, 0x00, 0x2b, 0x10, 0x48, 0x60]);
        pdu.extend_from_slice(b"stub");
        let q = decode_request(&pdu).unwrap();
        assert_eq!(q.header.call_id, 7);
        assert_eq!((q.alloc_hint, q.context_id, q.opnum), (4, 1, 2));
        assert_eq!(q.object, Some(NDR_SYNTAX.uuid));
        assert_eq!(q.stub, b"stub");
        for cut in 0..pdu.len() {
            assert!(decode_request(&pdu[..cut]).is_err());
        }
        pdu.push(0);
        assert_eq!(
            decode_request(&pdu),
            Err(DecodeError::TrailingBytes { count: 1 })
        );
    }

    #[test]
    fn request_with_auth_verifier() {
        // stub "abcd", 4 bytes auth padding, sec_trailer (pad length 4), 8 bytes credentials.
        let mut pdu = encode_request(1, 0, 0, b"abcd", 4280);
        pdu.extend_from_slice(&[0; 4]);
        pdu.extend_from_slice(&[10, 2, 4, 0, 0, 0, 0, 0]);
        pdu.extend_from_slice(&[0xCC; 8]);
        let len = pdu.len() as u16;
        pdu[8..10].copy_from_slice(&len.to_le_bytes());
        pdu[10..12].copy_from_slice(&8u16.to_le_bytes());
        assert_eq!(decode_request(&pdu).unwrap().stub, b"abcd");
        // auth_length larger than the body.
        pdu[10..12].copy_from_slice(&100u16.to_le_bytes());
        assert!(matches!(
            decode_request(&pdu),
            Err(DecodeError::TooLong {
                field: "auth_length",
                ..
            })
        ));
        // auth_pad_length larger than the stub.
        pdu[10..12].copy_from_slice(&8u16.to_le_bytes());
        pdu[24 + 8 + 2] = 200;
        assert!(matches!(
            decode_request(&pdu),
            Err(DecodeError::TooLong {
                field: "auth_pad_length",
                ..
            })
        ));
    }

    #[test]
    fn response_truncation_and_trailing() {
        let f = encode_response(3, 0, b"0123456789", 4280);
        for cut in 0..f.len() {
            assert!(decode_response(&f[..cut]).is_err(), "cut {cut}");
        }
        let mut long = f.clone();
        long.push(0);
        assert_eq!(
            decode_response(&long),
            Err(DecodeError::TrailingBytes { count: 1 })
        );
        // A request is not a response, and the other way round.
        assert!(matches!(
            decode_request(&f),
            Err(DecodeError::InvalidValue { field: "ptype", .. })
        ));
        assert!(matches!(
            decode_response(&encode_request(1, 0, 0, b"", 4280)),
            Err(DecodeError::InvalidValue { field: "ptype", .. })
        ));
    }

    #[test]
    fn fault() {
        let f = encode_fault(5, 1, NCA_S_OP_RNG_ERROR);
        assert_eq!(f.len(), FAULT_LEN);
        assert_eq!(pdu_len(&f, 4280), Ok(Some(32)));
        let d = decode_fault(&f).unwrap();
        assert_eq!(
            (d.header.call_id, d.context_id, d.status),
            (5, 1, NCA_S_OP_RNG_ERROR)
        );
        assert!(decode_fault(&f[..28]).is_err());
    }

    #[test]
    fn bind_to_bind_ack() {
        let bind = encode_bind(42, SRVSVC_SYNTAX.into(), NDR_SYNTAX.into());
        assert_eq!(pdu_len(&bind, 4280), Ok(Some(bind.len())));
        let b = decode_bind(&bind).unwrap();
        assert_eq!(b.header.call_id, 42);
        assert_eq!(
            b.contexts,
            [PresentationContext {
                context_id: 0,
                abstract_syntax: SRVSVC_SYNTAX,
                transfer_syntaxes: vec![NDR_SYNTAX],
            }]
        );

        let ack = encode_bind_ack(&bind, "\\PIPE\\srvsvc", DEFAULT_MAX_FRAG).unwrap();
        assert_eq!(pdu_len(&ack, 4280), Ok(Some(ack.len())));
        // 24 fixed + 2 length + 13 address + 1 padding + 4 + 24 result.
        assert_eq!(ack.len(), 68);
        let a = decode_bind_ack(&ack).unwrap();
        assert_eq!(a.header.ptype, PTYPE_BIND_ACK);
        assert_eq!(a.header.call_id, 42);
        assert_eq!(a.header.pfc_flags, PFC_FIRST_FRAG | PFC_LAST_FRAG);
        assert_eq!((a.max_xmit_frag, a.max_recv_frag), (4280, 4280));
        assert_eq!(a.assoc_group_id, DEFAULT_ASSOC_GROUP_ID);
        assert_eq!(a.sec_addr, "\\PIPE\\srvsvc");
        assert_eq!(
            a.results,
            [ContextResult {
                result: RESULT_ACCEPTANCE,
                reason: 0,
                transfer_syntax: NDR_SYNTAX
            }]
        );
        for cut in 0..ack.len() {
            assert!(decode_bind_ack(&ack[..cut]).is_err(), "cut {cut}");
        }
        for cut in 0..bind.len() {
            assert!(decode_bind(&bind[..cut]).is_err(), "cut {cut}");
            assert!(
                encode_bind_ack(&bind[..cut], "x", 4280).is_err(),
                "cut {cut}"
            );
        }
    }

    /// Builds a bind by hand in either byte order with several contexts.
    fn raw_bind(
        big: bool,
        call_id: u32,
        contexts: &[(u16, SyntaxId, &[SyntaxId])],
        max_frag: u16,
    ) -> Vec<u8> {
        let order = if big { Order::Big } else { Order::Little };
        let syntax = |out: &mut Vec<u8>, s: &SyntaxId| {
            let mut u = s.uuid;
            if big {
                u[0..4].reverse();
                u[4..6].reverse();
                u[6..8].reverse();
            }
            out.extend_from_slice(&u);
            out.extend_from_slice(&order.u32_bytes(s.version));
        };
        let mut body = Vec::new();
        body.extend_from_slice(&order.u16_bytes(max_frag));
        body.extend_from_slice(&order.u16_bytes(max_frag));
        body.extend_from_slice(&order.u32_bytes(0x99));
        body.extend_from_slice(&[contexts.len() as u8, 0, 0, 0]);
        for (id, abs, ts) in contexts {
            body.extend_from_slice(&order.u16_bytes(*id));
            body.extend_from_slice(&[ts.len() as u8, 0]);
            syntax(&mut body, abs);
            for t in *ts {
                syntax(&mut body, t);
            }
        }
        let mut h = CommonHeader::new(PTYPE_BIND, 3, (16 + body.len()) as u16, call_id);
        if big {
            h.drep = [0, 0, 0, 0];
        }
        let mut out = h.encode().to_vec();
        out.extend_from_slice(&body);
        out
    }

    #[test]
    fn bind_ack_rejects_other_contexts() {
        for big in [false, true] {
            let bind = raw_bind(
                big,
                7,
                &[
                    (0, SRVSVC_SYNTAX, &[NDR_SYNTAX, NDR64]),
                    (1, SRVSVC_SYNTAX, &[NDR64]),
                    (2, SRVSVC_SYNTAX, &[]),
                ],
                2000,
            );
            let b = decode_bind(&bind).unwrap();
            assert_eq!(b.contexts[0].transfer_syntaxes, [NDR_SYNTAX, NDR64]);
            assert_eq!(b.contexts[1].context_id, 1);
            assert_eq!(b.assoc_group_id, 0x99);
            let ack = encode_bind_ack(&bind, "\\PIPE\\lsarpc", 4280).unwrap();
            let a = decode_bind_ack(&ack).unwrap();
            assert_eq!(a.header.call_id, 7);
            assert_eq!(a.assoc_group_id, 0x99);
            assert_eq!((a.max_xmit_frag, a.max_recv_frag), (2000, 2000));
            let rejected = ContextResult {
                result: RESULT_PROVIDER_REJECTION,
                reason: REASON_TRANSFER_SYNTAXES_NOT_SUPPORTED,
                transfer_syntax: SyntaxId::default(),
            };
            assert_eq!(
                a.results,
                [
                    ContextResult {
                        result: 0,
                        reason: 0,
                        transfer_syntax: NDR_SYNTAX
                    },
                    rejected,
                    rejected
                ]
            );
        }
        // A first context without transfer syntaxes is rejected too.
        let bind = raw_bind(false, 1, &[(0, SRVSVC_SYNTAX, &[])], 4280);
        let a = decode_bind_ack(&encode_bind_ack(&bind, "x", 4280).unwrap()).unwrap();
        assert_eq!(a.results[0].result, RESULT_PROVIDER_REJECTION);
        // No context at all: an error.
        let bind = raw_bind(false, 1, &[], 4280);
        assert!(matches!(
            encode_bind_ack(&bind, "x", 4280),
            Err(DecodeError::InvalidValue {
                field: "n_context_elem",
                ..
            })
        ));
    }

    #[test]
    fn bind_ack_negotiation_and_limits() {
        // Tiny offers are raised to MUST_RECV_FRAG_SIZE; big ones capped.
        let small = raw_bind(false, 1, &[(0, SRVSVC_SYNTAX, &[NDR_SYNTAX])], 100);
        let a = decode_bind_ack(&encode_bind_ack(&small, "x", 4280).unwrap()).unwrap();
        assert_eq!(a.max_xmit_frag, MUST_RECV_FRAG_SIZE);
        let big = raw_bind(false, 1, &[(0, SRVSVC_SYNTAX, &[NDR_SYNTAX])], 65535);
        let a = decode_bind_ack(&encode_bind_ack(&big, "x", 4280).unwrap()).unwrap();
        assert_eq!(a.max_xmit_frag, 4280);
        let a = decode_bind_ack(&encode_bind_ack(&big, "x", 1000).unwrap()).unwrap();
        assert_eq!(a.max_xmit_frag, 1000);

        // A bind longer than max_frag.
        assert!(matches!(
            encode_bind_ack(&big, "x", 50),
            Err(DecodeError::TooLong { .. })
        ));
        // sec_addr limits.
        assert!(matches!(
            encode_bind_ack(&big, "a\0b", 4280),
            Err(DecodeError::EmbeddedNul { .. })
        ));
        assert!(encode_bind_ack(&big, &"s".repeat(MAX_SEC_ADDR_BYTES - 1), 4280).is_ok());
        assert!(matches!(
            encode_bind_ack(&big, &"s".repeat(MAX_SEC_ADDR_BYTES), 4280),
            Err(DecodeError::TooLong {
                field: "sec_addr",
                ..
            })
        ));
        // Empty sec_addr: length 0, no NUL.
        let a = decode_bind_ack(&encode_bind_ack(&big, "", 4280).unwrap()).unwrap();
        assert_eq!(a.sec_addr, "");
        // Not a bind.
        let req = encode_request(1, 0, 0, b"", 4280);
        assert!(matches!(
            encode_bind_ack(&req, "x", 4280),
            Err(DecodeError::InvalidValue { field: "ptype", .. })
        ));
        // Trailing bytes inside frag_length.
        let mut t = big.clone();
        t.push(0);
        let len = t.len() as u16;
        t[8..10].copy_from_slice(&len.to_le_bytes());
        assert_eq!(
            decode_bind(&t),
            Err(DecodeError::TrailingBytes { count: 1 })
        );
        // A transfer syntax count larger than the PDU.
        let mut c = big.clone();
        c[16 + 8 + 4 + 2] = 200;
        assert!(matches!(
            decode_bind(&c),
            Err(DecodeError::UnexpectedEnd { .. })
        ));
    }

    #[test]
    fn alter_context() {
        let mut bind = encode_bind(3, SRVSVC_SYNTAX.into(), NDR_SYNTAX.into());
        bind[2] = PTYPE_ALTER_CONTEXT;
        let ack = encode_bind_ack(&bind, "\\PIPE\\srvsvc", 4280).unwrap();
        let a = decode_bind_ack(&ack).unwrap();
        assert_eq!(a.header.ptype, PTYPE_ALTER_CONTEXT_RESP);
        assert_eq!(a.sec_addr, "");
        assert_eq!(a.results[0].transfer_syntax, NDR_SYNTAX);
    }

    #[test]
    fn bind_ack_sec_addr_checks() {
        let bind = encode_bind(1, SRVSVC_SYNTAX.into(), NDR_SYNTAX.into());
        let ack = encode_bind_ack(&bind, "ab", 4280).unwrap();
        // sec_addr "ab\0" at offset 26..29.
        let mut no_nul = ack.clone();
        no_nul[28] = b'c';
        assert!(matches!(
            decode_bind_ack(&no_nul),
            Err(DecodeError::InvalidValue {
                field: "sec_addr terminator",
                ..
            })
        ));
        let mut inner = ack.clone();
        inner[26] = 0;
        assert_eq!(
            decode_bind_ack(&inner),
            Err(DecodeError::EmbeddedNul { field: "sec_addr" })
        );
        let mut utf = ack.clone();
        utf[26] = 0xFF;
        assert_eq!(
            decode_bind_ack(&utf),
            Err(DecodeError::InvalidUtf8 { field: "sec_addr" })
        );
        let mut long = ack;
        long[24..26].copy_from_slice(&1000u16.to_le_bytes());
        assert!(matches!(
            decode_bind_ack(&long),
            Err(DecodeError::TooLong { .. })
        ));
    }

    proptest! {
        #[test]
        fn request_round_trip(call_id: u32, ctx: u16, opnum: u16,
                              stub in proptest::collection::vec(any::<u8>(), 0..3000),
                              max_frag in 0u16..2000) {
            let frags = encode_request(call_id, ctx, opnum, &stub, max_frag);
            let limit = max_frag.max(MIN_MAX_FRAG);
            prop_assert_eq!(frags.len(), encoded_call_len(stub.len(), max_frag));
            let parts = split_frags(&frags, limit);
            let mut joined = Vec::new();
            for (i, p) in parts.iter().enumerate() {
                let q = decode_request(p).unwrap();
                prop_assert_eq!(q.header.call_id, call_id);
                prop_assert_eq!((q.context_id, q.opnum), (ctx, opnum));
                prop_assert_eq!(q.header.pfc_flags & PFC_FIRST_FRAG != 0, i == 0);
                prop_assert_eq!(q.header.pfc_flags & PFC_LAST_FRAG != 0, i + 1 == parts.len());
                prop_assert_eq!(q.alloc_hint as usize, stub.len() - joined.len());
                joined.extend_from_slice(q.stub);
            }
            prop_assert_eq!(joined, stub);
        }

        #[test]
        fn response_round_trip(call_id: u32, ctx: u16,
                               stub in proptest::collection::vec(any::<u8>(), 0..10000),
                               max_frag in prop_oneof![Just(DEFAULT_MAX_FRAG), 0u16..=u16::MAX]) {
            let frags = encode_response(call_id, ctx, &stub, max_frag);
            let mut r = PduReassembler::new(max_frag.max(MIN_MAX_FRAG));
            r.push(&frags);
            let mut joined = Vec::new();
            let mut n = 0;
            while let Some(p) = r.next_pdu() {
                let p = p.unwrap();
                prop_assert!(p.len() <= usize::from(max_frag.max(MIN_MAX_FRAG)));
                let d = decode_response(&p).unwrap();
                prop_assert_eq!(d.header.call_id, call_id);
                joined.extend_from_slice(d.stub);
                n += 1;
            }
            prop_assert!(n >= 1);
            prop_assert_eq!(joined, stub);
        }

        #[test]
        fn reassembler_random_chunks(cuts in proptest::collection::vec(0usize..7000, 0..20)) {
            let (stream, pdus) = sample_stream();
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c % (stream.len() + 1)).collect();
            cuts.sort_unstable();
            let mut r = PduReassembler::new(1000);
            let mut got = Vec::new();
            let mut at = 0;
            for c in cuts.into_iter().chain([stream.len()]) {
                r.push(&stream[at..c]);
                at = c;
                drain(&mut r, &mut got);
                prop_assert!(r.buffered() < 1000);
            }
            prop_assert_eq!(got, pdus);
        }

        #[test]
        fn bind_round_trip(call_id: u32, a: [u8; 16], av: u32, t: [u8; 16], tv: u32) {
            let bind = encode_bind(call_id, (a, av), (t, tv));
            let b = decode_bind(&bind).unwrap();
            prop_assert_eq!(b.header.call_id, call_id);
            prop_assert_eq!(
                b.contexts,
                vec![PresentationContext {
                    context_id: 0,
                    abstract_syntax: SyntaxId { uuid: a, version: av },
                    transfer_syntaxes: vec![SyntaxId { uuid: t, version: tv }],
                }]
            );
            let ack = encode_bind_ack(&bind, "\\PIPE\\x", DEFAULT_MAX_FRAG).unwrap();
            let d = decode_bind_ack(&ack).unwrap();
            prop_assert_eq!(d.header.call_id, call_id);
            prop_assert_eq!(d.sec_addr.as_str(), "\\PIPE\\x");
            prop_assert_eq!(
                d.results,
                vec![ContextResult { result: 0, reason: 0, transfer_syntax: SyntaxId { uuid: t, version: tv } }]
            );
        }

        #[test]
        fn multi_context_bind_ack(big: bool, call_id: u32, n in 1usize..40, sec in "[ -~]{0,40}") {
            let ctxs: Vec<(u16, SyntaxId, &[SyntaxId])> =
                (0..n).map(|i| (i as u16, SRVSVC_SYNTAX, &[NDR_SYNTAX, NDR64][..(i + 1) % 3])).collect();
            let bind = raw_bind(big, call_id, &ctxs, 4280);
            let ack = encode_bind_ack(&bind, &sec, 4280).unwrap();
            let d = decode_bind_ack(&ack).unwrap();
            prop_assert_eq!(d.header.call_id, call_id);
            prop_assert_eq!(d.sec_addr, sec);
            prop_assert_eq!(d.results.len(), n);
            prop_assert_eq!(
                d.results[0],
                ContextResult { result: 0, reason: 0, transfer_syntax: NDR_SYNTAX }
            );
            for r in &d.results[1..] {
                prop_assert_eq!(r.result, RESULT_PROVIDER_REJECTION);
                prop_assert_eq!(r.reason, REASON_TRANSFER_SYNTAXES_NOT_SUPPORTED);
            }
        }

        #[test]
        fn fault_round_trip(call_id: u32, ctx: u16, status: u32) {
            let f = decode_fault(&encode_fault(call_id, ctx, status)).unwrap();
            prop_assert_eq!((f.header.call_id, f.context_id, f.status), (call_id, ctx, status));
        }

        #[test]
        fn header_round_trip(vers_minor: u8, ptype: u8, flags: u8, big: bool, d1: u8, frag: u16, auth: u16, call: u32) {
            let h = CommonHeader {
                rpc_vers: 5, rpc_vers_minor: vers_minor, ptype, pfc_flags: flags,
                drep: [if big { 0x00 } else { 0x10 }, d1, 0, 0],
                frag_length: frag, auth_length: auth, call_id: call,
            };
            prop_assert_eq!(CommonHeader::decode(&h.encode()), Ok(h));
        }

        #[test]
        fn decoders_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = CommonHeader::decode(&bytes);
            let _ = pdu_len(&bytes, 4280);
            let _ = decode_request(&bytes);
            let _ = decode_response(&bytes);
            let _ = decode_fault(&bytes);
            let _ = decode_bind(&bytes);
            let _ = decode_bind_ack(&bytes);
            let _ = encode_bind_ack(&bytes, "\\PIPE\\x", 4280);
        }
    }
}
