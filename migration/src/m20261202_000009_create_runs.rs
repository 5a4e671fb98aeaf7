use sea_orm_migration::{prelude::*, schema::*};

use crate::columns::{
    created_at, filter_index, id, one_of, org_foreign_key, org_id, same_org_foreign_key,
    tenant_key_index, updated_at, Common,
};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Runs {
    Table,
    FlowId,
    UserId,
    FlowVersion,
    Steps,
    Status,
    Inputs,
    StepResults,
    Error,
    IdempotencyKey,
    RequestDigest,
    StepIndex,
    StepAttempt,
    EventSeq,
    AvailableAt,
    LeaseOwner,
    LeaseExpiresAt,
    CancelRequested,
    DeadlineAt,
    StartedAt,
    FinishedAt,
}

#[derive(DeriveIden)]
enum RunEvents {
    Table,
    RunId,
    Seq,
    Kind,
    StepId,
    Attempt,
    Status,
    Data,
}

#[derive(DeriveIden)]
enum ExecutionLogs {
    Table,
    RunId,
    Attempt,
    DurationMs,
}

#[derive(DeriveIden)]
enum Flows {
    Table,
}

#[derive(DeriveIden)]
enum Users {
    Table,
}

/// A run's states as the API shows them.
const RUN_STATUSES: &[&str] = &["queued", "running", "completed", "failed", "cancelled"];

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Runs::Table)
                    .col(id())
                    .col(org_id())
                    .col(uuid(Runs::FlowId))
                    .col(uuid(Runs::UserId))
                    .col(integer(Runs::FlowVersion))
                    // The flow's steps as they were when the run was started: a later edit of
                    // the flow does not change a run under way.
                    .col(json_binary(Runs::Steps))
                    .col(one_of(Runs::Status, RUN_STATUSES))
                    .col(json_binary(Runs::Inputs))
                    // Step id -> {"status", "output"} of the steps done so far: what later steps'
                    // expressions see; the run's `outputs` are the completed ones.
                    .col(json_binary(Runs::StepResults))
                    .col(json_binary_null(Runs::Error))
                    .col(string_len_null(Runs::IdempotencyKey, 200))
                    // SHA-256 (hex) of what was asked for, to tell a repeat from a different call.
                    .col(string_len_null(Runs::RequestDigest, 64))
                    // The queue's bookkeeping: the step to work next and how many attempts of it
                    // have begun; the number of events so far.
                    .col(integer(Runs::StepIndex).default(0))
                    .col(integer(Runs::StepAttempt).default(0))
                    .col(integer(Runs::EventSeq).default(0))
                    // Set while the run waits to be claimed (queued, or between attempts); null
                    // while a worker holds it and once it is finished.
                    .col(timestamp_with_time_zone_null(Runs::AvailableAt))
                    .col(string_len_null(Runs::LeaseOwner, 64))
                    .col(timestamp_with_time_zone_null(Runs::LeaseExpiresAt))
                    .col(boolean(Runs::CancelRequested).default(false))
                    .col(timestamp_with_time_zone_null(Runs::DeadlineAt))
                    .col(created_at())
                    .col(timestamp_with_time_zone_null(Runs::StartedAt))
                    .col(timestamp_with_time_zone_null(Runs::FinishedAt))
                    .col(updated_at())
                    .foreign_key(&mut org_foreign_key(Runs::Table))
                    // A run goes with its flow and with the user who started it.
                    .foreign_key(
                        same_org_foreign_key(
                            "fk_runs_flow",
                            Runs::Table,
                            Runs::FlowId,
                            Flows::Table,
                        )
                        .on_delete(ForeignKeyAction::Cascade),
                    )
                    .foreign_key(
                        same_org_foreign_key(
                            "fk_runs_user",
                            Runs::Table,
                            Runs::UserId,
                            Users::Table,
                        )
                        .on_delete(ForeignKeyAction::Cascade),
                    )
                    .take(),
            )
            .await?;
        manager.create_index(tenant_key_index(Runs::Table)).await?;
        for column in [Runs::FlowId, Runs::UserId, Runs::Status] {
            manager
                .create_index(filter_index(Runs::Table, column))
                .await?;
        }
        manager
            .create_index(
                Index::create()
                    .name("ux_runs_org_idempotency_key")
                    .table(Runs::Table)
                    .col(Common::OrgId)
                    .col(Runs::IdempotencyKey)
                    .unique()
                    .take(),
            )
            .await?;
        // The claim's and the rescuer's scans; rows that are neither waiting nor leased hold
        // nulls there.
        for (name, column) in [
            ("ix_runs_available_at", Runs::AvailableAt),
            ("ix_runs_lease_expires_at", Runs::LeaseExpiresAt),
        ] {
            manager
                .create_index(
                    Index::create()
                        .name(name)
                        .table(Runs::Table)
                        .col(column)
                        .take(),
                )
                .await?;
        }

        manager
            .create_table(
                Table::create()
                    .table(RunEvents::Table)
                    .col(org_id())
                    .col(uuid(RunEvents::RunId))
                    .col(integer(RunEvents::Seq))
                    .col(one_of(RunEvents::Kind, &["step", "run"]))
                    .col(string_len_null(RunEvents::StepId, 200))
                    .col(integer_null(RunEvents::Attempt))
                    .col(string_len(RunEvents::Status, 16))
                    .col(json_binary(RunEvents::Data))
                    .col(created_at())
                    .primary_key(
                        Index::create()
                            .col(Common::OrgId)
                            .col(RunEvents::RunId)
                            .col(RunEvents::Seq),
                    )
                    .foreign_key(
                        same_org_foreign_key(
                            "fk_run_events_run",
                            RunEvents::Table,
                            RunEvents::RunId,
                            Runs::Table,
                        )
                        .on_delete(ForeignKeyAction::Cascade),
                    )
                    .take(),
            )
            .await?;

        // SQLite cannot add a foreign key to an existing table; `runId` equals `executionId`,
        // and a run's logs go with its flow.
        for column in [
            uuid_null(ExecutionLogs::RunId),
            integer_null(ExecutionLogs::Attempt),
            big_integer_null(ExecutionLogs::DurationMs),
        ] {
            manager
                .alter_table(
                    Table::alter()
                        .table(ExecutionLogs::Table)
                        .add_column(column)
                        .take(),
                )
                .await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for column in [
            ExecutionLogs::DurationMs,
            ExecutionLogs::Attempt,
            ExecutionLogs::RunId,
        ] {
            manager
                .alter_table(
                    Table::alter()
                        .table(ExecutionLogs::Table)
                        .drop_column(column)
                        .take(),
                )
                .await?;
        }
        manager
            .drop_table(Table::drop().table(RunEvents::Table).take())
            .await?;
        manager
            .drop_table(Table::drop().table(Runs::Table).take())
            .await
    }
}
