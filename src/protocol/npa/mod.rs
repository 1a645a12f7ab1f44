//! Samba's pipe dialect: the "named pipe auth" (NPA) handshake that opens a
//! pipe on Samba's RPC servers (`samba-dcerpcd`, `rpcd_*`), and the
//! message framing that follows it.
//!
//! Sources: `librpc/idl/named_pipe_auth.idl`, `librpc/idl/auth.idl`,
//! `librpc/idl/security.idl` and `libcli/named_pipe_auth/npa_tstream.c` in
//! samba-team/samba; level 7 is Samba 4.17.9 to 4.19, level 8 is 4.20 and
//! later (`/work/shared/SAMBA.md` has the facts checked on a real Samba).
//!
//! # Wire format
//!
//! Request (SMB server -> pipe service), one NDR stream (see `protocol/ndr.rs`)
//! that starts with the length field:
//!
//! | field | encoding |
//! |---|---|
//! | length | `u32` **big-endian**: the bytes after it |
//! | magic | `"NPAM"` |
//! | level | `u32` (7 or 8), then the union's discriminant: the level again |
//! | transport | `u8` (`NCACN_NP` = 1) |
//! | remote_client_name, remote_client_addr | unique pointers to strings |
//! | remote_client_port | `u16` |
//! | local_server_name, local_server_addr | unique pointers to strings |
//! | local_server_port | `u16` |
//! | session_info | unique pointer to an `auth_session_info_transport` |
//!
//! then the pointees in that order ([`SessionInfoTransport`] describes the
//! session part). Reply (pipe service -> SMB server), 36 bytes: length
//! (BE, 32), `"NPAM"`, level, level, `u16` file type (2, message mode),
//! `u16` device state (`0x05ff`), 4 bytes of padding, `u64` allocation size
//! (4096), `u32` NTSTATUS.
//!
//! After a successful reply, in message mode, every message in either
//! direction is one `u16` little-endian length and that many bytes
//! ([`frame_message`], [`unframe_message`], [`MessageUnframer`],
//! [`FramedReader`]).
//!
//! # Limits
//!
//! The decoders are total: every read checks what remains, every count is
//! checked against its `MAX_*` constant and against the input left before
//! anything is allocated, trailing bytes are refused (Samba decodes with
//! `ndr_pull_struct_blob_all`), and nothing panics.

use std::fmt;
use std::io::{self, Read};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::str::FromStr;

use super::error::{DecodeError, EncodeError};
use super::ndr::{check_string, NdrReader, NdrWriter};
use super::status::NtStatus;

/// The handshake's magic, after the length.
pub const NPA_MAGIC: [u8; 4] = *b"NPAM";
/// `dcerpc_transport_t` `NCACN_NP`: the only transport a pipe open uses.
pub const NCACN_NP: u8 = 1;
/// Reply `file_type`: byte mode.
pub const FILE_TYPE_BYTE_MODE: u16 = 1;
/// Reply `file_type`: message mode (`FILE_TYPE_MESSAGE_MODE_PIPE`), what
/// Samba's RPC servers answer; messages are then framed.
pub const FILE_TYPE_MESSAGE_MODE: u16 = 2;
/// Reply `device_state` Samba's RPC servers answer (message-mode read and
/// type, blocking, 0xff instances).
pub const DEVICE_STATE_DEFAULT: u16 = 0x05ff;
/// Reply `allocation_size` Samba's RPC servers answer.
pub const ALLOCATION_SIZE_DEFAULT: u64 = 4096;
/// `STATUS_INVALID_LEVEL`: Samba's answer to a request at a level it does
/// not speak.
pub const STATUS_INVALID_LEVEL: NtStatus = NtStatus(0xC000_0148);
/// `STATUS_INVALID_ADDRESS`: Samba's answer to a request whose addresses
/// are missing or do not parse as IP addresses.
pub const STATUS_INVALID_ADDRESS: NtStatus = NtStatus(0xC000_0141);

/// Length of the reply at levels 7 and 8.
pub const NPA_REPLY_LEN: usize = 36;
/// Length of the big-endian length prefix of a request or reply.
pub const NPA_LENGTH_PREFIX_LEN: usize = 4;
/// Longest request (prefix included) opipe encodes or accepts. The largest
/// request within the other limits is well under it.
pub const MAX_NPA_MESSAGE_BYTES: usize = 1 << 20;
/// Longest string (without its NUL) in a request, in bytes.
pub const MAX_NPA_STRING_BYTES: usize = 1024;
/// Most SIDs in a security token (user, groups, well-known SIDs), and most
/// device SIDs.
pub const MAX_TOKEN_SIDS: usize = 2048;
/// Most supplementary groups in a unix token.
pub const MAX_UNIX_GROUPS: usize = 4096;
/// Longest session key or exported GSSAPI credentials blob.
pub const MAX_NPA_BLOB_BYTES: usize = 64 * 1024;
/// Most sub-authorities in a SID (`dom_sid`).
pub const MAX_SUB_AUTHORITIES: usize = 15;

/// Length of the message framing header.
pub const FRAME_HEADER_LEN: usize = 2;
/// Longest framed message (the header is a `u16`).
pub const MAX_FRAMED_MESSAGE: usize = u16::MAX as usize;

/// `NETLOGON_GUEST` in `auth_user_info.user_flags` (level 8): the user is
/// not authenticated.
pub const NETLOGON_GUEST: u32 = 0x0000_0001;

/// A level of the handshake that this crate speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NpaLevel {
    /// Level 7: Samba 4.17.9 to 4.19.
    V7,
    /// Level 8: Samba 4.20 and later (the token carries claims and device
    /// SIDs; `auth_user_info.authenticated` became `user_flags`).
    V8,
}

impl NpaLevel {
    /// The number on the wire.
    pub const fn as_u32(self) -> u32 {
        match self {
            NpaLevel::V7 => 7,
            NpaLevel::V8 => 8,
        }
    }

    /// The level with this number, if this crate speaks it.
    pub const fn from_u32(level: u32) -> Option<NpaLevel> {
        match level {
            7 => Some(NpaLevel::V7),
            8 => Some(NpaLevel::V8),
            _ => None,
        }
    }

    /// The other level (for the one retry after `STATUS_INVALID_LEVEL`).
    pub const fn other(self) -> NpaLevel {
        match self {
            NpaLevel::V7 => NpaLevel::V8,
            NpaLevel::V8 => NpaLevel::V7,
        }
    }
}

impl fmt::Display for NpaLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.as_u32())
    }
}

