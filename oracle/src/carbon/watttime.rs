//! WattTime v3 client: historical marginal operating emissions rate (MOER, `co2_moer`).
//!
//! `GET /login` with HTTP Basic returns `{"token":"…"}` (valid 30 minutes per WattTime's docs;
//! renewed here after [`TOKEN_LIFETIME_MINUTES`] or on a 401), then
//! `GET /v3/historical?region=&start=&end=&signal_type=co2_moer` with `Authorization: Bearer`
//! returns `{"data":[{"point_time","value"}],"meta":{"units":"lbs_co2_per_mwh",…}}` in 5-minute
//! points. An hour's figure is the mean of its points, converted from lbs/MWh to g/kWh.

use super::{GridZone, Intensity, IntensityProvider, ProviderError};
use chrono::{DateTime, Datelike, Duration, Utc};
use futures::future::BoxFuture;
use serde::Deserialize;
use std::collections::BTreeMap;
use tokio::sync::Mutex;
use wattest_shared::GramsCo2ePerKwh;
use wattest_shared::certificate::Provenance;

/// Public base URL of the API.
pub const DEFAULT_BASE_URL: &str = "https://api.watttime.org";

/// Attribution of the figures (provenance `dataset` starts with it).
pub const ATTRIBUTION: &str = "WattTime v3 historical co2_moer";

/// Where the source is described.
pub const SOURCE_URL: &str = "https://watttime.org";

/// Grams per avoirdupois pound (international yard and pound agreement, 1959).
pub const GRAMS_PER_POUND: f64 = 453.592_37;

/// Minutes a login token is used before a new login (WattTime tokens expire after 30 min).
pub const TOKEN_LIFETIME_MINUTES: i64 = 25;

/// lbs CO2/MWh → gCO2/kWh: × 453.59237 g/lb, ÷ 1000 kWh/MWh.
#[must_use]
pub fn lbs_per_mwh_to_g_per_kwh(lbs_per_mwh: f64) -> f64 {
    lbs_per_mwh * GRAMS_PER_POUND / 1000.0
}

#[derive(Debug, Deserialize)]
struct Login {
    token: String,
}

#[derive(Debug, Deserialize)]
struct DataPoint {
    point_time: DateTime<Utc>,
    value: Option<f64>,
}

#[derive(Debug, Deserialize)]
struct Meta {
    units: String,
}

#[derive(Debug, Deserialize)]
struct Historical {
    data: Vec<DataPoint>,
    meta: Meta,
}

/// The WattTime provider.
pub struct WattTime {
    name: String,
    base_url: String,
    username: String,
    password: String,
    /// Grid zone → WattTime region (e.g. `US-CAL-CISO` → `CAISO_NORTH`).
    regions: BTreeMap<String, String>,
    client: reqwest::Client,
    token: Mutex<Option<(String, DateTime<Utc>)>>,
}

impl std::fmt::Debug for WattTime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WattTime")
            .field("name", &self.name)
            .field("base_url", &self.base_url)
            .field("regions", &self.regions)
            .finish_non_exhaustive()
    }
}

impl WattTime {
    /// A client of `base_url` with the account and the zone → region map.
    #[must_use]
    pub fn new(
        name: String,
        base_url: String,
        username: String,
        password: String,
        regions: BTreeMap<String, String>,
        client: reqwest::Client,
    ) -> Self {
        Self {
            name,
            base_url: base_url.trim_end_matches('/').to_owned(),
            username,
            password,
            regions,
            client,
            token: Mutex::new(None),
        }
    }

    async fn token(&self, now: DateTime<Utc>, renew: bool) -> Result<String, ProviderError> {
        let mut slot = self.token.lock().await;
        if !renew
            && let Some((token, at)) = slot.as_ref()
            && now - *at < Duration::minutes(TOKEN_LIFETIME_MINUTES)
        {
            return Ok(token.clone());
        }
        let login: Login = super::get_json(
            self.client
                .get(format!("{}/login", self.base_url))
                .basic_auth(&self.username, Some(&self.password)),
        )
        .await?;
        *slot = Some((login.token.clone(), now));
        Ok(login.token)
    }

