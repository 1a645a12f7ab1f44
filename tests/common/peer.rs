//! A pipe client running as another user: a forked child that switches to
//! a uid, connects, sends an open message and reports what it saw through
//! its exit code. Only root can switch; [`can_switch_uid`] says whether
//! this process can.

use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::{Duration, Instant};

/// The uid (and gid) of `nobody` on Debian-like systems.
pub const NOBODY: u32 = 65534;

/// What the child saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerOutcome {
    /// The service answered this status word.
    Status(u32),
    /// The service closed (EOF, or a reset) before any status byte.
    ClosedWithoutStatus,
    /// `connect` was refused with EACCES (the socket's mode or a directory).
    ConnectDenied,
    /// Something else failed; the child's exit code.
    Failed(i32),
}

/// True when this process may switch uid (it runs as root).
pub fn can_switch_uid() -> bool {
    // SAFETY: geteuid takes no arguments and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Kills and reaps the child by pid if the test gives up on it.
struct ChildGuard(libc::pid_t);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if self.0 > 0 {
            // SAFETY: plain syscalls on our own, not yet reaped, child.
            unsafe {
                libc::kill(self.0, libc::SIGKILL);
                libc::waitpid(self.0, std::ptr::null_mut(), 0);
            }
        }
    }
}

// Exit codes of the child.
const EXIT_STATUS_ZERO: i32 = 0;
const EXIT_STATUS_OTHER: i32 = 1;
const EXIT_CLOSED: i32 = 2;
const EXIT_EACCES: i32 = 3;

/// Forks a child that becomes `uid` (gid `uid` too, no supplementary
/// groups), connects to `path`, writes `msg` and reads the 4-byte status.
/// Waits at most 20 s for it (then kills it and fails the test).
pub fn open_as_uid(path: &Path, uid: u32, msg: &[u8]) -> PeerOutcome {
    // Everything the child needs is built before the fork: after it, a
    // multi-threaded parent's child may only make async-signal-safe calls.
    // SAFETY: sockaddr_un is plain old data; all-zero is valid.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    let bytes = path.as_os_str().as_bytes();
    assert!(bytes.len() < addr.sun_path.len(), "socket path too long");
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    for (d, &b) in addr.sun_path.iter_mut().zip(bytes) {
        *d = b as libc::c_char;
    }
    let addr_len = std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t;
    let tv = libc::timeval {
        tv_sec: 10,
        tv_usec: 0,
    };
    // SAFETY: fork has no arguments. The child below only makes raw
    // syscalls on memory prepared above and ends with _exit.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
    if pid == 0 {
        // SAFETY: async-signal-safe calls only, on locals that outlive
        // them; the child never returns into the test harness.
        unsafe {
            libc::alarm(15);
            if libc::setgroups(0, std::ptr::null()) != 0
                || libc::setgid(uid) != 0
                || libc::setuid(uid) != 0
            {
                libc::_exit(10);
            }
            let fd = libc::socket(libc::AF_UNIX, libc::SOCK_STREAM, 0);
            if fd < 0 {
                libc::_exit(11);
            }
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&tv as *const libc::timeval).cast(),
                std::mem::size_of::<libc::timeval>() as libc::socklen_t,
            );
            if libc::connect(fd, (&addr as *const libc::sockaddr_un).cast(), addr_len) != 0 {
                let e = *libc::__errno_location();
                libc::_exit(if e == libc::EACCES { EXIT_EACCES } else { 12 });
            }
            let mut off = 0usize;
            while off < msg.len() {
                let n = libc::send(
                    fd,
                    msg.as_ptr().add(off).cast(),
                    msg.len() - off,
                    libc::MSG_NOSIGNAL,
                );
                if n <= 0 {
                    let e = *libc::__errno_location();
                    if n < 0 && (e == libc::EPIPE || e == libc::ECONNRESET) {
                        libc::_exit(EXIT_CLOSED);
                    }
                    libc::_exit(13);
                }
                off += n as usize;
            }
            let mut word = [0u8; 4];
            let mut got = 0usize;
            while got < 4 {
                let n = libc::recv(fd, word.as_mut_ptr().add(got).cast(), 4 - got, 0);
                if n == 0 {
                    libc::_exit(EXIT_CLOSED);
                }
                if n < 0 {
                    let e = *libc::__errno_location();
                    libc::_exit(if e == libc::ECONNRESET {
                        EXIT_CLOSED
                    } else {
                        14
                    });
                }
                got += n as usize;
            }
            libc::_exit(if word == [0; 4] {
                EXIT_STATUS_ZERO
            } else {
                EXIT_STATUS_OTHER
            });
        }
    }
    let mut guard = ChildGuard(pid);
    let end = Instant::now() + Duration::from_secs(20);
    let mut status = 0;
    loop {
        // SAFETY: `status` is a valid int to write; `pid` is our child.
        let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if r == pid {
            guard.0 = 0;
            break;
        }
        assert!(r == 0, "waitpid: {}", std::io::Error::last_os_error());
        assert!(Instant::now() < end, "the client child did not finish");
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(
        libc::WIFEXITED(status),
        "client child died: status {status:#x}"
    );
    match libc::WEXITSTATUS(status) {
        EXIT_STATUS_ZERO => PeerOutcome::Status(0),
        EXIT_STATUS_OTHER => PeerOutcome::Status(u32::MAX),
        EXIT_CLOSED => PeerOutcome::ClosedWithoutStatus,
        EXIT_EACCES => PeerOutcome::ConnectDenied,
        n => PeerOutcome::Failed(n),
    }
}

/// Makes `dir` enterable by everybody (temp dirs are 0700), so that only
/// the socket's own mode and the service's peer check decide.
pub fn open_dir_to_all(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
}
