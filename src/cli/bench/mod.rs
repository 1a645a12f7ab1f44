//! `opipe bench`: drives many pipes of a pipe service with several client
//! engines ("peers") and compares throughput, CPU, latency and memory.
//!
//! Layout:
//! * [`peer`]: the [`Peer`](peer::Peer) trait an engine implements, and [`Run`](peer::Run);
//! * [`peers`]: the peers (`threads`, `tokio`, `tokio-uring`, `uring`), and
//!   two references: `floor`, lockstep rounds for the least CPU per
//!   transceive, and `uring-min`, the least an event-driven io_uring client
//!   does, a file each;
//! * [`exchange`]: the transceive semantics and reply verification all peers share;
//! * [`framed`]: Samba's message framing for the peers that frame for themselves;
//! * [`measure`], [`record`], [`sys`]: stop rule, CPU/RSS (of a process
//!   group too), latency histogram;
//! * [`service`]: the `opipe serve` child process and its clean-up guard;
//! * [`daemon`]: the guard of a server in its own process group (Samba's
//!   daemons, `opipe smb2`), private temp dirs, and the [`Cleanup`](daemon::Cleanup)
//!   list the signal thread and the stall watchdog end the bench with;
//! * `phases`: the four meeting points of a run (opened, go, done, close);
//! * [`monitor`]: progress line and stall watchdog; [`output`]: table and JSON;
//! * [`spec`]: what one run is asked to do, and the size definitions;
//! * [`smb2`]: `--smb2`, SMB2 servers (`opipe smb2`, Samba's smbd) in
//!   front of one pipe service, with an SMB2 load client of its own.

pub mod daemon;
pub mod exchange;
pub mod framed;
pub mod measure;
pub mod monitor;
pub mod output;
pub mod peer;
mod peers;
mod phases;
pub mod record;
pub mod service;
pub mod smb2;
pub mod spec;
pub mod sys;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, ValueEnum};
use opipe::engine::BufferMode;
use opipe::protocol::{Dialect, PipeName};
use opipe::ring::sys::{raise_nofile_limit, BlockedSignals};

use crate::args::DialectArg;
use crate::samba::probe::probe;
use crate::samba::rpcd::{self, Rpcd};
use daemon::Cleanup;
use exchange::{Call, Exchange};
use measure::{Budget, StopRule};
use monitor::{Monitor, Watch};
use output::RunResult;
use peer::{BenchError, Peer, Run};
use peers::{floor, threads, tokio_uring, uring, uring_min};
use record::Recorder;
use service::{ChildConfig, ChildHandler, ServiceAddr, ServiceChild};
use spec::{RunSpec, WireSize};

/// Default length of each run when neither --duration nor --requests is given.
const DEFAULT_DURATION: Duration = Duration::from_secs(3);
/// Descriptors kept free for runtimes, rings, /proc reads and the like.
const FD_RESERVE: usize = 64;

