//! `wattest-loadgen`: a load generator for the oracle's telemetry ingest (a benchmark, not a
//! test). It enrolls NODES software-key nodes (`POST /v1/nodes`, RSA-2048 keys), signs WINDOWS
//! windows per node in advance on all cores (so the generator's own RSA signing is not
//! measured), then posts them to `{ORACLE}/v1/telemetry` (`Content-Type: application/jose`,
//! body = the compact JWS) over HTTP/1.1 keep-alive from one tokio runtime, each node's windows
//! strictly in order (window k+1 of a node is sent only once window k's response has arrived).
//! The last window of each node is final, so each node yields one certificate (with `--jobs J`,
//! J jobs and certificates per node, spread over the run). With
//! `--batch N` (N > 1) it posts up to N consecutive windows of one node per request to
//! `{ORACLE}/v1/telemetry/batch` instead (`docs/protocol.md` §3.6).
//!
//!   wattest-loadgen --oracle http://127.0.0.1:8080 --token "$NODE_TOKEN" \
//!       [--nodes 64] [--windows 50] [--concurrency 32] [--rate R] [--batch N] [--json]
//!
//! Flags:
//! - `--oracle URL` (required): base URL of the oracle, without a trailing `/v1/...`.
//! - `--token T` (required): bearer token with the `node` role, used for the enrollments.
//! - `--nodes N` (default 64): nodes enrolled, one job (and one certificate) per node.
//! - `--windows N` (default 50): windows signed and posted per node; N×NODES windows in all.
//! - `--concurrency N` (default 32): closed loop, the number of posting tasks (connections);
//!   open loop, the most requests in flight at once (so at most N connections): a window that
//!   waits for a free slot waits on its latency clock.
//! - `--rate R` (windows/s, aggregate over all nodes; default: none = closed loop): open loop.
//!   Node i's window k (i, k from 0) is due at `t0 + (k·NODES + i) / R` seconds, i.e. each node
//!   posts one window every NODES/R s, the nodes staggered evenly over that period, so the
//!   offered rate is R. A window is sent at max(its due time, its predecessor's response); its
//!   latency is measured from its DUE time to its response, so queueing in the oracle (or behind
//!   the node's own previous window) is not hidden (no coordinated omission). tokio's timer has
//!   a 1 ms tick: a sleeping window is sent up to ~1 ms after its due time, and that counts.
//! - `--batch N` (default 1, at most 500): windows per request. 1: one window per
//!   `POST /v1/telemetry` (`application/jose`), as above. N > 1: each request is
//!   `POST /v1/telemetry/batch` (`application/json`, `{"windows": [...]}`) with the next up to N
//!   windows of ONE node's chain, in seq order (a node's last batch may be shorter); a node's
//!   next batch is sent only once the previous one's response has arrived. Every window of a
//!   batch gets the latency of the request that carried it: closed loop, send → response; open
//!   loop, from the batch's due time. In the open loop the requests, not the windows, are
//!   spread evenly: request c of node i is due at t0 + (c·NODES + i)·N/R, so requests arrive at
//!   R/N per second and the offered rate is still R windows/s (a batch is sent at max(its due
//!   time, its node's previous response)). `--concurrency` then counts requests (batches), not
//!   windows.
//! - `--jobs J` (default 1): each node's windows form J consecutive jobs of `ceil(WINDOWS / J)`
//!   windows, each ending with a final window (a certificate). Node i's job boundaries are
//!   shifted by i/NODES of a job, so the certificates are spread over the run instead of every
//!   node's job ending at the same moment (with J = 1 all jobs end together, in the run's last
//!   NODES/RATE·BATCH seconds).
//! - `--json`: print one JSON object instead of the human line: `mode` ("closed"|"open"),
//!   `windows`, `certificates`, `elapsed_s`, `windows_per_s`, `offered_per_s` (null when
//!   closed), `p50_ms`, `p95_ms`, `p99_ms`, `max_ms` (null when no window was accepted),
//!   `steady_p50_ms`, `steady_p99_ms` (the same over the windows of requests that carry no
//!   final window, i.e. while no certificate of theirs is issued), `nodes`, `concurrency`,
//!   `batch`, `errors`, `errors_by_status`.
//! - `--timeline`: also print to stderr, per 250 ms of latency-clock start (due time in the
//!   open loop), the windows accepted and their worst latency: where in the run the tail is.
//!
//! Closed loop (default): CONCURRENCY tasks each take a whole node chain from a shared queue and
//! post its windows (or batches) as fast as the responses come back; latency is send →
//! response; throughput = accepted windows / elapsed (first send to last response). Open loop:
//! elapsed is from t0 to the last response, achieved = accepted windows / elapsed. Throughput
//! always counts windows, not requests.
//!
//! `windows` counts accepted windows (200, or 202 held); any other status or a transport error is
//! counted by status in `errors` (stderr: `errors: {"409": 3, "transport": 1}`, with the first
//! answer of each kind), is left out of the latency figures, and makes the exit code 1. With
//! `--batch`, each window's result counts alone, by its own `status` (the first answer of a
//! kind shows the problem's `code` and `detail`); a batch request that fails as a whole
//! (transport error, a status other than 200, an answer that cannot be read or has the wrong
//! number of results) counts each of its windows as an error of that kind. A failed
//! enrollment aborts the run before any posting (exit code 1).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use reqwest::header::CONTENT_TYPE;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio::time::Instant;
use wattest_shared::SoftwareKey;
use wattest_shared::api::{MAX_BATCH_WINDOWS, TelemetryBatchRequest, TelemetryBatchResponse};
use wattest_shared::jws::{jws_hash, sign_compact};
use wattest_shared::window::WINDOW_TYP;

