//! A pipe's multishot receive: arming it, handing its chunks to waiting
//! requests or the pushback, stopping and re-arming it.

use super::io::recv_op;
use super::overflow;
use super::*;
use crate::engine::PipeId;
use crate::protocol::NtStatus;
use crate::ring::{Completion, Op, OpDriver, Sock};

impl<D: OpDriver> Core<D> {
    /// Hands the pipe's pushback to its waiting requests, first come first
    /// served, each at most its `max_out`. `nonempty`: the kernel said more
    /// is queued on the socket.
    /// A message pipe's waiter gets the next message (at most `max_out`
    /// of it) once that message is whole in the pushback, never a part.
    pub(super) fn feed_waiters(&mut self, pipe: PipeId, nonempty: bool) {
        let msg_mode = self.message_mode();
        loop {
            let Some(pe) = self.pipes.get_mut(pipe.index, pipe.gen) else {
                return;
            };
            if pe.pushback.is_empty() {
                return;
            }
            if msg_mode && !overflow::message_ready(&pe.pushback, pe.msg_left) {
                // Half a header or half a message: the next chunk says more.
                return;
            }
            let Some(w) = pe.waiters.pop_front() else {
                return;
            };
            let Some(e) = self.ops.get_mut(w.0, w.1) else {
                continue;
            };
            let Some(max_out) = e.awaited_max_out() else {
                debug_assert!(false, "a multishot waiter that awaits no reply");
                continue;
            };
            let (data, more) = if msg_mode {
                match overflow::take_message(&mut pe.pushback, &mut pe.msg_left, max_out) {
                    Some((data, more)) => (data, if more { More::Yes } else { More::No }),
                    None => {
                        debug_assert!(false, "message_ready saw a whole message");
                        pe.waiters.push_front(w);
                        return;
                    }
                }
            } else {
                overflow::waiter_share(&mut pe.pushback, max_out, nonempty)
            };
            if e.got_reply(data, more) {
                self.finish(w);
            }
        }
    }

    /// Queues `key` among the requests waiting for chunks of `pipe`'s
    /// multishot receive, arming the receive if it is not.
    pub(super) fn await_chunk(&mut self, pipe: PipeId, key: (u32, u32), fd: &Sock, session: u64) {
        let Some(pe) = self.pipes.get_mut(pipe.index, pipe.gen) else {
            return;
        };
        pe.waiters.push_back(key);
        if !pe.multishot.is_off() {
            // Armed, or being stopped: its end re-arms it for the waiter.
            return;
        }
        self.arm_multishot(pipe, fd.clone(), session);
    }

    pub(super) fn arm_multishot(&mut self, pipe: PipeId, fd: Sock, session: u64) {
        let key = self.insert_op(Some(pipe), session, None, Kind::Multishot);
        if let Some(pe) = self.pipes.get_mut(pipe.index, pipe.gen) {
            pe.multishot = Multishot::Armed(key);
        }
        let op = Op::RecvMulti {
            fd,
            data: Vec::new(),
        };
        // Its token names the pipe, not the op: a chunk goes to the pipe
        // without a look at the op entry (see `Core::completion`).
        self.push_single_as(key, (pipe.index, pipe.gen), op, ST_MULTISHOT);
    }

    /// One completion of a pipe's multishot receive: a chunk for the
    /// waiting request or the pushback; on the last one, re-arm for a
    /// request still waiting, or end it.
    pub(super) fn multishot_step(&mut self, key: (u32, u32), c: Completion) {
        let nonempty = self.drv.features().sock_nonempty && c.sock_nonempty();
        let Some(e) = self.ops.get_mut(key.0, key.1) else {
            return;
        };
        let (pipe, session, pending) = (e.pipe, e.session, e.pending);
        let r = c.result;
        let (fd, data) = match c.op {
            Op::RecvMulti { fd, data } => (Some(fd), data),
            _ => return debug_assert!(false, "a multishot step of another op"),
        };
        if let Some(p) = pipe {
            if r > 0 && !data.is_empty() {
                self.multishot_chunk(p, data, nonempty);
            }
        }
        if c.more || pending > 0 {
            return;
        }
        // The receive is over.
        if r == -libc::EINVAL {
            // No multishot receive on this kernel (before 6.0).
            self.multishot_disabled = true;
        }
        let mut resume = None;
        if let Some(pe) = pipe.and_then(|p| self.pipes.get_mut(p.index, p.gen)) {
            pe.multishot = Multishot::Off;
            if r == 0 {
                pe.eof = true;
            }
            resume = pe.startable();
        }
        self.finish(key);
        let Some(p) = pipe else { return };
        if let Some(resume) = resume {
            for (io, notify) in resume {
                self.start_io(p, io, notify);
            }
        }
        match fd {
            Some(fd) => self.multishot_ended(p, fd, session, r),
            None => debug_assert!(false, "a multishot receive ended by a chunk"),
        }
    }

