//! The HTTP API: every route in one place, the OpenAPI document, and the shared request plumbing.

pub mod balances;
pub mod carbon;
pub mod certificates;
pub mod exports;
pub mod log;
pub mod meta;
pub mod nodes;
pub mod problem;
pub mod stats;
pub mod telemetry;

use crate::AppState;
use crate::auth::Role;
use axum::Router;
use axum::extract::{ConnectInfo, DefaultBodyLimit, MatchedPath, Request};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use problem::ApiError;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;
use utoipa::OpenApi;

/// Largest request body accepted, bytes. A window with 64 sources is about 20 KiB as a JWS.
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// The batch submission route, whose body limit is
/// [`wattest_shared::api::MAX_BATCH_BODY_BYTES`] instead of [`MAX_BODY_BYTES`].
pub const BATCH_ROUTE: &str = "/v1/telemetry/batch";
/// How far past its route's limit an oversized body (declared by `Content-Length`) may go and
/// still be read and dropped before the 413 is sent, so that the client sees the answer rather
/// than a reset; larger ones are not read.
pub const DRAIN_LIMIT_BYTES: usize = 1024 * 1024;
/// How long reading and dropping such an oversized body (see [`DRAIN_LIMIT_BYTES`]) may take;
/// past it the 413 is sent anyway (and the connection closed), so a client that declares a large
/// body and then sends it slowly, or not at all, cannot hold the request open: 5 s.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a client has to send a request's line and headers, counted from the connection's
/// opening or, on a kept-alive connection, from the end of the previous response (so it also
/// bounds how long an idle keep-alive connection stays open); past it the connection is closed
/// without an answer: 25 s. See [`serve`]. Longer than the agent's default 10 s window, so an
/// agent keeps its connection between uploads, and not a round window length: a connection that
/// closes just as the client sends its next request fails that request.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(25);

/// Connections `serve` keeps open at once by default (`--max-connections`): under the 1 024
/// open files a process gets by default on Linux (`ulimit -n`), leaving room for the database
/// connections and files, and far above what agents need (one connection each while they
/// upload).
pub const MAX_CONNECTIONS: u32 = 768;

/// Roles that may read certificates and their status (besides admin).
pub const CERTIFICATE_READERS: &[Role] = &[Role::Auditor, Role::Compliance];
/// Roles that may read log proofs and entries (besides admin).
pub const LOG_READERS: &[Role] = &[Role::Auditor];
/// Roles that may download exports (besides admin).
pub const EXPORT_READERS: &[Role] = &[Role::Compliance];
/// Roles that may list the nodes with their heartbeat (besides admin).
pub const NODE_READERS: &[Role] = &[Role::Auditor];
/// Roles that may read reward balances (besides admin).
pub const BALANCE_READERS: &[Role] = &[Role::Auditor];
/// Roles that may ask what carbon intensity the oracle would apply (besides admin).
pub const CARBON_READERS: &[Role] = &[Role::Auditor];

/// Request limits of the HTTP API (top-level keys of the settings file, named as the fields
/// below, and their `serve` flags; see docs/operations.md).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// A request still unanswered after this many seconds gets 503 `timeout`; default 30 (an
    /// export of a large period streams, so only its first byte must come in time).
    pub request_timeout_secs: u64,
    /// Sustained requests per second allowed from one client IP; 0 disables. Default 100 (many
    /// agents behind one NAT each send a window every 10 s by default).
    pub per_ip_rps: f64,
    /// Requests one client IP may burst above the sustained rate. Default 1000.
    pub per_ip_burst: u32,
    /// Sustained requests per second allowed for one bearer token; 0 disables. Default 50.
    pub per_token_rps: f64,
    /// Requests one token may burst above the sustained rate. Default 500.
    pub per_token_burst: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            request_timeout_secs: 30,
            per_ip_rps: 100.0,
            per_ip_burst: 1000,
            per_token_rps: 50.0,
            per_token_burst: 500,
        }
    }
}

/// Most keys a rate limiter remembers before it forgets the full (idle) buckets.
const RATE_LIMITER_MAX_KEYS: usize = 100_000;

/// A token-bucket rate limiter keyed by client IP or token hash.
#[derive(Debug)]
pub struct RateLimiter {
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
    rate: f64,
    burst: f64,
}

