//! SESSION_SETUP (MS-SMB2 2.2.5, 2.2.6) and TREE_CONNECT (2.2.9, 2.2.10).

use super::header::HEADER_LEN;
use super::negotiate::security_buffer;
use super::wire::{len_u16, slice_at, string_to_utf16, utf16_to_string, Reader, Writer};
use crate::protocol::error::{DecodeError, EncodeError};

/// SessionFlags: a guest session.
pub const SESSION_FLAG_IS_GUEST: u16 = 0x0001;
/// SessionFlags: an anonymous session.
pub const SESSION_FLAG_IS_NULL: u16 = 0x0002;

/// The most bytes of a tree-connect path (UTF-16) accepted here.
pub const MAX_TREE_PATH: usize = 1024;

/// ShareType: a named-pipe share (IPC$).
pub const SHARE_TYPE_PIPE: u8 = 0x02;

/// A SESSION_SETUP request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionSetupRequest {
    /// Flags (SMB2_SESSION_FLAG_BINDING).
    pub flags: u8,
    /// SecurityMode.
    pub security_mode: u8,
    /// Capabilities.
    pub capabilities: u32,
    /// Channel.
    pub channel: u32,
    /// PreviousSessionId.
    pub previous_session_id: u64,
    /// The SPNEGO token.
    pub security_buffer: Vec<u8>,
}

impl SessionSetupRequest {
    pub(crate) fn decode(msg: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::at(msg, HEADER_LEN);
        r.structure_size(25)?;
        let flags = r.u8("Flags")?;
        let security_mode = r.u8("SecurityMode")?;
        let capabilities = r.u32("Capabilities")?;
        let channel = r.u32("Channel")?;
        let off = r.u16("SecurityBufferOffset")?;
        let len = r.u16("SecurityBufferLength")?;
        let previous_session_id = r.u64("PreviousSessionId")?;
        let security_buffer = security_buffer(msg, off, len)?;
        Ok(SessionSetupRequest {
            flags,
            security_mode,
            capabilities,
            channel,
            previous_session_id,
            security_buffer,
        })
    }

    pub(crate) fn write(&self, w: &mut Writer) -> Result<(), EncodeError> {
        w.u16(25);
        w.u8(self.flags);
        w.u8(self.security_mode);
        w.u32(self.capabilities);
        w.u32(self.channel);
        w.u16(len_u16("SecurityBufferOffset", w.len() + 12)?);
        w.u16(len_u16("SecurityBufferLength", self.security_buffer.len())?);
        w.u64(self.previous_session_id);
        w.variable(&self.security_buffer);
        Ok(())
    }
}

/// A SESSION_SETUP response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionSetupResponse {
    /// SessionFlags.
    pub session_flags: u16,
    /// The SPNEGO token.
    pub security_buffer: Vec<u8>,
}

impl SessionSetupResponse {
    pub(crate) fn decode(msg: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::at(msg, HEADER_LEN);
        r.structure_size(9)?;
        let session_flags = r.u16("SessionFlags")?;
        let off = r.u16("SecurityBufferOffset")?;
        let len = r.u16("SecurityBufferLength")?;
        let security_buffer = security_buffer(msg, off, len)?;
        Ok(SessionSetupResponse {
            session_flags,
            security_buffer,
        })
    }

    pub(crate) fn write(&self, w: &mut Writer) -> Result<(), EncodeError> {
        w.u16(9);
        w.u16(self.session_flags);
        w.u16(len_u16("SecurityBufferOffset", w.len() + 4)?);
        w.u16(len_u16("SecurityBufferLength", self.security_buffer.len())?);
        w.variable(&self.security_buffer);
        Ok(())
    }
}

/// A TREE_CONNECT request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TreeConnectRequest {
    /// Flags (3.1.1) / Reserved.
    pub flags: u16,
    /// The share path, `\\server\share`.
    pub path: String,
}

impl TreeConnectRequest {
    /// The share name: what follows the last backslash, as the server
    /// compares it (case-insensitively).
    pub fn share(&self) -> &str {
        self.path.rsplit('\\').next().unwrap_or(&self.path)
    }

    pub(crate) fn decode(msg: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::at(msg, HEADER_LEN);
        r.structure_size(9)?;
        let flags = r.u16("Flags")?;
        let off = r.u16("PathOffset")?;
        let len = r.u16("PathLength")?;
        let raw = slice_at(
            msg,
            "PathName",
            usize::from(off),
            usize::from(len),
            MAX_TREE_PATH,
        )?;
        Ok(TreeConnectRequest {
            flags,
            path: utf16_to_string("PathName", raw)?,
        })
    }

    pub(crate) fn write(&self, w: &mut Writer) -> Result<(), EncodeError> {
        let path = string_to_utf16(&self.path);
        if path.len() > MAX_TREE_PATH {
            return Err(EncodeError::StringTooLong {
                field: "PathName",
                len: path.len(),
                max: MAX_TREE_PATH,
            });
        }
        w.u16(9);
        w.u16(self.flags);
        w.u16(len_u16("PathOffset", w.len() + 4)?);
        w.u16(len_u16("PathLength", path.len())?);
        w.variable(&path);
        Ok(())
    }
}

/// A TREE_CONNECT response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TreeConnectResponse {
    /// ShareType.
    pub share_type: u8,
    /// ShareFlags.
    pub share_flags: u32,
    /// Capabilities.
    pub capabilities: u32,
    /// MaximalAccess.
    pub maximal_access: u32,
}

impl TreeConnectResponse {
    pub(crate) fn decode(msg: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::at(msg, HEADER_LEN);
        r.structure_size(16)?;
        let share_type = r.u8("ShareType")?;
        let _reserved = r.u8("Reserved")?;
        Ok(TreeConnectResponse {
            share_type,
            share_flags: r.u32("ShareFlags")?,
            capabilities: r.u32("Capabilities")?,
            maximal_access: r.u32("MaximalAccess")?,
        })
    }

    pub(crate) fn write(&self, w: &mut Writer) {
        w.u16(16);
        w.u8(self.share_type);
        w.u8(0);
        w.u32(self.share_flags);
        w.u32(self.capabilities);
        w.u32(self.maximal_access);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn share_name() {
        let t = TreeConnectRequest {
            flags: 0,
            path: r"\\127.0.0.1\IPC$".into(),
        };
        assert_eq!(t.share(), "IPC$");
        let t = TreeConnectRequest {
            flags: 0,
            path: "IPC$".into(),
        };
        assert_eq!(t.share(), "IPC$");
    }
}
