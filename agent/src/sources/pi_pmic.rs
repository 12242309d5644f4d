//! Raspberry Pi 5 board power from its PMIC's rail monitors (`vcgencmd pmic_read_adc`).
//!
//! The Pi 5's PMIC (Renesas DA9091 "Gilmour") measures voltage and current of its output rails.
//! `vcgencmd pmic_read_adc` prints lines such as `3V3_SYS_A current(1)=0.05660820A` and
//! `3V3_SYS_V volt(9)=3.31437000V`. Power is `P = Σ V_rail × I_rail` over every rail that has
//! both a `_V` and an `_A` line (`EXT5V_V`, the 5 V input, has no current and is left out).
//!
//! What it does not see: the PMIC's own conversion losses, and loads fed straight from the 5 V
//! input — USB peripherals, the fan header and HATs powered from the 5 V pins. The figure is
//! therefore a lower bound of the board's draw at the wall; an INA2xx on the supply (hwmon) is
//! the better meter when present.
//!
//! The binary is `vcgencmd` on `PATH`, or the path in `WATTEST_VCGENCMD` (tests use a script).
//! Running it costs a process spawn per sample, so Pi nodes should sample at 1 s or slower.

use super::{Discovery, PowerSource, Reading, SourceError, SourceInfo};
use std::path::{Path, PathBuf};
use std::process::Command;
use wattest_shared::Watts;
use wattest_shared::window::{Method, SourceKind};

/// The command looked for when `WATTEST_VCGENCMD` is unset.
pub const DEFAULT_VCGENCMD: &str = "vcgencmd";

/// Relative uncertainty, percent: the PMIC ADCs are uncalibrated housekeeping monitors and the
/// figure misses the loads listed in the module documentation; 15 % is the agent's judgement.
pub const PMIC_UNCERTAINTY_PCT: f64 = 15.0;

/// Σ V × I over the rails of `pmic_read_adc` output that have both a voltage and a current;
/// `None` when no rail has both.
#[must_use]
pub fn parse_pmic(output: &str) -> Option<Watts> {
    let mut volts: Vec<(&str, f64)> = Vec::new();
    let mut amps: Vec<(&str, f64)> = Vec::new();
    for line in output.lines() {
        let mut parts = line.split_whitespace();
        let (Some(label), Some(reading)) = (parts.next(), parts.next()) else {
            continue;
        };
        let Some((_, value)) = reading.split_once('=') else {
            continue;
        };
        if let Some(rail) = label.strip_suffix("_V")
            && let Some(v) = value.strip_suffix('V').and_then(|v| v.parse().ok())
        {
            volts.push((rail, v));
        } else if let Some(rail) = label.strip_suffix("_A")
            && let Some(a) = value.strip_suffix('A').and_then(|a| a.parse().ok())
        {
            amps.push((rail, a));
        }
    }
    let mut total = 0.0;
    let mut pairs = 0;
    for (rail, a) in amps {
        if let Some((_, v)) = volts.iter().find(|(r, _)| *r == rail) {
            total += v * a;
            pairs += 1;
        }
    }
    (pairs > 0 && f64::is_finite(total)).then_some(Watts(total))
}

/// The PMIC as a power source.
#[derive(Debug)]
pub struct PiPmic {
    info: SourceInfo,
    binary: PathBuf,
}

impl PiPmic {
    /// A source running `binary pmic_read_adc`.
    #[must_use]
    pub fn new(binary: &Path) -> Self {
        Self {
            info: SourceInfo {
                id: "pi-pmic".into(),
                kind: SourceKind::Platform,
                method: Method::PiPmicIntegration,
                location: format!("{} pmic_read_adc", binary.display()),
                uncertainty_pct: PMIC_UNCERTAINTY_PCT,
                shared_device: false,
                note: Some(
                    "Sum of PMIC rails: excludes PMIC conversion losses and loads on the 5 V input (USB peripherals, fan, HATs).".into(),
                ),
            },
            binary: binary.to_path_buf(),
        }
    }
}

impl PowerSource for PiPmic {
    fn info(&self) -> &SourceInfo {
        &self.info
    }

