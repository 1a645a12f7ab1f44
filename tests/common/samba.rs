//! A real Samba RPC server for tests: `samba-dcerpcd` standalone in a temp
//! dir with its own `smb.conf` (the recipe in `/work/shared/SAMBA.md`), in
//! its own process group, stopped by that group's id on drop.
//!
//! ```ignore
//! let Some(rpcd) = SambaRpcd::start("TESTSRV") else { return }; // skipped, loudly
//! let sock = UnixStream::connect(rpcd.pipe_path("srvsvc"))?;
//! ```

use std::fs;
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Where Debian's `samba` package installs the RPC server.
pub const SAMBA_DCERPCD: &str = "/usr/libexec/samba/samba-dcerpcd";

/// How long start-up may take before the test fails.
pub const START_TIMEOUT: Duration = Duration::from_secs(20);

/// Whether `samba-dcerpcd` is installed.
pub fn samba_installed() -> bool {
    Path::new(SAMBA_DCERPCD).exists()
}

/// Prints the loud skip notice and returns `false` when Samba is missing.
pub fn require_samba(test: &str) -> bool {
    if samba_installed() {
        return true;
    }
    eprintln!(
        "SKIPPED: samba not installed ({SAMBA_DCERPCD} missing); {test} did not run. \
         Install: apt-get install --no-install-recommends samba smbclient python3-samba \
         samba-common-bin"
    );
    false
}

/// A running `samba-dcerpcd`.
pub struct SambaRpcd {
    child: Child,
    /// The temp dir that holds every file Samba writes.
    pub dir: tempfile::TempDir,
    /// The `ncalrpc dir`: its `np/` holds the pipe sockets.
    pub ncalrpc_dir: PathBuf,
}

impl SambaRpcd {
    /// Starts `samba-dcerpcd` with `netbios name = <netbios_name>` and waits
    /// (bounded) for `np/srvsvc`. `None`, after a loud SKIPPED line, when
    /// Samba is not installed; a start-up failure panics with Samba's log.
    pub fn start(netbios_name: &str) -> Option<SambaRpcd> {
        if !require_samba("this Samba test") {
            return None;
        }
        let dir = tempfile::Builder::new()
            .prefix("opipe-samba")
            .tempdir()
            .expect("temp dir");
        let root = dir.path();
        let ncalrpc_dir = root.join("ncalrpc");
        let conf = root.join("smb.conf");
        let text = format!(
            "{}\n[tmp]\npath = {}\nread only = yes\nguest ok = yes\n",
            global_conf(root, netbios_name, "samba.log"),
            root.display()
        );
        fs::write(&conf, text).expect("write smb.conf");
        // The rpcd_* workers it starts join its group.
        let child = spawn_daemon(
            SAMBA_DCERPCD,
            &["-F", "--no-process-group", "--libexec-rpcds", "-s"],
            &conf,
        );
        let mut rpcd = SambaRpcd {
            child,
            dir,
            ncalrpc_dir,
        };
        rpcd.wait_for_pipe("srvsvc", START_TIMEOUT);
        Some(rpcd)
    }

    /// `<ncalrpc dir>/np/<name>`.
    pub fn pipe_path(&self, name: &str) -> PathBuf {
        self.ncalrpc_dir.join("np").join(name.to_ascii_lowercase())
    }

    /// The process id of `samba-dcerpcd` (also its process group id).
    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Samba's logs so far (for failure messages).
    pub fn logs(&self) -> String {
        daemon_logs(self.dir.path(), "samba.log")
    }

    /// Waits until `np/<name>` accepts a connection; panics with the logs
    /// after `timeout` or if `samba-dcerpcd` exits.
    pub fn wait_for_pipe(&mut self, name: &str, timeout: Duration) {
        let path = self.pipe_path(name);
        let dir = self.dir.path().to_owned();
        wait_ready(
            &mut self.child,
            &format!("samba-dcerpcd's {}", path.display()),
            timeout,
            || daemon_logs(&dir, "samba.log"),
            || std::os::unix::net::UnixStream::connect(&path).is_ok(),
        );
    }
}

impl Drop for SambaRpcd {
    fn drop(&mut self) {
        // samba-dcerpcd stops and reaps its rpcd_* workers itself on
        // SIGTERM; what is left of its group goes after 3 s.
        stop_group(&mut self.child);
    }
}

