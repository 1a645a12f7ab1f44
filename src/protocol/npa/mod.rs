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
//!
//! # Parts
//!
//! `level.rs` (levels 7 and 8), `sid.rs` (SIDs), `token.rs` (the security
//! and unix tokens), `session.rs` (the rest of the session info),
//! `handshake.rs` (request and reply), `framing.rs` (the messages after),
//! `identity.rs` (the caller as an SMB server knows it, to a request and
//! back).

mod framing;
mod handshake;
mod identity;
mod level;
mod session;
mod sid;
mod token;

pub use framing::{
    frame_header, frame_message, frame_messages, unframe_message, FramedReader, MessageUnframer,
    FRAME_HEADER_LEN, MAX_FRAMED_MESSAGE,
};
pub use handshake::{
    npa_message_len, npa_message_level, read_npa_message, NpaReply, NpaRequest,
    ALLOCATION_SIZE_DEFAULT, DEVICE_STATE_DEFAULT, FILE_TYPE_BYTE_MODE, FILE_TYPE_MESSAGE_MODE,
    MAX_NPA_MESSAGE_BYTES, NCACN_NP, NPA_LENGTH_PREFIX_LEN, NPA_MAGIC, NPA_REPLY_LEN,
    STATUS_INVALID_ADDRESS, STATUS_INVALID_LEVEL,
};
pub use identity::{IdentityError, IdentityKind, NpaIdentity, NOBODY_ID};
pub use level::NpaLevel;
pub use session::{
    SessionInfo, SessionInfoTransport, UnixInfo, UserInfo, MAX_NPA_BLOB_BYTES,
    MAX_NPA_STRING_BYTES, NETLOGON_GUEST,
};
pub use sid::{
    sid_anonymous, sid_authenticated_users, sid_builtin_guests, sid_builtin_users, sid_network,
    sid_system, sid_world, DomSid, SidParseError, MAX_SUB_AUTHORITIES,
};
pub use token::{SecurityToken, UnixToken, MAX_TOKEN_SIDS, MAX_UNIX_GROUPS};

#[cfg(test)]
mod tests {
    use std::io;
    use std::net::Ipv4Addr;

    use super::*;
    use crate::protocol::error::{DecodeError, EncodeError};

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
