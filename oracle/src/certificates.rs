//! Energy certificates: the attestation result for a job, built from its verified windows and
//! signed by the oracle key.
//!
//! [`build_claims`] is pure: it takes the windows, the intensity lookup, the credit policy and
//! `now`, and returns claims whose totals reconcile exactly as
//! [`wattest_shared::CertificateClaims::check_arithmetic`] recomputes them.

use crate::carbon::{GridZone, Intensity};
use crate::credits::CreditPolicy;
use chrono::{DateTime, Duration, TimeDelta, Utc};
use std::collections::BTreeMap;
use wattest_shared::certificate::{
    AvoidedEmissions, CALCULATION_VERSION, CertificateClaims, CertifiedNode, EAT_PROFILE,
    EarStatus, Emissions, EnergyTotals, HourlyIntensity, IntensityUsed, Period, SourceTotal,
    WindowRange, emissions_g, split_by_weights,
};
use wattest_shared::window::{Method, SourceKind, WindowClaims, consumed_energy};
use wattest_shared::{AttestationLevel, Decimal6};

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
    /// Model id named by the agent, if any.
    pub model_id: Option<String>,
    /// Plausibility flags raised on the windows (each caps the status at `warning`).
    pub plausibility: Vec<String>,
    /// Why the node is flagged (e.g. it signed two windows for one seq): `contraindicated`.
    pub node_flag: Option<String>,
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

/// A job's windows as [`build_claims`] needs them, folded one window at a time in seq order
/// ([`JobWindows::add`]): the first window's start and seq, the last window, the count and
/// measured time, per-source totals, the hourly split of grid and solar energy, and the
/// plausibility flags. Its size grows with the job's sources and clock hours, not with its
/// windows, so a job of weeks of windows is certified without holding them all.
#[derive(Debug, Clone, Default)]
pub struct JobWindows {
    /// The first window's start and seq.
    first: Option<(DateTime<Utc>, u64)>,
    /// The last window added (the final one once the job is complete).
    last: Option<WindowClaims>,
    count: u64,
    /// Σ window lengths, ms.
    measured_ms: i64,
    /// Per (source, kind, method): energy, Σ energy × uncertainty %, shared device.
    by_source: BTreeMap<(String, SourceKind, Method), (Decimal6, f64, bool)>,
    /// Per clock hour: grid and solar energy.
    hours: BTreeMap<DateTime<Utc>, (Decimal6, Decimal6)>,
    plausibility: Vec<String>,
}

impl JobWindows {
    /// Folds in `w`, the job's next window by seq.
    ///
    /// Each window's per-source energy is rounded to the µWh; its grid energy is
    /// max(0, consumed − solar) ([`consumed_energy`]), and its grid and solar energy are split
    /// across the clock hours it overlaps in proportion to time ([`split_by_hour`]).
    pub fn add(&mut self, w: WindowClaims) {
        let wh = |x: f64| Decimal6::from_f64(x).unwrap_or(Decimal6::ZERO);
        for s in &w.sources {
            let entry = self
                .by_source
                .entry((s.source.clone(), s.kind, s.method))
                .or_insert((Decimal6::ZERO, 0.0, false));
            entry.0 += wh(s.energy_wh.0);
            entry.1 += s.energy_wh.0 * s.uncertainty_pct;
            entry.2 |= s.shared_device;
        }
        let consumed = consumed_energy(w.sources.iter().map(|s| (s.kind, wh(s.energy_wh.0))));
        let solar: Decimal6 = w
            .sources
            .iter()
            .filter(|s| s.kind == SourceKind::Solar)
            .map(|s| wh(s.energy_wh.0))
            .sum();
        let grid = (consumed - solar).clamp_non_negative();
        let grid_parts = split_by_hour(grid, w.start, w.end);
        let solar_parts = split_by_hour(solar, w.start, w.end);
        for ((hour, g), (_, s)) in grid_parts.into_iter().zip(solar_parts) {
            let slot = self
                .hours
                .entry(hour)
                .or_insert((Decimal6::ZERO, Decimal6::ZERO));
            slot.0 += g;
            slot.1 += s;
        }
        self.measured_ms += (w.end - w.start).num_milliseconds().max(0);
        crate::plausibility::add_flags(&w, &mut self.plausibility);
        self.count += 1;
        self.first.get_or_insert((w.start, w.seq));
        self.last = Some(w);
    }

