//! Plausibility flags over a certificate's windows: figures that pass verification (step 8 of
//! `docs/protocol.md` §3.4 refuses what cannot be true) but exceed what the node's device kinds
//! can draw. They do not refuse a window; they mark the certificate (`wattest.plausibility`,
//! `wattest.status_reasons` `plausibility:<flag>`, `ear.status` `contraindicated`: the figures
//! stay, no reward is paid for them).
//!
//! Checked already at verification (refusals): energy against duration × reported power
//! (`mean_w` = energy / duration within 1 %, `max_w` ≥ `mean_w`, so energy ≤ `max_w` × duration),
//! `solar_wh` = Σ solar entries, and 100 kW per source.

use wattest_shared::window::{SourceKind, WindowClaims};

/// Highest GPU board power, W: NVIDIA B200 (SXM) is specified at up to 1000 W and a GB200
/// superchip's GPU at 1200 W (NVIDIA Blackwell datasheets, 2024), the highest of any GPU shipped.
pub const GPU_MAX_TDP_W: f64 = 1200.0;
/// Highest CPU TDP, W: 500 W, the maximum of `cpu_tdp_watts.csv` (CodeCarbon 3.3.2, from Intel
/// and AMD specifications: AMD EPYC 9755 and 9965, Intel Xeon 6960P).
pub const CPU_MAX_TDP_W: f64 = 500.0;
/// Margin over the highest TDP for the peak (`max_w`) of a source: AMD's socket power limit (PPT)
/// is 1.35 × TDP on desktop parts (AMD, "AMD Ryzen processors: PPT, TDC, EDC"). Intel's PL2 can
/// reach about 2 × TDP on desktop parts (i9-13900K: 253 W over 125 W), but the limits here are
/// the highest server TDPs, whose boost limits sit close to TDP; a peak beyond 1.35 × the
/// highest TDP of any part shipped is implausible for one device. The agent's judgement,
/// documented in `docs/protocol.md` §3.4.
pub const TDP_MARGIN: f64 = 1.35;

/// Highest power one machine draws, W: 14 300 W, the maximum system power of an NVIDIA DGX B200
/// (eight B200 GPUs; NVIDIA DGX B200 datasheet, 2024), the largest single system sold as one
/// machine. A node is one machine; racks such as a GB200 NVL72 are many nodes.
pub const NODE_MAX_POWER_W: f64 = 14_300.0;

/// Relative tolerance of the solar check, a share (0.01 = 1 %): a window's solar energy may
/// exceed its consumption by this much before it is flagged, since the solar and consumption
/// meters are not read at the same instants. The project's judgement, as for `TDP_MARGIN`.
pub const SOLAR_TOLERANCE: f64 = 0.01;

/// The flag of solar above consumption (in a window, or in a certificate's totals).
pub const SOLAR_ABOVE_CONSUMPTION: &str = "solar_above_consumption";

/// Whether `solar_wh` exceeds `consumed_wh` (both Wh) by more than [`SOLAR_TOLERANCE`], with a
/// nanowatt-hour of slack for float rounding.
#[must_use]
pub fn solar_exceeds(solar_wh: f64, consumed_wh: f64) -> bool {
    solar_wh > consumed_wh * (1.0 + SOLAR_TOLERANCE) + 1e-9
}

/// Flags raised by `windows`, each once, in first-seen order: `gpu_above_tdp:<source>` when a
/// GPU source's `max_w` (or `mean_w`, or its energy's mean power) exceeds [`GPU_MAX_TDP_W`] × [`TDP_MARGIN`], `cpu_above_tdp:<source>` when
/// a CPU source's exceeds [`CPU_MAX_TDP_W`] × [`TDP_MARGIN`] (a CPU source per socket; a source
/// summing several sockets is flagged too, which is the conservative reading), and
/// `solar_above_consumption` when a window's solar energy exceeds what the node consumed in it
/// ([`WindowClaims::consumed`]) by more than [`SOLAR_TOLERANCE`]: avoided emissions are then
/// claimed for energy the node did not use, and `node_above_limit` when a window's mean
/// consumption (consumed energy over its exact duration) exceeds [`NODE_MAX_POWER_W`] ×
/// [`TDP_MARGIN`] (19 305 W).
#[must_use]
pub fn flags(windows: &[WindowClaims]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for w in windows {
        add_flags(w, &mut out);
    }
    out
}

