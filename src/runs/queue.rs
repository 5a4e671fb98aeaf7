//! The queue's statements. Runs are claimed in batches by one statement; the claim's token
//! (`lease_owner`) then guards every write of the run: a statement that changes a run says
//! `WHERE lease_owner = <token>`, so a worker whose lease ran out and was taken over writes
//! nothing.
//!
//! The worker is not a tenant caller: it works a run of one organization, and every statement
//! here names that organization as well as the run.

use std::time::Duration;

use chrono::{DateTime, Utc};
use entity::{execution_log, run, run_event};
use sea_orm::sea_query::{Expr, ExprTrait, LockBehavior, LockType, Order, Query};
use sea_orm::{
    ActiveValue, ColumnTrait, Condition, ConnectionTrait, DbErr, EntityTrait, PaginatorTrait,
    QueryFilter, QueryOrder, QuerySelect, Set,
};
use serde_json::Value;
use uuid::Uuid;

use crate::db::Pool;
use crate::service::now;
use crate::telemetry::metrics::QueueSnapshot;

/// A worker's hold on one run: its organization, its id, the claim's token and how long each
/// renewal (and each guarded write) extends it.
#[derive(Debug, Clone)]
pub struct Lease {
    pub org_id: Uuid,
    pub run_id: Uuid,
    pub token: String,
    pub length: Duration,
}

/// Claims up to `limit` runs that are due, oldest first, for `lease`; a run claimed for the
/// first time gets its start time and its deadline (`run_timeout` later).
///
/// One statement: `UPDATE runs … WHERE id IN (SELECT id … FOR UPDATE SKIP LOCKED LIMIT n)
/// RETURNING *`. On PostgreSQL concurrent claimers skip each other's rows; on SQLite the
/// statement is its own write transaction.
pub async fn claim(
    db: &Pool,
    limit: u64,
    lease: Duration,
    run_timeout: Duration,
) -> Result<Vec<(Lease, run::Model)>, DbErr> {
    let at = now();
    let token = Uuid::now_v7().simple().to_string();
    let due = Query::select()
        .column(run::Column::Id)
        .from(run::Entity)
        .and_where(run::Column::AvailableAt.lte(at))
        .order_by(run::Column::AvailableAt, Order::Asc)
        .limit(limit)
        .lock_with_behavior(LockType::Update, LockBehavior::SkipLocked)
        .to_owned();
    let claimed = run::Entity::update_many()
        .col_expr(run::Column::Status, Expr::value("running"))
        .col_expr(run::Column::LeaseOwner, Expr::value(token.clone()))
        .col_expr(run::Column::LeaseExpiresAt, Expr::value(later(at, lease)))
        .col_expr(run::Column::AvailableAt, Expr::value(None::<DateTime<Utc>>))
        .col_expr(
            run::Column::StartedAt,
            Expr::col(run::Column::StartedAt).if_null(at),
        )
        .col_expr(
            run::Column::DeadlineAt,
            Expr::col(run::Column::DeadlineAt).if_null(later(at, run_timeout)),
        )
        .col_expr(run::Column::UpdatedAt, Expr::value(at))
        .filter(run::Column::Id.in_subquery(due))
        .exec_with_returning(db)
        .await?;
    Ok(claimed
        .into_iter()
        .map(|run| {
            let lease = Lease {
                org_id: run.org_id,
                run_id: run.id,
                token: token.clone(),
                length: lease,
            };
            (lease, run)
        })
        .collect())
}

/// Extends a held lease. `None`: the lease is gone (taken over, or the run was finished by
/// someone else); `Some(cancel_requested)` otherwise.
pub async fn renew(db: &Pool, lease: &Lease) -> Result<Option<bool>, DbErr> {
    let statement = Query::update()
        .table(run::Entity)
        .value(run::Column::LeaseExpiresAt, later(now(), lease.length))
        .cond_where(held(lease))
        .returning_col(run::Column::CancelRequested)
        .to_owned();
    let backend = db.get_database_backend();
    match db.query_one_raw(backend.build(&statement)).await? {
        Some(row) => Ok(Some(row.try_get::<bool>("", "cancel_requested")?)),
        None => Ok(None),
    }
}

