//! Property tests of the SMB2 codec: every request, response, SPNEGO and
//! NTLMSSP value decodes back to itself from our encoding, and arbitrary
//! or mutated bytes never make a decoder panic.
#![cfg(feature = "smb2")]

use opipe::protocol::NtStatus;
use opipe::smb2::file::{
    CloseRequest, CloseResponse, CreateRequest, CreateResponse, FileId, IoctlRequest,
    IoctlResponse, QueryInfoRequest, QueryInfoResponse, ReadRequest, ReadResponse, SetInfoRequest,
    WriteRequest, WriteResponse,
};
use opipe::smb2::header::{FLAGS_ASYNC_COMMAND, FLAGS_SERVER_TO_REDIR};
use opipe::smb2::negotiate::{NegotiateRequest, NegotiateResponse, DIALECT_311};
use opipe::smb2::ntlmssp::{self, Authenticate, Challenge, Negotiate};
use opipe::smb2::session::{
    SessionSetupRequest, SessionSetupResponse, TreeConnectRequest, TreeConnectResponse,
};
use opipe::smb2::spnego::{NegState, NegTokenInit, NegTokenResp, SpnegoToken};
use opipe::smb2::{
    split_compound, ErrorResponse, Header, HeaderIds, NegotiateContext, Request, Response,
    Smb1Negotiate, Unframer,
};
use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;

fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    vec(any::<u8>(), 0..=max)
}

fn text() -> impl Strategy<Value = String> {
    "[ -~éü€]{0,40}"
}

fn file_id() -> impl Strategy<Value = FileId> {
    (any::<u64>(), any::<u64>()).prop_map(|(persistent, volatile)| FileId {
        persistent,
        volatile,
    })
}

fn header(response: bool) -> impl Strategy<Value = Header> {
    (
        any::<u16>(),
        any::<u32>(),
        any::<u16>(),
        any::<u32>(),
        any::<u64>(),
        prop_oneof![
            (any::<u32>(), any::<u32>()).prop_map(|(process_id, tree_id)| HeaderIds::Sync {
                process_id,
                tree_id
            }),
            any::<u64>().prop_map(|async_id| HeaderIds::Async { async_id }),
        ],
        any::<u64>(),
        any::<[u8; 16]>(),
    )
        .prop_map(
            move |(
                credit_charge,
                status,
                credits,
                flags,
                message_id,
                ids,
                session_id,
                signature,
            )| {
                let mut flags = flags & !FLAGS_ASYNC_COMMAND & !FLAGS_SERVER_TO_REDIR;
                if response {
                    flags |= FLAGS_SERVER_TO_REDIR;
                }
                Header {
                    credit_charge,
                    status: NtStatus(status),
                    command: 0,
                    credits,
                    flags,
                    next_command: 0,
                    message_id,
                    ids,
                    session_id,
                    signature,
                }
            },
        )
}

fn context() -> impl Strategy<Value = NegotiateContext> {
    prop_oneof![
        (vec(any::<u16>(), 0..4), bytes(40)).prop_map(|(hash_algorithms, salt)| {
            NegotiateContext::PreauthIntegrity {
                hash_algorithms,
                salt,
            }
        }),
        vec(any::<u16>(), 0..6).prop_map(|ciphers| NegotiateContext::Encryption { ciphers }),
        vec(any::<u16>(), 0..6).prop_map(|algorithms| NegotiateContext::Signing { algorithms }),
        text().prop_map(NegotiateContext::NetName),
        (
            prop_oneof![Just(3u16), Just(6), Just(7), 0x100..0xFFFFu16],
            bytes(60)
        )
            .prop_map(|(context_type, data)| NegotiateContext::Other { context_type, data }),
    ]
}

