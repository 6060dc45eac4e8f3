//! Reading history back: a stream's stored events, and verification of
//! every hash chain.

use chrono::{DateTime, Utc};
use futures_util::TryStreamExt;
use serde::Serialize;
use sqlx::{PgPool, Row};

use crate::error::StoreError;
use crate::feed::FeedPoint;
use crate::hash::{self, ChainVersion, Hash, GENESIS};
use crate::row::{EventRow, COLUMNS};

/// One stored event as auditors see it, in its current version.
#[derive(Clone, Debug, PartialEq, Serialize, serde::Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(as = AuditEvent))]
pub struct StoredEvent {
    /// Aggregate type (`Reservation`, ...).
    pub aggregate_type: String,
    /// Aggregate id.
    pub aggregate_id: String,
    /// Sequence in its stream, from 1.
    pub sequence: i64,
    /// Global position.
    pub position: i64,
    /// Event type.
    pub event_type: String,
    /// Event version, the current one for its type.
    pub event_version: String,
    /// The version as stored, when an older stored version was upcast to
    /// `event_version` for reading (the hash covers the stored bytes).
    pub upcast_from: Option<String>,
    /// The event: `{"Variant": {...}}`, or `"Variant"` for one without
    /// fields.
    pub payload: serde_json::Value,
    /// The command's metadata: `command_id`, `correlation_id`,
    /// `causation_id`, `actor` (the token's `sub`), `actor_role`,
    /// `request_id`, `command`, `recorded_at`.
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub metadata: serde_json::Value,
    /// When the database recorded it (UTC).
    pub recorded_at: DateTime<Utc>,
    /// Its hash in the stream's chain, hex.
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

/// Up to `limit` events after the feed point `after`, in feed order
/// (`(transaction_id, position)`), matching `filter`: the global history, a
/// page at a time.
///
/// Only events of transactions below the horizon of running transactions
/// are returned, in the relay's order: identity values are taken before
/// commit, so paging by position alone would skip a transaction that drew a
/// lower position and committed after a page was read. In feed order such
/// an event always comes after every page already read.
///
/// # Errors
/// The database failed, a stored text is not JSON, or an old event cannot
/// be upcast.
pub async fn events_after(
    pool: &PgPool,
    after: FeedPoint,
    limit: i64,
    filter: &EventFilter,
) -> Result<Vec<AuditedEvent>, StoreError> {
    let sql = format!(
        "SELECT {COLUMNS} FROM events
          WHERE (transaction_id, position) > ($1::text::xid8, $2)
            AND transaction_id < pg_snapshot_xmin(pg_current_snapshot())
            AND ($3::text IS NULL OR aggregate_type = $3)
            AND ($4::text IS NULL OR metadata->>'actor' = $4)
          ORDER BY events.transaction_id, events.position
          LIMIT $5"
    );
    let rows: Vec<EventRow> = sqlx::query_as(&sql)
        .bind(after.transaction_id)
        .bind(after.position)
        .bind(filter.aggregate_type.as_deref())
        .bind(filter.actor.as_deref())
        .bind(limit)
        .fetch_all(pool)
        .await?;
    rows.into_iter()
        .map(|row| {
            Ok(AuditedEvent {
                point: FeedPoint {
                    transaction_id: row.transaction_id,
                    position: row.position,
                },
                event: StoredEvent::try_from(row)?,
            })
        })
        .collect()
}

/// An event of the global history with its place in the feed.
#[derive(Clone, Debug, PartialEq)]
pub struct AuditedEvent {
    /// The event.
    pub event: StoredEvent,
    /// Where it is in the feed: pass the last one as `after` for the next page.
    pub point: FeedPoint,
}

/// The feed point to resume from for a client that paged by position alone
/// and has read up to `position`: just before the first event above it in
/// feed order, and never past a running transaction. Nothing the client has
/// not seen is skipped; events of its last pages may come again.
///
/// # Errors
/// The database failed.
pub async fn resume_after_position(pool: &PgPool, position: i64) -> Result<FeedPoint, StoreError> {
    let row = sqlx::query(
        "SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint AS horizon,
                f.transaction_id, f.position
           FROM (SELECT 1) AS one
           LEFT JOIN LATERAL (
                SELECT transaction_id::text::bigint AS transaction_id, position FROM events
                 WHERE position > $1
                   AND transaction_id < pg_snapshot_xmin(pg_current_snapshot())
                 ORDER BY events.transaction_id, events.position LIMIT 1) AS f ON true",
    )
    .bind(position)
    .fetch_one(pool)
    .await?;
    // Any transaction still running or yet to come has an id at or above
    // the horizon: just before all of its events.
    let horizon = FeedPoint {
        transaction_id: row.try_get("horizon")?,
        position: 0,
    };
    let first: Option<i64> = row.try_get("transaction_id")?;
    Ok(match first {
        Some(transaction_id) => {
            let first_position: i64 = row.try_get("position")?;
            horizon.min(FeedPoint {
                transaction_id,
                position: first_position - 1,
            })
        }
        None => horizon,
    })
}

/// A stream that does not check out, and where: its hash chain breaks
/// ([`verify`], a checkpoint's streams), or its replay disagrees with what
/// is stored or fails ([`crate::replay::check_all`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct StreamProblem {
    /// Aggregate type.
    pub aggregate_type: String,
    /// Aggregate id.
    pub aggregate_id: String,
    /// The sequence where it shows: the first that stops verifying, the
    /// failing event, the snapshot's sequence, or the stream's last.
    pub sequence: i64,
    /// What is wrong there.
    pub reason: String,
}

