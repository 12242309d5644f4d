//! The energy certificate: the attestation result the oracle signs for a job, and its offline
//! verification for auditors.
//!
//! A certificate is a compact JWS with `typ` = [`CERTIFICATE_TYP`], signed PS256 by an oracle key
//! published in the oracle's JWKS. [`verify_certificate`] checks it in numbered steps and returns a
//! [`CheckedCertificate`]; its arithmetic checks recompute every total from the itemised figures.

use crate::jwk::Jwks;
use crate::jws::{self, JwsError, SaltPolicy};
use crate::units::{Eur, GramsCo2ePerKwh, KgCo2e, WattHours};
use crate::window::{Attribution, Method, SourceKind, consumed_energy};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// JWS `typ` of an energy certificate.
pub const CERTIFICATE_TYP: &str = "wattest-cert+jwt";
/// Clock skew tolerated on `iat` and `nbf`, in seconds.
pub const CLOCK_SKEW_SECONDS: i64 = 60;
/// Relative tolerance of the arithmetic checks (floating-point rounding, not judgement).
pub const ARITHMETIC_TOLERANCE: f64 = 1e-9;

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
    pub measured_seconds: f64,
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
    /// Energy, Wh.
    pub energy_wh: WattHours,
    /// Energy-weighted mean of the windows' relative uncertainties, percent (treats the errors as
    /// fully correlated, the conservative choice for a sensor's systematic error).
    pub uncertainty_pct: f64,
    /// True when any window flagged the device as shared (MIG).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub shared_device: bool,
}

/// Energy totals.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EnergyTotals {
    /// Energy consumed (the consumption rule of `docs/protocol.md` over `by_source`), Wh.
    pub consumed_wh: WattHours,
    /// Solar energy produced, Wh.
    pub solar_wh: WattHours,
    /// Energy drawn from the grid: Σ over windows of max(0, consumed − solar), Wh.
    pub grid_wh: WattHours,
    /// Per-source totals.
    pub by_source: Vec<SourceTotal>,
}

/// Grid carbon intensity applied to one clock hour.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HourlyIntensity {
    /// Start of the hour, RFC 3339 UTC.
    pub hour: DateTime<Utc>,
    /// Intensity applied, gCO2e/kWh.
    pub g_co2e_per_kwh: GramsCo2ePerKwh,
    /// Grid energy falling in this hour, Wh (windows split pro rata by time).
    pub grid_wh: WattHours,
    /// Solar energy falling in this hour, Wh.
    pub solar_wh: WattHours,
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
    pub factor_type: String,
    /// True when the figure is not a measurement for that hour (a yearly mean, a forecast).
    pub estimated: bool,
}

/// Intensity used for the certificate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct IntensityUsed {
    /// Grid zone.
    pub zone: String,
    /// Grid-energy-weighted mean over the hours, gCO2e/kWh (the plain mean when no grid energy).
    pub g_co2e_per_kwh: GramsCo2ePerKwh,
    /// Source of the figures.
    pub provenance: Provenance,
    /// Per-hour figures.
    pub hourly: Vec<HourlyIntensity>,
}

/// Emissions of the consumed grid energy (GHG Protocol Scope 2, location-based).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Emissions {
    /// Σ hours grid_wh × intensity, kgCO2e.
    pub location_based_kg_co2e: KgCo2e,
}

/// Emissions avoided by solar production: reported apart, never netted against emissions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AvoidedEmissions {
    /// Σ hours solar_wh × intensity, kgCO2e.
    pub kg_co2e: KgCo2e,
}

/// Avoided-emissions reward (not an offset) and its split.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Reward {
    /// ISO 4217 currency, `EUR`.
    pub currency: String,
    /// Price applied per tonne of avoided CO2e.
    pub price_per_tonne: Eur,
    /// avoided tonnes × price, rounded down to the micro-euro.
    pub total: Eur,
    /// Node owner's part: total × share, rounded down to the micro-euro.
    pub node_owner: Eur,
    /// Cooperative fund's part: total − node_owner.
    pub cooperative_fund: Eur,
    /// Node owner's share, percent (default 70).
    pub node_owner_share_pct: f64,
}

