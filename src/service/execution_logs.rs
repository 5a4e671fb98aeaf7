//! Execution logs: the audit trail of flow runs.

use entity::{execution_log, flow};
use sea_orm::{ColumnTrait, Condition, Set};
use serde_json::Value;
use uuid::Uuid;

use futures_util::Stream;

use super::export::{self, BatchSize, CreatedWindow};
use super::pagination::{Page, PageRequest};
use super::tenancy::{self, Tenant};
use super::tenant_scope::{
    delete_one_for, get_for, insert_for, page_for, require_reference, set_if_changed,
    update_returning, Reference,
};
use super::{now, ServiceError};
use crate::db::Pool;

/// A validated new execution log; its user is the caller.
#[derive(Debug)]
pub struct NewExecutionLog {
    pub flow_id: Uuid,
    pub execution_id: Option<String>,
    pub step_id: String,
    pub status: String,
    pub inputs: Value,
    pub outputs: Option<Value>,
    pub error: Option<Value>,
}

/// A validated partial update; `None` leaves a field as it is, `Some(None)` clears it.
#[derive(Debug, Default)]
pub struct ExecutionLogChanges {
    pub flow_id: Option<Uuid>,
    pub execution_id: Option<Option<String>>,
    pub step_id: Option<String>,
    pub status: Option<String>,
    pub inputs: Option<Value>,
    pub outputs: Option<Option<Value>>,
    pub error: Option<Option<Value>>,
}

/// The list filters; each given one narrows the list.
#[derive(Debug, Default)]
pub struct ExecutionLogFilter {
    pub flow_id: Option<Uuid>,
    pub user_id: Option<Uuid>,
    pub execution_id: Option<String>,
    pub status: Option<String>,
}

impl ExecutionLogFilter {
    fn condition(self) -> Condition {
        Condition::all()
            .add_option(self.flow_id.map(|id| execution_log::Column::FlowId.eq(id)))
            .add_option(self.user_id.map(|id| execution_log::Column::UserId.eq(id)))
            .add_option(
                self.execution_id
                    .map(|id| execution_log::Column::ExecutionId.eq(id)),
            )
            .add_option(
                self.status
                    .map(|status| execution_log::Column::Status.eq(status)),
            )
    }
}

pub async fn create(
    db: &Pool,
    tenant: &Tenant,
    new: NewExecutionLog,
) -> Result<execution_log::Model, ServiceError> {
    tenancy::require_recorded_user(db, tenant).await?;
    let reference = Reference::to::<flow::Entity>("flowId", tenant, new.flow_id);
    let at = now();
    let row = execution_log::ActiveModel {
        id: Set(Uuid::now_v7()),
        org_id: Set(tenant.org_id),
        flow_id: Set(new.flow_id),
        user_id: Set(tenant.user_id),
        execution_id: Set(new.execution_id),
        step_id: Set(new.step_id),
        status: Set(new.status),
        inputs: Set(new.inputs),
        outputs: Set(new.outputs),
        error: Set(new.error),
        run_id: Set(None),
        attempt: Set(None),
        duration_ms: Set(None),
        created_at: Set(at),
        updated_at: Set(at),
    };
    insert_for::<execution_log::Entity>(db, tenant, row, Some(reference)).await
}

pub async fn find(
    db: &Pool,
    tenant: &Tenant,
    id: Uuid,
) -> Result<execution_log::Model, ServiceError> {
    get_for::<execution_log::Entity>(db, tenant, id).await
}

pub async fn list(
    db: &Pool,
    tenant: &Tenant,
    filter: ExecutionLogFilter,
    page: PageRequest,
) -> Result<Page<execution_log::Model>, ServiceError> {
    page_for::<execution_log::Entity>(db, tenant, filter.condition(), page).await
}

/// Every log of the list's `filter` created in `window`, newest first, in batches.
pub fn export(
    db: &Pool,
    tenant: &Tenant,
    filter: ExecutionLogFilter,
    window: CreatedWindow,
    size: BatchSize,
) -> impl Stream<Item = Result<Vec<execution_log::Model>, ServiceError>> + Send + 'static {
    let condition = filter
        .condition()
        .add(window.condition(execution_log::Column::CreatedAt));
    export::batches::<execution_log::Entity>(db.clone(), *tenant, condition, size)
}

pub async fn update(
    db: &Pool,
    tenant: &Tenant,
    id: Uuid,
    changes: ExecutionLogChanges,
) -> Result<execution_log::Model, ServiceError> {
    let current = find(db, tenant, id).await?;
    let reference = changes
        .flow_id
        .map(|id| Reference::to::<flow::Entity>("flowId", tenant, id));
    if let Some(reference) = &reference {
        require_reference(db, tenant, reference).await?;
    }
    let mut row: execution_log::ActiveModel = Default::default();
    let changed = set_if_changed(&mut row.flow_id, &current.flow_id, changes.flow_id)
        | set_if_changed(
            &mut row.execution_id,
            &current.execution_id,
            changes.execution_id,
        )
        | set_if_changed(&mut row.step_id, &current.step_id, changes.step_id)
        | set_if_changed(&mut row.status, &current.status, changes.status)
        | set_if_changed(&mut row.inputs, &current.inputs, changes.inputs)
        | set_if_changed(&mut row.outputs, &current.outputs, changes.outputs)
        | set_if_changed(&mut row.error, &current.error, changes.error);
    if !changed {
        return Ok(current);
    }
    row.updated_at = Set(now());
    update_returning::<execution_log::Entity>(db, tenant, id, row, reference).await
}

pub async fn delete(db: &Pool, tenant: &Tenant, id: Uuid) -> Result<(), ServiceError> {
    delete_one_for::<execution_log::Entity>(db, tenant, id).await
}
