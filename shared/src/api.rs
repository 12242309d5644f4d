//! HTTP bodies of the oracle that agents and other clients parse: the acknowledgement of a window
//! and the certificate summary (`docs/protocol.md` §3.3), the batch submission (§3.6) and the
//! RFC 9457 problem of every error (§3.5).

use crate::jws::SaltLength;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Whether a certificate is `valid` or `revoked`: the `state` of a certificate's status
/// (`GET /v1/certificates/{id}/status`) and of its summaries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum CertificateState {
    /// Not revoked.
    Valid,
    /// Revoked: the certificate's status says when and why.
    Revoked,
}

impl CertificateState {
    /// `valid` or `revoked`, as serialized.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Valid => "valid",
            Self::Revoked => "revoked",
        }
    }
}

/// Figures of an issued certificate and its revocation `state`, returned with the final window
/// and listed by `GET /v1/certificates`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CertificateSummary {
    /// Certificate id (`jti`).
    pub id: String,
    /// Job id; null when the windows belonged to no job.
    #[cfg_attr(feature = "openapi", schema(required = true))]
    pub job_id: Option<String>,
    /// Node id.
    pub node_id: String,
    /// Grid zone.
    pub zone: String,
    /// Issue time.
    pub issued_at: DateTime<Utc>,
    /// Period start.
    pub period_start: DateTime<Utc>,
    /// Period end.
    pub period_end: DateTime<Utc>,
    /// Energy consumed, Wh.
    pub energy_wh: f64,
    /// Grid energy, Wh.
    pub grid_wh: f64,
    /// Solar energy, Wh.
    pub solar_wh: f64,
    /// Location-based emissions, kgCO2e.
    pub emissions_kg_co2e: f64,
    /// Mean grid intensity applied, gCO2e/kWh.
    pub intensity_g_co2e_per_kwh: f64,
    /// Intensity dataset.
    pub intensity_dataset: String,
    /// Avoided emissions, kgCO2e.
    pub avoided_kg_co2e: f64,
    /// Node key protection: `tpm` or `software`.
    #[cfg_attr(
        feature = "openapi",
        schema(value_type = crate::certificate::AttestationLevel)
    )]
    pub attestation_level: String,
    /// Number of windows.
    pub window_count: i64,
    /// The certificate's revocation state, as its status (`GET /v1/certificates/{id}/status`)
    /// gives it: `valid`, or `revoked` once revoked. A final window's receipt says `valid` (the
    /// certificate was just issued); the receipt of a final window sent again gives the state
    /// as it stands then.
    pub state: CertificateState,
}

/// Answer (202) to a window that arrived ahead of its node's chain: signed and otherwise valid,
/// it is held by the oracle, not credited, and appended once the windows `expected_seq` to
/// `seq − 1` have arrived (docs/protocol.md §3.4). The agent may drop it from its spool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TelemetryHeld {
    /// Node id.
    pub node_id: String,
    /// The held window's seq.
    #[cfg_attr(feature = "openapi", schema(minimum = 1))]
    pub seq: u64,
    /// base64url SHA-256 of the held window's JWS.
    pub hash: String,
    /// Always `held`.
    #[cfg_attr(feature = "openapi", schema(value_type = HeldStatus))]
    pub status: String,
    /// The node's next expected seq: the first missing window.
    pub expected_seq: u64,
}

/// Acknowledgement of an accepted window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TelemetryAccepted {
    /// Node id.
    pub node_id: String,
    /// Accepted seq.
    #[cfg_attr(feature = "openapi", schema(minimum = 1))]
    pub seq: u64,
    /// base64url SHA-256 of the window JWS: the next window's `prev`.
    pub hash: String,
    /// Salt length of the signature (`digest`, or `maximum` for some TPMs).
    pub salt_length: SaltLength,
    /// The certificate issued, when this was a final window; null otherwise.
    #[cfg_attr(feature = "openapi", schema(required = true))]
    pub certificate: Option<CertificateSummary>,
}

