//! The uploader: sends spooled windows to the oracle in seq order, with exponential backoff and
//! jitter on transient failures, and removes each from the spool once acknowledged.

use crate::spool::Spool;
use serde::Deserialize;
use std::time::Duration;
use tokio::time::Instant;

/// First retry delay.
pub const BACKOFF_START: Duration = Duration::from_millis(500);
/// Longest retry delay.
pub const BACKOFF_CAP: Duration = Duration::from_secs(30);
/// Timeout of one HTTP request.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

pub use wattest_shared::api::CertificateSummary;

#[derive(Debug, Deserialize)]
struct Accepted {
    certificate: Option<CertificateSummary>,
}

#[derive(Debug, Deserialize)]
struct Problem {
    code: Option<String>,
    detail: Option<String>,
    already_accepted: Option<bool>,
}

/// What the oracle said about one window.
#[derive(Debug)]
pub enum Outcome {
    /// Accepted now (with the certificate when final).
    Accepted(Option<CertificateSummary>),
    /// Accepted earlier (a retry after a lost acknowledgement).
    AlreadyAccepted,
    /// Refused for good (4xx): retrying the same bytes cannot succeed.
    Rejected {
        /// HTTP status.
        status: u16,
        /// Problem code.
        code: String,
        /// Problem detail.
        detail: String,
    },
    /// Network error or 5xx: retry later.
    Transient(String),
}

/// Result of draining the spool.
#[derive(Debug, Default)]
pub struct Drained {
    /// Certificates issued for windows sent in this drain.
    pub certificates: Vec<CertificateSummary>,
    /// Windows acknowledged.
    pub acknowledged: usize,
    /// (seq, reason) of windows refused for good.
    pub rejected: Vec<(u64, String)>,
    /// Windows still in the spool (the deadline passed).
    pub remaining: usize,
}

/// HTTP client of the oracle's telemetry endpoint.
#[derive(Debug, Clone)]
pub struct Uploader {
    client: reqwest::Client,
    base: String,
}

impl Uploader {
    /// A client for the oracle at `base` (e.g. `http://127.0.0.1:8080`).
    ///
    /// # Errors
    /// The TLS backend cannot be initialised.
    pub fn new(base: &str) -> Result<Self, reqwest::Error> {
        let client = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .user_agent(concat!("wattest-agent/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self {
            client,
            base: base.trim_end_matches('/').to_owned(),
        })
    }

    /// The HTTP client (for other endpoints).
    #[must_use]
    pub fn client(&self) -> &reqwest::Client {
        &self.client
    }

    /// The oracle base URL.
    #[must_use]
    pub fn base(&self) -> &str {
        &self.base
    }

    /// Posts one window as `application/jose`.
    pub async fn post(&self, jws: &str) -> Outcome {
        let response = self
            .client
            .post(format!("{}/v1/telemetry", self.base))
            .header(reqwest::header::CONTENT_TYPE, "application/jose")
            .body(jws.to_owned())
            .send()
            .await;
        let response = match response {
            Ok(r) => r,
            Err(err) => return Outcome::Transient(format!("{err}")),
        };
        let status = response.status();
        let body = response.bytes().await.unwrap_or_default();
        if status == reqwest::StatusCode::ACCEPTED {
            // Held by the oracle after a gap in the chain: durable there, appended and credited
            // once the missing windows arrive.
            tracing::warn!("The oracle holds this window until earlier missing windows arrive.");
            return Outcome::Accepted(None);
        }
        if status.is_success() {
            return match serde_json::from_slice::<Accepted>(&body) {
                Ok(a) => Outcome::Accepted(a.certificate),
                Err(_) => Outcome::Accepted(None),
            };
        }
        if status.is_server_error() || status == reqwest::StatusCode::TOO_MANY_REQUESTS {
            return Outcome::Transient(format!("HTTP {status}"));
        }
        let problem: Problem = serde_json::from_slice(&body).unwrap_or(Problem {
            code: None,
            detail: Some(String::from_utf8_lossy(&body).into_owned()),
            already_accepted: None,
        });
        if problem.already_accepted == Some(true) {
            return Outcome::AlreadyAccepted;
        }
        Outcome::Rejected {
            status: status.as_u16(),
            code: problem.code.unwrap_or_else(|| "unknown".into()),
            detail: problem.detail.unwrap_or_default(),
        }
    }

