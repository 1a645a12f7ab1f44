//! Measures the pipe service's memory under clients that send requests and
//! never read the replies (issue 12, item 5).
//!
//! The service runs in a child process (this example re-run with `--serve`),
//! so only its memory is counted. The parent opens N pipes, sends requests on
//! every one until the service stops taking them, waits for the service's
//! memory to settle, reads the child's `VmRSS` / `VmHWM`, closes every client
//! and reads `VmRSS` again.
//!
//! ```text
//! cargo run --release --example hostile_clients -- \
//!     [--backend io_uring|epoll] [--clients N] [--handler echo|dcerpc] \
//!     [--reply-size BYTES] [--max-buffered-bytes BYTES] [--idle]
//! ```
//!
//! It prints one line: idle, settled and peak RSS with clients, RSS after
//! they closed, in MiB.

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use opipe::protocol::dcerpc::{encode_bind, encode_request, NDR_SYNTAX, SRVSVC_SYNTAX};
use opipe::protocol::{decode_status_word, encode_open_message, ClientAddr, NetUserInfo};
use opipe::service::{BackendChoice, DceRpcFactory, EchoFactory, Service};

struct Opts {
    backend: String,
    clients: usize,
    handler: String,
    reply_size: usize,
    max_buffered_bytes: Option<usize>,
    /// Clients open and send nothing (the cost of an idle connection).
    idle: bool,
}

fn parse_opts(args: &[String]) -> Result<Opts, String> {
    let mut o = Opts {
        backend: "io_uring".into(),
        clients: 2000,
        handler: "echo".into(),
        reply_size: 16 << 20,
        max_buffered_bytes: None,
        idle: false,
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut val = || it.next().cloned().ok_or(format!("{a} needs a value"));
        let num = |v: String| v.parse::<usize>().map_err(|e| format!("{v}: {e}"));
        match a.as_str() {
            "--backend" => o.backend = val()?,
            "--clients" => o.clients = num(val()?)?,
            "--handler" => o.handler = val()?,
            "--reply-size" => o.reply_size = num(val()?)?,
            "--max-buffered-bytes" => o.max_buffered_bytes = Some(num(val()?)?),
            "--idle" => o.idle = true,
            _ => return Err(format!("unknown argument {a}")),
        }
    }
    Ok(o)
}

fn status_kib(pid: u32, field: &str) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .unwrap_or(0)
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// The child: serves `hostile` in `dir` until stdin closes.
fn serve(dir: &str, o: &Opts) -> Result<(), Box<dyn std::error::Error>> {
    opipe::ring::sys::raise_nofile_limit()?;
    let backend: BackendChoice = o.backend.parse().map_err(|e| format!("{e:?}"))?;
    let mut b = Service::builder(dir).pipe("hostile").backend(backend);
    if let Some(n) = o.max_buffered_bytes {
        b = b.max_buffered_bytes(n);
    }
    b = match o.handler.as_str() {
        "dcerpc" => b.handler(DceRpcFactory::new(o.reply_size)),
        _ => b.handler(EchoFactory),
    };
    let svc = b.start()?;
    println!("READY {}", svc.backend());
    std::io::stdout().flush()?;
    let _ = std::io::stdin().read(&mut [0u8; 1]);
    println!("STATS {:?}", svc.stats());
    svc.shutdown()?;
    svc.join()?;
    Ok(())
}

/// Kills the child service (its own process group) when dropped.
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn user() -> NetUserInfo {
    NetUserInfo {
        session_id: 7,
        domain: "WORKGROUP".into(),
        account: "mallory".into(),
        posix_uid: 1000,
        workstation: "PC".into(),
        client_addr: ClientAddr::V4(std::net::Ipv4Addr::LOCALHOST),
        native_os: 0,
        logon_time: 1_700_000_000,
        numopens: 0,
        flags: 0,
    }
}

fn open(path: &Path) -> std::io::Result<UnixStream> {
    let mut s = UnixStream::connect(path)?;
    s.set_read_timeout(Some(Duration::from_secs(20)))?;
    s.write_all(&encode_open_message(&user()).map_err(std::io::Error::other)?)?;
    let mut w = [0u8; 4];
    s.read_exact(&mut w)?;
    let st = decode_status_word(w);
    if st.0 != 0 {
        return Err(std::io::Error::other(format!("open refused: {st}")));
    }
    s.set_nonblocking(true)?;
    Ok(s)
}

