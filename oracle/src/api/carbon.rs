//! Carbon intensity over HTTP: what the oracle would apply to a zone-hour and why
//! (`GET /v1/carbon/intensity`, auditors), and where its figures come from
//! (`GET /v1/carbon/sources`, public).

use super::CARBON_READERS;
use super::problem::{ApiError, Problem};
use crate::AppState;
use crate::auth;
use crate::carbon::{Attempt, FactorType, ProviderInfo, static_table::StaticDataset};
use axum::Json;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use utoipa::{IntoParams, ToSchema};
use wattest_shared::Decimal6;
use wattest_shared::certificate::Provenance;

/// Query of `GET /v1/carbon/intensity`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct IntensityQuery {
    /// Grid zone as a node enrolls with it: ISO 3166-1 alpha-2 (`BE`), an Electricity Maps zone
    /// (`US-CAL-CISO`), ISO alpha-3 (`BEL`) or an Ember region (`EU`, `World`); case-insensitive.
    #[param(example = "BE")]
    pub zone: String,
    /// An instant, RFC 3339 (`2025-06-01T10:20:00Z`; percent-encode a `+` offset as `%2B`);
    /// the answer is for the UTC hour containing it. Default: now. At most the oracle's
    /// `--max-clock-skew-secs` (default 60 s) in the future.
    #[param(example = "2025-06-01T10:20:00Z", format = DateTime)]
    pub at: Option<String>,
}

/// What became of one step of a zone's chain (an attempt's `outcome`).
// Schema only: `Attempt::outcome` is a string with these values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AttemptOutcome {
    /// This step gave the figure.
    Applied,
    /// This step failed (`reason` says why); the next one was tried.
    Failed,
    /// This step had nothing (a cache miss); the next one was tried.
    Skipped,
}

/// What the oracle would apply to one zone-hour, and why.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({
    "zone": "BE", "at": "2025-06-01T10:20:00Z",
    "hour_start": "2025-06-01T10:00:00Z", "hour_end": "2025-06-01T11:00:00Z",
    "g_co2e_per_kwh": "117.580000",
    "provenance": {"provider": "static", "dataset": "Ember (2025), Yearly Electricity Data, BEL 2024",
        "year": 2024, "factor_type": "lifecycle", "estimated": true,
        "fallback_reason": "electricitymaps: rate limited (HTTP 429, retry after 30 s)"},
    "from_cache": false, "preferred_factor_type": "direct",
    "chain": ["electricitymaps", "cache", "static"],
    "attempts": [
        {"provider": "electricitymaps", "outcome": "failed", "reason": "rate limited (HTTP 429, retry after 30 s)"},
        {"provider": "cache", "outcome": "skipped", "reason": "no cached figure"},
        {"provider": "static", "outcome": "applied"}
    ]
}))]
pub struct IntensityAnswer {
    /// Canonical zone name (upper-cased code, or the Ember region's name).
    pub zone: String,
    /// The instant asked (`at`, or the oracle's clock when absent), UTC.
    pub at: DateTime<Utc>,
    /// Start of the UTC hour containing `at`.
    pub hour_start: DateTime<Utc>,
    /// End of that hour (exclusive): `hour_start` + 1 h.
    pub hour_end: DateTime<Utc>,
    /// The figure a certificate would apply to this hour, gCO2e/kWh, exactly as its hourly
    /// entry would carry it (six decimals); null when every step of the chain failed (a
    /// certificate covering this hour would be refused now).
    #[schema(required = true)]
    pub g_co2e_per_kwh: Option<Decimal6>,
    /// Provenance of that figure: the very object a certificate's hourly entry carries
    /// (`provider`, `dataset`, `year`, `factor_type`, `estimated`, `marginal` when true,
    /// `fallback_reason` when an earlier step failed); null when every step failed.
    #[schema(required = true)]
    pub provenance: Option<Provenance>,
    /// True when the figure was read from the cache table (fetched earlier from a live
    /// provider) rather than asked of a provider for this answer.
    pub from_cache: bool,
    /// Factor type configured for location-based Scope 2 (`factor_type` of the carbon config;
    /// default `direct`); providers that offer both are asked for it.
    pub preferred_factor_type: FactorType,
    /// The zone's chain, in order: provider names and `cache` (the cache table).
    pub chain: Vec<String>,
    /// Every step tried for this answer, in order, until one applied.
    pub attempts: Vec<Attempt>,
}

