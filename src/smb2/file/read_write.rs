//! READ (MS-SMB2 2.2.19, 2.2.20) and WRITE (2.2.21, 2.2.22): the data
//! requests on an open pipe.

use super::shared::{FileId, MAX_DATA};
use crate::protocol::error::{DecodeError, EncodeError};
use crate::smb2::header::HEADER_LEN;
use crate::smb2::wire::{len_u16, len_u32, slice_at, Reader, Writer};

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
