//! Turns a source's readings into energy per window: pure arithmetic, timestamps passed in.
//!
//! Counters: the energy of an interval is the counter delta, corrected for one wrap when the
//! wrap value is known (`Δ = wrap − prev + cur` when `cur < prev`). A counter that goes back
//! without a known wrap value was reset (driver reload, reboot): the interval counts zero and
//! the reset is flagged — never a negative energy, never a guess.
//!
//! Power: the trapezoidal rule, `E = (P₀ + P₁)/2 × Δt` per interval. It is exact when power is
//! linear between samples. For power with a bounded second derivative, the error over a span
//! `T` sampled every `h` is at most `T·h²/12 · max|P''|` (the composite trapezoidal rule's error
//! term; e.g. Burden & Faires, *Numerical Analysis*, §4.4). Negative power is taken as 0.
//!
//! Per interval, the power is `ΔE/Δt` for counters and `max(P₀, P₁)` for power readings; a
//! window's `max_power` is the highest of them, so that it is never below the window's mean.

// Until the CLI (another branch) calls everything here.

use crate::sources::Reading;
use wattest_shared::{Joules, Watts};

/// The energy of one counter interval.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CounterDelta {
    /// Energy of the interval (≥ 0).
    pub energy: Joules,
    /// The counter wrapped once in the interval and was corrected.
    pub wrapped: bool,
    /// The counter went back with no wrap value known: a reset, counted as zero.
    pub reset: bool,
}

/// Energy between two counter values `prev` and `cur` (J), with the wrap value when known. A
/// counter that went back is read as one wrap only when the corrected delta, `range − prev +
/// cur`, is at most half the range: between two samples a counter cannot plausibly advance
/// further (a RAPL range of ~262 kJ is ~500 s at 500 W; the sampling period is seconds).
/// Anything else is a reset (a driver reload, a counter that stepped back), counted as zero,
/// rather than a near-full wrap that would credit most of the range in one interval.
#[must_use]
pub fn counter_delta(prev: f64, cur: f64, wrap: Option<f64>) -> CounterDelta {
    if cur >= prev {
        return CounterDelta {
            energy: Joules(cur - prev),
            wrapped: false,
            reset: false,
        };
    }
    match wrap {
        Some(range) if range > 0.0 && prev <= range && range - prev + cur <= range / 2.0 => {
            CounterDelta {
                energy: Joules(range - prev + cur),
                wrapped: true,
                reset: false,
            }
        }
        _ => CounterDelta {
            energy: Joules::ZERO,
            wrapped: false,
            reset: true,
        },
    }
}

/// Trapezoidal energy of an interval of `dt_s` seconds between powers `p0` and `p1`
/// (negative powers taken as 0).
#[must_use]
pub fn trapezoid(p0: Watts, p1: Watts, dt_s: f64) -> Joules {
    Joules((p0.0.max(0.0) + p1.0.max(0.0)) * 0.5 * dt_s)
}

/// One interval between two accepted readings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Interval {
    /// Energy of the interval.
    pub energy: Joules,
    /// Its length, s (> 0).
    pub seconds: f64,
    /// Its power: ΔE/Δt for counters, max(P₀, P₁) for power readings.
    pub power: Watts,
    /// A counter wrap was corrected.
    pub wrapped: bool,
    /// A counter reset (or a change of reading kind) made the interval count zero.
    pub reset: bool,
}

/// Energy of one source over a window.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct WindowTotals {
    /// Energy of the intervals that ended in the window.
    pub energy: Joules,
    /// Sum of those intervals' lengths, s.
    pub seconds: f64,
    /// Highest interval power (0 when the window has no interval).
    pub max_power: Watts,
    /// Readings accepted in the window.
    pub samples: u32,
    /// Wraps corrected.
    pub wraps: u32,
    /// Resets seen (intervals counted as zero).
    pub resets: u32,
}

/// Integrates one source's readings as they come; `take_window` closes a window.
///
/// Keeps only the last reading and running sums: no allocation.
#[derive(Debug, Clone, Default)]
pub struct SourceIntegrator {
    last: Option<(f64, Reading)>,
    acc: WindowTotals,
}

