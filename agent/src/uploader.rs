//! The uploader: sends spooled windows to the oracle in seq order, with exponential backoff and
//! jitter on transient failures, and removes each from the spool once acknowledged.
//!
//! [`Uploader::drain`] sends the spool in batches of up to [`DRAIN_BATCH_WINDOWS`] windows
//! (`POST /v1/telemetry/batch`, `docs/protocol.md` §3.6) and treats each window's result as
//! the answer to that window alone. An oracle without the batch route (404 or 405: older than
//! the batch endpoint) gets the windows one at a time (`POST /v1/telemetry`) for the rest of
//! that drain.

use crate::spool::Spool;
use crate::state::StateError;
use serde::Deserialize;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::time::Instant;
use wattest_shared::api::{
    MAX_BATCH_BODY_BYTES, MAX_BATCH_WINDOWS, TelemetryBatchRequest, TelemetryBatchResponse,
    TelemetryBatchResult,
};

/// First retry delay.
pub const BACKOFF_START: Duration = Duration::from_millis(500);
/// Longest retry delay.
pub const BACKOFF_CAP: Duration = Duration::from_secs(30);
/// Timeout of one HTTP request.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest `Retry-After` (429, 503) honoured: a longer one waits this long, like the backoff.
pub const RETRY_AFTER_CAP: Duration = BACKOFF_CAP;

/// Problem codes of the oracle's verdicts on a window (`docs/protocol.md` §3.4): the oracle
/// read these bytes and refused them, so sending them again cannot succeed. Any other 4xx (a
/// reverse proxy's 404 or 408, the oracle's `not_found` for a wrong `--oracle` URL,
/// `seq_replay`, an answer without a `code`) says nothing about the window: it is retried.
pub const WINDOW_REJECTION_CODES: &[&str] = &[
    "malformed_jws",
    "unsupported_alg",
    "wrong_typ",
    "forbidden_header",
    "missing_kid",
    "unknown_kid",
    "bad_signature",
    "malformed_payload",
    "unsupported_version",
    "node_mismatch",
    "seq_conflict",
    "seq_gap",
    "chain_broken",
    "invalid_period",
    "future_window",
    "overlapping_window",
    "implausible",
    "job_closed",
    "payload_too_large",
    "unsupported_media_type",
];

/// Most windows [`Uploader::drain`] sends in one `POST /v1/telemetry/batch`: 100, not the
/// protocol's [`MAX_BATCH_WINDOWS`] (500). A hundred windows already spread the HTTP cost of a
/// request over a hundred windows (beyond that the oracle's per-window work dominates), while
/// a smaller batch:
/// - answers sooner: the oracle answers a batch only once all its windows are committed, and
///   the whole request (agent side [`REQUEST_TIMEOUT`], oracle side its request timeout) must
///   fit in 30 s even on a busy oracle; a request that fails as a whole is sent again, so a
///   timeout costs the oracle at most 100 windows of wasted work;
/// - leaves room for other nodes: the oracle queues every window of a batch for its ingest
///   writer at once (a bounded queue, `QUEUE_DEPTH` in `oracle/src/ingest.rs`), so one agent
///   draining a long backlog does not fill that queue ahead of other nodes' live windows;
/// - keeps a request small on an edge node (about 0.3 MB for 100 windows of ~3 KB).
pub const DRAIN_BATCH_WINDOWS: usize = 100;
const _: () = assert!(DRAIN_BATCH_WINDOWS >= 1 && DRAIN_BATCH_WINDOWS <= MAX_BATCH_WINDOWS);

/// Bytes of `{"windows":[]}` around the windows of a batch body.
const BATCH_ENVELOPE_BYTES: usize = 16;
/// Bytes each window adds to a batch body besides its JWS: two quotes and a comma.
const BATCH_PER_WINDOW_BYTES: usize = 3;

pub use wattest_shared::api::CertificateSummary;

/// The 200 receipt (`docs/protocol.md` §3.3) or the 202 held answer (§3.4): both carry the
/// window's `seq` and `hash`, which a page of another server answering 200 does not.
#[derive(Debug, Deserialize)]
struct Accepted {
    #[serde(rename = "seq")]
    _seq: u64,
    #[serde(rename = "hash")]
    _hash: String,
    #[serde(default)]
    certificate: Option<CertificateSummary>,
}

#[derive(Debug, Default, Deserialize)]
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
    /// Refused for good: a 4xx with one of the [`WINDOW_REJECTION_CODES`]; retrying the same
    /// bytes cannot succeed.
    Rejected {
        /// HTTP status.
        status: u16,
        /// Problem code.
        code: String,
        /// Problem detail.
        detail: String,
    },
    /// Network error, 5xx, 429, or a 4xx that is no verdict on the window (`seq_replay`, a
    /// proxy's 404…): retry later.
    Transient {
        /// What failed, for the log.
        reason: String,
        /// The answer's `Retry-After` (429, 503): wait at least this long.
        retry_after: Option<Duration>,
    },
}

impl Outcome {
    fn transient(reason: String) -> Self {
        Self::Transient {
            reason,
            retry_after: None,
        }
    }
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
    /// Windows still in the spool when the drain returned (the deadline passed, or it stopped
    /// on a local error), counted from the spool.
    pub remaining: usize,
    /// Why the drain stopped before the spool was empty for a reason of this machine (the spool
    /// cannot be read, a window cannot be removed or set aside), naming the file; `None` when
    /// it emptied the spool or only the deadline stopped it.
    pub stopped: Option<String>,
}

/// What the oracle said about a batch (`POST /v1/telemetry/batch`) as a whole.
#[derive(Debug)]
pub enum BatchOutcome {
    /// One outcome per window sent, in the order sent.
    Results(Vec<Outcome>),
    /// The oracle did not take the request as a batch: 404 or 405 (an oracle older than the
    /// batch route), or another 4xx but 429 (e.g. a proxy's smaller body limit). The windows
    /// were not judged; send them one at a time.
    Unsupported {
        /// HTTP status.
        status: u16,
        /// The answer's body (problem detail or text), for the log.
        detail: String,
    },
    /// Network error, 5xx, 429, or an answer that cannot be read: nothing is known about any
    /// window; retry later (at least `retry_after`, the answer's `Retry-After`, when given).
    Transient {
        /// What failed, for the log.
        reason: String,
        /// The answer's `Retry-After` (429, 503).
        retry_after: Option<Duration>,
    },
}

