//! Node enrollment: a token holder registers a node's public key and grid zone; a TPM-backed node
//! also proves, Keylime-registrar style, that its key lives in a TPM (see docs/tpm.md,
//! "Enrollment protocol").

use super::parse_json;
use super::problem::ApiError;
use crate::AppState;
use crate::attestation::{
    AttestationError, check_ak, check_credential, make_credential, verify_certify,
    verify_ek_certificate,
};
use crate::auth::{self, Role};
use crate::storage::entities::{enrollment_challenge, node};
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use utoipa::ToSchema;
use wattest_shared::{AttestationLevel, RsaJwk};

/// How long a TPM enrollment challenge may be answered after it was issued.
pub const CHALLENGE_TTL: chrono::Duration = chrono::Duration::minutes(5);
/// Size of the credential secret protected by MakeCredential, octets (the SHA-256 digest size,
/// the largest a TPM2B_DIGEST for an SHA-256 EK carries).
pub const CREDENTIAL_SECRET_LEN: usize = 32;

/// Body of `POST /v1/nodes`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EnrollRequest {
    /// Operator-chosen node name, 1–128 characters, no control characters.
    pub name: String,
    /// Grid zone the node draws power from, case-insensitive and stored canonical (upper-cased;
    /// an Ember region as the region is named): ISO 3166-1 alpha-2 (`BE`); a sub-zone of an
    /// alpha-2 country in the Electricity Maps style, the country code followed by one or more
    /// parts of ASCII letters and digits each after a `-` (`DK-DK1`, `SE-SE3`, `US-CAL-CISO`);
    /// ISO alpha-3 (`BEL`, stored as `BE`); or an Ember region (`EU`, `G7`, `World`). A
    /// sub-zone is not checked against a list of real zones: the static table gives it its
    /// country's figure, and a live provider is asked for the sub-zone by name. An empty part
    /// or one with other characters (`BE-`, `BE--X`, `BE-X_Y`), a sub-zone of anything but an
    /// alpha-2 code (`BEL-X`), or a zone not in the intensity tables is 422 `unknown_zone`.
    pub zone: String,
    /// The node's RSA public key (2048–4096 bits, e = 65537) as a JWK. With `attestation`, it
    /// must be the key that `certify_info` certifies. Read as any JSON value and checked after
    /// the name and zone: a value that is not such a key (not an object, `kty` other than
    /// `RSA`, `n` or `e` missing or not strings, a bad encoding, size or exponent) is 422
    /// `invalid_key`; only a body without `public_key` is 400 `invalid_request`.
    #[schema(value_type = RsaJwk)]
    pub public_key: serde_json::Value,
    /// Evidence that `public_key` lives in a TPM. Absent or `null`: a software key (`software`).
    #[serde(default, deserialize_with = "wattest_shared::json::optional_object")]
    pub attestation: Option<TpmAttestation>,
}

/// The only attestation type so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AttestationType {
    /// TPM 2.0: EK, AK, and TPM2_Certify of the signing key.
    Tpm,
}

/// TPM enrollment evidence. Every field is base64url without padding of the TPM structure
/// marshalled as TPM 2.0 Library Part 2 defines it (docs/tpm.md gives each layout).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TpmAttestation {
    /// Always `tpm`.
    #[serde(rename = "type")]
    pub type_: AttestationType,
    /// EK public area, `TPM2B_PUBLIC` (RSA-2048, TCG default EK template).
    pub ek_public: String,
    /// EK certificate (DER X.509, as read from NV index 0x01c00002). Required: an EK without a
    /// manufacturer certificate could be a software key.
    #[serde(default)]
    pub ek_certificate: Option<String>,
    /// AK public area, `TPM2B_PUBLIC`: restricted RSA signing key.
    pub ak_public: String,
    /// Node signing key public area, `TPM2B_PUBLIC`.
    pub signing_public: String,
    /// `TPMS_ATTEST` of TPM2_Certify (without the TPM2B size) with `extraData` =
    /// SHA-256(`signing_public` octets).
    pub certify_info: String,
    /// `TPMT_SIGNATURE` by the AK over `certify_info`.
    pub certify_signature: String,
}