// ---------------------------------------------------------------------------
// SIDs
// ---------------------------------------------------------------------------

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

    fn encode(&self, w: &mut NdrWriter) -> Result<(), EncodeError> {
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

    fn decode(r: &mut NdrReader<'_>) -> Result<DomSid, DecodeError> {
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

// ---------------------------------------------------------------------------
// The session info: auth_session_info_transport and what it points to
// ---------------------------------------------------------------------------

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
    fn encode(&self, w: &mut NdrWriter, level: NpaLevel) -> Result<(), EncodeError> {
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

    fn decode(r: &mut NdrReader<'_>, level: NpaLevel) -> Result<SecurityToken, DecodeError> {
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
    fn encode(&self, w: &mut NdrWriter) -> Result<(), EncodeError> {
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

    fn decode(r: &mut NdrReader<'_>) -> Result<UnixToken, DecodeError> {
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

/// `auth_user_info`: the account's names and logon facts.
///
/// NDR: ten unique string pointers (with `user_principal_constructed`, a
/// `u8`, after the second), six `NTTIME`s (8 bytes, aligned to 4), `u16`
/// logon and bad-password counts, `u32 acct_flags`, then `u8 authenticated`
/// at level 7 or `u32 user_flags` at level 8; then the strings that are
/// present, in order. Each string is at most [`MAX_NPA_STRING_BYTES`].
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct UserInfo {
    /// Account name.
    pub account_name: Option<String>,
    /// User principal name.
    pub user_principal_name: Option<String>,
    /// Whether the UPN was made up from account and realm.
    pub user_principal_constructed: bool,
    /// NetBIOS domain name.
    pub domain_name: Option<String>,
    /// DNS domain name.
    pub dns_domain_name: Option<String>,
    /// Full name.
    pub full_name: Option<String>,
    /// Logon script.
    pub logon_script: Option<String>,
    /// Profile path.
    pub profile_path: Option<String>,
    /// Home directory.
    pub home_directory: Option<String>,
    /// Home drive.
    pub home_drive: Option<String>,
    /// Logon server.
    pub logon_server: Option<String>,
    /// `NTTIME`s: last logon, last logoff, account expiry, last password
    /// change, allow password change, force password change.
    pub last_logon: u64,
    /// See `last_logon`.
    pub last_logoff: u64,
    /// See `last_logon`.
    pub acct_expiry: u64,
    /// See `last_logon`.
    pub last_password_change: u64,
    /// See `last_logon`.
    pub allow_password_change: u64,
    /// See `last_logon`.
    pub force_password_change: u64,
    /// Logon count.
    pub logon_count: u16,
    /// Bad password count.
    pub bad_password_count: u16,
    /// `ACB_*` account flags.
    pub acct_flags: u32,
    /// Level 7: whether the user authenticated (a `u8` on the wire, 0 or
    /// 1). Decoding level 8 sets it from `user_flags` (no
    /// [`NETLOGON_GUEST`]).
    pub authenticated: bool,
    /// Level 8: `NETLOGON_*` user flags. Decoding level 7 sets it to
    /// [`NETLOGON_GUEST`] for an unauthenticated user, else 0.
    pub user_flags: u32,
}

impl UserInfo {
    fn strings(&self) -> [(&'static str, &Option<String>); 10] {
        [
            ("user_info.account_name", &self.account_name),
            ("user_info.user_principal_name", &self.user_principal_name),
            ("user_info.domain_name", &self.domain_name),
            ("user_info.dns_domain_name", &self.dns_domain_name),
            ("user_info.full_name", &self.full_name),
            ("user_info.logon_script", &self.logon_script),
            ("user_info.profile_path", &self.profile_path),
            ("user_info.home_directory", &self.home_directory),
            ("user_info.home_drive", &self.home_drive),
            ("user_info.logon_server", &self.logon_server),
        ]
    }

    fn encode(&self, w: &mut NdrWriter, level: NpaLevel) -> Result<(), EncodeError> {
        let strings = self.strings();
        for (field, s) in &strings {
            if let Some(s) = s {
                check_string(field, s, MAX_NPA_STRING_BYTES)?;
            }
        }
        w.align(4);
        for (i, (_, s)) in strings.iter().enumerate() {
            w.unique_ptr(s.is_some());
            if i == 1 {
                w.u8(u8::from(self.user_principal_constructed));
            }
        }
        for t in [
            self.last_logon,
            self.last_logoff,
            self.acct_expiry,
            self.last_password_change,
            self.allow_password_change,
            self.force_password_change,
        ] {
            w.udlong(t);
        }
        w.u16(self.logon_count);
        w.u16(self.bad_password_count);
        w.u32(self.acct_flags);
        match level {
            NpaLevel::V7 => w.u8(u8::from(self.authenticated)),
            NpaLevel::V8 => w.u32(self.user_flags),
        }
        for (field, s) in &strings {
            if let Some(s) = s {
                w.string(field, s, MAX_NPA_STRING_BYTES)?;
            }
        }
        Ok(())
    }

    fn decode(r: &mut NdrReader<'_>, level: NpaLevel) -> Result<UserInfo, DecodeError> {
        const FIELDS: [&str; 10] = [
            "user_info.account_name",
            "user_info.user_principal_name",
            "user_info.domain_name",
            "user_info.dns_domain_name",
            "user_info.full_name",
            "user_info.logon_script",
            "user_info.profile_path",
            "user_info.home_directory",
            "user_info.home_drive",
            "user_info.logon_server",
        ];
        r.align("user_info", 4)?;
        let mut present = [false; 10];
        let mut constructed = 0u8;
        for (i, field) in FIELDS.iter().enumerate() {
            present[i] = r.unique_ptr(field)?;
            if i == 1 {
                constructed = r.u8("user_info.user_principal_constructed")?;
            }
        }
        let user_principal_constructed =
            decode_bool("user_info.user_principal_constructed", constructed)?;
        let mut times = [0u64; 6];
        for t in times.iter_mut() {
            *t = r.udlong("user_info.nttime")?;
        }
        let logon_count = r.u16("user_info.logon_count")?;
        let bad_password_count = r.u16("user_info.bad_password_count")?;
        let acct_flags = r.u32("user_info.acct_flags")?;
        let (authenticated, user_flags) = match level {
            NpaLevel::V7 => {
                let a = decode_bool("user_info.authenticated", r.u8("user_info.authenticated")?)?;
                (a, if a { 0 } else { NETLOGON_GUEST })
            }
            NpaLevel::V8 => {
                let f = r.u32("user_info.user_flags")?;
                (f & NETLOGON_GUEST == 0, f)
            }
        };
        let mut strings: [Option<String>; 10] = Default::default();
        for (i, field) in FIELDS.iter().enumerate() {
            if present[i] {
                strings[i] = Some(r.string(field, MAX_NPA_STRING_BYTES)?);
            }
        }
        let [account_name, user_principal_name, domain_name, dns_domain_name, full_name, logon_script, profile_path, home_directory, home_drive, logon_server] =
            strings;
        Ok(UserInfo {
            account_name,
            user_principal_name,
            user_principal_constructed,
            domain_name,
            dns_domain_name,
            full_name,
            logon_script,
            profile_path,
            home_directory,
            home_drive,
            logon_server,
            last_logon: times[0],
            last_logoff: times[1],
            acct_expiry: times[2],
            last_password_change: times[3],
            allow_password_change: times[4],
            force_password_change: times[5],
            logon_count,
            bad_password_count,
            acct_flags,
            authenticated,
            user_flags,
        })
    }
}

fn decode_bool(field: &'static str, v: u8) -> Result<bool, DecodeError> {
    match v {
        0 => Ok(false),
        1 => Ok(true),
        _ => Err(DecodeError::InvalidValue {
            field,
            value: u64::from(v),
        }),
    }
}

/// `auth_user_info_unix`: the unix user name, and its sanitized form.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct UnixInfo {
    /// Unix user name.
    pub unix_name: Option<String>,
    /// The name with unsafe characters replaced (Samba's `alpha_strcpy`).
    pub sanitized_username: Option<String>,
}

impl UnixInfo {
    fn encode(&self, w: &mut NdrWriter) -> Result<(), EncodeError> {
        let strings = [
            ("unix_info.unix_name", &self.unix_name),
            ("unix_info.sanitized_username", &self.sanitized_username),
        ];
        w.align(4);
        for (_, s) in &strings {
            w.unique_ptr(s.is_some());
        }
        for (field, s) in &strings {
            if let Some(s) = s {
                w.string(field, s, MAX_NPA_STRING_BYTES)?;
            }
        }
        Ok(())
    }

    fn decode(r: &mut NdrReader<'_>) -> Result<UnixInfo, DecodeError> {
        r.align("unix_info", 4)?;
        let has_name = r.unique_ptr("unix_info.unix_name")?;
        let has_sanitized = r.unique_ptr("unix_info.sanitized_username")?;
        let unix_name = if has_name {
            Some(r.string("unix_info.unix_name", MAX_NPA_STRING_BYTES)?)
        } else {
            None
        };
        let sanitized_username = if has_sanitized {
            Some(r.string("unix_info.sanitized_username", MAX_NPA_STRING_BYTES)?)
        } else {
            None
        };
        Ok(UnixInfo {
            unix_name,
            sanitized_username,
        })
    }
}

/// `auth_session_info`: who the caller is.
///
/// NDR: unique pointers to the security token, unix token, user info and
/// unix info; a NULL pointer (`torture`, never sent); the session key
/// (`DATA_BLOB`: `u32` length, bytes); a NULL pointer (`credentials`,
/// never sent); the 16-byte session GUID; a `u16` ticket type; then the
/// four pointees that are present, in order.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct SessionInfo {
    /// SIDs and privileges.
    pub security_token: Option<SecurityToken>,
    /// uid, gid, groups.
    pub unix_token: Option<UnixToken>,
    /// Names and logon facts.
    pub info: Option<UserInfo>,
    /// Unix names.
    pub unix_info: Option<UnixInfo>,
    /// The session key (at most [`MAX_NPA_BLOB_BYTES`]).
    pub session_key: Vec<u8>,
    /// `unique_session_token`: a GUID in its NDR byte layout (first three
    /// fields little-endian).
    pub unique_session_token: [u8; 16],
    /// `ticket_type` (0 unknown, 1 TGT, 2 non-TGT).
    pub ticket_type: u16,
}

impl SessionInfo {
    fn encode(&self, w: &mut NdrWriter, level: NpaLevel) -> Result<(), EncodeError> {
        w.align(4);
        w.unique_ptr(self.security_token.is_some());
        w.unique_ptr(self.unix_token.is_some());
        w.unique_ptr(self.info.is_some());
        w.unique_ptr(self.unix_info.is_some());
        w.unique_ptr(false); // torture
        w.blob(
            "session_info.session_key",
            &self.session_key,
            MAX_NPA_BLOB_BYTES,
        )?;
        w.unique_ptr(false); // credentials
        w.align(4);
        w.bytes(&self.unique_session_token);
        w.u16(self.ticket_type);
        if let Some(t) = &self.security_token {
            t.encode(w, level)?;
        }
        if let Some(t) = &self.unix_token {
            t.encode(w)?;
        }
        if let Some(i) = &self.info {
            i.encode(w, level)?;
        }
        if let Some(i) = &self.unix_info {
            i.encode(w)?;
        }
        Ok(())
    }

    fn decode(r: &mut NdrReader<'_>, level: NpaLevel) -> Result<SessionInfo, DecodeError> {
        r.align("session_info", 4)?;
        let has_token = r.unique_ptr("session_info.security_token")?;
        let has_unix_token = r.unique_ptr("session_info.unix_token")?;
        let has_info = r.unique_ptr("session_info.info")?;
        let has_unix_info = r.unique_ptr("session_info.unix_info")?;
        if r.unique_ptr("session_info.torture")? {
            return Err(DecodeError::InvalidValue {
                field: "session_info.torture",
                value: 1,
            });
        }
        let session_key = r.blob("session_info.session_key", MAX_NPA_BLOB_BYTES)?;
        if r.unique_ptr("session_info.credentials")? {
            return Err(DecodeError::InvalidValue {
                field: "session_info.credentials",
                value: 1,
            });
        }
        r.align("session_info.unique_session_token", 4)?;
        let mut unique_session_token = [0u8; 16];
        unique_session_token.copy_from_slice(r.take("session_info.unique_session_token", 16)?);
        let ticket_type = r.u16("session_info.ticket_type")?;
        let security_token = if has_token {
            Some(SecurityToken::decode(r, level)?)
        } else {
            None
        };
        let unix_token = if has_unix_token {
            Some(UnixToken::decode(r)?)
        } else {
            None
        };
        let info = if has_info {
            Some(UserInfo::decode(r, level)?)
        } else {
            None
        };
        let unix_info = if has_unix_info {
            Some(UnixInfo::decode(r)?)
        } else {
            None
        };
        Ok(SessionInfo {
            security_token,
            unix_token,
            info,
            unix_info,
            session_key,
            unique_session_token,
            ticket_type,
        })
    }
}

/// `auth_session_info_transport`: the session info as it crosses the
/// socket, with the exported GSSAPI credentials (a `DATA_BLOB`, empty for
/// NTLM and anonymous logons).
///
/// NDR: a unique pointer to the [`SessionInfo`], the credentials blob,
/// then the session info if present. [`SessionInfoTransport::encode`] and
/// [`SessionInfoTransport::decode`] handle it alone (what Samba's
/// `ndr_pack` of `samba.dcerpc.auth.session_info_transport` produces, for
/// level 7); inside a request it is aligned on the request's offsets.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct SessionInfoTransport {
    /// The session info.
    pub session_info: Option<SessionInfo>,
    /// Exported GSSAPI credentials (at most [`MAX_NPA_BLOB_BYTES`]).
    pub exported_gssapi_credentials: Vec<u8>,
}

impl SessionInfoTransport {
    fn encode_into(&self, w: &mut NdrWriter, level: NpaLevel) -> Result<(), EncodeError> {
        w.align(4);
        w.unique_ptr(self.session_info.is_some());
        w.blob(
            "session_info_transport.exported_gssapi_credentials",
            &self.exported_gssapi_credentials,
            MAX_NPA_BLOB_BYTES,
        )?;
        if let Some(si) = &self.session_info {
            si.encode(w, level)?;
        }
        Ok(())
    }

    fn decode_from(
        r: &mut NdrReader<'_>,
        level: NpaLevel,
    ) -> Result<SessionInfoTransport, DecodeError> {
        r.align("session_info_transport", 4)?;
        let has_session = r.unique_ptr("session_info_transport.session_info")?;
        let exported_gssapi_credentials = r.blob(
            "session_info_transport.exported_gssapi_credentials",
            MAX_NPA_BLOB_BYTES,
        )?;
        let session_info = if has_session {
            Some(SessionInfo::decode(r, level)?)
        } else {
            None
        };
        Ok(SessionInfoTransport {
            session_info,
            exported_gssapi_credentials,
        })
    }

    /// The structure alone as an NDR stream of its own, in the layout of
    /// `level`.
    pub fn encode(&self, level: NpaLevel) -> Result<Vec<u8>, EncodeError> {
        let mut w = NdrWriter::new(0);
        self.encode_into(&mut w, level)?;
        Ok(w.into_bytes())
    }

    /// Decodes the structure alone (the whole input, no trailing bytes).
    pub fn decode(buf: &[u8], level: NpaLevel) -> Result<SessionInfoTransport, DecodeError> {
        let mut r = NdrReader::new(buf);
        let v = SessionInfoTransport::decode_from(&mut r, level)?;
        finish(&r)?;
        Ok(v)
    }
}

fn finish(r: &NdrReader<'_>) -> Result<(), DecodeError> {
    match r.remaining() {
        0 => Ok(()),
        count => Err(DecodeError::TrailingBytes { count }),
    }
}

// ---------------------------------------------------------------------------
// Request and reply
// ---------------------------------------------------------------------------

/// The handshake's request, `named_pipe_auth_req` at level 7 or 8 (the two
/// levels share this layout; the session info differs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NpaRequest {
    /// The level.
    pub level: NpaLevel,
    /// Transport ([`NCACN_NP`]).
    pub transport: u8,
    /// The SMB client's name (UTF-8).
    pub remote_client_name: Option<String>,
    /// The SMB client's IP address as text (Samba refuses a request
    /// without one, or one that does not parse).
    pub remote_client_addr: Option<String>,
    /// The SMB client's port.
    pub remote_client_port: u16,
    /// The SMB server's name (UTF-8).
    pub local_server_name: Option<String>,
    /// The SMB server's IP address as text (required like
    /// `remote_client_addr`).
    pub local_server_addr: Option<String>,
    /// The SMB server's port.
    pub local_server_port: u16,
    /// Who the caller is.
    pub session_info: Option<SessionInfoTransport>,
}

/// The level announced by a request or reply, from its first 12 bytes
/// (length, magic, level), without decoding the rest: what a service needs
/// to answer `STATUS_INVALID_LEVEL` to a level it does not speak.
pub fn npa_message_level(buf: &[u8]) -> Result<u32, DecodeError> {
    let mut r = NdrReader::new(buf);
    r.take("length", NPA_LENGTH_PREFIX_LEN)?;
    let magic = r.take("magic", 4)?;
    if magic != NPA_MAGIC {
        return Err(DecodeError::InvalidValue {
            field: "magic",
            value: u64::from(u32::from_be_bytes([magic[0], magic[1], magic[2], magic[3]])),
        });
    }
    r.u32("level")
}

/// The whole length (prefix included) of a request or reply whose first 4
/// bytes are `prefix`; more than `max` is refused (use
/// [`MAX_NPA_MESSAGE_BYTES`] for requests, [`NPA_REPLY_LEN`] for replies).
pub fn npa_message_len(prefix: [u8; 4], max: usize) -> Result<usize, DecodeError> {
    let len = u32::from_be_bytes(prefix);
    let total = (len as usize).saturating_add(NPA_LENGTH_PREFIX_LEN);
    if total > max {
        return Err(DecodeError::TooLong {
            field: "length",
            len: total as u64,
            max: max as u64,
        });
    }
    if total < 12 {
        return Err(DecodeError::TooShort {
            field: "length",
            len: total as u64,
            min: 12,
        });
    }
    Ok(total)
}

/// Reads the header (length, magic, level, level) and checks it against
/// the whole input.
fn decode_header(r: &mut NdrReader<'_>, total: usize) -> Result<NpaLevel, DecodeError> {
    let prefix = r.take("length", NPA_LENGTH_PREFIX_LEN)?;
    let len = u32::from_be_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]);
    let expected = total - NPA_LENGTH_PREFIX_LEN;
    if len as usize != expected {
        return Err(DecodeError::LengthMismatch {
            field: "length",
            declared: u64::from(len),
            expected: expected as u64,
        });
    }
    let magic = r.take("magic", 4)?;
    if magic != NPA_MAGIC {
        return Err(DecodeError::InvalidValue {
            field: "magic",
            value: u64::from(u32::from_be_bytes([magic[0], magic[1], magic[2], magic[3]])),
        });
    }
    let level = r.u32("level")?;
    let level = NpaLevel::from_u32(level).ok_or(DecodeError::InvalidValue {
        field: "level",
        value: u64::from(level),
    })?;
    let switch = r.u32("info level")?;
    if switch != level.as_u32() {
        return Err(DecodeError::LengthMismatch {
            field: "info level",
            declared: u64::from(switch),
            expected: u64::from(level.as_u32()),
        });
    }
    Ok(level)
}

fn put_header(w: &mut NdrWriter, level: NpaLevel) {
    w.bytes(&[0; NPA_LENGTH_PREFIX_LEN]); // patched with the length at the end
    w.bytes(&NPA_MAGIC);
    w.u32(level.as_u32());
    w.u32(level.as_u32());
}

fn patch_length(mut out: Vec<u8>) -> Result<Vec<u8>, EncodeError> {
    if out.len() > MAX_NPA_MESSAGE_BYTES {
        return Err(EncodeError::MessageTooLong {
            len: out.len(),
            max: MAX_NPA_MESSAGE_BYTES,
        });
    }
    let len = (out.len() - NPA_LENGTH_PREFIX_LEN) as u32;
    out[..NPA_LENGTH_PREFIX_LEN].copy_from_slice(&len.to_be_bytes());
    Ok(out)
}

impl NpaRequest {
    /// The request, length prefix included.
    pub fn encode(&self) -> Result<Vec<u8>, EncodeError> {
        let strings = [
            ("remote_client_name", &self.remote_client_name),
            ("remote_client_addr", &self.remote_client_addr),
            ("local_server_name", &self.local_server_name),
            ("local_server_addr", &self.local_server_addr),
        ];
        for (field, s) in &strings {
            if let Some(s) = s {
                check_string(field, s, MAX_NPA_STRING_BYTES)?;
            }
        }
        let mut w = NdrWriter::new(0);
        put_header(&mut w, self.level);
        w.align(4);
        w.u8(self.transport);
        w.unique_ptr(self.remote_client_name.is_some());
        w.unique_ptr(self.remote_client_addr.is_some());
        w.u16(self.remote_client_port);
        w.unique_ptr(self.local_server_name.is_some());
        w.unique_ptr(self.local_server_addr.is_some());
        w.u16(self.local_server_port);
        w.unique_ptr(self.session_info.is_some());
        for (field, s) in &strings {
            if let Some(s) = s {
                w.string(field, s, MAX_NPA_STRING_BYTES)?;
            }
        }
        if let Some(si) = &self.session_info {
            si.encode_into(&mut w, self.level)?;
        }
        patch_length(w.into_bytes())
    }

    /// Decodes a whole request (length prefix included, nothing after it).
    /// A level other than 7 or 8 is `InvalidValue { field: "level" }`
    /// ([`npa_message_level`] reads it alone).
    pub fn decode(buf: &[u8]) -> Result<NpaRequest, DecodeError> {
        if buf.len() > MAX_NPA_MESSAGE_BYTES {
            return Err(DecodeError::TooLong {
                field: "length",
                len: buf.len() as u64,
                max: MAX_NPA_MESSAGE_BYTES as u64,
            });
        }
        let mut r = NdrReader::new(buf);
        let level = decode_header(&mut r, buf.len())?;
        r.align("info", 4)?;
        let transport = r.u8("transport")?;
        let has_rcn = r.unique_ptr("remote_client_name")?;
        let has_rca = r.unique_ptr("remote_client_addr")?;
        let remote_client_port = r.u16("remote_client_port")?;
        let has_lsn = r.unique_ptr("local_server_name")?;
        let has_lsa = r.unique_ptr("local_server_addr")?;
        let local_server_port = r.u16("local_server_port")?;
        let has_session = r.unique_ptr("session_info")?;
        let mut string = |present: bool, field| -> Result<Option<String>, DecodeError> {
            if present {
                r.string(field, MAX_NPA_STRING_BYTES).map(Some)
            } else {
                Ok(None)
            }
        };
        let remote_client_name = string(has_rcn, "remote_client_name")?;
        let remote_client_addr = string(has_rca, "remote_client_addr")?;
        let local_server_name = string(has_lsn, "local_server_name")?;
        let local_server_addr = string(has_lsa, "local_server_addr")?;
        let session_info = if has_session {
            Some(SessionInfoTransport::decode_from(&mut r, level)?)
        } else {
            None
        };
        finish(&r)?;
        Ok(NpaRequest {
            level,
            transport,
            remote_client_name,
            remote_client_addr,
            remote_client_port,
            local_server_name,
            local_server_addr,
            local_server_port,
            session_info,
        })
    }
}

/// The handshake's reply, `named_pipe_auth_rep` at level 7 or 8.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NpaReply {
    /// The level (the request's).
    pub level: NpaLevel,
    /// [`FILE_TYPE_MESSAGE_MODE`] or [`FILE_TYPE_BYTE_MODE`].
    pub file_type: u16,
    /// Device state ([`DEVICE_STATE_DEFAULT`]).
    pub device_state: u16,
    /// Allocation size ([`ALLOCATION_SIZE_DEFAULT`]).
    pub allocation_size: u64,
    /// The open's status: success, or why the pipe is not open.
    pub status: NtStatus,
}

