//! The caller of a pipe open as an SMB server knows it ([`NpaIdentity`]),
//! and its mapping onto a request and back.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use super::handshake::{NpaRequest, NCACN_NP, STATUS_INVALID_ADDRESS};
use super::level::NpaLevel;
use super::session::{SessionInfo, SessionInfoTransport, UnixInfo, UserInfo, NETLOGON_GUEST};
use super::sid::{
    sid_anonymous, sid_authenticated_users, sid_builtin_guests, sid_builtin_users, sid_network,
    sid_system, sid_world, DomSid,
};
use super::token::{SecurityToken, UnixToken};
use crate::protocol::status::NtStatus;

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
    pub fn from_net_user_info(ui: &crate::protocol::userinfo::NetUserInfo) -> NpaIdentity {
        use crate::protocol::userinfo::{ClientAddr, USER_FLAG_ANONYMOUS, USER_FLAG_GUEST};
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