/// The enrolled node.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct EnrolledNodeResponse {
    /// Node id (UUID): goes into every window's `node_id`.
    pub node_id: String,
    /// Name.
    pub name: String,
    /// Canonical grid zone.
    pub zone: String,
    /// RFC 7638 thumbprint of the key: the `kid` of every window.
    pub kid: String,
    /// Key protection proven at enrollment.
    pub attestation_level: AttestationLevel,
    /// Enrollment time.
    pub enrolled_at: DateTime<Utc>,
}

/// `202` answer to a TPM enrollment: the credential challenge.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CredentialChallenge {
    /// Where to answer: `POST /v1/nodes/challenges/{challenge_id}`.
    pub challenge_id: String,
    /// `TPM2B_ID_OBJECT` from MakeCredential (base64url, with its u16 size).
    pub credential_blob: String,
    /// `TPM2B_ENCRYPTED_SECRET` from MakeCredential (base64url, with its u16 size).
    pub encrypted_secret: String,
    /// The answer is refused after this time.
    pub expires_at: DateTime<Utc>,
}

/// Body of `POST /v1/nodes/challenges/{challenge_id}`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChallengeAnswer {
    /// The secret TPM2_ActivateCredential recovered (base64url, without TPM2B size).
    pub secret: String,
}

/// Either a node enrolled now or a TPM challenge to answer.
pub enum EnrollOutcome {
    /// `201`.
    Enrolled(EnrolledNodeResponse),
    /// `202`.
    Challenge(CredentialChallenge),
}

impl axum::response::IntoResponse for EnrollOutcome {
    fn into_response(self) -> axum::response::Response {
        match self {
            Self::Enrolled(body) => (StatusCode::CREATED, Json(body)).into_response(),
            Self::Challenge(body) => (StatusCode::ACCEPTED, Json(body)).into_response(),
        }
    }
}