/// Writes `chunk` until the socket stops taking it; returns the bytes written.
fn write_until_full(s: &mut UnixStream, chunk: &[u8]) -> usize {
    let mut n = 0;
    loop {
        match s.write(chunk) {
            Ok(0) => return n,
            Ok(k) => n += k,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return n,
        }
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--serve") {
        let o = parse_opts(&args[2..])?;
        return serve(&args[1], &o);
    }
    let o = parse_opts(&args)?;
    opipe::ring::sys::raise_nofile_limit()?;
    let dir = tempfile::tempdir()?;
    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.arg("--serve")
        .arg(dir.path())
        .args(&args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .process_group(0);
    let mut child = ChildGuard(cmd.spawn()?);
    let pid = child.0.id();
    let mut out = BufReader::new(child.0.stdout.take().ok_or("no stdout")?);
    let mut line = String::new();
    out.read_line(&mut line)?;
    if !line.starts_with("READY") {
        return Err(format!("service did not start: {line:?}").into());
    }
    let backend = line.trim().trim_start_matches("READY ").to_owned();
    std::thread::sleep(Duration::from_millis(300));
    let idle = status_kib(pid, "VmRSS:");

    let path = dir.path().join("hostile");
    let mut clients = Vec::with_capacity(o.clients);
    for _ in 0..o.clients {
        clients.push(open(&path)?);
    }
    // What each client sends: echo, 64 KiB chunks; dcerpc, a bind then
    // requests of a few bytes, each asking for a `reply_size` response.
    let chunk: Vec<u8> = match o.handler.as_str() {
        "dcerpc" => {
            let syntax = |s: opipe::protocol::dcerpc::SyntaxId| (s.uuid, s.version);
            let mut v = encode_bind(1, syntax(SRVSVC_SYNTAX), syntax(NDR_SYNTAX));
            for id in 2..6 {
                v.extend_from_slice(&encode_request(id, 0, 15, b"args", 4280));
            }
            v
        }
        _ => vec![0x5a; 64 * 1024],
    };
    let mut sent = 0usize;
    let start = Instant::now();
    let mut quiet_rounds = 0;
    let mut peak_rss = 0;
    // Send until three rounds in a row (200 ms apart) move no byte, or 60 s.
    while !o.idle && quiet_rounds < 3 && start.elapsed() < Duration::from_secs(60) {
        let mut round = 0;
        for c in &mut clients {
            if o.handler == "dcerpc" {
                // One burst per client: the requests, never read.
                if sent == 0 {
                    c.set_nonblocking(false)?;
                    c.write_all(&chunk)?;
                    c.set_nonblocking(true)?;
                    round += chunk.len();
                }
            } else {
                round += write_until_full(c, &chunk);
            }
        }
        if o.handler == "dcerpc" && sent > 0 {
            round = 0;
        }
        sent += round;
        quiet_rounds = if round == 0 { quiet_rounds + 1 } else { 0 };
        peak_rss = peak_rss.max(status_kib(pid, "VmRSS:"));
        std::thread::sleep(Duration::from_millis(200));
    }
    // Let the service settle, sampling.
    for _ in 0..15 {
        peak_rss = peak_rss.max(status_kib(pid, "VmRSS:"));
        std::thread::sleep(Duration::from_millis(100));
    }
    let settled = status_kib(pid, "VmRSS:");
    let hwm = status_kib(pid, "VmHWM:");
    drop(clients);
    std::thread::sleep(Duration::from_secs(3));
    let after = status_kib(pid, "VmRSS:");
    drop(child.0.stdin.take());
    let mut stats = String::new();
    out.read_line(&mut stats)?;
    let buffered_peak = stats
        .split("buffered_bytes_peak: ")
        .nth(1)
        .and_then(|v| v.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    println!(
        "backend={backend} handler={} clients={} sent={:.2}MiB budget={} buffered-peak={:.1}MiB | RSS MiB: idle {:.1} settled {:.1} peak(VmHWM) {:.1} after-close {:.1}",
        o.handler,
        o.clients,
        sent as f64 / (1 << 20) as f64,
        o.max_buffered_bytes
            .map_or("default".into(), |b| format!("{:.0}MiB", b as f64 / (1 << 20) as f64)),
        buffered_peak as f64 / (1 << 20) as f64,
        mib(idle),
        mib(settled),
        mib(hwm.max(peak_rss)),
        mib(after),
    );
    if std::env::var_os("HOSTILE_STATS").is_some() {
        print!("{stats}");
    }
    Ok(())
}
