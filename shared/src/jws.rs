//! Compact JWS (RFC 7515 §7.1): signing, strict header rules, verification.
//!
//! PS256 is RSASSA-PSS with SHA-256, MGF1-SHA-256 and a 32-octet salt (RFC 7518 §3.5); windows
//! use only PS256. Certificates may also be ES256 (ECDSA P-256 SHA-256, RFC 7518 §3.4) when the
//! oracle operator chooses an EC key; the algorithm must match the key's type. The
//! header rules follow RFC 8725 (JWT best current practice): the algorithm is allow-listed, `typ`
//! is explicit, `none` is refused, and keys supplied in the header (`jwk`, `jku`, `x5u`, `x5c`)
//! are refused, as is `crit`, so the key always comes from enrollment, never from the message.
//! RSA operations run in OpenSSL (constant-time private-key code; the pure-Rust `rsa` crate has
//! the unfixed RUSTSEC-2023-0071 timing advisory).

use crate::jwk::{EcJwk, Jwk, JwkError, RsaJwk};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use openssl::bn::BigNum;
use openssl::ec::{EcGroup, EcKey};
use openssl::ecdsa::EcdsaSig;
use openssl::hash::MessageDigest;
use openssl::md::Md;
use openssl::nid::Nid;
use openssl::pkey::{Id, PKey, Private, Public};
use openssl::pkey_ctx::PkeyCtx;
use openssl::rsa::{Padding, Rsa};
use openssl::sign::{RsaPssSaltlen, Signer, Verifier};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The JWS algorithm of windows, and the default of certificates.
pub const ALG_PS256: &str = "PS256";
/// ECDSA P-256 SHA-256 (RFC 7518 §3.4): optional for certificates.
pub const ALG_ES256: &str = "ES256";
/// Algorithms a certificate may use.
pub const CERTIFICATE_ALGS: [&str; 2] = [ALG_PS256, ALG_ES256];
/// Length of an ES256 signature: R and S, 32 octets each (RFC 7518 §3.4).
pub const ES256_SIGNATURE_LEN: usize = 64;
/// Salt length of PS256 in octets: the SHA-256 output length (RFC 7518 §3.5).
pub const PS256_SALT_LEN: i32 = 32;
/// Header members that would let a message choose its own key (RFC 8725 §3.10) or demand
/// extensions we do not implement (`crit`, RFC 7515 §4.1.11).
pub const FORBIDDEN_HEADER_MEMBERS: [&str; 6] = ["jwk", "jku", "x5u", "x5c", "x5t", "crit"];

/// A protected header as produced: `{"alg":"PS256","kid":…,"typ":…}` (or `ES256`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    /// `PS256`, or `ES256` for a certificate signed with an EC key.
    pub alg: String,
    /// RFC 7638 thumbprint of the signing key.
    pub kid: String,
    /// Media type of the payload, e.g. `wattest-window+jwt`.
    pub typ: String,
}

/// Why a compact JWS was refused. [`JwsError::code`] gives the stable machine-readable code used
/// in problem responses and documented in `docs/protocol.md`.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum JwsError {
    /// Not three base64url segments, or the header is not a JSON object.
    #[error("malformed JWS: {0}")]
    Malformed(String),
    /// `alg` not allowed here (anything but `PS256` for windows; `PS256`/`ES256` for
    /// certificates; never `none`), or not matching the key's type.
    #[error("algorithm {0:?} is not allowed here")]
    UnsupportedAlg(String),
    /// `typ` missing or not the expected media type.
    #[error("header typ {found:?} is not {expected:?}")]
    WrongType {
        /// The `typ` required here.
        expected: String,
        /// What the header carried.
        found: Option<String>,
    },
    /// The header carries a key or a `crit` member.
    #[error("header member {0:?} is not allowed")]
    ForbiddenHeader(String),
    /// `kid` missing or not a string.
    #[error("header kid is missing")]
    MissingKid,
    /// The signature does not verify under the key.
    #[error("signature does not verify")]
    BadSignature,
    /// The verifying key could not be used.
    #[error(transparent)]
    Key(#[from] JwkError),
}

impl JwsError {
    /// Stable error code (snake_case) for problem+json bodies.
    #[must_use]
    pub fn code(&self) -> &'static str {
        match self {
            Self::Malformed(_) => "malformed_jws",
            Self::UnsupportedAlg(_) => "unsupported_alg",
            Self::WrongType { .. } => "wrong_typ",
            Self::ForbiddenHeader(_) => "forbidden_header",
            Self::MissingKid => "missing_kid",
            Self::BadSignature => "bad_signature",
            Self::Key(_) => "invalid_key",
        }
    }
}

