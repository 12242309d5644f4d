//! `wattest-oracle`'s command line as a process. `--print-config` and the logging switches: the
//! effective settings print as typed TOML (numbers as numbers) that `--config` reads back
//! unchanged, also without a subcommand (the `serve` settings), and `WATTEST_LOG_JSON` takes the
//! usual boolean words. The exit status contract (docs/operations.md, "Oracle exit status"): a
//! runtime failure is one line `wattest-oracle: error: …` and exit 1, never anyhow's `Caused
//! by:` nor a backtrace; a bad flag or value is a usage error, exit 2; offline commands refuse a
//! data dir without a database instead of creating one.

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
    // `token list` reads an existing database only: `token create` makes it.
    stdout_ok(&oracle(
        dir.path(),
        &["token", "create", "--role", "admin", "--data-dir", "data"],
        &[],
    ));
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

/// The exit status and the stderr of `out`.
fn failure(out: &Output) -> (Option<i32>, String) {
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A runtime failure is one line on stderr, `wattest-oracle: error: …` with its causes after
/// colons, and exit 1: no `Caused by:` block and no backtrace, even with `RUST_BACKTRACE=1`.
#[test]
fn a_runtime_failure_is_one_line_and_exit_1_without_a_backtrace() {
    let dir = tempfile::tempdir().unwrap();
    stdout_ok(&oracle(
        dir.path(),
        &["token", "create", "--role", "admin", "--data-dir", "data"],
        &[],
    ));
    for backtrace in ["1", "full"] {
        let env = [("RUST_BACKTRACE", backtrace), ("RUST_LIB_BACKTRACE", "1")];
        let (code, stderr) = failure(&oracle(
            dir.path(),
            &["token", "revoke", "nosuchid", "--data-dir", "data"],
            &env,
        ));
        assert_eq!(code, Some(1), "{stderr}");
        assert_eq!(
            stderr,
            "wattest-oracle: error: no unrevoked token with id nosuchid; see `wattest-oracle token list`\n"
        );
        // A failure with a cause: the causes follow on the same line.
        let (code, stderr) = failure(&oracle(
            dir.path(),
            &["serve", "--data-dir", "data", "--ek-ca-dir", "no-such-dir"],
            &env,
        ));
        assert_eq!(code, Some(1), "{stderr}");
        let last = stderr.lines().last().unwrap_or_default();
        assert!(
            last.starts_with("wattest-oracle: error: reading EK CA dir no-such-dir: "),
            "{stderr}"
        );
        for word in ["Caused by", "backtrace", "Backtrace", "Stack"] {
            assert!(!stderr.contains(word), "{word}: {stderr}");
        }
    }
}

/// `export --status` and `--granularity` take their words only: anything else is a usage error
/// (exit 2) naming the words, which `--help` lists too; the accepted spellings still export.
#[test]
fn export_status_and_granularity_are_checked_words() {
    let dir = tempfile::tempdir().unwrap();
    stdout_ok(&oracle(
        dir.path(),
        &["token", "create", "--role", "admin", "--data-dir", "data"],
        &[],
    ));
    let export = |extra: &[&str]| {
        let mut args = vec!["export", "--profile", "compliance", "--data-dir", "data"];
        args.extend_from_slice(extra);
        oracle(dir.path(), &args, &[])
    };
    let (code, stderr) = failure(&export(&["--status", "bogus"]));
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("invalid value 'bogus' for '--status")
            && stderr.contains("affirming, warning, contraindicated, revoked, valid, all"),
        "{stderr}"
    );
    let (code, stderr) = failure(&export(&["--granularity", "bogus"]));
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("invalid value 'bogus' for '--granularity")
            && stderr.contains("[possible values: certificate, hour]"),
        "{stderr}"
    );
    for name in [
        "affirming",
        "warning",
        "contraindicated",
        "revoked",
        "valid",
        "all",
    ] {
        let csv = stdout_ok(&export(&["--status", name]));
        assert!(csv.starts_with("certificate_id,"), "{name}: {csv}");
    }
    for name in ["certificate", "hour"] {
        let csv = stdout_ok(&export(&["--granularity", name]));
        assert!(csv.starts_with("certificate_id,"), "{name}: {csv}");
    }
    let help = stdout_ok(&oracle(dir.path(), &["export", "--help"], &[]));
    let help = help.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(
        help.contains(
            "[possible values: affirming, warning, contraindicated, revoked, valid, all]"
        ) && help.contains("[possible values: certificate, hour]"),
        "{help}"
    );
}