impl NpaReply {
    /// What Samba's RPC servers answer to a good request: message mode,
    /// `0x05ff`, 4096, success.
    pub fn success(level: NpaLevel) -> NpaReply {
        NpaReply {
            level,
            file_type: FILE_TYPE_MESSAGE_MODE,
            device_state: DEVICE_STATE_DEFAULT,
            allocation_size: ALLOCATION_SIZE_DEFAULT,
            status: NtStatus::SUCCESS,
        }
    }

    /// A refusal with `status` (the other fields as in [`NpaReply::success`]).
    pub fn error(level: NpaLevel, status: NtStatus) -> NpaReply {
        NpaReply {
            status,
            ..NpaReply::success(level)
        }
    }

    /// The 36-byte reply.
    pub fn encode(&self) -> [u8; NPA_REPLY_LEN] {
        let mut w = NdrWriter::new(0);
        put_header(&mut w, self.level);
        w.u16(self.file_type);
        w.u16(self.device_state);
        w.hyper(self.allocation_size);
        w.u32(self.status.raw());
        let mut out = [0u8; NPA_REPLY_LEN];
        let bytes = w.into_bytes();
        out.copy_from_slice(&bytes);
        out[..4].copy_from_slice(&((NPA_REPLY_LEN - NPA_LENGTH_PREFIX_LEN) as u32).to_be_bytes());
        out
    }

