//! A helper thread that watches a run: it draws a progress line when stderr
//! is a terminal, and it ends a bench that has stopped moving (a service
//! that accepted but never answers would otherwise hang it forever).

use std::io::Write;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::daemon::Cleanup;
use super::measure::StopRule;
use super::peer::Run;

const TICK: Duration = Duration::from_millis(250);

/// How a run is watched.
#[derive(Debug, Clone)]
pub struct Watch {
    /// Draw a progress line on stderr (a terminal).
    pub draw: bool,
    /// A run in which no pipe opened and no transceive finished for this
    /// long is stuck: the bench cleans up with `abort` and exits 1.
    pub stall: Duration,
    /// The clean-up.
    pub abort: Cleanup,
}

/// The running monitor; [`Monitor::stop`] ends it.
#[derive(Debug)]
pub struct Monitor {
    stop: mpsc::Sender<()>,
    thread: Option<JoinHandle<()>>,
}

impl Monitor {
    /// Watches `run`, labelled `label` in the progress line.
    pub fn start(run: Arc<Run>, label: String, how: Watch) -> Monitor {
        let (stop, stopped) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("bench-monitor".into())
            .spawn(move || watch(&run, &label, &how, &stopped))
            .ok();
        Monitor { stop, thread }
    }

    /// Stops watching (and erases the progress line).
    pub fn stop(mut self) {
        let _ = self.stop.send(());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn watch(run: &Run, label: &str, how: &Watch, stopped: &mpsc::Receiver<()>) {
    let mut last = (0, 0);
    let mut last_change = Instant::now();
    // When the first transceive was seen: roughly the start of the measured phase.
    let mut transceiving_since = None;
    let target = match run.spec.stop {
        StopRule::Duration(d) => format!("{:.1} s", d.as_secs_f64()),
        StopRule::Requests(n) => format!("{n} transceives"),
    };
    let mut err = std::io::stderr();
    // Ends on a stop message or when the Monitor is dropped.
    while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(TICK) {
        let now = run.recorder.progress();
        if now != last {
            last = now;
            last_change = Instant::now();
        } else if last_change.elapsed() > how.stall {
            give_up(label, now, how);
        }
        if !how.draw {
            continue;
        }
        let (opened, done) = now;
        let line = if done == 0 {
            format!("{label}: opening pipes, {opened}/{} open", run.spec.pipes)
        } else {
            let since = *transceiving_since.get_or_insert_with(Instant::now);
            format!(
                "{label}: {done} transceives, {:.1} s of {target}",
                since.elapsed().as_secs_f64()
            )
        };
        let _ = write!(err, "\r\x1b[2K{line}");
        let _ = err.flush();
    }
    if how.draw {
        let _ = write!(err, "\r\x1b[2K");
        let _ = err.flush();
    }
}

/// Ends the process: nothing else can unblock a peer stuck in a read.
fn give_up(label: &str, (opened, done): (u64, u64), how: &Watch) -> ! {
    eprintln!(
        "\nopipe bench: {label}: no pipe opened and no transceive finished for {:.1} s \
         ({opened} pipes open, {done} transceives); the service does not answer. Giving up.",
        how.stall.as_secs_f64()
    );
    how.abort.exit(1)
}
