//! A small, bounded XDR (RFC 4506) reader and writer: just the types the
//! netuserinfo message uses. Big-endian, 4-byte units.
//!
//! The reader checks every length against what remains before it reads,
//! never allocates, and returns borrowed strings; the caller decides what to
//! copy.

use super::error::{take_array, DecodeError};

/// Bytes of zero padding after `len` bytes of opaque data (RFC 4506 4.10).
pub(crate) const fn pad_len(len: usize) -> usize {
    (4 - len % 4) % 4
}

/// Encoded size of an XDR string of `len` bytes: length word, bytes, padding.
pub(crate) const fn string_len(len: usize) -> usize {
    4 + len + pad_len(len)
}

/// Reads XDR items from the front of a byte slice.
#[derive(Debug)]
pub(crate) struct XdrReader<'a> {
    rest: &'a [u8],
}

impl<'a> XdrReader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        XdrReader { rest: buf }
    }

    fn take<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], DecodeError> {
        take_array(&mut self.rest, field)
    }

    /// `unsigned int`.
    pub(crate) fn u32(&mut self, field: &'static str) -> Result<u32, DecodeError> {
        self.take::<4>(field).map(u32::from_be_bytes)
    }

    /// `int`.
    pub(crate) fn i32(&mut self, field: &'static str) -> Result<i32, DecodeError> {
        self.take::<4>(field).map(i32::from_be_bytes)
    }

    /// `unsigned hyper`.
    pub(crate) fn u64(&mut self, field: &'static str) -> Result<u64, DecodeError> {
        self.take::<8>(field).map(u64::from_be_bytes)
    }

    /// `hyper`.
    pub(crate) fn i64(&mut self, field: &'static str) -> Result<i64, DecodeError> {
        self.take::<8>(field).map(i64::from_be_bytes)
    }

    /// `string<max>`: length, bytes, zero padding. Refuses a length over
    /// `max` before looking at the data, a length over what remains,
    /// non-zero padding, a NUL byte (its C peer would cut the string there)
    /// and invalid UTF-8.
    pub(crate) fn string(
        &mut self,
        field: &'static str,
        max: usize,
    ) -> Result<&'a str, DecodeError> {
        let declared = self.u32(field)?;
        let len = match usize::try_from(declared) {
            Ok(len) if len <= max => len,
            _ => {
                return Err(DecodeError::TooLong {
                    field,
                    len: u64::from(declared),
                    max: max as u64,
                })
            }
        };
        let pad = pad_len(len);
        let needed = len.checked_add(pad).ok_or(DecodeError::TooLong {
            field,
            len: u64::from(declared),
            max: max as u64,
        })?;
        if needed > self.rest.len() {
            return Err(DecodeError::UnexpectedEnd {
                field,
                needed,
                remaining: self.rest.len(),
            });
        }
        let (bytes, rest) = self.rest.split_at(len);
        let (padding, rest) = rest.split_at(pad);
        if padding.iter().any(|&b| b != 0) {
            return Err(DecodeError::NonZeroPadding { field });
        }
        if bytes.contains(&0) {
            return Err(DecodeError::EmbeddedNul { field });
        }
        let s = std::str::from_utf8(bytes).map_err(|_| DecodeError::InvalidUtf8 { field })?;
        self.rest = rest;
        Ok(s)
    }

    /// Bytes not read yet.
    #[cfg(test)]
    pub(crate) fn remaining(&self) -> usize {
        self.rest.len()
    }

    /// Ends a whole-message decode: nothing may be left.
    pub(crate) fn finish(self) -> Result<(), DecodeError> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::TrailingBytes {
                count: self.rest.len(),
            })
        }
    }
}

/// `unsigned int`.
pub(crate) fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_be_bytes());
}

/// `int`.
pub(crate) fn put_i32(out: &mut Vec<u8>, v: i32) {
    out.extend_from_slice(&v.to_be_bytes());
}

/// `unsigned hyper`.
pub(crate) fn put_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_be_bytes());
}

/// `hyper`.
pub(crate) fn put_i64(out: &mut Vec<u8>, v: i64) {
    out.extend_from_slice(&v.to_be_bytes());
}

/// `string`: the caller has checked that `s` fits in a `u32` length (every
/// caller limits strings far below that).
pub(crate) fn put_string(out: &mut Vec<u8>, s: &str) {
    let len = u32::try_from(s.len()).unwrap_or(u32::MAX);
    debug_assert_eq!(len as usize, s.len(), "caller must bound string lengths");
    put_u32(out, len);
    out.extend_from_slice(s.as_bytes());
    out.extend_from_slice(&[0u8; 3][..pad_len(s.len())]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn padding() {
        assert_eq!([0, 1, 2, 3, 4, 5].map(pad_len), [0, 3, 2, 1, 0, 3]);
        assert_eq!([0, 1, 4, 5].map(string_len), [4, 8, 8, 12]);
    }

    #[test]
    fn string_rules() {
        let ok = [0, 0, 0, 3, b'a', b'b', b'c', 0];
        let mut r = XdrReader::new(&ok);
        assert_eq!(r.string("s", 3), Ok("abc"));
        assert_eq!(r.finish(), Ok(()));

        assert_eq!(
            XdrReader::new(&ok).string("s", 2),
            Err(DecodeError::TooLong {
                field: "s",
                len: 3,
                max: 2
            })
        );
        let bad_pad = [0, 0, 0, 3, b'a', b'b', b'c', 1];
        assert_eq!(
            XdrReader::new(&bad_pad).string("s", 3),
            Err(DecodeError::NonZeroPadding { field: "s" })
        );
        let nul = [0, 0, 0, 2, b'a', 0, 0, 0];
        assert_eq!(
            XdrReader::new(&nul).string("s", 3),
            Err(DecodeError::EmbeddedNul { field: "s" })
        );
        let utf8 = [0, 0, 0, 1, 0xFF, 0, 0, 0];
        assert_eq!(
            XdrReader::new(&utf8).string("s", 3),
            Err(DecodeError::InvalidUtf8 { field: "s" })
        );
        // The padding is part of what must be there.
        assert_eq!(
            XdrReader::new(&ok[..7]).string("s", 3),
            Err(DecodeError::UnexpectedEnd {
                field: "s",
                needed: 4,
                remaining: 3
            })
        );
        // A huge length is refused by the maximum, before anything else.
        let huge = [0xFF, 0xFF, 0xFF, 0xFF];
        assert!(matches!(
            XdrReader::new(&huge).string("s", usize::MAX),
            Err(DecodeError::UnexpectedEnd { .. })
        ));
        assert!(matches!(
            XdrReader::new(&huge).string("s", 1024),
            Err(DecodeError::TooLong { .. })
        ));
    }

    #[test]
    fn writer() {
        let mut out = Vec::new();
        put_string(&mut out, "abcde");
        put_i32(&mut out, -2);
        put_u64(&mut out, 1);
        put_i64(&mut out, -1);
        assert_eq!(
            out,
            [
                0, 0, 0, 5, b'a', b'b', b'c', b'd', b'e', 0, 0, 0, //
                0xFF, 0xFF, 0xFF, 0xFE, //
                0, 0, 0, 0, 0, 0, 0, 1, //
                0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,
            ]
        );
        let mut r = XdrReader::new(&out);
        assert_eq!(r.string("s", 8), Ok("abcde"));
        assert_eq!(r.i32("i"), Ok(-2));
        assert_eq!(r.u64("u"), Ok(1));
        assert_eq!(r.i64("h"), Ok(-1));
        assert_eq!(r.remaining(), 0);
        assert!(r.u32("x").is_err());
    }
}
