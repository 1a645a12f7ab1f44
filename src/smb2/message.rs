//! Whole SMB2 requests and responses: a header and the body its command
//! and status call for.

use super::file::{
    CloseRequest, CloseResponse, CreateRequest, CreateResponse, IoctlRequest, IoctlResponse,
    QueryInfoRequest, QueryInfoResponse, ReadRequest, ReadResponse, SetInfoRequest, WriteRequest,
    WriteResponse,
};
use super::header::{Command, Header, HEADER_LEN};
use super::negotiate::{NegotiateRequest, NegotiateResponse};
use super::session::{
    SessionSetupRequest, SessionSetupResponse, TreeConnectRequest, TreeConnectResponse,
};
use super::status;
use super::wire::{len_u32, slice_at, Reader, Writer};
use crate::protocol::error::{DecodeError, EncodeError};
use crate::protocol::status::NtStatus;

/// The most bytes of ErrorData kept from an error response.
pub const MAX_ERROR_DATA: usize = 1024;

/// A request body, by command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    /// NEGOTIATE.
    Negotiate(NegotiateRequest),
    /// SESSION_SETUP.
    SessionSetup(SessionSetupRequest),
    /// LOGOFF.
    Logoff,
    /// TREE_CONNECT.
    TreeConnect(TreeConnectRequest),
    /// TREE_DISCONNECT.
    TreeDisconnect,
    /// CREATE.
    Create(CreateRequest),
    /// CLOSE.
    Close(CloseRequest),
    /// READ.
    Read(ReadRequest),
    /// WRITE.
    Write(WriteRequest),
    /// IOCTL.
    Ioctl(IoctlRequest),
    /// CANCEL.
    Cancel,
    /// ECHO.
    Echo,
    /// QUERY_INFO.
    QueryInfo(QueryInfoRequest),
    /// SET_INFO.
    SetInfo(SetInfoRequest),
    /// Any other command (FLUSH, LOCK, QUERY_DIRECTORY, ...): its body is
    /// not decoded; a pipe server answers it with an error.
    Other(u16),
}

/// Reads the 4-byte body of LOGOFF, TREE_DISCONNECT, CANCEL and ECHO.
fn decode_empty(msg: &[u8]) -> Result<(), DecodeError> {
    let mut r = Reader::at(msg, HEADER_LEN);
    r.structure_size(4)?;
    let _reserved = r.u16("Reserved")?;
    Ok(())
}

fn write_empty(w: &mut Writer) {
    w.u16(4);
    w.u16(0);
}

impl Request {
    /// The command this body belongs to.
    pub fn command(&self) -> u16 {
        let c = match self {
            Request::Negotiate(_) => Command::Negotiate,
            Request::SessionSetup(_) => Command::SessionSetup,
            Request::Logoff => Command::Logoff,
            Request::TreeConnect(_) => Command::TreeConnect,
            Request::TreeDisconnect => Command::TreeDisconnect,
            Request::Create(_) => Command::Create,
            Request::Close(_) => Command::Close,
            Request::Read(_) => Command::Read,
            Request::Write(_) => Command::Write,
            Request::Ioctl(_) => Command::Ioctl,
            Request::Cancel => Command::Cancel,
            Request::Echo => Command::Echo,
            Request::QueryInfo(_) => Command::QueryInfo,
            Request::SetInfo(_) => Command::SetInfo,
            Request::Other(c) => return *c,
        };
        c as u16
    }

    /// Decodes one request (one compound part: `part` starts at its header
    /// and offsets count from there).
    pub fn decode(part: &[u8]) -> Result<(Header, Request), DecodeError> {
        let header = Header::decode(part)?;
        if header.is_response() {
            return Err(DecodeError::InvalidValue {
                field: "Flags",
                value: u64::from(header.flags),
            });
        }
        let body = match header.command() {
            Some(Command::Negotiate) => Request::Negotiate(NegotiateRequest::decode(part)?),
            Some(Command::SessionSetup) => {
                Request::SessionSetup(SessionSetupRequest::decode(part)?)
            }
            Some(Command::Logoff) => {
                decode_empty(part)?;
                Request::Logoff
            }
            Some(Command::TreeConnect) => Request::TreeConnect(TreeConnectRequest::decode(part)?),
            Some(Command::TreeDisconnect) => {
                decode_empty(part)?;
                Request::TreeDisconnect
            }
            Some(Command::Create) => Request::Create(CreateRequest::decode(part)?),
            Some(Command::Close) => Request::Close(CloseRequest::decode(part)?),
            Some(Command::Read) => Request::Read(ReadRequest::decode(part)?),
            Some(Command::Write) => Request::Write(WriteRequest::decode(part)?),
            Some(Command::Ioctl) => Request::Ioctl(IoctlRequest::decode(part)?),
            Some(Command::Cancel) => {
                decode_empty(part)?;
                Request::Cancel
            }
            Some(Command::Echo) => {
                decode_empty(part)?;
                Request::Echo
            }
            Some(Command::QueryInfo) => Request::QueryInfo(QueryInfoRequest::decode(part)?),
            Some(Command::SetInfo) => Request::SetInfo(SetInfoRequest::decode(part)?),
            _ => Request::Other(header.command),
        };
        Ok((header, body))
    }

