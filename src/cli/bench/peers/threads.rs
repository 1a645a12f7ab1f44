//! Peer `threads`: one blocking OS thread per pipe on a std `UnixStream`,
//! the illumos seed's model (a kernel thread blocks in `ksocket_recv` per
//! outstanding request).

use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Barrier, Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::bench::exchange::TransceiveError;
use crate::bench::framed::{Inbox, ReplyCollector};
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
        let gate = OpenGate::new(run.spec.open_concurrency);
        let outcome = std::thread::scope(|scope| {
            let mut spawned = 0;
            let mut spawn_error = None;
            for pipe in 0..run.spec.pipes {
                let (roster, gate) = (&roster, &gate);
                let spawn = std::thread::Builder::new()
                    .stack_size(STACK_BYTES)
                    .spawn_scoped(scope, move || pipe_thread(run, pipe, roster, gate));
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

/// Limits how many pipe threads open at once (`RunSpec::open_concurrency`).
struct OpenGate {
    limit: usize,
    busy: Mutex<usize>,
    freed: Condvar,
}

impl OpenGate {
    fn new(limit: usize) -> OpenGate {
        OpenGate {
            limit,
            busy: Mutex::new(0),
            freed: Condvar::new(),
        }
    }

    /// Runs `f` once fewer than `limit` others are inside (always, for 0).
    fn pass<T>(&self, f: impl FnOnce() -> T) -> T {
        if self.limit == 0 {
            return f();
        }
        {
            let mut busy = self.busy.lock().unwrap_or_else(|e| e.into_inner());
            while *busy >= self.limit {
                busy = self.freed.wait(busy).unwrap_or_else(|e| e.into_inner());
            }
            *busy += 1;
        }
        let out = f();
        *self.busy.lock().unwrap_or_else(|e| e.into_inner()) -= 1;
        self.freed.notify_one();
        out
    }
}

fn pipe_thread(run: &Run, pipe: usize, roster: &Roster, gate: &OpenGate) {
    let opened = gate.pass(|| open_conn(run, pipe)).map_err(|e| match e {
        TransceiveError::Io(e)
            if matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ) =>
        {
            TransceiveError::Open(format!(
                "no answer to the handshake or bind within {OPEN_TIMEOUT:?}"
            ))
        }
        e => e,
    });
    let conn = run.opened(pipe, opened);
    let barrier = roster.wait();
    phases::pipe_blocking(&barrier, conn, |c| drive(run, pipe, c));
}

/// How long an open's handshake and bind may take.
const OPEN_TIMEOUT: Duration = Duration::from_secs(10);

/// Connect and the open handshake of the run's dialect, blocking.
pub(super) fn open(run: &Run, pipe: usize) -> Result<UnixStream, TransceiveError> {
    handshake(run, pipe, UnixStream::connect(run.service.socket_path())?)
}

/// An open pipe: the stream and, in Samba's dialect, the bytes read from
/// it that are not yet a whole message.
struct Conn {
    stream: UnixStream,
    inbox: Option<Inbox>,
}

/// [`open`], then (Samba's dialect) the bind the call needs, all under
/// [`OPEN_TIMEOUT`].
fn open_conn(run: &Run, pipe: usize) -> Result<Conn, TransceiveError> {
    let x = &run.exchange;
    let stream = UnixStream::connect(run.service.socket_path())?;
    stream.set_read_timeout(Some(OPEN_TIMEOUT))?;
    let mut stream = handshake(run, pipe, stream)?;
    let mut inbox = x.dialect().is_message_mode().then(Inbox::new);
    if let (Some(bind), Some(inbox)) = (x.bind_request(), inbox.as_mut()) {
        stream.write_all(&opipe::protocol::npa::frame_messages(&bind))?;
        let ack = loop {
            if let Some(m) = inbox.next_message() {
                break m;
            }
            let n = read_once(&mut stream, inbox.spare())?;
            if n == 0 {
                return Err(TransceiveError::Closed);
            }
            inbox.filled(n);
        };
        x.check_bind_ack(inbox.bytes(ack))?;
    }
    stream.set_read_timeout(None)?;
    Ok(Conn { stream, inbox })
}

/// The open handshake on a connected stream.
fn handshake(run: &Run, pipe: usize, mut s: UnixStream) -> Result<UnixStream, TransceiveError> {
    s.write_all(&run.exchange.open_message(pipe)?)?;
    let mut answer = [0u8; 64];
    let answer = &mut answer[..run.exchange.open_reply_len()];
    s.read_exact(answer)?;
    run.exchange.check_open_reply(answer)?;
    Ok(s)
}

/// Transceives on one pipe until the budget runs out or the pipe fails.
fn drive(run: &Run, pipe: usize, conn: &mut Conn) {
    let mut buf = vec![0u8; run.spec.reply_buffer_bytes()];
    let mut call_id: u32 = 0;
    let mut now = Instant::now();
    while run.budget.take(now) {
        call_id = call_id.wrapping_add(1);
        let request = run.exchange.wire_request(call_id);
        let start = Instant::now();
        let outcome = transceive(run, conn, &request, &mut buf, call_id);
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
    conn: &mut Conn,
    request: &[u8],
    buf: &mut [u8],
    call_id: u32,
) -> Result<Completed, TransceiveError> {
    conn.stream.write_all(request)?;
    match conn.inbox.as_mut() {
        None => receive_reply(run, &mut conn.stream, buf, call_id),
        Some(inbox) => receive_messages(run, &mut conn.stream, inbox, buf, call_id),
    }
}

/// [`receive_reply`] in Samba's dialect: the reply from whole messages
/// ([`ReplyCollector`]), reading as many bytes as each read brings.
fn receive_messages(
    run: &Run,
    stream: &mut UnixStream,
    inbox: &mut Inbox,
    buf: &mut [u8],
    call_id: u32,
) -> Result<Completed, TransceiveError> {
    let mut collector = ReplyCollector::new();
    let reply = loop {
        if let Some(p) = collector.take(&run.exchange, inbox, buf)? {
            break p;
        }
        let n = read_once(stream, inbox.spare())?;
        if n == 0 {
            return Err(TransceiveError::Closed);
        }
        inbox.filled(n);
    };
    run.completed(Instant::now(), buf, reply, call_id)
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
    run.completed(Instant::now(), buf, reply, call_id)
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
