//! Reading certificates: a filtered list of summaries, and one certificate with its JWS.

use super::problem::ApiError;
use crate::AppState;
use crate::storage::ledger::revocation;
use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use wattest_shared::CertificateClaims;
use wattest_shared::api::CertificateSummary;
use wattest_shared::credential::{VC_MEDIA_TYPE, VC_TYP, verifiable_credential};
use wattest_shared::jws::sign_compact;
use wattest_shared::transparency::InclusionProof;

/// The route of the JSON Schemas of the VC form, `/v1/schemas/{file}` (the name is kept for the
/// router; it serves [`SUBJECT_SCHEMA_FILE`] and [`CREDENTIAL_SCHEMA_FILE`]).
pub const SUBJECT_SCHEMA_PATH: &str = "/v1/schemas/{file}";
/// Where the schemas are served, before the file name.
pub const SCHEMAS_PREFIX: &str = "/v1/schemas/";
/// The schema of the VC form's `credentialSubject`.
pub const SUBJECT_SCHEMA_FILE: &str = "energy-certificate-subject.json";
/// The schema of the whole VC form, named by its `credentialSchema` (type `JsonSchema`).
pub const CREDENTIAL_SCHEMA_FILE: &str = "energy-certificate-credential.json";

/// The JSON Schemas (2020-12) of certificates in VC form: `energy-certificate-credential.json`
/// validates the whole credential (its `credentialSchema`), `energy-certificate-subject.json`
/// its `credentialSubject` (the credential schema refers to it). `$id` is the URL served.
#[utoipa::path(get, path = "/v1/schemas/{file}", tag = "certificates", params(
    ("file" = String, Path, description = "`energy-certificate-credential.json` (the whole credential) or `energy-certificate-subject.json` (its subject)", example = "energy-certificate-credential.json"),
), responses(
    (status = 200, description = "JSON Schema", body = Object, content_type = "application/schema+json"),
    (status = 404, description = "not_found: no such schema", body = super::problem::Problem, content_type = "application/problem+json"),
))]
pub async fn subject_schema(
    State(state): State<AppState>,
    Path(file): Path<String>,
) -> Result<Response, ApiError> {
    let text = match file.as_str() {
        SUBJECT_SCHEMA_FILE => wattest_schema::ENERGY_CERTIFICATE_SUBJECT_SCHEMA,
        CREDENTIAL_SCHEMA_FILE => wattest_schema::ENERGY_CERTIFICATE_CREDENTIAL_SCHEMA,
        _ => return Err(ApiError::not_found(format!("no schema {file}"))),
    };
    let mut schema: serde_json::Value =
        serde_json::from_str(text).map_err(|err| ApiError::internal(&err))?;
    if let Some(object) = schema.as_object_mut() {
        object.insert("$id".into(), schema_url(&state, &file).into());
    }
    let body = serde_json::to_string_pretty(&schema).map_err(|err| ApiError::internal(&err))?;
    Ok(([(header::CONTENT_TYPE, "application/schema+json")], body).into_response())
}

/// The URL at which the oracle serves the schema `file`.
fn schema_url(state: &AppState, file: &str) -> String {
    format!(
        "{}{SCHEMAS_PREFIX}{file}",
        state.settings.issuer.trim_end_matches('/')
    )
}

/// Filters of `GET /v1/certificates`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Only certificates of this job id.
    pub job: Option<String>,
    /// Only certificates of this node id.
    pub node: Option<String>,
    /// At most this many, newest first (1–1000, default 100).
    #[param(minimum = 1, maximum = 1000, default = 100)]
    pub limit: Option<u64>,
}

/// A page of certificate summaries.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CertificateList {
    /// Newest first, each with its certificate's revocation `state`.
    #[schema(value_type = Vec<CertificateSummary>)]
    pub certificates: Vec<CertificateSummary>,
}

/// One certificate.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CertificateResponse {
    /// Certificate id.
    pub id: String,
    /// The signed certificate: a compact JWS (`typ` `wattest-cert+jwt`, PS256 or ES256: ES256
    /// once the oracle's key is rotated with `keys rotate --alg es256`) verifiable with
    /// `/.well-known/jwks.json` or `wattest-verify`.
    pub jws: String,
    /// base64url SHA-256 of `jws`.
    pub hash: String,
    /// The JWS payload, decoded (for convenience; the JWS is authoritative).
    pub claims: CertificateClaims,
    /// Revocation status at the time of this response.
    pub status: CertificateStatus,
    /// Proof that `jws` is in the transparency log, against the current signed checkpoint.
    pub inclusion_proof: InclusionProof,
}

