//! One connection of the pipe service, from accept to close: the handshake,
//! the accept decision (anonymous users, policy, open limit), then the
//! handler. Safe and sans-IO: the ring loop feeds it bytes.

use std::os::fd::BorrowedFd;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::protocol::npa::{FRAME_HEADER_LEN, MAX_FRAMED_MESSAGE};
use crate::protocol::{
    encode_status_word, Dialect, MessageUnframer, NetUserInfo, NpaIdentity, NpaLevel, NpaReply,
    NpaRequest, NtStatus, PipeName,
};
use crate::ring::service::{Acceptor, CloseReason, LoopCounters, Session, Verdict};
use crate::ring::sys::peer_uid;

use super::caller::Caller;
use super::handler::{
    Handler, HandlerError, HandlerFactory, MessageBoundaries, OUTPUT_BATCH_BYTES,
};
use super::handshake::{Handshake, NpaHandshake, NpaStep, Step};
use super::stats::{bump, Counters};

/// Decides whether an open is accepted. Runs on a service thread for each
/// handshake that decoded; it should be quick.
///
/// Closures `Fn(&PipeName, &NetUserInfo) -> NtStatus` are policies:
///
/// ```
/// use opipe::protocol::{NetUserInfo, NtStatus, PipeName};
/// let only_admins = |_pipe: &PipeName, user: &NetUserInfo| {
///     if user.flags & opipe::protocol::USER_FLAG_ADMIN != 0 {
///         NtStatus::SUCCESS
///     } else {
///         NtStatus::ACCESS_DENIED
///     }
/// };
/// # fn takes(_: impl opipe::service::AcceptPolicy) {}
/// # takes(only_admins);
/// ```
pub trait AcceptPolicy: Send + Sync + 'static {
    /// The status to answer: [`NtStatus::SUCCESS`] accepts the open;
    /// anything else is sent to the client and the connection closed.
    fn check(&self, pipe: &PipeName, user: &NetUserInfo) -> NtStatus;

    /// The same, with the whole caller (dialect, and Samba's identity);
    /// the default calls [`check`](Self::check) with [`Caller::user`].
    fn check_caller(&self, pipe: &PipeName, caller: &Caller) -> NtStatus {
        self.check(pipe, &caller.user)
    }
}

impl<F> AcceptPolicy for F
where
    F: Fn(&PipeName, &NetUserInfo) -> NtStatus + Send + Sync + 'static,
{
    fn check(&self, pipe: &PipeName, user: &NetUserInfo) -> NtStatus {
        self(pipe, user)
    }
}

/// The default policy: every open is accepted.
#[derive(Debug, Default, Clone, Copy)]
pub struct AcceptAll;

impl AcceptPolicy for AcceptAll {
    fn check(&self, _pipe: &PipeName, _user: &NetUserInfo) -> NtStatus {
        NtStatus::SUCCESS
    }
}

/// One served pipe name and its count of open pipes.
#[derive(Debug)]
pub(crate) struct PipeSlot {
    pub name: PipeName,
    pub open: AtomicU64,
}

/// Which peers may connect, by the uid the kernel recorded when they
/// connected (`SO_PEERCRED`): checked on accept, before anything is read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PeerUids {
    /// Every peer that can reach the socket.
    Any,
    /// Only these uids.
    Only(Vec<u32>),
}

impl PeerUids {
    /// Whether the peer on `conn` may go on to its handshake. A socket
    /// whose credentials cannot be read is refused.
    fn admits(&self, conn: BorrowedFd<'_>) -> Result<(), Option<u32>> {
        match self {
            PeerUids::Any => Ok(()),
            PeerUids::Only(uids) => match peer_uid(conn) {
                Ok(uid) if uids.contains(&uid) => Ok(()),
                Ok(uid) => Err(Some(uid)),
                Err(_) => Err(None),
            },
        }
    }
}

