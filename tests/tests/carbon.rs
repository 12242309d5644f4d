//! Carbon intensity end to end: the real oracle, configured with `--carbon-config` to ask a mock
//! Electricity Maps v3 server on loopback (the real JSON shapes of shared/reference/README.md)
//! before the cache and the static table. `GET /v1/carbon/intensity` reports the live figure with
//! its provenance, serves a past zone-hour from the cache the second time, falls back to the
//! static table with the reason recorded when the provider answers 401, 429, 500, malformed JSON
//! or no figure, and never shows the API key (nor does the oracle's log). A certificate spanning
//! two hours carries each hour's figure; `GET /v1/carbon/sources` lists datasets and chains.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use chrono::{DateTime, Duration, DurationRound as _, SecondsFormat, Utc};
use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt as _;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use wattest_shared::jws::sign_compact;
use wattest_shared::window::WINDOW_TYP;
use wattest_shared::{CheckedCertificate, Decimal6, Jwks, SoftwareKey};
use wattest_tests::{Oracle, fresh_pg_database, gpu_window};

/// The API key the oracle reads from its 0600 key file; it must never come back out.
const KEY: &str = "em-e2e-secret-key-5f3a9c";

/// How the mock answers the next requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// The documented shapes with a figure for every hour.
    Ok,
    /// 401 whatever the key.
    Unauthorized,
    /// 429 with `Retry-After: 7`.
    RateLimited,
    /// 500.
    ServerError,
    /// A truncated JSON body.
    Malformed,
    /// Well-formed JSON that echoes the API key where the figure should be.
    EchoKey,
    /// A well-formed answer without the hour asked.
    MissingHour,
}

struct Mock {
    hits: AtomicUsize,
    mode: Mutex<Mode>,
}

