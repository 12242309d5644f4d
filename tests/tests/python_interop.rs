//! Certificates verify with an independent JOSE implementation (PyJWT) using only the JWKS, and
//! the Verifiable Credential form validates as a whole against the JSON Schema its
//! `credentialSchema` names, fetched from that URL with its `$ref`s (Python `jsonschema`), and its
//! `credentialStatus` names the certificate's status resource. scripts/test.sh installs both into `target/pyenv` and sets
//! `WATTEST_PYTHON`; without them this test fails, it is never skipped.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;
use wattest_tests::{Oracle, bin, run_ok};

fn python() -> String {
    let python = std::env::var("WATTEST_PYTHON").unwrap_or_else(|_| "python3".into());
    let probe = Command::new(&python)
        .args(["-c", "import jwt, jsonschema, cryptography"])
        .output();
    match probe {
        Ok(out) if out.status.success() => python,
        _ => panic!(
            "{python} lacks PyJWT[crypto] and jsonschema: run scripts/test.sh (it installs them into target/pyenv) or set WATTEST_PYTHON"
        ),
    }
}

#[test]
fn pyjwt_verifies_certificates_and_the_whole_vc_matches_its_declared_schema() {
    let python = python();
    let oracle = Oracle::start();
    let (state, _) = oracle.enroll_agent("FR");
    let out = run_ok(
        Command::new(bin("wattest-agent"))
            .args(["run", "--window", "1", "--job-id", "pyjwt-1", "--state-dir"])
            .arg(state.path())
            .args(["--", "sh", "-c", "sleep 1.5"]),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    let id = wattest_tests::certificate_id_from_stderr(&stderr);
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("python/verify_certificate.py");
    let out = Command::new(&python)
        .arg(&script)
        .args([&oracle.url, &id, &oracle.token("auditor")])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "PyJWT check failed:\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["ok"], true, "{summary}");
    assert_eq!(summary["vc_types"][1], "EnergyCertificateCredential");
    eprintln!(
        "PyJWT {} / jsonschema {}: {summary}",
        summary["pyjwt"], summary["jsonschema"]
    );
}
