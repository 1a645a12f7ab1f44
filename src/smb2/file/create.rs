//! CREATE (MS-SMB2 2.2.13, 2.2.14) and CLOSE (2.2.15, 2.2.16): opening a
//! pipe and closing it.

use super::shared::FileId;
use crate::protocol::error::{DecodeError, EncodeError};
use crate::smb2::header::HEADER_LEN;
use crate::smb2::wire::{
    len_u16, len_u32, slice_at, string_to_utf16, utf16_to_string, Reader, Writer,
};

/// The most bytes of a CREATE name (UTF-16).
pub const MAX_CREATE_NAME: usize = 1024;
/// The most bytes of CREATE contexts kept.
pub const MAX_CREATE_CONTEXTS: usize = 4096;

/// A CREATE request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CreateRequest {
    /// SecurityFlags.
    pub security_flags: u8,
    /// RequestedOplockLevel.
    pub requested_oplock_level: u8,
    /// ImpersonationLevel.
    pub impersonation_level: u32,
    /// SmbCreateFlags.
    pub smb_create_flags: u64,
    /// DesiredAccess.
    pub desired_access: u32,
    /// FileAttributes.
    pub file_attributes: u32,
    /// ShareAccess.
    pub share_access: u32,
    /// CreateDisposition.
    pub create_disposition: u32,
    /// CreateOptions.
    pub create_options: u32,
    /// The name (for a pipe: `srvsvc`, no leading backslash).
    pub name: String,
    /// The create contexts, raw.
    pub create_contexts: Vec<u8>,
}

impl CreateRequest {
    pub(crate) fn decode(msg: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::at(msg, HEADER_LEN);
        r.structure_size(57)?;
        let security_flags = r.u8("SecurityFlags")?;
        let requested_oplock_level = r.u8("RequestedOplockLevel")?;
        let impersonation_level = r.u32("ImpersonationLevel")?;
        let smb_create_flags = r.u64("SmbCreateFlags")?;
        let _reserved = r.u64("Reserved")?;
        let desired_access = r.u32("DesiredAccess")?;
        let file_attributes = r.u32("FileAttributes")?;
        let share_access = r.u32("ShareAccess")?;
        let create_disposition = r.u32("CreateDisposition")?;
        let create_options = r.u32("CreateOptions")?;
        let name_off = r.u16("NameOffset")?;
        let name_len = r.u16("NameLength")?;
        let ctx_off = r.u32("CreateContextsOffset")?;
        let ctx_len = r.u32("CreateContextsLength")?;
        let name = slice_at(
            msg,
            "Name",
            usize::from(name_off),
            usize::from(name_len),
            MAX_CREATE_NAME,
        )?;
        let ctx = slice_at(
            msg,
            "CreateContexts",
            ctx_off as usize,
            ctx_len as usize,
            MAX_CREATE_CONTEXTS,
        )?;
        Ok(CreateRequest {
            security_flags,
            requested_oplock_level,
            impersonation_level,
            smb_create_flags,
            desired_access,
            file_attributes,
            share_access,
            create_disposition,
            create_options,
            name: utf16_to_string("Name", name)?,
            create_contexts: ctx.to_vec(),
        })
    }

    pub(crate) fn write(&self, w: &mut Writer) -> Result<(), EncodeError> {
        let name = string_to_utf16(&self.name);
        if name.len() > MAX_CREATE_NAME {
            return Err(EncodeError::StringTooLong {
                field: "Name",
                len: name.len(),
                max: MAX_CREATE_NAME,
            });
        }
        if self.create_contexts.len() > MAX_CREATE_CONTEXTS {
            return Err(EncodeError::MessageTooLong {
                len: self.create_contexts.len(),
                max: MAX_CREATE_CONTEXTS,
            });
        }
        w.u16(57);
        w.u8(self.security_flags);
        w.u8(self.requested_oplock_level);
        w.u32(self.impersonation_level);
        w.u64(self.smb_create_flags);
        w.u64(0);
        w.u32(self.desired_access);
        w.u32(self.file_attributes);
        w.u32(self.share_access);
        w.u32(self.create_disposition);
        w.u32(self.create_options);
        let name_at = w.len();
        w.u16(0);
        w.u16(len_u16("NameLength", name.len())?);
        let ctx_at = w.len();
        w.u32(0);
        w.u32(len_u32("CreateContextsLength", self.create_contexts.len())?);
        w.patch_u16(name_at, len_u16("NameOffset", w.len())?);
        w.bytes(&name);
        if !self.create_contexts.is_empty() {
            w.align(8);
            w.patch_u32(ctx_at, len_u32("CreateContextsOffset", w.len())?);
            w.bytes(&self.create_contexts);
        } else if name.is_empty() {
            w.u8(0);
        }
        Ok(())
    }
}

