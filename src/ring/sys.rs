//! Small safe wrappers over the few raw system calls the service, the epoll
//! fallbacks and the CLI need beyond `std`: an eventfd for waking a ring, the
//! open-file limit, blocking/awaiting termination signals, and epoll plus
//! nonblocking socket calls.
//!
//! They live here because this module is the only place with `unsafe` code.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// Asks the CPU to bring the cache line holding `p` into its caches
/// (x86-64 `PREFETCHT0`; nothing on other targets). A hint only: it never
/// faults and reads nothing the program sees, so any address will do.
/// Also used ahead of a write: no other core holds the line, so it
/// arrives exclusive and the store needs no further request.
/// (`_MM_HINT_ET0`, meant for `PREFETCHW`, compiles to this same
/// instruction on the baseline x86-64 target, which lacks `prfchw`.)
#[inline(always)]
pub(crate) fn prefetch<T>(p: *const T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: PREFETCH never faults, whatever the address, and changes no
    // state the program can observe; SSE is part of x86-64's baseline.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p.cast())
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// [`prefetch`] of every cache line of the `len` bytes at `p` (a record
/// spanning several lines: they then arrive together).
#[inline(always)]
pub(crate) fn prefetch_bytes(p: *const u8, len: usize) {
    let mut off = 0;
    while off < len {
        prefetch(p.wrapping_add(off));
        off += 64;
    }
    // A record that does not start a line ends one line further on.
    if len > 0 {
        prefetch(p.wrapping_add(len - 1));
    }
}

/// Creates a non-semaphore eventfd with count 0 (`eventfd(2)`, close-on-exec).
///
/// Writing any non-zero 8-byte count makes it readable (POLLIN) until it is
/// read; nobody reads it here, so once signalled it stays signalled for every
/// ring that polls it.
pub fn eventfd() -> io::Result<OwnedFd> {
    // SAFETY: eventfd takes no pointers; it returns a new fd or -1.
    let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by eventfd, is open, and nobody else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit (`setrlimit(2)`), so a
/// service can hold thousands of connections. Returns the new soft limit.
pub fn raise_nofile_limit() -> io::Result<u64> {
    let mut lim = nofile_limits()?;
    if lim.rlim_cur < lim.rlim_max {
        lim.rlim_cur = lim.rlim_max;
        // SAFETY: `lim` is a valid rlimit struct, read above.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(lim.rlim_cur)
}

/// The soft `RLIMIT_NOFILE`: how many descriptors this process may hold
/// right now.
pub fn nofile_soft_limit() -> io::Result<u64> {
    nofile_limits().map(|lim| lim.rlim_cur)
}

/// `getrlimit(RLIMIT_NOFILE)`.
fn nofile_limits() -> io::Result<libc::rlimit> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid, writable rlimit struct.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(lim)
}

/// A set of signals blocked in the calling thread (and in every thread it
/// spawns afterwards), to be received synchronously with [`wait`](Self::wait).
///
/// Block before spawning threads, so that no other thread takes the signal.
#[derive(Debug)]
pub struct BlockedSignals {
    set: SigSet,
}

/// `sigset_t` has no `Debug`; this wrapper gives it one.
struct SigSet(libc::sigset_t);

impl std::fmt::Debug for SigSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigSet")
    }
}

impl BlockedSignals {
    /// Blocks `signals` in the calling thread (`pthread_sigmask(SIG_BLOCK)`).
    pub fn block(signals: &[libc::c_int]) -> io::Result<BlockedSignals> {
        // SAFETY: sigset_t is a plain bit array; all-zero is a valid value
        // and sigemptyset initialises it properly right below.
        let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
        // SAFETY: `set` is a valid, writable sigset_t.
        unsafe { libc::sigemptyset(&mut set) };
        for &sig in signals {
            // SAFETY: `set` is an initialised sigset_t; a bad signal number
            // only makes sigaddset fail with EINVAL.
            if unsafe { libc::sigaddset(&mut set, sig) } != 0 {
                return Err(io::Error::last_os_error());
            }
        }
        // SAFETY: `set` is initialised; the old mask is not asked for (null).
        let rc = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
        if rc != 0 {
            return Err(io::Error::from_raw_os_error(rc));
        }
        Ok(BlockedSignals { set: SigSet(set) })
    }

