//! Interoperability: windows and certificates are standard JWS PS256, verifiable with an
//! independent JOSE library (josekit) from the published JWKs, as an auditor's own tooling would.

#![allow(clippy::unwrap_used)]

use chrono::{Duration, Utc};
use josekit::jwk::Jwk;
use josekit::jws::PS256;
use wattest_shared::SoftwareKey;
use wattest_shared::jws::sign_compact;
use wattest_shared::window::WINDOW_TYP;
use wattest_tests::{Oracle, gpu_window};

#[test]
fn windows_and_certificates_verify_with_josekit() {
    let oracle = Oracle::start();
    let key = SoftwareKey::generate(2048).unwrap();
    let (status, enrolled) = oracle.post_json(
        "/v1/nodes",
        &oracle.token("node"),
        &serde_json::json!({ "name": "interop", "zone": "BE", "public_key": key.public_jwk() }),
    );
    assert_eq!(status, 201, "{enrolled}");
    let node_id = enrolled["node_id"].as_str().unwrap();

    let window = gpu_window(
        node_id,
        "interop-job",
        1,
        None,
        Utc::now() - Duration::seconds(30),
        400.0,
        true,
    );
    let jws = sign_compact(&key, WINDOW_TYP, &serde_json::to_vec(&window).unwrap()).unwrap();

    // The window verifies with josekit under the node's public JWK.
    let node_jwk = Jwk::from_bytes(serde_json::to_vec(key.public_jwk()).unwrap()).unwrap();
    let verifier = PS256.verifier_from_jwk(&node_jwk).unwrap();
    let (payload, header) = josekit::jws::deserialize_compact(&jws, &verifier).unwrap();
    assert_eq!(
        header.claim("typ").and_then(|v| v.as_str()),
        Some(WINDOW_TYP)
    );
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&payload).unwrap()["seq"],
        1
    );

    let (status, ack) = wattest_tests::post_window(&oracle.url, &jws);
    assert_eq!(status, 200, "{ack}");
    let id = ack["certificate"]["id"].as_str().unwrap();

    // The certificate verifies with josekit under the oracle's published key.
    let certificate = oracle.get_json(&format!("/v1/certificates/{id}"));
    let jwks = oracle.get_json("/.well-known/jwks.json");
    let oracle_jwk = Jwk::from_bytes(serde_json::to_vec(&jwks["keys"][0]).unwrap()).unwrap();
    let verifier = PS256.verifier_from_jwk(&oracle_jwk).unwrap();
    let (payload, header) =
        josekit::jws::deserialize_compact(certificate["jws"].as_str().unwrap(), &verifier).unwrap();
    assert_eq!(
        header.claim("typ").and_then(|v| v.as_str()),
        Some("wattest-cert+jwt")
    );
    assert_eq!(header.key_id(), jwks["keys"][0]["kid"].as_str());
    let claims: serde_json::Value = serde_json::from_slice(&payload).unwrap();
    assert_eq!(claims, certificate["claims"]);

    // And a certificate with one flipped payload byte does not.
    let jws = certificate["jws"].as_str().unwrap();
    let mut parts: Vec<String> = jws.split('.').map(str::to_owned).collect();
    let mut payload_b64 = parts[1].clone().into_bytes();
    payload_b64[10] = if payload_b64[10] == b'A' { b'B' } else { b'A' };
    parts[1] = String::from_utf8(payload_b64).unwrap();
    assert!(josekit::jws::deserialize_compact(parts.join("."), &verifier).is_err());
}
