//! The transparency log over HTTP: the signed checkpoint and the log's verifier key (public),
//! inclusion and consistency proofs and entries (auditors).

use super::problem::ApiError;
use crate::AppState;
use crate::ledger::LedgerError;
use crate::storage::StorageError;
use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use wattest_shared::merkle::ProofError;
use wattest_shared::transparency::{ConsistencyProof, InclusionProof};

/// Maps log failures to problems: unknown certificate 404, sizes out of range 400; a store that
/// cannot build the proof (a missing subtree hash) is the oracle's failure, 500.
impl From<LedgerError> for ApiError {
    fn from(err: LedgerError) -> Self {
        match err {
            LedgerError::NotLogged(_) => Self::not_found(err.to_string()),
            LedgerError::BeyondHead { .. }
            | LedgerError::LoggedAfter { .. }
            | LedgerError::Storage(StorageError::Proof(ProofError::InvalidRange(_))) => Self::new(
                StatusCode::BAD_REQUEST,
                "invalid_tree_size",
                err.to_string(),
            ),
            LedgerError::Storage(err) => err.into(),
            LedgerError::Checkpoint(err) => Self::internal(&err),
        }
    }
}

/// `Content-Type` of both text answers of the log.
const TEXT: &str = "text/plain; charset=utf-8";

/// The current signed checkpoint: a C2SP tlog-checkpoint (origin, tree size, base64 root hash)
/// in a C2SP signed note, signed with the log's Ed25519 key (see `GET /v1/log/key`). Sent as
/// `text/plain; charset=utf-8`; the note ends with a newline, as C2SP signed-note requires.
#[utoipa::path(get, path = "/v1/log/checkpoint", tag = "log", responses(
    (status = 200, description = "Signed checkpoint (signed note text, `text/plain; charset=utf-8`, ending with a newline)", body = String, content_type = "text/plain",
        example = "oracle.example/wattest-log\n3\nW2SL4e2NYhTpd9sOlWcEHb6ToIW7AEM0S/zUrrsrwTQ=\n\n— oracle.example/wattest-log Az3grq…\n"),
))]
pub async fn checkpoint(State(state): State<AppState>) -> Result<Response, ApiError> {
    let (_, note) = state.ledger.checkpoint(&state.storage).await?;
    Ok(([(header::CONTENT_TYPE, TEXT)], note).into_response())
}

/// The log's verifier key, `<origin>+<key id>+<base64(0x01 ‖ Ed25519 public key)>`
/// (C2SP signed-note), for `wattest-verify --log-key`. Sent as `text/plain; charset=utf-8`, the
/// key alone: no trailing newline (a verifier key is one token, as signed-note tools take it).
#[utoipa::path(get, path = "/v1/log/key", tag = "log", responses(
    (status = 200, description = "Verifier key (`text/plain; charset=utf-8`, no trailing newline)", body = String, content_type = "text/plain"),
))]
pub async fn key(State(state): State<AppState>) -> Result<Response, ApiError> {
    let vkey = state
        .ledger
        .verifier_key()
        .map_err(|err| ApiError::internal(&err))?;
    Ok(([(header::CONTENT_TYPE, TEXT)], vkey).into_response())
}

/// Query of `GET /v1/log/proofs/inclusion`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct InclusionQuery {
    /// Certificate id.
    pub certificate_id: String,
    /// Tree size to prove against, ≥ 1 (default: the current size).
    #[param(minimum = 1)]
    pub tree_size: Option<u64>,
}

