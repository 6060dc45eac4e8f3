//! The pure domain model of clinicbook: aggregates, their commands and events,
//! the single domain error type, dynamic pricing and the cancellation policy.
//!
//! This crate performs no I/O and owns no async runtime, database or broker
//! client: it depends only on `cqrs-es` (for the `Aggregate` trait), serde,
//! chrono, chrono-tz, uuid and thiserror. Time is always passed in (`now`
//! fields on commands), so every rule is deterministic and testable.

pub mod calendar;
pub mod clinic;
pub mod error;
pub mod ids;
pub mod money;
pub mod package;
pub mod policy;
pub mod pricing;
pub mod program;
pub mod promo;
pub mod reservation;
pub mod schedule;
pub mod upcast;
pub mod wallet;

pub use error::DomainError;
pub use ids::*;
pub use money::Money;

/// Version string written with every event of the current schema, except
/// those that changed shape since (see [`upcast::current_version`]).
///
/// It must parse as a semantic version: cqrs-es upcasters silently skip
/// events whose version does not.
pub const EVENT_VERSION: &str = "1.0.0";