impl RateLimiter {
    /// `rate` tokens per second, at most `burst` saved up; a rate ≤ 0 lets everything through.
    #[must_use]
    pub fn new(rate: f64, burst: u32) -> Self {
        Self {
            buckets: Mutex::new(HashMap::new()),
            rate,
            burst: f64::from(burst.max(1)),
        }
    }

    /// Takes one token for `key` at `now`; `Err(seconds)` to wait when the bucket is empty.
    ///
    /// # Errors
    /// The whole seconds until a token is available (≥ 1), for `Retry-After`.
    pub fn check(&self, key: &str, now: Instant) -> Result<(), u64> {
        if self.rate <= 0.0 || !self.rate.is_finite() {
            return Ok(());
        }
        let mut buckets = self
            .buckets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let refill = |(tokens, at): (f64, Instant)| {
            (tokens + now.saturating_duration_since(at).as_secs_f64() * self.rate).min(self.burst)
        };
        if buckets.len() >= RATE_LIMITER_MAX_KEYS {
            buckets.retain(|_, b| refill(*b) < self.burst);
        }
        let bucket = buckets.entry(key.to_owned()).or_insert((self.burst, now));
        let tokens = refill(*bucket);
        if tokens >= 1.0 {
            *bucket = (tokens - 1.0, now);
            Ok(())
        } else {
            *bucket = (tokens, now);
            // Bounded by 1/rate; a rate below 1e-9 rps is not a meaningful setting.
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            let wait = ((1.0 - tokens) / self.rate).ceil().clamp(1.0, 86_400.0) as u64;
            Err(wait)
        }
    }
}

/// State of the request plumbing middleware.
struct Plumbing {
    metrics: Arc<crate::metrics::Metrics>,
    per_ip: RateLimiter,
    per_token: RateLimiter,
}

/// The OpenAPI 3.1 document served at `/openapi.json`.
#[derive(OpenApi)]
#[openapi(
    info(title = "Wattest oracle API", description = "Verifiable energy and carbon accounting of compute: enroll nodes, submit signed telemetry windows, fetch signed energy certificates and compliance exports. Errors are RFC 9457 problem+json bodies with a stable `code` (see docs/protocol.md)."),
    paths(
        meta::healthz,
        stats::stats,
        stats::list_nodes,
        meta::jwks,
        nodes::enroll,
        nodes::answer_challenge,
        telemetry::submit,
        telemetry::submit_batch,
        certificates::list,
        certificates::get_one,
        certificates::status,
        certificates::revoke,
        certificates::subject_schema,
        exports::export,
        balances::balances,
        log::checkpoint,
        log::key,
        log::inclusion,
        log::consistency,
        log::entry,
        carbon::intensity,
        carbon::sources,
    ),
    components(schemas(problem::Problem, certificates::CertificateState)),
    modifiers(&BearerAuth, &CommonResponses),
    tags(
        (name = "nodes", description = "Node enrollment"),
        (name = "telemetry", description = "Signed energy windows (evidence)"),
        (name = "certificates", description = "Energy certificates (attestation results)"),
        (name = "exports", description = "Compliance exports"),
        (name = "log", description = "Transparency log of issued certificates (RFC 9162 proofs, C2SP checkpoints)"),
        (name = "carbon", description = "Grid carbon intensity: what would be applied to a zone-hour and why, and the sources"),
        (name = "meta", description = "Health, keys and network statistics"),
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

/// Adds the responses every operation can give: 401/403 where a token is needed, 413/415 where
/// a body is read, 429 (rate limit, with its `Retry-After` header), 500 and 503 (timeout)
/// everywhere.
struct CommonResponses;

impl utoipa::Modify for CommonResponses {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::header::HeaderBuilder;
        use utoipa::openapi::{ContentBuilder, ObjectBuilder, Ref, RefOr, ResponseBuilder, Type};
        let retry_after = || {
            HeaderBuilder::new()
                .schema(Some(
                    ObjectBuilder::new()
                        .schema_type(Type::Integer)
                        .minimum(Some(1)),
                ))
                .description(Some(
                    "Seconds to wait before retrying (an integer, RFC 9110 §10.2.3)",
                ))
                .build()
        };
        let problem = |description: &str| {
            ResponseBuilder::new()
                .description(description)
                .content(
                    problem::PROBLEM_MEDIA_TYPE,
                    ContentBuilder::new()
                        .schema(Some(Ref::from_schema_name("Problem")))
                        .build(),
                )
                .build()
        };
        for item in openapi.paths.paths.values_mut() {
            for op in [&mut item.get, &mut item.post].into_iter().flatten() {
                let responses = &mut op.responses.responses;
                let mut add = |code: &str, description: &str| {
                    responses
                        .entry(code.to_owned())
                        .or_insert_with(|| problem(description).into());
                };
                if op.security.as_ref().is_some_and(|s| !s.is_empty()) {
                    add("401", "missing_token / invalid_token");
                    add("403", "forbidden_role: the token's role may not do this");
                }
                if op.request_body.is_some()
                    || op.parameters.as_ref().is_some_and(|p| !p.is_empty())
                {
                    add(
                        "400",
                        "invalid_request: a parameter or the body is malformed",
                    );
                }
                if op.request_body.is_some() {
                    add("413", "payload_too_large");
                    add("415", "unsupported_media_type");
                }
                add(
                    "429",
                    "rate_limited: wait for the Retry-After header's seconds",
                );
                add("500", "internal");
                add("503", "timeout / unavailable");
                if let Some(RefOr::T(limited)) = responses.get_mut("429") {
                    limited
                        .headers
                        .entry("Retry-After".to_owned())
                        .or_insert_with(|| retry_after().into());
                }
            }
        }
    }
}