    /// Decodes a whole reply (length prefix included, nothing after it).
    pub fn decode(buf: &[u8]) -> Result<NpaReply, DecodeError> {
        if buf.len() > NPA_REPLY_LEN {
            return Err(DecodeError::TooLong {
                field: "length",
                len: buf.len() as u64,
                max: NPA_REPLY_LEN as u64,
            });
        }
        let mut r = NdrReader::new(buf);
        let level = decode_header(&mut r, buf.len())?;
        let file_type = r.u16("file_type")?;
        let device_state = r.u16("device_state")?;
        let allocation_size = r.hyper("allocation_size")?;
        let status = NtStatus(r.u32("status")?);
        finish(&r)?;
        Ok(NpaReply {
            level,
            file_type,
            device_state,
            allocation_size,
            status,
        })
    }
}

// ---------------------------------------------------------------------------
// Message framing
// ---------------------------------------------------------------------------

/// The 2-byte header of a message of `len` bytes; over
/// [`MAX_FRAMED_MESSAGE`] is refused.
pub fn frame_header(len: usize) -> Result<[u8; FRAME_HEADER_LEN], EncodeError> {
    u16::try_from(len)
        .map(u16::to_le_bytes)
        .map_err(|_| EncodeError::MessageTooLong {
            len,
            max: MAX_FRAMED_MESSAGE,
        })
}

