//! Intel/AMD RAPL energy counters through the Linux powercap interface.
//!
//! Zones live under `<sysfs_root>/class/powercap/intel-rapl:N` (packages, `psys`) and
//! `intel-rapl:N:M` (sub-zones). Each has `name` (`package-N`, `dram`, `psys`, `core`, `uncore`),
//! `energy_uj` (cumulative µJ) and `max_energy_range_uj` (the value at which `energy_uj` wraps).
//! Wattest reads `package-N` (kind cpu), `dram` (kind dram) and `psys` (kind platform); `core` and
//! `uncore` are parts of the package and would count twice. AMD Zen exposes its RAPL through the
//! same `intel-rapl` zones since Linux 5.8.
//!
//! Wraps: the integrator corrects one wrap between two samples. Several wraps between two
//! samples cannot be seen, so the sampling period must stay below
//! `max_energy_range_uj / max_power`; a typical range of 262,143,328,850 µJ (≈ 262 kJ) at 250 W
//! wraps every ≈ 1,049 s, so the default 1 s period is far inside the limit, and even a 500 W
//! package allows ≈ 8.7 minutes.
//!
//! Permissions: `energy_uj` is readable by root only since Linux 5.10 (CVE-2020-8694,
//! "PLATYPUS"). An unreadable zone is skipped with a warning naming the file and the fix.

use super::{Discovery, PowerSource, Reading, SourceError, SourceInfo, read_text, read_u64_file};
use std::path::{Path, PathBuf};
use wattest_shared::window::{Method, SourceKind};

/// Relative uncertainty of RAPL counters, percent. RAPL is a model-assisted on-die estimate,
/// not a shunt measurement; published comparisons with external meters on Haswell and later
/// report errors of a few percent for the package domain. 5 % is the agent's judgement, recorded
/// as such in `docs/measurement.md`.
pub const RAPL_UNCERTAINTY_PCT: f64 = 5.0;

/// A RAPL zone read as a joule counter.
#[derive(Debug)]
pub struct RaplZone {
    info: SourceInfo,
    energy_path: PathBuf,
    wrap_joules: Option<f64>,
}

impl RaplZone {
    /// The zone directory `dir` with its source id and kind.
    #[must_use]
    pub fn new(dir: &Path, id: String, kind: SourceKind, wrap_joules: Option<f64>) -> Self {
        let energy_path = dir.join("energy_uj");
        Self {
            info: SourceInfo {
                id,
                kind,
                method: Method::RaplCounter,
                location: energy_path.display().to_string(),
                uncertainty_pct: RAPL_UNCERTAINTY_PCT,
                shared_device: false,
                note: None,
            },
            energy_path,
            wrap_joules,
        }
    }
}

impl PowerSource for RaplZone {
    fn info(&self) -> &SourceInfo {
        &self.info
    }

    fn read(&mut self) -> Result<Reading, SourceError> {
        let uj = read_u64_file(&self.energy_path)?;
        Ok(Reading::Counter {
            joules: uj as f64 * 1e-6,
            wrap_joules: self.wrap_joules,
        })
    }
}

/// The warning for a zone that cannot be read: names the file and, for permission errors, the fix.
#[must_use]
pub fn unreadable_warning(err: &SourceError) -> String {
    let denied = matches!(err, SourceError::Io { source, .. } if source.kind() == std::io::ErrorKind::PermissionDenied);
    if denied {
        format!(
            "RAPL zone skipped: {err}. RAPL is readable by root only since CVE-2020-8694: run the agent as root, or grant read access (`chmod a+r …/energy_uj`, or a udev rule setting MODE=\"0444\" on the powercap zones)."
        )
    } else {
        format!("RAPL zone skipped: {err}.")
    }
}

/// Adds every readable `package-N`, `dram` and `psys` zone under
/// `<sysfs_root>/class/powercap` to `d`.
pub fn discover(sysfs_root: &Path, d: &mut Discovery) {
    let base = sysfs_root.join("class/powercap");
    let Ok(entries) = std::fs::read_dir(&base) else {
        return; // no powercap at all: nothing to say, the CPU estimate will say it
    };
    let mut dirs: Vec<(Vec<u32>, PathBuf)> = entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let rest = name.strip_prefix("intel-rapl:")?;
            let idx: Option<Vec<u32>> = rest.split(':').map(|p| p.parse().ok()).collect();
            Some((idx?, e.path()))
        })
        .collect();
    dirs.sort();
    for (idx, dir) in dirs {
        let Some(name) = read_text(&dir.join("name")) else {
            d.warnings.push(format!(
                "RAPL zone skipped: cannot read {}.",
                dir.join("name").display()
            ));
            continue;
        };
        let parent = idx.first().copied().unwrap_or(0);
        let (id, kind) = match name.as_str() {
            n if n.starts_with("package-") => (format!("rapl:{n}"), SourceKind::Cpu),
            "dram" => (format!("rapl:dram-{parent}"), SourceKind::Dram),
            "psys" => ("rapl:psys".to_string(), SourceKind::Platform),
            _ => continue, // core, uncore: inside the package
        };
        let range_path = dir.join("max_energy_range_uj");
        let wrap_joules = match read_u64_file(&range_path) {
            Ok(uj) if uj > 0 => Some(uj as f64 * 1e-6),
            _ => {
                d.warnings.push(format!(
                    "Cannot read {}: counter wraps of {id} will be taken for resets (no energy counted for that interval).",
                    range_path.display()
                ));
                None
            }
        };
        let mut zone = RaplZone::new(&dir, id, kind, wrap_joules);
        if let Err(e) = zone.read() {
            d.warnings.push(unreadable_warning(&e));
            continue;
        }
        d.sources.push(Box::new(zone));
    }
}
