//! The `Package` aggregate: a patient's purchased program of sessions.
//!
//! Invariants: `sessions_used <= sessions_total` at all times, a reservation
//! holds at most one session, and a session is only consumed for the
//! package's treatment, at one of its clinics, by an appointment starting no
//! later than `valid_until`. `ConsumeSession` and `RestoreSession` are
//! idempotent per reservation, so a retried unit of work writes nothing
//! twice; so is `Transfer` to the clinic the package is already limited to.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::{
    ClinicId, DomainError, Money, PackageId, PatientId, ProgramId, ReservationId, TreatmentId,
};

/// How a package was paid. [`PackagePaymentKind`] names the method
/// without its reference (the `method` tag, as read models store it).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, strum::EnumDiscriminants)]
#[serde(tag = "method", rename_all = "snake_case")]
#[strum_discriminants(
    name(PackagePaymentKind),
    doc = "The method of a [`PackagePayment`] without its reference: `wallet` or `external`.",
    derive(Serialize, Deserialize, strum::IntoStaticStr),
    serde(rename_all = "snake_case"),
    strum(serialize_all = "snake_case")
)]
pub enum PackagePayment {
    /// Debited from the wallet.
    Wallet,
    /// Paid outside (card terminal, bank transfer) under this reference.
    External {
        /// The payment reference.
        reference: String,
    },
}

/// The `Package` aggregate state.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Package {
    /// `None` until purchased.
    pub package_id: Option<PackageId>,
    /// Owner.
    pub patient_id: Option<PatientId>,
    /// The program bought.
    pub program_id: Option<ProgramId>,
    /// The treatment its sessions are for.
    pub treatment_id: Option<TreatmentId>,
    /// Sessions bought.
    pub sessions_total: u32,
    /// Sessions consumed and not restored.
    pub sessions_used: u32,
    /// Last instant an appointment may start and use it.
    pub valid_until: Option<DateTime<Utc>>,
    /// Clinics where it may be used.
    pub clinic_ids: Vec<ClinicId>,
    /// Price paid.
    pub price: Money,
    /// Reservations currently holding a session.
    pub consumed_by: Vec<ReservationId>,
}

/// Commands of the `Package` aggregate.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum PackageCommand {
    /// Buy a program.
    Purchase {
        /// Id.
        package_id: PackageId,
        /// Owner.
        patient_id: PatientId,
        /// Program.
        program_id: ProgramId,
        /// Treatment of the program.
        treatment_id: TreatmentId,
        /// Positive number of sessions.
        sessions: u32,
        /// Price paid (non-negative).
        price: Money,
        /// Expiry (after `now`).
        valid_until: DateTime<Utc>,
        /// Clinics where valid (non-empty).
        clinic_ids: Vec<ClinicId>,
        /// Payment.
        payment: PackagePayment,
        /// Current time.
        now: DateTime<Utc>,
    },
    /// Use one session for a reservation (no-op if that reservation already holds one).
    ConsumeSession {
        /// The reservation.
        reservation_id: ReservationId,
        /// Its clinic.
        clinic_id: ClinicId,
        /// Its treatment.
        treatment_id: TreatmentId,
        /// Its start: must not be after `valid_until`.
        appointment_start: DateTime<Utc>,
    },
    /// Give back the session a reservation holds (no-op if it holds none).
    RestoreSession {
        /// The reservation.
        reservation_id: ReservationId,
    },
    /// Make the package valid at another clinic instead of its current ones.
    Transfer {
        /// The new clinic.
        to_clinic_id: ClinicId,
    },
}

/// Events of the `Package` aggregate. Variant names are stored event types: frozen.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, strum::IntoStaticStr)]
pub enum PackageEvent {
    /// Bought.
    PackagePurchased {
        /// Id.
        package_id: PackageId,
        /// Owner.
        patient_id: PatientId,
        /// Program.
        program_id: ProgramId,
        /// Treatment.
        treatment_id: TreatmentId,
        /// Sessions.
        sessions: u32,
        /// Price.
        price: Money,
        /// Expiry.
        valid_until: DateTime<Utc>,
        /// Clinics.
        clinic_ids: Vec<ClinicId>,
        /// Payment.
        payment: PackagePayment,
        /// When.
        purchased_at: DateTime<Utc>,
    },
    /// A session was used by a reservation.
    SessionConsumed {
        /// The reservation.
        reservation_id: ReservationId,
    },
    /// A session was given back.
    SessionRestored {
        /// The reservation.
        reservation_id: ReservationId,
    },
    /// Moved to another clinic.
    PackageTransferred {
        /// Clinics before.
        from_clinic_ids: Vec<ClinicId>,
        /// Clinic now.
        to_clinic_id: ClinicId,
    },
}

