//! API keys: made and shown once, stored as a digest, revoked by a timestamp.

use chrono::{DateTime, Duration, Utc};
use entity::{api_key, user};
use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait, Condition, EntityTrait, QueryFilter, Set};
use uuid::Uuid;

use super::pagination::{Page, PageRequest};
use super::tenancy::{self, Role, Tenant};
use super::tenant_scope::{get_for, insert_for, page_for, TenantScoped};
use super::{now, ServiceError};
use crate::db::Pool;
use crate::identity::key;

/// `lastUsedAt` is written at most this often per key, so that a request is not a write.
const LAST_USED_PRECISION: Duration = Duration::minutes(1);

/// A key that authenticated: whose it is, and what it may do now.
#[derive(Debug)]
pub struct AuthenticatedKey {
    pub id: Uuid,
    pub org_id: Uuid,
    pub user_id: Uuid,
    /// The key's own role.
    pub key_role: Role,
    /// The lower of the key's role and its user's current role.
    pub role: Role,
}

/// The live key whose digest is `digest` (not revoked, not expired, its user still there), in
/// one indexed read with its user. This is identity, before any tenant is known, so it reads
/// by the digest's unique index rather than through the tenant door.
///
/// Marks the key used when its `lastUsedAt` is over a minute old, in the background: the
/// request does not wait for that write.
pub async fn authenticate(
    db: &Pool,
    digest: &str,
    at: DateTime<Utc>,
) -> Result<Option<AuthenticatedKey>, ServiceError> {
    let found = api_key::Entity::find()
        .filter(api_key::Column::Digest.eq(digest))
        .filter(api_key::Column::RevokedAt.is_null())
        .filter(
            Condition::any()
                .add(api_key::Column::ExpiresAt.is_null())
                .add(api_key::Column::ExpiresAt.gt(at)),
        )
        .find_also_related(user::Entity)
        .one(db)
        .await?;
    let Some((key, Some(user))) = found else {
        return Ok(None);
    };
    let (Some(key_role), Some(user_role)) = (Role::parse(&key.role), Role::parse(&user.role))
    else {
        return Ok(None);
    };
    if key
        .last_used_at
        .is_none_or(|used| used < at - LAST_USED_PRECISION)
    {
        mark_used(db.clone(), key.id, at);
    }
    Ok(Some(AuthenticatedKey {
        id: key.id,
        org_id: key.org_id,
        user_id: key.user_id,
        key_role,
        role: key_role.min(user_role),
    }))
}

fn mark_used(db: Pool, id: Uuid, at: DateTime<Utc>) {
    tokio::spawn(async move {
        let marked = api_key::Entity::update_many()
            .col_expr(api_key::Column::LastUsedAt, Expr::value(at))
            .filter(api_key::Column::Id.eq(id))
            .filter(
                Condition::any()
                    .add(api_key::Column::LastUsedAt.is_null())
                    .add(api_key::Column::LastUsedAt.lt(at - LAST_USED_PRECISION)),
            )
            .exec(&db)
            .await;
        if let Err(err) = marked {
            tracing::warn!(error = %err, "could not record an API key's last use");
        }
    });
}

/// A validated new key.
#[derive(Debug)]
pub struct NewApiKey {
    pub name: String,
    /// Whose key it is; `None` for the caller.
    pub user_id: Option<Uuid>,
    /// Its role; `None` for the most it may have.
    pub role: Option<Role>,
    pub expires_at: Option<DateTime<Utc>>,
}

