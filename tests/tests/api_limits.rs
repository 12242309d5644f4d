//! Bad input at the HTTP edge: oversized bodies, malformed JSON, wrong content types, invalid
//! ids, huge numbers (1e308), NaN and negative energies are all answered 4xx problem+json and
//! nothing is stored; the rate limiter answers 429 with Retry-After; unknown routes and methods
//! are problem+json too; SIGTERM finishes the request in flight before the oracle exits.

use chrono::{Duration, Utc};
use wattest_shared::SoftwareKey;
use wattest_shared::jws::sign_compact;
use wattest_shared::window::WINDOW_TYP;
use wattest_tests::{Oracle, gpu_window};

fn problem_of(r: reqwest::blocking::Response) -> (u16, serde_json::Value) {
    let status = r.status().as_u16();
    let content_type = r
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let body: serde_json::Value = r.json().unwrap_or(serde_json::Value::Null);
    assert_eq!(content_type, "application/problem+json", "{status} {body}");
    let code = body["code"].as_str().expect("code").to_owned();
    assert_eq!(body["type"], format!("https://wattest.dev/problems/{code}"));
    assert_eq!(body["status"], status);
    (status, body)
}

fn stats(oracle: &Oracle) -> serde_json::Value {
    oracle.get_json("/v1/stats")
}

#[test]
fn bad_input_is_4xx_problem_json_and_nothing_is_stored() {
    let oracle = Oracle::start();
    let client = reqwest::blocking::Client::new();
    let node_token = oracle.token("node");
    // A fresh oracle: no node, window or certificate. (Not read from /v1/stats here: its answer
    // is cached for 10 s, so a read now would be served again at the end.)

    // Oversized bodies: enrollment and telemetry.
    let huge = "a".repeat(200 * 1024);
    let (s, p) = problem_of(
        client
            .post(format!("{}/v1/telemetry", oracle.url))
            .header("content-type", "application/jose")
            .body(huge.clone())
            .send()
            .expect("POST"),
    );
    assert_eq!(
        (s, p["code"].as_str()),
        (413, Some("payload_too_large")),
        "{p}"
    );
    let (s, p) = problem_of(
        client
            .post(format!("{}/v1/nodes", oracle.url))
            .bearer_auth(&node_token)
            .header("content-type", "application/json")
            .body(format!("{{\"name\":\"{huge}\"}}"))
            .send()
            .expect("POST"),
    );
    assert_eq!(s, 413, "{p}");

    // Malformed JSON and wrong content types.
    for (content_type, body) in [
        ("application/json", "{\"name\": "),
        ("application/json", "[]"),
        ("text/plain", "{\"name\":\"x\",\"zone\":\"FR\"}"),
        (
            "application/json",
            "{\"name\":\"x\",\"zone\":\"FR\",\"public_key\":{\"kty\":\"RSA\",\"n\":1e308,\"e\":\"AQAB\"}}",
        ),
    ] {
        let (s, p) = problem_of(
            client
                .post(format!("{}/v1/nodes", oracle.url))
                .bearer_auth(&node_token)
                .header("content-type", content_type)
                .body(body)
                .send()
                .expect("POST"),
        );
        assert!((400..500).contains(&s), "{content_type} {body}: {s} {p}");
    }
    let (s, p) = problem_of(
        client
            .post(format!("{}/v1/telemetry", oracle.url))
            .header("content-type", "application/json")
            .body("{\"jws\": 12}")
            .send()
            .expect("POST"),
    );
    assert!((400..500).contains(&s), "{p}");

    // Invalid ids and query numbers.
    for path in [
        "/v1/log/entries/not-a-number",
        "/v1/log/entries/1e308",
        "/v1/log/entries/-1",
        "/v1/log/proofs/consistency?first=1e308",
        "/v1/log/proofs/consistency?first=NaN",
        "/v1/certificates?limit=-1",
        "/v1/certificates?limit=1e308",
        "/v1/certificates/not-a-uuid",
        "/v1/certificates/not-a-uuid/status",
        "/v1/exports/compliance.csv?from=yesterday",
    ] {
        let (s, p) = problem_of(oracle.get(path));
        assert!((400..500).contains(&s), "GET {path}: {s} {p}");
    }

    // Windows with huge, NaN and negative energies, properly signed by an enrolled node.
    let key = SoftwareKey::generate(2048).expect("key");
    let r = client
        .post(format!("{}/v1/nodes", oracle.url))
        .bearer_auth(&node_token)
        .json(&serde_json::json!({"name": "limits", "zone": "FR", "public_key": key.public_jwk()}))
        .send()
        .expect("enroll");
    assert_eq!(r.status(), 201);
    let node: serde_json::Value = r.json().expect("json");
    let node_id = node["node_id"].as_str().expect("node_id");
    let start = Utc::now() - Duration::seconds(120);
    let claims = gpu_window(node_id, "limits-job", 1, None, start, 400.0, false);
    let json = serde_json::to_string(&claims).expect("json");
    assert!(json.contains("\"energy_wh\":1.0"), "{json}");
    for energy in ["1e308", "-1.0", "NaN", "Infinity", "-0.5", "1e999"] {
        let payload = json.replace("\"energy_wh\":1.0", &format!("\"energy_wh\":{energy}"));
        let jws = sign_compact(&key, WINDOW_TYP, payload.as_bytes()).expect("sign");
        let r = client
            .post(format!("{}/v1/telemetry", oracle.url))
            .header("content-type", "application/jose")
            .body(jws)
            .send()
            .expect("POST");
        assert!(
            r.status().is_client_error(),
            "energy_wh {energy} was accepted: {}",
            r.status()
        );
        let (s, p) = problem_of(r);
        assert!((400..500).contains(&s), "energy_wh {energy}: {s} {p}");
    }

    // Unknown routes and methods.
    let (s, p) = problem_of(oracle.get("/v1/nope"));
    assert_eq!((s, p["code"].as_str()), (404, Some("not_found")));
    let (s, p) = problem_of(
        client
            .delete(format!("{}/v1/stats", oracle.url))
            .send()
            .expect("DELETE"),
    );
    assert_eq!((s, p["code"].as_str()), (405, Some("method_not_allowed")));

    // Nothing stored: one node (the valid enrollment above), no window, no certificate.
    let after = stats(&oracle);
    assert_eq!(after["nodes"], 1, "{after}");
    assert_eq!(after["windows"], 0, "{after}");
    assert_eq!(after["certificates"], 0, "{after}");
    let metrics = oracle.get_text("/metrics");
    assert!(
        metrics.contains(
            "wattest_http_requests_total{route=\"/v1/telemetry\",method=\"POST\",status=\"413\"}"
        ),
        "{metrics}"
    );
}