impl Package {
    /// True once purchased.
    pub fn is_purchased(&self) -> bool {
        self.package_id.is_some()
    }

    /// Sessions that can still be consumed.
    pub fn sessions_left(&self) -> u32 {
        self.sessions_total.saturating_sub(self.sessions_used)
    }

    /// True when `reservation_id` currently holds one of its sessions.
    pub fn holds_session(&self, reservation_id: ReservationId) -> bool {
        self.consumed_by.contains(&reservation_id)
    }

    /// Fails with `NotFound` unless purchased.
    fn require_purchased(&self) -> Result<(), DomainError> {
        if self.is_purchased() {
            Ok(())
        } else {
            Err(DomainError::not_found("package"))
        }
    }

    /// Checks that a session may be used by an appointment of `treatment_id`
    /// at `clinic_id` starting at `appointment_start`.
    fn check_usable(
        &self,
        clinic_id: ClinicId,
        treatment_id: TreatmentId,
        appointment_start: DateTime<Utc>,
    ) -> Result<(), DomainError> {
        if self.sessions_left() == 0 {
            return Err(DomainError::NoSessionsLeft);
        }
        if self
            .valid_until
            .is_none_or(|until| appointment_start > until)
        {
            return Err(DomainError::PackageExpired);
        }
        if !self.clinic_ids.contains(&clinic_id) {
            return Err(DomainError::PackageNotValidHere);
        }
        if self.treatment_id != Some(treatment_id) {
            return Err(DomainError::PackageNotForTreatment);
        }
        Ok(())
    }
}

/// Checks the fields of a purchase.
fn check_purchase(
    sessions: u32,
    price: Money,
    valid_until: DateTime<Utc>,
    clinic_ids: &[ClinicId],
    payment: &PackagePayment,
    now: DateTime<Utc>,
) -> Result<(), DomainError> {
    if sessions == 0 {
        return Err(DomainError::invalid("sessions", "must be positive"));
    }
    if price.is_negative() {
        return Err(DomainError::invalid("price_cents", "must not be negative"));
    }
    if valid_until <= now {
        return Err(DomainError::invalid("valid_until", "must be in the future"));
    }
    if clinic_ids.is_empty() {
        return Err(DomainError::invalid(
            "clinic_ids",
            "must name at least one clinic",
        ));
    }
    if let PackagePayment::External { reference } = payment {
        if reference.trim().is_empty() {
            return Err(DomainError::invalid("reference", "must not be empty"));
        }
    }
    Ok(())
}

