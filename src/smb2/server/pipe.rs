//! The operations on pipes: starting a backend operation, turning its
//! result into a response, IOCTL dispatch, and the pipe information
//! classes of QUERY_INFO and SET_INFO.

use std::task::Poll;

use super::{
    error_body, error_status, mix, Completion, Connection, Kind, OpId, Open, PipeBackend, Step,
    FSCTL_DFS_GET_REFERRALS, FSCTL_DFS_GET_REFERRALS_EX, FSCTL_VALIDATE_NEGOTIATE_INFO,
    INFO_LENGTH_MISMATCH,
};
use crate::protocol::status::NtStatus;
use crate::smb2::file::{
    CreateResponse, FileId, IoctlRequest, IoctlResponse, QueryInfoResponse, ReadResponse,
    WriteResponse, FSCTL_PIPE_PEEK, FSCTL_PIPE_TRANSCEIVE, FSCTL_PIPE_WAIT, IOCTL_IS_FSCTL,
};
use crate::smb2::header::Header;
use crate::smb2::message::{is_error_body, Response};
use crate::smb2::status;

/// MS-FSCC information classes a pipe answers.
const FILE_STANDARD_INFORMATION: u8 = 5;
const FILE_PIPE_INFORMATION: u8 = 23;
const FILE_PIPE_LOCAL_INFORMATION: u8 = 24;

impl Connection {
    /// Starts a backend operation unless the pending limit is reached.
    pub(super) fn start(
        &mut self,
        kind: Kind,
        f: impl FnOnce(OpId, &mut dyn PipeBackend) -> Poll<Completion>,
        backend: &mut dyn PipeBackend,
    ) -> Step {
        if self.pending.len() >= self.cfg.max_pending {
            return Step::Reply(NtStatus::INSUFFICIENT_RESOURCES, error_body());
        }
        let op = OpId(self.next_op);
        self.next_op += 1;
        Step::Backend(kind, op, f(op, backend))
    }

    pub(super) fn finish(
        &mut self,
        kind: Kind,
        c: Completion,
        backend: &mut dyn PipeBackend,
    ) -> (NtStatus, Response) {
        match (kind, c) {
            // A backend that reports an error inside its data: the error body.
            (_, Completion::Data(Ok(d))) if is_error_body(0xFFFF, d.status) => {
                (error_status(d.status), error_body())
            }
            (
                Kind::Open {
                    session_id,
                    tree_id,
                },
                Completion::Open(Ok(pipe)),
            ) => {
                let file_id = FileId {
                    persistent: self.next_file,
                    volatile: mix(self.seed ^ self.next_file),
                };
                self.next_file += 1;
                let Some(s) = self.sessions.get_mut(&session_id) else {
                    backend.close(pipe);
                    return (status::USER_SESSION_DELETED, error_body());
                };
                if !s.trees.contains(&tree_id) {
                    backend.close(pipe);
                    return (status::NETWORK_NAME_DELETED, error_body());
                }
                s.opens.insert(file_id, Open { pipe, tree_id });
                (
                    NtStatus(0),
                    Response::Create(CreateResponse {
                        oplock_level: 0,
                        flags: 0,
                        create_action: 1,
                        creation_time: 0,
                        last_access_time: 0,
                        last_write_time: 0,
                        change_time: 0,
                        allocation_size: 4096,
                        end_of_file: 0,
                        file_attributes: 0x80,
                        file_id,
                        create_contexts: Vec::new(),
                    }),
                )
            }
            (Kind::Ioctl { ctl_code, file_id }, Completion::Data(Ok(d))) => (
                d.status,
                Response::Ioctl(IoctlResponse {
                    ctl_code,
                    file_id,
                    flags: 0,
                    input: Vec::new(),
                    output: d.data,
                }),
            ),
            (Kind::Ioctl { ctl_code, file_id }, Completion::Waited(Ok(()))) => (
                NtStatus(0),
                Response::Ioctl(IoctlResponse {
                    ctl_code,
                    file_id,
                    flags: 0,
                    input: Vec::new(),
                    output: Vec::new(),
                }),
            ),
            (Kind::Read, Completion::Data(Ok(d))) => (
                d.status,
                Response::Read(ReadResponse {
                    data_remaining: 0,
                    data: d.data,
                }),
            ),
            (Kind::Write, Completion::Written(Ok(n))) => (
                NtStatus(0),
                Response::Write(WriteResponse {
                    count: u32::try_from(n).unwrap_or(u32::MAX),
                }),
            ),
            (Kind::Open { .. }, Completion::Open(Err(st)))
            | (_, Completion::Data(Err(st)))
            | (_, Completion::Written(Err(st)))
            | (_, Completion::Waited(Err(st))) => (error_status(st), error_body()),
            (kind, c) => {
                tracing::warn!(?kind, ?c, "smb2: completion of the wrong kind");
                (NtStatus::INTERNAL_ERROR, error_body())
            }
        }
    }

