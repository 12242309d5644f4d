//! Avoided-emissions reward and its split between the node owner and the cooperative fund.
//!
//! The reward is not a carbon offset: renewable-energy avoided-emissions credits are not recognised
//! offsets (ICVCM, 2024), so it is reported apart from the emissions inventory and never netted
//! against Scope 2 (see `docs/methodology.md`).

use wattest_shared::certificate::{Reward, reward_total, split_reward};
use wattest_shared::{Decimal6, Eur};

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
}

impl CreditPolicy {
    /// The reward for `avoided_g` grams of avoided emissions: total = ⌊t × price⌋ micro-EUR,
    /// owner = ⌊total × share⌋, fund = the remainder (the share is taken to the 10⁻⁶ percent).
    #[must_use]
    pub fn reward(&self, avoided_g: Decimal6) -> Reward {
        let share = Decimal6::from_f64(self.node_owner_share_pct.clamp(0.0, 100.0))
            .unwrap_or(Decimal6::from_millionths(70_000_000));
        let total = reward_total(avoided_g, self.price_per_tonne);
        let (node_owner, cooperative_fund) = split_reward(total, share);
        Reward {
            currency: "EUR".into(),
            price_per_tonne: self.price_per_tonne,
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
}
