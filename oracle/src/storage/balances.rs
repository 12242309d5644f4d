//! Reward balances per node owner and for the cooperative fund (`GET /v1/balances`).

use super::{Storage, StorageError};
use chrono::{DateTime, Utc};
use sea_orm::sea_query::{Alias, Expr, ExprTrait as _, JoinType, Query};
use sea_orm::{ConnectionTrait, FromQueryResult};

/// One owner's totals over its nodes' unrevoked, not contraindicated certificates.
#[derive(Debug, Clone, PartialEq, FromQueryResult)]
pub struct OwnerTotals {
    /// Node owner (`wattest-oracle node set --owner`); `None` for nodes without an owner.
    pub owner: Option<String>,
    /// Nodes of this owner with at least one counted certificate.
    pub nodes: i64,
    /// Certificates counted (unrevoked, not `contraindicated`).
    pub certificates: i64,
    /// Σ avoided emissions, kg CO2e (sum of the per-certificate stored values).
    pub avoided_kg: Option<f64>,
    /// Σ node owner parts of the rewards, micro-EUR (exact).
    pub owner_micro_eur: Option<i64>,
    /// Σ cooperative fund parts of the same certificates, micro-EUR (exact).
    pub fund_micro_eur: Option<i64>,
    /// Σ rewards, micro-EUR (exact; = owner + fund).
    pub reward_micro_eur: Option<i64>,
}

impl Storage {
    /// Reward totals grouped by the node's current owner, over certificates that are not revoked,
    /// whose `ear.status` is not `contraindicated` (the verifier found the evidence
    /// untrustworthy: the certificate keeps its figures, but pays no reward), and that belong to
    /// the reporting period [`from`, `to`) as in the exports: `from < period_end <= to` (each
    /// bound optional), so consecutive periods never count a certificate twice. Ordered by owner,
    /// the owner-less group last.
    ///
    /// # Errors
    /// Database failure.
    pub async fn balances(
        &self,
        from: Option<DateTime<Utc>>,
        to: Option<DateTime<Utc>>,
    ) -> Result<Vec<OwnerTotals>, StorageError> {
        let c = Alias::new("c");
        let n = Alias::new("n");
        let r = Alias::new("r");
        let col = |table: &Alias, name: &str| Expr::col((table.clone(), Alias::new(name)));
        // PostgreSQL's SUM(bigint) is NUMERIC: cast back so both back-ends decode an i64.
        let sum_i64 = |name: &str| Expr::cust(format!("CAST(SUM(c.{name}) AS BIGINT)"));
        let not_contraindicated = Expr::cust(not_contraindicated_sql(
            self.db.get_database_backend(),
            "c.claims",
        ));
        let mut q = Query::select();
        q.from_as(Alias::new("certificates"), c.clone())
            .join_as(
                JoinType::LeftJoin,
                Alias::new("nodes"),
                n.clone(),
                col(&n, "id").equals((c.clone(), Alias::new("node_id"))),
            )
            .expr_as(col(&n, "owner"), Alias::new("owner"))
            .expr_as(
                Expr::cust("CAST(COUNT(DISTINCT c.node_id) AS BIGINT)"),
                Alias::new("nodes"),
            )
            .expr_as(
                Expr::cust("CAST(COUNT(*) AS BIGINT)"),
                Alias::new("certificates"),
            )
            .expr_as(Expr::cust("SUM(c.avoided_kg)"), Alias::new("avoided_kg"))
            .expr_as(sum_i64("owner_micro_eur"), Alias::new("owner_micro_eur"))
            .expr_as(sum_i64("fund_micro_eur"), Alias::new("fund_micro_eur"))
            .expr_as(sum_i64("reward_micro_eur"), Alias::new("reward_micro_eur"))
            .and_where(
                Expr::exists(
                    Query::select()
                        .expr(Expr::val(1))
                        .from_as(Alias::new("certificate_revocations"), r.clone())
                        .and_where(col(&r, "certificate_id").equals((c.clone(), Alias::new("id"))))
                        .to_owned(),
                )
                .not(),
            )
            .and_where(not_contraindicated)
            .group_by_col((n.clone(), Alias::new("owner")));
        if let Some(from) = from {
            q.and_where(col(&c, "period_end").gt(from));
        }
        if let Some(to) = to {
            q.and_where(col(&c, "period_end").lte(to));
        }
        let statement = self.db.get_database_backend().build(&q);
        let mut rows: Vec<OwnerTotals> = self
            .db
            .query_all_raw(statement)
            .await?
            .iter()
            .map(|row| OwnerTotals::from_query_result(row, ""))
            .collect::<Result<_, _>>()?;
        // NULL sorts first on SQLite and last on PostgreSQL: order here, owner-less last.
        rows.sort_by(|a, b| match (&a.owner, &b.owner) {
            (Some(x), Some(y)) => x.cmp(y),
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (None, None) => std::cmp::Ordering::Equal,
        });
        Ok(rows)
    }
}

/// SQL true when the certificate whose stored claims JSON is the column `claims` (e.g.
/// `c.claims`) does not carry `ear.status` = `contraindicated`: a claim of the signed claims,
/// not a column of its own. Money (rewards, the fund) leaves such certificates out.
pub(crate) fn not_contraindicated_sql(backend: sea_orm::DatabaseBackend, claims: &str) -> String {
    match backend {
        sea_orm::DatabaseBackend::Postgres => {
            format!("COALESCE(CAST({claims} AS JSONB) ->> 'ear.status', '') <> 'contraindicated'")
        }
        _ => {
            format!("COALESCE(json_extract({claims}, '$.\"ear.status\"'), '') <> 'contraindicated'")
        }
    }
}
