//! Who may act in an organization, stated as SQL conditions, so that the check travels inside
//! the very statement that reads or writes the rows: one round trip per query, and no moment
//! between a check and the query it guards.

use entity::{organization, user};
use sea_orm::sea_query::{Alias, Expr, ExprTrait, Query, SelectStatement};
use sea_orm::{ColumnTrait, ConnectionTrait, PaginatorTrait, QueryFilter};
use uuid::Uuid;

use super::tenant_scope::TenantScoped;
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

/// True while the tenant may add a user: a member, or anyone into an existing organization that
/// has no users yet, so that it can get its first one.
pub fn may_add_user(tenant: &Tenant) -> Expr {
    let organization = Query::select()
        .expr(Expr::cust("1"))
        .from(organization::Entity)
        .and_where(Expr::col((organization::Entity, organization::Column::Id)).eq(tenant.org_id))
        .to_owned();
    member(tenant).or(Expr::exists(organization).and(Expr::exists(users_of(tenant.org_id)).not()))
}

/// Whether the tenant's claim holds now: one statement, asked only after a query found nothing.
pub async fn is_member(db: &impl ConnectionTrait, tenant: &Tenant) -> Result<bool, ServiceError> {
    let members = user::Entity::find_in_org(tenant.org_id)
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
