//! The `Reservation` aggregate: one appointment (or waitlist entry) and its
//! life: `waitlisted → booked → checked_in → completed`, and
//! `booked → cancelled / no_show / displaced`.
//!
//! | status | book | join waitlist | reschedule | cancel | check in | complete | no-show | displace |
//! |---|---|---|---|---|---|---|---|---|
//! | new | booked | waitlisted | — | — | — | — | — | — |
//! | waitlisted | booked | | | cancelled | | | | |
//! | booked | | | booked | cancelled | checked_in | | no_show | displaced |
//! | checked_in | | | | | | completed | | |
//! | completed, cancelled, no_show, displaced | | | | | | | | |
//!
//! An empty cell is refused with `InvalidTransition`; a dash (any command
//! but book or join on a reservation that does not exist) with `NotFound`.
//! Booking an existing reservation again is an `InvalidTransition` too (not
//! `AlreadyExists`): the id exists either way, and the conflict is with its
//! status, which the error names. Cancelling a waitlist entry settles
//! nothing; cancelling, no-show and displacement of a booking record the
//! settlement of [`crate::policy`].

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::policy::{
    cancellation_outcome, displacement_outcome, no_show_outcome, CancellationOutcome,
    CancellationPolicy,
};
use crate::pricing::PriceBreakdown;
use crate::Money;
use crate::{
    BlockId, ClinicId, DomainError, PackageId, PatientId, PromoCodeKey, ReservationId, ResourceId,
    TreatmentId,
};

/// How a reservation is paid. [`PaymentKind`] names the method without
/// its package (the `method` tag, as read models store it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, strum::EnumDiscriminants)]
#[serde(tag = "method", rename_all = "snake_case")]
#[strum_discriminants(
    name(PaymentKind),
    doc = "The method of a [`PaymentMethod`] without its package: `package`, `wallet` or `at_clinic`.",
    derive(Serialize, Deserialize, Hash, strum::IntoStaticStr),
    serde(rename_all = "snake_case"),
    strum(serialize_all = "snake_case")
)]
pub enum PaymentMethod {
    /// One session of a package.
    Package {
        /// The package.
        package_id: PackageId,
    },
    /// Debited from the patient's wallet at booking.
    Wallet,
    /// Paid at the clinic on the day.
    AtClinic,
}

named! {
    /// Status of a reservation.
    #[derive(Default)]
    pub enum ReservationStatus {
        /// Not created yet.
        #[default]
        New,
        /// Waiting for a slot in a wanted window.
        Waitlisted,
        /// Holds a slot.
        Booked,
        /// The patient arrived.
        CheckedIn,
        /// The treatment was given.
        Completed,
        /// Cancelled by staff.
        Cancelled,
        /// The patient did not come.
        NoShow,
        /// Removed by an emergency block or a closure.
        Displaced,
    }
}

impl ReservationStatus {
    /// Every status, in life-cycle order.
    pub const ALL: [ReservationStatus; 8] = [
        ReservationStatus::New,
        ReservationStatus::Waitlisted,
        ReservationStatus::Booked,
        ReservationStatus::CheckedIn,
        ReservationStatus::Completed,
        ReservationStatus::Cancelled,
        ReservationStatus::NoShow,
        ReservationStatus::Displaced,
    ];

    /// The API name of the status (`booked`, `checked_in`, ...): serde's
    /// and strum's `snake_case` of the variant, so the name is written once.
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// What a reservation joining the waitlist asks for: the command that
/// joins says it and the event that records it carries it whole, so the
/// read models take it from one shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WaitlistEntry {
    /// The reservation that waits (the stream's id).
    pub reservation_id: ReservationId,
    /// Who waits: the booking is made for them.
    pub patient_id: PatientId,
    /// Where a freed slot must be.
    pub clinic_id: ClinicId,
    /// What a freed slot must fit.
    pub treatment_id: TreatmentId,
    /// Earliest start accepted.
    pub earliest: DateTime<Utc>,
    /// Latest start accepted (not before `earliest`).
    pub latest: DateTime<Utc>,
    /// How the booking is paid once a slot is found.
    pub payment: PaymentMethod,
}

/// The slot a booked reservation holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Slot {
    /// The resource.
    pub resource_id: ResourceId,
    /// Appointment start.
    pub start: DateTime<Utc>,
    /// Appointment end.
    pub end: DateTime<Utc>,
}

/// The `Reservation` aggregate state.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Reservation {
    /// `None` until created.
    pub reservation_id: Option<ReservationId>,
    /// Current status.
    pub status: ReservationStatus,
    /// The patient.
    pub patient_id: Option<PatientId>,
    /// The clinic.
    pub clinic_id: Option<ClinicId>,
    /// The treatment.
    pub treatment_id: Option<TreatmentId>,
    /// The held slot (booked and later statuses).
    pub slot: Option<Slot>,
    /// Wanted window of a waitlist entry: bounds on the start.
    pub wanted: Option<(DateTime<Utc>, DateTime<Utc>)>,
    /// Price recorded at booking.
    pub price: PriceBreakdown,
    /// What the booking took from the wallet (the rest is due at the
    /// clinic, or a package session pays it).
    pub prepaid: Money,
    /// Payment method.
    pub payment: Option<PaymentMethod>,
    /// Promo code redeemed for it.
    pub promo_code: Option<PromoCodeKey>,
    /// What the cancellation, no-show or displacement settled.
    pub settlement: Option<CancellationOutcome>,
    /// The start whose reminder fell due (none yet; a later start is
    /// reminded of again).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reminded_for: Option<DateTime<Utc>>,
}

