//! `windows.certificate_id` is dropped: which certificate covers a window now follows from the
//! certificates themselves. A certificate covers every window of its node and job (or of its
//! node without a job) up to its `last_seq` that an earlier certificate did not, and a node's
//! chain is linear, so a window is still open exactly when its `seq` is above the `last_seq` of
//! the latest certificate of its node and job (`Storage::open_window_claims`).
//!
//! Marking the covered windows rewrote every row of a job at issuance, a second write of each
//! window (and, on SQLite, a second copy at the WAL checkpoint): without it the oracle's CPU for
//! batched ingest on one core fell by 6–15 % (three alternating runs, `docs/performance.md`).
//!
//! The index `windows_open_by_job (node_id, job_id, certificate_id)` becomes
//! `windows_by_job (node_id, job_id, seq)`, and certificates get
//! `certificates_node_job_seq (node_id, job_id, last_seq)` for the latest certificate's lookup.
//! `ALTER TABLE … DROP COLUMN` on both backends (SQLite ≥ 3.35 rewrites the table), in one
//! transaction with the migration's record. `down` adds the column back and fills it from the
//! certificates' ranges.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::{ConnectionTrait, DatabaseBackend};

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261124_000013_coverage_by_seq"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        db.execute_unprepared("DROP INDEX windows_open_by_job")
            .await?;
        db.execute_unprepared("ALTER TABLE windows DROP COLUMN certificate_id")
            .await?;
        db.execute_unprepared("CREATE INDEX windows_by_job ON windows (node_id, job_id, seq)")
            .await?;
        db.execute_unprepared(
            "CREATE INDEX certificates_node_job_seq ON certificates (node_id, job_id, last_seq)",
        )
        .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        // Null-safe equality of the job ids (windows without a job match certificates without).
        let same_job = match db.get_database_backend() {
            DatabaseBackend::Postgres => "c.job_id IS NOT DISTINCT FROM windows.job_id",
            _ => "c.job_id IS windows.job_id",
        };
        db.execute_unprepared("DROP INDEX certificates_node_job_seq")
            .await?;
        db.execute_unprepared("DROP INDEX windows_by_job").await?;
        db.execute_unprepared("ALTER TABLE windows ADD COLUMN certificate_id VARCHAR NULL")
            .await?;
        db.execute_unprepared(&format!(
            "UPDATE windows SET certificate_id = (SELECT c.id FROM certificates c \
             WHERE c.node_id = windows.node_id AND {same_job} \
             AND windows.seq BETWEEN c.first_seq AND c.last_seq)"
        ))
        .await?;
        db.execute_unprepared(
            "CREATE INDEX windows_open_by_job ON windows (node_id, job_id, certificate_id)",
        )
        .await?;
        Ok(())
    }

    /// The SQLite rewrite must not stop half-way.
    fn use_transaction(&self) -> Option<bool> {
        Some(true)
    }
}
