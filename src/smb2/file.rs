//! The requests on an open: CREATE (MS-SMB2 2.2.13, 2.2.14), CLOSE (2.2.15,
//! 2.2.16), READ (2.2.19, 2.2.20), WRITE (2.2.21, 2.2.22), IOCTL (2.2.31,
//! 2.2.32), QUERY_INFO (2.2.37, 2.2.38) and SET_INFO (2.2.39, 2.2.40).

use super::header::HEADER_LEN;
use super::wire::{len_u16, len_u32, slice_at, string_to_utf16, utf16_to_string, Reader, Writer};
use crate::protocol::error::{DecodeError, EncodeError};

/// The most bytes of a CREATE name (UTF-16).
pub const MAX_CREATE_NAME: usize = 1024;
/// The most bytes of CREATE contexts kept.
pub const MAX_CREATE_CONTEXTS: usize = 4096;
/// The most payload bytes of a READ, WRITE, IOCTL or QUERY_INFO buffer the
/// codec accepts (the server announces less).
pub const MAX_DATA: usize = 8 * 1024 * 1024;

/// FSCTL_PIPE_PEEK.
pub const FSCTL_PIPE_PEEK: u32 = 0x0011_400C;
/// FSCTL_PIPE_TRANSCEIVE.
pub const FSCTL_PIPE_TRANSCEIVE: u32 = 0x0011_C017;
/// FSCTL_PIPE_WAIT.
pub const FSCTL_PIPE_WAIT: u32 = 0x0011_0018;
/// IOCTL Flags: SMB2_0_IOCTL_IS_FSCTL.
pub const IOCTL_IS_FSCTL: u32 = 0x0000_0001;

/// An SMB2 FileId.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FileId {
    /// Persistent.
    pub persistent: u64,
    /// Volatile.
    pub volatile: u64,
}

impl FileId {
    /// The all-ones id of a related compound part ("the file of the part before").
    pub const RELATED: FileId = FileId {
        persistent: u64::MAX,
        volatile: u64::MAX,
    };

    fn read(r: &mut Reader<'_>) -> Result<FileId, DecodeError> {
        Ok(FileId {
            persistent: r.u64("FileId.Persistent")?,
            volatile: r.u64("FileId.Volatile")?,
        })
    }

    fn write(&self, w: &mut Writer) {
        w.u64(self.persistent);
        w.u64(self.volatile);
    }
}

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

/// A READ request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadRequest {
    /// Padding (the data offset the client wants in the response).
    pub padding: u8,
    /// Flags.
    pub flags: u8,
    /// Length.
    pub length: u32,
    /// Offset.
    pub offset: u64,
    /// FileId.
    pub file_id: FileId,
    /// MinimumCount.
    pub minimum_count: u32,
    /// Channel.
    pub channel: u32,
    /// RemainingBytes.
    pub remaining_bytes: u32,
}

impl ReadRequest {
    pub(crate) fn decode(msg: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::at(msg, HEADER_LEN);
        r.structure_size(49)?;
        let padding = r.u8("Padding")?;
        let flags = r.u8("Flags")?;
        let length = r.u32("Length")?;
        let offset = r.u64("Offset")?;
        let file_id = FileId::read(&mut r)?;
        let minimum_count = r.u32("MinimumCount")?;
        let channel = r.u32("Channel")?;
        let remaining_bytes = r.u32("RemainingBytes")?;
        let _ci_off = r.u16("ReadChannelInfoOffset")?;
        let _ci_len = r.u16("ReadChannelInfoLength")?;
        Ok(ReadRequest {
            padding,
            flags,
            length,
            offset,
            file_id,
            minimum_count,
            channel,
            remaining_bytes,
        })
    }

    pub(crate) fn write(&self, w: &mut Writer) {
        w.u16(49);
        w.u8(self.padding);
        w.u8(self.flags);
        w.u32(self.length);
        w.u64(self.offset);
        self.file_id.write(w);
        w.u32(self.minimum_count);
        w.u32(self.channel);
        w.u32(self.remaining_bytes);
        w.u16(0);
        w.u16(0);
        w.u8(0);
    }
}

/// A READ response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadResponse {
    /// DataRemaining.
    pub data_remaining: u32,
    /// The data.
    pub data: Vec<u8>,
}

