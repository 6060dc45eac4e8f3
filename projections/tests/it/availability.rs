//! Free start times and a clinic's day, from the `schedule` projection,
//! against what the booking rules allow: opening hours, the treatment's
//! duration and buffer, bookings (with their buffers), blocks, closures,
//! DST days, and nothing in the past. Starts are offered every 15 minutes.

use chrono::{DateTime, Utc};
use clinicbook_commands::booking::{AddBlock, AddClosure, Cancel, PaymentInput};
use clinicbook_domain::clinic::{Clinic, ClinicCommand, ResourceKind};
use clinicbook_domain::schedule::{OpeningHours, TimeRange};
use clinicbook_domain::{ClinicId, Money, ResourceId, TreatmentId};
use clinicbook_projections::ProjectionError;
use uuid::Uuid;

use crate::common::{berlin, book, clinic, date, hm, minutes, raw, staff, utc, world, World};

/// The free starts of `resource` in an availability answer.
async fn starts(
    w: &World,
    clinic: ClinicId,
    treatment: TreatmentId,
    day: &str,
    resource: ResourceId,
) -> Vec<DateTime<Utc>> {
    w.catch_up().await;
    let now = w.clock.now();
    w.read
        .availability(clinic.0, treatment.0, date(day), now)
        .await
        .unwrap()
        .slots
        .iter()
        .filter(|slot| slot.resource_id == resource.0)
        .map(|slot| slot.start)
        .collect()
}

/// Every 15 minutes from `first` to `last`, both included.
fn every_quarter(first: DateTime<Utc>, last: DateTime<Utc>) -> Vec<DateTime<Utc>> {
    let mut out = Vec::new();
    let mut at = first;
    while at <= last {
        out.push(at);
        at += minutes(15);
    }
    out
}

