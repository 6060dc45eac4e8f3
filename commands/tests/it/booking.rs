//! Tests of the booking use cases: every aggregate a command touches is
//! checked afterwards, every refusal is checked to write nothing.

// Helpers outside `#[test]` functions fail the test loudly too.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use chrono::{DateTime, Duration, NaiveDate, NaiveTime, TimeZone, Utc};
use clinicbook_commands::booking::{
    AddBlock, AddClosure, BookTreatment, Booked, Cancel, JoinWaitlist, PaymentInput, PriceAnswer,
    QuoteQuery, Reschedule,
};
use clinicbook_commands::{CommandError, Commands};
use clinicbook_domain::calendar::Calendar;
use clinicbook_domain::clinic::{Clinic, ClinicCommand};
use clinicbook_domain::package::{Package, PackageCommand, PackagePayment};
use clinicbook_domain::pricing::{Discount, LastMinute, PricingRules};
use clinicbook_domain::promo::{PromoCode, PromoCommand, PromoTerms};
use clinicbook_domain::reservation::{PaymentMethod, Reservation, ReservationStatus};
use clinicbook_domain::schedule::{OpeningHours, TimeRange};
use clinicbook_domain::wallet::{TransactionKind, Wallet, WalletCommand};
use clinicbook_domain::{
    CalendarId, ClinicId, Money, PackageId, PatientId, ProgramId, PromoCodeKey, ResourceId,
    TreatmentId,
};
use clinicbook_eventstore::StoredAggregate;
use clinicbook_testkit::TestDatabase;
use uuid::Uuid;

use crate::common::{assert_code, clinic, commands, ctx, monday, raw, read_reservation, Fixture};

// --- helpers ----------------------------------------------------------------

async fn state<A: StoredAggregate>(commands: &Commands, id: impl ToString) -> A {
    commands
        .store()
        .aggregate::<A>(&id.to_string())
        .await
        .unwrap()
        .0
}

/// Every event in the store (and every hash chain must hold).
async fn event_count(db: &TestDatabase) -> u64 {
    let report = clinicbook_eventstore::audit::verify(&db.pool, None, None)
        .await
        .unwrap();
    assert!(report.ok, "{report:?}");
    report.events_checked
}

/// A Berlin wall-clock time as UTC.
fn berlin(y: i32, m: u32, d: u32, h: u32, min: u32) -> DateTime<Utc> {
    chrono_tz::Europe::Berlin
        .with_ymd_and_hms(y, m, d, h, min, 0)
        .single()
        .unwrap()
        .with_timezone(&Utc)
}

/// Tuesday 2030-01-08 in Berlin (UTC+1): the day after the fixture's now.
fn tuesday(h: u32, min: u32) -> DateTime<Utc> {
    berlin(2030, 1, 8, h, min)
}

fn utc(s: &str) -> DateTime<Utc> {
    s.parse().unwrap()
}

fn date(s: &str) -> NaiveDate {
    s.parse().unwrap()
}

fn laser_booking(f: &Fixture, patient: PatientId, start: DateTime<Utc>) -> BookTreatment {
    BookTreatment {
        reservation_id: None,
        patient_id: patient.0,
        clinic_id: f.clinic_id.0,
        resource_id: f.laser.0,
        treatment_id: f.laser_treatment.0,
        start,
        payment: PaymentInput::AtClinic,
        promo_code: None,
    }
}

fn paid(mut input: BookTreatment, payment: PaymentInput) -> BookTreatment {
    input.payment = payment;
    input
}

fn with_promo(mut input: BookTreatment, code: &str) -> BookTreatment {
    input.promo_code = Some(code.to_string());
    input
}

async fn book(commands: &Commands, input: BookTreatment) -> Booked {
    match commands.book(&ctx("staff"), input).await {
        Ok(done) => done.output,
        Err(e) => panic!("booking refused: {e}"),
    }
}

async fn deposit(commands: &Commands, patient: PatientId, cents: i64) {
    raw::<Wallet>(
        commands,
        patient,
        vec![WalletCommand::Deposit {
            amount: Money(cents),
            reference: format!("deposit:{}", Uuid::new_v4()),
        }],
    )
    .await;
}

async fn balance(commands: &Commands, patient: PatientId) -> i64 {
    state::<Wallet>(commands, patient).await.balance().cents()
}

/// A package of the laser treatment for `patient`.
async fn package(
    commands: &Commands,
    patient: PatientId,
    treatment_id: TreatmentId,
    sessions: u32,
    valid_until: DateTime<Utc>,
    clinic_ids: Vec<ClinicId>,
) -> PackageId {
    let package_id = PackageId::new();
    raw::<Package>(
        commands,
        package_id,
        vec![PackageCommand::Purchase {
            package_id,
            patient_id: patient,
            program_id: ProgramId::new(),
            treatment_id,
            sessions,
            price: Money(30_000),
            valid_until,
            clinic_ids,
            payment: PackagePayment::External {
                reference: format!("card:{package_id}"),
            },
            now: monday(),
        }],
    )
    .await;
    package_id
}

async fn laser_package(
    commands: &Commands,
    f: &Fixture,
    patient: PatientId,
    sessions: u32,
) -> PackageId {
    package(
        commands,
        patient,
        f.laser_treatment,
        sessions,
        utc("2030-06-30T00:00:00Z"),
        vec![f.clinic_id],
    )
    .await
}

async fn sessions_used(commands: &Commands, package_id: PackageId) -> u32 {
    state::<Package>(commands, package_id).await.sessions_used
}

fn by_package(package_id: PackageId) -> PaymentInput {
    PaymentInput::Package {
        package_id: package_id.0,
    }
}

/// A 10 % promo code valid all January 2030.
async fn promo(commands: &Commands, code: &str, max_redemptions: u32, per_patient_limit: u32) {
    promo_valid(
        commands,
        code,
        utc("2030-01-01T00:00:00Z"),
        utc("2030-02-01T00:00:00Z"),
        max_redemptions,
        per_patient_limit,
    )
    .await;
}

async fn promo_valid(
    commands: &Commands,
    code: &str,
    valid_from: DateTime<Utc>,
    valid_until: DateTime<Utc>,
    max_redemptions: u32,
    per_patient_limit: u32,
) {
    let key = PromoCodeKey::parse(code).unwrap();
    raw::<PromoCode>(
        commands,
        &key,
        vec![PromoCommand::Create(PromoTerms {
            code: key.clone(),
            discount: Discount::PercentOff(10),
            valid_from,
            valid_until,
            max_redemptions,
            per_patient_limit,
            treatment_ids: None,
        })],
    )
    .await;
}

async fn redemptions(commands: &Commands, code: &str) -> usize {
    state::<PromoCode>(commands, code).await.redemptions.len()
}

async fn calendar(commands: &Commands, resource: ResourceId, day: &str) -> Calendar {
    let id = CalendarId {
        resource_id: resource,
        date: date(day),
    };
    state::<Calendar>(commands, id).await
}

async fn reservation(commands: &Commands, id: Uuid) -> Reservation {
    state::<Reservation>(commands, id).await
}

fn cancel(reason: &str) -> Cancel {
    Cancel {
        reason: reason.to_string(),
    }
}

fn price(base: i64, adjustments: i64, discount: i64) -> PriceAnswer {
    PriceAnswer {
        base_cents: base,
        adjustments_cents: adjustments,
        discount_cents: discount,
        total_cents: base + adjustments - discount,
    }
}

// --- booking ------------------------------------------------------------------

