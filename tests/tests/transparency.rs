//! The transparency log end to end: every certificate is logged, proofs verify offline with
//! `wattest-verify`, the log only grows, and two replicas on one PostgreSQL never fork it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use chrono::{Duration, Utc};
use std::process::{Child, Command, Output, Stdio};
use wattest_shared::SoftwareKey;
use wattest_shared::checkpoint::LogVerifier;
use wattest_shared::jws::sign_compact;
use wattest_shared::transparency::{
    ConsistencyProof, InclusionProof, verify_consistency, verify_inclusion,
};
use wattest_shared::window::WINDOW_TYP;
use wattest_tests::{Oracle, bin, free_port, fresh_pg_database, gpu_window};

struct Node {
    key: SoftwareKey,
    id: String,
    seq: u64,
    prev: Option<String>,
}

fn enroll(oracle: &Oracle, token: &str) -> Node {
    let key = SoftwareKey::generate(2048).unwrap();
    let r = reqwest::blocking::Client::new()
        .post(format!("{}/v1/nodes", oracle.url))
        .bearer_auth(token)
        .json(&serde_json::json!({ "name": "log-node", "zone": "BE", "public_key": key.public_jwk() }))
        .send()
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().unwrap_or_default());
    let body: serde_json::Value = r.json().unwrap();
    Node {
        key,
        id: body["node_id"].as_str().unwrap().to_owned(),
        seq: 0,
        prev: None,
    }
}

/// Posts a one-window job to `url`; returns the certificate id.
fn certify(url: &str, node: &mut Node, job: &str) -> String {
    node.seq += 1;
    let start = Utc::now() - Duration::hours(2) + Duration::seconds(10 * node.seq as i64);
    let claims = gpu_window(
        &node.id,
        job,
        node.seq,
        node.prev.clone(),
        start,
        400.0,
        true,
    );
    let jws = sign_compact(&node.key, WINDOW_TYP, &serde_json::to_vec(&claims).unwrap()).unwrap();
    let (status, body) = wattest_tests::post_window(url, &jws);
    assert!((200..300).contains(&status), "{status}: {body}");
    node.prev = Some(body["hash"].as_str().unwrap().to_owned());
    body["certificate"]["id"].as_str().unwrap().to_owned()
}

fn get(url: &str, path: &str, token: &str) -> reqwest::blocking::Response {
    reqwest::blocking::Client::new()
        .get(format!("{url}{path}"))
        .bearer_auth(token)
        .send()
        .unwrap()
}

fn get_json(url: &str, path: &str, token: &str) -> serde_json::Value {
    let r = get(url, path, token);
    assert!(r.status().is_success(), "GET {path}: {}", r.status());
    r.json().unwrap()
}

