//! Actions: endpoints of a tool.

use entity::{action, tool};
use sea_orm::{ColumnTrait, Condition, Set};
use serde_json::Value;
use uuid::Uuid;

use super::pagination::{Page, PageRequest};
use super::tenancy::Tenant;
use super::tenant_scope::{
    delete_one_for, get_for, insert_for, page_for, require_reference, set_if_changed,
    update_returning, Reference,
};
use super::{now, ServiceError};
use crate::db::Pool;

/// A validated new action.
#[derive(Debug)]
pub struct NewAction {
    pub tool_id: Uuid,
    pub name: Option<String>,
    pub method: String,
    pub endpoint: String,
    pub schema: Value,
    pub execute_if: Option<Value>,
}

/// A validated partial update; `None` leaves a field as it is, `Some(None)` clears it.
#[derive(Debug, Default)]
pub struct ActionChanges {
    pub tool_id: Option<Uuid>,
    pub name: Option<Option<String>>,
    pub method: Option<String>,
    pub endpoint: Option<String>,
    pub schema: Option<Value>,
    pub execute_if: Option<Option<Value>>,
}

pub async fn create(
    db: &Pool,
    tenant: &Tenant,
    new: NewAction,
) -> Result<action::Model, ServiceError> {
    let reference = Reference::to::<tool::Entity>("toolId", tenant, new.tool_id);
    let at = now();
    let row = action::ActiveModel {
        id: Set(Uuid::now_v7()),
        org_id: Set(tenant.org_id),
        tool_id: Set(new.tool_id),
        name: Set(new.name),
        method: Set(new.method),
        endpoint: Set(new.endpoint),
        schema: Set(new.schema),
        execute_if: Set(new.execute_if),
        created_at: Set(at),
        updated_at: Set(at),
    };
    insert_for::<action::Entity>(db, tenant, row, Some(reference)).await
}

pub async fn find(db: &Pool, tenant: &Tenant, id: Uuid) -> Result<action::Model, ServiceError> {
    get_for::<action::Entity>(db, tenant, id).await
}

/// One page of the organization's actions, of one tool when `tool_id` is given.
pub async fn list(
    db: &Pool,
    tenant: &Tenant,
    tool_id: Option<Uuid>,
    page: PageRequest,
) -> Result<Page<action::Model>, ServiceError> {
    let condition = Condition::all().add_option(tool_id.map(|id| action::Column::ToolId.eq(id)));
    page_for::<action::Entity>(db, tenant, condition, page).await
}

pub async fn update(
    db: &Pool,
    tenant: &Tenant,
    id: Uuid,
    changes: ActionChanges,
) -> Result<action::Model, ServiceError> {
    let current = find(db, tenant, id).await?;
    let reference = changes
        .tool_id
        .map(|id| Reference::to::<tool::Entity>("toolId", tenant, id));
    if let Some(reference) = &reference {
        require_reference(db, tenant, reference).await?;
    }
    let mut row: action::ActiveModel = Default::default();
    let changed = set_if_changed(&mut row.tool_id, &current.tool_id, changes.tool_id)
        | set_if_changed(&mut row.name, &current.name, changes.name)
        | set_if_changed(&mut row.method, &current.method, changes.method)
        | set_if_changed(&mut row.endpoint, &current.endpoint, changes.endpoint)
        | set_if_changed(&mut row.schema, &current.schema, changes.schema)
        | set_if_changed(&mut row.execute_if, &current.execute_if, changes.execute_if);
    if !changed {
        return Ok(current);
    }
    row.updated_at = Set(now());
    update_returning::<action::Entity>(db, tenant, id, row, reference).await
}

pub async fn delete(db: &Pool, tenant: &Tenant, id: Uuid) -> Result<(), ServiceError> {
    delete_one_for::<action::Entity>(db, tenant, id).await
}