impl Package {
    /// The event `command` produces.
    ///
    /// # Errors
    /// `AlreadyExists` for a second purchase; `InvalidInput` for a purchase
    /// with no sessions, a negative price, an expiry not after `now`, no
    /// clinic or an empty external reference; `NotFound` for any other
    /// command before the purchase; `NoSessionsLeft`, `PackageExpired`,
    /// `PackageNotValidHere`, `PackageNotForTreatment` when a session cannot
    /// be consumed.
    fn decide(&self, command: PackageCommand) -> Result<Option<PackageEvent>, DomainError> {
        let event = match command {
            PackageCommand::Purchase {
                package_id,
                patient_id,
                program_id,
                treatment_id,
                sessions,
                price,
                valid_until,
                clinic_ids,
                payment,
                now,
            } => {
                if self.is_purchased() {
                    return Err(DomainError::AlreadyExists {
                        what: format!("package {package_id}"),
                    });
                }
                check_purchase(sessions, price, valid_until, &clinic_ids, &payment, now)?;
                PackageEvent::PackagePurchased {
                    package_id,
                    patient_id,
                    program_id,
                    treatment_id,
                    sessions,
                    price,
                    valid_until,
                    clinic_ids,
                    payment,
                    purchased_at: now,
                }
            }
            PackageCommand::ConsumeSession {
                reservation_id,
                clinic_id,
                treatment_id,
                appointment_start,
            } => {
                self.require_purchased()?;
                if self.holds_session(reservation_id) {
                    return Ok(None);
                }
                self.check_usable(clinic_id, treatment_id, appointment_start)?;
                PackageEvent::SessionConsumed { reservation_id }
            }
            PackageCommand::RestoreSession { reservation_id } => {
                self.require_purchased()?;
                if !self.holds_session(reservation_id) {
                    return Ok(None);
                }
                PackageEvent::SessionRestored { reservation_id }
            }
            PackageCommand::Transfer { to_clinic_id } => {
                self.require_purchased()?;
                if self.clinic_ids == [to_clinic_id] {
                    return Ok(None);
                }
                PackageEvent::PackageTransferred {
                    from_clinic_ids: self.clinic_ids.clone(),
                    to_clinic_id,
                }
            }
        };
        Ok(Some(event))
    }

    /// The state after `event` (the fold of every reader).
    fn evolve(&mut self, event: PackageEvent) {
        match event {
            PackageEvent::PackagePurchased {
                package_id,
                patient_id,
                program_id,
                treatment_id,
                sessions,
                price,
                valid_until,
                clinic_ids,
                payment: _,
                purchased_at: _,
            } => {
                self.package_id = Some(package_id);
                self.patient_id = Some(patient_id);
                self.program_id = Some(program_id);
                self.treatment_id = Some(treatment_id);
                self.sessions_total = sessions;
                self.valid_until = Some(valid_until);
                self.clinic_ids = clinic_ids;
                self.price = price;
            }
            PackageEvent::SessionConsumed { reservation_id } => {
                if !self.holds_session(reservation_id) && self.sessions_left() > 0 {
                    self.consumed_by.push(reservation_id);
                    self.sessions_used += 1;
                }
            }
            PackageEvent::SessionRestored { reservation_id } => {
                if self.holds_session(reservation_id) {
                    self.consumed_by.retain(|held| *held != reservation_id);
                    self.sessions_used = self.sessions_used.saturating_sub(1);
                }
            }
            PackageEvent::PackageTransferred { to_clinic_id, .. } => {
                self.clinic_ids = vec![to_clinic_id];
            }
        }
    }
}

crate::aggregate::aggregate!(Package: PackageCommand => PackageEvent);

#[cfg(test)]
mod tests {
    use chrono::TimeDelta;
    use cqrs_es::test::TestFramework;
    use proptest::prelude::*;

    use cqrs_es::{Aggregate, DomainEvent};

    use super::*;
    use crate::testing::{fold, id, now};

    fn valid_until() -> DateTime<Utc> {
        now() + TimeDelta::days(90)
    }

    fn clinic() -> ClinicId {
        ClinicId(id(1))
    }

    fn other_clinic() -> ClinicId {
        ClinicId(id(2))
    }

    fn treatment() -> TreatmentId {
        TreatmentId(id(3))
    }

    fn reservation(n: u128) -> ReservationId {
        ReservationId(id(100 + n))
    }

    fn purchase() -> PackageCommand {
        PackageCommand::Purchase {
            package_id: PackageId(id(10)),
            patient_id: PatientId(id(11)),
            program_id: ProgramId(id(12)),
            treatment_id: treatment(),
            sessions: 2,
            price: Money(60_000),
            valid_until: valid_until(),
            clinic_ids: vec![clinic()],
            payment: PackagePayment::External {
                reference: "card-77".to_string(),
            },
            now: now(),
        }
    }

    fn purchased_with(sessions: u32) -> PackageEvent {
        PackageEvent::PackagePurchased {
            package_id: PackageId(id(10)),
            patient_id: PatientId(id(11)),
            program_id: ProgramId(id(12)),
            treatment_id: treatment(),
            sessions,
            price: Money(60_000),
            valid_until: valid_until(),
            clinic_ids: vec![clinic()],
            payment: PackagePayment::External {
                reference: "card-77".to_string(),
            },
            purchased_at: now(),
        }
    }

