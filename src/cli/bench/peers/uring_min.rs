//! Peer `uring-min`: a reference point, not an engine. The least an
//! event-driven io_uring client does per transceive, with none of the
//! engine's generality: one ring per thread (`--rings`, as for the engine;
//! SINGLE_ISSUER|DEFER_TASKRUN where granted), one `SEND` SQE per request,
//! and the reply from the pipe's multishot `RECV` on a provided-buffer ring,
//! armed once per pipe; every SQE names its socket by a slot of the ring's
//! registered file table (as the engine's do), where the kernel grants one. No command queue, no op table, no cancellation, no
//! pushback: it relies on this bench's closed loop (one request in flight
//! per pipe) to know which request a chunk answers.
//!
//! Where `floor` says what a client costs that never waits on a socket,
//! this says what an io_uring client costs that does (as any client serving
//! independent requests must): the gap between `uring-min` and `uring` is
//! the engine's own overhead; the gap between `uring-min` and `floor` is the
//! price of being told when a reply arrived. Not part of `all`.

use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::sync::{mpsc, Arc, Barrier};
use std::time::Instant;

use io_uring::{cqueue, opcode, squeue, types, IoUring};
use opipe::ring::bufring::BufRing;

use super::threads;
use crate::bench::exchange::{ReplyProgress, TransceiveError};
use crate::bench::measure::Baseline;
use crate::bench::peer::{BenchError, Completed, Peer, PeerRun, Run};
use crate::bench::phases;

/// The reference event-driven io_uring client.
#[derive(Debug)]
pub struct UringMinPeer {
    /// Threads, one ring each, the pipes dealt out round robin (`--rings`).
    pub threads: usize,
}

/// Reply buffers (the engine's default pool size per ring).
const POOL_BUFS: u16 = 256;
/// Buffer group of the reply buffers.
const BGID: u16 = 7;
/// How long the teardown waits for the receives to end.
const TEARDOWN: std::time::Duration = std::time::Duration::from_secs(5);
/// Low bit of user_data: 0 for a send, 1 for the pipe's multishot receive.
const RECV_BIT: u64 = 1;

/// One open pipe.
struct Lane {
    pipe: usize,
    stream: UnixStream,
    /// The socket's slot in the ring's registered file table, if any.
    fixed: Option<u32>,
    call_id: u32,
    start: Instant,
    /// The request being sent; the kernel reads it until its send completes.
    request: Vec<u8>,
    /// A send SQE is in flight (the request buffer is the kernel's).
    sending: bool,
    /// The reply to the request in flight, as it arrives.
    reply: Vec<u8>,
    progress: Option<ReplyProgress>,
    /// The reply is complete and the budget allows another request, but the
    /// previous send's completion has not been seen yet.
    next_due: bool,
    /// The multishot receive is armed (a final completion is still to come).
    armed: bool,
    /// No more requests on this pipe (failed, or the budget ran out).
    done: bool,
}

impl Peer for UringMinPeer {
    fn name(&self) -> &'static str {
        "uring-min"
    }

    fn run(&self, run: &Arc<Run>) -> Result<PeerRun, BenchError> {
        let run: &Run = run;
        let before = Baseline::now().map_err(BenchError::io("reading VmRSS"))?;
        let threads = self.threads.clamp(1, run.spec.pipes.max(1));
        let mut groups: Vec<Vec<Lane>> = (0..threads).map(|_| Vec::new()).collect();
        for pipe in 0..run.spec.pipes {
            if let Some(stream) = run.opened(pipe, threads::open(run, pipe)) {
                groups[pipe % threads].push(Lane::new(pipe, stream));
            }
        }
        std::thread::scope(|scope| {
            // Threads meet the leader at one barrier of `spawned + 1`
            // parties (see `phases`), handed out once every spawn is known.
            let mut handles = Vec::with_capacity(threads);
            let mut senders = Vec::with_capacity(threads);
            let mut spawn_error = None;
            for lanes in groups {
                let (tx, rx) = mpsc::channel::<Arc<Barrier>>();
                let spawn = std::thread::Builder::new()
                    .name("uring-min".into())
                    .spawn_scoped(scope, move || ring_thread(run, lanes, &rx));
                match spawn {
                    Ok(h) => {
                        handles.push(h);
                        senders.push(tx);
                    }
                    Err(e) => spawn_error = Some(e),
                }
            }
            let barrier = Arc::new(Barrier::new(handles.len() + 1));
            for tx in senders {
                // A thread that is gone already has nothing to meet.
                let _ = tx.send(barrier.clone());
            }
            let measured = phases::lead_blocking(&barrier, run, before);
            let mut mode = None;
            let mut failure = spawn_error.map(BenchError::io("starting a ring thread"));
            for h in handles {
                match h.join() {
                    Ok(Ok(m)) => mode = Some(m),
                    Ok(Err(e)) => failure = Some(e),
                    Err(_) => {
                        failure = Some(BenchError::Unavailable("a ring thread panicked".into()))
                    }
                }
            }
            if let Some(e) = failure {
                return Err(e);
            }
            let measured = measured.map_err(BenchError::io("measuring the run"))?;
            let mode = mode.unwrap_or("no ring");
            Ok(PeerRun {
                backend: format!(
                    "{threads} thread(s), raw io_uring ({mode}), one ring each: one SEND per \
                     request, one multishot RECV per pipe on {POOL_BUFS} provided buffers per \
                     ring; a reference, not an engine"
                ),
                detail: None,
                measured,
            })
        })
    }
}

