//! The [`PipeBackend`] of the front: every operation becomes an engine
//! request, left pending and polled with the connection's waker; the
//! session feeds what completed back to its [`Connection`](super::super::server::Connection).

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use super::FrontCounters;
use crate::engine::{Engine, OpenOptions, Pipe, Request, Transfer};
use crate::protocol::status::NtStatus;
use crate::protocol::userinfo::NetUserInfo;
use crate::smb2::server::{Completion, OpId, PipeBackend, PipeData, PipeRef};

/// An engine request in flight, by what its completion carries.
enum InFlight {
    Open(Request<Pipe>),
    Data(Request<Transfer>),
    Written(Request<usize>),
    Waited(Request<()>),
}

/// One connection's pipes and requests on the engine.
pub(crate) struct EngineBackend {
    engine: Engine,
    waker: Waker,
    pipes: HashMap<u64, Pipe>,
    next_pipe: u64,
    inflight: HashMap<OpId, InFlight>,
    counters: Arc<FrontCounters>,
}

impl std::fmt::Debug for EngineBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineBackend")
            .field("pipes", &self.pipes.len())
            .field("inflight", &self.inflight.len())
            .finish()
    }
}

fn data(t: Transfer) -> PipeData {
    PipeData {
        status: t.status,
        // `into` keeps this working whether the engine hands out a Vec or
        // a shared buffer type.
        #[allow(clippy::useless_conversion)]
        data: t.data.into(),
    }
}

impl EngineBackend {
    pub(crate) fn new(engine: Engine, waker: Waker, counters: Arc<FrontCounters>) -> Self {
        EngineBackend {
            engine,
            waker,
            pipes: HashMap::new(),
            next_pipe: 1,
            inflight: HashMap::new(),
            counters,
        }
    }

    fn pending<T>(&mut self, op: OpId, r: InFlight) -> Poll<T> {
        self.inflight.insert(op, r);
        Poll::Pending
    }

    /// Polls every request in flight (registering the waker with those
    /// still running); returns the completions of those that finished.
    pub(crate) fn poll_done(&mut self) -> Vec<(OpId, Completion)> {
        if self.inflight.is_empty() {
            return Vec::new();
        }
        let mut cx = Context::from_waker(&self.waker);
        let mut done = Vec::new();
        let mut opened = Vec::new();
        self.inflight.retain(|op, r| {
            let c = match r {
                InFlight::Open(q) => match Pin::new(q).poll(&mut cx) {
                    Poll::Ready(Ok(pipe)) => {
                        opened.push((*op, pipe));
                        return false;
                    }
                    Poll::Ready(Err(st)) => Completion::Open(Err(st)),
                    Poll::Pending => return true,
                },
                InFlight::Data(q) => match Pin::new(q).poll(&mut cx) {
                    Poll::Ready(r) => Completion::Data(r.map(data)),
                    Poll::Pending => return true,
                },
                InFlight::Written(q) => match Pin::new(q).poll(&mut cx) {
                    Poll::Ready(r) => Completion::Written(r),
                    Poll::Pending => return true,
                },
                InFlight::Waited(q) => match Pin::new(q).poll(&mut cx) {
                    Poll::Ready(r) => Completion::Waited(r),
                    Poll::Pending => return true,
                },
            };
            done.push((*op, c));
            false
        });
        for (op, pipe) in opened {
            let id = self.next_pipe;
            self.next_pipe += 1;
            self.pipes.insert(id, pipe);
            self.counters.opens.fetch_add(1, Ordering::Relaxed);
            done.push((op, Completion::Open(Ok(PipeRef(id)))));
        }
        for (_, c) in &done {
            let failed = match c {
                Completion::Open(r) => r.is_err(),
                Completion::Data(r) => r.as_ref().map_or(true, |d| d.status.is_error()),
                Completion::Written(r) => r.is_err(),
                Completion::Waited(r) => r.is_err(),
            };
            if !matches!(c, Completion::Open(_)) {
                self.counters.calls.fetch_add(1, Ordering::Relaxed);
            }
            if failed {
                self.counters.failed_calls.fetch_add(1, Ordering::Relaxed);
            }
        }
        done
    }