/// Enrolls a node (requires a `node` token). Without `attestation` the node is enrolled at once
/// with level `software`; with TPM evidence the oracle checks it and answers `202` with a
/// credential challenge (see `POST /v1/nodes/challenges/{challenge_id}`).
#[utoipa::path(post, path = "/v1/nodes", tag = "nodes", request_body = EnrollRequest, security(("bearer" = [])), responses(
    (status = 201, description = "Enrolled (software key)", body = EnrolledNodeResponse),
    (status = 202, description = "TPM evidence accepted; answer the credential challenge", body = CredentialChallenge),
    (status = 400, description = "invalid_request (also: a TPM field that is not base64url)", body = super::problem::Problem, content_type = "application/problem+json"),
    (status = 401, description = "missing_token / invalid_token", body = super::problem::Problem, content_type = "application/problem+json"),
    (status = 403, description = "forbidden_role; enrollment_limit: the token has enrolled its `--max-enrollments` nodes", body = super::problem::Problem, content_type = "application/problem+json"),
    (status = 409, description = "key_already_enrolled", body = super::problem::Problem, content_type = "application/problem+json"),
    (status = 422, description = "unknown_zone / invalid_key / invalid_name; TPM evidence: ek_cert_required, ek_cert_malformed, ek_cert_untrusted, ek_cert_key_mismatch, ek_unsuitable, ak_not_fixed_tpm, ak_not_fixed_parent, ak_not_sensitive_data_origin, ak_not_restricted, ak_not_signing, ak_can_decrypt, ak_key_too_small, certify_bad_signature, certify_bad_magic, certify_wrong_type, certify_nonce_mismatch, certify_name_mismatch, certify_key_mismatch, signing_key_unsuitable, malformed_tpm_structure, unsupported_tpm_algorithm", body = super::problem::Problem, content_type = "application/problem+json"),
))]
#[tracing::instrument(skip_all)]
pub async fn enroll(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<EnrollOutcome, ApiError> {
    let token = auth::require(&state.storage, &headers, &[Role::Node]).await?;
    super::require_json(&headers)?;
    let request: EnrollRequest = parse_json(&body)?;
    let name = request.name.trim();
    if name.is_empty() || name.chars().count() > 128 || name.chars().any(char::is_control) {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_name",
            "name must be 1–128 characters without control characters",
        ));
    }
    let zone = state.carbon.zone(&request.zone).map_err(|err| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "unknown_zone",
            err.to_string(),
        )
    })?;
    let jwk = RsaJwk::from_json(&request.public_key)
        .and_then(|jwk| jwk.to_public_key().map(|_| jwk))
        .map_err(|err| {
            ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_key",
                format!("public_key: {err}"),
            )
        })?;
    let jwk = RsaJwk {
        kid: None,
        alg: None,
        use_: None,
        ..jwk
    };
    let kid = jwk.thumbprint();
    refuse_enrolled_key(&state, &kid).await?;
    let public_jwk = serde_json::to_string(&jwk).map_err(|err| ApiError::internal(&err))?;
    match request.attestation {
        None => {
            let response = insert_node(
                &state,
                &token.id,
                name,
                &zone.name,
                kid,
                public_jwk,
                AttestationLevel::Software,
            )
            .await?;
            Ok(EnrollOutcome::Enrolled(response))
        }
        Some(attestation) => {
            let evidence = Evidence::decode(&attestation)?;
            let roots = state.settings.ek_roots.clone();
            let expected_kid = kid.clone();
            // RSA verification, chain building and OAEP: CPU work, off the async executor.
            let (challenge, secret_sha256) = tokio::task::spawn_blocking(move || {
                check_evidence(&evidence, &roots, &expected_kid)
            })
            .await
            .map_err(|err| ApiError::internal(&err))??;
            let now = Utc::now();
            let row = enrollment_challenge::Model {
                id: uuid::Uuid::new_v4().to_string(),
                name: name.to_owned(),
                zone: zone.name.clone(),
                kid,
                public_jwk,
                secret_sha256: hex::encode(secret_sha256),
                created_at: now,
                expires_at: now + CHALLENGE_TTL,
            };
            let response = CredentialChallenge {
                challenge_id: row.id.clone(),
                credential_blob: B64.encode(challenge.credential_blob),
                encrypted_secret: B64.encode(challenge.encrypted_secret),
                expires_at: row.expires_at,
            };
            state.storage.insert_challenge(row, now).await?;
            tracing::info!(challenge_id = %response.challenge_id, "TPM evidence accepted; credential challenge issued.");
            Ok(EnrollOutcome::Challenge(response))
        }
    }
}

/// Answers a TPM enrollment challenge (requires a `node` token): the secret that
/// TPM2_ActivateCredential recovered. One attempt per challenge: a wrong answer consumes it.
#[utoipa::path(post, path = "/v1/nodes/challenges/{challenge_id}", tag = "nodes", request_body = ChallengeAnswer, security(("bearer" = [])),
    params(("challenge_id" = String, Path, description = "From the 202 answer of POST /v1/nodes")),
    responses(
    (status = 201, description = "Enrolled with attestation level tpm", body = EnrolledNodeResponse),
    (status = 400, description = "invalid_request", body = super::problem::Problem, content_type = "application/problem+json"),
    (status = 401, description = "missing_token / invalid_token", body = super::problem::Problem, content_type = "application/problem+json"),
    (status = 403, description = "forbidden_role / credential_mismatch / enrollment_limit (the token has enrolled its `--max-enrollments` nodes)", body = super::problem::Problem, content_type = "application/problem+json"),
    (status = 404, description = "challenge_not_found (unknown, already answered, or expired and purged)", body = super::problem::Problem, content_type = "application/problem+json"),
    (status = 409, description = "key_already_enrolled", body = super::problem::Problem, content_type = "application/problem+json"),
    (status = 410, description = "challenge_expired", body = super::problem::Problem, content_type = "application/problem+json"),
))]
#[tracing::instrument(skip_all, fields(challenge_id = %challenge_id))]
pub async fn answer_challenge(
    State(state): State<AppState>,
    Path(challenge_id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<(StatusCode, Json<EnrolledNodeResponse>), ApiError> {
    let token = auth::require(&state.storage, &headers, &[Role::Node]).await?;
    super::require_json(&headers)?;
    let answer: ChallengeAnswer = parse_json(&body)?;
    let secret = decode_field("secret", &answer.secret)?;
    // Step 1: take the challenge out, so that whatever happens next it is answered only once.
    let challenge = state.storage.take_challenge(&challenge_id).await?.ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "challenge_not_found",
            "no pending enrollment with this challenge id (already answered, or never issued); enroll again",
        )
    })?;
    // Step 2: in time.
    if Utc::now() >= challenge.expires_at {
        return Err(ApiError::new(
            StatusCode::GONE,
            "challenge_expired",
            format!(
                "the challenge expired at {}; enroll again",
                challenge.expires_at.to_rfc3339()
            ),
        ));
    }
    // Step 3: the TPM holding the EK recovered the secret bound to the AK's name. Compared as
    // SHA-256 digests, in constant time: the secret itself was never stored.
    let expected = hex::decode(&challenge.secret_sha256).map_err(|err| ApiError::internal(&err))?;
    check_credential(&expected, &Sha256::digest(&secret)).map_err(attestation_error)?;
    tracing::debug!("Credential activation answer matches.");
    // Step 4: the key may have been enrolled by another request since the challenge.
    refuse_enrolled_key(&state, &challenge.kid).await?;
    let response = insert_node(
        &state,
        &token.id,
        &challenge.name,
        &challenge.zone,
        challenge.kid,
        challenge.public_jwk,
        AttestationLevel::Tpm,
    )
    .await?;
    Ok((StatusCode::CREATED, Json(response)))
}

