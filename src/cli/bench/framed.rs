//! Samba's message framing for the peers that talk to the socket
//! themselves (`threads`, `tokio`): one helper for both, with no I/O in it,
//! so that a blocking and an async peer run the very same steps. opipe's
//! engine frames and unframes on its own (`EngineConfig::dialect`).
//!
//! * [`framed`]: a message as written, behind its `u16` little-endian
//!   length (more than 65535 bytes as several messages, as the engine does);
//! * [`Inbox`]: bytes read from the socket, cut into whole messages;
//! * [`ReplyCollector`]: a transceive's reply assembled from messages with
//!   the message-mode rules of [`exchange`](super::exchange): the first
//!   message is the transceive's one read, cut at `max_out`
//!   (`STATUS_BUFFER_OVERFLOW` when it is longer), the following ones are
//!   the ordinary reads of the rest.
//!
//! A peer's receive loop is then: `while collector.take(inbox, buf)? is
//! None { n = read(inbox.spare()); inbox.filled(n) }`.

use std::ops::Range;

use opipe::protocol::npa::{FRAME_HEADER_LEN, MAX_FRAMED_MESSAGE};
use opipe::protocol::NtStatus;

use super::exchange::{Exchange, ReplyProgress, TransceiveError};

/// Bytes read from a message-mode socket, not yet taken as messages. Holds
/// at most one whole message plus whatever one read brought after it
/// (64 KiB and a header).
#[derive(Debug)]
pub struct Inbox {
    buf: Vec<u8>,
    /// The first byte not yet taken.
    head: usize,
    /// The end of the bytes read.
    tail: usize,
}

impl Default for Inbox {
    fn default() -> Self {
        Inbox::new()
    }
}

impl Inbox {
    /// Room for the largest message and its header.
    pub fn new() -> Inbox {
        Inbox {
            buf: vec![0; FRAME_HEADER_LEN + MAX_FRAMED_MESSAGE],
            head: 0,
            tail: 0,
        }
    }

    /// Where the next read goes: never empty (the bytes not yet taken are
    /// moved to the front first when the end of the buffer is reached).
    pub fn spare(&mut self) -> &mut [u8] {
        if self.head == self.tail {
            self.head = 0;
            self.tail = 0;
        } else if self.tail == self.buf.len() {
            self.buf.copy_within(self.head..self.tail, 0);
            self.tail -= self.head;
            self.head = 0;
        }
        &mut self.buf[self.tail..]
    }

    /// `n` bytes were read into [`spare`](Self::spare).
    pub fn filled(&mut self, n: usize) {
        self.tail = (self.tail + n).min(self.buf.len());
    }

    /// Takes the next whole message, if one has arrived: the range of its
    /// bytes for [`bytes`](Self::bytes) (valid until the next `spare`).
    pub fn next_message(&mut self) -> Option<Range<usize>> {
        let have = &self.buf[self.head..self.tail];
        let (header, rest) = have.split_first_chunk::<FRAME_HEADER_LEN>()?;
        let len = usize::from(u16::from_le_bytes(*header));
        if rest.len() < len {
            return None;
        }
        let start = self.head + FRAME_HEADER_LEN;
        self.head = start + len;
        Some(start..start + len)
    }

    /// The bytes of a message [`next_message`](Self::next_message) took.
    pub fn bytes(&self, message: Range<usize>) -> &[u8] {
        &self.buf[message]
    }

    /// Bytes read and not yet taken.
    #[cfg(test)]
    pub fn pending(&self) -> usize {
        self.tail - self.head
    }
}

/// One transceive's reply, assembled from messages.
#[derive(Debug, Default)]
pub struct ReplyCollector {
    progress: Option<ReplyProgress>,
}

impl ReplyCollector {
    /// Nothing received yet.
    pub fn new() -> ReplyCollector {
        ReplyCollector::default()
    }

