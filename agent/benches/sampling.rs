//! Cost of one sampling tick with a few sources, and of the integrator alone.
//!
//! The tick reads a RAPL zone and an hwmon channel from a synthetic sysfs tree (tmpfs-like: a
//! temporary directory), the CPU estimate from the real `/proc/stat`, and a fake GPU counter,
//! through the same `sampler::tick` the sampling thread runs.

#![allow(dead_code, missing_docs, unused_imports, clippy::unwrap_used)]

use wattest_agent::integrator;
use wattest_agent::sampler;
use wattest_agent::sources;

use criterion::{Criterion, black_box, criterion_group, criterion_main};
use integrator::SourceIntegrator;
use sources::nvml::{GpuBackend, GpuError};
use sources::{Discovery, DiscoveryConfig, PowerSource, Reading, discover_with};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use wattest_shared::Watts;

struct FakeGpu(AtomicU64);

impl GpuBackend for FakeGpu {
    fn device_count(&self) -> Result<u32, GpuError> {
        Ok(1)
    }
    fn uuid(&self, _: u32) -> Result<String, GpuError> {
        Ok("GPU-bench".into())
    }
    fn name(&self, _: u32) -> Result<String, GpuError> {
        Ok("Bench GPU".into())
    }
    fn mig_enabled(&self, _: u32) -> Result<bool, GpuError> {
        Ok(false)
    }
    fn mig_parent_index(&self, _: &str) -> Result<u32, GpuError> {
        Err(GpuError::NotSupported)
    }
    fn total_energy_mj(&self, _: u32) -> Result<u64, GpuError> {
        Ok(self.0.fetch_add(250, Ordering::Relaxed))
    }
    fn power_mw(&self, _: u32) -> Result<u32, GpuError> {
        Ok(250_000)
    }
}

fn write(root: &Path, rel: &str, text: &str) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, text).unwrap();
}

fn bench(c: &mut Criterion) {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    write(root, "sys/class/powercap/intel-rapl:0/name", "package-0\n");
    write(
        root,
        "sys/class/powercap/intel-rapl:0/energy_uj",
        "123456789\n",
    );
    write(
        root,
        "sys/class/powercap/intel-rapl:0/max_energy_range_uj",
        "262143328850\n",
    );
    write(root, "sys/class/hwmon/hwmon0/name", "ina226\n");
    write(root, "sys/class/hwmon/hwmon0/power1_input", "5250000\n");
    let cfg = DiscoveryConfig {
        sysfs_root: root.join("sys"),
        ..DiscoveryConfig::default()
    };
    let gpu: Arc<dyn GpuBackend> = Arc::new(FakeGpu(AtomicU64::new(0)));
    let Discovery { mut sources, .. } = discover_with(&cfg, Ok(gpu), Path::new("/nonexistent"));
    // The real /proc/stat, through the CPU estimate (not discovered: RAPL covers the CPU).
    sources.push(Box::new(sources::cpu_estimate::CpuEstimate::new(
        Path::new("/proc"),
        Watts(85.0),
        1,
        2,
        None,
    )));
    let names: Vec<String> = sources.iter().map(|s| s.info().id.clone()).collect();
    eprintln!("tick sources: {names:?}");
    assert_eq!(sources.len(), 4);

    let mut integrators = vec![SourceIntegrator::new(); sources.len()];
    let mut failed = vec![false; sources.len()];
    let mut t = 0.0;
    c.bench_function("tick_4_sources", |b| {
        b.iter(|| {
            t += 1.0;
            sampler::tick(&mut sources, &mut integrators, &mut failed, black_box(t));
        });
    });
    assert!(
        !failed.iter().any(|f| *f),
        "a source failed during the benchmark"
    );

    let mut integ = SourceIntegrator::new();
    let mut t = 0.0;
    c.bench_function("integrator_push_counter", |b| {
        b.iter(|| {
            t += 1.0;
            integ.push(
                t,
                black_box(Reading::Counter {
                    joules: (t * 97.0) % 1000.0,
                    wrap_joules: Some(1000.0),
                }),
            )
        });
    });
    let mut integ = SourceIntegrator::new();
    let mut t = 0.0;
    c.bench_function("integrator_push_power", |b| {
        b.iter(|| {
            t += 1.0;
            integ.push(t, black_box(Reading::Power(Watts(t % 300.0))))
        });
    });
    c.bench_function("integrator_take_window", |b| {
        b.iter(|| black_box(integ.take_window()));
    });
    let mut one: Vec<Box<dyn PowerSource>> = sources.drain(3..).collect();
    let mut i1 = vec![SourceIntegrator::new()];
    let mut f1 = vec![false];
    let mut t = 0.0;
    c.bench_function("tick_proc_stat_only", |b| {
        b.iter(|| {
            t += 1.0;
            sampler::tick(&mut one, &mut i1, &mut f1, t);
        });
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
