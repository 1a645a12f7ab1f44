//! A pipe's dialect: which handshake opens it, how its bytes are framed
//! after the open, and where its socket lives.
//!
//! * [`Dialect::Illumos`] (the default): the illumos smbd handshake
//!   (`PROTOCOL.md` section 2: 8-byte header, XDR netuserinfo, 4-byte
//!   status), then a plain byte stream; the socket is `<dir>/<name>`.
//! * [`Dialect::Samba`]: Samba's named-pipe-auth handshake ([`super::npa`]:
//!   `NPAM` request with an NDR session info, 36-byte reply), then message
//!   mode, every message in either direction behind a `u16` little-endian
//!   length; the socket is `<dir>/np/<lower-case name>`, where smbd looks
//!   for it (`external_rpc_pipe:socket_dir = <dir>`).
//!
//! The engine and the service treat everything else the same.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use super::name::PipeName;

/// The sub-directory of a socket dir that holds Samba-dialect sockets.
pub const SAMBA_NP_DIR: &str = "np";

/// A pipe's dialect: its handshake, its framing and its socket path.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Dialect {
    /// illumos smbd's: XDR netuserinfo handshake, byte stream, `<dir>/<name>`.
    #[default]
    Illumos,
    /// Samba's: NPA handshake, `u16`-framed messages, `<dir>/np/<name>`.
    Samba,
}

impl Dialect {
    /// The directory that holds this dialect's sockets under `dir`:
    /// `dir` itself, or `dir/np`.
    pub fn socket_dir(self, dir: &Path) -> PathBuf {
        match self {
            Dialect::Illumos => dir.to_owned(),
            Dialect::Samba => dir.join(SAMBA_NP_DIR),
        }
    }

    /// The socket path of `pipe` under `dir` (pipe names are lower case).
    pub fn socket_path(self, dir: &Path, pipe: &PipeName) -> PathBuf {
        self.socket_dir(dir).join(pipe.as_str())
    }

    /// True when the pipe carries messages (`u16` length prefixes) rather
    /// than a byte stream.
    pub fn is_message_mode(self) -> bool {
        self == Dialect::Samba
    }

    /// The name used on the command line and in logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Dialect::Illumos => "illumos",
            Dialect::Samba => "samba",
        }
    }
}

impl fmt::Display for Dialect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An unknown dialect name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnknownDialect(pub String);

impl fmt::Display for UnknownDialect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unknown dialect {:?} (illumos or samba)", self.0)
    }
}

impl std::error::Error for UnknownDialect {}

impl FromStr for Dialect {
    type Err = UnknownDialect;

    fn from_str(s: &str) -> Result<Dialect, UnknownDialect> {
        match s.to_ascii_lowercase().as_str() {
            "illumos" => Ok(Dialect::Illumos),
            "samba" => Ok(Dialect::Samba),
            _ => Err(UnknownDialect(s.to_owned())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_per_dialect() {
        let name = PipeName::parse("\\PIPE\\SrvSvc").unwrap();
        let dir = Path::new("/run/x");
        assert_eq!(
            Dialect::Illumos.socket_path(dir, &name),
            Path::new("/run/x/srvsvc")
        );
        assert_eq!(
            Dialect::Samba.socket_path(dir, &name),
            Path::new("/run/x/np/srvsvc")
        );
        assert_eq!(Dialect::default(), Dialect::Illumos);
        assert!(Dialect::Samba.is_message_mode() && !Dialect::Illumos.is_message_mode());
    }

    #[test]
    fn names_parse_and_print() {
        for d in [Dialect::Illumos, Dialect::Samba] {
            assert_eq!(d.to_string().parse::<Dialect>(), Ok(d));
        }
        assert_eq!("SAMBA".parse::<Dialect>(), Ok(Dialect::Samba));
        assert!("windows".parse::<Dialect>().is_err());
    }
}
