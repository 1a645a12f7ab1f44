//! `opipe soak`: a long fault-laden run of the engine against an
//! `opipe serve --handler echo` child, in either dialect (`--dialect
//! samba`: the engine opens with Samba's named-pipe-auth handshake and
//! frames every message, the service echoes each message as one). Random sizes (1 byte to 64 KiB),
//! random cancels, random close/reopen, and the service killed and started
//! again halfway. At the end it prints the counts and exits 0 only if every
//! answered reply matched its request byte for byte, no request hung, and
//! the process holds no more descriptors than at the start.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::process::{ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use clap::Args;

use opipe::engine::{Engine, EngineConfig, Pipe, Request, Transfer};
use opipe::protocol::{Dialect, NetUserInfo, NtStatus};

use crate::bench::daemon::private_dir;
use crate::bench::sys;
use crate::serve_child::ServeChild;

/// The pipe name the soak serves and opens.
const PIPE: &str = "soak";
/// The largest request (and echo reply).
const MAX_SIZE_BYTES: usize = 64 * 1024;
/// A request not finished after this long counts as hung (a failure).
const HUNG_AFTER: Duration = Duration::from_secs(30);
/// Worker threads driving the pipes.
const WORKERS: usize = 4;
/// One request in this many is cancelled; one round in `REOPEN_ONE_IN`
/// closes and reopens a pipe for no reason.
const CANCEL_ONE_IN: u64 = 16;
const REOPEN_ONE_IN: u64 = 200;
/// The longest --duration (a week).
const MAX_DURATION_SECS: u64 = 7 * 24 * 3600;
/// Descriptors kept free besides one per pipe: the engine's rings and
/// eventfds, the service child's pipes, stdio, the temp dir.
const FD_RESERVE: usize = 64;

#[derive(Debug, Args)]
pub struct SoakArgs {
    /// Pipes open at once.
    #[arg(long, value_name = "N", default_value_t = 1000,
          value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pipes: u32,

    /// Run this long (default 10 s unless --transceives is given).
    #[arg(long, value_name = "SECS",
          value_parser = clap::value_parser!(u64).range(1..=MAX_DURATION_SECS))]
    duration: Option<u64>,

    /// Stop after this many transceives were sent.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    transceives: Option<u64>,

    /// Seed of every random choice (sizes, payloads, cancels, reopens).
    #[arg(long, value_name = "N", default_value_t = 1)]
    seed: u64,

    /// I/O backend of the engine: auto picks io_uring where it works, else
    /// epoll.
    #[arg(long, value_enum, default_value = "auto")]
    backend: crate::args::BackendArg,

    /// The pipes' dialect: illumos (default) or samba (named-pipe-auth
    /// handshake, u16-framed messages, sockets in <dir>/np/).
    #[arg(long, value_enum, default_value = "illumos")]
    dialect: crate::args::DialectArg,
}

use opipe::rng::SplitMix64 as Rng;

/// A payload unique per request: `pipe`, `seq` up front (as far as the
/// size allows), then bytes drawn from (seed, pipe, seq).
fn payload(seed: u64, pipe: u32, seq: u64, size: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(size);
    v.extend_from_slice(&pipe.to_le_bytes());
    v.extend_from_slice(&seq.to_le_bytes());
    v.truncate(size);
    let mut rng =
        Rng::new(seed ^ (u64::from(pipe) << 40) ^ seq.wrapping_mul(0x2545_F491_4F6C_DD1D));
    while v.len() < size {
        let w = rng.next_u64().to_le_bytes();
        let n = (size - v.len()).min(8);
        v.extend_from_slice(&w[..n]);
    }
    v
}

fn status_name(s: NtStatus) -> String {
    match s.name() {
        Some(n) => n.to_owned(),
        None => format!("0x{:08X}", s.raw()),
    }
}

/// Counts shared by the workers.
#[derive(Default)]
struct Counts {
    sent: AtomicU64,
    answered: AtomicU64,
    cancelled: AtomicU64,
    mismatched: AtomicU64,
    hung: AtomicU64,
    reopened: AtomicU64,
    /// Pipes reused after a cancel, the stream checked up to a marker.
    resynced: AtomicU64,
    /// Marker requests sent for that (not in `sent`), and those that
    /// failed (a pipe status, e.g. at the service restart; not in `failed`).
    markers: AtomicU64,
    markers_failed: AtomicU64,
    bytes: AtomicU64,
    failed: Mutex<BTreeMap<String, u64>>,
    open_failed: Mutex<BTreeMap<String, u64>>,
}

impl Counts {
    fn fail(map: &Mutex<BTreeMap<String, u64>>, s: NtStatus) {
        *map.lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(status_name(s))
            .or_default() += 1;
    }
}

