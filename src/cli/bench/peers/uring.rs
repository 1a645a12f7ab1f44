//! Peer `uring`: opipe's own engine (io_uring, or its epoll fallback with
//! `--backend epoll` or where io_uring is refused).
//!
//! Opens every pipe through the engine (each open one linked SQE chain),
//! then drives each pipe from the ring thread itself: the completion
//! callback of one transceive verifies the reply and starts the next
//! transceive right there (`RingContext::transceive_with`), so the measured
//! loop has no thread hop, no queue and no wake-up; the ring batches
//! everything that is ready into one `io_uring_enter`.

use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use opipe::engine::{
    Backend, BackendChoice, BufferMode, Engine, EngineConfig, OpenOptions, Pipe, PipeId,
    RingContext, Transfer,
};
use opipe::protocol::NtStatus;

use crate::bench::exchange::{ReplyProgress, TransceiveError};
use crate::bench::measure::{Baseline, Clock};
use crate::bench::peer::{BenchError, Completed, Peer, PeerRun, Run};

/// opipe's engine with the given buffer mode.
#[derive(Debug)]
pub struct UringPeer {
    /// Plain SEND/RECV (default) or registered WRITE_FIXED/READ_FIXED.
    pub buffers: BufferMode,
    /// The engine settings from the command line.
    pub tuning: Tuning,
}

/// The engine settings `opipe bench` takes from its command line.
#[derive(Debug, Clone)]
pub struct Tuning {
    /// The engine's backend choice (`--backend`).
    pub backend: BackendChoice,
    /// Replies through one multishot receive per pipe (`--uring-recv`).
    pub multishot: bool,
    /// Rings (one thread each) the pipes are spread over (`--rings`).
    pub rings: usize,
    /// `--sq-entries` (default: three per pipe).
    pub sq_entries: Option<u32>,
    /// `--cq-entries` (default: twice the submission queue).
    pub cq_entries: Option<u32>,
}

/// The largest completion queue the bench gives a ring by default.
const MAX_CQ_ENTRIES: usize = 65536;

impl Peer for UringPeer {
    fn name(&self) -> &'static str {
        match self.buffers {
            BufferMode::Plain => "uring",
            BufferMode::Registered => "uring-registered",
        }
    }

    fn run(&self, run: &Arc<Run>) -> Result<PeerRun, BenchError> {
        let pipes = run.spec.pipes;
        let mut cfg = EngineConfig::new(&run.service.dir);
        cfg.dialect = run.spec.dialect;
        cfg.buffers = self.buffers;
        let t = &self.tuning;
        cfg.backend = t.backend;
        cfg.multishot = t.multishot;
        cfg.rings = t.rings;
        cfg.open_timeout = Duration::from_secs(10);
        // Rings sized by what one ring holds, not by all the pipes: the SQ
        // as the engine's default (small, so it stays in the cache), the
        // CQ with room for four completions per pipe of the ring (a send's
        // and a reply chunk's, twice over), as uring-min's. perf/README.md,
        // session 15.
        let per_ring = pipes.div_ceil(t.rings.max(1));
        if let Some(n) = t.sq_entries {
            cfg.sq_entries = n;
        }
        cfg.cq_entries = t.cq_entries.unwrap_or(
            (per_ring * 4)
                .next_power_of_two()
                .clamp(1024, MAX_CQ_ENTRIES) as u32,
        );
        cfg.reg_slots = pipes.clamp(1, u16::MAX as usize) as u16;
        cfg.reg_slot_bytes = run
            .spec
            .reply_buffer_bytes()
            .max(run.exchange.request(0).len());
        let engine = Engine::new(cfg).map_err(|e| BenchError::Unavailable(e.to_string()))?;
        let before = Baseline::now().map_err(BenchError::io("reading VmRSS"))?;

        let opened = open_all(&engine, run);

        let done = Arc::new(Countdown::new(opened.len()));
        let clock = Clock::start(&run.budget, run.service_pid)
            .map_err(BenchError::io("starting the clock"))?;
        for (i, pipe) in &opened {
            let st = PipeLoop {
                run: run.clone(),
                pipe: *i,
                id: pipe.id(),
                call_id: 0,
                done: done.clone(),
            };
            // Every transceive, the first one too, asks the budget first.
            if !run.budget.take(Instant::now()) {
                st.done.finish();
                continue;
            }
            // The first transceive goes through the engine's queue; every
            // later one starts on the ring thread from the completion.
            let (req, start) = st.request(Vec::new());
            pipe.transceive_with(req, run.spec.max_out, move |ctx, res| {
                st.on_transceive(ctx, start, res)
            });
        }
        done.wait();
        let measured = clock
            .stop(before)
            .map_err(BenchError::io("measuring the run"))?;
        for (_, p) in opened {
            let _ = p.close().wait();
        }
        let nonempty = if engine.sock_nonempty() {
            "SOCK_NONEMPTY flag"
        } else {
            "linked MSG_PEEK probe"
        };
        let backend = engine.backend();
        // The effective mode: the epoll backend runs plain buffers.
        let buffers = engine.config().buffers;
        drop(engine);
        // The engine's multishot receive needs io_uring and plain buffers.
        let receive = if t.multishot && buffers == BufferMode::Plain && backend == Backend::IoUring
        {
            "send + multishot receive"
        } else {
            "send->recv chain"
        };
        Ok(PeerRun {
            backend: backend.to_string(),
            detail: Some(format!(
                "opipe engine on {backend}, {} ring{}, {} buffers, {receive}, leftover by {nonempty}",
                t.rings,
                if t.rings == 1 { "" } else { "s" },
                match buffers {
                    BufferMode::Plain => "plain",
                    BufferMode::Registered => "registered",
                }
            )),
            measured,
        })
    }
}

