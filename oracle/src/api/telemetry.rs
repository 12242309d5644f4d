//! Telemetry ingest (`POST /v1/telemetry`, and `POST /v1/telemetry/batch` for up to 500 windows):
//! verify a signed window, append it to the node's chain, and issue the certificate when it is a
//! job's final window, all in one transaction.

use super::problem::ApiError;
use crate::AppState;
use crate::storage::entities::{certificate, node, window};
use crate::verification::{
    ChainState, EnrolledNode, VerifiedWindow, VerifyError, verify_window, verify_window_with,
};
use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use utoipa::ToSchema;
use wattest_shared::api::{
    CertificateSummary, MAX_BATCH_BODY_BYTES, MAX_BATCH_WINDOWS, TelemetryAccepted,
    TelemetryBatchRequest, TelemetryBatchResponse, TelemetryBatchResult, TelemetryHeld,
};
use wattest_shared::jws::{Ps256Verifier, SaltLength, decode_header, jws_hash};
use wattest_shared::window::WINDOW_TYP;
use wattest_shared::{AttestationLevel, RsaJwk};

/// JSON form of the body (the other form is the bare compact JWS as `application/jose`).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TelemetryRequest {
    /// The window as a compact JWS.
    pub jws: String,
}

/// Times in summaries have microsecond precision, as PostgreSQL stores them (SQLite keeps
/// nanoseconds): a receipt reads the same whether it was built at acceptance or from the
/// database for a duplicate, on either backend.
///
/// Figures are the decimals the signed claims carry: the Wh and gCO2e/kWh columns hold a
/// six-decimal claim figure (`Decimal6::to_f64`, millionths / 1e6, already the nearest float),
/// and the kg columns hold a six-decimal g figure divided by 1000 as floats, which can land one
/// ulp off (`0.00011758000000000001`). Rounding to 6 (Wh, g/kWh) or 9 (kg) decimals gives back
/// the nearest float to the claim's decimal, which serde_json prints as that decimal.
impl From<&certificate::Model> for CertificateSummary {
    fn from(c: &certificate::Model) -> Self {
        use chrono::SubsecRound as _;
        /// `x` rounded to `decimals` places; `x` unchanged where the scaled value is beyond
        /// the integers f64 holds exactly (no place of that precision is left to round).
        fn round_to(x: f64, decimals: i32) -> f64 {
            let scale = 10f64.powi(decimals);
            let scaled = x * scale;
            if scaled.abs() < 9_007_199_254_740_992.0 {
                scaled.round() / scale
            } else {
                x
            }
        }
        Self {
            id: c.id.clone(),
            job_id: c.job_id.clone(),
            node_id: c.node_id.clone(),
            zone: c.zone.clone(),
            issued_at: c.issued_at.trunc_subsecs(6),
            period_start: c.period_start.trunc_subsecs(6),
            period_end: c.period_end.trunc_subsecs(6),
            energy_wh: round_to(c.consumed_wh, 6),
            grid_wh: round_to(c.grid_wh, 6),
            solar_wh: round_to(c.solar_wh, 6),
            emissions_kg_co2e: round_to(c.emissions_kg, 9),
            intensity_g_co2e_per_kwh: round_to(c.intensity_g, 6),
            intensity_dataset: c.intensity_dataset.clone(),
            avoided_kg_co2e: round_to(c.avoided_kg, 9),
            attestation_level: c.attestation_level.clone(),
            window_count: c.window_count,
            // Issued and not revoked: the list reads revocations and sets `Revoked` itself.
            state: wattest_shared::api::CertificateState::Valid,
        }
    }
}

/// Submits one signed telemetry window.
///
/// The body is the compact JWS (`Content-Type: application/jose`, or `text/plain`, or no
/// `Content-Type`) or `{"jws": "<compact JWS>"}` (`application/json`). Nothing is stored unless
/// every verification step passes.
#[utoipa::path(post, path = "/v1/telemetry", tag = "telemetry",
    request_body(content(
        (TelemetryRequest = "application/json"),
        (String = "application/jose", example = "eyJhbGciOiJQUzI1NiIs…"),
        (String = "text/plain", example = "eyJhbGciOiJQUzI1NiIs…"),
    )),
    responses(
        (status = 200, description = "Window accepted (and certificate issued when final); for a duplicate of an accepted window, its original receipt", body = TelemetryAccepted),
        (status = 202, description = "Window valid but ahead of the node's chain (a gap): held, not credited, appended once the missing windows arrive", body = TelemetryHeld),
        (status = 400, description = "malformed_jws / unsupported_alg / wrong_typ / forbidden_header / missing_kid / malformed_payload / unsupported_version / invalid_request", body = super::problem::Problem, content_type = "application/problem+json"),
        (status = 401, description = "unknown_kid / bad_signature", body = super::problem::Problem, content_type = "application/problem+json"),
        (status = 403, description = "node_mismatch", body = super::problem::Problem, content_type = "application/problem+json"),
        (status = 409, description = "seq_conflict / seq_replay / seq_gap (too far ahead, or too many held) / chain_broken / overlapping_window / job_closed", body = super::problem::Problem, content_type = "application/problem+json"),
        (status = 413, description = "payload_too_large", body = super::problem::Problem, content_type = "application/problem+json"),
        (status = 422, description = "future_window / invalid_period / implausible", body = super::problem::Problem, content_type = "application/problem+json"),
    ))]
pub async fn submit(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Ingested, ApiError> {
    let started = std::time::Instant::now();
    let result =
        match body_of(body, super::MAX_BODY_BYTES).and_then(|body| extract_jws(&headers, &body)) {
            Ok(jws) => ingest(&state, vec![jws])
                .await
                .pop()
                .unwrap_or_else(|| Err(ApiError::internal(&"a submitted window got no answer"))),
            Err(err) => Err(err),
        };
    state
        .metrics
        .ingest_seconds
        .observe(started.elapsed().as_secs_f64());
    count(&state, &result);
    result
}

/// Submits up to 500 signed telemetry windows in one request (`docs/protocol.md` §3.6).
///
/// Each window is verified and stored exactly as if posted alone to `/v1/telemetry`: one node's
/// windows in array order (each checked against the chain as the windows before it leave it),
/// different nodes independently. The answer holds one result per window, in request order,
/// with the status and body `/v1/telemetry` would have answered for it.
#[utoipa::path(post, path = "/v1/telemetry/batch", tag = "telemetry",
    request_body(content((TelemetryBatchRequest = "application/json"))),
    responses(
        (status = 200, description = "One result per window, in request order: the status and body (receipt, held answer or problem) `POST /v1/telemetry` would have answered for it", body = TelemetryBatchResponse),
        (status = 400, description = "invalid_request: not JSON, a body that cannot be read to its end, no `windows`, an unknown member, an element of `windows` that is not a string, no windows, or more than 500", body = super::problem::Problem, content_type = "application/problem+json"),
        (status = 413, description = "payload_too_large: body over 8 MiB", body = super::problem::Problem, content_type = "application/problem+json"),
        (status = 415, description = "unsupported_media_type: not application/json", body = super::problem::Problem, content_type = "application/problem+json"),
    ))]
