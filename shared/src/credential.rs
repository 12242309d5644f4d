//! The certificate as a W3C Verifiable Credential secured with JOSE (VC Data Model 2.0,
//! "Securing Verifiable Credentials using JOSE and COSE", W3C Recommendation 2025): a JWS with
//! `typ` = [`VC_TYP`] whose payload is the credential itself.
//!
//! The credential is derived from a logged certificate: its subject names the certificate's `jti`
//! and the SHA-256 of the logged JWS, so a relying party can find the certificate in the
//! transparency log. The whole credential follows the JSON Schema its `credentialSchema` names
//! (`/v1/schemas/energy-certificate-credential.json`, type `JsonSchema`: VC Data Model 2.0 §4.11
//! and VC JSON Schema apply it to the credential, not to the subject alone), whose
//! `credentialSubject` refers to `/v1/schemas/energy-certificate-subject.json`. Its
//! `credentialStatus` ([`CREDENTIAL_STATUS_TYPE`]) names the certificate's status resource.

use crate::certificate::CertificateClaims;
use chrono::DateTime;
use serde_json::{Value, json};

/// JWS `typ` of a Wattest certificate in VC form.
pub const VC_TYP: &str = "vc+jwt";
/// Media type of the VC form.
pub const VC_MEDIA_TYPE: &str = "application/vc+jwt";
/// The VC 2.0 base context.
pub const VC_CONTEXT: &str = "https://www.w3.org/ns/credentials/v2";
/// `credentialStatus.type` of the VC form (VC Data Model 2.0 §4.10): its `id` is the oracle's
/// `GET /v1/certificates/{id}/status` resource, whose `state` (`valid`, `revoked`) and revocation
/// details are the certificate's status; defined in docs/protocol.md §5.
pub const CREDENTIAL_STATUS_TYPE: &str = "WattestCertificateStatus";

fn rfc3339(seconds: i64) -> String {
    DateTime::from_timestamp(seconds, 0)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// The `credentialSubject` of `claims` (the certificate whose compact JWS hashes to `jws_hash`).
#[must_use]
pub fn credential_subject(claims: &CertificateClaims, jws_hash: &str) -> Value {
    let c = claims;
    json!({
        "id": format!("urn:uuid:{}", c.node.id),
        "certificate_id": c.jti,
        "certificate_sha256": jws_hash,
        "status": c.status,
        "status_reasons": c.status_reasons,
        "job_id": c.job_id,
        "model_id": c.model_id,
        "node": c.node,
        "attribution": c.attribution,
        "period": c.period,
        "energy": c.energy,
        "grid_zone": c.grid_zone,
        "intensity": c.intensity,
        "location_based_emissions_g_co2e": c.emissions.location_based_g_co2e,
        "avoided_emissions_g_co2e": c.avoided_emissions.g_co2e,
        "reward": c.reward,
        "telemetry": c.windows,
        "plausibility": c.plausibility,
        "calculation_version": c.calculation_version,
    })
}

/// The Verifiable Credential (the JWS payload of the VC form) for `claims`; `schema_url` is
/// where the oracle publishes the credential's JSON Schema, `status_url` the certificate's status
/// resource.
#[must_use]
pub fn verifiable_credential(
    claims: &CertificateClaims,
    jws_hash: &str,
    schema_url: &str,
    status_url: &str,
) -> Value {
    json!({
        "@context": [VC_CONTEXT],
        "id": format!("urn:uuid:{}", claims.jti),
        "type": ["VerifiableCredential", "EnergyCertificateCredential"],
        "issuer": claims.iss,
        "validFrom": rfc3339(claims.nbf),
        "validUntil": rfc3339(claims.exp),
        "credentialSchema": { "id": schema_url, "type": "JsonSchema" },
        "credentialStatus": { "id": status_url, "type": CREDENTIAL_STATUS_TYPE },
        "credentialSubject": credential_subject(claims, jws_hash),
    })
}
