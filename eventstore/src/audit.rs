//! Reading history back: a stream's stored events, and verification of
//! every hash chain.

use chrono::{DateTime, Utc};
use futures_util::TryStreamExt;
use serde::Serialize;
use sqlx::postgres::PgRow;
use sqlx::{PgPool, Row};

use crate::error::StoreError;
use crate::hash::{self, EventFields, Hash, GENESIS};

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

const COLUMNS: &str = "aggregate_type, aggregate_id, sequence, position, event_type, event_version,
    payload::text AS payload, metadata::text AS metadata, recorded_at, hash";

fn decode(row: &PgRow) -> Result<StoredEvent, StoreError> {
    let text = |column: &str| -> Result<serde_json::Value, StoreError> {
        let raw: String = row.try_get(column)?;
        serde_json::from_str(&raw).map_err(|source| StoreError::Serde {
            what: format!("stored {column}"),
            source,
        })
    };
    let aggregate_type: String = row.try_get("aggregate_type")?;
    let aggregate_id: String = row.try_get("aggregate_id")?;
    let event_type: String = row.try_get("event_type")?;
    let (event_version, payload, upcast_from) = crate::upcasting::current(
        &aggregate_type,
        &event_type,
        row.try_get("event_version")?,
        text("payload")?,
    )
    .map_err(|e| StoreError::Corrupt {
        aggregate_type: aggregate_type.clone(),
        aggregate_id: aggregate_id.clone(),
        reason: e.to_string(),
    })?;
    let hash: Vec<u8> = row.try_get("hash")?;
    Ok(StoredEvent {
        aggregate_type,
        aggregate_id,
        sequence: row.try_get("sequence")?,
        position: row.try_get("position")?,
        event_type,
        event_version,
        upcast_from,
        payload,
        metadata: text("metadata")?,
        recorded_at: row.try_get("recorded_at")?,
        hash: hex::encode(hash),
    })
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
    let sql = format!(
        "SELECT {COLUMNS} FROM events WHERE aggregate_type = $1 AND aggregate_id = $2 ORDER BY sequence"
    );
    let rows = sqlx::query(&sql)
        .bind(aggregate_type)
        .bind(aggregate_id)
        .fetch_all(pool)
        .await?;
    rows.iter().map(decode).collect()
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
    let rows = sqlx::query(&sql)
        .bind(after)
        .bind(filter.aggregate_type.as_deref())
        .bind(filter.actor.as_deref())
        .bind(limit)
        .fetch_all(pool)
        .await?;
    rows.iter().map(decode).collect()
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
    let mut rows = sqlx::query(
        "SELECT aggregate_type, aggregate_id, sequence, event_type, event_version,
                payload::text AS payload, metadata::text AS metadata, hash
           FROM events
          WHERE ($1::text IS NULL OR aggregate_type = $1)
            AND ($2::text IS NULL OR aggregate_id = $2)
          ORDER BY aggregate_type, aggregate_id, sequence",
    )
    .bind(aggregate_type)
    .bind(aggregate_id)
    .fetch(pool);

    let mut report = VerifyReport::default();
    let mut current: Option<(String, String)> = None;
    let mut previous: Hash = GENESIS;
    let mut expected_sequence = 1i64;
    let mut stream_broken = false;
    while let Some(row) = rows.try_next().await? {
        let ty: String = row.try_get("aggregate_type")?;
        let id: String = row.try_get("aggregate_id")?;
        let sequence: i64 = row.try_get("sequence")?;
        if current.as_ref() != Some(&(ty.clone(), id.clone())) {
            current = Some((ty.clone(), id.clone()));
            report.streams_checked += 1;
            previous = GENESIS;
            expected_sequence = 1;
            stream_broken = false;
        }
        report.events_checked += 1;
        if stream_broken {
            continue;
        }
        let event_type: String = row.try_get("event_type")?;
        let event_version: String = row.try_get("event_version")?;
        let payload: String = row.try_get("payload")?;
        let metadata: String = row.try_get("metadata")?;
        let stored: Vec<u8> = row.try_get("hash")?;
        let mut fail = |reason: String| {
            report.broken.push(BrokenLink {
                aggregate_type: ty.clone(),
                aggregate_id: id.clone(),
                sequence,
                reason,
            });
            stream_broken = true;
        };
        if sequence != expected_sequence {
            fail(format!(
                "expected sequence {expected_sequence}, found {sequence}"
            ));
            continue;
        }
        let computed = hash::chain(
            &previous,
            &EventFields {
                aggregate_type: &ty,
                aggregate_id: &id,
                sequence: u64::try_from(sequence).unwrap_or(0),
                event_type: &event_type,
                event_version: &event_version,
                payload: &payload,
                metadata: &metadata,
            },
        );
        if stored.as_slice() != computed.as_slice() {
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
