//! Power and energy channels of Linux hwmon chips (INA2xx boards, `amd_energy`, GPU drivers).
//!
//! A chip is `<sysfs_root>/class/hwmon/hwmonN/` with a `name` file. Its channels are
//! `energyK_input` (cumulative µJ), `powerK_input` and `powerK_average` (µW), each with an optional
//! `energyK_label` / `powerK_label` (Linux `Documentation/hwmon/sysfs-interface.rst`). When a chip
//! offers both `energyK_input` and `powerK_*` for the same K, the energy counter is taken and the
//! power channel left out, so the rail is not counted twice; a selector naming the power channel
//! then names the energy counter (for the solar source too, so its rail is not also counted as
//! consumption).
//!
//! Channels are chosen with `"name:label"` selectors, where `label` is the channel's `_label` text
//! or, when it has none, the channel's own name (`power1`). With no selector, every power and
//! energy channel is taken.
//!
//! The INA3221 driver has no power files: its channels are bus voltage × current (`inK_input`
//! × `currK_input`, labelled by `inK_label`).
//!
//! Kind: `platform` (a shunt on the supply, the typical INA2xx case), except chips whose driver
//! measures something narrower: `amdgpu`/`nouveau`/`i915`/`xe` → gpu, `amd_energy`/`zenergy`/
//! `zenpower` → cpu. CPU chips are left out beside a RAPL package zone, and their per-core
//! `Ecore*` channels always (both would count the CPU twice).

use super::{
    Discovery, PowerSource, Reading, SourceError, SourceInfo, read_i64_file, read_text,
    read_u64_file, sanitize_id,
};
use std::path::{Path, PathBuf};
use wattest_shared::Watts;
use wattest_shared::window::{Method, SourceKind};

/// Relative uncertainty of an hwmon channel, percent. INA226-class monitors specify ≤ 0.1 % gain
/// error (TI INA226 datasheet, SBOS547), but the shunt resistor's tolerance (commonly 1 %) and its
/// temperature drift dominate: 2 % is the agent's judgement for a board of unknown calibration.
pub const HWMON_UNCERTAINTY_PCT: f64 = 2.0;

/// What an hwmon channel reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChannelKind {
    /// `energyK_input`, cumulative µJ.
    Energy,
    /// `powerK_input` or `powerK_average`, µW.
    Power,
    /// An INA3221 channel, which has no power file: `inK_input` (bus voltage, mV) ×
    /// `currK_input` (mA), K = 1…3 (Linux `Documentation/hwmon/ina3221.rst`).
    VoltageCurrent,
}

/// One discovered channel (before it becomes a source).
#[derive(Debug, Clone, PartialEq)]
pub struct Channel {
    /// Chip directory (`…/hwmonN`).
    pub chip_dir: PathBuf,
    /// Chip `name`.
    pub chip: String,
    /// Channel label (its `_label` text, or e.g. `power1`).
    pub label: String,
    /// The value file (for [`ChannelKind::VoltageCurrent`], the voltage's).
    pub path: PathBuf,
    /// For [`ChannelKind::VoltageCurrent`], the current's file.
    pub current: Option<PathBuf>,
    /// Energy counter or power.
    pub kind: ChannelKind,
    /// For an energy counter with a power channel of the same number (left out in its favour),
    /// that power channel's label: a selector may name the rail by either.
    pub power_label: Option<String>,
}

impl Channel {
    /// Reads the channel: a joule counter, or a power in W. A negative power (hwmon power and
    /// current are signed: a bidirectional monitor reads negative when power flows back) counts
    /// as 0 W.
    ///
    /// # Errors
    /// [`SourceError::Io`] naming the file, or [`SourceError::Parse`] when it is not an integer.
    pub fn read(&self) -> Result<Reading, SourceError> {
        let watts = |w: f64| Reading::Power(Watts(w.max(0.0)));
        Ok(match (self.kind, &self.current) {
            // hwmon energy counters are 64-bit µJ; their wrap is not published, so a wrap reads
            // as a reset (the integrator counts zero for that interval and says so).
            (ChannelKind::Energy, _) => Reading::Counter {
                joules: read_u64_file(&self.path)? as f64 * 1e-6,
                wrap_joules: None,
            },
            (ChannelKind::VoltageCurrent, Some(current)) => {
                let (mv, ma) = (read_i64_file(&self.path)?, read_i64_file(current)?);
                watts(mv as f64 * ma as f64 * 1e-6)
            }
            _ => watts(read_i64_file(&self.path)? as f64 * 1e-6),
        })
    }

    /// True when `selector` (`"name:label"`) names this channel, by its label or, for an energy
    /// counter, by the label of the power channel it stands for.
    #[must_use]
    pub fn matches(&self, selector: &str) -> bool {
        let (name, label) = selector.split_once(':').unwrap_or((selector, ""));
        name == self.chip && (label == self.label || self.power_label.as_deref() == Some(label))
    }
}

