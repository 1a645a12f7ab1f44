//! `samba-dcerpcd`, Samba's RPC server, standalone as a pipe service
//! (`--target samba-rpcd`): started in a private temporary directory with
//! its own `smb.conf` ([`conf`](super::conf); `rpc start on demand helpers
//! = no`), in its own process group (it starts one `rpcd_*` worker per
//! interface, which join the group), its pipes in `<ncalrpc dir>/np/`. Its
//! srvsvc answers NetrServerGetInfo with its NetBIOS name, the server name
//! it is started with. Stopped by its pid and group (SIGTERM, then SIGKILL
//! to what is left of the group), its dir removed, when [`Rpcd`] drops, or
//! by the bench's [`Cleanup`] on a signal.

use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use opipe::protocol::Dialect;

use super::conf;
use crate::bench::daemon::{private_dir, Cleanup, Daemon};

/// Where Debian's `samba` package installs it.
pub const SAMBA_DCERPCD: &str = "/usr/libexec/samba/samba-dcerpcd";
/// The pipe the benches open.
pub const PIPE: &str = "srvsvc";
/// How long it may take to create `np/srvsvc`.
const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// Its logs, for error messages.
const LOGS: &[&str] = &["stderr.log", "samba.log"];

/// A running samba-dcerpcd.
#[derive(Debug)]
pub struct Rpcd {
    daemon: Daemon,
    server_name: String,
}

impl Rpcd {
    /// Starts it with `netbios name = <server_name>` and waits (bounded)
    /// until `np/srvsvc` accepts. A missing binary or a start-up failure
    /// is an error that says why (with Samba's logs).
    pub fn start(server_name: &str, cleanup: &Cleanup) -> Result<Rpcd, String> {
        if !Path::new(SAMBA_DCERPCD).exists() {
            return Err(format!(
                "--target samba-rpcd needs Samba's RPC server, and {SAMBA_DCERPCD} does not \
                 exist (Debian: apt-get install --no-install-recommends samba)"
            ));
        }
        let dir = private_dir("opipe-samba").map_err(|e| format!("temporary directory: {e}"))?;
        let stderr = conf::prepare(&dir, || conf::samba_global(&dir, server_name, "samba.log"))
            .map_err(|e| format!("samba-dcerpcd's smb.conf: {e}"))?;
        let mut cmd = Command::new(SAMBA_DCERPCD);
        cmd.args(["-F", "--no-process-group", "--libexec-rpcds", "-s"])
            .arg(dir.join("smb.conf"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr);
        let daemon = Daemon::spawn(cmd, "samba-dcerpcd", LOGS, dir, cleanup)
            .map_err(|e| format!("starting {SAMBA_DCERPCD}: {e}"))?;
        let mut rpcd = Rpcd {
            daemon,
            server_name: server_name.to_owned(),
        };
        let socket = Dialect::Samba.socket_dir(&rpcd.ncalrpc_dir()).join(PIPE);
        rpcd.daemon
            .wait_until(
                &format!("accepting on {}", socket.display()),
                READY_TIMEOUT,
                || UnixStream::connect(&socket).is_ok(),
            )
            .map_err(|e| e.to_string())?;
        Ok(rpcd)
    }

    /// The `ncalrpc dir`: the directory whose `np/` holds its pipes.
    pub fn ncalrpc_dir(&self) -> PathBuf {
        self.daemon.dir().join("ncalrpc")
    }

    /// The configured server name (`netbios name`).
    pub fn server_name(&self) -> &str {
        &self.server_name
    }

    /// Its pid, also its process group's id (samba-dcerpcd and its
    /// `rpcd_*` workers).
    pub fn pgid(&self) -> u32 {
        self.daemon.pgid()
    }

    /// Fails, with its logs, if it has exited.
    pub fn check_alive(&mut self) -> Result<(), String> {
        self.daemon.check_alive()
    }
}