/// [`flags`] one window at a time: adds those `w` raises to `out`, each once.
pub fn add_flags(w: &WindowClaims, out: &mut Vec<String>) {
    let mut raise = |flag: String| {
        if !out.contains(&flag) {
            out.push(flag);
        }
    };
    if solar_exceeds(w.solar_wh.0, w.consumed().0) {
        raise(SOLAR_ABOVE_CONSUMPTION.to_owned());
    }
    // Mean power of an energy over the window's exact duration, W (0 for an empty window).
    let seconds = (w.end - w.start)
        .num_nanoseconds()
        .map_or(f64::INFINITY, |ns| ns as f64 / 1e9);
    let power = |wh: f64| {
        if seconds > 0.0 {
            wh * 3600.0 / seconds
        } else {
            0.0
        }
    };
    // The whole node, whatever its sources: many sources each under its kind's limit (up to 64
    // of 100 kW are accepted) must not add up to more than a machine can draw.
    if power(w.consumed().0) > NODE_MAX_POWER_W * TDP_MARGIN {
        raise("node_above_limit".to_owned());
    }
    for s in &w.sources {
        let (limit, name) = match s.kind {
            SourceKind::Gpu => (GPU_MAX_TDP_W, "gpu_above_tdp"),
            SourceKind::Cpu => (CPU_MAX_TDP_W, "cpu_above_tdp"),
            _ => continue,
        };
        // The mean, and the energy's own mean power, too: step 8 lets `mean_w` sit up to 1 %
        // above `max_w`, and `energy_wh` 1 % above `mean_w` × duration, so a peak at the limit
        // must not carry more energy than the limit allows.
        if s.max_w.0.max(s.mean_w.0).max(power(s.energy_wh.0)) > limit * TDP_MARGIN {
            raise(format!("{name}:{}", s.source));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{DateTime, Duration, Utc};
    use wattest_shared::window::{Attribution, Method, SourceEnergy};
    use wattest_shared::{WattHours, Watts};

    fn window(kind: SourceKind, source: &str, max_w: f64) -> WindowClaims {
        let start: DateTime<Utc> = DateTime::from_timestamp(1_790_000_000, 0).unwrap_or_default();
        WindowClaims {
            v: 1,
            node_id: "n".into(),
            job_id: None,
            model_id: None,
            seq: 1,
            prev: None,
            start,
            end: start + Duration::seconds(10),
            attribution: Attribution::Machine,
            sources: vec![SourceEnergy {
                source: source.into(),
                kind,
                method: Method::NvmlEnergyCounter,
                energy_wh: WattHours(max_w / 360.0),
                mean_w: Watts(max_w),
                max_w: Watts(max_w),
                samples: 10,
                uncertainty_pct: 5.0,
                shared_device: false,
            }],
            solar_wh: WattHours(0.0),
            is_final: false,
        }
    }

    #[test]
    fn flags_each_source_above_its_kind_limit_once() {
        let windows = vec![
            window(SourceKind::Gpu, "gpu0", 700.0),
            window(SourceKind::Gpu, "gpu1", 1700.0),
            window(SourceKind::Gpu, "gpu1", 1800.0),
            window(SourceKind::Cpu, "cpu0", 675.0),
            window(SourceKind::Cpu, "cpu1", 676.0),
            window(SourceKind::Platform, "psu", 5000.0),
        ];
        assert_eq!(
            flags(&windows),
            vec![
                "gpu_above_tdp:gpu1".to_owned(),
                "cpu_above_tdp:cpu1".to_owned()
            ]
        );
        assert!(flags(&windows[..1]).is_empty());
    }

    #[test]
    fn a_node_drawing_more_than_any_machine_is_flagged_whatever_its_sources() {
        // 12 platform meters of 1.6 kW each: 19.2 kW, under the limit; a 13th crosses it.
        let meter = |n: usize| {
            let mut w = window(SourceKind::Platform, "psu0", 1600.0);
            w.sources = (0..n)
                .map(|i| {
                    let mut s = w.sources[0].clone();
                    s.source = format!("psu{i}");
                    s
                })
                .collect();
            w
        };
        assert!(flags(&[meter(12)]).is_empty());
        assert_eq!(flags(&[meter(13)]), ["node_above_limit"]);
    }

    #[test]
    fn a_mean_above_the_limit_is_flagged_under_a_peak_below_it() {
        // Step 8 lets mean_w sit 1 % above max_w: a peak at the limit, a mean above it.
        let mut w = window(SourceKind::Gpu, "gpu0", GPU_MAX_TDP_W * TDP_MARGIN);
        assert!(flags(std::slice::from_ref(&w)).is_empty(), "at the limit");
        w.sources[0].mean_w = Watts(GPU_MAX_TDP_W * TDP_MARGIN * 1.01);
        assert_eq!(flags(std::slice::from_ref(&w)), ["gpu_above_tdp:gpu0"]);
        // Peak and mean at the limit, the energy 1 % above it (10 s windows).
        w.sources[0].mean_w = Watts(GPU_MAX_TDP_W * TDP_MARGIN);
        w.sources[0].energy_wh = WattHours(GPU_MAX_TDP_W * TDP_MARGIN * 1.01 * 10.0 / 3600.0);
        assert_eq!(flags(&[w]), ["gpu_above_tdp:gpu0"]);
    }

    #[test]
    fn solar_above_consumption_is_flagged_once() {
        // 1000 W of GPU for 10 s: 2.78 Wh consumed.
        let mut w = window(SourceKind::Gpu, "gpu0", 1000.0);
        w.solar_wh = WattHours(w.consumed().0);
        assert!(flags(std::slice::from_ref(&w)).is_empty(), "all of it used");
        w.solar_wh = WattHours(w.consumed().0 * 1.005);
        assert!(
            flags(std::slice::from_ref(&w)).is_empty(),
            "within the tolerance"
        );
        w.solar_wh = WattHours(w.consumed().0 * 1.5);
        assert_eq!(flags(&[w.clone(), w]), ["solar_above_consumption"]);
    }
}