/// How long one pipe's bind may take.
const BIND_TIMEOUT: Duration = Duration::from_secs(10);

/// Opens every pipe through the engine (in batches of
/// `RunSpec::open_concurrency`, all at once for 0), each followed by the
/// bind the call needs; records each outcome.
fn open_all(engine: &Engine, run: &Run) -> Vec<(usize, Pipe)> {
    let pipes = run.spec.pipes;
    let path = format!("\\PIPE\\{}", run.service.pipe);
    let batch = match run.spec.open_concurrency {
        0 => pipes.max(1),
        n => n,
    };
    let mut opened = Vec::with_capacity(pipes);
    for first in (0..pipes).step_by(batch) {
        let ids = first..(first + batch).min(pipes);
        let opens: Vec<_> = ids
            .clone()
            .map(|i| {
                let options = OpenOptions {
                    identity: Some(run.exchange.identity(i)),
                };
                engine.open_with(&path, run.exchange.user(i), options, None)
            })
            .collect();
        let mut batch_open = Vec::with_capacity(opens.len());
        for (i, r) in ids.clone().zip(opens) {
            match r.wait() {
                Ok(p) => batch_open.push((i, p)),
                Err(s) => {
                    let e = TransceiveError::Open(format!("the engine answered {s}"));
                    let _ = run.opened::<()>(i, Err(e));
                }
            }
        }
        let binds: Vec<_> = batch_open
            .iter()
            .map(|(_, p)| {
                run.exchange
                    .bind_request()
                    .map(|b| p.transceive(b, opipe::protocol::SMB_PIPE_MAX_MSGSIZE))
            })
            .collect();
        for ((i, p), bind) in batch_open.into_iter().zip(binds) {
            let bound = match bind {
                None => Ok(p),
                Some(r) => match r.wait_timeout(BIND_TIMEOUT) {
                    Ok(t) => run.exchange.check_bind_ack(&t.data).map(|()| p),
                    Err(s) => Err(TransceiveError::Open(format!(
                        "bind: the engine answered {s}"
                    ))),
                },
            };
            if let Some(p) = run.opened(i, bound) {
                opened.push((i, p));
            }
        }
    }
    opened
}

