//! Peer `tokio-uring`: tokio-uring 0.5 on one runtime thread, one task per
//! pipe, its `UnixStream` made with `from_std` (its `UnixListener` cannot
//! bind on current kernels; its reads are `IORING_OP_READ` on the socket).

use std::io;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::Barrier;
use tokio_uring::buf::BoundedBuf;
use tokio_uring::net::UnixStream;

use crate::bench::exchange::{self, ReplyProgress, TransceiveError};
use crate::bench::measure::Baseline;
use crate::bench::peer::{BenchError, Peer, PeerRun, Run};
use crate::bench::phases;

/// Submission queue entries of the runtime's ring.
const RING_ENTRIES: u32 = 1024;

/// One tokio-uring task per pipe, one thread.
#[derive(Debug, Default)]
pub struct TokioUringPeer;

impl Peer for TokioUringPeer {
    fn name(&self) -> &'static str {
        "tokio-uring"
    }

    fn run(&self, run: &Arc<Run>) -> Result<PeerRun, BenchError> {
        let rt = tokio_uring::Runtime::new(tokio_uring::builder().entries(RING_ENTRIES)).map_err(
            |e| match e.raw_os_error() {
                Some(libc::EPERM | libc::ENOSYS | libc::EACCES) => {
                    BenchError::Unavailable(format!(
                        "io_uring_setup refused ({e}): io_uring is switched off or blocked here"
                    ))
                }
                _ => BenchError::Io {
                    context: "building the tokio-uring runtime",
                    source: e,
                },
            },
        )?;
        let before = Baseline::now().map_err(BenchError::io("reading VmRSS"))?;
        let measured = rt.block_on(phases::run_tasks(
            run,
            before,
            |pipe, connected, barrier| {
                tokio_uring::spawn(pipe_task(run.clone(), pipe, connected, barrier))
            },
        ));
        drop(rt);
        let measured = measured.map_err(BenchError::io("measuring the run"))?;
        Ok(PeerRun {
            detail: None,
            backend: format!(
                "tokio-uring 0.5, one thread, {RING_ENTRIES}-entry ring, READ/WRITE ops, one task per pipe, FIONREAD"
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
    phases::pipe(&barrier, stream, |s| async move {
        drive(&run, pipe, &s).await;
        s
    })
    .await;
}

async fn open(
    run: &Run,
    pipe: usize,
    connected: io::Result<std::os::unix::net::UnixStream>,
) -> Result<UnixStream, TransceiveError> {
    let s = UnixStream::from_std(connected?);
    let (res, _) = s.write_all(run.exchange.open_message(pipe)?).await;
    res?;
    let mut word = vec![0u8; exchange::STATUS_WORD_BYTES];
    let mut got = 0;
    while got < word.len() {
        let (res, slice) = s.read(word.slice(got..)).await;
        word = slice.into_inner();
        match res? {
            0 => return Err(TransceiveError::Closed),
            n => got += n,
        }
    }
    let mut status = [0u8; exchange::STATUS_WORD_BYTES];
    status.copy_from_slice(&word);
    exchange::check_open_status(status)?;
    Ok(s)
}

/// Transceives on one pipe until the budget runs out or the pipe fails.
async fn drive(run: &Run, pipe: usize, stream: &UnixStream) {
    // The buffer travels into each operation and comes back with its result.
    let mut buf = vec![0u8; run.spec.reply_buffer_bytes()];
    let mut call_id: u32 = 0;
    let mut now = Instant::now();
    while run.budget.take(now) {
        call_id = call_id.wrapping_add(1);
        let request = run.exchange.request(call_id);
        let start = Instant::now();
        let (outcome, back) = transceive(run, stream, request, buf).await;
        buf = back;
        let outcome = outcome.and_then(|(end, reply)| run.completed(end, &buf, reply, call_id));
        match run.transceived(pipe, call_id, start, outcome) {
            Some(end) => now = end,
            None => return,
        }
    }
}

/// Write all, one read of `max_out`, the overflow rule (FIONREAD), the
/// rest; gives back when the reply was complete and the buffer holding it.
async fn transceive(
    run: &Run,
    stream: &UnixStream,
    request: Vec<u8>,
    buf: Vec<u8>,
) -> (Result<(Instant, ReplyProgress), TransceiveError>, Vec<u8>) {
    let (res, _) = stream.write_all(request).await;
    if let Err(e) = res {
        return (Err(e.into()), buf);
    }
    let (res, slice) = stream.read(buf.slice(..run.spec.max_out)).await;
    let mut buf = slice.into_inner();
    let fd = stream.as_raw_fd();
    let mut reply = match res
        .map_err(TransceiveError::from)
        .and_then(|n| run.exchange.first_read(n, || opipe::ring::fionread(fd)))
    {
        Ok(r) => r,
        Err(e) => return (Err(e), buf),
    };
    while let Some(rest) = reply.missing() {
        let (res, slice) = stream.read(buf.slice(rest)).await;
        buf = slice.into_inner();
        if let Err(e) = res
            .map_err(TransceiveError::from)
            .and_then(|k| reply.advance(k))
        {
            return (Err(e), buf);
        }
    }
    (Ok((Instant::now(), reply)), buf)
}
