//! The `PromoCode` aggregate (id = the normalised code): discount, validity
//! window, redemption limits and scope.
//!
//! Invariants: a redemption happens only while the code is active, inside
//! `[valid_from, valid_until)`, for a treatment in scope, with fewer than
//! `max_redemptions` current redemptions and fewer than `per_patient_limit`
//! for that patient; a reservation redeems a code at most once. `Redeem`,
//! `Release` and `Deactivate` are idempotent: repeating one writes nothing,
//! so a retried unit of work is safe. A released redemption (timely cancel,
//! displacement) no longer counts towards either limit.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::pricing::Discount;
use crate::{DomainError, PatientId, PromoCodeKey, ReservationId, TreatmentId};

/// One redemption.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Redemption {
    /// The reservation it was used for.
    pub reservation_id: ReservationId,
    /// The patient.
    pub patient_id: PatientId,
}

/// The `PromoCode` aggregate state.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PromoCode {
    /// `None` until created.
    pub code: Option<PromoCodeKey>,
    /// What it takes off.
    pub discount: Option<Discount>,
    /// First valid instant.
    pub valid_from: Option<DateTime<Utc>>,
    /// Last valid instant (exclusive).
    pub valid_until: Option<DateTime<Utc>>,
    /// Total redemptions allowed.
    pub max_redemptions: u32,
    /// Redemptions allowed per patient.
    pub per_patient_limit: u32,
    /// Treatments it applies to; `None` for all.
    pub treatment_ids: Option<Vec<TreatmentId>>,
    /// False once deactivated.
    pub active: bool,
    /// Current (not released) redemptions.
    pub redemptions: Vec<Redemption>,
}

/// What a promo code is: what creating one names and what its creation
/// records, field for field (one shape for the command and the event).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PromoTerms {
    /// The normalised code, also the stream's id.
    pub code: PromoCodeKey,
    /// What a redemption takes off the price: percent 1..=100 or a
    /// positive amount.
    pub discount: Discount,
    /// The first instant a booking may redeem it.
    pub valid_from: DateTime<Utc>,
    /// The instant from which redemptions are refused (after `valid_from`).
    pub valid_until: DateTime<Utc>,
    /// Redemptions held at once by all patients, at most (positive).
    pub max_redemptions: u32,
    /// Redemptions held at once by one patient, at most (positive).
    pub per_patient_limit: u32,
    /// The treatments it applies to; `None` for every treatment.
    pub treatment_ids: Option<Vec<TreatmentId>>,
}

/// Commands of the `PromoCode` aggregate.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum PromoCommand {
    /// Create the code.
    Create(PromoTerms),
    /// Use the code for a reservation (no-op if that reservation already redeemed it).
    Redeem {
        /// The reservation.
        reservation_id: ReservationId,
        /// The patient.
        patient_id: PatientId,
        /// The treatment (scope check).
        treatment_id: TreatmentId,
        /// Current time (window check).
        now: DateTime<Utc>,
    },
    /// Give a redemption back (timely cancel, displacement); no-op if none.
    Release {
        /// The reservation.
        reservation_id: ReservationId,
    },
    /// Stop accepting redemptions.
    Deactivate,
}

/// Events of the `PromoCode` aggregate. Variant names are stored event types: frozen.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, strum::IntoStaticStr)]
pub enum PromoEvent {
    /// Created, active: what every later redemption is checked against
    /// (stored as the terms' fields, as before they were a type of their own).
    PromoCodeCreated(PromoTerms),
    /// Redeemed.
    PromoRedeemed {
        /// The reservation.
        reservation_id: ReservationId,
        /// The patient.
        patient_id: PatientId,
    },
    /// A redemption was given back.
    RedemptionReleased {
        /// The reservation.
        reservation_id: ReservationId,
    },
    /// Deactivated.
    PromoCodeDeactivated,
}

impl PromoCode {
    /// True once created.
    pub fn is_created(&self) -> bool {
        self.code.is_some()
    }

    /// What the code takes off; `None` until created.
    pub fn discount(&self) -> Option<&Discount> {
        self.discount.as_ref()
    }

    /// True when `reservation_id` holds a current redemption.
    pub fn is_redeemed_by(&self, reservation_id: ReservationId) -> bool {
        self.redemptions
            .iter()
            .any(|r| r.reservation_id == reservation_id)
    }