impl Lane {
    fn new(pipe: usize, stream: UnixStream) -> Lane {
        Lane {
            pipe,
            stream,
            fixed: None,
            call_id: 0,
            start: Instant::now(),
            request: Vec::new(),
            sending: false,
            reply: Vec::new(),
            progress: None,
            next_due: false,
            armed: false,
            done: false,
        }
    }
}

/// One ring thread: its ring and buffers, the four meetings, its pipes
/// driven between *go* and *done*, then the teardown. Gives back the ring's
/// task-run mode.
fn ring_thread(
    run: &Run,
    mut lanes: Vec<Lane>,
    barrier: &mpsc::Receiver<Arc<Barrier>>,
) -> Result<&'static str, BenchError> {
    let pipes = lanes.len().max(1);
    let entries = u32::try_from(pipes.clamp(64, 4096)).unwrap_or(4096);
    let cq = u32::try_from(pipes.saturating_mul(4)).unwrap_or(u32::MAX);
    let buf_len = u32::try_from(run.spec.reply_buffer_bytes()).unwrap_or(u32::MAX);
    // The ring is made on the thread that uses it (SINGLE_ISSUER).
    let setup = opipe::ring::new_ring(entries, cq)
        .map_err(|e| BenchError::Unavailable(e.to_string()))
        .and_then(|(ring, flags)| {
            // As many buffers as the engine's pool per ring: a few hundred
            // stay warm in the cache; thousands measured slower (each
            // receive lands in a cold buffer).
            let bufs = BufRing::new(&ring, BGID, POOL_BUFS, buf_len)
                .map_err(BenchError::io("registering the reply buffers"))?;
            Ok((ring, flags, bufs))
        });
    let Ok(barrier) = barrier.recv() else {
        return Err(BenchError::Unavailable("the leader went away".into()));
    };
    barrier.wait(); // opened
    barrier.wait(); // go
    let (mut ring, flags, mut bufs) = match setup {
        Ok(s) => s,
        Err(e) => {
            barrier.wait(); // done
            barrier.wait(); // close
            return Err(e);
        }
    };
    register_files(&ring, &mut lanes);
    let files = lanes.iter().all(|l| l.fixed.is_some());
    let result = drive(run, &mut ring, &mut bufs, &mut lanes);
    barrier.wait(); // done
    barrier.wait(); // close
    teardown(&mut ring, &mut bufs, &lanes);
    drop(ring);
    drop(lanes);
    result?;
    Ok(match (flags.defer_taskrun, files) {
        (true, true) => "DEFER_TASKRUN, registered files",
        (true, false) => "DEFER_TASKRUN, descriptors",
        (false, true) => "no DEFER_TASKRUN, registered files",
        (false, false) => "no DEFER_TASKRUN, descriptors",
    })
}

/// Shuts the sockets so every multishot receive ends, reaps until none is
/// left (at most `TEARDOWN`), then unregisters the buffers.
fn teardown(ring: &mut IoUring, bufs: &mut BufRing, lanes: &[Lane]) {
    for lane in lanes {
        let _ = lane.stream.shutdown(std::net::Shutdown::Both);
    }
    let mut left = lanes.iter().filter(|l| l.armed).count();
    let deadline = Instant::now() + TEARDOWN;
    while left > 0 && Instant::now() < deadline {
        let ts = types::Timespec::new().nsec(50_000_000);
        let args = types::SubmitArgs::new().timespec(&ts);
        match ring.submitter().submit_with_args(1, &args) {
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::ETIME) => {}
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => {}
            Err(_) => break,
        }
        for cqe in ring.completion() {
            if cqe.user_data() & RECV_BIT != 0 && !cqueue::more(cqe.flags()) {
                left -= 1;
            }
            bufs.discard(cqe.flags());
        }
    }
    // A receive still armed after the deadline may yet write into the
    // buffers: then they stay registered, and BufRing leaks them rather
    // than free memory the kernel may use.
    if left == 0 {
        let _ = bufs.unregister(ring);
    }
}

