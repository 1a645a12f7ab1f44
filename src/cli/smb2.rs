//! `opipe smb2`: an IPC$-only SMB2 server on TCP in front of the pipes,
//! until SIGINT/SIGTERM.
//!
//! Contract (scripts and `opipe bench --smb2` rely on it): once listening,
//! exactly one line `listening on <ip>:<port>` goes to stdout (flushed);
//! everything else goes to stderr; a stop signal ends it cleanly with a
//! one-line summary on stderr.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use crate::args::{BackendArg, DialectArg};
use crate::serve::{block_stop_signals, wait_for_stop};

use opipe::engine::{Engine, EngineConfig};
use opipe::ring::sys::raise_nofile_limit;
use opipe::smb2::front::Smb2Front;

const EXIT_FAILURE: u8 = 1;

#[derive(Debug, Args)]
pub struct Smb2Args {
    /// TCP address to listen on (port 0 picks a free one).
    #[arg(long, value_name = "IP:PORT", default_value = "127.0.0.1:4450")]
    listen: SocketAddr,

    /// The pipe directory: illumos, the sockets themselves; samba, the
    /// directory that holds np/ (samba-dcerpcd's ncalrpc dir).
    #[arg(long, value_name = "DIR")]
    dir: PathBuf,

    /// The pipes' dialect.
    #[arg(long, value_enum, default_value_t = DialectArg::Illumos)]
    dialect: DialectArg,

    /// The NetBIOS name in NTLM challenges.
    #[arg(long, value_name = "NAME", default_value = "OPIPE")]
    server_name: String,

    /// TCP connections open at once at most.
    #[arg(long, value_name = "N", default_value_t = 16384,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    max_connections: u32,

    /// Event loops (and engine rings): io_uring, or epoll where io_uring
    /// is switched off.
    #[arg(long, value_enum, default_value_t = BackendArg::Auto)]
    backend: BackendArg,

    /// Loop threads (the engine gets as many rings).
    #[arg(long, value_name = "N", default_value_t = 1,
          value_parser = clap::value_parser!(u16).range(1..=256))]
    threads: u16,
}

pub fn run(args: Smb2Args) -> ExitCode {
    let signals = match block_stop_signals("smb2") {
        Ok(s) => s,
        Err(code) => return code,
    };
    let _ = raise_nofile_limit();
    let mut ecfg = EngineConfig::new(&args.dir);
    ecfg.dialect = args.dialect.into();
    ecfg.backend = args.backend.into();
    ecfg.rings = usize::from(args.threads);
    let engine = match Engine::new(ecfg) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("opipe smb2: error: engine: {e}");
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    let front = Smb2Front::builder(engine)
        .listen(args.listen)
        .threads(usize::from(args.threads))
        .max_connections(args.max_connections as usize)
        .backend(args.backend.into())
        .server_name(args.server_name.clone())
        .start();
    let front = match front {
        Ok(f) => f,
        Err(e) => {
            eprintln!("opipe smb2: error: {}: {e}", args.listen);
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "listening on {}", front.local_addr());
        let _ = out.flush();
    }
    eprintln!(
        "opipe smb2: IPC$ in front of {} ({} dialect, {} thread{}, {} backend); SIGINT or SIGTERM stops",
        args.dir.display(),
        opipe::protocol::Dialect::from(args.dialect),
        args.threads,
        if args.threads == 1 { "" } else { "s" },
        front.backend(),
    );
    let waited = wait_for_stop(&signals, || front.is_finished(), "front");
    let stopped = front.shutdown();
    let st = front.stats();
    let joined = front.join();
    eprintln!(
        "opipe smb2: stopped: {} connections ({} refused), {} sessions, {} opens, {} calls \
         ({} failed), {} connection errors, {} login timeouts",
        st.connections,
        st.refused,
        st.sessions,
        st.opens,
        st.calls,
        st.failed_calls,
        st.errors,
        st.login_timeouts
    );
    match stopped.and(joined).and(waited) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("opipe smb2: error: {e}");
            ExitCode::from(EXIT_FAILURE)
        }
    }
}
