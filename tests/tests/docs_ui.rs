//! Swagger UI at `/docs` renders the OpenAPI document in a real browser (headless Chromium) with
//! every host but loopback unreachable: the page must need nothing from the internet.
//!
//! Needs Debian's `chromium` (scripts/lib/deps.sh installs it); without it the test fails.

#![allow(clippy::unwrap_used)] // a failed unwrap is the test failing, with its location

use std::process::Command;
use wattest_tests::Oracle;

fn chromium() -> String {
    ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .find(|c| {
            Command::new(c)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .map(str::to_owned)
        .expect("headless Chromium is required for this test: apt-get install chromium (scripts/lib/deps.sh does)")
}

#[test]
fn swagger_ui_renders_every_operation_offline_in_headless_chromium() {
    let browser = chromium();
    let oracle = Oracle::start();
    let profile = tempfile::tempdir().unwrap();
    let out = Command::new(&browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            // Any host but the oracle's loopback address resolves to nothing: a CDN script
            // would fail to load and the page would stay blank.
            "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
            "--virtual-time-budget=15000",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg("--dump-dom")
        .arg(format!("{}/docs/", oracle.url))
        .output()
        .unwrap();
    let dom = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Swagger UI renders each operation as an `opblock` with its path; the document title and
    // the operations below only appear once the bundled JS ran and fetched the spec.
    assert!(
        dom.contains("Wattest oracle API"),
        "the spec's title was not rendered: {dom:.2000}"
    );
    let spec: serde_json::Value = reqwest::blocking::get(format!("{}/openapi.json", oracle.url))
        .unwrap()
        .json()
        .unwrap();
    let paths = spec["paths"].as_object().unwrap();
    assert!(paths.len() >= 15, "{} paths", paths.len());
    for path in paths.keys() {
        // Swagger UI breaks long paths with zero-width spaces (U+200B) after each `/`.
        let shown = dom.replace('\u{200b}', "");
        assert!(
            shown.contains(&format!("data-path=\"{path}\"")) || shown.contains(path.as_str()),
            "operation {path} not rendered"
        );
    }
    let rendered = dom.matches("opblock-summary-path").count();
    assert!(rendered >= paths.len(), "{rendered} operations rendered");
}