    /// How many windows were added.
    #[must_use]
    pub fn count(&self) -> u64 {
        self.count
    }

    /// The clock hours (UTC, truncated) the windows overlap, ascending: the hours whose carbon
    /// intensity [`build_claims`] needs (those of [`hour_slots`]).
    pub fn hours(&self) -> impl Iterator<Item = DateTime<Utc>> + '_ {
        self.hours.keys().copied()
    }

    /// The plausibility flags the windows raise ([`crate::plausibility::flags`]).
    #[must_use]
    pub fn plausibility(&self) -> &[String] {
        &self.plausibility
    }
}

impl FromIterator<WindowClaims> for JobWindows {
    fn from_iter<I: IntoIterator<Item = WindowClaims>>(windows: I) -> Self {
        let mut job = Self::default();
        for w in windows {
            job.add(w);
        }
        job
    }
}

/// The clock hours (UTC) that `[start, end)` overlaps, ascending, each with the milliseconds of
/// the interval that fall in it: the weights of [`split_by_hour`]. The weights add up to the
/// interval's length in whole milliseconds (sub-millisecond parts are dropped at each hour
/// boundary). An empty or reversed interval is one slot, its start hour with weight 1, so its
/// energy still lands somewhere (verification refuses such windows; this keeps the split total).
#[must_use]
pub fn hour_slots(start: DateTime<Utc>, end: DateTime<Utc>) -> Vec<(DateTime<Utc>, i64)> {
    let truncate = crate::carbon::hour_start;
    let mut slots = Vec::new();
    let mut cursor = start;
    while cursor < end {
        let hour = truncate(cursor);
        let next = (hour + TimeDelta::hours(1)).min(end);
        slots.push((hour, (next - cursor).num_milliseconds().max(0)));
        cursor = next;
    }
    if slots.is_empty() {
        slots.push((truncate(start), 1));
    }
    slots
}

/// Splits `energy` (any quantity in [`Decimal6`], here Wh) used over `[start, end)` across the
/// clock hours it overlaps in proportion to time (constant power assumed), by the largest
/// remainder method ([`split_by_weights`]): the parts add up to `energy` exactly, to the
/// millionth, and each part differs from its exact pro-rata share by less than one millionth.
#[must_use]
pub fn split_by_hour(
    energy: Decimal6,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
) -> Vec<(DateTime<Utc>, Decimal6)> {
    let slots = hour_slots(start, end);
    let weights: Vec<i64> = slots.iter().map(|s| s.1).collect();
    slots
        .into_iter()
        .map(|(hour, _)| hour)
        .zip(split_by_weights(energy, &weights))
        .collect()
}

