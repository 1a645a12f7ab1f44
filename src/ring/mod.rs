//! The io_uring layer: ring set-up, probing, and the SQE machinery used by
//! the engine and the service. This is the only module with `unsafe` code;
//! every unsafe block carries a `// SAFETY:` comment saying what it relies on.

pub mod bufring;
pub mod server;
pub mod setup;
pub mod sys;

pub use setup::{new_ring, probe_features, Features, RingError, SetupFlags};
