//! Samba's pipe dialect against golden bytes written by Samba's own NDR
//! code (`tests/vectors/npa/gen.py`, python3-samba 4.17: level 7 layout),
//! and a proptest round trip of the whole request and reply.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use opipe::protocol::npa::{
    IdentityKind, NpaIdentity, NpaLevel, NpaReply, NpaRequest, SecurityToken, SessionInfo,
    SessionInfoTransport, UnixInfo, UnixToken, UserInfo, NCACN_NP, NETLOGON_GUEST,
};
use opipe::protocol::{DecodeError, DomSid, NtStatus};
use proptest::prelude::*;
use proptest::strategy::ValueTree;

fn vector(name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/vectors/npa")
        .join(format!("{name}.bin"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn sids(texts: &[&str]) -> Vec<DomSid> {
    texts.iter().map(|t| t.parse().unwrap()).collect()
}

fn guid(text: &str) -> [u8; 16] {
    let hex: String = text.chars().filter(|c| *c != '-').collect();
    let b: Vec<u8> = (0..16)
        .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap())
        .collect();
    // NDR GUID layout: the first three fields little-endian.
    [
        b[3], b[2], b[1], b[0], b[5], b[4], b[7], b[6], b[8], b[9], b[10], b[11], b[12], b[13],
        b[14], b[15],
    ]
}

fn user_full() -> SessionInfoTransport {
    SessionInfoTransport {
        session_info: Some(SessionInfo {
            security_token: Some(SecurityToken {
                sids: sids(&[
                    "S-1-5-21-1004336348-1177238915-682003330-1000",
                    "S-1-5-21-1004336348-1177238915-682003330-513",
                    "S-1-1-0",
                    "S-1-5-2",
                    "S-1-5-11",
                    "S-1-5-32-545",
                    "S-1-0x123456789ABC-1-2",
                ]),
                privilege_mask: 0x1FF_FFF0,
                rights_mask: 0x2F,
                ..SecurityToken::default()
            }),
            unix_token: Some(UnixToken {
                uid: 1000,
                gid: 1001,
                groups: vec![27, 100, 4_294_967_294],
            }),
            info: Some(UserInfo {
                account_name: Some("alice".into()),
                user_principal_name: Some("alice@example.test".into()),
                user_principal_constructed: true,
                domain_name: Some("EXAMPLE".into()),
                dns_domain_name: Some("example.test".into()),
                full_name: Some("Alice Ünïcødé".into()),
                logon_script: Some("x.bat".into()),
                profile_path: Some("\\\\srv\\profiles\\alice".into()),
                home_directory: Some("\\\\srv\\alice".into()),
                home_drive: Some("H:".into()),
                logon_server: Some("DC1".into()),
                last_logon: 0x01D9_0000_0000_0001,
                last_logoff: 0x7FFF_FFFF_FFFF_FFFF,
                acct_expiry: 0x7FFF_FFFF_FFFF_FFFF,
                last_password_change: 133_000_000_000_000_000,
                allow_password_change: 133_000_000_000_000_001,
                force_password_change: 0x7FFF_FFFF_FFFF_FFFF,
                logon_count: 7,
                bad_password_count: 1,
                acct_flags: 0x210,
                authenticated: true,
                user_flags: 0,
            }),
            unix_info: Some(UnixInfo {
                unix_name: Some("alice".into()),
                sanitized_username: Some("alice_".into()),
            }),
            session_key: (1..=16).collect(),
            unique_session_token: guid("01234567-89ab-cdef-0123-456789abcdef"),
            ticket_type: 1,
        }),
        exported_gssapi_credentials: vec![1, 2, 3, 4, 5],
    }
}

fn expected() -> Vec<(&'static str, SessionInfoTransport)> {
    let dom: DomSid = "S-1-5-21-11-22-33".parse().unwrap();
    vec![
        ("anonymous", NpaIdentity::anonymous().to_session_info()),
        (
            "guest",
            NpaIdentity::guest("TESTSRV", &dom).to_session_info(),
        ),
        ("user_full", user_full()),
        (
            "no_session",
            SessionInfoTransport {
                session_info: None,
                exported_gssapi_credentials: b"gss".to_vec(),
            },
        ),
        (
            "sparse",
            SessionInfoTransport {
                session_info: Some(SessionInfo {
                    unix_token: Some(UnixToken {
                        uid: 0,
                        gid: 0,
                        groups: (1..40).collect(),
                    }),
                    unix_info: Some(UnixInfo {
                        unix_name: None,
                        sanitized_username: Some("x".into()),
                    }),
                    session_key: vec![0xff],
                    ticket_type: 2,
                    ..SessionInfo::default()
                }),
                exported_gssapi_credentials: Vec::new(),
            },
        ),
    ]
}

#[test]
fn encoder_writes_sambas_bytes() {
    for (name, value) in expected() {
        let ours = value.encode(NpaLevel::V7).unwrap();
        assert_eq!(ours, vector(name), "{name}: our bytes differ from Samba's");
    }
}

#[test]
fn decoder_reads_sambas_bytes() {
    for (name, value) in expected() {
        let bytes = vector(name);
        assert_eq!(
            SessionInfoTransport::decode(&bytes, NpaLevel::V7).as_ref(),
            Ok(&value),
            "{name}"
        );
        // Every truncation is refused, and so is a trailing byte.
        for cut in 0..bytes.len() {
            assert!(
                SessionInfoTransport::decode(&bytes[..cut], NpaLevel::V7).is_err(),
                "{name} cut at {cut}"
            );
        }
        let mut long = bytes.clone();
        long.push(0);
        assert_eq!(
            SessionInfoTransport::decode(&long, NpaLevel::V7),
            Err(DecodeError::TrailingBytes { count: 1 })
        );
    }
}

#[test]
fn anonymous_vector_is_the_documented_token() {
    let t = SessionInfoTransport::decode(&vector("anonymous"), NpaLevel::V7).unwrap();
    let si = t.session_info.unwrap();
    let token = si.security_token.unwrap();
    let texts: Vec<String> = token.sids.iter().map(ToString::to_string).collect();
    assert_eq!(texts, ["S-1-5-7", "S-1-1-0", "S-1-5-2"]);
    let unix = si.unix_token.unwrap();
    assert_eq!((unix.uid, unix.gid, unix.groups.len()), (65534, 65534, 0));
    let info = si.info.unwrap();
    assert_eq!(info.account_name.as_deref(), Some("ANONYMOUS LOGON"));
    assert_eq!(info.domain_name.as_deref(), Some("NT AUTHORITY"));
    assert!(!info.authenticated);
    assert_eq!(info.user_flags, NETLOGON_GUEST);
    assert_eq!(si.unix_info.unwrap().unix_name.as_deref(), Some("nobody"));
}

/// The session part inside a request is aligned on the request's offsets:
/// wherever it lands, it decodes to the same value (the strings before it
/// move it through every offset modulo 8).
#[test]
fn session_info_inside_requests_at_every_alignment() {
    for extra in 0..8 {
        for (name, value) in expected() {
            let req = NpaRequest {
                level: NpaLevel::V7,
                transport: NCACN_NP,
                remote_client_name: Some("c".repeat(extra + 1)),
                remote_client_addr: Some("127.0.0.1".into()),
                remote_client_port: 445,
                local_server_name: None,
                local_server_addr: Some("::1".into()),
                local_server_port: 0,
                session_info: Some(value),
            };
            let bytes = req.encode().unwrap();
            assert_eq!(
                NpaRequest::decode(&bytes).as_ref(),
                Ok(&req),
                "{name} +{extra}"
            );
        }
    }
}

fn arb_sid() -> impl Strategy<Value = DomSid> {
    (
        any::<u8>(),
        any::<[u8; 6]>(),
        prop::collection::vec(any::<u32>(), 0..=15),
    )
        .prop_map(|(revision, id_auth, sub_auths)| DomSid {
            revision,
            id_auth,
            sub_auths,
        })
}

fn arb_string() -> impl Strategy<Value = Option<String>> {
    prop::option::of("[^\u{0}]{0,24}")
}

fn arb_token(level: NpaLevel) -> impl Strategy<Value = SecurityToken> {
    let v8 = level == NpaLevel::V8;
    (
        prop::collection::vec(arb_sid(), 0..6),
        any::<u64>(),
        any::<u32>(),
        prop::collection::vec(arb_sid(), 0..if v8 { 3 } else { 1 }),
        if v8 { 0..3u16 } else { 0..1u16 },
    )
        .prop_map(
            |(sids, privilege_mask, rights_mask, device_sids, evaluate_claims)| SecurityToken {
                sids,
                privilege_mask,
                rights_mask,
                device_sids,
                evaluate_claims,
            },
        )
}

fn arb_user_info(level: NpaLevel) -> impl Strategy<Value = UserInfo> {
    (
        prop::collection::vec(arb_string(), 10),
        any::<bool>(),
        any::<[u64; 6]>(),
        any::<(u16, u16, u32)>(),
        any::<bool>(),
        any::<u32>(),
    )
        .prop_map(move |(s, constructed, t, (lc, bc, af), auth, flags)| {
            let (authenticated, user_flags) = match level {
                NpaLevel::V7 => (auth, if auth { 0 } else { NETLOGON_GUEST }),
                NpaLevel::V8 => (flags & NETLOGON_GUEST == 0, flags),
            };
            UserInfo {
                account_name: s[0].clone(),
                user_principal_name: s[1].clone(),
                user_principal_constructed: constructed,
                domain_name: s[2].clone(),
                dns_domain_name: s[3].clone(),
                full_name: s[4].clone(),
                logon_script: s[5].clone(),
                profile_path: s[6].clone(),
                home_directory: s[7].clone(),
                home_drive: s[8].clone(),
                logon_server: s[9].clone(),
                last_logon: t[0],
                last_logoff: t[1],
                acct_expiry: t[2],
                last_password_change: t[3],
                allow_password_change: t[4],
                force_password_change: t[5],
                logon_count: lc,
                bad_password_count: bc,
                acct_flags: af,
                authenticated,
                user_flags,
            }
        })
}

fn arb_transport(level: NpaLevel) -> impl Strategy<Value = SessionInfoTransport> {
    let session = (
        prop::option::of(arb_token(level)),
        prop::option::of(
            (
                any::<u32>(),
                any::<u32>(),
                prop::collection::vec(any::<u32>(), 0..8),
            )
                .prop_map(|(uid, gid, groups)| UnixToken { uid, gid, groups }),
        ),
        prop::option::of(arb_user_info(level)),
        prop::option::of((arb_string(), arb_string()).prop_map(|(a, b)| UnixInfo {
            unix_name: a,
            sanitized_username: b,
        })),
        prop::collection::vec(any::<u8>(), 0..20),
        any::<[u8; 16]>(),
        any::<u16>(),
    )
        .prop_map(
            |(security_token, unix_token, info, unix_info, session_key, guid, ticket_type)| {
                SessionInfo {
                    security_token,
                    unix_token,
                    info,
                    unix_info,
                    session_key,
                    unique_session_token: guid,
                    ticket_type,
                }
            },
        );
    (
        prop::option::of(session),
        prop::collection::vec(any::<u8>(), 0..9),
    )
        .prop_map(|(session_info, creds)| SessionInfoTransport {
            session_info,
            exported_gssapi_credentials: creds,
        })
}

fn arb_request() -> impl Strategy<Value = NpaRequest> {
    prop_oneof![Just(NpaLevel::V7), Just(NpaLevel::V8)].prop_flat_map(|level| {
        (
            any::<u8>(),
            prop::collection::vec(arb_string(), 4),
            any::<(u16, u16)>(),
            prop::option::of(arb_transport(level)),
        )
            .prop_map(move |(transport, s, (rp, lp), session_info)| NpaRequest {
                level,
                transport,
                remote_client_name: s[0].clone(),
                remote_client_addr: s[1].clone(),
                remote_client_port: rp,
                local_server_name: s[2].clone(),
                local_server_addr: s[3].clone(),
                local_server_port: lp,
                session_info,
            })
    })
}

/// Samba's own decoder reads what our encoder writes: random session
/// infos (level 7, the layout of the installed python3-samba) go through
/// `ndr_unpack` + `ndr_pack` in python3-samba and come back byte for byte.
#[test]
fn sambas_decoder_reads_our_random_encodings() {
    let python = Path::new("/usr/bin/python3");
    let usable = python.exists()
        && Command::new(python)
            .args(["-c", "import samba.dcerpc.auth, samba.ndr"])
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
    if !usable {
        eprintln!("SKIPPED: python3-samba not installed; Samba's decoder not consulted");
        return;
    }
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let strategy = arb_transport(NpaLevel::V7);
    let values: Vec<SessionInfoTransport> = (0..300)
        .map(|_| strategy.new_tree(&mut runner).expect("value").current())
        .collect();
    let ours: Vec<Vec<u8>> = values
        .iter()
        .map(|v| v.encode(NpaLevel::V7).unwrap())
        .collect();
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/vectors/npa/repack.py");
    let mut child = Command::new(python)
        .arg(&script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run repack.py");
    let mut input = String::new();
    for bytes in &ours {
        input.push_str(&hex(bytes));
        input.push('\n');
    }
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
    // Bounded: 300 small blobs take well under a second; the child gets no
    // more input after the writer is done, so it ends.
    let out = child.wait_with_output().expect("repack.py output");
    writer.join().unwrap().unwrap();
    assert!(out.status.success());
    let lines: Vec<&str> = std::str::from_utf8(&out.stdout).unwrap().lines().collect();
    assert_eq!(lines.len(), ours.len());
    for ((line, bytes), value) in lines.iter().zip(&ours).zip(&values) {
        assert_eq!(*line, hex(bytes), "Samba re-encodes differently: {value:?}");
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn request_round_trip(req in arb_request()) {
        let bytes = req.encode().unwrap();
        prop_assert_eq!(
            u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as usize,
            bytes.len() - 4
        );
        let back = NpaRequest::decode(&bytes).unwrap();
        prop_assert_eq!(&back, &req);
        // The encoding is canonical: the decoded value writes the same bytes.
        prop_assert_eq!(back.encode().unwrap(), bytes);
    }

    #[test]
    fn reply_round_trip(
        level in prop_oneof![Just(NpaLevel::V7), Just(NpaLevel::V8)],
        file_type in any::<u16>(),
        device_state in any::<u16>(),
        allocation_size in any::<u64>(),
        status in any::<u32>(),
    ) {
        let reply = NpaReply { level, file_type, device_state, allocation_size, status: NtStatus(status) };
        prop_assert_eq!(NpaReply::decode(&reply.encode()), Ok(reply));
    }

    /// Arbitrary bytes never panic the decoders; a request whose header is
    /// right but whose body is noise is refused or decodes to something
    /// that re-encodes.
    #[test]
    fn noise_never_panics(body in prop::collection::vec(any::<u8>(), 0..600), level in 7u32..9) {
        let mut bytes = ((body.len() + 12) as u32).to_be_bytes().to_vec();
        bytes.extend_from_slice(b"NPAM");
        bytes.extend_from_slice(&level.to_le_bytes());
        bytes.extend_from_slice(&level.to_le_bytes());
        bytes.extend_from_slice(&body);
        if let Ok(req) = NpaRequest::decode(&bytes) {
            let again = req.encode().unwrap();
            prop_assert_eq!(NpaRequest::decode(&again), Ok(req));
        }
        let _ = NpaReply::decode(&bytes);
        let _ = SessionInfoTransport::decode(&body, NpaLevel::V7);
        let _ = SessionInfoTransport::decode(&body, NpaLevel::V8);
    }
}

/// Requests a real smbd 4.17.12 sent (tests/vectors/npa/capture_smbd.py:
/// `rpcclient -U% -c srvinfo` and `smbclient -L -U guest%` through smbd,
/// whose `external_rpc_pipe:socket_dir` pointed at a listener that saved
/// them). The service side decodes them; our encoder writes them again byte
/// for byte (outer structure included, which python3-samba cannot encode).
#[test]
fn requests_from_a_real_smbd() {
    for (name, kind, account, domain) in [
        (
            "smbd_anonymous",
            IdentityKind::Anonymous,
            "ANONYMOUS LOGON",
            "NT AUTHORITY",
        ),
        ("smbd_guest", IdentityKind::Guest, "nobody", "TESTSRV"),
    ] {
        let bytes = vector(name);
        let req = NpaRequest::decode(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(req.level, NpaLevel::V7);
        assert_eq!(req.transport, NCACN_NP);
        assert_eq!(req.encode().unwrap(), bytes, "{name}: re-encoding differs");
        let id = NpaIdentity::from_request(&req).unwrap();
        assert_eq!(id.kind, kind, "{name}: {id:?}");
        assert_eq!((id.account.as_str(), id.domain.as_str()), (account, domain));
        assert_eq!((id.uid, id.gid), (65534, 65534));
        assert!(id.sids.contains(&"S-1-1-0".parse().unwrap()));
        assert_eq!(id.client_addr.ip().to_string(), "127.0.0.1");
        assert_eq!(id.server_addr.ip().to_string(), "127.0.0.1");
        assert!(id.server_addr.port() > 0);
    }
}
