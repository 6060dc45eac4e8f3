//! The read side of clinicbook: projectors that turn the event feed into
//! plain relational tables in schema `read`, their checkpoints, rebuilds,
//! and the queries analysts and staff read through.
//!
//! A projection is a name, the DDL of its tables and an `apply` function.
//! Its tables are created with unqualified names under a `search_path`, so
//! the same DDL and the same `apply` build the live tables in `read` and a
//! rebuild's fresh tables in a scratch schema. A batch of events and the
//! checkpoint move in one transaction, so a projection never applies an
//! event twice or skips one.
//!
//! The projections ([`models`]) are `schedule`, `reservations`, `wallets`,
//! `packages` and `reports` (which also answers the dashboard); each
//! applies a batch by loading the rows it touches, folding the events
//! into them with the domain's own event types, and writing them back in
//! one statement per table. The queries ([`query`]) are methods of
//! [`ReadModels`]; reports also render as CSV ([`query::csv::ToCsv`]).
//!
//! Depends on the domain, the event store (its feed), sqlx and async-nats;
//! it knows nothing of HTTP and never writes events.

pub(crate) mod cache;
pub mod checkpoint;
pub mod due;
pub mod error;
pub mod models;
pub mod query;
pub mod rebuild;
pub mod runtime;
pub mod service;
pub mod waitlist;

pub use checkpoint::ReadModels;
pub use error::ProjectionError;

use clinicbook_domain::AggregateKind;
use clinicbook_eventstore::FeedEvent;
use futures::future::BoxFuture;
use sqlx::PgConnection;

/// Applies a batch of events, in feed order, to a projection's tables. The
/// connection is inside the batch's transaction with `search_path` set to
/// the schema being built; the function must use unqualified table names,
/// ignore event types it does not use, and never commit.
pub type ApplyFn =
    for<'a> fn(&'a mut PgConnection, &'a [FeedEvent]) -> BoxFuture<'a, Result<(), ProjectionError>>;

/// One projection: what it is called, its tables and how events change them.
#[derive(Clone, Copy)]
pub struct Projection {
    /// Name used by `clinicbook rebuild`, checkpoints and consumers.
    pub name: &'static str,
    /// Its tables, each declared once by its row type
    /// ([`models::sql::Table`]); their DDL is [`Projection::ddl`].
    pub tables: &'static [&'static models::sql::TableDef],
    /// Further `CREATE TABLE` / `CREATE INDEX` statements with unqualified
    /// names, for tables not declared by a row type (empty for the
    /// projections in [`models`]).
    pub ddl: &'static str,
    /// The aggregate kinds whose events `apply` reads: a batch with none
    /// of them is not applied, only its checkpoint moves, and a projector
    /// does not even decode such a message (the relay's headers name its
    /// kind and place).
    pub kinds: &'static [AggregateKind],
    /// Applies events.
    pub apply: ApplyFn,
}

impl Projection {
    /// Every statement that creates the projection's tables and indexes:
    /// the declared tables' DDL, then [`Projection::ddl`]. Its hash is kept
    /// with the checkpoint, so tables built by another version are seen.
    #[must_use]
    pub fn schema(&self) -> String {
        let mut ddl: String = self.tables.iter().map(|table| table.ddl()).collect();
        ddl.push_str(self.ddl);
        ddl
    }

    /// Whether `apply` reads events of `kind` (`None`: a kind this release
    /// does not know, which no projection reads).
    #[must_use]
    pub fn reads(&self, kind: Option<AggregateKind>) -> bool {
        kind.is_some_and(|kind| self.kinds.contains(&kind))
    }
}

impl std::fmt::Debug for Projection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Projection")
            .field("name", &self.name)
            .finish()
    }
}

/// Every projection, in a fixed order.
#[must_use]
pub fn projections() -> &'static [Projection] {
    models::ALL
}

/// The projection called `name`.
#[must_use]
pub fn projection(name: &str) -> Option<&'static Projection> {
    projections()
        .iter()
        .find(|projection| projection.name == name)
}
