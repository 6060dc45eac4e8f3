//! Tamper evidence: the events table refuses changes, and a change made
//! behind the trigger's back breaks the hash chain where it was made.

use clinicbook_domain::wallet::{Wallet, WalletCommand};
use clinicbook_domain::{Money, PatientId};
use clinicbook_eventstore::{audit, EventStore};

use crate::common::{run, store};

async fn wallet_with_deposits(store: &EventStore, count: usize) -> String {
    let patient = PatientId::new().to_string();
    for i in 0..count {
        run::<Wallet>(
            store,
            &patient,
            WalletCommand::Deposit {
                amount: Money(10 * (i as i64 + 1)),
                reference: format!("d{i}"),
            },
        )
        .await;
    }
    patient
}

#[tokio::test]
async fn update_delete_and_truncate_of_events_are_refused() {
    let (store, db) = store().await;
    let patient = wallet_with_deposits(&store, 2).await;
    for sql in [
        "UPDATE events SET payload = '{}' WHERE aggregate_id = $1",
        "DELETE FROM events WHERE aggregate_id = $1",
    ] {
        let refused = sqlx::query(sql).bind(&patient).execute(&db.pool).await;
        let message = format!("{:?}", refused.err());
        assert!(message.contains("append-only"), "{sql}: {message}");
    }
    let truncate = sqlx::query("TRUNCATE events").execute(&db.pool).await;
    assert!(format!("{:?}", truncate.err()).contains("append-only"));
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&db.pool)
        .await
        .unwrap_or(-1);
    assert_eq!(count, 2);
}

#[tokio::test]
async fn verify_finds_a_tampered_payload_a_deleted_event_and_a_swapped_pair() {
    let (store, db) = store().await;
    let clean = wallet_with_deposits(&store, 4).await;
    let tampered = wallet_with_deposits(&store, 4).await;
    let deleted = wallet_with_deposits(&store, 4).await;
    let swapped = wallet_with_deposits(&store, 4).await;
    let before = audit::verify(&db.pool, None, None)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(before.ok);
    assert_eq!((before.streams_checked, before.events_checked), (4, 16));

    // As superuser with triggers off, as an attacker with database access would.
    let su = db.superuser_pool().await;
    let mut conn = su.acquire().await.unwrap_or_else(|e| panic!("{e}"));
    let statements = [
        ("SET session_replication_role = replica", None),
        (
            "UPDATE events SET payload = '{\"FundsDeposited\":{\"amount\":99999,\"reference\":\"d1\"}}'
              WHERE aggregate_id = $1 AND sequence = 2",
            Some(&tampered),
        ),
        ("DELETE FROM events WHERE aggregate_id = $1 AND sequence = 3", Some(&deleted)),
        (
            "UPDATE events e SET payload = o.payload FROM events o
              WHERE e.aggregate_id = $1 AND o.aggregate_id = $1
                AND ((e.sequence = 2 AND o.sequence = 3) OR (e.sequence = 3 AND o.sequence = 2))",
            Some(&swapped),
        ),
    ];
    for (sql, bind) in statements {
        let query = sqlx::query(sql);
        let query = match bind {
            Some(id) => query.bind(id),
            None => query,
        };
        query
            .execute(&mut *conn)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    let report = audit::verify(&db.pool, None, None)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(!report.ok);
    assert_eq!(report.streams_checked, 4);
    let mut broken: Vec<(String, i64)> = report
        .broken
        .iter()
        .map(|b| (b.aggregate_id.clone(), b.sequence))
        .collect();
    broken.sort();
    let mut expected = vec![
        (tampered.clone(), 2),
        (deleted.clone(), 4),
        (swapped.clone(), 2),
    ];
    expected.sort();
    assert_eq!(broken, expected);
    assert!(!report.broken.iter().any(|b| b.aggregate_id == clean));

    let one = audit::verify(&db.pool, Some("Wallet"), Some(&clean))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(one.ok && one.streams_checked == 1 && one.events_checked == 4);
}
