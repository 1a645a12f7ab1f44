//! A small SRVSVC server: answers `NetrServerGetInfo` (opnum 21, level
//! 101) and `NetrShareEnumAll` (opnum 15, level 1) with configured
//! values, so that a real SMB client behind a real smbd (`rpcclient -c
//! srvinfo`, `smbclient -L`) gets a real answer from an opipe service.
//! Other opnums get a fault (`nca_s_op_rng_error`). With
//! [`SrvsvcFactory::log_calls`], every bind and request is logged (tracing
//! `info`).

use std::sync::Arc;

use crate::protocol::dcerpc::{
    decode_request, encode_fault, encode_response, CommonHeader, PduReassembler, DEFAULT_MAX_FRAG,
    NCA_S_OP_RNG_ERROR, PFC_FIRST_FRAG, PFC_LAST_FRAG, PTYPE_ALTER_CONTEXT, PTYPE_BIND,
    PTYPE_REQUEST,
};
use crate::protocol::srvsvc::{
    encode_netr_server_get_info_101_response, encode_netr_share_enum_all_1_response, ServerInfo101,
    ShareInfo1, OPNUM_NETR_SERVER_GET_INFO, OPNUM_NETR_SHARE_ENUM_ALL, WERR_INVALID_LEVEL,
};
use crate::protocol::{NetUserInfo, PipeName};

use super::dcerpc::{answer_bind, PTYPES_IGNORED};
use super::handler::{Handler, HandlerError, HandlerFactory, MessageBoundaries};

/// The largest request stub (all fragments of one call) accepted.
pub const MAX_SRVSVC_REQUEST_STUB: usize = 64 * 1024;

/// What the [`Srvsvc`] handlers answer.
#[derive(Debug, Clone)]
pub struct SrvsvcFactory {
    answers: Arc<Answers>,
    log_calls: bool,
}

#[derive(Debug)]
struct Answers {
    info: ServerInfo101,
    shares: Vec<ShareInfo1>,
}

impl SrvsvcFactory {
    /// A server named `server_name`: platform 500 (NT), version 6.1,
    /// type `0x0000_9a03` (workstation, server, NT server, ...: what Samba
    /// reports), comment "opipe", one share `IPC$`.
    pub fn new(server_name: &str) -> SrvsvcFactory {
        SrvsvcFactory::with(
            ServerInfo101 {
                platform_id: 500,
                server_name: Some(server_name.to_owned()),
                version_major: 6,
                version_minor: 1,
                server_type: 0x0000_9a03,
                comment: Some("opipe".to_owned()),
            },
            vec![ShareInfo1 {
                name: Some("IPC$".to_owned()),
                share_type: 0x8000_0003,
                comment: Some("IPC Service (opipe)".to_owned()),
            }],
        )
    }

    /// A server answering `info` and `shares`.
    pub fn with(info: ServerInfo101, shares: Vec<ShareInfo1>) -> SrvsvcFactory {
        SrvsvcFactory {
            answers: Arc::new(Answers { info, shares }),
            log_calls: false,
        }
    }

    /// Logs every bind (interface) and request (opnum) at `info` (off by
    /// default: a line per call costs more than the call).
    pub fn log_calls(mut self, yes: bool) -> SrvsvcFactory {
        self.log_calls = yes;
        self
    }
}

impl HandlerFactory for SrvsvcFactory {
    fn open(&self, pipe: &PipeName, _user: &NetUserInfo) -> Box<dyn Handler> {
        Box::new(Srvsvc {
            reassembler: PduReassembler::new(DEFAULT_MAX_FRAG),
            sec_addr: format!("\\PIPE\\{}", pipe.as_str()),
            answers: self.answers.clone(),
            stub: Vec::new(),
            log_calls: self.log_calls,
        })
    }
}

/// The SRVSVC handler of one open pipe.
#[derive(Debug)]
pub struct Srvsvc {
    reassembler: PduReassembler,
    sec_addr: String,
    answers: Arc<Answers>,
    /// The stub of the request being received (multi-fragment calls).
    stub: Vec<u8>,
    log_calls: bool,
}

