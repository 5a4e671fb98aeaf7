use sea_orm_migration::{prelude::*, schema::*};

use crate::columns::{
    created_at, id, one_of, org_foreign_key, org_id, tenant_key_index, updated_at,
};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Tools {
    Table,
    OrgId,
    Name,
    BaseUrl,
    AuthType,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Tools::Table)
                    .col(id())
                    .col(org_id())
                    .col(string_len(Tools::Name, 200))
                    .col(string_len(Tools::BaseUrl, 2048))
                    .col(one_of(
                        Tools::AuthType,
                        &["none", "apiKey", "bearer", "basic", "oauth2"],
                    ))
                    .col(created_at())
                    .col(updated_at())
                    .foreign_key(&mut org_foreign_key(Tools::Table))
                    .take(),
            )
            .await?;
        manager.create_index(tenant_key_index(Tools::Table)).await?;
        manager
            .create_index(
                Index::create()
                    .name("ux_tools_org_name")
                    .table(Tools::Table)
                    .col(Tools::OrgId)
                    .col(Tools::Name)
                    .unique()
                    .take(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(Tools::Table).take())
            .await
    }
}
