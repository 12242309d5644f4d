//! The agent's measurement settings: command-line flags, environment variables and an optional
//! TOML file (`--config`, `WATTEST_CONFIG`), for edge nodes run by systemd. A flag or variable
//! overrides the file; the file overrides the defaults.
//!
//! ```toml
//! interval = 1.0                       # sampling period, s (0.05–60)
//! sysfs_root = "/sys"                  # root of sysfs (RAPL, hwmon)
//! hwmon_channels = ["ina226:vbus"]     # NAME:LABEL selectors; empty = every power/energy channel
//! tdp_watts = 65.0                     # CPU TDP for the estimate, W
//! metrics_listen = "127.0.0.1:9464"    # serve Prometheus /metrics here (off when absent)
//! [solar]                              # at most one of:
//! hwmon = "ina219:solar"               #   watts = 120.0 | file = "/run/solar_w" | command = "…"
//! ```

use crate::sampler::{DEFAULT_PERIOD, MIN_PERIOD};
use crate::sources::{DiscoveryConfig, SolarConfig};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use wattest_shared::Watts;

/// Default sampling period, s (the sampler's [`DEFAULT_PERIOD`]).
pub const DEFAULT_INTERVAL_S: f64 = DEFAULT_PERIOD.as_secs_f64();
/// Accepted sampling periods, s: the sampler's [`MIN_PERIOD`] (50 ms) to one minute.
pub const INTERVAL_RANGE_S: std::ops::RangeInclusive<f64> = MIN_PERIOD.as_secs_f64()..=60.0;

/// `value` as a sampling period, s, when it is in [`INTERVAL_RANGE_S`] (the check of
/// `--interval`, `WATTEST_INTERVAL` and the file's `interval`).
///
/// # Errors
/// The value and the range, as clap words its own range errors.
pub fn check_interval(value: f64) -> Result<f64, String> {
    if INTERVAL_RANGE_S.contains(&value) {
        Ok(value)
    } else {
        Err(format!(
            "{value} is not in {}..={}",
            INTERVAL_RANGE_S.start(),
            INTERVAL_RANGE_S.end()
        ))
    }
}

/// `value` as a CPU TDP, W, when it is a positive finite number.
///
/// # Errors
/// Zero, negative, infinite or NaN.
pub fn check_tdp_watts(value: f64) -> Result<f64, String> {
    if value.is_finite() && value > 0.0 {
        Ok(value)
    } else {
        Err(format!("{value} is not a positive number of watts"))
    }
}

/// `value` as a declared solar power, W, when it is a finite number ≥ 0.
///
/// # Errors
/// Negative, infinite or NaN.
pub fn check_solar_watts(value: f64) -> Result<f64, String> {
    if value.is_finite() && value >= 0.0 {
        Ok(value)
    } else {
        Err(format!("{value} is not a number of watts ≥ 0"))
    }
}

/// A config file problem.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Unreadable file.
    #[error("cannot read the config file {path}: {source}")]
    Io {
        /// File.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// Not the expected TOML (unknown keys included): the line, column and parser's message,
    /// never the file's text.
    #[error("config file {path}: {message}")]
    Invalid {
        /// File.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

/// The `[solar]` table: exactly one way to read solar input.
#[derive(Debug, Default, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SolarSettings {
    /// Declared constant power, W.
    pub watts: Option<f64>,
    /// File holding the power in W.
    pub file: Option<PathBuf>,
    /// Command printing the power in W.
    pub command: Option<String>,
    /// hwmon channel NAME:LABEL.
    pub hwmon: Option<String>,
}

/// Measurement settings, every field optional so that layers can be merged.
#[derive(Debug, Default, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MeasureSettings {
    /// Sampling period, s.
    pub interval: Option<f64>,
    /// Root of sysfs.
    pub sysfs_root: Option<PathBuf>,
    /// hwmon selectors.
    #[serde(default)]
    pub hwmon_channels: Vec<String>,
    /// CPU TDP, W.
    pub tdp_watts: Option<f64>,
    /// Solar input.
    pub solar: Option<SolarSettings>,
    /// Address of the Prometheus `/metrics` listener (`run` and `watch`); none = no listener.
    pub metrics_listen: Option<std::net::SocketAddr>,
}

