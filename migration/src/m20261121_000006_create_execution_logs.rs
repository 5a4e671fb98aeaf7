use sea_orm_migration::{prelude::*, schema::*};

use crate::columns::{
    created_at, filter_index, id, one_of, org_foreign_key, org_id, same_org_foreign_key,
    tenant_key_index, updated_at,
};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum ExecutionLogs {
    Table,
    FlowId,
    UserId,
    ExecutionId,
    StepId,
    Status,
    Inputs,
    Outputs,
    Error,
}

#[derive(DeriveIden)]
enum Flows {
    Table,
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
                    .table(ExecutionLogs::Table)
                    .col(id())
                    .col(org_id())
                    .col(uuid(ExecutionLogs::FlowId))
                    .col(uuid(ExecutionLogs::UserId))
                    .col(string_len_null(ExecutionLogs::ExecutionId, 200))
                    .col(string_len(ExecutionLogs::StepId, 200))
                    .col(one_of(
                        ExecutionLogs::Status,
                        &[
                            "queued",
                            "running",
                            "completed",
                            "failed",
                            "skipped",
                            "cancelled",
                        ],
                    ))
                    .col(json_binary(ExecutionLogs::Inputs))
                    .col(json_binary_null(ExecutionLogs::Outputs))
                    .col(json_binary_null(ExecutionLogs::Error))
                    .col(created_at())
                    .col(updated_at())
                    .foreign_key(&mut org_foreign_key(ExecutionLogs::Table))
                    .foreign_key(&mut same_org_foreign_key(
                        "fk_execution_logs_flow",
                        ExecutionLogs::Table,
                        ExecutionLogs::FlowId,
                        Flows::Table,
                    ))
                    .foreign_key(&mut same_org_foreign_key(
                        "fk_execution_logs_user",
                        ExecutionLogs::Table,
                        ExecutionLogs::UserId,
                        Users::Table,
                    ))
                    .take(),
            )
            .await?;
        manager
            .create_index(tenant_key_index(ExecutionLogs::Table))
            .await?;
        for column in [
            ExecutionLogs::FlowId,
            ExecutionLogs::UserId,
            ExecutionLogs::ExecutionId,
            ExecutionLogs::Status,
        ] {
            manager
                .create_index(filter_index(ExecutionLogs::Table, column))
                .await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(ExecutionLogs::Table).take())
            .await
    }
}