/// What every connection of a service shares.
pub(crate) struct Shared {
    pub dialect: Dialect,
    pub pipes: Vec<PipeSlot>,
    pub peers: PeerUids,
    pub factory: Box<dyn HandlerFactory>,
    pub policy: Box<dyn AcceptPolicy>,
    pub deny_anonymous: bool,
    pub max_opens: Option<u64>,
    pub handshake_timeout: Duration,
    pub counters: Counters,
    pub loop_counters: Arc<LoopCounters>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("dialect", &self.dialect)
            .field("pipes", &self.pipes)
            .field("deny_anonymous", &self.deny_anonymous)
            .field("max_opens", &self.max_opens)
            .field("handshake_timeout", &self.handshake_timeout)
            .finish_non_exhaustive()
    }
}

/// A place under a pipe's open limit; given back on drop.
#[derive(Debug)]
struct OpenSlot {
    shared: Arc<Shared>,
    pipe: usize,
}

impl OpenSlot {
    fn acquire(shared: &Arc<Shared>, pipe: usize) -> Option<OpenSlot> {
        let open = &shared.pipes[pipe].open;
        let max = shared.max_opens.unwrap_or(u64::MAX);
        open.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
            (n < max).then_some(n + 1)
        })
        .ok()?;
        Some(OpenSlot {
            shared: shared.clone(),
            pipe,
        })
    }
}

impl Drop for OpenSlot {
    fn drop(&mut self) {
        self.shared.pipes[self.pipe]
            .open
            .fetch_sub(1, Ordering::AcqRel);
    }
}

impl Shared {
    /// The accept decision for a decoded open, in illumos-compatible terms:
    /// anonymous users first (when denied), then the policy, then the open
    /// limit. Returns the status and, on success, the held open slot.
    fn decide(self: &Arc<Self>, pipe: usize, caller: &Caller) -> (NtStatus, Option<OpenSlot>) {
        if self.deny_anonymous && caller.is_anonymous() {
            return (NtStatus::ACCESS_DENIED, None);
        }
        // A panicking policy refuses the open rather than take the
        // service thread down.
        let status = catch_unwind(AssertUnwindSafe(|| {
            self.policy.check_caller(&self.pipes[pipe].name, caller)
        }))
        .unwrap_or(NtStatus::INTERNAL_ERROR);
        if status != NtStatus::SUCCESS {
            return (status, None);
        }
        match OpenSlot::acquire(self, pipe) {
            Some(slot) => (NtStatus::SUCCESS, Some(slot)),
            None => (NtStatus::PIPE_NOT_AVAILABLE, None),
        }
    }
}

/// The handshake of the service's dialect.
enum Opening {
    Illumos(Handshake),
    Samba(NpaHandshake),
}

enum Phase {
    Handshake(Box<Opening>),
    Open(Box<dyn Handler>),
    /// Rejected, failed or ended: input is ignored until the loop closes.
    Done,
}

/// One connection's protocol state.
pub(crate) struct PipeSession {
    shared: Arc<Shared>,
    pipe: usize,
    phase: Phase,
    deadline: Instant,
    slot: Option<OpenSlot>,
    /// Message mode (Samba dialect), once open.
    framing: Option<Box<Framing>>,
}

/// A message-mode pipe's framing: `u16` little-endian length before every
/// message, both ways. The handler sees each received message whole, and
/// its output is cut into messages by its [`MessageBoundaries`].
#[derive(Default)]
struct Framing {
    input: MessageUnframer,
    /// The handler's output before it is framed into `out`.
    scratch: Vec<u8>,
}

/// The `frag_length` of the DCE/RPC PDU at the front of `data`, if it is
/// one that fits.
fn pdu_len_at(data: &[u8]) -> Option<usize> {
    let len = usize::from(u16::from_le_bytes([*data.get(8)?, *data.get(9)?]));
    (len >= 16 && len <= data.len()).then_some(len)
}

/// Appends `data` to `out` as messages cut by `boundaries`; none longer
/// than [`MAX_FRAMED_MESSAGE`].
fn frame_into(out: &mut Vec<u8>, mut data: &[u8], boundaries: MessageBoundaries) {
    out.reserve(data.len() + FRAME_HEADER_LEN);
    while !data.is_empty() {
        let n = match boundaries {
            MessageBoundaries::PerCall => data.len(),
            MessageBoundaries::DceRpcPdus => pdu_len_at(data).unwrap_or(data.len()),
        }
        .min(MAX_FRAMED_MESSAGE);
        // n <= 65535: fits the header.
        out.extend_from_slice(&(n as u16).to_le_bytes());
        out.extend_from_slice(&data[..n]);
        data = &data[n..];
    }
}

