//! `wattest-loadgen`: a load generator for the oracle's telemetry ingest (a benchmark, not a
//! test). It enrolls NODES software-key nodes, signs WINDOWS windows per node in advance (so the
//! generator's own RSA signing is not measured), then posts them from CONCURRENCY threads, each
//! node's windows in order, and prints throughput and latency percentiles.
//!
//!   wattest-loadgen --oracle http://127.0.0.1:8080 --token "$NODE_TOKEN" \
//!       [--nodes 64] [--windows 50] [--concurrency 32]

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Mutex;
use std::time::{Duration, Instant};
use wattest_shared::SoftwareKey;
use wattest_shared::jws::{jws_hash, sign_compact};
use wattest_shared::window::WINDOW_TYP;

struct Args {
    oracle: String,
    token: String,
    nodes: usize,
    windows: usize,
    concurrency: usize,
}

fn parse_args() -> Args {
    let mut args = Args {
        oracle: String::new(),
        token: String::new(),
        nodes: 64,
        windows: 50,
        concurrency: 32,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--oracle" => args.oracle = value,
            "--token" => args.token = value,
            "--nodes" => args.nodes = value.parse().expect("--nodes N"),
            "--windows" => args.windows = value.parse().expect("--windows N"),
            "--concurrency" => args.concurrency = value.parse().expect("--concurrency N"),
            other => panic!("unknown flag {other}; see the doc comment of wattest-loadgen"),
        }
    }
    assert!(
        !args.oracle.is_empty() && !args.token.is_empty(),
        "--oracle URL and --token T are required"
    );
    args
}

/// One node's pre-signed chain.
struct Chain {
    jws: Vec<String>,
}

fn build_chain(client: &reqwest::blocking::Client, args: &Args, index: usize) -> Chain {
    let key = SoftwareKey::generate(2048).unwrap();
    let response = client
        .post(format!("{}/v1/nodes", args.oracle))
        .bearer_auth(&args.token)
        .json(&serde_json::json!({ "name": format!("load-{index}"), "zone": "BE", "public_key": key.public_jwk() }))
        .send()
        .unwrap();
    assert_eq!(
        response.status(),
        201,
        "enrollment failed: {}",
        response.text().unwrap_or_default()
    );
    let node_id = response.json::<serde_json::Value>().unwrap()["node_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let t0 = chrono::Utc::now() - chrono::Duration::seconds(10 * args.windows as i64 + 60);
    let mut prev = None;
    let mut jws = Vec::with_capacity(args.windows);
    for seq in 1..=args.windows as u64 {
        let start = t0 + chrono::Duration::seconds(10 * (seq as i64 - 1));
        let claims = wattest_tests::gpu_window(
            &node_id,
            &format!("load-job-{index}"),
            seq,
            prev.clone(),
            start,
            380.0,
            seq == args.windows as u64,
        );
        let signed = sign_compact(&key, WINDOW_TYP, &serde_json::to_vec(&claims).unwrap()).unwrap();
        prev = Some(jws_hash(&signed));
        jws.push(signed);
    }
    Chain { jws }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn main() {
    let args = parse_args();
    wattest_shared::tls::install_crypto_provider();
    let client = reqwest::blocking::Client::builder()
        .pool_max_idle_per_host(args.concurrency)
        .build()
        .unwrap();
    eprintln!(
        "Enrolling {} nodes and signing {} windows each…",
        args.nodes, args.windows
    );
    let chains: Vec<Chain> = (0..args.nodes)
        .map(|i| build_chain(&client, &args, i))
        .collect();
    // Work queue: whole chains, so each node's windows go in order on one thread.
    let queue = Mutex::new(chains);
    let latencies = Mutex::new(Vec::with_capacity(args.nodes * args.windows));
    let started = Instant::now();
    std::thread::scope(|scope| {
        for _ in 0..args.concurrency {
            scope.spawn(|| {
                let mut local = Vec::new();
                loop {
                    // Take the lock only to pop: a `while let` would hold the guard for the body.
                    let next = queue.lock().unwrap().pop();
                    let Some(chain) = next else { break };
                    for jws in &chain.jws {
                        let t = Instant::now();
                        let r = client
                            .post(format!("{}/v1/telemetry", args.oracle))
                            .header("content-type", "application/jose")
                            .body(jws.clone())
                            .send()
                            .unwrap();
                        let status = r.status();
                        assert!(
                            status.is_success(),
                            "window refused: {status} {}",
                            r.text().unwrap_or_default()
                        );
                        local.push(t.elapsed());
                    }
                }
                latencies.lock().unwrap().extend(local);
            });
        }
    });
    let elapsed = started.elapsed();
    let mut lat = latencies.into_inner().unwrap();
    lat.sort_unstable();
    let n = lat.len();
    println!(
        "{n} windows ({} certificates) in {:.2} s: {:.0} windows/s; latency p50 {:.1} ms, p95 {:.1} ms, p99 {:.1} ms (nodes {}, concurrency {})",
        args.nodes,
        elapsed.as_secs_f64(),
        n as f64 / elapsed.as_secs_f64(),
        percentile(&lat, 0.50).as_secs_f64() * 1e3,
        percentile(&lat, 0.95).as_secs_f64() * 1e3,
        percentile(&lat, 0.99).as_secs_f64() * 1e3,
        args.nodes,
        args.concurrency
    );
}
