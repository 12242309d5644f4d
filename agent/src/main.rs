//! `wattest-agent`: measures the energy of a job or an edge node, signs each window and sends it
//! to the Wattest oracle.

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;
use wattest_agent::config::{self, MeasureSettings, SolarSettings};
use wattest_agent::report::error_chain;
use wattest_agent::runner::{Chain, Finished, Measurement, summary_line};
use wattest_agent::sampler::SamplerConfig;
use wattest_agent::signer::NodeSigner;
use wattest_agent::spool::Spool;
use wattest_agent::state::{SignerKind, StateDir};
use wattest_agent::uploader::Uploader;
use wattest_agent::{enroll, runner, sources};
use wattest_shared::window::Attribution;

/// Wattest agent: measures the energy of a job (`run`) or of an edge node (`watch`), signs each
/// window (JWS PS256) and sends it to a Wattest oracle, which returns an energy certificate.
#[derive(Debug, Parser)]
#[command(name = "wattest-agent", version)]
struct Cli {
    /// Log as JSON lines instead of text. WATTEST_LOG_JSON takes 1/0, true/false, yes/no, on/off
    /// (y/n, t/f; any case).
    #[arg(long, global = true, env = "WATTEST_LOG_JSON", action = clap::ArgAction::SetTrue, value_parser = clap::builder::BoolishValueParser::new())]
    log_json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create the node key and register this node with an oracle.
    ///
    /// Exit status: 0 enrolled; 2 bad arguments, or an --oracle refused before anything is sent
    /// (not a URL, or plain http:// to another host without --allow-http); 70 when the
    /// enrollment fails.
    Enroll(EnrollArgs),
    /// Run a command and measure it until it exits; exits with the command's status.
    ///
    /// On stderr it prints this job's certificate id (`wattest: certificate <id>`), a one-line
    /// summary (energy, emissions, intensity used and its source) and the URL to fetch the
    /// certificate from (`wattest: fetch it at <oracle>/v1/certificates/<id>`); stdout is the
    /// command's alone.
    ///
    /// Exit status: the command's (128 + signal number when a signal killed it); as bash and
    /// dash give it, 127 when CMD is not found or its interpreter (its `#!` line's) is missing,
    /// 126 when it is found but cannot be executed (no execute permission, a directory, not an
    /// executable format); 70 when the agent fails (settings, state dir, metrics listener: all
    /// checked before CMD starts, which then does not run).
    #[command(trailing_var_arg = true)]
    Run(RunArgs),
    /// Continuous node mode for edge nodes: windows forever, a certificate every period.
    Watch(WatchArgs),
    /// Show what this machine can measure (source, kind, method, location, uncertainty).
    Sources(SourcesArgs),
    /// Send the windows still waiting in the spool.
    ///
    /// Exit status: 0 when every window was acknowledged; 70 when windows remain in the spool
    /// (the oracle did not take them before --timeout, or a local error stopped the upload) or
    /// when windows were set aside in spool/rejected/ (refused by the oracle for good, or not
    /// text): the spool is then empty, but those windows will never reach the oracle, and each
    /// has its reason in <name>.reason.json beside it.
    Flush(FlushArgs),
}

#[derive(Debug, Args)]
struct StateArgs {
    /// State directory: node identity, key (mode 0600), window chain and spool. Default:
    /// /var/lib/wattest when run as root (effective uid 0); otherwise
    /// $XDG_STATE_HOME/wattest when XDG_STATE_HOME is set to an absolute path, else
    /// $HOME/.local/state/wattest (/var/lib/wattest when HOME is unset or empty).
    #[arg(long, env = "WATTEST_STATE_DIR", default_value_os_t = default_state_dir())]
    state_dir: PathBuf,
}

#[derive(Debug, Args)]
struct EnrollArgs {
    /// Oracle base URL, e.g. http://127.0.0.1:8080.
    #[arg(long, env = "WATTEST_ORACLE")]
    oracle: String,
    /// Enrollment token (role node) from `wattest-oracle token create --role node`.
    #[arg(long, env = "WATTEST_TOKEN", hide_env_values = true)]
    token: String,
    /// Name of this node.
    #[arg(long)]
    name: String,
    /// Grid zone the node draws power from: ISO 3166-1 alpha-2 (BE), an Electricity Maps zone
    /// (US-CAL-CISO) or a region (EU).
    #[arg(long)]
    zone: String,
    /// Where the signing key lives.
    #[arg(long, value_enum, default_value_t = SignerKind::Software)]
    signer: SignerKind,
    /// TPM TCTI for `--signer tpm` (device:/dev/tpmrm0, swtpm:host=127.0.0.1,port=2321, mssim:…).
    #[arg(long, env = "WATTEST_TCTI")]
    tcti: Option<String>,
    /// Replace an existing enrollment in the state dir.
    #[arg(long)]
    force: bool,
    /// Send the enrollment token over plain http:// to a host other than this machine. Without
    /// it, an http:// --oracle whose host is not 127.0.0.0/8, ::1 or localhost is refused (exit
    /// 2): the token would travel in cleartext for anyone on the path to read and reuse. `run`,
    /// `watch` and `flush` need no such flag: they send only signed windows, which carry no
    /// token.
    #[arg(long)]
    allow_http: bool,
    #[command(flatten)]
    state: StateArgs,
}