/// Builds the claims for the job's windows, folded into `job` by seq (the last one final).
///
/// Exact arithmetic in millionths ([`Decimal6`]): each window's per-source energy is rounded to
/// the µWh; per window, grid = max(0, consumed − solar); each window's grid and solar energy is
/// split across the clock hours it overlaps in proportion to time (constant power within a
/// window; largest-remainder rounding, so the parts add up exactly), and each hour's energy is
/// multiplied by that hour's intensity ([`emissions_g`]). The folding is [`JobWindows::add`]. The status is `affirming` unless a
/// plausibility flag (`issue.plausibility`), a software key, a CPU-time × TDP estimate or
/// declared solar caps it at `warning`, or the node is flagged (`contraindicated`).
///
/// # Errors
/// [`CertificateBuildError`].
pub fn build_claims(
    issue: Issue<'_>,
    job: &JobWindows,
    zone: &GridZone,
    intensities: &BTreeMap<DateTime<Utc>, Intensity>,
    credits: &CreditPolicy,
) -> Result<CertificateClaims, CertificateBuildError> {
    let (Some((first_start, first_seq)), Some(last)) = (job.first, job.last.as_ref()) else {
        return Err(CertificateBuildError::NoWindows);
    };

    // Per-source totals with energy-weighted uncertainty.
    let by_source: Vec<SourceTotal> = job
        .by_source
        .iter()
        .map(
            |((source, kind, method), &(energy_wh, weighted, shared_device))| SourceTotal {
                uncertainty_pct: if energy_wh > Decimal6::ZERO {
                    Decimal6::from_f64(weighted / energy_wh.to_f64()).unwrap_or(Decimal6::ZERO)
                } else {
                    Decimal6::ZERO
                },
                source: source.clone(),
                kind: *kind,
                method: *method,
                energy_wh,
                shared_device,
            },
        )
        .collect();

    let hours = &job.hours;
    let mut hourly = Vec::with_capacity(hours.len());
    for (&hour, &(grid_wh, solar_wh)) in hours {
        let Intensity { value, provenance } =
            intensities
                .get(&hour)
                .cloned()
                .ok_or_else(|| CertificateBuildError::NoIntensity {
                    zone: zone.name.clone(),
                    hour,
                })?;
        let g = Decimal6::from_f64(value.0).unwrap_or(Decimal6::ZERO);
        hourly.push(HourlyIntensity {
            hour,
            g_co2e_per_kwh: g,
            grid_wh,
            solar_wh,
            emissions_g: emissions_g(grid_wh, g),
            avoided_g: emissions_g(solar_wh, g),
            provenance,
        });
    }
    let factor_type = hourly
        .first()
        .map(|h| h.provenance.factor_type.clone())
        .ok_or(CertificateBuildError::NoWindows)?;

    let grid_wh: Decimal6 = hourly.iter().map(|h| h.grid_wh).sum();
    let solar_wh: Decimal6 = by_source
        .iter()
        .filter(|s| s.kind == SourceKind::Solar)
        .map(|s| s.energy_wh)
        .sum();
    let consumed_wh = consumed_energy(by_source.iter().map(|s| (s.kind, s.energy_wh)));
    // The windows' flags read their figures before rounding; the totals, each source rounded to
    // the µWh in each window, must not show more solar than consumption either (1 ms windows
    // whose consumption rounds to 0 µWh and whose solar rounds to 1).
    let mut plausibility = issue.plausibility;
    let solar_flag = crate::plausibility::SOLAR_ABOVE_CONSUMPTION;
    if crate::plausibility::solar_exceeds(solar_wh.to_f64(), consumed_wh.to_f64())
        && !plausibility.iter().any(|f| f == solar_flag)
    {
        plausibility.push(solar_flag.to_owned());
    }
    let emissions: Decimal6 = hourly.iter().map(|h| h.emissions_g).sum();
    let avoided: Decimal6 = hourly.iter().map(|h| h.avoided_g).sum();
    let mean_intensity = mean_intensity(&hourly, grid_wh, emissions);
    let measured_ms = job.measured_ms;

    // Status (EAR): the worst reason wins.
    let mut reasons = Vec::new();
    if let Some(flag) = &issue.node_flag {
        reasons.push(format!("node_flagged:{flag}"));
    }
    if issue.node.attestation_level == AttestationLevel::Software {
        reasons.push("software_key".to_owned());
    }
    if by_source.iter().any(|s| s.method == Method::EstimateCpuTdp) {
        reasons.push("estimated_energy".to_owned());
    }
    // Solar declared by the operator (a constant, not a measurement) earns a reward only as far
    // as the declaration is believed: the certificate says so.
    if by_source
        .iter()
        .any(|s| s.method == Method::SolarDeclaredConstant)
    {
        reasons.push("declared_solar".to_owned());
    }
    reasons.extend(plausibility.iter().map(|f| format!("plausibility:{f}")));
    // A flagged node (it signed two histories) and figures beyond what any device of their kind
    // draws (or solar above consumption, claiming avoided emissions for energy not used) are
    // evidence not to rely on: the figures stay on the certificate, its reward is not paid
    // (`/v1/balances` leaves `contraindicated` certificates out).
    let status = if issue.node_flag.is_some() || !plausibility.is_empty() {
        EarStatus::Contraindicated
    } else if reasons.is_empty() {
        EarStatus::Affirming
    } else {
        EarStatus::Warning
    };

    Ok(CertificateClaims {
        iss: issue.issuer.to_owned(),
        sub: issue.node.id.clone(),
        iat: issue.now.timestamp(),
        nbf: issue.now.timestamp(),
        exp: (issue.now + issue.validity).timestamp(),
        jti: issue.id,
        eat_profile: EAT_PROFILE.to_owned(),
        status,
        status_reasons: reasons,
        calculation_version: CALCULATION_VERSION.to_owned(),
        job_id: last.job_id.clone(),
        model_id: issue.model_id,
        grid_zone: zone.name.clone(),
        node: issue.node,
        attribution: last.attribution,
        period: Period {
            start: first_start,
            end: last.end,
            measured_seconds: Decimal6::from_millionths(measured_ms.saturating_mul(1000)),
        },
        energy: EnergyTotals {
            consumed_wh,
            solar_wh,
            grid_wh,
            by_source,
        },
        intensity: IntensityUsed {
            zone: zone.name.clone(),
            factor_type,
            g_co2e_per_kwh: mean_intensity,
            hourly,
        },
        emissions: Emissions {
            location_based_g_co2e: emissions,
        },
        reward: credits.reward(avoided),
        avoided_emissions: AvoidedEmissions { g_co2e: avoided },
        windows: WindowRange {
            first_seq,
            last_seq: last.seq,
            count: job.count,
            chain_head: issue.last_hash,
        },
        plausibility,
    })
}

