//! The pipe service's event loops: one per service thread, accepting on
//! the listeners and driving every connection's [`Session`].
//!
//! * `uring`: the io_uring loop ([`EventLoop`]: multishot accept and
//!   receive on a provided-buffer ring);
//! * `epoll`: the same loop on nonblocking syscalls + epoll
//!   ([`EpollLoop`]), for machines where io_uring is switched off;
//! * `shared`: what both loops share (session and acceptor traits,
//!   configuration, counters, connection phases, the memory budget,
//!   deadline and eviction helpers). Neither loop imports the other;
//! * `runner`: N loop threads over the listeners with an acceptor
//!   factory, start-up and shutdown/join (the pipe service and the SMB2
//!   front both run on it);
//! * `tcp`: TCP listeners and accepted-socket options (the SMB2 front).

pub(crate) mod epoll;
pub(crate) mod runner;
pub(crate) mod shared;
pub mod tcp;
pub(crate) mod uring;

pub use epoll::EpollLoop;
pub use shared::{
    Acceptor, CloseReason, ConnWaker, LoopConfig, LoopCounters, Session, Verdict, WakerSlot,
    DEFAULT_MAX_BUFFERED_BYTES,
};
pub use uring::EventLoop;
