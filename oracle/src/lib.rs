//! The Wattest oracle: verifies signed energy windows, applies grid carbon intensity, issues
//! signed energy certificates and serves them, with compliance exports, over HTTP.

pub mod api;
pub mod attestation;
pub mod auth;
pub mod carbon;
pub mod certificates;
pub mod config;
pub mod credits;
pub mod export;
pub mod ingest;
pub mod issuance;
pub mod keys;
pub mod ledger;
pub mod metrics;
pub mod plausibility;
pub mod storage;
pub mod verification;

use std::sync::Arc;

/// Settings of a running oracle.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Issuer written into certificates (`iss`).
    pub issuer: String,
    /// Certificate validity.
    pub certificate_validity: chrono::Duration,
    /// Reward policy.
    pub credits: credits::CreditPolicy,
    /// Trust anchors and intermediates for TPM EK certificates; empty: TPM enrollment refused.
    pub ek_roots: Vec<openssl::x509::X509>,
    /// Transparency log origin (and checkpoint key name); see [`ledger::default_origin`].
    pub log_origin: String,
    /// How far a window's end may lie after the oracle's clock, s (`--max-clock-skew-secs`,
    /// default [`verification::MAX_FUTURE_SKEW_SECONDS`]).
    pub max_clock_skew_secs: i64,
    /// How long before its node's enrollment (beyond the clock skew bound) a window may start, s
    /// (`--max-backdate-hours`, default 0).
    pub max_backdate_secs: i64,
}

/// Everything a request handler needs; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    /// Database.
    pub storage: storage::Storage,
    /// Carbon intensity: zone checks, providers and the chain per zone (replaced by
    /// `serve --carbon-config`).
    pub carbon: Arc<carbon::Carbon>,
    /// Oracle signing keys (rotating; reloaded when `keys rotate` changes them).
    pub keys: Arc<keys::KeyringHandle>,
    /// Settings.
    pub settings: Arc<Settings>,
    /// Prometheus metrics.
    pub metrics: Arc<metrics::Metrics>,
    /// The transparency log's identity and checkpoint key.
    pub ledger: Arc<ledger::Ledger>,
    /// Group commit of accepted windows (its writer task runs on the runtime that opened the
    /// state).
    pub ingest: ingest::Committer,
    /// The last `/v1/stats` totals, recomputed at most every
    /// [`api::stats::STATS_CACHE_PERIOD`] (a test may replace it with a shorter period).
    pub stats_cache: Arc<api::stats::StatsCache>,
}

impl AppState {
    /// Opens the data dir's key and the database, and loads the carbon table.
    ///
    /// # Errors
    /// Key, database or table failure, as a message for the operator.
    pub async fn open(
        data_dir: &std::path::Path,
        database_url: &str,
        settings: Settings,
    ) -> anyhow::Result<Self> {
        let keys = keys::KeyringHandle::open(data_dir)?;
        let ledger = ledger::Ledger::load_or_create(data_dir, &settings.log_origin)?;
        let storage = storage::Storage::connect(database_url).await?;
        let carbon = carbon::Carbon::static_only().map_err(anyhow::Error::msg)?;
        let ingest = ingest::Committer::spawn();
        Ok(Self {
            ingest,
            storage,
            carbon: Arc::new(carbon),
            keys: Arc::new(keys),
            settings: Arc::new(settings),
            metrics: Arc::default(),
            ledger: Arc::new(ledger),
            stats_cache: Arc::default(),
        })
    }
}