#[tokio::test]
async fn booking_paid_at_the_clinic_holds_the_slot_and_records_the_price() {
    let (commands, _clock, _db) = commands().await;
    let f = clinic(&commands).await;
    let patient = PatientId::new();

    let done = commands
        .book(&ctx("staff"), laser_booking(&f, patient, tuesday(10, 0)))
        .await
        .unwrap();
    let booked = done.output;

    assert!(done.position.is_some());
    assert_eq!(booked.status, "booked");
    assert_eq!(booked.start, utc("2030-01-08T09:00:00Z"));
    assert_eq!(booked.end, utc("2030-01-08T09:45:00Z"));
    assert_eq!(booked.resource_id, f.laser.0);
    assert_eq!(booked.price, price(12_000, 0, 0));

    let r = reservation(&commands, booked.reservation_id).await;
    assert_eq!(r.status, ReservationStatus::Booked);
    assert_eq!(r.patient_id, Some(patient));
    assert_eq!(r.payment, Some(PaymentMethod::AtClinic));
    assert_eq!(
        r.slot.map(|s| (s.resource_id, s.start)),
        Some((f.laser, booked.start))
    );

    let cal = calendar(&commands, f.laser, "2030-01-08").await;
    assert_eq!(cal.bookings.len(), 1);
    assert_eq!(cal.bookings[0].reservation_id.0, booked.reservation_id);
    assert_eq!(cal.bookings[0].occupied_until, utc("2030-01-08T10:00:00Z"));

    let view = read_reservation(&commands, booked.reservation_id)
        .await
        .unwrap();
    assert_eq!(view.status, "booked");
    assert_eq!(view.price, Some(booked.price));
    assert_eq!(view.payment, PaymentInput::AtClinic);
    assert_eq!(view.history.len(), 1);
    assert_eq!(view.history[0].event_type, "ReservationBooked");
    assert_eq!(view.history[0].at, monday());
}

#[tokio::test]
async fn booking_from_the_wallet_debits_the_total() {
    let (commands, _clock, _db) = commands().await;
    let f = clinic(&commands).await;
    let patient = PatientId::new();
    deposit(&commands, patient, 20_000).await;

    let booked = book(
        &commands,
        paid(
            laser_booking(&f, patient, tuesday(10, 0)),
            PaymentInput::Wallet,
        ),
    )
    .await;

    let wallet = state::<Wallet>(&commands, patient).await;
    assert_eq!(wallet.balance(), Money(8_000));
    let debit = wallet.transactions.last().unwrap();
    assert_eq!(debit.kind, TransactionKind::Debit);
    assert_eq!(debit.amount, Money(-12_000));
    assert_eq!(
        debit.reference,
        format!("reservation:{}", booked.reservation_id)
    );
    let r = reservation(&commands, booked.reservation_id).await;
    assert_eq!(r.payment, Some(PaymentMethod::Wallet));
    assert_eq!(
        calendar(&commands, f.laser, "2030-01-08")
            .await
            .bookings
            .len(),
        1
    );
}

#[tokio::test]
async fn booking_with_a_package_consumes_one_session() {
    let (commands, _clock, _db) = commands().await;
    let f = clinic(&commands).await;
    let patient = PatientId::new();
    let package_id = laser_package(&commands, &f, patient, 3).await;

    let booked = book(
        &commands,
        paid(
            laser_booking(&f, patient, tuesday(10, 0)),
            by_package(package_id),
        ),
    )
    .await;

    let package = state::<Package>(&commands, package_id).await;
    assert_eq!(package.sessions_used, 1);
    assert!(package.holds_session(booked.reservation_id.into()));
    assert_eq!(
        reservation(&commands, booked.reservation_id).await.payment,
        Some(PaymentMethod::Package { package_id })
    );
    assert_eq!(
        calendar(&commands, f.laser, "2030-01-08")
            .await
            .bookings
            .len(),
        1
    );
}

#[tokio::test]
async fn a_promo_code_discounts_the_price_and_is_redeemed() {
    let (commands, _clock, _db) = commands().await;
    let f = clinic(&commands).await;
    let patient = PatientId::new();
    promo(&commands, "WELCOME10", 10, 1).await;
    deposit(&commands, patient, 20_000).await;

    let input = paid(
        laser_booking(&f, patient, tuesday(10, 0)),
        PaymentInput::Wallet,
    );
    let booked = book(&commands, with_promo(input, " welcome10 ")).await;

    assert_eq!(booked.price, price(12_000, 0, 1_200));
    assert_eq!(balance(&commands, patient).await, 20_000 - 10_800);
    assert_eq!(redemptions(&commands, "WELCOME10").await, 1);
    let r = reservation(&commands, booked.reservation_id).await;
    assert_eq!(
        r.promo_code.map(String::from),
        Some("WELCOME10".to_string())
    );
}

#[tokio::test]
async fn a_booking_must_not_overlap_another_or_its_buffer() {
    let (commands, _clock, db) = commands().await;
    let f = clinic(&commands).await;
    book(
        &commands,
        laser_booking(&f, PatientId::new(), tuesday(10, 0)),
    )
    .await;
    let before = event_count(&db).await;

    // 10:00-10:45, busy until 11:00 with the buffer.
    for start in [
        tuesday(10, 0),
        tuesday(10, 30),
        tuesday(10, 50),
        tuesday(9, 30),
    ] {
        let other = laser_booking(&f, PatientId::new(), start);
        assert_code(
            commands.book(&ctx("staff"), other).await,
            "slot_unavailable",
        );
    }
    // 09:15-10:00 would keep the laser busy until 10:15 with its buffer.
    let early = laser_booking(&f, PatientId::new(), tuesday(9, 15));
    assert_code(
        commands.book(&ctx("staff"), early).await,
        "slot_unavailable",
    );
    assert_eq!(event_count(&db).await, before);

    book(
        &commands,
        laser_booking(&f, PatientId::new(), tuesday(11, 0)),
    )
    .await;
    let mut other_laser = laser_booking(&f, PatientId::new(), tuesday(10, 0));
    other_laser.resource_id = f.laser_b.0;
    book(&commands, other_laser).await;
    assert_eq!(
        calendar(&commands, f.laser, "2030-01-08")
            .await
            .bookings
            .len(),
        2
    );
}

#[tokio::test]
async fn a_booking_must_fit_the_opening_hours_and_start_in_the_future() {
    let (commands, _clock, db) = commands().await;
    let f = clinic(&commands).await;
    let before = event_count(&db).await;
    let at = |start| laser_booking(&f, PatientId::new(), start);

    // Ends 18:15, after closing.
    assert_code(
        commands.book(&ctx("staff"), at(tuesday(17, 30))).await,
        "outside_opening_hours",
    );
    assert_code(
        commands.book(&ctx("staff"), at(tuesday(8, 30))).await,
        "outside_opening_hours",
    );
    // Sundays are closed.
    assert_code(
        commands
            .book(&ctx("staff"), at(berlin(2030, 1, 13, 10, 0)))
            .await,
        "outside_opening_hours",
    );
    // Would end the next local day.
    assert_code(
        commands.book(&ctx("staff"), at(tuesday(23, 30))).await,
        "outside_opening_hours",
    );
    assert_code(
        commands
            .book(&ctx("staff"), at(monday() - Duration::minutes(30)))
            .await,
        "in_the_past",
    );
    assert_eq!(event_count(&db).await, before);

    // The last slot of the day ends at closing time.
    book(&commands, at(tuesday(17, 15))).await;
}

