//! The sea-orm-cli migration runner: `cargo run -p migration -- up|down|status|fresh`.
//!
//! Migrations go to `DIRECT_URL` (straight to the database, not through a pooler) when it is set,
//! else to `DATABASE_URL`, else to the embedded SQLite file that `tolstoy serve` uses by default.
//! An explicit `-u URL` (as `sea-orm-cli migrate -u` passes it) wins over all of them.
//!
//! On PostgreSQL they go into the schema `DB_SCHEMA` (default `public`), created if missing, as
//! `tolstoy migrate` does; an explicit `-s SCHEMA` (or `DATABASE_SCHEMA`) wins.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::{ConnectOptions, Database, DbBackend, DbConn, Statement};

const DEFAULT_DATABASE_URL: &str = "sqlite://tolstoy.db?mode=rwc";

fn main() {
    dotenvy::dotenv().ok();
    let non_empty = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
    let url = ["DIRECT_URL", "DATABASE_URL"]
        .iter()
        .find_map(|name| non_empty(name))
        .unwrap_or_else(|| DEFAULT_DATABASE_URL.to_owned());
    // The CLI reads its URL from DATABASE_URL and its schema from DATABASE_SCHEMA; set them
    // before any other thread exists.
    std::env::set_var("DATABASE_URL", url);
    if let (None, Some(schema)) = (non_empty("DATABASE_SCHEMA"), non_empty("DB_SCHEMA")) {
        std::env::set_var("DATABASE_SCHEMA", schema.trim());
    }
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
        .block_on(cli::run_cli_with_connection(
            migration::Migrator,
            connect_creating_schema,
        ));
}

/// Connects as the CLI would, then creates the schema its `search_path` names if it is missing.
async fn connect_creating_schema(options: ConnectOptions) -> Result<DbConn, DbErr> {
    let db = Database::connect(options).await?;
    if db.get_database_backend() == DbBackend::Postgres {
        let row = db
            .query_one_raw(Statement::from_string(
                DbBackend::Postgres,
                "SELECT current_setting('search_path') AS search_path",
            ))
            .await?
            .ok_or_else(|| DbErr::Custom("no search_path".to_owned()))?;
        let search_path: String = row.try_get("", "search_path")?;
        let schema = search_path.trim().trim_matches('"');
        if search_path.contains(',') || schema.is_empty() {
            return Err(DbErr::Custom(format!(
                "the migrations need one schema (DB_SCHEMA), not the search path {search_path}"
            )));
        }
        migration::create_schema(&db, schema).await?;
    }
    Ok(db)
}