#[test]
fn rate_limit_answers_429_with_retry_after() {
    // 0.001 requests per second: the burst of 3 is all a client gets during the test.
    let oracle = Oracle::start_with(
        None,
        &["--rate-limit-per-ip", "0.001", "--rate-burst-per-ip", "3"],
    );
    let client = reqwest::blocking::Client::new();
    let statuses: Vec<reqwest::blocking::Response> = (0..4)
        .map(|_| {
            client
                .get(format!("{}/v1/stats", oracle.url))
                .send()
                .expect("GET")
        })
        .collect();
    let last = statuses.into_iter().last().expect("responses");
    let retry = last
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .expect("Retry-After seconds");
    assert!(retry >= 1);
    let (s, p) = problem_of(last);
    assert_eq!((s, p["code"].as_str()), (429, Some("rate_limited")), "{p}");
    // Liveness probes and metric scrapes from the limited address still get through.
    for path in ["/healthz", "/metrics", "/healthz"] {
        let response = client
            .get(format!("{}{path}", oracle.url))
            .send()
            .expect("GET");
        assert_eq!(response.status(), 200, "{path}");
    }
    assert_eq!(
        client
            .get(format!("{}/v1/stats", oracle.url))
            .send()
            .expect("GET")
            .status(),
        429
    );
}

#[test]
fn sigterm_finishes_the_request_in_flight_then_exits_cleanly() {
    use std::io::{Read as _, Write as _};
    let mut oracle = Oracle::start();
    let addr = oracle.url.trim_start_matches("http://").to_owned();
    let body = br#"{"jws": "not.a.jws"}"#;
    let mut stream = std::net::TcpStream::connect(&addr).expect("connect");
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .expect("timeout");
    // Headers and half the body: the request is in flight when the signal arrives.
    write!(
        stream,
        "POST /v1/telemetry HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .expect("write");
    stream.write_all(&body[..8]).expect("write");
    stream.flush().expect("flush");
    std::thread::sleep(std::time::Duration::from_millis(300));
    oracle.signal_term();
    std::thread::sleep(std::time::Duration::from_millis(300));
    stream
        .write_all(&body[8..])
        .expect("the connection stays open");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read");
    assert!(
        response.starts_with("HTTP/1.1 400"),
        "the request in flight is answered: {response}"
    );
    assert!(response.contains("malformed_jws"), "{response}");
    let status = oracle.wait_exit();
    assert!(status.success(), "graceful shutdown exits 0: {status}");
    assert!(
        std::net::TcpStream::connect(&addr).is_err(),
        "no longer listening"
    );
}
