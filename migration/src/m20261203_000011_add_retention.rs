use sea_orm_migration::prelude::*;

use crate::columns::Common;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Organizations {
    Table,
    /// Days that execution logs and finished runs are kept; null: the server's RETENTION_DAYS,
    /// 0: for ever.
    RetentionDays,
}

#[derive(DeriveIden)]
enum ExecutionLogs {
    Table,
}

#[derive(DeriveIden)]
enum Runs {
    Table,
    FinishedAt,
}

/// The indexes the pruner walks: an organization's oldest rows first.
const PRUNE_INDEXES: [(&str, &str); 2] = [
    ("ix_execution_logs_org_created_at", "execution_logs"),
    ("ix_runs_org_finished_at", "runs"),
];

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Organizations::Table)
                    .add_column(
                        ColumnDef::new(Organizations::RetentionDays)
                            .integer()
                            .null()
                            .check(Expr::col(Organizations::RetentionDays).between(0, 3650)),
                    )
                    .take(),
            )
            .await?;
        for (name, table, column) in [
            (
                PRUNE_INDEXES[0].0,
                ExecutionLogs::Table.into_iden(),
                Common::CreatedAt.into_iden(),
            ),
            (
                PRUNE_INDEXES[1].0,
                Runs::Table.into_iden(),
                Runs::FinishedAt.into_iden(),
            ),
        ] {
            manager
                .create_index(
                    Index::create()
                        .name(name)
                        .table(table)
                        .col(Common::OrgId)
                        .col(column)
                        .take(),
                )
                .await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for (name, table) in PRUNE_INDEXES {
            manager
                .drop_index(Index::drop().name(name).table(Alias::new(table)).to_owned())
                .await?;
        }
        manager
            .alter_table(
                Table::alter()
                    .table(Organizations::Table)
                    .drop_column(Organizations::RetentionDays)
                    .take(),
            )
            .await
    }
}
