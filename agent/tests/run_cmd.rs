//! `wattest-agent run -- CMD` as a process, against a stub oracle on loopback that answers
//! `POST /v1/telemetry/batch` as the oracle does (receipts, certificates of final windows,
//! RFC 9457 problems, `Retry-After`): the exit status is the command's, no command is left
//! running after a failed start, and the certificate printed is this job's.

#![allow(clippy::unwrap_used)]

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use serde_json::{Value, json};
use std::path::Path;
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use wattest_agent::signer::{SOFTWARE_KEY_BITS, SOFTWARE_KEY_FILE};
use wattest_agent::state::{ChainHead, NodeState, SignerKind, StateDir};
use wattest_shared::SoftwareKey;
use wattest_shared::api::CertificateSummary;
use wattest_shared::jws::JwsSigner as _;

/// How the stub oracle answers.
#[derive(Debug, Clone, Copy)]
enum Oracle {
    /// Every request: 429 `rate_limited`, `Retry-After: 30`.
    RateLimited,
    /// The first request 429 (`Retry-After: 30`); then the windows of job `earlier` are
    /// accepted (a final one with its certificate) and every other window gets a 503.
    OnlyEarlierJob,
    /// Every window accepted; a final one with its job's certificate `cert-<job>`.
    AcceptAll,
}

struct Stub {
    oracle: Oracle,
    requests: usize,
}

fn certificate(job: &str) -> CertificateSummary {
    let t = chrono::DateTime::<chrono::Utc>::UNIX_EPOCH;
    CertificateSummary {
        id: format!("cert-{job}"),
        job_id: Some(job.to_owned()),
        node_id: "node".into(),
        zone: "BE".into(),
        issued_at: t,
        period_start: t,
        period_end: t,
        energy_wh: 1.0,
        grid_wh: 1.0,
        solar_wh: 0.0,
        emissions_kg_co2e: 0.0001,
        intensity_g_co2e_per_kwh: 100.0,
        intensity_dataset: "test".into(),
        avoided_kg_co2e: 0.0,
        attestation_level: "software".into(),
        window_count: 1,
        state: wattest_shared::api::CertificateState::Valid,
    }
}

fn problem(status: u16, code: &str) -> Value {
    json!({
        "type": format!("https://wattest.dev/problems/{code}"),
        "title": StatusCode::from_u16(status).unwrap().canonical_reason().unwrap(),
        "status": status, "detail": format!("stub {code}"), "code": code,
    })
}

/// The oracle's answer to one window, as a batch result.
fn result(oracle: Oracle, jws: &str) -> Value {
    let payload: Value = jws
        .split('.')
        .nth(1)
        .and_then(|p| B64.decode(p).ok())
        .and_then(|p| serde_json::from_slice(&p).ok())
        .unwrap_or(Value::Null);
    let seq = payload["seq"].as_u64().unwrap_or(0);
    let job = payload["job_id"].as_str().unwrap_or("-");
    let accept = matches!(oracle, Oracle::AcceptAll) || job == "earlier";
    if !accept {
        return json!({ "status": 503, "problem": problem(503, "unavailable") });
    }
    let certificate = (payload["final"] == json!(true)).then(|| certificate(job));
    json!({ "status": 200, "accepted": {
        "node_id": "node", "seq": seq, "hash": format!("h{seq}"), "salt_length": "digest",
        "certificate": certificate,
    }})
}

async fn batch(State(stub): State<Arc<Mutex<Stub>>>, body: axum::body::Bytes) -> Response {
    let mut stub = stub.lock().unwrap();
    stub.requests += 1;
    let limited = match stub.oracle {
        Oracle::RateLimited => true,
        Oracle::OnlyEarlierJob => stub.requests == 1,
        Oracle::AcceptAll => false,
    };
    if limited {
        let mut response = (
            StatusCode::TOO_MANY_REQUESTS,
            axum::Json(problem(429, "rate_limited")),
        )
            .into_response();
        let headers = response.headers_mut();
        headers.insert(header::RETRY_AFTER, HeaderValue::from(30));
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        return response;
    }
    let request: Value = serde_json::from_slice(&body).unwrap();
    let results: Vec<Value> = request["windows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| result(stub.oracle, w.as_str().unwrap()))
        .collect();
    axum::Json(json!({ "results": results })).into_response()
}

/// Starts the stub oracle on a loopback port, in a thread of its own; its base URL.
fn start_oracle(oracle: Oracle) -> String {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let stub = Arc::new(Mutex::new(Stub {
                oracle,
                requests: 0,
            }));
            let app = axum::Router::new()
                .route("/v1/telemetry/batch", axum::routing::post(batch))
                .layer(axum::extract::DefaultBodyLimit::max(16 * 1024 * 1024))
                .with_state(stub);
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(listener.local_addr().unwrap()).unwrap();
            axum::serve(listener, app).await.unwrap();
        });
    });
    format!("http://{}", rx.recv().unwrap())
}