struct Args {
    oracle: String,
    token: String,
    nodes: usize,
    windows: usize,
    concurrency: usize,
    /// Open loop: offered windows/s, aggregate.
    rate: Option<f64>,
    /// Windows per request: 1 = `POST /v1/telemetry`, more = `POST /v1/telemetry/batch`.
    batch: usize,
    json: bool,
    /// Print the latency timeline (250 ms buckets) to stderr.
    timeline: bool,
    /// Jobs per node (each ends with a final window, hence a certificate).
    jobs: usize,
}

fn parse_args() -> Args {
    let mut args = Args {
        oracle: String::new(),
        token: String::new(),
        nodes: 64,
        windows: 50,
        concurrency: 32,
        rate: None,
        batch: 1,
        json: false,
        timeline: false,
        jobs: 1,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        match flag.as_str() {
            "--json" => {
                args.json = true;
                continue;
            }
            "--timeline" => {
                args.timeline = true;
                continue;
            }
            "-h" | "--help" => {
                println!(
                    "wattest-loadgen --oracle URL --token T [--nodes 64] [--windows 50] \
                     [--concurrency 32] [--rate WINDOWS_PER_S] [--batch N] [--jobs 1] [--json] [--timeline]\n\
                     --batch N: up to N consecutive windows of one node per request to \
                     /v1/telemetry/batch (default 1: one window per POST /v1/telemetry; at most \
                     {MAX_BATCH_WINDOWS})\n\
                     (see the doc comment of tests/src/bin/wattest-loadgen.rs)"
                );
                std::process::exit(0);
            }
            _ => {}
        }
        let value = it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--oracle" => args.oracle = value.trim_end_matches('/').to_owned(),
            "--token" => args.token = value,
            "--nodes" => args.nodes = value.parse().expect("--nodes N"),
            "--windows" => args.windows = value.parse().expect("--windows N"),
            "--concurrency" => args.concurrency = value.parse().expect("--concurrency N"),
            "--rate" => args.rate = Some(value.parse().expect("--rate WINDOWS_PER_S")),
            "--batch" => args.batch = value.parse().expect("--batch N"),
            "--jobs" => args.jobs = value.parse().expect("--jobs N"),
            other => panic!("unknown flag {other}; see the doc comment of wattest-loadgen"),
        }
    }
    assert!(
        !args.oracle.is_empty() && !args.token.is_empty(),
        "--oracle URL and --token T are required"
    );
    assert!(
        args.nodes > 0 && args.windows > 0 && args.concurrency > 0,
        "--nodes, --windows and --concurrency must be at least 1"
    );
    assert!(
        (1..=args.windows).contains(&args.jobs),
        "--jobs must be 1 to --windows"
    );
    assert!(
        (1..=MAX_BATCH_WINDOWS).contains(&args.batch),
        "--batch must be 1 to {MAX_BATCH_WINDOWS}"
    );
    if let Some(rate) = args.rate {
        assert!(
            rate.is_finite() && rate > 0.0,
            "--rate must be a positive number of windows/s"
        );
    }
    args
}

