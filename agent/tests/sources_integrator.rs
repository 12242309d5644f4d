//! Property tests of the integrator: counter traces with wraps and resets against their truth,
//! and trapezoidal integration of power against its error bound.

#![allow(dead_code, missing_docs, clippy::unwrap_used)]

use wattest_agent::integrator;
use wattest_agent::sources;

use integrator::{SourceIntegrator, integrate, trapezoid_error_bound};
use proptest::prelude::*;
use sources::Reading;
use wattest_shared::Watts;

/// One step of a synthetic counter: time since the last reading, energy used, and whether the
/// counter was reset (to zero, then counted up by the step's energy) during the step.
#[derive(Debug, Clone)]
struct Step {
    dt: f64,
    energy: f64,
    reset: bool,
}

fn steps() -> impl Strategy<Value = Vec<Step>> {
    prop::collection::vec(
        (0.05f64..5.0, 0.0f64..500.0, prop::bool::weighted(0.05))
            .prop_map(|(dt, energy, reset)| Step { dt, energy, reset }),
        1..300,
    )
}

proptest! {
    /// Wrapping counter (wrap value known): every joule is found, whatever the wraps.
    #[test]
    fn wrapping_counter_energy_equals_truth(
        start in 0.0f64..1000.0,
        range in 1000.0f64..100_000.0,
        steps in steps(),
    ) {
        let start = start % range;
        let mut t = 0.0;
        let mut raw = start;
        let mut trace = vec![(t, Reading::Counter { joules: raw, wrap_joules: Some(range) })];
        let mut truth = 0.0;
        let mut wraps = 0;
        for s in &steps {
            // One step never spans a whole range (several wraps cannot be seen, as documented).
            let e = s.energy.min(range * 0.99);
            t += s.dt;
            truth += e;
            raw += e;
            if raw >= range {
                raw -= range;
                wraps += 1;
            }
            trace.push((t, Reading::Counter { joules: raw, wrap_joules: Some(range) }));
        }
        let got = integrate(&trace);
        prop_assert!((got.energy.0 - truth).abs() <= 1e-3 * truth.max(1e-9), "got {} truth {}", got.energy.0, truth);
        prop_assert_eq!(got.resets, 0);
        prop_assert!(got.wraps <= wraps);
        prop_assert!(got.energy.0 >= 0.0);
        prop_assert_eq!(got.samples as usize, trace.len());
    }

    /// Counter with resets (no wrap value): a reset interval counts zero and is flagged; every
    /// other interval is exact, and no energy is ever negative.
    #[test]
    fn resetting_counter_counts_zero_across_resets(start in 0.0f64..1e6, steps in steps()) {
        let mut t = 0.0;
        let mut raw = start;
        let mut trace = vec![(t, Reading::Counter { joules: raw, wrap_joules: None })];
        let mut truth_without_resets = 0.0;
        let mut seen_resets = 0;
        for s in &steps {
            t += s.dt;
            if s.reset && raw > s.energy {
                raw = s.energy * 0.5; // went back: reset to zero, then counted a bit
                seen_resets += 1;
            } else {
                raw += s.energy;
                truth_without_resets += s.energy;
            }
            trace.push((t, Reading::Counter { joules: raw, wrap_joules: None }));
        }
        let mut integ = SourceIntegrator::new();
        for &(t, r) in &trace {
            if let Some(i) = integ.push(t, r) {
                prop_assert!(i.energy.0 >= 0.0);
                prop_assert!(i.power.0 >= 0.0);
            }
        }
        let got = integ.take_window();
        prop_assert_eq!(got.resets, seen_resets);
        let tol = 1e-3 * truth_without_resets.max(1e-9);
        prop_assert!((got.energy.0 - truth_without_resets).abs() <= tol,
            "got {} truth {}", got.energy.0, truth_without_resets);
    }

    /// Piecewise-linear power with knots at the sample times: the trapezoidal rule is exact.
    #[test]
    fn trapezoid_is_exact_for_piecewise_linear_power(
        points in prop::collection::vec((0.01f64..3.0, 0.0f64..700.0), 2..200),
    ) {
        let mut t = 0.0;
        let mut trace = Vec::new();
        let mut truth = 0.0;
        let mut last: Option<f64> = None;
        for (i, (dt, p)) in points.iter().enumerate() {
            if i > 0 {
                t += dt;
            }
            if let Some(p0) = last {
                truth += (p0 + p) / 2.0 * dt; // exact area of a trapezoid under a line
            }
            last = Some(*p);
            trace.push((t, Reading::Power(Watts(*p))));
        }
        let got = integrate(&trace);
        prop_assert!((got.energy.0 - truth).abs() <= 1e-9 * truth.max(1.0));
        // max ≥ mean over the integrated span.
        if got.seconds > 0.0 {
            prop_assert!(got.max_power.0 + 1e-9 >= got.energy.0 / got.seconds);
        }
    }

    /// Smooth power P(t) = a + b·sin(ωt + φ): the error is within T·h²/12·max|P''|, with
    /// max|P''| = b·ω².
    #[test]
    fn trapezoid_error_within_bound_for_smooth_power(
        a in 50.0f64..400.0,
        b in 0.0f64..50.0,
        omega in 0.01f64..3.0,
        phi in 0.0f64..6.3,
        h in 0.05f64..2.0,
        n in 2usize..400,
    ) {
        let p = |t: f64| a + b * (omega * t + phi).sin();
        let span = h * n as f64;
        let trace: Vec<(f64, Reading)> =
            (0..=n).map(|k| { let t = h * k as f64; (t, Reading::Power(Watts(p(t)))) }).collect();
        let truth = a * span - b / omega * ((omega * span + phi).cos() - phi.cos());
        let got = integrate(&trace);
        let bound = trapezoid_error_bound(span, h, b * omega * omega).0;
        let err = (got.energy.0 - truth).abs();
        prop_assert!(err <= bound + 1e-9 * truth.abs().max(1.0), "err {err} bound {bound}");
    }
}

#[test]
fn several_wraps_between_samples_are_invisible_as_documented() {
    // 2.5 ranges used between two samples: only the last half-range is seen.
    let range = 100.0;
    let got = integrate(&[
        (
            0.0,
            Reading::Counter {
                joules: 0.0,
                wrap_joules: Some(range),
            },
        ),
        (
            1.0,
            Reading::Counter {
                joules: 50.0,
                wrap_joules: Some(range),
            },
        ),
    ]);
    assert_eq!(got.energy.0, 50.0);
}
