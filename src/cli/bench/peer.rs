//! The interface between the harness and an engine under test.
//!
//! A peer is one way of driving pipes (a thread per pipe, tokio tasks,
//! tokio-uring tasks, opipe's own engine). For one [`Run`] it must:
//!
//! 1. take a [`Baseline`](super::measure::Baseline) before opening anything
//!    (after its runtime or ring exists),
//! 2. open `run.spec.pipes` pipes to `run.service`, each with the full open
//!    handshake of the run's dialect ([`Exchange::open_message`](super::exchange::Exchange::open_message),
//!    then [`check_open_reply`](super::exchange::Exchange::check_open_reply)
//!    on the answer of [`open_reply_len`](super::exchange::Exchange::open_reply_len)
//!    bytes) and the bind the call needs
//!    ([`bind_request`](super::exchange::Exchange::bind_request)), at most
//!    `run.spec.open_concurrency` at once (0: no limit), each outcome
//!    recorded with [`Run::opened`]; in Samba's dialect every message is
//!    framed ([`framed`](super::framed), or the engine's own framing),
//! 3. start the [`Clock`](super::measure::Clock) once all are open (this
//!    arms `run.budget`),
//! 4. on every pipe, transceive while `run.budget.take(now)` allows, each one
//!    with the semantics of [`exchange`](super::exchange): the request from
//!    [`Exchange::request`](super::exchange::Exchange::request), one read of
//!    `max_out` handed to [`Exchange::first_read`](super::exchange::Exchange::first_read)
//!    (or [`first_read_with_status`](super::exchange::Exchange::first_read_with_status)
//!    for an engine that decides the overflow status itself), the rest with
//!    ordinary reads, then [`Exchange::verify`](super::exchange::Exchange::verify);
//!    each outcome recorded with [`Run::transceived`]; a pipe that failed
//!    once stops (its stream state is unknown),
//! 5. stop the clock while every pipe is still open, then close them all and
//!    release every descriptor and thread it made before returning (the
//!    harness warns when `/proc/self/fd` does not return to its count).
//!
//! Peers with a thread or task per pipe get steps 3 and 5 from `phases`.

use std::fmt;
use std::io;
use std::sync::Arc;
use std::time::Instant;

use super::exchange::{Exchange, ReplyProgress, TransceiveError};
use super::measure::{Budget, Measured};
use super::record::Recorder;
use super::service::ServiceAddr;
use super::spec::RunSpec;

/// One engine under test.
pub trait Peer {
    /// The engine's name as used by `--engine` and in the output.
    fn name(&self) -> &'static str;

    /// Runs one measured run (see the module docs for the contract).
    ///
    /// Per-pipe failures go to `run.recorder` and do not end the run; an
    /// `Err` means the peer could not run at all (no runtime, no threads).
    /// `run` is shared so that peers may hand it to `'static` tasks.
    fn run(&self, run: &Arc<Run>) -> Result<PeerRun, BenchError>;
}

/// What the harness hands a peer for one run.
#[derive(Debug)]
pub struct Run {
    /// Pipes, sizes, max_out, stop rule.
    pub spec: RunSpec,
    /// The service to open the pipes of.
    pub service: ServiceAddr,
    /// The service's process when the bench started it (its CPU time is
    /// measured with the client's).
    pub service_pid: Option<u32>,
    /// Request encoding and reply verification, shared by all pipes.
    pub exchange: Exchange,
    /// Where every pipe records its latencies, counts and errors.
    pub recorder: Recorder,
    /// Tells the pipes when to stop.
    pub budget: Budget,
}

impl Run {
    /// A transceive whose whole reply, `buf[..reply.len()]`, was read at
    /// `end`: verified, and what [`transceived`](Self::transceived) records.
    pub fn completed(
        &self,
        end: Instant,
        buf: &[u8],
        reply: ReplyProgress,
        call_id: u32,
    ) -> Result<Completed, TransceiveError> {
        self.exchange.verify(&buf[..reply.len()], call_id)?;
        Ok(Completed {
            end,
            overflow: reply.overflow(),
        })
    }

    /// Records the outcome of pipe `pipe`'s open (connect + handshake) and
    /// gives back the pipe when it opened.
    pub fn opened<P>(&self, pipe: usize, outcome: Result<P, TransceiveError>) -> Option<P> {
        match outcome {
            Ok(p) => {
                self.recorder.opened(pipe);
                Some(p)
            }
            Err(e) => {
                self.recorder.error(pipe, || format!("open: {e}"));
                None
            }
        }
    }

    /// Records the outcome of transceive `call_id` on pipe `pipe`, begun at
    /// `start` (just before the request was written). Gives back when it
    /// ended, for the next [`Budget::take`], or `None` when it failed and
    /// the pipe must stop.
    pub fn transceived(
        &self,
        pipe: usize,
        call_id: u32,
        start: Instant,
        outcome: Result<Completed, TransceiveError>,
    ) -> Option<Instant> {
        match outcome {
            Ok(done) => {
                let ns = done.end.saturating_duration_since(start).as_nanos();
                let ns = u64::try_from(ns).unwrap_or(u64::MAX);
                self.recorder.transceive(pipe, ns, done.overflow);
                Some(done.end)
            }
            Err(e @ TransceiveError::BadReply(_)) => {
                self.recorder
                    .bad_reply(pipe, || format!("transceive {call_id}: {e}"));
                None
            }
            Err(e) => {
                self.recorder
                    .error(pipe, || format!("transceive {call_id}: {e}"));
                None
            }
        }
    }
}

/// A transceive whose whole reply arrived and verified.
#[derive(Debug, Clone, Copy)]
pub struct Completed {
    /// When the last byte of the reply had been read (before verification).
    pub end: Instant,
    /// Whether its first read ended with STATUS_BUFFER_OVERFLOW.
    pub overflow: bool,
}

/// What a peer reports besides what it recorded.
#[derive(Debug, Clone)]
pub struct PeerRun {
    /// How the engine did it, e.g. "tokio 1.x multi-thread, 2 workers,
    /// epoll"; opipe's engine says exactly `io_uring` or `epoll`.
    pub backend: String,
    /// More about how opipe's engine ran (buffers, leftover detection);
    /// `None` for the other peers, whose `backend` already says it all.
    pub detail: Option<String>,
    /// The measured phase (from [`Clock::stop`](super::measure::Clock::stop)).
    pub measured: Measured,
}

/// A peer could not run at all.
#[derive(Debug)]
pub enum BenchError {
    /// An I/O error outside any one pipe (runtime set-up, thread spawn, /proc).
    Io {
        /// What was being done.
        context: &'static str,
        /// The error.
        source: io::Error,
    },
    /// The engine cannot run here (e.g. io_uring switched off), and why.
    Unavailable(String),
}

impl BenchError {
    /// Wraps an I/O error with what was being done.
    pub fn io(context: &'static str) -> impl FnOnce(io::Error) -> BenchError {
        move |source| BenchError::Io { context, source }
    }
}

impl fmt::Display for BenchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BenchError::Io { context, source } => write!(f, "{context}: {source}"),
            BenchError::Unavailable(why) => write!(f, "engine unavailable: {why}"),
        }
    }
}

impl std::error::Error for BenchError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            BenchError::Io { source, .. } => Some(source),
            BenchError::Unavailable(_) => None,
        }
    }
}