/// `f(0..n)` on all cores, in order.
fn parallel_map<T: Send>(n: usize, f: impl Fn(usize) -> T + Sync) -> Vec<T> {
    let threads = std::thread::available_parallelism()
        .map_or(1, usize::from)
        .clamp(1, n.max(1));
    let chunk = n.div_ceil(threads).max(1);
    let f = &f;
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..n)
            .step_by(chunk)
            .map(|lo| scope.spawn(move || (lo..(lo + chunk).min(n)).map(f).collect::<Vec<T>>()))
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    })
}

/// Enrolls one node per key (at most `concurrency` enrollments at once); their node ids.
async fn enroll(
    client: &reqwest::Client,
    args: &Args,
    keys: &[SoftwareKey],
) -> Result<Vec<String>, String> {
    let permits = Arc::new(Semaphore::new(args.concurrency));
    let mut tasks = tokio::task::JoinSet::new();
    for (index, key) in keys.iter().enumerate() {
        let request = client
            .post(format!("{}/v1/nodes", args.oracle))
            .bearer_auth(&args.token)
            .json(&serde_json::json!({
                "name": format!("load-{index}"),
                "zone": "BE",
                "public_key": key.public_jwk(),
            }));
        let permits = permits.clone();
        tasks.spawn(async move {
            let _permit = permits.acquire_owned().await.unwrap();
            enroll_one(request, index).await
        });
    }
    let mut ids = vec![String::new(); keys.len()];
    while let Some(joined) = tasks.join_next().await {
        let (index, node_id) = joined.unwrap()?;
        ids[index] = node_id;
    }
    Ok(ids)
}

/// Sends one enrollment request; the node's index and id.
async fn enroll_one(
    request: reqwest::RequestBuilder,
    index: usize,
) -> Result<(usize, String), String> {
    let failed = |what: String| format!("enrollment of load-{index} failed: {what}");
    let response = request.send().await.map_err(|e| failed(error_chain(&e)))?;
    let status = response.status();
    let body = response.text().await.unwrap_or_default();
    if status != 201 {
        return Err(failed(format!("{status} {body}")));
    }
    let value: serde_json::Value =
        serde_json::from_str(&body).map_err(|e| failed(format!("bad JSON ({e}): {body}")))?;
    let node_id = value["node_id"]
        .as_str()
        .ok_or_else(|| failed(format!("no node_id in {body}")))?;
    Ok((index, node_id.to_owned()))
}

/// One node's pre-signed windows, in seq order, and which of them end a job.
struct Chain {
    windows: Vec<String>,
    finals: Vec<bool>,
}

impl Chain {
    /// Whether the `n` windows from `k` on include a job's final window.
    fn has_final(&self, k: usize, n: usize) -> bool {
        self.finals[k..k + n].contains(&true)
    }
}

