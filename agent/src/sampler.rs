//! The sampling thread: reads every source at a fixed period and sends one [`MeasuredWindow`]
//! per window over a channel.
//!
//! Timing: ticks fall on deadlines `t₀ + k·period` of the monotonic clock, so delays do not
//! accumulate; a tick that overran its successors skips them rather than bunching up. All
//! sources of a tick share one timestamp, taken before the reads and rounded to the
//! millisecond, and window timestamps are the start's wall-clock time plus that monotonic
//! offset: interval lengths then add up exactly to `end − start`, the duration the oracle
//! divides by (`WindowClaims::duration_seconds`, millisecond precision).
//!
//! Windows are contiguous: the tick that ends a window is also the first reading of the next,
//! and its interval belongs to the window it ends.
//!
//! Cost: a steady-state tick reads the sensors into buffers the sources own and updates running
//! sums — no allocation, no I/O besides the reads. Closing a window allocates its entries and,
//! with process attribution, scans `/proc` once; windows go over an unbounded channel, so a slow
//! consumer (signer, uploader) never delays a sample.

// Until the CLI (another branch) calls everything here.

use crate::integrator::{SourceIntegrator, WindowTotals};
use crate::sources::procfs::{HostCpuReader, ProcessTree, cpu_share};
use crate::sources::{PowerSource, SourceInfo};
use chrono::{DateTime, Utc};
use std::path::Path;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use wattest_shared::window::{Attribution, SourceEnergy, SourceKind};
use wattest_shared::{Joules, WattHours, Watts};

/// Shortest sampling period accepted; shorter requests are raised to it.
pub const MIN_PERIOD: Duration = Duration::from_millis(50);
/// Default sampling period.
pub const DEFAULT_PERIOD: Duration = Duration::from_secs(1);

/// How the sampler runs.
#[derive(Debug, Clone, PartialEq)]
pub struct SamplerConfig {
    /// Time between samples (default 1 s, at least [`MIN_PERIOD`]).
    pub period: Duration,
    /// Length of a window; rounded to a whole number of periods (at least one).
    pub window: Duration,
    /// Whole host, or the job's process tree's share of CPU and DRAM energy.
    pub attribution: Attribution,
    /// Root of the job's process tree (used with [`Attribution::Process`]).
    pub job_pid: Option<u32>,
}

impl Default for SamplerConfig {
    fn default() -> Self {
        Self {
            period: DEFAULT_PERIOD,
            window: Duration::from_secs(60),
            attribution: Attribution::Machine,
            job_pid: None,
        }
    }
}

/// Energy of every source over one window, ready to be signed.
#[derive(Debug, Clone, PartialEq)]
pub struct MeasuredWindow {
    /// Window start (the previous window's `end`), millisecond precision.
    pub start: DateTime<Utc>,
    /// Window end, millisecond precision, after `start`.
    pub end: DateTime<Utc>,
    /// One entry per source that gave at least one reading in the window.
    pub sources: Vec<SourceEnergy>,
    /// Sum of the `solar` entries.
    pub solar_wh: WattHours,
}

/// A running sampler.
pub struct Sampler {
    stop: Sender<()>,
    thread: JoinHandle<MeasuredWindow>,
}

impl Sampler {
    /// Starts the sampling thread; a MeasuredWindow is sent every `window`.
    #[must_use]
    pub fn start(
        sources: Vec<Box<dyn PowerSource>>,
        cfg: SamplerConfig,
    ) -> (Sampler, Receiver<MeasuredWindow>) {
        Self::start_with_procfs(sources, cfg, Path::new("/proc"))
    }

    /// [`Sampler::start`] with the procfs root used for process attribution given.
    #[must_use]
    pub fn start_with_procfs(
        sources: Vec<Box<dyn PowerSource>>,
        cfg: SamplerConfig,
        procfs_root: &Path,
    ) -> (Sampler, Receiver<MeasuredWindow>) {
        let (tx, rx) = mpsc::channel();
        let (stop_tx, stop_rx) = mpsc::channel();
        let procfs_root = procfs_root.to_path_buf();
        let thread = std::thread::Builder::new()
            .name("wattest-sampler".into())
            .spawn(move || {
                let mut state = State::new(sources, &cfg, &procfs_root);
                state.run(&cfg, &stop_rx, &tx)
            })
            .unwrap_or_else(|e| panic!("cannot spawn the sampling thread: {e}"));
        (
            Sampler {
                stop: stop_tx,
                thread,
            },
            rx,
        )
    }

