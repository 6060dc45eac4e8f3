//! Fixtures the aggregates' tests share.

use chrono::{DateTime, TimeDelta, Utc};
use cqrs_es::Aggregate;
use uuid::Uuid;

/// The UUID numbered `n`, so fixtures name ids by small numbers.
pub(crate) fn id(n: u128) -> Uuid {
    Uuid::from_u128(n)
}

/// The instant commands are sent at.
pub(crate) fn now() -> DateTime<Utc> {
    DateTime::UNIX_EPOCH + TimeDelta::days(20_000)
}

/// The state after `events`, folded from the aggregate's default.
pub(crate) fn fold<A: Aggregate>(events: &[A::Event]) -> A
where
    A::Event: Clone,
{
    let mut state = A::default();
    for event in events {
        state.apply(event.clone());
    }
    state
}
