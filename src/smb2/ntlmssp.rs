//! NTLMSSP NEGOTIATE, CHALLENGE and AUTHENTICATE messages (MS-NLMP 2.2.1),
//! as far as anonymous and guest logins need: no keys are derived and no
//! MIC is checked. Strings stay as their wire bytes (UTF-16LE when
//! `NEGOTIATE_UNICODE` is set); the accessors decode them.

use super::wire::{utf16_to_string, Reader, Writer};
use crate::protocol::error::{DecodeError, EncodeError};

/// `"NTLMSSP\0"`.
pub const SIGNATURE: &[u8; 8] = b"NTLMSSP\0";
/// The most bytes of an NTLMSSP message accepted here.
pub const MAX_MESSAGE: usize = 8 * 1024;

/// NTLMSSP_NEGOTIATE_UNICODE.
pub const NEGOTIATE_UNICODE: u32 = 0x0000_0001;
/// NTLM_NEGOTIATE_OEM.
pub const NEGOTIATE_OEM: u32 = 0x0000_0002;
/// NTLMSSP_REQUEST_TARGET.
pub const REQUEST_TARGET: u32 = 0x0000_0004;
/// NTLMSSP_NEGOTIATE_SIGN.
pub const NEGOTIATE_SIGN: u32 = 0x0000_0010;
/// NTLMSSP_NEGOTIATE_SEAL.
pub const NEGOTIATE_SEAL: u32 = 0x0000_0020;
/// NTLMSSP_NEGOTIATE_NTLM.
pub const NEGOTIATE_NTLM: u32 = 0x0000_0200;
/// NTLMSSP_ANONYMOUS.
pub const ANONYMOUS: u32 = 0x0000_0800;
/// NTLMSSP_NEGOTIATE_ALWAYS_SIGN.
pub const NEGOTIATE_ALWAYS_SIGN: u32 = 0x0000_8000;
/// NTLMSSP_TARGET_TYPE_DOMAIN.
pub const TARGET_TYPE_DOMAIN: u32 = 0x0001_0000;
/// NTLMSSP_TARGET_TYPE_SERVER.
pub const TARGET_TYPE_SERVER: u32 = 0x0002_0000;
/// NTLMSSP_NEGOTIATE_EXTENDED_SESSIONSECURITY.
pub const NEGOTIATE_EXTENDED_SESSIONSECURITY: u32 = 0x0008_0000;
/// NTLMSSP_NEGOTIATE_TARGET_INFO.
pub const NEGOTIATE_TARGET_INFO: u32 = 0x0080_0000;
/// NTLMSSP_NEGOTIATE_VERSION.
pub const NEGOTIATE_VERSION: u32 = 0x0200_0000;
/// NTLMSSP_NEGOTIATE_128.
pub const NEGOTIATE_128: u32 = 0x2000_0000;
/// NTLMSSP_NEGOTIATE_KEY_EXCH.
pub const NEGOTIATE_KEY_EXCH: u32 = 0x4000_0000;
/// NTLMSSP_NEGOTIATE_56.
pub const NEGOTIATE_56: u32 = 0x8000_0000;

/// AV pair ids (MS-NLMP 2.2.2.1).
pub mod av {
    /// MsvAvEOL.
    pub const EOL: u16 = 0;
    /// MsvAvNbComputerName.
    pub const NB_COMPUTER_NAME: u16 = 1;
    /// MsvAvNbDomainName.
    pub const NB_DOMAIN_NAME: u16 = 2;
    /// MsvAvDnsComputerName.
    pub const DNS_COMPUTER_NAME: u16 = 3;
    /// MsvAvDnsDomainName.
    pub const DNS_DOMAIN_NAME: u16 = 4;
    /// MsvAvTimestamp.
    pub const TIMESTAMP: u16 = 7;
}

/// The message type of an NTLMSSP message, if `b` is one.
pub fn message_type(b: &[u8]) -> Option<u32> {
    if b.len() < 12 || &b[..8] != SIGNATURE {
        return None;
    }
    Some(u32::from_le_bytes([b[8], b[9], b[10], b[11]]))
}