    /// Current redemptions of `patient_id`.
    pub fn redemptions_of(&self, patient_id: PatientId) -> usize {
        self.redemptions
            .iter()
            .filter(|r| r.patient_id == patient_id)
            .count()
    }

    /// True when `now` lies inside `[valid_from, valid_until)`.
    pub fn is_valid_at(&self, now: DateTime<Utc>) -> bool {
        matches!((self.valid_from, self.valid_until), (Some(from), Some(until)) if from <= now && now < until)
    }

    /// True when the code applies to `treatment_id`.
    pub fn applies_to(&self, treatment_id: TreatmentId) -> bool {
        self.treatment_ids
            .as_ref()
            .is_none_or(|scope| scope.contains(&treatment_id))
    }

    /// Fails with `NotFound` unless created.
    fn require_created(&self) -> Result<(), DomainError> {
        if self.is_created() {
            Ok(())
        } else {
            Err(DomainError::not_found("promo code"))
        }
    }

    /// Checks that `patient_id` may redeem the code now for `treatment_id`.
    fn check_redeemable(
        &self,
        patient_id: PatientId,
        treatment_id: TreatmentId,
        now: DateTime<Utc>,
    ) -> Result<(), DomainError> {
        if !self.active {
            return Err(DomainError::PromoInactive);
        }
        if !self.is_valid_at(now) {
            return Err(DomainError::PromoExpired);
        }
        if self.redemptions.len() >= limit(self.max_redemptions) {
            return Err(DomainError::PromoExhausted);
        }
        if self.redemptions_of(patient_id) >= limit(self.per_patient_limit) {
            return Err(DomainError::PromoLimitPerPatient);
        }
        if !self.applies_to(treatment_id) {
            return Err(DomainError::PromoNotApplicable);
        }
        Ok(())
    }
}

/// A `u32` limit as a count (saturating on 16-bit targets).
fn limit(value: u32) -> usize {
    usize::try_from(value).unwrap_or(usize::MAX)
}

/// Checks the fields of a new code.
fn check_creation(terms: &PromoTerms) -> Result<(), DomainError> {
    let PromoTerms {
        discount,
        valid_from,
        valid_until,
        max_redemptions,
        per_patient_limit,
        treatment_ids,
        ..
    } = terms;
    discount.validate()?;
    if valid_until <= valid_from {
        return Err(DomainError::inconsistent(
            "valid_until",
            "must be after valid_from",
        ));
    }
    if *max_redemptions == 0 {
        return Err(DomainError::invalid("max_redemptions", "must be positive"));
    }
    if *per_patient_limit == 0 {
        return Err(DomainError::invalid(
            "per_patient_limit",
            "must be positive",
        ));
    }
    if treatment_ids
        .as_deref()
        .is_some_and(<[TreatmentId]>::is_empty)
    {
        return Err(DomainError::invalid(
            "treatment_ids",
            "must name at least one treatment, or be left out for all",
        ));
    }
    Ok(())
}

impl PromoCode {
    /// The event `command` produces.
    ///
    /// # Errors
    /// `AlreadyExists` for a second `Create`; `InvalidInput` for a bad
    /// discount, window, limit or empty scope; `NotFound` for any other
    /// command before `Create`; `PromoInactive`, `PromoExpired`,
    /// `PromoExhausted`, `PromoLimitPerPatient`, `PromoNotApplicable` when a
    /// redemption is refused.
    fn decide(&self, command: PromoCommand) -> Result<Option<PromoEvent>, DomainError> {
        let event = match command {
            PromoCommand::Create(terms) => {
                if self.is_created() {
                    return Err(DomainError::AlreadyExists {
                        what: format!("promo code {}", terms.code),
                    });
                }
                check_creation(&terms)?;
                PromoEvent::PromoCodeCreated(terms)
            }
            PromoCommand::Redeem {
                reservation_id,
                patient_id,
                treatment_id,
                now,
            } => {
                self.require_created()?;
                if self.is_redeemed_by(reservation_id) {
                    return Ok(None);
                }
                self.check_redeemable(patient_id, treatment_id, now)?;
                PromoEvent::PromoRedeemed {
                    reservation_id,
                    patient_id,
                }
            }
            PromoCommand::Release { reservation_id } => {
                self.require_created()?;
                if !self.is_redeemed_by(reservation_id) {
                    return Ok(None);
                }
                PromoEvent::RedemptionReleased { reservation_id }
            }
            PromoCommand::Deactivate => {
                self.require_created()?;
                if !self.active {
                    return Ok(None);
                }
                PromoEvent::PromoCodeDeactivated
            }
        };
        Ok(Some(event))
    }

