//! `opipe bench --smb2`: `opipe smb2` against Samba's `smbd`, both in
//! front of the SAME pipe service, driven by one small SMB2 load client.
//!
//! ```text
//!                     +-> opipe smb2 --dialect samba --+
//! load client (TCP) --|                                |--> opipe serve --dialect samba
//!                     +-> smbd (external_rpc_pipe) ----+    --handler srvsvc
//! ```
//!
//! * [`client`]: the load client (anonymous login, IPC$, srvsvc, bind,
//!   then FSCTL_PIPE_TRANSCEIVE of NetrServerGetInfo in a closed loop);
//! * [`runner`]: one measured run (N connections, one server);
//! * [`front`]: `opipe smb2`; the real smbd and samba-dcerpcd are
//!   [`crate::samba`]'s, the `opipe serve` child the pipe bench's
//!   ([`crate::bench::service`]), their process-group guard
//!   [`crate::bench::daemon`], the CPU of a group that forks (smbd: all its
//!   processes, exited ones included) [`crate::bench::sys::group_cpu`];
//! * [`report`]: the table, the ratios and the JSON.
//!
//! Rounds: every round runs every connection count on both servers, the
//! servers taking turns (the order swapped every round); ratios are
//! taken within a round.

pub mod client;
pub mod front;
pub mod report;
pub mod runner;
#[cfg(test)]
mod tests;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::json;

use opipe::protocol::Dialect;
use opipe::ring::sys::BlockedSignals;

use super::daemon::{Cleanup, Daemon};
use super::service::{ChildConfig, ChildHandler, ServiceChild};
use super::{note, on_signal, round_prefix, sys, BenchArgs, FdBudget, TargetArg, DEFAULT_DURATION};
use crate::args::BackendArg;
use crate::samba::rpcd::{self, Rpcd};
use crate::samba::smbd::{self, Smbd};
use client::Target;
use front::{Front, FrontConfig};
use report::Row;
use runner::RunPlan;

/// The server name the `opipe serve` pipe service reports (not smbd's
/// NetBIOS name: a reply carrying it came from the pipe service).
const SERVE_NAME: &str = "OPIPESVC";
/// samba-dcerpcd's NetBIOS name: what its srvsvc reports.
const RPCD_NAME: &str = "OPIPERPCD";

/// How long after a run the servers get to close its connections (smbd:
/// its per-connection processes gone) before the next run starts.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(10);

/// The pipe service both SMB servers stand in front of.
enum Backend {
    Serve(ServiceChild),
    Rpcd(Rpcd),
}

impl Backend {
    fn start(args: &BenchArgs, cleanup: &Cleanup) -> Result<Backend, String> {
        match args.target {
            TargetArg::Opipe => {
                let cfg = ChildConfig {
                    pipe: rpcd::PIPE.into(),
                    handler: ChildHandler::Srvsvc {
                        server_name: SERVE_NAME.into(),
                    },
                    threads: args.threads,
                    dialect: Dialect::Samba,
                };
                let s = ServiceChild::start(&cfg, cleanup)
                    .map_err(|e| format!("the pipe service: {e}"))?;
                note(format!(
                    "pipe service started: pid {}, {} \
                     (opipe serve --dialect samba --handler srvsvc)",
                    s.pid().unwrap_or(0),
                    s.addr()
                ));
                Ok(Backend::Serve(s))
            }
            TargetArg::SambaRpcd => {
                if args.threads.is_some() {
                    return Err("--threads is for opipe serve, not --target samba-rpcd".into());
                }
                let r = Rpcd::start(RPCD_NAME, cleanup)?;
                note(format!(
                    "pipe service started: samba-dcerpcd (pgid {}), {}/np/{}",
                    r.pgid(),
                    r.ncalrpc_dir().display(),
                    rpcd::PIPE
                ));
                Ok(Backend::Rpcd(r))
            }
        }
    }

