//! Test helpers: scripted pipe services over real AF_UNIX sockets in temp
//! dirs, written with std threads so they can misbehave on purpose.
#![allow(dead_code)]

pub mod child;
pub mod client;
pub mod peer;
pub mod samba;
pub mod seccomp;
#[cfg(feature = "smb2")]
pub mod smb2;
pub mod smbd;

/// Runs each listed test once per backend, as `uring::NAME` and
/// `epoll::NAME`; each takes the `BackendChoice` to start its service on.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod uring {
            $(#[test]
            fn $name() {
                super::$name(opipe::service::BackendChoice::IoUring)
            })*
        }
        mod epoll {
            $(#[test]
            fn $name() {
                super::$name(opipe::service::BackendChoice::Epoll)
            })*
        }
    };
}

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use opipe::protocol::{NetUserInfo, PipeHeader, MAX_UILEN};

/// How the scripted service answers the open handshake.
#[derive(Clone, Copy, Debug)]
pub enum Handshake {
    /// Status 0.
    Accept,
    /// This status word.
    Status(u32),
    /// Read the request, never answer (until the client goes away).
    Silent,
    /// Answer 2 of the 4 status bytes, then close.
    Partial,
    /// Wait, then accept.
    Delay(Duration),
}

pub type ConnFn = Arc<dyn Fn(UnixStream) + Send + Sync>;

/// A scripted service listening on `<dir>/<name>`.
pub struct Scripted {
    pub path: PathBuf,
    stop: Arc<AtomicBool>,
    pub accepted: Arc<AtomicUsize>,
    thread: Option<JoinHandle<()>>,
}

impl Scripted {
    pub fn spawn(dir: &Path, name: &str, hs: Handshake, conn: ConnFn) -> Scripted {
        let path = dir.join(name);
        let listener = UnixListener::bind(&path).expect("bind scripted service");
        listener.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let accepted = Arc::new(AtomicUsize::new(0));
        let (stop2, acc2) = (stop.clone(), accepted.clone());
        let thread = std::thread::spawn(move || {
            while !stop2.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((s, _)) => {
                        acc2.fetch_add(1, Ordering::SeqCst);
                        s.set_nonblocking(false).unwrap();
                        let conn = conn.clone();
                        std::thread::Builder::new()
                            .stack_size(128 * 1024)
                            .spawn(move || serve_one(s, hs, conn))
                            .unwrap();
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(2)),
                }
            }
        });
        Scripted {
            path,
            stop,
            accepted,
            thread: Some(thread),
        }
    }
}

impl Drop for Scripted {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

fn serve_one(mut s: UnixStream, hs: Handshake, conn: ConnFn) {
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut hdr = [0u8; 8];
    if s.read_exact(&mut hdr).is_err() {
        return;
    }
    let h = PipeHeader::decode(&hdr);
    if h.check().is_err() || h.uilen > MAX_UILEN {
        return;
    }
    let mut ui = vec![0u8; h.uilen as usize];
    if s.read_exact(&mut ui).is_err() || NetUserInfo::decode(&ui).is_err() {
        return;
    }
    match hs {
        Handshake::Accept => {}
        Handshake::Status(st) => {
            let _ = s.write_all(&st.to_le_bytes());
            return;
        }
        Handshake::Silent => {
            let mut b = [0u8; 1];
            let _ = s.read(&mut b); // until the client closes
            return;
        }
        Handshake::Partial => {
            let _ = s.write_all(&[0, 0]);
            return;
        }
        Handshake::Delay(d) => std::thread::sleep(d),
    }
    if s.write_all(&0u32.to_le_bytes()).is_err() {
        return;
    }
    s.set_read_timeout(None).unwrap();
    conn(s);
}

/// Echoes every read back.
pub fn echo() -> ConnFn {
    slow_echo(Duration::ZERO)
}

/// Echoes every read back after `delay`.
pub fn slow_echo(delay: Duration) -> ConnFn {
    logged_echo(delay, None)
}

/// Echoes every read back after `delay`, appending what it echoed to
/// `log` when given.
pub fn logged_echo(delay: Duration, log: Option<Arc<Mutex<Vec<u8>>>>) -> ConnFn {
    Arc::new(move |mut s: UnixStream| {
        let mut buf = vec![0u8; 65536];
        loop {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if !delay.is_zero() {
                        std::thread::sleep(delay);
                    }
                    if s.write_all(&buf[..n]).is_err() {
                        return;
                    }
                    if let Some(log) = &log {
                        log.lock().unwrap().extend_from_slice(&buf[..n]);
                    }
                }
            }
        }
    })
}