/// Effective intensity: emissions ÷ grid energy (g ÷ kWh), to the 10⁻⁶ g/kWh; the plain mean of
/// the hours when no grid energy was drawn. When every hour has the same figure, that figure.
fn mean_intensity(
    hourly: &[HourlyIntensity],
    grid_wh: Decimal6,
    emissions_g: Decimal6,
) -> Decimal6 {
    let first = hourly.first().map_or(Decimal6::ZERO, |h| h.g_co2e_per_kwh);
    if hourly.iter().all(|h| h.g_co2e_per_kwh == first) {
        return first;
    }
    if grid_wh > Decimal6::ZERO {
        // g/kWh = g × 1000 / Wh; in millionths: em_µ × 1000 × 10⁶ / grid_µ.
        let n = i128::from(emissions_g.millionths()) * 1_000_000_000;
        let q = n / i128::from(grid_wh.millionths());
        Decimal6::from_millionths(i64::try_from(q).unwrap_or(i64::MAX))
    } else {
        let sum: i128 = hourly
            .iter()
            .map(|h| i128::from(h.g_co2e_per_kwh.millionths()))
            .sum();
        let n = i128::try_from(hourly.len()).unwrap_or(1).max(1);
        Decimal6::from_millionths(i64::try_from(sum / n).unwrap_or(i64::MAX))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::carbon::StaticTable;
    use wattest_shared::window::{Attribution, SourceEnergy};
    use wattest_shared::{Eur, WattHours, Watts};

    fn resolve(
        table: &StaticTable,
        zone: &GridZone,
        job: &JobWindows,
    ) -> BTreeMap<DateTime<Utc>, Intensity> {
        job.hours()
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
            model_id: None,
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

    /// The issue of a test certificate for a BE node with key protection `level`, at
    /// 2026-11-23T11:00:00Z, valid a day, no flags.
    fn test_issue(level: AttestationLevel) -> Issue<'static> {
        Issue {
            id: "c".into(),
            issuer: "test",
            node: CertifiedNode {
                id: "n".into(),
                name: "pi".into(),
                zone: "BE".into(),
                attestation_level: level,
                kid: "k".into(),
            },
            now: DateTime::parse_from_rfc3339("2026-11-23T11:00:00Z")
                .expect("t")
                .with_timezone(&Utc),
            validity: Duration::days(1),
            last_hash: "h".into(),
            model_id: None,
            plausibility: vec![],
            node_flag: None,
        }
    }

    /// 25 EUR per tonne, 70 % to the node owner, no per-kind rates.
    fn test_policy() -> CreditPolicy {
        CreditPolicy {
            price_per_tonne: Eur::parse("25").expect("p"),
            node_owner_share_pct: 70.0,
            source_rates: std::collections::BTreeMap::new(),
        }
    }

    /// Windows each within the 1 % solar tolerance before rounding (0.496 µWh of GPU, 0.5 µWh of
    /// solar) whose rounded totals show solar and no consumption: the certificate is flagged and
    /// contraindicated all the same.
    #[test]
    fn totals_showing_more_solar_than_consumption_flag_the_certificate() {
        let table = StaticTable::embedded().expect("table");
        let zone = table.zone("BE").expect("zone");
        let entries = [
            (SourceKind::Gpu, 0.000_000_496),
            (SourceKind::Solar, 0.000_000_5),
        ];
        let job: JobWindows = vec![
            window(1, "2026-11-23T09:00:00Z", 1, &entries),
            window(2, "2026-11-23T09:00:01Z", 1, &entries),
        ]
        .into_iter()
        .collect();
        let issue = test_issue(AttestationLevel::Tpm);
        let policy = test_policy();
        let intensities = resolve(&table, &zone, &job);
        let c = build_claims(issue, &job, &zone, &intensities, &policy).expect("claims");
        let d = |t: &str| Decimal6::parse(t).expect("decimal");
        assert_eq!(c.energy.consumed_wh, d("0"));
        assert_eq!(c.energy.solar_wh, d("0.000002"));
        assert_eq!(c.plausibility, ["solar_above_consumption"]);
        assert_eq!(c.status, EarStatus::Contraindicated);
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
        let issue = test_issue(AttestationLevel::Software);
        let now = issue.now;
        let policy = test_policy();
        let job: JobWindows = windows.into_iter().collect();
        let intensities = resolve(&table, &zone, &job);
        assert_eq!(intensities.len(), 2, "the windows span two clock hours");
        let c = build_claims(issue, &job, &zone, &intensities, &policy).expect("claims");
        c.check_arithmetic().expect("reconciles");
        let d = |t: &str| Decimal6::parse(t).expect("decimal");
        assert_eq!(c.energy.consumed_wh, d("31"));
        assert_eq!(c.energy.solar_wh, d("9"));
        // Window 1: grid 25 Wh; window 2: max(0, 1 − 4) = 0.
        assert_eq!(c.energy.grid_wh, d("25"));
        assert_eq!(c.intensity.hourly.len(), 2);
        assert_eq!(c.intensity.hourly[0].grid_wh, d("12.5"));
        // 25 Wh × 117.58 g/kWh = 2.9395 g.
        assert_eq!(c.emissions.location_based_g_co2e, d("2.9395"));
        // 9 Wh × 117.58 g/kWh = 1.05822 g.
        assert_eq!(c.avoided_emissions.g_co2e, d("1.05822"));
        assert_eq!(c.status, EarStatus::Warning);
        // The windows' solar is a declared constant: the certificate says so.
        assert_eq!(
            c.status_reasons,
            ["software_key", "estimated_energy", "declared_solar"]
        );
        assert_eq!(
            (c.windows.first_seq, c.windows.last_seq, c.windows.count),
            (1, 2, 2)
        );
        // Tampering with any figure breaks the exact reconciliation.
        let mut forged = c.clone();
        forged.emissions.location_based_g_co2e = d("2.939499");
        assert!(forged.check_arithmetic().is_err());
        let mut forged = c.clone();
        forged.intensity.hourly[1].grid_wh = d("12.500001");
        assert!(forged.check_arithmetic().is_err());
        // Signed, it verifies offline; a certificate of other calculation rules does not, as
        // its figures cannot be judged by these.
        let key = wattest_shared::SoftwareKey::generate(2048).expect("key");
        let jwks = wattest_shared::Jwks {
            keys: vec![wattest_shared::Jwk::Rsa(key.public_jwk().clone()).for_jwks()],
        };
        let sign = |claims: &CertificateClaims| {
            let payload = serde_json::to_vec(claims).expect("json");
            wattest_shared::jws::sign_compact(&key, wattest_shared::CERTIFICATE_TYP, &payload)
                .expect("sign")
        };
        wattest_shared::verify_certificate(&sign(&c), &jwks, now).expect("verifies");
        let mut other_rules = c.clone();
        other_rules.calculation_version = "1".into();
        let err = wattest_shared::verify_certificate(&sign(&other_rules), &jwks, now)
            .expect_err("other rules");
        assert!(err.to_string().contains("calculation_version"), "{err}");
        assert!(
            build_claims(
                Issue {
                    id: "c".into(),
                    issuer: "t",
                    node: c.node.clone(),
                    now,
                    validity: Duration::days(1),
                    last_hash: "h".into(),
                    model_id: None,
                    plausibility: vec![],
                    node_flag: None,
                },
                &JobWindows::default(),
                &zone,
                &intensities,
                &policy
            )
            .is_err()
        );
    }

    mod hour_split {
        use super::*;
        use proptest::prelude::*;

        const HOUR_MS: i64 = 3_600_000;

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(512))]

            /// Σ parts = the whole, exactly in µWh; every part belongs to an hour the interval
            /// overlaps, hours are consecutive clock hours, and each part is its pro-rata share
            /// rounded down or up (largest remainder), never more than 1 µWh off.
            #[test]
            fn parts_add_up_exactly_and_each_lies_in_its_hour(
                start_ms in 0i64..4_000_000_000_000,  // 1970 to 2096
                sub_ms_nanos in prop_oneof![Just(0u32), 0u32..1_000_000],
                length_ms in prop_oneof![1i64..HOUR_MS, 1i64..3 * 24 * HOUR_MS],
                energy_uwh in prop_oneof![0i64..1_000, 0i64..1_000_000_000_000_000],
            ) {
                let start = DateTime::from_timestamp_millis(start_ms).expect("in range")
                    + TimeDelta::nanoseconds(i64::from(sub_ms_nanos));
                let end = start + TimeDelta::milliseconds(length_ms);
                let energy = Decimal6::from_millionths(energy_uwh);
                let slots = hour_slots(start, end);
                let parts = split_by_hour(energy, start, end);

                prop_assert_eq!(parts.len(), slots.len());
                let total: i128 = parts.iter().map(|p| i128::from(p.1.millionths())).sum();
                prop_assert_eq!(total, i128::from(energy_uwh));

                let weight_sum: i64 = slots.iter().map(|s| s.1).sum();
                if sub_ms_nanos == 0 {
                    prop_assert_eq!(weight_sum, length_ms);
                } else {
                    // Each boundary may drop a sub-millisecond sliver.
                    prop_assert!(weight_sum <= length_ms && weight_sum + slots.len() as i64 >= length_ms);
                }
                for (i, ((hour, part), (slot_hour, weight))) in parts.iter().zip(&slots).enumerate() {
                    prop_assert_eq!(hour, slot_hour);
                    prop_assert_eq!(hour.timestamp().rem_euclid(3600), 0, "{} is on the hour", hour);
                    prop_assert_eq!(hour.timestamp_subsec_nanos(), 0);
                    // The hour overlaps [start, end), and the parts' hours are consecutive.
                    prop_assert!(*hour < end && *hour + TimeDelta::hours(1) > start);
                    if i > 0 {
                        prop_assert_eq!(*hour - parts[i - 1].0, TimeDelta::hours(1));
                    }
                    // The slot's time lies within its hour and within the interval.
                    let from = start.max(*hour);
                    let to = end.min(*hour + TimeDelta::hours(1));
                    prop_assert_eq!(*weight, (to - from).num_milliseconds());
                    prop_assert!((0..=HOUR_MS).contains(weight));
                    // Largest remainder: |part × Σw − energy × w| < Σw.
                    if weight_sum > 0 {
                        let exact = i128::from(energy_uwh) * i128::from(*weight);
                        let got = i128::from(part.millionths()) * i128::from(weight_sum);
                        prop_assert!((got - exact).abs() < i128::from(weight_sum), "part {} of {}", part, energy);
                    }
                    prop_assert!(part.millionths() >= 0);
                }
                prop_assert_eq!(parts.first().map(|p| p.0), Some(crate::carbon::hour_start(start)));
                prop_assert_eq!(
                    parts.last().map(|p| p.0),
                    Some(crate::carbon::hour_start(end - TimeDelta::nanoseconds(1)))
                );
            }
        }

        #[test]
        fn a_window_across_two_boundaries_splits_by_time() {
            let start: DateTime<Utc> = "2026-11-23T09:30:00Z".parse().expect("t");
            let end: DateTime<Utc> = "2026-11-23T11:15:00Z".parse().expect("t");
            let parts = split_by_hour(Decimal6::from_millionths(7_000_001), start, end);
            let got: Vec<(String, i64)> = parts
                .iter()
                .map(|(h, p)| (h.format("%H:%M").to_string(), p.millionths()))
                .collect();
            // 30, 60 and 15 minutes of 105: 2 000 000.28…, 4 000 000.57…, 1 000 000.14… µWh; the
            // leftover µWh goes to the largest remainder (the middle hour).
            assert_eq!(
                got,
                [
                    ("09:00".to_owned(), 2_000_000),
                    ("10:00".to_owned(), 4_000_001),
                    ("11:00".to_owned(), 1_000_000)
                ]
            );
            // Empty interval: the whole energy in the start hour.
            assert_eq!(
                split_by_hour(Decimal6::from_millionths(5), start, start),
                [(
                    crate::carbon::hour_start(start),
                    Decimal6::from_millionths(5)
                )]
            );
        }
    }
}
