//! The `simplebank` binary: parse the command line, set up logging, run one subcommand.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use secrecy::SecretString;
use simplebank::config::{DatabaseSettings, RawSettings, Settings};
use simplebank::domain::{Role, Username};
use simplebank::startup::{Application, shutdown_signal};
use simplebank::store::{MIGRATOR, Store, UserStore};

#[derive(Parser)]
#[command(name = "simplebank", version, about = "A banking server on PostgreSQL")]
struct Cli {
    /// A TOML configuration file (default: app.toml in the working directory, if present).
    /// Environment variables override it.
    #[arg(long, value_name = "PATH", global = true)]
    config: Option<PathBuf>,

    /// PostgreSQL URL, overriding DB_SOURCE, e.g.
    /// postgresql://root:secret@127.0.0.1:5432/simple_bank?sslmode=disable
    #[arg(long, global = true)]
    db_source: Option<String>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the HTTP and gRPC APIs (migrating the database first unless --no-migrate).
    Serve {
        /// Do not apply pending migrations at start (when a separate job runs them).
        #[arg(long)]
        no_migrate: bool,
        /// Once both listeners are bound and the database answers, write the bound addresses
        /// and the pid here as JSON ({"http", "grpc", "pid"}); removed at shutdown.
        #[arg(long, value_name = "PATH")]
        ready_file: Option<PathBuf>,
    },
    /// Apply or revert database migrations.
    Migrate {
        #[command(subcommand)]
        direction: Direction,
    },
    /// Manage users from the command line.
    User {
        #[command(subcommand)]
        action: UserAction,
    },
}

#[derive(Subcommand)]
enum Direction {
    /// Apply every pending migration.
    Up,
    /// Revert the newest applied migration (all of them with --all).
    Down {
        #[arg(long)]
        all: bool,
    },
}

#[derive(Subcommand)]
enum UserAction {
    /// Give a user a role; this is how the first banker is made.
    SetRole {
        username: String,
        /// depositor or banker
        role: String,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    match run(Cli::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    // The configuration comes first: it says how to log.
    let mut raw = RawSettings::load(cli.config.as_deref())?;
    if let Some(url) = cli.db_source {
        raw.db_source = Some(SecretString::from(url));
    }
    simplebank::telemetry::init(raw.log_format());

    match cli.command {
        Command::Serve {
            no_migrate,
            ready_file,
        } => serve(raw, no_migrate, ready_file).await,
        Command::Migrate { direction } => migrate(&connect(raw.db_source).await?, direction).await,
        Command::User {
            action: UserAction::SetRole { username, role },
        } => {
            let username = Username::parse(&username)?;
            let role: Role = role.parse()?;
            let user = connect(raw.db_source)
                .await?
                .set_user_role(&username, role)
                .await
                .with_context(|| format!("cannot set the role of {username}"))?;
            println!("{} is now a {}", user.username, user.role);
            Ok(())
        }
    }
}

async fn serve(
    raw: RawSettings,
    no_migrate: bool,
    ready_file: Option<PathBuf>,
) -> anyhow::Result<()> {
    let mut settings = Settings::try_from(raw)?;
    settings.run_migrations = !no_migrate;
    let mut app = Application::build(settings).await?;
    if let Some(path) = ready_file {
        app = app.with_ready_file(path);
    }
    app.run_until_stopped(shutdown_signal()).await
}

/// The store for a one-off command, connected eagerly so a bad address fails clearly.
async fn connect(db_source: Option<SecretString>) -> anyhow::Result<Store> {
    let url = db_source.context("DB_SOURCE is not set (environment, app.toml or --db-source)")?;
    let pool = DatabaseSettings::new(url)
        .connect()
        .await
        .context("cannot connect to the database named by DB_SOURCE")?;
    Ok(Store::new(pool))
}

async fn migrate(store: &Store, direction: Direction) -> anyhow::Result<()> {
    match direction {
        Direction::Up => {
            store.migrate().await.context("migration failed")?;
            println!("migrations applied");
        }
        Direction::Down { all } => {
            // Revert to the version just below the newest applied one (or to nothing). A failed
            // look-up must stop here: read as "nothing applied" it would revert everything.
            let applied: Vec<i64> = if all {
                Vec::new()
            } else {
                sqlx::query_scalar(
                    "SELECT version FROM _sqlx_migrations WHERE success ORDER BY version DESC LIMIT 2",
                )
                .fetch_all(store.pool())
                .await
                .context("cannot read the applied migrations (has `migrate up` ever run?)")?
            };
            if !all && applied.is_empty() {
                println!("no migration to revert");
                return Ok(());
            }
            let target = applied.get(1).copied().unwrap_or(0);
            MIGRATOR
                .undo(store.pool(), target)
                .await
                .context("reverting migrations failed")?;
            println!("migrations reverted down to version {target}");
        }
    }
    Ok(())
}