/// Settings ready to use.
#[derive(Debug, Clone)]
pub struct Resolved {
    /// Sampling period, s.
    pub interval: f64,
    /// What to discover.
    pub discovery: DiscoveryConfig,
    /// Address of the Prometheus `/metrics` listener, if any.
    pub metrics_listen: Option<std::net::SocketAddr>,
}

impl Resolved {
    /// The effective settings as a config file (`--print-config`): every key of the file format,
    /// with the value in force, except `solar.command`, which may hold a credential (`curl -H
    /// 'Authorization: …'`): it is printed as [`redact_command`] shows it (its program and the
    /// length of the rest), so the output reads back as a config file but not as the same
    /// command. The enrollment token is never stored.
    #[must_use]
    pub fn to_toml(&self) -> String {
        #[derive(serde::Serialize)]
        struct Out<'a> {
            interval: f64,
            sysfs_root: &'a Path,
            hwmon_channels: &'a [String],
            #[serde(skip_serializing_if = "Option::is_none")]
            tdp_watts: Option<f64>,
            #[serde(skip_serializing_if = "Option::is_none")]
            metrics_listen: Option<String>,
            #[serde(skip_serializing_if = "Option::is_none")]
            solar: Option<SolarOut<'a>>,
        }
        #[derive(serde::Serialize)]
        struct SolarOut<'a> {
            #[serde(skip_serializing_if = "Option::is_none")]
            watts: Option<f64>,
            #[serde(skip_serializing_if = "Option::is_none")]
            file: Option<&'a Path>,
            #[serde(skip_serializing_if = "Option::is_none")]
            command: Option<String>,
            #[serde(skip_serializing_if = "Option::is_none")]
            hwmon: Option<&'a str>,
        }
        let none = SolarOut {
            watts: None,
            file: None,
            command: None,
            hwmon: None,
        };
        let solar = match &self.discovery.solar {
            SolarConfig::None => None,
            SolarConfig::Constant(w) => Some(SolarOut {
                watts: Some(w.0),
                ..none
            }),
            SolarConfig::File(f) => Some(SolarOut {
                file: Some(f),
                ..none
            }),
            SolarConfig::Command(c) => Some(SolarOut {
                command: Some(redact_command(c)),
                ..none
            }),
            SolarConfig::Hwmon(h) => Some(SolarOut {
                hwmon: Some(h),
                ..none
            }),
        };
        let out = Out {
            interval: self.interval,
            sysfs_root: &self.discovery.sysfs_root,
            hwmon_channels: &self.discovery.hwmon_channels,
            tdp_watts: self.discovery.tdp_override.map(|w| w.0),
            metrics_listen: self.metrics_listen.map(|a| a.to_string()),
            solar,
        };
        toml::to_string(&out).unwrap_or_else(|err| format!("# cannot print the config: {err}\n"))
    }
}

/// The program of the shell command line `cmd`: its first word, or `None` when there is none
/// or it is a variable assignment (`TOKEN=… curl …`, which would show the value).
#[must_use]
pub fn command_program(cmd: &str) -> Option<&str> {
    cmd.split_whitespace().next().filter(|w| !w.contains('='))
}

/// The shell command line `cmd` as it is printed and logged: its program (first word) alone,
/// followed by `<redacted: N bytes>` for the rest, which may hold a credential; all of it
/// redacted when the first word is no program ([`command_program`]).
#[must_use]
pub fn redact_command(cmd: &str) -> String {
    let cmd = cmd.trim();
    match command_program(cmd) {
        Some(program) => {
            let rest = cmd[program.len()..].trim_start().len();
            if rest == 0 {
                program.to_owned()
            } else {
                format!("{program} <redacted: {rest} bytes>")
            }
        }
        None => format!("<redacted: {} bytes>", cmd.len()),
    }
}

/// Reads a TOML settings file.
///
/// # Errors
/// [`ConfigError`] naming the file and the problem.
pub fn load(path: &Path) -> Result<MeasureSettings, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
        path: path.to_owned(),
        source,
    })?;
    toml::from_str(&text).map_err(|err| ConfigError::Invalid {
        path: path.to_owned(),
        message: toml_error(&text, &err),
    })
}

/// `err` as `line L, column C: message`, on one line and without the source snippet that
/// `toml`'s `Display` quotes: the offending line may be a `solar.command` holding a credential
/// (`curl -H 'Authorization: …'`), which is only ever shown redacted ([`redact_command`]).
fn toml_error(text: &str, err: &toml::de::Error) -> String {
    // One line: the message of some errors runs on over several.
    let message = err
        .message()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    let Some(span) = err.span() else {
        return message;
    };
    let (line, column) = wattest_shared::text::line_column(text, span.start);
    format!("line {line}, column {column}: {message}")
}

