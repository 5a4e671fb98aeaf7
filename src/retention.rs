//! Retention (API.md, Retention): execution logs and finished runs older than their
//! organization's limit are deleted, oldest first, in batches small enough that no request
//! waits on them.
//!
//! An organization's `retentionDays` wins over `RETENTION_DAYS`; 0 keeps its rows for ever. A
//! run that has not finished is never deleted, nor are its logs, however old. On PostgreSQL
//! each batch is a transaction that first tries a transaction-scoped advisory lock: a process
//! that finds it taken gives up its pass instead of waiting (another one is pruning), and the
//! lock works through a transaction-mode pooler, which a session lock would not.

use std::time::Duration;

use chrono::{DateTime, Utc};
use entity::{execution_log, organization, run, run_event};
use sea_orm::sea_query::{Expr, Query};
use sea_orm::{
    ColumnTrait, Condition, ConnectionTrait, DbBackend, DbErr, EntityTrait, PaginatorTrait,
    QueryFilter, QueryOrder, QuerySelect, QueryTrait, Select, Statement,
};
use tokio::sync::watch;
use uuid::Uuid;

use crate::config::RetentionSettings;
use crate::db::Pool;
use crate::telemetry::metrics::Metrics;

/// Rows deleted by one statement at most.
pub const BATCH_ROWS: u64 = 1000;
/// The rest between two batches: the database serves requests in between.
const PAUSE_BETWEEN_BATCHES: Duration = Duration::from_millis(20);
/// Organizations read per page while walking them.
const ORGANIZATIONS_PER_PAGE: u64 = 500;
/// The seed of the advisory lock that one pruning process holds per batch ("tolprune"), hashed
/// with the schema (`DB_SCHEMA`), so that deployments in two schemas of one database prune
/// independently.
const PRUNE_LOCK_SEED: i64 = 0x746f_6c70_7275_6e65;

/// `SELECT <function>(<the prune lock of this connection's schema>) AS locked`, for
/// `pg_try_advisory_xact_lock` and its kin.
pub fn prune_lock_sql(function: &str) -> String {
    format!("SELECT {function}(hashtextextended(current_schema(), {PRUNE_LOCK_SEED})) AS locked")
}
/// The statuses of a run that is over.
const FINISHED: [&str; 3] = ["completed", "failed", "cancelled"];

/// What a pass deleted (or, in a dry run, would delete) in one organization.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pruned {
    pub org_id: Uuid,
    /// The limit that applied: the organization's own or `RETENTION_DAYS`.
    pub days: u32,
    pub execution_logs: u64,
    pub runs: u64,
}

/// How a pass ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pass {
    /// Every organization was walked; the ones with rows to delete, in id order.
    Done(Vec<Pruned>),
    /// Another process holds the prune lock; what this one deleted before it found that.
    Busy(Vec<Pruned>),
    /// The process is stopping; what was deleted before.
    Stopped(Vec<Pruned>),
}

impl Pass {
    /// The organizations with rows deleted (or to delete).
    pub fn pruned(&self) -> &[Pruned] {
        match self {
            Self::Done(pruned) | Self::Busy(pruned) | Self::Stopped(pruned) => pruned,
        }
    }

    /// The execution logs and the runs deleted (or to delete) in all organizations.
    pub fn totals(&self) -> (u64, u64) {
        self.pruned().iter().fold((0, 0), |(logs, runs), pruned| {
            (logs + pruned.execution_logs, runs + pruned.runs)
        })
    }
}

/// Whether a pass deletes or only counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Delete,
    DryRun,
}

/// How one batch went.
enum Batch {
    Deleted(u64),
    /// Another process holds the prune lock.
    LockTaken,
}

/// Why a pass ends early.
enum Stop {
    Busy,
    Stopped,
}

/// One pass over every organization as of `now`.
pub async fn prune(
    db: &Pool,
    default_days: u32,
    now: DateTime<Utc>,
    mode: Mode,
    stopped: Option<&watch::Receiver<bool>>,
    metrics: Option<&Metrics>,
) -> Result<Pass, DbErr> {
    let mut pruned = Vec::new();
    let mut after = Uuid::nil();
    loop {
        let organizations = organization::Entity::find()
            .filter(organization::Column::Id.gt(after))
            .order_by_asc(organization::Column::Id)
            .limit(ORGANIZATIONS_PER_PAGE)
            .all(db)
            .await?;
        let Some(last) = organizations.last() else {
            return Ok(Pass::Done(pruned));
        };
        after = last.id;
        for organization in organizations {
            let days = organization
                .retention_days
                .map_or(default_days, |days| days.max(0) as u32);
            if days == 0 {
                continue;
            }
            let cutoff = now - chrono::Duration::days(i64::from(days));
            let mut done = Pruned {
                org_id: organization.id,
                days,
                execution_logs: 0,
                runs: 0,
            };
            match prune_organization(&mut done, db, cutoff, mode, stopped, metrics).await {
                Ok(None) => {}
                Ok(Some(stop)) => {
                    keep(&mut pruned, done);
                    return Ok(match stop {
                        Stop::Busy => Pass::Busy(pruned),
                        Stop::Stopped => Pass::Stopped(pruned),
                    });
                }
                // The database is away: the pass cannot go on.
                Err(err) if crate::db::is_connection_lost(&err) => return Err(err),
                // A statement of this organization's that failed (its deadline, a deadlock, a
                // fault of its rows) must not keep the organizations after it from being
                // pruned, pass after pass.
                Err(err) => tracing::warn!(
                    org_id = %organization.id,
                    error = %err,
                    "retention skipped an organization whose delete failed"
                ),
            }
            keep(&mut pruned, done);
        }
    }
}

