//! `wattest-oracle`: the oracle server and its administration commands.

use anyhow::{Context, Result};

/// mimalloc instead of glibc's allocator: ingest allocates and frees many small buffers per
/// window (JSON, base64, rows) across threads, and glibc's malloc/free took about 12 % of the
/// oracle's CPU under batched ingest (`docs/performance.md`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use wattest_oracle::auth::{self, Role};
use wattest_oracle::credits::{
    CreditPolicy, DEFAULT_NODE_OWNER_SHARE_PCT, DEFAULT_PRICE_EUR_PER_TONNE,
};
use wattest_oracle::storage::{self, Storage};
use wattest_oracle::{AppState, Settings, api};
use wattest_shared::Eur;
use wattest_shared::jws::JwsSigner as _;

/// Wattest oracle: verifies signed energy windows from agents, applies grid carbon intensity,
/// issues signed energy certificates and serves compliance exports.
#[derive(Debug, Parser)]
#[command(name = "wattest-oracle", version)]
struct Cli {
    /// Log as JSON lines instead of text (same as --log-format json). WATTEST_LOG_JSON takes
    /// 1/0, true/false, yes/no, on/off (y/n, t/f; any case).
    #[arg(long, global = true, env = "WATTEST_LOG_JSON", action = clap::ArgAction::SetTrue, value_parser = clap::builder::BoolishValueParser::new())]
    log_json: bool,
    /// Log format: `text` or `json` (one JSON object per line, for log shippers).
    #[arg(long, global = true, env = "WATTEST_LOG_FORMAT", value_parser = ["text", "json"], default_value = "text")]
    log_format: String,
    /// TOML config file; its keys are the long flag names (see docs/operations.md). Flags and
    /// environment variables override it.
    #[arg(long, global = true, env = "WATTEST_CONFIG")]
    config: Option<PathBuf>,
    /// Print the effective configuration (file, environment and flags merged; secrets redacted)
    /// as TOML and exit: numbers as TOML numbers, switches as booleans, other values as
    /// strings; the output is accepted back by --config. Without a subcommand it prints the
    /// settings of `serve`.
    #[arg(long, global = true)]
    print_config: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the HTTP API.
    Serve(ServeArgs),
    /// Manage access tokens.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Manage the oracle's certificate signing keys (keyring.json in the data dir).
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Write a compliance export (CSV) from the database, offline: the same rows, columns and
    /// filters as `GET /v1/exports/{profile}.csv`.
    Export(ExportArgs),
    /// Administer nodes.
    Node {
        #[command(subcommand)]
        command: NodeCommand,
    },
}

#[derive(Debug, clap::Args)]
struct ExportArgs {
    /// Export profile: compliance, codecarbon or sci (columns: docs/compliance.md).
    #[arg(long, value_parser = ["compliance", "codecarbon", "sci"])]
    profile: String,
    /// Start of the reporting period [from, to), inclusive (RFC 3339): certificates whose period
    /// ends after it (hour rows: hours starting at or after it).
    #[arg(long)]
    from: Option<chrono::DateTime<chrono::Utc>>,
    /// End of the reporting period, exclusive (RFC 3339): certificates whose period ends at or
    /// before it (hour rows: hours starting before it).
    #[arg(long)]
    to: Option<chrono::DateTime<chrono::Utc>>,
    /// Only this node id.
    #[arg(long)]
    node: Option<String>,
    /// Only nodes with this owner.
    #[arg(long)]
    owner: Option<String>,
    /// Only this job id.
    #[arg(long)]
    job: Option<String>,
    /// Only this model id.
    #[arg(long)]
    model: Option<String>,
    /// Only this grid zone (case-insensitive, as at enrollment).
    #[arg(long)]
    zone: Option<String>,
    /// Which certificates: valid (default: not revoked); affirming, warning or contraindicated
    /// (that ear.status, not revoked); revoked (revoked only); all.
    #[arg(long, value_parser = status_parser())]
    status: Option<wattest_oracle::export::StatusFilter>,
    /// `certificate` (default) or `hour` (compliance profile only: one row per
    /// certificate-hour).
    #[arg(long, value_parser = granularity_parser())]
    granularity: Option<wattest_oracle::export::Granularity>,
    /// Write here (via FILE.partial, renamed when complete) instead of stdout.
    #[arg(long)]
    output: Option<PathBuf>,
    #[command(flatten)]
    data: DataArgs,
}