/// Node `index` of `nodes`' pre-signed chain of `windows` windows in `jobs` jobs. With one job
/// its last window is final; with more, jobs are `ceil(windows / jobs)` windows long and node
/// `index`'s boundaries are shifted by `index / nodes` of a job (its first and last jobs are
/// shorter), so the nodes' final windows, and the certificates, are spread over the run.
fn sign_chain(
    key: &SoftwareKey,
    node_id: &str,
    index: usize,
    nodes: usize,
    windows: usize,
    jobs: usize,
) -> Chain {
    let t0 = chrono::Utc::now() - chrono::Duration::seconds(10 * windows as i64 + 60);
    let length = windows.div_ceil(jobs);
    let shift = if jobs == 1 { 0 } else { index * length / nodes };
    let mut prev = None;
    let mut jws = Vec::with_capacity(windows);
    let mut finals = Vec::with_capacity(windows);
    for seq in 1..=windows as u64 {
        let k = seq as usize - 1;
        let is_final = k + 1 == windows || (k + 1 + shift).is_multiple_of(length);
        let start = t0 + chrono::Duration::seconds(10 * (seq as i64 - 1));
        let claims = wattest_tests::gpu_window(
            node_id,
            &format!("load-job-{index}-{}", (k + shift) / length),
            seq,
            prev.clone(),
            start,
            380.0,
            is_final,
        );
        let signed = sign_compact(key, WINDOW_TYP, &serde_json::to_vec(&claims).unwrap()).unwrap();
        prev = Some(jws_hash(&signed));
        jws.push(signed);
        finals.push(is_final);
    }
    Chain {
        windows: jws,
        finals,
    }
}

/// What one posting task saw.
#[derive(Default)]
struct Tally {
    /// Latencies of the accepted windows.
    latencies: Vec<Duration>,
    /// Latencies of the accepted windows of requests that carry no final window (no
    /// certificate is issued while they are answered).
    steady: Vec<Duration>,
    /// Per accepted window: when its latency clock started, and the latency.
    timeline: Vec<(Instant, Duration)>,
    /// Certificates returned by accepted final windows.
    certificates: u64,
    /// Refused or failed windows by status ("409", "transport", …).
    errors: BTreeMap<String, u64>,
    /// The first answer of each error kind, for stderr.
    first_error: BTreeMap<String, String>,
    /// When the last response arrived.
    last: Option<Instant>,
}

impl Tally {
    fn error(&mut self, kind: String, detail: String) {
        self.errors_of(kind, 1, detail);
    }

    /// `n` windows failed the same way (a batch request that failed as a whole).
    fn errors_of(&mut self, kind: String, n: usize, detail: String) {
        *self.errors.entry(kind.clone()).or_default() += n as u64;
        self.first_error.entry(kind).or_insert(detail);
    }

    /// One accepted window, of a request that carries a final window or not.
    fn accepted(&mut self, since: Instant, done: Instant, is_final: bool) {
        self.latencies.push(done - since);
        if !is_final {
            self.steady.push(done - since);
        }
        self.timeline.push((since, done - since));
    }

    fn merge(&mut self, other: Self) {
        self.latencies.extend(other.latencies);
        self.steady.extend(other.steady);
        self.timeline.extend(other.timeline);
        self.certificates += other.certificates;
        for (kind, n) in other.errors {
            *self.errors.entry(kind).or_default() += n;
        }
        for (kind, detail) in other.first_error {
            self.first_error.entry(kind).or_insert(detail);
        }
        self.last = self.last.max(other.last);
    }
}

/// An error and its sources, `: `-separated (reqwest's own message omits the cause).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Sends `request` and reads the whole answer (the connection goes back to the pool only
/// then): its status, body and arrival time. `None` after a transport failure, counted in
/// `tally` as `windows` errors.
async fn exchange(
    request: reqwest::RequestBuilder,
    windows: usize,
    tally: &mut Tally,
) -> Option<(reqwest::StatusCode, Vec<u8>, Instant)> {
    let response = match request.send().await {
        Ok(response) => response,
        Err(e) => {
            tally.last = Some(Instant::now());
            tally.errors_of("transport".into(), windows, error_chain(&e));
            return None;
        }
    };
    let status = response.status();
    let body = response.bytes().await;
    let done = Instant::now();
    tally.last = Some(done);
    match body {
        Ok(body) => Some((status, body.into(), done)),
        Err(e) => {
            let detail = format!("reading the {status} answer: {}", error_chain(&e));
            tally.errors_of("transport".into(), windows, detail);
            None
        }
    }
}