    /// Cancels what is in flight and closes every pipe (the connection is gone).
    pub(crate) fn close_all(&mut self) {
        for (_, r) in self.inflight.drain() {
            match r {
                InFlight::Open(q) => q.cancel(),
                InFlight::Data(q) => q.cancel(),
                InFlight::Written(q) => q.cancel(),
                InFlight::Waited(q) => q.cancel(),
            }
        }
        // Dropping a pipe closes it.
        self.pipes.clear();
    }

    fn pipe(&self, pipe: PipeRef) -> Result<&Pipe, NtStatus> {
        self.pipes.get(&pipe.0).ok_or(NtStatus::INVALID_HANDLE)
    }

    /// Starts a request on an open pipe (`STATUS_INVALID_HANDLE` for one
    /// that is not) and keeps it in flight as `op`.
    fn on_pipe<T>(
        &mut self,
        op: OpId,
        pipe: PipeRef,
        start: impl FnOnce(&Pipe) -> InFlight,
    ) -> Poll<Result<T, NtStatus>> {
        match self.pipe(pipe) {
            Ok(p) => {
                let r = start(p);
                self.pending(op, r)
            }
            Err(st) => Poll::Ready(Err(st)),
        }
    }
}

impl PipeBackend for EngineBackend {
    fn open(
        &mut self,
        op: OpId,
        name: &str,
        user: &NetUserInfo,
    ) -> Poll<Result<PipeRef, NtStatus>> {
        let path = if name.starts_with('\\') {
            name.to_owned()
        } else {
            format!("\\PIPE\\{name}")
        };
        let r = self
            .engine
            .open_with(&path, user.clone(), OpenOptions::default(), None);
        self.pending(op, InFlight::Open(r))
    }

    fn transceive(
        &mut self,
        op: OpId,
        pipe: PipeRef,
        input: Vec<u8>,
        max_out: usize,
    ) -> Poll<Result<PipeData, NtStatus>> {
        self.on_pipe(op, pipe, |p| InFlight::Data(p.transceive(input, max_out)))
    }

    fn peek(
        &mut self,
        op: OpId,
        pipe: PipeRef,
        max_out: usize,
    ) -> Poll<Result<PipeData, NtStatus>> {
        self.on_pipe(op, pipe, |p| InFlight::Data(p.peek(max_out)))
    }

    fn wait(&mut self, op: OpId, input: &[u8]) -> Poll<Result<(), NtStatus>> {
        let r = self.engine.fsctl_wait(input);
        self.pending(op, InFlight::Waited(r))
    }

    fn read(
        &mut self,
        op: OpId,
        pipe: PipeRef,
        max_out: usize,
    ) -> Poll<Result<PipeData, NtStatus>> {
        self.on_pipe(op, pipe, |p| InFlight::Data(p.read_message(max_out)))
    }

    fn write(&mut self, op: OpId, pipe: PipeRef, data: Vec<u8>) -> Poll<Result<usize, NtStatus>> {
        self.on_pipe(op, pipe, |p| InFlight::Written(p.write(data)))
    }

    fn cancel(&mut self, op: OpId) {
        match self.inflight.get(&op) {
            Some(InFlight::Open(q)) => q.cancel(),
            Some(InFlight::Data(q)) => q.cancel(),
            Some(InFlight::Written(q)) => q.cancel(),
            Some(InFlight::Waited(q)) => q.cancel(),
            None => {}
        }
    }

    fn close(&mut self, pipe: PipeRef) {
        // Dropping the pipe closes it; its requests in flight end cancelled.
        self.pipes.remove(&pipe.0);
    }

    fn logoff(&mut self, session_id: u64) {
        // Not awaited: the session's pipes were closed one by one already;
        // this ends whatever of it the engine still holds.
        drop(self.engine.disconnect_session(session_id));
    }
}
