//! Drives the real `opipe serve` binary: sockets on disk, handshakes, exit
//! on SIGTERM/SIGINT, errors, and no fd left behind by bad clients.

mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use opipe::protocol::dcerpc::{
    decode_bind_ack, decode_response, encode_bind, encode_request, pdu_len, DEFAULT_MAX_FRAG,
    NDR_SYNTAX, PFC_FIRST_FRAG, PFC_LAST_FRAG, SRVSVC_SYNTAX,
};
use opipe::protocol::{
    decode_status_word, encode_open_message, NtStatus, PipeHeader, PIPE_MAGIC, USER_FLAG_ANONYMOUS,
};
use opipe::service::dcerpc::reply_stub_byte;

use common::client::*;

/// Runs each listed test once per backend, as `uring::NAME` and
/// `epoll::NAME`; each takes the `--backend` value to start the service with.
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod uring {
            $(#[test]
            fn $name() {
                super::$name("io-uring")
            })*
        }
        mod epoll {
            $(#[test]
            fn $name() {
                super::$name("epoll")
            })*
        }
    };
}

on_both_backends!(
    sigterm_removes_sockets_and_exits_zero,
    sigint_also_stops_cleanly,
    bad_handshakes_are_closed_silently_and_leak_no_fd,
    open_limit_and_deny_anonymous,
    dcerpc_handler_binds_and_fragments_replies,
    missing_dir_is_a_clear_error,
    usage_errors_exit_2,
    out_of_fds_pauses_accepts_and_serves_the_waiting_clients,
    sockets_are_0600_under_umask_000_and_peers_checked,
    socket_dir_writable_by_others_is_warned_about,
    start_next_to_a_full_backlog_listener_fails_at_once,
);

