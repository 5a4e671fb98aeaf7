//! The one door for tenant tables: every query on a tenant table starts here and carries the
//! organization. A query on a tenant table that does not go through it is a bug.

use entity::{action, execution_log, flow, tool, user};
use sea_orm::{
    ActiveValue, ColumnTrait, ConnectionTrait, DeleteMany, EntityTrait, PaginatorTrait,
    QueryFilter, Select, UpdateMany, Value,
};
use uuid::Uuid;

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

    /// Every row of `org_id`, and only those.
    fn find_in(org_id: Uuid) -> Select<Self> {
        Self::find().filter(Self::org_column().eq(org_id))
    }

    /// Row `id` of `org_id`, if it is one.
    fn find_one_in(org_id: Uuid, id: Uuid) -> Select<Self> {
        Self::find_in(org_id).filter(Self::id_column().eq(id))
    }

    /// An update of row `id` of `org_id` only.
    fn update_in(org_id: Uuid, id: Uuid) -> UpdateMany<Self> {
        Self::update_many()
            .filter(Self::org_column().eq(org_id))
            .filter(Self::id_column().eq(id))
    }

    /// A delete of rows of `org_id` only; narrow it further with `filter`.
    fn delete_in(org_id: Uuid) -> DeleteMany<Self> {
        Self::delete_many().filter(Self::org_column().eq(org_id))
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

/// Row `id` of `org_id`, or `NotFound` (also when it belongs to another organization).
pub async fn get_in<E: TenantScoped>(
    db: &impl ConnectionTrait,
    org_id: Uuid,
    id: Uuid,
) -> Result<E::Model, ServiceError> {
    E::find_one_in(org_id, id)
        .one(db)
        .await?
        .ok_or(ServiceError::NotFound(E::NAME))
}

/// Whether row `id` exists in `org_id`.
pub async fn exists_in<E: TenantScoped>(
    db: &impl ConnectionTrait,
    org_id: Uuid,
    id: Uuid,
) -> Result<bool, ServiceError> {
    Ok(E::find_one_in(org_id, id).count(db).await? > 0)
}

/// Checks that a body's reference (`toolId`, `flowId`) names a row of the caller's organization;
/// otherwise the request is unprocessable (422).
pub async fn require_reference<E: TenantScoped>(
    db: &impl ConnectionTrait,
    org_id: Uuid,
    field: &'static str,
    id: Uuid,
) -> Result<(), ServiceError> {
    if exists_in::<E>(db, org_id, id).await? {
        Ok(())
    } else {
        Err(ServiceError::UnknownReference {
            field,
            message: format!("is not a {} of this organization", E::NAME),
        })
    }
}

/// Writes the set fields of `changes` to row `id` of `org_id` and returns the row as stored;
/// `None` when there is no such row.
pub async fn update_returning<E: TenantScoped>(
    db: &impl ConnectionTrait,
    org_id: Uuid,
    id: Uuid,
    changes: E::ActiveModel,
) -> Result<Option<E::Model>, ServiceError> {
    let mut rows = E::update_in(org_id, id)
        .set(changes)
        .exec_with_returning(db)
        .await?;
    Ok(rows.pop())
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

/// Deletes row `id` of `org_id`, which nothing references; `NotFound` when there is none.
pub async fn delete_one_in<E: TenantScoped>(
    db: &impl ConnectionTrait,
    org_id: Uuid,
    id: Uuid,
) -> Result<(), ServiceError> {
    let deleted = E::delete_in(org_id)
        .filter(E::id_column().eq(id))
        .exec(db)
        .await?;
    if deleted.rows_affected == 0 {
        return Err(ServiceError::NotFound(E::NAME));
    }
    Ok(())
}

/// The rows of `D` that reference a row of `E` through `D::column`: what blocks deleting it.
pub struct Dependents<D: TenantScoped> {
    pub column: D::Column,
    /// How the conflict message names them, e.g. "actions".
    pub label: &'static str,
}

/// Deletes row `id` of `org_id`. While rows of `D` reference it, that is a conflict that says
/// how many, unless `cascade`, which deletes them too; all in one transaction.
pub async fn delete_with_dependents<E: TenantScoped, D: TenantScoped>(
    db: &Pool,
    org_id: Uuid,
    id: Uuid,
    cascade: bool,
    dependents: Dependents<D>,
) -> Result<(), ServiceError> {
    let txn = db.begin().await?;
    get_in::<E>(&txn, org_id, id).await?;
    let count = D::find_in(org_id)
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
    D::delete_in(org_id)
        .filter(dependents.column.eq(id))
        .exec(&txn)
        .await?;
    E::delete_in(org_id)
        .filter(E::id_column().eq(id))
        .exec(&txn)
        .await?;
    txn.commit().await?;
    Ok(())
}
