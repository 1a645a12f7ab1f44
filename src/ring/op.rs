//! The backend-neutral middle of `ring`: the vocabulary that the io_uring
//! driver ([`driver`](super::driver)) and the epoll driver
//! ([`epoll`](super::epoll)) share, and the [`OpDriver`] trait both
//! implement. Neither driver imports the other; both import this.
//!
//! * [`Op`] and [`Completion`]: an owned operation and its final result, with
//!   the `result` an io_uring CQE would carry (bytes, or `-errno`);
//! * [`UnixAddr`], [`RegBuf`], [`WakeFd`]: what an op or a parked driver
//!   holds;
//! * [`Token`]: the one `user_data` layout (kind, generation, index) used by
//!   every driver and event loop in `ring`; [`SqeId`] wraps it for callers;
//! * timers are [`Duration`]s; only the io_uring driver turns them into the
//!   kernel's timespec.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// `IORING_CQE_F_SOCK_NONEMPTY`: the kernel left data queued on the socket
/// after this receive. Only the io_uring driver sets it.
pub const CQE_F_SOCK_NONEMPTY: u32 = 1 << 2;

/// The `user_data` of one operation or event, as every driver and event
/// loop in `ring` packs it: an 8-bit kind (the loop's own numbering), a
/// 24-bit generation (a slot's reuse count, as the slab keeps it) and a
/// 32-bit index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct Token(u64);

impl Token {
    /// The generation bits a token keeps.
    pub(crate) const GEN_MASK: u32 = 0x00ff_ffff;

    /// Packs a kind, a generation (masked to 24 bits) and an index.
    pub(crate) const fn new(kind: u8, gen: u32, index: u32) -> Token {
        Token(((kind as u64) << 56) | (((gen & Self::GEN_MASK) as u64) << 32) | index as u64)
    }
    /// A token read back from the kernel (`user_data`, `epoll_data`).
    pub(crate) const fn from_raw(v: u64) -> Token {
        Token(v)
    }
    /// The packed value, for an SQE's `user_data` or an `epoll_event`.
    pub(crate) const fn raw(self) -> u64 {
        self.0
    }
    /// The kind.
    pub(crate) const fn kind(self) -> u8 {
        (self.0 >> 56) as u8
    }
    /// The generation (24 bits).
    pub(crate) const fn gen(self) -> u32 {
        ((self.0 >> 32) as u32) & Self::GEN_MASK
    }
    /// The index.
    pub(crate) const fn index(self) -> u32 {
        self.0 as u32
    }
}

/// `MSG_PEEK | MSG_DONTWAIT`: look at queued bytes without consuming them or
/// blocking; an empty socket answers `-EAGAIN` at once.
pub const PEEK_NOWAIT: i32 = libc::MSG_PEEK | libc::MSG_DONTWAIT;

/// The bytes of a send, owned by the op until its final completion.
///
/// `Owned`: a `Vec<u8>` handed over (taken back after the send as a spare
/// to receive into, so a caller that hands over its buffers costs no
/// allocation per request). `Shared`: a `bytes::Bytes` (a caller's shared
/// buffer, a static one), sent in place without a copy; the `Bytes` keeps
/// it alive and unchanged until the final completion.
#[derive(Debug, Clone)]
pub enum SendBuf {
    /// A buffer of the op's own.
    Owned(Vec<u8>),
    /// A shared (or static) buffer.
    Shared(bytes::Bytes),
}

impl SendBuf {
    /// A request input as the API takes it (`impl Into<Bytes>`): a
    /// `Vec<u8>` is kept as it is (`Owned`: converting it to `Bytes` and
    /// back to reuse it would cost a heap cell when its length is not its
    /// capacity, and a copy), anything else becomes `Bytes`.
    pub fn from_input<B: Into<bytes::Bytes> + 'static>(input: B) -> SendBuf {
        let mut slot = Some(input);
        if let Some(v) = (&mut slot as &mut dyn std::any::Any).downcast_mut::<Option<Vec<u8>>>() {
            return SendBuf::Owned(v.take().unwrap_or_default());
        }
        SendBuf::Shared(slot.map(Into::into).unwrap_or_default())
    }
}

