//! A seccomp filter that makes `io_uring_setup(2)` fail with EPERM, as the
//! Docker 25+ / containerd default profiles do, for testing the epoll
//! fallbacks where io_uring is really refused.
#![allow(dead_code)]

use std::io;
use std::os::unix::process::CommandExt;
use std::process::Command;

/// `AUDIT_ARCH_*` of this build (linux/audit.h): a syscall number is only
/// matched for the architecture it belongs to.
#[cfg(target_arch = "x86_64")]
const AUDIT_ARCH: u32 = 0xC000_003E;
#[cfg(target_arch = "aarch64")]
const AUDIT_ARCH: u32 = 0xC000_00B7;

// Classic BPF (linux/bpf_common.h): LD|W|ABS, JMP|JEQ|K, RET|K.
const BPF_LD_W_ABS: u16 = 0x20;
const BPF_JMP_JEQ_K: u16 = 0x15;
const BPF_RET_K: u16 = 0x06;
/// Offsets in `struct seccomp_data { int nr; __u32 arch; ... }`.
const OFFSET_NR: u32 = 0;
const OFFSET_ARCH: u32 = 4;
const SECCOMP_SET_MODE_FILTER: libc::c_ulong = 1;
const SECCOMP_FILTER_FLAG_TSYNC: libc::c_ulong = 1;

fn insn(code: u16, jt: u8, jf: u8, k: u32) -> libc::sock_filter {
    libc::sock_filter { code, jt, jf, k }
}

/// arch == ours && nr == io_uring_setup -> EPERM; everything else allowed.
pub fn refuse_io_uring_setup() -> [libc::sock_filter; 6] {
    [
        insn(BPF_LD_W_ABS, 0, 0, OFFSET_ARCH),
        insn(BPF_JMP_JEQ_K, 0, 3, AUDIT_ARCH),
        insn(BPF_LD_W_ABS, 0, 0, OFFSET_NR),
        insn(BPF_JMP_JEQ_K, 0, 1, libc::SYS_io_uring_setup as u32),
        insn(
            BPF_RET_K,
            0,
            0,
            libc::SECCOMP_RET_ERRNO | libc::EPERM as u32,
        ),
        insn(BPF_RET_K, 0, 0, libc::SECCOMP_RET_ALLOW),
    ]
}

/// Installs `filter` (no allocation, no locks: safe between fork and exec).
/// With `all_threads`, every thread of the process gets it (TSYNC).
pub fn install(filter: &[libc::sock_filter], all_threads: bool) -> io::Result<()> {
    let prog = libc::sock_fprog {
        len: filter.len() as libc::c_ushort,
        filter: filter.as_ptr() as *mut _,
    };
    // SAFETY (test code): prctl/seccomp with integer arguments and a pointer
    // to `prog`, which points at `filter`; both outlive the calls.
    unsafe {
        // Required to install a filter without CAP_SYS_ADMIN.
        if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1 as libc::c_ulong, 0, 0, 0) != 0 {
            return Err(io::Error::last_os_error());
        }
        let flags = if all_threads {
            SECCOMP_FILTER_FLAG_TSYNC
        } else {
            0
        };
        let rc = libc::syscall(
            libc::SYS_seccomp,
            SECCOMP_SET_MODE_FILTER,
            flags,
            &prog as *const libc::sock_fprog,
        );
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Makes `io_uring_setup` fail with EPERM in every thread of this process.
pub fn refuse_io_uring_here() -> io::Result<()> {
    install(&refuse_io_uring_setup(), true)
}

/// Makes `io_uring_setup` fail with EPERM in the process `cmd` starts (and
/// its children: seccomp filters are inherited).
pub fn refuse_io_uring_in(cmd: &mut Command) {
    let filter = refuse_io_uring_setup();
    // SAFETY: the closure runs in the forked child before exec and only
    // calls `install`, which makes syscalls on memory it owns (the filter
    // array moved into the closure): no allocation, no locks.
    unsafe {
        cmd.pre_exec(move || install(&filter, false));
    }
}
