//! Where every peer records what each transceive did: one latency
//! histogram, counts and error samples, shared by all of a run's pipes.
//!
//! The state is split into a few lock shards chosen by pipe index, so that
//! thousands of pipes on two cores rarely wait for each other, and so that no
//! pipe needs a histogram of its own (one histogram is ~200 KB; one per pipe
//! would swamp the memory figures at 4096 pipes).

use std::sync::{Mutex, MutexGuard};

use hdrhistogram::Histogram;

/// Shards; a power of two well above the core count.
const SHARDS: usize = 16;
/// Latencies are recorded in nanoseconds, 3 significant digits, up to this.
const LATENCY_NS_MAX: u64 = 60_000_000_000;
/// How many error messages are kept for the report (all are counted).
const ERROR_SAMPLES_MAX: usize = 8;

/// Latencies, counts and errors of one run, filled concurrently by its pipes.
#[derive(Debug)]
pub struct Recorder {
    shards: Box<[Padded]>,
}

/// One shard on its own cache lines, so two cores recording into
/// neighbouring shards do not bounce a line between them.
#[derive(Debug)]
#[repr(align(128))]
struct Padded(Mutex<Shard>);

#[derive(Debug)]
struct Shard {
    latency_ns: Histogram<u64>,
    transceives: u64,
    overflows: u64,
    opened: u64,
    errors: u64,
    bad_replies: u64,
    error_samples: Vec<String>,
}

/// What a run recorded, merged over all shards.
#[derive(Debug)]
pub struct Recorded {
    /// Latency of every verified transceive, in nanoseconds.
    pub latency_ns: Histogram<u64>,
    /// Transceives whose reply arrived complete and verified.
    pub transceives: u64,
    /// Of those, how many reported `STATUS_BUFFER_OVERFLOW` on the first read.
    pub overflows: u64,
    /// Pipes that completed the open handshake.
    pub opened: u64,
    /// Failed opens plus failed or wrong transceives.
    pub errors: u64,
    /// Of those, replies that failed verification.
    pub bad_replies: u64,
    /// The first few error messages, for the report.
    pub error_samples: Vec<String>,
}

impl Recorder {
    /// An empty recorder with all its memory already touched, so that its
    /// pages do not show up later as per-pipe memory.
    pub fn new() -> Recorder {
        let shards = (0..SHARDS)
            .map(|_| {
                let mut latency_ns = Histogram::new_with_bounds(1, LATENCY_NS_MAX, 3)
                    .expect("constant histogram bounds are valid");
                // `clear` writes every counter: faults the pages in now.
                latency_ns.clear();
                Padded(Mutex::new(Shard {
                    latency_ns,
                    transceives: 0,
                    overflows: 0,
                    opened: 0,
                    errors: 0,
                    bad_replies: 0,
                    error_samples: Vec::new(),
                }))
            })
            .collect();
        Recorder { shards }
    }

    fn shard(&self, pipe: usize) -> MutexGuard<'_, Shard> {
        // A panic while holding a shard leaves plain counters behind; keep going.
        self.shards[pipe % SHARDS]
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Pipe `pipe` finished its open handshake.
    pub fn opened(&self, pipe: usize) {
        self.shard(pipe).opened += 1;
    }

    /// Pipe `pipe` completed one verified transceive in `latency_ns`.
    pub fn transceive(&self, pipe: usize, latency_ns: u64, overflow: bool) {
        let mut s = self.shard(pipe);
        s.latency_ns.saturating_record(latency_ns.max(1));
        s.transceives += 1;
        s.overflows += u64::from(overflow);
    }

    /// Pipe `pipe` failed (open, transceive, or a wrong reply).
    pub fn error(&self, pipe: usize, what: impl FnOnce() -> String) {
        let mut s = self.shard(pipe);
        s.errors += 1;
        if s.error_samples.len() < ERROR_SAMPLES_MAX {
            let msg = format!("pipe {pipe}: {}", what());
            s.error_samples.push(msg);
        }
    }

    /// Pipe `pipe` received a reply that failed verification (also an
    /// error).
    pub fn bad_reply(&self, pipe: usize, what: impl FnOnce() -> String) {
        self.error(pipe, what);
        self.shard(pipe).bad_replies += 1;
    }

    /// Pipes opened plus transceives done so far: a progress figure that
    /// moves while anything at all is happening.
    pub fn progress(&self) -> (u64, u64) {
        self.shards.iter().fold((0, 0), |(o, t), p| {
            let s = p.0.lock().unwrap_or_else(|e| e.into_inner());
            (o + s.opened, t + s.transceives)
        })
    }

    /// Everything recorded so far, merged over the shards.
    pub fn merged(&self) -> Recorded {
        let mut out = Recorded {
            latency_ns: Histogram::new_with_bounds(1, LATENCY_NS_MAX, 3)
                .expect("constant histogram bounds are valid"),
            transceives: 0,
            overflows: 0,
            opened: 0,
            errors: 0,
            bad_replies: 0,
            error_samples: Vec::new(),
        };
        for p in self.shards.iter() {
            let s = p.0.lock().unwrap_or_else(|e| e.into_inner());
            out.latency_ns
                .add(&s.latency_ns)
                .expect("histograms with equal bounds always add");
            out.transceives += s.transceives;
            out.overflows += s.overflows;
            out.opened += s.opened;
            out.errors += s.errors;
            out.bad_replies += s.bad_replies;
            for m in &s.error_samples {
                if out.error_samples.len() < ERROR_SAMPLES_MAX {
                    out.error_samples.push(m.clone());
                }
            }
        }
        out
    }
}

impl Default for Recorder {
    fn default() -> Self {
        Recorder::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_merge() {
        let r = Recorder::new();
        for pipe in 0..100 {
            r.opened(pipe);
            r.transceive(pipe, 1000 + pipe as u64, pipe % 10 == 0);
        }
        r.error(3, || "boom".to_string());
        r.bad_reply(4, || "wrong".to_string());
        assert_eq!(r.progress(), (100, 100));
        let done = r.merged();
        assert_eq!(done.transceives, 100);
        assert_eq!(done.overflows, 10);
        assert_eq!(done.opened, 100);
        assert_eq!((done.errors, done.bad_replies), (2, 1));
        assert_eq!(
            done.error_samples,
            vec!["pipe 3: boom".to_string(), "pipe 4: wrong".to_string()]
        );
        assert_eq!(done.latency_ns.len(), 100);
        assert!(done.latency_ns.value_at_quantile(0.5) >= 1040);
    }
}
