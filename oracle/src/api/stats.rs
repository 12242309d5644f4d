//! Public network statistics (`GET /v1/stats`) and node heartbeat / health (`GET /v1/nodes`).

use super::problem::ApiError;
use crate::AppState;
use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;
use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;
use wattest_shared::{AttestationLevel, Eur};

/// A node is healthy when its last window ended at most this long ago, seconds: twice the
/// longest window the agent accepts (`--window` ≤ 3600 s in agent/src/main.rs), so one late or
/// lost window does not flip a node to stale.
pub const HEALTHY_WITHIN_SECS: i64 = 2 * 3600;

/// How long a computed `/v1/stats` answer is served before it is computed again: 10 s.
pub const STATS_CACHE_PERIOD: std::time::Duration = std::time::Duration::from_secs(10);

/// The last `/v1/stats` answer, computed again at most once per period.
///
/// The totals are full-table aggregates and the route is public, so they are not computed per
/// request: an answer younger than the period is served as is (figures up to one period stale),
/// and the requests that find it stale share one computation (single flight: the first computes
/// while the others wait for its result). A failed computation is not kept; the next request
/// tries again.
#[derive(Debug)]
pub struct StatsCache {
    period: std::time::Duration,
    last: tokio::sync::Mutex<Option<(tokio::time::Instant, Stats)>>,
}

impl Default for StatsCache {
    /// A cache with [`STATS_CACHE_PERIOD`].
    fn default() -> Self {
        Self::new(STATS_CACHE_PERIOD)
    }
}

impl StatsCache {
    /// An empty cache whose answers are served for `period`.
    #[must_use]
    pub fn new(period: std::time::Duration) -> Self {
        Self {
            period,
            last: tokio::sync::Mutex::new(None),
        }
    }

    /// The cached totals if computed less than the period ago, else those of `compute` (then
    /// cached). Concurrent callers wait for one running `compute` rather than start their own.
    ///
    /// # Errors
    /// The error of `compute`, when it ran and failed.
    pub async fn get_or_compute<E, F>(&self, compute: F) -> Result<Stats, E>
    where
        F: Future<Output = Result<Stats, E>>,
    {
        let mut last = self.last.lock().await;
        if let Some((at, stats)) = last.as_ref()
            && at.elapsed() < self.period
        {
            return Ok(stats.clone());
        }
        let stats = compute.await?;
        *last = Some((tokio::time::Instant::now(), stats.clone()));
        Ok(stats)
    }
}

/// Totals over the whole oracle. Energies in Wh, emissions in kg CO2e (location-based, from
/// the grid zone's carbon intensity), money as a decimal EUR string.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[schema(example = json!({"nodes": 3, "active_nodes": 1, "windows": 1200, "certificates": 14,
    "energy_wh": 5321.5, "emissions_kg": 1.93, "avoided_emissions_kg": 0.41,
    "cooperative_fund_eur": "0.012300", "active_within_secs": 7200}))]
pub struct Stats {
    /// Enrolled nodes.
    pub nodes: u64,
    /// Nodes whose last window ended within `active_within_secs`.
    pub active_nodes: u64,
    /// Telemetry windows accepted.
    pub windows: u64,
    /// Certificates issued and not revoked (the figures below are theirs: a revoked
    /// certificate's figures and reward are void).
    pub certificates: u64,
    /// Energy covered by certificates, Wh.
    pub energy_wh: f64,
    /// Location-based emissions of that energy, kg CO2e.
    pub emissions_kg: f64,
    /// Avoided emissions (on-site solar), kg CO2e.
    pub avoided_emissions_kg: f64,
    /// Cooperative fund's share of the avoided-emissions rewards, EUR.
    pub cooperative_fund_eur: Eur,
    /// The activity horizon used for `active_nodes`, seconds.
    pub active_within_secs: i64,
}

/// Network totals: nodes, active nodes, energy, emissions, avoided emissions, cooperative fund.
/// Public; computed at most every 10 s, so up to 10 s stale.
#[utoipa::path(get, path = "/v1/stats", tag = "meta", responses(
    (status = 200, description = "Totals", body = Stats),
))]
pub async fn stats(State(state): State<AppState>) -> Result<Json<Stats>, ApiError> {
    Ok(Json(
        state
            .stats_cache
            .get_or_compute(compute_stats(&state))
            .await?,
    ))
}

/// The totals, from the database (full-table aggregates).
async fn compute_stats(state: &AppState) -> Result<Stats, ApiError> {
    let since = Utc::now() - chrono::Duration::seconds(HEALTHY_WITHIN_SECS);
    let (nodes, active_nodes) = state.storage.node_counts(since).await?;
    let windows = state.storage.window_count().await?;
    let totals = state.storage.certificate_totals().await?;
    Ok(Stats {
        nodes,
        active_nodes,
        windows,
        certificates: u64::try_from(totals.certificates.unwrap_or(0)).unwrap_or(0),
        energy_wh: totals.consumed_wh.unwrap_or(0.0),
        emissions_kg: totals.emissions_kg.unwrap_or(0.0),
        avoided_emissions_kg: totals.avoided_kg.unwrap_or(0.0),
        cooperative_fund_eur: Eur::from_micros(totals.fund_micro_eur.unwrap_or(0)),
        active_within_secs: HEALTHY_WITHIN_SECS,
    })
}