impl Default for SendBuf {
    fn default() -> SendBuf {
        SendBuf::Owned(Vec::new())
    }
}

impl std::ops::Deref for SendBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            SendBuf::Owned(v) => v,
            SendBuf::Shared(b) => b,
        }
    }
}

impl From<Vec<u8>> for SendBuf {
    fn from(v: Vec<u8>) -> SendBuf {
        SendBuf::Owned(v)
    }
}

impl From<bytes::Bytes> for SendBuf {
    fn from(b: bytes::Bytes) -> SendBuf {
        SendBuf::Shared(b)
    }
}

/// The bytes of a send the pusher keeps while the kernel reads them
/// ([`OpDriver::push_send_held`]): no driver slot holds them, so the send
/// costs no slot insert and no move of its buffer in and out. Only the
/// driver gives them back ([`OpDriver::take_back`]), and only once the
/// send's final completion was reaped; dropped before that (a ring torn
/// down with the send in flight), the bytes are leaked rather than freed
/// under the kernel. They can be read (`Deref`) meanwhile.
#[derive(Debug)]
pub struct HeldSend {
    /// The send's `user_data` (the driver's in-flight record names it).
    ud: u64,
    /// Always `Some` until `release` takes it.
    buf: Option<SendBuf>,
}

impl HeldSend {
    /// Wraps `buf`, sent by the SQE whose `user_data` (or test id) is `ud`.
    pub(crate) fn new(ud: u64, buf: SendBuf) -> HeldSend {
        HeldSend { ud, buf: Some(buf) }
    }

    /// The `user_data` of the send that reads these bytes.
    pub(crate) fn ud(&self) -> u64 {
        self.ud
    }

    /// The bytes, for a driver that saw the send's final completion.
    pub(crate) fn release(mut self) -> SendBuf {
        self.buf.take().unwrap_or_default()
    }
}

impl Drop for HeldSend {
    fn drop(&mut self) {
        // Not given back by the driver: the kernel may still read them.
        if let Some(buf) = self.buf.take() {
            std::mem::forget(buf);
        }
    }
}

impl std::ops::Deref for HeldSend {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.buf.as_deref().unwrap_or_default()
    }
}

/// A `sockaddr_un` with its length, boxed so its address is stable.
#[derive(Clone)]
pub struct UnixAddr {
    addr: libc::sockaddr_un,
    len: libc::socklen_t,
}

impl std::fmt::Debug for UnixAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UnixAddr").field("len", &self.len).finish()
    }
}

impl UnixAddr {
    /// Builds the address of a socket path; `None` when the path does not
    /// fit `sun_path` (108 bytes with the NUL) or contains a NUL.
    pub fn new(path: &std::path::Path) -> Option<UnixAddr> {
        use std::os::unix::ffi::OsStrExt;
        let bytes = path.as_os_str().as_bytes();
        // SAFETY: sockaddr_un is plain old data; all-zero is a valid value.
        let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
        if bytes.is_empty() || bytes.len() >= addr.sun_path.len() || bytes.contains(&0) {
            return None;
        }
        addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
        for (dst, &src) in addr.sun_path.iter_mut().zip(bytes) {
            *dst = src as libc::c_char;
        }
        let len = (std::mem::size_of::<libc::sa_family_t>() + bytes.len() + 1) as libc::socklen_t;
        Some(UnixAddr { addr, len })
    }

    /// The address and its length, as `connect(2)` takes them.
    pub(crate) fn as_raw(&self) -> (*const libc::sockaddr, libc::socklen_t) {
        ((&self.addr as *const libc::sockaddr_un).cast(), self.len)
    }
}

/// A registered buffer slot, owned by whoever holds this token.
#[derive(Debug)]
pub struct RegBuf {
    index: u16,
}

impl RegBuf {
    /// A token for slot `index` (for a driver that owns the table).
    pub(crate) fn new(index: u16) -> RegBuf {
        RegBuf { index }
    }

    /// The slot's index in the registered table.
    pub fn index(&self) -> u16 {
        self.index
    }
}

