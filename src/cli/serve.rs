//! `opipe serve`: a pipe service on `DIR/NAME` sockets until SIGINT/SIGTERM.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, ValueEnum};

use crate::call::BackendArg;

use opipe::ring::server::DEFAULT_MAX_BUFFERED_BYTES;
use opipe::ring::sys::{raise_nofile_limit, BlockedSignals};
use opipe::service::{DceRpcFactory, EchoFactory, Service, ServiceBuilder, ServiceError};

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
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Directory for the pipe sockets (must exist).
    #[arg(long, value_name = "DIR")]
    dir: PathBuf,

    /// A pipe name to serve, e.g. srvsvc (repeat for more).
    #[arg(long = "pipe", value_name = "NAME", required = true)]
    pipes: Vec<String>,

    /// What answers on an open pipe.
    #[arg(long, value_enum, default_value_t = HandlerKind::Echo)]
    handler: HandlerKind,

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
}

impl ServeArgs {
    fn builder(&self) -> ServiceBuilder {
        let mut b = Service::builder(&self.dir)
            .deny_anonymous(self.deny_anonymous)
            .threads(usize::from(self.threads))
            .backend(self.backend.into())
            .handshake_timeout(Duration::from_millis(self.handshake_timeout_ms))
            .max_buffered_bytes(usize::try_from(self.max_buffered_bytes).unwrap_or(usize::MAX))
            .output_limit(usize::try_from(self.max_conn_buffered_bytes).unwrap_or(usize::MAX));
        for p in &self.pipes {
            b = b.pipe(p.clone());
        }
        if let Some(n) = self.max_opens {
            b = b.max_opens(n);
        }
        match self.handler {
            HandlerKind::Echo => b.handler(EchoFactory),
            HandlerKind::Dcerpc => b.handler(DceRpcFactory::new(self.reply_size as usize)),
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

pub fn run(args: ServeArgs) -> ExitCode {
    // Block the stop signals before any thread exists, so that every
    // service thread inherits the mask and only sigwait below takes them.
    let signals = match BlockedSignals::block(&[libc::SIGINT, libc::SIGTERM]) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("opipe serve: cannot block signals: {e}");
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    // Thousands of connections need thousands of fds; a failure here only
    // lowers how many can be served.
    let _ = raise_nofile_limit();
    let svc = match args.builder().start() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("opipe serve: error: {e}");
            return ExitCode::from(exit_code_for(&e));
        }
    };
    let names: Vec<String> = svc
        .pipe_names()
        .iter()
        .map(|n| n.as_str().to_owned())
        .collect();
    let handler = match args.handler {
        HandlerKind::Echo => "echo".to_owned(),
        HandlerKind::Dcerpc => format!("dcerpc (reply {} bytes)", args.reply_size),
    };
    eprintln!(
        "opipe serve: serving {} with {handler} in {} ({} thread{}, {} backend); SIGINT or SIGTERM stops",
        names.join(", "),
        args.dir.display(),
        args.threads,
        if args.threads == 1 { "" } else { "s" },
        svc.backend(),
    );
    // Serve until a stop signal, or until the service ends by itself
    // (a service thread failed: it shut the service down).
    let waited = loop {
        match signals.wait_timeout(Duration::from_millis(500)) {
            Ok(Some(_)) => break Ok(()),
            Ok(None) if svc.is_finished() => {
                break Err(std::io::Error::other("a service thread stopped"));
            }
            Ok(None) => {}
            Err(e) => break Err(e),
        }
    };
    let st = svc.stats();
    eprintln!(
        "opipe serve: stopping: {} accepted, {} opened ({} refused with a status, {} closed \
         without one, {} of them timed out), {} handler errors, {} bytes in, {} bytes out, \
         {} receives that found the buffer ring empty, {} backpressure pauses",
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
