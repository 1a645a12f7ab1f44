//! A real SMB server for tests: Debian's `smbd` on a free loopback port,
//! from a temp dir with its own `smb.conf` (the recipe in
//! `/work/shared/SAMBA.md`), its named pipes pointed at a pipe service
//! with `external_rpc_pipe:socket_dir`, in its own process group, stopped
//! by that group's id on drop. And the real clients, run with a time bound.

use std::fs;
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Where Debian's `samba` package installs the SMB server.
pub const SMBD: &str = "/usr/sbin/smbd";
/// The clients (Debian's `smbclient` package).
pub const RPCCLIENT: &str = "/usr/bin/rpcclient";
/// See [`RPCCLIENT`].
pub const SMBCLIENT: &str = "/usr/bin/smbclient";

/// How long smbd may take to listen, and a client to finish.
pub const SMBD_TIMEOUT: Duration = Duration::from_secs(20);

/// Prints the loud skip notice and returns `false` when smbd or the
/// clients are missing.
pub fn require_smbd(test: &str) -> bool {
    let missing: Vec<&str> = [SMBD, RPCCLIENT, SMBCLIENT]
        .into_iter()
        .filter(|p| !Path::new(p).exists())
        .collect();
    if missing.is_empty() {
        return true;
    }
    eprintln!(
        "SKIPPED: samba not installed ({} missing); {test} did not run. Install: \
         apt-get install --no-install-recommends samba smbclient samba-common-bin",
        missing.join(", ")
    );
    false
}

/// A running `smbd`.
pub struct Smbd {
    child: Child,
    /// The temp dir that holds every file smbd writes.
    pub dir: tempfile::TempDir,
    /// The `smb.conf`.
    pub conf: PathBuf,
    /// The loopback TCP port it listens on.
    pub port: u16,
}

/// A TCP port free on 127.0.0.1 right now.
fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
    l.local_addr().expect("local addr").port()
}

impl Smbd {
    /// Starts `smbd` (`netbios name = <netbios_name>`, guest allowed, one
    /// read-only share `tmp`) whose pipes go to sockets under
    /// `<pipe_dir>/np/`, and waits (bounded) until it accepts on its port.
    /// `None`, after a loud SKIPPED line, when Samba is not installed; a
    /// start-up failure panics with smbd's log.
    pub fn start(netbios_name: &str, pipe_dir: &Path) -> Option<Smbd> {
        if !require_smbd("this smbd test") {
            return None;
        }
        let dir = tempfile::Builder::new()
            .prefix("opipe-smbd")
            .tempdir()
            .expect("temp dir");
        let root = dir.path();
        fs::create_dir_all(root.join("share")).expect("smbd share dir");
        let port = free_port();
        let conf = root.join("smb.conf");
        let text = format!(
            "{}smb ports = {port}\n\
             external_rpc_pipe:socket_dir = {pipes}\n\
             \n\
             [tmp]\n\
             path = {share}\n\
             read only = yes\n\
             guest ok = yes\n",
            super::samba::global_conf(root, netbios_name, "smbd.log"),
            pipes = pipe_dir.display(),
            share = root.join("share").display(),
        );
        fs::write(&conf, text).expect("write smb.conf");
        // The per-client smbd children join its group.
        let child =
            super::samba::spawn_daemon(SMBD, &["--foreground", "--no-process-group", "-s"], &conf);
        let mut smbd = Smbd {
            child,
            dir,
            conf,
            port,
        };
        smbd.wait_listening(SMBD_TIMEOUT);
        Some(smbd)
    }

    /// smbd's logs so far (for failure messages).
    pub fn logs(&self) -> String {
        super::samba::daemon_logs(self.dir.path(), "smbd.log")
    }

    fn wait_listening(&mut self, timeout: Duration) {
        let port = self.port;
        let dir = self.dir.path().to_owned();
        super::samba::wait_ready(
            &mut self.child,
            &format!("smbd listening on port {port}"),
            timeout,
            || super::samba::daemon_logs(&dir, "smbd.log"),
            || TcpStream::connect(("127.0.0.1", port)).is_ok(),
        );
    }

    /// `rpcclient -U% -p PORT 127.0.0.1 -c <command>` (anonymous).
    pub fn rpcclient(&self, command: &str) -> Output {
        run_bounded(
            Command::new(RPCCLIENT).args([
                "-U%",
                "-p",
                &self.port.to_string(),
                "127.0.0.1",
                "-c",
                command,
            ]),
            SMBD_TIMEOUT,
        )
    }

    /// `smbclient -L //127.0.0.1 -p PORT -N` (guest).
    pub fn smbclient_list(&self) -> Output {
        run_bounded(
            Command::new(SMBCLIENT).args(["-L", "//127.0.0.1", "-p", &self.port.to_string(), "-N"]),
            SMBD_TIMEOUT,
        )
    }
}

impl Drop for Smbd {
    fn drop(&mut self) {
        // The parent smbd first, then its per-client children.
        super::samba::stop_group(&mut self.child);
    }
}

/// Runs `cmd` in its own process group with stdout and stderr captured;
/// kills the group and fails the test after `limit`.
pub fn run_bounded(cmd: &mut Command, limit: Duration) -> Output {
    let dir = tempfile::tempdir().expect("temp dir");
    let (out_path, err_path) = (dir.path().join("out"), dir.path().join("err"));
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(fs::File::create(&out_path).expect("stdout file"))
        .stderr(fs::File::create(&err_path).expect("stderr file"))
        .process_group(0)
        .spawn()
        .expect("spawn a samba client");
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(st) = child.try_wait().expect("wait") {
            break st;
        }
        if Instant::now() > deadline {
            let pid = child.id() as i32;
            // SAFETY: kill(2) on our own child's process group.
            unsafe {
                libc::kill(-pid, libc::SIGKILL);
            }
            let _ = child.wait();
            panic!("{cmd:?} did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    Output {
        status,
        stdout: fs::read(&out_path).unwrap_or_default(),
        stderr: fs::read(&err_path).unwrap_or_default(),
    }
}
