//! Reward balances (`GET /v1/balances`): per node owner and for the cooperative fund, exactly the
//! sums of the unrevoked certificates' reward parts, at a per-source rate (`--reward-rate`).

#![allow(clippy::unwrap_used)] // a failed unwrap is the test failing, with its location

use wattest_tests::{Oracle, run_ok};

/// A decimal EUR string (6 places) as micro-euros.
fn micros(v: &serde_json::Value) -> i64 {
    let text = v.as_str().unwrap_or_else(|| panic!("not a string: {v}"));
    let (int, frac) = text.split_once('.').unwrap();
    assert_eq!(frac.len(), 6, "{text}");
    int.parse::<i64>().unwrap() * 1_000_000 + frac.parse::<i64>().unwrap()
}

/// A node enrolled with a key the test holds, in `zone`: the key and the node id.
fn enroll_key(oracle: &Oracle, name: &str, zone: &str) -> (wattest_shared::SoftwareKey, String) {
    let key = wattest_shared::SoftwareKey::generate(2048).unwrap();
    let (status, body) = oracle.post_json(
        "/v1/nodes",
        &oracle.token("node"),
        &serde_json::json!({"name": name, "zone": zone, "public_key": key.public_jwk()}),
    );
    assert_eq!(status, 201, "{body}");
    (key, body["node_id"].as_str().unwrap().to_owned())
}

/// A job of one final window (`seq`, chaining to `prev`, from `start`) with 1 Wh of measured
/// solar under its GPU's 1.11 Wh ([`solar_window`]: a plausible avoided-emissions reward):
/// `((certificate id, its wattest.reward claim), the window's hash)`.
fn solar_job(
    oracle: &Oracle,
    (key, node_id): (&wattest_shared::SoftwareKey, &str),
    job: &str,
    (seq, prev): (u64, Option<String>),
    start: chrono::DateTime<chrono::Utc>,
) -> ((String, serde_json::Value), String) {
    let (status, answer) = post_signed(
        oracle,
        key,
        &solar_window(node_id, job, seq, prev, start, true),
    );
    assert_eq!(status, 200, "{answer}");
    let id = answer["certificate"]["id"].as_str().unwrap().to_owned();
    let claims = oracle.get_json(&format!("/v1/certificates/{id}"))["claims"].clone();
    (
        (id, claims["wattest.reward"].clone()),
        answer["hash"].as_str().unwrap().to_owned(),
    )
}

