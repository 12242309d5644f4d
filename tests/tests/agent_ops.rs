//! Operating the agent: Prometheus metrics on `--metrics-listen` while a job runs against a real
//! oracle, `--print-config` (flags over file over defaults) and JSON log lines (`--log-json`).

#![allow(clippy::unwrap_used)] // a failed unwrap is the test failing, with its location

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use wattest_tests::{Oracle, bin, free_port};

/// The value of an un-labelled sample `name` in an OpenMetrics exposition.
fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

fn scrape(port: u16) -> Option<String> {
    let resp = reqwest::blocking::get(format!("http://127.0.0.1:{port}/metrics")).ok()?;
    assert_eq!(resp.status(), 200);
    assert!(
        resp.headers()[reqwest::header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("application/openmetrics-text"),
    );
    resp.text().ok()
}

/// Starts `wattest-agent run` with 1 s windows sampled every 0.1 s, serving metrics on a free
/// port, for `sleep SECONDS`; returns the process and the metrics port.
fn spawn_run(state: &std::path::Path, seconds: &str, extra: &[&str]) -> (std::process::Child, u16) {
    let port = free_port();
    let child = Command::new(bin("wattest-agent"))
        .args(["run", "--window", "1", "--interval", "0.1"])
        .args(extra)
        .arg("--metrics-listen")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--state-dir")
        .arg(state)
        .args(["--", "sleep", seconds])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    (child, port)
}

/// Scrapes `/metrics` every 200 ms until `done` holds (a hang guard of 15 s, not a timing
/// assertion); the exposition that satisfied it.
fn scrape_until(port: u16, what: &str, done: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(text) = scrape(port)
            && done(&text)
        {
            return text;
        }
        assert!(Instant::now() < deadline, "{what} not seen on /metrics");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn metrics_listener_counts_samples_windows_and_acknowledgements_during_a_job() {
    let oracle = Oracle::start();
    let (state, _node_id) = oracle.enroll_agent("BE");
    let (child, port) = spawn_run(state.path(), "4", &[]);
    // Scrape while the job runs, until two windows were acknowledged.
    let text = scrape_until(port, "two acknowledged windows", |t| {
        sample(t, "wattest_agent_windows_acknowledged_total").unwrap_or(0.0) >= 2.0
    });
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");

    let samples = sample(&text, "wattest_agent_samples_total").unwrap();
    let signed = sample(&text, "wattest_agent_windows_signed_total").unwrap();
    let acked = sample(&text, "wattest_agent_windows_acknowledged_total").unwrap();
    // 1 s windows sampled every 0.1 s: about ten samples per signed window.
    assert!(
        samples >= 5.0 * signed,
        "samples {samples}, windows {signed}"
    );
    assert!(signed >= acked, "signed {signed} < acknowledged {acked}");
    assert_eq!(
        sample(&text, "wattest_agent_windows_rejected_total"),
        Some(0.0)
    );
    assert_eq!(
        sample(&text, "wattest_agent_upload_errors_total"),
        Some(0.0)
    );
    assert!(sample(&text, "wattest_agent_spool_windows").unwrap() <= signed - acked + 1.0);
    let energy: f64 = text
        .lines()
        .filter(|l| l.starts_with("wattest_agent_energy_joules_total{source="))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
        .sum();
    assert!(energy > 0.0, "per-source energy counters: {text}");
}

#[test]
fn upload_errors_and_spool_depth_show_while_the_oracle_is_down() {
    let mut oracle = Oracle::start();
    let (state, _node_id) = oracle.enroll_agent("BE");
    oracle.stop();
    let (child, port) = spawn_run(state.path(), "3", &["--upload-timeout", "1"]);
    let text = scrape_until(port, "an upload error and two spooled windows", |t| {
        sample(t, "wattest_agent_upload_errors_total").unwrap_or(0.0) >= 1.0
            && sample(t, "wattest_agent_spool_windows").unwrap_or(0.0) >= 2.0
    });
    assert_eq!(
        sample(&text, "wattest_agent_windows_acknowledged_total"),
        Some(0.0)
    );
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("windows stay in"),
        "the spooled windows are reported: {stderr}"
    );
}

#[test]
fn print_config_shows_flags_over_the_file_over_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("agent.toml");
    std::fs::write(
        &file,
        "interval = 0.5\ntdp_watts = 65.0\nmetrics_listen = \"127.0.0.1:9464\"\n",
    )
    .unwrap();
    let out = Command::new(bin("wattest-agent"))
        .args(["sources", "--config"])
        .arg(&file)
        .args(["--interval", "2", "--print-config"])
        .env("WATTEST_TDP_WATTS", "80")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed: toml::Table = toml::from_str(&String::from_utf8(out.stdout).unwrap()).unwrap();
    assert_eq!(printed["interval"].as_float(), Some(2.0), "flag wins");
    assert_eq!(
        printed["tdp_watts"].as_float(),
        Some(80.0),
        "the environment wins over the file"
    );
    assert_eq!(printed["metrics_listen"].as_str(), Some("127.0.0.1:9464"));
    assert_eq!(printed["sysfs_root"].as_str(), Some("/sys"), "default");

    // An unknown key is an error naming it, not a silently ignored setting.
    std::fs::write(&file, "intervall = 0.5\n").unwrap();
    let out = Command::new(bin("wattest-agent"))
        .args(["sources", "--print-config", "--config"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("intervall"));
}

#[test]
fn log_json_writes_one_json_object_per_line() {
    let oracle = Oracle::start();
    let (state, _node_id) = oracle.enroll_agent("BE");
    let out = Command::new(bin("wattest-agent"))
        .args([
            "--log-json",
            "run",
            "--window",
            "1",
            "--interval",
            "0.2",
            "--state-dir",
        ])
        .arg(state.path())
        .args(["--", "true"])
        .env("RUST_LOG", "debug")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let events: Vec<serde_json::Value> = stderr
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert!(
        events
            .iter()
            .any(|e| e["fields"]["message"] == "Window signed and spooled."),
        "{stderr}"
    );
    assert!(
        events
            .iter()
            .all(|e| e["level"].is_string() && e["timestamp"].is_string())
    );
}

/// At its spool's disk budget `watch` stops measuring loudly: the error is logged when it
/// happens and the agent exits non-zero, instead of running on without signing anything.
#[test]
fn watch_stops_loudly_at_the_spool_budget() {
    let mut oracle = Oracle::start();
    let (state, _node_id) = oracle.enroll_agent("BE");
    oracle.stop();
    // The spool already holds 1 MiB the oracle never acknowledged (it is down): a file named
    // as a spooled window at or below the chain head (the agent reads only its last window
    // above the head when it starts).
    let spool = state.path().join("spool");
    std::fs::create_dir_all(&spool).unwrap();
    std::fs::write(spool.join(format!("{:020}.jws", 0)), vec![b'x'; 1 << 20]).unwrap();
    let mut child = Command::new(bin("wattest-agent"))
        .args(["watch", "--window", "1", "--interval", "0.1"])
        .args(["--spool-budget-mb", "1", "--state-dir"])
        .arg(state.path())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // A hang guard, not a timing assertion: the first window closes after about a second.
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            child.kill().unwrap();
            let out = child.wait_with_output().unwrap();
            panic!(
                "watch kept running at its spool budget: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!status.success(), "{status}: {stderr}");
    assert!(stderr.contains("is full"), "the budget is named: {stderr}");
    assert!(
        stderr.contains("measurement stops"),
        "logged when it happens: {stderr}"
    );
}