#[derive(Debug, Args)]
struct MeasureArgs {
    /// TOML file with the measurement settings below (flags and environment override it).
    #[arg(long, env = "WATTEST_CONFIG")]
    config: Option<PathBuf>,
    /// Sampling period, seconds (0.05 to 60) [default: 1].
    #[arg(long, env = "WATTEST_INTERVAL", value_parser = interval_arg)]
    interval: Option<f64>,
    /// Root of sysfs for RAPL and hwmon readers (synthetic trees in tests) [default: /sys].
    #[arg(long, env = "WATTEST_SYSFS_ROOT")]
    sysfs_root: Option<PathBuf>,
    /// hwmon channels to read, as NAME:LABEL (repeatable; default: every power/energy channel).
    #[arg(
        long = "hwmon-channel",
        env = "WATTEST_HWMON_CHANNELS",
        value_delimiter = ','
    )]
    hwmon_channels: Vec<String>,
    /// CPU TDP for the CPU-time × TDP estimate, W, > 0 (default: looked up by CPU model).
    #[arg(long, env = "WATTEST_TDP_WATTS", value_parser = tdp_watts_arg)]
    tdp_watts: Option<f64>,
    /// Declared constant solar power, W, ≥ 0 (reported as solar_declared_constant).
    #[arg(long, value_parser = solar_watts_arg, conflicts_with_all = ["solar_file", "solar_command", "solar_hwmon"])]
    solar_watts: Option<f64>,
    /// File holding the current solar power in W.
    #[arg(long, conflicts_with_all = ["solar_command", "solar_hwmon"])]
    solar_file: Option<PathBuf>,
    /// Command printing the current solar power in W.
    #[arg(long, conflicts_with = "solar_hwmon")]
    solar_command: Option<String>,
    /// hwmon channel (NAME:LABEL) measuring the solar input.
    #[arg(long)]
    solar_hwmon: Option<String>,
    /// Serve Prometheus metrics at http://ADDR/metrics while measuring (`run`, `watch`), e.g.
    /// 127.0.0.1:9464 [default: no listener].
    #[arg(long, env = "WATTEST_METRICS_LISTEN", value_name = "ADDR")]
    metrics_listen: Option<std::net::SocketAddr>,
    /// Print the effective measurement settings (flags and environment over the config file over
    /// the defaults) as a config file, then exit.
    #[arg(long)]
    print_config: bool,
}

#[derive(Debug, Args)]
struct RunArgs {
    /// Oracle base URL (default: the one enrolled with).
    #[arg(long, env = "WATTEST_ORACLE")]
    oracle: Option<String>,
    /// Job id written into every window and the certificate (default: a new UUID); 1–128
    /// characters without control characters.
    #[arg(long, value_parser = label)]
    job_id: Option<String>,
    /// Model id written into every window and the certificate (`wattest.model_id`), e.g. the
    /// model being trained; 1–128 characters without control characters.
    #[arg(long, env = "WATTEST_MODEL_ID", value_parser = label)]
    model_id: Option<String>,
    /// Window length, seconds: a signed window is sent this often.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3600))]
    window: u64,
    /// machine: the whole host's energy while the job runs (as CodeCarbon); process: host CPU
    /// energy × the job's process-tree share of CPU time (as Kepler and Scaphandre).
    #[arg(long, value_enum, default_value_t = AttributionArg::Machine)]
    attribution: AttributionArg,
    /// How long to keep retrying the upload after the command exits, seconds (at most a week).
    #[arg(long, default_value_t = 120, value_parser = clap::value_parser!(u64).range(0..=604_800))]
    upload_timeout: u64,
    /// Disk budget of the spool (signed windows the oracle has not acknowledged yet), MiB. A
    /// warning is logged with every window above 80 %; at the budget the agent stops measuring
    /// (nothing signed is ever dropped).
    #[arg(long, env = "WATTEST_SPOOL_BUDGET_MB", default_value_t = 256, value_parser = clap::value_parser!(u64).range(1..=1_048_576))]
    spool_budget_mb: u64,
    #[command(flatten)]
    measure: MeasureArgs,
    #[command(flatten)]
    state: StateArgs,
    /// The command to run, after `--` (not needed with --print-config).
    #[arg(
        required_unless_present = "print_config",
        num_args = 1..,
        value_name = "CMD"
    )]
    command: Vec<String>,
}

