//! Rebuilds: replay the event store (not NATS) from the start into fresh
//! tables in a scratch schema, then swap them in while reads go on.
//!
//! The swap is one transaction: it locks the projection's checkpoint row
//! (the live projector waits), applies whatever was committed since the
//! replay's last batch, drops the live tables, moves the new ones into
//! `read` and sets the checkpoint to the replay's last event. Readers wait
//! for that transaction and then read the new tables; the live projector
//! then goes on from the new checkpoint, skipping what the rebuild applied.

use std::time::Duration;

use backon::{ExponentialBuilder, RetryableWithContext};
use clinicbook_eventstore::{feed, FeedEvent, FeedPoint};
use futures::StreamExt;
use sqlx::{ConnectOptions, Connection, PgConnection, Row};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::checkpoint::{apply_in, create_tables, ddl_hash, READ_SCHEMA};
use crate::{Projection, ProjectionError, ReadModels};

/// PostgreSQL's `lock_not_available` (a `NOWAIT` lock that was taken).
const LOCK_NOT_AVAILABLE: &str = "55P03";

/// Events per page while the swap catches up with what was committed
/// during the replay (on the swap's own transaction).
const CATCH_UP_BATCH: i64 = 5000;

/// What a rebuild did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rebuilt {
    /// Events applied.
    pub events: u64,
    /// The last event applied.
    pub point: FeedPoint,
}

/// One table's difference between two builds of a projection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TableDiff {
    /// Table name.
    pub table: String,
    /// Rows only in the first schema.
    pub only_in_first: i64,
    /// Rows only in the second schema.
    pub only_in_second: i64,
}

/// The scratch schema a projection is rebuilt in.
#[must_use]
pub fn scratch_schema(projection: &Projection) -> String {
    format!("rebuild_{}", projection.name)
}