/// The `[global]` section of a Samba that lives wholly in `root` (every
/// state path under it, loopback only, no printers or netbios, RPC servers
/// not started on demand), as `../shared/SAMBA.md` describes; the state
/// directories are made. Used by this fixture and the smbd one.
pub fn global_conf(root: &Path, netbios_name: &str, log_name: &str) -> String {
    for sub in [
        "lock", "state", "cache", "private", "bind-dns", "pid", "ncalrpc",
    ] {
        fs::create_dir_all(root.join(sub)).expect("samba state dir");
    }
    let p = |sub: &str| root.join(sub).display().to_string();
    format!(
        "[global]\n\
         netbios name = {netbios_name}\n\
         workgroup = OPIPETEST\n\
         server role = standalone server\n\
         lock directory = {lock}\n\
         state directory = {state}\n\
         cache directory = {cache}\n\
         private dir = {private}\n\
         binddns dir = {binddns}\n\
         pid directory = {pid}\n\
         ncalrpc dir = {ncalrpc}\n\
         log file = {log}\n\
         log level = 1\n\
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
        log = p(log_name),
        passdb = root.join("private/passdb.tdb").display(),
    )
}

/// Starts `bin <args> <conf>` with its stderr in `stderr.log` beside
/// `conf`, in its own process group: the processes it starts join that
/// group, and [`stop_group`] stops them all with one kill of it.
pub fn spawn_daemon(bin: &str, args: &[&str], conf: &Path) -> Child {
    let dir = conf.parent().expect("smb.conf in a dir");
    let stderr = fs::File::create(dir.join("stderr.log")).expect("stderr log");
    Command::new(bin)
        .args(args)
        .arg(conf)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr)
        .process_group(0)
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {bin}: {e}"))
}

/// A daemon's `stderr.log` and its log file `log_name` in `dir`, so far
/// (for failure messages).
pub fn daemon_logs(dir: &Path, log_name: &str) -> String {
    let mut out = String::new();
    for name in ["stderr.log", log_name] {
        let mut text = String::new();
        if let Ok(mut f) = fs::File::open(dir.join(name)) {
            let _ = f.read_to_string(&mut text);
        }
        out.push_str(&format!("--- {name}\n{text}\n"));
    }
    out
}

/// Polls `ready` until it holds; panics with `logs()` when `child` exits
/// first or after `timeout`. `what` names what is awaited.
pub fn wait_ready(
    child: &mut Child,
    what: &str,
    timeout: Duration,
    logs: impl Fn() -> String,
    mut ready: impl FnMut() -> bool,
) {
    let deadline = Instant::now() + timeout;
    loop {
        if ready() {
            return;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("exited ({status}) before {what}\n{}", logs());
        }
        assert!(
            Instant::now() <= deadline,
            "no {what} within {timeout:?}\n{}",
            logs()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Stops a daemon started with `process_group(0)` (so its group id is its
/// pid): SIGTERM to the daemon alone, up to 3 s for it to exit, then
/// SIGKILL to whatever is left of its group (its workers), and reaps it.
pub fn stop_group(child: &mut std::process::Child) {
    stop_group_within(child, Duration::from_secs(3));
}

/// [`stop_group`] with `grace` for the SIGTERM.
pub fn stop_group_within(child: &mut std::process::Child, grace: Duration) {
    let pid = child.id() as i32;
    // SAFETY: kill(2) has no memory-safety preconditions; the pid is our
    // own child's, not yet waited for.
    unsafe {
        libc::kill(pid, libc::SIGTERM);
    }
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    // SAFETY: as above; a negative pid names the process group.
    unsafe {
        libc::kill(-pid, libc::SIGKILL);
    }
    let _ = child.wait();
}

/// The shares every test `smb.conf` here defines are in a NetrShareEnumAll
/// answer, which succeeded.
pub fn assert_tmp_and_ipc(shares: &opipe::protocol::srvsvc::ShareEnum1) {
    assert_eq!(shares.werror, 0);
    let names: Vec<_> = shares
        .shares
        .iter()
        .filter_map(|s| s.name.as_deref())
        .collect();
    assert!(
        names.contains(&"tmp") && names.contains(&"IPC$"),
        "{names:?}"
    );
}
