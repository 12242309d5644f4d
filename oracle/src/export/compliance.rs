//! The `compliance` profile: one row per certificate (or per certificate-hour) with everything an
//! auditor needs for GHG Protocol Scope 2 (location-based), ESRS E1-5/E1-6/E1-7 and EU AI Act
//! Annex XI §1 2(d)/(e); `docs/compliance.md` maps each column to its unit and standard.

use super::{ExportFilter, ExportRow, Granularity, energy_of, rfc3339, text, thousandth};
use wattest_shared::{Decimal6, SourceKind};

/// Version of [`COLUMNS`]. `2`: the profile module (ids, owner, energy by kind, status).
pub const VERSION: &str = "compliance/2";

/// Columns, in order. Energy kWh, emissions kgCO2e, intensity gCO2e/kWh, money EUR, times RFC
/// 3339 UTC. On hourly rows (`granularity=hour`) the per-source energy, consumed energy, estimated
/// energy and reward cells are empty: certificates state them per certificate, not per hour.
pub const COLUMNS: [&str; 42] = [
    "certificate_id",
    "certificate_sha256",
    "oracle_kid",
    "issued_at",
    "node_id",
    "node_name",
    "node_owner",
    "job_id",
    "model_id",
    "period_start",
    "period_end",
    "hour",
    "measured_seconds",
    "gpu_energy_kwh",
    "cpu_energy_kwh",
    "dram_energy_kwh",
    "platform_energy_kwh",
    "energy_consumed_kwh",
    "grid_energy_kwh",
    "solar_energy_kwh",
    "estimated_energy_kwh",
    "energy_methods",
    "attribution",
    "zone",
    "intensity_g_co2e_per_kwh",
    "emission_factor_type",
    "intensity_source",
    "intensity_dataset",
    "intensity_year",
    "intensity_estimated",
    "scope2_location_based_kg_co2e",
    "avoided_emissions_kg_co2e",
    "reward_eur",
    "reward_node_owner_eur",
    "reward_cooperative_fund_eur",
    "reward_node_owner_share_pct",
    "attestation_level",
    "ear_status",
    "status_reasons",
    "revoked",
    "calculation_version",
    "window_count",
];

/// Text columns whose value may read as a number: quoted whatever their value.
pub const TEXT_COLUMNS: [&str; 9] = [
    "certificate_id",
    "oracle_kid",
    "node_id",
    "node_name",
    "node_owner",
    "job_id",
    "model_id",
    "zone",
    "calculation_version",
];

fn optional_kwh(wh: Option<Decimal6>) -> String {
    wh.map(thousandth).unwrap_or_default()
}

/// Distinct values in first-seen order, joined with `separator`.
fn distinct<'a>(values: impl Iterator<Item = &'a str>, separator: &str) -> String {
    let mut seen: Vec<&str> = Vec::new();
    for v in values {
        if !seen.contains(&v) {
            seen.push(v);
        }
    }
    seen.join(separator)
}

