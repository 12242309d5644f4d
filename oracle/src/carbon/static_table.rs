//! The static table provider: Ember yearly intensity per grid zone, with provenance.
//!
//! The default provider is a static table: Ember's yearly, lifecycle, generation-based intensity
//! per country ("Ember (2025), Yearly Electricity Data", CC BY 4.0), shipped in `oracle/data/`.
//! A yearly mean applies to every hour of the year, so its figures are marked `estimated`.
//! Zones follow Electricity Maps' naming: an ISO 3166-1 alpha-2 country (`BE`), optionally with a
//! sub-zone (`US-CAL-CISO`, `SE-SE3`) for which the country's figure is used and said so; ISO
//! alpha-3 codes (`BEL`, canonically `BE`) and Ember's regions (`EU`, `G7`, `World`) are
//! accepted as well.

use chrono::{DateTime, Utc};
use serde::Deserialize;
use std::collections::HashMap;
use wattest_shared::GramsCo2ePerKwh;
use wattest_shared::certificate::Provenance;

/// Attribution required by the Ember licence, used as the dataset name.
pub const EMBER_DATASET: &str = "Ember (2025), Yearly Electricity Data";
/// Where Ember publishes the dataset.
pub const EMBER_URL: &str = "https://ember-energy.org/data/yearly-electricity-data/";
/// The dataset's licence (Ember publishes it under CC BY 4.0; see `oracle/data/README.md`).
pub const EMBER_LICENCE: &str = "CC BY 4.0";
/// The licence's text.
pub const CC_BY_4_URL: &str = "https://creativecommons.org/licenses/by/4.0/";
const EMBER_JSON: &str = include_str!("../../data/ember_yearly_intensity.json");
const COUNTRY_CODES: &str = include_str!("../../data/country_codes.csv");

/// Why no intensity could be given.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CarbonError {
    /// The zone is not in any table.
    #[error(
        "unknown grid zone {0:?}: use an ISO 3166-1 country code such as BE, an Electricity Maps zone such as US-CAL-CISO, or a region such as EU"
    )]
    UnknownZone(String),
}

/// A grid zone checked against the table: its canonical name and the table key it maps to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GridZone {
    /// Canonical zone name: an alpha-2 country or sub-zone upper-cased as given (`BE`,
    /// `US-CAL-CISO`), an alpha-3 country as its alpha-2 code (`BEL` → `BE`), an Ember region as
    /// the table spells it (`EU`, `World`).
    pub name: String,
    key: String,
    note: Option<String>,
}

/// An intensity figure for one zone and hour.
#[derive(Debug, Clone, PartialEq)]
pub struct Intensity {
    /// gCO2e/kWh.
    pub value: GramsCo2ePerKwh,
    /// Where it comes from.
    pub provenance: Provenance,
}

#[derive(Debug, Deserialize)]
struct EmberEntry {
    year: i32,
    emissions_intensity_gco2_per_kwh: f64,
}

/// A dataset shipped with the oracle, as `GET /v1/carbon/sources` lists it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[schema(example = json!({"provider": "static", "publisher": "Ember",
    "dataset": "Ember (2025), Yearly Electricity Data", "years": [2022, 2023, 2024],
    "licence": "CC BY 4.0", "licence_url": "https://creativecommons.org/licenses/by/4.0/",
    "url": "https://ember-energy.org/data/yearly-electricity-data/", "factor_type": "lifecycle",
    "basis": "generation", "granularity": "yearly", "unit": "gCO2e/kWh", "zones": 222}))]
