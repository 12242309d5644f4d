//! Node owner and embodied emissions, for compliance exports (`node_owner` column, SCI `M`), and
//! the index exports stream certificates in.

use sea_orm_migration::prelude::*;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261123_000008_node_owner"
    }
}

#[derive(DeriveIden)]
enum Nodes {
    Table,
    /// Who owns the node (organisation or person), set by an admin; NULL until set.
    Owner,
    /// Embodied emissions of the node's hardware (SCI `TE`), kgCO2e as an exact decimal string
    /// with at most six decimals; NULL when unknown.
    EmbodiedKgCo2e,
    /// Expected lifespan of that hardware (SCI `EL`), hours; NULL when unknown.
    EmbodiedLifespanHours,
}

#[derive(DeriveIden)]
enum Certificates {
    Table,
    IssuedAt,
    Id,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // One column per statement: SQLite's ALTER TABLE adds a single column at a time.
        manager
            .alter_table(
                Table::alter()
                    .table(Nodes::Table)
                    .add_column(ColumnDef::new(Nodes::Owner).string().null())
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Nodes::Table)
                    .add_column(ColumnDef::new(Nodes::EmbodiedKgCo2e).string().null())
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Nodes::Table)
                    .add_column(
                        ColumnDef::new(Nodes::EmbodiedLifespanHours)
                            .big_integer()
                            .null(),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_nodes_owner")
                    .table(Nodes::Table)
                    .col(Nodes::Owner)
                    .to_owned(),
            )
            .await?;
        // Exports stream certificates in (issued_at, id) order; with this index the first rows
        // leave at once instead of after a sort of the whole table.
        manager
            .create_index(
                Index::create()
                    .name("idx_certificates_issued_at_id")
                    .table(Certificates::Table)
                    .col(Certificates::IssuedAt)
                    .col(Certificates::Id)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for index in ["idx_certificates_issued_at_id", "idx_nodes_owner"] {
            manager
                .drop_index(Index::drop().name(index).to_owned())
                .await?;
        }
        for column in [
            Nodes::EmbodiedLifespanHours,
            Nodes::EmbodiedKgCo2e,
            Nodes::Owner,
        ] {
            manager
                .alter_table(
                    Table::alter()
                        .table(Nodes::Table)
                        .drop_column(column)
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }
}
