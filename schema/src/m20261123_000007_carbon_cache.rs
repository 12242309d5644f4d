//! Cache of carbon intensities fetched from live providers: one row per grid zone, hour and
//! provider, so the oracle never asks a provider twice for the same zone-hour.

use sea_orm_migration::prelude::*;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261123_000007_carbon_cache"
    }
}

#[derive(DeriveIden)]
enum CarbonIntensityCache {
    Table,
    Zone,
    Hour,
    Provider,
    GCo2ePerKwh,
    Provenance,
    FetchedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(CarbonIntensityCache::Table)
                    .col(
                        ColumnDef::new(CarbonIntensityCache::Zone)
                            .string()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(CarbonIntensityCache::Hour)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(CarbonIntensityCache::Provider)
                            .string()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(CarbonIntensityCache::GCo2ePerKwh)
                            .double()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(CarbonIntensityCache::Provenance)
                            .text()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(CarbonIntensityCache::FetchedAt)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .primary_key(
                        Index::create()
                            .col(CarbonIntensityCache::Zone)
                            .col(CarbonIntensityCache::Hour)
                            .col(CarbonIntensityCache::Provider),
                    )
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(CarbonIntensityCache::Table).to_owned())
            .await
    }
}
