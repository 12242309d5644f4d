//! The energy certificate: the attestation result the oracle signs for a job, and its offline
//! verification for auditors.
//!
//! A certificate is a compact JWS with `typ` = [`CERTIFICATE_TYP`], signed PS256 by an oracle key
//! published in the oracle's JWKS. [`verify_certificate`] checks it in numbered steps and returns a
//! [`CheckedCertificate`]; its arithmetic checks recompute every total from the itemised figures.

use crate::jwk::Jwks;
use crate::jws::{self, JwsError, SaltPolicy};
use crate::units::{Decimal6, Eur};
use crate::window::{Attribution, Method, SourceKind, consumed_energy};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// JWS `typ` of an energy certificate.
pub const CERTIFICATE_TYP: &str = "wattest-cert+jwt";
/// Clock skew tolerated on `iat` and `nbf`, in seconds.
pub const CLOCK_SKEW_SECONDS: i64 = 60;

/// How the node's signing key is protected, as proven at enrollment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum AttestationLevel {
    /// The key was proven to live in a TPM (credential activation + TPM2_Certify).
    Tpm,
    /// A software key: whoever holds the key file can sign.
    Software,
}

impl AttestationLevel {
    /// The wire name (`tpm` or `software`).
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Tpm => "tpm",
            Self::Software => "software",
        }
    }
}

/// The node a certificate is about.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CertifiedNode {
    /// Node id (UUID).
    pub id: String,
    /// Operator-chosen name.
    pub name: String,
    /// Grid zone the node draws power from, e.g. `BE`.
    pub zone: String,
    /// Key protection proven at enrollment.
    pub attestation_level: AttestationLevel,
    /// RFC 7638 thumbprint of the node key that signed the windows.
    pub kid: String,
}

/// The period covered: first window start to last window end.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Period {
    /// RFC 3339 UTC.
    pub start: DateTime<Utc>,
    /// RFC 3339 UTC.
    pub end: DateTime<Utc>,
    /// Sum of window durations, s (equals `end − start` when the windows are contiguous).
    pub measured_seconds: Decimal6,
}

/// Energy of one source over the whole certificate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SourceTotal {
    /// Source id as in the windows.
    pub source: String,
    /// What it measures.
    pub kind: SourceKind,
    /// How it was measured.
    pub method: Method,
    /// Energy, Wh: Σ over windows of the window's figure rounded to the µWh.
    pub energy_wh: Decimal6,
    /// Energy-weighted mean of the windows' relative uncertainties, percent, rounded to 10⁻⁶
    /// (treats the errors as fully correlated, the conservative choice for a sensor's
    /// systematic error).
    pub uncertainty_pct: Decimal6,
    /// True when any window flagged the device as shared (MIG).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub shared_device: bool,
}

/// Energy totals, Wh.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EnergyTotals {
    /// Energy consumed: the consumption rule of `docs/protocol.md` over `by_source`, Wh.
    pub consumed_wh: Decimal6,
    /// Solar energy produced: Σ of the `solar` sources, Wh.
    pub solar_wh: Decimal6,
    /// Energy drawn from the grid: Σ over windows of max(0, consumed − solar), Wh.
    pub grid_wh: Decimal6,
    /// Per-source totals.
    pub by_source: Vec<SourceTotal>,
}

/// Where an intensity figure comes from. Never a bare constant: the same grid has several
/// published figures (see `docs/methodology.md`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Provenance {
    /// Provider id, e.g. `static`.
    pub provider: String,
    /// Dataset and its attribution, e.g. `Ember (2025), Yearly Electricity Data`.
    pub dataset: String,
    /// Data year.
    pub year: i32,
    /// `lifecycle` or `direct`.
    #[cfg_attr(
        feature = "openapi",
        schema(schema_with = crate::api::provenance_factor_type_schema)
    )]
    pub factor_type: String,
    /// True when the figure is not a measurement for that hour (a yearly mean, a forecast).
    pub estimated: bool,
    /// True for a marginal (MOER) rather than an average figure.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub marginal: bool,
    /// Why a preferred provider was not used for this hour, when it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(nullable = false))]
    pub fallback_reason: Option<String>,
}

