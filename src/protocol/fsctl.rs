//! The pipe FSCTLs of MS-FSCC section 2.3 and the status rules around
//! them (PROTOCOL.md section 4): control codes, the PEEK reply, the WAIT
//! request, and the pure parts of transceive and peek.
//!
//! All of these structures are little-endian, as MS-FSCC specifies.

use std::time::Duration;

use super::error::DecodeError;
use super::status::NtStatus;

/// `FSCTL_PIPE_PEEK` (MS-FSCC 2.3.46): look at pipe data without
/// consuming it.
pub const FSCTL_PIPE_PEEK: u32 = 0x0011_400C;
/// `FSCTL_PIPE_WAIT` (MS-FSCC 2.3.49): wait for a pipe name to have a
/// listener. Sent on no open handle.
pub const FSCTL_PIPE_WAIT: u32 = 0x0011_0018;
/// `FSCTL_PIPE_TRANSCEIVE` (MS-FSCC 2.3.51): write a request, read a reply.
pub const FSCTL_PIPE_TRANSCEIVE: u32 = 0x0011_C017;

/// `NamedPipeState` `FILE_PIPE_DISCONNECTED_STATE`.
pub const PIPE_STATE_DISCONNECTED: u32 = 1;
/// `NamedPipeState` `FILE_PIPE_LISTENING_STATE`.
pub const PIPE_STATE_LISTENING: u32 = 2;
/// `NamedPipeState` `FILE_PIPE_CONNECTED_STATE`: the state of an open pipe.
pub const PIPE_STATE_CONNECTED: u32 = 3;
/// `NamedPipeState` `FILE_PIPE_CLOSING_STATE`: the service closed its end.
pub const PIPE_STATE_CLOSING: u32 = 4;

/// Length of the fixed part of a PEEK reply.
pub const PEEK_HEADER_LEN: usize = 16;

/// The largest pipe message of the illumos server (`SMB_PIPE_MAX_MSGSIZE`):
/// a pipe's allocation size, and the transceive output size under which
/// `STATUS_BUFFER_OVERFLOW` can be reported.
pub const SMB_PIPE_MAX_MSGSIZE: usize = 4280;

/// The fixed part of an `FSCTL_PIPE_PEEK` reply (MS-FSCC 2.3.47); the
/// peeked data follows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct PeekReply {
    /// One of the `PIPE_STATE_*` values (3 connected, 4 closing).
    pub named_pipe_state: u32,
    /// Bytes available to read from the pipe (at least the data returned).
    pub read_data_available: u32,
    /// Messages in the pipe; 0 in byte mode.
    pub number_of_messages: u32,
    /// Length of the next message; 0 in byte mode.
    pub message_length: u32,
}

impl PeekReply {
    /// The 16 wire bytes, little-endian.
    pub fn encode(&self) -> [u8; PEEK_HEADER_LEN] {
        let mut out = [0u8; PEEK_HEADER_LEN];
        let fields = [
            self.named_pipe_state,
            self.read_data_available,
            self.number_of_messages,
            self.message_length,
        ];
        for (chunk, v) in out.chunks_exact_mut(4).zip(fields) {
            chunk.copy_from_slice(&v.to_le_bytes());
        }
        out
    }

    /// The fixed part followed by `data`: a whole reply.
    pub fn encode_with_data(&self, data: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(PEEK_HEADER_LEN + data.len());
        out.extend_from_slice(&self.encode());
        out.extend_from_slice(data);
        out
    }

