//! Shared helpers: a store on a fresh database, metadata, and small use cases.

use chrono::{DateTime, Duration, TimeZone, Utc};
use clinicbook_eventstore::{
    Actor, CommandMetadata, EventStore, StoreConfig, StoredAggregate, UnitOfWork, UowError,
    UseCase, MIGRATOR,
};
use clinicbook_testkit::{services, TestDatabase};

/// A store over a fresh, migrated database.
pub async fn store_with(config: StoreConfig) -> (EventStore, TestDatabase) {
    let db = services().await.database(&MIGRATOR).await;
    (EventStore::new(db.pool.clone(), config), db)
}

/// A store with the default configuration.
pub async fn store() -> (EventStore, TestDatabase) {
    store_with(StoreConfig::default()).await
}

/// Metadata of a staff member's command.
pub fn meta(command: &str) -> CommandMetadata {
    CommandMetadata::new(
        Actor {
            subject: "alice".to_string(),
            role: "staff".to_string(),
        },
        command,
        "req-1",
    )
}

/// A fixed "now" for domain commands: 2030-01-07 08:00 UTC (a Monday).
pub fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2030, 1, 7, 8, 0, 0)
        .single()
        .unwrap_or_default()
}

/// `now()` plus `hours`.
pub fn at(hours: i64) -> DateTime<Utc> {
    now() + Duration::hours(hours)
}

/// A use case that runs one command on one aggregate.
pub struct Run<A: StoredAggregate> {
    pub id: String,
    pub command: A::Command,
}

impl<A> UseCase for Run<A>
where
    A: StoredAggregate,
    A::Command: Clone + Send + Sync,
{
    type Output = ();

    async fn run(&self, uow: &mut UnitOfWork) -> Result<(), UowError> {
        uow.handle::<A>(&self.id, self.command.clone()).await?;
        Ok(())
    }
}

/// Runs one command as its own unit of work and panics if it fails.
pub async fn run<A>(store: &EventStore, id: &str, command: A::Command)
where
    A: StoredAggregate,
    A::Command: Clone + Send + Sync,
{
    let use_case = Run::<A> {
        id: id.to_string(),
        command,
    };
    if let Err(e) = store.execute(&meta("setup"), None, &use_case).await {
        panic!("setup command on {}/{id} failed: {e}", A::TYPE);
    }
}

/// Number of events of `aggregate_type` (and `event_type`, if given).
pub async fn count_events(
    db: &TestDatabase,
    aggregate_type: &str,
    event_type: Option<&str>,
) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM events WHERE aggregate_type = $1 AND ($2::text IS NULL OR event_type = $2)",
    )
    .bind(aggregate_type)
    .bind(event_type)
    .fetch_one(&db.pool)
    .await
    .unwrap_or(-1)
}