/// Grid carbon intensity applied to one clock hour, with that hour's energy and emissions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HourlyIntensity {
    /// Start of the hour, RFC 3339 UTC.
    pub hour: DateTime<Utc>,
    /// Intensity applied, gCO2e/kWh.
    pub g_co2e_per_kwh: Decimal6,
    /// Grid energy falling in this hour, Wh (each window split by time, largest remainder).
    pub grid_wh: Decimal6,
    /// Solar energy falling in this hour, Wh.
    pub solar_wh: Decimal6,
    /// `grid_wh × g_co2e_per_kwh / 1000`, g CO2e, rounded half up to the µg ([`emissions_g`]).
    pub emissions_g: Decimal6,
    /// `solar_wh × g_co2e_per_kwh / 1000`, g CO2e, rounded the same way.
    pub avoided_g: Decimal6,
    /// Where this hour's figure comes from.
    pub provenance: Provenance,
}

/// Intensities used for the certificate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct IntensityUsed {
    /// Grid zone.
    pub zone: String,
    /// `lifecycle` or `direct`: the factor type applied (location-based Scope 2 uses `direct`
    /// where the provider offers it; see `docs/methodology.md`).
    #[cfg_attr(
        feature = "openapi",
        schema(schema_with = crate::api::intensity_factor_type_schema)
    )]
    pub factor_type: String,
    /// Effective mean: emissions ÷ grid energy, gCO2e/kWh, rounded to 10⁻⁶ (the plain mean of
    /// the hours when there is no grid energy). Informative; the hourly figures are authoritative.
    pub g_co2e_per_kwh: Decimal6,
    /// Per-hour figures, ascending.
    pub hourly: Vec<HourlyIntensity>,
}

/// Emissions of the consumed grid energy (GHG Protocol Scope 2, location-based).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Emissions {
    /// Σ hourly `emissions_g`, g CO2e.
    pub location_based_g_co2e: Decimal6,
}

/// Emissions avoided by solar production: reported apart, never netted against emissions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AvoidedEmissions {
    /// Σ hourly `avoided_g`, g CO2e.
    pub g_co2e: Decimal6,
}

/// Avoided-emissions reward (not an offset) and its split.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Reward {
    /// ISO 4217 currency, `EUR`.
    pub currency: String,
    /// Price applied per tonne of avoided CO2e.
    pub price_per_tonne: Eur,
    /// ⌊avoided g × price ÷ 10⁶⌋ to the micro-euro ([`reward_total`]).
    pub total: Eur,
    /// Node owner's part: ⌊total × share ÷ 100⌋ to the micro-euro.
    pub node_owner: Eur,
    /// Cooperative fund's part: total − node_owner.
    pub cooperative_fund: Eur,
    /// Node owner's share, percent (default 70).
    pub node_owner_share_pct: Decimal6,
}

/// The telemetry (evidence) a certificate covers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WindowRange {
    /// First window's `seq`.
    pub first_seq: u64,
    /// Last (final) window's `seq`.
    pub last_seq: u64,
    /// Number of windows.
    pub count: u64,
    /// base64url SHA-256 of the final window's compact JWS: the node's chain head.
    pub chain_head: String,
}

/// Overall appraisal of the evidence, as in EAR (draft-ietf-rats-ear) `ear.status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum EarStatus {
    /// Hardware-protected key, plausible measured data.
    Affirming,
    /// Usable with care: a software key, an estimate, or a plausibility flag (see the reasons).
    Warning,
    /// The evidence contradicts itself (e.g. the node signed two different windows for one seq).
    Contraindicated,
}

/// `eat_profile` of Wattest certificates (RFC 9711 §4.3.2 tag URI).
pub const EAT_PROFILE: &str = "tag:wattest.dev,2026:energy-certificate:v1";
/// Version of the calculation rules (hour split, rounding, reward) a certificate was built with.
pub const CALCULATION_VERSION: &str = "2";

