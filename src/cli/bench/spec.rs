//! What one run is asked to do: how many pipes, the sizes on the wire, the
//! transceive's output limit, and when to stop.
//!
//! # Sizes are bytes on the wire
//!
//! `--request-size` is the length of the whole request as written to the
//! socket, DCE/RPC headers included; `--reply-size` the same for the whole
//! reply. One fragment carries a 24-byte header (the 16-byte common header
//! plus alloc_hint, context id and cancel count) and at most
//! [`MAX_FRAG_BYTES`] bytes in all, so:
//!
//! * a size `W <= 4280` is one fragment with `W - 24` stub bytes;
//! * a size `W > 4280` is `n = ceil(W / 4280)` fragments with
//!   `W - 24 * n` stub bytes: `n - 1` full fragments of 4280 bytes and a
//!   last one of `W - 4280 * (n - 1)` bytes. That last fragment must hold
//!   more than its header, so the 24 sizes just above each multiple of 4280
//!   (4281..=4304, 8561..=8584, ...) cannot be produced and are refused.
//!
//! The 64/64 default is a 64-byte request PDU (24-byte header, 40 stub
//! bytes) and a single 64-byte response PDU (24-byte header, 40 stub bytes).

use opipe::protocol::{dcerpc, Dialect};

use super::measure::StopRule;

/// What each measured transceive is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    /// A request of `--request-size` answered by `opipe serve --handler
    /// dcerpc` with `--reply-size` bytes of its stub pattern.
    Pattern,
    /// srvsvc `NetrServerGetInfo(\\<server_name>, 101)` after one bind per
    /// pipe; the reply must decode to `server_name` with `WERR_OK`.
    ServerInfo {
        /// The server name the reply must carry (Samba's `netbios name`).
        server_name: String,
    },
}

/// Bytes of a request or response PDU header (common header + 8).
pub const PDU_HEADER_BYTES: usize = dcerpc::REQUEST_HEADER_LEN;
const _: () = assert!(dcerpc::REQUEST_HEADER_LEN == dcerpc::RESPONSE_HEADER_LEN);
/// The largest fragment either side sends (the illumos default).
pub const MAX_FRAG_BYTES: usize = dcerpc::DEFAULT_MAX_FRAG as usize;
/// Largest `--request-size` / `--reply-size` accepted.
pub const MESSAGE_BYTES_MAX: usize = 16 << 20;
/// Largest `--max-out` accepted.
pub const MAX_OUT_BYTES_MAX: usize = 16 << 20;

/// A message size on the wire and the stub that produces it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WireSize {
    /// Bytes on the wire, all fragments and headers.
    pub wire_bytes: usize,
    /// Stub (payload) bytes over all fragments.
    pub stub_bytes: usize,
    /// Number of fragments.
    pub fragments: usize,
}

impl WireSize {
    /// The message of `wire_bytes` on the wire, or why there is none.
    pub fn from_wire(wire_bytes: usize) -> Result<WireSize, String> {
        if wire_bytes < PDU_HEADER_BYTES {
            return Err(format!(
                "{wire_bytes} bytes is less than one PDU header ({PDU_HEADER_BYTES} bytes); \
                 sizes are bytes on the wire, headers included"
            ));
        }
        if wire_bytes > MESSAGE_BYTES_MAX {
            return Err(format!(
                "{wire_bytes} bytes is more than the {MESSAGE_BYTES_MAX}-byte maximum"
            ));
        }
        let fragments = wire_bytes.div_ceil(MAX_FRAG_BYTES);
        let stub_bytes = wire_bytes - PDU_HEADER_BYTES * fragments;
        let size = WireSize {
            wire_bytes,
            stub_bytes,
            fragments,
        };
        if WireSize::from_stub(stub_bytes) != size {
            let below = MAX_FRAG_BYTES * (fragments - 1);
            return Err(format!(
                "{wire_bytes} bytes cannot be produced: fragments are at most \
                 {MAX_FRAG_BYTES} bytes and each starts with a {PDU_HEADER_BYTES}-byte header, \
                 so the nearest sizes are {below} and {}",
                below + PDU_HEADER_BYTES + 1
            ));
        }
        Ok(size)
    }

