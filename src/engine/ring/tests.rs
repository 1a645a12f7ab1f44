//! Deterministic tests of the per-ring core, driven through the scripted
//! [`FakeDriver`]: no io_uring, no socket, no real clock. Each test plays
//! the kernel's part in one chosen order and checks what the callers get.

use std::rc::{Rc, Weak};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::fake::{FakeDriver, K, SOCK_NONEMPTY};
use super::*;
use crate::engine::command::CommandQueue;
use crate::engine::command::Shared;
use crate::engine::Transfer;
use crate::protocol::NtStatus;

struct H {
    core: Core<FakeDriver>,
}

fn harness() -> H {
    harness_with(|_| {})
}

fn harness_with(f: impl FnOnce(&mut EngineConfig)) -> H {
    let mut cfg = EngineConfig::new("/nonexistent/opipe-fake");
    f(&mut cfg);
    let now = Instant::now();
    H {
        core: Core::new(
            FakeDriver::new(now),
            Arc::new(cfg),
            0,
            Arc::new(AtomicU64::new(1)),
            now,
        ),
    }
}

fn user(session: u64) -> Box<NetUserInfo> {
    Box::new(NetUserInfo {
        session_id: session,
        account: "alice".into(),
        ..Default::default()
    })
}

impl H {
    fn d(&mut self) -> &mut FakeDriver {
        &mut self.core.drv
    }

    /// Gives the core everything the fake completed, until it is quiet.
    fn turn(&mut self) {
        loop {
            let now = self.core.drv.now;
            self.core.on_turn(now);
            // One at a time, as the ring loop reaps: a lent chunk's bytes
            // last until the next reap.
            let mut any = false;
            while let Some(c) = self.core.drv.reap_one() {
                any = true;
                self.core.on_completion(c, now);
            }
            if !any {
                return;
            }
        }
    }

    fn cmd(&mut self, c: Command) {
        let now = self.core.drv.now;
        self.core.on_command(c, now);
        self.turn();
    }

    fn complete(&mut self, id: SqeId, r: i32) {
        self.d().complete(id, r);
        self.turn();
    }

    fn recv(&mut self, id: SqeId, bytes: &[u8]) {
        self.d().complete_recv(id, bytes, 0);
        self.turn();
    }

    fn chunk(&mut self, id: SqeId, bytes: &[u8]) {
        self.d().chunk(id, bytes, 0);
        self.turn();
    }

    fn honour(&mut self) {
        self.d().honour_cancels();
        self.turn();
    }

    fn advance(&mut self, d: Duration) {
        self.d().advance(d);
        self.turn();
    }

    /// Runs `cb` on the ring thread, as the callback of an empty write on
    /// `p` (completed at once).
    fn on_ring(&mut self, p: PipeId, cb: crate::engine::command::Callback) {
        self.cmd(Command::Io {
            pipe: p,
            io: PipeIo::Write {
                data: SendBuf::default(),
            },
            notify: Notify::Callback(cb),
        });
        self.send_all();
    }

    /// Completes the one send in flight in full.
    fn send_all(&mut self) {
        let id = self.d().one(K::Send);
        let n = send_len(self.d().op(id));
        self.complete(id, n as i32);
    }

    fn open_path(&mut self, path: &str, session: u64, tree: Option<Tree>) -> Arc<Shared> {
        let s = Shared::new();
        self.cmd(Command::Open {
            path: path.into(),
            user: user(session),
            identity: None,
            tree,
            notify: Notify::Shared(s.clone()),
        });
        s
    }

    fn open(&mut self, session: u64) -> Arc<Shared> {
        self.open_path("\\PIPE\\srvsvc", session, None)
    }

    /// Connects the one open in flight and sends its handshake in full;
    /// returns the receive of the answer.
    fn handshake_sent(&mut self) -> SqeId {
        let c = self.d().one(K::Connect);
        self.complete(c, 0);
        self.send_all();
        self.d().one(K::Recv)
    }

    /// Plays a successful handshake for the one open in flight.
    fn handshake_ok(&mut self) {
        self.handshake_answered(&[0, 0, 0, 0]);
    }

    /// Plays a handshake for the one open in flight, answered with `reply`.
    fn handshake_answered(&mut self, reply: &[u8]) {
        let r = self.handshake_sent();
        self.recv(r, reply);
        // The deadline timer is no longer needed: the core cancels it.
        self.honour();
    }

    fn open_ok(&mut self, session: u64) -> PipeId {
        self.open_answered(session, &[0, 0, 0, 0])
    }

    /// Opens a pipe whose handshake is answered with `reply` (an open
    /// that must succeed).
    fn open_answered(&mut self, session: u64, reply: &[u8]) -> PipeId {
        let s = self.open(session);
        self.handshake_answered(reply);
        match done(&s) {
            Ok(Outcome::Opened { pipe, .. }) => pipe,
            other => panic!("open: {other:?}"),
        }
    }

    /// Opens a pipe (session 1) and sends a "ping" transceive in full; its
    /// reply is still to come.
    fn ping_sent(&mut self) -> (PipeId, Arc<Shared>) {
        let p = self.open_ok(1);
        let s = self.transceive(p, b"ping", 4280);
        self.send_all();
        (p, s)
    }

    fn io(&mut self, pipe: PipeId, io: PipeIo) -> Arc<Shared> {
        let s = Shared::new();
        self.cmd(Command::Io {
            pipe,
            io,
            notify: Notify::Shared(s.clone()),
        });
        s
    }

    fn transceive(&mut self, pipe: PipeId, input: &[u8], max_out: usize) -> Arc<Shared> {
        self.io(
            pipe,
            PipeIo::Transceive {
                input: input.to_vec().into(),
                max_out,
            },
        )
    }

    fn read(&mut self, pipe: PipeId, max_out: usize) -> Arc<Shared> {
        self.io(pipe, PipeIo::Read { max_out })
    }

    fn cancel(&mut self, s: &Arc<Shared>) {
        s.cancel_requested
            .store(true, std::sync::atomic::Ordering::SeqCst);
        self.cmd(Command::Cancel { shared: s.clone() });
    }

    fn close(&mut self, pipe: PipeId) -> Arc<Shared> {
        let s = Shared::new();
        self.cmd(Command::Close {
            pipe,
            notify: Some(Notify::Shared(s.clone())),
        });
        s
    }

    fn wait(&mut self, timeout: Duration) -> Arc<Shared> {
        let s = Shared::new();
        let name = PipeName::parse("srvsvc").expect("name");
        self.cmd(Command::WaitPipe {
            name,
            timeout,
            notify: Notify::Shared(s.clone()),
        });
        s
    }

    /// A weak hold on the descriptor of the one op of kind `k` in flight
    /// (a pipe's op names it by number: the pipe entry holds it).
    fn fd_of(&mut self, k: K) -> Weak<OwnedFd> {
        let id = self.d().one(k);
        match self.d().op(id).fd() {
            Some(Sock::Held(fd)) => Rc::downgrade(fd),
            Some(Sock::Kept(raw)) => {
                let raw = *raw;
                let fd = self.d().socket(raw);
                assert!(
                    fd.upgrade().is_some(),
                    "{k:?} names a socket that is closed"
                );
                fd
            }
            None => panic!("{k:?} holds no descriptor"),
        }
    }
}

/// A next transceive on `p` starts at once: its send and a receive.
fn assert_next_starts_at_once(h: &mut H, p: PipeId, why: &str) {
    let next = h.transceive(p, b"x", 4280);
    assert_eq!(h.d().kinds(), vec![K::Send, K::RecvPooled], "{why}");
    drop(next);
}

fn send_len(op: &Op) -> usize {
    send_buf(op).len() - send_start(op)
}

/// The whole buffer of a send (from its first byte, not from `start`).
fn send_buf(op: &Op) -> &[u8] {
    match op {
        Op::Send { buf, .. } => buf,
        _ => panic!("not a send"),
    }
}

fn send_start(op: &Op) -> usize {
    match op {
        Op::Send { start, .. } => *start,
        _ => panic!("not a send"),
    }
}

fn pending(s: &Arc<Shared>) -> bool {
    !s.is_done()
}

fn done(s: &Arc<Shared>) -> Result<Outcome, NtStatus> {
    match s.try_take() {
        Some(r) => r,
        None => panic!("request still pending"),
    }
}

fn transfer(s: &Arc<Shared>) -> Transfer {
    match done(s) {
        Ok(Outcome::Transfer(t)) => t,
        other => panic!("not a transfer: {other:?}"),
    }
}

fn status(s: &Arc<Shared>) -> NtStatus {
    match done(s) {
        Err(st) => st,
        Ok(o) => panic!("expected an error, got {o:?}"),
    }
}

fn ok(data: &[u8]) -> Transfer {
    Transfer {
        status: NtStatus::SUCCESS,
        data: data.to_vec(),
    }
}

fn bytes(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i % 251) as u8).collect()
}

// ---- open ------------------------------------------------------------------

