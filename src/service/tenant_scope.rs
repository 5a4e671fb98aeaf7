//! The one door for tenant tables: every query of a tenant call on a tenant table starts here,
//! confined to the caller's organization and guarded by the caller's membership in the same
//! statement ([`tenancy::member`]). A query on a tenant table that does not go through it is a
//! bug.
//!
//! A query that finds nothing asks once more, only then, whether the caller is a member: a
//! stranger gets [`ServiceError::NotAMember`] (403), a member the query's own answer (404, 422).

use entity::{action, api_key, execution_log, flow, run, tool, user};
use sea_orm::sea_query::{Expr, ExprTrait, Query};
use sea_orm::{
    ActiveModelTrait, ActiveValue, ColumnTrait, Condition, ConnectionTrait, DbErr, DeleteMany,
    EntityTrait, Iterable, PaginatorTrait, QueryFilter, QueryOrder, QuerySelect, Select,
    UpdateMany, Value,
};
use uuid::Uuid;

use super::pagination::{fetch_page, Page, PageRequest};
use super::statement_cache::{self, Bindings, Shape};
use super::tenancy::{self, refusal_or, Tenant};
use super::{conflict_on_reference, ServiceError};
use crate::db::{Pool, Transaction};

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
    /// (`/organizations`) and for the executor working one of the organization's runs, which
    /// are not tenant calls. Tenant calls use [`Self::find_for`].
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
    api_key => "API key",
    run => "run",
);

/// Row `id` of the tenant's organization, or `NotFound` (also when it belongs to another
/// organization).
pub async fn get_for<E: TenantScoped>(
    db: &impl ConnectionTrait,
    tenant: &Tenant,
    id: Uuid,
) -> Result<E::Model, ServiceError> {
    let backend = db.get_database_backend();
    let shape = Shape::new("one", E::NAME, backend, tenant);
    let bindings = Bindings {
        id: Some(id),
        limit: None,
    };
    let statement = statement_cache::statement(shape, backend, tenant, bindings, |tenant, b| {
        E::find_one_for(tenant, b.id.unwrap_or_default())
    });
    match E::find().from_raw_sql(statement).one(db).await? {
        Some(row) => Ok(row),
        None => Err(refusal_or(db, tenant, ServiceError::NotFound(E::NAME)).await),
    }
}

/// One page of the tenant's rows that meet `condition`, newest first. Without a condition (the
/// plain list of a resource) the statement comes from the [`statement_cache`].
pub async fn page_for<E: TenantScoped>(
    db: &Pool,
    tenant: &Tenant,
    condition: Condition,
    page: PageRequest,
) -> Result<Page<E::Model>, ServiceError> {
    let page = if condition.is_empty() {
        let backend = db.get_database_backend();
        let query = if page.after.is_some() {
            "page after"
        } else {
            "page"
        };
        let shape = Shape::new(query, E::NAME, backend, tenant);
        let bindings = Bindings {
            id: page.after,
            limit: Some(page.limit + 1),
        };
        let statement =
            statement_cache::statement(shape, backend, tenant, bindings, |tenant, b| {
                let rows = E::find_for(tenant);
                let rows = match b.id {
                    Some(after) => rows.filter(E::id_column().lt(after)),
                    None => rows,
                };
                rows.order_by_desc(E::id_column())
                    .limit(b.limit.unwrap_or_default())
            });
        let rows = E::find().from_raw_sql(statement).all(db).await?;
        Page::of(rows, page.limit, E::id_of)
    } else {
        let rows = E::find_for(tenant).filter(condition);
        fetch_page(db, rows, E::id_column(), E::id_of, page).await?
    };
    if page.items.is_empty() {
        tenancy::require_role(db, tenant).await?;
    }
    Ok(page)
}

/// A body's reference to a row of the tenant's organization (`toolId`, `flowId`): stated as a
/// condition, so that it travels inside the statement that writes the referencing row.
pub struct Reference {
    field: &'static str,
    parent: &'static str,
    exists: Expr,
}

