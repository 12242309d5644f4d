//! The `codecarbon` profile: CodeCarbon 3.3.2's `emissions.csv` columns, in order and in its
//! units (energy kWh, emissions kgCO2e, power W, duration s), one row per certificate, so
//! notebooks and dashboards built for CodeCarbon read it unchanged. Columns Wattest cannot know
//! (host OS, Python, cloud, location, utilisation, water) are left empty, never invented.

use super::{ExportRow, energy_of, text, thousandth};
use wattest_shared::{Decimal6, SourceKind};

/// Version of [`COLUMNS`]: CodeCarbon's 3.3.2 column list.
pub const VERSION: &str = "codecarbon-3.3.2/1";

/// CodeCarbon 3.3.2 `emissions.csv` header, in order (codecarbon `output_methods/emissions_data.py`
/// `EmissionsData` fields; see the reference notes in `docs/compliance.md`).
pub const COLUMNS: [&str; 38] = [
    "timestamp",
    "project_name",
    "run_id",
    "experiment_id",
    "duration",
    "emissions",
    "emissions_rate",
    "cpu_power",
    "gpu_power",
    "ram_power",
    "cpu_energy",
    "gpu_energy",
    "ram_energy",
    "energy_consumed",
    "water_consumed",
    "country_name",
    "country_iso_code",
    "region",
    "cloud_provider",
    "cloud_region",
    "os",
    "python_version",
    "codecarbon_version",
    "cpu_count",
    "cpu_model",
    "gpu_count",
    "gpu_model",
    "longitude",
    "latitude",
    "ram_total_size",
    "tracking_mode",
    "cpu_utilization_percent",
    "gpu_utilization_percent",
    "ram_utilization_percent",
    "ram_used_gb",
    "on_cloud",
    "pue",
    "wue",
];

/// Mean power over the certificate's measured time, W: Wh × 3600 ÷ s. A float: CodeCarbon
/// writes its powers as floats; the energy columns stay exact.
fn mean_power_w(wh: Option<Decimal6>, seconds: Decimal6) -> String {
    match wh {
        Some(wh) if seconds.millionths() > 0 => {
            format!("{}", wh.to_f64() * 3600.0 / seconds.to_f64())
        }
        _ => String::new(),
    }
}

/// The row of one certificate.
#[must_use]
pub fn record(row: &ExportRow) -> Vec<String> {
    let c = &row.claims;
    let seconds = c.period.measured_seconds;
    let (cpu, gpu, ram) = (
        energy_of(c, SourceKind::Cpu),
        energy_of(c, SourceKind::Gpu),
        energy_of(c, SourceKind::Dram),
    );
    let emissions_kg = thousandth(c.emissions.location_based_g_co2e);
    let emissions_rate = if seconds.millionths() > 0 {
        format!(
            "{}",
            c.emissions.location_based_g_co2e.to_f64() / 1000.0 / seconds.to_f64()
        )
    } else {
        String::new()
    };
    let gpu_count = c
        .energy
        .by_source
        .iter()
        .filter(|s| s.kind == SourceKind::Gpu)
        .count();
    let none = String::new;
    vec![
        // CodeCarbon writes `datetime.now().strftime("%Y-%m-%dT%H:%M:%S")`; ours is the end of
        // the certified period, in UTC.
        c.period.end.format("%Y-%m-%dT%H:%M:%S").to_string(),
        text(c.model_id.as_deref().unwrap_or_default()),
        row.id.clone(),
        text(c.job_id.as_deref().unwrap_or_default()),
        seconds.to_string(),
        emissions_kg,
        emissions_rate,
        mean_power_w(cpu, seconds),
        mean_power_w(gpu, seconds),
        mean_power_w(ram, seconds),
        cpu.map(thousandth).unwrap_or_default(),
        gpu.map(thousandth).unwrap_or_default(),
        ram.map(thousandth).unwrap_or_default(),
        thousandth(c.energy.consumed_wh),
        none(),                            // water_consumed
        none(),                            // country_name
        none(),                            // country_iso_code
        text(&c.grid_zone),                // region: the grid zone the intensity was looked up for
        none(),                            // cloud_provider
        none(),                            // cloud_region
        none(),                            // os
        none(),                            // python_version
        none(),                            // codecarbon_version
        none(),                            // cpu_count
        none(),                            // cpu_model
        gpu_count.to_string(),             // gpu_count: GPU sources measured
        none(),                            // gpu_model
        none(),                            // longitude
        none(),                            // latitude
        none(),                            // ram_total_size
        c.attribution.as_str().to_owned(), // tracking_mode: `machine` or `process`, as CodeCarbon
        none(),                            // cpu_utilization_percent
        none(),                            // gpu_utilization_percent
        none(),                            // ram_utilization_percent
        none(),                            // ram_used_gb
        none(),                            // on_cloud
        none(),                            // pue
        none(),                            // wue
    ]
}
