//! Ring set-up and kernel feature probing.
//!
//! Everything that creates an `io_uring` instance goes through [`new_ring`],
//! so that a machine where io_uring is switched off (the
//! `kernel.io_uring_disabled` sysctl, a container's seccomp profile) gets one
//! clear message instead of a bare `EPERM`.

use std::fmt;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use io_uring::{cqueue, opcode, types, IoUring, Probe};

use super::op::Features;

/// Why a ring could not be made or is not usable for opipe.
#[derive(Debug)]
pub enum RingError {
    /// `io_uring_setup(2)` was refused: io_uring is switched off or blocked.
    Unavailable {
        /// The errno `io_uring_setup` failed with (EPERM, ENOSYS, EACCES).
        errno: i32,
    },
    /// The kernel has io_uring but lacks an operation opipe needs.
    MissingOpcode {
        /// Name of the io_uring operation, e.g. `IORING_OP_SEND`.
        name: &'static str,
    },
    /// Any other failure while creating or registering the ring.
    Io(io::Error),
}

impl fmt::Display for RingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RingError::Unavailable { errno } => {
                let what = match *errno {
                    libc::ENOSYS => "ENOSYS: this kernel has no io_uring, or a seccomp filter hides it",
                    libc::EPERM => "EPERM: io_uring is switched off here",
                    libc::EACCES => "EACCES: io_uring is restricted to a group this process is not in",
                    _ => "refused",
                };
                write!(
                    f,
                    "io_uring is not available ({what}; errno {errno}). Common causes: the \
                     kernel.io_uring_disabled sysctl is 1 or 2, or a container seccomp profile \
                     (Docker 25+, containerd, RHEL 9 defaults) blocks io_uring_setup"
                )
            }
            RingError::MissingOpcode { name } => write!(
                f,
                "this kernel's io_uring lacks {name}, which opipe needs (Linux 6.1 or newer has everything)"
            ),
            RingError::Io(e) => write!(f, "io_uring set-up failed: {e}"),
        }
    }
}

impl std::error::Error for RingError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            RingError::Io(e) => Some(e),
            _ => None,
        }
    }
}

impl From<RingError> for io::Error {
    fn from(e: RingError) -> io::Error {
        let kind = match &e {
            RingError::Unavailable { .. } => io::ErrorKind::Unsupported,
            RingError::MissingOpcode { .. } => io::ErrorKind::Unsupported,
            RingError::Io(inner) => inner.kind(),
        };
        io::Error::new(kind, e)
    }
}

/// The set-up flags a ring ended up with (newer kernels accept more).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SetupFlags {
    /// `IORING_SETUP_SINGLE_ISSUER` + `IORING_SETUP_DEFER_TASKRUN`: task work
    /// runs only when the owning thread enters the kernel to wait.
    pub defer_taskrun: bool,
    /// `IORING_SETUP_COOP_TASKRUN`: no IPI to interrupt the owner thread.
    pub coop_taskrun: bool,
    /// `IORING_SETUP_SUBMIT_ALL`: a failing SQE does not stop the batch.
    pub submit_all: bool,
}

fn errno_of(e: &io::Error) -> i32 {
    e.raw_os_error().unwrap_or(0)
}

fn is_refusal(errno: i32) -> bool {
    matches!(errno, libc::EPERM | libc::ENOSYS | libc::EACCES)
}

/// Creates a ring with `entries` submission slots and `cq_entries`
/// completion slots, asking for the cheapest task-run mode the kernel grants.
///
/// The ring must then be used (submitted to and waited on) only by the thread
/// that called this function when `defer_taskrun` came back set.
pub fn new_ring(entries: u32, cq_entries: u32) -> Result<(IoUring, SetupFlags), RingError> {
    // From most to least capable; each step drops a flag older kernels reject.
    let attempts = [
        SetupFlags {
            defer_taskrun: true,
            coop_taskrun: true,
            submit_all: true,
        },
        SetupFlags {
            defer_taskrun: false,
            coop_taskrun: true,
            submit_all: true,
        },
        SetupFlags {
            defer_taskrun: false,
            coop_taskrun: false,
            submit_all: true,
        },
        SetupFlags {
            defer_taskrun: false,
            coop_taskrun: false,
            submit_all: false,
        },
    ];
    let mut last_err = None;
    for flags in attempts {
        let mut b = IoUring::builder();
        b.setup_cqsize(cq_entries.max(entries)).setup_clamp();
        if flags.defer_taskrun {
            b.setup_single_issuer().setup_defer_taskrun();
        }
        if flags.coop_taskrun {
            b.setup_coop_taskrun();
        }
        if flags.submit_all {
            b.setup_submit_all();
        }
        match b.build(entries) {
            Ok(ring) => return Ok((ring, flags)),
            Err(e) if is_refusal(errno_of(&e)) => {
                return Err(RingError::Unavailable {
                    errno: errno_of(&e),
                })
            }
            Err(e) if errno_of(&e) == libc::EINVAL => last_err = Some(e),
            Err(e) => return Err(RingError::Io(e)),
        }
    }
    Err(RingError::Io(last_err.unwrap_or_else(|| {
        io::Error::from_raw_os_error(libc::EINVAL)
    })))
}

