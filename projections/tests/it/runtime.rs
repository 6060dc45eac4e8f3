//! The relay and the projectors over the harness's real PostgreSQL and
//! nats-server: every event reaches every projector exactly once and, per
//! stream, in sequence order — with transactions committing out of
//! position order, NATS stopped under load, and messages lost.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use clinicbook_commands::money::Deposit;
use clinicbook_commands::{Clock, Commands, Ctx};
use clinicbook_domain::AggregateKind;
use clinicbook_eventstore::hash::{self, EventFields, GENESIS};
use clinicbook_eventstore::relay::{self, Relay, RelayConfig, Topology};
use clinicbook_eventstore::{Actor, CommandMetadata, EventStore, FeedEvent, StoreConfig, MIGRATOR};
use clinicbook_projections::runtime::{Projector, ProjectorConfig};
use clinicbook_projections::{service, Projection, ProjectionError, ReadModels};
use clinicbook_testkit::{services, Services, TestDatabase};
use futures::future::BoxFuture;
use sqlx::{PgConnection, PgPool, Row};
use tokio::task::JoinHandle;
use tokio::time::{sleep, Instant};
use uuid::Uuid;

/// A projection for tests: one row per event it was given, counting how
/// often, and every event that arrived out of its stream's order.
static TRACE: Projection = Projection {
    name: "trace",
    tables: &[],
    ddl: "CREATE TABLE IF NOT EXISTS trace_events (
              aggregate_type text NOT NULL, aggregate_id text NOT NULL, sequence bigint NOT NULL,
              position bigint NOT NULL, seen integer NOT NULL DEFAULT 1,
              PRIMARY KEY (aggregate_type, aggregate_id, sequence));
          CREATE TABLE IF NOT EXISTS trace_disorder (
              aggregate_type text NOT NULL, aggregate_id text NOT NULL, sequence bigint NOT NULL,
              previous bigint);",
    kinds: AggregateKind::ALL,
    apply: trace,
};

fn trace<'a>(
    conn: &'a mut PgConnection,
    events: &'a [FeedEvent],
) -> BoxFuture<'a, Result<(), ProjectionError>> {
    Box::pin(async move {
        for event in events {
            let previous: Option<i64> = sqlx::query_scalar(
                "SELECT max(sequence) FROM trace_events WHERE aggregate_type = $1 AND aggregate_id = $2",
            )
            .bind(&event.aggregate_type)
            .bind(&event.aggregate_id)
            .fetch_one(&mut *conn)
            .await?;
            if previous.unwrap_or(0) + 1 != event.sequence {
                sqlx::query("INSERT INTO trace_disorder VALUES ($1, $2, $3, $4)")
                    .bind(&event.aggregate_type)
                    .bind(&event.aggregate_id)
                    .bind(event.sequence)
                    .bind(previous)
                    .execute(&mut *conn)
                    .await?;
            }
            sqlx::query(
                "INSERT INTO trace_events VALUES ($1, $2, $3, $4)
                 ON CONFLICT (aggregate_type, aggregate_id, sequence)
                 DO UPDATE SET seen = trace_events.seen + 1",
            )
            .bind(&event.aggregate_type)
            .bind(&event.aggregate_id)
            .bind(event.sequence)
            .bind(event.position)
            .execute(&mut *conn)
            .await?;
        }
        Ok(())
    })
}

/// A projection for tests that records how many events each apply got,
/// and how often it saw each event.
static SIZES: Projection = Projection {
    name: "sizes",
    tables: &[],
    ddl: "CREATE TABLE IF NOT EXISTS sizes_events (
              position bigint PRIMARY KEY, seen integer NOT NULL DEFAULT 1);
          CREATE TABLE IF NOT EXISTS sizes_batches (size integer NOT NULL);",
    kinds: AggregateKind::ALL,
    apply: sizes,
};

