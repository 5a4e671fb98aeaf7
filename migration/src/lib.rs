//! Tolstoy's schema migrations, one concern per file, each with a working `down()`.
//!
//! The same migrations run on PostgreSQL and SQLite. They do not depend on the `entity` crate:
//! a migration is a frozen snapshot of the schema at the time it was written.

pub use sea_orm_migration::prelude::*;

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
