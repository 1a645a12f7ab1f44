//! One measured run of the `--smb2` bench: N connections to one SMB
//! server, each set up (login, IPC$, srvsvc, bind) before the clock
//! starts, then a closed loop of verified calls on every connection for
//! the run's duration, the server's CPU sampled just before and just
//! after.
//!
//! The driver is a tokio runtime with one worker per CPU and one task per
//! connection; latencies go to the bench's sharded [`Recorder`].

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;

use super::client::{Connection, Negotiated, Target};
use crate::bench::record::{Recorded, Recorder};
use crate::bench::sys::{self, GroupCpu};

/// Connections set up at once (smbd's listen backlog is small, and a
/// refused SYN costs a 1 s retry).
const SETUP_CONCURRENCY: usize = 32;
/// How long setting up all connections may take, per connection on top
/// of a fixed allowance.
const SETUP_BASE: Duration = Duration::from_secs(20);
const SETUP_PER_CONNECTION: Duration = Duration::from_millis(50);

/// What one run is asked to do.
#[derive(Debug, Clone)]
pub struct RunPlan {
    /// The server and the answer to expect.
    pub target: Target,
    /// Connections (one session, one open pipe each).
    pub connections: usize,
    /// Length of the measured phase.
    pub duration: Duration,
    /// Extra time after `duration` before a run counts as stuck.
    pub stall: Duration,
    /// The server's process group.
    pub server_pgid: u32,
    /// The pipe service's pid (its CPU, with its process group's when it
    /// leads one, is reported apart: [`sys::service_cpu_time`]).
    pub service_pid: Option<u32>,
}

/// What one run measured.
#[derive(Debug)]
pub struct RunMeasure {
    /// Connections whose setup succeeded.
    pub connected: usize,
    /// What the first connection negotiated.
    pub negotiated: Option<Negotiated>,
    /// Latencies, counts and error samples.
    pub recorded: Recorded,
    /// Wall time of the measured phase.
    pub elapsed: Duration,
    /// The server group's CPU over the phase.
    pub server_cpu: Duration,
    /// Processes in the server's group at the end of the phase.
    pub server_processes: usize,
    /// The pipe service's CPU over the phase.
    pub service_cpu: Option<Duration>,
    /// This process's CPU over the phase (the load client).
    pub client_cpu: Duration,
}

struct Sample {
    /// When the sample was complete.
    at: Instant,
    server: GroupCpu,
    service: Option<Duration>,
    client: Duration,
}

impl Sample {
    fn now(plan: &RunPlan) -> Result<Sample, String> {
        let server = sys::group_cpu(plan.server_pgid).map_err(|e| format!("/proc: {e}"))?;
        let service = plan
            .service_pid
            .map(sys::service_cpu_time)
            .transpose()
            .map_err(|e| format!("the pipe service's CPU: {e}"))?;
        let client = sys::process_cpu_time().map_err(|e| format!("getrusage: {e}"))?;
        Ok(Sample {
            at: Instant::now(),
            server,
            service,
            client,
        })
    }
}

/// Runs `plan`: sets up every connection, measures, closes them all.
/// `Err` when the run could not take place at all (no connection, a
/// stuck server); connection failures are counted in the result.
pub fn run(plan: &RunPlan) -> Result<RunMeasure, String> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_io()
        .enable_time()
        .build()
        .map_err(|e| format!("building the tokio runtime: {e}"))?;
    let out = rt.block_on(drive(plan));
    // Connections are closed by now: their tasks returned them and they
    // were dropped inside `drive`.
    drop(rt);
    out
}

async fn drive(plan: &RunPlan) -> Result<RunMeasure, String> {
    let recorder = Arc::new(Recorder::new());
    let conns = connect_all(plan, &recorder).await?;
    let connected = conns.len();
    let negotiated = conns.first().map(Connection::negotiated);
    if connected == 0 {
        let rec = recorder.merged();
        return Err(format!(
            "no connection could be set up{}",
            rec.error_samples
                .first()
                .map(|e| format!(" ({e})"))
                .unwrap_or_default()
        ));
    }

    let before = Sample::now(plan)?;
    let deadline = before.at + plan.duration;
    let tasks: Vec<_> = conns
        .into_iter()
        .enumerate()
        .map(|(i, mut c)| {
            let rec = recorder.clone();
            tokio::spawn(async move {
                let mut t0 = Instant::now();
                while t0 < deadline {
                    match c.call().await {
                        Ok(()) => {
                            let t1 = Instant::now();
                            rec.transceive(i, (t1 - t0).as_nanos() as u64, false);
                            t0 = t1;
                        }
                        Err(e) => {
                            rec.error(i, || e.to_string());
                            return None;
                        }
                    }
                }
                Some(c)
            })
        })
        .collect();
    let mut kept = Vec::with_capacity(tasks.len());
    let joined = tokio::time::timeout(plan.duration + plan.stall, async {
        for t in tasks {
            if let Ok(Some(c)) = t.await {
                kept.push(c);
            }
        }
    })
    .await;
    // The phase ends with the last call; the scan of /proc after it is
    // not part of it (the servers are idle by then).
    let end = Instant::now();
    let after = Sample::now(plan)?;
    drop(kept);
    if joined.is_err() {
        return Err(format!(
            "calls still unanswered {:?} after the end of the run: the server is stuck",
            plan.stall
        ));
    }
    Ok(RunMeasure {
        connected,
        negotiated,
        recorded: recorder.merged(),
        elapsed: end - before.at,
        server_cpu: after.server.cpu.saturating_sub(before.server.cpu),
        server_processes: after.server.processes,
        service_cpu: match (before.service, after.service) {
            (Some(b), Some(a)) => Some(a.saturating_sub(b)),
            _ => None,
        },
        client_cpu: after.client.saturating_sub(before.client),
    })
}

/// Sets up `plan.connections` connections, [`SETUP_CONCURRENCY`] at a
/// time; those that fail are counted as errors in `recorder`.
async fn connect_all(plan: &RunPlan, recorder: &Arc<Recorder>) -> Result<Vec<Connection>, String> {
    let gate = Arc::new(Semaphore::new(SETUP_CONCURRENCY));
    let tasks: Vec<_> = (0..plan.connections)
        .map(|i| {
            let gate = gate.clone();
            let target = plan.target.clone();
            let rec = recorder.clone();
            tokio::spawn(async move {
                let _permit = gate.acquire().await.ok()?;
                match Connection::open(&target).await {
                    Ok(c) => {
                        rec.opened(i);
                        Some(c)
                    }
                    Err(e) => {
                        rec.error(i, || e.to_string());
                        None
                    }
                }
            })
        })
        .collect();
    let limit = SETUP_BASE + SETUP_PER_CONNECTION * plan.connections as u32;
    let mut conns = Vec::with_capacity(plan.connections);
    let joined = tokio::time::timeout(limit, async {
        for t in tasks {
            if let Ok(Some(c)) = t.await {
                conns.push(c);
            }
        }
    })
    .await;
    match joined {
        Ok(()) => Ok(conns),
        Err(_) => Err(format!(
            "setting up {} connections took over {limit:?}",
            plan.connections
        )),
    }
}
