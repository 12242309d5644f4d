//! End-to-end TPM enrollment: the real `wattest-oracle` and `wattest-agent` binaries against a
//! real software TPM (swtpm, with an EK certificate from its own local CA).
//!
//! Needs `cargo build -p wattest-agent -p wattest-oracle` first and swtpm + swtpm-tools
//! installed; without swtpm every test fails with the install hint, unless `WATTEST_SKIP_TPM=1`,
//! which skips them with a loud SKIPPED line on stderr.
//!
//! Negative cases run at the HTTP level with real TPM evidence: the agent enrolls against a
//! capture server that records its `POST /v1/nodes` body and refuses it, and the test then posts
//! that evidence, intact or tampered, to the real oracle.

#![allow(clippy::unwrap_used)]

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use serde_json::{Value, json};
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Instant;
use wattest_tests::{Oracle, Swtpm, bin, test_ca};

/// Runs `wattest-agent SUBCOMMAND --state-dir DIR ARGS…` (the state dir before a `--`).
fn agent(state_dir: &Path, args: &[&str]) -> Output {
    let (subcommand, rest) = args.split_first().expect("subcommand");
    Command::new(bin("wattest-agent"))
        .arg(subcommand)
        .arg("--state-dir")
        .arg(state_dir)
        .args(rest)
        .env_remove("WATTEST_TCTI")
        .env_remove("WATTEST_ORACLE")
        .env_remove("WATTEST_STATE_DIR")
        .env("TSS2_LOG", "all+none")
        .env("RUST_LOG", "warn")
        .output()
        .expect("run wattest-agent")
}

fn enroll(oracle: &Oracle, state_dir: &Path, signer: &str, tcti: Option<&str>) -> Output {
    let token = oracle.token("node");
    let mut args = vec![
        "enroll",
        "--oracle",
        &oracle.url,
        "--token",
        &token,
        "--name",
        "e2e-node",
        "--zone",
        "BE",
        "--signer",
        signer,
    ];
    if let Some(tcti) = tcti {
        args.extend(["--tcti", tcti]);
    }
    agent(state_dir, &args)
}

/// Runs a 2 s job with 1 s windows and returns the certificate's claims, from the JWS payload.
fn run_job(oracle: &Oracle, state_dir: &Path) -> Value {
    let out = agent(state_dir, &["run", "--window", "1", "--", "sleep", "2"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "agent run failed: {stderr}");
    let id = wattest_tests::certificate_id_from_stderr(&stderr);
    let cert: Value = oracle.get_json(&format!("/v1/certificates/{id}"));
    let jws = cert["jws"].as_str().expect("jws");
    let payload = jws.split('.').nth(1).expect("payload");
    let claims: Value = serde_json::from_slice(&B64.decode(payload).expect("b64")).expect("json");
    assert_eq!(claims, cert["claims"], "served claims are the signed ones");
    claims
}

#[test]
fn tpm_node_gets_tpm_certificates_and_software_node_software() {
    let Some(tpm) = Swtpm::start("tpm_node_gets_tpm_certificates_and_software_node_software")
    else {
        return;
    };
    let oracle = Oracle::with_ek_ca(Some(&tpm.ca_dir()));

    let tpm_state = tempfile::tempdir().expect("state");
    let started = Instant::now();
    let out = enroll(&oracle, tpm_state.path(), "tpm", Some(&tpm.tcti));
    let enroll_time = started.elapsed();
    assert!(
        out.status.success(),
        "TPM enrollment failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    println!("TPM enrollment over HTTP (agent process, swtpm): {enroll_time:?}");
    let node: Value = serde_json::from_slice(
        &std::fs::read(tpm_state.path().join("node.json")).expect("node.json"),
    )
    .expect("json");
    assert_eq!(node["signer"], "tpm");
    assert_eq!(node["tcti"], tpm.tcti.as_str());
    assert!(
        !tpm_state.path().join("tpm-enrolling").exists(),
        "staging dir left behind"
    );
    let claims = run_job(&oracle, tpm_state.path());
    assert_eq!(
        claims["wattest.node"]["attestation_level"], "tpm",
        "{claims}"
    );
    assert_eq!(claims["wattest.node"]["id"], node["node_id"]);

    let soft_state = tempfile::tempdir().expect("state");
    let out = enroll(&oracle, soft_state.path(), "software", None);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let claims = run_job(&oracle, soft_state.path());
    assert_eq!(
        claims["wattest.node"]["attestation_level"], "software",
        "{claims}"
    );
}

/// Serves one `POST /v1/nodes` on a loopback port: records its JSON body and answers 503, so the
/// agent stops there and nothing is enrolled anywhere.
fn capture_enrollment_body() -> (String, std::thread::JoinHandle<Value>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let handle = std::thread::spawn(move || {
        let (stream, _) = listener.accept().expect("accept");
        let mut reader = BufReader::new(stream.try_clone().expect("clone"));
        let mut length = 0usize;
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).expect("read header");
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((name, value)) = line.split_once(':')
                && name.eq_ignore_ascii_case("content-length")
            {
                length = value.trim().parse().expect("content-length");
            }
        }
        let mut body = vec![0; length];
        reader.read_exact(&mut body).expect("body");
        let problem = br#"{"type":"urn:wattest:problem:captured","title":"Service Unavailable","status":503,"detail":"captured by the test","code":"captured"}"#;
        let mut stream = stream;
        write!(
            stream,
            "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/problem+json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
            problem.len()
        )
        .expect("write");
        stream.write_all(problem).expect("write");
        serde_json::from_slice(&body).expect("enrollment body is JSON")
    });
    (url, handle)
}

