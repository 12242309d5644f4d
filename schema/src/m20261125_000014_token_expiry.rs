//! Access tokens may expire: `tokens.expires_at` (null: the token never expires, as every token
//! created before this migration). Set by `wattest-oracle token create --expires-in`; a request
//! presenting a token at or after that time gets 401 `invalid_token`.

use sea_orm_migration::prelude::*;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261125_000014_token_expiry"
    }
}

#[derive(DeriveIden)]
enum Tokens {
    Table,
    ExpiresAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Tokens::Table)
                    .add_column(
                        ColumnDef::new(Tokens::ExpiresAt)
                            .timestamp_with_time_zone()
                            .null(),
                    )
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Tokens::Table)
                    .drop_column(Tokens::ExpiresAt)
                    .to_owned(),
            )
            .await
    }
}