    fn purchased() -> PackageEvent {
        purchased_with(2)
    }

    fn consume(n: u128) -> PackageCommand {
        PackageCommand::ConsumeSession {
            reservation_id: reservation(n),
            clinic_id: clinic(),
            treatment_id: treatment(),
            appointment_start: now() + TimeDelta::days(7),
        }
    }

    /// Reservation 1 consumes a session at `clinic_id`, for
    /// `treatment_id`, starting at `appointment_start`.
    fn consume_for(
        clinic_id: ClinicId,
        treatment_id: TreatmentId,
        appointment_start: DateTime<Utc>,
    ) -> PackageCommand {
        PackageCommand::ConsumeSession {
            reservation_id: reservation(1),
            clinic_id,
            treatment_id,
            appointment_start,
        }
    }

    fn consumed(n: u128) -> PackageEvent {
        PackageEvent::SessionConsumed {
            reservation_id: reservation(n),
        }
    }

    fn restore(n: u128) -> PackageCommand {
        PackageCommand::RestoreSession {
            reservation_id: reservation(n),
        }
    }

    fn restored(n: u128) -> PackageEvent {
        PackageEvent::SessionRestored {
            reservation_id: reservation(n),
        }
    }

    fn replay(events: &[PackageEvent]) -> Package {
        fold(events)
    }

    fn package_test() -> TestFramework<Package> {
        TestFramework::with(())
    }

    fn expect_invalid(command: PackageCommand, expected_field: &str) {
        let result = package_test()
            .given_no_previous_events()
            .when(command)
            .inspect_result();
        assert!(
            matches!(&result, Err(DomainError::InvalidInput { field, .. }) if field == expected_field),
            "expected invalid {expected_field}, got {result:?}"
        );
    }

    /// `purchase()` with one field changed.
    fn purchase_with(change: impl FnOnce(&mut PackageCommand)) -> PackageCommand {
        let mut command = purchase();
        change(&mut command);
        command
    }

    #[test]
    fn purchase_records_the_package() {
        package_test()
            .given_no_previous_events()
            .when(purchase())
            .then_expect_events(vec![purchased()]);
        let package = replay(&[purchased()]);
        assert_eq!(package.sessions_total, 2);
        assert_eq!(package.sessions_left(), 2);
        assert_eq!(package.valid_until, Some(valid_until()));
    }

    #[test]
    fn a_free_package_may_be_purchased() {
        let command = purchase_with(|c| {
            if let PackageCommand::Purchase { price, .. } = c {
                *price = Money::ZERO;
            }
        });
        let result = package_test()
            .given_no_previous_events()
            .when(command)
            .inspect_result();
        assert!(matches!(
            result.as_deref(),
            Ok([PackageEvent::PackagePurchased { .. }])
        ));
    }

    #[test]
    fn purchase_only_once() {
        package_test()
            .given(vec![purchased()])
            .when(purchase())
            .then_expect_error(DomainError::AlreadyExists {
                what: format!("package {}", PackageId(id(10))),
            });
    }

    #[test]
    fn purchase_needs_sessions() {
        expect_invalid(
            purchase_with(|c| {
                if let PackageCommand::Purchase { sessions, .. } = c {
                    *sessions = 0;
                }
            }),
            "sessions",
        );
    }

    #[test]
    fn purchase_price_is_not_negative() {
        expect_invalid(
            purchase_with(|c| {
                if let PackageCommand::Purchase { price, .. } = c {
                    *price = Money(-1);
                }
            }),
            "price_cents",
        );
    }

    #[test]
    fn purchase_expiry_is_in_the_future() {
        for expiry in [now(), now() - TimeDelta::days(1)] {
            expect_invalid(
                purchase_with(|c| {
                    if let PackageCommand::Purchase { valid_until, .. } = c {
                        *valid_until = expiry;
                    }
                }),
                "valid_until",
            );
        }
    }