    fn read(&mut self) -> Result<Reading, SourceError> {
        let command = self.info.location.clone();
        let out =
            output_when_not_busy(Command::new(&self.binary).arg("pmic_read_adc")).map_err(|e| {
                SourceError::Command {
                    command: command.clone(),
                    detail: e.to_string(),
                }
            })?;
        if !out.status.success() {
            return Err(SourceError::Command {
                command,
                detail: format!(
                    "{}: {}",
                    out.status,
                    String::from_utf8_lossy(&out.stderr).trim()
                ),
            });
        }
        let text = String::from_utf8_lossy(&out.stdout);
        parse_pmic(&text)
            .map(Reading::Power)
            .ok_or_else(|| SourceError::Parse {
                what: command,
                text: text.chars().take(200).collect(),
            })
    }
}

/// Attempts at running a binary that is "text file busy" (`ETXTBSY`,
/// [`std::io::ErrorKind::ExecutableFileBusy`]), [`BUSY_RETRY`] apart: a binary is busy to `exec` while some process still holds it open for
/// writing: one being replaced by a package upgrade, or one just written when another thread
/// forked meanwhile (the child holds the writer's descriptor until its own `exec`).
const BUSY_ATTEMPTS: u32 = 10;
/// Wait between [`BUSY_ATTEMPTS`].
const BUSY_RETRY: std::time::Duration = std::time::Duration::from_millis(20);

/// `command.output()`, tried again (up to [`BUSY_ATTEMPTS`] times) while the binary is busy.
///
/// # Errors
/// The last spawn error.
fn output_when_not_busy(command: &mut Command) -> std::io::Result<std::process::Output> {
    let mut attempt = 1;
    loop {
        match command.output() {
            Err(err)
                if err.kind() == std::io::ErrorKind::ExecutableFileBusy
                    && attempt < BUSY_ATTEMPTS =>
            {
                attempt += 1;
                std::thread::sleep(BUSY_RETRY);
            }
            result => return result,
        }
    }
}

/// Adds the PMIC source when `binary` runs and prints rails. An absent binary is not an error
/// (most hosts are not a Pi 5); a binary that runs but prints no rails (a Pi 4) gets an info line.
pub fn discover(binary: &Path, d: &mut Discovery) {
    let mut src = PiPmic::new(binary);
    match src.read() {
        Ok(_) => d.sources.push(Box::new(src)),
        Err(SourceError::Command { .. }) => {} // no vcgencmd, or it refused: not a Pi 5
        Err(e) => d.warnings.push(format!(
            "No Pi PMIC source: {e} (a Pi before the Pi 5 has no current sensing)."
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rails_with_both_voltage_and_current_are_summed() {
        let out = "     3V7_WL_SW_A current(0)=0.10000000A\n     3V3_SYS_A current(1)=0.50000000A\n     3V7_WL_SW_V volt(8)=3.70000000V\n     3V3_SYS_V volt(9)=3.30000000V\n     EXT5V_V volt(24)=5.15253000V\n";
        let p = parse_pmic(out).expect("rails");
        assert!((p.0 - (0.37 + 1.65)).abs() < 1e-9, "{p}");
        assert_eq!(parse_pmic("EXT5V_V volt(24)=5.1V\n"), None);
        assert_eq!(
            parse_pmic("error=2 error_msg=\"Command not registered\""),
            None
        );
    }

    /// A binary still open for writing cannot be run (`ETXTBSY`); once the writer closes it
    /// within the retries, it runs. Held open throughout, the busy error is the answer.
    #[test]
    fn a_busy_binary_is_run_once_its_writer_closes() {
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt as _;
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("vcgencmd");
        let writer = {
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o755)
                .open(&path)
                .expect("open");
            f.write_all(b"#!/bin/sh\necho ok\n").expect("write");
            f
        };
        let busy = output_when_not_busy(&mut Command::new(&path)).expect_err("busy");
        assert_eq!(busy.kind(), std::io::ErrorKind::ExecutableFileBusy);
        let closer = std::thread::spawn(move || {
            std::thread::sleep(BUSY_RETRY / 4);
            drop(writer);
        });
        let out = output_when_not_busy(&mut Command::new(&path)).expect("ran");
        closer.join().expect("closer");
        assert_eq!(out.stdout, b"ok\n");
    }
}