impl Srvsvc {
    fn answer(&mut self, pdu: &[u8], out: &mut Vec<u8>) -> Result<(), HandlerError> {
        let header = CommonHeader::decode(pdu)?;
        match header.ptype {
            PTYPE_BIND | PTYPE_ALTER_CONTEXT => {
                let log_as = self.log_calls.then_some("srvsvc");
                answer_bind(pdu, header.call_id, &self.sec_addr, log_as, out)?;
            }
            PTYPE_REQUEST => {
                let req = decode_request(pdu)?;
                if req.header.pfc_flags & PFC_FIRST_FRAG != 0 {
                    self.stub.clear();
                }
                if self.stub.len() + req.stub.len() > MAX_SRVSVC_REQUEST_STUB {
                    return Err(HandlerError::new("srvsvc request over 64 KiB"));
                }
                self.stub.extend_from_slice(req.stub);
                if req.header.pfc_flags & PFC_LAST_FRAG == 0 {
                    return Ok(());
                }
                let call_id = req.header.call_id;
                let reply = match req.opnum {
                    OPNUM_NETR_SERVER_GET_INFO => {
                        // The level is the request's last field.
                        let level = self
                            .stub
                            .last_chunk::<4>()
                            .map(|b| u32::from_le_bytes(*b))
                            .unwrap_or(0);
                        if self.log_calls {
                            tracing::info!(
                                "opipe srvsvc: {} request call {call_id} opnum 21 NetrServerGetInfo level {level}",
                                self.sec_addr
                            );
                        }
                        Some(if level == 101 {
                            encode_netr_server_get_info_101_response(Some(&self.answers.info), 0)?
                        } else {
                            encode_netr_server_get_info_101_response(None, WERR_INVALID_LEVEL)?
                        })
                    }
                    OPNUM_NETR_SHARE_ENUM_ALL => {
                        if self.log_calls {
                            tracing::info!(
                                "opipe srvsvc: {} request call {call_id} opnum 15 NetrShareEnumAll",
                                self.sec_addr
                            );
                        }
                        Some(encode_netr_share_enum_all_1_response(
                            &self.answers.shares,
                            0,
                        )?)
                    }
                    opnum => {
                        if self.log_calls {
                            tracing::info!(
                                "opipe srvsvc: {} request call {call_id} opnum {opnum}: not served, fault",
                                self.sec_addr
                            );
                        } else {
                            tracing::debug!(
                                "opipe srvsvc: {} request call {call_id} opnum {opnum}: not served, fault",
                                self.sec_addr
                            );
                        }
                        None
                    }
                };
                self.stub.clear();
                match reply {
                    Some(stub) => out.extend_from_slice(&encode_response(
                        call_id,
                        req.context_id,
                        &stub,
                        DEFAULT_MAX_FRAG,
                    )),
                    None => out.extend_from_slice(&encode_fault(
                        call_id,
                        req.context_id,
                        NCA_S_OP_RNG_ERROR,
                    )),
                }
            }
            p if PTYPES_IGNORED.contains(&p) => {}
            p => return Err(HandlerError::new(format!("unexpected DCE/RPC ptype {p}"))),
        }
        Ok(())
    }
}

impl Handler for Srvsvc {
    fn on_data(&mut self, data: &[u8], out: &mut Vec<u8>) -> Result<(), HandlerError> {
        self.reassembler.push(data);
        while let Some(pdu) = self.reassembler.next_pdu() {
            self.answer(&pdu?, out)?;
        }
        Ok(())
    }

    fn message_boundaries(&self) -> MessageBoundaries {
        MessageBoundaries::DceRpcPdus
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::dcerpc::{
        decode_bind_ack, decode_fault, decode_response, encode_bind, encode_request, NDR_SYNTAX,
        SRVSVC_SYNTAX,
    };
    use crate::protocol::srvsvc::{
        decode_netr_server_get_info_101, decode_netr_share_enum_all_1, encode_netr_server_get_info,
        encode_netr_share_enum_all_1,
    };

    fn handler() -> Box<dyn Handler> {
        SrvsvcFactory::new("OPIPESRV").open(
            &PipeName::parse("srvsvc").unwrap(),
            &crate::service::testutil::user(0),
        )
    }

    #[test]
    fn get_info_and_share_enum_are_answered() {
        let mut h = handler();
        let mut out = Vec::new();
        h.on_data(
            &encode_bind(1, SRVSVC_SYNTAX.into(), NDR_SYNTAX.into()),
            &mut out,
        )
        .unwrap();
        assert_eq!(decode_bind_ack(&out).unwrap().sec_addr, "\\PIPE\\srvsvc");
        let req = encode_netr_server_get_info(Some("\\\\127.0.0.1"), 101).unwrap();
        out.clear();
        h.on_data(&encode_request(2, 0, 21, &req, 4280), &mut out)
            .unwrap();
        let r = decode_response(&out).unwrap();
        let (info, werr) = decode_netr_server_get_info_101(r.stub).unwrap();
        assert_eq!(info.unwrap().server_name.as_deref(), Some("OPIPESRV"));
        assert_eq!(werr, 0);

        let req = encode_netr_server_get_info(None, 102).unwrap();
        out.clear();
        h.on_data(&encode_request(3, 0, 21, &req, 4280), &mut out)
            .unwrap();
        let r = decode_response(&out).unwrap();
        assert_eq!(
            decode_netr_server_get_info_101(r.stub).unwrap(),
            (None, WERR_INVALID_LEVEL)
        );

        let req = encode_netr_share_enum_all_1(None).unwrap();
        out.clear();
        h.on_data(&encode_request(4, 0, 15, &req, 4280), &mut out)
            .unwrap();
        let e = decode_netr_share_enum_all_1(decode_response(&out).unwrap().stub).unwrap();
        assert_eq!(e.shares[0].name.as_deref(), Some("IPC$"));

        out.clear();
        h.on_data(&encode_request(5, 0, 99, b"", 4280), &mut out)
            .unwrap();
        assert_eq!(decode_fault(&out).unwrap().status, NCA_S_OP_RNG_ERROR);
        assert_eq!(h.message_boundaries(), MessageBoundaries::DceRpcPdus);
    }

    #[test]
    fn bad_framing_and_huge_requests_end_the_connection() {
        let mut h = handler();
        let mut out = Vec::new();
        assert!(h
            .on_data(
                &[5, 0, 99, 3, 0x10, 0, 0, 0, 16, 0, 0, 0, 1, 0, 0, 0],
                &mut out
            )
            .is_err());
        let mut h = handler();
        let big = vec![0u8; MAX_SRVSVC_REQUEST_STUB + 8];
        assert!(h
            .on_data(&encode_request(1, 0, 21, &big, 4280), &mut out)
            .is_err());
    }
}