    /// After a pipe's multishot receive ended with `r`: requests still
    /// waiting get it re-armed (after an empty pool, a stop, a chunk), fail
    /// (end of stream, an error), or get one receive each (no multishot
    /// receive on this kernel).
    fn multishot_ended(&mut self, p: PipeId, fd: Sock, session: u64, r: i32) {
        let Some(pe) = self.pipes.get_mut(p.index, p.gen) else {
            return;
        };
        if !pe.multishot.is_off() || pe.waiters.is_empty() || pe.closing {
            return;
        }
        let fail = match r {
            0 => Some(NtStatus::PIPE_BROKEN),
            r if r > 0 => None,
            r if r == -libc::ENOBUFS || r == -libc::ECANCELED || r == -libc::EINVAL => None,
            r => Some(socket_status(-r)),
        };
        if fail.is_none() && !self.multishot_disabled {
            if r == -libc::ENOBUFS {
                self.pool_fallbacks += 1;
            }
            return self.arm_multishot(p, fd, session);
        }
        let waiters = std::mem::take(&mut pe.waiters);
        for w in waiters {
            match fail {
                Some(s) => self.fail_now(w, s),
                None => self.receive_alone(w, &fd),
            }
        }
    }

    /// A waiter of a pipe whose kernel has no multishot receive gets a
    /// receive of its own.
    fn receive_alone(&mut self, w: (u32, u32), fd: &Sock) {
        let Some(we) = self.ops.get_mut(w.0, w.1) else {
            return;
        };
        let max_out = match &mut we.kind {
            Kind::Transceive { max_out, from, .. } | Kind::Read { max_out, from, .. } => {
                *from = ReplyFrom::Chain;
                *max_out
            }
            _ => return debug_assert!(false, "a multishot waiter that is no request"),
        };
        let op = recv_op(&self.drv, fd.clone(), max_out, true);
        self.push_chain(w, [(op, ST_RECV)]);
    }

    /// A chunk of `pipe`'s stream from its multishot receive: to the
    /// waiting requests in order (each takes at most its `max_out`), the
    /// rest to the pushback.
    pub(super) fn multishot_chunk(&mut self, pipe: PipeId, data: Vec<u8>, nonempty: bool) {
        let Some(pe) = self.pipes.get_mut(pipe.index, pipe.gen) else {
            return;
        };
        // Waiters exist only while the pushback holds no reply for them
        // (empty, or part of a message): the chunk comes after it.
        pe.pushback.append(data);
        self.feed_pushback(pipe, nonempty);
    }

    /// After a chunk joined `pipe`'s pushback: its waiting requests take
    /// their shares; if the pushback still holds too much, nobody is
    /// reading and the receive stops.
    /// (Inline up to its first look: after an overflow whose rest the
    /// caller read at once, the pushback is empty.)
    #[inline(always)]
    fn feed_pushback(&mut self, pipe: PipeId, nonempty: bool) {
        let Some(pe) = self.pipes.get_mut(pipe.index, pipe.gen) else {
            return;
        };
        if !pe.pushback.is_empty() {
            self.feed_pushback_now(pipe, nonempty);
        }
    }

    #[inline(never)]
    fn feed_pushback_now(&mut self, pipe: PipeId, nonempty: bool) {
        self.feed_waiters(pipe, nonempty);
        let Some(pe) = self.pipes.get_mut(pipe.index, pipe.gen) else {
            return;
        };
        if pe.pushback.len() > MULTISHOT_PUSHBACK_CAP {
            // Nobody is reading: leave the rest in the socket.
            self.stop_multishot(pipe);
        }
    }

