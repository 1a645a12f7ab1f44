//! Cancel, close and session disconnect: ending requests early while
//! their SQEs drain, and releasing pipes.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::*;
use crate::engine::command::{Notify, Outcome, Shared, NO_OP};
use crate::engine::PipeId;
use crate::protocol::NtStatus;
use crate::ring::OpDriver;

impl<D: OpDriver> Core<D> {
    /// Unlinks the finished op `key` (already out of the op table; `next`
    /// was its `pipe_next`) from its pipe's list, and releases a closing
    /// pipe whose last op it was.
    pub(super) fn pipe_op_done(&mut self, pipe: PipeId, key: (u32, u32), next: Option<(u32, u32)>) {
        let Some(p) = self.pipes.get_mut(pipe.index, pipe.gen) else {
            return;
        };
        if p.ops == Some(key) {
            p.ops = next;
        } else {
            let mut cur = p.ops;
            while let Some(c) = cur {
                let Some(e) = self.ops.get_mut(c.0, c.1) else {
                    break;
                };
                if e.pipe_next == Some(key) {
                    e.pipe_next = next;
                    break;
                }
                cur = e.pipe_next;
            }
        }
        let Some(p) = self.pipes.get_mut(pipe.index, pipe.gen) else {
            return;
        };
        if p.closing && p.ops.is_none() {
            self.release_pipe(pipe);
        }
    }

    pub(super) fn release_pipe(&mut self, pipe: PipeId) {
        if let Some(p) = self.pipes.remove(pipe.index, pipe.gen) {
            // The socket closes here unless an op still holds it (none: `ops` is empty).
            self.drv.close(p.fd);
            for (_, n) in p.deferred {
                self.reject(n, NtStatus::CANCELLED);
            }
            for n in p.close_waiters {
                self.notify(n, Ok(Outcome::Done));
            }
        }
    }

    pub(super) fn close_pipe(&mut self, pipe: PipeId, notify: Option<Notify>) {
        if pipe.ring != self.ring_index {
            if let Some(n) = notify {
                self.reject(n, NtStatus::INVALID_HANDLE);
            }
            return;
        }
        let Some(p) = self.pipes.get_mut(pipe.index, pipe.gen) else {
            if let Some(n) = notify {
                self.reject(n, NtStatus::FILE_CLOSED);
            }
            return;
        };
        if let Some(n) = notify {
            p.close_waiters.push(n);
        }
        if p.closing {
            return;
        }
        p.closing = true;
        // Requests waiting for a cancelled one to drain end with the pipe.
        let deferred = std::mem::take(&mut p.deferred);
        // Shut the socket down both ways (as the seed does): whatever is in
        // flight on it completes, then the last completion releases the fd.
        self.drv.shutdown(&p.fd);
        for (_, n) in deferred {
            self.reject(n, NtStatus::CANCELLED);
        }
        let Some(first) = self.pipes.get_mut(pipe.index, pipe.gen).map(|p| p.ops) else {
            return;
        };
        if first.is_none() {
            return self.release_pipe(pipe);
        }
        // Cancelling may finish ops (and unlink them): walk the list first.
        let mut ops = Vec::new();
        let mut cur = first;
        while let Some(k) = cur {
            ops.push(k);
            cur = self.ops.get_mut(k.0, k.1).and_then(|e| e.pipe_next);
        }
        for (i, g) in ops {
            self.cancel_op(i, g, NtStatus::CANCELLED);
        }
    }

    pub(super) fn cancel_shared(&mut self, shared: &Arc<Shared>) {
        let k = shared.op_key.load(Ordering::SeqCst);
        if k == NO_OP {
            // Not started yet: an open waiting its turn ends now; anything
            // else sees the flag when it starts.
            let mine =
                |q: &QueuedOpen| matches!(&q.notify, Notify::Shared(s) if Arc::ptr_eq(s, shared));
            return self.reject_queued_opens(mine, NtStatus::CANCELLED);
        }
        let (i, g) = from_op_key(k);
        let same = self.ops.get_mut(i, g).is_some_and(|e| match &e.notify {
            Some(Notify::Shared(s)) => Arc::ptr_eq(s, shared),
            _ => false,
        });
        if same {
            self.cancel_op(i, g, NtStatus::CANCELLED);
        }
    }

    /// Tells the caller `status` now and cancels the op's SQEs; the op entry
    /// stays until its last CQE so its buffers and fd outlive the kernel's use.
    pub(super) fn cancel_op(&mut self, i: u32, g: u32, status: NtStatus) {
        let Some(e) = self.ops.get_mut(i, g) else {
            return;
        };
        if e.cancelled {
            return;
        }
        e.cancelled = true;
        if let Some(p) = e.pipe {
            // Until its SQEs are done, later requests on the pipe wait.
            if let Some(pe) = self.pipes.get_mut(p.index, p.gen) {
                pe.draining += 1;
            }
        }
        let Some(e) = self.ops.get_mut(i, g) else {
            return;
        };
        let timer = match &mut e.kind {
            Kind::Open { timer, .. } | Kind::WaitPipe { timer, .. } => timer.take(),
            _ => None,
        };
        let notify = e.notify.take();
        if let Some(t) = timer {
            self.drv.cancel(t);
        }
        self.cancel_chain((i, g));
        if let Some(n) = notify {
            self.reject(n, status);
        }
        // A request waiting only for a multishot chunk has no CQE to come.
        self.finish_if_idle((i, g));
    }

    /// Finishes op `key` when none of its CQEs is still to come.
    pub(super) fn finish_if_idle(&mut self, key: (u32, u32)) {
        if self
            .ops
            .get_mut(key.0, key.1)
            .is_some_and(|e| e.pending == 0)
        {
            self.finish(key);
        }
    }

    pub(super) fn cancel_chain(&mut self, key: (u32, u32)) {
        let Some(e) = self.ops.get_mut(key.0, key.1) else {
            return;
        };
        if let Some(id) = e.chain_id(usize::from(e.chain_done)) {
            self.drv.cancel(id);
        }
    }

    pub(super) fn disconnect(&mut self, session: u64) {
        self.reject_queued_opens(|q| q.user.session_id == session, NtStatus::CANCELLED);
        self.end_sessions(|s| s == session);
    }

    /// Cancels the ops and closes the pipes of the sessions `which` picks
    /// (a disconnect: one session; a shutdown: all of them).
    pub(super) fn end_sessions(&mut self, which: impl Fn(u64) -> bool) {
        for (i, g) in self.ops.keys() {
            if self.ops.get_mut(i, g).is_some_and(|e| which(e.session)) {
                self.cancel_op(i, g, NtStatus::CANCELLED);
            }
        }
        for (i, g) in self.pipes.keys() {
            if self.pipes.get_mut(i, g).is_some_and(|p| which(p.session)) {
                self.close_pipe(
                    PipeId {
                        ring: self.ring_index,
                        index: i,
                        gen: g,
                    },
                    None,
                );
            }
        }
    }
}