/// Whether `e` says only that io_uring is refused on this machine (the one
/// reason a test may skip its io_uring half): never for the epoll backend.
pub fn io_uring_refused(
    backend: opipe::engine::BackendChoice,
    e: &opipe::engine::EngineError,
) -> bool {
    use opipe::ring::RingError;
    backend != opipe::engine::BackendChoice::Epoll
        && matches!(
            e,
            opipe::engine::EngineError::Ring(
                RingError::Unavailable { .. } | RingError::MissingOpcode { .. }
            )
        )
}

/// With `OPIPE_TEST_REFUSE_IO_URING=1`, makes `io_uring_setup` fail with
/// EPERM in the whole test process (a seccomp filter, once), so the suite
/// runs as on a machine where io_uring is refused: every io_uring half must
/// then say SKIPPED and every epoll half still run.
pub fn maybe_refuse_io_uring() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    if std::env::var_os("OPIPE_TEST_REFUSE_IO_URING").is_some_and(|v| v == "1") {
        ONCE.call_once(|| {
            seccomp::refuse_io_uring_here().expect("install the seccomp filter");
            eprintln!("OPIPE_TEST_REFUSE_IO_URING=1: io_uring_setup refused in this process");
        });
    }
}

/// Starts an engine, or says loudly why the kernel cannot run it (`None`:
/// io_uring refused here, for an io_uring engine only; any other error
/// fails the test).
pub fn start_engine(cfg: opipe::engine::EngineConfig) -> Option<opipe::engine::Engine> {
    maybe_refuse_io_uring();
    let backend = cfg.backend;
    match opipe::engine::Engine::new(cfg) {
        Ok(e) => Some(e),
        Err(e) if io_uring_refused(backend, &e) => {
            eprintln!("SKIPPED (the {backend:?} half only): {e}");
            None
        }
        Err(e) => panic!("engine on {backend:?}: {e}"),
    }
}

/// The test byte pattern: byte i is i % 251.
pub fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

/// Answers the FIRST request with `pattern(total)`, written in
/// `piece`-byte pieces with `pause` after each (so the socket is often
/// empty when the client asks), then only reads until the client goes.
pub fn one_reply(total: usize, piece: usize, pause: Duration) -> ConnFn {
    Arc::new(move |mut s: UnixStream| {
        let reply = pattern(total);
        let mut buf = vec![0u8; 4096];
        if !matches!(s.read(&mut buf), Ok(n) if n > 0) {
            return;
        }
        for part in reply.chunks(piece.max(1)) {
            if s.write_all(part).is_err() {
                return;
            }
            if !pause.is_zero() {
                std::thread::sleep(pause);
            }
        }
        while matches!(s.read(&mut buf), Ok(n) if n > 0) {}
    })
}

/// For each request (any read), answers `reply_len` bytes of a pattern
/// (byte i = i % 251) in ONE write.
pub fn big_reply(reply_len: usize) -> ConnFn {
    Arc::new(move |mut s: UnixStream| {
        let reply = pattern(reply_len);
        let mut buf = vec![0u8; 65536];
        loop {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(_) => {
                    if s.write_all(&reply).is_err() {
                        return;
                    }
                }
            }
        }
    })
}

/// Requests whose first byte is b'H' are swallowed (never answered);
/// everything else is echoed. Requests are assumed to arrive one per read.
pub fn hang_or_echo() -> ConnFn {
    Arc::new(|mut s: UnixStream| {
        let mut buf = vec![0u8; 65536];
        loop {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    // A hang request may be followed in the same read by an echo one.
                    let mut data = &buf[..n];
                    while data.first() == Some(&b'H') {
                        let cut = data
                            .iter()
                            .position(|&b| b == b'.')
                            .map_or(data.len(), |p| p + 1);
                        data = &data[cut..];
                    }
                    if !data.is_empty() && s.write_all(data).is_err() {
                        return;
                    }
                }
            }
        }
    })
}

/// Sends `first` right after the handshake, then behaves like `echo`.
pub fn unsolicited(first: Vec<u8>) -> ConnFn {
    let e = echo();
    Arc::new(move |mut s: UnixStream| {
        if s.write_all(&first).is_ok() {
            e(s)
        }
    })
}

/// Reads one request, answers `half` bytes of a longer reply, closes.
pub fn close_mid_reply(half: usize) -> ConnFn {
    Arc::new(move |mut s: UnixStream| {
        let mut buf = vec![0u8; 4096];
        if let Ok(n) = s.read(&mut buf) {
            if n > 0 {
                let _ = s.write_all(&vec![0x42u8; half]);
            }
        }
        let _ = s.shutdown(std::net::Shutdown::Both);
    })
}

