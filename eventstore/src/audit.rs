//! Reading history back: a stream's stored events, and verification of
//! every hash chain.

use chrono::{DateTime, Utc};
use futures_util::TryStreamExt;
use serde::Serialize;
use sqlx::PgPool;

use crate::error::StoreError;
use crate::hash::{self, Hash, GENESIS};
use crate::row::{EventRow, COLUMNS};

/// One stored event, as auditors see it: in its current version (older
/// stored versions are upcast, `upcast_from` then names the stored one; the
/// hash covers the stored bytes).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct StoredEvent {
    /// Aggregate type.
    pub aggregate_type: String,
    /// Aggregate id.
    pub aggregate_id: String,
    /// Sequence in the stream.
    pub sequence: i64,
    /// Global position.
    pub position: i64,
    /// Event type.
    pub event_type: String,
    /// Event version (the current one).
    pub event_version: String,
    /// The version as stored, when the event was upcast from it.
    pub upcast_from: Option<String>,
    /// Payload.
    pub payload: serde_json::Value,
    /// Metadata.
    pub metadata: serde_json::Value,
    /// When it was recorded.
    pub recorded_at: DateTime<Utc>,
    /// Its chain hash, hex.
    pub hash: String,
}

impl TryFrom<EventRow> for StoredEvent {
    type Error = StoreError;

    fn try_from(row: EventRow) -> Result<Self, StoreError> {
        let (event_version, payload, upcast_from) = row.current()?;
        Ok(StoredEvent {
            metadata: row.json("metadata", &row.metadata)?,
            hash: hex::encode(&row.hash),
            aggregate_type: row.aggregate_type,
            aggregate_id: row.aggregate_id,
            sequence: row.sequence,
            position: row.position,
            event_type: row.event_type,
            event_version,
            upcast_from,
            payload,
            recorded_at: row.recorded_at,
        })
    }
}

/// The stored rows of one stream in sequence order.
pub(crate) async fn stream_rows(
    pool: &PgPool,
    aggregate_type: &str,
    aggregate_id: &str,
) -> Result<Vec<EventRow>, StoreError> {
    let sql = format!(
        "SELECT {COLUMNS} FROM events WHERE aggregate_type = $1 AND aggregate_id = $2 ORDER BY sequence"
    );
    Ok(sqlx::query_as(&sql)
        .bind(aggregate_type)
        .bind(aggregate_id)
        .fetch_all(pool)
        .await?)
}

/// The events of one stream in sequence order, in their current version.
///
/// # Errors
/// The database failed, a stored text is not JSON, or an old event cannot
/// be upcast.
pub async fn stream_events(
    pool: &PgPool,
    aggregate_type: &str,
    aggregate_id: &str,
) -> Result<Vec<StoredEvent>, StoreError> {
    stream_rows(pool, aggregate_type, aggregate_id)
        .await?
        .into_iter()
        .map(StoredEvent::try_from)
        .collect()
}

/// Filters of [`events_after`].
#[derive(Clone, Debug, Default)]
pub struct EventFilter {
    /// Only events of this aggregate type.
    pub aggregate_type: Option<String>,
    /// Only events of commands by this subject (metadata `actor`).
    pub actor: Option<String>,
}

/// Up to `limit` events with a position above `after`, in position order,
/// matching `filter`: the global history, a page at a time.
///
/// Only events of transactions below the horizon of running transactions
/// are returned (identity values are taken before commit, so a running
/// transaction may still commit a lower position); they appear on a later
/// page once it ends, never behind a page already read.
///
/// # Errors
/// The database failed, a stored text is not JSON, or an old event cannot
/// be upcast.
pub async fn events_after(
    pool: &PgPool,
    after: i64,
    limit: i64,
    filter: &EventFilter,
) -> Result<Vec<StoredEvent>, StoreError> {
    let sql = format!(
        "SELECT {COLUMNS} FROM events
          WHERE position > $1
            AND transaction_id < pg_snapshot_xmin(pg_current_snapshot())
            AND ($2::text IS NULL OR aggregate_type = $2)
            AND ($3::text IS NULL OR metadata->>'actor' = $3)
          ORDER BY position
          LIMIT $4"
    );
    let rows: Vec<EventRow> = sqlx::query_as(&sql)
        .bind(after)
        .bind(filter.aggregate_type.as_deref())
        .bind(filter.actor.as_deref())
        .bind(limit)
        .fetch_all(pool)
        .await?;
    rows.into_iter().map(StoredEvent::try_from).collect()
}