    /// Encodes `header` and this body; the header's command is taken from
    /// the body (an `Other` body has nothing to encode and is refused).
    pub fn encode(&self, header: &Header) -> Result<Vec<u8>, EncodeError> {
        let mut h = header.clone();
        h.command = self.command();
        let mut w = Writer::new();
        h.write(&mut w);
        match self {
            Request::Negotiate(b) => b.write(&mut w)?,
            Request::SessionSetup(b) => b.write(&mut w)?,
            Request::Logoff | Request::TreeDisconnect | Request::Cancel | Request::Echo => {
                write_empty(&mut w)
            }
            Request::TreeConnect(b) => b.write(&mut w)?,
            Request::Create(b) => b.write(&mut w)?,
            Request::Close(b) => b.write(&mut w),
            Request::Read(b) => b.write(&mut w),
            Request::Write(b) => b.write(&mut w)?,
            Request::Ioctl(b) => b.write(&mut w)?,
            Request::QueryInfo(b) => b.write(&mut w)?,
            Request::SetInfo(b) => b.write(&mut w)?,
            Request::Other(c) => {
                return Err(EncodeError::NonCanonical {
                    field: "Command",
                    value: i64::from(*c),
                })
            }
        }
        Ok(w.buf)
    }
}

/// The SMB2 ERROR response body (MS-SMB2 2.2.2).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ErrorResponse {
    /// ErrorContextCount (3.1.1).
    pub error_context_count: u8,
    /// ErrorData (empty in almost every error).
    pub error_data: Vec<u8>,
}

impl ErrorResponse {
    fn decode(msg: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::at(msg, HEADER_LEN);
        r.structure_size(9)?;
        let error_context_count = r.u8("ErrorContextCount")?;
        let _reserved = r.u8("Reserved")?;
        let n = r.u32("ByteCount")? as usize;
        let data = slice_at(msg, "ErrorData", r.pos(), n, MAX_ERROR_DATA)?;
        Ok(ErrorResponse {
            error_context_count,
            error_data: data.to_vec(),
        })
    }

    fn write(&self, w: &mut Writer) -> Result<(), EncodeError> {
        if self.error_data.len() > MAX_ERROR_DATA {
            return Err(EncodeError::MessageTooLong {
                len: self.error_data.len(),
                max: MAX_ERROR_DATA,
            });
        }
        w.u16(9);
        w.u8(self.error_context_count);
        w.u8(0);
        w.u32(len_u32("ByteCount", self.error_data.len())?);
        w.variable(&self.error_data);
        Ok(())
    }
}

/// A response body, by command and status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Response {
    /// NEGOTIATE.
    Negotiate(NegotiateResponse),
    /// SESSION_SETUP (also with STATUS_MORE_PROCESSING_REQUIRED).
    SessionSetup(SessionSetupResponse),
    /// LOGOFF.
    Logoff,
    /// TREE_CONNECT.
    TreeConnect(TreeConnectResponse),
    /// TREE_DISCONNECT.
    TreeDisconnect,
    /// CREATE.
    Create(CreateResponse),
    /// CLOSE.
    Close(CloseResponse),
    /// READ (also with STATUS_BUFFER_OVERFLOW).
    Read(ReadResponse),
    /// WRITE.
    Write(WriteResponse),
    /// IOCTL (also with STATUS_BUFFER_OVERFLOW).
    Ioctl(IoctlResponse),
    /// ECHO.
    Echo,
    /// QUERY_INFO (also with STATUS_BUFFER_OVERFLOW).
    QueryInfo(QueryInfoResponse),
    /// SET_INFO.
    SetInfo,
    /// The error body: any error status but the exceptions above, and the
    /// interim STATUS_PENDING response.
    Error(ErrorResponse),
}

