//! The SMB servers of `opipe bench --smb2` as process groups: each is
//! started in a group of its own (smbd forks one child per connection,
//! and they all stay in it), its CPU is the sum over the group, and it is
//! stopped by the group's id.
//!
//! # CPU of a group that forks
//!
//! [`group_cpu`] scans `/proc` for the processes whose process group is
//! the server's and adds, for each:
//!
//! * its own CPU (user + system, every thread, finished threads included):
//!   its CPU-time clock (`clock_getcpuclockid(3)`, nanoseconds), or
//!   `utime + stime` of `/proc/<pid>/stat` should that fail;
//! * `cutime + cstime` of `/proc/<pid>/stat`: the CPU of its children
//!   that have exited and that it reaped (and of theirs, recursively).
//!
//! So a per-connection smbd that comes and goes between two samples still
//! counts, through the parent smbd that reaps it. What can go wrong: a
//! process that exits and is reaped between the moment the scan read it
//! and the moment it reads its parent is counted twice (in itself and in
//! the parent's `cutime`); a child reaped by a process outside the group
//! is missed. Neither happens while a run's connections stay open, which is
//! when the bench samples.

use std::fs;
use std::io;
use std::time::Duration;

use crate::bench::sys;

/// What one scan of a group found.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct GroupCpu {
    /// CPU of the live members plus what they reaped.
    pub cpu: Duration,
    /// Live members (zombies included).
    pub processes: usize,
}

/// Sums the CPU of process group `pgid` (see the module documentation).
/// An error only when `/proc` cannot be listed; members that vanish
/// during the scan are skipped.
pub fn group_cpu(pgid: u32) -> io::Result<GroupCpu> {
    let tick_ns = clock_tick_ns();
    let mut out = GroupCpu::default();
    for entry in fs::read_dir("/proc")? {
        let Ok(entry) = entry else { continue };
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some(s) = parse_stat(&stat) else { continue };
        if s.pgrp != pgid {
            continue;
        }
        out.processes += 1;
        let own = sys::other_process_cpu_time(pid)
            .unwrap_or_else(|_| Duration::from_nanos((s.utime + s.stime) * tick_ns));
        out.cpu += own + Duration::from_nanos((s.cutime + s.cstime) * tick_ns);
    }
    Ok(out)
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

/// Nanoseconds per clock tick of `/proc/<pid>/stat`.
fn clock_tick_ns() -> u64 {
    1_000_000_000 / sys::clock_ticks_per_s()
}

/// Whether any process of group `pgid` is still there (zombies count).
pub fn group_alive(pgid: u32) -> bool {
    group_cpu(pgid).is_ok_and(|g| g.processes > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

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
        // A shell that burns CPU in a child it reaps, then waits: the
        // child's time must show up through the shell's cutime.
        let mut child = std::process::Command::new("sh")
            .args([
                "-c",
                "sh -c 'i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done'; sleep 30",
            ])
            .process_group(0)
            .spawn()
            .unwrap();
        let pgid = child.id();
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        let mut seen = GroupCpu::default();
        // Wait until only the shell and its sleep are left, the busy child reaped.
        while std::time::Instant::now() < deadline {
            seen = group_cpu(pgid).unwrap();
            let shell = fs::read_to_string(format!("/proc/{pgid}/stat")).unwrap();
            if parse_stat(&shell).unwrap().cutime + parse_stat(&shell).unwrap().cstime > 0 {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        sys::signal_group(pgid, libc::SIGKILL);
        let _ = child.wait();
        assert!(seen.processes >= 1, "{seen:?}");
        assert!(seen.cpu >= Duration::from_millis(10), "{seen:?}");
        // The killed sleep is reaped by whoever adopted it: soon.
        let gone = std::time::Instant::now() + Duration::from_secs(5);
        while group_alive(pgid) && std::time::Instant::now() < gone {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(!group_alive(pgid));
    }
}
