//! Benchmark (not a test): the transparency log at scale, on SQLite and on PostgreSQL.
//!
//! Seeds a log of `--size` leaves (default 1,000,000) straight into a fresh database, then reports
//! latency percentiles of:
//! - an inclusion proof of a random leaf against the current head (one query for the subtrees,
//!   then the proof), as `GET /v1/log/proofs/inclusion` does before signing the checkpoint;
//! - a consistency proof from a random earlier size to the current head;
//! - signing a checkpoint (Ed25519 signed note);
//! - appending a leaf at that size in its own committed transaction (the log part of issuing a
//!   certificate).
//!
//! ```text
//! cargo bench -p wattest-oracle --bench ledger -- [--size N] [--samples K] [--keep-pg]
//! ```
//!
//! PostgreSQL: `WATTEST_TEST_PG` (default `postgres://postgres@127.0.0.1:5432`); the database
//! `wattest_bench_log_<N>` is created fresh and dropped afterwards unless `--keep-pg` is given (then
//! `scripts/bench-issue.sh` runs a real oracle on it, to measure issuance on a 1M-entry log).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use chrono::Utc;
use rand::Rng as _;
use sea_orm::{ConnectionTrait, EntityTrait, Set};
use std::time::{Duration, Instant};
use wattest_oracle::ledger::Ledger;
use wattest_oracle::storage::Storage;
use wattest_oracle::storage::ledger::{log_head, log_leaf, log_node};
use wattest_shared::merkle::{self, MemoryTree, NodeId};

/// Rows per multi-row INSERT: 3 bound parameters per log node, and 3 × 5,000 stays under SQLite's
/// 32,766 host-parameter limit (SQLITE_MAX_VARIABLE_NUMBER since 3.32) and PostgreSQL's 65,535.
const ROWS_PER_INSERT: usize = 5_000;

struct Args {
    size: u64,
    samples: usize,
    keep_pg: bool,
}

fn parse_args() -> Args {
    let mut args = Args {
        size: 1_000_000,
        samples: 1_000,
        keep_pg: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        match flag.as_str() {
            "--size" => args.size = it.next().and_then(|v| v.parse().ok()).expect("--size N"),
            "--samples" => {
                args.samples = it.next().and_then(|v| v.parse().ok()).expect("--samples K");
            }
            "--keep-pg" => args.keep_pg = true,
            // cargo bench passes --bench; anything else is a mistake worth stopping for.
            "--bench" => {}
            other => panic!("unknown flag {other}; see the doc comment of benches/ledger.rs"),
        }
    }
    args
}

fn entry(index: u64) -> String {
    format!("bench-entry-{index:012}")
}

/// Writes a log of `size` leaves (entries [`entry`]) and every complete subtree, and the head.
async fn seed(storage: &Storage, size: u64) -> Duration {
    let started = Instant::now();
    let mut tree = MemoryTree::new();
    for i in 0..size {
        tree.push(entry(i).as_bytes());
    }
    let txn = storage.begin().await.expect("begin");
    let now = Utc::now();
    let mut level: u8 = 0;
    while size >> level > 0 {
        let count = size >> level;
        let mut start = 0;
        while start < count {
            let end = (start + ROWS_PER_INSERT as u64).min(count);
            let rows = (start..end).map(|index| {
                let hash = tree
                    .node(NodeId { level, index })
                    .expect("complete subtree");
                log_node::ActiveModel {
                    level: Set(i16::from(level)),
                    idx: Set(i64::try_from(index).expect("index")),
                    hash: Set(hash.to_vec()),
                }
            });
            log_node::Entity::insert_many(rows)
                .exec(&*txn)
                .await
                .expect("insert nodes");
            start = end;
        }
        level += 1;
    }
    let mut start = 0;
    while start < size {
        let end = (start + ROWS_PER_INSERT as u64).min(size);
        let rows = (start..end).map(|index| log_leaf::ActiveModel {
            idx: Set(i64::try_from(index).expect("index")),
            certificate_id: Set(entry(index)),
            appended_at: Set(now),
        });
        log_leaf::Entity::insert_many(rows)
            .exec(&*txn)
            .await
            .expect("insert leaves");
        start = end;
    }
    log_head::Entity::update(log_head::ActiveModel {
        id: Set(1),
        size: Set(i64::try_from(size).expect("size")),
        root_hash: Set(tree.root(size).expect("root").to_vec()),
        updated_at: Set(now),
    })
    .exec(&*txn)
    .await
    .expect("head");
    txn.commit().await.expect("commit");
    started.elapsed()
}

