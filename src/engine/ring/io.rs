//! Requests on an open pipe: how each one starts (which SQEs, or none),
//! the transceive chain, and how a received reply is claimed (what each
//! completion means: `io_done`).

use std::sync::atomic::Ordering;

use super::overflow;
use super::*;
use crate::engine::command::{Notify, PipeIo};
use crate::engine::{BufferMode, PipeId};
use crate::protocol::{fsctl, NtStatus};
use crate::ring::{Op, OpDriver, Sock};

impl<D: OpDriver> Core<D> {
    /// An open pipe of this ring that takes requests (not closing).
    pub(super) fn live_pipe(&mut self, pipe: PipeId) -> Result<&mut PipeEntry, NtStatus> {
        live_entry(&mut self.pipes, self.ring_index, pipe)
    }

    /// A live pipe's socket, for its ops, and session. Named by
    /// descriptor where the driver can ([`Sock::Kept`]: the pipe entry
    /// outlives its ops), with no look at the socket's count.
    pub(super) fn pipe_fd(&mut self, pipe: PipeId) -> Result<(Sock, u64), NtStatus> {
        let kept = self.drv.features().kept_sockets;
        self.live_pipe(pipe).map(|p| (p.sock(kept), p.session))
    }

    pub(crate) fn start_io(&mut self, pipe: PipeId, io: PipeIo, notify: Notify) {
        self.settle_lent();
        if let Notify::Shared(s) = &notify {
            if s.cancel_requested.load(Ordering::SeqCst) {
                return self.reject(notify, NtStatus::CANCELLED);
            }
        }
        let max_out = match &io {
            PipeIo::Transceive { max_out, .. }
            | PipeIo::Read { max_out }
            | PipeIo::Peek { max_out } => *max_out,
            PipeIo::Write { .. } => 0,
        };
        let input_len = match &io {
            PipeIo::Transceive { input, .. } => input.len(),
            PipeIo::Write { data } => data.len(),
            PipeIo::Read { .. } | PipeIo::Peek { .. } => 0,
        };
        // The pipe's entry is looked up once: whether it takes requests,
        // where the reply comes from, its socket and session.
        let rules = self.reply_rules(pipe);
        let kept = self.drv.features().kept_sockets;
        let pe = match self.live_pipe(pipe) {
            Ok(pe) => pe,
            Err(s) => return self.reject(notify, s),
        };
        if max_out > MAX_IO_BYTES || input_len > MAX_IO_BYTES {
            // Larger than any SMB2 read, write or IOCTL: refuse rather than
            // allocate it (and no SQE length is ever truncated to 32 bits).
            return self.reject(notify, NtStatus::INVALID_PARAMETER);
        }
        let from = match rules.reply_from(pe, &io, max_out) {
            Ok(from) => from,
            Err(hold) => return self.defer(pipe, io, notify, hold),
        };
        if let (PipeIo::Read { max_out }, ReplyFrom::Pushback) = (&io, from) {
            // No op and no SQE: the socket is not needed (nor, where the
            // driver holds sockets by count, that count touched).
            return self.read_pushback(pipe, *max_out, notify);
        }
        let (fd, session) = (pe.sock(kept), pe.session);
        let at = Start {
            pipe,
            fd,
            session,
            from,
        };
        match io {
            PipeIo::Transceive { input, max_out } => {
                self.start_transceive(at, input, max_out, notify)
            }
            PipeIo::Read { max_out } => self.start_read(at, max_out, notify),
            PipeIo::Write { data } => self.start_write(at, data, notify),
            PipeIo::Peek { max_out } => self.start_peek(at, max_out, notify),
        }
    }

    /// Pushes the SEND of a transceive's `buf[start..]`: held (the bytes
    /// stay in the op entry, the driver keeps no slot) where the driver
    /// can, else in a driver slot. Only a kept socket's send is held (the
    /// pipe entry keeps it open): no other `Sock` is cloned to be refused.
    fn push_request_send(&mut self, key: (u32, u32), fd: Sock, buf: SendBuf, start: usize) {
        let held = match fd {
            Sock::Kept(raw) => {
                self.drv
                    .push_send_held(Sock::Kept(raw), buf, start, token(key, ST_SEND))
            }
            Sock::Held(_) => Err(buf),
        };
        match held {
            Ok((id, held)) => {
                if let Some(e) = self.ops.get_mut(key.0, key.1) {
                    if let Kind::Transceive { input, .. } = &mut e.kind {
                        *input = Input::Held(held);
                    }
                    e.record_chain(&[id]);
                }
            }
            Err(buf) => self.push_single_as(key, key, Op::Send { fd, buf, start }, ST_SEND),
        }
    }

