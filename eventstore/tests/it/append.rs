//! The commit statement binds twenty parameters by position: every column
//! it writes (events, idempotency answer, snapshot) is read back here and
//! compared with what the command gave, so a parameter bound to the wrong
//! placeholder fails this test.

use chrono::{DateTime, Utc};
use clinicbook_domain::wallet::{Wallet, WalletCommand, WalletEvent};
use clinicbook_domain::{Money, PatientId};
use clinicbook_eventstore::hash::{self, ChainVersion, EventFields, GENESIS};
use clinicbook_eventstore::{audit, IdempotencyKey, StoreConfig, UnitOfWork, UowError, UseCase};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::common::{meta, store_with};

/// Two deposits on one wallet and one on another, in one commit.
struct Deposits {
    first: String,
    second: String,
}

fn deposit(cents: i64, reference: &str) -> WalletCommand {
    WalletCommand::Deposit {
        amount: Money(cents),
        reference: reference.to_owned(),
    }
}

impl UseCase for Deposits {
    type Output = String;

    async fn run(&self, uow: &mut UnitOfWork) -> Result<String, UowError> {
        uow.handle::<Wallet>(&self.first, deposit(101, "a")).await?;
        uow.handle::<Wallet>(&self.first, deposit(202, "b")).await?;
        uow.handle::<Wallet>(&self.second, deposit(303, "c"))
            .await?;
        Ok("the answer".to_owned())
    }
}

type EventColumns = (
    String,
    String,
    i64,
    String,
    String,
    String,
    String,
    Vec<u8>,
    i64,
    DateTime<Utc>,
    i16,
);

/// The `recorded_at` the metadata carries.
fn meta_at(metadata: &str) -> String {
    let value: Value = serde_json::from_str(metadata).unwrap_or_default();
    value["recorded_at"].as_str().unwrap_or_default().to_owned()
}

#[tokio::test]
async fn every_column_of_a_commit_holds_what_the_command_gave() {
    let (store, db) = store_with(StoreConfig {
        snapshot_every: 2,
        ..StoreConfig::default()
    })
    .await;
    let use_case = Deposits {
        first: PatientId::new().to_string(),
        second: PatientId::new().to_string(),
    };
    let metadata = meta("deposit_twice");
    let key = IdempotencyKey::new("wallets", "key-1", b"the request");
    let committed = store
        .execute(&metadata, Some(&key), &use_case)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(committed.events_written, 3);

    let events: Vec<EventColumns> = sqlx::query_as(
        "SELECT aggregate_type, aggregate_id, sequence, event_type, event_version,
                payload::text, metadata::text, hash, position, recorded_at, chain_version
           FROM events ORDER BY position",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let expected = [
        (&use_case.first, 1, 101, "a"),
        (&use_case.first, 2, 202, "b"),
        (&use_case.second, 1, 303, "c"),
    ];
    assert_eq!(events.len(), expected.len());
    let mut previous = [GENESIS, GENESIS];
    for (row, (id, sequence, cents, reference)) in events.iter().zip(expected) {
        let (
            ty,
            stored_id,
            seq,
            event_type,
            version,
            payload,
            stored_metadata,
            stored_hash,
            _,
            recorded_at,
            chain_version,
        ) = row;
        assert_eq!(*chain_version, ChainVersion::CURRENT.number());
        assert_eq!(
            meta_at(stored_metadata),
            recorded_at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
        );
        assert_eq!(ty, "Wallet");
        assert_eq!(stored_id, id);
        assert_eq!(*seq, sequence);
        assert_eq!(event_type, "FundsDeposited");
        assert_eq!(version, clinicbook_domain::EVENT_VERSION);
        let event: WalletEvent = serde_json::from_str(payload).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            event,
            WalletEvent::FundsDeposited {
                amount: Money(cents),
                reference: reference.to_owned(),
            }
        );
        let meta_json: Value =
            serde_json::from_str(stored_metadata).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(meta_json["command_id"], metadata.command_id.to_string());
        assert_eq!(meta_json["command"], "deposit_twice");
        let stream = usize::from(id == &use_case.second);
        let chained = hash::link(
            ChainVersion::CURRENT,
            &previous[stream],
            &EventFields {
                aggregate_type: ty,
                aggregate_id: stored_id,
                sequence: sequence as u64,
                event_type,
                event_version: version,
                payload,
                metadata: stored_metadata,
            },
            *recorded_at,
        );
        assert_eq!(stored_hash.as_slice(), chained.as_slice());
        previous[stream] = chained;
    }
    assert!(audit::verify(&db.pool, None, None).await.unwrap().ok);

    let (scope, stored_key, request_hash, response, position): (
        String,
        String,
        Vec<u8>,
        String,
        i64,
    ) = sqlx::query_as(
        "SELECT scope, key, request_hash, response::text, position FROM idempotency_keys",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((scope.as_str(), stored_key.as_str()), ("wallets", "key-1"));
    assert_eq!(
        request_hash.as_slice(),
        Sha256::digest(b"the request").as_slice()
    );
    assert_eq!(response, "\"the answer\"");
    assert_eq!(Some(position), committed.position);
    assert_eq!(position, events[2].8);

    // Only the first wallet passed a multiple of two.
    let (ty, id, last_sequence, payload, last_hash): (String, String, i64, String, Vec<u8>) =
        sqlx::query_as(
            "SELECT aggregate_type, aggregate_id, last_sequence, payload::text, last_hash FROM snapshots",
        )
        .fetch_one(&db.pool)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        (ty.as_str(), id.as_str(), last_sequence),
        ("Wallet", use_case.first.as_str(), 2)
    );
    let snapshot: Wallet = serde_json::from_str(&payload).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(snapshot.balance, Money(303));
    assert_eq!(last_hash, events[1].7);

    // The same key and request answer the first answer and write nothing.
    let again = store
        .execute(&metadata, Some(&key), &use_case)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(again.replayed);
    assert_eq!(again.output, "the answer");
    assert_eq!(again.position, committed.position);
}
