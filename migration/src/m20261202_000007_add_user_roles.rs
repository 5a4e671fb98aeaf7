use sea_orm_migration::prelude::*;

use crate::columns::ROLES;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Users {
    Table,
    Id,
    OrgId,
    Role,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // Every user so far could do what an editor can; that is the default.
        manager
            .alter_table(
                Table::alter()
                    .table(Users::Table)
                    .add_column(
                        ColumnDef::new(Users::Role)
                            .string_len(16)
                            .not_null()
                            .default("editor")
                            .check(Expr::col(Users::Role).is_in(ROLES.iter().copied())),
                    )
                    .take(),
            )
            .await?;
        // An organization always has an owner: its first user, the one with no earlier user
        // (ids are time-ordered UUIDv7).
        let earlier = Alias::new("earlier");
        let earlier_users = Query::select()
            .expr(Expr::cust("1"))
            .from_as(Users::Table, earlier.clone())
            .and_where(
                Expr::col((earlier.clone(), Users::OrgId)).equals((Users::Table, Users::OrgId)),
            )
            .and_where(Expr::col((earlier, Users::Id)).lt(Expr::col((Users::Table, Users::Id))))
            .take();
        manager
            .exec_stmt(
                Query::update()
                    .table(Users::Table)
                    .value(Users::Role, "owner")
                    .and_where(Expr::exists(earlier_users).not())
                    .take(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Users::Table)
                    .drop_column(Users::Role)
                    .take(),
            )
            .await
    }
}
