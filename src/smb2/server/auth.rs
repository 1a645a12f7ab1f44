//! NEGOTIATE (with the SMB1 upgrade and VALIDATE_NEGOTIATE_INFO) and the
//! anonymous/guest NTLMSSP login of the core.

use std::collections::HashMap;
use std::net::IpAddr;

use super::{
    error_body, mix, Connection, ConnectionError, Session, SessionState, Step, CAP_LARGE_MTU,
    DIALECTS, NOBODY_UID,
};
use crate::protocol::status::NtStatus;
use crate::protocol::userinfo::{ClientAddr, NetUserInfo, USER_FLAG_ANONYMOUS, USER_FLAG_GUEST};
use crate::smb2::file::{IoctlRequest, IoctlResponse};
use crate::smb2::header::{Command, Header, FLAGS_SERVER_TO_REDIR};
use crate::smb2::message::Response;
use crate::smb2::negotiate::{
    NegotiateContext, NegotiateRequest, NegotiateResponse, Smb1Negotiate, DIALECT_202, DIALECT_210,
    DIALECT_311, HASH_SHA512, SIGNING_ENABLED,
};
use crate::smb2::ntlmssp::{self, Authenticate};
use crate::smb2::session::{
    SessionSetupRequest, SessionSetupResponse, SESSION_FLAG_IS_GUEST, SESSION_FLAG_IS_NULL,
};
use crate::smb2::spnego::{NegState, NegTokenInit, NegTokenResp, SpnegoToken, OID_NTLMSSP};
use crate::smb2::status;

impl Connection {
    pub(super) fn smb1_negotiate(&mut self, msg: &[u8], now: u64) -> Result<(), ConnectionError> {
        if self.dialect.is_some() || self.smb1_seen || self.seq.any_used() {
            return Err(ConnectionError::Protocol("SMB1 after the first message"));
        }
        let n = Smb1Negotiate::decode(msg).map_err(ConnectionError::Malformed)?;
        let Some(rev) = n.smb2_answer() else {
            return Err(ConnectionError::Protocol("SMB1 negotiate without SMB2"));
        };
        self.smb1_seen = true;
        // The SMB1 request counts as message 0; one credit for the next.
        self.seq
            .consume(0, 1)
            .map_err(|e| ConnectionError::Protocol(e.reason()))?;
        self.seq.grant(1, 1, 1);
        let resp = self.negotiate_response(rev, now, &[]);
        let mut h = Header::request(Command::Negotiate);
        h.flags = FLAGS_SERVER_TO_REDIR;
        h.credits = 1;
        if rev == DIALECT_202 {
            self.dialect = Some(DIALECT_202);
        }
        self.emit_parts(vec![self.encode_response(&h, &Response::Negotiate(resp))]);
        Ok(())
    }

    pub(super) fn negotiate(&mut self, n: NegotiateRequest, now: u64) -> Step {
        if self.dialect.is_some() {
            self.close_after = Some("a second NEGOTIATE");
            return Step::Reply(NtStatus::ACCESS_DENIED, error_body());
        }
        let Some(rev) = choose_dialect(&n.dialects) else {
            return Step::Reply(NtStatus::NOT_SUPPORTED, error_body());
        };
        let mut contexts = Vec::new();
        if rev == DIALECT_311 {
            match n.preauth() {
                Some((algs, _)) if algs.contains(&HASH_SHA512) => {}
                _ => return Step::Reply(NtStatus::INVALID_PARAMETER, error_body()),
            }
            let salt: Vec<u8> = (0..4u64)
                .flat_map(|i| mix(self.seed ^ (0x5A17 + i)).to_le_bytes())
                .collect();
            contexts.push(NegotiateContext::PreauthIntegrity {
                hash_algorithms: vec![HASH_SHA512],
                salt,
            });
        }
        self.dialect = Some(rev);
        self.client_guid = n.client_guid;
        self.client_security_mode = n.security_mode;
        self.client_capabilities = n.capabilities;
        Step::Reply(
            NtStatus(0),
            Response::Negotiate(self.negotiate_response(rev, now, &contexts)),
        )
    }

