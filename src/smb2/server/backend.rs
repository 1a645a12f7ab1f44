//! What the SMB2 server core asks of the pipes behind it. The core is
//! sans-IO: each call starts one operation and either finishes it at once
//! (`Poll::Ready`) or says it goes on (`Poll::Pending`); then the embedder
//! hands the result back later with [`super::Connection::complete`] under
//! the same [`OpId`]. The engine plugs in here; tests use a fake.

use std::task::Poll;

use crate::protocol::status::NtStatus;
use crate::protocol::userinfo::NetUserInfo;

/// One backend operation of one connection (unique per connection).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OpId(pub u64);

/// An open pipe, as the backend names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PipeRef(pub u64);

/// Bytes from a pipe with their status: `STATUS_SUCCESS`, or
/// `STATUS_BUFFER_OVERFLOW` when the message did not fit (passed through to
/// the client as a warning, data included).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PipeData {
    /// Success or buffer overflow.
    pub status: NtStatus,
    /// The bytes.
    pub data: Vec<u8>,
}

impl PipeData {
    /// Data with `STATUS_SUCCESS`.
    pub fn ok(data: Vec<u8>) -> Self {
        PipeData {
            status: NtStatus(0),
            data,
        }
    }
}

/// The result of an operation that went pending, handed back to
/// [`super::Connection::complete`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Completion {
    /// An [`PipeBackend::open`].
    Open(Result<PipeRef, NtStatus>),
    /// A transceive, peek or read.
    Data(Result<PipeData, NtStatus>),
    /// A write: bytes written.
    Written(Result<usize, NtStatus>),
    /// A pipe wait.
    Waited(Result<(), NtStatus>),
}

/// The pipes behind the server: the engine, or a fake in tests.
pub trait PipeBackend {
    /// Opens pipe `name` (as the client sent it in CREATE, e.g. `srvsvc`)
    /// for `user`.
    fn open(&mut self, op: OpId, name: &str, user: &NetUserInfo)
        -> Poll<Result<PipeRef, NtStatus>>;
    /// FSCTL_PIPE_TRANSCEIVE: writes `input`, reads one reply of at most
    /// `max_out` bytes.
    fn transceive(
        &mut self,
        op: OpId,
        pipe: PipeRef,
        input: Vec<u8>,
        max_out: usize,
    ) -> Poll<Result<PipeData, NtStatus>>;
    /// FSCTL_PIPE_PEEK: the MS-FSCC reply (16-byte header and data), at most `max_out` bytes.
    fn peek(&mut self, op: OpId, pipe: PipeRef, max_out: usize)
        -> Poll<Result<PipeData, NtStatus>>;
    /// FSCTL_PIPE_WAIT with its wire input.
    fn wait(&mut self, op: OpId, input: &[u8]) -> Poll<Result<(), NtStatus>>;
    /// READ of at most `max_out` bytes; with nothing waiting it goes pending.
    fn read(&mut self, op: OpId, pipe: PipeRef, max_out: usize)
        -> Poll<Result<PipeData, NtStatus>>;
    /// WRITE of `data`.
    fn write(&mut self, op: OpId, pipe: PipeRef, data: Vec<u8>) -> Poll<Result<usize, NtStatus>>;
    /// Cancels a pending operation; it must still complete (typically with
    /// `STATUS_CANCELLED`), and the pipe stays usable.
    fn cancel(&mut self, op: OpId);
    /// Closes a pipe (its pending operations end; their completions are
    /// still delivered).
    fn close(&mut self, pipe: PipeRef);
    /// The SMB session ended (LOGOFF or connection loss), after its pipes
    /// were closed.
    fn logoff(&mut self, session_id: u64);
}