fn request() -> impl Strategy<Value = Request> {
    prop_oneof![
        (
            any::<u16>(),
            any::<u32>(),
            any::<[u8; 16]>(),
            vec(any::<u16>(), 1..8),
            any::<bool>(),
            vec(context(), 0..5),
            any::<u64>()
        )
            .prop_map(
                |(security_mode, capabilities, client_guid, mut dialects, with311, contexts, t)| {
                    dialects.retain(|d| *d != DIALECT_311);
                    if with311 || dialects.is_empty() {
                        dialects.push(DIALECT_311);
                    }
                    let offers = dialects.contains(&DIALECT_311);
                    Request::Negotiate(NegotiateRequest {
                        security_mode,
                        capabilities,
                        client_guid,
                        dialects,
                        contexts: if offers { contexts } else { vec![] },
                        client_start_time: if offers { 0 } else { t },
                    })
                }
            ),
        (
            any::<u8>(),
            any::<u8>(),
            any::<u32>(),
            any::<u32>(),
            any::<u64>(),
            bytes(200)
        )
            .prop_map(
                |(
                    flags,
                    security_mode,
                    capabilities,
                    channel,
                    previous_session_id,
                    security_buffer,
                )| {
                    Request::SessionSetup(SessionSetupRequest {
                        flags,
                        security_mode,
                        capabilities,
                        channel,
                        previous_session_id,
                        security_buffer,
                    })
                }
            ),
        Just(Request::Logoff),
        (any::<u16>(), text())
            .prop_map(|(flags, path)| Request::TreeConnect(TreeConnectRequest { flags, path })),
        Just(Request::TreeDisconnect),
        (
            (
                any::<u8>(),
                any::<u8>(),
                any::<u32>(),
                any::<u64>(),
                any::<u32>()
            ),
            (any::<u32>(), any::<u32>(), any::<u32>(), any::<u32>()),
            text(),
            bytes(64)
        )
            .prop_map(
                |((sf, ol, il, cf, da), (fa, sa, cd, co), name, create_contexts)| {
                    Request::Create(CreateRequest {
                        security_flags: sf,
                        requested_oplock_level: ol,
                        impersonation_level: il,
                        smb_create_flags: cf,
                        desired_access: da,
                        file_attributes: fa,
                        share_access: sa,
                        create_disposition: cd,
                        create_options: co,
                        name,
                        create_contexts,
                    })
                }
            ),
        (any::<u16>(), file_id())
            .prop_map(|(flags, file_id)| Request::Close(CloseRequest { flags, file_id })),
        (
            (any::<u8>(), any::<u8>(), any::<u32>(), any::<u64>()),
            file_id(),
            (any::<u32>(), any::<u32>(), any::<u32>())
        )
            .prop_map(
                |((padding, flags, length, offset), file_id, (mc, ch, rb))| {
                    Request::Read(ReadRequest {
                        padding,
                        flags,
                        length,
                        offset,
                        file_id,
                        minimum_count: mc,
                        channel: ch,
                        remaining_bytes: rb,
                    })
                }
            ),
        (
            any::<u64>(),
            file_id(),
            any::<u32>(),
            any::<u32>(),
            any::<u32>(),
            bytes(300)
        )
            .prop_map(|(offset, file_id, channel, remaining_bytes, flags, data)| {
                Request::Write(WriteRequest {
                    offset,
                    file_id,
                    channel,
                    remaining_bytes,
                    flags,
                    data,
                })
            }),
        (
            any::<u32>(),
            file_id(),
            any::<u32>(),
            any::<u32>(),
            any::<u32>(),
            bytes(300),
            bytes(40)
        )
            .prop_map(|(ctl_code, file_id, mi, mo, flags, input, output)| {
                Request::Ioctl(IoctlRequest {
                    ctl_code,
                    file_id,
                    max_input_response: mi,
                    max_output_response: mo,
                    flags,
                    input,
                    output,
                })
            }),
        Just(Request::Cancel),
        Just(Request::Echo),
        (
            (any::<u8>(), any::<u8>(), any::<u32>()),
            (any::<u32>(), any::<u32>()),
            file_id(),
            bytes(40)
        )
            .prop_map(|((it, ic, obl), (ai, flags), file_id, input)| {
                Request::QueryInfo(QueryInfoRequest {
                    info_type: it,
                    file_info_class: ic,
                    output_buffer_length: obl,
                    additional_information: ai,
                    flags,
                    file_id,
                    input,
                })
            }),
        (any::<u8>(), any::<u8>(), any::<u32>(), file_id(), bytes(40)).prop_map(
            |(info_type, file_info_class, additional_information, file_id, buffer)| {
                Request::SetInfo(SetInfoRequest {
                    info_type,
                    file_info_class,
                    additional_information,
                    file_id,
                    buffer,
                })
            }
        ),
    ]
}