#[derive(Debug, Args)]
struct WatchArgs {
    /// Oracle base URL (default: the one enrolled with).
    #[arg(long, env = "WATTEST_ORACLE")]
    oracle: Option<String>,
    /// Window length, seconds.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=3600))]
    window: u64,
    /// A certificate is requested every this many seconds (the period's last window is final).
    #[arg(long, default_value_t = 3600, value_parser = clap::value_parser!(u64).range(1..=86400))]
    certify_every: u64,
    /// Disk budget of the spool (signed windows the oracle has not acknowledged yet), MiB. A
    /// warning is logged with every window above 80 %; at the budget the agent stops measuring
    /// (nothing signed is ever dropped).
    #[arg(long, env = "WATTEST_SPOOL_BUDGET_MB", default_value_t = 256, value_parser = clap::value_parser!(u64).range(1..=1_048_576))]
    spool_budget_mb: u64,
    #[command(flatten)]
    measure: MeasureArgs,
    #[command(flatten)]
    state: StateArgs,
}

#[derive(Debug, Args)]
struct SourcesArgs {
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    measure: MeasureArgs,
}

#[derive(Debug, Args)]
struct FlushArgs {
    /// Oracle base URL (default: the one enrolled with).
    #[arg(long, env = "WATTEST_ORACLE")]
    oracle: Option<String>,
    /// Give up after this many seconds (at most a week).
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(0..=604_800))]
    timeout: u64,
    #[command(flatten)]
    state: StateArgs,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum AttributionArg {
    Machine,
    Process,
}

impl From<AttributionArg> for Attribution {
    fn from(a: AttributionArg) -> Self {
        match a {
            AttributionArg::Machine => Attribution::Machine,
            AttributionArg::Process => Attribution::Process,
        }
    }
}

/// The default `--state-dir` for this process: [`state_dir_for`] with its effective uid and
/// its `XDG_STATE_HOME` and `HOME`.
fn default_state_dir() -> PathBuf {
    state_dir_for(
        effective_uid(),
        std::env::var_os("XDG_STATE_HOME"),
        std::env::var_os("HOME"),
    )
}

/// The process's effective uid (`geteuid(2)`, which has no safe std wrapper).
#[allow(unsafe_code)]
fn effective_uid() -> u32 {
    // SAFETY: geteuid(2) takes no arguments, cannot fail and touches no memory of ours.
    unsafe { libc::geteuid() }
}

/// The default state dir of a process with effective uid `euid`: `/var/lib/wattest` for root
/// (uid 0, whatever its environment says: `sudo` keeps the caller's `HOME`); otherwise
/// `$XDG_STATE_HOME/wattest` when `xdg_state_home` is an absolute path (the XDG Base Directory
/// specification ignores relative ones), else `$HOME/.local/state/wattest`, else (no `HOME`)
/// `/var/lib/wattest`.
fn state_dir_for(
    euid: u32,
    xdg_state_home: Option<std::ffi::OsString>,
    home: Option<std::ffi::OsString>,
) -> PathBuf {
    const SYSTEM: &str = "/var/lib/wattest";
    if euid == 0 {
        return PathBuf::from(SYSTEM);
    }
    if let Some(dir) = xdg_state_home
        .map(PathBuf::from)
        .filter(|d| d.is_absolute())
    {
        return dir.join("wattest");
    }
    match home {
        Some(home) if !home.is_empty() => PathBuf::from(home).join(".local/state/wattest"),
        _ => PathBuf::from(SYSTEM),
    }
}

impl MeasureArgs {
    /// What `run` and `watch` do before measuring: [`MeasureArgs::resolve`], the metrics
    /// endpoint when one is asked for, and source discovery (its warnings logged).
    ///
    /// # Errors
    /// Bad settings, or the metrics address cannot be bound.
    async fn start(&self) -> Result<(config::Resolved, wattest_agent::sources::Discovery)> {
        let settings = self.resolve()?;
        if let Some(addr) = settings.metrics_listen {
            wattest_agent::metrics::spawn(addr)
                .await
                .with_context(|| format!("serving metrics on {addr}"))?;
        }
        let discovery = runner::sources(&settings.discovery);
        Ok((settings, discovery))
    }

    /// Flags and environment over the config file over the defaults. The flags' and
    /// environment's values were checked as they were parsed (a bad one is a usage error, exit
    /// 2), so a value refused here is the config file's.
    fn resolve(&self) -> Result<config::Resolved> {
        let file = match &self.config {
            Some(path) => config::load(path)?,
            None => MeasureSettings::default(),
        };
        let any_solar = self.solar_watts.is_some()
            || self.solar_file.is_some()
            || self.solar_command.is_some()
            || self.solar_hwmon.is_some();
        let flags = MeasureSettings {
            interval: self.interval,
            sysfs_root: self.sysfs_root.clone(),
            hwmon_channels: self.hwmon_channels.clone(),
            tdp_watts: self.tdp_watts,
            metrics_listen: self.metrics_listen,
            solar: any_solar.then(|| SolarSettings {
                watts: self.solar_watts,
                file: self.solar_file.clone(),
                command: self.solar_command.clone(),
                hwmon: self.solar_hwmon.clone(),
            }),
        };
        flags.resolve(file).map_err(|why| match &self.config {
            Some(path) => anyhow::anyhow!("config file {}: {why}", path.display()),
            None => anyhow::Error::msg(why),
        })
    }
}