pub struct StaticDataset {
    /// The provider that serves it: `static`.
    pub provider: String,
    /// Publisher.
    pub publisher: String,
    /// The attribution the licence requires; provenance `dataset` starts with it.
    pub dataset: String,
    /// Data years present in the table, ascending (each zone has its latest year).
    pub years: Vec<i32>,
    /// Licence of the data.
    pub licence: String,
    /// Text of the licence.
    pub licence_url: String,
    /// Where the publisher describes the dataset.
    pub url: String,
    /// `lifecycle` (the table's figures include upstream emissions).
    pub factor_type: super::FactorType,
    /// `generation`: emissions of the electricity generated in the zone, not of what it consumed.
    pub basis: String,
    /// `yearly`: one figure per zone and year, applied to every hour (marked `estimated`).
    pub granularity: String,
    /// Unit of the figures.
    pub unit: String,
    /// Number of keys (countries and regions) in the table.
    pub zones: usize,
}

/// The static yearly table (Ember) with the alpha-2 ↔ alpha-3 maps.
#[derive(Debug)]
pub struct StaticTable {
    /// Ember key (alpha-3 country or region name) → latest figure.
    entries: HashMap<String, EmberEntry>,
    /// Alpha-2 → alpha-3 (`oracle/data/country_codes.csv`).
    alpha2: HashMap<String, String>,
    /// Alpha-3 → alpha-2, the inverse of `alpha2`.
    alpha3: HashMap<String, String>,
}

impl StaticTable {
    /// Loads the embedded Ember table.
    ///
    /// # Errors
    /// Only if the embedded data is corrupt (a build problem), as a message.
    pub fn embedded() -> Result<Self, String> {
        let entries: HashMap<String, EmberEntry> = serde_json::from_str(EMBER_JSON)
            .map_err(|err| format!("embedded Ember table: {err}"))?;
        let alpha2: HashMap<String, String> = COUNTRY_CODES
            .lines()
            .skip(1)
            .filter_map(|line| line.split_once(','))
            .map(|(a2, a3)| (a2.trim().to_owned(), a3.trim().to_owned()))
            .collect();
        let alpha3 = alpha2
            .iter()
            .map(|(a2, a3)| (a3.clone(), a2.clone()))
            .collect();
        Ok(Self {
            entries,
            alpha2,
            alpha3,
        })
    }