pub async fn submit_batch(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Json<TelemetryBatchResponse>, ApiError> {
    let body = body_of(body, MAX_BATCH_BODY_BYTES)?;
    super::require_json(&headers)?;
    let request: TelemetryBatchRequest = super::parse_json(&body)?;
    // Up to 8 MiB: the parsed windows are all that is kept from here.
    drop(body);
    if request.windows.is_empty() || request.windows.len() > MAX_BATCH_WINDOWS {
        return Err(ApiError::bad_request(format!(
            "a batch holds 1 to {MAX_BATCH_WINDOWS} windows, not {}",
            request.windows.len()
        )));
    }
    let started = std::time::Instant::now();
    let windows = request.windows.into_iter().map(trimmed).collect();
    let results = ingest(&state, windows).await;
    state
        .metrics
        .ingest_seconds
        .observe(started.elapsed().as_secs_f64());
    let results = results
        .into_iter()
        .map(|result| {
            count(&state, &result);
            batch_result(result)
        })
        .collect();
    Ok(Json(TelemetryBatchResponse { results }))
}

/// A window's answer as its batch result: the status and body `POST /v1/telemetry` would have
/// sent for it ([`Ingested`]'s `IntoResponse`, or the problem).
fn batch_result(result: Result<Ingested, ApiError>) -> TelemetryBatchResult {
    let (status, accepted, held, problem) = match result {
        Ok(Ingested::Accepted(accepted) | Ingested::Duplicate(accepted)) => {
            (StatusCode::OK, Some(*accepted), None, None)
        }
        Ok(Ingested::Held(held)) => (StatusCode::ACCEPTED, None, Some(held), None),
        Err(err) => (err.status(), None, None, Some(err.into())),
    };
    TelemetryBatchResult {
        status: status.as_u16(),
        accepted,
        held,
        problem,
    }
}

/// Counts one window's outcome in the metrics.
fn count(state: &AppState, result: &Result<Ingested, ApiError>) {
    let metrics = &state.metrics;
    match result {
        Ok(Ingested::Accepted(accepted)) => {
            metrics.windows_accepted.inc();
            if let Some(c) = &accepted.certificate {
                metrics.certificates_issued.inc();
                metrics.certified_energy_wh.inc_by(c.energy_wh);
            }
        }
        Ok(Ingested::Held(_)) => {
            metrics.windows_held.inc();
        }
        Ok(Ingested::Duplicate(_)) => {
            metrics.windows_duplicate.inc();
        }
        Err(err) => metrics.rejected(err.code()),
    }
}

/// The answer to a submitted window: accepted (200) or held after a gap (202).
#[derive(Debug)]
pub enum Ingested {
    /// Appended to the node's chain.
    Accepted(Box<TelemetryAccepted>),
    /// Accepted earlier: the original receipt (200, as [`Ingested::Accepted`]), counted apart.
    Duplicate(Box<TelemetryAccepted>),
    /// Held until the missing windows arrive.
    Held(TelemetryHeld),
}

impl IntoResponse for Ingested {
    fn into_response(self) -> Response {
        match self {
            Self::Accepted(a) | Self::Duplicate(a) => Json(*a).into_response(),
            Self::Held(h) => (StatusCode::ACCEPTED, Json(h)).into_response(),
        }
    }
}

/// Furthest ahead of the node's next expected seq that a window may be held; further is refused
/// (`seq_gap`): a spool resends in order, so a larger gap means lost windows, not reordering.
pub const MAX_HOLD_AHEAD: u64 = crate::storage::held::MAX_HELD_PER_NODE;

/// Steps 1–9 of §3.4 for `windows`, as if each had been posted alone in this order: windows of
/// one `kid` are verified in order against the chain as the windows before them leave it, and
/// queued for the same group commit; windows of different nodes are handled concurrently. One
/// result per window, in the order given.
///
/// The kids are unverified headers, so what a request costs before any signature is checked
/// is bounded by the request, not by its number of kids: every kid is looked up in one query,
/// and the windows are verified on the runtime thread only when the whole request holds at
/// most [`INLINE_VERIFY_MAX`] of them.
pub async fn ingest(state: &AppState, windows: Vec<String>) -> Vec<Result<Ingested, ApiError>> {
    let mut results: Vec<Option<Result<Ingested, ApiError>>> = std::iter::repeat_with(|| None)
        .take(windows.len())
        .collect();
    let inline = windows.len() <= INLINE_VERIFY_MAX;
    // Steps 1–3 (the header) per window, then the windows grouped by kid, in first-seen order.
    let mut groups: Vec<(String, Vec<(usize, String)>)> = Vec::new();
    let mut group_of: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    for (i, jws) in windows.into_iter().enumerate() {
        // A batch's windows get the limit a window posted alone gets (§3.6: as if posted alone).
        if jws.len() > super::MAX_BODY_BYTES {
            results[i] = Some(Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                format!(
                    "window of {} bytes exceeds the limit of {} bytes",
                    jws.len(),
                    super::MAX_BODY_BYTES
                ),
            )));
            continue;
        }
        let kid = match decode_header(&jws, WINDOW_TYP) {
            Ok(unverified) => unverified.header.kid,
            Err(err) => {
                results[i] = Some(Err(verify_error(&VerifyError::Jws(err))));
                continue;
            }
        };
        let g = *group_of.entry(kid.clone()).or_insert_with(|| {
            groups.push((kid, Vec::new()));
            groups.len() - 1
        });
        groups[g].1.push((i, jws));
    }
    drop(group_of);
    // The key lookup by kid (step 3), one query for the whole request.
    let nodes = match groups.as_slice() {
        [] => Ok(std::collections::HashMap::new()),
        [(kid, _)] => state
            .storage
            .node_by_kid(kid)
            .await
            .map(|node| node.into_iter().map(|n| (kid.clone(), n)).collect()),
        _ => {
            let kids: Vec<&str> = groups.iter().map(|(kid, _)| kid.as_str()).collect();
            state.storage.nodes_by_kids(&kids).await
        }
    };
    let mut pending = Vec::with_capacity(groups.len());
    match nodes {
        Ok(mut nodes) => {
            for (kid, items) in groups {
                match nodes.remove(&kid) {
                    Some(node) => pending.push(ingest_node(state, node, items, true, inline)),
                    None => {
                        let err = unknown_kid(&kid);
                        for (i, _) in items {
                            results[i] = Some(Err(err.clone()));
                        }
                    }
                }
            }
        }
        Err(err) => {
            let err = ApiError::from(err);
            for (i, _) in groups.into_iter().flat_map(|(_, items)| items) {
                results[i] = Some(Err(err.clone()));
            }
        }
    }
    for (i, result) in futures::future::join_all(pending)
        .await
        .into_iter()
        .flatten()
    {
        results[i] = Some(result);
    }
    results
        .into_iter()
        .map(|r| r.unwrap_or_else(|| Err(ApiError::internal(&"a window got no answer"))))
        .collect()
}

/// 401 `unknown_kid`: no enrolled node has key `kid`.
fn unknown_kid(kid: &str) -> ApiError {
    ApiError::new(
        StatusCode::UNAUTHORIZED,
        "unknown_kid",
        format!("no enrolled node has key {kid}; enroll first"),
    )
}

