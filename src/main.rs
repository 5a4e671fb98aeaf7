//! The `tolstoy` binary: `serve` (the default), `migrate`, `openapi`.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tolstoy::config::Settings;
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
    if let Some(Command::Openapi) = cli.command {
        println!("{}", api::openapi_document());
        return ExitCode::SUCCESS;
    }
    dotenvy::dotenv().ok();
    match run(cli.command.unwrap_or(Command::Serve { migrate: false })).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!(error = %err, "stopped");
            eprintln!("tolstoy: {err}");
            match err {
                StartupError::Config(_) => ExitCode::from(2),
                _ => ExitCode::FAILURE,
            }
        }
    }
}

async fn run(command: Command) -> Result<(), StartupError> {
    let settings = Settings::from_env()?;
    telemetry::init(&settings.log_filter, settings.log_format)?;
    let urls = database_urls(&settings)?;
    match command {
        Command::Serve { migrate } => {
            let migrate = migrate || settings.auto_migrate || urls.is_sqlite();
            let db = open_database(&urls, migrate).await?;
            let app = Application::build(&settings, db).await?;
            app.run_until_stopped().await?;
        }
        Command::Migrate { action } => {
            let direct = db::connect(&urls.direct).await?;
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
        Command::Openapi => println!("{}", api::openapi_document()),
    }
    Ok(())
}
