//! The ONE pipe service both SMB servers of the `--smb2` bench stand in
//! front of: `opipe serve --dialect samba --handler srvsvc --pipe srvsvc`,
//! a child of this binary in a private directory (its socket is
//! `<dir>/np/srvsvc`, where smbd's `external_rpc_pipe:socket_dir` and
//! `opipe smb2 --dir` both point). It answers NetrServerGetInfo level 101
//! with [`SERVER_NAME`], which every reply is checked against.

use std::ffi::OsString;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use super::daemon::{private_dir, Cleanup};
use crate::serve_child::ServeChild;

/// The server name the pipe service reports (not smbd's NetBIOS name:
/// a reply carrying it came from the pipe service).
pub const SERVER_NAME: &str = "OPIPESVC";
/// How long the service may take to accept.
const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long it gets to exit after SIGTERM.
const TERM_GRACE: Duration = Duration::from_secs(2);

/// The running pipe service.
#[derive(Debug)]
pub struct PipeService {
    child: ServeChild,
    dir: PathBuf,
    cleanup: Cleanup,
}

impl PipeService {
    /// Starts it (`threads`: `serve --threads`) and waits until
    /// `<dir>/np/srvsvc` accepts.
    pub fn start(threads: Option<u16>, cleanup: &Cleanup) -> io::Result<PipeService> {
        let dir = private_dir("opipe-bench-pipes")?;
        cleanup.dir(&dir);
        let log = dir.join("service.log");
        let started = (|| {
            let log_file = fs::File::create(&log)?;
            let mut args: Vec<OsString> = vec![
                "--dir".into(),
                dir.clone().into(),
                "--dialect".into(),
                "samba".into(),
                "--handler".into(),
                "srvsvc".into(),
                "--pipe".into(),
                "srvsvc".into(),
                "--server-name".into(),
                SERVER_NAME.into(),
            ];
            if let Some(t) = threads {
                args.extend(["--threads".into(), t.to_string().into()]);
            }
            ServeChild::start(
                &args,
                Stdio::from(log_file),
                &dir.join("np").join("srvsvc"),
                READY_TIMEOUT,
                || log_tail(&log),
            )
        })();
        match started {
            Ok(child) => Ok(PipeService {
                child,
                dir,
                cleanup: cleanup.clone(),
            }),
            Err(e) => {
                let _ = fs::remove_dir_all(&dir);
                cleanup.forget_dir(&dir);
                Err(e)
            }
        }
    }

    /// The directory to point the SMB servers at.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Its process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.pid()
    }

    /// Fails, with its log, if it has exited.
    pub fn check_alive(&mut self) -> Result<(), String> {
        match self.child.exited() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => Err(format!(
                "the pipe service exited ({status}){}",
                log_tail(&self.dir.join("service.log"))
            )),
            Err(e) => Err(format!("the pipe service: {e}")),
        }
    }
}

impl Drop for PipeService {
    fn drop(&mut self) {
        self.child.stop(TERM_GRACE);
        let _ = fs::remove_dir_all(&self.dir);
        self.cleanup.forget_dir(&self.dir);
    }
}

/// The last lines of the service's stderr, for error messages.
fn log_tail(log: &Path) -> String {
    let text = fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    if lines.is_empty() {
        return String::new();
    }
    let from = lines.len().saturating_sub(10);
    format!("; service stderr:\n  {}", lines[from..].join("\n  "))
}