impl PipeSession {
    pub(crate) fn new(shared: Arc<Shared>, pipe: usize, now: Instant) -> PipeSession {
        bump(&shared.counters.connections_open);
        let deadline = now + shared.handshake_timeout;
        let opening = match shared.dialect {
            Dialect::Illumos => Opening::Illumos(Handshake::new()),
            Dialect::Samba => Opening::Samba(NpaHandshake::new()),
        };
        PipeSession {
            shared,
            pipe,
            phase: Phase::Handshake(Box::new(opening)),
            deadline,
            slot: None,
            framing: None,
        }
    }

    fn fail_handshake(&mut self, e: &super::handshake::HandshakeError) -> Verdict {
        tracing::debug!(
            "opipe service: {} ({}): {e}; closed without an answer",
            self.shared.pipes[self.pipe].name.as_str(),
            self.shared.dialect
        );
        self.fail_silently()
    }

    fn fail_silently(&mut self) -> Verdict {
        bump(&self.shared.counters.handshakes_closed_silently);
        self.phase = Phase::Done;
        Verdict::Abort
    }

    /// Runs `f` on the open handler; an error closes the connection after
    /// the output is sent, a panic closes it at once.
    fn with_handler(
        &mut self,
        out: &mut Vec<u8>,
        f: impl FnOnce(&mut dyn Handler, &mut Vec<u8>) -> Result<(), HandlerError>,
    ) -> Verdict {
        let Phase::Open(h) = &mut self.phase else {
            return Verdict::Continue;
        };
        match catch_unwind(AssertUnwindSafe(|| f(h.as_mut(), out))) {
            Ok(Ok(())) => Verdict::Continue,
            Ok(Err(_)) => {
                // The handler stays, to be told about the close.
                bump(&self.shared.counters.handler_errors);
                Verdict::Close
            }
            Err(_) => {
                bump(&self.shared.counters.handler_errors);
                self.phase = Phase::Done;
                Verdict::Abort
            }
        }
    }

    fn feed_handler(&mut self, data: &[u8], out: &mut Vec<u8>) -> Verdict {
        if data.is_empty() {
            return Verdict::Continue;
        }
        match &mut self.framing {
            None => self.with_handler(out, |h, out| h.on_data(data, out)),
            Some(f) => {
                f.input.push(data);
                self.pump(out)
            }
        }
    }

    /// Message mode: runs `f` on the handler with the scratch buffer, then
    /// frames what it wrote into `out`.
    fn framed_call(
        &mut self,
        out: &mut Vec<u8>,
        f: impl FnOnce(&mut dyn Handler, &mut Vec<u8>) -> Result<(), HandlerError>,
    ) -> Verdict {
        let mut scratch = match &mut self.framing {
            Some(fr) => std::mem::take(&mut fr.scratch),
            None => return self.with_handler(out, f),
        };
        let v = self.with_handler(&mut scratch, f);
        let boundaries = match &self.phase {
            Phase::Open(h) => h.message_boundaries(),
            _ => MessageBoundaries::PerCall,
        };
        frame_into(out, &scratch, boundaries);
        scratch.clear();
        if let Some(fr) = &mut self.framing {
            fr.scratch = scratch;
        }
        v
    }

    /// Message mode: hands whole received messages to the handler, one
    /// call each, until none is left, the handler holds a backlog, or a
    /// batch of output was written.
    fn pump(&mut self, out: &mut Vec<u8>) -> Verdict {
        let start = out.len();
        loop {
            let Phase::Open(h) = &self.phase else {
                return Verdict::Continue;
            };
            if h.has_backlog() || out.len() - start >= OUTPUT_BATCH_BYTES {
                return Verdict::Continue;
            }
            let Some(msg) = self.framing.as_mut().and_then(|f| f.input.next_message()) else {
                return Verdict::Continue;
            };
            if msg.is_empty() {
                continue;
            }
            let v = self.framed_call(out, |h, o| h.on_data(&msg, o));
            if v != Verdict::Continue {
                return v;
            }
        }
    }

