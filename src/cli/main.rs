//! The `opipe` command.

mod bench;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// io_uring transport for SMB named pipes (illumos smb_opipe compatible).
#[derive(Debug, Parser)]
#[command(name = "opipe", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    // The help text is BenchArgs' doc comment.
    Bench(bench::BenchArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Bench(args) => bench::main(args),
    }
}
