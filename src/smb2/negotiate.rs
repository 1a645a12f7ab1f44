//! NEGOTIATE (MS-SMB2 2.2.3, 2.2.4) with its negotiate contexts, and the
//! SMB1 multi-protocol negotiate that some clients send first.

use super::header::{HEADER_LEN, SMB1_PROTOCOL_ID};
use super::wire::{len_u16, len_u32, slice_at, string_to_utf16, utf16_to_string, Reader, Writer};
use crate::protocol::error::{DecodeError, EncodeError};

/// SMB 2.0.2.
pub const DIALECT_202: u16 = 0x0202;
/// SMB 2.1.
pub const DIALECT_210: u16 = 0x0210;
/// SMB 3.0.
pub const DIALECT_300: u16 = 0x0300;
/// SMB 3.0.2.
pub const DIALECT_302: u16 = 0x0302;
/// SMB 3.1.1.
pub const DIALECT_311: u16 = 0x0311;
/// The wildcard revision of an answer to an SMB1 negotiate that offered
/// "SMB 2.???".
pub const DIALECT_WILDCARD: u16 = 0x02FF;

/// SecurityMode: signing enabled.
pub const SIGNING_ENABLED: u16 = 0x0001;
/// SecurityMode: signing required.
pub const SIGNING_REQUIRED: u16 = 0x0002;

/// Context type: SMB2_PREAUTH_INTEGRITY_CAPABILITIES.
pub const CTX_PREAUTH_INTEGRITY: u16 = 0x0001;
/// Context type: SMB2_ENCRYPTION_CAPABILITIES.
pub const CTX_ENCRYPTION: u16 = 0x0002;
/// Context type: SMB2_NETNAME_NEGOTIATE_CONTEXT_ID.
pub const CTX_NETNAME: u16 = 0x0005;
/// Context type: SMB2_SIGNING_CAPABILITIES.
pub const CTX_SIGNING: u16 = 0x0008;
/// Hash algorithm SHA-512 (the only one defined).
pub const HASH_SHA512: u16 = 0x0001;

/// The most dialects a request may list here.
pub const MAX_DIALECTS: usize = 64;
/// The most negotiate contexts a message may carry here.
pub const MAX_CONTEXTS: usize = 32;
/// The most bytes of one context's data.
pub const MAX_CONTEXT_DATA: usize = 1024;
/// The most bytes of a security buffer (SPNEGO blob).
pub const MAX_SECURITY_BUFFER: usize = 16 * 1024;

/// The SecurityBuffer of a NEGOTIATE or SESSION_SETUP message, from its
/// offset and length, at most MAX_SECURITY_BUFFER bytes.
pub(crate) fn security_buffer(msg: &[u8], off: u16, len: u16) -> Result<Vec<u8>, DecodeError> {
    let b = slice_at(
        msg,
        "SecurityBuffer",
        usize::from(off),
        usize::from(len),
        MAX_SECURITY_BUFFER,
    )?;
    Ok(b.to_vec())
}

/// One negotiate context. The typed forms are used only when they account
/// for every byte of the data; anything else is kept as `Other`, so that a
/// decoded context encodes back to the same bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NegotiateContext {
    /// SMB2_PREAUTH_INTEGRITY_CAPABILITIES.
    PreauthIntegrity {
        /// HashAlgorithms.
        hash_algorithms: Vec<u16>,
        /// Salt.
        salt: Vec<u8>,
    },
    /// SMB2_ENCRYPTION_CAPABILITIES.
    Encryption {
        /// Ciphers.
        ciphers: Vec<u16>,
    },
    /// SMB2_SIGNING_CAPABILITIES.
    Signing {
        /// SigningAlgorithms.
        algorithms: Vec<u16>,
    },
    /// SMB2_NETNAME_NEGOTIATE_CONTEXT_ID: the server name the client used.
    NetName(String),
    /// Any other context, or one whose data does not parse exactly.
    Other {
        /// ContextType.
        context_type: u16,
        /// Data.
        data: Vec<u8>,
    },
}

