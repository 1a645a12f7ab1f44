//! One TCP connection of the front: the service loop's [`Session`] around
//! the sans-IO [`Connection`] and its [`EngineBackend`].

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use super::backend::EngineBackend;
use super::FrontCounters;
use crate::ring::service::{CloseReason, Session, Verdict};
use crate::smb2::server::{Connection, ServerConfig};

/// The time as a FILETIME (100 ns units since 1601).
fn now_filetime() -> u64 {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    (d.as_secs() + 11_644_473_600) * 10_000_000 + u64::from(d.subsec_nanos() / 100)
}

#[derive(Debug)]
pub(crate) struct FrontSession {
    conn: Connection,
    backend: EngineBackend,
    counters: Arc<FrontCounters>,
    /// Sessions of `conn` already counted.
    sessions_counted: u64,
    /// The connection is closed if no session is set up by then.
    login_deadline: Instant,
}

impl FrontSession {
    pub(crate) fn new(
        cfg: ServerConfig,
        client: SocketAddr,
        seed: u64,
        backend: EngineBackend,
        counters: Arc<FrontCounters>,
        login_deadline: Instant,
    ) -> Self {
        FrontSession {
            conn: Connection::new(cfg, client, seed),
            backend,
            counters,
            sessions_counted: 0,
            login_deadline,
        }
    }

    /// Feeds every finished engine request back to the connection (which
    /// may start more, polled in turn), then hands out what it produced.
    fn drive(&mut self, out: &mut Vec<u8>) -> Verdict {
        loop {
            let done = self.backend.poll_done();
            if done.is_empty() {
                break;
            }
            let now = now_filetime();
            for (op, c) in done {
                if self.conn.complete(op, c, now, &mut self.backend).is_err() {
                    self.counters.errors.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        let started = self.conn.sessions_started();
        if started > self.sessions_counted {
            self.counters
                .sessions
                .fetch_add(started - self.sessions_counted, Ordering::Relaxed);
            self.sessions_counted = started;
        }
        let produced = self.conn.take_output();
        if out.is_empty() {
            *out = produced;
        } else {
            out.extend_from_slice(&produced);
        }
        if self.conn.is_closed() {
            Verdict::Close
        } else {
            Verdict::Continue
        }
    }
}

impl Session for FrontSession {
    fn on_data(&mut self, data: &[u8], out: &mut Vec<u8>) -> Verdict {
        if let Err(e) = self.conn.receive(data, now_filetime(), &mut self.backend) {
            tracing::debug!(error = ?e, "smb2 front: closing a connection");
            self.counters.errors.fetch_add(1, Ordering::Relaxed);
        }
        self.drive(out)
    }

    /// Until a session is set up: the login deadline (a connection that
    /// never logs in is closed; these are also the ones evicted first when
    /// the process runs out of descriptors).
    fn deadline(&self) -> Option<Instant> {
        (self.conn.sessions_started() == 0).then_some(self.login_deadline)
    }

    fn on_deadline(&mut self, _out: &mut Vec<u8>) -> Verdict {
        self.counters.login_timeouts.fetch_add(1, Ordering::Relaxed);
        Verdict::Abort
    }

    fn on_wake(&mut self, out: &mut Vec<u8>) -> Verdict {
        self.drive(out)
    }

    fn on_close(&mut self, _reason: CloseReason) {
        self.conn.shutdown(&mut self.backend);
        self.backend.close_all();
        self.counters
            .connections_open
            .fetch_sub(1, Ordering::Relaxed);
    }
}
