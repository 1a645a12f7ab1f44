//! N service-loop threads over the same listeners: the backend choice, the
//! shutdown eventfd, one event loop per thread (io_uring or epoll, made on
//! the thread that runs it) with an acceptor from a factory, start-up
//! readiness, and shutdown/join. The pipe service and the SMB2 front both
//! run on it; what they accept and count is theirs.

use std::fs::File;
use std::io::{self, Write};
use std::os::fd::OwnedFd;
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;

use super::epoll::EpollLoop;
use super::shared::{Acceptor, LoopConfig, LoopCounters};
use super::uring::EventLoop;
use crate::ring::backend::resolve;
use crate::ring::sys::eventfd;
use crate::ring::{Backend, BackendChoice, RingError};

/// What the loop threads are for: names their threads, log lines and errors.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LoopRole {
    /// Thread name prefix (`<prefix>-<i>`).
    pub(crate) thread_prefix: &'static str,
    /// The word in log lines and errors (`opipe <log>: using epoll`).
    pub(crate) log: &'static str,
    /// The word in thread errors (`a <noun> thread panicked`).
    pub(crate) noun: &'static str,
}

/// Why the loop threads could not start.
#[derive(Debug)]
pub(crate) enum LoopStartError {
    /// The shutdown eventfd could not be made.
    Eventfd(io::Error),
    /// A thread's io_uring loop could not be set up.
    Ring(RingError),
    /// A thread's epoll loop could not be set up.
    Epoll(io::Error),
    /// A thread could not be spawned.
    Spawn(io::Error),
    /// A thread ended before saying whether its loop was up.
    Ended,
}

/// The most loop threads one runner starts.
pub(crate) const MAX_THREADS: usize = 1024;

/// Checks a thread count (1..=[`MAX_THREADS`]); the complaint otherwise.
pub(crate) fn check_thread_count(n: usize) -> Result<(), String> {
    if n == 0 || n > MAX_THREADS {
        return Err(format!("thread count {n} not in 1..={MAX_THREADS}"));
    }
    Ok(())
}

/// The backend `choice` resolves to, and why `Auto` fell back to epoll
/// (also logged as a warning), if it did.
fn resolve_backend(choice: BackendChoice, role: LoopRole) -> (Backend, Option<String>) {
    let (backend, why) = resolve(choice);
    let fallback_reason = why.map(|e| e.to_string());
    if let Some(why) = &fallback_reason {
        tracing::warn!("opipe {}: using epoll: {why}", role.log);
    }
    (backend, fallback_reason)
}

/// Running loop threads and the eventfd that stops them. Dropping this
/// does not stop them: call [`shutdown`](Self::shutdown) and
/// [`join`](Self::join).
#[derive(Debug)]
pub(crate) struct LoopThreads {
    threads: Vec<JoinHandle<io::Result<()>>>,
    shutdown_fd: Arc<OwnedFd>,
    role: LoopRole,
    backend: Backend,
    fallback_reason: Option<String>,
}

impl LoopThreads {
    /// Resolves `backend` (see [`BackendChoice`]) and starts `threads`
    /// loops on it, each over every listener with
    /// `cfg` and an acceptor from `acceptor`, and returns once every loop
    /// is up. A loop that ends with an error shuts every loop down rather
    /// than leave the others serving with a dead thread. On failure, the
    /// threads already started are stopped and joined.
    pub(crate) fn start<A, F>(
        role: LoopRole,
        backend: BackendChoice,
        threads: usize,
        cfg: &LoopConfig,
        listeners: &[Arc<OwnedFd>],
        counters: &Arc<LoopCounters>,
        mut acceptor: F,
    ) -> Result<LoopThreads, LoopStartError>
    where
        A: Acceptor + Send + 'static,
        F: FnMut() -> A,
    {
        let (backend, fallback_reason) = resolve_backend(backend, role);
        let shutdown_fd = Arc::new(eventfd().map_err(LoopStartError::Eventfd)?);
        let mut loops = LoopThreads {
            threads: Vec::with_capacity(threads),
            shutdown_fd,
            role,
            backend,
            fallback_reason,
        };
        let (ready_tx, ready_rx) = mpsc::channel::<Result<(), LoopStartError>>();
        for i in 0..threads {
            let (cfg, listeners) = (cfg.clone(), listeners.to_vec());
            let (shutdown, counters) = (loops.shutdown_fd.clone(), counters.clone());
            let ready = ready_tx.clone();
            let acceptor = acceptor();
            let spawned = std::thread::Builder::new()
                .name(format!("{}-{i}", role.thread_prefix))
                .spawn(move || {
                    // The loop is made on the thread that runs it.
                    let made = match backend {
                        Backend::IoUring => {
                            EventLoop::new(cfg, listeners, shutdown.clone(), counters)
                                .map(AnyLoop::Uring)
                                .map_err(LoopStartError::Ring)
                        }
                        Backend::Epoll => {
                            EpollLoop::new(cfg, listeners, shutdown.clone(), counters)
                                .map(AnyLoop::Epoll)
                                .map_err(LoopStartError::Epoll)
                        }
                    };
                    let ev = match made {
                        Ok(ev) => ev,
                        Err(e) => {
                            let _ = ready.send(Err(e));
                            return Ok(());
                        }
                    };
                    let _ = ready.send(Ok(()));
                    let r = match ev {
                        AnyLoop::Uring(ev) => ev.run(acceptor),
                        AnyLoop::Epoll(ev) => ev.run(acceptor),
                    };
                    if r.is_err() {
                        // Fail loudly: stop every loop rather than serve
                        // on with a dead thread.
                        let _ = signal_eventfd(&shutdown);
                    }
                    r
                });
            match spawned {
                Ok(t) => loops.threads.push(t),
                Err(e) => {
                    loops.stop();
                    return Err(LoopStartError::Spawn(e));
                }
            }
        }
        drop(ready_tx);
        for _ in 0..loops.threads.len() {
            let r = ready_rx.recv().unwrap_or(Err(LoopStartError::Ended));
            if let Err(e) = r {
                loops.stop();
                return Err(e);
            }
        }
        Ok(loops)
    }

