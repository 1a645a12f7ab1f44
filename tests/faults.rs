//! Fault injection against the engine: the service process killed with
//! requests in flight, handshakes that never come, cancels racing
//! completions, the open-file limit, a session disconnected under load.
//!
//! Every test is bounded in time, uses sockets in a temp dir and leaves no
//! process behind. The tests run one at a time ([`serial`]) so that each can
//! compare the process's descriptor count with its own baseline. Every test
//! loops over [`engine_configs`]: adding a backend is one line there.

mod common;

use std::future::Future;
use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use common::*;
use opipe::engine::{BackendChoice, CancelHandle, EngineConfig, Pipe, Request, Transfer};
use opipe::protocol::dcerpc::{CommonHeader, PFC_FIRST_FRAG, PFC_LAST_FRAG, PTYPE_REQUEST};
use opipe::protocol::NtStatus;

const OPIPE: &str = env!("CARGO_BIN_EXE_opipe");

/// The engine configurations every test runs on (the io_uring engine
/// today; a second backend is one more element here).
/// Each test sets `dir` to its own temp dir.
fn engine_configs() -> Vec<EngineConfig> {
    [BackendChoice::IoUring, BackendChoice::Epoll]
        .into_iter()
        .map(|backend| {
            let mut cfg = EngineConfig::new(PathBuf::new());
            cfg.open_timeout = Duration::from_secs(2);
            cfg.backend = backend;
            cfg
        })
        .collect()
}

/// One test at a time in this binary: descriptor counts are per process.
fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// Waits (bounded) until the descriptor count is back to `base`: service
/// threads and ring threads let go of theirs shortly after the last drop.
fn assert_fds_back_to(base: usize) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while fd_count() > base && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(fd_count(), base, "descriptors leaked");
}

use opipe::rng::SplitMix64 as Rng;

/// Whether a request has finished, without consuming it: one poll with a
/// waker that does nothing.
fn is_finished<T>(r: &mut Request<T>) -> bool {
    struct Nothing;
    impl Wake for Nothing {
        fn wake(self: Arc<Self>) {}
    }
    let waker = Waker::from(Arc::new(Nothing));
    let mut cx = Context::from_waker(&waker);
    // A finished request hands its result to this poll, so only ask about
    // requests the test then no longer waits for, or assert Pending.
    matches!(std::pin::Pin::new(r).poll(&mut cx), Poll::Ready(_))
}

/// An `opipe serve` child process; killed and reaped when dropped.
struct ServeChild {
    child: Option<Child>,
}