/// The application with the default [`Limits`].
pub fn router(state: AppState) -> Router {
    router_with(state, Limits::default())
}

/// The application: all routes, with the body limit, timeout, rate limits, problem+json for
/// every error, request metrics and tracing.
pub fn router_with(state: AppState, limits: Limits) -> Router {
    let plumbing = Arc::new(Plumbing {
        metrics: state.metrics.clone(),
        per_ip: RateLimiter::new(limits.per_ip_rps, limits.per_ip_burst),
        per_token: RateLimiter::new(limits.per_token_rps, limits.per_token_burst),
    });
    Router::new()
        .route("/healthz", get(meta::healthz))
        .route("/v1/stats", get(stats::stats))
        .route("/.well-known/jwks.json", get(meta::jwks))
        .route("/openapi.json", get(meta::openapi))
        .route("/metrics", get(meta::metrics))
        .route("/v1/nodes", post(nodes::enroll).get(stats::list_nodes))
        .route(
            "/v1/nodes/challenges/{challenge_id}",
            post(nodes::answer_challenge),
        )
        .route("/v1/telemetry", post(telemetry::submit))
        .route(
            BATCH_ROUTE,
            post(telemetry::submit_batch).layer(DefaultBodyLimit::max(
                wattest_shared::api::MAX_BATCH_BODY_BYTES,
            )),
        )
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
        .route("/v1/balances", get(balances::balances))
        .route("/v1/log/checkpoint", get(log::checkpoint))
        .route("/v1/log/key", get(log::key))
        .route("/v1/log/proofs/inclusion", get(log::inclusion))
        .route("/v1/log/proofs/consistency", get(log::consistency))
        .route("/v1/log/entries/{index}", get(log::entry))
        .route("/v1/carbon/intensity", get(carbon::intensity))
        .route("/v1/carbon/sources", get(carbon::sources))
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
        // 504 marks the timeout apart from other 503s; `problemize` answers 503 `timeout`.
        .layer(TimeoutLayer::with_status_code(
            StatusCode::GATEWAY_TIMEOUT,
            Duration::from_secs(limits.request_timeout_secs.max(1)),
        ))
        .layer(axum::middleware::from_fn_with_state(
            plumbing,
            plumbing_layer,
        ))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}