/// The windows a certificate covers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WindowRange {
    /// First window's `seq`.
    pub first_seq: u64,
    /// Last (final) window's `seq`.
    pub last_seq: u64,
    /// Number of windows.
    pub count: u64,
    /// base64url SHA-256 of the final window's compact JWS.
    pub last_hash: String,
}

/// The payload of an energy certificate.
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
    /// Job id, when the windows belonged to a job.
    #[serde(default)]
    pub job_id: Option<String>,
    /// The node.
    pub node: CertifiedNode,
    /// How the job's share of host energy was attributed.
    pub attribution: Attribution,
    /// Period covered.
    pub period: Period,
    /// Energy.
    pub energy: EnergyTotals,
    /// Intensity applied.
    pub intensity: IntensityUsed,
    /// Location-based emissions.
    pub emissions: Emissions,
    /// Avoided emissions from solar.
    pub avoided_emissions: AvoidedEmissions,
    /// Reward for avoided emissions.
    pub reward: Reward,
    /// Windows covered.
    pub windows: WindowRange,
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

/// Verifies a certificate offline against the oracle's JWKS.
///
/// Steps: (1–3) header: PS256, `typ` = [`CERTIFICATE_TYP`], no header keys; (4) key: the `kid`
/// must be the RFC 7638 thumbprint of a JWKS key; (5) signature; (6) claims parse; (7) time:
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
    let unverified = jws::decode_header(jws.trim(), CERTIFICATE_TYP)?;
    let kid = unverified.header.kid.clone();
    let key = jwks
        .find(&kid)
        .ok_or_else(|| CertificateError::UnknownKid(kid.clone()))?
        .to_public_key()
        .map_err(JwsError::from)?;
    let (payload, _) = unverified.verify(&key, SaltPolicy::DigestOnly)?;
    let claims: CertificateClaims = serde_json::from_slice(&payload)
        .map_err(|err| CertificateError::Claims(err.to_string()))?;
    let t = now.timestamp();
    if claims.nbf > t + CLOCK_SKEW_SECONDS || claims.iat > t + CLOCK_SKEW_SECONDS {
        return Err(CertificateError::Time(format!(
            "nbf {} / iat {} is after now {t}",
            claims.nbf, claims.iat
        )));
    }
    if claims.exp <= t {
        return Err(CertificateError::Time(format!("expired at {}", claims.exp)));
    }
    claims.check_arithmetic()?;
    Ok(CheckedCertificate {
        claims,
        kid,
        hash: jws::jws_hash(jws.trim()),
    })
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= ARITHMETIC_TOLERANCE * a.abs().max(b.abs()).max(1.0)
}