impl ServeChild {
    /// Starts `opipe serve --dir DIR --pipe NAME --handler HANDLER` and
    /// waits until its socket accepts (a stale socket file from a killed
    /// predecessor refuses connections until the new service replaced it).
    fn start(dir: &Path, name: &str, handler: &str) -> ServeChild {
        let mut cmd = Command::new(OPIPE);
        cmd.arg("serve")
            .arg("--dir")
            .arg(dir)
            .args(["--pipe", name, "--handler", handler])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // SAFETY: runs in the forked child before exec; one async-signal-safe
        // system call, no memory of the parent touched. The child then dies
        // with the thread that started it, should this test not clean up.
        unsafe {
            use std::os::unix::process::CommandExt;
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong);
                Ok(())
            });
        }
        let mut s = ServeChild {
            child: Some(cmd.spawn().expect("start opipe serve")),
        };
        let path = dir.join(name);
        let begin = Instant::now();
        loop {
            if let Some(st) = s.child.as_mut().and_then(|c| c.try_wait().unwrap()) {
                panic!("opipe serve exited at start: {st}");
            }
            if UnixStream::connect(&path).is_ok() {
                return s;
            }
            assert!(
                begin.elapsed() < Duration::from_secs(10),
                "opipe serve never accepted on {}",
                path.display()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// SIGKILL, then reap.
    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for ServeChild {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A listener that accepts every connection and never says a word (the
/// accepted sockets are held until it is dropped).
struct Mute {
    stop: Arc<AtomicBool>,
    accepted: Arc<AtomicU32>,
    thread: Option<std::thread::JoinHandle<()>>,
    path: PathBuf,
}

impl Mute {
    fn spawn(dir: &Path, name: &str) -> Mute {
        let path = dir.join(name);
        let l = UnixListener::bind(&path).unwrap();
        l.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let accepted = Arc::new(AtomicU32::new(0));
        let (stop2, acc2) = (stop.clone(), accepted.clone());
        let thread = std::thread::spawn(move || {
            let mut held = Vec::new();
            while !stop2.load(Ordering::SeqCst) {
                match l.accept() {
                    Ok((s, _)) => {
                        acc2.fetch_add(1, Ordering::SeqCst);
                        held.push(s);
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(1)),
                }
            }
        });
        Mute {
            stop,
            accepted,
            thread: Some(thread),
            path,
        }
    }
}

impl Drop for Mute {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The first 16 bytes of a DCE/RPC request PDU announcing 1000 bytes: the
/// dcerpc handler waits for the other 984, so a transceive of this stays
/// in flight until the service dies.
fn partial_pdu(call_id: u32) -> Vec<u8> {
    CommonHeader::new(PTYPE_REQUEST, PFC_FIRST_FRAG | PFC_LAST_FRAG, 1000, call_id)
        .encode()
        .to_vec()
}

fn is_pipe_gone(s: NtStatus) -> bool {
    s == NtStatus::PIPE_BROKEN || s == NtStatus::PIPE_DISCONNECTED
}

#[test]
fn service_process_killed_with_requests_in_flight() {
    let _serial = serial();
    bounded(Duration::from_secs(90), || {
        raise_nofile();
        const PIPES: usize = 200;
        for mut cfg in engine_configs() {
            let dir = tempfile::tempdir().unwrap();
            cfg.dir = dir.path().to_owned();
            let base = fd_count();
            let mut svc = ServeChild::start(dir.path(), "srvsvc", "dcerpc");
            let Some(eng) = start_engine(cfg) else {
                continue;
            };
            let opens: Vec<_> = (0..PIPES)
                .map(|i| eng.open("\\PIPE\\srvsvc", user(i as u64 % 4), None))
                .collect();
            let pipes: Vec<Pipe> = opens.into_iter().map(|r| r.wait().expect("open")).collect();

            // Half the requests are futures, half ring-thread callbacks that
            // count how often they run: each must end exactly once.
            let mut futures = Vec::new();
            let calls: Arc<Vec<AtomicU32>> =
                Arc::new((0..PIPES).map(|_| AtomicU32::new(0)).collect());
            let (tx, rx) = mpsc::channel();
            for (i, p) in pipes.iter().enumerate() {
                if i % 2 == 0 {
                    futures.push(p.transceive(partial_pdu(i as u32), 4280));
                } else {
                    let (calls, tx) = (calls.clone(), tx.clone());
                    p.transceive_with(partial_pdu(i as u32), 4280, move |_, res| {
                        calls[i].fetch_add(1, Ordering::SeqCst);
                        let _ = tx.send((i, res.map(|t| t.data.len())));
                    });
                }
            }
            drop(tx);
            // Give every chain time to reach its RECV; none may finish.
            std::thread::sleep(Duration::from_millis(300));
            for f in &mut futures {
                assert!(!is_finished(f), "a partial PDU got an answer");
            }
            assert!(rx.try_recv().is_err(), "a partial PDU got an answer");

            let killed = Instant::now();
            svc.kill();
            for f in futures {
                let r = f.wait();
                assert!(matches!(r, Err(s) if is_pipe_gone(s)), "{r:?}");
            }
            let mut ended = 0;
            while let Ok((i, r)) = rx.recv_timeout(Duration::from_secs(10)) {
                assert!(matches!(r, Err(s) if is_pipe_gone(s)), "pipe {i}: {r:?}");
                ended += 1;
                if ended == PIPES / 2 {
                    break;
                }
            }
            assert_eq!(ended, PIPES / 2, "callbacks never ran");
            let took = killed.elapsed();
            assert!(
                took < Duration::from_secs(5),
                "requests ended late: {took:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
            for (i, c) in calls.iter().enumerate().filter(|(i, _)| i % 2 == 1) {
                assert_eq!(c.load(Ordering::SeqCst), 1, "callback of pipe {i}");
            }

            // Later operations on the dead pipes fail cleanly and at once.
            for p in &pipes {
                let r = p.transceive(b"again".to_vec(), 100).wait();
                assert!(matches!(r, Err(s) if is_pipe_gone(s)), "{r:?}");
                let r = p.read(100).wait();
                assert!(matches!(r, Err(s) if is_pipe_gone(s)), "{r:?}");
                let r = p.write(b"w".to_vec()).wait();
                assert!(matches!(r, Err(s) if is_pipe_gone(s)), "{r:?}");
            }
            // Nobody listens on the stale socket file now.
            assert_eq!(
                eng.open("srvsvc", user(1), None).wait().unwrap_err(),
                NtStatus::OBJECT_NAME_NOT_FOUND
            );
            for p in pipes {
                p.close().wait().expect("close a dead pipe");
            }

            // The service comes back on the same dir and name.
            let _svc2 = ServeChild::start(dir.path(), "srvsvc", "echo");
            let fresh: Vec<Pipe> = (0..20)
                .map(|_| eng.open("srvsvc", user(1), None).wait().expect("reopen"))
                .collect();
            for (i, p) in fresh.iter().enumerate() {
                let msg = format!("after restart {i}").into_bytes();
                let t = p.transceive(msg.clone(), 4280).wait().unwrap();
                assert_eq!(t.data, msg);
            }
            drop(fresh);
            drop(eng);
            drop(_svc2);
            drop(svc);
            assert_fds_back_to(base);
        }
    });
}

#[test]
fn silent_handshake_ends_at_the_open_deadline() {
    let _serial = serial();
    bounded(Duration::from_secs(60), || {
        raise_nofile();
        const OPENS: usize = 500;
        let deadline = Duration::from_millis(700);
        for mut cfg in engine_configs() {
            let dir = tempfile::tempdir().unwrap();
            let base = fd_count();
            let mute = Mute::spawn(dir.path(), "netlogon");
            cfg.dir = dir.path().to_owned();
            cfg.open_timeout = deadline;
            let Some(eng) = start_engine(cfg) else {
                continue;
            };
            // One alone.
            let t0 = Instant::now();
            let r = eng.open("netlogon", user(1), None).wait();
            assert_eq!(r.unwrap_err(), NtStatus::PIPE_NOT_AVAILABLE);
            let took = t0.elapsed();
            assert!(took >= deadline - Duration::from_millis(50), "{took:?}");
            assert!(took < deadline + Duration::from_secs(1), "{took:?}");

            // Many at once, each waited for on its own thread so that each
            // end is timed where it happens.
            let t0 = Instant::now();
            let opens: Vec<_> = (0..OPENS)
                .map(|i| eng.open("netlogon", user(i as u64), None))
                .collect();
            let ends: Vec<(Result<(), NtStatus>, Duration)> = std::thread::scope(|s| {
                let hs: Vec<_> = opens
                    .into_iter()
                    .map(|r| {
                        s.spawn(move || {
                            let r = r.wait().map(|_| ());
                            (r, t0.elapsed())
                        })
                    })
                    .collect();
                hs.into_iter().map(|h| h.join().unwrap()).collect()
            });
            let slowest = ends.iter().map(|e| e.1).max().unwrap();
            for (r, _) in &ends {
                assert_eq!(*r, Err(NtStatus::PIPE_NOT_AVAILABLE));
            }
            assert!(
                slowest < deadline + Duration::from_secs(2),
                "slowest open ended after {slowest:?}"
            );
            assert!(mute.accepted.load(Ordering::SeqCst) >= 1);
            eprintln!(
                "{OPENS} silent opens: all PIPE_NOT_AVAILABLE, slowest after {slowest:?} (deadline {deadline:?}), {} accepted",
                mute.accepted.load(Ordering::SeqCst)
            );
            drop(eng);
            drop(mute);
            assert_fds_back_to(base);
        }
    });
}

/// One request record: a 16-byte header (magic, pipe, seq, length) and a
/// body derived from (pipe, seq), so any reply says whose it is.
fn record(magic: &[u8; 4], pipe: u32, seq: u32, len: usize) -> Vec<u8> {
    assert!(len >= 16);
    let mut v = Vec::with_capacity(len);
    v.extend_from_slice(magic);
    v.extend_from_slice(&pipe.to_le_bytes());
    v.extend_from_slice(&seq.to_le_bytes());
    v.extend_from_slice(&(len as u32).to_le_bytes());
    let mut rng = Rng::new(u64::from(pipe) << 32 | u64::from(seq) | u64::from(magic[0]) << 56);
    while v.len() < len {
        v.push(rng.next_u64() as u8);
    }
    v
}

/// Waits for `r`, failing the test (not hanging it) after 20 s.
fn wait_or_hung<T>(r: Request<T>, what: impl std::fmt::Display) -> Result<T, NtStatus> {
    let t0 = Instant::now();
    let res = r.wait_timeout(Duration::from_secs(20));
    assert!(t0.elapsed() < Duration::from_secs(20), "hung: {what}");
    res
}

/// The records in `b`, for failure messages.
fn describe(b: &[u8]) -> String {
    let mut out = String::new();
    let mut at = 0;
    while at + 16 <= b.len() {
        let f = |o: usize| u32::from_le_bytes(b[at + o..at + o + 4].try_into().unwrap());
        out += &format!(
            "[{} pipe {} seq {} len {}]",
            String::from_utf8_lossy(&b[at..at + 4]),
            f(4),
            f(8),
            f(12)
        );
        at += (f(12) as usize).max(16);
    }
    out
}

/// Receives on `p` until `got` ends with `want` (bounded).
fn read_until_suffix(p: &Pipe, got: &mut Vec<u8>, want: &[u8]) {
    let mut reads = 0;
    while !got.ends_with(want) {
        assert!(got.len() < 64 * 1024, "runaway stream: {} bytes", got.len());
        reads += 1;
        assert!(reads < 100, "reply never completed");
        let more = wait_or_hung(
            p.read(4280),
            format_args!(
                "read after {} bytes {}, want {}",
                got.len(),
                describe(got),
                describe(want)
            ),
        )
        .expect("read the rest");
        got.extend_from_slice(&more);
    }
}

/// An echo service that waits a small random time before each answer.
fn jittery_echo() -> ConnFn {
    let seeds = Arc::new(AtomicU64::new(7));
    Arc::new(move |mut s: UnixStream| {
        let mut rng = Rng::new(seeds.fetch_add(1, Ordering::Relaxed));
        let mut buf = vec![0u8; 65536];
        loop {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    match rng.below(4) {
                        0 => {}
                        1 => std::thread::yield_now(),
                        _ => std::thread::sleep(Duration::from_micros(rng.below(300))),
                    }
                    if s.write_all(&buf[..n]).is_err() {
                        return;
                    }
                }
            }
        }
    })
}

/// How many requests the cancel race runs (`OPIPE_FAULTS_CANCELS`, default
/// 10 000; smaller under valgrind).
fn cancel_race_count() -> usize {
    std::env::var("OPIPE_FAULTS_CANCELS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000)
}

/// What the cancel race does with a pipe whose request was cancelled.
#[derive(Clone, Copy, PartialEq, Eq)]
enum AfterCancel {
    /// Keep using it: drain a late reply with a marker request.
    Reuse,
    /// Close it and open a fresh one.
    Reopen,
}

#[test]
fn cancels_race_completions() {
    let _serial = serial();
    bounded(Duration::from_secs(240), || cancel_race(AfterCancel::Reuse));
}

#[test]
fn cancels_race_completions_reopening_cancelled_pipes() {
    let _serial = serial();
    bounded(Duration::from_secs(240), || {
        cancel_race(AfterCancel::Reopen)
    });
}

/// `OPIPE_FAULTS_CANCELS` requests (default 10 000) on 50 pipes, each
/// cancelled from another thread at a random moment while a jittery echo
/// answers at random moments: every request ends exactly once, Ok with its
/// own bytes or `STATUS_CANCELLED`; the pipes work afterwards; no fd stays.
fn cancel_race(after: AfterCancel) {
    const PIPES: usize = 50;
    const WORKERS: usize = 5;
    let total = cancel_race_count();
    let rounds = total.div_ceil(PIPES);
    for mut cfg in engine_configs() {
        let dir = tempfile::tempdir().unwrap();
        let base = fd_count();
        let svc = Scripted::spawn(dir.path(), "wkssvc", Handshake::Accept, jittery_echo());
        cfg.dir = dir.path().to_owned();
        let Some(eng) = start_engine(cfg) else {
            continue;
        };
        // The canceller: each handle is cancelled at its own random
        // moment (from 0 to 400 us after the request started).
        let (ctx, crx) = mpsc::channel::<(CancelHandle, Instant)>();
        let canceller = std::thread::spawn(move || {
            let mut n = 0u64;
            for (h, at) in crx {
                let now = Instant::now();
                if at > now {
                    std::thread::sleep(at - now);
                }
                h.cancel();
                n += 1;
            }
            n
        });

        let ok = AtomicU64::new(0);
        let cancelled = AtomicU64::new(0);
        let late = AtomicU64::new(0);
        let pipes: Vec<(u32, Pipe)> = std::thread::scope(|s| {
            let workers: Vec<_> = (0..WORKERS)
                .map(|w| {
                    let mut mine: Vec<(u32, Pipe)> = (0..PIPES as u32)
                        .filter(|i| *i as usize % WORKERS == w)
                        .map(|i| (i, eng.open("wkssvc", user(1), None).wait().expect("open")))
                        .collect();
                    let ctx = ctx.clone();
                    let (ok, cancelled, late, eng) = (&ok, &cancelled, &late, &eng);
                    s.spawn(move || {
                        let mut rng = Rng::new(w as u64 + 1);
                        for seq in 0..rounds as u32 {
                            let reqs: Vec<(Vec<u8>, Request<Transfer>)> = mine
                                .iter()
                                .map(|(i, p)| {
                                    let rec =
                                        record(b"REQ1", *i, seq, 16 + rng.below(200) as usize);
                                    let r = p.transceive(rec.clone(), 4280);
                                    let at = Instant::now() + Duration::from_micros(rng.below(400));
                                    ctx.send((r.cancel_handle(), at)).unwrap();
                                    (rec, r)
                                })
                                .collect();
                            let mut to_drain = Vec::new();
                            for (k, (rec, r)) in reqs.into_iter().enumerate() {
                                let (i, p) = (&mine[k].0, &mine[k].1);
                                match wait_or_hung(r, format_args!("pipe {i} seq {seq}")) {
                                    Ok(t) => {
                                        assert_eq!(t.status, NtStatus::SUCCESS);
                                        let mut got = t.data;
                                        if got.len() < rec.len() && rec.starts_with(&got) {
                                            read_until_suffix(p, &mut got, &rec);
                                        }
                                        assert_eq!(got, rec, "pipe {i} seq {seq}: wrong reply");
                                        ok.fetch_add(1, Ordering::Relaxed);
                                    }
                                    Err(NtStatus::CANCELLED) => {
                                        cancelled.fetch_add(1, Ordering::Relaxed);
                                        to_drain.push((k, rec));
                                    }
                                    Err(e) => panic!("pipe {i} seq {seq}: {e}"),
                                }
                            }
                            if after == AfterCancel::Reopen {
                                for (k, _) in to_drain {
                                    let fresh = eng.open("wkssvc", user(1), None);
                                    let fresh = wait_or_hung(fresh, "reopen").expect("reopen");
                                    let old = std::mem::replace(&mut mine[k].1, fresh);
                                    wait_or_hung(old.close(), "close").expect("close");
                                }
                                continue;
                            }
                            // A cancelled request may have reached the
                            // service: its reply would come before the next
                            // one. A marker request (never cancelled) shows
                            // where the stream is clean again.
                            let marks: Vec<_> = to_drain
                                .into_iter()
                                .map(|(k, rec)| {
                                    let m = record(b"MRK1", mine[k].0, seq, 24);
                                    (k, rec, m.clone(), mine[k].1.transceive(m, 4280))
                                })
                                .collect();
                            for (k, rec, m, r) in marks {
                                let mut got = wait_or_hung(r, format_args!("marker seq {seq}"))
                                    .expect("marker transceive")
                                    .data;
                                read_until_suffix(&mine[k].1, &mut got, &m);
                                let before = &got[..got.len() - m.len()];
                                if before == rec.as_slice() {
                                    late.fetch_add(1, Ordering::Relaxed);
                                } else {
                                    assert!(
                                        before.is_empty(),
                                        "unexpected {} bytes before the marker",
                                        before.len()
                                    );
                                }
                            }
                        }
                        mine
                    })
                })
                .collect();
            workers
                .into_iter()
                .flat_map(|h| h.join().unwrap())
                .collect()
        });
        drop(ctx);
        let cancels_sent = canceller.join().unwrap();
        let (ok, cancelled, late) = (ok.into_inner(), cancelled.into_inner(), late.into_inner());
        eprintln!(
            "cancel race: {} requests, {ok} answered, {cancelled} cancelled ({late} late replies drained), {cancels_sent} cancels sent",
            rounds * PIPES
        );
        assert_eq!(
            ok + cancelled,
            (rounds * PIPES) as u64,
            "a request ended twice or never"
        );
        assert_eq!(cancels_sent, (rounds * PIPES) as u64);
        // Every pipe still works and answers its own bytes.
        for (i, p) in &pipes {
            let rec = record(b"FIN1", *i, 0, 100);
            let t = wait_or_hung(p.transceive(rec.clone(), 4280), "final").unwrap();
            assert_eq!(t.data, rec);
        }
        drop(pipes);
        drop(eng);
        drop(svc);
        assert_fds_back_to(base);
    }
}

/// The child half of [`open_file_limit_fails_cleanly`]: runs with a low
/// RLIMIT_NOFILE in its own process.
fn open_file_limit_child() {
    let dir = tempfile::tempdir().unwrap();
    let _svc = ServeChild::start(dir.path(), "samr", "echo");
    for mut cfg in engine_configs() {
        cfg.dir = dir.path().to_owned();
        let Some(eng) = start_engine(cfg) else {
            continue;
        };
        // Room for about 40 more descriptors than are open now.
        let highest = std::fs::read_dir("/proc/self/fd")
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u64>().ok())
            .max()
            .unwrap();
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: plain getrlimit/setrlimit on a local struct.
        unsafe {
            assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim), 0);
            lim.rlim_cur = highest + 41;
            assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &lim), 0);
        }
        let mut pipes = Vec::new();
        let failure = loop {
            assert!(pipes.len() < 1000, "the limit was never hit");
            match eng.open("samr", user(1), None).wait() {
                Ok(p) => pipes.push(p),
                Err(s) => break s,
            }
        };
        eprintln!("limit hit after {} pipes: {failure}", pipes.len());
        assert!(
            failure == NtStatus::TOO_MANY_OPENED_FILES || failure == NtStatus::PIPE_NOT_AVAILABLE,
            "{failure}"
        );
        assert!(pipes.len() >= 20, "only {} pipes opened", pipes.len());
        // Still at the limit: fails again, the same clean way.
        let again = eng.open("samr", user(1), None).wait().unwrap_err();
        assert!(
            again == NtStatus::TOO_MANY_OPENED_FILES || again == NtStatus::PIPE_NOT_AVAILABLE,
            "{again}"
        );
        // Existing pipes still work at the limit.
        let t = pipes[0]
            .transceive(b"at the limit".to_vec(), 100)
            .wait()
            .unwrap();
        assert_eq!(t.data, b"at the limit");
        for p in pipes.drain(..10) {
            p.close().wait().unwrap();
        }
        for i in 0..5u8 {
            let p = eng
                .open("samr", user(1), None)
                .wait()
                .expect("open after closing some");
            let t = p.transceive(vec![i; 10], 100).wait().unwrap();
            assert_eq!(t.data, vec![i; 10]);
            pipes.push(p);
        }
    }
}

