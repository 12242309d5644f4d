//! `wattest-oracle --print-config` and the logging switches as a process: the effective settings
//! print as typed TOML (numbers as numbers) that `--config` reads back unchanged, also without a
//! subcommand (the `serve` settings), and `WATTEST_LOG_JSON` takes the usual boolean words.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::{Command, Output};

/// `wattest-oracle ARGS` run in `dir`, with no `WATTEST_*` or `DATABASE_URL` from the caller's
/// environment, plus `env`.
fn oracle(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_wattest-oracle"));
    command.current_dir(dir).args(args);
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        if name.starts_with("WATTEST_") || name == "DATABASE_URL" {
            command.env_remove(name.as_ref());
        }
    }
    command.envs(env.iter().copied()).output().unwrap()
}

fn stdout_ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "exit {:?}: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

#[test]
fn print_config_without_a_subcommand_prints_the_serve_settings_as_typed_toml() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("oracle.toml");
    std::fs::write(
        &file,
        "listen = \"0.0.0.0:9000\"\npublic_url = \"https://oracle.example.org\"\n\
         request_timeout_secs = 45\nrate_limit_per_ip = 12.5\nrate_burst_per_ip = 7\n\
         price_eur_per_tonne = 30\n",
    )
    .unwrap();
    let file_arg = file.to_str().unwrap();

    // As docs/operations.md shows it: no subcommand.
    let text = stdout_ok(&oracle(
        dir.path(),
        &["--config", file_arg, "--print-config"],
        &[],
    ));
    let printed: toml::Table = toml::from_str(&text).unwrap();
    let int = |key: &str| printed[key].as_integer();
    let float = |key: &str| printed[key].as_float();
    let string = |key: &str| printed[key].as_str();
    assert_eq!(string("listen"), Some("0.0.0.0:9000"), "{text}");
    assert_eq!(string("public_url"), Some("https://oracle.example.org"));
    assert_eq!(int("request_timeout_secs"), Some(45), "{text}");
    assert_eq!(float("rate_limit_per_ip"), Some(12.5), "{text}");
    assert_eq!(int("rate_burst_per_ip"), Some(7), "{text}");
    // Defaults of serve, typed too.
    assert_eq!(int("certificate_validity_days"), Some(3650), "{text}");
    assert_eq!(int("max_clock_skew_secs"), Some(60), "{text}");
    assert_eq!(float("node_owner_share_pct"), Some(70.0), "{text}");
    // An exact decimal amount stays the string given, never a binary float.
    assert_eq!(string("price_eur_per_tonne"), Some("30"), "{text}");
    assert_eq!(printed["log_json"].as_bool(), Some(false), "{text}");
    assert!(text.contains("request_timeout_secs = 45\n"), "{text}");

    // The same as naming `serve`.
    let serve = stdout_ok(&oracle(
        dir.path(),
        &["--config", file_arg, "serve", "--print-config"],
        &[],
    ));
    assert_eq!(serve, text);

    // The printed text is a config file: read back, it prints the same.
    let again = dir.path().join("printed.toml");
    std::fs::write(&again, &text).unwrap();
    let reread = stdout_ok(&oracle(
        dir.path(),
        &["--config", again.to_str().unwrap(), "--print-config"],
        &[],
    ));
    assert_eq!(reread, text);

    // Without --print-config a subcommand is still required: a usage error.
    let out = oracle(dir.path(), &["--config", file_arg, "--log-json"], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("requires a subcommand"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn wattest_log_json_takes_the_usual_boolean_words() {
    let dir = tempfile::tempdir().unwrap();
    let log_json = |value: &str| -> Option<bool> {
        let text = stdout_ok(&oracle(
            dir.path(),
            &["--print-config"],
            &[("WATTEST_LOG_JSON", value)],
        ));
        toml::from_str::<toml::Table>(&text).unwrap()["log_json"].as_bool()
    };
    for on in ["1", "true", "yes", "on", "TRUE", "Y"] {
        assert_eq!(log_json(on), Some(true), "WATTEST_LOG_JSON={on}");
    }
    for off in ["0", "false", "no", "off", "N"] {
        assert_eq!(log_json(off), Some(false), "WATTEST_LOG_JSON={off}");
    }
    let out = oracle(
        dir.path(),
        &["--print-config"],
        &[("WATTEST_LOG_JSON", "maybe")],
    );
    assert_eq!(out.status.code(), Some(2), "a value that is no boolean");
}

/// A config file that group or others may read (it may hold a database password) is warned
/// about once, through the log, in the log format asked for; a private one is not.
#[test]
fn a_readable_config_file_is_warned_about_in_the_log_format() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("oracle.toml");
    std::fs::write(&file, "request_timeout_secs = 30\n").unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let run = |extra: &[&str]| {
        let mut args = vec!["--config", file.to_str().unwrap()];
        args.extend_from_slice(extra);
        args.extend(["token", "list", "--data-dir", "data"]);
        let out = oracle(dir.path(), &args, &[]);
        stdout_ok(&out);
        String::from_utf8(out.stderr).unwrap()
    };
    let plain = run(&[]);
    assert_eq!(plain.matches("chmod 600").count(), 1, "{plain}");
    assert!(plain.contains("WARN"), "{plain}");
    let json = run(&["--log-json"]);
    let line = json.lines().find(|l| l.contains("chmod 600")).unwrap();
    let record: serde_json::Value = serde_json::from_str(line).unwrap();
    assert_eq!(record["level"], "WARN", "{line}");
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let quiet = run(&[]);
    assert!(!quiet.contains("chmod 600"), "{quiet}");
}