/// One node's windows (all signed with its key), each with its index in the request. With
/// `recheck_gaps`, windows found ahead of the chain are verified once more after this call's
/// windows are appended (and the held windows they unblocked released), before being held: as
/// they would have been had each been posted alone after the windows before it. With `inline`
/// (the whole request holds at most [`INLINE_VERIFY_MAX`] windows), they are verified on this
/// thread; otherwise on the blocking pool.
#[tracing::instrument(skip_all, fields(node_id))]
async fn ingest_node(
    state: &AppState,
    node: node::Model,
    items: Vec<(usize, String)>,
    recheck_gaps: bool,
    inline: bool,
) -> Vec<(usize, Result<Ingested, ApiError>)> {
    tracing::Span::current().record("node_id", node.id.as_str());
    let indices: Vec<usize> = items.iter().map(|(i, _)| *i).collect();
    let all = |err: ApiError| {
        indices
            .iter()
            .map(|&i| (i, Err(err.clone())))
            .collect::<Vec<_>>()
    };
    let chain = ChainState {
        last_seq: u64::try_from(node.last_seq).unwrap_or(0),
        last_hash: node.last_hash.clone(),
        last_end: node.last_end,
    };
    // Windows at or below this seq were committed before this request: a replay of one of them
    // is judged at once, in order (below), not after this request's own windows.
    let committed_head = chain.last_seq;
    let mut node = std::sync::Arc::new(node);

    // Steps 4–8 are CPU work (RSA verification): a request of a few windows is verified on this
    // thread with its prepared verifier for the key, a larger one on the blocking pool, off the
    // async executor.
    let now = Utc::now();
    let bounds = TimeBounds::of(state);
    let verified = if inline {
        verify_windows(&node, items, chain, now, bounds, Keys::ThreadCache)
    } else {
        let node = node.clone();
        tokio::task::spawn_blocking(move || {
            verify_windows(&node, items, chain, now, bounds, Keys::PerCall)
        })
        .await
        .unwrap_or_else(|err| Err(ApiError::internal(&err)))
    };
    let verified = match verified {
        Ok(v) => v,
        Err(err) => return all(err),
    };

    // Verified windows are queued first, in order, so they share a commit; the others are
    // answered after those commits, since a duplicate or a gap is judged against the chain as
    // the queued windows leave it.
    let mut results = Vec::with_capacity(verified.len());
    let mut queued = Vec::new();
    let mut deferred = Vec::new();
    // The claims of this request's windows since its last final window: a final window's
    // certificate covers them (with the job's committed open windows), and is signed here,
    // concurrently with other requests, rather than in the single writer.
    let mut earlier = Vec::new();
    let any_final = verified
        .iter()
        .any(|(_, _, r)| r.as_ref().is_ok_and(|v| v.claims.is_final));
    let mut replayed_any = false;
    for (i, jws, result) in verified {
        match result {
            // A replay of a window committed before this request, judged now, in the request's
            // order: a conflict flags the node before any later final window of the request is
            // certified, as when the two are posted one after the other (§3.4: every
            // certificate issued after the conflict is contraindicated).
            Err(VerifyError::SeqReplay { seq, last }) if seq <= committed_head => {
                replayed_any = true;
                let answer = replayed(state, &node.id, seq, Some(last), &jws)
                    .await
                    .map(|Json(a)| Ingested::Duplicate(Box::new(a)));
                if node.flag.is_none()
                    && answer
                        .as_ref()
                        .is_err_and(|err| err.code() == "seq_conflict")
                {
                    let mut flagged = (*node).clone();
                    flagged.flag = Some(format!("seq_conflict:{seq}"));
                    node = std::sync::Arc::new(flagged);
                }
                results.push((i, answer));
            }
            Ok(v) => {
                let receipt = (v.claims.seq, v.hash.clone(), v.salt);
                let presigned = if v.claims.is_final {
                    let signing = crate::issuance::presign(state, &node, &earlier, &v, now).await;
                    earlier.clear();
                    // A failure here is retried by the writer's own issuance, which answers.
                    signing
                        .map_err(|err| tracing::warn!(node_id = %node.id, code = err.code(), "Issuing ahead of the writer failed; the writer issues."))
                        .ok()
                } else {
                    if any_final {
                        earlier.push(v.claims.clone());
                    }
                    None
                };
                match state
                    .ingest
                    .enqueue(state, node.clone(), jws.clone(), v, now, presigned)
                    .await
                {
                    Ok(ticket) => queued.push((i, receipt, jws, ticket)),
                    Err(err) => results.push((i, Err(err))),
                }
            }
            Err(err) => deferred.push((i, jws, err)),
        }
    }
    let mut node_has_held = false;
    let mut appended_any = false;
    for (i, (seq, hash, salt), jws, ticket) in queued {
        let answer = match ticket.committed().await {
            Ok(appended) => {
                node_has_held |= appended.node_has_held;
                appended_any = true;
                Ok(Ingested::Accepted(Box::new(TelemetryAccepted {
                    node_id: node.id.clone(),
                    seq,
                    hash,
                    salt_length: salt,
                    certificate: appended.certificate.as_ref().map(CertificateSummary::from),
                })))
            }
            // Another request (or replica) took this seq between our read of the chain head
            // and our write: a concurrent duplicate gets the original receipt, a different
            // window is a seq conflict.
            Err(err) if err.code() == "seq_replay" => replayed(state, &node.id, seq, None, &jws)
                .await
                .map(|Json(a)| Ingested::Duplicate(Box::new(a))),
            Err(err) => Err(err),
        };
        results.push((i, answer));
    }
    // The appended windows are committed whatever happens next: a failed release leaves the
    // held windows in place, and the next request for this node (a held window sent again)
    // retries it.
    if node_has_held && let Err(err) = release_held(state, &node.id).await {
        tracing::error!(node_id = %node.id, code = err.code(), "Releasing held windows failed; they stay held.");
    }
    let mut gaps = Vec::new();
    for (i, jws, err) in deferred {
        let answer = match err {
            VerifyError::SeqReplay { seq, last } => {
                replayed_any = true;
                replayed(state, &node.id, seq, Some(last), &jws)
                    .await
                    .map(|Json(a)| Ingested::Duplicate(Box::new(a)))
            }
            // The chain may have moved past the gap since: this call appended windows, and
            // the release may have appended held ones.
            VerifyError::SeqGap { .. } if recheck_gaps && appended_any => {
                gaps.push((i, jws));
                continue;
            }
            VerifyError::SeqGap { seq, expected } => {
                hold(state, &node.id, seq, expected, &jws, now).await
            }
            err => Err(verify_error(&err)),
        };
        results.push((i, answer));
    }
    // A window sent again after its acknowledgement was lost may be the one whose first
    // answer never came because the release after it was cut short (a timeout, a crash): held
    // windows waiting behind it are released now rather than when the node next sends.
    if replayed_any
        && !node_has_held
        && let Err(err) = release_held(state, &node.id).await
    {
        tracing::error!(node_id = %node.id, code = err.code(), "Releasing held windows failed; they stay held.");
    }
    if !gaps.is_empty() {
        // Judged against the chain as it now stands, as when the node was first looked up.
        match state.storage.node_by_kid(&node.kid).await {
            Ok(Some(fresh)) => {
                results.extend(Box::pin(ingest_node(state, fresh, gaps, false, inline)).await);
            }
            Ok(None) => {
                let err = unknown_kid(&node.kid);
                results.extend(gaps.into_iter().map(|(i, _)| (i, Err(err.clone()))));
            }
            Err(err) => {
                let err = ApiError::from(err);
                results.extend(gaps.into_iter().map(|(i, _)| (i, Err(err.clone()))));
            }
        }
    }
    results
}

/// How often [`spawn_held_sweeper`] looks for held windows whose gap is filled.
pub const HELD_SWEEP_INTERVAL: std::time::Duration = std::time::Duration::from_secs(30);

/// Releases, every `interval` ([`HELD_SWEEP_INTERVAL`] in `serve`), the held windows of every
/// node whose gap is filled: a release cut short (a request timeout, a crash, a database error)
/// is otherwise retried only when the node next sends, and an idle node never does — its
/// acknowledged windows (and the certificate of a held final window) would wait forever. Each
/// release is the one requests run ([`release_held`]): verified again in full, appended by
/// compare-and-set, so sweepers of several replicas and requests never append a window twice.
pub fn spawn_held_sweeper(state: AppState, interval: std::time::Duration) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            sweep_held(&state).await;
        }
    });
}

/// One pass of [`spawn_held_sweeper`]: releases the held windows of the nodes (found in one
/// query) whose lowest held seq is at or below the chain head's next; a node whose gap is still
/// open has nothing to release and is not touched.
async fn sweep_held(state: &AppState) {
    let nodes = match state.storage.releasable_held_nodes().await {
        Ok(nodes) => nodes,
        Err(err) => {
            tracing::warn!(%err, "Listing nodes with releasable held windows failed.");
            return;
        }
    };
    for node_id in &nodes {
        if let Err(err) = release_held(state, node_id).await {
            tracing::warn!(node_id = %node_id, code = err.code(), "Sweeping held windows failed; they stay held.");
        }
    }
}

