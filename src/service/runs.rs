//! Runs, from the API's side: starting one (checked, then queued), reading them, cancelling
//! one, and reading its events. The executor (`crate::runs`) works them.

use std::collections::HashMap;

use chrono::Duration as Age;
use entity::{action, execution_log, flow, run, run_event};
use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait, Condition, EntityTrait, QueryFilter, QueryOrder, QuerySelect, Set};
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use futures_util::Stream;

use super::export::{self, BatchSize, CreatedWindow};
use super::pagination::{Page, PageRequest};
use super::tenancy::{self, refusal_or, Tenant};
use super::tenant_scope::{get_for, insert_for, page_for, Reference, TenantScoped};
use super::{now, ServiceError};
use crate::db::Pool;
use crate::runs::expressions::Expression;
use crate::runs::outbound;
use crate::runs::plan::Plan;
use crate::runs::Signals;
use crate::telemetry::trace_context::TraceContext;

/// How long an `Idempotency-Key` answers the run it started.
pub const IDEMPOTENCY_WINDOW_HOURS: i64 = 24;

/// The most events one read returns; a stream reads again for more.
const EVENTS_PER_READ: u64 = 200;

/// A request to run a flow.
#[derive(Debug)]
pub struct NewRun {
    pub inputs: Value,
    pub idempotency_key: Option<String>,
    /// The trace of the request that starts it, which its calls continue.
    pub trace: Option<TraceContext>,
}

/// The list filters; each given one narrows the list.
#[derive(Debug, Default)]
pub struct RunFilter {
    pub flow_id: Option<Uuid>,
    pub status: Option<String>,
}

impl RunFilter {
    fn condition(self) -> Condition {
        Condition::all()
            .add_option(self.flow_id.map(|id| run::Column::FlowId.eq(id)))
            .add_option(self.status.map(|status| run::Column::Status.eq(status)))
    }
}

/// Checks the flow's steps against the caller's organization and queues a run of its current
/// version. A repeat with the same `Idempotency-Key` and body (within 24 hours) answers the
/// run it started.
pub async fn start(
    db: &Pool,
    signals: &Signals,
    tenant: &Tenant,
    flow_id: Uuid,
    new: NewRun,
) -> Result<run::Model, ServiceError> {
    tenancy::require_recorded_user(db, tenant).await?;
    let flow = get_for::<flow::Entity>(db, tenant, flow_id).await?;
    check_steps(db, tenant, &flow.steps).await?;
    let digest = request_digest(flow_id, &new.inputs);
    if let Some(key) = &new.idempotency_key {
        if let Some(earlier) = earlier_run(db, tenant, key, &digest).await? {
            return Ok(earlier);
        }
    }
    let at = now();
    let row = run::ActiveModel {
        id: Set(Uuid::now_v7()),
        org_id: Set(tenant.org_id),
        flow_id: Set(flow.id),
        user_id: Set(tenant.user_id),
        flow_version: Set(flow.version),
        steps: Set(flow.steps),
        status: Set("queued".to_owned()),
        inputs: Set(new.inputs),
        step_results: Set(json!({})),
        error: Set(None),
        idempotency_key: Set(new.idempotency_key.clone()),
        request_digest: Set(Some(digest.clone())),
        step_index: Set(0),
        step_attempt: Set(0),
        event_seq: Set(0),
        available_at: Set(Some(at)),
        lease_owner: Set(None),
        lease_expires_at: Set(None),
        cancel_requested: Set(false),
        deadline_at: Set(None),
        created_at: Set(at),
        started_at: Set(None),
        finished_at: Set(None),
        updated_at: Set(at),
        traceparent: Set(new.trace.map(|trace| trace.to_header())),
    };
    let reference = Reference::to::<flow::Entity>("flowId", tenant, flow_id);
    match insert_for::<run::Entity>(db, tenant, row, Some(reference)).await {
        Ok(run) => {
            signals.queued();
            Ok(run)
        }
        Err(err) if err.is_unique_violation() => {
            // Another request with the same key won the race; answer what it started.
            let key = new.idempotency_key.as_deref().unwrap_or_default();
            match earlier_run(db, tenant, key, &digest).await? {
                Some(earlier) => Ok(earlier),
                None => Err(ServiceError::Conflict(
                    "a run with this Idempotency-Key is being started; repeat the request".into(),
                )),
            }
        }
        Err(err) => Err(err),
    }
}

