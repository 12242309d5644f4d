//! Public keys as JWK (RFC 7517 §4): RSA (RFC 7518 §6.3.1) for nodes and the oracle, EC P-256
//! (RFC 7518 §6.2.1) for oracles that sign certificates with ES256; their RFC 7638 thumbprints, and
//! JWK sets.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use openssl::bn::{BigNum, BigNumContext};
use openssl::ec::{EcGroup, EcKey};
use openssl::nid::Nid;
use openssl::pkey::{PKey, Public};
use openssl::rsa::Rsa;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Smallest RSA modulus accepted anywhere in the protocol, in bits (NIST SP 800-57 Part 1 Rev. 5,
/// table 2: 2048-bit RSA gives 112-bit security, the floor through 2030).
pub const MIN_RSA_BITS: u32 = 2048;
/// Largest RSA modulus accepted, in bits (bounds verification cost for untrusted input).
pub const MAX_RSA_BITS: u32 = 4096;
/// The only public exponent accepted (F4 = 65537, what TPMs and OpenSSL generate).
pub const RSA_EXPONENT: u32 = 65_537;

/// Why a JWK was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum JwkError {
    /// `kty` is not `"RSA"` (or, in a JWKS, `"EC"` with `crv` `"P-256"`).
    #[error("key type {0:?} is not supported here")]
    UnsupportedKeyType(String),
    /// `n` or `e` is not base64url without padding.
    #[error("member {0} is not base64url without padding")]
    BadEncoding(&'static str),
    /// Modulus size outside [`MIN_RSA_BITS`, `MAX_RSA_BITS`].
    #[error("RSA modulus of {0} bits is outside the accepted 2048..=4096")]
    BadModulusSize(u32),
    /// Exponent other than 65537.
    #[error("RSA public exponent must be 65537")]
    BadExponent,
    /// OpenSSL refused the key.
    #[error("invalid RSA key: {0}")]
    Invalid(String),
    /// Not a JWK of the expected shape: not a JSON object, or a member missing or not a string.
    #[error("not a JWK: {0}")]
    NotAJwk(String),
}

/// An RSA public key as a JWK: `{"kty":"RSA","n":<base64url>,"e":<base64url>}` plus optional
/// `kid`, `alg` and `use` (present in a JWKS, ignored on input).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RsaJwk {
    /// Key type, always `"RSA"`.
    pub kty: String,
    /// Modulus, big-endian unsigned, base64url without padding.
    pub n: String,
    /// Public exponent, big-endian unsigned, base64url without padding (`"AQAB"` for 65537).
    pub e: String,
    /// Key id: the RFC 7638 thumbprint (set in JWKS documents).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(nullable = false))]
    pub kid: Option<String>,
    /// Algorithm the key is for (`"PS256"` in JWKS documents).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(nullable = false))]
    pub alg: Option<String>,
    /// Intended use (`"sig"` in JWKS documents).
    #[serde(default, rename = "use", skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(nullable = false))]
    pub use_: Option<String>,
}

impl RsaJwk {
    /// The JWK of an RSA public key, without `kid`/`alg`/`use`.
    ///
    /// # Errors
    /// [`JwkError::UnsupportedKeyType`] when `key` is not RSA.
    pub fn from_public_key(key: &PKey<Public>) -> Result<Self, JwkError> {
        let rsa = key
            .rsa()
            .map_err(|_| JwkError::UnsupportedKeyType(format!("{:?}", key.id())))?;
        Ok(Self {
            kty: "RSA".into(),
            n: B64.encode(rsa.n().to_vec()),
            e: B64.encode(rsa.e().to_vec()),
            kid: None,
            alg: None,
            use_: None,
        })
    }

