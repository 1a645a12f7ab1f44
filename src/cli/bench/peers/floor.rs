//! Peer `floor`: a reference point, not an engine. One thread drives every
//! pipe in lockstep rounds over blocking std sockets: it writes the request
//! of every pipe, then reads every reply in the same order. Per transceive
//! that is one `write(2)` and one `read(2)` (FIONREAD only after a full read
//! under 4280 bytes), no readiness API, no runtime, no allocation beyond the
//! request itself: close to the least CPU any client that makes the socket
//! calls itself can spend. Its CPU per transceive is the floor the engines'
//! ratios are judged against.
//!
//! It cannot serve independent requests (each one waits for its whole
//! round), so its latency is not comparable, and it is not part of `all`.

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::time::Instant;

use super::threads;
use crate::bench::exchange::TransceiveError;
use crate::bench::measure::{Baseline, Clock};
use crate::bench::peer::{BenchError, Peer, PeerRun, Run};

/// Lockstep rounds on one thread.
#[derive(Debug, Default)]
pub struct FloorPeer;

/// One open pipe of the round.
struct Lane {
    pipe: usize,
    stream: UnixStream,
    call_id: u32,
    /// Set when the pipe failed: it leaves the rounds.
    failed: bool,
}

impl Peer for FloorPeer {
    fn name(&self) -> &'static str {
        "floor"
    }

    fn run(&self, run: &Arc<Run>) -> Result<PeerRun, BenchError> {
        let before = Baseline::now().map_err(BenchError::io("reading VmRSS"))?;
        let mut lanes: Vec<Lane> = (0..run.spec.pipes)
            .filter_map(|pipe| {
                let stream = run.opened(pipe, threads::open(run, pipe))?;
                Some(Lane {
                    pipe,
                    stream,
                    call_id: 0,
                    failed: false,
                })
            })
            .collect();
        let mut buf = vec![0u8; run.spec.reply_buffer_bytes()];
        // Which lanes wrote a request this round, and when.
        let mut sent: Vec<(usize, Instant)> = Vec::with_capacity(lanes.len());
        let clock = Clock::start(&run.budget, run.service_pid)
            .map_err(BenchError::io("starting the clock"))?;
        let mut now = Instant::now();
        loop {
            sent.clear();
            for (k, lane) in lanes.iter_mut().enumerate() {
                if !run.budget.take(now) {
                    break;
                }
                lane.call_id = lane.call_id.wrapping_add(1);
                let request = run.exchange.request(lane.call_id);
                let start = Instant::now();
                match lane.stream.write_all(&request) {
                    Ok(()) => sent.push((k, start)),
                    Err(e) => {
                        let e = Err(TransceiveError::from(e));
                        run.transceived(lane.pipe, lane.call_id, start, e);
                        lane.failed = true;
                    }
                }
            }
            if sent.is_empty() {
                break;
            }
            for &(k, start) in &sent {
                let lane = &mut lanes[k];
                let outcome = threads::receive_reply(run, &mut lane.stream, &mut buf, lane.call_id);
                match run.transceived(lane.pipe, lane.call_id, start, outcome) {
                    Some(end) => now = end,
                    None => lane.failed = true,
                }
            }
            lanes.retain(|l| !l.failed);
        }
        let measured = clock
            .stop(before)
            .map_err(BenchError::io("measuring the run"))?;
        drop(lanes);
        Ok(PeerRun {
            backend: "one thread, blocking std UnixStream, lockstep rounds \
                      (every request written, then every reply read): a CPU floor, not an engine"
                .to_string(),
            detail: None,
            measured,
        })
    }
}
