//! NVIDIA GPUs through NVML (nvml-wrapper 0.13), behind a small trait so tests use a fake.
//!
//! Preferred: `nvmlDeviceGetTotalEnergyConsumption`, a cumulative counter in mJ since the driver
//! loaded (Volta and newer; updated about every 100 ms). Fallback when a GPU does not support it:
//! `nvmlDeviceGetPowerUsage` in mW, integrated with the trapezoidal rule — a worse method, since
//! that power is itself an average over a short window and sampling it at 1 Hz sees only part of
//! the runtime (Yang et al., SC24, on A100/H100).
//!
//! Selection follows `CUDA_VISIBLE_DEVICES`: indices, `GPU-…` UUIDs (a unique prefix is enough)
//! or `MIG-…` instance UUIDs; as CUDA does, the list stops at the first entry that names no
//! device. NVML numbers GPUs in PCI bus order; CUDA does so only with
//! `CUDA_DEVICE_ORDER=PCI_BUS_ID` (its default puts the fastest GPU first), so index selectors
//! are exact only with that setting — UUIDs are always exact.
//!
//! MIG: power and energy exist only per physical GPU. A GPU in MIG mode is reported whole and
//! flagged `shared_device: true`; its energy is never divided among instances, because NVML
//! gives no per-instance figure to divide by.
//!
//! A missing driver (`Nvml::init()` fails with a library-loading error) is not an error: there
//! is simply no GPU source.

use super::{Discovery, PowerSource, Reading, SourceError, SourceInfo};
use nvml_wrapper::Nvml;
use nvml_wrapper::error::NvmlError;
use std::sync::Arc;
use wattest_shared::Watts;
use wattest_shared::window::{Method, SourceKind};

/// Uncertainty of the NVML energy counter, percent: NVIDIA documents board power readings as
/// accurate to ±5 % (NVML API reference, `nvmlDeviceGetPowerUsage`), and the counter shares
/// that sensor.
pub const COUNTER_UNCERTAINTY_PCT: f64 = 5.0;
/// Uncertainty of NVML power integration, percent: the sensor's ±5 % plus the sampling error of
/// a short-window average read at 1 Hz (Yang et al., SC24); 10 % is the agent's judgement.
pub const POWER_UNCERTAINTY_PCT: f64 = 10.0;

/// An error of the GPU backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GpuError {
    /// The device or the driver cannot answer this query (the energy counter before Volta, or a
    /// driver without the function).
    NotSupported,
    /// Anything else, as text.
    Other(String),
}

impl std::fmt::Display for GpuError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NotSupported => f.write_str("not supported by this device"),
            Self::Other(s) => f.write_str(s),
        }
    }
}

impl From<NvmlError> for GpuError {
    fn from(e: NvmlError) -> Self {
        match e {
            // An older driver without the query's symbol is as unable to answer it as a device
            // without the feature: callers fall back the same way (energy counter → power).
            NvmlError::NotSupported
            | NvmlError::FunctionNotFound
            | NvmlError::FailedToLoadSymbol(_) => Self::NotSupported,
            other => Self::Other(other.to_string()),
        }
    }
}

/// The NVML queries Wattest needs; devices are physical GPUs numbered as NVML does.
pub trait GpuBackend: Send + Sync {
    /// Number of physical GPUs.
    fn device_count(&self) -> Result<u32, GpuError>;
    /// UUID (`GPU-…`) of GPU `index`.
    fn uuid(&self, index: u32) -> Result<String, GpuError>;
    /// Product name of GPU `index`.
    fn name(&self, index: u32) -> Result<String, GpuError>;
    /// True when GPU `index` is in MIG mode.
    fn mig_enabled(&self, index: u32) -> Result<bool, GpuError>;
    /// Index of the physical GPU holding the MIG instance `mig_uuid` (`MIG-…`).
    fn mig_parent_index(&self, mig_uuid: &str) -> Result<u32, GpuError>;
    /// Total energy since the driver loaded, mJ.
    fn total_energy_mj(&self, index: u32) -> Result<u64, GpuError>;
    /// Current power, mW.
    fn power_mw(&self, index: u32) -> Result<u32, GpuError>;
}

/// The real backend over `libnvidia-ml.so.1`.
pub struct NvmlBackend {
    nvml: Nvml,
}

impl NvmlBackend {
    /// Loads NVML; the error text says why it is not available (usually: no driver).
    ///
    /// # Errors
    /// The NVML initialisation error, as text.
    pub fn init() -> Result<Arc<dyn GpuBackend>, String> {
        match Nvml::init() {
            Ok(nvml) => Ok(Arc::new(Self { nvml })),
            Err(e) => Err(e.to_string()),
        }
    }
}