    /// The open was decided: makes the handler (a panicking factory turns
    /// the answer into STATUS_INTERNAL_ERROR) and writes the answer: the
    /// status word (illumos) or the NPA reply at the request's `level`.
    fn complete_open(
        &mut self,
        caller: &Caller,
        level: Option<NpaLevel>,
        out: &mut Vec<u8>,
    ) -> Verdict {
        let (mut status, slot) = self.shared.decide(self.pipe, caller);
        let mut handler = None;
        if status == NtStatus::SUCCESS {
            let (shared, pipe) = (&self.shared, self.pipe);
            match catch_unwind(AssertUnwindSafe(|| {
                shared.factory.open_caller(&shared.pipes[pipe].name, caller)
            })) {
                Ok(h) => handler = Some(h),
                Err(_) => status = NtStatus::INTERNAL_ERROR,
            }
        }
        // Samba-dialect opens come from an SMB server, one per client pipe:
        // worth a line each. Illumos opens are the benchmark's path (10 000
        // in a few milliseconds): a line each only at debug level.
        let name = self.shared.pipes[self.pipe].name.as_str();
        if level.is_some() {
            tracing::info!("opipe service: open of {name} by {caller}: {status}");
        } else {
            tracing::debug!("opipe service: open of {name} by {caller}: {status}");
        }
        self.answer(level, status, out);
        match handler {
            Some(h) => {
                bump(&self.shared.counters.handshakes_ok);
                self.slot = slot;
                if level.is_some() {
                    self.framing = Some(Box::default());
                }
                self.phase = Phase::Open(h);
                Verdict::Continue
            }
            None => {
                bump(&self.shared.counters.handshakes_rejected);
                self.phase = Phase::Done;
                Verdict::Close
            }
        }
    }

    fn answer(&self, level: Option<NpaLevel>, status: NtStatus, out: &mut Vec<u8>) {
        match level {
            None => out.extend_from_slice(&encode_status_word(status)),
            Some(level) => out.extend_from_slice(&NpaReply::error(level, status).encode()),
        }
    }

    /// A Samba request decoded: its identity (refused as Samba refuses
    /// it: no session info or token, addresses that do not parse, the
    /// SYSTEM token), then the same decision as an illumos open.
    fn complete_npa(&mut self, req: &NpaRequest, out: &mut Vec<u8>) -> Verdict {
        let refused = match NpaIdentity::from_request(req) {
            Ok(id) if id.is_system() => Err((
                NtStatus::ACCESS_DENIED,
                "the SYSTEM token is refused on a pipe".to_owned(),
            )),
            Ok(id) => Ok(id),
            Err(e) => Err((e.status(), e.to_string())),
        };
        match refused {
            Ok(id) => self.complete_open(&Caller::from_npa(id), Some(req.level), out),
            Err((status, why)) => {
                tracing::info!(
                    "opipe service: open of {} refused: {why}: {status}",
                    self.shared.pipes[self.pipe].name.as_str()
                );
                self.answer(Some(req.level), status, out);
                bump(&self.shared.counters.handshakes_rejected);
                self.phase = Phase::Done;
                Verdict::Close
            }
        }
    }
}

impl Session for PipeSession {
    fn on_data(&mut self, data: &[u8], out: &mut Vec<u8>) -> Verdict {
        let Phase::Handshake(opening) = &mut self.phase else {
            return self.feed_handler(data, out);
        };
        let (verdict, consumed) = match opening.as_mut() {
            Opening::Illumos(hs) => match hs.feed(data) {
                Step::NeedMore => return Verdict::Continue,
                Step::Failed(e) => return self.fail_handshake(&e),
                Step::Complete { user, consumed } => (
                    self.complete_open(&Caller::illumos(*user), None, out),
                    consumed,
                ),
            },
            Opening::Samba(hs) => match hs.feed(data) {
                NpaStep::NeedMore => return Verdict::Continue,
                NpaStep::Failed(e) => return self.fail_handshake(&e),
                NpaStep::Complete { request, consumed } => {
                    (self.complete_npa(&request, out), consumed)
                }
            },
        };
        match verdict {
            Verdict::Continue => self.feed_handler(&data[consumed..], out),
            v => v,
        }
    }

