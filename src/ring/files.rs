//! A ring's table of registered files ("fixed files"): an SQE on an adopted
//! pipe socket names its slot instead of its descriptor, so the kernel
//! neither looks the descriptor up nor takes and drops a reference to the
//! file for each operation. Sockets the table has no room for keep their
//! descriptor. The table holds each registered socket open: a socket is
//! taken out of it before it is let go ([`FixedFiles::unregister`]).

use std::os::fd::RawFd;

use io_uring::IoUring;

/// The slots of one ring's sparse file table and which socket holds each.
pub(super) struct FixedFiles {
    /// By descriptor number: its slot + 1, or 0 when it has none.
    slot_of: Vec<u32>,
    /// Slots never used or given back.
    free: Vec<u32>,
}

impl FixedFiles {
    /// A sparse table of `slots` entries (none registered yet), or `None`
    /// when the kernel refuses one (before 5.19, or over RLIMIT_NOFILE).
    pub(super) fn new(ring: &IoUring, slots: u32) -> Option<FixedFiles> {
        if slots == 0 {
            return None;
        }
        match ring.submitter().register_files_sparse(slots) {
            Ok(()) => Some(FixedFiles {
                slot_of: Vec::new(),
                free: (0..slots).rev().collect(),
            }),
            Err(e) => {
                tracing::debug!("opipe: no registered file table ({e}); plain descriptors");
                None
            }
        }
    }

    /// The slot `fd` is registered in.
    pub(super) fn slot(&self, fd: RawFd) -> Option<u32> {
        let i = usize::try_from(fd).ok()?;
        self.slot_of.get(i).and_then(|&s| s.checked_sub(1))
    }

    /// Puts `fd` in a free slot (nothing when it has one, none is free or
    /// the kernel refuses: it keeps its descriptor then).
    pub(super) fn register(&mut self, ring: &IoUring, fd: RawFd) {
        let Ok(i) = usize::try_from(fd) else {
            return;
        };
        if self.slot(fd).is_some() {
            return;
        }
        let Some(slot) = self.free.pop() else {
            return;
        };
        match ring.submitter().register_files_update(slot, &[fd]) {
            Ok(_) => {
                if self.slot_of.len() <= i {
                    self.slot_of.resize(i + 1, 0);
                }
                self.slot_of[i] = slot + 1;
            }
            Err(e) => {
                tracing::debug!("opipe: registering a pipe socket failed ({e}); plain descriptor");
                self.free.push(slot);
            }
        }
    }

    /// Takes `fd` out of its slot, if it has one. Should the kernel refuse,
    /// the slot stays taken (never reused) and the socket closes with the
    /// ring.
    pub(super) fn unregister(&mut self, ring: &IoUring, fd: RawFd) {
        let Some(slot) = self.slot(fd) else {
            return;
        };
        match ring.submitter().register_files_update(slot, &[-1]) {
            Ok(_) => self.free.push(slot),
            Err(e) => tracing::warn!(
                "opipe: unregistering a pipe socket failed ({e}); it closes with its ring"
            ),
        }
        if let Some(s) = usize::try_from(fd)
            .ok()
            .and_then(|i| self.slot_of.get_mut(i))
        {
            *s = 0;
        }
    }
}

/// How an SQE names its socket: a registered slot or the descriptor.
#[derive(Clone, Copy)]
pub(super) enum FdRef {
    Fixed(u32),
    Raw(RawFd),
}

impl FdRef {
    /// `fd`'s slot in `files`, or the descriptor itself.
    #[inline]
    pub(super) fn of(files: Option<&FixedFiles>, fd: RawFd) -> FdRef {
        match files.and_then(|f| f.slot(fd)) {
            Some(slot) => FdRef::Fixed(slot),
            None => FdRef::Raw(fd),
        }
    }
}

/// Builds an opcode with `$fd` (an [`FdRef`]) as `types::Fixed` or
/// `types::Fd`, whichever it is (the builders take either type).
macro_rules! with_fd {
    ($fd:expr, |$t:ident| $build:expr) => {
        match $fd {
            FdRef::Fixed(slot) => {
                let $t = io_uring::types::Fixed(slot);
                $build
            }
            FdRef::Raw(raw) => {
                let $t = io_uring::types::Fd(raw);
                $build
            }
        }
    };
}
pub(super) use with_fd;