impl Mock {
    fn set(&self, mode: Mode) {
        *self.mode.lock().unwrap() = mode;
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

/// The mock's figure for an hour, gCO2e/kWh: distinct per hour, with a fractional part.
fn figure(hour: DateTime<Utc>) -> f64 {
    100.0 + f64::from(u32::try_from(hour.timestamp() / 3600 % 97).unwrap()) + 0.25
}

fn hour_of(t: DateTime<Utc>) -> DateTime<Utc> {
    t.duration_trunc(Duration::hours(1)).unwrap()
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// One Electricity Maps v3 point (shared/reference/README.md).
fn point(hour: DateTime<Utc>, factor: &str) -> serde_json::Value {
    serde_json::json!({
        "zone": "BE",
        "carbonIntensity": figure(hour),
        "datetime": hour.to_rfc3339_opts(SecondsFormat::Millis, true),
        "updatedAt": (hour + Duration::minutes(65)).to_rfc3339_opts(SecondsFormat::Millis, true),
        "createdAt": (hour - Duration::days(3)).to_rfc3339_opts(SecondsFormat::Millis, true),
        "emissionFactorType": factor,
        "isEstimated": false,
        "estimationMethod": null,
    })
}

#[derive(Clone, Copy)]
enum Endpoint {
    Latest,
    History,
    PastRange,
}

async fn answer(
    endpoint: Endpoint,
    mock: &Mock,
    headers: &HeaderMap,
    query: &HashMap<String, String>,
) -> Response {
    mock.hits.fetch_add(1, Ordering::SeqCst);
    let mode = *mock.mode.lock().unwrap();
    let key_ok = headers.get("auth-token").and_then(|v| v.to_str().ok()) == Some(KEY);
    if !key_ok || mode == Mode::Unauthorized {
        return (
            StatusCode::UNAUTHORIZED,
            [("content-type", "application/json")],
            r#"{"error":"Invalid authentication token"}"#,
        )
            .into_response();
    }
    let factor = query
        .get("emissionFactorType")
        .map_or("lifecycle", String::as_str);
    let now = Utc::now();
    let hours: Vec<DateTime<Utc>> = match endpoint {
        Endpoint::Latest => vec![hour_of(now)],
        Endpoint::History => (0..=24)
            .rev()
            .map(|h| hour_of(now) - Duration::hours(h))
            .collect(),
        Endpoint::PastRange => {
            let start: DateTime<Utc> = query["start"].parse().unwrap();
            let end: DateTime<Utc> = query["end"].parse().unwrap();
            let mut hours = Vec::new();
            let mut h = hour_of(start);
            while h < end {
                hours.push(h);
                h += Duration::hours(1);
            }
            hours
        }
    };
    let points: Vec<serde_json::Value> = match mode {
        Mode::MissingHour => Vec::new(),
        Mode::EchoKey => hours
            .iter()
            .map(|h| {
                let mut p = point(*h, factor);
                p["carbonIntensity"] = serde_json::Value::String(format!("{KEY} \" {KEY}"));
                p
            })
            .collect(),
        _ => hours.iter().map(|h| point(*h, factor)).collect(),
    };
    let body = match endpoint {
        Endpoint::Latest => points
            .first()
            .cloned()
            .unwrap_or(serde_json::json!({"zone": "BE"})),
        Endpoint::History => serde_json::json!({"zone": "BE", "history": points}),
        Endpoint::PastRange => serde_json::json!({"data": points}),
    };
    match mode {
        Mode::RateLimited => (
            StatusCode::TOO_MANY_REQUESTS,
            [("retry-after", "7")],
            r#"{"error":"Too many requests"}"#,
        )
            .into_response(),
        Mode::ServerError => {
            (StatusCode::INTERNAL_SERVER_ERROR, "upstream failure").into_response()
        }
        Mode::Malformed => {
            let text = body.to_string();
            let cut = text.len() / 2;
            (
                [("content-type", "application/json")],
                text[..cut].to_owned(),
            )
                .into_response()
        }
        _ => axum::Json(body).into_response(),
    }
}

/// Starts the mock Electricity Maps server on 127.0.0.1 in a thread of its own; returns its
/// base URL.
fn start_mock(mock: Arc<Mock>) -> String {
    async fn latest(
        State(m): State<Arc<Mock>>,
        h: HeaderMap,
        Query(q): Query<HashMap<String, String>>,
    ) -> Response {
        answer(Endpoint::Latest, &m, &h, &q).await
    }
    async fn history(
        State(m): State<Arc<Mock>>,
        h: HeaderMap,
        Query(q): Query<HashMap<String, String>>,
    ) -> Response {
        answer(Endpoint::History, &m, &h, &q).await
    }
    async fn past_range(
        State(m): State<Arc<Mock>>,
        h: HeaderMap,
        Query(q): Query<HashMap<String, String>>,
    ) -> Response {
        answer(Endpoint::PastRange, &m, &h, &q).await
    }
    let router = Router::new()
        .route("/v3/carbon-intensity/latest", get(latest))
        .route("/v3/carbon-intensity/history", get(history))
        .route("/v3/carbon-intensity/past-range", get(past_range))
        .with_state(mock);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                axum::serve(listener, router).await.unwrap();
            });
    });
    format!("http://{addr}")
}

struct World {
    oracle: Oracle,
    mock: Arc<Mock>,
    /// Holds the carbon config and the key file while the oracle runs.
    config_dir: tempfile::TempDir,
}

fn world(database_url: Option<String>) -> World {
    let mock = Arc::new(Mock {
        hits: AtomicUsize::new(0),
        mode: Mutex::new(Mode::Ok),
    });
    let base = start_mock(mock.clone());
    let config_dir = tempfile::tempdir().unwrap();
    let key_file = config_dir.path().join("em.key");
    std::fs::write(&key_file, format!("{KEY}\n")).unwrap();
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let config = config_dir.path().join("carbon.toml");
    std::fs::write(
        &config,
        format!(
            "timeout_secs = 5\n\
             [providers.electricitymaps]\n\
             kind = \"electricitymaps\"\n\
             base_url = \"{base}\"\n\
             api_key_file = \"{}\"\n\
             [zones]\n\
             BE = [\"electricitymaps\", \"cache\", \"static\"]\n",
            key_file.display()
        ),
    )
    .unwrap();
    let oracle = Oracle::start_with(database_url, &["--carbon-config", config.to_str().unwrap()]);
    World {
        oracle,
        mock,
        config_dir,
    }
}