/// The payload of an energy certificate. Registered JWT claims (RFC 7519) and EAT/EAR claims keep
/// their names; Wattest's own claims are namespaced `wattest.*`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CertificateClaims {
    /// Issuer: the oracle's configured public URL or name.
    pub iss: String,
    /// Subject: the node id.
    pub sub: String,
    /// Issued at, seconds since the Unix epoch.
    pub iat: i64,
    /// Not before, seconds since the Unix epoch.
    pub nbf: i64,
    /// Expiry, seconds since the Unix epoch.
    pub exp: i64,
    /// Certificate id (UUID).
    pub jti: String,
    /// [`EAT_PROFILE`].
    pub eat_profile: String,
    /// Overall appraisal.
    #[serde(rename = "ear.status")]
    pub status: EarStatus,
    /// Why the status is not `affirming`: `software_key`, `estimated_energy`, `declared_solar`,
    /// `plausibility:<flag>`, `node_flagged:<reason>`.
    #[serde(rename = "wattest.status_reasons", default)]
    #[cfg_attr(feature = "openapi", schema(required = true))]
    pub status_reasons: Vec<String>,
    /// [`CALCULATION_VERSION`].
    #[serde(rename = "wattest.calculation_version")]
    pub calculation_version: String,
    /// Job id, when the windows belonged to a job.
    #[serde(rename = "wattest.job_id", default)]
    #[cfg_attr(feature = "openapi", schema(required = true))]
    pub job_id: Option<String>,
    /// Model id, when the agent was told one.
    #[serde(rename = "wattest.model_id", default)]
    #[cfg_attr(feature = "openapi", schema(required = true))]
    pub model_id: Option<String>,
    /// The node.
    #[serde(rename = "wattest.node")]
    pub node: CertifiedNode,
    /// How the job's share of host energy was attributed.
    #[serde(rename = "wattest.attribution")]
    pub attribution: Attribution,
    /// Period covered.
    #[serde(rename = "wattest.period")]
    pub period: Period,
    /// Energy.
    #[serde(rename = "wattest.energy")]
    pub energy: EnergyTotals,
    /// Grid zone.
    #[serde(rename = "wattest.grid_zone")]
    pub grid_zone: String,
    /// Intensity applied, per hour.
    #[serde(rename = "wattest.intensity")]
    pub intensity: IntensityUsed,
    /// Location-based emissions.
    #[serde(rename = "wattest.emissions")]
    pub emissions: Emissions,
    /// Avoided emissions from solar.
    #[serde(rename = "wattest.avoided_emissions")]
    pub avoided_emissions: AvoidedEmissions,
    /// Reward for avoided emissions.
    #[serde(rename = "wattest.reward")]
    pub reward: Reward,
    /// Telemetry covered.
    #[serde(rename = "wattest.telemetry")]
    pub windows: WindowRange,
    /// Plausibility flags raised on the covered windows (see `docs/protocol.md`).
    #[serde(
        rename = "wattest.plausibility",
        default,
        skip_serializing_if = "Vec::is_empty"
    )]
    pub plausibility: Vec<String>,
}

