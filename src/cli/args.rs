//! Argument types shared by the subcommands (`--backend`, `--dialect`),
//! each with its conversion to the library's type.

use opipe::engine::BackendChoice;
use opipe::protocol::Dialect;

/// `--backend` values (`opipe serve`, `opipe call`, `opipe wait`, `opipe bench`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BackendArg {
    /// io_uring where the kernel grants it, else epoll (said once on stderr).
    Auto,
    /// io_uring only: fail where it is refused.
    IoUring,
    /// The epoll fallback (same semantics, plain buffers).
    Epoll,
}

impl From<BackendArg> for BackendChoice {
    fn from(b: BackendArg) -> BackendChoice {
        match b {
            BackendArg::Auto => BackendChoice::Auto,
            BackendArg::IoUring => BackendChoice::IoUring,
            BackendArg::Epoll => BackendChoice::Epoll,
        }
    }
}

/// `--dialect` values (`opipe serve`, `opipe call`, `opipe wait`,
/// `opipe bench`, `opipe soak`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DialectArg {
    /// illumos smbd's: XDR netuserinfo handshake, byte stream, `<dir>/<name>`.
    Illumos,
    /// Samba's: named-pipe-auth handshake, u16-framed messages,
    /// `<dir>/np/<name>` (a real smbd: `external_rpc_pipe:socket_dir = <dir>`).
    Samba,
}

impl From<DialectArg> for Dialect {
    fn from(d: DialectArg) -> Dialect {
        match d {
            DialectArg::Illumos => Dialect::Illumos,
            DialectArg::Samba => Dialect::Samba,
        }
    }
}