    #[test]
    fn purchase_needs_a_clinic() {
        expect_invalid(
            purchase_with(|c| {
                if let PackageCommand::Purchase { clinic_ids, .. } = c {
                    clinic_ids.clear();
                }
            }),
            "clinic_ids",
        );
    }

    #[test]
    fn purchase_external_reference_is_not_empty() {
        expect_invalid(
            purchase_with(|c| {
                if let PackageCommand::Purchase { payment, .. } = c {
                    *payment = PackagePayment::External {
                        reference: " ".to_string(),
                    };
                }
            }),
            "reference",
        );
    }

    #[test]
    fn commands_before_the_purchase_find_no_package() {
        let commands = [
            consume(1),
            restore(1),
            PackageCommand::Transfer {
                to_clinic_id: other_clinic(),
            },
        ];
        for command in commands {
            package_test()
                .given_no_previous_events()
                .when(command)
                .then_expect_error(DomainError::not_found("package"));
        }
    }

    #[test]
    fn consume_uses_one_session() {
        package_test()
            .given(vec![purchased()])
            .when(consume(1))
            .then_expect_events(vec![consumed(1)]);
        let package = replay(&[purchased(), consumed(1)]);
        assert_eq!(package.sessions_used, 1);
        assert_eq!(package.sessions_left(), 1);
        assert!(package.holds_session(reservation(1)));
    }

    #[test]
    fn consume_twice_for_one_reservation_writes_nothing() {
        package_test()
            .given(vec![purchased(), consumed(1)])
            .when(consume(1))
            .then_expect_events(vec![]);
    }

    #[test]
    fn the_last_session_is_held_even_when_none_is_left() {
        package_test()
            .given(vec![purchased(), consumed(1), consumed(2)])
            .when(consume(2))
            .then_expect_events(vec![]);
    }

    #[test]
    fn consume_with_no_session_left_is_refused() {
        package_test()
            .given(vec![purchased(), consumed(1), consumed(2)])
            .when(consume(3))
            .then_expect_error(DomainError::NoSessionsLeft);
    }

    #[test]
    fn consume_after_expiry_is_refused() {
        package_test()
            .given(vec![purchased()])
            .when(consume_for(
                clinic(),
                treatment(),
                valid_until() + TimeDelta::seconds(1),
            ))
            .then_expect_error(DomainError::PackageExpired);
    }

    #[test]
    fn consume_at_the_expiry_instant_is_allowed() {
        package_test()
            .given(vec![purchased()])
            .when(consume_for(clinic(), treatment(), valid_until()))
            .then_expect_events(vec![consumed(1)]);
    }

    #[test]
    fn consume_at_another_clinic_is_refused() {
        package_test()
            .given(vec![purchased()])
            .when(consume_for(
                other_clinic(),
                treatment(),
                now() + TimeDelta::days(1),
            ))
            .then_expect_error(DomainError::PackageNotValidHere);
    }

    #[test]
    fn consume_for_another_treatment_is_refused() {
        package_test()
            .given(vec![purchased()])
            .when(consume_for(
                clinic(),
                TreatmentId(id(99)),
                now() + TimeDelta::days(1),
            ))
            .then_expect_error(DomainError::PackageNotForTreatment);
    }

    #[test]
    fn restore_gives_the_session_back() {
        package_test()
            .given(vec![purchased(), consumed(1), consumed(2)])
            .when(restore(1))
            .then_expect_events(vec![restored(1)]);
        let package = replay(&[purchased(), consumed(1), consumed(2), restored(1)]);
        assert_eq!(package.sessions_used, 1);
        assert!(!package.holds_session(reservation(1)));
        assert!(package.holds_session(reservation(2)));
    }

    #[test]
    fn a_restored_session_can_be_consumed_again() {
        package_test()
            .given(vec![purchased_with(1), consumed(1), restored(1)])
            .when(consume(2))
            .then_expect_events(vec![consumed(2)]);
    }

    #[test]
    fn restore_for_a_reservation_holding_nothing_writes_nothing() {
        package_test()
            .given(vec![purchased(), consumed(1)])
            .when(restore(2))
            .then_expect_events(vec![]);
        package_test()
            .given(vec![purchased(), consumed(1), restored(1)])
            .when(restore(1))
            .then_expect_events(vec![]);
    }

