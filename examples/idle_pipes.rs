//! Measures what open, idle pipes cost the engine's process: starts an echo
//! pipe service in a child process (so its memory is not counted), opens N
//! pipes through the engine, and prints the growth of VmRSS per pipe.
//!
//! ```text
//! cargo run --release --example idle_pipes -- [N] [plain|registered]
//! ```

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use opipe::engine::{BufferMode, Engine, EngineConfig};
use opipe::protocol::NetUserInfo;
use opipe::service::{EchoFactory, Service};

fn rss_bytes() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--serve") {
        // Child: serve until stdin closes (the parent exits or drops it).
        let _svc = Service::builder(&args[2])
            .pipe("idle")
            .handler(EchoFactory)
            .start()?;
        let _ = std::io::Read::read(&mut std::io::stdin(), &mut [0u8; 1]);
        return Ok(());
    }
    let n: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(10_000);
    let mode = match args.get(2).map(String::as_str) {
        Some("registered") => BufferMode::Registered,
        _ => BufferMode::Plain,
    };
    opipe::ring::sys::raise_nofile_limit()?;
    let dir = tempfile_dir();
    let mut child = Command::new(std::env::current_exe()?)
        .arg("--serve")
        .arg(&dir)
        .stdin(Stdio::piped())
        .spawn()?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !dir.join("idle").exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    let mut cfg = EngineConfig::new(&dir);
    cfg.buffers = mode;
    let engine = Engine::new(cfg)?;
    // Warm up the engine's tables with one pipe, then take the baseline.
    drop(engine.open("idle", NetUserInfo::default(), None).wait()?);
    let before = rss_bytes();
    let opens: Vec<_> = (0..n)
        .map(|i| {
            engine.open(
                "idle",
                NetUserInfo {
                    session_id: i as u64,
                    ..Default::default()
                },
                None,
            )
        })
        .collect();
    let mut pipes = Vec::with_capacity(n);
    for r in opens {
        pipes.push(r.wait()?);
    }
    // Let every open's completion settle, then measure.
    std::thread::sleep(Duration::from_millis(200));
    let after = rss_bytes();
    let per = (after.saturating_sub(before)) as f64 / n as f64;
    println!(
        "{n} idle pipes ({mode:?} buffers): VmRSS {} KiB -> {} KiB, {per:.0} bytes per idle pipe (client process, incl. the caller's Pipe handles and Vec)",
        before / 1024,
        after / 1024
    );
    drop(pipes);
    drop(engine);
    drop(child.stdin.take());
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

fn tempfile_dir() -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("opipe-idle-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&d);
    d
}
