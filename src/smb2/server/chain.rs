//! Compound chains: a message split into its parts, each part answered in
//! turn (or left pending on the backend, the rest of the chain with it),
//! the credit window checked and granted, and the responses joined into
//! one framed compound.

use std::task::Poll;

use super::{
    error_body, Chain, Completion, Connection, ConnectionError, OpId, Pending, PipeBackend, Step,
    MAX_SEQ_SPAN_FACTOR,
};
use crate::protocol::status::NtStatus;
use crate::smb2::file::FileId;
use crate::smb2::frame::{frame, frame_header};
use crate::smb2::header::{
    split_compound, Command, Header, HeaderIds, FLAGS_RELATED_OPERATIONS, FLAGS_SERVER_TO_REDIR,
};
use crate::smb2::message::{ErrorResponse, Request, Response};
use crate::smb2::negotiate::Smb1Negotiate;
use crate::smb2::status;

impl Connection {
    pub(super) fn message(
        &mut self,
        msg: Vec<u8>,
        now: u64,
        backend: &mut dyn PipeBackend,
    ) -> Result<(), ConnectionError> {
        if Smb1Negotiate::is_smb1(&msg) {
            return self.smb1_negotiate(&msg, now);
        }
        let base = msg.as_ptr() as usize;
        let parts = split_compound(&msg)
            .map_err(ConnectionError::Malformed)?
            .into_iter()
            .map(|p| {
                let start = p.as_ptr() as usize - base;
                start..start + p.len()
            })
            .collect();
        let chain = Chain {
            msg,
            parts,
            ..Chain::default()
        };
        self.run_chain(chain, now, backend)
    }

