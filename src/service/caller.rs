//! Who opened a pipe, in either dialect.

use std::fmt;
use std::net::IpAddr;

use crate::protocol::{
    ClientAddr, Dialect, IdentityKind, NetUserInfo, NpaIdentity, USER_FLAG_ANONYMOUS,
    USER_FLAG_GUEST,
};

/// The caller of an accepted (or about to be decided) open.
///
/// Both dialects fill [`user`](Self::user), the illumos netuserinfo, so
/// code written for one works for the other; a Samba-dialect open also
/// carries the whole [`NpaIdentity`] it sent (SIDs, unix token, client
/// and server addresses and ports).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The dialect of the open.
    pub dialect: Dialect,
    /// The illumos view: as sent (illumos) or derived from the NPA
    /// identity (Samba: see [`Caller::from_npa`]).
    pub user: NetUserInfo,
    /// Samba's identity, for a Samba-dialect open.
    pub npa: Option<NpaIdentity>,
}

impl Caller {
    /// An illumos-dialect caller.
    pub fn illumos(user: NetUserInfo) -> Caller {
        Caller {
            dialect: Dialect::Illumos,
            user,
            npa: None,
        }
    }

    /// A Samba-dialect caller. The netuserinfo view: account and domain
    /// as sent, `posix_uid` = the unix token's uid, workstation = the
    /// client's name, client address = the client's IP, session id = the
    /// first 8 bytes of the session GUID (little-endian), flags
    /// `USER_FLAG_ANONYMOUS` or `USER_FLAG_GUEST` by the identity's kind,
    /// the rest 0.
    pub fn from_npa(id: NpaIdentity) -> Caller {
        let mut sid8 = [0u8; 8];
        sid8.copy_from_slice(&id.session_guid[..8]);
        let flags = match id.kind {
            IdentityKind::Anonymous => USER_FLAG_ANONYMOUS,
            IdentityKind::Guest => USER_FLAG_GUEST,
            IdentityKind::User => 0,
        };
        let user = NetUserInfo {
            session_id: u64::from_le_bytes(sid8),
            domain: id.domain.clone(),
            account: id.account.clone(),
            posix_uid: id.uid,
            workstation: id.client_name.clone(),
            client_addr: match id.client_addr.ip() {
                IpAddr::V4(a) => ClientAddr::V4(a),
                IpAddr::V6(a) => ClientAddr::V6(a),
            },
            native_os: 0,
            logon_time: 0,
            numopens: 0,
            flags,
        };
        Caller {
            dialect: Dialect::Samba,
            user,
            npa: Some(id),
        }
    }

    /// True for an anonymous (null session) caller.
    pub fn is_anonymous(&self) -> bool {
        self.user.is_anonymous()
    }

    /// "anonymous", "guest" or "user".
    pub fn kind_str(&self) -> &'static str {
        if self.user.flags & USER_FLAG_ANONYMOUS != 0 {
            "anonymous"
        } else if self.user.flags & USER_FLAG_GUEST != 0 {
            "guest"
        } else {
            "user"
        }
    }
}

/// One line for logs: `anonymous "NT AUTHORITY\ANONYMOUS LOGON" uid 65534
/// from 127.0.0.1:40000 (samba)`.
impl fmt::Display for Caller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} \"{}\\{}\" uid {}",
            self.kind_str(),
            self.user.domain,
            self.user.account,
            self.user.posix_uid
        )?;
        match &self.npa {
            Some(id) => write!(
                f,
                " from {} ({}), server {}, {} SIDs{}",
                id.client_addr,
                id.client_name,
                id.server_addr,
                id.sids.len(),
                match id.sids.first() {
                    Some(sid) => format!(", first {sid}"),
                    None => String::new(),
                }
            )?,
            None => write!(
                f,
                " from {:?} ({})",
                self.user.client_addr, self.user.workstation
            )?,
        }
        write!(f, " [{}]", self.dialect)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn npa_identities_map_onto_netuserinfo() {
        let mut anon = NpaIdentity::anonymous();
        anon.session_guid[..8].copy_from_slice(&7u64.to_le_bytes());
        let c = Caller::from_npa(anon);
        assert!(c.is_anonymous());
        assert_eq!(c.kind_str(), "anonymous");
        assert_eq!(c.user.account, "ANONYMOUS LOGON");
        assert_eq!(c.user.domain, "NT AUTHORITY");
        assert_eq!(c.user.posix_uid, 65534);
        assert_eq!(c.user.session_id, 7);
        let line = c.to_string();
        assert!(
            line.contains("anonymous") && line.contains("S-1-5-7"),
            "{line}"
        );

        let guest = Caller::from_npa(NpaIdentity::guest("WG", &"S-1-5-21-1-2-3".parse().unwrap()));
        assert_eq!(guest.user.flags, USER_FLAG_GUEST);
        let user = Caller::from_npa(NpaIdentity::user(
            "alice",
            "WG",
            "S-1-5-21-1-2-3-1000".parse().unwrap(),
            &[],
            1000,
            1000,
            &[],
        ));
        assert_eq!((user.user.flags, user.user.posix_uid), (0, 1000));
        assert_eq!(user.kind_str(), "user");
        assert!(!user.is_anonymous());
    }
}
