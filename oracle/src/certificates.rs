//! Energy certificates: the attestation result for a job, built from its verified windows and
//! signed by the oracle key.
//!
//! [`build_claims`] is pure: it takes the windows, the intensity lookup, the credit policy and
//! `now`, and returns claims whose totals reconcile exactly as
//! [`wattest_shared::CertificateClaims::check_arithmetic`] recomputes them.

use crate::carbon::{GridZone, Intensity};
use crate::credits::CreditPolicy;
use chrono::{DateTime, Duration, DurationRound, TimeDelta, Utc};
use std::collections::BTreeMap;
use wattest_shared::certificate::{
    AvoidedEmissions, CertificateClaims, CertifiedNode, Emissions, EnergyTotals, HourlyIntensity,
    IntensityUsed, Period, SourceTotal, WindowRange,
};
use wattest_shared::window::{Method, SourceKind, WindowClaims, consumed_energy};
use wattest_shared::{GramsCo2ePerKwh, KgCo2e, WattHours};

/// Inputs that are not windows.
#[derive(Debug, Clone)]
pub struct Issue<'a> {
    /// Certificate id.
    pub id: String,
    /// Issuer (`iss`).
    pub issuer: &'a str,
    /// The node, as enrolled.
    pub node: CertifiedNode,
    /// Issue time.
    pub now: DateTime<Utc>,
    /// Validity from `now`.
    pub validity: Duration,
    /// Hash of the final window.
    pub last_hash: String,
}

/// Why no certificate could be built.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CertificateBuildError {
    /// No windows.
    #[error("no windows to certify")]
    NoWindows,
    /// The table has no figure for an hour of the period.
    #[error("no carbon intensity for zone {zone} at {hour}")]
    NoIntensity {
        /// Zone.
        zone: String,
        /// Hour.
        hour: DateTime<Utc>,
    },
}

/// The clock hours (UTC, truncated) that `windows` overlap, ascending: the hours whose carbon
/// intensity [`build_claims`] needs.
#[must_use]
pub fn hours_of(windows: &[WindowClaims]) -> Vec<DateTime<Utc>> {
    let mut hours = std::collections::BTreeSet::new();
    for w in windows {
        let mut cursor = w.start;
        while cursor < w.end {
            let hour = cursor.duration_trunc(TimeDelta::hours(1)).unwrap_or(cursor);
            hours.insert(hour);
            cursor = hour + TimeDelta::hours(1);
        }
    }
    hours.into_iter().collect()
}

