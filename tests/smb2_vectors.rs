//! The SMB2 codec against traffic recorded between real clients and a real
//! smbd 4.17.12 (tests/vectors/smb2, made by capture.py there): every
//! client request decodes and our encoder writes it again byte for byte;
//! every server response decodes; the security tokens inside decode and
//! re-encode exactly.
#![cfg(feature = "smb2")]

use opipe::protocol::NtStatus;
use opipe::smb2::negotiate::{NegotiateContext, DIALECT_311, DIALECT_WILDCARD};
use opipe::smb2::ntlmssp::{self, Authenticate, Challenge, Negotiate};
use opipe::smb2::spnego::{SpnegoToken, OID_NTLMSSP};
use opipe::smb2::{split_compound, Request, Response, Smb1Negotiate};

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/vectors/smb2");
const FILES: [&str; 3] = [
    "smbclient_L_0.bin",
    "rpcclient_srvinfo_0.bin",
    "smbclient_nt1_0.bin",
];

/// (from the client?, message without its 4-byte framing header)
fn records(name: &str) -> Vec<(bool, Vec<u8>)> {
    let data = std::fs::read(format!("{DIR}/{name}")).expect("vector file");
    let mut out = Vec::new();
    let mut rest = &data[..];
    while let Some((&tag, tail)) = rest.split_first() {
        let len = opipe::smb2::frame::frame_len(tail[..4].try_into().unwrap()).unwrap();
        out.push((tag == b'C', tail[4..4 + len].to_vec()));
        rest = &tail[4 + len..];
    }
    out
}

/// Checks the SPNEGO and NTLMSSP inside a client SESSION_SETUP and
/// returns the NTLMSSP message type.
fn check_client_token(blob: &[u8]) -> u32 {
    let tok = SpnegoToken::decode(blob).expect("client SPNEGO decodes");
    assert_eq!(tok.encode().unwrap(), blob, "SPNEGO re-encodes exactly");
    let inner = tok.mech_token().expect("a mechanism token");
    let t = ntlmssp::message_type(inner).expect("NTLMSSP");
    match t {
        1 => {
            if let SpnegoToken::Init(init) = &tok {
                assert_eq!(init.mech_types[0], OID_NTLMSSP);
            }
            let n = Negotiate::decode(inner).unwrap();
            assert_eq!(n.encode().unwrap(), inner);
        }
        3 => {
            let a = Authenticate::decode(inner).unwrap();
            assert_eq!(
                a.encode().unwrap(),
                inner,
                "AUTHENTICATE re-encodes exactly"
            );
            assert!(a.mic.is_some() && a.version.is_some());
        }
        other => panic!("client sent NTLMSSP type {other}"),
    }
    t
}

#[test]
fn every_client_request_decodes_and_reencodes_exactly() {
    let mut count = 0;
    for f in FILES {
        for (from_client, msg) in records(f) {
            if !from_client || Smb1Negotiate::is_smb1(&msg) {
                continue;
            }
            for part in split_compound(&msg).expect("compound chain") {
                let (h, req) =
                    Request::decode(part).unwrap_or_else(|e| panic!("{f}: {e}: {part:02x?}"));
                assert!(!matches!(req, Request::Other(_)), "{f}: {req:?}");
                assert_eq!(
                    req.encode(&h).unwrap(),
                    part,
                    "{f}: our encoding of {req:?} differs"
                );
                if let Request::SessionSetup(s) = &req {
                    check_client_token(&s.security_buffer);
                }
                count += 1;
            }
        }
    }
    assert_eq!(count, 9 + 9 + 9);
}