    /// What decides where a request's reply comes from, besides its pipe's
    /// entry.
    pub(super) fn reply_rules(&self, pipe: PipeId) -> ReplyRules {
        ReplyRules {
            pool_buf: self.drv.recv_pool_buf_bytes(),
            msg_mode: self.message_mode(),
            multishot_ok: self.cfg.multishot
                && !self.multishot_disabled
                && self.cfg.buffers == BufferMode::Plain,
            lent_rest: self.lent_rest.is_some_and(|(p, _)| p == pipe),
        }
    }

    /// Parks a request until `reply_from` lets it start. One that needs a
    /// receive of its own stops the multishot receive (once no request
    /// waits for it); what that receive took by then is in the pushback,
    /// which comes first.
    fn defer(&mut self, pipe: PipeId, io: PipeIo, notify: Notify, hold: Hold) {
        let Some(pe) = self.pipes.get_mut(pipe.index, pipe.gen) else {
            return self.reject(notify, NtStatus::INVALID_HANDLE);
        };
        if pe.deferred.len() >= MAX_DEFERRED {
            // A caller that piles requests on one stalled pipe.
            return self.reject(notify, NtStatus::INSUFFICIENT_RESOURCES);
        }
        let stop = hold == Hold::OwnReceive && pe.waiters.is_empty();
        pe.deferred.push_back((io, notify));
        if stop {
            self.stop_multishot(pipe);
        }
    }

    fn start_transceive(&mut self, at: Start, input: SendBuf, max_out: usize, notify: Notify) {
        let msg_mode = self.message_mode();
        let input = if msg_mode {
            SendBuf::Owned(overflow::frame_messages(&input))
        } else {
            input
        };
        // A reply from the pushback is the request's from the start: its
        // bytes are the oldest waiting, and no later request may take them.
        let pushback = match at.from {
            ReplyFrom::Pushback => self.pipes.get_mut(at.pipe.index, at.pipe.gen),
            _ => None,
        };
        let reply = match pushback {
            Some(pe) if msg_mode => {
                match overflow::take_message(&mut pe.pushback, &mut pe.msg_left, max_out) {
                    Some((data, more)) => Reply::Got {
                        data,
                        more: if more { More::Yes } else { More::No },
                    },
                    None => {
                        debug_assert!(false, "reply_from saw a whole message");
                        Reply::Awaited
                    }
                }
            }
            Some(pe) => {
                let data = overflow::take_pushback(&mut pe.pushback, max_out);
                let more = if pe.pushback.is_empty() {
                    More::Unknown
                } else {
                    More::Yes
                };
                Reply::Got { data, more }
            }
            None => Reply::Awaited,
        };
        // A SEND that goes alone (the common request: its reply is the
        // multishot receive's next chunk) is pushed straight away: the
        // bytes are not put in the entry only to be taken out again by
        // `push_transceive`.
        let (input, send_now) = if at.from.sends_alone() && !input.is_empty() {
            (Input::default(), Some(input))
        } else {
            (Input::Ready(input), None)
        };
        let kind = Kind::Transceive {
            max_out,
            input,
            sent: 0,
            reg: None,
            from: at.from,
            reply,
            status: None,
        };
        let key = self.new_op(Some(at.pipe), at.session, notify, kind);
        if at.from == ReplyFrom::Multishot {
            self.await_chunk(at.pipe, key, &at.fd, at.session);
        }
        match send_now {
            Some(buf) => self.push_request_send(key, at.fd, buf, 0),
            None => {
                self.push_transceive(key, at.fd);
                // Nothing to send and the reply is already here.
                self.finish_if_idle(key);
            }
        }
    }