/// Posts one window; records it in `tally` with its latency measured from `since`.
async fn post(
    client: &reqwest::Client,
    url: &str,
    jws: &str,
    is_final: bool,
    since: Instant,
    tally: &mut Tally,
) {
    let request = client
        .post(url)
        .header(CONTENT_TYPE, "application/jose")
        .body(jws.to_owned());
    let Some((status, body, done)) = exchange(request, 1, tally).await else {
        return;
    };
    if status != 200 && status != 202 {
        tally.error(
            status.as_u16().to_string(),
            String::from_utf8_lossy(&body).chars().take(300).collect(),
        );
        return;
    }
    tally.accepted(since, done, is_final);
    if is_final
        && status == 200
        && serde_json::from_slice::<serde_json::Value>(&body)
            .is_ok_and(|v| !v["certificate"].is_null())
    {
        tally.certificates += 1;
    }
}

/// Posts consecutive windows of one node in one `POST /v1/telemetry/batch`; records each
/// window's result in `tally`, with the request's latency measured from `since` (`is_final`: the
/// batch ends with its chain's last window).
async fn post_batch(
    client: &reqwest::Client,
    url: &str,
    windows: &[String],
    is_final: bool,
    since: Instant,
    tally: &mut Tally,
) {
    let n = windows.len();
    let request = TelemetryBatchRequest {
        windows: windows.to_vec(),
    };
    let Some((status, body, done)) = exchange(client.post(url).json(&request), n, tally).await
    else {
        return;
    };
    if status != 200 {
        tally.errors_of(
            status.as_u16().to_string(),
            n,
            String::from_utf8_lossy(&body).chars().take(300).collect(),
        );
        return;
    }
    let results = match serde_json::from_slice::<TelemetryBatchResponse>(&body) {
        Ok(answer) if answer.results.len() == n => answer.results,
        Ok(answer) => {
            let detail = format!("{} results for {n} windows", answer.results.len());
            tally.errors_of("bad_answer".into(), n, detail);
            return;
        }
        Err(e) => {
            let detail = format!(
                "{e}: {}",
                String::from_utf8_lossy(&body)
                    .chars()
                    .take(300)
                    .collect::<String>()
            );
            tally.errors_of("bad_answer".into(), n, detail);
            return;
        }
    };
    for result in results {
        if result.status == 200 || result.status == 202 {
            tally.accepted(since, done, is_final);
            if result
                .accepted
                .as_ref()
                .is_some_and(|a| a.certificate.is_some())
            {
                tally.certificates += 1;
            }
        } else {
            let detail = result.problem.map_or_else(
                || "no problem in the result".to_owned(),
                |p| format!("{}: {}", p.code, p.detail),
            );
            tally.error(result.status.to_string(), detail);
        }
    }
}

/// Posts `windows`, consecutive windows of one node: one `POST /v1/telemetry` when `batch` is
/// 1 (`is_final`: the window is its chain's last), else one `POST /v1/telemetry/batch`.
async fn send(
    client: &reqwest::Client,
    url: &str,
    windows: &[String],
    batch: usize,
    is_final: bool,
    since: Instant,
    tally: &mut Tally,
) {
    if batch == 1 {
        post(client, url, &windows[0], is_final, since, tally).await;
    } else {
        post_batch(client, url, windows, is_final, since, tally).await;
    }
}

/// Closed loop: `concurrency` tasks take whole chains from a shared queue and post them (in
/// requests of up to `batch` windows) as fast as the responses come back. Returns the tally and
/// the instant posting started.
async fn closed_loop(
    client: &reqwest::Client,
    url: &Arc<str>,
    chains: &Arc<Vec<Chain>>,
    concurrency: usize,
    batch: usize,
) -> (Tally, Instant) {
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..concurrency.min(chains.len()) {
        let (client, url, chains, next) =
            (client.clone(), url.clone(), chains.clone(), next.clone());
        tasks.spawn(async move {
            let mut tally = Tally::default();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(chain) = chains.get(i) else { break };
                for (c, windows) in chain.windows.chunks(batch).enumerate() {
                    let is_final = chain.has_final(c * batch, windows.len());
                    let since = Instant::now();
                    send(&client, &url, windows, batch, is_final, since, &mut tally).await;
                }
            }
            tally
        });
    }
    (join_tallies(tasks).await, started)
}

