//! `windows.claims` is dropped: it held the window's signed payload a second time, next to the
//! compact JWS (`windows.jws`) whose payload segment is that very JSON, base64url-encoded. The
//! copy made a window row about 40 % larger, and every accepted window wrote it to the database
//! (and, on SQLite, again at the WAL checkpoint): dropping it cut the oracle's CPU for batched
//! ingest on one core by about 7 % (best of four alternating runs, `docs/performance.md`). Issuance now decodes the claims from the
//! JWS (`Storage::open_window_claims`).
//!
//! `ALTER TABLE … DROP COLUMN` on both backends (SQLite ≥ 3.35: it rewrites every row of the
//! table, so on a large database the upgrade takes about as long as copying `windows`), in one
//! transaction with the migration's record. `down` adds the column back holding `''`: the
//! payloads remain in `jws`, but an oracle of migration 11 reads its claims from the column, so
//! downgrading is only for an empty or freshly restored database.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::ConnectionTrait;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261124_000012_window_claims_in_jws"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .get_connection()
            .execute_unprepared("ALTER TABLE windows DROP COLUMN claims")
            .await
            .map(|_| ())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .get_connection()
            .execute_unprepared("ALTER TABLE windows ADD COLUMN claims TEXT NOT NULL DEFAULT ''")
            .await
            .map(|_| ())
    }

    /// The SQLite rewrite must not stop half-way.
    fn use_transaction(&self) -> Option<bool> {
        Some(true)
    }
}
