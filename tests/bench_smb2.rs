//! `opipe bench --smb2` end to end: the real binary, its own pipe service,
//! a real Samba smbd on a loopback port, and `opipe smb2` when this build
//! has it (else the clear message). Short runs (0.3-0.5 s), every command
//! bounded, and no smbd process left behind (checked by process group).
//! Skipped, loudly, where smbd is not installed.

mod common;

use std::fs;
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;

use common::cli::{opipe, stderr};
use common::smbd::require_smbd;

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Runs `opipe bench --smb2 --json <args>`, which must exit 0; returns
/// the JSON document and stderr.
fn bench_json(args: &[&str]) -> (Value, String) {
    let mut all = vec!["--smb2"];
    all.extend_from_slice(args);
    let (code, v, err) = common::cli::bench_json(&all).expect("--smb2 needs no io_uring");
    assert_eq!(code, Some(0), "opipe bench --json {all:?} failed:\n{err}");
    (v, err)
}

/// The numbers after `(pgid ` in the bench's notes: the server groups.
fn pgids(stderr: &str) -> Vec<u32> {
    stderr
        .split("(pgid ")
        .skip(1)
        .filter_map(|s| s.split(')').next()?.parse().ok())
        .collect()
}

/// Whether any process of group `pgid` is alive.
fn group_alive(pgid: u32) -> bool {
    !common::group_processes(pgid).is_empty()
}

/// No process of the groups the bench started is left (bounded wait:
/// killed processes are reaped by whoever adopted them).
fn assert_no_server_left(stderr: &str, expect_groups: usize) {
    let groups = pgids(stderr);
    assert_eq!(groups.len(), expect_groups, "{stderr}");
    for g in groups {
        let deadline = Instant::now() + Duration::from_secs(5);
        while group_alive(g) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(!group_alive(g), "process group {g} outlived the bench");
    }
    // And the pipe service's directory is gone.
    let dir = stderr
        .lines()
        .find(|l| l.contains("pipe service started: "))
        .and_then(|l| l.split_whitespace().find(|w| w.ends_with("/np/srvsvc")))
        .and_then(|w| w.strip_suffix("/np/srvsvc"))
        .unwrap_or_else(|| panic!("no pipe service line in {stderr}"));
    assert!(!Path::new(dir).exists(), "{dir} left behind");
}

/// A run's row is sane: every connection set up, calls made and verified,
/// no error, CPU and latencies positive and ordered.
fn check_row(r: &Value) {
    let f = |k: &str| {
        r[k].as_f64()
            .unwrap_or_else(|| panic!("{k} missing in {r}"))
    };
    assert_eq!(r["connected"], r["connections"], "{r}");
    assert_eq!(r["errors"], 0, "{r}");
    assert_eq!(r["dialect"], "3.1.1", "{r}");
    assert!(f("calls") >= 10.0, "{r}");
    assert!(f("calls_per_s") > 0.0, "{r}");
    // Some CPU, and less than a second per call.
    assert!(f("server_cpu_us_per_call") > 0.0, "{r}");
    assert!(f("server_cpu_us_per_call") < 1e6, "{r}");
    assert!(f("service_cpu_us_per_call") > 0.0, "{r}");
    assert!(f("p50_us") > 0.0, "{r}");
    assert!(
        f("p50_us") <= f("p99_us") && f("p99_us") <= f("p999_us"),
        "{r}"
    );
    assert!(f("elapsed_s") >= 0.3, "{r}");
    // The server's processes: smbd forks one per connection.
    if r["server"] == "smbd" {
        assert!(
            f("server_processes") > f("connections"),
            "one smbd per connection and the parent: {r}"
        );
    }
}

fn rows<'a>(v: &'a Value, server: &str) -> Vec<&'a Value> {
    v["results"]
        .as_array()
        .expect("results")
        .iter()
        .filter(|r| r["server"] == server)
        .collect()
}

