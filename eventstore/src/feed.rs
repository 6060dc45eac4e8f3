//! The committed feed: every event in `(transaction_id, position)` order,
//! read only below the horizon of running transactions.
//!
//! Identity values are taken when a row is inserted, not when its
//! transaction commits, so `position` order alone skips events: a
//! transaction that took its id early but inserted late has a lower
//! transaction id and a higher position. The feed reads only rows whose
//! transaction id is below `pg_snapshot_xmin(pg_current_snapshot())` — every
//! transaction below it has ended — and orders them by the pair, so a row
//! can never appear later behind a reader's checkpoint. The relay publishes
//! this feed; projectors fill gaps and rebuilds replay from it.

use std::cmp::Ordering;
use std::sync::LazyLock;

use chrono::{DateTime, Utc};
use clinicbook_domain::AggregateKind;
use futures_util::stream::{BoxStream, StreamExt};
use serde::{Deserialize, Serialize};
use sqlx::{PgConnection, PgExecutor, Row};

use crate::error::StoreError;
use crate::row::{EventRow, COLUMNS};

/// A place in the feed: the pair of the last event read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct FeedPoint {
    /// Id of the transaction that wrote the event (`xid8` as a number).
    pub transaction_id: i64,
    /// The event's global position.
    pub position: i64,
}

impl FeedPoint {
    /// The start of the feed, before any event.
    pub const START: FeedPoint = FeedPoint {
        transaction_id: 0,
        position: 0,
    };
}

impl PartialOrd for FeedPoint {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for FeedPoint {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.transaction_id, self.position).cmp(&(other.transaction_id, other.position))
    }
}

/// One committed event as the relay publishes it and projectors apply it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FeedEvent {
    /// Global position (`events.position`).
    pub position: i64,
    /// Writing transaction's id.
    pub transaction_id: i64,
    /// Aggregate type (`Reservation`, ...).
    pub aggregate_type: String,
    /// Aggregate id.
    pub aggregate_id: String,
    /// Sequence in its stream, from 1.
    pub sequence: i64,
    /// Event type (the event enum's variant name).
    pub event_type: String,
    /// Event version (semantic version): always the current one, older
    /// stored versions are upcast on reading.
    pub event_version: String,
    /// The event, as the domain serialises it (`{"Variant": {...}}`).
    pub payload: serde_json::Value,
    /// Command metadata stored with it (a flat map of strings).
    pub metadata: serde_json::Value,
    /// When it was recorded.
    pub recorded_at: DateTime<Utc>,
}

impl FeedEvent {
    /// Its place in the feed.
    #[must_use]
    pub fn point(&self) -> FeedPoint {
        FeedPoint {
            transaction_id: self.transaction_id,
            position: self.position,
        }
    }

    /// The aggregate type it belongs to (`None` for a type this release
    /// does not know).
    #[must_use]
    pub fn kind(&self) -> Option<AggregateKind> {
        self.aggregate_type.parse().ok()
    }

    /// The body of the event's variant: `payload[event_type]`, or the whole
    /// payload when it is not wrapped in its variant name.
    #[must_use]
    pub fn body(&self) -> &serde_json::Value {
        self.payload.get(&self.event_type).unwrap_or(&self.payload)
    }
}

impl TryFrom<EventRow> for FeedEvent {
    type Error = StoreError;

    /// Projectors only ever see the current version of an event.
    fn try_from(row: EventRow) -> Result<Self, StoreError> {
        let (event_version, payload, _) = row.current()?;
        Ok(FeedEvent {
            metadata: row.json("metadata", &row.metadata)?,
            position: row.position,
            transaction_id: row.transaction_id,
            aggregate_type: row.aggregate_type,
            aggregate_id: row.aggregate_id,
            sequence: row.sequence,
            event_type: row.event_type,
            event_version,
            payload,
            recorded_at: row.recorded_at,
        })
    }
}

/// Rows in feed order, as feed events.
fn decode(rows: Vec<EventRow>) -> Result<Vec<FeedEvent>, StoreError> {
    rows.into_iter().map(FeedEvent::try_from).collect()
}

/// Up to `limit` committed events after `after`, in feed order.
///
/// # Errors
/// The database failed or a stored text is not JSON.
pub async fn read_after<'e>(
    executor: impl PgExecutor<'e>,
    after: FeedPoint,
    limit: i64,
) -> Result<Vec<FeedEvent>, StoreError> {
    read_range(executor, after, None, limit).await
}

/// Up to `limit` of the committed events strictly between `after` and
/// `before`, in feed order: what a projector missed when a message arrives
/// whose predecessor it has not seen. A gap larger than `limit` is read a
/// batch at a time, each starting after the last event of the one before.
///
/// # Errors
/// The database failed or a stored text is not JSON.
pub async fn read_between<'e>(
    executor: impl PgExecutor<'e>,
    after: FeedPoint,
    before: FeedPoint,
    limit: i64,
) -> Result<Vec<FeedEvent>, StoreError> {
    read_range(executor, after, Some(before), limit.max(1)).await
}