/// Operations every opipe ring needs, with the names used in messages.
const REQUIRED_OPCODES: &[(u8, &str)] = &[
    (opcode::Send::CODE, "IORING_OP_SEND"),
    (opcode::Recv::CODE, "IORING_OP_RECV"),
    (opcode::Accept::CODE, "IORING_OP_ACCEPT"),
    (opcode::Connect::CODE, "IORING_OP_CONNECT"),
    (opcode::AsyncCancel::CODE, "IORING_OP_ASYNC_CANCEL"),
    (opcode::LinkTimeout::CODE, "IORING_OP_LINK_TIMEOUT"),
    (opcode::Timeout::CODE, "IORING_OP_TIMEOUT"),
    (opcode::Read::CODE, "IORING_OP_READ"),
    (opcode::ReadFixed::CODE, "IORING_OP_READ_FIXED"),
    (opcode::WriteFixed::CODE, "IORING_OP_WRITE_FIXED"),
    (opcode::Close::CODE, "IORING_OP_CLOSE"),
    (opcode::Shutdown::CODE, "IORING_OP_SHUTDOWN"),
];

fn require_opcodes(ring: &IoUring) -> Result<Probe, RingError> {
    let mut probe = Probe::new();
    ring.submitter()
        .register_probe(&mut probe)
        .map_err(RingError::Io)?;
    for &(code, name) in REQUIRED_OPCODES {
        if !probe.is_supported(code) {
            return Err(RingError::MissingOpcode { name });
        }
    }
    Ok(probe)
}

/// Whether this process may use io_uring for opipe: a small throw-away ring
/// is set up (`io_uring_setup(2)`) and probed for every required opcode.
/// The automatic backend choice falls back to epoll on any error.
pub fn io_uring_available() -> Result<(), RingError> {
    let (ring, _) = new_ring(8, 16)?;
    require_opcodes(&ring).map(drop)
}

/// Checks that `ring` supports every operation opipe needs and probes the
/// optional features. Must be called on the ring's owning thread.
pub fn probe_features(ring: &IoUring) -> Result<Features, RingError> {
    let probe = require_opcodes(ring)?;
    Ok(Features {
        sock_nonempty: probe_sock_nonempty().unwrap_or(false),
        op_socket: probe.is_supported(opcode::Socket::CODE),
        kept_sockets: true,
    })
}

/// Asks a throw-away ring whether AF_UNIX `RECV` completions carry a
/// truthful `SOCK_NONEMPTY` flag: 100 bytes queued, receive 40 (flag must be
/// set), then receive the remaining 60 (flag must be clear).
fn probe_sock_nonempty() -> io::Result<bool> {
    let mut ring: IoUring = IoUring::new(4)?;
    let mut fds = [0i32; 2];
    // SAFETY: `fds` is a valid array of two ints for socketpair to fill.
    let rc = unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_STREAM | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: socketpair succeeded, so both fds are open and owned by nobody else.
    let (a, b) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    let payload = [0x5au8; 100];
    // SAFETY: `payload` is valid for reads of its length; `a` is an open socket.
    let sent = unsafe { libc::send(a.as_raw_fd(), payload.as_ptr().cast(), payload.len(), 0) };
    if sent != payload.len() as isize {
        return Err(io::Error::other("probe send came up short"));
    }
    let mut buf = [0u8; 100];
    let mut flags_seen = [0u32; 2];
    for (i, want) in [40usize, 60].into_iter().enumerate() {
        let sqe = opcode::Recv::new(types::Fd(b.as_raw_fd()), buf.as_mut_ptr(), want as u32)
            .build()
            .user_data(i as u64);
        // SAFETY: `buf` outlives the operation: we wait for its completion
        // below before `buf` goes out of scope, and nothing else touches it.
        unsafe { ring.submission().push(&sqe) }.map_err(|_| io::Error::other("probe SQ full"))?;
        ring.submit_and_wait(1)?;
        let cqe: cqueue::Entry = ring
            .completion()
            .next()
            .ok_or_else(|| io::Error::other("no CQE"))?;
        if cqe.result() != want as i32 {
            return Ok(false);
        }
        flags_seen[i] = cqe.flags();
    }
    Ok(cqueue::sock_nonempty(flags_seen[0]) && !cqueue::sock_nonempty(flags_seen[1]))
}

/// For unit tests: a small ring, or `None` (said loudly) when io_uring is
/// refused on this machine, so a test can skip instead of failing.
#[cfg(test)]
pub(crate) fn ring_or_skip() -> Option<IoUring> {
    match new_ring(8, 16) {
        Ok((ring, _)) => Some(ring),
        Err(RingError::Unavailable { errno }) => {
            eprintln!("SKIPPED: io_uring unavailable here (errno {errno})");
            None
        }
        Err(e) => panic!("unexpected ring set-up failure: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_sets_up_and_has_required_opcodes() {
        let Some(ring) = ring_or_skip() else { return };
        let feats = probe_features(&ring).expect("required opcodes");
        eprintln!("features: {feats:?}");
    }

    #[test]
    fn unavailable_message_names_the_causes() {
        let msg = RingError::Unavailable { errno: libc::EPERM }.to_string();
        assert!(msg.contains("EPERM"), "{msg}");
        assert!(msg.contains("io_uring_disabled"), "{msg}");
        assert!(msg.contains("seccomp"), "{msg}");
    }
}