#[test]
fn smbd_is_measured_and_opipe_smb2_too_or_said_missing() {
    if !require_smbd("smbd_is_measured_and_opipe_smb2_too_or_said_missing") {
        return;
    }
    let (v, err) = bench_json(&["--pipes", "1,4", "--duration", "0.5", "--rounds", "1"]);
    let smbd = rows(&v, "smbd");
    assert_eq!(smbd.len(), 2, "{v}");
    for r in &smbd {
        check_row(r);
    }
    assert_eq!(smbd[0]["connections"], 1);
    assert_eq!(smbd[1]["connections"], 4);
    assert_eq!(v["servers"]["smbd"], "ran");
    let opipe = rows(&v, "opipe-smb2");
    if v["servers"]["opipe-smb2"] == "ran" {
        assert_eq!(opipe.len(), 2, "{v}");
        for r in &opipe {
            check_row(r);
        }
        let ratio = &v["summary"][1]["opipe_vs_smbd"]["calls_per_s"]["median"];
        assert!(ratio.as_f64().is_some_and(|x| x > 0.0), "{v}");
        assert_no_server_left(&err, 2);
    } else {
        // Said clearly, in the JSON, in its notes and on stderr.
        assert!(opipe.is_empty(), "{v}");
        let why = v["servers"]["opipe-smb2"].as_str().expect("a reason");
        assert!(
            why.starts_with("not run:") && why.contains("no `opipe smb2` subcommand"),
            "{why}"
        );
        assert!(v["notes"][0]
            .as_str()
            .is_some_and(|n| n.contains("opipe smb2 NOT measured")));
        assert!(err.contains("opipe smb2 NOT measured"), "{err}");
        assert!(v["summary"][0]["opipe_vs_smbd"]["calls_per_s"].is_null());
        assert_no_server_left(&err, 1);
    }
}

/// Writes a stand-in for `opipe smb2` into `dir`: a script keeping the
/// subcommand's contract (`smb2 --help` exits 0; `smb2 --listen ... --dir
/// DIR` prints `listening on 127.0.0.1:<port>` once it accepts, and runs
/// until signalled) with a real smbd behind it pointed at DIR.
fn stand_in(dir: &Path) -> std::path::PathBuf {
    let root = dir.join("stand-in");
    fs::create_dir_all(&root).unwrap();
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let base = format!(
        "{}smb ports = {port}\n",
        common::samba::global_conf(&root, "STANDIN", "smbd.log")
    );
    fs::write(root.join("base.conf"), base).unwrap();
    let script = format!(
        r#"#!/bin/bash
[ "$1" = smb2 ] || exit 2
shift
[ "$1" = --help ] && exit 0
while [ $# -gt 0 ]; do
    case "$1" in --dir) pipes="$2"; shift;; esac
    shift
done
root='{root}'
{{ cat "$root/base.conf"; echo "external_rpc_pipe:socket_dir = $pipes"; }} > "$root/smb.conf"
/usr/sbin/smbd --foreground --no-process-group -s "$root/smb.conf" </dev/null >/dev/null 2>&1 &
for i in $(seq 400); do
    (exec 3<>/dev/tcp/127.0.0.1/{port}) 2>/dev/null && break
    sleep 0.05
done
echo "listening on 127.0.0.1:{port}"
wait
"#,
        root = root.display()
    );
    let exe = dir.join("fake-opipe");
    fs::write(&exe, script).unwrap();
    fs::set_permissions(&exe, fs::Permissions::from_mode(0o755)).unwrap();
    exe
}

/// A temp dir holding a [`stand_in`] and the stand-in's path; `None`
/// where smbd is not installed (said loudly, naming `test`).
fn with_stand_in(test: &str) -> Option<(tempfile::TempDir, String)> {
    if !require_smbd(test) {
        return None;
    }
    let tmp = tempfile::tempdir().unwrap();
    let exe = stand_in(tmp.path()).to_str().unwrap().to_owned();
    Some((tmp, exe))
}