/// HTTP client of the oracle's telemetry endpoints.
#[derive(Debug, Clone)]
pub struct Uploader {
    client: reqwest::Client,
    base: String,
    /// Whether the fall-back to single-window posts was already logged at warn level (once per
    /// process, not once per drain round).
    fallback_logged: Arc<AtomicBool>,
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
            fallback_logged: Arc::new(AtomicBool::new(false)),
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

    /// Posts one window as `application/jose`. A 2xx counts only with a readable receipt (or
    /// held answer): a body that cannot be read or is not one (another server's page) is
    /// transient, since the window may not have reached the oracle.
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
            // Without the URL: it may hold a password, and this reason is logged at each retry.
            Err(err) => return Outcome::transient(format!("{}", err.without_url())),
        };
        let status = response.status();
        let retry_after = retry_after(response.headers());
        let body = match response.bytes().await {
            Ok(body) => body,
            Err(err) => {
                return Outcome::Transient {
                    reason: format!("reading the HTTP {status} answer: {}", err.without_url()),
                    retry_after,
                };
            }
        };
        if status.is_success() {
            let accepted = match serde_json::from_slice::<Accepted>(&body) {
                Ok(a) => a,
                Err(err) => {
                    return Outcome::transient(format!(
                        "the HTTP {status} answer is not a receipt ({err}): {}",
                        String::from_utf8_lossy(&body)
                            .chars()
                            .take(200)
                            .collect::<String>()
                    ));
                }
            };
            if status == reqwest::StatusCode::ACCEPTED {
                // Held by the oracle after a gap in the chain: durable there, appended and
                // credited once the missing windows arrive.
                tracing::warn!(
                    "The oracle holds this window until earlier missing windows arrive."
                );
            }
            return classify(status.as_u16(), accepted.certificate, None, None);
        }
        let problem = serde_json::from_slice(&body).unwrap_or_else(|_| Problem {
            detail: Some(String::from_utf8_lossy(&body).chars().take(300).collect()),
            ..Problem::default()
        });
        classify(status.as_u16(), None, Some(problem), retry_after)
    }

    /// Posts `windows` (compact JWS, one node's in ascending seq) in one
    /// `POST /v1/telemetry/batch` (`docs/protocol.md` §3.6). Each window's result maps to an
    /// [`Outcome`] exactly as [`Uploader::post`] maps the answer to that window alone.
    pub async fn post_batch(&self, windows: &[String]) -> BatchOutcome {
        let request = TelemetryBatchRequest {
            windows: windows.to_vec(),
        };
        let response = self
            .client
            .post(format!("{}/v1/telemetry/batch", self.base))
            .json(&request)
            .send()
            .await;
        let response = match response {
            Ok(r) => r,
            Err(err) => {
                return BatchOutcome::Transient {
                    reason: format!("{}", err.without_url()),
                    retry_after: None,
                };
            }
        };
        let status = response.status();
        let retry_after = retry_after(response.headers());
        let body = match response.bytes().await {
            Ok(body) => body,
            Err(err) => {
                return BatchOutcome::Transient {
                    reason: format!("reading the HTTP {status} answer: {}", err.without_url()),
                    retry_after,
                };
            }
        };
        if status.is_server_error() || status == reqwest::StatusCode::TOO_MANY_REQUESTS {
            return BatchOutcome::Transient {
                reason: format!("HTTP {status}"),
                retry_after,
            };
        }
        if !status.is_success() {
            let detail = serde_json::from_slice::<Problem>(&body)
                .ok()
                .and_then(|p| p.detail)
                .unwrap_or_else(|| String::from_utf8_lossy(&body).chars().take(300).collect());
            return BatchOutcome::Unsupported {
                status: status.as_u16(),
                detail,
            };
        }
        match serde_json::from_slice::<TelemetryBatchResponse>(&body) {
            Ok(answer) if answer.results.len() == windows.len() => {
                BatchOutcome::Results(answer.results.into_iter().map(outcome_of).collect())
            }
            // Which window a result belongs to is unknown: nothing is acknowledged, and a window
            // the oracle did accept gets its original receipt when sent again.
            Ok(answer) => BatchOutcome::Transient {
                reason: format!(
                    "the oracle answered {} results for {} windows",
                    answer.results.len(),
                    windows.len()
                ),
                retry_after: None,
            },
            Err(err) => BatchOutcome::Transient {
                reason: format!("unreadable batch answer: {err}"),
                retry_after: None,
            },
        }
    }

    /// Sends every pending window in seq order until the spool is empty or `deadline` passes,
    /// in batches of up to [`DRAIN_BATCH_WINDOWS`] windows (and [`MAX_BATCH_BODY_BYTES`]).
    ///
    /// Each window's result is handled in seq order as the answer to that window alone: 200,
    /// 202 (held by the oracle) and a duplicate (`already_accepted`) remove it from the spool,
    /// a 4xx with one of the [`WINDOW_REJECTION_CODES`] moves it to `spool/rejected/`. The
    /// first transient result (5xx, 429, any other 4xx), or a request that fails as a whole
    /// (network error, 5xx, 429, unreadable answer), stops the batch there: that window and
    /// every later one stay in the spool and are sent again after exponential backoff (×2 from
    /// [`BACKOFF_START`] to [`BACKOFF_CAP`]) with jitter, and at least the answer's
    /// `Retry-After` (at most [`RETRY_AFTER_CAP`]). A window leaves the spool only after its
    /// acknowledgement, in seq order.
    ///
    /// A spooled file that is not text (not UTF-8) can never be sent: it is moved to
    /// `spool/rejected/` with a reason (code `unreadable_spool_file`), logged with its path
    /// and reported in `rejected`, and the windows after it go on. Another local failure
    /// (the spool or a file cannot be read, a window cannot be removed or set aside) stops the
    /// drain, logged with the path and reported in [`Drained::stopped`]. `remaining` is
    /// counted from the spool on every return.
    ///
    /// An oracle that does not take the batch (404 or 405: no batch route yet; another 4xx but
    /// 429) gets the windows one at a time ([`Uploader::post`]) for the rest of this drain;
    /// the first such fall-back of the process is logged at warn level.
    pub async fn drain(&self, spool: &Spool, deadline: Option<Instant>) -> Drained {
        let mut report = Drained::default();
        if let Err(stopped) = self.drain_rounds(spool, deadline, &mut report).await {
            report.stopped = Some(stopped);
        }
        match spool.pending() {
            Ok(pending) => {
                report.remaining = pending.len();
                crate::metrics::global()
                    .spool_windows
                    .set(i64::try_from(pending.len()).unwrap_or(i64::MAX));
            }
            Err(err) => {
                tracing::error!(error = %err, "Cannot read the spool.");
                report
                    .stopped
                    .get_or_insert(format!("cannot read the spool: {err}"));
            }
        }
        report
    }

    /// The rounds of [`Uploader::drain`], recording into `report` (all but `remaining`);
    /// `Ok` when the spool is empty or the deadline passed.
    ///
    /// # Errors
    /// Why it stopped on a local failure (logged already).
    async fn drain_rounds(
        &self,
        spool: &Spool,
        deadline: Option<Instant>,
        report: &mut Drained,
    ) -> Result<(), String> {
        let metrics = crate::metrics::global();
        let mut delay = BACKOFF_START;
        let mut batches = true;
        loop {
            let pending = spool.pending().map_err(|err| {
                tracing::error!(error = %err, "Cannot read the spool.");
                format!("cannot read the spool: {err}")
            })?;
            metrics
                .spool_windows
                .set(i64::try_from(pending.len()).unwrap_or(i64::MAX));
            if pending.is_empty() {
                return Ok(());
            }
            let limit = if batches { DRAIN_BATCH_WINDOWS } else { 1 };
            let mut seqs = Vec::with_capacity(limit.min(pending.len()));
            let mut windows = Vec::with_capacity(limit.min(pending.len()));
            let mut bytes = BATCH_ENVELOPE_BYTES;
            let mut set_aside = false;
            for (seq, path) in pending.iter().take(limit) {
                let jws = match Spool::read(path) {
                    Ok(j) => j,
                    // Not UTF-8: no JWS, and it never becomes one. Set aside (not deleted), so
                    // that the windows after it are not held back for ever.
                    Err(err @ StateError::Io { .. }) if err.is_invalid_data() => {
                        tracing::error!(seq, file = %path.display(), error = %err, "A spooled window is not text and can never be sent; it is moved to spool/rejected/.");
                        // The error names the file already (`{path}: {cause}`).
                        let detail = err.to_string();
                        let reason = serde_json::json!({
                            "status": null, "code": "unreadable_spool_file", "detail": detail,
                        })
                        .to_string();
                        spool.reject(*seq, &reason).map_err(|err| {
                            tracing::error!(seq, file = %path.display(), error = %err, "Cannot move an unreadable spooled window to spool/rejected/.");
                            format!("cannot set aside the unreadable window {}: {err}", path.display())
                        })?;
                        metrics.windows_rejected.inc();
                        report
                            .rejected
                            .push((*seq, format!("unreadable_spool_file: {detail}")));
                        set_aside = true;
                        break;
                    }
                    Err(err) => {
                        tracing::error!(seq, file = %path.display(), error = %err, "Cannot read a spooled window.");
                        return Err(format!(
                            "cannot read the spooled window {}: {err}",
                            path.display()
                        ));
                    }
                };
                bytes += jws.len() + BATCH_PER_WINDOW_BYTES;
                if !windows.is_empty() && bytes > MAX_BATCH_BODY_BYTES {
                    break;
                }
                seqs.push(*seq);
                windows.push(jws);
            }
            if windows.is_empty() && set_aside {
                continue;
            }
            let outcomes = if batches {
                match self.post_batch(&windows).await {
                    BatchOutcome::Results(outcomes) => outcomes,
                    BatchOutcome::Transient {
                        reason,
                        retry_after,
                    } => vec![Outcome::Transient {
                        reason,
                        retry_after,
                    }],
                    BatchOutcome::Unsupported { status, detail } => {
                        self.log_fallback(status, &detail);
                        batches = false;
                        continue;
                    }
                }
            } else {
                vec![self.post(&windows[0]).await]
            };
            // Results in seq order; each window of this batch before it has left the spool.
            for (&seq, outcome) in seqs.iter().zip(outcomes) {
                match outcome {
                    Outcome::Accepted(certificate) => {
                        tracing::debug!(seq, "Window acknowledged.");
                        delay = BACKOFF_START;
                        report.certificates.extend(certificate);
                        acknowledge(spool, seq, report)?;
                    }
                    Outcome::AlreadyAccepted => {
                        tracing::info!(
                            seq,
                            "Window was already accepted; removing it from the spool."
                        );
                        acknowledge(spool, seq, report)?;
                    }
                    Outcome::Rejected {
                        status,
                        code,
                        detail,
                    } => {
                        tracing::error!(seq, status, code = %code, detail = %detail, "The oracle rejected a window; it is kept in spool/rejected/.");
                        metrics.windows_rejected.inc();
                        let reason =
                            serde_json::json!({ "status": status, "code": code, "detail": detail })
                                .to_string();
                        if let Err(err) = spool.reject(seq, &reason) {
                            tracing::error!(seq, error = %err, "Cannot move a rejected window.");
                            return Err(format!(
                                "cannot move the rejected window {seq} to spool/rejected/: {err}"
                            ));
                        }
                        metrics.spool_windows.dec();
                        report.rejected.push((seq, format!("{code}: {detail}")));
                    }
                    Outcome::Transient {
                        reason,
                        retry_after,
                    } => {
                        metrics.upload_errors.inc();
                        let wait = delay
                            .mul_f64(rand_unit())
                            .max(retry_after.unwrap_or_default().min(RETRY_AFTER_CAP));
                        if deadline.is_some_and(|d| Instant::now() + wait > d) {
                            tracing::warn!(reason = %reason, "Oracle unreachable; windows stay in the spool for the next run.");
                            return Ok(());
                        }
                        tracing::warn!(seq, reason = %reason, retry_in_ms = wait.as_millis() as u64, "Oracle unreachable; retrying.");
                        tokio::time::sleep(wait).await;
                        delay = (delay * 2).min(BACKOFF_CAP);
                        // This window and the rest of the batch are sent again, in order.
                        break;
                    }
                }
            }
        }
    }

    /// Logs that the oracle does not take batches: at warn level the first time in this
    /// process, at debug level after that (every drain round tries the batch again).
    fn log_fallback(&self, status: u16, detail: &str) {
        let older = status == 404 || status == 405;
        if self.fallback_logged.swap(true, Ordering::Relaxed) {
            tracing::debug!(
                status,
                detail,
                "The oracle did not take a batch; sending windows one at a time."
            );
        } else if older {
            tracing::warn!(
                status,
                "The oracle has no batch endpoint (POST /v1/telemetry/batch); it is probably older than this agent. Sending windows one at a time."
            );
        } else {
            tracing::warn!(
                status,
                detail,
                "The oracle refused a batch as a whole; sending windows one at a time."
            );
        }
    }
}