impl Reference {
    /// `field` of the body names row `id` of `P` in the tenant's organization.
    pub fn to<P: TenantScoped>(field: &'static str, tenant: &Tenant, id: Uuid) -> Self {
        let row = Query::select()
            .expr(Expr::cust("1"))
            .from(P::default())
            .and_where(Expr::col((P::default(), P::org_column())).eq(tenant.org_id))
            .and_where(Expr::col((P::default(), P::id_column())).eq(id))
            .to_owned();
        Self {
            field,
            parent: P::NAME,
            exists: Expr::exists(row),
        }
    }

    /// The 422 of a reference to a row that is not there.
    fn unknown(&self) -> ServiceError {
        ServiceError::UnknownReference {
            field: self.field,
            message: format!("is not a {} of this organization", self.parent),
        }
    }
}

/// Checks that `reference` names a row of the tenant's organization; otherwise the request is
/// unprocessable (422).
pub async fn require_reference(
    db: &impl ConnectionTrait,
    tenant: &Tenant,
    reference: &Reference,
) -> Result<(), ServiceError> {
    let check = Query::select()
        .expr(Expr::cust("1"))
        .and_where(tenancy::member(tenant))
        .and_where(reference.exists.clone())
        .to_owned();
    match db.query_one(&check).await? {
        Some(_) => Ok(()),
        None => Err(refusal_or(db, tenant, reference.unknown()).await),
    }
}

/// Inserts `row` while the tenant is a member of its organization and `reference`, when
/// given, names a row of it: one statement. Returns the row as stored.
///
/// A parent deleted in between (the foreign key refuses the row) is the same 422 as one that
/// was never there: the body names a row that does not exist.
pub async fn insert_for<E: TenantScoped>(
    db: &impl ConnectionTrait,
    tenant: &Tenant,
    row: E::ActiveModel,
    reference: Option<Reference>,
) -> Result<E::Model, ServiceError> {
    let mut admission = tenancy::member(tenant);
    if let Some(reference) = &reference {
        admission = admission.and(reference.exists.clone());
    }
    match insert_where::<E>(db, row, admission).await {
        Ok(Some(row)) => Ok(row),
        Ok(None) => Err(refusal_or(db, tenant, missing(reference)).await),
        Err(err) if err.is_foreign_key_violation() => {
            Err(refusal_or(db, tenant, missing(reference)).await)
        }
        Err(err) => Err(err),
    }
}

/// Why an admitted member's insert found nothing to write: its reference is gone (422), or,
/// with no reference, the caller lost membership or role in between.
fn missing(reference: Option<Reference>) -> ServiceError {
    reference.map_or(ServiceError::NotAMember, |reference| reference.unknown())
}

/// `INSERT INTO … SELECT <the set values> WHERE <admission> RETURNING *`: one statement that
/// writes the row only while `admission` (a condition of [`tenancy`]) holds; `None` when it
/// does not.
pub async fn insert_where<E: TenantScoped>(
    db: &impl ConnectionTrait,
    row: E::ActiveModel,
    admission: Expr,
) -> Result<Option<E::Model>, ServiceError> {
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
    Ok(E::find().from_raw_sql(statement).one(db).await?)
}