fn check_head(b: &[u8], want: u32) -> Result<Reader<'_>, DecodeError> {
    if b.len() > MAX_MESSAGE {
        return Err(DecodeError::TooLong {
            field: "NTLMSSP message",
            len: b.len() as u64,
            max: MAX_MESSAGE as u64,
        });
    }
    let mut r = Reader::at(b, 0);
    if r.take("Signature", 8)? != SIGNATURE {
        return Err(DecodeError::InvalidValue {
            field: "Signature",
            value: 0,
        });
    }
    let t = r.u32("MessageType")?;
    if t != want {
        return Err(DecodeError::InvalidValue {
            field: "MessageType",
            value: u64::from(t),
        });
    }
    Ok(r)
}

/// Reads a (Len, MaxLen, BufferOffset) triple; returns (offset, len).
fn fields(r: &mut Reader<'_>, field: &'static str) -> Result<(usize, usize), DecodeError> {
    let len = usize::from(r.u16(field)?);
    let _max = r.u16(field)?;
    let off = r.u32(field)? as usize;
    Ok((off, len))
}

fn payload(
    b: &[u8],
    field: &'static str,
    (off, len): (usize, usize),
) -> Result<Vec<u8>, DecodeError> {
    Ok(super::wire::slice_at(b, field, off, len, MAX_MESSAGE)?.to_vec())
}

/// Writes payloads one after the other from `start`, filling their field
/// triples at `slots`.
fn write_payloads(w: &mut Writer, slots: &[usize], bufs: &[&[u8]]) -> Result<(), EncodeError> {
    for (&slot, buf) in slots.iter().zip(bufs) {
        let len = super::wire::len_u16("NTLMSSP field", buf.len())?;
        let off = super::wire::len_u32("NTLMSSP offset", w.len())?;
        w.patch_u16(slot, len);
        w.patch_u16(slot + 2, len);
        w.patch_u32(slot + 4, off);
        w.bytes(buf);
    }
    if w.len() > MAX_MESSAGE {
        return Err(EncodeError::MessageTooLong {
            len: w.len(),
            max: MAX_MESSAGE,
        });
    }
    Ok(())
}

/// The Version field, there when the flags carry NEGOTIATE_VERSION.
fn read_version(r: &mut Reader<'_>, flags: u32) -> Result<Option<[u8; 8]>, DecodeError> {
    if flags & NEGOTIATE_VERSION != 0 {
        Ok(Some(r.bytes8("Version")?))
    } else {
        Ok(None)
    }
}

/// NegotiateFlags as written: NEGOTIATE_VERSION set exactly when a
/// Version is written (NEGOTIATE and CHALLENGE).
fn flags_with_version(flags: u32, version: Option<[u8; 8]>) -> u32 {
    match version {
        Some(_) => flags | NEGOTIATE_VERSION,
        None => flags & !NEGOTIATE_VERSION,
    }
}

fn string(flags: u32, field: &'static str, b: &[u8]) -> Result<String, DecodeError> {
    if flags & NEGOTIATE_UNICODE != 0 {
        utf16_to_string(field, b)
    } else {
        String::from_utf8(b.to_vec()).map_err(|_| DecodeError::InvalidUtf8 { field })
    }
}

/// NEGOTIATE_MESSAGE (type 1).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Negotiate {
    /// NegotiateFlags.
    pub flags: u32,
    /// DomainName (OEM).
    pub domain: Vec<u8>,
    /// Workstation (OEM).
    pub workstation: Vec<u8>,
    /// Version (when `NEGOTIATE_VERSION` is set).
    pub version: Option<[u8; 8]>,
}

impl Negotiate {
    /// Decodes a type-1 message.
    pub fn decode(b: &[u8]) -> Result<Self, DecodeError> {
        let mut r = check_head(b, 1)?;
        let flags = r.u32("NegotiateFlags")?;
        let d = fields(&mut r, "DomainNameFields")?;
        let w = fields(&mut r, "WorkstationFields")?;
        let version = read_version(&mut r, flags)?;
        Ok(Negotiate {
            flags,
            domain: payload(b, "DomainName", d)?,
            workstation: payload(b, "Workstation", w)?,
            version,
        })
    }

