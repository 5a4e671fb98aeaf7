//! The one door for tenant tables: every query on a tenant table starts here and carries the
//! organization. A query on a tenant table that does not go through it is a bug.

use entity::{action, execution_log, flow, tool, user};
use sea_orm::{ColumnTrait, DeleteMany, EntityTrait, QueryFilter, Select};
use uuid::Uuid;

/// A table whose rows belong to one organization.
pub trait TenantScoped: EntityTrait {
    /// The `org_id` column.
    fn org_column() -> Self::Column;

    /// Every row of `org_id`, and only those.
    fn find_in(org_id: Uuid) -> Select<Self> {
        Self::find().filter(Self::org_column().eq(org_id))
    }

    /// Deletes rows of `org_id`, and only those; narrow it further with `filter`.
    fn delete_in(org_id: Uuid) -> DeleteMany<Self> {
        Self::delete_many().filter(Self::org_column().eq(org_id))
    }
}

macro_rules! tenant_scoped {
    ($($entity:ident),+) => {
        $(impl TenantScoped for $entity::Entity {
            fn org_column() -> Self::Column {
                $entity::Column::OrgId
            }
        })+
    };
}

tenant_scoped!(user, tool, action, flow, execution_log);