/// The socket an [`Op`] works on.
#[derive(Debug, Clone)]
pub enum Sock {
    /// A socket the op holds open itself until its final completion (an
    /// open's socket, before it is a pipe's).
    Held(Rc<OwnedFd>),
    /// A socket named by its descriptor only: whoever pushes the op keeps
    /// it open (and, once adopted, in the driver's file table) until the
    /// op's final completion. Naming it touches no reference count, a
    /// cache miss per request with many busy pipes. The engine's ops on an
    /// open pipe are these: a pipe entry, which holds its socket, is let go
    /// only once no op on the pipe is left, and the driver goes before the
    /// pipe entries when a ring ends.
    Kept(RawFd),
}

impl AsRawFd for Sock {
    fn as_raw_fd(&self) -> RawFd {
        match self {
            Sock::Held(fd) => fd.as_raw_fd(),
            Sock::Kept(fd) => *fd,
        }
    }
}

impl From<Rc<OwnedFd>> for Sock {
    fn from(fd: Rc<OwnedFd>) -> Sock {
        Sock::Held(fd)
    }
}

/// One io_uring operation and everything it owns until its final completion
/// (its socket too, unless the op names a [`Sock::Kept`] one).
#[derive(Debug)]
pub enum Op {
    /// `connect(2)` of `fd` to `addr`.
    Connect {
        /// The socket.
        fd: Sock,
        /// Where to connect.
        addr: Box<UnixAddr>,
    },
    /// `send(2)` of `buf[start..]` with `MSG_WAITALL | MSG_NOSIGNAL`: the
    /// kernel retries partial sends, so a short result means an error.
    Send {
        /// The socket.
        fd: Sock,
        /// The bytes to send (from `start`): see [`SendBuf`].
        buf: SendBuf,
        /// First byte of `buf` to send.
        start: usize,
    },
    /// `recv(2)` into the spare capacity of `buf` (from `buf.len()` up to
    /// `buf.len() + len`); on completion the driver extends `buf.len()` by
    /// the byte count the kernel wrote.
    Recv {
        /// The socket.
        fd: Sock,
        /// Destination. io_uring writes into its spare capacity, which then
        /// needs `len` bytes; a driver whose `recv_allocates` is true grows
        /// it as bytes arrive instead.
        buf: Vec<u8>,
        /// How many bytes to ask for.
        len: u32,
        /// `recv` flags (`MSG_PEEK`, `MSG_DONTWAIT`, `MSG_WAITALL`).
        flags: i32,
    },
    /// `recv(2)` of up to `len` bytes into a buffer the KERNEL picks from
    /// the driver's provided-buffer ring when data arrives
    /// (`IOSQE_BUFFER_SELECT`): a receive waiting for data holds no memory.
    /// On completion the driver copies the bytes into `data` (exact size)
    /// and puts the buffer back at once. `-ENOBUFS`: the pool was empty.
    RecvPooled {
        /// The socket.
        fd: Sock,
        /// How many bytes to ask for (at most the pool's buffer size).
        len: u32,
        /// `recv` flags.
        flags: i32,
        /// The received bytes, filled in on completion.
        data: Vec<u8>,
    },
    /// A multishot `recv(2)` on the provided-buffer pool
    /// (`IORING_RECV_MULTISHOT`): stays armed and completes once per chunk
    /// of data that arrives, each time into a pool buffer the kernel picks.
    /// Every chunk is delivered as a [`Completion`] with `more` set and an
    /// [`Op::Chunk`] whose bytes the driver lends; the op stays in flight
    /// until a completion without `more` (end of stream, error, `-ENOBUFS`
    /// when the pool ran dry, or a cancel).
    RecvMulti {
        /// The socket.
        fd: Sock,
        /// The bytes a final completion still carried, copied out (empty
        /// in the op that stays armed).
        data: Vec<u8>,
    },
    /// One chunk of a multishot receive, as a [`Completion`] with `more`
    /// carries it (the receive, which holds the descriptor, stays in
    /// flight). Its bytes, as many as a positive result says, are LENT: they
    /// stay in the driver's receive-pool buffer, read with
    /// [`OpDriver::lent_chunk`], until the driver's next `reap_one` puts the
    /// buffer back, so the engine copies each share straight to its request
    /// or the pushback. Never pushed.
    Chunk,
    /// The final completion of a held send ([`OpDriver::push_send_held`]):
    /// its bytes stay with the pusher, who takes them back with
    /// [`OpDriver::take_back`]. Never pushed.
    Sent,
    /// `IORING_OP_WRITE_FIXED` from registered slot `buf`, bytes `0..len`.
    WriteFixed {
        /// The socket.
        fd: Sock,
        /// The registered slot (shared with the read that follows).
        buf: Rc<RegBuf>,
        /// Offset of the first byte to write in the slot.
        start: u32,
        /// One past the last byte to write.
        end: u32,
    },
    /// `IORING_OP_READ_FIXED` into registered slot `buf`, up to `len` bytes.
    /// A short read fails the link (the kernel cancels what follows).
    ReadFixed {
        /// The socket.
        fd: Sock,
        /// The registered slot.
        buf: Rc<RegBuf>,
        /// Bytes to read at most.
        len: u32,
    },
    /// A plain timer (`IORING_OP_TIMEOUT`, relative, no completion count):
    /// completes `-ETIME` when `after` has passed.
    Timer {
        /// How long from the push.
        after: Duration,
    },
}