/// Whether text logs on stderr get ANSI colours: stderr is a terminal and `NO_COLOR` is unset
/// or empty (<https://no-color.org>).
fn colour_logs() -> bool {
    std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

fn init_tracing(json: bool) {
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colours only for a person reading a terminal: a log file, journald or a pipe gets
        // plain text (and NO_COLOR, https://no-color.org, turns them off anywhere).
        .with_ansi(colour_logs())
        .with_target(false);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(cli.log_json);
    wattest_shared::tls::install_crypto_provider();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("wattest-agent: cannot start the runtime: {err}");
            return ExitCode::from(70);
        }
    };
    let measure = match &cli.command {
        Command::Run(a) => Some(&a.measure),
        Command::Watch(a) => Some(&a.measure),
        Command::Sources(a) => Some(&a.measure),
        Command::Enroll(_) | Command::Flush(_) => None,
    };
    if let Some(m) = measure.filter(|m| m.print_config) {
        return match m.resolve() {
            Ok(settings) => {
                print!("{}", settings.to_toml());
                ExitCode::SUCCESS
            }
            Err(err) => {
                eprintln!("wattest-agent: error: {}", error_chain(&err));
                ExitCode::from(70)
            }
        };
    }
    let result = runtime.block_on(async {
        match cli.command {
            Command::Enroll(args) => enroll_cmd(args).await,
            Command::Run(args) => run_cmd(args).await,
            Command::Watch(args) => watch_cmd(args).await.map(|()| ExitCode::SUCCESS),
            Command::Sources(args) => sources_cmd(&args).map(|()| ExitCode::SUCCESS),
            Command::Flush(args) => flush_cmd(args).await.map(|()| ExitCode::SUCCESS),
        }
    });
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("wattest-agent: error: {}", error_chain(&err));
            ExitCode::from(70)
        }
    }
}

/// Opens and locks the state dir, saying so when that fails.
fn lock_state_dir(path: &std::path::Path) -> Result<StateDir> {
    StateDir::lock(path).context("opening the state dir")
}

async fn enroll_cmd(args: EnrollArgs) -> Result<ExitCode> {
    // Before anything is created or sent: a refused URL changes nothing and contacts no one.
    if let Err(why) = wattest_agent::net::check_enroll_transport(&args.oracle, args.allow_http) {
        eprintln!("wattest-agent: error: {why}");
        return Ok(ExitCode::from(2));
    }
    let dir = lock_state_dir(&args.state.state_dir)?;
    let node = enroll::enroll(
        &dir,
        enroll::EnrollRequest {
            oracle: &args.oracle,
            token: &args.token,
            name: &args.name,
            zone: &args.zone,
            signer: args.signer,
            tcti: args.tcti,
            force: args.force,
        },
    )
    .await?;
    println!("{}", node.node_id);
    eprintln!(
        "wattest: enrolled node {} ({}, zone {}) with oracle {}; state in {}",
        node.node_id,
        node.name,
        node.zone,
        wattest_agent::net::redact_url(&node.oracle),
        dir.path().display()
    );
    Ok(ExitCode::SUCCESS)
}

fn sources_cmd(args: &SourcesArgs) -> Result<()> {
    let discovery = sources::discover(&args.measure.resolve()?.discovery);
    let infos = sources::describe(&discovery);
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "sources": infos,
                "warnings": discovery.warnings,
                "notes": discovery.notes,
            }))?
        );
        return Ok(());
    }
    println!(
        "{:<24} {:<9} {:<26} {:>12}  LOCATION",
        "SOURCE", "KIND", "METHOD", "UNCERTAINTY"
    );
    for s in &infos {
        println!(
            "{:<24} {:<9} {:<26} {:>11.1}%  {}{}",
            s.id,
            s.kind.as_str(),
            s.method.as_str(),
            s.uncertainty_pct,
            s.location,
            if s.shared_device {
                "  (shared device)"
            } else {
                ""
            }
        );
    }
    for n in &discovery.notes {
        println!("note: {n}");
    }
    for w in &discovery.warnings {
        println!("warning: {w}");
    }
    Ok(())
}

