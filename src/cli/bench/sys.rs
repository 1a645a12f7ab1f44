//! The few raw system calls the bench harness needs beyond `std` and
//! `opipe::ring::sys`: CPU time (`getrusage(2)`), resident memory and open
//! descriptors (`/proc/self`), the bytes queued on a socket
//! (`ioctl(FIONREAD)`, see `unix(7)`), heap trimming, signals for the
//! service child and the `--smb2` servers' process groups, and the clock
//! tick of `/proc/<pid>/stat`. Every `unsafe` block of the bench lives here, but for the
//! raw SQE push of the `uring-min` reference (`peers/uring_min.rs`); both are
//! CLI-only, so the library's rule (unsafe only in `ring`) holds.

use std::io;
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::time::Duration;

/// User plus system CPU time this process (all its threads, finished ones
/// included) has used so far: `getrusage(RUSAGE_SELF)`.
pub fn process_cpu_time() -> io::Result<Duration> {
    // SAFETY: `rusage` is plain old data; all-zero is a valid value.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `ru` is a valid, writable rusage for the kernel to fill.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(timeval(ru.ru_utime) + timeval(ru.ru_stime))
}

/// CPU time (user plus system, all threads) another process has used so
/// far, from its CPU-time clock (`clock_getcpuclockid(3)`): how the bench
/// measures the service child next to the client.
pub fn other_process_cpu_time(pid: u32) -> io::Result<Duration> {
    let pid = libc::pid_t::try_from(pid).map_err(|_| io::Error::other("pid out of range"))?;
    let mut clock: libc::clockid_t = 0;
    // SAFETY: `clock` is a valid, writable clockid_t.
    let rc = unsafe { libc::clock_getcpuclockid(pid, &mut clock) };
    if rc != 0 {
        return Err(io::Error::from_raw_os_error(rc));
    }
    // SAFETY: `timespec` is plain old data; all-zero is a valid value.
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    // SAFETY: `ts` is a valid, writable timespec; `clock` came from the kernel.
    if unsafe { libc::clock_gettime(clock, &mut ts) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(Duration::new(
        ts.tv_sec.max(0) as u64,
        ts.tv_nsec.clamp(0, 999_999_999) as u32,
    ))
}

/// CPU time of a service the bench started: [`other_process_cpu_time`] of
/// `pid`, plus what the processes of the group `pid` leads have used (the
/// `rpcd_*` workers of samba-dcerpcd: the live ones from their
/// `/proc/<pid>/stat`, the ones `pid` has reaped from its own `cutime` and
/// `cstime`), in clock ticks. For a service that leads no group (`opipe
/// serve`) this is its own CPU time.
pub fn service_cpu_time(pid: u32) -> io::Result<Duration> {
    let own = other_process_cpu_time(pid)?;
    let mut ticks = 0u64;
    if let Some(f) = stat_fields(pid) {
        // cutime, cstime: its reaped children.
        ticks += f.get(13).copied().unwrap_or(0) + f.get(14).copied().unwrap_or(0);
    }
    for entry in std::fs::read_dir("/proc")?.flatten() {
        let Ok(other) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if other == pid {
            continue;
        }
        if let Some(f) = stat_fields(other) {
            // pgrp; utime, stime.
            if f.get(2) == Some(&u64::from(pid)) {
                ticks += f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0);
            }
        }
    }
    // SAFETY: sysconf takes no pointers.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let hz = u64::try_from(hz).ok().filter(|&h| h > 0).unwrap_or(100);
    Ok(own + Duration::from_nanos(ticks.saturating_mul(1_000_000_000) / hz))
}

/// The numeric fields of `/proc/<pid>/stat` after the command name (the
/// state, field 0, reads as 0): ppid 1, pgrp 2, utime 11, stime 12,
/// cutime 13, cstime 14.
fn stat_fields(pid: u32) -> Option<Vec<u64>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    Some(
        rest.split_whitespace()
            .map(|f| f.parse::<u64>().unwrap_or(0))
            .collect(),
    )
}

fn timeval(tv: libc::timeval) -> Duration {
    Duration::from_secs(tv.tv_sec.max(0) as u64) + Duration::from_micros(tv.tv_usec.max(0) as u64)
}

/// The process's resident set size in bytes (`VmRSS` in `/proc/self/status`).
pub fn resident_bytes() -> io::Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    parse_vm_rss(&status).ok_or_else(|| io::Error::other("no VmRSS line in /proc/self/status"))
}

/// The process's peak resident memory (VmHWM) since it started or since
/// [`reset_peak_resident`].
pub fn peak_resident_bytes() -> io::Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    parse_status_kib(&status, "VmHWM:")
        .ok_or_else(|| io::Error::other("no VmHWM line in /proc/self/status"))
}

/// Restarts the peak resident memory (VmHWM) from the current VmRSS
/// (`/proc/self/clear_refs`, Linux 4.0+). False where that is refused.
pub fn reset_peak_resident() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

fn parse_vm_rss(status: &str) -> Option<u64> {
    parse_status_kib(status, "VmRSS:")
}

/// A `/proc/<pid>/status` line `<key> <n> kB`, in bytes.
fn parse_status_kib(status: &str, key: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with(key))?;
    let mut words = line[key.len()..].split_whitespace();
    let kib: u64 = words.next()?.parse().ok()?;
    match words.next() {
        Some("kB") => Some(kib * 1024),
        _ => None,
    }
}