    /// Reads an RSA JWK from any JSON value, for input that must be refused as a bad key rather
    /// than as bad JSON (enrollment answers 422 `invalid_key`, not 400). The value must be an
    /// object whose `kty` is `"RSA"` and whose `n` and `e` are strings; `kid`, `alg` and `use`,
    /// when present, must be strings; other members are ignored (RFC 7517 §4). The key itself
    /// (encoding, size, exponent) is checked by [`RsaJwk::to_public_key`].
    ///
    /// # Errors
    /// [`JwkError::NotAJwk`] for a value that is not an object or a member that is missing or
    /// not a string (`kty`, `n`, `e`; `kid`, `alg`, `use` when present);
    /// [`JwkError::UnsupportedKeyType`] when `kty` is not `"RSA"` (`"EC"`, `"oct"`, `"OKP"`…).
    pub fn from_json(value: &serde_json::Value) -> Result<Self, JwkError> {
        let members = value
            .as_object()
            .ok_or_else(|| JwkError::NotAJwk("a JWK is a JSON object".into()))?;
        let string = |name: &str| -> Result<Option<String>, JwkError> {
            match members.get(name) {
                None => Ok(None),
                Some(serde_json::Value::String(s)) => Ok(Some(s.clone())),
                Some(_) => Err(JwkError::NotAJwk(format!("member {name} is not a string"))),
            }
        };
        let required = |name: &str| {
            string(name)?.ok_or_else(|| JwkError::NotAJwk(format!("member {name} is missing")))
        };
        let kty = required("kty")?;
        if kty != "RSA" {
            return Err(JwkError::UnsupportedKeyType(kty));
        }
        Ok(Self {
            kty,
            n: required("n")?,
            e: required("e")?,
            kid: string("kid")?,
            alg: string("alg")?,
            use_: string("use")?,
        })
    }

    /// The same key as a JWKS entry: `kid` = thumbprint, `alg` = `PS256`, `use` = `sig`.
    #[must_use]
    pub fn for_jwks(mut self) -> Self {
        self.kid = Some(self.thumbprint());
        self.alg = Some("PS256".into());
        self.use_ = Some("sig".into());
        self
    }

    /// RFC 7638 thumbprint: base64url(SHA-256(`{"e":…,"kty":"RSA","n":…}`)), the members in
    /// lexicographic order with no whitespace (RFC 7638 §3.2, example in §3.1).
    #[must_use]
    pub fn thumbprint(&self) -> String {
        let canonical = format!(r#"{{"e":"{}","kty":"RSA","n":"{}"}}"#, self.e, self.n);
        B64.encode(Sha256::digest(canonical.as_bytes()))
    }

    /// Parses and checks the key: RSA, canonical base64url, 2048–4096-bit modulus, e = 65537.
    ///
    /// # Errors
    /// Any [`JwkError`] naming the rule that failed.
    pub fn to_public_key(&self) -> Result<PKey<Public>, JwkError> {
        if self.kty != "RSA" {
            return Err(JwkError::UnsupportedKeyType(self.kty.clone()));
        }
        let n = B64
            .decode(&self.n)
            .map_err(|_| JwkError::BadEncoding("n"))?;
        let e = B64
            .decode(&self.e)
            .map_err(|_| JwkError::BadEncoding("e"))?;
        // Leading zero octets would give the same key two thumbprints (RFC 7518 §6.3.1.1).
        if n.first() == Some(&0) || e.first() == Some(&0) {
            return Err(JwkError::BadEncoding("n/e (leading zero octet)"));
        }
        let n = BigNum::from_slice(&n).map_err(|err| JwkError::Invalid(err.to_string()))?;
        let e = BigNum::from_slice(&e).map_err(|err| JwkError::Invalid(err.to_string()))?;
        let bits = u32::try_from(n.num_bits()).unwrap_or(0);
        if !(MIN_RSA_BITS..=MAX_RSA_BITS).contains(&bits) {
            return Err(JwkError::BadModulusSize(bits));
        }
        if e != BigNum::from_u32(RSA_EXPONENT).map_err(|err| JwkError::Invalid(err.to_string()))? {
            return Err(JwkError::BadExponent);
        }
        let rsa =
            Rsa::from_public_components(n, e).map_err(|err| JwkError::Invalid(err.to_string()))?;
        PKey::from_rsa(rsa).map_err(|err| JwkError::Invalid(err.to_string()))
    }
}

/// Length of a P-256 coordinate in octets (SEC 1 §2.3.5; RFC 7518 §6.2.1.2 requires the full
/// length, leading zeros kept).
pub const P256_COORDINATE_LEN: usize = 32;

/// An EC P-256 public key as a JWK: `{"kty":"EC","crv":"P-256","x":…,"y":…}` plus optional `kid`,
/// `alg` and `use` (present in a JWKS). Only the oracle's ES256 certificate keys use it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EcJwk {
    /// Key type, always `"EC"`.
    pub kty: String,
    /// Curve, always `"P-256"`.
    pub crv: String,
    /// x coordinate, 32 octets big-endian, base64url without padding.
    pub x: String,
    /// y coordinate, 32 octets big-endian, base64url without padding.
    pub y: String,
    /// Key id: the RFC 7638 thumbprint (set in JWKS documents).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(nullable = false))]
    pub kid: Option<String>,
    /// Algorithm the key is for (`"ES256"` in JWKS documents).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(nullable = false))]
    pub alg: Option<String>,
    /// Intended use (`"sig"` in JWKS documents).
    #[serde(default, rename = "use", skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(nullable = false))]
    pub use_: Option<String>,
}