    pub(super) fn negotiate_response(
        &self,
        rev: u16,
        now: u64,
        contexts: &[NegotiateContext],
    ) -> NegotiateResponse {
        let hint = SpnegoToken::Init(NegTokenInit {
            mech_types: vec![OID_NTLMSSP.to_vec()],
            neg_hints: Some("not_defined_in_RFC4178@please_ignore".into()),
            ..NegTokenInit::default()
        });
        NegotiateResponse {
            security_mode: SIGNING_ENABLED,
            dialect_revision: rev,
            server_guid: self.cfg.server_guid,
            capabilities: if rev >= DIALECT_210 && rev != 0x02FF {
                CAP_LARGE_MTU
            } else {
                0
            },
            max_transact_size: self.cfg.max_io_bytes,
            max_read_size: self.cfg.max_io_bytes,
            max_write_size: self.cfg.max_io_bytes,
            system_time: now,
            server_start_time: 0,
            security_buffer: hint.encode().unwrap_or_default(),
            contexts: contexts.to_vec(),
        }
    }

    pub(super) fn capabilities(&self) -> u32 {
        match self.dialect {
            Some(d) if d >= DIALECT_210 => CAP_LARGE_MTU,
            _ => 0,
        }
    }

    /// FSCTL_VALIDATE_NEGOTIATE_INFO (MS-SMB2 3.3.5.15.12): the client's
    /// view of the negotiate must match ours, else the connection is dropped.
    pub(super) fn validate_negotiate(&mut self, io: IoctlRequest) -> Step {
        let bad = || Step::Reply(NtStatus::ACCESS_DENIED, error_body());
        let i = &io.input;
        if i.len() < 24 || io.max_output_response < 24 || self.dialect == Some(DIALECT_311) {
            return bad();
        }
        let caps = u32::from_le_bytes([i[0], i[1], i[2], i[3]]);
        let guid = &i[4..20];
        let mode = u16::from_le_bytes([i[20], i[21]]);
        let count = usize::from(u16::from_le_bytes([i[22], i[23]]));
        let dialects: Vec<u16> = i[24..]
            .chunks_exact(2)
            .take(count)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .collect();
        if caps != self.client_capabilities
            || guid != self.client_guid
            || mode != self.client_security_mode
            || dialects.len() != count
            || self.dialect != choose_dialect(&dialects)
        {
            self.close_after = Some("VALIDATE_NEGOTIATE_INFO does not match");
            return bad();
        }
        let mut out = Vec::with_capacity(24);
        out.extend_from_slice(&self.capabilities().to_le_bytes());
        out.extend_from_slice(&self.cfg.server_guid);
        out.extend_from_slice(&SIGNING_ENABLED.to_le_bytes());
        out.extend_from_slice(&self.dialect.unwrap_or(0).to_le_bytes());
        Step::Reply(
            NtStatus(0),
            Response::Ioctl(IoctlResponse {
                ctl_code: io.ctl_code,
                file_id: io.file_id,
                flags: 0,
                input: Vec::new(),
                output: out,
            }),
        )
    }

