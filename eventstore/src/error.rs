//! Errors of the event store.

use clinicbook_domain::DomainError;
use thiserror::Error;

/// An error of the NATS client (each of its operations has its own type).
pub type NatsError = Box<dyn std::error::Error + Send + Sync>;

impl StoreError {
    /// A NATS failure while doing `what`.
    pub fn nats(what: &'static str, source: impl Into<NatsError>) -> Self {
        Self::Nats {
            what,
            source: source.into(),
        }
    }
}

/// A failure of the storage itself (not a refused command).
#[derive(Debug, Error)]
pub enum StoreError {
    /// The database failed or could not be reached.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// Applying migrations failed.
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// An event or a snapshot could not be (de)serialised.
    #[error("cannot (de)serialise {what}: {source}")]
    Serde {
        /// What was being converted.
        what: String,
        /// The serde error.
        source: serde_json::Error,
    },
    /// A stored stream is not what the store wrote: a sequence gap, or an
    /// event that no longer deserialises.
    #[error("stream {aggregate_type}/{aggregate_id} is corrupt: {reason}")]
    Corrupt {
        /// Aggregate type.
        aggregate_type: String,
        /// Aggregate id.
        aggregate_id: String,
        /// What is wrong.
        reason: String,
    },
    /// The task committing a command failed (it panicked or the runtime is
    /// shutting down); the transaction was rolled back.
    #[error("a task of the store was interrupted: {0}")]
    Interrupted(#[from] tokio::task::JoinError),
    /// NATS failed or could not be reached (the relay).
    #[error("NATS failed to {what}: {source}")]
    Nats {
        /// What the relay was doing.
        what: &'static str,
        /// The client's error.
        #[source]
        source: NatsError,
    },
    /// The cipher of personal data failed.
    #[error("cannot seal personal data: {0}")]
    Crypto(&'static str),
    /// An event's version is not a semantic version (cqrs-es upcasters
    /// would silently skip it), so it is refused before it is stored.
    #[error("event {event_type} has version {version:?}, which is not a semantic version")]
    InvalidEventVersion {
        /// The event type.
        event_type: String,
        /// The offending version.
        version: String,
    },
}

/// Why a step of a unit of work failed: the domain refused, or storage failed.
#[derive(Debug, Error)]
pub enum UowError {
    /// An aggregate refused a command.
    #[error(transparent)]
    Domain(#[from] DomainError),
    /// Loading failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Why [`crate::EventStore::execute`] wrote nothing.
#[derive(Debug, Error)]
pub enum ExecuteError {
    /// An aggregate refused the command.
    #[error(transparent)]
    Domain(#[from] DomainError),
    /// Other writers kept changing the same streams through every attempt.
    #[error("concurrency conflict after {attempts} attempts")]
    Conflict {
        /// How many times the command ran.
        attempts: u32,
    },
    /// The idempotency key was used before with another request.
    #[error("idempotency key reused with a different request")]
    IdempotencyKeyReused,
    /// Storage failed.
    #[error(transparent)]
    Store(StoreError),
}

impl From<UowError> for ExecuteError {
    fn from(e: UowError) -> Self {
        match e {
            UowError::Domain(d) => ExecuteError::Domain(d),
            UowError::Store(s) => ExecuteError::Store(s),
        }
    }
}

impl From<StoreError> for ExecuteError {
    fn from(e: StoreError) -> Self {
        ExecuteError::Store(e)
    }
}

impl From<sqlx::Error> for ExecuteError {
    fn from(e: sqlx::Error) -> Self {
        ExecuteError::Store(StoreError::Database(e))
    }
}

/// Why a checkpoint could not be taken or verified against.
#[derive(Debug, Error)]
pub enum CheckpointError {
    /// A field of the checkpoint is not what it must be (hex of the right
    /// length).
    #[error("{field}: {reason}")]
    Malformed {
        /// The field, e.g. `signature` or `streams[3].hash`.
        field: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The contents were changed after signing: they no longer match the
    /// digest.
    #[error("the checkpoint's contents do not match its digest")]
    DigestMismatch,
    /// The signature is not the audit key's over the digest.
    #[error("the checkpoint's signature does not verify with the audit key")]
    BadSignature,
    /// An audit key (configured or given) is malformed.
    #[error("{0}")]
    InvalidKey(String),
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}