fn u16_list(
    r: &mut Reader<'_>,
    field: &'static str,
    count: usize,
) -> Result<Vec<u16>, DecodeError> {
    if count * 2 > r.remaining() {
        return Err(DecodeError::UnexpectedEnd {
            field,
            needed: count * 2,
            remaining: r.remaining(),
        });
    }
    (0..count).map(|_| r.u16(field)).collect()
}

impl NegotiateContext {
    /// The ContextType.
    pub fn context_type(&self) -> u16 {
        match self {
            NegotiateContext::PreauthIntegrity { .. } => CTX_PREAUTH_INTEGRITY,
            NegotiateContext::Encryption { .. } => CTX_ENCRYPTION,
            NegotiateContext::Signing { .. } => CTX_SIGNING,
            NegotiateContext::NetName(_) => CTX_NETNAME,
            NegotiateContext::Other { context_type, .. } => *context_type,
        }
    }

    fn parse_typed(context_type: u16, data: &[u8]) -> Option<NegotiateContext> {
        let mut r = Reader::at(data, 0);
        let ctx = match context_type {
            CTX_PREAUTH_INTEGRITY => {
                let n = usize::from(r.u16("HashAlgorithmCount").ok()?);
                let salt_len = usize::from(r.u16("SaltLength").ok()?);
                let hash_algorithms = u16_list(&mut r, "HashAlgorithms", n).ok()?;
                let salt = r.take("Salt", salt_len).ok()?.to_vec();
                NegotiateContext::PreauthIntegrity {
                    hash_algorithms,
                    salt,
                }
            }
            CTX_ENCRYPTION => {
                let n = usize::from(r.u16("CipherCount").ok()?);
                NegotiateContext::Encryption {
                    ciphers: u16_list(&mut r, "Ciphers", n).ok()?,
                }
            }
            CTX_SIGNING => {
                let n = usize::from(r.u16("SigningAlgorithmCount").ok()?);
                NegotiateContext::Signing {
                    algorithms: u16_list(&mut r, "SigningAlgorithms", n).ok()?,
                }
            }
            CTX_NETNAME => {
                let s = utf16_to_string("NetName", data).ok()?;
                return Some(NegotiateContext::NetName(s));
            }
            _ => return None,
        };
        (r.remaining() == 0).then_some(ctx)
    }

    fn data(&self) -> Result<Vec<u8>, EncodeError> {
        let mut w = Writer::new();
        match self {
            NegotiateContext::PreauthIntegrity {
                hash_algorithms,
                salt,
            } => {
                w.u16(len_u16("HashAlgorithmCount", hash_algorithms.len())?);
                w.u16(len_u16("SaltLength", salt.len())?);
                for a in hash_algorithms {
                    w.u16(*a);
                }
                w.bytes(salt);
            }
            NegotiateContext::Encryption { ciphers: l }
            | NegotiateContext::Signing { algorithms: l } => {
                w.u16(len_u16("count", l.len())?);
                for a in l {
                    w.u16(*a);
                }
            }
            NegotiateContext::NetName(s) => w.bytes(&string_to_utf16(s)),
            NegotiateContext::Other { data, .. } => w.bytes(data),
        }
        if w.len() > MAX_CONTEXT_DATA {
            return Err(EncodeError::MessageTooLong {
                len: w.len(),
                max: MAX_CONTEXT_DATA,
            });
        }
        Ok(w.buf)
    }
}

/// Reads `count` contexts at `offset` of `msg` (8-aligned one after the other).
fn decode_contexts(
    msg: &[u8],
    offset: usize,
    count: usize,
) -> Result<Vec<NegotiateContext>, DecodeError> {
    if count > MAX_CONTEXTS {
        return Err(DecodeError::TooLong {
            field: "NegotiateContextCount",
            len: count as u64,
            max: MAX_CONTEXTS as u64,
        });
    }
    let mut out = Vec::with_capacity(count);
    let mut pos = offset;
    for i in 0..count {
        if i > 0 {
            pos = pos.div_ceil(8) * 8;
        }
        let mut r = Reader::at(msg, pos);
        let context_type = r.u16("ContextType")?;
        let len = usize::from(r.u16("DataLength")?);
        let _reserved = r.u32("Reserved")?;
        if len > MAX_CONTEXT_DATA {
            return Err(DecodeError::TooLong {
                field: "DataLength",
                len: len as u64,
                max: MAX_CONTEXT_DATA as u64,
            });
        }
        let data = r.take("negotiate context Data", len)?;
        pos = r.pos();
        out.push(NegotiateContext::parse_typed(context_type, data).unwrap_or(
            NegotiateContext::Other {
                context_type,
                data: data.to_vec(),
            },
        ));
    }
    Ok(out)
}

