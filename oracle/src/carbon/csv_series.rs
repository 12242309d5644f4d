//! An operator's CSV time series of carbon intensity: `zone,start,end,g_co2e_per_kwh,factor_type,source`
//! (RFC 3339 times, half-open `[start, end)`, spans of one zone disjoint), loaded once at
//! start-up. An hour's figure is that of the span containing the hour's start.

use super::{FactorType, GridZone, Intensity, IntensityProvider, ProviderError, StaticTable};
use chrono::{DateTime, Datelike, Utc};
use futures::future::BoxFuture;
use serde::Deserialize;
use std::collections::BTreeMap;
use wattest_shared::GramsCo2ePerKwh;
use wattest_shared::certificate::Provenance;

#[derive(Debug, Deserialize)]
struct Row {
    zone: String,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    g_co2e_per_kwh: f64,
    factor_type: FactorType,
    source: String,
}

#[derive(Debug, Clone)]
struct Span {
    end: DateTime<Utc>,
    value: f64,
    factor_type: FactorType,
    source: String,
    /// Line of the file it came from (the header is line 1), for error messages.
    line: usize,
}

/// The CSV provider: per canonical zone name, spans keyed by start, none overlapping.
#[derive(Debug)]
pub struct CsvSeries {
    name: String,
    spans: BTreeMap<String, BTreeMap<DateTime<Utc>, Span>>,
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
}

impl CsvSeries {
    /// Parses `text` (with its header line). Each row's zone is checked against `table` and
    /// stored under its canonical name ([`StaticTable::zone`]: `bel`, `BEL` and `BE` are one
    /// zone), the name the chain looks it up by.
    ///
    /// # Errors
    /// The first bad row, by line number: a parse error, an unknown zone, `end <= start`, a
    /// negative or non-finite value, or a span that repeats the start of, or overlaps, an
    /// earlier row's span of the same zone (the message names both lines): an hour must have
    /// one figure, never whichever row came last.
    pub fn parse(name: String, text: &str, table: &StaticTable) -> Result<Self, String> {
        let mut spans: BTreeMap<String, BTreeMap<DateTime<Utc>, Span>> = BTreeMap::new();
        let mut reader = csv::ReaderBuilder::new()
            .trim(csv::Trim::All)
            .from_reader(text.as_bytes());
        for (i, row) in reader.deserialize::<Row>().enumerate() {
            let line = i + 2;
            let row = row.map_err(|err| format!("line {line}: {err}"))?;
            let zone = table
                .zone(&row.zone)
                .map_err(|err| format!("line {line}: {err}"))?
                .name;
            if row.end <= row.start {
                return Err(format!("line {line}: end is not after start"));
            }
            super::checked_value(row.g_co2e_per_kwh)
                .map_err(|err| format!("line {line}: {err}"))?;
            let zone_spans = spans.entry(zone.clone()).or_default();
            // Spans are disjoint, so only the last one starting at or before this start and the
            // first one starting after it can overlap [start, end).
            let before = zone_spans
                .range(..=row.start)
                .next_back()
                .filter(|(_, s)| s.end > row.start);
            let after = zone_spans
                .range(row.start..)
                .find(|(start, _)| **start > row.start)
                .filter(|(start, _)| **start < row.end);
            if let Some((start, other)) = before.or(after) {
                let what = if *start == row.start {
                    "repeats the start of"
                } else {
                    "overlaps"
                };
                return Err(format!(
                    "line {line}: span [{}, {}) of zone {zone} {what} line {}'s [{}, {})",
                    rfc3339(row.start),
                    rfc3339(row.end),
                    other.line,
                    rfc3339(*start),
                    rfc3339(other.end),
                ));
            }
            zone_spans.insert(
                row.start,
                Span {
                    end: row.end,
                    value: row.g_co2e_per_kwh,
                    factor_type: row.factor_type,
                    source: row.source,
                    line,
                },
            );
        }
        Ok(Self { name, spans })
    }
}

impl IntensityProvider for CsvSeries {
    fn name(&self) -> &str {
        &self.name
    }

