//! Fresh databases: a temporary SQLite file, or a PostgreSQL database created for one test on
//! the server named by `TEST_DATABASE_URL`.

use std::path::PathBuf;

use sea_orm::{ConnectionTrait, Database};
use tolstoy::config::Secret;
use tolstoy::secrets::DatabaseUrls;
use uuid::Uuid;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Databases made by this suite carry this prefix, so that they never collide with others on a
/// shared server and are easy to find if a crashed run leaves one behind.
const DATABASE_PREFIX: &str = "tolstoy_test_";

pub struct TestDb {
    pub backend: Backend,
    pub url: String,
    cleanup: Cleanup,
}

enum Cleanup {
    File(PathBuf),
    Database { admin_url: String, name: String },
}

fn postgres_admin_url() -> Option<String> {
    if let Ok(url) = std::env::var("TEST_DATABASE_URL") {
        return Some(url);
    }
    if std::env::var("SKIP_POSTGRES").as_deref() == Ok("1") {
        eprintln!("SKIP_POSTGRES=1: PostgreSQL case skipped on purpose");
        return None;
    }
    panic!(
        "TEST_DATABASE_URL is not set, so the PostgreSQL cases cannot run. Run `scripts/test.sh` \
         (it starts a throwaway PostgreSQL), or set TEST_DATABASE_URL to a server where this \
         user may create databases (e.g. postgres://postgres@127.0.0.1:5432/postgres), or set \
         SKIP_POSTGRES=1 to skip PostgreSQL on purpose."
    );
}

/// `url` with its database name replaced by `name`.
pub fn with_database(url: &str, name: &str) -> String {
    let (base, query) = url
        .split_once('?')
        .map_or((url, None), |(b, q)| (b, Some(q)));
    let server = base.rsplit_once('/').map_or(base, |(server, _)| server);
    match query {
        Some(query) => format!("{server}/{name}?{query}"),
        None => format!("{server}/{name}"),
    }
}

impl TestDb {
    /// A fresh, empty database; `None` only when PostgreSQL is skipped on purpose.
    pub async fn create(backend: Backend) -> Option<Self> {
        let unique = Uuid::now_v7().simple().to_string();
        match backend {
            Backend::Sqlite => {
                let path = std::env::temp_dir().join(format!("{DATABASE_PREFIX}{unique}.db"));
                Some(Self {
                    backend,
                    url: format!("sqlite://{}?mode=rwc", path.display()),
                    cleanup: Cleanup::File(path),
                })
            }
            Backend::Postgres => {
                let admin_url = postgres_admin_url()?;
                let name = format!("{DATABASE_PREFIX}{unique}");
                let admin = Database::connect(&admin_url).await.unwrap_or_else(|err| {
                    panic!("cannot reach the PostgreSQL server named by TEST_DATABASE_URL: {err}")
                });
                admin
                    .execute_unprepared(&format!("CREATE DATABASE \"{name}\""))
                    .await
                    .expect("create test database");
                admin.close().await.ok();
                Some(Self {
                    backend,
                    url: with_database(&admin_url, &name),
                    cleanup: Cleanup::Database { admin_url, name },
                })
            }
        }
    }

    /// The same URL for queries and migrations, as in a plain (pooler-less) deployment.
    pub fn urls(&self) -> DatabaseUrls {
        DatabaseUrls {
            pooled: Secret::new(self.url.clone()),
            direct: Secret::new(self.url.clone()),
        }
    }

    pub async fn destroy(self) {
        match self.cleanup {
            Cleanup::File(path) => {
                for suffix in ["", "-wal", "-shm"] {
                    let mut file = path.clone().into_os_string();
                    file.push(suffix);
                    let _ = std::fs::remove_file(file);
                }
            }
            Cleanup::Database { admin_url, name } => {
                if let Ok(admin) = Database::connect(&admin_url).await {
                    let _ = admin
                        .execute_unprepared(&format!(
                            "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
                        ))
                        .await;
                    admin.close().await.ok();
                }
            }
        }
    }
}
