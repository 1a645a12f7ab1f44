//! One attempt of a socket op: the nonblocking syscall, then complete the
//! op or park it on readiness or a retry time (the emulation rules are in
//! the module's doc).

use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use super::{errno, EpollDriver, CONNECT_RETRY_MAX};
use crate::ring::op::Op;

impl EpollDriver {
    /// A `Connect`: start it, or read the outcome of one in progress.
    pub(super) fn attempt_connect(&mut self, index: u32) {
        let s = &mut self.slots[index as usize];
        let Some(Op::Connect { fd, addr }) = s.op.as_mut() else {
            return;
        };
        let raw = fd.as_raw_fd();
        if s.tries == u32::MAX {
            // In progress: the outcome is in SO_ERROR.
            let mut err: libc::c_int = 0;
            let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
            // SAFETY: `raw` is open (the op holds its Rc); `err` and
            // `len` are valid for getsockopt to write.
            let rc = unsafe {
                libc::getsockopt(
                    raw,
                    libc::SOL_SOCKET,
                    libc::SO_ERROR,
                    (&mut err as *mut libc::c_int).cast(),
                    &mut len,
                )
            };
            let r = if rc < 0 { -errno() } else { -err };
            return self.complete(index, r);
        }
        if s.tries == 0 {
            // A failure here shows up as a blocking connect's error.
            let _ = crate::ring::sys::set_nonblocking(fd);
        }
        s.tries += 1;
        let (ptr, len) = addr.as_raw();
        // SAFETY: `raw` is open; `ptr`/`len` describe the boxed
        // sockaddr_un owned by the op, alive for the call.
        let rc = unsafe { libc::connect(raw, ptr, len) };
        let e = if rc == 0 { 0 } else { errno() };
        match e {
            0 => self.complete(index, 0),
            libc::EINPROGRESS => {
                s.tries = u32::MAX;
                let fd = fd.clone();
                self.park_fd(index, &fd, true);
            }
            libc::EAGAIN | libc::EINTR => {
                // Backlog full: nothing started; try again shortly.
                let shift = (s.tries - 1).min(4);
                let wait = Duration::from_millis(1 << shift).min(CONNECT_RETRY_MAX);
                self.park_time(index, Instant::now() + wait);
            }
            e => self.complete(index, -e),
        }
    }

    /// A `Send` (`MSG_WAITALL`): everything, waiting for room in between.
    pub(super) fn attempt_send(&mut self, index: u32) {
        let s = &mut self.slots[index as usize];
        let Some(Op::Send { fd, buf, start }) = s.op.as_mut() else {
            return;
        };
        let raw = fd.as_raw_fd();
        let begin = (*start).min(buf.len());
        loop {
            let rest = &buf[(begin + s.done).min(buf.len())..];
            if rest.is_empty() {
                let r = s.done as i32;
                return self.complete(index, r);
            }
            // SAFETY: `raw` is open; `rest` is valid for reads of its length.
            let n = unsafe {
                libc::send(
                    raw,
                    rest.as_ptr().cast(),
                    rest.len(),
                    libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
                )
            };
            if n > 0 {
                s.done += n as usize;
                continue;
            }
            let e = if n == 0 { libc::EIO } else { errno() };
            match e {
                libc::EINTR => continue,
                libc::EAGAIN => {
                    let fd = fd.clone();
                    return self.park_fd(index, &fd, true);
                }
                e => {
                    let r = if s.done > 0 { s.done as i32 } else { -e };
                    return self.complete(index, r);
                }
            }
        }
    }

    /// A `Recv`: one receive once readable, or (`MSG_WAITALL`) until `len`
    /// bytes, the end or an error; with `MSG_DONTWAIT`, never waits.
    pub(super) fn attempt_recv(&mut self, index: u32) {
        let s = &mut self.slots[index as usize];
        let Some(Op::Recv { fd, buf, flags, .. }) = s.op.as_mut() else {
            return;
        };
        let raw = fd.as_raw_fd();
        let flags = *flags;
        let waitall = flags & libc::MSG_WAITALL != 0 && flags & libc::MSG_PEEK == 0;
        loop {
            let left = s.want - s.done;
            if left == 0 && s.want > 0 {
                let r = s.done as i32;
                return self.complete(index, r);
            }
            // Straight into the buffer's spare capacity when it has
            // room; otherwise (the engine hands this driver empty
            // buffers, so a pipe that waits holds no receive memory)
            // into the scratch buffer, appended below.
            let direct = buf.capacity() - buf.len() >= left;
            let ptr = if direct {
                // The spare capacity starts right after the initialised part.
                buf.as_mut_ptr().wrapping_add(buf.len())
            } else {
                if self.scratch.len() < left {
                    self.scratch.resize(left, 0);
                }
                self.scratch.as_mut_ptr()
            };
            // SAFETY: `raw` is open; `ptr` points at `left` writable
            // bytes: `buf`'s spare capacity (checked just above) or
            // the scratch buffer (at least `left` long).
            let n = unsafe {
                libc::recv(
                    raw,
                    ptr.cast(),
                    left,
                    (flags & !libc::MSG_WAITALL) | libc::MSG_DONTWAIT,
                )
            };
            if n > 0 {
                let n = (n as usize).min(left);
                if direct {
                    // SAFETY: recv initialised `n` bytes of spare
                    // capacity starting at `buf.len()`; n <= left <= spare.
                    unsafe { buf.set_len(buf.len() + n) };
                } else {
                    buf.extend_from_slice(&self.scratch[..n]);
                }
                s.done += n;
                if waitall && s.done < s.want {
                    continue;
                }
                let r = s.done as i32;
                return self.complete(index, r);
            }
            if n == 0 {
                let r = s.done as i32;
                return self.complete(index, r);
            }
            match errno() {
                libc::EINTR => continue,
                libc::EAGAIN if flags & libc::MSG_DONTWAIT == 0 => {
                    let fd = fd.clone();
                    return self.park_fd(index, &fd, false);
                }
                e => {
                    let r = if s.done > 0 { s.done as i32 } else { -e };
                    return self.complete(index, r);
                }
            }
        }
    }
}
