//! `clinicbook`: the command-line entry point of the booking engine.
//!
//! For now it migrates a database (`clinicbook migrate`); the HTTP server,
//! relay, projectors and audit tools join it as they are built.

use anyhow::Context;
use clap::{Parser, Subcommand};

/// clinicbook: an event-sourced booking engine for multi-branch clinics.
#[derive(Debug, Parser)]
#[command(name = "clinicbook", version, about)]
struct Cli {
    /// What to do.
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Apply the database migrations (a no-op when they are all applied).
    Migrate {
        /// PostgreSQL URL, e.g. postgres://user@127.0.0.1:5432/clinicbook
        #[arg(long, env = "DATABASE_URL")]
        database_url: String,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sqlx=warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match cli.command {
        Command::Migrate { database_url } => migrate(&database_url).await,
    }
}

async fn migrate(database_url: &str) -> anyhow::Result<()> {
    let pool = clinicbook_eventstore::connect(database_url, 2)
        .await
        .context("cannot connect to the database (check DATABASE_URL)")?;
    let summary = clinicbook_eventstore::migrate(&pool)
        .await
        .context("migration failed")?;
    println!(
        "database migrated: {} of {} migrations applied now, all {} in place",
        summary.applied_now, summary.total, summary.total
    );
    Ok(())
}