/// Holds a valid window that arrived ahead of the chain (`expected` is the node's next seq).
/// Idempotent: the same window again is held again (202); a different window for a held seq is
/// a `seq_conflict` and flags the node. Too far ahead, or too many held: 409 `seq_gap`.
async fn hold(
    state: &AppState,
    node_id: &str,
    seq: u64,
    expected: u64,
    jws: &str,
    now: DateTime<Utc>,
) -> Result<Ingested, ApiError> {
    let gap = || {
        verify_error(&VerifyError::SeqGap { seq, expected })
            .with_already_accepted(false)
            .with_expected_seq(expected)
    };
    let hash = jws_hash(jws);
    // At the limits nothing new is held, but a window already held at this seq is still
    // judged as a resend (202) or a different window (seq_conflict), not refused as a gap.
    let at_limit = seq - expected >= MAX_HOLD_AHEAD
        || state.storage.held_count(node_id).await? >= crate::storage::held::MAX_HELD_PER_NODE;
    let held = if at_limit {
        match state.storage.held_window(node_id, seq).await? {
            Some(existing) => crate::storage::held::Held::Existing(existing),
            None => return Err(gap()),
        }
    } else {
        state
            .storage
            .hold_window(node_id, seq, &hash, jws, now)
            .await?
    };
    match held {
        crate::storage::held::Held::Stored => {}
        crate::storage::held::Held::Existing(held) if held == jws || same_payload(&held, jws) => {}
        crate::storage::held::Held::Existing(_) => {
            let reason = format!("seq_conflict:{seq}");
            state.storage.flag_node(node_id, &reason).await?;
            tracing::warn!(
                node_id,
                seq,
                "Node signed two different windows for one held seq; node flagged."
            );
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "seq_conflict",
                format!("a different window is already held as seq {seq}; the node is flagged"),
            )
            .with_already_accepted(false)
            .with_expected_seq(expected));
        }
    }
    tracing::info!(
        node_id,
        seq,
        expected,
        "Window ahead of the chain held until the gap is filled."
    );
    // The missing window may have been appended while we held this one, or an earlier release
    // failed: release now (this window is held durably whatever happens).
    if let Err(err) = release_held(state, node_id).await {
        tracing::error!(
            node_id,
            code = err.code(),
            "Releasing held windows failed; they stay held."
        );
    }
    Ok(Ingested::Held(TelemetryHeld {
        node_id: node_id.to_owned(),
        seq,
        hash,
        status: "held".into(),
        expected_seq: expected,
    }))
}

/// Appends the held windows of `node_id` that now follow its chain head, in seq order. Each is
/// verified again in full against the chain as it then stands; one that fails (it does not
/// chain, or overlaps, or its job is closed) is dropped and the node flagged
/// `held_rejected:<seq>:<code>`, since its own signed history contradicts itself. One that
/// cannot be stored for now (a 5xx: database, carbon or signing failure) stays held, and the
/// error is returned. Held rows at or below the head (left by a release interrupted between
/// appending and removing) are removed first.
///
/// # Errors
/// Database failure, or the 5xx that stopped a held window's append.
async fn release_held(state: &AppState, node_id: &str) -> Result<(), ApiError> {
    if !state.storage.has_held(node_id).await? {
        return Ok(());
    }
    loop {
        let Some(node) = state.storage.node_by_id(node_id).await? else {
            return Ok(());
        };
        let head = u64::try_from(node.last_seq).unwrap_or(0);
        // The chain passed these seqs with other requests' windows: a held window that is not
        // the one accepted there is a second history the node signed (§3.4: a different window
        // for a held seq is a seq_conflict), not something to drop silently.
        // Most releases find none: then no DELETE, which on SQLite would take the write lock
        // (outside the writer's queue) for nothing.
        let passed = state.storage.held_through(node_id, head).await?;
        for (seq, held) in &passed {
            let seq = *seq;
            let accepted = state.storage.window_at(node_id, seq).await?;
            if let Some(accepted) = accepted
                && accepted.hash != jws_hash(held)
                && !same_payload(&accepted.jws, held)
            {
                state
                    .storage
                    .flag_node(node_id, &format!("seq_conflict:{seq}"))
                    .await?;
                tracing::warn!(
                    node_id,
                    seq,
                    "A held window differs from the window accepted at its seq; node flagged."
                );
            }
        }
        if !passed.is_empty() {
            state.storage.drop_held_through(node_id, head).await?;
        }
        let next = head + 1;
        let Some(jws) = state.storage.held_window(node_id, next).await? else {
            return Ok(());
        };
        let chain = ChainState {
            last_seq: head,
            last_hash: node.last_hash.clone(),
            last_end: node.last_end,
        };
        let now = Utc::now();
        let (_, jws, result) = verify_windows(
            &node,
            vec![(0, jws)],
            chain,
            now,
            TimeBounds::of(state),
            Keys::ThreadCache,
        )?
        .pop()
        .ok_or_else(|| ApiError::internal(&"a held window got no verification result"))?;
        match result {
            Ok(verified) => match crate::ingest::store(
                state,
                crate::ingest::Entry {
                    node: &node,
                    jws: &jws,
                    window: &verified,
                    now,
                },
            )
            .await
            {
                Ok(certificate) => {
                    tracing::info!(node_id, seq = next, certificate = ?certificate.as_ref().map(|c| &c.id), "Held window appended: its gap was filled.");
                }
                // A concurrent release (another request or replica) appended it first.
                Err(err) if err.code() == "seq_replay" => {}
                // Not a verdict on the window (a database, carbon or signing failure): it stays
                // held, acknowledged, and the next request for this node retries the release.
                Err(err) if err.status().is_server_error() => return Err(err),
                Err(err) => return reject_held(state, node_id, next, err.code()).await,
            },
            Err(VerifyError::SeqReplay { .. }) => {}
            Err(err) => return reject_held(state, node_id, next, err.code()).await,
        }
        state.storage.release_held(node_id, next).await?;
    }
}

async fn reject_held(
    state: &AppState,
    node_id: &str,
    seq: u64,
    code: &str,
) -> Result<(), ApiError> {
    tracing::warn!(
        node_id,
        seq,
        code,
        "A held window failed verification once its gap was filled; dropped and the node flagged."
    );
    // Flagged first: if the removal then fails, the window is still held, the next release
    // judges it again, and the flag (first reason kept) is not lost either way.
    state
        .storage
        .flag_node(node_id, &format!("held_rejected:{seq}:{code}"))
        .await?;
    state.storage.release_held(node_id, seq).await?;
    state.metrics.rejected(code);
    Ok(())
}

/// The body; 413 `payload_too_large` when it is over `limit` bytes, 400 `invalid_request` when
/// it could not be read otherwise (the client stopped sending, a broken chunked encoding).
fn body_of(
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
    limit: usize,
) -> Result<Bytes, ApiError> {
    body.map_err(|err| {
        if err.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                format!("{err} (limit {limit} bytes)"),
            )
        } else {
            ApiError::bad_request(format!("the body could not be read: {err}"))
        }
    })
}

fn extract_jws(headers: &HeaderMap, body: &[u8]) -> Result<String, ApiError> {
    let media = super::media_type(headers);
    let jws = match media.as_str() {
        "application/json" => super::parse_json::<TelemetryRequest>(body)?.jws,
        "application/jose" | "text/plain" | "" => String::from_utf8(body.to_vec())
            .map_err(|_| ApiError::bad_request("body is not UTF-8"))?,
        other => {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                format!(
                    "content type {other} is not accepted; use application/jose or application/json"
                ),
            ));
        }
    };
    Ok(trimmed(jws))
}

/// `s` without its leading and trailing whitespace, in place: no copy, and none at all in the
/// common case of none.
fn trimmed(mut s: String) -> String {
    let end = s.trim_end().len();
    let start = end - s[..end].trim_start().len();
    s.truncate(end);
    if start > 0 {
        s.drain(..start);
    }
    s
}