fn sizes<'a>(
    conn: &'a mut PgConnection,
    events: &'a [FeedEvent],
) -> BoxFuture<'a, Result<(), ProjectionError>> {
    Box::pin(async move {
        sqlx::query("INSERT INTO sizes_batches VALUES ($1)")
            .bind(i32::try_from(events.len()).unwrap_or(i32::MAX))
            .execute(&mut *conn)
            .await?;
        for event in events {
            sqlx::query(
                "INSERT INTO sizes_events VALUES ($1)
                 ON CONFLICT (position) DO UPDATE SET seen = sizes_events.seen + 1",
            )
            .bind(event.position)
            .execute(&mut *conn)
            .await?;
        }
        Ok(())
    })
}

/// `sizes` for clinic events only: every other message is passed over.
static CLINIC_SIZES: Projection = Projection {
    name: "clinic_sizes",
    kinds: &[AggregateKind::Clinic],
    ..SIZES
};

/// A database with the relay and the trace projector running over NATS.
struct ReadSide {
    db: TestDatabase,
    read: ReadModels,
    commands: Commands,
    js: jetstream::Context,
    topology: Topology,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for ReadSide {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

async fn read_side(services: &Services) -> ReadSide {
    let db = services.database(&MIGRATOR).await;
    let topology = Topology::namespaced(&db.name);
    let js = service::connect(&services.nats.url())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let read = ReadModels::new(db.pool.clone());
    let commands = Commands::new(
        EventStore::new(db.pool.clone(), StoreConfig::default()),
        Clock::system(),
    );
    // As `serve` does: each commit wakes the relay.
    commands
        .store()
        .nudge_relay(relay::Nudge::new(js.client(), &topology));
    let mut side = ReadSide {
        db,
        read,
        commands,
        js,
        topology,
        tasks: Vec::new(),
    };
    side.start_relay();
    side.start_projector(&TRACE, Duration::from_secs(3));
    side
}

impl ReadSide {
    fn start_relay(&mut self) {
        let relay = Relay::new(
            self.db.pool.clone(),
            self.js.clone(),
            RelayConfig {
                topology: self.topology.clone(),
                poll: Duration::from_millis(200),
                retry: Duration::from_millis(100),
                ..RelayConfig::default()
            },
        );
        self.tasks
            .push(tokio::spawn(relay.run(std::future::pending())));
    }

    /// Starts a projector that looks at the event store after `idle`
    /// without messages.
    fn start_projector(&mut self, projection: &'static Projection, idle: Duration) {
        self.start_projector_with(projection, idle, ProjectorConfig::default().batch);
    }

    /// Starts a projector applying at most `batch` messages at a time.
    fn start_projector_with(
        &mut self,
        projection: &'static Projection,
        idle: Duration,
        batch: usize,
    ) {
        let projector = Projector::new(
            self.read.clone(),
            self.js.clone(),
            projection,
            ProjectorConfig {
                topology: self.topology.clone(),
                idle,
                batch,
                retry: Duration::from_millis(100),
                ..ProjectorConfig::default()
            },
        );
        self.tasks
            .push(tokio::spawn(projector.run(std::future::pending())));
    }

    async fn deposit(&self, patient: Uuid, n: usize) {
        let deposit = Deposit {
            amount_cents: 100,
            reference: format!("ref-{n}"),
        };
        self.commands
            .deposit(&ctx(), patient, deposit)
            .await
            .unwrap_or_else(|e| panic!("deposit: {e}"));
    }

    async fn events(&self) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM events")
            .fetch_one(&self.db.pool)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// Waits (bounded) until the trace projection has applied as many
    /// events as are stored. (Not "reached the feed's head": the horizon is
    /// cluster-wide, so other tests' open transactions can hide the newest
    /// events from the feed for a moment.)
    async fn caught_up(&self, within: Duration) {
        self.caught_up_of(&TRACE, within).await;
    }

    /// [`ReadSide::caught_up`] for `projection`; answers how many events
    /// are stored.
    async fn caught_up_of(&self, projection: &Projection, within: Duration) -> i64 {
        let deadline = Instant::now() + within;
        loop {
            let stored = self.events().await;
            let at = self
                .read
                .checkpoint(projection.name)
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            if stored > 0 && at.applied == stored {
                return stored;
            }
            assert!(
                Instant::now() < deadline,
                "{} projection stuck at {at:?}, {stored} stored",
                projection.name
            );
            sleep(Duration::from_millis(20)).await;
        }
    }

    /// Every stored event was applied exactly once, each stream in order.
    async fn assert_exactly_once_in_order(&self) {
        let pool = &self.db.pool;
        let missing: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM events e WHERE NOT EXISTS (
                SELECT 1 FROM read.trace_events t WHERE t.aggregate_type = e.aggregate_type
                   AND t.aggregate_id = e.aggregate_id AND t.sequence = e.sequence AND t.position = e.position)",
        )
        .fetch_one(pool)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(missing, 0, "events never applied");
        let twice: i64 =
            sqlx::query_scalar("SELECT count(*) FROM read.trace_events WHERE seen <> 1")
                .fetch_one(pool)
                .await
                .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(twice, 0, "events applied more than once");
        let disorder: i64 = sqlx::query_scalar("SELECT count(*) FROM read.trace_disorder")
            .fetch_one(pool)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            disorder, 0,
            "events of a stream applied out of sequence order"
        );
        let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM read.trace_events")
            .fetch_one(pool)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(rows, self.events().await);
        let applied = self
            .read
            .checkpoint(TRACE.name)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            applied.applied, rows,
            "the checkpoint counts every event once"
        );
    }
}