    /// Decodes a whole reply: the fixed part, and the data after it.
    ///
    /// Refuses fewer than 16 bytes, a `NamedPipeState` other than 1 to 4,
    /// and more data than `ReadDataAvailable` says the pipe holds.
    pub fn decode(buf: &[u8]) -> Result<(PeekReply, &[u8]), DecodeError> {
        let (head, data) =
            buf.split_first_chunk::<PEEK_HEADER_LEN>()
                .ok_or(DecodeError::UnexpectedEnd {
                    field: "peek reply",
                    needed: PEEK_HEADER_LEN,
                    remaining: buf.len(),
                })?;
        let [a0, a1, a2, a3, b0, b1, b2, b3, c0, c1, c2, c3, d0, d1, d2, d3] = *head;
        let reply = PeekReply {
            named_pipe_state: u32::from_le_bytes([a0, a1, a2, a3]),
            read_data_available: u32::from_le_bytes([b0, b1, b2, b3]),
            number_of_messages: u32::from_le_bytes([c0, c1, c2, c3]),
            message_length: u32::from_le_bytes([d0, d1, d2, d3]),
        };
        if !(PIPE_STATE_DISCONNECTED..=PIPE_STATE_CLOSING).contains(&reply.named_pipe_state) {
            return Err(DecodeError::InvalidValue {
                field: "NamedPipeState",
                value: u64::from(reply.named_pipe_state),
            });
        }
        if data.len() as u64 > u64::from(reply.read_data_available) {
            return Err(DecodeError::TooLong {
                field: "peek data",
                len: data.len() as u64,
                max: u64::from(reply.read_data_available),
            });
        }
        Ok((reply, data))
    }
}

/// How many data bytes a PEEK reply can carry for an output buffer of
/// `max_output_response` bytes: `Err(STATUS_BUFFER_TOO_SMALL)` when it
/// cannot even hold the 16-byte fixed part.
pub fn peek_data_room(max_output_response: u32) -> Result<usize, NtStatus> {
    (max_output_response as usize)
        .checked_sub(PEEK_HEADER_LEN)
        .ok_or(NtStatus::BUFFER_TOO_SMALL)
}

/// The status of a PEEK reply that returns `returned` of the `available`
/// bytes: `STATUS_BUFFER_OVERFLOW` when the buffer cut the data short,
/// else success.
pub fn peek_status(returned: usize, available: usize) -> NtStatus {
    if returned < available {
        NtStatus::BUFFER_OVERFLOW
    } else {
        NtStatus::SUCCESS
    }
}

/// The status of a transceive (PROTOCOL.md section 4, the seed's rule):
/// `STATUS_BUFFER_OVERFLOW` (a warning; the data is returned) when the
/// output buffer is under [`SMB_PIPE_MAX_MSGSIZE`], the read filled it, and
/// more bytes are waiting; else success.
pub fn transceive_status(
    max_output_response: u32,
    received: usize,
    more_pending: bool,
) -> NtStatus {
    let max = max_output_response as usize;
    if max < SMB_PIPE_MAX_MSGSIZE && received >= max && more_pending {
        NtStatus::BUFFER_OVERFLOW
    } else {
        NtStatus::SUCCESS
    }
}

/// Longest WAIT `Name` accepted, in bytes of UTF-16 (256 code units).
///
/// A flat pipe name is at most 31 bytes, so any longer name fails later
/// anyway; this limit only keeps a hostile `NameLength` from costing
/// anything, while leaving room for a client that sends a longer name so
/// it gets the name error rather than a length error.
pub const MAX_WAIT_NAME_BYTES: usize = 512;

/// Length of the fixed part of a WAIT request.
pub const WAIT_HEADER_LEN: usize = 14;

/// An `FSCTL_PIPE_WAIT` request (MS-FSCC 2.3.49): i64 `Timeout`, u32
/// `NameLength`, u8 `TimeoutSpecified`, u8 padding, then the UTF-16LE name
/// without the `\pipe\` prefix.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Default)]
pub struct WaitRequest {
    /// The raw `Timeout`, in 100 ns units (see [`WaitRequest::timeout`]).
    pub timeout_100ns: i64,
    /// `TimeoutSpecified`: false means "use the server's default".
    pub timeout_specified: bool,
    /// The pipe name, without `\pipe\`.
    pub name: String,
}

impl WaitRequest {
    /// The wire bytes. `TimeoutSpecified` is written as 0 or 1, the padding
    /// as 0.
    ///
    /// # Panics
    ///
    /// If the name's UTF-16 encoding is longer than `u32::MAX` bytes, which
    /// `NameLength` cannot express. (Names over [`MAX_WAIT_NAME_BYTES`] are
    /// encoded, for tests, although a decoder refuses them.)
    pub fn encode(&self) -> Vec<u8> {
        let name: Vec<u8> = self
            .name
            .encode_utf16()
            .flat_map(u16::to_le_bytes)
            .collect();
        let name_len = u32::try_from(name.len()).expect("WAIT name longer than u32::MAX bytes");
        let mut out = Vec::with_capacity(WAIT_HEADER_LEN + name.len());
        out.extend_from_slice(&self.timeout_100ns.to_le_bytes());
        out.extend_from_slice(&name_len.to_le_bytes());
        out.push(u8::from(self.timeout_specified));
        out.push(0);
        out.extend_from_slice(&name);
        out
    }

