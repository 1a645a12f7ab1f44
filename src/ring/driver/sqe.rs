//! How an [`Op`] becomes its SQE: the one place that turns an op's owned
//! buffers, socket and timespec into the pointers and lengths the kernel
//! reads (the driver keeps what they point at alive until the final CQE).

use std::os::fd::AsRawFd;

use io_uring::{opcode, squeue, types};

use super::{Driver, RECV_POOL_GROUP};
use crate::ring::bufring::BufRing;
use crate::ring::files::{with_fd, FdRef};
use crate::ring::op::{Op, RegBuf, Sock};

/// The most one SEND SQE moves (1 GiB): its length field is 32 bits, and
/// the kernel moves at most about 2 GiB per call anyway.
const MAX_SQE_BYTES: usize = 1 << 30;

/// The kernel's form of a `Timer` op's duration (`None` for other ops).
pub(super) fn timer_spec(op: &Op) -> Option<Box<types::Timespec>> {
    match op {
        Op::Timer { after } => Some(Box::new(types::Timespec::from(*after))),
        _ => None,
    }
}

impl Driver {
    /// How an SQE names `fd`: its registered slot, or the descriptor.
    #[inline]
    pub(super) fn fd_ref(&self, fd: &Sock) -> FdRef {
        FdRef::of(self.files.as_ref(), fd.as_raw_fd())
    }

    /// The SQE of a send of `buf[start..]`.
    #[inline(always)]
    pub(super) fn send_sqe(&self, fd: &Sock, buf: &[u8], start: usize) -> squeue::Entry {
        let s = &buf[start.min(buf.len())..];
        // The SQE's length is 32 bits: a longer send goes in pieces (the
        // engine resumes a short send from its first unsent byte).
        let len = s.len().min(MAX_SQE_BYTES) as u32;
        with_fd!(self.fd_ref(fd), |t| opcode::Send::new(t, s.as_ptr(), len)
            .flags(libc::MSG_WAITALL | libc::MSG_NOSIGNAL)
            .build())
    }

    pub(super) fn build_sqe(&self, op: &Op, ts: Option<&types::Timespec>) -> squeue::Entry {
        match op {
            Op::Connect { fd, addr } => {
                let (ptr, len) = addr.as_raw();
                opcode::Connect::new(types::Fd(fd.as_raw_fd()), ptr, len).build()
            }
            Op::Send { fd, buf, start } => self.send_sqe(fd, buf, *start),
            Op::Recv {
                fd,
                buf,
                len,
                flags,
            } => {
                let spare = buf.capacity() - buf.len();
                let len = (*len as usize).min(spare) as u32;
                // The spare capacity starts right after the initialised part.
                let ptr = buf.as_ptr().wrapping_add(buf.len()) as *mut u8;
                with_fd!(self.fd_ref(fd), |t| opcode::Recv::new(t, ptr, len)
                    .flags(*flags)
                    .build())
            }
            Op::RecvPooled { fd, len, flags, .. } => {
                let (bgid, max) = match &self.recv_pool {
                    Some(p) => (p.bgid(), p.buf_len()),
                    None => (RECV_POOL_GROUP, 0),
                };
                with_fd!(self.fd_ref(fd), |t| opcode::Recv::new(
                    t,
                    std::ptr::null_mut(),
                    (*len).min(max),
                )
                .flags(*flags)
                .buf_group(bgid)
                .build())
                .flags(squeue::Flags::BUFFER_SELECT)
            }
            Op::RecvMulti { fd, .. } => {
                let bgid = self
                    .recv_pool
                    .as_ref()
                    .map_or(RECV_POOL_GROUP, BufRing::bgid);
                with_fd!(self.fd_ref(fd), |t| opcode::RecvMulti::new(t, bgid).build())
            }
            Op::WriteFixed {
                fd,
                buf,
                start,
                end,
            } => {
                let (ptr, len) = self.reg_range(buf, *start, *end);
                with_fd!(self.fd_ref(fd), |t| opcode::WriteFixed::new(
                    t,
                    ptr,
                    len,
                    buf.index()
                )
                .offset(u64::MAX)
                .build())
            }
            Op::ReadFixed { fd, buf, len } => {
                let (ptr, len) = self.reg_range(buf, 0, *len);
                with_fd!(self.fd_ref(fd), |t| opcode::ReadFixed::new(
                    t,
                    ptr,
                    len,
                    buf.index()
                )
                .offset(u64::MAX)
                .build())
            }
            // Not pushed: only a completion carries these.
            Op::Chunk | Op::Sent => opcode::Nop::new().build(),
            Op::Timer { .. } => match ts {
                Some(ts) => opcode::Timeout::new(ts as *const types::Timespec).build(),
                // Not reached: `push` builds every timer's spec.
                None => opcode::Nop::new().build(),
            },
        }
    }

    fn reg_range(&self, buf: &RegBuf, start: u32, end: u32) -> (*mut u8, u32) {
        match &self.reg {
            Some(p) => {
                let end = (end as usize).min(p.slot_bytes);
                let start = (start as usize).min(end);
                (
                    p.slot_ptr(buf.index()).wrapping_add(start),
                    (end - start) as u32,
                )
            }
            None => (std::ptr::null_mut(), 0),
        }
    }
}
