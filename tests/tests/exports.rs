//! Compliance exports end to end: the real oracle issues certificates from signed windows, each
//! CSV profile is read back with the `csv` crate and reconciled, exactly, against the signed
//! certificates (verified offline); reporting periods (consecutive exports partition the rows),
//! the default leaving revoked certificates out, filters, roles, CSV injection and the offline
//! `export` command.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use chrono::{DateTime, Duration, DurationRound as _, Utc};
use std::collections::HashMap;
use std::process::Command;
use wattest_shared::jws::sign_compact;
use wattest_shared::window::WINDOW_TYP;
use wattest_shared::window::{Method, SourceEnergy, SourceKind};
use wattest_shared::{CheckedCertificate, Jwks, SoftwareKey, WattHours, Watts};
use wattest_tests::{Oracle, fresh_pg_database, gpu_window, run_ok};

/// CodeCarbon 3.3.2 `emissions.csv` columns, in order, as listed in the project's reference
/// notes (shared/reference/README.md, "CodeCarbon emissions.csv columns (3.3.2, in order)").
const CODECARBON_3_3_2: &str = "timestamp, project_name, run_id, experiment_id, duration, emissions, emissions_rate, cpu_power,
gpu_power, ram_power, cpu_energy, gpu_energy, ram_energy, energy_consumed, water_consumed,
country_name, country_iso_code, region, cloud_provider, cloud_region, os, python_version,
codecarbon_version, cpu_count, cpu_model, gpu_count, gpu_model, longitude, latitude, ram_total_size,
tracking_mode, cpu_utilization_percent, gpu_utilization_percent, ram_utilization_percent,
ram_used_gb, on_cloud, pue, wue";

struct Node {
    key: SoftwareKey,
    id: String,
    seq: u64,
    prev: Option<String>,
    next_start: DateTime<Utc>,
}

fn enroll(oracle: &Oracle, name: &str, zone: &str, start: DateTime<Utc>) -> Node {
    let key = SoftwareKey::generate(2048).unwrap();
    let (status, body) = oracle.post_json(
        "/v1/nodes",
        &oracle.token("node"),
        &serde_json::json!({ "name": name, "zone": zone, "public_key": key.public_jwk() }),
    );
    assert_eq!(status, 201, "{body}");
    Node {
        key,
        id: body["node_id"].as_str().unwrap().to_owned(),
        seq: 0,
        prev: None,
        next_start: start,
    }
}

/// Signs and posts a job of `windows` consecutive 10-second windows (1 Wh GPU each, plus
/// `solar_wh` of solar each); returns the certificate id.
fn job(
    oracle: &Oracle,
    node: &mut Node,
    job: &str,
    model: Option<&str>,
    windows: u64,
    solar_wh: f64,
) -> String {
    let mut certificate = None;
    for i in 0..windows {
        node.seq += 1;
        let mut claims = gpu_window(
            &node.id,
            job,
            node.seq,
            node.prev.clone(),
            node.next_start,
            400.0,
            i + 1 == windows,
        );
        claims.model_id = model.map(str::to_owned);
        if solar_wh > 0.0 {
            claims.sources.push(SourceEnergy {
                source: "pv0".into(),
                kind: SourceKind::Solar,
                method: Method::SolarPowerIntegration,
                energy_wh: WattHours(solar_wh),
                mean_w: Watts(solar_wh * 360.0),
                max_w: Watts(solar_wh * 400.0),
                samples: 10,
                uncertainty_pct: 5.0,
                shared_device: false,
            });
            claims.solar_wh = WattHours(solar_wh);
        }
        node.next_start = claims.end;
        let jws =
            sign_compact(&node.key, WINDOW_TYP, &serde_json::to_vec(&claims).unwrap()).unwrap();
        let (status, body) = wattest_tests::post_window(&oracle.url, &jws);
        assert!((200..300).contains(&status), "{status}: {body}");
        node.prev = Some(body["hash"].as_str().unwrap().to_owned());
        certificate = body["certificate"]["id"].as_str().map(str::to_owned);
    }
    certificate.expect("the final window issues a certificate")
}

