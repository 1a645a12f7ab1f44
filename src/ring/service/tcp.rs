//! TCP sockets for the service loops (the SMB2 front listens on TCP): a
//! listener with a deep accept queue, `TCP_NODELAY` and the peer's address
//! of an accepted connection. The loops themselves treat TCP and AF_UNIX
//! streams alike.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6, TcpListener};
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};

/// The accept queue asked for (the kernel caps it at `net.core.somaxconn`).
pub const TCP_BACKLOG: i32 = 4096;

/// Binds a TCP listener on `addr` (port 0 picks a free one), close-on-exec,
/// with an accept queue of [`TCP_BACKLOG`] so a burst of hundreds of
/// clients is not dropped into SYN retries. Returns it with its address.
pub fn tcp_listener(addr: SocketAddr) -> io::Result<(OwnedFd, SocketAddr)> {
    let l = TcpListener::bind(addr)?;
    let local = l.local_addr()?;
    let fd: OwnedFd = l.into();
    // SAFETY: listen(2) takes no pointers; `fd` is an open, bound socket.
    // Listening again on a listening socket only changes its backlog.
    if unsafe { libc::listen(fd.as_raw_fd(), TCP_BACKLOG) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((fd, local))
}

/// Sets `TCP_NODELAY` (request/response traffic: no Nagle delay).
pub fn set_tcp_nodelay(fd: BorrowedFd<'_>) -> io::Result<()> {
    let one: libc::c_int = 1;
    // SAFETY: passes a pointer to `one` and its exact size; both live for
    // the call, and setsockopt only reads them.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_NODELAY,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The peer's address of a connected TCP socket (`getpeername(2)`).
pub fn peer_addr(fd: BorrowedFd<'_>) -> io::Result<SocketAddr> {
    // SAFETY: sockaddr_storage is plain data; all zeroes is a valid value.
    let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    // SAFETY: `ss` and `len` live for the call; the kernel writes at most
    // `len` bytes into `ss` and the actual size into `len`.
    let rc = unsafe {
        libc::getpeername(
            fd.as_raw_fd(),
            (&mut ss as *mut libc::sockaddr_storage).cast(),
            &mut len,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    match i32::from(ss.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says the storage holds a sockaddr_in,
            // which is smaller than sockaddr_storage and less aligned.
            let a: libc::sockaddr_in =
                unsafe { *(&ss as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            let ip = Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr));
            Ok(SocketAddr::V4(SocketAddrV4::new(
                ip,
                u16::from_be(a.sin_port),
            )))
        }
        libc::AF_INET6 => {
            // SAFETY: as above, for sockaddr_in6.
            let a: libc::sockaddr_in6 =
                unsafe { *(&ss as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            let ip = Ipv6Addr::from(a.sin6_addr.s6_addr);
            Ok(SocketAddr::V6(SocketAddrV6::new(
                ip,
                u16::from_be(a.sin6_port),
                a.sin6_flowinfo,
                a.sin6_scope_id,
            )))
        }
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not an IP socket",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn listener_nodelay_and_peer_address() {
        let (l, local) = tcp_listener("127.0.0.1:0".parse().unwrap()).unwrap();
        assert_ne!(local.port(), 0);
        let c = std::net::TcpStream::connect(local).unwrap();
        let l = TcpListener::from(l);
        let (s, from) = l.accept().unwrap();
        set_tcp_nodelay(s.as_fd()).unwrap();
        assert!(s.nodelay().unwrap());
        assert_eq!(peer_addr(s.as_fd()).unwrap(), from);
        assert_eq!(from, c.local_addr().unwrap());
        let (u, _) = std::os::unix::net::UnixStream::pair().unwrap();
        assert!(peer_addr(u.as_fd()).is_err());
    }
}