/// Gives the heap's free memory back to the kernel (glibc `malloc_trim(0)`),
/// so that what an earlier run freed does not sit resident and hide the
/// next run's growth. A no-op on other C libraries.
pub fn release_free_heap() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim takes no pointers and only returns free pages.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// How many descriptors this process has open right now (`/proc/self/fd`,
/// not counting the one used to list it).
pub fn open_fd_count() -> io::Result<usize> {
    // The directory handle itself shows up in the listing; subtract it.
    Ok(std::fs::read_dir("/proc/self/fd")?
        .count()
        .saturating_sub(1))
}

/// Makes the process `cmd` starts receive SIGKILL when the thread that
/// started it dies (`prctl(PR_SET_PDEATHSIG)`), so that a bench killed
/// without running its clean-up does not leave its service behind.
pub fn kill_with_parent(cmd: &mut Command) {
    // SAFETY: the closure runs in the forked child before exec; it makes one
    // async-signal-safe system call (prctl) and touches no parent memory.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong);
            Ok(())
        });
    }
}

/// Kills our child `pid` (SIGKILL) and reaps it (`waitpid(2)`), for a
/// thread that must end the process while another owns the `Child`.
pub fn kill_and_reap(pid: u32) {
    signal(pid, libc::SIGKILL);
    if let Ok(pid) = libc::pid_t::try_from(pid) {
        // SAFETY: a null status pointer is allowed; should the owner reap
        // the child first, waitpid only fails with ECHILD.
        unsafe {
            libc::waitpid(pid, std::ptr::null_mut(), 0);
        }
    }
}

/// Sends SIGKILL to the process group `pgid` leads (`kill(2)` with a
/// negative id): the workers a daemon started in its own group. The caller
/// must know `pgid` is its own child, not yet reaped, that leads its group.
pub fn kill_group(pgid: u32) {
    if let Ok(pgid) = libc::pid_t::try_from(pgid) {
        if pgid > 1 {
            // SAFETY: kill takes no pointers; a stale group only fails
            // with ESRCH.
            unsafe {
                libc::kill(-pgid, libc::SIGKILL);
            }
        }
    }
}

/// Sends `signal` to process `pid` (`kill(2)`). The caller must know `pid`
/// is its own child that has not been reaped yet, so the id is not reused.
pub fn signal(pid: u32, signal: libc::c_int) {
    if let Ok(pid) = libc::pid_t::try_from(pid) {
        // SAFETY: kill takes no pointers; a stale pid only fails with ESRCH.
        unsafe {
            libc::kill(pid, signal);
        }
    }
}

/// Sends `signal` to every process of group `pgid` (`kill(2)` with
/// `-pgid`). The caller must have started the group's leader and not yet
/// reaped it, so that the id is not reused. Ids 0 and 1 are refused
/// (`kill(0)` and `kill(-1)` would reach far more).
pub fn signal_group(pgid: u32, signal: libc::c_int) {
    match libc::pid_t::try_from(pgid) {
        Ok(pgid) if pgid > 1 => {
            // SAFETY: kill takes no pointers; a vanished group only gives ESRCH.
            unsafe {
                libc::kill(-pgid, signal);
            }
        }
        _ => {}
    }
}

/// Clock ticks per second of `/proc/<pid>/stat` times (`_SC_CLK_TCK`;
/// 100, Linux's USER_HZ, should sysconf fail).
pub fn clock_ticks_per_s() -> u64 {
    // SAFETY: sysconf takes no pointers and only returns a value.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if hz > 0 {
        hz as u64
    } else {
        100
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vm_rss_is_parsed_in_bytes() {
        let status = "Name:\topipe\nVmPeak:\t  9000 kB\nVmRSS:\t    1234 kB\nThreads:\t1\n";
        assert_eq!(parse_vm_rss(status), Some(1234 * 1024));
        assert_eq!(parse_vm_rss("VmRSS: 12 MB\n"), None);
        assert_eq!(parse_vm_rss("Name: x\n"), None);
    }

    #[test]
    fn service_cpu_counts_the_group_it_leads() {
        use std::os::unix::process::CommandExt;
        use std::time::{Duration, Instant};
        // A group leader that only waits, and a member that burns CPU
        // until the group is killed: the member's time counts.
        let mut leader = Command::new("sh")
            .args(["-c", "sh -c 'while :; do :; done' & wait"])
            .process_group(0)
            .spawn()
            .unwrap();
        let pid = leader.id();
        // Bounded, and patient with a loaded machine.
        let deadline = Instant::now() + Duration::from_secs(10);
        let (mut group, mut own);
        loop {
            std::thread::sleep(Duration::from_millis(50));
            group = service_cpu_time(pid).unwrap();
            own = other_process_cpu_time(pid).unwrap();
            if group >= own + Duration::from_millis(100) || Instant::now() > deadline {
                break;
            }
        }
        kill_group(pid);
        let _ = leader.wait();
        assert!(
            group >= own + Duration::from_millis(100),
            "group {group:?}, leader alone {own:?}"
        );
    }

    #[test]
    fn measurements_work_here() {
        assert!(resident_bytes().unwrap() > 0);
        assert!(open_fd_count().unwrap() >= 3);
        let _ = process_cpu_time().unwrap();
    }

    #[test]
    fn fionread_sees_queued_bytes() {
        use std::io::Write;
        use std::os::fd::AsRawFd;
        let (mut a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        assert_eq!(opipe::ring::fionread(b.as_raw_fd()).unwrap(), 0);
        a.write_all(&[7u8; 100]).unwrap();
        assert_eq!(opipe::ring::fionread(b.as_raw_fd()).unwrap(), 100);
    }
}