/// Rebuilds `projection` from the event store and swaps the new tables in.
/// `progress` is called after every batch with the events applied so far.
///
/// # Errors
/// The database failed or an event could not be applied; the live tables
/// are then untouched.
pub async fn rebuild(
    read: &ReadModels,
    projection: &Projection,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<Rebuilt, ProjectionError> {
    let schema = scratch_schema(projection);
    let mut conn = read.pool().acquire().await?.detach();
    // One rebuild of a projection at a time (held until `conn` closes).
    sqlx::query("SELECT pg_advisory_lock(hashtext('clinicbook.rebuild.' || $1))")
        .bind(projection.name)
        .execute(&mut conn)
        .await?;
    let built = build_into(read, &mut conn, projection, &schema, progress).await?;
    let swapped = swap(&mut conn, projection, &schema, built).await?;
    read.availability_cache().clear();
    conn.close().await?;
    Ok(swapped)
}

/// Rebuilds `projection` (as [`rebuild`]) when its live tables were built
/// from another DDL than this version's: the hash in its checkpoint row
/// differs from [`ddl_hash`]. [`ReadModels::ensure_all`] runs it at start,
/// so a deployment whose tables changed shape (the `*_ns` columns that
/// went when instants became microseconds, a new column) brings them up
/// to date by itself, from the event store, before projectors start. Answers the rebuild, if one
/// was needed. Only the projections [`crate::projection`] knows are
/// rebuilt (the waitlist matcher's rows are work, not a view).
///
/// # Errors
/// The database failed or an event could not be applied; the live tables
/// are then untouched.
pub async fn rebuild_if_stale(
    read: &ReadModels,
    projection: &Projection,
) -> Result<Option<Rebuilt>, ProjectionError> {
    if crate::projection(projection.name).is_none() {
        return Ok(None);
    }
    let built_with: Option<String> =
        sqlx::query_scalar("SELECT ddl_hash FROM read.checkpoints WHERE projection = $1")
            .bind(projection.name)
            .fetch_optional(read.pool())
            .await?;
    if built_with.is_none_or(|hash| hash == ddl_hash(projection)) {
        return Ok(None);
    }
    tracing::warn!(
        projection = projection.name,
        "its tables were built by another version; rebuilding them from the event store"
    );
    rebuild(read, projection, &|_| {}).await.map(Some)
}

/// Builds `projection` from the event store into `schema`, which is
/// dropped first if it exists, on `conn`; the feed is read on a second
/// connection to `read`'s database. Answers what it applied.
///
/// # Errors
/// The database failed or an event could not be applied.
pub async fn build_into(
    read: &ReadModels,
    conn: &mut PgConnection,
    projection: &Projection,
    schema: &str,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<Rebuilt, ProjectionError> {
    build_until(read, conn, projection, schema, None, progress).await
}

/// [`build_into`], stopping after the event at `until` when given.
///
/// The feed is one streamed statement ([`feed::stream_after`]) on its own
/// connection, decoded by its own task a batch ahead of the applies, so
/// reading and decoding the next batch overlaps applying this one.
async fn build_until(
    read: &ReadModels,
    conn: &mut PgConnection,
    projection: &Projection,
    schema: &str,
    until: Option<FeedPoint>,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<Rebuilt, ProjectionError> {
    let quoted = quote(schema);
    let mut tx = conn.begin().await?;
    sqlx::raw_sql(&format!(
        "DROP SCHEMA IF EXISTS {quoted} CASCADE; CREATE SCHEMA {quoted};"
    ))
    .execute(&mut *tx)
    .await?;
    create_tables(&mut tx, schema, projection).await?;
    tx.commit().await?;
    let mut built = Rebuilt {
        events: 0,
        point: FeedPoint::START,
    };
    // Its own session, outside the pool (no pool slot held for the whole
    // replay), with the pool's settings but no slow-statement warning:
    // the one statement lasts as long as the replay, by design.
    let options = read
        .pool()
        .connect_options()
        .as_ref()
        .clone()
        .disable_statement_logging();
    let feed = PgConnection::connect_with(&options).await?;
    let (batches, mut next) = mpsc::channel(FEED_AHEAD);
    let mut reader = AbortOnDrop(tokio::spawn(read_feed(feed, built.point, until, batches)));
    while let Some(events) = next.recv().await {
        let events = events?;
        let Some(last) = events.last().map(FeedEvent::point) else {
            continue;
        };
        let mut tx = conn.begin().await?;
        // The scratch tables are thrown away if the rebuild dies, so a
        // batch need not wait for its WAL to reach the disk; the swap
        // commits as usual.
        sqlx::query("SET LOCAL synchronous_commit = off")
            .execute(&mut *tx)
            .await?;
        apply_in(&mut tx, schema, projection, &events).await?;
        tx.commit().await?;
        built.point = last;
        built.events += events.len() as u64;
        progress(built.events);
    }
    // The channel closed: the reader ended, with every batch sent.
    match (&mut reader.0).await {
        Ok(()) => Ok(built),
        Err(e) => Err(ProjectionError::Invalid {
            field: "rebuild",
            reason: format!("the feed reader failed: {e}"),
        }),
    }
}

/// Events per batch a rebuild applies in one transaction.
const REPLAY_BATCH: usize = 5000;

/// Batches the feed reader may decode ahead of the applies.
const FEED_AHEAD: usize = 2;

/// A task aborted when its handle is dropped (a failed apply stops the
/// feed reader rather than let it stream the rest of the table).
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Streams the feed after `after` (up to `until`) on `conn` and sends it
/// in batches of [`REPLAY_BATCH`] events; a failure is sent as the last
/// item. Ends when the feed does or the receiver is gone.
async fn read_feed(
    mut conn: PgConnection,
    after: FeedPoint,
    until: Option<FeedPoint>,
    batches: mpsc::Sender<Result<Vec<FeedEvent>, ProjectionError>>,
) {
    let mut events = feed::stream_after(&mut conn, after, until);
    let mut batch = Vec::with_capacity(REPLAY_BATCH);
    loop {
        match events.next().await {
            Some(Ok(event)) => {
                batch.push(event);
                if batch.len() < REPLAY_BATCH {
                    continue;
                }
            }
            Some(Err(e)) => {
                let _ = batches.send(Err(e.into())).await;
                return;
            }
            None => break,
        }
        let full = std::mem::replace(&mut batch, Vec::with_capacity(REPLAY_BATCH));
        if batches.send(Ok(full)).await.is_err() {
            return;
        }
    }
    drop(events);
    if !batch.is_empty() && batches.send(Ok(batch)).await.is_err() {
        return;
    }
    // Closed politely; a failure to close leaves nothing behind.
    let _ = conn.close().await;
}

/// Applies the next page of the feed after `built.point` to `schema`, on
/// the swap's transaction; answers how many events it applied.
async fn catch_up_page(
    conn: &mut PgConnection,
    projection: &Projection,
    schema: &str,
    built: &mut Rebuilt,
) -> Result<usize, ProjectionError> {
    let events = feed::read_after(&mut *conn, built.point, CATCH_UP_BATCH).await?;
    let Some(last) = events.last().map(FeedEvent::point) else {
        return Ok(0);
    };
    apply_in(conn, schema, projection, &events).await?;
    built.point = last;
    built.events += events.len() as u64;
    Ok(events.len())
}

async fn swap<'c>(
    conn: &'c mut PgConnection,
    projection: &Projection,
    schema: &str,
    built: Rebuilt,
) -> Result<Rebuilt, ProjectionError> {
    // A reader holds a live table: let go and try again shortly.
    let retry = ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(5))
        .with_max_delay(Duration::from_millis(200))
        .without_max_times();
    let attempt = |conn: &'c mut PgConnection| async move {
        let swapped = try_swap(&mut *conn, projection, schema, built).await;
        (conn, swapped)
    };
    let (_, swapped) = attempt
        .retry(retry)
        .context(conn)
        .when(|failed| matches!(failed, SwapFailed::Busy))
        .await;
    swapped.map_err(|failed| match failed {
        SwapFailed::Failed(e) => e,
        // Never retried to the end: the policy has no limit.
        SwapFailed::Busy => ProjectionError::Invalid {
            field: "rebuild",
            reason: "the live tables stayed locked".to_owned(),
        },
    })
}

