//! Solar production: a declared constant, a file, a command or an hwmon channel giving watts.
//!
//! All four report power (kind `solar`), integrated with the trapezoidal rule. A constant is a
//! declaration (`solar_declared_constant`), not a measurement; the others are
//! `solar_power_integration`. A file or command must hold or print a decimal number of watts
//! (optionally followed by `W`); negative values (an inverter's standby draw) are reported as 0.

use super::hwmon::{Channel, ChannelKind, find_channel};
use super::{
    Discovery, PowerSource, Reading, SolarConfig, SourceError, SourceInfo, parse_watts, read_small,
};
use std::path::{Path, PathBuf};
use std::process::Command;
use wattest_shared::Watts;
use wattest_shared::window::{Method, SourceKind};

/// Uncertainty of a declared constant, percent: nothing was measured, so the agent claims no
/// precision at all (100 %).
pub const DECLARED_UNCERTAINTY_PCT: f64 = 100.0;
/// Uncertainty of measured solar power, percent: inverter and meter readings are typically
/// specified to a few percent; 5 % is the agent's judgement for an unknown meter.
pub const MEASURED_UNCERTAINTY_PCT: f64 = 5.0;

enum Input {
    Constant(Watts),
    File { path: PathBuf, buf: [u8; 64] },
    Command(String),
    Hwmon(Channel),
}

/// The solar source.
pub struct Solar {
    info: SourceInfo,
    input: Input,
}

impl Solar {
    fn new(input: Input, location: String) -> Self {
        let (method, uncertainty_pct, note) = match input {
            Input::Constant(_) => (
                Method::SolarDeclaredConstant,
                DECLARED_UNCERTAINTY_PCT,
                Some("Declared by the operator, not measured.".to_string()),
            ),
            Input::Hwmon(Channel {
                kind: ChannelKind::Energy,
                ..
            }) => (
                Method::SolarPowerIntegration,
                MEASURED_UNCERTAINTY_PCT,
                Some("hwmon energy counter: deltas, not a power integration.".to_string()),
            ),
            _ => (
                Method::SolarPowerIntegration,
                MEASURED_UNCERTAINTY_PCT,
                None,
            ),
        };
        Self {
            info: SourceInfo {
                id: "solar".into(),
                kind: SourceKind::Solar,
                method,
                location,
                uncertainty_pct,
                shared_device: false,
                note,
            },
            input,
        }
    }
}

fn non_negative(w: Watts) -> Watts {
    Watts(w.0.max(0.0))
}

impl PowerSource for Solar {
    fn info(&self) -> &SourceInfo {
        &self.info
    }

    fn read(&mut self) -> Result<Reading, SourceError> {
        match &mut self.input {
            Input::Constant(w) => Ok(Reading::Power(*w)),
            Input::File { path, buf } => {
                let n = read_small(path, buf)?;
                let text = String::from_utf8_lossy(&buf[..n]);
                parse_watts(&text)
                    .map(|w| Reading::Power(non_negative(w)))
                    .ok_or_else(|| SourceError::Parse {
                        what: path.display().to_string(),
                        text: text.into_owned(),
                    })
            }
            Input::Command(cmd) => {
                let out = Command::new("sh")
                    .arg("-c")
                    .arg(&*cmd)
                    .output()
                    .map_err(|e| SourceError::Command {
                        command: crate::config::redact_command(cmd),
                        detail: e.to_string(),
                    })?;
                if !out.status.success() {
                    return Err(SourceError::Command {
                        command: crate::config::redact_command(cmd),
                        detail: out.status.to_string(),
                    });
                }
                let text = String::from_utf8_lossy(&out.stdout);
                parse_watts(&text)
                    .map(|w| Reading::Power(non_negative(w)))
                    .ok_or_else(|| SourceError::Parse {
                        what: crate::config::redact_command(cmd),
                        text: text.chars().take(200).collect(),
                    })
            }
            // Negative (power flowing back into the panel side) counts as 0, as for the other
            // solar inputs.
            Input::Hwmon(channel) => channel.read(),
        }
    }
}

/// Adds the solar source configured in `cfg` to `d` (none for [`SolarConfig::None`]). A file,
/// command or channel that cannot be read at discovery is skipped with a warning naming it.
pub fn discover(cfg: &SolarConfig, sysfs_root: &Path, d: &mut Discovery) {
    let src = match cfg {
        SolarConfig::None => return,
        SolarConfig::Constant(w) => {
            if !w.is_physical() {
                d.warnings.push(format!(
                    "Solar power {w} is not a physical value: no solar source."
                ));
                return;
            }
            Solar::new(Input::Constant(*w), format!("declared constant {w}"))
        }
        SolarConfig::File(path) => Solar::new(
            Input::File {
                path: path.clone(),
                buf: [0; 64],
            },
            path.display().to_string(),
        ),
        SolarConfig::Command(cmd) => {
            // The location is shown by `sources` and logged: the command line may hold a
            // credential, so only its program is.
            Solar::new(
                Input::Command(cmd.clone()),
                format!("sh -c {:?}", crate::config::redact_command(cmd)),
            )
        }
        SolarConfig::Hwmon(selector) => {
            let Some(ch) = find_channel(sysfs_root, selector, &mut d.warnings) else {
                d.warnings.push(format!(
                    "Solar hwmon selector {selector:?} matches no power or energy channel under {}: no solar source.",
                    sysfs_root.join("class/hwmon").display()
                ));
                return;
            };
            let location = ch.path.display().to_string();
            Solar::new(Input::Hwmon(ch), location)
        }
    };
    let mut src = src;
    if let Err(e) = src.read() {
        d.warnings.push(format!("Solar source skipped: {e}."));
        return;
    }
    d.sources.push(Box::new(src));
}
