//! `opipe call` and `opipe wait`: drive the engine from the command line,
//! one JSON object on stdout.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use serde_json::{json, Value};

use opipe::engine::{Engine, EngineConfig, OpenOptions, Pipe, Transfer};
use opipe::protocol::npa::{DomSid, NpaIdentity};
use opipe::protocol::{
    ClientAddr, NetUserInfo, NtStatus, MAX_USERINFO_STRING_BYTES, USER_FLAG_ANONYMOUS,
    USER_FLAG_GUEST,
};

use crate::args::{BackendArg, DialectArg};

/// Longest `--timeout-ms` accepted (one hour).
const MAX_TIMEOUT_MS: u64 = 3_600_000;

/// How long after the engine's own open deadline the CLI stops waiting for
/// an open. Only an engine that missed its deadline (a bug) gets here; the
/// open is then cancelled and reported as `STATUS_CANCELLED`.
const OPEN_BACKSTOP: Duration = Duration::from_secs(2);

/// Arguments of `opipe call`.
#[derive(Debug, Args)]
pub struct CallArgs {
    /// Directory holding the pipe sockets (Samba dialect: the directory
    /// that holds `np/`, e.g. samba-dcerpcd's `ncalrpc dir`).
    #[arg(long)]
    dir: PathBuf,
    /// The pipe's dialect.
    #[arg(long, value_enum, default_value = "illumos")]
    dialect: DialectArg,
    /// SMB pipe path, e.g. '\PIPE\srvsvc' or 'srvsvc'.
    #[arg(long)]
    pipe: String,
    /// User's domain (at most 1024 bytes, no NUL).
    #[arg(long, default_value = "WORKGROUP", value_parser = parse_user_string)]
    domain: String,
    /// User's account name (at most 1024 bytes, no NUL).
    #[arg(long, default_value = "opipe", value_parser = parse_user_string)]
    user: String,
    /// Send the anonymous flag in the userinfo (Samba dialect: a null
    /// session, S-1-5-7).
    #[arg(long, conflicts_with = "guest")]
    anonymous: bool,
    /// Send the guest flag in the userinfo (Samba dialect: the guest
    /// account's token).
    #[arg(long, conflicts_with = "sid")]
    guest: bool,
    /// Samba dialect: open as the authenticated user with this SID
    /// (`S-1-5-21-...`), account --user in --domain, uid and gid --uid.
    #[arg(long, conflicts_with = "anonymous", value_parser = parse_sid)]
    sid: Option<DomSid>,
    /// Client workstation name (at most 1024 bytes, no NUL).
    #[arg(long, default_value = "OPIPE-CLI", value_parser = parse_user_string)]
    workstation: String,
    /// Client IPv4 address.
    #[arg(long, default_value = "127.0.0.1")]
    client_ip: Ipv4Addr,
    /// SMB session id.
    #[arg(long, default_value_t = 1)]
    session_id: u64,
    /// POSIX uid of the user.
    #[arg(long, default_value_t = 0)]
    uid: u32,
    /// MaxOutputResponse for transceive, read, peek and read-rest.
    #[arg(long, default_value_t = 4280)]
    max_out: usize,
    /// The open's deadline (the engine's open timeout: a service that does
    /// not answer in time gives STATUS_PIPE_NOT_AVAILABLE); a step not
    /// finished after this many ms is cancelled (STATUS_CANCELLED).
    #[arg(long, default_value_t = 5000,
          value_parser = clap::value_parser!(u64).range(1..=MAX_TIMEOUT_MS))]
    timeout_ms: u64,
    /// Steps run in order on one open pipe: transceive:HEX, write:HEX, read,
    /// peek, read-rest (read until nothing is waiting).
    #[arg(long = "step", required = true, value_parser = parse_step)]
    steps: Vec<Step>,
    /// Engine I/O backend.
    #[arg(long, value_enum, default_value = "auto")]
    backend: BackendArg,
}

/// One step of `opipe call`.
#[derive(Debug, Clone)]
pub enum Step {
    /// FSCTL_PIPE_TRANSCEIVE with these bytes.
    Transceive(Vec<u8>),
    /// Write these bytes.
    Write(Vec<u8>),
    /// One read of up to --max-out.
    Read,
    /// FSCTL_PIPE_PEEK with --max-out.
    Peek,
    /// Reads of --max-out until nothing is waiting.
    ReadRest,
}