/// A CREATE response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CreateResponse {
    /// OplockLevel.
    pub oplock_level: u8,
    /// Flags.
    pub flags: u8,
    /// CreateAction.
    pub create_action: u32,
    /// CreationTime.
    pub creation_time: u64,
    /// LastAccessTime.
    pub last_access_time: u64,
    /// LastWriteTime.
    pub last_write_time: u64,
    /// ChangeTime.
    pub change_time: u64,
    /// AllocationSize.
    pub allocation_size: u64,
    /// EndofFile.
    pub end_of_file: u64,
    /// FileAttributes.
    pub file_attributes: u32,
    /// FileId.
    pub file_id: FileId,
    /// The create contexts, raw.
    pub create_contexts: Vec<u8>,
}

impl CreateResponse {
    pub(crate) fn decode(msg: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::at(msg, HEADER_LEN);
        r.structure_size(89)?;
        let oplock_level = r.u8("OplockLevel")?;
        let flags = r.u8("Flags")?;
        let create_action = r.u32("CreateAction")?;
        let creation_time = r.u64("CreationTime")?;
        let last_access_time = r.u64("LastAccessTime")?;
        let last_write_time = r.u64("LastWriteTime")?;
        let change_time = r.u64("ChangeTime")?;
        let allocation_size = r.u64("AllocationSize")?;
        let end_of_file = r.u64("EndofFile")?;
        let file_attributes = r.u32("FileAttributes")?;
        let _reserved = r.u32("Reserved2")?;
        let file_id = FileId::read(&mut r)?;
        let ctx_off = r.u32("CreateContextsOffset")?;
        let ctx_len = r.u32("CreateContextsLength")?;
        let ctx = slice_at(
            msg,
            "CreateContexts",
            ctx_off as usize,
            ctx_len as usize,
            MAX_CREATE_CONTEXTS,
        )?;
        Ok(CreateResponse {
            oplock_level,
            flags,
            create_action,
            creation_time,
            last_access_time,
            last_write_time,
            change_time,
            allocation_size,
            end_of_file,
            file_attributes,
            file_id,
            create_contexts: ctx.to_vec(),
        })
    }

    pub(crate) fn write(&self, w: &mut Writer) -> Result<(), EncodeError> {
        w.u16(89);
        w.u8(self.oplock_level);
        w.u8(self.flags);
        w.u32(self.create_action);
        w.u64(self.creation_time);
        w.u64(self.last_access_time);
        w.u64(self.last_write_time);
        w.u64(self.change_time);
        w.u64(self.allocation_size);
        w.u64(self.end_of_file);
        w.u32(self.file_attributes);
        w.u32(0);
        self.file_id.write(w);
        if self.create_contexts.is_empty() {
            w.u32(0);
            w.u32(0);
        } else {
            w.u32(len_u32("CreateContextsOffset", w.len() + 8)?);
            w.u32(len_u32("CreateContextsLength", self.create_contexts.len())?);
            w.bytes(&self.create_contexts);
        }
        Ok(())
    }
}

/// A CLOSE request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CloseRequest {
    /// Flags (SMB2_CLOSE_FLAG_POSTQUERY_ATTRIB).
    pub flags: u16,
    /// FileId.
    pub file_id: FileId,
}

impl CloseRequest {
    pub(crate) fn decode(msg: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::at(msg, HEADER_LEN);
        r.structure_size(24)?;
        let flags = r.u16("Flags")?;
        let _reserved = r.u32("Reserved")?;
        Ok(CloseRequest {
            flags,
            file_id: FileId::read(&mut r)?,
        })
    }

    pub(crate) fn write(&self, w: &mut Writer) {
        w.u16(24);
        w.u16(self.flags);
        w.u32(0);
        self.file_id.write(w);
    }
}

/// A CLOSE response (the attributes are zero for a pipe unless asked).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CloseResponse {
    /// Flags.
    pub flags: u16,
    /// CreationTime.
    pub creation_time: u64,
    /// LastAccessTime.
    pub last_access_time: u64,
    /// LastWriteTime.
    pub last_write_time: u64,
    /// ChangeTime.
    pub change_time: u64,
    /// AllocationSize.
    pub allocation_size: u64,
    /// EndofFile.
    pub end_of_file: u64,
    /// FileAttributes.
    pub file_attributes: u32,
}

impl CloseResponse {
    pub(crate) fn decode(msg: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::at(msg, HEADER_LEN);
        r.structure_size(60)?;
        let flags = r.u16("Flags")?;
        let _reserved = r.u32("Reserved")?;
        Ok(CloseResponse {
            flags,
            creation_time: r.u64("CreationTime")?,
            last_access_time: r.u64("LastAccessTime")?,
            last_write_time: r.u64("LastWriteTime")?,
            change_time: r.u64("ChangeTime")?,
            allocation_size: r.u64("AllocationSize")?,
            end_of_file: r.u64("EndofFile")?,
            file_attributes: r.u32("FileAttributes")?,
        })
    }

    pub(crate) fn write(&self, w: &mut Writer) {
        w.u16(60);
        w.u16(self.flags);
        w.u32(0);
        w.u64(self.creation_time);
        w.u64(self.last_access_time);
        w.u64(self.last_write_time);
        w.u64(self.change_time);
        w.u64(self.allocation_size);
        w.u64(self.end_of_file);
        w.u32(self.file_attributes);
    }
}