    fn start_read(&mut self, at: Start, max_out: usize, notify: Notify) {
        if at.from == ReplyFrom::Nothing {
            return self.reject(notify, NtStatus::PIPE_BROKEN);
        }
        // A read the pushback answers never gets here (`start_io`).
        debug_assert!(at.from != ReplyFrom::Pushback);
        let kind = Kind::Read {
            max_out,
            from: at.from,
            reply: Reply::Awaited,
            status: None,
        };
        let key = self.new_op(Some(at.pipe), at.session, notify, kind);
        if at.from == ReplyFrom::Multishot {
            // No SQE: the next chunk of the multishot receive ends it.
            self.await_chunk(at.pipe, key, &at.fd, at.session);
        } else {
            let want = self.recv_want(max_out);
            let op = recv_op(&self.drv, at.fd, want, true);
            self.push_chain(key, [(op, ST_RECV)]);
        }
    }

    fn start_write(&mut self, at: Start, data: SendBuf, notify: Notify) {
        let payload = data.len();
        let data = if self.message_mode() {
            SendBuf::Owned(overflow::frame_messages(&data))
        } else {
            data
        };
        let kind = Kind::Write {
            data: SendBuf::default(),
            sent: 0,
            payload,
            status: None,
        };
        let key = self.new_op(Some(at.pipe), at.session, notify, kind);
        let op = Op::Send {
            fd: at.fd,
            buf: data,
            start: 0,
        };
        self.push_chain(key, [(op, ST_SEND)]);
    }

    fn start_peek(&mut self, at: Start, max_out: usize, notify: Notify) {
        let room = match fsctl::peek_data_room(clamp_u32(max_out)) {
            Ok(room) => room,
            Err(s) => return self.reject(notify, s),
        };
        let kind = Kind::Peek {
            room,
            data: None,
            eof: false,
            status: None,
        };
        let key = self.new_op(Some(at.pipe), at.session, notify, kind);
        // Ask for one byte more than fits, so a full buffer with more
        // behind it is told apart from an exact fit.
        // Message mode: enough to see a whole message of the longest kind.
        let want = if self.message_mode() {
            crate::protocol::npa::FRAME_HEADER_LEN + crate::protocol::npa::MAX_FRAMED_MESSAGE
        } else {
            room.saturating_add(1)
        };
        let op = Op::Recv {
            fd: at.fd,
            buf: Vec::with_capacity(want),
            len: clamp_u32(want),
            flags: crate::ring::op::PEEK_NOWAIT,
        };
        self.push_chain(key, [(op, ST_PEEK)]);
    }

    /// Pushes the transceive chain for what is left to send:
    /// send -> recv [-> one-byte peek, when the kernel cannot flag leftover
    /// data on the recv completion]. Registered mode: WRITE_FIXED ->
    /// READ_FIXED on the same slot (the read starts only after the write
    /// completed) -> peek; a short READ_FIXED breaks the link, which is fine:
    /// short means nothing was left. A reply from the pushback or the
    /// multishot receive needs the send alone.
    pub(super) fn push_transceive(&mut self, key: (u32, u32), fd: Sock) {
        // Message mode receives raw frames into plain buffers.
        let reg_mode = self.cfg.buffers == BufferMode::Registered && !self.message_mode();
        let slot_bytes = self.drv.reg_slot_bytes();
        let Some(e) = self.ops.get_mut(key.0, key.1) else {
            return;
        };
        let Kind::Transceive {
            max_out,
            input,
            sent,
            from,
            ..
        } = &mut e.kind
        else {
            debug_assert!(false, "push_transceive on another kind of op");
            return;
        };
        if from.sends_alone() {
            if input.len() > *sent {
                let (buf, start) = (input.take_ready(), *sent);
                self.push_request_send(key, fd, buf, start);
            }
            return;
        }
        if reg_mode && *max_out <= slot_bytes && input.len() <= slot_bytes {
            self.push_registered_chain(key, fd);
        } else {
            self.push_plain_chain(key, fd);
        }
    }

