//! The SPNEGO tokens SMB2 logins carry (RFC 4178, with Microsoft's
//! NegTokenInit2 hints), in the DER subset they use: definite lengths,
//! single-byte tags. Object identifiers stay as their DER content bytes.

use crate::protocol::error::{DecodeError, EncodeError};

/// 1.3.6.1.5.5.2, SPNEGO.
pub const OID_SPNEGO: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x02];
/// 1.3.6.1.4.1.311.2.2.10, NTLMSSP.
pub const OID_NTLMSSP: &[u8] = &[0x2b, 0x06, 0x01, 0x04, 0x01, 0x82, 0x37, 0x02, 0x02, 0x0a];

/// The most mechanisms a NegTokenInit may list here.
pub const MAX_MECH_TYPES: usize = 16;
/// Nesting this decoder follows is fixed by the grammar; lengths are
/// bounded by the input, and at most 4 length bytes are read.
const MAX_LEN_BYTES: usize = 4;

/// negState values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum NegState {
    AcceptCompleted = 0,
    AcceptIncomplete = 1,
    Reject = 2,
    RequestMic = 3,
}

/// NegTokenInit (also NegTokenInit2: `neg_hints`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NegTokenInit {
    /// mechTypes, each an OID's DER content.
    pub mech_types: Vec<Vec<u8>>,
    /// mechToken.
    pub mech_token: Option<Vec<u8>>,
    /// negHints.hintName (NegTokenInit2).
    pub neg_hints: Option<String>,
    /// mechListMIC.
    pub mech_list_mic: Option<Vec<u8>>,
}

/// NegTokenResp.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NegTokenResp {
    /// negState.
    pub neg_state: Option<NegState>,
    /// supportedMech (OID content).
    pub supported_mech: Option<Vec<u8>>,
    /// responseToken.
    pub response_token: Option<Vec<u8>>,
    /// mechListMIC.
    pub mech_list_mic: Option<Vec<u8>>,
}

/// A SPNEGO token as SESSION_SETUP carries it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SpnegoToken {
    /// The first: `[APPLICATION 0] { OID, [0] NegTokenInit }`.
    Init(NegTokenInit),
    /// Every later one: `[1] NegTokenResp`.
    Resp(NegTokenResp),
}

/// One TLV: its tag and content; the rest after it.
fn tlv<'a>(input: &'a [u8], field: &'static str) -> Result<(u8, &'a [u8], &'a [u8]), DecodeError> {
    let eof = |needed, remaining| DecodeError::UnexpectedEnd {
        field,
        needed,
        remaining,
    };
    let (&tag, rest) = input.split_first().ok_or(eof(1, 0))?;
    if tag & 0x1f == 0x1f {
        return Err(DecodeError::InvalidValue {
            field,
            value: u64::from(tag),
        });
    }
    let (&first, mut rest) = rest.split_first().ok_or(eof(1, 0))?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > MAX_LEN_BYTES {
            return Err(DecodeError::InvalidValue {
                field,
                value: u64::from(first),
            });
        }
        let bytes = rest.get(..n).ok_or(eof(n, rest.len()))?;
        rest = &rest[n..];
        bytes.iter().fold(0usize, |a, &b| (a << 8) | usize::from(b))
    };
    let content = rest.get(..len).ok_or(eof(len, rest.len()))?;
    Ok((tag, content, &rest[len..]))
}

/// The content of a TLV that must have tag `want` and fill `input`.
fn expect<'a>(input: &'a [u8], want: u8, field: &'static str) -> Result<&'a [u8], DecodeError> {
    let (tag, content, rest) = tlv(input, field)?;
    if tag != want {
        return Err(DecodeError::InvalidValue {
            field,
            value: u64::from(tag),
        });
    }
    if !rest.is_empty() {
        return Err(DecodeError::TrailingBytes { count: rest.len() });
    }
    Ok(content)
}

/// The `[n]`-tagged fields of a SEQUENCE's content, in order, each at most once.
fn context_fields(seq: &[u8]) -> Result<Vec<(u8, &[u8])>, DecodeError> {
    let mut out: Vec<(u8, &[u8])> = Vec::new();
    let mut rest = seq;
    while !rest.is_empty() {
        let (tag, content, tail) = tlv(rest, "SPNEGO field")?;
        if tag & 0xe0 != 0xa0 || out.last().is_some_and(|(t, _)| *t >= tag) {
            return Err(DecodeError::InvalidValue {
                field: "SPNEGO field",
                value: u64::from(tag),
            });
        }
        out.push((tag, content));
        rest = tail;
    }
    Ok(out)
}