impl GpuBackend for NvmlBackend {
    fn device_count(&self) -> Result<u32, GpuError> {
        Ok(self.nvml.device_count()?)
    }
    fn uuid(&self, index: u32) -> Result<String, GpuError> {
        Ok(self.nvml.device_by_index(index)?.uuid()?)
    }
    fn name(&self, index: u32) -> Result<String, GpuError> {
        Ok(self.nvml.device_by_index(index)?.name()?)
    }
    fn mig_enabled(&self, index: u32) -> Result<bool, GpuError> {
        match self.nvml.device_by_index(index)?.mig_mode() {
            Ok(mode) => Ok(mode.current != 0),
            // GPUs without MIG support are simply not in MIG mode.
            Err(NvmlError::NotSupported) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }
    fn mig_parent_index(&self, mig_uuid: &str) -> Result<u32, GpuError> {
        let mig = self.nvml.device_by_uuid(mig_uuid)?;
        Ok(mig.mig_parent_device()?.index()?)
    }
    fn total_energy_mj(&self, index: u32) -> Result<u64, GpuError> {
        Ok(self
            .nvml
            .device_by_index(index)?
            .total_energy_consumption()?)
    }
    fn power_mw(&self, index: u32) -> Result<u32, GpuError> {
        Ok(self.nvml.device_by_index(index)?.power_usage()?)
    }
}

/// One physical GPU as a power source.
pub struct GpuSource {
    info: SourceInfo,
    backend: Arc<dyn GpuBackend>,
    index: u32,
    counter: bool,
}

impl PowerSource for GpuSource {
    fn info(&self) -> &SourceInfo {
        &self.info
    }

    fn read(&mut self) -> Result<Reading, SourceError> {
        let err = |e: GpuError| SourceError::Nvml(format!("GPU {}: {e}", self.index));
        if self.counter {
            let mj = self.backend.total_energy_mj(self.index).map_err(err)?;
            Ok(Reading::Counter {
                joules: mj as f64 * 1e-3,
                // A u64 of mJ does not wrap in practice (5.8e11 years at 1 kW); a driver reload
                // resets it, which the integrator detects.
                wrap_joules: None,
            })
        } else {
            let mw = self.backend.power_mw(self.index).map_err(err)?;
            Ok(Reading::Power(Watts(f64::from(mw) * 1e-3)))
        }
    }
}

/// Resolves `CUDA_VISIBLE_DEVICES` to physical GPU indices (deduplicated, in order). Stops at
/// the first entry that names no device, with a warning, as CUDA does.
pub fn select_devices(
    backend: &dyn GpuBackend,
    count: u32,
    visible: Option<&str>,
    warnings: &mut Vec<String>,
) -> Vec<u32> {
    let Some(visible) = visible else {
        return (0..count).collect();
    };
    let uuids: Vec<Option<String>> = (0..count).map(|i| backend.uuid(i).ok()).collect();
    let mut out: Vec<u32> = Vec::new();
    for entry in visible.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let found = if let Ok(i) = entry.parse::<u32>() {
            (i < count).then_some(i)
        } else if entry.starts_with("MIG-") {
            backend.mig_parent_index(entry).ok()
        } else if entry.starts_with("GPU-") {
            let hits: Vec<u32> = (0..count)
                .filter(|&i| {
                    uuids[i as usize]
                        .as_deref()
                        .is_some_and(|u| u.starts_with(entry))
                })
                .collect();
            (hits.len() == 1).then(|| hits[0])
        } else {
            None
        };
        match found {
            Some(i) => {
                if !out.contains(&i) {
                    out.push(i);
                }
            }
            None => {
                warnings.push(format!(
                    "CUDA_VISIBLE_DEVICES entry {entry:?} names no GPU: it and the entries after it are ignored, as CUDA does."
                ));
                break;
            }
        }
    }
    out
}

/// Adds the selected GPUs to `d`.
pub fn discover(backend: Arc<dyn GpuBackend>, visible: Option<&str>, d: &mut Discovery) {
    let count = match backend.device_count() {
        Ok(n) => n,
        Err(e) => {
            d.warnings.push(format!(
                "No NVIDIA GPU source: NVML cannot count devices ({e})."
            ));
            return;
        }
    };
    for index in select_devices(&*backend, count, visible, &mut d.warnings) {
        let uuid = backend
            .uuid(index)
            .unwrap_or_else(|_| "unknown UUID".into());
        let name = backend.name(index).unwrap_or_else(|_| "NVIDIA GPU".into());
        let mig = match backend.mig_enabled(index) {
            Ok(m) => m,
            Err(e) => {
                d.warnings.push(format!(
                    "GPU {index}: cannot query MIG mode ({e}); assuming the GPU is not shared."
                ));
                false
            }
        };
        let (counter, method, uncertainty_pct) = match backend.total_energy_mj(index) {
            Ok(_) => (true, Method::NvmlEnergyCounter, COUNTER_UNCERTAINTY_PCT),
            Err(GpuError::NotSupported) => match backend.power_mw(index) {
                Ok(_) => (false, Method::NvmlPowerIntegration, POWER_UNCERTAINTY_PCT),
                Err(e) => {
                    d.warnings.push(format!(
                        "GPU {index} ({uuid}) skipped: no energy counter and power reading failed ({e})."
                    ));
                    continue;
                }
            },
            Err(e) => {
                d.warnings.push(format!(
                    "GPU {index} ({uuid}) skipped: energy counter failed ({e})."
                ));
                continue;
            }
        };
        let mut notes = Vec::new();
        if !counter {
            notes.push("No energy counter on this GPU (before Volta): power readings integrated.");
        }
        if mig {
            notes.push("MIG mode: the figure is the whole physical GPU, shared with other instances, not divided.");
        }
        d.sources.push(Box::new(GpuSource {
            info: SourceInfo {
                id: format!("gpu{index}"),
                kind: SourceKind::Gpu,
                method,
                location: format!("{name} {uuid}"),
                uncertainty_pct,
                shared_device: mig,
                note: (!notes.is_empty()).then(|| notes.join(" ")),
            },
            backend: Arc::clone(&backend),
            index,
            counter,
        }));
    }
}
