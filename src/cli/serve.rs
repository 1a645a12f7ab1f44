//! `opipe serve`: a pipe service on `DIR/NAME` sockets until SIGINT/SIGTERM.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::mpsc;
use std::time::Duration;

use clap::{Args, ValueEnum};

use crate::args::{BackendArg, DialectArg};

use opipe::protocol::Dialect;
use opipe::ring::service::DEFAULT_MAX_BUFFERED_BYTES;
use opipe::ring::sys::{raise_nofile_limit, BlockedSignals};
use opipe::service::{
    DceRpcFactory, EchoFactory, Service, ServiceBuilder, ServiceError, ServiceHandle, SrvsvcFactory,
};

/// Exit status for usage errors (bad arguments), as clap uses.
const EXIT_USAGE: u8 = 2;
/// Exit status for failures while starting or running.
const EXIT_FAILURE: u8 = 1;

/// The largest `--reply-size` accepted (16 MiB).
const MAX_REPLY_SIZE_BYTES: u32 = 16 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum HandlerKind {
    /// Write back every byte received.
    Echo,
    /// Answer DCE/RPC binds with a bind_ack and requests with
    /// `--reply-size` bytes of stub data.
    Dcerpc,
    /// A small SRVSVC server: NetrServerGetInfo level 101 (server name
    /// `--server-name`) and NetrShareEnumAll level 1 (IPC$); every bind
    /// and request logged.
    Srvsvc,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Directory for the pipe sockets (must exist). In the samba dialect
    /// the sockets are in DIR/np (created 0700 if missing).
    #[arg(long, value_name = "DIR")]
    dir: PathBuf,

    /// The pipe dialect: illumos (default) or samba.
    #[arg(long, value_enum, default_value_t = DialectArg::Illumos)]
    dialect: DialectArg,

    /// Log every DCE/RPC bind (interface) and request (opnum) on stderr
    /// (dcerpc and srvsvc handlers; off by default: a line per call costs
    /// more than the call).
    #[arg(long)]
    log_calls: bool,

    /// A pipe name to serve, e.g. srvsvc (repeat for more).
    #[arg(long = "pipe", value_name = "NAME", required = true)]
    pipes: Vec<String>,

    /// What answers on an open pipe.
    #[arg(long, value_enum, default_value_t = HandlerKind::Echo)]
    handler: HandlerKind,

    /// The server name the srvsvc handler reports.
    #[arg(long, value_name = "NAME", default_value = "OPIPE")]
    server_name: String,

    /// Stub bytes in each DCE/RPC response (dcerpc handler).
    #[arg(long, value_name = "BYTES", default_value_t = 1024,
          value_parser = clap::value_parser!(u32).range(0..=i64::from(MAX_REPLY_SIZE_BYTES)))]
    reply_size: u32,

    /// Answer STATUS_ACCESS_DENIED to anonymous users.
    #[arg(long)]
    deny_anonymous: bool,

    /// Concurrent opens allowed per pipe name; over it, STATUS_PIPE_NOT_AVAILABLE.
    #[arg(long, value_name = "N")]
    max_opens: Option<u64>,

    /// Service threads, one event loop each.
    #[arg(long, value_name = "N", default_value_t = 1,
          value_parser = clap::value_parser!(u16).range(1..=256))]
    threads: u16,

    /// Close connections that have not completed the open handshake after
    /// this many milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 10_000,
          value_parser = clap::value_parser!(u64).range(1..=3_600_000))]
    handshake_timeout_ms: u64,

    /// Event loop: io_uring, or epoll where io_uring is switched off.
    #[arg(long, value_enum, default_value_t = BackendArg::Auto)]
    backend: BackendArg,

    /// Reply bytes the whole service may hold (split among the threads);
    /// over it, requests stop being read until replies drain. Connections
    /// are paused, not dropped.
    #[arg(long, value_name = "BYTES", default_value_t = DEFAULT_MAX_BUFFERED_BYTES as u64,
          value_parser = clap::value_parser!(u64).range(1 << 20..=1 << 40))]
    max_buffered_bytes: u64,

    /// Unread reply bytes per connection above which its requests stop
    /// being read (reading resumes below a quarter of it).
    #[arg(long, value_name = "BYTES", default_value_t = 256 * 1024,
          value_parser = clap::value_parser!(u64).range(4096..=1 << 30))]
    max_conn_buffered_bytes: u64,

    /// Permission bits of the sockets, in octal (default 0600: the
    /// service's user only), set exactly whatever the umask. Widen it (e.g.
    /// 0660) when the SMB server runs as another user.
    #[arg(long, value_name = "OCTAL", default_value = "0600", value_parser = parse_mode)]
    socket_mode: u32,

    /// Also admit peers running as this uid (repeat for more). The
    /// service's own uid and root are always admitted; other peers are
    /// closed before their handshake is read (checked by SO_PEERCRED).
    #[arg(long = "allow-uid", value_name = "UID")]
    allow_uids: Vec<u32>,

    /// Admit peers of every uid (no SO_PEERCRED check): the socket's mode
    /// and directory are then the only guard.
    #[arg(long, conflicts_with = "allow_uids")]
    allow_any_uid: bool,
}

