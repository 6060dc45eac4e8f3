//! Snapshots and the cache: both are only starting points, and a state
//! built from them equals a full replay.

use clinicbook_domain::wallet::{Wallet, WalletCommand};
use clinicbook_domain::{DomainError, Money, PatientId};
use clinicbook_eventstore::{audit, EventStore, ExecuteError, StoreConfig};
use cqrs_es::Aggregate;

use crate::common::{meta, run, store_with, Run};

fn deposit(i: usize) -> WalletCommand {
    WalletCommand::Deposit {
        amount: Money(100 + i as i64),
        reference: format!("deposit-{i}"),
    }
}

/// The wallet as a fold of every stored event, without store or snapshot.
async fn full_replay(store: &EventStore, patient: &str) -> Wallet {
    let events = audit::stream_events(store.pool(), "Wallet", patient)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let mut wallet = Wallet::default();
    for event in events {
        wallet.apply(serde_json::from_value(event.payload).unwrap_or_else(|e| panic!("{e}")));
    }
    wallet
}

#[tokio::test]
async fn a_state_loaded_from_a_snapshot_equals_a_full_replay() {
    let config = StoreConfig {
        snapshot_every: 10,
        ..StoreConfig::default()
    };
    let (store, db) = store_with(config.clone()).await;
    let patient = PatientId::new().to_string();
    for i in 0..25 {
        run::<Wallet>(&store, &patient, deposit(i)).await;
    }
    let (last_sequence, taken): (i64, i64) = sqlx::query_as(
        "SELECT last_sequence, current_snapshot FROM snapshots WHERE aggregate_type = 'Wallet' AND aggregate_id = $1",
    )
    .bind(&patient)
    .fetch_one(&db.pool)
    .await
    .unwrap_or_else(|e| panic!("no snapshot: {e}"));
    assert_eq!((last_sequence, taken), (20, 2));

    // A second process: empty cache, so it starts from the snapshot.
    let other = EventStore::new(db.pool.clone(), config);
    let (from_snapshot, sequence) = other
        .aggregate::<Wallet>(&patient)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(sequence, 25);
    assert_eq!(from_snapshot, full_replay(&store, &patient).await);
    assert_eq!(from_snapshot.balance, Money((0..25).map(|i| 100 + i).sum()));

    // Appending after a snapshot load continues the hash chain.
    run::<Wallet>(&other, &patient, deposit(25)).await;
    let report = audit::verify(&db.pool, Some("Wallet"), Some(&patient))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(report.ok, "{report:?}");
    assert_eq!(report.events_checked, 26);
}

#[tokio::test]
async fn an_unreadable_snapshot_falls_back_to_a_full_replay() {
    let (store, db) = store_with(StoreConfig {
        snapshot_every: 2,
        ..StoreConfig::default()
    })
    .await;
    let patient = PatientId::new().to_string();
    for i in 0..3 {
        run::<Wallet>(&store, &patient, deposit(i)).await;
    }
    sqlx::query("UPDATE snapshots SET payload = '{\"not\":\"a wallet\"}'")
        .execute(&db.pool)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let fresh = EventStore::new(db.pool.clone(), StoreConfig::default());
    let (wallet, sequence) = fresh
        .aggregate::<Wallet>(&patient)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(sequence, 3);
    assert_eq!(wallet, full_replay(&store, &patient).await);
}

#[tokio::test]
async fn the_cache_is_only_a_starting_point_for_two_processes_on_one_database() {
    let (a, db) = store_with(StoreConfig::default()).await;
    let b = EventStore::new(db.pool.clone(), StoreConfig::default());
    let patient = PatientId::new().to_string();
    run::<Wallet>(&a, &patient, deposit(0)).await;
    let (cached, _) = a
        .aggregate::<Wallet>(&patient)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(cached.balance, Money(100));

    // Process B spends the balance; process A's cache still holds 100.
    run::<Wallet>(
        &b,
        &patient,
        WalletCommand::Debit {
            amount: Money(100),
            reference: "b".to_string(),
        },
    )
    .await;

    let spend_again = Run::<Wallet> {
        id: patient.clone(),
        command: WalletCommand::Debit {
            amount: Money(100),
            reference: "a".to_string(),
        },
    };
    match a.execute(&meta("debit"), None, &spend_again).await {
        Err(ExecuteError::Domain(DomainError::InsufficientFunds { balance, .. })) => {
            assert_eq!(balance, Money::ZERO)
        }
        other => panic!("process A must see B's debit: {other:?}"),
    }
    let (seen_by_a, sequence) = a
        .aggregate::<Wallet>(&patient)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((seen_by_a.balance, sequence), (Money::ZERO, 2));
}