/// Requests of at most this many windows in all (whatever their nodes) are verified on the
/// runtime thread that handles them, with that thread's prepared verifier for the node's key:
/// about 30 µs a window (one PS256 verification and the payload's parse, `docs/performance.md`),
/// less than the hand-off to the blocking pool costs. Larger requests are verified on the
/// blocking pool, with a verifier set up once per node. Counted per request, not per node: a
/// batch of many nodes' few windows each would otherwise run hundreds of verifications (with
/// keys of the nodes' choosing) on one runtime thread.
pub const INLINE_VERIFY_MAX: usize = 4;

/// Node keys whose prepared verifier each runtime thread keeps, least recently used dropped
/// first (a few KiB each: the parsed key and its OpenSSL contexts).
pub const PREPARED_KEYS_PER_THREAD: usize = 1024;

/// A node's public key, parsed, with its PS256 verifier: `None` when OpenSSL cannot set one up
/// for this key (each window then gets its precise error from [`verify_window`]). Setting one up
/// costs about as much as a verification (`wattest_shared::jws::Ps256Verifier`).
struct PreparedKey {
    key: openssl::pkey::PKey<openssl::pkey::Public>,
    verifier: Option<Ps256Verifier>,
}

impl PreparedKey {
    /// From the enrolled JWK's text; a JWK that no longer parses is a 500 (it was checked at
    /// enrollment).
    fn new(public_jwk: &str) -> Result<Self, ApiError> {
        let jwk: RsaJwk =
            serde_json::from_str(public_jwk).map_err(|err| ApiError::internal(&err))?;
        let key = jwk
            .to_public_key()
            .map_err(|err| ApiError::internal(&err))?;
        let verifier = Ps256Verifier::new(&key).ok();
        Ok(Self { key, verifier })
    }
}

thread_local! {
    /// This thread's prepared keys, by the enrolled JWK's whole text: a hit is the very key the
    /// node row holds, whatever happened to the node since.
    static PREPARED_KEYS: std::cell::RefCell<hashlink::LruCache<String, PreparedKey>> =
        std::cell::RefCell::new(hashlink::LruCache::new(PREPARED_KEYS_PER_THREAD));
}

/// Where [`verify_windows`] gets the node's prepared key.
#[derive(Debug, Clone, Copy)]
enum Keys {
    /// This thread's cache (runtime threads: few, long-lived).
    ThreadCache,
    /// Set up for this call and dropped (blocking-pool threads, which come and go).
    PerCall,
}

/// The time bounds of step 7 ([`verify_windows`]): how far a window's end may lie after the
/// oracle's clock, and how long before its node's enrollment (beyond that skew) its start may lie.
#[derive(Debug, Clone, Copy)]
struct TimeBounds {
    max_skew_secs: i64,
    max_backdate_secs: i64,
}

impl TimeBounds {
    fn of(state: &AppState) -> Self {
        Self {
            max_skew_secs: state.settings.max_clock_skew_secs,
            max_backdate_secs: state.settings.max_backdate_secs,
        }
    }
}

/// A verified window's outcome, with its index in the request and its compact JWS.
type Verified = (usize, String, Result<VerifiedWindow, VerifyError>);

/// Steps 4–8 of §3.4 for one node's windows, in order: each is checked against `chain` as the
/// windows before it leave it. One result per window, in the order given.
///
/// # Errors
/// 500 when the node's stored key no longer parses.
fn verify_windows(
    node: &node::Model,
    items: Vec<(usize, String)>,
    chain: ChainState,
    now: DateTime<Utc>,
    bounds: TimeBounds,
    keys: Keys,
) -> Result<Vec<Verified>, ApiError> {
    let max_skew = bounds.max_skew_secs;
    #[cfg(test)]
    tests::verifying(&node.kid);
    let attestation_level = if node.attestation_level == "tpm" {
        AttestationLevel::Tpm
    } else {
        AttestationLevel::Software
    };
    let run = |prepared: &mut PreparedKey| {
        let enrolled = EnrolledNode {
            id: node.id.clone(),
            key: prepared.key.clone(),
            attestation_level,
            earliest_start: crate::verification::earliest_start(
                node.enrolled_at,
                bounds.max_skew_secs,
                bounds.max_backdate_secs,
            ),
        };
        let mut chain = chain;
        items
            .into_iter()
            .map(|(i, jws)| {
                let result = decode_header(&jws, WINDOW_TYP)
                    .map_err(VerifyError::from)
                    .and_then(|u| match prepared.verifier.as_mut() {
                        Some(verifier) => {
                            verify_window_with(&jws, u, &enrolled, verifier, &chain, now, max_skew)
                        }
                        None => verify_window(&jws, u, &enrolled, &chain, now, max_skew),
                    });
                if let Ok(v) = &result {
                    chain = ChainState {
                        last_seq: v.claims.seq,
                        last_hash: Some(v.hash.clone()),
                        last_end: Some(v.claims.end),
                    };
                }
                (i, jws, result)
            })
            .collect()
    };
    match keys {
        Keys::PerCall => Ok(run(&mut PreparedKey::new(&node.public_jwk)?)),
        Keys::ThreadCache => PREPARED_KEYS.with_borrow_mut(|cache| {
            if cache.get_mut(node.public_jwk.as_str()).is_none() {
                cache.insert(node.public_jwk.clone(), PreparedKey::new(&node.public_jwk)?);
            }
            let prepared = cache
                .get_mut(node.public_jwk.as_str())
                .ok_or_else(|| ApiError::internal(&"a prepared key was dropped"))?;
            Ok(run(prepared))
        }),
    }
}

/// Maps a verification failure to its documented status.
fn verify_error(err: &VerifyError) -> ApiError {
    let status = match err.code() {
        "bad_signature" => StatusCode::UNAUTHORIZED,
        "node_mismatch" => StatusCode::FORBIDDEN,
        "seq_replay" | "seq_conflict" | "seq_gap" | "chain_broken" | "overlapping_window" => {
            StatusCode::CONFLICT
        }
        "future_window" | "invalid_period" | "implausible" | "invalid_key" => {
            StatusCode::UNPROCESSABLE_ENTITY
        }
        _ => StatusCode::BAD_REQUEST,
    };
    let api = ApiError::new(status, err.code(), err.to_string());
    match err {
        VerifyError::SeqGap { expected, .. } => api.with_expected_seq(*expected),
        _ => api,
    }
}

/// A seq at or below the node's chain head. The very window already accepted (same JWS, or the
/// same signed payload re-signed) is a retry after a lost acknowledgement: idempotent success
/// with the original receipt (original hash, and the certificate when it was the final window).
/// A different window for an accepted seq is a `seq_conflict` (409): the node signed two
/// histories, so it is flagged (`seq_conflict:<seq>`), which marks its later certificates.
///
/// `last` is the chain head's seq the window was judged against; `None` when another request
/// moved the head meanwhile (a lost race), and the answer's `expected_seq` is read afresh.
async fn replayed(
    state: &AppState,
    node_id: &str,
    seq: u64,
    last: Option<u64>,
    jws: &str,
) -> Result<Json<TelemetryAccepted>, ApiError> {
    let last = match last {
        Some(last) => last,
        None => state
            .storage
            .node_by_id(node_id)
            .await?
            .map_or(seq, |node| {
                u64::try_from(node.last_seq).unwrap_or(seq).max(seq)
            }),
    };
    let Some(stored) = state.storage.window_at(node_id, seq).await? else {
        return Err(verify_error(&VerifyError::SeqReplay { seq, last })
            .with_already_accepted(false)
            .with_expected_seq(last + 1));
    };
    if stored.hash == jws_hash(jws) || same_payload(&stored.jws, jws) {
        tracing::info!(
            node_id,
            seq,
            "Duplicate of an accepted window; original receipt returned."
        );
        return receipt(state, stored).await.map(Json);
    }
    let reason = format!("seq_conflict:{seq}");
    state.storage.flag_node(node_id, &reason).await?;
    tracing::warn!(
        node_id,
        seq,
        "Node signed two different windows for one seq; node flagged."
    );
    Err(ApiError::new(
        StatusCode::CONFLICT,
        "seq_conflict",
        format!(
            "seq {seq} was already accepted with different content (hash {}); the node is flagged",
            stored.hash
        ),
    )
    .with_already_accepted(false)
    .with_expected_seq(last + 1))
}