fn verify(args: &[&std::ffi::OsStr]) -> (Option<i32>, serde_json::Value) {
    let out: Output = Command::new(bin("wattest-verify"))
        .args(args)
        .arg("--json")
        .output()
        .unwrap();
    let report = serde_json::from_slice(&out.stdout).unwrap_or_else(|_| {
        panic!(
            "no JSON report; stderr: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code(), report)
}

/// What an auditor keeps to verify certificate `id` offline, in a fresh temporary directory:
/// the certificate as the oracle serves it (the bundle), the oracle's JWKS and its log verifier
/// key.
struct Saved {
    bundle: std::path::PathBuf,
    jwks: std::path::PathBuf,
    vkey: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

/// Saves certificate `id`, read with `token`, and the oracle's JWKS and log key ([`Saved`]).
fn save_offline(oracle: &Oracle, token: &str, id: &str) -> Saved {
    let dir = tempfile::tempdir().unwrap();
    let saved = Saved {
        bundle: dir.path().join("bundle.json"),
        jwks: dir.path().join("jwks.json"),
        vkey: dir.path().join("log.vkey"),
        _dir: dir,
    };
    let served = get_json(&oracle.url, &format!("/v1/certificates/{id}"), token);
    std::fs::write(&saved.bundle, served.to_string()).unwrap();
    std::fs::write(&saved.jwks, oracle.get_text("/.well-known/jwks.json")).unwrap();
    std::fs::write(&saved.vkey, oracle.get_text("/v1/log/key")).unwrap();
    saved
}

fn failed_check(report: &serde_json::Value) -> String {
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["ok"] == false)
        .map(|c| c["detail"].as_str().unwrap().to_owned())
        .collect::<Vec<_>>()
        .join("; ")
}

#[test]
fn every_certificate_is_logged_and_provable_offline() {
    let oracle = Oracle::start();
    let auditor = oracle.token("auditor");
    let mut node = enroll(&oracle, &oracle.token("node"));
    let ids: Vec<String> = (0..5)
        .map(|i| certify(&oracle.url, &mut node, &format!("job-{i}")))
        .collect();

    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    let vkey = oracle.get_text("/v1/log/key");
    let log = LogVerifier::parse(vkey.trim()).unwrap();
    let checkpoint5 = oracle.get_text("/v1/log/checkpoint");
    let cp5 = log
        .verify(&checkpoint5)
        .expect("the served checkpoint is signed by the log key");
    assert_eq!(cp5.size, 5);
    let cp5_file = write("cp5.txt", &checkpoint5);

    let more: Vec<String> = (5..9)
        .map(|i| certify(&oracle.url, &mut node, &format!("job-{i}")))
        .collect();
    let all: Vec<&String> = ids.iter().chain(&more).collect();

    // Every certificate: its bundle's inclusion proof verifies against the current checkpoint,
    // leaf indices are the issue order, and the entry endpoint serves the same JWS.
    for (i, id) in all.iter().enumerate() {
        let bundle = get_json(&oracle.url, &format!("/v1/certificates/{id}"), &auditor);
        let proof: InclusionProof =
            serde_json::from_value(bundle["inclusion_proof"].clone()).unwrap();
        let jws = bundle["jws"].as_str().unwrap();
        let cp = verify_inclusion(jws, &proof, &log).expect("inclusion");
        assert_eq!((proof.leaf_index, cp.size), (i as u64, 9));
        let entry = get_json(&oracle.url, &format!("/v1/log/entries/{i}"), &auditor);
        assert_eq!(entry["jws"], jws);
        assert_eq!(entry["certificate_id"], id.as_str());
    }

    let jwks_url = format!("{}/.well-known/jwks.json", oracle.url);
    let jwks_file = write("jwks.json", &oracle.get_text("/.well-known/jwks.json"));
    let vkey_file = write("log.vkey", &vkey);
    let bundle = get_json(
        &oracle.url,
        &format!("/v1/certificates/{}", ids[1]),
        &auditor,
    );
    let bundle_file = write("bundle.json", &bundle.to_string());
    fn with<'a>(
        head: &[&'a std::ffi::OsStr],
        extra: &[&'a std::ffi::OsStr],
    ) -> Vec<&'a std::ffi::OsStr> {
        let mut v = head.to_vec();
        v.extend_from_slice(extra);
        v
    }
    let head: Vec<&std::ffi::OsStr> = vec![
        bundle_file.as_os_str(),
        "--jwks".as_ref(),
        jwks_file.as_os_str(),
        "--log-key".as_ref(),
        vkey_file.as_os_str(),
    ];

    // The bundle verifies offline: signature, claims, status, inclusion.
    let (code, report) = verify(&with(&head, &[]));
    assert_eq!(code, Some(0), "{report}");
    assert_eq!(report["valid"], true);

    // Append-only since the saved checkpoint of size 5.
    let consistency = get_json(&oracle.url, "/v1/log/proofs/consistency?first=5", &auditor);
    let parsed: ConsistencyProof = serde_json::from_value(consistency.clone()).unwrap();
    assert_eq!(
        verify_consistency(&checkpoint5, &parsed, &log)
            .unwrap()
            .size,
        9
    );
    let consistency_file = write("consistency.json", &consistency.to_string());
    let (code, report) = verify(&with(
        &head,
        &[
            "--previous-checkpoint".as_ref(),
            cp5_file.as_os_str(),
            "--consistency".as_ref(),
            consistency_file.as_os_str(),
        ],
    ));
    assert_eq!(code, Some(0), "{report}");

    // Against a trusted older checkpoint: the bundle's proof (size 9) does not match it, a proof
    // fetched for size 5 does.
    let (code, report) = verify(&with(
        &head,
        &["--checkpoint".as_ref(), cp5_file.as_os_str()],
    ));
    assert_eq!(code, Some(1));
    assert!(failed_check(&report).contains("tree size 9"), "{report}");
    let at5 = get_json(
        &oracle.url,
        &format!(
            "/v1/log/proofs/inclusion?certificate_id={}&tree_size=5",
            ids[1]
        ),
        &auditor,
    );
    let at5_file = write("inclusion5.json", &at5.to_string());
    let (code, report) = verify(&with(
        &head,
        &[
            "--checkpoint".as_ref(),
            cp5_file.as_os_str(),
            "--inclusion".as_ref(),
            at5_file.as_os_str(),
        ],
    ));
    assert_eq!(code, Some(0), "{report}");
    // A certificate issued after size 5 has no proof at size 5.
    let r = get(
        &oracle.url,
        &format!(
            "/v1/log/proofs/inclusion?certificate_id={}&tree_size=5",
            more[0]
        ),
        &auditor,
    );
    assert_eq!(r.status(), 400);
    // A `first` beyond the log (of 9 entries) is named as such, with or without `second`.
    for path in [
        "/v1/log/proofs/consistency?first=10",
        "/v1/log/proofs/consistency?first=10&second=5",
    ] {
        let r = get(&oracle.url, path, &auditor);
        assert_eq!(r.status(), 400, "{path}");
        let problem: serde_json::Value = serde_json::from_str(&r.text().unwrap()).unwrap();
        assert_eq!(problem["code"], "invalid_tree_size", "{path}");
        assert_eq!(
            problem["detail"], "tree size 10 exceeds the log's current size 9",
            "{path}"
        );
    }
    let r = get(
        &oracle.url,
        "/v1/log/proofs/consistency?first=7&second=5",
        &auditor,
    );
    assert_eq!(r.status(), 400);
    let problem: serde_json::Value = serde_json::from_str(&r.text().unwrap()).unwrap();
    assert_eq!(problem["code"], "invalid_tree_size");
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("need 0 < first ≤ second"),
        "{problem}"
    );
    assert_eq!(
        get(&oracle.url, "/v1/log/proofs/consistency?first=0", &auditor).status(),
        400
    );

    // A tampered proof, another certificate's proof, a bare JWS without proof, the wrong log
    // key, an expired certificate: each fails with its reason.
    let mut tampered = bundle.clone();
    let h = tampered["inclusion_proof"]["hashes"][0]
        .as_str()
        .unwrap()
        .to_owned();
    let flipped = if h.starts_with('A') {
        h.replacen('A', "B", 1)
    } else {
        format!("A{}", &h[1..])
    };
    tampered["inclusion_proof"]["hashes"][0] = flipped.into();
    let tampered_file = write("tampered.json", &tampered.to_string());
    let (code, report) = verify(&[
        tampered_file.as_os_str(),
        "--jwks".as_ref(),
        jwks_file.as_os_str(),
        "--log-key".as_ref(),
        vkey_file.as_os_str(),
    ]);
    assert_eq!(code, Some(1));
    assert!(failed_check(&report).contains("not proven"), "{report}");

    let other = get_json(
        &oracle.url,
        &format!("/v1/certificates/{}", ids[2]),
        &auditor,
    );
    let mut swapped = bundle.clone();
    swapped["inclusion_proof"] = other["inclusion_proof"].clone();
    let swapped_file = write("swapped.json", &swapped.to_string());
    let (code, report) = verify(&[
        swapped_file.as_os_str(),
        "--jwks".as_ref(),
        jwks_file.as_os_str(),
        "--log-key".as_ref(),
        vkey_file.as_os_str(),
    ]);
    assert_eq!(code, Some(1));
    assert!(failed_check(&report).contains("leaf hash"), "{report}");

    let bare_file = write("bare.jws", bundle["jws"].as_str().unwrap());
    let (code, report) = verify(&[bare_file.as_os_str(), "--jwks".as_ref(), jwks_url.as_ref()]);
    assert_eq!(code, Some(1));
    assert!(
        failed_check(&report).contains("not in the transparency log"),
        "{report}"
    );

    let stranger = wattest_shared::checkpoint::LogSigner::generate(log.name()).unwrap();
    let (code, report) = verify(&[
        bundle_file.as_os_str(),
        "--jwks".as_ref(),
        jwks_file.as_os_str(),
        "--log-key".as_ref(),
        stranger.verifier_key().unwrap().as_ref(),
    ]);
    assert_eq!(code, Some(1));
    assert!(
        failed_check(&report).contains("no signature by log key"),
        "{report}"
    );

    let (code, report) = verify(&with(
        &head,
        &["--at".as_ref(), "2100-01-01T00:00:00Z".as_ref()],
    ));
    assert_eq!(code, Some(1));
    assert!(failed_check(&report).contains("expired"), "{report}");

    // Revocation: admin only, with a documented reason; the bundle then fails verification.
    let client = reqwest::blocking::Client::new();
    let revoke = |token: &str, reason: &str| {
        client
            .post(format!(
                "{}/v1/certificates/{}/revocation",
                oracle.url, ids[1]
            ))
            .bearer_auth(token)
            .json(&serde_json::json!({ "reason": reason }))
            .send()
            .unwrap()
    };
    assert_eq!(revoke(&auditor, "measurement_error").status(), 403);
    assert_eq!(revoke(&oracle.token("admin"), "because").status(), 400);
    let r = revoke(&oracle.token("admin"), "measurement_error");
    assert_eq!(r.status(), 200);
    let status = get_json(
        &oracle.url,
        &format!("/v1/certificates/{}/status", ids[1]),
        &auditor,
    );
    assert_eq!(status["state"], "revoked");
    assert_eq!(status["reason"], "measurement_error");
    let revoked = get_json(
        &oracle.url,
        &format!("/v1/certificates/{}", ids[1]),
        &auditor,
    );
    let revoked_file = write("revoked.json", &revoked.to_string());
    let mut revoked_head = head.clone();
    revoked_head[0] = revoked_file.as_os_str();
    let (code, report) = verify(&revoked_head);
    assert_eq!(code, Some(1));
    assert!(failed_check(&report).contains("REVOKED"), "{report}");
    // A status names its certificate: another certificate's valid status does not hide the
    // revocation.
    assert_eq!(status["certificate_id"], ids[1].as_str());
    let other_status = get_json(
        &oracle.url,
        &format!("/v1/certificates/{}/status", ids[0]),
        &auditor,
    );
    assert_eq!(other_status["state"], "valid");
    let other_status_file = write("other-status.json", &other_status.to_string());
    let (code, report) = verify(&with(
        &revoked_head,
        &["--status".as_ref(), other_status_file.as_os_str()],
    ));
    assert_eq!(code, Some(1));
    assert!(
        failed_check(&report).contains(&format!("the status is for certificate {}", ids[0])),
        "{report}"
    );
    // The log is append-only: the revoked certificate is still in it.
    let still = get_json(&oracle.url, "/v1/log/entries/1", &auditor);
    assert_eq!(still["certificate_id"], ids[1].as_str());
}

/// What [`recording_server`] answers on a path.
enum Reply {
    /// 200 with this JSON or text body.
    Body(String),
    /// 302 to this location.
    Redirect(String),
}

/// One request a [`recording_server`] answered: its path (with the query) and its
/// `Authorization` header line (empty when none).
type Seen = std::sync::Arc<std::sync::Mutex<Vec<(String, String)>>>;

/// Serves `routes` (by path, the query ignored; 404 elsewhere) on a loopback port; returns its
/// URL and the requests it answered.
fn recording_server(routes: Vec<(&'static str, Reply)>) -> (String, Seen) {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let seen: Seen = std::sync::Arc::default();
    let record = seen.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut reader = BufReader::new(&stream);
            let mut line = String::new();
            let _ = reader.read_line(&mut line);
            let path = line.split(' ').nth(1).unwrap_or_default().to_owned();
            let mut auth = String::new();
            line.clear();
            while reader.read_line(&mut line).unwrap_or(0) > 2 {
                if line.to_ascii_lowercase().starts_with("authorization:") {
                    auth = line.trim().to_owned();
                }
                line.clear();
            }
            let route = path.split('?').next().unwrap_or_default();
            let reply = routes.iter().find(|(p, _)| *p == route).map(|(_, r)| r);
            record.lock().unwrap().push((path, auth));
            let _ = match reply {
                Some(Reply::Body(body)) => write!(
                    &stream,
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                ),
                Some(Reply::Redirect(location)) => write!(
                    &stream,
                    "HTTP/1.1 302 Found\r\nlocation: {location}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                ),
                None => write!(
                    &stream,
                    "HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                ),
            };
        }
    });
    (url, seen)
}

/// The token goes with the requests for CERT, --status, --inclusion and --consistency (the
/// oracle's auditor endpoints, even when CERT is a file), never with those for the JWKS, the
/// log key or a checkpoint, not even on the same host.
#[test]
fn the_token_goes_to_the_oracle_only() {
    let oracle = Oracle::start();
    let auditor = oracle.token("auditor");
    let mut node = enroll(&oracle, &oracle.token("node"));
    let first = certify(&oracle.url, &mut node, "token-origin-1");
    let dir = tempfile::tempdir().unwrap();
    let checkpoint1 = dir.path().join("checkpoint1.txt");
    std::fs::write(&checkpoint1, oracle.get_text("/v1/log/checkpoint")).unwrap();
    let id = certify(&oracle.url, &mut node, "token-origin-2");
    // The JWKS comes from another origin (a mirror): it must not see the auditor's token.
    let (mirror, seen) = recording_server(vec![(
        "/.well-known/jwks.json",
        Reply::Body(oracle.get_text("/.well-known/jwks.json")),
    )]);
    let vkey = dir.path().join("log.vkey");
    std::fs::write(&vkey, oracle.get_text("/v1/log/key")).unwrap();
    let cert_url = format!("{}/v1/certificates/{id}", oracle.url);
    let jwks_url = format!("{mirror}/.well-known/jwks.json");
    let (code, report) = verify(&[
        cert_url.as_ref(),
        "--jwks".as_ref(),
        jwks_url.as_ref(),
        "--log-key".as_ref(),
        vkey.as_os_str(),
        "--token".as_ref(),
        auditor.as_ref(),
    ]);
    // The certificate needs the token (the oracle answered), the mirror was asked without it.
    assert_eq!(code, Some(0), "{report}");
    assert_eq!(
        *seen.lock().unwrap(),
        [("/.well-known/jwks.json".to_owned(), String::new())]
    );
    seen.lock().unwrap().clear();

    // CERT a saved JWS: the auditor-only proofs given as the oracle's URLs get the token.
    let bundle = get_json(&oracle.url, &format!("/v1/certificates/{id}"), &auditor);
    let jws = dir.path().join("cert.jws");
    std::fs::write(&jws, bundle["jws"].as_str().unwrap()).unwrap();
    let inclusion_url = format!("{}/v1/log/proofs/inclusion?certificate_id={id}", oracle.url);
    let consistency_url = format!("{}/v1/log/proofs/consistency?first=1", oracle.url);
    let (code, report) = verify(&[
        jws.as_os_str(),
        "--jwks".as_ref(),
        jwks_url.as_ref(),
        "--log-key".as_ref(),
        vkey.as_os_str(),
        "--inclusion".as_ref(),
        inclusion_url.as_ref(),
        "--previous-checkpoint".as_ref(),
        checkpoint1.as_os_str(),
        "--consistency".as_ref(),
        consistency_url.as_ref(),
        "--token".as_ref(),
        auditor.as_ref(),
    ]);
    assert_eq!(code, Some(0), "{report}");
    assert!(
        report["checks"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["check"] == "consistency" && c["ok"] == true),
        "{report}"
    );

    // One origin serving the JWKS, the inclusion proof and the checkpoint: only the proof's
    // request carries the token.
    let proof = get_json(
        &oracle.url,
        &format!("/v1/log/proofs/inclusion?certificate_id={first}"),
        &auditor,
    );
    let (server, seen) = recording_server(vec![
        (
            "/.well-known/jwks.json",
            Reply::Body(oracle.get_text("/.well-known/jwks.json")),
        ),
        ("/inclusion", Reply::Body(proof.to_string())),
        (
            "/checkpoint",
            Reply::Body(proof["checkpoint"].as_str().unwrap().to_owned()),
        ),
    ]);
    let first_bundle = get_json(&oracle.url, &format!("/v1/certificates/{first}"), &auditor);
    std::fs::write(&jws, first_bundle["jws"].as_str().unwrap()).unwrap();
    let (code, report) = verify(&[
        jws.as_os_str(),
        "--jwks".as_ref(),
        format!("{server}/.well-known/jwks.json").as_ref(),
        "--log-key".as_ref(),
        vkey.as_os_str(),
        "--inclusion".as_ref(),
        format!("{server}/inclusion").as_ref(),
        "--checkpoint".as_ref(),
        format!("{server}/checkpoint").as_ref(),
        "--token".as_ref(),
        auditor.as_ref(),
    ]);
    assert_eq!(code, Some(0), "{report}");
    let mut seen = seen.lock().unwrap().clone();
    seen.sort();
    assert_eq!(
        seen,
        [
            ("/.well-known/jwks.json".to_owned(), String::new()),
            ("/checkpoint".to_owned(), String::new()),
            (
                "/inclusion".to_owned(),
                format!("authorization: Bearer {auditor}")
            ),
        ]
    );
}

/// The detail of `report`'s check named `name`, and whether it passed.
fn check_of(report: &serde_json::Value, name: &str) -> (bool, String) {
    let check = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["check"] == name)
        .unwrap_or_else(|| panic!("no {name} check: {report}"));
    (
        check["ok"].as_bool().unwrap(),
        check["detail"].as_str().unwrap().to_owned(),
    )
}

/// The status is unsigned: without any the report says revocation was NOT checked, with the
/// bundle's that it relied on an unauthenticated status (a holder can edit "revoked" to
/// "valid"), and --require-status fails both; only a status fetched from the oracle with the
/// token counts then. A status must name its certificate.
#[test]
fn revocation_counts_only_when_authenticated_if_required() {
    let oracle = Oracle::start();
    let auditor = oracle.token("auditor");
    let mut node = enroll(&oracle, &oracle.token("node"));
    let id = certify(&oracle.url, &mut node, "status");
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    let jwks = write("jwks.json", &oracle.get_text("/.well-known/jwks.json"));
    let vkey = write("log.vkey", &oracle.get_text("/v1/log/key"));
    let bundle = get_json(&oracle.url, &format!("/v1/certificates/{id}"), &auditor);
    let cert_url = format!("{}/v1/certificates/{id}", oracle.url);
    let status_url = format!("{cert_url}/status");
    let run = |cert: &std::ffi::OsStr, extra: &[&str]| {
        let mut argv: Vec<&std::ffi::OsStr> = vec![
            cert,
            "--jwks".as_ref(),
            jwks.as_os_str(),
            "--log-key".as_ref(),
            vkey.as_os_str(),
        ];
        argv.extend(extra.iter().map(|a| std::ffi::OsStr::new(*a)));
        let (code, report) = verify(&argv);
        let (ok, detail) = check_of(&report, "status");
        (code, ok, detail)
    };
    let with_token = ["--token", auditor.as_str()];

    // The bundle's status: passes, saying it was not authenticated; fails when required.
    let bundle_file = write("bundle.json", &bundle.to_string());
    let (code, ok, detail) = run(bundle_file.as_os_str(), &[]);
    assert_eq!((code, ok), (Some(0), true), "{detail}");
    assert!(
        detail.contains("relied on the bundle's unsigned status (not authenticated)"),
        "{detail}"
    );
    let (code, ok, detail) = run(bundle_file.as_os_str(), &["--require-status"]);
    assert_eq!((code, ok), (Some(1), false), "{detail}");
    assert!(detail.contains("--require-status"), "{detail}");
    assert!(detail.contains("not authenticated"), "{detail}");
    // A saved status file is no better.
    let saved = write(
        "status.json",
        &get_json(
            &oracle.url,
            &format!("/v1/certificates/{id}/status"),
            &auditor,
        )
        .to_string(),
    );
    let saved = saved.to_str().unwrap();
    let (code, _, detail) = run(
        bundle_file.as_os_str(),
        &["--require-status", "--status", saved],
    );
    assert_eq!(code, Some(1), "{detail}");
    // Fetched from the oracle with the token: --status URL, or CERT as the oracle's URL.
    let mut argv = vec!["--require-status", "--status", status_url.as_str()];
    argv.extend(with_token);
    let (code, ok, detail) = run(bundle_file.as_os_str(), &argv);
    assert_eq!((code, ok), (Some(0), true), "{detail}");
    assert!(
        detail.starts_with("not revoked (the status fetched from"),
        "{detail}"
    );
    let mut argv = vec!["--require-status"];
    argv.extend(with_token);
    let (code, ok, detail) = run(cert_url.as_ref(), &argv);
    assert_eq!((code, ok), (Some(0), true), "{detail}");

    // No status at all: NOT checked, a failure when required.
    let mut bare = bundle.clone();
    bare.as_object_mut().unwrap().remove("status");
    let bare_file = write("no-status.json", &bare.to_string());
    let (code, ok, detail) = run(bare_file.as_os_str(), &[]);
    assert_eq!((code, ok), (Some(0), true), "{detail}");
    assert!(detail.starts_with("revocation NOT checked"), "{detail}");
    let (code, ok, detail) = run(bare_file.as_os_str(), &["--require-status"]);
    assert_eq!((code, ok), (Some(1), false), "{detail}");
    assert!(detail.starts_with("revocation NOT checked"), "{detail}");

    // A status that names no certificate is refused, from the bundle or from --status.
    let mut anonymous = bundle.clone();
    anonymous["status"]
        .as_object_mut()
        .unwrap()
        .remove("certificate_id");
    let anonymous_file = write("anonymous.json", &anonymous.to_string());
    let (code, ok, detail) = run(anonymous_file.as_os_str(), &[]);
    assert_eq!((code, ok), (Some(1), false), "{detail}");
    assert!(detail.contains("no certificate_id"), "{detail}");
    let anonymous_status = write("anonymous-status.json", r#"{"state":"valid"}"#);
    let (code, ok, detail) = run(
        bare_file.as_os_str(),
        &["--status", anonymous_status.to_str().unwrap()],
    );
    assert_eq!((code, ok), (Some(1), false), "{detail}");
    assert!(detail.contains("no certificate_id"), "{detail}");

    // Revoked, and the holder edits the bundle's status back to valid: without
    // --require-status that passes but says what it relied on; with it the oracle is asked.
    let r = reqwest::blocking::Client::new()
        .post(format!("{cert_url}/revocation"))
        .bearer_auth(oracle.token("admin"))
        .json(&serde_json::json!({ "reason": "measurement_error" }))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    let mut edited = get_json(&oracle.url, &format!("/v1/certificates/{id}"), &auditor);
    assert_eq!(edited["status"]["state"], "revoked");
    edited["status"] = serde_json::json!({ "certificate_id": id, "state": "valid" });
    let edited_file = write("edited.json", &edited.to_string());
    let (code, _, detail) = run(edited_file.as_os_str(), &[]);
    assert_eq!(code, Some(0), "{detail}");
    assert!(detail.contains("(not authenticated)"), "{detail}");
    let (code, _, detail) = run(edited_file.as_os_str(), &["--require-status"]);
    assert_eq!(code, Some(1), "{detail}");
    let mut argv = vec!["--require-status", "--status", status_url.as_str()];
    argv.extend(with_token);
    let (code, ok, detail) = run(edited_file.as_os_str(), &argv);
    assert_eq!((code, ok), (Some(1), false), "{detail}");
    assert!(detail.starts_with("REVOKED"), "{detail}");
}

/// Plain http:// to a host other than this machine is refused before any connection (exit 2,
/// saying why and what to pass): an on-path attacker could substitute the keys. The token is
/// never sent over it, even with --allow-http. Redirects to it are refused too; loopback hosts
/// (the oracle here on 127.0.0.1, or `localhost`) are fine.
#[test]
fn plain_http_to_another_host_is_refused_before_any_connection() {
    let oracle = Oracle::start();
    let auditor = oracle.token("auditor");
    let mut node = enroll(&oracle, &oracle.token("node"));
    let id = certify(&oracle.url, &mut node, "plain-http");
    let saved = save_offline(&oracle, &auditor, &id);
    let bundle = saved.bundle.to_str().unwrap();
    let jwks = saved.jwks.to_str().unwrap();
    let vkey = saved.vkey.to_str().unwrap();

    // TEST-NET-1 (RFC 5737): never to be contacted.
    let far = "http://192.0.2.1";
    let far_jwks = format!("{far}/.well-known/jwks.json");
    let far_cert = format!("{far}/v1/certificates/{id}");
    let far_inclusion = format!("{far}/v1/log/proofs/inclusion?certificate_id={id}");
    let refused = |argv: &[&str], token: bool| {
        let mut cmd = Command::new(bin("wattest-verify"));
        cmd.args(argv).env_remove("WATTEST_TOKEN");
        if token {
            cmd.env("WATTEST_TOKEN", &auditor);
        }
        let started = std::time::Instant::now();
        let out = cmd.output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(2), "{argv:?}: {stderr}");
        assert!(out.stdout.is_empty(), "{argv:?}: no verdict");
        assert!(
            started.elapsed() < std::time::Duration::from_secs(5),
            "{argv:?} took {:?}: was the host contacted?",
            started.elapsed()
        );
        stderr
    };
    let stderr = refused(&[bundle, "--jwks", &far_jwks], false);
    assert!(
        stderr.contains(&format!(
            "refusing --jwks {far_jwks}: it is plain http:// to 192.0.2.1, not this machine"
        )),
        "{stderr}"
    );
    assert!(stderr.contains("pass --allow-http"), "{stderr}");
    let far_key = format!("{far}/v1/log/key");
    let stderr = refused(&[bundle, "--jwks", jwks, "--log-key", &far_key], false);
    assert!(stderr.contains("refusing --log-key"), "{stderr}");
    // The token: refused even with --allow-http, for CERT and for --inclusion.
    for argv in [
        vec![
            far_cert.as_str(),
            "--jwks",
            jwks,
            "--log-key",
            vkey,
            "--allow-http",
        ],
        vec![
            bundle,
            "--jwks",
            jwks,
            "--log-key",
            vkey,
            "--inclusion",
            &far_inclusion,
            "--allow-http",
        ],
    ] {
        let stderr = refused(&argv, true);
        assert!(stderr.contains("bearer token"), "{stderr}");
        assert!(stderr.contains("cleartext"), "{stderr}");
        assert!(
            stderr.contains("--allow-http does not lift this"),
            "{stderr}"
        );
    }
    // A loopback URL redirecting to plain HTTP elsewhere.
    let (server, seen) = recording_server(vec![(
        "/.well-known/jwks.json",
        Reply::Redirect(far_jwks.clone()),
    )]);
    let stderr = refused(
        &[
            bundle,
            "--jwks",
            &format!("{server}/.well-known/jwks.json"),
            "--log-key",
            vkey,
        ],
        false,
    );
    assert!(stderr.contains("redirected to plain http://"), "{stderr}");
    assert_eq!(seen.lock().unwrap().len(), 1);

    // Loopback by name or address is plain HTTP this machine only: accepted.
    let local_jwks = format!(
        "{}/.well-known/jwks.json",
        oracle.url.replace("127.0.0.1", "localhost")
    );
    let (code, report) = verify(&[
        bundle.as_ref(),
        "--jwks".as_ref(),
        local_jwks.as_ref(),
        "--log-key".as_ref(),
        vkey.as_ref(),
    ]);
    assert_eq!(code, Some(0), "{report}");
}

/// A saved JWKS carries no log key, and nothing else offline can vouch for one (a checkpoint
/// names its key without carrying it; the bundle is what is being checked): the verifier exits
/// 2 saying what to pass and naming the key the proof's checkpoint names. With --log-key it
/// verifies; with --no-log too, and its report says what --no-log's help quotes.
#[test]
fn a_jwks_file_needs_the_log_key_and_the_error_says_which() {
    let oracle = Oracle::start();
    let auditor = oracle.token("auditor");
    let mut node = enroll(&oracle, &oracle.token("node"));
    let id = certify(&oracle.url, &mut node, "jwks-file");
    let saved = save_offline(&oracle, &auditor, &id);
    let (bundle, jwks) = (&saved.bundle, &saved.jwks);
    let vkey = std::fs::read_to_string(&saved.vkey).unwrap();
    // `<name>+<key id>+`: the start of the verifier key.
    let key_prefix: String = vkey
        .splitn(3, '+')
        .take(2)
        .map(|p| format!("{p}+"))
        .collect();

    let refused = |cert: &std::ffi::OsStr| {
        let out = Command::new(bin("wattest-verify"))
            .arg(cert)
            .arg("--jwks")
            .arg(jwks)
            .env("WATTEST_TOKEN", &auditor)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(out.stdout.is_empty(), "no verdict without the log key");
        for needed in [
            "--log-key",
            "GET /v1/log/key",
            "--no-log",
            key_prefix.as_str(),
        ] {
            assert!(stderr.contains(needed), "{needed}: {stderr}");
        }
        stderr
    };
    refused(bundle.as_os_str());
    // CERT fetched from the oracle: the message gives the key's URL there.
    let cert_url = format!("{}/v1/certificates/{id}", oracle.url);
    let stderr = refused(cert_url.as_ref());
    assert!(
        stderr.contains(&format!("--log-key {}/v1/log/key", oracle.url)),
        "{stderr}"
    );

    let (code, report) = verify(&[
        bundle.as_os_str(),
        "--jwks".as_ref(),
        jwks.as_os_str(),
        "--log-key".as_ref(),
        vkey.trim().as_ref(),
    ]);
    assert_eq!(code, Some(0), "{report}");

    let (code, report) = verify(&[
        bundle.as_os_str(),
        "--jwks".as_ref(),
        jwks.as_os_str(),
        "--no-log".as_ref(),
    ]);
    assert_eq!(code, Some(0), "{report}");
    let log = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["check"] == "log inclusion")
        .unwrap_or_else(|| panic!("no log inclusion check: {report}"));
    let detail = log["detail"].as_str().unwrap();
    assert_eq!(detail, "skipped (--no-log): log inclusion NOT checked");
    let help = Command::new(bin("wattest-verify"))
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    let help = help.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(help.contains(&format!("\"{detail}\"")), "{help}");
}

