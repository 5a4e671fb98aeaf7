use sea_orm_migration::{prelude::*, schema::*};

use crate::columns::{
    created_at, filter_index, id, one_of, org_foreign_key, org_id, same_org_foreign_key,
    tenant_key_index, updated_at,
};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Actions {
    Table,
    ToolId,
    Name,
    Method,
    Endpoint,
    Schema,
    ExecuteIf,
}

#[derive(DeriveIden)]
enum Tools {
    Table,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Actions::Table)
                    .col(id())
                    .col(org_id())
                    .col(uuid(Actions::ToolId))
                    .col(string_len_null(Actions::Name, 200))
                    .col(one_of(
                        Actions::Method,
                        &["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"],
                    ))
                    .col(string_len(Actions::Endpoint, 2048))
                    .col(json_binary(Actions::Schema))
                    .col(json_binary_null(Actions::ExecuteIf))
                    .col(created_at())
                    .col(updated_at())
                    .foreign_key(&mut org_foreign_key(Actions::Table))
                    .foreign_key(&mut same_org_foreign_key(
                        "fk_actions_tool",
                        Actions::Table,
                        Actions::ToolId,
                        Tools::Table,
                    ))
                    .take(),
            )
            .await?;
        manager
            .create_index(tenant_key_index(Actions::Table))
            .await?;
        manager
            .create_index(filter_index(Actions::Table, Actions::ToolId))
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(Actions::Table).take())
            .await
    }
}