/// Appends the rows of one certificate that `filter` kept: its certificate row, or (with
/// `granularity=hour`) one row per hour of `wattest.intensity.hourly` whose start is in the
/// filter's `[from, to)` ([`ExportFilter::covers_hour`]).
pub fn records(row: &ExportRow, filter: &ExportFilter, out: &mut Vec<Vec<String>>) {
    let c = &row.claims;
    let methods = distinct(c.energy.by_source.iter().map(|s| s.method.as_str()), " ");
    let estimated: Decimal6 = c
        .energy
        .by_source
        .iter()
        .filter(|s| s.kind != SourceKind::Solar && s.method.is_estimate())
        .map(|s| s.energy_wh)
        .sum();
    let hourly = &c.intensity.hourly;
    let sources = distinct(hourly.iter().map(|h| h.provenance.provider.as_str()), " ");
    // Dataset names hold spaces and commas (`Ember yearly electricity data, 2024`).
    let datasets = distinct(hourly.iter().map(|h| h.provenance.dataset.as_str()), "; ");
    // Every factor type the hours used: a fallback to another provider may mix them.
    let factor_types = distinct(
        hourly.iter().map(|h| h.provenance.factor_type.as_str()),
        " ",
    );
    let years: Vec<String> = hourly
        .iter()
        .map(|h| h.provenance.year.to_string())
        .collect();
    let years = distinct(years.iter().map(String::as_str), " ");
    let any_estimated = hourly.iter().any(|h| h.provenance.estimated);
    let issued_at = chrono::DateTime::from_timestamp(c.iat, 0)
        .map(rfc3339)
        .unwrap_or_default();
    let revoked = if row.revoked { "true" } else { "false" };
    // Cells shared by certificate and hour rows, by column position.
    let common = |period_start: String,
                  period_end: String,
                  hour: String,
                  per_certificate: bool|
     -> Vec<String> {
        let whole = |cell: String| if per_certificate { cell } else { String::new() };
        vec![
            row.id.clone(),
            row.hash.clone(),
            row.kid.clone(),
            issued_at.clone(),
            row.claims.node.id.clone(),
            text(&c.node.name),
            text(row.node_owner.as_deref().unwrap_or_default()),
            text(c.job_id.as_deref().unwrap_or_default()),
            text(c.model_id.as_deref().unwrap_or_default()),
            period_start,
            period_end,
            hour,
            whole(c.period.measured_seconds.to_string()),
            whole(optional_kwh(energy_of(c, SourceKind::Gpu))),
            whole(optional_kwh(energy_of(c, SourceKind::Cpu))),
            whole(optional_kwh(energy_of(c, SourceKind::Dram))),
            whole(optional_kwh(energy_of(c, SourceKind::Platform))),
            whole(thousandth(c.energy.consumed_wh)),
        ]
    };
    let tail = |per_certificate: bool| -> Vec<String> {
        let whole = |cell: String| if per_certificate { cell } else { String::new() };
        vec![
            whole(c.reward.total.to_string()),
            whole(c.reward.node_owner.to_string()),
            whole(c.reward.cooperative_fund.to_string()),
            whole(c.reward.node_owner_share_pct.to_string()),
            c.node.attestation_level.as_str().to_owned(),
            status_name(c.status).to_owned(),
            text(&c.status_reasons.join(" ")),
            revoked.to_owned(),
            text(&c.calculation_version),
            c.windows.count.to_string(),
        ]
    };
    match filter.granularity {
        Granularity::Certificate => {
            let mut r = common(
                rfc3339(c.period.start),
                rfc3339(c.period.end),
                String::new(),
                true,
            );
            r.extend([
                thousandth(c.energy.grid_wh),
                thousandth(c.energy.solar_wh),
                thousandth(estimated),
                text(&methods),
                c.attribution.as_str().to_owned(),
                text(&c.grid_zone),
                c.intensity.g_co2e_per_kwh.to_string(),
                text(if factor_types.is_empty() {
                    &c.intensity.factor_type
                } else {
                    &factor_types
                }),
                text(&sources),
                text(&datasets),
                years,
                any_estimated.to_string(),
                thousandth(c.emissions.location_based_g_co2e),
                thousandth(c.avoided_emissions.g_co2e),
            ]);
            r.extend(tail(true));
            out.push(r);
        }
        Granularity::Hour => {
            for h in hourly.iter().filter(|h| filter.covers_hour(h.hour)) {
                let hour_end = h.hour + chrono::Duration::hours(1);
                let mut r = common(
                    rfc3339(h.hour.max(c.period.start)),
                    rfc3339(hour_end.min(c.period.end)),
                    rfc3339(h.hour),
                    false,
                );
                r.extend([
                    thousandth(h.grid_wh),
                    thousandth(h.solar_wh),
                    String::new(),
                    text(&methods),
                    c.attribution.as_str().to_owned(),
                    text(&c.grid_zone),
                    h.g_co2e_per_kwh.to_string(),
                    text(&h.provenance.factor_type),
                    text(&h.provenance.provider),
                    text(&h.provenance.dataset),
                    h.provenance.year.to_string(),
                    h.provenance.estimated.to_string(),
                    thousandth(h.emissions_g),
                    thousandth(h.avoided_g),
                ]);
                r.extend(tail(false));
                out.push(r);
            }
        }
    }
}

/// The `ear.status` wire name.
#[must_use]
pub fn status_name(status: wattest_shared::certificate::EarStatus) -> &'static str {
    match status {
        wattest_shared::certificate::EarStatus::Affirming => "affirming",
        wattest_shared::certificate::EarStatus::Warning => "warning",
        wattest_shared::certificate::EarStatus::Contraindicated => "contraindicated",
    }
}
