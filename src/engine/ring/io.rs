//! Requests on an open pipe: how each one starts (which SQEs, or none),
//! the transceive chain, and what each completion means for it.

use std::os::fd::OwnedFd;
use std::rc::Rc;
use std::sync::atomic::Ordering;

use super::reply::take_pushback;
use super::*;
use crate::engine::command::{Notify, Outcome, PipeIo};
use crate::engine::{BufferMode, PipeId, Transfer};
use crate::protocol::{fsctl, NtStatus};
use crate::ring::{Completion, Op, OpDriver};

impl<D: OpDriver> Core<D> {
    pub(super) fn pipe_fd(&mut self, pipe: PipeId) -> Result<(Rc<OwnedFd>, u64), NtStatus> {
        if pipe.ring != self.ring_index {
            return Err(NtStatus::INVALID_HANDLE);
        }
        match self.pipes.get_mut(pipe.index, pipe.gen) {
            None => Err(NtStatus::INVALID_HANDLE),
            Some(p) if p.closing => Err(NtStatus::FILE_CLOSED),
            Some(p) => Ok((p.fd.clone(), p.session)),
        }
    }

    pub(crate) fn start_io(&mut self, pipe: PipeId, io: PipeIo, notify: Notify) {
        if let Notify::Shared(s) = &notify {
            if s.cancel_requested.load(Ordering::SeqCst) {
                return self.reject(notify, NtStatus::CANCELLED);
            }
        }
        let (fd, session) = match self.pipe_fd(pipe) {
            Ok(x) => x,
            Err(s) => return self.reject(notify, s),
        };
        let max_out = match &io {
            PipeIo::Transceive { max_out, .. }
            | PipeIo::Read { max_out }
            | PipeIo::Peek { max_out } => *max_out,
            PipeIo::Write { .. } => 0,
        };
        if max_out > MAX_IO_BYTES {
            // Larger than any SMB2 read or IOCTL response: refuse rather
            // than allocate it.
            return self.reject(notify, NtStatus::INVALID_PARAMETER);
        }
        let Some(pe) = self.pipes.get_mut(pipe.index, pipe.gen) else {
            return self.reject(notify, NtStatus::INVALID_HANDLE);
        };
        if pe.draining > 0 {
            // A cancelled request still has SQEs in the kernel: start this
            // one when they are done (see PipeEntry::draining).
            pe.deferred.push_back((io, notify));
            return;
        }
        let has_pushback = !pe.pushback.is_empty();
        // The reply of a transceive, or a read's data, comes from the pipe's
        // multishot receive: the request is one SEND SQE or none at all.
        // Larger reads keep one receive of their own size (a chunk is at
        // most one pool buffer).
        let pool_buf = self.drv.recv_pool_buf_bytes();
        let via_ms = !has_pushback
            && pool_buf > 0
            && max_out <= pool_buf
            && self.cfg.multishot
            && !self.ms_disabled
            && self.cfg.buffers == BufferMode::Plain
            && !pe.eof
            && !pe.closing;
        let reads_socket = matches!(io, PipeIo::Transceive { .. } | PipeIo::Read { .. });
        if reads_socket && !via_ms && !has_pushback && (pe.ms.is_some() || !pe.waiters.is_empty()) {
            // A receive of its own (a read above a pool buffer) must not
            // race the multishot receive: it starts once the waiting
            // requests have their bytes and the receive has stopped (what
            // it took by then is in the pushback, which comes first).
            let stop = pe.waiters.is_empty();
            pe.deferred.push_back((io, notify));
            if stop {
                self.stop_multishot(pipe);
            }
            return;
        }
        match io {
            PipeIo::Read { max_out } if has_pushback => {
                let data = take_pushback(&mut pe.pushback, max_out);
                let t = Transfer {
                    status: NtStatus::SUCCESS,
                    data,
                };
                self.notify(notify, Ok(Outcome::Transfer(t)))
            }
            PipeIo::Transceive { input, max_out } => {
                let kind = Kind::Transceive {
                    max_out,
                    input,
                    sent: 0,
                    reg: None,
                    out: None,
                    more: None,
                    retry_recv: false,
                    from_pushback: has_pushback,
                    via_ms,
                    status: None,
                };
                let key = self.new_op(Some(pipe), session, notify, kind);
                if via_ms {
                    self.await_chunk(pipe, key, &fd, session);
                }
                self.push_transceive(key, fd);
                if self
                    .ops
                    .get_mut(key.0, key.1)
                    .is_some_and(|e| e.pending == 0)
                {
                    // Nothing to send and the reply is already here.
                    self.finish(key);
                }
            }
            PipeIo::Read { max_out } => {
                let kind = Kind::Read {
                    max_out,
                    out: None,
                    retry_recv: false,
                    via_ms,
                    status: None,
                };
                let key = self.new_op(Some(pipe), session, notify, kind);
                if via_ms {
                    // No SQE: the next chunk of the multishot receive ends it.
                    self.await_chunk(pipe, key, &fd, session);
                } else {
                    let op = recv_op(&self.drv, fd, max_out, true);
                    self.push_chain(key, [(op, ST_RECV)]);
                }
            }
            PipeIo::Write { data } => {
                let key = self.new_op(
                    Some(pipe),
                    session,
                    notify,
                    Kind::Write {
                        data: Vec::new(),
                        sent: 0,
                        status: None,
                    },
                );
                self.push_chain(
                    key,
                    vec![(
                        Op::Send {
                            fd,
                            buf: data,
                            start: 0,
                        },
                        ST_SEND,
                    )],
                );
            }
            PipeIo::Peek { max_out } => {
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
                let key = self.new_op(Some(pipe), session, notify, kind);
                // Ask for one byte more than fits, so a full buffer with more
                // behind it is told apart from an exact fit.
                let want = room.saturating_add(1);
                let op = Op::Recv {
                    fd,
                    buf: Vec::with_capacity(want),
                    len: clamp_u32(want),
                    flags: crate::ring::driver::PEEK_NOWAIT,
                };
                self.push_chain(key, [(op, ST_PEEK)]);
            }
        }
    }

