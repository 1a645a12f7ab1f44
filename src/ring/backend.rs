//! The interface the engine's per-ring state machine drives: push owned
//! operations (alone or as `IO_LINK` chains), cancel them, wait, and reap
//! their final completions.
//!
//! Two implementations: [`Driver`] (io_uring, the default) and
//! [`EpollDriver`](super::epoll::EpollDriver) (nonblocking syscalls + epoll,
//! for machines where io_uring is refused). Both complete every [`Op`] with
//! the same `result` an io_uring CQE would carry, so the engine above them
//! cannot tell them apart except through [`OpDriver::features`] and the
//! registered-buffer pool (which only io_uring has).
//!
//! The engine is generic over this trait (monomorphised: the io_uring path
//! pays nothing for the second backend).

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use super::driver::{Completion, Driver, Op, RegBuf, SqeId, WakeFd};
use super::setup::Features;

/// Which I/O backend an engine ring or a service loop runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Backend {
    /// io_uring (SQE chains, registered and provided buffers,
    /// SOCK_NONEMPTY when the kernel has it).
    IoUring,
    /// Nonblocking syscalls driven by epoll, with the same semantics.
    Epoll,
}

impl Backend {
    /// The backend's name: `io_uring` or `epoll`.
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::IoUring => "io_uring",
            Backend::Epoll => "epoll",
        }
    }
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The backend an engine or a service is asked to use.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum BackendChoice {
    /// io_uring when the kernel grants a ring with everything needed, else
    /// epoll, said once on stderr. The default.
    #[default]
    Auto,
    /// io_uring or nothing: start-up fails with a plain-words error where
    /// io_uring is refused.
    IoUring,
    /// epoll, without touching io_uring at all.
    Epoll,
}

impl std::fmt::Display for BackendChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            BackendChoice::Auto => "auto",
            BackendChoice::IoUring => "io-uring",
            BackendChoice::Epoll => "epoll",
        })
    }
}

/// Parses `auto`, `io-uring` (or `io_uring`, `uring`) and `epoll`.
impl std::str::FromStr for BackendChoice {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "auto" => Ok(BackendChoice::Auto),
            "io-uring" | "io_uring" | "uring" => Ok(BackendChoice::IoUring),
            "epoll" => Ok(BackendChoice::Epoll),
            _ => Err(format!(
                "unknown backend {s:?} (expected auto, io-uring or epoll)"
            )),
        }
    }
}

/// An owned-resource operation driver (see [`Driver`] for the contract of
/// each method; every implementation follows it exactly).
pub trait OpDriver {
    /// The backend this driver is.
    fn backend(&self) -> Backend;

    /// Pushes one operation; its [`Completion`] carries `token`.
    fn push(&mut self, op: Op, token: u64) -> SqeId;

    /// Pushes operations linked in order (`IOSQE_IO_LINK` semantics): each
    /// starts only when the previous one fully succeeded; a failure, a short
    /// send or a short `MSG_WAITALL` receive completes the rest with
    /// `-ECANCELED`. A short plain receive does not break the chain.
    fn push_chain<I: IntoIterator<Item = (Op, u64)>>(&mut self, ops: I, ids: &mut Vec<SqeId>);

    /// Cancels one operation: if it has not completed yet it completes with
    /// `-ECANCELED` (or what it had transferred), its chain successors with
    /// `-ECANCELED`; an operation already completed is left alone.
    fn cancel(&mut self, id: SqeId);

    /// Starts what was pushed and waits until at least `want` completions
    /// are ready (0: do not wait), `timeout` passes, or the wake handle fires.
    fn submit_and_wait(&mut self, want: usize, timeout: Option<Duration>) -> io::Result<()>;

    /// Appends every final completion ready so far to `out`.
    fn reap(&mut self, out: &mut Vec<Completion>);

    /// What the backend can do (SOCK_NONEMPTY on receive completions...).
    fn features(&self) -> Features;

    /// The handle other threads use to wake a parked driver.
    fn wake_handle(&self) -> Arc<WakeFd>;

    /// Takes a free registered slot (`None`: no pool, or full).
    fn reg_alloc(&mut self) -> Option<Rc<RegBuf>>;

    /// Gives a registered slot back once no operation holds it.
    fn reg_release(&mut self, buf: Rc<RegBuf>);