/// A place where a hash chain does not hold.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct BrokenLink {
    /// Aggregate type.
    pub aggregate_type: String,
    /// Aggregate id.
    pub aggregate_id: String,
    /// The first sequence at which the stream stops verifying.
    pub sequence: i64,
    /// What is wrong there.
    pub reason: String,
}

/// The result of a verification.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct VerifyReport {
    /// True when every chain holds.
    pub ok: bool,
    /// Streams read.
    pub streams_checked: u64,
    /// Events read.
    pub events_checked: u64,
    /// The first broken link of each broken stream.
    pub broken: Vec<BrokenLink>,
}

/// Recomputes the hash chain of every stream matching the filters (all
/// streams when both are `None`): each stream must start at sequence 1,
/// have no gaps, and every stored hash must equal the recomputed one.
///
/// # Errors
/// The database failed.
pub async fn verify(
    pool: &PgPool,
    aggregate_type: Option<&str>,
    aggregate_id: Option<&str>,
) -> Result<VerifyReport, StoreError> {
    let sql = format!(
        "SELECT {COLUMNS} FROM events
          WHERE ($1::text IS NULL OR aggregate_type = $1)
            AND ($2::text IS NULL OR aggregate_id = $2)
          ORDER BY aggregate_type, aggregate_id, sequence"
    );
    let mut rows = sqlx::query_as::<_, EventRow>(&sql)
        .bind(aggregate_type)
        .bind(aggregate_id)
        .fetch(pool);

    let mut report = VerifyReport::default();
    let mut current: Option<(String, String)> = None;
    let mut previous: Hash = GENESIS;
    let mut expected_sequence = 1i64;
    let mut stream_broken = false;
    while let Some(row) = rows.try_next().await? {
        let stream = (row.aggregate_type.clone(), row.aggregate_id.clone());
        if current.as_ref() != Some(&stream) {
            current = Some(stream);
            report.streams_checked += 1;
            previous = GENESIS;
            expected_sequence = 1;
            stream_broken = false;
        }
        report.events_checked += 1;
        if stream_broken {
            continue;
        }
        let mut fail = |reason: String| {
            report.broken.push(BrokenLink {
                aggregate_type: row.aggregate_type.clone(),
                aggregate_id: row.aggregate_id.clone(),
                sequence: row.sequence,
                reason,
            });
            stream_broken = true;
        };
        if row.sequence != expected_sequence {
            fail(format!(
                "expected sequence {expected_sequence}, found {}",
                row.sequence
            ));
            continue;
        }
        let computed = match row.fields() {
            Ok(fields) => hash::chain(&previous, &fields),
            Err(e) => {
                fail(e.to_string());
                continue;
            }
        };
        if row.hash.as_slice() != computed.as_slice() {
            fail("stored hash does not match the event's contents and predecessor".to_string());
            continue;
        }
        previous = computed;
        expected_sequence += 1;
    }
    report.ok = report.broken.is_empty();
    Ok(report)
}

/// Number of stored events and the highest position (0 when empty), for
/// tools and tests that check what a request wrote.
///
/// # Errors
/// The database failed.
pub async fn totals(pool: &PgPool) -> Result<(i64, i64), StoreError> {
    let row: (i64, i64) = sqlx::query_as("SELECT count(*), COALESCE(max(position), 0) FROM events")
        .fetch_one(pool)
        .await?;
    Ok(row)
}

/// Number of streams of each aggregate type, for tools that describe a
/// store.
///
/// # Errors
/// The database failed.
pub async fn stream_counts(pool: &PgPool) -> Result<Vec<(String, i64)>, StoreError> {
    let rows = sqlx::query_as(
        "SELECT aggregate_type, count(*) FROM events WHERE sequence = 1
          GROUP BY aggregate_type ORDER BY aggregate_type",
    )
    .fetch_all(pool)
    .await?;
    Ok(rows)
}
