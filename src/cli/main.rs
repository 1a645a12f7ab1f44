//! The `opipe` command: a small dispatcher over one file per subcommand.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod bench;
mod serve;

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
    // The help text is BenchArgs' doc comment.
    Bench(bench::BenchArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => serve::run(args),
        Command::Bench(args) => bench::main(args),
    }
}
