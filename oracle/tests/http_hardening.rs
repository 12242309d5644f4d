//! Denial-of-service hardening of the HTTP layer, against the real server (`api::serve`) on a
//! random loopback port with a fresh SQLite data dir per test: connection timeouts, the bounded
//! drain of an oversized body.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use wattest_oracle::{AppState, api};

/// The header read timeout the test servers run with (production: `api::HEADER_READ_TIMEOUT`).
const HEADER_TIMEOUT: Duration = Duration::from_secs(1);

struct TestApp {
    addr: std::net::SocketAddr,
    url: String,
    state: AppState,
    _dir: tempfile::TempDir,
}

/// The app served by `api::serve` with [`HEADER_TIMEOUT`] and the default limits.
async fn spawn_app() -> TestApp {
    let (state, dir) = common::open_state(Vec::new()).await;
    let (listener, addr) = common::listen().await;
    let router = api::router(state.clone());
    tokio::spawn(api::serve(
        listener,
        router,
        HEADER_TIMEOUT,
        api::MAX_CONNECTIONS,
        std::future::pending(),
    ));
    TestApp {
        addr,
        url: format!("http://{addr}"),
        state,
        _dir: dir,
    }
}

/// Everything the server sends until it closes the connection, and when it closed it; `None`
/// when it is still open after `within`.
async fn read_until_closed(stream: &mut TcpStream, within: Duration) -> Option<(Vec<u8>, Instant)> {
    let mut received = Vec::new();
    let read = tokio::time::timeout(within, async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => received.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    read.ok().map(|()| (received, Instant::now()))
}

/// Slowloris: a client that sends part of a request's headers and then nothing is disconnected
/// once the header read timeout has passed, not kept for ever.
#[tokio::test]
async fn partial_headers_are_cut_off_after_the_header_read_timeout() {
    let app = spawn_app().await;
    let mut stream = TcpStream::connect(app.addr).await.unwrap();
    let sent = Instant::now();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: oracle\r\nX-Slow: ")
        .await
        .unwrap();
    let (_, closed) = read_until_closed(&mut stream, HEADER_TIMEOUT * 5)
        .await
        .expect("the server kept a connection with unfinished headers open");
    assert!(closed - sent >= HEADER_TIMEOUT - Duration::from_millis(100));
}

/// A connection that never sends a byte is closed too.
#[tokio::test]
async fn silent_connections_are_closed() {
    let app = spawn_app().await;
    let mut stream = TcpStream::connect(app.addr).await.unwrap();
    assert!(
        read_until_closed(&mut stream, HEADER_TIMEOUT * 5)
            .await
            .is_some(),
        "the server kept a silent connection open"
    );
}

/// An idle keep-alive connection is closed once the timeout has passed after its last response;
/// the response itself comes normally.
#[tokio::test]
async fn idle_keep_alive_connections_are_closed() {
    let app = spawn_app().await;
    let mut stream = TcpStream::connect(app.addr).await.unwrap();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: oracle\r\n\r\n")
        .await
        .unwrap();
    let (received, _) = read_until_closed(&mut stream, HEADER_TIMEOUT * 5)
        .await
        .expect("the server kept an idle keep-alive connection open");
    let text = String::from_utf8_lossy(&received);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
}

/// A client that declares a moderately oversized body and then sends it slowly (here: not at
/// all) still gets its 413 once the drain timeout has passed, instead of holding the request.
#[tokio::test]
async fn a_stalled_oversized_body_gets_its_413_after_the_drain_timeout() {
    let app = spawn_app().await;
    let mut stream = TcpStream::connect(app.addr).await.unwrap();
    let length = api::MAX_BODY_BYTES + 1000;
    stream
        .write_all(
            format!(
                "POST /v1/telemetry HTTP/1.1\r\nHost: oracle\r\nContent-Type: application/json\r\nContent-Length: {length}\r\n\r\n{{\"a\":"
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(api::DRAIN_TIMEOUT * 2, stream.read(&mut buf))
        .await
        .expect("no answer to a stalled oversized body")
        .unwrap();
    let text = String::from_utf8_lossy(&buf[..n]);
    assert!(text.starts_with("HTTP/1.1 413"), "{text}");
}

/// Requests still work through `api::serve`, with the peer address seen by the rate limiter.
#[tokio::test]
async fn serve_answers_requests() {
    let app = spawn_app().await;
    let response = reqwest::get(format!("{}/healthz", app.url)).await.unwrap();
    assert_eq!(response.status(), 200);
    drop(app.state);
}

/// Graceful shutdown still works: once the signal comes, `serve` returns (idle connections are
/// closed rather than waited for).
#[tokio::test]
async fn serve_returns_after_the_shutdown_signal() {
    let app = spawn_app().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(api::serve(
        listener,
        api::router(app.state.clone()),
        Duration::from_secs(60),
        api::MAX_CONNECTIONS,
        async {
            let _ = stopped.await;
        },
    ));
    // An idle keep-alive connection after one answer must not hold the shutdown.
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: oracle\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 64];
    let n = stream.read(&mut buf).await.unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .expect("serve did not return after the shutdown signal")
        .unwrap();
    assert!(TcpStream::connect(addr).await.is_err());
}

/// Made-up methods and paths do not become label values on the public `/metrics` (each would
/// be a series kept for ever): the method is labelled `other`, the route `unmatched`.
#[tokio::test]
async fn made_up_methods_and_paths_create_no_metric_series() {
    let app = spawn_app().await;
    let client = reqwest::Client::new();
    for method in ["FOO1", "FOO2"] {
        for path in ["/healthz", "/v1/telemetry", "/made-up-path-42"] {
            let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
            let response = client
                .request(method, format!("{}{path}", app.url))
                .send()
                .await
                .unwrap();
            assert!(response.status().is_client_error(), "{path}");
        }
    }
    let metrics = client
        .get(format!("{}/metrics", app.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for made_up in ["FOO1", "FOO2", "made-up-path"] {
        assert!(!metrics.contains(made_up), "{made_up} in\n{metrics}");
    }
    assert!(metrics.contains(r#"method="other""#), "{metrics}");
    assert!(metrics.contains(r#"route="unmatched""#), "{metrics}");
}

/// `/v1/stats` is served from a cache: within its period a new node does not show, after it
/// it does (the period is shortened for the test; 10 s in production).
#[tokio::test]
async fn stats_are_cached_for_their_period() {
    let period = Duration::from_secs(4);
    let mut app = spawn_app().await;
    app.state.stats_cache = std::sync::Arc::new(api::stats::StatsCache::new(period));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(api::serve(
        listener,
        api::router(app.state.clone()),
        HEADER_TIMEOUT,
        api::MAX_CONNECTIONS,
        std::future::pending(),
    ));
    let client = reqwest::Client::new();
    let get_stats = || async {
        let response = client.get(format!("{url}/v1/stats")).send().await.unwrap();
        assert_eq!(response.status(), 200);
        response.json::<serde_json::Value>().await.unwrap()
    };
    let key = wattest_shared::SoftwareKey::generate(2048).unwrap();
    let admin =
        wattest_oracle::auth::create_token(&app.state.storage, wattest_oracle::auth::Role::Admin)
            .await
            .unwrap();
    let first_at = Instant::now();
    let first = get_stats().await;
    assert_eq!(first["nodes"], 0, "{first}");
    let body = serde_json::json!({"name": "n", "zone": "BE", "public_key": key.public_jwk()});
    let enrolled = client
        .post(format!("{url}/v1/nodes"))
        .bearer_auth(&admin)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(enrolled.status(), 201);
    let cached = get_stats().await;
    assert!(
        first_at.elapsed() < period,
        "too slow to test within the period"
    );
    assert_eq!(cached, first);
    tokio::time::sleep(period.saturating_sub(first_at.elapsed()) + Duration::from_millis(100))
        .await;
    let fresh = get_stats().await;
    assert_eq!(fresh["nodes"], 1, "{fresh}");
}

/// At `max_connections` open connections the server accepts no more until one closes: a third
/// client of a server limited to two gets no answer while two idle connections are open, and
/// its answer once one of them closes (it waited in the listen backlog, nothing was refused).
#[tokio::test]
async fn connections_beyond_the_limit_wait_for_one_to_close() {
    let (state, _dir) = common::open_state(Vec::new()).await;
    let (listener, addr) = common::listen().await;
    // A long header timeout: the idle connections are not closed by it during the test.
    tokio::spawn(api::serve(
        listener,
        api::router(state),
        Duration::from_secs(60),
        2,
        std::future::pending(),
    ));
    let first = TcpStream::connect(addr).await.unwrap();
    let _second = TcpStream::connect(addr).await.unwrap();
    let mut third = TcpStream::connect(addr).await.unwrap();
    third
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 1024];
    let early = tokio::time::timeout(Duration::from_millis(500), third.read(&mut buf)).await;
    assert!(early.is_err(), "answered beyond the limit: {early:?}");
    drop(first);
    let (response, _) = read_until_closed(&mut third, Duration::from_secs(30))
        .await
        .expect("answered once a connection closed");
    let response = String::from_utf8_lossy(&response);
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
}
