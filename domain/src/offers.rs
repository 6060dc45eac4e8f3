//! The `PatientOffers` aggregate: the waitlist offers a patient has open,
//! one stream per patient.
//!
//! It is the consistency boundary of "a patient is never offered two
//! overlapping slots at once" (issue 13). The unit of work that places an
//! offer's hold opens the offer here too, and the one that confirms,
//! releases or expires the hold closes it, so two matchers offering one
//! patient two slots on different resources append to the same stream:
//! the store lets one commit, and the other, run again, is refused here.
//!
//! An offer counts until it is closed or its `expires_at` passes, whichever
//! comes first: a confirm at or after `expires_at` is refused by the hold
//! whether or not its expiry is recorded yet, so an offer past its time
//! offers nothing any more and blocks nothing.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::reservation::Slot;
use crate::schedule::Interval;
use crate::{DomainError, HoldId, PatientId, ReservationId};

/// An offer: the hold of `slot` for the waitlisted reservation, until
/// `expires_at`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Offer {
    /// The hold that takes the slot.
    pub hold_id: HoldId,
    /// The waitlisted reservation it is offered to.
    pub reservation_id: ReservationId,
    /// The slot (resource, start, end).
    pub slot: Slot,
    /// When the hold runs out.
    pub expires_at: DateTime<Utc>,
}

impl Offer {
    /// True when the two offers' slots share an instant (on any resource:
    /// a patient cannot be in two places at once). Touching slots do not.
    #[must_use]
    pub fn overlaps(&self, other: &Offer) -> bool {
        let mine = Interval {
            start: self.slot.start,
            end: self.slot.end,
        };
        mine.overlaps(&Interval {
            start: other.slot.start,
            end: other.slot.end,
        })
    }

    /// True while the offer can still be taken (before `expires_at`).
    #[must_use]
    pub fn is_live(&self, now: DateTime<Utc>) -> bool {
        now < self.expires_at
    }
}

/// The `PatientOffers` aggregate state.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PatientOffers {
    /// `None` until the first offer.
    pub patient_id: Option<PatientId>,
    /// The offers not closed yet, by hold.
    pub open: BTreeMap<HoldId, Offer>,
}

/// Commands of the `PatientOffers` aggregate.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PatientOffersCommand {
    /// Offer the patient a slot (with its hold placed in the same unit of
    /// work).
    Open {
        /// The patient (the stream's id).
        patient_id: PatientId,
        /// The offer.
        offer: Offer,
        /// Current time: offers past their `expires_at` no longer count.
        now: DateTime<Utc>,
    },
    /// The offer's hold was confirmed, released or expired.
    Close {
        /// The hold.
        hold_id: HoldId,
    },
}

/// Events of the `PatientOffers` aggregate. Variant names are stored event
/// types: frozen.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, strum::IntoStaticStr)]
pub enum PatientOffersEvent {
    /// The patient was offered a slot.
    OfferOpened {
        /// The patient.
        patient_id: PatientId,
        /// The offer.
        offer: Offer,
    },
    /// The offer ended (its hold was confirmed, released or expired).
    OfferClosed {
        /// The hold.
        hold_id: HoldId,
    },
}

impl PatientOffers {
    /// The open offer that keeps `offer` from being made at `now`: another
    /// one, still live, whose slot overlaps.
    #[must_use]
    pub fn conflict(&self, offer: &Offer, now: DateTime<Utc>) -> Option<&Offer> {
        self.open
            .values()
            .find(|open| open.hold_id != offer.hold_id && open.is_live(now) && open.overlaps(offer))
    }

    /// Checks `command` and returns the event it produces, or `None` when
    /// it repeats what already happened (the same offer opened again, an
    /// offer closed twice, or one that was never opened here).
    ///
    /// # Errors
    /// Open: `InconsistentInput` (`patient_id`) for another patient's
    /// stream; `InconsistentInput` (`start`) when a live open offer of the
    /// patient overlaps the slot; `AlreadyExists` for a hold opened with
    /// other terms.
    pub fn decide(
        &self,
        command: PatientOffersCommand,
    ) -> Result<Option<PatientOffersEvent>, DomainError> {
        match command {
            PatientOffersCommand::Open {
                patient_id,
                offer,
                now,
            } => {
                if self.patient_id.is_some_and(|id| id != patient_id) {
                    return Err(DomainError::inconsistent(
                        "patient_id",
                        "the offers are another patient's",
                    ));
                }
                if let Some(open) = self.open.get(&offer.hold_id) {
                    return if *open == offer {
                        Ok(None)
                    } else {
                        Err(DomainError::AlreadyExists {
                            what: format!("offer of hold {}", offer.hold_id),
                        })
                    };
                }
                if let Some(open) = self.conflict(&offer, now) {
                    return Err(DomainError::inconsistent(
                        "start",
                        format!(
                            "the patient has an open offer that overlaps it (hold {})",
                            open.hold_id
                        ),
                    ));
                }
                Ok(Some(PatientOffersEvent::OfferOpened { patient_id, offer }))
            }
            PatientOffersCommand::Close { hold_id } => Ok(self
                .open
                .contains_key(&hold_id)
                .then_some(PatientOffersEvent::OfferClosed { hold_id })),
        }
    }

