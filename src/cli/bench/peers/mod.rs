//! The clients `opipe bench` compares, one file each, all behind the
//! [`Peer`](super::peer::Peer) trait:
//!
//! * [`threads`]: one blocking thread per pipe (the seed's model, in user space);
//! * [`tokio`]: one task per pipe on tokio's multi-threaded epoll runtime;
//! * [`tokio_uring`]: one task per pipe on tokio-uring;
//! * [`uring`]: opipe's engine;
//! * [`floor`]: a reference, not an engine: lockstep rounds of blocking calls,
//!   the least client CPU per transceive;
//! * [`uring_min`]: a reference, not an engine: the least an event-driven
//!   io_uring client does (one SEND per request, one multishot receive per pipe).

pub mod floor;
pub mod threads;
pub mod tokio;
pub mod tokio_uring;
pub mod uring;
pub mod uring_min;