fn p256() -> Result<EcGroup, JwkError> {
    EcGroup::from_curve_name(Nid::X9_62_PRIME256V1)
        .map_err(|err| JwkError::Invalid(err.to_string()))
}

impl EcJwk {
    /// The JWK of a P-256 public key, without `kid`/`alg`/`use`.
    ///
    /// # Errors
    /// [`JwkError::UnsupportedKeyType`] when `key` is not an EC key on P-256.
    pub fn from_public_key(key: &PKey<Public>) -> Result<Self, JwkError> {
        let unsupported = || JwkError::UnsupportedKeyType(format!("{:?}", key.id()));
        let ec = key.ec_key().map_err(|_| unsupported())?;
        if ec.group().curve_name() != Some(Nid::X9_62_PRIME256V1) {
            return Err(unsupported());
        }
        let invalid = |err: openssl::error::ErrorStack| JwkError::Invalid(err.to_string());
        let mut ctx = BigNumContext::new().map_err(invalid)?;
        let (mut x, mut y) = (
            BigNum::new().map_err(invalid)?,
            BigNum::new().map_err(invalid)?,
        );
        ec.public_key()
            .affine_coordinates(ec.group(), &mut x, &mut y, &mut ctx)
            .map_err(invalid)?;
        let len = i32::try_from(P256_COORDINATE_LEN).unwrap_or(32);
        Ok(Self {
            kty: "EC".into(),
            crv: "P-256".into(),
            x: B64.encode(x.to_vec_padded(len).map_err(invalid)?),
            y: B64.encode(y.to_vec_padded(len).map_err(invalid)?),
            kid: None,
            alg: None,
            use_: None,
        })
    }

    /// RFC 7638 thumbprint: base64url(SHA-256(`{"crv":"P-256","kty":"EC","x":…,"y":…}`)), the
    /// required members in lexicographic order with no whitespace (RFC 7638 §3.2).
    #[must_use]
    pub fn thumbprint(&self) -> String {
        let canonical = format!(
            r#"{{"crv":"{}","kty":"EC","x":"{}","y":"{}"}}"#,
            self.crv, self.x, self.y
        );
        B64.encode(Sha256::digest(canonical.as_bytes()))
    }

    /// Parses and checks the key: EC, P-256, 32-octet coordinates of a point on the curve.
    ///
    /// # Errors
    /// Any [`JwkError`] naming the rule that failed.
    pub fn to_public_key(&self) -> Result<PKey<Public>, JwkError> {
        if self.kty != "EC" || self.crv != "P-256" {
            return Err(JwkError::UnsupportedKeyType(format!(
                "{} {}",
                self.kty, self.crv
            )));
        }
        let x = B64
            .decode(&self.x)
            .map_err(|_| JwkError::BadEncoding("x"))?;
        let y = B64
            .decode(&self.y)
            .map_err(|_| JwkError::BadEncoding("y"))?;
        if x.len() != P256_COORDINATE_LEN || y.len() != P256_COORDINATE_LEN {
            return Err(JwkError::BadEncoding("x/y (not 32 octets)"));
        }
        let invalid = |err: openssl::error::ErrorStack| JwkError::Invalid(err.to_string());
        let group = p256()?;
        let x = BigNum::from_slice(&x).map_err(invalid)?;
        let y = BigNum::from_slice(&y).map_err(invalid)?;
        // Checks the point is on the curve (and not the point at infinity).
        let ec = EcKey::from_public_key_affine_coordinates(&group, &x, &y).map_err(invalid)?;
        ec.check_key().map_err(invalid)?;
        PKey::from_ec_key(ec).map_err(invalid)
    }
}

