//! Due work: what must happen at a time (a hold expiring, later a
//! reminder), as the events that create and end it say. The scheduler
//! keeps one row per piece of due work, keyed by kind and key, fed by
//! these functions from the event feed; this module only names the kinds
//! and reads the deadlines off the events (no clock, no storage).

use chrono::{DateTime, Utc};

use crate::hold::HoldEvent;

named! {
    /// What a piece of due work does when its time comes.
    pub enum DueKind {
        /// Record `HoldExpired` for a hold whose `expires_at` passed.
        HoldExpiry,
    }
}

impl DueKind {
    /// The stored name (`hold_expiry`).
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// A piece of due work, as the scheduler claims it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DueWork {
    /// What to do.
    pub kind: DueKind,
    /// On what (a hold id).
    pub key: String,
    /// When it fell due.
    pub due_at: DateTime<Utc>,
}

impl DueWork {
    /// The idempotency key of its command: kind, key and due time, so a
    /// command repeated after a crash answers as the first did.
    pub fn idempotency_key(&self) -> String {
        format!(
            "{}/{}/{}",
            self.kind.as_str(),
            self.key,
            self.due_at.timestamp_micros()
        )
    }
}

/// What an event does to the due work.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DueChange {
    /// Work `kind`/`key` falls due at `due_at` (a later event may move it).
    Schedule {
        /// Its kind.
        kind: DueKind,
        /// The aggregate it is about (a hold id).
        key: String,
        /// When it falls due.
        due_at: DateTime<Utc>,
    },
    /// Work `kind`/`key` is no longer needed.
    Done {
        /// Its kind.
        kind: DueKind,
        /// The aggregate it is about.
        key: String,
    },
}

/// The due work an event of the hold `hold_id` creates or ends: a hold
/// held falls due at its `expires_at`; any end of it ends that work.
pub fn of_hold(hold_id: &str, event: &HoldEvent) -> DueChange {
    let key = hold_id.to_owned();
    match event {
        HoldEvent::Held { terms, .. } => DueChange::Schedule {
            kind: DueKind::HoldExpiry,
            key,
            due_at: terms.expires_at,
        },
        HoldEvent::HoldConfirmed { .. }
        | HoldEvent::HoldReleased { .. }
        | HoldEvent::HoldExpired { .. } => DueChange::Done {
            kind: DueKind::HoldExpiry,
            key,
        },
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::ReservationId;

    #[test]
    fn a_held_hold_falls_due_at_its_expiry_and_any_end_ends_it() {
        let at: DateTime<Utc> = "2026-06-01T08:00:00Z".parse().unwrap();
        let ends = [
            HoldEvent::HoldConfirmed {
                reservation_id: ReservationId::default(),
                confirmed_at: at,
            },
            HoldEvent::HoldReleased { released_at: at },
            HoldEvent::HoldExpired { expired_at: at },
        ];
        for event in ends {
            assert_eq!(
                of_hold("h", &event),
                DueChange::Done {
                    kind: DueKind::HoldExpiry,
                    key: "h".to_owned()
                }
            );
        }
        assert_eq!(DueKind::HoldExpiry.as_str(), "hold_expiry");
    }
}