/// A socket mode in octal (`0660`, `660`, `0o660`): only the 0777 bits.
fn parse_mode(s: &str) -> Result<u32, String> {
    let digits = s.strip_prefix("0o").unwrap_or(s);
    let mode = u32::from_str_radix(digits, 8).map_err(|_| format!("not an octal mode: {s:?}"))?;
    if mode & !0o777 != 0 {
        return Err(format!("{s}: only the permission bits 0777 may be given"));
    }
    Ok(mode)
}

impl ServeArgs {
    fn builder(&self) -> ServiceBuilder {
        let mut b = Service::builder(&self.dir)
            .dialect(self.dialect.into())
            .deny_anonymous(self.deny_anonymous)
            .threads(usize::from(self.threads))
            .backend(self.backend.into())
            .handshake_timeout(Duration::from_millis(self.handshake_timeout_ms))
            .max_buffered_bytes(usize::try_from(self.max_buffered_bytes).unwrap_or(usize::MAX))
            .output_limit(usize::try_from(self.max_conn_buffered_bytes).unwrap_or(usize::MAX))
            .socket_mode(self.socket_mode);
        for &uid in &self.allow_uids {
            b = b.allow_uid(uid);
        }
        if self.allow_any_uid {
            b = b.allow_any_uid();
        }
        for p in &self.pipes {
            b = b.pipe(p.clone());
        }
        if let Some(n) = self.max_opens {
            b = b.max_opens(n);
        }
        match self.handler {
            HandlerKind::Echo => b.handler(EchoFactory),
            HandlerKind::Dcerpc => {
                b.handler(DceRpcFactory::new(self.reply_size as usize).log_calls(self.log_calls))
            }
            HandlerKind::Srvsvc => {
                b.handler(SrvsvcFactory::new(&self.server_name).log_calls(self.log_calls))
            }
        }
    }
}

/// Usage errors are the ones the arguments alone explain.
fn exit_code_for(e: &ServiceError) -> u8 {
    match e {
        ServiceError::NoPipes
        | ServiceError::BadPipeName { .. }
        | ServiceError::DuplicatePipe(_)
        | ServiceError::NoSuchDir(_)
        | ServiceError::Config(_) => EXIT_USAGE,
        _ => EXIT_FAILURE,
    }
}

/// How start-up ended.
enum Started {
    Up(ServiceHandle),
    Failed(ServiceError),
    /// A stop signal came first; the exit code to return.
    Stopped(ExitCode),
}

/// How long a stop signal during start-up waits for the start to finish
/// (so that its sockets are removed) before the process exits anyway.
const START_ABANDON_AFTER: Duration = Duration::from_secs(2);

/// Starts the service on its own thread while this one keeps taking stop
/// signals: SIGINT/SIGTERM during start-up stops the command at once,
/// whatever the start is doing.
fn start(builder: ServiceBuilder, signals: &BlockedSignals) -> Started {
    start_with(move || builder.start(), |t| signals.wait_timeout(t))
}

