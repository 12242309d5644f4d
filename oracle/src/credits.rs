//! Avoided-emissions reward and its split between the node owner and the cooperative fund.
//!
//! The reward is not a carbon offset: renewable-energy avoided-emissions credits are not recognised
//! offsets (ICVCM, 2024), so it is reported apart from the emissions inventory and never netted
//! against Scope 2 (see `docs/methodology.md`).

use std::collections::BTreeMap;
use wattest_shared::certificate::{Reward, reward_total, split_reward};
use wattest_shared::{Decimal6, Eur, SourceKind};

/// Default price per tonne of avoided CO2e: €25/t, the figure of the project's founding document
/// (the KoproGo seed). EU ETS averaged ≈ €67/t in 2024; set `--price-eur-per-tonne` to change it.
pub const DEFAULT_PRICE_EUR_PER_TONNE: &str = "25";
/// Default node owner share, percent: 70 % owner, 30 % cooperative fund (KoproGo seed).
pub const DEFAULT_NODE_OWNER_SHARE_PCT: f64 = 70.0;

/// Reward configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct CreditPolicy {
    /// Price per tonne of avoided CO2e, EUR.
    pub price_per_tonne: Eur,
    /// Node owner's share, percent in [0, 100].
    pub node_owner_share_pct: f64,
    /// Price per tonne by generating source kind (`--reward-rate solar=30`), overriding
    /// `price_per_tonne` for the avoided emissions of that kind's production.
    pub source_rates: BTreeMap<SourceKind, Eur>,
}

/// Source kinds that generate energy, and so avoid emissions: the kinds a `--reward-rate` may
/// name. The wire contract's only generating kind is `solar` (agent/src/sources); every other
/// kind consumes.
pub const GENERATING_KINDS: &[SourceKind] = &[SourceKind::Solar];

/// Parses one per-source rate, `KIND=EUR_PER_TONNE` (e.g. `solar=30.5`).
///
/// # Errors
/// Not `KIND=PRICE`, a kind that generates nothing, or a price that is not a non-negative
/// decimal with at most 6 places.
pub fn parse_source_rate(text: &str) -> Result<(SourceKind, Eur), String> {
    let (kind, price) = text
        .split_once('=')
        .ok_or_else(|| format!("{text:?} is not KIND=EUR_PER_TONNE, e.g. solar=30"))?;
    let names: Vec<&str> = GENERATING_KINDS.iter().map(|k| k.as_str()).collect();
    let kind = GENERATING_KINDS
        .iter()
        .copied()
        .find(|k| k.as_str() == kind.trim())
        .ok_or_else(|| {
            format!(
                "{kind:?} generates no energy; a reward rate can name: {}",
                names.join(", ")
            )
        })?;
    let price = Eur::parse(price.trim())
        .filter(|p| p.micros() >= 0)
        .ok_or_else(|| format!("{price:?} is not a non-negative EUR amount"))?;
    Ok((kind, price))
}

impl CreditPolicy {
    /// The price per tonne applied to avoided emissions of `kind`'s production: its
    /// `source_rates` entry, else `price_per_tonne`.
    #[must_use]
    pub fn price_for(&self, kind: SourceKind) -> Eur {
        self.source_rates
            .get(&kind)
            .copied()
            .unwrap_or(self.price_per_tonne)
    }

    /// The reward for `avoided_g` grams of emissions avoided by on-site solar production (the
    /// only generating kind): total = ⌊t × price⌋ micro-EUR at [`Self::price_for`] solar,
    /// owner = ⌊total × share⌋, fund = the remainder (the share is taken to the 10⁻⁶ percent).
    #[must_use]
    pub fn reward(&self, avoided_g: Decimal6) -> Reward {
        let share = Decimal6::from_f64(self.node_owner_share_pct.clamp(0.0, 100.0))
            .unwrap_or(Decimal6::from_millionths(70_000_000));
        let price = self.price_for(SourceKind::Solar);
        let total = reward_total(avoided_g, price);
        let (node_owner, cooperative_fund) = split_reward(total, share);
        Reward {
            currency: "EUR".into(),
            price_per_tonne: price,
            total,
            node_owner,
            cooperative_fund,
            node_owner_share_pct: share,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_split_is_seventy_thirty() {
        let policy = CreditPolicy {
            price_per_tonne: Eur::parse(DEFAULT_PRICE_EUR_PER_TONNE).expect("price"),
            node_owner_share_pct: DEFAULT_NODE_OWNER_SHARE_PCT,
            source_rates: BTreeMap::new(),
        };
        // 40 kg avoided × €25/t = €1.00 → €0.70 / €0.30.
        let r = policy.reward(Decimal6::from_millionths(40_000_000_000));
        assert_eq!(
            (
                r.total.to_string(),
                r.node_owner.to_string(),
                r.cooperative_fund.to_string()
            ),
            ("1.000000".into(), "0.700000".into(), "0.300000".into())
        );
        assert_eq!(policy.reward(Decimal6::ZERO).total.micros(), 0);
    }

    #[test]
    fn a_source_rate_overrides_the_default_price_for_that_source() {
        let (kind, price) = parse_source_rate("solar=30").expect("rate");
        let policy = CreditPolicy {
            price_per_tonne: Eur::parse("25").expect("price"),
            node_owner_share_pct: 70.0,
            source_rates: BTreeMap::from([(kind, price)]),
        };
        // 40 kg avoided × €30/t = €1.20 → €0.84 / €0.36; the claim names the price applied.
        let r = policy.reward(Decimal6::from_millionths(40_000_000_000));
        assert_eq!(r.price_per_tonne.to_string(), "30.000000");
        assert_eq!(
            (r.total.to_string(), r.node_owner.to_string()),
            ("1.200000".into(), "0.840000".into())
        );
        assert_eq!(policy.price_for(SourceKind::Gpu).to_string(), "25.000000");
    }

    #[test]
    fn source_rates_name_a_generating_kind_and_a_price() {
        assert!(
            parse_source_rate("gpu=30")
                .expect_err("gpu generates nothing")
                .contains("solar")
        );
        assert!(parse_source_rate("wind").is_err());
        assert!(parse_source_rate("solar=-1").is_err());
        assert!(parse_source_rate("solar=abc").is_err());
        assert_eq!(
            parse_source_rate(" solar = 12.5 ")
                .expect("spaces")
                .1
                .micros(),
            12_500_000
        );
    }
}