/// The certificate, fetched as its JWS and verified offline against the JWKS.
fn certificate(oracle: &Oracle, id: &str) -> CheckedCertificate {
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

struct Csv {
    headers: Vec<String>,
    rows: Vec<HashMap<String, String>>,
}

impl Csv {
    fn parse(text: &str) -> Self {
        let mut reader = csv::Reader::from_reader(text.as_bytes());
        let headers: Vec<String> = reader
            .headers()
            .unwrap()
            .iter()
            .map(str::to_owned)
            .collect();
        let rows = reader
            .records()
            .map(|r| {
                let r = r.unwrap();
                assert_eq!(r.len(), headers.len(), "ragged row {r:?}");
                headers
                    .iter()
                    .cloned()
                    .zip(r.iter().map(str::to_owned))
                    .collect()
            })
            .collect();
        Self { headers, rows }
    }

    /// Σ of a column of exact decimals, in 10⁻⁹ of its unit (kWh or kg: µWh and µg).
    fn sum_nano(&self, column: &str) -> i128 {
        self.rows.iter().map(|r| nano(&r[column])).sum()
    }
}

/// An exact decimal string as an integer count of 10⁻⁹.
fn nano(text: &str) -> i128 {
    let (int, frac) = text.split_once('.').unwrap_or((text, ""));
    assert!(frac.len() <= 9, "{text:?} has more than nine decimals");
    let int: i128 = int.parse().unwrap_or_else(|_| panic!("{text:?}"));
    let frac: i128 = format!("{frac:0<9}").parse().unwrap();
    int * 1_000_000_000 + frac
}

fn export(oracle: &Oracle, query: &str) -> Csv {
    let r = oracle.get(&format!("/v1/exports/{query}"));
    assert_eq!(r.status(), 200, "{query}");
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/csv")
    );
    Csv::parse(&r.text().unwrap())
}

/// What the tests below need: two nodes in two zones, one with an owner and embodied emissions,
/// certificates across an hour boundary, with solar, a model id and formula-like labels.
struct World {
    oracle: Oracle,
    node_a: String,
    node_b: String,
    certificates: Vec<CheckedCertificate>,
    formula_cert: String,
    /// Job label `run;=cmd|' /C calc'!A0`: a formula after a `;` (Excel's separator in many
    /// locales).
    semicolon_cert: String,
    revoked: String,
    /// The full hour the first job (`train-1`) straddles: a reporting-period boundary.
    hour: DateTime<Utc>,
}

impl World {
    /// The certificates not revoked: what an export holds by default.
    fn valid(&self) -> Vec<&CheckedCertificate> {
        self.certificates
            .iter()
            .filter(|c| c.claims.jti != self.revoked)
            .collect()
    }

    /// The certificate with this id.
    fn cert(&self, id: &str) -> &CheckedCertificate {
        self.certificates
            .iter()
            .find(|c| c.claims.jti == id)
            .unwrap()
    }
}

impl World {
    /// `wattest-oracle ARGS` against this oracle's database.
    fn oracle_cmd(&self, args: &[&str]) -> Command {
        self.oracle.cli(args)
    }
}

