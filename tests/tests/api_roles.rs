//! Role policy of the HTTP API (docs/protocol.md, "Roles"): every protected endpoint refuses a
//! request without a token (401 `missing_token`), with an unknown or revoked token (401
//! `invalid_token`) and with a token of the wrong role (403 `forbidden_role`), always as
//! problem+json; the right role and admin get past the check; public endpoints need no token.

use wattest_tests::{Oracle, run_ok};

const ROLES: [&str; 4] = ["node", "auditor", "compliance", "admin"];

/// (method, path, JSON body, roles allowed besides admin).
fn protected() -> Vec<(
    &'static str,
    &'static str,
    Option<serde_json::Value>,
    &'static [&'static str],
)> {
    vec![
        ("GET", "/v1/certificates", None, &["auditor", "compliance"]),
        (
            "GET",
            "/v1/certificates/00000000-0000-4000-8000-000000000000",
            None,
            &["auditor", "compliance"],
        ),
        (
            "GET",
            "/v1/certificates/00000000-0000-4000-8000-000000000000/status",
            None,
            &["auditor", "compliance"],
        ),
        (
            "POST",
            "/v1/certificates/00000000-0000-4000-8000-000000000000/revocation",
            Some(serde_json::json!({"reason": "other"})),
            &[],
        ),
        ("GET", "/v1/exports/compliance.csv", None, &["compliance"]),
        (
            "GET",
            "/v1/log/proofs/inclusion?certificate_id=x",
            None,
            &["auditor"],
        ),
        (
            "GET",
            "/v1/log/proofs/consistency?first=1",
            None,
            &["auditor"],
        ),
        ("GET", "/v1/log/entries/0", None, &["auditor"]),
        ("GET", "/v1/nodes", None, &["auditor"]),
        ("GET", "/v1/balances", None, &["auditor"]),
        ("GET", "/v1/carbon/intensity?zone=BE", None, &["auditor"]),
        (
            "POST",
            "/v1/nodes",
            Some(serde_json::json!({"name": "x"})),
            &["node"],
        ),
        (
            "POST",
            "/v1/nodes/challenges/x",
            Some(serde_json::json!({})),
            &["node"],
        ),
    ]
}

fn send(
    oracle: &Oracle,
    method: &str,
    path: &str,
    body: Option<&serde_json::Value>,
    token: &str,
) -> (u16, String, serde_json::Value) {
    let client = reqwest::blocking::Client::new();
    let url = format!("{}{path}", oracle.url);
    let mut request = if method == "POST" {
        client
            .post(url)
            .json(body.unwrap_or(&serde_json::Value::Null))
    } else {
        client.get(url)
    };
    if !token.is_empty() {
        request = request.bearer_auth(token);
    }
    let r = request.send().expect("request");
    let status = r.status().as_u16();
    let content_type = r
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    (
        status,
        content_type,
        r.json().unwrap_or(serde_json::Value::Null),
    )
}

fn assert_problem(got: &(u16, String, serde_json::Value), status: u16, code: &str, what: &str) {
    assert_eq!(got.0, status, "{what}: {}", got.2);
    assert_eq!(got.1, "application/problem+json", "{what}");
    assert_eq!(got.2["code"], code, "{what}: {}", got.2);
    assert_eq!(
        got.2["type"],
        format!("https://wattest.dev/problems/{code}"),
        "{what}"
    );
    assert_eq!(got.2["status"], status, "{what}");
}

#[test]
fn every_protected_endpoint_refuses_the_wrong_role_with_problem_json() {
    let oracle = Oracle::start();
    let tokens: Vec<(&str, String)> = ROLES.iter().map(|r| (*r, oracle.token(r))).collect();
    for (method, path, body, allowed) in protected() {
        let what = format!("{method} {path}");
        let got = send(&oracle, method, path, body.as_ref(), "");
        assert_problem(&got, 401, "missing_token", &format!("{what} without token"));
        let got = send(
            &oracle,
            method,
            path,
            body.as_ref(),
            "wt_admin_not-a-real-token",
        );
        assert_problem(
            &got,
            401,
            "invalid_token",
            &format!("{what} with unknown token"),
        );
        for (role, token) in &tokens {
            let got = send(&oracle, method, path, body.as_ref(), token);
            if *role == "admin" || allowed.contains(role) {
                assert!(
                    got.0 != 401 && got.0 != 403,
                    "{what} as {role} must pass the role check: {} {}",
                    got.0,
                    got.2
                );
            } else {
                assert_problem(&got, 403, "forbidden_role", &format!("{what} as {role}"));
            }
        }
    }
}

#[test]
fn public_endpoints_need_no_token() {
    let oracle = Oracle::start();
    for path in [
        "/healthz",
        "/.well-known/jwks.json",
        "/openapi.json",
        "/metrics",
        "/v1/log/checkpoint",
        "/v1/log/key",
        "/v1/schemas/energy-certificate-subject.json",
        "/v1/stats",
        "/v1/carbon/sources",
    ] {
        let r = oracle.get_as(path, "");
        assert_eq!(r.status(), 200, "GET {path} without a token");
    }
    // Telemetry is authenticated by the window's signature, not a token: no token is not a 401.
    let r = reqwest::blocking::Client::new()
        .post(format!("{}/v1/telemetry", oracle.url))
        .header("content-type", "application/jose")
        .body("not.a.jws")
        .send()
        .expect("POST");
    assert_eq!(r.status(), 400);
}

#[test]
fn revoked_tokens_are_refused_and_token_list_never_shows_a_token() {
    let oracle = Oracle::start();
    let auditor = oracle.token("auditor");
    assert_eq!(oracle.get_as("/v1/nodes", &auditor).status(), 200);
    let list = |json: bool| {
        let mut cmd = oracle.cli(&["token", "list"]);
        if json {
            cmd.arg("--json");
        }
        String::from_utf8(run_ok(&mut cmd).stdout).expect("utf8")
    };
    let text = list(false);
    assert!(
        text.starts_with("ID\tROLE\tCREATED\tLAST_USED\tREVOKED"),
        "{text}"
    );
    assert!(!text.contains(&auditor), "token list printed a token");
    let rows: Vec<serde_json::Value> = serde_json::from_str(&list(true)).expect("json");
    assert!(!list(true).contains("wt_"), "token list printed a token");
    let row = rows
        .iter()
        .find(|r| r["role"] == "auditor")
        .expect("auditor row");
    assert!(row["last_used_at"].is_string(), "last use recorded: {row}");
    assert!(row["revoked_at"].is_null());
    let id = row["id"].as_str().expect("id");
    run_ok(&mut oracle.cli(&["token", "revoke", id]));
    let r = oracle.get_as("/v1/nodes", &auditor);
    assert_eq!(r.status(), 401);
    let problem: serde_json::Value = r.json().expect("json");
    assert_eq!(problem["code"], "invalid_token");
}