    /// The message a sender produces for `stub_bytes` of stub, cutting it
    /// into fragments of at most [`MAX_FRAG_BYTES`] (as the protocol's
    /// `encode_request`/`encode_response` do).
    pub fn from_stub(stub_bytes: usize) -> WireSize {
        let wire_bytes = dcerpc::encoded_call_len(stub_bytes, dcerpc::DEFAULT_MAX_FRAG);
        WireSize {
            wire_bytes,
            stub_bytes,
            fragments: (wire_bytes - stub_bytes) / PDU_HEADER_BYTES,
        }
    }
}

/// Parses a `--request-size`/`--reply-size` value (clap value parser).
pub fn parse_wire_size(s: &str) -> Result<WireSize, String> {
    let n: usize = s
        .trim()
        .parse()
        .map_err(|_| format!("`{s}` is not a byte count"))?;
    WireSize::from_wire(n)
}

/// Parses a `--max-out` value (clap value parser).
pub fn parse_max_out(s: &str) -> Result<usize, String> {
    let n: usize = s
        .trim()
        .parse()
        .map_err(|_| format!("`{s}` is not a byte count"))?;
    if n == 0 || n > MAX_OUT_BYTES_MAX {
        return Err(format!("must be between 1 and {MAX_OUT_BYTES_MAX} bytes"));
    }
    Ok(n)
}

/// Everything a peer needs to know about one run.
#[derive(Debug, Clone)]
pub struct RunSpec {
    /// Pipes to open and drive concurrently.
    pub pipes: usize,
    /// The request each transceive writes.
    pub request: WireSize,
    /// The reply each transceive must read back.
    pub reply: WireSize,
    /// MaxOutputResponse: the length of the transceive's one read.
    pub max_out: usize,
    /// When to stop.
    pub stop: StopRule,
    /// The pipes' dialect (handshake, framing, socket path).
    pub dialect: Dialect,
    /// What each transceive is.
    pub call: Call,
    /// Pipes that may be opening (connect, handshake and bind) at once;
    /// 0: no limit. samba-dcerpcd 4.17 leaves some binds unanswered when
    /// many arrive at once on fresh connections.
    pub open_concurrency: usize,
}

impl RunSpec {
    /// Size every pipe's reply buffer must have: the one read of `max_out`
    /// and the whole reply must both fit.
    pub fn reply_buffer_bytes(&self) -> usize {
        self.max_out.max(self.reply.wire_bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_sizes_are_one_fragment() {
        let s = WireSize::from_wire(64).unwrap();
        assert_eq!((s.stub_bytes, s.fragments), (40, 1));
        let s = WireSize::from_wire(24).unwrap();
        assert_eq!((s.stub_bytes, s.fragments), (0, 1));
        let s = WireSize::from_wire(4280).unwrap();
        assert_eq!((s.stub_bytes, s.fragments), (4256, 1));
    }

    #[test]
    fn large_sizes_are_fragmented_and_round_trip() {
        for wire in [4305, 8192, 8560, 8585, 65536, 1 << 20] {
            let s = WireSize::from_wire(wire).unwrap();
            assert_eq!(WireSize::from_stub(s.stub_bytes), s, "{wire}");
            assert_eq!(s.wire_bytes, wire);
        }
        let s = WireSize::from_wire(8192).unwrap();
        assert_eq!((s.stub_bytes, s.fragments), (8144, 2));
    }

    #[test]
    fn unreachable_and_tiny_sizes_are_refused() {
        for wire in [0, 3, 23, 4281, 4304, 8561, 8584] {
            assert!(WireSize::from_wire(wire).is_err(), "{wire}");
        }
        assert!(parse_wire_size("3").unwrap_err().contains("header"));
        assert!(parse_wire_size("x").is_err());
        assert!(parse_max_out("0").is_err());
        assert_eq!(parse_max_out("100").unwrap(), 100);
    }
}
