//! API tests: the real router on a random loopback port with a fresh SQLite data dir per test.

#![allow(clippy::unwrap_used)]

mod common;

use wattest_oracle::{AppState, api};

struct TestApp {
    url: String,
    /// An admin bearer token (certificate reads need a role).
    admin: String,
    _dir: tempfile::TempDir,
}

impl TestApp {
    /// `GET path`, with `authorization` as the whole header value when given.
    async fn get(&self, path: &str, authorization: Option<&str>) -> reqwest::Response {
        let mut request = reqwest::Client::new().get(format!("{}{path}", self.url));
        if let Some(value) = authorization {
            request = request.header("authorization", value);
        }
        request.send().await.unwrap()
    }

    /// The admin token's `Authorization` value.
    fn admin_auth(&self) -> String {
        format!("Bearer {}", self.admin)
    }
}

async fn spawn_app() -> TestApp {
    spawn_app_with(api::Limits::default()).await.0
}

/// The app with `limits`, and its state (whose database a test may close).
async fn spawn_app_with(limits: api::Limits) -> (TestApp, AppState) {
    let (state, dir) = common::open_state(Vec::new()).await;
    let admin =
        wattest_oracle::auth::create_token(&state.storage, wattest_oracle::auth::Role::Admin)
            .await
            .unwrap();
    let (listener, addr) = common::listen().await;
    let url = format!("http://{addr}");
    let router = api::router_with(state.clone(), limits);
    tokio::spawn(async move { axum::serve(listener, router).await });
    let app = TestApp {
        url,
        admin,
        _dir: dir,
    };
    (app, state)
}

/// The OpenAPI document is the contract for integrators: any change must be deliberate.
#[tokio::test]
async fn openapi_document_is_stable() {
    let app = spawn_app().await;
    let doc: serde_json::Value = app.get("/openapi.json", None).await.json().await.unwrap();
    assert!(doc["paths"]["/v1/telemetry"]["post"].is_object());
    // Sorted maps: serde_json keeps insertion order when another crate of the build enables its
    // `preserve_order` feature, and the snapshot must not depend on which crates are built.
    insta::with_settings!({ sort_maps => true }, { insta::assert_json_snapshot!("openapi", doc) });
}

#[tokio::test]
async fn errors_are_problem_json() {
    let app = spawn_app().await;
    let client = reqwest::Client::new();

    let r = app.get("/v1/nope", None).await;
    assert_eq!(r.status(), 404);
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    let body: serde_json::Value = r.json().await.unwrap();
    insta::with_settings!({ sort_maps => true }, { insta::assert_json_snapshot!("not_found_problem", body) });

    let r = app
        .get("/v1/certificates/does-not-exist", Some(&app.admin_auth()))
        .await;
    assert_eq!(r.status(), 404);

    let r = app
        .get("/v1/certificates?limit=0", Some(&app.admin_auth()))
        .await;
    assert_eq!(r.status(), 400);
    // Exports need a compliance token before anything else is looked at.
    let r = app.get("/v1/exports/other.csv", None).await;
    assert_eq!(r.status(), 401);
    assert_eq!(r.headers()["content-type"], "application/problem+json");

    let big = "a".repeat(api::MAX_BODY_BYTES + 1);
    let r = client
        .post(format!("{}/v1/telemetry", app.url))
        .header("content-type", "application/jose")
        .body(big)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    assert_eq!(
        r.json::<serde_json::Value>().await.unwrap()["code"],
        "payload_too_large"
    );

    let r = client
        .post(format!("{}/v1/telemetry", app.url))
        .header("content-type", "image/png")
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 415);
    let r = client
        .post(format!("{}/v1/telemetry", app.url))
        .header("content-type", "application/json")
        .body("{\"jwt\":1}")
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.json::<serde_json::Value>().await.unwrap()["code"],
        "invalid_request"
    );
}

#[tokio::test]
async fn health_jwks_and_guarded_export() {
    let app = spawn_app().await;
    let health: serde_json::Value = reqwest::get(format!("{}/healthz", app.url))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["status"], "ok");
    let jwks: wattest_shared::Jwks = reqwest::get(format!("{}/.well-known/jwks.json", app.url))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(jwks.keys.len(), 1);
    let wattest_shared::Jwk::Rsa(key) = &jwks.keys[0] else {
        panic!("the default oracle key is RSA: {:?}", jwks.keys[0]);
    };
    assert_eq!(key.kid.as_deref(), Some(key.thumbprint().as_str()));
    assert_eq!(key.alg.as_deref(), Some("PS256"));
    // Exports need a compliance token (tests/tests/exports.rs reads them with one).
    let r = reqwest::get(format!("{}/v1/exports/compliance.csv", app.url))
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["code"], "missing_token");
    let docs = reqwest::get(format!("{}/docs/", app.url)).await.unwrap();
    assert_eq!(docs.status(), 200, "Swagger UI is served offline");
}

/// Every operation parameter that is not a `{segment}` of its path is a query parameter in the
/// OpenAPI document (generated clients send them where the document says), and the certificate
/// endpoint documents its three representations under one 200.
#[tokio::test]
async fn openapi_puts_query_parameters_in_the_query() {
    let app = spawn_app().await;
    let doc: serde_json::Value = app.get("/openapi.json", None).await.json().await.unwrap();
    let mut query_params = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            for p in op["parameters"].as_array().into_iter().flatten() {
                let name = p["name"].as_str().unwrap();
                let expected = if path.contains(&format!("{{{name}}}")) {
                    "path"
                } else {
                    query_params += 1;
                    "query"
                };
                assert_eq!(p["in"], expected, "{method} {path}: parameter {name}");
            }
        }
    }
    assert!(
        query_params >= 15,
        "{query_params} query parameters documented"
    );
    let listed = &doc["paths"]["/v1/certificates"]["get"]["parameters"];
    assert!(
        listed
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["required"] != true),
        "job, node and limit are optional: {listed}"
    );
    let ok = &doc["paths"]["/v1/certificates/{id}"]["get"]["responses"]["200"]["content"];
    for media in ["application/json", "application/jose", "application/vc+jwt"] {
        assert!(ok[media].is_object(), "{media} missing from {ok}");
    }
}