    #[test]
    fn transfer_moves_the_package_to_one_clinic() {
        package_test()
            .given(vec![purchased()])
            .when(PackageCommand::Transfer {
                to_clinic_id: other_clinic(),
            })
            .then_expect_events(vec![PackageEvent::PackageTransferred {
                from_clinic_ids: vec![clinic()],
                to_clinic_id: other_clinic(),
            }]);
        let package = replay(&[
            purchased(),
            PackageEvent::PackageTransferred {
                from_clinic_ids: vec![clinic()],
                to_clinic_id: other_clinic(),
            },
        ]);
        assert_eq!(package.clinic_ids, vec![other_clinic()]);
    }

    #[test]
    fn transfer_to_one_of_several_clinics_narrows_the_package() {
        let mut purchase = purchased();
        if let PackageEvent::PackagePurchased { clinic_ids, .. } = &mut purchase {
            clinic_ids.push(other_clinic());
        }
        package_test()
            .given(vec![purchase])
            .when(PackageCommand::Transfer {
                to_clinic_id: clinic(),
            })
            .then_expect_events(vec![PackageEvent::PackageTransferred {
                from_clinic_ids: vec![clinic(), other_clinic()],
                to_clinic_id: clinic(),
            }]);
    }

    #[test]
    fn transfer_to_the_only_clinic_writes_nothing() {
        package_test()
            .given(vec![purchased()])
            .when(PackageCommand::Transfer {
                to_clinic_id: clinic(),
            })
            .then_expect_events(vec![]);
    }

    #[test]
    fn after_a_transfer_the_old_clinic_is_refused() {
        package_test()
            .given(vec![
                purchased(),
                PackageEvent::PackageTransferred {
                    from_clinic_ids: vec![clinic()],
                    to_clinic_id: other_clinic(),
                },
            ])
            .when(consume(1))
            .then_expect_error(DomainError::PackageNotValidHere);
    }

    #[test]
    fn event_types_are_the_variant_names() {
        let events = [
            purchased(),
            consumed(1),
            restored(1),
            PackageEvent::PackageTransferred {
                from_clinic_ids: vec![],
                to_clinic_id: clinic(),
            },
        ];
        let types: Vec<_> = events.iter().map(DomainEvent::event_type).collect();
        assert_eq!(
            types,
            [
                "PackagePurchased",
                "SessionConsumed",
                "SessionRestored",
                "PackageTransferred"
            ]
        );
        assert!(events
            .iter()
            .all(|e| e.event_version() == crate::EVENT_VERSION));
        assert_eq!(Package::TYPE, "Package");
    }

    proptest! {
        /// Random consumes and restores from a handful of reservations never
        /// push `sessions_used` past `sessions_total` (nor below zero, which
        /// `u32` could only reach by wrapping) and never count a reservation
        /// twice.
        #[test]
        fn sessions_stay_within_bounds(
            sessions in 1..5u32,
            steps in prop::collection::vec((any::<bool>(), 0..6u128), 1..40),
        ) {
            let mut history = vec![purchased_with(sessions)];
            for (is_consume, n) in steps {
                let before = replay(&history);
                let command = if is_consume { consume(n) } else { restore(n) };
                let result = package_test().given(history.clone()).when(command).inspect_result();
                let held = before.holds_session(reservation(n));
                let expected = match (is_consume, held) {
                    (true, false) if before.sessions_left() == 0 => Err(DomainError::NoSessionsLeft),
                    (true, false) => Ok(vec![consumed(n)]),
                    (false, true) => Ok(vec![restored(n)]),
                    (true, true) | (false, false) => Ok(vec![]),
                };
                prop_assert_eq!(&result, &expected);
                history.extend(result.unwrap_or_default());
                let package = replay(&history);
                prop_assert!(package.sessions_used <= package.sessions_total);
                prop_assert_eq!(package.sessions_used as usize, package.consumed_by.len());
                let mut distinct = package.consumed_by.clone();
                distinct.sort();
                distinct.dedup();
                prop_assert_eq!(distinct.len(), package.consumed_by.len());
            }
        }
    }
}
