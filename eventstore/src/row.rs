//! One row of the `events` table as every reader decodes it, and the one
//! fold of such rows into an aggregate.
//!
//! Loading, the feed, the audit reads, verification and replay all select
//! [`COLUMNS`] into an [`EventRow`]; the public shapes ([`crate::FeedEvent`],
//! [`crate::audit::StoredEvent`]) are built from it. [`Folded::apply`] is the
//! one place a stored event meets its aggregate: the gap check, upcasting,
//! deserialising and the hash taken for the next append.

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::audit::StreamProblem;
use crate::error::StoreError;
use crate::hash::{self, EventFields, Hash, GENESIS};
use crate::store::StoredAggregate;

/// The columns of an [`EventRow`], in a form every `SELECT` on `events`
/// uses (`SELECT {COLUMNS} FROM events ...`). Its `transaction_id` is an
/// output column (a cast), so a bare `ORDER BY transaction_id` would sort
/// by the cast and never use the `(transaction_id, position)` index:
/// statements order by `events.transaction_id, events.position`.
pub(crate) const COLUMNS: &str = "aggregate_type, aggregate_id, sequence, position,
    transaction_id::text::bigint AS transaction_id, event_type, event_version,
    payload::text AS payload, metadata::text AS metadata, recorded_at, hash, chain_version";

/// A stored event as it is in the table: payload and metadata are the
/// exact stored JSON texts (the hash covers them), the version is the
/// stored one (not yet upcast).
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub(crate) struct EventRow {
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub sequence: i64,
    pub position: i64,
    /// The writing transaction's id (`xid8` as a number).
    pub transaction_id: i64,
    pub event_type: String,
    pub event_version: String,
    pub payload: String,
    pub metadata: String,
    pub recorded_at: DateTime<Utc>,
    pub hash: Vec<u8>,
    /// The rule its hash follows ([`crate::hash::ChainVersion`]).
    pub chain_version: i16,
}

impl EventRow {
    /// The fields its hash covers.
    pub fn fields(&self) -> Result<EventFields<'_>, FoldError> {
        Ok(EventFields {
            aggregate_type: &self.aggregate_type,
            aggregate_id: &self.aggregate_id,
            sequence: self.sequence()?,
            event_type: &self.event_type,
            event_version: &self.event_version,
            payload: &self.payload,
            metadata: &self.metadata,
        })
    }

    /// Its sequence as the store counts (from 1).
    pub fn sequence(&self) -> Result<u64, FoldError> {
        u64::try_from(self.sequence).map_err(|_| FoldError::Gap {
            found: self.sequence,
            after: 0,
        })
    }

    /// A stored-JSON column as a value.
    pub fn json(&self, column: &str, text: &str) -> Result<Value, StoreError> {
        serde_json::from_str(text).map_err(|source| StoreError::Serde {
            what: format!("stored {column}"),
            source,
        })
    }

    /// Its version and payload as the current version (upcast when
    /// stored older), and the stored version when it was upcast.
    ///
    /// # Errors
    /// The payload is not JSON, or cannot be upcast (the stream is corrupt).
    pub fn current(&self) -> Result<(String, Value, Option<String>), StoreError> {
        let payload = self.json("payload", &self.payload)?;
        crate::upcasting::current(
            &self.aggregate_type,
            &self.event_type,
            self.event_version.clone(),
            payload,
        )
        .map_err(|e| self.corrupt(e.to_string()))
    }

    /// The stored event as the current version of `A`'s event.
    ///
    /// # Errors
    /// A bad version, a payload the upcaster cannot read, or one that does
    /// not deserialise.
    pub fn event<A: StoredAggregate>(&self) -> Result<A::Event, FoldError> {
        crate::upcasting::event_from_text(
            A::TYPE,
            &self.event_type,
            &self.event_version,
            &self.payload,
        )
        .map_err(|reason| FoldError::Undecodable {
            sequence: self.sequence,
            event_type: self.event_type.clone(),
            event_version: self.event_version.clone(),
            reason,
        })
    }

    /// A problem `reason` of this row's stream, found at this row: what
    /// verification and the replay check report.
    pub fn problem(&self, reason: String) -> StreamProblem {
        StreamProblem::at(
            &self.aggregate_type,
            &self.aggregate_id,
            self.sequence,
            reason,
        )
    }

    /// A corrupt-stream error naming this row's stream.
    pub fn corrupt(&self, reason: String) -> StoreError {
        StoreError::Corrupt {
            aggregate_type: self.aggregate_type.clone(),
            aggregate_id: self.aggregate_id.clone(),
            reason,
        }
    }
}