    /// Shuts down and joins, ignoring the outcome (start-up failures).
    fn stop(&mut self) {
        let _ = self.shutdown();
        let _ = self.join();
    }

    /// The backend the loops run on.
    pub(crate) fn backend(&self) -> Backend {
        self.backend
    }

    /// Why [`BackendChoice::Auto`] fell back to epoll (the io_uring set-up
    /// error, as text); `None` when the backend is the one asked for.
    pub(crate) fn fallback_reason(&self) -> Option<&str> {
        self.fallback_reason.as_deref()
    }

    /// Number of threads not joined yet.
    pub(crate) fn len(&self) -> usize {
        self.threads.len()
    }

    /// Asks every loop to close its connections and stop; returns at once.
    pub(crate) fn shutdown(&self) -> io::Result<()> {
        signal_eventfd(&self.shutdown_fd)
    }

    /// True once any thread has ended (after a shutdown, or a failure).
    pub(crate) fn is_finished(&self) -> bool {
        self.threads.iter().any(|t| t.is_finished())
    }

    /// Waits for every thread to end; the first thread error, if any.
    pub(crate) fn join(&mut self) -> io::Result<()> {
        let mut first = Ok(());
        for t in self.threads.drain(..) {
            let r = t.join().unwrap_or_else(|_| {
                Err(io::Error::other(format!(
                    "a {} thread panicked",
                    self.role.noun
                )))
            });
            if first.is_ok() {
                first = r;
            }
        }
        first
    }
}

/// One thread's loop, on either backend (one per thread, on its stack,
/// moved once: the size difference costs nothing).
#[allow(clippy::large_enum_variant)]
enum AnyLoop {
    Uring(EventLoop),
    Epoll(EpollLoop),
}

/// Makes the shutdown eventfd readable (for every loop watching it).
fn signal_eventfd(fd: &OwnedFd) -> io::Result<()> {
    File::from(fd.try_clone()?).write_all(&1u64.to_ne_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ring::service::{Session, Verdict};
    use std::os::fd::BorrowedFd;
    use std::sync::atomic::{AtomicUsize, Ordering};

    struct Nothing;
    impl Session for Nothing {
        fn on_data(&mut self, _data: &[u8], _out: &mut Vec<u8>) -> Verdict {
            Verdict::Close
        }
    }
    struct Refuse;
    impl Acceptor for Refuse {
        type Session = Nothing;
        fn accept(&mut self, _listener: usize, _conn: BorrowedFd<'_>) -> Option<Nothing> {
            None
        }
    }

    const ROLE: LoopRole = LoopRole {
        thread_prefix: "opipe-test",
        log: "test",
        noun: "test",
    };

    #[test]
    fn starts_every_thread_and_stops_them_all() {
        let (listener, _addr) =
            crate::ring::service::tcp::tcp_listener("127.0.0.1:0".parse().unwrap()).unwrap();
        let made = AtomicUsize::new(0);
        let mut loops = LoopThreads::start(
            ROLE,
            BackendChoice::Epoll,
            3,
            &LoopConfig::default(),
            &[Arc::new(listener)],
            &Arc::new(LoopCounters::default()),
            || {
                made.fetch_add(1, Ordering::Relaxed);
                Refuse
            },
        )
        .unwrap();
        assert_eq!(loops.len(), 3);
        assert_eq!(loops.backend(), Backend::Epoll);
        assert_eq!(loops.fallback_reason(), None);
        assert_eq!(made.load(Ordering::Relaxed), 3);
        assert!(!loops.is_finished());
        loops.shutdown().unwrap();
        loops.join().unwrap();
        assert_eq!(loops.len(), 0);
    }

    #[test]
    fn thread_counts() {
        assert!(check_thread_count(0).is_err());
        assert!(check_thread_count(1).is_ok());
        assert!(check_thread_count(MAX_THREADS).is_ok());
        let e = check_thread_count(MAX_THREADS + 1).unwrap_err();
        assert_eq!(e, "thread count 1025 not in 1..=1024");
    }

    #[test]
    fn a_loop_that_cannot_start_fails_the_start() {
        let cfg = LoopConfig {
            recv_buffer_bytes: 0,
            ..LoopConfig::default()
        };
        let r = LoopThreads::start(
            ROLE,
            BackendChoice::Epoll,
            2,
            &cfg,
            &[],
            &Arc::new(LoopCounters::default()),
            || Refuse,
        );
        assert!(matches!(r, Err(LoopStartError::Epoll(_))), "{r:?}");
    }
}
