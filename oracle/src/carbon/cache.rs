//! The carbon intensity cache table: figures live providers returned for past zone-hours.

use super::Intensity;
use chrono::{DateTime, Utc};
use sea_orm::sea_query::OnConflict;
use sea_orm::{
    ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, Set, TransactionSession,
    TransactionTrait,
};
use wattest_shared::GramsCo2ePerKwh;
use wattest_shared::certificate::Provenance;

/// sea-orm entity of `carbon_intensity_cache` (migration `m20261123_000007_carbon_cache`).
pub mod entity {
    use sea_orm::entity::prelude::*;

    /// A cached figure.
    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "carbon_intensity_cache")]
    pub struct Model {
        /// Grid zone (canonical name).
        #[sea_orm(primary_key, auto_increment = false)]
        pub zone: String,
        /// Hour start, UTC.
        #[sea_orm(primary_key, auto_increment = false)]
        pub hour: DateTimeUtc,
        /// Provider name from the chain config.
        #[sea_orm(primary_key, auto_increment = false)]
        pub provider: String,
        /// gCO2e/kWh.
        pub g_co2e_per_kwh: f64,
        /// The provider's provenance, JSON (without a fallback reason).
        pub provenance: String,
        /// When it was fetched.
        pub fetched_at: DateTimeUtc,
    }

    /// No relations.
    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

fn to_intensity(row: entity::Model) -> Result<Intensity, String> {
    let provenance: Provenance = serde_json::from_str(&row.provenance)
        .map_err(|err| format!("cached provenance is corrupt: {err}"))?;
    Ok(Intensity {
        value: GramsCo2ePerKwh(row.g_co2e_per_kwh),
        provenance,
    })
}

/// The cached figure of `provider` for `zone` at `hour`.
///
/// # Errors
/// Database failure or a corrupt row, as a message (no secrets involved).
pub async fn lookup<C: ConnectionTrait>(
    db: &C,
    zone: &str,
    hour: DateTime<Utc>,
    provider: &str,
) -> Result<Option<Intensity>, String> {
    let row = entity::Entity::find_by_id((zone.to_owned(), hour, provider.to_owned()))
        .one(db)
        .await
        .map_err(|err| format!("cache: {err}"))?;
    row.map(to_intensity).transpose()
}

/// Any cached figure for `zone` at `hour` (the earliest fetched, so repeated answers agree).
///
/// # Errors
/// Database failure or a corrupt row.
pub async fn lookup_any<C: ConnectionTrait>(
    db: &C,
    zone: &str,
    hour: DateTime<Utc>,
) -> Result<Option<Intensity>, String> {
    let row = entity::Entity::find()
        .filter(entity::Column::Zone.eq(zone))
        .filter(entity::Column::Hour.eq(hour))
        .order_by_asc(entity::Column::FetchedAt)
        .one(db)
        .await
        .map_err(|err| format!("cache: {err}"))?;
    row.map(to_intensity).transpose()
}

/// Stores a figure; a second store of the same zone-hour-provider keeps the first. Runs in its
/// own transaction, a savepoint when `db` is a transaction already (an issuance's): a failed
/// store is rolled back alone and leaves the caller's transaction usable (PostgreSQL aborts a
/// transaction on any failed statement otherwise).
///
/// # Errors
/// Database failure.
pub async fn store<C: ConnectionTrait + TransactionTrait>(
    db: &C,
    zone: &str,
    hour: DateTime<Utc>,
    provider: &str,
    intensity: &Intensity,
    now: DateTime<Utc>,
) -> Result<(), String> {
    let mut provenance = intensity.provenance.clone();
    provenance.fallback_reason = None;
    let row = entity::ActiveModel {
        zone: Set(zone.to_owned()),
        hour: Set(hour),
        provider: Set(provider.to_owned()),
        g_co2e_per_kwh: Set(intensity.value.0),
        provenance: Set(serde_json::to_string(&provenance).map_err(|err| err.to_string())?),
        fetched_at: Set(now),
    };
    let txn = db.begin().await.map_err(|err| format!("cache: {err}"))?;
    let inserted = entity::Entity::insert(row)
        .on_conflict(
            OnConflict::columns([
                entity::Column::Zone,
                entity::Column::Hour,
                entity::Column::Provider,
            ])
            .do_nothing()
            .to_owned(),
        )
        .exec(&txn)
        .await;
    match inserted {
        // The row was there already (another replica stored it first): keep the first.
        Ok(_) | Err(sea_orm::DbErr::RecordNotInserted) => {
            txn.commit().await.map_err(|err| format!("cache: {err}"))
        }
        // Dropping `txn` rolls the savepoint back.
        Err(err) => Err(format!("cache: {err}")),
    }
}
