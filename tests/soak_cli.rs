//! `opipe soak`: a short run (100 pipes, a few seconds, one service
//! restart) must exit 0 and print consistent counts.

use std::process::Command;

const OPIPE: &str = env!("CARGO_BIN_EXE_opipe");

/// The number after `key ` in `text` (e.g. `sent 123,`).
fn number(text: &str, key: &str) -> u64 {
    let at = text
        .find(&format!("{key} "))
        .unwrap_or_else(|| panic!("no '{key}' in:\n{text}"));
    text[at + key.len() + 1..]
        .chars()
        .take_while(|c| c.is_ascii_digit())
        .collect::<String>()
        .parse()
        .unwrap_or_else(|_| panic!("no number after '{key}' in:\n{text}"))
}

fn soak(args: &[&str]) -> String {
    let out = Command::new(OPIPE)
        .arg("soak")
        .args(args)
        .output()
        .expect("run opipe soak");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    eprintln!("{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        out.status.success(),
        "opipe soak failed: {}\n{text}",
        out.status
    );
    text
}

fn check_counts(text: &str) {
    assert_eq!(number(text, "service restarts"), 1);
    let sent = number(text, "sent");
    let answered = number(text, "answered");
    let cancelled = number(text, "cancelled");
    let failed = number(text, "failed");
    assert!(answered > 0, "{text}");
    assert!(answered + cancelled + failed <= sent, "{text}");
    assert_eq!(number(text, "mismatched"), 0);
    assert_eq!(number(text, "hung"), 0);
    assert!(
        number(text, ", end") <= number(text, "fds: start"),
        "{text}"
    );
    assert!(text.lines().any(|l| l == "OK"), "{text}");
}

#[test]
fn short_soak_by_duration() {
    let text = soak(&["--pipes", "100", "--duration", "3", "--seed", "7"]);
    check_counts(&text);
    assert!(text.contains("pipes 100, seed 7"), "{text}");
}

#[test]
fn short_soak_on_the_epoll_backend() {
    let text = soak(&[
        "--pipes",
        "60",
        "--transceives",
        "4000",
        "--seed",
        "5",
        "--backend",
        "epoll",
    ]);
    check_counts(&text);
    assert!(text.contains("backend epoll"), "{text}");
}

#[test]
fn short_soak_by_transceives() {
    let text = soak(&["--pipes", "50", "--transceives", "4000", "--seed", "3"]);
    check_counts(&text);
    assert_eq!(number(&text, "sent"), 4000);
}

#[test]
fn short_soak_in_the_samba_dialect() {
    // The engine opens with Samba's handshake and frames every message;
    // the service (`serve --dialect samba --handler echo`) echoes each
    // message as one. Same checks, on both backends.
    for backend in ["auto", "epoll"] {
        let (code, out, err) = soak_raw(
            &[
                "--dialect",
                "samba",
                "--pipes",
                "60",
                "--transceives",
                "4000",
                "--seed",
                "11",
                "--backend",
                backend,
            ],
            None,
        );
        assert_eq!(code, Some(0), "{backend}: {out}{err}");
        check_counts(&out);
        assert!(out.contains("dialect samba"), "{out}");
        assert_eq!(number(&out, "sent"), 4000);
    }
}

/// `opipe soak ARGS` with a 30 s bound: (exit code, stdout, stderr).
fn soak_raw(args: &[&str], nofile: Option<u64>) -> (Option<i32>, String, String) {
    use std::os::unix::process::CommandExt;
    let mut cmd = Command::new(OPIPE);
    cmd.arg("soak").args(args);
    if let Some(n) = nofile {
        let lim = libc::rlimit {
            rlim_cur: n as libc::rlim_t,
            rlim_max: n as libc::rlim_t,
        };
        // SAFETY: runs in the forked child before exec; setrlimit only
        // reads `lim`, which the closure owns; no allocation, no locks.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    let child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .process_group(0)
        .spawn()
        .expect("run opipe soak");
    let pid = child.id() as i32;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let out = match rx.recv_timeout(std::time::Duration::from_secs(30)) {
        Ok(out) => out.expect("wait for opipe soak"),
        Err(_) => {
            // SAFETY: kill takes no pointers; the group is our child's own.
            unsafe { libc::kill(-pid, libc::SIGKILL) };
            panic!("opipe soak {args:?} ran over 30 s");
        }
    };
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn zero_duration_or_transceives_are_usage_errors() {
    for args in [
        &["--duration", "0"][..],
        &["--transceives", "0"][..],
        &["--pipes", "0"][..],
    ] {
        let (code, out, err) = soak_raw(args, None);
        assert_eq!(code, Some(2), "{args:?}: {out}{err}");
        assert!(err.contains("invalid value"), "{args:?}: {err}");
    }
}

#[test]
fn more_pipes_than_fds_are_clamped_and_said() {
    let (code, out, err) = soak_raw(
        &["--pipes", "100000", "--transceives", "3000", "--seed", "9"],
        Some(512),
    );
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(err.contains("of the 100000 pipes asked for"), "{err}");
    check_counts(&out);
}