#[derive(Debug, Subcommand)]
enum NodeCommand {
    /// Set a node's owner and embodied emissions (for exports: `node_owner`, the `owner`
    /// filter, SCI `M`). Options not given are left as they are.
    Set {
        /// Node id (UUID).
        node_id: String,
        /// Owner (organisation or person), 1 to 200 characters.
        #[arg(long)]
        owner: Option<String>,
        /// Embodied emissions of the node's hardware (SCI TE), kgCO2e (decimal, at most 6
        /// decimals).
        #[arg(long, value_parser = parse_kg)]
        embodied_kg: Option<wattest_shared::Decimal6>,
        /// Expected lifespan of that hardware (SCI EL), years, 1 to 50; only with --embodied-kg
        /// [default with --embodied-kg: 4].
        #[arg(long, requires = "embodied_kg", value_parser = clap::value_parser!(u32).range(1..=50))]
        lifespan_years: Option<u32>,
        #[command(flatten)]
        data: DataArgs,
    },
}

/// `--status`: one of [`StatusFilter::NAMES`](wattest_oracle::export::StatusFilter::NAMES),
/// listed in `--help`; any other word is a usage error (exit 2) naming them.
fn status_parser()
-> impl clap::builder::TypedValueParser<Value = wattest_oracle::export::StatusFilter> {
    use clap::builder::TypedValueParser as _;
    use wattest_oracle::export::StatusFilter;
    clap::builder::PossibleValuesParser::new(StatusFilter::NAMES.split(", ")).try_map(|name| {
        StatusFilter::parse(&name).ok_or_else(|| format!("{name:?} is not a status filter"))
    })
}

/// `--granularity`: `certificate` or `hour`, listed in `--help`; any other word is a usage
/// error (exit 2) naming them.
fn granularity_parser()
-> impl clap::builder::TypedValueParser<Value = wattest_oracle::export::Granularity> {
    use clap::builder::TypedValueParser as _;
    use wattest_oracle::export::Granularity;
    clap::builder::PossibleValuesParser::new(["certificate", "hour"]).try_map(|name| {
        Granularity::parse(&name).ok_or_else(|| format!("{name:?} is not a granularity"))
    })
}

/// `--public-url`: an absolute `http` or `https` URL naming a host, kept as given (it becomes
/// the certificates' `iss`; a trailing slash is dropped where links and the log origin are
/// built from it).
///
/// # Errors
/// A sentence saying what is wrong (clap reports it as a usage error, exit 2).
fn parse_public_url(text: &str) -> Result<String, String> {
    let lower = text.to_ascii_lowercase();
    let why = if text.trim() != text || text.is_empty() {
        Some("it must not be empty nor start or end with white space")
    } else if !(lower.starts_with("http://") || lower.starts_with("https://")) {
        Some("it must start with http:// or https://")
    } else if text
        .split_once("://")
        .and_then(|(_, rest)| rest.split(['/', '?', '#']).next())
        .is_none_or(str::is_empty)
    {
        // `http:///path` parses, as `http://path/`: the host must be written where it is read.
        Some("it names no host")
    } else {
        match reqwest::Url::parse(text) {
            Err(_) => Some("it does not parse as a URL"),
            Ok(url) if url.host_str().is_none_or(str::is_empty) => Some("it names no host"),
            Ok(url) if url.query().is_some() || url.fragment().is_some() => {
                Some("it must have no query (?) nor fragment (#)")
            }
            Ok(_) => None,
        }
    };
    match why {
        None => Ok(text.to_owned()),
        Some(why) => Err(format!(
            "{text:?} is not an absolute http or https URL with a host ({why}), e.g. https://oracle.example.org"
        )),
    }
}

fn parse_kg(text: &str) -> Result<wattest_shared::Decimal6, String> {
    wattest_shared::Decimal6::parse(text)
        .filter(|d| d.millionths() >= 0)
        .ok_or_else(|| format!("{text:?} is not a non-negative decimal (at most 6 decimals)"))
}

#[derive(Debug, Subcommand)]
enum KeysCommand {
    /// Create a new signing key: published in the JWKS at once, signing certificates only after
    /// --activate-after-hours. Old keys stay published so their certificates stay verifiable.
    /// Running oracles sharing the data dir pick the change up without a restart.
    Rotate {
        /// Hours between publishing the new key and signing with it (default 24: relying parties
        /// caching the JWKS for a day see it before it is used); 0 signs with it at once.
        #[arg(long, default_value_t = wattest_oracle::keys::DEFAULT_ACTIVATION_DELAY_HOURS, value_parser = clap::value_parser!(i64).range(0..=8760))]
        activate_after_hours: i64,
        /// Key kind: ps256 (RSA-3072, the default) or es256 (EC P-256, RFC 7518 §3.4).
        #[arg(long, value_enum, default_value_t = wattest_oracle::keys::KeyAlg::Ps256)]
        alg: wattest_oracle::keys::KeyAlg,
        /// Directory holding the keys.
        #[arg(long, env = "WATTEST_DATA_DIR", default_value = "./data")]
        data_dir: PathBuf,
    },
    /// List the keys: kid, state (active / next / retired), creation and activation times.
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// Directory holding the keys.
        #[arg(long, env = "WATTEST_DATA_DIR", default_value = "./data")]
        data_dir: PathBuf,
    },
}