/// A state dir enrolled (software key) with the oracle at `oracle`, its chain head at `head`.
fn state_dir(oracle: &str, head: u64) -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    let dir = StateDir::create(tmp.path()).unwrap();
    let key = SoftwareKey::generate(SOFTWARE_KEY_BITS).unwrap();
    dir.write_secret(SOFTWARE_KEY_FILE, &key.to_pkcs8_der().unwrap())
        .unwrap();
    dir.write_node(&NodeState {
        node_id: "node".into(),
        oracle: oracle.to_owned(),
        name: "test".into(),
        zone: "BE".into(),
        kid: key.kid().to_owned(),
        signer: SignerKind::Software,
        tcti: None,
    })
    .unwrap();
    dir.write_chain(&ChainHead {
        seq: head,
        hash: (head > 0).then(|| format!("h{head}")),
        end: None,
    })
    .unwrap();
    tmp
}

/// `wattest-agent run` with 1 s windows on the CPU estimate, then `extra`, then `-- cmd`.
fn run(state: &Path, extra: &[&str], cmd: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_wattest-agent"))
        .args(["run", "--window", "1", "--interval", "0.1"])
        .args(["--tdp-watts", "100", "--state-dir"])
        .arg(state)
        .args(extra)
        .arg("--")
        .args(cmd)
        .env_remove("WATTEST_CONFIG")
        .env_remove("WATTEST_ORACLE")
        .output()
        .unwrap()
}

#[test]
fn run_exits_with_the_commands_status_when_measuring_fails() {
    // A 1 MiB spool already full of an earlier window the oracle does not take now: the first
    // window of this job exceeds the budget, and the signer stops.
    let tmp = state_dir(&start_oracle(Oracle::RateLimited), 1);
    std::fs::write(
        tmp.path().join("spool").join(format!("{:020}.jws", 1)),
        "x".repeat(1024 * 1024),
    )
    .unwrap();
    let out = run(
        tmp.path(),
        &["--spool-budget-mb", "1", "--upload-timeout", "0"],
        &["sh", "-c", "sleep 3; exit 3"],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("MEASUREMENT STOPPED"), "{stderr}");
    assert!(stderr.contains("the measurement failed"), "{stderr}");
    assert!(stderr.contains("1 windows stay in"), "{stderr}");
}

#[test]
fn a_failed_start_leaves_no_command_running() {
    // The metrics address is taken: run fails before the command starts (it used to start it
    // first and leave it running, unmeasured).
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let tmp = state_dir("http://127.0.0.1:9", 0);
    let marker = tmp.path().join("ran");
    let script = format!("sleep 1; touch {}", marker.display());
    let out = run(
        tmp.path(),
        &["--metrics-listen", &taken.local_addr().unwrap().to_string()],
        &["sh", "-c", &script],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(70), "{stderr}");
    assert!(stderr.contains("serving metrics"), "{stderr}");
    std::thread::sleep(Duration::from_secs(2));
    assert!(!marker.exists(), "the command ran: {stderr}");
}

