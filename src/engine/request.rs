//! Requests: the runtime-agnostic futures the engine hands out, their
//! blocking helpers and their cancel handles.
//!
//! A request's result travels from the ring thread to the caller through a
//! small shared cell (mutex + condvar + waker). No async runtime is needed:
//! `.await` it from any executor, or call [`Request::wait`].

use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use super::command::{lock, Command, Outcome, Shared, State};
use super::EngineInner;
use crate::protocol::NtStatus;

/// Turns the ring thread's outcome into the request's typed result.
pub(crate) type Convert<T> = fn(&Arc<EngineInner>, usize, Outcome) -> Result<T, NtStatus>;

/// A request in flight: a [`Future`] of its result, with [`Request::wait`]
/// for blocking callers and [`Request::cancel_handle`] to cancel it.
///
/// Dropping a request does not cancel it (a dropped write still happens);
/// a dropped open that succeeds has its pipe closed.
#[must_use = "a request does nothing useful unless awaited, waited for or cancelled"]
pub struct Request<T> {
    shared: Arc<Shared>,
    engine: Arc<EngineInner>,
    ring: usize,
    convert: Convert<T>,
    _t: PhantomData<fn() -> T>,
}

impl<T> std::fmt::Debug for Request<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Request")
            .field("ring", &self.ring)
            .field("shared", &self.shared)
            .finish()
    }
}

impl<T> Request<T> {
    pub(crate) fn new(
        shared: Arc<Shared>,
        engine: Arc<EngineInner>,
        ring: usize,
        convert: Convert<T>,
    ) -> Self {
        Request {
            shared,
            engine,
            ring,
            convert,
            _t: PhantomData,
        }
    }

    /// A request that is already finished (an error found before any I/O).
    pub(crate) fn ready(
        engine: Arc<EngineInner>,
        res: Result<Outcome, NtStatus>,
        convert: Convert<T>,
    ) -> Self {
        let shared = Shared::new();
        let _ = shared.complete(res);
        Request::new(shared, engine, 0, convert)
    }

    /// A handle that cancels this request from any thread.
    pub fn cancel_handle(&self) -> CancelHandle {
        CancelHandle {
            shared: self.shared.clone(),
            engine: self.engine.clone(),
            ring: self.ring,
        }
    }

    /// Cancels the request (see [`CancelHandle::cancel`]).
    pub fn cancel(&self) {
        self.cancel_handle().cancel()
    }

    /// Blocks until the request finishes.
    pub fn wait(self) -> Result<T, NtStatus> {
        self.wait_inner(None).unwrap_or(Err(NtStatus::IO_TIMEOUT))
    }

    /// Blocks until the request finishes or `timeout` passes; on timeout the
    /// request is cancelled and `STATUS_CANCELLED` returned once the engine
    /// confirmed (the request's resources are released by then or soon after).
    pub fn wait_timeout(self, timeout: Duration) -> Result<T, NtStatus> {
        // A timeout too long for the clock means no timeout.
        match self.wait_inner(Instant::now().checked_add(timeout)) {
            Some(r) => r,
            None => {
                self.cancel();
                self.wait_inner(None).unwrap_or(Err(NtStatus::CANCELLED))
            }
        }
    }

    fn wait_inner(&self, deadline: Option<Instant>) -> Option<Result<T, NtStatus>> {
        let mut st = lock(&self.shared.state);
        loop {
            match std::mem::replace(&mut *st, State::Taken) {
                State::Done(r) => {
                    drop(st);
                    return Some(r.and_then(|o| (self.convert)(&self.engine, self.ring, o)));
                }
                State::Taken => return Some(Err(NtStatus::INVALID_HANDLE)),
                pending @ State::Pending(_) => {
                    *st = pending;
                    st = match deadline {
                        None => self.shared.cond.wait(st).unwrap_or_else(|e| e.into_inner()),
                        Some(d) => {
                            let now = Instant::now();
                            if now >= d {
                                return None;
                            }
                            self.shared
                                .cond
                                .wait_timeout(st, d - now)
                                .unwrap_or_else(|e| e.into_inner())
                                .0
                        }
                    };
                }
            }
        }
    }
}

impl<T> Future for Request<T> {
    type Output = Result<T, NtStatus>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let mut st = lock(&this.shared.state);
        match std::mem::replace(&mut *st, State::Taken) {
            State::Done(r) => {
                drop(st);
                Poll::Ready(r.and_then(|o| (this.convert)(&this.engine, this.ring, o)))
            }
            State::Taken => Poll::Ready(Err(NtStatus::INVALID_HANDLE)),
            State::Pending(w) => {
                let w = match w {
                    Some(w) if w.will_wake(cx.waker()) => w,
                    _ => cx.waker().clone(),
                };
                *st = State::Pending(Some(w));
                Poll::Pending
            }
        }
    }
}

impl<T> Drop for Request<T> {
    fn drop(&mut self) {
        let mut st = lock(&self.shared.state);
        match std::mem::replace(&mut *st, State::Taken) {
            State::Pending(_) => {
                self.shared.abandoned.store(true, Ordering::Relaxed);
                *st = State::Taken;
            }
            State::Done(Ok(Outcome::Opened { pipe, .. })) => {
                // Opened but nobody took the pipe: close it.
                drop(st);
                self.engine
                    .send(self.ring, Command::Close { pipe, notify: None });
            }
            _ => {}
        }
    }
}

/// Cancels one request from any thread. The request ends with
/// `STATUS_CANCELLED` unless it already finished; its pipe stays usable.
#[derive(Clone)]
pub struct CancelHandle {
    shared: Arc<Shared>,
    engine: Arc<EngineInner>,
    ring: usize,
}

impl std::fmt::Debug for CancelHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CancelHandle")
            .field("ring", &self.ring)
            .finish()
    }
}

impl CancelHandle {
    /// Requests cancellation (`IORING_OP_ASYNC_CANCEL` of the request's
    /// in-flight SQE). Idempotent; does nothing if the request finished.
    pub fn cancel(&self) {
        if self.shared.is_done() {
            return;
        }
        // Queued once per request: a caller repeating cancels cannot grow
        // the ring's command queue.
        if self.shared.cancel_requested.swap(true, Ordering::SeqCst) {
            return;
        }
        self.engine.send(
            self.ring,
            Command::Cancel {
                shared: self.shared.clone(),
            },
        );
    }
}
