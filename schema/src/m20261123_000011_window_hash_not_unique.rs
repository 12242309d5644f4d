//! The window hash loses its unique index. `(node_id, seq)` is unique already, and a window's
//! signed payload names its node and seq, so two rows can never hold the same JWS; the hash is
//! never looked up either. The index cost every append a random B-tree insert (a fresh page for
//! nearly every window of a commit): dropping it raised batched ingest on one oracle core by
//! 10–15 % (`docs/performance.md`).
//!
//! PostgreSQL drops the constraint. SQLite cannot drop a column's `UNIQUE`, so the table is
//! rebuilt without it (the procedure of <https://sqlite.org/lang_altertable.html#otheralter>):
//! every row is copied, so on a large database the upgrade takes as long as copying the
//! `windows` table. Both run in one transaction with the migration's record.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::{ConnectionTrait, DbBackend};

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261123_000011_window_hash_not_unique"
    }
}

/// The columns of `windows`, in table order (migration 1; no later migration changed them).
const COLUMNS: &str = "id, node_id, seq, job_id, hash, jws, claims, start_at, end_at, \
                       consumed_wh, solar_wh, is_final, salt_length, certificate_id, received_at";

#[derive(DeriveIden)]
enum Windows {
    Table,
    Id,
    NodeId,
    Seq,
    JobId,
    Hash,
    Jws,
    Claims,
    StartAt,
    EndAt,
    ConsumedWh,
    SolarWh,
    IsFinal,
    SaltLength,
    CertificateId,
    ReceivedAt,
}

#[derive(DeriveIden)]
enum Nodes {
    Table,
    Id,
}

/// The table migration 1 created, under `name`, without the hash's unique index.
fn windows_table(name: &str) -> TableCreateStatement {
    Table::create()
        .table(Alias::new(name))
        .col(
            ColumnDef::new(Windows::Id)
                .big_integer()
                .not_null()
                .auto_increment()
                .primary_key(),
        )
        .col(ColumnDef::new(Windows::NodeId).string().not_null())
        .col(ColumnDef::new(Windows::Seq).big_integer().not_null())
        .col(ColumnDef::new(Windows::JobId).string().null())
        .col(ColumnDef::new(Windows::Hash).string().not_null())
        .col(ColumnDef::new(Windows::Jws).text().not_null())
        .col(ColumnDef::new(Windows::Claims).text().not_null())
        .col(
            ColumnDef::new(Windows::StartAt)
                .timestamp_with_time_zone()
                .not_null(),
        )
        .col(
            ColumnDef::new(Windows::EndAt)
                .timestamp_with_time_zone()
                .not_null(),
        )
        .col(ColumnDef::new(Windows::ConsumedWh).double().not_null())
        .col(ColumnDef::new(Windows::SolarWh).double().not_null())
        .col(ColumnDef::new(Windows::IsFinal).boolean().not_null())
        .col(ColumnDef::new(Windows::SaltLength).string().not_null())
        .col(ColumnDef::new(Windows::CertificateId).string().null())
        .col(
            ColumnDef::new(Windows::ReceivedAt)
                .timestamp_with_time_zone()
                .not_null(),
        )
        .foreign_key(
            ForeignKey::create()
                .from(Alias::new(name), Windows::NodeId)
                .to(Nodes::Table, Nodes::Id),
        )
        .to_owned()
}

/// Migration 1's two indexes of `windows` (dropped with the old table on SQLite).
async fn create_indexes(manager: &SchemaManager<'_>) -> Result<(), DbErr> {
    manager
        .create_index(
            Index::create()
                .name("windows_node_seq")
                .table(Windows::Table)
                .col(Windows::NodeId)
                .col(Windows::Seq)
                .unique()
                .to_owned(),
        )
        .await?;
    manager
        .create_index(
            Index::create()
                .name("windows_open_by_job")
                .table(Windows::Table)
                .col(Windows::NodeId)
                .col(Windows::JobId)
                .col(Windows::CertificateId)
                .to_owned(),
        )
        .await
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        match manager.get_database_backend() {
            DbBackend::Sqlite => {
                manager
                    .create_table(windows_table("windows_rebuilt"))
                    .await?;
                db.execute_unprepared(&format!(
                    "INSERT INTO windows_rebuilt ({COLUMNS}) SELECT {COLUMNS} FROM windows"
                ))
                .await?;
                db.execute_unprepared("DROP TABLE windows").await?;
                db.execute_unprepared("ALTER TABLE windows_rebuilt RENAME TO windows")
                    .await?;
                create_indexes(manager).await
            }
            // The name PostgreSQL gave the column's UNIQUE constraint in migration 1.
            _ => db
                .execute_unprepared("ALTER TABLE windows DROP CONSTRAINT windows_hash_key")
                .await
                .map(|_| ()),
        }
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        match manager.get_database_backend() {
            DbBackend::Sqlite => db
                .execute_unprepared("CREATE UNIQUE INDEX windows_hash_key ON windows (hash)")
                .await
                .map(|_| ()),
            _ => db
                .execute_unprepared(
                    "ALTER TABLE windows ADD CONSTRAINT windows_hash_key UNIQUE (hash)",
                )
                .await
                .map(|_| ()),
        }
    }

    /// The SQLite rebuild must not stop half-way: one transaction there too.
    fn use_transaction(&self) -> Option<bool> {
        Some(true)
    }
}
