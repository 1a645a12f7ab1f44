//! Peer `tokio`: tokio's multi-threaded runtime (default worker count) on
//! epoll, one task per pipe.

use std::io;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::sync::{Barrier, Semaphore};

use crate::bench::exchange::TransceiveError;
use crate::bench::framed::{Inbox, ReplyCollector};
use crate::bench::measure::Baseline;
use crate::bench::peer::{BenchError, Completed, Peer, PeerRun, Run};
use crate::bench::phases;
use opipe::protocol::npa::frame_messages;

/// One tokio task per pipe on the multi-threaded runtime.
#[derive(Debug, Default)]
pub struct TokioPeer;

impl Peer for TokioPeer {
    fn name(&self) -> &'static str {
        "tokio"
    }

    fn run(&self, run: &Arc<Run>) -> Result<PeerRun, BenchError> {
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        builder.enable_io();
        // The open's deadline (Samba's dialect only: the illumos runs keep
        // the runtime they always measured, without a timer driver).
        if run.spec.dialect.is_message_mode() {
            builder.enable_time();
        }
        let rt = builder
            .build()
            .map_err(BenchError::io("building the tokio runtime"))?;
        let workers = rt.metrics().num_workers();
        let before = Baseline::now().map_err(BenchError::io("reading VmRSS"))?;
        let gate = match run.spec.open_concurrency {
            0 => None,
            n => Some(Arc::new(Semaphore::new(n))),
        };
        let measured = rt.block_on(phases::run_tasks(
            run,
            before,
            |pipe, connected, barrier| {
                tokio::spawn(pipe_task(
                    run.clone(),
                    pipe,
                    connected,
                    barrier,
                    gate.clone(),
                ))
            },
        ));
        drop(rt);
        let measured = measured.map_err(BenchError::io("measuring the run"))?;
        Ok(PeerRun {
            detail: None,
            backend: format!(
                "tokio multi-thread runtime, {workers} workers, epoll, one task per pipe, FIONREAD"
            ),
            measured,
        })
    }
}

async fn pipe_task(
    run: Arc<Run>,
    pipe: usize,
    connected: io::Result<std::os::unix::net::UnixStream>,
    barrier: Arc<Barrier>,
    gate: Option<Arc<Semaphore>>,
) {
    let permit = match &gate {
        Some(g) => g.acquire().await.ok(),
        None => None,
    };
    let opened = if run.spec.dialect.is_message_mode() {
        tokio::time::timeout(OPEN_TIMEOUT, open(&run, pipe, connected))
            .await
            .unwrap_or_else(|_| {
                Err(TransceiveError::Open(format!(
                    "no answer to the handshake or bind within {OPEN_TIMEOUT:?}"
                )))
            })
    } else {
        open(&run, pipe, connected).await
    };
    drop(permit);
    let conn = run.opened(pipe, opened);
    phases::pipe(&barrier, conn, |mut c| async move {
        drive(&run, pipe, &mut c).await;
        c
    })
    .await;
}

/// How long an open's handshake and bind may take (Samba's dialect).
const OPEN_TIMEOUT: Duration = Duration::from_secs(10);

/// An open pipe: the stream and, in Samba's dialect, the bytes read from
/// it that are not yet a whole message.
struct Conn {
    stream: UnixStream,
    inbox: Option<Inbox>,
}

/// The open handshake of the run's dialect, then the bind the call needs.
async fn open(
    run: &Run,
    pipe: usize,
    connected: io::Result<std::os::unix::net::UnixStream>,
) -> Result<Conn, TransceiveError> {
    let x = &run.exchange;
    let std_stream = connected?;
    std_stream.set_nonblocking(true)?;
    let mut s = UnixStream::from_std(std_stream)?;
    s.write_all(&x.open_message(pipe)?).await?;
    let mut answer = [0u8; 64];
    let answer = &mut answer[..x.open_reply_len()];
    s.read_exact(answer).await?;
    x.check_open_reply(answer)?;
    let mut inbox = x.dialect().is_message_mode().then(Inbox::new);
    if let (Some(bind), Some(inbox)) = (x.bind_request(), inbox.as_mut()) {
        s.write_all(&frame_messages(&bind)).await?;
        let ack = loop {
            if let Some(m) = inbox.next_message() {
                break m;
            }
            let n = s.read(inbox.spare()).await?;
            if n == 0 {
                return Err(TransceiveError::Closed);
            }
            inbox.filled(n);
        };
        x.check_bind_ack(inbox.bytes(ack))?;
    }
    Ok(Conn { stream: s, inbox })
}

/// Transceives on one pipe until the budget runs out or the pipe fails.
async fn drive(run: &Run, pipe: usize, conn: &mut Conn) {
    let mut buf = vec![0u8; run.spec.reply_buffer_bytes()];
    let mut call_id: u32 = 0;
    let mut now = Instant::now();
    while run.budget.take(now) {
        call_id = call_id.wrapping_add(1);
        let request = run.exchange.wire_request(call_id);
        let start = Instant::now();
        let outcome = match conn.inbox.as_mut() {
            None => transceive(run, &mut conn.stream, &request, &mut buf, call_id).await,
            Some(inbox) => {
                transceive_messages(run, &mut conn.stream, inbox, &request, &mut buf, call_id).await
            }
        };
        match run.transceived(pipe, call_id, start, outcome) {
            Some(end) => now = end,
            None => return,
        }
    }
}

/// One transceive, the seed's way: write all, one read of `max_out`, the
/// overflow rule (FIONREAD), the rest, then verification.
async fn transceive(
    run: &Run,
    stream: &mut UnixStream,
    request: &[u8],
    buf: &mut [u8],
    call_id: u32,
) -> Result<Completed, TransceiveError> {
    stream.write_all(request).await?;
    let n = stream.read(&mut buf[..run.spec.max_out]).await?;
    let fd = stream.as_raw_fd();
    let mut reply = run.exchange.first_read(n, || opipe::ring::fionread(fd))?;
    while let Some(rest) = reply.missing() {
        let k = stream.read(&mut buf[rest]).await?;
        reply.advance(k)?;
    }
    run.completed(Instant::now(), buf, reply, call_id)
}

/// [`transceive`] in Samba's dialect: write the framed request, then the
/// reply from whole messages ([`ReplyCollector`]), then verification.
async fn transceive_messages(
    run: &Run,
    stream: &mut UnixStream,
    inbox: &mut Inbox,
    request: &[u8],
    buf: &mut [u8],
    call_id: u32,
) -> Result<Completed, TransceiveError> {
    stream.write_all(request).await?;
    let mut collector = ReplyCollector::new();
    let reply = loop {
        if let Some(p) = collector.take(&run.exchange, inbox, buf)? {
            break p;
        }
        let n = stream.read(inbox.spare()).await?;
        if n == 0 {
            return Err(TransceiveError::Closed);
        }
        inbox.filled(n);
    };
    run.completed(Instant::now(), buf, reply, call_id)
}