#[derive(Debug, clap::Args)]
struct DataArgs {
    /// Directory for the oracle key (oracle-key.der, mode 0600) and, unless DATABASE_URL is set,
    /// the SQLite database (wattest.db).
    #[arg(long, env = "WATTEST_DATA_DIR", default_value = "./data")]
    data_dir: PathBuf,
    /// PostgreSQL (postgres://user@host/db) or SQLite (sqlite://path?mode=rwc) URL; default:
    /// SQLite in the data dir.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,
}

#[derive(Debug, clap::Args)]
struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "WATTEST_LISTEN", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    #[command(flatten)]
    data: DataArgs,
    /// Public base URL of this oracle, written as `iss` in certificates and used in export links
    /// (default: http://LISTEN; required when LISTEN is an unspecified address such as 0.0.0.0,
    /// which names no host).
    /// Must be an absolute http or https URL with a host, without query or fragment.
    #[arg(long, env = "WATTEST_PUBLIC_URL", value_parser = parse_public_url)]
    public_url: Option<String>,
    /// Price per tonne of avoided CO2e for the avoided-emissions reward, EUR (decimal).
    #[arg(long, env = "WATTEST_PRICE_EUR_PER_TONNE", default_value = DEFAULT_PRICE_EUR_PER_TONNE, value_parser = parse_eur)]
    price_eur_per_tonne: Eur,
    /// Node owner's share of the reward, percent; the cooperative fund gets the rest.
    #[arg(long, env = "WATTEST_NODE_OWNER_SHARE_PCT", default_value_t = DEFAULT_NODE_OWNER_SHARE_PCT, value_parser = parse_share)]
    node_owner_share_pct: f64,
    /// Price per tonne for the avoided emissions of one generating source kind, as
    /// KIND=EUR_PER_TONNE (repeatable or comma-separated; kinds: solar), overriding
    /// --price-eur-per-tonne for that kind; each kind at most once. The certificate's
    /// `wattest.reward` names the price applied.
    #[arg(long, env = "WATTEST_REWARD_RATE", value_name = "KIND=EUR", value_delimiter = ',', value_parser = wattest_oracle::credits::parse_source_rate)]
    reward_rate: Vec<(wattest_shared::SourceKind, Eur)>,
    /// Certificate validity, days.
    #[arg(long, env = "WATTEST_CERTIFICATE_VALIDITY_DAYS", default_value_t = 3650, value_parser = clap::value_parser!(u32).range(1..=36500))]
    certificate_validity_days: u32,
    /// Directory of PEM files (`*.pem`, `*.crt`) with the CA certificates (roots and
    /// intermediates) that TPM EK certificates must chain to. Without it, TPM enrollment is
    /// refused (`ek_cert_untrusted`); software enrollment is unaffected.
    #[arg(long, env = "WATTEST_EK_CA_DIR")]
    ek_ca_dir: Option<PathBuf>,
    /// Seconds after which an unanswered request gets 503 `timeout`.
    #[arg(long, env = "WATTEST_REQUEST_TIMEOUT_SECS", default_value_t = api::Limits::default().request_timeout_secs, value_parser = clap::value_parser!(u64).range(1..=3600))]
    request_timeout_secs: u64,
    /// Connections kept open at once; beyond it new connections wait (in the listen backlog)
    /// until one closes. Keep it under the open-file limit (`ulimit -n`) minus what the
    /// database needs.
    #[arg(long, env = "WATTEST_MAX_CONNECTIONS", default_value_t = api::MAX_CONNECTIONS, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    max_connections: u32,
    /// Sustained requests per second allowed from one client IP (0: no limit); 429 beyond.
    #[arg(long, env = "WATTEST_RATE_LIMIT_PER_IP", default_value_t = api::Limits::default().per_ip_rps, value_parser = parse_rate)]
    rate_limit_per_ip: f64,
    /// Requests one client IP may burst above its sustained rate.
    #[arg(long, env = "WATTEST_RATE_BURST_PER_IP", default_value_t = api::Limits::default().per_ip_burst)]
    rate_burst_per_ip: u32,
    /// Sustained requests per second allowed for one bearer token (0: no limit); 429 beyond.
    #[arg(long, env = "WATTEST_RATE_LIMIT_PER_TOKEN", default_value_t = api::Limits::default().per_token_rps, value_parser = parse_rate)]
    rate_limit_per_token: f64,
    /// Requests one token may burst above its sustained rate.
    #[arg(long, env = "WATTEST_RATE_BURST_PER_TOKEN", default_value_t = api::Limits::default().per_token_burst)]
    rate_burst_per_token: u32,
    /// Origin line of the transparency log's checkpoints (a schema-less URL naming the log; also
    /// the checkpoint key's name). Default: the public URL without its scheme, plus
    /// `/wattest-log`. Changing it changes the log's verifier key.
    #[arg(long, env = "WATTEST_LOG_ORIGIN")]
    log_origin: Option<String>,
    /// How many seconds a telemetry window's end may lie after this oracle's clock before it is
    /// refused (`future_window`), 0–3600. Default 60: NTP keeps hosts within milliseconds; a
    /// minute also covers a host that just booted.
    #[arg(long, env = "WATTEST_MAX_CLOCK_SKEW_SECS", default_value_t = wattest_oracle::verification::MAX_FUTURE_SKEW_SECONDS, value_parser = clap::value_parser!(i64).range(0..=3600))]
    max_clock_skew_secs: i64,
    /// How many hours before its node's enrollment a telemetry window may start (beyond the
    /// clock skew bound), 0–87600; earlier ones are refused (`invalid_period`). Default 0: a
    /// node measures only once enrolled, so it cannot claim past hours (and their carbon
    /// intensities). Raise it only to accept measurements nodes took before they enrolled.
    #[arg(long, env = "WATTEST_MAX_BACKDATE_HOURS", default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=87_600))]
    max_backdate_hours: u32,
    /// Carbon intensity config (TOML): live providers (Electricity Maps, UK NESO, WattTime, CSV
    /// series), the chain per grid zone (e.g. electricitymaps → cache → static), the factor type
    /// (direct, default, or lifecycle) and the request timeout; see docs/methodology.md.
    /// Without it every zone-hour gets the static Ember table.
    #[arg(long, env = "WATTEST_CARBON_CONFIG")]
    carbon_config: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum TokenCommand {
    /// Create a token and print it on stdout (it is shown once; only its SHA-256 is stored).
    Create {
        /// What the token may do.
        #[arg(long, value_enum)]
        role: Role,
        /// How long the token is accepted, from now: a duration such as `90d`, `12h` or
        /// `1h 30m` (units s, m, h, d, w; M = 30.44 d, y = 365.25 d); from then on requests
        /// with it get 401 `invalid_token`. 1 s to 100 y. Default: the token never expires.
        #[arg(long, value_name = "DURATION", value_parser = parse_lifetime)]
        expires_in: Option<std::time::Duration>,
        /// How many nodes may be enrolled with the token (a `node` token; 1 for a token per
        /// machine); beyond it `POST /v1/nodes` gets 403 `enrollment_limit`. 1 to 1 000 000.
        /// Default: any number.
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
        max_enrollments: Option<u32>,
        #[command(flatten)]
        data: DataArgs,
    },
    /// List tokens: id, role, created, last used, revoked, expires. Never the token (only its
    /// hash is stored) and never the hash.
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        data: DataArgs,
    },
    /// Revoke a token by its id (from `token list`); requests with it get 401 `invalid_token`.
    Revoke {
        /// Token id.
        id: String,
        #[command(flatten)]
        data: DataArgs,
    },
}