/// Whether a response with this command and status carries the error body
/// (MS-SMB2 3.3.4.4 and the exceptions of 3.2.5.1.4 ... 3.2.5.1.8).
pub fn is_error_body(command: u16, st: NtStatus) -> bool {
    if st == NtStatus::PENDING {
        return true;
    }
    if !st.is_error() {
        return false;
    }
    !(command == Command::SessionSetup as u16 && st == status::MORE_PROCESSING_REQUIRED)
}

impl Response {
    /// The command this body answers (`None` for the error body, which
    /// answers any).
    pub fn command(&self) -> Option<u16> {
        let c = match self {
            Response::Negotiate(_) => Command::Negotiate,
            Response::SessionSetup(_) => Command::SessionSetup,
            Response::Logoff => Command::Logoff,
            Response::TreeConnect(_) => Command::TreeConnect,
            Response::TreeDisconnect => Command::TreeDisconnect,
            Response::Create(_) => Command::Create,
            Response::Close(_) => Command::Close,
            Response::Read(_) => Command::Read,
            Response::Write(_) => Command::Write,
            Response::Ioctl(_) => Command::Ioctl,
            Response::Echo => Command::Echo,
            Response::QueryInfo(_) => Command::QueryInfo,
            Response::SetInfo => Command::SetInfo,
            Response::Error(_) => return None,
        };
        Some(c as u16)
    }

    /// Decodes one response part.
    pub fn decode(part: &[u8]) -> Result<(Header, Response), DecodeError> {
        let header = Header::decode(part)?;
        if !header.is_response() {
            return Err(DecodeError::InvalidValue {
                field: "Flags",
                value: u64::from(header.flags),
            });
        }
        if is_error_body(header.command, header.status) {
            return Ok((header, Response::Error(ErrorResponse::decode(part)?)));
        }
        let body = match header.command() {
            Some(Command::Negotiate) => Response::Negotiate(NegotiateResponse::decode(part)?),
            Some(Command::SessionSetup) => {
                Response::SessionSetup(SessionSetupResponse::decode(part)?)
            }
            Some(Command::Logoff) => {
                decode_empty(part)?;
                Response::Logoff
            }
            Some(Command::TreeConnect) => Response::TreeConnect(TreeConnectResponse::decode(part)?),
            Some(Command::TreeDisconnect) => {
                decode_empty(part)?;
                Response::TreeDisconnect
            }
            Some(Command::Create) => Response::Create(CreateResponse::decode(part)?),
            Some(Command::Close) => Response::Close(CloseResponse::decode(part)?),
            Some(Command::Read) => Response::Read(ReadResponse::decode(part)?),
            Some(Command::Write) => Response::Write(WriteResponse::decode(part)?),
            Some(Command::Ioctl) => Response::Ioctl(IoctlResponse::decode(part)?),
            Some(Command::Echo) => {
                decode_empty(part)?;
                Response::Echo
            }
            Some(Command::QueryInfo) => Response::QueryInfo(QueryInfoResponse::decode(part)?),
            Some(Command::SetInfo) => {
                let mut r = Reader::at(part, HEADER_LEN);
                r.structure_size(2)?;
                Response::SetInfo
            }
            _ => {
                return Err(DecodeError::InvalidValue {
                    field: "Command",
                    value: u64::from(header.command),
                })
            }
        };
        Ok((header, body))
    }

    /// Encodes `header` and this body. The header's command is the body's
    /// (an error body keeps the header's); the body must be the one that
    /// [`is_error_body`] calls for with the header's status.
    pub fn encode(&self, header: &Header) -> Result<Vec<u8>, EncodeError> {
        let mut h = header.clone();
        if let Some(c) = self.command() {
            h.command = c;
        }
        if is_error_body(h.command, h.status) != matches!(self, Response::Error(_)) {
            return Err(EncodeError::NonCanonical {
                field: "Status",
                value: i64::from(h.status.0),
            });
        }
        let mut w = Writer::new();
        h.write(&mut w);
        match self {
            Response::Negotiate(b) => b.write(&mut w)?,
            Response::SessionSetup(b) => b.write(&mut w)?,
            Response::Logoff | Response::TreeDisconnect | Response::Echo => write_empty(&mut w),
            Response::TreeConnect(b) => b.write(&mut w),
            Response::Create(b) => b.write(&mut w)?,
            Response::Close(b) => b.write(&mut w),
            Response::Read(b) => b.write(&mut w)?,
            Response::Write(b) => b.write(&mut w),
            Response::Ioctl(b) => b.write(&mut w)?,
            Response::QueryInfo(b) => b.write(&mut w)?,
            Response::SetInfo => w.u16(2),
            Response::Error(b) => b.write(&mut w)?,
        }
        Ok(w.buf)
    }
}