#[tokio::test]
async fn unknown_ids_are_not_found() {
    let (commands, _clock, db) = commands().await;
    let f = clinic(&commands).await;
    let other = clinic(&commands).await;
    let before = event_count(&db).await;
    let base = || laser_booking(&f, PatientId::new(), tuesday(10, 0));

    let mut input = base();
    input.clinic_id = Uuid::new_v4();
    assert_code(commands.book(&ctx("staff"), input).await, "not_found");

    let mut input = base();
    input.resource_id = Uuid::new_v4();
    assert_code(commands.book(&ctx("staff"), input).await, "not_found");

    let mut input = base();
    input.resource_id = other.laser.0; // a resource of another clinic
    assert_code(commands.book(&ctx("staff"), input).await, "not_found");

    let mut input = base();
    input.treatment_id = Uuid::new_v4();
    assert_code(commands.book(&ctx("staff"), input).await, "not_found");

    let input = with_promo(base(), "NOSUCHCODE");
    assert_code(commands.book(&ctx("staff"), input).await, "not_found");

    let input = paid(base(), by_package(PackageId::new()));
    assert_code(commands.book(&ctx("staff"), input).await, "not_found");

    assert!(matches!(
        read_reservation(&commands, Uuid::new_v4()).await,
        Err(clinicbook_projections::ProjectionError::NotFound(_))
    ));
    assert_code(
        commands
            .cancel(&ctx("staff"), Uuid::new_v4(), cancel("typo"))
            .await,
        "not_found",
    );
    assert_code(
        commands.check_in(&ctx("staff"), Uuid::new_v4()).await,
        "not_found",
    );
    assert_eq!(event_count(&db).await, before);
}

#[tokio::test]
async fn malformed_inputs_name_their_field() {
    let (commands, _clock, _db) = commands().await;
    let f = clinic(&commands).await;
    let input = with_promo(laser_booking(&f, PatientId::new(), tuesday(10, 0)), "x!");
    match commands.book(&ctx("staff"), input).await {
        Err(clinicbook_commands::CommandError::Domain(
            clinicbook_domain::DomainError::InvalidInput { field, .. },
        )) => assert_eq!(field, "promo_code"),
        other => panic!("expected invalid promo_code, got {other:?}"),
    }
    let unknown_field = serde_json::json!({
        "patient_id": Uuid::new_v4(), "clinic_id": f.clinic_id, "resource_id": f.laser,
        "treatment_id": f.laser_treatment, "start": "2030-01-08T10:00:00+01:00",
        "payment": {"method": "at_clinic"}, "promocode": "TYPO",
    });
    assert!(serde_json::from_value::<BookTreatment>(unknown_field).is_err());
    let payment = |value| serde_json::from_value::<PaymentInput>(value).map_err(|e| e.to_string());
    let package_id = Uuid::new_v4();
    assert_eq!(
        payment(serde_json::json!({"method": "wallet"})),
        Ok(PaymentInput::Wallet)
    );
    assert_eq!(
        payment(serde_json::json!({"method": "package", "package_id": package_id})),
        Ok(PaymentInput::Package { package_id })
    );
    for wrong in [
        serde_json::json!({"method": "wallet", "package_id": package_id}),
        serde_json::json!({"method": "at_clinic", "note": "cash"}),
        serde_json::json!({"method": "package"}),
        serde_json::json!({"method": "cash"}),
    ] {
        assert!(payment(wrong.clone()).is_err(), "{wrong}");
    }
    assert!(
        payment(serde_json::json!({"method": "wallet", "package_id": package_id}))
            .unwrap_err()
            .contains("package_id")
    );
    // Answers show payments in the same shape.
    assert_eq!(
        serde_json::to_value(PaymentInput::AtClinic).unwrap(),
        serde_json::json!({"method": "at_clinic"})
    );
    let offset = serde_json::json!({
        "patient_id": Uuid::new_v4(), "clinic_id": f.clinic_id, "resource_id": f.laser,
        "treatment_id": f.laser_treatment, "start": "2030-01-08T10:00:00+01:00",
        "payment": {"method": "package", "package_id": Uuid::nil()},
    });
    let parsed: BookTreatment = serde_json::from_value(offset).unwrap();
    assert_eq!(parsed.start, tuesday(10, 0));
    assert_eq!(
        parsed.payment,
        PaymentInput::Package {
            package_id: Uuid::nil()
        }
    );
}

#[tokio::test]
async fn a_treatment_needs_a_resource_of_its_kind() {
    let (commands, _clock, _db) = commands().await;
    let f = clinic(&commands).await;
    let mut input = laser_booking(&f, PatientId::new(), tuesday(10, 0));
    input.resource_id = f.room.0;
    assert_code(
        commands.book(&ctx("staff"), input).await,
        "resource_kind_mismatch",
    );
}

#[tokio::test]
async fn a_failed_wallet_debit_writes_nothing_and_leaves_the_slot_free() {
    let (commands, _clock, db) = commands().await;
    let f = clinic(&commands).await;
    let patient = PatientId::new();
    deposit(&commands, patient, 5_000).await;
    promo(&commands, "SPRING", 10, 1).await;
    let before = event_count(&db).await;

    let input = with_promo(
        paid(
            laser_booking(&f, patient, tuesday(10, 0)),
            PaymentInput::Wallet,
        ),
        "SPRING",
    );
    assert_code(
        commands.book(&ctx("staff"), input).await,
        "insufficient_funds",
    );

    assert_eq!(event_count(&db).await, before);
    assert!(calendar(&commands, f.laser, "2030-01-08")
        .await
        .bookings
        .is_empty());
    assert_eq!(balance(&commands, patient).await, 5_000);
    assert_eq!(redemptions(&commands, "SPRING").await, 0);
    // The slot is still free for anyone.
    book(
        &commands,
        laser_booking(&f, PatientId::new(), tuesday(10, 0)),
    )
    .await;
}

#[tokio::test]
async fn package_refusals_come_from_the_package() {
    let (commands, _clock, db) = commands().await;
    let f = clinic(&commands).await;
    let patient = PatientId::new();

    let single = laser_package(&commands, &f, patient, 1).await;
    book(
        &commands,
        paid(
            laser_booking(&f, patient, tuesday(10, 0)),
            by_package(single),
        ),
    )
    .await;
    let expired = package(
        &commands,
        patient,
        f.laser_treatment,
        5,
        utc("2030-01-08T00:00:00Z"),
        vec![f.clinic_id],
    )
    .await;
    let elsewhere = package(
        &commands,
        patient,
        f.laser_treatment,
        5,
        utc("2030-06-30T00:00:00Z"),
        vec![ClinicId::new()],
    )
    .await;
    let someone_elses = laser_package(&commands, &f, PatientId::new(), 5).await;
    let before = event_count(&db).await;

    let at_noon = || laser_booking(&f, patient, tuesday(12, 0));
    assert_code(
        commands
            .book(&ctx("staff"), paid(at_noon(), by_package(single)))
            .await,
        "no_sessions_left",
    );
    assert_code(
        commands
            .book(&ctx("staff"), paid(at_noon(), by_package(expired)))
            .await,
        "package_expired",
    );
    assert_code(
        commands
            .book(&ctx("staff"), paid(at_noon(), by_package(elsewhere)))
            .await,
        "package_not_valid_here",
    );
    assert_code(
        commands
            .book(&ctx("staff"), paid(at_noon(), by_package(someone_elses)))
            .await,
        "inconsistent_input",
    );
    assert_eq!(event_count(&db).await, before);
    assert_eq!(
        calendar(&commands, f.laser, "2030-01-08")
            .await
            .bookings
            .len(),
        1
    );
}