/// Removes acknowledged window `seq` from the spool and counts it.
///
/// # Errors
/// Why it cannot be removed (logged already).
fn acknowledge(spool: &Spool, seq: u64, report: &mut Drained) -> Result<(), String> {
    let metrics = crate::metrics::global();
    metrics.windows_acknowledged.inc();
    report.acknowledged += 1;
    if let Err(err) = spool.ack(seq) {
        tracing::error!(seq, error = %err, "Cannot remove an acknowledged window from the spool.");
        return Err(format!(
            "cannot remove the acknowledged window {seq} from the spool: {err}"
        ));
    }
    metrics.spool_windows.dec();
    Ok(())
}

/// What one result of a batch means for its window: what [`Uploader::post`] makes of the same
/// status and body.
fn outcome_of(result: TelemetryBatchResult) -> Outcome {
    if result.status == 202 {
        tracing::warn!(
            seq = result.held.as_ref().map(|h| h.seq),
            expected_seq = result.held.as_ref().map(|h| h.expected_seq),
            "The oracle holds this window until earlier missing windows arrive."
        );
    }
    let problem = result.problem.map(|p| Problem {
        code: Some(p.code),
        detail: Some(p.detail),
        already_accepted: p.already_accepted,
    });
    classify(
        result.status,
        result.accepted.and_then(|a| a.certificate),
        problem,
        None,
    )
}

