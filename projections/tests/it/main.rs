//! Integration tests of the read side over real PostgreSQL and
//! nats-server: the relay and projectors at work, and scenarios built
//! through the real use cases of `clinicbook-commands`, caught up from
//! the event store, and queried.

// Helpers outside `#[test]` functions fail the test loudly too.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod availability;
mod common;
mod detail;
mod idempotence;
mod invalid;
mod reports;
mod runtime;
mod scenario;
mod speed;
