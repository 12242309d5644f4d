//! The data dir's keys when several oracles share it, secret file writes, and secrets kept out
//! of error messages and printed settings (database URLs, config files).
//!
//! The races run the library functions from threads, each opening the lock file itself: `flock`
//! locks belong to an open file description, so threads exclude each other as processes do.

#![allow(clippy::unwrap_used)]

use chrono::{Duration, Utc};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::{Arc, Barrier};
use wattest_oracle::config;
use wattest_oracle::keys::{self, KeyAlg, Keyring};
use wattest_oracle::ledger::Ledger;
use wattest_oracle::storage::Storage;
use wattest_shared::jws::JwsSigner;

/// Runs `f` on `n` threads released together; their results in thread order.
fn race<T: Send + 'static>(n: usize, f: impl Fn() -> T + Send + Sync + 'static) -> Vec<T> {
    let barrier = Arc::new(Barrier::new(n));
    let f = Arc::new(f);
    let threads: Vec<_> = (0..n)
        .map(|_| {
            let (barrier, f) = (barrier.clone(), f.clone());
            std::thread::spawn(move || {
                barrier.wait();
                f()
            })
        })
        .collect();
    threads.into_iter().map(|t| t.join().unwrap()).collect()
}

fn temp_files(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".tmp"))
        .collect()
}

#[test]
fn oracles_starting_together_on_an_empty_data_dir_sign_with_the_one_saved_key() {
    for round in 0..4 {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_owned();
        let kids = race(4, move || {
            let ring = Keyring::load_or_create(&path).unwrap();
            ring.active(Utc::now()).kid().to_owned()
        });
        let saved = Keyring::load_or_create(dir.path()).unwrap();
        let saved = saved.active(Utc::now()).kid().to_owned();
        assert!(
            kids.iter().all(|kid| *kid == saved),
            "round {round}: the oracles sign with {kids:?}, the data dir holds {saved}"
        );
        assert_eq!(keys::load_or_create(dir.path()).unwrap().kid(), saved);
        assert_eq!(saved_jwks_len(dir.path()), 1);
        assert!(temp_files(dir.path()).is_empty());
    }
}

fn saved_jwks_len(dir: &Path) -> usize {
    Keyring::load_or_create(dir).unwrap().jwks().keys.len()
}

#[test]
fn oracles_starting_together_share_one_transparency_log_key() {
    for round in 0..20 {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_owned();
        let keys = race(4, move || {
            Ledger::load_or_create(&path, "example.org/wattest-log")
                .unwrap()
                .verifier_key()
                .unwrap()
        });
        let saved = Ledger::load_or_create(dir.path(), "example.org/wattest-log")
            .unwrap()
            .verifier_key()
            .unwrap();
        assert!(
            keys.iter().all(|key| *key == saved),
            "round {round}: {keys:?} vs saved {saved}"
        );
    }
}

#[test]
fn rotations_at_once_each_add_their_key() {
    for round in 0..5 {
        let dir = tempfile::tempdir().unwrap();
        let first = Keyring::load_or_create(dir.path()).unwrap();
        let first = first.active(Utc::now()).kid().to_owned();
        let path = dir.path().to_owned();
        let rotated = race(4, move || {
            Keyring::rotate(&path, KeyAlg::Es256, Duration::hours(24), Utc::now())
                .unwrap()
                .kid
        });
        let listed: Vec<String> = Keyring::load_or_create(dir.path())
            .unwrap()
            .list(Utc::now())
            .into_iter()
            .map(|k| k.kid)
            .collect();
        assert_eq!(listed.len(), 5, "round {round}: {listed:?}");
        assert!(listed.contains(&first));
        for kid in &rotated {
            assert!(
                listed.contains(kid),
                "round {round}: {kid} lost: {listed:?}"
            );
        }
    }
}

#[test]
fn concurrent_secret_writes_never_fail_nor_mix() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("secret.der");
    let target = path.clone();
    let results = race(8, move || {
        let mut errors = Vec::new();
        for i in 0..25_u8 {
            let bytes = vec![i; 256 * 1024];
            if let Err(err) = keys::write_secret(&target, &bytes) {
                errors.push(err.to_string());
            }
        }
        errors
    });
    let errors: Vec<String> = results.into_iter().flatten().collect();
    assert!(errors.is_empty(), "{errors:?}");
    let bytes = std::fs::read(&path).unwrap();
    assert_eq!(bytes.len(), 256 * 1024);
    assert!(bytes.iter().all(|b| *b == bytes[0]), "two writes mixed");
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    assert!(temp_files(dir.path()).is_empty());
}

#[test]
fn a_failed_secret_write_leaves_no_key_bytes_behind() {
    let dir = tempfile::tempdir().unwrap();
    // A directory where the file should go: the rename fails after the bytes were written.
    let path = dir.path().join("oracle-key.der");
    std::fs::create_dir(&path).unwrap();
    std::fs::write(path.join("keep"), b"x").unwrap();
    assert!(keys::write_secret(&path, b"secret key bytes").is_err());
    assert_eq!(temp_files(dir.path()), Vec::<String>::new());
}