    /// Waits until one of the blocked signals is pending and takes it
    /// (`sigwait(3)`); returns its number.
    pub fn wait(&self) -> io::Result<libc::c_int> {
        loop {
            let mut sig: libc::c_int = 0;
            // SAFETY: `self.set` is an initialised sigset_t and `sig` is writable.
            let rc = unsafe { libc::sigwait(&self.set.0, &mut sig) };
            match rc {
                0 => return Ok(sig),
                libc::EINTR => continue,
                e => return Err(io::Error::from_raw_os_error(e)),
            }
        }
    }
}

impl BlockedSignals {
    /// Like [`wait`](Self::wait), but gives up after `timeout`
    /// (`sigtimedwait(2)`): `Ok(None)` when no signal came.
    pub fn wait_timeout(&self, timeout: std::time::Duration) -> io::Result<Option<libc::c_int>> {
        let ts = libc::timespec {
            tv_sec: timeout.as_secs().min(i64::MAX as u64) as libc::time_t,
            tv_nsec: timeout.subsec_nanos() as libc::c_long,
        };
        loop {
            // SAFETY: `self.set` is an initialised sigset_t, `ts` a valid
            // timespec; the siginfo out-pointer may be null.
            let rc = unsafe { libc::sigtimedwait(&self.set.0, std::ptr::null_mut(), &ts) };
            if rc >= 0 {
                return Ok(Some(rc));
            }
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EAGAIN) => return Ok(None),
                Some(libc::EINTR) => continue,
                _ => return Err(e),
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Thin epoll and nonblocking-socket wrappers shared by the epoll fallbacks
// (`epoll.rs` for the engine, `service/epoll.rs` for the service). They
// return the errno as an `i32` where the callers branch on it.

pub(crate) fn last_errno() -> i32 {
    io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}

/// `epoll_create1(EPOLL_CLOEXEC)`.
pub(crate) fn epoll_new() -> io::Result<OwnedFd> {
    // SAFETY: no pointer arguments; returns a new fd or -1.
    let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `epoll_ctl(op)` of `fd` with `events`, tagged with `token`.
pub(crate) fn epoll_ctl(
    ep: RawFd,
    op: libc::c_int,
    fd: RawFd,
    events: u32,
    token: u64,
) -> Result<(), i32> {
    let mut ev = libc::epoll_event { events, u64: token };
    // SAFETY: `ev` is a valid epoll_event for the duration of the call (the
    // kernel copies it); `ep` is an open epoll fd; a bad `fd` is an error.
    let rc = unsafe { libc::epoll_ctl(ep, op, fd, &mut ev) };
    if rc < 0 {
        return Err(last_errno());
    }
    Ok(())
}

/// `epoll_wait` into `events`; `timeout_ms` -1 waits without limit. An
/// interrupted wait returns 0 events.
pub(crate) fn epoll_wait(
    ep: &OwnedFd,
    events: &mut [libc::epoll_event],
    timeout_ms: i32,
) -> io::Result<usize> {
    let max = events.len().min(i32::MAX as usize) as libc::c_int;
    // SAFETY: `events` is valid for writes of `max` entries and outlives the
    // call; the kernel writes at most `max`.
    let n = unsafe { libc::epoll_wait(ep.as_raw_fd(), events.as_mut_ptr(), max, timeout_ms) };
    if n < 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::EINTR) {
            return Ok(0);
        }
        return Err(e);
    }
    Ok(n as usize)
}

/// `accept4(SOCK_NONBLOCK | SOCK_CLOEXEC)` without the peer address.
pub(crate) fn accept_nonblocking(listener: &OwnedFd) -> Result<OwnedFd, i32> {
    // SAFETY: null address pointers are allowed (the peer address is not
    // wanted); `listener` is an open socket borrowed for the call.
    let fd = unsafe {
        libc::accept4(
            listener.as_raw_fd(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(last_errno());
    }
    // SAFETY: accept4 returned a new descriptor that nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// A nonblocking `recv` into `buf`.
pub(crate) fn recv_nonblocking(fd: &OwnedFd, buf: &mut [u8]) -> Result<usize, i32> {
    // SAFETY: `buf` is valid for writes of `buf.len()` bytes during the call.
    let n = unsafe {
        libc::recv(
            fd.as_raw_fd(),
            buf.as_mut_ptr().cast(),
            buf.len(),
            libc::MSG_DONTWAIT,
        )
    };
    if n < 0 {
        return Err(last_errno());
    }
    Ok(n as usize)
}

/// A nonblocking `send` of `buf`, without SIGPIPE.
pub(crate) fn send_nonblocking(fd: &OwnedFd, buf: &[u8]) -> Result<usize, i32> {
    // SAFETY: `buf` is valid for reads of `buf.len()` bytes during the call.
    let n = unsafe {
        libc::send(
            fd.as_raw_fd(),
            buf.as_ptr().cast(),
            buf.len(),
            libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
        )
    };
    if n < 0 {
        return Err(last_errno());
    }
    Ok(n as usize)
}

/// Sets `O_NONBLOCK` on `fd` (`fcntl(F_GETFL/F_SETFL)`).
pub(crate) fn set_nonblocking(fd: &impl AsRawFd) -> io::Result<()> {
    // SAFETY: F_GETFL takes no pointer; `fd` is open for the call.
    let flags = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFL) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    if flags & libc::O_NONBLOCK == 0 {
        // SAFETY: F_SETFL takes an int flag word, no pointer.
        let rc = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Access control of the service's sockets.

/// The calling process's effective uid (`geteuid(2)`).
pub fn effective_uid() -> u32 {
    // SAFETY: geteuid takes no arguments and cannot fail.
    unsafe { libc::geteuid() }
}

/// The uid of the process at the other end of a connected AF_UNIX socket,
/// as the kernel recorded it at `connect(2)` (`SO_PEERCRED`, see
/// `unix(7)`); the peer cannot forge it.
pub fn peer_uid(fd: std::os::fd::BorrowedFd<'_>) -> io::Result<u32> {
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: `cred` is a valid, writable ucred and `len` its size; the
    // kernel writes at most `len` bytes; `fd` is open for the call.
    let rc = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    if len as usize != std::mem::size_of::<libc::ucred>() {
        return Err(io::Error::other("SO_PEERCRED: short answer"));
    }
    Ok(cred.uid)
}

/// A nonblocking `connect(2)` to the AF_UNIX stream socket at `path`, to
/// tell whether a listener is alive there without waiting for it. AF_UNIX
/// answers at once: `Ok` (queued on a live listener), `ECONNREFUSED` (no
/// listener: a stale socket file), `EAGAIN` (a live listener whose backlog
/// is full), `ENOENT` and the like. The connection, if any, is closed on
/// return.
pub fn probe_unix_listener(path: &std::path::Path) -> io::Result<()> {
    let addr = super::op::UnixAddr::new(path)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "socket path too long"))?;
    let fd = super::sock::unix_stream_socket().map_err(io::Error::from_raw_os_error)?;
    set_nonblocking(&fd)?;
    let (ptr, len) = addr.as_raw();
    // SAFETY: `fd` is open; `ptr`/`len` describe `addr`, alive for the call.
    let rc = unsafe { libc::connect(fd.as_raw_fd(), ptr, len) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::File;
    use std::io::{Read, Write};

    #[test]
    fn eventfd_counts() {
        let fd = eventfd().unwrap();
        let mut f = File::from(fd);
        f.write_all(&3u64.to_ne_bytes()).unwrap();
        f.write_all(&4u64.to_ne_bytes()).unwrap();
        let mut b = [0u8; 8];
        f.read_exact(&mut b).unwrap();
        assert_eq!(u64::from_ne_bytes(b), 7);
    }

    #[test]
    fn blocked_signal_is_taken_by_wait() {
        // SIGUSR2 is blocked in this test thread only and sent to it alone.
        let sigs = BlockedSignals::block(&[libc::SIGUSR2]).unwrap();
        assert_eq!(
            sigs.wait_timeout(std::time::Duration::from_millis(10))
                .unwrap(),
            None
        );
        // SAFETY: pthread_self is always valid; SIGUSR2 is blocked here, so
        // it stays pending for this thread instead of killing the process.
        let rc = unsafe { libc::pthread_kill(libc::pthread_self(), libc::SIGUSR2) };
        assert_eq!(rc, 0);
        assert_eq!(
            sigs.wait_timeout(std::time::Duration::from_secs(5))
                .unwrap(),
            Some(libc::SIGUSR2)
        );
    }

    #[test]
    fn peer_uid_and_listener_probe() {
        use std::os::fd::AsFd;
        use std::os::unix::net::{UnixListener, UnixStream};
        let (a, _b) = UnixStream::pair().unwrap();
        assert_eq!(peer_uid(a.as_fd()).unwrap(), effective_uid());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        let err = probe_unix_listener(&path).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound, "{err}");
        let l = UnixListener::bind(&path).unwrap();
        probe_unix_listener(&path).unwrap();
        drop(l);
        // The file stays, nobody listens: stale.
        let err = probe_unix_listener(&path).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused, "{err}");
    }

    #[test]
    fn nofile_limit_is_raised_to_hard() {
        let soft = raise_nofile_limit().unwrap();
        assert!(soft >= 256, "{soft}");
    }
}
