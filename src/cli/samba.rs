//! Samba's own RPC server for `opipe bench --target samba-rpcd`:
//! `samba-dcerpcd` started standalone in a private temp dir with its own
//! `smb.conf` (every state path under the dir, loopback only, no printers,
//! `rpc start on demand helpers = no`; the recipe of `SAMBA.md`), in its own
//! process group, and stopped by its pid: SIGTERM, then SIGKILL to what is
//! left of the group (its `rpcd_*` workers), then reaped, and the dir
//! removed. Dropping [`SambaRpcd`] does all of that; the bench's signal
//! thread does the same through [`SambaRpcd::abort`].
//!
//! [`probe`] makes one whole call the way every bench pipe will (the
//! named-pipe-auth handshake as an anonymous caller, a bind to srvsvc,
//! `NetrServerGetInfo` level 101), checks the answer names the configured
//! server, and gives the request and reply sizes the runs then verify.

use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::DirBuilderExt;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use opipe::protocol::dcerpc::{self, PFC_LAST_FRAG};
use opipe::protocol::npa::NPA_REPLY_LEN;
use opipe::protocol::srvsvc::decode_netr_server_get_info_101;
use opipe::protocol::{Dialect, NpaIdentity, NpaLevel, NpaReply, NtStatus};

use crate::bench::exchange::{Call, BIND_CALL_ID};
use crate::bench::framed::{framed, Inbox};
use crate::bench::service::Abort;
use crate::bench::sys;

/// Where Debian's `samba` package installs the RPC server.
pub const SAMBA_DCERPCD: &str = "/usr/libexec/samba/samba-dcerpcd";
/// The pipe every bench pipe opens.
pub const PIPE: &str = "srvsvc";
/// How long start-up may take.
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// How long samba-dcerpcd gets to stop its workers after SIGTERM.
const TERM_GRACE: Duration = Duration::from_secs(3);
/// How long the probe's handshake, bind and call may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

/// A running `samba-dcerpcd` and its temp dir.
#[derive(Debug)]
pub struct SambaRpcd {
    child: Option<Child>,
    dir: PathBuf,
    server_name: String,
}

impl SambaRpcd {
    /// Starts `samba-dcerpcd` with `netbios name = <server_name>` and waits
    /// (bounded) until `np/srvsvc` accepts connections. A missing binary or
    /// a start-up failure is an error that says why (with Samba's log).
    pub fn start(server_name: &str) -> Result<SambaRpcd, String> {
        if !Path::new(SAMBA_DCERPCD).exists() {
            return Err(format!(
                "--target samba-rpcd needs Samba's RPC server, and {SAMBA_DCERPCD} does not \
                 exist (Debian: apt-get install --no-install-recommends samba)"
            ));
        }
        let dir = make_private_dir().map_err(|e| format!("temporary directory: {e}"))?;
        // From here on the guard owns `dir`: every early return cleans up.
        let mut rpcd = SambaRpcd {
            child: None,
            dir,
            server_name: server_name.to_owned(),
        };
        let conf = rpcd
            .write_conf()
            .map_err(|e| format!("writing smb.conf: {e}"))?;
        let stderr = fs::File::create(rpcd.dir.join("stderr.log"))
            .map_err(|e| format!("samba-dcerpcd's log: {e}"))?;
        let mut cmd = Command::new(SAMBA_DCERPCD);
        cmd.args(["-F", "--no-process-group", "--libexec-rpcds", "-s"])
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            // Its own group: the rpcd_* workers it starts join it, and the
            // stop kills whatever is left of them with one kill.
            .process_group(0);
        // Should the bench die without cleaning up, samba-dcerpcd goes too.
        sys::kill_with_parent(&mut cmd);
        let child = cmd
            .spawn()
            .map_err(|e| format!("starting {SAMBA_DCERPCD}: {e}"))?;
        rpcd.child = Some(child);
        rpcd.wait_ready()?;
        Ok(rpcd)
    }

