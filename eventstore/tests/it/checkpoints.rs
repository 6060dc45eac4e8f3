//! Tamper evidence for time and for deleted tails: chain version 2 covers
//! `recorded_at` while a store of version 1 events still verifies, and a
//! signed checkpoint names streams deleted or cut short after it was taken.

use clinicbook_domain::wallet::{Wallet, WalletCommand};
use clinicbook_domain::{Money, PatientId};
use clinicbook_eventstore::checkpoint::{self, AuditKey};
use clinicbook_eventstore::hash::{self, EventFields, Hash, GENESIS};
use clinicbook_eventstore::{audit, CheckpointError, EventStore};
use clinicbook_testkit::TestDatabase;

use crate::common::{run, store};

async fn deposit(store: &EventStore, patient: &str, amount: i64, reference: &str) {
    run::<Wallet>(
        store,
        patient,
        WalletCommand::Deposit {
            amount: Money(amount),
            reference: reference.to_owned(),
        },
    )
    .await;
}

async fn wallet_with_deposits(store: &EventStore, count: usize) -> String {
    let patient = PatientId::new().to_string();
    for i in 0..count {
        deposit(store, &patient, 10 * (i as i64 + 1), &format!("d{i}")).await;
    }
    patient
}

/// Appends a deposit to `patient`'s wallet as the release before chain
/// version 2 stored it: no `recorded_at` or `chain_version` given (the
/// database fills in `now()` and 1), the hash by the version 1 rule.
async fn insert_as_version_1(
    db: &TestDatabase,
    patient: &str,
    sequence: i64,
    previous: &Hash,
) -> Hash {
    let payload = format!(r#"{{"FundsDeposited":{{"amount":100,"reference":"old{sequence}"}}}}"#);
    let metadata = r#"{"actor":"old-release","command":"deposit"}"#;
    let chained = hash::chain(
        previous,
        &EventFields {
            aggregate_type: "Wallet",
            aggregate_id: patient,
            sequence: u64::try_from(sequence).unwrap_or(0),
            event_type: "FundsDeposited",
            event_version: "1.0.0",
            payload: &payload,
            metadata,
        },
    );
    sqlx::query(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata, hash)
         VALUES ('Wallet', $1, $2, 'FundsDeposited', '1.0.0', $3::json, $4::json, $5)",
    )
    .bind(patient)
    .bind(sequence)
    .bind(&payload)
    .bind(metadata)
    .bind(chained.as_slice())
    .execute(&db.pool)
    .await
    .unwrap_or_else(|e| panic!("insert a version 1 event: {e}"));
    chained
}

async fn chain_versions(db: &TestDatabase, patient: &str) -> Vec<i16> {
    sqlx::query_scalar("SELECT chain_version FROM events WHERE aggregate_id = $1 ORDER BY sequence")
        .bind(patient)
        .fetch_all(&db.pool)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

fn broken(report: &audit::VerifyReport) -> Vec<(String, i64)> {
    let mut broken: Vec<(String, i64)> = report
        .broken
        .iter()
        .map(|b| (b.aggregate_id.clone(), b.sequence))
        .collect();
    broken.sort();
    broken
}

#[tokio::test]
async fn a_version_1_store_still_verifies_and_new_events_continue_its_chains_as_version_2() {
    let (store, db) = store().await;
    // Streams written wholly by the old release, and one it started.
    let old = PatientId::new().to_string();
    let mut previous = GENESIS;
    for sequence in 1..=3 {
        previous = insert_as_version_1(&db, &old, sequence, &previous).await;
    }
    let mixed = PatientId::new().to_string();
    let first = insert_as_version_1(&db, &mixed, 1, &GENESIS).await;
    insert_as_version_1(&db, &mixed, 2, &first).await;
    let before = audit::verify(&db.pool, None, None)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(before.ok, "{:?}", before.broken);
    assert_eq!((before.streams_checked, before.events_checked), (2, 5));

    // This release continues the old stream with version 2 events.
    deposit(&store, &mixed, 7, "new-1").await;
    deposit(&store, &mixed, 8, "new-2").await;
    assert_eq!(chain_versions(&db, &old).await, vec![1, 1, 1]);
    assert_eq!(chain_versions(&db, &mixed).await, vec![1, 1, 2, 2]);
    let (wallet, sequence) = store
        .aggregate::<Wallet>(&mixed)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((wallet.balance, sequence), (Money(215), 4));
    let after = audit::verify(&db.pool, None, None)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(after.ok, "{:?}", after.broken);
    assert_eq!((after.streams_checked, after.events_checked), (2, 7));

    // The recorded time the hash covers is the stored one, to the
    // microsecond, and the metadata's.
    let (recorded, meta): (chrono::DateTime<chrono::Utc>, String) = sqlx::query_as(
        "SELECT recorded_at, metadata->>'recorded_at' FROM events WHERE aggregate_id = $1 AND sequence = 3",
    )
    .bind(&mixed)
    .fetch_one(&db.pool)
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        recorded.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        meta
    );

    // Passing a version 2 event off as version 1 breaks the chain there.
    let changed = db
        .tamper(
            "UPDATE events SET chain_version = 1 WHERE aggregate_id = $1 AND sequence = 4",
            &[&mixed],
        )
        .await;
    assert_eq!(changed, 1);
    let downgraded = audit::verify(&db.pool, None, None)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(broken(&downgraded), vec![(mixed.clone(), 4)]);
}

