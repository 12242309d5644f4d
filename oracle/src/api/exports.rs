//! Compliance exports over HTTP: `GET /v1/exports/{profile}.csv`, streamed.

use super::problem::ApiError;
use crate::AppState;
use crate::auth;
use crate::export::{ExportFilter, Granularity, Profile, StatusFilter, StreamOptions};
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

/// Longest accepted text filter value, characters (ids are UUIDs; names are short).
pub const MAX_FILTER_CHARS: usize = 256;

/// How long a request waits for one of the export slots
/// ([`crate::export::max_concurrent_exports`]) before it is answered 503: 2 s, which absorbs a
/// client fetching several profiles at once.
pub const SLOT_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// `Retry-After` of the 503 sent when every export slot stays taken, seconds.
pub const BUSY_RETRY_AFTER_SECS: u32 = 10;

/// Filters of an export; all optional, combined with AND.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ExportQuery {
    /// Start (inclusive) of the half-open interval [from, to) the export covers (RFC 3339):
    /// certificate rows whose period ends after it (`period_end > from`), hour rows whose hour
    /// starts at or after it. Consecutive exports never share a row.
    pub from: Option<DateTime<Utc>>,
    /// End (exclusive) of the half-open interval [from, to) the export covers (RFC 3339):
    /// certificate rows whose period ends at or before it (`period_end <= to`), hour rows whose
    /// hour starts before it.
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
    /// `valid` (the default: certificates not revoked), `affirming`, `warning`,
    /// `contraindicated` (`ear.status`, among certificates not revoked), `revoked` (revoked
    /// certificates only) or `all` (revoked or not).
    #[param(value_type = Option<ExportStatus>, inline)]
    pub status: Option<String>,
    /// `certificate` (default) or `hour` (compliance profile only: one row per certificate-hour).
    #[param(value_type = Option<ExportGranularity>, inline)]
    pub granularity: Option<String>,
}

/// Export filter on the certificate's status: the revocation state, or an `ear.status` among
/// certificates not revoked. Without it, `valid`.
// Schema only: the parameter is a string parsed by `StatusFilter::parse`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ExportStatus {
    /// Not revoked, `ear.status` affirming.
    Affirming,
    /// Not revoked, `ear.status` warning.
    Warning,
    /// Not revoked, `ear.status` contraindicated.
    Contraindicated,
    /// Revoked certificates only.
    Revoked,
    /// Certificates not revoked (the default).
    Valid,
    /// Every certificate, revoked or not.
    All,
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
/// Revoked certificates are left out unless `status` asks for them. A few exports stream at
/// once (2 on SQLite, 8 on PostgreSQL): past that, 503 `unavailable` with `Retry-After`. A
/// transfer whose client takes no data for 30 s is aborted. Columns and units:
/// docs/compliance.md.
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
        (status = 503, description = "unavailable: as many exports as the oracle streams at once are running; retry after the Retry-After header's seconds (or timeout)", body = super::problem::Problem, content_type = "application/problem+json", headers(
            ("Retry-After" = u32, description = "Seconds to wait before retrying (an integer, RFC 9110 §10.2.3)"),
        )),
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
    // A slot bounds the database connections exports hold; the stall timeout frees a stalled
    // client's connection (and slot) instead of holding it for as long as the client lives.
    let Some(slot) = crate::export::acquire_slot(&state.storage, SLOT_WAIT).await else {
        tracing::warn!(
            profile = profile.name(),
            "Export refused: every export slot is taken."
        );
        let mut response = ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            format!(
                "{} exports are already streaming, the most this oracle streams at once; retry in {BUSY_RETRY_AFTER_SECS} s",
                crate::export::max_concurrent_exports(state.storage.db().get_database_backend())
            ),
        )
        .into_response();
        response.headers_mut().insert(
            header::RETRY_AFTER,
            HeaderValue::from(BUSY_RETRY_AFTER_SECS),
        );
        return Ok(response);
    };
    let export = crate::export::spawn_with(
        state.storage.clone(),
        profile,
        filter,
        StreamOptions {
            stall_timeout: Some(crate::export::STALL_TIMEOUT),
            slot: Some(slot),
        },
    );
    let mut response = Body::from_stream(export.into_stream()).into_response();
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
