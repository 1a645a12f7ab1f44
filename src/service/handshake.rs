//! The service side of the open handshake, sans-IO (PROTOCOL.md section 2).
//!
//! Feed it the bytes a new connection sends, in any pieces; it answers when
//! it has the whole 8-byte header and `uilen` bytes of XDR userinfo, or when
//! the input cannot be a valid open (bad magic, `uilen` above 8192, XDR that
//! does not decode), in which case the service closes without a status, as
//! illumos smbd does. Memory is bounded by `MAX_UILEN`: the body buffer is
//! sized only after the header passed its checks.

use std::fmt;

use crate::protocol::{DecodeError, NetUserInfo, PipeHeader, PIPE_HEADER_LEN};

/// Why a handshake failed; every failure closes the connection with no status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HandshakeError {
    /// The header's magic is wrong or its `uilen` is over the limit.
    BadHeader(DecodeError),
    /// The userinfo does not decode.
    BadUserInfo(DecodeError),
    /// The client closed (or the connection failed) before the handshake ended.
    Truncated,
    /// The handshake did not complete in time.
    TimedOut,
}

impl fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HandshakeError::BadHeader(e) => write!(f, "bad open header: {e}"),
            HandshakeError::BadUserInfo(e) => write!(f, "bad netuserinfo: {e}"),
            HandshakeError::Truncated => f.write_str("connection ended inside the open handshake"),
            HandshakeError::TimedOut => f.write_str("open handshake timed out"),
        }
    }
}

impl std::error::Error for HandshakeError {}

/// What [`Handshake::feed`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// The message is not complete yet: feed more.
    NeedMore,
    /// The open message is complete and valid. `consumed` bytes of the last
    /// input belonged to it; the rest (if any) is the first data of the pipe.
    Complete {
        /// The decoded user.
        user: Box<NetUserInfo>,
        /// Bytes of the last `feed` input that the handshake used.
        consumed: usize,
    },
    /// The input is not a valid open: close without a status.
    Failed(HandshakeError),
}

/// The handshake state of one connection.
#[derive(Debug, Clone, Default)]
pub struct Handshake {
    header: [u8; PIPE_HEADER_LEN],
    header_len: usize,
    /// `Some` once the header passed its checks: the userinfo length.
    uilen: Option<usize>,
    body: Vec<u8>,
    finished: bool,
}

impl Handshake {
    /// A handshake waiting for its first byte.
    pub fn new() -> Handshake {
        Handshake::default()
    }

    /// True once `feed` answered `Complete` or `Failed`.
    pub fn is_finished(&self) -> bool {
        self.finished
    }

    /// Bytes received so far.
    pub fn bytes_seen(&self) -> usize {
        self.header_len + self.body.len()
    }

    /// Feeds the next bytes received. Must not be called after it answered
    /// `Complete` or `Failed` (it then answers `NeedMore` and consumes nothing).
    pub fn feed(&mut self, data: &[u8]) -> Step {
        if self.finished {
            return Step::NeedMore;
        }
        let mut used = 0;
        if self.uilen.is_none() {
            let take = (PIPE_HEADER_LEN - self.header_len).min(data.len());
            self.header[self.header_len..self.header_len + take].copy_from_slice(&data[..take]);
            self.header_len += take;
            used += take;
            if self.header_len < PIPE_HEADER_LEN {
                return Step::NeedMore;
            }
            let hdr = PipeHeader::decode(&self.header);
            if let Err(e) = hdr.check() {
                self.finished = true;
                return Step::Failed(HandshakeError::BadHeader(e));
            }
            // check() bounds uilen by MAX_UILEN (8192): a small allocation.
            let uilen = hdr.uilen as usize;
            self.uilen = Some(uilen);
            self.body = Vec::with_capacity(uilen);
        }
        let uilen = self.uilen.unwrap_or(0);
        let take = (uilen - self.body.len()).min(data.len() - used);
        self.body.extend_from_slice(&data[used..used + take]);
        used += take;
        if self.body.len() < uilen {
            return Step::NeedMore;
        }
        self.finished = true;
        match NetUserInfo::decode(&self.body) {
            Ok(user) => {
                self.body = Vec::new();
                Step::Complete {
                    user: Box::new(user),
                    consumed: used,
                }
            }
            Err(e) => Step::Failed(HandshakeError::BadUserInfo(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{encode_open_message, PIPE_MAGIC};
    use crate::service::testutil::user;

    #[test]
    fn whole_message_at_once() {
        let msg = encode_open_message(&user(0)).unwrap();
        let mut hs = Handshake::new();
        match hs.feed(&msg) {
            Step::Complete { user: u, consumed } => {
                assert_eq!(*u, user(0));
                assert_eq!(consumed, msg.len());
            }
            other => panic!("{other:?}"),
        }
        assert!(hs.is_finished());
    }

    #[test]
    fn byte_by_byte_with_trailing_data() {
        let mut msg = encode_open_message(&user(0)).unwrap();
        let n = msg.len();
        msg.extend_from_slice(b"extra");
        let mut hs = Handshake::new();
        for (i, b) in msg[..n - 1].iter().enumerate() {
            assert_eq!(hs.feed(std::slice::from_ref(b)), Step::NeedMore, "byte {i}");
        }
        assert_eq!(hs.bytes_seen(), n - 1);
        match hs.feed(&msg[n - 1..]) {
            Step::Complete { consumed, .. } => assert_eq!(consumed, 1),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn bad_magic_fails_after_eight_bytes() {
        let mut hdr = PipeHeader::new(10).encode();
        hdr[0] ^= 1;
        let mut hs = Handshake::new();
        assert_eq!(hs.feed(&hdr[..7]), Step::NeedMore);
        assert!(matches!(
            hs.feed(&hdr[7..]),
            Step::Failed(HandshakeError::BadHeader(_))
        ));
    }

    #[test]
    fn uilen_over_limit_fails_and_allocates_nothing() {
        let hdr = PipeHeader {
            magic: PIPE_MAGIC,
            uilen: 8193,
        }
        .encode();
        let mut hs = Handshake::new();
        assert!(matches!(
            hs.feed(&hdr),
            Step::Failed(HandshakeError::BadHeader(_))
        ));
        assert_eq!(hs.body.capacity(), 0);
        let max = PipeHeader {
            magic: PIPE_MAGIC,
            uilen: 8192,
        }
        .encode();
        assert_eq!(Handshake::new().feed(&max), Step::NeedMore);
    }

    #[test]
    fn undecodable_userinfo_fails() {
        let mut msg = PipeHeader::new(12).encode().to_vec();
        msg.extend_from_slice(&[0xff; 12]);
        assert!(matches!(
            Handshake::new().feed(&msg),
            Step::Failed(HandshakeError::BadUserInfo(_))
        ));
        // uilen 0 cannot hold a userinfo either.
        let empty = PipeHeader::new(0).encode();
        assert!(matches!(
            Handshake::new().feed(&empty),
            Step::Failed(HandshakeError::BadUserInfo(_))
        ));
    }

    #[test]
    fn feeding_after_the_end_consumes_nothing() {
        let msg = encode_open_message(&user(0)).unwrap();
        let mut hs = Handshake::new();
        assert!(matches!(hs.feed(&msg), Step::Complete { .. }));
        assert_eq!(hs.feed(b"more"), Step::NeedMore);
    }
}
