//! The detail views answer exactly what the aggregate-based views of
//! `clinicbook-commands` answer, as JSON, for every reservation, wallet
//! and package of the scenario; unknown ids answer `not found`.

use clinicbook_projections::ProjectionError;
use serde_json::Value;
use uuid::Uuid;

use crate::common::{utc, world};
use crate::scenario;

fn json<T: serde::Serialize>(value: &T) -> Value {
    serde_json::to_value(value).unwrap()
}

#[tokio::test]
async fn reservation_wallet_and_package_answers_equal_the_aggregate_views() {
    let w = world().await;
    let s = scenario::build(&w).await;
    w.catch_up().await;

    for id in s.reservations() {
        let expected = json(&w.commands.reservation(id).await.unwrap());
        let actual = json(&w.read.reservation(id).await.unwrap());
        assert_eq!(actual, expected, "reservation {id}");
    }
    for patient in [s.p1, s.p2, s.p3, s.p4, s.p5, Uuid::new_v4()] {
        let expected = json(&w.commands.wallet(patient).await.unwrap());
        let actual = json(&w.read.wallet(patient).await.unwrap());
        assert_eq!(actual, expected, "wallet {patient}");
    }
    let expected = json(&w.commands.package(s.package).await.unwrap());
    let actual = json(&w.read.package(s.package).await.unwrap());
    assert_eq!(actual, expected);

    // A few facts by hand, so equal-but-wrong cannot pass.
    let r4 = w.read.reservation(s.r4).await.unwrap();
    assert_eq!(r4.status, "cancelled");
    let settlement = r4.settlement.unwrap();
    assert_eq!(
        (settlement.refund_cents, settlement.fee_cents),
        (6_000, 6_000)
    );
    let w1 = w.read.reservation(s.w1).await.unwrap();
    let statuses: Vec<&str> = w1.history.iter().map(|h| h.status.as_str()).collect();
    assert_eq!(statuses, ["waitlisted", "booked"]);
    let p1 = w.read.wallet(s.p1).await.unwrap();
    // 1000.00 in, R1 108.00, R3 120.00 and back, R4 120.00 and 60.00 back.
    assert_eq!(p1.balance_cents, 100_000 - 10_800 - 12_000 + 6_000);
    let package = w.read.package(s.package).await.unwrap();
    assert_eq!((package.sessions_used, package.sessions_left), (1, 2));
}

#[tokio::test]
async fn instants_keep_their_nanoseconds() {
    use clinicbook_commands::booking::{BookTreatment, PaymentInput};
    let w = world().await;
    let f = crate::common::clinic(&w.commands).await;
    // A clock with nanoseconds, as the system clock has.
    w.clock.set(utc("2030-01-07T08:00:00.123456789Z"));
    let booked = w
        .commands
        .book(
            &crate::common::staff(),
            BookTreatment {
                reservation_id: None,
                patient_id: Uuid::new_v4(),
                clinic_id: f.clinic_id.0,
                resource_id: f.laser.0,
                treatment_id: f.laser_treatment.0,
                start: utc("2030-01-08T09:00:00.000000500Z"),
                payment: PaymentInput::AtClinic,
                promo_code: None,
            },
        )
        .await
        .unwrap()
        .output;
    w.catch_up().await;
    let id = booked.reservation_id;
    let expected = json(&w.commands.reservation(id).await.unwrap());
    let actual = json(&w.read.reservation(id).await.unwrap());
    assert_eq!(actual, expected);
    assert_eq!(actual["history"][0]["at"], "2030-01-07T08:00:00.123456789Z");
}

#[tokio::test]
async fn unknown_ids_are_not_found_and_a_wallet_always_exists() {
    let w = world().await;
    w.catch_up().await;
    let id = Uuid::new_v4();
    assert!(matches!(
        w.read.reservation(id).await,
        Err(ProjectionError::NotFound(_))
    ));
    assert!(matches!(
        w.read.package(id).await,
        Err(ProjectionError::NotFound(_))
    ));
    let wallet = w.read.wallet(id).await.unwrap();
    assert_eq!(wallet.balance_cents, 0);
    assert!(wallet.transactions.is_empty());
}