#[tokio::test]
async fn promo_refusals_come_from_the_promo_code() {
    let (commands, _clock, db) = commands().await;
    let f = clinic(&commands).await;
    promo_valid(
        &commands,
        "LASTYEAR",
        utc("2029-01-01T00:00:00Z"),
        utc("2030-01-01T00:00:00Z"),
        10,
        1,
    )
    .await;
    promo(&commands, "ONLYONE", 1, 1).await;
    promo(&commands, "ONCEEACH", 10, 1).await;
    let (ann, bob) = (PatientId::new(), PatientId::new());
    book(
        &commands,
        with_promo(laser_booking(&f, ann, tuesday(10, 0)), "ONLYONE"),
    )
    .await;
    book(
        &commands,
        with_promo(laser_booking(&f, ann, tuesday(11, 0)), "ONCEEACH"),
    )
    .await;
    let before = event_count(&db).await;

    let input = |patient, code| with_promo(laser_booking(&f, patient, tuesday(14, 0)), code);
    assert_code(
        commands.book(&ctx("staff"), input(bob, "LASTYEAR")).await,
        "promo_expired",
    );
    assert_code(
        commands.book(&ctx("staff"), input(bob, "ONLYONE")).await,
        "promo_exhausted",
    );
    assert_code(
        commands.book(&ctx("staff"), input(ann, "ONCEEACH")).await,
        "promo_limit_per_patient",
    );
    assert_eq!(event_count(&db).await, before);
    // Another patient may still use it.
    book(&commands, input(bob, "ONCEEACH")).await;
    assert_eq!(redemptions(&commands, "ONCEEACH").await, 2);
}

#[tokio::test]
async fn the_per_patient_limit_counts_current_redemptions_across_bookings() {
    let (commands, clock, _db) = commands().await;
    let f = clinic(&commands).await;
    let patient = PatientId::new();
    promo(&commands, "TWICE", 100, 2).await;
    let with_code = |start| with_promo(laser_booking(&f, patient, start), "TWICE");

    let first = book(&commands, with_code(tuesday(10, 0))).await;
    let second = book(&commands, with_code(tuesday(11, 0))).await;
    assert_code(
        commands
            .book(&ctx("staff"), with_code(tuesday(12, 0)))
            .await,
        "promo_limit_per_patient",
    );

    // A timely cancellation gives the redemption back.
    commands
        .cancel(&ctx("staff"), first.reservation_id, cancel("moved away"))
        .await
        .unwrap();
    assert_eq!(redemptions(&commands, "TWICE").await, 1);
    let third = book(&commands, with_code(tuesday(12, 0))).await;
    assert_eq!(third.price.discount_cents, 1_200);

    // A late one keeps it used.
    clock.set(tuesday(0, 0));
    let late = commands
        .cancel(&ctx("staff"), second.reservation_id, cancel("ill"))
        .await
        .unwrap()
        .output;
    assert!(late.late);
    assert_eq!(redemptions(&commands, "TWICE").await, 2);
    assert_code(
        commands
            .book(&ctx("staff"), with_code(tuesday(15, 0)))
            .await,
        "promo_limit_per_patient",
    );
}

#[tokio::test]
async fn retrying_a_booking_with_its_id_is_safe() {
    let (commands, _clock, db) = commands().await;
    let f = clinic(&commands).await;
    let patient = PatientId::new();
    deposit(&commands, patient, 50_000).await;
    promo(&commands, "RETRY", 10, 1).await;
    let mut input = with_promo(
        paid(
            laser_booking(&f, patient, tuesday(10, 0)),
            PaymentInput::Wallet,
        ),
        "RETRY",
    );
    input.reservation_id = Some(Uuid::new_v4());

    let first = book(&commands, input.clone()).await;
    let events = event_count(&db).await;
    let again = commands.book(&ctx("staff"), input.clone()).await.unwrap();

    assert_eq!(again.output, first);
    assert!(
        again.position.is_some(),
        "a retry still answers a consistency token"
    );
    assert_eq!(event_count(&db).await, events);
    assert_eq!(balance(&commands, patient).await, 50_000 - 10_800);

    // The same id for another booking is refused.
    let mut other = input;
    other.start = tuesday(12, 0);
    assert_code(
        commands.book(&ctx("staff"), other).await,
        "invalid_transition",
    );
    assert_eq!(event_count(&db).await, events);
}

// --- cancellation, no-show, status --------------------------------------------

#[tokio::test]
async fn a_package_session_is_restored_on_time_and_forfeited_when_late_or_absent() {
    let (commands, clock, _db) = commands().await;
    let f = clinic(&commands).await;
    let patient = PatientId::new();
    let package_id = laser_package(&commands, &f, patient, 3).await;
    let by_pkg = |start| paid(laser_booking(&f, patient, start), by_package(package_id));

    // On time: 25 h before the start.
    let on_time = book(&commands, by_pkg(tuesday(10, 0))).await;
    assert_eq!(sessions_used(&commands, package_id).await, 1);
    let cancelled = commands
        .cancel(
            &ctx("staff"),
            on_time.reservation_id,
            cancel("patient asked"),
        )
        .await
        .unwrap()
        .output;
    assert_eq!(cancelled.status, "cancelled");
    assert!(cancelled.session_restored);
    assert!(!cancelled.late);
    assert_eq!((cancelled.refund_cents, cancelled.fee_cents), (0, 0));
    assert_eq!(sessions_used(&commands, package_id).await, 0);
    assert!(calendar(&commands, f.laser, "2030-01-08")
        .await
        .bookings
        .is_empty());

    // Late: 15 h before the start.
    let late = book(&commands, by_pkg(tuesday(12, 0))).await;
    clock.set(utc("2030-01-07T20:00:00Z"));
    let cancelled = commands
        .cancel(&ctx("staff"), late.reservation_id, cancel("patient asked"))
        .await
        .unwrap()
        .output;
    assert!(cancelled.late);
    assert!(!cancelled.session_restored);
    assert_eq!(sessions_used(&commands, package_id).await, 1);
    assert!(calendar(&commands, f.laser, "2030-01-08")
        .await
        .bookings
        .is_empty());

    // No-show: forfeited, and the slot stays taken.
    let absent = book(&commands, by_pkg(tuesday(14, 0))).await;
    clock.set(tuesday(14, 30));
    let changed = commands
        .mark_no_show(&ctx("staff"), absent.reservation_id)
        .await
        .unwrap()
        .output;
    assert_eq!(changed.status, "no_show");
    assert_eq!(sessions_used(&commands, package_id).await, 2);
    let cal = calendar(&commands, f.laser, "2030-01-08").await;
    assert_eq!(cal.bookings.len(), 1);
    assert_eq!(cal.bookings[0].reservation_id.0, absent.reservation_id);
    let view = read_reservation(&commands, absent.reservation_id)
        .await
        .unwrap();
    assert_eq!(view.settlement.map(|s| s.late), Some(true));
}