#[test]
fn temporary_files_are_never_committed_nor_sent_to_image_builds() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    for (file, pattern) in [
        (".gitignore", "*.tmp"),
        (".dockerignore", "**/*.tmp"),
        (".containerignore", "**/*.tmp"),
    ] {
        let text = std::fs::read_to_string(root.join(file)).unwrap();
        assert!(
            text.lines().any(|l| l.trim() == pattern),
            "{file} lacks {pattern}"
        );
    }
}

/// Database URLs whose password holds characters a URL reserves, as `openssl rand -base64`
/// produces them, with the secret part of each.
const BAD_URLS: [(&str, &str); 6] = [
    ("postgres://wattest:pa/ss#x@db/wattest", "pa/ss"),
    ("postgres://wattest:Xy7/k+Q=@db/wattest", "Xy7/k+Q="),
    ("postgres://wattest:pa#ssw0rd@db/wattest", "ssw0rd"),
    ("postgresql://wattest:pa?ssw0rd@db/wattest", "ssw0rd"),
    ("postgres://wattest:1234#ssw0rd@db/wattest", "ssw0rd"),
    ("mysql://wattest:hunter2@db/wattest", "hunter2"),
];

#[tokio::test]
async fn database_urls_that_are_refused_never_show_their_password() {
    for (url, secret) in BAD_URLS {
        let err = Storage::connect(url).await.unwrap_err();
        for text in [err.to_string(), format!("{err:?}")] {
            assert!(!text.contains(secret), "{url}: {text}");
            assert!(!text.contains("connection string"), "{url}: {text}");
        }
        assert!(err.to_string().contains("db/wattest"), "{url}: {err}");
    }
    let err = Storage::connect("postgres://wattest:pa/ss@db/wattest")
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("percent-encoded"), "{err}");
}

#[tokio::test]
async fn a_failed_connection_never_shows_the_password() {
    // A URL that parses, to a port where nothing listens.
    let url = "postgres://wattest:hunter2%2Fx@127.0.0.1:1/wattest?connect_timeout=2";
    let err = Storage::connect(url).await.unwrap_err();
    for text in [err.to_string(), format!("{err:?}")] {
        assert!(!text.contains("hunter2"), "the password leaks in {text:?}");
    }
}

#[test]
fn print_config_redacts_the_whole_password_whatever_it_holds() {
    let cases = [
        (
            "postgres://wattest:p@ss@db/w",
            "postgres://wattest:<redacted>@db/w",
        ),
        (
            "postgres://wattest:pa/ss#x@db/w",
            "postgres://wattest:<redacted>@db/w",
        ),
        (
            "postgres://wattest:a?b@db/w?sslmode=require",
            "postgres://wattest:<redacted>@db/w?sslmode=require",
        ),
        (
            "postgres://db/w?password=a@b",
            "postgres://db/w?password=<redacted>",
        ),
        ("postgres://app@db/w", "postgres://app@db/w"),
        (
            "sqlite:///var/lib/wattest/wattest.db?mode=rwc",
            "sqlite:///var/lib/wattest/wattest.db?mode=rwc",
        ),
    ];
    for (url, printed) in cases {
        assert_eq!(config::redact("database_url", url), printed, "{url}");
    }
}

fn demo_command() -> clap::Command {
    clap::Command::new("demo").subcommand(
        clap::Command::new("serve").arg(clap::Arg::new("database_url").long("database-url")),
    )
}

#[test]
fn a_malformed_config_file_is_reported_by_line_without_its_text() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("oracle.toml");
    for text in [
        "# the database\ndatabase_url = \"postgres://wattest:s3cretpw@db/w\n",
        "# the database\ndatabase_url = postgres://wattest:s3cretpw@db/w\n",
        "# the database\ndatabase_url = \"postgres://wattest:s3cretpw@db/w\" trailing\n",
    ] {
        std::fs::write(&file, text).unwrap();
        let argv: Vec<std::ffi::OsString> = ["demo", "serve"].iter().map(Into::into).collect();
        let err = config::merge_file(&demo_command(), &argv, &file).unwrap_err();
        for shown in [format!("{err:#}"), format!("{err:?}")] {
            assert!(!shown.contains("s3cretpw"), "{shown}");
            assert!(shown.contains("line 2"), "{shown}");
        }
    }
}

#[test]
fn a_config_file_that_others_can_read_is_warned_about() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("oracle.toml");
    std::fs::write(&file, "database_url = \"postgres://wattest:pw@db/w\"\n").unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let warning = config::exposure_warning(&file).unwrap();
    assert!(
        warning.contains("644") && warning.contains("chmod 600"),
        "{warning}"
    );
    assert!(!warning.contains("pw@"), "{warning}");
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o640)).unwrap();
    assert!(config::exposure_warning(&file).is_some());
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    assert_eq!(config::exposure_warning(&file), None);
    // Reading such a file still works: a warning, not a refusal.
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let argv: Vec<std::ffi::OsString> = ["demo", "serve"].iter().map(Into::into).collect();
    assert!(config::merge_file(&demo_command(), &argv, &file).is_ok());
}
