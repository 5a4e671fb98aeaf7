//! Column and key shapes that every tenant table shares.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveIden)]
pub(crate) enum Organizations {
    Table,
    Id,
}

/// A user's (and an API key's) role, from the least to the most rights.
pub(crate) const ROLES: &[&str] = &["viewer", "editor", "admin", "owner"];

#[derive(DeriveIden)]
pub(crate) enum Common {
    Id,
    OrgId,
    CreatedAt,
    UpdatedAt,
}

/// A server-made UUID (version 7) primary key.
pub(crate) fn id() -> ColumnDef {
    uuid(Common::Id).primary_key().take()
}

/// The owning organization; every tenant table has it.
pub(crate) fn org_id() -> ColumnDef {
    uuid(Common::OrgId)
}

pub(crate) fn created_at() -> ColumnDef {
    timestamp_with_time_zone(Common::CreatedAt)
}

pub(crate) fn updated_at() -> ColumnDef {
    timestamp_with_time_zone(Common::UpdatedAt)
}

/// `org_id -> organizations(id)`: a tenant row cannot outlive or precede its organization.
pub(crate) fn org_foreign_key(table: impl IntoIden + 'static) -> ForeignKeyCreateStatement {
    let table = table.into_iden();
    ForeignKey::create()
        .name(format!("fk_{}_org", table))
        .from_tbl(table)
        .from_col(Common::OrgId)
        .to_tbl(Organizations::Table)
        .to_col(Organizations::Id)
        .take()
}

/// `(org_id, parent_id) -> parent(org_id, id)`: a child can only reference a parent of its own
/// organization, enforced by the database and not only by the code.
pub(crate) fn same_org_foreign_key(
    name: &str,
    table: impl IntoIden + 'static,
    column: impl IntoIden + 'static,
    parent: impl IntoIden + 'static,
) -> ForeignKeyCreateStatement {
    ForeignKey::create()
        .name(name)
        .from_tbl(table)
        .from_col(Common::OrgId)
        .from_col(column)
        .to_tbl(parent)
        .to_col(Common::OrgId)
        .to_col(Common::Id)
        .take()
}

/// Unique `(org_id, id)`: the target of same-organization foreign keys, and the index that serves
/// a tenant's list (keyset on `id`).
pub(crate) fn tenant_key_index(table: impl IntoIden + 'static) -> IndexCreateStatement {
    let table = table.into_iden();
    Index::create()
        .name(format!("ux_{}_org_id", table))
        .table(table)
        .col(Common::OrgId)
        .col(Common::Id)
        .unique()
        .take()
}

/// `(org_id, column, id)`: serves a list filtered by `column`, in keyset order.
pub(crate) fn filter_index(
    table: impl IntoIden + 'static,
    column: impl IntoIden + 'static,
) -> IndexCreateStatement {
    let table = table.into_iden();
    let column = column.into_iden();
    Index::create()
        .name(format!("ix_{}_org_{}", table, column))
        .table(table)
        .col(Common::OrgId)
        .col(column)
        .col(Common::Id)
        .take()
}

/// A string-backed enumeration: the allowed values are a CHECK constraint, not a native enum type.
pub(crate) fn one_of(column: impl IntoIden + 'static, values: &[&str]) -> ColumnDef {
    let column = column.into_iden();
    string_len(column.clone(), 16)
        .check(Expr::col(column).is_in(values.iter().copied()))
        .take()
}
