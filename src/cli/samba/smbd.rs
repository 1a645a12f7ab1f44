//! A real Samba `smbd`, the SMB server `opipe bench --smb2` measures
//! `opipe smb2` against: Debian's `/usr/sbin/smbd` on a free loopback
//! port, from a private temporary directory holding its `smb.conf`
//! ([`conf`](super::conf)) and every file it writes, in its own process
//! group (it forks one child per connection), its named pipes pointed at
//! the bench's pipe service with `external_rpc_pipe:socket_dir` (the
//! recipe of Samba's notes in the project's shared facts, SAMBA.md).

use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use super::conf;
use crate::bench::daemon::{private_dir, Cleanup, Daemon};

/// Where Debian's `samba` package installs the SMB server.
pub const SMBD: &str = "/usr/sbin/smbd";
/// Its NetBIOS name.
const NETBIOS_NAME: &str = "OPIPEBENCH";
/// How long smbd may take to listen.
const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// Its logs, for error messages.
const LOGS: &[&str] = &["stderr.log", "smbd.log"];

/// Whether smbd is installed.
pub fn installed() -> bool {
    Path::new(SMBD).exists()
}

/// A running smbd.
#[derive(Debug)]
pub struct Smbd {
    /// Its guard (liveness, logs, the stop).
    pub daemon: Daemon,
    /// Where it listens.
    pub addr: SocketAddr,
}

/// A TCP port free on 127.0.0.1 right now.
fn free_port() -> io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl Smbd {
    /// Starts smbd in front of the pipe service in `pipe_dir` (its
    /// sockets in `<pipe_dir>/np/`) and waits (bounded) until it accepts.
    pub fn start(pipe_dir: &Path, cleanup: &Cleanup) -> io::Result<Smbd> {
        let dir = private_dir("opipe-bench-smbd")?;
        let mut port = 0;
        let stderr = conf::prepare(&dir, || {
            port = free_port()?;
            Ok(format!(
                "{}smb ports = {port}\nexternal_rpc_pipe:socket_dir = {}\n",
                conf::samba_global(&dir, NETBIOS_NAME, "smbd.log")?,
                pipe_dir.display()
            ))
        })?;
        let mut cmd = Command::new(SMBD);
        cmd.args(["--foreground", "--no-process-group", "-s"])
            .arg(dir.join("smb.conf"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr);
        let daemon = Daemon::spawn(cmd, "smbd", LOGS, dir, cleanup)?;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let mut smbd = Smbd { daemon, addr };
        smbd.daemon
            .wait_until(&format!("listening on {addr}"), READY_TIMEOUT, || {
                TcpStream::connect(addr).is_ok()
            })?;
        Ok(smbd)
    }

    /// Its process group (every smbd process of it).
    pub fn pgid(&self) -> u32 {
        self.daemon.pgid()
    }
}
