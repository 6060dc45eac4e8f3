//! Integration tests of the event store against a real PostgreSQL started
//! by the test harness: atomic multi-aggregate commits under concurrency,
//! the cqrs-es traps, snapshots and the cache, and tamper evidence (hash
//! chains and signed checkpoints).

mod append;
mod checkpoints;
mod common;
mod concurrency;
mod history;
mod paging;
mod retention;
mod snapshots;
mod tamper;
mod traps;