/// Whether a certificate has been revoked.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
pub struct CertificateStatus {
    /// The certificate this status is for (its `jti`).
    pub certificate_id: String,
    /// `valid` or `revoked`.
    #[schema(value_type = CertificateState)]
    pub state: String,
    /// When it was revoked (only when `revoked`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub revoked_at: Option<chrono::DateTime<chrono::Utc>>,
    /// Why (only when `revoked`): one of the revocation reasons.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false, value_type = Option<RevocationReason>)]
    pub reason: Option<String>,
}

impl CertificateStatus {
    fn of(certificate_id: &str, revocation: Option<revocation::Model>) -> Self {
        let certificate_id = certificate_id.to_owned();
        match revocation {
            Some(r) => Self {
                certificate_id,
                state: CertificateState::Revoked.as_str().into(),
                revoked_at: Some(r.revoked_at),
                reason: Some(r.reason),
            },
            None => Self {
                certificate_id,
                state: CertificateState::Valid.as_str().into(),
                revoked_at: None,
                reason: None,
            },
        }
    }
}

pub use wattest_shared::api::CertificateState;

/// Why a certificate was revoked.
// Schema only: `RevocationRequest::reason` is a string checked against `REVOCATION_REASONS`,
// which these variants name in the same order (a test in oracle/tests/api.rs compares them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RevocationReason {
    /// The measurements were wrong.
    MeasurementError,
    /// The node was compromised.
    NodeCompromise,
    /// The node's key was compromised.
    KeyCompromise,
    /// Replaced by another certificate.
    Superseded,
    /// Should not have been issued.
    IssuedInError,
    /// Any other reason.
    Other,
}

/// Reasons a certificate may be revoked for.
pub const REVOCATION_REASONS: [&str; 6] = [
    "measurement_error",
    "node_compromise",
    "key_compromise",
    "superseded",
    "issued_in_error",
    "other",
];

/// Body of `POST /v1/certificates/{id}/revocation`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RevocationRequest {
    /// One of `measurement_error`, `node_compromise`, `key_compromise`, `superseded`,
    /// `issued_in_error`, `other`.
    #[schema(value_type = RevocationReason)]
    pub reason: String,
}

/// Lists certificates, newest first (role auditor or compliance; admin passes).
#[utoipa::path(get, path = "/v1/certificates", tag = "certificates", params(ListQuery), security(("bearer" = [])), responses(
    (status = 200, description = "Certificates", body = CertificateList),
    (status = 400, description = "invalid_request", body = super::problem::Problem, content_type = "application/problem+json"),
))]
pub async fn list(
    State(state): State<AppState>,
    headers: HeaderMap,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<CertificateList>, ApiError> {
    crate::auth::require(&state.storage, &headers, super::CERTIFICATE_READERS).await?;
    let Query(q) = query.map_err(|err| ApiError::bad_request(err.body_text()))?;
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::bad_request("limit must be between 1 and 1000"));
    }
    let rows = state
        .storage
        .list_certificates(q.job.as_deref(), q.node.as_deref(), limit)
        .await?;
    Ok(Json(CertificateList {
        certificates: summaries(&state, &rows).await?,
    }))
}

/// The summaries of `rows`, each with its revocation state as it stands now.
///
/// # Errors
/// 500 on database failure.
pub(crate) async fn summaries(
    state: &AppState,
    rows: &[crate::storage::entities::certificate::Model],
) -> Result<Vec<CertificateSummary>, ApiError> {
    let revoked = revoked_among(state, rows.iter().map(|r| r.id.clone())).await?;
    Ok(rows
        .iter()
        .map(|row| CertificateSummary {
            state: if revoked.contains(&row.id) {
                CertificateState::Revoked
            } else {
                CertificateState::Valid
            },
            ..CertificateSummary::from(row)
        })
        .collect())
}

