//! Bounds-checked little-endian reading and writing shared by the SMB2
//! codec. Every read checks what is left first and fails with
//! [`DecodeError::UnexpectedEnd`]; no read allocates more than the input
//! holds.

use crate::protocol::error::DecodeError;

/// A cursor over one SMB2 message (or one part of a compound), positions
/// counted from the start of its header, as SMB2 offsets are.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// A reader at `pos` in `buf`.
    pub(crate) fn at(buf: &'a [u8], pos: usize) -> Self {
        Reader { buf, pos }
    }

    /// Bytes left after the cursor.
    pub(crate) fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }

    /// The cursor.
    pub(crate) fn pos(&self) -> usize {
        self.pos
    }

    /// The next `n` bytes.
    pub(crate) fn take(&mut self, field: &'static str, n: usize) -> Result<&'a [u8], DecodeError> {
        let rest = self.buf.get(self.pos..).unwrap_or(&[]);
        match rest.get(..n) {
            Some(s) => {
                self.pos += n;
                Ok(s)
            }
            None => Err(DecodeError::UnexpectedEnd {
                field,
                needed: n,
                remaining: rest.len(),
            }),
        }
    }

    fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], DecodeError> {
        let s = self.take(field, N)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    pub(crate) fn u8(&mut self, field: &'static str) -> Result<u8, DecodeError> {
        Ok(self.array::<1>(field)?[0])
    }

    pub(crate) fn u16(&mut self, field: &'static str) -> Result<u16, DecodeError> {
        Ok(u16::from_le_bytes(self.array(field)?))
    }

    pub(crate) fn u32(&mut self, field: &'static str) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(self.array(field)?))
    }

    pub(crate) fn u64(&mut self, field: &'static str) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(self.array(field)?))
    }

    pub(crate) fn bytes16(&mut self, field: &'static str) -> Result<[u8; 16], DecodeError> {
        self.array(field)
    }

    pub(crate) fn bytes8(&mut self, field: &'static str) -> Result<[u8; 8], DecodeError> {
        self.array(field)
    }

    /// A StructureSize field that must be `expected`.
    pub(crate) fn structure_size(&mut self, expected: u16) -> Result<(), DecodeError> {
        let v = self.u16("StructureSize")?;
        if v != expected {
            return Err(DecodeError::InvalidValue {
                field: "StructureSize",
                value: u64::from(v),
            });
        }
        Ok(())
    }
}

/// The `len` bytes at `offset` (from the header start) of `msg`; a zero
/// length is an empty slice whatever the offset (clients send offset 0 or
/// the buffer's position for empty buffers). `max` bounds the length.
pub(crate) fn slice_at<'a>(
    msg: &'a [u8],
    field: &'static str,
    offset: usize,
    len: usize,
    max: usize,
) -> Result<&'a [u8], DecodeError> {
    if len == 0 {
        return Ok(&[]);
    }
    if len > max {
        return Err(DecodeError::TooLong {
            field,
            len: len as u64,
            max: max as u64,
        });
    }
    let end = offset.checked_add(len).ok_or(DecodeError::InvalidValue {
        field,
        value: offset as u64,
    })?;
    match msg.get(offset..end) {
        Some(s) => Ok(s),
        None => Err(DecodeError::UnexpectedEnd {
            field,
            needed: len,
            remaining: msg.len().saturating_sub(offset),
        }),
    }
}

/// Decodes UTF-16LE without a terminator.
pub(crate) fn utf16_to_string(field: &'static str, b: &[u8]) -> Result<String, DecodeError> {
    if b.len() % 2 != 0 {
        return Err(DecodeError::InvalidValue {
            field,
            value: b.len() as u64,
        });
    }
    let units = b.chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]]));
    char::decode_utf16(units)
        .collect::<Result<String, _>>()
        .map_err(|_| DecodeError::InvalidUtf16 { field })
}

/// Encodes UTF-16LE without a terminator.
pub(crate) fn string_to_utf16(s: &str) -> Vec<u8> {
    s.encode_utf16().flat_map(u16::to_le_bytes).collect()
}

/// A little-endian writer; offsets it reports count from the start of its
/// buffer, which the SMB2 encoders start at the header.
#[derive(Debug, Default)]
pub(crate) struct Writer {
    pub(crate) buf: Vec<u8>,
}

