//! `--target samba-rpcd`: Samba's own RPC server, `samba-dcerpcd`
//! standalone, as the pipe service behind both SMB servers. It runs from
//! a private temporary directory in its own process group (it starts one
//! `rpcd_*` worker per interface, which join the group), its pipes in
//! `<ncalrpc dir>/np/`. Its srvsvc answers NetrServerGetInfo with its
//! NetBIOS name, [`NETBIOS_NAME`].

use std::fs;
use std::io;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::daemon::{private_dir, Cleanup, Daemon};
use super::smbd::samba_global;

/// Where Debian's `samba` package installs it.
pub const SAMBA_DCERPCD: &str = "/usr/libexec/samba/samba-dcerpcd";
/// Its NetBIOS name: what srvsvc reports.
pub const NETBIOS_NAME: &str = "OPIPERPCD";
/// How long it may take to create `np/srvsvc`.
const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// Its logs, for error messages.
const LOGS: [&str; 2] = ["stderr.log", "rpcd.log"];

/// Whether samba-dcerpcd is installed.
pub fn installed() -> bool {
    Path::new(SAMBA_DCERPCD).exists()
}

/// A running samba-dcerpcd.
#[derive(Debug)]
pub struct Rpcd {
    daemon: Daemon,
    ncalrpc: PathBuf,
}

impl Rpcd {
    /// Starts it and waits (bounded) until `np/srvsvc` accepts.
    pub fn start(cleanup: &Cleanup) -> io::Result<Rpcd> {
        let dir = private_dir("opipe-bench-rpcd")?;
        let prepare = || -> io::Result<fs::File> {
            fs::write(
                dir.join("smb.conf"),
                samba_global(&dir, NETBIOS_NAME, "rpcd.log")?,
            )?;
            fs::File::create(dir.join("stderr.log"))
        };
        let stderr = match prepare() {
            Ok(f) => f,
            Err(e) => {
                let _ = fs::remove_dir_all(&dir);
                return Err(e);
            }
        };
        let mut cmd = Command::new(SAMBA_DCERPCD);
        cmd.args(["-F", "--no-process-group", "--libexec-rpcds", "-s"])
            .arg(dir.join("smb.conf"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr);
        let ncalrpc = dir.join("ncalrpc");
        let mut rpcd = Rpcd {
            daemon: Daemon::spawn(cmd, dir, cleanup)?,
            ncalrpc,
        };
        let socket = rpcd.ncalrpc.join("np").join("srvsvc");
        let begin = Instant::now();
        while UnixStream::connect(&socket).is_err() {
            if let Some(status) = rpcd.daemon.exited() {
                return Err(io::Error::other(format!(
                    "samba-dcerpcd exited ({status}) before {} appeared{}",
                    socket.display(),
                    rpcd.daemon.log_tail(&LOGS)
                )));
            }
            if begin.elapsed() > READY_TIMEOUT {
                return Err(io::Error::other(format!(
                    "{} did not appear within {READY_TIMEOUT:?}{}",
                    socket.display(),
                    rpcd.daemon.log_tail(&LOGS)
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(rpcd)
    }

    /// The directory whose `np/` holds its pipes (its `ncalrpc dir`).
    pub fn dir(&self) -> &Path {
        &self.ncalrpc
    }

    /// Its process group (samba-dcerpcd and its rpcd_* workers).
    pub fn pgid(&self) -> u32 {
        self.daemon.pgid()
    }

    /// Fails, with its log, if it has exited.
    pub fn check_alive(&mut self) -> Result<(), String> {
        match self.daemon.exited() {
            None => Ok(()),
            Some(status) => Err(format!(
                "samba-dcerpcd exited ({status}){}",
                self.daemon.log_tail(&LOGS)
            )),
        }
    }
}