/// Longest `token create --expires-in`: 100 years (365.25-day years, as humantime counts `y`).
const MAX_TOKEN_LIFETIME: std::time::Duration = std::time::Duration::from_secs(3_155_760_000);

/// A token lifetime for `token create --expires-in`: a humantime duration, 1 s to
/// [`MAX_TOKEN_LIFETIME`].
fn parse_lifetime(text: &str) -> Result<std::time::Duration, String> {
    let lifetime = humantime::parse_duration(text)
        .map_err(|err| format!("{text:?} is not a duration such as 90d, 12h or 1h 30m: {err}"))?;
    if lifetime < std::time::Duration::from_secs(1) || lifetime > MAX_TOKEN_LIFETIME {
        return Err(format!("{text:?} is not between 1s and 100y"));
    }
    Ok(lifetime)
}

fn parse_rate(text: &str) -> Result<f64, String> {
    text.parse::<f64>()
        .ok()
        .filter(|v| v.is_finite() && (0.0..=1_000_000.0).contains(v))
        .ok_or_else(|| format!("{text:?} is not a rate between 0 and 1000000 requests per second"))
}

fn parse_eur(text: &str) -> Result<Eur, String> {
    Eur::parse(text).filter(|e| e.micros() >= 0).ok_or_else(|| {
        format!("{text:?} is not a non-negative decimal amount (at most 6 decimals)")
    })
}

