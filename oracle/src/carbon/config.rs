//! The carbon config file (TOML, `wattest-oracle serve --carbon-config FILE`): providers, the
//! chain per grid zone, the factor type and the request timeout.
//!
//! ```toml
//! factor_type = "direct"          # direct (default; GHG Protocol Scope 2) or lifecycle
//! timeout_secs = 10
//! default_chain = ["static"]
//!
//! [providers.electricitymaps]
//! kind = "electricitymaps"
//! api_key_env = "ELECTRICITYMAPS_API_KEY"   # or api_key_file = "/etc/wattest/em.key" (0600)
//!
//! [providers.neso]
//! kind = "neso"
//! regions = { "GB-NSCOT" = 1 }
//!
//! [providers.watttime]
//! kind = "watttime"
//! username = "alice"
//! password_env = "WATTTIME_PASSWORD"        # or password_file
//! regions = { "US-CAL-CISO" = "CAISO_NORTH" }
//!
//! [providers.ops]
//! kind = "csv"
//! path = "/etc/wattest/intensity.csv"
//!
//! [zones]
//! BE = ["electricitymaps", "cache", "static"]
//! GB = ["neso", "cache", "static"]
//! ```
//! Secrets come only from the environment or from 0600 files; the file itself holds none.

use super::{
    Carbon, DEFAULT_TIMEOUT_SECS, FactorType, IntensityProvider, StaticTable, Step,
    csv_series::CsvSeries, electricity_maps, neso, static_table::StaticProvider, watttime,
};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The file's shape.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CarbonConfig {
    /// Factor type asked of providers that offer both; recorded in each figure's provenance.
    #[serde(default = "direct")]
    pub factor_type: FactorType,
    /// Timeout of one request to a live provider, seconds.
    #[serde(default = "default_timeout")]
    pub timeout_secs: u64,
    /// Chain of zones not listed in `zones`.
    #[serde(default = "static_chain")]
    pub default_chain: Vec<String>,
    /// Providers by name.
    #[serde(default)]
    pub providers: BTreeMap<String, ProviderConfig>,
    /// Chain per zone (exact zone, else its country).
    #[serde(default)]
    pub zones: BTreeMap<String, Vec<String>>,
}

fn direct() -> FactorType {
    FactorType::Direct
}

fn default_timeout() -> u64 {
    DEFAULT_TIMEOUT_SECS
}

fn static_chain() -> Vec<String> {
    vec!["static".into()]
}

/// One provider.
#[derive(Debug, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum ProviderConfig {
    /// Electricity Maps v3.
    Electricitymaps {
        /// Base URL (default: the public API).
        base_url: Option<String>,
        /// Environment variable holding the key.
        api_key_env: Option<String>,
        /// 0600 file holding the key.
        api_key_file: Option<PathBuf>,
    },
    /// UK NESO Carbon Intensity (no key).
    Neso {
        /// Base URL (default: the public API).
        base_url: Option<String>,
        /// Zone → NESO region id.
        #[serde(default)]
        regions: BTreeMap<String, u32>,
    },
    /// WattTime v3 (MOER, marginal).
    Watttime {
        /// Base URL (default: the public API).
        base_url: Option<String>,
        /// Account name.
        username: String,
        /// Environment variable holding the password.
        password_env: Option<String>,
        /// 0600 file holding the password.
        password_file: Option<PathBuf>,
        /// Zone → WattTime region.
        #[serde(default)]
        regions: BTreeMap<String, String>,
    },
    /// Operator CSV series.
    Csv {
        /// The CSV file.
        path: PathBuf,
    },
}

