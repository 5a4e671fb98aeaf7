//! Organizations: the tenants themselves.

use entity::{action, execution_log, flow, organization, tool, user};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, Condition, ConnectionTrait, EntityTrait, PaginatorTrait,
    QueryFilter, QuerySelect, Set,
};
use uuid::Uuid;

use super::pagination::{fetch_page, Page, PageRequest};
use super::tenant_scope::TenantScoped;
use super::{conflict_on_reference, now, ServiceError};
use crate::db::Pool;

/// A validated new organization.
#[derive(Debug)]
pub struct NewOrganization {
    pub name: String,
    /// `None`: the server's `RETENTION_DAYS`.
    pub retention_days: Option<i32>,
    /// Normalised entries; empty: any domain.
    pub allowed_email_domains: Vec<String>,
}

/// A validated partial update; `None` leaves a field as it is.
#[derive(Debug, Default)]
pub struct OrganizationChanges {
    pub name: Option<String>,
    /// `Some(None)`: back to the server's `RETENTION_DAYS`.
    pub retention_days: Option<Option<i32>>,
    /// A new list of normalised entries (empty: any domain).
    pub allowed_email_domains: Option<Vec<String>>,
}

/// The row of a new organization.
pub fn new_row(new: NewOrganization) -> organization::ActiveModel {
    let at = now();
    organization::ActiveModel {
        id: Set(Uuid::now_v7()),
        name: Set(new.name),
        retention_days: Set(new.retention_days),
        allowed_email_domains: Set(domains_column(new.allowed_email_domains)),
        created_at: Set(at),
        updated_at: Set(at),
    }
}

/// The organization's allowed email domains (normalised); empty: any.
pub fn allowed_email_domains(row: &organization::Model) -> Vec<String> {
    row.allowed_email_domains
        .as_ref()
        .and_then(|domains| serde_json::from_value(domains.clone()).ok())
        .unwrap_or_default()
}

/// The column's value for `domains`: null for none.
fn domains_column(domains: Vec<String>) -> Option<serde_json::Value> {
    (!domains.is_empty()).then(|| serde_json::Value::from(domains))
}

pub async fn create(db: &Pool, new: NewOrganization) -> Result<organization::Model, ServiceError> {
    Ok(new_row(new).insert(db).await?)
}

pub async fn find(
    db: &impl ConnectionTrait,
    id: Uuid,
) -> Result<organization::Model, ServiceError> {
    organization::Entity::find_by_id(id)
        .one(db)
        .await?
        .ok_or(ServiceError::NotFound("organization"))
}

/// One page of organizations: every one, or only `only` (a key's own).
pub async fn list(
    db: &Pool,
    only: Option<Uuid>,
    page: PageRequest,
) -> Result<Page<organization::Model>, ServiceError> {
    let rows = organization::Entity::find()
        .filter(Condition::all().add_option(only.map(|id| organization::Column::Id.eq(id))));
    Ok(fetch_page(db, rows, organization::Column::Id, |row| row.id, page).await?)
}

/// Applies `changes`; a change to nothing (absent fields, or the stored values) writes nothing
/// and leaves `updatedAt` as it was.
pub async fn update(
    db: &Pool,
    id: Uuid,
    changes: OrganizationChanges,
) -> Result<organization::Model, ServiceError> {
    let current = find(db, id).await?;
    let name = changes.name.filter(|name| *name != current.name);
    let retention_days = changes
        .retention_days
        .filter(|days| *days != current.retention_days);
    let domains = changes
        .allowed_email_domains
        .filter(|domains| *domains != allowed_email_domains(&current));
    if name.is_none() && retention_days.is_none() && domains.is_none() {
        return Ok(current);
    }
    // Only the changed columns are written: a concurrent change to another field stays.
    let mut row: organization::ActiveModel = current.into();
    if let Some(name) = name {
        row.name = Set(name);
    }
    if let Some(days) = retention_days {
        row.retention_days = Set(days);
    }
    if let Some(domains) = domains {
        row.allowed_email_domains = Set(domains_column(domains));
    }
    row.updated_at = Set(now());
    Ok(row.update(db).await?)
}

/// How many rows of each kind an organization still owns.
#[derive(Debug, PartialEq, Eq)]
pub struct OwnedRows {
    pub users: u64,
    pub tools: u64,
    pub actions: u64,
    pub flows: u64,
    pub execution_logs: u64,
}

impl OwnedRows {
    fn is_empty(&self) -> bool {
        self.users + self.tools + self.actions + self.flows + self.execution_logs == 0
    }
}

async fn owned_rows(db: &impl ConnectionTrait, org_id: Uuid) -> Result<OwnedRows, ServiceError> {
    Ok(OwnedRows {
        users: user::Entity::find_in_org(org_id).count(db).await?,
        tools: tool::Entity::find_in_org(org_id).count(db).await?,
        actions: action::Entity::find_in_org(org_id).count(db).await?,
        flows: flow::Entity::find_in_org(org_id).count(db).await?,
        execution_logs: execution_log::Entity::find_in_org(org_id).count(db).await?,
    })
}

/// Deletes an organization. While it still owns rows this is a conflict that says how many of
/// each, unless `cascade`, which deletes it and all of its rows in one transaction.
///
/// The organization's row is locked first (`FOR UPDATE`; on SQLite the write transaction itself
/// takes turns): every write into the organization checks its foreign key to that row, so it
/// waits, and then finds the organization gone. Without `cascade` only the row itself is
/// deleted: a row that slipped in anyway makes the foreign key refuse the delete (409), never a
/// silent deletion.
pub async fn delete(db: &Pool, id: Uuid, cascade: bool) -> Result<(), ServiceError> {
    let txn = db.begin().await?;
    organization::Entity::find_by_id(id)
        .lock_exclusive()
        .one(&txn)
        .await?
        .ok_or(ServiceError::NotFound("organization"))?;
    let owned = owned_rows(&txn, id).await?;
    if !owned.is_empty() && !cascade {
        return Err(ServiceError::Conflict(format!(
            "the organization still has {} users, {} tools, {} actions, {} flows and {} execution logs; \
             delete them first or use ?cascade=true",
            owned.users, owned.tools, owned.actions, owned.flows, owned.execution_logs
        )));
    }
    if cascade {
        // Children before parents, so that every foreign key holds at each step.
        execution_log::Entity::delete_in_org(id).exec(&txn).await?;
        action::Entity::delete_in_org(id).exec(&txn).await?;
        flow::Entity::delete_in_org(id).exec(&txn).await?;
        tool::Entity::delete_in_org(id).exec(&txn).await?;
        user::Entity::delete_in_org(id).exec(&txn).await?;
    }
    organization::Entity::delete_by_id(id)
        .exec(&txn)
        .await
        .map_err(|err| {
            conflict_on_reference(
                err,
                "the organization still has rows; delete them first or use ?cascade=true",
            )
        })?;
    txn.commit().await?;
    Ok(())
}