/// The edges of the HTTP contract in `docs/protocol.md` §3.5: media types (415), `Accept` (406),
/// the bearer scheme's case, auth before query parsing, the timeout's code, and the health
/// answer's shape when the database is gone.
#[tokio::test]
async fn media_types_accept_auth_timeout_and_health_follow_the_protocol() {
    let (app, state) = spawn_app_with(api::Limits {
        request_timeout_secs: 1,
        ..api::Limits::default()
    })
    .await;
    let client = reqwest::Client::new();
    let code = |r: reqwest::Response| async move {
        let status = r.status().as_u16();
        let ct = r.headers()["content-type"].to_str().unwrap().to_owned();
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(ct, "application/problem+json", "{body}");
        (status, body["code"].as_str().unwrap().to_owned())
    };
    let problem = |status: u16, code: &str| (status, code.to_owned());

    // JSON bodies must be declared JSON: wrong or missing Content-Type is 415, before parsing.
    let json = r#"{"name":"n","zone":"BE","public_key":{}}"#;
    for (path, content_type) in [
        ("/v1/nodes", Some("text/plain")),
        ("/v1/nodes", None),
        (
            "/v1/nodes/challenges/x",
            Some("application/x-www-form-urlencoded"),
        ),
        ("/v1/certificates/x/revocation", Some("text/plain")),
        ("/v1/telemetry/batch", None),
    ] {
        let mut request = client
            .post(format!("{}{path}", app.url))
            .bearer_auth(&app.admin)
            .body(json);
        if let Some(ct) = content_type {
            request = request.header("content-type", ct);
        }
        assert_eq!(
            code(request.send().await.unwrap()).await,
            problem(415, "unsupported_media_type"),
            "{path} {content_type:?}"
        );
    }
    // With a charset parameter it is still JSON: the body is parsed (and found wanting).
    let r = client
        .post(format!("{}/v1/nodes", app.url))
        .bearer_auth(&app.admin)
        .header("content-type", "application/json; charset=utf-8")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(code(r).await, problem(400, "invalid_request"));

    // A certificate has three representations; an Accept admitting none is 406.
    let get = |accept: &'static str| {
        client
            .get(format!("{}/v1/certificates/nope", app.url))
            .bearer_auth(&app.admin)
            .header("accept", accept)
            .send()
    };
    assert_eq!(
        code(get("text/csv").await.unwrap()).await,
        problem(406, "not_acceptable")
    );
    for accept in [
        "application/json",
        "text/html, */*;q=0.1",
        "application/jose",
        "application/vc+jwt",
    ] {
        assert_eq!(
            code(get(accept).await.unwrap()).await,
            problem(404, "not_found"),
            "{accept}"
        );
    }

    // The scheme name is case-insensitive (RFC 9110 §11.1).
    let r = app
        .get("/v1/certificates", Some(&format!("bearer {}", app.admin)))
        .await;
    assert_eq!(r.status(), 200);
    // Auth comes before the query: no token and no zone is 401, not 400.
    let r = app.get("/v1/carbon/intensity", None).await;
    assert_eq!(code(r).await, problem(401, "missing_token"));

    // A bound past the year 9999 (RFC 3339 parsers take `+10000-…`) would compare wrongly as
    // text: refused.
    for path in [
        "/v1/balances?from=%2B10000-01-01T00:00:00Z",
        "/v1/exports/compliance.csv?to=%2B10000-01-01T00:00:00Z",
    ] {
        let r = app.get(path, Some(&app.admin_auth())).await;
        assert_eq!(code(r).await, problem(400, "invalid_request"), "{path}");
    }

    // A request that outlives --request-timeout-secs (here a body that never finishes) is 503
    // `timeout`.
    let addr = app.url.trim_start_matches("http://").to_owned();
    let answer = tokio::task::spawn_blocking(move || {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(std::time::Duration::from_secs(20)))
            .unwrap();
        stream
            .write_all(
                b"POST /v1/telemetry HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Type: application/jose\r\nContent-Length: 100\r\n\r\nabc",
            )
            .unwrap();
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).unwrap();
        String::from_utf8_lossy(&answer).into_owned()
    })
    .await
    .unwrap();
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains("\"code\":\"timeout\""), "{answer}");

    // With the database gone, /healthz answers 503 with its documented Health body.
    state.storage.db().close_by_ref().await.unwrap();
    let r = reqwest::get(format!("{}/healthz", app.url)).await.unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["content-type"], "application/json");
    let health: serde_json::Value = r.json().await.unwrap();
    assert_eq!(health["status"], "degraded");
    assert_eq!(health["database"], "unreachable");
}

/// Ember's two-letter regions (`EU`, `G7`) are zones, as protocol.md §2 offers, and an alpha-3
/// zone answers under its alpha-2 name.
#[tokio::test]
async fn carbon_intensity_accepts_two_letter_regions_and_canonicalises_alpha3() {
    let (app, state) = spawn_app_with(api::Limits::default()).await;
    let auditor =
        wattest_oracle::auth::create_token(&state.storage, wattest_oracle::auth::Role::Auditor)
            .await
            .unwrap();
    for (zone, name, figure) in [
        ("EU", "EU", "213.020000"),
        ("g7", "G7", "343.300000"),
        ("BEL", "BE", "117.580000"),
    ] {
        let r = app
            .get(
                &format!("/v1/carbon/intensity?zone={zone}&at=2025-06-01T10:20:00Z"),
                Some(&format!("Bearer {auditor}")),
            )
            .await;
        assert_eq!(r.status(), 200, "{zone}");
        let answer: serde_json::Value = r.json().await.unwrap();
        assert_eq!(answer["zone"], name, "{answer}");
        assert_eq!(answer["g_co2e_per_kwh"], figure, "{answer}");
    }
}

/// Errors of `value` against `schema` of `doc` (OpenAPI 3.1): the subset of JSON Schema the
/// document uses (`$ref`, `oneOf`, `allOf`, `type`, `enum`, `minimum`, `maximum`, `required`,
/// `properties`, `additionalProperties: false`, `items`), enough to catch a field the server
/// sends as null or leaves out against the schema, or a value outside a declared enum.
fn schema_errors(
    doc: &serde_json::Value,
    schema: &serde_json::Value,
    value: &serde_json::Value,
    at: &str,
) -> Vec<String> {
    use serde_json::Value;
    let mut errors = Vec::new();
    if let Some(Value::String(target)) = schema.get("$ref") {
        let name = target.strip_prefix("#/components/schemas/").unwrap();
        let resolved = &doc["components"]["schemas"][name];
        assert!(resolved.is_object(), "{at}: dangling {target}");
        return schema_errors(doc, resolved, value, at);
    }
    if let Some(Value::Array(items)) = schema.get("oneOf") {
        let matching = items
            .iter()
            .filter(|s| schema_errors(doc, s, value, at).is_empty())
            .count();
        if matching != 1 {
            errors.push(format!("{at}: {value} matches {matching} of oneOf"));
        }
    }
    for s in schema
        .get("allOf")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        errors.extend(schema_errors(doc, s, value, at));
    }
    if let Some(types) = schema.get("type") {
        let types: Vec<&str> = match types {
            Value::Array(t) => t.iter().filter_map(Value::as_str).collect(),
            t => vec![t.as_str().unwrap()],
        };
        let fits = types.iter().any(|t| match *t {
            "null" => value.is_null(),
            "boolean" => value.is_boolean(),
            "integer" => value.is_i64() || value.is_u64(),
            "number" => value.is_number(),
            "string" => value.is_string(),
            "array" => value.is_array(),
            "object" => value.is_object(),
            other => panic!("{at}: type {other}"),
        });
        if !fits {
            errors.push(format!("{at}: {value} is not {types:?}"));
            return errors;
        }
    }
    if let Some(Value::Array(allowed)) = schema.get("enum")
        && !allowed.contains(value)
    {
        errors.push(format!("{at}: {value} not in {allowed:?}"));
    }
    if let (Some(min), Some(n)) = (
        schema.get("minimum").and_then(Value::as_f64),
        value.as_f64(),
    ) && n < min
    {
        errors.push(format!("{at}: {n} < {min}"));
    }
    if let (Some(max), Some(n)) = (
        schema.get("maximum").and_then(Value::as_f64),
        value.as_f64(),
    ) && n > max
    {
        errors.push(format!("{at}: {n} > {max}"));
    }
    if let Value::Object(members) = value {
        for name in schema
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if !members.contains_key(name.as_str().unwrap()) {
                errors.push(format!("{at}: required {name} missing"));
            }
        }
        let properties = schema.get("properties").and_then(Value::as_object);
        for (name, member) in members {
            match properties.and_then(|p| p.get(name)) {
                Some(s) => errors.extend(schema_errors(doc, s, member, &format!("{at}.{name}"))),
                None if schema.get("additionalProperties") == Some(&Value::Bool(false)) => {
                    errors.push(format!("{at}: unknown member {name}"));
                }
                None => {
                    if let Some(s) = schema.get("additionalProperties").filter(|s| s.is_object()) {
                        errors.extend(schema_errors(doc, s, member, &format!("{at}.{name}")));
                    }
                }
            }
        }
    }
    if let (Value::Array(elements), Some(items)) = (value, schema.get("items")) {
        for (i, element) in elements.iter().enumerate() {
            errors.extend(schema_errors(doc, items, element, &format!("{at}[{i}]")));
        }
    }
    errors
}

