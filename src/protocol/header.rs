//! The open handshake's framing (PROTOCOL.md section 2): the 8-byte pipe
//! header in front of the XDR userinfo, and the 4-byte status word the
//! service answers with.
//!
//! Neither is XDR: illumos sends them as raw C values in the sender's native
//! byte order. Every platform illumos and opipe run on for this transport
//! (x86-64, aarch64) is little-endian, so opipe fixes the order to
//! little-endian on every host: the bytes on the socket are those an
//! illumos peer on x86-64 sends and expects, whatever opipe runs on.

use super::error::DecodeError;
use super::status::NtStatus;

/// The header's magic, `"PIPE"` read as a little-endian `u32`
/// (`SMB_PIPE_HDR_MAGIC`); on the wire `45 50 49 50`.
pub const PIPE_MAGIC: u32 = 0x5049_5045;

/// The largest `uilen` a service accepts (illumos smbd closes the
/// connection, with no status, above this).
pub const MAX_UILEN: u32 = 8192;

/// The header's length in bytes: `magic` and `uilen`, 4 bytes each.
pub const PIPE_HEADER_LEN: usize = 8;

/// The handshake header (`smb_pipehdr_t`): magic, then the exact length of
/// the XDR userinfo that follows. PROTOCOL.md section 2.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PipeHeader {
    /// Must be [`PIPE_MAGIC`].
    pub magic: u32,
    /// Byte length of the XDR userinfo after the header; at most [`MAX_UILEN`].
    pub uilen: u32,
}

impl PipeHeader {
    /// A header with [`PIPE_MAGIC`] announcing `uilen` bytes of userinfo.
    pub fn new(uilen: u32) -> Self {
        PipeHeader {
            magic: PIPE_MAGIC,
            uilen,
        }
    }

    /// The 8 wire bytes, little-endian (see the module documentation).
    pub fn encode(&self) -> [u8; PIPE_HEADER_LEN] {
        let mut out = [0u8; PIPE_HEADER_LEN];
        let (magic, uilen) = out.split_at_mut(4);
        magic.copy_from_slice(&self.magic.to_le_bytes());
        uilen.copy_from_slice(&self.uilen.to_le_bytes());
        out
    }

    /// Reads the 8 wire bytes. Any bytes make a header; call
    /// [`PipeHeader::check`] before trusting it.
    pub fn decode(bytes: &[u8; PIPE_HEADER_LEN]) -> PipeHeader {
        let [m0, m1, m2, m3, u0, u1, u2, u3] = *bytes;
        PipeHeader {
            magic: u32::from_le_bytes([m0, m1, m2, m3]),
            uilen: u32::from_le_bytes([u0, u1, u2, u3]),
        }
    }

    /// The service's checks (illumos smbd): the magic must be
    /// [`PIPE_MAGIC`] (else `InvalidValue { field: "magic" }`) and `uilen`
    /// at most [`MAX_UILEN`] (else `TooLong { field: "uilen" }`). A service
    /// closes the connection, with no status, when this fails.
    pub fn check(&self) -> Result<(), DecodeError> {
        if self.magic != PIPE_MAGIC {
            return Err(DecodeError::InvalidValue {
                field: "magic",
                value: u64::from(self.magic),
            });
        }
        if self.uilen > MAX_UILEN {
            return Err(DecodeError::TooLong {
                field: "uilen",
                len: u64::from(self.uilen),
                max: u64::from(MAX_UILEN),
            });
        }
        Ok(())
    }
}

/// Length of the service's reply to the open: one `u32` NT status.
pub const STATUS_WORD_LEN: usize = 4;

/// The reply to an open: the status as 4 little-endian bytes (see the module
/// documentation). 0 accepts the open.
pub fn encode_status_word(s: NtStatus) -> [u8; STATUS_WORD_LEN] {
    s.raw().to_le_bytes()
}

/// Reads the reply to an open. Every value is a status.
pub fn decode_status_word(b: [u8; STATUS_WORD_LEN]) -> NtStatus {
    NtStatus(u32::from_le_bytes(b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn magic_bytes_on_the_wire() {
        let h = PipeHeader::new(0x0102);
        assert_eq!(h.encode(), [0x45, 0x50, 0x49, 0x50, 0x02, 0x01, 0x00, 0x00]);
        assert_eq!(&h.encode()[..4], b"EPIP");
        assert_eq!(PipeHeader::decode(&h.encode()), h);
        assert_eq!(h.check(), Ok(()));
    }

    #[test]
    fn check_limits() {
        assert_eq!(PipeHeader::new(0).check(), Ok(()));
        assert_eq!(PipeHeader::new(MAX_UILEN).check(), Ok(()));
        assert_eq!(
            PipeHeader::new(MAX_UILEN + 1).check(),
            Err(DecodeError::TooLong {
                field: "uilen",
                len: 8193,
                max: 8192
            })
        );
        assert_eq!(
            PipeHeader::new(u32::MAX).check(),
            Err(DecodeError::TooLong {
                field: "uilen",
                len: u64::from(u32::MAX),
                max: 8192
            })
        );
        // Big-endian magic, as a big-endian sender would write it: refused.
        let be = PipeHeader::decode(&[0x50, 0x49, 0x50, 0x45, 0, 0, 0, 0]);
        assert_eq!(
            be.check(),
            Err(DecodeError::InvalidValue {
                field: "magic",
                value: 0x4550_4950
            })
        );
    }

    #[test]
    fn status_word() {
        assert_eq!(encode_status_word(NtStatus::SUCCESS), [0, 0, 0, 0]);
        assert_eq!(
            encode_status_word(NtStatus::PIPE_NOT_AVAILABLE),
            [0xAC, 0x00, 0x00, 0xC0]
        );
        assert_eq!(
            decode_status_word([0x22, 0x00, 0x00, 0xC0]),
            NtStatus::ACCESS_DENIED
        );
    }

    proptest! {
        #[test]
        fn header_round_trip(magic: u32, uilen: u32) {
            let h = PipeHeader { magic, uilen };
            prop_assert_eq!(PipeHeader::decode(&h.encode()), h);
        }

        #[test]
        fn header_decode_encode(bytes: [u8; 8]) {
            prop_assert_eq!(PipeHeader::decode(&bytes).encode(), bytes);
        }

        #[test]
        fn status_round_trip(raw: u32) {
            prop_assert_eq!(decode_status_word(encode_status_word(NtStatus(raw))), NtStatus(raw));
        }
    }
}