    fn write_conf(&self) -> io::Result<PathBuf> {
        let root = &self.dir;
        for sub in [
            "lock", "state", "cache", "private", "bind-dns", "pid", "ncalrpc",
        ] {
            fs::create_dir_all(root.join(sub))?;
        }
        let p = |sub: &str| root.join(sub).display().to_string();
        let text = format!(
            "[global]\n\
             netbios name = {name}\n\
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
            name = self.server_name,
            lock = p("lock"),
            state = p("state"),
            cache = p("cache"),
            private = p("private"),
            binddns = p("bind-dns"),
            pid = p("pid"),
            ncalrpc = p("ncalrpc"),
            log = p("samba.log"),
            passdb = root.join("private/passdb.tdb").display(),
        );
        let conf = root.join("smb.conf");
        fs::write(&conf, text)?;
        Ok(conf)
    }

    fn wait_ready(&mut self) -> Result<(), String> {
        let path = Dialect::Samba.socket_dir(&self.ncalrpc_dir()).join(PIPE);
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if UnixStream::connect(&path).is_ok() {
                return Ok(());
            }
            self.check_alive()?;
            if Instant::now() > deadline {
                return Err(format!(
                    "{} did not appear within {START_TIMEOUT:?}{}",
                    path.display(),
                    self.log_tail()
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The `ncalrpc dir`: the directory that holds `np/`.
    pub fn ncalrpc_dir(&self) -> PathBuf {
        self.dir.join("ncalrpc")
    }

    /// The configured server name (`netbios name`).
    pub fn server_name(&self) -> &str {
        &self.server_name
    }

    /// samba-dcerpcd's pid (also its process group's id).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// What another thread must clean up if it has to end the process: the
    /// process group and the dir.
    pub fn abort(&self) -> Abort {
        Abort::new(self.pid(), Some(self.dir.clone()), true)
    }

    /// Fails if samba-dcerpcd has exited.
    pub fn check_alive(&mut self) -> Result<(), String> {
        let exited = match self.child.as_mut().map(Child::try_wait) {
            Some(Ok(Some(status))) => status,
            Some(Err(e)) => return Err(format!("samba-dcerpcd: {e}")),
            _ => return Ok(()),
        };
        if let Some(pid) = self.child.take().map(|c| c.id()) {
            // Its workers may outlive it.
            sys::kill_group(pid);
        }
        Err(format!(
            "samba-dcerpcd exited ({exited}){}",
            self.log_tail()
        ))
    }

    /// The end of Samba's logs, for error messages.
    pub fn log_tail(&self) -> String {
        let mut out = String::new();
        for name in ["stderr.log", "samba.log"] {
            let mut text = String::new();
            if let Ok(mut f) = fs::File::open(self.dir.join(name)) {
                let _ = f.read_to_string(&mut text);
            }
            let lines: Vec<&str> = text.lines().collect();
            let from = lines.len().saturating_sub(10);
            if from < lines.len() {
                out.push_str(&format!("; {name}:\n  {}", lines[from..].join("\n  ")));
            }
        }
        out
    }
}

impl Drop for SambaRpcd {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let pid = child.id();
            // samba-dcerpcd stops and reaps its workers on SIGTERM.
            sys::signal(pid, libc::SIGTERM);
            let deadline = Instant::now() + TERM_GRACE;
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            // Not reaped yet, so the group id is still ours.
            sys::kill_group(pid);
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// Makes a fresh directory only this user can enter, under `$TMPDIR`.
fn make_private_dir() -> io::Result<PathBuf> {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    for attempt in 0..100u32 {
        let dir = std::env::temp_dir().join(format!(
            "opipe-samba-{}-{:08x}",
            std::process::id(),
            nanos.wrapping_add(attempt)
        ));
        match fs::DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::other("could not make a temporary directory"))
}

/// What one probe call found: the sizes every later call must have.
#[derive(Debug, Clone, Copy)]
pub struct Probe {
    /// Bytes of the request PDU.
    pub request_bytes: usize,
    /// Bytes of the whole reply (all its fragments).
    pub reply_bytes: usize,
}

/// One anonymous open of `srvsvc` under `dir`, one bind and one
/// `NetrServerGetInfo` level 101, whose answer must name `server_name`.
pub fn probe(dir: &Path, server_name: &str) -> Result<Probe, String> {
    let path = Dialect::Samba.socket_dir(dir).join(PIPE);
    let fail = |what: &str, e: &dyn std::fmt::Display| format!("probe call: {what}: {e}");
    let mut s = UnixStream::connect(&path).map_err(|e| fail("connect", &e))?;
    s.set_read_timeout(Some(PROBE_TIMEOUT))
        .map_err(|e| fail("socket", &e))?;
    let open = NpaIdentity::anonymous()
        .to_request(NpaLevel::V7)
        .encode()
        .map_err(|e| fail("NPA request", &e))?;
    s.write_all(&open).map_err(|e| fail("NPA request", &e))?;
    let mut answer = [0u8; NPA_REPLY_LEN];
    s.read_exact(&mut answer)
        .map_err(|e| fail("NPA reply", &e))?;
    let reply = NpaReply::decode(&answer).map_err(|e| fail("NPA reply", &e))?;
    if reply.status != NtStatus::SUCCESS {
        return Err(fail("open", &reply.status));
    }
    let mut inbox = Inbox::new();
    let bind = dcerpc::encode_bind(
        BIND_CALL_ID,
        dcerpc::SRVSVC_SYNTAX.into(),
        dcerpc::NDR_SYNTAX.into(),
    );
    s.write_all(&framed(&bind)).map_err(|e| fail("bind", &e))?;
    let ack = next_message(&mut s, &mut inbox).map_err(|e| fail("bind", &e))?;
    let ack = dcerpc::decode_bind_ack(&ack).map_err(|e| fail("bind_ack", &e))?;
    if ack.results.first().map(|r| r.result) != Some(dcerpc::RESULT_ACCEPTANCE) {
        return Err(fail("bind", &"srvsvc refused"));
    }
    let request = Call::server_info_request(server_name, 2)?;
    s.write_all(&framed(&request))
        .map_err(|e| fail("NetrServerGetInfo", &e))?;
    let (mut reply_bytes, mut stub) = (0, Vec::new());
    loop {
        let msg = next_message(&mut s, &mut inbox).map_err(|e| fail("NetrServerGetInfo", &e))?;
        reply_bytes += msg.len();
        let pdu = dcerpc::decode_response(&msg).map_err(|e| fail("response", &e))?;
        stub.extend_from_slice(pdu.stub);
        if pdu.header.pfc_flags & PFC_LAST_FRAG != 0 {
            break;
        }
        if reply_bytes > 1 << 20 {
            return Err(fail("response", &"over 1 MiB"));
        }
    }
    let (info, werror) =
        decode_netr_server_get_info_101(&stub).map_err(|e| fail("SERVER_INFO_101", &e))?;
    let name = info.and_then(|i| i.server_name);
    if werror != 0 || name.as_deref() != Some(server_name) {
        return Err(format!(
            "probe call: NetrServerGetInfo answered {name:?} (WERROR {werror}), \
             expected {server_name:?}"
        ));
    }
    Ok(Probe {
        request_bytes: request.len(),
        reply_bytes,
    })
}

/// The next whole message from `s`.
fn next_message(s: &mut UnixStream, inbox: &mut Inbox) -> io::Result<Vec<u8>> {
    loop {
        if let Some(m) = inbox.next_message() {
            return Ok(inbox.bytes(m).to_vec());
        }
        let n = s.read(inbox.spare())?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        inbox.filled(n);
    }
}