/// The running `opipe serve`; killed and reaped on drop whatever happens.
struct Serve {
    child: Child,
    dir: tempfile::TempDir,
    stderr: mpsc::Receiver<String>,
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn(dir: &Path, args: &[&str]) -> (Child, mpsc::Receiver<String>) {
    spawn_limited(dir, args, None)
}

/// Like [`spawn`]; with `Some(n)` the child runs with at most `n` open
/// files (soft and hard `RLIMIT_NOFILE`, so the service cannot raise it).
fn spawn_limited(
    dir: &Path,
    args: &[&str],
    nofile: Option<u64>,
) -> (Child, mpsc::Receiver<String>) {
    let mut cmd = common::serve_command(env!("CARGO_BIN_EXE_opipe"), dir, args);
    if let Some(n) = nofile {
        let lim = libc::rlimit {
            rlim_cur: n as libc::rlim_t,
            rlim_max: n as libc::rlim_t,
        };
        // SAFETY: runs in the forked child before exec; setrlimit only reads
        // `lim`, which the closure owns; no allocation, no locks.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    common::spawn_with_stderr_lines(&mut cmd)
}

/// Starts `opipe serve --backend <backend>` in a fresh directory and waits
/// for its banner, which must name the backend; `None` (skipped, loudly)
/// when io_uring is asked for and unavailable here.
fn serve(backend: &str, args: &[&str]) -> Option<Serve> {
    serve_limited(backend, args, None)
}

/// Like [`serve`], with [`spawn_limited`]'s open-file limit.
fn serve_limited(backend: &str, args: &[&str], nofile: Option<u64>) -> Option<Serve> {
    let dir = tempfile::tempdir().unwrap();
    let args = [args, &["--backend", backend]].concat();
    let (child, stderr) = spawn_limited(dir.path(), &args, nofile);
    let mut s = Serve { child, dir, stderr };
    match s.wait_banner() {
        Ok(banner) => {
            let name = if backend == "epoll" {
                "epoll"
            } else {
                "io_uring"
            };
            assert!(banner.contains(&format!("{name} backend")), "{banner}");
            Some(s)
        }
        Err((status, text)) if text.contains("io_uring is not available") => {
            eprintln!("SKIPPED: {text} ({status})");
            None
        }
        Err((status, text)) => panic!("opipe serve exited early: {status}: {text}"),
    }
}

impl Serve {
    /// Waits for the "serving" line and returns it; `Err` if the child
    /// exited first.
    fn wait_banner(&mut self) -> Result<String, (ExitStatus, String)> {
        let end = Instant::now() + IO_TIMEOUT;
        let mut text = String::new();
        loop {
            match self.stderr.recv_timeout(Duration::from_millis(50)) {
                Ok(line) if line.contains("serving") => return Ok(line),
                Ok(line) => {
                    text.push_str(&line);
                    text.push('\n');
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    return Err((self.child.wait().unwrap(), text));
                }
            }
            assert!(Instant::now() < end, "no banner from opipe serve: {text}");
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    fn fd_count(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .unwrap()
            .count()
    }

    /// Waits until the child's fd count is back to `baseline`.
    fn wait_fds(&self, baseline: usize) {
        let end = Instant::now() + IO_TIMEOUT;
        loop {
            let n = self.fd_count();
            if n == baseline {
                return;
            }
            assert!(
                Instant::now() < end,
                "fd count stuck at {n}, baseline {baseline}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn signal(&self, sig: i32) {
        // SAFETY: kill takes no pointers; the pid is our own child, not yet reaped.
        assert_eq!(unsafe { libc::kill(self.pid(), sig) }, 0);
    }

    fn wait_exit(&mut self) -> ExitStatus {
        common::wait_exit(&mut self.child, IO_TIMEOUT)
    }
}

fn assert_eof(s: &mut UnixStream) {
    let mut b = [0u8; 8];
    assert_eq!(s.read(&mut b).unwrap(), 0, "expected the service to close");
}

fn sigterm_removes_sockets_and_exits_zero(backend: &str) {
    let Some(mut srv) = serve(backend, &["--pipe", "srvsvc", "--pipe", "LSARPC"]) else {
        return;
    };
    let (a, b) = (srv.path("srvsvc"), srv.path("lsarpc"));
    assert!(a.exists() && b.exists());
    let mut s = open_ok(&a);
    echo_once(&mut s, b"over the pipe");
    let mut t = open_ok(&b);
    echo_once(&mut t, b"lsa");
    srv.signal(libc::SIGTERM);
    let st = srv.wait_exit();
    assert!(st.success(), "{st}");
    assert!(!a.exists() && !b.exists(), "sockets left behind");
    assert_eof(&mut s);
    // It says what it did before it goes (the pump ends with the process).
    let said: Vec<String> = srv.stderr.iter().collect();
    assert!(
        said.iter()
            .any(|l| l.contains("stopping: 2 accepted, 2 opened") && l.contains("0 handler errors")),
        "{said:?}"
    );
}

fn sigint_also_stops_cleanly(backend: &str) {
    let Some(mut srv) = serve(backend, &["--pipe", "srvsvc", "--threads", "2"]) else {
        return;
    };
    srv.signal(libc::SIGINT);
    assert!(srv.wait_exit().success());
    assert!(!srv.path("srvsvc").exists());
}

fn bad_handshakes_are_closed_silently_and_leak_no_fd(backend: &str) {
    let Some(srv) = serve(
        backend,
        &["--pipe", "srvsvc", "--handshake-timeout-ms", "300"],
    ) else {
        return;
    };
    let path = srv.path("srvsvc");
    // Everything is made before the banner: a good client leaves nothing.
    let baseline = srv.fd_count();
    echo_once(&mut open_ok(&path), b"warm-up");
    srv.wait_fds(baseline);
    let msg = encode_open_message(&named_user("bob", 0)).unwrap();
    type BadClient<'a> = Box<dyn Fn(&mut UnixStream) + 'a>;
    let cases: Vec<(&str, BadClient)> = vec![
        (
            "bad magic",
            Box::new(|s: &mut UnixStream| {
                // A whole valid open but for the magic: only the magic
                // check can refuse it.
                s.write_all(&open_message_with_magic(&named_user("bob", 0), !PIPE_MAGIC))
                    .unwrap();
            }),
        ),
        (
            "uilen 8193",
            Box::new(|s: &mut UnixStream| {
                s.write_all(
                    &PipeHeader {
                        magic: PIPE_MAGIC,
                        uilen: 8193,
                    }
                    .encode(),
                )
                .unwrap();
            }),
        ),
        (
            "bad xdr",
            Box::new(|s: &mut UnixStream| {
                s.write_all(&PipeHeader::new(8).encode()).unwrap();
                s.write_all(&[0xff; 8]).unwrap();
            }),
        ),
        (
            "truncated",
            Box::new(|s: &mut UnixStream| {
                s.write_all(&msg[..msg.len() - 3]).unwrap();
                s.shutdown(std::net::Shutdown::Write).unwrap();
            }),
        ),
        ("silence", Box::new(|_s: &mut UnixStream| {})),
    ];
    for (what, bad) in cases {
        let mut s = connect(&path);
        bad(&mut s);
        let mut b = [0u8; 8];
        assert_eq!(
            s.read(&mut b).unwrap(),
            0,
            "{what}: expected close with no status"
        );
        drop(s);
        srv.wait_fds(baseline);
        echo_once(&mut open_ok(&path), what.as_bytes());
        srv.wait_fds(baseline);
    }
}

fn open_limit_and_deny_anonymous(backend: &str) {
    let Some(srv) = serve(
        backend,
        &["--pipe", "srvsvc", "--max-opens", "2", "--deny-anonymous"],
    ) else {
        return;
    };
    let path = srv.path("srvsvc");
    let (mut anon, st) = open_as(&path, &named_user("", USER_FLAG_ANONYMOUS));
    assert_eq!(st, NtStatus::ACCESS_DENIED);
    assert_eof(&mut anon);
    let a = open_ok(&path);
    let _b = open_ok(&path);
    let (mut c, st) = open_as(&path, &named_user("carol", 0));
    assert_eq!(st, NtStatus::PIPE_NOT_AVAILABLE);
    assert_eof(&mut c);
    drop(a);
    // The slot comes back once the service saw the close.
    let end = Instant::now() + IO_TIMEOUT;
    loop {
        let (mut s, st) = open_as(&path, &named_user("dave", 0));
        if st == NtStatus::SUCCESS {
            echo_once(&mut s, b"in");
            break;
        }
        assert_eq!(st, NtStatus::PIPE_NOT_AVAILABLE);
        assert!(Instant::now() < end, "slot never freed");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn dcerpc_handler_binds_and_fragments_replies(backend: &str) {
    let Some(srv) = serve(
        backend,
        &[
            "--pipe",
            "srvsvc",
            "--handler",
            "dcerpc",
            "--reply-size",
            "10000",
        ],
    ) else {
        return;
    };
    let mut s = open_ok(&srv.path("srvsvc"));
    let read_pdu = |s: &mut UnixStream| {
        let mut hdr = [0u8; 16];
        s.read_exact(&mut hdr).unwrap();
        let n = pdu_len(&hdr, DEFAULT_MAX_FRAG).unwrap().unwrap();
        let mut pdu = hdr.to_vec();
        pdu.resize(n, 0);
        s.read_exact(&mut pdu[16..]).unwrap();
        pdu
    };
    s.write_all(&encode_bind(
        3,
        (SRVSVC_SYNTAX.uuid, SRVSVC_SYNTAX.version),
        (NDR_SYNTAX.uuid, NDR_SYNTAX.version),
    ))
    .unwrap();
    let ack = decode_bind_ack(&read_pdu(&mut s)).unwrap();
    assert_eq!(
        (ack.header.call_id, ack.sec_addr.as_str()),
        (3, "\\PIPE\\srvsvc")
    );
    s.write_all(&encode_request(4, 0, 15, b"stub", DEFAULT_MAX_FRAG))
        .unwrap();
    let mut stub = Vec::new();
    let mut lens = Vec::new();
    for i in 0..3 {
        let pdu = read_pdu(&mut s);
        lens.push(pdu.len());
        let r = decode_response(&pdu).unwrap();
        assert_eq!(r.header.call_id, 4);
        assert_eq!(r.header.pfc_flags & PFC_FIRST_FRAG != 0, i == 0);
        assert_eq!(r.header.pfc_flags & PFC_LAST_FRAG != 0, i == 2);
        stub.extend_from_slice(r.stub);
    }
    assert_eq!(lens[..2], [4280, 4280]);
    assert_eq!(stub.len(), 10_000);
    assert!(stub
        .iter()
        .enumerate()
        .all(|(i, &b)| b == reply_stub_byte(i)));
}

fn missing_dir_is_a_clear_error(backend: &str) {
    let parent = tempfile::tempdir().unwrap();
    let missing = parent.path().join("no-such-dir");
    let (mut child, stderr) = spawn(&missing, &["--pipe", "srvsvc", "--backend", backend]);
    let status = child.wait().unwrap();
    let text: Vec<String> = stderr.iter().collect();
    let text = text.join("\n");
    assert!(!status.success());
    assert!(
        text.contains("no-such-dir") && text.contains("does not exist"),
        "{text}"
    );
    assert!(!missing.exists());
}

fn usage_errors_exit_2(backend: &str) {
    let dir = tempfile::tempdir().unwrap();
    for args in [
        &[][..],                                   // no --pipe
        &["--pipe", "a/b"][..],                    // not a flat name
        &["--pipe", "new\nline"][..],              // a control character
        &["--pipe", "x", "--handler", "nope"][..], // unknown handler
        &["--pipe", "x", "--threads", "0"][..],
    ] {
        let (child, stderr) = spawn(dir.path(), &[args, &["--backend", backend]].concat());
        // Killed and reaped on drop if it does not exit by itself.
        let mut srv = Serve {
            child,
            dir: tempfile::tempdir().unwrap(),
            stderr,
        };
        let status = srv.wait_exit();
        let text: Vec<String> = srv.stderr.iter().collect();
        assert_eq!(status.code(), Some(2), "{args:?}: {text:?}");
        assert!(!text.is_empty(), "{args:?}: no message");
    }
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

fn out_of_fds_pauses_accepts_and_serves_the_waiting_clients(backend: &str) {
    // 32 fds in all: after stdio, listener, eventfd and the loop's own fd,
    // about 25 connections fit; the others wait in the listen queue while
    // accepts fail with EMFILE and pause.
    const CLIENTS: usize = 100;
    const CHUNK: usize = 20;
    let Some(mut srv) = serve_limited(backend, &["--pipe", "srvsvc"], Some(32)) else {
        return;
    };
    let path = srv.path("srvsvc");
    let msg = encode_open_message(&named_user("frank", 0)).unwrap();
    let mut conns: Vec<Option<UnixStream>> = (0..CLIENTS)
        .map(|_| {
            let mut s = connect(&path);
            s.write_all(&msg).unwrap();
            Some(s)
        })
        .collect();
    // Served a chunk at a time: each chunk closed frees the fds the
    // next one needs, once the paused accepts resume.
    for chunk in conns.chunks_mut(CHUNK) {
        for (i, slot) in chunk.iter_mut().enumerate() {
            let s = slot.as_mut().unwrap();
            let mut w = [0u8; 4];
            s.read_exact(&mut w).unwrap();
            assert_eq!(decode_status_word(w), NtStatus::SUCCESS);
            echo_once(s, format!("client {i}").as_bytes());
        }
        for slot in chunk.iter_mut() {
            drop(slot.take());
        }
    }
    srv.signal(libc::SIGTERM);
    assert!(srv.wait_exit().success());
    assert!(!srv.path("srvsvc").exists());
}

fn socket_mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::symlink_metadata(path)
        .unwrap()
        .permissions()
        .mode()
        & 0o7777
}

/// `opipe serve --backend <backend> ARGS` under `umask 000`, banner awaited.
fn serve_umask_000(backend: &str, args: &[&str]) -> Option<Serve> {
    let dir = tempfile::tempdir().unwrap();
    let args = [args, &["--backend", backend]].concat();
    let mut cmd = common::serve_command(env!("CARGO_BIN_EXE_opipe"), dir.path(), &args);
    // SAFETY: runs in the forked child before exec; umask cannot fail and
    // touches no memory.
    unsafe {
        cmd.pre_exec(|| {
            libc::umask(0);
            Ok(())
        });
    }
    let (child, stderr) = common::spawn_with_stderr_lines(&mut cmd);
    let mut s = Serve { child, dir, stderr };
    match s.wait_banner() {
        Ok(_) => Some(s),
        Err((status, text)) if text.contains("io_uring is not available") => {
            eprintln!("SKIPPED: {text} ({status})");
            None
        }
        Err((status, text)) => panic!("opipe serve exited early: {status}: {text}"),
    }
}

/// Stops `srv` with SIGTERM and returns its stderr lines after the banner.
fn stop_and_collect(mut srv: Serve) -> String {
    srv.signal(libc::SIGTERM);
    assert!(srv.wait_exit().success());
    let lines: Vec<String> = srv.stderr.iter().collect();
    lines.join("\n")
}

fn sockets_are_0600_under_umask_000_and_peers_checked(backend: &str) {
    use common::peer::*;
    let Some(srv) = serve_umask_000(backend, &["--pipe", "srvsvc", "--pipe", "lsarpc"]) else {
        return;
    };
    assert_eq!(socket_mode(&srv.path("srvsvc")), 0o600);
    assert_eq!(socket_mode(&srv.path("lsarpc")), 0o600);
    echo_once(&mut open_ok(&srv.path("srvsvc")), b"own uid");
    if !can_switch_uid() {
        eprintln!("SKIPPED: the peer checks need root (to run a client as uid {NOBODY})");
        return;
    }
    let msg = encode_open_message(&named_user("nobody", 0)).unwrap();
    open_dir_to_all(srv.dir.path());
    // The default mode keeps `nobody` from connecting at all.
    assert_eq!(
        open_as_uid(&srv.path("srvsvc"), NOBODY, &msg),
        PeerOutcome::ConnectDenied
    );
    drop(srv);

    // Widened mode: reachable, but the peer check refuses it.
    let Some(srv) = serve_umask_000(backend, &["--pipe", "srvsvc", "--socket-mode", "0666"]) else {
        return;
    };
    assert_eq!(socket_mode(&srv.path("srvsvc")), 0o666);
    open_dir_to_all(srv.dir.path());
    assert_eq!(
        open_as_uid(&srv.path("srvsvc"), NOBODY, &msg),
        PeerOutcome::ClosedWithoutStatus
    );
    let text = stop_and_collect(srv);
    assert!(text.contains("1 peers refused"), "{text}");
    assert!(text.contains("0 opened"), "{text}");

    // --allow-uid admits it.
    let Some(srv) = serve_umask_000(
        backend,
        &[
            "--pipe",
            "srvsvc",
            "--socket-mode",
            "666",
            "--allow-uid",
            "65534",
        ],
    ) else {
        return;
    };
    open_dir_to_all(srv.dir.path());
    assert_eq!(
        open_as_uid(&srv.path("srvsvc"), NOBODY, &msg),
        PeerOutcome::Status(0)
    );
    let text = stop_and_collect(srv);
    assert!(
        text.contains("0 peers refused") && text.contains("1 opened"),
        "{text}"
    );

    // A mode beyond 0777 is a usage error.
    let dir = tempfile::tempdir().unwrap();
    let (child, stderr) = spawn(
        dir.path(),
        &["--pipe", "x", "--socket-mode", "4777", "--backend", backend],
    );
    let mut srv = Serve { child, dir, stderr };
    assert_eq!(srv.wait_exit().code(), Some(2));
}

fn socket_dir_writable_by_others_is_warned_about(backend: &str) {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let (child, stderr) = spawn(dir.path(), &["--pipe", "srvsvc", "--backend", backend]);
    let srv = Serve { child, dir, stderr };
    let mut before = String::new();
    let end = Instant::now() + IO_TIMEOUT;
    loop {
        match srv.stderr.recv_timeout(Duration::from_millis(50)) {
            Ok(line) if line.contains("serving") => break,
            Ok(line) => before.push_str(&line),
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                if before.contains("io_uring is not available") {
                    return eprintln!("SKIPPED: {before}");
                }
                panic!("opipe serve exited early: {before}");
            }
        }
        assert!(Instant::now() < end, "no banner: {before}");
    }
    assert!(
        before.contains("writable by other users") && before.contains("0777"),
        "{before}"
    );
    // A warning, not a refusal: it serves.
    echo_once(&mut open_ok(&srv.path("srvsvc")), b"served");
}

fn start_next_to_a_full_backlog_listener_fails_at_once(backend: &str) {
    let dir = tempfile::tempdir().unwrap();
    let _full = common::full_backlog(&dir.path().join("srvsvc"));
    let t0 = Instant::now();
    let (child, stderr) = spawn(dir.path(), &["--pipe", "srvsvc", "--backend", backend]);
    let mut srv = Serve { child, dir, stderr };
    // Before, the probe's blocking connect waited for as long as the other
    // listener lived, and SIGTERM could not stop it.
    let status = common::wait_exit(&mut srv.child, Duration::from_secs(5));
    let took = t0.elapsed();
    let text: Vec<String> = srv.stderr.iter().collect();
    let text = text.join("\n");
    if text.contains("io_uring is not available") {
        return eprintln!("SKIPPED: {text}");
    }
    assert_eq!(status.code(), Some(1), "{text}");
    assert!(text.contains("address in use"), "{text}");
    assert!(took < Duration::from_secs(3), "{took:?}");
}
