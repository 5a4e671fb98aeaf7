//! Who may act in an organization, stated as SQL conditions, so that the check travels inside
//! the very statement that reads or writes the rows: one round trip per query, and no moment
//! between a check and the query it guards.
//!
//! The caller's role travels the same way: [`member`] admits only a member whose role is at
//! least the one the call needs ([`Tenant::least`]), so that a right is checked by the very
//! statement it guards, and a user demoted a moment ago is refused by the next one.
//!
//! This module sits below the door ([`super::tenant_scope`]), which builds every tenant query
//! from these conditions; it queries the users table itself, since membership is what the
//! door is made of.

use entity::{organization, user};
use sea_orm::sea_query::{Alias, Expr, ExprTrait, LockType, Query, SelectStatement};
use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QuerySelect};
use uuid::Uuid;

use super::ServiceError;

/// What a user may do in their organization, from the least to the most. See API.md, "Roles".
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// Reads everything of the organization.
    Viewer,
    /// Also creates, changes and deletes tools, actions, flows, execution logs and runs.
    Editor,
    /// Also manages users (up to `admin`), every API key, and the organization itself.
    Admin,
    /// Also gives and takes `owner`, and deletes the organization.
    Owner,
}

impl Role {
    /// Every role, from the least to the most.
    pub const ALL: [Role; 4] = [Role::Viewer, Role::Editor, Role::Admin, Role::Owner];

    /// The role's name on the wire and in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Editor => "editor",
            Role::Admin => "admin",
            Role::Owner => "owner",
        }
    }

    /// The role named `name`; `None` for anything else (letter case matters).
    pub fn parse(name: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|role| role.as_str() == name)
    }

    /// The names of this role and every role above it.
    fn and_above(self) -> impl Iterator<Item = &'static str> {
        Role::ALL
            .into_iter()
            .filter(move |role| *role >= self)
            .map(Role::as_str)
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who a tenant call acts for: a user claimed to belong to an organization, and the least role
/// the call needs.
///
/// The claim is not trusted. Every query through the door ([`super::tenant_scope`]) carries
/// [`member`] in its own `WHERE`, so it reads and writes nothing unless the claim holds at that
/// moment; when a query finds nothing, [`refusal_or`] tells a stranger or a user without the
/// right from a missing row.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tenant {
    pub org_id: Uuid,
    pub user_id: Uuid,
    /// The least role the call needs.
    pub least: Role,
    /// The most the caller's credentials allow: a key's own role, `Owner` for the headers (the
    /// user's role is then the only bound).
    pub most: Role,
    /// The platform operator (the admin token) acting as an owner of the organization: admitted
    /// while the organization exists, whoever `user_id` names (the user a write records, when
    /// the operator names one in `X-User-ID`; nil otherwise).
    pub operator: bool,
}

