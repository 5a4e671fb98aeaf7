//! Tools: the external APIs an organization calls.

use entity::{action, tool};
use sea_orm::sea_query::Expr;
use sea_orm::{
    ColumnTrait, Condition, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder, QuerySelect, Set,
};
use serde_json::{Map, Value};
use uuid::Uuid;

use super::pagination::{Page, PageRequest};
use super::tenancy::Tenant;
use super::tenant_scope::{
    delete_with_dependents, get_for, insert_for, page_for, set_if_changed, Dependents, TenantScoped,
};
use super::{conflict_on_duplicate, now, ServiceError};
use crate::credentials::{Credentials, Keyring};
use crate::db::Pool;

const DUPLICATE_NAME: &str = "a tool with this name already exists in the organization";

/// A `credentials` object as sent: its members are secrets, so it never prints them.
pub struct CredentialsInput(pub Map<String, Value>);

impl std::fmt::Debug for CredentialsInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CredentialsInput([redacted])")
    }
}

/// A validated new tool.
#[derive(Debug)]
pub struct NewTool {
    pub name: String,
    pub base_url: String,
    pub auth_type: String,
    /// The `credentials` object as sent, checked against `auth_type` here.
    pub credentials: Option<CredentialsInput>,
}

/// A validated partial update; `None` leaves a field as it is.
#[derive(Debug, Default)]
pub struct ToolChanges {
    pub name: Option<String>,
    pub base_url: Option<String>,
    pub auth_type: Option<String>,
    /// `Some(None)`: remove the credentials; `Some(Some(object))`: replace them.
    pub credentials: Option<Option<CredentialsInput>>,
}

/// Checks `object` against `auth_type` and seals it for the tool: the two columns to store.
fn sealed_credentials(
    keyring: &Keyring,
    tenant: &Tenant,
    tool_id: Uuid,
    auth_type: &str,
    object: &Map<String, Value>,
) -> Result<(Option<String>, Option<Vec<u8>>), ServiceError> {
    let credentials = Credentials::read(auth_type, object).map_err(ServiceError::Invalid)?;
    let sealed = credentials.seal(keyring, tenant.org_id, tool_id)?;
    Ok((Some(sealed.key_id), Some(sealed.bytes)))
}

pub async fn create(
    db: &Pool,
    keyring: &Keyring,
    tenant: &Tenant,
    new: NewTool,
) -> Result<tool::Model, ServiceError> {
    let at = now();
    let id = Uuid::now_v7();
    let (key_id, sealed) = match &new.credentials {
        Some(object) => sealed_credentials(keyring, tenant, id, &new.auth_type, &object.0)?,
        None => (None, None),
    };
    let row = tool::ActiveModel {
        id: Set(id),
        org_id: Set(tenant.org_id),
        name: Set(new.name),
        base_url: Set(new.base_url),
        auth_type: Set(new.auth_type),
        credentials_key_id: Set(key_id),
        credentials_sealed: Set(sealed),
        created_at: Set(at),
        updated_at: Set(at),
    };
    insert_for::<tool::Entity>(db, tenant, row, None)
        .await
        .map_err(|err| conflict_on_duplicate(err, DUPLICATE_NAME))
}

pub async fn find(db: &Pool, tenant: &Tenant, id: Uuid) -> Result<tool::Model, ServiceError> {
    get_for::<tool::Entity>(db, tenant, id).await
}

pub async fn list(
    db: &Pool,
    tenant: &Tenant,
    page: PageRequest,
) -> Result<Page<tool::Model>, ServiceError> {
    page_for::<tool::Entity>(db, tenant, Condition::all(), page).await
}

/// Applies `changes`. Credentials sent are checked against the tool's `authType` after the
/// change. Stored credentials are removed, unless new ones come with the change, when the
/// `authType` changes (they were for another kind) or when `baseUrl` moves to another origin
/// (scheme, host or port): otherwise anyone who may edit a tool could send its secret to a host
/// of their own. The write is guarded by the `authType` and credentials it read, so two
/// concurrent updates cannot leave credentials of one kind on a tool of another (409).
pub async fn update(
    db: &Pool,
    keyring: &Keyring,
    tenant: &Tenant,
    id: Uuid,
    changes: ToolChanges,
) -> Result<tool::Model, ServiceError> {
    let current = find(db, tenant, id).await?;
    let auth_type = changes.auth_type.as_deref().unwrap_or(&current.auth_type);
    let moved = changes
        .base_url
        .as_deref()
        .is_some_and(|url| origin(url) != origin(&current.base_url));
    let credentials = match &changes.credentials {
        Some(Some(object)) => Some(sealed_credentials(
            keyring, tenant, id, auth_type, &object.0,
        )?),
        Some(None) => Some((None, None)),
        None if auth_type != current.auth_type || moved => Some((None, None)),
        None => None,
    };
    let mut row: tool::ActiveModel = Default::default();
    let mut changed = set_if_changed(&mut row.name, &current.name, changes.name)
        | set_if_changed(&mut row.base_url, &current.base_url, changes.base_url)
        | set_if_changed(&mut row.auth_type, &current.auth_type, changes.auth_type);
    if let Some((key_id, sealed)) = credentials {
        if key_id.is_some() || current.credentials_key_id.is_some() {
            row.credentials_key_id = Set(key_id);
            row.credentials_sealed = Set(sealed);
            changed = true;
        }
    }
    if !changed {
        return Ok(current);
    }
    row.updated_at = Set(now());
    let sealed_as_read = match &current.credentials_sealed {
        Some(bytes) => tool::Column::CredentialsSealed.eq(bytes.clone()),
        None => tool::Column::CredentialsSealed.is_null(),
    };
    let mut updated = tool::Entity::update_for(tenant, id)
        .set(row)
        .filter(tool::Column::AuthType.eq(current.auth_type.clone()))
        .filter(sealed_as_read)
        .exec_with_returning(db)
        .await
        .map_err(|err| conflict_on_duplicate(ServiceError::from(err), DUPLICATE_NAME))?;
    match updated.pop() {
        Some(row) => Ok(row),
        None => {
            find(db, tenant, id).await?;
            Err(ServiceError::Conflict(
                "the tool's authType or credentials changed while this update was made; read it \
                 and send the update again"
                    .to_owned(),
            ))
        }
    }
}