#[test]
fn balances_sum_unrevoked_reward_parts_per_owner_and_for_the_fund() {
    let oracle = Oracle::start_with(None, &["--reward-rate", "solar=30"]);
    let (key_a, node_a) = enroll_key(&oracle, "a", "DE");
    let (key_b, node_b) = enroll_key(&oracle, "b", "BE");
    let start = chrono::Utc::now() - chrono::Duration::hours(2);
    let (a1, a1_hash) = solar_job(&oracle, (&key_a, &node_a), "a-1", (1, None), start);
    let ten = chrono::Duration::seconds(10);
    let (a2, _) = solar_job(
        &oracle,
        (&key_a, &node_a),
        "a-2",
        (2, Some(a1_hash)),
        start + ten,
    );
    let (b1, _) = solar_job(
        &oracle,
        (&key_b, &node_b),
        "b-1",
        (1, None),
        start + ten / 2,
    );
    for (_, reward) in [&a1, &a2, &b1] {
        assert_eq!(
            reward["price_per_tonne"], "30.000000",
            "the solar rate applies"
        );
        assert!(micros(&reward["total"]) > 0, "{reward}");
    }
    run_ok(&mut oracle.cli(&["node", "set", &node_a, "--owner", "Acme Research"]));

    let auditor = oracle.token("auditor");
    let balances = |query: &str| -> serde_json::Value {
        let r = oracle.get_as(&format!("/v1/balances{query}"), &auditor);
        assert_eq!(r.status(), 200, "{query}");
        r.json().unwrap()
    };
    let part = |c: &(String, serde_json::Value), k: &str| micros(&c.1[k]);

    let all = balances("");
    assert_eq!(all["currency"], "EUR");
    let owners = all["owners"].as_array().unwrap();
    assert_eq!(owners.len(), 2, "{all}");
    assert_eq!(owners[0]["owner"], "Acme Research");
    assert_eq!(owners[0]["nodes"], 1);
    assert_eq!(owners[0]["certificates"], 2);
    assert_eq!(
        micros(&owners[0]["reward_eur"]),
        part(&a1, "node_owner") + part(&a2, "node_owner")
    );
    assert!(owners[1]["owner"].is_null(), "owner-less group last: {all}");
    assert_eq!(micros(&owners[1]["reward_eur"]), part(&b1, "node_owner"));
    let fund: i64 = [&a1, &a2, &b1]
        .iter()
        .map(|c| part(c, "cooperative_fund"))
        .sum();
    assert_eq!(micros(&all["cooperative_fund"]["reward_eur"]), fund);
    assert_eq!(all["cooperative_fund"]["certificates"], 3);
    let total: i64 = [&a1, &a2, &b1].iter().map(|c| part(c, "total")).sum();
    assert_eq!(micros(&all["total_reward_eur"]), total);
    assert_eq!(
        owners.iter().map(|o| micros(&o["reward_eur"])).sum::<i64>() + fund,
        total,
        "owners + fund = total, to the micro-euro"
    );

    // A revoked certificate's reward is void.
    let (status, body) = oracle.post_json(
        &format!("/v1/certificates/{}/revocation", a2.0),
        oracle.admin_token(),
        &serde_json::json!({ "reason": "measurement_error" }),
    );
    assert!(status < 300, "{status} {body}");
    let after = balances("");
    assert_eq!(after["owners"][0]["certificates"], 1);
    assert_eq!(
        micros(&after["owners"][0]["reward_eur"]),
        part(&a1, "node_owner")
    );
    assert_eq!(
        micros(&after["total_reward_eur"]),
        total - part(&a2, "total")
    );
    // The public totals leave it out too: the same fund, two certificates.
    let stats = oracle.get_json("/v1/stats");
    assert_eq!(stats["certificates"], 2);
    assert_eq!(
        micros(&stats["cooperative_fund_eur"]),
        micros(&after["cooperative_fund"]["reward_eur"])
    );

    // Reporting periods partition certificates by their period end, as the exports do: a
    // boundary at a1's end puts a1 in the earlier period only.
    let a1_end = oracle.get_json(&format!("/v1/certificates/{}", a1.0))["claims"]["wattest.period"]
        ["end"]
        .as_str()
        .unwrap()
        .to_owned();
    let before = balances(&format!("?to={}", urlencode(&a1_end)));
    let after_a1 = balances(&format!("?from={}", urlencode(&a1_end)));
    assert_eq!(
        before["owners"][0]["certificates"], 1,
        "a1 ends at the boundary: {before}"
    );
    assert_eq!(
        micros(&before["total_reward_eur"]) + micros(&after_a1["total_reward_eur"]),
        micros(&after["total_reward_eur"]),
        "consecutive periods sum to the whole, nothing counted twice"
    );

    // Time filters, and their errors.
    let future = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
    let none = balances(&format!("?from={}", urlencode(&future)));
    assert_eq!(none["owners"].as_array().unwrap().len(), 0);
    assert_eq!(none["total_reward_eur"], "0.000000");
    let r = oracle.get_as(
        &format!("/v1/balances?from={0}&to={0}", urlencode(&future)),
        &auditor,
    );
    assert_eq!(r.status(), 400);
    let r = oracle.get_as("/v1/balances?owner=x", &auditor);
    assert_eq!(r.status(), 400, "unknown parameters are refused");
    // Nodes and compliance staff do not read balances.
    for role in ["node", "compliance"] {
        let r = oracle.get_as("/v1/balances", &oracle.token(role));
        assert_eq!(r.status(), 403, "{role}");
    }
}

fn urlencode(s: &str) -> String {
    s.replace('+', "%2B").replace(':', "%3A")
}

/// Signs `claims` (seq, prev and end as given) with `key` and posts them: status and answer.
fn post_signed(
    oracle: &Oracle,
    key: &wattest_shared::SoftwareKey,
    claims: &wattest_shared::WindowClaims,
) -> (u16, serde_json::Value) {
    let jws = wattest_shared::jws::sign_compact(
        key,
        wattest_shared::window::WINDOW_TYP,
        &serde_json::to_vec(claims).unwrap(),
    )
    .unwrap();
    wattest_tests::post_window(&oracle.url, &jws)
}