/// One key of a JWK Set: RSA (PS256) or EC P-256 (ES256).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(untagged)]
pub enum Jwk {
    /// `kty` `RSA`: for PS256.
    Rsa(RsaJwk),
    /// `kty` `EC`, `crv` `P-256`: for ES256.
    Ec(EcJwk),
}

impl Jwk {
    /// RFC 7638 thumbprint of the key.
    #[must_use]
    pub fn thumbprint(&self) -> String {
        match self {
            Self::Rsa(k) => k.thumbprint(),
            Self::Ec(k) => k.thumbprint(),
        }
    }

    /// The `kid` member as published (not checked: [`Jwks::find`] recomputes the thumbprint).
    #[must_use]
    pub fn kid(&self) -> Option<&str> {
        match self {
            Self::Rsa(k) => k.kid.as_deref(),
            Self::Ec(k) => k.kid.as_deref(),
        }
    }

    /// The checked public key ([`RsaJwk::to_public_key`], [`EcJwk::to_public_key`]).
    ///
    /// # Errors
    /// [`JwkError`].
    pub fn to_public_key(&self) -> Result<PKey<Public>, JwkError> {
        match self {
            Self::Rsa(k) => k.to_public_key(),
            Self::Ec(k) => k.to_public_key(),
        }
    }

    /// The same key as a JWKS entry: `kid` = thumbprint, `alg` = `PS256` (RSA) or `ES256` (EC),
    /// `use` = `sig`.
    #[must_use]
    pub fn for_jwks(self) -> Self {
        match self {
            Self::Rsa(k) => Self::Rsa(k.for_jwks()),
            Self::Ec(mut k) => {
                k.kid = Some(k.thumbprint());
                k.alg = Some("ES256".into());
                k.use_ = Some("sig".into());
                Self::Ec(k)
            }
        }
    }
}

impl From<RsaJwk> for Jwk {
    fn from(k: RsaJwk) -> Self {
        Self::Rsa(k)
    }
}

/// A JWK Set (RFC 7517 §5): `{"keys":[<Jwk>…]}`, as served at `/.well-known/jwks.json`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Jwks {
    /// The keys; each carries `kid` = its RFC 7638 thumbprint.
    pub keys: Vec<Jwk>,
}

