//! The detail views answer exactly what folding the aggregates answers,
//! as JSON, for every reservation, wallet and package of the scenario;
//! unknown ids answer `not found`.

use clinicbook_domain::reservation::{Reservation, ReservationEvent};
use clinicbook_domain::ReservationId;
use clinicbook_eventstore::replay::history;
use clinicbook_projections::query::detail::WalletPage;
use clinicbook_projections::ProjectionError;
use clinicbook_wire::booking::{ReservationView, StatusEntry};
use serde_json::Value;
use uuid::Uuid;

use crate::common::{utc, world, World};
use crate::scenario;

fn json<T: serde::Serialize>(value: &T) -> Value {
    serde_json::to_value(value).unwrap()
}

/// The reservation `id` folded from its stream, event by event, as the
/// view answers it: each step with the status after its event, dated by
/// the instant the event records or else by the time it was stored.
async fn folded_reservation(w: &World, id: Uuid) -> ReservationView {
    let stream = ReservationId(id).to_string();
    let pool = w.commands.store().pool();
    let all = history::<Reservation>(pool, &stream, None).await.unwrap();
    let mut steps = Vec::new();
    for (record, event) in &all.events {
        let after = history::<Reservation>(pool, &stream, Some(record.position))
            .await
            .unwrap();
        let at = match event {
            ReservationEvent::ReservationBooked { booked_at, .. } => *booked_at,
            ReservationEvent::ReservationCancelled { at, .. }
            | ReservationEvent::CheckedIn { at }
            | ReservationEvent::ReservationCompleted { at }
            | ReservationEvent::MarkedNoShow { at, .. }
            | ReservationEvent::ReservationDisplaced { at, .. } => *at,
            ReservationEvent::WaitlistJoined { .. }
            | ReservationEvent::ReservationRescheduled { .. }
            | ReservationEvent::ReminderDue { .. } => record.recorded_at,
        };
        steps.push(StatusEntry {
            status: after.state.status.as_str().to_owned(),
            at,
            event_type: record.event_type.clone(),
            sequence: record.sequence,
        });
    }
    let state = all.state;
    ReservationView {
        reservation_id: state.reservation_id.unwrap().0,
        status: state.status.as_str().to_owned(),
        patient_id: state.patient_id.unwrap().0,
        clinic_id: state.clinic_id.unwrap().0,
        resource_id: state.slot.map(|slot| slot.resource_id.0),
        treatment_id: state.treatment_id.unwrap().0,
        start: state.slot.map(|slot| slot.start),
        end: state.slot.map(|slot| slot.end),
        earliest: state.wanted.map(|(earliest, _)| earliest),
        latest: state.wanted.map(|(_, latest)| latest),
        price: state.slot.map(|_| state.price.into()),
        payment: state.payment.unwrap().into(),
        promo_code: state.promo_code.map(String::from),
        settlement: state.settlement.map(Into::into),
        history: steps,
        // The scenario makes no waitlist offers.
        offer: None,
    }
}

#[tokio::test]
async fn reservation_wallet_and_package_answers_equal_the_aggregate_views() {
    let w = world().await;
    let s = scenario::build(&w).await;
    w.catch_up().await;

    for id in s.reservations() {
        let expected = json(&folded_reservation(&w, id).await);
        let actual = json(&w.read.reservation(id).await.unwrap());
        assert_eq!(actual, expected, "reservation {id}");
    }
    for patient in [s.p1, s.p2, s.p3, s.p4, s.p5, Uuid::new_v4()] {
        let expected = json(&w.commands.wallet(patient).await.unwrap());
        let actual = json(&w.read.wallet(patient, WalletPage::default()).await.unwrap());
        // The read side answers a page: here the whole wallet fits the first.
        let total = expected["transactions"].as_array().map_or(0, Vec::len);
        assert_eq!(actual["transactions_total"], total, "wallet {patient}");
        assert_eq!(actual["next_after"], Value::Null, "wallet {patient}");
        // The fold answers every transaction as one page, as the first
        // page is here.
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
    let p1 = w.read.wallet(s.p1, WalletPage::default()).await.unwrap();
    // 1000.00 in, R1 108.00, R3 120.00 and back, R4 120.00 and 60.00 back.
    assert_eq!(p1.balance_cents, 100_000 - 10_800 - 12_000 + 6_000);
    let package = w.read.package(s.package).await.unwrap();
    assert_eq!((package.sessions_used, package.sessions_left), (1, 2));
}

#[tokio::test]
async fn instants_are_kept_to_the_microsecond() {
    use clinicbook_commands::booking::{BookTreatment, PaymentInput};
    let w = world().await;
    let f = crate::common::clinic(&w.commands).await;
    // A clock with nanoseconds, as the system clock has: instants enter
    // the engine cut to the microsecond (issue 10), so the aggregate's
    // fold and the read model agree with no `*_ns` columns.
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
                start: utc("2030-01-08T09:00:00.000001Z"),
                payment: PaymentInput::AtClinic,
                promo_code: None,
            },
        )
        .await
        .unwrap()
        .output;
    w.catch_up().await;
    let id = booked.reservation_id;
    let expected = json(&folded_reservation(&w, id).await);
    let actual = json(&w.read.reservation(id).await.unwrap());
    assert_eq!(actual, expected);
    assert_eq!(actual["history"][0]["at"], "2030-01-07T08:00:00.123456Z");
    assert_eq!(actual["start"], "2030-01-08T09:00:00.000001Z");
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
    let wallet = w.read.wallet(id, WalletPage::default()).await.unwrap();
    assert_eq!(wallet.balance_cents, 0);
    assert!(wallet.transactions.is_empty());
}