    /// The state after `event`.
    fn evolve(&mut self, event: PatientOffersEvent) {
        match event {
            PatientOffersEvent::OfferOpened { patient_id, offer } => {
                self.patient_id = Some(patient_id);
                self.open.insert(offer.hold_id, offer);
            }
            PatientOffersEvent::OfferClosed { hold_id } => {
                self.open.remove(&hold_id);
            }
        }
    }
}

crate::aggregate::aggregate!(PatientOffers: PatientOffersCommand => PatientOffersEvent);

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use chrono::Duration;
    use cqrs_es::test::TestFramework;
    use cqrs_es::Aggregate;
    use proptest::prelude::*;

    use super::*;
    use crate::testing::{fold, id, now};
    use crate::ResourceId;

    type Given = TestFramework<PatientOffers>;

    fn at(minutes: i64) -> DateTime<Utc> {
        now() + Duration::minutes(minutes)
    }

    fn patient() -> PatientId {
        PatientId(id(1))
    }

    /// Hold `n` of resource `resource`, from minute `start` for `minutes`,
    /// until minute 30.
    fn offer(n: u128, resource: u128, start: i64, minutes: i64) -> Offer {
        Offer {
            hold_id: HoldId(id(100 + n)),
            reservation_id: ReservationId(id(200 + n)),
            slot: Slot {
                resource_id: ResourceId(id(resource)),
                start: at(start),
                end: at(start + minutes),
            },
            expires_at: at(30),
        }
    }

    fn open(offer: Offer, now: i64) -> PatientOffersCommand {
        PatientOffersCommand::Open {
            patient_id: patient(),
            offer,
            now: at(now),
        }
    }

    fn opened(offer: Offer) -> PatientOffersEvent {
        PatientOffersEvent::OfferOpened {
            patient_id: patient(),
            offer,
        }
    }

    fn overlapping(hold: u128) -> DomainError {
        DomainError::inconsistent(
            "start",
            format!(
                "the patient has an open offer that overlaps it (hold {})",
                HoldId(id(100 + hold))
            ),
        )
    }

    #[test]
    fn a_first_offer_opens() {
        Given::with(())
            .given_no_previous_events()
            .when(open(offer(1, 7, 60, 45), 0))
            .then_expect_events(vec![opened(offer(1, 7, 60, 45))]);
    }

    #[test]
    fn an_overlapping_offer_on_another_resource_is_refused() {
        Given::with(())
            .given(vec![opened(offer(1, 7, 60, 45))])
            .when(open(offer(2, 8, 90, 45), 0))
            .then_expect_error(overlapping(1));
    }

    #[test]
    fn an_offer_touching_an_open_one_opens() {
        Given::with(())
            .given(vec![opened(offer(1, 7, 60, 45))])
            .when(open(offer(2, 8, 105, 45), 0))
            .then_expect_events(vec![opened(offer(2, 8, 105, 45))]);
    }

    #[test]
    fn once_closed_an_offer_no_longer_blocks() {
        Given::with(())
            .given(vec![
                opened(offer(1, 7, 60, 45)),
                PatientOffersEvent::OfferClosed {
                    hold_id: HoldId(id(101)),
                },
            ])
            .when(open(offer(2, 8, 60, 45), 0))
            .then_expect_events(vec![opened(offer(2, 8, 60, 45))]);
    }

    #[test]
    fn an_offer_past_its_expiry_blocks_nothing_recorded_or_not() {
        Given::with(())
            .given(vec![opened(offer(1, 7, 60, 45))])
            .when(open(offer(2, 8, 60, 45), 30))
            .then_expect_events(vec![opened(offer(2, 8, 60, 45))]);
        Given::with(())
            .given(vec![opened(offer(1, 7, 60, 45))])
            .when(open(offer(2, 8, 60, 45), 29))
            .then_expect_error(overlapping(1));
    }

    #[test]
    fn the_same_offer_opened_again_writes_nothing() {
        Given::with(())
            .given(vec![opened(offer(1, 7, 60, 45))])
            .when(open(offer(1, 7, 60, 45), 1))
            .then_expect_events(vec![]);
    }

    #[test]
    fn a_hold_opened_with_other_terms_is_refused() {
        Given::with(())
            .given(vec![opened(offer(1, 7, 60, 45))])
            .when(open(offer(1, 7, 120, 45), 1))
            .then_expect_error(DomainError::AlreadyExists {
                what: format!("offer of hold {}", HoldId(id(101))),
            });
    }

    #[test]
    fn another_patients_offer_is_refused_on_this_stream() {
        Given::with(())
            .given(vec![opened(offer(1, 7, 60, 45))])
            .when(PatientOffersCommand::Open {
                patient_id: PatientId(id(2)),
                offer: offer(2, 8, 300, 45),
                now: at(0),
            })
            .then_expect_error(DomainError::inconsistent(
                "patient_id",
                "the offers are another patient's",
            ));
    }

    #[test]
    fn close_ends_an_open_offer_once() {
        let close = || PatientOffersCommand::Close {
            hold_id: HoldId(id(101)),
        };
        Given::with(())
            .given(vec![opened(offer(1, 7, 60, 45))])
            .when(close())
            .then_expect_events(vec![PatientOffersEvent::OfferClosed {
                hold_id: HoldId(id(101)),
            }]);
        Given::with(())
            .given(vec![
                opened(offer(1, 7, 60, 45)),
                PatientOffersEvent::OfferClosed {
                    hold_id: HoldId(id(101)),
                },
            ])
            .when(close())
            .then_expect_events(vec![]);
        Given::with(())
            .given_no_previous_events()
            .when(close())
            .then_expect_events(vec![]);
    }

    #[test]
    fn the_stored_type_and_event_names() {
        use cqrs_es::DomainEvent;
        assert_eq!(PatientOffers::TYPE, "PatientOffers");
        assert_eq!(opened(offer(1, 7, 60, 45)).event_type(), "OfferOpened");
        let state: PatientOffers = fold(&[opened(offer(1, 7, 60, 45))]);
        assert_eq!(state.patient_id, Some(patient()));
        assert_eq!(state.open.len(), 1);
    }

    /// An offer or a close, at a time that never goes back.
    #[derive(Clone, Debug)]
    enum Op {
        Open {
            hold: u8,
            resource: u8,
            start: i64,
            minutes: i64,
            lasts: i64,
        },
        Close {
            hold: u8,
        },
        Wait {
            minutes: i64,
        },
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => (0u8..12, 0u8..3, 0i64..240, 15i64..90, 1i64..60).prop_map(
                |(hold, resource, start, minutes, lasts)| Op::Open { hold, resource, start, minutes, lasts }
            ),
            1 => (0u8..12).prop_map(|hold| Op::Close { hold }),
            1 => (1i64..30).prop_map(|minutes| Op::Wait { minutes }),
        ]
    }

    proptest! {
        /// Whatever is offered, closed and waited for, the offers live at
        /// any moment never overlap, and an offer is refused only for a
        /// live overlapping one.
        #[test]
        fn live_offers_never_overlap(ops in prop::collection::vec(op(), 1..60)) {
            let mut history: Vec<PatientOffersEvent> = Vec::new();
            let mut clock = 0;
            for op in ops {
                let command = match op {
                    Op::Wait { minutes } => {
                        clock += minutes;
                        continue;
                    }
                    Op::Close { hold } => PatientOffersCommand::Close { hold_id: HoldId(id(100 + u128::from(hold))) },
                    Op::Open { hold, resource, start, minutes, lasts } => {
                        let mut made = offer(u128::from(hold), u128::from(resource), start, minutes);
                        made.expires_at = at(clock + lasts);
                        open(made, clock)
                    }
                };
                let state: PatientOffers = fold(&history);
                let result = Given::with(()).given(history.clone()).when(command.clone()).inspect_result();
                if let PatientOffersCommand::Open { offer, now, .. } = &command {
                    let refused = match state.open.get(&offer.hold_id) {
                        Some(open) => open != offer,
                        None => state.conflict(offer, *now).is_some(),
                    };
                    prop_assert_eq!(result.is_err(), refused);
                }
                if let Ok(events) = result {
                    history.extend(events);
                }
                let after: PatientOffers = fold(&history);
                let live: Vec<&Offer> = after.open.values().filter(|o| o.is_live(at(clock))).collect();
                for (i, a) in live.iter().enumerate() {
                    for b in &live[i + 1..] {
                        prop_assert!(!a.overlaps(b), "{:?} overlaps {:?}", a, b);
                    }
                }
            }
        }
    }
}