impl SourceIntegrator {
    /// An integrator with no reading yet.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a reading taken at `t_s` seconds (any fixed origin, increasing). The first reading
    /// gives no interval. A reading not after the last one is ignored (`None`, not counted),
    /// so that every interval has a positive length.
    pub fn push(&mut self, t_s: f64, reading: Reading) -> Option<Interval> {
        let Some((t0, r0)) = self.last else {
            self.last = Some((t_s, reading));
            self.acc.samples += 1;
            return None;
        };
        let dt = t_s - t0;
        if dt <= 0.0 || !dt.is_finite() {
            return None;
        }
        let interval = match (r0, reading) {
            (
                Reading::Counter { joules: prev, .. },
                Reading::Counter {
                    joules: cur,
                    wrap_joules,
                },
            ) => {
                let d = counter_delta(prev, cur, wrap_joules);
                Interval {
                    energy: d.energy,
                    seconds: dt,
                    power: Watts(d.energy.0 / dt),
                    wrapped: d.wrapped,
                    reset: d.reset,
                }
            }
            (Reading::Power(p0), Reading::Power(p1)) => Interval {
                energy: trapezoid(p0, p1, dt),
                seconds: dt,
                power: Watts(p0.0.max(p1.0).max(0.0)),
                wrapped: false,
                reset: false,
            },
            // A source that changes its kind of reading starts over.
            _ => Interval {
                energy: Joules::ZERO,
                seconds: dt,
                power: Watts::ZERO,
                wrapped: false,
                reset: true,
            },
        };
        self.last = Some((t_s, reading));
        let acc = &mut self.acc;
        acc.energy += interval.energy;
        acc.seconds += interval.seconds;
        if interval.power.0 > acc.max_power.0 {
            acc.max_power = interval.power;
        }
        acc.samples += 1;
        acc.wraps += u32::from(interval.wrapped);
        acc.resets += u32::from(interval.reset);
        Some(interval)
    }

    /// Returns the window's totals and starts the next window, keeping the last reading so the
    /// next window's first interval starts at this boundary.
    pub fn take_window(&mut self) -> WindowTotals {
        std::mem::take(&mut self.acc)
    }

    /// True once a reading has been accepted.
    #[must_use]
    pub fn has_reading(&self) -> bool {
        self.last.is_some()
    }
}

/// Integrates a whole trace of `(t_s, reading)` as one window.
#[must_use]
pub fn integrate(trace: &[(f64, Reading)]) -> WindowTotals {
    let mut i = SourceIntegrator::new();
    for &(t, r) in trace {
        i.push(t, r);
    }
    i.take_window()
}

/// Bound of the composite trapezoidal rule's error over `span_s` seconds sampled every `h_s`
/// seconds, for power whose second derivative is at most `max_p2` W/s²: `T·h²/12·max|P''|`, J.
#[must_use]
pub fn trapezoid_error_bound(span_s: f64, h_s: f64, max_p2: f64) -> Joules {
    Joules(span_s * h_s * h_s / 12.0 * max_p2.abs())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(j: f64, wrap: Option<f64>) -> Reading {
        Reading::Counter {
            joules: j,
            wrap_joules: wrap,
        }
    }

    #[test]
    fn counter_wrap_is_corrected() {
        let d = counter_delta(90.0, 5.0, Some(100.0));
        assert_eq!(d.energy, Joules(15.0));
        assert!(d.wrapped && !d.reset);
    }

    #[test]
    fn counter_reset_counts_zero() {
        let d = counter_delta(90.0, 5.0, None);
        assert_eq!(d.energy, Joules::ZERO);
        assert!(d.reset);
        // A step back with the range known is no wrap either: one would credit nearly the
        // whole range (262 kJ for a RAPL package) in one interval.
        let d = counter_delta(10.0, 9.0, Some(262_143.0));
        assert_eq!(d.energy, Joules::ZERO);
        assert!(d.reset && !d.wrapped);
    }

    #[test]
    fn window_totals_and_max() {
        let t = integrate(&[
            (0.0, c(0.0, None)),
            (1.0, c(10.0, None)),
            (3.0, c(50.0, None)),
            (3.0, c(60.0, None)), // same instant: ignored
        ]);
        assert_eq!(t.energy, Joules(50.0));
        assert_eq!(t.max_power, Watts(20.0));
        assert_eq!(t.samples, 3);
        assert_eq!(t.seconds, 3.0);
    }

    #[test]
    fn power_is_trapezoidal_and_clamped() {
        let t = integrate(&[
            (0.0, Reading::Power(Watts(10.0))),
            (2.0, Reading::Power(Watts(20.0))),
            (3.0, Reading::Power(Watts(-5.0))),
        ]);
        assert_eq!(t.energy, Joules(30.0 + 10.0));
        assert_eq!(t.max_power, Watts(20.0));
    }

    #[test]
    fn kind_change_is_a_reset() {
        let t = integrate(&[(0.0, c(5.0, None)), (1.0, Reading::Power(Watts(3.0)))]);
        assert_eq!(t.energy, Joules::ZERO);
        assert_eq!(t.resets, 1);
    }

    #[test]
    fn boundary_reading_splits_windows_without_loss() {
        let mut i = SourceIntegrator::new();
        i.push(0.0, c(0.0, None));
        i.push(1.0, c(7.0, None));
        let w1 = i.take_window();
        i.push(2.0, c(10.0, None));
        let w2 = i.take_window();
        assert_eq!(w1.energy.0 + w2.energy.0, 10.0);
        assert_eq!((w1.samples, w2.samples), (2, 1));
    }
}
