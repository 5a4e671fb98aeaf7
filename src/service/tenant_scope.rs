//! The one door for tenant tables: every query of a tenant call on a tenant table starts here,
//! confined to the caller's organization and guarded by the caller's membership in the same
//! statement ([`tenancy::member`]). A query on a tenant table that does not go through it is a
//! bug.
//!
//! A query that finds nothing asks once more, only then, whether the caller is a member: a
//! stranger gets [`ServiceError::NotAMember`] (403), a member the query's own answer (404, 422).

use entity::{action, execution_log, flow, tool, user};
use sea_orm::sea_query::{Expr, Query};
use sea_orm::{
    ActiveModelTrait, ActiveValue, ColumnTrait, Condition, ConnectionTrait, DbErr, DeleteMany,
    EntityTrait, Iterable, PaginatorTrait, QueryFilter, Select, UpdateMany, Value,
};
use uuid::Uuid;

use super::pagination::{fetch_page, Page, PageRequest};
use super::tenancy::{self, refusal_or, Tenant};
use super::ServiceError;
use crate::db::Pool;

/// A table whose rows belong to one organization.
pub trait TenantScoped: EntityTrait<Model: Sync> {
    /// What the API calls one row, as in "no such tool".
    const NAME: &'static str;

    /// The `org_id` column.
    fn org_column() -> Self::Column;

    /// The `id` column.
    fn id_column() -> Self::Column;

    /// The id of a row.
    fn id_of(row: &Self::Model) -> Uuid;

    /// Every row of `org_id`, checking no caller: only for the organization's own lifecycle
    /// (`/organizations`), which is not a tenant call. Tenant calls use [`Self::find_for`].
    fn find_in_org(org_id: Uuid) -> Select<Self> {
        Self::find().filter(Self::org_column().eq(org_id))
    }

    /// A delete of rows of `org_id`, checking no caller: as [`Self::find_in_org`].
    fn delete_in_org(org_id: Uuid) -> DeleteMany<Self> {
        Self::delete_many().filter(Self::org_column().eq(org_id))
    }

    /// Every row of the tenant's organization, while the tenant is a member of it.
    fn find_for(tenant: &Tenant) -> Select<Self> {
        Self::find_in_org(tenant.org_id).filter(tenancy::member(tenant))
    }

    /// Row `id` of the tenant's organization, while the tenant is a member of it.
    fn find_one_for(tenant: &Tenant, id: Uuid) -> Select<Self> {
        Self::find_for(tenant).filter(Self::id_column().eq(id))
    }

    /// An update of row `id` of the tenant's organization, while the tenant is a member of it.
    fn update_for(tenant: &Tenant, id: Uuid) -> UpdateMany<Self> {
        Self::update_many()
            .filter(Self::org_column().eq(tenant.org_id))
            .filter(Self::id_column().eq(id))
            .filter(tenancy::member(tenant))
    }

    /// A delete of rows of the tenant's organization, while the tenant is a member of it;
    /// narrow it further with `filter`.
    fn delete_for(tenant: &Tenant) -> DeleteMany<Self> {
        Self::delete_in_org(tenant.org_id).filter(tenancy::member(tenant))
    }
}

macro_rules! tenant_scoped {
    ($($entity:ident => $name:literal),+ $(,)?) => {
        $(impl TenantScoped for $entity::Entity {
            const NAME: &'static str = $name;

            fn org_column() -> Self::Column {
                $entity::Column::OrgId
            }

            fn id_column() -> Self::Column {
                $entity::Column::Id
            }

            fn id_of(row: &$entity::Model) -> Uuid {
                row.id
            }
        })+
    };
}

tenant_scoped!(
    user => "user",
    tool => "tool",
    action => "action",
    flow => "flow",
    execution_log => "execution log",
);

/// Row `id` of the tenant's organization, or `NotFound` (also when it belongs to another
/// organization).
pub async fn get_for<E: TenantScoped>(
    db: &impl ConnectionTrait,
    tenant: &Tenant,
    id: Uuid,
) -> Result<E::Model, ServiceError> {
    match E::find_one_for(tenant, id).one(db).await? {
        Some(row) => Ok(row),
        None => Err(refusal_or(db, tenant, ServiceError::NotFound(E::NAME)).await),
    }
}

/// One page of the tenant's rows that meet `condition`, newest first.
pub async fn page_for<E: TenantScoped>(
    db: &Pool,
    tenant: &Tenant,
    condition: Condition,
    page: PageRequest,
) -> Result<Page<E::Model>, ServiceError> {
    let rows = E::find_for(tenant).filter(condition);
    let page = fetch_page(db, rows, E::id_column(), E::id_of, page).await?;
    if page.items.is_empty() && !tenancy::is_member(db, tenant).await? {
        return Err(ServiceError::NotAMember);
    }
    Ok(page)
}

