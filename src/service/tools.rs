//! Tools: the external APIs an organization calls.

use entity::{action, tool};
use sea_orm::{ActiveModelTrait, Set};
use uuid::Uuid;

use super::pagination::{fetch_page, Page, PageRequest};
use super::tenant_scope::{
    delete_with_dependents, get_in, set_if_changed, update_returning, Dependents, TenantScoped,
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

pub async fn create(db: &Pool, org_id: Uuid, new: NewTool) -> Result<tool::Model, ServiceError> {
    let at = now();
    tool::ActiveModel {
        id: Set(Uuid::now_v7()),
        org_id: Set(org_id),
        name: Set(new.name),
        base_url: Set(new.base_url),
        auth_type: Set(new.auth_type),
        created_at: Set(at),
        updated_at: Set(at),
    }
    .insert(db)
    .await
    .map_err(|err| conflict_on_duplicate(err, DUPLICATE_NAME))
}

pub async fn find(db: &Pool, org_id: Uuid, id: Uuid) -> Result<tool::Model, ServiceError> {
    get_in::<tool::Entity>(db, org_id, id).await
}

pub async fn list(
    db: &Pool,
    org_id: Uuid,
    page: PageRequest,
) -> Result<Page<tool::Model>, ServiceError> {
    let rows = tool::Entity::find_in(org_id);
    Ok(fetch_page(db, rows, tool::Column::Id, |row| row.id, page).await?)
}

pub async fn update(
    db: &Pool,
    org_id: Uuid,
    id: Uuid,
    changes: ToolChanges,
) -> Result<tool::Model, ServiceError> {
    let current = find(db, org_id, id).await?;
    let mut row: tool::ActiveModel = Default::default();
    let changed = set_if_changed(&mut row.name, &current.name, changes.name)
        | set_if_changed(&mut row.base_url, &current.base_url, changes.base_url)
        | set_if_changed(&mut row.auth_type, &current.auth_type, changes.auth_type);
    if !changed {
        return Ok(current);
    }
    row.updated_at = Set(now());
    update_returning::<tool::Entity>(db, org_id, id, row)
        .await
        .map_err(|err| conflict_on_duplicate(err, DUPLICATE_NAME))?
        .ok_or(ServiceError::NotFound("tool"))
}

pub async fn delete(db: &Pool, org_id: Uuid, id: Uuid, cascade: bool) -> Result<(), ServiceError> {
    let actions = Dependents::<action::Entity> {
        column: action::Column::ToolId,
        label: "actions",
    };
    delete_with_dependents::<tool::Entity, _>(db, org_id, id, cascade, actions).await
}