    /// Decodes a whole request. Refuses: fewer than 14 bytes; a
    /// `NameLength` over [`MAX_WAIT_NAME_BYTES`] or odd; fewer name bytes
    /// than `NameLength` (`UnexpectedEnd`) or more (`TrailingBytes`); a
    /// name that is not valid UTF-16. `TimeoutSpecified` is a MS-FSCC
    /// 2.1.8 Boolean (any non-zero value is true); the padding byte is
    /// ignored, as MS-FSCC requires. An empty name is accepted here (the
    /// name check comes later).
    pub fn decode(buf: &[u8]) -> Result<WaitRequest, DecodeError> {
        let (head, name) =
            buf.split_first_chunk::<WAIT_HEADER_LEN>()
                .ok_or(DecodeError::UnexpectedEnd {
                    field: "wait request",
                    needed: WAIT_HEADER_LEN,
                    remaining: buf.len(),
                })?;
        let [t0, t1, t2, t3, t4, t5, t6, t7, n0, n1, n2, n3, specified, _padding] = *head;
        let timeout_100ns = i64::from_le_bytes([t0, t1, t2, t3, t4, t5, t6, t7]);
        let declared = u32::from_le_bytes([n0, n1, n2, n3]);
        let name_len = match usize::try_from(declared) {
            Ok(n) if n <= MAX_WAIT_NAME_BYTES => n,
            _ => {
                return Err(DecodeError::TooLong {
                    field: "NameLength",
                    len: u64::from(declared),
                    max: MAX_WAIT_NAME_BYTES as u64,
                })
            }
        };
        if name_len % 2 != 0 {
            return Err(DecodeError::InvalidValue {
                field: "NameLength",
                value: u64::from(declared),
            });
        }
        if name.len() < name_len {
            return Err(DecodeError::UnexpectedEnd {
                field: "Name",
                needed: name_len,
                remaining: name.len(),
            });
        }
        if name.len() > name_len {
            return Err(DecodeError::TrailingBytes {
                count: name.len() - name_len,
            });
        }
        let units = name.chunks_exact(2).map(|c| match c {
            [lo, hi] => u16::from_le_bytes([*lo, *hi]),
            _ => 0, // chunks_exact(2) yields only pairs
        });
        let name = char::decode_utf16(units)
            .collect::<Result<String, _>>()
            .map_err(|_| DecodeError::InvalidUtf16 { field: "Name" })?;
        Ok(WaitRequest {
            timeout_100ns,
            timeout_specified: specified != 0,
            name,
        })
    }