/// Which of the certificates `ids` are revoked, read in chunks of 500 ids (a query's
/// parameters stay under SQLite's oldest limit of 999).
async fn revoked_among(
    state: &AppState,
    ids: impl Iterator<Item = String>,
) -> Result<std::collections::HashSet<String>, ApiError> {
    use sea_orm::{ColumnTrait as _, EntityTrait as _, QueryFilter as _, QuerySelect as _};
    let ids: Vec<String> = ids.collect();
    let mut revoked = std::collections::HashSet::new();
    for chunk in ids.chunks(500) {
        let found: Vec<String> = revocation::Entity::find()
            .select_only()
            .column(revocation::Column::CertificateId)
            .filter(revocation::Column::CertificateId.is_in(chunk.iter().cloned()))
            .into_tuple()
            .all(state.storage.db())
            .await
            .map_err(|err| ApiError::from(crate::storage::StorageError::from(err)))?;
        revoked.extend(found);
    }
    Ok(revoked)
}

/// One certificate (role auditor or compliance; admin passes): the bundle (JWS, decoded
/// claims, revocation status, inclusion proof). With
/// `Accept: application/jose` the body is the bare compact JWS; with `Accept:
/// application/vc+jwt` it is the certificate as a W3C Verifiable Credential (VC-JOSE-COSE, `typ`
/// `vc+jwt`, signed by the same oracle key), which follows
/// `/v1/schemas/energy-certificate-credential.json` and carries a `credentialStatus` naming
/// `/v1/certificates/{id}/status`. A revoked certificate is not issued as a new VC (410
/// `certificate_revoked`); its bundle and JWS stay available.
#[utoipa::path(get, path = "/v1/certificates/{id}", tag = "certificates", params(("id" = String, Path, description = "Certificate id")), security(("bearer" = [])), responses(
    (status = 200, description = "The certificate bundle (`application/json`, the default); with `Accept: application/jose`, the bare compact JWS; with `Accept: application/vc+jwt`, the certificate as a Verifiable Credential (compact JWS)", content(
        (CertificateResponse = "application/json"),
        (String = "application/jose"),
        (String = "application/vc+jwt"),
    )),
    (status = 404, description = "not_found", body = super::problem::Problem, content_type = "application/problem+json"),
    (status = 410, description = "certificate_revoked: the certificate is revoked and is not issued as a Verifiable Credential (`Accept: application/vc+jwt`); the bundle and the JWS stay available", body = super::problem::Problem, content_type = "application/problem+json"),
    (status = 406, description = "not_acceptable: the Accept header admits none of the three representations", body = super::problem::Problem, content_type = "application/problem+json"),
))]
pub async fn get_one(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    crate::auth::require(&state.storage, &headers, super::CERTIFICATE_READERS).await?;
    // Past authentication, every answer depends on `Accept` (the representation, 406, 410, or
    // a 404 that an unacceptable Accept would have made a 406): caches are told so (RFC 9110
    // §12.5.5).
    let mut response = match represent(&state, &id, &headers).await {
        Ok(response) => response,
        Err(err) => err.into_response(),
    };
    response
        .headers_mut()
        .append(header::VARY, HeaderValue::from_static("Accept"));
    Ok(response)
}

/// The certificate `id` in the representation `headers`' `Accept` asks for.
async fn represent(state: &AppState, id: &str, headers: &HeaderMap) -> Result<Response, ApiError> {
    let Some(representation) = Representation::negotiate(headers) else {
        return Err(ApiError::new(
            StatusCode::NOT_ACCEPTABLE,
            "not_acceptable",
            "a certificate is served as application/json (the bundle), application/jose or application/vc+jwt",
        ));
    };
    let Some(row) = state.storage.certificate(id).await? else {
        return Err(ApiError::not_found(format!("no certificate {id}")));
    };
    if representation == Representation::Jose {
        let mut response = row.jws.into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/jose"),
        );
        return Ok(response);
    }
    let claims: CertificateClaims =
        serde_json::from_str(&row.claims).map_err(|err| ApiError::internal(&err))?;
    if representation == Representation::Vc {
        // A VC is issued on request: a revoked certificate gets none (a relying party holding an
        // older one finds the revocation through its credentialStatus).
        if let Some(revoked) = state.storage.revocation(&row.id).await? {
            return Err(ApiError::new(
                StatusCode::GONE,
                "certificate_revoked",
                format!(
                    "certificate {} was revoked ({}): it is not issued as a Verifiable Credential; its bundle (application/json) carries the revocation status, and its JWS (application/jose) stays available",
                    row.id, revoked.reason
                ),
            ));
        }
        let status_url = format!(
            "{}/v1/certificates/{}/status",
            state.settings.issuer.trim_end_matches('/'),
            row.id
        );
        let vc = verifiable_credential(
            &claims,
            &row.hash,
            &schema_url(state, CREDENTIAL_SCHEMA_FILE),
            &status_url,
        );
        let payload = serde_json::to_vec(&vc).map_err(|err| ApiError::internal(&err))?;
        let key = state.keys.get().active(chrono::Utc::now());
        let jws = tokio::task::spawn_blocking(move || sign_compact(&*key, VC_TYP, &payload))
            .await
            .map_err(|err| ApiError::internal(&err))?
            .map_err(|err| ApiError::internal(&err))?;
        let mut response = jws.into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(VC_MEDIA_TYPE),
        );
        return Ok(response);
    }
    let inclusion_proof = state
        .ledger
        .inclusion(&state.storage, &row.id, &row.jws, None)
        .await?;
    let status = CertificateStatus::of(&row.id, state.storage.revocation(&row.id).await?);
    Ok(Json(CertificateResponse {
        id: row.id,
        jws: row.jws,
        hash: row.hash,
        claims,
        status,
        inclusion_proof,
    })
    .into_response())
}