/// The `opipe serve --handler echo` child; killed and reaped when dropped.
/// The socket file stays: a successor may already listen on it (the
/// directory is removed at the end of the soak).
fn start_service(dir: &Path, dialect: Dialect) -> std::io::Result<ServeChild> {
    let args: [&std::ffi::OsStr; 8] = [
        "--dir".as_ref(),
        dir.as_os_str(),
        "--pipe".as_ref(),
        PIPE.as_ref(),
        "--handler".as_ref(),
        "echo".as_ref(),
        "--dialect".as_ref(),
        dialect.as_str().as_ref(),
    ];
    ServeChild::start(
        &args,
        Stdio::null(),
        &dialect.socket_dir(dir).join(PIPE),
        Duration::from_secs(10),
        String::new,
    )
}

fn user(session: u64) -> NetUserInfo {
    NetUserInfo {
        session_id: session,
        account: "soak".into(),
        domain: "WORKGROUP".into(),
        workstation: "soak".into(),
        ..Default::default()
    }
}

/// Waits for `r`; a request that takes longer than [`HUNG_AFTER`] is
/// cancelled and counted as hung.
fn wait<T>(r: Request<T>, counts: &Counts) -> Result<T, NtStatus> {
    let t0 = Instant::now();
    let res = r.wait_timeout(HUNG_AFTER);
    if t0.elapsed() >= HUNG_AFTER {
        counts.hung.fetch_add(1, Ordering::Relaxed);
    }
    res
}

