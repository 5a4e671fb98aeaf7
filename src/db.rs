//! Connections and migrations, with the same code path for PostgreSQL and SQLite.
//!
//! Queries go through [`Pool`] on the pooled URL; migrations through a plain connection on the
//! direct URL ([`connect_direct`]).

use std::future::Future;
use std::time::Duration;

mod postgres;

use migration::{Migrator, MigratorTrait};
use sea_orm::prelude::async_trait::async_trait;
use sea_orm::sqlx;
use sea_orm::sqlx::sqlite::{SqliteJournalMode, SqliteSynchronous};
use sea_orm::{
    ConnAcquireErr, ConnectOptions, ConnectionTrait, Database, DatabaseConnection,
    DatabaseTransaction, DbBackend, DbErr, ExecResult, QueryResult, RuntimeErr,
    SqliteTransactionMode, Statement, TransactionOptions, TransactionTrait,
};
use tokio::sync::Mutex;

use crate::config::{PoolSettings, Secret};

/// The pooled connection every query of the server goes through.
///
/// On PostgreSQL, connections are this crate's own ([`postgres`]: sqlx connections kept by
/// deadpool, without sqlx's ping after every statement); on SQLite, sea-orm's.
///
/// Each statement gets `statement_timeout`: a request never waits on the database longer, and
/// is answered 503 when it would.
///
/// With the statement cache off (`DB_STATEMENT_CACHE=false`, for a transaction-mode pooler
/// without prepared-statement support such as PgBouncer before 1.21), every statement is
/// prepared unnamed and runs inside a transaction: sqlx parses and executes a statement in two
/// exchanges, and only inside a transaction does the pooler keep both on one server connection.
/// Named statements would outlive the transaction on a server connection other clients share.
#[derive(Clone, Debug)]
pub struct Pool {
    backend: Backend,
    statement_timeout: Duration,
}

#[derive(Clone, Debug)]
enum Backend {
    Postgres {
        connections: postgres::Connections,
        /// Statements prepared and cached per connection (`DB_STATEMENT_CACHE`).
        persistent: bool,
    },
    Sqlite(DatabaseConnection),
}

impl Pool {
    /// Opens the pool on `url` (PostgreSQL or SQLite) with `settings`.
    ///
    /// SQLite enforces foreign keys on every connection (sqlx turns `PRAGMA foreign_keys` on by
    /// default), which the schema's tenant keys rely on. It runs in WAL mode, so that readers
    /// never wait for a writer, and a writer waits up to nine tenths of `statement_timeout` for
    /// its turn (`busy_timeout`) rather than failing at once with "database is locked".
    pub async fn open(url: &Secret, settings: &PoolSettings) -> Result<Self, DbErr> {
        let backend = if DbBackend::Postgres.is_prefix_of(url.expose()) {
            Backend::Postgres {
                connections: postgres::open(url, settings).await?,
                persistent: settings.statement_cache,
            }
        } else {
            Backend::Sqlite(open_sqlite(url, settings).await?)
        };
        Ok(Self {
            backend,
            statement_timeout: settings.statement_timeout,
        })
    }

    /// Starts a write transaction; its statements run on one server connection.
    ///
    /// On SQLite it is `BEGIN IMMEDIATE`: it takes the database's one write lock at the start,
    /// waiting for its turn. A deferred transaction that reads and then writes cannot wait
    /// (another writer may have changed what it read), and fails with "database is locked".
    pub async fn begin(&self) -> Result<Transaction, DbErr> {
        self.within_deadline(self.open_transaction()).await
    }

    async fn open_transaction(&self) -> Result<Transaction, DbErr> {
        match &self.backend {
            Backend::Postgres {
                connections,
                persistent,
            } => Ok(Transaction::Postgres(Mutex::new(
                postgres::Transaction::begin(connections, *persistent).await?,
            ))),
            Backend::Sqlite(connection) => {
                let options = TransactionOptions {
                    sqlite_transaction_mode: Some(SqliteTransactionMode::Immediate),
                    ..Default::default()
                };
                Ok(Transaction::Sqlite(
                    connection.begin_with_options(options).await?,
                ))
            }
        }
    }

    /// One round trip to the database.
    pub async fn ping(&self) -> Result<(), DbErr> {
        self.within_deadline(async {
            match &self.backend {
                Backend::Postgres { connections, .. } => {
                    postgres::checkout(connections).await?.ping().await
                }
                Backend::Sqlite(connection) => connection.ping().await,
            }
        })
        .await
    }