/// Inclusion proof of a certificate (RFC 9162 §2.1.3), with the signed checkpoint it is
/// proven against (role auditor; admin passes).
#[utoipa::path(get, path = "/v1/log/proofs/inclusion", tag = "log", params(InclusionQuery),
    security(("bearer" = [])), responses(
    (status = 200, description = "Inclusion proof", body = InclusionProof),
    (status = 400, description = "invalid_request / invalid_tree_size", body = super::problem::Problem, content_type = "application/problem+json"),
    (status = 404, description = "not_found: no such certificate in the log", body = super::problem::Problem, content_type = "application/problem+json"),
))]
pub async fn inclusion(
    State(state): State<AppState>,
    headers: HeaderMap,
    query: Result<Query<InclusionQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<InclusionProof>, ApiError> {
    crate::auth::require(&state.storage, &headers, super::LOG_READERS).await?;
    let Query(q) = query.map_err(|err| ApiError::bad_request(err.body_text()))?;
    let Some(row) = state.storage.certificate(&q.certificate_id).await? else {
        return Err(ApiError::not_found(format!(
            "no certificate {}",
            q.certificate_id
        )));
    };
    let proof = state
        .ledger
        .inclusion(&state.storage, &row.id, &row.jws, q.tree_size)
        .await?;
    Ok(Json(proof))
}

/// Query of `GET /v1/log/proofs/consistency`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ConsistencyQuery {
    /// The older tree size (≥ 1).
    #[param(minimum = 1)]
    pub first: u64,
    /// The newer tree size, ≥ `first` (default: the current size).
    #[param(minimum = 1)]
    pub second: Option<u64>,
}

/// Consistency proof between two tree sizes (RFC 9162 §2.1.4), with the signed checkpoint of
/// the newer one (role auditor; admin passes).
#[utoipa::path(get, path = "/v1/log/proofs/consistency", tag = "log", params(ConsistencyQuery),
    security(("bearer" = [])), responses(
    (status = 200, description = "Consistency proof", body = ConsistencyProof),
    (status = 400, description = "invalid_request / invalid_tree_size", body = super::problem::Problem, content_type = "application/problem+json"),
))]
pub async fn consistency(
    State(state): State<AppState>,
    headers: HeaderMap,
    query: Result<Query<ConsistencyQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<ConsistencyProof>, ApiError> {
    crate::auth::require(&state.storage, &headers, super::LOG_READERS).await?;
    let Query(q) = query.map_err(|err| ApiError::bad_request(err.body_text()))?;
    // A `first` beyond the log is named as such (as a `second` beyond it is), not as a
    // `first > second` out of order.
    let size = state.storage.log_head().await?.size;
    if q.first > size {
        return Err(LedgerError::BeyondHead {
            asked: q.first,
            size,
        }
        .into());
    }
    Ok(Json(
        state
            .ledger
            .consistency(&state.storage, q.first, q.second)
            .await?,
    ))
}

/// One log entry.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct LogEntry {
    /// Leaf index.
    pub index: u64,
    /// Certificate id.
    pub certificate_id: String,
    /// The entry: the certificate's compact JWS.
    pub jws: String,
}

/// The entry at a leaf index, for monitors replaying the log (role auditor; admin passes).
#[utoipa::path(get, path = "/v1/log/entries/{index}", tag = "log",
    params(("index" = u64, Path, description = "Leaf index, 0-based")),
    security(("bearer" = [])), responses(
    (status = 200, description = "The entry", body = LogEntry),
    (status = 404, description = "not_found", body = super::problem::Problem, content_type = "application/problem+json"),
))]
pub async fn entry(
    State(state): State<AppState>,
    headers: HeaderMap,
    path: Result<Path<u64>, axum::extract::rejection::PathRejection>,
) -> Result<Json<LogEntry>, ApiError> {
    crate::auth::require(&state.storage, &headers, super::LOG_READERS).await?;
    let Path(index) = path.map_err(|err| ApiError::bad_request(err.body_text()))?;
    let Some(certificate_id) = state.storage.log_entry(index).await? else {
        return Err(ApiError::not_found(format!("no log entry {index}")));
    };
    let row = state
        .storage
        .certificate(&certificate_id)
        .await?
        .ok_or_else(|| ApiError::internal(&"a logged certificate is missing"))?;
    Ok(Json(LogEntry {
        index,
        certificate_id,
        jws: row.jws,
    }))
}
