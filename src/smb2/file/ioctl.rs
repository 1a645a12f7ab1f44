//! IOCTL (MS-SMB2 2.2.31, 2.2.32): the pipe FSCTLs (peek, transceive,
//! wait) and the layout of their input and output buffers.

use super::shared::{FileId, MAX_DATA};
use crate::protocol::error::{DecodeError, EncodeError};
use crate::smb2::header::HEADER_LEN;
use crate::smb2::wire::{len_u32, slice_at, Reader, Writer};

/// FSCTL_PIPE_PEEK.
pub const FSCTL_PIPE_PEEK: u32 = 0x0011_400C;
/// FSCTL_PIPE_TRANSCEIVE.
pub const FSCTL_PIPE_TRANSCEIVE: u32 = 0x0011_C017;
/// FSCTL_PIPE_WAIT.
pub const FSCTL_PIPE_WAIT: u32 = 0x0011_0018;
/// IOCTL Flags: SMB2_0_IOCTL_IS_FSCTL.
pub const IOCTL_IS_FSCTL: u32 = 0x0000_0001;

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
