//! The PostgreSQL side of [`super::Pool`]: sqlx connections, kept by deadpool, running the
//! statements sea-orm builds.
//!
//! Why not sqlx's own pool, which sea-orm would open: it pings every connection it takes back
//! (`PoolConnection::drop` → `return_to_pool` → `ping`), one more round trip to the database
//! after every statement, which here cost about a third of `GET /tools/{id}`'s throughput
//! (docs/benchmarks.md). A connection goes back to this pool as it is. One left in an unknown
//! state — a statement cut off by its deadline or failed, a transaction dropped without commit —
//! is marked unsettled, and is pinged (which drains what was left, and finishes the queued
//! rollback) before anyone gets it again; one whose ping fails is replaced.

use std::future::Future;
use std::time::Duration;

use deadpool::managed::{self, Metrics, PoolError, RecycleError, RecycleResult, Timeouts};
use deadpool::Runtime;
use sea_orm::sea_query::Values;
use sea_orm::sqlx::postgres::{PgConnectOptions, PgConnection, Postgres};
use sea_orm::sqlx::{self, ConnectOptions, Connection as _};
use sea_orm::{ConnAcquireErr, DbErr, ExecResult, QueryResult, RuntimeErr, Statement};
use sea_query_sqlx::SqlxValues;

use crate::config::{PoolSettings, Secret};

/// A connection is closed once it is this old, as sqlx's pool did, so that a server restarted
/// or failed over behind a stable address is picked up again.
const MAX_LIFETIME: Duration = Duration::from_secs(30 * 60);

/// The pool of connections.
pub type Connections = managed::Pool<Manager>;

/// One connection taken from the pool; it goes back when dropped.
pub type Checkout = managed::Object<Manager>;

/// A connection, whether it is known to be between statements with nothing pending, and
/// whether a transaction is open on it.
#[derive(Debug)]
pub struct Connection {
    raw: PgConnection,
    settled: bool,
    in_transaction: bool,
}

/// Opens connections and checks them on their way out of the pool.
#[derive(Debug)]
pub struct Manager {
    options: PgConnectOptions,
    test_before_acquire: bool,
}

impl managed::Manager for Manager {
    type Type = Connection;
    type Error = sqlx::Error;

    async fn create(&self) -> Result<Connection, sqlx::Error> {
        Ok(Connection {
            raw: self.options.connect().await?,
            settled: true,
            in_transaction: false,
        })
    }

    async fn recycle(
        &self,
        connection: &mut Connection,
        metrics: &Metrics,
    ) -> RecycleResult<sqlx::Error> {
        if metrics.age() > MAX_LIFETIME {
            return Err(RecycleError::message("past its lifetime"));
        }
        if connection.in_transaction {
            connection.rollback().await?;
        }
        if !connection.settled || self.test_before_acquire {
            settle(&mut connection.settled, connection.raw.ping()).await?;
        }
        Ok(())
    }
}

/// Opens the pool on `url`; `settings.min_connections` are opened at once.
pub async fn open(url: &Secret, settings: &PoolSettings) -> Result<Connections, DbErr> {
    let options = url
        .expose()
        .parse::<PgConnectOptions>()
        .map_err(connection_err)?
        .disable_statement_logging();
    let manager = Manager {
        options,
        test_before_acquire: settings.test_before_acquire,
    };
    let connections = managed::Pool::builder(manager)
        .max_size(settings.max_connections.max(1) as usize)
        .timeouts(Timeouts {
            wait: Some(settings.acquire_timeout),
            create: Some(settings.acquire_timeout),
            recycle: Some(settings.acquire_timeout),
        })
        .runtime(Runtime::Tokio1)
        .build()
        .map_err(|err| DbErr::Custom(format!("cannot build the connection pool: {err}")))?;
    // Opened one by one and all held until the last is open, so that they are distinct.
    let mut opened = Vec::new();
    for _ in 0..settings.min_connections.min(settings.max_connections) {
        opened.push(connections.get().await.map_err(pool_err)?);
    }
    drop(opened);
    reap_idle(&connections, settings);
    Ok(connections)
}

/// Closes connections idle for `idle_timeout` (beyond `min_connections`), checking every
/// tenth of it, for as long as the pool lives.
fn reap_idle(connections: &Connections, settings: &PoolSettings) {
    let weak = connections.weak();
    let (idle_timeout, keep) = (settings.idle_timeout, settings.min_connections as usize);
    let every = (idle_timeout / 10).max(Duration::from_secs(1));
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(every).await;
            let Some(connections) = weak.upgrade() else {
                return;
            };
            let mut kept = 0;
            let idle = connections.retain(|_, metrics| {
                kept += 1;
                kept <= keep || metrics.last_used() < idle_timeout
            });
            drop(connections);
            close_all(idle.removed).await;
        }
    });
}