/// Why signing failed (a key or TPM problem, never the input).
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    /// OpenSSL failed.
    #[error("OpenSSL signing failed: {0}")]
    OpenSsl(#[from] openssl::error::ErrorStack),
    /// A hardware or remote signer failed.
    #[error("signer failed: {0}")]
    Device(String),
}

/// Something that signs JWS: RSASSA-PSS-SHA256 (salt 32) with a software or TPM RSA key, or
/// ES256 with a software P-256 key (oracle certificates only).
pub trait JwsSigner {
    /// RFC 7638 thumbprint of the public key, used as `kid`.
    fn kid(&self) -> &str;
    /// The JWS `alg` this key signs with: [`ALG_PS256`] unless overridden.
    fn alg(&self) -> &'static str {
        ALG_PS256
    }
    /// The JWS signature over `message` (the signing input) for [`JwsSigner::alg`]: for PS256
    /// the RSASSA-PSS-SHA256 signature, `k` octets long; for ES256 R ‖ S, 64 octets.
    ///
    /// # Errors
    /// [`SignError`] when the key or device fails.
    fn sign_jws(&self, message: &[u8]) -> Result<Vec<u8>, SignError>;
}

/// A P-256 private key held in process memory (OpenSSL), signing ES256; with its JWK and
/// thumbprint.
pub struct SoftwareEcKey {
    key: PKey<Private>,
    jwk: EcJwk,
    kid: String,
}

impl std::fmt::Debug for SoftwareEcKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material.
        f.debug_struct("SoftwareEcKey")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl SoftwareEcKey {
    /// Generates a fresh P-256 key.
    ///
    /// # Errors
    /// OpenSSL failures.
    pub fn generate() -> Result<Self, SignError> {
        let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1)?;
        Self::from_pkey(PKey::from_ec_key(EcKey::generate(&group)?)?)
    }

    fn from_pkey(key: PKey<Private>) -> Result<Self, SignError> {
        let public = PKey::public_key_from_der(&key.public_key_to_der()?)?;
        let jwk =
            EcJwk::from_public_key(&public).map_err(|err| SignError::Device(err.to_string()))?;
        let kid = jwk.thumbprint();
        Ok(Self { key, jwk, kid })
    }

    /// The public key as a JWK (without `kid`).
    #[must_use]
    pub fn public_jwk(&self) -> &EcJwk {
        &self.jwk
    }
}

impl JwsSigner for SoftwareEcKey {
    fn kid(&self) -> &str {
        &self.kid
    }

    fn alg(&self) -> &'static str {
        ALG_ES256
    }

    /// R ‖ S, each 32 octets big-endian (RFC 7518 §3.4), converted from
    /// OpenSSL's DER `ECDSA-Sig-Value`.
    fn sign_jws(&self, message: &[u8]) -> Result<Vec<u8>, SignError> {
        let mut signer = Signer::new(MessageDigest::sha256(), &self.key)?;
        signer.update(message)?;
        let der = signer.sign_to_vec()?;
        let sig = EcdsaSig::from_der(&der)?;
        let half = i32::try_from(ES256_SIGNATURE_LEN / 2).unwrap_or(32);
        let mut out = sig.r().to_vec_padded(half)?;
        out.extend(sig.s().to_vec_padded(half)?);
        Ok(out)
    }
}

/// An oracle signing key of either kind, loaded from PKCS#8 by its key type.
#[derive(Debug)]
pub enum SigningKey {
    /// RSA, signs PS256.
    Rsa(SoftwareKey),
    /// EC P-256, signs ES256.
    Ec(SoftwareEcKey),
}

impl SigningKey {
    /// Loads a PKCS#8 DER private key: RSA or EC P-256.
    ///
    /// # Errors
    /// Another key type or curve, or bytes that are not PKCS#8.
    pub fn from_pkcs8_der(der: &[u8]) -> Result<Self, SignError> {
        let key = PKey::private_key_from_pkcs8(der)?;
        match key.id() {
            Id::RSA => Ok(Self::Rsa(SoftwareKey::from_pkey(key)?)),
            Id::EC => Ok(Self::Ec(SoftwareEcKey::from_pkey(key)?)),
            other => Err(SignError::Device(format!(
                "key type {other:?} cannot sign JWS here"
            ))),
        }
    }

    /// The private key as unencrypted PKCS#8 DER. Callers must store it with mode 0600.
    ///
    /// # Errors
    /// OpenSSL failures.
    pub fn to_pkcs8_der(&self) -> Result<Vec<u8>, SignError> {
        let key = match self {
            Self::Rsa(k) => &k.key,
            Self::Ec(k) => &k.key,
        };
        Ok(key.private_key_to_pkcs8()?)
    }

    /// The public key as a JWKS entry (`kid`, `alg`, `use` set).
    #[must_use]
    pub fn jwks_entry(&self) -> Jwk {
        match self {
            Self::Rsa(k) => Jwk::Rsa(k.public_jwk().clone()).for_jwks(),
            Self::Ec(k) => Jwk::Ec(k.public_jwk().clone()).for_jwks(),
        }
    }
}

