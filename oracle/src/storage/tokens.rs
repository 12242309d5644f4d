//! Queries behind the API surface: access-token administration, node listing and `/v1/stats`.

use super::entities::{certificate, node, token, window};
use super::{Storage, StorageError};
use chrono::{DateTime, Utc};
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, EntityTrait, FromQueryResult, PaginatorTrait, QueryFilter,
    QueryOrder, QuerySelect, Set,
};

/// Totals over all issued certificates (`/v1/stats`).
#[derive(Debug, Default, Clone, Copy, FromQueryResult)]
pub struct CertificateTotals {
    /// Certificates issued.
    pub certificates: Option<i64>,
    /// Energy, Wh.
    pub consumed_wh: Option<f64>,
    /// Location-based emissions, kg CO2e.
    pub emissions_kg: Option<f64>,
    /// Avoided emissions, kg CO2e.
    pub avoided_kg: Option<f64>,
    /// Cooperative fund share of the rewards, micro-EUR.
    pub fund_micro_eur: Option<i64>,
}

impl Storage {
    /// Every token, newest first (the hash is in the row; callers must not print it).
    ///
    /// # Errors
    /// Database failure.
    pub async fn list_tokens(&self) -> Result<Vec<token::Model>, StorageError> {
        Ok(token::Entity::find()
            .order_by_desc(token::Column::CreatedAt)
            .all(&self.db)
            .await?)
    }

    /// Revokes token `id` at `now`; `false` when no such unrevoked token exists.
    ///
    /// # Errors
    /// Database failure.
    pub async fn revoke_token(&self, id: &str, now: DateTime<Utc>) -> Result<bool, StorageError> {
        let result = token::Entity::update_many()
            .col_expr(token::Column::RevokedAt, Expr::value(now))
            .filter(token::Column::Id.eq(id))
            .filter(token::Column::RevokedAt.is_null())
            .exec(&self.db)
            .await?;
        Ok(result.rows_affected == 1)
    }

    /// Records that token `id` was presented at `now`.
    ///
    /// # Errors
    /// Database failure.
    pub async fn touch_token(&self, id: &str, now: DateTime<Utc>) -> Result<(), StorageError> {
        token::ActiveModel {
            id: Set(id.to_owned()),
            last_used_at: Set(Some(now)),
            ..Default::default()
        }
        .update(&self.db)
        .await?;
        Ok(())
    }

    /// Every enrolled node, by enrollment time.
    ///
    /// # Errors
    /// Database failure.
    pub async fn list_nodes(&self) -> Result<Vec<node::Model>, StorageError> {
        Ok(node::Entity::find()
            .order_by_asc(node::Column::EnrolledAt)
            .all(&self.db)
            .await?)
    }

    /// Number of enrolled nodes, and of those whose last window ended at or after `since`.
    ///
    /// # Errors
    /// Database failure.
    pub async fn node_counts(&self, since: DateTime<Utc>) -> Result<(u64, u64), StorageError> {
        let all = node::Entity::find().count(&self.db).await?;
        let active = node::Entity::find()
            .filter(node::Column::LastEnd.gte(since))
            .count(&self.db)
            .await?;
        Ok((all, active))
    }

    /// Number of windows stored.
    ///
    /// # Errors
    /// Database failure.
    pub async fn window_count(&self) -> Result<u64, StorageError> {
        Ok(window::Entity::find().count(&self.db).await?)
    }

    /// Sums over every issued certificate that is not revoked (a revoked certificate's figures
    /// and reward are void, as in [`Storage::balances`]); the fund's share also leaves out
    /// `contraindicated` certificates, whose rewards [`Storage::balances`] does not pay either.
    ///
    /// # Errors
    /// Database failure.
    pub async fn certificate_totals(&self) -> Result<CertificateTotals, StorageError> {
        let row = certificate::Entity::find()
            .filter(Expr::cust(
                "NOT EXISTS (SELECT 1 FROM certificate_revocations r \
                 WHERE r.certificate_id = certificates.id)",
            ))
            .select_only()
            .column_as(certificate::Column::Id.count(), "certificates")
            .column_as(certificate::Column::ConsumedWh.sum(), "consumed_wh")
            .column_as(certificate::Column::EmissionsKg.sum(), "emissions_kg")
            .column_as(certificate::Column::AvoidedKg.sum(), "avoided_kg")
            // PostgreSQL's SUM(bigint) is NUMERIC: cast back so both back-ends decode an i64.
            .column_as(
                Expr::cust(format!(
                    "CAST(SUM(CASE WHEN {} THEN fund_micro_eur ELSE 0 END) AS BIGINT)",
                    super::balances::not_contraindicated_sql(
                        self.db.get_database_backend(),
                        "certificates.claims"
                    )
                )),
                "fund_micro_eur",
            )
            .into_model::<CertificateTotals>()
            .one(&self.db)
            .await?;
        Ok(row.unwrap_or_default())
    }
}