fn report(label: &str, mut samples: Vec<Duration>) {
    samples.sort_unstable();
    let at = |q: f64| {
        let i = ((samples.len() as f64 - 1.0) * q).round() as usize;
        samples[i].as_secs_f64() * 1e3
    };
    println!(
        "  {label:<34} n={:<5} P50 {:>7.3} ms  P99 {:>7.3} ms  max {:>7.3} ms",
        samples.len(),
        at(0.5),
        at(0.99),
        at(1.0)
    );
}

async fn run(label: &str, url: &str, args: &Args) {
    let storage = Storage::connect(url).await.expect("connect");
    let seeded = seed(&storage, args.size).await;
    println!(
        "{label}: seeded {} leaves in {:.1} s",
        args.size,
        seeded.as_secs_f64()
    );
    let data_dir = tempfile::tempdir().expect("tempdir");
    let ledger = Ledger::load_or_create(data_dir.path(), "bench.wattest.dev/log").expect("ledger");
    let mut rng = rand::rng();
    let size = args.size;

    let mut inclusion = Vec::with_capacity(args.samples);
    for _ in 0..args.samples {
        let index = rng.random_range(0..size);
        let t = Instant::now();
        let proof = storage
            .log_proof(|l| merkle::inclusion_proof(index, size, l))
            .await
            .expect("inclusion proof");
        inclusion.push(t.elapsed());
        // Every proof is checked, so a fast wrong answer cannot pass for a fast right one.
        let root = storage.log_head().await.expect("head").root;
        let leaf = merkle::leaf_hash(entry(index).as_bytes());
        assert!(merkle::verify_inclusion(&leaf, index, size, &proof, &root).is_ok());
    }
    report("inclusion proof (random leaf)", inclusion);

    let mut consistency = Vec::with_capacity(args.samples);
    for _ in 0..args.samples {
        let first = rng.random_range(1..=size);
        let t = Instant::now();
        let proof = storage
            .log_proof(|l| merkle::consistency_proof(first, size, l))
            .await
            .expect("consistency proof");
        consistency.push(t.elapsed());
        assert!(proof.len() <= 2 * 64);
    }
    report("consistency proof (random first)", consistency);

    let head = storage.log_head().await.expect("head");
    let mut signing = Vec::with_capacity(args.samples);
    for _ in 0..args.samples {
        let t = Instant::now();
        let note = ledger.sign(head).expect("sign");
        signing.push(t.elapsed());
        assert!(note.contains('\u{2014}'));
    }
    report("checkpoint signing (Ed25519)", signing);

    let appends = args.samples.min(300);
    let mut append = Vec::with_capacity(appends);
    for i in 0..appends {
        let id = format!("bench-append-{i}");
        let t = Instant::now();
        let txn = storage.begin().await.expect("begin");
        storage
            .append_log(&txn, &id, id.as_bytes(), Utc::now())
            .await
            .expect("append");
        txn.commit().await.expect("commit");
        append.push(t.elapsed());
    }
    report("append + commit (own transaction)", append);
    let after = storage.log_head().await.expect("head");
    assert_eq!(after.size, size + appends as u64);
}

fn main() {
    let args = parse_args();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let dir = tempfile::tempdir().expect("tempdir");
        let sqlite = format!(
            "sqlite://{}?mode=rwc",
            dir.path().join("bench.db").display()
        );
        run("SQLite (WAL)", &sqlite, &args).await;

        let server = std::env::var("WATTEST_TEST_PG")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into());
        let name = format!("wattest_bench_log_{}", args.size);
        let admin = sea_orm::Database::connect(format!("{server}/postgres"))
            .await
            .unwrap_or_else(|err| panic!("PostgreSQL at {server} is not reachable: {err}"));
        admin
            .execute_unprepared(&format!("DROP DATABASE IF EXISTS {name}"))
            .await
            .expect("drop");
        admin
            .execute_unprepared(&format!("CREATE DATABASE {name}"))
            .await
            .expect("create");
        run("PostgreSQL", &format!("{server}/{name}"), &args).await;
        if args.keep_pg {
            println!("kept {server}/{name}");
        } else {
            admin
                .execute_unprepared(&format!("DROP DATABASE {name}"))
                .await
                .expect("drop");
        }
    });
}
