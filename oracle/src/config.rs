//! Configuration file of `wattest-oracle`: one TOML file whose keys are the long flag names of
//! the subcommand being run (`listen = "0.0.0.0:8080"`, `data_dir = "/var/lib/wattest"`, dashes
//! or underscores). Precedence, highest first: command-line flag, `WATTEST_*` / `DATABASE_URL`
//! environment variable, config file, built-in default. Every key is listed in
//! docs/operations.md.

use anyhow::{Context, Result, bail};
use clap::parser::ValueSource;
use clap::{ArgAction, ArgMatches, Command};
use std::ffi::OsString;
use std::path::Path;

/// Keys whose values are never printed (`--print-config` shows `<redacted>`).
const SECRET_KEYS: &[&str] = &["token", "api_token", "secret", "password"];

/// `command` with no argument required, in every subcommand: for reading the command line
/// before the config file fills in what it lacks (a required flag such as `token create
/// --role` may come from the file); the parse after [`merge_file`] requires them again.
#[must_use]
pub fn without_required(command: &Command) -> Command {
    let mut relaxed = command.clone().mut_args(|arg| arg.required(false));
    let subcommands: Vec<Command> = command.get_subcommands().map(without_required).collect();
    for subcommand in subcommands {
        let name = subcommand.get_name().to_owned();
        relaxed = relaxed.mut_subcommand(name, |_| subcommand);
    }
    relaxed
}

/// Re-parses `argv` with the values of `file` filled in for every flag of the running
/// subcommand that the command line and the environment left at its default. The caller warns
/// when group or others may read the file ([`exposure_warning`]): it may hold `database_url`
/// with a password.
///
/// # Errors
/// Unreadable or invalid TOML, a key that no subcommand knows, a value of the wrong shape.
/// The message of invalid TOML names the line and column, never the file's text.
pub fn merge_file(command: &Command, argv: &[OsString], file: &Path) -> Result<Vec<OsString>> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let table: toml::Table = toml::from_str(&text).map_err(|err| {
        anyhow::anyhow!(
            "{} is not valid TOML: {}",
            file.display(),
            toml_error(&text, &err)
        )
    })?;
    // The command line alone may lack a required flag that the file gives (`role` of `token
    // create`, as `--print-config` prints it): it is read with no flag required, and the file's
    // values join it before the real parse, which requires them.
    let matches = without_required(command).try_get_matches_from(argv)?;
    // The deepest subcommand being run and the position of its name in argv.
    let mut cmd = command.clone();
    let mut m = &matches;
    let mut path: Vec<String> = Vec::new();
    while let Some((name, sub)) = m.subcommand() {
        path.push(name.to_owned());
        cmd = cmd
            .find_subcommand(name)
            .cloned()
            .context("subcommand vanished")?;
        m = sub;
    }
    let known = all_long_flags(command);
    let mut extra: Vec<OsString> = Vec::new();
    for (key, value) in &table {
        let flag = key.replace('_', "-");
        if !known.contains(&flag) {
            bail!(
                "{}: unknown key {key:?} (keys are the long flag names, see --help and docs/operations.md)",
                file.display()
            );
        }
        let own = cmd
            .get_arguments()
            .find(|a| a.get_long() == Some(flag.as_str()));
        let root = command
            .get_arguments()
            .find(|a| a.get_long() == Some(flag.as_str()));
        let (arg, source) = match (own, root) {
            (Some(arg), _) => (arg, m.value_source(arg.get_id().as_str())),
            (None, Some(arg)) => (arg, matches.value_source(arg.get_id().as_str())),
            (None, None) => continue, // a key for another subcommand
        };
        let from_default = matches!(source, None | Some(ValueSource::DefaultValue));
        if !from_default {
            continue;
        }
        match (arg.get_action(), value) {
            (ArgAction::SetTrue, toml::Value::Boolean(true)) => {
                extra.push(format!("--{flag}").into())
            }
            (ArgAction::SetTrue, toml::Value::Boolean(false)) => {}
            (ArgAction::SetTrue, _) => bail!("{}: {key} must be true or false", file.display()),
            (_, toml::Value::String(s)) => {
                extra.push(format!("--{flag}").into());
                extra.push(s.into());
            }
            (_, toml::Value::Integer(i)) => {
                extra.push(format!("--{flag}").into());
                extra.push(i.to_string().into());
            }
            (_, toml::Value::Float(f)) => {
                extra.push(format!("--{flag}").into());
                extra.push(f.to_string().into());
            }
            _ => bail!("{}: {key} must be a string or a number", file.display()),
        }
    }
    // Insert the file's flags right after the subcommand path (before any `--` and trailing
    // positionals), so they bind to the subcommand being run.
    let mut out: Vec<OsString> = Vec::with_capacity(argv.len() + extra.len());
    let mut depth = 0;
    let mut inserted = false;
    for arg in argv {
        out.push(arg.clone());
        if !inserted && depth < path.len() && arg.to_str() == Some(path[depth].as_str()) {
            depth += 1;
            if depth == path.len() {
                out.extend(extra.iter().cloned());
                inserted = true;
            }
        }
    }
    if !inserted {
        out.extend(extra);
    }
    Ok(out)
}

