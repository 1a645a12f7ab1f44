//! The pipe service: the process at the other end of the socket, like the
//! illumos smbd pipe service.
//!
//! A service listens on `<dir>/<name>` (AF_UNIX stream) for each of its pipe
//! names, runs the service side of the open handshake on every connection
//! (PROTOCOL.md section 2), decides each open (anonymous users, an
//! [`AcceptPolicy`], a per-name open limit), answers the 4-byte status, and
//! hands accepted connections to a [`Handler`] made by a
//! [`HandlerFactory`].
//!
//! Dialects: by default the service speaks illumos smbd's handshake and
//! byte stream on `<dir>/<name>`; with
//! [`ServiceBuilder::dialect`]`(`[`Dialect::Samba`](crate::protocol::Dialect::Samba)`)` it speaks Samba's
//! (named-pipe-auth request and reply, then `u16`-framed messages) on
//! `<dir>/np/<name>`, where a real smbd with `external_rpc_pipe:socket_dir
//! = <dir>` connects. Handlers see the caller of either dialect as a
//! [`Caller`] ([`HandlerFactory::open_caller`]).
//!
//! Access control: the sockets get an exact mode (0600 by default,
//! [`ServiceBuilder::socket_mode`]) whatever the umask, and each connecting
//! process's uid (`SO_PEERCRED`) is checked before its handshake is read
//! (the service's own uid and root, plus [`ServiceBuilder::allow_uid`]).
//!
//! Connections are served by one event loop per service thread: io_uring
//! (`crate::ring::service::uring`), or epoll (`crate::ring::service::epoll`) where
//! io_uring is switched off; see [`BackendChoice`]. No thread per
//! connection, and idle connections hold no receive buffer. Everything in this module is safe Rust; the
//! handshake ([`handshake`]), the sessions and the handlers are sans-IO and
//! unit-tested without sockets.
//!
//! ```no_run
//! use opipe::service::{DceRpcFactory, Service};
//! let svc = Service::builder("/var/smb/pipe")
//!     .pipe("srvsvc")
//!     .pipe("lsarpc")
//!     .handler(DceRpcFactory::new(1024))
//!     .deny_anonymous(true)
//!     .start()?;
//! println!("{:?}", svc.stats());
//! svc.shutdown()?;
//! svc.join()?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![forbid(unsafe_code)]

mod caller;
pub mod dcerpc;
pub mod handler;
pub mod handshake;
mod runtime;
mod session;
pub mod srvsvc;
mod stats;

pub use crate::ring::{Backend, BackendChoice};
pub use caller::Caller;
pub use dcerpc::{DceRpc, DceRpcFactory};
pub use handler::{Echo, EchoFactory, Handler, HandlerError, HandlerFactory, MessageBoundaries};
pub use handshake::MAX_NPA_REQUEST_BYTES;
pub use runtime::{
    Service, ServiceBuilder, ServiceError, ServiceHandle, DEFAULT_HANDSHAKE_TIMEOUT,
    DEFAULT_SOCKET_MODE,
};
pub use session::{AcceptAll, AcceptPolicy};
pub use srvsvc::{Srvsvc, SrvsvcFactory};
pub use stats::Stats;

#[cfg(test)]
pub(crate) mod testutil {
    use crate::protocol::{ClientAddr, NetUserInfo};
    use std::net::Ipv4Addr;

    /// A plausible user with the given flags.
    pub(crate) fn user(flags: u32) -> NetUserInfo {
        NetUserInfo {
            session_id: 0x1122_3344_5566_7788,
            domain: "WORKGROUP".into(),
            account: "alice".into(),
            posix_uid: 1000,
            workstation: "PC1".into(),
            client_addr: ClientAddr::V4(Ipv4Addr::new(192, 168, 1, 2)),
            native_os: 0,
            logon_time: 1_700_000_000,
            numopens: 1,
            flags,
        }
    }
}
