//! Users of an organization.

use entity::{execution_log, user};
use sea_orm::{Condition, Set};
use uuid::Uuid;

use super::pagination::{Page, PageRequest};
use super::tenancy::{self, Tenant};
use super::tenant_scope::{
    delete_with_dependents, get_for, insert_for, insert_where, page_for, set_if_changed,
    update_returning, Dependents,
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

/// Adds a user when the tenant is a member (one statement), or when the organization exists and
/// has no users yet (its first user); otherwise `NotAMember`.
pub async fn create(db: &Pool, tenant: &Tenant, new: NewUser) -> Result<user::Model, ServiceError> {
    let at = now();
    let row = user::ActiveModel {
        id: Set(Uuid::now_v7()),
        org_id: Set(tenant.org_id),
        email_folded: Set(fold(&new.email)),
        email: Set(new.email),
        name: Set(new.name),
        created_at: Set(at),
        updated_at: Set(at),
    };
    let added = match insert_for::<user::Entity>(db, tenant, row.clone(), None).await {
        Err(ServiceError::NotAMember) => add_first_user(db, tenant, row).await,
        added => added,
    };
    added.map_err(|err| conflict_on_duplicate(err, DUPLICATE_EMAIL))
}

/// The organization's first user, admitted whoever claims it while the organization has none.
/// However many race, one wins: they take turns on the organization's row, and each decides
/// only once the one before has committed.
async fn add_first_user(
    db: &Pool,
    tenant: &Tenant,
    row: user::ActiveModel,
) -> Result<user::Model, ServiceError> {
    let txn = db.begin().await?;
    tenancy::lock_for_first_user(&txn, tenant.org_id).await?;
    let added = insert_where::<user::Entity>(&txn, row, tenancy::has_no_users(tenant.org_id))
        .await?
        .ok_or(ServiceError::NotAMember)?;
    txn.commit().await?;
    Ok(added)
}

pub async fn find(db: &Pool, tenant: &Tenant, id: Uuid) -> Result<user::Model, ServiceError> {
    get_for::<user::Entity>(db, tenant, id).await
}

pub async fn list(
    db: &Pool,
    tenant: &Tenant,
    page: PageRequest,
) -> Result<Page<user::Model>, ServiceError> {
    page_for::<user::Entity>(db, tenant, Condition::all(), page).await
}

pub async fn update(
    db: &Pool,
    tenant: &Tenant,
    id: Uuid,
    changes: UserChanges,
) -> Result<user::Model, ServiceError> {
    let current = find(db, tenant, id).await?;
    let mut row: user::ActiveModel = Default::default();
    let email_folded = changes.email.as_deref().map(fold);
    let changed = set_if_changed(&mut row.email, &current.email, changes.email)
        | set_if_changed(&mut row.name, &current.name, changes.name);
    if !changed {
        return Ok(current);
    }
    set_if_changed(&mut row.email_folded, &current.email_folded, email_folded);
    row.updated_at = Set(now());
    update_returning::<user::Entity>(db, tenant, id, row, None)
        .await
        .map_err(|err| conflict_on_duplicate(err, DUPLICATE_EMAIL))
}

pub async fn delete(
    db: &Pool,
    tenant: &Tenant,
    id: Uuid,
    cascade: bool,
) -> Result<(), ServiceError> {
    let logs = Dependents::<execution_log::Entity> {
        column: execution_log::Column::UserId,
        label: "execution logs",
    };
    delete_with_dependents::<user::Entity, _>(db, tenant, id, cascade, logs).await
}