/// Values that parse but cannot be right are usage errors too (exit 2, with the subcommand's
/// usage), refused before the database is opened.
#[test]
fn refused_combinations_of_values_are_usage_errors() {
    let dir = tempfile::tempdir().unwrap();
    stdout_ok(&oracle(
        dir.path(),
        &["token", "create", "--role", "admin", "--data-dir", "data"],
        &[],
    ));
    let cases: [(&[&str], &str, &str); 4] = [
        (
            &["export", "--profile", "compliance"],
            "--from=2026-02-01T00:00:00Z --to=2026-01-01T00:00:00Z",
            "must be before to",
        ),
        (
            &["export", "--profile", "compliance"],
            "--from=2026-01-01T00:00:00Z --to=2026-01-01T00:00:00Z",
            "must be before to",
        ),
        (
            &["export", "--profile", "codecarbon"],
            "--granularity=hour",
            "only for the compliance profile",
        ),
        (
            &["node", "set", "6f1c0000-0000-0000-0000-000000000000"],
            "--owner=",
            "owner must be 1 to 200 characters",
        ),
    ];
    for (command, extra, says) in cases {
        let mut args = command.to_vec();
        args.extend(extra.split(' '));
        args.extend(["--data-dir", "data"]);
        let (code, stderr) = failure(&oracle(dir.path(), &args, &[]));
        assert_eq!(code, Some(2), "{args:?}: {stderr}");
        assert!(
            stderr.starts_with("error: ") && stderr.contains(says),
            "{args:?}: {stderr}"
        );
        let usage = if command[0] == "node" {
            "Usage: wattest-oracle node set "
        } else {
            "Usage: wattest-oracle export "
        };
        assert!(stderr.contains(usage), "{args:?}: {stderr}");
    }
}

/// `token list`, `token revoke`, `node set` and `export` read an existing database: on a data
/// dir without `wattest.db` (and no DATABASE_URL) they fail naming the path, and create
/// nothing; `token create` still creates the database on first use.
#[test]
fn offline_commands_refuse_a_data_dir_without_a_database() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nonexistent");
    let missing_arg = missing.to_str().unwrap();
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let empty_arg = empty.to_str().unwrap();
    let commands: [&[&str]; 5] = [
        &["token", "list"],
        &["token", "revoke", "some-id"],
        &[
            "node",
            "set",
            "6f1c0000-0000-0000-0000-000000000000",
            "--owner",
            "Acme",
        ],
        &["export", "--profile", "compliance"],
        &["export", "--profile", "sci", "--output", "out.csv"],
    ];
    for data_dir in [missing_arg, empty_arg] {
        for command in commands {
            let mut args = command.to_vec();
            args.extend(["--data-dir", data_dir]);
            let out = oracle(dir.path(), &args, &[]);
            let (code, stderr) = failure(&out);
            assert_eq!(code, Some(1), "{args:?}: {stderr}");
            let db = format!("{data_dir}/wattest.db");
            assert!(
                stderr.starts_with("wattest-oracle: error: no oracle database ")
                    && stderr.contains(&db)
                    && stderr.contains("is --data-dir right?"),
                "{args:?}: {stderr}"
            );
            assert!(out.stdout.is_empty(), "{args:?}: no CSV header");
        }
    }
    assert!(!missing.exists(), "the missing data dir was created");
    assert_eq!(
        std::fs::read_dir(&empty).unwrap().count(),
        0,
        "created in the empty dir"
    );
    assert!(!dir.path().join("out.csv").exists() && !dir.path().join("out.csv.partial").exists());

    // First use: `token create` makes the database, then the others read it.
    stdout_ok(&oracle(
        dir.path(),
        &[
            "token",
            "create",
            "--role",
            "admin",
            "--data-dir",
            missing_arg,
        ],
        &[],
    ));
    assert!(missing.join("wattest.db").is_file());
    let list = stdout_ok(&oracle(
        dir.path(),
        &["token", "list", "--data-dir", missing_arg],
        &[],
    ));
    assert!(list.contains("\tadmin\t"), "{list}");
}

/// `--public-url` (and WATTEST_PUBLIC_URL) must be an absolute http(s) URL with a host: it
/// becomes the certificates' `iss`. A bad one is a usage error (exit 2) before anything is
/// created; a good one is kept as given (trailing slash included).
#[test]
fn serve_refuses_a_public_url_that_is_not_an_http_url() {
    let dir = tempfile::tempdir().unwrap();
    for bad in [
        "notaurl",
        "ftp://oracle.example.org",
        "https://",
        "http:///path",
        "https://@/x",
        "oracle.example.org",
        "https://oracle.example.org/?x=1",
        " https://oracle.example.org",
    ] {
        let (code, stderr) = failure(&oracle(
            dir.path(),
            // Were the URL taken, the missing EK CA dir stops serve before it listens.
            &[
                "serve",
                "--public-url",
                bad,
                "--data-dir",
                "data",
                "--ek-ca-dir",
                "none",
            ],
            &[],
        ));
        assert_eq!(code, Some(2), "{bad}: {stderr}");
        assert!(
            stderr.contains("--public-url")
                && stderr.contains("is not an absolute http or https URL with a host"),
            "{bad}: {stderr}"
        );
        let (code, stderr) = failure(&oracle(
            dir.path(),
            &["serve", "--data-dir", "data", "--ek-ca-dir", "none"],
            &[("WATTEST_PUBLIC_URL", bad)],
        ));
        assert_eq!(code, Some(2), "WATTEST_PUBLIC_URL={bad}: {stderr}");
    }
    assert!(!dir.path().join("data").exists(), "nothing created");
    for good in [
        "https://oracle.example.org/",
        "http://127.0.0.1:8080",
        "https://o.example/base",
    ] {
        let text = stdout_ok(&oracle(
            dir.path(),
            &["serve", "--public-url", good, "--print-config"],
            &[],
        ));
        let printed: toml::Table = toml::from_str(&text).unwrap();
        assert_eq!(printed["public_url"].as_str(), Some(good), "{text}");
    }
}

