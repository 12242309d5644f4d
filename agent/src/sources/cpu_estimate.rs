//! The CPU-time × TDP estimate: the labelled last resort for CPU energy where no sensor covers
//! the CPU.
//!
//! Model: `E = TDP_per_socket × sockets × busy_cpu_seconds / logical_cpus`, with
//! `busy_cpu_seconds` = (user + nice + system + irq + softirq + steal) from `/proc/stat` ÷
//! `USER_HZ`. A fully busy host therefore draws its total TDP, an idle one nothing. This follows
//! CodeCarbon's TDP approach (CodeCarbon 3.3.2, which scales TDP by CPU load; it takes 50 % of TDP
//! as the full-load figure, Wattest takes 100 % so that the estimate errs high rather than low).
//! CodeCarbon's own comparison against RAPL measured a per-step error of 21–52 %, hence the
//! 50 % uncertainty ([`ESTIMATE_UNCERTAINTY_PCT`]).
//!
//! The source presents the model as a cumulative counter in joules, so the integrator treats it
//! like any other counter.

use super::procfs::{HostCpuReader, USER_HZ, parse_cpuinfo};
use super::tdp::{TdpMatch, lookup};
use super::{Discovery, PowerSource, Reading, SourceError, SourceInfo};
use std::path::Path;
use wattest_shared::Watts;
use wattest_shared::window::{Method, SourceKind};

/// Relative uncertainty of the estimate, percent: CodeCarbon measured 21–52 % per-step error of
/// its TDP model against RAPL (reference README, CodeCarbon 3.3.2); 50 % covers that range.
pub const ESTIMATE_UNCERTAINTY_PCT: f64 = 50.0;

/// Energy of the model for `busy_ticks` of host CPU time: `tdp × sockets × busy_s / logical`, J.
#[must_use]
pub fn model_joules(
    tdp_per_socket: Watts,
    sockets: u32,
    logical_cpus: u32,
    busy_ticks: u64,
) -> f64 {
    let busy_s = busy_ticks as f64 / USER_HZ;
    tdp_per_socket.0 * f64::from(sockets.max(1)) * busy_s / f64::from(logical_cpus.max(1))
}

/// The estimate as a power source: a joule counter derived from `/proc/stat`.
#[derive(Debug)]
pub struct CpuEstimate {
    info: SourceInfo,
    reader: HostCpuReader,
    tdp_per_socket: Watts,
    sockets: u32,
    logical_cpus: u32,
}

impl CpuEstimate {
    /// An estimate with a known TDP and topology, reading `<procfs_root>/stat`.
    #[must_use]
    pub fn new(
        procfs_root: &Path,
        tdp_per_socket: Watts,
        sockets: u32,
        logical_cpus: u32,
        note: Option<String>,
    ) -> Self {
        let reader = HostCpuReader::new(procfs_root);
        Self {
            info: SourceInfo {
                id: "cpu-estimate".into(),
                kind: SourceKind::Cpu,
                method: Method::EstimateCpuTdp,
                location: reader.path().display().to_string(),
                uncertainty_pct: ESTIMATE_UNCERTAINTY_PCT,
                shared_device: false,
                note,
            },
            reader,
            tdp_per_socket,
            sockets,
            logical_cpus,
        }
    }
}

impl PowerSource for CpuEstimate {
    fn info(&self) -> &SourceInfo {
        &self.info
    }

    fn read(&mut self) -> Result<Reading, SourceError> {
        let t = self.reader.read()?;
        Ok(Reading::Counter {
            joules: model_joules(
                self.tdp_per_socket,
                self.sockets,
                self.logical_cpus,
                t.busy_ticks,
            ),
            wrap_joules: None,
        })
    }
}

/// Adds the estimate to `d`, taking the model name and topology from `<procfs_root>/cpuinfo`
/// and the TDP from `tdp_override` or the table; warns when it falls back to 85 W.
pub fn discover(procfs_root: &Path, tdp_override: Option<Watts>, d: &mut Discovery) {
    let cpuinfo_path = procfs_root.join("cpuinfo");
    let topo = match std::fs::read_to_string(&cpuinfo_path) {
        Ok(text) => parse_cpuinfo(&text),
        Err(e) => {
            d.warnings.push(format!(
                "Cannot read {}: {e}; the CPU estimate assumes one socket and one logical CPU.",
                cpuinfo_path.display()
            ));
            parse_cpuinfo("")
        }
    };
    let model = topo.model_name.clone().unwrap_or_default();
    let (tdp, how) = if let Some(w) = tdp_override {
        (w, format!("TDP {w} per socket given by the operator"))
    } else {
        match lookup(&model) {
            TdpMatch::Exact { name, tdp } => (tdp, format!("TDP {tdp} per socket of {name:?}")),
            TdpMatch::Tokens { name, tdp } => (
                tdp,
                format!("TDP {tdp} per socket of {name:?}, the closest table name to {model:?}"),
            ),
            TdpMatch::Fallback => {
                let tdp = TdpMatch::Fallback.tdp();
                d.warnings.push(format!(
                    "CPU model {model:?} (from {}) is not in the TDP table: the CPU estimate assumes {tdp} per socket, CodeCarbon's value for unknown CPUs. Pass the real TDP to improve it.",
                    cpuinfo_path.display()
                ));
                (
                    tdp,
                    format!("TDP {tdp} per socket assumed: CPU model {model:?} not in the table"),
                )
            }
        }
    };
    let mut source = CpuEstimate::new(
        procfs_root,
        tdp,
        topo.sockets,
        topo.logical_cpus,
        Some(format!(
            "Estimate, not a measurement: {how} × {} socket(s) × busy CPU time / {} logical CPU(s).",
            topo.sockets, topo.logical_cpus
        )),
    );
    if let Err(e) = source.read() {
        d.warnings.push(format!("No CPU estimate: {e}."));
        return;
    }
    d.warnings.push(format!(
        "No sensor covers the CPU: using the CPU-time × TDP estimate ({ESTIMATE_UNCERTAINTY_PCT} % uncertainty)."
    ));
    d.sources.push(Box::new(source));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fully_busy_host_draws_its_tdp() {
        // 2 sockets × 100 W, 8 logical CPUs all busy for 10 s = 80 CPU-seconds = 8000 ticks.
        let j = model_joules(Watts(100.0), 2, 8, 8000);
        assert!((j - 2000.0).abs() < 1e-9, "{j}");
        assert_eq!(model_joules(Watts(100.0), 1, 4, 0), 0.0);
    }
}