    /// Takes one last sample now, stops the thread and returns the final (partial) window.
    #[must_use]
    pub fn finish(self) -> MeasuredWindow {
        // The thread also stops when the sender is dropped; a send error means it already has.
        let _ = self.stop.send(());
        match self.thread.join() {
            Ok(w) => w,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }
}

struct ProcessShare {
    tree: ProcessTree,
    host: HostCpuReader,
    last_tree: u64,
    last_host_busy: u64,
}

impl ProcessShare {
    fn new(procfs_root: &Path, pid: u32) -> Self {
        let mut s = Self {
            tree: ProcessTree::new(procfs_root, pid),
            host: HostCpuReader::new(procfs_root),
            last_tree: 0,
            last_host_busy: 0,
        };
        s.last_tree = s.tree.cpu_ticks();
        s.last_host_busy = s.host.read().map(|t| t.busy_ticks).unwrap_or(0);
        s
    }

    /// The job's share of host CPU time since the last call.
    fn share(&mut self) -> f64 {
        let tree = self.tree.cpu_ticks();
        let host = match self.host.read() {
            Ok(t) => t.busy_ticks,
            Err(e) => {
                tracing::warn!(error = %e, "Cannot read host CPU time; the job's share is taken as 1.");
                return 1.0;
            }
        };
        let share = cpu_share(
            tree.saturating_sub(self.last_tree),
            host.saturating_sub(self.last_host_busy),
        );
        self.last_tree = tree;
        self.last_host_busy = host;
        share
    }
}

struct State {
    sources: Vec<Box<dyn PowerSource>>,
    integrators: Vec<SourceIntegrator>,
    failed: Vec<bool>,
    t0: Instant,
    wall0: DateTime<Utc>,
    window_start_ms: i64,
    share: Option<ProcessShare>,
}

impl State {
    fn new(sources: Vec<Box<dyn PowerSource>>, cfg: &SamplerConfig, procfs_root: &Path) -> Self {
        let n = sources.len();
        let share = match (cfg.attribution, cfg.job_pid) {
            (Attribution::Process, Some(pid)) => Some(ProcessShare::new(procfs_root, pid)),
            (Attribution::Process, None) => {
                tracing::warn!(
                    "Process attribution without a job pid: the whole host is reported."
                );
                None
            }
            (Attribution::Machine, _) => None,
        };
        let now = Utc::now();
        let wall0 = DateTime::from_timestamp_millis(now.timestamp_millis()).unwrap_or(now);
        Self {
            sources,
            integrators: vec![SourceIntegrator::new(); n],
            failed: vec![false; n],
            t0: Instant::now(),
            wall0,
            window_start_ms: 0,
            share,
        }
    }

    fn run(
        &mut self,
        cfg: &SamplerConfig,
        stop: &Receiver<()>,
        tx: &Sender<MeasuredWindow>,
    ) -> MeasuredWindow {
        let period = cfg.period.max(MIN_PERIOD);
        let ticks_per_window =
            ((cfg.window.as_secs_f64() / period.as_secs_f64()).round() as u64).max(1);
        self.sample();
        let mut tick: u64 = 0;
        let mut next_boundary = ticks_per_window;
        loop {
            tick += 1;
            let deadline = self.t0 + period.mul_f64(tick as f64);
            let now = Instant::now();
            if deadline > now {
                match stop.recv_timeout(deadline - now) {
                    Err(RecvTimeoutError::Timeout) => {}
                    Ok(()) | Err(RecvTimeoutError::Disconnected) => break,
                }
            } else {
                if !matches!(stop.try_recv(), Err(mpsc::TryRecvError::Empty)) {
                    break;
                }
                // Overran: this tick is late; count from where the clock really is.
                let behind = (now - self.t0).as_secs_f64() / period.as_secs_f64();
                tick = tick.max(behind as u64);
            }
            let ms = self.sample();
            if tick >= next_boundary {
                let w = self.close_window(ms);
                next_boundary = (tick / ticks_per_window + 1) * ticks_per_window;
                // The signer stopped (it failed, and said so): nothing would take more windows.
                if tx.send(w).is_err() {
                    break;
                }
            }
        }
        // Final sample: it must fall after the window start for the window to have a length.
        while self.now_ms() <= self.window_start_ms {
            std::thread::sleep(Duration::from_millis(1));
        }
        let ms = self.sample();
        self.close_window(ms)
    }

