//! Flows: versioned workflow definitions.

use entity::{execution_log, flow, run};
use sea_orm::sea_query::{Expr, ExprTrait};
use sea_orm::{ColumnTrait, Condition, ConnectionTrait, QueryFilter, Set};
use serde_json::Value;
use uuid::Uuid;

use super::pagination::{Page, PageRequest};
use super::tenancy::Tenant;
use super::tenant_scope::{
    clear_dependents, delete_locked, get_for, insert_for, lock_for_delete, lock_for_update,
    page_for, set_if_changed, Dependents, TenantScoped,
};
use super::{now, ServiceError};
use crate::db::Pool;

/// A validated new flow.
#[derive(Debug)]
pub struct NewFlow {
    pub name: Option<String>,
    pub steps: Value,
}

/// A validated partial update. `expected_version`, when given, is a precondition.
#[derive(Clone, Debug, Default)]
pub struct FlowChanges {
    pub name: Option<Option<String>>,
    pub steps: Option<Value>,
    pub expected_version: Option<i32>,
}

fn stale(expected: i32, stored: i32) -> ServiceError {
    ServiceError::Conflict(format!(
        "version {expected} is stale: the flow is at version {stored}; read it again and retry"
    ))
}

pub async fn create(db: &Pool, tenant: &Tenant, new: NewFlow) -> Result<flow::Model, ServiceError> {
    let at = now();
    let row = flow::ActiveModel {
        id: Set(Uuid::now_v7()),
        org_id: Set(tenant.org_id),
        name: Set(new.name),
        steps: Set(new.steps),
        version: Set(1),
        created_at: Set(at),
        updated_at: Set(at),
    };
    insert_for::<flow::Entity>(db, tenant, row, None).await
}

pub async fn find(db: &Pool, tenant: &Tenant, id: Uuid) -> Result<flow::Model, ServiceError> {
    get_for::<flow::Entity>(db, tenant, id).await
}

pub async fn list(
    db: &Pool,
    tenant: &Tenant,
    page: PageRequest,
) -> Result<Page<flow::Model>, ServiceError> {
    page_for::<flow::Entity>(db, tenant, Condition::all(), page).await
}

/// Applies `changes`. With `expected_version`, a concurrent update in between is a 409. Without
/// it the caller asked for no precondition, so a concurrent update is not the caller's conflict:
/// the flow is locked while the change is computed and written, and concurrent writers take
/// turns (none is lost, none gets a 409, however many there are).
pub async fn update(
    db: &Pool,
    tenant: &Tenant,
    id: Uuid,
    changes: FlowChanges,
) -> Result<flow::Model, ServiceError> {
    if let Some(expected) = changes.expected_version {
        let current = find(db, tenant, id).await?;
        if expected != current.version {
            return Err(stale(expected, current.version));
        }
        return apply(db, tenant, id, current, changes).await;
    }
    let txn = db.begin().await?;
    let current = lock_for_update::<flow::Entity>(&txn, tenant, id).await?;
    let updated = apply(&txn, tenant, id, current, changes).await?;
    txn.commit().await?;
    Ok(updated)
}

/// Writes `changes` over `current`. A change to `name` or `steps` adds 1 to the version, in the
/// same UPDATE that checks the version it was computed from: of concurrent writes from one
/// version, one wins and the others get a conflict, so none is silently lost.
async fn apply(
    db: &impl ConnectionTrait,
    tenant: &Tenant,
    id: Uuid,
    current: flow::Model,
    changes: FlowChanges,
) -> Result<flow::Model, ServiceError> {
    let mut row: flow::ActiveModel = Default::default();
    let changed = set_if_changed(&mut row.name, &current.name, changes.name)
        | set_if_changed(&mut row.steps, &current.steps, changes.steps);
    if !changed {
        return Ok(current);
    }
    row.updated_at = Set(now());
    let mut updated = flow::Entity::update_for(tenant, id)
        .set(row)
        .col_expr(
            flow::Column::Version,
            Expr::col(flow::Column::Version).add(1),
        )
        .filter(flow::Column::Version.eq(current.version))
        .exec_with_returning(db)
        .await?;
    match updated.pop() {
        Some(row) => Ok(row),
        None => {
            let stored = get_for::<flow::Entity>(db, tenant, id).await?;
            Err(stale(
                changes.expected_version.unwrap_or(current.version),
                stored.version,
            ))
        }
    }
}

/// Deletes a flow. While it has runs (queued, working or finished) or execution logs this is a
/// conflict, unless `cascade`, which deletes them with it; a worker on one of its runs then
/// finds its lease gone and stops.
pub async fn delete(
    db: &Pool,
    tenant: &Tenant,
    id: Uuid,
    cascade: bool,
) -> Result<(), ServiceError> {
    let runs = Dependents::<run::Entity> {
        column: run::Column::FlowId,
        label: "runs",
    };
    let logs = Dependents::<execution_log::Entity> {
        column: execution_log::Column::FlowId,
        label: "execution logs",
    };
    let txn = db.begin().await?;
    lock_for_delete::<flow::Entity>(&txn, tenant, id).await?;
    clear_dependents::<flow::Entity, _>(&txn, tenant, id, cascade, &runs).await?;
    delete_locked::<flow::Entity, _>(&txn, tenant, id, cascade, logs).await?;
    txn.commit().await?;
    Ok(())
}