/// Benchmark transceives over many pipes with several client engines.
///
/// Without --dir, starts its own pipe service (`opipe serve --handler dcerpc`,
/// a child process in a temporary directory) and stops it at the end. For each
/// pipe count and engine it opens the pipes (full open handshake), transceives
/// on all of them for --duration seconds (or --requests transceives in all),
/// verifies every reply, and reports transceives/s, client CPU per transceive,
/// latency percentiles and client memory.
///
/// SIZES ARE BYTES ON THE WIRE. --request-size is the whole request PDU as
/// written to the socket, its 24-byte DCE/RPC request header included;
/// --reply-size the whole reply. 64/64 is a 64-byte request (24-byte header +
/// 40 stub bytes) answered by a 64-byte response PDU (24 + 40). Both must be
/// at least 24. A message above 4280 bytes travels as n = ceil(size/4280)
/// fragments, each with its own 24-byte header: n-1 fragments of 4280 bytes
/// and a last one of size - 4280*(n-1) bytes, carrying size - 24*n stub
/// bytes (8192 -> 2 fragments, 8144 stub bytes). The 24 sizes just above each
/// multiple of 4280 (4281..=4304, ...) cannot be produced and are refused.
///
/// Each transceive writes the request, makes ONE read of up to --max-out
/// bytes (MaxOutputResponse) and, when --max-out is below 4280, that read
/// filled the buffer and bytes are still queued (FIONREAD), counts
/// STATUS_BUFFER_OVERFLOW, as the illumos SMB server does; the rest of the
/// reply is then read with ordinary reads.
///
/// --dialect samba speaks Samba's pipe dialect instead of illumos': an
/// anonymous named-pipe-auth open (level 7) on <dir>/np/<name>, then every
/// message behind a u16 length; a transceive's first read is then the first
/// reply message, cut at --max-out (STATUS_BUFFER_OVERFLOW when longer).
/// Engines: uring, uring-registered, threads, tokio (tokio-uring, floor and
/// uring-min speak only illumos: skipped from `all`, refused when named).
///
/// --target samba-rpcd (with --dialect samba) starts Samba's own RPC server,
/// samba-dcerpcd, in a temporary directory instead of `opipe serve`; every
/// pipe opens srvsvc and binds once, and each transceive is a real
/// NetrServerGetInfo level 101 call whose reply is decoded and must name the
/// configured server (a wrong reply counts as an error). Request and reply
/// sizes are then those of that call (--request-size/--reply-size unused).
///
/// Exit status: 0 when every run completed without errors, 1 when any run
/// had errors or could not run, 2 on usage errors.
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct BenchArgs {
    /// Engines to run, comma-separated: threads, tokio, tokio-uring, uring,
    /// all; also uring-registered, floor and uring-min (not part of all).
    #[arg(long, value_enum, value_delimiter = ',', default_value = "all")]
    engine: Vec<EngineArg>,

    /// I/O backend of opipe's engine (uring, uring-registered): auto picks
    /// io_uring where it works, else epoll. With --smb2: `opipe smb2 --backend`.
    #[arg(long, value_enum, default_value = "auto")]
    backend: crate::args::BackendArg,

    /// How opipe's io_uring engine receives replies: one multishot receive
    /// per pipe (a transceive is one SEND SQE), or a linked SEND -> RECV
    /// chain per transceive.
    #[arg(long, value_enum, default_value = "multishot")]
    uring_recv: UringRecv,

    /// Rings of opipe's engine, one thread each, the pipes spread over them
    /// (default: one per CPU, as tokio has one worker per CPU).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=64))]
    rings: Option<u16>,

    /// Submission queue entries per ring of opipe's engine (default:
    /// EngineConfig::sq_entries's, 256; more SQEs in one turn wait in the
    /// driver's backlog).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=32768))]
    sq_entries: Option<u32>,

    /// Completion queue entries per ring of opipe's engine (default: four
    /// per pipe of a ring, a power of two, 1024-65536;
    /// EngineConfig::cq_entries).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=65536))]
    cq_entries: Option<u32>,

    /// Pipes to drive concurrently; a comma list runs each count (1,64,1024,4096).
    #[arg(long, value_delimiter = ',', default_value = "1024", value_parser = parse_pipes)]
    pipes: Vec<usize>,

    /// Request bytes on the wire, 24-byte PDU header included (>= 24).
    #[arg(long, default_value = "64", value_parser = spec::parse_wire_size, value_name = "BYTES")]
    request_size: WireSize,

    /// Reply bytes on the wire, all fragments and headers included (>= 24).
    #[arg(long, default_value = "64", value_parser = spec::parse_wire_size, value_name = "BYTES")]
    reply_size: WireSize,

    /// MaxOutputResponse: length of each transceive's one read.
    #[arg(long, default_value = "4280", value_parser = spec::parse_max_out, value_name = "BYTES")]
    max_out: usize,

    /// Seconds each run transceives (default 3; fractions allowed).
    #[arg(long, value_parser = parse_secs, value_name = "SECS")]
    duration: Option<Duration>,

    /// Transceives per run, over all its pipes (instead of --duration).
    #[arg(long, conflicts_with = "duration", value_parser = clap::value_parser!(u64).range(1..), value_name = "N")]
    requests: Option<u64>,

    /// Run the whole set (every pipe count, every engine) N times, the
    /// engines taking turns within each round, and report each figure's
    /// median and each ratio's median and range over the rounds: on a
    /// noisy machine a ratio taken within one round moves less than an
    /// engine's own figures from run to run.
    #[arg(long, default_value = "1", value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..=100))]
    rounds: u32,

    /// Print one JSON object on stdout instead of the table.
    #[arg(long)]
    json: bool,

    /// Use the service already listening in DIR instead of starting one. It
    /// must run `--handler dcerpc --reply-size <reply stub bytes>`.
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,

    /// Pipe name to open.
    #[arg(long, default_value = "bench", value_parser = parse_pipe_name, value_name = "NAME")]
    pipe: String,

    /// Seconds without any pipe opening or transceive finishing after
    /// which a run counts as stuck and the bench gives up (exit 1).
    #[arg(long, hide = true, default_value = "20", value_parser = parse_secs, value_name = "SECS")]
    stall_timeout: Duration,

    /// Worker threads of the service child (`serve --threads`, 1-256).
    #[arg(long, conflicts_with = "dir", value_name = "N",
          value_parser = clap::value_parser!(u16).range(1..=256))]
    threads: Option<u16>,

    /// Benchmark SMB2 servers instead of engines: `opipe smb2` and Samba's
    /// smbd (when /usr/sbin/smbd exists), both in front of one `opipe serve
    /// --dialect samba --handler srvsvc`, driven by an SMB2 load client
    /// (anonymous login, IPC$, srvsvc, bind, then FSCTL_PIPE_TRANSCEIVE of
    /// NetrServerGetInfo in a closed loop). --pipes counts connections
    /// (the set: --pipes 1,64,512). Reports calls/s, the server's
    /// CPU per call (smbd: all its processes), p50/p99/p99.9, and the
    /// opipe/smbd ratios.
    #[arg(long, conflicts_with_all = ["engine", "dir", "requests", "request_size",
          "reply_size", "max_out", "uring_recv", "rings", "sq_entries", "cq_entries", "pipe"])]
    smb2: bool,

    /// With --smb2: the binary whose `smb2` subcommand is measured (default: this one).
    #[arg(long, hide = true, value_name = "PATH", requires = "smb2")]
    smb2_exe: Option<PathBuf>,

    /// The pipes' dialect: illumos (default) or samba (named-pipe-auth
    /// handshake, u16-framed messages, sockets in <dir>/np/).
    #[arg(long, value_enum, default_value = "illumos")]
    dialect: DialectArg,

    /// The service to drive: opipe (`opipe serve --handler dcerpc`, or the
    /// one --dir names) or samba-rpcd (Samba's samba-dcerpcd, started here;
    /// needs --dialect samba, except with --smb2, where it is the pipe
    /// service behind both SMB servers).
    #[arg(long, value_enum, default_value = "opipe",
          conflicts_with_all = ["dir", "threads"])]
    target: TargetArg,

    /// Pipes that open (handshake and bind; threads: the connect too) at
    /// once; 0: all at once. Default: 0 against opipe, 1 against
    /// samba-rpcd, whose 4.17 can leave binds unanswered for seconds when
    /// many arrive at once on fresh connections.
    #[arg(long, value_name = "N")]
    open_concurrency: Option<usize>,

    /// The server name every samba-rpcd reply must carry, instead of the
    /// configured one (for tests: a wrong name makes every reply fail
    /// verification).
    #[arg(long, hide = true, value_name = "NAME")]
    expect_server_name: Option<String>,
}