/// One enrolled node with its heartbeat.
#[derive(Debug, Serialize, ToSchema)]
pub struct NodeInfo {
    /// Node id (UUID).
    pub node_id: String,
    /// Name given at enrollment.
    pub name: String,
    /// Grid zone.
    pub zone: String,
    /// `software` or `tpm`.
    #[schema(value_type = AttestationLevel)]
    pub attestation_level: String,
    /// Enrollment time.
    pub enrolled_at: DateTime<Utc>,
    /// Seq of the last accepted window (0: none yet).
    pub last_seq: i64,
    /// End of the last accepted window (the heartbeat); null when none yet.
    #[schema(required = true)]
    pub last_window_end: Option<DateTime<Utc>>,
    /// `healthy` (last window ended within `HEALTHY_WITHIN_SECS` = 7200 s), `stale`, or
    /// `never_reported`.
    #[schema(value_type = NodeHealth)]
    pub health: &'static str,
    /// Windows held after a gap in this node's chain (valid, not yet appended nor credited;
    /// docs/protocol.md §3.4).
    pub held_windows: u64,
    /// Why the node is flagged (e.g. `seq_conflict:7`, `held_rejected:9:chain_broken`), if it
    /// is (null otherwise): its certificates are then `contraindicated`.
    #[schema(required = true)]
    pub flag: Option<String>,
}

/// A node's health, from its heartbeat (the end of its last accepted window).
// Schema only: `NodeInfo::health` is a string with these values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum NodeHealth {
    /// The last window ended within `HEALTHY_WITHIN_SECS` (7200 s).
    Healthy,
    /// The last window ended longer ago.
    Stale,
    /// No window accepted yet.
    NeverReported,
}

/// Enrolled nodes.
#[derive(Debug, Serialize, ToSchema)]
pub struct NodeList {
    /// Nodes, by enrollment time.
    pub nodes: Vec<NodeInfo>,
}

/// Enrolled nodes with their heartbeat (last window, last seq) and health (role auditor; admin
/// passes).
#[utoipa::path(get, path = "/v1/nodes", tag = "nodes", security(("bearer" = [])), responses(
    (status = 200, description = "Nodes", body = NodeList),
))]
pub async fn list_nodes(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<NodeList>, ApiError> {
    crate::auth::require(&state.storage, &headers, super::NODE_READERS).await?;
    let now = Utc::now();
    let held = state.storage.held_counts().await?;
    let nodes = state
        .storage
        .list_nodes()
        .await?
        .into_iter()
        .map(|n| NodeInfo {
            held_windows: held.get(&n.id).copied().unwrap_or(0),
            health: match n.last_end {
                None => "never_reported",
                Some(t) if (now - t).num_seconds() <= HEALTHY_WITHIN_SECS => "healthy",
                Some(_) => "stale",
            },
            node_id: n.id,
            name: n.name,
            zone: n.zone,
            attestation_level: n.attestation_level,
            enrolled_at: n.enrolled_at,
            last_seq: n.last_seq,
            last_window_end: n.last_end,
            flag: n.flag,
        })
        .collect();
    Ok(Json(NodeList { nodes }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::Duration;

    fn stats(nodes: u64) -> Stats {
        Stats {
            nodes,
            active_nodes: 0,
            windows: 0,
            certificates: 0,
            energy_wh: 0.0,
            emissions_kg: 0.0,
            avoided_emissions_kg: 0.0,
            cooperative_fund_eur: Eur::from_micros(0),
            active_within_secs: HEALTHY_WITHIN_SECS,
        }
    }

    /// Requests that find the cache stale at the same time share one computation; within the
    /// period nothing is computed again; after it, once more; a failure is not cached.
    #[tokio::test]
    async fn stats_cache_computes_once_per_period_single_flight() {
        let period = Duration::from_millis(800);
        let cache = StatsCache::new(period);
        let runs = AtomicU64::new(0);
        let compute = || async {
            let n = runs.fetch_add(1, Ordering::SeqCst) + 1;
            tokio::time::sleep(Duration::from_millis(50)).await;
            Ok::<_, ()>(stats(n))
        };
        let started = tokio::time::Instant::now();
        let answers =
            futures::future::join_all((0..8).map(|_| cache.get_or_compute(compute()))).await;
        assert!(answers.iter().all(|a| *a == Ok(stats(1))), "{answers:?}");
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        assert_eq!(cache.get_or_compute(compute()).await, Ok(stats(1)));
        assert!(
            started.elapsed() < period,
            "too slow to test within the period"
        );
        tokio::time::sleep_until(started + period + Duration::from_millis(100)).await;
        assert_eq!(cache.get_or_compute(compute()).await, Ok(stats(2)));
        tokio::time::sleep(period + Duration::from_millis(100)).await;
        assert_eq!(
            cache.get_or_compute(async { Err::<Stats, _>(()) }).await,
            Err(())
        );
        assert_eq!(cache.get_or_compute(compute()).await, Ok(stats(3)));
    }
}