    /// The state after `event` (the fold of every reader).
    fn evolve(&mut self, event: PromoEvent) {
        match event {
            PromoEvent::PromoCodeCreated(terms) => {
                self.code = Some(terms.code);
                self.discount = Some(terms.discount);
                self.valid_from = Some(terms.valid_from);
                self.valid_until = Some(terms.valid_until);
                self.max_redemptions = terms.max_redemptions;
                self.per_patient_limit = terms.per_patient_limit;
                self.treatment_ids = terms.treatment_ids;
                self.active = true;
            }
            PromoEvent::PromoRedeemed {
                reservation_id,
                patient_id,
            } => {
                if !self.is_redeemed_by(reservation_id) {
                    self.redemptions.push(Redemption {
                        reservation_id,
                        patient_id,
                    });
                }
            }
            PromoEvent::RedemptionReleased { reservation_id } => {
                self.redemptions
                    .retain(|r| r.reservation_id != reservation_id);
            }
            PromoEvent::PromoCodeDeactivated => self.active = false,
        }
    }
}

crate::aggregate::aggregate!(PromoCode: PromoCommand => PromoEvent);

#[cfg(test)]
mod tests {
    use chrono::TimeDelta;
    use cqrs_es::test::TestFramework;
    use proptest::prelude::*;

    use cqrs_es::{Aggregate, DomainEvent};

    use super::*;
    use crate::testing::{fold, id};
    use crate::Money;

    fn code() -> PromoCodeKey {
        PromoCodeKey::parse("SPRING-25").unwrap_or_else(|e| panic!("{e}"))
    }

    fn valid_from() -> DateTime<Utc> {
        DateTime::UNIX_EPOCH + TimeDelta::days(20_000)
    }

    fn valid_until() -> DateTime<Utc> {
        valid_from() + TimeDelta::days(30)
    }

    fn during() -> DateTime<Utc> {
        valid_from() + TimeDelta::days(1)
    }

    fn treatment() -> TreatmentId {
        TreatmentId(id(3))
    }

    fn patient(n: u128) -> PatientId {
        PatientId(id(200 + n))
    }

    fn reservation(n: u128) -> ReservationId {
        ReservationId(id(100 + n))
    }

    /// The terms with these limits and scope.
    fn terms_with(
        max_redemptions: u32,
        per_patient_limit: u32,
        treatment_ids: Option<Vec<TreatmentId>>,
    ) -> PromoTerms {
        PromoTerms {
            code: code(),
            discount: Discount::PercentOff(25),
            valid_from: valid_from(),
            valid_until: valid_until(),
            max_redemptions,
            per_patient_limit,
            treatment_ids,
        }
    }

    fn create() -> PromoCommand {
        PromoCommand::Create(terms_with(3, 2, None))
    }

    /// The created event with these limits and scope.
    fn created_with(
        max_redemptions: u32,
        per_patient_limit: u32,
        treatment_ids: Option<Vec<TreatmentId>>,
    ) -> PromoEvent {
        PromoEvent::PromoCodeCreated(terms_with(
            max_redemptions,
            per_patient_limit,
            treatment_ids,
        ))
    }

    /// `PromoCodeCreated` is stored as the terms' fields under the variant
    /// name, as when the fields were the variant's own.
    #[test]
    fn promo_code_created_keeps_its_stored_shape() {
        let t = terms_with(3, 2, Some(vec![treatment()]));
        let stored = serde_json::json!({ "PromoCodeCreated": {
            "code": t.code,
            "discount": t.discount,
            "valid_from": t.valid_from,
            "valid_until": t.valid_until,
            "max_redemptions": t.max_redemptions,
            "per_patient_limit": t.per_patient_limit,
            "treatment_ids": t.treatment_ids,
        }});
        let created = created_with(3, 2, Some(vec![treatment()]));
        assert_eq!(serde_json::to_value(&created).unwrap(), stored);
        assert_eq!(
            serde_json::from_value::<PromoEvent>(stored).unwrap(),
            created
        );
    }

