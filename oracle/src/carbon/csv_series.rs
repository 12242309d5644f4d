//! An operator's CSV time series of carbon intensity: `zone,start,end,g_co2e_per_kwh,factor_type,source`
//! (RFC 3339 times, half-open `[start, end)`), loaded once at start-up.

use super::{FactorType, GridZone, Intensity, IntensityProvider, ProviderError};
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
}

/// The CSV provider: per zone, spans keyed by start.
#[derive(Debug)]
pub struct CsvSeries {
    name: String,
    spans: BTreeMap<String, BTreeMap<DateTime<Utc>, Span>>,
}

impl CsvSeries {
    /// Parses `text` (with its header line).
    ///
    /// # Errors
    /// The first bad row, by line number: a parse error, `end <= start`, or a negative or
    /// non-finite value.
    pub fn parse(name: String, text: &str) -> Result<Self, String> {
        let mut spans: BTreeMap<String, BTreeMap<DateTime<Utc>, Span>> = BTreeMap::new();
        let mut reader = csv::ReaderBuilder::new()
            .trim(csv::Trim::All)
            .from_reader(text.as_bytes());
        for (i, row) in reader.deserialize::<Row>().enumerate() {
            let line = i + 2;
            let row = row.map_err(|err| format!("line {line}: {err}"))?;
            if row.end <= row.start {
                return Err(format!("line {line}: end is not after start"));
            }
            super::checked_value(row.g_co2e_per_kwh)
                .map_err(|err| format!("line {line}: {err}"))?;
            spans
                .entry(row.zone.to_ascii_uppercase())
                .or_default()
                .insert(
                    row.start,
                    Span {
                        end: row.end,
                        value: row.g_co2e_per_kwh,
                        factor_type: row.factor_type,
                        source: row.source,
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
            .get(&zone.name.to_ascii_uppercase())
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
                    dataset: format!("{} (operator CSV, span from {start})", s.source),
                    year: hour.year(),
                    factor_type: s.factor_type.as_str().into(),
                    estimated: false,
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
    use crate::carbon::StaticTable;

    #[tokio::test]
    async fn spans_cover_their_hours_only_and_bad_rows_are_refused() {
        let csv = "zone,start,end,g_co2e_per_kwh,factor_type,source\n\
                   BE,2025-06-01T10:00:00Z,2025-06-01T12:00:00Z,99.5,direct,Elia 2025\n\
                   be,2025-06-01T12:00:00Z,2025-06-01T13:00:00Z,0,lifecycle,Elia 2025\n";
        let series = CsvSeries::parse("ops".into(), csv).expect("csv");
        let zone = StaticTable::embedded()
            .expect("t")
            .zone("BE")
            .expect("zone");
        let now = Utc::now();
        let h = |s: &str| s.parse::<DateTime<Utc>>().expect("hour");
        let i = series
            .intensity(&zone, h("2025-06-01T11:00:00Z"), now)
            .await
            .expect("in span");
        assert_eq!(i.value.0, 99.5);
        assert_eq!(i.provenance.factor_type, "direct");
        assert!(i.provenance.dataset.starts_with("Elia 2025"));
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
            "zone,start,end,g_co2e_per_kwh,factor_type,source\nBE,2025-06-01T10:00:00Z,2025-06-01T10:00:00Z,1,direct,x\n",
            "zone,start,end,g_co2e_per_kwh,factor_type,source\nBE,2025-06-01T10:00:00Z,2025-06-01T11:00:00Z,-1,direct,x\n",
            "zone,start,end,g_co2e_per_kwh,factor_type,source\nBE,2025-06-01T10:00:00Z,2025-06-01T11:00:00Z,1,average,x\n",
            "zone,start,end,g_co2e_per_kwh,factor_type,source\nBE,yesterday,2025-06-01T11:00:00Z,1,direct,x\n",
        ] {
            let err = CsvSeries::parse("ops".into(), bad).expect_err(bad);
            assert!(err.starts_with("line 2:"), "{err}");
        }
    }
}