/// `err` as `line L, column C: message`, without the source snippet that `toml`'s `Display`
/// shows (the offending line may be a `database_url` holding a password).
fn toml_error(text: &str, err: &toml::de::Error) -> String {
    let message = err.message().trim_end();
    let Some(span) = err.span() else {
        return message.to_owned();
    };
    let (line, column) = wattest_shared::text::line_column(text, span.start);
    format!("line {line}, column {column}: {message}")
}

/// A warning when `file` may be read by group or others (mode `& 0o077` not zero); `None`
/// when it may not, or when its mode cannot be read.
#[must_use]
pub fn exposure_warning(file: &Path) -> Option<String> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(file).ok()?.permissions().mode();
    (mode & 0o077 != 0).then(|| {
        format!(
            "the config file {} has mode {:o}: group or others may read it, and it may hold a \
             database password; chmod 600 it",
            file.display(),
            mode & 0o777
        )
    })
}

fn all_long_flags(command: &Command) -> Vec<String> {
    let mut flags: Vec<String> = command
        .get_arguments()
        .filter_map(|a| a.get_long().map(str::to_owned))
        .collect();
    for sub in command.get_subcommands() {
        flags.extend(all_long_flags(sub));
    }
    flags
}

/// The effective settings of the running subcommand as TOML, secrets redacted: the password of
/// a URL, and the values of the keys in `SECRET_KEYS`.
///
/// Each key is the long flag name with `_`; flags that are not set and have no default are left
/// out. Switches are TOML booleans; integers (`request_timeout_secs = 30`) and floats
/// (`rate_limit_per_ip = 100.0`) are TOML numbers; every other value, exact decimal amounts such
/// as `price_eur_per_tonne` included, is a TOML string as given. The text is accepted back by
/// [`merge_file`].
#[must_use]
pub fn effective(command: &Command, matches: &ArgMatches) -> String {
    let mut cmd = command.clone();
    let mut m = matches;
    let mut table = toml::Table::new();
    collect(&cmd, m, &mut table);
    while let Some((name, sub)) = m.subcommand() {
        let Some(next) = cmd.find_subcommand(name).cloned() else {
            break;
        };
        cmd = next;
        m = sub;
        collect(&cmd, m, &mut table);
    }
    toml::to_string(&table).unwrap_or_default()
}

fn collect(cmd: &Command, m: &ArgMatches, table: &mut toml::Table) {
    for arg in cmd.get_arguments() {
        let Some(long) = arg.get_long() else { continue };
        if matches!(long, "help" | "version" | "config" | "print-config") {
            continue;
        }
        let key = long.replace('-', "_");
        let id = arg.get_id().as_str();
        let value = if matches!(arg.get_action(), ArgAction::SetTrue) {
            toml::Value::Boolean(m.get_flag(id))
        } else {
            let Ok(Some(raw)) = m.try_get_raw(id) else {
                continue;
            };
            let text: Vec<String> = raw.map(|v| v.to_string_lossy().into_owned()).collect();
            match number(m, id) {
                Some(n) if text.len() == 1 && !SECRET_KEYS.contains(&key.as_str()) => n,
                _ => toml::Value::String(redact(&key, &text.join(","))),
            }
        };
        table.insert(key, value);
    }
}