    async fn historical(
        &self,
        token: &str,
        region: &str,
        hour: DateTime<Utc>,
    ) -> Result<Historical, ProviderError> {
        let fmt = |t: DateTime<Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        super::get_json(
            self.client
                .get(format!("{}/v3/historical", self.base_url))
                .bearer_auth(token)
                .query(&[
                    ("region", region),
                    ("start", fmt(hour).as_str()),
                    ("end", fmt(hour + Duration::hours(1)).as_str()),
                    ("signal_type", "co2_moer"),
                ]),
        )
        .await
    }

    async fn fetch(
        &self,
        zone: &GridZone,
        hour: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<Intensity, ProviderError> {
        let region = self
            .regions
            .get(&zone.name)
            .ok_or_else(|| ProviderError::ZoneNotCovered(zone.name.clone()))?;
        let token = self.token(now, false).await?;
        let data = match self.historical(&token, region, hour).await {
            // An expired or revoked token: log in again once.
            Err(ProviderError::Unauthorized(401)) => {
                let token = self.token(now, true).await?;
                self.historical(&token, region, hour).await?
            }
            other => other?,
        };
        if data.meta.units != "lbs_co2_per_mwh" {
            return Err(ProviderError::Malformed(format!(
                "unexpected units {:?}",
                data.meta.units
            )));
        }
        let end = hour + Duration::hours(1);
        let values = data
            .data
            .iter()
            .filter(|p| p.point_time >= hour && p.point_time < end)
            .filter_map(|p| p.value)
            .map(super::checked_value)
            .collect::<Result<Vec<_>, _>>()?;
        if values.is_empty() {
            return Err(ProviderError::MissingHour {
                zone: zone.name.clone(),
                hour,
            });
        }
        #[allow(clippy::cast_precision_loss)] // at most 12 points an hour
        let mean = values.iter().sum::<f64>() / values.len() as f64;
        Ok(Intensity {
            value: GramsCo2ePerKwh(lbs_per_mwh_to_g_per_kwh(mean)),
            provenance: Provenance {
                provider: self.name.clone(),
                dataset: format!(
                    "{ATTRIBUTION}, region {region}, mean of {} points",
                    values.len()
                ),
                year: hour.year(),
                factor_type: "direct".into(),
                estimated: false,
                marginal: true,
                fallback_reason: None,
            },
        })
    }
}

impl IntensityProvider for WattTime {
    fn name(&self) -> &str {
        &self.name
    }

