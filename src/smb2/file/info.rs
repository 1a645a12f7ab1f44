//! QUERY_INFO (MS-SMB2 2.2.37, 2.2.38) and SET_INFO (2.2.39, 2.2.40): the
//! information classes of an open.

use super::shared::{FileId, MAX_DATA};
use crate::protocol::error::{DecodeError, EncodeError};
use crate::smb2::header::HEADER_LEN;
use crate::smb2::wire::{len_u16, len_u32, slice_at, Reader, Writer};

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
