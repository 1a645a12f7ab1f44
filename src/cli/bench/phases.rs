//! The four meeting points of a run, shared by the peers that drive one
//! pipe per thread or task: every pipe and the leading thread meet at one
//! barrier of `pipes + 1` parties
//!
//! 1. *opened*: every pipe has opened (or failed to); the clock starts,
//! 2. *go*: the transceives begin,
//! 3. *done*: every pipe has stopped transceiving; the clock stops with all
//!    pipes still open,
//! 4. *close*: the pipes may be closed.
//!
//! A pipe that failed to open still meets all four, so nobody waits forever.

use std::io;
use std::os::unix::net::UnixStream;
use std::sync::Arc;

use tokio::sync::Barrier;
use tokio::task::JoinHandle;

use super::measure::{Baseline, Clock, Measured};
use super::peer::Run;

/// The leading thread's side of the four meetings, blocking.
pub fn lead_blocking(
    barrier: &std::sync::Barrier,
    run: &Run,
    before: Baseline,
) -> io::Result<Measured> {
    barrier.wait(); // opened
    let clock = Clock::start(&run.budget, run.service_pid);
    barrier.wait(); // go
    barrier.wait(); // done
    let measured = clock.and_then(|c| c.stop(before));
    barrier.wait(); // close
    measured
}

/// A pipe thread's side of the four meetings, blocking (see [`pipe`]).
pub fn pipe_blocking<S>(
    barrier: &std::sync::Barrier,
    stream: Option<S>,
    drive: impl FnOnce(&mut S),
) {
    barrier.wait(); // opened
    barrier.wait(); // go
    let mut stream = stream;
    if let Some(s) = stream.as_mut() {
        drive(s);
    }
    barrier.wait(); // done
    barrier.wait(); // close
    drop(stream);
}

/// The leading task's side of the four meetings.
pub async fn lead(barrier: &Barrier, run: &Run, before: Baseline) -> io::Result<Measured> {
    barrier.wait().await; // opened
    let clock = Clock::start(&run.budget, run.service_pid);
    barrier.wait().await; // go
    barrier.wait().await; // done
    let measured = clock.and_then(|c| c.stop(before));
    barrier.wait().await; // close
    measured
}

/// A pipe task's side of the four meetings: `stream` (`None` when the
/// pipe failed to open) is driven by `drive` between *go* and *done*, and
/// dropped after *close*.
pub async fn pipe<S, Fut>(barrier: &Barrier, stream: Option<S>, drive: impl FnOnce(S) -> Fut)
where
    Fut: std::future::Future<Output = S>,
{
    barrier.wait().await; // opened
    barrier.wait().await; // go
    let stream = match stream {
        Some(s) => Some(drive(s).await),
        None => None,
    };
    barrier.wait().await; // done
    barrier.wait().await; // close
    drop(stream);
}

/// Connects every pipe, hands each connection to a task made by `spawn`
/// (which must meet `barrier` four times, see the module docs), leads the
/// run and waits for the tasks to end.
///
/// Connects are blocking and made here, one after the other: a
/// non-blocking AF_UNIX connect fails with EAGAIN when the listen backlog
/// is full, which thousands of simultaneous opens would hit.
pub async fn run_tasks(
    run: &Arc<Run>,
    before: Baseline,
    mut spawn: impl FnMut(usize, io::Result<UnixStream>, Arc<Barrier>) -> JoinHandle<()>,
) -> io::Result<Measured> {
    let pipes = run.spec.pipes;
    let barrier = Arc::new(Barrier::new(pipes + 1));
    let mut tasks = Vec::with_capacity(pipes);
    for pipe in 0..pipes {
        let connected = UnixStream::connect(run.service.socket_path());
        tasks.push(spawn(pipe, connected, barrier.clone()));
    }
    let measured = lead(&barrier, run, before).await;
    for t in tasks {
        // A task ends with an error only by panicking, which it does not do.
        let _ = t.await;
    }
    measured
}