#[test]
fn open_pushes_one_chain_and_a_deadline() {
    let mut h = harness();
    let s = h.open(7);
    assert_eq!(
        h.d().kinds(),
        vec![K::Connect, K::Send, K::Recv, K::Timer],
        "connect -> hello -> status, plus the timer"
    );
    h.handshake_ok();
    match done(&s) {
        Ok(Outcome::Opened { info, .. }) => {
            assert_eq!(info.session_id, 7);
            assert_eq!(info.name.as_str(), "srvsvc");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(h.d().in_flight(), 0, "the timer was cancelled and reaped");
}

#[test]
fn open_refused_connect_is_name_not_found_and_closes_the_socket() {
    let mut h = harness();
    let s = h.open(1);
    let fd = h.fd_of(K::Connect);
    let c = h.d().one(K::Connect);
    h.complete(c, -libc::ECONNREFUSED);
    // Its successors failed with the link; only the timer is left.
    assert_eq!(h.d().kinds(), vec![K::Timer]);
    assert!(pending(&s), "the open ends only after its last CQE");
    h.honour();
    assert_eq!(status(&s), NtStatus::OBJECT_NAME_NOT_FOUND);
    assert!(fd.upgrade().is_none(), "the half-opened socket is closed");
}

#[test]
fn open_deadline_before_status_cancels_the_receive() {
    let mut h = harness();
    let s = h.open(1);
    let recv = h.handshake_sent();
    h.advance(Duration::from_secs(5));
    assert!(
        h.d().cancel_asked(recv),
        "the deadline cancels the running step"
    );
    assert!(pending(&s));
    h.honour();
    assert_eq!(status(&s), NtStatus::PIPE_NOT_AVAILABLE);
}

#[test]
fn open_status_then_deadline_in_one_batch_succeeds() {
    let mut h = harness();
    let s = h.open(1);
    let recv = h.handshake_sent();
    // Both CQEs are reaped together, the status first.
    h.d().complete_recv(recv, &[0, 0, 0, 0], 0);
    h.d().advance(Duration::from_secs(5));
    h.turn();
    assert!(matches!(done(&s), Ok(Outcome::Opened { .. })));
}

#[test]
fn open_deadline_then_status_in_one_batch_fails_and_closes() {
    let mut h = harness();
    let s = h.open(1);
    let recv = h.handshake_sent();
    let fd = h.fd_of(K::Recv);
    // The timer's CQE comes first; the status word arrived anyway.
    h.d().advance(Duration::from_secs(5));
    h.d().complete_recv(recv, &[0, 0, 0, 0], 0);
    h.turn();
    assert_eq!(status(&s), NtStatus::PIPE_NOT_AVAILABLE);
    assert!(fd.upgrade().is_none());
}

#[test]
fn open_returns_a_nonzero_status_word_as_is() {
    let mut h = harness();
    let s = h.open(1);
    let recv = h.handshake_sent();
    h.recv(recv, &0xc000_00acu32.to_le_bytes());
    h.honour();
    assert_eq!(status(&s), NtStatus(0xc000_00ac));
}

#[test]
fn open_short_status_word_is_pipe_not_available() {
    let mut h = harness();
    let s = h.open(1);
    let recv = h.handshake_sent();
    h.recv(recv, &[0, 0]);
    h.honour();
    assert_eq!(status(&s), NtStatus::PIPE_NOT_AVAILABLE);
}

#[test]
fn open_after_tree_disconnect_is_network_name_deleted() {
    let mut h = harness();
    let tree = Tree::new();
    let s = h.open_path("\\PIPE\\srvsvc", 1, Some(tree.clone()));
    let fd = h.fd_of(K::Connect);
    tree.disconnect();
    h.handshake_ok();
    assert_eq!(status(&s), NtStatus::NETWORK_NAME_DELETED);
    assert!(fd.upgrade().is_none());
}

#[test]
fn open_bad_name_and_socket_failure_end_at_once() {
    let mut h = harness();
    let s = h.open_path("\\PIPE\\a/b", 1, None);
    assert_eq!(status(&s), NtStatus::OBJECT_NAME_INVALID);
    assert_eq!(h.d().sockets, 0, "no socket for a bad name");
    h.d().socket_errno = Some(libc::EMFILE);
    let s = h.open(1);
    assert_eq!(status(&s), NtStatus::TOO_MANY_OPENED_FILES);
    assert_eq!(h.d().in_flight(), 0);
}

#[test]
fn opens_over_the_limit_wait_without_a_socket_and_can_be_cancelled() {
    let mut h = harness_with(|c| c.max_opens_in_flight = 1);
    let first = h.open(1);
    let second = h.open(1);
    let third = h.open(1);
    assert_eq!(h.d().sockets, 1, "the others wait without a socket");
    h.cancel(&second);
    assert_eq!(status(&second), NtStatus::CANCELLED, "ends at once");
    h.handshake_ok();
    assert!(matches!(done(&first), Ok(Outcome::Opened { .. })));
    assert_eq!(h.d().sockets, 2, "the third starts when the first ends");
    h.handshake_ok();
    assert!(matches!(done(&third), Ok(Outcome::Opened { .. })));
}

#[test]
fn abandoned_open_closes_its_pipe() {
    let mut h = harness();
    let s = h.open(1);
    let fd = h.fd_of(K::Connect);
    s.abandoned
        .store(true, std::sync::atomic::Ordering::Relaxed);
    h.handshake_ok();
    assert_eq!(h.d().closes, 1, "the pipe nobody took is closed");
    assert!(fd.upgrade().is_none());
    assert_eq!(h.core.pipes.len(), 0);
}

// ---- transceive on the multishot path ------------------------------------

#[test]
fn transceive_is_one_send_and_a_chunk() {
    let mut h = harness();
    let p = h.open_ok(1);
    let s = h.transceive(p, b"ping", 4280);
    assert_eq!(h.d().kinds(), vec![K::RecvMulti, K::Send]);
    h.send_all();
    assert!(pending(&s), "sent; the reply comes with the next chunk");
    let ms = h.d().one(K::RecvMulti);
    h.chunk(ms, b"pong");
    assert_eq!(transfer(&s), ok(b"pong"));
    // The receive stays armed: the next transceive is one SEND.
    let s = h.transceive(p, b"ping", 4280);
    assert_eq!(h.d().kinds(), vec![K::RecvMulti, K::Send]);
    h.chunk(ms, b"pong2");
    assert!(pending(&s), "the reply came before the send's CQE");
    h.send_all();
    assert_eq!(transfer(&s), ok(b"pong2"));
}

/// A multishot receive's SQE names its pipe, not its op entry, and each
/// chunk goes to the pipe whose receive took it: with several pipes and
/// more op entries than pipes, the two kinds of key differ.
#[test]
fn multishot_chunks_are_routed_by_the_pipe_their_receive_names() {
    let mut h = harness();
    let a = h.open_ok(1);
    let b = h.open_ok(1);
    let sa = h.transceive(a, b"to a", 4280);
    h.send_all();
    let sb = h.transceive(b, b"to b", 4280);
    h.send_all();
    let ms = h.d().ids(K::RecvMulti);
    assert_eq!(ms.len(), 2);
    let (ma, mb) = (ms[0], ms[1]);
    for (id, pipe) in [(ma, a), (mb, b)] {
        let t = Token::from_raw(h.d().token(id));
        assert_eq!(
            (t.kind(), t.index(), t.gen()),
            (ST_MULTISHOT, pipe.index, pipe.gen)
        );
    }
    let mb_key = h
        .core
        .pipes
        .get_mut(b.index, b.gen)
        .unwrap()
        .multishot
        .key();
    assert_ne!(
        mb_key,
        Some((b.index, b.gen)),
        "op and pipe keys differ here"
    );
    h.chunk(mb, b"for b");
    assert_eq!(transfer(&sb), ok(b"for b"));
    assert!(pending(&sa), "a chunk of b's receive is not a's");
    h.chunk(ma, b"for a");
    assert_eq!(transfer(&sa), ok(b"for a"));
    // The receive's end goes to its op entry through the pipe.
    h.d().complete(mb, -libc::ECANCELED);
    h.turn();
    assert!(h
        .core
        .pipes
        .get_mut(b.index, b.gen)
        .unwrap()
        .multishot
        .is_off());
    assert!(mb_key.is_some_and(|k| h.core.ops.get_mut(k.0, k.1).is_none()));
}

/// A caller's shared `Bytes` is sent as it is (the SEND points at the
/// caller's bytes) and, being still the caller's too, is not taken into
/// the driver's spare buffers; a `Vec` handed over is.
#[test]
fn a_shared_input_is_sent_without_a_copy_and_not_recycled() {
    let mut h = harness();
    let p = h.open_ok(1);
    let shared = bytes::Bytes::from(b"shared request".to_vec());
    let before = h.d().recycled;
    let s = h.io(
        p,
        PipeIo::Transceive {
            input: shared.clone().into(),
            max_out: 4280,
        },
    );
    let id = h.d().one(K::Send);
    let buf = send_buf(h.d().op(id));
    assert_eq!(buf.as_ptr(), shared.as_ptr(), "no copy");
    h.send_all();
    let ms = h.d().one(K::RecvMulti);
    h.chunk(ms, b"pong");
    assert_eq!(transfer(&s), ok(b"pong"));
    assert_eq!(h.d().recycled, before, "the caller's buffer is not taken");
    assert_eq!(&shared[..], b"shared request", "and left as it was");
    let s = h.transceive(p, b"owned", 4280);
    h.send_all();
    h.chunk(ms, b"pong");
    assert_eq!(transfer(&s), ok(b"pong"));
    assert_eq!(h.d().recycled, before + 1, "an owned buffer is recycled");
}

/// A transceive of `max_out` 10 on `p` whose 30-byte reply comes in one
/// multishot chunk: it ends `STATUS_BUFFER_OVERFLOW` with the first 10
/// bytes, and the rest stays in the pushback. Returns the whole reply.
fn overflow_by_20(h: &mut H, p: PipeId) -> Vec<u8> {
    let s = h.transceive(p, b"q", 10);
    h.send_all();
    let ms = h.d().one(K::RecvMulti);
    let reply = bytes(30);
    h.chunk(ms, &reply);
    let t = transfer(&s);
    assert_eq!(t.status, NtStatus::BUFFER_OVERFLOW);
    assert_eq!(t.data, reply[..10]);
    reply
}

#[test]
fn overflowed_reply_rest_is_read_from_memory() {
    let mut h = harness();
    let p = h.open_ok(1);
    let reply = overflow_by_20(&mut h, p);
    let r = h.read(p, 100);
    assert_eq!(transfer(&r), ok(&reply[10..]));
    assert_eq!(h.d().kinds(), vec![K::RecvMulti], "no SQE for the read");
}

/// A chunk lent in the pool buffer that overflows the waiting transceive:
/// the waiter's share and the rest are each copied once from there (one
/// spare buffer each; no copy of the whole chunk first), and the next read
/// gets the rest. A chunk nobody waits for (the general way) is copied
/// once, into the pushback.
#[test]
fn a_lent_chunk_is_copied_once_to_the_waiter_and_once_to_the_pushback() {
    let mut h = harness();
    let p = h.open_ok(1);
    let before = h.d().spares_taken;
    let reply = overflow_by_20(&mut h, p);
    assert_eq!(h.d().spares_taken - before, 2, "share and rest");
    let r = h.read(p, 100);
    assert_eq!(transfer(&r), ok(&reply[10..]));
    // Nobody waits: the whole chunk to the pushback, then to the read.
    let ms = h.d().one(K::RecvMulti);
    let before = h.d().spares_taken;
    h.chunk(ms, b"unasked");
    assert_eq!(
        h.d().spares_taken - before,
        1,
        "one copy, into the pushback"
    );
    let r = h.read(p, 100);
    assert_eq!(transfer(&r), ok(b"unasked"));
}

/// `read_append_with` appends to the caller's buffer and gives back the
/// one the bytes came in; a failed read leaves the buffer as it was.
#[test]
fn read_append_appends_and_recycles_the_pushback_buffer() {
    type Got = std::sync::Mutex<Vec<(Vec<u8>, Result<usize, NtStatus>)>>;
    let mut h = harness();
    let p = h.open_ok(1);
    let reply = overflow_by_20(&mut h, p);
    let got: Arc<Got> = Arc::default();
    let recycled = h.d().recycled;
    let g = got.clone();
    let cb = crate::engine::command::Callback::new(move |ctx, _| {
        let first = reply[..10].to_vec();
        ctx.read_append_with(p, first, 100, move |ctx, buf, res| {
            g.lock().unwrap().push((buf, res));
            // The pipe's stream is empty now: this one waits, then fails.
            let g2 = g.clone();
            ctx.read_append_with(p, b"kept".to_vec(), 100, move |_, buf, res| {
                g2.lock().unwrap().push((buf, res));
            });
        });
    });
    h.on_ring(p, cb);
    let whole = bytes(30);
    {
        let got = got.lock().unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0], (whole, Ok(20)));
    }
    assert_eq!(h.d().recycled, recycled + 1, "the rest's buffer went back");
    // The second read fails when the pipe closes under it.
    let ms = h.d().one(K::RecvMulti);
    h.complete(ms, 0);
    let got = got.lock().unwrap();
    assert_eq!(got.len(), 2);
    assert_eq!(got[1], (b"kept".to_vec(), Err(NtStatus::PIPE_BROKEN)));
}

type Log = Arc<std::sync::Mutex<Vec<(Vec<u8>, Result<usize, NtStatus>)>>>;

