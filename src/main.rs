//! The `tolstoy` binary: `serve` (the default), `worker`, `migrate`, `openapi`, `roles`,
//! `signup`, `prune`, `rotate-credentials-key`.

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use tolstoy::api::body::read_body;
use tolstoy::api::signup::SignupIn;
use tolstoy::config::Settings;
use tolstoy::database_roles::DatabaseRoles;
use tolstoy::retention::{self, Mode, Pass};
use tolstoy::secrets::database_urls;
use tolstoy::service::signup;
use tolstoy::startup::{credentials_keyring, open_database, run_worker, Application, StartupError};
use tolstoy::{api, db, telemetry};

#[derive(Parser)]
#[command(
    name = "tolstoy",
    version,
    about = "Multi-tenant workflow-automation API server"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the API (the default). Applies pending migrations by itself on SQLite; on
    /// PostgreSQL only with --migrate or AUTO_MIGRATE=true, and otherwise refuses a database
    /// that is behind.
    Serve {
        /// Apply pending migrations (on DIRECT_URL) before serving.
        #[arg(long)]
        migrate: bool,
    },
    /// Work queued runs with WORKERS slots (at least one), without serving HTTP. Any number of
    /// workers (and servers) share one PostgreSQL queue.
    Worker,
    /// Apply, roll back or list migrations, on DIRECT_URL.
    Migrate {
        #[command(subcommand)]
        action: Option<MigrateAction>,
    },
    /// Print the OpenAPI document.
    Openapi,
    /// Create an organization with its owner and an owner API key, and print the key once:
    /// the first key of a deployment, without an HTTP call. Uses DATABASE_URL (or the AWS
    /// secret), as `serve` does.
    Signup {
        /// The organization's name.
        #[arg(long)]
        org: String,
        /// The owner's email address.
        #[arg(long)]
        owner_email: String,
        /// The owner's display name.
        #[arg(long)]
        owner_name: Option<String>,
    },
    /// Re-seal every tool's credentials under the first key of CREDENTIALS_KEYS, in batches,
    /// while the server runs. Keep the old key listed (after the new one) until this has
    /// finished; run it again to resume after an interruption.
    RotateCredentialsKey {
        /// Tools per batch.
        #[arg(long, default_value_t = 100)]
        batch: u64,
    },
    /// Delete execution logs and finished runs older than their organization's retention
    /// (`retentionDays`, else RETENTION_DAYS) now, in batches, as the server does in the
    /// background; with --dry-run only count them.
    Prune {
        /// Count what would be deleted, per organization, and delete nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Print the SQL that creates the two roles of a least-privilege deployment: an owner for
    /// migrations and an application role with row access only. Read it, then run it with psql
    /// as an administrator on the direct connection.
    Roles {
        /// The database the grants are for.
        #[arg(long)]
        database: String,
        /// The role that owns the schema and runs migrations (DIRECT_URL).
        #[arg(long, default_value = "tolstoy_owner")]
        owner: String,
        /// The role the server connects as (DATABASE_URL).
        #[arg(long, default_value = "tolstoy_app")]
        app: String,
        /// The schema that holds the tables (as DB_SCHEMA): created for the owner when it is
        /// not `public`, the only one the application role may use, and both roles'
        /// search_path in this database.
        #[arg(long, env = "DB_SCHEMA", default_value = "public")]
        schema: String,
        /// statement_timeout set on the application role, in seconds.
        #[arg(long, default_value_t = 15)]
        statement_timeout_secs: u64,
    },
}

#[derive(Subcommand)]
enum MigrateAction {
    /// Apply every pending migration (the default).
    Up,
    /// Roll back the most recent migrations.
    Down {
        /// How many to roll back.
        #[arg(long, default_value_t = 1)]
        steps: u32,
    },
    /// List every migration and whether it is applied.
    Status,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    dotenvy::dotenv().ok();
    match run(cli.command.unwrap_or(Command::Serve { migrate: false })).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!(error = %err, "stopped");
            eprintln!("tolstoy: {err}");
            match err {
                StartupError::Config(_)
                | StartupError::Secret(_)
                | StartupError::DatabaseRoles(_)
                | StartupError::Invalid(_) => ExitCode::from(2),
                _ => ExitCode::FAILURE,
            }
        }
    }
}

