//! Electricity Maps v3 client: hourly carbon intensity per zone (`auth-token` header).
//!
//! Endpoints (Electricity Maps API v3 documentation): `/v3/carbon-intensity/latest?zone=` for the
//! current hour, `/v3/carbon-intensity/history?zone=` for the last 24 hours,
//! `/v3/carbon-intensity/past-range?zone=&start=&end=` for older hours; every point is
//! `{"zone","carbonIntensity","datetime","emissionFactorType","isEstimated",…}` in gCO2e/kWh.
//! `emissionFactorType=direct|lifecycle` selects the factor type; a point's own
//! `emissionFactorType` is recorded in provenance, and a value other than those two is a
//! malformed response.

use super::{FactorType, GridZone, Intensity, IntensityProvider, ProviderError, hour_start};
use chrono::{DateTime, Datelike, Duration, Utc};
use futures::future::BoxFuture;
use serde::Deserialize;
use wattest_shared::GramsCo2ePerKwh;
use wattest_shared::certificate::Provenance;

/// Public base URL of the API.
pub const DEFAULT_BASE_URL: &str = "https://api.electricitymap.org";

/// Attribution of the figures (provenance `dataset` starts with it).
pub const ATTRIBUTION: &str = "Electricity Maps API v3";

/// Where the source is described.
pub const SOURCE_URL: &str = "https://www.electricitymaps.com";

/// One point as the API returns it.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Point {
    carbon_intensity: Option<f64>,
    datetime: DateTime<Utc>,
    /// `direct` or `lifecycle` (the JSON Schema of provenance allows no other value); anything
    /// else makes the body malformed.
    emission_factor_type: Option<FactorType>,
    #[serde(default)]
    is_estimated: Option<bool>,
}

#[derive(Debug, Deserialize)]
struct History {
    history: Vec<Point>,
}

#[derive(Debug, Deserialize)]
struct Range {
    data: Vec<Point>,
}

/// The Electricity Maps provider.
pub struct ElectricityMaps {
    name: String,
    base_url: String,
    api_key: String,
    factor_type: FactorType,
    client: reqwest::Client,
}

impl std::fmt::Debug for ElectricityMaps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The key is never printed.
        f.debug_struct("ElectricityMaps")
            .field("name", &self.name)
            .field("base_url", &self.base_url)
            .finish_non_exhaustive()
    }
}

impl ElectricityMaps {
    /// A client of `base_url` (no trailing slash) with `api_key`, asking for `factor_type`.
    #[must_use]
    pub fn new(
        name: String,
        base_url: String,
        api_key: String,
        factor_type: FactorType,
        client: reqwest::Client,
    ) -> Self {
        Self {
            name,
            base_url: base_url.trim_end_matches('/').to_owned(),
            api_key,
            factor_type,
            client,
        }
    }

