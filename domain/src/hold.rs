//! The `Hold` aggregate: a slot taken for a short time while a patient
//! pays or decides (an online checkout, a phone call, a waitlist offer).
//!
//! A hold is `held` with the price quoted at that moment, then exactly one
//! of `confirmed` (it became a reservation, at the quoted price),
//! `released` or `expired`. Its slot lives on the `Calendar` (which
//! enforces the overlap rule); this aggregate enforces the life cycle and
//! the deadline: a confirm at or after `expires_at` is refused whether or
//! not the expiry is recorded yet, and a second terminal event is refused,
//! so a timer that fires twice records `Expired` once.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::pricing::PriceBreakdown;
use crate::reservation::Slot;
use crate::{
    CalendarId, ClinicId, DomainError, HoldId, PatientId, PromoCodeKey, ReservationId, TreatmentId,
};

named! {
    /// Status of a hold.
    #[derive(Default)]
    pub enum HoldStatus {
        /// Not created yet.
        #[default]
        New,
        /// The slot is taken until `expires_at`.
        Held,
        /// It became a reservation.
        Confirmed,
        /// Given up before it expired.
        Released,
        /// Its time ran out.
        Expired,
    }
}

impl HoldStatus {
    /// Every status a created hold can have, in life-cycle order.
    pub const ALL: [HoldStatus; 4] = [
        HoldStatus::Held,
        HoldStatus::Confirmed,
        HoldStatus::Released,
        HoldStatus::Expired,
    ];

    /// The API name of the status (`held`, `confirmed`, ...).
    pub fn as_str(self) -> &'static str {
        self.into()
    }

    /// True once nothing more can happen to the hold.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            HoldStatus::Confirmed | HoldStatus::Released | HoldStatus::Expired
        )
    }
}

/// What a hold takes and at which price: recorded by `Held`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HoldTerms {
    /// The patient it is held for.
    pub patient_id: PatientId,
    /// The clinic.
    pub clinic_id: ClinicId,
    /// The treatment.
    pub treatment_id: TreatmentId,
    /// The slot (resource, start, end).
    pub slot: Slot,
    /// The calendar that holds the slot.
    pub calendar_id: CalendarId,
    /// The price quoted when held; a confirm books at this price.
    pub price: PriceBreakdown,
    /// The promo code the quote includes, redeemed on confirm.
    pub promo_code: Option<PromoCodeKey>,
    /// When the hold runs out.
    pub expires_at: DateTime<Utc>,
    /// The waitlisted reservation this hold is offered to, if it is an
    /// offer; a confirm then books that reservation.
    pub offer_for: Option<ReservationId>,
}

/// The `Hold` aggregate state.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Hold {
    /// `None` until held.
    pub hold_id: Option<HoldId>,
    /// Its status.
    pub status: HoldStatus,
    /// What it takes; `None` until held.
    pub terms: Option<HoldTerms>,
    /// The reservation it became, once confirmed.
    pub reservation_id: Option<ReservationId>,
}

/// Commands of the `Hold` aggregate.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum HoldCommand {
    /// Take a slot until `expires_at`.
    Place {
        /// New id.
        hold_id: HoldId,
        /// What is held and at which price.
        terms: HoldTerms,
        /// Current time: `expires_at` must be after it.
        now: DateTime<Utc>,
    },
    /// Turn the hold into the reservation `reservation_id`.
    Confirm {
        /// The reservation it becomes.
        reservation_id: ReservationId,
        /// Current time: must be before `expires_at`.
        now: DateTime<Utc>,
    },
    /// Give the slot up.
    Release {
        /// Current time.
        now: DateTime<Utc>,
    },
    /// Record that the time ran out (the scheduler's command).
    Expire {
        /// Current time: must be at or after `expires_at`.
        now: DateTime<Utc>,
    },
}

/// Events of the `Hold` aggregate. Variant names are stored event types: frozen.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, strum::IntoStaticStr)]
pub enum HoldEvent {
    /// The slot was held.
    Held {
        /// Its id.
        hold_id: HoldId,
        /// What it takes and at which price.
        terms: HoldTerms,
        /// When.
        held_at: DateTime<Utc>,
    },
    /// It became a reservation.
    HoldConfirmed {
        /// The reservation.
        reservation_id: ReservationId,
        /// When.
        confirmed_at: DateTime<Utc>,
    },
    /// It was given up.
    HoldReleased {
        /// When.
        released_at: DateTime<Utc>,
    },
    /// Its time ran out.
    HoldExpired {
        /// When it was recorded (at or after `expires_at`).
        expired_at: DateTime<Utc>,
    },
}