fn world(database_url: Option<String>) -> World {
    let oracle = Oracle::start_with(database_url.clone(), &[]);
    // Start 25 s before a full hour, two hours ago: the first job straddles the hour.
    let hour = (Utc::now() - Duration::hours(2))
        .duration_trunc(Duration::hours(1))
        .unwrap();
    // Node a's windows also carry milliseconds, as the agent's do.
    let mut a = enroll(
        &oracle,
        "node-a",
        "BE",
        hour - Duration::seconds(25) + Duration::milliseconds(250),
    );
    let mut b = enroll(&oracle, "=HYPERLINK(\"http://x\")", "FR", hour);
    let ids = [
        job(&oracle, &mut a, "train-1", Some("llama-x"), 4, 0.25),
        job(&oracle, &mut a, "train-2", None, 2, 0.0),
        job(&oracle, &mut b, "infer-1", Some("llama-x"), 3, 0.5),
        job(
            &oracle,
            &mut b,
            "+cmd|' /C calc'!A0",
            Some("@SUM(A1)"),
            1,
            0.0,
        ),
        job(&oracle, &mut b, "run;=cmd|' /C calc'!A0", None, 1, 0.0),
    ];
    let formula_cert = ids[3].clone();
    let (status, body) = oracle.post_json(
        &format!("/v1/certificates/{}/revocation", ids[1]),
        oracle.admin_token(),
        &serde_json::json!({ "reason": "measurement_error" }),
    );
    assert!(status < 300, "{status} {body}");
    let certificates = ids.iter().map(|id| certificate(&oracle, id)).collect();
    let w = World {
        node_a: a.id,
        node_b: b.id,
        certificates,
        formula_cert,
        semicolon_cert: ids[4].clone(),
        revoked: ids[1].clone(),
        hour,
        oracle,
    };
    run_ok(&mut w.oracle_cmd(&[
        "node",
        "set",
        &w.node_a,
        "--owner",
        "Acme Research",
        "--embodied-kg",
        "1200",
    ]));
    w
}

/// Σ of a certificate quantity over the certificates, in millionths (Wh or g), which is 10⁻⁹
/// of kWh or kg: the unit of [`Csv::sum_nano`].
fn claims_sum(
    certificates: &[&CheckedCertificate],
    f: impl Fn(&CheckedCertificate) -> wattest_shared::Decimal6,
) -> i128 {
    certificates
        .iter()
        .map(|c| i128::from(f(c).millionths()))
        .sum()
}