/// Starts a transceive of `max_out` 10 on `p` whose ring-thread callback
/// runs `then` with its reply (after checking the overflow), and gets its
/// 30-byte reply as one multishot chunk. Returns the reply.
fn overflow_then(
    h: &mut H,
    p: PipeId,
    then: impl FnOnce(&mut crate::engine::RingContext<'_>, Vec<u8>) + Send + 'static,
) -> Vec<u8> {
    let cb = crate::engine::command::transfer_callback(move |ctx, res| {
        let t = res.expect("the transceive succeeds");
        assert_eq!(t.status, NtStatus::BUFFER_OVERFLOW);
        then(ctx, t.data)
    });
    h.cmd(Command::Io {
        pipe: p,
        io: PipeIo::Transceive {
            input: SendBuf::Owned(b"q".to_vec()),
            max_out: 10,
        },
        notify: Notify::Callback(cb),
    });
    h.send_all();
    let ms = h.d().one(K::RecvMulti);
    let reply = bytes(30);
    h.chunk(ms, &reply);
    reply
}

/// The callback of an overflowed transceive that reads the rest at once
/// (`read_append_with`) copies it from the lent chunk into its buffer: one
/// spare buffer in all (the share's), none for the rest.
#[test]
fn the_rest_read_at_once_is_copied_straight_from_the_lent_chunk() {
    let mut h = harness();
    let p = h.open_ok(1);
    let log: Log = Arc::default();
    let l = log.clone();
    let before = h.d().spares_taken;
    let reply = overflow_then(&mut h, p, move |ctx, first| {
        ctx.read_append_with(p, first, 100, move |_, buf, res| {
            l.lock().unwrap().push((buf, res));
        });
    });
    assert_eq!(*log.lock().unwrap(), [(reply, Ok(20))]);
    assert_eq!(h.d().spares_taken - before, 1, "the share's buffer only");
    // Nothing is left behind: the next read waits for the socket.
    let r = h.read(p, 100);
    assert!(pending(&r));
}

/// A callback that reads only part of the rest, or reads it another way,
/// finds it in stream order: what it did not take is in the pushback.
#[test]
fn the_rest_not_read_at_once_is_in_the_pushback_in_order() {
    // Part of it at once, the rest later.
    let mut h = harness();
    let p = h.open_ok(1);
    let log: Log = Arc::default();
    let l = log.clone();
    let reply = overflow_then(&mut h, p, move |ctx, first| {
        ctx.read_append_with(p, first, 5, move |_, buf, res| {
            l.lock().unwrap().push((buf, res));
        });
    });
    assert_eq!(*log.lock().unwrap(), [(reply[..15].to_vec(), Ok(5))]);
    let r = h.read(p, 100);
    assert_eq!(transfer(&r), ok(&reply[15..]));
    // A plain read from the callback (a request of its own): the first
    // bytes of the rest, then the others.
    let mut h = harness();
    let p = h.open_ok(1);
    let got = Arc::new(std::sync::Mutex::new(Vec::new()));
    let g = got.clone();
    let reply = overflow_then(&mut h, p, move |ctx, _| {
        ctx.read_with(p, 7, move |_, res| g.lock().unwrap().push(res));
    });
    assert_eq!(*got.lock().unwrap(), [Ok(reply[10..17].to_vec())]);
    let r = h.read(p, 100);
    assert_eq!(transfer(&r), ok(&reply[17..]));
}

/// A transceive with nothing to send whose reply is already held: no SQE
/// at all, so it must end at once, not wait for a completion.
#[test]
fn empty_transceive_of_a_held_reply_ends_at_once() {
    let mut h = harness();
    let p = h.open_ok(1);
    let reply = overflow_by_20(&mut h, p);
    let s = h.transceive(p, b"", 100);
    assert_eq!(transfer(&s), ok(&reply[10..]));
    assert_eq!(h.d().kinds(), vec![K::RecvMulti], "no SQE for it");
}

#[test]
fn exact_fill_without_more_waiting_is_success() {
    let mut h = harness();
    let p = h.open_ok(1);
    let s = h.transceive(p, b"q", 10);
    h.send_all();
    let ms = h.d().one(K::RecvMulti);
    h.chunk(ms, &bytes(10));
    assert_eq!(transfer(&s).status, NtStatus::SUCCESS);
    // The kernel saying more is queued makes the same fill an overflow.
    let s = h.transceive(p, b"q", 10);
    h.send_all();
    h.d().chunk(ms, &bytes(10), SOCK_NONEMPTY);
    h.turn();
    assert_eq!(transfer(&s).status, NtStatus::BUFFER_OVERFLOW);
}

#[test]
fn multishot_enobufs_rearms_for_the_waiter() {
    let mut h = harness();
    let (_, s) = h.ping_sent();
    let ms = h.d().one(K::RecvMulti);
    h.complete(ms, -libc::ENOBUFS);
    let ms2 = h.d().one(K::RecvMulti);
    assert_ne!(ms, ms2, "re-armed");
    assert!(pending(&s));
    h.chunk(ms2, b"pong");
    assert_eq!(transfer(&s), ok(b"pong"));
}

#[test]
fn multishot_ending_between_two_waiters_rearms_for_the_second() {
    let mut h = harness();
    let p = h.open_ok(1);
    let a = h.transceive(p, b"a", 4280);
    let b = h.read(p, 4280);
    h.send_all();
    let ms = h.d().one(K::RecvMulti);
    h.chunk(ms, b"first");
    assert_eq!(transfer(&a), ok(b"first"));
    assert!(pending(&b));
    // The pool ran dry in the middle of the reply.
    h.complete(ms, -libc::ENOBUFS);
    let ms2 = h.d().one(K::RecvMulti);
    h.chunk(ms2, b"second");
    assert_eq!(transfer(&b), ok(b"second"));
}

#[test]
fn multishot_end_of_stream_breaks_the_pipe() {
    let mut h = harness();
    let (p, s) = h.ping_sent();
    let ms = h.d().one(K::RecvMulti);
    h.complete(ms, 0);
    assert_eq!(status(&s), NtStatus::PIPE_BROKEN);
    // After end of stream the linked chain is used (and sees it too).
    let s = h.transceive(p, b"ping", 4280);
    assert_eq!(h.d().kinds(), vec![K::Send, K::RecvPooled]);
    h.send_all();
    let r = h.d().one(K::RecvPooled);
    h.complete(r, 0);
    assert_eq!(status(&s), NtStatus::PIPE_BROKEN);
}

#[test]
fn kernel_without_multishot_falls_back_to_one_receive_per_request() {
    let mut h = harness();
    let (p, s) = h.ping_sent();
    let ms = h.d().one(K::RecvMulti);
    h.complete(ms, -libc::EINVAL);
    let r = h.d().one(K::RecvPooled);
    h.recv(r, b"pong");
    assert_eq!(transfer(&s), ok(b"pong"));
    let _s = h.transceive(p, b"ping", 4280);
    assert_eq!(
        h.d().kinds(),
        vec![K::Send, K::RecvPooled],
        "linked from now on"
    );
}

#[test]
fn pushback_over_its_cap_stops_the_receive() {
    let mut h = harness();
    let (p, s) = h.ping_sent();
    let ms = h.d().one(K::RecvMulti);
    h.chunk(ms, b"pong");
    assert_eq!(transfer(&s), ok(b"pong"));
    for _ in 0..16 {
        h.chunk(ms, &bytes(4096));
    }
    assert!(!h.d().cancel_asked(ms), "64 KiB is still within the cap");
    h.chunk(ms, &bytes(1));
    assert!(h.d().cancel_asked(ms), "over the cap: nobody is reading");
    h.honour();
    assert_eq!(h.d().in_flight(), 0);
    // The pushback is read first, in order, with no SQE.
    let r = h.read(p, 4096);
    assert_eq!(transfer(&r), ok(&bytes(4096)));
    assert_eq!(h.d().in_flight(), 0);
}

#[test]
fn read_above_a_pool_buffer_waits_for_the_multishot_receive_to_stop() {
    let mut h = harness();
    let (p, s) = h.ping_sent();
    let ms = h.d().one(K::RecvMulti);
    h.chunk(ms, b"pong");
    assert_eq!(transfer(&s), ok(b"pong"));
    let r = h.read(p, 8192);
    assert!(h.d().cancel_asked(ms), "two receives never race");
    assert_eq!(h.d().kinds(), vec![K::RecvMulti]);
    h.honour();
    let own = h.d().one(K::Recv);
    h.recv(own, &bytes(5000));
    assert_eq!(transfer(&r), ok(&bytes(5000)));
}

// ---- the linked chain -------------------------------------------------------

fn linked() -> H {
    harness_with(|c| c.multishot = false)
}

#[test]
fn linked_transceive_and_read_ahead() {
    let mut h = linked();
    h.d().features.sock_nonempty = false;
    let p = h.open_ok(1);
    let s = h.transceive(p, b"q", 10);
    assert_eq!(
        h.d().kinds(),
        vec![K::Send, K::RecvPooled, K::Peek],
        "without SOCK_NONEMPTY a one-byte peek tells if more is waiting"
    );
    h.send_all();
    let r = h.d().one(K::RecvPooled);
    let reply = bytes(30);
    h.recv(r, &reply);
    let peek = h.d().one(K::Peek);
    h.complete(peek, -libc::EAGAIN);
    let t = transfer(&s);
    assert_eq!(
        t.status,
        NtStatus::BUFFER_OVERFLOW,
        "read ahead: more waits"
    );
    assert_eq!(t.data, reply[..10]);
    let r = h.read(p, 100);
    assert_eq!(transfer(&r), ok(&reply[10..]));
}

#[test]
fn linked_enobufs_receives_again_with_its_own_buffer() {
    let mut h = linked();
    let (_, s) = h.ping_sent();
    let r = h.d().one(K::RecvPooled);
    h.complete(r, -libc::ENOBUFS);
    assert!(pending(&s), "pool exhaustion costs speed, never a result");
    let own = h.d().one(K::Recv);
    h.recv(own, b"pong");
    assert_eq!(transfer(&s), ok(b"pong"));
}

#[test]
fn linked_short_send_resumes_from_the_first_unsent_byte() {
    let mut h = linked();
    let p = h.open_ok(1);
    let input = bytes(100);
    let s = h.transceive(p, &input, 4280);
    let send = h.d().one(K::Send);
    h.complete(send, 40);
    assert_eq!(h.d().kinds(), vec![K::Send, K::RecvPooled], "a new chain");
    let send = h.d().one(K::Send);
    assert_eq!(send_start(h.d().op(send)), 40);
    h.complete(send, 60);
    let r = h.d().one(K::RecvPooled);
    h.recv(r, b"pong");
    assert_eq!(transfer(&s), ok(b"pong"));
}

#[test]
fn multishot_short_send_resumes() {
    // A held send (the bytes stay in the op entry) and, where the driver
    // holds none, one the driver keeps in a slot.
    for holds_sends in [true, false] {
        let mut h = harness();
        h.d().holds_sends = holds_sends;
        let p = h.open_ok(1);
        let input = bytes(100);
        let s = h.transceive(p, &input, 4280);
        let send = h.d().one(K::Send);
        h.complete(send, 30);
        let send = h.d().one(K::Send);
        assert_eq!(send_start(h.d().op(send)), 30);
        assert_eq!(send_buf(h.d().op(send)), &input[..], "the same bytes");
        h.complete(send, 70);
        let ms = h.d().one(K::RecvMulti);
        h.chunk(ms, b"pong");
        assert_eq!(transfer(&s), ok(b"pong"));
        let held = if holds_sends { 2 } else { 0 };
        assert_eq!(h.d().held_sends, held, "holds_sends {holds_sends}");
        // The sent request's buffer went back to the driver either way.
        assert_eq!(h.d().recycled, 1, "holds_sends {holds_sends}");
    }
}

#[test]
fn multishot_short_send_after_its_reply_resumes_and_ends_with_it() {
    // A peer that answers before the whole request was sent: the reply's
    // chunk waits in the request while the rest of the short send goes
    // out; that send's completion ends the request.
    let mut h = harness();
    let p = h.open_ok(1);
    let s = h.transceive(p, &bytes(100), 4280);
    let send = h.d().one(K::Send);
    let ms = h.d().one(K::RecvMulti);
    h.chunk(ms, b"pong");
    assert!(pending(&s), "the request is still being sent");
    h.complete(send, 30);
    let send = h.d().one(K::Send);
    assert_eq!(send_start(h.d().op(send)), 30);
    assert!(pending(&s), "the rest is still to send");
    h.complete(send, 70);
    assert_eq!(transfer(&s), ok(b"pong"));
}

#[test]
fn short_write_resumes_and_counts_every_byte() {
    let mut h = harness();
    let p = h.open_ok(1);
    let s = h.io(
        p,
        PipeIo::Write {
            data: bytes(100).into(),
        },
    );
    let send = h.d().one(K::Send);
    h.complete(send, 1);
    let send = h.d().one(K::Send);
    assert_eq!(send_start(h.d().op(send)), 1);
    h.complete(send, 99);
    assert!(matches!(done(&s), Ok(Outcome::Written(100))));
}

#[test]
fn failed_send_is_the_socket_status() {
    let mut h = linked();
    let p = h.open_ok(1);
    let s = h.transceive(p, b"ping", 4280);
    let send = h.d().one(K::Send);
    h.complete(send, -libc::EPIPE);
    assert_eq!(status(&s), NtStatus::PIPE_BROKEN);
    assert_eq!(h.d().in_flight(), 0);
}

// ---- cancel ----------------------------------------------------------------

#[test]
fn cancel_before_start_sends_nothing() {
    let mut h = harness();
    let p = h.open_ok(1);
    let s = Shared::new();
    s.cancel_requested
        .store(true, std::sync::atomic::Ordering::SeqCst);
    h.cmd(Command::Io {
        pipe: p,
        io: PipeIo::Transceive {
            input: b"x".to_vec().into(),
            max_out: 10,
        },
        notify: Notify::Shared(s.clone()),
    });
    assert_eq!(status(&s), NtStatus::CANCELLED);
    assert_eq!(h.d().in_flight(), 0);
}

#[test]
fn cancel_then_cqes_later_requests_wait_until_drained() {
    let mut h = linked();
    let p = h.open_ok(1);
    let s = h.transceive(p, b"ping", 4280);
    let send = h.d().one(K::Send);
    h.cancel(&s);
    assert_eq!(status(&s), NtStatus::CANCELLED, "told at once");
    assert!(h.d().cancel_asked(send));
    let next = h.transceive(p, b"next", 4280);
    assert_eq!(h.d().in_flight(), 2, "the next request waits for the drain");
    h.honour();
    assert_eq!(h.d().kinds(), vec![K::Send, K::RecvPooled]);
    h.send_all();
    let r = h.d().one(K::RecvPooled);
    h.recv(r, b"reply");
    assert_eq!(transfer(&next), ok(b"reply"));
}

#[test]
fn cancelled_receive_that_took_bytes_keeps_them_in_the_stream() {
    let mut h = linked();
    let (p, s) = h.ping_sent();
    let r = h.d().one(K::RecvPooled);
    h.cancel(&s);
    assert_eq!(status(&s), NtStatus::CANCELLED);
    assert!(h.d().cancel_asked(r));
    // The receive won the race with its cancel.
    h.recv(r, b"late reply");
    let next = h.read(p, 100);
    assert_eq!(transfer(&next), ok(b"late reply"));
    assert_eq!(h.d().in_flight(), 0);
}

#[test]
fn cancel_after_the_result_changes_nothing() {
    let mut h = linked();
    let (p, s) = h.ping_sent();
    let r = h.d().one(K::RecvPooled);
    h.recv(r, b"pong");
    h.cancel(&s);
    assert_eq!(transfer(&s), ok(b"pong"));
    assert!(
        h.d().cancels.is_empty(),
        "no cancel SQE for a finished request"
    );
    assert_next_starts_at_once(&mut h, p, "nothing to drain");
}

#[test]
fn cancelled_waiter_leaves_the_late_chunk_to_the_next_read() {
    let mut h = harness();
    let (p, s) = h.ping_sent();
    h.cancel(&s);
    assert_eq!(status(&s), NtStatus::CANCELLED);
    // No CQE to wait for: freed at once; the multishot receive is left.
    assert_eq!(h.core.ops.len(), 1);
    let ms = h.d().one(K::RecvMulti);
    h.chunk(ms, b"late");
    let r = h.read(p, 100);
    assert_eq!(transfer(&r), ok(b"late"));
}

// ---- close, disconnect, stale handles ---------------------------------------

#[test]
fn close_with_ops_in_flight_ends_after_the_last_cqe() {
    let mut h = harness();
    let p = h.open_ok(1);
    let s = h.transceive(p, b"ping", 4280);
    let fd = h.fd_of(K::Send);
    let c = h.close(p);
    assert_eq!(h.d().shutdowns, 1, "shut down both ways at once");
    assert_eq!(status(&s), NtStatus::CANCELLED);
    assert!(pending(&c), "the close waits for the kernel");
    assert!(fd.upgrade().is_some(), "the descriptor outlives its SQEs");
    // The send completes for real, the receive with its cancel.
    h.send_all();
    assert!(pending(&c));
    h.honour();
    assert!(matches!(done(&c), Ok(Outcome::Done)));
    assert!(fd.upgrade().is_none(), "closed after the last CQE");
    assert_eq!(h.d().in_flight(), 0);
}

#[test]
fn stale_handles_never_reach_another_pipe() {
    let mut h = harness();
    let p = h.open_ok(1);
    let c = h.close(p);
    assert!(
        matches!(done(&c), Ok(Outcome::Done)),
        "idle: closed at once"
    );
    let s = h.transceive(p, b"x", 10);
    assert_eq!(status(&s), NtStatus::INVALID_HANDLE);
    let c = h.close(p);
    assert_eq!(status(&c), NtStatus::FILE_CLOSED);
    // The slot is reused with a new generation: the old id stays dead.
    let q = h.open_ok(1);
    assert_eq!((q.index, q.ring), (p.index, p.ring));
    assert_ne!(q.gen, p.gen);
    let s = h.transceive(p, b"x", 10);
    assert_eq!(status(&s), NtStatus::INVALID_HANDLE);
    let other_ring = PipeId { ring: 3, ..q };
    let s = h.read(other_ring, 10);
    assert_eq!(status(&s), NtStatus::INVALID_HANDLE);
    assert_eq!(h.d().in_flight(), 0, "none of them pushed an SQE");
}

#[test]
fn request_on_a_closing_pipe_is_file_closed() {
    let mut h = harness();
    let p = h.open_ok(1);
    let _s = h.transceive(p, b"ping", 4280);
    let _c = h.close(p);
    let s = h.read(p, 10);
    assert_eq!(status(&s), NtStatus::FILE_CLOSED);
}

#[test]
fn session_disconnect_ends_only_that_session() {
    let mut h = harness();
    let a = h.open_ok(1);
    let b = h.open_ok(2);
    let sa = h.transceive(a, b"a", 4280);
    let sb = h.transceive(b, b"b", 4280);
    let queued = {
        h.core.cfg = Arc::new(EngineConfig {
            max_opens_in_flight: 1,
            ..(*h.core.cfg).clone()
        });
        let _running = h.open(1);
        h.open(1)
    };
    h.cmd(Command::Disconnect {
        session: 1,
        notify: None,
    });
    assert_eq!(status(&sa), NtStatus::CANCELLED);
    assert_eq!(status(&queued), NtStatus::CANCELLED, "its waiting open too");
    assert!(pending(&sb));
    h.honour();
    let s = h.transceive(a, b"a", 4280);
    assert_eq!(status(&s), NtStatus::INVALID_HANDLE);
    // Session 2 goes on.
    let ids = h.d().ids(K::Send);
    let last = *ids.last().expect("b's send");
    let n = send_len(h.d().op(last));
    h.complete(last, n as i32);
    let ms = h.d().one(K::RecvMulti);
    h.chunk(ms, b"pong");
    assert_eq!(transfer(&sb), ok(b"pong"));
}

#[test]
fn shutdown_cancels_everything_then_the_ring_may_end() {
    let mut h = harness();
    let p = h.open_ok(1);
    let s = h.transceive(p, b"ping", 4280);
    let o = h.open(2);
    h.cmd(Command::Shutdown);
    assert_eq!(status(&s), NtStatus::CANCELLED);
    assert_eq!(status(&o), NtStatus::CANCELLED);
    assert!(!h.core.is_done(), "SQEs still in the kernel");
    h.honour();
    assert!(h.core.is_done());
    assert_eq!(h.d().in_flight(), 0);
}

// ---- peek, limits ------------------------------------------------------------

#[test]
fn peek_of_an_empty_pipe_answers_at_once() {
    let mut h = harness();
    let p = h.open_ok(1);
    let s = h.io(p, PipeIo::Peek { max_out: 26 });
    let id = h.d().one(K::Peek);
    h.complete(id, -libc::EAGAIN);
    let t = transfer(&s);
    assert_eq!(t.status, NtStatus::SUCCESS);
    assert_eq!(t.data.len(), 16, "the header alone");
    assert_eq!(t.data[4..8], 0u32.to_le_bytes(), "nothing available");
}

#[test]
fn peek_that_does_not_fit_reports_the_total() {
    let mut h = harness();
    let p = h.open_ok(1);
    let s = h.io(p, PipeIo::Peek { max_out: 26 });
    let id = h.d().one(K::Peek);
    h.d().queued = Some(50);
    h.recv(id, &bytes(11));
    let t = transfer(&s);
    assert_eq!(t.status, NtStatus::BUFFER_OVERFLOW);
    assert_eq!(t.data.len(), 16 + 10);
    assert_eq!(t.data[4..8], 50u32.to_le_bytes());
}

#[test]
fn oversized_requests_are_refused_before_any_sqe() {
    let mut h = harness();
    let p = h.open_ok(1);
    let s = h.read(p, MAX_IO_BYTES + 1);
    assert_eq!(status(&s), NtStatus::INVALID_PARAMETER);
    let s = h.io(p, PipeIo::Peek { max_out: 3 });
    assert_eq!(status(&s), NtStatus::BUFFER_TOO_SMALL);
    assert_eq!(h.d().in_flight(), 0);
}

// ---- WAIT ----------------------------------------------------------------------

#[test]
fn wait_succeeds_when_the_listener_accepts() {
    let mut h = harness();
    let s = h.wait(Duration::from_secs(1));
    assert_eq!(
        h.d().kinds(),
        vec![K::Timer, K::Connect],
        "deadline + attempt"
    );
    let c = h.d().one(K::Connect);
    h.complete(c, 0);
    assert!(pending(&s), "ends with its deadline timer's CQE");
    h.honour();
    assert!(matches!(done(&s), Ok(Outcome::Done)));
    assert_eq!(h.d().in_flight(), 0);
}

#[test]
fn wait_ends_at_its_deadline_when_connect_never_completes() {
    let mut h = harness();
    let s = h.wait(Duration::from_millis(500));
    let c = h.d().one(K::Connect);
    h.advance(Duration::from_millis(499));
    assert!(pending(&s));
    h.advance(Duration::from_millis(1));
    assert!(
        h.d().cancel_asked(c),
        "the deadline cancels the stuck connect"
    );
    h.honour();
    assert_eq!(status(&s), NtStatus::IO_TIMEOUT);
    assert_eq!(h.d().in_flight(), 0);
    assert_eq!(h.core.waits, 0, "the loop stops reading the clock");
}

#[test]
fn wait_deadline_during_backoff_and_a_late_accept_in_one_batch() {
    let mut h = harness();
    let s = h.wait(Duration::from_millis(3));
    let c = h.d().one(K::Connect);
    h.complete(c, -libc::ECONNREFUSED);
    // The backoff timer and the deadline are both due.
    h.advance(Duration::from_millis(3));
    h.honour();
    assert_eq!(status(&s), NtStatus::IO_TIMEOUT);
    assert_eq!(h.d().in_flight(), 0);
    // An accept that comes with the deadline's CQE, after it: still a timeout.
    let s = h.wait(Duration::from_millis(5));
    let c = h.d().one(K::Connect);
    h.d().advance(Duration::from_millis(5));
    h.d().complete(c, 0);
    h.turn();
    assert_eq!(status(&s), NtStatus::IO_TIMEOUT);
}

#[test]
fn cancelled_wait_cancels_its_attempt_and_its_deadline() {
    let mut h = harness();
    let s = h.wait(Duration::from_secs(5));
    let timer = h.d().one(K::Timer);
    let c = h.d().one(K::Connect);
    h.cancel(&s);
    assert_eq!(status(&s), NtStatus::CANCELLED);
    assert!(h.d().cancel_asked(timer) && h.d().cancel_asked(c));
    h.honour();
    assert_eq!(h.d().in_flight(), 0);
}

#[test]
fn wait_retries_with_backoff_until_its_deadline() {
    let mut h = harness();
    let s = h.wait(Duration::from_millis(20));
    let mut attempts = 0;
    while pending(&s) {
        attempts += 1;
        assert!(attempts < 50, "the deadline must end it");
        if let Some(c) = h.d().ids(K::Connect).first().copied() {
            h.complete(c, -libc::ENOENT);
        }
        h.advance(Duration::from_millis(1));
    }
    assert_eq!(status(&s), NtStatus::IO_TIMEOUT);
    assert!(attempts > 2, "retried: {attempts}");
}

#[test]
fn cancel_after_taking_the_front_of_a_chunk_keeps_stream_order() {
    // Issue 12 item 9: the waiter took bytes 0..100 of a chunk while its
    // SEND was still in flight; cancelled, those bytes must go back in
    // FRONT of 100..300, not behind them.
    let mut h = harness();
    let p = h.open_ok(1);
    let s = h.transceive(p, &bytes(8 << 10), 100);
    let ms = h.d().one(K::RecvMulti);
    let reply = bytes(300);
    h.chunk(ms, &reply);
    assert!(pending(&s), "its send is still in flight");
    h.cancel(&s);
    assert_eq!(status(&s), NtStatus::CANCELLED);
    h.honour();
    let r = h.read(p, 1000);
    assert_eq!(transfer(&r), ok(&reply));
}

#[test]
fn more_probe_of_an_enobufs_chain_does_not_answer_for_the_retry() {
    // Without SOCK_NONEMPTY the chain ends with a one-byte peek. When the
    // pooled receive finds the pool empty, that peek fails with the link;
    // its -ECANCELED must not stand for "nothing more" in the retried
    // receive's result.
    let mut h = linked();
    h.d().features.sock_nonempty = false;
    let p = h.open_ok(1);
    let s = h.transceive(p, b"q", 10);
    h.send_all();
    let r = h.d().one(K::RecvPooled);
    h.complete(r, -libc::ENOBUFS);
    assert_eq!(
        h.d().kinds(),
        vec![K::Recv, K::Peek],
        "retried with its own buffer"
    );
    let own = h.d().one(K::Recv);
    h.recv(own, &bytes(10));
    let peek = h.d().one(K::Peek);
    h.d().complete_recv(peek, &[0], 0);
    h.turn();
    let t = transfer(&s);
    assert_eq!(t.status, NtStatus::BUFFER_OVERFLOW, "a byte was waiting");
    assert_eq!(t.data, bytes(10));
}

#[test]
fn open_whose_deadline_timer_fails_does_not_run_without_one() {
    // Issue 12 item 11: a TIMEOUT the kernel refuses (-EINVAL) must not
    // leave the open without a deadline.
    let mut h = harness();
    let s = h.open(1);
    let timer = h.d().one(K::Timer);
    let connect = h.d().one(K::Connect);
    h.complete(timer, -libc::EINVAL);
    assert!(h.d().cancel_asked(connect), "the handshake is stopped");
    h.honour();
    assert_eq!(status(&s), NtStatus::PIPE_NOT_AVAILABLE);
    assert_eq!(h.d().in_flight(), 0);
}

#[test]
fn endless_timeouts_arm_timers_the_kernel_accepts() {
    let mut h = harness_with(|c| c.open_timeout = Duration::MAX);
    let _open = h.open(1);
    let _wait = h.wait(Duration::MAX);
    for t in h.d().ids(K::Timer) {
        match h.d().op(t) {
            Op::Timer { after } => assert_eq!(*after, LONGEST_TIMER),
            _ => unreachable!(),
        }
    }
    assert_eq!(h.d().ids(K::Timer).len(), 2);
}

#[test]
fn zero_max_out_sends_then_is_pipe_broken_on_every_path() {
    // Issue 12 item 10: one behaviour, the seed's (a zero-length read is
    // its end of stream), whatever the receive path.
    for multishot in [true, false] {
        let mut h = harness_with(|c| c.multishot = multishot);
        let p = h.open_ok(1);
        let s = h.transceive(p, b"ping", 0);
        assert_eq!(
            h.d().kinds(),
            vec![K::Send],
            "the input is sent, nothing received"
        );
        h.send_all();
        assert_eq!(status(&s), NtStatus::PIPE_BROKEN);
        let r = h.read(p, 0);
        assert_eq!(status(&r), NtStatus::PIPE_BROKEN);
        assert_eq!(h.d().in_flight(), 0);
    }
}

#[test]
fn zero_max_out_leaves_pushed_back_bytes_in_place() {
    let mut h = harness();
    let p = h.open_ok(1);
    let s = h.transceive(p, b"q", 2);
    h.send_all();
    let ms = h.d().one(K::RecvMulti);
    h.chunk(ms, b"abcd");
    assert_eq!(transfer(&s).status, NtStatus::BUFFER_OVERFLOW);
    let r = h.read(p, 0);
    assert_eq!(status(&r), NtStatus::PIPE_BROKEN);
    let r = h.read(p, 10);
    assert_eq!(transfer(&r), ok(b"cd"));
}

/// A ring-thread read loop: each callback reads one byte more.
struct ReadLoop {
    pipe: PipeId,
    want: usize,
    got: std::sync::Mutex<Vec<u8>>,
    depth: std::sync::atomic::AtomicUsize,
    deepest: std::sync::atomic::AtomicUsize,
}

fn read_on(ctx: &mut crate::engine::RingContext<'_>, st: Arc<ReadLoop>) {
    use std::sync::atomic::Ordering::SeqCst;
    let pipe = st.pipe;
    ctx.read_with(pipe, 1, move |ctx, r| {
        let d = st.depth.fetch_add(1, SeqCst) + 1;
        st.deepest.fetch_max(d, SeqCst);
        let mut got = st.got.lock().unwrap_or_else(|e| e.into_inner());
        got.extend(r.unwrap_or_default());
        let more = got.len() < st.want;
        drop(got);
        if more {
            read_on(ctx, st.clone());
        }
        st.depth.fetch_sub(1, SeqCst);
    });
}

#[test]
fn ring_thread_callbacks_served_from_memory_nest_boundedly() {
    // Issue 12 item 11: each read is served from the pushback and calls the
    // next callback inline; 200 of them must not nest 200 deep.
    let mut h = harness();
    let p = h.open_ok(1);
    let s = h.transceive(p, b"q", 1);
    h.send_all();
    let ms = h.d().one(K::RecvMulti);
    let stream = bytes(201);
    h.chunk(ms, &stream);
    assert_eq!(transfer(&s).data, stream[..1]);
    let st = Arc::new(ReadLoop {
        pipe: p,
        want: 200,
        got: std::sync::Mutex::new(Vec::new()),
        depth: Default::default(),
        deepest: Default::default(),
    });
    let first = st.clone();
    let cb = crate::engine::command::Callback::new(move |ctx, _| read_on(ctx, first));
    h.on_ring(p, cb);
    let got = st.got.lock().unwrap_or_else(|e| e.into_inner()).clone();
    assert_eq!(got, stream[1..], "every byte, in order");
    let deepest = st.deepest.load(std::sync::atomic::Ordering::SeqCst);
    assert!(
        deepest <= MAX_CALLBACK_DEPTH as usize,
        "callbacks nested {deepest} deep"
    );
}

#[test]
fn requests_held_back_on_one_pipe_are_bounded() {
    let mut h = linked();
    let p = h.open_ok(1);
    let s = h.transceive(p, b"ping", 4280);
    h.cancel(&s);
    let held: Vec<_> = (0..MAX_DEFERRED).map(|_| h.read(p, 10)).collect();
    let over = h.read(p, 10);
    assert_eq!(status(&over), NtStatus::INSUFFICIENT_RESOURCES);
    assert!(held.iter().all(pending), "the others keep their place");
    let c = h.close(p);
    h.honour();
    assert!(held.iter().all(|r| status(r) == NtStatus::CANCELLED));
    assert!(matches!(done(&c), Ok(Outcome::Done)));
}

#[test]
fn opens_waiting_their_turn_are_bounded() {
    let mut h = harness_with(|c| c.max_opens_in_flight = 1);
    let _running = h.open(1);
    let waiting: Vec<_> = (0..MAX_QUEUED_OPENS).map(|_| h.open(1)).collect();
    let over = h.open(1);
    assert_eq!(status(&over), NtStatus::INSUFFICIENT_RESOURCES);
    assert!(pending(&waiting[0]) && pending(&waiting[MAX_QUEUED_OPENS - 1]));
    assert_eq!(h.d().sockets, 1);
}

#[test]
fn cancel_while_sending_then_the_send_wins_cancels_the_receive() {
    let mut h = linked();
    let p = h.open_ok(1);
    let s = h.transceive(p, b"ping", 4280);
    let send = h.d().one(K::Send);
    h.cancel(&s);
    assert_eq!(status(&s), NtStatus::CANCELLED);
    // The send completed before its cancel: the receive started, and is
    // cancelled in turn.
    h.d().cancels.clear();
    h.complete(send, 4);
    let r = h.d().one(K::RecvPooled);
    assert!(
        h.d().cancel_asked(r),
        "the next chain step is cancelled too"
    );
    let next = h.read(p, 10);
    assert!(
        pending(&next),
        "held back until the receive is out of the kernel"
    );
    h.honour();
    let own = h.d().one(K::RecvPooled);
    h.recv(own, b"reply");
    assert_eq!(transfer(&next), ok(b"reply"));
}

#[test]
fn cancelled_receive_that_took_nothing_leaves_no_pushback() {
    let mut h = linked();
    let (p, s) = h.ping_sent();
    h.cancel(&s);
    h.honour();
    assert!(h
        .core
        .pipes
        .get_mut(p.index, p.gen)
        .is_some_and(|pe| pe.pushback.is_empty()));
    assert_next_starts_at_once(&mut h, p, "starts at once, with a receive");
}

#[test]
fn cancelled_open_whose_handshake_wins_still_closes_its_socket() {
    let mut h = harness();
    let s = h.open(1);
    let fd = h.fd_of(K::Connect);
    let c = h.d().one(K::Connect);
    h.complete(c, 0);
    h.cancel(&s);
    assert_eq!(status(&s), NtStatus::CANCELLED);
    // The rest of the handshake completes anyway.
    h.send_all();
    let r = h.d().one(K::Recv);
    h.recv(r, &[0, 0, 0, 0]);
    h.honour();
    assert_eq!(h.d().in_flight(), 0);
    assert_eq!(h.core.pipes.len(), 0, "no pipe for a cancelled open");
    assert!(fd.upgrade().is_none(), "its socket is closed");
}

#[test]
fn cancelled_wait_stays_cancelled_when_the_listener_accepts_anyway() {
    let mut h = harness();
    let s = h.wait(Duration::from_secs(5));
    let c = h.d().one(K::Connect);
    h.cancel(&s);
    h.complete(c, 0);
    h.honour();
    assert_eq!(status(&s), NtStatus::CANCELLED);
    assert_eq!(h.d().in_flight(), 0);
    assert_eq!(h.core.waits, 0);
}

// ---- cancel against completions, every order ------------------------------

/// What the caller and a following read got, for one scripted order.
fn delivered(h: &mut H, s: &Arc<Shared>, p: PipeId, left_in_socket: &[u8]) -> Vec<u8> {
    let mut got = match done(s) {
        Ok(Outcome::Transfer(t)) => t.data,
        Err(NtStatus::CANCELLED) => Vec::new(),
        other => panic!("unexpected result {other:?}"),
    };
    assert_eq!(
        h.d().in_flight_except(K::RecvMulti),
        0,
        "everything drained"
    );
    let r = h.read(p, 100);
    if pending(&r) {
        // Nothing pushed back: the read receives from the socket.
        let id = match h.d().ids(K::RecvPooled).first() {
            Some(id) => *id,
            None => h.d().one(K::RecvMulti),
        };
        if left_in_socket.is_empty() {
            return got;
        }
        if h.d().ids(K::RecvPooled).is_empty() {
            h.chunk(id, left_in_socket);
        } else {
            h.recv(id, left_in_socket);
        }
    }
    got.extend(transfer(&r).data);
    got
}

#[test]
fn linked_cancel_in_every_order_delivers_the_reply_exactly_once() {
    const REPLY: &[u8] = b"the reply";
    // Where the cancel comes (0: before the send's CQE, 1: between the
    // send's and the receive's, 2: after both), and whether each op still
    // running when cancelled wins its race.
    for at in 0..3 {
        for send_wins in [true, false] {
            for recv_wins in [true, false] {
                let mut h = linked();
                let p = h.open_ok(1);
                let s = h.transceive(p, b"ping", 100);
                let send = h.d().one(K::Send);
                let recv = h.d().one(K::RecvPooled);
                let mut in_socket = REPLY.to_vec();
                if at == 0 {
                    h.cancel(&s);
                }
                if at > 0 || send_wins {
                    h.complete(send, 4);
                } else {
                    h.complete(send, -libc::ECANCELED);
                    // The service never got the request: no reply comes.
                    in_socket.clear();
                }
                if at == 1 {
                    h.cancel(&s);
                }
                if h.d().ids(K::RecvPooled).contains(&recv) {
                    if at == 2 || recv_wins {
                        h.recv(recv, REPLY);
                        in_socket.clear();
                    } else {
                        h.complete(recv, -libc::ECANCELED);
                    }
                }
                if at == 2 {
                    h.cancel(&s);
                }
                let what = format!("cancel at {at}, send wins {send_wins}, recv wins {recv_wins}");
                let expect: &[u8] = if at > 0 || send_wins { REPLY } else { b"" };
                assert_eq!(delivered(&mut h, &s, p, &in_socket), expect, "{what}");
            }
        }
    }
}

/// The pushback's read offset across overflow and cancel: a chunk longer
/// than a pool buffer behind a small `max_out` leaves the rest in place
/// behind an offset; a waiter cancelled after it took its share gives the
/// share back in front of that rest; the stream comes out whole, in order.
#[test]
fn a_cancelled_waiters_share_goes_back_in_front_of_a_long_pushback() {
    let mut h = harness();
    let p = h.open_ok(1);
    let s = h.transceive(p, b"ping", 1000);
    let send = h.d().one(K::Send);
    let ms = h.d().one(K::RecvMulti);
    let stream = bytes(10_000);
    h.chunk(ms, &stream);
    assert!(
        pending(&s),
        "the share is taken; the send is still in flight"
    );
    h.cancel(&s);
    h.complete(send, -libc::ECANCELED);
    assert_eq!(status(&s), NtStatus::CANCELLED);
    // A transceive overflows from the pushback: the first 1000 bytes.
    let t = h.transceive(p, b"ping", 1000);
    h.send_all();
    let t = transfer(&t);
    assert_eq!(t.status, NtStatus::BUFFER_OVERFLOW);
    assert_eq!(t.data, stream[..1000]);
    // Reads in pieces, then the rest at once.
    let r = h.read(p, 3000);
    assert_eq!(transfer(&r), ok(&stream[1000..4000]));
    let r = h.read(p, 100_000);
    assert_eq!(transfer(&r), ok(&stream[4000..]));
    assert!(h
        .core
        .pipes
        .get_mut(p.index, p.gen)
        .is_some_and(|pe| pe.pushback.is_empty()));
}

#[test]
fn multishot_cancel_in_every_order_delivers_the_reply_exactly_once() {
    const REPLY: &[u8] = b"the reply";
    #[derive(Clone, Copy, PartialEq, Debug)]
    enum Ev {
        Cancel,
        Send,
        Chunk,
    }
    let orders = [
        [Ev::Cancel, Ev::Send, Ev::Chunk],
        [Ev::Cancel, Ev::Chunk, Ev::Send],
        [Ev::Send, Ev::Cancel, Ev::Chunk],
        [Ev::Send, Ev::Chunk, Ev::Cancel],
        [Ev::Chunk, Ev::Cancel, Ev::Send],
        [Ev::Chunk, Ev::Send, Ev::Cancel],
    ];
    for order in orders {
        for send_wins in [true, false] {
            let mut h = harness();
            let p = h.open_ok(1);
            let s = h.transceive(p, b"ping", 100);
            let send = h.d().one(K::Send);
            let ms = h.d().one(K::RecvMulti);
            let mut cancelled = false;
            let mut sent = true;
            let mut chunked = false;
            for ev in order {
                match ev {
                    Ev::Cancel => {
                        h.cancel(&s);
                        cancelled = true;
                    }
                    Ev::Send if cancelled && !send_wins => {
                        h.complete(send, -libc::ECANCELED);
                        sent = false;
                    }
                    Ev::Send => h.complete(send, 4),
                    // A reply to a request the service never got cannot
                    // come; one to a request it got comes as a chunk.
                    Ev::Chunk if sent => {
                        h.chunk(ms, REPLY);
                        chunked = true;
                    }
                    Ev::Chunk => {}
                }
            }
            // Bytes that came are the stream's, whatever became of the send
            // (a scripted chunk before the send's CQE); a request the
            // service got and whose reply did not come yet leaves it in the
            // socket; one it never got has no reply.
            let in_socket: &[u8] = if sent && !chunked { REPLY } else { b"" };
            let what = format!("{order:?}, send wins {send_wins}");
            let expect: &[u8] = if sent || chunked { REPLY } else { b"" };
            assert_eq!(delivered(&mut h, &s, p, in_socket), expect, "{what}");
        }
    }
}

#[test]
fn persistent_submit_errors_back_off_and_shutdown_still_ends_the_loop() {
    // Issue 12 item 11: a submit that keeps failing looped every 1 ms,
    // logging each time. The loop (with its queue's eventfd: no ring, no
    // socket) runs on its own thread over a fake whose submits all fail.
    let wake = Arc::new(crate::ring::WakeFd::new().expect("eventfd"));
    let queue = Arc::new(CommandQueue::new(wake));
    let q = queue.clone();
    let ring = std::thread::spawn(move || {
        let now = Instant::now();
        let mut drv = FakeDriver::new(now);
        drv.submit_errno = Some(libc::EBADF);
        let cfg = Arc::new(EngineConfig::new("/nonexistent/opipe-fake"));
        let mut core = Core::new(drv, cfg, 0, Arc::new(AtomicU64::new(1)), now);
        run(&mut core, &q);
        core.drv.submits
    });
    std::thread::sleep(Duration::from_millis(400));
    let t0 = Instant::now();
    queue.push(Command::Shutdown);
    let submits = ring.join().expect("the ring thread");
    assert!(
        t0.elapsed() < Duration::from_millis(300),
        "shutdown noticed"
    );
    // 1, 2, 4 .. 64, then 100 ms pauses: about 10 in 400 ms (400 at 1 ms).
    assert!((3..=20).contains(&submits), "{submits} submits in 400 ms");
}

// ---- random schedules ---------------------------------------------------------

/// The schedules' choices, from the crate's one seeded generator, so every
/// schedule can be replayed from its seed.
struct Rng(crate::rng::SplitMix64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(crate::rng::SplitMix64::new(seed))
    }
    fn below(&mut self, n: usize) -> usize {
        self.0.below(n.max(1) as u64) as usize
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.0.below(100) < percent
    }
}