    /// Pushes the transceive chain for what is left to send:
    /// send -> recv [-> one-byte peek, when the kernel cannot flag leftover
    /// data on the recv completion]. Registered mode: WRITE_FIXED ->
    /// READ_FIXED on the same slot (the read starts only after the write
    /// completed) -> peek; a short READ_FIXED breaks the link, which is fine:
    /// short means nothing was left.
    pub(super) fn push_transceive(&mut self, key: (u32, u32), fd: Rc<OwnedFd>) {
        let reg_mode = self.cfg.buffers == BufferMode::Registered;
        let slot_bytes = self.drv.reg_slot_bytes();
        let nonempty_flag = self.drv.features().sock_nonempty;
        let Some(e) = self.ops.get_mut(key.0, key.1) else {
            return;
        };
        let Kind::Transceive {
            max_out,
            input,
            sent,
            reg,
            retry_recv,
            from_pushback,
            via_ms,
            ..
        } = &mut e.kind
        else {
            return;
        };
        if *from_pushback || *via_ms {
            // The reply is in the pipe's pushback, or comes from its
            // multishot receive: just send the request.
            if input.len() > *sent {
                let (buf, start) = (std::mem::take(input), *sent);
                self.push_chain(key, [(Op::Send { fd, buf, start }, ST_SEND)]);
            }
            return;
        }
        let max_out = *max_out;
        let check_more = max_out < SMB_PIPE_MAX_MSGSIZE;
        let mut chain = ChainBuf::default();
        if reg_mode && max_out <= slot_bytes && input.len() <= slot_bytes {
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
            if input.len() > *sent {
                let (start, end) = (*sent as u32, input.len() as u32);
                chain.push((
                    Op::WriteFixed {
                        fd: fd.clone(),
                        buf: slot.clone(),
                        start,
                        end,
                    },
                    ST_SEND,
                ));
            }
            chain.push((
                Op::ReadFixed {
                    fd: fd.clone(),
                    buf: slot.clone(),
                    len: clamp_u32(max_out),
                },
                ST_RECV,
            ));
            *reg = Some(slot);
            if check_more {
                chain.push((more_probe(fd), ST_MORE));
            }
        } else {
            if input.len() > *sent {
                let buf = std::mem::take(input);
                chain.push((
                    Op::Send {
                        fd: fd.clone(),
                        buf,
                        start: *sent,
                    },
                    ST_SEND,
                ));
            }
            let recv = recv_op(&self.drv, fd.clone(), max_out, !*retry_recv);
            *retry_recv = false;
            chain.push((recv, ST_RECV));
            if check_more && !nonempty_flag {
                chain.push((more_probe(fd), ST_MORE));
            }
        }
        self.push_chain(key, chain);
    }

