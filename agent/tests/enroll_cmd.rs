//! `wattest-agent enroll` as a process: an `--oracle` that would send the enrollment token over
//! plain HTTP to another host is refused before anything is sent or written.

#![allow(clippy::unwrap_used)]

use std::process::Command;
use std::time::{Duration, Instant};

fn enroll(state: &std::path::Path, oracle: &str, extra: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_wattest-agent"))
        .args(["enroll", "--oracle", oracle, "--name", "n", "--zone", "BE"])
        .args(extra)
        .arg("--state-dir")
        .arg(state)
        .env("WATTEST_TOKEN", "node-token-must-not-leave")
        .env_remove("WATTEST_ORACLE")
        .output()
        .unwrap()
}

/// 192.0.2.1 is TEST-NET-1 (RFC 5737): never contacted here. The refusal is immediate (no
/// connection attempt, which would take the 10 s connect timeout), exits 2, says why and what
/// to pass, and leaves no state dir behind.
#[test]
fn plain_http_to_another_host_is_refused_without_allow_http() {
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    let started = Instant::now();
    let out = enroll(&state, "http://node:pw-secret@192.0.2.1:8080", &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(started.elapsed() < Duration::from_secs(5), "{stderr}");
    assert!(stderr.contains("plain http://"), "{stderr}");
    assert!(stderr.contains("192.0.2.1"), "{stderr}");
    assert!(stderr.contains("--allow-http"), "{stderr}");
    assert!(stderr.contains("https://"), "{stderr}");
    assert!(!stderr.contains("pw-secret"), "{stderr}");
    assert!(!stderr.contains("node-token-must-not-leave"), "{stderr}");
    assert!(!state.exists(), "nothing is created for a refused URL");
    assert!(out.stdout.is_empty());
}

/// With --allow-http the same URL is tried (and fails here, as nothing answers at port 9 of
/// loopback: the check is the scheme's, not the host's reachability).
#[test]
fn allow_http_lifts_the_refusal_and_loopback_needs_no_flag() {
    let tmp = tempfile::tempdir().unwrap();
    // Loopback over plain HTTP needs no flag: it is tried (and nothing listens on port 9).
    let out = enroll(tmp.path(), "http://127.0.0.1:9", &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(70), "{stderr}");
    assert!(stderr.contains("contacting the oracle"), "{stderr}");
    let out = enroll(tmp.path(), "http://localhost:9", &["--allow-http"]);
    assert_eq!(out.status.code(), Some(70));
    // Not a URL: refused before anything is sent.
    let out = enroll(tmp.path(), "oracle.example.org", &["--allow-http"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("not a URL"), "{stderr}");
}

#[test]
fn enroll_help_explains_allow_http() {
    let out = Command::new(env!("CARGO_BIN_EXE_wattest-agent"))
        .args(["enroll", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    let flat = help.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(
        flat.contains("--allow-http Send the enrollment token over plain http:// to a host other than this machine."),
        "{help}"
    );
    assert!(
        flat.contains("`run`, `watch` and `flush` need no such flag: they send only signed windows, which carry no token"),
        "{help}"
    );
}
