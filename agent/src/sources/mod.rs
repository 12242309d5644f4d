//! Power sources: discovery of what this host can measure, and one reader per sensor kind.
//!
//! Each source reports either a cumulative energy counter ([`Reading::Counter`]) or an
//! instantaneous power ([`Reading::Power`]); turning readings into energy per window is the
//! integrator's job (`crate::integrator`). Discovery never fails: what cannot be read becomes a
//! warning naming the file or command, and the source is left out — a source that cannot be read
//! never reports zero as if it were a measurement.
//!
//! Sysfs- and procfs-based sources take their root from [`DiscoveryConfig`] so that tests feed
//! synthetic trees (`WATTEST_SYSFS_ROOT`). Methods, units and uncertainties are described in
//! `docs/measurement.md`.

// Until the CLI (another branch) calls everything here.

pub mod cpu_estimate;
pub mod hwmon;
pub mod nvml;
pub mod pi_pmic;
pub mod procfs;
pub mod rapl;
pub mod solar;
pub mod tdp;

use serde::Serialize;
use std::io::Read;
use std::path::{Path, PathBuf};
use wattest_shared::Watts;
use wattest_shared::window::{Method, SourceKind};

/// One reading of a power source.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Reading {
    /// Cumulative energy counter in joules (raw, may wrap), with the value at which it wraps when known.
    Counter {
        /// Counter value, J.
        joules: f64,
        /// Counter value at which it wraps back to zero, J; `None` when the sensor does not say.
        wrap_joules: Option<f64>,
    },
    /// Instantaneous power.
    Power(Watts),
}

/// What a source is, how it measures, and where it reads from.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SourceInfo {
    /// Stable id on this node (`gpu0`, `rapl:package-0`, `hwmon:ina226:VIN`, `cpu-estimate`, …),
    /// 1–64 characters from `[A-Za-z0-9._:/-]` as the wire contract requires.
    pub id: String,
    /// What it measures.
    pub kind: SourceKind,
    /// How its energy is obtained.
    pub method: Method,
    /// Where it reads from: a sysfs path, a device name and UUID, or a command.
    pub location: String,
    /// Relative standard uncertainty of the energy, percent (see `docs/measurement.md`).
    pub uncertainty_pct: f64,
    /// True when the device is shared with other tenants (MIG): its figure covers more than this job.
    pub shared_device: bool,
    /// Anything a reader of the figures should know (fallbacks, exclusions).
    pub note: Option<String>,
}

/// Why a reading failed.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A file or a command's output did not hold the expected number.
    #[error("cannot parse {what}: {text:?}")]
    Parse {
        /// The file or command.
        what: String,
        /// What it held (truncated).
        text: String,
    },
    /// A command failed to run or exited with an error.
    #[error("command {command} failed: {detail}")]
    Command {
        /// The command line.
        command: String,
        /// What went wrong.
        detail: String,
    },
    /// The NVML library reported an error.
    #[error("NVML: {0}")]
    Nvml(String),
}

/// A power source the sampler reads.
pub trait PowerSource: Send {
    /// What this source is.
    fn info(&self) -> &SourceInfo;
    /// Takes one reading. Errors are per reading: the sampler skips the sample and tries again.
    ///
    /// # Errors
    /// [`SourceError`] when the sensor cannot be read or its value parsed.
    fn read(&mut self) -> Result<Reading, SourceError>;
}

/// Where solar production comes from.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum SolarConfig {
    /// No solar panel.
    #[default]
    None,
    /// A constant power declared by the operator (`--solar-watts`): a declaration, not a measurement.
    Constant(Watts),
    /// A file holding the current power in watts (decimal text), re-read at every sample.
    File(PathBuf),
    /// A shell command printing the current power in watts, run at every sample.
    Command(String),
    /// An hwmon channel, as a `"name:label"` selector.
    Hwmon(String),
}

/// What discovery looks at.
#[derive(Debug, Clone, PartialEq)]
pub struct DiscoveryConfig {
    /// Root of sysfs (`WATTEST_SYSFS_ROOT`, default `/sys`).
    pub sysfs_root: PathBuf,
    /// Root of procfs (default `/proc`).
    pub procfs_root: PathBuf,
    /// `CUDA_VISIBLE_DEVICES`: GPU indices or UUIDs (`GPU-…`, `MIG-…`); `None` = all GPUs.
    pub cuda_visible_devices: Option<String>,
    /// hwmon channels as `"name:label"` selectors; empty = every power and energy channel.
    pub hwmon_channels: Vec<String>,
    /// Solar production.
    pub solar: SolarConfig,
    /// TDP per socket to use for the CPU estimate instead of the table lookup.
    pub tdp_override: Option<Watts>,
}

