//! The certificate both `wattest-verify` tests sign: one hour whose arithmetic reconciles.

use chrono::{DateTime, Duration, Utc};
use wattest_shared::certificate::{
    AvoidedEmissions, CALCULATION_VERSION, CertifiedNode, EAT_PROFILE, EarStatus, Emissions,
    EnergyTotals, HourlyIntensity, IntensityUsed, Period, Provenance, Reward, SourceTotal,
    WindowRange, emissions_g, reward_total, split_reward,
};
use wattest_shared::window::{Attribution, Method, SourceKind};
use wattest_shared::{AttestationLevel, CertificateClaims, Decimal6, Eur};

/// `text` as a [`Decimal6`].
fn d(text: &str) -> Decimal6 {
    Decimal6::parse(text).unwrap()
}

/// A small certificate whose arithmetic reconciles: 10 Wh GPU, 2 Wh solar, one hour.
pub fn claims(now: DateTime<Utc>) -> CertificateClaims {
    let hour = DateTime::parse_from_rfc3339("2026-11-23T09:00:00Z")
        .unwrap()
        .with_timezone(&Utc);
    let g = d("150");
    let (grid, solar) = (d("8"), d("2"));
    let avoided = emissions_g(solar, g);
    let price = Eur::parse("25").unwrap();
    let total = reward_total(avoided, price);
    let (owner, fund) = split_reward(total, d("70"));
    let source = |name: &str, kind, method, wh: &str| SourceTotal {
        source: name.into(),
        kind,
        method,
        energy_wh: d(wh),
        uncertainty_pct: d("5"),
        shared_device: false,
    };
    CertificateClaims {
        iss: "https://oracle.test".into(),
        sub: "node-1".into(),
        iat: now.timestamp(),
        nbf: now.timestamp(),
        exp: (now + Duration::days(1)).timestamp(),
        jti: "cert-1".into(),
        eat_profile: EAT_PROFILE.into(),
        status: EarStatus::Warning,
        status_reasons: vec!["software_key".into()],
        calculation_version: CALCULATION_VERSION.into(),
        job_id: Some("job".into()),
        model_id: None,
        node: CertifiedNode {
            id: "node-1".into(),
            name: "n".into(),
            zone: "BE".into(),
            attestation_level: AttestationLevel::Software,
            kid: "k".into(),
        },
        attribution: Attribution::Machine,
        period: Period {
            start: hour,
            end: hour + Duration::minutes(10),
            measured_seconds: d("600"),
        },
        energy: EnergyTotals {
            consumed_wh: d("10"),
            solar_wh: solar,
            grid_wh: grid,
            by_source: vec![
                source("gpu0", SourceKind::Gpu, Method::NvmlEnergyCounter, "10"),
                source(
                    "solar",
                    SourceKind::Solar,
                    Method::SolarDeclaredConstant,
                    "2",
                ),
            ],
        },
        grid_zone: "BE".into(),
        intensity: IntensityUsed {
            zone: "BE".into(),
            factor_type: "lifecycle".into(),
            g_co2e_per_kwh: g,
            hourly: vec![HourlyIntensity {
                hour,
                g_co2e_per_kwh: g,
                grid_wh: grid,
                solar_wh: solar,
                emissions_g: emissions_g(grid, g),
                avoided_g: avoided,
                provenance: Provenance {
                    provider: "static".into(),
                    dataset: "test".into(),
                    year: 2024,
                    factor_type: "lifecycle".into(),
                    estimated: true,
                    marginal: false,
                    fallback_reason: None,
                },
            }],
        },
        emissions: Emissions {
            location_based_g_co2e: emissions_g(grid, g),
        },
        avoided_emissions: AvoidedEmissions { g_co2e: avoided },
        reward: Reward {
            currency: "EUR".into(),
            price_per_tonne: price,
            total,
            node_owner: owner,
            cooperative_fund: fund,
            node_owner_share_pct: d("70"),
        },
        windows: WindowRange {
            first_seq: 1,
            last_seq: 1,
            count: 1,
            chain_head: "h".into(),
        },
        plausibility: vec![],
    }
}
