//! Where the database URLs come from.
//!
//! Today: the environment, with the embedded SQLite file as the development default. This is the
//! one place a further source (AWS Secrets Manager) plugs in.

use crate::config::{AppEnv, ConfigError, Secret, Settings};

/// The embedded database `cargo run` serves on when nothing is configured.
pub const DEFAULT_DATABASE_URL: &str = "sqlite://tolstoy.db?mode=rwc";

/// The two connections the server uses: pooled for queries, direct for migrations.
#[derive(Clone, Debug)]
pub struct DatabaseUrls {
    /// `DATABASE_URL`: the pooled connection (through PgBouncer on Neon) used for queries.
    pub pooled: Secret,
    /// `DIRECT_URL`: straight to the database, used for migrations.
    pub direct: Secret,
}

impl DatabaseUrls {
    pub fn is_sqlite(&self) -> bool {
        self.pooled.expose().starts_with("sqlite:")
    }
}

/// Resolves the URLs for `settings`. In production there is no default: a missing URL stops
/// start-up.
pub fn database_urls(settings: &Settings) -> Result<DatabaseUrls, ConfigError> {
    let pooled = match (&settings.database_url, settings.app_env) {
        (Some(url), _) => url.clone(),
        (None, AppEnv::Development) => Secret::new(DEFAULT_DATABASE_URL),
        (None, AppEnv::Production) => {
            return Err(ConfigError::new(
                "DATABASE_URL",
                "is required when APP_ENV=production",
            ))
        }
    };
    let direct = settings
        .direct_url
        .clone()
        .unwrap_or_else(|| pooled.clone());
    Ok(DatabaseUrls { pooled, direct })
}
