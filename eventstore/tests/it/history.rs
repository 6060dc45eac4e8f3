//! Reading history back: version 1 events stored by an old release read as
//! version 2 on every read path; streams replayed to a sequence or an
//! instant; and the whole-store replay check, which passes on a sound store
//! and names a corrupted event, a lying snapshot and a stream the normal
//! load cannot read.

use chrono::{Duration, Utc};
use clinicbook_domain::pricing::PriceBreakdown;
use clinicbook_domain::reservation::{
    PaymentMethod, Reservation, ReservationCommand, ReservationEvent, Slot,
};
use clinicbook_domain::upcast::RESERVATION_BOOKED_VERSION;
use clinicbook_domain::wallet::{Wallet, WalletCommand};
use clinicbook_domain::{
    ClinicId, Money, PatientId, ReservationId, ResourceId, TreatmentId, EVENT_VERSION,
};
use clinicbook_eventstore::hash::{self, EventFields, GENESIS};
use clinicbook_eventstore::replay::{self, AggregateKind, CheckOptions, Until};
use clinicbook_eventstore::{audit, feed, EventStore, FeedPoint, StoreConfig};
use clinicbook_testkit::TestDatabase;
use serde_json::json;

use crate::common::{at, now, run, store, store_with};

/// Inserts, as release 1 would have stored it (version 1.0.0, no
/// `prepaid`), the booking of a new reservation paid from the wallet, with
/// a correct hash. Returns the reservation id.
async fn insert_v1_booking(db: &TestDatabase, total: i64) -> String {
    let reservation = ReservationId::new().to_string();
    let payload = json!({"ReservationBooked": {
        "reservation_id": reservation,
        "patient_id": PatientId::new().to_string(),
        "clinic_id": ClinicId::new().to_string(),
        "treatment_id": TreatmentId::new().to_string(),
        "slot": {"resource_id": ResourceId::new().to_string(),
                 "start": at(48).to_rfc3339(), "end": at(49).to_rfc3339()},
        "price": {"base": total, "adjustments": 0, "discount": 0, "total": total},
        "payment": {"method": "wallet"},
        "promo_code": null,
        "booked_at": now().to_rfc3339()
    }})
    .to_string();
    let metadata = json!({"actor": "old-release", "command": "book_treatment"}).to_string();
    let digest = hash::chain(
        &GENESIS,
        &EventFields {
            aggregate_type: "Reservation",
            aggregate_id: &reservation,
            sequence: 1,
            event_type: "ReservationBooked",
            event_version: "1.0.0",
            payload: &payload,
            metadata: &metadata,
        },
    );
    sqlx::query(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata, hash)
         VALUES ('Reservation', $1, 1, 'ReservationBooked', '1.0.0', $2::json, $3::json, $4)",
    )
    .bind(&reservation)
    .bind(&payload)
    .bind(&metadata)
    .bind(digest.as_slice())
    .execute(&db.pool)
    .await
    .unwrap_or_else(|e| panic!("insert v1 event: {e}"));
    reservation
}

fn prepaid_in(payload: &serde_json::Value) -> Option<i64> {
    payload["ReservationBooked"]["prepaid"].as_i64()
}

