//! `clinicbook`: the command-line entry point of the booking engine:
//! `serve` (the HTTP API), `migrate`, `token` (a JWT for trying it),
//! `demo`, `rebuild` and `projections status`, and the auditor's `replay`,
//! `verify` and `checkpoint`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use clinicbook_api::auth::{AuthKeys, Role};
use clinicbook_api::background::ServeRole;
use clinicbook_api::{AppState, Limits};
use clinicbook_commands::{Clock, Commands};
use clinicbook_eventstore::relay::Topology;
use clinicbook_eventstore::{EventStore, StoreConfig};
use clinicbook_projections::service::{Background, Batches};
use clinicbook_projections::ReadModels;
use secrecy::{ExposeSecret, SecretString};

mod tools;

/// clinicbook: an event-sourced booking engine for multi-branch clinics.
#[derive(Debug, Parser)]
#[command(name = "clinicbook", version, about)]
struct Cli {
    /// Log format: `pretty` for people, `json` for log collectors.
    #[arg(
        long,
        env = "CLINICBOOK_LOG_FORMAT",
        default_value = "pretty",
        global = true
    )]
    log_format: LogFormat,
    /// What to do.
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Pretty,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the HTTP API.
    Serve(ServeArgs),
    /// Apply the database migrations (a no-op when they are all applied).
    Migrate {
        /// PostgreSQL URL, e.g. postgres://user@127.0.0.1:5432/clinicbook
        #[arg(long, env = "DATABASE_URL")]
        database_url: String,
    },
    /// Print a signed token for trying the API.
    Token(TokenArgs),
    /// Load a demo data set into a running server through its API, then
    /// print a summary and curl commands to try it.
    Demo(DemoArgs),
    /// Rebuild a projection (or `all`) from the event store into fresh
    /// tables and swap them in while reads go on.
    Rebuild {
        /// The projection's name, or `all`.
        projection: String,
        /// PostgreSQL URL.
        #[arg(long, env = "DATABASE_URL")]
        database_url: String,
    },
    /// Read-side tools.
    #[command(subcommand)]
    Projections(ProjectionsCommand),
    /// Replay history from the database: one stream's events and its state
    /// (as of an instant or a version) as JSON, or every stream re-run
    /// through its aggregate with --all --check.
    Replay(clinicbook_api::audit_cli::ReplayArgs),
    /// Verify every hash chain (or one type's, or one stream's), and with
    /// --against FILE every stream a checkpoint names; exits non-zero
    /// naming each broken stream and its first bad sequence.
    Verify(clinicbook_api::audit_cli::VerifyArgs),
    /// Print a signed checkpoint of every stream's head as JSON (keep it
    /// outside the database; `verify --against` takes it).
    Checkpoint(clinicbook_api::audit_cli::CheckpointArgs),
}

#[derive(Debug, Subcommand)]
enum ProjectionsCommand {
    /// Print each projector's checkpoint and how far it is behind the
    /// event store, and the relay's.
    Status {
        /// PostgreSQL URL.
        #[arg(long, env = "DATABASE_URL")]
        database_url: String,
    },
}