/// [`start`] with the start and the signal wait given: `start_service`
/// runs on its own thread (which inherits the blocked signal mask, as the
/// service threads it starts do); `wait_signal(t)` waits up to `t` for a
/// stop signal.
fn start_with(
    start_service: impl FnOnce() -> Result<ServiceHandle, ServiceError> + Send + 'static,
    mut wait_signal: impl FnMut(Duration) -> std::io::Result<Option<libc::c_int>>,
) -> Started {
    let (tx, rx) = mpsc::channel();
    let spawned = std::thread::Builder::new()
        .name("opipe-start".into())
        .spawn(move || {
            let _ = tx.send(start_service());
        });
    if let Err(e) = spawned {
        return Started::Failed(ServiceError::Io {
            what: "spawning the start-up thread".into(),
            err: e,
        });
    }
    loop {
        match rx.try_recv() {
            Ok(Ok(svc)) => return Started::Up(svc),
            Ok(Err(e)) => return Started::Failed(e),
            Err(mpsc::TryRecvError::Disconnected) => {
                return Started::Failed(ServiceError::Io {
                    what: "start-up".into(),
                    err: std::io::Error::other("the start-up thread ended without an answer"),
                })
            }
            Err(mpsc::TryRecvError::Empty) => {}
        }
        match wait_signal(Duration::from_millis(20)) {
            Ok(None) => {}
            Ok(Some(_)) => {
                eprintln!("opipe serve: stop signal during start-up; not serving");
                // A start that ends soon is undone properly (sockets
                // removed); one that does not is abandoned with the process.
                if let Ok(Ok(svc)) = rx.recv_timeout(START_ABANDON_AFTER) {
                    let _ = svc.shutdown();
                    let _ = svc.join();
                }
                return Started::Stopped(ExitCode::SUCCESS);
            }
            Err(e) => {
                eprintln!("opipe serve: waiting for signals: {e}");
                return Started::Stopped(ExitCode::from(EXIT_FAILURE));
            }
        }
    }
}

/// Blocks SIGINT and SIGTERM in the calling thread. Call it before any
/// other thread exists, so that every thread inherits the mask and only
/// the waits on the result take them. On failure, says so on stderr
/// (`opipe <command>: ...`) and gives the exit code.
pub(crate) fn block_stop_signals(command: &str) -> Result<BlockedSignals, ExitCode> {
    BlockedSignals::block(&[libc::SIGINT, libc::SIGTERM]).map_err(|e| {
        eprintln!("opipe {command}: cannot block signals: {e}");
        ExitCode::from(EXIT_FAILURE)
    })
}

/// Serves until a stop signal (`Ok`), or until the server ends by itself
/// (`finished`: a `<what>` thread failed, which shut the server down).
pub(crate) fn wait_for_stop(
    signals: &BlockedSignals,
    finished: impl Fn() -> bool,
    what: &str,
) -> std::io::Result<()> {
    loop {
        match signals.wait_timeout(Duration::from_millis(500)) {
            Ok(Some(_)) => return Ok(()),
            Ok(None) if finished() => {
                return Err(std::io::Error::other(format!("a {what} thread stopped")));
            }
            Ok(None) => {}
            Err(e) => return Err(e),
        }
    }
}

