//! opipe: an io_uring transport for SMB named pipes.
//!
//! The crate is layered; each layer is a module and depends only on the
//! ones above it in this list:
//!
//! * [`protocol`]: the pure wire protocol of the illumos SMB server's pipe
//!   transport (names, open header, netuserinfo XDR, NT statuses, FSCTL
//!   structures, DCE/RPC framing). No sockets, no clocks.
//! * [`ring`]: the I/O layer: a backend-neutral middle (operations,
//!   completions, one `user_data` token, the driver trait), the io_uring and
//!   epoll drivers side by side, the one backend resolution, ring set-up and
//!   probes, and the pipe service's two event loops (`ring::service`). The
//!   only module that contains `unsafe` code, but for `inline_box` (an
//!   in-place box for small ring-thread callbacks, beside the `slab`).
//! * [`engine`]: the SMB-server side: open, transceive, read, write, peek,
//!   wait, cancel and close pipes, as runtime-agnostic futures
//!   (`#![forbid(unsafe_code)]`).
//! * [`service`]: the other end of the socket: a pipe service (handshake,
//!   accept policy, handlers) that serves thousands of connections on the
//!   loops of `ring::service` (`#![forbid(unsafe_code)]`).
//! * [`rng`]: one seeded generator (splitmix64) for the soak, the tests
//!   and the SMB2 front's challenge bytes.
//! * `smb2` (feature `smb2`, which `cli` enables): the SMB2 protocol layer
//!   of an IPC$-only SMB2 server in front of the engine, and its sans-IO
//!   server core (`#![forbid(unsafe_code)]`).
//!
//! The `opipe` command (feature `cli`, on by default) lives in `src/cli/`;
//! embedders depend on the crate with `default-features = false` and compile
//! none of the CLI's or the benchmark peers' dependencies.
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_debug_implementations)]

pub mod engine;
pub mod protocol;
pub mod ring;
pub mod rng;
pub mod service;
#[cfg(feature = "smb2")]
pub mod smb2;

mod inline_box;
mod slab;