/// A userinfo string as the protocol carries it: at most
/// [`MAX_USERINFO_STRING_BYTES`] bytes of UTF-8, no NUL (a longer one could
/// not be encoded, and the open would fail with no explanation).
fn parse_user_string(s: &str) -> Result<String, String> {
    if s.len() > MAX_USERINFO_STRING_BYTES {
        return Err(format!(
            "{} bytes: the protocol carries at most {MAX_USERINFO_STRING_BYTES}",
            s.len()
        ));
    }
    if s.contains('\0') {
        return Err("contains a NUL character".into());
    }
    Ok(s.to_owned())
}

fn parse_sid(s: &str) -> Result<DomSid, String> {
    s.parse::<DomSid>().map_err(|e| e.to_string())
}

fn parse_hex(s: &str) -> Result<Vec<u8>, String> {
    if s.len() % 2 != 0 {
        return Err(format!("odd number of hex digits in {s:?}"));
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).map_err(|_| format!("not hex: {s:?}")))
        .collect()
}

fn parse_step(s: &str) -> Result<Step, String> {
    match s.split_once(':') {
        Some(("transceive", hex)) => Ok(Step::Transceive(parse_hex(hex)?)),
        Some(("write", hex)) => Ok(Step::Write(parse_hex(hex)?)),
        None if s == "read" => Ok(Step::Read),
        None if s == "peek" => Ok(Step::Peek),
        None if s == "read-rest" => Ok(Step::ReadRest),
        _ => Err(format!(
            "unknown step {s:?}: use transceive:HEX, write:HEX, read, peek or read-rest"
        )),
    }
}

fn hex(data: &[u8]) -> String {
    data.iter().map(|b| format!("{b:02x}")).collect()
}

fn status_json(s: NtStatus) -> (String, Value) {
    (
        format!("0x{:08X}", s.raw()),
        s.name().map_or(Value::Null, |n| Value::String(n.into())),
    )
}

fn step_json(op: &str, res: &Result<Transfer, NtStatus>) -> Value {
    let (status, data) = match res {
        Ok(t) => (t.status, &t.data[..]),
        Err(s) => (*s, &[][..]),
    };
    let (code, name) = status_json(status);
    json!({"op": op, "status": code, "status_name": name, "len": data.len(), "data_hex": hex(data)})
}

/// An engine for `dir`; `open_timeout`, when given, is the engine's open
/// deadline.
fn start_engine(
    dir: PathBuf,
    dialect: DialectArg,
    backend: BackendArg,
    open_timeout: Option<Duration>,
) -> Result<Engine, ExitCode> {
    if !dir.is_dir() {
        eprintln!("opipe: --dir {}: not a directory", dir.display());
        return Err(ExitCode::from(2));
    }
    let mut cfg = EngineConfig::new(dir);
    cfg.dialect = dialect.into();
    cfg.backend = backend.into();
    if let Some(t) = open_timeout {
        cfg.open_timeout = t;
    }
    Engine::new(cfg).map_err(|e| {
        eprintln!("opipe: {e}");
        ExitCode::from(1)
    })
}