fn parse_share(text: &str) -> Result<f64, String> {
    text.parse::<f64>()
        .ok()
        .filter(|v| (0.0..=100.0).contains(v))
        .ok_or_else(|| format!("{text:?} is not a percentage between 0 and 100"))
}

/// Whether text logs on stderr get ANSI colours: stderr is a terminal and `NO_COLOR` is unset
/// or empty (<https://no-color.org>).
fn colour_logs() -> bool {
    std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

fn init_tracing(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| "info,sqlx=warn,sea_orm=warn,tower_http=info".into());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colours only for a person reading a terminal: a log file, journald or a pipe gets
        // plain text (and NO_COLOR, https://no-color.org, turns them off anywhere).
        .with_ansi(colour_logs());
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// `argv` with `serve` appended when it names no subcommand but asks for `--print-config`
/// (`wattest-oracle --config f.toml --print-config` prints the serve settings). Any other
/// command line is returned as it is: without a subcommand it stays a usage error, and help,
/// version and parse errors are reported by the full parse against the unchanged `command`.
fn with_default_subcommand(
    command: &clap::Command,
    mut argv: Vec<std::ffi::OsString>,
) -> Vec<std::ffi::OsString> {
    let lenient = command
        .clone()
        .subcommand_required(false)
        .arg_required_else_help(false);
    if let Ok(m) = lenient.try_get_matches_from(&argv)
        && m.subcommand().is_none()
        && m.get_flag("print_config")
    {
        argv.push("serve".into());
    }
    argv
}

fn prepare_data_dir(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating data dir {}", dir.display()))?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("chmod 700 {}", dir.display()))
}

/// Runs the command line; a failure is printed as one line, `wattest-oracle: error: …` with its
/// causes after colons (never a backtrace), and exits 1; a usage error (bad flag or value,
/// also one found after parsing, see [`usage_error`]) is printed by clap with the usage and
/// exits 2 (docs/operations.md, "Oracle exit status").
fn main() -> std::process::ExitCode {
    use std::process::ExitCode;
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("wattest-oracle: error: cannot start the runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(run());
    drop(runtime);
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => match err.downcast_ref::<clap::Error>() {
            Some(usage) => {
                // Help and version never get here (they are printed while parsing).
                let _ = usage.print();
                ExitCode::from(2)
            }
            None => {
                eprintln!("wattest-oracle: error: {err:#}");
                ExitCode::FAILURE
            }
        },
    }
}

/// A usage error of the subcommand at `path` (`["export"]`, `["node", "set"]`): a value that
/// parses but is refused (`--from` not before `--to`, an empty `--owner`). [`main`] prints it
/// as clap prints its own, with that subcommand's usage, and exits 2.
fn usage_error(path: &[&str], message: impl std::fmt::Display) -> anyhow::Error {
    let mut command = Cli::command();
    command.build();
    for name in path {
        if let Some(sub) = command.find_subcommand(name).cloned() {
            command = sub;
        }
    }
    anyhow::Error::new(command.error(clap::error::ErrorKind::ValueValidation, message))
}

async fn run() -> Result<()> {
    let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let command = Cli::command();
    let argv = with_default_subcommand(&command, argv);
    // The config file named by --config / WATTEST_CONFIG fills in what flags and env left unset.
    // A required flag may come from the file: the command line is then read without it (the
    // parse after the merge requires it again). Help, version and every other error are
    // answered here, by the command as defined.
    let probe = match command.clone().try_get_matches_from(&argv) {
        Ok(matches) => matches,
        Err(err) if err.kind() == clap::error::ErrorKind::MissingRequiredArgument => {
            wattest_oracle::config::without_required(&command).get_matches_from(&argv)
        }
        Err(err) => err.exit(),
    };
    let argv = match probe.get_one::<PathBuf>("config") {
        Some(file) => wattest_oracle::config::merge_file(&command, &argv, file)?,
        None => argv,
    };
    let matches = command.clone().get_matches_from(&argv);
    let cli = Cli::from_arg_matches(&matches)?;
    if cli.print_config {
        print!("{}", wattest_oracle::config::effective(&command, &matches));
        return Ok(());
    }
    init_tracing(cli.log_json || cli.log_format == "json");
    // Once the log format is known: the file may hold database_url with a password.
    if let Some(warning) = probe
        .get_one::<PathBuf>("config")
        .and_then(|file| wattest_oracle::config::exposure_warning(file))
    {
        tracing::warn!("{warning}");
    }
    match cli.command {
        Command::Serve(args) => serve(args).await,
        Command::Token {
            command:
                TokenCommand::Create {
                    role,
                    expires_in,
                    max_enrollments,
                    data,
                },
        } => {
            prepare_data_dir(&data.data_dir)?;
            let storage =
                Storage::connect(&storage::database_url(&data.data_dir, data.database_url))
                    .await
                    .context("opening the database")?;
            let expires_at = expires_in
                .map(|lifetime| {
                    chrono::Duration::from_std(lifetime)
                        .ok()
                        .and_then(|lifetime| chrono::Utc::now().checked_add_signed(lifetime))
                        .context("the token's expiry is out of range")
                })
                .transpose()?;
            println!(
                "{}",
                auth::create_token_with(&storage, role, expires_at, max_enrollments.map(i64::from))
                    .await?
            );
            if let Some(at) = expires_at {
                eprintln!("The token expires at {}.", utc_text(at));
            }
            Ok(())
        }
        Command::Export(args) => export(args).await,
        Command::Node {
            command:
                NodeCommand::Set {
                    node_id,
                    owner,
                    embodied_kg,
                    lifespan_years,
                    data,
                },
        } => {
            use wattest_oracle::export::{self, Embodied, NodeExportSettings};
            if let Some(o) = &owner {
                export::check_owner(o).map_err(|why| usage_error(&["node", "set"], why))?;
            }
            let settings = NodeExportSettings {
                owner,
                embodied: embodied_kg.map(|total_kg| Embodied {
                    total_kg,
                    lifespan_hours: i64::from(
                        lifespan_years.unwrap_or(export::DEFAULT_LIFESPAN_YEARS),
                    ) * export::HOURS_PER_YEAR,
                }),
            };
            let storage = open_storage(&data).await?;
            if !export::set_node(&storage, &node_id, &settings).await? {
                anyhow::bail!("no node {node_id:?}");
            }
            eprintln!("Node {node_id} updated.");
            Ok(())
        }
        Command::Token {
            command: TokenCommand::List { json, data },
        } => {
            let storage = open_storage(&data).await?;
            let rows: Vec<serde_json::Value> = storage
                .list_tokens()
                .await?
                .into_iter()
                .map(|t| {
                    serde_json::json!({
                        "id": t.id,
                        "role": t.role,
                        "created_at": utc_text(t.created_at),
                        "last_used_at": t.last_used_at.map(utc_text),
                        "revoked_at": t.revoked_at.map(utc_text),
                        "expires_at": t.expires_at.map(utc_text),
                        "enrollments": t.enrollments,
                        "max_enrollments": t.max_enrollments,
                    })
                })
                .collect();
            if json {
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else {
                println!("ID\tROLE\tCREATED\tLAST_USED\tREVOKED\tEXPIRES\tENROLLMENTS");
                for r in &rows {
                    let field = |k: &str| r[k].as_str().unwrap_or("-").to_owned();
                    // Nodes enrolled with the token, and its cap: `2/5`, or `2` without one.
                    let enrollments = match r["max_enrollments"].as_i64() {
                        Some(max) => format!("{}/{max}", r["enrollments"]),
                        None => r["enrollments"].to_string(),
                    };
                    println!(
                        "{}\t{}\t{}\t{}\t{}\t{}\t{enrollments}",
                        field("id"),
                        field("role"),
                        field("created_at"),
                        field("last_used_at"),
                        field("revoked_at"),
                        field("expires_at")
                    );
                }
            }
            Ok(())
        }
        Command::Token {
            command: TokenCommand::Revoke { id, data },
        } => {
            let storage = open_storage(&data).await?;
            if !storage.revoke_token(&id, chrono::Utc::now()).await? {
                anyhow::bail!("no unrevoked token with id {id}; see `wattest-oracle token list`");
            }
            println!("revoked {id}");
            Ok(())
        }
        Command::Keys {
            command:
                KeysCommand::Rotate {
                    activate_after_hours,
                    alg,
                    data_dir,
                },
        } => {
            prepare_data_dir(&data_dir)?;
            let info = wattest_oracle::keys::Keyring::rotate(
                &data_dir,
                alg,
                chrono::Duration::hours(activate_after_hours),
                chrono::Utc::now(),
            )?;
            println!(
                "{}\tpublished now, signs from {}",
                info.kid,
                utc_text(info.activate_at)
            );
            Ok(())
        }
        Command::Keys {
            command: KeysCommand::List { json, data_dir },
        } => {
            // Listing creates nothing: a wrong --data-dir must not mint a new oracle identity.
            use wattest_oracle::keys::{KEY_FILE, KEYRING_FILE};
            if !data_dir.join(KEYRING_FILE).exists() && !data_dir.join(KEY_FILE).exists() {
                anyhow::bail!(
                    "no oracle keys in {} (neither {KEYRING_FILE} nor {KEY_FILE}): is --data-dir right? `serve` or `keys rotate` creates them",
                    data_dir.display()
                );
            }
            let ring = wattest_oracle::keys::Keyring::load_or_create(&data_dir)?;
            let keys = ring.list(chrono::Utc::now());
            if json {
                println!("{}", serde_json::to_string_pretty(&keys)?);
            } else {
                println!("KID\tALG\tSTATE\tCREATED\tACTIVATES");
                for k in keys {
                    println!(
                        "{}\t{}\t{}\t{}\t{}",
                        k.kid,
                        k.alg,
                        k.state,
                        utc_text(k.created_at),
                        utc_text(k.activate_at)
                    );
                }
            }
            Ok(())
        }
    }
}

/// A time as the offline commands print it (text and `--json` alike): RFC 3339 in UTC with `Z`,
/// fractional seconds only when there are any (as chrono's serde writes `keys list --json`).
fn utc_text(t: chrono::DateTime<chrono::Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
}

/// The database of an offline command (`token list`, `token revoke`, `node set`, `export`):
/// these create nothing, so without `DATABASE_URL` the data dir must hold `wattest.db`.
///
/// # Errors
/// No `wattest.db` in the data dir (the message names the path: a wrong `--data-dir` would
/// otherwise read an empty database), the data dir's mode cannot be set, the database cannot
/// be opened.
async fn open_storage(data: &DataArgs) -> Result<Storage> {
    let env_url = data.database_url.as_deref().filter(|u| !u.is_empty());
    let db = data.data_dir.join(storage::SQLITE_FILE);
    if env_url.is_none() && !db.is_file() {
        anyhow::bail!(
            "no oracle database {} (DATABASE_URL is not set): is --data-dir right? `serve` or `token create` creates it",
            db.display()
        );
    }
    prepare_data_dir(&data.data_dir)?;
    Storage::connect(&storage::database_url(
        &data.data_dir,
        data.database_url.clone(),
    ))
    .await
    .context("opening the database")
}

async fn export(args: ExportArgs) -> Result<()> {
    use std::io::Write as _;
    use wattest_oracle::export::{self, ExportFilter, Granularity, Profile};
    let profile = Profile::parse(&args.profile).context("unknown profile")?;
    let status = args.status;
    let granularity = args.granularity.unwrap_or(Granularity::Certificate);
    let filter = ExportFilter {
        from: args.from,
        to: args.to,
        node: args.node,
        owner: args.owner,
        job: args.job,
        model: args.model,
        // The zone as enrollment reads it (`fr` is `FR`), by the bundled table; a zone the
        // table does not know is matched as given.
        zone: args.zone.map(|zone| {
            wattest_oracle::carbon::StaticTable::embedded()
                .ok()
                .and_then(|table| table.zone(&zone).ok())
                .map_or(zone, |z| z.name)
        }),
        status,
        granularity,
    };
    filter
        .check(profile)
        .map_err(|why| usage_error(&["export"], why))?;
    let storage = open_storage(&args.data).await?;
    let partial = args.output.as_ref().map(|p| {
        let mut name = p.as_os_str().to_owned();
        name.push(".partial");
        PathBuf::from(name)
    });
    let mut out: Box<dyn std::io::Write> = match &partial {
        Some(p) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(p).with_context(|| format!("creating {}", p.display()))?,
        )),
        None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
    };
    let mut rx = export::spawn(storage, profile, filter);
    while let Some(chunk) = rx.recv().await {
        let bytes = chunk.context("export failed")?;
        out.write_all(&bytes).context("writing the export")?;
    }
    out.flush().context("writing the export")?;
    drop(out);
    if let (Some(partial), Some(output)) = (partial, args.output) {
        std::fs::rename(&partial, &output)
            .with_context(|| format!("renaming {} to {}", partial.display(), output.display()))?;
    }
    Ok(())
}

