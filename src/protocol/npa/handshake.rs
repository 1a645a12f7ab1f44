//! The handshake's two messages: the request (`named_pipe_auth_req`) and
//! the 36-byte reply (`named_pipe_auth_rep`), with their length prefix.

use std::io::{self, Read};

use super::level::NpaLevel;
use super::session::{finish, SessionInfoTransport, MAX_NPA_STRING_BYTES};
use crate::protocol::error::{DecodeError, EncodeError};
use crate::protocol::ndr::{check_string, NdrReader, NdrWriter};
use crate::protocol::status::NtStatus;

/// The handshake's magic, after the length.
pub const NPA_MAGIC: [u8; 4] = *b"NPAM";
/// `dcerpc_transport_t` `NCACN_NP`: the only transport a pipe open uses.
pub const NCACN_NP: u8 = 1;
/// Reply `file_type`: byte mode.
pub const FILE_TYPE_BYTE_MODE: u16 = 1;
/// Reply `file_type`: message mode (`FILE_TYPE_MESSAGE_MODE_PIPE`), what
/// Samba's RPC servers answer; messages are then framed.
pub const FILE_TYPE_MESSAGE_MODE: u16 = 2;
/// Reply `device_state` Samba's RPC servers answer (message-mode read and
/// type, blocking, 0xff instances).
pub const DEVICE_STATE_DEFAULT: u16 = 0x05ff;
/// Reply `allocation_size` Samba's RPC servers answer.
pub const ALLOCATION_SIZE_DEFAULT: u64 = 4096;
/// `STATUS_INVALID_LEVEL`: Samba's answer to a request at a level it does
/// not speak.
pub const STATUS_INVALID_LEVEL: NtStatus = NtStatus(0xC000_0148);
/// `STATUS_INVALID_ADDRESS`: Samba's answer to a request whose addresses
/// are missing or do not parse as IP addresses.
pub const STATUS_INVALID_ADDRESS: NtStatus = NtStatus(0xC000_0141);

/// Length of the reply at levels 7 and 8.
pub const NPA_REPLY_LEN: usize = 36;
/// Length of the big-endian length prefix of a request or reply.
pub const NPA_LENGTH_PREFIX_LEN: usize = 4;
/// Longest request (prefix included) opipe encodes or accepts. The largest
/// request within the other limits is well under it.
pub const MAX_NPA_MESSAGE_BYTES: usize = 1 << 20;

/// The handshake's request, `named_pipe_auth_req` at level 7 or 8 (the two
/// levels share this layout; the session info differs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NpaRequest {
    /// The level.
    pub level: NpaLevel,
    /// Transport ([`NCACN_NP`]).
    pub transport: u8,
    /// The SMB client's name (UTF-8).
    pub remote_client_name: Option<String>,
    /// The SMB client's IP address as text (Samba refuses a request
    /// without one, or one that does not parse).
    pub remote_client_addr: Option<String>,
    /// The SMB client's port.
    pub remote_client_port: u16,
    /// The SMB server's name (UTF-8).
    pub local_server_name: Option<String>,
    /// The SMB server's IP address as text (required like
    /// `remote_client_addr`).
    pub local_server_addr: Option<String>,
    /// The SMB server's port.
    pub local_server_port: u16,
    /// Who the caller is.
    pub session_info: Option<SessionInfoTransport>,
}

/// The level announced by a request or reply, from its first 12 bytes
/// (length, magic, level), without decoding the rest: what a service needs
/// to answer `STATUS_INVALID_LEVEL` to a level it does not speak.
pub fn npa_message_level(buf: &[u8]) -> Result<u32, DecodeError> {
    let mut r = NdrReader::new(buf);
    r.take("length", NPA_LENGTH_PREFIX_LEN)?;
    let magic = r.take("magic", 4)?;
    if magic != NPA_MAGIC {
        return Err(DecodeError::InvalidValue {
            field: "magic",
            value: u64::from(u32::from_be_bytes([magic[0], magic[1], magic[2], magic[3]])),
        });
    }
    r.u32("level")
}

/// The whole length (prefix included) of a request or reply whose first 4
/// bytes are `prefix`; more than `max` is refused (use
/// [`MAX_NPA_MESSAGE_BYTES`] for requests, [`NPA_REPLY_LEN`] for replies).
pub fn npa_message_len(prefix: [u8; 4], max: usize) -> Result<usize, DecodeError> {
    let len = u32::from_be_bytes(prefix);
    let total = (len as usize).saturating_add(NPA_LENGTH_PREFIX_LEN);
    if total > max {
        return Err(DecodeError::TooLong {
            field: "length",
            len: total as u64,
            max: max as u64,
        });
    }
    if total < 12 {
        return Err(DecodeError::TooShort {
            field: "length",
            len: total as u64,
            min: 12,
        });
    }
    Ok(total)
}

