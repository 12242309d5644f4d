//! The telemetry window: the evidence an agent signs and the oracle verifies.
//!
//! A window is the energy one node used between `start` and `end`, broken down by power source.
//! It travels as the payload of a compact JWS with `typ` = [`WINDOW_TYP`]. Field names, units and
//! every rejection rule are specified in `docs/protocol.md`; this module is that contract in Rust.

use crate::units::{WattHours, Watts};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Protocol version carried in every window (`"v"`).
pub const PROTOCOL_VERSION: u32 = 1;
/// JWS `typ` of a telemetry window.
pub const WINDOW_TYP: &str = "wattest-window+jwt";
/// Largest number of source entries in one window.
pub const MAX_SOURCES: usize = 64;
/// Longest window accepted, in seconds (one day).
pub const MAX_WINDOW_SECONDS: i64 = 86_400;
/// Longest `job_id` or `model_id`, in characters (`docs/protocol.md` §3.1).
pub const MAX_LABEL_CHARS: usize = 128;

/// Whether `text` is written as protocol.md's conventions require of a window's times: RFC 3339
/// in UTC with an upper-case `T` and `Z`, `YYYY-MM-DDThh:mm:ss` and optionally `.` and 1 to 9
/// fraction digits (nanoseconds, what the claims keep), e.g. `2026-11-23T10:00:00.000Z`. An
/// offset (`+00:00`, `-00:00`), a space or lower-case `t`/`z`, a signed or 5-digit year, or a
/// `UTC` suffix (all of which chrono reads) are refused. Only the shape is checked here; the
/// values (month 1–12, …) are checked by chrono when the time is read.
#[must_use]
pub fn is_utc_timestamp(text: &str) -> bool {
    let b = text.as_bytes();
    let digits = |range: std::ops::Range<usize>| b[range].iter().all(u8::is_ascii_digit);
    if b.len() < 20 || b.last() != Some(&b'Z') {
        return false;
    }
    let shape = digits(0..4)
        && b[4] == b'-'
        && digits(5..7)
        && b[7] == b'-'
        && digits(8..10)
        && b[10] == b'T'
        && digits(11..13)
        && b[13] == b':'
        && digits(14..16)
        && b[16] == b':'
        && digits(17..19);
    let fraction = &b[19..b.len() - 1];
    shape
        && match fraction.split_first() {
            None => true,
            Some((b'.', f)) => (1..=9).contains(&f.len()) && f.iter().all(u8::is_ascii_digit),
            Some(_) => false,
        }
}

/// Reads a window time written as [`is_utc_timestamp`] requires, in the same pass as the rest
/// of the claims (the payload is not read twice).
///
/// # Errors
/// A serde error naming the written form when it is not `YYYY-MM-DDThh:mm:ss[.fraction]Z` or
/// not a real instant.
fn utc_timestamp<'de, D: serde::Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
    let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
    if !is_utc_timestamp(&text) {
        return Err(serde::de::Error::custom(format!(
            "{text:?} is not an RFC 3339 UTC time written YYYY-MM-DDThh:mm:ss[.fraction]Z"
        )));
    }
    DateTime::parse_from_rfc3339(&text)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|err| serde::de::Error::custom(format!("{text:?}: {err}")))
}

/// Whether `label` may be a window's `job_id` or `model_id`: 1 to [`MAX_LABEL_CHARS`]
/// characters, none of them a control character (`docs/protocol.md` §3.1). The oracle refuses
/// other labels (`malformed_payload`); the agent refuses them on its command line.
#[must_use]
pub fn is_valid_label(label: &str) -> bool {
    !label.is_empty()
        && label.chars().count() <= MAX_LABEL_CHARS
        && !label.chars().any(char::is_control)
}

/// What a source measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum SourceKind {
    /// A GPU (one physical device).
    Gpu,
    /// CPU packages (RAPL `package-N`, or the CPU-time × TDP estimate).
    Cpu,
    /// Memory (RAPL `dram`).
    Dram,
    /// A whole platform or board (RAPL `psys`, a Pi PMIC, an INA sensor on the supply).
    Platform,
    /// Energy produced by a local solar panel (not consumed).
    Solar,
}

impl SourceKind {
    /// The wire name (`gpu`, `cpu`, `dram`, `platform`, `solar`).
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Gpu => "gpu",
            Self::Cpu => "cpu",
            Self::Dram => "dram",
            Self::Platform => "platform",
            Self::Solar => "solar",
        }
    }
}