/// Waits for every posting task and merges their tallies.
async fn join_tallies(mut tasks: tokio::task::JoinSet<Tally>) -> Tally {
    let mut total = Tally::default();
    while let Some(joined) = tasks.join_next().await {
        total.merge(joined.unwrap());
    }
    total
}

/// Open loop: one task per node, node i's window k due at `t0 + (k·nodes + i) / rate`; a
/// request of up to `batch` windows is due when its first window is; at most `concurrency`
/// requests in flight. Returns the tally and t0.
async fn open_loop(
    client: &reqwest::Client,
    url: &Arc<str>,
    chains: &Arc<Vec<Chain>>,
    concurrency: usize,
    rate: f64,
    batch: usize,
) -> (Tally, Instant) {
    let nodes = chains.len();
    let permits = Arc::new(Semaphore::new(concurrency));
    // A little head start so that spawning the tasks does not make the first windows late.
    let t0 = Instant::now() + Duration::from_millis(50);
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..nodes {
        let (client, url, chains, permits) =
            (client.clone(), url.clone(), chains.clone(), permits.clone());
        tasks.spawn(async move {
            let mut tally = Tally::default();
            let chain = &chains[i];
            for (c, windows) in chain.windows.chunks(batch).enumerate() {
                // Batches (not windows) are spread evenly: request c of node i is due at
                // (c·NODES + i)·N / R, so requests arrive at R/N per second, each of N windows,
                // rather than every node's batch landing together each N·NODES/R seconds.
                let k = c * batch;
                let due = t0 + Duration::from_secs_f64(((c * nodes + i) * batch) as f64 / rate);
                if Instant::now() < due {
                    tokio::time::sleep_until(due).await;
                }
                let _permit = permits.acquire().await.unwrap();
                let is_final = chain.has_final(k, windows.len());
                send(&client, &url, windows, batch, is_final, due, &mut tally).await;
            }
            tally
        });
    }
    (join_tallies(tasks).await, t0)
}

/// `--timeline`: per 250 ms of latency-clock start (due time in the open loop, send time in the
/// closed loop) since `started`, the windows accepted and their worst latency, on stderr.
fn print_timeline(timeline: &[(Instant, Duration)], started: Instant) {
    let mut buckets: BTreeMap<u128, (usize, Duration)> = BTreeMap::new();
    for (since, latency) in timeline {
        let bucket = buckets
            .entry(since.saturating_duration_since(started).as_millis() / 250)
            .or_default();
        bucket.0 += 1;
        bucket.1 = bucket.1.max(*latency);
    }
    for (bucket, (windows, worst)) in buckets {
        eprintln!(
            "timeline: {:>7.2} s  {windows:>6} windows  max {:>8.1} ms",
            bucket as f64 / 4.0,
            worst.as_secs_f64() * 1e3
        );
    }
}

/// Nearest-rank percentile of sorted latencies, in ms.
fn percentile_ms(sorted: &[Duration], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    Some(sorted[index].as_secs_f64() * 1e3)
}

fn ms(value: Option<f64>) -> String {
    value.map_or_else(|| "-".to_owned(), |v| format!("{v:.1} ms"))
}