/// Registers every lane's socket with the ring (slot k: lane k), so no SQE
/// looks a descriptor up; without a table (refused) they keep descriptors.
fn register_files(ring: &IoUring, lanes: &mut [Lane]) {
    let fds: Vec<i32> = lanes.iter().map(|l| l.stream.as_raw_fd()).collect();
    if fds.is_empty() || ring.submitter().register_files(&fds).is_err() {
        return;
    }
    for (k, lane) in lanes.iter_mut().enumerate() {
        lane.fixed = u32::try_from(k).ok();
    }
}

/// Builds an opcode on `lane`'s socket: by registered slot, or by descriptor.
macro_rules! on_socket {
    ($lane:expr, |$t:ident| $build:expr) => {
        match $lane.fixed {
            Some(slot) => {
                let $t = types::Fixed(slot);
                $build
            }
            None => {
                let $t = types::Fd($lane.stream.as_raw_fd());
                $build
            }
        }
    };
}

fn push(ring: &mut IoUring, sqe: &squeue::Entry) -> Result<(), BenchError> {
    loop {
        // SAFETY: the SQE's buffers (a lane's request, or none for a
        // buffer-select receive) live in `lanes`, which outlive the ring's
        // use of them: `run` reaps every receive before dropping the lanes,
        // and a lane's request is not touched while its send is in flight.
        if unsafe { ring.submission().push(sqe) }.is_ok() {
            return Ok(());
        }
        ring.submit().map_err(BenchError::io("submitting"))?;
    }
}

fn arm(ring: &mut IoUring, k: usize, lane: &mut Lane) -> Result<(), BenchError> {
    let sqe = on_socket!(lane, |t| opcode::RecvMulti::new(t, BGID).build())
        .user_data(((k as u64) << 1) | RECV_BIT);
    push(ring, &sqe)?;
    lane.armed = true;
    Ok(())
}

/// Sends `lane`'s next request, built in the buffer last given back to
/// `spare` (the reply just verified: still in the cache); the previous
/// request's buffer, whose send completed, goes to `spare`.
fn send(
    run: &Run,
    ring: &mut IoUring,
    k: usize,
    lane: &mut Lane,
    spare: &mut Vec<Vec<u8>>,
) -> Result<(), BenchError> {
    lane.call_id = lane.call_id.wrapping_add(1);
    let mut buf = spare.pop().unwrap_or_default();
    run.exchange.request_into(lane.call_id, &mut buf);
    let mut old = std::mem::replace(&mut lane.request, buf);
    if old.capacity() > 0 {
        old.clear();
        spare.push(old);
    }
    lane.progress = None;
    lane.start = Instant::now();
    let len = u32::try_from(lane.request.len()).unwrap_or(u32::MAX);
    let sqe = on_socket!(lane, |t| opcode::Send::new(t, lane.request.as_ptr(), len)
        .build())
    .user_data((k as u64) << 1);
    push(ring, &sqe)?;
    lane.sending = true;
    Ok(())
}

/// Stops a pipe after an error (recorded) or at the end of the budget.
fn fail(run: &Run, lane: &mut Lane, e: TransceiveError) {
    run.transceived(lane.pipe, lane.call_id, lane.start, Err(e));
    lane.done = true;
}