/// How a source's energy was obtained. Counters are exact up to the sensor's own accuracy;
/// power integration and estimates carry more uncertainty.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Method {
    /// NVML `nvmlDeviceGetTotalEnergyConsumption` counter deltas (mJ, Volta and newer).
    NvmlEnergyCounter,
    /// Trapezoidal integration of NVML `nvmlDeviceGetPowerUsage` (mW).
    NvmlPowerIntegration,
    /// RAPL powercap `energy_uj` counter deltas with wrap correction.
    RaplCounter,
    /// hwmon `energy*_input` counter deltas (µJ).
    HwmonEnergyCounter,
    /// Trapezoidal integration of hwmon `power*_input` / `power*_average` (µW).
    HwmonPowerIntegration,
    /// Trapezoidal integration of the Raspberry Pi 5 PMIC rails (Σ V × I from `vcgencmd pmic_read_adc`).
    PiPmicIntegration,
    /// CPU time × TDP model: a labelled estimate, used only where no sensor covers the CPU.
    EstimateCpuTdp,
    /// Trapezoidal integration of solar power read from hwmon, a file or a command.
    SolarPowerIntegration,
    /// A constant solar power declared by the operator (`--solar-watts`): a declaration, not a measurement.
    SolarDeclaredConstant,
}

impl Method {
    /// The wire name, e.g. `estimate_cpu_tdp`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NvmlEnergyCounter => "nvml_energy_counter",
            Self::NvmlPowerIntegration => "nvml_power_integration",
            Self::RaplCounter => "rapl_counter",
            Self::HwmonEnergyCounter => "hwmon_energy_counter",
            Self::HwmonPowerIntegration => "hwmon_power_integration",
            Self::PiPmicIntegration => "pi_pmic_integration",
            Self::EstimateCpuTdp => "estimate_cpu_tdp",
            Self::SolarPowerIntegration => "solar_power_integration",
            Self::SolarDeclaredConstant => "solar_declared_constant",
        }
    }

    /// True for methods that are estimates or declarations rather than sensor readings.
    #[must_use]
    pub fn is_estimate(self) -> bool {
        matches!(self, Self::EstimateCpuTdp | Self::SolarDeclaredConstant)
    }
}

/// How a job's share of the host's energy is decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Attribution {
    /// The whole host's energy while the job runs (as CodeCarbon does).
    #[default]
    Machine,
    /// Host CPU energy × the job's process tree's share of CPU time (as Kepler and Scaphandre do).
    Process,
}

impl Attribution {
    /// The wire name (`machine` or `process`).
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Machine => "machine",
            Self::Process => "process",
        }
    }
}

/// One source's energy over the window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct SourceEnergy {
    /// Stable id of the source on this node, e.g. `gpu0`, `rapl:package-0`, `cpu-estimate`.
    /// 1–64 characters from `[A-Za-z0-9._:/-]`.
    pub source: String,
    /// What it measures.
    pub kind: SourceKind,
    /// How the energy was obtained.
    pub method: Method,
    /// Energy over the window, Wh (≥ 0).
    pub energy_wh: WattHours,
    /// Mean power over the window: `energy_wh × 3600 / (end − start)`, W.
    pub mean_w: Watts,
    /// Highest power seen between two samples in the window, W (≥ `mean_w` within 1 %).
    pub max_w: Watts,
    /// Number of sensor readings in the window (≥ 1).
    pub samples: u32,
    /// Relative standard uncertainty of `energy_wh`, percent (0–100), as the agent estimates it.
    pub uncertainty_pct: f64,
    /// True when the device is shared with other tenants (a MIG instance reporting its whole
    /// GPU's energy): the figure covers more than this node's job.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub shared_device: bool,
}