/// The representations of a certificate, in the oracle's order of preference.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Representation {
    /// The bundle, `application/json` (the default).
    Bundle,
    /// The bare compact JWS, `application/jose`.
    Jose,
    /// The Verifiable Credential, `application/vc+jwt`.
    Vc,
}

/// One element of an `Accept` header: a media range and its weight.
#[derive(Debug)]
struct MediaRange<'a> {
    /// Type, or `*`.
    type_: &'a str,
    /// Subtype, or `*`.
    subtype: &'a str,
    /// The weight in thousandths (`q=0.5` is 500; 1000 without `q`).
    q: u16,
}

impl<'a> MediaRange<'a> {
    /// Parses `type/subtype *( ; parameter )` (RFC 9110 §12.5.1); `None` for an element that is
    /// not one (no `/`, `*/subtype`, an empty part, a `q` that is not a qvalue).
    fn parse(element: &'a str) -> Option<Self> {
        let mut parts = element.split(';');
        let (type_, subtype) = parts.next()?.trim().split_once('/')?;
        let token = |t: &str| {
            !t.is_empty()
                && t.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
        };
        if !token(type_) || !token(subtype) || (type_ == "*" && subtype != "*") {
            return None;
        }
        let mut q = 1000;
        for parameter in parts {
            let (name, value) = parameter.split_once('=').unwrap_or((parameter, ""));
            if name.trim().eq_ignore_ascii_case("q") {
                q = qvalue(value.trim())?;
            }
        }
        Some(Self { type_, subtype, q })
    }

    /// How specifically this range names `media` (`type/subtype`): 2 exactly, 1 as `type/*`, 0
    /// as `*/*`; `None` when it does not match.
    fn specificity(&self, media: &str) -> Option<u8> {
        let (type_, subtype) = media.split_once('/')?;
        if !(self.type_ == "*" || self.type_.eq_ignore_ascii_case(type_)) {
            return None;
        }
        match (self.type_, self.subtype) {
            ("*", _) => Some(0),
            (_, "*") => Some(1),
            (_, s) if s.eq_ignore_ascii_case(subtype) => Some(2),
            _ => None,
        }
    }
}

/// A qvalue (RFC 9110 §12.4.2: `0`, `0.` and up to three digits, `1`, `1.` and up to three
/// zeros) in thousandths.
fn qvalue(text: &str) -> Option<u16> {
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    if fraction.len() > 3 || !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let thousandths = format!("{fraction:0<3}").parse::<u16>().ok()?;
    match whole {
        "0" => Some(thousandths),
        "1" if thousandths == 0 => Some(1000),
        _ => None,
    }
}

impl Representation {
    /// In the oracle's order of preference.
    pub const ALL: [Self; 3] = [Self::Bundle, Self::Jose, Self::Vc];

