//! The io_uring layer: ring set-up, probing, and the SQE machinery used by
//! the engine and the service. This is the only module with `unsafe` code;
//! every unsafe block carries a `// SAFETY:` comment saying what it relies on.

pub mod setup;

pub use setup::{new_ring, probe_features, Features, RingError, SetupFlags};
pub mod driver;

pub use driver::{Completion, Driver, DriverConfig, Op, RegBuf, SqeId, UnixAddr, WakeFd};
pub mod sock;

pub use sock::{fionread, shutdown, unix_stream_socket};