#[tokio::test]
async fn a_wallet_payment_is_refunded_in_full_on_time_and_minus_the_fee_when_late() {
    let (commands, clock, _db) = commands().await;
    let f = clinic(&commands).await;
    let patient = PatientId::new();
    deposit(&commands, patient, 30_000).await;
    let by_wallet = |start| paid(laser_booking(&f, patient, start), PaymentInput::Wallet);

    let on_time = book(&commands, by_wallet(tuesday(10, 0))).await;
    assert_eq!(balance(&commands, patient).await, 18_000);
    let cancelled = commands
        .cancel(
            &ctx("staff"),
            on_time.reservation_id,
            cancel("patient asked"),
        )
        .await
        .unwrap()
        .output;
    assert_eq!((cancelled.refund_cents, cancelled.fee_cents), (12_000, 0));
    assert_eq!(balance(&commands, patient).await, 30_000);
    let wallet = state::<Wallet>(&commands, patient).await;
    assert!(wallet.has_reference(&format!("refund:reservation:{}", on_time.reservation_id)));

    let late = book(&commands, by_wallet(tuesday(10, 0))).await;
    clock.advance(Duration::hours(2)); // 23 h before the start
    let cancelled = commands
        .cancel(&ctx("staff"), late.reservation_id, cancel("patient asked"))
        .await
        .unwrap()
        .output;
    assert!(cancelled.late);
    assert_eq!(
        (cancelled.refund_cents, cancelled.fee_cents),
        (6_000, 6_000)
    );
    assert_eq!(balance(&commands, patient).await, 24_000);

    // A no-show keeps the whole payment.
    let absent = book(&commands, by_wallet(tuesday(15, 0))).await;
    commands
        .mark_no_show(&ctx("staff"), absent.reservation_id)
        .await
        .unwrap();
    assert_eq!(balance(&commands, patient).await, 12_000);
    let view = read_reservation(&commands, absent.reservation_id)
        .await
        .unwrap();
    assert_eq!(
        view.settlement.map(|s| (s.refund_cents, s.fee_cents)),
        Some((0, 12_000))
    );
}

#[tokio::test]
async fn check_in_then_complete_and_nothing_out_of_order() {
    let (commands, _clock, _db) = commands().await;
    let f = clinic(&commands).await;
    let booked = book(
        &commands,
        laser_booking(&f, PatientId::new(), tuesday(10, 0)),
    )
    .await;
    let id = booked.reservation_id;

    assert_code(
        commands.complete(&ctx("staff"), id).await,
        "invalid_transition",
    );
    let checked_in = commands.check_in(&ctx("staff"), id).await.unwrap().output;
    assert_eq!(checked_in.status, "checked_in");
    assert_code(
        commands.check_in(&ctx("staff"), id).await,
        "invalid_transition",
    );
    assert_code(
        commands.mark_no_show(&ctx("staff"), id).await,
        "invalid_transition",
    );
    assert_code(
        commands
            .reschedule(
                &ctx("staff"),
                id,
                Reschedule {
                    start: tuesday(12, 0),
                    resource_id: None,
                },
            )
            .await,
        "invalid_transition",
    );
    let completed = commands.complete(&ctx("staff"), id).await.unwrap().output;
    assert_eq!(completed.status, "completed");
    assert_code(
        commands.cancel(&ctx("staff"), id, cancel("late")).await,
        "invalid_transition",
    );

    let view = read_reservation(&commands, id).await.unwrap();
    let statuses: Vec<_> = view.history.iter().map(|h| h.status.as_str()).collect();
    assert_eq!(statuses, ["booked", "checked_in", "completed"]);
    assert_eq!(view.status, "completed");
    // A finished appointment keeps its place in the day.
    assert_eq!(
        calendar(&commands, f.laser, "2030-01-08")
            .await
            .bookings
            .len(),
        1
    );
}

#[tokio::test]
async fn a_cancelled_slot_can_be_booked_again() {
    let (commands, _clock, _db) = commands().await;
    let f = clinic(&commands).await;
    let first = book(
        &commands,
        laser_booking(&f, PatientId::new(), tuesday(10, 0)),
    )
    .await;
    commands
        .cancel(&ctx("staff"), first.reservation_id, cancel("patient asked"))
        .await
        .unwrap();
    assert_code(
        commands
            .cancel(&ctx("staff"), first.reservation_id, cancel("again"))
            .await,
        "invalid_transition",
    );
    let second = book(
        &commands,
        laser_booking(&f, PatientId::new(), tuesday(10, 0)),
    )
    .await;
    let cal = calendar(&commands, f.laser, "2030-01-08").await;
    assert_eq!(cal.bookings.len(), 1);
    assert_eq!(cal.bookings[0].reservation_id.0, second.reservation_id);
}

// --- waitlist -------------------------------------------------------------------

#[tokio::test]
async fn a_waitlist_entry_can_be_joined_booked_or_cancelled() {
    let (commands, _clock, db) = commands().await;
    let f = clinic(&commands).await;
    let patient = PatientId::new();
    let join = JoinWaitlist {
        reservation_id: Some(Uuid::new_v4()),
        patient_id: patient.0,
        clinic_id: f.clinic_id.0,
        treatment_id: f.laser_treatment.0,
        earliest: tuesday(9, 0),
        latest: tuesday(17, 0),
        payment: PaymentInput::AtClinic,
    };

    let waiting = commands
        .join_waitlist(&ctx("staff"), join.clone())
        .await
        .unwrap()
        .output;
    assert_eq!(waiting.status, "waitlisted");
    assert_eq!(Some(waiting.reservation_id), join.reservation_id);
    let events = event_count(&db).await;
    let again = commands
        .join_waitlist(&ctx("staff"), join.clone())
        .await
        .unwrap();
    assert_eq!(again.output, waiting.clone());
    assert!(
        again.position.is_some(),
        "a retry still answers a consistency token"
    );
    assert_eq!(event_count(&db).await, events);

    let view = read_reservation(&commands, waiting.reservation_id)
        .await
        .unwrap();
    assert_eq!(view.status, "waitlisted");
    assert_eq!(
        (view.earliest, view.latest),
        (Some(tuesday(9, 0)), Some(tuesday(17, 0)))
    );
    assert_eq!((view.start, view.price), (None, None));

    let cancelled = commands
        .cancel(
            &ctx("staff"),
            waiting.reservation_id,
            cancel("found another clinic"),
        )
        .await
        .unwrap()
        .output;
    assert_eq!(cancelled.status, "cancelled");
    assert_eq!(
        (
            cancelled.refund_cents,
            cancelled.fee_cents,
            cancelled.session_restored,
            cancelled.late
        ),
        (0, 0, false, false)
    );
    // Only the reservation changed.
    assert_eq!(event_count(&db).await, events + 1);

    // Another entry is booked through its id, inside its window.
    let mut second = join.clone();
    second.reservation_id = Some(Uuid::new_v4());
    let entry = commands
        .join_waitlist(&ctx("staff"), second)
        .await
        .unwrap()
        .output;
    let mut booking = laser_booking(&f, patient, tuesday(16, 30));
    booking.reservation_id = Some(entry.reservation_id);
    let booked = book(&commands, booking).await;
    assert_eq!(booked.reservation_id, entry.reservation_id);
    let statuses: Vec<_> = read_reservation(&commands, entry.reservation_id)
        .await
        .unwrap()
        .history
        .into_iter()
        .map(|h| h.status)
        .collect();
    assert_eq!(statuses, ["waitlisted", "booked"]);
}

#[tokio::test]
async fn joining_the_waitlist_checks_its_inputs() {
    let (commands, _clock, _db) = commands().await;
    let f = clinic(&commands).await;
    let join = |earliest, latest| JoinWaitlist {
        reservation_id: None,
        patient_id: Uuid::new_v4(),
        clinic_id: f.clinic_id.0,
        treatment_id: f.laser_treatment.0,
        earliest,
        latest,
        payment: PaymentInput::AtClinic,
    };
    assert_code(
        commands
            .join_waitlist(&ctx("staff"), join(tuesday(12, 0), tuesday(10, 0)))
            .await,
        "inconsistent_input",
    );
    assert_code(
        commands
            .join_waitlist(
                &ctx("staff"),
                join(monday() - Duration::days(2), monday() - Duration::days(1)),
            )
            .await,
        "in_the_past",
    );
    let mut unknown = join(tuesday(9, 0), tuesday(12, 0));
    unknown.treatment_id = Uuid::new_v4();
    assert_code(
        commands.join_waitlist(&ctx("staff"), unknown).await,
        "not_found",
    );
}