/// Scheme, host and port of a base URL (as the URL standard parses it).
fn origin(url: &str) -> Option<(String, Option<String>, Option<u16>)> {
    let url = url::Url::parse(url).ok()?;
    Some((
        url.scheme().to_owned(),
        url.host_str().map(str::to_owned),
        url.port_or_known_default(),
    ))
}

pub async fn delete(
    db: &Pool,
    tenant: &Tenant,
    id: Uuid,
    cascade: bool,
) -> Result<(), ServiceError> {
    let actions = Dependents::<action::Entity> {
        column: action::Column::ToolId,
        label: "actions",
    };
    delete_with_dependents::<tool::Entity, _>(db, tenant, id, cascade, actions).await
}

/// What a re-sealing pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Resealed {
    /// Credentials now sealed under the first key.
    pub resealed: u64,
    /// Credentials that did not open with any configured key (left as they are).
    pub unreadable: u64,
    /// Credentials changed by someone else between read and write (theirs kept; the pass that
    /// found them is followed by another).
    pub raced: u64,
    /// Tools whose credentials are still under another key when it ends (unreadable ones, or
    /// sealed meanwhile by a process that does not know the new key yet).
    pub remaining: u64,
}

/// Re-seals, in batches of `batch` tools, every tool's credentials that a key other than the
/// keyring's first sealed. A platform operation across organizations, not a tenant query. Each
/// write is guarded by the sealed bytes it read, so a tool updated meanwhile keeps its new
/// credentials; a pass that met such a tool is followed by another, and a run cut off anywhere
/// is resumed by running it again. Ends by counting what is still under another key.
pub async fn reseal_all(
    db: &Pool,
    keyring: &Keyring,
    batch: u64,
) -> Result<Resealed, ServiceError> {
    let Some(first) = keyring.sealing_key_id() else {
        return Err(crate::credentials::NoSealingKey.into());
    };
    let mut done = Resealed::default();
    // A few passes at most: each one only repeats for tools changed during the one before.
    for _ in 0..5 {
        let pass = reseal_pass(db, keyring, first, batch).await?;
        done.resealed += pass.resealed;
        done.raced += pass.raced;
        done.unreadable = pass.unreadable;
        if pass.raced == 0 {
            break;
        }
    }
    done.remaining = tool::Entity::find()
        .filter(tool::Column::CredentialsKeyId.is_not_null())
        .filter(tool::Column::CredentialsKeyId.ne(first))
        .count(db)
        .await?;
    Ok(done)
}

async fn reseal_pass(
    db: &Pool,
    keyring: &Keyring,
    first: &str,
    batch: u64,
) -> Result<Resealed, ServiceError> {
    let mut done = Resealed::default();
    let mut after: Option<Uuid> = None;
    loop {
        let mut query = tool::Entity::find()
            .filter(tool::Column::CredentialsKeyId.is_not_null())
            .filter(tool::Column::CredentialsKeyId.ne(first))
            .order_by_asc(tool::Column::Id)
            .limit(batch);
        if let Some(after) = after {
            query = query.filter(tool::Column::Id.gt(after));
        }
        let rows = query.all(db).await?;
        let Some(last) = rows.last() else {
            return Ok(done);
        };
        after = Some(last.id);
        for row in rows {
            let Some(sealed) = crate::credentials::Sealed::of_tool(&row) else {
                continue;
            };
            let new = match Credentials::reseal(keyring, row.org_id, row.id, &sealed) {
                Ok(Some(new)) => new,
                Ok(None) => continue,
                Err(_) => {
                    tracing::warn!(tool_id = %row.id, org_id = %row.org_id, key_id = %sealed.key_id,
                        "a tool's credentials do not open with any configured key; left as they are");
                    done.unreadable += 1;
                    continue;
                }
            };
            let written = tool::Entity::update_many()
                .col_expr(tool::Column::CredentialsKeyId, Expr::value(new.key_id))
                .col_expr(tool::Column::CredentialsSealed, Expr::value(new.bytes))
                .filter(tool::Column::OrgId.eq(row.org_id))
                .filter(tool::Column::Id.eq(row.id))
                .filter(tool::Column::CredentialsKeyId.eq(sealed.key_id.clone()))
                .filter(tool::Column::CredentialsSealed.eq(sealed.bytes.clone()))
                .exec(db)
                .await?;
            if written.rows_affected == 1 {
                done.resealed += 1;
            } else {
                done.raced += 1;
            }
        }
    }
}