/// `--target` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum TargetArg {
    /// opipe's own pipe service.
    Opipe,
    /// Samba's samba-dcerpcd and its rpcd_classic (srvsvc), real calls.
    SambaRpcd,
}

/// The server name samba-dcerpcd is configured with (`netbios name`).
const SAMBA_SERVER_NAME: &str = "OPIPEBENCH";

/// `--uring-recv` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum UringRecv {
    /// One multishot receive per active pipe (the engine's default).
    Multishot,
    /// A linked SEND -> RECV chain per transceive.
    Linked,
}

/// `--engine` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, ValueEnum)]
enum EngineArg {
    /// One blocking OS thread per pipe (the illumos seed's model).
    Threads,
    /// tokio multi-threaded runtime on epoll, one task per pipe.
    Tokio,
    /// tokio-uring 0.5, one thread, one task per pipe.
    TokioUring,
    /// opipe's io_uring engine (plain buffers, the default mode).
    Uring,
    /// opipe's io_uring engine with registered buffers (not part of `all`).
    UringRegistered,
    /// Reference, not an engine: one thread, lockstep rounds of blocking
    /// write-all-then-read-all; the least client CPU per transceive (not
    /// part of `all`).
    Floor,
    /// Reference, not an engine: raw io_uring, one ring per thread
    /// (`--rings`), one SEND per request, one multishot RECV per pipe; the
    /// least an event-driven io_uring client does (not part of `all`).
    UringMin,
    /// threads, tokio, tokio-uring and uring.
    All,
}