    /// Encodes it (payload after the fixed part, in field order).
    pub fn encode(&self) -> Result<Vec<u8>, EncodeError> {
        let mut w = Writer::new();
        w.bytes(SIGNATURE);
        w.u32(1);
        w.u32(flags_with_version(self.flags, self.version));
        let slots = [w.len(), w.len() + 8];
        w.bytes(&[0; 16]);
        if let Some(v) = self.version {
            w.bytes(&v);
        }
        write_payloads(&mut w, &slots, &[&self.domain, &self.workstation])?;
        Ok(w.buf)
    }
}

/// CHALLENGE_MESSAGE (type 2).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Challenge {
    /// NegotiateFlags.
    pub flags: u32,
    /// TargetName, as on the wire.
    pub target_name: Vec<u8>,
    /// ServerChallenge.
    pub server_challenge: [u8; 8],
    /// TargetInfo: AV pairs, as on the wire.
    pub target_info: Vec<u8>,
    /// Version (when `NEGOTIATE_VERSION` is set).
    pub version: Option<[u8; 8]>,
}

impl Challenge {
    /// Decodes a type-2 message.
    pub fn decode(b: &[u8]) -> Result<Self, DecodeError> {
        let mut r = check_head(b, 2)?;
        let tn = fields(&mut r, "TargetNameFields")?;
        let flags = r.u32("NegotiateFlags")?;
        let server_challenge = r.bytes8("ServerChallenge")?;
        let _reserved = r.bytes8("Reserved")?;
        let ti = fields(&mut r, "TargetInfoFields")?;
        let version = read_version(&mut r, flags)?;
        Ok(Challenge {
            flags,
            target_name: payload(b, "TargetName", tn)?,
            server_challenge,
            target_info: payload(b, "TargetInfo", ti)?,
            version,
        })
    }

    /// Encodes it: TargetName then TargetInfo after the fixed part.
    pub fn encode(&self) -> Result<Vec<u8>, EncodeError> {
        let mut w = Writer::new();
        w.bytes(SIGNATURE);
        w.u32(2);
        let tn = w.len();
        w.bytes(&[0; 8]);
        w.u32(flags_with_version(self.flags, self.version));
        w.bytes(&self.server_challenge);
        w.bytes(&[0; 8]);
        let ti = w.len();
        w.bytes(&[0; 8]);
        if let Some(v) = self.version {
            w.bytes(&v);
        }
        write_payloads(&mut w, &[tn, ti], &[&self.target_name, &self.target_info])?;
        Ok(w.buf)
    }
}

/// AV pairs for a CHALLENGE's TargetInfo, ending with MsvAvEOL; strings
/// are written UTF-16LE.
pub fn target_info(pairs: &[(u16, &str)], timestamp: Option<u64>) -> Result<Vec<u8>, EncodeError> {
    let mut w = Writer::new();
    for (id, s) in pairs {
        let v = super::wire::string_to_utf16(s);
        w.u16(*id);
        w.u16(super::wire::len_u16("AvLen", v.len())?);
        w.bytes(&v);
    }
    if let Some(t) = timestamp {
        w.u16(av::TIMESTAMP);
        w.u16(8);
        w.u64(t);
    }
    w.u16(av::EOL);
    w.u16(0);
    Ok(w.buf)
}

/// AUTHENTICATE_MESSAGE (type 3).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Authenticate {
    /// NegotiateFlags.
    pub flags: u32,
    /// LmChallengeResponse.
    pub lm_response: Vec<u8>,
    /// NtChallengeResponse.
    pub nt_response: Vec<u8>,
    /// DomainName, as on the wire.
    pub domain: Vec<u8>,
    /// UserName, as on the wire.
    pub user: Vec<u8>,
    /// Workstation, as on the wire.
    pub workstation: Vec<u8>,
    /// EncryptedRandomSessionKey.
    pub session_key: Vec<u8>,
    /// Version (when `NEGOTIATE_VERSION` is set).
    pub version: Option<[u8; 8]>,
    /// MIC (present when the payload starts after it).
    pub mic: Option<[u8; 16]>,
}