// --- reschedule -------------------------------------------------------------------

#[tokio::test]
async fn reschedule_moves_the_slot_across_days_and_resources() {
    let (commands, _clock, db) = commands().await;
    let f = clinic(&commands).await;
    promo(&commands, "MOVE", 10, 1).await;
    let patient = PatientId::new();
    let booked = book(
        &commands,
        with_promo(laser_booking(&f, patient, tuesday(10, 0)), "MOVE"),
    )
    .await;
    let wednesday = berlin(2030, 1, 9, 15, 0);

    let moved = commands
        .reschedule(
            &ctx("staff"),
            booked.reservation_id,
            Reschedule {
                start: wednesday,
                resource_id: Some(f.laser_b.0),
            },
        )
        .await
        .unwrap()
        .output;

    assert_eq!(moved.status, "booked");
    assert_eq!((moved.resource_id, moved.start), (f.laser_b.0, wednesday));
    assert_eq!(moved.end, wednesday + Duration::minutes(45));
    assert_eq!(moved.price, booked.price);
    assert!(calendar(&commands, f.laser, "2030-01-08")
        .await
        .bookings
        .is_empty());
    let new_day = calendar(&commands, f.laser_b, "2030-01-09").await;
    assert_eq!(new_day.bookings.len(), 1);
    assert_eq!(new_day.bookings[0].reservation_id.0, booked.reservation_id);
    let r = reservation(&commands, booked.reservation_id).await;
    assert_eq!(
        r.slot.map(|s| (s.resource_id, s.start)),
        Some((f.laser_b, wednesday))
    );

    // The old slot is free for others.
    book(
        &commands,
        laser_booking(&f, PatientId::new(), tuesday(10, 0)),
    )
    .await;

    // Within the same day and resource: released and reserved on one calendar.
    let later = commands
        .reschedule(
            &ctx("staff"),
            booked.reservation_id,
            Reschedule {
                start: wednesday + Duration::hours(1),
                resource_id: None,
            },
        )
        .await
        .unwrap()
        .output;
    assert_eq!(later.resource_id, f.laser_b.0);
    let same_day = calendar(&commands, f.laser_b, "2030-01-09").await;
    assert_eq!(same_day.bookings.len(), 1);
    assert_eq!(same_day.bookings[0].start, wednesday + Duration::hours(1));

    // Refusals write nothing.
    let events = event_count(&db).await;
    let to = |start, resource: Option<ResourceId>| Reschedule {
        start,
        resource_id: resource.map(|r| r.0),
    };
    assert_code(
        commands
            .reschedule(
                &ctx("staff"),
                booked.reservation_id,
                to(tuesday(10, 0), Some(f.laser)),
            )
            .await,
        "slot_unavailable",
    );
    assert_code(
        commands
            .reschedule(
                &ctx("staff"),
                booked.reservation_id,
                to(tuesday(10, 0), Some(f.room)),
            )
            .await,
        "resource_kind_mismatch",
    );
    assert_code(
        commands
            .reschedule(
                &ctx("staff"),
                booked.reservation_id,
                to(tuesday(17, 45), None),
            )
            .await,
        "outside_opening_hours",
    );
    assert_code(
        commands
            .reschedule(
                &ctx("staff"),
                booked.reservation_id,
                to(monday() - Duration::hours(1), None),
            )
            .await,
        "in_the_past",
    );
    assert_code(
        commands
            .reschedule(&ctx("staff"), Uuid::new_v4(), to(tuesday(12, 0), None))
            .await,
        "not_found",
    );
    assert_eq!(event_count(&db).await, events);
    let history: Vec<_> = read_reservation(&commands, booked.reservation_id)
        .await
        .unwrap()
        .history
        .into_iter()
        .map(|h| (h.status, h.event_type))
        .collect();
    assert_eq!(history.len(), 3);
    assert_eq!(
        history[1],
        ("booked".to_string(), "ReservationRescheduled".to_string())
    );
}

// --- blocks and closures ------------------------------------------------------------

#[tokio::test]
async fn an_emergency_block_displaces_bookings_and_gives_their_payment_back() {
    let (commands, _clock, _db) = commands().await;
    let f = clinic(&commands).await;
    let (ann, bob) = (PatientId::new(), PatientId::new());
    deposit(&commands, ann, 20_000).await;
    promo(&commands, "SORRY", 10, 1).await;
    let package_id = laser_package(&commands, &f, bob, 2).await;
    let by_wallet = with_promo(
        paid(laser_booking(&f, ann, tuesday(10, 0)), PaymentInput::Wallet),
        "SORRY",
    );
    let a = book(&commands, by_wallet).await;
    let b = book(
        &commands,
        paid(
            laser_booking(&f, bob, tuesday(11, 0)),
            by_package(package_id),
        ),
    )
    .await;
    let mut on_laser_b = laser_booking(&f, PatientId::new(), tuesday(10, 0));
    on_laser_b.resource_id = f.laser_b.0;
    let c = book(&commands, on_laser_b).await;
    assert_eq!(balance(&commands, ann).await, 20_000 - 10_800);

    let added = commands
        .add_block(
            &ctx("staff"),
            f.laser.0,
            AddBlock {
                start: tuesday(9, 30),
                end: tuesday(12, 0),
                reason: "laser broke".to_string(),
                emergency: true,
            },
        )
        .await
        .unwrap()
        .output;

    assert_eq!(added.displaced, vec![a.reservation_id, b.reservation_id]);
    for id in [a.reservation_id, b.reservation_id] {
        let view = read_reservation(&commands, id).await.unwrap();
        assert_eq!(view.status, "displaced");
        assert_eq!(
            view.history.last().map(|h| h.event_type.as_str()),
            Some("ReservationDisplaced")
        );
    }
    assert_eq!(balance(&commands, ann).await, 20_000);
    assert_eq!(redemptions(&commands, "SORRY").await, 0);
    assert_eq!(
        state::<Package>(&commands, package_id).await.sessions_used,
        0
    );
    let cal = calendar(&commands, f.laser, "2030-01-08").await;
    assert!(cal.bookings.is_empty());
    assert_eq!(cal.blocks.len(), 1);
    assert_eq!(cal.blocks[0].block_id.0, added.block_id);
    assert_eq!(
        reservation(&commands, c.reservation_id).await.status,
        ReservationStatus::Booked
    );
    assert_code(
        commands
            .book(
                &ctx("staff"),
                laser_booking(&f, PatientId::new(), tuesday(10, 30)),
            )
            .await,
        "slot_unavailable",
    );
    // Displaced reservations are final.
    assert_code(
        commands
            .cancel(&ctx("staff"), a.reservation_id, cancel("too late"))
            .await,
        "invalid_transition",
    );
}

