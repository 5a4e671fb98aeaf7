use sea_orm_migration::{prelude::*, schema::*};

use crate::columns::{
    created_at, filter_index, id, one_of, org_foreign_key, org_id, same_org_foreign_key,
    tenant_key_index, updated_at, ROLES,
};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum ApiKeys {
    Table,
    UserId,
    Name,
    Prefix,
    Digest,
    Role,
    ExpiresAt,
    LastUsedAt,
    RevokedAt,
}

#[derive(DeriveIden)]
enum Users {
    Table,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(ApiKeys::Table)
                    .col(id())
                    .col(org_id())
                    .col(uuid(ApiKeys::UserId))
                    .col(string_len(ApiKeys::Name, 200))
                    .col(string_len(ApiKeys::Prefix, 12))
                    // SHA-256 of the key, hex: the key itself is never stored.
                    .col(string_len(ApiKeys::Digest, 64))
                    .col(one_of(ApiKeys::Role, ROLES))
                    .col(timestamp_with_time_zone_null(ApiKeys::ExpiresAt))
                    .col(timestamp_with_time_zone_null(ApiKeys::LastUsedAt))
                    .col(timestamp_with_time_zone_null(ApiKeys::RevokedAt))
                    .col(created_at())
                    .col(updated_at())
                    .foreign_key(&mut org_foreign_key(ApiKeys::Table))
                    // A key is a credential of its user and goes with them.
                    .foreign_key(
                        same_org_foreign_key(
                            "fk_api_keys_user",
                            ApiKeys::Table,
                            ApiKeys::UserId,
                            Users::Table,
                        )
                        .on_delete(ForeignKeyAction::Cascade),
                    )
                    .take(),
            )
            .await?;
        manager
            .create_index(tenant_key_index(ApiKeys::Table))
            .await?;
        manager
            .create_index(filter_index(ApiKeys::Table, ApiKeys::UserId))
            .await?;
        // The one lookup that is not scoped by an organization: a key names its own.
        manager
            .create_index(
                Index::create()
                    .name("ux_api_keys_digest")
                    .table(ApiKeys::Table)
                    .col(ApiKeys::Digest)
                    .unique()
                    .take(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(ApiKeys::Table).take())
            .await
    }
}