    pub(super) fn session_setup(&mut self, h: &Header, s: SessionSetupRequest, now: u64) -> Step {
        let fail = |st| Step::Reply(st, error_body());
        // The NTLMSSP message, and whether SPNEGO wraps it.
        let (inner, spnego) = if ntlmssp::message_type(&s.security_buffer).is_some() {
            (s.security_buffer.clone(), false)
        } else {
            match SpnegoToken::decode(&s.security_buffer) {
                Ok(t) => match t.mech_token() {
                    Some(m) => (m.to_vec(), true),
                    None => return fail(status::LOGON_FAILURE),
                },
                Err(_) => return fail(status::LOGON_FAILURE),
            }
        };
        match ntlmssp::message_type(&inner) {
            Some(1) if h.session_id == 0 => {
                let Ok(neg) = ntlmssp::Negotiate::decode(&inner) else {
                    return fail(NtStatus::INVALID_PARAMETER);
                };
                if self.sessions.len() >= self.cfg.max_sessions {
                    return fail(status::REQUEST_NOT_ACCEPTED);
                }
                let id = self.next_session;
                self.next_session += 1;
                let challenge = self.challenge(&neg, id, now);
                self.sessions.insert(
                    id,
                    Session {
                        state: SessionState::Challenged { spnego },
                        trees: Vec::new(),
                        opens: HashMap::new(),
                    },
                );
                let token = if spnego {
                    SpnegoToken::Resp(NegTokenResp {
                        neg_state: Some(NegState::AcceptIncomplete),
                        supported_mech: Some(OID_NTLMSSP.to_vec()),
                        response_token: Some(challenge),
                        mech_list_mic: None,
                    })
                    .encode()
                    .unwrap_or_default()
                } else {
                    challenge
                };
                // The new id rides in the response header.
                self.new_session = Some(id);
                Step::Reply(
                    status::MORE_PROCESSING_REQUIRED,
                    Response::SessionSetup(SessionSetupResponse {
                        session_flags: 0,
                        security_buffer: token,
                    }),
                )
            }
            Some(3) => {
                let Some(sess) = self.sessions.get_mut(&h.session_id) else {
                    return fail(status::USER_SESSION_DELETED);
                };
                let SessionState::Challenged { spnego } = sess.state else {
                    return fail(NtStatus::INVALID_PARAMETER);
                };
                let Ok(auth) = Authenticate::decode(&inner) else {
                    self.sessions.remove(&h.session_id);
                    return fail(status::LOGON_FAILURE);
                };
                let anonymous = auth.is_anonymous();
                let account = auth.user_name().unwrap_or_default();
                let user = NetUserInfo {
                    session_id: h.session_id,
                    domain: auth.domain_name().unwrap_or_default(),
                    account: if anonymous { String::new() } else { account },
                    posix_uid: NOBODY_UID,
                    workstation: auth
                        .workstation_name()
                        .ok()
                        .filter(|w| !w.is_empty())
                        .unwrap_or_else(|| self.client.ip().to_string()),
                    client_addr: client_addr(self.client.ip()),
                    native_os: 0,
                    logon_time: filetime_to_unix(now),
                    numopens: 0,
                    flags: if anonymous {
                        USER_FLAG_ANONYMOUS
                    } else {
                        USER_FLAG_GUEST
                    },
                };
                sess.state = SessionState::Valid { user };
                self.sessions_started += 1;
                let token = if spnego {
                    SpnegoToken::Resp(NegTokenResp {
                        neg_state: Some(NegState::AcceptCompleted),
                        ..NegTokenResp::default()
                    })
                    .encode()
                    .unwrap_or_default()
                } else {
                    Vec::new()
                };
                self.new_session = Some(h.session_id);
                Step::Reply(
                    NtStatus(0),
                    Response::SessionSetup(SessionSetupResponse {
                        session_flags: if anonymous {
                            SESSION_FLAG_IS_NULL
                        } else {
                            SESSION_FLAG_IS_GUEST
                        },
                        security_buffer: token,
                    }),
                )
            }
            _ => fail(status::LOGON_FAILURE),
        }
    }

    pub(super) fn challenge(&self, neg: &ntlmssp::Negotiate, id: u64, now: u64) -> Vec<u8> {
        use ntlmssp::*;
        let keep = NEGOTIATE_UNICODE
            | NEGOTIATE_SIGN
            | NEGOTIATE_NTLM
            | NEGOTIATE_ALWAYS_SIGN
            | NEGOTIATE_EXTENDED_SESSIONSECURITY
            | NEGOTIATE_VERSION
            | NEGOTIATE_128
            | NEGOTIATE_KEY_EXCH
            | NEGOTIATE_56;
        let flags =
            (neg.flags & keep) | REQUEST_TARGET | TARGET_TYPE_SERVER | NEGOTIATE_TARGET_INFO;
        let name = self.cfg.server_name.to_ascii_uppercase();
        let info = target_info(
            &[
                (av::NB_DOMAIN_NAME, &name),
                (av::NB_COMPUTER_NAME, &name),
                (av::DNS_DOMAIN_NAME, ""),
                (av::DNS_COMPUTER_NAME, &name.to_ascii_lowercase()),
            ],
            Some(now),
        )
        .unwrap_or_default();
        Challenge {
            flags,
            target_name: crate::smb2::wire::string_to_utf16(&name),
            server_challenge: mix(self.seed ^ id).to_le_bytes(),
            target_info: info,
            version: Some([6, 1, 0, 0, 0, 0, 0, 15]),
        }
        .encode()
        .unwrap_or_default()
    }
}

/// The highest dialect both sides speak.
pub(super) fn choose_dialect(offered: &[u16]) -> Option<u16> {
    DIALECTS.iter().rev().copied().find(|d| offered.contains(d))
}

/// FILETIME to seconds since the Unix epoch.
pub(super) fn filetime_to_unix(ft: u64) -> i64 {
    (ft / 10_000_000) as i64 - 11_644_473_600
}

pub(super) fn client_addr(ip: IpAddr) -> ClientAddr {
    match ip {
        IpAddr::V4(a) => ClientAddr::V4(a),
        IpAddr::V6(a) => match a.to_ipv4_mapped() {
            Some(v4) => ClientAddr::V4(v4),
            None => ClientAddr::V6(a),
        },
    }
}
