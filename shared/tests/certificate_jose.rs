//! Certificate verification refuses every JOSE form RFC 8725 warns about, each signed correctly
//! with the oracle key where a signature is possible, so the refusal is the policy's, not a
//! broken signature's.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use chrono::{DateTime, Duration, Utc};
use openssl::hash::MessageDigest;
use openssl::pkey::PKey;
use openssl::sign::Signer;
use wattest_shared::certificate::CertificateError;
use wattest_shared::jws::{JwsSigner, sign_compact};
use wattest_shared::{CERTIFICATE_TYP, Decimal6, Eur, Jwks, SoftwareKey, verify_certificate};

mod common;
use common::claims;

struct Fixture {
    key: SoftwareKey,
    jwks: Jwks,
    now: DateTime<Utc>,
}

fn fixture() -> Fixture {
    let key = SoftwareKey::generate(2048).unwrap();
    let jwks = Jwks {
        keys: vec![wattest_shared::Jwk::Rsa(key.public_jwk().clone()).for_jwks()],
    };
    Fixture {
        key,
        jwks,
        now: Utc::now(),
    }
}

/// A JWS with an arbitrary header and payload, PS256-signed by the oracle key.
fn signed_with_header(f: &Fixture, header: &serde_json::Value, payload: &[u8]) -> String {
    let input = format!(
        "{}.{}",
        B64.encode(serde_json::to_vec(header).unwrap()),
        B64.encode(payload)
    );
    let sig = f.key.sign_jws(input.as_bytes()).unwrap();
    format!("{input}.{}", B64.encode(sig))
}

fn header(f: &Fixture) -> serde_json::Value {
    serde_json::json!({"alg": "PS256", "typ": CERTIFICATE_TYP, "kid": f.key.kid()})
}

fn refused(f: &Fixture, jws: &str) -> String {
    match verify_certificate(jws, &f.jwks, f.now) {
        Ok(_) => panic!("accepted a forbidden certificate form"),
        Err(err) => err.to_string(),
    }
}

#[test]
fn a_well_formed_certificate_verifies() {
    let f = fixture();
    let jws = sign_compact(
        &f.key,
        CERTIFICATE_TYP,
        &serde_json::to_vec(&claims(f.now)).unwrap(),
    )
    .unwrap();
    let checked = verify_certificate(&jws, &f.jwks, f.now).expect("valid");
    assert_eq!(checked.claims.jti, "cert-1");
    assert_eq!(checked.kid, f.key.kid());
    // The same bytes through our own header path verify: the negatives below differ only in
    // what they test.
    let same = signed_with_header(
        &f,
        &header(&f),
        &serde_json::to_vec(&claims(f.now)).unwrap(),
    );
    assert!(verify_certificate(&same, &f.jwks, f.now).is_ok());
}

#[test]
fn alg_none_and_unsigned_tokens_are_refused() {
    let f = fixture();
    let payload = B64.encode(serde_json::to_vec(&claims(f.now)).unwrap());
    for alg in ["none", "None", "NONE"] {
        let h = B64.encode(
            serde_json::to_vec(
                &serde_json::json!({"alg": alg, "typ": CERTIFICATE_TYP, "kid": f.key.kid()}),
            )
            .unwrap(),
        );
        for jws in [format!("{h}.{payload}."), format!("{h}.{payload}")] {
            let err = refused(&f, &jws);
            assert!(
                err.contains("alg") || err.contains("malformed"),
                "{alg}: {err}"
            );
        }
    }
}

