//! Exports under load, against the real router on a loopback port (SQLite): at most
//! `MAX_EXPORTS_SQLITE` stream at once (the next request is answered 503 `unavailable` with
//! `Retry-After`), and a client that stops reading has its export stopped after
//! `STALL_TIMEOUT`, which gives its database connection and its slot back, while its transfer
//! ends aborted rather than looking complete.
//!
//! One test in this file: the export slots are per process.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use wattest_oracle::auth::{Role, create_token};
use wattest_oracle::export::{MAX_EXPORTS_SQLITE, STALL_TIMEOUT};
use wattest_oracle::{AppState, api};
use wattest_shared::jws::sign_compact;
use wattest_shared::window::WINDOW_TYP;

/// Copies of the one issued certificate: ≈ 20 MB of compliance CSV, far more than a stalled
/// client's socket buffers, the server's write buffer and the export channel hold together, so
/// an export whose client stops reading stays blocked.
const COPIES: u32 = 30_000;

/// Starts the router on loopback; returns its address, its state and the data dir.
async fn spawn_app() -> (std::net::SocketAddr, AppState, tempfile::TempDir) {
    let (state, dir) = common::open_state(Vec::new()).await;
    let (listener, addr) = common::listen().await;
    let router = api::router(state.clone());
    tokio::spawn(async move { axum::serve(listener, router).await });
    (addr, state, dir)
}