async fn flush_cmd(args: FlushArgs) -> Result<()> {
    let dir = lock_state_dir(&args.state.state_dir)?;
    let node = dir.node()?;
    let uploader = Uploader::new(args.oracle.as_deref().unwrap_or(&node.oracle))?;
    let report = uploader
        .drain(
            &Spool::new(dir.spool()),
            Some(tokio::time::Instant::now() + Duration::from_secs(args.timeout)),
        )
        .await;
    eprintln!(
        "wattest: {} windows acknowledged, {} rejected, {} still spooled",
        report.acknowledged,
        report.rejected.len(),
        report.remaining
    );
    for (seq, reason) in &report.rejected {
        eprintln!("wattest: window {seq} was set aside in spool/rejected/: {reason}");
    }
    if let Some(why) = flush_failure(&report, args.timeout) {
        bail!(why);
    }
    Ok(())
}

/// Why `flush` exits non-zero, in words that are true of `report`: windows left in the spool
/// (the upload stopped on a local error, or the oracle did not take them within `timeout` s),
/// or windows set aside in `spool/rejected/` (the spool is empty then, but the oracle will never
/// have them: the operator must look). `None` when every window was acknowledged.
fn flush_failure(report: &wattest_agent::uploader::Drained, timeout: u64) -> Option<String> {
    let mut why = Vec::new();
    if let Some(stopped) = &report.stopped {
        why.push(format!(
            "the spool was not emptied ({} windows still spooled): {stopped}",
            report.remaining
        ));
    } else if report.remaining > 0 {
        why.push(format!(
            "the spool was not emptied: {} windows still spooled after {timeout} s; the next run or `wattest-agent flush` sends them",
            report.remaining
        ));
    }
    match report.rejected.len() {
        0 => {}
        1 => {
            why.push("1 window was set aside in spool/rejected/ (see its .reason.json)".to_owned())
        }
        n => why.push(format!(
            "{n} windows were set aside in spool/rejected/ (see their .reason.json)"
        )),
    }
    (!why.is_empty()).then(|| why.join("; "))
}

/// Sends a signal to the child (SIGTERM forwarding). `kill(2)` has no safe std wrapper.
#[allow(unsafe_code)]
fn signal_child(pid: u32, signal: i32) {
    if let Ok(pid) = i32::try_from(pid) {
        // SAFETY: kill(2) with a pid we spawned and a valid signal number has no memory effects.
        unsafe {
            libc::kill(pid, signal);
        }
    }
}