/// Makes a key. Anyone may make one for themselves; admins and owners for another user of
/// the organization. Its role is at most the caller's and its user's (403 above it), and by
/// default the lower of the two. Returns the row and the key itself, which exists only here.
pub async fn create(
    db: &Pool,
    tenant: &Tenant,
    new: NewApiKey,
) -> Result<(api_key::Model, String), ServiceError> {
    // Under the organization's lock, which every change of roles takes: the roles read here
    // are still the roles when the key is written.
    let txn = db.begin().await?;
    tenancy::lock_organization(&txn, tenant.org_id).await?;
    let caller_role = tenancy::require_role(&txn, tenant).await?;
    let user_id = new.user_id.unwrap_or(tenant.user_id);
    // The operator's keys are always for a named user of the organization.
    let user_role = if user_id == tenant.user_id && !tenant.operator {
        caller_role
    } else {
        if caller_role < Role::Admin {
            return Err(ServiceError::Forbidden(
                "only admins and owners create keys for another user".to_owned(),
            ));
        }
        let user = get_for::<user::Entity>(&txn, tenant, user_id)
            .await
            .map_err(|err| match err {
                ServiceError::NotFound(_) => ServiceError::UnknownReference {
                    field: "userId",
                    message: "is not a user of this organization".to_owned(),
                },
                other => other,
            })?;
        Role::parse(&user.role).unwrap_or(Role::Viewer)
    };
    let most = caller_role.min(user_role);
    let role = new.role.unwrap_or(most);
    if role > most {
        return Err(ServiceError::Forbidden(format!(
            "the key's role may be at most {most}: the lower of the caller's and its user's"
        )));
    }
    let (row, key) = new_row(tenant.org_id, user_id, new.name, role, new.expires_at);
    let row = insert_for::<api_key::Entity>(&txn, tenant, row, None).await?;
    txn.commit().await?;
    Ok((row, key))
}

/// The row of a new key for user `user_id` of organization `org_id`, and the key itself.
pub fn new_row(
    org_id: Uuid,
    user_id: Uuid,
    name: String,
    role: Role,
    expires_at: Option<DateTime<Utc>>,
) -> (api_key::ActiveModel, String) {
    let made = key::generate();
    let at = now();
    let row = api_key::ActiveModel {
        id: Set(Uuid::now_v7()),
        org_id: Set(org_id),
        user_id: Set(user_id),
        name: Set(name),
        prefix: Set(made.prefix),
        digest: Set(made.digest),
        role: Set(role.as_str().to_owned()),
        expires_at: Set(expires_at),
        last_used_at: Set(None),
        revoked_at: Set(None),
        created_at: Set(at),
        updated_at: Set(at),
    };
    (row, made.key)
}

/// The keys the caller may see: every key of the organization for admins and owners, their
/// own for everyone else.
async fn visible(db: &Pool, tenant: &Tenant) -> Result<Condition, ServiceError> {
    let role = tenancy::require_role(db, tenant).await?;
    Ok(Condition::all()
        .add_option((role < Role::Admin).then(|| api_key::Column::UserId.eq(tenant.user_id))))
}

pub async fn list(
    db: &Pool,
    tenant: &Tenant,
    page: PageRequest,
) -> Result<Page<api_key::Model>, ServiceError> {
    let condition = visible(db, tenant).await?;
    page_for::<api_key::Entity>(db, tenant, condition, page).await
}

pub async fn find(db: &Pool, tenant: &Tenant, id: Uuid) -> Result<api_key::Model, ServiceError> {
    let condition = visible(db, tenant).await?;
    api_key::Entity::find_one_for(tenant, id)
        .filter(condition)
        .one(db)
        .await?
        .ok_or(ServiceError::NotFound(api_key::Entity::NAME))
}

/// Revokes a key the caller may see: from the next request on it answers 401. Revoking it
/// again changes nothing.
pub async fn revoke(db: &Pool, tenant: &Tenant, id: Uuid) -> Result<(), ServiceError> {
    let key = find(db, tenant, id).await?;
    if key.revoked_at.is_some() {
        return Ok(());
    }
    let at = now();
    api_key::Entity::update_for(tenant, id)
        .col_expr(api_key::Column::RevokedAt, Expr::value(at))
        .col_expr(api_key::Column::UpdatedAt, Expr::value(at))
        .filter(api_key::Column::RevokedAt.is_null())
        .exec(db)
        .await?;
    Ok(())
}