    fn created() -> PromoEvent {
        created_with(3, 2, None)
    }

    fn redeem_at(reservation_n: u128, patient_n: u128, now: DateTime<Utc>) -> PromoCommand {
        PromoCommand::Redeem {
            reservation_id: reservation(reservation_n),
            patient_id: patient(patient_n),
            treatment_id: treatment(),
            now,
        }
    }

    fn redeem(reservation_n: u128, patient_n: u128) -> PromoCommand {
        redeem_at(reservation_n, patient_n, during())
    }

    fn redeemed(reservation_n: u128, patient_n: u128) -> PromoEvent {
        PromoEvent::PromoRedeemed {
            reservation_id: reservation(reservation_n),
            patient_id: patient(patient_n),
        }
    }

    fn release(reservation_n: u128) -> PromoCommand {
        PromoCommand::Release {
            reservation_id: reservation(reservation_n),
        }
    }

    fn released(reservation_n: u128) -> PromoEvent {
        PromoEvent::RedemptionReleased {
            reservation_id: reservation(reservation_n),
        }
    }

    fn replay(events: &[PromoEvent]) -> PromoCode {
        fold(events)
    }

    fn promo_test() -> TestFramework<PromoCode> {
        TestFramework::with(())
    }

    /// `create()` with one field changed must be refused naming `expected_field`.
    fn expect_invalid(change: impl FnOnce(&mut PromoCommand), expected_field: &str) {
        let mut command = create();
        change(&mut command);
        let result = promo_test()
            .given_no_previous_events()
            .when(command)
            .inspect_result();
        assert!(
            matches!(&result, Err(DomainError::InvalidInput { field, .. }) if field == expected_field),
            "expected invalid {expected_field}, got {result:?}"
        );
    }

    #[test]
    fn create_records_the_code() {
        promo_test()
            .given_no_previous_events()
            .when(create())
            .then_expect_events(vec![created()]);
        let promo = replay(&[created()]);
        assert!(promo.active);
        assert_eq!(promo.discount(), Some(&Discount::PercentOff(25)));
    }

    #[test]
    fn create_accepts_an_amount_off_and_a_scope() {
        let mut command = create();
        if let PromoCommand::Create(PromoTerms {
            discount,
            treatment_ids,
            ..
        }) = &mut command
        {
            *discount = Discount::AmountOff(Money(1));
            *treatment_ids = Some(vec![treatment()]);
        }
        let result = promo_test()
            .given_no_previous_events()
            .when(command)
            .inspect_result();
        assert!(
            matches!(result.as_deref(), Ok([PromoEvent::PromoCodeCreated { .. }])),
            "{result:?}"
        );
    }

    #[test]
    fn create_only_once() {
        promo_test()
            .given(vec![created()])
            .when(create())
            .then_expect_error(DomainError::AlreadyExists {
                what: "promo code SPRING-25".to_string(),
            });
    }

    #[test]
    fn create_refuses_a_percent_outside_1_to_100() {
        for percent in [0, -5, 101] {
            expect_invalid(
                |c| {
                    if let PromoCommand::Create(PromoTerms { discount, .. }) = c {
                        *discount = Discount::PercentOff(percent);
                    }
                },
                "percent_off",
            );
        }
    }

    #[test]
    fn create_refuses_an_amount_that_is_not_positive() {
        for cents in [0, -1] {
            expect_invalid(
                |c| {
                    if let PromoCommand::Create(PromoTerms { discount, .. }) = c {
                        *discount = Discount::AmountOff(Money(cents));
                    }
                },
                "amount_off_cents",
            );
        }
    }

    #[test]
    fn create_refuses_an_empty_or_reversed_window() {
        for end in [valid_from(), valid_from() - TimeDelta::seconds(1)] {
            let mut command = create();
            if let PromoCommand::Create(PromoTerms { valid_until, .. }) = &mut command {
                *valid_until = end;
            }
            let result = promo_test()
                .given_no_previous_events()
                .when(command)
                .inspect_result();
            assert!(
                matches!(&result, Err(DomainError::InconsistentInput { field, .. }) if field == "valid_until"),
                "expected inconsistent valid_until, got {result:?}"
            );
        }
    }