#[test]
fn key_rotation_keeps_old_certificates_verifiable() {
    let oracle = Oracle::start();
    let auditor = oracle.token("auditor");
    let mut node = enroll(&oracle, &oracle.token("node"));
    let before = certify(&oracle.url, &mut node, "before");
    let out = Command::new(bin("wattest-oracle"))
        .args([
            "keys",
            "rotate",
            "--activate-after-hours",
            "0",
            "--data-dir",
        ])
        .arg(oracle.data_dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let new_kid = String::from_utf8(out.stdout)
        .unwrap()
        .split('\t')
        .next()
        .unwrap()
        .to_owned();
    let after = certify(&oracle.url, &mut node, "after");
    let jwks = oracle.get_json("/.well-known/jwks.json");
    let kids: Vec<&str> = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap())
        .collect();
    assert_eq!(
        kids.len(),
        2,
        "the running oracle publishes the rotated key: {kids:?}"
    );
    let jwks_url = format!("{}/.well-known/jwks.json", oracle.url);
    let mut signers = Vec::new();
    for id in [&before, &after] {
        let bundle = get_json(&oracle.url, &format!("/v1/certificates/{id}"), &auditor);
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("b.json");
        std::fs::write(&file, bundle.to_string()).unwrap();
        let (code, report) = verify(&[file.as_os_str(), "--jwks".as_ref(), jwks_url.as_ref()]);
        assert_eq!(code, Some(0), "{report}");
        signers.push(report["checks"][0]["detail"].as_str().unwrap().to_owned());
    }
    assert!(signers[1].contains(&new_kid), "{signers:?}");
    assert!(!signers[0].contains(&new_kid), "{signers:?}");
}

