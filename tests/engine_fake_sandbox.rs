//! The core's deterministic tests (`cargo test --lib engine`, through the
//! fake driver) need neither io_uring nor sockets: they are run here again,
//! in a child where `io_uring_setup`, `socket` and `socketpair` fail with
//! EPERM. A control run of tests that do make sockets must fail under the
//! same filter, so the filter is known to bite.

mod common;

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

#[cfg(target_arch = "x86_64")]
const AUDIT_ARCH: u32 = 0xC000_003E;
#[cfg(target_arch = "aarch64")]
const AUDIT_ARCH: u32 = 0xC000_00B7;

fn insn(code: u16, jt: u8, jf: u8, k: u32) -> libc::sock_filter {
    libc::sock_filter { code, jt, jf, k }
}

/// Refuses io_uring_setup, socket and socketpair (EPERM); allows the rest.
fn refuse_rings_and_sockets() -> [libc::sock_filter; 8] {
    const LD_W_ABS: u16 = 0x20;
    const JEQ_K: u16 = 0x15;
    const RET_K: u16 = 0x06;
    [
        insn(LD_W_ABS, 0, 0, 4),
        insn(JEQ_K, 0, 5, AUDIT_ARCH),
        insn(LD_W_ABS, 0, 0, 0),
        insn(JEQ_K, 2, 0, libc::SYS_io_uring_setup as u32),
        insn(JEQ_K, 1, 0, libc::SYS_socket as u32),
        insn(JEQ_K, 0, 1, libc::SYS_socketpair as u32),
        insn(RET_K, 0, 0, libc::SECCOMP_RET_ERRNO | libc::EPERM as u32),
        insn(RET_K, 0, 0, libc::SECCOMP_RET_ALLOW),
    ]
}

/// The library's unit-test binary (`target/<profile>/deps/opipe-<hash>`)
/// that holds the core's tests, the newest if several.
fn lib_test_binary() -> Option<PathBuf> {
    let deps = std::env::current_exe().ok()?.parent()?.to_path_buf();
    let mut found: Vec<(std::time::SystemTime, PathBuf)> = std::fs::read_dir(&deps)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            name.strip_prefix("opipe-")
                .is_some_and(|h| h.chars().all(|c| c.is_ascii_hexdigit()))
        })
        .filter(|p| {
            Command::new(p)
                .args(["--list", "engine::ring::tests::"])
                .output()
                .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains(": test"))
        })
        .filter_map(|p| Some((p.metadata().ok()?.modified().ok()?, p)))
        .collect();
    found.sort();
    found.pop().map(|(_, p)| p)
}

fn run_sandboxed(bin: &PathBuf, filter: &str) -> (bool, String) {
    let rules = refuse_rings_and_sockets();
    let mut cmd = Command::new(bin);
    cmd.args([filter, "--test-threads", "1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // SAFETY: the closure runs in the forked child before exec and only
    // calls `install`, which makes syscalls on memory it owns (the filter
    // array moved into the closure): no allocation, no locks.
    unsafe {
        cmd.pre_exec(move || seccomp::install(&rules, false));
    }
    let out = cmd.output().expect("run the unit tests");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    (out.status.success(), text)
}

#[test]
fn core_tests_pass_without_io_uring_and_without_sockets() {
    bounded(Duration::from_secs(120), || {
        let Some(bin) = lib_test_binary() else {
            eprintln!("SKIPPED: the library's unit-test binary is not built (cargo test --lib)");
            return;
        };
        let (ok, out) = run_sandboxed(&bin, "engine::ring::");
        assert!(ok, "core tests failed in the sandbox:\n{out}");
        let passed = out
            .lines()
            .filter(|l| l.starts_with("test ") && l.ends_with(" ok"))
            .count();
        eprintln!("{passed} core tests passed in the sandbox");
        assert!(passed >= 25, "only {passed} core tests ran:\n{out}");
        // The control: tests that make a socketpair fail under the filter.
        let (ok, out) = run_sandboxed(&bin, "ring::epoll::tests::");
        assert!(!ok, "the filter did not refuse sockets:\n{out}");
    });
}