/// Bytes of the fixed part of AUTHENTICATE before Version.
const AUTH_FIXED: usize = 64;

impl Authenticate {
    /// An anonymous AUTHENTICATE with `flags`: no user, domain,
    /// workstation, responses, session key, version or MIC.
    pub fn anonymous(flags: u32) -> Authenticate {
        Authenticate {
            flags,
            lm_response: Vec::new(),
            nt_response: Vec::new(),
            domain: Vec::new(),
            user: Vec::new(),
            workstation: Vec::new(),
            session_key: Vec::new(),
            version: None,
            mic: None,
        }
    }

    /// Decodes a type-3 message. Version and MIC are read when the lowest
    /// payload offset leaves room for them.
    pub fn decode(b: &[u8]) -> Result<Self, DecodeError> {
        let mut r = check_head(b, 3)?;
        let lm = fields(&mut r, "LmChallengeResponseFields")?;
        let nt = fields(&mut r, "NtChallengeResponseFields")?;
        let d = fields(&mut r, "DomainNameFields")?;
        let u = fields(&mut r, "UserNameFields")?;
        let ws = fields(&mut r, "WorkstationFields")?;
        let k = fields(&mut r, "EncryptedRandomSessionKeyFields")?;
        let flags = r.u32("NegotiateFlags")?;
        let start = [lm, nt, d, u, ws, k]
            .iter()
            .map(|(off, _)| *off)
            .min()
            .unwrap_or(AUTH_FIXED);
        let version = if start >= AUTH_FIXED + 8 {
            read_version(&mut r, flags)?
        } else {
            None
        };
        let mic = if version.is_some() && start >= AUTH_FIXED + 24 {
            Some(r.bytes16("MIC")?)
        } else {
            None
        };
        Ok(Authenticate {
            flags,
            lm_response: payload(b, "LmChallengeResponse", lm)?,
            nt_response: payload(b, "NtChallengeResponse", nt)?,
            domain: payload(b, "DomainName", d)?,
            user: payload(b, "UserName", u)?,
            workstation: payload(b, "Workstation", ws)?,
            session_key: payload(b, "EncryptedRandomSessionKey", k)?,
            version,
            mic,
        })
    }

    /// Encodes it: payloads in field order after Version and MIC, as
    /// Samba's client lays them out. A MIC needs a Version.
    pub fn encode(&self) -> Result<Vec<u8>, EncodeError> {
        if self.mic.is_some() && self.version.is_none() {
            return Err(EncodeError::NonCanonical {
                field: "MIC",
                value: 0,
            });
        }
        let mut w = Writer::new();
        w.bytes(SIGNATURE);
        w.u32(3);
        let slots: Vec<usize> = (0..6).map(|i| w.len() + 8 * i).collect();
        w.bytes(&[0; 48]);
        // A Version needs the flag; the flag alone is kept (where the
        // payload starts says whether a Version is there).
        let flags = match self.version {
            Some(_) => self.flags | NEGOTIATE_VERSION,
            None => self.flags,
        };
        w.u32(flags);
        if let Some(v) = self.version {
            w.bytes(&v);
        }
        if let Some(m) = self.mic {
            w.bytes(&m);
        }
        write_payloads(
            &mut w,
            &slots,
            &[
                &self.lm_response,
                &self.nt_response,
                &self.domain,
                &self.user,
                &self.workstation,
                &self.session_key,
            ],
        )?;
        Ok(w.buf)
    }

    /// The user name, decoded.
    pub fn user_name(&self) -> Result<String, DecodeError> {
        string(self.flags, "UserName", &self.user)
    }

    /// The domain name, decoded.
    pub fn domain_name(&self) -> Result<String, DecodeError> {
        string(self.flags, "DomainName", &self.domain)
    }

    /// The workstation name, decoded.
    pub fn workstation_name(&self) -> Result<String, DecodeError> {
        string(self.flags, "Workstation", &self.workstation)
    }