impl JwsSigner for SigningKey {
    fn kid(&self) -> &str {
        match self {
            Self::Rsa(k) => k.kid(),
            Self::Ec(k) => k.kid(),
        }
    }

    fn alg(&self) -> &'static str {
        match self {
            Self::Rsa(k) => k.alg(),
            Self::Ec(k) => k.alg(),
        }
    }

    fn sign_jws(&self, message: &[u8]) -> Result<Vec<u8>, SignError> {
        match self {
            Self::Rsa(k) => k.sign_jws(message),
            Self::Ec(k) => k.sign_jws(message),
        }
    }
}

/// An RSA private key held in process memory (OpenSSL), with its JWK and thumbprint.
pub struct SoftwareKey {
    key: PKey<Private>,
    jwk: RsaJwk,
    kid: String,
}

impl std::fmt::Debug for SoftwareKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material.
        f.debug_struct("SoftwareKey")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl SoftwareKey {
    /// Generates a fresh RSA key of `bits` bits (e = 65537).
    ///
    /// # Errors
    /// OpenSSL failures.
    pub fn generate(bits: u32) -> Result<Self, SignError> {
        Self::from_pkey(PKey::from_rsa(Rsa::generate(bits)?)?)
    }

    /// Loads a PKCS#8 DER private key (as written by [`SoftwareKey::to_pkcs8_der`]).
    ///
    /// # Errors
    /// The bytes are not an RSA PKCS#8 key.
    pub fn from_pkcs8_der(der: &[u8]) -> Result<Self, SignError> {
        Self::from_pkey(PKey::private_key_from_pkcs8(der)?)
    }

    fn from_pkey(key: PKey<Private>) -> Result<Self, SignError> {
        let public = PKey::public_key_from_der(&key.public_key_to_der()?)?;
        let jwk =
            RsaJwk::from_public_key(&public).map_err(|err| SignError::Device(err.to_string()))?;
        let kid = jwk.thumbprint();
        Ok(Self { key, jwk, kid })
    }

    /// The private key as unencrypted PKCS#8 DER. Callers must store it with mode 0600.
    ///
    /// # Errors
    /// OpenSSL failures.
    pub fn to_pkcs8_der(&self) -> Result<Vec<u8>, SignError> {
        Ok(self.key.private_key_to_pkcs8()?)
    }

    /// The public key as a JWK (without `kid`).
    #[must_use]
    pub fn public_jwk(&self) -> &RsaJwk {
        &self.jwk
    }
}

impl JwsSigner for SoftwareKey {
    fn kid(&self) -> &str {
        &self.kid
    }

    fn sign_jws(&self, message: &[u8]) -> Result<Vec<u8>, SignError> {
        let mut signer = Signer::new(MessageDigest::sha256(), &self.key)?;
        signer.set_rsa_padding(Padding::PKCS1_PSS)?;
        signer.set_rsa_mgf1_md(MessageDigest::sha256())?;
        signer.set_rsa_pss_saltlen(RsaPssSaltlen::custom(PS256_SALT_LEN))?;
        signer.update(message)?;
        Ok(signer.sign_to_vec()?)
    }
}

/// Signs `payload` as a compact JWS with header `{"alg":<signer alg>,"kid":<signer kid>,"typ":typ}`.
///
/// # Errors
/// [`SignError`] from the signer.
pub fn sign_compact(
    signer: &dyn JwsSigner,
    typ: &str,
    payload: &[u8],
) -> Result<String, SignError> {
    let header = Header {
        alg: signer.alg().into(),
        kid: signer.kid().into(),
        typ: typ.into(),
    };
    // Serialising a struct of three strings cannot fail.
    let header = serde_json::to_vec(&header).unwrap_or_default();
    let mut out = String::with_capacity(header.len() * 4 / 3 + payload.len() * 4 / 3 + 350);
    B64.encode_string(&header, &mut out);
    out.push('.');
    B64.encode_string(payload, &mut out);
    let signature = signer.sign_jws(out.as_bytes())?;
    out.push('.');
    B64.encode_string(signature, &mut out);
    Ok(out)
}

/// Which salt length a signature verified with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum SaltLength {
    /// 32 octets, standard PS256.
    Digest,
    /// `k - 32 - 2` octets (222 for RSA-2048): the maximum, used by some older TPMs.
    Maximum,
}

/// Which salt lengths verification accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SaltPolicy {
    /// Standard PS256 only (software keys, the oracle's own certificates).
    DigestOnly,
    /// PS256, then the maximum salt length: only for keys proven to live in a TPM.
    DigestOrMaximum,
}

