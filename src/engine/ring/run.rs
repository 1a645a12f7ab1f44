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
pub(crate) fn run<D: OpDriver>(mut core: Core<D>, queue: &CommandQueue) {
    let mut cmds = Vec::new();
    let mut done = Vec::with_capacity(256);
    let wake = queue.wake.clone();
    // The clock is read only when the core has a use for it (commands to
    // start, a WAIT in flight): a ring busy with transceives reads none.
    let mut now = core.now;
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
        if let Err(e) = res {
            tracing::error!("opipe: ring {} submit failed: {e}", core.ring_index);
            std::thread::sleep(Duration::from_millis(1));
        }
        core.drv.reap(&mut done);
        if core.waits > 0 && !done.is_empty() {
            now = Instant::now();
        }
        for c in done.drain(..) {
            core.on_completion(c, now);
        }
    }
}