/// The actions, as named in refusals.
mod action {
    pub const CONFIRM: &str = "confirm the hold";
    pub const RELEASE: &str = "release the hold";
    pub const EXPIRE: &str = "expire the hold";
    pub const EXPIRE_EARLY: &str = "expire the hold before its expires_at";
}

impl Hold {
    /// When the hold runs out; `None` before it is held.
    pub fn expires_at(&self) -> Option<DateTime<Utc>> {
        self.terms.as_ref().map(|t| t.expires_at)
    }

    /// The refusal of `action` in the current status.
    fn refuse(&self, action: &str) -> DomainError {
        match self.status {
            HoldStatus::New => DomainError::not_found("hold"),
            status => DomainError::InvalidTransition {
                from: status.as_str().to_string(),
                action: action.to_string(),
            },
        }
    }

    /// Checks `command` against the current state and returns the event it
    /// produces, or `None` when it repeats what already happened (the same
    /// hold placed again, the same confirm, a second release).
    ///
    /// # Errors
    /// Place: `InconsistentInput` (`ttl_seconds`) when `expires_at` is not
    /// after `now`, `InvalidInput` (`price`) for a negative total,
    /// `AlreadyExists` for an id held with other terms. Confirm:
    /// `HoldExpired` at or after `expires_at` or once expired,
    /// `HoldReleased` once released, `InvalidTransition` once confirmed as
    /// another reservation. Release: `HoldExpired` once expired (or past
    /// `expires_at`), `InvalidTransition` once confirmed. Expire:
    /// `InvalidTransition` before `expires_at` and once terminal (a second
    /// expiry writes nothing). `NotFound` for any command but Place before
    /// the hold exists.
    pub fn decide(&self, command: HoldCommand) -> Result<Option<HoldEvent>, DomainError> {
        match command {
            HoldCommand::Place {
                hold_id,
                terms,
                now,
            } => {
                if self.status != HoldStatus::New {
                    return if self.terms.as_ref() == Some(&terms) {
                        Ok(None)
                    } else {
                        Err(DomainError::AlreadyExists {
                            what: format!("hold {hold_id}"),
                        })
                    };
                }
                if terms.expires_at <= now {
                    return Err(DomainError::inconsistent(
                        "ttl_seconds",
                        "the hold must expire after now",
                    ));
                }
                if terms.slot.start < now {
                    return Err(DomainError::InThePast);
                }
                if terms.price.total.is_negative() {
                    return Err(DomainError::invalid(
                        "price",
                        "the total must not be negative",
                    ));
                }
                Ok(Some(HoldEvent::Held {
                    hold_id,
                    terms,
                    held_at: now,
                }))
            }
            HoldCommand::Confirm {
                reservation_id,
                now,
            } => match self.status {
                HoldStatus::Held => {
                    if self.expires_at().is_some_and(|at| now >= at) {
                        return Err(DomainError::HoldExpired);
                    }
                    Ok(Some(HoldEvent::HoldConfirmed {
                        reservation_id,
                        confirmed_at: now,
                    }))
                }
                HoldStatus::Confirmed if self.reservation_id == Some(reservation_id) => Ok(None),
                HoldStatus::Expired => Err(DomainError::HoldExpired),
                HoldStatus::Released => Err(DomainError::HoldReleased),
                HoldStatus::New | HoldStatus::Confirmed => Err(self.refuse(action::CONFIRM)),
            },
            HoldCommand::Release { now } => match self.status {
                HoldStatus::Held => {
                    if self.expires_at().is_some_and(|at| now >= at) {
                        return Err(DomainError::HoldExpired);
                    }
                    Ok(Some(HoldEvent::HoldReleased { released_at: now }))
                }
                HoldStatus::Released => Ok(None),
                HoldStatus::Expired => Err(DomainError::HoldExpired),
                HoldStatus::New | HoldStatus::Confirmed => Err(self.refuse(action::RELEASE)),
            },
            HoldCommand::Expire { now } => match self.status {
                HoldStatus::Held => {
                    if self.expires_at().is_some_and(|at| now < at) {
                        return Err(self.refuse(action::EXPIRE_EARLY));
                    }
                    Ok(Some(HoldEvent::HoldExpired { expired_at: now }))
                }
                _ => Err(self.refuse(action::EXPIRE)),
            },
        }
    }
}

impl Hold {
    /// The state after `event`.
    fn evolve(&mut self, event: HoldEvent) {
        match event {
            HoldEvent::Held { hold_id, terms, .. } => {
                self.hold_id = Some(hold_id);
                self.status = HoldStatus::Held;
                self.terms = Some(terms);
            }
            HoldEvent::HoldConfirmed { reservation_id, .. } => {
                self.status = HoldStatus::Confirmed;
                self.reservation_id = Some(reservation_id);
            }
            HoldEvent::HoldReleased { .. } => self.status = HoldStatus::Released,
            HoldEvent::HoldExpired { .. } => self.status = HoldStatus::Expired,
        }
    }
}