fn reconcile(w: &World) {
    // By default an export leaves the revoked certificate out.
    let all: Vec<&CheckedCertificate> = w.valid();
    assert_eq!(all.len() + 1, w.certificates.len());
    let consumed = claims_sum(&all, |c| c.claims.energy.consumed_wh);
    let grid = claims_sum(&all, |c| c.claims.energy.grid_wh);
    let solar = claims_sum(&all, |c| c.claims.energy.solar_wh);
    let emissions = claims_sum(&all, |c| c.claims.emissions.location_based_g_co2e);
    let avoided = claims_sum(&all, |c| c.claims.avoided_emissions.g_co2e);
    assert!(consumed > 0 && grid > 0 && solar > 0 && emissions > 0 && avoided > 0);

    // compliance: one row per certificate, every id, hash and kid as signed.
    let csv = export(&w.oracle, "compliance.csv");
    assert!(
        csv.rows.iter().any(|r| r["period_start"].contains('.')),
        "some period has milliseconds"
    );
    assert_eq!(csv.rows.len(), all.len());
    for c in &all {
        let row = csv
            .rows
            .iter()
            .find(|r| r["certificate_id"] == c.claims.jti)
            .expect("row of every certificate");
        assert_eq!(row["certificate_sha256"], c.hash);
        assert_eq!(row["oracle_kid"], c.kid);
        // The period as signed, milliseconds included.
        let as_signed = |t: DateTime<Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true);
        assert_eq!(row["period_start"], as_signed(c.claims.period.start));
        assert_eq!(row["period_end"], as_signed(c.claims.period.end));
        assert_eq!(row["calculation_version"], c.claims.calculation_version);
        assert_eq!(row["reward_eur"], c.claims.reward.total.to_string());
        assert_eq!(
            nano(&row["energy_consumed_kwh"]),
            i128::from(c.claims.energy.consumed_wh.millionths())
        );
        assert_eq!(
            nano(&row["gpu_energy_kwh"]),
            i128::from(c.claims.energy.consumed_wh.millionths()),
            "one GPU source: GPU energy is all the consumed energy"
        );
        assert_eq!(row["cpu_energy_kwh"], "", "no CPU source: empty, not zero");
    }
    assert_eq!(csv.sum_nano("energy_consumed_kwh"), consumed);
    assert_eq!(csv.sum_nano("grid_energy_kwh"), grid);
    assert_eq!(csv.sum_nano("solar_energy_kwh"), solar);
    assert_eq!(csv.sum_nano("scope2_location_based_kg_co2e"), emissions);
    assert_eq!(csv.sum_nano("avoided_emissions_kg_co2e"), avoided);
    let owned: Vec<_> = csv
        .rows
        .iter()
        .filter(|r| r["node_id"] == w.node_a)
        .collect();
    assert!(owned.iter().all(|r| r["node_owner"] == "Acme Research"));
    assert!(csv.rows.iter().all(|r| r["revoked"] == "false"));
    assert!(csv.rows.iter().all(|r| r["certificate_id"] != w.revoked));

    // `status=all`: every certificate, the revoked one marked; its sums are all the claims.
    let every = export(&w.oracle, "compliance.csv?status=all");
    assert_eq!(every.rows.len(), w.certificates.len());
    let revoked: Vec<_> = every
        .rows
        .iter()
        .filter(|r| r["revoked"] == "true")
        .collect();
    assert_eq!(revoked.len(), 1);
    assert_eq!(revoked[0]["certificate_id"], w.revoked);
    let everything: Vec<&CheckedCertificate> = w.certificates.iter().collect();
    assert_eq!(
        every.sum_nano("energy_consumed_kwh"),
        claims_sum(&everything, |c| c.claims.energy.consumed_wh)
    );
    let only_revoked = export(&w.oracle, "compliance.csv?status=revoked");
    assert_eq!(only_revoked.rows.len(), 1);
    assert_eq!(only_revoked.rows[0]["certificate_id"], w.revoked);

    // compliance, hourly: the first job straddles an hour, so it has two rows; totals agree.
    let hourly = export(&w.oracle, "compliance.csv?granularity=hour");
    let hours: usize = all.iter().map(|c| c.claims.intensity.hourly.len()).sum();
    assert_eq!(hourly.rows.len(), hours);
    assert!(hours > all.len(), "some certificate spans two hours");
    assert_eq!(hourly.sum_nano("grid_energy_kwh"), grid);
    assert_eq!(hourly.sum_nano("solar_energy_kwh"), solar);
    assert_eq!(hourly.sum_nano("scope2_location_based_kg_co2e"), emissions);
    assert_eq!(hourly.sum_nano("avoided_emissions_kg_co2e"), avoided);
    assert!(
        hourly
            .rows
            .iter()
            .all(|r| r["energy_consumed_kwh"].is_empty())
    );

    // codecarbon: same energy and emissions, CodeCarbon's names; it has no revoked column, so
    // the revoked certificate must not be there.
    let cc = export(&w.oracle, "codecarbon.csv");
    assert_eq!(cc.rows.len(), all.len());
    assert!(cc.rows.iter().all(|r| r["run_id"] != w.revoked));
    assert_eq!(cc.sum_nano("energy_consumed"), consumed);
    assert_eq!(cc.sum_nano("gpu_energy"), consumed);
    assert_eq!(cc.sum_nano("emissions"), emissions);
    for r in &cc.rows {
        let c = all.iter().find(|c| c.claims.jti == r["run_id"]).unwrap();
        assert_eq!(r["duration"], c.claims.period.measured_seconds.to_string());
        assert_eq!(r["tracking_mode"], "machine");
        assert_eq!(r["gpu_count"], "1");
        for unknown in [
            "os",
            "python_version",
            "cpu_model",
            "water_consumed",
            "on_cloud",
        ] {
            assert_eq!(r[unknown], "", "{unknown} is not known; left empty");
        }
        // 1 Wh per 10 s window is 360 W.
        let watts: f64 = r["gpu_power"].parse().unwrap();
        assert!((watts - 360.0).abs() < 1e-6, "{watts}");
    }

    // sci: E and E × I reconcile; M only where embodied emissions were set.
    let sci = export(&w.oracle, "sci.csv");
    assert_eq!(sci.rows.len(), all.len());
    assert!(sci.rows.iter().all(|r| r["revoked"] == "false"));
    assert_eq!(sci.sum_nano("e_kwh"), consumed);
    assert_eq!(sci.sum_nano("e_grid_kwh"), grid);
    assert_eq!(sci.sum_nano("operational_kg_co2e"), emissions);
    for r in &sci.rows {
        assert_eq!(r["r"], "1");
        assert_eq!(r["functional_unit"], "run");
        if r["node_id"] == w.node_a {
            let c = all
                .iter()
                .find(|c| c.claims.jti == r["certificate_id"])
                .unwrap();
            // 1200 kg over 4 years of 8766 h: 1200 × s ÷ (35064 × 3600) kg.
            let secs = c.claims.period.measured_seconds.millionths() as f64 / 1e6;
            let m: f64 = r["m_kg_co2e"].parse().unwrap();
            assert!(
                (m - 1200.0 * secs / (35_064.0 * 3600.0)).abs() < 1e-6,
                "{m}"
            );
            assert_eq!(
                nano(&r["sci_kg_co2e_per_unit"]),
                nano(&r["operational_kg_co2e"]) + nano(&r["m_kg_co2e"])
            );
        } else {
            assert_eq!(r["m_kg_co2e"], "");
            assert_eq!(r["sci_kg_co2e_per_unit"], "");
        }
    }
}