/// The value of `id` as a TOML number when its parser yields an integer or a float type;
/// `None` for any other type (strings, paths, addresses, decimal amounts) and for an integer
/// beyond TOML's 64-bit signed range.
fn number(m: &ArgMatches, id: &str) -> Option<toml::Value> {
    fn typed<T: Copy + Send + Sync + 'static>(m: &ArgMatches, id: &str) -> Option<T> {
        m.try_get_one::<T>(id).ok().flatten().copied()
    }
    let integer = |i: Option<i64>| i.map(toml::Value::Integer);
    integer(typed::<i64>(m, id))
        .or_else(|| integer(typed::<i32>(m, id).map(i64::from)))
        .or_else(|| integer(typed::<i16>(m, id).map(i64::from)))
        .or_else(|| integer(typed::<i8>(m, id).map(i64::from)))
        .or_else(|| integer(typed::<u64>(m, id).and_then(|v| i64::try_from(v).ok())))
        .or_else(|| integer(typed::<usize>(m, id).and_then(|v| i64::try_from(v).ok())))
        .or_else(|| integer(typed::<u32>(m, id).map(i64::from)))
        .or_else(|| integer(typed::<u16>(m, id).map(i64::from)))
        .or_else(|| integer(typed::<u8>(m, id).map(i64::from)))
        .or_else(|| typed::<f64>(m, id).map(toml::Value::Float))
        .or_else(|| typed::<f32>(m, id).map(|v| toml::Value::Float(f64::from(v))))
}

/// Query parameters of a database URL that carry a secret (libpq's `password` and
/// `sslpassword`, both honoured by sqlx-postgres).
const SECRET_QUERY_PARAMETERS: [&str; 2] = ["password", "sslpassword"];

