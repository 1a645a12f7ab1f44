//! `opipe bench` end to end: the real binary, its own service child, real
//! sockets. Every run is bounded by --requests, so these take seconds.

mod common;

use std::path::PathBuf;

use serde_json::Value;

use common::cli::{opipe, sigterm, spawn_long_bench, stderr};

const KEYS: &[&str] = &[
    "engine",
    "pipes",
    "request_size",
    "reply_size",
    "max_out",
    "transceives",
    "transceives_per_s",
    "client_cpu_us_per_op",
    "service_cpu_us_per_op",
    "p50_us",
    "p99_us",
    "p999_us",
    "client_rss_bytes",
    "bytes_per_pipe",
    "errors",
    "backend",
];

/// Runs a JSON bench, which must exit 0; `None` (after saying so) when
/// the engine cannot run on this machine (io_uring switched off).
fn bench_json(args: &[&str]) -> Option<(Value, String)> {
    let (code, v, err) = common::cli::bench_json(args)?;
    assert_eq!(code, Some(0), "opipe bench --json {args:?} failed:\n{err}");
    Some((v, err))
}

fn check_run(engine: &str) {
    let Some((v, _)) = bench_json(&["--engine", engine, "--pipes", "4", "--requests", "200"])
    else {
        return;
    };
    let results = v["results"].as_array().expect("results array");
    assert_eq!(results.len(), 1, "{v}");
    let r = &results[0];
    for key in KEYS {
        assert!(r.get(key).is_some(), "key {key} missing in {r}");
    }
    assert_eq!(r["engine"], engine);
    assert_eq!(r["pipes"], 4);
    assert_eq!(r["request_size"], 64);
    assert_eq!(r["reply_size"], 64);
    assert_eq!(r["max_out"], 4280);
    assert_eq!(r["errors"], 0, "{r}");
    assert_eq!(r["transceives"], 200, "{r}");
    assert!(r["transceives_per_s"].as_f64().unwrap() > 0.0, "{r}");
    assert!(r["p50_us"].as_f64().unwrap() > 0.0, "{r}");
    assert!(
        r["p99_us"].as_f64().unwrap() >= r["p50_us"].as_f64().unwrap(),
        "{r}"
    );
    assert!(r["client_rss_bytes"].as_u64().unwrap() > 0, "{r}");
    assert!(!r["backend"].as_str().unwrap().is_empty(), "{r}");
    // The bench started the service, so it measured the service's CPU too.
    let svc = r["service_cpu_us_per_op"].as_f64();
    assert!(svc.is_some_and(|c| c > 0.0), "{r}");
}

#[test]
fn rounds_repeat_every_run_and_summarise_in_round_ratios() {
    let Some((v, err)) = bench_json(&[
        "--engine",
        "threads,tokio",
        "--pipes",
        "2,3",
        "--requests",
        "40",
        "--rounds",
        "2",
    ]) else {
        return;
    };
    let results = v["results"].as_array().expect("results array");
    // Round 1 runs every pipe count and engine before round 2 starts.
    let order: Vec<(u64, u64)> = results
        .iter()
        .map(|r| (r["round"].as_u64().unwrap(), r["pipes"].as_u64().unwrap()))
        .collect();
    assert_eq!(
        order,
        [
            (1, 2),
            (1, 2),
            (1, 3),
            (1, 3),
            (2, 2),
            (2, 2),
            (2, 3),
            (2, 3)
        ],
        "{v}"
    );
    assert!(
        err.contains("round 2/2: running tokio with 3 pipes"),
        "{err}"
    );
    let summary = v["summary"].as_array().expect("summary array");
    assert_eq!(summary.len(), 4, "{v}");
    for s in summary {
        assert_eq!(s["rounds"], 2, "{s}");
        assert_eq!(s["errors"], 0, "{s}");
        let tps = &s["vs_threads"]["transceives_per_s"];
        let (lo, mid, hi) = (
            tps["min"].as_f64().unwrap(),
            tps["median"].as_f64().unwrap(),
            tps["max"].as_f64().unwrap(),
        );
        assert!(lo > 0.0 && lo <= mid && mid <= hi, "{s}");
        if s["engine"] == "threads" {
            assert_eq!(mid, 1.0, "{s}");
        }
    }
}

