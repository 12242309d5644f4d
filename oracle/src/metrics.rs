//! Prometheus metrics of the oracle, served at `/metrics` in the OpenMetrics text format.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

/// Label of a rejection: its problem code.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CodeLabel {
    /// Stable problem code, e.g. `bad_signature`.
    pub code: String,
}

/// The oracle's metrics.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Windows accepted.
    pub windows_accepted: Counter,
    /// Windows rejected, by code.
    pub windows_rejected: Family<CodeLabel, Counter>,
    /// Certificates issued.
    pub certificates_issued: Counter,
    /// Energy covered by issued certificates, Wh.
    pub certified_energy_wh: Counter<f64, AtomicU64>,
    /// Wall time of a telemetry request from body to answer, seconds.
    pub ingest_seconds: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("wattest");
        let windows_accepted = Counter::default();
        let windows_rejected = Family::<CodeLabel, Counter>::default();
        let certificates_issued = Counter::default();
        let certified_energy_wh = Counter::<f64, AtomicU64>::default();
        // 100 µs … ~3.3 s in ×2 steps.
        let ingest_seconds = Histogram::new(exponential_buckets(0.0001, 2.0, 16));
        registry.register(
            "windows_accepted",
            "Telemetry windows accepted",
            windows_accepted.clone(),
        );
        registry.register(
            "windows_rejected",
            "Telemetry windows rejected, by problem code",
            windows_rejected.clone(),
        );
        registry.register(
            "certificates_issued",
            "Energy certificates issued",
            certificates_issued.clone(),
        );
        registry.register(
            "certified_energy_wh",
            "Energy covered by issued certificates, Wh",
            certified_energy_wh.clone(),
        );
        registry.register(
            "ingest_seconds",
            "Time to verify and store one telemetry window, seconds",
            ingest_seconds.clone(),
        );
        Self {
            registry,
            windows_accepted,
            windows_rejected,
            certificates_issued,
            certified_energy_wh,
            ingest_seconds,
        }
    }
}

impl Metrics {
    /// The OpenMetrics text exposition.
    #[must_use]
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// Counts a rejected window.
    pub fn rejected(&self, code: &str) {
        self.windows_rejected
            .get_or_create(&CodeLabel {
                code: code.to_owned(),
            })
            .inc();
    }
}
