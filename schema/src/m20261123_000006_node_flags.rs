//! Telemetry integrity (issue #5): a node is flagged when it signed two different windows for one
//! seq (`seq_conflict`); the flag's reason is kept on the node and marks its later certificates.

use sea_orm_migration::prelude::*;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261123_000006_node_flags"
    }
}

#[derive(DeriveIden)]
enum Nodes {
    Table,
    Flag,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Nodes::Table)
                    .add_column(ColumnDef::new(Nodes::Flag).string().null())
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Nodes::Table)
                    .drop_column(Nodes::Flag)
                    .to_owned(),
            )
            .await
    }
}