impl Tenant {
    /// The same caller, for a step that needs at least `role` (never less than the call needs).
    pub fn needing(self, role: Role) -> Tenant {
        Tenant {
            least: self.least.max(role),
            ..self
        }
    }
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

/// True while `tenant.user_id` is a user of `tenant.org_id` with at least `tenant.least`, and
/// the credentials allow that much (`tenant.most`); for the operator, while the organization
/// exists.
pub fn member(tenant: &Tenant) -> Expr {
    if tenant.operator {
        return Expr::exists(organization_row(tenant.org_id));
    }
    if tenant.least > tenant.most {
        // The credentials (a key's own role) allow less than the call needs, whatever the
        // user's role: the door admits nothing, and the refusal names the role.
        return Expr::cust("1 = 0");
    }
    let mut user = users_of(tenant.org_id)
        .and_where(Expr::col((Alias::new(MEMBER), user::Column::Id)).eq(tenant.user_id))
        .to_owned();
    if tenant.least > Role::Viewer {
        user.and_where(
            Expr::col((Alias::new(MEMBER), user::Column::Role)).is_in(tenant.least.and_above()),
        );
    }
    Expr::exists(user)
}

/// `SELECT 1 FROM organizations WHERE id = $org_id`.
fn organization_row(org_id: Uuid) -> SelectStatement {
    Query::select()
        .expr(Expr::cust("1"))
        .from(organization::Entity)
        .and_where(Expr::col((organization::Entity, organization::Column::Id)).eq(org_id))
        .to_owned()
}

/// True while the organization has no users: the moment for its first one. Only meaningful
/// under [`lock_organization`], which makes concurrent first users take turns.
pub fn has_no_users(org_id: Uuid) -> Expr {
    Expr::exists(users_of(org_id)).not()
}

/// Locks the organization's row until the end of `txn`, so that changes to who its users are
/// and what roles they hold take turns (on SQLite the write transaction itself takes turns):
/// of concurrent requests for its first user, or changes of its owners, one decides at a time.
/// `NotAMember` when there is no such organization.
///
/// An `INSERT … SELECT … WHERE NOT EXISTS (users)` alone does not serialise: under READ
/// COMMITTED each racer sees no users and inserts one. `FOR NO KEY UPDATE` makes the others
/// wait here, and their next statement's fresh snapshot then sees the first one's work. It does
/// not block the foreign-key checks (`FOR KEY SHARE`) of other writes into the organization.
pub async fn lock_organization(
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

/// Takes a share of the organization's row until the end of `txn`, before a delete locks its
/// own row: every delete then locks the organization first, so that a cascade delete of a tool
/// and one of its whole organization wait for each other instead of deadlocking. Shares do not
/// wait for each other, nor for foreign-key checks.
pub async fn share_organization(
    txn: &impl ConnectionTrait,
    org_id: Uuid,
) -> Result<(), ServiceError> {
    organization::Entity::find_by_id(org_id)
        .lock(LockType::KeyShare)
        .one(txn)
        .await?;
    Ok(())
}

/// The caller's role now (the user's, bounded by [`Tenant::most`]), or `None` when they are
/// not a member: one statement, asked only after a query found nothing, or by a rule that
/// depends on the role.
pub async fn role_of(
    db: &impl ConnectionTrait,
    tenant: &Tenant,
) -> Result<Option<Role>, ServiceError> {
    if tenant.operator {
        let exists = organization::Entity::find_by_id(tenant.org_id)
            .one(db)
            .await?;
        return Ok(exists.map(|_| Role::Owner));
    }
    let user = user::Entity::find()
        .filter(user::Column::OrgId.eq(tenant.org_id))
        .filter(user::Column::Id.eq(tenant.user_id))
        .one(db)
        .await?;
    Ok(user
        .and_then(|user| Role::parse(&user.role))
        .map(|role| role.min(tenant.most)))
}

/// The caller's role, refused when they are not a member or lack `tenant.least`.
pub async fn require_role(
    db: &impl ConnectionTrait,
    tenant: &Tenant,
) -> Result<Role, ServiceError> {
    match role_of(db, tenant).await? {
        None => Err(ServiceError::NotAMember),
        Some(role) if role < tenant.least => Err(ServiceError::LacksRole(tenant.least)),
        Some(role) => Ok(role),
    }
}

/// The user a write of the platform operator records (`X-User-ID`): required, and a user of the
/// organization (422 otherwise). Members record themselves and need no check.
pub async fn require_recorded_user(
    db: &impl ConnectionTrait,
    tenant: &Tenant,
) -> Result<(), ServiceError> {
    if !tenant.operator {
        return Ok(());
    }
    let unknown = |message: &str| ServiceError::UnknownReference {
        field: "X-User-ID",
        message: message.to_owned(),
    };
    if tenant.user_id.is_nil() {
        return Err(unknown(
            "is required: the platform operator writes this for a user of the organization",
        ));
    }
    let as_member = Tenant {
        operator: false,
        least: Role::Viewer,
        ..*tenant
    };
    match role_of(db, &as_member).await? {
        Some(_) => Ok(()),
        None => Err(unknown("is not a user of this organization")),
    }
}

/// What it means that a query of the door found nothing: the caller is not a member (403),
/// lacks the role the call needs (403), or else `otherwise` (no such row, an unknown
/// reference).
pub async fn refusal_or(
    db: &impl ConnectionTrait,
    tenant: &Tenant,
    otherwise: ServiceError,
) -> ServiceError {
    match require_role(db, tenant).await {
        Ok(_) => otherwise,
        Err(err) => err,
    }
}
