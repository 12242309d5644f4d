//! A token may cap the nodes enrolled with it: `tokens.max_enrollments` (null: no cap, as every
//! token created before this migration), set by `wattest-oracle token create --max-enrollments`,
//! and `tokens.enrollments`, the nodes enrolled with it so far (0 for earlier tokens: their
//! enrollments were not counted). An enrollment beyond the cap gets 403 `enrollment_limit`.

use sea_orm_migration::prelude::*;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261125_000015_token_enrollments"
    }
}

#[derive(DeriveIden)]
enum Tokens {
    Table,
    MaxEnrollments,
    Enrollments,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // One column per statement: SQLite's ALTER TABLE adds one at a time.
        manager
            .alter_table(
                Table::alter()
                    .table(Tokens::Table)
                    .add_column(ColumnDef::new(Tokens::MaxEnrollments).big_integer().null())
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Tokens::Table)
                    .add_column(
                        ColumnDef::new(Tokens::Enrollments)
                            .big_integer()
                            .not_null()
                            .default(0),
                    )
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for column in [Tokens::Enrollments, Tokens::MaxEnrollments] {
            manager
                .alter_table(
                    Table::alter()
                        .table(Tokens::Table)
                        .drop_column(column)
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }
}
