//! The service side of the open handshake, sans-IO (PROTOCOL.md section 2).
//!
//! Feed it the bytes a new connection sends, in any pieces; it answers when
//! it has the whole 8-byte header and `uilen` bytes of XDR userinfo, or when
//! the input cannot be a valid open (bad magic, `uilen` above 8192, XDR that
//! does not decode), in which case the service closes without a status, as
//! illumos smbd does. Memory is bounded by `MAX_UILEN`: the body buffer is
//! sized only after the header passed its checks.

use std::fmt;

use crate::protocol::npa::NPA_LENGTH_PREFIX_LEN;
use crate::protocol::{
    npa_message_len, DecodeError, NetUserInfo, NpaRequest, PipeHeader, PIPE_HEADER_LEN,
};

/// The largest Samba (NPA) open request the service reads: 256 KiB, room
/// for a token of a few thousand SIDs (smbd's are about 1 KiB). The buffer
/// grows only as bytes arrive.
pub const MAX_NPA_REQUEST_BYTES: usize = 256 * 1024;

/// Why a handshake failed; every failure closes the connection with no status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HandshakeError {
    /// The header's magic is wrong or its `uilen` is over the limit.
    BadHeader(DecodeError),
    /// The userinfo does not decode.
    BadUserInfo(DecodeError),
    /// A Samba (NPA) request's length is out of bounds, or the request
    /// does not decode (bad magic or level, truncated, trailing bytes).
    BadNpa(DecodeError),
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
            HandshakeError::BadNpa(e) => write!(f, "bad named-pipe-auth request: {e}"),
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

/// What [`NpaHandshake::feed`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NpaStep {
    /// The request is not complete yet: feed more.
    NeedMore,
    /// The request is complete and decoded; `consumed` bytes of the last
    /// input belonged to it (the rest is the first framed data).
    Complete {
        /// The decoded request.
        request: Box<NpaRequest>,
        /// Bytes of the last `feed` input that the handshake used.
        consumed: usize,
    },
    /// The input is not a valid request: close without a reply.
    Failed(HandshakeError),
}

/// The service side of Samba's named-pipe-auth handshake, sans-IO: a `u32`
/// big-endian length (checked against [`MAX_NPA_REQUEST_BYTES`] before
/// anything else is read), then that many bytes, decoded whole with
/// [`NpaRequest::decode`] (levels 7 and 8; trailing bytes refused).
#[derive(Debug, Clone, Default)]
pub struct NpaHandshake {
    /// Every byte of the request so far, length prefix included.
    buf: Vec<u8>,
    /// `Some` once the prefix passed its check: the whole request's length.
    total: Option<usize>,
    finished: bool,
}

impl NpaHandshake {
    /// A handshake waiting for its first byte.
    pub fn new() -> NpaHandshake {
        NpaHandshake::default()
    }

    /// Bytes received so far.
    pub fn bytes_seen(&self) -> usize {
        self.buf.len()
    }

    /// True once `feed` answered `Complete` or `Failed`.
    pub fn is_finished(&self) -> bool {
        self.finished
    }

    /// Feeds the next bytes received.
    pub fn feed(&mut self, data: &[u8]) -> NpaStep {
        if self.finished {
            return NpaStep::NeedMore;
        }
        let mut used = 0;
        if self.total.is_none() {
            let take = (NPA_LENGTH_PREFIX_LEN - self.buf.len()).min(data.len());
            self.buf.extend_from_slice(&data[..take]);
            used += take;
            let Ok(prefix) = <[u8; NPA_LENGTH_PREFIX_LEN]>::try_from(self.buf.as_slice()) else {
                return NpaStep::NeedMore;
            };
            match npa_message_len(prefix, MAX_NPA_REQUEST_BYTES) {
                Ok(total) => self.total = Some(total),
                Err(e) => {
                    self.finished = true;
                    self.buf = Vec::new();
                    return NpaStep::Failed(HandshakeError::BadNpa(e));
                }
            }
        }
        let total = self.total.unwrap_or(0);
        let take = (total - self.buf.len()).min(data.len() - used);
        self.buf.extend_from_slice(&data[used..used + take]);
        used += take;
        if self.buf.len() < total {
            return NpaStep::NeedMore;
        }
        self.finished = true;
        let buf = std::mem::take(&mut self.buf);
        match NpaRequest::decode(&buf) {
            Ok(request) => NpaStep::Complete {
                request: Box::new(request),
                consumed: used,
            },
            Err(e) => NpaStep::Failed(HandshakeError::BadNpa(e)),
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

    fn npa_request() -> Vec<u8> {
        crate::protocol::NpaIdentity::anonymous()
            .to_request(crate::protocol::NpaLevel::V7)
            .encode()
            .unwrap()
    }

    #[test]
    fn npa_byte_by_byte_with_trailing_data() {
        let mut msg = npa_request();
        let n = msg.len();
        msg.extend_from_slice(b"\x02\x00hi");
        let mut hs = NpaHandshake::new();
        for (i, b) in msg[..n - 1].iter().enumerate() {
            assert_eq!(
                hs.feed(std::slice::from_ref(b)),
                NpaStep::NeedMore,
                "byte {i}"
            );
        }
        assert_eq!(hs.bytes_seen(), n - 1);
        match hs.feed(&msg[n - 1..]) {
            NpaStep::Complete { request, consumed } => {
                assert_eq!(consumed, 1);
                assert_eq!(request.level, crate::protocol::NpaLevel::V7);
            }
            other => panic!("{other:?}"),
        }
        assert!(hs.is_finished());
        assert_eq!(hs.feed(b"x"), NpaStep::NeedMore);
    }

    #[test]
    fn npa_refusals() {
        let good = npa_request();
        let bad = |msg: &[u8]| {
            matches!(
                NpaHandshake::new().feed(msg),
                NpaStep::Failed(HandshakeError::BadNpa(_))
            )
        };
        // Over the bound: refused on the prefix alone, nothing allocated.
        let mut hs = NpaHandshake::new();
        let over = ((MAX_NPA_REQUEST_BYTES - 3) as u32).to_be_bytes();
        assert!(matches!(hs.feed(&over), NpaStep::Failed(_)));
        assert_eq!(hs.buf.capacity(), 0);
        let max = ((MAX_NPA_REQUEST_BYTES - 4) as u32).to_be_bytes();
        assert_eq!(NpaHandshake::new().feed(&max), NpaStep::NeedMore);
        // Too short to hold a header.
        assert!(bad(&[0, 0, 0, 4, b'N', b'P', b'A', b'M']));
        let mut m = good.clone();
        m[4] = b'X';
        assert!(bad(&m), "magic");
        let mut m = good.clone();
        m[8] = 6;
        m[12] = 6;
        assert!(bad(&m), "level");
        // Trailing bytes inside the declared length.
        let mut m = good.clone();
        m.extend_from_slice(&[0; 4]);
        let len = (m.len() - 4) as u32;
        m[..4].copy_from_slice(&len.to_be_bytes());
        assert!(bad(&m), "trailing");
        // Truncated: the declared length is never reached.
        assert_eq!(
            NpaHandshake::new().feed(&good[..good.len() - 1]),
            NpaStep::NeedMore
        );
    }

    #[test]
    fn feeding_after_the_end_consumes_nothing() {
        let msg = encode_open_message(&user(0)).unwrap();
        let mut hs = Handshake::new();
        assert!(matches!(hs.feed(&msg), Step::Complete { .. }));
        assert_eq!(hs.feed(b"more"), Step::NeedMore);
    }
}
