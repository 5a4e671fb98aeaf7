//! Fresh databases: a temporary SQLite file, or a PostgreSQL database created for one test on
//! the server named by `TEST_DATABASE_URL`.

use std::path::PathBuf;

use std::time::Duration;

use sea_orm::{ConnectionTrait, Database};
use tolstoy::config::{PoolSettings, Secret, Settings};
use tolstoy::database_roles::DatabaseRoles;
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

/// The roles of a production-shaped database (created by the suite, shared by its databases).
pub const OWNER_ROLE: &str = "tolstoy_test_owner";
pub const APP_ROLE: &str = "tolstoy_test_app";

/// The schema of a production-shaped database (`DB_SCHEMA`): not `public`, as when one database
/// holds several services, each in its own schema.
pub const PRODUCTION_SCHEMA: &str = "tolstoy_service";

/// A production-shaped database also holds, in `public`, tables of the same names as Tolstoy's
/// (the administrator's, with no grants to the suite's roles), and in its `organizations` this
/// one row: a query that strayed out of `PRODUCTION_SCHEMA` would fail or find it.
pub const DECOY_ORGANIZATION_ID: &str = "00000000-0000-7000-8000-00000000dec0";

/// How a PostgreSQL test database is reached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    /// One superuser URL for queries and migrations.
    Direct,
    /// Neon's shape: queries as the application role through PgBouncer (transaction mode,
    /// `TEST_POOLER_URL`), migrations as the owner role straight to the server, all in the
    /// schema `PRODUCTION_SCHEMA`, beside same-named tables in `public`.
    Production,
}

