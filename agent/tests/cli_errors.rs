//! `wattest-agent` as a process: a flag or environment value out of range is a usage error
//! (exit 2, clap's message), the same value in the config file is the agent's failure (exit 70)
//! naming the file, and an error's causes are each printed once, after what was being done.

#![allow(clippy::unwrap_used)]

use std::process::{Command, Output};

/// `wattest-agent enroll` against an address where nothing listens (port 9, discard), with
/// `extra` flags: it fails before any request in every use here.
fn enroll(extra: &[&str]) -> Output {
    let mut args = vec![
        "enroll",
        "--oracle",
        "http://127.0.0.1:9",
        "--token",
        "t",
        "--name",
        "n",
        "--zone",
        "BE",
    ];
    args.extend_from_slice(extra);
    agent(&args, &[])
}

fn agent(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_wattest-agent"));
    cmd.args(args);
    for var in [
        "WATTEST_INTERVAL",
        "WATTEST_TDP_WATTS",
        "WATTEST_CONFIG",
        "WATTEST_ORACLE",
        "WATTEST_TCTI",
    ] {
        cmd.env_remove(var);
    }
    cmd.envs(env.iter().copied());
    cmd.output().unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The line the agent prints for its own failure (tracing may log other lines).
fn error_line(out: &Output) -> String {
    stderr(out)
        .lines()
        .find(|l| l.starts_with("wattest-agent: error: "))
        .unwrap_or_else(|| panic!("no error line: {}", stderr(out)))
        .to_owned()
}

/// Arguments, environment, and how stderr starts.
type Case<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)], &'a str);

#[test]
fn out_of_range_flags_and_environment_are_usage_errors() {
    let cases: &[Case] = &[
        (
            &["sources", "--interval", "100"],
            &[],
            "error: invalid value '100' for '--interval <INTERVAL>': 100 is not in 0.05..=60",
        ),
        (
            &["sources", "--interval", "0.01"],
            &[],
            "error: invalid value '0.01' for '--interval <INTERVAL>': 0.01 is not in 0.05..=60",
        ),
        (
            &["sources"],
            &[("WATTEST_INTERVAL", "61")],
            "error: invalid value '61' for '--interval <INTERVAL>': 61 is not in 0.05..=60",
        ),
        (
            &["sources", "--tdp-watts=0"],
            &[],
            "error: invalid value '0' for '--tdp-watts <TDP_WATTS>': 0 is not a positive number of watts",
        ),
        (
            &["sources", "--solar-watts=-1"],
            &[],
            "error: invalid value '-1' for '--solar-watts <SOLAR_WATTS>': -1 is not a number of watts ≥ 0",
        ),
        (
            &["sources", "--interval", "fast"],
            &[],
            "error: invalid value 'fast' for '--interval <INTERVAL>': \"fast\" is not a number",
        ),
        (
            &["run", "--interval", "100", "--", "true"],
            &[],
            "error: invalid value '100' for '--interval <INTERVAL>': 100 is not in 0.05..=60",
        ),
        (
            &["run", "--print-config", "--solar-watts=-1"],
            &[],
            "error: invalid value '-1' for '--solar-watts <SOLAR_WATTS>'",
        ),
        (
            &["watch", "--tdp-watts=-3"],
            &[],
            "error: invalid value '-3' for '--tdp-watts <TDP_WATTS>': -3 is not a positive number of watts",
        ),
    ];
    for (args, env, expected) in cases {
        let out = agent(args, env);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.starts_with(expected), "{args:?}: {err}");
        assert!(!err.contains("wattest-agent: error"), "{args:?}: {err}");
        assert!(out.stdout.is_empty(), "{args:?}");
    }
    // The bounds themselves are accepted.
    let out = agent(&["sources", "--print-config", "--interval", "0.05"], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("interval = 0.05"));
}