impl Op {
    /// The socket this op works on, if any.
    pub fn fd(&self) -> Option<&Sock> {
        match self {
            Op::Connect { fd, .. }
            | Op::Send { fd, .. }
            | Op::Recv { fd, .. }
            | Op::RecvPooled { fd, .. }
            | Op::RecvMulti { fd, .. }
            | Op::WriteFixed { fd, .. }
            | Op::ReadFixed { fd, .. } => Some(fd),
            Op::Timer { .. } | Op::Chunk | Op::Sent => None,
        }
    }
}

/// Identifies one pushed operation (its `user_data`), for cancelling it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SqeId(u64);

impl SqeId {
    /// A placeholder that names no operation (never handed out by a driver
    /// as a pushed op's id; only for filling unused places).
    pub(crate) const NONE: SqeId = SqeId(u64::MAX);

    /// An id from its raw value (for a test driver).
    #[cfg(test)]
    pub(crate) fn from_raw(v: u64) -> SqeId {
        SqeId(v)
    }
    /// The raw value (for a test driver).
    #[cfg(test)]
    pub(crate) fn raw(self) -> u64 {
        self.0
    }
    /// The id of the op a driver keeps under `token`.
    pub(crate) fn from_token(token: Token) -> SqeId {
        SqeId(token.raw())
    }
    /// The token this id was made from.
    pub(crate) fn token(self) -> Token {
        Token::from_raw(self.0)
    }
}

/// The final completion of one operation, with its resources handed back.
#[derive(Debug)]
pub struct Completion {
    /// The caller's token given at push time.
    pub token: u64,
    /// The CQE result: bytes or 0 on success, `-errno` on failure.
    pub result: i32,
    /// The CQE flags (`IORING_CQE_F_SOCK_NONEMPTY`, ...).
    pub flags: u32,
    /// The operation, with its buffer filled for receives.
    pub op: Op,
    /// The op stays in flight and completes again (a multishot receive's
    /// chunk, `IORING_CQE_F_MORE`); false on an op's final completion.
    pub more: bool,
}

impl Completion {
    /// Whether the kernel reported that data is still queued on the socket
    /// after this receive (only meaningful when [`Features::sock_nonempty`]).
    pub fn sock_nonempty(&self) -> bool {
        self.flags & CQE_F_SOCK_NONEMPTY != 0
    }
}

/// The eventfd other threads write to wake a parked driver, and the flag
/// that says whether a write is needed (no syscall while the driver is busy).
#[derive(Debug)]
pub struct WakeFd {
    fd: OwnedFd,
    parked: AtomicBool,
}

