use sea_orm_migration::{prelude::*, schema::*};

use crate::columns::{created_at, id, org_foreign_key, org_id, tenant_key_index, updated_at};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Flows {
    Table,
    Name,
    Steps,
    Version,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Flows::Table)
                    .col(id())
                    .col(org_id())
                    .col(string_len_null(Flows::Name, 200))
                    .col(json_binary(Flows::Steps))
                    .col(integer(Flows::Version).default(1))
                    .col(created_at())
                    .col(updated_at())
                    .foreign_key(&mut org_foreign_key(Flows::Table))
                    .take(),
            )
            .await?;
        manager.create_index(tenant_key_index(Flows::Table)).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(Flows::Table).take())
            .await
    }
}