/// The outcome of one window's answer, the same for a single post and a batch result: 2xx
/// accepted (202: held by the oracle, no certificate); a duplicate's `already_accepted: true`
/// (older oracles; today a duplicate is a 200 with the original receipt) acknowledged; a 4xx
/// with one of the [`WINDOW_REJECTION_CODES`] refused for good; anything else transient: 5xx,
/// 429, `seq_replay` (nothing was stored, resend as is: `docs/protocol.md` §3.4), and a 4xx
/// that is no verdict on the window (a proxy's or a wrong URL's 404, 405, 408; no `code`).
fn classify(
    status: u16,
    certificate: Option<CertificateSummary>,
    problem: Option<Problem>,
    retry_after: Option<Duration>,
) -> Outcome {
    if status == 202 {
        return Outcome::Accepted(None);
    }
    if (200..300).contains(&status) {
        return Outcome::Accepted(certificate);
    }
    let problem = problem.unwrap_or_default();
    if (400..500).contains(&status) && problem.already_accepted == Some(true) {
        return Outcome::AlreadyAccepted;
    }
    let code = problem.code.unwrap_or_default();
    let detail = problem.detail.unwrap_or_default();
    if (400..500).contains(&status) && WINDOW_REJECTION_CODES.contains(&code.as_str()) {
        return Outcome::Rejected {
            status,
            code,
            detail,
        };
    }
    let hint = if (400..500).contains(&status) && status != 429 && code != "seq_replay" {
        " (not a verdict on the window: is the oracle URL right?)"
    } else {
        ""
    };
    let code = if code.is_empty() {
        String::new()
    } else {
        format!(" {code}")
    };
    Outcome::Transient {
        reason: format!("HTTP {status}{code}: {detail}{hint}"),
        retry_after,
    }
}

/// The `Retry-After` of an answer: delta-seconds, or an HTTP date (the time until it, 0 when
/// past); `None` when absent or unreadable.
fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let value = headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    Some(
        (at.with_timezone(&chrono::Utc) - chrono::Utc::now())
            .to_std()
            .unwrap_or_default(),
    )
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

#[cfg(test)]
mod tests {
    //! [`Uploader::drain`] against a stub oracle that answers each window (`w<seq>`) from a
    //! script, so that mixed batch results, whole-request failures and an oracle without the
    //! batch route can be checked exactly.

    use super::*;
    use axum::extract::State;
    use axum::http::StatusCode;
    use axum::response::{IntoResponse, Response};
    use serde_json::{Value, json};
    use std::collections::{HashMap, VecDeque};
    use std::sync::Mutex;

    /// A scripted answer to one window, as the oracle answers it (`oracle/src/api/telemetry.rs`,
    /// `oracle/src/api/problem.rs`, the plumbing in `oracle/src/api/mod.rs`).
    #[derive(Debug, Clone)]
    enum Answer {
        Ok,
        Certificate,
        Held,
        /// A window accepted before (a lost acknowledgement): 200 with the original receipt.
        Duplicate,
        /// 409 `seq_replay`, `already_accepted: false`: nothing stored, resend as is.
        Replay,
        Refused,
        Unavailable,
        /// 429 `rate_limited` with `Retry-After` (the oracle's rate limiter answers it for a
        /// whole request, single or batch).
        RateLimited,
    }