#[tokio::test]
async fn bookings_with_buffers_blocks_and_cancellations() {
    let w = world().await;
    let f = clinic(&w.commands).await;
    let day = "2030-01-08";
    let all_day = every_quarter(berlin(2030, 1, 8, 9, 0), berlin(2030, 1, 8, 17, 15));
    assert_eq!(all_day.len(), 34);
    // The laser treatment (45 min + 15 min buffer) on both lasers, nothing
    // on the room or the practitioner.
    assert_eq!(
        starts(&w, f.clinic_id, f.laser_treatment, day, f.laser).await,
        all_day
    );
    assert_eq!(
        starts(&w, f.clinic_id, f.laser_treatment, day, f.laser_b).await,
        all_day
    );
    assert!(starts(&w, f.clinic_id, f.laser_treatment, day, f.room)
        .await
        .is_empty());

    // A booking 10:00-10:45 keeps Laser A busy until 11:00: a start must
    // end its own buffer by 10:00 or start at 11:00.
    let booked = book(
        &w.commands,
        Uuid::new_v4(),
        f.clinic_id,
        f.laser,
        f.laser_treatment,
        berlin(2030, 1, 8, 10, 0),
        PaymentInput::AtClinic,
        None,
    )
    .await;
    let taken = every_quarter(berlin(2030, 1, 8, 9, 15), berlin(2030, 1, 8, 10, 45));
    assert_eq!(taken.len(), 7);
    let expected: Vec<_> = all_day
        .iter()
        .copied()
        .filter(|s| !taken.contains(s))
        .collect();
    assert_eq!(
        starts(&w, f.clinic_id, f.laser_treatment, day, f.laser).await,
        expected
    );
    assert_eq!(
        starts(&w, f.clinic_id, f.laser_treatment, day, f.laser_b).await,
        all_day
    );
    // The schedule shows it.
    let schedule = w.read.schedule(f.clinic_id.0, date(day)).await.unwrap();
    let names: Vec<&str> = schedule.resources.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["Room 1", "Laser A", "Laser B", "Dr. Weber"]);
    let laser = &schedule.resources[1];
    assert_eq!(laser.bookings.len(), 1);
    assert_eq!(laser.bookings[0].reservation_id, booked.reservation_id);
    assert_eq!(laser.bookings[0].status, "booked");
    assert_eq!(laser.bookings[0].start, berlin(2030, 1, 8, 10, 0));
    assert_eq!(laser.bookings[0].occupied_until, berlin(2030, 1, 8, 11, 0));

    // Cancelled: the slot is free again and leaves the schedule.
    w.commands
        .cancel(
            &staff(),
            booked.reservation_id,
            Cancel {
                reason: "moved abroad".to_string(),
            },
        )
        .await
        .unwrap();
    assert_eq!(
        starts(&w, f.clinic_id, f.laser_treatment, day, f.laser).await,
        all_day
    );
    let schedule = w.read.schedule(f.clinic_id.0, date(day)).await.unwrap();
    assert!(schedule.resources[1].bookings.is_empty());

    // A block 13:00-14:00 on Laser B: a start's busy hour must not touch it.
    w.commands
        .add_block(
            &staff(),
            f.laser_b.0,
            AddBlock {
                start: berlin(2030, 1, 8, 13, 0),
                end: berlin(2030, 1, 8, 14, 0),
                reason: "calibration".to_string(),
                emergency: false,
            },
        )
        .await
        .unwrap();
    let blocked = every_quarter(berlin(2030, 1, 8, 12, 15), berlin(2030, 1, 8, 13, 45));
    let expected: Vec<_> = all_day
        .iter()
        .copied()
        .filter(|s| !blocked.contains(s))
        .collect();
    assert_eq!(
        starts(&w, f.clinic_id, f.laser_treatment, day, f.laser_b).await,
        expected
    );
    let schedule = w.read.schedule(f.clinic_id.0, date(day)).await.unwrap();
    let blocks = &schedule.resources[2].blocks;
    assert_eq!(blocks.len(), 1);
    assert_eq!(blocks[0].reason, "calibration");
    assert_eq!(
        (blocks[0].start, blocks[0].end),
        (berlin(2030, 1, 8, 13, 0), berlin(2030, 1, 8, 14, 0))
    );

    // The consultation (30 min, no buffer) on the practitioner.
    let consultation = starts(&w, f.clinic_id, f.consultation, day, f.doctor).await;
    assert_eq!(
        consultation,
        every_quarter(berlin(2030, 1, 8, 9, 0), berlin(2030, 1, 8, 17, 30))
    );
}

#[tokio::test]
async fn closures_the_past_and_closed_days() {
    let w = world().await;
    let f = clinic(&w.commands).await;
    // Closed Wednesday 12:00-13:00: the morning's last start must end its
    // buffer by 12:00 (the closure blocks every calendar), the afternoon
    // starts at 13:00.
    w.commands
        .add_closure(
            &staff(),
            f.clinic_id.0,
            AddClosure {
                start: berlin(2030, 1, 9, 12, 0),
                end: berlin(2030, 1, 9, 13, 0),
                reason: "team lunch".to_string(),
            },
        )
        .await
        .unwrap();
    let mut expected = every_quarter(berlin(2030, 1, 9, 9, 0), berlin(2030, 1, 9, 11, 0));
    expected.extend(every_quarter(
        berlin(2030, 1, 9, 13, 0),
        berlin(2030, 1, 9, 17, 15),
    ));
    assert_eq!(expected.len(), 27);
    assert_eq!(
        starts(&w, f.clinic_id, f.laser_treatment, "2030-01-09", f.laser).await,
        expected
    );
    // Each resource's day shows the closure as a block with its id.
    let schedule = w
        .read
        .schedule(f.clinic_id.0, date("2030-01-09"))
        .await
        .unwrap();
    assert!(schedule.resources.iter().all(|r| r.blocks.len() == 1));

    // Today (Monday) at 10:07 local: only starts after now.
    w.clock.set(berlin(2030, 1, 7, 10, 7));
    assert_eq!(
        starts(&w, f.clinic_id, f.laser_treatment, "2030-01-07", f.laser).await,
        every_quarter(berlin(2030, 1, 7, 10, 15), berlin(2030, 1, 7, 17, 15))
    );
    // Yesterday and a closed Sunday: nothing.
    assert!(
        starts(&w, f.clinic_id, f.laser_treatment, "2030-01-06", f.laser)
            .await
            .is_empty()
    );
    assert!(
        starts(&w, f.clinic_id, f.laser_treatment, "2030-01-13", f.laser)
            .await
            .is_empty()
    );

    // Unknown clinic or treatment: not found.
    assert!(matches!(
        w.read
            .availability(
                Uuid::new_v4(),
                f.laser_treatment.0,
                date("2030-01-08"),
                w.clock.now()
            )
            .await,
        Err(ProjectionError::NotFound(_))
    ));
    assert!(matches!(
        w.read
            .availability(
                f.clinic_id.0,
                Uuid::new_v4(),
                date("2030-01-08"),
                w.clock.now()
            )
            .await,
        Err(ProjectionError::NotFound(_))
    ));
    assert!(matches!(
        w.read.schedule(Uuid::new_v4(), date("2030-01-08")).await,
        Err(ProjectionError::NotFound(_))
    ));
}