#[tokio::test]
async fn the_scenario_s_schedule_and_waitlist() {
    let w = world().await;
    let s = scenario::build(&w).await;
    // A later entry for part of W2's window queues behind it.
    let w3 = w
        .commands
        .join_waitlist(
            &crate::common::staff(),
            clinicbook_commands::booking::JoinWaitlist {
                reservation_id: None,
                patient_id: s.p1,
                clinic_id: s.f.clinic_id.0,
                treatment_id: s.f.laser_treatment.0,
                earliest: crate::common::berlin(2030, 1, 9, 9, 0),
                latest: crate::common::berlin(2030, 1, 9, 11, 0),
                payment: clinicbook_commands::booking::PaymentInput::AtClinic,
            },
        )
        .await
        .unwrap()
        .output
        .reservation_id;
    w.catch_up().await;
    let day = |d: &str| d.parse::<chrono::NaiveDate>().unwrap();
    let ids = |bookings: &[clinicbook_projections::query::schedule::ScheduleBooking]| {
        bookings
            .iter()
            .map(|b| b.reservation_id)
            .collect::<Vec<_>>()
    };

    // Tuesday: R1 completed and W1 on the lasers, R2 a no-show on the
    // practitioner; R4 (cancelled) and R8 (moved away) are gone.
    let tuesday = w
        .read
        .schedule(s.f.clinic_id.0, day("2030-01-08"))
        .await
        .unwrap();
    assert_eq!(tuesday.timezone, "Europe/Berlin");
    let [room, laser, laser_b, doctor] = &tuesday.resources[..] else {
        panic!("{tuesday:?}");
    };
    assert!(room.bookings.is_empty());
    assert_eq!(ids(&laser.bookings), vec![s.r1]);
    assert_eq!(laser.bookings[0].status, "completed");
    assert_eq!(ids(&laser_b.bookings), vec![s.w1]);
    assert_eq!(ids(&doctor.bookings), vec![s.r2]);
    assert_eq!(doctor.bookings[0].status, "no_show");

    // Wednesday: the emergency block on Laser A took R5; R3 cancelled.
    let wednesday = w
        .read
        .schedule(s.f.clinic_id.0, day("2030-01-09"))
        .await
        .unwrap();
    let laser = &wednesday.resources[1];
    assert!(laser.bookings.is_empty());
    assert_eq!(laser.blocks.len(), 1);
    assert_eq!(laser.blocks[0].block_id, s.block);
    assert!(laser.blocks[0].emergency);
    assert!(wednesday.resources[2].bookings.is_empty());

    // Thursday: the closure blocks every resource; R6 and R8 hold theirs.
    let thursday = w
        .read
        .schedule(s.f.clinic_id.0, day("2030-01-10"))
        .await
        .unwrap();
    for resource in &thursday.resources {
        let blocks: Vec<_> = resource.blocks.iter().map(|b| b.block_id).collect();
        assert_eq!(blocks, vec![s.closure], "{}", resource.name);
    }
    assert_eq!(ids(&thursday.resources[1].bookings), vec![s.r6]);
    assert_eq!(ids(&thursday.resources[2].bookings), vec![s.r8]);

    // The waitlist: W2 wants a laser start on Wednesday 10:00-12:00, W3
    // 09:00-11:00 (joined later); W1 was booked and left it.
    let wednesday_10_30 = crate::common::berlin(2030, 1, 9, 10, 30);
    let candidates = w
        .read
        .waitlist_candidates(s.f.clinic_id.0, s.f.laser_treatment.0, wednesday_10_30)
        .await
        .unwrap();
    let ids: Vec<_> = candidates.iter().map(|c| c.reservation_id).collect();
    assert_eq!(ids, vec![s.w2, w3]);
    assert_eq!(candidates[0].patient_id, s.p5);
    assert!(candidates[0].joined_position < candidates[1].joined_position);
    // Its window's ends are included; outside it, nobody.
    for (at, expected) in [
        (crate::common::berlin(2030, 1, 9, 9, 0), 1),
        (crate::common::berlin(2030, 1, 9, 11, 0), 2),
        (crate::common::berlin(2030, 1, 9, 12, 0), 1),
        (crate::common::berlin(2030, 1, 9, 12, 1), 0),
        (crate::common::berlin(2030, 1, 8, 15, 0), 0),
    ] {
        let found = w
            .read
            .waitlist_candidates(s.f.clinic_id.0, s.f.laser_treatment.0, at)
            .await
            .unwrap();
        assert_eq!(found.len(), expected, "at {at}");
    }
    assert!(w
        .read
        .waitlist_candidates(s.f.clinic_id.0, s.f.consultation.0, wednesday_10_30)
        .await
        .unwrap()
        .is_empty());
}
