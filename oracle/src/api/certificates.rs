//! Reading certificates: a filtered list of summaries, and one certificate with its JWS.

use super::problem::ApiError;
use crate::AppState;
use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use wattest_shared::CertificateClaims;
use wattest_shared::api::CertificateSummary;

/// Filters of `GET /v1/certificates`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Only certificates of this job id.
    pub job: Option<String>,
    /// Only certificates of this node id.
    pub node: Option<String>,
    /// At most this many, newest first (1–1000, default 100).
    pub limit: Option<u64>,
}

/// A page of certificate summaries.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CertificateList {
    /// Newest first.
    pub certificates: Vec<CertificateSummary>,
}

/// One certificate.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CertificateResponse {
    /// Certificate id.
    pub id: String,
    /// The signed certificate: a compact JWS (`typ` `wattest-cert+jwt`, PS256) verifiable with
    /// `/.well-known/jwks.json` or `wattest-verify`.
    pub jws: String,
    /// base64url SHA-256 of `jws`.
    pub hash: String,
    /// The JWS payload, decoded (for convenience; the JWS is authoritative).
    pub claims: CertificateClaims,
}

/// Lists certificates, newest first.
#[utoipa::path(get, path = "/v1/certificates", tag = "certificates", params(ListQuery), responses(
    (status = 200, description = "Certificates", body = CertificateList),
    (status = 400, description = "invalid_request", body = super::problem::Problem, content_type = "application/problem+json"),
))]
pub async fn list(
    State(state): State<AppState>,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<CertificateList>, ApiError> {
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
        certificates: rows.iter().map(CertificateSummary::from).collect(),
    }))
}

/// One certificate. With `Accept: application/jose` the body is the bare compact JWS.
#[utoipa::path(get, path = "/v1/certificates/{id}", tag = "certificates", params(("id" = String, Path, description = "Certificate id")), responses(
    (status = 200, description = "The certificate", body = CertificateResponse),
    (status = 404, description = "not_found", body = super::problem::Problem, content_type = "application/problem+json"),
))]
pub async fn get_one(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let Some(row) = state.storage.certificate(&id).await? else {
        return Err(ApiError::not_found(format!("no certificate {id}")));
    };
    let wants_jose = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("application/jose"));
    if wants_jose {
        let mut response = row.jws.into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/jose"),
        );
        return Ok(response);
    }
    let claims: CertificateClaims =
        serde_json::from_str(&row.claims).map_err(|err| ApiError::internal(&err))?;
    Ok(Json(CertificateResponse {
        id: row.id,
        jws: row.jws,
        hash: row.hash,
        claims,
    })
    .into_response())
}