    /// The pool's connections as `/metrics` shows them.
    pub fn usage(&self) -> PoolUsage {
        match &self.backend {
            Backend::Postgres { connections, .. } => {
                let status = connections.status();
                PoolUsage {
                    max: status.max_size as u64,
                    busy: status.size.saturating_sub(status.available) as u64,
                    idle: status.available as u64,
                    waiting: status.waiting as u64,
                }
            }
            Backend::Sqlite(connection) => {
                let pool = connection.get_sqlite_connection_pool();
                let idle = pool.num_idle() as u64;
                PoolUsage {
                    max: u64::from(pool.options().get_max_connections()),
                    busy: u64::from(pool.size()).saturating_sub(idle),
                    idle,
                    // sqlx's pool does not tell how many wait.
                    waiting: 0,
                }
            }
        }
    }

    /// Closes every connection; waits for those in use to come back first.
    pub async fn close(self) -> Result<(), DbErr> {
        match self.backend {
            Backend::Postgres { connections, .. } => {
                postgres::close(&connections, self.statement_timeout).await;
                Ok(())
            }
            Backend::Sqlite(connection) => connection.close().await,
        }
    }

    /// Names of the migrations this database has not applied yet, read without DDL, so that
    /// the service's own (least-privileged) role can ask.
    pub async fn pending_migrations(&self) -> Result<Vec<String>, DbErr> {
        Ok(Migrator::get_pending_migrations_read_only(self)
            .await?
            .iter()
            .map(|migration| migration.name().to_owned())
            .collect())
    }

    /// Where each of `tables` is for this connection: the schema its `search_path` finds it
    /// in, and whether `schema` holds one of that name; with the `search_path` itself.
    /// PostgreSQL only: `None` on SQLite, which has no schemas.
    pub async fn placement_of(
        &self,
        tables: &[&str],
        schema: &str,
    ) -> Result<Option<TablePlacement>, DbErr> {
        if self.get_database_backend() != DbBackend::Postgres {
            return Ok(None);
        }
        let mut placement = TablePlacement::default();
        for table in tables {
            // The catalogs, not to_regclass('schema.table'), for the schema: a role without
            // usage on it may still read the catalogs, where to_regclass would fail.
            let row = self
                .query_one_raw(Statement::from_sql_and_values(
                    DbBackend::Postgres,
                    "SELECT (SELECT n.nspname::text FROM pg_catalog.pg_class c \
                       JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
                       WHERE c.oid = to_regclass(quote_ident($1))) AS found_in, \
                     EXISTS (SELECT 1 FROM pg_catalog.pg_class c \
                       JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
                       WHERE n.nspname = $2 AND c.relname = $1) AS in_schema, \
                     current_setting('search_path') AS search_path",
                    [(*table).into(), schema.into()],
                ))
                .await?
                .ok_or_else(|| DbErr::Custom("the catalog query returned no row".to_owned()))?;
            placement.search_path = row.try_get("", "search_path")?;
            placement.tables.push(Placed {
                table: (*table).to_owned(),
                found_in: row.try_get("", "found_in")?,
                in_schema: row.try_get("", "in_schema")?,
            });
        }
        Ok(Some(placement))
    }

    async fn within_deadline<T>(
        &self,
        work: impl Future<Output = Result<T, DbErr>>,
    ) -> Result<T, DbErr> {
        tokio::time::timeout(self.statement_timeout, work)
            .await
            .unwrap_or(Err(DbErr::ConnectionAcquire(ConnAcquireErr::Timeout)))
    }
}

/// sea-orm's connection to the SQLite file `url`.
async fn open_sqlite(url: &Secret, settings: &PoolSettings) -> Result<DatabaseConnection, DbErr> {
    let mut options = ConnectOptions::new(url.expose());
    // A little shorter than the request's deadline, so that a writer still waiting is
    // answered by SQLite's "busy" (a 503), not cut off mid-statement.
    let busy_timeout = settings.statement_timeout.mul_f64(0.9);
    options.map_sqlx_sqlite_opts(move |sqlite| {
        sqlite
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(busy_timeout)
    });
    options
        .max_connections(settings.max_connections)
        .min_connections(settings.min_connections)
        .connect_timeout(settings.acquire_timeout)
        .acquire_timeout(settings.acquire_timeout)
        .idle_timeout(settings.idle_timeout)
        .test_before_acquire(settings.test_before_acquire)
        .sqlx_logging(false);
    Database::connect(options).await
}