/// The intensity the oracle would apply to the zone-hour containing `at`, with its provenance,
/// whether it came from the cache, and every step of the zone's chain that was tried (with the
/// reason each live provider failed) (role auditor; admin passes).
///
/// Resolving walks the chain exactly as issuance does, so it may ask a live provider and store
/// a past hour's figure in the cache; it never writes a certificate.
#[utoipa::path(get, path = "/v1/carbon/intensity", tag = "carbon", params(IntensityQuery),
    security(("bearer" = [])), responses(
    (status = 200, description = "What would be applied and why", body = IntensityAnswer),
    (status = 400, description = "invalid_request: missing or empty zone, `at` not RFC 3339 or too far in the future, unknown parameter", body = Problem, content_type = "application/problem+json",
        example = json!({"type": "https://wattest.dev/problems/invalid_request", "title": "Bad Request", "status": 400,
            "detail": "at: \"yesterday\" is not an RFC 3339 date-time such as 2025-06-01T10:20:00Z (percent-encode a + offset as %2B)", "code": "invalid_request"})),
    (status = 404, description = "unknown_zone: the zone is in no intensity table", body = Problem, content_type = "application/problem+json",
        example = json!({"type": "https://wattest.dev/problems/unknown_zone", "title": "Not Found", "status": 404,
            "detail": "unknown grid zone \"Atlantis\": use an ISO 3166-1 country code such as BE, an Electricity Maps zone such as US-CAL-CISO, or a region such as EU", "code": "unknown_zone"})),
))]
pub async fn intensity(
    State(state): State<AppState>,
    headers: HeaderMap,
    query: Result<Query<IntensityQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<IntensityAnswer>, ApiError> {
    // The token first, as on every endpoint: a bad query from an unauthenticated client is 401.
    auth::require(&state.storage, &headers, CARBON_READERS).await?;
    let Query(query) = query.map_err(|err| ApiError::bad_request(err.body_text()))?;
    // `zone=` names no zone at all: the same 400 as no `zone`, not a zone that is unknown.
    if query.zone.trim().is_empty() {
        return Err(ApiError::bad_request(
            "missing field `zone`: it is empty".to_owned(),
        ));
    }
    let now = Utc::now();
    let at = match query.at.as_deref() {
        None => now,
        Some(text) => DateTime::parse_from_rfc3339(text.trim())
            .map_err(|_| {
                ApiError::bad_request(format!(
                    "at: {text:?} is not an RFC 3339 date-time such as 2025-06-01T10:20:00Z (percent-encode a + offset as %2B)"
                ))
            })?
            .with_timezone(&Utc),
    };
    let skew = state.settings.max_clock_skew_secs;
    if at > now + Duration::seconds(skew) {
        return Err(ApiError::bad_request(format!(
            "at: {} lies in the future (more than {skew} s after the oracle's clock, {}); the oracle applies intensities to past and current hours only",
            at.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
            now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        )));
    }
    let zone = state
        .carbon
        .zone(&query.zone)
        .map_err(|err| ApiError::new(StatusCode::NOT_FOUND, "unknown_zone", err.to_string()))?;
    let chain = state
        .carbon
        .chain(&zone)
        .iter()
        .map(|s| s.name().to_owned())
        .collect();
    let resolution = state
        .carbon
        .resolve(Some(state.storage.db()), &zone, at, now)
        .await;
    let hour_start = crate::carbon::hour_start(at);
    let g_co2e_per_kwh = resolution
        .intensity
        .as_ref()
        // The same conversion as the certificate builder; provider figures are checked to lie in
        // 0..=5000 g/kWh, so it cannot fail.
        .map(|i| {
            Decimal6::from_f64(i.value.0)
                .ok_or_else(|| ApiError::internal(&"intensity out of range"))
        })
        .transpose()?;
    Ok(Json(IntensityAnswer {
        zone: zone.name,
        at,
        hour_start,
        hour_end: hour_start + Duration::hours(1),
        g_co2e_per_kwh,
        provenance: resolution.intensity.map(|i| i.provenance),
        from_cache: resolution.from_cache,
        preferred_factor_type: state.carbon.factor_type(),
        chain,
        attempts: resolution.attempts,
    }))
}

/// Where the oracle's carbon intensity figures come from.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({
    "datasets": [{"provider": "static", "publisher": "Ember",
        "dataset": "Ember (2025), Yearly Electricity Data", "years": [2022, 2023, 2024],
        "licence": "CC BY 4.0", "licence_url": "https://creativecommons.org/licenses/by/4.0/",
        "url": "https://ember-energy.org/data/yearly-electricity-data/", "factor_type": "lifecycle",
        "basis": "generation", "granularity": "yearly", "unit": "gCO2e/kWh", "zones": 222}],
    "providers": [
        {"name": "electricitymaps", "kind": "electricitymaps", "live": true,
         "attribution": "Electricity Maps API v3", "licence": "the operator's Electricity Maps API terms",
         "url": "https://www.electricitymaps.com", "factor_types": ["direct"], "marginal": false,
         "granularity": "hourly"},
        {"name": "static", "kind": "static", "live": false,
         "attribution": "Ember (2025), Yearly Electricity Data", "licence": "CC BY 4.0",
         "url": "https://ember-energy.org/data/yearly-electricity-data/", "factor_types": ["lifecycle"],
         "marginal": false, "granularity": "yearly"}
    ],
    "preferred_factor_type": "direct",
    "default_chain": ["static"],
    "zones": {"BE": ["electricitymaps", "cache", "static"]}
}))]
pub struct CarbonSources {
    /// Datasets shipped with the oracle, with the attribution their licence requires.
    pub datasets: Vec<StaticDataset>,
    /// Every configured provider (the static table included), by name; never a key, token,
    /// password, file path or base URL.
    pub providers: Vec<ProviderInfo>,
    /// Factor type configured for location-based Scope 2 (default `direct`).
    pub preferred_factor_type: FactorType,
    /// Chain of zones that have no chain of their own (nor their country's).
    pub default_chain: Vec<String>,
    /// Chains configured per zone: canonical zone name or country code → provider names and
    /// `cache`, in order. A sub-zone without its own chain uses its country's.
    pub zones: BTreeMap<String, Vec<String>>,
}

/// The shipped datasets with their attribution, the configured providers and the chain per
/// zone (provider names only). Public, like the JWKS: anyone checking a certificate's
/// provenance may read it.
#[utoipa::path(get, path = "/v1/carbon/sources", tag = "carbon", responses(
    (status = 200, description = "Datasets, providers and chains", body = CarbonSources),
))]
pub async fn sources(State(state): State<AppState>) -> Json<CarbonSources> {
    let carbon = &state.carbon;
    let names = |steps: &[crate::carbon::Step]| -> Vec<String> {
        steps.iter().map(|s| s.name().to_owned()).collect()
    };
    Json(CarbonSources {
        datasets: vec![carbon.table().dataset()],
        providers: carbon.providers().map(|p| p.info()).collect(),
        preferred_factor_type: carbon.factor_type(),
        default_chain: names(carbon.default_chain()),
        zones: carbon
            .zone_chains()
            .iter()
            .map(|(zone, steps)| (zone.clone(), names(steps)))
            .collect(),
    })
}