fn ctx() -> Ctx {
    Ctx::new(CommandMetadata::new(
        Actor {
            subject: "alice".into(),
            role: "staff".into(),
        },
        "test",
        "req-test",
    ))
}

/// Inserts the first event of a new wallet stream directly, inside `conn`'s
/// open transaction (as the store would, with its hash).
async fn insert_wallet_event(conn: &mut PgConnection, patient: Uuid) {
    let payload = r#"{"FundsDeposited":{"amount":500,"reference":"raw"}}"#;
    let metadata = r#"{"actor":"test"}"#;
    let id = patient.to_string();
    let chained = hash::chain(
        &GENESIS,
        &EventFields {
            aggregate_type: "Wallet",
            aggregate_id: &id,
            sequence: 1,
            event_type: "FundsDeposited",
            event_version: "1.0.0",
            payload,
            metadata,
        },
    );
    sqlx::query(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata, hash)
         VALUES ('Wallet', $1, 1, 'FundsDeposited', '1.0.0', $2::json, $3::json, $4)",
    )
    .bind(&id)
    .bind(payload)
    .bind(metadata)
    .bind(chained.to_vec())
    .execute(conn)
    .await
    .unwrap_or_else(|e| panic!("{e}"));
}

async fn position_and_xid(pool: &PgPool, patient: Uuid) -> (i64, i64) {
    let row = sqlx::query(
        "SELECT position, transaction_id::text::bigint AS xid FROM events
          WHERE aggregate_type = 'Wallet' AND aggregate_id = $1 AND sequence = 1",
    )
    .bind(patient.to_string())
    .fetch_one(pool)
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    (row.get("position"), row.get("xid"))
}

