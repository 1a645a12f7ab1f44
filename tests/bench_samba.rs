//! `opipe bench --dialect samba`: against its own `opipe serve --dialect
//! samba` child, and with `--target samba-rpcd` against Samba's real
//! `samba-dcerpcd` (started and stopped by the bench; these tests skip
//! loudly where Samba is not installed). Every run is bounded by
//! --requests.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;

use common::cli::{opipe, sigterm, spawn_long_bench, stderr};

const SAMBA_DCERPCD: &str = "/usr/libexec/samba/samba-dcerpcd";
const SERVER_NAME: &str = "OPIPEBENCH";

fn samba_installed(test: &str) -> bool {
    if Path::new(SAMBA_DCERPCD).exists() {
        return true;
    }
    eprintln!(
        "SKIPPED: samba not installed ({SAMBA_DCERPCD} missing); {test} did not run. \
         Install: apt-get install --no-install-recommends samba"
    );
    false
}

/// `opipe bench --json --dialect samba ARGS` (see [`common::cli::bench_json`]).
fn bench_json(args: &[&str]) -> Option<(Option<i32>, Value, String)> {
    let mut all = vec!["--dialect", "samba"];
    all.extend_from_slice(args);
    common::cli::bench_json(&all)
}

/// [`bench_json`] against samba-dcerpcd with the three engines that speak
/// Samba's dialect; `None` where Samba is not installed (said loudly).
fn rpcd_bench_json(test: &str, args: &[&str]) -> Option<(Option<i32>, Value, String)> {
    if !samba_installed(test) {
        return None;
    }
    let mut all = vec!["--target", "samba-rpcd", "--engine", "threads,tokio,uring"];
    all.extend_from_slice(args);
    bench_json(&all)
}

/// Every run of `v` verified all its `requests` transceives, on `pipes`
/// open pipes, without an error; gives back the engines that ran.
fn all_verified(v: &Value, pipes: u64, requests: u64) -> Vec<String> {
    let results = v["results"].as_array().expect("results array");
    let mut engines = Vec::new();
    for r in results {
        assert_eq!(r["errors"], 0, "{r}");
        assert_eq!(r["verify_failures"], 0, "{r}");
        assert_eq!(r["dialect"], "samba", "{r}");
        assert_eq!(r["pipes_opened"], pipes, "{r}");
        assert_eq!(r["transceives"], requests, "{r}");
        assert!(r["transceives_per_s"].as_f64().unwrap() > 0.0, "{r}");
        assert!(r["p50_us"].as_f64().unwrap() > 0.0, "{r}");
        engines.push(r["engine"].as_str().unwrap().to_owned());
    }
    engines
}

#[test]
fn samba_dialect_against_opipe_serve_verifies_every_reply() {
    let Some((code, v, err)) = bench_json(&[
        "--engine",
        "threads,tokio,uring",
        "--pipes",
        "4",
        "--requests",
        "300",
    ]) else {
        return;
    };
    assert_eq!(code, Some(0), "{err}");
    // The child service is `serve --dialect samba`: sockets under np/.
    assert!(err.contains("/np/bench"), "{err}");
    assert_eq!(all_verified(&v, 4, 300), ["threads", "tokio", "uring"]);
    let r = &v["results"][0];
    assert_eq!(
        (r["request_size"].as_u64(), r["reply_size"].as_u64()),
        (Some(64), Some(64))
    );
    // The bench started the service, so its CPU is measured.
    assert!(
        r["service_cpu_us_per_op"].as_f64().is_some_and(|c| c > 0.0),
        "{r}"
    );
}

#[test]
fn samba_dialect_reassembles_fragments_and_overflows_on_messages() {
    // An 8192-byte reply is two PDUs, two messages; with --max-out 1000 the
    // first message (4280 bytes) is cut: STATUS_BUFFER_OVERFLOW on every
    // transceive, the rest read on.
    let Some((code, v, err)) = bench_json(&[
        "--engine",
        "threads,tokio,uring",
        "--pipes",
        "3",
        "--requests",
        "90",
        "--request-size",
        "8192",
        "--reply-size",
        "8192",
        "--max-out",
        "1000",
    ]) else {
        return;
    };
    assert_eq!(code, Some(0), "{err}");
    all_verified(&v, 3, 90);
    for r in v["results"].as_array().unwrap() {
        assert_eq!(r["overflows"], 90, "{r}");
    }
}

#[test]
fn illumos_only_engines_are_refused_or_skipped_in_the_samba_dialect() {
    for engine in ["floor", "uring-min", "tokio-uring"] {
        let out = opipe(&[
            "bench",
            "--dialect",
            "samba",
            "--engine",
            engine,
            "--requests",
            "10",
        ]);
        assert_eq!(out.status.code(), Some(1), "{engine}: {}", stderr(&out));
        assert!(
            stderr(&out).contains(&format!("{engine} speaks only the illumos dialect")),
            "{}",
            stderr(&out)
        );
    }
    // In `all` tokio-uring is skipped with a note; the others run.
    let Some((code, v, err)) = bench_json(&["--pipes", "2", "--requests", "40"]) else {
        return;
    };
    assert_eq!(code, Some(0), "{err}");
    assert!(err.contains("tokio-uring skipped"), "{err}");
    assert_eq!(all_verified(&v, 2, 40), ["threads", "tokio", "uring"]);
}