/// Reads the header (length, magic, level, level) and checks it against
/// the whole input.
fn decode_header(r: &mut NdrReader<'_>, total: usize) -> Result<NpaLevel, DecodeError> {
    let prefix = r.take("length", NPA_LENGTH_PREFIX_LEN)?;
    let len = u32::from_be_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]);
    let expected = total - NPA_LENGTH_PREFIX_LEN;
    if len as usize != expected {
        return Err(DecodeError::LengthMismatch {
            field: "length",
            declared: u64::from(len),
            expected: expected as u64,
        });
    }
    let magic = r.take("magic", 4)?;
    if magic != NPA_MAGIC {
        return Err(DecodeError::InvalidValue {
            field: "magic",
            value: u64::from(u32::from_be_bytes([magic[0], magic[1], magic[2], magic[3]])),
        });
    }
    let level = r.u32("level")?;
    let level = NpaLevel::from_u32(level).ok_or(DecodeError::InvalidValue {
        field: "level",
        value: u64::from(level),
    })?;
    let switch = r.u32("info level")?;
    if switch != level.as_u32() {
        return Err(DecodeError::LengthMismatch {
            field: "info level",
            declared: u64::from(switch),
            expected: u64::from(level.as_u32()),
        });
    }
    Ok(level)
}

fn put_header(w: &mut NdrWriter, level: NpaLevel) {
    w.bytes(&[0; NPA_LENGTH_PREFIX_LEN]); // patched with the length at the end
    w.bytes(&NPA_MAGIC);
    w.u32(level.as_u32());
    w.u32(level.as_u32());
}

fn patch_length(mut out: Vec<u8>) -> Result<Vec<u8>, EncodeError> {
    if out.len() > MAX_NPA_MESSAGE_BYTES {
        return Err(EncodeError::MessageTooLong {
            len: out.len(),
            max: MAX_NPA_MESSAGE_BYTES,
        });
    }
    let len = (out.len() - NPA_LENGTH_PREFIX_LEN) as u32;
    out[..NPA_LENGTH_PREFIX_LEN].copy_from_slice(&len.to_be_bytes());
    Ok(out)
}

impl NpaRequest {
    /// The request, length prefix included.
    pub fn encode(&self) -> Result<Vec<u8>, EncodeError> {
        let strings = [
            ("remote_client_name", &self.remote_client_name),
            ("remote_client_addr", &self.remote_client_addr),
            ("local_server_name", &self.local_server_name),
            ("local_server_addr", &self.local_server_addr),
        ];
        for (field, s) in &strings {
            if let Some(s) = s {
                check_string(field, s, MAX_NPA_STRING_BYTES)?;
            }
        }
        let mut w = NdrWriter::new(0);
        put_header(&mut w, self.level);
        w.align(4);
        w.u8(self.transport);
        w.unique_ptr(self.remote_client_name.is_some());
        w.unique_ptr(self.remote_client_addr.is_some());
        w.u16(self.remote_client_port);
        w.unique_ptr(self.local_server_name.is_some());
        w.unique_ptr(self.local_server_addr.is_some());
        w.u16(self.local_server_port);
        w.unique_ptr(self.session_info.is_some());
        for (field, s) in &strings {
            if let Some(s) = s {
                w.string(field, s, MAX_NPA_STRING_BYTES)?;
            }
        }
        if let Some(si) = &self.session_info {
            si.encode_into(&mut w, self.level)?;
        }
        patch_length(w.into_bytes())
    }

