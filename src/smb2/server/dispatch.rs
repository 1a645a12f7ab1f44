//! One request to its handler: the session, tree and open commands are
//! answered here (NEGOTIATE and SESSION_SETUP in `auth`, the pipe
//! operations in `pipe`), with the session, tree and open lookups the
//! handlers share.

use super::{
    error_body, pipe, Completion, Connection, Kind, OpId, Open, PipeBackend, PipeRef, Session,
    SessionState, Step,
};
use crate::protocol::status::NtStatus;
use crate::smb2::file::{CloseResponse, FileId};
use crate::smb2::header::Header;
use crate::smb2::message::{Request, Response};
use crate::smb2::session::{TreeConnectResponse, SHARE_TYPE_PIPE};
use crate::smb2::status;

impl Connection {
    pub(super) fn dispatch(
        &mut self,
        h: &Header,
        req: Request,
        now: u64,
        backend: &mut dyn PipeBackend,
    ) -> Step {
        if self.dialect.is_none() && !matches!(req, Request::Negotiate(_)) {
            return Step::Reply(NtStatus::ACCESS_DENIED, error_body());
        }
        match req {
            Request::Negotiate(n) => self.negotiate(n, now),
            Request::SessionSetup(s) => self.session_setup(h, s, now),
            Request::Echo => Step::Reply(NtStatus(0), Response::Echo),
            Request::Cancel => {
                self.cancel(h, backend);
                Step::Silent
            }
            Request::Logoff => match self.valid_session(h.session_id) {
                Ok(_) => {
                    self.end_session(h.session_id, backend);
                    Step::Reply(NtStatus(0), Response::Logoff)
                }
                Err(st) => Step::Reply(st, error_body()),
            },
            Request::TreeConnect(t) => self.tree_connect(h, t.share()),
            Request::TreeDisconnect => match self.valid_tree(h) {
                Ok(()) => {
                    let tree_id = h.tree_id();
                    if let Some(s) = self.sessions.get_mut(&h.session_id) {
                        s.trees.retain(|t| *t != tree_id);
                        let gone: Vec<FileId> = s
                            .opens
                            .iter()
                            .filter(|(_, o)| o.tree_id == tree_id)
                            .map(|(id, _)| *id)
                            .collect();
                        for id in gone {
                            if let Some(o) = s.opens.remove(&id) {
                                backend.close(o.pipe);
                            }
                        }
                    }
                    Step::Reply(NtStatus(0), Response::TreeDisconnect)
                }
                Err(st) => Step::Reply(st, error_body()),
            },
            Request::Create(c) => {
                if let Err(st) = self.valid_tree(h) {
                    return Step::Reply(st, error_body());
                }
                let Some(Session {
                    state: SessionState::Valid { user },
                    opens,
                    ..
                }) = self.sessions.get(&h.session_id)
                else {
                    return Step::Reply(status::USER_SESSION_DELETED, error_body());
                };
                if opens.len() >= self.cfg.max_opens_per_session {
                    return Step::Reply(NtStatus::TOO_MANY_OPENED_FILES, error_body());
                }
                if c.name.is_empty() {
                    return Step::Reply(NtStatus::OBJECT_NAME_INVALID, error_body());
                }
                let user = user.clone();
                let kind = Kind::Open {
                    session_id: h.session_id,
                    tree_id: h.tree_id(),
                };
                self.start(
                    kind,
                    |op, b| b.open(op, &c.name, &user).map(Completion::Open),
                    backend,
                )
            }
            Request::Close(c) => match self.take_open(h, c.file_id) {
                Ok(o) => {
                    backend.close(o.pipe);
                    Step::Reply(NtStatus(0), Response::Close(CloseResponse::default()))
                }
                Err(st) => Step::Reply(st, error_body()),
            },
            Request::Ioctl(io) => self.ioctl(h, io, backend),
            Request::Read(r) => {
                let pipe = match self.open_pipe(h, r.file_id) {
                    Ok(p) => p,
                    Err(st) => return Step::Reply(st, error_body()),
                };
                if r.length > self.cfg.max_io_bytes {
                    return Step::Reply(NtStatus::INVALID_PARAMETER, error_body());
                }
                let max = r.length as usize;
                self.start(
                    Kind::Read,
                    |op, b| b.read(op, pipe, max).map(Completion::Data),
                    backend,
                )
            }
            Request::Write(w) => {
                let pipe = match self.open_pipe(h, w.file_id) {
                    Ok(p) => p,
                    Err(st) => return Step::Reply(st, error_body()),
                };
                if w.data.len() > self.cfg.max_io_bytes as usize {
                    return Step::Reply(NtStatus::INVALID_PARAMETER, error_body());
                }
                self.start(
                    Kind::Write,
                    |op, b| b.write(op, pipe, w.data).map(Completion::Written),
                    backend,
                )
            }
            Request::QueryInfo(q) => match self.open_pipe(h, q.file_id) {
                Ok(_) => pipe::query_info(q.info_type, q.file_info_class, q.output_buffer_length),
                Err(st) => Step::Reply(st, error_body()),
            },
            Request::SetInfo(q) => match self.open_pipe(h, q.file_id) {
                Ok(_) => pipe::set_info(q.info_type, q.file_info_class, &q.buffer),
                Err(st) => Step::Reply(st, error_body()),
            },
            Request::Other(_) => Step::Reply(NtStatus::NOT_SUPPORTED, error_body()),
        }
    }