impl WakeFd {
    pub(crate) fn new() -> io::Result<WakeFd> {
        // SAFETY: plain syscall with no pointer arguments.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: eventfd returned a fresh descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(WakeFd {
            fd,
            parked: AtomicBool::new(false),
        })
    }

    /// Wakes the driver if it is parked (or about to park). Cheap otherwise.
    pub fn wake(&self) {
        if self.parked.swap(false, Ordering::SeqCst) {
            let one: u64 = 1;
            // SAFETY: writes 8 bytes from a valid u64 to our eventfd.
            let _ = unsafe { libc::write(self.fd.as_raw_fd(), (&one as *const u64).cast(), 8) };
        }
    }

    /// The eventfd, for a backend that polls it instead of reading it in the ring.
    pub(crate) fn as_fd(&self) -> &OwnedFd {
        &self.fd
    }

    /// Announces that the driver is about to park. The caller must re-check
    /// its work queue after this and call [`WakeFd::unpark`] if it finds work.
    pub fn prepare_park(&self) {
        self.parked.store(true, Ordering::SeqCst);
    }

    /// Cancels a [`WakeFd::prepare_park`].
    pub fn unpark(&self) {
        self.parked.store(false, Ordering::SeqCst);
    }
}
/// What the running kernel's io_uring can do, as far as opipe cares.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Features {
    /// The kernel sets `IORING_CQE_F_SOCK_NONEMPTY` on AF_UNIX stream
    /// `RECV` completions that leave data queued (seen on 6.17+), and leaves
    /// it clear when the queue is empty. Probed for real, never assumed.
    pub sock_nonempty: bool,
    /// `IORING_OP_SOCKET` exists (5.19+).
    pub op_socket: bool,
    /// The driver runs ops on a [`Sock::Kept`] socket (the epoll fallback
    /// does not: it tells a reused descriptor number by the op's hold).
    pub kept_sockets: bool,
}

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

/// Whether a driver keeps a given-back buffer of `cap` bytes as a spare
/// for a later pooled receive, while it keeps `kept` of at most `max`:
/// only one no larger than a receive-pool buffer (`pool_buf` bytes), so
/// the spares hold at most the pool's memory again.
#[inline]
pub(crate) fn keeps_spare(cap: usize, pool_buf: usize, kept: usize, max: usize) -> bool {
    cap > 0 && cap <= pool_buf && kept < max
}

