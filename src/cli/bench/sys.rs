//! The few raw system calls the bench harness needs beyond `std` and
//! `opipe::ring::sys`: CPU time (`getrusage(2)`), resident memory and open
//! descriptors (`/proc/self`), the bytes queued on a socket
//! (`ioctl(FIONREAD)`, see `unix(7)`), heap trimming, and the process-group
//! toolkit of the servers the CLI starts (the CPU of a group, reaped
//! members included, from `/proc/<pid>/stat` and its clock tick; signals to
//! a child or a whole group). Every `unsafe` block of the bench lives here, but for the
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

/// What one scan of a process group found.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct GroupCpu {
    /// CPU of the live members plus what they reaped.
    pub cpu: Duration,
    /// Live members (zombies included).
    pub processes: usize,
}

/// The CPU of process group `pgid`, which may fork and reap (smbd's
/// per-connection processes, samba-dcerpcd's `rpcd_*` workers): `/proc`
/// is scanned for the processes whose group it is, and each adds
///
/// * its own CPU (user + system, every thread, finished threads included):
///   its CPU-time clock ([`other_process_cpu_time`]), or `utime + stime`
///   of `/proc/<pid>/stat` should that fail;
/// * `cutime + cstime` of `/proc/<pid>/stat`: the CPU of its children that
///   have exited and that it reaped (and of theirs, recursively).
///
/// So a member that comes and goes between two samples still counts,
/// through the one that reaps it. What can go wrong: a process that exits
/// and is reaped between the moment the scan read it and the moment it
/// reads its parent is counted twice; a child reaped by a process outside
/// the group is missed. Neither happens while a run's connections stay
/// open, which is when the bench samples.
///
/// An error only when `/proc` cannot be listed; members that vanish during
/// the scan are skipped.
pub fn group_cpu(pgid: u32) -> io::Result<GroupCpu> {
    let mut out = GroupCpu::default();
    for entry in std::fs::read_dir("/proc")? {
        let Ok(entry) = entry else { continue };
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Some(s) = read_stat(pid) else { continue };
        if s.pgrp != pgid {
            continue;
        }
        out.processes += 1;
        out.cpu += cpu_with_reaped(pid, &s);
    }
    Ok(out)
}

/// Whether any process of group `pgid` is still there (zombies count).
pub fn group_alive(pgid: u32) -> bool {
    group_cpu(pgid).is_ok_and(|g| g.processes > 0)
}

/// CPU time of a service the bench started, `pid`: when it leads a process
/// group (samba-dcerpcd and its `rpcd_*` workers), [`group_cpu`] of that
/// group; when not (`opipe serve`), its own CPU plus what it reaped.
pub fn service_cpu_time(pid: u32) -> io::Result<Duration> {
    let group = group_cpu(pid)?;
    if group.processes > 0 {
        return Ok(group.cpu);
    }
    let stat = read_stat(pid)
        .ok_or_else(|| io::Error::other(format!("/proc/{pid}/stat cannot be read")))?;
    Ok(cpu_with_reaped(pid, &stat))
}

/// One process's CPU (its clock, else its ticks) plus its reaped children's.
fn cpu_with_reaped(pid: u32, s: &Stat) -> Duration {
    let own = other_process_cpu_time(pid).unwrap_or_else(|_| ticks(s.utime + s.stime));
    own + ticks(s.cutime + s.cstime)
}

/// `n` clock ticks of `/proc/<pid>/stat`.
fn ticks(n: u64) -> Duration {
    Duration::from_nanos(n.saturating_mul(1_000_000_000) / clock_ticks_per_s())
}

/// The fields of `/proc/<pid>/stat` used here (proc(5)), times in clock ticks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stat {
    pgrp: u32,
    utime: u64,
    stime: u64,
    cutime: u64,
    cstime: u64,
}

fn read_stat(pid: u32) -> Option<Stat> {
    parse_stat(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// Parses `/proc/<pid>/stat`. The command name (field 2) is in
/// parentheses and may hold spaces and parentheses itself: the fields
/// are counted from the last `)`.
fn parse_stat(text: &str) -> Option<Stat> {
    let rest = &text[text.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // After ")": field 3 (state) is f[0], so field n is f[n - 3].
    let num = |n: usize| f.get(n - 3)?.parse::<u64>().ok();
    Some(Stat {
        pgrp: u32::try_from(num(5)?).ok()?,
        utime: num(14)?,
        stime: num(15)?,
        cutime: num(16)?,
        cstime: num(17)?,
    })
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
fn clock_ticks_per_s() -> u64 {
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
        signal_group(pid, libc::SIGKILL);
        let _ = leader.wait();
        assert!(
            group >= own + Duration::from_millis(100),
            "group {group:?}, leader alone {own:?}"
        );
    }

    #[test]
    fn stat_fields_are_counted_from_the_last_parenthesis() {
        let line = "4242 (smbd: (client) x) S 1 4200 4200 0 -1 4194560 10 0 0 0 \
                    7 3 11 13 20 0 1 0 100 0 0";
        assert_eq!(
            parse_stat(line),
            Some(Stat {
                pgrp: 4200,
                utime: 7,
                stime: 3,
                cutime: 11,
                cstime: 13,
            })
        );
        assert_eq!(parse_stat("4242 (x) S 1"), None);
        assert_eq!(parse_stat("no parenthesis"), None);
    }

    #[test]
    fn a_group_counts_its_exited_children() {
        use std::os::unix::process::CommandExt;
        use std::time::Instant;
        // A shell that burns CPU in a child it reaps, then waits: the
        // child's time must show up through the shell's cutime.
        let mut child = Command::new("sh")
            .args([
                "-c",
                "sh -c 'i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done'; sleep 30",
            ])
            .process_group(0)
            .spawn()
            .unwrap();
        let pgid = child.id();
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut seen = GroupCpu::default();
        // Wait until only the shell and its sleep are left, the busy child reaped.
        while Instant::now() < deadline {
            let shell = read_stat(pgid).unwrap();
            if shell.cutime + shell.cstime > 0 {
                // Read the group after the reap is seen (read before, the
                // busy child could still be running, or just gone and not
                // yet in the shell's cutime: a figure far too small).
                seen = group_cpu(pgid).unwrap();
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        signal_group(pgid, libc::SIGKILL);
        let _ = child.wait();
        assert!(seen.processes >= 1, "{seen:?}");
        assert!(seen.cpu >= Duration::from_millis(10), "{seen:?}");
        // The killed sleep is reaped by whoever adopted it: soon.
        let gone = Instant::now() + Duration::from_secs(5);
        while group_alive(pgid) && Instant::now() < gone {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(!group_alive(pgid));
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