#[tokio::test]
async fn events_committed_out_of_position_order_all_reach_the_projection() {
    let side = read_side(services().await).await;
    let pool = &side.db.pool;
    // Two transactions: the later-numbered one commits first.
    let (first_patient, second_patient) = (Uuid::new_v4(), Uuid::new_v4());
    let mut first = pool.begin().await.unwrap_or_else(|e| panic!("{e}"));
    insert_wallet_event(&mut first, first_patient).await;
    let mut second = pool.begin().await.unwrap_or_else(|e| panic!("{e}"));
    insert_wallet_event(&mut second, second_patient).await;
    second.commit().await.unwrap_or_else(|e| panic!("{e}"));
    // A transaction that takes its id early and inserts late.
    let late_patient = Uuid::new_v4();
    let mut late = pool.begin().await.unwrap_or_else(|e| panic!("{e}"));
    sqlx::query("SELECT pg_current_xact_id()")
        .execute(&mut *late)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    // Meanwhile ordinary commands commit (higher ids, lower positions).
    for n in 0..20 {
        side.deposit(Uuid::new_v4(), n).await;
    }
    sleep(Duration::from_millis(300)).await;
    first.commit().await.unwrap_or_else(|e| panic!("{e}"));
    insert_wallet_event(&mut late, late_patient).await;
    for n in 20..30 {
        side.deposit(Uuid::new_v4(), n).await;
    }
    late.commit().await.unwrap_or_else(|e| panic!("{e}"));

    // The shapes the test is about really happened.
    let (first_position, first_xid) = position_and_xid(pool, first_patient).await;
    let (second_position, second_xid) = position_and_xid(pool, second_patient).await;
    assert!(first_xid < second_xid && first_position < second_position);
    let (late_position, late_xid) = position_and_xid(pool, late_patient).await;
    let max_position: i64 = sqlx::query_scalar("SELECT max(position) FROM events")
        .fetch_one(pool)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        late_xid < second_xid + 25,
        "the late transaction took its id early"
    );
    assert!(late_position > first_position);
    assert!(
        max_position > late_position,
        "commands committed after the late insert's id"
    );

    side.caught_up(Duration::from_secs(20)).await;
    side.assert_exactly_once_in_order().await;
}

#[tokio::test]
async fn events_of_one_stream_reach_the_projector_in_sequence_order_under_concurrency() {
    let side = Arc::new(read_side(services().await).await);
    let patients: Vec<Uuid> = (0..4).map(|_| Uuid::new_v4()).collect();
    let counter = Arc::new(AtomicUsize::new(0));
    let mut writers = Vec::new();
    for _ in 0..8 {
        let side = side.clone();
        let patients = patients.clone();
        let counter = counter.clone();
        writers.push(tokio::spawn(async move {
            for _ in 0..25 {
                let n = counter.fetch_add(1, Ordering::Relaxed);
                side.deposit(patients[n % patients.len()], n).await;
            }
        }));
    }
    for writer in writers {
        writer.await.unwrap_or_else(|e| panic!("{e}"));
    }
    side.caught_up(Duration::from_secs(20)).await;
    side.assert_exactly_once_in_order().await;
    assert_eq!(side.events().await, 200);
}

#[tokio::test]
async fn a_message_lost_from_the_stream_is_filled_from_the_event_store() {
    let mut side = read_side(services().await).await;
    // Publish a first batch and let the projector take it.
    for n in 0..5 {
        side.deposit(Uuid::new_v4(), n).await;
    }
    side.caught_up(Duration::from_secs(20)).await;
    // Stop the projector, publish more, and lose one message in JetStream.
    let projector = side
        .tasks
        .pop()
        .unwrap_or_else(|| panic!("no projector task"));
    projector.abort();
    let _ = projector.await;
    for n in 5..15 {
        side.deposit(Uuid::new_v4(), n).await;
    }
    let mut stream = side
        .topology
        .ensure_stream(&side.js)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let info = stream.info().await.unwrap_or_else(|e| panic!("{e}"));
        if info.state.messages >= 15 {
            break;
        }
        assert!(Instant::now() < deadline, "relay did not publish");
        sleep(Duration::from_millis(20)).await;
    }
    let lost = 9; // the stream's 9th message: in the unseen part
    assert!(stream
        .delete_message(lost)
        .await
        .unwrap_or_else(|e| panic!("{e}")));
    let before = side
        .read
        .checkpoint(TRACE.name)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    // The idle look at the event store comes only after a minute, so it is
    // the message after the lost one that must reveal the gap.
    side.start_projector(&TRACE, Duration::from_secs(60));
    side.caught_up(Duration::from_secs(20)).await;
    side.assert_exactly_once_in_order().await;
    let after = side
        .read
        .checkpoint(TRACE.name)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        after.applied - before.applied,
        10,
        "before {before:?} after {after:?}"
    );
}

