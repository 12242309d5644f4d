//! End to end: the real `wattest-oracle`, `wattest-agent` and `wattest-verify` binaries against
//! each other on loopback — a real job measured, signed, verified, certified and exported.

#![allow(clippy::unwrap_used)]

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use chrono::{Duration, Utc};
use std::process::Command;
use wattest_shared::jws::{JwsSigner, jws_hash, sign_compact};
use wattest_shared::window::{WINDOW_TYP, WindowClaims};
use wattest_shared::{SoftwareKey, WattHours, Watts};
use wattest_tests::{Oracle, bin, fresh_pg_database, gpu_window, run_ok};

/// A CPU-bound shell loop of two to three seconds, exiting with 7.
const BUSY_JOB: &str = "end=$(($(date +%s) + 3)); while [ $(date +%s) -lt $end ]; do i=0; while [ $i -lt 2000 ]; do i=$((i+1)); done; done; exit 7";

/// The compliance CSV row of certificate `id`, by column name.
fn compliance_row(oracle: &Oracle, id: &str) -> std::collections::HashMap<String, String> {
    let text = oracle.get_text("/v1/exports/compliance.csv");
    let mut reader = csv::Reader::from_reader(text.as_bytes());
    let headers = reader.headers().unwrap().clone();
    let row = reader
        .records()
        .map(Result::unwrap)
        .find(|r| r.get(0) == Some(id))
        .expect("certificate row in the CSV");
    headers
        .iter()
        .map(str::to_owned)
        .zip(row.iter().map(str::to_owned))
        .collect()
}

/// A certificate decimal string as a float (for comparisons within a tolerance).
fn dec(v: &serde_json::Value) -> f64 {
    v.as_str()
        .unwrap_or_else(|| panic!("{v} is not a decimal string"))
        .parse()
        .unwrap()
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1e-12)
}