#[tokio::test]
async fn changing_a_recorded_at_fails_verify_at_that_stream_and_sequence() {
    let (store, db) = store().await;
    let clean = wallet_with_deposits(&store, 3).await;
    let moved = wallet_with_deposits(&store, 3).await;
    let nudged = wallet_with_deposits(&store, 3).await;
    assert!(
        audit::verify(&db.pool, None, None)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .ok
    );

    // An hour back (an as-of answer would now include it earlier), and a
    // single microsecond.
    db.tamper(
        "UPDATE events SET recorded_at = recorded_at - interval '1 hour'
          WHERE aggregate_id = $1 AND sequence = 2",
        &[&moved],
    )
    .await;
    db.tamper(
        "UPDATE events SET recorded_at = recorded_at + interval '1 microsecond'
          WHERE aggregate_id = $1 AND sequence = 3",
        &[&nudged],
    )
    .await;

    let report = audit::verify(&db.pool, None, None)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(!report.ok);
    let mut expected = vec![(moved.clone(), 2), (nudged.clone(), 3)];
    expected.sort();
    assert_eq!(broken(&report), expected);
    assert!(report
        .broken
        .iter()
        .all(|b| b.reason.contains("recorded_at")));
    assert!(!report.broken.iter().any(|b| b.aggregate_id == clean));
}

#[tokio::test]
async fn deleting_a_streams_last_event_fails_verify_against_a_checkpoint_taken_before() {
    let (store, db) = store().await;
    let key = AuditKey::generate();
    let cut = wallet_with_deposits(&store, 3).await;
    let gone = wallet_with_deposits(&store, 2).await;
    let grows = wallet_with_deposits(&store, 2).await;
    let taken = checkpoint::take(&db.pool, &key)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(taken.streams.len(), 3);
    let (_, head) = audit::totals(&db.pool)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(taken.position, head);
    let sound = checkpoint::verify_against(&db.pool, &taken, &key.public_key())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(sound.ok, "{:?}", sound.broken);

    // Events after the checkpoint are no harm; deletions are.
    deposit(&store, &grows, 5, "later").await;
    db.tamper(
        "DELETE FROM events WHERE aggregate_id = $1 AND sequence = 3",
        &[&cut],
    )
    .await;
    db.tamper("DELETE FROM events WHERE aggregate_id = $1", &[&gone])
        .await;

    // The chains alone still hold: nothing shows the loss but the checkpoint.
    let chains = audit::verify(&db.pool, None, None)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(chains.ok);
    let report = checkpoint::verify_against(&db.pool, &taken, &key.public_key())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(!report.ok);
    let mut expected = vec![(cut.clone(), 3), (gone.clone(), 1)];
    expected.sort();
    assert_eq!(broken(&report), expected);
    let reason = |id: &str| {
        report
            .broken
            .iter()
            .find(|b| b.aggregate_id == id)
            .map(|b| b.reason.clone())
            .unwrap_or_default()
    };
    assert!(reason(&cut).contains("shorter"), "{}", reason(&cut));
    assert!(reason(&gone).contains("missing"), "{}", reason(&gone));

    // A stream rewritten with a consistent chain (so verify alone passes)
    // holds another event at the checkpoint's sequence.
    let rewritten = wallet_with_deposits(&store, 1).await;
    let again = checkpoint::take(&db.pool, &key)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let forged = hash::chain(
        &GENESIS,
        &EventFields {
            aggregate_type: "Wallet",
            aggregate_id: &rewritten,
            sequence: 1,
            event_type: "FundsDeposited",
            event_version: "1.0.0",
            payload: r#"{"FundsDeposited":{"amount":99999,"reference":"d0"}}"#,
            metadata: "{}",
        },
    );
    db.tamper(
        &format!(
            "UPDATE events SET payload = '{{\"FundsDeposited\":{{\"amount\":99999,\"reference\":\"d0\"}}}}',
                    metadata = '{{}}', chain_version = 1, hash = '\\x{}'
              WHERE aggregate_id = $1",
            hex::encode(forged)
        ),
        &[&rewritten],
    )
    .await;
    let report = checkpoint::verify_against(&db.pool, &again, &key.public_key())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        broken(&report).contains(&(rewritten.clone(), 1)),
        "{:?}",
        report.broken
    );
}

#[tokio::test]
async fn a_checkpoint_whose_signature_or_contents_were_altered_is_refused() {
    let (store, db) = store().await;
    let key = AuditKey::generate();
    let patient = wallet_with_deposits(&store, 2).await;
    let taken = checkpoint::take(&db.pool, &key)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let public = key.public_key();

    let mut signature = hex::decode(&taken.signature).unwrap_or_default();
    signature[0] ^= 0x01;
    let mut altered = taken.clone();
    altered.signature = hex::encode(signature);
    let refused = checkpoint::verify_against(&db.pool, &altered, &public).await;
    assert!(
        matches!(refused, Err(CheckpointError::BadSignature)),
        "{refused:?}"
    );

    // A shortened list hiding a deletion, with the old signature.
    db.tamper(
        "DELETE FROM events WHERE aggregate_id = $1 AND sequence = 2",
        &[&patient],
    )
    .await;
    let mut shortened = taken.clone();
    shortened.streams[0].sequence = 1;
    let refused = checkpoint::verify_against(&db.pool, &shortened, &public).await;
    assert!(
        matches!(refused, Err(CheckpointError::DigestMismatch)),
        "{refused:?}"
    );

    // Signed by another key.
    let other = AuditKey::generate().public_key();
    let refused = checkpoint::verify_against(&db.pool, &taken, &other).await;
    assert!(
        matches!(refused, Err(CheckpointError::BadSignature)),
        "{refused:?}"
    );

    // The genuine one still names the deletion.
    let report = checkpoint::verify_against(&db.pool, &taken, &public)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(broken(&report), vec![(patient.clone(), 2)]);
}
