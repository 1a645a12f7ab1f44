//! One connection of the io_uring loop: its state ([`Conn`]: session,
//! phase, receive and send in flight, output vectors, stash, what it
//! counts against the budget) and the hand-over of received bytes to its
//! session.

use std::os::fd::OwnedFd;
use std::time::Instant;

use crate::ring::service::shared::{
    apply, Budget, CloseReason, ConnPhase, Phase, Session, Verdict,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum RecvState {
    /// No receive in flight.
    Idle,
    /// A receive is in flight: the multishot one, or (`Conn::own` has a
    /// capacity) one into the connection's own buffer.
    Armed,
    /// A cancel was sent; the final completion is still to come.
    Cancelling,
}

impl<S: Session> ConnPhase for Conn<S> {
    fn phase_and_reason(&mut self) -> (&mut Phase, &mut CloseReason) {
        (&mut self.phase, &mut self.reason)
    }

    fn deadline(&self) -> Option<Instant> {
        self.session.deadline()
    }

    fn on_deadline(&mut self) -> Verdict {
        self.session.on_deadline(&mut self.pending)
    }

    fn accepted_at(&self) -> Instant {
        self.accepted
    }
}

pub(super) struct Conn<S> {
    pub(super) fd: OwnedFd,
    pub(super) session: S,
    pub(super) accepted: Instant,
    pub(super) phase: Phase,
    pub(super) reason: CloseReason,
    pub(super) recv: RecvState,
    /// A receive ended with -ENOBUFS: the next one uses `own`.
    pub(super) starved: bool,
    /// The buffer of a receive of the connection's own, lent to the kernel
    /// (its capacity) while it is in flight; no capacity otherwise.
    pub(super) own: Vec<u8>,
    /// Receive cancelled because of backpressure.
    pub(super) paused: bool,
    pub(super) send_inflight: bool,
    pub(super) send_cancelling: bool,
    /// Output lent to the send in flight (bytes `sent..` still to go).
    pub(super) sending: Vec<u8>,
    pub(super) sent: usize,
    /// Output produced while a send was in flight.
    pub(super) pending: Vec<u8>,
    /// Bytes received while the budget allowed this connection no more
    /// output (completions already in the queue when its receive was
    /// cancelled): given to the session, before anything received later,
    /// once the budget allows.
    pub(super) stash: Vec<u8>,
    /// What the connection counts against the loop's [`Budget`].
    pub(super) charge: usize,
    /// What its stash counts in the stats ([`Budget::set_parked`]).
    pub(super) stash_charge: usize,
}

impl<S> Conn<S> {
    pub(super) fn queued(&self) -> usize {
        self.sending.len() - self.sent + self.pending.len()
    }

    /// The memory the connection holds for output and its own receive.
    pub(super) fn held_bytes(&self) -> usize {
        self.sending.capacity() + self.pending.capacity() + self.own.capacity()
    }
}

/// Gives received bytes to the session, or keeps them in the stash while
/// the budget allows the connection no more output (or the stash already
/// holds earlier bytes), so a batch of completions cannot multiply into
/// output past the budget.
pub(super) fn feed_or_stash<S: Session>(c: &mut Conn<S>, data: &[u8], budget: &Budget) {
    if c.stash.is_empty() && budget.allows(c.queued()) {
        let v = c.session.on_data(data, &mut c.pending);
        apply(c, v, CloseReason::Session);
    } else {
        c.stash.extend_from_slice(data);
    }
}
