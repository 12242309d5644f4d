//! TPM enrollment over HTTP without a TPM: the oracle in-process on a loopback port with a fresh
//! SQLite database, fed structurally wrong evidence. Real-TPM evidence (valid and tampered) is
//! exercised in `tests/tests/tpm_e2e.rs` against swtpm.

#![allow(clippy::unwrap_used)]

mod common;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use serde_json::{Value, json};
use wattest_oracle::api;
use wattest_oracle::auth::{self, Role};

struct App {
    url: String,
    token: String,
    client: reqwest::Client,
    _data: tempfile::TempDir,
}

impl App {
    async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        let response = self
            .client
            .post(format!("{}{path}", self.url))
            .bearer_auth(&self.token)
            .json(body)
            .send()
            .await
            .expect("POST");
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap_or_default().to_owned())
            .unwrap_or_default();
        let body: Value = response.json().await.expect("JSON body");
        if status >= 400 {
            assert_eq!(content_type, "application/problem+json");
        }
        (status, body)
    }
}

/// The oracle on a random loopback port; `ek_roots` as `--ek-ca-dir` would load them.
async fn spawn_app(ek_roots: Vec<openssl::x509::X509>) -> App {
    let (state, data) = common::open_state(ek_roots).await;
    let token = auth::create_token(&state.storage, Role::Node)
        .await
        .expect("token");
    let (listener, addr) = common::listen().await;
    tokio::spawn(async move { axum::serve(listener, api::router(state)).await });
    App {
        url: format!("http://{addr}"),
        token,
        client: reqwest::Client::new(),
        _data: data,
    }
}

fn jwk() -> Value {
    let key = openssl::rsa::Rsa::generate(2048).expect("rsa");
    json!({"kty": "RSA", "n": B64.encode(key.n().to_vec()), "e": B64.encode(key.e().to_vec())})
}

/// Evidence whose every TPM structure is garbage, but valid base64url.
fn garbage_attestation() -> Value {
    let junk = B64.encode([0u8, 9, 0, 1]); // a TPM2B of 9 octets holding 2
    json!({
        "type": "tpm",
        "ek_public": junk,
        "ek_certificate": junk,
        "ak_public": junk,
        "signing_public": junk,
        "certify_info": junk,
        "certify_signature": junk,
    })
}

fn self_signed_root() -> openssl::x509::X509 {
    wattest_tests::test_ca("root").0
}

#[tokio::test]
async fn structurally_wrong_tpm_evidence_is_refused() {
    let app = spawn_app(vec![self_signed_root()]).await;
    let enroll = |attestation: Value| json!({"name": "n", "zone": "BE", "public_key": jwk(), "attestation": attestation});

    // Garbage TPM structures: the AK is parsed first.
    let (status, body) = app.post("/v1/nodes", &enroll(garbage_attestation())).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (422, Some("malformed_tpm_structure")),
        "{body}"
    );

    // Not base64url, an unknown type, an unknown member.
    let mut bad = garbage_attestation();
    bad["ak_public"] = json!("***");
    let (status, body) = app.post("/v1/nodes", &enroll(bad)).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("invalid_request")),
        "{body}"
    );
    let mut bad = garbage_attestation();
    bad["type"] = json!("sgx");
    assert_eq!(app.post("/v1/nodes", &enroll(bad)).await.0, 400);
    let mut bad = garbage_attestation();
    bad["quote"] = json!("");
    assert_eq!(app.post("/v1/nodes", &enroll(bad)).await.0, 400);

    // Answers to challenges that do not exist, and malformed answers.
    let (status, body) = app
        .post(
            "/v1/nodes/challenges/no-such-challenge",
            &json!({"secret": B64.encode([1u8; 32])}),
        )
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (404, Some("challenge_not_found")),
        "{body}"
    );
    let (status, _) = app
        .post("/v1/nodes/challenges/x", &json!({"secret": "***"}))
        .await;
    assert_eq!(status, 400);

    // Software enrollment is unchanged: 201, level software.
    let (status, body) = app
        .post(
            "/v1/nodes",
            &json!({"name": "soft", "zone": "BE", "public_key": jwk()}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["attestation_level"], "software");
}

#[tokio::test]
async fn challenge_endpoint_needs_a_node_token_and_is_documented() {
    let app = spawn_app(Vec::new()).await;
    let response = app
        .client
        .post(format!("{}/v1/nodes/challenges/x", app.url))
        .json(&json!({"secret": ""}))
        .send()
        .await
        .expect("POST");
    assert_eq!(response.status().as_u16(), 401);
    let doc: Value = app
        .client
        .get(format!("{}/openapi.json", app.url))
        .send()
        .await
        .expect("GET")
        .json()
        .await
        .expect("json");
    assert!(doc["paths"]["/v1/nodes/challenges/{challenge_id}"]["post"].is_object());
    assert!(doc["paths"]["/v1/nodes"]["post"]["responses"]["202"].is_object());
}
