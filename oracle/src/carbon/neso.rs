//! UK NESO Carbon Intensity API client (no key; CC BY 4.0): half-hourly figures, national
//! (`/intensity/{from}/{to}`) or regional (`/regional/intensity/{from}/{to}/regionid/{id}`).
//!
//! An hour's figure is the mean of its two half-hours. National half-hours carry `actual`
//! (may be null: the `forecast` is used and the figure marked estimated); regional ones carry
//! only a forecast (always estimated). NESO counts direct (operational) emissions of generation.

use super::{GridZone, Intensity, IntensityProvider, ProviderError};
use chrono::{DateTime, Datelike, Duration, Utc};
use futures::future::BoxFuture;
use serde::Deserialize;
use std::collections::BTreeMap;
use wattest_shared::GramsCo2ePerKwh;
use wattest_shared::certificate::Provenance;

/// Public base URL of the API.
pub const DEFAULT_BASE_URL: &str = "https://api.carbonintensity.org.uk";

/// Attribution of the dataset (CC BY 4.0).
pub const DATASET: &str = "National Energy System Operator, Carbon Intensity API";

/// Where the source is described.
pub const SOURCE_URL: &str = "https://carbonintensity.org.uk";

#[derive(Debug, Deserialize)]
struct Figures {
    forecast: Option<f64>,
    #[serde(default)]
    actual: Option<f64>,
}

#[derive(Debug, Deserialize)]
struct HalfHour {
    from: String,
    intensity: Figures,
}

#[derive(Debug, Deserialize)]
struct National {
    data: Vec<HalfHour>,
}

#[derive(Debug, Deserialize)]
struct RegionData {
    data: Vec<HalfHour>,
}

#[derive(Debug, Deserialize)]
struct Regional {
    data: RegionData,
}

/// NESO times are `2025-06-01T10:00Z` (no seconds).
fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .ok()
        .or_else(|| {
            chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%MZ")
                .ok()
                .map(|n| n.and_utc().fixed_offset())
        })
        .map(|d| d.with_timezone(&Utc))
}

fn fmt_time(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%MZ").to_string()
}

/// The NESO provider.
#[derive(Debug)]
pub struct Neso {
    name: String,
    base_url: String,
    /// Grid zone → NESO region id (1–17); zones not listed use the national figure.
    regions: BTreeMap<String, u32>,
    client: reqwest::Client,
}

impl Neso {
    /// A client of `base_url` with the zone → region id map.
    #[must_use]
    pub fn new(
        name: String,
        base_url: String,
        regions: BTreeMap<String, u32>,
        client: reqwest::Client,
    ) -> Self {
        Self {
            name,
            base_url: base_url.trim_end_matches('/').to_owned(),
            regions,
            client,
        }
    }

    async fn fetch(
        &self,
        zone: &GridZone,
        hour: DateTime<Utc>,
    ) -> Result<Intensity, ProviderError> {
        if !zone.name.starts_with("GB") {
            return Err(ProviderError::ZoneNotCovered(zone.name.clone()));
        }
        let (from, to) = (fmt_time(hour), fmt_time(hour + Duration::hours(1)));
        let region = self.regions.get(&zone.name).copied();
        let halves = match region {
            Some(id) => {
                let url = format!(
                    "{}/regional/intensity/{from}/{to}/regionid/{id}",
                    self.base_url
                );
                super::get_json::<Regional>(self.client.get(url))
                    .await?
                    .data
                    .data
            }
            None => {
                let url = format!("{}/intensity/{from}/{to}", self.base_url);
                super::get_json::<National>(self.client.get(url))
                    .await?
                    .data
            }
        };
        let mut sum = 0.0;
        let mut estimated = region.is_some();
        let mut seen = [false; 2];
        for half in &halves {
            let Some(start) = parse_time(&half.from) else {
                return Err(ProviderError::Malformed(format!(
                    "bad time {:?}",
                    half.from
                )));
            };
            let slot = (start - hour).num_minutes();
            let idx = match slot {
                0 => 0,
                30 => 1,
                _ => continue,
            };
            if seen[idx] {
                continue;
            }
            let value = match (half.intensity.actual, half.intensity.forecast) {
                (Some(actual), _) if region.is_none() => actual,
                (_, Some(forecast)) => {
                    estimated = true;
                    forecast
                }
                _ => continue,
            };
            sum += super::checked_value(value)?;
            seen[idx] = true;
        }
        if !seen.iter().all(|s| *s) {
            return Err(ProviderError::MissingHour {
                zone: zone.name.clone(),
                hour,
            });
        }
        let scope = region.map_or_else(|| "national".to_owned(), |id| format!("region {id}"));
        Ok(Intensity {
            value: GramsCo2ePerKwh(sum / 2.0),
            provenance: Provenance {
                provider: self.name.clone(),
                dataset: format!(
                    "{DATASET} (CC BY 4.0), {scope}, mean of two half-hours from {from}"
                ),
                year: hour.year(),
                factor_type: "direct".into(),
                estimated,
                marginal: false,
                fallback_reason: None,
            },
        })
    }
}

impl IntensityProvider for Neso {
    fn name(&self) -> &str {
        &self.name
    }

    fn info(&self) -> super::ProviderInfo {
        super::ProviderInfo {
            name: self.name.clone(),
            kind: "neso".into(),
            live: true,
            attribution: DATASET.into(),
            licence: "CC BY 4.0".into(),
            url: Some(SOURCE_URL.into()),
            factor_types: vec![super::FactorType::Direct],
            marginal: false,
            granularity: "half-hourly".into(),
        }
    }