async fn refuse_enrolled_key(state: &AppState, kid: &str) -> Result<(), ApiError> {
    if state.storage.node_by_kid(kid).await?.is_some() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "key_already_enrolled",
            format!("a node with key {kid} is already enrolled; generate a new key for a new node"),
        ));
    }
    Ok(())
}

/// Enrolls the node, counting it against the enrolling token's `max_enrollments`.
///
/// # Errors
/// 403 `enrollment_limit` when the token has enrolled its nodes already (nothing stored);
/// 409 `key_already_enrolled` for a key enrolled meanwhile; 500 on database failure.
async fn insert_node(
    state: &AppState,
    token_id: &str,
    name: &str,
    zone: &str,
    kid: String,
    public_jwk: String,
    level: AttestationLevel,
) -> Result<EnrolledNodeResponse, ApiError> {
    let row = node::Model {
        id: uuid::Uuid::new_v4().to_string(),
        name: name.to_owned(),
        zone: zone.to_owned(),
        kid: kid.clone(),
        public_jwk,
        attestation_level: level.as_str().into(),
        enrolled_at: Utc::now(),
        last_seq: 0,
        last_hash: None,
        last_end: None,
        flag: None,
    };
    let response = EnrolledNodeResponse {
        node_id: row.id.clone(),
        name: row.name.clone(),
        zone: row.zone.clone(),
        kid,
        attestation_level: level,
        enrolled_at: row.enrolled_at,
    };
    let kid = row.kid.clone();
    // Counted first: a node inserted past the cap could not be taken back as simply as a count
    // that a failed insert leaves behind (a lost enrollment, never an extra one).
    if !state.storage.take_enrollment(token_id).await? {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "enrollment_limit",
            "this token has enrolled as many nodes as it may (`token create --max-enrollments`); use another node token",
        ));
    }
    if let Err(err) = state.storage.insert_node(row).await {
        // Two enrollments of one key racing past the check: the unique index on kid decides.
        refuse_enrolled_key(state, &kid).await?;
        return Err(err.into());
    }
    tracing::info!(node_id = %response.node_id, zone = %response.zone, attestation = level.as_str(), "Node enrolled.");
    Ok(response)
}

/// The TPM evidence, base64-decoded.
struct Evidence {
    ek_public: Vec<u8>,
    ek_certificate: Option<Vec<u8>>,
    ak_public: Vec<u8>,
    signing_public: Vec<u8>,
    certify_info: Vec<u8>,
    certify_signature: Vec<u8>,
}

