//! The io_uring layer: ring set-up, probing, and the SQE machinery used by
//! the engine and the service. This is the only module with `unsafe` code;
//! every unsafe block carries a `// SAFETY:` comment saying what it relies on.
//!
//! * [`setup`]: ring creation with clear errors, kernel feature probes;
//! * [`backend`]: the [`OpDriver`] trait the engine drives, implemented by
//!   [`driver`] (the engine's owned-resource SQE driver: chains, cancel,
//!   registered buffers) and by [`epoll`] (the same semantics with
//!   nonblocking syscalls + epoll, where io_uring is refused);
//! * [`server`] and [`bufring`]: the pipe service's event loop (multishot
//!   accept and receive on a provided-buffer ring);
//! * [`server_epoll`]: the same service loop on epoll, for machines where
//!   io_uring is switched off;
//! * [`sock`] and [`sys`]: the few direct syscalls.

pub mod backend;
pub mod bufring;
pub mod driver;
pub mod epoll;
pub mod server;
pub mod server_epoll;
pub mod setup;
pub mod sock;
pub mod sys;

pub use backend::{Backend, BackendChoice, OpDriver};
pub use driver::{Completion, Driver, DriverConfig, Op, RegBuf, SqeId, UnixAddr, WakeFd};
pub use epoll::EpollDriver;
pub use setup::{io_uring_available, new_ring, probe_features, Features, RingError, SetupFlags};
pub use sock::{fionread, shutdown, unix_stream_socket};