#[derive(Debug, clap::Args)]
struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "CLINICBOOK_BIND", default_value = "127.0.0.1:8080")]
    bind: String,
    /// PostgreSQL URL. Without it (and without NATS_URL) the server starts
    /// its own PostgreSQL and nats-server under --var-dir.
    #[arg(long, env = "DATABASE_URL")]
    database_url: Option<String>,
    /// NATS URL (nats://host:port), or a comma-separated list of a
    /// cluster's servers.
    #[arg(long, env = "NATS_URL")]
    nats_url: Option<String>,
    #[command(flatten)]
    secret: SecretArgs,
    /// Database connections of this process for requests.
    #[arg(long, env = "CLINICBOOK_POOL_SIZE", default_value_t = 16)]
    pool_size: u32,
    /// Database connections of this process for the relay, projectors and
    /// the waitlist matcher (sessions without an idle-transaction timeout).
    #[arg(long, env = "CLINICBOOK_BACKGROUND_POOL_SIZE", default_value_t = 12)]
    background_pool_size: u32,
    #[command(flatten)]
    sessions: clinicbook_api::SessionArgs,
    /// Requests per second each client may make on average (0: unlimited).
    #[arg(long, env = "CLINICBOOK_RATE_LIMIT", default_value_t = 100)]
    rate_limit: u64,
    /// Requests a client may make in a burst.
    #[arg(long, env = "CLINICBOOK_RATE_BURST", default_value_t = 400)]
    rate_burst: u32,
    /// Reverse proxies (addresses or networks, comma-separated) whose
    /// `X-Forwarded-For` names the client for the rate limit of requests
    /// without a valid token; from any other peer the header is ignored.
    #[arg(long, env = "CLINICBOOK_TRUSTED_PROXIES", value_delimiter = ',',
          value_parser = clinicbook_api::limit::parse_network)]
    trusted_proxies: Vec<ipnet::IpNet>,
    /// Seconds after which a request is answered 503.
    #[arg(long, env = "CLINICBOOK_REQUEST_TIMEOUT", default_value_t = 30)]
    request_timeout: u64,
    /// What this process runs: everything, or the API, the relay or the
    /// projectors alone (to scale out).
    #[arg(long, env = "CLINICBOOK_ROLE", value_enum, default_value = "all")]
    role: ServeRole,
    /// Namespace of this deployment's NATS stream and consumers, for
    /// several deployments sharing one nats-server (empty: the defaults).
    #[arg(long, env = "CLINICBOOK_NATS_NAMESPACE", default_value = "")]
    nats_namespace: String,
    /// Hours an idempotency key answers a retry with the first answer; a
    /// retry later is a new command. Older keys are purged.
    #[arg(
        long,
        env = "CLINICBOOK_IDEMPOTENCY_WINDOW_HOURS",
        default_value_t = 168
    )]
    idempotency_window_hours: u64,
    /// Copies of the events stream a JetStream cluster keeps, when this
    /// process creates it (3 survives the loss of one node of three).
    #[arg(long, env = "CLINICBOOK_NATS_REPLICAS", default_value_t = 1,
          value_parser = clap::value_parser!(u8).range(1..=5))]
    nats_replicas: u8,
    /// Events the relay publishes per batch (its checkpoint moves per batch).
    #[arg(long, env = "CLINICBOOK_RELAY_BATCH", default_value_t = 1000)]
    relay_batch: i64,
    /// Messages a projector applies per transaction.
    #[arg(long, env = "CLINICBOOK_PROJECTOR_BATCH", default_value_t = 500)]
    projector_batch: usize,
    /// Milliseconds a projector waits after a batch's first message for
    /// more (fewer, larger transactions under load; this much more lag).
    #[arg(long, env = "CLINICBOOK_PROJECTOR_GATHER_MS", default_value_t = 5)]
    projector_gather_ms: u64,
    /// Ed25519 key audit checkpoints are signed with (64 hex digits).
    /// Without it, a random key is kept in <var-dir>/audit-key.
    #[arg(long, env = "CLINICBOOK_AUDIT_KEY", hide_env_values = true)]
    audit_key: Option<SecretString>,
    /// Key that wraps every patient's data key (64 hex digits). Without it,
    /// a random key is kept in <var-dir>/master-key; losing it makes every
    /// patient's personal data unreadable.
    #[arg(long, env = "CLINICBOOK_MASTER_KEY", hide_env_values = true)]
    master_key: Option<SecretString>,
    /// Accept webhook URLs `http://` to loopback addresses (tests, local
    /// tools); otherwise only `https` (`1`, `true` or `yes` to allow).
    #[arg(long, env = "CLINICBOOK_WEBHOOK_ALLOW_LOOPBACK", default_value = "false",
          action = clap::ArgAction::Set, value_parser = clap::builder::BoolishValueParser::new())]
    webhook_allow_loopback: bool,
    /// SMTP relay of patient emails: `smtp://[user:pass@]host[:port]`
    /// (STARTTLS when the server offers it; `?tls=required` to insist),
    /// or `smtps://…` (TLS from the start). Without it, email messages
    /// wait queued.
    #[arg(long, env = "CLINICBOOK_SMTP_URL", hide_env_values = true)]
    smtp_url: Option<SecretString>,
    /// Sender address of patient emails (the clinic's name is shown as its
    /// display name).
    #[arg(
        long,
        env = "CLINICBOOK_SMTP_FROM",
        default_value = "no-reply@clinicbook.example"
    )]
    smtp_from: String,
    /// Attempts of one patient message before it is marked failed (retried
    /// with exponential backoff from 2 s, doubling, at most 10 min).
    #[arg(long, env = "CLINICBOOK_MESSAGE_MAX_ATTEMPTS", default_value_t = 8,
          value_parser = clap::value_parser!(u32).range(1..=100))]
    message_max_attempts: u32,
    /// Pause after a first failed attempt of a patient message, in
    /// milliseconds (doubled after each further failure).
    #[arg(long, env = "CLINICBOOK_MESSAGE_RETRY_MS", default_value_t = 2000,
          value_parser = clap::value_parser!(u64).range(1..=3_600_000))]
    message_retry_ms: u64,
}