#[tokio::test]
async fn bookings_go_on_while_nats_is_stopped_and_every_event_arrives_afterwards() {
    let services = Services::start().await.unwrap_or_else(|e| panic!("{e}"));
    let side = Arc::new(read_side(&services).await);
    for n in 0..10 {
        side.deposit(Uuid::new_v4(), n).await;
    }
    side.caught_up(Duration::from_secs(20)).await;
    services.nats.stop().await.unwrap_or_else(|e| panic!("{e}"));
    let stopped_at = Instant::now();
    // Writes never depend on NATS.
    let mut written = 0;
    while stopped_at.elapsed() < Duration::from_secs(10) {
        side.deposit(Uuid::new_v4(), 10 + written).await;
        written += 1;
        sleep(Duration::from_millis(50)).await;
    }
    assert!(
        written >= 50,
        "only {written} deposits in 10 s without NATS"
    );
    services
        .nats
        .start()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    for n in 0..10 {
        side.deposit(Uuid::new_v4(), 1000 + n).await;
    }
    side.caught_up(Duration::from_secs(60)).await;
    side.assert_exactly_once_in_order().await;
}

#[tokio::test]
async fn a_large_gap_is_filled_a_batch_at_a_time() {
    let mut side = read_side(services().await).await;
    side.start_projector_with(&SIZES, Duration::from_secs(3), 2);
    for n in 0..4 {
        side.deposit(Uuid::new_v4(), n).await;
    }
    let applied = |side: &ReadSide| {
        let read = side.read.clone();
        async move {
            read.checkpoint(SIZES.name)
                .await
                .unwrap_or_else(|e| panic!("{e}"))
                .applied
        }
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while applied(&side).await < 4 {
        assert!(Instant::now() < deadline, "the sizes projection is stuck");
        sleep(Duration::from_millis(20)).await;
    }
    // Stop it, publish 10 more, and lose 7 in a row of them.
    let projector = side
        .tasks
        .pop()
        .unwrap_or_else(|| panic!("no projector task"));
    projector.abort();
    let _ = projector.await;
    for n in 4..14 {
        side.deposit(Uuid::new_v4(), n).await;
    }
    let mut stream = side
        .topology
        .ensure_stream(&side.js)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let info = stream.info().await.unwrap_or_else(|e| panic!("{e}"));
        if info.state.messages >= 14 {
            break;
        }
        assert!(Instant::now() < deadline, "relay did not publish");
        sleep(Duration::from_millis(20)).await;
    }
    for lost in 6..=12 {
        assert!(stream
            .delete_message(lost)
            .await
            .unwrap_or_else(|e| panic!("{e}")));
    }
    sqlx::query("DELETE FROM read.sizes_batches")
        .execute(&side.db.pool)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    // No idle look at the event store for a minute: the message after the
    // lost ones reveals the gap, and it is read two events at a time.
    side.start_projector_with(&SIZES, Duration::from_secs(60), 2);
    let deadline = Instant::now() + Duration::from_secs(20);
    while applied(&side).await < 14 {
        assert!(Instant::now() < deadline, "the gap was not filled");
        sleep(Duration::from_millis(20)).await;
    }
    let pool = &side.db.pool;
    let (events, once): (i64, i64) =
        sqlx::query_as("SELECT count(*), count(*) FILTER (WHERE seen = 1) FROM read.sizes_events")
            .fetch_one(pool)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((events, once), (14, 14), "every event applied exactly once");
    let sizes: Vec<i32> = sqlx::query_scalar("SELECT size FROM read.sizes_batches")
        .fetch_all(pool)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        sizes.iter().map(|s| i64::from(*s)).sum::<i64>(),
        10,
        "{sizes:?}"
    );
    // A batch of messages (2) plus a batch of the gap (2) at most, never
    // the whole gap of 7 at once.
    assert!(sizes.iter().all(|s| *s <= 4), "{sizes:?}");
}