/// Writes contexts 8-aligned (the writer holds the message from its header);
/// returns the offset of the first.
fn write_contexts(w: &mut Writer, contexts: &[NegotiateContext]) -> Result<usize, EncodeError> {
    if contexts.len() > MAX_CONTEXTS {
        return Err(EncodeError::MessageTooLong {
            len: contexts.len(),
            max: MAX_CONTEXTS,
        });
    }
    w.align(8);
    let first = w.len();
    for (i, c) in contexts.iter().enumerate() {
        if i > 0 {
            w.align(8);
        }
        let data = c.data()?;
        w.u16(c.context_type());
        w.u16(len_u16("DataLength", data.len())?);
        w.u32(0);
        w.bytes(&data);
    }
    Ok(first)
}

/// An SMB2 NEGOTIATE request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NegotiateRequest {
    /// SecurityMode.
    pub security_mode: u16,
    /// Capabilities.
    pub capabilities: u32,
    /// ClientGuid.
    pub client_guid: [u8; 16],
    /// Dialects.
    pub dialects: Vec<u16>,
    /// Negotiate contexts (only when 3.1.1 is offered).
    pub contexts: Vec<NegotiateContext>,
    /// ClientStartTime: the same 8 bytes when 3.1.1 is not offered.
    pub client_start_time: u64,
}

impl NegotiateRequest {
    /// Whether SMB 3.1.1 is among the dialects (then the 8 bytes after the
    /// GUID locate the contexts).
    pub fn offers_311(&self) -> bool {
        self.dialects.contains(&DIALECT_311)
    }

    /// The preauth integrity context, if any.
    pub fn preauth(&self) -> Option<(&[u16], &[u8])> {
        self.contexts.iter().find_map(|c| match c {
            NegotiateContext::PreauthIntegrity {
                hash_algorithms,
                salt,
            } => Some((hash_algorithms.as_slice(), salt.as_slice())),
            _ => None,
        })
    }

    pub(crate) fn decode(msg: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::at(msg, HEADER_LEN);
        r.structure_size(36)?;
        let count = usize::from(r.u16("DialectCount")?);
        if count == 0 || count > MAX_DIALECTS {
            return Err(DecodeError::InvalidValue {
                field: "DialectCount",
                value: count as u64,
            });
        }
        let security_mode = r.u16("SecurityMode")?;
        let _reserved = r.u16("Reserved")?;
        let capabilities = r.u32("Capabilities")?;
        let client_guid = r.bytes16("ClientGuid")?;
        let ctx_field = r.bytes8("NegotiateContextOffset")?;
        let dialects = u16_list(&mut r, "Dialects", count)?;
        let mut req = NegotiateRequest {
            security_mode,
            capabilities,
            client_guid,
            dialects,
            contexts: Vec::new(),
            client_start_time: 0,
        };
        if req.offers_311() {
            let offset =
                u32::from_le_bytes([ctx_field[0], ctx_field[1], ctx_field[2], ctx_field[3]]);
            let n = u16::from_le_bytes([ctx_field[4], ctx_field[5]]);
            req.contexts = decode_contexts(msg, offset as usize, usize::from(n))?;
        } else {
            req.client_start_time = u64::from_le_bytes(ctx_field);
        }
        Ok(req)
    }

    pub(crate) fn write(&self, w: &mut Writer) -> Result<(), EncodeError> {
        if self.dialects.len() > MAX_DIALECTS {
            return Err(EncodeError::MessageTooLong {
                len: self.dialects.len(),
                max: MAX_DIALECTS,
            });
        }
        w.u16(36);
        w.u16(self.dialects.len() as u16);
        w.u16(self.security_mode);
        w.u16(0);
        w.u32(self.capabilities);
        w.bytes(&self.client_guid);
        let ctx_at = w.len();
        if self.offers_311() {
            w.u32(0);
            w.u16(len_u16("NegotiateContextCount", self.contexts.len())?);
            w.u16(0);
        } else {
            w.u64(self.client_start_time);
        }
        for d in &self.dialects {
            w.u16(*d);
        }
        if self.offers_311() && !self.contexts.is_empty() {
            let first = write_contexts(w, &self.contexts)?;
            w.patch_u32(ctx_at, len_u32("NegotiateContextOffset", first)?);
        }
        Ok(())
    }
}

