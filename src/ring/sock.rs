//! The few socket syscalls the engine makes outside the ring: creating a
//! socket (the SQE chain needs its fd up front), `shutdown` on close, and
//! `FIONREAD` for PEEK (AF_UNIX has no in-ring SIOCINQ: KERNEL-NOTES.md).

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// A new AF_UNIX stream socket, close-on-exec. `Err(errno)` on failure.
pub fn unix_stream_socket() -> Result<OwnedFd, i32> {
    // SAFETY: plain syscall without pointer arguments.
    let fd = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EIO));
    }
    // SAFETY: socket() returned a fresh descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `shutdown(fd, SHUT_RDWR)`: wakes every operation blocked on the socket.
pub fn shutdown(fd: &OwnedFd) {
    // SAFETY: `fd` is an open descriptor borrowed for the call.
    let _ = unsafe { libc::shutdown(fd.as_raw_fd(), libc::SHUT_RDWR) };
}

/// Bytes queued for reading on a socket (`ioctl(FIONREAD)`).
/// `fd` is borrowed for the call; a descriptor that is not open only makes
/// it fail with EBADF.
pub fn fionread(fd: RawFd) -> io::Result<usize> {
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD writes one c_int to the pointer we pass, which is valid.
    let rc = unsafe { libc::ioctl(fd, libc::FIONREAD, &mut n as *mut libc::c_int) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n.max(0) as usize)
}
