//! The session info a request carries, `auth_session_info_transport`, and
//! what it points to besides the tokens: user info, unix info, session key.

use super::level::NpaLevel;
use super::token::{SecurityToken, UnixToken};
use crate::protocol::error::{DecodeError, EncodeError};
use crate::protocol::ndr::{check_string, NdrReader, NdrWriter};

/// Longest string (without its NUL) in a request, in bytes.
pub const MAX_NPA_STRING_BYTES: usize = 1024;

/// Longest session key or exported GSSAPI credentials blob.
pub const MAX_NPA_BLOB_BYTES: usize = 64 * 1024;

/// `NETLOGON_GUEST` in `auth_user_info.user_flags` (level 8): the user is
/// not authenticated.
pub const NETLOGON_GUEST: u32 = 0x0000_0001;

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
    pub(super) fn encode_into(
        &self,
        w: &mut NdrWriter,
        level: NpaLevel,
    ) -> Result<(), EncodeError> {
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

    pub(super) fn decode_from(
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

pub(super) fn finish(r: &NdrReader<'_>) -> Result<(), DecodeError> {
    match r.remaining() {
        0 => Ok(()),
        count => Err(DecodeError::TrailingBytes { count }),
    }
}