    #[derive(Default)]
    struct Script {
        /// Answers per window, used in turn; a window with none left gets [`Answer::Ok`].
        answers: HashMap<String, VecDeque<Answer>>,
        /// Whole-request answers of the batch route, used in turn before the per-window ones.
        batch_status: VecDeque<u16>,
        /// `Retry-After` seconds of a 429 or 503 answered for a whole request.
        retry_after: Option<u64>,
        /// Windows of each request: ("batch" | "single", windows).
        requests: Vec<(&'static str, Vec<String>)>,
        /// When each request arrived.
        arrivals: Vec<Instant>,
    }

    type Shared = Arc<Mutex<Script>>;

    fn certificate() -> CertificateSummary {
        let t = chrono::DateTime::<chrono::Utc>::UNIX_EPOCH;
        CertificateSummary {
            id: "cert-1".into(),
            job_id: Some("job".into()),
            node_id: "node".into(),
            zone: "BE".into(),
            issued_at: t,
            period_start: t,
            period_end: t,
            energy_wh: 5.0,
            grid_wh: 5.0,
            solar_wh: 0.0,
            emissions_kg_co2e: 0.001,
            intensity_g_co2e_per_kwh: 200.0,
            intensity_dataset: "test".into(),
            avoided_kg_co2e: 0.0,
            attestation_level: "software".into(),
            window_count: 5,
            state: wattest_shared::api::CertificateState::Valid,
        }
    }

    /// The oracle's RFC 9457 body (`ApiError` into `Problem`): title the status's reason,
    /// `already_accepted` and `expected_seq` only where the oracle sets them.
    fn problem(status: u16, code: &str, expected_seq: Option<u64>) -> Value {
        let title = StatusCode::from_u16(status)
            .ok()
            .and_then(|s| s.canonical_reason())
            .unwrap_or("Error");
        let mut p = json!({
            "type": format!("https://wattest.dev/problems/{code}"), "title": title,
            "status": status, "detail": format!("stub {code}"), "code": code,
        });
        if let Some(expected) = expected_seq {
            p["already_accepted"] = json!(false);
            p["expected_seq"] = json!(expected);
        }
        p
    }

    /// The code the oracle's plumbing gives a whole-request error (`ApiError::from_status`).
    fn plumbing_code(status: u16) -> &'static str {
        match status {
            404 => "not_found",
            405 => "method_not_allowed",
            413 => "payload_too_large",
            415 => "unsupported_media_type",
            429 => "rate_limited",
            503 => "unavailable",
            s if s >= 500 => "internal",
            _ => "invalid_request",
        }
    }

    /// The status and body `/v1/telemetry` would answer for `jws`, and the next answer.
    fn answer(script: &mut Script, jws: &str) -> (u16, Value) {
        let seq: u64 = jws.trim_start_matches('w').parse().unwrap_or(0);
        let next = script
            .answers
            .get_mut(jws)
            .and_then(VecDeque::pop_front)
            .unwrap_or(Answer::Ok);
        let receipt = |certificate: Option<CertificateSummary>| {
            json!({ "node_id": "node", "seq": seq, "hash": format!("h{seq}"),
                    "salt_length": "digest", "certificate": certificate })
        };
        match next {
            Answer::Ok | Answer::Duplicate => (200, receipt(None)),
            Answer::Certificate => (200, receipt(Some(certificate()))),
            Answer::Held => (
                202,
                json!({ "node_id": "node", "seq": seq, "hash": format!("h{seq}"),
                        "status": "held", "expected_seq": 1 }),
            ),
            Answer::Replay => (409, problem(409, "seq_replay", Some(seq))),
            Answer::Refused => (422, problem(422, "implausible", None)),
            Answer::Unavailable => (503, problem(503, "unavailable", None)),
            Answer::RateLimited => (429, problem(429, "rate_limited", None)),
        }
    }