/// Commands of the `Reservation` aggregate.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum ReservationCommand {
    /// Book a slot (new reservation, or fulfil a waitlisted one).
    Book {
        /// Id.
        reservation_id: ReservationId,
        /// Patient.
        patient_id: PatientId,
        /// Clinic.
        clinic_id: ClinicId,
        /// Treatment.
        treatment_id: TreatmentId,
        /// Slot.
        slot: Slot,
        /// Price breakdown.
        price: PriceBreakdown,
        /// Payment.
        payment: PaymentMethod,
        /// Redeemed promo code.
        promo_code: Option<PromoCodeKey>,
        /// Current time; the slot must start after it.
        now: DateTime<Utc>,
    },
    /// Join the waitlist for a window of start times.
    JoinWaitlist {
        /// What it waits for.
        #[serde(flatten)]
        entry: WaitlistEntry,
        /// Current time; `latest` must be after it.
        now: DateTime<Utc>,
    },
    /// Move a booked reservation to another slot.
    Reschedule {
        /// New slot.
        slot: Slot,
        /// Current time; the new slot must start after it.
        now: DateTime<Utc>,
    },
    /// Cancel (booked or waitlisted).
    Cancel {
        /// Why.
        reason: String,
        /// The clinic's policy.
        policy: CancellationPolicy,
        /// Current time.
        now: DateTime<Utc>,
    },
    /// The patient arrived.
    CheckIn {
        /// Current time.
        now: DateTime<Utc>,
    },
    /// The treatment was given (only after check-in).
    Complete {
        /// Current time.
        now: DateTime<Utc>,
    },
    /// The patient did not come.
    MarkNoShow {
        /// Current time.
        now: DateTime<Utc>,
    },
    /// An emergency block or closure took the slot.
    Displace {
        /// The block that displaced it.
        block_id: BlockId,
        /// Current time.
        now: DateTime<Utc>,
    },
    /// The scheduler's reminder of the appointment at `start` fell due
    /// (the scheduler's command; the patient messages follow from it).
    RecordReminderDue {
        /// The start it reminds of: must be the booked slot's.
        start: DateTime<Utc>,
        /// When the reminder fell due.
        due_at: DateTime<Utc>,
    },
}

/// Events of the `Reservation` aggregate. Variant names are stored event types: frozen.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, strum::IntoStaticStr)]
pub enum ReservationEvent {
    /// Booked (new, or from the waitlist).
    ReservationBooked {
        /// Id.
        reservation_id: ReservationId,
        /// Patient.
        patient_id: PatientId,
        /// Clinic.
        clinic_id: ClinicId,
        /// Treatment.
        treatment_id: TreatmentId,
        /// Slot.
        slot: Slot,
        /// Full price breakdown.
        price: PriceBreakdown,
        /// Payment.
        payment: PaymentMethod,
        /// What the booking took from the wallet: the total for a wallet
        /// payment, nothing otherwise. New in version 2.0.0; version 1
        /// events are upcast ([`crate::upcast`]).
        prepaid: Money,
        /// Promo code.
        promo_code: Option<PromoCodeKey>,
        /// When it was booked.
        booked_at: DateTime<Utc>,
    },
    /// Joined the waitlist (stored as the entry's fields, as before it was
    /// a type of its own).
    WaitlistJoined(WaitlistEntry),
    /// Moved to another slot.
    ReservationRescheduled {
        /// The slot it left.
        from: Slot,
        /// The slot it holds now.
        to: Slot,
    },
    /// Cancelled.
    ReservationCancelled {
        /// Why.
        reason: String,
        /// What was settled.
        outcome: CancellationOutcome,
        /// When.
        at: DateTime<Utc>,
    },
    /// Checked in.
    CheckedIn {
        /// When.
        at: DateTime<Utc>,
    },
    /// Completed.
    ReservationCompleted {
        /// When.
        at: DateTime<Utc>,
    },
    /// Marked as no-show; payment forfeited.
    MarkedNoShow {
        /// What was settled (nothing given back).
        outcome: CancellationOutcome,
        /// When.
        at: DateTime<Utc>,
    },
    /// Displaced by a block; payment restored in full.
    ReservationDisplaced {
        /// The block.
        block_id: BlockId,
        /// What was settled.
        outcome: CancellationOutcome,
        /// When.
        at: DateTime<Utc>,
    },
    /// The reminder of the appointment at `start` fell due (recorded by
    /// the scheduler once per start; changes no status).
    ReminderDue {
        /// The appointment's start.
        start: DateTime<Utc>,
        /// When the reminder fell due.
        due_at: DateTime<Utc>,
    },
}

/// The actions as named in `InvalidTransition` errors.
mod action {
    pub const BOOK: &str = "book";
    pub const JOIN_WAITLIST: &str = "put on the waitlist";
    pub const RESCHEDULE: &str = "reschedule";
    pub const CANCEL: &str = "cancel";
    pub const CHECK_IN: &str = "check in";
    pub const COMPLETE: &str = "complete";
    pub const MARK_NO_SHOW: &str = "mark as no-show";
    pub const DISPLACE: &str = "displace";
    pub const REMIND: &str = "remind";
}

/// Checks a slot to book or move to: it starts after `now` and ends after it starts.
fn check_slot(slot: &Slot, now: DateTime<Utc>) -> Result<(), DomainError> {
    if slot.start <= now {
        return Err(DomainError::InThePast);
    }
    if slot.end <= slot.start {
        return Err(DomainError::invalid("end", "must be after start"));
    }
    Ok(())
}

/// Fails with `InvalidInput` naming `field` unless `wanted == actual`.
fn require_same<T: PartialEq>(
    field: &str,
    wanted: Option<T>,
    actual: T,
) -> Result<(), DomainError> {
    if wanted.is_some_and(|wanted| wanted == actual) {
        Ok(())
    } else {
        Err(DomainError::inconsistent(
            field,
            "does not match the waitlist entry",
        ))
    }
}