    /// Takes the whole messages `inbox` holds into `buf`, until the reply
    /// is complete; then returns its progress (the reply is
    /// `buf[..progress.len()]`). `None`: more bytes must be read first.
    /// A message that would run past the expected reply, or an empty one,
    /// is a wrong reply.
    pub fn take(
        &mut self,
        x: &Exchange,
        inbox: &mut Inbox,
        buf: &mut [u8],
    ) -> Result<Option<ReplyProgress>, TransceiveError> {
        loop {
            if let Some(p) = self.progress {
                if p.missing().is_none() {
                    return Ok(Some(p));
                }
            }
            let Some(msg) = inbox.next_message() else {
                return Ok(None);
            };
            let m = inbox.bytes(msg);
            let at = self.progress.map_or(0, |p| p.len());
            if m.is_empty() {
                return Err(TransceiveError::BadReply(format!(
                    "an empty message at byte {at} of the reply"
                )));
            }
            let room = x.reply_len().min(buf.len());
            if at + m.len() > room {
                return Err(TransceiveError::BadReply(format!(
                    "a {}-byte message at byte {at} runs past the {}-byte reply",
                    m.len(),
                    x.reply_len()
                )));
            }
            buf[at..at + m.len()].copy_from_slice(m);
            match &mut self.progress {
                None => {
                    // The transceive's one read: the message, cut at max_out.
                    let first = m.len().min(x.max_out());
                    let status = if m.len() > first {
                        NtStatus::BUFFER_OVERFLOW
                    } else {
                        NtStatus::SUCCESS
                    };
                    let mut p = x.first_read_with_status(first, status)?;
                    if m.len() > first {
                        p.advance(m.len() - first)?;
                    }
                    self.progress = Some(p);
                }
                Some(p) => p.advance(m.len())?,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::exchange::Call;
    use crate::bench::measure::StopRule;
    use crate::bench::spec::{RunSpec, WireSize};
    use opipe::protocol::npa::frame_messages as framed;
    use opipe::protocol::{dcerpc, Dialect};

    fn exchange(reply: usize, max_out: usize) -> Exchange {
        Exchange::new(&RunSpec {
            pipes: 1,
            request: WireSize::from_wire(64).unwrap(),
            reply: WireSize::from_wire(reply).unwrap(),
            max_out,
            stop: StopRule::Requests(1),
            dialect: Dialect::Samba,
            call: Call::Pattern,
            open_concurrency: 0,
        })
        .unwrap()
    }

    #[test]
    fn framing_splits_long_messages() {
        assert_eq!(framed(b"abc"), vec![3, 0, b'a', b'b', b'c']);
        assert_eq!(framed(&[]), vec![0, 0]);
        let long = vec![7u8; MAX_FRAMED_MESSAGE + 5];
        let f = framed(&long);
        assert_eq!(f.len(), long.len() + 4);
        assert_eq!(&f[..2], &[0xff, 0xff]);
        assert_eq!(&f[2 + MAX_FRAMED_MESSAGE..4 + MAX_FRAMED_MESSAGE], &[5, 0]);
    }

    #[test]
    fn inbox_cuts_messages_across_reads() {
        let mut inbox = Inbox::new();
        let wire = [framed(b"hello"), framed(b"world!")].concat();
        // One byte per read: nothing until a message is whole.
        let mut got = Vec::new();
        for b in &wire {
            inbox.spare()[0] = *b;
            inbox.filled(1);
            while let Some(m) = inbox.next_message() {
                got.push(inbox.bytes(m).to_vec());
            }
        }
        assert_eq!(got, vec![b"hello".to_vec(), b"world!".to_vec()]);
        assert_eq!(inbox.pending(), 0);
        // A whole buffer's worth, then more: the rest moves to the front.
        let big = framed(&vec![1u8; MAX_FRAMED_MESSAGE - 10]);
        let next = framed(b"0123456789abcdef");
        let all = [big.clone(), next].concat();
        let s = inbox.spare();
        let n = s.len();
        s.copy_from_slice(&all[..n]);
        inbox.filled(n);
        let m = inbox.next_message().unwrap();
        assert_eq!(inbox.bytes(m).len(), MAX_FRAMED_MESSAGE - 10);
        assert!(inbox.next_message().is_none());
        let s = inbox.spare();
        let rest = &all[n..];
        s[..rest.len()].copy_from_slice(rest);
        inbox.filled(rest.len());
        let m = inbox.next_message().unwrap();
        assert_eq!(inbox.bytes(m), b"0123456789abcdef");
    }

    /// The reply of the dcerpc service, one message per fragment.
    fn reply_messages(x: &Exchange, wire: usize, call_id: u32) -> Vec<u8> {
        let stub = WireSize::from_wire(wire).unwrap().stub_bytes;
        let stub: Vec<u8> = (0..stub)
            .map(opipe::service::dcerpc::reply_stub_byte)
            .collect();
        let pdus = dcerpc::encode_response(call_id, 0, &stub, dcerpc::DEFAULT_MAX_FRAG);
        let mut out = Vec::new();
        let mut at = 0;
        while at < pdus.len() {
            let len = dcerpc::pdu_len(&pdus[at..], dcerpc::DEFAULT_MAX_FRAG)
                .unwrap()
                .unwrap();
            out.extend(framed(&pdus[at..at + len]));
            at += len;
        }
        let _ = x;
        out
    }

    fn collect(x: &Exchange, wire: &[u8]) -> Result<(ReplyProgress, Vec<u8>), TransceiveError> {
        let mut inbox = Inbox::new();
        let mut buf = vec![0u8; x.reply_len().max(x.max_out())];
        let mut c = ReplyCollector::new();
        for chunk in wire.chunks(1000) {
            inbox.spare()[..chunk.len()].copy_from_slice(chunk);
            inbox.filled(chunk.len());
            if let Some(p) = c.take(x, &mut inbox, &mut buf)? {
                return Ok((p, buf[..p.len()].to_vec()));
            }
        }
        Err(TransceiveError::Closed)
    }

    #[test]
    fn replies_are_assembled_from_messages() {
        // Two fragments, two messages; max_out 4280: no overflow.
        let x = exchange(8192, 4280);
        let (p, reply) = collect(&x, &reply_messages(&x, 8192, 5)).unwrap();
        assert!(!p.overflow());
        x.verify(&reply, 5).unwrap();
        // A first message longer than max_out: overflow, the rest read on.
        let x = exchange(200, 100);
        let (p, reply) = collect(&x, &reply_messages(&x, 200, 6)).unwrap();
        assert!(p.overflow());
        x.verify(&reply, 6).unwrap();
        // Exactly max_out: success.
        let x = exchange(100, 100);
        let (p, _) = collect(&x, &reply_messages(&x, 100, 7)).unwrap();
        assert!(!p.overflow());
    }

    #[test]
    fn messages_past_the_reply_or_empty_are_wrong() {
        let x = exchange(64, 4280);
        let mut wire = reply_messages(&x, 64, 1);
        wire.truncate(2 + 60);
        wire[0] = 60;
        // 60 bytes then a 10-byte message: runs past the 64-byte reply.
        wire.extend(framed(&[0u8; 10]));
        assert!(matches!(
            collect(&x, &wire),
            Err(TransceiveError::BadReply(_))
        ));
        assert!(matches!(
            collect(&x, &framed(&[])),
            Err(TransceiveError::BadReply(_))
        ));
    }
}