/// Reads a secret from `env` or a 0600 `file`; the error names where it looked, never the value.
fn secret(what: &str, env: Option<&str>, file: Option<&Path>) -> Result<String, String> {
    if let Some(var) = env {
        return std::env::var(var)
            .map(|v| v.trim().to_owned())
            .ok()
            .filter(|v| !v.is_empty())
            .ok_or_else(|| format!("{what}: environment variable {var} is not set"));
    }
    if let Some(path) = file {
        let bytes = crate::keys::read_secret(path)
            .map_err(|err| format!("{what}: {err}"))?
            .ok_or_else(|| format!("{what}: {} does not exist", path.display()))?;
        let text = String::from_utf8(bytes)
            .map_err(|_| format!("{what}: {} is not UTF-8", path.display()))?;
        return Ok(text.trim().to_owned());
    }
    Err(format!("{what}: give an _env or a _file setting"))
}

/// A provider's `regions` map keyed by canonical zone name (see [`StaticTable::zone`]), as the
/// `[zones]` keys are: providers look a zone up by its canonical name, so a raw key such as
/// `gb-nscot` or `GBR` would never match and the provider would silently use its default.
///
/// # Errors
/// A key that is not a known zone, or two keys naming the same zone (`gb-nscot` and
/// `GB-NSCOT`), as a message starting with `what`.
fn canonical_regions<V>(
    table: &StaticTable,
    what: &str,
    regions: BTreeMap<String, V>,
) -> Result<BTreeMap<String, V>, String> {
    let mut canonical: BTreeMap<String, (String, V)> = BTreeMap::new();
    for (zone, region) in regions {
        let name = table
            .zone(&zone)
            .map_err(|err| format!("{what}: regions: {err}"))?
            .name;
        if let Some((first, _)) = canonical.get(&name) {
            return Err(format!(
                "{what}: regions: {first:?} and {zone:?} are the same grid zone {name}"
            ));
        }
        canonical.insert(name, (zone, region));
    }
    Ok(canonical
        .into_iter()
        .map(|(name, (_, region))| (name, region))
        .collect())
}