/// Whether an engine speaks `dialect` (the references and tokio-uring
/// speak only illumos).
fn speaks(engine: EngineArg, dialect: Dialect) -> bool {
    match dialect {
        Dialect::Illumos => true,
        Dialect::Samba => matches!(
            engine,
            EngineArg::Threads | EngineArg::Tokio | EngineArg::Uring | EngineArg::UringRegistered
        ),
    }
}

/// The peer of an engine, or why this build cannot run it. Engines are
/// registered here.
fn peer_for(engine: EngineArg, uring: &uring::Tuning) -> Result<Box<dyn Peer>, &'static str> {
    let rings = uring.rings;
    match engine {
        EngineArg::Threads => Ok(Box::new(threads::ThreadsPeer)),
        EngineArg::Tokio => Ok(Box::new(peers::tokio::TokioPeer)),
        EngineArg::TokioUring => Ok(Box::new(tokio_uring::TokioUringPeer)),
        EngineArg::Uring => Ok(Box::new(uring::UringPeer {
            buffers: BufferMode::Plain,
            tuning: uring.clone(),
        })),
        EngineArg::UringRegistered => Ok(Box::new(uring::UringPeer {
            buffers: BufferMode::Registered,
            tuning: uring.clone(),
        })),
        EngineArg::Floor => Ok(Box::new(floor::FloorPeer)),
        EngineArg::UringMin => Ok(Box::new(uring_min::UringMinPeer { threads: rings })),
        EngineArg::All => Err("`all` is a set of engines, not one"),
    }
}

fn parse_pipes(s: &str) -> Result<usize, String> {
    match s.trim().parse::<usize>() {
        Ok(n) if (1..=1 << 20).contains(&n) => Ok(n),
        _ => Err(format!(
            "`{s}` is not a pipe count between 1 and {}",
            1 << 20
        )),
    }
}

fn parse_secs(s: &str) -> Result<Duration, String> {
    match s.trim().parse::<f64>() {
        Ok(x) if x > 0.0 && x <= 86_400.0 => Ok(Duration::from_secs_f64(x)),
        _ => Err(format!("`{s}` is not a number of seconds in (0, 86400]")),
    }
}

/// `--pipe`: a flat name (`bench`) or an SMB path (`\\PIPE\\bench`),
/// normalised and checked like an SMB open.
fn parse_pipe_name(s: &str) -> Result<String, String> {
    PipeName::parse(s)
        .map(PipeName::into_string)
        .map_err(|status| format!("`{s}` is not a valid pipe name ({status})"))
}

/// `round 2/3: ` before a run's note when there are several rounds.
fn round_prefix(round: usize, rounds: usize) -> String {
    if rounds > 1 {
        format!("round {round}/{rounds}: ")
    } else {
        String::new()
    }
}

fn note(msg: impl std::fmt::Display) {
    eprintln!("opipe bench: {msg}");
}

/// Runs `opipe bench`.
pub fn main(args: BenchArgs) -> ExitCode {
    match bench(&args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            note(format!("error: {e}"));
            ExitCode::from(1)
        }
    }
}

/// The whole bench; `Ok(false)` when some run had errors or did not run.
fn bench(args: &BenchArgs) -> Result<bool, String> {
    if args.smb2 {
        return smb2::bench(args);
    }
    let (peers, mut all_ok) = build_peers(args);
    if peers.is_empty() {
        return Err("no engine to run".into());
    }

    // SIGINT/SIGTERM/SIGHUP are taken by one thread that cleans up (the
    // guard's Drop would not run). Blocked before any thread exists so that
    // every later thread inherits the mask.
    let signals = BlockedSignals::block(&[libc::SIGINT, libc::SIGTERM, libc::SIGHUP])
        .map_err(|e| format!("blocking signals: {e}"))?;
    let fds = FdBudget::take()?;
    let cleanup = Cleanup::default();
    on_signal(signals, cleanup.clone(), "the service");
    let mut target = Target::start(args, &cleanup)?;
    let watch = Watch {
        draw: std::io::stderr().is_terminal(),
        stall: args.stall_timeout,
        abort: cleanup,
    };

    let (results, runs_ok) = run_rounds(args, &peers, &mut target, &watch, &fds);
    drop(target);

    if args.json {
        println!("{}", output::json(&results));
    } else {
        print!("{}", output::table(&results));
    }
    all_ok &= runs_ok;
    Ok(all_ok && !results.is_empty())
}

