//! What is kept only for a while, and how long a session may sit idle in a
//! transaction: idempotency keys answer retries within their window, a
//! retry after it is a new command, and the purge removes only expired
//! keys; request sessions are ended when idle in a transaction, long-work
//! sessions never are.

use std::time::Duration;

use clinicbook_domain::wallet::{Wallet, WalletCommand};
use clinicbook_domain::{Money, PatientId};
use clinicbook_eventstore::{connect_for, IdempotencyKey, Sessions, StoreConfig};
use clinicbook_testkit::TestDatabase;

use crate::common::{count_events, meta, store_with, Run};

fn deposit(patient: &str, reference: &str) -> Run<Wallet> {
    Run {
        id: patient.to_owned(),
        command: WalletCommand::Deposit {
            amount: Money(100),
            reference: reference.to_owned(),
        },
    }
}

/// Moves every key of `key` back by `days`, as if stored that long ago.
async fn age(db: &TestDatabase, key: &str, days: i64) {
    sqlx::query(
        "UPDATE idempotency_keys SET created_at = created_at - $2 * interval '1 day' WHERE key = $1",
    )
    .bind(key)
    .bind(days)
    .execute(&db.pool)
    .await
    .unwrap_or_else(|e| panic!("{e}"));
}

async fn keys(db: &TestDatabase) -> Vec<String> {
    sqlx::query_scalar("SELECT key FROM idempotency_keys ORDER BY key")
        .fetch_all(&db.pool)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

#[tokio::test]
async fn a_retry_within_the_window_replays_and_one_after_it_is_a_new_command() {
    let (store, db) = store_with(StoreConfig::default()).await;
    let patient = PatientId::new().to_string();
    let key = IdempotencyKey::new("deposit", "k-1", b"same request");
    let first = store
        .execute(&meta("deposit"), Some(&key), &deposit(&patient, "a"))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(!first.replayed);
    // Six days later: still the first answer, nothing written.
    age(&db, "k-1", 6).await;
    let retry = store
        .execute(&meta("deposit"), Some(&key), &deposit(&patient, "b"))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(retry.replayed);
    assert_eq!(retry.position, first.position);
    assert_eq!(count_events(&db, "Wallet", None).await, 1);
    // Past the 7-day window (not purged yet): the retry is a new command,
    // and the key now names it.
    age(&db, "k-1", 2).await;
    let later = store
        .execute(&meta("deposit"), Some(&key), &deposit(&patient, "b"))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(!later.replayed);
    assert!(later.position > first.position);
    assert_eq!(count_events(&db, "Wallet", None).await, 2);
    let again = store
        .execute(&meta("deposit"), Some(&key), &deposit(&patient, "c"))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(again.replayed);
    assert_eq!(again.position, later.position);
    assert_eq!(count_events(&db, "Wallet", None).await, 2);
}

#[tokio::test]
async fn the_purge_removes_only_keys_past_the_window() {
    let (store, db) = store_with(StoreConfig {
        idempotency_window: Duration::from_secs(3600),
        ..StoreConfig::default()
    })
    .await;
    let patient = PatientId::new().to_string();
    for n in 0..5 {
        let name = format!("k-{n}");
        let key = IdempotencyKey::new("deposit", &name, name.as_bytes());
        store
            .execute(
                &meta("deposit"),
                Some(&key),
                &deposit(&patient, &format!("r-{n}")),
            )
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    }
    for old in ["k-0", "k-2", "k-3"] {
        age(&db, old, 1).await;
    }
    // Two at a time: the purge goes on until none is left.
    let deleted = store
        .purge_idempotency_keys(2)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(deleted, 3);
    assert_eq!(keys(&db).await, ["k-1", "k-4"]);
    assert_eq!(
        store
            .purge_idempotency_keys(2)
            .await
            .unwrap_or_else(|e| panic!("{e}")),
        0
    );
    // The events stay: only the replay answers go.
    assert_eq!(count_events(&db, "Wallet", None).await, 5);
}

/// Begins a transaction on `pool`, leaves it idle for `idle`, then runs a
/// statement in it and commits; answers whether that worked.
async fn survives_idling(pool: &sqlx::PgPool, idle: Duration) -> bool {
    let Ok(mut tx) = pool.begin().await else {
        return false;
    };
    if sqlx::query("SELECT 1").execute(&mut *tx).await.is_err() {
        return false;
    }
    tokio::time::sleep(idle).await;
    sqlx::query("SELECT 1").execute(&mut *tx).await.is_ok() && tx.commit().await.is_ok()
}

#[tokio::test]
async fn request_sessions_idle_in_a_transaction_are_ended_and_long_work_sessions_are_not() {
    let (_, db) = store_with(StoreConfig::default()).await;
    let api = connect_for(
        &db.url,
        2,
        Sessions::Api {
            idle_in_transaction: Duration::from_millis(200),
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(survives_idling(&api, Duration::ZERO).await);
    assert!(!survives_idling(&api, Duration::from_millis(1000)).await);
    // Even where the database's own default would end it.
    sqlx::query(&format!(
        r#"ALTER DATABASE "{}" SET idle_in_transaction_session_timeout = '200ms'"#,
        db.name
    ))
    .execute(&db.superuser_pool().await)
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let long = connect_for(&db.url, 2, Sessions::LongRunning)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(survives_idling(&long, Duration::from_millis(1000)).await);
    let setting: String = sqlx::query_scalar("SHOW idle_in_transaction_session_timeout")
        .fetch_one(&long)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(setting, "0");
}