/// Runs `$method(statement)` on the pool: on sea-orm's SQLite connection, or on a PostgreSQL
/// connection of the pool (in a transaction of its own when statements are not cached).
macro_rules! run_statement {
    ($pool:expr, $method:ident, $statement:expr) => {
        $pool
            .within_deadline(async {
                match &$pool.backend {
                    Backend::Sqlite(connection) => connection.$method($statement).await,
                    Backend::Postgres {
                        connections,
                        persistent: true,
                    } => {
                        let mut connection = postgres::checkout(connections).await?;
                        connection.$method(&$statement, true).await
                    }
                    Backend::Postgres { connections, .. } => {
                        let mut transaction =
                            postgres::Transaction::begin(connections, false).await?;
                        let answer = transaction.connection().$method(&$statement, false).await?;
                        transaction.commit().await?;
                        Ok(answer)
                    }
                }
            })
            .await
    };
}

#[async_trait]
impl ConnectionTrait for Pool {
    fn get_database_backend(&self) -> DbBackend {
        match &self.backend {
            Backend::Postgres { .. } => DbBackend::Postgres,
            Backend::Sqlite(connection) => connection.get_database_backend(),
        }
    }

    async fn execute_raw(&self, stmt: Statement) -> Result<ExecResult, DbErr> {
        run_statement!(self, execute_raw, stmt)
    }

    async fn execute_unprepared(&self, sql: &str) -> Result<ExecResult, DbErr> {
        run_statement!(self, execute_unprepared, sql)
    }

    async fn query_one_raw(&self, stmt: Statement) -> Result<Option<QueryResult>, DbErr> {
        run_statement!(self, query_one_raw, stmt)
    }

    async fn query_all_raw(&self, stmt: Statement) -> Result<Vec<QueryResult>, DbErr> {
        run_statement!(self, query_all_raw, stmt)
    }
}

/// Connections of a [`Pool`]: the most it opens, those in use, those idle, and the callers
/// waiting for one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolUsage {
    pub max: u64,
    pub busy: u64,
    pub idle: u64,
    pub waiting: u64,
}

/// Where the tables are, from [`Pool::placement_of`].
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct TablePlacement {
    pub tables: Vec<Placed>,
    /// The connection's `search_path`, as PostgreSQL shows it.
    pub search_path: String,
}

/// One table of a [`TablePlacement`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placed {
    pub table: String,
    /// The schema where the connection's `search_path` finds it, if it finds it.
    pub found_in: Option<String>,
    /// Whether the expected schema holds a table of this name.
    pub in_schema: bool,
}

/// An open transaction from [`Pool::begin`]; rolled back when dropped without `commit`.
pub enum Transaction {
    /// sea-orm's own, on SQLite.
    Sqlite(DatabaseTransaction),
    /// On one PostgreSQL connection of the pool.
    Postgres(Mutex<postgres::Transaction>),
}

impl std::fmt::Debug for Transaction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Sqlite(_) => "Transaction::Sqlite",
            Self::Postgres(_) => "Transaction::Postgres",
        })
    }
}

impl Transaction {
    pub async fn commit(self) -> Result<(), DbErr> {
        match self {
            Self::Sqlite(transaction) => transaction.commit().await,
            Self::Postgres(transaction) => transaction.into_inner().commit().await,
        }
    }
}

/// Runs `$method(statement)` in the transaction.
macro_rules! in_transaction {
    ($transaction:expr, $method:ident, $statement:expr) => {
        match $transaction {
            Transaction::Sqlite(transaction) => transaction.$method($statement).await,
            Transaction::Postgres(transaction) => {
                let mut transaction = transaction.lock().await;
                let persistent = transaction.persistent;
                transaction
                    .connection()
                    .$method(&$statement, persistent)
                    .await
            }
        }
    };
}

#[async_trait]
impl ConnectionTrait for Transaction {
    fn get_database_backend(&self) -> DbBackend {
        match self {
            Self::Sqlite(transaction) => transaction.get_database_backend(),
            Self::Postgres(_) => DbBackend::Postgres,
        }
    }