#[tokio::test]
async fn dst_change_days_in_berlin() {
    let w = world().await;
    // A night clinic open on Sundays 01:00-05:00 local, one practitioner,
    // a 60-minute treatment without buffer.
    let clinic_id = ClinicId::new();
    let doctor = ResourceId::new();
    let treatment = TreatmentId::new();
    let mut days: [Vec<TimeRange>; 7] = Default::default();
    days[6] = vec![TimeRange {
        from: hm(1, 0),
        to: hm(5, 0),
    }];
    raw::<Clinic>(
        &w.commands,
        clinic_id,
        vec![
            ClinicCommand::Register {
                clinic_id,
                name: "Night clinic".to_string(),
                timezone: "Europe/Berlin".to_string(),
                currency: "EUR".to_string(),
                cancellation_notice_hours: 24,
                late_cancel_fee_percent: 50,
            },
            ClinicCommand::SetOpeningHours {
                hours: OpeningHours { days },
            },
            ClinicCommand::AddResource {
                resource_id: doctor,
                name: "Dr. Nacht".to_string(),
                kind: ResourceKind::Practitioner,
            },
            ClinicCommand::AddTreatment {
                treatment_id: treatment,
                name: "Peel".to_string(),
                duration_minutes: 60,
                buffer_minutes: 0,
                price: Money(9_000),
                resource_kind: ResourceKind::Practitioner,
            },
        ],
    )
    .await;
    // An ordinary Sunday (UTC+1): 01:00-05:00 local is 00:00-04:00 UTC,
    // starts 00:00..03:00 UTC.
    assert_eq!(
        starts(&w, clinic_id, treatment, "2030-03-24", doctor).await,
        every_quarter(utc("2030-03-24T00:00:00Z"), utc("2030-03-24T03:00:00Z"))
    );
    // Spring forward (02:00 -> 03:00): 01:00 CET is 00:00 UTC, 05:00 CEST
    // is 03:00 UTC; three hours open, starts 00:00..02:00 UTC.
    assert_eq!(
        starts(&w, clinic_id, treatment, "2030-03-31", doctor).await,
        every_quarter(utc("2030-03-31T00:00:00Z"), utc("2030-03-31T02:00:00Z"))
    );
    // Fall back (03:00 -> 02:00): 01:00 CEST is 23:00 UTC the day
    // before, 05:00 CET is 04:00 UTC; five hours open.
    let fall = starts(&w, clinic_id, treatment, "2030-10-27", doctor).await;
    assert_eq!(
        fall,
        every_quarter(utc("2030-10-26T23:00:00Z"), utc("2030-10-27T03:00:00Z"))
    );
    assert_eq!(fall.len(), 17);
    // Booking one across the doubled hour takes it away.
    book(
        &w.commands,
        Uuid::new_v4(),
        clinic_id,
        doctor,
        treatment,
        utc("2030-10-27T01:00:00Z"),
        PaymentInput::AtClinic,
        None,
    )
    .await;
    let after = starts(&w, clinic_id, treatment, "2030-10-27", doctor).await;
    let taken = every_quarter(utc("2030-10-27T00:15:00Z"), utc("2030-10-27T01:45:00Z"));
    let expected: Vec<_> = fall.into_iter().filter(|s| !taken.contains(s)).collect();
    assert_eq!(after, expected);
}