impl Carbon {
    /// Loads the config file and builds every provider.
    ///
    /// # Errors
    /// Unreadable or invalid TOML, an unknown provider in a chain, an unknown grid zone (a
    /// `[zones]` key, a `regions` key of `neso` or `watttime`, a CSV row's zone), two keys naming
    /// the same zone, a missing secret, a bad CSV series; the message never contains a secret.
    pub fn from_config_file(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|err| format!("carbon config {}: {err}", path.display()))?;
        let config: CarbonConfig = toml::from_str(&text)
            .map_err(|err| format!("carbon config {}: {err}", path.display()))?;
        Self::from_config(config)
    }

    /// Builds the service from a parsed config.
    ///
    /// # Errors
    /// See [`Self::from_config_file`].
    pub fn from_config(config: CarbonConfig) -> Result<Self, String> {
        let table = Arc::new(StaticTable::embedded()?);
        if config.timeout_secs == 0 || config.timeout_secs > 300 {
            return Err("carbon config: timeout_secs must be 1..=300".into());
        }
        let client = super::http_client(std::time::Duration::from_secs(config.timeout_secs))?;
        let mut providers: Vec<Arc<dyn IntensityProvider>> =
            vec![Arc::new(StaticProvider(table.clone()))];
        for (name, p) in config.providers {
            if name == "static" || name == "cache" {
                return Err(format!("carbon config: provider name {name:?} is reserved"));
            }
            let what = format!("carbon provider {name}");
            let provider: Arc<dyn IntensityProvider> = match p {
                ProviderConfig::Electricitymaps {
                    base_url,
                    api_key_env,
                    api_key_file,
                } => {
                    let key = secret(&what, api_key_env.as_deref(), api_key_file.as_deref())?;
                    Arc::new(electricity_maps::ElectricityMaps::new(
                        name,
                        base_url.unwrap_or_else(|| electricity_maps::DEFAULT_BASE_URL.into()),
                        key,
                        config.factor_type,
                        client.clone(),
                    ))
                }
                ProviderConfig::Neso { base_url, regions } => Arc::new(neso::Neso::new(
                    name,
                    base_url.unwrap_or_else(|| neso::DEFAULT_BASE_URL.into()),
                    canonical_regions(&table, &what, regions)?,
                    client.clone(),
                )),
                ProviderConfig::Watttime {
                    base_url,
                    username,
                    password_env,
                    password_file,
                    regions,
                } => {
                    let password =
                        secret(&what, password_env.as_deref(), password_file.as_deref())?;
                    Arc::new(watttime::WattTime::new(
                        name,
                        base_url.unwrap_or_else(|| watttime::DEFAULT_BASE_URL.into()),
                        username,
                        password,
                        canonical_regions(&table, &what, regions)?,
                        client.clone(),
                    ))
                }
                ProviderConfig::Csv { path } => {
                    let text = std::fs::read_to_string(&path)
                        .map_err(|err| format!("{what}: {}: {err}", path.display()))?;
                    Arc::new(
                        CsvSeries::parse(name, &text, &table)
                            .map_err(|err| format!("{what}: {}: {err}", path.display()))?,
                    )
                }
            };
            providers.push(provider);
        }
        let known: Vec<String> = providers.iter().map(|p| p.name().to_owned()).collect();
        let steps = |chain: Vec<String>, whose: &str| -> Result<Vec<Step>, String> {
            if chain.is_empty() {
                return Err(format!("carbon config: chain of {whose} is empty"));
            }
            chain
                .into_iter()
                .map(|s| match s.as_str() {
                    "cache" => Ok(Step::Cache),
                    n if known.iter().any(|k| k == n) => Ok(Step::Provider(s)),
                    n => Err(format!(
                        "carbon config: chain of {whose} names unknown provider {n:?}"
                    )),
                })
                .collect()
        };
        let mut chains = BTreeMap::new();
        let mut keys: BTreeMap<String, String> = BTreeMap::new();
        for (zone, chain) in config.zones {
            let canonical = table
                .zone(&zone)
                .map_err(|err| format!("carbon config: {err}"))?
                .name;
            if let Some(first) = keys.insert(canonical.clone(), zone.clone()) {
                return Err(format!(
                    "carbon config: [zones] {first:?} and {zone:?} are the same grid zone {canonical}"
                ));
            }
            chains.insert(canonical, steps(chain, &zone)?);
        }
        let default_chain = steps(config.default_chain, "default_chain")?;
        Ok(Self::new(
            table,
            providers,
            chains,
            default_chain,
            config.factor_type,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_config_builds_chains_and_secret_errors_never_show_the_secret() {
        let dir = tempfile::tempdir().expect("dir");
        let key = dir.path().join("em.key");
        std::fs::File::create(&key)
            .and_then(|mut f| f.write_all(b"super-secret-em-key\n"))
            .expect("key");
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let toml = format!(
            "factor_type = \"lifecycle\"\n[providers.em]\nkind = \"electricitymaps\"\nbase_url = \"http://127.0.0.1:9\"\napi_key_file = \"{}\"\n[zones]\nbe = [\"em\", \"cache\", \"static\"]\n",
            key.display()
        );
        let err =
            Carbon::from_config(toml::from_str(&toml).expect("toml")).expect_err("0644 key file");
        assert!(
            err.contains("chmod 600") && !err.contains("super-secret"),
            "{err}"
        );
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        let carbon = Carbon::from_config(toml::from_str(&toml).expect("toml")).expect("config");
        assert_eq!(carbon.factor_type(), FactorType::Lifecycle);
        let be = carbon.zone("BE").expect("be");
        assert_eq!(
            carbon.chain(&be),
            [
                Step::Provider("em".into()),
                Step::Cache,
                Step::Provider("static".into())
            ]
        );
        assert!(!format!("{carbon:?}").contains("super-secret"));

        for (bad, want) in [
            ("[zones]\nBE = [\"nope\"]\n", "unknown provider"),
            ("[zones]\nATLANTIS = [\"static\"]\n", "unknown grid zone"),
            (
                "[providers.em]\nkind = \"electricitymaps\"\napi_key_env = \"WATTEST_TEST_UNSET_VAR\"\n",
                "WATTEST_TEST_UNSET_VAR is not set",
            ),
            ("timeout_secs = 0\n", "timeout_secs"),
        ] {
            let err = Carbon::from_config(toml::from_str(bad).expect("toml")).expect_err(bad);
            assert!(err.contains(want), "{bad}: {err}");
        }
        assert!(toml::from_str::<CarbonConfig>("colour = 1\n").is_err());
    }

    #[tokio::test]
    async fn region_keys_are_canonical_zones_and_unknown_ones_are_refused() {
        // NESO's regional endpoint only: a national request (the fallback of an unmapped zone)
        // is a 404 and fails the chain.
        let base = crate::carbon::mock::serve(axum::Router::new().route(
            "/regional/intensity/{from}/{to}/regionid/{id}",
            axum::routing::get(
                |axum::extract::Path((from, _to, id)): axum::extract::Path<(
                    String,
                    String,
                    u32,
                )>| async move {
                    assert_eq!(id, 1);
                    let half = |f: &str, v: u32| {
                        format!(r#"{{"from":"{f}","to":"x","intensity":{{"forecast":{v}}}}}"#)
                    };
                    format!(
                        r#"{{"data":{{"regionid":1,"data":[{},{}]}}}}"#,
                        half(&from, 20),
                        half(&from.replace(":00Z", ":30Z"), 30)
                    )
                },
            ),
        ))
        .await;
        let carbon = Carbon::from_config(
            toml::from_str(&format!(
                "[providers.neso]\nkind = \"neso\"\nbase_url = \"{base}\"\n\
                 regions = {{ \"gb-nscot\" = 1 }}\n\
                 [zones]\ngbr = [\"neso\"]\nbel = [\"static\"]\n"
            ))
            .expect("toml"),
        )
        .expect("config");
        let scot = carbon.zone("GB-NSCOT").expect("zone");
        // The chain of `gbr` is the chain of `GB` and its sub-zones (alpha-3 is canonically
        // alpha-2), and the lower-case region key maps `GB-NSCOT` to NESO region 1.
        assert_eq!(carbon.chain(&scot), [Step::Provider("neso".into())]);
        let r = carbon
            .resolve(
                None::<&sea_orm::DatabaseConnection>,
                &scot,
                "2025-06-01T10:20:00Z".parse().expect("at"),
                "2025-06-02T00:00:00Z".parse().expect("now"),
            )
            .await;
        let i = r.intensity.expect("regional figure");
        assert_eq!(i.value.0, 25.0);
        assert!(i.provenance.dataset.contains("region 1"), "{i:?}");
        assert!(carbon.zone_chains().contains_key("BE"));
        for (bad, want) in [
            (
                "[providers.neso]\nkind = \"neso\"\nregions = { \"GB-NSCOT\" = 1, \"ATLANTIS\" = 2 }\n",
                "carbon provider neso: regions: unknown grid zone \"ATLANTIS\"",
            ),
            (
                "[providers.neso]\nkind = \"neso\"\nregions = { \"GB-NSCOT\" = 1, \"gb-nscot\" = 2 }\n",
                "are the same grid zone GB-NSCOT",
            ),
            (
                "[providers.wt]\nkind = \"watttime\"\nusername = \"a\"\npassword_env = \"PATH\"\nregions = { \"\" = \"X\" }\n",
                "carbon provider wt: regions: unknown grid zone",
            ),
            (
                "[zones]\nBE = [\"static\"]\nBEL = [\"static\"]\n",
                "same grid zone BE",
            ),
        ] {
            let err = Carbon::from_config(toml::from_str(bad).expect("toml")).expect_err(bad);
            assert!(err.contains(want), "{bad}: {err}");
        }
    }
}