    /// Bytes per registered slot (0 without a pool).
    fn reg_slot_bytes(&self) -> usize;

    /// Size of a receive-pool buffer (0: no pool, so no `Op::RecvPooled`).
    fn recv_pool_buf_bytes(&self) -> usize;

    /// A registered slot's bytes while no operation holds it.
    fn reg_bytes(&self, buf: &Rc<RegBuf>) -> Option<&[u8]>;

    /// A registered slot's bytes, writable, while no operation holds it.
    fn reg_bytes_mut(&mut self, buf: &Rc<RegBuf>) -> Option<&mut [u8]>;

    /// Takes back a buffer no operation holds any more (a finished
    /// request's), for the driver to receive into later; may drop it.
    fn recycle(&mut self, buf: Vec<u8>);

    /// True when the driver grows an `Op::Recv` buffer itself as bytes
    /// arrive (epoll: the receive runs on readiness), so the engine may
    /// push it empty; false when the kernel writes into the buffer's spare
    /// capacity, which must then hold `len` bytes (io_uring).
    fn recv_allocates(&self) -> bool;

    /// A new `AF_UNIX` stream socket for an open or a WAIT attempt
    /// (`Err(errno)` when none can be made: `EMFILE`, `ENOBUFS`...).
    fn unix_socket(&mut self) -> Result<Rc<OwnedFd>, i32> {
        super::sock::unix_stream_socket().map(Rc::new)
    }

    /// Bytes queued on a socket right now (`FIONREAD`); `None` on error.
    fn queued_bytes(&self, fd: &OwnedFd) -> Option<usize> {
        super::sock::fionread(fd.as_raw_fd()).ok()
    }

    /// Shuts a socket down both ways (a closing pipe): what is in flight on
    /// it completes.
    fn shutdown(&mut self, fd: &OwnedFd) {
        super::sock::shutdown(fd)
    }

    /// Lets go of a socket: it closes once no operation holds it either.
    fn close(&mut self, fd: Rc<OwnedFd>) {
        drop(fd)
    }
}

impl OpDriver for Driver {
    #[inline]
    fn backend(&self) -> Backend {
        Backend::IoUring
    }
    #[inline]
    fn push(&mut self, op: Op, token: u64) -> SqeId {
        Driver::push(self, op, token)
    }
    #[inline]
    fn push_chain<I: IntoIterator<Item = (Op, u64)>>(&mut self, ops: I, ids: &mut Vec<SqeId>) {
        Driver::push_chain(self, ops, ids)
    }
    #[inline]
    fn cancel(&mut self, id: SqeId) {
        Driver::cancel(self, id)
    }
    #[inline]
    fn submit_and_wait(&mut self, want: usize, timeout: Option<Duration>) -> io::Result<()> {
        Driver::submit_and_wait(self, want, timeout)
    }
    #[inline]
    fn reap(&mut self, out: &mut Vec<Completion>) {
        Driver::reap(self, out)
    }
    #[inline]
    fn features(&self) -> Features {
        Driver::features(self)
    }
    #[inline]
    fn wake_handle(&self) -> Arc<WakeFd> {
        Driver::wake_handle(self)
    }
    #[inline]
    fn reg_alloc(&mut self) -> Option<Rc<RegBuf>> {
        Driver::reg_alloc(self)
    }
    #[inline]
    fn reg_release(&mut self, buf: Rc<RegBuf>) {
        Driver::reg_release(self, buf)
    }
    #[inline]
    fn reg_slot_bytes(&self) -> usize {
        Driver::reg_slot_bytes(self)
    }
    #[inline]
    fn recv_pool_buf_bytes(&self) -> usize {
        Driver::recv_pool_buf_bytes(self)
    }
    #[inline]
    fn reg_bytes(&self, buf: &Rc<RegBuf>) -> Option<&[u8]> {
        Driver::reg_bytes(self, buf)
    }
    #[inline]
    fn reg_bytes_mut(&mut self, buf: &Rc<RegBuf>) -> Option<&mut [u8]> {
        Driver::reg_bytes_mut(self, buf)
    }
    #[inline]
    fn recycle(&mut self, buf: Vec<u8>) {
        Driver::recycle(self, buf)
    }
    #[inline]
    fn recv_allocates(&self) -> bool {
        false
    }
}