/// The engines named on the command line, `all` expanded (it adds the four
/// compared engines to whatever else was named: `--engine all,floor`),
/// sorted and without repeats.
fn engines_asked(args: &BenchArgs) -> Vec<EngineArg> {
    let mut engines: Vec<EngineArg> = args.engine.clone();
    if engines.contains(&EngineArg::All) {
        engines.retain(|e| *e != EngineArg::All);
        engines.extend([
            EngineArg::Threads,
            EngineArg::Tokio,
            EngineArg::TokioUring,
            EngineArg::Uring,
        ]);
    }
    engines.sort_unstable();
    engines.dedup();
    engines
}

/// One peer per engine asked for; `false` when an engine named on its own
/// cannot run in this build (one that `all` includes is skipped quietly).
fn build_peers(args: &BenchArgs) -> (Vec<Box<dyn Peer>>, bool) {
    let rings = args.rings.map_or_else(
        || std::thread::available_parallelism().map_or(1, |n| n.get()),
        usize::from,
    );
    let tuning = uring::Tuning {
        backend: args.backend.into(),
        multishot: args.uring_recv == UringRecv::Multishot,
        rings,
        sq_entries: args.sq_entries,
        cq_entries: args.cq_entries,
    };
    let mut peers: Vec<Box<dyn Peer>> = Vec::new();
    let mut all_ok = true;
    let dialect = Dialect::from(args.dialect);
    let named = |e: EngineArg| args.engine.contains(&e);
    for e in engines_asked(args) {
        if !speaks(e, dialect) {
            let name = e.to_possible_value().map(|v| v.get_name().to_owned());
            let name = name.unwrap_or_default();
            if named(e) {
                note(format!(
                    "error: {name} speaks only the illumos dialect, not {dialect} \
                     (samba: uring, uring-registered, threads, tokio)"
                ));
                all_ok = false;
            } else {
                note(format!(
                    "{name} skipped: it speaks only the illumos dialect"
                ));
            }
            continue;
        }
        match peer_for(e, &tuning) {
            Ok(p) => peers.push(p),
            Err(why) => {
                eprintln!("{why}");
                if !args.engine.contains(&EngineArg::All) {
                    all_ok = false;
                }
            }
        }
    }
    (peers, all_ok)
}

/// Descriptors: one per client pipe. The soft limit is raised first, so the
/// service child inherits it too.
struct FdBudget {
    limit: u64,
    open_now: usize,
    pipes_max: usize,
}

impl FdBudget {
    fn take() -> Result<FdBudget, String> {
        let limit = raise_nofile_limit().map_err(|e| format!("RLIMIT_NOFILE: {e}"))?;
        let open_now = sys::open_fd_count().map_err(|e| format!("/proc/self/fd: {e}"))?;
        let pipes_max = (limit as usize)
            .saturating_sub(open_now + FD_RESERVE)
            .max(1);
        Ok(FdBudget {
            limit,
            open_now,
            pipes_max,
        })
    }
}

/// What the runs drive and what each transceive is.
struct Target {
    addr: ServiceAddr,
    /// The `opipe serve` child, when the bench started one.
    child: Option<ServiceChild>,
    /// samba-dcerpcd, with `--target samba-rpcd`.
    rpcd: Option<Rpcd>,
    call: Call,
    request: WireSize,
    reply: WireSize,
    open_concurrency: usize,
}