/// `GET /v1/carbon/intensity?zone=&at=` as an auditor: status, raw body, JSON.
fn intensity(w: &World, token: &str, query: &str) -> (u16, String, serde_json::Value) {
    let r = w
        .oracle
        .get_as(&format!("/v1/carbon/intensity?{query}"), token);
    let status = r.status().as_u16();
    let text = r.text().unwrap();
    let json = serde_json::from_str(&text).unwrap_or(serde_json::Value::Null);
    (status, text, json)
}

fn at_query(zone: &str, at: DateTime<Utc>) -> String {
    format!("zone={zone}&at={}", rfc3339(at))
}

/// The attempts of an answer as `provider:outcome`.
fn outcomes(answer: &serde_json::Value) -> Vec<String> {
    answer["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            format!(
                "{}:{}",
                a["provider"].as_str().unwrap(),
                a["outcome"].as_str().unwrap()
            )
        })
        .collect()
}

fn decimal(x: f64) -> String {
    Decimal6::from_f64(x).unwrap().to_string()
}

/// a) the live figure with provenance, b) the same zone-hour again from the cache, and a day-old
/// hour through `past-range`.
fn live_then_cached(w: &World, auditor: &str, current: DateTime<Utc>) {
    let hour = current - Duration::hours(3);
    let before = w.mock.hits();
    let (status, text, a) = intensity(w, auditor, &at_query("be", hour + Duration::minutes(20)));
    assert_eq!(status, 200, "{text}");
    assert_eq!(a["zone"], "BE");
    assert_eq!(
        a["at"]
            .as_str()
            .map(|s| s.parse::<DateTime<Utc>>().unwrap()),
        Some(hour + Duration::minutes(20))
    );
    assert_eq!(a["hour_start"], rfc3339(hour));
    assert_eq!(
        a["hour_end"]
            .as_str()
            .unwrap()
            .parse::<DateTime<Utc>>()
            .unwrap(),
        hour + Duration::hours(1)
    );
    assert_eq!(a["g_co2e_per_kwh"], decimal(figure(hour)));
    let p = &a["provenance"];
    assert_eq!(p["provider"], "electricitymaps");
    assert_eq!(
        p["factor_type"], "direct",
        "the oracle asks for direct factors by default"
    );
    assert_eq!(p["estimated"], false);
    assert!(
        p.get("marginal").is_none() && p.get("fallback_reason").is_none(),
        "{p}"
    );
    assert!(
        p["dataset"]
            .as_str()
            .unwrap()
            .starts_with("Electricity Maps API v3, zone BE"),
        "{p}"
    );
    assert_eq!(a["from_cache"], false);
    assert_eq!(a["preferred_factor_type"], "direct");
    assert_eq!(
        a["chain"],
        serde_json::json!(["electricitymaps", "cache", "static"])
    );
    assert_eq!(outcomes(&a), ["electricitymaps:applied"]);
    assert_eq!(w.mock.hits(), before + 1, "one request to the provider");

    // Same zone-hour, another minute: from the cache, the provider is not asked again.
    let (status, text, again) =
        intensity(w, auditor, &at_query("BE", hour + Duration::minutes(59)));
    assert_eq!(status, 200, "{text}");
    assert_eq!(again["from_cache"], true);
    assert_eq!(again["g_co2e_per_kwh"], a["g_co2e_per_kwh"]);
    assert_eq!(again["provenance"], a["provenance"]);
    assert_eq!(
        w.mock.hits(),
        before + 1,
        "a cached zone-hour is never asked twice"
    );

    // Two days ago: the past-range endpoint, the hour's own figure.
    let old = current - Duration::hours(48);
    let (status, text, b) = intensity(w, auditor, &at_query("BE", old));
    assert_eq!(status, 200, "{text}");
    assert_eq!(b["g_co2e_per_kwh"], decimal(figure(old)));
    assert_eq!(b["provenance"]["provider"], "electricitymaps");
    assert_eq!(w.mock.hits(), before + 2);
}