/// Far more pipes than submission or completion queue entries: the engine
/// queues the rest and submits no more than the completion queue has room
/// for, and every reply still verifies.
#[test]
fn uring_with_tiny_queues_verifies_every_reply() {
    let Some((v, _)) = bench_json(&[
        "--engine",
        "uring",
        "--pipes",
        "64",
        "--rings",
        "1",
        "--sq-entries",
        "16",
        "--cq-entries",
        "32",
        "--requests",
        "3000",
    ]) else {
        return;
    };
    let r = &v["results"][0];
    assert_eq!(r["errors"], 0, "{r}");
    assert_eq!(r["transceives"], 3000, "{r}");
    assert_eq!(r["pipes_opened"], 64, "{r}");
}

#[test]
fn threads_run_reports_every_key_and_no_errors() {
    check_run("threads");
}

#[test]
fn tokio_run_reports_every_key_and_no_errors() {
    check_run("tokio");
}

#[test]
fn tokio_uring_run_reports_every_key_and_no_errors() {
    check_run("tokio-uring");
}

#[test]
fn floor_run_reports_every_key_and_no_errors() {
    check_run("floor");
}

#[test]
fn uring_min_run_reports_every_key_and_no_errors() {
    check_run("uring-min");
}

#[test]
fn small_max_out_overflows_and_reads_the_rest() {
    for engine in [
        "threads",
        "tokio",
        "tokio-uring",
        "uring",
        "floor",
        "uring-min",
    ] {
        let Some((v, _)) = bench_json(&[
            "--engine",
            engine,
            "--pipes",
            "2",
            "--requests",
            "50",
            "--reply-size",
            "300",
            "--max-out",
            "100",
        ]) else {
            continue;
        };
        let r = &v["results"][0];
        assert_eq!(r["errors"], 0, "{r}");
        assert_eq!(r["transceives"], 50, "{r}");
        // The service writes each reply at once, so the 100-byte read always
        // finds the other 200 bytes queued.
        assert_eq!(r["overflows"], 50, "{r}");
    }
}

#[test]
fn fragmented_replies_and_requests_verify() {
    let Some((v, _)) = bench_json(&[
        "--engine",
        "threads,tokio,uring-min",
        "--pipes",
        "3",
        "--requests",
        "30",
        "--request-size",
        "9000",
        "--reply-size",
        "8192",
    ]) else {
        return;
    };
    let results = v["results"].as_array().unwrap();
    assert_eq!(results.len(), 3, "{v}");
    for r in results {
        assert_eq!(r["errors"], 0, "{r}");
        assert_eq!(r["transceives"], 30, "{r}");
        assert_eq!(r["reply_size"], 8192, "{r}");
    }
}

#[test]
fn usage_errors_exit_2() {
    for args in [
        &["bench", "--duration", "1", "--requests", "5"][..],
        &["bench", "--request-size", "3"],
        &["bench", "--reply-size", "23"],
        &["bench", "--reply-size", "4290"],
        &["bench", "--engine", "nonesuch"],
        &["bench", "--pipes", "0"],
        &["bench", "--max-out", "0"],
        &["bench", "--pipe", "../x"],
        &["bench", "--dir", "/tmp", "--threads", "2"],
        &["bench", "--threads", "0"],
        &["bench", "--rounds", "0"],
    ] {
        let out = opipe(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(out.stdout.is_empty(), "{args:?} wrote to stdout");
    }
    let out = opipe(&["bench", "--request-size", "3"]);
    assert!(stderr(&out).contains("header"), "{}", stderr(&out));
}

#[test]
fn help_defines_sizes_on_the_wire() {
    let out = opipe(&["bench", "--help"]);
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.contains("BYTES ON THE WIRE"), "{help}");
    assert!(help.contains("4280"), "{help}");
}

/// `service started: pid N, socket PATH` from the bench's stderr.
fn service_of(err: &str) -> (u32, PathBuf) {
    common::cli::started(err, "service")
}

