//! The session info's two tokens: the Windows `security_token` (SIDs and
//! privileges) and the `security_unix_token` (uid, gid, groups).

use super::level::NpaLevel;
use super::sid::DomSid;
use crate::protocol::error::{DecodeError, EncodeError};
use crate::protocol::ndr::{NdrReader, NdrWriter};

/// Most SIDs in a security token (user, groups, well-known SIDs), and most
/// device SIDs.
pub const MAX_TOKEN_SIDS: usize = 2048;
/// Most supplementary groups in a unix token.
pub const MAX_UNIX_GROUPS: usize = 4096;

/// `security_token`: the SIDs (user first, then its groups) and privilege
/// bits.
///
/// NDR: aligned to 8; `u32 num_sids`; the SID array (its own `u32` count,
/// then each `dom_sid`: `u8` revision, `u8` count, 6 authority bytes, the
/// `u32` sub-authorities); `hyper privilege_mask`; `u32 rights_mask`. At
/// level 8 then four `u32` counts (local, user and device claims, device
/// SIDs), the four arrays (each with its `u32` count), and a `u16`
/// `evaluate_claims`. Claims are not supported: their counts are 0 when
/// encoded and must be 0 when decoded.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct SecurityToken {
    /// The SIDs (at most [`MAX_TOKEN_SIDS`]).
    pub sids: Vec<DomSid>,
    /// `se_privilege` bits.
    pub privilege_mask: u64,
    /// `lsa_SystemAccessModeFlags` bits.
    pub rights_mask: u32,
    /// Level 8 only: device SIDs (must be empty at level 7).
    pub device_sids: Vec<DomSid>,
    /// Level 8 only: `claims_evaluation_control` (0 invalid, 1 never,
    /// 2 always); must be 0 at level 7.
    pub evaluate_claims: u16,
}

fn encode_sid_array(
    w: &mut NdrWriter,
    field: &'static str,
    sids: &[DomSid],
) -> Result<(), EncodeError> {
    if sids.len() > MAX_TOKEN_SIDS {
        return Err(EncodeError::StringTooLong {
            field,
            len: sids.len(),
            max: MAX_TOKEN_SIDS,
        });
    }
    w.u32(sids.len() as u32);
    for sid in sids {
        sid.encode(w)?;
    }
    Ok(())
}

fn decode_sid_array(
    r: &mut NdrReader<'_>,
    field: &'static str,
    num: u32,
) -> Result<Vec<DomSid>, DecodeError> {
    // A dom_sid is at least 8 bytes.
    let n = r.count(field, MAX_TOKEN_SIDS, 8)?;
    if n as u64 != u64::from(num) {
        return Err(DecodeError::LengthMismatch {
            field,
            declared: n as u64,
            expected: u64::from(num),
        });
    }
    let mut sids = Vec::with_capacity(n);
    for _ in 0..n {
        sids.push(DomSid::decode(r)?);
    }
    Ok(sids)
}

impl SecurityToken {
    pub(super) fn encode(&self, w: &mut NdrWriter, level: NpaLevel) -> Result<(), EncodeError> {
        if level == NpaLevel::V7 && (!self.device_sids.is_empty() || self.evaluate_claims != 0) {
            return Err(EncodeError::NonCanonical {
                field: "security_token.device_sids/evaluate_claims (level 8 only)",
                value: self.device_sids.len() as i64,
            });
        }
        if self.sids.len() > MAX_TOKEN_SIDS {
            return Err(EncodeError::StringTooLong {
                field: "security_token.sids",
                len: self.sids.len(),
                max: MAX_TOKEN_SIDS,
            });
        }
        w.align(8);
        w.u32(self.sids.len() as u32);
        encode_sid_array(w, "security_token.sids", &self.sids)?;
        w.hyper(self.privilege_mask);
        w.u32(self.rights_mask);
        if level == NpaLevel::V8 {
            if self.device_sids.len() > MAX_TOKEN_SIDS {
                return Err(EncodeError::StringTooLong {
                    field: "security_token.device_sids",
                    len: self.device_sids.len(),
                    max: MAX_TOKEN_SIDS,
                });
            }
            w.u32(0); // num_local_claims
            w.u32(0); // num_user_claims
            w.u32(0); // num_device_claims
            w.u32(self.device_sids.len() as u32);
            w.u32(0); // local_claims
            w.u32(0); // user_claims
            w.u32(0); // device_claims
            encode_sid_array(w, "security_token.device_sids", &self.device_sids)?;
            w.u16(self.evaluate_claims);
        }
        Ok(())
    }