/// Another client holds a transaction open for 30 s after inserting an
/// event, while commands go on committing: the relay publishes nothing
/// committed after that transaction began (it cannot know whether a lower
/// position is still to come), then, once it commits, everything, the held
/// event included, exactly once and in order. On its own servers: holding
/// the cluster-wide horizon back would stall every other test's relay.
#[tokio::test]
async fn a_transaction_held_open_for_30_s_holds_the_relay_back_and_nothing_is_skipped() {
    let services = Services::start().await.unwrap_or_else(|e| panic!("{e}"));
    let side = read_side(&services).await;
    let pool = &side.db.pool;
    for n in 0..10 {
        side.deposit(Uuid::new_v4(), n).await;
    }
    side.caught_up(Duration::from_secs(20)).await;

    let held_patient = Uuid::new_v4();
    let mut held = pool.begin().await.unwrap_or_else(|e| panic!("{e}"));
    insert_wallet_event(&mut held, held_patient).await;
    let opened = Instant::now();
    let mut written = 0;
    while opened.elapsed() < Duration::from_secs(30) {
        side.deposit(Uuid::new_v4(), 100 + written).await;
        written += 1;
        sleep(Duration::from_millis(100)).await;
    }
    assert!(written >= 50, "only {written} deposits in 30 s");
    let relay = relay::checkpoint(pool)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        relay.published, 10,
        "the relay published past an open transaction"
    );
    let applied = side
        .read
        .checkpoint(TRACE.name)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        applied.applied, 10,
        "the projector read past an open transaction"
    );

    held.commit().await.unwrap_or_else(|e| panic!("{e}"));
    // The held event drew its position before every deposit made meanwhile.
    let (held_position, _) = position_and_xid(pool, held_patient).await;
    let later: i64 = sqlx::query_scalar("SELECT count(*) FROM events WHERE position > $1")
        .bind(held_position)
        .fetch_one(pool)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(later, i64::try_from(written).unwrap_or(i64::MAX));
    side.caught_up(Duration::from_secs(60)).await;
    side.assert_exactly_once_in_order().await;
}

/// A projector passes over the messages of kinds its projection does not
/// read: wallet deposits, a gap among them included, reach no apply (no
/// batch is recorded) while its checkpoint keeps up and counts them; the
/// clinic's events that follow are applied, each once.
#[tokio::test]
async fn a_projector_passes_over_kinds_it_does_not_read_and_keeps_its_checkpoint_up() {
    let mut side = read_side(services().await).await;
    side.start_projector_with(&CLINIC_SIZES, Duration::from_secs(60), 100);
    let pool = side.db.pool.clone();
    let within = Duration::from_secs(20);
    for n in 0..3 {
        side.deposit(Uuid::new_v4(), n).await;
    }
    side.caught_up_of(&CLINIC_SIZES, within).await;
    // A gap: messages lost in JetStream are read from the event store,
    // and passed over as well.
    for n in 3..8 {
        side.deposit(Uuid::new_v4(), n).await;
    }
    let mut stream = side
        .topology
        .ensure_stream(&side.js)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let info = stream.info().await.unwrap_or_else(|e| panic!("{e}"));
    let last = info.state.last_sequence;
    let _ = stream.delete_message(last).await;
    let _ = stream.delete_message(last - 1).await;
    side.deposit(Uuid::new_v4(), 8).await;
    side.caught_up_of(&CLINIC_SIZES, within).await;
    let batches: i64 = sqlx::query_scalar("SELECT count(*) FROM read.sizes_batches")
        .fetch_one(&pool)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        batches, 0,
        "a batch of wallet events reached the clinic projection's apply"
    );

    crate::common::clinic(&side.commands).await;
    let stored = side.caught_up_of(&CLINIC_SIZES, within).await;
    let (clinic_events, applied_once, applied): (i64, i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM events WHERE aggregate_type = 'Clinic'),
                (SELECT count(*) FROM read.sizes_events s JOIN events e USING (position)
                  WHERE e.aggregate_type = 'Clinic' AND s.seen = 1),
                (SELECT count(*) FROM read.sizes_events)",
    )
    .fetch_one(&pool)
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(clinic_events > 0 && stored > clinic_events);
    assert_eq!(
        (applied_once, applied),
        (clinic_events, clinic_events),
        "every clinic event applied once, nothing else"
    );
}