/// The service's side of one schedule: every byte it sends is the next of
/// one global pattern, so what the callers get must be exactly a prefix of
/// it, in order, nothing lost or repeated.
struct Stream {
    produced: usize,
    socket: std::collections::VecDeque<u8>,
}

impl Stream {
    fn byte(i: usize) -> u8 {
        (i % 251) as u8
    }
    fn reply(&mut self, len: usize) {
        for _ in 0..len {
            self.socket.push_back(Stream::byte(self.produced));
            self.produced += 1;
        }
    }
    fn take(&mut self, max: usize) -> Vec<u8> {
        let n = max.min(self.socket.len());
        self.socket.drain(..n).collect()
    }
}

/// Plays one kernel event on a startable op chosen at random (trying the
/// others in turn when it can do nothing yet); false if none can.
fn kernel_step(h: &mut H, rng: &mut Rng, st: &mut Stream) -> bool {
    let ready = h.d().startable();
    let first = rng.below(ready.len());
    (0..ready.len()).any(|i| op_step(h, rng, st, ready[(first + i) % ready.len()]))
}

/// One kernel event on op `id`; false if it can do nothing yet (a receive
/// with no data queued).
fn op_step(h: &mut H, rng: &mut Rng, st: &mut Stream, id: SqeId) -> bool {
    let cancelled = h.d().cancel_asked(id);
    // Receives on one socket take its bytes in the order they started (the
    // kernel serves its waiters in turn); any may end by a cancel.
    let receives = |k: K| matches!(k, K::Recv | K::RecvPooled | K::RecvMulti);
    let oldest_receive = h
        .d()
        .startable()
        .into_iter()
        .find(|r| receives(super::fake::kind_of(h.d().op(*r))));
    let may_take = oldest_receive == Some(id);
    let nonempty_flag = |st: &Stream| {
        if st.socket.is_empty() {
            0
        } else {
            SOCK_NONEMPTY
        }
    };
    match super::fake::kind_of(h.d().op(id)) {
        K::Send => {
            let n = send_len(h.d().op(id));
            if cancelled && rng.chance(50) {
                h.complete(id, -libc::ECANCELED);
            } else {
                let sent = if n > 1 && rng.chance(20) {
                    1 + rng.below(n - 1)
                } else {
                    n
                };
                h.complete(id, sent as i32);
                st.reply(1 + rng.below(12));
            }
        }
        K::Recv | K::RecvPooled => {
            let len = match h.d().op(id) {
                Op::Recv { len, .. } | Op::RecvPooled { len, .. } => *len as usize,
                _ => unreachable!(),
            };
            let pooled = matches!(h.d().op(id), Op::RecvPooled { .. });
            if cancelled && rng.chance(50) {
                h.complete(id, -libc::ECANCELED);
            } else if pooled && rng.chance(10) {
                h.complete(id, -libc::ENOBUFS);
            } else if !st.socket.is_empty() && may_take {
                let data = st.take(1 + rng.below(len));
                let flags = nonempty_flag(st);
                h.d().complete_recv(id, &data, flags);
                h.turn();
            } else {
                return false;
            }
        }
        K::Peek => {
            let r = if st.socket.is_empty() {
                -libc::EAGAIN
            } else {
                1
            };
            h.complete(id, r);
        }
        K::RecvMulti => {
            if cancelled && rng.chance(50) {
                h.complete(id, -libc::ECANCELED);
            } else if rng.chance(5) {
                h.complete(id, -libc::ENOBUFS);
            } else if !st.socket.is_empty() && may_take {
                let data = st.take(1 + rng.below(4280));
                let flags = nonempty_flag(st);
                h.d().chunk(id, &data, flags);
                h.turn();
            } else {
                return false;
            }
        }
        other => panic!("unexpected op {other:?}"),
    }
    true
}