fn filters(w: &World) {
    let o = &w.oracle;
    let count = |q: &str| export(o, &format!("compliance.csv?{q}")).rows.len();
    // Node a's second certificate is revoked: left out unless `status` asks for it.
    assert_eq!(count(&format!("node={}", w.node_a)), 1);
    assert_eq!(count(&format!("node={}&status=all", w.node_a)), 2);
    assert_eq!(count(&format!("node={}", w.node_b)), 3);
    assert_eq!(count("owner=Acme%20Research"), 1);
    assert_eq!(count("owner=Nobody"), 0);
    assert_eq!(count("job=train-1"), 1);
    assert_eq!(count("job=train-2"), 0);
    assert_eq!(count("job=train-2&status=revoked"), 1);
    assert_eq!(count("model=llama-x"), 2);
    assert_eq!(count("zone=FR"), 3);
    // The zone as enrollment reads it: case does not matter; one no table knows matches nothing.
    assert_eq!(count("zone=fr"), 3);
    assert_eq!(count("zone=Atlantis"), 0);
    assert_eq!(count("status=revoked"), 1);
    assert_eq!(count("status=valid"), 4);
    assert_eq!(count(""), 4);
    assert_eq!(count("status=all"), 5);
    // Software keys: every certificate is at most `warning`; the revoked one is left out.
    assert_eq!(count("status=warning"), 4);
    assert_eq!(count("status=affirming"), 0);
    let last_end = w
        .certificates
        .iter()
        .map(|c| c.claims.period.end)
        .max()
        .unwrap();
    let first_start = w
        .certificates
        .iter()
        .map(|c| c.claims.period.start)
        .min()
        .unwrap();
    let enc = |t: DateTime<Utc>| t.to_rfc3339().replace('+', "%2B");
    assert_eq!(
        count(&format!("from={}", enc(last_end + Duration::seconds(1)))),
        0
    );
    assert_eq!(count(&format!("to={}", enc(first_start))), 0);
    assert_eq!(
        count(&format!("from={}&to={}", enc(first_start), enc(last_end))),
        4
    );
    assert_eq!(
        count(&format!(
            "from={}&to={}&status=all",
            enc(first_start),
            enc(last_end)
        )),
        5
    );
    // A filtered export reconciles with the certificates it covers.
    let csv = export(o, &format!("sci.csv?node={}", w.node_b));
    let covered: Vec<&CheckedCertificate> = w
        .certificates
        .iter()
        .filter(|c| c.claims.node.id == w.node_b)
        .collect();
    assert_eq!(
        csv.sum_nano("e_kwh"),
        claims_sum(&covered, |c| c.claims.energy.consumed_wh)
    );
    assert_eq!(
        csv.sum_nano("operational_kg_co2e"),
        claims_sum(&covered, |c| c.claims.emissions.location_based_g_co2e)
    );
    // Bad filters: a 400 problem, nothing streamed.
    for bad in [
        "compliance.csv?status=great",
        "compliance.csv?granularity=day",
        "sci.csv?granularity=hour",
        "compliance.csv?from=yesterday",
        "compliance.csv?colour=red",
        "compliance.csv?node=",
    ] {
        let r = o.get(&format!("/v1/exports/{bad}"));
        assert_eq!(r.status(), 400, "{bad}");
        assert_eq!(
            r.headers()["content-type"],
            "application/problem+json",
            "{bad}"
        );
    }
    assert_eq!(o.get("/v1/exports/ghg.csv").status(), 404);
}

