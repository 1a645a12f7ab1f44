//! Service counters: updated with relaxed atomics by the service threads,
//! read as a [`Stats`] snapshot.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::ring::service::LoopCounters;

/// Counters kept by the handshake and handler layer (the loop keeps its own
/// in [`LoopCounters`]).
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub connections_open: AtomicU64,
    pub handshakes_ok: AtomicU64,
    pub handshakes_rejected: AtomicU64,
    pub handshakes_closed_silently: AtomicU64,
    pub handshake_timeouts: AtomicU64,
    pub handler_errors: AtomicU64,
    pub peers_refused: AtomicU64,
}

pub(crate) fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// A snapshot of a service's counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Connections accepted from the listening sockets.
    pub accepted: u64,
    /// Accepted connections closed at once, before anything was read
    /// (loop full, shutting down, or a peer not allowed).
    pub refused: u64,
    /// Of those, peers whose uid (`SO_PEERCRED`) is not allowed
    /// ([`ServiceBuilder::allow_uid`](crate::service::ServiceBuilder::allow_uid)).
    pub peers_refused: u64,
    /// Sockets currently held, in any phase (handshake, open, closing).
    pub connections_open: u64,
    /// Opens answered with status 0.
    pub handshakes_ok: u64,
    /// Opens answered with a non-zero status (policy, anonymous, open limit).
    pub handshakes_rejected: u64,
    /// Connections closed with no status: bad header, bad userinfo,
    /// ended or failed or timed out inside the handshake.
    pub handshakes_closed_silently: u64,
    /// Of those, how many timed out.
    pub handshake_timeouts: u64,
    /// Connections a handler ended with an error (bad framing, ...).
    pub handler_errors: u64,
    /// Successful opens currently open, per pipe name.
    pub open_per_pipe: BTreeMap<String, u64>,
    /// Bytes received on all connections (handshakes included).
    pub bytes_in: u64,
    /// Bytes sent on all connections (status words included).
    pub bytes_out: u64,
    /// Multishot receives ended by an empty buffer ring (each followed by
    /// one receive into the connection's own buffer).
    /// io_uring backend only: always 0 on epoll, which has no buffer ring.
    pub recv_no_buffers: u64,
    /// Times a connection stopped being read because its replies piled up.
    pub backpressure_pauses: u64,
    /// Accept completions that failed.
    pub accept_errors: u64,
    /// Bytes the connections hold now for their output (buffer capacity),
    /// counted against [`max_buffered_bytes`](crate::service::ServiceBuilder::max_buffered_bytes).
    pub buffered_bytes: u64,
    /// The most `buffered_bytes` has been.
    pub buffered_bytes_peak: u64,
    /// Times a service thread stopped reading because its connections held
    /// more than its share of the budget.
    pub budget_pauses: u64,
    /// Connections still in their handshake closed to let a new one in
    /// when the process ran out of descriptors.
    pub evicted: u64,
}

impl Stats {
    /// Successful opens of `pipe` currently open (0 for an unknown name).
    pub fn open(&self, pipe: &str) -> u64 {
        self.open_per_pipe.get(pipe).copied().unwrap_or(0)
    }

    pub(crate) fn collect<'a>(
        c: &Counters,
        l: &LoopCounters,
        pipes: impl Iterator<Item = (&'a str, u64)>,
    ) -> Stats {
        let r = |a: &AtomicU64| a.load(Ordering::Relaxed);
        Stats {
            accepted: r(&l.accepted),
            refused: r(&l.refused),
            peers_refused: r(&c.peers_refused),
            connections_open: r(&c.connections_open),
            handshakes_ok: r(&c.handshakes_ok),
            handshakes_rejected: r(&c.handshakes_rejected),
            handshakes_closed_silently: r(&c.handshakes_closed_silently),
            handshake_timeouts: r(&c.handshake_timeouts),
            handler_errors: r(&c.handler_errors),
            open_per_pipe: pipes.map(|(n, v)| (n.to_owned(), v)).collect(),
            bytes_in: r(&l.bytes_in),
            bytes_out: r(&l.bytes_out),
            recv_no_buffers: r(&l.recv_no_buffers),
            backpressure_pauses: r(&l.backpressure_pauses),
            accept_errors: r(&l.accept_errors),
            buffered_bytes: r(&l.buffered_bytes),
            buffered_bytes_peak: r(&l.buffered_bytes_peak),
            budget_pauses: r(&l.budget_pauses),
            evicted: r(&l.evicted),
        }
    }
}
