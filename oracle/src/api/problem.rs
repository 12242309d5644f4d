//! Error policy of the HTTP API: every error is an RFC 9457 `application/problem+json` body with
//! a stable `code`, mapped here and nowhere else. 4xx bodies say what was wrong and how to fix
//! it; 5xx bodies say nothing about internals (the details go to the log).

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// Prefix of the `type` member: `https://wattest.dev/problems/<code>`; each code is documented
/// in the error table of `docs/protocol.md`.
pub const PROBLEM_TYPE_PREFIX: &str = "https://wattest.dev/problems/";

/// Media type of every error body (RFC 9457 §3).
pub const PROBLEM_MEDIA_TYPE: &str = "application/problem+json";

pub use wattest_shared::api::Problem;

/// An API error: status, code and detail.
#[derive(Debug, Clone)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    detail: String,
    already_accepted: Option<bool>,
    expected_seq: Option<u64>,
}

impl ApiError {
    /// An error with `status`, stable `code` and a `detail` for the client.
    #[must_use]
    pub fn new(status: StatusCode, code: &'static str, detail: impl Into<String>) -> Self {
        Self {
            status,
            code,
            detail: detail.into(),
            already_accepted: None,
            expected_seq: None,
        }
    }

    /// 400 `invalid_request`.
    #[must_use]
    pub fn bad_request(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", detail)
    }

    /// 404 `not_found`.
    #[must_use]
    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", detail)
    }

    /// 500 `internal`: logs `err` and tells the client nothing more.
    #[must_use]
    pub fn internal(err: &dyn std::fmt::Display) -> Self {
        tracing::error!(error = %err, "Internal error.");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error; the oracle log has the details",
        )
    }

    /// Marks a `seq_replay` of a window that was already accepted verbatim.
    #[must_use]
    pub fn with_already_accepted(mut self, yes: bool) -> Self {
        self.already_accepted = Some(yes);
        self
    }

    /// Adds the seq the oracle expects next.
    #[must_use]
    pub fn with_expected_seq(mut self, seq: u64) -> Self {
        self.expected_seq = Some(seq);
        self
    }

    /// The stable code.
    #[must_use]
    pub fn code(&self) -> &'static str {
        self.code
    }

    /// The HTTP status.
    #[must_use]
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// A problem for a plain error response produced outside the handlers (axum extractor
    /// rejections, the body limit, the timeout layer): the code follows the status, the
    /// original text becomes the detail of a 4xx (5xx details are not shown). 408 and 504 (the
    /// timeout layer's) become 503 `timeout`, as `docs/protocol.md` documents.
    #[must_use]
    pub fn from_status(status: StatusCode, text: &str) -> Self {
        let code = match status.as_u16() {
            400 => "invalid_request",
            401 => "missing_token",
            403 => "forbidden_role",
            404 => "not_found",
            405 => "method_not_allowed",
            406 => "not_acceptable",
            408 | 504 => "timeout",
            413 => "payload_too_large",
            415 => "unsupported_media_type",
            422 => "unprocessable_body",
            429 => "rate_limited",
            503 => "unavailable",
            s if s < 500 => "invalid_request",
            _ => "internal",
        };
        // The timeout layer answers 504 (no handler does); the documented status is 503.
        let status = if code == "timeout" {
            StatusCode::SERVICE_UNAVAILABLE
        } else {
            status
        };
        let text = text.trim();
        let detail = if status.is_server_error() {
            match code {
                "timeout" => "the request took too long and was abandoned; retry later".to_owned(),
                "unavailable" => "the oracle cannot serve this now; retry later".to_owned(),
                _ => "internal error; the oracle log has the details".to_owned(),
            }
        } else if status == StatusCode::PAYLOAD_TOO_LARGE {
            format!(
                "the request body is larger than the limit of {} bytes",
                super::MAX_BODY_BYTES
            )
        } else if text.is_empty() {
            status.canonical_reason().unwrap_or("error").to_owned()
        } else {
            text.to_owned()
        };
        Self::new(status, code, detail)
    }
}

/// Marks an error response whose documented body is not a problem (the `/healthz` 503, which
/// carries its `Health` body): the plumbing layer leaves it as it is.
#[derive(Debug, Clone, Copy)]
pub struct NotAProblem;

impl From<crate::storage::StorageError> for ApiError {
    fn from(err: crate::storage::StorageError) -> Self {
        Self::internal(&err)
    }
}

impl From<ApiError> for Problem {
    fn from(err: ApiError) -> Self {
        Self {
            type_: format!("{PROBLEM_TYPE_PREFIX}{}", err.code),
            title: err.status.canonical_reason().unwrap_or("Error").to_owned(),
            status: err.status.as_u16(),
            detail: err.detail,
            code: err.code.to_owned(),
            already_accepted: err.already_accepted,
            expected_seq: err.expected_seq,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status;
        let problem = Problem::from(self);
        let body = serde_json::to_vec(&problem).unwrap_or_default();
        let mut response = (status, body).into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(PROBLEM_MEDIA_TYPE),
        );
        response
    }
}