const CHILD_MARKER: &str = "OPIPE_FAULTS_CHILD";

#[test]
fn open_file_limit_fails_cleanly() {
    if std::env::var_os(CHILD_MARKER).is_some() {
        return bounded(Duration::from_secs(60), open_file_limit_child);
    }
    let _serial = serial();
    bounded(Duration::from_secs(90), || {
        // The limit is lowered in a child (this same test binary), so the
        // test runner's own process keeps its descriptors.
        let out = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "open_file_limit_fails_cleanly",
                "--test-threads",
                "1",
                "--nocapture",
            ])
            .env(CHILD_MARKER, "1")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        eprintln!("{text}");
        assert!(out.status.success(), "child failed: {}", out.status);
        assert!(text.contains("1 passed"), "the child ran no test");
    });
}

#[test]
fn session_disconnect_with_thousands_in_flight() {
    let _serial = serial();
    bounded(Duration::from_secs(120), || {
        raise_nofile();
        const PER_SESSION: usize = 1000;
        for mut cfg in engine_configs() {
            let dir = tempfile::tempdir().unwrap();
            let base = fd_count();
            let svc = Scripted::spawn(dir.path(), "lsarpc", Handshake::Accept, hang_or_echo());
            cfg.dir = dir.path().to_owned();
            let Some(eng) = start_engine(cfg) else {
                continue;
            };
            let mut sessions: Vec<Vec<Pipe>> = Vec::new();
            for session in 1..=3u64 {
                let opens: Vec<_> = (0..PER_SESSION)
                    .map(|_| eng.open("lsarpc", user(session), None))
                    .collect();
                sessions.push(opens.into_iter().map(|r| r.wait().expect("open")).collect());
            }
            // 3000 requests the service swallows: all stay in flight.
            let mut reqs: Vec<Vec<Request<Transfer>>> = sessions
                .iter()
                .map(|ps| {
                    ps.iter()
                        .map(|p| p.transceive(b"H.".to_vec(), 512))
                        .collect()
                })
                .collect();
            std::thread::sleep(Duration::from_millis(300));
            let t0 = Instant::now();
            eng.disconnect_session(2).wait().unwrap();
            for r in reqs.remove(1) {
                assert_eq!(r.wait().unwrap_err(), NtStatus::CANCELLED);
            }
            let took = t0.elapsed();
            assert!(took < Duration::from_secs(5), "disconnect took {took:?}");
            // Session 2's pipes are closed; sessions 1 and 3 untouched.
            for p in &sessions[1] {
                let r = p.transceive(b"x".to_vec(), 10).wait();
                assert!(
                    matches!(
                        r,
                        Err(NtStatus::INVALID_HANDLE) | Err(NtStatus::FILE_CLOSED)
                    ),
                    "{r:?}"
                );
            }
            for rs in &mut reqs {
                for r in rs.iter_mut() {
                    assert!(!is_finished(r), "another session's request ended");
                }
            }
            for rs in reqs {
                for r in &rs {
                    r.cancel();
                }
                for r in rs {
                    assert_eq!(r.wait().unwrap_err(), NtStatus::CANCELLED);
                }
            }
            for ps in [&sessions[0], &sessions[2]] {
                let rs: Vec<_> = ps
                    .iter()
                    .enumerate()
                    .map(|(i, p)| {
                        let m = format!("still here {i}").into_bytes();
                        (m.clone(), p.transceive(m, 512))
                    })
                    .collect();
                for (m, r) in rs {
                    assert_eq!(r.wait().unwrap().data, m);
                }
            }
            // New opens for the disconnected session work again.
            let p = eng
                .open("lsarpc", user(2), None)
                .wait()
                .expect("open after disconnect");
            assert_eq!(
                p.transceive(b"new".to_vec(), 10).wait().unwrap().data,
                b"new"
            );
            drop(p);
            drop(sessions);
            drop(eng);
            drop(svc);
            assert_fds_back_to(base);
        }
    });
}