    fn push_registered_chain(&mut self, key: (u32, u32), fd: Sock) {
        let Some(OpEntry {
            kind:
                Kind::Transceive {
                    max_out,
                    input,
                    sent,
                    reg,
                    ..
                },
            ..
        }) = self.ops.get_mut(key.0, key.1)
        else {
            return;
        };
        let slot = match reg.take() {
            Some(r) => r,
            None => match self.drv.reg_alloc() {
                Some(r) => {
                    if let Some(bytes) = self.drv.reg_bytes_mut(&r) {
                        bytes[..input.len()].copy_from_slice(input);
                    }
                    r
                }
                // Registered pool exhausted.
                None => return self.fail_now(key, NtStatus::INSUFFICIENT_RESOURCES),
            },
        };
        let mut chain = ChainBuf::default();
        if input.len() > *sent {
            let (start, end) = (*sent as u32, input.len() as u32);
            let buf = slot.clone();
            let fd = fd.clone();
            chain.push((
                Op::WriteFixed {
                    fd,
                    buf,
                    start,
                    end,
                },
                ST_SEND,
            ));
        }
        let len = clamp_u32(*max_out);
        let buf = slot.clone();
        chain.push((
            Op::ReadFixed {
                fd: fd.clone(),
                buf,
                len,
            },
            ST_RECV,
        ));
        if overflow::may_overflow(*max_out) {
            // READ completions carry no SOCK_NONEMPTY: always the probe.
            chain.push((more_probe(fd), ST_MORE));
        }
        *reg = Some(slot);
        self.push_chain(key, chain);
    }

    fn push_plain_chain(&mut self, key: (u32, u32), fd: Sock) {
        let msg_mode = self.message_mode();
        // Message mode needs no probe: the framing says whether more of
        // the message is left.
        let nonempty_flag = self.drv.features().sock_nonempty || msg_mode;
        let pool_buf = self.drv.recv_pool_buf_bytes();
        let Some(OpEntry {
            kind:
                Kind::Transceive {
                    max_out,
                    input,
                    sent,
                    reply,
                    ..
                },
            ..
        }) = self.ops.get_mut(key.0, key.1)
        else {
            return;
        };
        let mut chain = ChainBuf::default();
        if input.len() > *sent {
            let buf = input.take_ready();
            let fd = fd.clone();
            chain.push((
                Op::Send {
                    fd,
                    buf,
                    start: *sent,
                },
                ST_SEND,
            ));
        }
        // After an empty pool, the retry brings its own buffer.
        let pooled = !matches!(reply, Reply::Retry);
        if !pooled {
            self.pool_fallbacks += 1;
        }
        *reply = Reply::Awaited;
        let want = if msg_mode {
            overflow::message_recv_len(*max_out, pool_buf)
        } else {
            *max_out
        };
        chain.push((recv_op(&self.drv, fd.clone(), want, pooled), ST_RECV));
        if overflow::may_overflow(*max_out) && !nonempty_flag {
            chain.push((more_probe(fd), ST_MORE));
        }
        self.push_chain(key, chain);
    }

    /// Pushes what a request whose chain ended early still needs: the
    /// rest of a short send, or a receive with a buffer of its own after
    /// the pool was empty.
    pub(super) fn push_resume(&mut self, key: (u32, u32), fd: Sock) {
        let Some(e) = self.ops.get_mut(key.0, key.1) else {
            return;
        };
        match &mut e.kind {
            Kind::Write { data, sent, .. } => {
                let (buf, start) = (std::mem::take(data), *sent);
                self.push_chain(key, [(Op::Send { fd, buf, start }, ST_SEND)]);
            }
            Kind::Read { max_out, reply, .. } => {
                debug_assert!(matches!(reply, Reply::Retry));
                self.pool_fallbacks += 1;
                *reply = Reply::Awaited;
                let max_out = *max_out;
                let want = self.recv_want(max_out);
                let op = recv_op(&self.drv, fd, want, false);
                self.push_chain(key, [(op, ST_RECV)]);
            }
            Kind::Transceive { .. } => self.push_transceive(key, fd),
            _ => debug_assert!(false, "resume of an op that cannot resume"),
        }
    }