/// The document describes the answers the server really sends (what schema-driven client suites
/// check responses against): absent members are not required, members always sent (null or
/// not) are, enums hold the values sent; and its parameters carry the bounds the handlers
/// enforce, every 429 its `Retry-After`, and the authenticated reads their roles.
#[tokio::test]
async fn openapi_schemas_match_the_answers_and_bounds() {
    let app = spawn_app().await;
    let doc: serde_json::Value = app.get("/openapi.json", None).await.json().await.unwrap();
    let admin = app.admin_auth();
    for (path, status, auth) in [
        ("/healthz", 200, None),
        ("/v1/stats", 200, None),
        ("/.well-known/jwks.json", 200, None),
        ("/v1/carbon/sources", 200, None),
        (
            "/v1/carbon/intensity?zone=BE&at=2025-06-01T10:20:00Z",
            200,
            Some(&admin),
        ),
        ("/v1/carbon/intensity?zone=", 400, Some(&admin)),
        ("/v1/carbon/intensity?zone=%20", 400, Some(&admin)),
        ("/v1/balances", 200, Some(&admin)),
        ("/v1/nodes", 200, Some(&admin)),
        ("/v1/certificates?limit=1000", 200, Some(&admin)),
        ("/v1/certificates?limit=0", 400, Some(&admin)),
        ("/v1/certificates?limit=1001", 400, Some(&admin)),
        ("/v1/certificates/nope/status", 404, Some(&admin)),
        ("/v1/log/proofs/consistency?first=0", 400, Some(&admin)),
        ("/v1/exports/compliance.csv?node=", 400, Some(&admin)),
        ("/v1/exports/compliance.csv?status=bogus", 400, Some(&admin)),
        ("/v1/exports/other.csv", 404, Some(&admin)),
    ] {
        let r = app.get(path, auth.map(String::as_str)).await;
        assert_eq!(r.status().as_u16(), status, "{path}");
        let route = path.split('?').next().unwrap();
        let template = if route.starts_with("/v1/certificates/") {
            "/v1/certificates/{id}/status"
        } else if route.starts_with("/v1/exports/") {
            "/v1/exports/{file}"
        } else {
            route
        };
        let media = r.headers()["content-type"].to_str().unwrap().to_owned();
        let response = &doc["paths"][template]["get"]["responses"][status.to_string()];
        let schema = &response["content"][media.as_str()]["schema"];
        assert!(schema.is_object(), "{path}: {status} {media} undocumented");
        let body: serde_json::Value = r.json().await.unwrap();
        let errors = schema_errors(&doc, schema, &body, path);
        assert!(errors.is_empty(), "{errors:#?}");
    }

    // Problems: the seq members are absent or a number / false, never null.
    let schemas = &doc["components"]["schemas"];
    let problem = serde_json::json!({"type": "https://wattest.dev/problems/seq_gap",
        "title": "Conflict", "status": 409, "detail": "d", "code": "seq_gap",
        "already_accepted": false, "expected_seq": 3});
    assert!(schema_errors(&doc, &schemas["Problem"], &problem, "problem").is_empty());
    let null_seq = serde_json::json!({"type": "t", "title": "t", "status": 400, "detail": "d",
        "code": "c", "expected_seq": null});
    assert!(!schema_errors(&doc, &schemas["Problem"], &null_seq, "problem").is_empty());
    for (schema, member) in [
        ("TelemetryBatchResult", "accepted"),
        ("TelemetryBatchResult", "held"),
        ("TelemetryBatchResult", "problem"),
        ("CertificateStatus", "revoked_at"),
        ("CertificateStatus", "reason"),
        ("Attempt", "reason"),
        ("Provenance", "fallback_reason"),
        ("RsaJwk", "kid"),
        ("EcJwk", "use"),
    ] {
        let required = schemas[schema]["required"].as_array().unwrap();
        assert!(!required.contains(&member.into()), "{schema}.{member}");
        let text = schemas[schema]["properties"][member].to_string();
        assert!(!text.contains("null"), "{schema}.{member}: {text}");
    }
    for (schema, member) in [
        ("TelemetryAccepted", "certificate"),
        ("CertificateSummary", "job_id"),
        ("NodeInfo", "last_window_end"),
        ("NodeInfo", "flag"),
        ("Balances", "from"),
        ("OwnerBalance", "owner"),
        ("IntensityAnswer", "provenance"),
        ("ProviderInfo", "url"),
        ("CertificateClaims", "wattest.job_id"),
        ("CertificateClaims", "wattest.status_reasons"),
    ] {
        let required = schemas[schema]["required"].as_array().unwrap();
        assert!(required.contains(&member.into()), "{schema}.{member}");
    }

    // Input enums hold exactly what the handlers accept.
    let names = |v: &serde_json::Value| -> Vec<String> {
        v["enum"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(
        names(&schemas["RevocationReason"]),
        api::certificates::REVOCATION_REASONS
    );
    let export = &doc["paths"]["/v1/exports/{file}"]["get"]["parameters"];
    let param = |name: &str| {
        export
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .unwrap()["schema"]
            .clone()
    };
    assert_eq!(
        names(&param("status")).join(", "),
        wattest_oracle::export::StatusFilter::NAMES
    );
    assert_eq!(names(&param("granularity")), ["certificate", "hour"]);
    let files: Vec<String> = wattest_oracle::export::Profile::ALL
        .iter()
        .map(|p| format!("{}.csv", p.name()))
        .collect();
    assert_eq!(names(&param("file")), files);
    for text in ["node", "owner", "job", "model", "zone"] {
        assert_eq!(param(text)["minLength"], 1, "{text}");
        assert_eq!(
            param(text)["maxLength"],
            api::exports::MAX_FILTER_CHARS,
            "{text}"
        );
    }

    // Every 429 names its Retry-After; the authenticated reads name their roles.
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let header = &op["responses"]["429"]["headers"]["Retry-After"];
            assert_eq!(header["schema"]["type"], "integer", "{method} {path}");
            if op["security"].is_array() {
                let text = format!("{}{}", op["summary"], op["description"]);
                assert!(
                    text.contains("role")
                        || text.contains("`node` token")
                        || text.contains("(admin)"),
                    "{method} {path}: no role in {text}"
                );
            }
        }
    }
}