    pub(super) fn decode(
        r: &mut NdrReader<'_>,
        level: NpaLevel,
    ) -> Result<SecurityToken, DecodeError> {
        r.align("security_token", 8)?;
        let num_sids = r.u32("security_token.num_sids")?;
        let sids = decode_sid_array(r, "security_token.sids", num_sids)?;
        let privilege_mask = r.hyper("security_token.privilege_mask")?;
        let rights_mask = r.u32("security_token.rights_mask")?;
        let mut token = SecurityToken {
            sids,
            privilege_mask,
            rights_mask,
            device_sids: Vec::new(),
            evaluate_claims: 0,
        };
        if level == NpaLevel::V8 {
            for field in [
                "security_token.num_local_claims",
                "security_token.num_user_claims",
                "security_token.num_device_claims",
            ] {
                let n = r.u32(field)?;
                if n != 0 {
                    return Err(DecodeError::TooLong {
                        field,
                        len: u64::from(n),
                        max: 0,
                    });
                }
            }
            let num_device_sids = r.u32("security_token.num_device_sids")?;
            for field in [
                "security_token.local_claims",
                "security_token.user_claims",
                "security_token.device_claims",
            ] {
                let n = r.u32(field)?;
                if n != 0 {
                    return Err(DecodeError::LengthMismatch {
                        field,
                        declared: u64::from(n),
                        expected: 0,
                    });
                }
            }
            token.device_sids = decode_sid_array(r, "security_token.device_sids", num_device_sids)?;
            token.evaluate_claims = r.u16("security_token.evaluate_claims")?;
        }
        Ok(token)
    }
}

/// `security_unix_token`: the unix uid, gid and supplementary groups.
///
/// NDR (a conformant structure): the `u32` group count first, then aligned
/// to 8: `uid` and `gid` as `hyper`, `u32 ngroups`, each group a `hyper`.
/// The decoder refuses ids over 32 bits, as Samba does.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct UnixToken {
    /// uid.
    pub uid: u32,
    /// Primary gid.
    pub gid: u32,
    /// Supplementary gids (at most [`MAX_UNIX_GROUPS`]).
    pub groups: Vec<u32>,
}

impl UnixToken {
    pub(super) fn encode(&self, w: &mut NdrWriter) -> Result<(), EncodeError> {
        if self.groups.len() > MAX_UNIX_GROUPS {
            return Err(EncodeError::StringTooLong {
                field: "unix_token.groups",
                len: self.groups.len(),
                max: MAX_UNIX_GROUPS,
            });
        }
        w.u32(self.groups.len() as u32);
        w.align(8);
        w.hyper(u64::from(self.uid));
        w.hyper(u64::from(self.gid));
        w.u32(self.groups.len() as u32);
        for g in &self.groups {
            w.hyper(u64::from(*g));
        }
        Ok(())
    }

    pub(super) fn decode(r: &mut NdrReader<'_>) -> Result<UnixToken, DecodeError> {
        let size = r.count("unix_token.groups", MAX_UNIX_GROUPS, 8)?;
        r.align("unix_token", 8)?;
        let uid = r.hyper_u32("unix_token.uid")?;
        let gid = r.hyper_u32("unix_token.gid")?;
        let ngroups = r.u32("unix_token.ngroups")?;
        if u64::from(ngroups) != size as u64 {
            return Err(DecodeError::LengthMismatch {
                field: "unix_token.ngroups",
                declared: u64::from(ngroups),
                expected: size as u64,
            });
        }
        let mut groups = Vec::with_capacity(size);
        for _ in 0..size {
            groups.push(r.hyper_u32("unix_token.groups")?);
        }
        Ok(UnixToken { uid, gid, groups })
    }
}
