//! Peer `threads`: one blocking OS thread per pipe on a std `UnixStream`,
//! the illumos seed's model (a kernel thread blocks in `ksocket_recv` per
//! outstanding request).

use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Barrier, Condvar, Mutex};
use std::time::Instant;

use crate::bench::exchange::{self, TransceiveError};
use crate::bench::measure::{Baseline, Measured};
use crate::bench::peer::{BenchError, Completed, Peer, PeerRun, Run};
use crate::bench::phases;

/// Stack of each pipe thread: enough for the blocking loop, small enough
/// that 4096 of them fit comfortably.
const STACK_BYTES: usize = 64 * 1024;

/// One blocking thread per pipe.
#[derive(Debug, Default)]
pub struct ThreadsPeer;

impl Peer for ThreadsPeer {
    fn name(&self) -> &'static str {
        "threads"
    }

    fn run(&self, run: &Arc<Run>) -> Result<PeerRun, BenchError> {
        let run: &Run = run;
        let before = Baseline::now().map_err(BenchError::io("reading VmRSS"))?;
        // The threads meet at one reusable barrier four times (see
        // `phases`). Its size is known only once every thread has been
        // spawned (a spawn can fail), so it is handed out through `roster`.
        let roster = Roster::default();
        let outcome = std::thread::scope(|scope| {
            let mut spawned = 0;
            let mut spawn_error = None;
            for pipe in 0..run.spec.pipes {
                let roster = &roster;
                let spawn = std::thread::Builder::new()
                    .stack_size(STACK_BYTES)
                    .spawn_scoped(scope, move || pipe_thread(run, pipe, roster));
                match spawn {
                    Ok(_) => spawned += 1,
                    Err(e) => {
                        spawn_error = Some(e);
                        break;
                    }
                }
            }
            if let Some(e) = &spawn_error {
                for pipe in spawned..run.spec.pipes {
                    run.recorder
                        .error(pipe, || format!("no thread for this pipe: {e}"));
                }
            }
            let barrier = roster.publish(spawned + 1);
            phases::lead_blocking(&barrier, run, before)
        });
        let measured: Measured = outcome.map_err(BenchError::io("measuring the run"))?;
        Ok(PeerRun {
            detail: None,
            backend: format!(
                "std blocking UnixStream, one OS thread per pipe ({} KiB stacks), FIONREAD",
                STACK_BYTES / 1024
            ),
            measured,
        })
    }
}

/// Hands the rendezvous barrier to threads once its size is known.
#[derive(Default)]
struct Roster {
    barrier: Mutex<Option<Arc<Barrier>>>,
    ready: Condvar,
}

impl Roster {
    fn publish(&self, parties: usize) -> Arc<Barrier> {
        let b = Arc::new(Barrier::new(parties));
        *self.barrier.lock().unwrap_or_else(|e| e.into_inner()) = Some(b.clone());
        self.ready.notify_all();
        b
    }

    fn wait(&self) -> Arc<Barrier> {
        let mut g = self.barrier.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if let Some(b) = g.as_ref() {
                return b.clone();
            }
            g = self.ready.wait(g).unwrap_or_else(|e| e.into_inner());
        }
    }
}

fn pipe_thread(run: &Run, pipe: usize, roster: &Roster) {
    let stream = run.opened(pipe, open(run, pipe));
    let barrier = roster.wait();
    phases::pipe_blocking(&barrier, stream, |s| drive(run, pipe, s));
}

/// Connect and the open handshake, blocking.
pub(super) fn open(run: &Run, pipe: usize) -> Result<UnixStream, TransceiveError> {
    let mut s = UnixStream::connect(run.service.socket_path())?;
    s.write_all(&run.exchange.open_message(pipe)?)?;
    let mut word = [0u8; exchange::STATUS_WORD_BYTES];
    s.read_exact(&mut word)?;
    exchange::check_open_status(word)?;
    Ok(s)
}

/// Transceives on one pipe until the budget runs out or the pipe fails.
fn drive(run: &Run, pipe: usize, stream: &mut UnixStream) {
    let mut buf = vec![0u8; run.spec.reply_buffer_bytes()];
    let mut call_id: u32 = 0;
    let mut now = Instant::now();
    while run.budget.take(now) {
        call_id = call_id.wrapping_add(1);
        let request = run.exchange.request(call_id);
        let start = Instant::now();
        let outcome = transceive(run, stream, &request, &mut buf, call_id);
        match run.transceived(pipe, call_id, start, outcome) {
            Some(end) => now = end,
            None => return,
        }
    }
}

/// One transceive, the seed's way: write all, one read of `max_out`, the
/// overflow rule (FIONREAD), the rest, then verification.
fn transceive(
    run: &Run,
    stream: &mut UnixStream,
    request: &[u8],
    buf: &mut [u8],
    call_id: u32,
) -> Result<Completed, TransceiveError> {
    stream.write_all(request)?;
    receive_reply(run, stream, buf, call_id)
}

/// The reading half of [`transceive`], once the request is written: one
/// read of `max_out`, the overflow rule (FIONREAD), the rest, verification.
pub(super) fn receive_reply(
    run: &Run,
    stream: &mut UnixStream,
    buf: &mut [u8],
    call_id: u32,
) -> Result<Completed, TransceiveError> {
    let n = read_once(stream, &mut buf[..run.spec.max_out])?;
    let fd = stream.as_raw_fd();
    let mut reply = run.exchange.first_read(n, || opipe::ring::fionread(fd))?;
    while let Some(rest) = reply.missing() {
        let k = read_once(stream, &mut buf[rest])?;
        reply.advance(k)?;
    }
    let end = Instant::now();
    run.exchange.verify(&buf[..reply.len()], call_id)?;
    Ok(Completed {
        end,
        overflow: reply.overflow(),
    })
}

/// One `read(2)`, retried only on EINTR: the seed's single receive.
fn read_once(stream: &mut UnixStream, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        match stream.read(buf) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}
