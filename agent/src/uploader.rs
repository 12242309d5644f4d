//! The uploader: sends spooled windows to the oracle in seq order, with exponential backoff and
//! jitter on transient failures, and removes each from the spool once acknowledged.
//!
//! [`Uploader::drain`] sends the spool in batches of up to [`DRAIN_BATCH_WINDOWS`] windows
//! (`POST /v1/telemetry/batch`, `docs/protocol.md` §3.6) and treats each window's result as
//! the answer to that window alone. An oracle without the batch route (404 or 405: older than
//! the batch endpoint) gets the windows one at a time (`POST /v1/telemetry`) for the rest of
//! that drain.

use crate::spool::Spool;
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

#[derive(Debug, Deserialize)]
struct Accepted {
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
    /// window; retry later.
    Transient(String),
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
        }
        let certificate = status
            .is_success()
            .then(|| serde_json::from_slice::<Accepted>(&body).ok())
            .flatten()
            .and_then(|a| a.certificate);
        let problem = (!status.is_success()).then(|| {
            serde_json::from_slice(&body).unwrap_or_else(|_| Problem {
                detail: Some(String::from_utf8_lossy(&body).into_owned()),
                ..Problem::default()
            })
        });
        classify(status.as_u16(), certificate, problem)
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
            Err(err) => return BatchOutcome::Transient(format!("{err}")),
        };
        let status = response.status();
        let body = match response.bytes().await {
            Ok(body) => body,
            Err(err) => {
                return BatchOutcome::Transient(format!("reading the HTTP {status} answer: {err}"));
            }
        };
        if status.is_server_error() || status == reqwest::StatusCode::TOO_MANY_REQUESTS {
            return BatchOutcome::Transient(format!("HTTP {status}"));
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
            Ok(answer) => BatchOutcome::Transient(format!(
                "the oracle answered {} results for {} windows",
                answer.results.len(),
                windows.len()
            )),
            Err(err) => BatchOutcome::Transient(format!("unreadable batch answer: {err}")),
        }
    }

    /// Sends every pending window in seq order until the spool is empty or `deadline` passes,
    /// in batches of up to [`DRAIN_BATCH_WINDOWS`] windows (and [`MAX_BATCH_BODY_BYTES`]).
    ///
    /// Each window's result is handled in seq order as the answer to that window alone: 200,
    /// 202 (held by the oracle) and a duplicate (`already_accepted`) remove it from the spool,
    /// another 4xx moves it to `spool/rejected/`. The first transient result (5xx, 429), or a
    /// request that fails as a whole (network error, 5xx, 429, unreadable answer), stops the
    /// batch there: that window and every later one stay in the spool and are sent again after
    /// exponential backoff (×2 from [`BACKOFF_START`] to [`BACKOFF_CAP`]) with jitter. A window
    /// leaves the spool only after its acknowledgement, in seq order.
    ///
    /// An oracle that does not take the batch (404 or 405: no batch route yet; another 4xx but
    /// 429) gets the windows one at a time ([`Uploader::post`]) for the rest of this drain;
    /// the first such fall-back of the process is logged at warn level.
    pub async fn drain(&self, spool: &Spool, deadline: Option<Instant>) -> Drained {
        let metrics = crate::metrics::global();
        let mut report = Drained::default();
        let mut delay = BACKOFF_START;
        let mut batches = true;
        loop {
            let pending = match spool.pending() {
                Ok(p) => {
                    metrics
                        .spool_windows
                        .set(i64::try_from(p.len()).unwrap_or(i64::MAX));
                    p
                }
                Err(err) => {
                    tracing::error!(error = %err, "Cannot read the spool.");
                    return report;
                }
            };
            if pending.is_empty() {
                return report;
            }
            let limit = if batches { DRAIN_BATCH_WINDOWS } else { 1 };
            let mut seqs = Vec::with_capacity(limit.min(pending.len()));
            let mut windows = Vec::with_capacity(limit.min(pending.len()));
            let mut bytes = BATCH_ENVELOPE_BYTES;
            for (seq, path) in pending.iter().take(limit) {
                let jws = match Spool::read(path) {
                    Ok(j) => j,
                    Err(err) => {
                        tracing::error!(seq, error = %err, "Cannot read a spooled window.");
                        return report;
                    }
                };
                bytes += jws.len() + BATCH_PER_WINDOW_BYTES;
                if !windows.is_empty() && bytes > MAX_BATCH_BODY_BYTES {
                    break;
                }
                seqs.push(*seq);
                windows.push(jws);
            }
            let outcomes = if batches {
                match self.post_batch(&windows).await {
                    BatchOutcome::Results(outcomes) => outcomes,
                    BatchOutcome::Transient(reason) => vec![Outcome::Transient(reason)],
                    BatchOutcome::Unsupported { status, detail } => {
                        self.log_fallback(status, &detail);
                        batches = false;
                        continue;
                    }
                }
            } else {
                vec![self.post(&windows[0]).await]
            };
            // Results in seq order; `done` windows of this batch have left the spool before each.
            for (done, (&seq, outcome)) in seqs.iter().zip(outcomes).enumerate() {
                match outcome {
                    Outcome::Accepted(certificate) => {
                        tracing::debug!(seq, "Window acknowledged.");
                        delay = BACKOFF_START;
                        report.certificates.extend(certificate);
                        if !acknowledge(spool, seq, &mut report) {
                            return report;
                        }
                    }
                    Outcome::AlreadyAccepted => {
                        tracing::info!(
                            seq,
                            "Window was already accepted; removing it from the spool."
                        );
                        if !acknowledge(spool, seq, &mut report) {
                            return report;
                        }
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
                            return report;
                        }
                        metrics.spool_windows.dec();
                        report.rejected.push((seq, format!("{code}: {detail}")));
                    }
                    Outcome::Transient(reason) => {
                        metrics.upload_errors.inc();
                        let left = pending.len() - done;
                        let now = Instant::now();
                        if deadline.is_some_and(|d| now + delay > d) {
                            report.remaining = left;
                            tracing::warn!(pending = left, reason = %reason, "Oracle unreachable; windows stay in the spool for the next run.");
                            return report;
                        }
                        let jittered = delay.mul_f64(rand_unit());
                        tracing::warn!(seq, reason = %reason, retry_in_ms = jittered.as_millis() as u64, "Oracle unreachable; retrying.");
                        tokio::time::sleep(jittered).await;
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

/// Removes acknowledged window `seq` from the spool and counts it; false (after logging) when
/// it cannot be removed.
fn acknowledge(spool: &Spool, seq: u64, report: &mut Drained) -> bool {
    let metrics = crate::metrics::global();
    metrics.windows_acknowledged.inc();
    report.acknowledged += 1;
    if let Err(err) = spool.ack(seq) {
        tracing::error!(seq, error = %err, "Cannot remove an acknowledged window from the spool.");
        return false;
    }
    metrics.spool_windows.dec();
    true
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
    )
}

/// The outcome of one window's answer, the same for a single post and a batch result: 2xx
/// accepted (202: held by the oracle, no certificate), 5xx and 429 transient, a duplicate's
/// `already_accepted` acknowledged, any other status refused for good.
fn classify(
    status: u16,
    certificate: Option<CertificateSummary>,
    problem: Option<Problem>,
) -> Outcome {
    if status == 202 {
        return Outcome::Accepted(None);
    }
    if (200..300).contains(&status) {
        return Outcome::Accepted(certificate);
    }
    if status >= 500 || status == 429 {
        return Outcome::Transient(match problem {
            Some(Problem {
                code: Some(code),
                detail,
                ..
            }) => format!("HTTP {status} {code}: {}", detail.unwrap_or_default()),
            _ => format!("HTTP {status}"),
        });
    }
    let problem = problem.unwrap_or_default();
    if problem.already_accepted == Some(true) {
        return Outcome::AlreadyAccepted;
    }
    Outcome::Rejected {
        status,
        code: problem.code.unwrap_or_else(|| "unknown".into()),
        detail: problem.detail.unwrap_or_default(),
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

    /// A scripted answer to one window.
    #[derive(Debug, Clone)]
    enum Answer {
        Ok,
        Certificate,
        Held,
        Duplicate,
        Refused,
        Unavailable,
    }

    #[derive(Default)]
    struct Script {
        /// Answers per window, used in turn; a window with none left gets [`Answer::Ok`].
        answers: HashMap<String, VecDeque<Answer>>,
        /// Whole-request answers of the batch route, used in turn before the per-window ones.
        batch_status: VecDeque<u16>,
        /// Windows of each request: ("batch" | "single", windows).
        requests: Vec<(&'static str, Vec<String>)>,
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
        }
    }

    fn problem(status: u16, code: &str, already_accepted: Option<bool>) -> Value {
        let mut p = json!({
            "type": format!("https://wattest.dev/problems/{code}"), "title": "stub",
            "status": status, "detail": format!("stub {code}"), "code": code,
        });
        if let Some(a) = already_accepted {
            p["already_accepted"] = json!(a);
        }
        p
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
            Answer::Ok => (200, receipt(None)),
            Answer::Certificate => (200, receipt(Some(certificate()))),
            Answer::Held => (
                202,
                json!({ "node_id": "node", "seq": seq, "hash": format!("h{seq}"),
                        "status": "held", "expected_seq": 1 }),
            ),
            Answer::Duplicate => (409, problem(409, "seq_replay", Some(true))),
            Answer::Refused => (422, problem(422, "implausible", None)),
            Answer::Unavailable => (503, problem(503, "unavailable", None)),
        }
    }

    fn respond(status: u16, body: &Value) -> Response {
        (
            StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            axum::Json(body.clone()),
        )
            .into_response()
    }

    async fn single(State(script): State<Shared>, body: String) -> Response {
        let mut script = script
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        script.requests.push(("single", vec![body.clone()]));
        let (status, body) = answer(&mut script, &body);
        respond(status, &body)
    }

    async fn batch(
        State(script): State<Shared>,
        axum::Json(request): axum::Json<TelemetryBatchRequest>,
    ) -> Response {
        let mut script = script
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        script.requests.push(("batch", request.windows.clone()));
        if let Some(status) = script.batch_status.pop_front() {
            return respond(status, &problem(status, "stub", None));
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
        respond(200, &json!({ "results": results }))
    }

    /// A stub oracle (with or without the batch route) and an uploader pointed at it.
    async fn stub(script: Script, with_batch: bool) -> (Uploader, Shared) {
        let shared: Shared = Arc::new(Mutex::new(script));
        let mut app = axum::Router::new().route("/v1/telemetry", axum::routing::post(single));
        if with_batch {
            app = app.route("/v1/telemetry/batch", axum::routing::post(batch));
        }
        let app = app.with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move { axum::serve(listener, app).await });
        wattest_shared::tls::install_crypto_provider();
        let uploader = Uploader::new(&format!("http://{addr}")).expect("client");
        (uploader, shared)
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
}