    async fn execute_raw(&self, stmt: Statement) -> Result<ExecResult, DbErr> {
        in_transaction!(self, execute_raw, stmt)
    }

    async fn execute_unprepared(&self, sql: &str) -> Result<ExecResult, DbErr> {
        in_transaction!(self, execute_unprepared, sql)
    }

    async fn query_one_raw(&self, stmt: Statement) -> Result<Option<QueryResult>, DbErr> {
        in_transaction!(self, query_one_raw, stmt)
    }

    async fn query_all_raw(&self, stmt: Statement) -> Result<Vec<QueryResult>, DbErr> {
        in_transaction!(self, query_all_raw, stmt)
    }
}

/// Whether `err` means the database cannot be reached or did not answer in time (a 503), as
/// opposed to a fault in what was asked of it.
pub fn is_unavailable(err: &DbErr) -> bool {
    // 57014: the statement was cancelled by statement_timeout; 53300: too many connections;
    // 40P01, 40001: a deadlock or serialization failure, which a retry resolves. SQLite's 5
    // (busy, and 517 busy snapshot) and 6 (locked): still busy after busy_timeout.
    is_connection_lost(err)
        || database_code(err).is_some_and(|code| {
            ["57014", "53300", "40P01", "40001", "5", "517", "6"].contains(&code.as_str())
        })
}

/// Whether `err` means the connection itself failed or could not be had: the database is away,
/// not just this one statement (cut off by its deadline, a deadlock, a fault of its own).
pub fn is_connection_lost(err: &DbErr) -> bool {
    let runtime = match err {
        DbErr::ConnectionAcquire(_) | DbErr::Conn(_) => return true,
        DbErr::Query(runtime) | DbErr::Exec(runtime) => runtime,
        _ => return false,
    };
    let RuntimeErr::SqlxError(err) = runtime else {
        return false;
    };
    match err.as_ref() {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        // Class 08: connection exceptions; 57P01-57P03: the server is shutting down or starting.
        sqlx::Error::Database(db) => db
            .code()
            .is_some_and(|code| code.starts_with("08") || code.starts_with("57P")),
        _ => false,
    }
}

/// The SQLSTATE (or SQLite code) of a statement the database refused.
fn database_code(err: &DbErr) -> Option<String> {
    match err {
        DbErr::Query(RuntimeErr::SqlxError(err)) | DbErr::Exec(RuntimeErr::SqlxError(err)) => err
            .as_database_error()
            .and_then(|db| db.code())
            .map(|code| code.into_owned()),
        _ => None,
    }
}

/// Opens a plain connection on the direct URL, for migrations: on PostgreSQL in `schema`
/// (`DB_SCHEMA`, its `search_path`), which is created if it is missing.
pub async fn connect_direct(url: &Secret, schema: &str) -> Result<DatabaseConnection, DbErr> {
    let mut options = ConnectOptions::new(url.expose());
    options
        .max_connections(2)
        .connect_timeout(Duration::from_secs(10))
        .acquire_timeout(Duration::from_secs(10))
        .sqlx_logging(false);
    if DbBackend::Postgres.is_prefix_of(url.expose()) {
        options.set_schema_search_path(schema);
    }
    let db = Database::connect(options).await?;
    migration::create_schema(&db, schema).await?;
    Ok(db)
}

/// Names of the migrations that the database has not applied yet.
pub async fn pending_migrations(db: &DatabaseConnection) -> Result<Vec<String>, DbErr> {
    Ok(Migrator::get_pending_migrations(db)
        .await?
        .iter()
        .map(|migration| migration.name().to_owned())
        .collect())
}

/// Applies every pending migration.
pub async fn migrate_up(db: &DatabaseConnection) -> Result<(), DbErr> {
    Migrator::up(db, None).await
}

/// Rolls back the last `steps` migrations.
pub async fn migrate_down(db: &DatabaseConnection, steps: u32) -> Result<(), DbErr> {
    Migrator::down(db, Some(steps)).await
}

/// Every migration with whether it has been applied, in order.
pub async fn migration_status(db: &DatabaseConnection) -> Result<Vec<(String, bool)>, DbErr> {
    let pending = pending_migrations(db).await?;
    Ok(Migrator::migrations()
        .iter()
        .map(|migration| {
            let name = migration.name().to_owned();
            let applied = !pending.contains(&name);
            (name, applied)
        })
        .collect())
}