/// Every step must be one the executor can run, naming actions of the caller's organization
/// whose conditions parse and whose endpoint placeholders the step fills.
async fn check_steps(db: &Pool, tenant: &Tenant, steps: &Value) -> Result<(), ServiceError> {
    let unrunnable = |field: String, message: String| ServiceError::Unrunnable { field, message };
    let plan = Plan::parse(steps).map_err(|err| unrunnable(err.field, err.message))?;
    let ids: Vec<Uuid> = plan.steps.iter().map(|step| step.action_id).collect();
    let actions: HashMap<Uuid, action::Model> = action::Entity::find_for(tenant)
        .filter(action::Column::Id.is_in(ids))
        .all(db)
        .await?
        .into_iter()
        .map(|action| (action.id, action))
        .collect();
    for (index, step) in plan.steps.iter().enumerate() {
        let field = |key: &str| format!("steps[{index}].{key}");
        let Some(action) = actions.get(&step.action_id) else {
            return Err(unrunnable(
                field("actionId"),
                "no such action in the caller's organization".into(),
            ));
        };
        if let Some(Value::String(source)) = &action.execute_if {
            Expression::compile(source).map_err(|err| {
                unrunnable(field("actionId"), format!("the action's executeIf: {err}"))
            })?;
        }
        if let Some(names) = &step.path_names {
            if let Some(missing) = outbound::placeholders(&action.endpoint)
                .into_iter()
                .find(|name| !names.contains(name))
            {
                return Err(unrunnable(
                    field("inputs.path"),
                    format!("the action's endpoint needs `{missing}`"),
                ));
            }
        }
    }
    Ok(())
}

/// SHA-256 of the flow and the inputs: what tells a repeat from a different request.
fn request_digest(flow_id: Uuid, inputs: &Value) -> String {
    let mut digest = Sha256::new();
    digest.update(flow_id.as_bytes());
    // Object keys serialize in sorted order, so equal inputs give equal text.
    digest.update(inputs.to_string().as_bytes());
    hex::encode(digest.finalize())
}

/// The run an earlier request with `key` started, if it is within the window: the same run
/// for the same request, a conflict for a different one. An expired key is freed for reuse.
async fn earlier_run(
    db: &Pool,
    tenant: &Tenant,
    key: &str,
    digest: &str,
) -> Result<Option<run::Model>, ServiceError> {
    let Some(earlier) = run::Entity::find_for(tenant)
        .filter(run::Column::IdempotencyKey.eq(key))
        .one(db)
        .await?
    else {
        return Ok(None);
    };
    if earlier.created_at < now() - Age::hours(IDEMPOTENCY_WINDOW_HOURS) {
        run::Entity::update_for(tenant, earlier.id)
            .col_expr(run::Column::IdempotencyKey, Expr::value(None::<String>))
            .exec(db)
            .await?;
        return Ok(None);
    }
    if earlier.request_digest.as_deref() != Some(digest) {
        return Err(ServiceError::Conflict(
            "this Idempotency-Key was used for a different request in the last 24 hours".into(),
        ));
    }
    Ok(Some(earlier))
}

pub async fn find(db: &Pool, tenant: &Tenant, id: Uuid) -> Result<run::Model, ServiceError> {
    get_for::<run::Entity>(db, tenant, id).await
}

pub async fn list(
    db: &Pool,
    tenant: &Tenant,
    filter: RunFilter,
    page: PageRequest,
) -> Result<Page<run::Model>, ServiceError> {
    page_for::<run::Entity>(db, tenant, filter.condition(), page).await
}

/// Every run of the list's `filter` created in `window`, newest first, in batches.
pub fn export(
    db: &Pool,
    tenant: &Tenant,
    filter: RunFilter,
    window: CreatedWindow,
    size: BatchSize,
) -> impl Stream<Item = Result<Vec<run::Model>, ServiceError>> + Send + 'static {
    let condition = filter
        .condition()
        .add(window.condition(run::Column::CreatedAt));
    export::batches::<run::Entity>(db.clone(), *tenant, condition, size)
}