fn injection(w: &World) {
    let csv = export(&w.oracle, "compliance.csv");
    let row = csv
        .rows
        .iter()
        .find(|r| r["certificate_id"] == w.formula_cert)
        .unwrap();
    assert_eq!(row["job_id"], "'+cmd|' /C calc'!A0");
    assert_eq!(row["model_id"], "'@SUM(A1)");
    assert_eq!(row["node_name"], "'=HYPERLINK(\"http://x\")");
    // A formula after a `;`: neutralised too, and the cell quoted.
    let row = csv
        .rows
        .iter()
        .find(|r| r["certificate_id"] == w.semicolon_cert)
        .unwrap();
    assert_eq!(row["job_id"], "run;'=cmd|' /C calc'!A0");
    // Every free-text cell of every profile: nothing starts a formula.
    for profile in ["compliance.csv", "codecarbon.csv", "sci.csv"] {
        let csv = export(&w.oracle, profile);
        for r in &csv.rows {
            for (column, cell) in r {
                assert!(
                    !cell.starts_with(['=', '+', '@', '\t', '\r']),
                    "{profile} {column} = {cell:?}"
                );
            }
        }
    }
    // The quotes inside the name survive RFC 4180 quoting on the wire.
    let raw = w.oracle.get_text("/v1/exports/compliance.csv");
    assert!(raw.contains("\"'=HYPERLINK(\"\"http://x\"\")\""), "{raw}");
    assert!(raw.ends_with("\r\n"));
    // Where spreadsheets split cells at `;` (many locales), no piece starts a formula; every
    // text cell is quoted and numbers are bare.
    assert!(raw.contains(",\"run;'=cmd|' /C calc'!A0\","), "{raw}");
    for profile in ["compliance.csv", "codecarbon.csv", "sci.csv"] {
        let raw = w
            .oracle
            .get_text(&format!("/v1/exports/{profile}?status=all"));
        assert!(raw.contains("run;'=cmd"), "{profile}");
        for line in raw.lines() {
            for piece in line.split(';').skip(1) {
                assert!(
                    !piece.starts_with(['=', '+', '-', '@', '\t', '\r']),
                    "{profile}: {piece:?} in {line:?}"
                );
            }
        }
    }
    let first = raw.lines().nth(1).unwrap();
    let c = w.cert(&Csv::parse(&raw).rows[0]["certificate_id"]);
    assert!(
        first.ends_with(&format!(",{}", c.claims.windows.count)),
        "window_count, a number, is bare: {first}"
    );
}

/// A certificate quantity (Wh, g), read from its claims.
type Claim = fn(&CheckedCertificate) -> wattest_shared::Decimal6;