/// What a finished request gave its caller (checked against the stream).
fn collect(s: &Arc<Shared>, max_out: usize, got: &mut Vec<u8>) {
    match done(s) {
        Ok(Outcome::Transfer(t)) => {
            assert!(
                t.data.len() <= max_out.max(1),
                "{} bytes for max_out {max_out}",
                t.data.len()
            );
            got.extend(t.data);
        }
        Err(NtStatus::CANCELLED) | Err(NtStatus::PIPE_BROKEN) => {}
        other => panic!("unexpected result {other:?}"),
    }
}

/// One random schedule on one pipe: requests one at a time, random
/// cancels, short sends, split replies, empty pools, lost and won cancel
/// races, SOCK_NONEMPTY or the peek probe.
fn random_schedule(seed: u64, multishot: bool, holds_sends: bool) {
    let mut rng = Rng::new(seed);
    let nonempty = rng.chance(50);
    let mut h = harness_with(|c| c.multishot = multishot);
    h.d().features.sock_nonempty = nonempty;
    h.d().holds_sends = holds_sends;
    let p = h.open_ok(1);
    let mut st = Stream {
        produced: 0,
        socket: Default::default(),
    };
    let mut got = Vec::new();
    for _ in 0..12 {
        let max_out = [1, 5, 4280][rng.below(3)];
        let s = if rng.chance(70) {
            h.transceive(p, &bytes(1 + rng.below(8)), max_out)
        } else {
            h.read(p, max_out)
        };
        let mut cancel_after = rng.chance(30).then(|| rng.below(4));
        let mut steps = 0;
        while pending(&s) {
            if cancel_after == Some(steps) {
                // Once: a request held back sees its flag when it starts.
                cancel_after = None;
                h.cancel(&s);
                continue;
            }
            steps += 1;
            if !kernel_step(&mut h, &mut rng, &mut st) {
                // Nothing can happen but the service sending more.
                st.reply(1 + rng.below(6));
            }
            assert!(steps < 1000, "seed {seed}: the request never ended");
        }
        collect(&s, max_out, &mut got);
    }
    drain_and_check(&mut h, &mut rng, &mut st, p, got, seed, multishot);
}