#[test]
fn run_prints_this_jobs_certificate_and_names_an_earlier_jobs() {
    // An earlier job's final window is still spooled, and the oracle takes it only once this
    // run measures (the first drain is rate limited); this job's windows get 503s.
    let tmp = state_dir(&start_oracle(Oracle::OnlyEarlierJob), 1);
    let payload = B64.encode(br#"{"seq":1,"job_id":"earlier","final":true}"#);
    std::fs::write(
        tmp.path().join("spool").join(format!("{:020}.jws", 1)),
        format!("eyJhbGciOiJQUzI1NiJ9.{payload}.c2ln"),
    )
    .unwrap();
    let out = run(
        tmp.path(),
        &["--job-id", "this", "--upload-timeout", "1"],
        &["sh", "-c", "sleep 1.5"],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        !stderr
            .lines()
            .any(|l| l.starts_with("wattest: certificate ")),
        "an earlier job's certificate shown as this run's: {stderr}"
    );
    assert!(
        stderr.contains("wattest: earlier job earlier: certificate cert-earlier: "),
        "{stderr}"
    );
    assert!(
        stderr.contains("no certificate for job this yet"),
        "{stderr}"
    );
    assert!(stderr.contains("windows stay in"), "{stderr}");

    // All accepted: this job's certificate, and the command's status.
    let tmp = state_dir(&start_oracle(Oracle::AcceptAll), 0);
    let out = run(tmp.path(), &["--job-id", "mine"], &["sh", "-c", "exit 5"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(5), "{stderr}");
    assert!(
        stderr.contains("wattest: certificate cert-mine\n"),
        "{stderr}"
    );
    assert!(!stderr.contains("stay in"), "{stderr}");
}

/// An oracle URL with a password (basic auth at a reverse proxy) is printed with the password
/// hidden: the "fetch it at" line.
#[test]
fn the_oracle_urls_password_is_not_printed() {
    let base = start_oracle(Oracle::AcceptAll);
    let with_password = base.replacen("http://", "http://node:pw-secret@", 1);
    let tmp = state_dir(&with_password, 0);
    let out = run(tmp.path(), &["--job-id", "pw"], &["true"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let shown = base.replacen("http://", "http://node:***@", 1);
    assert!(
        stderr.contains(&format!(
            "wattest: fetch it at {shown}/v1/certificates/cert-pw\n"
        )),
        "{stderr}"
    );
    assert!(!stderr.contains("pw-secret"), "{stderr}");
}

#[test]
fn print_config_needs_no_command_and_help_shows_each_default_once() {
    let tmp = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_wattest-agent"))
        .args(["run", "--interval", "2", "--print-config", "--state-dir"])
        .arg(tmp.path())
        .env_remove("WATTEST_CONFIG")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("interval = 2"), "{stdout}");

    // Without --print-config the command is still required.
    let out = Command::new(env!("CARGO_BIN_EXE_wattest-agent"))
        .args(["run", "--state-dir"])
        .arg(tmp.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));

    for sub in ["run", "watch"] {
        let out = Command::new(env!("CARGO_BIN_EXE_wattest-agent"))
            .args([sub, "--help"])
            .output()
            .unwrap();
        let help = String::from_utf8_lossy(&out.stdout);
        assert_eq!(help.matches("[default: 256]").count(), 1, "{help}");
    }
}

#[test]
fn a_command_that_cannot_start_exits_127_or_126_as_in_the_shell() {
    let tmp = state_dir("http://127.0.0.1:9", 0);
    let status = |cmd: &str| {
        let out = run(tmp.path(), &[], &[cmd]);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(stderr.contains("cannot start"), "{cmd}: {stderr}");
        out.status.code()
    };
    // Not found: 127, by path and by name.
    assert_eq!(status("/nonexistent/wattest-no-such-command"), Some(127));
    assert_eq!(status("wattest-no-such-command-on-the-path"), Some(127));
    // Found but not executable: 126 (no execute bit, not even for root; a directory).
    let script = tmp.path().join("not-executable.sh");
    std::fs::write(&script, "#!/bin/sh\nexit 0\n").unwrap();
    assert_eq!(status(script.to_str().unwrap()), Some(126));
    assert_eq!(status(tmp.path().to_str().unwrap()), Some(126));
}

#[test]
fn a_script_whose_interpreter_is_missing_exits_127_naming_it() {
    use std::os::unix::fs::PermissionsExt as _;
    let tmp = state_dir("http://127.0.0.1:9", 0);
    let script = tmp.path().join("badinterp.sh");
    std::fs::write(&script, "#!/nonexistent/interp\nexit 0\n").unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let script = script.to_str().unwrap();
    // What the shell gives (bash and dash: 127), when one is here to ask.
    if let Ok(sh) = Command::new("sh").args(["-c", "\"$0\"", script]).output() {
        assert_eq!(sh.status.code(), Some(127), "sh: {sh:?}");
    }
    let out = run(tmp.path(), &[], &[script]);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(127), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "wattest-agent: error: cannot start {script:?}: its interpreter /nonexistent/interp is missing"
        )),
        "{stderr}"
    );
}