async fn serve(args: ServeArgs) -> Result<()> {
    let limits = api::Limits {
        request_timeout_secs: args.request_timeout_secs,
        per_ip_rps: args.rate_limit_per_ip,
        per_ip_burst: args.rate_burst_per_ip,
        per_token_rps: args.rate_limit_per_token,
        per_token_burst: args.rate_burst_per_token,
    };
    // The issuer is signed into every certificate and names the log (its origin): an address
    // that names no host would give every certificate and checkpoint a meaningless identity,
    // and changing it later forks the log's identity for auditors. Checked, as the settings
    // below, before anything is created in the data dir.
    if args.public_url.is_none() && args.listen.ip().is_unspecified() {
        anyhow::bail!(
            "--public-url (WATTEST_PUBLIC_URL) is required when listening on {}: it is the issuer of every certificate and the transparency log's origin, e.g. --public-url https://oracle.example.org",
            args.listen
        );
    }
    let mut kinds: Vec<_> = args.reward_rate.iter().map(|(kind, _)| *kind).collect();
    kinds.sort_unstable();
    if let Some(twice) = kinds.windows(2).find(|w| w[0] == w[1]) {
        return Err(usage_error(
            &["serve"],
            format!(
                "--reward-rate gives {} more than once; give each kind one price",
                twice[0].as_str()
            ),
        ));
    }
    prepare_data_dir(&args.data.data_dir)?;
    let url = storage::database_url(&args.data.data_dir, args.data.database_url);
    let issuer = args
        .public_url
        .unwrap_or_else(|| format!("http://{}", args.listen));
    let settings = Settings {
        log_origin: args
            .log_origin
            .unwrap_or_else(|| wattest_oracle::ledger::default_origin(&issuer)),
        issuer,
        certificate_validity: chrono::Duration::days(i64::from(args.certificate_validity_days)),
        credits: CreditPolicy {
            price_per_tonne: args.price_eur_per_tonne,
            node_owner_share_pct: args.node_owner_share_pct,
            source_rates: args.reward_rate.iter().copied().collect(),
        },
        max_clock_skew_secs: args.max_clock_skew_secs,
        max_backdate_secs: i64::from(args.max_backdate_hours) * 3600,
        ek_roots: match &args.ek_ca_dir {
            Some(dir) => load_ek_roots(dir)?,
            None => Vec::new(),
        },
    };
    let mut state = AppState::open(&args.data.data_dir, &url, settings).await?;
    if let Some(path) = &args.carbon_config {
        state.carbon = std::sync::Arc::new(
            wattest_oracle::carbon::Carbon::from_config_file(path).map_err(anyhow::Error::msg)?,
        );
        tracing::info!(config = %path.display(), "Carbon provider chain loaded.");
    }
    state.storage.spawn_wal_checkpointer();
    wattest_oracle::api::telemetry::spawn_held_sweeper(
        state.clone(),
        wattest_oracle::api::telemetry::HELD_SWEEP_INTERVAL,
    );
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    let local = listener.local_addr()?;
    tracing::info!(listen = %local, database = if url.starts_with("sqlite:") { "sqlite" } else { "postgres" }, kid = %state.keys.get().active(chrono::Utc::now()).kid(), log = %state.ledger.origin(), "Oracle listening.");
    api::serve(
        listener,
        api::router_with(state, limits),
        api::HEADER_READ_TIMEOUT,
        args.max_connections,
        shutdown(),
    )
    .await;
    tracing::info!("Oracle stopped.");
    Ok(())
}