    /// A receive of request `key` got bytes: they join the pipe's stream
    /// behind what is already pushed back (that came off the socket
    /// first), and the request's reply is the first `max_out` bytes of it
    /// (see [`overflow::claim`]). Done when the receive completes, not when
    /// the request finishes, so receives that complete meanwhile keep their
    /// places in the stream.
    pub(super) fn claim_reply(&mut self, key: (u32, u32)) {
        if self.message_mode() {
            return self.claim_message_reply(key);
        }
        let Core { ops, pipes, .. } = self;
        let Some(e) = ops.get_mut(key.0, key.1) else {
            return;
        };
        let (Kind::Transceive {
            reply: Reply::Got { data, more },
            max_out,
            ..
        }
        | Kind::Read {
            reply: Reply::Got { data, more },
            max_out,
            ..
        }) = &mut e.kind
        else {
            return;
        };
        let Some(pe) = e.pipe.and_then(|p| pipes.get_mut(p.index, p.gen)) else {
            return;
        };
        if overflow::claim(&mut pe.pushback, data, *max_out) {
            *more = More::Yes;
        }
    }
}

impl<D: OpDriver> Core<D> {
    /// How many bytes a read's own receive asks for.
    fn recv_want(&self, max_out: usize) -> usize {
        if self.message_mode() {
            overflow::message_recv_len(max_out, self.drv.recv_pool_buf_bytes())
        } else {
            max_out
        }
    }

    /// [`Core::claim_reply`] for a message pipe: the raw bytes join the
    /// stream; the reply is the next message (or part of it), or, while
    /// that message is not whole, none yet: the request receives again
    /// when its chain is over.
    fn claim_message_reply(&mut self, key: (u32, u32)) {
        let Core { ops, pipes, .. } = self;
        let Some(e) = ops.get_mut(key.0, key.1) else {
            return;
        };
        let (Kind::Transceive { reply, max_out, .. } | Kind::Read { reply, max_out, .. }) =
            &mut e.kind
        else {
            return;
        };
        let Reply::Got { data, more } = reply else {
            return;
        };
        let Some(pe) = e.pipe.and_then(|p| pipes.get_mut(p.index, p.gen)) else {
            return;
        };
        match overflow::claim_message(&mut pe.pushback, &mut pe.msg_left, data, *max_out) {
            Some(m) => *more = if m { More::Yes } else { More::No },
            None => *reply = Reply::Retry,
        }
    }
}

/// Why a request waits in its pipe's `deferred` queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Hold {
    /// A cancelled request still has SQEs in the kernel (see
    /// `PipeEntry::draining`): a stale receive must not take its reply.
    Drain,
    /// It needs a receive of its own (a read above a pool buffer) while the
    /// multishot receive is armed or has waiters: two receives never race
    /// for the same bytes.
    OwnReceive,
}

/// Where a request that may start now stands.
struct Start {
    pipe: PipeId,
    fd: Sock,
    session: u64,
    from: ReplyFrom,
}

/// The receive of one transceive or read: from the driver's receive pool
/// when the request fits a pool buffer (no memory held while waiting),
/// else into a buffer of its own.
///
/// A pooled receive reads ahead: it asks for a whole pool buffer even when
/// `max_out` is smaller, because the pool buffer costs the same either way.
/// Whatever arrives beyond `max_out` goes to the pipe's pushback (see
/// [`Core::finish`]), so an overflowed reply's follow-up reads are served
/// from memory instead of one more receive each.
pub(super) fn recv_op<D: OpDriver>(drv: &D, fd: Sock, max_out: usize, pooled: bool) -> Op {
    let pool_buf = drv.recv_pool_buf_bytes();
    if pooled && max_out > 0 && max_out <= pool_buf {
        Op::RecvPooled {
            fd,
            len: clamp_u32(pool_buf),
            flags: 0,
            data: Vec::new(),
        }
    } else {
        Op::Recv {
            fd,
            // A driver that grows the buffer as bytes arrive gets it empty:
            // a pipe waiting for its reply then holds no receive memory.
            buf: if drv.recv_allocates() {
                Vec::new()
            } else {
                Vec::with_capacity(max_out)
            },
            len: clamp_u32(max_out),
            flags: 0,
        }
    }
}

