//! The agent drains its spool through the batch endpoint (`POST /v1/telemetry/batch`,
//! `docs/protocol.md` §3.6), with the real binaries on loopback: a backlog signed while the
//! oracle was down reaches it complete, in batches, with windows whose acknowledgement was lost
//! answered by their original receipts. Runs on PostgreSQL too with
//! `WATTEST_TEST_BACKEND=postgres`.

#![allow(clippy::unwrap_used)] // a failed unwrap is the test failing, with its location

use base64::Engine as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use wattest_shared::window::WindowClaims;
use wattest_tests::{Oracle, bin, post_window};

/// The spooled windows (`spool/<seq, 20 digits>.jws`), in seq order.
fn spooled(state: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(state.join("spool"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "jws"))
        .collect();
    files.sort();
    files
}

/// The claims of a compact JWS window (its payload, not verified: the oracle verifies).
fn claims(jws: &str) -> WindowClaims {
    let payload = jws.split('.').nth(1).unwrap();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

/// A certificate decimal string as a float.
fn dec(v: &serde_json::Value) -> f64 {
    v.as_str()
        .unwrap_or_else(|| panic!("{v} is not a decimal string"))
        .parse()
        .unwrap()
}

/// Sum of `wattest_http_requests_total` over statuses for `route` and `method`; the statuses
/// seen, with their counts.
fn http_requests(metrics: &str, route: &str, method: &str) -> (f64, Vec<String>) {
    let (route, method) = (format!("route=\"{route}\""), format!("method=\"{method}\""));
    let lines: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("wattest_http_requests_total{"))
        .filter(|l| {
            let labels = l.split(['{', '}']).nth(1).unwrap_or_default();
            labels.split(',').any(|kv| kv == route) && labels.split(',').any(|kv| kv == method)
        })
        .collect();
    let total = lines
        .iter()
        .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
        .sum();
    (total, lines.iter().map(|l| (*l).to_owned()).collect())
}

/// The value of an un-labelled sample `name` in an OpenMetrics exposition.
fn sample(metrics: &str, name: &str) -> Option<f64> {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

#[test]
fn a_backlog_spooled_while_the_oracle_was_down_drains_through_the_batch_endpoint() {
    let mut oracle = Oracle::start();
    let (state, node_id) = oracle.enroll_agent("BE");
    oracle.stop();

    // A 21 s job in 1 s windows with the oracle down: every window stays in the spool.
    let out = Command::new(bin("wattest-agent"))
        .args([
            "run",
            "--window",
            "1",
            "--interval",
            "0.2",
            "--upload-timeout",
            "1",
            "--job-id",
            "backlog",
            "--state-dir",
        ])
        .arg(state.path())
        .args(["--", "sleep", "21"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("could not be reached"), "{stderr}");

    let files = spooled(state.path());
    let windows: Vec<(String, WindowClaims)> = files
        .iter()
        .map(|f| {
            let jws = std::fs::read_to_string(f).unwrap();
            let c = claims(&jws);
            (jws, c)
        })
        .collect();
    let n = windows.len();
    assert!(n >= 20, "{n} windows spooled");
    let seqs: Vec<u64> = windows.iter().map(|(_, c)| c.seq).collect();
    assert_eq!(seqs, (1..=n as u64).collect::<Vec<_>>(), "the whole chain");
    assert!(windows.iter().all(|(_, c)| c.node_id == node_id));
    assert!(windows[n - 1].1.is_final && windows[..n - 1].iter().all(|(_, c)| !c.is_final));
    let consumed: f64 = windows.iter().map(|(_, c)| c.consumed().0).sum();
    let solar: f64 = windows.iter().map(|(_, c)| c.solar_wh.0).sum();
    assert!(consumed > 0.0);

    // The oracle comes back. The first three windows reach it by hand but their
    // acknowledgements are "lost" (they stay in the spool): the batch gets their original
    // receipts.
    oracle.restart();
    for (jws, c) in &windows[..3] {
        let (status, body) = post_window(&oracle.url, jws);
        assert_eq!((status, body["seq"].as_u64()), (200, Some(c.seq)), "{body}");
    }
    assert_eq!(spooled(state.path()).len(), n);

    let out = Command::new(bin("wattest-agent"))
        .args(["flush", "--timeout", "60", "--state-dir"])
        .arg(state.path())
        .env("RUST_LOG", "info")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{stderr}\noracle log:\n{}",
        oracle.log()
    );
    assert!(
        stderr.contains(&format!(
            "{n} windows acknowledged, 0 rejected, 0 still spooled"
        )),
        "{stderr}"
    );
    assert!(
        !stderr.contains("one at a time"),
        "no fall-back to single posts: {stderr}"
    );
    assert!(spooled(state.path()).is_empty(), "spool drained");
    assert!(
        !state.path().join("spool/rejected").exists(),
        "no window was refused"
    );

    // One certificate for the job, covering every window, with their energy.
    let list = oracle.get_json(&format!("/v1/certificates?node={node_id}"));
    let list = list["certificates"].as_array().unwrap();
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0]["job_id"], "backlog");
    let id = list[0]["id"].as_str().unwrap();
    let claims = oracle.get_json(&format!("/v1/certificates/{id}"))["claims"].clone();
    let telemetry = &claims["wattest.telemetry"];
    assert_eq!(telemetry["first_seq"], 1, "{telemetry}");
    assert_eq!(
        telemetry["last_seq"].as_u64(),
        Some(n as u64),
        "{telemetry}"
    );
    assert_eq!(telemetry["count"].as_u64(), Some(n as u64), "{telemetry}");
    let energy = &claims["wattest.energy"];
    let tolerance = 1e-6 * (n as f64 + 1.0);
    assert!(
        (dec(&energy["consumed_wh"]) - consumed).abs() <= tolerance,
        "certificate {energy} vs Σ windows consumed {consumed} Wh"
    );
    assert!(
        (dec(&energy["solar_wh"]) - solar).abs() <= tolerance,
        "certificate {energy} vs Σ windows solar {solar} Wh"
    );

    // The oracle (restarted: fresh counters) saw the agent's windows in batches only: the
    // three single posts are the test's own.
    let metrics = oracle.get_text("/metrics");
    let (batches, lines) = http_requests(&metrics, "/v1/telemetry/batch", "POST");
    assert!(
        batches >= 1.0 && batches < n as f64,
        "{batches} batch requests for {n} windows: {lines:?}"
    );
    assert!(
        lines.iter().all(|l| l.contains("status=\"200\"")),
        "every batch answered 200: {lines:?}"
    );
    let (singles, lines) = http_requests(&metrics, "/v1/telemetry", "POST");
    assert_eq!(singles, 3.0, "{lines:?}");
    // Accepted answers: the batches' n (duplicates' original receipts included) and the hand
    // posts' three.
    let accepted = sample(&metrics, "wattest_windows_accepted_total").unwrap();
    assert!(accepted >= n as f64, "{accepted} accepted for {n} windows");
}
