//! The message framing after a successful handshake: each message is a
//! `u16` little-endian length and that many bytes.

use std::io::{self, Read};

use crate::protocol::error::EncodeError;

/// Length of the message framing header.
pub const FRAME_HEADER_LEN: usize = 2;
/// Longest framed message (the header is a `u16`).
pub const MAX_FRAMED_MESSAGE: usize = u16::MAX as usize;

/// The 2-byte header of a message of `len` bytes; over
/// [`MAX_FRAMED_MESSAGE`] is refused.
pub fn frame_header(len: usize) -> Result<[u8; FRAME_HEADER_LEN], EncodeError> {
    u16::try_from(len)
        .map(u16::to_le_bytes)
        .map_err(|_| EncodeError::MessageTooLong {
            len,
            max: MAX_FRAMED_MESSAGE,
        })
}

/// `msg` with its header in front.
pub fn frame_message(msg: &[u8]) -> Result<Vec<u8>, EncodeError> {
    let header = frame_header(msg.len())?;
    let mut out = Vec::with_capacity(FRAME_HEADER_LEN + msg.len());
    out.extend_from_slice(&header);
    out.extend_from_slice(msg);
    Ok(out)
}

/// `data` as messages: one per [`MAX_FRAMED_MESSAGE`] bytes (a longer
/// write is split, as Samba's own writer splits it; an empty write is one
/// empty message).
pub fn frame_messages(data: &[u8]) -> Vec<u8> {
    let n = data.len().div_ceil(MAX_FRAMED_MESSAGE).max(1);
    let mut out = Vec::with_capacity(data.len() + n * FRAME_HEADER_LEN);
    let mut chunks = data.chunks(MAX_FRAMED_MESSAGE);
    for _ in 0..n {
        let c = chunks.next().unwrap_or_default();
        // A chunk is at most u16::MAX bytes long.
        out.extend_from_slice(&(c.len() as u16).to_le_bytes());
        out.extend_from_slice(c);
    }
    out
}

/// The first whole message at the front of `buf` and the bytes it took
/// (header included), or `None` while it is incomplete.
pub fn unframe_message(buf: &[u8]) -> Option<(&[u8], usize)> {
    let (header, rest) = buf.split_first_chunk::<FRAME_HEADER_LEN>()?;
    let len = usize::from(u16::from_le_bytes(*header));
    let msg = rest.get(..len)?;
    Some((msg, FRAME_HEADER_LEN + len))
}

/// Cuts a byte stream into messages: push bytes as they arrive, take whole
/// messages out. Holds at most what was pushed and not yet taken.
#[derive(Debug, Default)]
pub struct MessageUnframer {
    buf: Vec<u8>,
    start: usize,
}

impl MessageUnframer {
    /// An empty unframer.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends bytes read from the stream.
    pub fn push(&mut self, bytes: &[u8]) {
        if self.start > 0 && self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        } else if self.start > 64 * 1024 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// The next whole message, if one has arrived.
    pub fn next_message(&mut self) -> Option<Vec<u8>> {
        let pending = self.buf.get(self.start..)?;
        let (msg, used) = unframe_message(pending)?;
        let msg = msg.to_vec();
        self.start += used;
        Some(msg)
    }

    /// Bytes pushed and not yet taken as messages.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.start
    }

    /// How many more bytes the message at the front needs (at least 1 when
    /// no whole message is buffered, 0 when one is).
    pub fn needed(&self) -> usize {
        let pending = self.buf.get(self.start..).unwrap_or(&[]);
        match pending.split_first_chunk::<FRAME_HEADER_LEN>() {
            None => FRAME_HEADER_LEN - pending.len(),
            Some((header, rest)) => {
                usize::from(u16::from_le_bytes(*header)).saturating_sub(rest.len())
            }
        }
    }
}

/// Reads framed messages from a blocking reader.
#[derive(Debug)]
pub struct FramedReader<R> {
    inner: R,
}

impl<R: Read> FramedReader<R> {
    /// Wraps `inner`.
    pub fn new(inner: R) -> Self {
        FramedReader { inner }
    }

    /// The reader back.
    pub fn into_inner(self) -> R {
        self.inner
    }

    /// The next message; `Ok(None)` at a clean end of stream (before a
    /// header), `UnexpectedEof` for a stream cut inside a message.
    pub fn read_message(&mut self) -> io::Result<Option<Vec<u8>>> {
        let mut header = [0u8; FRAME_HEADER_LEN];
        let mut got = 0;
        while got < FRAME_HEADER_LEN {
            match self.inner.read(&mut header[got..]) {
                Ok(0) if got == 0 => return Ok(None),
                Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        let mut msg = vec![0u8; usize::from(u16::from_le_bytes(header))];
        self.inner.read_exact(&mut msg)?;
        Ok(Some(msg))
    }
}