/// Builds the claims for `windows` (ordered by seq, the last one final).
///
/// Per window, grid energy = max(0, consumed − solar); each window's grid and solar energy is
/// split across the clock hours it overlaps in proportion to time (constant power within a
/// window), and each hour's energy is multiplied by that hour's intensity.
///
/// # Errors
/// [`CertificateBuildError`].
pub fn build_claims(
    issue: Issue<'_>,
    windows: &[WindowClaims],
    zone: &GridZone,
    intensities: &BTreeMap<DateTime<Utc>, Intensity>,
    credits: &CreditPolicy,
) -> Result<CertificateClaims, CertificateBuildError> {
    let (Some(first), Some(last)) = (windows.first(), windows.last()) else {
        return Err(CertificateBuildError::NoWindows);
    };

    // Per-source totals with energy-weighted uncertainty.
    let mut by_source: BTreeMap<(String, SourceKind, Method), (WattHours, f64, bool)> =
        BTreeMap::new();
    for w in windows {
        for s in &w.sources {
            let entry = by_source
                .entry((s.source.clone(), s.kind, s.method))
                .or_insert((WattHours::ZERO, 0.0, false));
            entry.0 += s.energy_wh;
            entry.1 += s.energy_wh.0 * s.uncertainty_pct;
            entry.2 |= s.shared_device;
        }
    }
    let by_source: Vec<SourceTotal> = by_source
        .into_iter()
        .map(
            |((source, kind, method), (energy_wh, weighted, shared_device))| SourceTotal {
                uncertainty_pct: if energy_wh.0 > 0.0 {
                    weighted / energy_wh.0
                } else {
                    0.0
                },
                source,
                kind,
                method,
                energy_wh,
                shared_device,
            },
        )
        .collect();

    // Hourly split of grid and solar energy.
    let mut hours: BTreeMap<DateTime<Utc>, (WattHours, WattHours)> = BTreeMap::new();
    for w in windows {
        let grid = WattHours((w.consumed().0 - w.solar_wh.0).max(0.0));
        let total_ms = (w.end - w.start).num_milliseconds().max(1) as f64;
        let mut cursor = w.start;
        while cursor < w.end {
            let hour = cursor.duration_trunc(TimeDelta::hours(1)).unwrap_or(cursor);
            let next = (hour + TimeDelta::hours(1)).min(w.end);
            let fraction = (next - cursor).num_milliseconds() as f64 / total_ms;
            let slot = hours
                .entry(hour)
                .or_insert((WattHours::ZERO, WattHours::ZERO));
            slot.0 += WattHours(grid.0 * fraction);
            slot.1 += WattHours(w.solar_wh.0 * fraction);
            cursor = next;
        }
    }
    let mut hourly = Vec::with_capacity(hours.len());
    let mut provenance = None;
    for (hour, (grid_wh, solar_wh)) in hours {
        let Intensity {
            value,
            provenance: p,
        } = intensities
            .get(&hour)
            .cloned()
            .ok_or_else(|| CertificateBuildError::NoIntensity {
                zone: zone.name.clone(),
                hour,
            })?;
        provenance.get_or_insert(p);
        hourly.push(HourlyIntensity {
            hour,
            g_co2e_per_kwh: value,
            grid_wh,
            solar_wh,
        });
    }
    let provenance = provenance.ok_or(CertificateBuildError::NoWindows)?;

    let grid_wh: WattHours = hourly.iter().map(|h| h.grid_wh).sum();
    let solar_wh: WattHours = by_source
        .iter()
        .filter(|s| s.kind == SourceKind::Solar)
        .map(|s| s.energy_wh)
        .sum();
    let emissions: KgCo2e = hourly
        .iter()
        .map(|h| h.grid_wh.emissions(h.g_co2e_per_kwh))
        .sum();
    let avoided: KgCo2e = hourly
        .iter()
        .map(|h| h.solar_wh.emissions(h.g_co2e_per_kwh))
        .sum();
    let mean_intensity = mean_intensity(&hourly, grid_wh);

    Ok(CertificateClaims {
        iss: issue.issuer.to_owned(),
        sub: issue.node.id.clone(),
        iat: issue.now.timestamp(),
        nbf: issue.now.timestamp(),
        exp: (issue.now + issue.validity).timestamp(),
        jti: issue.id,
        job_id: last.job_id.clone(),
        node: issue.node,
        attribution: last.attribution,
        period: Period {
            start: first.start,
            end: last.end,
            measured_seconds: windows.iter().map(WindowClaims::duration_seconds).sum(),
        },
        energy: EnergyTotals {
            consumed_wh: consumed_energy(by_source.iter().map(|s| (s.kind, s.energy_wh))),
            solar_wh,
            grid_wh,
            by_source,
        },
        intensity: IntensityUsed {
            zone: zone.name.clone(),
            g_co2e_per_kwh: mean_intensity,
            provenance,
            hourly,
        },
        emissions: Emissions {
            location_based_kg_co2e: emissions,
        },
        reward: credits.reward(avoided),
        avoided_emissions: AvoidedEmissions { kg_co2e: avoided },
        windows: WindowRange {
            first_seq: first.seq,
            last_seq: last.seq,
            count: windows.len() as u64,
            last_hash: issue.last_hash,
        },
    })
}