/// An owned-resource operation driver (see [`Driver`](super::driver::Driver) for the contract of
/// each method; every implementation follows it exactly). A driver owns
/// what it holds (`'static`): the engine's ring callbacks see the core
/// that owns it as a `dyn` of no borrowed lifetime.
pub trait OpDriver: 'static {
    /// The backend this driver is (no caller inside the crate today; kept
    /// as part of every driver's contract).
    #[allow(dead_code)]
    fn backend(&self) -> Backend;

    /// Pushes one operation; its [`Completion`] carries `token`.
    fn push(&mut self, op: Op, token: u64) -> SqeId;

    /// Pushes operations linked in order (`IOSQE_IO_LINK` semantics): each
    /// starts only when the previous one fully succeeded; a failure, a short
    /// send or a short `MSG_WAITALL` receive completes the rest with
    /// `-ECANCELED`. A short plain receive does not break the chain.
    fn push_chain<I: IntoIterator<Item = (Op, u64)>>(&mut self, ops: I, ids: &mut Vec<SqeId>);

    /// Pushes a send of `buf[start..]` (as [`Op::Send`]) whose bytes the
    /// caller keeps, held, until the send's final completion (an
    /// [`Op::Sent`] carrying `token`): the driver keeps no slot for it.
    /// `Err(buf)`: the driver does not hold sends (or has one under this
    /// token's index in flight); push an [`Op::Send`] instead.
    fn push_send_held(
        &mut self,
        _fd: Sock,
        buf: SendBuf,
        _start: usize,
        _token: u64,
    ) -> Result<(SqeId, HeldSend), SendBuf> {
        Err(buf)
    }

    /// The bytes of a held send whose final completion was reaped;
    /// `Err` (the same hold) while the kernel may still read them.
    fn take_back(&mut self, held: HeldSend) -> Result<SendBuf, HeldSend> {
        Err(held)
    }

    /// Cancels one operation: if it has not completed yet it completes with
    /// `-ECANCELED` (or what it had transferred), its chain successors with
    /// `-ECANCELED`; an operation already completed is left alone.
    fn cancel(&mut self, id: SqeId);

    /// Starts what was pushed and waits until at least `want` completions
    /// are ready (0: do not wait), `timeout` passes, or the wake handle fires.
    fn submit_and_wait(&mut self, want: usize, timeout: Option<Duration>) -> io::Result<()>;

    /// The next completion ready (a final one, or a multishot chunk), if
    /// any. The ring loop takes them one at a time and hands each to the
    /// engine at once, so a batch of completions is never copied into a
    /// buffer first (at 1 024 busy pipes that buffer outgrew the L1 cache).
    fn reap_one(&mut self) -> Option<Completion>;

    /// Reads the completions ready so far (a batch) if none is left to
    /// hand out, and calls `f` with the token of each of those
    /// [`OpDriver::reap_one`] hands out next: the engine starts fetching
    /// what they will touch before it handles the first. A hint: the
    /// default calls nothing.
    fn upcoming(&mut self, _f: &mut dyn FnMut(u64)) {}

    /// Appends every completion ready so far to `out` (tests).
    #[cfg(test)]
    fn reap(&mut self, out: &mut Vec<Completion>) {
        while let Some(c) = self.reap_one() {
            out.push(c);
        }
    }

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

    /// An empty buffer to copy received bytes into: one given back by
    /// [`OpDriver::recycle`] if the driver keeps any, else a new one.
    fn spare_buf(&mut self) -> Vec<u8> {
        Vec::new()
    }

    /// The bytes of the [`Op::Chunk`] completion last reaped (empty
    /// when the last one was something else).
    fn lent_chunk(&self) -> &[u8] {
        &[]
    }

    /// [`OpDriver::recycle`] for a sent request's bytes: an owned buffer
    /// is taken back as it is; a shared one only when no one else holds it
    /// any more (a caller's `Bytes` clone, or a static one, is just let go,
    /// never copied).
    fn recycle_sent(&mut self, buf: SendBuf) {
        match buf {
            SendBuf::Owned(v) => self.recycle(v),
            SendBuf::Shared(b) => {
                if let Ok(b) = b.try_into_mut() {
                    self.recycle(Vec::from(b));
                }
            }
        }
    }

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

    /// A pipe's socket that will carry the pipe's operations from now on:
    /// the driver may make it cheaper to name (io_uring: a registered file,
    /// so no SQE on it looks the descriptor up). [`OpDriver::close`] undoes it.
    fn adopt(&mut self, _fd: &OwnedFd) {}

    /// Lets go of a socket: it closes once no operation holds it either.
    fn close(&mut self, fd: Rc<OwnedFd>) {
        drop(fd)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_vec_input_stays_owned_and_anything_else_is_shared() {
        let v = b"abc".to_vec();
        let ptr = v.as_ptr();
        match SendBuf::from_input(v) {
            SendBuf::Owned(v) => assert_eq!(v.as_ptr(), ptr, "the same buffer"),
            SendBuf::Shared(_) => panic!("a Vec became Bytes"),
        }
        let b = bytes::Bytes::from_static(b"xyz");
        assert!(matches!(SendBuf::from_input(b.clone()), SendBuf::Shared(s) if s == b));
        let s: &'static [u8] = b"static";
        assert!(matches!(SendBuf::from_input(s), SendBuf::Shared(_)));
        assert_eq!(&*SendBuf::from_input(String::from("str")), b"str");
    }

    #[test]
    fn token_round_trips_and_masks_the_generation() {
        let t = Token::new(0xab, 0x0123_4567, u32::MAX);
        assert_eq!(t.kind(), 0xab);
        assert_eq!(t.gen(), 0x0023_4567, "24 bits of generation kept");
        assert_eq!(t.index(), u32::MAX);
        assert_eq!(Token::from_raw(t.raw()), t);
        assert_ne!(Token::new(1, 0, 0), Token::new(2, 0, 0));
        let id = SqeId::from_token(Token::new(0, 5, 7));
        assert_eq!((id.token().gen(), id.token().index()), (5, 7));
    }
}
