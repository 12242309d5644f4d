//! API tests: the real router on a random loopback port with a fresh SQLite data dir per test.

#![allow(clippy::unwrap_used)]

use wattest_oracle::credits::CreditPolicy;
use wattest_oracle::{AppState, Settings, api};
use wattest_shared::Eur;

struct TestApp {
    url: String,
    /// An admin bearer token (certificate reads need a role).
    admin: String,
    _dir: tempfile::TempDir,
}

async fn spawn_app() -> TestApp {
    wattest_shared::tls::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}?mode=rwc", dir.path().join("t.db").display());
    let settings = Settings {
        max_clock_skew_secs: wattest_oracle::verification::MAX_FUTURE_SKEW_SECONDS,
        issuer: "http://test".into(),
        certificate_validity: chrono::Duration::days(1),
        credits: CreditPolicy {
            price_per_tonne: Eur::parse("25").unwrap(),
            node_owner_share_pct: 70.0,
            source_rates: std::collections::BTreeMap::new(),
        },
        ek_roots: Vec::new(),
        log_origin: "test/wattest-log".into(),
    };
    let state = AppState::open(dir.path(), &db, settings).await.unwrap();
    let admin =
        wattest_oracle::auth::create_token(&state.storage, wattest_oracle::auth::Role::Admin)
            .await
            .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, api::router(state)).await });
    TestApp {
        url,
        admin,
        _dir: dir,
    }
}

/// The OpenAPI document is the contract for integrators: any change must be deliberate.
#[tokio::test]
async fn openapi_document_is_stable() {
    let app = spawn_app().await;
    let doc: serde_json::Value = reqwest::get(format!("{}/openapi.json", app.url))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(doc["paths"]["/v1/telemetry"]["post"].is_object());
    // Sorted maps: serde_json keeps insertion order when another crate of the build enables its
    // `preserve_order` feature, and the snapshot must not depend on which crates are built.
    insta::with_settings!({ sort_maps => true }, { insta::assert_json_snapshot!("openapi", doc) });
}

#[tokio::test]
async fn errors_are_problem_json() {
    let app = spawn_app().await;
    let client = reqwest::Client::new();

    let r = client
        .get(format!("{}/v1/nope", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    let body: serde_json::Value = r.json().await.unwrap();
    insta::with_settings!({ sort_maps => true }, { insta::assert_json_snapshot!("not_found_problem", body) });

    let r = client
        .get(format!("{}/v1/certificates/does-not-exist", app.url))
        .bearer_auth(&app.admin)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);

    let r = client
        .get(format!("{}/v1/certificates?limit=0", app.url))
        .bearer_auth(&app.admin)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    // Exports need a compliance token before anything else is looked at.
    let r = client
        .get(format!("{}/v1/exports/other.csv", app.url))
        .send()
        .await
        .unwrap();
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
