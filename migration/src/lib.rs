//! Tolstoy's schema migrations, one concern per file, each with a working `down()`.
//!
//! The same migrations run on PostgreSQL and SQLite. They do not depend on the `entity` crate:
//! a migration is a frozen snapshot of the schema at the time it was written.

pub use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::Statement;

mod columns;
mod m20261121_000001_create_organizations;
mod m20261121_000002_create_users;
mod m20261121_000003_create_tools;
mod m20261121_000004_create_actions;
mod m20261121_000005_create_flows;
mod m20261121_000006_create_execution_logs;
mod m20261202_000007_add_user_roles;
mod m20261202_000008_create_api_keys;
mod m20261202_000009_create_runs;
mod m20261203_000010_add_tool_credentials;
mod m20261203_000011_add_retention;
mod m20261203_000012_add_run_traceparent;
mod m20261203_000013_add_allowed_email_domains;

pub struct Migrator;

/// Creates `schema` on PostgreSQL if it is missing (`DB_SCHEMA`: the migrations then put every
/// table, index and sequence there, through the connection's `search_path`); nothing on SQLite,
/// which has no schemas.
pub async fn create_schema(db: &impl ConnectionTrait, schema: &str) -> Result<(), DbErr> {
    let postgres = sea_orm_migration::sea_orm::DbBackend::Postgres;
    if db.get_database_backend() != postgres {
        return Ok(());
    }
    // Looked up first: CREATE SCHEMA IF NOT EXISTS needs the right to create schemas even when
    // the schema exists, which an owner given the schema (`tolstoy roles`) does not have.
    let exists = db
        .query_one_raw(Statement::from_sql_and_values(
            postgres,
            "SELECT 1 AS found FROM pg_catalog.pg_namespace WHERE nspname = $1",
            [schema.into()],
        ))
        .await?
        .is_some();
    if exists {
        return Ok(());
    }
    let quoted = format!("\"{}\"", schema.replace('"', "\"\""));
    db.execute_unprepared(&format!("CREATE SCHEMA IF NOT EXISTS {quoted}"))
        .await
        .map(drop)
        .map_err(|err| DbErr::Migration(format!("cannot create the schema {quoted}: {err}")))
}

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261121_000001_create_organizations::Migration),
            Box::new(m20261121_000002_create_users::Migration),
            Box::new(m20261121_000003_create_tools::Migration),
            Box::new(m20261121_000004_create_actions::Migration),
            Box::new(m20261121_000005_create_flows::Migration),
            Box::new(m20261121_000006_create_execution_logs::Migration),
            Box::new(m20261202_000007_add_user_roles::Migration),
            Box::new(m20261202_000008_create_api_keys::Migration),
            Box::new(m20261202_000009_create_runs::Migration),
            Box::new(m20261203_000010_add_tool_credentials::Migration),
            Box::new(m20261203_000011_add_retention::Migration),
            Box::new(m20261203_000012_add_run_traceparent::Migration),
            Box::new(m20261203_000013_add_allowed_email_domains::Migration),
        ]
    }
}
