//! The command lines as users type them: the agent's `sources --json` with a settings file over
//! a synthetic sysfs tree, flags overriding the file, and a clear error for a bad file; the
//! oracle's commands that must refuse rather than guess.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::Command;
use wattest_tests::{bin, run_ok};

fn write(root: &Path, rel: &str, text: &str) {
    let path = root.join(rel);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

fn sources(config: &Path, extra: &[&str]) -> serde_json::Value {
    let out = run_ok(
        Command::new(bin("wattest-agent"))
            .args(["sources", "--json", "--config"])
            .arg(config)
            .args(extra)
            .env_remove("WATTEST_SYSFS_ROOT"),
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn methods(v: &serde_json::Value) -> Vec<(String, String)> {
    v["sources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["kind"].as_str().unwrap().to_owned(),
                s["method"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[test]
fn sources_reads_the_settings_file_and_flags_override_it() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    // An INA226 board meter (5.25 W) on a synthetic sysfs tree.
    write(root, "sys/class/hwmon/hwmon0/name", "ina226\n");
    write(root, "sys/class/hwmon/hwmon0/power1_input", "5250000\n");
    write(root, "sys/class/hwmon/hwmon0/power1_label", "VIN\n");
    write(root, "solar_w", "42.5\n");
    let config = root.join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "sysfs_root = \"{}\"\nhwmon_channels = [\"ina226:VIN\"]\n[solar]\nwatts = 12.5\n",
            root.join("sys").display()
        ),
    )
    .unwrap();

    let listed = methods(&sources(&config, &[]));
    assert!(
        listed.contains(&("platform".into(), "hwmon_power_integration".into())),
        "{listed:?}"
    );
    assert!(
        listed.contains(&("solar".into(), "solar_declared_constant".into())),
        "{listed:?}"
    );
    // The platform meter covers the CPU, so no CPU-time estimate is added.
    assert!(
        !listed.iter().any(|(_, m)| m == "estimate_cpu_tdp"),
        "{listed:?}"
    );

    // A solar flag replaces the file's solar input.
    let solar_file = root.join("solar_w");
    let listed = methods(&sources(
        &config,
        &["--solar-file", solar_file.to_str().unwrap()],
    ));
    assert!(
        listed.contains(&("solar".into(), "solar_power_integration".into())),
        "{listed:?}"
    );
    assert!(
        !listed.iter().any(|(_, m)| m == "solar_declared_constant"),
        "{listed:?}"
    );
}

#[test]
fn a_bad_settings_file_is_refused_with_its_reason() {
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("agent.toml");
    std::fs::write(&config, "intervall = 2\n").unwrap();
    let out = Command::new(bin("wattest-agent"))
        .args(["sources", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("intervall") && stderr.contains("agent.toml"),
        "{stderr}"
    );
}

/// Arguments the agent would only fail on later (every window refused by the oracle, a panic
/// after the job) are refused when parsed: clap's usage error, exit status 2, before anything
/// runs.
#[test]
fn the_agent_refuses_bad_labels_and_timeouts_before_running_anything() {
    let long = "j".repeat(129);
    let marker = std::env::temp_dir().join(format!("wattest-cli-{}", std::process::id()));
    let touch = format!("touch {}", marker.display());
    for args in [
        vec!["run", "--model-id", "", "--", "sh", "-c", &touch],
        vec!["run", "--job-id", &long, "--", "sh", "-c", &touch],
        vec!["run", "--job-id", "a\tb", "--", "sh", "-c", &touch],
        vec![
            "run",
            "--upload-timeout",
            "18446744073709551615",
            "--",
            "sh",
            "-c",
            &touch,
        ],
        vec!["flush", "--timeout", "18446744073709551615"],
    ] {
        let out = Command::new(bin("wattest-agent"))
            .args(&args)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains("invalid value"), "{args:?}: {stderr}");
    }
    assert!(!marker.exists(), "no command ran");
}

#[test]
fn oracle_keys_list_creates_no_key_in_a_wrong_data_dir() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(bin("wattest-oracle"))
        .args(["keys", "list", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("no oracle keys"), "{stderr}");
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "nothing created"
    );
}

#[test]
fn oracle_node_set_refuses_a_lifespan_without_embodied_emissions() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(bin("wattest-oracle"))
        .args(["node", "set", "6f1c0000-0000-0000-0000-000000000000"])
        .args(["--lifespan-years", "5", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--embodied-kg"), "{stderr}");
}

#[test]
fn oracle_serve_on_an_unspecified_address_needs_a_public_url() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(bin("wattest-oracle"))
        .args(["serve", "--listen", "0.0.0.0:0", "--data-dir"])
        .arg(dir.path())
        .env_remove("WATTEST_PUBLIC_URL")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("--public-url"), "{stderr}");
}