/// Reporting periods: consecutive exports `[a, b)`, `[b, c)` partition the rows. Certificate
/// rows go to the export holding the certificate's end (`from < period_end <= to`), hour rows
/// to the one holding the hour's start (`from <= hour < to`); summed, the two exports give the
/// certificates' totals exactly, with nothing counted twice.
fn periods(w: &World) {
    let o = &w.oracle;
    let enc = |t: DateTime<Utc>| {
        t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
            .replace('+', "%2B")
    };
    let valid = w.valid();
    let boundary = w.hour;
    let (a, c) = (boundary - Duration::days(1), boundary + Duration::days(1));
    // train-1 spans the boundary (25 s before it, 15.25 s after).
    let spanning = w
        .certificates
        .iter()
        .find(|c| c.claims.job_id.as_deref() == Some("train-1"))
        .unwrap();
    assert!(spanning.claims.period.start < boundary && boundary < spanning.claims.period.end);
    let columns: [(&str, Claim); 4] = [
        ("grid_energy_kwh", |c| c.claims.energy.grid_wh),
        ("solar_energy_kwh", |c| c.claims.energy.solar_wh),
        ("scope2_location_based_kg_co2e", |c| {
            c.claims.emissions.location_based_g_co2e
        }),
        ("avoided_emissions_kg_co2e", |c| {
            c.claims.avoided_emissions.g_co2e
        }),
    ];
    for granularity in ["certificate", "hour"] {
        let period = |from: DateTime<Utc>, to: DateTime<Utc>| {
            export(
                o,
                &format!(
                    "compliance.csv?granularity={granularity}&from={}&to={}",
                    enc(from),
                    enc(to)
                ),
            )
        };
        let (before, after) = (period(a, boundary), period(boundary, c));
        for (column, claim) in columns {
            assert_eq!(
                before.sum_nano(column) + after.sum_nano(column),
                claims_sum(&valid, claim),
                "{granularity} {column}: the two periods sum to the certificates' totals"
            );
            // The spanning certificate's own rows, across both periods: its totals, once.
            let own = |csv: &Csv| -> i128 {
                csv.rows
                    .iter()
                    .filter(|r| r["certificate_id"] == spanning.claims.jti)
                    .map(|r| nano(&r[column]))
                    .sum()
            };
            assert_eq!(
                own(&before) + own(&after),
                i128::from(claim(spanning).millionths()),
                "{granularity} {column}"
            );
        }
        // No row is in both periods.
        let keys = |csv: &Csv| -> Vec<(String, String)> {
            csv.rows
                .iter()
                .map(|r| (r["certificate_id"].clone(), r["hour"].clone()))
                .collect()
        };
        let (kb, ka) = (keys(&before), keys(&after));
        assert!(
            kb.iter().all(|k| !ka.contains(k)),
            "{granularity}: {kb:?} {ka:?}"
        );
        let in_before = kb.iter().any(|(id, _)| *id == spanning.claims.jti);
        let in_after = ka.iter().any(|(id, _)| *id == spanning.claims.jti);
        if granularity == "certificate" {
            // Whole, in the period in which it ends.
            assert!(!in_before && in_after);
            assert_eq!(before.rows.len() + after.rows.len(), valid.len());
        } else {
            // Split by hour: the hour before the boundary, and the hour starting at it.
            assert!(in_before && in_after);
            let hour = boundary.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true);
            assert!(before.rows.iter().all(|r| r["hour"] < hour));
            assert!(after.rows.iter().all(|r| r["hour"] == hour));
            let hours: usize = valid.iter().map(|c| c.claims.intensity.hourly.len()).sum();
            assert_eq!(before.rows.len() + after.rows.len(), hours);
        }
    }

    // A certificate ending exactly at a boundary is in the earlier export only (its end is
    // exclusive), with one bound or two; times with and without milliseconds.
    for job in ["train-1", "infer-1"] {
        let cert = w
            .certificates
            .iter()
            .find(|c| c.claims.job_id.as_deref() == Some(job))
            .unwrap();
        let end = cert.claims.period.end;
        let ids = |query: String| -> Vec<String> {
            export(o, &format!("compliance.csv?{query}"))
                .rows
                .iter()
                .map(|r| r["certificate_id"].clone())
                .collect()
        };
        let earlier = ids(format!("to={}", enc(end)));
        let later = ids(format!("from={}", enc(end)));
        assert!(earlier.contains(&cert.claims.jti), "{job} ends at to");
        assert!(!later.contains(&cert.claims.jti), "{job} ends at from");
        assert_eq!(earlier.len() + later.len(), valid.len(), "{job}");
        assert!(earlier.iter().all(|id| !later.contains(id)));
        assert!(ids(format!("from={}&to={}", enc(a), enc(end))).contains(&cert.claims.jti));
        assert!(!ids(format!("from={}&to={}", enc(end), enc(c))).contains(&cert.claims.jti));
    }
}