/// An RFC 9457 problem details object: the body of every error (`application/problem+json`),
/// and of a refused window in a batch result. `code` is stable; each is listed in
/// `docs/protocol.md` §3.5.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "openapi", schema(example = json!({"type": "https://wattest.dev/problems/forbidden_role", "title": "Forbidden",
    "status": 403, "detail": "a node token cannot do this; it needs one of: auditor", "code": "forbidden_role"})))]
pub struct Problem {
    /// `https://wattest.dev/problems/<code>`.
    #[serde(rename = "type")]
    pub type_: String,
    /// Short, human-readable summary of the problem type.
    pub title: String,
    /// HTTP status code.
    pub status: u16,
    /// Explanation specific to this occurrence.
    pub detail: String,
    /// Stable machine-readable error code (snake_case).
    pub code: String,
    /// Present (and always `false`) on the chain verdicts `seq_replay`, `seq_conflict` and
    /// `seq_gap`: the window was not accepted. The oracle never sends `true`: a window identical
    /// to one already accepted (a retry) gets `200` with its original receipt, not a problem.
    /// Absent on every other problem.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(nullable = false))]
    pub already_accepted: Option<bool>,
    /// Present on `seq_replay`, `seq_conflict` and `seq_gap`: the seq the oracle expects next
    /// for this node. Absent on every other problem.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(nullable = false))]
    pub expected_seq: Option<u64>,
}

/// Most windows in one `POST /v1/telemetry/batch` (`docs/protocol.md` §3.6).
pub const MAX_BATCH_WINDOWS: usize = 500;

/// Largest body of `POST /v1/telemetry/batch`, in bytes (8 MiB).
pub const MAX_BATCH_BODY_BYTES: usize = 8 * 1024 * 1024;

/// Body of `POST /v1/telemetry/batch`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct TelemetryBatchRequest {
    /// 1 to 500 windows ([`MAX_BATCH_WINDOWS`]) as compact JWS; one node's windows in
    /// ascending `seq`.
    #[cfg_attr(feature = "openapi", schema(min_items = 1, max_items = 500))]
    pub windows: Vec<String>,
}

/// Answer (200) to `POST /v1/telemetry/batch`: one result per window, in request order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TelemetryBatchResponse {
    /// The windows' results, in the order of the request's `windows`.
    pub results: Vec<TelemetryBatchResult>,
}

/// What `POST /v1/telemetry` would have answered for one window of a batch: exactly one of
/// `accepted` (status 200), `held` (202) and `problem` (4xx or 5xx) is present.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TelemetryBatchResult {
    /// HTTP status the window alone would have got: 200, 202, 4xx or 5xx.
    pub status: u16,
    /// The receipt (status 200), as from `POST /v1/telemetry`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(nullable = false))]
    pub accepted: Option<TelemetryAccepted>,
    /// The held answer (status 202).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(nullable = false))]
    pub held: Option<TelemetryHeld>,
    /// Why the window was refused (any other status); a 5xx is worth retrying.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(nullable = false))]
    pub problem: Option<Problem>,
}

/// The status of a held window: always `held`.
// Schema only: `TelemetryHeld::status` is a string with this one value.
#[cfg(feature = "openapi")]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum HeldStatus {
    /// The window is held until the gap before it is filled.
    Held,
}

/// The values of a provenance's `factor_type` (the oracle's `FactorType`): the schema of
/// [`crate::certificate::Provenance::factor_type`].
#[cfg(feature = "openapi")]
#[must_use]
pub fn provenance_factor_type_schema() -> utoipa::openapi::Object {
    factor_type_schema("`lifecycle` or `direct`.")
}

/// The schema of [`crate::certificate::IntensityUsed::factor_type`].
#[cfg(feature = "openapi")]
#[must_use]
pub fn intensity_factor_type_schema() -> utoipa::openapi::Object {
    factor_type_schema(
        "`lifecycle` or `direct`: the factor type applied (location-based Scope 2 uses `direct` \
         where the provider offers it; see `docs/methodology.md`).",
    )
}

#[cfg(feature = "openapi")]
fn factor_type_schema(description: &str) -> utoipa::openapi::Object {
    use utoipa::openapi::{ObjectBuilder, Type};
    ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some(["direct", "lifecycle"]))
        .description(Some(description))
        .build()
}
