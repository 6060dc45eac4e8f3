//! The HTTP contract of clinicbook: every request body, answer and view,
//! defined once with its serde and (with the `openapi` feature) utoipa
//! derives. The use cases in `clinicbook-commands` take and answer these
//! types, the read-model queries in `clinicbook-projections` answer them,
//! the API passes them through as they are and the demo client sends and
//! reads them; so a field changes in one place, and the JSON of a write
//! and of the read that follows it cannot drift apart.
//!
//! This crate depends on the domain (to convert to and from its types)
//! and on serde, chrono and uuid only: no I/O, no SQL, no async.

pub mod admin;
pub mod booking;
pub mod holds;
pub mod instant;
pub mod messages;
pub mod money;
pub mod patients;
pub mod schedule;
pub mod schema;
