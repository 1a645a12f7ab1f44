//! Small safe wrappers over the few raw system calls the service and the
//! CLI need beyond `std`: an eventfd for waking a ring, the open-file limit,
//! and blocking/awaiting termination signals.
//!
//! They live here because this module is the only place with `unsafe` code.

use std::io;
use std::os::fd::{FromRawFd, OwnedFd};

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
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid, writable rlimit struct.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(io::Error::last_os_error());
    }
    if lim.rlim_cur < lim.rlim_max {
        lim.rlim_cur = lim.rlim_max;
        // SAFETY: `lim` is a valid rlimit struct, read above.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(lim.rlim_cur)
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
    fn nofile_limit_is_raised_to_hard() {
        let soft = raise_nofile_limit().unwrap();
        assert!(soft >= 256, "{soft}");
    }
}