impl MeasureSettings {
    /// `self` (flags and environment) over `file`, over the defaults; checks the result.
    ///
    /// # Errors
    /// An interval out of range, a negative TDP or solar power, or several solar inputs.
    pub fn resolve(self, file: MeasureSettings) -> Result<Resolved, String> {
        let interval = self
            .interval
            .or(file.interval)
            .unwrap_or(DEFAULT_INTERVAL_S);
        check_interval(interval).map_err(|why| format!("interval: {why}"))?;
        let tdp = self
            .tdp_watts
            .or(file.tdp_watts)
            .map(check_tdp_watts)
            .transpose()
            .map_err(|why| format!("tdp_watts: {why}"))?;
        let solar = self.solar.or(file.solar).unwrap_or_default();
        let chosen = [
            solar.watts.is_some(),
            solar.file.is_some(),
            solar.command.is_some(),
            solar.hwmon.is_some(),
        ]
        .iter()
        .filter(|b| **b)
        .count();
        if chosen > 1 {
            return Err("choose one solar input: watts, file, command or hwmon".into());
        }
        let solar = match solar {
            SolarSettings { watts: Some(w), .. } => SolarConfig::Constant(Watts(
                check_solar_watts(w).map_err(|why| format!("solar watts: {why}"))?,
            )),
            SolarSettings { file: Some(f), .. } => SolarConfig::File(f),
            SolarSettings {
                command: Some(c), ..
            } => SolarConfig::Command(c),
            SolarSettings { hwmon: Some(h), .. } => SolarConfig::Hwmon(h),
            _ => SolarConfig::None,
        };
        let hwmon_channels = if self.hwmon_channels.is_empty() {
            file.hwmon_channels
        } else {
            self.hwmon_channels
        };
        // Roots and the GPU list from the environment (WATTEST_PROCFS_ROOT, CUDA_VISIBLE_DEVICES).
        let base = DiscoveryConfig::from_env();
        Ok(Resolved {
            metrics_listen: self.metrics_listen.or(file.metrics_listen),
            interval,
            discovery: DiscoveryConfig {
                sysfs_root: self
                    .sysfs_root
                    .or(file.sysfs_root)
                    .unwrap_or(base.sysfs_root),
                procfs_root: base.procfs_root,
                cuda_visible_devices: base.cuda_visible_devices,
                hwmon_channels,
                solar,
                tdp_override: tdp.map(Watts),
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_override_the_file_which_overrides_defaults() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("agent.toml");
        std::fs::write(&path, "interval = 0.5\nsysfs_root = \"/tmp/sys\"\nhwmon_channels = [\"ina226:vbus\"]\ntdp_watts = 65.0\n[solar]\nhwmon = \"ina219:solar\"\n").expect("write");
        let file = load(&path).expect("parse");
        let r = MeasureSettings::default()
            .resolve(file.clone())
            .expect("resolve");
        assert_eq!(r.interval, 0.5);
        assert_eq!(r.discovery.sysfs_root, PathBuf::from("/tmp/sys"));
        assert_eq!(r.discovery.hwmon_channels, vec!["ina226:vbus".to_owned()]);
        assert!(matches!(r.discovery.solar, SolarConfig::Hwmon(ref h) if h == "ina219:solar"));
        let flags = MeasureSettings {
            interval: Some(0.1),
            solar: Some(SolarSettings {
                watts: Some(50.0),
                ..SolarSettings::default()
            }),
            ..MeasureSettings::default()
        };
        let r = flags.resolve(file).expect("resolve");
        assert_eq!(r.interval, 0.1);
        assert!(matches!(r.discovery.solar, SolarConfig::Constant(Watts(w)) if w == 50.0));
        assert_eq!(
            MeasureSettings::default()
                .resolve(MeasureSettings::default())
                .expect("defaults")
                .interval,
            DEFAULT_INTERVAL_S
        );
    }

    #[test]
    fn printed_config_reads_back_as_the_same_settings() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("agent.toml");
        // A solar file, not a command: the command is printed redacted, so it does not read
        // back as the same (`solar_command_is_redacted_in_the_printed_config`).
        std::fs::write(&path, "interval = 0.25\ntdp_watts = 95.0\nmetrics_listen = \"127.0.0.1:9464\"\n[solar]\nfile = \"/run/solar\"\n").expect("write");
        let first = MeasureSettings::default()
            .resolve(load(&path).expect("parse"))
            .expect("resolve");
        let printed = first.to_toml();
        std::fs::write(&path, &printed).expect("write printed");
        let again = MeasureSettings::default()
            .resolve(load(&path).expect("printed config parses"))
            .expect("resolve printed");
        assert_eq!(again.to_toml(), printed);
        assert_eq!(again.interval, 0.25);
        assert_eq!(again.discovery.tdp_override, Some(Watts(95.0)));
        assert_eq!(
            again.metrics_listen,
            Some("127.0.0.1:9464".parse().expect("addr"))
        );
        assert!(
            matches!(again.discovery.solar, SolarConfig::File(ref f) if f == Path::new("/run/solar"))
        );
    }

    #[test]
    fn solar_command_is_redacted_in_the_printed_config() {
        let settings = MeasureSettings {
            solar: Some(SolarSettings {
                command: Some(
                    "curl -sH 'Authorization: Bearer s3cret' https://inverter.local/w".into(),
                ),
                ..SolarSettings::default()
            }),
            ..MeasureSettings::default()
        };
        let printed = settings
            .resolve(MeasureSettings::default())
            .expect("resolve")
            .to_toml();
        assert!(!printed.contains("s3cret"), "{printed}");
        assert!(
            printed.contains("command = \"curl <redacted: 59 bytes>\""),
            "{printed}"
        );
        // It still reads back as a config file.
        let parsed: MeasureSettings = toml::from_str(&printed).expect("parses");
        assert!(parsed.solar.and_then(|s| s.command).is_some());
    }

    #[test]
    fn a_command_is_shown_as_its_program_alone() {
        assert_eq!(redact_command("cat /run/solar"), "cat <redacted: 10 bytes>");
        assert_eq!(redact_command("  /opt/bin/solar-w  "), "/opt/bin/solar-w");
        assert_eq!(
            redact_command("TOKEN=abc curl x"),
            "<redacted: 16 bytes>",
            "an assignment is not a program"
        );
        assert_eq!(redact_command(""), "<redacted: 0 bytes>");
        assert_eq!(command_program("curl -H x"), Some("curl"));
        assert_eq!(command_program("A=1 b"), None);
    }

    #[test]
    fn bad_files_and_values_are_refused_with_the_reason() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("agent.toml");
        std::fs::write(&path, "intervall = 1\n").expect("write");
        let err = load(&path).expect_err("unknown key");
        assert!(err.to_string().contains("intervall"), "{err}");
        let missing = dir.path().join("missing.toml");
        let err = load(&missing).expect_err("missing file");
        assert!(
            err.to_string().starts_with(&format!(
                "cannot read the config file {}: ",
                missing.display()
            )),
            "{err}"
        );
        let bad = |s: MeasureSettings| s.resolve(MeasureSettings::default()).is_err();
        assert!(bad(MeasureSettings {
            interval: Some(0.01),
            ..MeasureSettings::default()
        }));
        assert!(bad(MeasureSettings {
            tdp_watts: Some(-5.0),
            ..MeasureSettings::default()
        }));
        let err = MeasureSettings::default()
            .resolve(MeasureSettings {
                interval: Some(100.0),
                ..MeasureSettings::default()
            })
            .expect_err("interval out of range");
        assert_eq!(err, "interval: 100 is not in 0.05..=60");
        assert_eq!(check_interval(0.05), Ok(0.05));
        assert_eq!(check_interval(60.0), Ok(60.0));
        assert!(check_interval(f64::NAN).is_err());
        assert_eq!(
            check_tdp_watts(0.0),
            Err("0 is not a positive number of watts".into())
        );
        assert_eq!(
            check_solar_watts(-1.0),
            Err("-1 is not a number of watts ≥ 0".into())
        );
        assert_eq!(check_solar_watts(0.0), Ok(0.0));
        assert!(bad(MeasureSettings {
            solar: Some(SolarSettings {
                watts: Some(1.0),
                file: Some("/x".into()),
                ..SolarSettings::default()
            }),
            ..MeasureSettings::default()
        }));
    }
}
