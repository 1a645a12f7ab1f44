//! `opipe call` and `opipe wait` end to end: the real binary against a
//! scripted service in a temp dir.

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;

fn opipe(args: &[&str]) -> (i32, serde_json::Value) {
    let out = Command::new(env!("CARGO_BIN_EXE_opipe"))
        .args(args)
        .output()
        .expect("run opipe");
    let code = out.status.code().unwrap_or(-1);
    let json = serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
    (code, json)
}

#[test]
fn call_overflow_then_read_rest_and_bad_name() {
    bounded(Duration::from_secs(60), || {
        let dir = tempfile::tempdir().unwrap();
        let _svc = Scripted::spawn(dir.path(), "srvsvc", Handshake::Accept, big_reply(3000));
        let d = dir.path().to_str().unwrap();
        let (code, j) = opipe(&[
            "call",
            "--dir",
            d,
            "--pipe",
            "\\PIPE\\srvsvc",
            "--max-out",
            "1024",
            "--step",
            "transceive:0102",
            "--step",
            "read-rest",
        ]);
        assert_eq!(code, 0, "{j}");
        assert_eq!(j["open_status"], "0x00000000");
        let steps = j["steps"].as_array().unwrap();
        assert_eq!(steps[0]["op"], "transceive");
        assert_eq!(steps[0]["status"], "0x80000005");
        assert_eq!(steps[0]["status_name"], "STATUS_BUFFER_OVERFLOW");
        assert_eq!(steps[0]["len"], 1024);
        let total: u64 = steps.iter().map(|s| s["len"].as_u64().unwrap()).sum();
        assert_eq!(total, 3000, "{j}");
        let hex: String = steps
            .iter()
            .map(|s| s["data_hex"].as_str().unwrap().to_owned())
            .collect();
        let expect: String = (0..3000).map(|i| format!("{:02x}", i % 251)).collect();
        assert_eq!(hex, expect);

        let (code, j) = opipe(&["call", "--dir", d, "--pipe", "a/b", "--step", "read"]);
        assert_eq!(code, 1);
        assert_eq!(j["open_status"], "0xC0000033");
    });
}

#[test]
fn call_step_timeout_cancels_and_next_step_runs() {
    bounded(Duration::from_secs(60), || {
        let dir = tempfile::tempdir().unwrap();
        let _svc = Scripted::spawn(dir.path(), "lsarpc", Handshake::Accept, hang_or_echo());
        let d = dir.path().to_str().unwrap();
        // "H." is swallowed: the first step times out and is cancelled; the
        // second ("ok") is echoed on the same pipe.
        let (code, j) = opipe(&[
            "call",
            "--dir",
            d,
            "--pipe",
            "lsarpc",
            "--timeout-ms",
            "300",
            "--step",
            "transceive:482e",
            "--step",
            "transceive:6f6b",
        ]);
        assert_eq!(code, 1, "{j}");
        assert_eq!(j["steps"][0]["status_name"], "STATUS_CANCELLED");
        assert_eq!(j["steps"][1]["status"], "0x00000000");
        assert_eq!(j["steps"][1]["data_hex"], "6f6b");
    });
}

#[test]
fn call_usage_error_and_wait() {
    bounded(Duration::from_secs(60), || {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_str().unwrap();
        let (code, _) = opipe(&["call", "--dir", d, "--pipe", "x", "--step", "bogus"]);
        assert_eq!(code, 2);
        let (code, j) = opipe(&[
            "wait",
            "--dir",
            d,
            "--pipe",
            "nosuch",
            "--timeout-ms",
            "100",
        ]);
        assert_eq!(
            (code, j["status_name"].as_str()),
            (1, Some("STATUS_IO_TIMEOUT"))
        );
        let _svc = Scripted::spawn(dir.path(), "here", Handshake::Accept, echo());
        let (code, j) = opipe(&[
            "wait",
            "--dir",
            d,
            "--pipe",
            "\\PIPE\\here",
            "--timeout-ms",
            "2000",
        ]);
        assert_eq!((code, j["status"].as_str()), (0, Some("0x00000000")));
    });
}

