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
    #[schema(value_type = HealthStatus)]
    pub status: &'static str,
    /// `ok`, or `unreachable` (the database error itself goes to the oracle's log only).
    #[schema(value_type = DatabaseStatus)]
    pub database: String,
    /// Oracle version.
    pub version: &'static str,
}

/// Overall health: `ok`, or `degraded` when the database is unreachable.
// Schema only: `Health::status` is a string with these values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum HealthStatus {
    /// Healthy.
    Ok,
    /// The database is unreachable.
    Degraded,
}

/// Whether the database answered: `ok` or `unreachable`.
// Schema only: `Health::database` is a string with these values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DatabaseStatus {
    /// The database answered a ping.
    Ok,
    /// The ping failed.
    Unreachable,
}

/// Liveness and database reachability. A 503 for an unreachable database carries the same
/// `Health` body (not a problem), so that probes read one shape; a 503 for a request that timed
/// out is a `timeout` problem, as on every route.
#[utoipa::path(get, path = "/healthz", tag = "meta", responses(
    (status = 200, description = "Healthy", body = Health),
    (status = 503, description = "Database unreachable: a `Health` body (`status` `degraded`, `application/json`); or the request timed out: a `timeout` problem (`application/problem+json`)", content(
        (Health = "application/json"),
        (super::problem::Problem = "application/problem+json"),
    )),
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

/// The OpenAPI document (`application/json`), built and serialized once per process: it does
/// not change while the oracle runs, and building it per request cost every caller of this
/// public route a walk over all the schemas.
pub async fn openapi() -> Response {
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        openapi_json(),
    )
        .into_response()
}

/// The serialized OpenAPI document; the same bytes (not a copy) on every call.
pub(crate) fn openapi_json() -> axum::body::Bytes {
    static JSON: std::sync::LazyLock<axum::body::Bytes> = std::sync::LazyLock::new(|| {
        // Serializing the document's own types to JSON does not fail.
        serde_json::to_vec(&ApiDoc::openapi())
            .unwrap_or_default()
            .into()
    });
    JSON.clone()
}

#[cfg(test)]
mod openapi_tests {
    use super::*;

    /// `/openapi.json` is built once: every call shares the same bytes, which are the document.
    #[test]
    fn openapi_json_is_built_once() {
        let (a, b) = (openapi_json(), openapi_json());
        assert_eq!(a.as_ptr(), b.as_ptr());
        let served = serde_json::from_slice::<serde_json::Value>(&a).ok();
        assert_eq!(served, serde_json::to_value(ApiDoc::openapi()).ok());
        assert!(served.is_some());
    }
}