/// True when both compact JWS carry the same payload segment (a window re-signed: RSA-PSS
/// signatures are randomised, so the JWS differs while the signed claims are identical).
fn same_payload(a: &str, b: &str) -> bool {
    match (a.split('.').nth(1), b.split('.').nth(1)) {
        (Some(x), Some(y)) => x == y,
        _ => false,
    }
}

/// The receipt of an already stored window, as it was first returned.
async fn receipt(state: &AppState, w: window::Model) -> Result<TelemetryAccepted, ApiError> {
    // The certificate as it stands now: revoked since, a duplicate's receipt says so.
    let closing = if w.is_final {
        state
            .storage
            .certificate_closing(&w.node_id, w.job_id.as_deref(), w.seq)
            .await?
    } else {
        None
    };
    let certificate = match closing {
        Some(row) => super::certificates::summaries(state, std::slice::from_ref(&row))
            .await?
            .pop(),
        None => None,
    };
    Ok(TelemetryAccepted {
        node_id: w.node_id,
        seq: u64::try_from(w.seq).unwrap_or(0),
        hash: w.hash,
        salt_length: if w.salt_length == "maximum" {
            SaltLength::Maximum
        } else {
            SaltLength::Digest
        },
        certificate,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use chrono::Duration;
    use wattest_shared::SoftwareKey;
    use wattest_shared::jws::sign_compact;

    /// The default skew bound and no backdating bound (the test windows start before the
    /// test nodes' enrollment).
    const UNBOUNDED: TimeBounds = TimeBounds {
        max_skew_secs: 60,
        max_backdate_secs: i64::MAX,
    };

    fn t0() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-11-24T10:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    fn node_row(key: &SoftwareKey) -> node::Model {
        node::Model {
            id: "node-1".into(),
            name: "n".into(),
            zone: "GB".into(),
            kid: "kid".into(),
            public_jwk: serde_json::to_string(&key.public_jwk()).unwrap(),
            attestation_level: "software".into(),
            enrolled_at: t0(),
            last_seq: 0,
            last_hash: None,
            last_end: None,
            flag: None,
        }
    }

    /// The kids whose windows [`verify_windows`] was given, with the thread it ran on (all
    /// tests': each test's nodes have keys of their own).
    static VERIFIED_ON: std::sync::Mutex<Vec<(String, std::thread::ThreadId)>> =
        std::sync::Mutex::new(Vec::new());

    /// Called by [`verify_windows`] for `kid`'s windows.
    pub(super) fn verifying(kid: &str) {
        VERIFIED_ON
            .lock()
            .unwrap()
            .push((kid.to_owned(), std::thread::current().id()));
    }

    /// The threads `kid`'s windows were verified on, in order.
    fn verified_on(kid: &str) -> Vec<std::thread::ThreadId> {
        VERIFIED_ON
            .lock()
            .unwrap()
            .iter()
            .filter(|(k, _)| k == kid)
            .map(|(_, thread)| *thread)
            .collect()
    }

    /// The SQL of every statement `state` runs from now on (through its own storage handle).
    fn observe(state: &mut AppState) -> std::sync::Arc<std::sync::Mutex<Vec<String>>> {
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = seen.clone();
        state
            .storage
            .observe_statements(move |sql| sink.lock().unwrap().push(sql.to_owned()));
        seen
    }

    fn first_window(key: &SoftwareKey) -> String {
        let claims = crate::verification::test_window_claims("node-1", 1, None, t0());
        sign_compact(key, WINDOW_TYP, &serde_json::to_vec(&claims).unwrap()).unwrap()
    }

    /// The codes `verify_windows` gives `windows` (index order) against `node`'s key.
    fn outcomes(
        node: &node::Model,
        windows: &[&str],
        keys: Keys,
    ) -> Vec<Result<u64, &'static str>> {
        let items = windows
            .iter()
            .enumerate()
            .map(|(i, w)| (i, (*w).to_owned()))
            .collect();
        let now = t0() + Duration::hours(1);
        verify_windows(node, items, ChainState::default(), now, UNBOUNDED, keys)
            .unwrap()
            .into_iter()
            .map(|(_, _, r)| r.map(|v| v.claims.seq).map_err(|e| e.code()))
            .collect()
    }

    #[test]
    fn a_threads_prepared_key_is_the_one_the_node_row_holds() {
        let (a, b) = (
            SoftwareKey::generate(2048).unwrap(),
            SoftwareKey::generate(2048).unwrap(),
        );
        let (by_a, by_b) = (first_window(&a), first_window(&b));
        for keys in [Keys::ThreadCache, Keys::PerCall] {
            // Key A prepared (and, for the thread cache, kept) first …
            assert_eq!(
                outcomes(&node_row(&a), &[&by_a, &by_b], keys),
                [Ok(1), Err("bad_signature")]
            );
            // … then the same node id with key B: the cached verifier of A is not used.
            assert_eq!(
                outcomes(&node_row(&b), &[&by_a, &by_b], keys),
                [Err("bad_signature"), Ok(1)]
            );
            assert_eq!(
                outcomes(&node_row(&a), &[&by_b, &by_a], keys),
                [Err("bad_signature"), Ok(1)]
            );
        }
    }

    #[test]
    fn a_stored_key_that_no_longer_parses_is_an_internal_error_not_a_verdict() {
        let a = SoftwareKey::generate(2048).unwrap();
        let mut node = node_row(&a);
        node.public_jwk = "{\"kty\":\"RSA\"}".into();
        for keys in [Keys::ThreadCache, Keys::PerCall] {
            let err = verify_windows(
                &node,
                vec![(0, first_window(&a))],
                ChainState::default(),
                t0() + Duration::hours(1),
                UNBOUNDED,
                keys,
            )
            .unwrap_err();
            assert_eq!(err.status(), StatusCode::INTERNAL_SERVER_ERROR);
        }
    }

    /// Each answer as the accepted seq, `held N`, or the error code.
    fn answers(results: Vec<Result<Ingested, ApiError>>) -> Vec<Result<u64, String>> {
        results
            .into_iter()
            .map(|r| match r {
                Ok(Ingested::Accepted(a) | Ingested::Duplicate(a)) => Ok(a.seq),
                Ok(Ingested::Held(h)) => Err(format!("held {}", h.seq)),
                Err(err) => Err(err.code().to_owned()),
            })
            .collect()
    }

    /// Ingests `jws` and checks it is answered 202, held as `seq`.
    async fn assert_held(state: &AppState, jws: String, seq: u64) {
        assert_eq!(
            answers(ingest(state, vec![jws]).await),
            [Err(format!("held {seq}"))]
        );
    }

    /// An oracle on SQLite in `dir` with node `node-1` enrolled under a fresh software key.
    async fn one_node(dir: &std::path::Path) -> (AppState, SoftwareKey) {
        let url = crate::storage::database_url(dir, None);
        let state = AppState::open(dir, &url, crate::ingest::tests::settings())
            .await
            .unwrap();
        let key = SoftwareKey::generate(2048).unwrap();
        let mut node = node_row(&key);
        node.kid = key.public_jwk().thumbprint();
        state.storage.insert_node(node).await.unwrap();
        (state, key)
    }

    /// Window `seq` of `node-1` after `prev`, drawing `watts` for its 10 s, signed.
    fn window(key: &SoftwareKey, seq: u64, prev: &str, watts: f64) -> String {
        let mut c =
            crate::verification::test_window_claims("node-1", seq, Some(jws_hash(prev)), t0());
        let seconds = c.duration_seconds();
        for s in &mut c.sources {
            s.energy_wh = wattest_shared::WattHours(watts * seconds / 3600.0);
            s.mean_w = wattest_shared::Watts(watts);
            s.max_w = wattest_shared::Watts(watts);
        }
        sign_compact(key, WINDOW_TYP, &serde_json::to_vec(&c).unwrap()).unwrap()
    }

    #[tokio::test]
    async fn a_batch_window_over_the_size_limit_is_refused_alone() {
        let dir = tempfile::tempdir().unwrap();
        let (state, key) = one_node(dir.path()).await;
        let w1 = first_window(&key);
        let w2 = window(&key, 2, &w1, 50.0);
        // A header that decodes, and more than a window posted alone may carry.
        let big = format!("{}{}", w2, "A".repeat(super::super::MAX_BODY_BYTES));
        assert_eq!(
            answers(ingest(&state, vec![w1, big, w2]).await),
            [Ok(1), Err("payload_too_large".to_owned()), Ok(2)]
        );
    }

    #[tokio::test]
    async fn a_seq_lost_in_a_race_reports_the_seq_now_expected() {
        let dir = tempfile::tempdir().unwrap();
        let (state, key) = one_node(dir.path()).await;
        let w1 = first_window(&key);
        let w2 = window(&key, 2, &w1, 50.0);
        let w3 = window(&key, 3, &w2, 50.0);
        assert_eq!(
            answers(ingest(&state, vec![w1.clone(), w2, w3]).await),
            [Ok(1), Ok(2), Ok(3)]
        );
        // Another window 1, as if its request lost the race for seq 1 while the chain moved on
        // to 3: the conflict names 4 as the seq expected next, not 1.
        let other = window(&key, 1, &w1, 60.0);
        let err = replayed(&state, "node-1", 1, None, &other)
            .await
            .unwrap_err();
        assert_eq!(err.code(), "seq_conflict");
        let body = super::super::problem::Problem::from(err);
        assert_eq!(body.expected_seq, Some(4));
    }

    #[tokio::test]
    async fn a_log_leaf_that_is_not_the_certificates_jws_is_never_proven() {
        use sea_orm::ConnectionTrait;
        let dir = tempfile::tempdir().unwrap();
        let (state, key) = one_node(dir.path()).await;
        let mut claims = crate::verification::test_window_claims("node-1", 1, None, t0());
        claims.is_final = true;
        let w1 = sign_compact(&key, WINDOW_TYP, &serde_json::to_vec(&claims).unwrap()).unwrap();
        let Ok(Ingested::Accepted(accepted)) = ingest(&state, vec![w1]).await.remove(0) else {
            panic!("the final window was not accepted");
        };
        let id = accepted.certificate.unwrap().id;
        let jws = state.storage.certificate(&id).await.unwrap().unwrap().jws;
        assert!(
            state
                .ledger
                .inclusion(&state.storage, &id, &jws, None)
                .await
                .is_ok()
        );
        // The certificates table edited behind the log's back: no proof, a 500.
        let edited = format!("{jws}x");
        state
            .storage
            .db()
            .execute_unprepared(&format!("UPDATE certificates SET jws = '{edited}'"))
            .await
            .unwrap();
        let err = state
            .ledger
            .inclusion(&state.storage, &id, &edited, None)
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                crate::ledger::LedgerError::Storage(crate::storage::StorageError::Corrupt(_))
            ),
            "{err}"
        );
        assert_eq!(
            ApiError::from(err).status(),
            StatusCode::INTERNAL_SERVER_ERROR
        );
    }

    async fn node_state(state: &AppState) -> node::Model {
        state.storage.node_by_id("node-1").await.unwrap().unwrap()
    }

    /// Whether `node-1` has window `seq` held.
    async fn is_held(state: &AppState, seq: u64) -> bool {
        state
            .storage
            .held_window("node-1", seq)
            .await
            .unwrap()
            .is_some()
    }

    /// Node `node-1` with window 2 held and window 1 accepted while the database refused
    /// window 2's row, so its release failed and it stays held; the database takes it again
    /// on return. Returns the state and windows 1 and 2.
    async fn held_behind_a_failed_release(dir: &std::path::Path) -> (AppState, String, String) {
        use sea_orm::ConnectionTrait;
        let (state, key) = one_node(dir).await;
        let w1 = first_window(&key);
        let w2 = window(&key, 2, &w1, 50.0);
        assert_held(&state, w2.clone(), 2).await;
        let db = state.storage.db();
        db.execute_unprepared(
            "CREATE TRIGGER refuse_2 BEFORE INSERT ON windows WHEN NEW.seq = 2 \
             BEGIN SELECT RAISE(ABORT, 'refused by the test'); END",
        )
        .await
        .unwrap();
        // Window 1 is accepted; the release of window 2 fails, and it stays held.
        assert_eq!(answers(ingest(&state, vec![w1.clone()]).await), [Ok(1)]);
        db.execute_unprepared("DROP TRIGGER refuse_2")
            .await
            .unwrap();
        (state, w1, w2)
    }

    /// A held window whose append fails for a reason that is not a verdict on it (here the
    /// database refuses its row) stays held and acknowledged, the node unflagged. Once the
    /// database takes it again, it is appended when the node sends anything — even only a
    /// window sent again after a lost answer — and the window resent is a duplicate.
    #[tokio::test]
    async fn a_held_window_that_cannot_be_stored_for_now_stays_held() {
        let dir = tempfile::tempdir().unwrap();
        let (state, w1, w2) = held_behind_a_failed_release(dir.path()).await;
        assert!(is_held(&state, 2).await);
        assert_eq!(node_state(&state).await.flag, None);
        // Window 1 again (its answer lost): a duplicate, and window 2 is appended with it.
        assert_eq!(answers(ingest(&state, vec![w1]).await), [Ok(1)]);
        assert_eq!(node_state(&state).await.last_seq, 2);
        assert_eq!(answers(ingest(&state, vec![w2]).await), [Ok(2)]);
        assert_eq!(node_state(&state).await.flag, None);
    }

    /// The sweeper appends a held window whose release was cut short, with no request from
    /// the node (an idle node sends none).
    #[tokio::test]
    async fn the_sweeper_releases_what_no_request_will() {
        let dir = tempfile::tempdir().unwrap();
        let (state, _, _) = held_behind_a_failed_release(dir.path()).await;
        assert_eq!(
            state.storage.releasable_held_nodes().await.unwrap(),
            ["node-1"]
        );
        spawn_held_sweeper(state.clone(), std::time::Duration::from_millis(50));
        for _ in 0..100 {
            if node_state(&state).await.last_seq == 2 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        assert_eq!(node_state(&state).await.last_seq, 2);
        assert!(!is_held(&state, 2).await);
    }

    /// At the limit of held windows, a window already held is still answered 202 when sent
    /// again (not `seq_gap`), and only new ones are refused.
    #[tokio::test]
    async fn a_held_window_sent_again_at_the_limit_is_still_held() {
        let dir = tempfile::tempdir().unwrap();
        let (state, key) = one_node(dir.path()).await;
        let w1 = first_window(&key);
        let w2 = window(&key, 2, &w1, 50.0);
        let w3 = window(&key, 3, &w2, 50.0);
        assert_held(&state, w3.clone(), 3).await;
        let limit = crate::storage::held::MAX_HELD_PER_NODE;
        for seq in 4..=limit + 2 {
            let filler = format!("filler.{seq}.signature");
            state
                .storage
                .hold_window("node-1", seq, &jws_hash(&filler), &filler, t0())
                .await
                .unwrap();
        }
        assert_eq!(state.storage.held_count("node-1").await.unwrap(), limit);
        assert_held(&state, w3, 3).await;
        assert_eq!(
            answers(ingest(&state, vec![w2]).await),
            [Err("seq_gap".to_owned())]
        );
    }

    /// A held window that the chain passes with a different window at its seq (the node signed
    /// two histories) flags the node instead of being dropped silently.
    #[tokio::test]
    async fn a_held_window_passed_by_another_flags_the_node() {
        let dir = tempfile::tempdir().unwrap();
        let (state, key) = one_node(dir.path()).await;
        let w1 = first_window(&key);
        let held = window(&key, 2, &w1, 50.0);
        let other = window(&key, 2, &w1, 60.0);
        assert_held(&state, held, 2).await;
        assert_eq!(
            answers(ingest(&state, vec![w1, other]).await),
            [Ok(1), Ok(2)]
        );
        let node = node_state(&state).await;
        assert_eq!(
            (node.last_seq, node.flag.as_deref()),
            (2, Some("seq_conflict:2"))
        );
        assert!(!is_held(&state, 2).await);
    }

    /// A window header naming `kid`, with an empty payload and a one-byte signature: what an
    /// unauthenticated client can send for nothing.
    fn unsigned_window(kid: &str) -> String {
        use base64::Engine as _;
        let header = serde_json::json!({"alg": "PS256", "kid": kid, "typ": WINDOW_TYP});
        let header = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(header.to_string());
        format!("{header}.e30.AA")
    }

    /// A batch's kids, however many, are looked up in one query; the unknown ones are answered
    /// `unknown_kid` without another, and the known node's window is accepted as usual.
    #[tokio::test]
    async fn a_batch_of_many_kids_is_one_lookup() {
        let dir = tempfile::tempdir().unwrap();
        let (mut state, key) = one_node(dir.path()).await;
        let statements = observe(&mut state);
        let mut batch: Vec<String> = (0..MAX_BATCH_WINDOWS - 1)
            .map(|i| unsigned_window(&format!("unknown-{i}")))
            .collect();
        let w1 = first_window(&key);
        batch.push(w1.clone());
        let got = answers(ingest(&state, batch).await);
        let mut expected = vec![Err("unknown_kid".to_owned()); MAX_BATCH_WINDOWS - 1];
        expected.push(Ok(1));
        assert_eq!(got, expected);
        let lookups: Vec<String> = statements
            .lock()
            .unwrap()
            .iter()
            .filter(|sql| sql.contains("\"nodes\".\"kid\""))
            .cloned()
            .collect();
        assert_eq!(lookups.len(), 1, "{lookups:?}");
        // One node's windows (the agent's batch) keep their one lookup by kid.
        statements.lock().unwrap().clear();
        let w2 = window(&key, 2, &w1, 50.0);
        let w3 = window(&key, 3, &w2, 50.0);
        let w4 = window(&key, 4, &w3, 50.0);
        assert_eq!(
            answers(ingest(&state, vec![w2, w3, w4]).await),
            [Ok(2), Ok(3), Ok(4)]
        );
        let lookups = statements
            .lock()
            .unwrap()
            .iter()
            .filter(|sql| sql.contains("\"nodes\".\"kid\""))
            .count();
        assert_eq!(lookups, 1);
    }

    /// Enrolls `id` under a fresh key, beside `node-1`.
    async fn another_node(state: &AppState, id: &str) -> SoftwareKey {
        let key = SoftwareKey::generate(2048).unwrap();
        let mut node = node_row(&key);
        node.id = id.into();
        node.kid = key.public_jwk().thumbprint();
        state.storage.insert_node(node).await.unwrap();
        key
    }

    /// Whether windows are verified on the runtime thread depends on the request's number of
    /// windows, not on each node's: many nodes' few windows each go to the blocking pool.
    #[tokio::test]
    async fn a_request_of_many_windows_is_verified_off_the_runtime_thread() {
        let dir = tempfile::tempdir().unwrap();
        let (state, a) = one_node(dir.path()).await;
        let b = another_node(&state, "node-2").await;
        let (kid_a, kid_b) = (a.public_jwk().thumbprint(), b.public_jwk().thumbprint());
        let here = std::thread::current().id();
        // Three windows of each node: six in all, over INLINE_VERIFY_MAX.
        let a1 = first_window(&a);
        let a2 = window(&a, 2, &a1, 50.0);
        let a3 = window(&a, 3, &a2, 50.0);
        let b1 = first_window(&b);
        let batch = vec![a1, b1.clone(), a2, b1.clone(), a3, b1];
        assert!(batch.len() > INLINE_VERIFY_MAX);
        assert_eq!(
            answers(ingest(&state, batch).await)[..5],
            [
                Ok(1),
                Err("node_mismatch".to_owned()),
                Ok(2),
                Err("node_mismatch".to_owned()),
                Ok(3)
            ]
        );
        for kid in [&kid_a, &kid_b] {
            let threads = verified_on(kid);
            assert_eq!(threads.len(), 1);
            assert_ne!(threads[0], here, "verified on the runtime thread");
        }
        // Four windows in all, of two nodes: verified here.
        let (a1, b1) = (first_window(&a), first_window(&b));
        ingest(&state, vec![a1.clone(), b1.clone(), a1, b1]).await;
        for kid in [&kid_a, &kid_b] {
            assert_eq!(verified_on(kid)[1..], [here]);
        }
    }

    /// A release that finds nothing to release (the gap still open) writes nothing: no DELETE
    /// takes SQLite's write lock for nothing.
    #[tokio::test]
    async fn a_release_with_nothing_to_release_deletes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let (mut state, key) = one_node(dir.path()).await;
        let w1 = first_window(&key);
        let w2 = window(&key, 2, &w1, 50.0);
        assert_held(&state, w2, 2).await;
        let statements = observe(&mut state);
        release_held(&state, "node-1").await.unwrap();
        let statements = statements.lock().unwrap().clone();
        assert!(!statements.is_empty());
        assert!(
            !statements
                .iter()
                .any(|sql| sql.trim_start().to_ascii_uppercase().starts_with("DELETE")),
            "{statements:?}"
        );
        assert!(is_held(&state, 2).await);
    }

    /// The sweeper lists only the nodes a release would change, in one query, and passes over
    /// a node whose gap is still open.
    #[tokio::test]
    async fn the_sweeper_passes_over_a_node_whose_gap_is_open() {
        let dir = tempfile::tempdir().unwrap();
        let (mut state, key) = one_node(dir.path()).await;
        let w1 = first_window(&key);
        let w2 = window(&key, 2, &w1, 50.0);
        let w3 = window(&key, 3, &w2, 50.0);
        assert_held(&state, w3, 3).await;
        assert!(
            state
                .storage
                .releasable_held_nodes()
                .await
                .unwrap()
                .is_empty()
        );
        let statements = observe(&mut state);
        sweep_held(&state).await;
        let statements = statements.lock().unwrap().clone();
        assert!(
            !statements.iter().any(|sql| sql.contains("node-1")),
            "{statements:?}"
        );
        assert!(is_held(&state, 3).await);
    }

    #[test]
    fn a_window_is_trimmed_in_place() {
        let s = String::from("abc.def.ghi");
        let (ptr, cap) = (s.as_ptr(), s.capacity());
        let t = trimmed(s);
        assert_eq!(
            (t.as_str(), t.as_ptr(), t.capacity()),
            ("abc.def.ghi", ptr, cap)
        );
        let s = String::from(" \n abc.def.ghi \r\n");
        let ptr = s.as_ptr();
        let t = trimmed(s);
        assert_eq!((t.as_str(), t.as_ptr()), ("abc.def.ghi", ptr));
        assert_eq!(trimmed(" \t ".to_owned()), "");
        assert_eq!(trimmed("é ".to_owned()), "é");
    }
}