/// A compact JWS split and its header checked, but its signature not yet verified.
#[derive(Debug, Clone)]
pub struct UnverifiedJws<'a> {
    /// The parsed header (alg = PS256, typ as expected).
    pub header: Header,
    signing_input: &'a str,
    payload_b64: &'a str,
    signature: Vec<u8>,
}

/// Splits `jws` and checks its header: steps 1–3 of verification (see `docs/protocol.md`), with
/// PS256 the only algorithm allowed (windows).
///
/// # Errors
/// [`JwsError::Malformed`], [`JwsError::UnsupportedAlg`], [`JwsError::WrongType`],
/// [`JwsError::ForbiddenHeader`], [`JwsError::MissingKid`].
pub fn decode_header<'a>(jws: &'a str, expected_typ: &str) -> Result<UnverifiedJws<'a>, JwsError> {
    decode_header_allowing(jws, expected_typ, &[ALG_PS256])
}

/// [`decode_header`] with an explicit algorithm allow-list (certificates: [`CERTIFICATE_ALGS`]).
///
/// # Errors
/// As [`decode_header`].
pub fn decode_header_allowing<'a>(
    jws: &'a str,
    expected_typ: &str,
    allowed: &[&str],
) -> Result<UnverifiedJws<'a>, JwsError> {
    // Step 1: exactly three non-empty base64url segments.
    let mut parts = jws.split('.');
    let (Some(h), Some(p), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(JwsError::Malformed(
            "expected three dot-separated segments".into(),
        ));
    };
    if h.is_empty() || p.is_empty() || s.is_empty() {
        return Err(JwsError::Malformed("empty segment".into()));
    }
    // The payload is decoded only after the signature verified (step 4); here it is checked
    // without decoding or allocating, so that every segment fails step 1 alike.
    if !is_base64url(p) {
        return Err(JwsError::Malformed("payload is not base64url".into()));
    }
    let header_bytes = B64
        .decode(h)
        .map_err(|_| JwsError::Malformed("header is not base64url".into()))?;
    let signature = B64
        .decode(s)
        .map_err(|_| JwsError::Malformed("signature is not base64url".into()))?;
    let header: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(&header_bytes)
        .map_err(|_| JwsError::Malformed("header is not a JSON object".into()))?;

    // Step 2: algorithm allow-list, before anything else is trusted.
    let alg = header
        .get("alg")
        .and_then(|v| v.as_str())
        .unwrap_or_default();
    if !allowed.contains(&alg) {
        return Err(JwsError::UnsupportedAlg(alg.to_owned()));
    }
    // Step 3: explicit type, no header-supplied keys, a kid.
    let typ = header.get("typ").and_then(|v| v.as_str());
    if typ != Some(expected_typ) {
        return Err(JwsError::WrongType {
            expected: expected_typ.into(),
            found: typ.map(str::to_owned),
        });
    }
    if let Some(bad) = FORBIDDEN_HEADER_MEMBERS
        .iter()
        .find(|m| header.contains_key(**m))
    {
        return Err(JwsError::ForbiddenHeader((*bad).to_owned()));
    }
    let kid = header
        .get("kid")
        .and_then(|v| v.as_str())
        .ok_or(JwsError::MissingKid)?;
    Ok(UnverifiedJws {
        header: Header {
            alg: alg.into(),
            kid: kid.into(),
            typ: expected_typ.into(),
        },
        signing_input: &jws[..h.len() + 1 + p.len()],
        payload_b64: p,
        signature,
    })
}

/// Whether `b` is in the base64url alphabet (RFC 4648 §5): `A–Z`, `a–z`, `0–9`, `-`, `_`.
/// Branch-free, so that the check over a segment vectorises.
#[inline(always)]
fn in_base64url_alphabet(b: u8) -> bool {
    (b.wrapping_sub(b'A') < 26)
        | (b.wrapping_sub(b'a') < 26)
        | (b.wrapping_sub(b'0') < 10)
        | (b == b'-')
        | (b == b'_')
}

/// The 6-bit value of a base64url alphabet octet.
fn base64url_value(b: u8) -> u8 {
    match b {
        b'A'..=b'Z' => b - b'A',
        b'a'..=b'z' => b - b'a' + 26,
        b'0'..=b'9' => b - b'0' + 52,
        b'-' => 62,
        _ => 63,
    }
}

/// Whether `segment` is base64url without padding exactly as the decoder of step 4 accepts it
/// (RFC 4648 §5 and §3.5): only the URL alphabet (no `=`, `+`, `/` or whitespace), a length that
/// is not 1 more than a multiple of 4, and zero bits after the last whole octet (canonical
/// encoding). No allocation; about 0.1 µs for a 1.6 KB payload (the check vectorises).
#[must_use]
pub fn is_base64url(segment: &str) -> bool {
    let bytes = segment.as_bytes();
    let alphabet = bytes.chunks(64).all(|chunk| {
        chunk
            .iter()
            .fold(true, |ok, &b| ok & in_base64url_alphabet(b))
    });
    if !alphabet || bytes.len() % 4 == 1 {
        return false;
    }
    // A final group of 2 characters carries 8 bits of 12, one of 3 carries 16 of 18: the rest
    // must be zero.
    let unused = match bytes.len() % 4 {
        2 => 0b1111,
        3 => 0b11,
        _ => return true,
    };
    bytes
        .last()
        .is_some_and(|&last| base64url_value(last) & unused == 0)
}

