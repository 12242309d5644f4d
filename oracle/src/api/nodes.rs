//! Node enrollment: a token holder registers a node's public key and grid zone.

use super::parse_json;
use super::problem::ApiError;
use crate::AppState;
use crate::auth::{self, Role};
use crate::storage::entities::node;
use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use wattest_shared::{AttestationLevel, RsaJwk};

/// Body of `POST /v1/nodes`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EnrollRequest {
    /// Operator-chosen node name, 1–128 characters, no control characters.
    pub name: String,
    /// Grid zone the node draws power from: ISO 3166-1 alpha-2 (`BE`), an Electricity Maps
    /// zone (`US-CAL-CISO`), ISO alpha-3 (`BEL`) or an Ember region (`EU`, `World`).
    pub zone: String,
    /// The node's RSA public key (2048–4096 bits, e = 65537) as a JWK.
    pub public_key: RsaJwk,
}

/// The enrolled node.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct EnrolledNodeResponse {
    /// Node id (UUID): goes into every window's `node_id`.
    pub node_id: String,
    /// Name.
    pub name: String,
    /// Canonical grid zone.
    pub zone: String,
    /// RFC 7638 thumbprint of the key: the `kid` of every window.
    pub kid: String,
    /// Key protection proven at enrollment.
    pub attestation_level: AttestationLevel,
    /// Enrollment time.
    pub enrolled_at: DateTime<Utc>,
}

/// Enrolls a node (requires a `node` token).
#[utoipa::path(post, path = "/v1/nodes", tag = "nodes", request_body = EnrollRequest, security(("bearer" = [])), responses(
    (status = 201, description = "Enrolled", body = EnrolledNodeResponse),
    (status = 400, description = "invalid_request", body = super::problem::Problem, content_type = "application/problem+json"),
    (status = 401, description = "missing_token / invalid_token", body = super::problem::Problem, content_type = "application/problem+json"),
    (status = 403, description = "forbidden_role", body = super::problem::Problem, content_type = "application/problem+json"),
    (status = 409, description = "key_already_enrolled", body = super::problem::Problem, content_type = "application/problem+json"),
    (status = 422, description = "unknown_zone / invalid_key / invalid_name", body = super::problem::Problem, content_type = "application/problem+json"),
))]
#[tracing::instrument(skip_all)]
pub async fn enroll(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<(StatusCode, Json<EnrolledNodeResponse>), ApiError> {
    auth::require(&state.storage, &headers, &[Role::Node]).await?;
    let request: EnrollRequest = parse_json(&body)?;
    let name = request.name.trim();
    if name.is_empty() || name.chars().count() > 128 || name.chars().any(char::is_control) {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_name",
            "name must be 1–128 characters without control characters",
        ));
    }
    let zone = state.carbon.zone(&request.zone).map_err(|err| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "unknown_zone",
            err.to_string(),
        )
    })?;
    request.public_key.to_public_key().map_err(|err| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_key",
            err.to_string(),
        )
    })?;
    let jwk = RsaJwk {
        kid: None,
        alg: None,
        use_: None,
        ..request.public_key
    };
    let kid = jwk.thumbprint();
    if state.storage.node_by_kid(&kid).await?.is_some() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "key_already_enrolled",
            format!("a node with key {kid} is already enrolled; generate a new key for a new node"),
        ));
    }
    let row = node::Model {
        id: uuid::Uuid::new_v4().to_string(),
        name: name.to_owned(),
        zone: zone.name.clone(),
        kid: kid.clone(),
        public_jwk: serde_json::to_string(&jwk).map_err(|err| ApiError::internal(&err))?,
        attestation_level: AttestationLevel::Software.as_str().into(),
        enrolled_at: Utc::now(),
        last_seq: 0,
        last_hash: None,
        last_end: None,
    };
    let response = EnrolledNodeResponse {
        node_id: row.id.clone(),
        name: row.name.clone(),
        zone: row.zone.clone(),
        kid,
        attestation_level: AttestationLevel::Software,
        enrolled_at: row.enrolled_at,
    };
    state.storage.insert_node(row).await?;
    tracing::info!(node_id = %response.node_id, zone = %response.zone, "Node enrolled.");
    Ok((StatusCode::CREATED, Json(response)))
}