    fn intensity<'a>(
        &'a self,
        zone: &'a GridZone,
        hour: DateTime<Utc>,
        _now: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<Intensity, ProviderError>> {
        Box::pin(self.fetch(zone, hour))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::carbon::{StaticTable, http_client, mock};
    use axum::Router;
    use axum::extract::Path;
    use axum::http::StatusCode;
    use axum::response::IntoResponse;
    use axum::routing::get;

    fn half(from: &str, to: &str, forecast: &str, actual: &str) -> String {
        format!(
            r#"{{"from":"{from}","to":"{to}","intensity":{{"forecast":{forecast},"actual":{actual},"index":"moderate"}}}}"#
        )
    }

    async fn national(Path((from, _to)): Path<(String, String)>) -> axum::response::Response {
        match from.as_str() {
            "2025-06-01T10:00Z" => format!(
                r#"{{"data":[{},{}]}}"#,
                half("2025-06-01T10:00Z", "2025-06-01T10:30Z", "146", "149"),
                half("2025-06-01T10:30Z", "2025-06-01T11:00Z", "150", "151")
            )
            .into_response(),
            "2025-06-01T11:00Z" => format!(
                r#"{{"data":[{},{}]}}"#,
                half("2025-06-01T11:00Z", "2025-06-01T11:30Z", "140", "null"),
                half("2025-06-01T11:30Z", "2025-06-01T12:00Z", "142", "144")
            )
            .into_response(),
            "2025-06-01T12:00Z" => format!(
                r#"{{"data":[{}]}}"#,
                half("2025-06-01T12:00Z", "2025-06-01T12:30Z", "140", "141")
            )
            .into_response(),
            "2025-06-01T13:00Z" => {
                (StatusCode::TOO_MANY_REQUESTS, [("retry-after", "7")], "").into_response()
            }
            "2025-06-01T14:00Z" => (StatusCode::INTERNAL_SERVER_ERROR, "oops").into_response(),
            _ => r#"{"data":"nope"}"#.into_response(),
        }
    }

    async fn regional(Path((from, _to, id)): Path<(String, String, u32)>) -> String {
        assert_eq!(id, 1);
        format!(
            r#"{{"data":{{"regionid":1,"dnoregion":"Scottish Hydro Electric Power Distribution","shortname":"North Scotland","data":[{},{}]}}}}"#,
            half(&from, "x", "20", "null").replace(r#","actual":null"#, ""),
            half(&from.replace(":00Z", ":30Z"), "y", "30", "null").replace(r#","actual":null"#, ""),
        )
    }

    #[tokio::test]
    async fn national_and_regional_half_hours_make_an_hour_with_forecasts_marked_estimated() {
        let base = mock::serve(
            Router::new()
                .route("/intensity/{from}/{to}", get(national))
                .route(
                    "/regional/intensity/{from}/{to}/regionid/{id}",
                    get(regional),
                ),
        )
        .await;
        let client = http_client(std::time::Duration::from_secs(5)).expect("client");
        let neso = Neso::new(
            "neso".into(),
            base,
            BTreeMap::from([("GB-NSCOT".to_owned(), 1)]),
            client,
        );
        let table = StaticTable::embedded().expect("t");
        let gb = table.zone("GB").expect("gb");
        let now: DateTime<Utc> = "2025-06-03T00:00:00Z".parse().expect("now");
        let h = |s: &str| s.parse::<DateTime<Utc>>().expect("hour");

        let actual = neso
            .intensity(&gb, h("2025-06-01T10:00:00Z"), now)
            .await
            .expect("actual");
        assert_eq!(actual.value.0, 150.0);
        assert!(!actual.provenance.estimated);
        assert_eq!(actual.provenance.factor_type, "direct");

        let mixed = neso
            .intensity(&gb, h("2025-06-01T11:00:00Z"), now)
            .await
            .expect("forecast");
        assert_eq!(mixed.value.0, 142.0);
        assert!(
            mixed.provenance.estimated,
            "a null actual means the forecast was used"
        );

        let missing = neso
            .intensity(&gb, h("2025-06-01T12:00:00Z"), now)
            .await
            .expect_err("half missing");
        assert!(
            matches!(missing, ProviderError::MissingHour { .. }),
            "{missing}"
        );
        assert_eq!(
            neso.intensity(&gb, h("2025-06-01T13:00:00Z"), now)
                .await
                .expect_err("429"),
            ProviderError::RateLimited(Some(7))
        );
        assert_eq!(
            neso.intensity(&gb, h("2025-06-01T14:00:00Z"), now)
                .await
                .expect_err("500"),
            ProviderError::Status(500)
        );
        let bad = neso
            .intensity(&gb, h("2025-06-01T15:00:00Z"), now)
            .await
            .expect_err("malformed");
        assert!(matches!(bad, ProviderError::Malformed(_)), "{bad}");

        let scot = table.zone("GB-NSCOT").expect("sub-zone");
        let regional = neso
            .intensity(&scot, h("2025-06-01T10:00:00Z"), now)
            .await
            .expect("regional");
        assert_eq!(regional.value.0, 25.0);
        assert!(regional.provenance.estimated);
        assert!(regional.provenance.dataset.contains("region 1"));

        let be = table.zone("BE").expect("be");
        assert!(matches!(
            neso.intensity(&be, h("2025-06-01T10:00:00Z"), now).await,
            Err(ProviderError::ZoneNotCovered(_))
        ));
    }
}
