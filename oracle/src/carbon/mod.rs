//! Grid carbon intensity per grid zone and hour from a provider chain, always with provenance.
//!
//! Providers (one file each): [`static_table`] (Ember yearly table, the default), [`electricity_maps`]
//! (Electricity Maps v3), [`neso`] (UK NESO Carbon Intensity), [`watttime`] (WattTime v3 MOER,
//! marginal) and [`csv_series`] (an operator's CSV time series). [`config`] reads the chain per
//! zone from a TOML file (`wattest-oracle serve --carbon-config FILE`); [`cache`] stores the
//! figure a live provider returned for a past hour (an estimated one only once the hour ended
//! [`ESTIMATE_GRACE_HOURS`] ago), so the oracle never asks twice for a settled zone-hour. A live
//! provider that fails leaves a fallback reason that goes into the per-hour provenance of the
//! certificate.

pub mod cache;
pub mod config;
pub mod csv_series;
pub mod electricity_maps;
pub mod neso;
pub mod static_table;
pub mod watttime;

use chrono::{DateTime, Duration, Utc};
use futures::future::BoxFuture;
use std::collections::BTreeMap;
use std::sync::Arc;

pub use static_table::{CarbonError, EMBER_DATASET, GridZone, Intensity, StaticTable};

/// Timeout of one request to a live provider when the config names none, seconds. Chosen so a
/// stuck provider delays an issuance by at most this much per hour of the job before the chain
/// falls back.
pub const DEFAULT_TIMEOUT_SECS: u64 = 10;

/// Hours after the end of an hour during which a live provider's figure marked `estimated` is
/// applied but not cached, so that a later issuance can still get the measured one. NESO's
/// national `actual` ("the estimated carbon intensity from metered generation",
/// carbonintensity.org.uk) is null until it is computed from metered data, typically 30–60 min
/// after the half-hour ends; in the meantime the `forecast` is used. Two hours is twice that
/// lag, and bounds how long a provider that only ever estimates (NESO regions, Electricity Maps
/// for a zone without measurements) is asked again for the same hour. After it, the estimate is
/// cached like any figure and, the first stored figure being kept, is final.
pub const ESTIMATE_GRACE_HOURS: i64 = 2;

/// Why a provider gave no figure for a zone-hour. Messages never contain an API key, password or
/// token: they name the provider, the HTTP status and what was wrong with the body only.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProviderError {
    /// 401/403: the credentials were refused.
    #[error("credentials refused (HTTP {0})")]
    Unauthorized(u16),
    /// 429: rate limited; `Retry-After` seconds when the provider sent it.
    #[error("rate limited (HTTP 429{})", .0.map(|s| format!(", retry after {s} s")).unwrap_or_default())]
    RateLimited(Option<u64>),
    /// 5xx or another unexpected status.
    #[error("unexpected HTTP status {0}")]
    Status(u16),
    /// The body did not have the documented shape.
    #[error("malformed response: {0}")]
    Malformed(String),
    /// The response had no figure for the hour asked.
    #[error("no figure for {zone} at {hour}")]
    MissingHour {
        /// Grid zone.
        zone: String,
        /// Hour start (UTC).
        hour: DateTime<Utc>,
    },
    /// The provider does not cover this zone (no region mapping, no series).
    #[error("zone {0} not covered")]
    ZoneNotCovered(String),
    /// Timeout, connection refused, TLS failure (the URL is stripped of any query).
    #[error("transport error: {0}")]
    Transport(String),
    /// A negative or non-finite value: refused rather than applied.
    #[error("implausible value {0}")]
    Implausible(String),
}

impl ProviderError {
    /// Maps a reqwest error without its URL (a query could carry a parameter we do not want in
    /// logs; keys travel in headers, never in URLs, but strip it anyway).
    #[must_use]
    pub fn transport(err: reqwest::Error) -> Self {
        let timeout = err.is_timeout();
        let err = err.without_url();
        if timeout {
            Self::Transport(format!("timed out: {err}"))
        } else {
            Self::Transport(err.to_string())
        }
    }