/// A response body and a status that goes with it.
fn response() -> impl Strategy<Value = (Response, NtStatus)> {
    let ok = NtStatus(0);
    prop_oneof![
        (
            (any::<u16>(), any::<u16>(), any::<[u8; 16]>(), any::<u32>()),
            (
                any::<u32>(),
                any::<u32>(),
                any::<u32>(),
                any::<u64>(),
                any::<u64>()
            ),
            bytes(100),
            vec(context(), 0..4)
        )
            .prop_map(
                move |((sm, dr, guid, caps), (mt, mr, mw, st, sst), sb, ctx)| {
                    let contexts = if dr == DIALECT_311 { ctx } else { vec![] };
                    (
                        Response::Negotiate(NegotiateResponse {
                            security_mode: sm,
                            dialect_revision: dr,
                            server_guid: guid,
                            capabilities: caps,
                            max_transact_size: mt,
                            max_read_size: mr,
                            max_write_size: mw,
                            system_time: st,
                            server_start_time: sst,
                            security_buffer: sb,
                            contexts,
                        }),
                        ok,
                    )
                }
            ),
        (any::<u16>(), bytes(200), any::<bool>()).prop_map(
            |(session_flags, security_buffer, more)| (
                Response::SessionSetup(SessionSetupResponse {
                    session_flags,
                    security_buffer
                }),
                if more {
                    opipe::smb2::status::MORE_PROCESSING_REQUIRED
                } else {
                    NtStatus(0)
                }
            )
        ),
        Just((Response::Logoff, ok)),
        (any::<u8>(), any::<u32>(), any::<u32>(), any::<u32>()).prop_map(move |(t, f, c, a)| (
            Response::TreeConnect(TreeConnectResponse {
                share_type: t,
                share_flags: f,
                capabilities: c,
                maximal_access: a
            }),
            ok
        )),
        Just((Response::TreeDisconnect, ok)),
        (
            (any::<u8>(), any::<u8>(), any::<u32>()),
            vec(any::<u64>(), 6),
            any::<u32>(),
            file_id(),
            bytes(40)
        )
            .prop_map(move |((ol, fl, ca), t, fa, file_id, cc)| (
                Response::Create(CreateResponse {
                    oplock_level: ol,
                    flags: fl,
                    create_action: ca,
                    creation_time: t[0],
                    last_access_time: t[1],
                    last_write_time: t[2],
                    change_time: t[3],
                    allocation_size: t[4],
                    end_of_file: t[5],
                    file_attributes: fa,
                    file_id,
                    create_contexts: cc,
                }),
                ok
            )),
        (any::<u16>(), vec(any::<u64>(), 6), any::<u32>()).prop_map(move |(flags, t, fa)| (
            Response::Close(CloseResponse {
                flags,
                creation_time: t[0],
                last_access_time: t[1],
                last_write_time: t[2],
                change_time: t[3],
                allocation_size: t[4],
                end_of_file: t[5],
                file_attributes: fa,
            }),
            ok
        )),
        (any::<u32>(), bytes(300), any::<bool>()).prop_map(|(data_remaining, data, of)| (
            Response::Read(ReadResponse {
                data_remaining,
                data
            }),
            if of {
                NtStatus::BUFFER_OVERFLOW
            } else {
                NtStatus(0)
            }
        )),
        any::<u32>().prop_map(move |count| (Response::Write(WriteResponse { count }), ok)),
        (
            any::<u32>(),
            file_id(),
            any::<u32>(),
            bytes(30),
            bytes(300),
            any::<bool>()
        )
            .prop_map(|(ctl_code, file_id, flags, input, output, of)| (
                Response::Ioctl(IoctlResponse {
                    ctl_code,
                    file_id,
                    flags,
                    input,
                    output
                }),
                if of {
                    NtStatus::BUFFER_OVERFLOW
                } else {
                    NtStatus(0)
                }
            )),
        Just((Response::Echo, ok)),
        Just((Response::SetInfo, ok)),
        bytes(100).prop_map(move |output| (Response::QueryInfo(QueryInfoResponse { output }), ok)),
        (any::<u8>(), bytes(50), 0xC000_0001u32..0xC000_0200).prop_map(|(n, data, st)| (
            Response::Error(ErrorResponse {
                error_context_count: n,
                error_data: data
            }),
            NtStatus(st)
        )),
        (any::<u8>(), bytes(8)).prop_map(|(n, data)| (
            Response::Error(ErrorResponse {
                error_context_count: n,
                error_data: data
            }),
            NtStatus::PENDING
        )),
    ]
}