/// Runs `opipe call`.
pub fn run(a: CallArgs) -> ExitCode {
    let timeout = Duration::from_millis(a.timeout_ms);
    // The engine's open deadline is --timeout-ms, and the CLI waits a
    // little longer than that: a service that never answers the handshake
    // always gives the deadline's STATUS_PIPE_NOT_AVAILABLE, never a race
    // between it and a cancel of our own (STATUS_CANCELLED).
    let engine = match start_engine(a.dir.clone(), a.dialect, a.backend, Some(timeout)) {
        Ok(e) => e,
        Err(code) => return code,
    };
    let user = NetUserInfo {
        session_id: a.session_id,
        domain: a.domain.clone(),
        account: a.user.clone(),
        posix_uid: a.uid,
        workstation: a.workstation.clone(),
        client_addr: ClientAddr::V4(a.client_ip),
        flags: if a.anonymous {
            USER_FLAG_ANONYMOUS
        } else if a.guest {
            USER_FLAG_GUEST
        } else {
            0
        },
        ..Default::default()
    };
    let options = OpenOptions {
        identity: a.sid.clone().map(|sid| {
            // The addresses and session GUID as the mapping makes them.
            let mapped = NpaIdentity::from_net_user_info(&user);
            NpaIdentity {
                client_name: mapped.client_name,
                client_addr: mapped.client_addr,
                session_guid: mapped.session_guid,
                ..NpaIdentity::user(&a.user, &a.domain, sid, &[], a.uid, a.uid, &[])
            }
        }),
    };
    let opened = engine
        .open_with(&a.pipe, user, options, None)
        .wait_timeout(timeout + OPEN_BACKSTOP);
    let open_status = match &opened {
        Ok(_) => NtStatus::SUCCESS,
        Err(s) => *s,
    };
    // Any status other than success means no pipe and no step run: a
    // failed run (rc 1), whatever the status's severity.
    let mut any_error = opened.is_err();
    let mut steps = Vec::new();
    if let Ok(pipe) = &opened {
        for step in &a.steps {
            for (op, res) in run_step(pipe, step, a.max_out, timeout) {
                any_error |= match &res {
                    Ok(t) => t.status.is_error(),
                    Err(s) => s.is_error(),
                };
                steps.push(step_json(op, &res));
            }
        }
    }
    let (code, name) = status_json(open_status);
    let out =
        json!({"open_status": code, "open_status_name": name, "pipe": a.pipe, "steps": steps});
    println!("{out}");
    if let Ok(pipe) = opened {
        let _ = pipe.close().wait_timeout(timeout);
    }
    if any_error {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

fn run_step(
    pipe: &Pipe,
    step: &Step,
    max_out: usize,
    timeout: Duration,
) -> Vec<(&'static str, Result<Transfer, NtStatus>)> {
    let ok = |data| Transfer {
        status: NtStatus::SUCCESS,
        data,
    };
    match step {
        Step::Transceive(input) => vec![(
            "transceive",
            pipe.transceive(input.clone(), max_out)
                .wait_timeout(timeout),
        )],
        Step::Write(data) => {
            vec![(
                "write",
                pipe.write(data.clone())
                    .wait_timeout(timeout)
                    .map(|_| ok(Vec::new())),
            )]
        }
        Step::Read => vec![("read", pipe.read_message(max_out).wait_timeout(timeout))],
        Step::Peek => vec![("peek", pipe.peek(max_out).wait_timeout(timeout))],
        Step::ReadRest => {
            // Read while PEEK says bytes are waiting (bounded by a byte budget).
            let mut out = Vec::new();
            let mut budget: usize = 64 << 20;
            loop {
                let waiting = match pipe.peek(16).wait_timeout(timeout) {
                    Ok(t) => opipe::protocol::PeekReply::decode(&t.data)
                        .map(|(h, _)| h.read_data_available as usize)
                        .unwrap_or(0),
                    Err(s) => {
                        out.push(("read-rest", Err(s)));
                        break;
                    }
                };
                if waiting == 0 || budget == 0 {
                    break;
                }
                let r = pipe.read(max_out).wait_timeout(timeout).map(ok);
                let stop = r.is_err();
                if let Ok(t) = &r {
                    budget = budget.saturating_sub(t.data.len());
                }
                out.push(("read-rest", r));
                if stop {
                    break;
                }
            }
            out
        }
    }
}

/// Arguments of `opipe wait`.
#[derive(Debug, Args)]
pub struct WaitArgs {
    /// Directory holding the pipe sockets.
    #[arg(long)]
    dir: PathBuf,
    /// Pipe name (with or without '\PIPE\').
    #[arg(long)]
    pipe: String,
    /// The pipe's dialect (where its socket is: `<dir>/<name>` or
    /// `<dir>/np/<name>`).
    #[arg(long, value_enum, default_value = "illumos")]
    dialect: DialectArg,
    /// How long to wait for a listener.
    #[arg(long, default_value_t = 5000)]
    timeout_ms: u64,
    /// Engine I/O backend.
    #[arg(long, value_enum, default_value = "auto")]
    backend: BackendArg,
}

/// Runs `opipe wait` (FSCTL_PIPE_WAIT).
pub fn run_wait(a: WaitArgs) -> ExitCode {
    let engine = match start_engine(a.dir.clone(), a.dialect, a.backend, None) {
        Ok(e) => e,
        Err(code) => return code,
    };
    let res = engine
        .wait_for_pipe(&a.pipe, Some(Duration::from_millis(a.timeout_ms)))
        .wait();
    let status = match res {
        Ok(()) => NtStatus::SUCCESS,
        Err(s) => s,
    };
    let (code, name) = status_json(status);
    println!(
        "{}",
        json!({"op": "wait", "pipe": a.pipe, "status": code, "status_name": name})
    );
    if status.is_error() {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}