pub struct TestDb {
    pub backend: Backend,
    /// The direct URL: migrations, and checks of what was stored.
    pub url: String,
    /// The URL the server queries on: `url`, or the pooler's as the application role.
    pub pooled_url: String,
    pub shape: Shape,
    /// Where the tables go (`DB_SCHEMA`).
    pub schema: &'static str,
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

/// The shape every PostgreSQL test takes: `TEST_POSTGRES_SHAPE=production` runs the suite the
/// way Neon is deployed; anything else the plain way.
fn shape_from_env() -> Shape {
    match std::env::var("TEST_POSTGRES_SHAPE").as_deref() {
        Ok("production") => Shape::Production,
        _ => Shape::Direct,
    }
}

/// PgBouncer in front of the `TEST_DATABASE_URL` server (any database name).
pub fn pooler_url() -> String {
    std::env::var("TEST_POOLER_URL").unwrap_or_else(|_| {
        panic!(
            "TEST_POOLER_URL is not set, so the PgBouncer cases cannot run. Run `scripts/test.sh` \
             (it starts PgBouncer in transaction mode), or point TEST_POOLER_URL at a PgBouncer \
             in front of the TEST_DATABASE_URL server, with `postgres` as an admin user."
        )
    })
}

/// `url` with its user replaced by `user` (and no password: the test servers trust loopback).
pub fn with_user(url: &str, user: &str) -> String {
    let mut url = url::Url::parse(url).expect("a valid database URL");
    url.set_username(user).expect("a URL with a host");
    url.set_password(None).expect("a URL with a host");
    url.to_string()
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

/// Runs the SQL of `tolstoy roles` as the administrator on the new database `name`.
async fn grant_roles(server_admin_url: &str, database_url: &str, name: &str) {
    let sql = DatabaseRoles {
        owner: OWNER_ROLE,
        app: APP_ROLE,
        database: name,
        schema: PRODUCTION_SCHEMA,
        statement_timeout: Duration::from_secs(15),
    }
    .setup_sql()
    .expect("valid role names");
    // Roles belong to the whole server, and parallel tests would change them at once ("tuple
    // concurrently updated"): take turns on a lock in the administrator's database (advisory
    // locks are per database), on one session.
    let mut options = sea_orm::ConnectOptions::new(server_admin_url);
    options.max_connections(1).sqlx_logging(false);
    let lock = Database::connect(options)
        .await
        .expect("connect as the administrator");
    lock.execute_unprepared("SELECT pg_advisory_lock(7470)")
        .await
        .expect("lock");
    let admin = Database::connect(database_url)
        .await
        .expect("connect to the new test database as the administrator");
    let outcome = admin.execute_unprepared(&sql).await;
    admin.close().await.ok();
    lock.execute_unprepared("SELECT pg_advisory_unlock(7470)")
        .await
        .ok();
    lock.close().await.ok();
    outcome.expect("the roles SQL runs");
}

/// Migrates `public` of the new database `url` as the administrator, and adds the decoy row.
async fn plant_decoy_tables(url: &str) {
    let admin = tolstoy::db::connect_direct(&Secret::new(url), "public")
        .await
        .expect("connect to the new test database as the administrator");
    tolstoy::db::migrate_up(&admin)
        .await
        .expect("same-named tables in public");
    admin
        .execute_unprepared(&format!(
            "INSERT INTO public.organizations (id, name, created_at, updated_at) \
             VALUES ('{DECOY_ORGANIZATION_ID}', 'Decoy', now(), now())"
        ))
        .await
        .expect("the decoy row");
    admin.close().await.ok();
}

impl TestDb {
    /// A fresh, empty database in the suite's shape; `None` only when PostgreSQL is skipped on
    /// purpose.
    pub async fn create(backend: Backend) -> Option<Self> {
        Self::create_shaped(backend, shape_from_env()).await
    }

    /// A fresh, empty PostgreSQL database in the production shape, whatever the suite's.
    pub async fn create_production() -> Option<Self> {
        Self::create_shaped(Backend::Postgres, Shape::Production).await
    }

    async fn create_shaped(backend: Backend, shape: Shape) -> Option<Self> {
        let unique = Uuid::now_v7().simple().to_string();
        match backend {
            Backend::Sqlite => {
                let path = std::env::temp_dir().join(format!("{DATABASE_PREFIX}{unique}.db"));
                let url = format!("sqlite://{}?mode=rwc", path.display());
                Some(Self {
                    backend,
                    pooled_url: url.clone(),
                    url,
                    shape: Shape::Direct,
                    schema: "public",
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
                let direct = with_database(&admin_url, &name);
                let (url, pooled_url) = match shape {
                    Shape::Direct => (direct.clone(), direct),
                    Shape::Production => {
                        grant_roles(&admin_url, &direct, &name).await;
                        plant_decoy_tables(&direct).await;
                        (
                            with_user(&direct, OWNER_ROLE),
                            with_user(&with_database(&pooler_url(), &name), APP_ROLE),
                        )
                    }
                };
                Some(Self {
                    backend,
                    url,
                    pooled_url,
                    shape,
                    schema: match shape {
                        Shape::Direct => "public",
                        Shape::Production => PRODUCTION_SCHEMA,
                    },
                    cleanup: Cleanup::Database { admin_url, name },
                })
            }
        }
    }

    /// Queries on the pooled URL, migrations on the direct one.
    pub fn urls(&self) -> DatabaseUrls {
        DatabaseUrls {
            pooled: Secret::new(self.pooled_url.clone()),
            direct: Secret::new(self.url.clone()),
            admin_token: None,
            credentials_keys: None,
        }
    }

    /// The server's defaults; behind Debian's PgBouncer 1.18 the statement cache is off, as
    /// the README says for a pooler without prepared-statement support.
    pub fn pool_settings(&self) -> PoolSettings {
        let mut pool = Settings::from_lookup(|_| None)
            .expect("default settings")
            .pool;
        pool.statement_cache = self.shape == Shape::Direct;
        pool.acquire_timeout = Duration::from_secs(5);
        pool.schema = self.schema.to_owned();
        pool
    }

    /// The database as the server's administrator (a superuser) reaches it directly; `None` on
    /// SQLite.
    pub fn admin_url(&self) -> Option<String> {
        match &self.cleanup {
            Cleanup::Database { admin_url, name } => Some(with_database(admin_url, name)),
            Cleanup::File(_) => None,
        }
    }

    /// The database's name on the server.
    pub fn database_name(&self) -> &str {
        match &self.cleanup {
            Cleanup::Database { name, .. } => name,
            Cleanup::File(path) => path.to_str().unwrap_or_default(),
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