#[test]
fn samba_rpcd_target_needs_the_samba_dialect() {
    let out = opipe(&["bench", "--target", "samba-rpcd", "--requests", "10"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("--dialect samba"), "{}", stderr(&out));
    // A service of one's own (--dir) and a Samba started here exclude each other.
    let out = opipe(&[
        "bench",
        "--dialect",
        "samba",
        "--target",
        "samba-rpcd",
        "--dir",
        "/tmp",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
}

/// The pid and socket from the bench's "samba-dcerpcd started" line.
fn rpcd_of(err: &str) -> (u32, PathBuf) {
    common::cli::started(err, "samba-dcerpcd")
}

/// Live (not zombie) processes whose process group is `pgid`.
fn group_members(pgid: u32) -> Vec<String> {
    let mut members = common::group_processes(pgid);
    members.retain(|stat| stat.rsplit_once(')').unwrap().1.split_whitespace().next() != Some("Z"));
    members
}

/// [`group_members`] once they are gone, or after 5 s.
fn group_members_after_a_while(pgid: u32) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let left = group_members(pgid);
        if left.is_empty() || Instant::now() > deadline {
            return left;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// samba-dcerpcd, its workers and its temp dir are all gone.
fn rpcd_gone(err: &str) {
    let (pid, socket) = rpcd_of(err);
    let members = group_members_after_a_while(pid);
    assert!(members.is_empty(), "left running: {members:?}");
    // <tmp>/ncalrpc/np/srvsvc: the whole <tmp> is removed.
    let tmp = socket.ancestors().nth(3).unwrap();
    assert!(!tmp.exists(), "{} is still there", tmp.display());
}

#[test]
fn samba_rpcd_target_calls_netr_server_get_info_and_verifies_each_reply() {
    let Some((code, v, err)) = rpcd_bench_json(
        "samba_rpcd_target_calls_netr_server_get_info",
        &["--pipes", "1,8", "--requests", "200"],
    ) else {
        return;
    };
    assert_eq!(code, Some(0), "{err}");
    assert!(err.contains(&format!("naming {SERVER_NAME}")), "{err}");
    let results = v["results"].as_array().unwrap();
    assert_eq!(results.len(), 6, "{v}");
    for r in results {
        let pipes = r["pipes"].as_u64().unwrap();
        assert_eq!(r["pipes_opened"], pipes, "{r}");
        assert_eq!(r["errors"], 0, "{r}");
        assert_eq!(r["verify_failures"], 0, "{r}");
        assert_eq!(r["transceives"], 200, "{r}");
        // NetrServerGetInfo(\\OPIPEBENCH, 101): a 72-byte request; the
        // reply carries the name and Samba's version comment.
        assert_eq!(r["request_size"], 72, "{r}");
        assert_eq!(r["call"], "NetrServerGetInfo", "{r}");
        assert!(r["reply_size"].as_u64().unwrap() > 100, "{r}");
        // samba-dcerpcd's group (its rpcd_classic workers) is measured
        // (reaped workers in clock ticks: 0 is possible in a run this short).
        let svc = r["service_cpu_us_per_op"].as_f64();
        assert!(svc.is_some_and(|c| c >= 0.0), "{r}");
    }
    rpcd_gone(&err);
}

#[test]
fn samba_rpcd_replies_naming_another_server_are_counted_as_verify_failures() {
    let Some((code, v, err)) = rpcd_bench_json(
        "samba_rpcd_replies_naming_another_server",
        &[
            "--pipes",
            "3",
            "--requests",
            "30",
            "--expect-server-name",
            "SOMEONEELSE",
        ],
    ) else {
        return;
    };
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("replies FAILED verification"), "{err}");
    for r in v["results"].as_array().unwrap() {
        // Each pipe stops at its first wrong reply.
        assert_eq!(r["verify_failures"], 3, "{r}");
        assert_eq!(r["errors"], 3, "{r}");
        assert_eq!(r["transceives"], 0, "{r}");
    }
    rpcd_gone(&err);
}

#[test]
fn sigterm_stops_samba_dcerpcd_and_its_workers() {
    if !samba_installed("sigterm_stops_samba_dcerpcd_and_its_workers") {
        return;
    }
    let (mut child, seen) = spawn_long_bench(&["--dialect", "samba", "--target", "samba-rpcd"]);
    // Transceiving: rpcd_classic workers exist now.
    std::thread::sleep(Duration::from_millis(300));
    let (pid, _) = rpcd_of(&seen);
    assert!(!group_members(pid).is_empty());
    assert_eq!(sigterm(&mut child).code(), Some(130));
    rpcd_gone(&seen);
}

#[test]
fn a_samba_service_that_never_answers_the_handshake_fails_the_opens_in_time() {
    // A listener under np/ nobody accepts on: connects succeed (the
    // backlog), the NPA request is written, its reply never comes. Each
    // pipe's open gives up after 10 s and says why; the bench exits 1.
    let tmp = tempfile::Builder::new()
        .prefix("opipe-bench-npstuck")
        .tempdir()
        .unwrap();
    let dir = tmp.path();
    std::fs::create_dir_all(dir.join("np")).unwrap();
    let _listener = std::os::unix::net::UnixListener::bind(dir.join("np/stuck")).unwrap();
    let begin = Instant::now();
    for engine in ["threads", "tokio"] {
        let out = opipe(&[
            "bench",
            "--dialect",
            "samba",
            "--dir",
            dir.to_str().unwrap(),
            "--pipe",
            "stuck",
            "--engine",
            engine,
            "--pipes",
            "2",
            "--requests",
            "10",
            "--stall-timeout",
            "30",
        ]);
        assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
        assert!(
            stderr(&out).contains("no answer to the handshake or bind within 10s"),
            "{engine}: {}",
            stderr(&out)
        );
    }
    assert!(begin.elapsed() < Duration::from_secs(40));
}