#[tokio::test]
async fn a_block_over_a_booking_needs_an_emergency() {
    let (commands, _clock, db) = commands().await;
    let f = clinic(&commands).await;
    book(
        &commands,
        laser_booking(&f, PatientId::new(), tuesday(10, 0)),
    )
    .await;
    let block = |start, end, emergency| AddBlock {
        start,
        end,
        reason: "maintenance".to_string(),
        emergency,
    };
    let events = event_count(&db).await;

    // Its buffer counts: the laser is busy until 11:00.
    assert_code(
        commands
            .add_block(
                &ctx("staff"),
                f.laser.0,
                block(tuesday(10, 50), tuesday(12, 0), false),
            )
            .await,
        "slot_unavailable",
    );
    assert_code(
        commands
            .add_block(
                &ctx("staff"),
                f.laser.0,
                block(tuesday(12, 0), tuesday(11, 0), false),
            )
            .await,
        "inconsistent_input",
    );
    assert_code(
        commands
            .add_block(
                &ctx("staff"),
                Uuid::new_v4(),
                block(tuesday(12, 0), tuesday(13, 0), false),
            )
            .await,
        "not_found",
    );
    assert_eq!(event_count(&db).await, events);

    let added = commands
        .add_block(
            &ctx("staff"),
            f.laser.0,
            block(tuesday(11, 0), tuesday(12, 0), false),
        )
        .await
        .unwrap()
        .output;
    assert!(added.displaced.is_empty());
    assert_eq!(
        calendar(&commands, f.laser, "2030-01-08")
            .await
            .blocks
            .len(),
        1
    );
}

#[tokio::test]
async fn a_block_over_several_days_is_placed_on_each_local_day() {
    let (commands, _clock, _db) = commands().await;
    let f = clinic(&commands).await;
    let added = commands
        .add_block(
            &ctx("staff"),
            f.doctor.0,
            AddBlock {
                start: tuesday(17, 0),
                end: berlin(2030, 1, 10, 10, 0),
                reason: "congress".to_string(),
                emergency: false,
            },
        )
        .await
        .unwrap()
        .output;

    let pieces = [
        ("2030-01-08", tuesday(17, 0), berlin(2030, 1, 9, 0, 0)),
        (
            "2030-01-09",
            berlin(2030, 1, 9, 0, 0),
            berlin(2030, 1, 10, 0, 0),
        ),
        (
            "2030-01-10",
            berlin(2030, 1, 10, 0, 0),
            berlin(2030, 1, 10, 10, 0),
        ),
    ];
    for (day, start, end) in pieces {
        let cal = calendar(&commands, f.doctor, day).await;
        assert_eq!(cal.blocks.len(), 1, "{day}");
        assert_eq!(cal.blocks[0].block_id.0, added.block_id);
        assert_eq!(
            (cal.blocks[0].start, cal.blocks[0].end),
            (start, end),
            "{day}"
        );
    }
    assert!(calendar(&commands, f.doctor, "2030-01-11")
        .await
        .blocks
        .is_empty());
}

#[tokio::test]
async fn a_closure_displaces_a_whole_clinic_day() {
    let (commands, _clock, _db) = commands().await;
    let f = clinic(&commands).await;
    let patient = PatientId::new();
    deposit(&commands, patient, 50_000).await;
    let laser = book(
        &commands,
        paid(
            laser_booking(&f, patient, tuesday(10, 0)),
            PaymentInput::Wallet,
        ),
    )
    .await;
    let mut consultation = laser_booking(&f, PatientId::new(), tuesday(9, 0));
    consultation.resource_id = f.doctor.0;
    consultation.treatment_id = f.consultation.0;
    let doctor = book(&commands, consultation).await;
    let mut afternoon = laser_booking(&f, PatientId::new(), tuesday(15, 0));
    afternoon.resource_id = f.laser_b.0;
    let laser_b = book(&commands, afternoon).await;
    let wednesday = book(
        &commands,
        laser_booking(&f, PatientId::new(), berlin(2030, 1, 9, 10, 0)),
    )
    .await;

    let closed = commands
        .add_closure(
            &ctx("admin"),
            f.clinic_id.0,
            AddClosure {
                start: tuesday(0, 0),
                end: berlin(2030, 1, 9, 0, 0),
                reason: "water damage".to_string(),
            },
        )
        .await
        .unwrap()
        .output;

    assert_eq!(
        closed.displaced,
        vec![
            doctor.reservation_id,
            laser.reservation_id,
            laser_b.reservation_id
        ]
    );
    assert_eq!(balance(&commands, patient).await, 50_000);
    let clinic_state = state::<Clinic>(&commands, f.clinic_id).await;
    assert_eq!(clinic_state.closures.len(), 1);
    assert_eq!(clinic_state.closures[0].closure_id.0, closed.closure_id);
    for resource in [f.room, f.laser, f.laser_b, f.doctor] {
        let cal = calendar(&commands, resource, "2030-01-08").await;
        assert!(cal.bookings.is_empty());
        assert_eq!(cal.blocks.len(), 1);
        assert_eq!(cal.blocks[0].block_id.0, closed.closure_id);
    }
    assert_eq!(
        reservation(&commands, wednesday.reservation_id)
            .await
            .status,
        ReservationStatus::Booked
    );
    assert_code(
        commands
            .book(
                &ctx("staff"),
                laser_booking(&f, PatientId::new(), tuesday(16, 0)),
            )
            .await,
        "outside_opening_hours",
    );
    assert_code(
        commands
            .add_closure(
                &ctx("admin"),
                Uuid::new_v4(),
                AddClosure {
                    start: tuesday(0, 0),
                    end: tuesday(1, 0),
                    reason: "?".to_string(),
                },
            )
            .await,
        "not_found",
    );
}

#[tokio::test]
async fn an_emergency_block_cannot_displace_a_checked_in_patient() {
    let (commands, _clock, db) = commands().await;
    let f = clinic(&commands).await;
    let booked = book(
        &commands,
        laser_booking(&f, PatientId::new(), tuesday(10, 0)),
    )
    .await;
    commands
        .check_in(&ctx("staff"), booked.reservation_id)
        .await
        .unwrap();
    let events = event_count(&db).await;
    let block = AddBlock {
        start: tuesday(10, 0),
        end: tuesday(12, 0),
        reason: "laser broke".to_string(),
        emergency: true,
    };
    assert_code(
        commands.add_block(&ctx("staff"), f.laser.0, block).await,
        "invalid_transition",
    );
    assert_eq!(event_count(&db).await, events);
}

// --- DST ----------------------------------------------------------------------------

/// Opens the clinic every day 09:00-18:00, and on Sundays also
/// 01:00-04:00 local, across the night the clocks change.
async fn open_every_day(commands: &Commands, f: &Fixture) {
    let t = |h| NaiveTime::from_hms_opt(h, 0, 0).unwrap();
    let day = vec![TimeRange {
        from: t(9),
        to: t(18),
    }];
    let sunday = vec![
        TimeRange {
            from: t(1),
            to: t(4),
        },
        TimeRange {
            from: t(9),
            to: t(18),
        },
    ];
    let days = [
        day.clone(),
        day.clone(),
        day.clone(),
        day.clone(),
        day.clone(),
        day,
        sunday,
    ];
    raw::<Clinic>(
        commands,
        f.clinic_id,
        vec![ClinicCommand::SetOpeningHours {
            hours: OpeningHours::new(days).unwrap(),
        }],
    )
    .await;
}

