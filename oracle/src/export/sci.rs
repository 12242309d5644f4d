//! The `sci` profile: Software Carbon Intensity (Green Software Foundation, ISO/IEC 21031:2024),
//! SCI = ((E × I) + M) per R, one row per certificate, whose functional unit R is one run (the
//! job the certificate covers) or, for a certificate without a job, one certification period.

use super::{Embodied, ExportRow, rfc3339, text, thousandth};
use wattest_shared::Decimal6;

/// Version of [`COLUMNS`].
///
/// `sci/2`: `i_g_co2e_per_kwh` is operational ÷ E (E = energy consumed, self-consumed solar
/// counted at 0 gCO2e/kWh), so that E × I = operational; in `sci/1` it was the certificate's
/// grid intensity, which applies to grid energy only and did not multiply out with E when solar
/// was present.
pub const VERSION: &str = "sci/2";

/// Columns, in order. E kWh (energy consumed), I gCO2e/kWh (operational ÷ E), operational
/// emissions, M and SCI kgCO2e: `e_kwh` × `i_g_co2e_per_kwh` ÷ 1000 = `operational_kg_co2e` to
/// within I's rounding (± E × 0.5 × 10⁻⁶ g).
pub const COLUMNS: [&str; 18] = [
    "certificate_id",
    "node_id",
    "node_owner",
    "job_id",
    "model_id",
    "period_start",
    "period_end",
    "functional_unit",
    "r",
    "e_kwh",
    "e_grid_kwh",
    "i_g_co2e_per_kwh",
    "operational_kg_co2e",
    "m_kg_co2e",
    "sci_kg_co2e_per_unit",
    "ear_status",
    "revoked",
    "calculation_version",
];

/// Text columns whose value may read as a number: quoted whatever their value.
pub const TEXT_COLUMNS: [&str; 6] = [
    "certificate_id",
    "node_id",
    "node_owner",
    "job_id",
    "model_id",
    "calculation_version",
];

/// I = operational ÷ E in gCO2e/kWh (`operational_g` g CO2e over `consumed_wh` Wh), rounded half
/// up to 10⁻⁶ gCO2e/kWh; `None` when E is zero (no energy: I is undefined).
#[must_use]
pub fn intensity_of_consumption(
    operational_g: Decimal6,
    consumed_wh: Decimal6,
) -> Option<Decimal6> {
    let e = i128::from(consumed_wh.millionths());
    if e <= 0 {
        return None;
    }
    // g millionths × 1000 Wh/kWh × 10⁶ ÷ Wh millionths = g/kWh millionths.
    let numerator = i128::from(operational_g.millionths()).checked_mul(1_000_000_000)?;
    let rounded = (numerator + e / 2).div_euclid(e);
    i64::try_from(rounded).ok().map(Decimal6::from_millionths)
}

/// Embodied share M = TE × TiR ÷ EL (SCI §"Embodied emissions", with the whole node reserved:
/// RR ÷ ToR = 1), kgCO2e rounded half up to 10⁻⁶ kg; TiR is the certificate's measured time.
/// `None` when the lifespan is not positive.
#[must_use]
pub fn embodied_share(embodied: Embodied, measured_seconds: Decimal6) -> Option<Decimal6> {
    let lifespan_s = i128::from(embodied.lifespan_hours).checked_mul(3600)?;
    if lifespan_s <= 0 {
        return None;
    }
    // millionths kg × millionths s ÷ (s × 10⁶) = millionths kg.
    let numerator = i128::from(embodied.total_kg.millionths())
        .checked_mul(i128::from(measured_seconds.millionths()))?;
    let denominator = lifespan_s.checked_mul(1_000_000)?;
    let rounded = (numerator + denominator / 2) / denominator;
    i64::try_from(rounded).ok().map(Decimal6::from_millionths)
}

/// The row of one certificate. M and SCI are empty unless the node's embodied emissions were
/// set (`wattest-oracle node set --embodied-kg`): a SCI without M would understate it.
#[must_use]
pub fn record(row: &ExportRow) -> Vec<String> {
    let c = &row.claims;
    // E × I, hour by hour over the energy drawn from the grid: the certificate's location-based
    // emissions, g → kg (self-consumed solar carries no grid intensity).
    let operational_g = c.emissions.location_based_g_co2e;
    let m = row
        .embodied
        .and_then(|e| embodied_share(e, c.period.measured_seconds));
    // R = 1 run: SCI per unit equals the total. Emissions are in g millionths, M in kg millionths.
    let sci = m.map(|m| {
        let total_g = i128::from(operational_g.millionths()) + i128::from(m.millionths()) * 1000;
        thousandth(Decimal6::from_millionths(
            i64::try_from(total_g).unwrap_or(i64::MAX),
        ))
    });
    let unit = if c.job_id.is_some() {
        "run"
    } else {
        "certification_period"
    };
    vec![
        row.id.clone(),
        c.node.id.clone(),
        text(row.node_owner.as_deref().unwrap_or_default()),
        text(c.job_id.as_deref().unwrap_or_default()),
        text(c.model_id.as_deref().unwrap_or_default()),
        rfc3339(c.period.start),
        rfc3339(c.period.end),
        unit.to_owned(),
        "1".to_owned(),
        thousandth(c.energy.consumed_wh),
        thousandth(c.energy.grid_wh),
        intensity_of_consumption(operational_g, c.energy.consumed_wh)
            .map(|i| i.to_string())
            .unwrap_or_default(),
        thousandth(operational_g),
        m.map(|m| m.to_string()).unwrap_or_default(),
        sci.unwrap_or_default(),
        super::compliance::status_name(c.status).to_owned(),
        row.revoked.to_string(),
        text(&c.calculation_version),
    ]
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn e_times_i_is_the_operational_emissions() {
        // 2 kWh consumed, 1.5 kWh of it from the grid at 56 g/kWh (84 g), 0.5 kWh own solar.
        let op = Decimal6::parse("84").unwrap();
        let e = Decimal6::parse("2000").unwrap();
        let i = intensity_of_consumption(op, e).unwrap();
        assert_eq!(i.to_string(), "42.000000");
        // An inexact quotient rounds half up to 10⁻⁶ g/kWh: 1 g over 3 Wh = 333.333333 g/kWh.
        let i =
            intensity_of_consumption(Decimal6::parse("1").unwrap(), Decimal6::parse("3").unwrap());
        assert_eq!(i.unwrap().to_string(), "333.333333");
        let i =
            intensity_of_consumption(Decimal6::parse("2").unwrap(), Decimal6::parse("3").unwrap());
        assert_eq!(i.unwrap().to_string(), "666.666667");
        assert_eq!(intensity_of_consumption(op, Decimal6::ZERO), None);
    }

    #[test]
    fn embodied_share_is_time_share_of_lifespan() {
        // 1000 kg over 4 years (35 064 h), one hour of use: 1000 / 35064 = 0.028519…
        let e = Embodied {
            total_kg: Decimal6::parse("1000").unwrap(),
            lifespan_hours: 35_064,
        };
        let m = embodied_share(e, Decimal6::parse("3600").unwrap()).unwrap();
        assert_eq!(m.to_string(), "0.028519");
        let zero_life = Embodied {
            lifespan_hours: 0,
            ..e
        };
        assert_eq!(
            embodied_share(zero_life, Decimal6::parse("1").unwrap()),
            None
        );
    }
}
