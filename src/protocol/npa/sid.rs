//! Security identifiers (`dom_sid`): the NDR form, the text form
//! (`S-1-5-...`) and the well-known SIDs a pipe open's token carries.

use std::fmt;
use std::str::FromStr;

use crate::protocol::error::{DecodeError, EncodeError};
use crate::protocol::ndr::{NdrReader, NdrWriter};

/// Most sub-authorities in a SID (`dom_sid`).
pub const MAX_SUB_AUTHORITIES: usize = 15;

/// A security identifier (`dom_sid`): revision, 48-bit identifier
/// authority, up to 15 sub-authorities.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct DomSid {
    /// Revision (1).
    pub revision: u8,
    /// The identifier authority, big-endian as on the wire.
    pub id_auth: [u8; 6],
    /// The sub-authorities (at most [`MAX_SUB_AUTHORITIES`]).
    pub sub_auths: Vec<u32>,
}

/// Why a SID's text form did not parse.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SidParseError(String);

impl fmt::Display for SidParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid SID {:?}", self.0)
    }
}

impl std::error::Error for SidParseError {}

impl DomSid {
    /// A revision-1 SID from its authority and sub-authorities (more than
    /// [`MAX_SUB_AUTHORITIES`] are refused by the encoder).
    pub fn new(authority: u64, sub_auths: &[u32]) -> DomSid {
        let a = authority.to_be_bytes();
        DomSid {
            revision: 1,
            id_auth: [a[2], a[3], a[4], a[5], a[6], a[7]],
            sub_auths: sub_auths.to_vec(),
        }
    }

    /// The identifier authority as a number.
    pub fn authority(&self) -> u64 {
        let a = self.id_auth;
        u64::from_be_bytes([0, 0, a[0], a[1], a[2], a[3], a[4], a[5]])
    }

    /// The last sub-authority (the RID of an account SID).
    pub fn rid(&self) -> Option<u32> {
        self.sub_auths.last().copied()
    }

    /// This SID with `rid` appended (a domain SID and a RID make an account
    /// SID).
    pub fn with_rid(&self, rid: u32) -> DomSid {
        let mut sid = self.clone();
        sid.sub_auths.push(rid);
        sid
    }

    pub(super) fn encode(&self, w: &mut NdrWriter) -> Result<(), EncodeError> {
        if self.sub_auths.len() > MAX_SUB_AUTHORITIES {
            return Err(EncodeError::StringTooLong {
                field: "dom_sid.sub_auths",
                len: self.sub_auths.len(),
                max: MAX_SUB_AUTHORITIES,
            });
        }
        w.align(4);
        w.u8(self.revision);
        w.u8(self.sub_auths.len() as u8);
        w.bytes(&self.id_auth);
        for s in &self.sub_auths {
            w.u32(*s);
        }
        Ok(())
    }

    pub(super) fn decode(r: &mut NdrReader<'_>) -> Result<DomSid, DecodeError> {
        r.align("dom_sid", 4)?;
        let revision = r.u8("dom_sid.sid_rev_num")?;
        let num = r.u8("dom_sid.num_auths")?;
        if usize::from(num) > MAX_SUB_AUTHORITIES {
            return Err(DecodeError::InvalidValue {
                field: "dom_sid.num_auths",
                value: u64::from(num),
            });
        }
        let mut id_auth = [0u8; 6];
        id_auth.copy_from_slice(r.take("dom_sid.id_auth", 6)?);
        let mut sub_auths = Vec::with_capacity(usize::from(num));
        for _ in 0..num {
            sub_auths.push(r.u32("dom_sid.sub_auths")?);
        }
        Ok(DomSid {
            revision,
            id_auth,
            sub_auths,
        })
    }
}

impl fmt::Display for DomSid {
    /// `S-1-5-21-...`; an authority of 2^32 or more in hex, as Windows
    /// writes it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let auth = self.authority();
        if auth >> 32 == 0 {
            write!(f, "S-{}-{}", self.revision, auth)?;
        } else {
            write!(f, "S-{}-0x{:012X}", self.revision, auth)?;
        }
        for s in &self.sub_auths {
            write!(f, "-{s}")?;
        }
        Ok(())
    }
}

impl FromStr for DomSid {
    type Err = SidParseError;

    fn from_str(s: &str) -> Result<DomSid, SidParseError> {
        let bad = || SidParseError(s.to_owned());
        let rest = s
            .strip_prefix("S-")
            .or_else(|| s.strip_prefix("s-"))
            .ok_or_else(bad)?;
        let mut parts = rest.split('-');
        let revision: u8 = parts.next().ok_or_else(bad)?.parse().map_err(|_| bad())?;
        let auth_text = parts.next().ok_or_else(bad)?;
        let authority = match auth_text
            .strip_prefix("0x")
            .or_else(|| auth_text.strip_prefix("0X"))
        {
            Some(hex) => u64::from_str_radix(hex, 16).map_err(|_| bad())?,
            None => auth_text.parse::<u64>().map_err(|_| bad())?,
        };
        if authority >> 48 != 0 {
            return Err(bad());
        }
        let mut sub_auths = Vec::new();
        for p in parts {
            if sub_auths.len() == MAX_SUB_AUTHORITIES {
                return Err(bad());
            }
            sub_auths.push(p.parse::<u32>().map_err(|_| bad())?);
        }
        let mut sid = DomSid::new(authority, &sub_auths);
        sid.revision = revision;
        Ok(sid)
    }
}

/// `S-1-5-7`, ANONYMOUS LOGON.
pub fn sid_anonymous() -> DomSid {
    DomSid::new(5, &[7])
}
/// `S-1-1-0`, Everyone.
pub fn sid_world() -> DomSid {
    DomSid::new(1, &[0])
}
/// `S-1-5-2`, NETWORK.
pub fn sid_network() -> DomSid {
    DomSid::new(5, &[2])
}
/// `S-1-5-11`, Authenticated Users.
pub fn sid_authenticated_users() -> DomSid {
    DomSid::new(5, &[11])
}
/// `S-1-5-18`, SYSTEM (Samba refuses it on a pipe open).
pub fn sid_system() -> DomSid {
    DomSid::new(5, &[18])
}
/// `S-1-5-32-545`, BUILTIN\Users.
pub fn sid_builtin_users() -> DomSid {
    DomSid::new(5, &[32, 545])
}
/// `S-1-5-32-546`, BUILTIN\Guests.
pub fn sid_builtin_guests() -> DomSid {
    DomSid::new(5, &[32, 546])
}