/// Opens a pipe, retrying while the service is away (bounded).
fn open(engine: &Engine, session: u64, counts: &Counts, stop: &AtomicBool) -> Option<Pipe> {
    let begin = Instant::now();
    loop {
        match wait(engine.open(PIPE, user(session), None), counts) {
            Ok(p) => return Some(p),
            Err(s) => {
                Counts::fail(&counts.open_failed, s);
                if stop.load(Ordering::Relaxed) || begin.elapsed() > HUNG_AFTER {
                    return None;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

/// The end of one transceive, as the worker judges it.
enum End {
    Fine,
    /// The pipe must be replaced (cancelled, broken, or a mismatch).
    Replace,
}

fn check_reply(
    p: &Pipe,
    sent: &[u8],
    marker: &[u8],
    res: Result<Transfer, NtStatus>,
    counts: &Counts,
) -> End {
    match res {
        Ok(t) => {
            let mut got = t.data;
            // The echo may come back in pieces: read the rest.
            while got.len() < sent.len() && sent.starts_with(&got) {
                match wait(p.read(MAX_SIZE_BYTES), counts) {
                    Ok(more) => got.extend_from_slice(&more),
                    Err(s) => {
                        Counts::fail(&counts.failed, s);
                        return End::Replace;
                    }
                }
            }
            if got == sent {
                counts.answered.fetch_add(1, Ordering::Relaxed);
                counts.bytes.fetch_add(sent.len() as u64, Ordering::Relaxed);
                End::Fine
            } else {
                counts.mismatched.fetch_add(1, Ordering::Relaxed);
                End::Replace
            }
        }
        Err(NtStatus::CANCELLED) => {
            counts.cancelled.fetch_add(1, Ordering::Relaxed);
            resync(p, sent, marker, counts)
        }
        Err(s) => {
            Counts::fail(&counts.failed, s);
            End::Replace
        }
    }
}

/// Reuses a pipe after a cancel: a marker request is sent and the stream
/// read up to the marker's echo. What comes before it is the cancelled
/// request's late echo, whole, in part or not at all (it may have been
/// cancelled before or while it was sent), so it must be a prefix of that
/// request; anything else is a lost, duplicated or misdelivered byte.
fn resync(p: &Pipe, sent: &[u8], marker: &[u8], counts: &Counts) -> End {
    counts.markers.fetch_add(1, Ordering::Relaxed);
    let mut got = match wait(p.transceive(marker.to_vec(), MAX_SIZE_BYTES), counts) {
        Ok(t) => t.data,
        Err(_) => {
            counts.markers_failed.fetch_add(1, Ordering::Relaxed);
            return End::Replace;
        }
    };
    while !got.ends_with(marker) {
        if got.len() >= sent.len() + marker.len() {
            counts.mismatched.fetch_add(1, Ordering::Relaxed);
            return End::Replace;
        }
        match wait(p.read(MAX_SIZE_BYTES), counts) {
            Ok(more) => got.extend_from_slice(&more),
            Err(_) => {
                counts.markers_failed.fetch_add(1, Ordering::Relaxed);
                return End::Replace;
            }
        }
    }
    if sent.starts_with(&got[..got.len() - marker.len()]) {
        counts.resynced.fetch_add(1, Ordering::Relaxed);
        End::Fine
    } else {
        counts.mismatched.fetch_add(1, Ordering::Relaxed);
        End::Replace
    }
}

struct Worker<'a> {
    engine: &'a Engine,
    counts: &'a Counts,
    stop: &'a AtomicBool,
    limit: Option<u64>,
    seed: u64,
}

impl Worker<'_> {
    fn run(&self, w: usize, ids: Vec<u32>) {
        let mut rng = Rng::new(self.seed.wrapping_mul(31).wrapping_add(w as u64));
        let mut pipes: Vec<(u32, Option<Pipe>)> = ids
            .into_iter()
            .map(|i| (i, open(self.engine, u64::from(i), self.counts, self.stop)))
            .collect();
        let mut seq = 0u64;
        while !self.stop.load(Ordering::Relaxed) {
            seq += 1;
            let mut reqs = Vec::with_capacity(pipes.len());
            for (k, (i, p)) in pipes.iter().enumerate() {
                let Some(p) = p else { continue };
                if let Some(limit) = self.limit {
                    if self.counts.sent.fetch_add(1, Ordering::Relaxed) >= limit {
                        self.stop.store(true, Ordering::Relaxed);
                        break;
                    }
                } else {
                    self.counts.sent.fetch_add(1, Ordering::Relaxed);
                }
                let size = 1 + rng.below(MAX_SIZE_BYTES as u64) as usize;
                let data = payload(self.seed, *i, seq, size);
                let r = p.transceive(data.clone(), MAX_SIZE_BYTES);
                let cancel = rng.below(CANCEL_ONE_IN) == 0;
                reqs.push((k, data, r, cancel));
            }
            if reqs.iter().any(|r| r.3) {
                std::thread::sleep(Duration::from_micros(rng.below(500)));
                for (_, _, r, cancel) in &reqs {
                    if *cancel {
                        r.cancel();
                    }
                }
            }
            let mut replace = Vec::new();
            for (k, data, r, _) in reqs {
                let Some(p) = &pipes[k].1 else { continue };
                let res = wait(r, self.counts);
                let marker = format!("#MARK#{}#{seq}#{}#", pipes[k].0, self.seed).into_bytes();
                if let End::Replace = check_reply(p, &data, &marker, res, self.counts) {
                    replace.push(k);
                } else if rng.below(REOPEN_ONE_IN) == 0 {
                    replace.push(k);
                }
            }
            for k in replace {
                if let Some(p) = pipes[k].1.take() {
                    let _ = wait(p.close(), self.counts);
                }
                self.counts.reopened.fetch_add(1, Ordering::Relaxed);
                pipes[k].1 = open(self.engine, u64::from(pipes[k].0), self.counts, self.stop);
            }
            if pipes.iter().all(|p| p.1.is_none()) {
                break;
            }
        }
        for (_, p) in pipes {
            if let Some(p) = p {
                let _ = wait(p.close(), self.counts);
            }
        }
    }
}

pub fn run(args: SoakArgs) -> ExitCode {
    match soak(&args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("opipe soak: error: {e}");
            ExitCode::from(1)
        }
    }
}

fn soak(args: &SoakArgs) -> Result<bool, Box<dyn std::error::Error>> {
    let fds_start = sys::open_fd_count()?;
    // One descriptor per pipe: ask for no more pipes than the (raised)
    // limit allows, and say so, like bench does.
    let pipes = match opipe::ring::sys::raise_nofile_limit() {
        Ok(limit) => {
            let fit = usize::try_from(limit)
                .unwrap_or(usize::MAX)
                .saturating_sub(fds_start + FD_RESERVE)
                .max(1);
            let fit = u32::try_from(fit).unwrap_or(u32::MAX);
            if fit < args.pipes {
                eprintln!(
                    "opipe soak: can open only {fit} of the {} pipes asked for (RLIMIT_NOFILE \
                     {limit}, {fds_start} descriptors already open); running with {fit}",
                    args.pipes
                );
            }
            args.pipes.min(fit)
        }
        Err(e) => {
            eprintln!(
                "opipe soak: RLIMIT_NOFILE: {e}; running with the {} pipes asked for",
                args.pipes
            );
            args.pipes
        }
    };
    let duration = match (args.duration, args.transceives) {
        (Some(d), _) => Some(Duration::from_secs(d)),
        (None, Some(_)) => None,
        (None, None) => Some(Duration::from_secs(10)),
    };
    let dir = private_dir("opipe-soak")?;
    let dialect = Dialect::from(args.dialect);
    let mut service = start_service(&dir, dialect)?;
    let mut cfg = EngineConfig::new(&dir);
    cfg.dialect = dialect;
    cfg.open_timeout = Duration::from_secs(5);
    cfg.backend = args.backend.into();
    let engine = Engine::new(cfg)?;
    let backend = engine.backend();
    let counts = Counts::default();
    let stop = AtomicBool::new(false);
    let begin = Instant::now();
    let mut restarts = 0u32;
    std::thread::scope(|s| -> Result<(), Box<dyn std::error::Error>> {
        let workers: Vec<_> = (0..WORKERS)
            .map(|w| {
                let ids: Vec<u32> = (0..pipes).filter(|i| *i as usize % WORKERS == w).collect();
                let worker = Worker {
                    engine: &engine,
                    counts: &counts,
                    stop: &stop,
                    limit: args.transceives,
                    seed: args.seed,
                };
                s.spawn(move || worker.run(w, ids))
            })
            .collect();
        // Restart the service halfway (by time, or by transceives sent).
        let halfway = |elapsed: Duration| match (duration, args.transceives) {
            (Some(d), _) => elapsed >= d / 2,
            (None, Some(n)) => counts.sent.load(Ordering::Relaxed) >= n / 2,
            (None, None) => false,
        };
        let mut restart_err = None;
        while !stop.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(20));
            if restarts == 0 && halfway(begin.elapsed()) {
                eprintln!(
                    "opipe soak: killing the service after {:.1} s, {} sent",
                    begin.elapsed().as_secs_f64(),
                    counts.sent.load(Ordering::Relaxed)
                );
                service.stop(Duration::ZERO);
                std::thread::sleep(Duration::from_millis(300));
                match start_service(&dir, dialect) {
                    Ok(svc) => service = svc,
                    Err(e) => {
                        restart_err = Some(e);
                        stop.store(true, Ordering::Relaxed);
                    }
                }
                restarts += 1;
            }
            if duration.is_some_and(|d| begin.elapsed() >= d) {
                stop.store(true, Ordering::Relaxed);
            }
            if workers.iter().all(|w| w.is_finished()) {
                break;
            }
        }
        for w in workers {
            if w.join().is_err() {
                return Err("a worker panicked".into());
            }
        }
        match restart_err {
            Some(e) => Err(format!("restarting the service: {e}").into()),
            None => Ok(()),
        }
    })?;
    let took = begin.elapsed();
    drop(engine);
    drop(service);
    let _ = fs::remove_dir_all(&dir);
    // Ring threads let go of their descriptors as they stop.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut fds_end = sys::open_fd_count()?;
    while fds_end > fds_start && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
        fds_end = sys::open_fd_count()?;
    }

    let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
    let sent = get(&counts.sent).min(args.transceives.unwrap_or(u64::MAX));
    let fmt_map = |m: &Mutex<BTreeMap<String, u64>>| {
        let m = m.lock().unwrap_or_else(|e| e.into_inner());
        let total: u64 = m.values().sum();
        let parts: Vec<String> = m.iter().map(|(k, v)| format!("{k}: {v}")).collect();
        (total, parts.join(", "))
    };
    let (failed, failed_by) = fmt_map(&counts.failed);
    let (open_failed, open_failed_by) = fmt_map(&counts.open_failed);
    let secs = took.as_secs_f64();
    println!(
        "soak: pipes {pipes}, seed {}, backend {backend}, dialect {dialect}, duration {secs:.1} s, service restarts {restarts}",
        args.seed
    );
    println!(
        "sent {sent}, answered {}, cancelled {}, failed {failed} ({failed_by}), mismatched {}, hung {}",
        get(&counts.answered),
        get(&counts.cancelled),
        get(&counts.mismatched),
        get(&counts.hung)
    );
    println!(
                        "reopened {}, reused after a cancel {} (markers failed {}), failed opens {open_failed} ({open_failed_by}), echoed {:.1} MiB, {:.0} answered/s",
        get(&counts.reopened),
        get(&counts.resynced),
        get(&counts.markers_failed),
        get(&counts.bytes) as f64 / (1 << 20) as f64,
        get(&counts.answered) as f64 / secs.max(1e-9)
    );
    println!("fds: start {fds_start}, end {fds_end}");
    let mut ok = true;
    let mut check = |cond: bool, what: &str| {
        if !cond {
            println!("FAIL: {what}");
            ok = false;
        }
    };
    check(
        get(&counts.mismatched) == 0,
        "a reply did not match its request",
    );
    check(get(&counts.hung) == 0, "a request hung");
    check(fds_end <= fds_start, "descriptors leaked");
    check(get(&counts.answered) > 0, "nothing was answered");
    check(
        get(&counts.answered) + get(&counts.cancelled) + failed <= sent
            && get(&counts.resynced) + get(&counts.markers_failed) <= get(&counts.markers),
        "more ends than requests",
    );
    if ok {
        println!("OK");
    }
    Ok(ok)
}