    /// Maps an error status; `retry_after` is the `Retry-After` header in seconds.
    #[must_use]
    pub fn from_status(status: reqwest::StatusCode, retry_after: Option<u64>) -> Self {
        match status.as_u16() {
            401 | 403 => Self::Unauthorized(status.as_u16()),
            429 => Self::RateLimited(retry_after),
            other => Self::Status(other),
        }
    }
}

/// `Retry-After` as delta-seconds (the HTTP-date form is not used by these providers).
#[must_use]
pub fn retry_after(resp: &reqwest::Response) -> Option<u64> {
    resp.headers()
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Largest figure a provider may give, gCO2e/kWh: five times the IPCC lifecycle median for coal
/// generation (995 gCO2e/kWh, IPCC AR5 WG III Annex III, as quoted in shared/reference), the most
/// carbon-intensive source there is. A larger figure is a unit or parsing error upstream, and it
/// would not fit the certificate's exact decimals anyway.
pub const MAX_PLAUSIBLE_G_CO2E_PER_KWH: f64 = 5_000.0;

/// Checks a provider's figure: finite, not negative and at most
/// [`MAX_PLAUSIBLE_G_CO2E_PER_KWH`] (a zero is kept: a fully renewable hour exists, but it must
/// come from the provider, never from a default).
///
/// # Errors
/// [`ProviderError::Implausible`].
pub fn checked_value(value: f64) -> Result<f64, ProviderError> {
    if value.is_finite() && (0.0..=MAX_PLAUSIBLE_G_CO2E_PER_KWH).contains(&value) {
        Ok(value)
    } else {
        Err(ProviderError::Implausible(value.to_string()))
    }
}

/// The factor type a location-based Scope 2 figure should use. GHG Protocol Scope 2 Guidance
/// (2015) uses direct (combustion) emission factors; lifecycle factors add upstream emissions.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    serde::Deserialize,
    serde::Serialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum FactorType {
    /// Combustion only (the Scope 2 default of this oracle where a provider offers it).
    Direct,
    /// Including upstream (lifecycle) emissions.
    Lifecycle,
}

impl FactorType {
    /// `direct` or `lifecycle`, as written into provenance.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Direct => "direct",
            Self::Lifecycle => "lifecycle",
        }
    }
}

/// What `GET /v1/carbon/sources` says about a configured provider: its kind and the attribution
/// of its figures. Never a key, token, password, file path or base URL (a URL could carry
/// credentials).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[schema(example = json!({"name": "electricitymaps", "kind": "electricitymaps", "live": true,
    "attribution": "Electricity Maps API v3", "licence": "the operator's Electricity Maps API terms",
    "url": "https://www.electricitymaps.com", "factor_types": ["direct"], "marginal": false,
    "granularity": "hourly"}))]
pub struct ProviderInfo {
    /// Name in the chain config and in provenance (`provider`); `static` for the built-in table.
    pub name: String,
    /// `static`, `electricitymaps`, `neso`, `watttime` or `csv`.
    pub kind: String,
    /// True when figures come from a remote service: past zone-hours are cached (an estimated
    /// figure only once its hour ended 2 hours ago), a failure is recorded as a fallback reason.
    pub live: bool,
    /// Who publishes the figures, as they ask to be cited (for `csv`: the `source` column values).
    pub attribution: String,
    /// Licence or terms of use of the figures.
    pub licence: String,
    /// Where the source is described; null for an operator's CSV series.
    #[schema(required = true)]
    pub url: Option<String>,
    /// Factor types this provider gives (`direct`, `lifecycle`), ascending.
    pub factor_types: Vec<FactorType>,
    /// True for marginal (MOER) rather than average figures.
    pub marginal: bool,
    /// Time resolution of the source, and so how an hour's figure is made: `yearly` (the year's
    /// figure, for every hour of it), `hourly` (the point of that hour), `half-hourly` or
    /// `5-minute` (the mean of the source's points in the hour), `as in the series` (an operator
    /// CSV: the figure of the span containing the hour's start, whatever its length).
    pub granularity: String,
}

