//! A small, bounded NDR (C706 chapter 14, the transfer syntax of DCE/RPC)
//! reader and writer: the primitives Samba's named-pipe handshake
//! ([`super::npa`]) needs, little-endian, NDR32, laid out the way Samba's
//! `librpc/ndr` lays them out.
//!
//! Alignment is relative to the start of the whole stream (NDR aligns on
//! absolute offsets), so both sides track where in the stream they are:
//! the writer's `base` says at which stream offset its buffer starts.
//!
//! What this covers, and how Samba writes it:
//!
//! * `uint8/16/32` aligned to their size; `hyper` (and `uid_t` / `gid_t`,
//!   which Samba sends as `hyper`) aligned to 8; `NTTIME` (Samba's
//!   `udlong`) 8 bytes aligned to 4.
//! * unique pointers: a 4-byte referent id, 0 for NULL; the writer numbers
//!   them `0x00020000 + 4 * n` in the order they are written (as Samba's
//!   `ndr_push_unique_ptr` does); the reader accepts any non-zero id. The
//!   pointee follows later, in the "deferred" part of the enclosing
//!   structure; the callers order that.
//! * `[string]` pointees: conformant-varying arrays, `u32` maximum count,
//!   `u32` offset (0), `u32` actual count, the bytes with their NUL.
//! * `DATA_BLOB`: `u32` length, the bytes.
//!
//! The reader checks every read against what remains, refuses counts over
//! the caller's maximum before allocating, and never panics. Padding is
//! skipped without being checked (Samba writes zeros and does not check).

use super::error::{DecodeError, EncodeError};

/// Where a unique pointer's referent ids start (Samba's numbering).
const REFERENT_BASE: u32 = 0x0002_0000;

/// Writes NDR items; alignment is computed on `base + len`.
#[derive(Debug)]
pub(crate) struct NdrWriter {
    buf: Vec<u8>,
    base: usize,
    referents: u32,
}

impl NdrWriter {
    /// A writer whose first byte sits at stream offset `base`.
    pub(crate) fn new(base: usize) -> Self {
        NdrWriter {
            buf: Vec::with_capacity(256),
            base,
            referents: 0,
        }
    }

    /// The bytes written so far.
    pub(crate) fn into_bytes(self) -> Vec<u8> {
        self.buf
    }

    /// The stream offset of the next byte.
    pub(crate) fn offset(&self) -> usize {
        self.base + self.buf.len()
    }

    /// Zero bytes up to the next multiple of `n` (a power of two).
    pub(crate) fn align(&mut self, n: usize) {
        let pad = (n - self.offset() % n) % n;
        self.buf.resize(self.buf.len() + pad, 0);
    }

    pub(crate) fn u8(&mut self, v: u8) {
        self.buf.push(v);
    }