fn set_b64(body: &mut Value, field: &str, bytes: &[u8]) {
    body["attestation"][field] = json!(B64.encode(bytes));
}

fn get_b64(body: &Value, field: &str) -> Vec<u8> {
    B64.decode(body["attestation"][field].as_str().expect(field))
        .expect("b64")
}

fn assert_problem(got: (u16, Value), status: u16, code: &str) {
    assert_eq!(got.0, status, "expected {status} {code}, got {}", got.1);
    assert_eq!(got.1["code"], code, "{}", got.1);
    assert!(
        got.1["detail"].as_str().is_some_and(|d| !d.is_empty()),
        "problem without detail: {}",
        got.1
    );
}

/// A self-signed CA that has nothing to do with swtpm, as a PEM file in a fresh directory.
fn unknown_ca_dir() -> tempfile::TempDir {
    let (ca, _) = test_ca("Not a TPM vendor");
    let dir = tempfile::tempdir().expect("dir");
    std::fs::write(dir.path().join("unknown-ca.pem"), ca.to_pem().expect("pem")).expect("write");
    dir
}

#[test]
fn tampered_tpm_evidence_is_refused_and_nothing_enrolled() {
    let Some(tpm) = Swtpm::start("tampered_tpm_evidence_is_refused_and_nothing_enrolled") else {
        return;
    };
    // Real evidence from the real agent and TPM, captured before it reaches any oracle.
    let (capture_url, captured) = capture_enrollment_body();
    let state = tempfile::tempdir().expect("state");
    let out = agent(
        state.path(),
        &[
            "enroll",
            "--oracle",
            &capture_url,
            "--token",
            "t",
            "--name",
            "n",
            "--zone",
            "BE",
            "--signer",
            "tpm",
            "--tcti",
            &tpm.tcti,
        ],
    );
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("captured"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !state.path().join("node.json").exists(),
        "refused enrollment wrote node.json"
    );
    let evidence = captured.join().expect("capture thread");
    assert_eq!(evidence["attestation"]["type"], "tpm");

    let oracle = Oracle::with_ek_ca(Some(&tpm.ca_dir()));
    let token = oracle.token("node");
    let post = |body: &Value| oracle.post_json("/v1/nodes", &token, body);

    // Wrong credential answer: 403, and the challenge is consumed (one attempt).
    let (status, challenge) = post(&evidence);
    assert_eq!(status, 202, "{challenge}");
    for field in [
        "challenge_id",
        "credential_blob",
        "encrypted_secret",
        "expires_at",
    ] {
        assert!(challenge[field].is_string(), "{field} missing: {challenge}");
    }
    let answer_path = format!(
        "/v1/nodes/challenges/{}",
        challenge["challenge_id"].as_str().expect("id")
    );
    let wrong = json!({ "secret": B64.encode([7u8; 32]) });
    assert_problem(
        oracle.post_json(&answer_path, &token, &wrong),
        403,
        "credential_mismatch",
    );
    assert_problem(
        oracle.post_json(&answer_path, &token, &wrong),
        404,
        "challenge_not_found",
    );
    // Nothing was enrolled: the same key gets a fresh challenge, not key_already_enrolled.
    assert_eq!(post(&evidence).0, 202);

    // AK replaced by the signing key: a real TPM key, but not restricted.
    let mut body = evidence.clone();
    body["attestation"]["ak_public"] = evidence["attestation"]["signing_public"].clone();
    assert_problem(post(&body), 422, "ak_not_restricted");

    // AK without fixedTPM (TPM2B_PUBLIC: size u16, type u16, nameAlg u16, objectAttributes u32).
    let mut ak = get_b64(&evidence, "ak_public");
    ak[9] &= !0x02;
    let mut body = evidence.clone();
    set_b64(&mut body, "ak_public", &ak);
    assert_problem(post(&body), 422, "ak_not_fixed_tpm");

    // A certification presented with a different key: the qualifying data is SHA-256 of
    // signing_public, so the certification no longer matches (certify_name_mismatch, the next
    // step, is covered against swtpm in agent/src/signer/tpm.rs).
    let mut body = evidence.clone();
    body["attestation"]["signing_public"] = evidence["attestation"]["ak_public"].clone();
    assert_problem(post(&body), 422, "certify_nonce_mismatch");

    // public_key is not the certified signing key.
    let other = openssl::rsa::Rsa::generate(2048).expect("rsa");
    let mut body = evidence.clone();
    body["public_key"] = json!({
        "kty": "RSA",
        "n": B64.encode(other.n().to_vec()),
        "e": B64.encode(other.e().to_vec()),
    });
    assert_problem(post(&body), 422, "certify_key_mismatch");

    // A certification whose bytes were altered after the AK signed them.
    let mut info = get_b64(&evidence, "certify_info");
    let last = info.len() - 1;
    info[last] ^= 1;
    let mut body = evidence.clone();
    set_b64(&mut body, "certify_info", &info);
    assert_problem(post(&body), 422, "certify_bad_signature");

    // No EK certificate.
    let mut body = evidence.clone();
    body["attestation"]["ek_certificate"] = Value::Null;
    assert_problem(post(&body), 422, "ek_cert_required");

    // Not base64url.
    let mut body = evidence.clone();
    body["attestation"]["ek_public"] = json!("not base64!");
    assert_problem(post(&body), 400, "invalid_request");
    drop(oracle);

    // EK certificate from a CA this oracle does not trust.
    let unknown = unknown_ca_dir();
    let oracle = Oracle::with_ek_ca(Some(unknown.path()));
    let token = oracle.token("node");
    assert_problem(
        oracle.post_json("/v1/nodes", &token, &evidence),
        422,
        "ek_cert_untrusted",
    );
    // …and through the real agent: refused with the code, nothing written.
    let out = enroll(&oracle, state.path(), "tpm", Some(&tpm.tcti));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "enrolled against an unknown CA");
    assert!(stderr.contains("ek_cert_untrusted"), "{stderr}");
    assert!(!state.path().join("node.json").exists());
    drop(oracle);

    // An oracle with no EK roots at all refuses TPM enrollment.
    let oracle = Oracle::with_ek_ca(None);
    let token = oracle.token("node");
    assert_problem(
        oracle.post_json("/v1/nodes", &token, &evidence),
        422,
        "ek_cert_untrusted",
    );
}