/// Checks that a body's reference (`toolId`, `flowId`) names a row of the tenant's
/// organization; otherwise the request is unprocessable (422).
pub async fn require_reference<E: TenantScoped>(
    db: &impl ConnectionTrait,
    tenant: &Tenant,
    field: &'static str,
    id: Uuid,
) -> Result<(), ServiceError> {
    if E::find_one_for(tenant, id).count(db).await? > 0 {
        return Ok(());
    }
    let unknown = ServiceError::UnknownReference {
        field,
        message: format!("is not a {} of this organization", E::NAME),
    };
    Err(refusal_or(db, tenant, unknown).await)
}

/// Inserts `row` while the tenant is a member of its organization, and returns it as stored.
pub async fn insert_for<E: TenantScoped>(
    db: &impl ConnectionTrait,
    tenant: &Tenant,
    row: E::ActiveModel,
) -> Result<E::Model, ServiceError> {
    insert_where::<E>(db, row, tenancy::member(tenant)).await
}

/// `INSERT INTO … SELECT <the set values> WHERE <admission> RETURNING *`: one statement that
/// writes the row only while `admission` (a condition of [`tenancy`]) holds, and `NotAMember`
/// when it does not.
pub async fn insert_where<E: TenantScoped>(
    db: &impl ConnectionTrait,
    row: E::ActiveModel,
    admission: Expr,
) -> Result<E::Model, ServiceError> {
    let (columns, values): (Vec<_>, Vec<_>) = E::Column::iter()
        .filter_map(|column| match row.get(column) {
            ActiveValue::Set(value) | ActiveValue::Unchanged(value) => {
                Some((column, Expr::val(value)))
            }
            ActiveValue::NotSet => None,
        })
        .unzip();
    let values = Query::select()
        .exprs(values)
        .and_where(admission)
        .to_owned();
    let mut insert = Query::insert();
    insert
        .into_table(E::default())
        .columns(columns)
        .select_from(values)
        .map_err(|err| DbErr::Custom(format!("INSERT … SELECT of {}: {err}", E::NAME)))?
        .returning_all();
    let statement = db.get_database_backend().build(&insert);
    E::find()
        .from_raw_sql(statement)
        .one(db)
        .await?
        .ok_or(ServiceError::NotAMember)
}

/// Writes the set fields of `changes` to row `id` of the tenant's organization and returns the
/// row as stored.
pub async fn update_returning<E: TenantScoped>(
    db: &impl ConnectionTrait,
    tenant: &Tenant,
    id: Uuid,
    changes: E::ActiveModel,
) -> Result<E::Model, ServiceError> {
    let mut rows = E::update_for(tenant, id)
        .set(changes)
        .exec_with_returning(db)
        .await?;
    match rows.pop() {
        Some(row) => Ok(row),
        None => Err(refusal_or(db, tenant, ServiceError::NotFound(E::NAME)).await),
    }
}

/// Sets `field` to `new` when one is given and it differs from `current`; says whether it did.
pub fn set_if_changed<T>(field: &mut ActiveValue<T>, current: &T, new: Option<T>) -> bool
where
    T: PartialEq + Into<Value>,
{
    match new {
        Some(new) if new != *current => {
            *field = ActiveValue::Set(new);
            true
        }
        _ => false,
    }
}

/// Deletes row `id` of the tenant's organization, which nothing references.
pub async fn delete_one_for<E: TenantScoped>(
    db: &impl ConnectionTrait,
    tenant: &Tenant,
    id: Uuid,
) -> Result<(), ServiceError> {
    let deleted = E::delete_for(tenant)
        .filter(E::id_column().eq(id))
        .exec(db)
        .await?;
    if deleted.rows_affected == 0 {
        return Err(refusal_or(db, tenant, ServiceError::NotFound(E::NAME)).await);
    }
    Ok(())
}

/// The rows of `D` that reference a row of `E` through `D::column`: what blocks deleting it.
pub struct Dependents<D: TenantScoped> {
    pub column: D::Column,
    /// How the conflict message names them, e.g. "actions".
    pub label: &'static str,
}

/// Deletes row `id` of the tenant's organization. While rows of `D` reference it, that is a
/// conflict that says how many, unless `cascade`, which deletes them too; all in one
/// transaction.
pub async fn delete_with_dependents<E: TenantScoped, D: TenantScoped>(
    db: &Pool,
    tenant: &Tenant,
    id: Uuid,
    cascade: bool,
    dependents: Dependents<D>,
) -> Result<(), ServiceError> {
    let txn = db.begin().await?;
    get_for::<E>(&txn, tenant, id).await?;
    let count = D::find_for(tenant)
        .filter(dependents.column.eq(id))
        .count(&txn)
        .await?;
    if count > 0 && !cascade {
        return Err(ServiceError::Conflict(format!(
            "the {} still has {count} {}; delete them first or use ?cascade=true",
            E::NAME,
            dependents.label
        )));
    }
    D::delete_for(tenant)
        .filter(dependents.column.eq(id))
        .exec(&txn)
        .await?;
    E::delete_for(tenant)
        .filter(E::id_column().eq(id))
        .exec(&txn)
        .await?;
    txn.commit().await?;
    Ok(())
}