async fn run(command: Command) -> Result<(), StartupError> {
    // These two need no configuration and no database.
    match command {
        Command::Openapi => {
            println!("{}", api::openapi_document());
            return Ok(());
        }
        Command::Roles {
            database,
            owner,
            app,
            schema,
            statement_timeout_secs,
        } => {
            let roles = DatabaseRoles {
                owner: &owner,
                app: &app,
                database: &database,
                schema: &schema,
                statement_timeout: Duration::from_secs(statement_timeout_secs),
            };
            print!("{}", roles.setup_sql()?);
            return Ok(());
        }
        Command::Serve { .. }
        | Command::Worker
        | Command::Migrate { .. }
        | Command::Signup { .. }
        | Command::RotateCredentialsKey { .. }
        | Command::Prune { .. } => {}
    }
    let mut settings = Settings::from_env()?;
    telemetry::init(&settings.log_filter, settings.log_format)?;
    if matches!(command, Command::Serve { .. } | Command::Worker) {
        let exporting = telemetry::otlp::start_from_env(|name| std::env::var(name).ok())
            .map_err(|err| StartupError::Invalid(err.to_string()))?;
        if let Some(endpoint) = exporting {
            // The origin alone: a URL may carry credentials.
            let collector = url::Url::parse(&endpoint)
                .map(|url| url.origin().ascii_serialization())
                .unwrap_or_default();
            tracing::info!(%collector, "exporting spans over OTLP");
        }
    }
    let urls = database_urls(&settings).await?;
    if let Some(token) = urls.admin_token.clone() {
        settings.identity.admin_token = Some(token);
    }
    match command {
        Command::Serve { migrate } => {
            let migrate = migrate || settings.auto_migrate || urls.is_sqlite();
            let keyring = credentials_keyring(&settings, &urls)?;
            let db = open_database(&urls, &settings.pool, migrate).await?;
            let app = Application::build(&settings, db, keyring).await?;
            let served = app.run_until_stopped().await;
            telemetry::otlp::flush().await;
            served?;
        }
        Command::Worker => {
            let keyring = credentials_keyring(&settings, &urls)?;
            let db = open_database(&urls, &settings.pool, urls.is_sqlite()).await?;
            let worked = run_worker(&settings, db, keyring).await;
            telemetry::otlp::flush().await;
            worked?;
        }
        Command::Signup {
            org,
            owner_email,
            owner_name,
        } => {
            let db = open_database(&urls, &settings.pool, urls.is_sqlite()).await?;
            let made = sign_up_from_cli(&db, org, owner_email, owner_name).await?;
            eprintln!(
                "organization {} and its owner {} created; their owner API key (shown once, \
                 not stored):",
                made.organization.id, made.user.id
            );
            println!("{}", made.key);
        }
        Command::RotateCredentialsKey { batch } => {
            let keyring = credentials_keyring(&settings, &urls)?;
            let db = open_database(&urls, &settings.pool, urls.is_sqlite()).await?;
            let done = tolstoy::service::tools::reseal_all(&db, &keyring, batch.max(1))
                .await
                .map_err(|err| StartupError::Invalid(err.to_string()))?;
            println!(
                "re-sealed {} tool(s) under key {}; {} unreadable (left as they were), {} \
                 changed meanwhile; {} still under another key",
                done.resealed,
                keyring.sealing_key_id().unwrap_or_default(),
                done.unreadable,
                done.raced,
                done.remaining
            );
            if done.remaining > 0 {
                return Err(StartupError::Invalid(format!(
                    "{} tool(s) are still sealed under another key: keep that key configured \
                     (the log names the unreadable tools) and run this again",
                    done.remaining
                )));
            }
        }
        Command::Prune { dry_run } => {
            let db = open_database(&urls, &settings.pool, urls.is_sqlite()).await?;
            let mode = if dry_run { Mode::DryRun } else { Mode::Delete };
            let pass = retention::prune(
                &db,
                settings.retention.days,
                chrono::Utc::now(),
                mode,
                None,
                None,
            )
            .await?;
            let verb = if dry_run { "would delete" } else { "deleted" };
            for org in pass.pruned() {
                println!(
                    "organization {} (kept {} days): {verb} {} execution log(s), {} run(s)",
                    org.org_id, org.days, org.execution_logs, org.runs
                );
            }
            let (execution_logs, runs) = pass.totals();
            println!("{verb} {execution_logs} execution log(s) and {runs} run(s) in all");
            if let Pass::Busy(_) = pass {
                return Err(StartupError::Invalid(
                    "another process is pruning (it holds the prune lock); this one stopped: \
                     run it again later"
                        .to_owned(),
                ));
            }
        }
        Command::Migrate { action } => {
            let direct = db::connect_direct(&urls.direct, &settings.pool.schema).await?;
            match action.unwrap_or(MigrateAction::Up) {
                MigrateAction::Up => db::migrate_up(&direct).await?,
                MigrateAction::Down { steps } => db::migrate_down(&direct, steps).await?,
                MigrateAction::Status => {
                    for (name, applied) in db::migration_status(&direct).await? {
                        println!("{} {name}", if applied { "applied" } else { "pending" });
                    }
                }
            }
        }
        Command::Openapi | Command::Roles { .. } => {}
    }
    Ok(())
}

/// The sign-up of `tolstoy signup`, with the same field rules as `POST /signup`.
async fn sign_up_from_cli(
    db: &tolstoy::db::Pool,
    org: String,
    owner_email: String,
    owner_name: Option<String>,
) -> Result<signup::SignedUp, StartupError> {
    let mut body = serde_json::json!({
        "organization": { "name": org },
        "owner": { "email": owner_email },
    });
    if let Some(name) = owner_name {
        body["owner"]["name"] = name.into();
    }
    let new = read_body::<SignupIn>(body)
        .map_err(|err| StartupError::Invalid(err.to_string()))?
        .ok_or_else(|| StartupError::Invalid("incomplete sign-up".to_owned()))?;
    signup::sign_up(db, new)
        .await
        .map_err(|err| StartupError::Invalid(err.to_string()))
}