/// Grid-energy-weighted mean intensity over the hours (the plain mean when no grid energy was
/// drawn). When every hour has the same figure, that figure exactly, so a yearly table value is
/// not blurred by floating-point division.
fn mean_intensity(hourly: &[HourlyIntensity], grid_wh: WattHours) -> GramsCo2ePerKwh {
    let first = hourly.first().map_or(0.0, |h| h.g_co2e_per_kwh.0);
    if hourly.iter().all(|h| h.g_co2e_per_kwh.0 == first) {
        return GramsCo2ePerKwh(first);
    }
    if grid_wh.0 > 0.0 {
        GramsCo2ePerKwh(
            hourly
                .iter()
                .map(|h| h.grid_wh.0 * h.g_co2e_per_kwh.0)
                .sum::<f64>()
                / grid_wh.0,
        )
    } else {
        GramsCo2ePerKwh(
            hourly.iter().map(|h| h.g_co2e_per_kwh.0).sum::<f64>() / hourly.len() as f64,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::carbon::StaticTable;
    use wattest_shared::window::{Attribution, SourceEnergy};
    use wattest_shared::{AttestationLevel, Eur, Watts};

    fn resolve(
        table: &StaticTable,
        zone: &GridZone,
        windows: &[WindowClaims],
    ) -> BTreeMap<DateTime<Utc>, Intensity> {
        hours_of(windows)
            .into_iter()
            .filter_map(|h| table.intensity(zone, h).map(|i| (h, i)))
            .collect()
    }

    fn window(seq: u64, start: &str, seconds: i64, entries: &[(SourceKind, f64)]) -> WindowClaims {
        let start = DateTime::parse_from_rfc3339(start)
            .expect("t")
            .with_timezone(&Utc);
        WindowClaims {
            v: 1,
            node_id: "n".into(),
            job_id: Some("j".into()),
            seq,
            prev: None,
            start,
            end: start + Duration::seconds(seconds),
            attribution: Attribution::Machine,
            sources: entries
                .iter()
                .map(|(kind, wh)| SourceEnergy {
                    source: kind.as_str().into(),
                    kind: *kind,
                    method: if *kind == SourceKind::Solar {
                        Method::SolarDeclaredConstant
                    } else {
                        Method::EstimateCpuTdp
                    },
                    energy_wh: WattHours(*wh),
                    mean_w: Watts(wh * 3600.0 / seconds as f64),
                    max_w: Watts(wh * 3600.0 / seconds as f64),
                    samples: 1,
                    uncertainty_pct: 10.0,
                    shared_device: false,
                })
                .collect(),
            solar_wh: WattHours(
                entries
                    .iter()
                    .filter(|e| e.0 == SourceKind::Solar)
                    .map(|e| e.1)
                    .sum(),
            ),
            is_final: false,
        }
    }

    #[test]
    fn totals_reconcile_across_an_hour_boundary() {
        let table = StaticTable::embedded().expect("table");
        let zone = table.zone("BE").expect("zone");
        let windows = vec![
            window(
                1,
                "2026-11-23T09:59:30Z",
                60,
                &[
                    (SourceKind::Cpu, 10.0),
                    (SourceKind::Gpu, 20.0),
                    (SourceKind::Solar, 5.0),
                ],
            ),
            window(
                2,
                "2026-11-23T10:00:30Z",
                60,
                &[(SourceKind::Cpu, 1.0), (SourceKind::Solar, 4.0)],
            ),
        ];
        let node = CertifiedNode {
            id: "n".into(),
            name: "pi".into(),
            zone: "BE".into(),
            attestation_level: AttestationLevel::Software,
            kid: "k".into(),
        };
        let now = DateTime::parse_from_rfc3339("2026-11-23T11:00:00Z")
            .expect("t")
            .with_timezone(&Utc);
        let issue = Issue {
            id: "c".into(),
            issuer: "test",
            node,
            now,
            validity: Duration::days(1),
            last_hash: "h".into(),
        };
        let policy = CreditPolicy {
            price_per_tonne: Eur::parse("25").expect("p"),
            node_owner_share_pct: 70.0,
        };
        let intensities = resolve(&table, &zone, &windows);
        assert_eq!(intensities.len(), 2, "the windows span two clock hours");
        let c = build_claims(issue, &windows, &zone, &intensities, &policy).expect("claims");
        c.check_arithmetic().expect("reconciles");
        assert_eq!(c.energy.consumed_wh, WattHours(31.0));
        assert_eq!(c.energy.solar_wh, WattHours(9.0));
        // Window 1: grid 25 Wh; window 2: max(0, 1 − 4) = 0.
        assert!((c.energy.grid_wh.0 - 25.0).abs() < 1e-9);
        assert_eq!(c.intensity.hourly.len(), 2);
        assert!((c.intensity.hourly[0].grid_wh.0 - 12.5).abs() < 1e-9);
        // 25 Wh × 117.58 g/kWh = 2.9395 g.
        assert!((c.emissions.location_based_kg_co2e.0 - 0.0029395).abs() < 1e-12);
        assert!((c.avoided_emissions.kg_co2e.0 - 9.0 / 1000.0 * 117.58 / 1000.0).abs() < 1e-12);
        assert_eq!(
            (c.windows.first_seq, c.windows.last_seq, c.windows.count),
            (1, 2, 2)
        );
        assert!(
            build_claims(
                Issue {
                    id: "c".into(),
                    issuer: "t",
                    node: c.node.clone(),
                    now,
                    validity: Duration::days(1),
                    last_hash: "h".into()
                },
                &[],
                &zone,
                &intensities,
                &policy
            )
            .is_err()
        );
    }
}