/// Writes the set fields of `changes` to row `id` of the tenant's organization and returns the
/// row as stored. `reference` is the parent the changes point to, when they change one (checked
/// first with [`require_reference`]): deleted in between, it is the same 422.
pub async fn update_returning<E: TenantScoped>(
    db: &impl ConnectionTrait,
    tenant: &Tenant,
    id: Uuid,
    changes: E::ActiveModel,
    reference: Option<Reference>,
) -> Result<E::Model, ServiceError> {
    let updated = E::update_for(tenant, id)
        .set(changes)
        .exec_with_returning(db)
        .await
        .map_err(ServiceError::from);
    match updated {
        Ok(mut rows) => match rows.pop() {
            Some(row) => Ok(row),
            None => Err(refusal_or(db, tenant, ServiceError::NotFound(E::NAME)).await),
        },
        Err(err) if err.is_foreign_key_violation() => {
            Err(refusal_or(db, tenant, missing(reference)).await)
        }
        Err(err) => Err(err),
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
///
/// The row is locked first (`FOR UPDATE`; on SQLite the write transaction itself takes turns):
/// a child being created meanwhile waits for the foreign-key check of its parent, and then
/// finds it gone (422), so what is counted is what is deleted. Without `cascade` only the row
/// itself is deleted, and a child that slipped in anyway makes the foreign key refuse it (409),
/// never a silent deletion of the child.
pub async fn delete_with_dependents<E: TenantScoped, D: TenantScoped>(
    db: &Pool,
    tenant: &Tenant,
    id: Uuid,
    cascade: bool,
    dependents: Dependents<D>,
) -> Result<(), ServiceError> {
    let txn = db.begin().await?;
    delete_with_dependents_in::<E, D>(&txn, tenant, id, cascade, dependents).await?;
    txn.commit().await?;
    Ok(())
}

/// [`delete_with_dependents`] inside the caller's transaction `txn`, which it leaves open.
pub async fn delete_with_dependents_in<E: TenantScoped, D: TenantScoped>(
    txn: &Transaction,
    tenant: &Tenant,
    id: Uuid,
    cascade: bool,
    dependents: Dependents<D>,
) -> Result<(), ServiceError> {
    lock_for_delete::<E>(txn, tenant, id).await?;
    delete_locked::<E, D>(txn, tenant, id, cascade, dependents).await
}

/// [`delete_with_dependents_in`] for a row the caller locked with [`lock_for_delete`] (and
/// perhaps cleared of other dependents with [`clear_dependents`]).
pub async fn delete_locked<E: TenantScoped, D: TenantScoped>(
    txn: &Transaction,
    tenant: &Tenant,
    id: Uuid,
    cascade: bool,
    dependents: Dependents<D>,
) -> Result<(), ServiceError> {
    clear_dependents::<E, D>(txn, tenant, id, cascade, &dependents).await?;
    E::delete_for(tenant)
        .filter(E::id_column().eq(id))
        .exec(txn)
        .await
        .map_err(|err| {
            let detail = format!(
                "the {} still has {}; delete them first or use ?cascade=true",
                E::NAME,
                dependents.label
            );
            conflict_on_reference(err, &detail)
        })?;
    Ok(())
}

/// Row `id` of `E` in the tenant's organization, locked until the end of `txn` (`FOR UPDATE`
/// on PostgreSQL; on SQLite the write transaction itself takes turns); not found when it is not
/// there.
pub async fn lock_for_update<E: TenantScoped>(
    txn: &Transaction,
    tenant: &Tenant,
    id: Uuid,
) -> Result<E::Model, ServiceError> {
    match E::find_one_for(tenant, id)
        .lock_exclusive()
        .one(txn)
        .await?
    {
        Some(row) => Ok(row),
        None => Err(refusal_or(txn, tenant, ServiceError::NotFound(E::NAME)).await),
    }
}

/// Locks row `id` of `E` in the tenant's organization for a delete in `txn` (and the
/// organization for sharing, as every delete does first); not found when it is not there.
pub async fn lock_for_delete<E: TenantScoped>(
    txn: &Transaction,
    tenant: &Tenant,
    id: Uuid,
) -> Result<(), ServiceError> {
    tenancy::share_organization(txn, tenant.org_id).await?;
    lock_for_update::<E>(txn, tenant, id).await?;
    Ok(())
}

/// The rows of `D` that reference row `id` of `E`, which the caller locked: a conflict that
/// says how many, unless `cascade`, which deletes them.
pub async fn clear_dependents<E: TenantScoped, D: TenantScoped>(
    txn: &Transaction,
    tenant: &Tenant,
    id: Uuid,
    cascade: bool,
    dependents: &Dependents<D>,
) -> Result<(), ServiceError> {
    let count = D::find_for(tenant)
        .filter(dependents.column.eq(id))
        .count(txn)
        .await?;
    if count > 0 && !cascade {
        return Err(ServiceError::Conflict(format!(
            "the {} still has {count} {}; delete them first or use ?cascade=true",
            E::NAME,
            dependents.label
        )));
    }
    if cascade {
        D::delete_for(tenant)
            .filter(dependents.column.eq(id))
            .exec(txn)
            .await?;
    }
    Ok(())
}