    /// How long to wait: `None` when `TimeoutSpecified` is false (the
    /// server's default applies, per PROTOCOL.md; note MS-FSCC 2.3.49
    /// says "wait forever" there).
    ///
    /// The value is taken in 100 ns units (PROTOCOL.md; the MS-FSCC text
    /// says "100 milliseconds", but Windows clients send NT intervals).
    /// A negative value is an NT *relative* interval, which is what Windows'
    /// `WaitNamedPipe` sends (`-milliseconds * 10000`): its magnitude is the
    /// wait. A positive value would be an NT *absolute* time; this layer has
    /// no clock, so it is also taken as a duration (an absolute time is a
    /// huge one: effectively "until the name appears"), and the caller is
    /// expected to cap every wait at its own maximum. 0 means do not wait.
    pub fn timeout(&self) -> Option<Duration> {
        if !self.timeout_specified {
            return None;
        }
        let ticks = self.timeout_100ns.unsigned_abs();
        let secs = ticks / 10_000_000;
        // Below 10^7 ticks, times 100, fits in u32.
        let nanos = (ticks % 10_000_000) as u32 * 100;
        Some(Duration::new(secs, nanos))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn control_codes() {
        // CTL_CODE(FILE_DEVICE_NAMED_PIPE = 0x11, function, method, access).
        let ctl = |func: u32, method: u32, access: u32| {
            (0x11 << 16) | (access << 14) | (func << 2) | method
        };
        assert_eq!(FSCTL_PIPE_PEEK, ctl(3, 0, 1));
        assert_eq!(FSCTL_PIPE_WAIT, ctl(6, 0, 0));
        assert_eq!(FSCTL_PIPE_TRANSCEIVE, ctl(5, 3, 3));
    }

    #[test]
    fn peek_encode_decode() {
        let r = PeekReply {
            named_pipe_state: PIPE_STATE_CONNECTED,
            read_data_available: 5,
            number_of_messages: 0,
            message_length: 0,
        };
        assert_eq!(r.encode(), [3, 0, 0, 0, 5, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        let whole = r.encode_with_data(b"abc");
        assert_eq!(PeekReply::decode(&whole), Ok((r, &b"abc"[..])));
        assert_eq!(PeekReply::decode(&r.encode()), Ok((r, &b""[..])));
        for cut in 0..PEEK_HEADER_LEN {
            assert!(matches!(
                PeekReply::decode(&whole[..cut]),
                Err(DecodeError::UnexpectedEnd { .. })
            ));
        }
        // More data than available.
        let r1 = PeekReply {
            read_data_available: 2,
            ..r
        };
        assert!(matches!(
            PeekReply::decode(&r1.encode_with_data(b"abc")),
            Err(DecodeError::TooLong { .. })
        ));
        // Bad states.
        for state in [0, 5, u32::MAX] {
            let bad = PeekReply {
                named_pipe_state: state,
                ..r
            };
            assert!(matches!(
                PeekReply::decode(&bad.encode()),
                Err(DecodeError::InvalidValue {
                    field: "NamedPipeState",
                    ..
                })
            ));
        }
        let closing = PeekReply {
            named_pipe_state: PIPE_STATE_CLOSING,
            read_data_available: 0,
            ..r
        };
        assert_eq!(
            PeekReply::decode(&closing.encode()),
            Ok((closing, &b""[..]))
        );
    }

    #[test]
    fn peek_rules() {
        assert_eq!(peek_data_room(0), Err(NtStatus::BUFFER_TOO_SMALL));
        assert_eq!(peek_data_room(15), Err(NtStatus::BUFFER_TOO_SMALL));
        assert_eq!(peek_data_room(16), Ok(0));
        assert_eq!(peek_data_room(4096), Ok(4080));
        assert_eq!(peek_data_room(u32::MAX), Ok(u32::MAX as usize - 16));
        assert_eq!(peek_status(0, 0), NtStatus::SUCCESS);
        assert_eq!(peek_status(10, 10), NtStatus::SUCCESS);
        assert_eq!(peek_status(0, 1), NtStatus::BUFFER_OVERFLOW);
    }

    #[test]
    fn transceive_rules() {
        assert_eq!(
            transceive_status(1024, 1024, true),
            NtStatus::BUFFER_OVERFLOW
        );
        assert_eq!(transceive_status(1024, 1024, false), NtStatus::SUCCESS);
        assert_eq!(transceive_status(1024, 1000, true), NtStatus::SUCCESS);
        assert_eq!(transceive_status(4280, 4280, true), NtStatus::SUCCESS);
        assert_eq!(
            transceive_status(4279, 4279, true),
            NtStatus::BUFFER_OVERFLOW
        );
        assert_eq!(transceive_status(0, 0, true), NtStatus::BUFFER_OVERFLOW);
    }

    fn wait(timeout_100ns: i64, specified: bool, name: &str) -> WaitRequest {
        WaitRequest {
            timeout_100ns,
            timeout_specified: specified,
            name: name.into(),
        }
    }

    #[test]
    fn wait_wire_bytes() {
        let w = wait(-50_000_000, true, "srvsvc");
        let enc = w.encode();
        let mut expected = Vec::new();
        expected.extend_from_slice(&(-50_000_000i64).to_le_bytes());
        expected.extend_from_slice(&[12, 0, 0, 0, 1, 0]);
        for c in "srvsvc".bytes() {
            expected.extend_from_slice(&[c, 0]);
        }
        assert_eq!(enc, expected);
        assert_eq!(WaitRequest::decode(&enc), Ok(w));
    }

    #[test]
    fn wait_decode_errors() {
        let enc = wait(0, false, "lsarpc").encode();
        for cut in 0..enc.len() {
            assert!(
                matches!(
                    WaitRequest::decode(&enc[..cut]),
                    Err(DecodeError::UnexpectedEnd { .. })
                ),
                "cut {cut}"
            );
        }
        let mut long = enc.clone();
        long.push(0);
        assert_eq!(
            WaitRequest::decode(&long),
            Err(DecodeError::TrailingBytes { count: 1 })
        );

        let mut odd = enc.clone();
        odd[8] = 11;
        odd.pop();
        assert!(matches!(
            WaitRequest::decode(&odd),
            Err(DecodeError::InvalidValue {
                field: "NameLength",
                ..
            })
        ));

        let mut huge = enc.clone();
        huge[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            WaitRequest::decode(&huge),
            Err(DecodeError::TooLong { .. })
        ));

        // Exactly at the limit is fine; one unit over is not.
        let max_name = "x".repeat(MAX_WAIT_NAME_BYTES / 2);
        assert!(WaitRequest::decode(&wait(0, true, &max_name).encode()).is_ok());
        let over = format!("{max_name}x");
        assert!(matches!(
            WaitRequest::decode(&wait(0, true, &over).encode()),
            Err(DecodeError::TooLong {
                field: "NameLength",
                ..
            })
        ));

        // An unpaired surrogate.
        let mut bad = wait(0, true, "").encode();
        bad[8] = 2;
        bad.extend_from_slice(&0xD800u16.to_le_bytes());
        assert_eq!(
            WaitRequest::decode(&bad),
            Err(DecodeError::InvalidUtf16 { field: "Name" })
        );

        // Boolean and padding.
        let mut b = wait(7, true, "a").encode();
        b[12] = 0x80;
        b[13] = 0xFF;
        assert_eq!(WaitRequest::decode(&b), Ok(wait(7, true, "a")));
        // Empty name: decodes (refused later by the name check).
        assert_eq!(
            WaitRequest::decode(&wait(0, false, "").encode()),
            Ok(wait(0, false, ""))
        );
        // Non-BMP characters travel as surrogate pairs.
        assert_eq!(
            WaitRequest::decode(&wait(1, true, "\u{1F600}").encode()),
            Ok(wait(1, true, "\u{1F600}"))
        );
    }

    #[test]
    fn wait_timeout() {
        assert_eq!(wait(-50_000_000, false, "x").timeout(), None);
        assert_eq!(
            wait(-50_000_000, true, "x").timeout(),
            Some(Duration::from_secs(5))
        );
        assert_eq!(
            wait(50_000_000, true, "x").timeout(),
            Some(Duration::from_secs(5))
        );
        assert_eq!(wait(0, true, "x").timeout(), Some(Duration::ZERO));
        assert_eq!(
            wait(-1, true, "x").timeout(),
            Some(Duration::from_nanos(100))
        );
        assert_eq!(
            wait(i64::MIN, true, "x").timeout(),
            Some(Duration::new(922_337_203_685, 477_580_800))
        );
        assert!(wait(i64::MAX, true, "x").timeout().is_some());
    }

    proptest! {
        #[test]
        fn peek_round_trip(state in 1u32..=4, avail: u32, n: u32, m: u32, data in proptest::collection::vec(any::<u8>(), 0..64)) {
            let r = PeekReply { named_pipe_state: state, read_data_available: avail.max(data.len() as u32), number_of_messages: n, message_length: m };
            let enc = r.encode_with_data(&data);
            prop_assert_eq!(PeekReply::decode(&enc), Ok((r, &data[..])));
        }

        #[test]
        fn wait_round_trip(t: i64, s: bool, name in "\\PC{0,64}") {
            let w = wait(t, s, &name);
            let enc = w.encode();
            if enc.len() - WAIT_HEADER_LEN <= MAX_WAIT_NAME_BYTES {
                prop_assert_eq!(WaitRequest::decode(&enc), Ok(w));
            } else {
                prop_assert!(WaitRequest::decode(&enc).is_err());
            }
        }

        #[test]
        fn decoders_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = PeekReply::decode(&bytes);
            if let Ok(w) = WaitRequest::decode(&bytes) {
                // Canonical inputs re-encode to themselves.
                if bytes[12] <= 1 && bytes[13] == 0 {
                    prop_assert_eq!(w.encode(), bytes);
                }
            }
        }
    }
}