/// An SMB2 NEGOTIATE response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NegotiateResponse {
    /// SecurityMode.
    pub security_mode: u16,
    /// DialectRevision.
    pub dialect_revision: u16,
    /// ServerGuid.
    pub server_guid: [u8; 16],
    /// Capabilities.
    pub capabilities: u32,
    /// MaxTransactSize.
    pub max_transact_size: u32,
    /// MaxReadSize.
    pub max_read_size: u32,
    /// MaxWriteSize.
    pub max_write_size: u32,
    /// SystemTime (FILETIME).
    pub system_time: u64,
    /// ServerStartTime (FILETIME).
    pub server_start_time: u64,
    /// The SPNEGO hint (SecurityBuffer).
    pub security_buffer: Vec<u8>,
    /// Negotiate contexts (dialect 3.1.1 only).
    pub contexts: Vec<NegotiateContext>,
}

impl NegotiateResponse {
    pub(crate) fn decode(msg: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::at(msg, HEADER_LEN);
        r.structure_size(65)?;
        let security_mode = r.u16("SecurityMode")?;
        let dialect_revision = r.u16("DialectRevision")?;
        let ctx_count = r.u16("NegotiateContextCount")?;
        let server_guid = r.bytes16("ServerGuid")?;
        let capabilities = r.u32("Capabilities")?;
        let max_transact_size = r.u32("MaxTransactSize")?;
        let max_read_size = r.u32("MaxReadSize")?;
        let max_write_size = r.u32("MaxWriteSize")?;
        let system_time = r.u64("SystemTime")?;
        let server_start_time = r.u64("ServerStartTime")?;
        let sb_off = r.u16("SecurityBufferOffset")?;
        let sb_len = r.u16("SecurityBufferLength")?;
        let ctx_off = r.u32("NegotiateContextOffset")?;
        let security_buffer = security_buffer(msg, sb_off, sb_len)?;
        let contexts = if dialect_revision == DIALECT_311 {
            decode_contexts(msg, ctx_off as usize, usize::from(ctx_count))?
        } else {
            Vec::new()
        };
        Ok(NegotiateResponse {
            security_mode,
            dialect_revision,
            server_guid,
            capabilities,
            max_transact_size,
            max_read_size,
            max_write_size,
            system_time,
            server_start_time,
            security_buffer,
            contexts,
        })
    }

    pub(crate) fn write(&self, w: &mut Writer) -> Result<(), EncodeError> {
        w.u16(65);
        w.u16(self.security_mode);
        w.u16(self.dialect_revision);
        w.u16(len_u16("NegotiateContextCount", self.contexts.len())?);
        w.bytes(&self.server_guid);
        w.u32(self.capabilities);
        w.u32(self.max_transact_size);
        w.u32(self.max_read_size);
        w.u32(self.max_write_size);
        w.u64(self.system_time);
        w.u64(self.server_start_time);
        let sb_at = w.len();
        w.u16(0);
        w.u16(len_u16("SecurityBufferLength", self.security_buffer.len())?);
        let ctx_at = w.len();
        w.u32(0);
        let buf_at = w.len();
        w.patch_u16(sb_at, len_u16("SecurityBufferOffset", buf_at)?);
        w.bytes(&self.security_buffer);
        if self.dialect_revision == DIALECT_311 && !self.contexts.is_empty() {
            let first = write_contexts(w, &self.contexts)?;
            w.patch_u32(ctx_at, len_u32("NegotiateContextOffset", first)?);
        } else if self.security_buffer.is_empty() {
            // The variable part is never empty on the wire.
            w.u8(0);
        }
        Ok(())
    }
}

/// The most bytes of an SMB1 negotiate this decoder looks at.
pub const MAX_SMB1_NEGOTIATE: usize = 4096;