impl Target {
    /// Starts (or finds, with `--dir`) the service and settles the call.
    /// What it starts is listed in `cleanup` while it runs.
    fn start(args: &BenchArgs, cleanup: &Cleanup) -> Result<Target, String> {
        let dialect = Dialect::from(args.dialect);
        if args.target == TargetArg::SambaRpcd {
            if dialect != Dialect::Samba {
                return Err(
                    "--target samba-rpcd speaks Samba's dialect: add --dialect samba".into(),
                );
            }
            let rpcd = Rpcd::start(SAMBA_SERVER_NAME, cleanup)?;
            let addr = ServiceAddr {
                dir: rpcd.ncalrpc_dir(),
                pipe: rpcd::PIPE.into(),
                dialect,
            };
            note(format!(
                "samba-dcerpcd started: pid {}, socket {addr}, server name {}",
                rpcd.pgid(),
                rpcd.server_name()
            ));
            let probe = probe(&addr.dir, rpcd.server_name())?;
            let size = |n: usize| WireSize::from_wire(n).map_err(|e| format!("probe call: {e}"));
            note(format!(
                "each transceive: NetrServerGetInfo level 101, a {}-byte request, a {}-byte \
                 reply naming {} (checked on every reply)",
                probe.request_bytes,
                probe.reply_bytes,
                rpcd.server_name()
            ));
            let expected = args.expect_server_name.as_deref();
            return Ok(Target {
                call: Call::ServerInfo {
                    server_name: expected.unwrap_or(rpcd.server_name()).to_owned(),
                },
                request: size(probe.request_bytes)?,
                reply: size(probe.reply_bytes)?,
                open_concurrency: args.open_concurrency.unwrap_or(1),
                addr,
                child: None,
                rpcd: Some(rpcd),
            });
        }
        let (addr, child) = service_for(args, dialect, cleanup)?;
        Ok(Target {
            addr,
            child,
            rpcd: None,
            call: Call::Pattern,
            request: args.request_size,
            reply: args.reply_size,
            open_concurrency: args.open_concurrency.unwrap_or(0),
        })
    }

    /// The pid whose CPU time is measured as the service's: the `opipe
    /// serve` child, or samba-dcerpcd with the `rpcd_*` workers of its
    /// process group (`sys::service_cpu_time`).
    fn service_pid(&self) -> Option<u32> {
        match (&self.child, &self.rpcd) {
            (Some(c), _) => c.pid(),
            (None, Some(r)) => Some(r.pgid()),
            (None, None) => None,
        }
    }

    /// Fails when the service the bench started has died.
    fn check_alive(&mut self) -> Result<(), String> {
        if let Some(c) = self.child.as_mut() {
            c.check_alive()?;
        }
        if let Some(r) = self.rpcd.as_mut() {
            r.check_alive()?;
        }
        Ok(())
    }
}

/// The service the runs drive: the one `--dir` names, or a child
/// `opipe serve` started here (stopped when the returned guard drops).
fn service_for(
    args: &BenchArgs,
    dialect: Dialect,
    cleanup: &Cleanup,
) -> Result<(ServiceAddr, Option<ServiceChild>), String> {
    if let Some(dir) = &args.dir {
        let addr = ServiceAddr {
            dir: dir.clone(),
            pipe: args.pipe.clone(),
            dialect,
        };
        note(format!(
            "using the service at {addr}; it must answer with {} stub bytes per reply \
             (serve --handler dcerpc --reply-size {} --dialect {dialect})",
            args.reply_size.stub_bytes, args.reply_size.stub_bytes
        ));
        return Ok((addr, None));
    }
    let cfg = ChildConfig {
        pipe: args.pipe.clone(),
        handler: ChildHandler::Dcerpc {
            reply_stub_bytes: args.reply_size.stub_bytes,
        },
        threads: args.threads,
        dialect,
    };
    let c = ServiceChild::start(&cfg, cleanup)
        .map_err(|e| format!("starting the pipe service: {e}"))?;
    note(format!(
        "service started: pid {}, socket {}",
        c.pid().unwrap_or(0),
        c.addr()
    ));
    Ok((c.addr().clone(), Some(c)))
}

