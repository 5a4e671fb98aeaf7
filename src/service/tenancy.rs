//! Who may act in an organization.

use entity::{organization, user};
use sea_orm::{ColumnTrait, ConnectionTrait, DbErr, EntityTrait, PaginatorTrait, QueryFilter};
use uuid::Uuid;

use super::tenant_scope::TenantScoped;

/// How a claimed user stands in a claimed organization.
#[derive(Debug, PartialEq, Eq)]
pub enum Membership {
    /// The user belongs to the organization.
    Member,
    /// The organization exists and has no users yet.
    EmptyOrganization,
    /// Neither: no such organization, or the user is not one of its users.
    Stranger,
}

/// One query in the common case (a member); two more only when the caller is not one.
pub async fn membership(
    db: &impl ConnectionTrait,
    org_id: Uuid,
    user_id: Uuid,
) -> Result<Membership, DbErr> {
    let member = user::Entity::find_in(org_id)
        .filter(user::Column::Id.eq(user_id))
        .count(db)
        .await?;
    if member > 0 {
        return Ok(Membership::Member);
    }
    let org_exists = organization::Entity::find_by_id(org_id).count(db).await? > 0;
    if org_exists && user::Entity::find_in(org_id).count(db).await? == 0 {
        Ok(Membership::EmptyOrganization)
    } else {
        Ok(Membership::Stranger)
    }
}