/// A POST of `body` as JSON to `path` with the admin token; the status and the JSON answer.
async fn post_json(app: &TestApp, path: &str, body: &str) -> (u16, serde_json::Value) {
    let r = reqwest::Client::new()
        .post(format!("{}{path}", app.url))
        .bearer_auth(&app.admin)
        .header("content-type", "application/json")
        .body(body.to_owned())
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(serde_json::Value::Null))
}

/// A fresh RSA-2048 node enrolled in `BE`: its key and node id.
async fn enroll(app: &TestApp) -> (wattest_shared::SoftwareKey, String) {
    let key = wattest_shared::SoftwareKey::generate(2048).unwrap();
    let body = serde_json::json!({"name": "n", "zone": "BE", "public_key": key.public_jwk()});
    let (status, answer) = post_json(app, "/v1/nodes", &body.to_string()).await;
    assert_eq!(status, 201, "{answer}");
    (key, answer["node_id"].as_str().unwrap().to_owned())
}

/// A plausible 10 s window of `node_id` (seq 1, job `j`, final) an hour ago, as JSON.
fn window_json(node_id: &str) -> serde_json::Value {
    let start = chrono::Utc::now() - chrono::Duration::hours(1);
    let time =
        |t: chrono::DateTime<chrono::Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    serde_json::json!({"v": 1, "node_id": node_id, "job_id": "j", "seq": 1,
        "start": time(start), "end": time(start + chrono::Duration::seconds(10)),
        "attribution": "machine", "sources": [{"source": "cpu-estimate", "kind": "cpu",
        "method": "estimate_cpu_tdp", "energy_wh": 0.1, "mean_w": 36.0, "max_w": 40.0,
        "samples": 10, "uncertainty_pct": 50.0}], "solar_wh": 0.0, "final": true})
}

/// `payload` (any JSON, a window's or not) signed by `key` as a window's compact JWS.
fn sign_window(key: &wattest_shared::SoftwareKey, payload: &serde_json::Value) -> String {
    wattest_shared::jws::sign_compact(
        key,
        wattest_shared::window::WINDOW_TYP,
        &serde_json::to_vec(payload).unwrap(),
    )
    .unwrap()
}

/// Posts a compact JWS to `/v1/telemetry`: the status and the problem's code, if any.
async fn post_window(app: &TestApp, jws: String) -> (u16, serde_json::Value) {
    let r = reqwest::Client::new()
        .post(format!("{}/v1/telemetry", app.url))
        .header("content-type", "application/jose")
        .body(jws)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap())
}

/// protocol.md §2: a `public_key` that is not an RSA key of the rules is 422 `invalid_key`,
/// whatever its shape (another `kty`, `n` or `e` not strings, not an object); only a body that
/// is not JSON or has no `public_key` is 400 `invalid_request`.
#[tokio::test]
async fn enrollment_refuses_keys_of_other_shapes_as_invalid_key() {
    let app = spawn_app().await;
    let key = |jwk: serde_json::Value| {
        serde_json::json!({"name": "n", "zone": "BE", "public_key": jwk}).to_string()
    };
    for jwk in [
        serde_json::json!({"kty": "EC", "crv": "P-256",
            "x": "MKBCTNIcKUSDii11ySs3526iDZ8AiTo7Tu6KPAqv7D4",
            "y": "4Etl6SRW2YiLUrN5vfvVHuhp7x8PxltmWWlbbM4IFyM"}),
        serde_json::json!({"kty": "oct", "k": "GawgguFyGrWKav7AX4VKUg"}),
        serde_json::json!({"kty": "OKP", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}),
        serde_json::json!({"kty": "RSA", "n": 12345, "e": "AQAB"}),
        serde_json::json!({"kty": "RSA", "n": "AQAB", "e": 65537}),
        serde_json::json!({"kty": "RSA", "e": "AQAB"}),
        serde_json::json!({"kty": "RSA", "n": "AQAB", "e": "AQAB"}),
        serde_json::json!({"kty": "RSA", "n": "not base64url!", "e": "AQAB"}),
        serde_json::json!({"n": "AQAB", "e": "AQAB"}),
        serde_json::json!("an RSA key"),
        serde_json::json!(["RSA", "AQAB", "AQAB"]),
        serde_json::Value::Null,
    ] {
        let (status, answer) = post_json(&app, "/v1/nodes", &key(jwk.clone())).await;
        assert_eq!(
            (status, &answer["code"]),
            (422, &"invalid_key".into()),
            "{jwk}: {answer}"
        );
    }
    for body in [
        r#"{"name": "n", "zone": "BE"}"#.to_owned(),
        "not json".to_owned(),
        r#"{"name": "n", "zone": "BE", "public_key": {"kty": "RSA", "n": "AQAB", "e": "AQAB"}, "x": 1}"#.to_owned(),
    ] {
        let (status, answer) = post_json(&app, "/v1/nodes", &body).await;
        assert_eq!(
            (status, &answer["code"]),
            (400, &"invalid_request".into()),
            "{body}: {answer}"
        );
    }
    // The name and zone are judged before the key, as before.
    let body = serde_json::json!({"name": "n", "zone": "Atlantis", "public_key": {"kty": "EC"}});
    let (status, answer) = post_json(&app, "/v1/nodes", &body.to_string()).await;
    assert_eq!((status, &answer["code"]), (422, &"unknown_zone".into()));
    // Members other than kty, n, e are ignored (RFC 7517 §4): enrolled.
    let rsa = wattest_shared::SoftwareKey::generate(2048).unwrap();
    let mut jwk = serde_json::to_value(rsa.public_jwk()).unwrap();
    jwk["key_ops"] = serde_json::json!(["verify"]);
    jwk["ext"] = true.into();
    let (status, answer) = post_json(&app, "/v1/nodes", &key(jwk)).await;
    assert_eq!(status, 201, "{answer}");
}