#[test]
fn out_of_range_config_values_fail_with_exit_70_naming_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    for (text, why) in [
        ("interval = 100\n", "interval: 100 is not in 0.05..=60"),
        (
            "tdp_watts = 0.0\n",
            "tdp_watts: 0 is not a positive number of watts",
        ),
        (
            "[solar]\nwatts = -1.0\n",
            "solar watts: -1 is not a number of watts ≥ 0",
        ),
    ] {
        let path = tmp.path().join("agent.toml");
        std::fs::write(&path, text).unwrap();
        let config = path.to_str().unwrap();
        for args in [
            &["sources", "--config", config][..],
            &["sources", "--print-config", "--config", config][..],
        ] {
            let out = agent(args, &[]);
            assert_eq!(out.status.code(), Some(70), "{args:?}: {}", stderr(&out));
            assert_eq!(
                error_line(&out),
                format!("wattest-agent: error: config file {config}: {why}")
            );
        }
    }
    // A flag overrides the file's bad value: the flag is what is used.
    let path = tmp.path().join("agent.toml");
    std::fs::write(&path, "interval = 100\n").unwrap();
    let out = agent(
        &[
            "sources",
            "--print-config",
            "--config",
            path.to_str().unwrap(),
            "--interval",
            "2",
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}

/// A config file that does not parse is reported as one line naming the file, line and column
/// and the parser's message, never quoting the file: the offending line may be a
/// `solar.command` holding a credential, which the agent shows only redacted.
#[test]
fn a_config_parse_error_names_the_place_but_never_quotes_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    for (text, place) in [
        // An unterminated string.
        (
            "[solar]\ncommand = \"curl -H SECRET123 http://inv\n",
            "line 2, column ",
        ),
        // An unknown key after the secret.
        (
            "[solar]\ncommand = \"curl -H SECRET123 http://inv\"\nbogus = 2\n",
            "line 3, column 1: unknown field `bogus`",
        ),
        // An unknown key before it.
        (
            "bogus = 2\n[solar]\ncommand = \"curl -H SECRET123 http://inv\"\n",
            "line 1, column 1: unknown field `bogus`",
        ),
    ] {
        let path = tmp.path().join("leak.toml");
        std::fs::write(&path, text).unwrap();
        let config = path.to_str().unwrap();
        for args in [
            &["sources", "--config", config][..],
            &["sources", "--print-config", "--config", config][..],
        ] {
            let out = agent(args, &[]);
            let err = stderr(&out);
            assert_eq!(out.status.code(), Some(70), "{args:?}: {err}");
            assert!(!err.contains("SECRET123"), "{text:?}: {err}");
            assert!(!err.contains("bogus = 2"), "{text:?}: {err}");
            assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
            let line = error_line(&out);
            let head = format!("wattest-agent: error: config file {config}: {place}");
            assert!(line.starts_with(&head), "{line}\n  expected {head}");
        }
    }
}

#[test]
fn each_cause_is_printed_once_after_what_was_being_done() {
    let out = agent(&["sources", "--config", "/nonexistent.toml"], &[]);
    assert_eq!(out.status.code(), Some(70));
    assert_eq!(
        error_line(&out),
        "wattest-agent: error: cannot read the config file /nonexistent.toml: No such file or directory (os error 2)"
    );
    let out = enroll(&["--state-dir", "/proc/nope"]);
    assert_eq!(out.status.code(), Some(70));
    assert_eq!(
        error_line(&out),
        "wattest-agent: error: opening the state dir: /proc/nope: No such file or directory (os error 2)"
    );
    for cmd in ["flush", "watch"] {
        let out = agent(&[cmd, "--state-dir", "/proc/nope"], &[]);
        assert_eq!(out.status.code(), Some(70), "{cmd}");
        assert_eq!(error_line(&out).matches("os error 2").count(), 1, "{cmd}");
    }
}

/// tss-esapi's error shows its response code's text and also returns the code as its source:
/// the agent prints it once, then the code's value.
#[cfg(feature = "tpm")]
#[test]
fn a_tpm_that_cannot_be_opened_is_reported_once() {
    let tmp = tempfile::tempdir().unwrap();
    let out = enroll(&[
        "--signer",
        "tpm",
        "--tcti",
        "device:/nonexistent/tpm",
        "--state-dir",
        tmp.path().to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(70), "{}", stderr(&out));
    let line = error_line(&out);
    assert!(
        line.starts_with(
            "wattest-agent: error: creating the TPM keys through device:/nonexistent/tpm: TPM operation open TPM context failed: "
        ),
        "{line}"
    );
    // The causes after what failed: the response code's text once, then its value.
    let causes = line.split(" failed: ").nth(1).unwrap();
    let (text, value) = causes.split_once(": Response code value: 0x").unwrap();
    assert!(!text.is_empty() && !text.contains(": "), "{line}");
    assert!(!value.contains(": "), "{line}");
}

/// A host without an NVIDIA driver (the normal case without an NVIDIA GPU) gets a `note:` line
/// from `sources`, not a `warning:`, and `sources --json` lists it under `notes`.
#[test]
fn a_missing_nvidia_driver_is_a_note_not_a_warning() {
    let out = agent(&["sources"], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        !text
            .lines()
            .any(|l| l.starts_with("warning:") && l.contains("NVML is not available")),
        "{text}"
    );
    let out = agent(&["sources", "--json"], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let listed = |key: &str| {
        json[key]
            .as_array()
            .unwrap_or_else(|| panic!("no {key} array: {json}"))
            .iter()
            .any(|l| l.as_str().unwrap().contains("NVML is not available"))
    };
    assert!(!listed("warnings"), "{json}");
    // Where NVML cannot be loaded (no driver), the note says so, in both forms.
    if wattest_agent::sources::nvml::NvmlBackend::init().is_err() {
        assert!(listed("notes"), "{json}");
        assert!(
            text.lines()
                .any(|l| l.starts_with("note: No NVIDIA GPU source: NVML is not available")),
            "{text}"
        );
    }
}