/// Why one try of [`swap`] did not swap.
enum SwapFailed {
    /// A reader holds a live table: worth another try.
    Busy,
    /// Final.
    Failed(ProjectionError),
}

impl<E: Into<ProjectionError>> From<E> for SwapFailed {
    fn from(e: E) -> Self {
        SwapFailed::Failed(e.into())
    }
}

/// One try of [`swap`], in one transaction.
async fn try_swap(
    conn: &mut PgConnection,
    projection: &Projection,
    schema: &str,
    mut built: Rebuilt,
) -> Result<Rebuilt, SwapFailed> {
    let mut tx = conn.begin().await?;
    sqlx::query(
        "INSERT INTO read.checkpoints (projection) VALUES ($1) ON CONFLICT (projection) DO NOTHING",
    )
    .bind(projection.name)
    .execute(&mut *tx)
    .await?;
    sqlx::query("SELECT 1 FROM read.checkpoints WHERE projection = $1 FOR UPDATE")
        .bind(projection.name)
        .execute(&mut *tx)
        .await?;
    // Every live table at once, without waiting: a reader's transaction
    // holds its tables until it ends, so waiting for them one by one
    // could deadlock with a reader that reads them in another order.
    // When a reader holds one, let go and try again shortly.
    let new_tables = tables(&mut tx, schema).await?;
    let live: Vec<String> = tables(&mut tx, READ_SCHEMA)
        .await?
        .into_iter()
        .filter(|table| new_tables.contains(table))
        .map(|table| format!("{READ_SCHEMA}.{}", quote(&table)))
        .collect();
    if !live.is_empty() {
        let locked = sqlx::raw_sql(&format!(
            "LOCK TABLE {} IN ACCESS EXCLUSIVE MODE NOWAIT",
            live.join(", ")
        ))
        .execute(&mut *tx)
        .await;
        match locked {
            Ok(_) => {}
            Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some(LOCK_NOT_AVAILABLE) => {
                tx.rollback().await?;
                return Err(SwapFailed::Busy);
            }
            Err(e) => return Err(ProjectionError::from(e).into()),
        }
    }
    // The live projector is held: bring the new tables to the head.
    while catch_up_page(&mut tx, projection, schema, &mut built).await? > 0 {}
    for table in &new_tables {
        let table = quote(table);
        sqlx::raw_sql(&format!(
            "DROP TABLE IF EXISTS {READ_SCHEMA}.{table} CASCADE;
             ALTER TABLE {}.{table} SET SCHEMA {READ_SCHEMA};",
            quote(schema)
        ))
        .execute(&mut *tx)
        .await?;
    }
    sqlx::query(
        "UPDATE read.checkpoints
            SET transaction_id = $2, position = $3, applied = $4, ddl_hash = $5, updated_at = now()
          WHERE projection = $1",
    )
    .bind(projection.name)
    .bind(built.point.transaction_id)
    .bind(built.point.position)
    .bind(i64::try_from(built.events).unwrap_or(i64::MAX))
    .bind(ddl_hash(projection))
    .execute(&mut *tx)
    .await?;
    sqlx::raw_sql(&format!("DROP SCHEMA {} CASCADE", quote(schema)))
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(built)
}

