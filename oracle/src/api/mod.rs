//! The HTTP API: every route in one place, the OpenAPI document, and the shared request plumbing.

pub mod certificates;
pub mod exports;
pub mod log;
pub mod meta;
pub mod nodes;
pub mod problem;
pub mod telemetry;

use crate::AppState;
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use problem::ApiError;
use tower_http::trace::TraceLayer;
use utoipa::OpenApi;

/// Largest request body accepted, bytes. A window with 64 sources is about 20 KiB as a JWS.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// The OpenAPI 3.1 document served at `/openapi.json`.
#[derive(OpenApi)]
#[openapi(
    info(title = "Wattest oracle API", description = "Verifiable energy and carbon accounting of compute: enroll nodes, submit signed telemetry windows, fetch signed energy certificates and compliance exports. Errors are RFC 9457 problem+json bodies with a stable `code` (see docs/protocol.md)."),
    paths(
        meta::healthz,
        meta::jwks,
        nodes::enroll,
        nodes::answer_challenge,
        telemetry::submit,
        certificates::list,
        certificates::get_one,
        certificates::status,
        certificates::revoke,
        certificates::subject_schema,
        exports::export,
        log::checkpoint,
        log::key,
        log::inclusion,
        log::consistency,
        log::entry,
    ),
    components(schemas(problem::Problem)),
    modifiers(&BearerAuth),
    tags(
        (name = "nodes", description = "Node enrollment"),
        (name = "telemetry", description = "Signed energy windows (evidence)"),
        (name = "certificates", description = "Energy certificates (attestation results)"),
        (name = "exports", description = "Compliance exports"),
        (name = "log", description = "Transparency log of issued certificates (RFC 9162 proofs, C2SP checkpoints)"),
        (name = "meta", description = "Health and keys"),
    )
)]
pub struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The application: all routes, with the body limit and request tracing.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(meta::healthz))
        .route("/.well-known/jwks.json", get(meta::jwks))
        .route("/openapi.json", get(meta::openapi))
        .route("/metrics", get(meta::metrics))
        .route("/v1/nodes", post(nodes::enroll))
        .route(
            "/v1/nodes/challenges/{challenge_id}",
            post(nodes::answer_challenge),
        )
        .route("/v1/telemetry", post(telemetry::submit))
        .route("/v1/certificates", get(certificates::list))
        .route("/v1/certificates/{id}", get(certificates::get_one))
        .route("/v1/certificates/{id}/status", get(certificates::status))
        .route(
            certificates::SUBJECT_SCHEMA_PATH,
            get(certificates::subject_schema),
        )
        .route(
            "/v1/certificates/{id}/revocation",
            post(certificates::revoke),
        )
        .route("/v1/exports/{file}", get(exports::export))
        .route("/v1/log/checkpoint", get(log::checkpoint))
        .route("/v1/log/key", get(log::key))
        .route("/v1/log/proofs/inclusion", get(log::inclusion))
        .route("/v1/log/proofs/consistency", get(log::consistency))
        .route("/v1/log/entries/{index}", get(log::entry))
        .merge(
            utoipa_swagger_ui::SwaggerUi::new("/docs").url("/openapi-ui.json", ApiDoc::openapi()),
        )
        .fallback(|| async { ApiError::not_found("no such route; see /openapi.json") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                axum::http::StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "method not allowed on this route; see /openapi.json",
            )
        })
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}

/// Parses a JSON body into `T`, with a problem+json 400 naming the error.
///
/// # Errors
/// 400 `invalid_request`.
pub fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|err| {
        ApiError::bad_request(format!(
            "request body is not valid JSON for this endpoint: {err}"
        ))
    })
}
