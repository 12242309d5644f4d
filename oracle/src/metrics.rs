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

/// Labels of an HTTP request: the route template (not the raw path, so ids do not explode the
/// label set), the method and the status code.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabel {
    /// Route template, e.g. `/v1/certificates/{id}`; `unmatched` for the 404 fallback.
    pub route: String,
    /// HTTP method, one of [`method_label`]'s fixed set.
    pub method: String,
    /// Status code.
    pub status: u16,
}

/// Label of a request's route.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabel {
    /// Route template.
    pub route: String,
}

/// Label of a carbon-intensity provider fallback.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProviderLabel {
    /// The provider that failed (e.g. `electricitymaps`).
    pub provider: String,
}

/// The oracle's metrics.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Windows accepted.
    pub windows_accepted: Counter,
    /// Windows held after a gap in their node's chain.
    pub windows_held: Counter,
    /// Windows sent again after they were accepted (answered 200 with the original receipt;
    /// not counted in `windows_accepted`).
    pub windows_duplicate: Counter,
    /// Windows rejected, by code.
    pub windows_rejected: Family<CodeLabel, Counter>,
    /// Certificates issued.
    pub certificates_issued: Counter,
    /// Certificates signed before the ingest writer (`issuance::presign`) whose claims were no
    /// longer current there, so issuance was redone in the writer.
    pub presign_stale: Counter,
    /// Energy covered by issued certificates, Wh.
    pub certified_energy_wh: Counter<f64, AtomicU64>,
    /// Wall time of a telemetry request (`/v1/telemetry` or `/v1/telemetry/batch`) from body to
    /// answer, seconds.
    pub ingest_seconds: Histogram,
    /// Windows appended per ingest transaction (group commit, `crate::ingest`).
    pub ingest_batch_windows: Histogram,
    /// HTTP requests answered, by route, method and status.
    pub http_requests: Family<HttpLabel, Counter>,
    /// HTTP request latency by route, seconds.
    pub http_request_seconds: Family<RouteLabel, Histogram>,
    /// Carbon-intensity lookups during issuance in which a provider of the chain failed and a
    /// later step was tried, by the provider that failed (incremented by `issuance::prepare`).
    pub provider_fallbacks: Family<ProviderLabel, Counter>,
    /// Requests refused by the rate limiter.
    pub rate_limited: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("wattest");
        let windows_accepted = Counter::default();
        let windows_rejected = Family::<CodeLabel, Counter>::default();
        let windows_held = Counter::default();
        let windows_duplicate = Counter::default();
        let certificates_issued = Counter::default();
        let presign_stale = Counter::default();
        let certified_energy_wh = Counter::<f64, AtomicU64>::default();
        // 100 µs … ~3.3 s in ×2 steps.
        let ingest_seconds = Histogram::new(exponential_buckets(0.0001, 2.0, 16));
        // 1 … 256 windows in ×2 steps (`ingest::MAX_BATCH` is 256).
        let ingest_batch_windows = Histogram::new(exponential_buckets(1.0, 2.0, 9));
        registry.register(
            "ingest_batch_windows",
            "Telemetry windows appended per database transaction (group commit)",
            ingest_batch_windows.clone(),
        );
        registry.register(
            "windows_accepted",
            "Telemetry windows accepted",
            windows_accepted.clone(),
        );
        registry.register(
            "windows_held",
            "Telemetry windows held after a gap in their node's chain (202)",
            windows_held.clone(),
        );
        registry.register(
            "windows_duplicate",
            "Telemetry windows sent again after they were accepted (200, the original receipt)",
            windows_duplicate.clone(),
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
            "certificates_presigned_stale",
            "Certificates signed ahead of the ingest writer that were no longer current there and were issued again",
            presign_stale.clone(),
        );
        registry.register(
            "certified_energy_wh",
            "Energy covered by issued certificates, Wh",
            certified_energy_wh.clone(),
        );
        registry.register(
            "ingest_seconds",
            "Time to verify and store the windows of one telemetry request (one window, or a batch), seconds",
            ingest_seconds.clone(),
        );
        let http_requests = Family::<HttpLabel, Counter>::default();
        let http_request_seconds =
            Family::<RouteLabel, Histogram>::new_with_constructor(latency_histogram as fn() -> _);
        let provider_fallbacks = Family::<ProviderLabel, Counter>::default();
        let rate_limited = Counter::default();
        registry.register(
            "http_requests",
            "HTTP requests answered, by route template, method and status",
            http_requests.clone(),
        );
        registry.register(
            "http_request_seconds",
            "HTTP request latency by route template, seconds",
            http_request_seconds.clone(),
        );
        registry.register(
            "provider_fallbacks",
            "Carbon-intensity lookups that fell back from a live provider, by provider",
            provider_fallbacks.clone(),
        );
        registry.register(
            "rate_limited",
            "Requests refused by the rate limiter (429)",
            rate_limited.clone(),
        );
        Self {
            registry,
            http_requests,
            http_request_seconds,
            provider_fallbacks,
            rate_limited,
            windows_accepted,
            windows_held,
            windows_duplicate,
            windows_rejected,
            certificates_issued,
            presign_stale,
            certified_energy_wh,
            ingest_seconds,
            ingest_batch_windows,
        }
    }
}

/// Request latency buckets: 100 µs … ~3.3 s in ×2 steps.
fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0001, 2.0, 16))
}

/// The `method` label of a request: its method when standard (`GET`, `HEAD`, `POST`, `PUT`,
/// `DELETE`, `PATCH`, `OPTIONS`, `CONNECT`, `TRACE`), else `other`. The server accepts any
/// extension method a client makes up, and each distinct label value is a series kept for the
/// process's lifetime on the public `/metrics`, so the raw method must not be the label.
#[must_use]
pub fn method_label(method: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::OPTIONS => "OPTIONS",
        Method::CONNECT => "CONNECT",
        Method::TRACE => "TRACE",
        _ => "other",
    }
}

impl Metrics {
    /// Counts an answered HTTP request and its latency. `route` must come from a fixed set (the
    /// matched route template, or `unmatched`), never from the request's path; the method is
    /// labelled by [`method_label`].
    pub fn http(&self, route: &str, method: &axum::http::Method, status: u16, seconds: f64) {
        self.http_requests
            .get_or_create(&HttpLabel {
                route: route.to_owned(),
                method: method_label(method).to_owned(),
                status,
            })
            .inc();
        self.http_request_seconds
            .get_or_create(&RouteLabel {
                route: route.to_owned(),
            })
            .observe(seconds);
    }

    /// Counts a fallback away from a live carbon-intensity provider.
    pub fn provider_fallback(&self, provider: &str) {
        self.provider_fallbacks
            .get_or_create(&ProviderLabel {
                provider: provider.to_owned(),
            })
            .inc();
    }

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