/// A source of carbon intensity for a zone-hour.
pub trait IntensityProvider: Send + Sync {
    /// Name used in the chain config and in provenance (`provider`).
    fn name(&self) -> &str;

    /// Kind and attribution, for `GET /v1/carbon/sources` (never a secret); its `live` also
    /// decides whether answers are cached in the database.
    fn info(&self) -> ProviderInfo;

    /// The intensity of `zone` for the hour starting at `hour` (UTC, on the hour), as a figure
    /// for that hour, never "latest" for a past hour. `now` decides whether the hour is past.
    fn intensity<'a>(
        &'a self,
        zone: &'a GridZone,
        hour: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<Intensity, ProviderError>>;
}

/// Truncates `at` to the start of its UTC hour, for every date chrono represents (chrono's
/// `duration_trunc` gives up outside the years 1677–2262, the range of an `i64` of
/// nanoseconds).
#[must_use]
pub fn hour_start(at: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp(at.timestamp().div_euclid(3600) * 3600, 0).unwrap_or(at)
}

/// One step of a chain as tried for a zone-hour.
#[derive(Debug, Clone, PartialEq, serde::Serialize, utoipa::ToSchema)]
pub struct Attempt {
    /// Provider name, or `cache`.
    pub provider: String,
    /// `applied`, `failed` or `skipped` (cache miss).
    #[schema(value_type = crate::api::carbon::AttemptOutcome)]
    pub outcome: String,
    /// Why it failed or was skipped (absent when applied).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub reason: Option<String>,
}

/// What the chain gave for a zone-hour and how it got there.
#[derive(Debug, Clone)]
pub struct Resolution {
    /// The figure applied (its provenance carries the fallback reason, if any), or `None` when
    /// every step failed.
    pub intensity: Option<Intensity>,
    /// True when the figure applied was read from the cache table (a `cache` step, or a live
    /// provider's own figure for that zone-hour stored earlier) rather than asked for now.
    pub from_cache: bool,
    /// Every step tried, in order.
    pub attempts: Vec<Attempt>,
}

/// One step of a configured chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// A provider by name.
    Provider(String),
    /// Any cached figure for the zone-hour, whatever provider stored it.
    Cache,
}

impl Step {
    /// The name as written in the chain config: the provider's, or `cache`.
    #[must_use]
    pub fn name(&self) -> &str {
        match self {
            Self::Provider(name) => name,
            Self::Cache => "cache",
        }
    }
}

/// The oracle's carbon intensity service: the static table (zone checks), the providers and the
/// chain per zone.
pub struct Carbon {
    table: Arc<StaticTable>,
    providers: BTreeMap<String, Arc<dyn IntensityProvider>>,
    chains: BTreeMap<String, Vec<Step>>,
    default_chain: Vec<Step>,
    factor_type: FactorType,
}

impl std::fmt::Debug for Carbon {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Carbon")
            .field("providers", &self.providers.keys().collect::<Vec<_>>())
            .field("chains", &self.chains)
            .field("default_chain", &self.default_chain)
            .field("factor_type", &self.factor_type)
            .finish_non_exhaustive()
    }
}

impl Carbon {
    /// Static table only (no config file): every zone-hour gets Ember's yearly figure.
    ///
    /// # Errors
    /// Only if the embedded table is corrupt.
    pub fn static_only() -> Result<Self, String> {
        let table = Arc::new(StaticTable::embedded()?);
        Ok(Self::new(
            table.clone(),
            vec![Arc::new(static_table::StaticProvider(table))],
            BTreeMap::new(),
            vec![Step::Provider("static".into())],
            FactorType::Direct,
        ))
    }

    /// Assembles a service from its parts (the config loader and tests use it).
    #[must_use]
    pub fn new(
        table: Arc<StaticTable>,
        providers: Vec<Arc<dyn IntensityProvider>>,
        chains: BTreeMap<String, Vec<Step>>,
        default_chain: Vec<Step>,
        factor_type: FactorType,
    ) -> Self {
        Self {
            table,
            providers: providers
                .into_iter()
                .map(|p| (p.name().to_owned(), p))
                .collect(),
            chains,
            default_chain,
            factor_type,
        }
    }

