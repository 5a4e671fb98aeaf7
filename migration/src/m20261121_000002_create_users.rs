use sea_orm_migration::{prelude::*, schema::*};

use crate::columns::{created_at, id, org_foreign_key, org_id, tenant_key_index, updated_at};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Users {
    Table,
    OrgId,
    Email,
    EmailFolded,
    Name,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Users::Table)
                    .col(id())
                    .col(org_id())
                    .col(string_len(Users::Email, 254))
                    // Folded by the server (Unicode lower case), so uniqueness ignores letter case
                    // the same way on every backend.
                    .col(text(Users::EmailFolded))
                    .col(string_len_null(Users::Name, 200))
                    .col(created_at())
                    .col(updated_at())
                    .foreign_key(&mut org_foreign_key(Users::Table))
                    .take(),
            )
            .await?;
        manager.create_index(tenant_key_index(Users::Table)).await?;
        manager
            .create_index(
                Index::create()
                    .name("ux_users_org_email")
                    .table(Users::Table)
                    .col(Users::OrgId)
                    .col(Users::EmailFolded)
                    .unique()
                    .take(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(Users::Table).take())
            .await
    }
}
