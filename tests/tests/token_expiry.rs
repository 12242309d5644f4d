//! Tokens that expire (`wattest-oracle token create --expires-in`): accepted until their expiry,
//! 401 `invalid_token` from then on (docs/protocol.md §3.5), listed with their expiry; lifetimes
//! that are not durations of 1 s to 100 y are usage errors (exit 2). Node tokens that enroll at
//! most N nodes (`--max-enrollments`): 403 `enrollment_limit` beyond.

#![allow(clippy::unwrap_used)]

use chrono::{DateTime, Duration, Utc};
use wattest_tests::{Oracle, run_ok};

/// `token create --role auditor --expires-in LIFETIME`: (token, stderr).
fn create(oracle: &Oracle, lifetime: &str) -> (String, String) {
    let out = run_ok(&mut oracle.cli(&[
        "token",
        "create",
        "--role",
        "auditor",
        "--expires-in",
        lifetime,
    ]));
    (
        String::from_utf8(out.stdout).unwrap().trim().to_owned(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

#[test]
fn a_token_is_accepted_until_it_expires_and_refused_after() {
    let oracle = Oracle::start();
    let before = Utc::now();
    let (lasting, stderr) = create(&oracle, "90d");
    let after = Utc::now();
    assert!(stderr.contains("The token expires at "), "{stderr}");
    let status = oracle.get_as("/v1/certificates", &lasting).status();
    assert_eq!(status, 200);

    let _forever = oracle.token("node");
    // `token list --json` gives the expiry: 90 days after creation.
    let out = run_ok(&mut oracle.cli(&["token", "list", "--json"]));
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    let expiring: Vec<DateTime<Utc>> = rows
        .iter()
        .filter_map(|r| r["expires_at"].as_str())
        .map(|t| DateTime::parse_from_rfc3339(t).unwrap().to_utc())
        .collect();
    assert_eq!(expiring.len(), 1, "{rows:?}");
    // Times in UTC with `Z`, as `keys list` writes them.
    assert!(
        rows.iter()
            .all(|r| r["created_at"].as_str().unwrap().ends_with('Z')),
        "{rows:?}"
    );
    let window = (before + Duration::days(90))..=(after + Duration::days(90));
    assert!(
        window.contains(&expiring[0]),
        "{expiring:?} not in {window:?}"
    );
    // Tokens created without --expires-in never expire.
    assert!(rows.iter().any(|r| r["expires_at"].is_null()), "{rows:?}");
    let table = String::from_utf8(run_ok(&mut oracle.cli(&["token", "list"])).stdout).unwrap();
    assert!(
        table.starts_with("ID\tROLE\tCREATED\tLAST_USED\tREVOKED\tEXPIRES\tENROLLMENTS\n"),
        "{table}"
    );

    // A token of one second, presented once it has passed.
    let (brief, _) = create(&oracle, "1s");
    let created = Utc::now();
    std::thread::sleep(std::time::Duration::from_millis(1200));
    assert!(Utc::now() >= created + Duration::seconds(1));
    let response = oracle.get_as("/v1/certificates", &brief);
    assert_eq!(response.status(), 401);
    let problem: serde_json::Value = response.json().unwrap();
    assert_eq!(problem["code"], "invalid_token", "{problem}");
    assert!(
        problem["detail"].as_str().unwrap().contains("expired at"),
        "{problem}"
    );
    // The other token is unaffected.
    assert_eq!(oracle.get_as("/v1/certificates", &lasting).status(), 200);
}

#[test]
fn a_lifetime_that_is_not_a_duration_of_1s_to_100y_is_a_usage_error() {
    let oracle = Oracle::start();
    for bad in ["0s", "500ms", "soon", "-1d", "101y", ""] {
        let out = oracle
            .cli(&["token", "create", "--role", "auditor", "--expires-in", bad])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "--expires-in {bad:?}: {out:?}");
        assert!(
            out.stdout.is_empty(),
            "--expires-in {bad:?} printed a token"
        );
    }
}

/// A node token created with `--max-enrollments 2` enrolls two nodes, then gets 403
/// `enrollment_limit` (one node token could otherwise enroll any number of software-key nodes,
/// each paid for its own claims); a token without the cap is not limited.
#[test]
fn a_token_enrolls_at_most_its_max_enrollments_nodes() {
    let oracle = Oracle::start();
    let out = run_ok(&mut oracle.cli(&[
        "token",
        "create",
        "--role",
        "node",
        "--max-enrollments",
        "2",
    ]));
    let capped = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let enroll = |token: &str| {
        let key = wattest_shared::SoftwareKey::generate(2048).unwrap();
        oracle.post_json(
            "/v1/nodes",
            token,
            &serde_json::json!({"name": "n", "zone": "BE", "public_key": key.public_jwk()}),
        )
    };
    for _ in 0..2 {
        let (status, body) = enroll(&capped);
        assert_eq!(status, 201, "{body}");
    }
    let (status, body) = enroll(&capped);
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["code"], "enrollment_limit", "{body}");
    let out = run_ok(&mut oracle.cli(&["token", "list", "--json"]));
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    let row = rows
        .iter()
        .find(|r| r["max_enrollments"] == 2)
        .unwrap_or_else(|| panic!("{rows:?}"));
    assert_eq!(row["enrollments"], 2, "{row}");
    let table = String::from_utf8(run_ok(&mut oracle.cli(&["token", "list"])).stdout).unwrap();
    assert!(table.lines().any(|l| l.ends_with("\t2/2")), "{table}");

    let open = oracle.token("node");
    for _ in 0..3 {
        assert_eq!(enroll(&open).0, 201);
    }
    // Out of range is a usage error.
    let out = oracle
        .cli(&[
            "token",
            "create",
            "--role",
            "node",
            "--max-enrollments",
            "0",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
}