/// Why a stored event does not fold onto its stream.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum FoldError {
    /// The stream has a gap (or starts anywhere but 1).
    #[error("event {found} follows event {after}")]
    Gap {
        /// The sequence read.
        found: i64,
        /// The sequence folded before it.
        after: u64,
    },
    /// The event does not read as its aggregate's current event.
    #[error("event {sequence} ({event_type} {event_version}) does not deserialise: {reason}")]
    Undecodable {
        /// Its sequence.
        sequence: i64,
        /// Its type.
        event_type: String,
        /// Its stored version.
        event_version: String,
        /// What went wrong.
        reason: String,
    },
    /// The stored hash is not 32 bytes.
    #[error("event {0} has a malformed hash")]
    MalformedHash(i64),
}

/// A stream folded up to a sequence: the aggregate's state, that sequence
/// (0: no event yet) and the hash of its last event ([`GENESIS`] before the
/// first), which the next append chains onto.
#[derive(Clone, Debug)]
pub(crate) struct Folded<A> {
    pub state: A,
    pub sequence: u64,
    pub last_hash: Hash,
}

impl<A: StoredAggregate> Default for Folded<A> {
    fn default() -> Self {
        Self {
            state: A::default(),
            sequence: 0,
            last_hash: GENESIS,
        }
    }
}

impl<A: StoredAggregate> Folded<A> {
    /// Applies the next stored event of the stream: it must follow the
    /// folded sequence with no gap, read as `A`'s current event and carry
    /// a well-formed hash. Nothing changes when it does not. Answers the
    /// event applied.
    ///
    /// # Errors
    /// A gap, an undecodable event or a malformed hash.
    pub fn apply(&mut self, row: &EventRow) -> Result<A::Event, FoldError> {
        if u64::try_from(row.sequence).ok() != Some(self.sequence + 1) {
            return Err(FoldError::Gap {
                found: row.sequence,
                after: self.sequence,
            });
        }
        let event = row.event::<A>()?;
        let last_hash =
            hash::from_bytes(&row.hash).ok_or(FoldError::MalformedHash(row.sequence))?;
        self.state.apply(event.clone());
        self.sequence += 1;
        self.last_hash = last_hash;
        Ok(event)
    }
}

/// Folds `rows` (the stream's events after `from`, in sequence order) onto
/// `from`.
///
/// # Errors
/// `Corrupt` naming the stream and the first row that does not fold
/// (logged, and counted in `clinicbook_store_unreadable_events_total`).
pub(crate) fn fold<'r, A: StoredAggregate>(
    mut from: Folded<A>,
    id: &str,
    rows: impl IntoIterator<Item = &'r EventRow>,
) -> Result<Folded<A>, StoreError> {
    for row in rows {
        fold_one(&mut from, id, row)?;
    }
    Ok(from)
}

/// Applies one row of the stream `id` (see [`Folded::apply`]).
///
/// # Errors
/// `Corrupt` naming the stream and the row (logged, and counted in
/// `clinicbook_store_unreadable_events_total`).
pub(crate) fn fold_one<A: StoredAggregate>(
    folded: &mut Folded<A>,
    id: &str,
    row: &EventRow,
) -> Result<A::Event, StoreError> {
    folded.apply(row).map_err(|e| {
        tracing::error!(aggregate_type = A::TYPE, aggregate_id = id, error = %e, "a stored event does not fold onto its stream");
        metrics::counter!("clinicbook_store_unreadable_events_total", "aggregate_type" => A::TYPE)
            .increment(1);
        StoreError::Corrupt {
            aggregate_type: A::TYPE.to_string(),
            aggregate_id: id.to_string(),
            reason: e.to_string(),
        }
    })
}