/// The payload of a telemetry window JWS.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct WindowClaims {
    /// Protocol version, [`PROTOCOL_VERSION`].
    pub v: u32,
    /// Node id assigned at enrollment (UUID, lowercase hyphenated).
    pub node_id: String,
    /// Job this window belongs to; absent for a node's own continuous windows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_id: Option<String>,
    /// Model being trained or served (free text chosen by the user, 1–128 characters without
    /// control characters, e.g. `llama-3-8b-ft`); absent when not given. Copied into the
    /// certificate as `wattest.model_id` (EU AI Act Annex XI asks energy per model).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_id: Option<String>,
    /// Position in the node's chain: 1 for the node's first window, then +1 each window.
    pub seq: u64,
    /// base64url SHA-256 of the previous window's compact JWS; absent when `seq` = 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prev: Option<String>,
    /// Window start, RFC 3339 UTC written with `T` and `Z` ([`is_utc_timestamp`]).
    #[serde(deserialize_with = "utc_timestamp")]
    pub start: DateTime<Utc>,
    /// Window end, RFC 3339 UTC written with `T` and `Z` (after `start`).
    #[serde(deserialize_with = "utc_timestamp")]
    pub end: DateTime<Utc>,
    /// How the job's share of host energy was attributed.
    pub attribution: Attribution,
    /// Energy per source (each a JSON object: [`crate::json::objects`]).
    #[serde(deserialize_with = "crate::json::objects")]
    pub sources: Vec<SourceEnergy>,
    /// Solar energy produced in the window, Wh: the sum of the `solar` entries.
    pub solar_wh: WattHours,
    /// True for the last window of a job (or of a certification period): the oracle then issues
    /// the certificate.
    #[serde(rename = "final")]
    pub is_final: bool,
}

impl WindowClaims {
    /// Window length in seconds (milliseconds precision).
    #[must_use]
    pub fn duration_seconds(&self) -> f64 {
        (self.end - self.start).num_milliseconds() as f64 / 1000.0
    }

    /// Energy the node consumed in the window: Σ gpu + (Σ platform if any platform entry exists,
    /// else Σ cpu + Σ dram). A platform meter already covers the CPU and memory, so they are not
    /// added twice. Solar entries are production, not consumption.
    #[must_use]
    pub fn consumed(&self) -> WattHours {
        consumed_energy(self.sources.iter().map(|s| (s.kind, s.energy_wh)))
    }
}

/// The consumption rule of [`WindowClaims::consumed`] over `(kind, energy)` pairs, shared by the
/// window and the certificate so both count the same way.
#[must_use]
pub fn consumed_energy<E: std::iter::Sum<E>>(
    entries: impl Iterator<Item = (SourceKind, E)> + Clone,
) -> E {
    let has_platform = entries.clone().any(|(k, _)| k == SourceKind::Platform);
    entries
        .filter(|(k, _)| match k {
            SourceKind::Gpu => true,
            SourceKind::Platform => has_platform,
            SourceKind::Cpu | SourceKind::Dram => !has_platform,
            SourceKind::Solar => false,
        })
        .map(|(_, e)| e)
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(kind: SourceKind, wh: f64) -> SourceEnergy {
        SourceEnergy {
            source: kind.as_str().into(),
            kind,
            method: Method::RaplCounter,
            energy_wh: WattHours(wh),
            mean_w: Watts(0.0),
            max_w: Watts(0.0),
            samples: 1,
            uncertainty_pct: 1.0,
            shared_device: false,
        }
    }

    #[test]
    fn consumption_counts_platform_instead_of_cpu_and_dram() {
        let t = DateTime::<Utc>::UNIX_EPOCH;
        let mut w = WindowClaims {
            v: 1,
            node_id: "n".into(),
            job_id: None,
            model_id: None,
            seq: 1,
            prev: None,
            start: t,
            end: t + chrono::Duration::seconds(10),
            attribution: Attribution::Machine,
            sources: vec![
                entry(SourceKind::Cpu, 2.0),
                entry(SourceKind::Dram, 1.0),
                entry(SourceKind::Gpu, 5.0),
                entry(SourceKind::Solar, 9.0),
            ],
            solar_wh: WattHours(9.0),
            is_final: false,
        };
        assert_eq!(w.consumed(), WattHours(8.0));
        w.sources.push(entry(SourceKind::Platform, 4.0));
        assert_eq!(w.consumed(), WattHours(9.0));
        assert_eq!(w.duration_seconds(), 10.0);
    }

    #[test]
    fn wire_names_are_stable() {
        let json = serde_json::to_value(entry(SourceKind::Dram, 1.5)).expect("json");
        assert_eq!(json["kind"], "dram");
        assert_eq!(json["method"], "rapl_counter");
        assert!(json.get("shared_device").is_none());
        for m in [
            Method::NvmlEnergyCounter,
            Method::EstimateCpuTdp,
            Method::PiPmicIntegration,
            Method::SolarDeclaredConstant,
        ] {
            assert_eq!(serde_json::to_value(m).expect("json"), m.as_str());
        }
        let bad = r#"{"source":"x","kind":"gpu","method":"guess","energy_wh":1,"mean_w":1,"max_w":1,"samples":1,"uncertainty_pct":1}"#;
        assert!(serde_json::from_str::<SourceEnergy>(bad).is_err());
    }
}