    pub(super) fn io_step(&mut self, key: (u32, u32), step: u8, c: Completion) {
        let features = self.drv.features();
        let sock_nonempty = c.sock_nonempty();
        let Some(e) = self.ops.get_mut(key.0, key.1) else {
            return;
        };
        let r = c.result;
        // A send that fell short (its link then cancelled the rest) is
        // resumed when the chain is over; its -ECANCELED followers are no error.
        let resuming = |input: &Vec<u8>, sent: usize| sent < input.len();
        match (&mut e.kind, step, c.op) {
            (
                Kind::Transceive {
                    status,
                    input,
                    sent,
                    ..
                },
                ST_SEND,
                op,
            ) => {
                let (start, end) = match op {
                    Op::Send { buf, start, .. } => {
                        let end = buf.len();
                        *input = buf;
                        (start, end)
                    }
                    Op::WriteFixed { start, end, .. } => (start as usize, end as usize),
                    _ => return,
                };
                if r < 0 {
                    if status.is_none() {
                        *status = Some(socket_status(-r));
                    }
                } else {
                    *sent = (start + r as usize).min(end);
                }
            }
            (
                Kind::Transceive {
                    status,
                    out,
                    more,
                    max_out,
                    reg,
                    input,
                    sent,
                    retry_recv,
                    ..
                },
                ST_RECV,
                op,
            ) => {
                let resend = resuming(input, *sent) && status.is_none();
                if r == -libc::ECANCELED && resend {
                    return;
                }
                if r == -libc::ENOBUFS && matches!(op, Op::RecvPooled { .. }) && status.is_none() {
                    // The receive pool was empty: receive again with a
                    // buffer of our own once this chain is over.
                    *retry_recv = true;
                    return;
                }
                if r <= 0 {
                    if status.is_none() {
                        *status = Some(if r == 0 {
                            NtStatus::PIPE_BROKEN
                        } else {
                            socket_status(-r)
                        });
                    }
                    return;
                }
                // What the receive asked for: more than `max_out` when it
                // read ahead (see `recv_op`).
                let asked = match &op {
                    Op::Recv { len, .. }
                    | Op::RecvPooled { len, .. }
                    | Op::ReadFixed { len, .. } => *len as usize,
                    _ => return,
                };
                let data = match op {
                    Op::Recv { buf, .. } => buf,
                    Op::RecvPooled { data, .. } => data,
                    Op::ReadFixed { buf, .. } => {
                        drop(buf);
                        let n = (r as usize).min(*max_out);
                        match reg.as_ref().and_then(|slot| self.drv.reg_bytes(slot)) {
                            Some(bytes) => bytes[..n].to_vec(),
                            None => return set_status(&mut e.kind, NtStatus::INTERNAL_ERROR),
                        }
                    }
                    _ => return,
                };
                if data.len() < asked {
                    // A short receive emptied the socket (a stream recv
                    // copies until its buffer is full or the queue is empty).
                    *more = Some(false);
                } else if features.sock_nonempty && self.cfg.buffers == BufferMode::Plain {
                    *more = Some(sock_nonempty);
                }
                *out = Some(data);
            }
            // 1: a byte is waiting; -EAGAIN: empty; 0: peer closed.
            (
                Kind::Transceive {
                    more: more @ None, ..
                },
                ST_MORE,
                _,
            ) => *more = Some(r > 0),
            (
                Kind::Read {
                    out,
                    status,
                    retry_recv,
                    ..
                },
                ST_RECV,
                op,
            ) => {
                let buf = match op {
                    Op::Recv { buf, .. } => buf,
                    Op::RecvPooled { data, .. } => {
                        if r == -libc::ENOBUFS {
                            *retry_recv = true;
                            return;
                        }
                        data
                    }
                    _ => return,
                };
                if r > 0 {
                    *out = Some(buf);
                } else if status.is_none() {
                    *status = Some(if r == 0 {
                        NtStatus::PIPE_BROKEN
                    } else {
                        socket_status(-r)
                    });
                }
            }
            (Kind::Write { status, data, sent }, ST_SEND, Op::Send { buf, start, .. }) => {
                if r < 0 {
                    if status.is_none() {
                        *status = Some(socket_status(-r));
                    }
                } else {
                    *sent = start + r as usize;
                }
                *data = buf;
            }
            (
                Kind::Peek {
                    data, eof, status, ..
                },
                ST_PEEK,
                Op::Recv { buf, len, .. },
            ) => {
                if r > 0 {
                    *data = Some(buf);
                } else if r == 0 && len > 0 {
                    *eof = true;
                    *data = Some(Vec::new());
                } else if r == 0 || r == -libc::EAGAIN {
                    *data = Some(Vec::new());
                } else if status.is_none() {
                    *status = Some(socket_status(-r));
                }
            }
            _ => {}
        }
    }