    pub(super) fn ioctl(
        &mut self,
        h: &Header,
        io: IoctlRequest,
        backend: &mut dyn PipeBackend,
    ) -> Step {
        if io.flags & IOCTL_IS_FSCTL == 0 {
            return Step::Reply(NtStatus::NOT_SUPPORTED, error_body());
        }
        if io.input.len() > self.cfg.max_io_bytes as usize {
            return Step::Reply(NtStatus::INVALID_PARAMETER, error_body());
        }
        let max_out = io.max_output_response.min(self.cfg.max_io_bytes) as usize;
        let kind = Kind::Ioctl {
            ctl_code: io.ctl_code,
            file_id: io.file_id,
        };
        match io.ctl_code {
            FSCTL_PIPE_TRANSCEIVE | FSCTL_PIPE_PEEK => {
                let pipe = match self.open_pipe(h, io.file_id) {
                    Ok(p) => p,
                    Err(st) => return Step::Reply(st, error_body()),
                };
                if io.ctl_code == FSCTL_PIPE_PEEK {
                    self.start(
                        kind,
                        |op, b| b.peek(op, pipe, max_out).map(Completion::Data),
                        backend,
                    )
                } else {
                    let input = io.input;
                    self.start(
                        kind,
                        |op, b| b.transceive(op, pipe, input, max_out).map(Completion::Data),
                        backend,
                    )
                }
            }
            FSCTL_PIPE_WAIT => {
                if let Err(st) = self.valid_tree(h) {
                    return Step::Reply(st, error_body());
                }
                let input = io.input;
                self.start(
                    kind,
                    |op, b| b.wait(op, &input).map(Completion::Waited),
                    backend,
                )
            }
            FSCTL_VALIDATE_NEGOTIATE_INFO => {
                if let Err(st) = self.valid_tree(h) {
                    return Step::Reply(st, error_body());
                }
                self.validate_negotiate(io)
            }
            // No DFS here (MS-SMB2 3.3.5.15.2).
            FSCTL_DFS_GET_REFERRALS | FSCTL_DFS_GET_REFERRALS_EX => {
                Step::Reply(status::FS_DRIVER_REQUIRED, error_body())
            }
            _ => Step::Reply(NtStatus::INVALID_DEVICE_REQUEST, error_body()),
        }
    }
}

/// QUERY_INFO on a pipe: FileStandardInformation (AllocationSize 4096,
/// EndOfFile 0, one link, delete pending, not a directory),
/// FilePipeInformation (message read mode, queued completion) and
/// FilePipeLocalInformation (a full-duplex message pipe, connected, the
/// client end).
pub(super) fn query_info(info_type: u8, class: u8, max_out: u32) -> Step {
    if info_type != 1 {
        return Step::Reply(NtStatus::NOT_SUPPORTED, error_body());
    }
    let words: &[u32] = match class {
        FILE_STANDARD_INFORMATION => &[4096, 0, 0, 0, 1, 1],
        FILE_PIPE_INFORMATION => &[1, 0],
        FILE_PIPE_LOCAL_INFORMATION => &[1, 2, u32::MAX, 1, 4096, 0, 4096, 4096, 3, 0],
        _ => return Step::Reply(status::INVALID_INFO_CLASS, error_body()),
    };
    let mut out: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
    if class == FILE_STANDARD_INFORMATION {
        // DeletePending and Directory are single bytes, then 2 reserved.
        out.truncate(20);
        out.extend_from_slice(&[1, 0, 0, 0]);
    }
    if (max_out as usize) < out.len() {
        return Step::Reply(INFO_LENGTH_MISMATCH, error_body());
    }
    Step::Reply(
        NtStatus(0),
        Response::QueryInfo(QueryInfoResponse { output: out }),
    )
}

/// SET_INFO on a pipe: FilePipeInformation with a byte or message read
/// mode and either completion mode is accepted (the pipe stays a message
/// pipe); anything else is refused.
pub(super) fn set_info(info_type: u8, class: u8, buf: &[u8]) -> Step {
    if info_type != 1 || class != FILE_PIPE_INFORMATION {
        return Step::Reply(NtStatus::NOT_SUPPORTED, error_body());
    }
    let ok = match buf {
        [a0, a1, a2, a3, b0, b1, b2, b3] => {
            u32::from_le_bytes([*a0, *a1, *a2, *a3]) <= 1
                && u32::from_le_bytes([*b0, *b1, *b2, *b3]) <= 1
        }
        _ => false,
    };
    if ok {
        Step::Reply(NtStatus(0), Response::SetInfo)
    } else {
        Step::Reply(NtStatus::INVALID_PARAMETER, error_body())
    }
}