#[tokio::test]
async fn bookings_on_dst_days_use_the_local_offset_of_that_day() {
    let (commands, _clock, _db) = commands().await;
    let f = clinic(&commands).await;
    open_every_day(&commands, &f).await;
    let at = |start| laser_booking(&f, PatientId::new(), start);

    // 2030-03-31: 02:00 CET becomes 03:00 CEST. 10:00 local is 08:00 UTC.
    let spring = book(&commands, at(utc("2030-03-31T08:00:00Z"))).await;
    assert_eq!(spring.end, utc("2030-03-31T08:45:00Z"));
    assert_eq!(
        calendar(&commands, f.laser, "2030-03-31")
            .await
            .bookings
            .len(),
        1
    );
    // The day before is still CET: 10:00 local is 09:00 UTC.
    assert_eq!(berlin(2030, 3, 30, 10, 0), utc("2030-03-30T09:00:00Z"));
    // Closing at 18:00 CEST is 16:00 UTC.
    book(&commands, at(utc("2030-03-31T15:15:00Z"))).await;
    assert_code(
        commands
            .book(&ctx("staff"), at(utc("2030-03-31T15:30:00Z")))
            .await,
        "outside_opening_hours",
    );
    // Opening at 09:00 CEST is 07:00 UTC.
    assert_code(
        commands
            .book(&ctx("staff"), at(utc("2030-03-31T06:30:00Z")))
            .await,
        "outside_opening_hours",
    );
    // The night range 01:00 CET - 04:00 CEST is only two hours long
    // (00:00-02:00 UTC); a booking across the jump fits.
    let across = book(&commands, at(utc("2030-03-31T00:45:00Z"))).await;
    assert_eq!(across.end, utc("2030-03-31T01:30:00Z"));
    assert_code(
        commands
            .book(&ctx("staff"), at(utc("2030-03-31T01:30:00Z")))
            .await,
        "outside_opening_hours",
    );

    // 2030-10-27: 03:00 CEST becomes 02:00 CET. 10:00 local is 09:00 UTC.
    let autumn = book(&commands, at(utc("2030-10-27T09:00:00Z"))).await;
    assert_eq!(autumn.end, utc("2030-10-27T09:45:00Z"));
    assert_eq!(
        calendar(&commands, f.laser, "2030-10-27")
            .await
            .bookings
            .len(),
        1
    );
    // Opening at 09:00 CET is 08:00 UTC, closing at 18:00 CET 17:00 UTC.
    book(&commands, at(utc("2030-10-27T08:00:00Z"))).await;
    book(&commands, at(utc("2030-10-27T16:15:00Z"))).await;
    assert_code(
        commands
            .book(&ctx("staff"), at(utc("2030-10-27T07:30:00Z")))
            .await,
        "outside_opening_hours",
    );
    // The night range 01:00 CEST - 04:00 CET is four hours (23:00-03:00 UTC)
    // and belongs to the Sunday calendar although it starts on Saturday in UTC.
    let night = book(&commands, at(utc("2030-10-26T23:30:00Z"))).await;
    let cal = calendar(&commands, f.laser, "2030-10-27").await;
    assert!(cal
        .bookings
        .iter()
        .any(|b| b.reservation_id.0 == night.reservation_id));
    book(&commands, at(utc("2030-10-27T02:15:00Z"))).await;
}

// --- quote ----------------------------------------------------------------------------

#[tokio::test]
async fn a_quote_prices_like_a_booking_without_writing() {
    let (commands, _clock, db) = commands().await;
    let f = clinic(&commands).await;
    raw::<Clinic>(
        &commands,
        f.clinic_id,
        vec![ClinicCommand::SetPricingRules {
            rules: PricingRules {
                rules: Vec::new(),
                last_minute: Some(LastMinute {
                    within_hours: 12,
                    percent_off: 20,
                }),
            },
        }],
    )
    .await;
    promo(&commands, "QUOTE", 10, 1).await;
    let patient = PatientId::new();
    let query = |start, code: Option<&str>, patient: Option<PatientId>| QuoteQuery {
        clinic_id: f.clinic_id.0,
        treatment_id: f.laser_treatment.0,
        start,
        promo_code: code.map(str::to_string),
        patient_id: patient.map(|p| p.0),
    };
    let events = event_count(&db).await;

    let quoted = commands
        .quote(query(tuesday(10, 0), Some("quote"), Some(patient)))
        .await
        .unwrap();
    assert_eq!(quoted, price(12_000, 0, 1_200));
    // Last minute: today 15:00 is within 12 hours.
    let soon = commands
        .quote(query(berlin(2030, 1, 7, 15, 0), None, None))
        .await
        .unwrap();
    assert_eq!(soon, price(12_000, -2_400, 0));
    let blank_code = commands
        .quote(query(tuesday(10, 0), Some(""), None))
        .await
        .unwrap();
    assert_eq!(blank_code, price(12_000, 0, 0));
    assert_eq!(event_count(&db).await, events);

    let booked = book(
        &commands,
        with_promo(laser_booking(&f, patient, tuesday(10, 0)), "QUOTE"),
    )
    .await;
    assert_eq!(booked.price, quoted);

    // Validated like a booking.
    assert_code(
        commands
            .quote(query(tuesday(11, 0), Some("QUOTE"), Some(patient)))
            .await,
        "promo_limit_per_patient",
    );
    assert_code(
        commands.quote(query(tuesday(11, 0), Some("x"), None)).await,
        "invalid_input",
    );
    assert_code(
        commands
            .quote(query(tuesday(11, 0), Some("NOPE"), None))
            .await,
        "not_found",
    );
    assert_code(
        commands.quote(query(tuesday(17, 30), None, None)).await,
        "outside_opening_hours",
    );
    assert_code(
        commands
            .quote(query(monday() - Duration::hours(1), None, None))
            .await,
        "in_the_past",
    );
    let mut unknown = query(tuesday(11, 0), None, None);
    unknown.treatment_id = Uuid::new_v4();
    assert_code(commands.quote(unknown).await, "not_found");
    let mut unknown = query(tuesday(11, 0), None, None);
    unknown.clinic_id = Uuid::new_v4();
    assert_code(commands.quote(unknown).await, "not_found");
    // Another patient may still use the code.
    let other = commands
        .quote(query(tuesday(11, 0), Some("QUOTE"), Some(PatientId::new())))
        .await;
    assert_eq!(other.unwrap().discount_cents, 1_200);
}

// --- concurrency ---------------------------------------------------------------------

/// Books every input at once; counts the bookings made, and checks every
/// refusal is `refusal` (or a conflict that outlived its retries).
async fn race(commands: &Commands, inputs: Vec<BookTreatment>, refusal: &str) -> usize {
    let tasks: Vec<_> = inputs
        .into_iter()
        .map(|input| {
            let commands = commands.clone();
            tokio::spawn(async move { commands.book(&ctx("staff"), input).await })
        })
        .collect();
    let mut won = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(_) => won += 1,
            Err(CommandError::Domain(e)) if e.code() == refusal => {}
            Err(CommandError::Conflict { .. }) => {}
            Err(other) => panic!("expected {refusal}, got {other:?}"),
        }
    }
    won
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_bookings_of_one_slot_give_exactly_one_booking() {
    let (commands, _clock, _db) = commands().await;
    let f = clinic(&commands).await;
    let inputs = (0..8)
        .map(|_| laser_booking(&f, PatientId::new(), tuesday(10, 0)))
        .collect();

    assert_eq!(race(&commands, inputs, "slot_unavailable").await, 1);
    assert_eq!(
        calendar(&commands, f.laser, "2030-01-08")
            .await
            .bookings
            .len(),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_bookings_never_exceed_a_promo_limit() {
    let (commands, _clock, _db) = commands().await;
    let f = clinic(&commands).await;
    promo(&commands, "FIRST3", 3, 1).await;
    let inputs = (9..17)
        .map(|hour| {
            with_promo(
                laser_booking(&f, PatientId::new(), tuesday(hour, 0)),
                "FIRST3",
            )
        })
        .collect();

    assert_eq!(race(&commands, inputs, "promo_exhausted").await, 3);
    assert_eq!(redemptions(&commands, "FIRST3").await, 3);
    assert_eq!(
        calendar(&commands, f.laser, "2030-01-08")
            .await
            .bookings
            .len(),
        3
    );
}
