//! A real Samba `smbd` for the bench, the SMB server to beat: Debian's
//! `/usr/sbin/smbd` on a free loopback port, from a private temporary
//! directory holding its `smb.conf` and every file it writes, in its own
//! process group (it forks one child per connection), its named pipes
//! pointed at the bench's pipe service with `external_rpc_pipe:socket_dir`
//! (the recipe of Samba's notes in the project's shared facts, SAMBA.md).

use std::fs;
use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::daemon::{private_dir, Cleanup, Daemon};

/// Where Debian's `samba` package installs the SMB server.
pub const SMBD: &str = "/usr/sbin/smbd";
/// How long smbd may take to listen.
const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// Its logs, for error messages.
const LOGS: [&str; 2] = ["stderr.log", "smbd.log"];

/// Whether smbd is installed.
pub fn installed() -> bool {
    Path::new(SMBD).exists()
}

/// A running smbd.
#[derive(Debug)]
pub struct Smbd {
    daemon: Daemon,
    /// Where it listens.
    pub addr: SocketAddr,
}

/// A TCP port free on 127.0.0.1 right now.
fn free_port() -> io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// The `[global]` section of a Samba daemon that lives wholly in `root`
/// (every state path under it, its directories made), named
/// `netbios_name`: loopback only, no printers or NetBIOS, guest mapping
/// for anonymous logins, RPC helpers not started on demand, logging at
/// level 0 into `root/<log>` (the bench measures the daemon, not its
/// logger). Shared by smbd and samba-dcerpcd.
pub fn samba_global(root: &Path, netbios_name: &str, log: &str) -> io::Result<String> {
    for sub in [
        "lock", "state", "cache", "private", "bind-dns", "pid", "ncalrpc",
    ] {
        fs::create_dir_all(root.join(sub))?;
    }
    let p = |sub: &str| root.join(sub).display().to_string();
    Ok(format!(
        "[global]\n\
         netbios name = {netbios_name}\n\
         workgroup = OPIPEBENCH\n\
         server role = standalone server\n\
         lock directory = {lock}\n\
         state directory = {state}\n\
         cache directory = {cache}\n\
         private dir = {private}\n\
         binddns dir = {binddns}\n\
         pid directory = {pid}\n\
         ncalrpc dir = {ncalrpc}\n\
         log file = {log}\n\
         log level = 0\n\
         passdb backend = tdbsam:{passdb}\n\
         interfaces = lo\n\
         bind interfaces only = yes\n\
         disable netbios = yes\n\
         load printers = no\n\
         disable spoolss = yes\n\
         map to guest = Bad User\n\
         rpc start on demand helpers = no\n",
        lock = p("lock"),
        state = p("state"),
        cache = p("cache"),
        private = p("private"),
        binddns = p("bind-dns"),
        pid = p("pid"),
        ncalrpc = p("ncalrpc"),
        log = p(log),
        passdb = root.join("private/passdb.tdb").display(),
    ))
}

impl Smbd {
    /// Starts smbd in front of the pipe service in `pipe_dir` (its
    /// sockets in `<pipe_dir>/np/`) and waits (bounded) until it accepts.
    pub fn start(pipe_dir: &Path, cleanup: &Cleanup) -> io::Result<Smbd> {
        let dir = private_dir("opipe-bench-smbd")?;
        let prepare = || -> io::Result<(u16, fs::File)> {
            let port = free_port()?;
            let conf = format!(
                "{}smb ports = {port}\nexternal_rpc_pipe:socket_dir = {}\n",
                samba_global(&dir, "OPIPEBENCH", "smbd.log")?,
                pipe_dir.display()
            );
            fs::write(dir.join("smb.conf"), conf)?;
            Ok((port, fs::File::create(dir.join("stderr.log"))?))
        };
        let (port, stderr) = match prepare() {
            Ok(x) => x,
            Err(e) => {
                let _ = fs::remove_dir_all(&dir);
                return Err(e);
            }
        };
        let mut cmd = Command::new(SMBD);
        cmd.args(["--foreground", "--no-process-group", "-s"])
            .arg(dir.join("smb.conf"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr);
        let daemon = Daemon::spawn(cmd, dir, cleanup)?;
        let mut smbd = Smbd {
            daemon,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
        };
        smbd.wait_listening()?;
        Ok(smbd)
    }

    fn wait_listening(&mut self) -> io::Result<()> {
        let begin = Instant::now();
        loop {
            if TcpStream::connect(self.addr).is_ok() {
                return Ok(());
            }
            if let Some(status) = self.daemon.exited() {
                return Err(io::Error::other(format!(
                    "smbd exited ({status}) before listening{}",
                    self.daemon.log_tail(&LOGS)
                )));
            }
            if begin.elapsed() > READY_TIMEOUT {
                return Err(io::Error::other(format!(
                    "smbd did not listen on {} within {READY_TIMEOUT:?}{}",
                    self.addr,
                    self.daemon.log_tail(&LOGS)
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Its process group (every smbd process of it).
    pub fn pgid(&self) -> u32 {
        self.daemon.pgid()
    }

    /// Fails, with its log, if the parent smbd has exited.
    pub fn check_alive(&mut self) -> Result<(), String> {
        match self.daemon.exited() {
            None => Ok(()),
            Some(status) => Err(format!(
                "smbd exited ({status}){}",
                self.daemon.log_tail(&LOGS)
            )),
        }
    }

    /// The end of its logs.
    pub fn log_tail(&self) -> String {
        self.daemon.log_tail(&LOGS)
    }
}