impl Writer {
    pub(crate) fn new() -> Self {
        Writer { buf: Vec::new() }
    }

    pub(crate) fn len(&self) -> usize {
        self.buf.len()
    }

    pub(crate) fn u8(&mut self, v: u8) {
        self.buf.push(v);
    }

    pub(crate) fn u16(&mut self, v: u16) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    pub(crate) fn u32(&mut self, v: u32) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    pub(crate) fn u64(&mut self, v: u64) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    pub(crate) fn bytes(&mut self, v: &[u8]) {
        self.buf.extend_from_slice(v);
    }

    /// Writes the variable part of a message: `v`, or one zero byte when
    /// `v` is empty (an odd StructureSize counts one byte of it, MS-SMB2 2.2).
    pub(crate) fn variable(&mut self, v: &[u8]) {
        if v.is_empty() {
            self.u8(0);
        } else {
            self.bytes(v);
        }
    }

    /// Zero bytes up to a multiple of `n`.
    pub(crate) fn align(&mut self, n: usize) {
        while self.buf.len() % n != 0 {
            self.buf.push(0);
        }
    }

    /// Overwrites a u16 written earlier at `at`.
    pub(crate) fn patch_u16(&mut self, at: usize, v: u16) {
        self.buf[at..at + 2].copy_from_slice(&v.to_le_bytes());
    }

    /// Overwrites a u32 written earlier at `at`.
    pub(crate) fn patch_u32(&mut self, at: usize, v: u32) {
        self.buf[at..at + 4].copy_from_slice(&v.to_le_bytes());
    }
}

/// `v` as a u16 length or offset field, or the encode error for `field`.
pub(crate) fn len_u16(
    field: &'static str,
    v: usize,
) -> Result<u16, crate::protocol::error::EncodeError> {
    u16::try_from(v).map_err(|_| crate::protocol::error::EncodeError::StringTooLong {
        field,
        len: v,
        max: usize::from(u16::MAX),
    })
}

/// `v` as a u32 length or offset field.
pub(crate) fn len_u32(
    field: &'static str,
    v: usize,
) -> Result<u32, crate::protocol::error::EncodeError> {
    u32::try_from(v).map_err(|_| crate::protocol::error::EncodeError::StringTooLong {
        field,
        len: v,
        max: u32::MAX as usize,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_are_bounded() {
        let b = [1u8, 2, 3];
        let mut r = Reader::at(&b, 1);
        assert_eq!(r.u16("x"), Ok(0x0302));
        assert_eq!(
            r.u8("y"),
            Err(DecodeError::UnexpectedEnd {
                field: "y",
                needed: 1,
                remaining: 0
            })
        );
        let mut r = Reader::at(&b, 7);
        assert_eq!(r.remaining(), 0);
        assert!(r.u8("z").is_err());
    }

    #[test]
    fn the_variable_part_is_never_empty() {
        let mut w = Writer::new();
        w.variable(&[]);
        assert_eq!(w.len(), 1, "an empty buffer is written as one zero byte");
        w.variable(b"ab");
        assert_eq!(w.len(), 3, "a buffer is written as it is, unpadded");
    }

    #[test]
    fn slices_are_bounded() {
        let b = [0u8; 10];
        assert_eq!(slice_at(&b, "f", 99, 0, 4), Ok(&[][..]));
        assert!(slice_at(&b, "f", 8, 4, 100).is_err());
        assert!(slice_at(&b, "f", usize::MAX, 4, 100).is_err());
        assert!(matches!(
            slice_at(&b, "f", 0, 5, 4),
            Err(DecodeError::TooLong { .. })
        ));
        assert_eq!(slice_at(&b, "f", 6, 4, 4).map(<[u8]>::len), Ok(4));
    }

    #[test]
    fn utf16() {
        assert_eq!(
            utf16_to_string("s", &string_to_utf16("IPC$é")).as_deref(),
            Ok("IPC$é")
        );
        assert!(utf16_to_string("s", &[0x00, 0xd8]).is_err());
        assert!(utf16_to_string("s", &[0x41]).is_err());
    }
}