#[test]
fn a_second_server_behind_the_contract_is_measured_and_compared() {
    let Some((_tmp, exe)) =
        with_stand_in("a_second_server_behind_the_contract_is_measured_and_compared")
    else {
        return;
    };
    let exe = exe.as_str();
    let (v, err) = bench_json(&[
        "--pipes",
        "2",
        "--duration",
        "0.3",
        "--rounds",
        "2",
        "--smb2-exe",
        exe,
    ]);
    assert_eq!(v["servers"]["opipe-smb2"], "ran", "{v}\n{err}");
    let (front, smbd) = (rows(&v, "opipe-smb2"), rows(&v, "smbd"));
    assert_eq!((front.len(), smbd.len()), (2, 2), "{v}");
    for r in front.iter().chain(&smbd) {
        check_row(r);
    }
    // The order is swapped in round 2: the stand-in first in round 1 only.
    let order: Vec<(u64, &str)> = v["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["round"].as_u64().unwrap(), r["server"].as_str().unwrap()))
        .collect();
    assert_eq!(
        order,
        [
            (1, "opipe-smb2"),
            (1, "smbd"),
            (2, "smbd"),
            (2, "opipe-smb2")
        ]
    );
    let s = &v["summary"][0];
    assert_eq!(s["rounds_compared"], 2, "{s}");
    for k in ["calls_per_s", "server_cpu_us_per_call", "p50_us", "p99_us"] {
        let m = &s["opipe_vs_smbd"][k];
        let (lo, med, hi) = (
            m["min"].as_f64().unwrap(),
            m["median"].as_f64().unwrap(),
            m["max"].as_f64().unwrap(),
        );
        assert!(0.0 < lo && lo <= med && med <= hi, "{k}: {m}");
    }
    assert!(s["opipe_smb2"]["calls_per_s"].as_f64().unwrap() > 0.0);
    assert_no_server_left(&err, 2);
}

#[test]
fn the_table_names_both_servers_and_the_ratios() {
    let Some((_tmp, exe)) = with_stand_in("the_table_names_both_servers_and_the_ratios") else {
        return;
    };
    let out = opipe(&[
        "bench",
        "--smb2",
        "--pipes",
        "1",
        "--duration",
        "0.3",
        "--smb2-exe",
        &exe,
    ]);
    let (stdout, err) = (text(&out.stdout), stderr(&out));
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{err}");
    assert!(stdout.contains("server us/call"), "{stdout}");
    let line = |name: &str| {
        stdout
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("no {name} line in\n{stdout}"))
            .to_owned()
    };
    assert!(line("opipe-smb2 ").contains("3.1.1"), "{stdout}");
    assert!(line("smbd ").contains("3.1.1"), "{stdout}");
    // 1 connection: ratios, and a verdict on the goal (p50 no worse
    // than smbd's): "met" or "not met".
    let ratios = line("1 conns");
    assert!(ratios.contains('x') && ratios.ends_with("met"), "{stdout}");
    assert_no_server_left(&err, 2);
}

#[test]
fn samba_rpcd_can_be_the_pipe_service_behind_the_servers() {
    if !require_smbd("samba_rpcd_can_be_the_pipe_service_behind_the_servers") {
        return;
    }
    let (v, err) = bench_json(&[
        "--target",
        "samba-rpcd",
        "--pipes",
        "2",
        "--duration",
        "0.3",
    ]);
    assert!(
        v["pipe_service"]
            .as_str()
            .is_some_and(|s| s.starts_with("samba-dcerpcd")),
        "{v}"
    );
    // Every reply was checked against samba-dcerpcd's NetBIOS name (errors 0).
    let smbd = rows(&v, "smbd");
    assert_eq!(smbd.len(), 1, "{v}");
    check_row(smbd[0]);
    // samba-dcerpcd's group, smbd's, and opipe smb2's when it ran.
    let opipe_ran = v["servers"]["opipe-smb2"] == "ran";
    assert_no_server_left(&err, 2 + usize::from(opipe_ran));
}

#[test]
fn a_second_server_that_fails_to_start_is_reported_and_smbd_still_runs() {
    if !require_smbd("a_second_server_that_fails_to_start_is_reported_and_smbd_still_runs") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let exe = tmp.path().join("broken-opipe");
    fs::write(
        &exe,
        "#!/bin/sh\n[ \"$2\" = --help ] && exit 0\necho 'no io_uring today' >&2\nexit 3\n",
    )
    .unwrap();
    fs::set_permissions(&exe, fs::Permissions::from_mode(0o755)).unwrap();
    let (v, err) = bench_json(&[
        "--pipes",
        "1",
        "--duration",
        "0.3",
        "--smb2-exe",
        exe.to_str().unwrap(),
    ]);
    let why = v["servers"]["opipe-smb2"].as_str().expect("a reason");
    assert!(
        why.contains("exited (exit status: 3) before saying where it listens")
            && why.contains("no io_uring today"),
        "{why}"
    );
    assert_eq!(rows(&v, "smbd").len(), 1, "{v}");
    check_row(rows(&v, "smbd")[0]);
    assert_no_server_left(&err, 1);
}

#[test]
fn engine_options_do_not_mix_with_smb2() {
    for extra in [
        &["--engine", "tokio"][..],
        &["--request-size", "128"],
        &["--requests", "10"],
    ] {
        let mut args = vec!["bench", "--smb2"];
        args.extend_from_slice(extra);
        let out = opipe(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
    }
    // --smb2-exe belongs to --smb2.
    let out = opipe(&["bench", "--smb2-exe", "/bin/true"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    // --target is shared with the pipe bench, where samba-rpcd needs
    // Samba's dialect (with --smb2 the dialect is Samba's anyway).
    let out = opipe(&["bench", "--target", "samba-rpcd", "--engine", "tokio"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("add --dialect samba"),
        "{}",
        stderr(&out)
    );
}