impl Default for DiscoveryConfig {
    fn default() -> Self {
        Self {
            sysfs_root: PathBuf::from("/sys"),
            procfs_root: PathBuf::from("/proc"),
            cuda_visible_devices: None,
            hwmon_channels: Vec::new(),
            solar: SolarConfig::None,
            tdp_override: None,
        }
    }
}

impl DiscoveryConfig {
    /// Defaults with the roots and GPU list taken from the environment: `WATTEST_SYSFS_ROOT`,
    /// `WATTEST_PROCFS_ROOT`, `CUDA_VISIBLE_DEVICES`.
    #[must_use]
    pub fn from_env() -> Self {
        let mut cfg = Self::default();
        if let Some(root) = std::env::var_os("WATTEST_SYSFS_ROOT") {
            cfg.sysfs_root = PathBuf::from(root);
        }
        if let Some(root) = std::env::var_os("WATTEST_PROCFS_ROOT") {
            cfg.procfs_root = PathBuf::from(root);
        }
        cfg.cuda_visible_devices = std::env::var("CUDA_VISIBLE_DEVICES").ok();
        cfg
    }
}

/// What discovery found: the sources to sample and what the operator should know.
pub struct Discovery {
    /// Sources to sample, in a stable order (GPUs, RAPL, hwmon, Pi PMIC, CPU estimate, solar).
    pub sources: Vec<Box<dyn PowerSource>>,
    /// Human-readable lines: skipped sources with the file and the fix, fallbacks taken.
    pub warnings: Vec<String>,
    /// Human-readable lines about what is normal on this host but worth knowing (no NVIDIA
    /// driver, so no GPU source): logged at INFO, printed by `sources` as `note:` lines.
    pub notes: Vec<String>,
    /// The procfs root the sources were found under (`DiscoveryConfig::procfs_root`): the
    /// sampler's process attribution reads the same tree.
    pub procfs_root: PathBuf,
}

/// Finds every power source this host offers. Never fails: problems become `warnings`, what
/// is expected but worth knowing `notes`.
///
/// The CPU-time × TDP estimate is added only when no sensor covers the CPU (no `cpu` or
/// `platform` source was found).
#[must_use]
pub fn discover(cfg: &DiscoveryConfig) -> Discovery {
    let vcgencmd = std::env::var_os("WATTEST_VCGENCMD")
        .map_or_else(|| PathBuf::from(pi_pmic::DEFAULT_VCGENCMD), PathBuf::from);
    discover_with(cfg, nvml::NvmlBackend::init(), &vcgencmd)
}

/// [`discover`] with the GPU backend and the `vcgencmd` path given (tests pass fakes).
pub fn discover_with(
    cfg: &DiscoveryConfig,
    gpu: Result<std::sync::Arc<dyn nvml::GpuBackend>, String>,
    vcgencmd: &Path,
) -> Discovery {
    let mut d = Discovery {
        sources: Vec::new(),
        warnings: Vec::new(),
        notes: Vec::new(),
        procfs_root: cfg.procfs_root.clone(),
    };
    match gpu {
        Ok(backend) => nvml::discover(backend, cfg.cuda_visible_devices.as_deref(), &mut d),
        // No driver: the normal case on a host without an NVIDIA GPU (docs/measurement.md).
        Err(e) => d.notes.push(format!(
            "No NVIDIA GPU source: NVML is not available ({e}); this is expected on hosts without an NVIDIA driver."
        )),
    }
    rapl::discover(&cfg.sysfs_root, &mut d);
    let solar_selector = match &cfg.solar {
        SolarConfig::Hwmon(sel) => Some(sel.as_str()),
        _ => None,
    };
    hwmon::discover(&cfg.sysfs_root, &cfg.hwmon_channels, solar_selector, &mut d);
    pi_pmic::discover(vcgencmd, &mut d);
    keep_one_platform_meter(&mut d);
    let cpu_covered = d
        .sources
        .iter()
        .any(|s| matches!(s.info().kind, SourceKind::Cpu | SourceKind::Platform));
    if !cpu_covered {
        cpu_estimate::discover(&cfg.procfs_root, cfg.tdp_override, &mut d);
    }
    solar::discover(&cfg.solar, &cfg.sysfs_root, &mut d);
    d
}

