//! The `opipe` command: a small dispatcher over one file per subcommand.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod args;
mod bench;
mod call;
mod samba;
mod serve;
mod serve_child;
mod smb2;
mod soak;

/// io_uring transport for SMB named pipes (illumos smb_opipe compatible).
#[derive(Debug, Parser)]
#[command(name = "opipe", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve pipes on AF_UNIX sockets in a directory, like illumos smbd.
    Serve(serve::ServeArgs),
    /// Open a pipe through the io_uring engine and run steps on it; prints JSON.
    Call(call::CallArgs),
    /// FSCTL_PIPE_WAIT: wait until a pipe's listener accepts; prints JSON.
    Wait(call::WaitArgs),
    // The help text is BenchArgs' doc comment.
    Bench(bench::BenchArgs),
    /// A long fault-laden run against a restarted echo service; prints counts.
    Soak(soak::SoakArgs),
    /// An IPC$-only SMB2 server on TCP in front of the pipes (real SMB
    /// clients reach them); prints `listening on IP:PORT`.
    Smb2(smb2::Smb2Args),
}

/// Library diagnostics (tracing events) go to stderr as plain lines, at the
/// level `OPIPE_LOG` names (error, warn, info, debug, trace; default info).
fn install_log() {
    let level = std::env::var("OPIPE_LOG")
        .ok()
        .and_then(|v| v.parse::<tracing::Level>().ok())
        .unwrap_or(tracing::Level::INFO);
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(level)
        .without_time()
        .with_target(false)
        .with_level(false)
        .with_ansi(false)
        .try_init();
}

fn main() -> ExitCode {
    install_log();
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => serve::run(args),
        Command::Call(args) => call::run(args),
        Command::Wait(args) => call::run_wait(args),
        Command::Bench(args) => bench::main(args),
        Command::Soak(args) => soak::run(args),
        Command::Smb2(args) => smb2::run(args),
    }
}