#[test]
fn hmac_with_the_public_key_as_secret_is_refused() {
    // The classic algorithm-confusion forgery: HS256 keyed with the published RSA modulus.
    let f = fixture();
    let h = serde_json::json!({"alg": "HS256", "typ": CERTIFICATE_TYP, "kid": f.key.kid()});
    let input = format!(
        "{}.{}",
        B64.encode(serde_json::to_vec(&h).unwrap()),
        B64.encode(serde_json::to_vec(&claims(f.now)).unwrap())
    );
    let secret = serde_json::to_vec(f.key.public_jwk()).unwrap();
    let hmac = PKey::hmac(&secret).unwrap();
    let mut signer = Signer::new(MessageDigest::sha256(), &hmac).unwrap();
    signer.update(input.as_bytes()).unwrap();
    let jws = format!("{input}.{}", B64.encode(signer.sign_to_vec().unwrap()));
    assert!(refused(&f, &jws).contains("HS256"));
    for alg in ["HS384", "HS512", "RS256", "ES256", "PS384"] {
        let mut h = header(&f);
        h["alg"] = alg.into();
        let jws = signed_with_header(&f, &h, &serde_json::to_vec(&claims(f.now)).unwrap());
        assert!(refused(&f, &jws).contains(alg), "{alg}");
    }
}

#[test]
fn keys_and_key_urls_in_the_header_are_refused() {
    let f = fixture();
    let payload = serde_json::to_vec(&claims(f.now)).unwrap();
    let jwk = serde_json::to_value(f.key.public_jwk()).unwrap();
    for (member, value) in [
        ("jwk", jwk),
        ("jku", "https://attacker.example/jwks.json".into()),
        ("x5u", "https://attacker.example/cert.pem".into()),
        ("x5c", serde_json::json!(["MIIB"])),
    ] {
        let mut h = header(&f);
        h[member] = value;
        let err = refused(&f, &signed_with_header(&f, &h, &payload));
        assert!(err.contains(member), "{member}: {err}");
    }
}

#[test]
fn unknown_crit_is_refused() {
    let f = fixture();
    let mut h = header(&f);
    h["crit"] = serde_json::json!(["exp-ext"]);
    h["exp-ext"] = true.into();
    let err = refused(
        &f,
        &signed_with_header(&f, &h, &serde_json::to_vec(&claims(f.now)).unwrap()),
    );
    assert!(err.contains("crit"), "{err}");
}

#[test]
fn missing_or_bad_time_claims_are_refused() {
    let f = fixture();
    for missing in ["exp", "nbf", "iat"] {
        let mut value = serde_json::to_value(claims(f.now)).unwrap();
        value.as_object_mut().unwrap().remove(missing);
        let err = refused(
            &f,
            &signed_with_header(&f, &header(&f), &serde_json::to_vec(&value).unwrap()),
        );
        assert!(err.contains(missing), "{missing}: {err}");
    }
    let mut expired = claims(f.now - Duration::days(3));
    expired.exp = (f.now - Duration::days(1)).timestamp();
    let err = refused(
        &f,
        &signed_with_header(&f, &header(&f), &serde_json::to_vec(&expired).unwrap()),
    );
    assert!(err.contains("expired"), "{err}");
    let mut early = claims(f.now);
    early.nbf = (f.now + Duration::hours(1)).timestamp();
    let err = refused(
        &f,
        &signed_with_header(&f, &header(&f), &serde_json::to_vec(&early).unwrap()),
    );
    assert!(
        matches!(
            verify_certificate(
                &signed_with_header(&f, &header(&f), &serde_json::to_vec(&early).unwrap()),
                &f.jwks,
                f.now
            ),
            Err(CertificateError::Time(_))
        ),
        "{err}"
    );
}

