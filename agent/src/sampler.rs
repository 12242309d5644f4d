//! INTERIM sampler (replaced by the full implementation from the `sources` branch).
#![allow(dead_code)]

use crate::sources::{PowerSource, Reading};
use chrono::{DateTime, Utc};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::time::Duration;
use wattest_shared::window::{Attribution, SourceEnergy};
use wattest_shared::{Joules, WattHours, Watts};

/// Sampler settings.
pub struct SamplerConfig {
    pub period: Duration,
    pub window: Duration,
    pub attribution: Attribution,
    pub job_pid: Option<u32>,
}

/// One window of measurements.
pub struct MeasuredWindow {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub sources: Vec<SourceEnergy>,
    pub solar_wh: WattHours,
}

/// The sampler thread.
pub struct Sampler {
    stop: Arc<AtomicBool>,
    handle: std::thread::JoinHandle<MeasuredWindow>,
}

struct Acc {
    start: DateTime<Utc>,
    first: Vec<f64>,
    last: Vec<f64>,
    max: Vec<f64>,
    prev_t: DateTime<Utc>,
    n: u32,
}

fn read_all(sources: &mut [Box<dyn PowerSource>]) -> Vec<f64> {
    sources.iter_mut().map(|s| match s.read() { Ok(Reading::Counter { joules, .. }) => joules, _ => 0.0 }).collect()
}

fn close(sources: &[Box<dyn PowerSource>], acc: &Acc, end: DateTime<Utc>) -> MeasuredWindow {
    let secs = ((end - acc.start).num_milliseconds() as f64 / 1000.0).max(0.001);
    let entries = sources.iter().enumerate().map(|(i, s)| {
        let info = s.info();
        let j = Joules((acc.last[i] - acc.first[i]).max(0.0));
        let mean = j.mean_power(secs);
        SourceEnergy { source: info.id.clone(), kind: info.kind, method: info.method, energy_wh: j.to_watt_hours(), mean_w: mean, max_w: Watts(acc.max[i].max(mean.0)), samples: acc.n.max(1), uncertainty_pct: info.uncertainty_pct, shared_device: info.shared_device }
    }).collect();
    MeasuredWindow { start: acc.start, end, sources: entries, solar_wh: WattHours::ZERO }
}

impl Sampler {
    /// Starts sampling.
    pub fn start(mut sources: Vec<Box<dyn PowerSource>>, cfg: SamplerConfig) -> (Sampler, mpsc::Receiver<MeasuredWindow>) {
        let (tx, rx) = mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::spawn(move || {
            let now = Utc::now();
            let v = read_all(&mut sources);
            let mut acc = Acc { start: now, first: v.clone(), last: v, max: vec![0.0; sources.len()], prev_t: now, n: 1 };
            loop {
                std::thread::sleep(cfg.period);
                let t = Utc::now();
                let v = read_all(&mut sources);
                let dt = ((t - acc.prev_t).num_milliseconds() as f64 / 1000.0).max(0.001);
                for i in 0..v.len() { acc.max[i] = acc.max[i].max((v[i] - acc.last[i]) / dt); }
                acc.last = v.clone();
                acc.prev_t = t;
                acc.n += 1;
                if flag.load(Ordering::Relaxed) { return close(&sources, &acc, t); }
                if t - acc.start >= chrono::Duration::from_std(cfg.window).unwrap_or_default() {
                    let _ = tx.send(close(&sources, &acc, t));
                    acc = Acc { start: t, first: v.clone(), last: v, max: vec![0.0; sources.len()], prev_t: t, n: 1 };
                }
            }
        });
        (Sampler { stop, handle }, rx)
    }

    /// Stops and returns the final window.
    pub fn finish(self) -> MeasuredWindow {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.join().unwrap_or(MeasuredWindow { start: Utc::now(), end: Utc::now(), sources: vec![], solar_wh: WattHours::ZERO })
    }
}