    /// The response: errors as `application/problem+json`, with `Retry-After` on a 429 or 503
    /// when the script sets one.
    fn respond(status: u16, body: &Value, retry_after: Option<u64>) -> Response {
        let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut response = (code, axum::Json(body.clone())).into_response();
        if status >= 400 {
            response.headers_mut().insert(
                axum::http::header::CONTENT_TYPE,
                axum::http::HeaderValue::from_static("application/problem+json"),
            );
        }
        if let Some(seconds) = retry_after.filter(|_| status == 429 || status == 503) {
            response.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from(seconds),
            );
        }
        response
    }

    async fn single(State(script): State<Shared>, body: String) -> Response {
        let mut script = script
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        script.requests.push(("single", vec![body.clone()]));
        script.arrivals.push(Instant::now());
        let (status, body) = answer(&mut script, &body);
        respond(status, &body, script.retry_after)
    }

    async fn batch(
        State(script): State<Shared>,
        axum::Json(request): axum::Json<TelemetryBatchRequest>,
    ) -> Response {
        let mut script = script
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        script.requests.push(("batch", request.windows.clone()));
        script.arrivals.push(Instant::now());
        if let Some(status) = script.batch_status.pop_front() {
            return respond(
                status,
                &problem(status, plumbing_code(status), None),
                script.retry_after,
            );
        }
        let results: Vec<Value> = request
            .windows
            .iter()
            .map(|jws| {
                let (status, body) = answer(&mut script, jws);
                let member = match status {
                    200 => "accepted",
                    202 => "held",
                    _ => "problem",
                };
                json!({ "status": status, member: body })
            })
            .collect();
        respond(200, &json!({ "results": results }), None)
    }

    /// The oracle's answer to an unknown route: 404 `not_found` problem.
    async fn no_route() -> Response {
        respond(404, &problem(404, "not_found", None), None)
    }

    /// A stub oracle (with or without the batch route) and an uploader pointed at it.
    async fn stub(script: Script, with_batch: bool) -> (Uploader, Shared) {
        let shared: Shared = Arc::new(Mutex::new(script));
        let mut app = axum::Router::new()
            .route("/v1/telemetry", axum::routing::post(single))
            .fallback(no_route);
        if with_batch {
            app = app.route("/v1/telemetry/batch", axum::routing::post(batch));
        }
        let app = app.with_state(shared.clone());
        (serve(app).await, shared)
    }

    /// Serves `app` on a loopback port; an uploader pointed at it.
    async fn serve(app: axum::Router) -> Uploader {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move { axum::serve(listener, app).await });
        wattest_shared::tls::install_crypto_provider();
        Uploader::new(&format!("http://{addr}")).expect("client")
    }

    fn spool_with(n: u64) -> (tempfile::TempDir, Spool) {
        let tmp = tempfile::tempdir().expect("tmp");
        let spool = Spool::new(tmp.path().to_owned());
        for seq in 1..=n {
            spool.put(seq, &format!("w{seq}")).expect("put");
        }
        (tmp, spool)
    }

    fn names(seqs: impl IntoIterator<Item = u64>) -> Vec<String> {
        seqs.into_iter().map(|s| format!("w{s}")).collect()
    }

    fn requests(shared: &Shared) -> Vec<(&'static str, Vec<String>)> {
        shared
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .requests
            .clone()
    }

    /// Time between the first two requests the stub received.
    /// The first retry came at least a second after the first request: a `Retry-After: 1` was
    /// heeded (the first backoff alone is 0.25–0.5 s).
    fn assert_waited_a_second(shared: &Shared) {
        let script = shared
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let gap = script.arrivals[1] - script.arrivals[0];
        assert!(gap >= Duration::from_secs(1), "{gap:?}");
    }

    /// A request that fails gives a reason (logged at each retry) without the oracle URL:
    /// reqwest's own error names it (reqwest moves a password to the Authorization header
    /// first, but a query or path may still hold a secret).
    #[tokio::test]
    async fn a_failed_request_is_logged_without_the_urls_password() {
        // Bound, then closed: the port refuses connections.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .expect("bind")
            .local_addr()
            .expect("addr")
            .port();
        let uploader =
            Uploader::new(&format!("http://node:pw-secret@127.0.0.1:{port}")).expect("client");
        let reasons = [
            match uploader.post("w1").await {
                Outcome::Transient { reason, .. } => reason,
                other => panic!("{other:?}"),
            },
            match uploader.post_batch(&["w1".to_owned()]).await {
                BatchOutcome::Transient { reason, .. } => reason,
                other => panic!("{other:?}"),
            },
        ];
        for reason in reasons {
            assert!(!reason.is_empty());
            assert!(!reason.contains("pw-secret"), "{reason}");
            assert!(!reason.contains("127.0.0.1"), "{reason}");
        }
    }

    #[tokio::test]
    async fn a_backlog_goes_in_seq_order_in_batches_of_drain_batch_windows() {
        let (uploader, shared) = stub(Script::default(), true).await;
        let n = 2 * DRAIN_BATCH_WINDOWS as u64 + 50;
        let (_tmp, spool) = spool_with(n);
        let report = uploader.drain(&spool, None).await;
        assert_eq!(report.acknowledged, n as usize);
        assert!(report.rejected.is_empty() && report.certificates.is_empty());
        assert_eq!(report.remaining, 0);
        assert!(spool.pending().expect("pending").is_empty());
        let requests = requests(&shared);
        let sizes: Vec<usize> = requests.iter().map(|(_, w)| w.len()).collect();
        assert_eq!(sizes, [DRAIN_BATCH_WINDOWS, DRAIN_BATCH_WINDOWS, 50]);
        assert!(requests.iter().all(|(route, _)| *route == "batch"));
        let sent: Vec<String> = requests.into_iter().flat_map(|(_, w)| w).collect();
        assert_eq!(sent, names(1..=n), "every window once, in seq order");
    }

    #[tokio::test]
    async fn each_result_counts_alone_and_a_transient_one_keeps_the_rest_of_the_batch() {
        let mut script = Script::default();
        for (seq, answers) in [
            (2, vec![Answer::Refused]),
            (3, vec![Answer::Unavailable, Answer::Ok]),
            (4, vec![Answer::Ok, Answer::Duplicate]),
            (5, vec![Answer::Ok, Answer::Held]),
            (6, vec![Answer::Certificate, Answer::Certificate]),
        ] {
            script.answers.insert(format!("w{seq}"), answers.into());
        }
        let (uploader, shared) = stub(script, true).await;
        let (tmp, spool) = spool_with(6);
        let report = uploader.drain(&spool, None).await;

        // w1 acknowledged, w2 set aside, w3 failed transiently: w3..w6 stay and go again (the
        // 200s of w4..w6 in the first answer are not acted on), then w3 200, w4 a duplicate,
        // w5 held, w6 its certificate.
        assert_eq!(
            requests(&shared),
            [("batch", names(1..=6)), ("batch", names(3..=6))]
        );
        assert_eq!(report.acknowledged, 5);
        assert_eq!(report.rejected.len(), 1);
        assert_eq!(report.rejected[0].0, 2);
        assert!(
            report.rejected[0].1.starts_with("implausible"),
            "{:?}",
            report.rejected
        );
        assert_eq!(
            report.certificates,
            [certificate()],
            "one certificate, once"
        );
        assert_eq!(report.remaining, 0);
        assert!(spool.pending().expect("pending").is_empty());
        let rejected = tmp.path().join("rejected");
        assert_eq!(
            std::fs::read_to_string(rejected.join(format!("{:020}.jws", 2))).expect("kept"),
            "w2"
        );
        let reason: Value = serde_json::from_slice(
            &std::fs::read(rejected.join(format!("{:020}.reason.json", 2))).expect("reason"),
        )
        .expect("json");
        assert_eq!(
            (reason["status"].as_u64(), reason["code"].as_str()),
            (Some(422), Some("implausible"))
        );
    }

    #[tokio::test]
    async fn a_failed_request_is_retried_whole_and_the_deadline_leaves_the_spool_intact() {
        let script = Script {
            batch_status: [503, 429].into(),
            ..Script::default()
        };
        let (uploader, shared) = stub(script, true).await;
        let (_tmp, spool) = spool_with(3);
        let report = uploader.drain(&spool, None).await;
        assert_eq!(report.acknowledged, 3);
        assert_eq!(
            requests(&shared),
            [
                ("batch", names(1..=3)),
                ("batch", names(1..=3)),
                ("batch", names(1..=3))
            ]
        );
        assert!(spool.pending().expect("pending").is_empty());

        // Still failing when the deadline comes: nothing acknowledged, nothing removed.
        let script = Script {
            batch_status: [503; 50].into(),
            ..Script::default()
        };
        let (uploader, _shared) = stub(script, true).await;
        let (_tmp, spool) = spool_with(4);
        let report = uploader
            .drain(&spool, Some(Instant::now() + Duration::from_millis(100)))
            .await;
        assert_eq!((report.acknowledged, report.remaining), (0, 4));
        assert_eq!(spool.pending().expect("pending").len(), 4);
    }

    #[tokio::test]
    async fn an_oracle_without_the_batch_route_gets_one_window_at_a_time() {
        let mut script = Script::default();
        script.answers.insert(
            "w2".into(),
            [Answer::Unavailable, Answer::Certificate].into(),
        );
        let (uploader, shared) = stub(script, false).await;
        let (_tmp, spool) = spool_with(3);
        let report = uploader.drain(&spool, None).await;
        assert_eq!(report.acknowledged, 3);
        assert_eq!(report.certificates, [certificate()]);
        assert!(spool.pending().expect("pending").is_empty());
        // The 404 of the batch route is not recorded by the stub (no such route); the single
        // posts are, w2 twice (503, then 200).
        assert_eq!(
            requests(&shared),
            [
                ("single", names([1])),
                ("single", names([2])),
                ("single", names([2])),
                ("single", names([3])),
            ]
        );
        assert!(uploader.fallback_logged.load(Ordering::Relaxed));

        // The next drain tries the batch again (the oracle may have been upgraded), then falls
        // back once more.
        spool.put(4, "w4").expect("put");
        let report = uploader.drain(&spool, None).await;
        assert_eq!(report.acknowledged, 1);
        assert_eq!(requests(&shared).last(), Some(&("single", names([4]))));
    }

    #[tokio::test]
    async fn another_refusal_of_the_whole_batch_falls_back_to_single_posts() {
        let script = Script {
            batch_status: [413].into(),
            ..Script::default()
        };
        let (uploader, shared) = stub(script, true).await;
        let (_tmp, spool) = spool_with(2);
        let report = uploader.drain(&spool, None).await;
        assert_eq!(report.acknowledged, 2);
        assert!(
            report.rejected.is_empty(),
            "a refused batch rejects no window"
        );
        assert_eq!(
            requests(&shared),
            [
                ("batch", names(1..=2)),
                ("single", names([1])),
                ("single", names([2]))
            ]
        );
    }

    #[tokio::test]
    async fn a_seq_replay_is_sent_again_as_is_not_set_aside() {
        for with_batch in [true, false] {
            let mut script = Script::default();
            script
                .answers
                .insert("w2".into(), [Answer::Replay, Answer::Duplicate].into());
            let (uploader, shared) = stub(script, with_batch).await;
            let (tmp, spool) = spool_with(3);
            let report = uploader.drain(&spool, None).await;
            assert!(report.rejected.is_empty(), "{:?}", report.rejected);
            assert_eq!((report.acknowledged, report.remaining), (3, 0));
            assert!(!tmp.path().join("rejected").exists());
            let sent: Vec<String> = requests(&shared).into_iter().flat_map(|(_, w)| w).collect();
            let expected = if with_batch {
                names([1, 2, 3, 2, 3])
            } else {
                names([1, 2, 2, 3])
            };
            assert_eq!(sent, expected, "batch route: {with_batch}");
        }
    }

    #[test]
    fn only_a_window_verdict_of_the_oracle_is_final() {
        let p = |code: &str, already_accepted: Option<bool>| Problem {
            code: (!code.is_empty()).then(|| code.to_owned()),
            detail: Some("d".into()),
            already_accepted,
        };
        for (status, code) in [
            (400, "malformed_jws"),
            (401, "unknown_kid"),
            (401, "bad_signature"),
            (403, "node_mismatch"),
            (409, "seq_conflict"),
            (409, "seq_gap"),
            (422, "implausible"),
            (413, "payload_too_large"),
        ] {
            assert!(
                matches!(
                    classify(status, None, Some(p(code, None)), None),
                    Outcome::Rejected { .. }
                ),
                "{status} {code}"
            );
        }
        for (status, code, already) in [
            (409, "seq_replay", Some(false)),
            (404, "not_found", None),
            (405, "method_not_allowed", None),
            (401, "missing_token", None),
            (403, "forbidden_role", None),
            (400, "invalid_request", None),
            (404, "", None),
            (408, "", None),
            (413, "", None),
            (429, "rate_limited", None),
            (503, "unavailable", None),
        ] {
            assert!(
                matches!(
                    classify(status, None, Some(p(code, already)), None),
                    Outcome::Transient { .. }
                ),
                "{status} {code}"
            );
        }
        assert!(matches!(
            classify(409, None, None, None),
            Outcome::Transient { .. }
        ));
        assert!(matches!(
            classify(409, None, Some(p("seq_replay", Some(true))), None),
            Outcome::AlreadyAccepted
        ));
    }

    #[tokio::test]
    async fn a_wrong_oracle_url_keeps_every_window_in_the_spool() {
        // A path prefix the oracle does not serve (its 404 `not_found` problem), and a reverse
        // proxy's plain 404, 405 and 408 pages.
        let oracle = {
            let app = axum::Router::new().fallback(no_route);
            let uploader = serve(app).await;
            Uploader::new(&format!("{}/wrong/prefix", uploader.base())).expect("client")
        };
        let mut uploaders = vec![oracle];
        for status in [404, 405, 408] {
            let app = axum::Router::new().fallback(move || async move {
                (
                    StatusCode::from_u16(status).unwrap_or(StatusCode::NOT_FOUND),
                    [(axum::http::header::CONTENT_TYPE, "text/html")],
                    "<html><body>nginx</body></html>",
                )
            });
            uploaders.push(serve(app).await);
        }
        for uploader in uploaders {
            let (tmp, spool) = spool_with(3);
            let report = uploader
                .drain(&spool, Some(Instant::now() + Duration::from_millis(600)))
                .await;
            assert!(
                report.rejected.is_empty(),
                "{}: {:?}",
                uploader.base(),
                report.rejected
            );
            assert_eq!((report.acknowledged, report.remaining), (0, 3));
            assert_eq!(spool.pending().expect("pending").len(), 3);
            assert!(!tmp.path().join("rejected").exists());
        }
    }

    #[tokio::test]
    async fn retry_after_is_waited_for_in_batches_and_single_posts() {
        // The first retry's backoff is 0.25–0.5 s: a second apart means Retry-After was heeded.
        let script = Script {
            batch_status: [429].into(),
            retry_after: Some(1),
            ..Script::default()
        };
        let (uploader, shared) = stub(script, true).await;
        let (_tmp, spool) = spool_with(2);
        let report = uploader.drain(&spool, None).await;
        assert_eq!(report.acknowledged, 2);
        assert_waited_a_second(&shared);

        let mut script = Script {
            retry_after: Some(1),
            ..Script::default()
        };
        script
            .answers
            .insert("w1".into(), [Answer::RateLimited].into());
        let (uploader, shared) = stub(script, false).await;
        let (_tmp, spool) = spool_with(1);
        let report = uploader.drain(&spool, None).await;
        assert_eq!(report.acknowledged, 1);
        assert_waited_a_second(&shared);

        // A Retry-After beyond the deadline ends the drain at once.
        let script = Script {
            batch_status: [503].into(),
            retry_after: Some(20),
            ..Script::default()
        };
        let (uploader, _shared) = stub(script, true).await;
        let (_tmp, spool) = spool_with(1);
        let report = uploader
            .drain(&spool, Some(Instant::now() + Duration::from_secs(5)))
            .await;
        assert_eq!((report.acknowledged, report.remaining), (0, 1));
    }

    #[tokio::test]
    async fn a_200_without_a_readable_receipt_is_not_an_acknowledgement() {
        // Another server's page.
        let app = axum::Router::new().fallback(|| async { "<html>welcome</html>" });
        let uploader = serve(app).await;
        assert!(matches!(
            uploader.post("w1").await,
            Outcome::Transient { .. }
        ));

        // A body cut short: Content-Length promises more than arrives.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        std::thread::spawn(move || {
            use std::io::{Read, Write};
            if let Ok((mut stream, _)) = listener.accept() {
                let mut buf = [0u8; 4096];
                let _ = stream.read(&mut buf);
                let _ = stream.write_all(
                    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 500\r\n\r\n{\"seq\":1,",
                );
            }
        });
        let uploader = Uploader::new(&format!("http://{addr}")).expect("client");
        let outcome = uploader.post("w1").await;
        assert!(matches!(outcome, Outcome::Transient { .. }), "{outcome:?}");
    }

    #[tokio::test]
    async fn an_unreadable_spool_file_is_set_aside_and_the_rest_goes_on() {
        let (uploader, shared) = stub(Script::default(), true).await;
        let (tmp, spool) = spool_with(3);
        let file = tmp.path().join(format!("{:020}.jws", 2));
        std::fs::write(&file, b"\xff\xfe not utf-8").expect("write");
        let report = uploader.drain(&spool, None).await;
        assert_eq!((report.acknowledged, report.remaining), (2, 0));
        assert_eq!(report.stopped, None);
        assert_eq!(report.rejected.len(), 1);
        assert_eq!(report.rejected[0].0, 2);
        // Each part once: the code, the file, the cause.
        let shown = file.display().to_string();
        assert_eq!(
            report.rejected[0].1,
            format!("unreadable_spool_file: {shown}: stream did not contain valid UTF-8")
        );
        let kept = tmp.path().join("rejected").join(format!("{:020}.jws", 2));
        assert_eq!(std::fs::read(&kept).expect("kept"), b"\xff\xfe not utf-8");
        let reason: Value = serde_json::from_slice(
            &std::fs::read(kept.with_extension("reason.json")).expect("reason"),
        )
        .expect("json");
        assert_eq!(reason["code"], "unreadable_spool_file");
        assert_eq!(reason["status"], Value::Null);
        assert_eq!(
            reason["detail"],
            format!("{shown}: stream did not contain valid UTF-8")
        );
        let sent: Vec<String> = requests(&shared).into_iter().flat_map(|(_, w)| w).collect();
        assert_eq!(sent, names([1, 3]));
    }

    #[tokio::test]
    async fn a_drain_stopped_by_a_local_error_counts_what_is_left() {
        let mut script = Script::default();
        script.answers.insert("w2".into(), [Answer::Refused].into());
        let (uploader, _shared) = stub(script, true).await;
        let (tmp, spool) = spool_with(3);
        // `rejected` is a file: the refused window cannot be set aside.
        std::fs::write(tmp.path().join("rejected"), "").expect("write");
        let report = uploader.drain(&spool, None).await;
        assert_eq!((report.acknowledged, report.remaining), (1, 2));
        let stopped = report.stopped.expect("stopped");
        assert!(stopped.contains("rejected window 2"), "{stopped}");

        // An unreadable spool directory.
        let gone = Spool::new(tmp.path().join("missing"));
        let report = uploader.drain(&gone, None).await;
        assert!(report.stopped.is_some());
    }
}