/// Counts pipes still transceiving; the bench thread waits for zero.
struct Countdown {
    left: Mutex<usize>,
    cond: Condvar,
}

impl Countdown {
    fn new(n: usize) -> Countdown {
        Countdown {
            left: Mutex::new(n),
            cond: Condvar::new(),
        }
    }
    fn finish(&self) {
        let mut l = self.left.lock().unwrap_or_else(|e| e.into_inner());
        *l = l.saturating_sub(1);
        if *l == 0 {
            self.cond.notify_all();
        }
    }
    fn wait(&self) {
        let mut l = self.left.lock().unwrap_or_else(|e| e.into_inner());
        while *l > 0 {
            l = self.cond.wait(l).unwrap_or_else(|e| e.into_inner());
        }
    }
}

/// One pipe's transceive loop, run by completion callbacks on the ring thread.
struct PipeLoop {
    run: Arc<Run>,
    pipe: usize,
    id: PipeId,
    call_id: u32,
    done: Arc<Countdown>,
}

fn status_error(s: NtStatus) -> TransceiveError {
    if s == NtStatus::PIPE_BROKEN {
        TransceiveError::Closed
    } else {
        TransceiveError::BadReply(format!("the engine answered {s}"))
    }
}

impl PipeLoop {
    /// The next request, built in `buf` (the last reply's buffer: like the
    /// other peers, a pipe allocates no buffer per transceive).
    fn request(&self, mut buf: Vec<u8>) -> (Vec<u8>, Instant) {
        self.run
            .exchange
            .request_into(self.call_id.wrapping_add(1), &mut buf);
        (buf, Instant::now())
    }

    /// Starts the next transceive if the budget allows, else finishes.
    fn next(self, ctx: &mut RingContext<'_>, now: Instant, buf: Vec<u8>) {
        if !self.run.budget.take(now) {
            return self.done.finish();
        }
        let (req, start) = self.request(buf);
        let max_out = self.run.spec.max_out;
        let id = self.id;
        ctx.transceive_with(id, req, max_out, move |ctx, res| {
            self.on_transceive(ctx, start, res)
        });
    }

    fn on_transceive(
        mut self,
        ctx: &mut RingContext<'_>,
        start: Instant,
        res: Result<Transfer, NtStatus>,
    ) {
        self.call_id = self.call_id.wrapping_add(1);
        let first = res.map_err(status_error).and_then(|t| {
            self.run
                .exchange
                .first_read_with_status(t.data.len(), t.status)
                .map(|p| (p, t.data))
        });
        match first {
            Ok((progress, data)) => self.collect(ctx, start, progress, data),
            Err(e) => self.fail(start, e),
        }
    }

    /// Reads the rest of an overflowed reply, then verifies and records it.
    fn collect(
        self,
        ctx: &mut RingContext<'_>,
        start: Instant,
        mut progress: ReplyProgress,
        acc: Vec<u8>,
    ) {
        match progress.missing() {
            None => {
                let end = Instant::now();
                let verdict = self.run.exchange.verify(&acc, self.call_id);
                let outcome = verdict.map(|()| Completed {
                    end,
                    overflow: progress.overflow(),
                });
                match self
                    .run
                    .transceived(self.pipe, self.call_id, start, outcome)
                {
                    Some(end) => self.next(ctx, end, acc),
                    None => self.done.finish(),
                }
            }
            Some(rest) => {
                let id = self.id;
                // The rest lands behind the first part, in the same buffer.
                let want = rest.len();
                ctx.read_append_with(id, acc, want, move |ctx, acc, res| match res {
                    Ok(n) => match progress.advance(n) {
                        Ok(()) => self.collect(ctx, start, progress, acc),
                        Err(e) => self.fail(start, e),
                    },
                    Err(s) => self.fail(start, status_error(s)),
                });
            }
        }
    }

    fn fail(self, start: Instant, e: TransceiveError) {
        let _ = self.run.transceived(self.pipe, self.call_id, start, Err(e));
        self.done.finish();
    }
}
