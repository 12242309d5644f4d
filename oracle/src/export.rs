//! Compliance exports: CSV streamed page by page from the database, constant memory whatever the
//! number of certificates.

use crate::storage::Storage;
use crate::storage::entities::certificate;
use chrono::{DateTime, Utc};
use futures::{Stream, StreamExt as _};

/// One chunk of the response body.
pub type Chunk = Result<axum::body::Bytes, std::io::Error>;

/// Rows fetched per database round trip.
pub const PAGE_ROWS: u64 = 500;

/// Columns of `compliance.csv`, in order. Energy in kWh, emissions in kgCO2e, intensity in
/// gCO2e/kWh, money in EUR; see `docs/compliance.md` for what each answers to (GHG Protocol
/// Scope 2 location-based, ESRS E1-5/E1-6, EU AI Act Annex XI 2(e)).
pub const COMPLIANCE_COLUMNS: [&str; 27] = [
    "certificate_id",
    "issued_at",
    "node_id",
    "job_id",
    "zone",
    "period_start",
    "period_end",
    "energy_consumed_kwh",
    "grid_energy_kwh",
    "solar_energy_kwh",
    "scope2_location_based_kg_co2e",
    "intensity_g_co2e_per_kwh",
    "intensity_dataset",
    "intensity_year",
    "emission_factor_type",
    "avoided_emissions_kg_co2e",
    "reward_eur",
    "reward_node_owner_eur",
    "reward_cooperative_fund_eur",
    "attestation_level",
    "energy_methods",
    "estimated_share_pct",
    "first_seq",
    "last_seq",
    "window_count",
    "certificate_sha256",
    "certificate_url",
];

fn row_fields(c: &certificate::Model, base_url: &str) -> Vec<String> {
    let claims: Option<wattest_shared::CertificateClaims> = serde_json::from_str(&c.claims).ok();
    let (methods, estimated_pct) = claims
        .map(|cl| {
            let mut methods: Vec<&str> = cl
                .energy
                .by_source
                .iter()
                .map(|s| s.method.as_str())
                .collect();
            methods.sort_unstable();
            methods.dedup();
            let total: f64 = cl
                .energy
                .by_source
                .iter()
                .filter(|s| s.kind != wattest_shared::SourceKind::Solar)
                .map(|s| s.energy_wh.to_f64())
                .sum();
            let estimated: f64 = cl
                .energy
                .by_source
                .iter()
                .filter(|s| s.kind != wattest_shared::SourceKind::Solar && s.method.is_estimate())
                .map(|s| s.energy_wh.to_f64())
                .sum();
            (
                methods.join(" "),
                if total > 0.0 {
                    estimated / total * 100.0
                } else {
                    0.0
                },
            )
        })
        .unwrap_or_default();
    let eur = |m: i64| wattest_shared::Eur::from_micros(m).to_string();
    vec![
        c.id.clone(),
        rfc3339(c.issued_at),
        c.node_id.clone(),
        c.job_id.clone().unwrap_or_default(),
        c.zone.clone(),
        rfc3339(c.period_start),
        rfc3339(c.period_end),
        (c.consumed_wh / 1000.0).to_string(),
        (c.grid_wh / 1000.0).to_string(),
        (c.solar_wh / 1000.0).to_string(),
        c.emissions_kg.to_string(),
        c.intensity_g.to_string(),
        c.intensity_dataset.clone(),
        c.intensity_year.to_string(),
        c.factor_type.clone(),
        c.avoided_kg.to_string(),
        eur(c.reward_micro_eur),
        eur(c.owner_micro_eur),
        eur(c.fund_micro_eur),
        c.attestation_level.clone(),
        methods,
        format!("{estimated_pct:.2}"),
        c.first_seq.to_string(),
        c.last_seq.to_string(),
        c.window_count.to_string(),
        c.hash.clone(),
        format!("{base_url}/v1/certificates/{}", c.id),
    ]
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn encode(records: &[Vec<String>]) -> Chunk {
    let mut writer = csv::Writer::from_writer(Vec::with_capacity(records.len() * 400));
    for r in records {
        writer.write_record(r).map_err(std::io::Error::other)?;
    }
    Ok(writer
        .into_inner()
        .map_err(|err| std::io::Error::other(err.to_string()))?
        .into())
}

/// The compliance CSV as a stream of chunks: the header row, then one chunk per page of
/// [`PAGE_ROWS`] certificates in (issued_at, id) order, within the optional period range.
pub fn compliance_csv(
    storage: Storage,
    range: (Option<DateTime<Utc>>, Option<DateTime<Utc>>),
    base_url: String,
) -> impl Stream<Item = Chunk> + Send {
    let header = encode(&[COMPLIANCE_COLUMNS.iter().map(|c| (*c).to_owned()).collect()]);
    let pages = futures::stream::unfold(
        Some(None),
        move |cursor: Option<Option<(DateTime<Utc>, String)>>| {
            let storage = storage.clone();
            let base_url = base_url.clone();
            async move {
                let after = cursor?;
                match storage.certificates_page(after, range, PAGE_ROWS).await {
                    Ok(rows) if rows.is_empty() => None,
                    Ok(rows) => {
                        let next = rows.last().map(|r| (r.issued_at, r.id.clone()));
                        let records: Vec<Vec<String>> =
                            rows.iter().map(|r| row_fields(r, &base_url)).collect();
                        let more = rows.len() as u64 == PAGE_ROWS;
                        Some((encode(&records), more.then_some(next)))
                    }
                    Err(err) => {
                        // The status line is already sent: end the body with an error so the client
                        // sees a truncated transfer rather than a short file that looks complete.
                        tracing::error!(error = %err, "Export failed mid-stream.");
                        Some((Err(std::io::Error::other(err.to_string())), None))
                    }
                }
            }
        },
    );
    futures::stream::once(async move { header }).chain(pages)
}