/// protocol.md §2, §3.1, §3.6, §5: every body and the window payload are JSON objects. serde
/// alone reads an array member by member, so `["n","BE",{…}]` enrolled a node and a signed
/// window payload written as an array was credited; both are refused, nested structs too, and
/// the refused window leaves the chain as it was.
#[tokio::test]
async fn bodies_and_payloads_are_json_objects_never_arrays() {
    let app = spawn_app().await;
    let (key, node_id) = enroll(&app).await;
    let sign = |payload: &serde_json::Value| sign_window(&key, payload);
    let good = window_json(&node_id);
    let source = &good["sources"][0];
    let positional_source = serde_json::json!([
        source["source"],
        source["kind"],
        source["method"],
        source["energy_wh"],
        source["mean_w"],
        source["max_w"],
        source["samples"],
        source["uncertainty_pct"],
        false
    ]);
    let positional = serde_json::json!([
        1,
        node_id,
        "j",
        null,
        1,
        null,
        good["start"],
        good["end"],
        "machine",
        [source],
        0.0,
        true
    ]);
    let mut nested = good.clone();
    nested["sources"] = serde_json::json!([positional_source]);
    for payload in [positional, nested] {
        let (status, answer) = post_window(&app, sign(&payload)).await;
        assert_eq!(
            (status, &answer["code"]),
            (400, &"malformed_payload".into()),
            "{payload}: {answer}"
        );
        assert!(
            answer["detail"]
                .as_str()
                .unwrap()
                .contains("expected a JSON object"),
            "{answer}"
        );
    }
    let jws = sign(&good);
    let rsa = wattest_shared::SoftwareKey::generate(2048).unwrap();
    let jwk = serde_json::to_value(rsa.public_jwk()).unwrap();
    for (path, body) in [
        ("/v1/nodes", serde_json::json!(["n", "BE", jwk])),
        (
            "/v1/nodes",
            serde_json::json!({"name": "n", "zone": "BE", "public_key": jwk,
                "attestation": ["tpm", "AAAA", "AAAA", "AAAA", "AAAA", "AAAA"]}),
        ),
        ("/v1/telemetry", serde_json::json!([jws])),
        ("/v1/telemetry/batch", serde_json::json!([[jws]])),
    ] {
        let (status, answer) = post_json(&app, path, &body.to_string()).await;
        assert_eq!(
            (status, &answer["code"]),
            (400, &"invalid_request".into()),
            "{path} {body}: {answer}"
        );
    }
    // Nothing of the refused windows was kept: seq 1 is still free, and the object is credited.
    let (status, answer) = post_window(&app, jws).await;
    assert_eq!((status, answer["seq"].as_u64()), (200, Some(1)), "{answer}");
    let id = answer["certificate"]["id"].as_str().unwrap();
    let revocation = format!("/v1/certificates/{id}/revocation");
    let (status, answer) = post_json(&app, &revocation, r#"["other"]"#).await;
    assert_eq!(
        (status, &answer["code"]),
        (400, &"invalid_request".into()),
        "{answer}"
    );
    let (status, answer) = post_json(&app, &revocation, r#"{"reason": "other"}"#).await;
    assert_eq!(status, 200, "{answer}");
}

/// protocol.md §5.3: both log texts are `text/plain; charset=utf-8`; the checkpoint (a C2SP
/// signed note) ends with a newline, the verifier key is the key alone, without one.
#[tokio::test]
async fn log_texts_are_utf8_plain_text_and_the_key_has_no_newline() {
    let app = spawn_app().await;
    let r = app.get("/v1/log/key", None).await;
    assert_eq!(r.headers()["content-type"], "text/plain; charset=utf-8");
    let vkey = r.text().await.unwrap();
    assert!(
        !vkey.ends_with('\n') && !vkey.contains(char::is_whitespace),
        "{vkey:?}"
    );
    wattest_shared::checkpoint::LogVerifier::parse(&vkey).unwrap();
    let r = app.get("/v1/log/checkpoint", None).await;
    assert_eq!(r.headers()["content-type"], "text/plain; charset=utf-8");
    let note = r.text().await.unwrap();
    assert!(note.ends_with('\n') && !note.ends_with("\n\n"), "{note:?}");
    assert!(note.starts_with("test/wattest-log\n0\n"), "{note:?}");
}

/// protocol.md §6 and §7: one rule for `from`/`to` in the exports and `/v1/balances`: `from`
/// must be before `to`; `from` = `to` is 400 in both, as `from` after `to` is.
#[tokio::test]
async fn balances_and_exports_share_the_from_to_rule() {
    let app = spawn_app().await;
    let auth = app.admin_auth();
    let t = "2026-01-01T00:00:00Z";
    let later = "2026-01-01T00:00:01Z";
    for endpoint in ["/v1/balances", "/v1/exports/compliance.csv"] {
        let r = app
            .get(&format!("{endpoint}?from={t}&to={later}"), Some(&auth))
            .await;
        assert_eq!(r.status(), 200, "{endpoint} from < to");
        for (from, to) in [(t, t), (later, t)] {
            let r = app
                .get(&format!("{endpoint}?from={from}&to={to}"), Some(&auth))
                .await;
            assert_eq!(r.status(), 400, "{endpoint} from {from} to {to}");
            let body: serde_json::Value = r.json().await.unwrap();
            assert_eq!(body["code"], "invalid_request");
        }
    }
}

/// Step 1 judges the payload segment too (400 `malformed_jws` before the `kid` is looked up),
/// step 5 refuses window times that are not written with `Z`, and a certificate's `Accept`
/// negotiation honours q-values and order (protocol.md §3.4, §5).
#[tokio::test]
async fn window_steps_and_certificate_negotiation_over_http() {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let app = spawn_app().await;
    let (key, node_id) = enroll(&app).await;
    let sign = |payload: &serde_json::Value| sign_window(&key, payload);
    let good = sign(&window_json(&node_id));
    let parts: Vec<&str> = good.split('.').collect();
    let unknown_kid = b64.encode(br#"{"alg":"PS256","kid":"nobody","typ":"wattest-window+jwt"}"#);
    for (header, payload) in [
        (parts[0], "eyJ2Ijox+Q"),
        (parts[0], "eyJ2IjoxfQ=="),
        (parts[0], "eyJ2IjoxfR"),
        (unknown_kid.as_str(), "eyJ2Ijox/Q"),
    ] {
        let (status, answer) = post_window(&app, format!("{header}.{payload}.{}", parts[2])).await;
        assert_eq!(
            (status, &answer["code"]),
            (400, &"malformed_jws".into()),
            "{payload}: {answer}"
        );
    }
    let mut offset = window_json(&node_id);
    offset["end"] = offset["end"]
        .as_str()
        .unwrap()
        .replace('Z', "+00:00")
        .into();
    let (status, answer) = post_window(&app, sign(&offset)).await;
    assert_eq!(
        (status, &answer["code"]),
        (400, &"malformed_payload".into()),
        "{answer}"
    );

    let (status, answer) = post_window(&app, good).await;
    assert_eq!(status, 200, "{answer}");
    let id = answer["certificate"]["id"].as_str().unwrap().to_owned();
    let client = reqwest::Client::new();
    let with_accept = |accept: &'static str| {
        client
            .get(format!("{}/v1/certificates/{id}", app.url))
            .bearer_auth(&app.admin)
            .header("accept", accept)
            .send()
    };
    for (accept, media) in [
        ("application/vc+jwt, application/jose", "application/vc+jwt"),
        ("application/jose;q=0, */*", "application/json"),
        (
            "application/json;q=0.5, application/jose;q=0.8",
            "application/jose",
        ),
        ("*/*;q=0.1, application/vc+jwt", "application/vc+jwt"),
        ("*/*", "application/json"),
    ] {
        let r = with_accept(accept).await.unwrap();
        assert_eq!(r.status(), 200, "{accept}");
        assert_eq!(r.headers()["content-type"], media, "{accept}");
    }
    for accept in [
        "*/*;q=0",
        "application/json;q=0, application/jose;q=0, application/vc+jwt;q=0",
    ] {
        let r = with_accept(accept).await.unwrap();
        assert_eq!(r.status(), 406, "{accept}");
    }
}

/// A telemetry body that cannot be read for another reason than its size is 400
/// `invalid_request`; only an oversized one is 413 `payload_too_large`.
#[tokio::test]
async fn telemetry_body_read_failures_are_400_unless_oversized() {
    use tower::ServiceExt as _;
    let (_app, state) = spawn_app_with(api::Limits::default()).await;
    let send = |path: &'static str, chunks: Vec<Result<axum::body::Bytes, std::io::Error>>| {
        let router = api::router_with(state.clone(), api::Limits::default());
        async move {
            let request = axum::http::Request::post(path)
                .header("content-type", "application/json")
                .body(axum::body::Body::from_stream(futures::stream::iter(chunks)))
                .unwrap();
            let response = router.oneshot(request).await.unwrap();
            let status = response.status().as_u16();
            let body = axum::body::to_bytes(response.into_body(), usize::MAX)
                .await
                .unwrap();
            let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
            (status, body["code"].as_str().unwrap().to_owned())
        }
    };
    for path in ["/v1/telemetry", "/v1/telemetry/batch"] {
        let broken = vec![
            Ok(axum::body::Bytes::from_static(b"{\"jws\":\"eyJ")),
            Err(std::io::Error::other("the client went away")),
        ];
        assert_eq!(
            send(path, broken).await,
            (400, "invalid_request".to_owned()),
            "{path}"
        );
        // Oversized without a Content-Length: read up to the limit, then 413.
        let limit = if path == "/v1/telemetry" {
            api::MAX_BODY_BYTES
        } else {
            wattest_shared::api::MAX_BATCH_BODY_BYTES
        };
        let chunk = axum::body::Bytes::from(vec![b'a'; 64 * 1024]);
        let oversized = (0..limit / (64 * 1024) + 2)
            .map(|_| Ok(chunk.clone()))
            .collect();
        assert_eq!(
            send(path, oversized).await,
            (413, "payload_too_large".to_owned()),
            "{path}"
        );
    }
}

/// Posts the window `body` (signed with `key`) and returns the certificate id it issues.
async fn issue_certificate(
    app: &TestApp,
    key: &wattest_shared::SoftwareKey,
    body: &serde_json::Value,
) -> String {
    let jws = wattest_shared::jws::sign_compact(
        key,
        wattest_shared::window::WINDOW_TYP,
        &serde_json::to_vec(body).unwrap(),
    )
    .unwrap();
    let (status, answer) = post_window(app, jws).await;
    assert_eq!(status, 200, "{answer}");
    answer["certificate"]["id"].as_str().unwrap().to_owned()
}

/// `GET /v1/certificates/{id}` with `accept`: the status, content type and body.
async fn certificate_as(app: &TestApp, id: &str, accept: &str) -> (u16, String, String) {
    let r = reqwest::Client::new()
        .get(format!("{}/v1/certificates/{id}", app.url))
        .bearer_auth(&app.admin)
        .header("accept", accept)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let media = r
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (status, media, r.text().await.unwrap())
}

/// The JSON payload of a compact JWS (not verified: the tests that need it verify elsewhere).
fn jws_payload(jws: &str) -> serde_json::Value {
    use base64::Engine as _;
    let payload = jws.split('.').nth(1).unwrap();
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap()
}

/// protocol.md §5: the VC's `credentialSchema` (type `JsonSchema`) names a schema of the whole
/// credential, served at that URL with `$id` equal to it, whose members cover every member of the
/// VC (it forbids others) and whose `credentialSubject` refers to the subject schema; the VC's
/// `credentialStatus` names the certificate's status resource.
#[tokio::test]
async fn the_vc_declares_a_schema_of_the_whole_credential_and_its_status() {
    let app = spawn_app().await;
    let (key, node_id) = enroll(&app).await;
    let id = issue_certificate(&app, &key, &window_json(&node_id)).await;
    let (status, media, vc) = certificate_as(&app, &id, "application/vc+jwt").await;
    assert_eq!(
        (status, media.as_str()),
        (200, "application/vc+jwt"),
        "{vc}"
    );
    let vc = jws_payload(&vc);

    assert_eq!(
        vc["credentialStatus"],
        serde_json::json!({"id": format!("http://test/v1/certificates/{id}/status"),
            "type": "WattestCertificateStatus"})
    );
    let status_path = vc["credentialStatus"]["id"]
        .as_str()
        .unwrap()
        .strip_prefix("http://test")
        .unwrap();
    let r = app.get(status_path, Some(&app.admin_auth())).await;
    assert_eq!(r.status(), 200);
    let state: serde_json::Value = r.json().await.unwrap();
    assert_eq!(state["state"], "valid");

    assert_eq!(vc["credentialSchema"]["type"], "JsonSchema");
    let schema_url = vc["credentialSchema"]["id"].as_str().unwrap();
    assert_eq!(
        schema_url,
        "http://test/v1/schemas/energy-certificate-credential.json"
    );
    let r = app
        .get(schema_url.strip_prefix("http://test").unwrap(), None)
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/schema+json");
    let schema: serde_json::Value = r.json().await.unwrap();
    assert_eq!(schema["$id"], schema_url);
    assert_eq!(schema["additionalProperties"], false);
    let properties = schema["properties"].as_object().unwrap();
    for member in vc.as_object().unwrap().keys() {
        assert!(
            properties.contains_key(member),
            "the declared schema refuses the VC's {member}"
        );
    }
    let required: Vec<&str> = schema["required"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    for member in ["@context", "credentialSubject", "credentialStatus"] {
        assert!(required.contains(&member), "{member}");
    }
    // The subject schema, at the relative reference, also names itself by its URL.
    assert_eq!(
        properties["credentialSubject"]["$ref"],
        "energy-certificate-subject.json"
    );
    let r = app
        .get("/v1/schemas/energy-certificate-subject.json", None)
        .await;
    assert_eq!(r.status(), 200);
    let subject: serde_json::Value = r.json().await.unwrap();
    assert_eq!(
        subject["$id"],
        "http://test/v1/schemas/energy-certificate-subject.json"
    );
    let subject_properties = subject["properties"].as_object().unwrap();
    for member in vc["credentialSubject"].as_object().unwrap().keys() {
        assert!(subject_properties.contains_key(member), "{member}");
    }
    let r = app.get("/v1/schemas/nothing.json", None).await;
    assert_eq!(r.status(), 404);
}

/// protocol.md §5: a revoked certificate is not issued as a new VC (410 `certificate_revoked`),
/// while its bundle (with the revocation status) and its JWS stay available.
#[tokio::test]
async fn a_revoked_certificate_is_not_issued_as_a_vc() {
    let app = spawn_app().await;
    let (key, node_id) = enroll(&app).await;
    let id = issue_certificate(&app, &key, &window_json(&node_id)).await;
    let (status, _, _) = certificate_as(&app, &id, "application/vc+jwt").await;
    assert_eq!(status, 200);
    let (status, answer) = post_json(
        &app,
        &format!("/v1/certificates/{id}/revocation"),
        r#"{"reason": "measurement_error"}"#,
    )
    .await;
    assert!((200..300).contains(&status), "{status}: {answer}");

    let (status, media, body) = certificate_as(&app, &id, "application/vc+jwt").await;
    assert_eq!(status, 410, "{body}");
    assert_eq!(media, "application/problem+json");
    let problem: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(problem["code"], "certificate_revoked", "{problem}");
    // The bundle carries the status; the bare JWS carries none, it only stays available.
    assert_eq!(
        problem["detail"],
        format!(
            "certificate {id} was revoked (measurement_error): it is not issued as a Verifiable \
             Credential; its bundle (application/json) carries the revocation status, and its \
             JWS (application/jose) stays available"
        ),
        "{problem}"
    );

    let (status, media, jws) = certificate_as(&app, &id, "application/jose").await;
    assert_eq!((status, media.as_str()), (200, "application/jose"));
    assert_eq!(jws_payload(&jws)["jti"], id.as_str());
    let (status, _, bundle) = certificate_as(&app, &id, "application/json").await;
    assert_eq!(status, 200);
    let bundle: serde_json::Value = serde_json::from_str(&bundle).unwrap();
    assert_eq!(bundle["status"]["state"], "revoked");
    assert_eq!(bundle["status"]["reason"], "measurement_error");
}

/// `GET /v1/certificates/{id}` answers by `Accept`: every representation, the 406 and the 410
/// say `Vary: Accept` (RFC 9110 §12.5.5), so that a cache keeps them apart.
#[tokio::test]
async fn certificate_answers_vary_by_accept() {
    let app = spawn_app().await;
    let (key, node_id) = enroll(&app).await;
    let id = issue_certificate(&app, &key, &window_json(&node_id)).await;
    let vary_of = |accept: &'static str| {
        let url = format!("{}/v1/certificates/{id}", app.url);
        let token = app.admin.clone();
        async move {
            let r = reqwest::Client::new()
                .get(url)
                .bearer_auth(token)
                .header("accept", accept)
                .send()
                .await
                .unwrap();
            let vary: Vec<String> = r
                .headers()
                .get_all("vary")
                .iter()
                .flat_map(|v| v.to_str().unwrap().split(','))
                .map(|v| v.trim().to_ascii_lowercase())
                .collect();
            (r.status().as_u16(), vary)
        }
    };
    for (accept, status) in [
        ("application/json", 200),
        ("application/jose", 200),
        ("application/vc+jwt", 200),
        ("text/html", 406),
    ] {
        let (got, vary) = vary_of(accept).await;
        assert_eq!(got, status, "{accept}");
        assert!(vary.contains(&"accept".to_owned()), "{accept}: {vary:?}");
    }
    let (status, answer) = post_json(
        &app,
        &format!("/v1/certificates/{id}/revocation"),
        r#"{"reason": "other"}"#,
    )
    .await;
    assert!((200..300).contains(&status), "{status}: {answer}");
    let (got, vary) = vary_of("application/vc+jwt").await;
    assert_eq!(got, 410);
    assert!(vary.contains(&"accept".to_owned()), "{vary:?}");
}

/// Certificate summaries (the receipt's and the list's) give the decimals the signed claims
/// carry (kg = the claims' six-decimal g ÷ 1000, with no float noise), and the list gives each
/// certificate's revocation `state` as its status resource does; a receipt's is `valid`.
#[tokio::test]
async fn summaries_give_the_claims_figures_and_the_revocation_state() {
    let app = spawn_app().await;
    let mut ids = Vec::new();
    let mut finals = Vec::new();
    // 1 Wh in BE (117.58 g/kWh) is 0.117580 g: as floats, 0.11758 / 1000 is
    // 0.00011758000000000001, not the nearest float to 0.00011758 (1.3 Wh likewise).
    for energy_wh in [1.0, 0.123457, 0.1, 1.3, 2.9] {
        let (key, node_id) = enroll(&app).await;
        let mut window = window_json(&node_id);
        let watts = energy_wh * 360.0;
        window["sources"][0]["energy_wh"] = energy_wh.into();
        window["sources"][0]["mean_w"] = watts.into();
        window["sources"][0]["max_w"] = watts.into();
        let signed = sign_window(&key, &window);
        let (status, receipt) = post_window(&app, signed.clone()).await;
        assert_eq!(status, 200, "{receipt}");
        assert_eq!(receipt["certificate"]["state"], "valid", "{receipt}");
        finals.push(signed);
        let id = receipt["certificate"]["id"].as_str().unwrap().to_owned();
        let (_, _, jws) = certificate_as(&app, &id, "application/jose").await;
        let claims = jws_payload(&jws);
        // The claim's decimal text, scaled: the nearest float to that decimal.
        let decimal = |path: &[&str], exponent: &str| {
            let text = path
                .iter()
                .fold(&claims, |v, k| &v[*k])
                .as_str()
                .unwrap_or_else(|| panic!("{path:?} in {claims}"));
            format!("{text}{exponent}").parse::<f64>().unwrap()
        };
        let summary = &receipt["certificate"];
        let expected = [
            (
                "emissions_kg_co2e",
                decimal(&["wattest.emissions", "location_based_g_co2e"], "e-3"),
            ),
            (
                "avoided_kg_co2e",
                decimal(&["wattest.avoided_emissions", "g_co2e"], "e-3"),
            ),
            ("energy_wh", decimal(&["wattest.energy", "consumed_wh"], "")),
            ("grid_wh", decimal(&["wattest.energy", "grid_wh"], "")),
            ("solar_wh", decimal(&["wattest.energy", "solar_wh"], "")),
            (
                "intensity_g_co2e_per_kwh",
                decimal(&["wattest.intensity", "g_co2e_per_kwh"], ""),
            ),
        ];
        for (member, value) in expected {
            assert_eq!(summary[member].as_f64(), Some(value), "{member}: {summary}");
        }
        ids.push((id, expected));
    }
    let revoked = &ids[1].0;
    let (status, answer) = post_json(
        &app,
        &format!("/v1/certificates/{revoked}/revocation"),
        r#"{"reason": "superseded"}"#,
    )
    .await;
    assert!((200..300).contains(&status), "{status}: {answer}");
    // The final window sent again gets its original receipt, with the certificate's state as
    // it stands now.
    let (status, receipt) = post_window(&app, finals[1].clone()).await;
    assert_eq!(status, 200, "{receipt}");
    assert_eq!(receipt["certificate"]["id"], revoked.as_str(), "{receipt}");
    assert_eq!(receipt["certificate"]["state"], "revoked", "{receipt}");
    let list: serde_json::Value = app
        .get("/v1/certificates", Some(&app.admin_auth()))
        .await
        .json()
        .await
        .unwrap();
    let listed = list["certificates"].as_array().unwrap();
    assert_eq!(listed.len(), ids.len(), "{list}");
    for (id, expected) in &ids {
        let summary = listed.iter().find(|c| c["id"] == id.as_str()).unwrap();
        let state = if id == revoked { "revoked" } else { "valid" };
        assert_eq!(summary["state"], state, "{summary}");
        let status: serde_json::Value = app
            .get(
                &format!("/v1/certificates/{id}/status"),
                Some(&app.admin_auth()),
            )
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(status["state"], state, "{status}");
        for (member, value) in expected {
            assert_eq!(
                summary[*member].as_f64(),
                Some(*value),
                "{member}: {summary}"
            );
        }
    }
}

/// protocol.md §3.6: an element of `windows` that is not a string is 400 `invalid_request`.
#[tokio::test]
async fn a_batch_element_that_is_not_a_string_is_invalid_request() {
    let app = spawn_app().await;
    for body in [r#"{"windows":[5]}"#, r#"{"windows":[{"jws":"a.b.c"}]}"#] {
        let (status, problem) = post_json(&app, "/v1/telemetry/batch", body).await;
        assert_eq!(status, 400, "{body}: {problem}");
        assert_eq!(problem["code"], "invalid_request", "{body}: {problem}");
    }
}

/// docs/compliance.md, `sci` profile: with solar, E × I equals the operational emissions (to
/// within I's rounding to 10⁻⁶ gCO2e/kWh), under the `sci/2` column version.
#[tokio::test]
async fn sci_e_times_i_is_the_operational_emissions_with_solar() {
    let app = spawn_app().await;
    let (key, node_id) = enroll(&app).await;
    let mut window = window_json(&node_id);
    window["sources"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({
        "source": "pv0", "kind": "solar", "method": "solar_power_integration",
        "energy_wh": 0.03, "mean_w": 10.8, "max_w": 12.0, "samples": 10,
        "uncertainty_pct": 5.0}));
    window["solar_wh"] = 0.03.into();
    let id = issue_certificate(&app, &key, &window).await;

    let r = app
        .get("/v1/exports/sci.csv", Some(&app.admin_auth()))
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["wattest-export-version"], "sci/2");
    let text = r.text().await.unwrap();
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    // Cells may be quoted (text cells are); these hold no commas.
    let row: Vec<&str> = lines
        .next()
        .unwrap()
        .split(',')
        .map(|c| c.trim_matches('"'))
        .collect();
    let cell = |name: &str| -> f64 {
        let at = header.iter().position(|h| *h == name).unwrap();
        row[at].parse().unwrap()
    };
    assert_eq!(row[0], id);
    let (e, e_grid, i, operational) = (
        cell("e_kwh"),
        cell("e_grid_kwh"),
        cell("i_g_co2e_per_kwh"),
        cell("operational_kg_co2e"),
    );
    assert!(e_grid < e, "solar covers part of E: {e_grid} < {e}");
    assert!(operational > 0.0);
    // E kWh × I g/kWh ÷ 1000 = kg; I is rounded to 10⁻⁶ g/kWh.
    let tolerance = e * 0.5e-6 / 1000.0 + 1e-12;
    assert!(
        (e * i / 1000.0 - operational).abs() <= tolerance,
        "E {e} × I {i} ≠ operational {operational}"
    );
}