/// `msg` with its header in front.
pub fn frame_message(msg: &[u8]) -> Result<Vec<u8>, EncodeError> {
    let header = frame_header(msg.len())?;
    let mut out = Vec::with_capacity(FRAME_HEADER_LEN + msg.len());
    out.extend_from_slice(&header);
    out.extend_from_slice(msg);
    Ok(out)
}

/// `data` as messages: one per [`MAX_FRAMED_MESSAGE`] bytes (a longer
/// write is split, as Samba's own writer splits it; an empty write is one
/// empty message).
pub fn frame_messages(data: &[u8]) -> Vec<u8> {
    let n = data.len().div_ceil(MAX_FRAMED_MESSAGE).max(1);
    let mut out = Vec::with_capacity(data.len() + n * FRAME_HEADER_LEN);
    let mut chunks = data.chunks(MAX_FRAMED_MESSAGE);
    for _ in 0..n {
        let c = chunks.next().unwrap_or_default();
        // A chunk is at most u16::MAX bytes long.
        out.extend_from_slice(&(c.len() as u16).to_le_bytes());
        out.extend_from_slice(c);
    }
    out
}

/// The first whole message at the front of `buf` and the bytes it took
/// (header included), or `None` while it is incomplete.
pub fn unframe_message(buf: &[u8]) -> Option<(&[u8], usize)> {
    let (header, rest) = buf.split_first_chunk::<FRAME_HEADER_LEN>()?;
    let len = usize::from(u16::from_le_bytes(*header));
    let msg = rest.get(..len)?;
    Some((msg, FRAME_HEADER_LEN + len))
}

/// Cuts a byte stream into messages: push bytes as they arrive, take whole
/// messages out. Holds at most what was pushed and not yet taken.
#[derive(Debug, Default)]
pub struct MessageUnframer {
    buf: Vec<u8>,
    start: usize,
}

impl MessageUnframer {
    /// An empty unframer.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends bytes read from the stream.
    pub fn push(&mut self, bytes: &[u8]) {
        if self.start > 0 && self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        } else if self.start > 64 * 1024 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// The next whole message, if one has arrived.
    pub fn next_message(&mut self) -> Option<Vec<u8>> {
        let pending = self.buf.get(self.start..)?;
        let (msg, used) = unframe_message(pending)?;
        let msg = msg.to_vec();
        self.start += used;
        Some(msg)
    }

    /// Bytes pushed and not yet taken as messages.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.start
    }

    /// How many more bytes the message at the front needs (at least 1 when
    /// no whole message is buffered, 0 when one is).
    pub fn needed(&self) -> usize {
        let pending = self.buf.get(self.start..).unwrap_or(&[]);
        match pending.split_first_chunk::<FRAME_HEADER_LEN>() {
            None => FRAME_HEADER_LEN - pending.len(),
            Some((header, rest)) => {
                usize::from(u16::from_le_bytes(*header)).saturating_sub(rest.len())
            }
        }
    }
}

/// Reads framed messages from a blocking reader.
#[derive(Debug)]
pub struct FramedReader<R> {
    inner: R,
}

impl<R: Read> FramedReader<R> {
    /// Wraps `inner`.
    pub fn new(inner: R) -> Self {
        FramedReader { inner }
    }

    /// The reader back.
    pub fn into_inner(self) -> R {
        self.inner
    }