impl ReadResponse {
    pub(crate) fn decode(msg: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::at(msg, HEADER_LEN);
        r.structure_size(17)?;
        let off = r.u8("DataOffset")?;
        let _reserved = r.u8("Reserved")?;
        let len = r.u32("DataLength")?;
        let data_remaining = r.u32("DataRemaining")?;
        let _reserved2 = r.u32("Reserved2")?;
        let data = slice_at(msg, "Buffer", usize::from(off), len as usize, MAX_DATA)?;
        Ok(ReadResponse {
            data_remaining,
            data: data.to_vec(),
        })
    }

    pub(crate) fn write(&self, w: &mut Writer) -> Result<(), EncodeError> {
        w.u16(17);
        w.u8(80);
        w.u8(0);
        w.u32(len_u32("DataLength", self.data.len())?);
        w.u32(self.data_remaining);
        w.u32(0);
        w.variable(&self.data);
        Ok(())
    }
}

/// A WRITE request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WriteRequest {
    /// Offset.
    pub offset: u64,
    /// FileId.
    pub file_id: FileId,
    /// Channel.
    pub channel: u32,
    /// RemainingBytes.
    pub remaining_bytes: u32,
    /// Flags.
    pub flags: u32,
    /// The data.
    pub data: Vec<u8>,
}

impl WriteRequest {
    pub(crate) fn decode(msg: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::at(msg, HEADER_LEN);
        r.structure_size(49)?;
        let off = r.u16("DataOffset")?;
        let len = r.u32("Length")?;
        let offset = r.u64("Offset")?;
        let file_id = FileId::read(&mut r)?;
        let channel = r.u32("Channel")?;
        let remaining_bytes = r.u32("RemainingBytes")?;
        let _ci_off = r.u16("WriteChannelInfoOffset")?;
        let _ci_len = r.u16("WriteChannelInfoLength")?;
        let flags = r.u32("Flags")?;
        let data = slice_at(msg, "Buffer", usize::from(off), len as usize, MAX_DATA)?;
        Ok(WriteRequest {
            offset,
            file_id,
            channel,
            remaining_bytes,
            flags,
            data: data.to_vec(),
        })
    }

    pub(crate) fn write(&self, w: &mut Writer) -> Result<(), EncodeError> {
        w.u16(49);
        w.u16(len_u16("DataOffset", w.len() + 46)?);
        w.u32(len_u32("Length", self.data.len())?);
        w.u64(self.offset);
        self.file_id.write(w);
        w.u32(self.channel);
        w.u32(self.remaining_bytes);
        w.u16(0);
        w.u16(0);
        w.u32(self.flags);
        w.variable(&self.data);
        Ok(())
    }
}

/// A WRITE response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WriteResponse {
    /// Count.
    pub count: u32,
}

impl WriteResponse {
    pub(crate) fn decode(msg: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::at(msg, HEADER_LEN);
        r.structure_size(17)?;
        let _reserved = r.u16("Reserved")?;
        Ok(WriteResponse {
            count: r.u32("Count")?,
        })
    }

    pub(crate) fn write(&self, w: &mut Writer) {
        w.u16(17);
        w.u16(0);
        w.u32(self.count);
        w.u32(0);
        w.u16(0);
        w.u16(0);
    }
}

/// Where an IOCTL's output buffer goes when its input buffer starts at
/// `buf_at`: there too when there is no input, else at the first 8-byte
/// boundary after the input.
fn ioctl_output_at(buf_at: usize, input: &[u8]) -> usize {
    if input.is_empty() {
        buf_at
    } else {
        (buf_at + input.len()).div_ceil(8) * 8
    }
}

/// Writes an IOCTL's buffers: the input, then the output 8-byte aligned
/// (the layout `ioctl_output_at` gives the offsets of).
fn write_ioctl_buffers(w: &mut Writer, input: &[u8], output: &[u8]) {
    w.bytes(input);
    if !output.is_empty() {
        w.align(8);
        w.bytes(output);
    }
}

/// Reads an IOCTL's input and output buffers from their (offset, count).
fn read_ioctl_buffers(
    msg: &[u8],
    (in_off, in_len): (u32, u32),
    (out_off, out_len): (u32, u32),
) -> Result<(Vec<u8>, Vec<u8>), DecodeError> {
    let input = slice_at(msg, "Input", in_off as usize, in_len as usize, MAX_DATA)?;
    let output = slice_at(msg, "Output", out_off as usize, out_len as usize, MAX_DATA)?;
    Ok((input.to_vec(), output.to_vec()))
}