/// A one-byte `MSG_PEEK | MSG_DONTWAIT` receive: 1 = more is waiting.
pub(super) fn more_probe(fd: Sock) -> Op {
    Op::Recv {
        fd,
        buf: Vec::with_capacity(1),
        len: 1,
        flags: crate::ring::op::PEEK_NOWAIT,
    }
}

/// A chain being built, without a heap allocation.
#[derive(Default)]
struct ChainBuf {
    ops: [Option<(Op, u8)>; MAX_CHAIN],
    len: usize,
}

impl ChainBuf {
    fn push(&mut self, op: (Op, u8)) {
        debug_assert!(self.len < MAX_CHAIN, "chain longer than MAX_CHAIN");
        if let Some(slot) = self.ops.get_mut(self.len) {
            *slot = Some(op);
            self.len += 1;
        }
    }
}

impl IntoIterator for ChainBuf {
    type Item = (Op, u8);
    type IntoIter = std::iter::Flatten<std::array::IntoIter<Option<(Op, u8)>, MAX_CHAIN>>;
    fn into_iter(self) -> Self::IntoIter {
        self.ops.into_iter().flatten()
    }
}

/// [`Core::live_pipe`] on the pipe table alone (`ring`: the ring's index),
/// for a caller that holds other fields of the core meanwhile.
pub(super) fn live_entry(
    pipes: &mut Slab<PipeEntry>,
    ring: usize,
    pipe: PipeId,
) -> Result<&mut PipeEntry, NtStatus> {
    if pipe.ring != ring {
        return Err(NtStatus::INVALID_HANDLE);
    }
    match pipes.get_mut(pipe.index, pipe.gen) {
        None => Err(NtStatus::INVALID_HANDLE),
        Some(p) if p.closing => Err(NtStatus::FILE_CLOSED),
        Some(p) => Ok(p),
    }
}

/// What decides where a request's reply comes from, besides its pipe's
/// entry: the ring's settings, and whether a lent chunk's rest is the
/// pipe's ([`ReplyRules::reply_from`] applies them).
#[derive(Clone, Copy)]
pub(super) struct ReplyRules {
    /// Bytes of a receive-pool buffer (0: no pool).
    pool_buf: usize,
    /// Message pipes (Samba dialect).
    msg_mode: bool,
    /// The ring may use multishot receives at all.
    multishot_ok: bool,
    /// A lent chunk's rest (`Core::lent_rest`) is this pipe's: it counts
    /// as its pushback.
    lent_rest: bool,
}

impl ReplyRules {
    /// Where the reply of a request on `pe` that may start now comes
    /// from, or why it must wait (see [`Hold`]).
    pub(super) fn reply_from(
        self,
        pe: &PipeEntry,
        io: &PipeIo,
        max_out: usize,
    ) -> Result<ReplyFrom, Hold> {
        if pe.draining > 0 {
            return Err(Hold::Drain);
        }
        let reads_socket = matches!(io, PipeIo::Transceive { .. } | PipeIo::Read { .. });
        if reads_socket && max_out == 0 {
            return Ok(ReplyFrom::Nothing);
        }
        if self.msg_mode {
            if overflow::message_ready(&pe.pushback, pe.msg_left) {
                return Ok(ReplyFrom::Pushback);
            }
        } else if !pe.pushback.is_empty() || self.lent_rest {
            return Ok(ReplyFrom::Pushback);
        }
        // The reply of a transceive, or a read's data, comes from the pipe's
        // multishot receive: the request is one SEND SQE or none at all.
        // Larger reads of a byte stream keep one receive of their own size
        // (a chunk is at most one pool buffer); a message is put together
        // from as many chunks as it takes (its chunks join the raw stream
        // in the pushback and a waiter gets its reply once the whole
        // message is there, `feed_waiters`).
        let fits = self.msg_mode || max_out <= self.pool_buf;
        if self.multishot_ok && self.pool_buf > 0 && fits && !pe.eof && !pe.closing {
            return Ok(ReplyFrom::Multishot);
        }
        if reads_socket && (!pe.multishot.is_off() || !pe.waiters.is_empty()) {
            return Err(Hold::OwnReceive);
        }
        Ok(ReplyFrom::Chain)
    }
}