async fn run_cmd(args: RunArgs) -> Result<ExitCode> {
    let dir = lock_state_dir(&args.state.state_dir)?;
    let node = dir.node()?;
    let signer = NodeSigner::load(&dir, &node)?;
    let uploader = Uploader::new(args.oracle.as_deref().unwrap_or(&node.oracle))?;
    let spool = Spool::new(dir.spool());
    let job_id = args
        .job_id
        .clone()
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());

    // Everything that can fail is done before the command starts: a failure exits 70 with no
    // command left running unmeasured. The chain head is recovered before the drain below
    // removes acknowledged windows from the spool.
    let (settings, discovery) = args.measure.start().await?;
    let chain = Chain::open(
        &dir,
        signer,
        Some(job_id.clone()),
        args.model_id.clone(),
        args.attribution.into(),
    )?
    .with_spool_budget(args.spool_budget_mb * 1024 * 1024);
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut sigint = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;

    // Earlier windows first: the chain must reach the oracle in order.
    let earlier = uploader
        .drain(
            &spool,
            Some(tokio::time::Instant::now() + Duration::from_secs(10)),
        )
        .await;
    if earlier.acknowledged > 0 {
        tracing::info!(
            windows = earlier.acknowledged,
            "Sent windows left from an earlier run."
        );
    }

    let mut child = match tokio::process::Command::new(&args.command[0])
        .args(&args.command[1..])
        // A backstop: an error below kills and reaps it explicitly.
        .kill_on_drop(true)
        .spawn()
    {
        Ok(child) => child,
        Err(err) => {
            let Some(code) = spawn_failure_status(&err) else {
                return Err(
                    anyhow::Error::new(err).context(format!("cannot start {:?}", args.command[0]))
                );
            };
            let why =
                missing_interpreter(&args.command[0], &err).unwrap_or_else(|| err.to_string());
            eprintln!(
                "wattest-agent: error: cannot start {:?}: {why}",
                args.command[0]
            );
            return Ok(ExitCode::from(code));
        }
    };
    let Some(pid) = child.id() else {
        stop_child(&mut child).await;
        bail!("the command exited before it could be measured");
    };
    eprintln!(
        "wattest: measuring job {job_id} (pid {pid}, {} attribution, {} s windows)",
        Attribution::from(args.attribution).as_str(),
        args.window
    );
    let sampler_cfg = SamplerConfig {
        period: Duration::from_secs_f64(settings.interval),
        window: Duration::from_secs(args.window),
        attribution: args.attribution.into(),
        job_pid: Some(pid),
    };
    let measurement = match Measurement::start(
        discovery,
        sampler_cfg,
        chain,
        uploader.clone(),
        spool.clone(),
        None,
    ) {
        Ok(m) => m,
        Err(err) => {
            stop_child(&mut child).await;
            return Err(err);
        }
    };

    let mut measuring = true;
    let status = loop {
        tokio::select! {
            status = child.wait() => match status {
                Ok(status) => break status,
                Err(err) => {
                    stop_child(&mut child).await;
                    return Err(anyhow::Error::new(err).context("waiting for the command"));
                }
            },
            _ = sigterm.recv() => signal_child(pid, libc::SIGTERM),
            // The terminal delivers Ctrl-C to the whole process group; the agent stays alive to
            // close the final window once the command has exited.
            _ = sigint.recv() => tracing::info!("Interrupt received; waiting for the command to exit."),
            // The command is the user's job: it keeps running, unmeasured from here on.
            () = measurement.failed(), if measuring => {
                measuring = false;
                tracing::error!(job_id = %job_id, pid, "MEASUREMENT STOPPED: a window could not be signed and spooled (error above). The command keeps running, but its energy is no longer measured and the job gets no certificate.");
            }
        }
    };

    let Finished { report, error } = measurement
        .finish(Duration::from_secs(args.upload_timeout))
        .await;
    if let Some(err) = &error {
        eprintln!(
            "wattest: error: the measurement failed: {}",
            error_chain(err)
        );
    }
    // This job's certificate (a final window whose acknowledgement was lost is answered, when
    // re-sent, with its original receipt); the drains may also have sent an earlier job's
    // windows left in the spool, and got its certificate.
    let (ours, others): (Vec<_>, Vec<_>) = report
        .certificates
        .iter()
        .partition(|c| c.job_id.as_deref() == Some(job_id.as_str()));
    for c in earlier.certificates.iter().chain(others) {
        // Not "wattest: certificate …": scripts take that line as this run's certificate.
        eprintln!(
            "wattest: earlier job {}: certificate {}: {}",
            c.job_id.as_deref().unwrap_or("-"),
            c.id,
            summary_line(c)
        );
    }
    for c in &ours {
        eprintln!("wattest: certificate {}", c.id);
        eprintln!("wattest: {}", summary_line(c));
        eprintln!(
            "wattest: fetch it at {}/v1/certificates/{}",
            wattest_agent::net::redact_url(uploader.base()),
            c.id
        );
    }
    if ours.is_empty() {
        if error.is_some() {
            eprintln!(
                "wattest: no certificate for job {job_id}: the measurement failed before its final window"
            );
        } else if report.remaining > 0 {
            eprintln!(
                "wattest: no certificate for job {job_id} yet: the oracle could not be reached or has not acknowledged its final window"
            );
        } else {
            eprintln!("wattest: no certificate was issued; see the errors above");
        }
    }
    if report.remaining > 0 {
        eprintln!(
            "wattest: {} windows stay in {} and will be sent by the next run or `wattest-agent flush`",
            report.remaining,
            dir.spool().display()
        );
    }
    if let Some(stopped) = &report.stopped {
        eprintln!("wattest: error: the upload stopped: {stopped}");
    }
    for (seq, reason) in earlier.rejected.iter().chain(&report.rejected) {
        eprintln!("wattest: window {seq} was rejected: {reason}");
    }
    // The command's status, whatever happened to the measurement.
    Ok(exit_code(status))
}

/// Kills the command and reaps it (an error path after it started: it must not run on,
/// unmeasured, after the agent exits).
async fn stop_child(child: &mut tokio::process::Child) {
    if let Err(err) = child.start_kill() {
        tracing::debug!(error = %err, "The command had already exited.");
    }
    let _ = child.wait().await;
}

/// `--interval` / `WATTEST_INTERVAL`: a number of seconds in [`config::INTERVAL_RANGE_S`]
/// (refused by clap, exit 2, like any bad value).
fn interval_arg(value: &str) -> Result<f64, String> {
    config::check_interval(number(value)?)
}

/// `--tdp-watts` / `WATTEST_TDP_WATTS`: a positive number of watts.
fn tdp_watts_arg(value: &str) -> Result<f64, String> {
    config::check_tdp_watts(number(value)?)
}

/// `--solar-watts`: a number of watts ≥ 0.
fn solar_watts_arg(value: &str) -> Result<f64, String> {
    config::check_solar_watts(number(value)?)
}

fn number(value: &str) -> Result<f64, String> {
    value
        .trim()
        .parse()
        .map_err(|err| format!("{value:?} is not a number ({err})"))
}

/// A `--job-id` or `--model-id` as the oracle takes it (`docs/protocol.md` §3.1): refused here,
/// before the job runs, rather than every window at the oracle.
fn label(value: &str) -> Result<String, String> {
    if wattest_shared::window::is_valid_label(value) {
        Ok(value.to_owned())
    } else {
        Err(format!(
            "must be 1–{} characters without control characters",
            wattest_shared::window::MAX_LABEL_CHARS
        ))
    }
}