    /// Checks `zone` against the static table (see [`StaticTable::zone`]).
    ///
    /// # Errors
    /// [`CarbonError::UnknownZone`].
    pub fn zone(&self, zone: &str) -> Result<GridZone, CarbonError> {
        self.table.zone(zone)
    }

    /// The static table.
    #[must_use]
    pub fn table(&self) -> &StaticTable {
        &self.table
    }

    /// The factor type preferred for location-based Scope 2.
    #[must_use]
    pub fn factor_type(&self) -> FactorType {
        self.factor_type
    }

    /// Every configured provider (the static table included), by name.
    pub fn providers(&self) -> impl Iterator<Item = &dyn IntensityProvider> {
        self.providers.values().map(AsRef::as_ref)
    }

    /// The chains configured per zone (canonical zone name or country code → steps).
    #[must_use]
    pub fn zone_chains(&self) -> &BTreeMap<String, Vec<Step>> {
        &self.chains
    }

    /// The chain of zones without their own (nor their country's) chain.
    #[must_use]
    pub fn default_chain(&self) -> &[Step] {
        &self.default_chain
    }

    /// The chain for `zone`: its own, else the country's, else the default.
    #[must_use]
    pub fn chain(&self, zone: &GridZone) -> &[Step] {
        let country = zone.name.split('-').next().unwrap_or_default();
        self.chains
            .get(&zone.name)
            .or_else(|| self.chains.get(country))
            .unwrap_or(&self.default_chain)
    }