    pub(crate) fn u16(&mut self, v: u16) {
        self.align(2);
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    pub(crate) fn u32(&mut self, v: u32) {
        self.align(4);
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    /// `hyper` (also `uid_t`, `gid_t`): 8 bytes aligned to 8.
    pub(crate) fn hyper(&mut self, v: u64) {
        self.align(8);
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    /// `NTTIME` (`udlong`): 8 bytes aligned to 4.
    pub(crate) fn udlong(&mut self, v: u64) {
        self.align(4);
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    /// Raw bytes, no alignment.
    pub(crate) fn bytes(&mut self, v: &[u8]) {
        self.buf.extend_from_slice(v);
    }

    /// A unique pointer's referent id: 0 when absent, else the next id.
    pub(crate) fn unique_ptr(&mut self, present: bool) {
        if present {
            let id = REFERENT_BASE.wrapping_add(self.referents.wrapping_mul(4));
            self.referents = self.referents.wrapping_add(1);
            self.u32(id);
        } else {
            self.u32(0);
        }
    }

    /// A `[string]` pointee: maximum count, offset 0, actual count, the
    /// bytes and a NUL. Refuses an embedded NUL and a string over `max`
    /// bytes.
    pub(crate) fn string(
        &mut self,
        field: &'static str,
        s: &str,
        max: usize,
    ) -> Result<(), EncodeError> {
        check_string(field, s, max)?;
        // check_string bounds the length far below u32::MAX.
        let count = (s.len() + 1) as u32;
        self.u32(count);
        self.u32(0);
        self.u32(count);
        self.bytes(s.as_bytes());
        self.u8(0);
        Ok(())
    }

    /// A `[string, charset(UTF16)]` pointee: counts in UTF-16 units, the
    /// units little-endian and a NUL unit. Refuses an embedded NUL and more
    /// than `max` units.
    pub(crate) fn string_utf16(
        &mut self,
        field: &'static str,
        s: &str,
        max: usize,
    ) -> Result<(), EncodeError> {
        if s.contains('\0') {
            return Err(EncodeError::EmbeddedNul { field });
        }
        let units: Vec<u16> = s.encode_utf16().collect();
        if units.len() > max {
            return Err(EncodeError::StringTooLong {
                field,
                len: units.len(),
                max,
            });
        }
        let count = (units.len() + 1) as u32;
        self.u32(count);
        self.u32(0);
        self.u32(count);
        for u in units {
            self.bytes(&u.to_le_bytes());
        }
        self.bytes(&[0, 0]);
        Ok(())
    }

    /// A `DATA_BLOB`: `u32` length, the bytes. Refuses more than `max`.
    pub(crate) fn blob(
        &mut self,
        field: &'static str,
        v: &[u8],
        max: usize,
    ) -> Result<(), EncodeError> {
        if v.len() > max {
            return Err(EncodeError::StringTooLong {
                field,
                len: v.len(),
                max,
            });
        }
        self.u32(v.len() as u32);
        self.bytes(v);
        Ok(())
    }
}

/// The checks [`NdrWriter::string`] makes, for callers that want them up
/// front.
pub(crate) fn check_string(field: &'static str, s: &str, max: usize) -> Result<(), EncodeError> {
    if s.len() > max {
        return Err(EncodeError::StringTooLong {
            field,
            len: s.len(),
            max,
        });
    }
    if s.as_bytes().contains(&0) {
        return Err(EncodeError::EmbeddedNul { field });
    }
    Ok(())
}

/// Reads NDR items; `pos` is the stream offset (the input starts the
/// stream).
#[derive(Debug)]
pub(crate) struct NdrReader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> NdrReader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        NdrReader { buf, pos: 0 }
    }

    /// Bytes not read yet.
    pub(crate) fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }

    /// Skips to the next multiple of `n` (a power of two); the padding must
    /// be there.
    pub(crate) fn align(&mut self, field: &'static str, n: usize) -> Result<(), DecodeError> {
        let pad = (n - self.pos % n) % n;
        self.take(field, pad).map(|_| ())
    }

    /// The next `n` bytes.
    pub(crate) fn take(&mut self, field: &'static str, n: usize) -> Result<&'a [u8], DecodeError> {
        let remaining = self.remaining();
        if n > remaining {
            return Err(DecodeError::UnexpectedEnd {
                field,
                needed: n,
                remaining,
            });
        }
        let start = self.pos;
        self.pos += n;
        self.buf
            .get(start..self.pos)
            .ok_or(DecodeError::UnexpectedEnd {
                field,
                needed: n,
                remaining,
            })
    }

    fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], DecodeError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(field, N)?);
        Ok(out)
    }

    pub(crate) fn u8(&mut self, field: &'static str) -> Result<u8, DecodeError> {
        self.array::<1>(field).map(|b| b[0])
    }

    pub(crate) fn u16(&mut self, field: &'static str) -> Result<u16, DecodeError> {
        self.align(field, 2)?;
        self.array::<2>(field).map(u16::from_le_bytes)
    }

    pub(crate) fn u32(&mut self, field: &'static str) -> Result<u32, DecodeError> {
        self.align(field, 4)?;
        self.array::<4>(field).map(u32::from_le_bytes)
    }

    pub(crate) fn hyper(&mut self, field: &'static str) -> Result<u64, DecodeError> {
        self.align(field, 8)?;
        self.array::<8>(field).map(u64::from_le_bytes)
    }

    /// A `hyper` that must fit 32 bits (Samba's `uid_t`, `gid_t` pull
    /// refuses the others too).
    pub(crate) fn hyper_u32(&mut self, field: &'static str) -> Result<u32, DecodeError> {
        let v = self.hyper(field)?;
        u32::try_from(v).map_err(|_| DecodeError::InvalidValue { field, value: v })
    }

    pub(crate) fn udlong(&mut self, field: &'static str) -> Result<u64, DecodeError> {
        self.align(field, 4)?;
        self.array::<8>(field).map(u64::from_le_bytes)
    }

    /// A unique pointer: whether the referent follows.
    pub(crate) fn unique_ptr(&mut self, field: &'static str) -> Result<bool, DecodeError> {
        Ok(self.u32(field)? != 0)
    }

    /// A conformance or element count, at most `max`, and such that `count`
    /// elements of at least `min_elem_bytes` each fit in what remains (so a
    /// peer's count never sizes an allocation beyond its own input).
    pub(crate) fn count(
        &mut self,
        field: &'static str,
        max: usize,
        min_elem_bytes: usize,
    ) -> Result<usize, DecodeError> {
        let v = self.u32(field)?;
        let n = usize::try_from(v).unwrap_or(usize::MAX);
        if n > max {
            return Err(DecodeError::TooLong {
                field,
                len: u64::from(v),
                max: max as u64,
            });
        }
        let needed = n.saturating_mul(min_elem_bytes);
        if needed > self.remaining() {
            return Err(DecodeError::UnexpectedEnd {
                field,
                needed,
                remaining: self.remaining(),
            });
        }
        Ok(n)
    }

    /// The header of a conformant-varying string of at most `max`
    /// characters plus its NUL: maximum count, offset 0, actual count equal
    /// to the maximum; returns the count (NUL included, at least 1).
    fn string_count(&mut self, field: &'static str, max: usize) -> Result<usize, DecodeError> {
        let size = self.u32(field)?;
        let offset = self.u32(field)?;
        let actual = self.u32(field)?;
        if offset != 0 {
            return Err(DecodeError::InvalidValue {
                field,
                value: u64::from(offset),
            });
        }
        if actual != size {
            return Err(DecodeError::LengthMismatch {
                field,
                declared: u64::from(actual),
                expected: u64::from(size),
            });
        }
        let n = usize::try_from(actual).unwrap_or(usize::MAX);
        if n == 0 {
            return Err(DecodeError::TooShort {
                field,
                len: 0,
                min: 1,
            });
        }
        if n > max.saturating_add(1) {
            return Err(DecodeError::TooLong {
                field,
                len: u64::from(actual),
                max: max as u64 + 1,
            });
        }
        Ok(n)
    }

    /// A `[string]` pointee (UTF-8): maximum count, offset, actual count,
    /// bytes. Refuses an offset other than 0, an actual count other than the
    /// maximum count, a count of 0 or over `max + 1` (the NUL), a missing
    /// final NUL, an embedded NUL and invalid UTF-8.
    pub(crate) fn string(
        &mut self,
        field: &'static str,
        max: usize,
    ) -> Result<String, DecodeError> {
        let n = self.string_count(field, max)?;
        let bytes = self.take(field, n)?;
        let text = nul_terminated(field, bytes)?;
        std::str::from_utf8(text)
            .map(str::to_owned)
            .map_err(|_| DecodeError::InvalidUtf8 { field })
    }

    /// A `[string, charset(UTF16)]` pointee of at most `max` units (NUL
    /// not counted), checked like [`NdrReader::string`]; an unpaired
    /// surrogate is refused.
    pub(crate) fn string_utf16(
        &mut self,
        field: &'static str,
        max: usize,
    ) -> Result<String, DecodeError> {
        let n = self.string_count(field, max)?;
        let bytes = self.take(field, n * 2)?;
        let units: Vec<u16> = bytes
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .collect();
        let text = nul_terminated(field, &units)?;
        String::from_utf16(text).map_err(|_| DecodeError::InvalidUtf16 { field })
    }

    /// A `DATA_BLOB` of at most `max` bytes.
    pub(crate) fn blob(&mut self, field: &'static str, max: usize) -> Result<Vec<u8>, DecodeError> {
        let n = self.count(field, max, 1)?;
        Ok(self.take(field, n)?.to_vec())
    }
}

