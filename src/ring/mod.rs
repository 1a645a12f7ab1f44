//! The I/O layer: ring set-up and probing, the operation drivers the
//! engine runs on, and the pipe service's event loops. This is the only
//! module with `unsafe` code; every unsafe block carries a `// SAFETY:`
//! comment saying what it relies on.
//!
//! * `op`: the backend-neutral middle: `Op`, `Completion`, the
//!   `user_data` token, and the `OpDriver` trait the engine drives;
//! * `driver` (io_uring: chains, cancel, registered buffers) and
//!   `epoll` (the same semantics with nonblocking syscalls + epoll, where
//!   io_uring is refused): the two siblings that implement `OpDriver`;
//!   neither imports the other;
//! * `backend`: the one backend resolution (io_uring probe, else epoll
//!   with the reason) used by the engine and the service;
//! * `setup` and [`bufring`]: ring creation with clear errors, kernel
//!   feature probes, and the provided-buffer ring;
//! * [`service`]: the pipe service's event loops (io_uring: multishot accept
//!   and receive on a provided-buffer ring; epoll: the same loop on
//!   readiness), with what both share written once;
//! * `sock` and [`sys`]: the few direct syscalls.

pub(crate) mod backend;
pub mod bufring;
pub(crate) mod driver;
pub(crate) mod epoll;
mod files;
pub(crate) mod op;
mod reap;
pub mod service;
pub(crate) mod setup;
pub(crate) mod sock;
pub mod sys;

pub use backend::{Backend, BackendChoice};
pub(crate) use driver::{Driver, DriverConfig};
pub(crate) use epoll::EpollDriver;
#[cfg(test)]
pub(crate) use op::{keeps_spare, Features};
pub(crate) use op::{
    Completion, HeldSend, Op, OpDriver, RegBuf, SendBuf, Sock, SqeId, Token, UnixAddr, WakeFd,
};
pub use setup::{new_ring, RingError, SetupFlags};
pub use sock::fionread;
#[cfg(test)]
pub(crate) use sock::unix_stream_socket;
