//! Who may act in an organization, stated as SQL conditions, so that the check travels inside
//! the very statement that reads or writes the rows: one round trip per query, and no moment
//! between a check and the query it guards.
//!
//! This module sits below the door ([`super::tenant_scope`]), which builds every tenant query
//! from these conditions; it queries the users table itself, since membership is what the
//! door is made of.

use entity::{organization, user};
use sea_orm::sea_query::{Alias, Expr, ExprTrait, LockType, Query, SelectStatement};
use sea_orm::{
    ColumnTrait, ConnectionTrait, EntityTrait, PaginatorTrait, QueryFilter, QuerySelect,
};
use uuid::Uuid;

use super::ServiceError;

/// Who a tenant call acts for: a user claimed to belong to an organization.
///
/// The claim is not trusted. Every query through the door ([`super::tenant_scope`]) carries
/// [`member`] in its own `WHERE`, so it reads and writes nothing unless the claim holds at that
/// moment; when a query finds nothing, [`refusal_or`] tells a stranger from a missing row.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tenant {
    pub org_id: Uuid,
    pub user_id: Uuid,
}

/// The alias of the users table inside the conditions, so that they never bind to the outer
/// query's table (which may be `users` too).
const MEMBER: &str = "member";

/// `SELECT 1 FROM users AS member WHERE member.org_id = $org_id`.
fn users_of(org_id: Uuid) -> SelectStatement {
    Query::select()
        .expr(Expr::cust("1"))
        .from_as(user::Entity, Alias::new(MEMBER))
        .and_where(Expr::col((Alias::new(MEMBER), user::Column::OrgId)).eq(org_id))
        .to_owned()
}

/// True while `tenant.user_id` is a user of `tenant.org_id`.
pub fn member(tenant: &Tenant) -> Expr {
    Expr::exists(
        users_of(tenant.org_id)
            .and_where(Expr::col((Alias::new(MEMBER), user::Column::Id)).eq(tenant.user_id))
            .to_owned(),
    )
}

/// True while the organization has no users: the moment for its first one. Only meaningful
/// under [`lock_for_first_user`], which makes concurrent first users take turns.
pub fn has_no_users(org_id: Uuid) -> Expr {
    Expr::exists(users_of(org_id)).not()
}

/// Locks the organization's row until the end of `txn`, so that of concurrent requests for
/// its first user one decides at a time (on SQLite the write transaction itself takes turns);
/// `NotAMember` when there is no such organization.
///
/// An `INSERT … SELECT … WHERE NOT EXISTS (users)` alone does not serialise: under READ
/// COMMITTED each racer sees no users and inserts one. `FOR NO KEY UPDATE` makes the others
/// wait here, and their insert's fresh snapshot then sees the first user. It does not block
/// the foreign-key checks (`FOR KEY SHARE`) of other writes into the organization.
pub async fn lock_for_first_user(
    txn: &impl ConnectionTrait,
    org_id: Uuid,
) -> Result<(), ServiceError> {
    organization::Entity::find_by_id(org_id)
        .lock(LockType::NoKeyUpdate)
        .one(txn)
        .await?
        .map(|_| ())
        .ok_or(ServiceError::NotAMember)
}

/// Whether the tenant's claim holds now: one statement, asked only after a query found nothing.
pub async fn is_member(db: &impl ConnectionTrait, tenant: &Tenant) -> Result<bool, ServiceError> {
    let members = user::Entity::find()
        .filter(user::Column::OrgId.eq(tenant.org_id))
        .filter(user::Column::Id.eq(tenant.user_id))
        .count(db)
        .await?;
    Ok(members > 0)
}

/// What it means that a query of the door found nothing: the caller is not a member (403), or
/// else `otherwise` (no such row, an unknown reference).
pub async fn refusal_or(
    db: &impl ConnectionTrait,
    tenant: &Tenant,
    otherwise: ServiceError,
) -> ServiceError {
    match is_member(db, tenant).await {
        Ok(true) => otherwise,
        Ok(false) => ServiceError::NotAMember,
        Err(err) => err,
    }
}
