//! The ring thread's loop: the only part of a ring that waits, reads the
//! clock or touches the command queue. It feeds the sans-IO [`Core`] with
//! events and lets its driver submit and reap.

use std::time::{Duration, Instant};

use super::Core;
use crate::engine::command::CommandQueue;
use crate::ring::OpDriver;

/// The ring thread's loop: commands in, SQEs out, completions back. The
/// only part of a ring that waits, reads the clock or touches the queue;
/// everything it learns goes to the core as an event with the time.
pub(crate) fn run<D: OpDriver>(core: &mut Core<D>, queue: &CommandQueue) {
    let mut cmds = Vec::new();
    let wake = queue.wake.clone();
    // The clock is read only when the core has a use for it (commands to
    // start, a WAIT in flight): a ring busy with transceives reads none.
    let mut now = core.now;
    let mut failures = 0u32;
    loop {
        queue.take(&mut cmds);
        if !cmds.is_empty() {
            now = Instant::now();
        }
        for c in cmds.drain(..) {
            core.on_command(c, now);
        }
        core.on_turn(now);
        if core.is_done() {
            break;
        }
        let res = if queue.is_pending() {
            core.drv.submit_and_wait(0, None)
        } else {
            wake.prepare_park();
            if queue.is_pending() {
                wake.unpark();
                core.drv.submit_and_wait(0, None)
            } else {
                let r = core.drv.submit_and_wait(1, None);
                wake.unpark();
                r
            }
        };
        match res {
            Ok(()) if failures > 0 => {
                tracing::warn!(
                    "opipe: ring {} submits again after {failures} failures",
                    core.ring_index
                );
                failures = 0;
            }
            Ok(()) => {}
            Err(e) => {
                failures = failures.saturating_add(1);
                if failures.is_power_of_two() {
                    tracing::error!(
                        "opipe: ring {} submit failed ({failures} in a row): {e}",
                        core.ring_index
                    );
                }
                std::thread::sleep(submit_backoff(failures));
            }
        }
        // Each completion goes to the core as it is read: none is copied
        // into a batch first.
        core.prefetch_upcoming();
        let mut first = true;
        while let Some(c) = core.drv.reap_one() {
            if first && core.waits > 0 {
                now = Instant::now();
            }
            first = false;
            core.on_completion(c, now);
        }
        queue.publish_pool_fallbacks(core.pool_fallbacks);
    }
}

/// The pause after `failures` submits in a row failed (with an error the
/// driver does not take for transient): 1 ms, doubling up to 100 ms, so a
/// ring whose submits keep failing neither spins nor floods the log (which
/// hears of failures 1, 2, 4, 8, ...), and still notices commands (a
/// shutdown) within 100 ms.
fn submit_backoff(failures: u32) -> Duration {
    let exp = failures.saturating_sub(1).min(7);
    Duration::from_millis((1u64 << exp).min(100))
}
