//! Avoided-emissions reward balances per node owner and for the cooperative fund
//! (`GET /v1/balances`).
//!
//! Each certificate's reward is split when it is issued (`wattest.reward`: default 70 % node
//! owner / 30 % cooperative fund, see `crate::credits`); a balance is the sum of those parts over
//! the certificates that are not revoked (a revoked certificate's reward is void). Money is
//! summed in integer micro-euros, so balances are exact. The reward is an avoided-emissions
//! reward, reported apart from Scope 2 emissions and never netted against them.

use super::problem::ApiError;
use crate::AppState;
use axum::Json;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use wattest_shared::Eur;

/// Filters of `GET /v1/balances`, with the exports' rule for the bounds
/// ([`crate::export::check_time_bounds`]): `from` must be before `to` (400 otherwise).
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct BalanceQuery {
    /// Start of the reporting period [from, to), inclusive (RFC 3339): certificates whose
    /// period ends after it; before `to`.
    pub from: Option<DateTime<Utc>>,
    /// End of the reporting period, exclusive (RFC 3339): certificates whose period ends at or
    /// before it.
    pub to: Option<DateTime<Utc>>,
}

/// One node owner's balance.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct OwnerBalance {
    /// Node owner as set by `wattest-oracle node set --owner`; `null` groups the nodes that have
    /// no owner yet (their part is still owed to whoever runs them).
    #[schema(required = true)]
    pub owner: Option<String>,
    /// Nodes of this owner with certificates counted.
    pub nodes: u64,
    /// Unrevoked certificates counted.
    pub certificates: u64,
    /// Avoided emissions of those certificates, kg CO2e.
    pub avoided_emissions_kg: f64,
    /// The owner's parts of the rewards, EUR (decimal string, 6 places).
    pub reward_eur: Eur,
}

/// The cooperative fund's balance.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct FundBalance {
    /// Certificates counted (all owners).
    pub certificates: u64,
    /// The fund's parts of the rewards, EUR (decimal string, 6 places).
    pub reward_eur: Eur,
}

/// Balances per owner and of the cooperative fund.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[schema(example = json!({"currency": "EUR", "from": null, "to": null,
    "owners": [{"owner": "acme", "nodes": 2, "certificates": 14, "avoided_emissions_kg": 0.41,
                "reward_eur": "0.007175"}],
    "cooperative_fund": {"certificates": 14, "reward_eur": "0.003075"},
    "total_reward_eur": "0.010250"}))]
pub struct Balances {
    /// ISO 4217 currency of every amount: `EUR`.
    pub currency: String,
    /// The `from` filter applied; null when none.
    #[schema(required = true)]
    pub from: Option<DateTime<Utc>>,
    /// The `to` filter applied; null when none.
    #[schema(required = true)]
    pub to: Option<DateTime<Utc>>,
    /// One entry per owner, by owner name; the owner-less group last.
    pub owners: Vec<OwnerBalance>,
    /// The cooperative fund.
    pub cooperative_fund: FundBalance,
    /// Σ owners + fund, EUR: the total reward of the certificates counted.
    pub total_reward_eur: Eur,
}

/// Reward balances per node owner and of the cooperative fund, over unrevoked certificates
/// (role auditor; admin passes).
#[utoipa::path(get, path = "/v1/balances", tag = "certificates", params(BalanceQuery), security(("bearer" = [])), responses(
    (status = 200, description = "Balances", body = Balances),
    (status = 400, description = "invalid_request (bad time, `from` not before `to`, or unknown parameter)", body = super::problem::Problem, content_type = "application/problem+json"),
))]
pub async fn balances(
    State(state): State<AppState>,
    headers: HeaderMap,
    query: Result<Query<BalanceQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Balances>, ApiError> {
    crate::auth::require(&state.storage, &headers, super::BALANCE_READERS).await?;
    let Query(q) = query.map_err(|err| ApiError::bad_request(err.body_text()))?;
    crate::export::check_time_bounds(q.from, q.to).map_err(ApiError::bad_request)?;
    let rows = state.storage.balances(q.from, q.to).await?;
    let count = |n: i64| u64::try_from(n).unwrap_or(0);
    let mut fund = 0_i64;
    let mut total = 0_i64;
    let mut certificates = 0_u64;
    let owners = rows
        .into_iter()
        .map(|r| {
            fund += r.fund_micro_eur.unwrap_or(0);
            total += r.reward_micro_eur.unwrap_or(0);
            certificates += count(r.certificates);
            OwnerBalance {
                owner: r.owner,
                nodes: count(r.nodes),
                certificates: count(r.certificates),
                avoided_emissions_kg: r.avoided_kg.unwrap_or(0.0),
                reward_eur: Eur::from_micros(r.owner_micro_eur.unwrap_or(0)),
            }
        })
        .collect();
    Ok(Json(Balances {
        currency: "EUR".into(),
        from: q.from,
        to: q.to,
        owners,
        cooperative_fund: FundBalance {
            certificates,
            reward_eur: Eur::from_micros(fund),
        },
        total_reward_eur: Eur::from_micros(total),
    }))
}
