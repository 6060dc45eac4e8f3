//! The use cases of clinicbook: one method of [`Commands`] per staff or
//! admin action. Each builds one unit of work over every aggregate it
//! touches and commits it through the event store in one transaction,
//! with the command's metadata and optional idempotency key.
//!
//! Inputs and answers are the wire crate's (`clinicbook-wire`): plain
//! serde structs of primitive types (UUIDs, instants, cents) shaped like
//! the HTTP contract (`API.md`), re-exported by each slice's module, so
//! the API crate can take and return them as they are. This crate depends
//! on the domain, the wire types and the event store only: no HTTP, no SQL
//! of its own.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use clinicbook_eventstore::{
    CommandMetadata, Committed, EventStore, ExecuteError, IdempotencyKey, UseCase,
};

pub mod admin;
pub mod booking;
pub mod due;
pub mod money;
pub mod patients;

/// Where the time comes from: the system clock in production, a fixed or
/// controllable one in tests. Every instant it answers is cut to the
/// microsecond, as PostgreSQL keeps instants, so what an event records,
/// what a command answers and what a read model stores are the same
/// instant (see [`micros`]).
#[derive(Clone)]
pub struct Clock(Arc<dyn Fn() -> DateTime<Utc> + Send + Sync>);

impl Clock {
    /// The system clock.
    pub fn system() -> Self {
        Self(Arc::new(Utc::now))
    }

    /// A clock that always answers `at`.
    pub fn fixed(at: DateTime<Utc>) -> Self {
        Self(Arc::new(move || at))
    }

    /// A clock driven by any function (tests that move time forward).
    pub fn from_fn(f: impl Fn() -> DateTime<Utc> + Send + Sync + 'static) -> Self {
        Self(Arc::new(f))
    }

    /// The current time, to the microsecond.
    pub fn now(&self) -> DateTime<Utc> {
        micros((self.0)())
    }
}

/// Instants enter through [`Clock::now`] and `clinicbook_wire::instant::deserialize`,
/// which both cut them to the microsecond with [`micros`].
pub use clinicbook_domain::micros;

impl std::fmt::Debug for Clock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Clock({})", self.now())
    }
}

/// Who asks, and how to make the request safe to retry.
#[derive(Clone, Debug)]
pub struct Ctx {
    /// Stored with every event the command writes.
    pub metadata: CommandMetadata,
    /// Set when the client sent an `Idempotency-Key`.
    pub idempotency: Option<IdempotencyKey>,
}

impl Ctx {
    /// A context without idempotency key.
    pub fn new(metadata: CommandMetadata) -> Self {
        Self {
            metadata,
            idempotency: None,
        }
    }
}

/// A command that was carried out (or replayed from its idempotency key):
/// the store's [`Committed`], named for the use cases.
pub type Done<T> = Committed<T>;

/// Why a command was not carried out (nothing was written in every case):
/// the store's [`ExecuteError`], whose `Domain` refusal carries the API's
/// error code.
pub type CommandError = ExecuteError;

/// The use cases, over one event store and one clock. Cheap to clone.
#[derive(Clone)]
pub struct Commands {
    store: EventStore,
    clock: Clock,
}

impl Commands {
    /// Use cases over `store`, reading the time from `clock`.
    pub fn new(store: EventStore, clock: Clock) -> Self {
        Self { store, clock }
    }

    /// The event store.
    pub fn store(&self) -> &EventStore {
        &self.store
    }

    /// The current time of this instance's clock.
    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    /// Runs a use case as one transaction (retried on conflicts).
    ///
    /// # Errors
    /// See [`CommandError`].
    pub async fn run<U: UseCase>(
        &self,
        ctx: &Ctx,
        use_case: &U,
    ) -> Result<Done<U::Output>, CommandError> {
        self.store
            .execute(&ctx.metadata, ctx.idempotency.as_ref(), use_case)
            .await
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_clock_cuts_to_the_microsecond() {
        let at = "2030-06-29T10:00:00.123456Z"
            .parse::<chrono::DateTime<chrono::Utc>>()
            .unwrap_or_default();
        let clock = super::Clock::fixed(at + chrono::TimeDelta::nanoseconds(789));
        assert_eq!(clock.now(), at);
    }
}