#[test]
fn call_and_wait_on_the_epoll_backend() {
    bounded(Duration::from_secs(60), || {
        let dir = tempfile::tempdir().unwrap();
        let _svc = Scripted::spawn(dir.path(), "srvsvc", Handshake::Accept, big_reply(3000));
        let d = dir.path().to_str().unwrap();
        let (code, j) = opipe(&[
            "call",
            "--backend",
            "epoll",
            "--dir",
            d,
            "--pipe",
            "srvsvc",
            "--max-out",
            "1024",
            "--step",
            "transceive:0102",
            "--step",
            "read-rest",
        ]);
        assert_eq!(code, 0, "{j}");
        let steps = j["steps"].as_array().unwrap();
        assert_eq!(steps[0]["status_name"], "STATUS_BUFFER_OVERFLOW");
        let total: u64 = steps.iter().map(|s| s["len"].as_u64().unwrap()).sum();
        assert_eq!(total, 3000, "{j}");
        let (code, j) = opipe(&[
            "wait",
            "--backend",
            "epoll",
            "--dir",
            d,
            "--pipe",
            "srvsvc",
            "--timeout-ms",
            "2000",
        ]);
        assert_eq!((code, j["status"].as_str()), (0, Some("0x00000000")));
        let (code, _) = opipe(&["wait", "--backend", "kqueue", "--dir", d, "--pipe", "x"]);
        assert_eq!(code, 2, "unknown backend is a usage error");
    });
}

/// Like [`opipe`], with the stderr text too.
fn opipe_err(args: &[&str]) -> (i32, serde_json::Value, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_opipe"))
        .args(args)
        .output()
        .expect("run opipe");
    let code = out.status.code().unwrap_or(-1);
    let json = serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
    (
        code,
        json,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn call_open_refused_with_any_nonzero_status_exits_1() {
    bounded(Duration::from_secs(60), || {
        // Not NT errors (severity success and warning), then an error: the
        // open failed every time, the steps never ran, so the run failed.
        for (status, name) in [
            (0x1234_5678u32, None),
            (0x8000_0005, Some("STATUS_BUFFER_OVERFLOW")),
            (0xC000_0022, Some("STATUS_ACCESS_DENIED")),
        ] {
            let dir = tempfile::tempdir().unwrap();
            let _svc = Scripted::spawn(dir.path(), "srvsvc", Handshake::Status(status), echo());
            let d = dir.path().to_str().unwrap();
            let (code, j) = opipe(&["call", "--dir", d, "--pipe", "srvsvc", "--step", "read"]);
            assert_eq!(j["open_status"], format!("0x{status:08X}"), "{j}");
            assert_eq!(j["open_status_name"].as_str(), name, "{j}");
            assert_eq!(j["steps"], serde_json::json!([]), "{j}");
            assert_eq!(code, 1, "open status 0x{status:08X}: {j}");
        }
    });
}

#[test]
fn call_silent_handshake_is_always_the_open_deadline() {
    bounded(Duration::from_secs(60), || {
        let dir = tempfile::tempdir().unwrap();
        let _svc = Scripted::spawn(dir.path(), "mute", Handshake::Silent, echo());
        let d = dir.path().to_str().unwrap();
        for backend in ["auto", "epoll"] {
            for _ in 0..3 {
                let t0 = std::time::Instant::now();
                let (code, j) = opipe(&[
                    "call",
                    "--backend",
                    backend,
                    "--dir",
                    d,
                    "--pipe",
                    "mute",
                    "--timeout-ms",
                    "300",
                    "--step",
                    "read",
                ]);
                let took = t0.elapsed();
                // The engine's open deadline decides, never the CLI's cancel.
                assert_eq!(
                    j["open_status_name"], "STATUS_PIPE_NOT_AVAILABLE",
                    "{backend}: {j}"
                );
                assert_eq!(code, 1, "{j}");
                assert!(
                    took >= Duration::from_millis(300) && took < Duration::from_millis(2300),
                    "{backend}: took {took:?}"
                );
            }
        }
    });
}

#[test]
fn call_user_strings_over_the_protocol_limit_are_usage_errors() {
    bounded(Duration::from_secs(60), || {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_str().unwrap();
        let long = "u".repeat(opipe::protocol::MAX_USERINFO_STRING_BYTES + 1);
        for flag in ["--user", "--domain", "--workstation"] {
            let (code, j, err) = opipe_err(&[
                "call", "--dir", d, "--pipe", "x", flag, &long, "--step", "read",
            ]);
            assert_eq!(code, 2, "{flag}: {j} {err}");
            assert!(err.contains("1024"), "{flag}: {err}");
        }
        // At the limit it is fine (the open then fails: nothing listens).
        let at = "u".repeat(opipe::protocol::MAX_USERINFO_STRING_BYTES);
        let (code, j, err) = opipe_err(&[
            "call", "--dir", d, "--pipe", "x", "--user", &at, "--step", "read",
        ]);
        assert_eq!(code, 1, "{j} {err}");
        assert_eq!(j["open_status_name"], "STATUS_OBJECT_NAME_NOT_FOUND", "{j}");
        let (code, _, err) = opipe_err(&[
            "call",
            "--dir",
            d,
            "--pipe",
            "x",
            "--timeout-ms",
            "0",
            "--step",
            "read",
        ]);
        assert_eq!(code, 2, "{err}");
    });
}