/// Runs a job under the agent and checks certificate, verifier and CSV against each other.
fn job_round_trip(oracle: &Oracle) {
    let (state, node_id) = oracle.enroll_agent("BE");
    let out = Command::new(bin("wattest-agent"))
        .args([
            "run",
            "--window",
            "1",
            "--interval",
            "0.2",
            "--job-id",
            "e2e-job-1",
            "--model-id",
            "e2e-model-7b",
            "--state-dir",
        ])
        .arg(state.path())
        .args(["--", "sh", "-c", BUSY_JOB])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(7),
        "the agent must exit with the command's code; stderr:\n{stderr}"
    );
    let id = wattest_tests::certificate_id_from_stderr(&stderr);
    assert!(
        stderr.contains("gCO2e/kWh"),
        "summary line missing: {stderr}"
    );

    // The certificate as served, and its claims.
    let cert = oracle.get_json(&format!("/v1/certificates/{id}"));
    let claims = &cert["claims"];
    assert_eq!(claims["jti"], id.as_str());
    assert_eq!(claims["sub"], node_id.as_str());
    assert_eq!(claims["wattest.job_id"], "e2e-job-1");
    assert_eq!(claims["wattest.model_id"], "e2e-model-7b");
    assert_eq!(claims["wattest.node"]["attestation_level"], "software");
    assert_eq!(
        claims["ear.status"], "warning",
        "a software key caps the status"
    );
    assert_eq!(claims["wattest.grid_zone"], "BE");
    assert_eq!(
        claims["wattest.intensity"]["hourly"][0]["provenance"]["factor_type"],
        "lifecycle"
    );
    assert!(
        claims["wattest.telemetry"]["count"].as_u64().unwrap() >= 2,
        "a 1 s window job of >1 s has at least two windows"
    );
    let consumed = dec(&claims["wattest.energy"]["consumed_wh"]);
    assert!(consumed > 0.0, "a CPU-bound job uses energy");
    let methods: Vec<&str> = claims["wattest.energy"]["by_source"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["method"].as_str().unwrap())
        .collect();
    assert!(methods.contains(&"estimate_cpu_tdp"), "{methods:?}");

    // Offline verification with the published JWKS, from a URL and from a file.
    let dir = tempfile::tempdir().unwrap();
    let cert_file = dir.path().join("cert.jws");
    std::fs::write(&cert_file, cert["jws"].as_str().unwrap()).unwrap();
    let jwks_url = format!("{}/.well-known/jwks.json", oracle.url);
    let verified = Command::new(bin("wattest-verify"))
        .arg(&cert_file)
        .args(["--jwks", &jwks_url, "--json"])
        .output()
        .unwrap();
    assert_eq!(
        verified.status.code(),
        Some(1),
        "an unlogged JWS is INVALID"
    );
    let verified: serde_json::Value = serde_json::from_slice(&verified.stdout).unwrap();
    assert_eq!(
        verified["valid"], false,
        "a bare JWS carries no inclusion proof: {verified}"
    );
    assert_eq!(
        &verified["claims"], claims,
        "the verifier returns exactly the served claims"
    );
    // The bundle (certificate + inclusion proof + status) verifies completely.
    let bundle_file = dir.path().join("cert.json");
    std::fs::write(&bundle_file, serde_json::to_vec(&cert).unwrap()).unwrap();
    let verified = run_ok(
        Command::new(bin("wattest-verify"))
            .arg(&bundle_file)
            .args(["--jwks", &jwks_url, "--json"]),
    );
    let verified: serde_json::Value = serde_json::from_slice(&verified.stdout).unwrap();
    assert_eq!(verified["valid"], true, "{verified}");
    // Its status is the bundle's, unsigned: the report says so.
    let status = verified["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["check"] == "status")
        .unwrap_or_else(|| panic!("no status check: {verified}"));
    assert!(
        status["detail"]
            .as_str()
            .unwrap()
            .contains("relied on the bundle's unsigned status (not authenticated)"),
        "{verified}"
    );
    let jwks_file = dir.path().join("jwks.json");
    std::fs::write(&jwks_file, oracle.get_text("/.well-known/jwks.json")).unwrap();
    let log_key_file = dir.path().join("log.vkey");
    std::fs::write(&log_key_file, oracle.get_text("/v1/log/key")).unwrap();
    run_ok(
        Command::new(bin("wattest-verify"))
            .arg(&bundle_file)
            .arg("--jwks")
            .arg(&jwks_file)
            .arg("--log-key")
            .arg(&log_key_file),
    );
    run_ok(
        Command::new(bin("wattest-verify"))
            .arg(&cert_file)
            .arg("--jwks")
            .arg(&jwks_file)
            .arg("--no-log"),
    );
    // Straight from the oracle's URLs, as an auditor would: the status then comes
    // authenticated, so --require-status is met.
    let out = run_ok(
        Command::new(bin("wattest-verify"))
            .arg(format!("{}/v1/certificates/{id}", oracle.url))
            .args(["--jwks", &jwks_url, "--require-status"])
            .env("WATTEST_TOKEN", oracle.token("auditor")),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.starts_with(&format!("VALID certificate {id}")),
        "{stdout}"
    );
    assert!(
        stdout.contains("not revoked (the bundle's status, fetched from"),
        "{stdout}"
    );
    // A saved bundle does not meet --require-status.
    let out = Command::new(bin("wattest-verify"))
        .arg(&bundle_file)
        .args(["--jwks", &jwks_url, "--require-status"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );

    // A tampered certificate fails verification with exit status 1.
    let jws = cert["jws"].as_str().unwrap();
    let parts: Vec<&str> = jws.split('.').collect();
    let mut payload: serde_json::Value =
        serde_json::from_slice(&B64.decode(parts[1]).unwrap()).unwrap();
    payload["wattest.energy"]["consumed_wh"] = serde_json::json!(format!("{:.6}", consumed / 2.0));
    let forged = format!(
        "{}.{}.{}",
        parts[0],
        B64.encode(serde_json::to_vec(&payload).unwrap()),
        parts[2]
    );
    std::fs::write(&cert_file, forged).unwrap();
    let out = Command::new(bin("wattest-verify"))
        .arg(&cert_file)
        .arg("--jwks")
        .arg(&jwks_file)
        .args(["--no-log", "--json"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "forged certificate must be INVALID"
    );
    // The failed check is named as docs/protocol.md §5.1 names it.
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let check = |name: &str| {
        report["checks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["check"] == name)
            .unwrap_or_else(|| panic!("no {name} check in {report}"))
            .clone()
    };
    assert_eq!(check("signature")["ok"], false, "{report}");
    assert_eq!(check("claims")["ok"], false, "{report}");
    // A reader gone before the report is written (`wattest-verify … | head -0`) changes
    // nothing: the verdict is the exit status, never a panic.
    let mut child = Command::new(bin("wattest-verify"))
        .arg(&cert_file)
        .arg("--jwks")
        .arg(&jwks_file)
        .arg("--no-log")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The CSV row reconciles with the certificate: same energy, same emissions.
    let row = compliance_row(oracle, &id);
    let col = |name: &str| {
        row.get(name)
            .unwrap_or_else(|| panic!("no CSV column {name}"))
            .clone()
    };
    let f = |name: &str| col(name).parse::<f64>().unwrap();
    assert!(
        close(f("energy_consumed_kwh") * 1000.0, consumed),
        "CSV energy {} kWh vs certificate {consumed} Wh",
        f("energy_consumed_kwh")
    );
    assert!(close(
        f("scope2_location_based_kg_co2e"),
        dec(&claims["wattest.emissions"]["location_based_g_co2e"]) / 1000.0
    ));
    assert!(close(
        f("intensity_g_co2e_per_kwh"),
        dec(&claims["wattest.intensity"]["g_co2e_per_kwh"])
    ));
    assert_eq!(col("job_id"), "e2e-job-1");
    assert_eq!(col("attestation_level"), "software");
    assert_eq!(col("certificate_sha256"), jws_hash(jws));

    // The list endpoint finds it by job and by node.
    let list = oracle.get_json(&format!("/v1/certificates?job=e2e-job-1&node={node_id}"));
    assert_eq!(list["certificates"][0]["id"], id.as_str());

    // A second run with the same job id is refused by the oracle (job closed), and says so.
    let out = Command::new(bin("wattest-agent"))
        .args([
            "run",
            "--window",
            "5",
            "--job-id",
            "e2e-job-1",
            "--state-dir",
        ])
        .arg(state.path())
        .args(["--", "true"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("job_closed"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn job_measured_signed_certified_verified_and_exported_on_sqlite() {
    let oracle = Oracle::start();
    job_round_trip(&oracle);
}

#[test]
fn job_measured_signed_certified_verified_and_exported_on_postgresql() {
    let Some(db) = fresh_pg_database() else {
        return;
    };
    let oracle = Oracle::start_with(Some(db), &[]);
    job_round_trip(&oracle);
}

struct RawNode {
    key: SoftwareKey,
    node_id: String,
}

fn enroll_raw(oracle: &Oracle) -> RawNode {
    let key = SoftwareKey::generate(2048).unwrap();
    let r = reqwest::blocking::Client::new()
        .post(format!("{}/v1/nodes", oracle.url))
        .bearer_auth(oracle.token("node"))
        .json(&serde_json::json!({ "name": "raw", "zone": "FR", "public_key": key.public_jwk() }))
        .send()
        .unwrap();
    assert_eq!(r.status(), 201);
    let body: serde_json::Value = r.json().unwrap();
    assert_eq!(body["kid"], key.kid());
    RawNode {
        key,
        node_id: body["node_id"].as_str().unwrap().to_owned(),
    }
}

fn window(node: &RawNode, seq: u64, prev: Option<String>, is_final: bool) -> WindowClaims {
    let start = Utc::now() - Duration::seconds(600) + Duration::seconds(10 * seq as i64);
    gpu_window(&node.node_id, "raw-job", seq, prev, start, 400.0, is_final)
}

fn post(oracle: &Oracle, body: &str) -> (u16, serde_json::Value, String) {
    let r = reqwest::blocking::Client::new()
        .post(format!("{}/v1/telemetry", oracle.url))
        .header("content-type", "application/jose")
        .body(body.to_owned())
        .send()
        .unwrap();
    let status = r.status().as_u16();
    let content_type = r
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (
        status,
        r.json().unwrap_or(serde_json::Value::Null),
        content_type,
    )
}

fn assert_problem(oracle: &Oracle, body: &str, status: u16, code: &str) -> serde_json::Value {
    let (s, problem, content_type) = post(oracle, body);
    assert_eq!(
        (s, problem["code"].as_str()),
        (status, Some(code)),
        "{problem}"
    );
    assert_eq!(content_type, "application/problem+json");
    assert_eq!(
        problem["type"],
        format!("https://wattest.dev/problems/{code}")
    );
    assert!(!problem["detail"].as_str().unwrap().is_empty());
    problem
}

#[test]
fn bad_input_is_refused_with_problem_json_and_nothing_is_stored() {
    let oracle = Oracle::start();
    let node = enroll_raw(&oracle);
    let sign = |c: &WindowClaims| {
        sign_compact(&node.key, WINDOW_TYP, &serde_json::to_vec(c).unwrap()).unwrap()
    };
    let first = sign(&window(&node, 1, None, false));

    // Tampered payload: signature fails.
    let parts: Vec<&str> = first.split('.').collect();
    let mut tampered = window(&node, 1, None, false);
    tampered.sources[0].energy_wh = WattHours(0.5);
    tampered.sources[0].mean_w = Watts(180.0);
    let forged = format!(
        "{}.{}.{}",
        parts[0],
        B64.encode(serde_json::to_vec(&tampered).unwrap()),
        parts[2]
    );
    assert_problem(&oracle, &forged, 401, "bad_signature");

    // Wrong algorithm and "none".
    for alg in ["RS256", "none", "HS256"] {
        let header = B64.encode(format!(
            r#"{{"alg":"{alg}","kid":"{}","typ":"{WINDOW_TYP}"}}"#,
            node.key.kid()
        ));
        assert_problem(
            &oracle,
            &format!("{header}.{}.{}", parts[1], parts[2]),
            400,
            "unsupported_alg",
        );
    }
    // A key in the header is refused even with the right alg.
    let header = B64.encode(format!(
        r#"{{"alg":"PS256","kid":"{}","typ":"{WINDOW_TYP}","jwk":{{}}}}"#,
        node.key.kid()
    ));
    assert_problem(
        &oracle,
        &format!("{header}.{}.{}", parts[1], parts[2]),
        400,
        "forbidden_header",
    );

    // Unknown kid: a valid JWS from a key that never enrolled.
    let stranger = SoftwareKey::generate(2048).unwrap();
    let foreign = sign_compact(
        &stranger,
        WINDOW_TYP,
        &serde_json::to_vec(&window(&node, 1, None, false)).unwrap(),
    )
    .unwrap();
    assert_problem(&oracle, &foreign, 401, "unknown_kid");
    assert_problem(&oracle, "not-a-jws", 400, "malformed_jws");

    // Nothing was stored: seq 1 is still expected, and accepted now.
    let (s, ack, _) = post(&oracle, &first);
    assert_eq!(s, 200, "{ack}");
    assert_eq!(ack["seq"], 1);
    assert_eq!(ack["hash"], jws_hash(&first));

    // Replays: the same bytes (a retry) get the original receipt; a different window claiming
    // seq 1 is a seq conflict (tests/tests/integrity.rs covers both in depth).
    let (s, again, _) = post(&oracle, &first);
    assert_eq!((s, &again), (200, &ack));
    let p = assert_problem(
        &oracle,
        &sign(&window(&node, 1, None, true)),
        409,
        "seq_conflict",
    );
    assert_eq!(p["expected_seq"], 2);

    // A gap too wide to be reordering (a nearer one is held: tests/tests/integrity.rs), broken
    // chain, future window.
    let far = gpu_window(
        &node.node_id,
        "raw-job",
        2 + 1024,
        Some(jws_hash(&first)),
        Utc::now() - Duration::seconds(300),
        400.0,
        false,
    );
    assert_problem(&oracle, &sign(&far), 409, "seq_gap");
    assert_problem(
        &oracle,
        &sign(&window(&node, 2, Some(jws_hash("other")), false)),
        409,
        "chain_broken",
    );
    let mut future = window(&node, 2, Some(jws_hash(&first)), false);
    future.start = Utc::now() + Duration::seconds(100);
    future.end = future.start + Duration::seconds(10);
    assert_problem(&oracle, &sign(&future), 422, "future_window");

    // Missing and wrong enrollment tokens.
    let client = reqwest::blocking::Client::new();
    let body =
        serde_json::json!({ "name": "x", "zone": "BE", "public_key": stranger.public_jwk() });
    let r = client
        .post(format!("{}/v1/nodes", oracle.url))
        .json(&body)
        .send()
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(
        r.json::<serde_json::Value>().unwrap()["code"],
        "missing_token"
    );
    let r = client
        .post(format!("{}/v1/nodes", oracle.url))
        .bearer_auth("wt_node_nope")
        .json(&body)
        .send()
        .unwrap();
    assert_eq!(
        r.json::<serde_json::Value>().unwrap()["code"],
        "invalid_token"
    );
    let r = client
        .post(format!("{}/v1/nodes", oracle.url))
        .bearer_auth(oracle.token("auditor"))
        .json(&body)
        .send()
        .unwrap();
    assert_eq!(
        (
            r.status().as_u16(),
            r.json::<serde_json::Value>().unwrap()["code"].clone()
        ),
        (403, serde_json::json!("forbidden_role"))
    );
    let r = client.post(format!("{}/v1/nodes", oracle.url)).bearer_auth(oracle.token("node")).json(&serde_json::json!({ "name": "x", "zone": "Atlantis", "public_key": stranger.public_jwk() })).send().unwrap();
    assert_eq!(
        r.json::<serde_json::Value>().unwrap()["code"],
        "unknown_zone"
    );

    // No certificate exists yet; the final window issues exactly one.
    assert_eq!(
        oracle.get_json("/v1/certificates")["certificates"]
            .as_array()
            .unwrap()
            .len(),
        0
    );
    let (s, ack, _) = post(
        &oracle,
        &sign(&window(&node, 2, Some(jws_hash(&first)), true)),
    );
    assert_eq!(s, 200, "{ack}");
    let cert = &ack["certificate"];
    assert!((cert["energy_wh"].as_f64().unwrap() - 2.0).abs() < 1e-9);
    // 2 Wh at FR 44.18 g/kWh (Ember 2024) = 0.08836 g.
    assert!((cert["emissions_kg_co2e"].as_f64().unwrap() - 0.002 * 44.18 / 1000.0).abs() < 1e-12);
    assert_eq!(
        oracle.get_json("/v1/certificates")["certificates"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

/// Solar input and process attribution flow into the certificate: avoided emissions reported
/// apart, a reward split 70/30 that adds up, and the CSV columns to match.
#[test]
fn solar_node_with_process_attribution_earns_a_split_reward() {
    let oracle = Oracle::start();
    let (state, _) = oracle.enroll_agent("DE");
    let out = Command::new(bin("wattest-agent"))
        .args([
            "run",
            "--window",
            "1",
            "--interval",
            "0.2",
            "--attribution",
            "process",
            "--solar-watts",
            "50000",
            "--job-id",
            "solar-1",
            "--state-dir",
        ])
        .arg(state.path())
        .args(["--", "sh", "-c", "sleep 2"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let list = oracle.get_json("/v1/certificates?job=solar-1");
    let id = list["certificates"][0]["id"].as_str().unwrap().to_owned();
    let claims = oracle.get_json(&format!("/v1/certificates/{id}"))["claims"].clone();
    assert_eq!(claims["wattest.attribution"], "process");
    let solar = dec(&claims["wattest.energy"]["solar_wh"]);
    // 50 kW declared for about two seconds: roughly 28 Wh.
    assert!(solar > 20.0 && solar < 60.0, "solar {solar} Wh");
    assert_eq!(
        dec(&claims["wattest.energy"]["grid_wh"]),
        0.0,
        "solar covers the job entirely"
    );
    assert_eq!(
        dec(&claims["wattest.emissions"]["location_based_g_co2e"]),
        0.0
    );
    let avoided = dec(&claims["wattest.avoided_emissions"]["g_co2e"]) / 1000.0;
    assert!(
        // Rounded to the µg per hour: relative error far below 1e-6.
        (avoided - solar / 1000.0 * 342.06 / 1000.0).abs() <= 1e-6 * avoided,
        "avoided {avoided} kg for {solar} Wh in DE"
    );
    let reward = &claims["wattest.reward"];
    let micros =
        |v: &serde_json::Value| (v.as_str().unwrap().parse::<f64>().unwrap() * 1e6).round() as i64;
    let (total, owner, fund) = (
        micros(&reward["total"]),
        micros(&reward["node_owner"]),
        micros(&reward["cooperative_fund"]),
    );
    assert_eq!(total, (avoided / 1000.0 * 25.0 * 1e6).floor() as i64);
    assert!(total > 0);
    assert_eq!(owner + fund, total);
    assert_eq!(owner, (total as f64 * 0.7).floor() as i64);
    let methods: Vec<&str> = claims["wattest.energy"]["by_source"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["method"].as_str().unwrap())
        .collect();
    assert!(methods.contains(&"solar_declared_constant"), "{methods:?}");

    let row = compliance_row(&oracle, &id);
    let col = |name: &str| {
        row.get(name)
            .unwrap_or_else(|| panic!("no CSV column {name}"))
            .clone()
    };
    assert_eq!(col("reward_eur"), reward["total"].as_str().unwrap());
    assert_eq!(
        col("reward_node_owner_eur"),
        reward["node_owner"].as_str().unwrap()
    );
    assert_eq!(
        col("reward_cooperative_fund_eur"),
        reward["cooperative_fund"].as_str().unwrap()
    );
    assert!(close(
        col("avoided_emissions_kg_co2e").parse().unwrap(),
        avoided
    ));
}

/// Continuous node mode: windows forever, a certificate per period, and on SIGTERM a final
/// window, a flushed spool and exit status 0.
#[test]
fn watch_mode_certifies_each_period_and_stops_cleanly_on_sigterm() {
    let oracle = Oracle::start();
    let (state, node_id) = oracle.enroll_agent("FR");
    let child = Command::new(bin("wattest-agent"))
        .args([
            "watch",
            "--window",
            "1",
            "--interval",
            "0.25",
            "--certify-every",
            "2",
            "--state-dir",
        ])
        .arg(state.path())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(5500));
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "watch must exit 0 on SIGTERM: {stderr}"
    );

    let list = oracle.get_json(&format!("/v1/certificates?node={node_id}"));
    let certs = list["certificates"].as_array().unwrap();
    assert!(
        certs.len() >= 2,
        "one certificate per 2 s period plus the final one: {list}"
    );
    assert!(certs.iter().all(|c| c["job_id"].is_null()));
    // Periods chain without gaps or overlaps.
    let mut periods: Vec<(String, String)> = certs
        .iter()
        .map(|c| {
            (
                c["period_start"].as_str().unwrap().to_owned(),
                c["period_end"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    periods.sort();
    for pair in periods.windows(2) {
        assert_eq!(
            pair[0].1, pair[1].0,
            "certificate periods must be contiguous: {periods:?}"
        );
    }
    assert_eq!(
        std::fs::read_dir(state.path().join("spool"))
            .unwrap()
            .filter(|e| e
                .as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "jws"))
            .count(),
        0,
        "spool flushed"
    );
}

/// Concurrent windows from many nodes are all accepted (no "database is locked" on SQLite, no
/// lost update on PostgreSQL), each node's certificate issued: `wattest-loadgen` exits non-zero
/// on the first refused window.
fn concurrent_ingest(oracle: &Oracle) {
    let out = Command::new(bin("wattest-loadgen"))
        .args([
            "--oracle",
            &oracle.url,
            "--token",
            &oracle.token("node"),
            "--nodes",
            "16",
            "--windows",
            "6",
            "--concurrency",
            "8",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}\noracle log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        oracle.log()
    );
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("96 windows (16 certificates)"));
    assert_eq!(
        oracle.get_json("/v1/certificates?limit=1000")["certificates"]
            .as_array()
            .unwrap()
            .len(),
        16
    );
    // Group commit: every accepted window went through exactly one committed batch.
    let metrics = oracle.get_text("/metrics");
    let value = |name: &str| -> f64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("{name} missing from /metrics:\n{metrics}"))
    };
    assert_eq!(value("wattest_windows_accepted_total"), 96.0);
    assert_eq!(value("wattest_ingest_batch_windows_sum"), 96.0);
    let batches = value("wattest_ingest_batch_windows_count");
    assert!((1.0..=96.0).contains(&batches), "{batches} batches");
    eprintln!("96 windows from 8 concurrent clients committed in {batches} transactions");
}

#[test]
fn concurrent_nodes_are_all_accepted_on_sqlite() {
    concurrent_ingest(&Oracle::start());
}

#[test]
fn concurrent_nodes_are_all_accepted_on_postgresql() {
    let Some(db) = fresh_pg_database() else {
        return;
    };
    concurrent_ingest(&Oracle::start_with(Some(db), &[]));
}
