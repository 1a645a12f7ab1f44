//! Cutting a byte stream into whole PDUs by their `frag_length`
//! ([`pdu_len`], [`PduReassembler`]).

use super::header::{frag_length, CommonHeader, COMMON_HEADER_LEN};
use crate::protocol::error::DecodeError;

/// How long the PDU at the start of `buf` is, from its `frag_length`
/// (PROTOCOL.md section 3).
///
/// `Ok(None)`: fewer than 16 bytes yet. `Err`: the header is invalid (see
/// [`CommonHeader::decode`]), or `frag_length` is under the header size (16,
/// or 24 for request, response and fault) or over `max_frag`; the stream
/// cannot be framed any further. `Ok(Some(n))`: the PDU is `n` bytes, which
/// `buf` may or may not hold yet.
pub fn pdu_len(buf: &[u8], max_frag: u16) -> Result<Option<usize>, DecodeError> {
    if buf.len() < COMMON_HEADER_LEN {
        return Ok(None);
    }
    let header = CommonHeader::decode(buf)?;
    let len = frag_length(&header)?;
    if len > usize::from(max_frag) {
        return Err(DecodeError::TooLong {
            field: "frag_length",
            len: len as u64,
            max: u64::from(max_frag),
        });
    }
    Ok(Some(len))
}

/// Cuts a byte stream into whole PDUs by their `frag_length`.
///
/// Use: [`push`](PduReassembler::push) what the socket gave, then call
/// [`next_pdu`](PduReassembler::next_pdu) until it returns `None`. Done that
/// way, it never holds more than `max_frag - 1` bytes between pushes, so a
/// hostile stream can make it buffer at most `max_frag` plus the bytes just
/// pushed, whatever `frag_length` it claims.
///
/// A framing error (see [`pdu_len`]) is final: the stream cannot be
/// re-synchronised. `next_pdu` returns the error once and then `None`
/// forever, and the reassembler drops its buffer and all later input; the
/// connection should be closed.
#[derive(Debug)]
pub struct PduReassembler {
    max_frag: u16,
    /// Received bytes; those before `start` were already handed out.
    buf: Vec<u8>,
    start: usize,
    failed: Option<DecodeError>,
    reported: bool,
}

impl PduReassembler {
    /// A reassembler refusing PDUs longer than `max_frag` bytes.
    pub fn new(max_frag: u16) -> Self {
        PduReassembler {
            max_frag,
            buf: Vec::new(),
            start: 0,
            failed: None,
            reported: false,
        }
    }

    fn pending(&self) -> &[u8] {
        self.buf.get(self.start..).unwrap_or(&[])
    }

    /// Appends bytes read from the stream (dropped after a framing error).
    /// A header that fails [`pdu_len`] at the front of the buffer is
    /// detected here already, so bytes behind it are never kept.
    pub fn push(&mut self, bytes: &[u8]) {
        if self.failed.is_some() {
            return;
        }
        // Drop what was handed out before growing, so the buffer holds only
        // pending bytes plus this push. Amortised: each byte moves at most
        // once per push.
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
        if let Err(e) = pdu_len(&self.buf, self.max_frag) {
            self.fail(e);
        }
    }

    fn fail(&mut self, e: DecodeError) {
        self.failed = Some(e);
        self.buf = Vec::new();
        self.start = 0;
    }

    /// The next whole PDU, if the buffer holds one; `Some(Err)` once after
    /// a framing error. Each PDU is copied out into its own exactly-sized
    /// vector, so taking many PDUs from one large push costs linear time.
    pub fn next_pdu(&mut self) -> Option<Result<Vec<u8>, DecodeError>> {
        if let Some(e) = &self.failed {
            if self.reported {
                return None;
            }
            self.reported = true;
            return Some(Err(e.clone()));
        }
        let pending = self.pending();
        match pdu_len(pending, self.max_frag) {
            Ok(None) => None,
            Ok(Some(len)) => {
                let pdu = pending.get(..len)?.to_vec();
                self.start += len;
                if self.start == self.buf.len() {
                    self.buf.clear();
                    self.start = 0;
                }
                // The next header, if complete, is checked now rather than
                // at the next push.
                if let Err(e) = pdu_len(self.pending(), self.max_frag) {
                    self.fail(e);
                }
                Some(Ok(pdu))
            }
            Err(e) => {
                self.fail(e.clone());
                self.reported = true;
                Some(Err(e))
            }
        }
    }

    /// Bytes held that have not been handed out as a PDU yet.
    pub fn buffered(&self) -> usize {
        self.pending().len()
    }

    /// The framing error that stopped this stream, if any.
    pub fn error(&self) -> Option<&DecodeError> {
        self.failed.as_ref()
    }

    /// The maximum fragment length this reassembler accepts.
    pub fn max_frag(&self) -> u16 {
        self.max_frag
    }
}
