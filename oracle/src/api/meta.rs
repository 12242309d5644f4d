//! Health, keys and the API description.

use super::ApiDoc;
use crate::AppState;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::{OpenApi, ToSchema};
use wattest_shared::Jwks;

/// Health status.
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// `ok` or `degraded`.
    pub status: &'static str,
    /// `ok`, or `unreachable` (the database error itself goes to the oracle's log only).
    pub database: String,
    /// Oracle version.
    pub version: &'static str,
}

/// Liveness and database reachability. The 503 carries the same `Health` body (not a
/// problem), so that probes read one shape.
#[utoipa::path(get, path = "/healthz", tag = "meta", responses(
    (status = 200, description = "Healthy", body = Health),
    (status = 503, description = "Database unreachable (`status` `degraded`)", body = Health),
))]
pub async fn healthz(State(state): State<AppState>) -> Response {
    let version = env!("CARGO_PKG_VERSION");
    match state.storage.db().ping().await {
        Ok(()) => (
            StatusCode::OK,
            Json(Health {
                status: "ok",
                database: "ok".into(),
                version,
            }),
        )
            .into_response(),
        Err(err) => {
            tracing::warn!(error = %err, "Health check: the database is unreachable.");
            let mut response = (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(Health {
                    status: "degraded",
                    database: "unreachable".into(),
                    version,
                }),
            )
                .into_response();
            response
                .extensions_mut()
                .insert(super::problem::NotAProblem);
            response
        }
    }
}

/// The oracle's public keys (RFC 7517 JWK Set); `kid` is each key's RFC 7638 thumbprint.
#[utoipa::path(get, path = "/.well-known/jwks.json", tag = "meta", responses((status = 200, description = "JWK Set", body = Jwks)))]
pub async fn jwks(State(state): State<AppState>) -> Json<Jwks> {
    Json(state.keys.get().jwks())
}

/// Prometheus metrics (OpenMetrics text format).
pub async fn metrics(State(state): State<AppState>) -> impl axum::response::IntoResponse {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.encode(),
    )
}

/// The OpenAPI document.
pub async fn openapi() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