/// Gives a held run back to the queue, due at `at` (now, or after a retry's delay).
pub async fn release(db: &Pool, lease: &Lease, at: DateTime<Utc>) -> Result<bool, DbErr> {
    let released = unleased(run::Entity::update_many(), Some(at))
        .col_expr(run::Column::UpdatedAt, Expr::value(now()))
        .filter(held(lease))
        .exec(db)
        .await?;
    Ok(released.rows_affected == 1)
}

/// `update` also ends the run's lease, leaving it due at `due` (or not due: finished). A run
/// whose cancellation was asked for is due at once whatever `due` says, so that a cancel that
/// races a retry's delay does not wait that delay out.
fn unleased(
    update: sea_orm::UpdateMany<run::Entity>,
    due: Option<DateTime<Utc>>,
) -> sea_orm::UpdateMany<run::Entity> {
    let available: Expr = match due {
        Some(due) => Expr::case(
            Expr::col(run::Column::CancelRequested).eq(true),
            Expr::value(std::cmp::min(now(), due)),
        )
        .finally(Expr::value(due))
        .into(),
        None => Expr::value(None::<DateTime<Utc>>),
    };
    update
        .col_expr(run::Column::LeaseOwner, Expr::value(None::<String>))
        .col_expr(
            run::Column::LeaseExpiresAt,
            Expr::value(None::<DateTime<Utc>>),
        )
        .col_expr(run::Column::AvailableAt, available)
}

/// Returns every run whose lease ran out to the queue, due now: its worker died or stalled.
/// The worker that claims it next finds the attempt that was in flight and counts it.
pub async fn rescue(db: &Pool) -> Result<u64, DbErr> {
    let at = now();
    let rescued = unleased(run::Entity::update_many(), Some(at))
        .col_expr(run::Column::UpdatedAt, Expr::value(at))
        .filter(run::Column::LeaseExpiresAt.lt(at))
        .exec(db)
        .await?;
    Ok(rescued.rows_affected)
}