/// Counts, or deletes batch by batch, the organization's rows older than `cutoff` into `done`;
/// why it stopped early, if it did.
async fn prune_organization(
    done: &mut Pruned,
    db: &Pool,
    cutoff: DateTime<Utc>,
    mode: Mode,
    stopped: Option<&watch::Receiver<bool>>,
    metrics: Option<&Metrics>,
) -> Result<Option<Stop>, DbErr> {
    let logs = expired_logs(done.org_id, cutoff);
    let runs = expired_runs(done.org_id, cutoff);
    if mode == Mode::DryRun {
        done.execution_logs = logs.count(db).await?;
        done.runs = runs.count(db).await?;
        return Ok(None);
    }
    let logs = oldest_batch(
        logs,
        execution_log::Column::Id,
        execution_log::Column::CreatedAt,
    );
    let (deleted, stop) = delete_in_batches(db, "execution_logs", logs, stopped, metrics).await?;
    done.execution_logs = deleted;
    if stop.is_some() {
        return Ok(stop);
    }
    // Runs a batch at a time, oldest first: the batch's events go first, in batches of their
    // own, then the batch itself, so that the foreign key's cascade finds nothing to delete and
    // no statement deletes more than a batch.
    loop {
        if stopped.is_some_and(|stopped| *stopped.borrow()) {
            return Ok(Some(Stop::Stopped));
        }
        let batch: Vec<Uuid> = runs
            .clone()
            .select_only()
            .column(run::Column::Id)
            .order_by_asc(run::Column::FinishedAt)
            .limit(BATCH_ROWS)
            .into_tuple()
            .all(db)
            .await?;
        if batch.is_empty() {
            return Ok(None);
        }
        let events = events_of(done.org_id, &batch);
        let (_, stop) = delete_in_batches(db, "run_events", events, stopped, metrics).await?;
        if stop.is_some() {
            return Ok(stop);
        }
        let these = run::Entity::delete_many()
            .filter(run::Column::OrgId.eq(done.org_id))
            .filter(run::Column::Id.is_in(batch.iter().copied()))
            .filter(run::Column::Status.is_in(FINISHED));
        let (deleted, stop) = delete_in_batches(db, "runs", these, stopped, metrics).await?;
        done.runs += deleted;
        if stop.is_some() || (batch.len() as u64) < BATCH_ROWS {
            return Ok(stop);
        }
    }
}

/// Keeps an organization's figures when it had anything to delete.
fn keep(pruned: &mut Vec<Pruned>, done: Pruned) {
    if done.execution_logs > 0 || done.runs > 0 {
        pruned.push(done);
    }
}

/// The organization's execution logs older than `cutoff`, but none of a run still going.
fn expired_logs(org_id: Uuid, cutoff: DateTime<Utc>) -> Select<execution_log::Entity> {
    let unfinished_runs = Query::select()
        .column(run::Column::Id)
        .from(run::Entity)
        .and_where(run::Column::OrgId.eq(org_id))
        .and_where(run::Column::Status.is_not_in(FINISHED))
        .take();
    execution_log::Entity::find()
        .filter(execution_log::Column::OrgId.eq(org_id))
        .filter(execution_log::Column::CreatedAt.lt(cutoff))
        .filter(
            Condition::any()
                .add(execution_log::Column::RunId.is_null())
                .add(execution_log::Column::RunId.not_in_subquery(unfinished_runs)),
        )
}

/// The organization's finished runs that ended before `cutoff` (their events go with them).
fn expired_runs(org_id: Uuid, cutoff: DateTime<Utc>) -> Select<run::Entity> {
    run::Entity::find()
        .filter(run::Column::OrgId.eq(org_id))
        .filter(run::Column::Status.is_in(FINISHED))
        .filter(run::Column::FinishedAt.lt(cutoff))
}

