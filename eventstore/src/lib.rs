//! The PostgreSQL event store of clinicbook.
//!
//! It owns the `events` table (the source of truth), snapshots, idempotency
//! keys and the per-stream hash chain, and it is the one code path that
//! writes events: a [`UnitOfWork`] loads every aggregate a command touches,
//! runs their `handle` on copies, and [`EventStore::execute`] appends all
//! the new events in one transaction, each stream guarded by its expected
//! sequence, retrying the whole command on a conflict.
//!
//! It depends on the domain crate, cqrs-es, postgres-es' table layout and
//! sqlx; it knows nothing of HTTP.

pub mod audit;
pub mod checkpoint;
pub mod error;
pub mod feed;
pub mod hash;
pub mod metadata;
pub mod personal;
pub mod relay;
pub mod replay;
mod row;
mod store;
mod uow;
mod upcasting;

pub use error::{CheckpointError, ExecuteError, StoreError, UowError};
pub use feed::{FeedEvent, FeedPoint};
pub use metadata::{Actor, CommandMetadata};
pub use store::{
    Committed, EventStore, IdempotencyKey, StoreConfig, StoredAggregate, UseCase,
    IDEMPOTENCY_WINDOW,
};
pub use uow::UnitOfWork;

/// The schema migrations of the whole application (`migrations/` at the
/// workspace root), applied by `clinicbook migrate` and by the test harness.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");

/// What [`migrate`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MigrationSummary {
    /// Migrations applied by this call.
    pub applied_now: usize,
    /// Migrations the application has.
    pub total: usize,
}

/// Applies every pending migration to the database at `pool`; a no-op when
/// all are applied.
///
/// # Errors
/// The database failed or a migration failed.
pub async fn migrate(pool: &sqlx::PgPool) -> Result<MigrationSummary, StoreError> {
    let before = applied_migrations(pool).await?;
    MIGRATOR.run(pool).await?;
    let after = applied_migrations(pool).await?;
    Ok(MigrationSummary {
        applied_now: after.saturating_sub(before),
        total: MIGRATOR.iter().count(),
    })
}

async fn applied_migrations(pool: &sqlx::PgPool) -> Result<usize, StoreError> {
    let exists: bool = sqlx::query_scalar("SELECT to_regclass('_sqlx_migrations') IS NOT NULL")
        .fetch_one(pool)
        .await?;
    if !exists {
        return Ok(0);
    }
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations WHERE success")
        .fetch_one(pool)
        .await?;
    Ok(usize::try_from(count).unwrap_or(0))
}

/// How long the server lets an API session sit idle inside a transaction
/// before it ends the session, by default.
pub const API_IDLE_IN_TRANSACTION: std::time::Duration = std::time::Duration::from_secs(10);

/// What a pool's sessions are for, which decides how long one may sit idle
/// inside a transaction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sessions {
    /// Request work: short transactions. A transaction left open stalls
    /// writers waiting on its stream locks, so the server ends a session
    /// idle in a transaction for longer than this.
    Api {
        /// `idle_in_transaction_session_timeout`.
        idle_in_transaction: std::time::Duration,
    },
    /// Work that holds a transaction (or a session) on purpose while it
    /// computes: the relay, projectors, the waitlist matcher, rebuilds and
    /// `replay --all --check`. No idle timeout, whatever the database's
    /// default says.
    LongRunning,
}

impl Sessions {
    /// Request work with the default timeout.
    pub const API: Sessions = Sessions::Api {
        idle_in_transaction: API_IDLE_IN_TRANSACTION,
    };

    /// The value of `idle_in_transaction_session_timeout` (0: none).
    #[must_use]
    pub fn idle_in_transaction_setting(self) -> String {
        match self {
            // At least 1 ms: 0 would mean no timeout at all.
            Sessions::Api {
                idle_in_transaction,
            } => format!("{}ms", idle_in_transaction.as_millis().max(1)),
            Sessions::LongRunning => "0".to_owned(),
        }
    }
}

/// Connects a pool to `url` for request work ([`Sessions::API`]).
///
/// # Errors
/// The database cannot be reached or the URL is malformed.
pub async fn connect(url: &str, max_connections: u32) -> Result<sqlx::PgPool, StoreError> {
    connect_for(url, max_connections, Sessions::API).await
}

/// Connects a pool to `url` whose sessions are for `sessions`.
///
/// # Errors
/// The database cannot be reached or the URL is malformed.
pub async fn connect_for(
    url: &str,
    max_connections: u32,
    sessions: Sessions,
) -> Result<sqlx::PgPool, StoreError> {
    let options = url.parse::<sqlx::postgres::PgConnectOptions>()?.options([(
        "idle_in_transaction_session_timeout",
        sessions.idle_in_transaction_setting(),
    )]);
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(std::time::Duration::from_secs(10))
        // sqlx pings every connection it hands out by default: a round
        // trip before every query, 7 % of the server's CPU under booking
        // load. A connection in steady use has just proven itself; only
        // one that sat idle (a database restarted meanwhile) is tested.
        .test_before_acquire(false)
        .before_acquire(|conn, meta| {
            Box::pin(async move {
                if meta.idle_for >= TEST_IDLE_AFTER {
                    sqlx::Connection::ping(conn).await?;
                }
                Ok(true)
            })
        })
        .connect_with(options)
        .await?;
    Ok(pool)
}

/// A pooled connection idle for this long is pinged before it is used.
const TEST_IDLE_AFTER: std::time::Duration = std::time::Duration::from_secs(1);