/// `flush` with a spool of windows that are not text: they are set aside, the spool is empty,
/// and flush exits 70 saying where they went, not that the spool was not emptied; each cause is
/// printed once.
#[test]
fn flush_says_where_set_aside_windows_went() {
    // Nothing listens: nothing here needs the oracle.
    let tmp = state_dir("http://127.0.0.1:9", 0);
    let spool = tmp.path().join("spool");
    for seq in [7_u64, 8] {
        std::fs::write(spool.join(format!("{seq:020}.jws")), b"\xff\xfe binary").unwrap();
    }
    let out = Command::new(env!("CARGO_BIN_EXE_wattest-agent"))
        .args(["flush", "--timeout", "5", "--state-dir"])
        .arg(tmp.path())
        .env_remove("WATTEST_ORACLE")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(70), "{stderr}");
    assert!(
        stderr.contains("wattest: 0 windows acknowledged, 2 rejected, 0 still spooled"),
        "{stderr}"
    );
    assert!(
        stderr.contains(
            "wattest-agent: error: 2 windows were set aside in spool/rejected/ (see their .reason.json)"
        ),
        "{stderr}"
    );
    assert!(!stderr.contains("not emptied"), "{stderr}");
    let first = spool.join(format!("{:020}.jws", 7));
    let line = stderr
        .lines()
        .find(|l| l.starts_with("wattest: window 7 "))
        .unwrap_or_else(|| panic!("{stderr}"));
    assert_eq!(
        line,
        format!(
            "wattest: window 7 was set aside in spool/rejected/: unreadable_spool_file: {}: stream did not contain valid UTF-8",
            first.display()
        )
    );
    // The spool is empty; the windows and their reasons are in rejected/.
    assert!(!first.exists());
    let reason: Value = serde_json::from_slice(
        &std::fs::read(
            spool
                .join("rejected")
                .join(format!("{:020}.reason.json", 8)),
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(reason["code"], "unreadable_spool_file");
    assert!(reason["status"].is_null());
    assert!(
        spool
            .join("rejected")
            .join(format!("{:020}.jws", 8))
            .exists()
    );
}

#[test]
fn wattest_log_json_1_writes_json_lines() {
    let tmp = state_dir(&start_oracle(Oracle::AcceptAll), 0);
    let out = Command::new(env!("CARGO_BIN_EXE_wattest-agent"))
        .args(["run", "--window", "1", "--interval", "0.1"])
        .args(["--tdp-watts", "100", "--job-id", "json", "--state-dir"])
        .arg(tmp.path())
        .args(["--", "sh", "-c", "sleep 1.2"])
        .env_remove("WATTEST_CONFIG")
        .env_remove("WATTEST_ORACLE")
        .env("WATTEST_LOG_JSON", "1")
        .env("RUST_LOG", "debug")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    // Log events are JSON objects; the agent's own report lines start with "wattest:".
    let events: Vec<Value> = stderr
        .lines()
        .filter(|l| !l.starts_with("wattest:"))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}\n{stderr}")))
        .collect();
    assert!(!events.is_empty(), "{stderr}");
    assert!(
        events
            .iter()
            .all(|e| e["level"].is_string() && e["timestamp"].is_string()),
        "{stderr}"
    );
    // No NVIDIA driver is the normal case on a host without an NVIDIA GPU: INFO, not WARN.
    for e in events.iter().filter(|e| {
        e["fields"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("NVML is not available"))
    }) {
        assert_eq!(e["level"], "INFO", "{e}");
    }
}

/// The effective uid of this test process, from /proc/self/status (`Uid: real effective …`).
fn effective_uid() -> u32 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let uids = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    uids.split_whitespace().nth(2).unwrap().parse().unwrap()
}

#[test]
fn the_default_state_dir_is_decided_by_the_effective_uid() {
    let out = Command::new(env!("CARGO_BIN_EXE_wattest-agent"))
        .args(["run", "--help"])
        .env_remove("WATTEST_STATE_DIR")
        .env("HOME", "/root")
        .env("XDG_STATE_HOME", "/tmp/wattest-xdg-state")
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    let help = help.split_whitespace().collect::<Vec<_>>().join(" ");
    let expected = if effective_uid() == 0 {
        "/var/lib/wattest"
    } else {
        "/tmp/wattest-xdg-state/wattest"
    };
    assert!(
        help.contains(&format!("[default: {expected}]")),
        "euid {}: {help}",
        effective_uid()
    );
}