/// One batch of the events of the organization's runs `runs`, as a DELETE.
fn events_of(org_id: Uuid, runs: &[Uuid]) -> sea_orm::DeleteMany<run_event::Entity> {
    let batch = run_event::Entity::find()
        .filter(run_event::Column::OrgId.eq(org_id))
        .filter(run_event::Column::RunId.is_in(runs.iter().copied()))
        .select_only()
        .column(run_event::Column::RunId)
        .column(run_event::Column::Seq)
        .limit(BATCH_ROWS)
        .into_query();
    let key = Expr::tuple([
        Expr::col(run_event::Column::RunId),
        Expr::col(run_event::Column::Seq),
    ]);
    run_event::Entity::delete_many()
        .filter(run_event::Column::OrgId.eq(org_id))
        .filter(sea_orm::sea_query::ExprTrait::in_subquery(key, batch))
}

/// One batch of `expired`, the oldest by `age` first, as a DELETE.
fn oldest_batch<E: EntityTrait>(
    expired: Select<E>,
    id: E::Column,
    age: E::Column,
) -> sea_orm::DeleteMany<E> {
    let oldest = expired
        .select_only()
        .column(id)
        .order_by_asc(age)
        .limit(BATCH_ROWS)
        .into_query();
    E::delete_many().filter(id.in_subquery(oldest))
}

/// Deletes `rows` batch by batch until a batch finds fewer than [`BATCH_ROWS`]; how many went,
/// and why it stopped early, if it did.
async fn delete_in_batches<E: EntityTrait>(
    db: &Pool,
    table: &'static str,
    rows: sea_orm::DeleteMany<E>,
    stopped: Option<&watch::Receiver<bool>>,
    metrics: Option<&Metrics>,
) -> Result<(u64, Option<Stop>), DbErr> {
    let mut total = 0;
    loop {
        if stopped.is_some_and(|stopped| *stopped.borrow()) {
            return Ok((total, Some(Stop::Stopped)));
        }
        match delete_batch(db, rows.clone()).await? {
            Batch::LockTaken => return Ok((total, Some(Stop::Busy))),
            Batch::Deleted(deleted) => {
                total += deleted;
                if let Some(metrics) = metrics {
                    metrics.pruned(table, deleted);
                }
                if deleted < BATCH_ROWS {
                    return Ok((total, None));
                }
            }
        }
        tokio::time::sleep(PAUSE_BETWEEN_BATCHES).await;
    }
}

/// Runs one DELETE of at most [`BATCH_ROWS`] rows in its own short transaction, holding the
/// prune lock on PostgreSQL.
async fn delete_batch<E: EntityTrait>(
    db: &Pool,
    rows: sea_orm::DeleteMany<E>,
) -> Result<Batch, DbErr> {
    let backend = db.get_database_backend();
    let transaction = db.begin().await?;
    if backend == DbBackend::Postgres {
        let locked = transaction
            .query_one_raw(Statement::from_string(
                backend,
                prune_lock_sql("pg_try_advisory_xact_lock"),
            ))
            .await?
            .map(|row| row.try_get::<bool>("", "locked"))
            .transpose()?
            .unwrap_or(false);
        if !locked {
            return Ok(Batch::LockTaken);
        }
    }
    let deleted = transaction
        .execute_raw(rows.build(backend))
        .await?
        .rows_affected();
    transaction.commit().await?;
    Ok(Batch::Deleted(deleted))
}

/// The background pruner of `serve` and `worker`: a pass at start, then one every
/// `RETENTION_INTERVAL_SECS`, until `stopped` turns true. Nothing runs when `RETENTION_DAYS`
/// is 0 and no organization sets its own limit: the pass finds nothing to do.
pub async fn run_in_background(
    db: Pool,
    settings: RetentionSettings,
    metrics: Metrics,
    mut stopped: watch::Receiver<bool>,
) {
    loop {
        match prune(
            &db,
            settings.days,
            Utc::now(),
            Mode::Delete,
            Some(&stopped),
            Some(&metrics),
        )
        .await
        {
            Ok(pass @ Pass::Busy(_)) => {
                log_pass(&pass, "another process is pruning; this pass stopped")
            }
            Ok(pass) => log_pass(&pass, "retention pass done"),
            Err(err) => tracing::warn!(error = %err, "retention pass failed; retried at the next"),
        }
        tokio::select! {
            () = tokio::time::sleep(settings.interval) => {}
            _ = stopped.wait_for(|stopped| *stopped) => return,
        }
    }
}

fn log_pass(pass: &Pass, message: &'static str) {
    let (execution_logs, runs) = pass.totals();
    if execution_logs > 0 || runs > 0 {
        tracing::info!(
            execution_logs,
            runs,
            organizations = pass.pruned().len(),
            "{message}"
        );
    } else {
        tracing::debug!("{message}; nothing to delete");
    }
}
