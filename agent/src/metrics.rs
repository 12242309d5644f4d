//! Prometheus metrics of the agent, served in the OpenMetrics text format at
//! `http://<--metrics-listen>/metrics` when `--metrics-listen` is given (off by default: an edge
//! node opens no port unless asked).
//!
//! | metric | type | meaning |
//! |---|---|---|
//! | `wattest_agent_samples_total` | counter | sampling ticks (every source read once) |
//! | `wattest_agent_source_failures_total` | counter | source reads that failed |
//! | `wattest_agent_windows_signed_total` | counter | windows signed and spooled |
//! | `wattest_agent_windows_acknowledged_total` | counter | windows the oracle accepted (duplicates included) |
//! | `wattest_agent_windows_rejected_total` | counter | windows the oracle refused (moved to `spool/rejected/`) |
//! | `wattest_agent_upload_errors_total` | counter | upload attempts that failed (oracle unreachable, 5xx) |
//! | `wattest_agent_spool_windows` | gauge | windows waiting in the spool |
//! | `wattest_agent_energy_joules_total{source}` | counter | energy integrated into signed windows per source id (e.g. `nvml:0`, `rapl:package-0`), J; sources may overlap (a host meter includes the CPU), so do not sum them |
//!
//! The counters are process-wide ([`global`]): one agent process measures one node.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::sync::OnceLock;
use std::sync::atomic::AtomicU64;

/// Label of a power source: its id as `wattest-agent sources` lists it.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceLabel {
    /// Source id, e.g. `nvml:0`.
    pub source: String,
}

/// The agent's counters and gauges.
#[derive(Debug, Default)]
pub struct AgentMetrics {
    /// Sampling ticks.
    pub samples: Counter,
    /// Failed source reads.
    pub source_failures: Counter,
    /// Windows signed and spooled.
    pub windows_signed: Counter,
    /// Windows acknowledged by the oracle.
    pub windows_acknowledged: Counter,
    /// Windows refused by the oracle.
    pub windows_rejected: Counter,
    /// Failed upload attempts.
    pub upload_errors: Counter,
    /// Windows waiting in the spool.
    pub spool_windows: Gauge,
    /// Energy in signed windows per source, J.
    pub energy_joules: Family<SourceLabel, Counter<f64, AtomicU64>>,
}

impl AgentMetrics {
    /// The OpenMetrics text exposition of every metric (ends with `# EOF`).
    #[must_use]
    pub fn encode(&self) -> String {
        let mut registry = Registry::with_prefix("wattest_agent");
        registry.register(
            "samples",
            "Sampling ticks (every source read once)",
            self.samples.clone(),
        );
        registry.register(
            "source_failures",
            "Source reads that failed",
            self.source_failures.clone(),
        );
        registry.register(
            "windows_signed",
            "Windows signed and spooled",
            self.windows_signed.clone(),
        );
        registry.register(
            "windows_acknowledged",
            "Windows the oracle accepted (duplicates included)",
            self.windows_acknowledged.clone(),
        );
        registry.register(
            "windows_rejected",
            "Windows the oracle refused",
            self.windows_rejected.clone(),
        );
        registry.register(
            "upload_errors",
            "Upload attempts that failed (oracle unreachable or 5xx)",
            self.upload_errors.clone(),
        );
        registry.register(
            "spool_windows",
            "Windows waiting in the spool",
            self.spool_windows.clone(),
        );
        registry.register(
            "energy_joules",
            "Energy integrated into signed windows, J",
            self.energy_joules.clone(),
        );
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
        out
    }
}

/// The process-wide metrics.
pub fn global() -> &'static AgentMetrics {
    static METRICS: OnceLock<AgentMetrics> = OnceLock::new();
    METRICS.get_or_init(AgentMetrics::default)
}

/// Serves `GET /metrics` on `listener` until the task is dropped; any other path is 404.
///
/// # Errors
/// The listener fails.
pub async fn serve(listener: tokio::net::TcpListener) -> std::io::Result<()> {
    use axum::http::header;
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(|| async {
            (
                [(
                    header::CONTENT_TYPE,
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                )],
                global().encode(),
            )
        }),
    );
    axum::serve(listener, app).await
}

/// Binds `addr` and serves the metrics in a background task; returns the bound address.
///
/// # Errors
/// The address cannot be bound (in use, not local, no permission).
pub async fn spawn(addr: std::net::SocketAddr) -> std::io::Result<std::net::SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    tokio::spawn(async move {
        if let Err(err) = serve(listener).await {
            tracing::error!(error = %err, "The metrics listener stopped.");
        }
    });
    tracing::info!(listen = %local, "Serving agent metrics at /metrics.");
    Ok(local)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_names_every_metric_with_its_value() {
        let m = AgentMetrics::default();
        m.windows_signed.inc_by(3);
        m.spool_windows.set(2);
        m.energy_joules
            .get_or_create(&SourceLabel {
                source: "nvml:0".into(),
            })
            .inc_by(7.5);
        let text = m.encode();
        assert!(
            text.contains("wattest_agent_windows_signed_total 3"),
            "{text}"
        );
        assert!(text.contains("wattest_agent_spool_windows 2"), "{text}");
        assert!(
            text.contains("wattest_agent_energy_joules_total{source=\"nvml:0\"} 7.5"),
            "{text}"
        );
        assert!(
            text.contains("wattest_agent_upload_errors_total 0"),
            "{text}"
        );
        assert!(text.trim_end().ends_with("# EOF"), "{text}");
    }
}
