//! Compliance exports over HTTP: `GET /v1/exports/{profile}.csv`, streamed.

use super::problem::ApiError;
use crate::AppState;
use crate::auth;
use crate::export::{ExportFilter, Granularity, Profile, StatusFilter};
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

/// Longest accepted text filter value, characters (ids are UUIDs; names are short).
pub const MAX_FILTER_CHARS: usize = 256;

/// Filters of an export; all optional, combined with AND.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ExportQuery {
    /// Only certificates whose period ends at or after this time (RFC 3339).
    pub from: Option<DateTime<Utc>>,
    /// Only certificates whose period starts before this time (RFC 3339).
    pub to: Option<DateTime<Utc>>,
    /// Node id.
    #[param(min_length = 1, max_length = 256)]
    pub node: Option<String>,
    /// Node owner (`wattest-oracle node set --owner`).
    #[param(min_length = 1, max_length = 256)]
    pub owner: Option<String>,
    /// Job id (`wattest.job_id`).
    #[param(min_length = 1, max_length = 256)]
    pub job: Option<String>,
    /// Model id (`wattest.model_id`).
    #[param(min_length = 1, max_length = 256)]
    pub model: Option<String>,
    /// Grid zone, e.g. `BE`, case-insensitive as at enrollment.
    #[param(min_length = 1, max_length = 256)]
    pub zone: Option<String>,
    /// `affirming`, `warning`, `contraindicated` (`ear.status`), `revoked` or `valid`.
    #[param(value_type = Option<ExportStatus>, inline)]
    pub status: Option<String>,
    /// `certificate` (default) or `hour` (compliance profile only: one row per certificate-hour).
    #[param(value_type = Option<ExportGranularity>, inline)]
    pub granularity: Option<String>,
}

/// Export filter on the certificate's status: an `ear.status`, or the revocation state.
// Schema only: the parameter is a string parsed by `StatusFilter::parse`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ExportStatus {
    /// `ear.status` affirming.
    Affirming,
    /// `ear.status` warning.
    Warning,
    /// `ear.status` contraindicated.
    Contraindicated,
    /// Revoked certificates.
    Revoked,
    /// Certificates not revoked.
    Valid,
}

/// Rows of an export: one per certificate, or one per certificate-hour.
// Schema only: the parameter is a string parsed by `Granularity::parse`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ExportGranularity {
    /// One row per certificate (the default).
    Certificate,
    /// One row per certificate-hour (compliance profile only).
    Hour,
}

/// An export file, `<profile>.csv`; any other name is 404.
// Schema only: the path segment is parsed by `Profile::parse`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
pub enum ExportFile {
    /// The compliance profile.
    #[serde(rename = "compliance.csv")]
    Compliance,
    /// The CodeCarbon profile.
    #[serde(rename = "codecarbon.csv")]
    Codecarbon,
    /// The SCI profile.
    #[serde(rename = "sci.csv")]
    Sci,
}

impl ExportQuery {
    /// The checked filter.
    ///
    /// # Errors
    /// 400 `invalid_request` naming the bad parameter.
    pub fn into_filter(self, profile: Profile) -> Result<ExportFilter, ApiError> {
        let text = |name: &str, value: Option<String>| -> Result<Option<String>, ApiError> {
            match value {
                Some(v) if v.is_empty() || v.chars().count() > MAX_FILTER_CHARS => {
                    Err(ApiError::bad_request(format!(
                        "{name} must be 1 to {MAX_FILTER_CHARS} characters"
                    )))
                }
                other => Ok(other),
            }
        };
        let status = match self.status.as_deref() {
            None => None,
            Some(s) => Some(StatusFilter::parse(s).ok_or_else(|| {
                ApiError::bad_request(format!(
                    "status {s:?} is not one of: {}",
                    StatusFilter::NAMES
                ))
            })?),
        };
        let granularity = match self.granularity.as_deref() {
            None => Granularity::Certificate,
            Some(g) => Granularity::parse(g).ok_or_else(|| {
                ApiError::bad_request(format!("granularity {g:?} is not certificate or hour"))
            })?,
        };
        let filter = ExportFilter {
            from: self.from,
            to: self.to,
            node: text("node", self.node)?,
            owner: text("owner", self.owner)?,
            job: text("job", self.job)?,
            model: text("model", self.model)?,
            zone: text("zone", self.zone)?,
            status,
            granularity,
        };
        filter.check(profile).map_err(ApiError::bad_request)?;
        Ok(filter)
    }
}

/// Downloads an export profile as CSV (role `compliance`; admin passes): `compliance.csv`,
/// `codecarbon.csv` or `sci.csv`. RFC 4180, UTF-8, CRLF, header row first, streamed in
/// (issued_at, id) order; the `Wattest-Export-Version` header names the column list's version.
/// Columns and units: docs/compliance.md.
#[utoipa::path(get, path = "/v1/exports/{file}", tag = "exports", security(("bearer" = [])),
    params(("file" = inline(ExportFile), Path, description = "`compliance.csv`, `codecarbon.csv` or `sci.csv`"), ExportQuery),
    responses(
        (status = 200, description = "CSV (RFC 4180), header row first", content_type = "text/csv", body = String, headers(
            ("Wattest-Export-Version" = String, description = "Version of the profile's column list: it changes whenever a column is added, removed, renamed or reordered"),
            ("Content-Disposition" = String, description = "attachment; filename=\"<profile>.csv\""),
        )),
        (status = 400, description = "bad filter", body = super::problem::Problem, content_type = "application/problem+json"),
        (status = 401, description = "no or unknown token", body = super::problem::Problem, content_type = "application/problem+json"),
        (status = 403, description = "token lacks the compliance role", body = super::problem::Problem, content_type = "application/problem+json"),
        (status = 404, description = "unknown export profile", body = super::problem::Problem, content_type = "application/problem+json"),
))]
#[tracing::instrument(skip(state, headers, query))]
pub async fn export(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(file): Path<String>,
    query: Result<Query<ExportQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    auth::require(&state.storage, &headers, super::EXPORT_READERS).await?;
    let profile = file
        .strip_suffix(".csv")
        .and_then(Profile::parse)
        .ok_or_else(|| {
            let names: Vec<String> = Profile::ALL
                .iter()
                .map(|p| format!("{}.csv", p.name()))
                .collect();
            ApiError::not_found(format!(
                "no export profile {file:?}; available: {}",
                names.join(", ")
            ))
        })?;
    let Query(q) = query.map_err(|err| ApiError::bad_request(err.body_text()))?;
    let mut filter = q.into_filter(profile)?;
    // The zone as enrollment stores it (`be` is `BE`); a zone no table knows matches nothing.
    filter.zone = filter
        .zone
        .map(|zone| state.carbon.zone(&zone).map_or(zone, |z| z.name));
    let rx = crate::export::spawn(state.storage.clone(), profile, filter);
    let body = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|chunk| (chunk, rx))
    });
    let mut response = Body::from_stream(body).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/csv; charset=utf-8; header=present"),
    );
    if let Ok(v) =
        HeaderValue::from_str(&format!("attachment; filename=\"{}.csv\"", profile.name()))
    {
        headers.insert(header::CONTENT_DISPOSITION, v);
    }
    headers.insert(
        "wattest-export-version",
        HeaderValue::from_static(profile.version()),
    );
    Ok(response)
}