impl CertificateClaims {
    /// Recomputes every total from its items: consumed = consumption rule over `by_source`;
    /// solar = Σ solar sources = Σ hourly solar; grid = Σ hourly grid; emissions = Σ hourly
    /// grid × intensity; avoided = Σ hourly solar × intensity; reward = owner + fund, with
    /// total = ⌊avoided t × price⌋ and owner = ⌊total × share⌋.
    ///
    /// # Errors
    /// [`CertificateError::Arithmetic`] naming the first figure that does not reconcile.
    pub fn check_arithmetic(&self) -> Result<(), CertificateError> {
        let fail = |what: &str, stated: f64, computed: f64| {
            Err(CertificateError::Arithmetic(format!(
                "{what}: stated {stated}, items give {computed}"
            )))
        };
        let e = &self.energy;
        let consumed = consumed_energy(e.by_source.iter().map(|s| (s.kind, s.energy_wh)));
        if !close(e.consumed_wh.0, consumed.0) {
            return fail("energy.consumed_wh", e.consumed_wh.0, consumed.0);
        }
        let solar: WattHours = e
            .by_source
            .iter()
            .filter(|s| s.kind == SourceKind::Solar)
            .map(|s| s.energy_wh)
            .sum();
        if !close(e.solar_wh.0, solar.0) {
            return fail("energy.solar_wh", e.solar_wh.0, solar.0);
        }
        let hourly = &self.intensity.hourly;
        let grid: WattHours = hourly.iter().map(|h| h.grid_wh).sum();
        if !close(e.grid_wh.0, grid.0) {
            return fail("energy.grid_wh", e.grid_wh.0, grid.0);
        }
        let hourly_solar: WattHours = hourly.iter().map(|h| h.solar_wh).sum();
        if !close(e.solar_wh.0, hourly_solar.0) {
            return fail("intensity.hourly solar_wh", e.solar_wh.0, hourly_solar.0);
        }
        if e.grid_wh.0 > e.consumed_wh.0 * (1.0 + ARITHMETIC_TOLERANCE) + ARITHMETIC_TOLERANCE {
            return fail(
                "energy.grid_wh exceeds consumed_wh",
                e.grid_wh.0,
                e.consumed_wh.0,
            );
        }
        let emissions: KgCo2e = hourly
            .iter()
            .map(|h| h.grid_wh.emissions(h.g_co2e_per_kwh))
            .sum();
        if !close(self.emissions.location_based_kg_co2e.0, emissions.0) {
            return fail(
                "emissions.location_based_kg_co2e",
                self.emissions.location_based_kg_co2e.0,
                emissions.0,
            );
        }
        let avoided: KgCo2e = hourly
            .iter()
            .map(|h| h.solar_wh.emissions(h.g_co2e_per_kwh))
            .sum();
        if !close(self.avoided_emissions.kg_co2e.0, avoided.0) {
            return fail(
                "avoided_emissions.kg_co2e",
                self.avoided_emissions.kg_co2e.0,
                avoided.0,
            );
        }
        let r = &self.reward;
        if r.node_owner.micros() + r.cooperative_fund.micros() != r.total.micros()
            || r.node_owner.micros() < 0
            || r.cooperative_fund.micros() < 0
        {
            return fail(
                "reward.node_owner + reward.cooperative_fund",
                (r.node_owner.micros() + r.cooperative_fund.micros()) as f64,
                r.total.micros() as f64,
            );
        }
        let expected_total = reward_total(self.avoided_emissions.kg_co2e, r.price_per_tonne);
        // One micro-euro of slack: the oracle and the verifier may round the float product differently.
        if (expected_total.micros() - r.total.micros()).abs() > 1 {
            return fail(
                "reward.total (micro-EUR)",
                r.total.micros() as f64,
                expected_total.micros() as f64,
            );
        }
        if self.windows.count == 0 || self.windows.last_seq < self.windows.first_seq {
            return Err(CertificateError::Arithmetic(
                "windows: empty or inverted seq range".into(),
            ));
        }
        Ok(())
    }
}

/// Reward for avoided emissions: ⌊avoided t × price⌋ in micro-euros (never negative).
#[must_use]
pub fn reward_total(avoided: KgCo2e, price_per_tonne: Eur) -> Eur {
    let micros = (avoided.tonnes().max(0.0) * price_per_tonne.micros() as f64).floor();
    // Saturating float → int conversion; a reward beyond i64 micro-euros is not physical.
    Eur::from_micros(micros as i64)
}

/// Splits `total` into (node owner, cooperative fund) with the owner's part rounded down to the
/// micro-euro and the fund receiving the remainder, so the parts always add up to the total.
#[must_use]
pub fn split_reward(total: Eur, node_owner_share_pct: f64) -> (Eur, Eur) {
    let owner =
        ((total.micros() as f64) * node_owner_share_pct.clamp(0.0, 100.0) / 100.0).floor() as i64;
    (
        Eur::from_micros(owner),
        Eur::from_micros(total.micros() - owner),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_always_adds_up() {
        for (total, pct) in [
            (1_000_001, 70.0),
            (7, 70.0),
            (0, 70.0),
            (999_999_999, 33.3),
            (5, 100.0),
            (5, 0.0),
        ] {
            let (o, f) = split_reward(Eur::from_micros(total), pct);
            assert_eq!(o.micros() + f.micros(), total);
            assert!(o.micros() >= 0 && f.micros() >= 0);
        }
        let (o, f) = split_reward(Eur::from_micros(1_000_000), 70.0);
        assert_eq!((o.micros(), f.micros()), (700_000, 300_000));
    }

    #[test]
    fn reward_is_tonnes_times_price() {
        // 2 kg avoided at 25 EUR/t = 0.05 EUR.
        let r = reward_total(KgCo2e(2.0), Eur::from_micros(25_000_000));
        assert_eq!(r.to_string(), "0.050000");
        assert_eq!(
            reward_total(KgCo2e(-1.0), Eur::from_micros(25_000_000)).micros(),
            0
        );
    }
}