#[test]
fn no_service_process_or_socket_is_left_behind() {
    let Some((_, err)) = bench_json(&["--engine", "threads", "--pipes", "2", "--requests", "10"])
    else {
        return;
    };
    let (pid, socket) = service_of(&err);
    let dir = socket.parent().unwrap();
    assert!(!dir.exists(), "{} is still there", dir.display());
    // The child was reaped by the bench itself: no process, not even a zombie.
    let proc_dir = PathBuf::from(format!("/proc/{pid}"));
    if let Ok(stat) = std::fs::read_to_string(proc_dir.join("stat")) {
        // The pid may have been reused by an unrelated process, but never by
        // an opipe service of ours.
        assert!(
            !stat.contains("(opipe)"),
            "service {pid} still exists: {stat}"
        );
    }
}

#[test]
fn a_dir_without_a_service_fails_its_opens_and_exits_1() {
    // A pipe directory nobody serves: every open fails, the bench says so
    // and exits 1 rather than hanging.
    let dir = std::env::temp_dir().join(format!("opipe-bench-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let out = opipe(&[
        "bench",
        "--dir",
        dir.to_str().unwrap(),
        "--engine",
        "threads",
        "--pipes",
        "2",
        "--requests",
        "10",
        "--json",
    ]);
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("open"), "{}", stderr(&out));
}

#[test]
fn a_service_that_never_answers_is_given_up_on() {
    // A listener nobody accepts on: connects succeed (the backlog), the open
    // message is written, and the status word never comes.
    let dir = std::env::temp_dir().join(format!("opipe-bench-stuck-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let _listener = std::os::unix::net::UnixListener::bind(dir.join("stuck")).unwrap();
    let begin = std::time::Instant::now();
    let out = opipe(&[
        "bench",
        "--dir",
        dir.to_str().unwrap(),
        "--pipe",
        "stuck",
        "--engine",
        "tokio",
        "--pipes",
        "2",
        "--requests",
        "10",
        "--stall-timeout",
        "1",
    ]);
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("Giving up"), "{}", stderr(&out));
    assert!(begin.elapsed() < std::time::Duration::from_secs(15));
}

#[test]
fn sigterm_stops_the_service_and_removes_its_directory() {
    let (mut child, seen) = spawn_long_bench(&[]);
    let (pid, socket) = service_of(&seen);
    assert_eq!(sigterm(&mut child).code(), Some(130));
    assert!(!socket.parent().unwrap().exists());
    if let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        assert!(
            !stat.contains("(opipe)"),
            "service {pid} still exists: {stat}"
        );
    }
}

#[test]
fn uring_engine_on_epoll_says_backend_epoll() {
    for (backend, want) in [("epoll", "epoll"), ("io-uring", "io_uring")] {
        let Some((v, _)) = bench_json(&[
            "--engine",
            "uring,uring-registered",
            "--backend",
            backend,
            "--pipes",
            "8",
            "--requests",
            "300",
            "--max-out",
            "32",
        ]) else {
            continue;
        };
        let results = v["results"].as_array().expect("results array");
        assert_eq!(results.len(), 2, "{v}");
        for r in results {
            assert_eq!(r["backend"], want, "{r}");
            assert_eq!(r["errors"], 0, "{r}");
            assert_eq!(r["transceives"], 300, "{r}");
            let detail = r["engine_detail"].as_str().expect("engine_detail");
            assert!(detail.contains(want), "{detail}");
            if want == "epoll" {
                // No registered pool on epoll: the effective mode is plain.
                assert!(detail.contains("plain buffers"), "{detail}");
            }
        }
    }
}

#[test]
fn uring_receive_modes_both_verify_and_say_which_ran() {
    for (mode, says) in [
        ("multishot", "send + multishot receive"),
        ("linked", "send->recv chain"),
    ] {
        let Some((v, _)) = bench_json(&[
            "--engine",
            "uring",
            "--backend",
            "io-uring",
            "--uring-recv",
            mode,
            "--pipes",
            "8",
            "--requests",
            "400",
            "--reply-size",
            "3000",
            "--max-out",
            "1024",
        ]) else {
            continue;
        };
        let r = &v["results"][0];
        assert_eq!(r["errors"], 0, "{r}");
        assert_eq!(r["transceives"], 400, "{r}");
        assert_eq!(r["overflows"], 400, "{r}");
        let detail = r["engine_detail"].as_str().expect("engine_detail");
        assert!(detail.contains(says), "{mode}: {detail}");
    }
}
