//! Users of an organization, and the rules of their roles.

use entity::{execution_log, organization, run, user};
use sea_orm::{
    ColumnTrait, Condition, ConnectionTrait, EntityTrait, PaginatorTrait, QueryFilter, Set,
};
use uuid::Uuid;

use super::pagination::{Page, PageRequest};
use super::tenancy::{self, Role, Tenant};
use super::tenant_scope::{
    clear_dependents, delete_locked, get_for, insert_for, insert_where, lock_for_delete, page_for,
    set_if_changed, update_returning, Dependents, TenantScoped,
};
use super::{conflict_on_duplicate, email_domains, now, organizations, ServiceError};
use crate::db::{Pool, Transaction};

const DUPLICATE_EMAIL: &str = "a user with this email already exists in the organization";

/// A validated new user.
#[derive(Debug)]
pub struct NewUser {
    pub email: String,
    pub name: Option<String>,
    /// `None` for the default, `editor`.
    pub role: Option<Role>,
}

/// A validated partial update; `None` leaves a field as it is, `Some(None)` clears `name`.
#[derive(Debug, Default)]
pub struct UserChanges {
    pub email: Option<String>,
    pub name: Option<Option<String>>,
    pub role: Option<Role>,
}

/// The key that makes emails unique regardless of letter case.
fn fold(email: &str) -> String {
    email.to_lowercase()
}

/// The role of a stored user (a row always holds one of the four; the database checks it).
pub fn role_of(row: &user::Model) -> Role {
    Role::parse(&row.role).unwrap_or(Role::Viewer)
}

/// The row of a new user of organization `org_id`.
pub fn new_row(org_id: Uuid, new: NewUser) -> user::ActiveModel {
    let at = now();
    let role = new.role.unwrap_or(Role::Editor);
    user::ActiveModel {
        id: Set(Uuid::now_v7()),
        org_id: Set(org_id),
        email_folded: Set(fold(&new.email)),
        email: Set(new.email),
        name: Set(new.name),
        role: Set(role.as_str().to_owned()),
        created_at: Set(at),
        updated_at: Set(at),
    }
}

/// Adds a user. A member needs `admin`, and `owner` to add an owner: nobody gives a role above
/// their own. Into an organization that exists and has no users yet, anyone may add its first
/// user (in headers mode), and so may the platform operator; it becomes the `owner` whatever
/// role was asked for.
pub async fn create(db: &Pool, tenant: &Tenant, new: NewUser) -> Result<user::Model, ServiceError> {
    require_allowed_email(db, tenant, &new.email).await?;
    let role = new.role.unwrap_or(Role::Editor);
    let mut row = new_row(tenant.org_id, new);
    let giver = tenant.needing(role);
    let added = if tenant.operator {
        add_under_lock(db, tenant, row, tenancy::member(tenant)).await
    } else {
        match insert_for::<user::Entity>(db, &giver, row.clone(), None).await {
            Err(ServiceError::NotAMember) => {
                row.role = Set(Role::Owner.as_str().to_owned());
                let first = tenancy::has_no_users(tenant.org_id);
                add_under_lock(db, tenant, row, first).await
            }
            added => added,
        }
    };
    added.map_err(|err| conflict_on_duplicate(err, DUPLICATE_EMAIL))
}

