//! Telemetry integrity and no-loss delivery (issue #5), with the real binaries on loopback:
//! duplicates, conflicts, replays, gaps, reordering and overlaps at the oracle; an oracle stopped
//! or killed mid-run; an agent killed mid-run; replicas on one PostgreSQL. Every test also runs on
//! PostgreSQL with `WATTEST_TEST_BACKEND=postgres` (scripts/test.sh does).

#![allow(clippy::unwrap_used)]

use chrono::{DateTime, Duration, Utc};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use wattest_shared::SoftwareKey;
use wattest_shared::jws::{jws_hash, sign_compact};
use wattest_shared::window::{WINDOW_TYP, WindowClaims};
use wattest_tests::{
    Oracle, bin, certificate_id_from_stderr, fresh_pg_database, gpu_window, post_window,
    try_post_window,
};

/// A node enrolled with a software key held by the test, which signs windows by hand.
struct RawNode {
    key: SoftwareKey,
    node_id: String,
    /// Start of window 1; window `seq` starts 10 s × (seq − 1) later.
    t0: DateTime<Utc>,
}

fn enroll_raw(url: &str, token: &str) -> RawNode {
    let key = SoftwareKey::generate(2048).unwrap();
    let r = reqwest::blocking::Client::new()
        .post(format!("{url}/v1/nodes"))
        .bearer_auth(token)
        .json(&serde_json::json!({ "name": "raw", "zone": "FR", "public_key": key.public_jwk() }))
        .send()
        .unwrap();
    assert_eq!(r.status(), 201);
    let body: serde_json::Value = r.json().unwrap();
    RawNode {
        key,
        node_id: body["node_id"].as_str().unwrap().to_owned(),
        t0: Utc::now() - Duration::hours(2),
    }
}

impl RawNode {
    /// Window `seq` (10 s, 1 Wh of GPU energy) of job `job`.
    fn claims(&self, job: &str, seq: u64, prev: Option<String>, is_final: bool) -> WindowClaims {
        let start = self.t0 + Duration::seconds(10 * (seq as i64 - 1));
        gpu_window(&self.node_id, job, seq, prev, start, 400.0, is_final)
    }

    fn sign(&self, c: &WindowClaims) -> String {
        sign_compact(&self.key, WINDOW_TYP, &serde_json::to_vec(c).unwrap()).unwrap()
    }

    /// The signed chain of `n` windows of `job`, the last one final.
    fn chain(&self, job: &str, n: u64) -> Vec<String> {
        let mut prev = None;
        (1..=n)
            .map(|seq| {
                let jws = self.sign(&self.claims(job, seq, prev.clone(), seq == n));
                prev = Some(jws_hash(&jws));
                jws
            })
            .collect()
    }
}

/// POSTs until the oracle answers something other than a transport error or a 5xx (as the
/// agent's uploader does); returns that answer.
fn post_until_answered(url: &str, jws: &str) -> (u16, serde_json::Value) {
    loop {
        match try_post_window(url, jws) {
            Some((status, body)) if status < 500 => return (status, body),
            _ => std::thread::sleep(std::time::Duration::from_millis(50)),
        }
    }
}

fn assert_code(answer: &(u16, serde_json::Value), status: u16, code: &str) {
    assert_eq!(
        (answer.0, answer.1["code"].as_str()),
        (status, Some(code)),
        "{}",
        answer.1
    );
}