    /// Resolves the intensity of `zone` for the hour containing `at`, walking the chain. A live
    /// provider is asked only when the cache has no figure from it for that zone-hour; a past
    /// hour's answer is stored, unless it is marked `estimated` and the hour ended less than
    /// [`ESTIMATE_GRACE_HOURS`] before `now` (a measured figure may still come). Failures become the `fallback_reason` of the figure finally
    /// applied. `db` is the pool, or the transaction of an issuance (on SQLite only the
    /// connection holding the write lock can store into the cache; each store runs in a savepoint
    /// so a failed one leaves the transaction usable); `None` only in tests without a database.
    pub async fn resolve<C: sea_orm::ConnectionTrait + sea_orm::TransactionTrait>(
        &self,
        db: Option<&C>,
        zone: &GridZone,
        at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Resolution {
        let hour = hour_start(at);
        let mut attempts = Vec::new();
        let mut reasons: Vec<String> = Vec::new();
        for step in self.chain(zone) {
            let found = match step {
                Step::Cache => match db {
                    Some(db) => cache::lookup_any(db, &zone.name, hour)
                        .await
                        .map(|hit| hit.map(|i| (i, true))),
                    None => Err("no database".into()),
                },
                Step::Provider(name) => self.ask(db, name, zone, hour, now).await,
            };
            match found {
                Ok(Some((mut intensity, from_cache))) => {
                    attempts.push(Attempt {
                        provider: step.name().to_owned(),
                        outcome: "applied".into(),
                        reason: None,
                    });
                    if !reasons.is_empty() {
                        intensity.provenance.fallback_reason = Some(reasons.join("; "));
                    }
                    return Resolution {
                        intensity: Some(intensity),
                        from_cache,
                        attempts,
                    };
                }
                Ok(None) => attempts.push(Attempt {
                    provider: step.name().to_owned(),
                    outcome: "skipped".into(),
                    reason: Some("no cached figure".into()),
                }),
                Err(reason) => {
                    tracing::warn!(zone = %zone.name, %hour, provider = step.name(), %reason, "Carbon provider failed; falling back.");
                    reasons.push(format!("{}: {reason}", step.name()));
                    attempts.push(Attempt {
                        provider: step.name().to_owned(),
                        outcome: "failed".into(),
                        reason: Some(reason),
                    });
                }
            }
        }
        Resolution {
            intensity: None,
            from_cache: false,
            attempts,
        }
    }

    async fn ask<C: sea_orm::ConnectionTrait + sea_orm::TransactionTrait>(
        &self,
        db: Option<&C>,
        name: &str,
        zone: &GridZone,
        hour: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<Option<(Intensity, bool)>, String> {
        let provider = self
            .providers
            .get(name)
            .ok_or_else(|| format!("provider {name:?} is not configured"))?;
        let live = provider.info().live;
        if live
            && let Some(db) = db
            && let Some(hit) = cache::lookup(db, &zone.name, hour, name).await?
        {
            return Ok(Some((hit, true)));
        }
        let intensity = provider
            .intensity(zone, hour, now)
            .await
            .map_err(|err| err.to_string())?;
        if live
            && settled(&intensity, hour, now)
            && let Some(db) = db
            && let Err(err) = cache::store(db, &zone.name, hour, name, &intensity, now).await
        {
            // The figure is still good for this issuance; the next one asks again.
            tracing::warn!(zone = %zone.name, %hour, provider = name, error = %err, "Could not cache a carbon intensity.");
        }
        Ok(Some((intensity, false)))
    }
}

/// Whether a live provider's figure for the hour starting at `hour` is final and may be cached:
/// the hour has ended, and an `estimated` figure's hour ended at least [`ESTIMATE_GRACE_HOURS`]
/// before `now`.
fn settled(intensity: &Intensity, hour: DateTime<Utc>, now: DateTime<Utc>) -> bool {
    let end = hour + Duration::hours(1);
    let grace = if intensity.provenance.estimated {
        Duration::hours(ESTIMATE_GRACE_HOURS)
    } else {
        Duration::zero()
    };
    end + grace <= now
}

/// Shared HTTP client for live providers: `timeout` per request, no redirects to other hosts
/// (none of the providers redirects).
///
/// # Errors
/// When the TLS stack cannot be built.
pub fn http_client(timeout: std::time::Duration) -> Result<reqwest::Client, String> {
    // reqwest is built without a crypto provider; the workspace uses ring (see SETUP.md).
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("wattest-oracle/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|err| format!("HTTP client: {}", err.without_url()))
}

/// Sends `req` and decodes a JSON body, mapping every failure to a [`ProviderError`].
///
/// # Errors
/// Status, transport or malformed-body errors.
pub async fn get_json<T: serde::de::DeserializeOwned>(
    req: reqwest::RequestBuilder,
) -> Result<T, ProviderError> {
    let resp = req.send().await.map_err(ProviderError::transport)?;
    let status = resp.status();
    if !status.is_success() {
        return Err(ProviderError::from_status(status, retry_after(&resp)));
    }
    let body = resp.bytes().await.map_err(ProviderError::transport)?;
    serde_json::from_slice(&body)
        .map_err(|err| ProviderError::Malformed(redact_quoted(&err.to_string())))
}

/// A serde error message with every double-quoted string replaced by `"…"`: serde quotes values
/// it read from the body (`invalid type: string "…", expected f64`), and a misbehaving provider
/// could echo a request header such as the API key there. Field names (in backticks) are kept.
#[must_use]
pub fn redact_quoted(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut inside = false;
    let mut chars = message.chars();
    while let Some(c) = chars.next() {
        if inside && c == '\\' {
            // An escaped character inside the string (serde writes `\"` for a quote).
            chars.next();
        } else if c == '"' {
            if inside {
                out.push_str("…\"");
            } else {
                out.push('"');
            }
            inside = !inside;
        } else if !inside {
            out.push(c);
        }
    }
    if inside {
        out.push('…');
    }
    out
}

#[cfg(test)]
pub(crate) mod mock {
    //! A tiny loopback HTTP server for provider tests: serves canned responses per path.

    use super::{GridZone, Intensity, IntensityProvider, ProviderError, ProviderInfo};
    use crate::carbon::FactorType;
    use axum::Router;
    use chrono::{DateTime, Utc};
    use futures::future::BoxFuture;
    use std::net::SocketAddr;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use wattest_shared::GramsCo2ePerKwh;
    use wattest_shared::certificate::Provenance;

    /// Starts `router` on 127.0.0.1:0 and returns its base URL.
    pub async fn serve(router: Router) -> String {
        let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            axum::serve(listener, router).await.expect("serve");
        });
        format!("http://{addr}")
    }

    /// Provider metadata for test providers: live, hourly, direct factors.
    pub fn test_info(name: &str) -> ProviderInfo {
        ProviderInfo {
            name: name.to_owned(),
            kind: "test".into(),
            live: true,
            attribution: "test".into(),
            licence: "test".into(),
            url: None,
            factor_types: vec![FactorType::Direct],
            marginal: false,
            granularity: "hourly".into(),
        }
    }

    /// A live provider that answers 123 g/kWh for any hour and counts how often it was asked.
    pub struct Counts(pub AtomicUsize);
    impl IntensityProvider for Counts {
        fn name(&self) -> &str {
            "counted"
        }
        fn info(&self) -> ProviderInfo {
            test_info("counted")
        }
        fn intensity<'a>(
            &'a self,
            _: &'a GridZone,
            _: DateTime<Utc>,
            _: DateTime<Utc>,
        ) -> BoxFuture<'a, Result<Intensity, ProviderError>> {
            self.0.fetch_add(1, Ordering::SeqCst);
            Box::pin(async move {
                Ok(Intensity {
                    value: GramsCo2ePerKwh(123.0),
                    provenance: Provenance {
                        provider: "counted".into(),
                        dataset: "test".into(),
                        year: 2025,
                        factor_type: "direct".into(),
                        estimated: false,
                        marginal: false,
                        fallback_reason: None,
                    },
                })
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::mock::{Counts, test_info};
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn hour_start_truncates_every_representable_date() {
        let at = |s: &str| {
            DateTime::parse_from_rfc3339(s)
                .expect("time")
                .with_timezone(&Utc)
        };
        for (time, hour) in [
            ("2026-11-24T10:20:30.5Z", "2026-11-24T10:00:00Z"),
            ("2026-11-24T10:00:00Z", "2026-11-24T10:00:00Z"),
            // Outside chrono's nanosecond range, where `duration_trunc` gives up.
            ("1600-06-01T10:20:00Z", "1600-06-01T10:00:00Z"),
            ("2300-01-01T00:59:59Z", "2300-01-01T00:00:00Z"),
        ] {
            assert_eq!(hour_start(at(time)), at(hour), "{time}");
        }
    }

    struct Fails(&'static str, ProviderError);
    impl IntensityProvider for Fails {
        fn name(&self) -> &str {
            self.0
        }
        fn info(&self) -> ProviderInfo {
            test_info(self.0)
        }
        fn intensity<'a>(
            &'a self,
            _: &'a GridZone,
            _: DateTime<Utc>,
            _: DateTime<Utc>,
        ) -> BoxFuture<'a, Result<Intensity, ProviderError>> {
            let err = self.1.clone();
            Box::pin(async move { Err(err) })
        }
    }

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().expect("time")
    }

    #[tokio::test]
    async fn a_failing_live_provider_falls_back_to_static_with_its_reason() {
        let table = Arc::new(StaticTable::embedded().expect("table"));
        let carbon = Carbon::new(
            table.clone(),
            vec![
                Arc::new(Fails("em", ProviderError::RateLimited(Some(30)))),
                Arc::new(static_table::StaticProvider(table)),
            ],
            BTreeMap::from([(
                "BE".to_owned(),
                vec![
                    Step::Provider("em".into()),
                    Step::Cache,
                    Step::Provider("static".into()),
                ],
            )]),
            vec![Step::Provider("static".into())],
            FactorType::Direct,
        );
        let zone = carbon.zone("BE").expect("zone");
        let r = carbon
            .resolve(
                None::<&sea_orm::DatabaseConnection>,
                &zone,
                at("2025-06-01T10:20:00Z"),
                at("2025-06-02T00:00:00Z"),
            )
            .await;
        let i = r.intensity.expect("static figure");
        assert!((i.value.0 - 117.58).abs() < 1e-9);
        assert_eq!(i.provenance.provider, "static");
        assert_eq!(
            i.provenance.fallback_reason.as_deref(),
            Some("em: rate limited (HTTP 429, retry after 30 s); cache: no database")
        );
        let outcomes: Vec<_> = r.attempts.iter().map(|a| a.outcome.as_str()).collect();
        assert_eq!(outcomes, ["failed", "failed", "applied"]);
        // A zone without its own chain uses the default.
        let de = carbon.zone("DE").expect("zone");
        assert_eq!(carbon.chain(&de), [Step::Provider("static".into())]);
    }

    #[tokio::test]
    async fn a_past_zone_hour_is_fetched_once_then_served_from_the_cache() {
        let storage = crate::storage::Storage::connect("sqlite::memory:")
            .await
            .expect("db");
        let table = Arc::new(StaticTable::embedded().expect("table"));
        let counted = Arc::new(Counts(AtomicUsize::new(0)));
        let carbon = Carbon::new(
            table,
            vec![counted.clone()],
            BTreeMap::new(),
            vec![Step::Provider("counted".into())],
            FactorType::Direct,
        );
        let zone = carbon.zone("BE").expect("zone");
        let now = at("2025-06-01T23:45:00Z");
        for round in 0..3 {
            let r = carbon
                .resolve(Some(storage.db()), &zone, at("2025-06-01T10:59:59Z"), now)
                .await;
            assert_eq!(r.from_cache, round > 0, "round {round}");
            assert_eq!(r.intensity.expect("figure").value.0, 123.0);
        }
        assert_eq!(counted.0.load(Ordering::SeqCst), 1);
        // The current hour is not cached (its figure may still change).
        for _ in 0..2 {
            carbon
                .resolve(Some(storage.db()), &zone, at("2025-06-01T23:30:00Z"), now)
                .await;
        }
        assert_eq!(counted.0.load(Ordering::SeqCst), 3);
    }

    /// A live provider whose figure is estimated (a forecast) until `measured` is set; it
    /// counts how often it was asked.
    struct Forecasts {
        asked: AtomicUsize,
        measured: std::sync::atomic::AtomicBool,
    }
    impl IntensityProvider for Forecasts {
        fn name(&self) -> &str {
            "forecasts"
        }
        fn info(&self) -> ProviderInfo {
            test_info("forecasts")
        }
        fn intensity<'a>(
            &'a self,
            _: &'a GridZone,
            _: DateTime<Utc>,
            _: DateTime<Utc>,
        ) -> BoxFuture<'a, Result<Intensity, ProviderError>> {
            self.asked.fetch_add(1, Ordering::SeqCst);
            let measured = self.measured.load(Ordering::SeqCst);
            Box::pin(async move {
                Ok(Intensity {
                    value: wattest_shared::GramsCo2ePerKwh(if measured { 150.0 } else { 140.0 }),
                    provenance: wattest_shared::certificate::Provenance {
                        provider: "forecasts".into(),
                        dataset: "test".into(),
                        year: 2025,
                        factor_type: "direct".into(),
                        estimated: !measured,
                        marginal: false,
                        fallback_reason: None,
                    },
                })
            })
        }
    }

    #[tokio::test]
    async fn an_estimate_for_a_just_ended_hour_is_applied_but_not_cached() {
        let storage = crate::storage::Storage::connect("sqlite::memory:")
            .await
            .expect("db");
        let table = Arc::new(StaticTable::embedded().expect("table"));
        let forecasts = Arc::new(Forecasts {
            asked: AtomicUsize::new(0),
            measured: false.into(),
        });
        let carbon = Carbon::new(
            table,
            vec![forecasts.clone()],
            BTreeMap::new(),
            vec![Step::Provider("forecasts".into()), Step::Cache],
            FactorType::Direct,
        );
        let zone = carbon.zone("GB").expect("zone");
        let hour = at("2025-06-01T10:00:00Z");
        let resolve = |now: &str| carbon.resolve(Some(storage.db()), &zone, hour, at(now));
        // Within the grace period after the hour: the forecast is applied each time, never
        // stored, and the `cache` step has nothing to serve either.
        for now in ["2025-06-01T11:00:00Z", "2025-06-01T12:59:59Z"] {
            let r = resolve(now).await;
            let i = r.intensity.expect("figure");
            assert_eq!((i.value.0, i.provenance.estimated), (140.0, true), "{now}");
            assert!(!r.from_cache, "{now}");
        }
        assert_eq!(forecasts.asked.load(Ordering::SeqCst), 2);
        assert_eq!(
            cache::lookup_any(storage.db(), "GB", hour)
                .await
                .expect("db"),
            None
        );
        // The measured figure arrives within the grace period: it is applied and stored at once.
        forecasts.measured.store(true, Ordering::SeqCst);
        let r = resolve("2025-06-01T12:30:00Z").await;
        assert_eq!(r.intensity.expect("figure").value.0, 150.0);
        forecasts.measured.store(false, Ordering::SeqCst);
        let r = resolve("2025-06-01T12:40:00Z").await;
        assert!(r.from_cache);
        let i = r.intensity.expect("figure");
        assert_eq!((i.value.0, i.provenance.estimated), (150.0, false));
        assert_eq!(forecasts.asked.load(Ordering::SeqCst), 3);

        // Another hour that stays estimated: cached once its hour ended the grace period ago,
        // then final (the first stored figure is kept).
        let hour = at("2025-06-01T11:00:00Z");
        let r = carbon
            .resolve(Some(storage.db()), &zone, hour, at("2025-06-01T14:00:00Z"))
            .await;
        assert!(!r.from_cache);
        forecasts.measured.store(true, Ordering::SeqCst);
        let r = carbon
            .resolve(Some(storage.db()), &zone, hour, at("2025-06-02T00:00:00Z"))
            .await;
        assert!(r.from_cache);
        assert_eq!(r.intensity.expect("figure").value.0, 140.0);
        assert_eq!(forecasts.asked.load(Ordering::SeqCst), 4);
    }

    #[test]
    fn no_error_message_can_carry_a_secret() {
        // Every variant's text is built from status codes, zone names and serde messages only.
        let msgs = [
            ProviderError::Unauthorized(401).to_string(),
            ProviderError::RateLimited(None).to_string(),
            ProviderError::Status(503).to_string(),
        ];
        assert_eq!(msgs[0], "credentials refused (HTTP 401)");
        assert_eq!(msgs[1], "rate limited (HTTP 429)");
        assert_eq!(msgs[2], "unexpected HTTP status 503");
    }

    #[test]
    fn malformed_body_messages_lose_every_quoted_value() {
        // What serde_json says about a body that echoes a key into a number field.
        let err = serde_json::from_str::<BTreeMap<String, f64>>(
            r#"{"carbonIntensity": "em-secret-key \" still-secret"}"#,
        )
        .expect_err("a string is not a number")
        .to_string();
        assert!(err.contains("em-secret-key"), "{err}");
        let redacted = redact_quoted(&err);
        assert!(
            !redacted.contains("secret") && redacted.starts_with("invalid type: string \"…\""),
            "{redacted}"
        );
        assert_eq!(
            redact_quoted("missing field `history` at line 1 column 2"),
            "missing field `history` at line 1 column 2"
        );
        assert_eq!(redact_quoted("cut \"off"), "cut \"…");
    }

    #[test]
    fn implausible_figures_are_refused_not_zeroed() {
        for bad in [
            -0.1,
            f64::NAN,
            f64::INFINITY,
            MAX_PLAUSIBLE_G_CO2E_PER_KWH + 0.5,
            1e308,
        ] {
            assert!(
                matches!(checked_value(bad), Err(ProviderError::Implausible(_))),
                "{bad}"
            );
        }
        assert_eq!(checked_value(0.0), Ok(0.0));
        assert_eq!(checked_value(1_234.5), Ok(1_234.5));
    }
}