/// An IOCTL request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IoctlRequest {
    /// CtlCode.
    pub ctl_code: u32,
    /// FileId.
    pub file_id: FileId,
    /// MaxInputResponse.
    pub max_input_response: u32,
    /// MaxOutputResponse.
    pub max_output_response: u32,
    /// Flags.
    pub flags: u32,
    /// The input buffer.
    pub input: Vec<u8>,
    /// The output buffer (requests seldom carry one).
    pub output: Vec<u8>,
}

impl IoctlRequest {
    pub(crate) fn decode(msg: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::at(msg, HEADER_LEN);
        r.structure_size(57)?;
        let _reserved = r.u16("Reserved")?;
        let ctl_code = r.u32("CtlCode")?;
        let file_id = FileId::read(&mut r)?;
        let in_off = r.u32("InputOffset")?;
        let in_len = r.u32("InputCount")?;
        let max_input_response = r.u32("MaxInputResponse")?;
        let out_off = r.u32("OutputOffset")?;
        let out_len = r.u32("OutputCount")?;
        let max_output_response = r.u32("MaxOutputResponse")?;
        let flags = r.u32("Flags")?;
        let _reserved2 = r.u32("Reserved2")?;
        let (input, output) = read_ioctl_buffers(msg, (in_off, in_len), (out_off, out_len))?;
        Ok(IoctlRequest {
            ctl_code,
            file_id,
            max_input_response,
            max_output_response,
            flags,
            input,
            output,
        })
    }

    pub(crate) fn write(&self, w: &mut Writer) -> Result<(), EncodeError> {
        w.u16(57);
        w.u16(0);
        w.u32(self.ctl_code);
        self.file_id.write(w);
        let buf_at = w.len() + 32;
        let out_at = ioctl_output_at(buf_at, &self.input);
        w.u32(len_u32("InputOffset", buf_at)?);
        w.u32(len_u32("InputCount", self.input.len())?);
        w.u32(self.max_input_response);
        w.u32(len_u32(
            "OutputOffset",
            if self.output.is_empty() {
                buf_at
            } else {
                out_at
            },
        )?);
        w.u32(len_u32("OutputCount", self.output.len())?);
        w.u32(self.max_output_response);
        w.u32(self.flags);
        w.u32(0);
        write_ioctl_buffers(w, &self.input, &self.output);
        Ok(())
    }
}

/// An IOCTL response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IoctlResponse {
    /// CtlCode.
    pub ctl_code: u32,
    /// FileId.
    pub file_id: FileId,
    /// Flags.
    pub flags: u32,
    /// The input buffer echoed (empty for pipes).
    pub input: Vec<u8>,
    /// The output buffer.
    pub output: Vec<u8>,
}

impl IoctlResponse {
    pub(crate) fn decode(msg: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::at(msg, HEADER_LEN);
        r.structure_size(49)?;
        let _reserved = r.u16("Reserved")?;
        let ctl_code = r.u32("CtlCode")?;
        let file_id = FileId::read(&mut r)?;
        let in_off = r.u32("InputOffset")?;
        let in_len = r.u32("InputCount")?;
        let out_off = r.u32("OutputOffset")?;
        let out_len = r.u32("OutputCount")?;
        let flags = r.u32("Flags")?;
        let _reserved2 = r.u32("Reserved2")?;
        let (input, output) = read_ioctl_buffers(msg, (in_off, in_len), (out_off, out_len))?;
        Ok(IoctlResponse {
            ctl_code,
            file_id,
            flags,
            input,
            output,
        })
    }

    pub(crate) fn write(&self, w: &mut Writer) -> Result<(), EncodeError> {
        w.u16(49);
        w.u16(0);
        w.u32(self.ctl_code);
        self.file_id.write(w);
        let buf_at = w.len() + 24;
        let out_at = ioctl_output_at(buf_at, &self.input);
        w.u32(len_u32("InputOffset", buf_at)?);
        w.u32(len_u32("InputCount", self.input.len())?);
        w.u32(len_u32("OutputOffset", out_at)?);
        w.u32(len_u32("OutputCount", self.output.len())?);
        w.u32(self.flags);
        w.u32(0);
        write_ioctl_buffers(w, &self.input, &self.output);
        Ok(())
    }
}