/// The text of a conformant-varying string's units: the last unit must be
/// its NUL terminator and no other unit may be NUL.
fn nul_terminated<'a, T: Copy + Default + PartialEq + Into<u64>>(
    field: &'static str,
    units: &'a [T],
) -> Result<&'a [T], DecodeError> {
    let Some((last, text)) = units.split_last() else {
        return Err(DecodeError::TooShort {
            field,
            len: 0,
            min: 1,
        });
    };
    if *last != T::default() {
        return Err(DecodeError::InvalidValue {
            field,
            value: (*last).into(),
        });
    }
    if text.contains(&T::default()) {
        return Err(DecodeError::EmbeddedNul { field });
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alignment_is_absolute() {
        let mut w = NdrWriter::new(3);
        w.u8(1);
        w.hyper(2);
        // Stream offsets 3 (u8), 4..8 padding, 8..16 hyper.
        assert_eq!(w.offset(), 16);
        assert_eq!(w.into_bytes(), [1, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0]);

        let mut w = NdrWriter::new(0);
        w.u8(1);
        w.udlong(7);
        assert_eq!(w.into_bytes().len(), 12);
    }

    #[test]
    fn referents_count_up_from_samba_base() {
        let mut w = NdrWriter::new(0);
        w.unique_ptr(true);
        w.unique_ptr(false);
        w.unique_ptr(true);
        assert_eq!(
            w.into_bytes(),
            [0, 0, 2, 0, 0, 0, 0, 0, 4, 0, 2, 0],
            "ids 0x20000, NULL, 0x20004"
        );
    }

    #[test]
    fn string_round_trip_and_refusals() {
        let mut w = NdrWriter::new(0);
        w.string("s", "nobody", 64).unwrap();
        let bytes = w.into_bytes();
        assert_eq!(&bytes[..12], &[7, 0, 0, 0, 0, 0, 0, 0, 7, 0, 0, 0]);
        assert_eq!(&bytes[12..], b"nobody\0");
        assert_eq!(NdrReader::new(&bytes).string("s", 64).unwrap(), "nobody");
        assert!(matches!(
            NdrReader::new(&bytes).string("s", 5),
            Err(DecodeError::TooLong { .. })
        ));

        let mut bad = bytes.clone();
        bad[4] = 1; // offset
        assert!(matches!(
            NdrReader::new(&bad).string("s", 64),
            Err(DecodeError::InvalidValue { .. })
        ));
        let mut bad = bytes.clone();
        bad[18] = b'x'; // no final NUL
        assert!(matches!(
            NdrReader::new(&bad).string("s", 64),
            Err(DecodeError::InvalidValue { .. })
        ));
        let mut bad = bytes.clone();
        bad[13] = 0; // NUL inside
        assert_eq!(
            NdrReader::new(&bad).string("s", 64),
            Err(DecodeError::EmbeddedNul { field: "s" })
        );
        assert_eq!(
            NdrReader::new(&bytes[..15]).string("s", 64),
            Err(DecodeError::UnexpectedEnd {
                field: "s",
                needed: 7,
                remaining: 3
            })
        );
        let mut w = NdrWriter::new(0);
        assert_eq!(
            w.string("s", "a\0b", 64),
            Err(EncodeError::EmbeddedNul { field: "s" })
        );
    }

    #[test]
    fn utf16_string_round_trip() {
        let mut w = NdrWriter::new(0);
        w.string_utf16("s", "\\\\TÉST", 64).unwrap();
        let bytes = w.into_bytes();
        assert_eq!(&bytes[..12], &[7, 0, 0, 0, 0, 0, 0, 0, 7, 0, 0, 0]);
        assert_eq!(bytes.len(), 12 + 14);
        assert_eq!(
            NdrReader::new(&bytes).string_utf16("s", 64).unwrap(),
            "\\\\TÉST"
        );
        assert!(NdrReader::new(&bytes).string_utf16("s", 5).is_err());
        assert!(NdrReader::new(&bytes[..20]).string_utf16("s", 64).is_err());
        let mut lone = bytes.clone();
        lone[12] = 0x00;
        lone[13] = 0xD8; // an unpaired high surrogate
        assert_eq!(
            NdrReader::new(&lone).string_utf16("s", 64),
            Err(DecodeError::InvalidUtf16 { field: "s" })
        );
    }

    #[test]
    fn counts_are_bounded_by_max_and_input() {
        let huge = 0xFFFF_FFFFu32.to_le_bytes();
        assert!(matches!(
            NdrReader::new(&huge).count("n", 100, 1),
            Err(DecodeError::TooLong { .. })
        ));
        let mut buf = 50u32.to_le_bytes().to_vec();
        buf.extend_from_slice(&[0; 40]);
        assert!(matches!(
            NdrReader::new(&buf).count("n", 100, 1),
            Err(DecodeError::UnexpectedEnd { .. })
        ));
        assert_eq!(NdrReader::new(&buf).count("n", 100, 0), Ok(50));
    }

    #[test]
    fn uid_over_32_bits_is_refused() {
        let v = (1u64 << 32).to_le_bytes();
        assert!(matches!(
            NdrReader::new(&v).hyper_u32("uid"),
            Err(DecodeError::InvalidValue { .. })
        ));
    }
}