#[test]
fn every_server_response_decodes() {
    for f in FILES {
        let mut pending = 0;
        for (from_client, msg) in records(f) {
            if from_client {
                continue;
            }
            for part in split_compound(&msg).expect("compound chain") {
                let (h, resp) =
                    Response::decode(part).unwrap_or_else(|e| panic!("{f}: {e}: {part:02x?}"));
                if h.status == NtStatus::PENDING {
                    assert!(h.async_id().is_some());
                    assert!(matches!(resp, Response::Error(_)));
                    pending += 1;
                }
                if let Response::SessionSetup(s) = &resp {
                    let tok = SpnegoToken::decode(&s.security_buffer).unwrap();
                    assert_eq!(tok.encode().unwrap(), s.security_buffer);
                    if let Some(inner) = tok.mech_token() {
                        let c = Challenge::decode(inner).unwrap();
                        assert_eq!(c.encode().unwrap(), inner, "CHALLENGE re-encodes exactly");
                    }
                }
                // Our encoder, fed smbd's values, gives back smbd's bytes
                // for the bodies whose layout is fixed.
                if matches!(
                    resp,
                    Response::TreeConnect(_)
                        | Response::TreeDisconnect
                        | Response::Close(_)
                        | Response::Ioctl(_)
                        | Response::SessionSetup(_)
                        | Response::Negotiate(_)
                ) {
                    assert_eq!(resp.encode(&h).unwrap(), part, "{f}: {resp:?}");
                }
            }
        }
        // Only smbclient_L saw smbd's async transceives.
        assert_eq!(pending, if f == "smbclient_L_0.bin" { 2 } else { 0 }, "{f}");
    }
}

#[test]
fn negotiate_requests_offer_311_with_contexts() {
    for f in FILES {
        let (_, msg) = records(f)
            .into_iter()
            .find(|(c, m)| *c && !Smb1Negotiate::is_smb1(m))
            .unwrap();
        let (_, req) = Request::decode(&msg).unwrap();
        let Request::Negotiate(n) = req else {
            panic!("{f}: first SMB2 request is not NEGOTIATE")
        };
        assert_eq!(n.dialects, [0x202, 0x210, 0x300, 0x302, 0x311]);
        assert_eq!(n.dialects.last(), Some(&DIALECT_311));
        let (algs, salt) = n.preauth().expect("preauth context");
        assert_eq!((algs, salt.len()), (&[1u16][..], 32));
        assert!(n
            .contexts
            .iter()
            .any(|c| *c == NegotiateContext::NetName("127.0.0.1".into())));
        assert!(n
            .contexts
            .iter()
            .all(|c| !matches!(c, NegotiateContext::Other { .. })));
    }
}

#[test]
fn smb1_negotiate_is_recognised() {
    let recs = records("smbclient_nt1_0.bin");
    let (from_client, first) = &recs[0];
    assert!(*from_client && Smb1Negotiate::is_smb1(first));
    let n = Smb1Negotiate::decode(first).unwrap();
    assert_eq!(
        n.dialects,
        ["NT LANMAN 1.0", "NT LM 0.12", "SMB 2.002", "SMB 2.???"]
    );
    assert_eq!(n.smb2_answer(), Some(DIALECT_WILDCARD));
    // smbd answered with an SMB2 NEGOTIATE response of revision 0x02FF.
    let (_, resp) = Response::decode(&recs[1].1).unwrap();
    let Response::Negotiate(r) = resp else {
        panic!("not a negotiate response")
    };
    assert_eq!(r.dialect_revision, DIALECT_WILDCARD);
}

#[test]
fn logins_are_anonymous_and_guest() {
    for (f, anonymous, user) in [
        ("rpcclient_srvinfo_0.bin", true, ""),
        ("smbclient_L_0.bin", false, "root"),
    ] {
        let auth = records(f)
            .into_iter()
            .filter(|(c, _)| *c)
            .filter_map(|(_, m)| match Request::decode(&m).ok()? {
                (_, Request::SessionSetup(s)) => Some(s.security_buffer),
                _ => None,
            })
            .find(|b| check_client_token(b) == 3)
            .expect("an AUTHENTICATE");
        let tok = SpnegoToken::decode(&auth).unwrap();
        let a = Authenticate::decode(tok.mech_token().unwrap()).unwrap();
        assert_eq!(a.is_anonymous(), anonymous, "{f}");
        assert_eq!(a.user_name().unwrap(), user, "{f}");
        assert!(a.nt_response.is_empty(), "{f}: no password was sent");
    }
}