/// Every free start the projection offers is accepted by the write side,
/// and a start it does not offer on the grid is refused.
#[tokio::test]
async fn offered_starts_are_bookable() {
    let w = world().await;
    let f = clinic(&w.commands).await;
    book(
        &w.commands,
        Uuid::new_v4(),
        f.clinic_id,
        f.laser,
        f.laser_treatment,
        berlin(2030, 1, 8, 12, 0),
        PaymentInput::AtClinic,
        None,
    )
    .await;
    let offered = starts(&w, f.clinic_id, f.laser_treatment, "2030-01-08", f.laser).await;
    let grid = every_quarter(berlin(2030, 1, 8, 8, 0), berlin(2030, 1, 8, 18, 0));
    for start in grid {
        let input = clinicbook_commands::booking::BookTreatment {
            reservation_id: None,
            patient_id: Uuid::new_v4(),
            clinic_id: f.clinic_id.0,
            resource_id: f.laser.0,
            treatment_id: f.laser_treatment.0,
            start,
            payment: PaymentInput::AtClinic,
            promo_code: None,
        };
        // Book on a scratch copy of the question: quote-like check by
        // booking and cancelling again.
        let result = w.commands.book(&staff(), input).await;
        assert_eq!(
            result.is_ok(),
            offered.contains(&start),
            "start {start}: {result:?}"
        );
        if let Ok(done) = result {
            w.commands
                .cancel(
                    &staff(),
                    done.output.reservation_id,
                    Cancel {
                        reason: "probe".to_string(),
                    },
                )
                .await
                .unwrap();
        }
    }
}

/// The free starts of `resource` as `read` answers them (from its cache
/// when it holds the answer), checked against the rendered JSON answer.
async fn free_on(
    read: &clinicbook_projections::ReadModels,
    w: &World,
    (clinic, treatment, day): (ClinicId, TreatmentId, &str),
    resource: ResourceId,
) -> Vec<DateTime<Utc>> {
    let now = w.clock.now();
    let answer = read
        .availability(clinic.0, treatment.0, date(day), now)
        .await
        .unwrap();
    let json = read
        .availability_json(clinic.0, treatment.0, date(day), now)
        .await
        .unwrap();
    let rendered: clinicbook_projections::query::schedule::Availability =
        serde_json::from_slice(&json).unwrap();
    assert_eq!(rendered, answer, "the JSON answer is the answer");
    answer
        .slots
        .iter()
        .filter(|slot| slot.resource_id == resource.0)
        .map(|slot| slot.start)
        .collect()
}