    /// Decodes a whole request (length prefix included, nothing after it).
    /// A level other than 7 or 8 is `InvalidValue { field: "level" }`
    /// ([`npa_message_level`] reads it alone).
    pub fn decode(buf: &[u8]) -> Result<NpaRequest, DecodeError> {
        if buf.len() > MAX_NPA_MESSAGE_BYTES {
            return Err(DecodeError::TooLong {
                field: "length",
                len: buf.len() as u64,
                max: MAX_NPA_MESSAGE_BYTES as u64,
            });
        }
        let mut r = NdrReader::new(buf);
        let level = decode_header(&mut r, buf.len())?;
        r.align("info", 4)?;
        let transport = r.u8("transport")?;
        let has_rcn = r.unique_ptr("remote_client_name")?;
        let has_rca = r.unique_ptr("remote_client_addr")?;
        let remote_client_port = r.u16("remote_client_port")?;
        let has_lsn = r.unique_ptr("local_server_name")?;
        let has_lsa = r.unique_ptr("local_server_addr")?;
        let local_server_port = r.u16("local_server_port")?;
        let has_session = r.unique_ptr("session_info")?;
        let mut string = |present: bool, field| -> Result<Option<String>, DecodeError> {
            if present {
                r.string(field, MAX_NPA_STRING_BYTES).map(Some)
            } else {
                Ok(None)
            }
        };
        let remote_client_name = string(has_rcn, "remote_client_name")?;
        let remote_client_addr = string(has_rca, "remote_client_addr")?;
        let local_server_name = string(has_lsn, "local_server_name")?;
        let local_server_addr = string(has_lsa, "local_server_addr")?;
        let session_info = if has_session {
            Some(SessionInfoTransport::decode_from(&mut r, level)?)
        } else {
            None
        };
        finish(&r)?;
        Ok(NpaRequest {
            level,
            transport,
            remote_client_name,
            remote_client_addr,
            remote_client_port,
            local_server_name,
            local_server_addr,
            local_server_port,
            session_info,
        })
    }
}

/// The handshake's reply, `named_pipe_auth_rep` at level 7 or 8.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NpaReply {
    /// The level (the request's).
    pub level: NpaLevel,
    /// [`FILE_TYPE_MESSAGE_MODE`] or [`FILE_TYPE_BYTE_MODE`].
    pub file_type: u16,
    /// Device state ([`DEVICE_STATE_DEFAULT`]).
    pub device_state: u16,
    /// Allocation size ([`ALLOCATION_SIZE_DEFAULT`]).
    pub allocation_size: u64,
    /// The open's status: success, or why the pipe is not open.
    pub status: NtStatus,
}

impl NpaReply {
    /// What Samba's RPC servers answer to a good request: message mode,
    /// `0x05ff`, 4096, success.
    pub fn success(level: NpaLevel) -> NpaReply {
        NpaReply {
            level,
            file_type: FILE_TYPE_MESSAGE_MODE,
            device_state: DEVICE_STATE_DEFAULT,
            allocation_size: ALLOCATION_SIZE_DEFAULT,
            status: NtStatus::SUCCESS,
        }
    }

    /// A refusal with `status` (the other fields as in [`NpaReply::success`]).
    pub fn error(level: NpaLevel, status: NtStatus) -> NpaReply {
        NpaReply {
            status,
            ..NpaReply::success(level)
        }
    }

    /// The 36-byte reply.
    pub fn encode(&self) -> [u8; NPA_REPLY_LEN] {
        let mut w = NdrWriter::new(0);
        put_header(&mut w, self.level);
        w.u16(self.file_type);
        w.u16(self.device_state);
        w.hyper(self.allocation_size);
        w.u32(self.status.raw());
        let mut out = [0u8; NPA_REPLY_LEN];
        let bytes = w.into_bytes();
        out.copy_from_slice(&bytes);
        out[..4].copy_from_slice(&((NPA_REPLY_LEN - NPA_LENGTH_PREFIX_LEN) as u32).to_be_bytes());
        out
    }

    /// Decodes a whole reply (length prefix included, nothing after it).
    pub fn decode(buf: &[u8]) -> Result<NpaReply, DecodeError> {
        if buf.len() > NPA_REPLY_LEN {
            return Err(DecodeError::TooLong {
                field: "length",
                len: buf.len() as u64,
                max: NPA_REPLY_LEN as u64,
            });
        }
        let mut r = NdrReader::new(buf);
        let level = decode_header(&mut r, buf.len())?;
        let file_type = r.u16("file_type")?;
        let device_state = r.u16("device_state")?;
        let allocation_size = r.hyper("allocation_size")?;
        let status = NtStatus(r.u32("status")?);
        finish(&r)?;
        Ok(NpaReply {
            level,
            file_type,
            device_state,
            allocation_size,
            status,
        })
    }
}

/// Reads one whole request or reply (length prefix, then the rest) from a
/// blocking reader; a declared length over `max` is refused before reading
/// the rest.
pub fn read_npa_message<R: Read>(r: &mut R, max: usize) -> io::Result<Vec<u8>> {
    let mut prefix = [0u8; NPA_LENGTH_PREFIX_LEN];
    r.read_exact(&mut prefix)?;
    let total =
        npa_message_len(prefix, max).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    let mut buf = vec![0u8; total];
    buf[..NPA_LENGTH_PREFIX_LEN].copy_from_slice(&prefix);
    r.read_exact(&mut buf[NPA_LENGTH_PREFIX_LEN..])?;
    Ok(buf)
}