impl Evidence {
    fn decode(a: &TpmAttestation) -> Result<Self, ApiError> {
        Ok(Self {
            ek_public: decode_field("attestation.ek_public", &a.ek_public)?,
            ek_certificate: a
                .ek_certificate
                .as_deref()
                .map(|c| decode_field("attestation.ek_certificate", c))
                .transpose()?,
            ak_public: decode_field("attestation.ak_public", &a.ak_public)?,
            signing_public: decode_field("attestation.signing_public", &a.signing_public)?,
            certify_info: decode_field("attestation.certify_info", &a.certify_info)?,
            certify_signature: decode_field("attestation.certify_signature", &a.certify_signature)?,
        })
    }
}

/// What MakeCredential produced for the agent.
struct Challenge {
    credential_blob: Vec<u8>,
    encrypted_secret: Vec<u8>,
}

/// The qualifying data (`extraData`) TPM2_Certify must carry: SHA-256 of the `signing_public`
/// octets (the marshalled `TPM2B_PUBLIC`). Freshness comes from the credential challenge; this
/// binds the certification to this protocol and key without a round trip.
#[must_use]
pub fn certify_qualifying_data(signing_public: &[u8]) -> [u8; 32] {
    Sha256::digest(signing_public).into()
}

/// Checks the evidence in protocol order and makes the credential challenge; returns it with
/// SHA-256 of the secret.
fn check_evidence(
    e: &Evidence,
    roots: &[openssl::x509::X509],
    expected_kid: &str,
) -> Result<(Challenge, [u8; 32]), ApiError> {
    // Step 1: the AK is a restricted signing key that never left its TPM.
    let ak = check_ak(&e.ak_public).map_err(attestation_error)?;
    tracing::debug!("AK attributes accepted.");
    // Step 2: the EK belongs to a TPM whose manufacturer a configured root vouches for.
    let certificate = e.ek_certificate.as_deref().ok_or_else(|| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "ek_cert_required",
            "attestation.ek_certificate is required: without a manufacturer certificate the EK could be a software key; enroll with --signer software instead",
        )
    })?;
    if roots.is_empty() {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "ek_cert_untrusted",
            "this oracle has no EK CA roots configured (wattest-oracle serve --ek-ca-dir DIR), so no EK certificate can be trusted",
        ));
    }
    verify_ek_certificate(certificate, &e.ek_public, roots).map_err(attestation_error)?;
    tracing::debug!("EK certificate chains to a configured root.");
    // Step 3: the AK certified the signing key, for this enrollment.
    let certified = verify_certify(
        &e.ak_public,
        &e.signing_public,
        &e.certify_info,
        &e.certify_signature,
        &certify_qualifying_data(&e.signing_public),
    )
    .map_err(attestation_error)?;
    if certified.jwk.thumbprint() != expected_kid {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "certify_key_mismatch",
            "public_key is not the signing key certified by the AK (signing_public)",
        ));
    }
    tracing::debug!("TPM2_Certify of the signing key verified.");
    // Step 4: a secret only the TPM holding both the EK and the AK can recover.
    let mut secret = [0u8; CREDENTIAL_SECRET_LEN];
    openssl::rand::rand_bytes(&mut secret).map_err(|err| ApiError::internal(&err))?;
    let (credential_blob, encrypted_secret) =
        make_credential(&e.ek_public, &ak.name, &secret).map_err(attestation_error)?;
    Ok((
        Challenge {
            credential_blob,
            encrypted_secret,
        },
        Sha256::digest(secret).into(),
    ))
}

fn decode_field(field: &str, value: &str) -> Result<Vec<u8>, ApiError> {
    B64.decode(value).map_err(|err| {
        ApiError::bad_request(format!("{field} is not base64url without padding: {err}"))
    })
}

/// Evidence errors: 403 for a wrong credential answer, 500 for OpenSSL failures on valid input,
/// 422 with the error's own code for everything else.
fn attestation_error(err: AttestationError) -> ApiError {
    match err {
        AttestationError::Crypto(_) => ApiError::internal(&err),
        AttestationError::CredentialMismatch => ApiError::new(
            StatusCode::FORBIDDEN,
            err.code(),
            "the answer is not the secret of the credential challenge; the challenge is consumed, enroll again",
        ),
        _ => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            err.code(),
            err.to_string(),
        ),
    }
}