    async fn fetch(
        &self,
        zone: &GridZone,
        hour: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<Intensity, ProviderError> {
        let factor = self.factor_type.as_str();
        let zone_q = [("zone", zone.name.as_str()), ("emissionFactorType", factor)];
        let current = hour_start(now);
        let points = if hour >= current {
            let url = format!("{}/v3/carbon-intensity/latest", self.base_url);
            let p: Point = super::get_json(
                self.client
                    .get(url)
                    .header("auth-token", &self.api_key)
                    .query(&zone_q),
            )
            .await?;
            vec![p]
        } else if hour >= current - Duration::hours(24) {
            let url = format!("{}/v3/carbon-intensity/history", self.base_url);
            let h: History = super::get_json(
                self.client
                    .get(url)
                    .header("auth-token", &self.api_key)
                    .query(&zone_q),
            )
            .await?;
            h.history
        } else {
            let url = format!("{}/v3/carbon-intensity/past-range", self.base_url);
            let start = hour.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
            let end =
                (hour + Duration::hours(1)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
            let r: Range = super::get_json(
                self.client
                    .get(url)
                    .header("auth-token", &self.api_key)
                    .query(&zone_q)
                    .query(&[("start", start.as_str()), ("end", end.as_str())]),
            )
            .await?;
            r.data
        };
        // "latest" answers for the current hour only; a past hour needs its own point.
        let point = points
            .into_iter()
            .find(|p| hour_start(p.datetime) == hour || hour >= current)
            .ok_or_else(|| ProviderError::MissingHour {
                zone: zone.name.clone(),
                hour,
            })?;
        let value = point
            .carbon_intensity
            .ok_or_else(|| ProviderError::MissingHour {
                zone: zone.name.clone(),
                hour,
            })?;
        let value = super::checked_value(value)?;
        let factor_type = point
            .emission_factor_type
            .unwrap_or(self.factor_type)
            .as_str()
            .to_owned();
        Ok(Intensity {
            value: GramsCo2ePerKwh(value),
            provenance: Provenance {
                provider: self.name.clone(),
                dataset: format!(
                    "{ATTRIBUTION}, zone {}, hour {}",
                    zone.name,
                    hour.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                ),
                year: hour.year(),
                factor_type,
                estimated: point.is_estimated.unwrap_or(false) || hour >= current,
                marginal: false,
                fallback_reason: None,
            },
        })
    }
}

impl IntensityProvider for ElectricityMaps {
    fn name(&self) -> &str {
        &self.name
    }

    fn info(&self) -> super::ProviderInfo {
        super::ProviderInfo {
            name: self.name.clone(),
            kind: "electricitymaps".into(),
            live: true,
            attribution: ATTRIBUTION.into(),
            licence: "the operator's Electricity Maps API terms".into(),
            url: Some(SOURCE_URL.into()),
            factor_types: vec![self.factor_type],
            marginal: false,
            granularity: "hourly".into(),
        }
    }

    fn intensity<'a>(
        &'a self,
        zone: &'a GridZone,
        hour: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<Intensity, ProviderError>> {
        Box::pin(self.fetch(zone, hour, now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::carbon::{StaticTable, http_client, mock};
    use axum::Router;
    use axum::http::{HeaderMap, StatusCode};
    use axum::response::IntoResponse;
    use axum::routing::get;

    const KEY: &str = "em-secret-key-123";

    fn point(dt: &str, v: &str) -> String {
        format!(
            r#"{{"zone":"BE","carbonIntensity":{v},"datetime":"{dt}","updatedAt":"2025-06-01T10:05:00.000Z","createdAt":"2025-05-29T10:00:00.000Z","emissionFactorType":"direct","isEstimated":false,"estimationMethod":null}}"#
        )
    }

    async fn range(
        headers: HeaderMap,
        q: axum::extract::Query<Vec<(String, String)>>,
    ) -> axum::response::Response {
        if headers.get("auth-token").and_then(|v| v.to_str().ok()) != Some(KEY) {
            return (
                StatusCode::UNAUTHORIZED,
                r#"{"error":"invalid auth-token"}"#,
            )
                .into_response();
        }
        let start =
            q.0.iter()
                .find(|(k, _)| k == "start")
                .map(|(_, v)| v.as_str())
                .unwrap_or("");
        match start {
            "2025-06-01T10:00:00Z" => format!(
                r#"{{"zone":"BE","data":[{}]}}"#,
                point("2025-06-01T10:00:00.000Z", "153")
            )
            .into_response(),
            "2025-06-01T11:00:00Z" => (
                StatusCode::TOO_MANY_REQUESTS,
                [("retry-after", "30")],
                "slow down",
            )
                .into_response(),
            "2025-06-01T12:00:00Z" => (StatusCode::BAD_GATEWAY, "upstream").into_response(),
            "2025-06-01T13:00:00Z" => r#"{"data":[{"zone":"BE""#.into_response(),
            "2025-06-01T14:00:00Z" => r#"{"zone":"BE","data":[]}"#.into_response(),
            "2025-06-01T15:00:00Z" => format!(
                r#"{{"zone":"BE","data":[{}]}}"#,
                point("2025-06-01T15:00:00.000Z", "null")
            )
            .into_response(),
            "2025-06-01T16:00:00Z" => format!(
                r#"{{"zone":"BE","data":[{}]}}"#,
                point("2025-06-01T16:00:00.000Z", "160").replace(
                    r#""emissionFactorType":"direct""#,
                    r#""emissionFactorType":"average""#
                )
            )
            .into_response(),
            "2025-06-01T17:00:00Z" => format!(
                r#"{{"zone":"BE","data":[{}]}}"#,
                point("2025-06-01T17:00:00.000Z", "170").replace(
                    r#""emissionFactorType":"direct""#,
                    r#""emissionFactorType":"lifecycle""#
                )
            )
            .into_response(),
            _ => (StatusCode::NOT_FOUND, "no").into_response(),
        }
    }

    #[tokio::test]
    async fn past_hours_come_from_past_range_and_every_error_is_a_reason_without_the_key() {
        let base = mock::serve(
            Router::new()
                .route("/v3/carbon-intensity/past-range", get(range))
                .route(
                    "/v3/carbon-intensity/latest",
                    get(|| async { point("2025-06-03T09:00:00.000Z", "180") }),
                ),
        )
        .await;
        let client = http_client(std::time::Duration::from_secs(5)).expect("client");
        let em = ElectricityMaps::new(
            "electricitymaps".into(),
            base.clone(),
            KEY.into(),
            FactorType::Direct,
            client.clone(),
        );
        let zone = StaticTable::embedded()
            .expect("t")
            .zone("BE")
            .expect("zone");
        let now: DateTime<Utc> = "2025-06-03T09:30:00Z".parse().expect("now");
        let h = |s: &str| s.parse::<DateTime<Utc>>().expect("hour");

        let ok = em
            .intensity(&zone, h("2025-06-01T10:00:00Z"), now)
            .await
            .expect("figure");
        assert_eq!(ok.value.0, 153.0);
        assert_eq!(ok.provenance.factor_type, "direct");
        assert!(!ok.provenance.estimated && !ok.provenance.marginal);

        let cases = [
            ("2025-06-01T11:00:00Z", ProviderError::RateLimited(Some(30))),
            ("2025-06-01T12:00:00Z", ProviderError::Status(502)),
        ];
        for (hour, expected) in cases {
            assert_eq!(
                em.intensity(&zone, h(hour), now).await.expect_err(hour),
                expected
            );
        }
        let malformed = em
            .intensity(&zone, h("2025-06-01T13:00:00Z"), now)
            .await
            .expect_err("malformed");
        assert!(
            matches!(malformed, ProviderError::Malformed(_)),
            "{malformed}"
        );
        for hour in ["2025-06-01T14:00:00Z", "2025-06-01T15:00:00Z"] {
            // Missing hour and a null figure: an error, never a zero.
            let err = em.intensity(&zone, h(hour), now).await.expect_err(hour);
            assert!(matches!(err, ProviderError::MissingHour { .. }), "{err}");
        }
        // A factor type outside direct/lifecycle never reaches provenance; the point's own type
        // is recorded.
        let other = em
            .intensity(&zone, h("2025-06-01T16:00:00Z"), now)
            .await
            .expect_err("average");
        assert!(matches!(other, ProviderError::Malformed(_)), "{other}");
        let lifecycle = em
            .intensity(&zone, h("2025-06-01T17:00:00Z"), now)
            .await
            .expect("lifecycle point");
        assert_eq!(lifecycle.provenance.factor_type, "lifecycle");
        // The current hour uses "latest" and is marked estimated.
        let latest = em
            .intensity(&zone, h("2025-06-03T09:00:00Z"), now)
            .await
            .expect("latest");
        assert_eq!(latest.value.0, 180.0);
        assert!(latest.provenance.estimated);

        let bad = ElectricityMaps::new(
            "electricitymaps".into(),
            base,
            "wrong-key-456".into(),
            FactorType::Direct,
            client,
        );
        let err = bad
            .intensity(&zone, h("2025-06-01T10:00:00Z"), now)
            .await
            .expect_err("401");
        assert_eq!(err, ProviderError::Unauthorized(401));
        assert!(!err.to_string().contains("wrong-key-456"));
        assert!(!format!("{bad:?}").contains("wrong-key-456"));
    }

    #[tokio::test]
    async fn an_unreachable_provider_is_a_transport_error() {
        let client = http_client(std::time::Duration::from_secs(2)).expect("client");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .expect("bind")
            .local_addr()
            .expect("a")
            .port();
        let em = ElectricityMaps::new(
            "em".into(),
            format!("http://127.0.0.1:{port}"),
            KEY.into(),
            FactorType::Lifecycle,
            client,
        );
        let zone = StaticTable::embedded()
            .expect("t")
            .zone("BE")
            .expect("zone");
        let now: DateTime<Utc> = "2025-06-03T09:30:00Z".parse().expect("now");
        let err = em
            .intensity(&zone, "2025-06-01T10:00:00Z".parse().expect("h"), now)
            .await
            .expect_err("down");
        assert!(matches!(err, ProviderError::Transport(_)), "{err}");
        assert!(!err.to_string().contains(KEY));
    }
}