    /// The media type this representation is served as.
    #[must_use]
    pub fn media_type(self) -> &'static str {
        match self {
            Self::Bundle => "application/json",
            Self::Jose => "application/jose",
            Self::Vc => VC_MEDIA_TYPE,
        }
    }

    /// The representation the request's `Accept` header selects (RFC 9110 §12.5.1), or `None`
    /// when it admits none (406). Without `Accept`, the bundle. Otherwise each representation
    /// takes the weight of the most specific media range that names it (`application/jose`
    /// before `application/*` before `*/*`; the first listed among equally specific ones), and
    /// the one with the highest weight above 0 wins; among equal weights, the one named by the
    /// more specific range, then by the range listed first, then the bundle, the JWS, the VC.
    /// Media-range parameters other than `q` are ignored; elements that are not media ranges,
    /// or whose `q` is not a qvalue, are skipped. Several `Accept` fields are one list.
    #[must_use]
    pub fn negotiate(headers: &HeaderMap) -> Option<Self> {
        let mut fields = headers.get_all(header::ACCEPT).iter().peekable();
        if fields.peek().is_none() {
            return Some(Self::Bundle);
        }
        let ranges: Vec<MediaRange<'_>> = fields
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(MediaRange::parse)
            .collect();
        Self::ALL
            .iter()
            .enumerate()
            .filter_map(|(preference, &representation)| {
                // The most specific range naming it; the first listed among equals.
                let (position, specificity, q) = ranges
                    .iter()
                    .enumerate()
                    .filter_map(|(i, r)| {
                        r.specificity(representation.media_type())
                            .map(|s| (i, s, r.q))
                    })
                    .min_by_key(|&(i, s, _)| (std::cmp::Reverse(s), i))?;
                (q > 0).then_some((
                    (
                        q,
                        specificity,
                        std::cmp::Reverse(position),
                        std::cmp::Reverse(preference),
                    ),
                    representation,
                ))
            })
            .max_by_key(|(rank, _)| *rank)
            .map(|(_, representation)| representation)
    }
}

