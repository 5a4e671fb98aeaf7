//! The sea-orm-cli migration runner: `cargo run -p migration -- up|down|status|fresh`.
//!
//! Migrations go to `DIRECT_URL` (straight to the database, not through a pooler) when it is set,
//! else to `DATABASE_URL`, else to the embedded SQLite file that `tolstoy serve` uses by default.
//! An explicit `-u URL` (as `sea-orm-cli migrate -u` passes it) wins over all of them.

use sea_orm_migration::prelude::*;

const DEFAULT_DATABASE_URL: &str = "sqlite://tolstoy.db?mode=rwc";

fn main() {
    dotenvy::dotenv().ok();
    let url = ["DIRECT_URL", "DATABASE_URL"]
        .iter()
        .find_map(|name| std::env::var(name).ok().filter(|v| !v.trim().is_empty()))
        .unwrap_or_else(|| DEFAULT_DATABASE_URL.to_owned());
    // The CLI reads its URL from DATABASE_URL; set it before any other thread exists.
    std::env::set_var("DATABASE_URL", url);
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
        .block_on(cli::run_cli(migration::Migrator));
}