/// c) every failure falls back to the static table with its reason; the key never shows.
fn failures_fall_back(w: &World, auditor: &str, current: DateTime<Utc>) {
    let cases = [
        (Mode::Unauthorized, "credentials refused (HTTP 401)"),
        (
            Mode::RateLimited,
            "rate limited (HTTP 429, retry after 7 s)",
        ),
        (Mode::ServerError, "unexpected HTTP status 500"),
        (Mode::Malformed, "malformed response: EOF while parsing"),
        (
            Mode::EchoKey,
            "malformed response: invalid type: string \"…\", expected f64",
        ),
        (Mode::MissingHour, "no figure for BE at"),
    ];
    for (i, (mode, reason)) in cases.iter().enumerate() {
        let hour = current - Duration::hours(5 + i64::try_from(i).unwrap());
        w.mock.set(*mode);
        let before = w.mock.hits();
        let (status, text, a) = intensity(w, auditor, &at_query("BE", hour + Duration::minutes(1)));
        assert_eq!(status, 200, "{mode:?}: {text}");
        assert!(!text.contains(KEY), "{mode:?}: the API key leaked: {text}");
        assert_eq!(
            w.mock.hits(),
            before + 1,
            "{mode:?}: the provider was asked"
        );
        let p = &a["provenance"];
        assert_eq!(p["provider"], "static", "{mode:?}: {text}");
        assert_eq!(p["factor_type"], "lifecycle");
        assert_eq!(p["estimated"], true);
        assert!(
            p["dataset"]
                .as_str()
                .unwrap()
                .starts_with("Ember (2025), Yearly Electricity Data, BEL"),
            "{p}"
        );
        let fallback = p["fallback_reason"].as_str().unwrap();
        assert!(
            fallback.starts_with(&format!("electricitymaps: {reason}")),
            "{mode:?}: {fallback}"
        );
        assert_eq!(
            outcomes(&a),
            ["electricitymaps:failed", "cache:skipped", "static:applied"],
            "{mode:?}"
        );
        assert!(
            a["attempts"][0]["reason"]
                .as_str()
                .unwrap()
                .starts_with(reason),
            "{mode:?}: {}",
            a["attempts"][0]
        );
        assert_eq!(a["from_cache"], false);
        // The static figure is a real one from the table, never a zero.
        assert_ne!(a["g_co2e_per_kwh"], "0.000000");
        assert!(a["g_co2e_per_kwh"].is_string());
    }
    // A fallback is not cached: once the provider is back, the same hour gets its live figure.
    w.mock.set(Mode::Ok);
    let hour = current - Duration::hours(5);
    let (status, text, a) = intensity(w, auditor, &at_query("BE", hour));
    assert_eq!(status, 200, "{text}");
    assert_eq!(a["provenance"]["provider"], "electricitymaps");
    assert_eq!(a["g_co2e_per_kwh"], decimal(figure(hour)));
}

struct Node {
    key: SoftwareKey,
    id: String,
    seq: u64,
    prev: Option<String>,
}

fn enroll(oracle: &Oracle) -> Node {
    let key = SoftwareKey::generate(2048).unwrap();
    let (status, body) = oracle.post_json(
        "/v1/nodes",
        &oracle.token("node"),
        &serde_json::json!({ "name": "carbon-e2e", "zone": "BE", "public_key": key.public_jwk() }),
    );
    assert_eq!(status, 201, "{body}");
    Node {
        key,
        id: body["node_id"].as_str().unwrap().to_owned(),
        seq: 0,
        prev: None,
    }
}

/// Posts `count` consecutive 10-second windows (1 Wh GPU each) from `start`; returns the
/// certificate the final one issued, verified offline against the JWKS.
fn job(
    oracle: &Oracle,
    node: &mut Node,
    job: &str,
    start: DateTime<Utc>,
    count: u64,
) -> CheckedCertificate {
    let mut id = None;
    for i in 0..count {
        node.seq += 1;
        let claims = gpu_window(
            &node.id,
            job,
            node.seq,
            node.prev.clone(),
            start + Duration::seconds(10 * i64::try_from(i).unwrap()),
            400.0,
            i + 1 == count,
        );
        let jws =
            sign_compact(&node.key, WINDOW_TYP, &serde_json::to_vec(&claims).unwrap()).unwrap();
        let (status, body) = wattest_tests::post_window(&oracle.url, &jws);
        assert!((200..300).contains(&status), "{status}: {body}");
        node.prev = Some(body["hash"].as_str().unwrap().to_owned());
        id = body["certificate"]["id"].as_str().map(str::to_owned);
    }
    let id = id.expect("the final window issues a certificate");
    let jws = reqwest::blocking::Client::new()
        .get(format!("{}/v1/certificates/{id}", oracle.url))
        .bearer_auth(oracle.admin_token())
        .header("accept", "application/jose")
        .send()
        .unwrap()
        .text()
        .unwrap();
    let jwks: Jwks = serde_json::from_value(oracle.get_json("/.well-known/jwks.json")).unwrap();
    wattest_shared::verify_certificate(&jws, &jwks, Utc::now()).unwrap()
}