/// Up to `limit` committed events after `after` (and before `before`, when
/// given), in feed order. Without an upper bound the statement names none,
/// so the plan of the common read is the one of a plain range scan.
async fn read_range<'e>(
    executor: impl PgExecutor<'e>,
    after: FeedPoint,
    before: Option<FeedPoint>,
    limit: i64,
) -> Result<Vec<FeedEvent>, StoreError> {
    let (upper, limit_param) = match before {
        Some(_) => (
            "AND (transaction_id, position) < ($3::text::xid8, $4)",
            "$5",
        ),
        None => ("", "$3"),
    };
    let sql = format!(
        "SELECT {COLUMNS} FROM events
          WHERE (transaction_id, position) > ($1::text::xid8, $2)
            {upper}
            AND transaction_id < pg_snapshot_xmin(pg_current_snapshot())
          ORDER BY events.transaction_id, events.position
          LIMIT {limit_param}"
    );
    let mut query = sqlx::query_as(&sql)
        .bind(after.transaction_id)
        .bind(after.position);
    if let Some(before) = before {
        query = query.bind(before.transaction_id).bind(before.position);
    }
    let rows = query.bind(limit).fetch_all(executor).await?;
    decode(rows)
}

/// The statement of [`stream_after`] without and with an upper bound.
static STREAM: LazyLock<[String; 2]> = LazyLock::new(|| {
    let sql = |upper: &str| {
        format!(
            "SELECT {COLUMNS} FROM events
              WHERE (transaction_id, position) > ($1::text::xid8, $2)
                {upper}
                AND transaction_id < pg_snapshot_xmin(pg_current_snapshot())
              ORDER BY events.transaction_id, events.position"
        )
    };
    [
        sql(""),
        sql("AND (transaction_id, position) <= ($3::text::xid8, $4)"),
    ]
});

/// Every committed event after `after` (up to and including `until`, when
/// given), in feed order, as one statement whose rows are decoded as they
/// arrive: what a rebuild replays. One statement sees one snapshot, so the
/// horizon is taken once and no page boundary is looked up again deeper
/// in the table (keyset pages of [`read_after`] each start with an index
/// descent and a new plan). The connection is busy until the stream ends
/// or is dropped.
///
/// # Errors
/// Each item: the database failed or a stored text is not JSON.
pub fn stream_after<'c>(
    conn: &'c mut PgConnection,
    after: FeedPoint,
    until: Option<FeedPoint>,
) -> BoxStream<'c, Result<FeedEvent, StoreError>> {
    let sql = &STREAM[usize::from(until.is_some())];
    let mut query = sqlx::query_as::<_, EventRow>(sql)
        .bind(after.transaction_id)
        .bind(after.position);
    if let Some(until) = until {
        query = query.bind(until.transaction_id).bind(until.position);
    }
    query
        .fetch(conn)
        .map(|row| FeedEvent::try_from(row?))
        .boxed()
}

/// The feed point of the event at `position`, if it is committed and below
/// the horizon (so every event before it in the feed is readable too).
///
/// # Errors
/// The database failed.
pub async fn point_of<'e>(
    executor: impl PgExecutor<'e>,
    position: i64,
) -> Result<Option<FeedPoint>, StoreError> {
    let row = sqlx::query(
        "SELECT transaction_id::text::bigint AS transaction_id FROM events
          WHERE position = $1 AND transaction_id < pg_snapshot_xmin(pg_current_snapshot())",
    )
    .bind(position)
    .fetch_optional(executor)
    .await?;
    row.map(|row| {
        Ok(FeedPoint {
            transaction_id: row.try_get("transaction_id")?,
            position,
        })
    })
    .transpose()
}

/// The last point of the committed feed (below the horizon), or
/// [`FeedPoint::START`] when there is none.
///
/// # Errors
/// The database failed.
pub async fn head<'e>(executor: impl PgExecutor<'e>) -> Result<FeedPoint, StoreError> {
    let row = sqlx::query(
        "SELECT transaction_id::text::bigint AS transaction_id, position FROM events
          WHERE transaction_id < pg_snapshot_xmin(pg_current_snapshot())
          ORDER BY events.transaction_id DESC, events.position DESC LIMIT 1",
    )
    .fetch_optional(executor)
    .await?;
    match row {
        Some(row) => Ok(FeedPoint {
            transaction_id: row.try_get("transaction_id")?,
            position: row.try_get("position")?,
        }),
        None => Ok(FeedPoint::START),
    }
}
