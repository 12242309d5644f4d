//! Bearer tokens: creation (shown once, stored as SHA-256) and role checks.

use crate::api::problem::ApiError;
use crate::storage::{Storage, StorageError};
use axum::http::{HeaderMap, StatusCode, header};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use chrono::{DateTime, Utc};
use rand::RngCore;
use sha2::{Digest, Sha256};

/// What a token may do. The policy (docs/protocol.md, "Roles"): public routes need no token;
/// `POST /v1/telemetry` is authenticated by the node's enrolled key (the JWS), not a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Role {
    /// Enroll nodes (`POST /v1/nodes`, `POST /v1/nodes/challenges/{id}`).
    Node,
    /// Read certificates, their status, log proofs and entries, nodes, carbon data, balances.
    Auditor,
    /// Download exports (`/v1/exports/*`) and read certificates.
    Compliance,
    /// Everything: passes every check; tokens, revocation, node administration, keys.
    Admin,
}

impl Role {
    /// The stored name.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Node => "node",
            Self::Auditor => "auditor",
            Self::Compliance => "compliance",
            Self::Admin => "admin",
        }
    }
}

/// Hex SHA-256 of a token: what is stored, so a database leak reveals no usable token.
#[must_use]
pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Creates a token for `role` that never expires and enrolls any number of nodes:
/// `wt_<role>_<43 base64url chars>` (256 random bits from the OS).
///
/// # Errors
/// Database failure.
pub async fn create_token(storage: &Storage, role: Role) -> Result<String, StorageError> {
    create_token_with(storage, role, None, None).await
}

/// [`create_token`], accepted until `expires_at` (`None`: no expiry; from that instant on
/// [`require`] answers 401 `invalid_token`) and enrolling at most `max_enrollments` nodes
/// (`None`: any number; beyond it `POST /v1/nodes` with the token gets 403 `enrollment_limit`).
///
/// # Errors
/// Database failure.
pub async fn create_token_with(
    storage: &Storage,
    role: Role,
    expires_at: Option<DateTime<Utc>>,
    max_enrollments: Option<i64>,
) -> Result<String, StorageError> {
    let mut secret = [0u8; 32];
    rand::rng().fill_bytes(&mut secret);
    let token = format!("wt_{}_{}", role.as_str(), B64.encode(secret));
    storage
        .insert_token(
            &uuid::Uuid::new_v4().to_string(),
            role.as_str(),
            &token_hash(&token),
            Utc::now(),
            expires_at,
            max_enrollments,
        )
        .await?;
    Ok(token)
}

/// How often `last_used_at` is written for one token, seconds: at most once a minute, so a busy
/// token costs one UPDATE per minute, not one per request.
pub const LAST_USED_RESOLUTION_SECS: i64 = 60;

/// The bearer token of a request, if any (`Authorization: Bearer <token>`; the scheme name is
/// case-insensitive, RFC 9110 §11.1).
#[must_use]
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// Checks `Authorization: Bearer <token>` against the stored tokens; admin passes every check.
/// The token's row when it passes.
///
/// # Errors
/// 401 `missing_token`; 401 `invalid_token` for a token that is unknown, revoked or expired
/// (its `expires_at` is at or before now); 403 `forbidden_role`; 500 on database failure.
pub async fn require(
    storage: &Storage,
    headers: &HeaderMap,
    allowed: &[Role],
) -> Result<crate::storage::entities::token::Model, ApiError> {
    let Some(token) = bearer(headers) else {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "missing_token",
            "send the token as `Authorization: Bearer <token>` (create one with `wattest-oracle token create`)",
        ));
    };
    let Some(row) = storage.token_by_hash(&token_hash(token)).await? else {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "invalid_token",
            "the token is unknown or revoked",
        ));
    };
    let now = Utc::now();
    if let Some(expired) = row.expires_at.filter(|&at| at <= now) {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "invalid_token",
            format!(
                "the token expired at {}; create a new one with `wattest-oracle token create`",
                expired.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            ),
        ));
    }
    let stale = row
        .last_used_at
        .is_none_or(|t| (now - t).num_seconds() >= LAST_USED_RESOLUTION_SECS);
    // Bookkeeping only: a request is not refused because its token's last use could not be
    // written (on SQLite a write that meets another connection's commit can fail at once).
    if stale && let Err(err) = storage.touch_token(&row.id, now).await {
        tracing::warn!(token_id = %row.id, error = %err, "Recording the token's last use failed.");
    }
    if row.role == Role::Admin.as_str() || allowed.iter().any(|r| r.as_str() == row.role) {
        Ok(row)
    } else {
        let names: Vec<&str> = allowed.iter().map(|r| r.as_str()).collect();
        Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden_role",
            format!(
                "a {} token cannot do this; it needs one of: {}",
                row.role,
                names.join(", ")
            ),
        ))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::bearer;
    use axum::http::{HeaderMap, HeaderValue, header};

    fn with_authorization(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, HeaderValue::from_str(value).unwrap());
        headers
    }

    #[test]
    fn the_bearer_scheme_is_case_insensitive_and_needs_a_token() {
        for value in ["Bearer tok", "bearer tok", "BEARER  tok "] {
            assert_eq!(bearer(&with_authorization(value)), Some("tok"), "{value}");
        }
        for value in ["Bearer ", "Bearer", "Basic tok", "Bearertok", "tok"] {
            assert_eq!(bearer(&with_authorization(value)), None, "{value}");
        }
        assert_eq!(bearer(&HeaderMap::new()), None);
    }
}