/// `value` with secrets hidden: `<redacted>` for secret keys; in a URL, the userinfo's password
/// and the values of [`SECRET_QUERY_PARAMETERS`].
///
/// The userinfo ends at the last `@` (as URL parsers read it: `postgres://u:p@ss@db/w` has the
/// password `p@ss`), and, so that a password holding `/`, `?` or `#` unencoded (a URL that does
/// not parse) is hidden too, that `@` is searched in the whole URL, not only up to the first
/// `/`. When the last `@` is in the path or query instead, more than the password is hidden,
/// never less.
#[must_use]
pub fn redact(key: &str, value: &str) -> String {
    if SECRET_KEYS.contains(&key) {
        return "<redacted>".to_owned();
    }
    let Some((scheme, rest)) = value.split_once("://") else {
        return value.to_owned();
    };
    // `user[:password]@` when the text before the last `@` starts with a user name (no `/`,
    // `?` or `#` before the first `:`); otherwise there is no userinfo.
    let (userinfo, rest) = match rest.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split_once(':').map_or(userinfo, |(user, _)| user);
            if user.contains(['/', '?', '#']) {
                (String::new(), rest)
            } else if userinfo.contains(':') {
                (format!("{user}:<redacted>@"), host)
            } else {
                (format!("{userinfo}@"), host)
            }
        }
        None => (String::new(), rest),
    };
    let (rest, query) = match rest.split_once('?') {
        Some((rest, query)) => (rest, Some(query)),
        None => (rest, None),
    };
    let Some(query) = query else {
        return format!("{scheme}://{userinfo}{rest}");
    };
    let query: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((name, _))
                if SECRET_QUERY_PARAMETERS.contains(&name.to_ascii_lowercase().as_str()) =>
            {
                format!("{name}=<redacted>")
            }
            _ => pair.to_owned(),
        })
        .collect();
    format!("{scheme}://{userinfo}{rest}?{}", query.join("&"))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use clap::Arg;
    use wattest_shared::Eur;

    /// A command shaped like the oracle's: a global switch, and a subcommand with an address,
    /// an integer, a float, a signed integer, a decimal amount and a secret.
    fn command() -> Command {
        Command::new("demo")
            .arg(
                Arg::new("log_json")
                    .long("log-json")
                    .global(true)
                    .action(ArgAction::SetTrue),
            )
            .subcommand(
                Command::new("serve")
                    .arg(
                        Arg::new("listen")
                            .long("listen")
                            .default_value("127.0.0.1:8080"),
                    )
                    .arg(
                        Arg::new("request_timeout_secs")
                            .long("request-timeout-secs")
                            .value_parser(clap::value_parser!(u64))
                            .default_value("30"),
                    )
                    .arg(
                        Arg::new("rate_limit_per_ip")
                            .long("rate-limit-per-ip")
                            .value_parser(clap::value_parser!(f64))
                            .default_value("100"),
                    )
                    .arg(
                        Arg::new("max_clock_skew_secs")
                            .long("max-clock-skew-secs")
                            .value_parser(clap::value_parser!(i64))
                            .default_value("60"),
                    )
                    .arg(
                        Arg::new("price_eur_per_tonne")
                            .long("price-eur-per-tonne")
                            .value_parser(|s: &str| Eur::parse(s).ok_or("not an amount"))
                            .default_value("25"),
                    )
                    .arg(Arg::new("token").long("token")),
            )
    }

    fn printed(argv: &[&str]) -> String {
        let command = command();
        let matches = command.clone().try_get_matches_from(argv).unwrap();
        effective(&command, &matches)
    }

    #[test]
    fn numbers_print_as_toml_numbers_and_read_back() {
        let text = printed(&["demo", "serve", "--rate-limit-per-ip", "12.5"]);
        let table: toml::Table = toml::from_str(&text).unwrap();
        assert_eq!(
            table["request_timeout_secs"],
            toml::Value::Integer(30),
            "{text}"
        );
        assert_eq!(
            table["rate_limit_per_ip"],
            toml::Value::Float(12.5),
            "{text}"
        );
        assert_eq!(
            table["max_clock_skew_secs"],
            toml::Value::Integer(60),
            "{text}"
        );
        assert_eq!(table["price_eur_per_tonne"].as_str(), Some("25"), "{text}");
        assert_eq!(table["listen"].as_str(), Some("127.0.0.1:8080"), "{text}");
        assert_eq!(table["log_json"], toml::Value::Boolean(false), "{text}");
        assert!(!table.contains_key("token"), "unset, no default: {text}");
        assert!(text.contains("request_timeout_secs = 30\n"), "{text}");

        // The printed text is a config file: read back, it gives the same settings.
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("printed.toml");
        std::fs::write(&file, &text).unwrap();
        let argv: Vec<OsString> = ["demo", "serve"].iter().map(OsString::from).collect();
        let merged = merge_file(&command(), &argv, &file).unwrap();
        let merged: Vec<String> = merged
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        let merged: Vec<&str> = merged.iter().map(String::as_str).collect();
        assert_eq!(printed(&merged), text);
    }

    #[test]
    fn secrets_stay_redacted_whatever_their_type() {
        let text = printed(&["demo", "serve", "--token", "12"]);
        let table: toml::Table = toml::from_str(&text).unwrap();
        assert_eq!(table["token"].as_str(), Some("<redacted>"), "{text}");
    }

    #[test]
    fn url_passwords_and_secret_keys_are_redacted() {
        assert_eq!(
            redact("database_url", "postgres://app:hunter2@db/wattest"),
            "postgres://app:<redacted>@db/wattest"
        );
        assert_eq!(
            redact("database_url", "sqlite://x.db?mode=rwc"),
            "sqlite://x.db?mode=rwc"
        );
        assert_eq!(
            redact(
                "database_url",
                "postgres://app@db/wattest?sslmode=require&password=hunter2"
            ),
            "postgres://app@db/wattest?sslmode=require&password=<redacted>"
        );
        assert_eq!(
            redact("database_url", "postgres://app:pw@db/w?SSLPassword=k"),
            "postgres://app:<redacted>@db/w?SSLPassword=<redacted>"
        );
        assert_eq!(redact("token", "wt_admin_abc"), "<redacted>");
        assert_eq!(redact("rate_limit_per_token", "20"), "20");
    }
}