    /// An anonymous login (MS-NLMP 3.2.5.1.2): no user name and no NT
    /// response (the LM response empty or a single zero byte).
    pub fn is_anonymous(&self) -> bool {
        self.user.is_empty()
            && self.nt_response.is_empty()
            && (self.lm_response.is_empty() || self.lm_response == [0])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiate_and_challenge_set_the_version_flag_by_the_version() {
        const V: [u8; 8] = [6, 1, 0, 0, 0, 0, 0, 15];
        let n = Negotiate {
            flags: NEGOTIATE_UNICODE | NEGOTIATE_VERSION,
            domain: Vec::new(),
            workstation: b"WS".to_vec(),
            version: None,
        };
        let back = Negotiate::decode(&n.encode().unwrap()).unwrap();
        assert_eq!(back.flags, NEGOTIATE_UNICODE, "no Version, no flag");
        assert_eq!(back.version, None);
        let n = Negotiate {
            flags: NEGOTIATE_UNICODE,
            version: Some(V),
            ..n
        };
        let back = Negotiate::decode(&n.encode().unwrap()).unwrap();
        assert_eq!(back.flags, NEGOTIATE_UNICODE | NEGOTIATE_VERSION);
        assert_eq!(
            back,
            Negotiate {
                flags: back.flags,
                ..n
            }
        );
        let c = Challenge {
            flags: NEGOTIATE_VERSION,
            target_name: b"T".to_vec(),
            server_challenge: [7; 8],
            target_info: Vec::new(),
            version: None,
        };
        let back = Challenge::decode(&c.encode().unwrap()).unwrap();
        assert_eq!(back.flags, 0, "no Version, no flag");
        assert_eq!(back.version, None);
        let c = Challenge {
            flags: 0,
            version: Some(V),
            ..c
        };
        let back = Challenge::decode(&c.encode().unwrap()).unwrap();
        assert_eq!(back.flags, NEGOTIATE_VERSION);
        assert_eq!(
            back,
            Challenge {
                flags: back.flags,
                ..c
            }
        );
    }

    #[test]
    fn authenticate_layout_and_flags() {
        let a = Authenticate {
            flags: NEGOTIATE_UNICODE,
            lm_response: vec![],
            nt_response: vec![],
            domain: vec![],
            user: super::super::wire::string_to_utf16("guest"),
            workstation: vec![],
            session_key: vec![],
            version: Some([6, 1, 0, 0, 0, 0, 0, 15]),
            mic: Some([0; 16]),
        };
        let b = a.encode().unwrap();
        // The user name starts right after the MIC.
        assert_eq!(u32::from_le_bytes(b[40..44].try_into().unwrap()), 88);
        let back = Authenticate::decode(&b).unwrap();
        assert_eq!(back.flags, NEGOTIATE_UNICODE | NEGOTIATE_VERSION);
        assert_eq!(back.user_name().as_deref(), Ok("guest"));
        assert!(!back.is_anonymous());
        let bad = Authenticate { version: None, ..a };
        assert!(bad.encode().is_err());
    }

    #[test]
    fn version_flag_without_room_for_version_round_trips() {
        // Found by the fuzz target: NEGOTIATE_VERSION set, but the payload
        // starts right after the fixed part, so there is no Version field.
        let mut b = Authenticate::anonymous(0).encode().unwrap();
        b[60..64].copy_from_slice(&u32::MAX.to_le_bytes());
        let a = Authenticate::decode(&b).unwrap();
        assert_eq!((a.flags, a.version), (u32::MAX, None));
        assert_eq!(Authenticate::decode(&a.encode().unwrap()), Ok(a));
    }

    #[test]
    fn refusals() {
        assert!(Negotiate::decode(b"NTLMSSP\0\x02\0\0\0").is_err());
        assert!(Negotiate::decode(b"NTLMSSQ\0\x01\0\0\0").is_err());
        let mut m = Negotiate {
            flags: 0,
            domain: b"D".to_vec(),
            workstation: vec![],
            version: None,
        }
        .encode()
        .unwrap();
        // The domain field points past the end.
        m[20] = 0xff;
        assert!(Negotiate::decode(&m).is_err());
        assert_eq!(message_type(&m), Some(1));
        assert_eq!(message_type(b"short"), None);
    }
}