/// Every certificate in the `*.pem` / `*.crt` files of `dir` (files holding only keys are
/// skipped). An empty result is an error: the operator asked for TPM enrollment.
fn load_ek_roots(dir: &Path) -> Result<Vec<openssl::x509::X509>> {
    let mut roots = Vec::new();
    let entries =
        std::fs::read_dir(dir).with_context(|| format!("reading EK CA dir {}", dir.display()))?;
    let mut paths = entries
        .map(|e| e.map(|e| e.path()))
        .collect::<std::io::Result<Vec<_>>>()
        .with_context(|| format!("reading EK CA dir {}", dir.display()))?;
    paths.sort();
    for path in paths {
        let pem_like = path.extension().is_some_and(|e| e == "pem" || e == "crt");
        if !pem_like || !path.is_file() {
            continue;
        }
        let pem = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        let certs = openssl::x509::X509::stack_from_pem(&pem)
            .with_context(|| format!("{} is not PEM", path.display()))?;
        roots.extend(certs);
    }
    if roots.is_empty() {
        anyhow::bail!(
            "no certificate found in {} (*.pem, *.crt): TPM enrollment would refuse every EK",
            dir.display()
        );
    }
    tracing::info!(dir = %dir.display(), certificates = roots.len(), "EK CA certificates loaded.");
    Ok(roots)
}

async fn shutdown() {
    let terminate = async {
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            s.recv().await;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        () = terminate => {},
    }
}
