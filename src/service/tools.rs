//! Tools: the external APIs an organization calls.

use entity::{action, tool};
use sea_orm::{Condition, Set};
use uuid::Uuid;

use super::pagination::{Page, PageRequest};
use super::tenancy::Tenant;
use super::tenant_scope::{
    delete_with_dependents, get_for, insert_for, page_for, set_if_changed, update_returning,
    Dependents,
};
use super::{conflict_on_duplicate, now, ServiceError};
use crate::db::Pool;

const DUPLICATE_NAME: &str = "a tool with this name already exists in the organization";

/// A validated new tool.
#[derive(Debug)]
pub struct NewTool {
    pub name: String,
    pub base_url: String,
    pub auth_type: String,
}

/// A validated partial update; `None` leaves a field as it is.
#[derive(Debug, Default)]
pub struct ToolChanges {
    pub name: Option<String>,
    pub base_url: Option<String>,
    pub auth_type: Option<String>,
}

pub async fn create(db: &Pool, tenant: &Tenant, new: NewTool) -> Result<tool::Model, ServiceError> {
    let at = now();
    let row = tool::ActiveModel {
        id: Set(Uuid::now_v7()),
        org_id: Set(tenant.org_id),
        name: Set(new.name),
        base_url: Set(new.base_url),
        auth_type: Set(new.auth_type),
        created_at: Set(at),
        updated_at: Set(at),
    };
    insert_for::<tool::Entity>(db, tenant, row, None)
        .await
        .map_err(|err| conflict_on_duplicate(err, DUPLICATE_NAME))
}

pub async fn find(db: &Pool, tenant: &Tenant, id: Uuid) -> Result<tool::Model, ServiceError> {
    get_for::<tool::Entity>(db, tenant, id).await
}

pub async fn list(
    db: &Pool,
    tenant: &Tenant,
    page: PageRequest,
) -> Result<Page<tool::Model>, ServiceError> {
    page_for::<tool::Entity>(db, tenant, Condition::all(), page).await
}

pub async fn update(
    db: &Pool,
    tenant: &Tenant,
    id: Uuid,
    changes: ToolChanges,
) -> Result<tool::Model, ServiceError> {
    let current = find(db, tenant, id).await?;
    let mut row: tool::ActiveModel = Default::default();
    let changed = set_if_changed(&mut row.name, &current.name, changes.name)
        | set_if_changed(&mut row.base_url, &current.base_url, changes.base_url)
        | set_if_changed(&mut row.auth_type, &current.auth_type, changes.auth_type);
    if !changed {
        return Ok(current);
    }
    row.updated_at = Set(now());
    update_returning::<tool::Entity>(db, tenant, id, row, None)
        .await
        .map_err(|err| conflict_on_duplicate(err, DUPLICATE_NAME))
}

pub async fn delete(
    db: &Pool,
    tenant: &Tenant,
    id: Uuid,
    cascade: bool,
) -> Result<(), ServiceError> {
    let actions = Dependents::<action::Entity> {
        column: action::Column::ToolId,
        label: "actions",
    };
    delete_with_dependents::<tool::Entity, _>(db, tenant, id, cascade, actions).await
}
