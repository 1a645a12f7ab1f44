//! The error types shared by every decoder and encoder of the protocol layer.

use std::fmt;

/// Why a decoder refused its input. Every decoder in [`crate::protocol`]
/// returns this one type; `field` names the wire field at fault, as the
/// specification spells it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// The input ended inside `field`: it needed `needed` more bytes and had
    /// `remaining`.
    UnexpectedEnd {
        /// The field being read.
        field: &'static str,
        /// Bytes the field needs.
        needed: usize,
        /// Bytes that were left.
        remaining: usize,
    },
    /// A whole-message decoder was left with `count` bytes after the message.
    TrailingBytes {
        /// How many bytes were left over.
        count: usize,
    },
    /// A length field is over its maximum.
    TooLong {
        /// The field whose length is too big.
        field: &'static str,
        /// The declared length.
        len: u64,
        /// The largest length accepted.
        max: u64,
    },
    /// A length field is under its minimum (for example a DCE/RPC
    /// `frag_length` shorter than the header it belongs to).
    TooShort {
        /// The field whose length is too small.
        field: &'static str,
        /// The declared length.
        len: u64,
        /// The smallest length accepted.
        min: u64,
    },
    /// A field holds a value the protocol does not allow.
    InvalidValue {
        /// The field.
        field: &'static str,
        /// The value found (widened; signed values as their two's complement).
        value: u64,
    },
    /// A length field disagrees with the data it describes (for example a
    /// netuserinfo `domain_len` that is not `strlen(domain) + 1`).
    LengthMismatch {
        /// The length field.
        field: &'static str,
        /// The value it declared.
        declared: u64,
        /// The value the data implies.
        expected: u64,
    },
    /// XDR padding after `field` was not all zero (RFC 4506 section 4.10).
    NonZeroPadding {
        /// The field whose padding is wrong.
        field: &'static str,
    },
    /// A string holds a NUL byte, which its C peer would cut it at.
    EmbeddedNul {
        /// The string field.
        field: &'static str,
    },
    /// A string is not valid UTF-8.
    InvalidUtf8 {
        /// The string field.
        field: &'static str,
    },
    /// A string is not valid UTF-16 (an unpaired surrogate).
    InvalidUtf16 {
        /// The string field.
        field: &'static str,
    },
}

/// Takes the first `N` bytes off `rest` for `field` (the readers of every
/// wire format share it), or says how much was missing.
pub(crate) fn take_array<const N: usize>(
    rest: &mut &[u8],
    field: &'static str,
) -> Result<[u8; N], DecodeError> {
    match rest.split_first_chunk::<N>() {
        Some((head, tail)) => {
            *rest = tail;
            Ok(*head)
        }
        None => Err(DecodeError::UnexpectedEnd {
            field,
            needed: N,
            remaining: rest.len(),
        }),
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::UnexpectedEnd {
                field,
                needed,
                remaining,
            } => write!(
                f,
                "input ends inside {field}: {needed} bytes needed, {remaining} left"
            ),
            DecodeError::TrailingBytes { count } => {
                write!(f, "{count} unexpected bytes after the end of the message")
            }
            DecodeError::TooLong { field, len, max } => {
                write!(f, "{field} is too long: {len} bytes, at most {max} allowed")
            }
            DecodeError::TooShort { field, len, min } => {
                write!(
                    f,
                    "{field} is too short: {len} bytes, at least {min} needed"
                )
            }
            DecodeError::InvalidValue { field, value } => {
                write!(f, "invalid {field}: {value} (0x{value:X})")
            }
            DecodeError::LengthMismatch {
                field,
                declared,
                expected,
            } => write!(f, "{field} is {declared}, but the data says {expected}"),
            DecodeError::NonZeroPadding { field } => {
                write!(f, "non-zero XDR padding after {field}")
            }
            DecodeError::EmbeddedNul { field } => write!(f, "{field} contains a NUL byte"),
            DecodeError::InvalidUtf8 { field } => write!(f, "{field} is not valid UTF-8"),
            DecodeError::InvalidUtf16 { field } => write!(f, "{field} is not valid UTF-16"),
        }
    }
}

impl std::error::Error for DecodeError {}

/// Why an encoder refused a value: it could not be put on the wire in a form
/// the peer decodes back to the same value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EncodeError {
    /// A string is longer than the protocol (or this crate's documented
    /// limit) allows.
    StringTooLong {
        /// The string field.
        field: &'static str,
        /// Its length in bytes.
        len: usize,
        /// The largest length accepted.
        max: usize,
    },
    /// A string holds a NUL byte; the C peer would read it cut short.
    EmbeddedNul {
        /// The string field.
        field: &'static str,
    },
    /// A value that has its own variant was given in a generic form (for
    /// example `ClientAddr::Other` with the IPv4 family, which the wire
    /// would turn into a different layout).
    NonCanonical {
        /// The field.
        field: &'static str,
        /// The value given.
        value: i64,
    },
    /// The encoded message would be longer than the protocol allows.
    MessageTooLong {
        /// Its length in bytes.
        len: usize,
        /// The largest length accepted.
        max: usize,
    },
}

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EncodeError::StringTooLong { field, len, max } => write!(
                f,
                "{field} is too long to encode: {len} bytes, at most {max} allowed"
            ),
            EncodeError::EmbeddedNul { field } => {
                write!(f, "{field} contains a NUL byte and cannot be encoded")
            }
            EncodeError::NonCanonical { field, value } => {
                write!(f, "{field} {value} must be given in its dedicated form")
            }
            EncodeError::MessageTooLong { len, max } => write!(
                f,
                "encoded message is too long: {len} bytes, at most {max} allowed"
            ),
        }
    }
}

impl std::error::Error for EncodeError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_is_human() {
        let e = DecodeError::TooLong {
            field: "domain",
            len: 5000,
            max: 1024,
        };
        assert_eq!(
            e.to_string(),
            "domain is too long: 5000 bytes, at most 1024 allowed"
        );
        let e = DecodeError::UnexpectedEnd {
            field: "uilen",
            needed: 4,
            remaining: 1,
        };
        assert_eq!(
            e.to_string(),
            "input ends inside uilen: 4 bytes needed, 1 left"
        );
        assert_eq!(
            DecodeError::InvalidValue {
                field: "magic",
                value: 0x1234
            }
            .to_string(),
            "invalid magic: 4660 (0x1234)"
        );
        assert_eq!(
            EncodeError::EmbeddedNul { field: "account" }.to_string(),
            "account contains a NUL byte and cannot be encoded"
        );
    }
}
