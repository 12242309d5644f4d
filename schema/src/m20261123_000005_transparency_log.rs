//! The transparency log (RFC 9162 Merkle tree of issued certificates) and certificate revocations.
//!
//! `log_leaves` maps each leaf index to its certificate; `log_nodes` stores the hash of every
//! complete subtree (level 0 = leaf hashes), so any root, inclusion or consistency proof needs
//! O(log n) lookups; `log_head` is a single row (id 1) holding the current size and root, locked
//! by the appender (the single sequencer, also across replicas on PostgreSQL).

use sea_orm_migration::prelude::*;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261123_000005_transparency_log"
    }
}

#[derive(DeriveIden)]
enum LogLeaves {
    Table,
    Idx,
    CertificateId,
    AppendedAt,
}

#[derive(DeriveIden)]
enum LogNodes {
    Table,
    Level,
    Idx,
    Hash,
}

#[derive(DeriveIden)]
enum LogHead {
    Table,
    Id,
    Size,
    RootHash,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum CertificateRevocations {
    Table,
    CertificateId,
    RevokedAt,
    Reason,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(LogLeaves::Table)
                    .col(
                        ColumnDef::new(LogLeaves::Idx)
                            .big_integer()
                            .not_null()
                            .primary_key(),
                    )
                    .col(
                        ColumnDef::new(LogLeaves::CertificateId)
                            .string()
                            .not_null()
                            .unique_key(),
                    )
                    .col(
                        ColumnDef::new(LogLeaves::AppendedAt)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(LogNodes::Table)
                    .col(ColumnDef::new(LogNodes::Level).small_integer().not_null())
                    .col(ColumnDef::new(LogNodes::Idx).big_integer().not_null())
                    .col(ColumnDef::new(LogNodes::Hash).blob().not_null())
                    .primary_key(Index::create().col(LogNodes::Level).col(LogNodes::Idx))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(LogHead::Table)
                    .col(
                        ColumnDef::new(LogHead::Id)
                            .integer()
                            .not_null()
                            .primary_key(),
                    )
                    .col(ColumnDef::new(LogHead::Size).big_integer().not_null())
                    .col(ColumnDef::new(LogHead::RootHash).blob().not_null())
                    .col(
                        ColumnDef::new(LogHead::UpdatedAt)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .to_owned(),
            )
            .await?;
        // The empty tree: size 0, root SHA-256("") (RFC 9162 §2.1.1).
        let empty_root: Vec<u8> = vec![
            0xe3, 0xb0, 0xc4, 0x42, 0x98, 0xfc, 0x1c, 0x14, 0x9a, 0xfb, 0xf4, 0xc8, 0x99, 0x6f,
            0xb9, 0x24, 0x27, 0xae, 0x41, 0xe4, 0x64, 0x9b, 0x93, 0x4c, 0xa4, 0x95, 0x99, 0x1b,
            0x78, 0x52, 0xb8, 0x55,
        ];
        manager
            .exec_stmt(
                Query::insert()
                    .into_table(LogHead::Table)
                    .columns([
                        LogHead::Id,
                        LogHead::Size,
                        LogHead::RootHash,
                        LogHead::UpdatedAt,
                    ])
                    .values_panic([
                        1.into(),
                        0i64.into(),
                        empty_root.into(),
                        Expr::current_timestamp(),
                    ])
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(CertificateRevocations::Table)
                    .col(
                        ColumnDef::new(CertificateRevocations::CertificateId)
                            .string()
                            .not_null()
                            .primary_key(),
                    )
                    .col(
                        ColumnDef::new(CertificateRevocations::RevokedAt)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(CertificateRevocations::Reason)
                            .string()
                            .not_null(),
                    )
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            LogLeaves::Table.into_iden(),
            LogNodes::Table.into_iden(),
            LogHead::Table.into_iden(),
            CertificateRevocations::Table.into_iden(),
        ] {
            manager
                .drop_table(Table::drop().table(table).to_owned())
                .await?;
        }
        Ok(())
    }
}