    /// The next message; `Ok(None)` at a clean end of stream (before a
    /// header), `UnexpectedEof` for a stream cut inside a message.
    pub fn read_message(&mut self) -> io::Result<Option<Vec<u8>>> {
        let mut header = [0u8; FRAME_HEADER_LEN];
        let mut got = 0;
        while got < FRAME_HEADER_LEN {
            match self.inner.read(&mut header[got..]) {
                Ok(0) if got == 0 => return Ok(None),
                Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        let mut msg = vec![0u8; usize::from(u16::from_le_bytes(header))];
        self.inner.read_exact(&mut msg)?;
        Ok(Some(msg))
    }
}

/// Reads one whole request or reply (length prefix, then the rest) from a
/// blocking reader; a declared length over `max` is refused before reading
/// the rest.
pub fn read_npa_message<R: Read>(r: &mut R, max: usize) -> io::Result<Vec<u8>> {
    let mut prefix = [0u8; NPA_LENGTH_PREFIX_LEN];
    r.read_exact(&mut prefix)?;
    let total =
        npa_message_len(prefix, max).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    let mut buf = vec![0u8; total];
    buf[..NPA_LENGTH_PREFIX_LEN].copy_from_slice(&prefix);
    r.read_exact(&mut buf[NPA_LENGTH_PREFIX_LEN..])?;
    Ok(buf)
}

// ---------------------------------------------------------------------------
// The caller's identity
// ---------------------------------------------------------------------------

/// What kind of logon a caller is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum IdentityKind {
    /// A null session (`S-1-5-7`).
    Anonymous,
    /// The guest account (BUILTIN\Guests, or RID 501).
    Guest,
    /// An authenticated user.
    User,
}

/// The caller of a pipe open, as an SMB server knows it: the form in which
/// the engine is given an identity and the service shows one to handlers.
/// [`NpaIdentity::to_request`] maps it onto a request,
/// [`NpaIdentity::from_request`] back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NpaIdentity {
    /// Anonymous, guest or user.
    pub kind: IdentityKind,
    /// Account name.
    pub account: String,
    /// Domain (NetBIOS) name.
    pub domain: String,
    /// The SIDs: the user's first, then its groups and well-known SIDs.
    pub sids: Vec<DomSid>,
    /// uid.
    pub uid: u32,
    /// Primary gid.
    pub gid: u32,
    /// Supplementary gids.
    pub groups: Vec<u32>,
    /// Unix user name.
    pub unix_name: String,
    /// The SMB client's name.
    pub client_name: String,
    /// The SMB client's address and port.
    pub client_addr: SocketAddr,
    /// The SMB server's name.
    pub server_name: String,
    /// The SMB server's address and port.
    pub server_addr: SocketAddr,
    /// The session's GUID (`unique_session_token`, NDR byte layout).
    pub session_guid: [u8; 16],
    /// The session key (empty for anonymous).
    pub session_key: Vec<u8>,
}

/// `nobody` / `nogroup` on Debian, the ids Samba maps anonymous and guest
/// to by default.
pub const NOBODY_ID: u32 = 65534;

const LOOPBACK: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0);

impl NpaIdentity {
    /// A null session, the token Samba 4.17 accepts for `rpcclient -U%`:
    /// SIDs `S-1-5-7`, `S-1-1-0`, `S-1-5-2`; uid and gid 65534, no groups;
    /// "ANONYMOUS LOGON" in "NT AUTHORITY", not authenticated; unix name
    /// "nobody"; client and server 127.0.0.1 port 0, named "localhost".
    pub fn anonymous() -> NpaIdentity {
        NpaIdentity {
            kind: IdentityKind::Anonymous,
            account: "ANONYMOUS LOGON".to_owned(),
            domain: "NT AUTHORITY".to_owned(),
            sids: vec![sid_anonymous(), sid_world(), sid_network()],
            uid: NOBODY_ID,
            gid: NOBODY_ID,
            groups: Vec::new(),
            unix_name: "nobody".to_owned(),
            client_name: "localhost".to_owned(),
            client_addr: LOOPBACK,
            server_name: "localhost".to_owned(),
            server_addr: LOOPBACK,
            session_guid: [0; 16],
            session_key: Vec::new(),
        }
    }

    /// The guest account of `domain` (whose SID is `domain_sid`): user SID
    /// `<domain>-501`, group `<domain>-514` (Domain Guests), then `S-1-1-0`,
    /// `S-1-5-2`, `S-1-5-32-546`; account "nobody", uid and gid 65534, not
    /// authenticated. The addresses as in [`NpaIdentity::anonymous`].
    pub fn guest(domain: &str, domain_sid: &DomSid) -> NpaIdentity {
        NpaIdentity {
            kind: IdentityKind::Guest,
            account: "nobody".to_owned(),
            domain: domain.to_owned(),
            sids: vec![
                domain_sid.with_rid(501),
                domain_sid.with_rid(514),
                sid_world(),
                sid_network(),
                sid_builtin_guests(),
            ],
            ..NpaIdentity::anonymous()
        }
    }

    /// An authenticated user: `user_sid` first, then `group_sids`, then
    /// `S-1-1-0`, `S-1-5-2`, `S-1-5-11`, `S-1-5-32-545`; unix name =
    /// account. The addresses as in [`NpaIdentity::anonymous`].
    #[allow(clippy::too_many_arguments)]
    pub fn user(
        account: &str,
        domain: &str,
        user_sid: DomSid,
        group_sids: &[DomSid],
        uid: u32,
        gid: u32,
        groups: &[u32],
    ) -> NpaIdentity {
        let mut sids = vec![user_sid];
        sids.extend_from_slice(group_sids);
        sids.extend([
            sid_world(),
            sid_network(),
            sid_authenticated_users(),
            sid_builtin_users(),
        ]);
        NpaIdentity {
            kind: IdentityKind::User,
            account: account.to_owned(),
            domain: domain.to_owned(),
            sids,
            uid,
            gid,
            groups: groups.to_vec(),
            unix_name: account.to_owned(),
            ..NpaIdentity::anonymous()
        }
    }

    /// The identity an illumos open's user info describes, for opening the
    /// same pipe in Samba's dialect. What the illumos message lacks is
    /// filled in:
    ///
    /// * `USER_FLAG_ANONYMOUS`: [`NpaIdentity::anonymous`];
    /// * `USER_FLAG_GUEST`: [`NpaIdentity::guest`] of `domain`, with Samba's
    ///   unix-user domain `S-1-22-1` standing in for the unknown domain SID;
    /// * otherwise a user whose SID is Samba's unix-user SID
    ///   `S-1-22-1-<posix_uid>`, gid = uid, no groups;
    ///
    /// and in every case: client name = `workstation`, client address =
    /// `client_addr` (port 0; `0.0.0.0` for a family opipe cannot map),
    /// server `127.0.0.1` port 0 named "localhost", the session GUID's
    /// first 8 bytes = `session_id` (little-endian). Callers with better
    /// facts (real SIDs, groups, addresses) set the public fields after.
    pub fn from_net_user_info(ui: &super::userinfo::NetUserInfo) -> NpaIdentity {
        use super::userinfo::{ClientAddr, USER_FLAG_ANONYMOUS, USER_FLAG_GUEST};
        let unix_users = DomSid::new(22, &[1]);
        let mut id = if ui.flags & USER_FLAG_ANONYMOUS != 0 {
            NpaIdentity::anonymous()
        } else if ui.flags & USER_FLAG_GUEST != 0 {
            NpaIdentity::guest(&ui.domain, &unix_users)
        } else {
            NpaIdentity::user(
                &ui.account,
                &ui.domain,
                unix_users.with_rid(ui.posix_uid),
                &[],
                ui.posix_uid,
                ui.posix_uid,
                &[],
            )
        };
        id.client_name = ui.workstation.clone();
        id.client_addr = SocketAddr::new(
            match ui.client_addr {
                ClientAddr::V4(a) => IpAddr::V4(a),
                ClientAddr::V6(a) => IpAddr::V6(a),
                ClientAddr::Other { .. } => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            },
            0,
        );
        id.session_guid[..8].copy_from_slice(&ui.session_id.to_le_bytes());
        id
    }

    /// Whether this is the SYSTEM token (user SID `S-1-5-18`), which Samba
    /// refuses on a pipe open.
    pub fn is_system(&self) -> bool {
        self.sids.first() == Some(&sid_system())
    }

