//! Setup shared by the oracle's integration tests: the settings every test oracle runs with, its
//! state on a fresh SQLite data dir, and a loopback listener. Each test file includes this with
//! `mod common;`; a file that does not use one of these items leaves it dead there.

#![allow(dead_code, clippy::unwrap_used)]

use wattest_oracle::credits::CreditPolicy;
use wattest_oracle::{AppState, Settings};
use wattest_shared::Eur;

/// The test oracle's settings: issuer `http://test`, certificates valid one day, 25 EUR a tonne
/// of CO2e with 70 % to the node owner, log origin `test/wattest-log`, the default clock skew,
/// and `ek_roots` as `--ek-ca-dir` would load them (empty: TPM enrollment refused).
pub fn settings(ek_roots: Vec<openssl::x509::X509>) -> Settings {
    Settings {
        max_clock_skew_secs: wattest_oracle::verification::MAX_FUTURE_SKEW_SECONDS,
        // Test windows start before their test nodes' enrollment.
        max_backdate_secs: i64::MAX,
        issuer: "http://test".into(),
        certificate_validity: chrono::Duration::days(1),
        credits: CreditPolicy {
            price_per_tonne: Eur::parse("25").unwrap(),
            node_owner_share_pct: 70.0,
            source_rates: std::collections::BTreeMap::new(),
        },
        ek_roots,
        log_origin: "test/wattest-log".into(),
    }
}

/// The oracle's state with [`settings`]`(ek_roots)` on a fresh SQLite database in a new data
/// dir, which lives as long as the returned guard.
pub async fn open_state(ek_roots: Vec<openssl::x509::X509>) -> (AppState, tempfile::TempDir) {
    wattest_shared::tls::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}?mode=rwc", dir.path().join("t.db").display());
    let state = AppState::open(dir.path(), &db, settings(ek_roots))
        .await
        .unwrap();
    (state, dir)
}

/// A listener on a random loopback port and its address.
pub async fn listen() -> (tokio::net::TcpListener, std::net::SocketAddr) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    (listener, addr)
}