/// Enrolls a node and issues one certificate through the API (two signed windows); returns its
/// id.
async fn issue_certificate(url: &str, state: &AppState) -> String {
    let client = reqwest::Client::new();
    let key = wattest_shared::SoftwareKey::generate(2048).unwrap();
    let node_token = create_token(&state.storage, Role::Node).await.unwrap();
    let enrolled: serde_json::Value = client
        .post(format!("{url}/v1/nodes"))
        .bearer_auth(node_token)
        .json(&serde_json::json!({"name": "n", "zone": "BE", "public_key": key.public_jwk()}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let node_id = enrolled["node_id"].as_str().unwrap().to_owned();
    let start = chrono::Utc::now() - chrono::Duration::hours(1);
    let mut prev = None;
    let mut certificate = None;
    for seq in 1..=2 {
        let claims = wattest_tests::gpu_window(
            &node_id,
            "job-1",
            seq,
            prev.clone(),
            start + chrono::Duration::seconds(10 * i64::try_from(seq - 1).unwrap()),
            400.0,
            seq == 2,
        );
        let jws = sign_compact(&key, WINDOW_TYP, &serde_json::to_vec(&claims).unwrap()).unwrap();
        let body: serde_json::Value = client
            .post(format!("{url}/v1/telemetry"))
            .header("content-type", "application/jose")
            .body(jws)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        prev = Some(body["hash"].as_str().unwrap().to_owned());
        certificate = body["certificate"]["id"].as_str().map(str::to_owned);
    }
    certificate.unwrap()
}

/// Adds [`COPIES`] copies of the certificate row (ids, hashes and jobs suffixed; only the JWS
/// header the export reads kept), straight in the database.
async fn copy_certificate(state: &AppState) {
    use sea_orm::ConnectionTrait as _;
    let db = state.storage.db();
    let columns: Vec<String> = db
        .query_all_raw(sea_orm::Statement::from_string(
            db.get_database_backend(),
            "SELECT name FROM pragma_table_info('certificates')",
        ))
        .await
        .unwrap()
        .iter()
        .map(|row| row.try_get_by_index::<String>(0).unwrap())
        .collect();
    let values: Vec<String> = columns
        .iter()
        .map(|c| match c.as_str() {
            "id" | "hash" | "job_id" => format!("c.{c} || '-' || n.i"),
            "jws" => "substr(c.jws, 1, 512)".to_owned(),
            _ => format!("c.{c}"),
        })
        .collect();
    db.execute_unprepared(&format!(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {COPIES}) \
         INSERT INTO certificates ({}) SELECT {} FROM certificates c, n",
        columns.join(", "),
        values.join(", ")
    ))
    .await
    .unwrap();
}

/// Database connections checked out of the pool.
fn connections_in_use(state: &AppState) -> u32 {
    let pool = state.storage.db().get_sqlite_connection_pool();
    pool.size() - u32::try_from(pool.num_idle()).unwrap()
}

/// Sends `GET path` on a fresh connection and reads only the response head; the caller then
/// stops reading (a stalled client).
async fn stalled_get(addr: std::net::SocketAddr, path: &str, token: &str) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: oracle\r\nAuthorization: Bearer {token}\r\n\r\n")
                .as_bytes(),
        )
        .await
        .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(
            stream.read(&mut byte).await.unwrap(),
            1,
            "connection closed"
        );
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("transfer-encoding: chunked")
    );
    stream
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn exports_are_bounded_and_a_stalled_client_lets_go() {
    let (addr, state, _dir) = spawn_app().await;
    let url = format!("http://{addr}");
    issue_certificate(&url, &state).await;
    copy_certificate(&state).await;
    let token = create_token(&state.storage, Role::Compliance)
        .await
        .unwrap();
    // Background work of the issuance (the ingest committer) may hold a connection briefly.
    let settled = Instant::now() + Duration::from_secs(10);
    while connections_in_use(&state) > 0 {
        assert!(
            Instant::now() < settled,
            "a connection stays in use at rest"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Clients that read the response head, then nothing more: each export blocks with its
    // database connection, holding one of the slots.
    let mut stalled = Vec::new();
    for _ in 0..MAX_EXPORTS_SQLITE {
        stalled.push(stalled_get(addr, "/v1/exports/compliance.csv", &token).await);
    }
    let since = Instant::now();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        connections_in_use(&state) >= u32::try_from(MAX_EXPORTS_SQLITE).unwrap(),
        "each stalled export holds a connection"
    );

    // Every slot taken: the next export is refused (after a short wait), with Retry-After.
    let client = reqwest::Client::new();
    let export = || {
        client
            .get(format!("{url}/v1/exports/sci.csv"))
            .bearer_auth(&token)
            .send()
    };
    let refused = export().await.unwrap();
    assert_eq!(refused.status(), 503);
    assert_eq!(
        refused.headers()["content-type"],
        "application/problem+json"
    );
    let retry: u64 = refused.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry >= 1);
    let problem: serde_json::Value = refused.json().await.unwrap();
    assert_eq!(problem["code"], "unavailable");
    assert!(
        since.elapsed() < STALL_TIMEOUT,
        "the stalled exports still hold their slots"
    );

    // After the stall timeout the stalled exports stop: their connections go back to the pool
    // though their clients are still connected.
    let deadline = since + STALL_TIMEOUT + Duration::from_secs(20);
    while connections_in_use(&state) > 0 {
        assert!(
            Instant::now() < deadline,
            "{} connections still held {:?} after the stalled clients stopped reading",
            connections_in_use(&state),
            since.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(since.elapsed() >= STALL_TIMEOUT - Duration::from_secs(1));

    // The slots are free again: a client that reads gets the whole export.
    let csv = export().await.unwrap();
    assert_eq!(csv.status(), 200);
    let text = csv.text().await.unwrap();
    assert_eq!(
        text.lines().count(),
        1 + 1 + COPIES as usize,
        "header + rows"
    );

    // A stalled client reading on gets what was queued, then an aborted transfer: never the
    // chunked body's terminating empty chunk, so the short file cannot pass for complete.
    for mut stream in stalled {
        let mut rest = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut rest))
            .await
            .expect("the aborted transfer ends");
        let _ = read; // an error (reset) or an end of file: both end the transfer
        assert!(!rest.is_empty(), "queued data is delivered");
        assert!(
            !rest.ends_with(b"\r\n0\r\n\r\n"),
            "the transfer is not complete"
        );
    }
}