impl Reservation {
    /// Why `action` is refused in the current status: `NotFound` before the
    /// reservation exists, `InvalidTransition` after.
    fn refuse(&self, action: &str) -> DomainError {
        if self.status == ReservationStatus::New {
            DomainError::not_found("reservation")
        } else {
            DomainError::InvalidTransition {
                from: self.status.as_str().to_string(),
                action: action.to_string(),
            }
        }
    }

    /// Fails unless the status is `status`.
    fn require(&self, status: ReservationStatus, action: &str) -> Result<(), DomainError> {
        if self.status == status {
            Ok(())
        } else {
            Err(self.refuse(action))
        }
    }

    /// The payment and slot of a booked reservation; fails in any other status.
    fn booking(&self, action: &str) -> Result<(PaymentMethod, Slot), DomainError> {
        match (self.status, self.payment, self.slot) {
            (ReservationStatus::Booked, Some(payment), Some(slot)) => Ok((payment, slot)),
            _ => Err(self.refuse(action)),
        }
    }

    /// Checks that booking `reservation_id` for this patient, clinic and
    /// treatment at `start` fulfils this waitlist entry.
    fn check_fulfils_waitlist(
        &self,
        reservation_id: ReservationId,
        patient_id: PatientId,
        clinic_id: ClinicId,
        treatment_id: TreatmentId,
        start: DateTime<Utc>,
    ) -> Result<(), DomainError> {
        require_same("reservation_id", self.reservation_id, reservation_id)?;
        require_same("patient_id", self.patient_id, patient_id)?;
        require_same("clinic_id", self.clinic_id, clinic_id)?;
        require_same("treatment_id", self.treatment_id, treatment_id)?;
        match self.wanted {
            Some((earliest, latest)) if earliest <= start && start <= latest => Ok(()),
            _ => Err(DomainError::inconsistent(
                "start",
                "is outside the waitlist entry's wanted window",
            )),
        }
    }

    /// The event `command` records, or why it is refused.
    ///
    /// # Errors
    /// `NotFound` for any command but `Book` and `JoinWaitlist` before the
    /// reservation exists; `InvalidTransition` for a command its status does
    /// not allow (module table); `InThePast` for a slot starting (or a
    /// waitlist window ending) at or before `now`; `InvalidInput` for a slot
    /// ending before it starts, a negative total, a reversed window or a
    /// booking that does not fulfil its waitlist entry.
    fn decide(&self, command: ReservationCommand) -> Result<ReservationEvent, DomainError> {
        match command {
            ReservationCommand::Book {
                reservation_id,
                patient_id,
                clinic_id,
                treatment_id,
                slot,
                price,
                payment,
                promo_code,
                now,
            } => {
                match self.status {
                    ReservationStatus::New => {}
                    ReservationStatus::Waitlisted => self.check_fulfils_waitlist(
                        reservation_id,
                        patient_id,
                        clinic_id,
                        treatment_id,
                        slot.start,
                    )?,
                    _ => return Err(self.refuse(action::BOOK)),
                }
                check_slot(&slot, now)?;
                if price.total.is_negative() {
                    return Err(DomainError::invalid(
                        "price",
                        "the total must not be negative",
                    ));
                }
                let prepaid = match payment {
                    PaymentMethod::Wallet => price.total,
                    PaymentMethod::Package { .. } | PaymentMethod::AtClinic => Money::ZERO,
                };
                Ok(ReservationEvent::ReservationBooked {
                    reservation_id,
                    patient_id,
                    clinic_id,
                    treatment_id,
                    slot,
                    price,
                    payment,
                    prepaid,
                    promo_code,
                    booked_at: now,
                })
            }
            ReservationCommand::JoinWaitlist { entry, now } => {
                if self.status != ReservationStatus::New {
                    return Err(self.refuse(action::JOIN_WAITLIST));
                }
                if entry.latest < entry.earliest {
                    return Err(DomainError::inconsistent(
                        "latest",
                        "must not be before earliest",
                    ));
                }
                if entry.latest <= now {
                    return Err(DomainError::InThePast);
                }
                Ok(ReservationEvent::WaitlistJoined(entry))
            }
            ReservationCommand::Reschedule { slot, now } => {
                let (_, from) = self.booking(action::RESCHEDULE)?;
                check_slot(&slot, now)?;
                Ok(ReservationEvent::ReservationRescheduled { from, to: slot })
            }
            ReservationCommand::Cancel {
                reason,
                policy,
                now,
            } => {
                let outcome = match self.status {
                    ReservationStatus::Waitlisted => CancellationOutcome::default(),
                    _ => {
                        let (payment, slot) = self.booking(action::CANCEL)?;
                        cancellation_outcome(&policy, &payment, self.price.total, slot.start, now)
                    }
                };
                Ok(ReservationEvent::ReservationCancelled {
                    reason,
                    outcome,
                    at: now,
                })
            }
            ReservationCommand::CheckIn { now } => {
                self.require(ReservationStatus::Booked, action::CHECK_IN)?;
                Ok(ReservationEvent::CheckedIn { at: now })
            }
            ReservationCommand::Complete { now } => {
                self.require(ReservationStatus::CheckedIn, action::COMPLETE)?;
                Ok(ReservationEvent::ReservationCompleted { at: now })
            }
            ReservationCommand::MarkNoShow { now } => {
                let (payment, _) = self.booking(action::MARK_NO_SHOW)?;
                Ok(ReservationEvent::MarkedNoShow {
                    outcome: no_show_outcome(&payment, self.price.total),
                    at: now,
                })
            }
            ReservationCommand::Displace { block_id, now } => {
                let (payment, _) = self.booking(action::DISPLACE)?;
                Ok(ReservationEvent::ReservationDisplaced {
                    block_id,
                    outcome: displacement_outcome(&payment, self.price.total),
                    at: now,
                })
            }
            ReservationCommand::RecordReminderDue { start, due_at } => {
                let (_, slot) = self.booking(action::REMIND)?;
                if slot.start != start {
                    return Err(DomainError::inconsistent(
                        "start",
                        "is not the booked slot's start",
                    ));
                }
                if self.reminded_for == Some(start) {
                    return Err(DomainError::InvalidTransition {
                        from: "reminded".to_owned(),
                        action: action::REMIND.to_owned(),
                    });
                }
                Ok(ReservationEvent::ReminderDue { start, due_at })
            }
        }
    }
}