/// Why a certificate failed verification.
#[derive(Debug, thiserror::Error)]
pub enum CertificateError {
    /// The JWS itself (header, signature).
    #[error(transparent)]
    Jws(#[from] JwsError),
    /// The `kid` is not in the JWKS.
    #[error("no key with kid {0:?} in the JWKS")]
    UnknownKid(String),
    /// The payload is not a certificate.
    #[error("certificate claims are malformed: {0}")]
    Claims(String),
    /// `nbf`/`iat` in the future or `exp` passed.
    #[error("certificate is not valid at this time: {0}")]
    Time(String),
    /// A total does not equal what its items add up to.
    #[error("certificate arithmetic does not reconcile: {0}")]
    Arithmetic(String),
}

/// A certificate whose signature, validity period and arithmetic have been checked.
#[derive(Debug, Clone)]
pub struct CheckedCertificate {
    /// The verified claims.
    pub claims: CertificateClaims,
    /// `kid` of the oracle key that signed it.
    pub kid: String,
    /// base64url SHA-256 of the compact JWS (its leaf in the transparency log).
    pub hash: String,
}

/// RFC 3339 UTC, whole seconds, for the epoch seconds `t` (the number itself when out of
/// chrono's range): how the time errors of [`verify_certificate`] write `nbf`, `iat`, `exp`.
#[must_use]
pub fn rfc3339(t: i64) -> String {
    DateTime::from_timestamp(t, 0).map_or_else(
        || t.to_string(),
        |t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    )
}

/// Verifies a certificate offline against the oracle's JWKS.
///
/// Steps: (1–3) header: PS256 or ES256 ([`jws::CERTIFICATE_ALGS`]), `typ` = [`CERTIFICATE_TYP`], no header keys; (4) key: the `kid`
/// must be the RFC 7638 thumbprint of a JWKS key, of the type the algorithm needs; (5) signature; (6) claims parse (`exp`, `nbf`,
/// `iat` required) with `eat_profile` = [`EAT_PROFILE`]; (7) time:
/// `nbf` and `iat` ≤ now + [`CLOCK_SKEW_SECONDS`], `exp` > now; (8) arithmetic: see
/// [`CertificateClaims::check_arithmetic`].
///
/// # Errors
/// The first failed step as a [`CertificateError`].
pub fn verify_certificate(
    jws: &str,
    jwks: &Jwks,
    now: DateTime<Utc>,
) -> Result<CheckedCertificate, CertificateError> {
    let unverified =
        jws::decode_header_allowing(jws.trim(), CERTIFICATE_TYP, &jws::CERTIFICATE_ALGS)?;
    let kid = unverified.header.kid.clone();
    let key = jwks
        .find(&kid)
        .ok_or_else(|| CertificateError::UnknownKid(kid.clone()))?
        .to_public_key()
        .map_err(JwsError::from)?;
    let (payload, _) = unverified.verify(&key, SaltPolicy::DigestOnly)?;
    let claims: CertificateClaims = serde_json::from_slice(&payload)
        .map_err(|err| CertificateError::Claims(err.to_string()))?;
    if claims.eat_profile != EAT_PROFILE {
        return Err(CertificateError::Claims(format!(
            "eat_profile {:?} is not {EAT_PROFILE:?}",
            claims.eat_profile
        )));
    }
    // The arithmetic checks below are version 2's rules: figures computed under other rules
    // cannot be judged by them.
    if claims.calculation_version != CALCULATION_VERSION {
        return Err(CertificateError::Claims(format!(
            "wattest.calculation_version {:?}: this verifier checks version {CALCULATION_VERSION:?}",
            claims.calculation_version
        )));
    }
    let t = now.timestamp();
    let at = rfc3339(t);
    if claims.nbf > t + CLOCK_SKEW_SECONDS || claims.iat > t + CLOCK_SKEW_SECONDS {
        return Err(CertificateError::Time(format!(
            "not valid yet: nbf {} / iat {} is after {at} (more than {CLOCK_SKEW_SECONDS} s of clock skew)",
            rfc3339(claims.nbf),
            rfc3339(claims.iat)
        )));
    }
    if claims.exp <= t {
        return Err(CertificateError::Time(format!(
            "expired at {} (verified as of {at})",
            rfc3339(claims.exp)
        )));
    }
    claims.check_arithmetic()?;
    Ok(CheckedCertificate {
        claims,
        kid,
        hash: jws::jws_hash(jws.trim()),
    })
}

impl CertificateClaims {
    /// Recomputes every total from its items, exactly (all quantities are integers of
    /// millionths): consumed = consumption rule over `by_source`; solar = Σ solar sources =
    /// Σ hourly solar; grid = Σ hourly grid; each hour's emissions and avoided emissions =
    /// [`emissions_g`] of its energy and intensity; emissions and avoided = Σ hourly;
    /// reward total = [`reward_total`]; owner = [`split_reward`]; owner + fund = total.
    ///
    /// # Errors
    /// [`CertificateError::Arithmetic`] naming the first figure that does not reconcile.
    pub fn check_arithmetic(&self) -> Result<(), CertificateError> {
        fn check(
            what: &str,
            stated: impl Display,
            computed: impl Display,
        ) -> Result<(), CertificateError> {
            let (a, b) = (stated.to_string(), computed.to_string());
            if a == b {
                Ok(())
            } else {
                Err(CertificateError::Arithmetic(format!(
                    "{what}: stated {a}, items give {b}"
                )))
            }
        }
        use std::fmt::Display;
        let e = &self.energy;
        check(
            "wattest.energy.consumed_wh",
            e.consumed_wh,
            consumed_energy(e.by_source.iter().map(|s| (s.kind, s.energy_wh))),
        )?;
        let solar: Decimal6 = e
            .by_source
            .iter()
            .filter(|s| s.kind == SourceKind::Solar)
            .map(|s| s.energy_wh)
            .sum();
        check("wattest.energy.solar_wh", e.solar_wh, solar)?;
        let hourly = &self.intensity.hourly;
        check(
            "wattest.energy.grid_wh",
            e.grid_wh,
            hourly.iter().map(|h| h.grid_wh).sum::<Decimal6>(),
        )?;
        check(
            "wattest.intensity.hourly solar_wh",
            e.solar_wh,
            hourly.iter().map(|h| h.solar_wh).sum::<Decimal6>(),
        )?;
        for h in hourly {
            if h.grid_wh < Decimal6::ZERO
                || h.solar_wh < Decimal6::ZERO
                || h.g_co2e_per_kwh < Decimal6::ZERO
            {
                return Err(CertificateError::Arithmetic(format!(
                    "wattest.intensity.hourly {}: negative figure",
                    h.hour
                )));
            }
            check(
                &format!("wattest.intensity.hourly {} emissions_g", h.hour),
                h.emissions_g,
                emissions_g(h.grid_wh, h.g_co2e_per_kwh),
            )?;
            check(
                &format!("wattest.intensity.hourly {} avoided_g", h.hour),
                h.avoided_g,
                emissions_g(h.solar_wh, h.g_co2e_per_kwh),
            )?;
        }
        check(
            "wattest.emissions.location_based_g_co2e",
            self.emissions.location_based_g_co2e,
            hourly.iter().map(|h| h.emissions_g).sum::<Decimal6>(),
        )?;
        check(
            "wattest.avoided_emissions.g_co2e",
            self.avoided_emissions.g_co2e,
            hourly.iter().map(|h| h.avoided_g).sum::<Decimal6>(),
        )?;
        let r = &self.reward;
        check(
            "wattest.reward.total",
            r.total,
            reward_total(self.avoided_emissions.g_co2e, r.price_per_tonne),
        )?;
        let (owner, fund) = split_reward(r.total, r.node_owner_share_pct);
        check("wattest.reward.node_owner", r.node_owner, owner)?;
        check("wattest.reward.cooperative_fund", r.cooperative_fund, fund)?;
        if self.windows.count == 0 || self.windows.last_seq < self.windows.first_seq {
            return Err(CertificateError::Arithmetic(
                "wattest.telemetry: empty or inverted seq range".into(),
            ));
        }
        Ok(())
    }
}

/// Emissions of `energy_wh` at `g_co2e_per_kwh`: Wh × g/kWh ÷ 1000, in g CO2e rounded half away
/// from zero to the µg. Exact integer arithmetic: (µWh × µg/kWh) ÷ 10⁹ = µg.
#[must_use]
pub fn emissions_g(energy_wh: Decimal6, g_co2e_per_kwh: Decimal6) -> Decimal6 {
    let product = i128::from(energy_wh.millionths()) * i128::from(g_co2e_per_kwh.millionths());
    Decimal6::from_millionths(saturate(div_round(product, 1_000_000_000)))
}

/// Splits `total` into parts proportional to `weights` (largest remainder method: each part
/// gets ⌊total × w ÷ Σw⌋, and the units left over go one each to the largest remainders, ties to
/// the earlier part), so the parts always add up to `total` exactly. Zero weights get zero
/// (all zero: everything to the first part).
#[must_use]
pub fn split_by_weights(total: Decimal6, weights: &[i64]) -> Vec<Decimal6> {
    let sum: i128 = weights.iter().map(|w| i128::from((*w).max(0))).sum();
    if weights.is_empty() {
        return Vec::new();
    }
    if sum == 0 {
        let mut parts = vec![Decimal6::ZERO; weights.len()];
        parts[0] = total;
        return parts;
    }
    let t = i128::from(total.millionths());
    let mut parts: Vec<i128> = Vec::with_capacity(weights.len());
    let mut remainders: Vec<(i128, usize)> = Vec::with_capacity(weights.len());
    for (i, w) in weights.iter().enumerate() {
        let scaled = t * i128::from((*w).max(0));
        parts.push(scaled.div_euclid(sum));
        remainders.push((scaled.rem_euclid(sum), i));
    }
    let mut left = t - parts.iter().sum::<i128>();
    remainders.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    for (_, i) in remainders {
        if left <= 0 {
            break;
        }
        parts[i] += 1;
        left -= 1;
    }
    parts
        .into_iter()
        .map(|p| Decimal6::from_millionths(saturate(p)))
        .collect()
}

fn div_round(n: i128, d: i128) -> i128 {
    let q = n / d;
    let r = n % d;
    if 2 * r.abs() >= d { q + n.signum() } else { q }
}

fn saturate(v: i128) -> i64 {
    i64::try_from(v).unwrap_or(if v < 0 { i64::MIN } else { i64::MAX })
}

/// Reward for avoided emissions: ⌊avoided g × price per tonne ÷ 10⁶⌋ in micro-euros, never
/// negative (1 t = 10⁶ g; in integers: µg × µEUR/t ÷ 10¹² = µEUR).
#[must_use]
pub fn reward_total(avoided_g: Decimal6, price_per_tonne: Eur) -> Eur {
    let product =
        i128::from(avoided_g.millionths().max(0)) * i128::from(price_per_tonne.micros().max(0));
    Eur::from_micros(saturate(product / 1_000_000_000_000))
}

/// Splits `total` into (node owner, cooperative fund): the owner's part is ⌊total × share ÷ 100⌋
/// to the micro-euro (share clamped to 0–100 %), the fund receives the remainder, so the parts
/// always add up to the total.
#[must_use]
pub fn split_reward(total: Eur, node_owner_share_pct: Decimal6) -> (Eur, Eur) {
    let share = i128::from(node_owner_share_pct.millionths().clamp(0, 100_000_000));
    let owner = saturate(i128::from(total.micros()) * share / 100_000_000);
    (
        Eur::from_micros(owner),
        Eur::from_micros(total.micros() - owner),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn d(text: &str) -> Decimal6 {
        Decimal6::parse(text).expect("decimal")
    }

    #[test]
    fn split_always_adds_up() {
        for (total, pct) in [
            (1_000_001, "70"),
            (7, "70"),
            (0, "70"),
            (999_999_999, "33.3"),
            (5, "100"),
            (5, "0"),
        ] {
            let (o, f) = split_reward(Eur::from_micros(total), d(pct));
            assert_eq!(o.micros() + f.micros(), total);
            assert!(o.micros() >= 0 && f.micros() >= 0);
        }
        let (o, f) = split_reward(Eur::from_micros(1_000_000), d("70"));
        assert_eq!((o.micros(), f.micros()), (700_000, 300_000));
    }

    #[test]
    fn reward_is_tonnes_times_price() {
        // 2 kg = 2000 g avoided at 25 EUR/t = 0.05 EUR.
        let r = reward_total(d("2000"), Eur::from_micros(25_000_000));
        assert_eq!(r.to_string(), "0.050000");
        assert_eq!(
            reward_total(d("-1"), Eur::from_micros(25_000_000)).micros(),
            0
        );
        // 1 µg at 25 EUR/t is 2.5e-11 EUR: rounds down to nothing.
        assert_eq!(
            reward_total(d("0.000001"), Eur::from_micros(25_000_000)).micros(),
            0
        );
    }

    #[test]
    fn emissions_are_exact_to_the_microgram() {
        // 25 Wh at 117.58 g/kWh = 2.9395 g.
        assert_eq!(emissions_g(d("25"), d("117.58")), d("2.9395"));
        // 0.000001 Wh at 0.5 g/kWh = 5e-10 g = 0.0005 µg → 0.
        assert_eq!(emissions_g(d("0.000001"), d("0.5")), Decimal6::ZERO);
        // 1 Wh at 0.0005 g/kWh = 5e-7 g = 0.5 µg → rounds half away from zero to 1 µg.
        assert_eq!(emissions_g(d("1"), d("0.0005")), d("0.000001"));
    }

    proptest! {
        #[test]
        fn weighted_split_sums_to_the_whole(total in 0i64..1_000_000_000_000, weights in prop::collection::vec(0i64..10_000_000, 1..30)) {
            let parts = split_by_weights(Decimal6::from_millionths(total), &weights);
            prop_assert_eq!(parts.len(), weights.len());
            prop_assert_eq!(parts.iter().copied().sum::<Decimal6>(), Decimal6::from_millionths(total));
            let sum: i128 = weights.iter().map(|w| i128::from(*w)).sum();
            for (p, w) in parts.iter().zip(&weights) {
                prop_assert!(p.millionths() >= 0);
                if sum > 0 {
                    // Each part is within one millionth of its exact share.
                    let exact = i128::from(total) * i128::from(*w);
                    let lo = exact / sum;
                    prop_assert!(i128::from(p.millionths()) >= lo && i128::from(p.millionths()) <= lo + 1);
                }
            }
        }
    }
}