    /// A chunk whose bytes the driver lends in its pool buffer
    /// ([`Op::Chunk`]): each share is copied once, from there to where
    /// it goes. The common case (a byte pipe, nothing in the pushback, a
    /// request waiting) copies the waiter's share into its reply and only
    /// the rest into the pushback; any other case copies the chunk into
    /// the pushback and feeds the waiters from there.
    pub(super) fn multishot_lent_chunk(&mut self, pipe: PipeId, nonempty: bool) {
        let msg_mode = self.message_mode();
        let Core {
            pipes, ops, drv, ..
        } = self;
        let len = drv.lent_chunk().len();
        // The request the chunk's front goes to directly: the first waiter
        // of a byte pipe whose pushback is empty, if it still awaits its
        // reply. Its pipe and op entries are looked up once, here.
        let direct = if msg_mode {
            None
        } else {
            pipes
                .get_mut(pipe.index, pipe.gen)
                .filter(|pe| pe.pushback.is_empty())
                .and_then(|pe| {
                    let w = *pe.waiters.front()?;
                    let e = ops.get_mut(w.0, w.1)?;
                    let max_out = e.awaited_max_out()?;
                    Some((pe, w, e, max_out))
                })
        };
        let Some((pe, w, e, max_out)) = direct else {
            let mut data = drv.spare_buf();
            data.extend_from_slice(drv.lent_chunk());
            return self.multishot_chunk(pipe, data, nonempty);
        };
        let n = len.min(max_out);
        let mut share = drv.spare_buf();
        if n < len {
            // An overflow: the caller will likely append the rest behind
            // this share (`read_append_with`), so it gets room for all.
            share.reserve(len);
        }
        share.extend_from_slice(&drv.lent_chunk()[..n]);
        pe.waiters.pop_front();
        let more = if n < len {
            More::Yes
        } else {
            overflow::more_behind(&pe.pushback, nonempty)
        };
        let idle = e.got_reply(share, more);
        if n < len {
            // The rest stays in the pool buffer while the waiter finishes:
            // a callback that reads it at once copies it from there, once.
            self.lent_rest = Some((pipe, n));
        }
        if idle {
            self.finish(w);
        }
        // Whatever of it nobody read goes to the pushback, then to the
        // next waiters, or waits for a read.
        self.settle_lent();
        if n < len {
            self.feed_pushback(pipe, nonempty);
        }
    }

    /// Cancels the pipe's multishot receive, once; its final completion
    /// (`multishot_step`) then re-arms it for a waiter or starts deferred requests.
    pub(super) fn stop_multishot(&mut self, pipe: PipeId) {
        let Some(pe) = self.pipes.get_mut(pipe.index, pipe.gen) else {
            return;
        };
        let Multishot::Armed(k) = pe.multishot else {
            return;
        };
        pe.multishot = Multishot::Stopping(k);
        if let Some(id) = self.ops.get_mut(k.0, k.1).and_then(|e| e.chain_id(0)) {
            self.drv.cancel(id);
        }
    }
}

impl OpEntry {
    /// The `max_out` of a transceive or read still awaiting its reply
    /// (a multishot waiter about to get its share); `None` for any other.
    #[inline(always)]
    fn awaited_max_out(&self) -> Option<usize> {
        match &self.kind {
            Kind::Transceive {
                reply: Reply::Awaited,
                max_out,
                ..
            }
            | Kind::Read {
                reply: Reply::Awaited,
                max_out,
                ..
            } => Some(*max_out),
            _ => None,
        }
    }

    /// Gives a waiting transceive or read its reply (a multishot chunk's
    /// share, or its part of the pushback). Whether the request is idle
    /// now, none of its SQEs in flight: it may finish. (Inlined: called
    /// once per reply; out of line it cost 20 instructions a transceive,
    /// `perf/instructions.py`.)
    #[inline(always)]
    fn got_reply(&mut self, data: Vec<u8>, more: More) -> bool {
        if let Kind::Transceive { reply, .. } | Kind::Read { reply, .. } = &mut self.kind {
            *reply = Reply::Got { data, more };
        }
        self.pending == 0
    }
}