    /// Checks `zone` and returns its canonical form, trying in turn (case-insensitively):
    ///
    /// 1. an ISO 3166-1 alpha-2 country, optionally followed by a sub-zone in the Electricity
    ///    Maps style: one or more `-`-separated parts of ASCII letters and digits (`BE`,
    ///    `DK-DK1`, `US-CAL-CISO`); canonical name upper-cased as given, the country's Ember
    ///    key. Whether the sub-zone exists is not checked: it gets its country's figure;
    /// 2. an ISO alpha-3 country (`BEL`): canonical name its alpha-2 code (`BE`), so chains,
    ///    provider region maps and the cache see one name per country;
    /// 3. an Ember region (`EU`, `G7`, `World`): canonical name the table's key.
    ///
    /// Alpha-2 codes come first; no Ember region key is an alpha-2 code (a unit test checks
    /// it), so a two-letter region such as `EU` or `G7` is never shadowed.
    ///
    /// # Errors
    /// [`CarbonError::UnknownZone`]: empty, longer than 64 bytes, or none of the above (also a
    /// known country with an empty or non-alphanumeric sub-zone part: `BE-`, `BE--X`, `BE-X_Y`).
    pub fn zone(&self, zone: &str) -> Result<GridZone, CarbonError> {
        let trimmed = zone.trim();
        let unknown = || CarbonError::UnknownZone(zone.to_owned());
        if trimmed.is_empty() || trimmed.len() > 64 {
            return Err(unknown());
        }
        let upper = trimmed.to_ascii_uppercase();
        let mut parts = upper.split('-');
        let country = parts.next().unwrap_or_default();
        let sub_zone_ok =
            parts.all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_alphanumeric()));
        if let Some(key) = self.alpha2.get(country).filter(|_| sub_zone_ok) {
            let note = (upper != country)
                .then(|| format!("national figure for {country} applied to sub-zone {upper}"));
            return Ok(GridZone {
                name: upper.clone(),
                key: key.clone(),
                note,
            });
        }
        if let Some(a2) = self.alpha3.get(&upper) {
            return Ok(GridZone {
                name: a2.clone(),
                key: upper,
                note: None,
            });
        }
        // Regions such as "EU" or "World" are keyed by name; match them case-insensitively.
        let key = self
            .entries
            .keys()
            .find(|k| k.eq_ignore_ascii_case(trimmed) && !self.alpha3.contains_key(*k))
            .ok_or_else(unknown)?;
        Ok(GridZone {
            name: key.clone(),
            key: key.clone(),
            note: None,
        })
    }

    /// The table's description and attribution for `GET /v1/carbon/sources`.
    #[must_use]
    pub fn dataset(&self) -> StaticDataset {
        let years: std::collections::BTreeSet<i32> =
            self.entries.values().map(|e| e.year).collect();
        StaticDataset {
            provider: "static".into(),
            publisher: "Ember".into(),
            dataset: EMBER_DATASET.into(),
            years: years.into_iter().collect(),
            licence: EMBER_LICENCE.into(),
            licence_url: CC_BY_4_URL.into(),
            url: EMBER_URL.into(),
            factor_type: super::FactorType::Lifecycle,
            basis: "generation".into(),
            granularity: "yearly".into(),
            unit: "gCO2e/kWh".into(),
            zones: self.entries.len(),
        }
    }

    /// Intensity for `zone` in the hour starting at `hour`: the zone's yearly figure.
    #[must_use]
    pub fn intensity(&self, zone: &GridZone, _hour: DateTime<Utc>) -> Option<Intensity> {
        let entry = self.entries.get(&zone.key)?;
        let mut dataset = format!("{EMBER_DATASET}, {} {}", zone.key, entry.year);
        if let Some(note) = &zone.note {
            dataset = format!("{dataset} ({note})");
        }
        Some(Intensity {
            value: GramsCo2ePerKwh(entry.emissions_intensity_gco2_per_kwh),
            provenance: Provenance {
                provider: "static".into(),
                dataset,
                year: entry.year,
                factor_type: "lifecycle".into(),
                estimated: true,
                marginal: false,
                fallback_reason: None,
            },
        })
    }
}

/// The static table as a chain step (never fails for a known zone; never live).
#[derive(Debug)]
pub struct StaticProvider(pub std::sync::Arc<StaticTable>);

impl super::IntensityProvider for StaticProvider {
    fn name(&self) -> &str {
        "static"
    }

    fn info(&self) -> super::ProviderInfo {
        super::ProviderInfo {
            name: "static".into(),
            kind: "static".into(),
            live: false,
            attribution: EMBER_DATASET.into(),
            licence: EMBER_LICENCE.into(),
            url: Some(EMBER_URL.into()),
            factor_types: vec![super::FactorType::Lifecycle],
            marginal: false,
            granularity: "yearly".into(),
        }
    }

