//! INTERIM power sources (replaced by the full implementation from the `sources` branch):
//! a CPU-time × TDP estimate from /proc/stat only.
#![allow(dead_code)]

use serde::Serialize;
use std::path::PathBuf;
use wattest_shared::window::{Method, SourceKind};
use wattest_shared::Watts;

/// A reading.
pub enum Reading {
    /// Cumulative energy counter, J.
    Counter { joules: f64, wrap_joules: Option<f64> },
    /// Instantaneous power.
    Power(Watts),
}

/// Description of a source.
#[derive(Debug, Clone, Serialize)]
pub struct SourceInfo {
    pub id: String,
    pub kind: SourceKind,
    pub method: Method,
    pub location: String,
    pub uncertainty_pct: f64,
    pub shared_device: bool,
    pub note: Option<String>,
}

/// A source error.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct SourceError(String);

/// A power source.
pub trait PowerSource: Send {
    fn info(&self) -> &SourceInfo;
    fn read(&mut self) -> Result<Reading, SourceError>;
}

/// Solar configuration.
#[derive(Debug, Clone)]
pub enum SolarConfig {
    None,
    Constant(Watts),
    File(PathBuf),
    Command(String),
    Hwmon(String),
}

/// Discovery configuration.
#[derive(Debug, Clone)]
pub struct DiscoveryConfig {
    pub sysfs_root: PathBuf,
    pub procfs_root: PathBuf,
    pub cuda_visible_devices: Option<String>,
    pub hwmon_channels: Vec<String>,
    pub solar: SolarConfig,
    pub tdp_override: Option<Watts>,
}

/// Discovered sources.
pub struct Discovery {
    pub sources: Vec<Box<dyn PowerSource>>,
    pub warnings: Vec<String>,
}

struct Estimate {
    info: SourceInfo,
    watts_per_cpu_second: f64,
}

impl PowerSource for Estimate {
    fn info(&self) -> &SourceInfo {
        &self.info
    }
    fn read(&mut self) -> Result<Reading, SourceError> {
        let stat = std::fs::read_to_string("/proc/stat").map_err(|e| SourceError(e.to_string()))?;
        let line = stat.lines().next().unwrap_or_default();
        let v: Vec<f64> = line.split_whitespace().skip(1).filter_map(|x| x.parse().ok()).collect();
        let busy: f64 = [0usize, 1, 2, 5, 6, 7].iter().filter_map(|i| v.get(*i)).sum();
        Ok(Reading::Counter { joules: busy / 100.0 * self.watts_per_cpu_second, wrap_joules: None })
    }
}

/// Finds sources.
pub fn discover(cfg: &DiscoveryConfig) -> Discovery {
    let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1) as f64;
    let tdp = cfg.tdp_override.unwrap_or(Watts(85.0)).0;
    Discovery {
        sources: vec![Box::new(Estimate {
            info: SourceInfo { id: "cpu-estimate".into(), kind: SourceKind::Cpu, method: Method::EstimateCpuTdp, location: "/proc/stat".into(), uncertainty_pct: 50.0, shared_device: false, note: None },
            watts_per_cpu_second: tdp / cpus,
        })],
        warnings: vec![],
    }
}

/// Describes sources.
pub fn describe(discovery: &Discovery) -> Vec<SourceInfo> {
    discovery.sources.iter().map(|s| s.info().clone()).collect()
}