fn spnego() -> impl Strategy<Value = SpnegoToken> {
    let state = prop_oneof![
        Just(NegState::AcceptCompleted),
        Just(NegState::AcceptIncomplete),
        Just(NegState::Reject),
        Just(NegState::RequestMic)
    ];
    prop_oneof![
        (
            vec(vec(any::<u8>(), 1..12), 0..4),
            option::of(bytes(300)),
            option::of("[ -~]{0,40}"),
            option::of(bytes(20))
        )
            .prop_map(|(mech_types, mech_token, neg_hints, mech_list_mic)| {
                SpnegoToken::Init(NegTokenInit {
                    mech_types,
                    mech_token,
                    neg_hints,
                    mech_list_mic,
                })
            }),
        (
            option::of(state),
            option::of(vec(any::<u8>(), 1..12)),
            option::of(bytes(70_000)),
            option::of(bytes(20))
        )
            .prop_map(
                |(neg_state, supported_mech, response_token, mech_list_mic)| {
                    SpnegoToken::Resp(NegTokenResp {
                        neg_state,
                        supported_mech,
                        response_token,
                        mech_list_mic,
                    })
                }
            ),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn requests_round_trip(h in header(false), req in request()) {
        let bytes = req.encode(&h).unwrap();
        let (h2, req2) = Request::decode(&bytes).unwrap();
        prop_assert_eq!(&req2, &req);
        prop_assert_eq!(h2.command, req.command());
        prop_assert_eq!(Header { command: 0, ..h2 }, h);
        // A compound of two: both parts come back.
        let mut first = req.encode(&Header { next_command: 0, ..Header::request(opipe::smb2::Command::Echo) }).unwrap();
        let pad = first.len().div_ceil(8) * 8;
        first.resize(pad, 0);
        first[20..24].copy_from_slice(&(pad as u32).to_le_bytes());
        first.extend_from_slice(&bytes);
        let parts = split_compound(&first).unwrap();
        prop_assert_eq!(parts.len(), 2);
        prop_assert_eq!(Request::decode(parts[1]).unwrap().1, req);
    }

    #[test]
    fn responses_round_trip(h in header(true), (resp, st) in response()) {
        let h = Header { status: st, command: resp.command().unwrap_or(5), ..h };
        let bytes = resp.encode(&h).unwrap();
        let (h2, resp2) = Response::decode(&bytes).unwrap();
        prop_assert_eq!(resp2, resp);
        prop_assert_eq!(h2, h);
    }

    #[test]
    fn spnego_round_trips(t in spnego()) {
        let b = t.encode().unwrap();
        prop_assert_eq!(SpnegoToken::decode(&b).unwrap(), t);
    }

    #[test]
    fn ntlmssp_round_trips(
        flags in any::<u32>(),
        f in vec(bytes(40), 6),
        version in option::of(any::<[u8; 8]>()),
        mic in option::of(any::<[u8; 16]>()),
        challenge in any::<[u8; 8]>(),
    ) {
        let fl = |v: &Option<[u8; 8]>| match v {
            Some(_) => flags | ntlmssp::NEGOTIATE_VERSION,
            None => flags & !ntlmssp::NEGOTIATE_VERSION,
        };
        let n = Negotiate { flags: fl(&version), domain: f[0].clone(), workstation: f[1].clone(), version };
        prop_assert_eq!(Negotiate::decode(&n.encode().unwrap()).unwrap(), n);
        let c = Challenge {
            flags: fl(&version),
            target_name: f[2].clone(),
            server_challenge: challenge,
            target_info: f[3].clone(),
            version,
        };
        prop_assert_eq!(Challenge::decode(&c.encode().unwrap()).unwrap(), c);
        let a = Authenticate {
            flags: fl(&version),
            lm_response: f[0].clone(),
            nt_response: f[1].clone(),
            domain: f[2].clone(),
            user: f[3].clone(),
            workstation: f[4].clone(),
            session_key: f[5].clone(),
            version,
            mic: if version.is_some() { mic } else { None },
        };
        prop_assert_eq!(Authenticate::decode(&a.encode().unwrap()).unwrap(), a);
    }

    #[test]
    fn arbitrary_bytes_never_panic(data in bytes(600)) {
        let _ = split_compound(&data);
        let _ = Request::decode(&data);
        let _ = Response::decode(&data);
        let _ = SpnegoToken::decode(&data);
        let _ = Negotiate::decode(&data);
        let _ = Challenge::decode(&data);
        let _ = Authenticate::decode(&data);
        let _ = Smb1Negotiate::decode(&data);
        let mut u = Unframer::new(1 << 16);
        u.push(&data);
        while let Ok(Some(_)) = u.next_message() {}
    }

    /// Valid messages with one byte changed and cut short: still no panic,
    /// and whatever decodes re-encodes to something that decodes the same.
    #[test]
    fn mutated_messages_never_panic(h in header(false), req in request(), at in any::<usize>(), b in any::<u8>(), cut in any::<usize>()) {
        let mut bytes = req.encode(&h).unwrap();
        let i = at % bytes.len();
        bytes[i] = b;
        bytes.truncate(bytes.len() - cut % 16.min(bytes.len()));
        if let Ok((h2, r2)) = Request::decode(&bytes) {
            if !matches!(r2, Request::Other(_)) {
                let again = r2.encode(&h2).unwrap();
                prop_assert_eq!(Request::decode(&again).unwrap(), (h2, r2));
            }
        }
    }
}