/// Stops handing out connections and closes them, waiting (up to `patience`) for those in use.
pub async fn close(connections: &Connections, patience: Duration) {
    let idle = connections.retain(|_, _| false);
    connections.close();
    close_all(idle.removed).await;
    let started = tokio::time::Instant::now();
    while connections.status().size > 0 && started.elapsed() < patience {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn close_all(removed: Vec<Connection>) {
    for connection in removed {
        // A goodbye, so that the server does not wait for a client that has left.
        let _ = connection.raw.close().await;
    }
}

/// A connection from the pool.
pub async fn checkout(connections: &Connections) -> Result<Checkout, DbErr> {
    connections.get().await.map_err(pool_err)
}

/// Runs `work` on a connection, which stays unsettled unless `work` completes: one cut off or
/// failed midway is pinged before it is used again.
async fn settle<T>(
    settled: &mut bool,
    work: impl Future<Output = Result<T, sqlx::Error>>,
) -> Result<T, sqlx::Error> {
    *settled = false;
    let done = work.await?;
    *settled = true;
    Ok(done)
}

impl Connection {
    /// One round trip.
    pub async fn ping(&mut self) -> Result<(), DbErr> {
        settle(&mut self.settled, self.raw.ping())
            .await
            .map_err(connection_err)
    }

    /// Runs `statement`, prepared and cached when `persistent`, else prepared unnamed.
    pub async fn execute_raw(
        &mut self,
        statement: &Statement,
        persistent: bool,
    ) -> Result<ExecResult, DbErr> {
        let done = query(statement, persistent).execute(&mut self.raw);
        Ok(settle(&mut self.settled, done)
            .await
            .map_err(exec_err)?
            .into())
    }

    /// Runs `sql` as it is, without parameters (so nothing is prepared, whatever `_persistent`).
    pub async fn execute_unprepared(
        &mut self,
        sql: &str,
        _persistent: bool,
    ) -> Result<ExecResult, DbErr> {
        let done = sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned())).execute(&mut self.raw);
        Ok(settle(&mut self.settled, done)
            .await
            .map_err(exec_err)?
            .into())
    }

    /// The first row of `statement`, if any.
    pub async fn query_one_raw(
        &mut self,
        statement: &Statement,
        persistent: bool,
    ) -> Result<Option<QueryResult>, DbErr> {
        let row = query(statement, persistent).fetch_optional(&mut self.raw);
        let row = settle(&mut self.settled, row).await.map_err(query_err)?;
        Ok(row.map(Into::into))
    }

    /// Every row of `statement`.
    pub async fn query_all_raw(
        &mut self,
        statement: &Statement,
        persistent: bool,
    ) -> Result<Vec<QueryResult>, DbErr> {
        let rows = query(statement, persistent).fetch_all(&mut self.raw);
        let rows = settle(&mut self.settled, rows).await.map_err(query_err)?;
        Ok(rows.into_iter().map(Into::into).collect())
    }

    /// `BEGIN`.
    async fn begin(&mut self) -> Result<(), DbErr> {
        self.execute_unprepared("BEGIN", false).await?;
        self.in_transaction = true;
        Ok(())
    }

    /// `COMMIT`.
    async fn commit(&mut self) -> Result<(), DbErr> {
        self.execute_unprepared("COMMIT", false).await?;
        self.in_transaction = false;
        Ok(())
    }

    /// `ROLLBACK`.
    async fn rollback(&mut self) -> Result<(), sqlx::Error> {
        let done = sqlx::raw_sql(sqlx::AssertSqlSafe("ROLLBACK")).execute(&mut self.raw);
        settle(&mut self.settled, done).await?;
        self.in_transaction = false;
        Ok(())
    }
}

/// A transaction on one connection; rolled back at once when dropped without `commit`.
#[derive(Debug)]
pub struct Transaction {
    checkout: Option<Checkout>,
    /// Whether its statements are prepared and cached (else unnamed).
    pub persistent: bool,
}

impl Transaction {
    /// Takes a connection and begins.
    pub async fn begin(connections: &Connections, persistent: bool) -> Result<Self, DbErr> {
        let mut checkout = checkout(connections).await?;
        checkout.begin().await?;
        Ok(Self {
            checkout: Some(checkout),
            persistent,
        })
    }

    /// The transaction's connection.
    pub fn connection(&mut self) -> &mut Connection {
        self.checkout
            .as_mut()
            .expect("a transaction has its connection until it is dropped")
    }

    /// Commits; the connection goes back to the pool.
    pub async fn commit(mut self) -> Result<(), DbErr> {
        self.connection().commit().await
    }
}

impl Drop for Transaction {
    fn drop(&mut self) {
        let Some(mut checkout) = self.checkout.take() else {
            return;
        };
        if !checkout.in_transaction {
            return;
        }
        // Rolled back now, so that its locks go at once, not whenever the connection is next
        // taken (which would roll it back too, see `Manager::recycle`).
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let _ = checkout.rollback().await;
            });
        }
    }
}

fn query(statement: &Statement, persistent: bool) -> sqlx::query::Query<'_, Postgres, SqlxValues> {
    let values = statement.values.clone().unwrap_or(Values(Vec::new()));
    sqlx::query_with(
        sqlx::AssertSqlSafe(statement.sql.as_str()),
        SqlxValues(values),
    )
    .persistent(persistent)
}

fn pool_err(err: PoolError<sqlx::Error>) -> DbErr {
    match err {
        PoolError::Timeout(_) => DbErr::ConnectionAcquire(ConnAcquireErr::Timeout),
        PoolError::Closed => DbErr::ConnectionAcquire(ConnAcquireErr::ConnectionClosed),
        PoolError::Backend(err) => connection_err(err),
        other => DbErr::Conn(RuntimeErr::Internal(other.to_string())),
    }
}

fn connection_err(err: sqlx::Error) -> DbErr {
    DbErr::Conn(RuntimeErr::SqlxError(err.into()))
}

fn query_err(err: sqlx::Error) -> DbErr {
    DbErr::Query(RuntimeErr::SqlxError(err.into()))
}

fn exec_err(err: sqlx::Error) -> DbErr {
    DbErr::Exec(RuntimeErr::SqlxError(err.into()))
}