fn roles(w: &World) {
    let o = &w.oracle;
    assert_eq!(o.get_as("/v1/exports/compliance.csv", "").status(), 401);
    assert_eq!(o.get_as("/v1/exports/sci.csv", "not-a-token").status(), 401);
    for role in ["node", "auditor"] {
        let r = o.get_as("/v1/exports/compliance.csv", &o.token(role));
        assert_eq!(r.status(), 403, "{role}");
    }
    let compliance = o.token("compliance");
    for profile in ["compliance.csv", "codecarbon.csv", "sci.csv"] {
        let r = o.get_as(&format!("/v1/exports/{profile}"), &compliance);
        assert_eq!(r.status(), 200, "{profile}");
        assert!(r.headers().contains_key("wattest-export-version"));
    }
}

/// `wattest-oracle export` writes the same bytes as the HTTP endpoint.
fn offline(w: &World) {
    let o = &w.oracle;
    for (profile, query) in [
        ("compliance", "compliance.csv?granularity=hour&zone=BE"),
        ("sci", "sci.csv?status=valid"),
        ("codecarbon", "codecarbon.csv"),
    ] {
        let out = o.data_dir.path().join(format!("{profile}-offline.csv"));
        let out_arg = format!("--output={}", out.display());
        let mut cmd = w.oracle_cmd(&["export", "--profile", profile, &out_arg]);
        match profile {
            // The zone as enrollment reads it, as over HTTP.
            "compliance" => cmd.args(["--granularity", "hour", "--zone", "be"]),
            "sci" => cmd.args(["--status", "valid"]),
            _ => &mut cmd,
        };
        run_ok(&mut cmd);
        let offline = std::fs::read_to_string(&out).unwrap();
        assert_eq!(
            offline,
            o.get_text(&format!("/v1/exports/{query}")),
            "{profile}"
        );
        assert!(Csv::parse(&offline).rows.len() >= 2, "{profile}");
    }
    let out = w
        .oracle_cmd(&["node", "set", "no-such-node", "--owner", "X"])
        .output()
        .unwrap();
    assert!(!out.status.success(), "unknown node must fail");
    assert!(String::from_utf8_lossy(&out.stderr).contains("no node"));
}

#[test]
fn codecarbon_header_is_codecarbon_3_3_2() {
    let oracle = Oracle::start();
    let csv = export(&oracle, "codecarbon.csv");
    let expected: Vec<String> = CODECARBON_3_3_2
        .split(',')
        .map(|c| c.trim().to_owned())
        .collect();
    assert_eq!(expected.len(), 38);
    assert_eq!(csv.headers, expected);
    assert!(csv.rows.is_empty());
}

#[test]
fn exports_reconcile_sqlite() {
    let w = world(None);
    reconcile(&w);
    periods(&w);
    filters(&w);
    injection(&w);
    roles(&w);
    offline(&w);
}

#[test]
fn exports_reconcile_postgres() {
    let Some(url) = fresh_pg_database() else {
        return;
    };
    let w = world(Some(url));
    reconcile(&w);
    periods(&w);
    filters(&w);
    injection(&w);
    offline(&w);
}
