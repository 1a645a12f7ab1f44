//! Peer `tokio`: tokio's multi-threaded runtime (default worker count) on
//! epoll, one task per pipe.

use std::io;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::Instant;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::sync::Barrier;

use crate::bench::exchange::{self, TransceiveError};
use crate::bench::measure::Baseline;
use crate::bench::peer::{BenchError, Completed, Peer, PeerRun, Run};
use crate::bench::phases;

/// One tokio task per pipe on the multi-threaded runtime.
#[derive(Debug, Default)]
pub struct TokioPeer;

impl Peer for TokioPeer {
    fn name(&self) -> &'static str {
        "tokio"
    }

    fn run(&self, run: &Arc<Run>) -> Result<PeerRun, BenchError> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_io()
            .build()
            .map_err(BenchError::io("building the tokio runtime"))?;
        let workers = rt.metrics().num_workers();
        let before = Baseline::now().map_err(BenchError::io("reading VmRSS"))?;
        let measured = rt.block_on(phases::run_tasks(
            run,
            before,
            |pipe, connected, barrier| {
                tokio::spawn(pipe_task(run.clone(), pipe, connected, barrier))
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
) {
    let stream = run.opened(pipe, open(&run, pipe, connected).await);
    phases::pipe(&barrier, stream, |mut s| async move {
        drive(&run, pipe, &mut s).await;
        s
    })
    .await;
}

async fn open(
    run: &Run,
    pipe: usize,
    connected: io::Result<std::os::unix::net::UnixStream>,
) -> Result<UnixStream, TransceiveError> {
    let std_stream = connected?;
    std_stream.set_nonblocking(true)?;
    let mut s = UnixStream::from_std(std_stream)?;
    s.write_all(&run.exchange.open_message(pipe)?).await?;
    let mut word = [0u8; exchange::STATUS_WORD_BYTES];
    s.read_exact(&mut word).await?;
    exchange::check_open_status(word)?;
    Ok(s)
}

/// Transceives on one pipe until the budget runs out or the pipe fails.
async fn drive(run: &Run, pipe: usize, stream: &mut UnixStream) {
    let mut buf = vec![0u8; run.spec.reply_buffer_bytes()];
    let mut call_id: u32 = 0;
    let mut now = Instant::now();
    while run.budget.take(now) {
        call_id = call_id.wrapping_add(1);
        let request = run.exchange.request(call_id);
        let start = Instant::now();
        let outcome = transceive(run, stream, &request, &mut buf, call_id).await;
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
    let end = Instant::now();
    run.exchange.verify(&buf[..reply.len()], call_id)?;
    Ok(Completed {
        end,
        overflow: reply.overflow(),
    })
}
