//! The cqrs-es 0.5 traps of DESIGN.md section 3, idempotency keys, and
//! postgres-es reading what the unit of work wrote.

use std::sync::atomic::{AtomicU32, Ordering};

use clinicbook_domain::wallet::{Wallet, WalletCommand};
use clinicbook_domain::{DomainError, Money, PatientId};
use clinicbook_eventstore::{
    audit, EventStore, ExecuteError, IdempotencyKey, StoreError, UnitOfWork, UowError, UseCase,
};
use cqrs_es::event_sink::EventSink;
use cqrs_es::persist::{PersistedEventRepository, SemanticVersion};
use cqrs_es::{Aggregate, DomainEvent};
use postgres_es::PostgresEventRepository;
use serde::{Deserialize, Serialize};

use crate::common::{meta, run, store, Run};

/// A minimal aggregate for the traps: a running total.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Tally {
    pub total: i64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum TallyEvent {
    Added { n: i64 },
    BadlyVersioned,
}

impl DomainEvent for TallyEvent {
    fn event_type(&self) -> String {
        match self {
            TallyEvent::Added { .. } => "Added".to_string(),
            TallyEvent::BadlyVersioned => "BadlyVersioned".to_string(),
        }
    }

    fn event_version(&self) -> String {
        match self {
            TallyEvent::Added { .. } => "1.0.0".to_string(),
            TallyEvent::BadlyVersioned => "v2".to_string(),
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum TallyCommand {
    Add(i64),
    /// Writes an event, then fails: cqrs-es has already applied the event.
    AddThenFail(i64),
    WriteBadlyVersioned,
}

impl Aggregate for Tally {
    const TYPE: &'static str = "Tally";
    type Command = TallyCommand;
    type Event = TallyEvent;
    type Error = DomainError;
    type Services = ();

    async fn handle(
        &mut self,
        command: TallyCommand,
        _: &(),
        sink: &EventSink<Self>,
    ) -> Result<(), DomainError> {
        match command {
            TallyCommand::Add(n) => sink.write(TallyEvent::Added { n }, self).await,
            TallyCommand::AddThenFail(n) => {
                sink.write(TallyEvent::Added { n }, self).await;
                return Err(DomainError::SlotUnavailable);
            }
            TallyCommand::WriteBadlyVersioned => sink.write(TallyEvent::BadlyVersioned, self).await,
        }
        Ok(())
    }

    fn apply(&mut self, event: TallyEvent) {
        if let TallyEvent::Added { n } = event {
            self.total += n;
        }
    }
}

struct FailThenAdd {
    id: String,
}

impl UseCase for FailThenAdd {
    type Output = i64;

    async fn run(&self, uow: &mut UnitOfWork) -> Result<i64, UowError> {
        let refused = uow
            .handle::<Tally>(&self.id, TallyCommand::AddThenFail(100))
            .await;
        assert!(matches!(
            refused,
            Err(UowError::Domain(DomainError::SlotUnavailable))
        ));
        uow.handle::<Tally>(&self.id, TallyCommand::Add(1)).await?;
        Ok(uow.load::<Tally>(&self.id).await?.total)
    }
}

#[tokio::test]
async fn a_refused_handle_leaves_no_trace_in_the_unit_of_work_or_the_cache() {
    let (store, db) = store().await;
    let committed = store
        .execute(
            &meta("t"),
            None,
            &FailThenAdd {
                id: "t1".to_string(),
            },
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        committed.output, 1,
        "the refused command's event must not count"
    );
    assert_eq!(committed.events_written, 1);
    let (cached, sequence) = store
        .aggregate::<Tally>("t1")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((cached.total, sequence), (1, 1));
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM events WHERE aggregate_id = 't1'")
        .fetch_one(&db.pool)
        .await
        .unwrap_or(-1);
    assert_eq!(stored, 1);
}

/// Reads `settings` (guarded or not), and on its first attempt lets a
/// concurrent writer change it before committing a write to `target`.
struct DependsOn {
    store: EventStore,
    guarded: bool,
    attempts: AtomicU32,
}

impl UseCase for DependsOn {
    type Output = i64;

    async fn run(&self, uow: &mut UnitOfWork) -> Result<i64, UowError> {
        let seen = if self.guarded {
            uow.guard::<Tally>("settings").await?.total
        } else {
            uow.load::<Tally>("settings").await?.total
        };
        if self.attempts.fetch_add(1, Ordering::SeqCst) == 0 {
            let change = Run::<Tally> {
                id: "settings".to_string(),
                command: TallyCommand::Add(1),
            };
            if let Err(e) = self.store.execute(&meta("interfere"), None, &change).await {
                panic!("interfering write failed: {e}");
            }
        }
        uow.handle::<Tally>("target", TallyCommand::Add(seen))
            .await?;
        Ok(seen)
    }
}

#[tokio::test]
async fn a_guarded_read_retries_when_the_aggregate_changes_and_an_unguarded_one_does_not() {
    for guarded in [true, false] {
        let (store, _db) = store().await;
        run::<Tally>(&store, "settings", TallyCommand::Add(10)).await;
        let use_case = DependsOn {
            store: store.clone(),
            guarded,
            attempts: AtomicU32::new(0),
        };
        let committed = store
            .execute(&meta("depends"), None, &use_case)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let (target, _) = store
            .aggregate::<Tally>("target")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        if guarded {
            assert_eq!(committed.attempts, 2);
            assert_eq!((committed.output, target.total), (11, 11));
        } else {
            assert_eq!(committed.attempts, 1);
            assert_eq!((committed.output, target.total), (10, 10));
        }
    }
}

#[tokio::test]
async fn sequences_are_64_bit() {
    let (store, db) = store().await;
    let head: i64 = 1 << 32;
    let su = db.superuser_pool().await;
    let mut conn = su.acquire().await.unwrap_or_else(|e| panic!("{e}"));
    for sql in [
        "SET session_replication_role = replica".to_string(),
        format!(
            "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata, hash)
             VALUES ('Tally', 'big', {head}, 'Added', '1.0.0', '{{\"Added\":{{\"n\":7}}}}', '{{}}', sha256('x'::bytea))"
        ),
        format!(
            "INSERT INTO snapshots (aggregate_type, aggregate_id, last_sequence, current_snapshot, payload, last_hash)
             VALUES ('Tally', 'big', {head}, 1, '{{\"total\":7}}', sha256('x'::bytea))"
        ),
    ] {
        sqlx::query(&sql).execute(&mut *conn).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    run::<Tally>(&store, "big", TallyCommand::Add(1)).await;

    store.clear_cache();
    let (tally, sequence) = store
        .aggregate::<Tally>("big")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((tally.total, sequence), (8, (1u64 << 32) + 1));
    let repo = PostgresEventRepository::new(db.pool.clone());
    let newer = repo
        .get_last_events::<Tally>("big", 1usize << 32)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(newer.len(), 1);
    assert_eq!(newer[0].sequence, (1usize << 32) + 1);
}

#[tokio::test]
async fn the_table_refuses_a_gap_in_a_stream() {
    let (store, db) = store().await;
    run::<Tally>(&store, "gap", TallyCommand::Add(1)).await;
    let skipped = sqlx::query(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata, hash)
         VALUES ('Tally', 'gap', 3, 'Added', '1.0.0', '{}', '{}', sha256('x'::bytea))",
    )
    .execute(&db.pool)
    .await;
    let message = format!("{:?}", skipped.err());
    assert!(
        message.contains("does not follow its predecessor"),
        "{message}"
    );
    let first_of_new_stream = sqlx::query(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata, hash)
         VALUES ('Tally', 'other', 2, 'Added', '1.0.0', '{}', '{}', sha256('x'::bytea))",
    )
    .execute(&db.pool)
    .await;
    assert!(first_of_new_stream.is_err(), "a stream cannot start at 2");
}

#[tokio::test]
async fn event_versions_are_semantic_versions() {
    let (store, db) = store().await;
    let bad = Run::<Tally> {
        id: "v".to_string(),
        command: TallyCommand::WriteBadlyVersioned,
    };
    match store.execute(&meta("bad"), None, &bad).await {
        Err(ExecuteError::Store(StoreError::InvalidEventVersion { version, .. })) => {
            assert_eq!(version, "v2")
        }
        other => panic!("expected the version to be refused, got {other:?}"),
    }
    run::<Tally>(&store, "v", TallyCommand::Add(1)).await;
    run::<Wallet>(
        &store,
        &PatientId::new().to_string(),
        WalletCommand::Deposit {
            amount: Money(1),
            reference: "r".to_string(),
        },
    )
    .await;
    let versions: Vec<String> = sqlx::query_scalar("SELECT DISTINCT event_version FROM events")
        .fetch_all(&db.pool)
        .await
        .unwrap_or_default();
    assert_eq!(versions, vec!["1.0.0".to_string()]);
    for version in versions {
        assert!(version.parse::<SemanticVersion>().is_ok());
    }
}

/// Deposits into a wallet and answers the new balance.
struct Deposit {
    patient: String,
    amount: i64,
    reference: String,
}

impl UseCase for Deposit {
    type Output = i64;

    async fn run(&self, uow: &mut UnitOfWork) -> Result<i64, UowError> {
        uow.handle::<Wallet>(
            &self.patient,
            WalletCommand::Deposit {
                amount: Money(self.amount),
                reference: self.reference.clone(),
            },
        )
        .await?;
        Ok(uow.load::<Wallet>(&self.patient).await?.balance.cents())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_idempotency_key_replayed_twenty_times_concurrently_writes_once() {
    let (store, db) = store().await;
    let patient = PatientId::new().to_string();
    run::<Wallet>(
        &store,
        &patient,
        WalletCommand::Deposit {
            amount: Money(500),
            reference: "first".to_string(),
        },
    )
    .await;
    let key = IdempotencyKey::new("deposit", "key-1", b"{\"amount_cents\":250}");
    let handles: Vec<_> = (0..20)
        .map(|_| {
            let (store, key, patient) = (store.clone(), key.clone(), patient.clone());
            tokio::spawn(async move {
                let deposit = Deposit {
                    patient,
                    amount: 250,
                    reference: "card-7".to_string(),
                };
                store.execute(&meta("deposit"), Some(&key), &deposit).await
            })
        })
        .collect();
    let mut answers = Vec::new();
    for handle in handles {
        match handle.await {
            Ok(Ok(committed)) => answers.push(committed),
            other => panic!("every replay must succeed: {other:?}"),
        }
    }
    assert_eq!(answers.iter().filter(|c| !c.replayed).count(), 1);
    assert!(answers
        .iter()
        .all(|c| c.output == 750 && c.position == answers[0].position));
    let deposits: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM events WHERE aggregate_id = $1 AND event_type = 'FundsDeposited'",
    )
    .bind(&patient)
    .fetch_one(&db.pool)
    .await
    .unwrap_or(-1);
    assert_eq!(deposits, 2);

    let other_body = IdempotencyKey::new("deposit", "key-1", b"{\"amount_cents\":999}");
    let reused = store
        .execute(
            &meta("deposit"),
            Some(&other_body),
            &Deposit {
                patient: patient.clone(),
                amount: 999,
                reference: "card-8".to_string(),
            },
        )
        .await;
    assert!(
        matches!(reused, Err(ExecuteError::IdempotencyKeyReused)),
        "{reused:?}"
    );
    let (wallet, _) = store
        .aggregate::<Wallet>(&patient)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(wallet.balance, Money(750));
}

#[tokio::test]
async fn postgres_es_reads_back_what_the_unit_of_work_wrote() {
    let (store, db) = store().await;
    let patient = PatientId::new().to_string();
    for (i, amount) in [300, 200, 700].into_iter().enumerate() {
        run::<Wallet>(
            &store,
            &patient,
            WalletCommand::Deposit {
                amount: Money(amount),
                reference: format!("d{i}"),
            },
        )
        .await;
    }
    run::<Wallet>(
        &store,
        &patient,
        WalletCommand::Debit {
            amount: Money(450),
            reference: "reservation:x".to_string(),
        },
    )
    .await;

    let repo = PostgresEventRepository::new(db.pool.clone());
    let read = repo
        .get_events::<Wallet>(&patient)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let ours = audit::stream_events(&db.pool, "Wallet", &patient)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(read.len(), 4);
    assert_eq!(read.len(), ours.len());
    let mut replayed = Wallet::default();
    for (theirs, ours) in read.iter().zip(&ours) {
        assert_eq!(theirs.aggregate_type, "Wallet");
        assert_eq!(theirs.sequence as i64, ours.sequence);
        assert_eq!(theirs.event_type, ours.event_type);
        assert_eq!(theirs.event_version, ours.event_version);
        assert_eq!(theirs.payload, ours.payload);
        assert_eq!(theirs.metadata, ours.metadata);
        let event =
            serde_json::from_value(theirs.payload.clone()).unwrap_or_else(|e| panic!("{e}"));
        replayed.apply(event);
    }
    assert_eq!(replayed.balance, Money(750));
    let metadata = &read[0].metadata;
    for field in [
        "command_id",
        "correlation_id",
        "causation_id",
        "actor",
        "actor_role",
        "request_id",
        "recorded_at",
    ] {
        assert!(
            metadata.get(field).and_then(|v| v.as_str()).is_some(),
            "metadata lacks {field}: {metadata}"
        );
    }
    assert_eq!(metadata["actor"], "alice");
    let as_map: std::collections::HashMap<String, String> =
        serde_json::from_value(metadata.clone())
            .unwrap_or_else(|e| panic!("cqrs-es metadata must be a string map: {e}"));
    assert_eq!(as_map["actor_role"], "staff");
}

/// Refuses unless `settings` has reached 11; on its first attempt a
/// concurrent writer brings it there after it was read.
struct NeedsEleven {
    store: EventStore,
    attempts: AtomicU32,
}

impl UseCase for NeedsEleven {
    type Output = i64;

    async fn run(&self, uow: &mut UnitOfWork) -> Result<i64, UowError> {
        let seen = uow.load::<Tally>("settings").await?.total;
        if self.attempts.fetch_add(1, Ordering::SeqCst) == 0 {
            let change = Run::<Tally> {
                id: "settings".to_string(),
                command: TallyCommand::Add(1),
            };
            if let Err(e) = self.store.execute(&meta("interfere"), None, &change).await {
                panic!("interfering write failed: {e}");
            }
        }
        if seen < 11 {
            return Err(UowError::Domain(DomainError::NoSessionsLeft));
        }
        uow.handle::<Tally>("target", TallyCommand::Add(seen))
            .await?;
        Ok(seen)
    }
}

#[tokio::test]
async fn a_refusal_based_on_state_that_moved_meanwhile_is_decided_again() {
    let (store, _db) = store().await;
    run::<Tally>(&store, "settings", TallyCommand::Add(10)).await;
    let use_case = NeedsEleven {
        store: store.clone(),
        attempts: AtomicU32::new(0),
    };
    let committed = store
        .execute(&meta("needs"), None, &use_case)
        .await
        .unwrap_or_else(|e| panic!("the retry on fresh state must succeed: {e}"));
    assert_eq!((committed.output, committed.attempts), (11, 2));

    // With nothing moving, a refusal is final at once.
    let again = NeedsEleven {
        store: store.clone(),
        attempts: AtomicU32::new(1),
    };
    run::<Tally>(&store, "settings", TallyCommand::Add(-5)).await;
    match store.execute(&meta("needs"), None, &again).await {
        Err(ExecuteError::Domain(DomainError::NoSessionsLeft)) => {}
        other => panic!("expected the refusal, got {other:?}"),
    }
    assert_eq!(
        again.attempts.load(Ordering::SeqCst),
        2,
        "refused after one attempt"
    );
}