/// Platform meters of different kinds (hwmon shunts on the supply, RAPL's `psys`, the Pi PMIC)
/// measure the same board, and the consumption rule adds every platform entry up
/// (`docs/protocol.md` §3.1): only the best kind found stays, hwmon (several hwmon channels are
/// several supplies, and stay together), then `psys`, then the PMIC. The others are left out
/// with a warning.
fn keep_one_platform_meter(d: &mut Discovery) {
    let rank = |s: &dyn PowerSource| match (s.info().kind, s.info().method) {
        (SourceKind::Platform, Method::HwmonEnergyCounter | Method::HwmonPowerIntegration) => {
            Some(0)
        }
        (SourceKind::Platform, Method::RaplCounter) => Some(1),
        (SourceKind::Platform, _) => Some(2),
        _ => None,
    };
    let Some(best) = d.sources.iter().filter_map(|s| rank(s.as_ref())).min() else {
        return;
    };
    let mut kept = Vec::with_capacity(d.sources.len());
    for s in d.sources.drain(..) {
        match rank(s.as_ref()) {
            Some(r) if r > best => d.warnings.push(format!(
                "{} left out: another platform meter of this board is measured (counting both would count the board twice).",
                s.info().id
            )),
            _ => kept.push(s),
        }
    }
    d.sources = kept;
}

/// What the `wattest-agent sources [--json]` command prints: one [`SourceInfo`] per source.
#[must_use]
pub fn describe(discovery: &Discovery) -> Vec<SourceInfo> {
    discovery.sources.iter().map(|s| s.info().clone()).collect()
}

/// Makes `raw` fit the wire contract's id alphabet `[A-Za-z0-9._:/-]` (others become `_`) and
/// length (64 characters).
#[must_use]
pub fn sanitize_id(raw: &str) -> String {
    raw.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '/' | '-') {
                c
            } else {
                '_'
            }
        })
        .take(64)
        .collect()
}

/// Reads a small sysfs file holding one unsigned integer, into a stack buffer (no allocation:
/// this runs at every sample).
///
/// # Errors
/// [`SourceError::Io`] naming `path`, or [`SourceError::Parse`] when it is not an integer.
pub fn read_u64_file(path: &Path) -> Result<u64, SourceError> {
    let mut buf = [0u8; 64];
    let n = read_small(path, &mut buf)?;
    parse_u64(&buf[..n]).ok_or_else(|| SourceError::Parse {
        what: path.display().to_string(),
        text: String::from_utf8_lossy(&buf[..n]).into_owned(),
    })
}

/// Reads a small sysfs file holding one signed integer (hwmon `power*_input` is signed: a
/// bidirectional meter reads negative when current flows back).
///
/// # Errors
/// [`SourceError::Io`] naming `path`, or [`SourceError::Parse`] when it is not an integer.
pub fn read_i64_file(path: &Path) -> Result<i64, SourceError> {
    let mut buf = [0u8; 64];
    let n = read_small(path, &mut buf)?;
    std::str::from_utf8(&buf[..n])
        .ok()
        .and_then(|text| text.trim().parse().ok())
        .ok_or_else(|| SourceError::Parse {
            what: path.display().to_string(),
            text: String::from_utf8_lossy(&buf[..n]).into_owned(),
        })
}

/// Reads up to `buf.len()` bytes of `path` into `buf`, returning how many were read.
///
/// # Errors
/// [`SourceError::Io`] naming `path`.
pub fn read_small(path: &Path, buf: &mut [u8]) -> Result<usize, SourceError> {
    let io = |source| SourceError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut file = std::fs::File::open(path).map_err(io)?;
    let mut n = 0;
    while n < buf.len() {
        let got = file.read(&mut buf[n..]).map_err(io)?;
        if got == 0 {
            break;
        }
        n += got;
    }
    Ok(n)
}

fn parse_u64(bytes: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(bytes).ok()?.trim();
    text.parse().ok()
}

/// Parses a decimal number of watts (optionally followed by `W`), as printed by a solar file or
/// command; `None` unless finite.
#[must_use]
pub fn parse_watts(text: &str) -> Option<Watts> {
    let t = text.trim();
    let t = t.strip_suffix('W').map_or(t, str::trim_end);
    let v: f64 = t.parse().ok()?;
    v.is_finite().then_some(Watts(v))
}

/// Reads a sysfs text attribute (a `name` or `*_label` file), trimmed; `None` when unreadable.
pub(crate) fn read_text(path: &Path) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_fit_the_wire_alphabet() {
        assert_eq!(sanitize_id("hwmon:ina226:VIN 5V"), "hwmon:ina226:VIN_5V");
        assert_eq!(sanitize_id(&"x".repeat(100)).len(), 64);
    }

    #[test]
    fn watts_parse_with_or_without_unit() {
        assert_eq!(parse_watts(" 12.5\n"), Some(Watts(12.5)));
        assert_eq!(parse_watts("7 W"), Some(Watts(7.0)));
        assert_eq!(parse_watts("NaN"), None);
        assert_eq!(parse_watts("hot"), None);
    }
}