    fn run_chain(
        &mut self,
        mut chain: Chain,
        now: u64,
        backend: &mut dyn PipeBackend,
    ) -> Result<(), ConnectionError> {
        while chain.next < chain.parts.len() {
            let idx = chain.next;
            chain.next += 1;
            let last = chain.next == chain.parts.len();
            let range = chain.parts[idx].clone();
            let Some(part) = chain.msg.get(range) else {
                return Err(ConnectionError::Protocol("compound part out of range"));
            };
            // The body is decoded (copying what it keeps) before anything
            // else borrows the chain.
            let decoded = Request::decode(part);
            let mut header = Header::decode(part).map_err(ConnectionError::Malformed)?;
            if header.is_response() {
                return Err(ConnectionError::Protocol("a response from the client"));
            }
            self.check_credits(&header)?;
            if header.is_related() && idx > 0 {
                header.session_id = chain.session_id;
                if let HeaderIds::Sync { process_id, .. } = header.ids {
                    header.ids = HeaderIds::Sync {
                        process_id,
                        tree_id: chain.tree_id,
                    };
                }
            }
            let step = if let (true, Some(st)) = (header.is_related(), chain.failed) {
                Step::Reply(st, error_body())
            } else {
                match decoded {
                    Ok((_, mut req)) => {
                        if header.is_related() {
                            relate_file_id(&mut req, chain.file_id);
                        }
                        self.dispatch(&header, req, now, backend)
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "smb2: undecodable request body");
                        Step::Reply(NtStatus::INVALID_PARAMETER, error_body())
                    }
                }
            };
            match step {
                Step::Silent => {}
                Step::Reply(st, resp) => self.add_response(&mut chain, &header, st, resp),
                Step::Backend(kind, _op, Poll::Ready(c)) => {
                    let (st, resp) = self.finish(kind, c, backend);
                    self.add_response(&mut chain, &header, st, resp);
                }
                Step::Backend(kind, op, Poll::Pending) => {
                    if last && self.interim_now(kind) {
                        // Interim STATUS_PENDING, then the answer later.
                        let async_id = self.next_async;
                        self.next_async += 1;
                        let mut h = self.response_header(&header, NtStatus::PENDING);
                        h.ids = HeaderIds::Async { async_id };
                        h.credits = self.grant(&header);
                        h.credit_charge = header.credit_charge;
                        let interim =
                            self.encode_response(&h, &Response::Error(ErrorResponse::default()));
                        chain.responses.push(interim);
                        self.emit_parts(std::mem::take(&mut chain.responses));
                        self.pending.insert(
                            op,
                            Pending {
                                header,
                                kind,
                                async_id: Some(async_id),
                                chain: None,
                            },
                        );
                    } else {
                        self.pending.insert(
                            op,
                            Pending {
                                header,
                                kind,
                                async_id: None,
                                chain: Some(chain),
                            },
                        );
                    }
                    return Ok(());
                }
            }
        }
        if !chain.responses.is_empty() {
            self.emit_parts(std::mem::take(&mut chain.responses));
        }
        Ok(())
    }

    /// The result of a backend operation that returned `Poll::Pending`.
    pub fn complete(
        &mut self,
        op: OpId,
        completion: Completion,
        now: u64,
        backend: &mut dyn PipeBackend,
    ) -> Result<(), ConnectionError> {
        let Some(p) = self.pending.remove(&op) else {
            tracing::debug!(?op, "smb2: completion of an unknown operation");
            return Ok(());
        };
        if self.closed {
            // Late completions after shutdown: close what they opened.
            if let Completion::Open(Ok(pipe)) = completion {
                backend.close(pipe);
            }
            return Ok(());
        }
        let (st, resp) = self.finish(p.kind, completion, backend);
        match (p.async_id, p.chain) {
            (Some(async_id), _) => {
                let mut h = self.response_header(&p.header, st);
                h.ids = HeaderIds::Async { async_id };
                h.credits = 0;
                let bytes = self.encode_response(&h, &resp);
                self.emit_parts(vec![bytes]);
                Ok(())
            }
            (None, Some(mut chain)) => {
                self.add_response(&mut chain, &p.header, st, resp);
                match self.run_chain(chain, now, backend) {
                    Ok(()) => match self.close_after.take() {
                        Some(why) => self.fail(backend, ConnectionError::Protocol(why)),
                        None => Ok(()),
                    },
                    Err(e) => self.fail(backend, e),
                }
            }
            (None, None) => Ok(()),
        }
    }

    fn check_credits(&mut self, h: &Header) -> Result<(), ConnectionError> {
        if h.command == Command::Cancel as u16 {
            return Ok(());
        }
        let charge = u64::from(h.credit_charge.max(1));
        self.seq
            .consume(h.message_id, charge)
            .map_err(|e| ConnectionError::Protocol(e.reason()))
    }

    /// Credits granted on a response to `req`; raises the window.
    fn grant(&mut self, req: &Header) -> u16 {
        if req.command == Command::Cancel as u16 {
            return 0;
        }
        let max = self.cfg.max_credits;
        self.seq
            .grant(req.credits, max, MAX_SEQ_SPAN_FACTOR * u64::from(max))
    }

    fn response_header(&self, req: &Header, st: NtStatus) -> Header {
        Header {
            credit_charge: req.credit_charge,
            status: st,
            command: req.command,
            credits: 0,
            flags: FLAGS_SERVER_TO_REDIR | (req.flags & FLAGS_RELATED_OPERATIONS),
            next_command: 0,
            message_id: req.message_id,
            ids: req.ids,
            session_id: req.session_id,
            signature: [0; 16],
        }
    }

    fn add_response(&mut self, chain: &mut Chain, req: &Header, st: NtStatus, resp: Response) {
        let mut h = self.response_header(req, st);
        h.credits = self.grant(req);
        // New ids a response makes (session setup, tree connect).
        if let Some(id) = self.new_session.take() {
            h.session_id = id;
        }
        if let Some(tree_id) = self.new_tree.take() {
            if let HeaderIds::Sync { process_id, .. } = h.ids {
                h.ids = HeaderIds::Sync {
                    process_id,
                    tree_id,
                };
            }
        }
        chain.session_id = h.session_id;
        chain.tree_id = h.tree_id();
        if let Response::Create(c) = &resp {
            chain.file_id = Some(c.file_id);
        }
        if st.is_error()
            && !(req.command == Command::SessionSetup as u16
                && st == status::MORE_PROCESSING_REQUIRED)
        {
            chain.failed = Some(st);
        }
        let bytes = self.encode_response(&h, &resp);
        chain.responses.push(bytes);
    }

    pub(super) fn encode_response(&self, h: &Header, resp: &Response) -> Vec<u8> {
        match resp.encode(h) {
            Ok(b) => b,
            Err(e) => {
                // Only an oversized body gets here (the limits keep it
                // out); answer with the error body instead.
                tracing::warn!(error = %e, "smb2: response did not encode");
                let h = Header {
                    status: NtStatus::INTERNAL_ERROR,
                    ..h.clone()
                };
                Response::Error(ErrorResponse::default())
                    .encode(&h)
                    .unwrap_or_default()
            }
        }
    }

    /// Joins response parts into one compound message (8-aligned,
    /// NextCommand set) and frames it.
    pub(super) fn emit_parts(&mut self, parts: Vec<Vec<u8>>) {
        let n = parts.len();
        if let [one] = parts.as_slice() {
            match frame_header(one.len()) {
                Ok(h) => {
                    self.out.extend_from_slice(&h);
                    self.out.extend_from_slice(one);
                }
                Err(e) => tracing::warn!(error = %e, "smb2: response too long to frame"),
            }
            return;
        }
        let mut msg = Vec::new();
        for (i, mut p) in parts.into_iter().enumerate() {
            if i + 1 < n {
                let len = p.len().div_ceil(8) * 8;
                p.resize(len, 0);
                p[20..24].copy_from_slice(&(len as u32).to_le_bytes());
            }
            msg.extend_from_slice(&p);
        }
        match frame(&msg) {
            Ok(f) => self.out.extend_from_slice(&f),
            Err(e) => tracing::warn!(error = %e, "smb2: response too long to frame"),
        }
    }
}

fn relate_file_id(req: &mut Request, prev: Option<FileId>) {
    let id = match req {
        Request::Close(r) => &mut r.file_id,
        Request::Read(r) => &mut r.file_id,
        Request::Write(r) => &mut r.file_id,
        Request::Ioctl(r) => &mut r.file_id,
        Request::QueryInfo(r) => &mut r.file_id,
        Request::SetInfo(r) => &mut r.file_id,
        _ => return,
    };
    if *id == FileId::RELATED {
        if let Some(p) = prev {
            *id = p;
        }
    }
}