fn main() {
    let args = parse_args();
    wattest_shared::tls::install_crypto_provider();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let client = reqwest::Client::builder()
        .http1_only()
        .pool_max_idle_per_host(args.concurrency)
        .tcp_nodelay(true)
        .build()
        .unwrap();

    eprintln!(
        "Generating {} keys, enrolling the nodes and signing {} windows each…",
        args.nodes, args.windows
    );
    let keys = parallel_map(args.nodes, |_| SoftwareKey::generate(2048).unwrap());
    let node_ids = match runtime.block_on(enroll(&client, &args, &keys)) {
        Ok(ids) => ids,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(1);
        }
    };
    let chains = Arc::new(parallel_map(args.nodes, |i| {
        sign_chain(
            &keys[i],
            &node_ids[i],
            i,
            args.nodes,
            args.windows,
            args.jobs,
        )
    }));
    drop(keys);

    let url: Arc<str> = if args.batch == 1 {
        format!("{}/v1/telemetry", args.oracle).into()
    } else {
        format!("{}/v1/telemetry/batch", args.oracle).into()
    };
    eprintln!(
        "Posting {} windows ({}{})…",
        args.nodes * args.windows,
        args.rate.map_or_else(
            || format!("closed loop, concurrency {}", args.concurrency),
            |r| format!("open loop, {r} windows/s offered")
        ),
        if args.batch == 1 {
            String::new()
        } else {
            format!(", up to {} windows per batch request", args.batch)
        }
    );
    let (mut tally, started) = runtime.block_on(async {
        match args.rate {
            None => closed_loop(&client, &url, &chains, args.concurrency, args.batch).await,
            Some(rate) => {
                open_loop(&client, &url, &chains, args.concurrency, rate, args.batch).await
            }
        }
    });
    let elapsed = tally
        .last
        .map_or(Duration::ZERO, |last| {
            last.saturating_duration_since(started)
        })
        .as_secs_f64();
    if args.timeline {
        print_timeline(&tally.timeline, started);
    }
    tally.latencies.sort_unstable();
    tally.steady.sort_unstable();
    let (steady_p50, steady_p99) = (
        percentile_ms(&tally.steady, 0.50),
        percentile_ms(&tally.steady, 0.99),
    );
    let lat = &tally.latencies;
    let windows = lat.len();
    let per_s = if elapsed > 0.0 {
        windows as f64 / elapsed
    } else {
        0.0
    };
    let (p50, p95, p99, max) = (
        percentile_ms(lat, 0.50),
        percentile_ms(lat, 0.95),
        percentile_ms(lat, 0.99),
        percentile_ms(lat, 1.0),
    );
    let errors: u64 = tally.errors.values().sum();

    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "mode": if args.rate.is_some() { "open" } else { "closed" },
                "windows": windows,
                "certificates": tally.certificates,
                "elapsed_s": elapsed,
                "windows_per_s": per_s,
                "offered_per_s": args.rate,
                "p50_ms": p50,
                "p95_ms": p95,
                "p99_ms": p99,
                "max_ms": max,
                "steady_p50_ms": steady_p50,
                "steady_p99_ms": steady_p99,
                "nodes": args.nodes,
                "concurrency": args.concurrency,
                "batch": args.batch,
                "errors": errors,
                "errors_by_status": tally.errors,
            })
        );
    } else {
        let head = format!(
            "{windows} windows ({} certificates) in {elapsed:.2} s:",
            tally.certificates
        );
        let tail = format!(
            "p50 {}, p95 {}, p99 {}, max {}; without final windows' requests p50 {}, p99 {} (nodes {}, concurrency {}{})",
            ms(p50),
            ms(p95),
            ms(p99),
            ms(max),
            ms(steady_p50),
            ms(steady_p99),
            args.nodes,
            args.concurrency,
            if args.batch == 1 {
                String::new()
            } else {
                format!(", batch {}", args.batch)
            }
        );
        match args.rate {
            None => println!("{head} {per_s:.0} windows/s; latency {tail}"),
            Some(rate) => println!(
                "{head} offered {rate:.0} windows/s, achieved {per_s:.0} windows/s; latency (from due time) {tail}"
            ),
        }
    }
    if errors > 0 {
        eprintln!("errors: {}", serde_json::to_string(&tally.errors).unwrap());
        for (kind, detail) in &tally.first_error {
            eprintln!("  first {kind}: {detail}");
        }
        std::process::exit(1);
    }
}