    fn has_backlog(&self) -> bool {
        match &self.phase {
            Phase::Open(h) => {
                h.has_backlog()
                    || self
                        .framing
                        .as_ref()
                        .is_some_and(|f| f.input.buffered() > 0 && f.input.needed() == 0)
            }
            _ => false,
        }
    }

    fn on_writable(&mut self, out: &mut Vec<u8>) -> Verdict {
        match self.framed_call(out, |h, out| h.resume(out)) {
            Verdict::Continue if self.framing.is_some() => self.pump(out),
            v => v,
        }
    }

    fn deadline(&self) -> Option<Instant> {
        matches!(self.phase, Phase::Handshake(_)).then_some(self.deadline)
    }

    fn on_deadline(&mut self, _out: &mut Vec<u8>) -> Verdict {
        if !matches!(self.phase, Phase::Handshake(_)) {
            return Verdict::Continue;
        }
        bump(&self.shared.counters.handshake_timeouts);
        self.fail_silently()
    }

    fn on_close(&mut self, _reason: CloseReason) {
        match std::mem::replace(&mut self.phase, Phase::Done) {
            Phase::Handshake(_) => {
                // Ended (EOF, error, shutdown) before a full open message.
                bump(&self.shared.counters.handshakes_closed_silently);
            }
            Phase::Open(mut h) => {
                // A panic here has nothing left to disturb.
                let _ = catch_unwind(AssertUnwindSafe(|| h.on_close()));
            }
            Phase::Done => {}
        }
        self.slot = None;
    }
}

impl Drop for PipeSession {
    fn drop(&mut self) {
        self.shared
            .counters
            .connections_open
            .fetch_sub(1, Ordering::Relaxed);
    }
}

/// Makes a [`PipeSession`] per accepted connection; listener `i` serves
/// pipe `i`.
pub(crate) struct PipeAcceptor {
    pub shared: Arc<Shared>,
}

impl Acceptor for PipeAcceptor {
    type Session = PipeSession;