/// Serves `router` over HTTP/1.1 on `listener` until `shutdown` completes, then stops accepting
/// and waits for the open connections to finish the requests they are answering (a graceful
/// shutdown, as `axum::serve` does; idle connections are closed at once).
///
/// Unlike `axum::serve`, each connection must send a request's line and headers within
/// `header_read_timeout` of its opening or of its previous response, or it is closed without an
/// answer ([`HEADER_READ_TIMEOUT`] in `serve`; tests pass a shorter one): a client that opens
/// connections and sends nothing, or a few header bytes now and then, or keeps connections idle,
/// cannot hold them (and their file descriptors) for ever. At most `max_connections` are open at
/// once ([`MAX_CONNECTIONS`] by default in `serve`): at the limit no connection is accepted
/// until one closes, and those waiting queue in the kernel's listen backlog, so a flood of
/// connections cannot exhaust the process's file descriptors (which the database needs too).
/// Handlers see the peer address as `ConnectInfo<SocketAddr>` (the per-IP rate limit's key).
/// Accept errors (e.g. out of file descriptors) are logged and retried after a second; serving
/// itself does not fail.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    header_read_timeout: Duration,
    max_connections: u32,
    shutdown: impl Future<Output = ()>,
) {
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(header_read_timeout);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    let open = Arc::new(tokio::sync::Semaphore::new(
        usize::try_from(max_connections.max(1)).unwrap_or(tokio::sync::Semaphore::MAX_PERMITS),
    ));
    let mut last_full_warning: Option<Instant> = None;
    loop {
        // A connection slot first: at the limit, wait here (not in accept) for one to close.
        if open.available_permits() == 0
            && last_full_warning.is_none_or(|t| t.elapsed() >= Duration::from_secs(60))
        {
            last_full_warning = Some(Instant::now());
            tracing::warn!(
                max_connections,
                "Connection limit reached: new connections wait until one closes (--max-connections)."
            );
        }
        let slot = tokio::select! {
            slot = open.clone().acquire_owned() => match slot {
                Ok(slot) => slot,
                // The semaphore is never closed; were it, serving could not go on.
                Err(_) => break,
            },
            () = &mut shutdown => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    // A peer that went away before the accept is not the server's problem;
                    // anything else (EMFILE, ENOMEM) would spin, so wait a little.
                    if !matches!(
                        err.kind(),
                        std::io::ErrorKind::ConnectionRefused
                            | std::io::ErrorKind::ConnectionAborted
                            | std::io::ErrorKind::ConnectionReset
                    ) {
                        tracing::error!(error = %err, "Accepting a connection failed.");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let router = router.clone();
        let service =
            hyper::service::service_fn(move |mut request: Request<hyper::body::Incoming>| {
                request.extensions_mut().insert(ConnectInfo(peer));
                tower::ServiceExt::oneshot(router.clone(), request.map(axum::body::Body::new))
            });
        let connection =
            graceful.watch(http.serve_connection(hyper_util::rt::TokioIo::new(stream), service));
        tokio::spawn(async move {
            if let Err(err) = connection.await {
                tracing::debug!(%peer, error = %err, "Connection closed with an error.");
            }
            drop(slot);
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

/// Routes the per-IP and per-token rate limits leave alone: `GET /healthz` and `GET /metrics`.
pub const UNLIMITED_ROUTES: [&str; 2] = ["/healthz", "/metrics"];

/// Rate limits the request (per IP, then per token; not on [`UNLIMITED_ROUTES`]), then turns
/// any plain error response into problem+json and counts the request in the metrics.
async fn plumbing_layer(
    axum::extract::State(plumbing): axum::extract::State<Arc<Plumbing>>,
    request: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = request.method().clone();
    let ip = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or_else(|| "unknown".to_owned(), |c| rate_limit_key(c.0.ip()));
    let token = crate::auth::bearer(request.headers()).map(crate::auth::token_hash);
    // Liveness probes and metric scrapes are not rate limited (nor counted against the
    // client's budget): a sidecar or a load balancer sharing an address with busy clients must
    // not see a healthy oracle as down.
    let exempt = UNLIMITED_ROUTES.contains(&route.as_str());
    let limited = (!exempt)
        .then(|| {
            plumbing.per_ip.check(&ip, started).err().or_else(|| {
                token
                    .as_deref()
                    .and_then(|t| plumbing.per_token.check(t, started).err())
            })
        })
        .flatten();
    let limit = if route == BATCH_ROUTE {
        wattest_shared::api::MAX_BATCH_BODY_BYTES
    } else {
        MAX_BODY_BYTES
    };
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .filter(|&n| n > limit as u64);
    let response = match (limited, declared) {
        (Some(wait), _) => {
            plumbing.metrics.rate_limited.inc();
            let mut response = ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                format!("too many requests; retry in {wait} s"),
            )
            .into_response();
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(wait));
            response
        }
        (None, Some(length)) => {
            // Read (and drop) a moderately oversized body before answering, so the client,
            // still sending, gets the 413 instead of a connection reset (a lingering close).
            let drain = limit + DRAIN_LIMIT_BYTES;
            if length <= drain as u64 {
                let _ = tokio::time::timeout(
                    DRAIN_TIMEOUT,
                    axum::body::to_bytes(request.into_body(), drain),
                )
                .await;
            }
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                format!("request body of {length} bytes exceeds the limit of {limit} bytes"),
            )
            .into_response()
        }
        (None, None) => problemize(next.run(request).await).await,
    };
    plumbing.metrics.http(
        &route,
        &method,
        response.status().as_u16(),
        started.elapsed().as_secs_f64(),
    );
    response
}

/// The per-IP rate limit's key for a peer address: an IPv4 address (also IPv4-mapped in IPv6,
/// `::ffff:a.b.c.d`) as is, e.g. `192.0.2.7`; an IPv6 address by its /64 prefix, e.g.
/// `2001:db8:1:2::/64`, since one subscriber or host usually holds a whole /64 and could
/// otherwise take a fresh bucket for every request.
#[must_use]
pub fn rate_limit_key(ip: std::net::IpAddr) -> String {
    match ip {
        std::net::IpAddr::V4(v4) => v4.to_string(),
        std::net::IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => {
                let s = v6.segments();
                let prefix = std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0);
                format!("{prefix}/64")
            }
        },
    }
}

/// An error response that is not problem+json yet (axum rejections, timeouts) made into one.
async fn problemize(response: Response) -> Response {
    let status = response.status();
    let is_problem = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| {
            v.as_bytes()
                .starts_with(problem::PROBLEM_MEDIA_TYPE.as_bytes())
        });
    if !(status.is_client_error() || status.is_server_error())
        || is_problem
        || response
            .extensions()
            .get::<problem::NotAProblem>()
            .is_some()
    {
        return response;
    }
    let (parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, MAX_BODY_BYTES)
        .await
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    let mut fixed = ApiError::from_status(status, &text).into_response();
    if let Some(retry) = parts.headers.get(header::RETRY_AFTER) {
        fixed
            .headers_mut()
            .insert(header::RETRY_AFTER, retry.clone());
    }
    fixed
}