#[derive(Debug, clap::Args)]
struct SecretArgs {
    /// HS256 secret for tokens. Without it, a random secret is kept in
    /// <var-dir>/jwt-secret, so `serve` and `token` agree.
    #[arg(long, env = "CLINICBOOK_JWT_SECRET", hide_env_values = true)]
    jwt_secret: Option<SecretString>,
    /// Where local state lives (the secret file, local databases).
    #[arg(long, env = "CLINICBOOK_VAR_DIR", default_value = "var")]
    var_dir: PathBuf,
}

#[derive(Debug, clap::Args)]
struct TokenArgs {
    /// The role of the token.
    #[arg(long, value_enum)]
    role: Role,
    /// The subject (who the caller is).
    #[arg(long)]
    sub: String,
    /// Hours until it expires.
    #[arg(long, default_value_t = 12)]
    ttl_hours: u64,
    #[command(flatten)]
    secret: SecretArgs,
}

#[derive(Debug, clap::Args)]
struct DemoArgs {
    /// The running server to load the demo into.
    #[arg(long, env = "CLINICBOOK_URL", default_value = "http://127.0.0.1:8080")]
    url: String,
    #[command(flatten)]
    options: clinicbook_demo::DemoOptions,
    #[command(flatten)]
    secret: SecretArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    match cli.command {
        Command::Serve(args) => serve(args).await,
        Command::Migrate { database_url } => migrate(&database_url).await,
        Command::Token(args) => token(&args),
        Command::Demo(args) => demo(&args).await,
        Command::Rebuild {
            projection,
            database_url,
        } => tools::rebuild(&database_url, &projection).await,
        Command::Projections(ProjectionsCommand::Status { database_url }) => {
            tools::status(&database_url).await
        }
        Command::Replay(args) => clinicbook_api::audit_cli::replay(&args).await,
        Command::Verify(args) => clinicbook_api::audit_cli::verify(&args).await,
        Command::Checkpoint(args) => clinicbook_api::audit_cli::checkpoint(&args).await,
    }
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sqlx=warn"));
    // Colour only for a person at a terminal: never in a file, a pipe or JSON.
    let colour = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Pretty => builder.with_ansi(colour).init(),
        LogFormat::Json => builder.json().with_ansi(false).init(),
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

/// The token secret: the flag or env if given, else the one kept in
/// `<var>/jwt-secret` (created on first use).
fn secret(args: &SecretArgs) -> anyhow::Result<SecretString> {
    if let Some(secret) = &args.jwt_secret {
        return Ok(secret.clone());
    }
    let path = args.var_dir.join("jwt-secret");
    if let Ok(existing) = std::fs::read_to_string(&path) {
        let existing = existing.trim().to_string();
        if !existing.is_empty() {
            return Ok(SecretString::from(existing));
        }
    }
    std::fs::create_dir_all(&args.var_dir)
        .with_context(|| format!("creating {}", args.var_dir.display()))?;
    let fresh: String = (0..4)
        .map(|_| uuid::Uuid::new_v4().simple().to_string())
        .collect();
    clinicbook_api::keys::write_private(&path, &fresh)?;
    tracing::info!(path = %path.display(), "no CLINICBOOK_JWT_SECRET given: created a random token secret");
    Ok(SecretString::from(fresh))
}

fn token(args: &TokenArgs) -> anyhow::Result<()> {
    let keys = AuthKeys::new(&secret(&args.secret)?);
    let token = keys.issue(&args.sub, args.role, args.ttl_hours.saturating_mul(3600))?;
    println!("{token}");
    Ok(())
}

/// Signs its tokens with the secret `serve` uses; never makes up a new
/// one, which the server would not accept.
async fn demo(args: &DemoArgs) -> anyhow::Result<()> {
    clinicbook_demo::check_server(&args.url).await?;
    let secret_file = args.secret.var_dir.join("jwt-secret");
    anyhow::ensure!(
        args.secret.jwt_secret.is_some() || secret_file.exists(),
        "no token secret: run `clinicbook demo` in the directory where `clinicbook serve` runs \
         (it keeps {}), or set CLINICBOOK_JWT_SECRET as for `serve`",
        secret_file.display()
    );
    let keys = AuthKeys::new(&secret(&args.secret)?);
    // Long enough for the largest demo load and for pasting its curl commands.
    let ttl = 12 * 3600;
    let tokens = clinicbook_demo::DemoTokens {
        admin: keys.issue("demo-admin", Role::Admin, ttl)?,
        staff: keys.issue("demo-staff", Role::Staff, ttl)?,
        curl: keys.issue("demo-curl", Role::Staff, ttl)?,
    };
    let report = clinicbook_demo::run(&args.url, &tokens, &args.options).await?;
    println!("{report}");
    Ok(())
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    // Without a database and broker to use, run our own under --var-dir.
    let local = match (&args.database_url, &args.nats_url) {
        (None, None) => {
            let local = clinicbook_localsvc::LocalServices::start_persistent(&args.secret.var_dir)
                .await
                .context("starting the local PostgreSQL and nats-server")?;
            println!(
                "No DATABASE_URL or NATS_URL given: running local services (kept between runs)\n{}",
                local.describe()
            );
            // For the CLI's database tools in another terminal:
            // `export DATABASE_URL=$(cat var/database-url)`.
            for (file, url) in [
                ("database-url", local.database_url()),
                ("nats-url", local.nats_url()),
            ] {
                let path = args.secret.var_dir.join(file);
                std::fs::write(&path, format!("{url}\n"))
                    .with_context(|| format!("writing {}", path.display()))?;
            }
            Some(local)
        }
        (None, Some(_)) => {
            anyhow::bail!("NATS_URL is set but DATABASE_URL is not: set both, or neither")
        }
        _ => None,
    };
    let database_url = match (&args.database_url, &local) {
        (Some(url), _) => url.clone(),
        (None, Some(local)) => local.database_url(),
        (None, None) => anyhow::bail!("no database configured"),
    };
    let nats_url = args
        .nats_url
        .clone()
        .or_else(|| local.as_ref().map(|l| l.nats_url()));
    let served = run_server(&args, &database_url, nats_url.as_deref()).await;
    if let Some(local) = local {
        local
            .shutdown()
            .await
            .context("stopping the local services")?;
    }
    served
}

async fn run_server(
    args: &ServeArgs,
    database_url: &str,
    nats_url: Option<&str>,
) -> anyhow::Result<()> {
    let pool =
        clinicbook_eventstore::connect_for(database_url, args.pool_size, args.sessions.api())
            .await
            .context("cannot connect to the database (check DATABASE_URL)")?;
    // The background's work holds sessions and transactions on purpose
    // (the relay's leadership, a rebuild, the matcher's claim).
    let long = clinicbook_eventstore::connect_for(
        database_url,
        args.background_pool_size.max(4),
        clinicbook_eventstore::Sessions::LongRunning,
    )
    .await
    .context("cannot connect to the database (check DATABASE_URL)")?;
    let summary = clinicbook_eventstore::migrate(&long)
        .await
        .context("migration failed")?;
    tracing::info!(
        applied_now = summary.applied_now,
        total = summary.total,
        "database schema up to date"
    );
    let background_read = ReadModels::new(long);
    background_read
        .ensure_all()
        .await
        .context("cannot create the read models' tables")?;
    // The API reads through its own pool; the cache it answers
    // availability from is the one the projectors' batches invalidate.
    let read = background_read.with_pool(pool.clone());
    let store = EventStore::new(
        pool,
        StoreConfig {
            idempotency_window: Duration::from_secs(
                args.idempotency_window_hours.saturating_mul(3600),
            ),
            master_key: clinicbook_api::keys::master_key(
                args.master_key.as_ref(),
                &args.secret.var_dir,
            )?,
            ..StoreConfig::default()
        },
    );
    let commands = Commands::new(store, Clock::system());
    let background = match nats_url {
        Some(url) => {
            let topology = if args.nats_namespace.is_empty() {
                Topology::default()
            } else {
                Topology::namespaced(&args.nats_namespace)
            }
            .with_replicas(usize::from(args.nats_replicas));
            let batches = Batches {
                relay: args.relay_batch,
                projector: args.projector_batch,
                gather: Duration::from_millis(args.projector_gather_ms),
            };
            clinicbook_api::background::start(
                args.role,
                &commands,
                &background_read,
                url,
                &topology,
                batches,
            )
            .await
            .context("cannot start the read side (check NATS_URL)")?
        }
        None => {
            tracing::warn!("no NATS_URL: the relay and projectors do not run");
            Background::new()
        }
    };
    let mut background = background;
    clinicbook_api::background::maintain(
        &mut background,
        &commands,
        &background_read,
        clinicbook_api::background::MAINTENANCE_EVERY,
    );
    // Webhook deliveries run beside the read side (one worker per
    // subscription across every process, by a lease on its cursor).
    let message_config = clinicbook_notify::messages::MessageConfig {
        smtp_url: args
            .smtp_url
            .as_ref()
            .map(|url| url.expose_secret().to_owned()),
        from: args.smtp_from.clone(),
        max_attempts: args.message_max_attempts,
        base_delay: Duration::from_millis(args.message_retry_ms),
        ..clinicbook_notify::messages::MessageConfig::default()
    };
    let smtp = clinicbook_notify::messages::smtp::Relay::new(
        message_config.smtp_url.as_deref(),
        message_config.timeout,
    )
    .context("CLINICBOOK_SMTP_URL is not an SMTP URL")?;
    if matches!(args.role, ServeRole::All | ServeRole::Projector) {
        clinicbook_notify::worker::spawn(
            background_read.pool().clone(),
            clinicbook_notify::DeliveryConfig::default(),
            background.stop_token(),
            background.commit_nudges(),
        );
        // Patient messages: planned from the feed (one planner across
        // processes), sent by every such process (claims never overlap).
        let store = commands.store().clone();
        clinicbook_notify::messages::plan::spawn(
            store.clone(),
            background_read.clone(),
            message_config.clone(),
            background.stop_token(),
        );
        clinicbook_notify::messages::send::spawn(
            store,
            smtp.clone(),
            message_config,
            background.stop_token(),
        );
    }
    tracing::info!(role = ?args.role, "serving");
    let webhooks = clinicbook_notify::Webhooks::new(
        commands.store().pool().clone(),
        args.webhook_allow_loopback,
    );
    let state = AppState {
        messages: clinicbook_notify::messages::log::Messages::new(commands.store().clone()),
        smtp,
        audit: commands.store().audit(),
        commands,
        read,
        auth: Arc::new(AuthKeys::new(&secret(&args.secret)?)),
        metrics: clinicbook_api::metrics_handle(),
        nats_addr: nats_url.map(host_port),
        audit_key: Arc::new(clinicbook_api::keys::audit_key(
            args.audit_key.as_ref(),
            &args.secret.var_dir,
            true,
        )?),
        webhooks,
        readiness: Arc::default(),
    };
    let limits = Limits {
        rate_per_second: args.rate_limit,
        burst: args.rate_burst,
        timeout: Duration::from_secs(args.request_timeout.max(1)),
        trusted_proxies: clinicbook_api::limit::TrustedProxies::new(args.trusted_proxies.clone()),
        ..Limits::default()
    };
    let listener = tokio::net::TcpListener::bind(&args.bind)
        .await
        .with_context(|| format!("cannot listen on {}", args.bind))?;
    let local = listener.local_addr()?;
    tracing::info!(%local, "clinicbook listening; API docs at http://{local}/docs");
    let router = if args.role.serves_api() {
        clinicbook_api::router(state, limits)
    } else {
        clinicbook_api::ops_router(state)
    };
    let served = clinicbook_api::serve(listener, router, clinicbook_api::shutdown_signal()).await;
    background.shutdown().await;
    served?;
    tracing::info!("stopped");
    Ok(())
}

/// `nats://host:port` → `host:port`.
fn host_port(url: &str) -> String {
    url.split("://")
        .last()
        .unwrap_or(url)
        .trim_end_matches('/')
        .to_string()
}