/// Lists the power and energy channels of every chip under `<sysfs_root>/class/hwmon`, in chip
/// and channel order. Chips without a readable `name` are skipped with a warning.
pub fn list_channels(sysfs_root: &Path, warnings: &mut Vec<String>) -> Vec<Channel> {
    let base = sysfs_root.join("class/hwmon");
    let Ok(entries) = std::fs::read_dir(&base) else {
        return Vec::new();
    };
    let mut chips: Vec<(u32, PathBuf)> = entries
        .flatten()
        .filter_map(|e| {
            let n = e.file_name().into_string().ok()?;
            Some((n.strip_prefix("hwmon")?.parse().ok()?, e.path()))
        })
        .collect();
    chips.sort();
    let mut out = Vec::new();
    for (_, dir) in chips {
        let Some(chip) = read_text(&dir.join("name")) else {
            warnings.push(format!(
                "hwmon chip skipped: cannot read {}.",
                dir.join("name").display()
            ));
            continue;
        };
        let Ok(files) = std::fs::read_dir(&dir) else {
            continue;
        };
        let mut names: Vec<String> = files
            .flatten()
            .filter_map(|e| e.file_name().into_string().ok())
            .collect();
        names.sort();
        let energy_ks: Vec<&str> = names
            .iter()
            .filter_map(|n| n.strip_prefix("energy")?.strip_suffix("_input"))
            .collect();
        let mut chans: Vec<(u32, u8, Channel)> = Vec::new();
        for n in &names {
            let (k, kind, base_name) = if let Some(k) = n
                .strip_prefix("energy")
                .and_then(|r| r.strip_suffix("_input"))
            {
                (k, ChannelKind::Energy, "energy")
            } else if let Some(k) = n.strip_prefix("power").and_then(|r| {
                r.strip_suffix("_input")
                    .or_else(|| r.strip_suffix("_average"))
            }) {
                if energy_ks.contains(&k) {
                    continue; // the energy counter of the same channel is better
                }
                (k, ChannelKind::Power, "power")
            } else {
                continue;
            };
            let Ok(num) = k.parse::<u32>() else { continue };
            // powerK_input and powerK_average of the same K are one channel: keep _input.
            if kind == ChannelKind::Power
                && n.ends_with("_average")
                && names.contains(&format!("power{k}_input"))
            {
                continue;
            }
            let label_of = |base_name: &str| {
                read_text(&dir.join(format!("{base_name}{k}_label")))
                    .filter(|l| !l.is_empty())
                    .unwrap_or_else(|| format!("{base_name}{k}"))
            };
            let label = label_of(base_name);
            let has_power = |suffix: &str| names.contains(&format!("power{k}_{suffix}"));
            let power_label = (kind == ChannelKind::Energy
                && (has_power("input") || has_power("average")))
            .then(|| label_of("power"));
            let order = u8::from(kind == ChannelKind::Power);
            chans.push((
                num,
                order,
                Channel {
                    chip_dir: dir.clone(),
                    chip: chip.clone(),
                    label,
                    path: dir.join(n),
                    current: None,
                    kind,
                    power_label,
                },
            ));
        }
        if chip == "ina3221" {
            for k in 1..=3u32 {
                let (volts, amps) = (format!("in{k}_input"), format!("curr{k}_input"));
                if names.contains(&volts) && names.contains(&amps) {
                    let label = read_text(&dir.join(format!("in{k}_label")))
                        .filter(|l| !l.is_empty())
                        .unwrap_or_else(|| format!("in{k}"));
                    chans.push((
                        k,
                        1,
                        Channel {
                            chip_dir: dir.clone(),
                            chip: chip.clone(),
                            label,
                            path: dir.join(volts),
                            current: Some(dir.join(amps)),
                            kind: ChannelKind::VoltageCurrent,
                            power_label: None,
                        },
                    ));
                }
            }
        }
        chans.sort_by_key(|(num, order, _)| (*order, *num));
        out.extend(chans.into_iter().map(|(_, _, c)| c));
    }
    out
}

/// The source kind of a chip's channels (see the module documentation).
#[must_use]
pub fn chip_kind(chip: &str) -> SourceKind {
    match chip {
        "amdgpu" | "nouveau" | "i915" | "xe" => SourceKind::Gpu,
        "amd_energy" | "zenergy" | "zenpower" => SourceKind::Cpu,
        _ => SourceKind::Platform,
    }
}