    fn accept(&mut self, listener: usize, conn: BorrowedFd<'_>) -> Option<PipeSession> {
        if listener >= self.shared.pipes.len() {
            return None;
        }
        if let Err(uid) = self.shared.peers.admits(conn) {
            bump(&self.shared.counters.peers_refused);
            match uid {
                Some(uid) => tracing::debug!("opipe service: refused a peer with uid {uid}"),
                None => tracing::debug!("opipe service: refused a peer without credentials"),
            }
            return None;
        }
        Some(PipeSession::new(
            self.shared.clone(),
            listener,
            Instant::now(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{
        decode_status_word, encode_open_message, PipeHeader, USER_FLAG_ANONYMOUS,
    };
    use crate::service::handler::EchoFactory;
    use crate::service::stats::Stats;
    use crate::service::testutil::user;

    fn shared(
        deny_anonymous: bool,
        max_opens: Option<u64>,
        policy: Box<dyn AcceptPolicy>,
    ) -> Arc<Shared> {
        Arc::new(Shared {
            dialect: Dialect::Illumos,
            pipes: vec![PipeSlot {
                name: PipeName::parse("srvsvc").unwrap(),
                open: AtomicU64::new(0),
            }],
            peers: PeerUids::Any,
            factory: Box::new(EchoFactory),
            policy,
            deny_anonymous,
            max_opens,
            handshake_timeout: Duration::from_secs(10),
            counters: Counters::default(),
            loop_counters: Arc::new(LoopCounters::default()),
        })
    }

    #[test]
    fn peers_are_admitted_by_uid() {
        use std::os::fd::AsFd;
        let me = crate::ring::sys::effective_uid();
        let (conn, _peer) = std::os::unix::net::UnixStream::pair().unwrap();
        for (peers, admitted) in [
            (PeerUids::Any, true),
            (PeerUids::Only(vec![me]), true),
            (PeerUids::Only(vec![me.wrapping_add(1), me]), true),
            (PeerUids::Only(vec![me.wrapping_add(1)]), false),
            (PeerUids::Only(Vec::new()), false),
        ] {
            let mut sh = shared(false, None, Box::new(AcceptAll));
            Arc::get_mut(&mut sh).unwrap().peers = peers.clone();
            let mut acc = PipeAcceptor { shared: sh.clone() };
            let got = acc.accept(0, conn.as_fd());
            assert_eq!(got.is_some(), admitted, "{peers:?}");
            drop(got);
            let st = stats(&sh);
            assert_eq!(st.peers_refused, u64::from(!admitted), "{peers:?}");
            assert_eq!(st.connections_open, 0);
        }
        // A listener index the service does not have is refused too.
        let mut acc = PipeAcceptor {
            shared: shared(false, None, Box::new(AcceptAll)),
        };
        assert!(acc.accept(1, conn.as_fd()).is_none());
    }

    fn stats(s: &Shared) -> Stats {
        Stats::collect(
            &s.counters,
            &s.loop_counters,
            s.pipes
                .iter()
                .map(|p| (p.name.as_str(), p.open.load(Ordering::Relaxed))),
        )
    }

    /// Feeds an open of `u` plus `extra`; returns the verdict and the output.
    fn open(s: &mut PipeSession, flags: u32, extra: &[u8]) -> (Verdict, Vec<u8>) {
        let mut msg = encode_open_message(&user(flags)).unwrap();
        msg.extend_from_slice(extra);
        let mut out = Vec::new();
        let v = s.on_data(&msg, &mut out);
        (v, out)
    }

    #[test]
    fn good_open_answers_zero_and_echoes_trailing_bytes() {
        let sh = shared(false, None, Box::new(AcceptAll));
        let mut s = PipeSession::new(sh.clone(), 0, Instant::now());
        assert!(s.deadline().is_some());
        let (v, out) = open(&mut s, 0, b"ping");
        assert_eq!(v, Verdict::Continue);
        assert_eq!(
            decode_status_word(out[..4].try_into().unwrap()),
            NtStatus::SUCCESS
        );
        assert_eq!(&out[4..], b"ping");
        assert_eq!(s.deadline(), None);
        let st = stats(&sh);
        assert_eq!(
            (st.handshakes_ok, st.open("srvsvc"), st.connections_open),
            (1, 1, 1)
        );
        s.on_close(CloseReason::PeerClosed);
        drop(s);
        let st = stats(&sh);
        assert_eq!((st.open("srvsvc"), st.connections_open), (0, 0));
    }

    #[test]
    fn bad_header_closes_without_status() {
        let sh = shared(false, None, Box::new(AcceptAll));
        let mut s = PipeSession::new(sh.clone(), 0, Instant::now());
        let mut out = Vec::new();
        let hdr = PipeHeader { magic: 1, uilen: 4 }.encode();
        assert_eq!(s.on_data(&hdr, &mut out), Verdict::Abort);
        assert!(out.is_empty());
        s.on_close(CloseReason::Session);
        assert_eq!(stats(&sh).handshakes_closed_silently, 1);
    }

    #[test]
    fn truncated_and_timed_out_count_as_silent() {
        let sh = shared(false, None, Box::new(AcceptAll));
        let mut a = PipeSession::new(sh.clone(), 0, Instant::now());
        let mut out = Vec::new();
        assert_eq!(a.on_data(&[0x45, 0x50], &mut out), Verdict::Continue);
        a.on_close(CloseReason::PeerClosed);
        let mut b = PipeSession::new(sh.clone(), 0, Instant::now());
        assert_eq!(b.on_deadline(&mut out), Verdict::Abort);
        b.on_close(CloseReason::Deadline);
        assert!(out.is_empty());
        let st = stats(&sh);
        assert_eq!(
            (st.handshakes_closed_silently, st.handshake_timeouts),
            (2, 1)
        );
    }

    #[test]
    fn deny_anonymous() {
        let sh = shared(true, None, Box::new(AcceptAll));
        let mut s = PipeSession::new(sh.clone(), 0, Instant::now());
        let (v, out) = open(&mut s, USER_FLAG_ANONYMOUS, b"");
        assert_eq!(v, Verdict::Close);
        assert_eq!(out, encode_status_word(NtStatus::ACCESS_DENIED));
        let mut s2 = PipeSession::new(sh.clone(), 0, Instant::now());
        let (v, out) = open(&mut s2, 0, b"");
        assert_eq!(v, Verdict::Continue);
        assert_eq!(out, encode_status_word(NtStatus::SUCCESS));
        assert_eq!(stats(&sh).handshakes_rejected, 1);
    }

    #[test]
    fn open_limit_and_release() {
        let sh = shared(false, Some(2), Box::new(AcceptAll));
        let mut s: Vec<PipeSession> = (0..3)
            .map(|_| PipeSession::new(sh.clone(), 0, Instant::now()))
            .collect();
        assert_eq!(
            open(&mut s[0], 0, b"").1,
            encode_status_word(NtStatus::SUCCESS)
        );
        assert_eq!(
            open(&mut s[1], 0, b"").1,
            encode_status_word(NtStatus::SUCCESS)
        );
        let (v, out) = open(&mut s[2], 0, b"");
        assert_eq!(
            (v, out),
            (
                Verdict::Close,
                encode_status_word(NtStatus::PIPE_NOT_AVAILABLE).to_vec()
            )
        );
        s[0].on_close(CloseReason::PeerClosed);
        let mut again = PipeSession::new(sh.clone(), 0, Instant::now());
        assert_eq!(
            open(&mut again, 0, b"").1,
            encode_status_word(NtStatus::SUCCESS)
        );
        assert_eq!(stats(&sh).open("srvsvc"), 2);
    }

    struct Bomb;
    impl Handler for Bomb {
        fn on_data(&mut self, data: &[u8], out: &mut Vec<u8>) -> Result<(), HandlerError> {
            out.extend_from_slice(data);
            if data == b"boom" {
                panic!("handler bug");
            }
            Ok(())
        }
    }

    #[test]
    fn panics_in_handler_factory_or_policy_stay_in_their_connection() {
        let mut sh = shared(false, Some(1), Box::new(AcceptAll));
        Arc::get_mut(&mut sh).unwrap().factory = Box::new(|_: &PipeName, _: &NetUserInfo| Bomb);
        let mut s = PipeSession::new(sh.clone(), 0, Instant::now());
        assert_eq!(open(&mut s, 0, b"ok").0, Verdict::Continue);
        let mut out = Vec::new();
        assert_eq!(s.on_data(b"boom", &mut out), Verdict::Abort);
        s.on_close(CloseReason::Session);
        drop(s);
        assert_eq!(stats(&sh).handler_errors, 1);
        assert_eq!(stats(&sh).open("srvsvc"), 0);

        let mut sh = shared(false, Some(1), Box::new(AcceptAll));
        Arc::get_mut(&mut sh).unwrap().factory = Box::new(|_: &PipeName, u: &NetUserInfo| {
            assert!(u.account != "alice", "factory bug");
            Bomb
        });
        let mut s = PipeSession::new(sh.clone(), 0, Instant::now());
        let (v, out) = open(&mut s, 0, b"");
        assert_eq!(
            (v, out),
            (
                Verdict::Close,
                encode_status_word(NtStatus::INTERNAL_ERROR).to_vec()
            )
        );
        // The open slot taken for it was given back.
        assert_eq!(stats(&sh).open("srvsvc"), 0);

        let policy = |_: &PipeName, _: &NetUserInfo| -> NtStatus { panic!("policy bug") };
        let sh = shared(false, None, Box::new(policy));
        let mut s = PipeSession::new(sh.clone(), 0, Instant::now());
        let (v, out) = open(&mut s, 0, b"");
        assert_eq!(
            (v, out),
            (
                Verdict::Close,
                encode_status_word(NtStatus::INTERNAL_ERROR).to_vec()
            )
        );
    }

    #[test]
    fn policy_status_is_sent() {
        let policy = |pipe: &PipeName, user: &NetUserInfo| {
            assert_eq!(pipe.as_str(), "srvsvc");
            if user.account == "alice" {
                NtStatus(0xC000_006D)
            } else {
                NtStatus::SUCCESS
            }
        };
        let sh = shared(false, None, Box::new(policy));
        let mut s = PipeSession::new(sh.clone(), 0, Instant::now());
        let (v, out) = open(&mut s, 0, b"ignored");
        assert_eq!(v, Verdict::Close);
        assert_eq!(out, encode_status_word(NtStatus(0xC000_006D)));
        // Input after a rejection is ignored.
        let mut more = Vec::new();
        assert_eq!(s.on_data(b"x", &mut more), Verdict::Continue);
        assert!(more.is_empty());
    }
}
