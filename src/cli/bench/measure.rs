//! The measured phase of a run: when it starts and stops, and what it cost
//! the client (wall time, CPU time, resident memory). Every peer uses these
//! so that all engines are measured the same way:
//!
//! ```text
//! let before = Baseline::now()?;          // nothing of the pipes exists yet
//! ... open every pipe (full handshake) ...
//! let clock = Clock::start(&run.budget)?; // arms the budget: the phase begins
//! ... transceive until run.budget says stop ...
//! let measured = clock.stop(before)?;     // pipes still open: RSS counts them
//! ... close every pipe ...
//! ```

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use super::sys;

/// When a run stops.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum StopRule {
    /// Transceive until this much time has passed since the phase began.
    Duration(Duration),
    /// This many transceives in all, over all pipes.
    Requests(u64),
}

/// Hands out transceives until the run's [`StopRule`] is met. Shared by all
/// pipes of a run; ask it before each transceive.
#[derive(Debug)]
pub struct Budget {
    rule: StopRule,
    deadline: OnceLock<Instant>,
    issued: AtomicU64,
}

impl Budget {
    /// A budget that hands out nothing until [`Clock::start`] arms it.
    pub fn new(rule: StopRule) -> Budget {
        Budget {
            rule,
            deadline: OnceLock::new(),
            issued: AtomicU64::new(0),
        }
    }

    fn arm(&self, start: Instant) {
        let deadline = match self.rule {
            StopRule::Duration(d) => start + d,
            StopRule::Requests(_) => start,
        };
        let _ = self.deadline.set(deadline);
    }

    /// May one more transceive start? `now` is any recent clock reading (the
    /// end of the previous transceive will do).
    #[inline]
    pub fn take(&self, now: Instant) -> bool {
        let Some(&deadline) = self.deadline.get() else {
            return false;
        };
        match self.rule {
            StopRule::Duration(_) => now < deadline,
            StopRule::Requests(n) => self.issued.fetch_add(1, Ordering::Relaxed) < n,
        }
    }
}

/// Resident memory before any pipe of a run was opened.
#[derive(Debug, Clone, Copy)]
pub struct Baseline {
    rss_bytes: u64,
    /// The peak (VmHWM) was restarted here, so the run's own peak can be read.
    peak_reset: bool,
}

impl Baseline {
    /// Reads VmRSS now, after handing freed heap back to the kernel, and
    /// restarts the peak from here. Take it after the peer's runtime exists
    /// and before its first pipe opens.
    pub fn now() -> io::Result<Baseline> {
        sys::release_free_heap();
        let peak_reset = sys::reset_peak_resident();
        Ok(Baseline {
            rss_bytes: sys::resident_bytes()?,
            peak_reset,
        })
    }
}

/// A running measured phase.
#[derive(Debug)]
pub struct Clock {
    start: Instant,
    cpu_start: Duration,
    /// The service child's pid and CPU time at the start, when the bench
    /// started the service itself.
    service: Option<(u32, Duration)>,
}

impl Clock {
    /// Begins the measured phase and arms `budget`: call it once every pipe
    /// is open, just before the transceives are let go.
    ///
    /// `service_pid` is the service child's process, whose CPU time is
    /// measured over the same phase (`None` for a service the bench did not
    /// start: its other clients would be counted too).
    pub fn start(budget: &Budget, service_pid: Option<u32>) -> io::Result<Clock> {
        let service = service_pid.and_then(|pid| sys::service_cpu_time(pid).ok().map(|t| (pid, t)));
        let cpu_start = sys::process_cpu_time()?;
        let start = Instant::now();
        budget.arm(start);
        Ok(Clock {
            start,
            cpu_start,
            service,
        })
    }