/// The tables of `schema`, by name.
async fn tables(conn: &mut PgConnection, schema: &str) -> Result<Vec<String>, ProjectionError> {
    let rows = sqlx::query("SELECT tablename FROM pg_tables WHERE schemaname = $1 ORDER BY 1")
        .bind(schema)
        .fetch_all(conn)
        .await?;
    rows.iter()
        .map(|row| row.try_get("tablename").map_err(ProjectionError::from))
        .collect()
}

/// Compares every table of `projection` built in schema `first` with the
/// same table in `second`, row by row (as text, duplicates counted);
/// answers the tables that differ.
///
/// # Errors
/// The database failed (a table missing from `second` among them).
pub async fn diff(
    read: &ReadModels,
    first: &str,
    second: &str,
) -> Result<Vec<TableDiff>, ProjectionError> {
    let mut conn = read.pool().acquire().await?;
    let mut diffs = Vec::new();
    for table in tables(&mut conn, first).await? {
        let (a, b, t) = (quote(first), quote(second), quote(&table));
        let row = sqlx::query(&format!(
            "SELECT
               (SELECT count(*) FROM (SELECT x::text FROM {a}.{t} x
                                      EXCEPT ALL SELECT y::text FROM {b}.{t} y) d) AS only_first,
               (SELECT count(*) FROM (SELECT y::text FROM {b}.{t} y
                                      EXCEPT ALL SELECT x::text FROM {a}.{t} x) d) AS only_second"
        ))
        .fetch_one(&mut *conn)
        .await?;
        let only_in_first: i64 = row.try_get("only_first")?;
        let only_in_second: i64 = row.try_get("only_second")?;
        if only_in_first != 0 || only_in_second != 0 {
            diffs.push(TableDiff {
                table,
                only_in_first,
                only_in_second,
            });
        }
    }
    Ok(diffs)
}

/// Rebuilds `projection` into `schema` (a scratch schema; dropped first if
/// it exists) up to exactly the live projection's checkpoint, without
/// touching the live tables, and compares the result with the live tables
/// in `read`. The live projector is held (its checkpoint row locked) for
/// the duration, so the two builds are compared at one point of the feed.
/// The scratch schema is dropped after.
///
/// # Errors
/// The database failed or an event could not be applied.
pub async fn check_against_live(
    read: &ReadModels,
    projection: &Projection,
    schema: &str,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<(Rebuilt, Vec<TableDiff>), ProjectionError> {
    let mut hold = read.pool().begin().await?;
    let live = sqlx::query(
        "SELECT transaction_id, position FROM read.checkpoints WHERE projection = $1 FOR SHARE",
    )
    .bind(projection.name)
    .fetch_optional(&mut *hold)
    .await?
    .map(|row| -> Result<FeedPoint, sqlx::Error> {
        Ok(FeedPoint {
            transaction_id: row.try_get("transaction_id")?,
            position: row.try_get("position")?,
        })
    })
    .transpose()?
    .ok_or_else(|| ProjectionError::UnknownProjection(projection.name.to_owned()))?;
    let mut conn = read.pool().acquire().await?.detach();
    let built = build_until(read, &mut conn, projection, schema, Some(live), progress).await?;
    let diffs = diff(read, schema, READ_SCHEMA).await;
    sqlx::raw_sql(&format!("DROP SCHEMA IF EXISTS {} CASCADE", quote(schema)))
        .execute(&mut conn)
        .await?;
    conn.close().await?;
    hold.commit().await?;
    Ok((built, diffs?))
}

/// A quoted SQL identifier.
fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}
