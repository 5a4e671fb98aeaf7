//! Building the application: database, routes, middleware, listener.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use crate::db::Pool;
use poem::endpoint::make_sync;
use poem::listener::{Acceptor, Listener, TcpAcceptor, TcpListener};
use poem::middleware::CatchPanic;
use poem::web::Html;
use poem::{get, Endpoint, EndpointExt, IntoResponse, Response, Route, Server};

use crate::config::{
    AppEnv, AuthMode, ConfigError, PoolSettings, RetentionSettings, Settings, DEFAULT_DB_SCHEMA,
};
use crate::credentials::{development_key_path, Keyring};
use crate::error::problem_response;
use crate::identity::IdentityConfig;
use crate::middleware::{panic_response, RequestId, Routes};
use crate::runs::worker::Executor;
use crate::runs::Signals;
use crate::secrets::{DatabaseUrls, SecretError, UrlsError};
pub use crate::state::AppState;
use crate::telemetry::metrics::Metrics;
use crate::{api, db, retention};
use sea_orm::EntityName;
use tokio::sync::watch;

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Secret(#[from] SecretError),
    #[error(transparent)]
    DatabaseRoles(#[from] crate::database_roles::NameError),
    #[error("cannot open the database: {0}")]
    Database(#[from] sea_orm::DbErr),
    #[error(
        "the database is behind: {} pending migration(s) ({}). Apply them with `tolstoy migrate up` \
         (on DIRECT_URL), or start with `tolstoy serve --migrate` or AUTO_MIGRATE=true",
        .0.len(), .0.join(", ")
    )]
    Behind(Vec<String>),
    /// The tables are not where `DB_SCHEMA` says; the message says where they are and why.
    #[error("{0}")]
    Schema(String),
    #[error("cannot listen: {0}")]
    Listen(#[from] io::Error),
    /// A command's input was refused (e.g. `tolstoy signup` with a bad email).
    #[error("{0}")]
    Invalid(String),
}

impl From<UrlsError> for StartupError {
    fn from(err: UrlsError) -> Self {
        match err {
            UrlsError::Config(err) => Self::Config(err),
            UrlsError::Secret(err) => Self::Secret(err),
        }
    }
}

/// The keys that seal tool credentials: the AWS secret's, else the environment's; in
/// development without either, the key file beside the SQLite database (made at first start);
/// in production without either, none: storing credentials is refused, all else works.
pub fn credentials_keyring(
    settings: &Settings,
    urls: &DatabaseUrls,
) -> Result<Arc<Keyring>, StartupError> {
    let keys = urls
        .credentials_keys
        .as_ref()
        .or(settings.credentials_keys.as_ref());
    let keyring = match (keys, settings.app_env) {
        (Some(keys), _) => keys.keyring()?,
        (None, AppEnv::Development) => {
            Keyring::development(&development_key_path(urls.pooled.expose()))?
        }
        (None, AppEnv::Production) => {
            tracing::warn!(
                "CREDENTIALS_KEY is not set: tools cannot store credentials, and stored ones \
                 do not open"
            );
            Keyring::empty()
        }
    };
    Ok(Arc::new(keyring))
}

/// Opens the pooled connection, first bringing the schema up to date on the direct connection
/// when `migrate` is set; otherwise refuses a database that is behind, and on PostgreSQL one
/// whose tables this connection does not find in `DB_SCHEMA`.
pub async fn open_database(
    urls: &DatabaseUrls,
    pool: &PoolSettings,
    migrate: bool,
) -> Result<Pool, StartupError> {
    if urls.is_sqlite() && pool.schema != DEFAULT_DB_SCHEMA {
        tracing::warn!(
            schema = %pool.schema,
            "DB_SCHEMA is ignored on SQLite, which has no schemas"
        );
    }
    if migrate {
        let direct = db::connect_direct(&urls.direct, &pool.schema).await?;
        db::migrate_up(&direct).await?;
        direct.close().await?;
    }
    let pooled = Pool::open(&urls.pooled, pool).await?;
    check_schema(&pooled, &pool.schema).await?;
    let pending = pooled.pending_migrations().await?;
    if !pending.is_empty() {
        return Err(StartupError::Behind(pending));
    }
    Ok(pooled)
}

/// Refuses a PostgreSQL connection that finds the tables outside `schema`, or does not find
/// them although `schema` holds them; one that finds none anywhere is a database that has not
/// been migrated, which the pending migrations tell.
async fn check_schema(pool: &Pool, schema: &str) -> Result<(), StartupError> {
    // The migrations' ledger and the first table they make: every migrated database has both.
    let tables = [
        "seaql_migrations",
        entity::organization::Entity.table_name(),
    ];
    let Some(placement) = pool.placement_of(&tables, schema).await? else {
        return Ok(());
    };
    let search_path = &placement.search_path;
    let fix = format!(
        "make \"{schema}\" the search_path of the server's role in this database (`tolstoy roles \
         --schema {schema}` prints the SQL: ALTER ROLE … IN DATABASE … SET search_path), or set \
         DB_SCHEMA to the schema that holds the tables"
    );
    if let Some(elsewhere) = placement.tables.iter().find(|placed| {
        placed
            .found_in
            .as_deref()
            .is_some_and(|found| found != schema)
    }) {
        return Err(StartupError::Schema(format!(
            "DB_SCHEMA is \"{schema}\", but this connection finds the table {} in schema \"{}\" \
             (search_path: {search_path}): {fix}",
            elsewhere.table,
            elsewhere.found_in.as_deref().unwrap_or_default(),
        )));
    }
    if let Some(unseen) = placement
        .tables
        .iter()
        .find(|placed| placed.found_in.is_none() && placed.in_schema)
    {
        return Err(StartupError::Schema(format!(
            "the table {} is in schema \"{schema}\" (DB_SCHEMA), but this connection does not see \
             it (search_path: {search_path}): {fix}",
            unseen.table,
        )));
    }
    Ok(())
}

/// Wraps an endpoint in the middleware every request goes through: problem+json for every
/// error, panic capture, request id and trace context (outermost, so all of the above carry it).
pub fn with_middleware(endpoint: impl Endpoint + 'static) -> impl Endpoint<Output = Response> {
    endpoint
        .catch_all_error(problem_response)
        .with(CatchPanic::new().with_handler(panic_response))
        .with(RequestId)
}

/// The whole HTTP surface: the API, `/openapi.json`, Swagger UI at `/docs` and `/metrics`.
pub fn build_route(state: AppState) -> impl Endpoint<Output = Response> {
    let api = api::service();
    let value = match state.identity.mode {
        AuthMode::Headers => api::openapi_value(),
        AuthMode::Keys => api::keys_mode_openapi_value(),
    };
    let routes = Routes::from_document(
        &value,
        &[
            ("/openapi.json", "GET"),
            ("/docs", "GET"),
            ("/metrics", "GET"),
        ],
        state.metrics.clone(),
    );
    let document = serde_json::to_string_pretty(&value).unwrap_or_default();
    // Swagger UI embeds poem-openapi's raw document; show it the one we serve.
    let docs_page = api.swagger_ui_html().replace(&api.spec(), &document);
    let route = Route::new()
        .at(
            "/openapi.json",
            get(make_sync(move |_| {
                document
                    .clone()
                    .with_content_type("application/json; charset=utf-8")
            })),
        )
        .at("/docs", get(make_sync(move |_| Html(docs_page.clone()))))
        .at("/metrics", get(api::health::serve_metrics))
        .nest("/", api)
        .with(state.identity.auth_failures.clone())
        .data(state);
    with_middleware(route).with(routes)
}

/// A bound, ready-to-run server, with its workers.
pub struct Application {
    acceptor: TcpAcceptor,
    port: u16,
    shutdown_timeout: Duration,
    retention: RetentionSettings,
    state: AppState,
    /// `None` when `WORKERS=0`: an API-only process.
    executor: Option<Arc<Executor>>,
}

impl Application {
    /// Binds `HOST:PORT` (port 0 picks a free one) for an already opened database.
    pub async fn build(
        settings: &Settings,
        db: Pool,
        keyring: Arc<Keyring>,
    ) -> Result<Self, StartupError> {
        let acceptor = TcpListener::bind((settings.host, settings.port))
            .into_acceptor()
            .await?;
        let port = acceptor
            .local_addr()
            .first()
            .and_then(|addr| addr.as_socket_addr().map(|a| a.port()))
            .unwrap_or(settings.port);
        let signals = Signals::default();
        let metrics = Metrics::new();
        let executor = executor(settings, &db, &signals, &keyring, &metrics)?;
        Ok(Self {
            acceptor,
            port,
            shutdown_timeout: settings.shutdown_timeout,
            retention: settings.retention.clone(),
            state: AppState {
                db,
                max_body_bytes: settings.max_body_bytes,
                identity: Arc::new(IdentityConfig::from_settings(&settings.identity)),
                runs: signals,
                keyring,
                metrics,
            },
            executor,
        })
    }

    /// The port actually bound.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Serves until SIGINT or SIGTERM; then stops accepting, lets in-flight requests finish
    /// (up to `SHUTDOWN_TIMEOUT_SECS`) and closes the pool.
    pub async fn run_until_stopped(self) -> io::Result<()> {
        let db = self.state.db.clone();
        let (stop, stopped) = watch::channel(false);
        let pruner = tokio::spawn(retention::run_in_background(
            db.clone(),
            self.retention,
            self.state.metrics.clone(),
            stopped.clone(),
        ));
        let workers = self
            .executor
            .map(|executor| tokio::spawn(executor.run(stopped, self.shutdown_timeout)));
        tracing::info!(port = self.port, "listening");
        let served = Server::new_with_acceptor(self.acceptor)
            .run_with_graceful_shutdown(
                build_route(self.state),
                async move {
                    shutdown_signal().await;
                    stop.send_replace(true);
                },
                Some(self.shutdown_timeout),
            )
            .await;
        if let Some(workers) = workers {
            if let Err(err) = workers.await {
                tracing::warn!(error = %err, "the workers ended abnormally");
            }
        }
        if let Err(err) = pruner.await {
            tracing::warn!(error = %err, "the retention task ended abnormally");
        }
        if let Err(err) = db.close().await {
            tracing::warn!(error = %err, "closing the database pool failed");
        }
        tracing::info!("stopped");
        served
    }
}

/// The executor of a process with `WORKERS` > 0.
pub fn executor(
    settings: &Settings,
    db: &Pool,
    signals: &Signals,
    keyring: &Arc<Keyring>,
    metrics: &Metrics,
) -> Result<Option<Arc<Executor>>, StartupError> {
    if settings.runs.workers == 0 {
        return Ok(None);
    }
    Executor::new(
        db.clone(),
        &settings.runs,
        signals.clone(),
        keyring.clone(),
        metrics.clone(),
    )
    .map(Some)
    .map_err(StartupError::Invalid)
}

/// `tolstoy worker`: works runs with `WORKERS` slots (at least one) and no HTTP, until SIGINT
/// or SIGTERM, then shuts down as the executor does.
pub async fn run_worker(
    settings: &Settings,
    db: Pool,
    keyring: Arc<Keyring>,
) -> Result<(), StartupError> {
    let mut settings = settings.clone();
    settings.runs.workers = settings.runs.workers.max(1);
    // A worker serves no /metrics: its counts stay in the process.
    let metrics = Metrics::new();
    let executor = executor(&settings, &db, &Signals::default(), &keyring, &metrics)?
        .ok_or_else(|| StartupError::Invalid("no worker slots".into()))?;
    let (stop, stopped) = watch::channel(false);
    let pruner = tokio::spawn(retention::run_in_background(
        db.clone(),
        settings.retention.clone(),
        metrics,
        stopped.clone(),
    ));
    let workers = tokio::spawn(executor.run(stopped, settings.shutdown_timeout));
    shutdown_signal().await;
    stop.send_replace(true);
    if let Err(err) = workers.await {
        tracing::warn!(error = %err, "the workers ended abnormally");
    }
    if let Err(err) = pruner.await {
        tracing::warn!(error = %err, "the retention task ended abnormally");
    }
    db.close().await?;
    Ok(())
}

async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(signal) => signal,
                Err(_) => return interrupt.await.unwrap_or(()),
            };
        tokio::select! {
            _ = interrupt => {},
            _ = terminate.recv() => {},
        }
    }
    #[cfg(not(unix))]
    interrupt.await.unwrap_or(());
    tracing::info!("shutdown signal received; finishing in-flight requests");
}