/// Cancels a run: a queued one (or one waiting between attempts) at once; a running one is
/// asked to stop, which its worker does before its next step, abandoning its in-flight call.
/// A finished run is a conflict.
pub async fn cancel(
    db: &Pool,
    signals: &Signals,
    tenant: &Tenant,
    id: Uuid,
) -> Result<run::Model, ServiceError> {
    let txn = db.begin().await?;
    let Some(current) = run::Entity::find_one_for(tenant, id)
        .lock_exclusive()
        .one(&txn)
        .await?
    else {
        return Err(refusal_or(&txn, tenant, ServiceError::NotFound("run")).await);
    };
    if !matches!(current.status.as_str(), "queued" | "running") {
        return Err(ServiceError::Conflict(format!(
            "the run is already {}",
            current.status
        )));
    }
    let at = now();
    let update =
        run::Entity::update_for(tenant, id).col_expr(run::Column::UpdatedAt, Expr::value(at));
    if current.lease_owner.is_some() {
        update
            .col_expr(run::Column::CancelRequested, Expr::value(true))
            .exec(&txn)
            .await?;
    } else {
        let seq = current.event_seq + 1;
        update
            .col_expr(run::Column::Status, Expr::value("cancelled"))
            .col_expr(run::Column::CancelRequested, Expr::value(true))
            .col_expr(
                run::Column::AvailableAt,
                Expr::value(None::<chrono::DateTime<chrono::Utc>>),
            )
            .col_expr(run::Column::FinishedAt, Expr::value(at))
            .col_expr(run::Column::EventSeq, Expr::value(seq))
            .exec(&txn)
            .await?;
        // An attempt whose worker died before the run was given back.
        execution_log::Entity::update_many()
            .col_expr(execution_log::Column::Status, Expr::value("cancelled"))
            .col_expr(execution_log::Column::UpdatedAt, Expr::value(at))
            .filter(execution_log::Column::OrgId.eq(tenant.org_id))
            .filter(execution_log::Column::ExecutionId.eq(id.to_string()))
            .filter(execution_log::Column::Status.eq("running"))
            .exec(&txn)
            .await?;
        run_event::Entity::insert(run_event::ActiveModel {
            org_id: Set(tenant.org_id),
            run_id: Set(id),
            seq: Set(seq),
            kind: Set("run".to_owned()),
            step_id: Set(None),
            attempt: Set(None),
            status: Set("cancelled".to_owned()),
            data: Set(json!({"error": null})),
            created_at: Set(at),
        })
        .exec_without_returning(&txn)
        .await?;
    }
    txn.commit().await?;
    signals.cancel(id);
    signals.events_written();
    find(db, tenant, id).await
}

/// The run's events after event `after` (0 for all), oldest first, at most a few hundred;
/// and whether the run has finished.
pub async fn events_after(
    db: &Pool,
    tenant: &Tenant,
    id: Uuid,
    after: i32,
) -> Result<(Vec<run_event::Model>, bool), ServiceError> {
    let current = find(db, tenant, id).await?;
    let events = run_event::Entity::find()
        .filter(run_event::Column::OrgId.eq(tenant.org_id))
        .filter(run_event::Column::RunId.eq(id))
        .filter(run_event::Column::Seq.gt(after))
        .order_by_asc(run_event::Column::Seq)
        .limit(EVENTS_PER_READ)
        .all(db)
        .await?;
    let finished =
        current.finished_at.is_some() && current.event_seq <= after + events.len() as i32;
    Ok((events, finished))
}

/// The outputs of the steps that completed: step id -> output.
pub fn outputs_of(run: &run::Model) -> Value {
    let completed: Map<String, Value> = run
        .step_results
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(_, result)| result.get("status") == Some(&json!("completed")))
        .map(|(id, result)| {
            (
                id.clone(),
                result.get("output").cloned().unwrap_or(Value::Null),
            )
        })
        .collect();
    Value::Object(completed)
}