    pub(super) fn push_resume(&mut self, key: (u32, u32), fd: Rc<OwnedFd>) {
        let Some(e) = self.ops.get_mut(key.0, key.1) else {
            return;
        };
        match &mut e.kind {
            Kind::Write { data, sent, .. } => {
                let (buf, start) = (std::mem::take(data), *sent);
                self.push_chain(key, [(Op::Send { fd, buf, start }, ST_SEND)]);
            }
            Kind::Read {
                max_out,
                retry_recv,
                ..
            } => {
                *retry_recv = false;
                let op = recv_op(&self.drv, fd, *max_out, false);
                self.push_chain(key, [(op, ST_RECV)]);
            }
            _ => self.push_transceive(key, fd),
        }
    }

    /// Moves what a read-ahead receive got beyond `max_out` to the front of
    /// the pipe's pushback: requests on a pipe with pushback are served from
    /// it, so anything already there came from a receive that started
    /// after this one. True if anything was kept.
    pub(super) fn keep_read_ahead(
        &mut self,
        pipe: Option<PipeId>,
        data: &mut Vec<u8>,
        max_out: usize,
    ) -> bool {
        if data.len() <= max_out {
            return false;
        }
        let tail = data.split_off(max_out);
        match pipe.and_then(|p| self.pipes.get_mut(p.index, p.gen)) {
            Some(pe) => {
                let mut rest = tail;
                rest.append(&mut pe.pushback);
                pe.pushback = rest;
                true
            }
            // The pipe is gone: so are its bytes.
            None => false,
        }
    }
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
pub(super) fn recv_op<D: OpDriver>(drv: &D, fd: Rc<OwnedFd>, max_out: usize, pooled: bool) -> Op {
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
pub(super) fn more_probe(fd: Rc<OwnedFd>) -> Op {
    Op::Recv {
        fd,
        buf: Vec::with_capacity(1),
        len: 1,
        flags: crate::ring::driver::PEEK_NOWAIT,
    }
}
