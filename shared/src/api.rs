//! HTTP response bodies of the oracle that agents and other clients parse: the acknowledgement
//! of a window and the certificate summary. Field by field in `docs/protocol.md` §3.3.

use crate::jws::SaltLength;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Figures of an issued certificate, returned with the final window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CertificateSummary {
    /// Certificate id (`jti`).
    pub id: String,
    /// Job id.
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
    /// Node key protection.
    pub attestation_level: String,
    /// Number of windows.
    pub window_count: i64,
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
    pub seq: u64,
    /// base64url SHA-256 of the held window's JWS.
    pub hash: String,
    /// Always `held`.
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
    pub seq: u64,
    /// base64url SHA-256 of the window JWS: the next window's `prev`.
    pub hash: String,
    /// Salt length of the signature (`digest`, or `maximum` for some TPMs).
    pub salt_length: SaltLength,
    /// The certificate issued, when this was a final window.
    pub certificate: Option<CertificateSummary>,
}