    #[test]
    fn create_refuses_zero_limits() {
        expect_invalid(
            |c| {
                if let PromoCommand::Create(PromoTerms {
                    max_redemptions, ..
                }) = c
                {
                    *max_redemptions = 0;
                }
            },
            "max_redemptions",
        );
        expect_invalid(
            |c| {
                if let PromoCommand::Create(PromoTerms {
                    per_patient_limit, ..
                }) = c
                {
                    *per_patient_limit = 0;
                }
            },
            "per_patient_limit",
        );
    }

    #[test]
    fn create_refuses_an_empty_scope() {
        expect_invalid(
            |c| {
                if let PromoCommand::Create(PromoTerms { treatment_ids, .. }) = c {
                    *treatment_ids = Some(vec![]);
                }
            },
            "treatment_ids",
        );
    }

    #[test]
    fn commands_before_create_find_no_code() {
        for command in [redeem(1, 1), release(1), PromoCommand::Deactivate] {
            promo_test()
                .given_no_previous_events()
                .when(command)
                .then_expect_error(DomainError::not_found("promo code"));
        }
    }

    #[test]
    fn redeem_inside_the_window() {
        for now in [
            valid_from(),
            during(),
            valid_until() - TimeDelta::seconds(1),
        ] {
            promo_test()
                .given(vec![created()])
                .when(redeem_at(1, 1, now))
                .then_expect_events(vec![redeemed(1, 1)]);
        }
        let promo = replay(&[created(), redeemed(1, 1)]);
        assert!(promo.is_redeemed_by(reservation(1)));
        assert_eq!(promo.redemptions_of(patient(1)), 1);
    }

    #[test]
    fn redeem_outside_the_window_is_refused() {
        for now in [valid_from() - TimeDelta::seconds(1), valid_until()] {
            promo_test()
                .given(vec![created()])
                .when(redeem_at(1, 1, now))
                .then_expect_error(DomainError::PromoExpired);
        }
    }

    #[test]
    fn redeem_after_deactivation_is_refused() {
        promo_test()
            .given(vec![created(), PromoEvent::PromoCodeDeactivated])
            .when(redeem(1, 1))
            .then_expect_error(DomainError::PromoInactive);
    }

    #[test]
    fn one_redemption_per_reservation() {
        promo_test()
            .given(vec![created(), redeemed(1, 1)])
            .when(redeem(1, 1))
            .then_expect_events(vec![]);
    }

    #[test]
    fn a_retried_redemption_is_accepted_even_after_the_limit() {
        promo_test()
            .given(vec![created_with(1, 1, None), redeemed(1, 1)])
            .when(redeem(1, 1))
            .then_expect_events(vec![]);
    }

    #[test]
    fn redeem_past_the_maximum_is_refused() {
        promo_test()
            .given(vec![
                created(),
                redeemed(1, 1),
                redeemed(2, 2),
                redeemed(3, 3),
            ])
            .when(redeem(4, 4))
            .then_expect_error(DomainError::PromoExhausted);
    }

    #[test]
    fn redeem_past_the_patient_limit_is_refused() {
        promo_test()
            .given(vec![created(), redeemed(1, 1), redeemed(2, 1)])
            .when(redeem(3, 1))
            .then_expect_error(DomainError::PromoLimitPerPatient);
    }

    #[test]
    fn redeem_out_of_scope_is_refused() {
        promo_test()
            .given(vec![created_with(3, 2, Some(vec![TreatmentId(id(99))]))])
            .when(redeem(1, 1))
            .then_expect_error(DomainError::PromoNotApplicable);
    }

    #[test]
    fn redeem_in_scope_is_accepted() {
        promo_test()
            .given(vec![created_with(
                3,
                2,
                Some(vec![TreatmentId(id(99)), treatment()]),
            )])
            .when(redeem(1, 1))
            .then_expect_events(vec![redeemed(1, 1)]);
    }