#[tokio::test]
async fn a_version_1_booking_reads_as_version_2_on_every_read_path() {
    let (store, db) = store().await;
    let reservation = insert_v1_booking(&db, 9_000).await;

    // The aggregate load.
    let (state, sequence) = store
        .aggregate::<Reservation>(&reservation)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        (sequence, state.prepaid, state.price.total),
        (1, Money(9_000), Money(9_000))
    );

    // The audit read: upcast, naming the stored version.
    let events = audit::stream_events(&db.pool, "Reservation", &reservation)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].event_version, RESERVATION_BOOKED_VERSION);
    assert_eq!(events[0].upcast_from.as_deref(), Some("1.0.0"));
    assert_eq!(prepaid_in(&events[0].payload), Some(9_000));

    // The audit replay.
    let replayed = replay::stream_at(
        &db.pool,
        AggregateKind::Reservation,
        &reservation,
        Until::End,
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"))
    .unwrap_or_else(|| panic!("no stream"));
    assert_eq!(replayed.state["prepaid"], json!(9_000));
    assert_eq!(replayed.events[0].event_version, RESERVATION_BOOKED_VERSION);

    // The feed the projectors read.
    // (Other tests' transactions in the cluster hold the horizon back a moment.)
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let fed = loop {
        let fed = feed::read_after(&db.pool, FeedPoint::START, 100)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        if !fed.is_empty() || std::time::Instant::now() > deadline {
            break fed;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert_eq!(fed.len(), 1);
    assert_eq!(fed[0].event_version, RESERVATION_BOOKED_VERSION);
    assert_eq!(prepaid_in(&fed[0].payload), Some(9_000));

    // The stored row is untouched and its hash still verifies.
    let stored: (String, String) =
        sqlx::query_as("SELECT event_version, payload::text FROM events WHERE aggregate_id = $1")
            .bind(&reservation)
            .fetch_one(&db.pool)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(stored.0, "1.0.0");
    assert!(!stored.1.contains("prepaid"));
    let report = audit::verify(&db.pool, None, None)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(report.ok, "{report:?}");

    // The next event is written after it through the normal path, in the
    // current version, and the chain still holds; the check agrees.
    run::<Reservation>(
        &store,
        &reservation,
        ReservationCommand::CheckIn { now: at(47) },
    )
    .await;
    let versions: Vec<(String, String)> = sqlx::query_as(
        "SELECT event_type, event_version FROM events WHERE aggregate_id = $1 ORDER BY sequence",
    )
    .bind(&reservation)
    .fetch_all(&db.pool)
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        versions,
        [
            ("ReservationBooked".to_string(), "1.0.0".to_string()),
            ("CheckedIn".to_string(), EVENT_VERSION.to_string())
        ]
    );
    let report = audit::verify(&db.pool, None, None)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(report.ok, "{report:?}");
    let check = replay::check_all(&store, CheckOptions::default(), |_| {})
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(check.ok, "{check:?}");
    assert_eq!((check.streams_checked, check.events_checked), (1, 2));
}

#[tokio::test]
async fn new_bookings_are_stored_as_version_2() {
    let (store, db) = store().await;
    let reservation = ReservationId::new();
    let price = Money(5_000);
    run::<Reservation>(
        &store,
        &reservation.to_string(),
        ReservationCommand::Book {
            reservation_id: reservation,
            patient_id: PatientId::new(),
            clinic_id: ClinicId::new(),
            treatment_id: TreatmentId::new(),
            slot: Slot {
                resource_id: ResourceId::new(),
                start: at(24),
                end: at(25),
            },
            price: PriceBreakdown {
                base: price,
                adjustments: Money::ZERO,
                discount: Money::ZERO,
                total: price,
            },
            payment: PaymentMethod::AtClinic,
            promo_code: None,
            now: now(),
        },
    )
    .await;
    let (version, payload): (String, String) =
        sqlx::query_as("SELECT event_version, payload::text FROM events WHERE aggregate_id = $1")
            .bind(reservation.to_string())
            .fetch_one(&db.pool)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(version, RESERVATION_BOOKED_VERSION);
    let event: ReservationEvent = serde_json::from_str(&payload).unwrap_or_else(|e| panic!("{e}"));
    assert!(matches!(
        event,
        ReservationEvent::ReservationBooked {
            prepaid: Money(0),
            ..
        }
    ));
}

async fn deposits(store: &EventStore, patient: &str, from: usize, count: usize) {
    for i in from..from + count {
        run::<Wallet>(
            store,
            patient,
            WalletCommand::Deposit {
                amount: Money(100 + i as i64),
                reference: format!("d{i}"),
            },
        )
        .await;
    }
}

#[tokio::test]
async fn a_stream_replays_to_a_sequence_and_to_an_instant() {
    let (store, db) = store().await;
    let patient = PatientId::new().to_string();
    deposits(&store, &patient, 0, 3).await;
    let between = Utc::now();
    deposits(&store, &patient, 3, 2).await;

    let at_two = replay::stream_at(
        &db.pool,
        AggregateKind::Wallet,
        &patient,
        Until::Sequence(2),
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"))
    .unwrap_or_else(|| panic!("no stream"));
    assert_eq!((at_two.sequence, at_two.last_sequence), (2, 5));
    assert_eq!(at_two.events.len(), 2);
    assert_eq!(at_two.state["balance"], json!(100 + 101));

    let as_of = replay::stream_at(
        &db.pool,
        AggregateKind::Wallet,
        &patient,
        Until::Instant(between),
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"))
    .unwrap_or_else(|| panic!("no stream"));
    assert_eq!(as_of.sequence, 3);
    assert_eq!(as_of.state["balance"], json!(100 + 101 + 102));

    let before = replay::stream_at(
        &db.pool,
        AggregateKind::Wallet,
        &patient,
        Until::Instant(between - Duration::days(1)),
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"))
    .unwrap_or_else(|| panic!("no stream"));
    assert_eq!((before.sequence, before.events.len()), (0, 0));
    assert_eq!(
        before.state,
        serde_json::to_value(Wallet::default()).unwrap_or_default()
    );

    let missing = replay::stream_at(&db.pool, AggregateKind::Wallet, "nobody", Until::End)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(missing.is_none());
    assert!("Wallet".parse::<AggregateKind>().is_ok());
    let unknown = "Wallets"
        .parse::<AggregateKind>()
        .err()
        .map(|e| e.to_string());
    assert!(
        unknown
            .as_deref()
            .is_some_and(|m| m.contains("Clinic, Calendar, Reservation")),
        "{unknown:?}"
    );
}

/// Runs `sql` as superuser with the append-only trigger off.
async fn tamper(db: &TestDatabase, sql: &str, id: &str) {
    let su = db.superuser_pool().await;
    let mut conn = su.acquire().await.unwrap_or_else(|e| panic!("{e}"));
    sqlx::query("SET session_replication_role = replica")
        .execute(&mut *conn)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    sqlx::query(sql)
        .bind(id)
        .execute(&mut *conn)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

#[tokio::test]
async fn the_replay_check_passes_on_a_sound_store_and_names_each_corrupted_stream() {
    let config = StoreConfig {
        snapshot_every: 10,
        ..StoreConfig::default()
    };
    let (store, db) = store_with(config.clone()).await;
    let mut wallets = Vec::new();
    for _ in 0..4 {
        let patient = PatientId::new().to_string();
        deposits(&store, &patient, 0, 25).await;
        wallets.push(patient);
    }
    let small = PatientId::new().to_string();
    deposits(&store, &small, 0, 3).await;

    // Small batches, so streams span batches.
    let options = CheckOptions {
        batch: 7,
        concurrency: 3,
    };
    let calls = std::sync::atomic::AtomicU64::new(0);
    let sound = replay::check_all(&store, options, |_| {
        calls.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(sound.ok, "{sound:?}");
    assert_eq!(
        (
            sound.streams_checked,
            sound.events_checked,
            sound.snapshots_checked
        ),
        (5, 103, 4)
    );
    assert!(calls.into_inner() >= 103 / 7);

    // An event that no longer deserialises, a snapshot that lies about the
    // balance, and a stream whose middle event is gone.
    tamper(
        &db,
        "UPDATE events SET payload = '{\"FundsDeposited\":{\"amount\":\"lots\"}}'
          WHERE aggregate_id = $1 AND sequence = 5",
        &wallets[0],
    )
    .await;
    tamper(
        &db,
        "UPDATE snapshots SET payload = jsonb_set(payload::jsonb, '{balance}', '1')::json
          WHERE aggregate_id = $1",
        &wallets[1],
    )
    .await;
    tamper(
        &db,
        "DELETE FROM events WHERE aggregate_id = $1 AND sequence = 2",
        &small,
    )
    .await;
    let fresh = EventStore::new(db.pool.clone(), config);
    let broken = replay::check_all(&fresh, options, |_| {})
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(!broken.ok);
    let mut found: Vec<(String, i64)> = broken
        .mismatches
        .iter()
        .map(|m| (m.aggregate_id.clone(), m.sequence))
        .collect();
    found.sort();
    let mut expected = vec![
        (wallets[0].clone(), 5),
        (wallets[1].clone(), 20),
        (small.clone(), 3),
    ];
    expected.sort();
    assert_eq!(found, expected, "{broken:?}");
    let reasons: Vec<&str> = broken
        .mismatches
        .iter()
        .map(|m| m.reason.as_str())
        .collect();
    assert!(
        reasons.iter().any(|r| r.contains("does not deserialise")),
        "{reasons:?}"
    );
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("snapshot at sequence 20 differs")),
        "{reasons:?}"
    );
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("event 3 follows event 1")),
        "{reasons:?}"
    );
}