#[test]
fn random_schedules_deliver_the_stream_exactly_once_in_order() {
    for seed in 1..=300 {
        for holds_sends in [true, false] {
            random_schedule(seed, true, holds_sends);
            random_schedule(seed, false, holds_sends);
        }
    }
}

#[test]
fn concurrent_receives_claim_their_bytes_in_completion_order() {
    // Two receives in flight on one pipe (linked path): a transceive that
    // reads ahead, and a read. The transceive's bytes beyond max_out must
    // stay in front of what the read receives after them, although the
    // transceive finishes last (its peek probe is still out).
    let mut h = linked();
    h.d().features.sock_nonempty = false;
    let p = h.open_ok(1);
    let a = h.transceive(p, b"q", 5);
    let b = h.read(p, 4280);
    h.send_all();
    let (ra, rb) = match h.d().ids(K::RecvPooled)[..] {
        [ra, rb] => (ra, rb),
        _ => panic!("two receives: {:?}", h.d().kinds()),
    };
    let stream = bytes(23);
    h.recv(ra, &stream[..20]);
    h.recv(rb, &stream[20..]);
    let probe = h.d().one(K::Peek);
    h.complete(probe, -libc::EAGAIN);
    let mut got = transfer(&a).data;
    assert_eq!(got, stream[..5]);
    got.extend(transfer(&b).data);
    let r = h.read(p, 4280);
    if !pending(&r) {
        got.extend(transfer(&r).data);
    }
    assert_eq!(got, stream, "in stream order, request by request");
}

/// Like `random_schedule`, with up to two requests outstanding on the pipe
/// at once (several wait for the multishot receive together, or have
/// receives in flight together). Without cancels: a request cancelled
/// after it took its reply gives its bytes back to the front of the
/// stream, behind which a later request may already have finished.
fn random_concurrent_schedule(seed: u64, multishot: bool) {
    let mut rng = Rng::new(seed);
    let mut h = harness_with(|c| c.multishot = multishot);
    h.d().features.sock_nonempty = rng.chance(50);
    let p = h.open_ok(1);
    let mut st = Stream {
        produced: 0,
        socket: Default::default(),
    };
    let mut outstanding: Vec<(usize, Arc<Shared>, usize)> = Vec::new();
    let mut results: Vec<Option<Vec<u8>>> = Vec::new();
    let mut steps = 0;
    while results.len() < 16 || !outstanding.is_empty() {
        steps += 1;
        assert!(steps < 5000, "seed {seed}: no end");
        if results.len() < 16 && outstanding.len() < 2 && rng.chance(40) {
            let max_out = [1, 5, 4280][rng.below(3)];
            let id = results.len();
            results.push(None);
            let s = if rng.chance(70) {
                h.transceive(p, &bytes(1 + rng.below(8)), max_out)
            } else {
                h.read(p, max_out)
            };
            outstanding.push((id, s, max_out));
        } else if !kernel_step(&mut h, &mut rng, &mut st) && !outstanding.is_empty() {
            st.reply(1 + rng.below(6));
        }
        outstanding.retain(|(id, s, max_out)| {
            if pending(s) {
                return true;
            }
            let mut data = Vec::new();
            collect(s, *max_out, &mut data);
            results[*id] = Some(data);
            false
        });
    }
    // Request by request: each got the bytes after its predecessors'.
    let got: Vec<u8> = results
        .iter_mut()
        .flat_map(|r| r.take().unwrap_or_default())
        .collect();
    drain_and_check(&mut h, &mut rng, &mut st, p, got, seed, multishot);
}

/// The end of a random schedule: lets the kernel finish everything in
/// flight, reads what is left, then checks that `got` plus the rest is the
/// service's whole stream, each byte once, in order.
#[allow(clippy::too_many_arguments)]
fn drain_and_check(
    h: &mut H,
    rng: &mut Rng,
    st: &mut Stream,
    p: PipeId,
    mut got: Vec<u8>,
    seed: u64,
    multishot: bool,
) {
    let mut guard = 0;
    loop {
        guard += 1;
        assert!(guard < 10_000, "seed {seed}: no end to the drain");
        if kernel_step(h, rng, st) {
            continue;
        }
        let pushed_back = h
            .core
            .pipes
            .get_mut(p.index, p.gen)
            .is_some_and(|pe| !pe.pushback.is_empty());
        if st.socket.is_empty() && !pushed_back {
            break;
        }
        let r = h.read(p, 4280);
        while pending(&r) {
            assert!(kernel_step(h, rng, st), "seed {seed}: read stuck");
        }
        collect(&r, 4280, &mut got);
    }
    let want: Vec<u8> = (0..st.produced).map(Stream::byte).collect();
    assert_eq!(
        got.len(),
        want.len(),
        "seed {seed} multishot {multishot}: bytes lost or repeated"
    );
    assert_eq!(
        got, want,
        "seed {seed} multishot {multishot}: bytes out of stream order"
    );
}

#[test]
fn random_concurrent_schedules_give_each_request_its_part_of_the_stream_in_order() {
    // The multishot path only: on the linked path a later transceive's
    // receive can start before an earlier one's (each waits for its own
    // send), as with any two transceives racing on one stream.
    for seed in 1..=300 {
        random_concurrent_schedule(seed, true);
    }
}

// ---- Samba dialect: the NPA open --------------------------------------------

mod samba_open {
    use super::*;
    use crate::engine::{Dialect, FileType};
    use crate::protocol::npa::{NpaLevel, NpaReply, NpaRequest, STATUS_INVALID_LEVEL};

    fn samba() -> H {
        harness_with(|c| c.dialect = Dialect::Samba)
    }

    /// Connects and completes the send of the open in flight; returns the
    /// level of the NPA request it sent and the reply's receive.
    fn sent_request(h: &mut H) -> (NpaLevel, SqeId) {
        let req = connected_request(h);
        h.send_all();
        let r = h.d().one(K::Recv);
        match h.d().op(r) {
            Op::Recv { len, flags, .. } => {
                assert_eq!(*len, 36, "the whole reply, bounded");
                assert_ne!(flags & libc::MSG_WAITALL, 0);
            }
            _ => panic!("not a receive"),
        }
        (req.level, r)
    }

    /// Connects the open in flight; returns the NPA request of its send
    /// (still in flight).
    fn connected_request(h: &mut H) -> NpaRequest {
        let c = h.d().one(K::Connect);
        h.complete(c, 0);
        let send = h.d().one(K::Send);
        NpaRequest::decode(send_buf(h.d().op(send))).expect("an NPA request")
    }

    fn opened(s: &Arc<Shared>) -> crate::engine::OpenInfo {
        match done(s) {
            Ok(Outcome::Opened { info, .. }) => *info,
            other => panic!("open: {other:?}"),
        }
    }

    #[test]
    fn open_sends_level_7_and_keeps_the_replys_fields() {
        let mut h = samba();
        let s = h.open(7);
        assert_eq!(h.d().kinds(), vec![K::Connect, K::Send, K::Recv, K::Timer]);
        let (level, r) = sent_request(&mut h);
        assert_eq!(level, NpaLevel::V7);
        let reply = NpaReply {
            file_type: 1,
            device_state: 0x0123,
            allocation_size: 777,
            ..NpaReply::success(NpaLevel::V7)
        };
        h.recv(r, &reply.encode());
        h.honour();
        let info = opened(&s);
        assert_eq!(info.session_id, 7);
        assert_eq!(info.file_type, FileType::BytePipe);
        assert_eq!(info.device_state, 0x0123);
        assert_eq!(info.allocation_size, 777);
        assert_eq!(h.d().in_flight(), 0);
    }