    /// The session info this identity sends.
    pub fn to_session_info(&self) -> SessionInfoTransport {
        let authenticated = self.kind == IdentityKind::User;
        SessionInfoTransport {
            session_info: Some(SessionInfo {
                security_token: Some(SecurityToken {
                    sids: self.sids.clone(),
                    ..SecurityToken::default()
                }),
                unix_token: Some(UnixToken {
                    uid: self.uid,
                    gid: self.gid,
                    groups: self.groups.clone(),
                }),
                info: Some(UserInfo {
                    account_name: Some(self.account.clone()),
                    domain_name: Some(self.domain.clone()),
                    authenticated,
                    user_flags: if authenticated { 0 } else { NETLOGON_GUEST },
                    ..UserInfo::default()
                }),
                unix_info: Some(UnixInfo {
                    unix_name: Some(self.unix_name.clone()),
                    sanitized_username: None,
                }),
                session_key: self.session_key.clone(),
                unique_session_token: self.session_guid,
                ticket_type: 0,
            }),
            exported_gssapi_credentials: Vec::new(),
        }
    }

    /// The request that opens a pipe as this identity at `level`.
    pub fn to_request(&self, level: NpaLevel) -> NpaRequest {
        NpaRequest {
            level,
            transport: NCACN_NP,
            remote_client_name: Some(self.client_name.clone()),
            remote_client_addr: Some(self.client_addr.ip().to_string()),
            remote_client_port: self.client_addr.port(),
            local_server_name: Some(self.server_name.clone()),
            local_server_addr: Some(self.server_addr.ip().to_string()),
            local_server_port: self.server_addr.port(),
            session_info: Some(self.to_session_info()),
        }
    }

    /// The identity a request carries (service side). Refuses, as Samba
    /// does, a request without session info, security token or unix
    /// token, and one whose addresses are missing or do not parse
    /// (`STATUS_INVALID_ADDRESS` is then the answer Samba gives).
    pub fn from_request(req: &NpaRequest) -> Result<NpaIdentity, IdentityError> {
        let client_ip = parse_addr(&req.remote_client_addr, "remote_client_addr")?;
        let server_ip = parse_addr(&req.local_server_addr, "local_server_addr")?;
        let si = req
            .session_info
            .as_ref()
            .and_then(|t| t.session_info.as_ref())
            .ok_or(IdentityError::Missing("session_info"))?;
        let token = si
            .security_token
            .as_ref()
            .ok_or(IdentityError::Missing("security_token"))?;
        let unix = si
            .unix_token
            .as_ref()
            .ok_or(IdentityError::Missing("unix_token"))?;
        let info = si.info.clone().unwrap_or_default();
        let kind = if token.sids.first() == Some(&sid_anonymous()) {
            IdentityKind::Anonymous
        } else if token.sids.contains(&sid_builtin_guests())
            || token.sids.first().and_then(DomSid::rid) == Some(501)
        {
            IdentityKind::Guest
        } else {
            IdentityKind::User
        };
        Ok(NpaIdentity {
            kind,
            account: info.account_name.unwrap_or_default(),
            domain: info.domain_name.unwrap_or_default(),
            sids: token.sids.clone(),
            uid: unix.uid,
            gid: unix.gid,
            groups: unix.groups.clone(),
            unix_name: si
                .unix_info
                .as_ref()
                .and_then(|u| u.unix_name.clone())
                .unwrap_or_default(),
            client_name: req.remote_client_name.clone().unwrap_or_default(),
            client_addr: SocketAddr::new(client_ip, req.remote_client_port),
            server_name: req.local_server_name.clone().unwrap_or_default(),
            server_addr: SocketAddr::new(server_ip, req.local_server_port),
            session_guid: si.unique_session_token,
            session_key: si.session_key.clone(),
        })
    }
}

fn parse_addr(addr: &Option<String>, field: &'static str) -> Result<IpAddr, IdentityError> {
    let text = addr.as_deref().ok_or(IdentityError::Missing(field))?;
    text.parse()
        .map_err(|_| IdentityError::BadAddress(field, text.to_owned()))
}

/// Why a request carries no usable identity.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IdentityError {
    /// A part Samba requires is absent.
    Missing(&'static str),
    /// An address does not parse as an IP address.
    BadAddress(&'static str, String),
}

impl IdentityError {
    /// The status Samba answers for this problem.
    pub fn status(&self) -> NtStatus {
        match self {
            IdentityError::Missing("remote_client_addr" | "local_server_addr")
            | IdentityError::BadAddress(..) => STATUS_INVALID_ADDRESS,
            IdentityError::Missing(_) => NtStatus::ACCESS_DENIED,
        }
    }
}

impl fmt::Display for IdentityError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IdentityError::Missing(field) => write!(f, "the request has no {field}"),
            IdentityError::BadAddress(field, text) => {
                write!(f, "{field} {text:?} is not an IP address")
            }
        }
    }
}