crate::aggregate::aggregate!(Hold: HoldCommand => HoldEvent);

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use chrono::Duration;
    use cqrs_es::test::TestFramework;
    use cqrs_es::{Aggregate, DomainEvent};

    use super::*;
    use crate::{Money, ResourceId};

    type Given = TestFramework<Hold>;

    fn at(minutes: i64) -> DateTime<Utc> {
        "2026-06-01T08:00:00Z".parse::<DateTime<Utc>>().unwrap() + Duration::minutes(minutes)
    }

    fn id() -> HoldId {
        HoldId(uuid::Uuid::from_u128(1))
    }

    fn rid(n: u128) -> ReservationId {
        ReservationId(uuid::Uuid::from_u128(n))
    }

    /// Held at minute 0 until minute 10, for a slot at minute 60.
    fn terms() -> HoldTerms {
        let resource_id = ResourceId(uuid::Uuid::from_u128(7));
        HoldTerms {
            patient_id: PatientId(uuid::Uuid::from_u128(2)),
            clinic_id: ClinicId(uuid::Uuid::from_u128(3)),
            treatment_id: TreatmentId(uuid::Uuid::from_u128(4)),
            slot: Slot {
                resource_id,
                start: at(60),
                end: at(90),
            },
            calendar_id: CalendarId {
                resource_id,
                date: "2026-06-01".parse().unwrap(),
            },
            price: PriceBreakdown {
                base: Money(10_000),
                adjustments: Money(2_000),
                discount: Money(1_000),
                total: Money(11_000),
            },
            promo_code: None,
            expires_at: at(10),
            offer_for: None,
        }
    }

    fn held() -> HoldEvent {
        HoldEvent::Held {
            hold_id: id(),
            terms: terms(),
            held_at: at(0),
        }
    }

    fn place(now: i64) -> HoldCommand {
        HoldCommand::Place {
            hold_id: id(),
            terms: terms(),
            now: at(now),
        }
    }

    fn confirm(n: u128, now: i64) -> HoldCommand {
        HoldCommand::Confirm {
            reservation_id: rid(n),
            now: at(now),
        }
    }

    fn confirmed(n: u128, now: i64) -> HoldEvent {
        HoldEvent::HoldConfirmed {
            reservation_id: rid(n),
            confirmed_at: at(now),
        }
    }

    fn expired(now: i64) -> HoldEvent {
        HoldEvent::HoldExpired {
            expired_at: at(now),
        }
    }

    fn released(now: i64) -> HoldEvent {
        HoldEvent::HoldReleased {
            released_at: at(now),
        }
    }

    fn transition(from: &str, action: &str) -> DomainError {
        DomainError::InvalidTransition {
            from: from.to_string(),
            action: action.to_string(),
        }
    }

    // --- Place --------------------------------------------------------------

    #[test]
    fn place_records_the_terms_and_the_quoted_price() {
        Given::with(())
            .given_no_previous_events()
            .when(place(0))
            .then_expect_events(vec![held()]);
    }

    #[test]
    fn place_refuses_an_expiry_not_after_now() {
        Given::with(())
            .given_no_previous_events()
            .when(place(10))
            .then_expect_error(DomainError::inconsistent(
                "ttl_seconds",
                "the hold must expire after now",
            ));
    }

    #[test]
    fn place_refuses_a_slot_in_the_past() {
        let mut late = terms();
        late.expires_at = at(100);
        Given::with(())
            .given_no_previous_events()
            .when(HoldCommand::Place {
                hold_id: id(),
                terms: late,
                now: at(61),
            })
            .then_expect_error(DomainError::InThePast);
    }

    #[test]
    fn place_repeated_is_a_no_op_and_other_terms_are_refused() {
        Given::with(())
            .given(vec![held()])
            .when(place(1))
            .then_expect_events(vec![]);
        let mut other = terms();
        other.expires_at = at(20);
        Given::with(())
            .given(vec![held()])
            .when(HoldCommand::Place {
                hold_id: id(),
                terms: other,
                now: at(1),
            })
            .then_expect_error(DomainError::AlreadyExists {
                what: format!("hold {}", id()),
            });
    }

    // --- Confirm ------------------------------------------------------------

    #[test]
    fn confirm_before_expiry_confirms() {
        Given::with(())
            .given(vec![held()])
            .when(confirm(9, 9))
            .then_expect_events(vec![confirmed(9, 9)]);
    }

    #[test]
    fn confirm_at_or_after_expires_at_is_refused_even_unrecorded() {
        for now in [10, 11, 500] {
            Given::with(())
                .given(vec![held()])
                .when(confirm(9, now))
                .then_expect_error(DomainError::HoldExpired);
        }
        Given::with(())
            .given(vec![held(), expired(10)])
            .when(confirm(9, 5))
            .then_expect_error(DomainError::HoldExpired);
    }

    #[test]
    fn confirm_of_a_released_hold_is_refused() {
        Given::with(())
            .given(vec![held(), released(2)])
            .when(confirm(9, 3))
            .then_expect_error(DomainError::HoldReleased);
    }

    #[test]
    fn confirm_repeated_is_a_no_op_and_as_another_reservation_refused() {
        Given::with(())
            .given(vec![held(), confirmed(9, 5)])
            .when(confirm(9, 6))
            .then_expect_events(vec![]);
        Given::with(())
            .given(vec![held(), confirmed(9, 5)])
            .when(confirm(8, 6))
            .then_expect_error(transition("confirmed", action::CONFIRM));
    }

    #[test]
    fn commands_before_the_hold_exists_are_not_found() {
        for command in [
            confirm(9, 1),
            HoldCommand::Release { now: at(1) },
            HoldCommand::Expire { now: at(20) },
        ] {
            Given::with(())
                .given_no_previous_events()
                .when(command)
                .then_expect_error(DomainError::not_found("hold"));
        }
    }

    // --- Release ------------------------------------------------------------

    #[test]
    fn release_while_held_releases_once() {
        Given::with(())
            .given(vec![held()])
            .when(HoldCommand::Release { now: at(3) })
            .then_expect_events(vec![released(3)]);
        Given::with(())
            .given(vec![held(), released(3)])
            .when(HoldCommand::Release { now: at(4) })
            .then_expect_events(vec![]);
    }

    #[test]
    fn release_after_expiry_or_confirm_is_refused() {
        Given::with(())
            .given(vec![held(), expired(10)])
            .when(HoldCommand::Release { now: at(11) })
            .then_expect_error(DomainError::HoldExpired);
        Given::with(())
            .given(vec![held()])
            .when(HoldCommand::Release { now: at(10) })
            .then_expect_error(DomainError::HoldExpired);
        Given::with(())
            .given(vec![held(), confirmed(9, 5)])
            .when(HoldCommand::Release { now: at(6) })
            .then_expect_error(transition("confirmed", action::RELEASE));
    }

    // --- Expire -------------------------------------------------------------

    #[test]
    fn expire_at_or_after_expires_at_records_expired() {
        for now in [10, 12] {
            Given::with(())
                .given(vec![held()])
                .when(HoldCommand::Expire { now: at(now) })
                .then_expect_events(vec![expired(now)]);
        }
    }

    #[test]
    fn expire_before_expires_at_is_refused() {
        Given::with(())
            .given(vec![held()])
            .when(HoldCommand::Expire { now: at(9) })
            .then_expect_error(transition("held", action::EXPIRE_EARLY));
    }

    #[test]
    fn a_second_terminal_event_is_refused() {
        for (history, from) in [
            (vec![held(), expired(10)], "expired"),
            (vec![held(), released(2)], "released"),
            (vec![held(), confirmed(9, 5)], "confirmed"),
        ] {
            Given::with(())
                .given(history)
                .when(HoldCommand::Expire { now: at(11) })
                .then_expect_error(transition(from, action::EXPIRE));
        }
    }

    #[test]
    fn apply_follows_the_life_cycle() {
        let mut hold = Hold::default();
        hold.apply(held());
        assert_eq!(hold.status, HoldStatus::Held);
        assert_eq!(hold.expires_at(), Some(at(10)));
        assert!(!hold.status.is_terminal());
        hold.apply(confirmed(9, 5));
        assert_eq!(hold.status, HoldStatus::Confirmed);
        assert_eq!(hold.reservation_id, Some(rid(9)));
        assert!(hold.status.is_terminal());
    }

    #[test]
    fn event_types_are_the_variant_names() {
        for (event, name) in [
            (held(), "Held"),
            (confirmed(1, 1), "HoldConfirmed"),
            (released(1), "HoldReleased"),
            (expired(1), "HoldExpired"),
        ] {
            assert_eq!(event.event_type(), name);
            assert_eq!(event.event_version(), crate::EVENT_VERSION);
        }
        assert_eq!(Hold::TYPE, "Hold");
        let names: Vec<&str> = HoldStatus::ALL.iter().map(|s| s.as_str()).collect();
        assert_eq!(names, ["held", "confirmed", "released", "expired"]);
    }
}