fn drive(
    run: &Run,
    ring: &mut IoUring,
    bufs: &mut BufRing,
    lanes: &mut [Lane],
) -> Result<(), BenchError> {
    // Emptied buffers, last in first out: a reply lands in, and a request
    // is built in, one still in the cache (as the engine's spares are).
    let mut spare: Vec<Vec<u8>> = Vec::new();
    let buf_len = run.spec.reply_buffer_bytes();
    let now = Instant::now();
    for (k, lane) in lanes.iter_mut().enumerate() {
        arm(ring, k, lane)?;
        if run.budget.take(now) {
            send(run, ring, k, lane, &mut spare)?;
        } else {
            lane.done = true;
        }
    }
    let mut active = lanes.iter().filter(|l| !l.done).count();
    let mut cqes: Vec<(u64, i32, u32)> = Vec::with_capacity(1024);
    while active > 0 {
        match ring.submit_and_wait(1) {
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => {}
            Err(e) => return Err(BenchError::io("waiting for completions")(e)),
        }
        cqes.extend(
            ring.completion()
                .map(|c| (c.user_data(), c.result(), c.flags())),
        );
        for &(ud, res, flags) in &cqes {
            let k = (ud >> 1) as usize;
            let Some(lane) = lanes.get_mut(k) else {
                bufs.discard(flags);
                continue;
            };
            let was_done = lane.done;
            if ud & RECV_BIT == 0 {
                lane.sending = false;
                if lane.done {
                    continue;
                }
                if res < 0 {
                    fail(run, lane, io::Error::from_raw_os_error(-res).into());
                } else if res as usize != lane.request.len() {
                    let why = format!("short send: {res} of {} bytes", lane.request.len());
                    fail(run, lane, io::Error::other(why).into());
                } else if lane.next_due {
                    lane.next_due = false;
                    send(run, ring, k, lane, &mut spare)?;
                }
            } else {
                if !cqueue::more(flags) {
                    lane.armed = false;
                }
                if res == -libc::ENOBUFS {
                    // The buffer ring ran dry; the receive is re-armed below.
                } else if res <= 0 {
                    bufs.discard(flags);
                    if !lane.done {
                        let e = if res == 0 {
                            TransceiveError::Closed
                        } else {
                            io::Error::from_raw_os_error(-res).into()
                        };
                        fail(run, lane, e);
                    }
                } else {
                    if lane.reply.capacity() == 0 {
                        lane.reply = spare.pop().unwrap_or_else(|| Vec::with_capacity(buf_len));
                    }
                    let took = match bufs.take(flags, res as usize) {
                        Ok(chunk) => {
                            lane.reply.extend_from_slice(&chunk);
                            Ok(())
                        }
                        Err(e) => Err(io::Error::other(e.to_string())),
                    };
                    match took {
                        Err(e) => fail(run, lane, e.into()),
                        Ok(()) if lane.done => {}
                        Ok(()) => {
                            // The reply's end time also asks the budget (no
                            // second clock read, as the engine's loop does).
                            if let Some(end) = chunk_arrived(run, lane) {
                                let mut reply = std::mem::take(&mut lane.reply);
                                reply.clear();
                                spare.push(reply);
                                if !run.budget.take(end) {
                                    lane.done = true;
                                } else if lane.sending {
                                    lane.next_due = true;
                                } else {
                                    send(run, ring, k, lane, &mut spare)?;
                                }
                            }
                        }
                    }
                }
                if !lane.armed && !lane.done {
                    arm(ring, k, lane)?;
                }
            }
            if lane.done && !was_done {
                active -= 1;
            }
        }
        cqes.clear();
    }
    Ok(())
}

/// Takes the bytes now in `lane.reply`; when the reply is whole, verifies
/// and records it and returns its end time (the lane may send its next
/// request).
fn chunk_arrived(run: &Run, lane: &mut Lane) -> Option<Instant> {
    let max_out = run.spec.max_out;
    let mut progress = match lane.progress {
        Some(p) => p,
        None => {
            // The transceive's one read: at most max_out of the first
            // chunk; bytes beyond it, or still queued, mean overflow.
            let got = lane.reply.len();
            let n = got.min(max_out);
            let fd = lane.stream.as_raw_fd();
            let first = run.exchange.first_read(n, || {
                Ok(got - n
                    + if got == n {
                        opipe::ring::fionread(fd)?
                    } else {
                        0
                    })
            });
            match first {
                Ok(p) => p,
                Err(e) => {
                    fail(run, lane, e);
                    return None;
                }
            }
        }
    };
    // Bytes past the first read (the rest of its chunk, or later chunks)
    // are the overflow's follow-up reads.
    let extra = lane.reply.len() - progress.len();
    if extra > 0 {
        let room = progress.missing().map_or(0, |r| r.len());
        let step = if extra > room {
            Err(TransceiveError::BadReply(format!(
                "{} bytes arrived for a reply of {}",
                lane.reply.len(),
                progress.len() + room
            )))
        } else {
            progress.advance(extra)
        };
        if let Err(e) = step {
            fail(run, lane, e);
            return None;
        }
    }
    lane.progress = Some(progress);
    if progress.missing().is_some() {
        return None;
    }
    let end = Instant::now();
    let outcome = run
        .exchange
        .verify(&lane.reply, lane.call_id)
        .map(|()| Completed {
            end,
            overflow: progress.overflow(),
        });
    let end = run.transceived(lane.pipe, lane.call_id, lane.start, outcome);
    if end.is_none() {
        lane.done = true;
    }
    end
}
