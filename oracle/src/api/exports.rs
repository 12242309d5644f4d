//! Compliance exports over HTTP.

use super::problem::ApiError;
use crate::AppState;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use utoipa::IntoParams;

/// Period filter of an export.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ExportQuery {
    /// Only certificates whose period ends at or after this time (RFC 3339).
    pub from: Option<DateTime<Utc>>,
    /// Only certificates whose period starts before this time (RFC 3339).
    pub to: Option<DateTime<Utc>>,
}

/// Downloads an export profile as CSV. Profiles: `compliance.csv` (one row per certificate).
#[utoipa::path(get, path = "/v1/exports/{file}", tag = "exports", params(("file" = String, Path, description = "`compliance.csv`"), ExportQuery), security(("bearer" = [])), responses(
    (status = 200, description = "CSV (RFC 4180), header row first", content_type = "text/csv", body = String),
    (status = 404, description = "unknown export profile", body = super::problem::Problem, content_type = "application/problem+json"),
))]
pub async fn export(
    State(state): State<AppState>,
    Path(file): Path<String>,
    request_headers: HeaderMap,
    query: Result<Query<ExportQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    crate::auth::require(&state.storage, &request_headers, super::EXPORT_READERS).await?;
    let Query(q) = query.map_err(|err| ApiError::bad_request(err.body_text()))?;
    if file != "compliance.csv" {
        return Err(ApiError::not_found(format!(
            "no export profile {file:?}; available: compliance.csv"
        )));
    }
    let stream = crate::export::compliance_csv(
        state.storage.clone(),
        (q.from, q.to),
        state.settings.issuer.trim_end_matches('/').to_owned(),
    );
    let mut response = Body::from_stream(stream).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/csv; charset=utf-8; header=present"),
    );
    headers.insert(
        header::CONTENT_DISPOSITION,
        HeaderValue::from_static("attachment; filename=\"compliance.csv\""),
    );
    Ok(response)
}