/// d) a certificate spanning two hours lists each hour's live figure; a job while the provider
/// is rate limited carries the static figure with the reason, and the fallback is counted.
fn certificates(w: &World, auditor: &str, current: DateTime<Utc>) {
    w.mock.set(Mode::Ok);
    let mut node = enroll(&w.oracle);
    let boundary = current - Duration::hours(1);
    let before = w.mock.hits();
    // Four windows from 25 s before the boundary: 25 s in one hour, 15 s in the next.
    let c = job(
        &w.oracle,
        &mut node,
        "across-the-hour",
        boundary - Duration::seconds(25),
        4,
    );
    let hourly = &c.claims.intensity.hourly;
    assert_eq!(hourly.len(), 2, "{hourly:?}");
    for (h, hour) in hourly.iter().zip([boundary - Duration::hours(1), boundary]) {
        assert_eq!(h.hour, hour);
        assert_eq!(h.g_co2e_per_kwh, Decimal6::from_f64(figure(hour)).unwrap());
        assert_eq!(h.provenance.provider, "electricitymaps");
        assert_eq!(h.provenance.factor_type, "direct");
        assert_eq!(h.provenance.fallback_reason, None);
    }
    // 4 Wh over 40 s: 2.5 Wh in the first hour, 1.5 Wh in the second.
    assert_eq!(hourly[0].grid_wh, Decimal6::parse("2.5").unwrap());
    assert_eq!(hourly[1].grid_wh, Decimal6::parse("1.5").unwrap());
    assert_eq!(c.claims.intensity.factor_type, "direct");
    assert_eq!(w.mock.hits(), before + 2, "one request per hour");
    // The figures issuance fetched are in the cache for the endpoint, and agree.
    for h in hourly {
        let (status, text, a) = intensity(w, auditor, &at_query("BE", h.hour));
        assert_eq!(status, 200, "{text}");
        assert_eq!(a["from_cache"], true, "{text}\n{}", w.oracle.log());
        assert_eq!(a["g_co2e_per_kwh"], h.g_co2e_per_kwh.to_string());
    }
    assert_eq!(w.mock.hits(), before + 2);

    // While the provider is rate limited, a job (of another node: a node's windows never go
    // back in time) gets the static figure with the reason.
    w.mock.set(Mode::RateLimited);
    let mut other = enroll(&w.oracle);
    let quiet = current - Duration::hours(12) + Duration::minutes(10);
    let c = job(&w.oracle, &mut other, "while-limited", quiet, 1);
    let h = &c.claims.intensity.hourly[0];
    assert_eq!(h.provenance.provider, "static");
    assert_eq!(
        h.provenance.fallback_reason.as_deref(),
        Some("electricitymaps: rate limited (HTTP 429, retry after 7 s)")
    );
    let metrics = w.oracle.get_text("/metrics");
    assert!(
        metrics.lines().any(|l| l
            .starts_with("wattest_provider_fallbacks_total{provider=\"electricitymaps\"}")
            && !l.ends_with(" 0")),
        "{metrics}"
    );
    w.mock.set(Mode::Ok);
}