impl Reservation {
    /// The state after `event` (the fold of every reader).
    fn evolve(&mut self, event: ReservationEvent) {
        match event {
            ReservationEvent::ReservationBooked {
                reservation_id,
                patient_id,
                clinic_id,
                treatment_id,
                slot,
                price,
                payment,
                prepaid,
                promo_code,
                booked_at: _,
            } => {
                self.reservation_id = Some(reservation_id);
                self.status = ReservationStatus::Booked;
                self.patient_id = Some(patient_id);
                self.clinic_id = Some(clinic_id);
                self.treatment_id = Some(treatment_id);
                self.slot = Some(slot);
                self.price = price;
                self.prepaid = prepaid;
                self.payment = Some(payment);
                self.promo_code = promo_code;
            }
            ReservationEvent::WaitlistJoined(entry) => {
                self.reservation_id = Some(entry.reservation_id);
                self.status = ReservationStatus::Waitlisted;
                self.patient_id = Some(entry.patient_id);
                self.clinic_id = Some(entry.clinic_id);
                self.treatment_id = Some(entry.treatment_id);
                self.wanted = Some((entry.earliest, entry.latest));
                self.payment = Some(entry.payment);
            }
            ReservationEvent::ReservationRescheduled { to, .. } => self.slot = Some(to),
            ReservationEvent::ReservationCancelled { outcome, .. } => {
                self.status = ReservationStatus::Cancelled;
                self.settlement = Some(outcome);
            }
            ReservationEvent::CheckedIn { .. } => self.status = ReservationStatus::CheckedIn,
            ReservationEvent::ReservationCompleted { .. } => {
                self.status = ReservationStatus::Completed
            }
            ReservationEvent::MarkedNoShow { outcome, .. } => {
                self.status = ReservationStatus::NoShow;
                self.settlement = Some(outcome);
            }
            ReservationEvent::ReservationDisplaced { outcome, .. } => {
                self.status = ReservationStatus::Displaced;
                self.settlement = Some(outcome);
            }
            ReservationEvent::ReminderDue { start, .. } => self.reminded_for = Some(start),
        }
    }
}