    /// The directory whose `np/` holds the pipe sockets.
    fn dir(&self) -> PathBuf {
        match self {
            Backend::Serve(s) => s.addr().dir.clone(),
            Backend::Rpcd(r) => r.ncalrpc_dir(),
        }
    }

    /// What NetrServerGetInfo answers.
    fn server_name(&self) -> &'static str {
        match self {
            Backend::Serve(_) => SERVE_NAME,
            Backend::Rpcd(_) => RPCD_NAME,
        }
    }

    /// The pid whose CPU is the service's (samba-dcerpcd: with its group).
    fn pid(&self) -> Option<u32> {
        match self {
            Backend::Serve(s) => s.pid(),
            Backend::Rpcd(r) => Some(r.pgid()),
        }
    }

    fn describe(&self) -> &'static str {
        match self {
            Backend::Serve(_) => "opipe serve --dialect samba --handler srvsvc",
            Backend::Rpcd(_) => "samba-dcerpcd (Samba's rpcd_* workers)",
        }
    }

    fn check_alive(&mut self) -> Result<(), String> {
        match self {
            Backend::Serve(s) => s.check_alive(),
            Backend::Rpcd(r) => r.check_alive(),
        }
    }
}

/// One of the SMB servers under test.
enum Server {
    Opipe(Front),
    Smbd(Smbd),
}

impl Server {
    fn name(&self) -> &'static str {
        match self {
            Server::Opipe(_) => report::OPIPE,
            Server::Smbd(_) => report::SMBD,
        }
    }

    fn addr(&self) -> std::net::SocketAddr {
        match self {
            Server::Opipe(f) => f.addr,
            Server::Smbd(s) => s.addr,
        }
    }

    /// Its process-group guard.
    fn daemon(&mut self) -> &mut Daemon {
        match self {
            Server::Opipe(f) => &mut f.daemon,
            Server::Smbd(s) => &mut s.daemon,
        }
    }
}

/// Runs `opipe bench --smb2`; `Ok(false)` when a run had errors or did
/// not run.
pub fn bench(args: &BenchArgs) -> Result<bool, String> {
    let exe = match &args.smb2_exe {
        Some(p) => p.clone(),
        None => std::env::current_exe().map_err(|e| format!("this binary's path: {e}"))?,
    };
    // As the pipe bench does: signals taken by one thread that cleans up.
    let signals = BlockedSignals::block(&[libc::SIGINT, libc::SIGTERM, libc::SIGHUP])
        .map_err(|e| format!("blocking signals: {e}"))?;
    let fds = FdBudget::take()?;
    let cleanup = Cleanup::default();
    on_signal(signals, cleanup.clone(), "the servers");

    let mut notes = Vec::new();
    let mut service = Backend::start(args, &cleanup)?;
    let mut servers = Vec::new();
    let mut status = serde_json::Map::new();
    match start_opipe(args, exe, &service, &cleanup) {
        Ok(f) => {
            note(format!(
                "opipe smb2 started on {} (pgid {})",
                f.addr,
                f.pgid()
            ));
            status.insert(report::OPIPE.into(), json!("ran"));
            servers.push(Server::Opipe(f));
        }
        Err(why) => {
            let msg = format!("opipe smb2 NOT measured: {why}");
            note(&msg);
            status.insert(report::OPIPE.into(), json!(format!("not run: {why}")));
            notes.push(msg);
        }
    }
    if smbd::installed() {
        let s = Smbd::start(&service.dir(), &cleanup).map_err(|e| format!("smbd: {e}"))?;
        note(format!("smbd started on {} (pgid {})", s.addr, s.pgid()));
        status.insert(report::SMBD.into(), json!("ran"));
        servers.push(Server::Smbd(s));
    } else {
        let why = format!("{} is not installed", smbd::SMBD);
        let msg = format!("smbd NOT measured: {why}");
        note(&msg);
        status.insert(report::SMBD.into(), json!(format!("not run: {why}")));
        notes.push(msg);
    }
    if servers.is_empty() {
        return Err("no SMB server to measure".into());
    }

    let (rows, ok) = run_rounds(args, &mut servers, &mut service, &fds);
    let backend = service.describe();
    drop(servers);
    drop(service);
    if args.json {
        let servers = serde_json::Value::Object(status);
        println!("{}", report::json(&rows, backend, &servers, &notes));
    } else {
        print!("{}", report::table(&rows, backend, &notes));
    }
    Ok(ok && !rows.is_empty())
}