/// docs/operations.md: `--print-config`'s output is a config file that `--config` reads back to
/// the same settings, required flags included (`token create --role`, `export --profile`): the
/// command line is read without them before the file fills them in. Without the file they are
/// still required, and `--help` still shows them as required.
#[test]
fn print_config_reads_back_with_the_required_flags_it_holds() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data = data.to_str().unwrap();
    for args in [
        &["token", "create", "--role", "auditor"][..],
        &["export", "--profile", "sci"][..],
    ] {
        let mut first = args.to_vec();
        first.extend(["--data-dir", data, "--print-config"]);
        let printed = stdout_ok(&oracle(dir.path(), &first, &[]));
        let file = dir.path().join("printed.toml");
        std::fs::write(&file, &printed).unwrap();
        let mut again = args[..args.len() - 2].to_vec();
        again.extend(["--config", file.to_str().unwrap(), "--print-config"]);
        assert_eq!(
            stdout_ok(&oracle(dir.path(), &again, &[])),
            printed,
            "{args:?}"
        );

        let bare = &args[..args.len() - 2];
        let out = oracle(dir.path(), &[bare, &["--data-dir", data][..]].concat(), &[]);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let flag = args[args.len() - 2];
        assert!(
            String::from_utf8_lossy(&out.stderr).contains(&format!("{flag} <")),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let help = stdout_ok(&oracle(dir.path(), &[bare, &["--help"][..]].concat(), &[]));
        let usage = help.lines().find(|l| l.starts_with("Usage:")).unwrap();
        assert!(usage.contains(&format!("{flag} <")), "{usage}");
    }
    // The file's role is the one used: the token is created with it.
    let file = dir.path().join("role.toml");
    std::fs::write(
        &file,
        format!("role = \"auditor\"\ndata_dir = \"{data}\"\n"),
    )
    .unwrap();
    let token = stdout_ok(&oracle(
        dir.path(),
        &["token", "create", "--config", file.to_str().unwrap()],
        &[],
    ));
    assert!(!token.trim().is_empty());
    let listed = stdout_ok(&oracle(
        dir.path(),
        &["token", "list", "--data-dir", data],
        &[],
    ));
    assert!(listed.contains("auditor"), "{listed}");
}

/// Every `serve` setting has its environment variable, `WATTEST_` and the flag's name: the
/// pricing and validity settings had none, and a variable set for them was silently ignored.
#[test]
fn pricing_and_validity_settings_come_from_the_environment_too() {
    let dir = tempfile::tempdir().unwrap();
    let env = [
        ("WATTEST_PRICE_EUR_PER_TONNE", "99.5"),
        ("WATTEST_NODE_OWNER_SHARE_PCT", "10"),
        ("WATTEST_CERTIFICATE_VALIDITY_DAYS", "5"),
        ("WATTEST_REWARD_RATE", "solar=3"),
    ];
    let text = stdout_ok(&oracle(dir.path(), &["--print-config"], &env));
    let printed: toml::Table = toml::from_str(&text).unwrap();
    assert_eq!(
        printed["price_eur_per_tonne"].as_str(),
        Some("99.5"),
        "{text}"
    );
    assert_eq!(
        printed["node_owner_share_pct"].as_float(),
        Some(10.0),
        "{text}"
    );
    assert_eq!(
        printed["certificate_validity_days"].as_integer(),
        Some(5),
        "{text}"
    );
    assert!(text.contains("solar=3"), "{text}");
    let help = stdout_ok(&oracle(dir.path(), &["serve", "--help"], &[]));
    for (name, _) in env {
        assert!(help.contains(&format!("{name}=")), "{name} not in --help");
    }
}

/// `serve` checks its settings before it creates anything: a kind priced twice by
/// `--reward-rate` is a usage error (exit 2; it used to take the last price silently), and a
/// missing `--public-url` on an unspecified address fails (exit 1) with no data dir left behind.
#[test]
fn serve_refuses_bad_settings_before_creating_the_data_dir() {
    let dir = tempfile::tempdir().unwrap();
    let (code, stderr) = failure(&oracle(
        dir.path(),
        &[
            "serve",
            "--data-dir",
            "data",
            "--reward-rate",
            "solar=30,solar=40",
        ],
        &[],
    ));
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("solar more than once"), "{stderr}");
    assert!(!dir.path().join("data").exists());

    let (code, stderr) = failure(&oracle(
        dir.path(),
        &["serve", "--data-dir", "data", "--listen", "0.0.0.0:0"],
        &[],
    ));
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("--public-url"), "{stderr}");
    assert!(!dir.path().join("data").exists());
}
