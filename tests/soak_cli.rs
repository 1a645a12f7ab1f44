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