    #[test]
    fn an_explicit_identity_is_sent_instead_of_the_mapped_one() {
        use crate::protocol::NpaIdentity;
        let mut h = samba();
        let id = NpaIdentity::guest("DOM", &"S-1-5-21-1-2-3".parse().expect("sid"));
        let s = Shared::new();
        h.cmd(Command::Open {
            path: "srvsvc".into(),
            user: user(5),
            identity: Some(Box::new(id.clone())),
            tree: None,
            notify: Notify::Shared(s.clone()),
        });
        let req = connected_request(&mut h);
        assert_eq!(req, id.to_request(NpaLevel::V7));
        let mapped = NpaIdentity::from_net_user_info(&user(5));
        assert_ne!(req, mapped.to_request(NpaLevel::V7));
    }

    #[test]
    fn refusal_status_is_returned_as_is_without_a_retry() {
        let mut h = samba();
        let s = h.open(1);
        let (_, r) = sent_request(&mut h);
        let reply = NpaReply::error(NpaLevel::V7, NtStatus::ACCESS_DENIED);
        h.recv(r, &reply.encode());
        h.honour();
        assert_eq!(status(&s), NtStatus::ACCESS_DENIED);
        assert_eq!(h.d().in_flight(), 0, "no second attempt");
    }

    #[test]
    fn close_before_any_reply_byte_retries_once_at_level_8_and_remembers_it() {
        let mut h = samba();
        let s = h.open(1);
        let fd = h.fd_of(K::Recv);
        let (level, r) = sent_request(&mut h);
        assert_eq!(level, NpaLevel::V7);
        // Samba 4.17 closes the socket on a level it does not know.
        h.recv(r, &[]);
        h.honour();
        assert!(pending(&s), "the open goes on at the other level");
        assert!(fd.upgrade().is_none(), "the first socket is closed");
        let (level, r) = sent_request(&mut h);
        assert_eq!(level, NpaLevel::V8);
        h.recv(r, &NpaReply::success(NpaLevel::V8).encode());
        h.honour();
        opened(&s);
        // The next open tries level 8 first.
        let s2 = h.open(2);
        let (level, r) = sent_request(&mut h);
        assert_eq!(level, NpaLevel::V8);
        h.recv(r, &NpaReply::success(NpaLevel::V8).encode());
        h.honour();
        opened(&s2);
    }

    #[test]
    fn invalid_level_twice_is_returned_after_one_retry() {
        let mut h = samba();
        let s = h.open(1);
        let (_, r) = sent_request(&mut h);
        h.recv(
            r,
            &NpaReply::error(NpaLevel::V7, STATUS_INVALID_LEVEL).encode(),
        );
        h.honour();
        assert!(pending(&s));
        let (level, r) = sent_request(&mut h);
        assert_eq!(level, NpaLevel::V8);
        h.recv(
            r,
            &NpaReply::error(NpaLevel::V8, STATUS_INVALID_LEVEL).encode(),
        );
        h.honour();
        assert_eq!(status(&s), STATUS_INVALID_LEVEL);
        assert_eq!(h.d().in_flight(), 0, "no third attempt");
    }

    #[test]
    fn short_or_garbled_reply_is_pipe_not_available() {
        for bad in [&b"NPAM"[..], &[0xffu8; 36][..]] {
            let mut h = samba();
            let s = h.open(1);
            let (_, r) = sent_request(&mut h);
            h.recv(r, bad);
            h.honour();
            assert_eq!(status(&s), NtStatus::PIPE_NOT_AVAILABLE, "{bad:?}");
            assert_eq!(h.d().in_flight(), 0);
        }
    }

    #[test]
    fn deadline_during_the_reply_is_pipe_not_available_without_a_retry() {
        let mut h = samba();
        let s = h.open(1);
        let (_, r) = sent_request(&mut h);
        h.advance(Duration::from_secs(5));
        assert!(h.d().cancel_asked(r));
        h.honour();
        assert_eq!(status(&s), NtStatus::PIPE_NOT_AVAILABLE);
        assert_eq!(h.d().in_flight(), 0);
    }
}

// ---- Samba dialect: message mode -------------------------------------------

mod samba_messages {
    use super::*;
    use crate::engine::Dialect;
    use crate::protocol::npa::{frame_message, NpaLevel, NpaReply};

    /// The linked receive path (`--uring-recv linked`); the multishot
    /// path of message pipes is `samba_multishot` below.
    fn samba() -> H {
        harness_with(|c| {
            c.dialect = Dialect::Samba;
            c.multishot = false;
        })
    }

    pub(super) fn framed(msgs: &[&[u8]]) -> Vec<u8> {
        msgs.iter()
            .flat_map(|m| frame_message(m).expect("short message"))
            .collect()
    }

    /// A Samba pipe, opened with a level 7 NPA reply.
    pub(super) fn open_ok(h: &mut H) -> PipeId {
        h.open_answered(1, &NpaReply::success(NpaLevel::V7).encode())
    }

    /// The bytes of the one send in flight, completed in full.
    fn sent(h: &mut H) -> Vec<u8> {
        let id = h.d().one(K::Send);
        let buf = send_buf(h.d().op(id)).to_vec();
        h.complete(id, buf.len() as i32);
        buf
    }

    #[test]
    fn transceive_frames_its_input_and_waits_for_the_whole_reply_message() {
        let mut h = samba();
        let p = open_ok(&mut h);
        let s = h.transceive(p, b"bind", 4280);
        assert_eq!(
            h.d().kinds(),
            vec![K::Send, K::RecvPooled],
            "linked, and no probe in message mode"
        );
        assert_eq!(sent(&mut h), framed(&[b"bind"]));
        let raw = framed(&[b"bind_ack!"]);
        let r = h.d().one(K::RecvPooled);
        h.recv(r, &raw[..1]);
        assert!(pending(&s), "half a header is no reply");
        let r = h.d().one(K::Recv);
        h.recv(r, &raw[1..5]);
        assert!(pending(&s), "part of a message is no reply");
        let r = h.d().one(K::Recv);
        h.recv(r, &raw[5..]);
        assert_eq!(transfer(&s), ok(b"bind_ack!"));
    }

    #[test]
    fn several_messages_in_one_chunk_are_one_reply_each_without_more_sqes() {
        let mut h = samba();
        let p = open_ok(&mut h);
        let s = h.transceive(p, b"q", 4280);
        sent(&mut h);
        let r = h.d().one(K::RecvPooled);
        h.recv(r, &framed(&[b"first", b"second", b"third"]));
        assert_eq!(transfer(&s), ok(b"first"));
        let r = h.read(p, 4280);
        assert_eq!(transfer(&r), ok(b"second"));
        // A transceive whose reply is already here only sends.
        let s = h.transceive(p, b"q2", 4280);
        assert_eq!(h.d().kinds(), vec![K::Send]);
        sent(&mut h);
        assert_eq!(transfer(&s), ok(b"third"));
        assert_eq!(h.d().in_flight(), 0);
    }

    #[test]
    fn message_longer_than_max_out_overflows_and_the_rest_comes_by_reads() {
        let mut h = samba();
        let p = open_ok(&mut h);
        // Above 4280 too: message mode overflows whatever max_out.
        let long = bytes(5000);
        let s = h.transceive(p, b"q", 4280);
        sent(&mut h);
        let raw = framed(&[&long, b"next"]);
        let r = h.d().one(K::RecvPooled);
        h.recv(r, &raw[..4280]);
        let r = h.d().one(K::Recv);
        h.recv(r, &raw[4280..]);
        let t = transfer(&s);
        assert_eq!(t.status, NtStatus::BUFFER_OVERFLOW);
        assert_eq!(t.data, long[..4280]);
        let r = h.read(p, 500);
        let t = transfer(&r);
        assert_eq!(
            (t.status, &t.data[..]),
            (NtStatus::BUFFER_OVERFLOW, &long[4280..4780])
        );
        let r = h.read(p, 500);
        assert_eq!(transfer(&r), ok(&long[4780..]), "the end of the message");
        let r = h.read(p, 500);
        assert_eq!(transfer(&r), ok(b"next"), "the next message, not glued on");
    }

    #[test]
    fn cancel_mid_message_keeps_the_message_for_the_next_read() {
        let mut h = samba();
        let p = open_ok(&mut h);
        let s = h.read(p, 4280);
        let raw = framed(&[b"whole message"]);
        let r = h.d().one(K::RecvPooled);
        h.recv(r, &raw[..6]);
        assert!(pending(&s));
        h.cancel(&s);
        h.honour();
        assert_eq!(status(&s), NtStatus::CANCELLED);
        let s = h.read(p, 4280);
        let r = h.d().one(K::RecvPooled);
        h.recv(r, &raw[6..]);
        assert_eq!(transfer(&s), ok(b"whole message"));
    }

    #[test]
    fn cancelled_reader_that_got_its_reply_gives_it_back() {
        let mut h = samba();
        let p = open_ok(&mut h);
        let s = h.read(p, 4);
        let r = h.d().one(K::RecvPooled);
        h.cancel(&s);
        // The receive wins the race with its cancel.
        h.recv(r, &framed(&[b"abcdefgh"]));
        h.honour();
        assert_eq!(status(&s), NtStatus::CANCELLED);
        let s = h.read(p, 100);
        assert_eq!(
            transfer(&s),
            ok(b"abcdefgh"),
            "nothing lost, nothing reordered"
        );
    }

    #[test]
    fn peek_reports_the_next_message_and_the_messages_in_view() {
        use crate::protocol::PeekReply;
        let mut h = samba();
        let p = open_ok(&mut h);
        let s = h.transceive(p, b"q", 4280);
        sent(&mut h);
        let r = h.d().one(K::RecvPooled);
        let raw = framed(&[b"first", b"second"]);
        h.recv(r, &raw);
        assert_eq!(transfer(&s), ok(b"first"));
        // One more whole message and half of another on the socket.
        let s = h.io(p, PipeIo::Peek { max_out: 16 + 4 });
        let id = h.d().one(K::Peek);
        let mut on_socket = framed(&[b"third"]);
        on_socket.extend_from_slice(&framed(&[b"fourth"])[..3]);
        h.d().complete_recv(id, &on_socket, 0);
        h.turn();
        let t = transfer(&s);
        assert_eq!(
            t.status,
            NtStatus::BUFFER_OVERFLOW,
            "the message is cut short"
        );
        let (hdr, data) = PeekReply::decode(&t.data).expect("peek reply");
        assert_eq!(data, b"seco");
        assert_eq!(hdr.read_data_available, 6);
        assert_eq!(hdr.message_length, 6);
        assert_eq!(
            hdr.number_of_messages, 2,
            "second and third; not the half one"
        );
        // PEEK took nothing: the read still gets the whole message.
        let r = h.read(p, 100);
        assert_eq!(transfer(&r), ok(b"second"));
    }