crate::aggregate::aggregate!(Reservation: ReservationCommand => ReservationEvent, version = |event: &ReservationEvent| {
    crate::upcast::current_version(crate::AggregateKind::Reservation.name(), <&'static str>::from(event))
});

#[cfg(test)]
mod tests {
    use chrono::TimeDelta;
    use cqrs_es::test::TestFramework;

    use cqrs_es::{Aggregate, DomainEvent};

    use super::*;
    use crate::testing::{fold, id, now, outcome};

    fn hours(n: i64) -> TimeDelta {
        TimeDelta::hours(n)
    }

    fn reservation_id() -> ReservationId {
        ReservationId(id(1))
    }

    fn patient() -> PatientId {
        PatientId(id(2))
    }

    fn clinic() -> ClinicId {
        ClinicId(id(3))
    }

    fn treatment() -> TreatmentId {
        TreatmentId(id(4))
    }

    fn block() -> BlockId {
        BlockId(id(5))
    }

    /// A one-hour slot starting `from_now` after `now()`.
    fn slot_in(from_now: TimeDelta) -> Slot {
        Slot {
            resource_id: ResourceId(id(6)),
            start: now() + from_now,
            end: now() + from_now + hours(1),
        }
    }

    /// The booked slot: three days ahead.
    fn slot() -> Slot {
        slot_in(hours(72))
    }

    fn price() -> PriceBreakdown {
        PriceBreakdown {
            base: Money(10_000),
            adjustments: Money(2_000),
            discount: Money(1_000),
            total: Money(11_000),
        }
    }

    fn policy() -> CancellationPolicy {
        CancellationPolicy {
            notice_hours: 24,
            late_fee_percent: 50,
        }
    }

    fn package_payment() -> PaymentMethod {
        PaymentMethod::Package {
            package_id: PackageId(id(7)),
        }
    }

    fn book_at(slot: Slot) -> ReservationCommand {
        ReservationCommand::Book {
            reservation_id: reservation_id(),
            patient_id: patient(),
            clinic_id: clinic(),
            treatment_id: treatment(),
            slot,
            price: price(),
            payment: PaymentMethod::Wallet,
            promo_code: None,
            now: now(),
        }
    }

    fn book() -> ReservationCommand {
        book_at(slot())
    }

    fn booked_with(payment: PaymentMethod) -> ReservationEvent {
        ReservationEvent::ReservationBooked {
            reservation_id: reservation_id(),
            patient_id: patient(),
            clinic_id: clinic(),
            treatment_id: treatment(),
            slot: slot(),
            price: price(),
            payment,
            prepaid: match payment {
                PaymentMethod::Wallet => price().total,
                _ => Money::ZERO,
            },
            promo_code: None,
            booked_at: now(),
        }
    }

    fn booked() -> ReservationEvent {
        booked_with(PaymentMethod::Wallet)
    }

    /// Wanted window: from two to four days ahead.
    fn join_waitlist() -> ReservationCommand {
        ReservationCommand::JoinWaitlist {
            entry: entry(),
            now: now(),
        }
    }

    fn entry() -> WaitlistEntry {
        WaitlistEntry {
            reservation_id: reservation_id(),
            patient_id: patient(),
            clinic_id: clinic(),
            treatment_id: treatment(),
            earliest: now() + hours(48),
            latest: now() + hours(96),
            payment: PaymentMethod::Wallet,
        }
    }

    fn waitlisted() -> ReservationEvent {
        ReservationEvent::WaitlistJoined(entry())
    }

    /// `WaitlistJoined` is stored as the entry's fields under the variant
    /// name, as when the fields were the variant's own: events stored
    /// before still read, and new ones read as before. `JoinWaitlist`
    /// flattens the entry the same way.
    #[test]
    fn waitlist_joined_keeps_its_stored_shape() {
        let e = entry();
        let fields = serde_json::json!({
            "reservation_id": e.reservation_id,
            "patient_id": e.patient_id,
            "clinic_id": e.clinic_id,
            "treatment_id": e.treatment_id,
            "earliest": e.earliest,
            "latest": e.latest,
            "payment": e.payment,
        });
        let stored = serde_json::json!({ "WaitlistJoined": fields.clone() });
        assert_eq!(serde_json::to_value(waitlisted()).unwrap(), stored);
        assert_eq!(
            serde_json::from_value::<ReservationEvent>(stored).unwrap(),
            waitlisted()
        );
        let mut command = fields;
        command["now"] = serde_json::json!(now());
        let command = serde_json::json!({ "JoinWaitlist": command });
        assert_eq!(serde_json::to_value(join_waitlist()).unwrap(), command);
        assert_eq!(
            serde_json::from_value::<ReservationCommand>(command).unwrap(),
            join_waitlist()
        );
    }

    fn reschedule() -> ReservationCommand {
        ReservationCommand::Reschedule {
            slot: slot_in(hours(96)),
            now: now(),
        }
    }

    fn cancel_at(at: DateTime<Utc>) -> ReservationCommand {
        ReservationCommand::Cancel {
            reason: "patient asked".to_string(),
            policy: policy(),
            now: at,
        }
    }

    fn cancel() -> ReservationCommand {
        cancel_at(now())
    }

    fn cancelled(outcome: CancellationOutcome) -> ReservationEvent {
        cancelled_at(now(), outcome)
    }

    /// What `cancel_at(at)` records when it settles `outcome`.
    fn cancelled_at(at: DateTime<Utc>, outcome: CancellationOutcome) -> ReservationEvent {
        ReservationEvent::ReservationCancelled {
            reason: "patient asked".to_string(),
            outcome,
            at,
        }
    }

    fn checked_in() -> ReservationEvent {
        ReservationEvent::CheckedIn { at: now() }
    }

    fn completed() -> ReservationEvent {
        ReservationEvent::ReservationCompleted { at: now() }
    }

    fn no_show() -> ReservationEvent {
        ReservationEvent::MarkedNoShow {
            outcome: no_show_outcome(&PaymentMethod::Wallet, price().total),
            at: now(),
        }
    }

    fn displaced() -> ReservationEvent {
        ReservationEvent::ReservationDisplaced {
            block_id: block(),
            outcome: displacement_outcome(&PaymentMethod::Wallet, price().total),
            at: now(),
        }
    }

    /// A history that leaves the reservation in `status`.
    fn history(status: ReservationStatus) -> Vec<ReservationEvent> {
        match status {
            ReservationStatus::New => vec![],
            ReservationStatus::Waitlisted => vec![waitlisted()],
            ReservationStatus::Booked => vec![booked()],
            ReservationStatus::CheckedIn => vec![booked(), checked_in()],
            ReservationStatus::Completed => vec![booked(), checked_in(), completed()],
            ReservationStatus::Cancelled => {
                vec![booked(), cancelled(outcome(false, 11_000, 0, false))]
            }
            ReservationStatus::NoShow => vec![booked(), no_show()],
            ReservationStatus::Displaced => vec![booked(), displaced()],
        }
    }

    fn replay(events: &[ReservationEvent]) -> Reservation {
        fold(events)
    }

    fn reservation_test() -> TestFramework<Reservation> {
        TestFramework::with(())
    }

    fn invalid_transition(from: ReservationStatus, action: &str) -> DomainError {
        DomainError::InvalidTransition {
            from: from.as_str().to_string(),
            action: action.to_string(),
        }
    }

    fn field_of(result: Result<Vec<ReservationEvent>, DomainError>) -> String {
        match result {
            Err(DomainError::InvalidInput { field, .. }) => field,
            other => panic!("expected InvalidInput, got {other:?}"),
        }
    }

    /// The field named by an `InconsistentInput` refusal: fields each valid
    /// that disagree with each other or with the waitlist entry.
    fn inconsistent_field_of(result: Result<Vec<ReservationEvent>, DomainError>) -> String {
        match result {
            Err(DomainError::InconsistentInput { field, .. }) => field,
            other => panic!("expected InconsistentInput, got {other:?}"),
        }
    }

    /// One command of each kind, named by the action its refusal names.
    fn every_command() -> Vec<(&'static str, ReservationCommand)> {
        vec![
            (action::BOOK, book()),
            (action::JOIN_WAITLIST, join_waitlist()),
            (action::RESCHEDULE, reschedule()),
            (action::CANCEL, cancel()),
            (action::CHECK_IN, ReservationCommand::CheckIn { now: now() }),
            (
                action::COMPLETE,
                ReservationCommand::Complete { now: now() },
            ),
            (
                action::MARK_NO_SHOW,
                ReservationCommand::MarkNoShow { now: now() },
            ),
            (
                action::DISPLACE,
                ReservationCommand::Displace {
                    block_id: block(),
                    now: now(),
                },
            ),
        ]
    }

    /// The status each legal (status, action) pair leads to; every pair not
    /// listed must be refused.
    fn legal(status: ReservationStatus, action: &str) -> Option<ReservationStatus> {
        use ReservationStatus::*;
        match (status, action) {
            (New | Waitlisted, action::BOOK) => Some(Booked),
            (New, action::JOIN_WAITLIST) => Some(Waitlisted),
            (Booked, action::RESCHEDULE) => Some(Booked),
            (Waitlisted | Booked, action::CANCEL) => Some(Cancelled),
            (Booked, action::CHECK_IN) => Some(CheckedIn),
            (CheckedIn, action::COMPLETE) => Some(Completed),
            (Booked, action::MARK_NO_SHOW) => Some(NoShow),
            (Booked, action::DISPLACE) => Some(Displaced),
            _ => None,
        }
    }

    #[test]
    fn every_status_and_command_pair_follows_the_state_machine() {
        let mut legal_pairs = 0;
        for status in ReservationStatus::ALL {
            assert_eq!(replay(&history(status)).status, status);
            for (action, command) in every_command() {
                let result = reservation_test()
                    .given(history(status))
                    .when(command)
                    .inspect_result();
                match legal(status, action) {
                    Some(next) => {
                        legal_pairs += 1;
                        let events = result.unwrap_or_else(|e| panic!("{status:?} {action}: {e}"));
                        assert_eq!(events.len(), 1, "{status:?} {action}");
                        let mut all = history(status);
                        all.extend(events);
                        assert_eq!(replay(&all).status, next, "{status:?} {action}");
                    }
                    None if status == ReservationStatus::New => {
                        assert_eq!(
                            result,
                            Err(DomainError::not_found("reservation")),
                            "{action}"
                        );
                    }
                    None => {
                        assert_eq!(
                            result,
                            Err(invalid_transition(status, action)),
                            "{status:?} {action}"
                        );
                    }
                }
            }
        }
        assert_eq!(legal_pairs, 10);
    }

    #[test]
    fn a_cancelled_waitlist_entry_is_final() {
        let history = vec![waitlisted(), cancelled(CancellationOutcome::default())];
        assert_eq!(replay(&history).status, ReservationStatus::Cancelled);
        for (action, command) in every_command() {
            reservation_test()
                .given(history.clone())
                .when(command)
                .then_expect_error(invalid_transition(ReservationStatus::Cancelled, action));
        }
    }

    #[test]
    fn book_records_the_whole_booking() {
        reservation_test()
            .given_no_previous_events()
            .when(book())
            .then_expect_events(vec![booked()]);
        let reservation = replay(&[booked()]);
        assert_eq!(reservation.reservation_id, Some(reservation_id()));
        assert_eq!(reservation.slot, Some(slot()));
        assert_eq!(reservation.price, price());
        assert_eq!(reservation.payment, Some(PaymentMethod::Wallet));
    }

    #[test]
    fn book_keeps_the_promo_code() {
        let code = PromoCodeKey::parse("WELCOME").ok();
        let mut command = book();
        if let ReservationCommand::Book { promo_code, .. } = &mut command {
            promo_code.clone_from(&code);
        }
        let events = reservation_test()
            .given_no_previous_events()
            .when(command)
            .inspect_result()
            .unwrap_or_default();
        assert_eq!(replay(&events).promo_code, code);
    }

    #[test]
    fn book_in_the_past_is_refused() {
        for start in [now(), now() - hours(1)] {
            reservation_test()
                .given_no_previous_events()
                .when(book_at(Slot {
                    start,
                    end: start + hours(1),
                    ..slot()
                }))
                .then_expect_error(DomainError::InThePast);
        }
    }

    #[test]
    fn book_needs_an_end_after_the_start() {
        for end in [slot().start, slot().start - hours(1)] {
            let result = reservation_test()
                .given_no_previous_events()
                .when(book_at(Slot { end, ..slot() }))
                .inspect_result();
            assert_eq!(field_of(result), "end");
        }
    }

    #[test]
    fn book_needs_a_non_negative_total() {
        let mut command = book();
        if let ReservationCommand::Book { price, .. } = &mut command {
            price.total = Money(-1);
        }
        let result = reservation_test()
            .given_no_previous_events()
            .when(command)
            .inspect_result();
        assert_eq!(field_of(result), "price");
    }

    #[test]
    fn book_with_a_zero_total_is_accepted() {
        let mut command = book();
        if let ReservationCommand::Book { price, .. } = &mut command {
            *price = PriceBreakdown::default();
        }
        let result = reservation_test()
            .given_no_previous_events()
            .when(command)
            .inspect_result();
        assert!(matches!(
            result.as_deref(),
            Ok([ReservationEvent::ReservationBooked { .. }])
        ));
    }

    #[test]
    fn join_waitlist_records_the_window() {
        reservation_test()
            .given_no_previous_events()
            .when(join_waitlist())
            .then_expect_events(vec![waitlisted()]);
        let reservation = replay(&[waitlisted()]);
        assert_eq!(
            reservation.wanted,
            Some((now() + hours(48), now() + hours(96)))
        );
        assert_eq!(reservation.slot, None);
    }

    /// `join_waitlist()` with another window.
    fn join_waitlist_for(from: DateTime<Utc>, to: DateTime<Utc>) -> ReservationCommand {
        let mut command = join_waitlist();
        if let ReservationCommand::JoinWaitlist { entry, .. } = &mut command {
            entry.earliest = from;
            entry.latest = to;
        }
        command
    }

    #[test]
    fn join_waitlist_accepts_a_single_instant_and_a_window_that_began() {
        for (from, to) in [
            (now() + hours(5), now() + hours(5)),
            (now() - hours(5), now() + hours(5)),
        ] {
            let result = reservation_test()
                .given_no_previous_events()
                .when(join_waitlist_for(from, to))
                .inspect_result();
            assert!(matches!(
                result.as_deref(),
                Ok([ReservationEvent::WaitlistJoined { .. }])
            ));
        }
    }

    #[test]
    fn join_waitlist_refuses_a_reversed_window() {
        let result = reservation_test()
            .given_no_previous_events()
            .when(join_waitlist_for(now() + hours(5), now() + hours(4)))
            .inspect_result();
        assert_eq!(inconsistent_field_of(result), "latest");
    }

    #[test]
    fn join_waitlist_refuses_a_window_that_ended() {
        for latest in [now(), now() - hours(1)] {
            reservation_test()
                .given_no_previous_events()
                .when(join_waitlist_for(now() - hours(10), latest))
                .then_expect_error(DomainError::InThePast);
        }
    }

    #[test]
    fn book_fulfils_a_waitlist_entry_inside_its_window() {
        for start in [hours(48), hours(72), hours(96)] {
            let result = reservation_test()
                .given(vec![waitlisted()])
                .when(book_at(slot_in(start)))
                .inspect_result();
            assert!(
                matches!(
                    result.as_deref(),
                    Ok([ReservationEvent::ReservationBooked { .. }])
                ),
                "{start}"
            );
        }
    }

    #[test]
    fn book_outside_the_waitlist_window_is_refused() {
        for start in [hours(47), hours(97)] {
            let result = reservation_test()
                .given(vec![waitlisted()])
                .when(book_at(slot_in(start)))
                .inspect_result();
            assert_eq!(inconsistent_field_of(result), "start");
        }
    }

    #[test]
    fn book_must_match_the_waitlist_entry() {
        let other = |field: &str| {
            let mut command = book();
            if let ReservationCommand::Book {
                reservation_id,
                patient_id,
                clinic_id,
                treatment_id,
                ..
            } = &mut command
            {
                match field {
                    "reservation_id" => *reservation_id = ReservationId(id(99)),
                    "patient_id" => *patient_id = PatientId(id(99)),
                    "clinic_id" => *clinic_id = ClinicId(id(99)),
                    _ => *treatment_id = TreatmentId(id(99)),
                }
            }
            command
        };
        for field in ["reservation_id", "patient_id", "clinic_id", "treatment_id"] {
            let result = reservation_test()
                .given(vec![waitlisted()])
                .when(other(field))
                .inspect_result();
            assert_eq!(inconsistent_field_of(result), field);
        }
    }

    #[test]
    fn book_from_the_waitlist_in_the_past_is_refused() {
        let mut command = book_at(slot_in(hours(50)));
        if let ReservationCommand::Book { now: at, .. } = &mut command {
            *at = now() + hours(60);
        }
        reservation_test()
            .given(vec![waitlisted()])
            .when(command)
            .then_expect_error(DomainError::InThePast);
    }

    #[test]
    fn reschedule_moves_the_slot() {
        reservation_test()
            .given(vec![booked()])
            .when(reschedule())
            .then_expect_events(vec![ReservationEvent::ReservationRescheduled {
                from: slot(),
                to: slot_in(hours(96)),
            }]);
        let moved = ReservationEvent::ReservationRescheduled {
            from: slot(),
            to: slot_in(hours(96)),
        };
        let reservation = replay(&[booked(), moved]);
        assert_eq!(reservation.slot, Some(slot_in(hours(96))));
        assert_eq!(reservation.status, ReservationStatus::Booked);
    }

    #[test]
    fn a_reminder_falls_due_once_per_booked_start() {
        let due_at = slot().start - hours(24);
        let remind = |start| ReservationCommand::RecordReminderDue { start, due_at };
        let reminded = ReservationEvent::ReminderDue {
            start: slot().start,
            due_at,
        };
        reservation_test()
            .given(vec![booked()])
            .when(remind(slot().start))
            .then_expect_events(vec![reminded.clone()]);
        // Once per start: a second is refused, a rescheduled start is
        // reminded of again, a stale start is refused.
        let refused = reservation_test()
            .given(vec![booked(), reminded.clone()])
            .when(remind(slot().start))
            .inspect_result();
        assert!(
            matches!(refused, Err(DomainError::InvalidTransition { .. })),
            "{refused:?}"
        );
        let moved = ReservationEvent::ReservationRescheduled {
            from: slot(),
            to: slot_in(hours(96)),
        };
        reservation_test()
            .given(vec![booked(), reminded.clone(), moved.clone()])
            .when(remind(slot_in(hours(96)).start))
            .then_expect_events(vec![ReservationEvent::ReminderDue {
                start: slot_in(hours(96)).start,
                due_at,
            }]);
        let stale = reservation_test()
            .given(vec![booked(), moved])
            .when(remind(slot().start))
            .inspect_result();
        assert!(
            matches!(stale, Err(DomainError::InconsistentInput { .. })),
            "{stale:?}"
        );
        // Nothing to remind of once cancelled; the status never changes.
        let gone = reservation_test()
            .given(vec![booked(), cancelled(CancellationOutcome::default())])
            .when(remind(slot().start))
            .inspect_result();
        assert!(
            matches!(gone, Err(DomainError::InvalidTransition { .. })),
            "{gone:?}"
        );
        let state = replay(&[booked(), reminded]);
        assert_eq!(state.status, ReservationStatus::Booked);
        assert_eq!(state.reminded_for, Some(slot().start));
    }

    #[test]
    fn reschedule_into_the_past_is_refused() {
        reservation_test()
            .given(vec![booked()])
            .when(ReservationCommand::Reschedule {
                slot: slot_in(hours(-1)),
                now: now(),
            })
            .then_expect_error(DomainError::InThePast);
    }

    #[test]
    fn reschedule_needs_an_end_after_the_start() {
        let result = reservation_test()
            .given(vec![booked()])
            .when(ReservationCommand::Reschedule {
                slot: Slot {
                    end: slot().start,
                    ..slot()
                },
                now: now(),
            })
            .inspect_result();
        assert_eq!(field_of(result), "end");
    }

    #[test]
    fn cancel_on_time_refunds_a_wallet_payment() {
        reservation_test()
            .given(vec![booked()])
            .when(cancel_at(slot().start - hours(24)))
            .then_expect_events(vec![cancelled_at(
                slot().start - hours(24),
                outcome(false, 11_000, 0, false),
            )]);
    }

    #[test]
    fn cancel_late_keeps_the_fee_of_a_wallet_payment() {
        // 50 % of 11 000.
        reservation_test()
            .given(vec![booked()])
            .when(cancel_at(slot().start - hours(23)))
            .then_expect_events(vec![cancelled_at(
                slot().start - hours(23),
                outcome(true, 5_500, 5_500, false),
            )]);
    }

    #[test]
    fn cancel_restores_or_forfeits_a_package_session() {
        for (before_start, restored) in [(48, true), (2, false)] {
            let at = slot().start - hours(before_start);
            reservation_test()
                .given(vec![booked_with(package_payment())])
                .when(cancel_at(at))
                .then_expect_events(vec![cancelled_at(at, outcome(!restored, 0, 0, restored))]);
        }
    }

    #[test]
    fn cancel_late_of_an_at_clinic_payment_owes_the_fee() {
        let at = slot().start - hours(1);
        reservation_test()
            .given(vec![booked_with(PaymentMethod::AtClinic)])
            .when(cancel_at(at))
            .then_expect_events(vec![cancelled_at(at, outcome(true, 0, 5_500, false))]);
    }

    #[test]
    fn cancel_a_waitlist_entry_settles_nothing() {
        reservation_test()
            .given(vec![waitlisted()])
            .when(cancel())
            .then_expect_events(vec![cancelled(CancellationOutcome::default())]);
    }

    #[test]
    fn the_settlement_is_kept_in_the_state() {
        let settled = outcome(true, 5_500, 5_500, false);
        let reservation = replay(&[booked(), cancelled(settled)]);
        assert_eq!(reservation.settlement, Some(settled));
        assert_eq!(
            replay(&[booked(), no_show()]).settlement,
            Some(outcome(true, 0, 11_000, false))
        );
        assert_eq!(
            replay(&[booked(), displaced()]).settlement,
            Some(outcome(false, 11_000, 0, false))
        );
    }

    #[test]
    fn check_in_is_accepted_at_any_time_while_booked() {
        for at in [now(), slot().start + hours(5)] {
            reservation_test()
                .given(vec![booked()])
                .when(ReservationCommand::CheckIn { now: at })
                .then_expect_events(vec![ReservationEvent::CheckedIn { at }]);
        }
    }

    #[test]
    fn complete_after_check_in() {
        reservation_test()
            .given(vec![booked(), checked_in()])
            .when(ReservationCommand::Complete { now: now() })
            .then_expect_events(vec![completed()]);
    }

    #[test]
    fn complete_without_check_in_is_refused() {
        reservation_test()
            .given(vec![booked()])
            .when(ReservationCommand::Complete { now: now() })
            .then_expect_error(invalid_transition(ReservationStatus::Booked, "complete"));
    }

    #[test]
    fn no_show_forfeits_the_payment() {
        reservation_test()
            .given(vec![booked()])
            .when(ReservationCommand::MarkNoShow { now: now() })
            .then_expect_events(vec![ReservationEvent::MarkedNoShow {
                outcome: outcome(true, 0, 11_000, false),
                at: now(),
            }]);
        reservation_test()
            .given(vec![booked_with(package_payment())])
            .when(ReservationCommand::MarkNoShow { now: now() })
            .then_expect_events(vec![ReservationEvent::MarkedNoShow {
                outcome: outcome(true, 0, 0, false),
                at: now(),
            }]);
    }

    #[test]
    fn displacement_restores_the_payment() {
        reservation_test()
            .given(vec![booked()])
            .when(ReservationCommand::Displace {
                block_id: block(),
                now: now(),
            })
            .then_expect_events(vec![displaced()]);
        reservation_test()
            .given(vec![booked_with(package_payment())])
            .when(ReservationCommand::Displace {
                block_id: block(),
                now: slot().start - hours(1),
            })
            .then_expect_events(vec![ReservationEvent::ReservationDisplaced {
                block_id: block(),
                outcome: outcome(false, 0, 0, true),
                at: slot().start - hours(1),
            }]);
    }

    #[test]
    fn booking_twice_is_an_invalid_transition() {
        reservation_test()
            .given(vec![booked()])
            .when(book())
            .then_expect_error(invalid_transition(ReservationStatus::Booked, "book"));
    }

    #[test]
    fn event_types_are_the_variant_names() {
        let events = [
            booked(),
            waitlisted(),
            ReservationEvent::ReservationRescheduled {
                from: slot(),
                to: slot(),
            },
            cancelled(CancellationOutcome::default()),
            checked_in(),
            completed(),
            no_show(),
            displaced(),
        ];
        let types: Vec<_> = events.iter().map(DomainEvent::event_type).collect();
        assert_eq!(
            types,
            [
                "ReservationBooked",
                "WaitlistJoined",
                "ReservationRescheduled",
                "ReservationCancelled",
                "CheckedIn",
                "ReservationCompleted",
                "MarkedNoShow",
                "ReservationDisplaced",
            ]
        );
        let versions: Vec<_> = events.iter().map(DomainEvent::event_version).collect();
        assert_eq!(versions[0], crate::upcast::RESERVATION_BOOKED_VERSION);
        assert!(versions[1..].iter().all(|v| v == crate::EVENT_VERSION));
        assert_eq!(Reservation::TYPE, "Reservation");
    }

    #[test]
    fn status_names_are_the_api_names() {
        let names: Vec<_> = ReservationStatus::ALL.iter().map(|s| s.as_str()).collect();
        assert_eq!(
            names,
            [
                "new",
                "waitlisted",
                "booked",
                "checked_in",
                "completed",
                "cancelled",
                "no_show",
                "displaced"
            ]
        );
        for status in ReservationStatus::ALL {
            assert_eq!(
                serde_json::to_value(status).ok(),
                Some(serde_json::Value::String(status.as_str().to_string()))
            );
        }
    }
}