    fn intensity<'a>(
        &'a self,
        zone: &'a GridZone,
        hour: DateTime<Utc>,
        _now: DateTime<Utc>,
    ) -> futures::future::BoxFuture<'a, Result<Intensity, super::ProviderError>> {
        let found = self
            .0
            .intensity(zone, hour)
            .ok_or_else(|| super::ProviderError::ZoneNotCovered(zone.name.clone()));
        Box::pin(async move { found })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zones_resolve_to_the_documented_figures() {
        let table = StaticTable::embedded().expect("table");
        let now = Utc::now();
        // Figures from ../shared/reference/README.md (Ember 2024).
        for (zone, expected) in [
            ("BE", 117.58),
            ("be", 117.58),
            ("BEL", 117.58),
            ("FR", 44.18),
            ("DE", 342.06),
            ("World", 472.94),
        ] {
            let z = table.zone(zone).expect(zone);
            let i = table.intensity(&z, now).expect("intensity");
            assert!((i.value.0 - expected).abs() < 1e-9, "{zone}: {}", i.value.0);
            assert_eq!(i.provenance.factor_type, "lifecycle");
            assert!(i.provenance.dataset.starts_with(EMBER_DATASET));
        }
        let sub = table.zone("US-CAL-CISO").expect("sub-zone");
        let i = table.intensity(&sub, now).expect("intensity");
        assert!((i.value.0 - 383.55).abs() < 1e-9);
        assert!(i.provenance.dataset.contains("sub-zone US-CAL-CISO"));
        for bad in ["", "ZZ", "Atlantis", "B", "BEL-X"] {
            assert!(table.zone(bad).is_err(), "{bad}");
        }
    }

    /// A sub-zone of a known country is `-` and one or more parts of ASCII letters and digits
    /// (Electricity Maps names); an empty or other part makes the zone unknown.
    #[test]
    fn sub_zones_are_alphanumeric_parts_after_a_country() {
        let table = StaticTable::embedded().expect("table");
        let now = Utc::now();
        for (zone, name, country_figure) in [
            ("DK-DK1", "DK-DK1", table.zone("DK").expect("DK")),
            ("se-se3", "SE-SE3", table.zone("SE").expect("SE")),
            ("US-NW-PACW", "US-NW-PACW", table.zone("US").expect("US")),
            ("BE-XYZ", "BE-XYZ", table.zone("BE").expect("BE")),
        ] {
            let z = table.zone(zone).expect(zone);
            assert_eq!(
                (z.name.as_str(), z.key.as_str()),
                (name, country_figure.key.as_str())
            );
            let figure = |z: &GridZone| table.intensity(z, now).expect("intensity").value.0;
            assert!(
                (figure(&z) - figure(&country_figure)).abs() < 1e-12,
                "{zone}"
            );
        }
        for bad in [
            "BE-", "be-", "BE--X", "BE-X-", "-BE", "BE-X_Y", "BE-X.Y", "BE- X", "BE-É", "BE-X/Y",
        ] {
            assert_eq!(
                table.zone(bad),
                Err(CarbonError::UnknownZone(bad.to_owned())),
                "{bad}"
            );
        }
    }

    #[test]
    fn two_letter_regions_resolve_and_alpha3_is_canonically_alpha2() {
        let table = StaticTable::embedded().expect("table");
        let now = Utc::now();
        // No Ember region key is an alpha-2 code, so alpha-2 first never shadows a region.
        for key in table.entries.keys() {
            assert!(!table.alpha2.contains_key(key), "{key} is an alpha-2 code");
        }
        // Figures from oracle/data/ember_yearly_intensity.json (Ember 2024), as protocol.md §2
        // and CarbonError's message offer `EU`.
        for (zone, name, key, expected) in [
            ("EU", "EU", "EU", 213.02),
            ("eu", "EU", "EU", 213.02),
            ("G7", "G7", "G7", 343.3),
            ("g7", "G7", "G7", 343.3),
            ("world", "World", "World", 472.94),
            ("BEL", "BE", "BEL", 117.58),
            ("bel", "BE", "BEL", 117.58),
            (" be ", "BE", "BEL", 117.58),
            ("GBR", "GB", "GBR", 215.79),
        ] {
            let z = table.zone(zone).expect(zone);
            assert_eq!((z.name.as_str(), z.key.as_str()), (name, key), "{zone}");
            assert_eq!(z.note, None, "{zone}");
            let i = table.intensity(&z, now).expect("intensity");
            assert!((i.value.0 - expected).abs() < 1e-9, "{zone}: {}", i.value.0);
            assert!(
                i.provenance.dataset.contains(&format!(", {key} 2024")),
                "{zone}"
            );
        }
        // An alpha-3 zone and its alpha-2 code are one zone.
        assert_eq!(table.zone("BEL"), table.zone("BE"));
    }
}