/// A GPU window with `solar_wh` of measured solar (an avoided-emissions reward).
fn solar_window(
    node_id: &str,
    job: &str,
    seq: u64,
    prev: Option<String>,
    start: chrono::DateTime<chrono::Utc>,
    is_final: bool,
) -> wattest_shared::WindowClaims {
    use wattest_shared::window::{Method, SourceEnergy, SourceKind};
    let mut claims = wattest_tests::gpu_window(node_id, job, seq, prev, start, 400.0, is_final);
    // 1 Wh over 10 s (360 W), under the GPU's 1.11 Wh: plausible, so the reward is paid.
    claims.sources.push(SourceEnergy {
        source: "pv0".into(),
        kind: SourceKind::Solar,
        method: Method::SolarPowerIntegration,
        energy_wh: wattest_shared::WattHours(1.0),
        mean_w: wattest_shared::Watts(360.0),
        max_w: wattest_shared::Watts(400.0),
        samples: 10,
        uncertainty_pct: 5.0,
        shared_device: false,
    });
    claims.solar_wh = wattest_shared::WattHours(1.0);
    claims
}

/// A certificate whose `ear.status` is `contraindicated` (its node was flagged: the verifier
/// holds the evidence untrustworthy) keeps its figures but pays no reward: `/v1/balances` leaves
/// it out (protocol.md, `/v1/balances`; docs/methodology.md).
#[test]
fn balances_leave_contraindicated_certificates_out() {
    let oracle = Oracle::start();
    let start = chrono::Utc::now() - chrono::Duration::hours(2);
    let (key_a, node_a) = enroll_key(&oracle, "clean", "DE");
    let (key_b, node_b) = enroll_key(&oracle, "flagged", "DE");

    // Node A: one job, one window.
    let (status, a) = post_signed(
        &oracle,
        &key_a,
        &solar_window(&node_a, "a", 1, None, start, true),
    );
    assert_eq!(status, 200, "{a}");
    let a_id = a["certificate"]["id"].as_str().unwrap().to_owned();

    // Node B: seq 1, then another window for seq 1 (a conflict flags the node), then seq 2
    // closes the job: its certificate is contraindicated.
    let (status, b1) = post_signed(
        &oracle,
        &key_b,
        &solar_window(&node_b, "b", 1, None, start, false),
    );
    assert_eq!(status, 200, "{b1}");
    let mut conflict = solar_window(&node_b, "b", 1, None, start, false);
    conflict.sources[0].energy_wh = wattest_shared::WattHours(0.5);
    conflict.sources[0].mean_w = wattest_shared::Watts(180.0);
    let (status, answer) = post_signed(&oracle, &key_b, &conflict);
    assert_eq!(
        (status, &answer["code"]),
        (409, &"seq_conflict".into()),
        "{answer}"
    );
    let prev = b1["hash"].as_str().map(str::to_owned);
    let (status, b) = post_signed(
        &oracle,
        &key_b,
        &solar_window(
            &node_b,
            "b",
            2,
            prev,
            start + chrono::Duration::seconds(10),
            true,
        ),
    );
    assert_eq!(status, 200, "{b}");
    let b_id = b["certificate"]["id"].as_str().unwrap().to_owned();

    let claims = |id: &str| oracle.get_json(&format!("/v1/certificates/{id}"))["claims"].clone();
    let (a_claims, b_claims) = (claims(&a_id), claims(&b_id));
    assert_ne!(a_claims["ear.status"], "contraindicated", "{a_claims}");
    assert_eq!(b_claims["ear.status"], "contraindicated", "{b_claims}");
    // The contraindicated certificate keeps its claims, reward included.
    assert!(
        micros(&b_claims["wattest.reward"]["total"]) > 0,
        "{b_claims}"
    );
    assert!(
        micros(&a_claims["wattest.reward"]["total"]) > 0,
        "{a_claims}"
    );

    let r = oracle.get_as("/v1/balances", &oracle.token("auditor"));
    assert_eq!(r.status(), 200);
    let balances: serde_json::Value = r.json().unwrap();
    let owners = balances["owners"].as_array().unwrap();
    assert_eq!(owners.len(), 1, "{balances}");
    assert_eq!(owners[0]["nodes"], 1, "{balances}");
    assert_eq!(owners[0]["certificates"], 1, "{balances}");
    assert_eq!(
        micros(&owners[0]["reward_eur"]),
        micros(&a_claims["wattest.reward"]["node_owner"]),
        "{balances}"
    );
    // The public totals pay the fund the same: the contraindicated certificate's share is out.
    let stats = oracle.get_json("/v1/stats");
    assert_eq!(stats["certificates"], 2, "{stats}");
    assert_eq!(
        micros(&stats["cooperative_fund_eur"]),
        micros(&a_claims["wattest.reward"]["cooperative_fund"]),
        "{stats}"
    );
}