pub fn user(session: u64) -> NetUserInfo {
    NetUserInfo {
        session_id: session,
        domain: "WORKGROUP".into(),
        account: "tester".into(),
        workstation: "client1".into(),
        ..Default::default()
    }
}

/// Open descriptors of this process.
pub fn fd_count() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Raises RLIMIT_NOFILE's soft limit to the hard limit.
pub fn raise_nofile() -> u64 {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut r);
        r.rlim_cur = r.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &r);
    }
    r.rlim_cur
}

/// Runs `f` in a thread and fails the test if it takes longer than `limit`.
pub fn bounded<T: Send + 'static>(limit: Duration, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(limit)
        .expect("test body exceeded its time bound")
}

/// `BIN serve --dir DIR ARGS` (`bin`: the test's `CARGO_BIN_EXE_opipe`),
/// no stdin or stdout, stderr piped for [`spawn_with_stderr_lines`].
pub fn serve_command(bin: &str, dir: &Path, args: &[&str]) -> std::process::Command {
    let mut cmd = std::process::Command::new(bin);
    cmd.arg("serve")
        .arg("--dir")
        .arg(dir)
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    cmd
}

/// Waits for `child` to exit, failing the test after `limit`.
pub fn wait_exit(child: &mut std::process::Child, limit: Duration) -> std::process::ExitStatus {
    let end = std::time::Instant::now() + limit;
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return st;
        }
        assert!(std::time::Instant::now() < end, "the child did not exit");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Spawns `cmd` (its stderr must be piped) and forwards its stderr lines
/// through the receiver, so a test can wait for a banner with a timeout.
pub fn spawn_with_stderr_lines(
    cmd: &mut std::process::Command,
) -> (std::process::Child, std::sync::mpsc::Receiver<String>) {
    use std::io::BufRead;
    let mut child = cmd.spawn().expect("spawn");
    let err = child.stderr.take().expect("stderr piped");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(err).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    (child, rx)
}

/// A listener that never accepts, with its backlog full: a connect to it
/// then never completes (issue 12, item 1). Dropping it closes everything.
pub struct FullBacklog {
    _listener: UnixListener,
    _fillers: Vec<std::os::fd::OwnedFd>,
}

/// Binds `path` with `listen(1)` and connects nonblocking sockets until the
/// kernel refuses one with `EAGAIN` (the queue is full).
pub fn full_backlog(path: &Path) -> FullBacklog {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    use std::os::unix::ffi::OsStrExt;
    let listener = UnixListener::bind(path).expect("bind");
    // SAFETY: listen(2) on a descriptor we own.
    let rc = unsafe { libc::listen(listener.as_raw_fd(), 1) };
    assert_eq!(rc, 0, "listen(1)");
    // SAFETY: sockaddr_un is plain data; all-zero is valid.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    let bytes = path.as_os_str().as_bytes();
    assert!(bytes.len() < addr.sun_path.len(), "socket path too long");
    for (d, s) in addr.sun_path.iter_mut().zip(bytes) {
        *d = *s as libc::c_char;
    }
    let mut fillers = Vec::new();
    for _ in 0..64 {
        // SAFETY: plain syscall; the new descriptor is owned at once below.
        let raw = unsafe {
            libc::socket(
                libc::AF_UNIX,
                libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                0,
            )
        };
        assert!(raw >= 0, "socket");
        // SAFETY: `raw` is a fresh descriptor nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: `addr` is a valid sockaddr_un of the given size.
        let rc = unsafe {
            libc::connect(
                fd.as_raw_fd(),
                (&addr as *const libc::sockaddr_un).cast(),
                std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            let e = std::io::Error::last_os_error().raw_os_error();
            assert_eq!(e, Some(libc::EAGAIN), "a full backlog refuses with EAGAIN");
            return FullBacklog {
                _listener: listener,
                _fillers: fillers,
            };
        }
        fillers.push(fd);
    }
    panic!("the backlog never filled");
}

/// One poll of a request with a waker that does nothing: its result if it
/// has finished (handed over: do not wait for it afterwards), else `None`.
pub fn poll_once<T>(
    r: &mut opipe::engine::Request<T>,
) -> Option<Result<T, opipe::protocol::NtStatus>> {
    use std::future::Future;
    use std::task::{Context, Poll, Wake, Waker};
    struct Nothing;
    impl Wake for Nothing {
        fn wake(self: Arc<Self>) {}
    }
    let waker = Waker::from(Arc::new(Nothing));
    let mut cx = Context::from_waker(&waker);
    match std::pin::Pin::new(r).poll(&mut cx) {
        Poll::Ready(res) => Some(res),
        Poll::Pending => None,
    }
}

/// The `/proc/<pid>/stat` lines of the processes whose process group is
/// `pgid`, zombies included (the state is the first field after the `)`
/// that ends the command name).
pub fn group_processes(pgid: u32) -> Vec<String> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        if entry.file_name().to_string_lossy().parse::<u32>().is_err() {
            continue;
        }
        let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        // After the command name: state, ppid, pgrp.
        if rest.split_whitespace().nth(2) == Some(&pgid.to_string()) {
            out.push(stat.clone());
        }
    }
    out
}