    fn now_ms(&self) -> i64 {
        i64::try_from(self.t0.elapsed().as_millis()).unwrap_or(i64::MAX)
    }

    /// Reads every source once; returns the tick's time in ms since `t0`.
    fn sample(&mut self) -> i64 {
        let ms = self.now_ms();
        tick(
            &mut self.sources,
            &mut self.integrators,
            &mut self.failed,
            ms as f64 / 1000.0,
        );
        ms
    }

    fn close_window(&mut self, end_ms: i64) -> MeasuredWindow {
        let start = self.wall0 + chrono::Duration::milliseconds(self.window_start_ms);
        let end = self.wall0 + chrono::Duration::milliseconds(end_ms);
        let seconds = (end_ms - self.window_start_ms) as f64 / 1000.0;
        let share = self.share.as_mut().map(ProcessShare::share);
        let mut entries = Vec::with_capacity(self.sources.len());
        for ((src, integ), failed) in self
            .sources
            .iter()
            .zip(&mut self.integrators)
            .zip(&mut self.failed)
        {
            *failed = false;
            let totals = integ.take_window();
            if totals.samples == 0 {
                tracing::warn!(source = %src.info().id, "No reading in this window; the source is left out of it.");
                continue;
            }
            entries.push(entry(src.info(), &totals, seconds, share));
        }
        self.window_start_ms = end_ms;
        let solar_wh = entries
            .iter()
            .filter(|e| e.kind == SourceKind::Solar)
            .map(|e| e.energy_wh)
            .sum();
        MeasuredWindow {
            start,
            end,
            sources: entries,
            solar_wh,
        }
    }
}

/// One sampling tick: reads every source and adds the reading, taken at `t_s` seconds, to its
/// integrator. A failed reading is skipped (logged once per window per source, tracked in
/// `failed`). No allocation unless a reading fails. The three slices are parallel.
pub fn tick(
    sources: &mut [Box<dyn PowerSource>],
    integrators: &mut [SourceIntegrator],
    failed: &mut [bool],
    t_s: f64,
) {
    crate::metrics::global().samples.inc();
    for ((src, integ), failed) in sources.iter_mut().zip(integrators).zip(failed) {
        match src.read() {
            Ok(r) => {
                integ.push(t_s, r);
            }
            Err(e) => {
                crate::metrics::global().source_failures.inc();
                if !*failed {
                    tracing::warn!(source = %src.info().id, error = %e, "Source reading failed; the sample is skipped.");
                    *failed = true;
                }
            }
        }
    }
}

/// Builds a window entry from a source's totals over a window of `seconds`, scaling CPU and
/// DRAM energy by the job's CPU-time `share` when process attribution is on.
#[must_use]
pub fn entry(
    info: &SourceInfo,
    totals: &WindowTotals,
    seconds: f64,
    share: Option<f64>,
) -> SourceEnergy {
    let scale = match (info.kind, share) {
        (SourceKind::Cpu | SourceKind::Dram, Some(s)) => s,
        _ => 1.0,
    };
    let energy = Joules(totals.energy.0 * scale);
    let energy_wh = energy.to_watt_hours();
    let mean_w = if seconds > 0.0 {
        Watts(energy_wh.0 * 3600.0 / seconds)
    } else {
        Watts::ZERO
    };
    // max ≥ mean holds whenever the window's intervals lie inside it. It can fail only when a
    // source missed the boundary reading and an interval reaching into the previous window was
    // counted here; the mean is then the better bound of the peak.
    let max_w = Watts((totals.max_power.0 * scale).max(mean_w.0));
    SourceEnergy {
        source: info.id.clone(),
        kind: info.kind,
        method: info.method,
        energy_wh,
        mean_w,
        max_w,
        samples: totals.samples.max(1),
        uncertainty_pct: info.uncertainty_pct,
        shared_device: info.shared_device,
    }
}
