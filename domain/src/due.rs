//! Due work: what must happen at a time (a hold expiring, later a
//! reminder), as the events that create and end it say. The scheduler
//! keeps one row per piece of due work, keyed by kind and key, fed by
//! these functions from the event feed; this module only names the kinds
//! and reads the deadlines off the events (no clock, no storage).

use chrono::{DateTime, Utc};

use crate::hold::HoldEvent;
use crate::reservation::ReservationEvent;

named! {
    /// What a piece of due work does when its time comes.
    pub enum DueKind {
        /// Record `HoldExpired` for a hold whose `expires_at` passed.
        HoldExpiry,
        /// Record `ReminderDue` for a booked reservation
        /// `reminder_minutes_before` its start.
        Reminder,
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

/// When the reminder of an appointment starting at `start` falls due,
/// `minutes_before` (the clinic's `reminder_minutes_before`) earlier.
#[must_use]
pub fn reminder_at(start: DateTime<Utc>, minutes_before: u32) -> DateTime<Utc> {
    start - chrono::TimeDelta::minutes(i64::from(minutes_before))
}

/// The reminder work an event of the reservation `reservation_id`,
/// recorded at `at`, creates, moves or ends, with the clinic's
/// `minutes_before`: a booking arms it and a reschedule re-arms it for the
/// new start, unless it would fall due at or before the event itself (the
/// confirmation, or the staff member who moved it, said it all); the
/// reminder falling due ends it, and every end of the booking disarms it.
/// A waitlist entry has none.
pub fn of_reservation(
    reservation_id: &str,
    event: &ReservationEvent,
    minutes_before: u32,
    at: DateTime<Utc>,
) -> Option<DueChange> {
    let key = reservation_id.to_owned();
    let kind = DueKind::Reminder;
    let arm = |start: DateTime<Utc>, key: String| {
        let due_at = reminder_at(start, minutes_before);
        if due_at > at {
            DueChange::Schedule { kind, key, due_at }
        } else {
            DueChange::Done { kind, key }
        }
    };
    match event {
        ReservationEvent::ReservationBooked { slot, .. } => Some(arm(slot.start, key)),
        ReservationEvent::ReservationRescheduled { to, .. } => Some(arm(to.start, key)),
        ReservationEvent::ReservationCancelled { .. }
        | ReservationEvent::CheckedIn { .. }
        | ReservationEvent::ReservationCompleted { .. }
        | ReservationEvent::MarkedNoShow { .. }
        | ReservationEvent::ReservationDisplaced { .. }
        | ReservationEvent::ReminderDue { .. } => Some(DueChange::Done { kind, key }),
        ReservationEvent::WaitlistJoined(_) => None,
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

    #[test]
    fn a_booking_arms_its_reminder_a_reschedule_rearms_and_an_end_disarms() {
        use crate::policy::CancellationOutcome;
        use crate::reservation::Slot;
        use crate::ResourceId;
        let at = |s: &str| s.parse::<DateTime<Utc>>().unwrap();
        let slot = |start: &str| Slot {
            resource_id: ResourceId::default(),
            start: at(start),
            end: at(start) + chrono::TimeDelta::hours(1),
        };
        let booked = |booked_at: &str| ReservationEvent::ReservationBooked {
            reservation_id: crate::ReservationId::default(),
            patient_id: crate::PatientId::default(),
            clinic_id: crate::ClinicId::default(),
            treatment_id: crate::TreatmentId::default(),
            slot: slot("2026-06-10T09:00:00Z"),
            price: crate::pricing::PriceBreakdown::default(),
            payment: crate::reservation::PaymentMethod::AtClinic,
            prepaid: crate::Money::ZERO,
            promo_code: None,
            booked_at: at(booked_at),
        };
        let schedule = |due: &str| {
            Some(DueChange::Schedule {
                kind: DueKind::Reminder,
                key: "r".to_owned(),
                due_at: at(due),
            })
        };
        let done = Some(DueChange::Done {
            kind: DueKind::Reminder,
            key: "r".to_owned(),
        });
        let booked_at = at("2026-06-01T09:00:00Z");
        assert_eq!(
            of_reservation("r", &booked("2026-06-01T09:00:00Z"), 1440, booked_at),
            schedule("2026-06-09T09:00:00Z")
        );
        // Booked less than a day ahead: no reminder.
        let late = at("2026-06-09T10:00:00Z");
        assert_eq!(
            of_reservation("r", &booked("2026-06-09T10:00:00Z"), 1440, late),
            done
        );
        let moved = ReservationEvent::ReservationRescheduled {
            from: slot("2026-06-10T09:00:00Z"),
            to: slot("2026-06-12T15:30:00Z"),
        };
        assert_eq!(
            of_reservation("r", &moved, 30, booked_at),
            schedule("2026-06-12T15:00:00Z")
        );
        // Moved to less than the reminder's time ahead: none.
        assert_eq!(
            of_reservation("r", &moved, 30, at("2026-06-12T15:10:00Z")),
            done
        );
        let cancelled = ReservationEvent::ReservationCancelled {
            reason: "x".to_owned(),
            outcome: CancellationOutcome::default(),
            at: at("2026-06-02T09:00:00Z"),
        };
        assert_eq!(of_reservation("r", &cancelled, 30, booked_at), done);
        assert_eq!(DueKind::Reminder.as_str(), "reminder");
    }
}