impl SpnegoToken {
    /// Decodes a SESSION_SETUP security buffer.
    pub fn decode(input: &[u8]) -> Result<SpnegoToken, DecodeError> {
        let (tag, content, rest) = tlv(input, "SPNEGO token")?;
        if !rest.is_empty() {
            return Err(DecodeError::TrailingBytes { count: rest.len() });
        }
        match tag {
            0x60 => {
                let (t, oid, inner) = tlv(content, "thisMech")?;
                if t != 0x06 || oid != OID_SPNEGO {
                    return Err(DecodeError::InvalidValue {
                        field: "thisMech",
                        value: u64::from(t),
                    });
                }
                let init = expect(inner, 0xa0, "NegotiationToken")?;
                let seq = expect(init, 0x30, "NegTokenInit")?;
                let mut tok = NegTokenInit::default();
                for (tag, c) in context_fields(seq)? {
                    match tag {
                        0xa0 => {
                            let mut list = expect(c, 0x30, "mechTypes")?;
                            while !list.is_empty() {
                                if tok.mech_types.len() == MAX_MECH_TYPES {
                                    return Err(DecodeError::TooLong {
                                        field: "mechTypes",
                                        len: MAX_MECH_TYPES as u64 + 1,
                                        max: MAX_MECH_TYPES as u64,
                                    });
                                }
                                let (t, oid, tail) = tlv(list, "MechType")?;
                                if t != 0x06 {
                                    return Err(DecodeError::InvalidValue {
                                        field: "MechType",
                                        value: u64::from(t),
                                    });
                                }
                                tok.mech_types.push(oid.to_vec());
                                list = tail;
                            }
                        }
                        0xa1 => {} // reqFlags: no client of ours sends it; ignored
                        0xa2 => tok.mech_token = Some(expect(c, 0x04, "mechToken")?.to_vec()),
                        0xa3 if c.first() == Some(&0x30) => {
                            let hints = expect(c, 0x30, "negHints")?;
                            let fields = context_fields(hints)?;
                            if let Some((0xa0, name)) = fields.first() {
                                let s = expect(name, 0x1b, "hintName")?;
                                let s = std::str::from_utf8(s)
                                    .map_err(|_| DecodeError::InvalidUtf8 { field: "hintName" })?;
                                tok.neg_hints = Some(s.to_owned());
                            }
                        }
                        0xa3 | 0xa4 => {
                            tok.mech_list_mic = Some(expect(c, 0x04, "mechListMIC")?.to_vec())
                        }
                        _ => {
                            return Err(DecodeError::InvalidValue {
                                field: "NegTokenInit field",
                                value: u64::from(tag),
                            })
                        }
                    }
                }
                Ok(SpnegoToken::Init(tok))
            }
            0xa1 => {
                let seq = expect(content, 0x30, "NegTokenResp")?;
                let mut tok = NegTokenResp::default();
                for (tag, c) in context_fields(seq)? {
                    match tag {
                        0xa0 => {
                            let v = expect(c, 0x0a, "negState")?;
                            tok.neg_state = Some(match v {
                                [0] => NegState::AcceptCompleted,
                                [1] => NegState::AcceptIncomplete,
                                [2] => NegState::Reject,
                                [3] => NegState::RequestMic,
                                _ => {
                                    return Err(DecodeError::InvalidValue {
                                        field: "negState",
                                        value: v.first().copied().map_or(0, u64::from),
                                    })
                                }
                            });
                        }
                        0xa1 => {
                            tok.supported_mech = Some(expect(c, 0x06, "supportedMech")?.to_vec())
                        }
                        0xa2 => {
                            tok.response_token = Some(expect(c, 0x04, "responseToken")?.to_vec())
                        }
                        0xa3 => tok.mech_list_mic = Some(expect(c, 0x04, "mechListMIC")?.to_vec()),
                        _ => {
                            return Err(DecodeError::InvalidValue {
                                field: "NegTokenResp field",
                                value: u64::from(tag),
                            })
                        }
                    }
                }
                Ok(SpnegoToken::Resp(tok))
            }
            _ => Err(DecodeError::InvalidValue {
                field: "SPNEGO token",
                value: u64::from(tag),
            }),
        }
    }

    /// The NTLMSSP (or other mechanism) token inside, if any.
    pub fn mech_token(&self) -> Option<&[u8]> {
        match self {
            SpnegoToken::Init(t) => t.mech_token.as_deref(),
            SpnegoToken::Resp(t) => t.response_token.as_deref(),
        }
    }