    fn tree_connect(&mut self, h: &Header, share: &str) -> Step {
        let max = self.cfg.max_trees_per_session;
        let sess = match self.sessions.get_mut(&h.session_id) {
            Some(
                s @ Session {
                    state: SessionState::Valid { .. },
                    ..
                },
            ) => s,
            _ => return Step::Reply(status::USER_SESSION_DELETED, error_body()),
        };
        if !share.eq_ignore_ascii_case("IPC$") {
            return Step::Reply(status::BAD_NETWORK_NAME, error_body());
        }
        if sess.trees.len() >= max {
            return Step::Reply(status::REQUEST_NOT_ACCEPTED, error_body());
        }
        let id = self.next_tree;
        self.next_tree = self.next_tree.wrapping_add(1).max(1);
        sess.trees.push(id);
        self.new_tree = Some(id);
        Step::Reply(
            NtStatus(0),
            Response::TreeConnect(TreeConnectResponse {
                share_type: SHARE_TYPE_PIPE,
                share_flags: 0,
                capabilities: 0,
                maximal_access: 0x001F_00A9,
            }),
        )
    }

    fn cancel(&mut self, h: &Header, backend: &mut dyn PipeBackend) {
        let target = self.pending.iter().find(|(_, p)| match h.async_id() {
            Some(a) => p.async_id == Some(a),
            None => p.header.message_id == h.message_id && p.header.session_id == h.session_id,
        });
        if let Some((op, _)) = target {
            backend.cancel(*op);
        }
    }

    pub(super) fn end_session(&mut self, id: u64, backend: &mut dyn PipeBackend) {
        let ops: Vec<OpId> = self
            .pending
            .iter()
            .filter(|(_, p)| p.header.session_id == id)
            .map(|(op, _)| *op)
            .collect();
        for op in ops {
            backend.cancel(op);
        }
        if let Some(s) = self.sessions.remove(&id) {
            for (_, o) in s.opens {
                backend.close(o.pipe);
            }
            if let SessionState::Valid { .. } = s.state {
                backend.logoff(id);
            }
        }
    }

    fn valid_session(&self, id: u64) -> Result<&Session, NtStatus> {
        match self.sessions.get(&id) {
            Some(
                s @ Session {
                    state: SessionState::Valid { .. },
                    ..
                },
            ) => Ok(s),
            _ => Err(status::USER_SESSION_DELETED),
        }
    }

    pub(super) fn valid_tree(&self, h: &Header) -> Result<(), NtStatus> {
        let s = self.valid_session(h.session_id)?;
        if s.trees.contains(&h.tree_id()) {
            Ok(())
        } else {
            Err(status::NETWORK_NAME_DELETED)
        }
    }

    pub(super) fn open_pipe(&self, h: &Header, file_id: FileId) -> Result<PipeRef, NtStatus> {
        let s = self.valid_session(h.session_id)?;
        match s.opens.get(&file_id) {
            Some(o) => Ok(o.pipe),
            None => Err(status::FILE_CLOSED),
        }
    }

    fn take_open(&mut self, h: &Header, file_id: FileId) -> Result<Open, NtStatus> {
        self.valid_session(h.session_id)?;
        self.sessions
            .get_mut(&h.session_id)
            .and_then(|s| s.opens.remove(&file_id))
            .ok_or(status::FILE_CLOSED)
    }
}
