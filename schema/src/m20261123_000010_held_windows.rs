//! Windows held after a gap in a node's chain: signed and otherwise valid windows whose `seq` lies
//! ahead of the node's next expected one. They are stored, never credited, and appended in `seq`
//! order once the missing windows arrive (docs/protocol.md §3.4).

use sea_orm_migration::prelude::*;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261123_000010_held_windows"
    }
}

#[derive(DeriveIden)]
enum HeldWindows {
    Table,
    NodeId,
    Seq,
    Hash,
    Jws,
    ReceivedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(HeldWindows::Table)
                    .col(ColumnDef::new(HeldWindows::NodeId).string().not_null())
                    .col(ColumnDef::new(HeldWindows::Seq).big_integer().not_null())
                    .col(ColumnDef::new(HeldWindows::Hash).string().not_null())
                    .col(ColumnDef::new(HeldWindows::Jws).text().not_null())
                    .col(
                        ColumnDef::new(HeldWindows::ReceivedAt)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .primary_key(
                        Index::create()
                            .col(HeldWindows::NodeId)
                            .col(HeldWindows::Seq),
                    )
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(HeldWindows::Table).to_owned())
            .await
    }
}