impl UnverifiedJws<'_> {
    /// Step 4: verifies the signature under `key` and returns the payload bytes. The header's
    /// `alg` must fit the key: PS256 an RSA key, ES256 a P-256 key (no algorithm confusion).
    ///
    /// # Errors
    /// [`JwsError::UnsupportedAlg`] for an algorithm that does not fit the key,
    /// [`JwsError::BadSignature`] (also for a wrong-length signature), [`JwsError::Malformed`]
    /// when the payload is not base64url.
    pub fn verify(
        self,
        key: &PKey<Public>,
        policy: SaltPolicy,
    ) -> Result<(Vec<u8>, SaltLength), JwsError> {
        match (self.header.alg.as_str(), key.id()) {
            (ALG_PS256, Id::RSA) => {}
            (ALG_ES256, Id::EC) => {
                if !es256_verify(key, self.signing_input.as_bytes(), &self.signature) {
                    return Err(JwsError::BadSignature);
                }
                let payload = B64
                    .decode(self.payload_b64)
                    .map_err(|_| JwsError::Malformed("payload is not base64url".into()))?;
                return Ok((payload, SaltLength::Digest));
            }
            (alg, _) => {
                return Err(JwsError::UnsupportedAlg(format!(
                    "{alg} with this key type"
                )));
            }
        }
        let mut verifier = Ps256Verifier::new(key)?;
        self.verify_ps256(&mut verifier, policy)
    }

    /// Step 4 for a PS256 JWS under a prepared [`Ps256Verifier`] (reused across the windows of
    /// one node): verifies the signature and returns the payload bytes and the salt length used.
    ///
    /// # Errors
    /// [`JwsError::UnsupportedAlg`] when the header's `alg` is not PS256,
    /// [`JwsError::BadSignature`] (also for a wrong-length signature), [`JwsError::Malformed`]
    /// when the payload is not base64url.
    pub fn verify_ps256(
        self,
        verifier: &mut Ps256Verifier,
        policy: SaltPolicy,
    ) -> Result<(Vec<u8>, SaltLength), JwsError> {
        if self.header.alg != ALG_PS256 {
            return Err(JwsError::UnsupportedAlg(format!(
                "{} with this key type",
                self.header.alg
            )));
        }
        let salt = verifier
            .verify(self.signing_input.as_bytes(), &self.signature, policy)
            .ok_or(JwsError::BadSignature)?;
        let payload = B64
            .decode(self.payload_b64)
            .map_err(|_| JwsError::Malformed("payload is not base64url".into()))?;
        Ok((payload, salt))
    }
}

/// PS256 verification (RSASSA-PSS, SHA-256, MGF1-SHA-256; RFC 7518 §3.5) under one RSA public
/// key, set up once and reused for any number of signatures: the signing input is hashed with
/// SHA-256 and the digest checked by `EVP_PKEY_verify` on a context initialised once per salt
/// length. Setting a context up (OpenSSL 3 fetches the algorithms and exports the key to its
/// provider) costs about as much as an RSA-2048 verification itself, so the oracle prepares one
/// per node and request (`docs/performance.md`). Not `Send`: build it on the thread that uses
/// it.
pub struct Ps256Verifier {
    key: PKey<Public>,
    /// Salt of the digest length (32 octets), the only one software keys may use.
    digest_salt: PkeyCtx<Public>,
    /// The maximum salt length (TPM keys), set up on first use.
    maximum_salt: Option<PkeyCtx<Public>>,
}

impl std::fmt::Debug for Ps256Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ps256Verifier")
            .field("bits", &self.key.bits())
            .finish_non_exhaustive()
    }
}

impl Ps256Verifier {
    /// Prepares verification under `key`.
    ///
    /// # Errors
    /// [`JwsError::UnsupportedAlg`] when `key` is not an RSA key; [`JwsError::BadSignature`] when
    /// OpenSSL cannot set up the context (nothing could verify under it).
    pub fn new(key: &PKey<Public>) -> Result<Self, JwsError> {
        if key.id() != Id::RSA {
            return Err(JwsError::UnsupportedAlg(format!(
                "{ALG_PS256} with this key type"
            )));
        }
        Ok(Self {
            key: key.clone(),
            digest_salt: pss_context(key, PS256_SALT_LEN).map_err(|_| JwsError::BadSignature)?,
            maximum_salt: None,
        })
    }