    /// Sends every pending window in seq order until the spool is empty or `deadline` passes.
    /// Transient failures are retried with exponential backoff (×2 from [`BACKOFF_START`] to
    /// [`BACKOFF_CAP`]) and full jitter; a rejected window moves to `spool/rejected/`.
    pub async fn drain(&self, spool: &Spool, deadline: Option<Instant>) -> Drained {
        let mut report = Drained::default();
        let mut delay = BACKOFF_START;
        loop {
            let pending = match spool.pending() {
                Ok(p) => {
                    crate::metrics::global()
                        .spool_windows
                        .set(i64::try_from(p.len()).unwrap_or(i64::MAX));
                    p
                }
                Err(err) => {
                    tracing::error!(error = %err, "Cannot read the spool.");
                    return report;
                }
            };
            let Some((seq, path)) = pending.first().cloned() else {
                return report;
            };
            let jws = match Spool::read(&path) {
                Ok(j) => j,
                Err(err) => {
                    tracing::error!(error = %err, "Cannot read a spooled window.");
                    return report;
                }
            };
            match self.post(&jws).await {
                Outcome::Accepted(certificate) => {
                    tracing::debug!(seq, "Window acknowledged.");
                    crate::metrics::global().windows_acknowledged.inc();
                    report.acknowledged += 1;
                    report.certificates.extend(certificate);
                    delay = BACKOFF_START;
                    if let Err(err) = spool.ack(seq) {
                        tracing::error!(seq, error = %err, "Cannot remove an acknowledged window from the spool.");
                        return report;
                    }
                }
                Outcome::AlreadyAccepted => {
                    tracing::info!(
                        seq,
                        "Window was already accepted; removing it from the spool."
                    );
                    report.acknowledged += 1;
                    crate::metrics::global().windows_acknowledged.inc();
                    if let Err(err) = spool.ack(seq) {
                        tracing::error!(seq, error = %err, "Cannot remove an acknowledged window from the spool.");
                        return report;
                    }
                }
                Outcome::Rejected {
                    status,
                    code,
                    detail,
                } => {
                    tracing::error!(seq, status, code = %code, detail = %detail, "The oracle rejected a window; it is kept in spool/rejected/.");
                    crate::metrics::global().windows_rejected.inc();
                    let reason =
                        serde_json::json!({ "status": status, "code": code, "detail": detail })
                            .to_string();
                    if let Err(err) = spool.reject(seq, &reason) {
                        tracing::error!(seq, error = %err, "Cannot move a rejected window.");
                        return report;
                    }
                    report.rejected.push((seq, format!("{code}: {detail}")));
                }
                Outcome::Transient(reason) => {
                    crate::metrics::global().upload_errors.inc();
                    let now = Instant::now();
                    if deadline.is_some_and(|d| now + delay > d) {
                        report.remaining = pending.len();
                        tracing::warn!(pending = pending.len(), reason = %reason, "Oracle unreachable; windows stay in the spool for the next run.");
                        return report;
                    }
                    let jittered = delay.mul_f64(rand_unit());
                    tracing::warn!(seq, reason = %reason, retry_in_ms = jittered.as_millis() as u64, "Oracle unreachable; retrying.");
                    tokio::time::sleep(jittered).await;
                    delay = (delay * 2).min(BACKOFF_CAP);
                }
            }
        }
    }
}

/// A uniform number in [0.5, 1.0) from the clock's sub-second noise: jitter needs spread, not
/// cryptographic quality.
fn rand_unit() -> f64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    0.5 + f64::from(nanos % 1_000_000) / 2_000_000.0
}