impl StreamProblem {
    /// The problem `reason` of the stream `aggregate_type`/`aggregate_id`
    /// at `sequence`.
    #[must_use]
    pub fn at(aggregate_type: &str, aggregate_id: &str, sequence: i64, reason: String) -> Self {
        Self {
            aggregate_type: aggregate_type.to_owned(),
            aggregate_id: aggregate_id.to_owned(),
            sequence,
            reason,
        }
    }
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
    pub broken: Vec<StreamProblem>,
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
    let mut stream_version = ChainVersion::V1;
    let mut stream_broken = false;
    while let Some(row) = rows.try_next().await? {
        let stream = (row.aggregate_type.clone(), row.aggregate_id.clone());
        if current.as_ref() != Some(&stream) {
            current = Some(stream);
            report.streams_checked += 1;
            previous = GENESIS;
            expected_sequence = 1;
            stream_version = ChainVersion::V1;
            stream_broken = false;
        }
        report.events_checked += 1;
        if stream_broken {
            continue;
        }
        let mut fail = |reason: String| {
            report.broken.push(row.problem(reason));
            stream_broken = true;
        };
        if row.sequence != expected_sequence {
            fail(format!(
                "expected sequence {expected_sequence}, found {}",
                row.sequence
            ));
            continue;
        }
        let Some(version) = ChainVersion::from_number(row.chain_version) else {
            fail(format!("unknown chain version {}", row.chain_version));
            continue;
        };
        // Once a stream's events cover their time, a later one cannot stop
        // doing so: that would let an edited time pass as an old event.
        if version < stream_version {
            fail(format!(
                "chain version {} follows version {}",
                version.number(),
                stream_version.number()
            ));
            continue;
        }
        let computed = match row.fields() {
            Ok(fields) => hash::link(version, &previous, &fields, row.recorded_at),
            Err(e) => {
                fail(e.to_string());
                continue;
            }
        };
        if row.hash.as_slice() != computed.as_slice() {
            fail(match version {
                ChainVersion::V1 => {
                    "stored hash does not match the event's contents and predecessor".to_string()
                }
                ChainVersion::V2 => {
                    "stored hash does not match the event's contents, recorded_at and predecessor"
                        .to_string()
                }
            });
            continue;
        }
        previous = computed;
        stream_version = version;
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

/// The auditors' and operators' reads of the event store — streams as of
/// a point, the committed feed, chain verification and signed checkpoints
/// — as one service, so the API holds this and never the pool.
#[derive(Clone)]
pub struct Audit {
    store: crate::EventStore,
}

impl std::fmt::Debug for Audit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Audit").finish_non_exhaustive()
    }
}

impl Audit {
    /// The reads over `store` (its pool, and its patients' keys for
    /// [`Audit::revealer`]).
    #[must_use]
    pub fn new(store: crate::EventStore) -> Self {
        Self { store }
    }

    /// A [`crate::personal::Revealer`] that opens the sealed fields of one
    /// answer's events and states with the patients' keys.
    #[must_use]
    pub fn revealer(&self) -> crate::personal::Revealer<'_> {
        crate::personal::Revealer::new(&self.store)
    }

    /// A stream folded up to `until` ([`crate::replay::stream_at`]).
    ///
    /// # Errors
    /// The database failed, or the stream is corrupt.
    pub async fn stream_at(
        &self,
        kind: clinicbook_domain::AggregateKind,
        aggregate_id: &str,
        until: crate::replay::Until,
    ) -> Result<Option<crate::replay::StreamAt>, StoreError> {
        crate::replay::stream_at(self.store.pool(), kind, aggregate_id, until).await
    }

    /// The feed point right after the event at global `position`
    /// ([`resume_after_position`]).
    ///
    /// # Errors
    /// See [`resume_after_position`].
    pub async fn resume_after_position(&self, position: i64) -> Result<FeedPoint, StoreError> {
        resume_after_position(self.store.pool(), position).await
    }

    /// One page of the committed feed after `after` ([`events_after`]).
    ///
    /// # Errors
    /// See [`events_after`].
    pub async fn events_after(
        &self,
        after: FeedPoint,
        limit: i64,
        filter: &EventFilter,
    ) -> Result<Vec<AuditedEvent>, StoreError> {
        events_after(self.store.pool(), after, limit, filter).await
    }

    /// Every hash chain matching the filters, recomputed ([`verify`]).
    ///
    /// # Errors
    /// The database failed.
    pub async fn verify(
        &self,
        aggregate_type: Option<&str>,
        aggregate_id: Option<&str>,
    ) -> Result<VerifyReport, StoreError> {
        verify(self.store.pool(), aggregate_type, aggregate_id).await
    }

    /// A checkpoint of every stream's head, signed with `key`
    /// ([`crate::checkpoint::take`]).
    ///
    /// # Errors
    /// The database failed.
    pub async fn checkpoint(
        &self,
        key: &crate::checkpoint::AuditKey,
    ) -> Result<crate::checkpoint::Checkpoint, StoreError> {
        crate::checkpoint::take(self.store.pool(), key).await
    }

    /// The chains verified, and compared with an earlier `checkpoint`
    /// signed by `key` ([`crate::checkpoint::verify_against`]).
    ///
    /// # Errors
    /// The checkpoint is refused, or the database failed.
    pub async fn verify_against(
        &self,
        checkpoint: &crate::checkpoint::Checkpoint,
        key: &crate::checkpoint::PublicKey,
    ) -> Result<VerifyReport, crate::error::CheckpointError> {
        crate::checkpoint::verify_against(self.store.pool(), checkpoint, key).await
    }
}