    /// The salt length `signature` over `message` verifies with — the digest length, or under
    /// [`SaltPolicy::DigestOrMaximum`] also the maximum — or `None` when it does not verify
    /// (including a signature whose length is not the modulus length).
    pub fn verify(
        &mut self,
        message: &[u8],
        signature: &[u8],
        policy: SaltPolicy,
    ) -> Option<SaltLength> {
        if signature.len() != self.key.size() {
            return None;
        }
        let digest = openssl::sha::sha256(message);
        if verifies(&mut self.digest_salt, &digest, signature) {
            return Some(SaltLength::Digest);
        }
        if policy != SaltPolicy::DigestOrMaximum {
            return None;
        }
        if self.maximum_salt.is_none() {
            self.maximum_salt = pss_context(&self.key, max_salt_len(&self.key)).ok();
        }
        let ctx = self.maximum_salt.as_mut()?;
        verifies(ctx, &digest, signature).then_some(SaltLength::Maximum)
    }
}

/// An `EVP_PKEY_verify` context for PS256 with a `salt`-octet salt.
fn pss_context(
    key: &PKey<Public>,
    salt: i32,
) -> Result<PkeyCtx<Public>, openssl::error::ErrorStack> {
    let mut ctx = PkeyCtx::new(key)?;
    ctx.verify_init()?;
    ctx.set_rsa_padding(Padding::PKCS1_PSS)?;
    ctx.set_signature_md(Md::sha256())?;
    ctx.set_rsa_mgf1_md(Md::sha256())?;
    ctx.set_rsa_pss_saltlen(RsaPssSaltlen::custom(salt))?;
    Ok(ctx)
}

/// Whether `signature` verifies over `digest`; OpenSSL's error queue (left by a failed
/// verification) is cleared either way.
fn verifies(ctx: &mut PkeyCtx<Public>, digest: &[u8], signature: &[u8]) -> bool {
    ctx.verify(digest, signature).unwrap_or(false)
}

/// Maximum PSS salt length for `key` with SHA-256: `emLen - hLen - 2` (RFC 8017 §9.1.1), where
/// `emLen = ceil((modBits - 1) / 8)`: 222 octets for RSA-2048.
fn max_salt_len(key: &PKey<Public>) -> i32 {
    let em_len = (i32::try_from(key.bits()).unwrap_or(0) - 1 + 7) / 8;
    em_len - PS256_SALT_LEN - 2
}

/// ES256 verification: `signature` is R ‖ S (64 octets), converted to DER for OpenSSL; the key
/// must be on P-256.
fn es256_verify(key: &PKey<Public>, message: &[u8], signature: &[u8]) -> bool {
    let run = || -> Result<bool, openssl::error::ErrorStack> {
        let ec = key.ec_key()?;
        if ec.group().curve_name() != Some(Nid::X9_62_PRIME256V1)
            || signature.len() != ES256_SIGNATURE_LEN
        {
            return Ok(false);
        }
        let (r, s) = signature.split_at(ES256_SIGNATURE_LEN / 2);
        let sig =
            EcdsaSig::from_private_components(BigNum::from_slice(r)?, BigNum::from_slice(s)?)?;
        let mut verifier = Verifier::new(MessageDigest::sha256(), key)?;
        verifier.update(message)?;
        verifier.verify(&sig.to_der()?)
    };
    run().unwrap_or(false)
}

/// The payload bytes of a compact JWS **without verifying its signature**: only for a signer
/// reading back its own output (the agent's spool) or a verifier reading back what it verified
/// and stored (the oracle's window rows). `None` when `jws` is not three segments or the payload
/// is not base64url.
#[must_use]
pub fn unverified_payload(jws: &str) -> Option<Vec<u8>> {
    let mut parts = jws.trim().split('.');
    let (Some(_), Some(payload), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return None;
    };
    B64.decode(payload).ok()
}