/// Every round, every pipe count, every peer in turn; stops early when the
/// service child died. `false` when a run had errors or did not run.
fn run_rounds(
    args: &BenchArgs,
    peers: &[Box<dyn Peer>],
    target: &mut Target,
    watch: &Watch,
    fds: &FdBudget,
) -> (Vec<RunResult>, bool) {
    let stop = match (args.requests, args.duration) {
        (Some(n), _) => StopRule::Requests(n),
        (None, Some(d)) => StopRule::Duration(d),
        (None, None) => StopRule::Duration(DEFAULT_DURATION),
    };
    let service_pid = target.service_pid();
    let mut results = Vec::new();
    let mut all_ok = true;
    let rounds = args.rounds as usize;
    for (round, &asked) in (1..=rounds).flat_map(|r| args.pipes.iter().map(move |p| (r, p))) {
        let pipes = asked.min(fds.pipes_max);
        if pipes < asked && round == 1 {
            note(format!(
                "can open only {pipes} of the {asked} pipes asked for (RLIMIT_NOFILE {}, \
                 {} descriptors already open); running with {pipes}",
                fds.limit, fds.open_now
            ));
        }
        for peer in peers {
            let spec = RunSpec {
                pipes,
                request: target.request,
                reply: target.reply,
                max_out: args.max_out,
                stop,
                dialect: target.addr.dialect,
                call: target.call.clone(),
                open_concurrency: target.open_concurrency,
            };
            note(format!(
                "{}running {} with {pipes} pipes, {}",
                round_prefix(round, rounds),
                peer.name(),
                match stop {
                    StopRule::Duration(d) => format!("{:.1} s", d.as_secs_f64()),
                    StopRule::Requests(n) => format!("{n} transceives"),
                }
            ));
            match run_one(peer.as_ref(), spec, &target.addr, service_pid, watch) {
                Ok(mut r) => {
                    r.round = round;
                    all_ok &= r.errors == 0;
                    results.push(r);
                }
                Err(e) => {
                    note(format!(
                        "{} with {pipes} pipes did not run: {e}",
                        peer.name()
                    ));
                    all_ok = false;
                }
            }
            // A dead service would make every later run a wall of errors:
            // stop, and report what ran.
            if let Err(e) = target.check_alive() {
                note(format!("error: {e}"));
                return (results, false);
            }
        }
    }
    (results, all_ok)
}

/// Cleans up what `cleanup` lists (`what`: the service, the servers) and
/// exits 130 when one of `signals` arrives. The children also die with this
/// process should it die otherwise (PR_SET_PDEATHSIG).
fn on_signal(signals: BlockedSignals, cleanup: Cleanup, what: &'static str) {
    let spawned = std::thread::Builder::new()
        .name("bench-signals".into())
        .spawn(move || {
            if let Ok(sig) = signals.wait() {
                note(format!("signal {sig}: stopping {what} and exiting"));
                cleanup.exit(130);
            }
        });
    if let Err(e) = spawned {
        note(format!(
            "warning: no signal thread ({e}); an interrupt may leave {what} running"
        ));
    }
}

/// One peer, one pipe count.
fn run_one(
    peer: &dyn Peer,
    spec: RunSpec,
    addr: &ServiceAddr,
    service_pid: Option<u32>,
    watch: &Watch,
) -> Result<RunResult, BenchError> {
    let fds_before = sys::open_fd_count().map_err(BenchError::io("/proc/self/fd"))?;
    let run = Arc::new(Run {
        exchange: Exchange::new(&spec).map_err(BenchError::Unavailable)?,
        recorder: Recorder::new(),
        budget: Budget::new(spec.stop),
        service: addr.clone(),
        service_pid,
        spec,
    });
    let label = format!("{} x{}", peer.name(), run.spec.pipes);
    let monitor = Monitor::start(run.clone(), label, watch.clone());
    let outcome = peer.run(&run);
    monitor.stop();
    let peer_run = outcome?;
    let recorded = run.recorder.merged();
    for msg in &recorded.error_samples {
        note(format!("{}: {msg}", peer.name()));
    }
    if recorded.bad_replies > 0 {
        note(format!(
            "{}: {} replies FAILED verification",
            peer.name(),
            recorded.bad_replies
        ));
    }
    if recorded.errors > recorded.error_samples.len() as u64 {
        note(format!(
            "{}: ... {} errors in all",
            peer.name(),
            recorded.errors
        ));
    }
    let result = RunResult::new(
        peer.name(),
        peer_run.backend,
        peer_run.detail,
        &run.spec,
        &peer_run.measured,
        &recorded,
    );
    drop(run);
    let fds_after = sys::open_fd_count().map_err(BenchError::io("/proc/self/fd"))?;
    if fds_after > fds_before {
        note(format!(
            "warning: {} left {} descriptors open ({fds_before} before the run, {fds_after} after)",
            peer.name(),
            fds_after - fds_before
        ));
    }
    Ok(result)
}