/// The cells of one CSV line as written, quotes kept (a `,` inside quotes does not split).
fn raw_cells(line: &str) -> Vec<String> {
    let mut cells = vec![String::new()];
    let mut quoted = false;
    for ch in line.chars() {
        match ch {
            '"' => {
                quoted = !quoted;
                cells.last_mut().unwrap().push(ch);
            }
            ',' if !quoted => cells.push(String::new()),
            _ => cells.last_mut().unwrap().push(ch),
        }
    }
    cells
}

/// docs/compliance.md: every field that is not a number is quoted. `calculation_version` is
/// text (`"2"`, not `2`) in compliance.csv and sci.csv, as is an id that reads as a number (job
/// `42`); numbers stay bare; the header row is the plain names.
#[tokio::test]
async fn csv_text_cells_are_quoted_even_when_they_read_as_numbers() {
    let app = spawn_app().await;
    let (key, node_id) = enroll(&app).await;
    let mut window = window_json(&node_id);
    window["job_id"] = "42".into();
    let id = issue_certificate(&app, &key, &window).await;
    let version = format!("\"{}\"", wattest_shared::certificate::CALCULATION_VERSION);
    for profile in ["compliance", "sci"] {
        let r = app
            .get(
                &format!("/v1/exports/{profile}.csv"),
                Some(&app.admin_auth()),
            )
            .await;
        assert_eq!(r.status(), 200, "{profile}");
        let text = r.text().await.unwrap();
        let mut lines = text.split("\r\n");
        let header = raw_cells(lines.next().unwrap());
        let row = raw_cells(lines.next().unwrap());
        assert_eq!(header.len(), row.len(), "{profile}: {text}");
        let cell = |name: &str| {
            let at = header.iter().position(|h| h == name).unwrap();
            row[at].as_str()
        };
        assert!(
            header.iter().all(|h| !h.contains('"')),
            "{profile}: {header:?}"
        );
        assert!(
            header.iter().any(|h| h == "calculation_version"),
            "{profile}: {header:?}"
        );
        assert_eq!(cell("calculation_version"), version, "{profile}: {row:?}");
        assert_eq!(cell("job_id"), "\"42\"", "{profile}: {row:?}");
        assert_eq!(cell("certificate_id"), format!("\"{id}\""), "{profile}");
        let energy = if profile == "sci" {
            "e_kwh"
        } else {
            "energy_consumed_kwh"
        };
        assert!(cell(energy).parse::<f64>().is_ok(), "{profile}: {row:?}");
    }
}