/// The shell's status for a command `program` that could not be started, as bash and dash
/// give it: 127 when it is not found (`ENOENT`, `ENOTDIR`: no such file, or a path through a
/// non-directory; also `ENOENT` for a file that exists, whose interpreter, its `#!` line's or
/// an ELF's loader, is missing: [`missing_interpreter`]), 126 when it is found but cannot be
/// executed (`EACCES`, `EPERM`: no execute permission, a directory, a `noexec` mount;
/// `ENOEXEC`: not an executable format; `EISDIR`). `None` for other failures (no memory, too
/// many processes…): the agent's, exit 70.
fn spawn_failure_status(err: &std::io::Error) -> Option<u8> {
    match err.raw_os_error()? {
        libc::ENOENT | libc::ENOTDIR => Some(127),
        libc::EACCES | libc::EPERM | libc::ENOEXEC | libc::EISDIR => Some(126),
        _ => None,
    }
}

/// Why `program`, a file that exists, failed with `ENOENT`: its interpreter is missing. Names
/// the interpreter of its `#!` line (`its interpreter /opt/py/bin/python3 is missing`); for a
/// file without one (an ELF whose loader is missing) says so without a name. `None` when `err`
/// is not `ENOENT` or `program` is not a path to an existing file (then it is not found).
fn missing_interpreter(program: &str, err: &std::io::Error) -> Option<String> {
    use std::io::Read as _;
    let path = std::path::Path::new(program);
    if err.raw_os_error() != Some(libc::ENOENT) || !program.contains('/') || !path.is_file() {
        return None;
    }
    let mut head = Vec::with_capacity(256);
    let read = std::fs::File::open(path).and_then(|f| f.take(256).read_to_end(&mut head));
    let interpreter = read
        .ok()
        .and_then(|_| head.strip_prefix(b"#!"))
        .and_then(|rest| rest.split(|b| *b == b'\n').next())
        .map(String::from_utf8_lossy)
        .and_then(|line| line.split_whitespace().next().map(str::to_owned));
    Some(match interpreter {
        Some(interp) if !std::path::Path::new(&interp).exists() => {
            format!("its interpreter {interp} is missing")
        }
        Some(interp) => format!("its interpreter {interp} cannot be started: {err}"),
        None => format!("its interpreter (program loader) is missing: {err}"),
    })
}

fn exit_code(status: std::process::ExitStatus) -> ExitCode {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        (None, Some(signal)) => ExitCode::from(u8::try_from(128 + signal).unwrap_or(1)),
        (None, None) => ExitCode::from(1),
    }
}