    #[test]
    fn long_write_is_split_into_messages_and_counts_the_callers_bytes() {
        let mut h = samba();
        let p = open_ok(&mut h);
        let data = bytes(70_000);
        let s = h.io(
            p,
            PipeIo::Write {
                data: data.clone().into(),
            },
        );
        let wire = sent(&mut h);
        assert_eq!(wire.len(), 70_004);
        assert_eq!(&wire[..2], &u16::MAX.to_le_bytes());
        assert_eq!(
            &wire[65_537..65_539],
            &((70_000 - 65_535) as u16).to_le_bytes()
        );
        match done(&s) {
            Ok(Outcome::Written(n)) => assert_eq!(n, 70_000),
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn op_keys_and_sqe_tokens_use_the_ring_token_layout() {
    use crate::engine::command::NO_OP;
    for key in [(0, 0), (7, 5), (u32::MAX, 0x00ff_ffff)] {
        let k = op_key(key);
        assert_ne!(k, NO_OP, "a started request never looks unstarted");
        assert_eq!(from_op_key(k), key);
        let t = Token::from_raw(token(key, ST_MULTISHOT));
        assert_eq!((t.index(), t.gen(), t.kind()), (key.0, key.1, ST_MULTISHOT));
    }
}

// ---- Samba dialect: message pipes on the multishot receive -------------------

mod samba_multishot {
    use super::samba_messages::{framed, open_ok};
    use super::*;
    use crate::engine::Dialect;

    fn samba() -> H {
        harness_with(|c| c.dialect = Dialect::Samba)
    }

    /// A reply that arrives in pieces (half a header, the rest of the
    /// header and part of the body, the end) is one reply once whole; the
    /// transceive is one SEND and the receive stays armed for the next.
    #[test]
    fn transceive_is_one_send_and_its_reply_message_may_come_in_pieces() {
        let mut h = samba();
        let p = open_ok(&mut h);
        let s = h.transceive(p, b"call", 4280);
        assert_eq!(h.d().kinds(), vec![K::RecvMulti, K::Send]);
        h.send_all();
        let ms = h.d().one(K::RecvMulti);
        let raw = framed(&[b"the reply"]);
        h.chunk(ms, &raw[..1]);
        assert!(pending(&s), "half a header is no reply");
        h.chunk(ms, &raw[1..5]);
        assert!(pending(&s), "part of a message is no reply");
        h.chunk(ms, &raw[5..]);
        assert_eq!(transfer(&s), ok(b"the reply"));
        let s = h.transceive(p, b"call", 4280);
        assert_eq!(h.d().kinds(), vec![K::RecvMulti, K::Send], "still armed");
        // The next reply's header comes glued to nothing, its body later.
        let raw = framed(&[b"second"]);
        h.chunk(ms, &raw[..2]);
        h.send_all();
        assert!(pending(&s));
        h.chunk(ms, &raw[2..]);
        assert_eq!(transfer(&s), ok(b"second"));
        assert_eq!(h.d().kinds(), vec![K::RecvMulti]);
    }

    #[test]
    fn messages_in_one_chunk_go_to_the_waiters_one_each_and_the_rest_waits() {
        let mut h = samba();
        let p = open_ok(&mut h);
        let a = h.transceive(p, b"q", 4280);
        let b = h.read(p, 4280);
        h.send_all();
        let ms = h.d().one(K::RecvMulti);
        let raw = framed(&[b"first", b"", b"third"]);
        // The chunk ends inside the third message.
        h.chunk(ms, &raw[..raw.len() - 2]);
        assert_eq!(transfer(&a), ok(b"first"));
        assert_eq!(transfer(&b), ok(b""), "an empty message is a reply");
        let c = h.read(p, 4280);
        assert!(pending(&c), "the third is not whole yet");
        h.chunk(ms, &raw[raw.len() - 2..]);
        assert_eq!(transfer(&c), ok(b"third"));
        assert_eq!(h.d().kinds(), vec![K::RecvMulti]);
    }

    #[test]
    fn message_longer_than_max_out_overflows_and_the_rest_is_read_from_memory() {
        let mut h = samba();
        let p = open_ok(&mut h);
        let long = bytes(6000);
        // 4280: message mode overflows whatever max_out (the byte stream's
        // seed rule would not).
        let s = h.transceive(p, b"q", 4280);
        h.send_all();
        let ms = h.d().one(K::RecvMulti);
        let raw = framed(&[&long, b"next"]);
        for part in raw.chunks(4096) {
            h.chunk(ms, part);
        }
        let t = transfer(&s);
        assert_eq!(t.status, NtStatus::BUFFER_OVERFLOW);
        assert_eq!(t.data, long[..4280]);
        // Reads above a pool buffer stay on the multishot receive too: a
        // message is put together from the chunks whatever its length.
        let r = h.read(p, 65_536);
        assert_eq!(transfer(&r), ok(&long[4280..]), "the end of the message");
        assert!(!h.d().cancel_asked(ms));
        let r = h.read(p, 65_536);
        assert_eq!(transfer(&r), ok(b"next"), "the next message, not glued on");
        assert_eq!(h.d().kinds(), vec![K::RecvMulti]);
    }

    #[test]
    fn cancelled_waiter_leaves_the_half_arrived_message_to_the_next_read() {
        let mut h = samba();
        let p = open_ok(&mut h);
        let s = h.read(p, 4280);
        let ms = h.d().one(K::RecvMulti);
        let raw = framed(&[b"whole message"]);
        h.chunk(ms, &raw[..6]);
        assert!(pending(&s));
        h.cancel(&s);
        assert_eq!(status(&s), NtStatus::CANCELLED);
        let s = h.read(p, 4280);
        h.chunk(ms, &raw[6..]);
        assert_eq!(transfer(&s), ok(b"whole message"));
    }

    /// The longest message, in pool-sized chunks to a waiting read: the
    /// receive is not stopped on the way (while a request waits, the
    /// pushback holds at most the message it waits for).
    #[test]
    fn the_longest_message_reaches_its_waiter_without_a_stop() {
        let mut h = samba();
        let p = open_ok(&mut h);
        let big = bytes(65_535);
        let s = h.read(p, 65_535);
        let ms = h.d().one(K::RecvMulti);
        for part in framed(&[&big]).chunks(4096) {
            assert!(pending(&s));
            h.chunk(ms, part);
        }
        assert_eq!(transfer(&s), ok(&big));
        assert!(!h.d().cancel_asked(ms));
        assert_eq!(h.d().kinds(), vec![K::RecvMulti]);
    }

    /// Random message lengths (empty ones too), random chunk boundaries and
    /// random `max_out`s, with transceives and reads mixed: the replies,
    /// put back together by their BUFFER_OVERFLOW flags, are exactly the
    /// messages, in order, each ending on a SUCCESS.
    #[test]
    fn random_chunks_and_max_outs_deliver_every_message_whole_and_in_order() {
        for seed in 0..300u64 {
            let mut rng = Rng::new(seed);
            let mut h = samba();
            let p = open_ok(&mut h);
            let msgs: Vec<Vec<u8>> = (0..12)
                .map(|i| {
                    let len = if rng.chance(10) { 0 } else { rng.below(9000) };
                    (0..len).map(|j| (i * 31 + j) as u8).collect()
                })
                .collect();
            let refs: Vec<&[u8]> = msgs.iter().map(|m| &m[..]).collect();
            let raw = framed(&refs);
            let (mut at, mut ms) = (0, None);
            let (mut got, mut cur) = (Vec::new(), Vec::new());
            while got.len() < msgs.len() {
                let max_out = 1 + rng.below(6000);
                let s = if rng.chance(50) {
                    h.transceive(p, b"q", max_out)
                } else {
                    h.read(p, max_out)
                };
                while h.d().kinds().contains(&K::Send) {
                    h.send_all();
                }
                while pending(&s) {
                    assert!(
                        at < raw.len(),
                        "seed {seed}: waits with the stream all sent"
                    );
                    let id = *ms.get_or_insert_with(|| h.d().one(K::RecvMulti));
                    let end = (at + 1 + rng.below(4096)).min(raw.len());
                    h.chunk(id, &raw[at..end]);
                    at = end;
                }
                let t = transfer(&s);
                assert!(t.data.len() <= max_out, "seed {seed}");
                cur.extend_from_slice(&t.data);
                match t.status {
                    NtStatus::SUCCESS => got.push(std::mem::take(&mut cur)),
                    NtStatus::BUFFER_OVERFLOW => assert_eq!(t.data.len(), max_out),
                    other => panic!("seed {seed}: {other:?}"),
                }
            }
            assert_eq!(got, msgs, "seed {seed}");
            assert_eq!(at, raw.len());
            assert_eq!(h.d().kinds(), vec![K::RecvMulti], "seed {seed}");
        }
    }
}

/// A callback of a few handles is kept in the request's entry, a large one
/// in a box of its own; either runs once and is dropped after its run.
#[test]
fn small_callbacks_are_kept_inline_large_ones_boxed_and_each_runs_once() {
    use crate::engine::command::Callback;
    use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
    let mut h = harness();
    let p = h.open_ok(1);
    let runs = Arc::new(AtomicUsize::new(0));
    let (r1, r2) = (runs.clone(), runs.clone());
    let small = Callback::new(move |_, res| {
        assert!(res.is_ok());
        r1.fetch_add(1, SeqCst);
    });
    let big = [3u8; 200];
    let large = Callback::new(move |_, res| {
        assert!(res.is_ok());
        r2.fetch_add(usize::from(big[199]), SeqCst);
    });
    assert!(small.is_inline());
    assert!(!large.is_inline());
    assert_eq!(Arc::strong_count(&runs), 3);
    h.on_ring(p, small);
    assert_eq!(runs.load(SeqCst), 1);
    h.on_ring(p, large);
    assert_eq!(runs.load(SeqCst), 4);
    assert_eq!(Arc::strong_count(&runs), 1, "each dropped after its run");
}

/// The bytes of every reply of the loop tests (a reply is a prefix).
const LOOP_REPLY: [u8; 4280] = [0xa5; 4280];

/// A loop test's replies: `reply` bytes each, transceives asking for at
/// most `max_out` (when that is less than `reply`, the rest is read after
/// each one).
#[derive(Clone, Copy)]
struct LoopShape {
    reply: usize,
    max_out: usize,
}

/// Starts a transceive on `p`, if `left` allows one, whose callback checks
/// its reply and starts the next one in the reply's buffer (the bench's
/// loop, `cli/bench/peers/uring.rs`). A reply larger than `max_out` comes
/// as `STATUS_BUFFER_OVERFLOW` and `max_out` bytes, and its rest is read
/// into the same buffer (`read_append_with`, served from what the chunk
/// left), as the bench does.
fn transceive_loop(
    ctx: &mut RingContext<'_>,
    p: PipeId,
    input: Vec<u8>,
    counts: Arc<[std::sync::atomic::AtomicUsize; 2]>,
    shape: LoopShape,
) {
    use std::sync::atomic::Ordering::Relaxed;
    let [left, _] = &*counts;
    if left
        .fetch_update(Relaxed, Relaxed, |n| n.checked_sub(1))
        .is_err()
    {
        return;
    }
    ctx.transceive_with(p, input, shape.max_out, move |ctx, res| {
        let t = res.expect("a transceive of the loop failed");
        if shape.reply <= shape.max_out {
            assert_eq!(t.data, LOOP_REPLY[..shape.reply], "the reply of the loop");
            let [_, done] = &*counts;
            done.fetch_add(1, Relaxed);
            return transceive_loop(ctx, p, t.data, counts, shape);
        }
        assert_eq!(t.status, NtStatus::BUFFER_OVERFLOW, "more is waiting");
        assert_eq!(t.data.len(), shape.max_out);
        let rest = shape.reply - shape.max_out;
        ctx.read_append_with(p, t.data, rest, move |ctx, acc, res| {
            assert_eq!(res, Ok(rest), "the rest of the reply, read at once");
            assert_eq!(acc, LOOP_REPLY[..shape.reply], "the whole reply");
            let [_, done] = &*counts;
            done.fetch_add(1, Relaxed);
            transceive_loop(ctx, p, acc, counts, shape);
        });
    });
}

/// Runs `total` transceives of `shape` on `pipes` pipes through the fake
/// driver, each send completed in full and followed by its reply as one
/// chunk of the pipe's multishot receive; checks that every reply arrived,
/// that only the multishot receives' op entries are left and that every
/// request buffer went back to the driver.
fn run_transceive_loop(pipes: usize, total: usize, shape: LoopShape) {
    use std::os::fd::RawFd;
    use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
    let mut h = harness();
    let ps: Vec<PipeId> = (0..pipes).map(|_| h.open_ok(1)).collect();
    let recycled = h.d().recycled;
    // Transceives still to start, and those done.
    let counts = Arc::new([AtomicUsize::new(total), AtomicUsize::new(0)]);
    let c = counts.clone();
    let first = ps.clone();
    h.on_ring(
        ps[0],
        crate::engine::command::Callback::new(move |ctx, _| {
            for p in first {
                transceive_loop(ctx, p, vec![0x5a; 64], c.clone(), shape);
            }
        }),
    );
    let reply = &LOOP_REPLY[..shape.reply];
    let mut rounds = 0;
    while !h.d().ids(K::Send).is_empty() {
        let multi: Vec<(RawFd, SqeId)> = h
            .d()
            .ids(K::RecvMulti)
            .into_iter()
            .filter_map(|id| match h.d().op(id).fd() {
                Some(Sock::Kept(raw)) => Some((*raw, id)),
                _ => None,
            })
            .collect();
        for id in h.d().ids(K::Send) {
            let n = send_len(h.d().op(id));
            let raw = match h.d().op(id).fd() {
                Some(Sock::Kept(raw)) => *raw,
                _ => panic!("a pipe's send names its socket by number"),
            };
            h.d().complete(id, n as i32);
            let (_, ms) = *multi
                .iter()
                .find(|(fd, _)| *fd == raw)
                .expect("the pipe's multishot receive");
            h.d().chunk(ms, reply, 0);
        }
        h.turn();
        rounds += 1;
    }
    assert_eq!(
        counts[1].load(Relaxed),
        total,
        "transceives done after {rounds} rounds, {:?} in flight",
        h.d().kinds()
    );
    assert!(rounds >= total / pipes, "{rounds} rounds");
    assert_eq!(
        h.core.ops.len(),
        pipes,
        "only the pipes' multishot receives are left"
    );
    assert_eq!(h.d().recycled - recycled, total, "request buffers recycled");
}

/// A loop test's setting from the environment (perf/instructions.py).
fn loop_env(k: &str, default: usize) -> usize {
    std::env::var(k)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Steady-state transceives on several pipes through the fake driver, the
/// bench's pattern: each send completes in full and the pipe's multishot
/// receive brings the 64-byte reply; every reply arrives, no op entry is
/// left behind and every request buffer goes back to the driver. It is
/// also the loop whose instructions per transceive perf/README.md counts
/// under callgrind (scaled by `OPIPE_LOOP_PIPES`, `OPIPE_LOOP_TRANSCEIVES`).
#[test]
fn steady_state_transceive_loop() {
    run_transceive_loop(
        loop_env("OPIPE_LOOP_PIPES", 16),
        loop_env("OPIPE_LOOP_TRANSCEIVES", 2_000),
        LoopShape {
            reply: 64,
            max_out: 4280,
        },
    );
}

/// The same loop on the overflow path (the bench's `--reply-size 4280
/// --max-out 1024`): each 4 280-byte reply comes as one chunk, the
/// transceive takes 1 024 bytes and `STATUS_BUFFER_OVERFLOW`, and the
/// rest is read at once from what the chunk left.
#[test]
fn steady_state_overflow_loop() {
    run_transceive_loop(
        loop_env("OPIPE_LOOP_PIPES", 16),
        loop_env("OPIPE_LOOP_TRANSCEIVES", 2_000),
        LoopShape {
            reply: 4280,
            max_out: 1024,
        },
    );
}