/// Revocation status of one certificate (role auditor or compliance; admin passes).
#[utoipa::path(get, path = "/v1/certificates/{id}/status", tag = "certificates",
    params(("id" = String, Path, description = "Certificate id")), security(("bearer" = [])), responses(
    (status = 200, description = "Status", body = CertificateStatus),
    (status = 404, description = "not_found", body = super::problem::Problem, content_type = "application/problem+json"),
))]
pub async fn status(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Json<CertificateStatus>, ApiError> {
    crate::auth::require(&state.storage, &headers, super::CERTIFICATE_READERS).await?;
    if state.storage.certificate(&id).await?.is_none() {
        return Err(ApiError::not_found(format!("no certificate {id}")));
    }
    Ok(Json(CertificateStatus::of(
        &id,
        state.storage.revocation(&id).await?,
    )))
}

/// Revokes a certificate (admin). Revoking an already revoked certificate returns the first
/// revocation unchanged. The certificate stays in the transparency log (the log is append-only);
/// verifiers learn the revocation from the status.
#[utoipa::path(post, path = "/v1/certificates/{id}/revocation", tag = "certificates",
    params(("id" = String, Path, description = "Certificate id")),
    request_body = RevocationRequest, security(("bearer" = [])), responses(
    (status = 200, description = "Revoked", body = CertificateStatus),
    (status = 400, description = "invalid_request: unknown reason", body = super::problem::Problem, content_type = "application/problem+json"),
    (status = 401, description = "missing_token / invalid_token", body = super::problem::Problem, content_type = "application/problem+json"),
    (status = 403, description = "forbidden_role", body = super::problem::Problem, content_type = "application/problem+json"),
    (status = 404, description = "not_found", body = super::problem::Problem, content_type = "application/problem+json"),
))]
pub async fn revoke(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Json<CertificateStatus>, ApiError> {
    crate::auth::require(&state.storage, &headers, &[crate::auth::Role::Admin]).await?;
    super::require_json(&headers)?;
    let request: RevocationRequest = super::parse_json(&body)?;
    if !REVOCATION_REASONS.contains(&request.reason.as_str()) {
        return Err(ApiError::bad_request(format!(
            "unknown revocation reason {:?}; use one of {}",
            request.reason,
            REVOCATION_REASONS.join(", ")
        )));
    }
    if state.storage.certificate(&id).await?.is_none() {
        return Err(ApiError::not_found(format!("no certificate {id}")));
    }
    let row = state
        .storage
        .revoke_certificate(&id, &request.reason, chrono::Utc::now())
        .await?;
    tracing::info!(certificate_id = %id, reason = %row.reason, "Certificate revoked.");
    Ok(Json(CertificateStatus::of(&id, Some(row))))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn negotiate(accept: &[&str]) -> Option<&'static str> {
        let mut headers = HeaderMap::new();
        for value in accept {
            headers.append(
                header::ACCEPT,
                HeaderValue::from_str(value).expect("header value"),
            );
        }
        Representation::negotiate(&headers).map(Representation::media_type)
    }

    const JSON: Option<&str> = Some("application/json");
    const JOSE: Option<&str> = Some("application/jose");
    const VC: Option<&str> = Some("application/vc+jwt");

    /// q-values, specificity, order among equals and wildcards select as protocol.md §5 says.
    #[test]
    fn accept_selects_by_weight_then_specificity_then_order() {
        for (accept, expected) in [
            // No Accept: the bundle; */* and application/*: the oracle's preference, the bundle.
            (&[][..], JSON),
            (&["*/*"][..], JSON),
            (&["application/*"][..], JSON),
            (&["application/json"][..], JSON),
            (&["application/jose"][..], JOSE),
            (&["application/vc+jwt"][..], VC),
            (&["APPLICATION/JOSE"][..], JOSE),
            // Weights decide.
            (&["application/jose;q=0.5, application/json"][..], JSON),
            (&["application/json;q=0.5, application/jose"][..], JOSE),
            (
                &["application/json; q=0.9, application/vc+jwt; q=0.95"][..],
                VC,
            ),
            (&["application/jose;q=0.001, text/html"][..], JOSE),
            // Equal weights: the listed order, not a substring match.
            (&["application/vc+jwt, application/jose"][..], VC),
            (&["application/jose, application/json"][..], JOSE),
            (&["application/json, application/jose"][..], JSON),
            // Equal weights: a named type beats a wildcard, wherever it is listed.
            (&["*/*, application/jose"][..], JOSE),
            (&["application/*, application/vc+jwt"][..], VC),
            // q=0 excludes, also when a wildcard would admit it.
            (&["application/json;q=0, */*"][..], JOSE),
            (
                &["application/json;q=0, application/jose;q=0, */*;q=0.1"][..],
                VC,
            ),
            (&["*/*;q=0"][..], None),
            (&["application/jose;q=0"][..], None),
            // A lower weight on the wildcard than on the named type.
            (&["text/html, */*;q=0.1"][..], JSON),
            (&["text/html, application/vc+jwt;q=0.2, */*;q=0.1"][..], VC),
            // The most specific range decides a representation's weight.
            (
                &["application/*;q=0.1, application/json;q=1, application/jose;q=0.5"][..],
                JSON,
            ),
            (
                &["*/*;q=1, application/*;q=0.2, application/vc+jwt;q=0.3"][..],
                VC,
            ),
            // Nothing admitted: 406.
            (&["text/csv"][..], None),
            (&["text/*"][..], None),
            (&[""][..], None),
            (&["application/jose+json"][..], None),
            (&["application/josex"][..], None),
            // Not media ranges, bad q-values: skipped.
            (&["json, application/jose"][..], JOSE),
            (&["*/json, application/vc+jwt"][..], VC),
            (&["application/json;q=2, application/jose"][..], JOSE),
            (
                &["application/json;q=0.5000, application/vc+jwt;q=0.1"][..],
                VC,
            ),
            (&["application/json;q=abc"][..], None),
            // Other parameters are ignored; several fields are one list.
            (
                &["application/json;charset=utf-8;q=0.2, application/jose;q=0.1"][..],
                JSON,
            ),
            (&["application/json;q=0.2", "application/vc+jwt"][..], VC),
        ] {
            assert_eq!(negotiate(accept), expected, "{accept:?}");
        }
    }

    #[test]
    fn qvalues_are_parsed_exactly() {
        for (text, q) in [
            ("0", Some(0)),
            ("0.", Some(0)),
            ("0.5", Some(500)),
            ("0.05", Some(50)),
            ("0.001", Some(1)),
            ("1", Some(1000)),
            ("1.000", Some(1000)),
            ("1.001", None),
            ("0.0001", None),
            ("-0.5", None),
            (".5", None),
            ("", None),
            ("0.5a", None),
        ] {
            assert_eq!(qvalue(text), q, "{text}");
        }
    }
}