/// Relative uncertainty, percent, of a channel of a chip of source kind `kind`: a shunt monitor's
/// [`HWMON_UNCERTAINTY_PCT`]; the CPU chips read RAPL's model-assisted estimate (or, `zenpower`,
/// the voltage regulator's telemetry) and get [`super::rapl::RAPL_UNCERTAINTY_PCT`]; GPU drivers'
/// on-die telemetry gets NVML's figures for a counter or a power reading
/// ([`super::nvml::COUNTER_UNCERTAINTY_PCT`], [`super::nvml::POWER_UNCERTAINTY_PCT`]).
#[must_use]
pub fn uncertainty_pct(kind: SourceKind, channel: ChannelKind) -> f64 {
    match (kind, channel) {
        (SourceKind::Cpu, _) => super::rapl::RAPL_UNCERTAINTY_PCT,
        (SourceKind::Gpu, ChannelKind::Energy) => super::nvml::COUNTER_UNCERTAINTY_PCT,
        (SourceKind::Gpu, ChannelKind::Power) => super::nvml::POWER_UNCERTAINTY_PCT,
        _ => HWMON_UNCERTAINTY_PCT,
    }
}

/// An hwmon channel as a power source.
#[derive(Debug)]
pub struct HwmonChannel {
    info: SourceInfo,
    channel: Channel,
}

impl HwmonChannel {
    /// A source reading `channel`, with the given id, kind and method.
    #[must_use]
    pub fn new(channel: &Channel, id: String, kind: SourceKind, method: Method) -> Self {
        Self {
            info: SourceInfo {
                id,
                kind,
                method,
                location: channel.path.display().to_string(),
                uncertainty_pct: uncertainty_pct(kind, channel.kind),
                shared_device: false,
                note: None,
            },
            channel: channel.clone(),
        }
    }
}

impl PowerSource for HwmonChannel {
    fn info(&self) -> &SourceInfo {
        &self.info
    }

    fn read(&mut self) -> Result<Reading, SourceError> {
        self.channel.read()
    }
}

/// Adds the selected hwmon channels to `d` (all of them when `selectors` is empty), leaving out
/// the channel named by `solar_selector`, which the solar source reads instead.
pub fn discover(
    sysfs_root: &Path,
    selectors: &[String],
    solar_selector: Option<&str>,
    d: &mut Discovery,
) {
    let channels = list_channels(sysfs_root, &mut d.warnings);
    for sel in selectors {
        if !channels.iter().any(|c| c.matches(sel)) {
            d.warnings.push(format!(
                "hwmon selector {sel:?} matches no power or energy channel under {}.",
                sysfs_root.join("class/hwmon").display()
            ));
        }
    }
    // CPU energy chips read the same silicon as RAPL (`amd_energy`, `zenergy`: the kernel's own
    // RAPL MSRs; `zenpower`: the SVI2 rails of the package), and their per-core channels are
    // parts of the per-socket one: counting them beside RAPL's package, or beside their socket,
    // would count the CPU two or three times.
    let rapl_package = d
        .sources
        .iter()
        .any(|s| s.info().kind == SourceKind::Cpu && s.info().method == Method::RaplCounter);
    let mut used_ids: Vec<String> = Vec::new();
    for c in &channels {
        if solar_selector.is_some_and(|s| c.matches(s)) {
            continue;
        }
        if !selectors.is_empty() && !selectors.iter().any(|s| c.matches(s)) {
            continue;
        }
        if chip_kind(&c.chip) == SourceKind::Cpu {
            if rapl_package {
                d.warnings.push(format!(
                    "hwmon {}:{} left out: the RAPL package zone already measures this CPU.",
                    c.chip, c.label
                ));
                continue;
            }
            if c.label.starts_with("Ecore") {
                continue; // a part of the socket's `Esocket*` channel
            }
        }
        let mut id = sanitize_id(&format!("hwmon:{}:{}", c.chip, c.label));
        if used_ids.contains(&id) {
            // Two chips with the same name: tell them apart by their hwmonN directory.
            let dir = c
                .chip_dir
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            id = sanitize_id(&format!("hwmon:{dir}:{}", c.label));
        }
        let method = match c.kind {
            ChannelKind::Energy => Method::HwmonEnergyCounter,
            ChannelKind::Power | ChannelKind::VoltageCurrent => Method::HwmonPowerIntegration,
        };
        let mut src = HwmonChannel::new(c, id.clone(), chip_kind(&c.chip), method);
        if let Err(e) = src.read() {
            d.warnings.push(format!("hwmon channel skipped: {e}."));
            continue;
        }
        used_ids.push(id);
        d.sources.push(Box::new(src));
    }
}

/// Finds the channel named by `selector` (for the solar source).
#[must_use]
pub fn find_channel(
    sysfs_root: &Path,
    selector: &str,
    warnings: &mut Vec<String>,
) -> Option<Channel> {
    list_channels(sysfs_root, warnings)
        .into_iter()
        .find(|c| c.matches(selector))
}