impl std::error::Error for IdentityError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sid_text_round_trip() {
        for s in [
            "S-1-5-7",
            "S-1-1-0",
            "S-1-5-21-1-2-3-1000",
            "S-1-0x123456789ABC-1",
        ] {
            let sid: DomSid = s.parse().unwrap();
            assert_eq!(sid.to_string(), s);
        }
        assert_eq!("S-1-5-21-3".parse::<DomSid>().unwrap().rid(), Some(3));
        for bad in [
            "",
            "S-",
            "S-1",
            "X-1-5",
            "S-1-5-x",
            "S-1-281474976710656",
            "S-1-5-1-2-3-4-5-6-7-8-9-10-11-12-13-14-15-16",
        ] {
            assert!(bad.parse::<DomSid>().is_err(), "{bad}");
        }
    }

    #[test]
    fn reply_layout_matches_samba_md() {
        let r = NpaReply::success(NpaLevel::V7).encode();
        let mut want = vec![0, 0, 0, 32];
        want.extend_from_slice(b"NPAM");
        want.extend_from_slice(&[7, 0, 0, 0, 7, 0, 0, 0, 2, 0, 0xff, 0x05, 0, 0, 0, 0]);
        want.extend_from_slice(&4096u64.to_le_bytes());
        want.extend_from_slice(&[0, 0, 0, 0]);
        assert_eq!(r.to_vec(), want);
        assert_eq!(NpaReply::decode(&r), Ok(NpaReply::success(NpaLevel::V7)));
        let e = NpaReply::error(NpaLevel::V8, STATUS_INVALID_LEVEL);
        assert_eq!(NpaReply::decode(&e.encode()), Ok(e));
    }

    #[test]
    fn reply_refusals() {
        let good = NpaReply::success(NpaLevel::V7).encode();
        for cut in 0..good.len() {
            assert!(NpaReply::decode(&good[..cut]).is_err(), "cut at {cut}");
        }
        let mut bad = good;
        bad[4] = b'X';
        assert!(matches!(
            NpaReply::decode(&bad),
            Err(DecodeError::InvalidValue { field: "magic", .. })
        ));
        let mut bad = good;
        bad[8] = 5;
        bad[12] = 5;
        assert_eq!(
            NpaReply::decode(&bad),
            Err(DecodeError::InvalidValue {
                field: "level",
                value: 5
            })
        );
        let mut bad = good;
        bad[12] = 8;
        assert!(matches!(
            NpaReply::decode(&bad),
            Err(DecodeError::LengthMismatch {
                field: "info level",
                ..
            })
        ));
        let mut bad = good;
        bad[3] = 31;
        assert!(matches!(
            NpaReply::decode(&bad),
            Err(DecodeError::LengthMismatch {
                field: "length",
                ..
            })
        ));
    }

    #[test]
    fn anonymous_request_round_trips_at_both_levels() {
        for level in [NpaLevel::V7, NpaLevel::V8] {
            let id = NpaIdentity::anonymous();
            let req = id.to_request(level);
            let bytes = req.encode().unwrap();
            assert_eq!(&bytes[4..8], b"NPAM");
            assert_eq!(
                u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as usize,
                bytes.len() - 4
            );
            assert_eq!(npa_message_level(&bytes), Ok(level.as_u32()));
            let back = NpaRequest::decode(&bytes).unwrap();
            assert_eq!(back, req);
            assert_eq!(NpaIdentity::from_request(&back).unwrap(), id);
            for cut in 0..bytes.len() {
                assert!(NpaRequest::decode(&bytes[..cut]).is_err(), "cut at {cut}");
            }
            let mut long = bytes.clone();
            long.push(0);
            assert!(NpaRequest::decode(&long).is_err());
        }
    }

    #[test]
    fn identity_kinds_survive_the_trip() {
        let dom: DomSid = "S-1-5-21-11-22-33".parse().unwrap();
        let guest = NpaIdentity::guest("TESTSRV", &dom);
        let user = NpaIdentity::user(
            "alice",
            "TESTSRV",
            dom.with_rid(1000),
            &[dom.with_rid(513)],
            1000,
            1000,
            &[27, 100],
        );
        for id in [guest, user] {
            let req = id.to_request(NpaLevel::V7);
            let back = NpaRequest::decode(&req.encode().unwrap()).unwrap();
            assert_eq!(NpaIdentity::from_request(&back).unwrap(), id);
        }
    }

    #[test]
    fn identity_from_illumos_user_info() {
        use crate::protocol::userinfo::{
            ClientAddr, NetUserInfo, USER_FLAG_ANONYMOUS, USER_FLAG_GUEST,
        };
        let base = NetUserInfo {
            session_id: 0x1122_3344_5566_7788,
            domain: "DOM".into(),
            account: "bob".into(),
            posix_uid: 1234,
            workstation: "WS1".into(),
            client_addr: ClientAddr::V4(Ipv4Addr::new(192, 0, 2, 7)),
            ..NetUserInfo::default()
        };
        let user = NpaIdentity::from_net_user_info(&base);
        assert_eq!(user.kind, IdentityKind::User);
        assert_eq!(user.sids[0].to_string(), "S-1-22-1-1234");
        assert_eq!(
            (user.uid, user.gid, user.account.as_str()),
            (1234, 1234, "bob")
        );
        assert_eq!(user.client_addr.to_string(), "192.0.2.7:0");
        assert_eq!(user.client_name, "WS1");
        assert_eq!(
            &user.session_guid[..8],
            &0x1122_3344_5566_7788u64.to_le_bytes()
        );

        let anon = NpaIdentity::from_net_user_info(&NetUserInfo {
            flags: USER_FLAG_ANONYMOUS,
            ..base.clone()
        });
        assert_eq!(anon.kind, IdentityKind::Anonymous);
        assert_eq!(anon.sids, NpaIdentity::anonymous().sids);

        let guest = NpaIdentity::from_net_user_info(&NetUserInfo {
            flags: USER_FLAG_GUEST,
            ..base
        });
        assert_eq!(guest.kind, IdentityKind::Guest);
        assert_eq!(guest.domain, "DOM");
        // Whatever it maps to survives a request and back.
        for id in [user, anon, guest] {
            let req = NpaRequest::decode(&id.to_request(NpaLevel::V7).encode().unwrap()).unwrap();
            assert_eq!(NpaIdentity::from_request(&req).unwrap(), id);
        }
    }

    #[test]
    fn identity_refusals() {
        let mut req = NpaIdentity::anonymous().to_request(NpaLevel::V7);
        req.remote_client_addr = Some("not-an-ip".into());
        let e = NpaIdentity::from_request(&req).unwrap_err();
        assert_eq!(e.status(), STATUS_INVALID_ADDRESS);
        req.remote_client_addr = None;
        assert_eq!(
            NpaIdentity::from_request(&req).unwrap_err().status(),
            STATUS_INVALID_ADDRESS
        );
        let mut req = NpaIdentity::anonymous().to_request(NpaLevel::V7);
        req.session_info = None;
        assert_eq!(
            NpaIdentity::from_request(&req),
            Err(IdentityError::Missing("session_info"))
        );
    }

    #[test]
    fn level7_refuses_level8_only_fields() {
        let mut req = NpaIdentity::anonymous().to_request(NpaLevel::V7);
        if let Some(t) = req
            .session_info
            .as_mut()
            .and_then(|s| s.session_info.as_mut())
            .and_then(|s| s.security_token.as_mut())
        {
            t.device_sids.push(sid_world());
        }
        assert!(matches!(
            req.encode(),
            Err(EncodeError::NonCanonical { .. })
        ));
        req.level = NpaLevel::V8;
        let back = NpaRequest::decode(&req.encode().unwrap()).unwrap();
        assert_eq!(back, req);
    }

    #[test]
    fn framing() {
        let framed = frame_message(b"hello").unwrap();
        assert_eq!(framed, [5, 0, b'h', b'e', b'l', b'l', b'o']);
        assert_eq!(unframe_message(&framed), Some((&b"hello"[..], 7)));
        assert_eq!(unframe_message(&framed[..6]), None);
        assert_eq!(unframe_message(&framed[..1]), None);
        assert!(frame_message(&vec![0; 65536]).is_err());
        assert_eq!(frame_message(&vec![0; 65535]).unwrap().len(), 65537);

        let mut u = MessageUnframer::new();
        let mut stream = frame_message(b"one").unwrap();
        stream.extend(frame_message(b"").unwrap());
        stream.extend(frame_message(b"three").unwrap());
        for b in &stream {
            u.push(std::slice::from_ref(b));
        }
        assert_eq!(u.next_message(), Some(b"one".to_vec()));
        assert_eq!(u.next_message(), Some(Vec::new()));
        assert_eq!(u.next_message(), Some(b"three".to_vec()));
        assert_eq!(u.next_message(), None);
        assert_eq!(u.buffered(), 0);
        assert_eq!(u.needed(), 2);
        u.push(&[4, 0, 1]);
        assert_eq!(u.needed(), 3);

        let mut r = FramedReader::new(&stream[..]);
        assert_eq!(r.read_message().unwrap(), Some(b"one".to_vec()));
        assert_eq!(r.read_message().unwrap(), Some(Vec::new()));
        assert_eq!(r.read_message().unwrap(), Some(b"three".to_vec()));
        assert_eq!(r.read_message().unwrap(), None);
        let mut r = FramedReader::new(&stream[..6]);
        r.read_message().unwrap();
        assert_eq!(
            r.read_message().unwrap_err().kind(),
            io::ErrorKind::UnexpectedEof
        );
    }

    #[test]
    fn handshake_length_prefix() {
        assert_eq!(npa_message_len([0, 0, 0, 32], NPA_REPLY_LEN), Ok(36));
        assert!(npa_message_len([0, 0, 0, 33], NPA_REPLY_LEN).is_err());
        assert!(npa_message_len([0xff; 4], MAX_NPA_MESSAGE_BYTES).is_err());
        assert!(npa_message_len([0, 0, 0, 4], MAX_NPA_MESSAGE_BYTES).is_err());
        let req = NpaIdentity::anonymous()
            .to_request(NpaLevel::V7)
            .encode()
            .unwrap();
        let mut cursor = io::Cursor::new(req.clone());
        assert_eq!(
            read_npa_message(&mut cursor, MAX_NPA_MESSAGE_BYTES).unwrap(),
            req
        );
    }
}