/// `opipe smb2` in front of `service`, or why it cannot run.
fn start_opipe(
    args: &BenchArgs,
    exe: PathBuf,
    service: &Backend,
    cleanup: &Cleanup,
) -> Result<Front, String> {
    front::available(&exe)?;
    let cfg = FrontConfig {
        exe,
        pipe_dir: service.dir(),
        backend: match args.backend {
            BackendArg::Auto => None,
            BackendArg::IoUring => Some("io-uring"),
            BackendArg::Epoll => Some("epoll"),
        },
        threads: None,
    };
    Front::start(&cfg, cleanup).map_err(|e| format!("it did not start: {e}"))
}

/// Every round, every connection count, every server in turn.
fn run_rounds(
    args: &BenchArgs,
    servers: &mut [Server],
    service: &mut Backend,
    fds: &FdBudget,
) -> (Vec<Row>, bool) {
    let duration = args.duration.unwrap_or(DEFAULT_DURATION);
    let rounds = args.rounds as usize;
    let mut rows = Vec::new();
    let mut all_ok = true;
    for round in 1..=rounds {
        for &asked in &args.pipes {
            let connections = asked.min(fds.pipes_max);
            if connections < asked && round == 1 {
                note(format!(
                    "can open only {connections} of the {asked} connections asked for \
                     (RLIMIT_NOFILE {}); running with {connections}",
                    fds.limit
                ));
            }
            let order: Vec<usize> = if round % 2 == 1 {
                (0..servers.len()).collect()
            } else {
                (0..servers.len()).rev().collect()
            };
            for i in order {
                let server = &mut servers[i];
                note(format!(
                    "{}{} with {connections} connections, {:.1} s",
                    round_prefix(round, rounds),
                    server.name(),
                    duration.as_secs_f64()
                ));
                let pgid = server.daemon().pgid();
                let base = sys::group_cpu(pgid).map_or(1, |g| g.processes);
                let plan = RunPlan {
                    target: Target {
                        addr: server.addr(),
                        server_name: service.server_name().into(),
                    },
                    connections,
                    duration,
                    stall: args.stall_timeout,
                    server_pgid: pgid,
                    service_pid: service.pid(),
                };
                match runner::run(&plan) {
                    Ok(m) => {
                        for e in &m.recorded.error_samples {
                            note(format!("{}: {e}", server.name()));
                        }
                        let row = Row::new(server.name(), connections, round, &m);
                        all_ok &= row.errors == 0;
                        rows.push(row);
                    }
                    Err(e) => {
                        note(format!(
                            "{} with {connections} connections did not run: {e}{}",
                            server.name(),
                            server.daemon().log_tail()
                        ));
                        all_ok = false;
                    }
                }
                settle(pgid, base);
                // A dead server or service makes every later run a wall of
                // errors: stop and report what ran.
                if let Err(e) = server
                    .daemon()
                    .check_alive()
                    .and_then(|()| service.check_alive())
                {
                    note(format!("error: {e}"));
                    return (rows, false);
                }
            }
        }
    }
    (rows, all_ok)
}

/// Waits (bounded) until the group is back to `processes` members: smbd's
/// per-connection processes of the last run gone.
fn settle(pgid: u32, processes: usize) {
    let begin = Instant::now();
    while begin.elapsed() < SETTLE_TIMEOUT {
        match sys::group_cpu(pgid) {
            Ok(g) if g.processes > processes => std::thread::sleep(Duration::from_millis(20)),
            _ => return,
        }
    }
    note(format!(
        "warning: the server's process group {pgid} still has more than {processes} \
         processes {SETTLE_TIMEOUT:?} after its connections closed"
    ));
}
