//! Errors of the read side.

use clinicbook_eventstore::error::NatsError;
use clinicbook_eventstore::StoreError;

/// What can go wrong while projecting or reading a read model.
#[derive(Debug, thiserror::Error)]
pub enum ProjectionError {
    /// The database failed.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// Reading the event feed failed.
    #[error("event store error: {0}")]
    Store(#[from] StoreError),
    /// An event's payload is not what its type promises.
    #[error("cannot read event {position} ({event_type}): {reason}")]
    Decode {
        /// Its global position.
        position: i64,
        /// Its type.
        event_type: String,
        /// What is wrong.
        reason: String,
    },
    /// A read-model row holds what its row type does not know (an unknown
    /// kind or status, a timezone chrono-tz cannot read): counted in
    /// `clinicbook_read_model_invalid_rows_total`, never read as a default.
    #[error("a row of {table} cannot be read: {reason}")]
    InvalidRow {
        /// The table.
        table: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// NATS failed or could not be reached.
    #[error("NATS failed to {what}: {source}")]
    Nats {
        /// What the projector was doing.
        what: &'static str,
        /// The client's error.
        #[source]
        source: NatsError,
    },
    /// The NATS URL does not name NATS servers.
    #[error("invalid NATS URL {url:?}: {source}")]
    InvalidNatsUrl {
        /// The URL as given.
        url: String,
        /// Why it does not parse.
        #[source]
        source: NatsError,
    },
    /// A projector's checkpoint is behind where the projector last saw it
    /// (a database restored from an older copy): the projector starts
    /// again from the checkpoint instead of applying over a hole.
    #[error(
        "the checkpoint of {projection} is at position {at}, behind its projector's {expected}"
    )]
    CheckpointMovedBack {
        /// The projection.
        projection: String,
        /// Where the checkpoint is.
        at: i64,
        /// Where the projector saw it last.
        expected: i64,
    },
    /// No projection has that name.
    #[error("no projection is called {0:?}")]
    UnknownProjection(String),
    /// The projection did not reach the asked position in time.
    #[error("projection {projection} has not reached position {position} yet")]
    Lagging {
        /// The projection waited on.
        projection: String,
        /// The position asked for.
        position: i64,
    },
    /// A read asked to wait for a position that no committed event has
    /// (yet): no answer ever carried it, so waiting would not help.
    #[error("no event has position {position} yet (the last committed is {last})")]
    UnknownPosition {
        /// The position asked for.
        position: i64,
        /// The last committed position.
        last: i64,
    },
    /// Parameters that are each well-formed but disagree (a range that
    /// ends before it starts).
    #[error("inconsistent {field}: {reason}")]
    Inconsistent {
        /// The parameter.
        field: &'static str,
        /// Why.
        reason: String,
    },
    /// A read asked for something the read models do not have (an
    /// unknown reservation, package, clinic or treatment).
    #[error("not found: {0}")]
    NotFound(String),
    /// A read asked for something invalid (an unknown grouping, a range
    /// that ends before it starts).
    #[error("invalid {field}: {reason}")]
    Invalid {
        /// The parameter.
        field: &'static str,
        /// Why.
        reason: String,
    },
}

impl ProjectionError {
    /// A NATS failure while doing `what`.
    pub fn nats(what: &'static str, source: impl Into<NatsError>) -> Self {
        Self::Nats {
            what,
            source: source.into(),
        }
    }

    /// A decode error for `event`.
    pub fn decode(
        event: &clinicbook_eventstore::FeedEvent,
        reason: impl std::fmt::Display,
    ) -> Self {
        Self::Decode {
            position: event.position,
            event_type: event.event_type.clone(),
            reason: reason.to_string(),
        }
    }
}