/// Adds a user while `admission` holds, taking turns on the organization's row, so that each
/// decides only once the one before has committed: of racing first users, one wins. The first
/// user of an organization is its owner, also when the platform operator adds it.
async fn add_under_lock(
    db: &Pool,
    tenant: &Tenant,
    mut row: user::ActiveModel,
    admission: sea_orm::sea_query::Expr,
) -> Result<user::Model, ServiceError> {
    let txn = db.begin().await?;
    tenancy::lock_organization(&txn, tenant.org_id).await?;
    if user::Entity::find_in_org(tenant.org_id).count(&txn).await? == 0 {
        row.role = Set(Role::Owner.as_str().to_owned());
    }
    let added = insert_where::<user::Entity>(&txn, row, admission)
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

/// Rows read per batch while looking for users outside the allowed domains.
const OUTSIDE_BATCH: u64 = 500;
/// Batches one request reads at most: a page of an organization where nearly everyone fits
/// costs a bounded walk, not one over all its users.
pub const OUTSIDE_BATCHES_PER_PAGE: u64 = 20;

/// One page of the users whose email the organization's `allowedEmailDomains` no longer
/// admits, newest first. The domains compare after IDNA normalisation, which SQL cannot do, so
/// the organization's users are walked in batches (keyset, never all at once) until the page
/// is full; its cursor is the last user it holds, as for the plain list. After
/// [`OUTSIDE_BATCHES_PER_PAGE`] batches the page ends as it is, short or even empty, with the
/// last user read as its cursor, so that the next page goes on from there.
pub async fn list_outside_allowed_domains(
    db: &Pool,
    tenant: &Tenant,
    page: PageRequest,
) -> Result<Page<user::Model>, ServiceError> {
    let domains = organization_domains(db, tenant.org_id).await?;
    if domains.is_empty() {
        // Every email fits an empty list; the membership check still decides who may ask.
        tenancy::require_role(db, tenant).await?;
        return Ok(Page {
            items: Vec::new(),
            next: None,
        });
    }
    let mut outside = Vec::new();
    let mut after = page.after;
    for _ in 0..OUTSIDE_BATCHES_PER_PAGE {
        let batch = PageRequest {
            limit: OUTSIDE_BATCH,
            after,
        };
        let rows = page_for::<user::Entity>(db, tenant, Condition::all(), batch).await?;
        after = rows.next;
        for row in rows.items {
            if !email_domains::admits(&domains, &row.email) {
                outside.push(row);
            }
            if outside.len() as u64 > page.limit {
                return Ok(Page::of(outside, page.limit, |row| row.id));
            }
        }
        if after.is_none() {
            return Ok(Page::of(outside, page.limit, |row| row.id));
        }
    }
    Ok(Page {
        items: outside,
        next: after,
    })
}

/// The organization's allowed email domains; empty when it sets none (or does not exist: the
/// statement that follows refuses that as usual).
async fn organization_domains(
    db: &impl ConnectionTrait,
    org_id: Uuid,
) -> Result<Vec<String>, ServiceError> {
    Ok(organization::Entity::find_by_id(org_id)
        .one(db)
        .await?
        .map(|org| organizations::allowed_email_domains(&org))
        .unwrap_or_default())
}

/// 422 on `email` when the organization's `allowedEmailDomains` do not admit `email`. Only a
/// caller who may add users learns the rule: a member (with the role the call needs), the
/// platform operator, or the first user of an organization that has none; anyone else gets
/// the refusal they would get anyway.
async fn require_allowed_email(
    db: &impl ConnectionTrait,
    tenant: &Tenant,
    email: &str,
) -> Result<(), ServiceError> {
    let domains = organization_domains(db, tenant.org_id).await?;
    if email_domains::admits(&domains, email) {
        return Ok(());
    }
    if !tenant.operator {
        if let Err(refusal) = tenancy::require_role(db, tenant).await {
            let has_users = user::Entity::find_in_org(tenant.org_id).count(db).await? > 0;
            if has_users {
                return Err(refusal);
            }
        }
    }
    Err(ServiceError::AgainstOrganizationRule {
        field: "email",
        message: format!(
            "is outside the organization's allowedEmailDomains ({})",
            domains.join(", ")
        ),
    })
}

/// How many owners the organization has, read inside `txn` (which holds the organization's
/// lock, so that no other change of owners can land in between).
async fn owners(txn: &Transaction, org_id: Uuid) -> Result<u64, ServiceError> {
    Ok(user::Entity::find_in_org(org_id)
        .filter(user::Column::Role.eq(Role::Owner.as_str()))
        .count(txn)
        .await?)
}

/// Reads user `id` for a change by the caller, inside `txn` under the organization's lock, and
/// checks the rules that do not depend on the change: only an owner changes or deletes an
/// owner. Returns the user and the caller's role.
async fn target_for_change(
    txn: &Transaction,
    tenant: &Tenant,
    id: Uuid,
) -> Result<(user::Model, Role), ServiceError> {
    tenancy::lock_organization(txn, tenant.org_id).await?;
    let target = get_for::<user::Entity>(txn, tenant, id).await?;
    let caller_role = tenancy::require_role(txn, tenant).await?;
    if role_of(&target) == Role::Owner && caller_role < Role::Owner {
        return Err(ServiceError::LacksRole(Role::Owner));
    }
    Ok((target, caller_role))
}

/// Applies `changes`. A role change follows the rules of roles: nobody changes their own role
/// or gives one above their own, and the organization keeps at least one owner (409), however
/// many changes race: they take turns on the organization's row.
pub async fn update(
    db: &Pool,
    tenant: &Tenant,
    id: Uuid,
    changes: UserChanges,
) -> Result<user::Model, ServiceError> {
    let txn = db.begin().await?;
    let (current, caller_role) = target_for_change(&txn, tenant, id).await?;
    if let Some(email) = changes
        .email
        .as_deref()
        .filter(|email| *email != current.email)
    {
        require_allowed_email(&txn, tenant, email).await?;
    }
    let mut row: user::ActiveModel = Default::default();
    let email_folded = changes.email.as_deref().map(fold);
    let role = changes.role.map(|role| role.as_str().to_owned());
    let role_changes = set_if_changed(&mut row.role, &current.role, role);
    if role_changes {
        let new_role = changes.role.unwrap_or(Role::Viewer);
        if id == tenant.user_id && !tenant.operator {
            return Err(ServiceError::Forbidden(
                "nobody changes their own role".to_owned(),
            ));
        }
        if new_role > caller_role {
            return Err(ServiceError::LacksRole(new_role));
        }
        if role_of(&current) == Role::Owner && owners(&txn, tenant.org_id).await? <= 1 {
            return Err(last_owner());
        }
    }
    let changed = role_changes
        | set_if_changed(&mut row.email, &current.email, changes.email)
        | set_if_changed(&mut row.name, &current.name, changes.name);
    if !changed {
        return Ok(current);
    }
    set_if_changed(&mut row.email_folded, &current.email_folded, email_folded);
    row.updated_at = Set(now());
    let updated = update_returning::<user::Entity>(&txn, tenant, id, row, None)
        .await
        .map_err(|err| conflict_on_duplicate(err, DUPLICATE_EMAIL))?;
    txn.commit().await?;
    Ok(updated)
}

fn last_owner() -> ServiceError {
    ServiceError::Conflict(
        "the organization must keep at least one owner: make another user owner first".to_owned(),
    )
}

/// Deletes a user; only an owner deletes an owner, and never the last one (409). While the user
/// has runs or execution logs this is a conflict, unless `cascade`. Their API keys go with them.
pub async fn delete(
    db: &Pool,
    tenant: &Tenant,
    id: Uuid,
    cascade: bool,
) -> Result<(), ServiceError> {
    let txn = db.begin().await?;
    let (target, _) = target_for_change(&txn, tenant, id).await?;
    if role_of(&target) == Role::Owner && owners(&txn, tenant.org_id).await? <= 1 {
        return Err(last_owner());
    }
    let runs = Dependents::<run::Entity> {
        column: run::Column::UserId,
        label: "runs",
    };
    let logs = Dependents::<execution_log::Entity> {
        column: execution_log::Column::UserId,
        label: "execution logs",
    };
    lock_for_delete::<user::Entity>(&txn, tenant, id).await?;
    clear_dependents::<user::Entity, _>(&txn, tenant, id, cascade, &runs).await?;
    delete_locked::<user::Entity, _>(&txn, tenant, id, cascade, logs).await?;
    txn.commit().await?;
    Ok(())
}
