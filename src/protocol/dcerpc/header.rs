//! The 16-byte common header every PDU starts with, the PDU types and
//! flags, and reading a PDU's body in the byte order its `drep` names.

use super::syntax::SyntaxId;
use crate::protocol::error::{take_array, DecodeError};

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

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Order {
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

    pub(super) fn u16_bytes(self, v: u16) -> [u8; 2] {
        match self {
            Order::Little => v.to_le_bytes(),
            Order::Big => v.to_be_bytes(),
        }
    }

    pub(super) fn u32_bytes(self, v: u32) -> [u8; 4] {
        match self {
            Order::Little => v.to_le_bytes(),
            Order::Big => v.to_be_bytes(),
        }
    }
}

/// A bounded reader over part of a PDU, in the PDU's byte order.
pub(super) struct Reader<'a> {
    pub(super) rest: &'a [u8],
    order: Order,
}

impl<'a> Reader<'a> {
    pub(super) fn take<const N: usize>(
        &mut self,
        field: &'static str,
    ) -> Result<[u8; N], DecodeError> {
        take_array(&mut self.rest, field)
    }

    pub(super) fn bytes(&mut self, field: &'static str, n: usize) -> Result<&'a [u8], DecodeError> {
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

    pub(super) fn u8(&mut self, field: &'static str) -> Result<u8, DecodeError> {
        self.take::<1>(field).map(|[b]| b)
    }

    pub(super) fn u16(&mut self, field: &'static str) -> Result<u16, DecodeError> {
        let b = self.take::<2>(field)?;
        Ok(self.order.u16(b))
    }

    pub(super) fn u32(&mut self, field: &'static str) -> Result<u32, DecodeError> {
        let b = self.take::<4>(field)?;
        Ok(self.order.u32(b))
    }

    /// A UUID, converted to the little-endian layout if the PDU is
    /// big-endian (its first three fields are integers).
    pub(super) fn uuid(&mut self, field: &'static str) -> Result<[u8; 16], DecodeError> {
        let mut uuid = self.take::<16>(field)?;
        if self.order == Order::Big {
            uuid[0..4].reverse();
            uuid[4..6].reverse();
            uuid[6..8].reverse();
        }
        Ok(uuid)
    }

    pub(super) fn syntax(&mut self, field: &'static str) -> Result<SyntaxId, DecodeError> {
        let uuid = self.uuid(field)?;
        let version = self.u32(field)?;
        Ok(SyntaxId { uuid, version })
    }

    pub(super) fn finish(self) -> Result<(), DecodeError> {
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
    /// are not checked here: see [`pdu_len`](super::pdu_len).
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

/// The header's `frag_length`, refused when shorter than a PDU of its
/// type can be.
pub(super) fn frag_length(header: &CommonHeader) -> Result<usize, DecodeError> {
    let len = usize::from(header.frag_length);
    let min = match header.ptype {
        PTYPE_REQUEST | PTYPE_RESPONSE | PTYPE_FAULT => REQUEST_HEADER_LEN,
        _ => COMMON_HEADER_LEN,
    };
    if len < min {
        return Err(DecodeError::TooShort {
            field: "frag_length",
            len: len as u64,
            min: min as u64,
        });
    }
    Ok(len)
}

/// Checks that `pdu` is exactly one PDU of one of `ptypes` and returns its
/// header and body: the bytes after the common header, without the
/// authentication verifier (`auth_length` bytes of credentials, the 8-byte
/// `sec_trailer` before them, and the `auth_pad_length` bytes of padding
/// the trailer announces).
pub(super) fn split_pdu<'a>(
    pdu: &'a [u8],
    ptypes: &[u8],
) -> Result<(CommonHeader, Reader<'a>), DecodeError> {
    let header = CommonHeader::decode(pdu)?;
    if !ptypes.contains(&header.ptype) {
        return Err(DecodeError::InvalidValue {
            field: "ptype",
            value: u64::from(header.ptype),
        });
    }
    let frag_length = frag_length(&header)?;
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