/// The media type of the request body (lowercase, without parameters; empty when absent).
pub(crate) fn media_type(headers: &axum::http::HeaderMap) -> String {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase()
}

/// Checks that a JSON endpoint's body is declared `application/json` (parameters such as
/// `charset` allowed).
///
/// # Errors
/// 415 `unsupported_media_type` for any other `Content-Type`, or none.
pub fn require_json(headers: &axum::http::HeaderMap) -> Result<(), ApiError> {
    let media = media_type(headers);
    if media == "application/json" {
        return Ok(());
    }
    Err(ApiError::new(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
        format!("content type {media:?} is not accepted here; use application/json"),
    ))
}

/// Parses a JSON body into `T`, with a problem+json 400 naming the error. The body and every
/// struct in it must be JSON objects ([`wattest_shared::json`]): serde alone would also read an
/// array, member by position.
///
/// # Errors
/// 400 `invalid_request`.
pub fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    wattest_shared::json::from_slice(body).map_err(|err| {
        ApiError::bad_request(format!(
            "request body is not valid JSON for this endpoint: {err}"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::rate_limit_key;

    /// IPv4 (plain or IPv4-mapped) keys by the address, IPv6 by its /64.
    #[test]
    fn rate_limit_key_groups_ipv6_by_64() {
        let key = |ip: &str| rate_limit_key(ip.parse().unwrap_or_else(|_| panic!("{ip}")));
        assert_eq!(key("192.0.2.7"), "192.0.2.7");
        assert_eq!(key("::ffff:192.0.2.7"), "192.0.2.7");
        assert_eq!(key("2001:db8:1:2:aaaa:bbbb:cccc:dddd"), "2001:db8:1:2::/64");
        assert_eq!(
            key("2001:db8:1:2::1"),
            key("2001:db8:1:2:ffff:ffff:ffff:ffff")
        );
        assert_ne!(key("2001:db8:1:2::1"), key("2001:db8:1:3::1"));
        assert_eq!(key("::1"), "::/64");
    }
}
