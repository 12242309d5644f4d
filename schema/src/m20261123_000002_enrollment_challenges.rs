//! Pending TPM enrollments: the credential challenge sent to an agent, until it answers or expires.

use sea_orm_migration::prelude::*;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261123_000002_enrollment_challenges"
    }
}

#[derive(DeriveIden)]
enum EnrollmentChallenges {
    Table,
    Id,
    Name,
    Zone,
    Kid,
    PublicJwk,
    SecretSha256,
    CreatedAt,
    ExpiresAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(EnrollmentChallenges::Table)
                    .col(
                        ColumnDef::new(EnrollmentChallenges::Id)
                            .string()
                            .not_null()
                            .primary_key(),
                    )
                    .col(
                        ColumnDef::new(EnrollmentChallenges::Name)
                            .string()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(EnrollmentChallenges::Zone)
                            .string()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(EnrollmentChallenges::Kid)
                            .string()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(EnrollmentChallenges::PublicJwk)
                            .text()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(EnrollmentChallenges::SecretSha256)
                            .string()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(EnrollmentChallenges::CreatedAt)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(EnrollmentChallenges::ExpiresAt)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_enrollment_challenges_expires_at")
                    .table(EnrollmentChallenges::Table)
                    .col(EnrollmentChallenges::ExpiresAt)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(EnrollmentChallenges::Table).to_owned())
            .await
    }
}