async fn watch_cmd(args: WatchArgs) -> Result<()> {
    let dir = lock_state_dir(&args.state.state_dir)?;
    let node = dir.node()?;
    let signer = NodeSigner::load(&dir, &node)?;
    let uploader = Uploader::new(args.oracle.as_deref().unwrap_or(&node.oracle))?;
    let spool = Spool::new(dir.spool());
    let (settings, discovery) = args.measure.start().await?;
    let sampler_cfg = SamplerConfig {
        period: Duration::from_secs_f64(settings.interval),
        window: Duration::from_secs(args.window),
        attribution: Attribution::Machine,
        job_pid: None,
    };
    let chain = Chain::open(&dir, signer, None, None, Attribution::Machine)?
        .with_spool_budget(args.spool_budget_mb * 1024 * 1024);
    let certify_every =
        chrono::Duration::seconds(i64::try_from(args.certify_every).unwrap_or(3600));
    let measurement = Measurement::start(
        discovery,
        sampler_cfg,
        chain,
        uploader,
        spool,
        Some(certify_every),
    )?;
    eprintln!(
        "wattest: watching node {} ({}), {} s windows, a certificate every {} s; stop with SIGTERM or Ctrl-C",
        node.node_id, node.name, args.window, args.certify_every
    );

    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = sigterm.recv() => {},
        _ = tokio::signal::ctrl_c() => {},
        // `finish` below returns the signer's error: the agent exits non-zero.
        () = measurement.failed() => {},
    }
    tracing::info!("Stopping: closing the last window.");
    let Finished { report, error } = measurement.finish(Duration::from_secs(30)).await;
    for c in &report.certificates {
        eprintln!("wattest: certificate {}: {}", c.id, summary_line(c));
    }
    if report.remaining > 0 {
        eprintln!("wattest: {} windows stay in the spool", report.remaining);
    }
    if let Some(stopped) = &report.stopped {
        eprintln!("wattest: error: the upload stopped: {stopped}");
    }
    match error {
        Some(err) => Err(err),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsString;

    #[test]
    fn the_default_state_dir_follows_the_effective_uid_then_xdg_then_home() {
        let some = |s: &str| Some(OsString::from(s));
        // Root: the system dir, whatever HOME and XDG_STATE_HOME say (sudo keeps HOME).
        assert_eq!(
            state_dir_for(0, some("/tmp/xdg"), some("/home/alice")),
            PathBuf::from("/var/lib/wattest")
        );
        assert_eq!(
            state_dir_for(0, None, some("/root")),
            PathBuf::from("/var/lib/wattest")
        );
        // Anyone else: XDG_STATE_HOME when absolute, else ~/.local/state.
        assert_eq!(
            state_dir_for(1000, some("/tmp/xdg"), some("/home/alice")),
            PathBuf::from("/tmp/xdg/wattest")
        );
        assert_eq!(
            state_dir_for(1000, some("relative"), some("/home/alice")),
            PathBuf::from("/home/alice/.local/state/wattest")
        );
        assert_eq!(
            state_dir_for(1000, None, some("/home/alice")),
            PathBuf::from("/home/alice/.local/state/wattest")
        );
        // A non-root user whose HOME is /root is still not root.
        assert_eq!(
            state_dir_for(1000, None, some("/root")),
            PathBuf::from("/root/.local/state/wattest")
        );
        assert_eq!(
            state_dir_for(1000, None, some("")),
            PathBuf::from("/var/lib/wattest")
        );
        assert_eq!(
            state_dir_for(1000, None, None),
            PathBuf::from("/var/lib/wattest")
        );
    }

    #[test]
    fn a_command_that_cannot_start_gets_the_shells_status() {
        let os = std::io::Error::from_raw_os_error;
        // Not found, or (for a file that exists) its interpreter not found: 127, as in bash
        // and dash.
        assert_eq!(spawn_failure_status(&os(libc::ENOENT)), Some(127));
        assert_eq!(spawn_failure_status(&os(libc::ENOTDIR)), Some(127));
        assert_eq!(spawn_failure_status(&os(libc::EACCES)), Some(126));
        assert_eq!(spawn_failure_status(&os(libc::EPERM)), Some(126));
        assert_eq!(spawn_failure_status(&os(libc::ENOEXEC)), Some(126));
        assert_eq!(spawn_failure_status(&os(libc::ENOMEM)), None);
        assert_eq!(
            spawn_failure_status(&std::io::Error::other("no errno")),
            None
        );
    }

    #[test]
    fn a_missing_interpreter_is_named() {
        let os = std::io::Error::from_raw_os_error;
        let tmp = tempfile::tempdir().expect("tmp");
        let script = tmp.path().join("bad.sh");
        std::fs::write(&script, "#!/nonexistent/interp -x\necho hi\n").expect("write");
        let script = script.to_str().expect("utf-8");
        assert_eq!(
            missing_interpreter(script, &os(libc::ENOENT)).as_deref(),
            Some("its interpreter /nonexistent/interp is missing")
        );
        // Only ENOENT, and only for an existing file.
        assert_eq!(missing_interpreter(script, &os(libc::EACCES)), None);
        assert_eq!(
            missing_interpreter("/nonexistent/cmd", &os(libc::ENOENT)),
            None
        );
        assert_eq!(missing_interpreter("bad.sh", &os(libc::ENOENT)), None);
        // No `#!` line (an ELF whose loader is missing): no name to give.
        let elf = tmp.path().join("elf");
        std::fs::write(&elf, b"\x7fELF\x02\x01").expect("write");
        let shown =
            missing_interpreter(elf.to_str().expect("utf-8"), &os(libc::ENOENT)).expect("message");
        assert!(
            shown.starts_with("its interpreter (program loader) is missing"),
            "{shown}"
        );
    }

    #[test]
    fn flush_fails_with_what_is_true_of_the_spool() {
        use wattest_agent::uploader::Drained;
        assert_eq!(flush_failure(&Drained::default(), 60), None);
        let rejected = Drained {
            rejected: vec![(1, "a".into()), (2, "b".into())],
            ..Drained::default()
        };
        assert_eq!(
            flush_failure(&rejected, 60).as_deref(),
            Some("2 windows were set aside in spool/rejected/ (see their .reason.json)")
        );
        let left = Drained {
            rejected: vec![(1, "a".into())],
            remaining: 3,
            ..Drained::default()
        };
        assert_eq!(
            flush_failure(&left, 5).as_deref(),
            Some(
                "the spool was not emptied: 3 windows still spooled after 5 s; the next run or \
                 `wattest-agent flush` sends them; 1 window was set aside in spool/rejected/ \
                 (see its .reason.json)"
            )
        );
        let stopped = Drained {
            remaining: 2,
            stopped: Some("cannot read the spool: x".into()),
            ..Drained::default()
        };
        assert_eq!(
            flush_failure(&stopped, 5).as_deref(),
            Some("the spool was not emptied (2 windows still spooled): cannot read the spool: x")
        );
    }
}