/// What one transition of a run changes: the run's row, at most one execution log, and the
/// events it adds. Written in one transaction, only while the lease is held.
#[derive(Debug, Default)]
pub struct Transition {
    pub step_index: Option<i32>,
    pub step_attempt: Option<i32>,
    /// Step id -> `{"status", "output"}` of the steps done so far.
    pub step_results: Option<Value>,
    /// A final status (`completed`, `failed`, `cancelled`) and the run's error.
    pub finish: Option<(&'static str, Option<Value>)>,
    /// Back to the queue, due then (a retry's delay).
    pub release_at: Option<DateTime<Utc>>,
    pub log: Option<LogWrite>,
    pub events: Vec<Event>,
}

/// An execution log row a transition writes.
#[derive(Debug)]
pub enum LogWrite {
    /// A new row (an attempt begins, or a step is skipped).
    Insert(Box<execution_log::ActiveModel>),
    /// The end of an attempt whose row exists.
    Finish {
        id: Uuid,
        status: &'static str,
        outputs: Option<Value>,
        error: Option<Value>,
        duration_ms: i64,
    },
}

/// An event a transition adds; its id is the run's next event number.
#[derive(Debug)]
pub struct Event {
    pub kind: &'static str,
    pub step_id: Option<String>,
    pub attempt: Option<i32>,
    pub status: &'static str,
    pub data: Value,
}

/// Writes `transition` if `lease` still holds the run, and returns the run as it is now;
/// `None` (and nothing written) when the lease is gone. A write that keeps the lease renews it.
///
/// Every JSON value it writes has U+0000 replaced by U+FFFD: PostgreSQL's `jsonb` refuses
/// `\u0000`, and an answer or a template may hold one.
pub async fn apply(
    db: &Pool,
    lease: &Lease,
    transition: Transition,
) -> Result<Option<run::Model>, DbErr> {
    let at = now();
    let added = transition.events.len() as i32;
    let txn = db.begin().await?;
    let mut update = run::Entity::update_many()
        .col_expr(
            run::Column::EventSeq,
            Expr::col(run::Column::EventSeq).add(added),
        )
        .col_expr(run::Column::UpdatedAt, Expr::value(at))
        .filter(held(lease));
    if let Some(index) = transition.step_index {
        update = update.col_expr(run::Column::StepIndex, Expr::value(index));
    }
    if let Some(attempt) = transition.step_attempt {
        update = update.col_expr(run::Column::StepAttempt, Expr::value(attempt));
    }
    if let Some(results) = transition.step_results {
        update = update.col_expr(run::Column::StepResults, Expr::value(without_nul(results)));
    }
    if let Some((status, error)) = transition.finish {
        update = unleased(update, None)
            .col_expr(run::Column::Status, Expr::value(status))
            .col_expr(run::Column::Error, Expr::value(error.map(without_nul)))
            .col_expr(run::Column::FinishedAt, Expr::value(at));
    } else if let Some(due) = transition.release_at {
        update = unleased(update, Some(due));
    } else {
        // Set here only: PostgreSQL refuses a column assigned twice in one UPDATE.
        update = update.col_expr(
            run::Column::LeaseExpiresAt,
            Expr::value(later(at, lease.length)),
        );
    }
    // Dropping the transaction rolls it back.
    let Some(updated) = update.exec_with_returning(&txn).await?.into_iter().next() else {
        return Ok(None);
    };
    match transition.log {
        Some(LogWrite::Insert(mut row)) => {
            if let Some(inputs) = row.inputs.take() {
                row.inputs = Set(without_nul(inputs));
            }
            if let Some(error) = row.error.take() {
                row.error = Set(error.map(without_nul));
            }
            execution_log::Entity::insert(*row)
                .exec_without_returning(&txn)
                .await?;
        }
        Some(LogWrite::Finish {
            id,
            status,
            outputs,
            error,
            duration_ms,
        }) => {
            execution_log::Entity::update_many()
                .col_expr(execution_log::Column::Status, Expr::value(status))
                .col_expr(
                    execution_log::Column::Outputs,
                    Expr::value(outputs.map(without_nul)),
                )
                .col_expr(
                    execution_log::Column::Error,
                    Expr::value(error.map(without_nul)),
                )
                .col_expr(execution_log::Column::DurationMs, Expr::value(duration_ms))
                .col_expr(execution_log::Column::UpdatedAt, Expr::value(at))
                .filter(execution_log::Column::OrgId.eq(lease.org_id))
                .filter(execution_log::Column::Id.eq(id))
                .exec(&txn)
                .await?;
        }
        None => {}
    }
    if added > 0 {
        let first = updated.event_seq - added + 1;
        let rows = transition
            .events
            .into_iter()
            .zip(first..)
            .map(|(event, seq)| run_event::ActiveModel {
                org_id: Set(lease.org_id),
                run_id: Set(lease.run_id),
                seq: Set(seq),
                kind: Set(event.kind.to_owned()),
                step_id: Set(event.step_id),
                attempt: Set(event.attempt),
                status: Set(event.status.to_owned()),
                data: Set(without_nul(event.data)),
                created_at: Set(at),
            });
        run_event::Entity::insert_many(rows)
            .exec_without_returning(&txn)
            .await?;
    }
    txn.commit().await?;
    Ok(Some(updated))
}

/// The execution log of attempt `attempt` of step `step_id`, if it is still `running`: an
/// attempt whose worker stopped before it ended.
pub async fn unfinished_attempt(
    db: &Pool,
    lease: &Lease,
    step_id: &str,
    attempt: i32,
) -> Result<Option<execution_log::Model>, DbErr> {
    execution_log::Entity::find()
        .filter(execution_log::Column::OrgId.eq(lease.org_id))
        .filter(execution_log::Column::ExecutionId.eq(lease.run_id.to_string()))
        .filter(execution_log::Column::StepId.eq(step_id))
        .filter(execution_log::Column::Attempt.eq(attempt))
        .filter(execution_log::Column::Status.eq("running"))
        .one(db)
        .await
}

/// `value` with every U+0000 in its strings and keys replaced by U+FFFD.
pub fn without_nul(value: Value) -> Value {
    fn clean(text: String) -> String {
        if text.contains('\0') {
            text.replace('\0', "\u{FFFD}")
        } else {
            text
        }
    }
    match value {
        Value::String(text) => Value::String(clean(text)),
        Value::Array(items) => Value::Array(items.into_iter().map(without_nul).collect()),
        Value::Object(members) => Value::Object(
            members
                .into_iter()
                .map(|(key, member)| (clean(key), without_nul(member)))
                .collect(),
        ),
        other => other,
    }
}

/// `id = run AND org_id = org AND lease_owner = token`.
fn held(lease: &Lease) -> sea_orm::Condition {
    sea_orm::Condition::all()
        .add(run::Column::Id.eq(lease.run_id))
        .add(run::Column::OrgId.eq(lease.org_id))
        .add(run::Column::LeaseOwner.eq(lease.token.as_str()))
}

/// `at + length`, saturating.
pub fn later(at: DateTime<Utc>, length: Duration) -> DateTime<Utc> {
    chrono::Duration::from_std(length)
        .ok()
        .and_then(|length| at.checked_add_signed(length))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// An execution log row of a run's step, as the executor writes it.
pub fn log_row(
    run: &run::Model,
    step_id: &str,
    attempt: i32,
    status: &str,
    inputs: Value,
) -> execution_log::ActiveModel {
    let at = now();
    execution_log::ActiveModel {
        id: Set(Uuid::now_v7()),
        org_id: Set(run.org_id),
        flow_id: Set(run.flow_id),
        user_id: Set(run.user_id),
        execution_id: Set(Some(run.id.to_string())),
        step_id: Set(step_id.to_owned()),
        status: Set(status.to_owned()),
        inputs: Set(inputs),
        outputs: Set(None),
        error: Set(None),
        run_id: Set(Some(run.id)),
        attempt: Set(Some(attempt)),
        duration_ms: ActiveValue::NotSet,
        created_at: Set(at),
        updated_at: Set(at),
    }
}

/// The queue as a scrape of `/metrics` shows it: the runs not finished, by status, and the
/// due ones, across every organization. Read through the indexes on `available_at` and
/// `lease_expires_at` (non-null only while a run waits or is leased).
pub async fn snapshot(db: &Pool) -> Result<QueueSnapshot, DbErr> {
    let at = now();
    let by_status: Vec<(String, i64)> = run::Entity::find()
        .select_only()
        .column(run::Column::Status)
        .column_as(run::Column::Id.count(), "runs")
        .filter(
            Condition::any()
                .add(run::Column::AvailableAt.is_not_null())
                .add(run::Column::LeaseExpiresAt.is_not_null()),
        )
        .group_by(run::Column::Status)
        .into_tuple()
        .all(db)
        .await?;
    let due = run::Entity::find().filter(run::Column::AvailableAt.lte(at));
    let oldest: Option<Option<DateTime<Utc>>> = due
        .clone()
        .select_only()
        .column(run::Column::AvailableAt)
        .order_by_asc(run::Column::AvailableAt)
        .into_tuple()
        .one(db)
        .await?;
    let count = |status: &str| {
        by_status
            .iter()
            .find(|(s, _)| s == status)
            .map_or(0, |(_, runs)| u64::try_from(*runs).unwrap_or(0))
    };
    Ok(QueueSnapshot {
        queued: count("queued"),
        running: count("running"),
        due: due.count(db).await?,
        lag: oldest
            .flatten()
            .and_then(|oldest| (at - oldest).to_std().ok())
            .unwrap_or_default(),
    })
}
