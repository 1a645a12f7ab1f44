//! `opipe call --dialect samba` and `opipe wait --dialect samba` against a
//! standalone `samba-dcerpcd` (tests/common/samba.rs): issue 13's
//! done-when. Skipped, loudly, only where Samba is not installed.

mod common;

use std::process::Command;
use std::time::Duration;

use common::samba::SambaRpcd;
use opipe::protocol::dcerpc::{
    decode_bind_ack, decode_response, encode_bind, encode_request, DEFAULT_MAX_FRAG, NDR_SYNTAX,
    RESULT_ACCEPTANCE, SRVSVC_SYNTAX,
};
use opipe::protocol::srvsvc::{
    decode_netr_server_get_info_101, encode_netr_server_get_info, OPNUM_NETR_SERVER_GET_INFO,
};

const NETBIOS_NAME: &str = "CALLSRV";

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

fn opipe(args: &[String]) -> (i32, serde_json::Value, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_opipe"))
        .args(args)
        .output()
        .expect("run opipe");
    let json = serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    (out.status.code().unwrap_or(-1), json, stderr)
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}

#[test]
fn call_binds_and_gets_the_server_name_from_samba() {
    let Some(rpcd) = SambaRpcd::start(NETBIOS_NAME) else {
        return;
    };
    let dir = rpcd.ncalrpc_dir.display().to_string();
    common::bounded(Duration::from_secs(60), move || {
        let bind = encode_bind(1, SRVSVC_SYNTAX.into(), NDR_SYNTAX.into());
        let unc = format!("\\\\{NETBIOS_NAME}");
        let stub = encode_netr_server_get_info(Some(&unc), 101).expect("stub");
        let call = encode_request(2, 0, OPNUM_NETR_SERVER_GET_INFO, &stub, DEFAULT_MAX_FRAG);
        for backend in ["io-uring", "epoll"] {
            let mut a = args(&["call", "--dialect", "samba", "--dir", &dir]);
            a.extend(args(&[
                "--pipe",
                "srvsvc",
                "--anonymous",
                "--backend",
                backend,
            ]));
            a.push("--step".into());
            a.push(format!("transceive:{}", hex(&bind)));
            a.push("--step".into());
            a.push(format!("transceive:{}", hex(&call)));
            let (code, j, stderr) = opipe(&a);
            if stderr.contains("io_uring") && code != 0 && backend == "io-uring" {
                eprintln!("SKIPPED io-uring: {stderr}");
                continue;
            }
            assert_eq!(code, 0, "{backend}: {j} {stderr}");
            assert_eq!(j["open_status_name"], "STATUS_SUCCESS", "{j}");
            let steps = j["steps"].as_array().expect("steps");
            assert_eq!(steps.len(), 2);
            for s in steps {
                assert_eq!(s["status_name"], "STATUS_SUCCESS", "{s}");
            }
            let ack = unhex(steps[0]["data_hex"].as_str().expect("hex"));
            let ack = decode_bind_ack(&ack).expect("bind_ack");
            assert_eq!(ack.results[0].result, RESULT_ACCEPTANCE);
            let resp = unhex(steps[1]["data_hex"].as_str().expect("hex"));
            let resp = decode_response(&resp).expect("response");
            let (info, werror) = decode_netr_server_get_info_101(resp.stub).expect("info101");
            assert_eq!(werror, 0);
            assert_eq!(
                info.and_then(|i| i.server_name).as_deref(),
                Some(NETBIOS_NAME),
                "{backend}"
            );
        }
    });
}

#[test]
fn wait_finds_samba_pipes_under_np() {
    let Some(rpcd) = SambaRpcd::start(NETBIOS_NAME) else {
        return;
    };
    let dir = rpcd.ncalrpc_dir.display().to_string();
    common::bounded(Duration::from_secs(60), move || {
        let a = args(&[
            "wait",
            "--dialect",
            "samba",
            "--dir",
            &dir,
            "--pipe",
            "srvsvc",
        ]);
        let (code, j, stderr) = opipe(&a);
        assert_eq!(code, 0, "{j} {stderr}");
        assert_eq!(j["status_name"], "STATUS_SUCCESS");
        // The illumos dialect looks for <dir>/srvsvc, which is not there.
        let mut a = args(&["wait", "--dir", &dir, "--pipe", "srvsvc"]);
        a.extend(args(&["--timeout-ms", "200"]));
        let (code, j, _) = opipe(&a);
        assert_eq!(code, 1, "{j}");
        // An open as a guest gets the pipe too.
        let mut a = args(&["call", "--dialect", "samba", "--dir", &dir, "--pipe"]);
        a.extend(args(&["srvsvc", "--guest", "--step", "write:00"]));
        let (code, j, stderr) = opipe(&a);
        assert_eq!(j["open_status_name"], "STATUS_SUCCESS", "{j} {stderr}");
        assert_eq!(code, 0, "{j}");
        // And as a user given by SID.
        let mut a = args(&["call", "--dialect", "samba", "--dir", &dir, "--pipe"]);
        a.extend(args(&["srvsvc", "--user", "alice", "--uid", "1000"]));
        a.extend(args(&[
            "--sid",
            "S-1-5-21-11-22-33-1000",
            "--step",
            "write:00",
        ]));
        let (code, j, stderr) = opipe(&a);
        assert_eq!(j["open_status_name"], "STATUS_SUCCESS", "{j} {stderr}");
        assert_eq!(code, 0, "{j}");
        let mut a = args(&["call", "--dialect", "samba", "--dir", &dir, "--pipe"]);
        a.extend(args(&["srvsvc", "--sid", "S-1-5-bad", "--step", "read"]));
        let (code, _, stderr) = opipe(&a);
        assert_eq!(code, 2, "a bad SID is a usage error: {stderr}");
    });
}