/// Helpers for the tests that run the `opipe` binary itself.
#[cfg(feature = "cli")]
pub mod cli {
    use std::process::{Child, Command, ExitStatus, Output, Stdio};
    use std::time::Duration;

    /// How long one `opipe` command may take before the test fails.
    pub const LIMIT: Duration = Duration::from_secs(180);

    /// `opipe ARGS`, run to its end (bounded by [`LIMIT`]).
    pub fn opipe(args: &[&str]) -> Output {
        super::smbd::run_bounded(Command::new(env!("CARGO_BIN_EXE_opipe")).args(args), LIMIT)
    }

    /// Its stderr, as text.
    pub fn stderr(out: &Output) -> String {
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    /// Runs `opipe bench --json ARGS`: the exit code, the JSON on stdout
    /// and stderr. `None` (after saying so) when opipe's engine cannot run
    /// on this machine (io_uring switched off).
    pub fn bench_json(args: &[&str]) -> Option<(Option<i32>, serde_json::Value, String)> {
        let mut all = vec!["bench", "--json"];
        all.extend_from_slice(args);
        let out = opipe(&all);
        let err = stderr(&out);
        if err.contains("engine unavailable") {
            eprintln!("SKIPPED: {err}");
            return None;
        }
        let stdout = String::from_utf8(out.stdout).expect("utf-8 stdout");
        let v = serde_json::from_str(&stdout).unwrap_or_else(|e| {
            panic!(
                "opipe {all:?} ({}): stdout is not one JSON object ({e}):\n{stdout}\n{err}",
                out.status
            )
        });
        Some((out.status.code(), v, err))
    }

    /// Starts `opipe ARGS` (stdout discarded) and reads its stderr until a
    /// line holds `marker` (bounded by [`LIMIT`]); the child and the stderr
    /// read so far.
    pub fn spawn_until(args: &[&str], marker: &str) -> (Child, String) {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_opipe"));
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let (child, lines) = super::spawn_with_stderr_lines(&mut cmd);
        let mut seen = String::new();
        while !seen.contains(marker) {
            let line = lines
                .recv_timeout(LIMIT)
                .unwrap_or_else(|e| panic!("no {marker:?} on stderr ({e}):\n{seen}"));
            seen.push_str(&line);
            seen.push('\n');
        }
        (child, seen)
    }

    /// `opipe bench EXTRA --engine threads --pipes 2 --duration 60`, once
    /// it is transceiving (see [`spawn_until`]).
    pub fn spawn_long_bench(extra: &[&str]) -> (Child, String) {
        let mut args = vec!["bench"];
        args.extend_from_slice(extra);
        args.extend(["--engine", "threads", "--pipes", "2", "--duration", "60"]);
        spawn_until(&args, "running threads")
    }

    /// The pid and socket of the bench's `<what> started: pid N, socket
    /// PATH[, ...]` line on stderr `err`.
    pub fn started(err: &str, what: &str) -> (u32, std::path::PathBuf) {
        let head = format!("{what} started: pid ");
        let line = err
            .lines()
            .find(|l| l.contains(&head))
            .unwrap_or_else(|| panic!("no {head:?} line in:\n{err}"));
        let rest = line.split(&head).nth(1).unwrap();
        let (pid, rest) = rest.split_once(", socket ").unwrap();
        let socket = rest.split(", ").next().unwrap();
        (pid.parse().unwrap(), std::path::PathBuf::from(socket))
    }

    /// SIGTERM to our child `child`; its exit status (bounded by [`LIMIT`]).
    pub fn sigterm(child: &mut Child) -> ExitStatus {
        let pid = libc::pid_t::try_from(child.id()).unwrap();
        // SAFETY: kill takes no pointers; `pid` is our unreaped child.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
        super::wait_exit(child, LIMIT)
    }
}