/// Availability is answered from a cache: a booking, a hold, a
/// cancellation and a release each show in the very next answer once the
/// projector has applied them, both through the read models that applied
/// them and through another process's (its own cache, told of nothing).
#[tokio::test]
async fn cached_answers_show_each_batch_right_after_it_is_applied() {
    let w = world().await;
    let f = clinic(&w.commands).await;
    let other = clinicbook_projections::ReadModels::new(w.db.pool.clone());
    let day = "2030-01-08";
    let key = (f.clinic_id, f.laser_treatment, day);
    let all_day = every_quarter(berlin(2030, 1, 8, 9, 0), berlin(2030, 1, 8, 17, 15));
    w.catch_up().await;
    for _ in 0..2 {
        assert_eq!(free_on(&w.read, &w, key, f.laser).await, all_day);
        assert_eq!(free_on(&other, &w, key, f.laser).await, all_day);
    }
    let without = |taken: &[DateTime<Utc>]| -> Vec<DateTime<Utc>> {
        all_day
            .iter()
            .copied()
            .filter(|s| !taken.contains(s))
            .collect()
    };

    // Booked 10:00 (busy until 11:00): 09:15-10:45 go.
    let booked = book(
        &w.commands,
        Uuid::new_v4(),
        f.clinic_id,
        f.laser,
        f.laser_treatment,
        berlin(2030, 1, 8, 10, 0),
        PaymentInput::AtClinic,
        None,
    )
    .await;
    w.catch_up().await;
    let booking = every_quarter(berlin(2030, 1, 8, 9, 15), berlin(2030, 1, 8, 10, 45));
    assert_eq!(free_on(&w.read, &w, key, f.laser).await, without(&booking));
    assert_eq!(free_on(&other, &w, key, f.laser).await, without(&booking));

    // Held 14:00 (busy until 15:00): 13:15-14:45 go as well.
    let hold = w
        .commands
        .place_hold(
            &staff(),
            clinicbook_wire::holds::PlaceHold {
                hold_id: None,
                patient_id: Uuid::new_v4(),
                clinic_id: f.clinic_id.0,
                resource_id: f.laser.0,
                treatment_id: f.laser_treatment.0,
                start: berlin(2030, 1, 8, 14, 0),
                ttl_seconds: Some(600),
                promo_code: None,
            },
        )
        .await
        .unwrap()
        .output;
    w.catch_up().await;
    let held = every_quarter(berlin(2030, 1, 8, 13, 15), berlin(2030, 1, 8, 14, 45));
    let both: Vec<_> = booking.iter().chain(&held).copied().collect();
    assert_eq!(free_on(&w.read, &w, key, f.laser).await, without(&both));
    assert_eq!(free_on(&other, &w, key, f.laser).await, without(&both));
    // The other laser's answer never changed.
    assert_eq!(
        free_on(&w.read, &w, key, f.laser_b).await,
        all_day,
        "one calendar's batch leaves the others' starts alone"
    );

    // Cancelled: its starts come back; the hold's stay taken.
    w.commands
        .cancel(
            &staff(),
            booked.reservation_id,
            Cancel {
                reason: "moved abroad".to_string(),
            },
        )
        .await
        .unwrap();
    w.catch_up().await;
    assert_eq!(free_on(&w.read, &w, key, f.laser).await, without(&held));
    assert_eq!(free_on(&other, &w, key, f.laser).await, without(&held));

    // Released: the whole day again.
    w.commands
        .release_hold(&staff(), hold.hold_id)
        .await
        .unwrap();
    w.catch_up().await;
    assert_eq!(free_on(&w.read, &w, key, f.laser).await, all_day);
    assert_eq!(free_on(&other, &w, key, f.laser).await, all_day);

    // A change of the clinic's setup (a closure) reaches every day's answer.
    w.commands
        .add_closure(
            &staff(),
            f.clinic_id.0,
            AddClosure {
                start: berlin(2030, 1, 8, 12, 0),
                end: berlin(2030, 1, 8, 13, 0),
                reason: "team lunch".to_string(),
            },
        )
        .await
        .unwrap();
    w.catch_up().await;
    let closed = every_quarter(berlin(2030, 1, 8, 11, 15), berlin(2030, 1, 8, 12, 45));
    assert_eq!(free_on(&w.read, &w, key, f.laser).await, without(&closed));
    assert_eq!(free_on(&other, &w, key, f.laser).await, without(&closed));
}
