//! The transport framing of SMB2 over TCP (MS-SMB2 2.1): each message is
//! preceded by a zero byte and a 24-bit big-endian length (the NetBIOS
//! session-message header that direct TCP kept).

use crate::protocol::error::{DecodeError, EncodeError};

/// Bytes of the framing header.
pub const FRAME_HEADER_LEN: usize = 4;

/// The largest length the 24-bit field can carry.
pub const FRAME_LEN_MAX: usize = 0x00FF_FFFF;

/// The header for a message of `len` bytes.
pub fn frame_header(len: usize) -> Result<[u8; 4], EncodeError> {
    if len > FRAME_LEN_MAX {
        return Err(EncodeError::MessageTooLong {
            len,
            max: FRAME_LEN_MAX,
        });
    }
    let b = (len as u32).to_be_bytes();
    Ok([0, b[1], b[2], b[3]])
}

/// `msg` with its framing header in front.
pub fn frame(msg: &[u8]) -> Result<Vec<u8>, EncodeError> {
    let mut out = Vec::with_capacity(FRAME_HEADER_LEN + msg.len());
    out.extend_from_slice(&frame_header(msg.len())?);
    out.extend_from_slice(msg);
    Ok(out)
}

/// The length a framing header announces; a first byte other than zero
/// (another NetBIOS session packet type) is refused.
pub fn frame_len(header: [u8; 4]) -> Result<usize, DecodeError> {
    if header[0] != 0 {
        return Err(DecodeError::InvalidValue {
            field: "NetBIOS session packet type",
            value: u64::from(header[0]),
        });
    }
    Ok(u32::from_be_bytes([0, header[1], header[2], header[3]]) as usize)
}

/// Cuts a byte stream into messages. It buffers only the bytes pushed, so a
/// peer's length field sizes no allocation; a length over
/// `max_message_bytes` is an error as soon as its header is in.
#[derive(Debug)]
pub struct Unframer {
    buf: Vec<u8>,
    start: usize,
    max_message_bytes: usize,
}

impl Unframer {
    /// An unframer that refuses messages longer than `max_message_bytes`.
    pub fn new(max_message_bytes: usize) -> Self {
        Unframer {
            buf: Vec::new(),
            start: 0,
            max_message_bytes,
        }
    }

    /// Appends bytes read from the stream.
    pub fn push(&mut self, bytes: &[u8]) {
        if self.start > 0 && self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes pushed and not yet returned.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.start
    }

    /// The next whole message (without its header), `Ok(None)` when more
    /// bytes are needed. After an error the stream is unusable.
    pub fn next_message(&mut self) -> Result<Option<&[u8]>, DecodeError> {
        let rest = &self.buf[self.start..];
        let Some(head) = rest.first_chunk::<4>() else {
            return Ok(None);
        };
        let len = frame_len(*head)?;
        if len > self.max_message_bytes {
            return Err(DecodeError::TooLong {
                field: "StreamProtocolLength",
                len: len as u64,
                max: self.max_message_bytes as u64,
            });
        }
        if rest.len() < FRAME_HEADER_LEN + len {
            return Ok(None);
        }
        let from = self.start + FRAME_HEADER_LEN;
        self.start = from + len;
        let msg = &self.buf[from..from + len];
        Ok(Some(msg))
    }

    /// Drops consumed bytes from the front of the buffer (call between
    /// reads to keep the buffer small).
    pub fn compact(&mut self) {
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trip_and_limits() {
        assert_eq!(frame_header(0x12345), Ok([0, 1, 0x23, 0x45]));
        assert_eq!(frame_len([0, 1, 0x23, 0x45]), Ok(0x12345));
        assert!(frame_header(FRAME_LEN_MAX + 1).is_err());
        assert!(frame_len([0x85, 0, 0, 0]).is_err());
    }

    #[test]
    fn unframer_in_pieces() {
        let mut stream = frame(b"hello").unwrap();
        stream.extend(frame(b"").unwrap());
        stream.extend(frame(b"world!").unwrap());
        let mut u = Unframer::new(100);
        let mut got = Vec::new();
        for b in &stream {
            u.push(std::slice::from_ref(b));
            while let Some(m) = u.next_message().unwrap() {
                got.push(m.to_vec());
            }
            u.compact();
        }
        assert_eq!(got, vec![b"hello".to_vec(), vec![], b"world!".to_vec()]);
        assert_eq!(u.buffered(), 0);
    }

    #[test]
    fn oversized_refused_at_header() {
        let mut u = Unframer::new(10);
        u.push(&[0, 0, 0, 11]);
        assert!(matches!(
            u.next_message(),
            Err(DecodeError::TooLong { len: 11, .. })
        ));
    }
}