    #[test]
    fn release_gives_the_redemption_back() {
        promo_test()
            .given(vec![created(), redeemed(1, 1)])
            .when(release(1))
            .then_expect_events(vec![released(1)]);
        let promo = replay(&[created(), redeemed(1, 1), released(1)]);
        assert!(promo.redemptions.is_empty());
    }

    #[test]
    fn release_without_a_redemption_writes_nothing() {
        promo_test()
            .given(vec![created(), redeemed(1, 1)])
            .when(release(2))
            .then_expect_events(vec![]);
        promo_test()
            .given(vec![created(), redeemed(1, 1), released(1)])
            .when(release(1))
            .then_expect_events(vec![]);
    }

    #[test]
    fn a_released_redemption_frees_both_limits() {
        promo_test()
            .given(vec![created_with(1, 1, None), redeemed(1, 1), released(1)])
            .when(redeem(2, 1))
            .then_expect_events(vec![redeemed(2, 1)]);
    }

    #[test]
    fn deactivate_once_then_nothing() {
        promo_test()
            .given(vec![created()])
            .when(PromoCommand::Deactivate)
            .then_expect_events(vec![PromoEvent::PromoCodeDeactivated]);
        promo_test()
            .given(vec![created(), PromoEvent::PromoCodeDeactivated])
            .when(PromoCommand::Deactivate)
            .then_expect_events(vec![]);
        assert!(!replay(&[created(), PromoEvent::PromoCodeDeactivated]).active);
    }

    #[test]
    fn a_deactivated_code_still_releases() {
        promo_test()
            .given(vec![
                created(),
                redeemed(1, 1),
                PromoEvent::PromoCodeDeactivated,
            ])
            .when(release(1))
            .then_expect_events(vec![released(1)]);
    }

    #[test]
    fn event_types_are_the_variant_names() {
        let events = [
            created(),
            redeemed(1, 1),
            released(1),
            PromoEvent::PromoCodeDeactivated,
        ];
        let types: Vec<_> = events.iter().map(DomainEvent::event_type).collect();
        assert_eq!(
            types,
            [
                "PromoCodeCreated",
                "PromoRedeemed",
                "RedemptionReleased",
                "PromoCodeDeactivated"
            ]
        );
        assert!(events
            .iter()
            .all(|e| e.event_version() == crate::EVENT_VERSION));
        assert_eq!(PromoCode::TYPE, "PromoCode");
    }

    proptest! {
        /// Random redemptions and releases by a few patients over a few
        /// reservations never exceed either limit nor redeem a reservation twice.
        #[test]
        fn limits_are_never_exceeded(
            max in 1..5u32,
            per_patient in 1..3u32,
            steps in prop::collection::vec((any::<bool>(), 0..8u128, 0..3u128), 1..40),
        ) {
            let mut history = vec![created_with(max, per_patient, None)];
            for (is_redeem, reservation_n, patient_n) in steps {
                let command = if is_redeem { redeem(reservation_n, patient_n) } else { release(reservation_n) };
                let before = replay(&history);
                let held = before.is_redeemed_by(reservation(reservation_n));
                let expected = match (is_redeem, held) {
                    (true, false) if before.redemptions.len() >= max as usize => Err(DomainError::PromoExhausted),
                    (true, false) if before.redemptions_of(patient(patient_n)) >= per_patient as usize => {
                        Err(DomainError::PromoLimitPerPatient)
                    }
                    (true, false) => Ok(vec![redeemed(reservation_n, patient_n)]),
                    (false, true) => Ok(vec![released(reservation_n)]),
                    (true, true) | (false, false) => Ok(vec![]),
                };
                let result = promo_test().given(history.clone()).when(command).inspect_result();
                prop_assert_eq!(&result, &expected);
                history.extend(result.unwrap_or_default());
                let promo = replay(&history);
                prop_assert!(promo.redemptions.len() <= max as usize);
                for p in 0..3 {
                    prop_assert!(promo.redemptions_of(patient(p)) <= per_patient as usize);
                }
                let mut reservations: Vec<_> = promo.redemptions.iter().map(|r| r.reservation_id).collect();
                reservations.sort();
                reservations.dedup();
                prop_assert_eq!(reservations.len(), promo.redemptions.len());
            }
        }
    }
}
