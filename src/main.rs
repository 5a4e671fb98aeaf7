//! The `tolstoy` binary: `serve` (the default), `migrate`, `openapi`.

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use tolstoy::config::Settings;
use tolstoy::roles::Roles;
use tolstoy::secrets::database_urls;
use tolstoy::startup::{open_database, Application, StartupError};
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
    /// Apply, roll back or list migrations, on DIRECT_URL.
    Migrate {
        #[command(subcommand)]
        action: Option<MigrateAction>,
    },
    /// Print the OpenAPI document.
    Openapi,
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
                StartupError::Config(_) | StartupError::Secret(_) | StartupError::Roles(_) => {
                    ExitCode::from(2)
                }
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
            statement_timeout_secs,
        } => {
            let roles = Roles {
                owner: &owner,
                app: &app,
                database: &database,
                statement_timeout: Duration::from_secs(statement_timeout_secs),
            };
            print!("{}", roles.setup_sql()?);
            return Ok(());
        }
        Command::Serve { .. } | Command::Migrate { .. } => {}
    }
    let settings = Settings::from_env()?;
    telemetry::init(&settings.log_filter, settings.log_format)?;
    let urls = database_urls(&settings).await?;
    match command {
        Command::Serve { migrate } => {
            let migrate = migrate || settings.auto_migrate || urls.is_sqlite();
            let db = open_database(&urls, &settings.pool, migrate).await?;
            let app = Application::build(&settings, db).await?;
            app.run_until_stopped().await?;
        }
        Command::Migrate { action } => {
            let direct = db::connect_direct(&urls.direct).await?;
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