    /// DER encoding, minimal lengths.
    pub fn encode(&self) -> Result<Vec<u8>, EncodeError> {
        match self {
            SpnegoToken::Init(t) => {
                let mut seq = Vec::new();
                let mut oids = Vec::new();
                for o in &t.mech_types {
                    put(&mut oids, 0x06, o)?;
                }
                put_explicit(&mut seq, 0xa0, 0x30, &oids)?;
                if let Some(tok) = &t.mech_token {
                    put_explicit(&mut seq, 0xa2, 0x04, tok)?;
                }
                if let Some(h) = &t.neg_hints {
                    let mut field = Vec::new();
                    put_explicit(&mut field, 0xa0, 0x1b, h.as_bytes())?;
                    put_explicit(&mut seq, 0xa3, 0x30, &field)?;
                }
                if let Some(m) = &t.mech_list_mic {
                    let tag = if t.neg_hints.is_some() { 0xa4 } else { 0xa3 };
                    put_explicit(&mut seq, tag, 0x04, m)?;
                }
                let mut inner = Vec::new();
                put(&mut inner, 0x06, OID_SPNEGO)?;
                put_explicit(&mut inner, 0xa0, 0x30, &seq)?;
                let mut out = Vec::new();
                put(&mut out, 0x60, &inner)?;
                Ok(out)
            }
            SpnegoToken::Resp(t) => {
                let mut seq = Vec::new();
                if let Some(s) = t.neg_state {
                    put_explicit(&mut seq, 0xa0, 0x0a, &[s as u8])?;
                }
                for (tag, inner_tag, v) in [
                    (0xa1, 0x06, &t.supported_mech),
                    (0xa2, 0x04, &t.response_token),
                    (0xa3, 0x04, &t.mech_list_mic),
                ] {
                    if let Some(v) = v {
                        put_explicit(&mut seq, tag, inner_tag, v)?;
                    }
                }
                let mut out = Vec::new();
                put_explicit(&mut out, 0xa1, 0x30, &seq)?;
                Ok(out)
            }
        }
    }
}

/// Appends `content` as a TLV of `inner_tag` inside one of `tag` (an
/// explicit context tag around a value, or a SEQUENCE in one).
fn put_explicit(
    out: &mut Vec<u8>,
    tag: u8,
    inner_tag: u8,
    content: &[u8],
) -> Result<(), EncodeError> {
    let mut inner = Vec::new();
    put(&mut inner, inner_tag, content)?;
    put(out, tag, &inner)
}

/// Appends one TLV with a minimal DER length.
fn put(out: &mut Vec<u8>, tag: u8, content: &[u8]) -> Result<(), EncodeError> {
    let len = content.len();
    out.push(tag);
    if len < 0x80 {
        out.push(len as u8);
    } else if len <= 0xff {
        out.extend_from_slice(&[0x81, len as u8]);
    } else if len <= 0xffff {
        out.extend_from_slice(&[0x82, (len >> 8) as u8, len as u8]);
    } else if len <= 0xff_ffff {
        out.extend_from_slice(&[0x83, (len >> 16) as u8, (len >> 8) as u8, len as u8]);
    } else {
        return Err(EncodeError::MessageTooLong {
            len,
            max: 0xff_ffff,
        });
    }
    out.extend_from_slice(content);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smbd_hint_round_trips() {
        // smbd 4.17's NEGOTIATE security buffer.
        let t = SpnegoToken::Init(NegTokenInit {
            mech_types: vec![OID_NTLMSSP.to_vec()],
            neg_hints: Some("not_defined_in_RFC4178@please_ignore".into()),
            ..Default::default()
        });
        let b = t.encode().unwrap();
        assert_eq!(b.len(), 74);
        assert_eq!(&b[..4], &[0x60, 0x48, 0x06, 0x06]);
        assert_eq!(SpnegoToken::decode(&b), Ok(t));
    }

    #[test]
    fn accept_completed() {
        let t = SpnegoToken::Resp(NegTokenResp {
            neg_state: Some(NegState::AcceptCompleted),
            ..Default::default()
        });
        let b = t.encode().unwrap();
        assert_eq!(b, [0xa1, 0x07, 0x30, 0x05, 0xa0, 0x03, 0x0a, 0x01, 0x00]);
        assert_eq!(SpnegoToken::decode(&b), Ok(t));
    }

    #[test]
    fn refusals() {
        // Truncated, indefinite length, 5 length bytes, trailing bytes,
        // fields out of order.
        for bad in [
            &[0xa1, 0x07, 0x30][..],
            &[0xa1, 0x80, 0x00, 0x00],
            &[0xa1, 0x85, 1, 1, 1, 1, 1],
            &[0xa1, 0x02, 0x30, 0x00, 0x00],
            &[
                0xa1, 0x0a, 0x30, 0x08, 0xa1, 0x02, 0x06, 0x00, 0xa0, 0x02, 0x0a, 0x00,
            ],
        ] {
            assert!(SpnegoToken::decode(bad).is_err(), "{bad:02x?}");
        }
        let long = [0xa1, 0x84, 0xff, 0xff, 0xff, 0xff];
        assert!(matches!(
            SpnegoToken::decode(&long),
            Err(DecodeError::UnexpectedEnd { .. })
        ));
    }
}