/// Base64url (no padding) of SHA-256 over the ASCII bytes of a compact JWS: the hash that chains
/// windows (`prev`) and that the transparency log commits to.
#[must_use]
pub fn jws_hash(jws: &str) -> String {
    B64.encode(Sha256::digest(jws.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> SoftwareKey {
        SoftwareKey::generate(2048).expect("keygen")
    }

    fn public(k: &SoftwareKey) -> PKey<Public> {
        k.public_jwk().to_public_key().expect("public")
    }

    /// One prepared verifier answers a stream of signatures exactly as a fresh one would: a
    /// failed verification (forged payload, foreign key's signature, truncated signature) leaves
    /// it able to verify the next good one.
    #[test]
    fn a_prepared_verifier_is_reusable_after_failures() {
        let k = key();
        let other = key();
        let mut verifier = Ps256Verifier::new(&public(&k)).expect("verifier");
        let good: Vec<String> = (0..3)
            .map(|i| sign_compact(&k, "t", format!(r#"{{"i":{i}}}"#).as_bytes()).expect("sign"))
            .collect();
        let foreign = sign_compact(&other, "t", br#"{"i":0}"#).expect("sign");
        let parts: Vec<&str> = good[0].split('.').collect();
        let forged = format!("{}.{}.{}", parts[0], B64.encode(br#"{"i":9}"#), parts[2]);
        let (input, signature) = good[1].rsplit_once('.').expect("segments");
        let mut signature = B64.decode(signature).expect("b64");
        signature.truncate(signature.len() - 3);
        let short = format!("{input}.{}", B64.encode(&signature));
        let outcome = |verifier: &mut Ps256Verifier, jws: &str| {
            decode_header(jws, "t")
                .expect("header")
                .verify_ps256(verifier, SaltPolicy::DigestOnly)
                .map(|(payload, _)| payload)
        };
        for (i, jws) in good.iter().enumerate() {
            assert_eq!(
                outcome(&mut verifier, jws).expect("good signature"),
                format!(r#"{{"i":{i}}}"#).into_bytes()
            );
            for bad in [forged.as_str(), foreign.as_str(), short.as_str()] {
                assert_eq!(
                    outcome(&mut verifier, bad).err(),
                    Some(JwsError::BadSignature)
                );
            }
        }
        let ec = PKey::from_ec_key(
            EcKey::generate(&EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).expect("curve"))
                .expect("ec"),
        )
        .expect("pkey");
        let ec = PKey::public_key_from_der(&ec.public_key_to_der().expect("der")).expect("pub");
        assert!(matches!(
            Ps256Verifier::new(&ec),
            Err(JwsError::UnsupportedAlg(_))
        ));
    }

    #[test]
    fn round_trip_and_tamper() {
        let k = key();
        let jws = sign_compact(&k, "t+jwt", br#"{"a":1}"#).expect("sign");
        let d = decode_header(&jws, "t+jwt").expect("header");
        assert_eq!(d.header.kid, k.kid());
        let (payload, salt) = d
            .verify(&public(&k), SaltPolicy::DigestOnly)
            .expect("verify");
        assert_eq!(payload, br#"{"a":1}"#);
        assert_eq!(salt, SaltLength::Digest);

        // Change one payload character: the signature no longer verifies.
        let parts: Vec<&str> = jws.split('.').collect();
        let forged = format!("{}.{}.{}", parts[0], B64.encode(br#"{"a":2}"#), parts[2]);
        let err = decode_header(&forged, "t+jwt")
            .expect("header")
            .verify(&public(&k), SaltPolicy::DigestOnly);
        assert_eq!(err.err(), Some(JwsError::BadSignature));

        // Another key does not verify it either.
        let other = key();
        let err = decode_header(&jws, "t+jwt")
            .expect("header")
            .verify(&public(&other), SaltPolicy::DigestOnly);
        assert_eq!(err.err(), Some(JwsError::BadSignature));
    }

    #[test]
    fn header_rules() {
        let enc = |h: &str| {
            format!(
                "{}.{}.{}",
                B64.encode(h),
                B64.encode("{}"),
                B64.encode([0u8; 256])
            )
        };
        let cases = [
            (r#"{"alg":"none","kid":"k","typ":"t"}"#, "unsupported_alg"),
            (r#"{"alg":"RS256","kid":"k","typ":"t"}"#, "unsupported_alg"),
            (r#"{"alg":"PS256","kid":"k","typ":"x"}"#, "wrong_typ"),
            (r#"{"alg":"PS256","kid":"k"}"#, "wrong_typ"),
            (
                r#"{"alg":"PS256","kid":"k","typ":"t","jwk":{}}"#,
                "forbidden_header",
            ),
            (
                r#"{"alg":"PS256","kid":"k","typ":"t","crit":["b64"]}"#,
                "forbidden_header",
            ),
            (r#"{"alg":"PS256","typ":"t"}"#, "missing_kid"),
            (r#"[1]"#, "malformed_jws"),
        ];
        for (header, code) in cases {
            let err = decode_header(&enc(header), "t").err().map(|e| e.code());
            assert_eq!(err, Some(code), "{header}");
        }
        assert_eq!(
            decode_header("a.b", "t").err().map(|e| e.code()),
            Some("malformed_jws")
        );
        assert_eq!(
            decode_header("a.b.c.d", "t").err().map(|e| e.code()),
            Some("malformed_jws")
        );
        assert_eq!(
            decode_header("a..c", "t").err().map(|e| e.code()),
            Some("malformed_jws")
        );
    }

    /// Step 1 checks the payload segment too (protocol.md §3.4): a payload that is not
    /// base64url is `malformed_jws` before the key is looked up or the signature checked, with
    /// a header that would otherwise pass.
    #[test]
    fn a_payload_that_is_not_base64url_fails_step_1() {
        let header = B64.encode(r#"{"alg":"PS256","kid":"k","typ":"t"}"#);
        let signature = B64.encode([0u8; 256]);
        let good = B64.encode(r#"{"v":1}"#);
        assert!(decode_header(&format!("{header}.{good}.{signature}"), "t").is_ok());
        for payload in [
            "eyJ2Ijox+Q",    // standard alphabet
            "eyJ2IjoxfQ==",  // padding
            "eyJ2Ijox/Q",    // standard alphabet
            "eyJ2Ijox fQ",   // whitespace
            "eyJ2IjoxfQ\n",  // an escape, not base64
            "eyJ2IjoxfQA",   // 11 characters, 8 octets: valid
            "eyJ2IjoxfQAAA", // 13 characters: 1 more than a multiple of 4
            "eyJ2IjoxfR",    // non-zero bits after the last octet
            "eyJ2IjoxfQAB",  // non-zero bits after the last octet (3-char group)
            "é",
        ] {
            let jws = format!("{header}.{payload}.{signature}");
            let decodes = B64.decode(payload).is_ok();
            assert_eq!(is_base64url(payload), decodes, "{payload}");
            if !decodes {
                assert_eq!(
                    decode_header(&jws, "t").err(),
                    Some(JwsError::Malformed("payload is not base64url".into())),
                    "{payload}"
                );
            }
        }
    }

    proptest::proptest! {
        /// The step 1 check accepts exactly what the step 4 decoder decodes.
        #[test]
        fn is_base64url_agrees_with_the_decoder(s in "[A-Za-z0-9_+/=.-]{0,12}") {
            proptest::prop_assert_eq!(is_base64url(&s), B64.decode(&s).is_ok(), "{}", s);
        }

        /// Every encoding is accepted, whatever its length.
        #[test]
        fn encodings_are_base64url(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..200)) {
            proptest::prop_assert!(is_base64url(&B64.encode(&bytes)));
        }
    }

    /// A signature made with the maximum salt (older TPMs) verifies only under the TPM policy.
    #[test]
    fn maximum_salt_only_when_allowed() {
        let k = key();
        let header = B64.encode(r#"{"alg":"PS256","kid":"k","typ":"t"}"#);
        let input = format!("{header}.{}", B64.encode("{}"));
        let mut signer = Signer::new(MessageDigest::sha256(), &k.key).expect("signer");
        signer.set_rsa_padding(Padding::PKCS1_PSS).expect("pad");
        signer
            .set_rsa_mgf1_md(MessageDigest::sha256())
            .expect("mgf");
        signer
            .set_rsa_pss_saltlen(RsaPssSaltlen::custom(222))
            .expect("salt");
        signer.update(input.as_bytes()).expect("update");
        let jws = format!(
            "{input}.{}",
            B64.encode(signer.sign_to_vec().expect("sign"))
        );
        let strict = decode_header(&jws, "t")
            .expect("h")
            .verify(&public(&k), SaltPolicy::DigestOnly);
        assert_eq!(strict.err(), Some(JwsError::BadSignature));
        let (_, salt) = decode_header(&jws, "t")
            .expect("h")
            .verify(&public(&k), SaltPolicy::DigestOrMaximum)
            .expect("tpm policy");
        assert_eq!(salt, SaltLength::Maximum);
        // A prepared verifier: the same answers, in either order.
        let mut verifier = Ps256Verifier::new(&public(&k)).expect("verifier");
        let signature = B64
            .decode(jws.rsplit('.').next().expect("sig"))
            .expect("b64");
        for _ in 0..2 {
            assert_eq!(
                verifier.verify(input.as_bytes(), &signature, SaltPolicy::DigestOnly),
                None
            );
            assert_eq!(
                verifier.verify(input.as_bytes(), &signature, SaltPolicy::DigestOrMaximum),
                Some(SaltLength::Maximum)
            );
        }
    }

    #[test]
    fn unverified_payload_reads_back_what_was_signed() {
        let k = key();
        let jws = sign_compact(&k, "t+jwt", br#"{"a":1}"#).expect("sign");
        assert_eq!(
            unverified_payload(&jws).as_deref(),
            Some(&br#"{"a":1}"#[..])
        );
        assert_eq!(unverified_payload("a.b"), None);
        assert_eq!(unverified_payload("a.!!.c"), None);
    }

    #[test]
    fn key_round_trips_through_pkcs8() {
        let k = key();
        let again = SoftwareKey::from_pkcs8_der(&k.to_pkcs8_der().expect("der")).expect("load");
        assert_eq!(again.kid(), k.kid());
        assert!(!format!("{k:?}").contains("BEGIN"));
    }
}