struct Replica(Child);

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A second `serve` process on `primary`'s data dir (same keys, same log key) and database.
fn replica(primary: &Oracle, database_url: &str) -> (Replica, String) {
    let port = free_port();
    let child = Command::new(bin("wattest-oracle"))
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--log-origin",
            "replicas.test/wattest-log",
            "--data-dir",
        ])
        .arg(primary.data_dir.path())
        .args(wattest_tests::backdating(&[]))
        .env("DATABASE_URL", database_url)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !reqwest::blocking::get(format!("{url}/healthz")).is_ok_and(|r| r.status().is_success()) {
        assert!(
            std::time::Instant::now() < deadline,
            "replica did not start"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    (Replica(child), url)
}

#[test]
fn replicas_on_one_postgresql_share_one_log() {
    let Some(db) = fresh_pg_database() else {
        panic!("PostgreSQL is required (set WATTEST_TEST_PG or run scripts/test.sh)");
    };
    let primary = Oracle::start_with(
        Some(db.clone()),
        &["--log-origin", "replicas.test/wattest-log"],
    );
    let (_replica, second) = replica(&primary, &db);
    let urls = [primary.url.clone(), second];
    let node_token = primary.token("node");
    let auditor = primary.token("auditor");
    let mut nodes: Vec<Node> = (0..4).map(|_| enroll(&primary, &node_token)).collect();

    // Four nodes certify concurrently, alternating replicas for every job.
    let ids: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = nodes
            .iter_mut()
            .enumerate()
            .map(|(n, node)| {
                let urls = &urls;
                s.spawn(move || {
                    (0..6)
                        .map(|j| certify(&urls[(n + j) % 2], node, &format!("job-{n}-{j}")))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    assert_eq!(ids.len(), 24);

    // One log: size 24, the same signed checkpoint from both replicas, every certificate at a
    // distinct index with a valid proof, and consistency from every earlier size.
    let log = LogVerifier::parse(primary.get_text("/v1/log/key").trim()).unwrap();
    let note_a = get(&urls[0], "/v1/log/checkpoint", &auditor)
        .text()
        .unwrap();
    let note_b = get(&urls[1], "/v1/log/checkpoint", &auditor)
        .text()
        .unwrap();
    assert_eq!(note_a, note_b, "replicas sign the same checkpoint");
    assert_eq!(log.verify(&note_a).unwrap().size, 24);
    let mut indices = std::collections::BTreeSet::new();
    for (i, id) in ids.iter().enumerate() {
        let bundle = get_json(&urls[i % 2], &format!("/v1/certificates/{id}"), &auditor);
        let proof: InclusionProof =
            serde_json::from_value(bundle["inclusion_proof"].clone()).unwrap();
        verify_inclusion(bundle["jws"].as_str().unwrap(), &proof, &log).unwrap();
        assert!(
            indices.insert(proof.leaf_index),
            "index {} used twice",
            proof.leaf_index
        );
    }
    assert_eq!(
        indices.into_iter().collect::<Vec<_>>(),
        (0..24).collect::<Vec<u64>>()
    );
    for first in 1..24 {
        let c: ConsistencyProof = serde_json::from_value(get_json(
            &urls[first as usize % 2],
            &format!("/v1/log/proofs/consistency?first={first}&second=24"),
            &auditor,
        ))
        .unwrap();
        let old = get_json(
            &urls[0],
            &format!("/v1/log/proofs/consistency?first=1&second={first}"),
            &auditor,
        )["checkpoint"]
            .as_str()
            .unwrap()
            .to_owned();
        verify_consistency(&old, &c, &log).unwrap();
    }
    // Every node has its six certificates, whichever replica issued them.
    for node in &nodes {
        let list = get_json(
            &urls[0],
            &format!("/v1/certificates?node={}", node.id),
            &auditor,
        );
        assert_eq!(
            list["certificates"].as_array().unwrap().len(),
            6,
            "node {}",
            node.id
        );
    }
}