    /// Ends the phase: call it once every transceive has finished, while all
    /// pipes are still open.
    pub fn stop(self, before: Baseline) -> io::Result<Measured> {
        let elapsed = self.start.elapsed();
        let cpu = sys::process_cpu_time()?.saturating_sub(self.cpu_start);
        let service_cpu = self.service.and_then(|(pid, at_start)| {
            let now = sys::service_cpu_time(pid).ok()?;
            Some(now.saturating_sub(at_start))
        });
        // The run's peak: what a peer frees before its last transceive
        // (a task's buffers, say) still counts.
        let now = sys::resident_bytes()?;
        let rss_open_bytes = if before.peak_reset {
            sys::peak_resident_bytes()?.max(now)
        } else {
            now
        };
        Ok(Measured {
            elapsed,
            client_cpu: cpu,
            service_cpu,
            rss_before_open_bytes: before.rss_bytes,
            rss_open_bytes,
        })
    }
}

/// What the measured phase cost the client process.
#[derive(Debug, Clone, Copy)]
pub struct Measured {
    /// Wall time from the release of the first transceive to the end of the last.
    pub elapsed: Duration,
    /// CPU time of the whole client process (all threads) over that time.
    pub client_cpu: Duration,
    /// CPU time of the service child (all threads) over that time, when the
    /// bench started it.
    pub service_cpu: Option<Duration>,
    /// VmRSS before the pipes were opened.
    pub rss_before_open_bytes: u64,
    /// Peak VmRSS from the baseline to the end of the phase (every pipe
    /// still open then); VmRSS at the end where the peak cannot be restarted.
    pub rss_open_bytes: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Tests that restart the process's peak RSS take turns.
    static PEAK: std::sync::Mutex<()> = std::sync::Mutex::new(());

    #[test]
    fn the_peak_counts_memory_freed_before_the_end() {
        let _peak = PEAK.lock().unwrap_or_else(|e| e.into_inner());
        let before = Baseline::now().unwrap();
        if !before.peak_reset {
            return eprintln!("SKIPPED: /proc/self/clear_refs refused");
        }
        let budget = Budget::new(StopRule::Requests(1));
        let clock = Clock::start(&budget, None).unwrap();
        let mut big = vec![0u8; 64 << 20];
        for i in (0..big.len()).step_by(4096) {
            big[i] = 1;
        }
        std::hint::black_box(&big);
        drop(big);
        sys::release_free_heap();
        let m = clock.stop(before).unwrap();
        let grown = m.rss_open_bytes.saturating_sub(m.rss_before_open_bytes);
        assert!(grown >= 60 << 20, "peak grew by {grown} bytes only");
    }

    #[test]
    fn request_budget_hands_out_exactly_n() {
        let b = Budget::new(StopRule::Requests(3));
        let now = Instant::now();
        assert!(!b.take(now), "unarmed budget must hand out nothing");
        let _clock = Clock::start(&b, None).unwrap();
        let granted = (0..10).filter(|_| b.take(Instant::now())).count();
        assert_eq!(granted, 3);
    }

    #[test]
    fn duration_budget_ends_at_deadline() {
        let b = Budget::new(StopRule::Duration(Duration::from_secs(2)));
        // Our own pid stands in for a service: its CPU time is measured too.
        let clock = Clock::start(&b, Some(std::process::id())).unwrap();
        // Spin for 20 ms of this process's CPU time (not wall time: on a
        // loaded machine 20 ms of wall time can be much less CPU).
        let cpu0 = sys::process_cpu_time().unwrap();
        while sys::process_cpu_time().unwrap() < cpu0 + Duration::from_millis(20) {
            std::hint::black_box(0u64);
        }
        assert!(b.take(Instant::now()));
        assert!(!b.take(Instant::now() + Duration::from_millis(2010)));
        let m = {
            let _peak = PEAK.lock().unwrap_or_else(|e| e.into_inner());
            clock.stop(Baseline::now().unwrap()).unwrap()
        };
        assert!(m.rss_open_bytes > 0);
        let svc = m.service_cpu.expect("service CPU measured");
        assert!(svc >= Duration::from_millis(10), "{svc:?} for a 20 ms spin");
    }
}