    fn info(&self) -> super::ProviderInfo {
        let spans = || self.spans.values().flat_map(BTreeMap::values);
        let sources: std::collections::BTreeSet<&str> =
            spans().map(|s| s.source.as_str()).collect();
        let factor_types: std::collections::BTreeSet<FactorType> =
            spans().map(|s| s.factor_type).collect();
        super::ProviderInfo {
            name: self.name.clone(),
            kind: "csv".into(),
            live: false,
            attribution: sources.into_iter().collect::<Vec<_>>().join("; "),
            licence: "as stated by the operator for each series".into(),
            url: None,
            factor_types: factor_types.into_iter().collect(),
            marginal: false,
            granularity: "as in the series".into(),
        }
    }

    fn intensity<'a>(
        &'a self,
        zone: &'a GridZone,
        hour: DateTime<Utc>,
        _now: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<Intensity, ProviderError>> {
        let found = self
            .spans
            .get(&zone.name)
            .ok_or_else(|| ProviderError::ZoneNotCovered(zone.name.clone()))
            .and_then(|spans| {
                spans
                    .range(..=hour)
                    .next_back()
                    .filter(|(_, s)| s.end > hour)
                    .ok_or_else(|| ProviderError::MissingHour {
                        zone: zone.name.clone(),
                        hour,
                    })
            })
            .map(|(start, s)| Intensity {
                value: GramsCo2ePerKwh(s.value),
                provenance: Provenance {
                    provider: self.name.clone(),
                    dataset: format!("{} (operator CSV, span from {})", s.source, rfc3339(*start)),
                    year: hour.year(),
                    factor_type: s.factor_type.as_str().into(),
                    // A span longer than the hour (a monthly or yearly factor) applied to one hour
                    // is an estimate of that hour's intensity, not its measurement.
                    estimated: s.end - *start > chrono::Duration::hours(1),
                    marginal: false,
                    fallback_reason: None,
                },
            });
        Box::pin(async move { found })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: &str = "zone,start,end,g_co2e_per_kwh,factor_type,source\n";

    #[tokio::test]
    async fn spans_cover_their_hours_only_and_bad_rows_are_refused() {
        let table = StaticTable::embedded().expect("t");
        let csv = format!(
            "{HEADER}BE,2025-06-01T10:00:00Z,2025-06-01T12:00:00Z,99.5,direct,Elia 2025\n\
             bel,2025-06-01T12:00:00Z,2025-06-01T13:00:00Z,0,lifecycle,Elia 2025\n"
        );
        let series = CsvSeries::parse("ops".into(), &csv, &table).expect("csv");
        let zone = table.zone("BE").expect("zone");
        let now = Utc::now();
        let h = |s: &str| s.parse::<DateTime<Utc>>().expect("hour");
        let i = series
            .intensity(&zone, h("2025-06-01T11:00:00Z"), now)
            .await
            .expect("in span");
        assert_eq!(i.value.0, 99.5);
        assert_eq!(i.provenance.factor_type, "direct");
        // The span's start in RFC 3339, as every other time in provenance.
        assert_eq!(
            i.provenance.dataset,
            "Elia 2025 (operator CSV, span from 2025-06-01T10:00:00Z)"
        );
        // A `bel` row is a row of zone `BE`.
        let zero = series
            .intensity(&zone, h("2025-06-01T12:00:00Z"), now)
            .await
            .expect("zero is a figure");
        assert_eq!(zero.value.0, 0.0);
        assert!(matches!(
            series
                .intensity(&zone, h("2025-06-01T13:00:00Z"), now)
                .await,
            Err(ProviderError::MissingHour { .. })
        ));
        for bad in [
            "BE,2025-06-01T10:00:00Z,2025-06-01T10:00:00Z,1,direct,x\n",
            "BE,2025-06-01T10:00:00Z,2025-06-01T11:00:00Z,-1,direct,x\n",
            "BE,2025-06-01T10:00:00Z,2025-06-01T11:00:00Z,1,average,x\n",
            "BE,yesterday,2025-06-01T11:00:00Z,1,direct,x\n",
            "Atlantis,2025-06-01T10:00:00Z,2025-06-01T11:00:00Z,1,direct,x\n",
        ] {
            let err =
                CsvSeries::parse("ops".into(), &format!("{HEADER}{bad}"), &table).expect_err(bad);
            assert!(err.starts_with("line 2:"), "{err}");
        }
    }

    #[tokio::test]
    async fn overlapping_or_repeated_spans_of_a_zone_are_refused_naming_both_lines() {
        let table = StaticTable::embedded().expect("t");
        let first = "BE,2025-06-01T10:00:00Z,2025-06-01T12:00:00Z,100,direct,x\n";
        for (second, want) in [
            (
                "BE,2025-06-01T10:00:00Z,2025-06-01T11:00:00Z,50,direct,x\n",
                "line 3: span [2025-06-01T10:00:00Z, 2025-06-01T11:00:00Z) of zone BE repeats the start of line 2's [2025-06-01T10:00:00Z, 2025-06-01T12:00:00Z)",
            ),
            // Starts inside the earlier span (a lookup of 11:00 would have found this one, then
            // reported a covered hour as missing after it).
            (
                "BE,2025-06-01T09:00:00Z,2025-06-01T10:30:00Z,50,direct,x\n",
                "line 3: span [2025-06-01T09:00:00Z, 2025-06-01T10:30:00Z) of zone BE overlaps line 2's",
            ),
            (
                "BEL,2025-06-01T11:00:00Z,2025-06-01T11:30:00Z,50,direct,x\n",
                "line 3: span [2025-06-01T11:00:00Z, 2025-06-01T11:30:00Z) of zone BE overlaps line 2's",
            ),
            (
                "be,2025-06-01T09:00:00Z,2025-06-01T13:00:00Z,50,direct,x\n",
                "line 3: span [2025-06-01T09:00:00Z, 2025-06-01T13:00:00Z) of zone BE overlaps line 2's",
            ),
        ] {
            let err = CsvSeries::parse("ops".into(), &format!("{HEADER}{first}{second}"), &table)
                .expect_err(second);
            assert!(err.starts_with(want), "{err}");
        }
        // Adjacent spans (half-open) and other zones' spans do not overlap, in any row order.
        let ok = format!(
            "{HEADER}BE,2025-06-01T12:00:00Z,2025-06-01T13:00:00Z,3,direct,x\n\
             FR,2025-06-01T10:00:00Z,2025-06-01T13:00:00Z,2,direct,x\n\
             {first}\
             BE,2025-06-01T09:00:00Z,2025-06-01T10:00:00Z,1,direct,x\n"
        );
        let series = CsvSeries::parse("ops".into(), &ok, &table).expect("disjoint");
        let be = table.zone("BE").expect("zone");
        let now = Utc::now();
        for (hour, want) in [
            ("2025-06-01T09:00:00Z", 1.0),
            ("2025-06-01T10:00:00Z", 100.0),
            ("2025-06-01T11:00:00Z", 100.0),
            ("2025-06-01T12:00:00Z", 3.0),
        ] {
            let i = series
                .intensity(&be, hour.parse().expect("hour"), now)
                .await
                .expect(hour);
            assert_eq!(i.value.0, want, "{hour}");
        }
    }

    #[tokio::test]
    async fn a_span_longer_than_an_hour_is_an_estimate_for_the_hour() {
        let table = StaticTable::embedded().expect("t");
        let csv = format!(
            "{HEADER}BE,2025-06-01T10:00:00Z,2025-06-01T11:00:00Z,90,direct,Elia hourly\n\
             BE,2025-07-01T00:00:00Z,2025-08-01T00:00:00Z,120,direct,Elia monthly\n\
             BE,2026-01-01T00:00:00Z,2027-01-01T00:00:00Z,150,lifecycle,Ember yearly\n"
        );
        let series = CsvSeries::parse("ops".into(), &csv, &table).expect("csv");
        let zone = table.zone("BE").expect("zone");
        let now = Utc::now();
        let h = |s: &str| s.parse::<DateTime<Utc>>().expect("hour");
        for (hour, value, estimated) in [
            ("2025-06-01T10:00:00Z", 90.0, false),
            ("2025-07-15T13:00:00Z", 120.0, true),
            ("2026-03-02T08:00:00Z", 150.0, true),
        ] {
            let i = series
                .intensity(&zone, h(hour), now)
                .await
                .expect("in span");
            assert_eq!(i.value.0, value, "{hour}");
            assert_eq!(i.provenance.estimated, estimated, "{hour}");
        }
    }
}