/// The SMB1 NEGOTIATE (command 0x72) a client may open with: only what a
/// server needs to answer with an SMB2 NEGOTIATE response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Smb1Negotiate {
    /// The dialect strings offered, in order.
    pub dialects: Vec<String>,
}

impl Smb1Negotiate {
    /// Whether `msg` starts with the SMB1 protocol id.
    pub fn is_smb1(msg: &[u8]) -> bool {
        msg.starts_with(&SMB1_PROTOCOL_ID)
    }

    /// Decodes an SMB1 NEGOTIATE request: the 32-byte SMB1 header, a word
    /// count of 0, a byte count, and `0x02`-prefixed NUL-terminated dialect
    /// strings.
    pub fn decode(msg: &[u8]) -> Result<Self, DecodeError> {
        if msg.len() > MAX_SMB1_NEGOTIATE {
            return Err(DecodeError::TooLong {
                field: "SMB1 negotiate",
                len: msg.len() as u64,
                max: MAX_SMB1_NEGOTIATE as u64,
            });
        }
        let mut r = Reader::at(msg, 0);
        if r.take("Protocol", 4)? != SMB1_PROTOCOL_ID {
            return Err(DecodeError::InvalidValue {
                field: "Protocol",
                value: 0,
            });
        }
        let command = r.u8("Command")?;
        if command != 0x72 {
            return Err(DecodeError::InvalidValue {
                field: "Command",
                value: u64::from(command),
            });
        }
        r.take("SMB1 header", 27)?;
        let wc = r.u8("WordCount")?;
        if wc != 0 {
            return Err(DecodeError::InvalidValue {
                field: "WordCount",
                value: u64::from(wc),
            });
        }
        let bc = usize::from(r.u16("ByteCount")?);
        let mut rest = r.take("Dialects", bc)?;
        let mut dialects = Vec::new();
        while let Some((&fmt, tail)) = rest.split_first() {
            if fmt != 0x02 {
                return Err(DecodeError::InvalidValue {
                    field: "BufferFormat",
                    value: u64::from(fmt),
                });
            }
            let Some(nul) = tail.iter().position(|&b| b == 0) else {
                return Err(DecodeError::UnexpectedEnd {
                    field: "DialectString",
                    needed: 1,
                    remaining: 0,
                });
            };
            let s = std::str::from_utf8(&tail[..nul]).map_err(|_| DecodeError::InvalidUtf8 {
                field: "DialectString",
            })?;
            dialects.push(s.to_owned());
            rest = &tail[nul + 1..];
        }
        Ok(Smb1Negotiate { dialects })
    }

    /// The SMB2 revision to answer with: 0x02FF when "SMB 2.???" is
    /// offered, 0x0202 when only "SMB 2.002" is, `None` when no SMB2
    /// dialect is (the connection is then closed).
    pub fn smb2_answer(&self) -> Option<u16> {
        if self.dialects.iter().any(|d| d == "SMB 2.???") {
            Some(DIALECT_WILDCARD)
        } else if self.dialects.iter().any(|d| d == "SMB 2.002") {
            Some(DIALECT_202)
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inexact_context_is_kept_raw() {
        // A preauth context with a trailing byte stays raw and round-trips.
        let data = vec![1, 0, 0, 0, 1, 0, 9];
        assert_eq!(
            NegotiateContext::parse_typed(CTX_PREAUTH_INTEGRITY, &data),
            None
        );
        assert_eq!(
            NegotiateContext::parse_typed(CTX_SIGNING, &[1, 0, 2, 0]),
            Some(NegotiateContext::Signing {
                algorithms: vec![2]
            })
        );
        // A count larger than the data: no typed form, no allocation.
        assert_eq!(
            NegotiateContext::parse_typed(CTX_ENCRYPTION, &[0xFF, 0xFF]),
            None
        );
    }

    #[test]
    fn smb1_answers() {
        let n = Smb1Negotiate {
            dialects: vec!["NT LM 0.12".into(), "SMB 2.002".into()],
        };
        assert_eq!(n.smb2_answer(), Some(DIALECT_202));
        let n = Smb1Negotiate {
            dialects: vec!["NT LM 0.12".into()],
        };
        assert_eq!(n.smb2_answer(), None);
    }
}