pub fn run(args: ServeArgs) -> ExitCode {
    let signals = match block_stop_signals("serve") {
        Ok(s) => s,
        Err(code) => return code,
    };
    // Thousands of connections need thousands of fds; a failure here only
    // lowers how many can be served.
    let _ = raise_nofile_limit();
    let svc = match start(args.builder(), &signals) {
        Started::Up(s) => s,
        Started::Failed(e) => {
            eprintln!("opipe serve: error: {e}");
            return ExitCode::from(exit_code_for(&e));
        }
        Started::Stopped(code) => return code,
    };
    let names: Vec<String> = svc
        .pipe_names()
        .iter()
        .map(|n| n.as_str().to_owned())
        .collect();
    let handler = match args.handler {
        HandlerKind::Echo => "echo".to_owned(),
        HandlerKind::Dcerpc => format!("dcerpc (reply {} bytes)", args.reply_size),
        HandlerKind::Srvsvc => format!("srvsvc (server {})", args.server_name),
    };
    eprintln!(
        "opipe serve: serving {} with {handler} in {} ({} dialect, {} thread{}, {} backend); SIGINT or SIGTERM stops",
        names.join(", "),
        Dialect::from(args.dialect).socket_dir(&args.dir).display(),
        Dialect::from(args.dialect),
        args.threads,
        if args.threads == 1 { "" } else { "s" },
        svc.backend(),
    );
    let waited = wait_for_stop(&signals, || svc.is_finished(), "service");
    let st = svc.stats();
    eprintln!(
        "opipe serve: stopping: {} accepted, {} opened ({} refused with a status, {} closed \
         without one, {} of them timed out), {} handler errors, {} bytes in, {} bytes out, \
         {} receives that found the buffer ring empty, {} backpressure pauses, {} peers refused \
         (uid not allowed)",
        st.accepted,
        st.handshakes_ok,
        st.handshakes_rejected,
        st.handshakes_closed_silently,
        st.handshake_timeouts,
        st.handler_errors,
        st.bytes_in,
        st.bytes_out,
        st.recv_no_buffers,
        st.backpressure_pauses,
        st.peers_refused,
    );
    let stopped = svc.shutdown().and_then(|()| svc.join());
    // A thread's own error, from join, says more than "a thread stopped".
    match stopped.and(waited) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("opipe serve: error: {e}");
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    /// A signal wait that reports SIGTERM once `after` has passed.
    fn term_after(after: Duration) -> impl FnMut(Duration) -> std::io::Result<Option<i32>> {
        let at = Instant::now() + after;
        move |t| {
            if Instant::now() >= at {
                return Ok(Some(libc::SIGTERM));
            }
            std::thread::sleep(t);
            Ok(None)
        }
    }

    #[test]
    fn stop_signal_during_a_start_that_hangs_ends_it() {
        let t0 = Instant::now();
        let r = start_with(
            || {
                std::thread::sleep(Duration::from_secs(8));
                Err(ServiceError::NoPipes)
            },
            term_after(Duration::from_millis(100)),
        );
        let took = t0.elapsed();
        assert!(matches!(r, Started::Stopped(c) if c == ExitCode::SUCCESS));
        assert!(
            took < START_ABANDON_AFTER + Duration::from_secs(1),
            "{took:?}"
        );
    }

    #[test]
    fn stop_signal_during_a_start_that_then_succeeds_undoes_it() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_owned();
        let r = start_with(
            move || {
                std::thread::sleep(Duration::from_millis(300));
                Service::builder(d)
                    .pipe("srvsvc")
                    .backend(opipe::service::BackendChoice::Epoll)
                    .start()
            },
            term_after(Duration::from_millis(20)),
        );
        assert!(matches!(r, Started::Stopped(c) if c == ExitCode::SUCCESS));
        // Shut down and joined: its socket is gone.
        assert!(!dir.path().join("srvsvc").exists());
    }

    #[test]
    fn start_without_a_signal_serves() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_owned();
        let r = start_with(
            move || {
                Service::builder(d)
                    .pipe("srvsvc")
                    .backend(opipe::service::BackendChoice::Epoll)
                    .start()
            },
            |t| {
                std::thread::sleep(t);
                Ok(None)
            },
        );
        let Started::Up(svc) = r else {
            panic!("the service did not start");
        };
        assert!(dir.path().join("srvsvc").exists());
        svc.shutdown().unwrap();
        svc.join().unwrap();
        let r = start_with(
            || Err(ServiceError::NoPipes),
            |t| {
                std::thread::sleep(t);
                Ok(None)
            },
        );
        assert!(matches!(r, Started::Failed(ServiceError::NoPipes)));
    }

    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        serve: ServeArgs,
    }

    fn builder_of(extra: &[&str]) -> Result<String, clap::Error> {
        let base = ["opipe", "--dir", "/tmp", "--pipe", "srvsvc"];
        let cli = Cli::try_parse_from(base.iter().chain(extra))?;
        Ok(format!("{:?}", cli.serve.builder()))
    }

    #[test]
    fn dialect_reaches_the_service() {
        let b = builder_of(&[]).unwrap();
        assert!(b.contains("dialect: Illumos"), "{b}");
        for extra in [
            &["--dialect", "samba"][..],
            &["--dialect", "samba", "--handler", "srvsvc"],
        ] {
            let b = builder_of(extra).unwrap();
            assert!(b.contains("dialect: Samba"), "{b}");
        }
        assert!(builder_of(&["--dialect", "windows"]).is_err());
    }

    #[test]
    fn memory_limits_reach_the_service() {
        let b = builder_of(&[]).unwrap();
        assert!(b.contains("max_buffered_bytes: 268435456"), "{b}");
        assert!(b.contains("output_high_water_bytes: 262144"), "{b}");
        let b = builder_of(&[
            "--max-buffered-bytes",
            "4194304",
            "--max-conn-buffered-bytes",
            "65536",
        ])
        .unwrap();
        assert!(b.contains("max_buffered_bytes: 4194304"), "{b}");
        assert!(b.contains("output_high_water_bytes: 65536"), "{b}");
        assert!(b.contains("output_low_water_bytes: 16384"), "{b}");
        // Out of range: usage errors.
        assert!(builder_of(&["--max-buffered-bytes", "1000"]).is_err());
        assert!(builder_of(&["--max-conn-buffered-bytes", "0"]).is_err());
    }
}