/// Polls `done` every 50 ms; panics naming `what` if it is still false after a minute (a hang
/// guard, not a timing assertion).
fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !done() {
        assert!(
            std::time::Instant::now() < deadline,
            "gave up waiting: {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// A certificate decimal string as a float.
fn dec(v: &serde_json::Value) -> f64 {
    v.as_str()
        .unwrap_or_else(|| panic!("{v} is not a decimal string"))
        .parse()
        .unwrap()
}

#[test]
fn a_duplicate_gets_the_original_receipt_and_a_conflict_flags_the_node() {
    let oracle = Oracle::start();
    let node = enroll_raw(&oracle.url, &oracle.token("node"));
    let chain = node.chain("dup", 3);

    let first = post_window(&oracle.url, &chain[0]);
    assert_eq!(first.0, 200, "{}", first.1);
    // The same bytes again (a retry after a lost acknowledgement): the original receipt.
    assert_eq!(post_window(&oracle.url, &chain[0]), first);
    // The same claims signed again (RSA-PSS is randomised, so other bytes): still the original
    // receipt, with the original hash that the next window chains to.
    let resigned = node.sign(&node.claims("dup", 1, None, false));
    assert_ne!(resigned, chain[0]);
    assert_eq!(post_window(&oracle.url, &resigned), first);

    // A different window for the accepted seq 1: refused, and the node is flagged.
    let other = node.sign(&node.claims("other-job", 1, None, false));
    let conflict = post_window(&oracle.url, &other);
    assert_code(&conflict, 409, "seq_conflict");
    assert_eq!(conflict.1["expected_seq"], 2);

    // The chain goes on from the original window; the final window's certificate carries the flag.
    assert_eq!(post_window(&oracle.url, &chain[1]).0, 200);
    let last = post_window(&oracle.url, &chain[2]);
    assert_eq!(last.0, 200, "{}", last.1);
    let id = last.1["certificate"]["id"].as_str().unwrap().to_owned();
    // A duplicate of the final window returns the same certificate.
    assert_eq!(post_window(&oracle.url, &chain[2]), last);
    let cert = oracle.get_json(&format!("/v1/certificates/{id}"));
    let claims = &cert["claims"];
    assert_eq!(claims["wattest.telemetry"]["count"], 3);
    assert_eq!(dec(&claims["wattest.energy"]["consumed_wh"]), 3.0);
    assert_eq!(claims["ear.status"], "contraindicated", "{claims}");
    let reasons: Vec<&str> = claims["wattest.status_reasons"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap())
        .collect();
    assert!(
        reasons.contains(&"node_flagged:seq_conflict:1"),
        "{reasons:?}"
    );
    // The metrics count three windows accepted, three duplicates (two of seq 1, one of seq 3)
    // apart, and one certificate.
    let metrics = oracle.get_text("/metrics");
    let value = |name: &str| -> Option<f64> {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
    };
    assert_eq!(
        value("wattest_windows_accepted_total"),
        Some(3.0),
        "{metrics}"
    );
    assert_eq!(
        value("wattest_windows_duplicate_total"),
        Some(3.0),
        "{metrics}"
    );
    assert_eq!(
        value("wattest_certificates_issued_total"),
        Some(1.0),
        "{metrics}"
    );
}

#[test]
fn concurrent_copies_of_a_final_window_credit_it_once() {
    let oracle = Oracle::start();
    let node = enroll_raw(&oracle.url, &oracle.token("node"));
    // A one-window job: its only window is final. Twelve copies at once, half of them the same
    // claims signed again (other bytes): they meet in the oracle's ingest batches, where one wins
    // the chain head's compare-and-set (and issues the certificate in the batch) and every other
    // copy must get that winner's receipt.
    let claims = node.claims("race", 1, None, true);
    let original = node.sign(&claims);
    let copies: Vec<String> = (0..12)
        .map(|i| {
            if i % 2 == 0 {
                original.clone()
            } else {
                node.sign(&claims)
            }
        })
        .collect();
    let barrier = std::sync::Barrier::new(copies.len());
    let answers: Vec<(u16, serde_json::Value)> = std::thread::scope(|scope| {
        let handles: Vec<_> = copies
            .iter()
            .map(|jws| {
                let (barrier, url) = (&barrier, &oracle.url);
                scope.spawn(move || {
                    barrier.wait();
                    post_window(url, jws)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let first = &answers[0];
    assert_eq!(first.0, 200, "{}", first.1);
    assert!(first.1["certificate"]["id"].is_string(), "{}", first.1);
    for answer in &answers {
        assert_eq!(answer, first, "every copy gets the one receipt");
    }
    let certificates = oracle.get_json("/v1/certificates?limit=100")["certificates"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(certificates, 1);
    let info = node_info(&oracle, &node.node_id);
    assert_eq!(info["last_seq"], 1, "{info}");
    assert!(info["flag"].is_null(), "{info}");
}

/// The node's entry in `GET /v1/nodes` (heartbeat, held windows, flag).
fn node_info(oracle: &Oracle, node_id: &str) -> serde_json::Value {
    let nodes = oracle.get_json("/v1/nodes");
    nodes["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["node_id"] == node_id)
        .unwrap_or_else(|| panic!("node {node_id} not listed: {nodes}"))
        .clone()
}

#[test]
fn replay_gap_reorder_and_overlap_are_each_handled() {
    let oracle = Oracle::start();
    let node = enroll_raw(&oracle.url, &oracle.token("node"));
    let chain = node.chain("order", 5);

    // Gap: seq 3 and 4 before seq 2 are held (202) with the first missing seq; nothing after the
    // gap is appended or credited.
    assert_eq!(post_window(&oracle.url, &chain[0]).0, 200);
    let held = post_window(&oracle.url, &chain[2]);
    assert_eq!(held.0, 202, "{}", held.1);
    assert_eq!(held.1["status"], "held");
    assert_eq!(held.1["seq"], 3);
    assert_eq!(held.1["expected_seq"], 2);
    assert_eq!(held.1["hash"], jws_hash(&chain[2]));
    // Held again: idempotent.
    assert_eq!(post_window(&oracle.url, &chain[2]), held);
    assert_eq!(post_window(&oracle.url, &chain[3]).0, 202);
    let me = node_info(&oracle, &node.node_id);
    assert_eq!(me["last_seq"], 1, "held windows do not move the chain head");
    assert_eq!(me["held_windows"], 2);
    // A different window for a held seq is a conflict, as for an accepted one.
    let other = node.sign(&node.claims("other", 3, Some(jws_hash(&chain[1])), false));
    assert_code(&post_window(&oracle.url, &other), 409, "seq_conflict");

    // Reordered arrival (3 and 4 before 2): filling the gap appends the held windows in order.
    let filled = post_window(&oracle.url, &chain[1]);
    assert_eq!((filled.0, filled.1["seq"].as_u64()), (200, Some(2)));
    let me = node_info(&oracle, &node.node_id);
    assert_eq!(me["last_seq"], 4, "{me}");
    assert_eq!(me["held_windows"], 0);
    // Seq 3, sent again, is now a duplicate of an accepted window: its original receipt.
    let again = post_window(&oracle.url, &chain[2]);
    assert_eq!((again.0, again.1["seq"].as_u64()), (200, Some(3)));

    // Too far ahead to be reordering: refused with the seq expected, nothing stored.
    let far_claims = gpu_window(
        &node.node_id,
        "order",
        5 + 1024,
        None,
        node.t0 + Duration::seconds(50),
        400.0,
        false,
    );
    let far = node.sign(&far_claims);
    let refused = post_window(&oracle.url, &far);
    assert_code(&refused, 409, "seq_gap");
    assert_eq!(refused.1["expected_seq"], 5);

    // Replay of an old window after newer ones: the original receipt, the head does not move.
    let replay = post_window(&oracle.url, &chain[0]);
    assert_eq!((replay.0, replay.1["seq"].as_u64()), (200, Some(1)));
    assert_eq!(replay.1["hash"], jws_hash(&chain[0]));

    // Overlapping: seq 5 starting inside seq 4.
    let prev = Some(jws_hash(&chain[3]));
    let mut overlapping = node.claims("order", 5, prev.clone(), true);
    overlapping.start -= Duration::seconds(5);
    overlapping.end -= Duration::seconds(5);
    assert_code(
        &post_window(&oracle.url, &node.sign(&overlapping)),
        409,
        "overlapping_window",
    );
    // Backwards: ends before it starts.
    let mut backwards = node.claims("order", 5, prev, true);
    std::mem::swap(&mut backwards.start, &mut backwards.end);
    assert_code(
        &post_window(&oracle.url, &node.sign(&backwards)),
        422,
        "invalid_period",
    );

    // The proper seq 5 closes the job: exactly five windows, 5 Wh.
    let last = post_window(&oracle.url, &chain[4]);
    assert_eq!(last.0, 200, "{}", last.1);
    assert_eq!(last.1["certificate"]["window_count"], 5);
    assert_eq!(last.1["certificate"]["energy_wh"], 5.0);
}

#[test]
fn a_held_window_that_does_not_chain_is_dropped_and_flags_the_node() {
    let oracle = Oracle::start();
    let node = enroll_raw(&oracle.url, &oracle.token("node"));
    let chain = node.chain("fork", 3);
    assert_eq!(post_window(&oracle.url, &chain[0]).0, 200);
    // Seq 3 whose prev is not seq 2's hash: valid on its own, so it is held.
    let forked = node.sign(&node.claims("fork", 3, Some("not-the-hash".into()), true));
    assert_eq!(post_window(&oracle.url, &forked).0, 202);
    // Seq 2 arrives: it is accepted, the held seq 3 fails the chain check and is dropped.
    assert_eq!(post_window(&oracle.url, &chain[1]).0, 200);
    let me = node_info(&oracle, &node.node_id);
    assert_eq!(me["last_seq"], 2, "{me}");
    assert_eq!(me["held_windows"], 0);
    // The proper seq 3 is accepted; its certificate carries the flag.
    let last = post_window(&oracle.url, &chain[2]);
    assert_eq!(last.0, 200, "{}", last.1);
    let id = last.1["certificate"]["id"].as_str().unwrap().to_owned();
    let claims = &oracle.get_json(&format!("/v1/certificates/{id}"))["claims"];
    assert_eq!(claims["ear.status"], "contraindicated");
    assert!(
        claims["wattest.status_reasons"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r == "node_flagged:held_rejected:3:chain_broken"),
        "{claims}"
    );
}

#[test]
fn clock_skew_bound_is_configurable() {
    let strict = Oracle::start_with(None, &["--max-clock-skew-secs", "0"]);
    let lenient = Oracle::start();
    for (oracle, expected) in [(&strict, 422), (&lenient, 200)] {
        let node = enroll_raw(&oracle.url, &oracle.token("node"));
        // A window ending 30 s after the oracle's clock.
        let start = Utc::now() + Duration::seconds(20);
        let claims = gpu_window(&node.node_id, "skew", 1, None, start, 400.0, false);
        let answer = post_window(&oracle.url, &node.sign(&claims));
        assert_eq!(answer.0, expected, "{}", answer.1);
        if expected == 422 {
            assert_code(&answer, 422, "future_window");
        }
    }
}

/// Runs `wattest-agent run` for a job of `seconds` with 1 s windows and a declared 360 W solar
/// input (0.1 Wh a second: the energy is known exactly from the time measured).
fn spawn_agent_run(state: &std::path::Path, job: &str, seconds: u32) -> Child {
    Command::new(bin("wattest-agent"))
        .args([
            "run",
            "--window",
            "1",
            "--interval",
            "0.2",
            "--solar-watts",
            "360",
            "--job-id",
            job,
            "--state-dir",
        ])
        .arg(state)
        .args(["--", "sleep", &seconds.to_string()])
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Number of windows waiting in the agent's spool.
fn spooled(state: &std::path::Path) -> usize {
    std::fs::read_dir(state.join("spool"))
        .map(|d| {
            d.filter_map(Result::ok)
                .filter(|e| e.path().extension().is_some_and(|x| x == "jws"))
                .count()
        })
        .unwrap_or(0)
}

/// Windows the agent has signed and the oracle acknowledged: the chain head in `chain.json` less
/// the windows still in the spool (a window is spooled before `chain.json` moves, so this never
/// counts one too many).
fn acknowledged(state: &std::path::Path) -> u64 {
    let head = std::fs::read(state.join("chain.json"))
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .and_then(|v| v["seq"].as_u64())
        .unwrap_or(0);
    head.saturating_sub(spooled(state) as u64)
}

/// Checks that a certificate covers the node's whole chain from seq 1 without a hole or a
/// double count: seqs 1..=count, and the declared solar energy is 0.1 Wh per measured second.
fn assert_complete_chain(claims: &serde_json::Value) {
    let t = &claims["wattest.telemetry"];
    assert_eq!(t["first_seq"], 1, "{t}");
    let count = t["count"].as_u64().unwrap();
    assert_eq!(t["last_seq"].as_u64().unwrap(), count, "{t}");
    let measured = dec(&claims["wattest.period"]["measured_seconds"]);
    let solar = dec(&claims["wattest.energy"]["solar_wh"]);
    assert!(
        (solar - 0.1 * measured).abs() <= 1e-6 * count as f64,
        "solar {solar} Wh for {measured} s measured"
    );
}

#[test]
fn oracle_stopped_mid_run_then_restarted_receives_every_window() {
    let mut oracle = Oracle::start();
    let (state, _node) = oracle.enroll_agent("FR");
    let agent = spawn_agent_run(state.path(), "outage", 6);
    // Wait for the first acknowledged window, stop the oracle, let windows pile up in the
    // spool, then bring it back.
    wait_until("a first acknowledged window", || {
        acknowledged(state.path()) > 0
    });
    oracle.stop();
    wait_until("windows piling up in the spool", || {
        spooled(state.path()) >= 2
    });
    oracle.restart();
    let out = agent.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("Oracle unreachable"),
        "the agent never met the outage: {stderr}"
    );
    let id = certificate_id_from_stderr(&stderr);
    let claims = oracle.get_json(&format!("/v1/certificates/{id}"))["claims"].clone();
    assert_complete_chain(&claims);
    // Contiguous windows: the measured time is the whole period.
    let start =
        DateTime::parse_from_rfc3339(claims["wattest.period"]["start"].as_str().unwrap()).unwrap();
    let end =
        DateTime::parse_from_rfc3339(claims["wattest.period"]["end"].as_str().unwrap()).unwrap();
    let measured = dec(&claims["wattest.period"]["measured_seconds"]);
    assert!(((end - start).num_milliseconds() as f64 / 1000.0 - measured).abs() < 1e-3);
    assert_eq!(spooled(state.path()), 0, "spool drained");
}

#[test]
fn agent_killed_mid_run_resumes_without_loss_or_duplicate() {
    let oracle = Oracle::start();
    let (state, node_id) = oracle.enroll_agent("FR");
    // First run: killed with SIGKILL after a few windows were signed (no final window).
    let mut first = spawn_agent_run(state.path(), "killed", 30);
    wait_until("three acknowledged windows", || {
        acknowledged(state.path()) >= 3
    });
    first.kill().unwrap();
    first.wait().unwrap();
    // Second run of the same job, on the same state dir: it resumes the chain, sends what the
    // first run left unacknowledged, and closes the job.
    let second = spawn_agent_run(state.path(), "killed", 2);
    let out = second.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let id = certificate_id_from_stderr(&stderr);
    let claims = oracle.get_json(&format!("/v1/certificates/{id}"))["claims"].clone();
    assert_eq!(claims["sub"], node_id.as_str());
    assert_complete_chain(&claims);
    assert!(claims["wattest.telemetry"]["count"].as_u64().unwrap() >= 4);
    assert_eq!(spooled(state.path()), 0, "spool drained");
    assert!(
        !state.path().join("spool/rejected").exists(),
        "no window was refused"
    );
}

#[test]
fn oracle_killed_during_ingest_keeps_every_acknowledged_window() {
    const NODES: usize = 4;
    const WINDOWS: u64 = 30;
    let mut oracle = Oracle::start();
    let token = oracle.token("node");
    let acked = Arc::new(AtomicUsize::new(0));
    let senders: Vec<_> = (0..NODES)
        .map(|_| {
            let node = enroll_raw(&oracle.url, &token);
            let (url, acked) = (oracle.url.clone(), acked.clone());
            std::thread::spawn(move || {
                let chain = node.chain("kill9", WINDOWS);
                let mut receipts = Vec::new();
                for jws in &chain {
                    let answer = post_until_answered(&url, jws);
                    assert_eq!(answer.0, 200, "{}", answer.1);
                    acked.fetch_add(1, Ordering::SeqCst);
                    receipts.push(answer.1);
                }
                (chain, receipts)
            })
        })
        .collect();
    wait_until("windows acknowledged before the kill", || {
        acked.load(Ordering::SeqCst) >= NODES * 5
    });
    oracle.kill9();
    oracle.restart();
    let mut total = 0.0;
    for sender in senders {
        let (chain, receipts) = sender.join().unwrap();
        // Every acknowledged window is stored: re-sent, it gets its original receipt back.
        for (jws, receipt) in chain.iter().zip(&receipts) {
            let again = post_window(&oracle.url, jws);
            assert_eq!(again.0, 200, "{}", again.1);
            assert_eq!(
                (&again.1["seq"], &again.1["hash"]),
                (&receipt["seq"], &receipt["hash"])
            );
        }
        let cert = &receipts.last().unwrap()["certificate"];
        assert_eq!(cert["window_count"], WINDOWS);
        total += cert["energy_wh"].as_f64().unwrap();
    }
    assert_eq!(total, (NODES as u64 * WINDOWS) as f64);
}

/// A second `wattest-oracle serve` on the primary's data dir (same keys) and database.
struct Replica {
    child: Child,
    url: String,
}

impl Replica {
    fn start(primary: &Oracle, database_url: &str) -> Self {
        let port = wattest_tests::free_port();
        let child = Command::new(bin("wattest-oracle"))
            .args([
                "serve",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--data-dir",
            ])
            .arg(primary.data_dir.path())
            .args(wattest_tests::backdating(&[]))
            .env("DATABASE_URL", database_url)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let url = format!("http://127.0.0.1:{port}");
        wattest_tests::wait_for_port(port, "replica");
        while !reqwest::blocking::get(format!("{url}/healthz"))
            .is_ok_and(|r| r.status().is_success())
        {
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        Self { child, url }
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn replicas_on_one_postgresql_credit_each_window_exactly_once() {
    const NODES: usize = 6;
    const WINDOWS: u64 = 12;
    let Some(db) = fresh_pg_database() else {
        return;
    };
    let primary = Oracle::start_with(Some(db.clone()), &[]);
    let replicas = [Replica::start(&primary, &db), Replica::start(&primary, &db)];
    let urls: Vec<String> = std::iter::once(primary.url.clone())
        .chain(replicas.iter().map(|r| r.url.clone()))
        .collect();
    let token = primary.token("node");
    let senders: Vec<_> = (0..NODES)
        .map(|n| {
            let node = enroll_raw(&urls[n % urls.len()], &token);
            let urls = urls.clone();
            std::thread::spawn(move || {
                let chain = node.chain("replicas", WINDOWS);
                let mut certificate = None;
                for (i, jws) in chain.iter().enumerate() {
                    // Every window goes to two replicas at once: one accepts it, the other
                    // answers with the same receipt, and it is credited once.
                    let answers: Vec<(u16, serde_json::Value)> = std::thread::scope(|s| {
                        let both: Vec<_> = [i % urls.len(), (i + 1) % urls.len()]
                            .into_iter()
                            .map(|r| {
                                let url = &urls[r];
                                s.spawn(move || post_window(url, jws))
                            })
                            .collect();
                        both.into_iter().map(|h| h.join().unwrap()).collect()
                    });
                    for answer in &answers {
                        assert_eq!(answer.0, 200, "{}", answer.1);
                    }
                    assert_eq!(answers[0].1, answers[1].1, "same receipt from both");
                    certificate = Some(answers[0].1["certificate"].clone());
                }
                (node.node_id, certificate.unwrap())
            })
        })
        .collect();
    let mut total = 0.0;
    for sender in senders {
        let (node_id, cert) = sender.join().unwrap();
        assert_eq!(cert["node_id"], node_id.as_str());
        assert_eq!(cert["window_count"], WINDOWS);
        total += cert["energy_wh"].as_f64().unwrap();
    }
    assert_eq!(total, (NODES as u64 * WINDOWS) as f64);
    let listed = primary.get_json("/v1/certificates?limit=1000")["certificates"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(listed, NODES, "one certificate per node, none twice");
}

#[test]
fn power_above_the_device_limit_marks_the_certificate() {
    let oracle = Oracle::start();
    let node = enroll_raw(&oracle.url, &oracle.token("node"));
    // A GPU peaking at 2 kW: above any GPU's TDP × margin (1200 W × 1.35), yet below the 100 kW
    // refusal limit: accepted, and flagged.
    let claims = gpu_window(&node.node_id, "hot", 1, None, node.t0, 2000.0, true);
    let answer = post_window(&oracle.url, &node.sign(&claims));
    assert_eq!(answer.0, 200, "{}", answer.1);
    let id = answer.1["certificate"]["id"].as_str().unwrap();
    let claims = oracle.get_json(&format!("/v1/certificates/{id}"))["claims"].clone();
    assert_eq!(claims["wattest.plausibility"][0], "gpu_above_tdp:gpu0");
    assert!(
        claims["wattest.status_reasons"]
            .as_array()
            .unwrap()
            .contains(&serde_json::json!("plausibility:gpu_above_tdp:gpu0")),
        "{claims}"
    );
    // Figures no device of their kind can draw are not paid for: the certificate keeps them,
    // is contraindicated, and /v1/balances leaves its reward out.
    assert_eq!(claims["ear.status"], "contraindicated", "{claims}");
    let balances = oracle.get_json("/v1/balances");
    assert_eq!(
        balances["cooperative_fund"]["certificates"], 0,
        "a contraindicated certificate in the balances: {balances}"
    );
    assert_eq!(balances["total_reward_eur"], "0.000000", "{balances}");
}

/// POSTs `body` to `/v1/telemetry/batch` as JSON; the status and the JSON (or problem) body.
fn post_batch_raw(url: &str, content_type: &str, body: Vec<u8>) -> (u16, serde_json::Value) {
    let r = reqwest::blocking::Client::new()
        .post(format!("{url}/v1/telemetry/batch"))
        .header("content-type", content_type)
        .body(body)
        .send()
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().unwrap())
}

/// POSTs `windows` as one batch; asserts the request as a whole succeeded and returns the
/// per-window results.
fn post_batch(url: &str, windows: &[&str]) -> Vec<serde_json::Value> {
    let body = serde_json::to_vec(&serde_json::json!({ "windows": windows })).unwrap();
    let (status, body) = post_batch_raw(url, "application/json", body);
    assert_eq!(status, 200, "{body}");
    let results = body["results"].as_array().unwrap().clone();
    assert_eq!(results.len(), windows.len(), "{body}");
    results
}

#[test]
fn a_batch_answers_each_window_as_if_it_had_been_posted_alone() {
    let oracle = Oracle::start();
    let token = oracle.token("node");
    let a = enroll_raw(&oracle.url, &token);
    let b = enroll_raw(&oracle.url, &token);
    let a_chain = a.chain("batch-a", 5);
    let b_chain = b.chain("batch-b", 3);
    // A key this oracle never enrolled.
    let stranger = RawNode {
        key: SoftwareKey::generate(2048).unwrap(),
        node_id: "not-enrolled".into(),
        t0: a.t0,
    };
    let unknown = stranger.chain("elsewhere", 1);

    // Two nodes interleaved, a duplicate, a malformed window, a gap (a4 before a3), a key
    // this oracle never enrolled, and b's final window.
    let results = post_batch(
        &oracle.url,
        &[
            &a_chain[0],
            &b_chain[0],
            &a_chain[1],
            &a_chain[1],
            "not.a-jws",
            &a_chain[3],
            &b_chain[1],
            &unknown[0],
            &b_chain[2],
        ],
    );
    let status: Vec<u64> = results
        .iter()
        .map(|r| r["status"].as_u64().unwrap())
        .collect();
    assert_eq!(
        status,
        [200, 200, 200, 200, 400, 202, 200, 401, 200],
        "{results:?}"
    );
    assert_eq!(results[0]["accepted"]["seq"], 1);
    assert_eq!(results[0]["accepted"]["hash"], jws_hash(&a_chain[0]));
    // The duplicate gets the original receipt, word for word.
    assert_eq!(results[3]["accepted"], results[2]["accepted"]);
    assert_eq!(results[4]["problem"]["code"], "malformed_jws");
    assert_eq!(results[5]["held"]["expected_seq"], 3);
    assert_eq!(results[7]["problem"]["code"], "unknown_kid");
    assert_eq!(results[8]["accepted"]["certificate"]["window_count"], 3);
    // Exactly one of accepted / held / problem per result.
    for r in &results {
        let present = ["accepted", "held", "problem"]
            .iter()
            .filter(|k| r.get(**k).is_some())
            .count();
        assert_eq!(present, 1, "{r}");
    }

    // a3 fills the gap: a4 is released before the answer, so a5 (final) chains on and is
    // credited with all five windows, as it would be had a3 and a5 been posted one by one.
    let results = post_batch(&oracle.url, &[&a_chain[2], &a_chain[4]]);
    assert_eq!(results[0]["status"], 200, "{results:?}");
    assert_eq!(results[1]["status"], 200, "{results:?}");
    let cert = &results[1]["accepted"]["certificate"];
    assert_eq!(cert["window_count"], 5, "{cert}");
    assert_eq!(node_info(&oracle, &a.node_id)["last_seq"], 5);
    assert_eq!(node_info(&oracle, &a.node_id)["held_windows"], 0);

    // The same batch again is all duplicates: the original receipts, nothing credited twice.
    let again = post_batch(&oracle.url, &[&a_chain[2], &a_chain[4]]);
    assert_eq!(again, results);
    let certificates = oracle.get_json(&format!("/v1/certificates?node={}", a.node_id));
    assert_eq!(
        certificates["certificates"].as_array().unwrap().len(),
        1,
        "{certificates}"
    );
}

#[test]
fn a_batch_larger_than_a_single_window_body_is_accepted_and_malformed_batches_are_refused() {
    let oracle = Oracle::start();
    let node = enroll_raw(&oracle.url, &oracle.token("node"));
    // 120 windows of about 1.3 KiB: far over the 64 KiB single-window limit, under 8 MiB.
    let chain = node.chain("big", 120);
    let windows: Vec<&str> = chain.iter().map(String::as_str).collect();
    let body = serde_json::to_vec(&serde_json::json!({ "windows": windows })).unwrap();
    assert!(body.len() > 64 * 1024, "{} bytes", body.len());
    let results = post_batch(&oracle.url, &windows);
    assert!(results.iter().all(|r| r["status"] == 200), "{results:?}");
    assert_eq!(results[119]["accepted"]["certificate"]["window_count"], 120);
    assert_eq!(node_info(&oracle, &node.node_id)["last_seq"], 120);

    let refused = |content_type: &str, body: Vec<u8>, status: u16, code: &str| {
        let answer = post_batch_raw(&oracle.url, content_type, body);
        assert_code(&answer, status, code);
    };
    let json = |v: serde_json::Value| serde_json::to_vec(&v).unwrap();
    refused(
        "application/json",
        json(serde_json::json!({ "windows": [] })),
        400,
        "invalid_request",
    );
    let too_many = vec![chain[0].as_str(); 501];
    refused(
        "application/json",
        json(serde_json::json!({ "windows": too_many })),
        400,
        "invalid_request",
    );
    refused(
        "application/json",
        json(serde_json::json!({ "windows": [&chain[0]], "extra": 1 })),
        400,
        "invalid_request",
    );
    refused(
        "application/json",
        b"not json".to_vec(),
        400,
        "invalid_request",
    );
    refused(
        "application/jose",
        chain[0].clone().into_bytes(),
        415,
        "unsupported_media_type",
    );
    refused(
        "application/json",
        vec![b' '; 8 * 1024 * 1024 + 1024],
        413,
        "payload_too_large",
    );
    // Nothing above changed the chain.
    assert_eq!(node_info(&oracle, &node.node_id)["last_seq"], 120);
}

#[test]
fn concurrent_copies_of_a_batch_credit_each_window_once() {
    let oracle = Oracle::start();
    let node = enroll_raw(&oracle.url, &oracle.token("node"));
    let chain = node.chain("racing-batches", 80);
    // Four copies of the batch at once: their runs of windows race for the same chain
    // positions, and every copy must get the same receipts.
    let answers: Vec<Vec<serde_json::Value>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..4)
            .map(|_| {
                scope.spawn(|| {
                    let windows: Vec<&str> = chain.iter().map(String::as_str).collect();
                    post_batch(&oracle.url, &windows)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for answer in &answers {
        assert!(answer.iter().all(|r| r["status"] == 200), "{answer:?}");
        assert_eq!(answer, &answers[0]);
    }
    for (r, jws) in answers[0].iter().zip(&chain) {
        assert_eq!(r["accepted"]["hash"], jws_hash(jws), "{r}");
    }
    assert_eq!(
        answers[0][79]["accepted"]["certificate"]["window_count"],
        80
    );
    assert_eq!(node_info(&oracle, &node.node_id)["last_seq"], 80);
    let certificates = oracle.get_json(&format!("/v1/certificates?node={}", node.node_id));
    assert_eq!(
        certificates["certificates"].as_array().unwrap().len(),
        1,
        "{certificates}"
    );
}

/// A conflict and a final window in one batch: the conflict is judged first, in the batch's
/// order, so the final window's certificate is issued to a flagged node (`contraindicated`,
/// unpaid), as when the two are posted one after the other. It used to be judged after the
/// final window was certified, from a node record read before the flag.
#[test]
fn a_conflict_before_a_final_window_in_one_batch_contraindicates_its_certificate() {
    let oracle = Oracle::start();
    let node = enroll_raw(&oracle.url, &oracle.token("node"));
    let chain = node.chain("batched", 2);
    assert_eq!(post_window(&oracle.url, &chain[0]).0, 200);
    // Seq 1 again with other content, then the final seq 2.
    let other = node.sign(&node.claims("elsewhere", 1, None, false));
    let answers = post_batch(&oracle.url, &[&other, &chain[1]]);
    assert_eq!(answers[0]["status"], 409, "{answers:?}");
    assert_eq!(answers[0]["problem"]["code"], "seq_conflict", "{answers:?}");
    assert_eq!(answers[1]["status"], 200, "{answers:?}");
    let id = answers[1]["accepted"]["certificate"]["id"]
        .as_str()
        .unwrap();
    let claims = oracle.get_json(&format!("/v1/certificates/{id}"))["claims"].clone();
    assert_eq!(claims["ear.status"], "contraindicated", "{claims}");
    assert!(
        claims["wattest.status_reasons"]
            .as_array()
            .unwrap()
            .contains(&serde_json::json!("node_flagged:seq_conflict:1")),
        "{claims}"
    );
    let balances = oracle.get_json("/v1/balances");
    assert_eq!(balances["total_reward_eur"], "0.000000", "{balances}");
}

/// A node measures only once enrolled: a window starting before its enrollment (less the clock
/// skew bound) is refused, 422 `invalid_period`, so a node cannot claim past hours (and pick
/// their carbon intensities) in a second of wall-clock time. `--max-backdate-hours` widens it.
#[test]
fn a_window_from_before_the_nodes_enrollment_is_refused() {
    let oracle = Oracle::start_with(None, &["--max-backdate-hours", "0"]);
    let mut node = enroll_raw(&oracle.url, &oracle.token("node"));
    // Two hours before enrollment (enroll_raw's t0), and the year 1000.
    let early = node.sign(&node.claims("past", 1, None, false));
    let answer = post_window(&oracle.url, &early);
    assert_code(&answer, 422, "invalid_period");
    assert!(
        answer.1["detail"]
            .as_str()
            .unwrap()
            .contains("before its node could measure"),
        "{}",
        answer.1
    );
    node.t0 = "1000-01-01T00:00:00Z".parse().unwrap();
    let ancient = node.sign(&node.claims("past", 1, None, true));
    assert_code(&post_window(&oracle.url, &ancient), 422, "invalid_period");
    // Within the clock skew bound before enrollment (the node's clock a little behind): accepted.
    node.t0 = Utc::now() - Duration::seconds(30);
    let recent = node.sign(&node.claims("recent", 1, None, true));
    let answer = post_window(&oracle.url, &recent);
    assert_eq!(answer.0, 200, "{}", answer.1);

    // An oracle that allows a day of backdating takes the window of two hours before.
    let lenient = Oracle::start_with(None, &["--max-backdate-hours", "24"]);
    let mut node = enroll_raw(&lenient.url, &lenient.token("node"));
    let first = node.sign(&node.claims("past", 1, None, false));
    let answer = post_window(&lenient.url, &first);
    assert_eq!(answer.0, 200, "{}", answer.1);
    node.t0 = Utc::now() - Duration::hours(30);
    let answer = post_window(
        &lenient.url,
        &node.sign(&node.claims("past", 2, Some(jws_hash(&first)), false)),
    );
    assert_code(&answer, 422, "invalid_period");
}
