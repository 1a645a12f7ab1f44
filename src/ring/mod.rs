//! The I/O layer: ring set-up and probing, the operation drivers the
//! engine runs on, and the pipe service's event loops. This is the only
//! module with `unsafe` code; every unsafe block carries a `// SAFETY:`
//! comment saying what it relies on.
//!
//! * [`op`]: the backend-neutral middle: [`Op`], [`Completion`], the
//!   `user_data` token, and the [`OpDriver`] trait the engine drives;
//! * [`driver`] (io_uring: chains, cancel, registered buffers) and
//!   [`epoll`] (the same semantics with nonblocking syscalls + epoll, where
//!   io_uring is refused): the two siblings that implement [`OpDriver`];
//!   neither imports the other;
//! * [`backend`]: the one backend resolution (io_uring probe, else epoll
//!   with the reason) used by the engine and the service;
//! * [`setup`] and [`bufring`]: ring creation with clear errors, kernel
//!   feature probes, and the provided-buffer ring;
//! * [`service`]: the pipe service's event loops (io_uring: multishot accept
//!   and receive on a provided-buffer ring; epoll: the same loop on
//!   readiness), with what both share written once;
//! * [`sock`] and [`sys`]: the few direct syscalls.

pub mod backend;
pub mod bufring;
pub mod driver;
pub mod epoll;
pub mod op;
pub mod service;
pub mod setup;
pub mod sock;
pub mod sys;

pub use backend::{Backend, BackendChoice};
pub use driver::{Driver, DriverConfig};
pub use epoll::EpollDriver;
pub use op::{Completion, Features, Op, OpDriver, RegBuf, SqeId, UnixAddr, WakeFd};
pub use setup::{io_uring_available, new_ring, probe_features, RingError, SetupFlags};
pub use sock::{fionread, shutdown, unix_stream_socket};