    fn info(&self) -> super::ProviderInfo {
        super::ProviderInfo {
            name: self.name.clone(),
            kind: "watttime".into(),
            live: true,
            attribution: ATTRIBUTION.into(),
            licence: "the operator's WattTime account terms".into(),
            url: Some(SOURCE_URL.into()),
            factor_types: vec![super::FactorType::Direct],
            marginal: true,
            granularity: "5-minute".into(),
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
    use axum::extract::{Query, State};
    use axum::http::{HeaderMap, StatusCode};
    use axum::response::IntoResponse;
    use axum::routing::get;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    const PASSWORD: &str = "wt-password-789";

    #[derive(Default)]
    struct Server {
        logins: AtomicUsize,
    }

    async fn login(State(s): State<Arc<Server>>, headers: HeaderMap) -> axum::response::Response {
        use base64::Engine;
        let expected = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("alice:{PASSWORD}"))
        );
        if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some(expected.as_str()) {
            return (StatusCode::UNAUTHORIZED, "bad credentials").into_response();
        }
        let n = s.logins.fetch_add(1, Ordering::SeqCst);
        format!(r#"{{"token":"tok-{n}"}}"#).into_response()
    }

    async fn historical(
        State(s): State<Arc<Server>>,
        headers: HeaderMap,
        Query(q): Query<BTreeMap<String, String>>,
    ) -> axum::response::Response {
        // The first token is treated as expired: the client must log in again.
        let current = format!(
            "Bearer tok-{}",
            s.logins.load(Ordering::SeqCst).saturating_sub(1)
        );
        let auth = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if auth == "Bearer tok-0" || auth != current {
            return (StatusCode::UNAUTHORIZED, "token expired").into_response();
        }
        let start = q.get("start").map(String::as_str).unwrap_or("");
        match start {
            "2025-06-01T10:00:00Z" => r#"{"data":[{"point_time":"2025-06-01T10:00:00+00:00","value":800.0},{"point_time":"2025-06-01T10:05:00+00:00","value":1000.0},{"point_time":"2025-06-01T11:00:00+00:00","value":5000.0}],"meta":{"region":"CAISO_NORTH","signal_type":"co2_moer","units":"lbs_co2_per_mwh","data_point_period_seconds":300,"model":{"date":"2023-03-01"}}}"#.into_response(),
            "2025-06-01T11:00:00Z" => r#"{"data":[],"meta":{"region":"CAISO_NORTH","signal_type":"co2_moer","units":"lbs_co2_per_mwh","data_point_period_seconds":300}}"#.into_response(),
            "2025-06-01T12:00:00Z" => (StatusCode::TOO_MANY_REQUESTS, [("retry-after", "60")], "").into_response(),
            "2025-06-01T13:00:00Z" => (StatusCode::SERVICE_UNAVAILABLE, "").into_response(),
            _ => r#"{"data":[{"point_time":"2025-06-01T14:00:00+00:00"}]"#.into_response(),
        }
    }

    #[test]
    fn pounds_per_megawatt_hour_become_grams_per_kilowatt_hour() {
        assert!((lbs_per_mwh_to_g_per_kwh(1000.0) - 453.592_37).abs() < 1e-9);
        assert!((lbs_per_mwh_to_g_per_kwh(812.3) - 368.453_08).abs() < 1e-5);
    }

    #[tokio::test]
    async fn moer_is_fetched_with_a_renewed_token_converted_and_marked_marginal() {
        let server = Arc::new(Server::default());
        let base = mock::serve(
            Router::new()
                .route("/login", get(login))
                .route("/v3/historical", get(historical))
                .with_state(server.clone()),
        )
        .await;
        let client = http_client(std::time::Duration::from_secs(5)).expect("client");
        let regions = BTreeMap::from([("US-CAL-CISO".to_owned(), "CAISO_NORTH".to_owned())]);
        let wt = WattTime::new(
            "watttime".into(),
            base.clone(),
            "alice".into(),
            PASSWORD.into(),
            regions.clone(),
            client.clone(),
        );
        let zone = StaticTable::embedded()
            .expect("t")
            .zone("US-CAL-CISO")
            .expect("zone");
        let now: DateTime<Utc> = "2025-06-03T00:00:00Z".parse().expect("now");
        let h = |s: &str| s.parse::<DateTime<Utc>>().expect("hour");

        let i = wt
            .intensity(&zone, h("2025-06-01T10:00:00Z"), now)
            .await
            .expect("moer");
        assert!((i.value.0 - lbs_per_mwh_to_g_per_kwh(900.0)).abs() < 1e-9);
        assert!(i.provenance.marginal);
        assert_eq!(
            server.logins.load(Ordering::SeqCst),
            2,
            "renewed after a 401"
        );

        let missing = wt
            .intensity(&zone, h("2025-06-01T11:00:00Z"), now)
            .await
            .expect_err("empty");
        assert!(
            matches!(missing, ProviderError::MissingHour { .. }),
            "{missing}"
        );
        assert_eq!(
            wt.intensity(&zone, h("2025-06-01T12:00:00Z"), now)
                .await
                .expect_err("429"),
            ProviderError::RateLimited(Some(60))
        );
        assert_eq!(
            wt.intensity(&zone, h("2025-06-01T13:00:00Z"), now)
                .await
                .expect_err("503"),
            ProviderError::Status(503)
        );
        let bad = wt
            .intensity(&zone, h("2025-06-01T14:00:00Z"), now)
            .await
            .expect_err("malformed");
        assert!(matches!(bad, ProviderError::Malformed(_)), "{bad}");

        let wrong = WattTime::new(
            "watttime".into(),
            base,
            "alice".into(),
            "not-the-password".into(),
            regions,
            client,
        );
        let err = wrong
            .intensity(&zone, h("2025-06-01T10:00:00Z"), now)
            .await
            .expect_err("401");
        assert_eq!(err, ProviderError::Unauthorized(401));
        assert!(!err.to_string().contains("not-the-password"));
        assert!(!format!("{wrong:?}").contains("not-the-password"));
    }
}