/// Bad requests are problem+json: unknown zone 404, bad or future `at` 400, no token 401.
fn bad_requests(w: &World, auditor: &str, compliance: &str) {
    let problem = |status: u16, code: &str, query: &str, token: &str| {
        let r = w
            .oracle
            .get_as(&format!("/v1/carbon/intensity?{query}"), token);
        assert_eq!(r.status().as_u16(), status, "{query}");
        assert_eq!(
            r.headers()["content-type"].to_str().unwrap(),
            "application/problem+json",
            "{query}"
        );
        let p: serde_json::Value = r.json().unwrap();
        assert_eq!(p["code"], code, "{query}: {p}");
        assert_eq!(p["type"], format!("https://wattest.dev/problems/{code}"));
        p
    };
    let p = problem(404, "unknown_zone", "zone=Atlantis", auditor);
    assert!(p["detail"].as_str().unwrap().contains("Atlantis"), "{p}");
    let p = problem(400, "invalid_request", "zone=BE&at=yesterday", auditor);
    assert!(p["detail"].as_str().unwrap().contains("RFC 3339"), "{p}");
    let tomorrow = rfc3339(Utc::now() + Duration::days(1));
    let p = problem(
        400,
        "invalid_request",
        &format!("zone=BE&at={tomorrow}"),
        auditor,
    );
    assert!(p["detail"].as_str().unwrap().contains("future"), "{p}");
    problem(400, "invalid_request", "at=2025-06-01T10:00:00Z", auditor);
    problem(400, "invalid_request", "zone=BE&colour=red", auditor);
    problem(401, "missing_token", "zone=BE", "");
    problem(403, "forbidden_role", "zone=BE", compliance);
    // An offset is accepted when percent-encoded, and names the same hour.
    let (status, text, a) = intensity(w, auditor, "zone=FR&at=2025-06-01T12:20:00%2B02:00");
    assert_eq!(status, 200, "{text}");
    assert_eq!(a["hour_start"], "2025-06-01T10:00:00Z");
    assert_eq!(
        a["chain"],
        serde_json::json!(["static"]),
        "FR has the default chain"
    );
    assert_eq!(outcomes(&a), ["static:applied"]);
}

/// `GET /v1/carbon/sources`: public, attribution and chains, no secret.
fn sources(w: &World) {
    let r = w.oracle.get_as("/v1/carbon/sources", "");
    assert_eq!(r.status(), 200);
    let text = r.text().unwrap();
    for secret in [KEY, w.config_dir.path().to_str().unwrap(), "127.0.0.1"] {
        assert!(!text.contains(secret), "sources shows {secret:?}: {text}");
    }
    let s: serde_json::Value = serde_json::from_str(&text).unwrap();
    let ember = &s["datasets"][0];
    assert_eq!(ember["dataset"], "Ember (2025), Yearly Electricity Data");
    assert_eq!(ember["licence"], "CC BY 4.0");
    assert_eq!(ember["factor_type"], "lifecycle");
    assert!(
        ember["years"]
            .as_array()
            .unwrap()
            .contains(&serde_json::json!(2024))
    );
    assert_eq!(
        s["zones"]["BE"],
        serde_json::json!(["electricitymaps", "cache", "static"])
    );
    assert_eq!(s["default_chain"], serde_json::json!(["static"]));
    assert_eq!(s["preferred_factor_type"], "direct");
    let providers: Vec<(&str, &str, bool)> = s["providers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap(),
                p["kind"].as_str().unwrap(),
                p["live"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        providers,
        [
            ("electricitymaps", "electricitymaps", true),
            ("static", "static", false)
        ]
    );
}

fn run(database_url: Option<String>) {
    let w = world(database_url);
    let auditor = w.oracle.token("auditor");
    let compliance = w.oracle.token("compliance");
    // Hours are taken relative to the hour the test starts in. Every hour used lies 1 to 12
    // hours before it (the provider's `history` endpoint) or 48 hours before (`past-range`), so
    // it stays past, cacheable and on the same endpoint if the clock passes an hour meanwhile.
    let current = hour_of(Utc::now());
    live_then_cached(&w, &auditor, current);
    failures_fall_back(&w, &auditor, current);
    certificates(&w, &auditor, current);
    bad_requests(&w, &auditor, &compliance);
    sources(&w);
    let log = w.oracle.log();
    assert!(
        log.contains("Carbon provider failed"),
        "fallbacks are logged:\n{log}"
    );
    assert!(
        !log.contains(KEY),
        "the API key is in the oracle's log:\n{log}"
    );
}

#[test]
fn carbon_intensity_live_cached_and_fallback_sqlite() {
    run(None);
}

#[test]
fn carbon_intensity_live_cached_and_fallback_postgres() {
    let Some(url) = fresh_pg_database() else {
        return;
    };
    run(Some(url));
}