#[test]
fn wrong_type_profile_kid_and_tampering_are_refused() {
    let f = fixture();
    let payload = serde_json::to_vec(&claims(f.now)).unwrap();
    let mut h = header(&f);
    h["typ"] = "JWT".into();
    assert!(refused(&f, &signed_with_header(&f, &h, &payload)).contains("typ"));

    let mut other = claims(f.now);
    other.eat_profile = "tag:other".into();
    let err = refused(
        &f,
        &signed_with_header(&f, &header(&f), &serde_json::to_vec(&other).unwrap()),
    );
    assert!(err.contains("eat_profile"), "{err}");

    let mut h = header(&f);
    h["kid"] = "someone-else".into();
    assert!(matches!(
        verify_certificate(&signed_with_header(&f, &h, &payload), &f.jwks, f.now),
        Err(CertificateError::UnknownKid(_))
    ));

    // A valid signature over one payload does not cover another.
    let jws = signed_with_header(&f, &header(&f), &payload);
    let mut forged = claims(f.now);
    forged.energy.by_source[0].energy_wh = Decimal6::parse("1").unwrap();
    let parts: Vec<&str> = jws.split('.').collect();
    let swapped = format!(
        "{}.{}.{}",
        parts[0],
        B64.encode(serde_json::to_vec(&forged).unwrap()),
        parts[2]
    );
    assert!(refused(&f, &swapped).to_lowercase().contains("signature"));

    // Correctly signed but arithmetically inconsistent claims are refused too.
    let mut inflated = claims(f.now);
    inflated.reward.node_owner = Eur::from_micros(inflated.reward.node_owner.micros() + 1);
    let err = refused(
        &f,
        &signed_with_header(&f, &header(&f), &serde_json::to_vec(&inflated).unwrap()),
    );
    assert!(err.contains("node_owner"), "{err}");
}

/// ES256 (an oracle that signs with a P-256 key): verifies with only the JWKS, and the algorithm
/// must fit the key — an ES256 header on an RSA kid and a PS256 header on an EC kid are refused.
#[test]
fn es256_certificates_verify_and_algorithm_must_fit_the_key() {
    let f = fixture();
    let ec = wattest_shared::SoftwareEcKey::generate().unwrap();
    let mut jwks = f.jwks.clone();
    jwks.keys
        .push(wattest_shared::Jwk::Ec(ec.public_jwk().clone()).for_jwks());
    let payload = serde_json::to_vec(&claims(f.now)).unwrap();
    let jws = sign_compact(&ec, CERTIFICATE_TYP, &payload).unwrap();
    let header: serde_json::Value =
        serde_json::from_slice(&B64.decode(jws.split('.').next().unwrap()).unwrap()).unwrap();
    assert_eq!(header["alg"], "ES256");
    assert_eq!(
        jws.split('.').nth(2).map(|s| B64.decode(s).unwrap().len()),
        Some(64)
    );
    let checked = verify_certificate(&jws, &jwks, f.now).expect("ES256 certificate verifies");
    assert_eq!(checked.kid, ec.kid());

    // One flipped payload byte, and a truncated signature.
    let mut parts: Vec<String> = jws.split('.').map(str::to_owned).collect();
    let mut tampered = claims(f.now);
    tampered.jti = "cert-2".into();
    parts[1] = B64.encode(serde_json::to_vec(&tampered).unwrap());
    assert!(verify_certificate(&parts.join("."), &jwks, f.now).is_err());
    let short = format!(
        "{}.{}.{}",
        parts[0],
        B64.encode(&payload),
        &jws.split('.').nth(2).unwrap()[..80]
    );
    assert!(verify_certificate(&short, &jwks, f.now).is_err());

    // PS256 header naming the EC key: refused before any signature check.
    let input = format!(
        "{}.{}",
        B64.encode(
            serde_json::to_vec(
                &serde_json::json!({"alg": "PS256", "typ": CERTIFICATE_TYP, "kid": ec.kid()})
            )
            .unwrap()
        ),
        B64.encode(&payload)
    );
    let sig = ec.sign_jws(input.as_bytes()).unwrap();
    let err = verify_certificate(&format!("{input}.{}", B64.encode(sig)), &jwks, f.now)
        .unwrap_err()
        .to_string();
    assert!(err.contains("PS256"), "{err}");
    // ES384 stays refused even with EC keys present.
    let mut h = header.clone();
    h["alg"] = "ES384".into();
    let input = format!(
        "{}.{}",
        B64.encode(serde_json::to_vec(&h).unwrap()),
        B64.encode(&payload)
    );
    let sig = ec.sign_jws(input.as_bytes()).unwrap();
    let err = verify_certificate(&format!("{input}.{}", B64.encode(sig)), &jwks, f.now)
        .unwrap_err()
        .to_string();
    assert!(err.contains("ES384"), "{err}");
}