/// A QUERY_INFO request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueryInfoRequest {
    /// InfoType (1 = file, 2 = filesystem, 3 = security, 4 = quota).
    pub info_type: u8,
    /// FileInfoClass.
    pub file_info_class: u8,
    /// OutputBufferLength.
    pub output_buffer_length: u32,
    /// AdditionalInformation.
    pub additional_information: u32,
    /// Flags.
    pub flags: u32,
    /// FileId.
    pub file_id: FileId,
    /// The input buffer.
    pub input: Vec<u8>,
}

impl QueryInfoRequest {
    pub(crate) fn decode(msg: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::at(msg, HEADER_LEN);
        r.structure_size(41)?;
        let info_type = r.u8("InfoType")?;
        let file_info_class = r.u8("FileInfoClass")?;
        let output_buffer_length = r.u32("OutputBufferLength")?;
        let in_off = r.u16("InputBufferOffset")?;
        let _reserved = r.u16("Reserved")?;
        let in_len = r.u32("InputBufferLength")?;
        let additional_information = r.u32("AdditionalInformation")?;
        let flags = r.u32("Flags")?;
        let file_id = FileId::read(&mut r)?;
        let input = slice_at(
            msg,
            "Buffer",
            usize::from(in_off),
            in_len as usize,
            MAX_DATA,
        )?;
        Ok(QueryInfoRequest {
            info_type,
            file_info_class,
            output_buffer_length,
            additional_information,
            flags,
            file_id,
            input: input.to_vec(),
        })
    }

    pub(crate) fn write(&self, w: &mut Writer) -> Result<(), EncodeError> {
        w.u16(41);
        w.u8(self.info_type);
        w.u8(self.file_info_class);
        w.u32(self.output_buffer_length);
        let off = if self.input.is_empty() {
            0
        } else {
            w.len() + 32
        };
        w.u16(len_u16("InputBufferOffset", off)?);
        w.u16(0);
        w.u32(len_u32("InputBufferLength", self.input.len())?);
        w.u32(self.additional_information);
        w.u32(self.flags);
        self.file_id.write(w);
        w.variable(&self.input);
        Ok(())
    }
}

/// A QUERY_INFO response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueryInfoResponse {
    /// The output buffer.
    pub output: Vec<u8>,
}

impl QueryInfoResponse {
    pub(crate) fn decode(msg: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::at(msg, HEADER_LEN);
        r.structure_size(9)?;
        let off = r.u16("OutputBufferOffset")?;
        let len = r.u32("OutputBufferLength")?;
        let output = slice_at(msg, "Buffer", usize::from(off), len as usize, MAX_DATA)?;
        Ok(QueryInfoResponse {
            output: output.to_vec(),
        })
    }

    pub(crate) fn write(&self, w: &mut Writer) -> Result<(), EncodeError> {
        w.u16(9);
        w.u16(len_u16("OutputBufferOffset", w.len() + 6)?);
        w.u32(len_u32("OutputBufferLength", self.output.len())?);
        w.variable(&self.output);
        Ok(())
    }
}

/// A SET_INFO request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SetInfoRequest {
    /// InfoType (1 = file).
    pub info_type: u8,
    /// FileInfoClass.
    pub file_info_class: u8,
    /// AdditionalInformation.
    pub additional_information: u32,
    /// FileId.
    pub file_id: FileId,
    /// The buffer.
    pub buffer: Vec<u8>,
}

impl SetInfoRequest {
    pub(crate) fn decode(msg: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::at(msg, HEADER_LEN);
        r.structure_size(33)?;
        let info_type = r.u8("InfoType")?;
        let file_info_class = r.u8("FileInfoClass")?;
        let len = r.u32("BufferLength")?;
        let off = r.u16("BufferOffset")?;
        let _reserved = r.u16("Reserved")?;
        let additional_information = r.u32("AdditionalInformation")?;
        let file_id = FileId::read(&mut r)?;
        let buffer = slice_at(msg, "Buffer", usize::from(off), len as usize, MAX_DATA)?;
        Ok(SetInfoRequest {
            info_type,
            file_info_class,
            additional_information,
            file_id,
            buffer: buffer.to_vec(),
        })
    }

    pub(crate) fn write(&self, w: &mut Writer) -> Result<(), EncodeError> {
        w.u16(33);
        w.u8(self.info_type);
        w.u8(self.file_info_class);
        w.u32(len_u32("BufferLength", self.buffer.len())?);
        w.u16(len_u16("BufferOffset", w.len() + 24)?);
        w.u16(0);
        w.u32(self.additional_information);
        self.file_id.write(w);
        w.variable(&self.buffer);
        Ok(())
    }
}