impl Jwks {
    /// The key whose thumbprint is `kid`. The thumbprint is recomputed, so a JWKS whose `kid`
    /// members lie cannot substitute a key.
    #[must_use]
    pub fn find(&self, kid: &str) -> Option<&Jwk> {
        self.keys.iter().find(|k| k.thumbprint() == kid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7638 §3.1 example key and its published thumbprint.
    #[test]
    fn thumbprint_matches_rfc7638_example() {
        let jwk = RsaJwk {
            kty: "RSA".into(),
            n: "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw".into(),
            e: "AQAB".into(),
            kid: None,
            alg: None,
            use_: None,
        };
        assert_eq!(
            jwk.thumbprint(),
            "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
        );
        let key = jwk.to_public_key().expect("RFC example key is valid");
        assert_eq!(RsaJwk::from_public_key(&key).expect("rsa").n, jwk.n);
    }

    #[test]
    fn rejects_weak_and_odd_keys() {
        let small = Rsa::generate(1024).expect("gen");
        let key = PKey::from_rsa(
            Rsa::from_public_components(
                small.n().to_owned().expect("n"),
                small.e().to_owned().expect("e"),
            )
            .expect("pub"),
        )
        .expect("pkey");
        let jwk = RsaJwk::from_public_key(&key).expect("jwk");
        assert_eq!(
            jwk.to_public_key().err(),
            Some(JwkError::BadModulusSize(1024))
        );
        let mut ec = jwk.clone();
        ec.kty = "EC".into();
        assert!(matches!(
            ec.to_public_key(),
            Err(JwkError::UnsupportedKeyType(_))
        ));
        let mut padded = jwk;
        padded.e = "AAEAAQ".into();
        assert!(matches!(
            padded.to_public_key(),
            Err(JwkError::BadEncoding(_))
        ));
    }

    /// Any JSON value reads as an RSA JWK or as a [`JwkError`] (never a parse failure): what
    /// enrollment turns into 422 `invalid_key`.
    #[test]
    fn from_json_refuses_other_shapes_as_key_errors() {
        use serde_json::json;
        let ok = RsaJwk::from_json(&json!({"kty": "RSA", "n": "AQAB", "e": "AQAB",
            "kid": "k", "ext": true, "key_ops": ["verify"]}))
        .expect("an RSA JWK with extra members");
        assert_eq!((ok.n.as_str(), ok.kid.as_deref()), ("AQAB", Some("k")));
        for (value, expected) in [
            (
                json!({"kty": "EC", "crv": "P-256", "x": "AQAB", "y": "AQAB"}),
                JwkError::UnsupportedKeyType("EC".into()),
            ),
            (
                json!({"kty": "oct", "k": "AQAB"}),
                JwkError::UnsupportedKeyType("oct".into()),
            ),
            (
                json!({"kty": "RSA", "n": 5, "e": "AQAB"}),
                JwkError::NotAJwk("member n is not a string".into()),
            ),
            (
                json!({"kty": "RSA", "n": "AQAB", "e": null}),
                JwkError::NotAJwk("member e is not a string".into()),
            ),
            (
                json!({"kty": "RSA", "n": "AQAB"}),
                JwkError::NotAJwk("member e is missing".into()),
            ),
            (
                json!({"n": "AQAB", "e": "AQAB"}),
                JwkError::NotAJwk("member kty is missing".into()),
            ),
            (
                json!({"kty": "RSA", "n": "AQAB", "e": "AQAB", "kid": 1}),
                JwkError::NotAJwk("member kid is not a string".into()),
            ),
            (
                json!("AQAB"),
                JwkError::NotAJwk("a JWK is a JSON object".into()),
            ),
        ] {
            assert_eq!(RsaJwk::from_json(&value), Err(expected), "{value}");
        }
    }

    /// RFC 7638 has no EC example: RFC 7517 appendix A.1's P-256 key is used, and its canonical
    /// thumbprint input is written out by hand from RFC 7638 §3.2 (members crv, kty, x, y).
    #[test]
    fn ec_thumbprint_and_curve_checks() {
        let jwk = EcJwk {
            kty: "EC".into(),
            crv: "P-256".into(),
            x: "MKBCTNIcKUSDii11ySs3526iDZ8AiTo7Tu6KPAqv7D4".into(),
            y: "4Etl6SRW2YiLUrN5vfvVHuhp7x8PxltmWWlbbM4IFyM".into(),
            kid: Some("1".into()),
            alg: None,
            use_: None,
        };
        let canonical = r#"{"crv":"P-256","kty":"EC","x":"MKBCTNIcKUSDii11ySs3526iDZ8AiTo7Tu6KPAqv7D4","y":"4Etl6SRW2YiLUrN5vfvVHuhp7x8PxltmWWlbbM4IFyM"}"#;
        assert_eq!(jwk.thumbprint(), B64.encode(Sha256::digest(canonical)));
        let key = jwk
            .to_public_key()
            .expect("RFC 7517 A.1 key is on the curve");
        let back = EcJwk::from_public_key(&key).expect("ec");
        assert_eq!(
            (back.x.as_str(), back.y.as_str()),
            (jwk.x.as_str(), jwk.y.as_str())
        );
        // A point off the curve, a short coordinate and another curve are refused.
        let mut off = jwk.clone();
        off.y = off.x.clone();
        assert!(matches!(off.to_public_key(), Err(JwkError::Invalid(_))));
        let mut short = jwk.clone();
        short.x = B64.encode([1u8; 31]);
        assert!(matches!(
            short.to_public_key(),
            Err(JwkError::BadEncoding(_))
        ));
        let mut p384 = jwk.clone();
        p384.crv = "P-384".into();
        assert!(matches!(
            p384.to_public_key(),
            Err(JwkError::UnsupportedKeyType(_))
        ));
        // Both kinds parse from one JWKS, each as its own type.
        let set: Jwks = serde_json::from_value(serde_json::json!({"keys": [
            serde_json::to_value(&jwk).expect("json"),
            {"kty": "RSA", "n": "AQAB", "e": "AQAB"},
        ]}))
        .expect("jwks");
        assert!(matches!(set.keys[0], Jwk::Ec(_)));
        assert!(matches!(set.keys[1], Jwk::Rsa(_)));
        assert!(set.find(&jwk.thumbprint()).is_some());
    }
}
