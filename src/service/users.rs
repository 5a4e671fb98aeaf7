//! Users of an organization.

use entity::{execution_log, user};
use sea_orm::{ActiveModelTrait, Set};
use uuid::Uuid;

use super::pagination::{fetch_page, Page, PageRequest};
use super::tenant_scope::{
    delete_with_dependents, get_in, set_if_changed, update_returning, Dependents, TenantScoped,
};
use super::{conflict_on_duplicate, now, ServiceError};
use crate::db::Pool;

const DUPLICATE_EMAIL: &str = "a user with this email already exists in the organization";

/// A validated new user.
#[derive(Debug)]
pub struct NewUser {
    pub email: String,
    pub name: Option<String>,
}

/// A validated partial update; `None` leaves a field as it is, `Some(None)` clears `name`.
#[derive(Debug, Default)]
pub struct UserChanges {
    pub email: Option<String>,
    pub name: Option<Option<String>>,
}

/// The key that makes emails unique regardless of letter case.
fn fold(email: &str) -> String {
    email.to_lowercase()
}

pub async fn create(db: &Pool, org_id: Uuid, new: NewUser) -> Result<user::Model, ServiceError> {
    let at = now();
    user::ActiveModel {
        id: Set(Uuid::now_v7()),
        org_id: Set(org_id),
        email_folded: Set(fold(&new.email)),
        email: Set(new.email),
        name: Set(new.name),
        created_at: Set(at),
        updated_at: Set(at),
    }
    .insert(db)
    .await
    .map_err(|err| conflict_on_duplicate(err, DUPLICATE_EMAIL))
}

pub async fn find(db: &Pool, org_id: Uuid, id: Uuid) -> Result<user::Model, ServiceError> {
    get_in::<user::Entity>(db, org_id, id).await
}

pub async fn list(
    db: &Pool,
    org_id: Uuid,
    page: PageRequest,
) -> Result<Page<user::Model>, ServiceError> {
    let rows = user::Entity::find_in(org_id);
    Ok(fetch_page(db, rows, user::Column::Id, |row| row.id, page).await?)
}

pub async fn update(
    db: &Pool,
    org_id: Uuid,
    id: Uuid,
    changes: UserChanges,
) -> Result<user::Model, ServiceError> {
    let current = find(db, org_id, id).await?;
    let mut row: user::ActiveModel = Default::default();
    let email_folded = changes.email.as_deref().map(fold);
    let changed = set_if_changed(&mut row.email, &current.email, changes.email)
        | set_if_changed(&mut row.name, &current.name, changes.name);
    if !changed {
        return Ok(current);
    }
    set_if_changed(&mut row.email_folded, &current.email_folded, email_folded);
    row.updated_at = Set(now());
    update_returning::<user::Entity>(db, org_id, id, row)
        .await
        .map_err(|err| conflict_on_duplicate(err, DUPLICATE_EMAIL))?
        .ok_or(ServiceError::NotFound("user"))
}

pub async fn delete(db: &Pool, org_id: Uuid, id: Uuid, cascade: bool) -> Result<(), ServiceError> {
    let logs = Dependents::<execution_log::Entity> {
        column: execution_log::Column::UserId,
        label: "execution logs",
    };
    delete_with_dependents::<user::Entity, _>(db, org_id, id, cascade, logs).await
}
