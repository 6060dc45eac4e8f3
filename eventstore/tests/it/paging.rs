//! The audit history a page at a time: following the cursor skips nothing,
//! even an event whose transaction drew a lower position and committed
//! after a page was read (paging by position alone lost it).

use clinicbook_domain::PatientId;
use clinicbook_eventstore::audit::{self, AuditedEvent, EventFilter};
use clinicbook_eventstore::hash::{self, EventFields, GENESIS};
use clinicbook_eventstore::FeedPoint;
use sqlx::{PgConnection, PgPool};

use crate::common::store;

/// Inserts the first event of a new wallet stream inside `conn`'s
/// transaction (hash by the version 1 rule, as a raw insert must).
async fn insert_wallet_event(conn: &mut PgConnection, patient: &str) {
    let payload = r#"{"FundsDeposited":{"amount":500,"reference":"raw"}}"#;
    let metadata = r#"{"actor":"raw"}"#;
    let chained = hash::chain(
        &GENESIS,
        &EventFields {
            aggregate_type: "Wallet",
            aggregate_id: patient,
            sequence: 1,
            event_type: "FundsDeposited",
            event_version: "1.0.0",
            payload,
            metadata,
        },
    );
    sqlx::query(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata, hash)
         VALUES ('Wallet', $1, 1, 'FundsDeposited', '1.0.0', $2::json, $3::json, $4)",
    )
    .bind(patient)
    .bind(payload)
    .bind(metadata)
    .bind(chained.as_slice())
    .execute(conn)
    .await
    .unwrap_or_else(|e| panic!("{e}"));
}

/// Every page after `after`, two events at a time, until an empty one.
async fn pages(pool: &PgPool, mut after: FeedPoint) -> (Vec<AuditedEvent>, FeedPoint) {
    let mut all = Vec::new();
    loop {
        let page = audit::events_after(pool, after, 2, &EventFilter::default())
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let Some(last) = page.last() else {
            return (all, after);
        };
        assert!(last.point > after);
        after = last.point;
        all.extend(page);
    }
}

/// [`pages`] from `after` again until they hold `count` events: other
/// tests' transactions on the same server hold the horizon back a moment.
async fn pages_until(
    pool: &PgPool,
    after: FeedPoint,
    count: usize,
) -> (Vec<AuditedEvent>, FeedPoint) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let (events, next) = pages(pool, after).await;
        if events.len() >= count || std::time::Instant::now() > deadline {
            return (events, next);
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

fn ids(events: &[AuditedEvent]) -> Vec<String> {
    events
        .iter()
        .map(|e| e.event.aggregate_id.clone())
        .collect()
}

#[tokio::test]
async fn a_transaction_with_a_lower_position_that_commits_after_a_page_is_on_the_next() {
    let (_store, db) = store().await;
    let pool = &db.pool;
    let (early, low) = (PatientId::new().to_string(), PatientId::new().to_string());
    let others: Vec<String> = (0..3).map(|_| PatientId::new().to_string()).collect();

    // `early` takes its transaction id first; `low` takes a later one and
    // inserts first, so it draws the lower position, and stays open.
    let mut early_tx = pool.begin().await.unwrap_or_else(|e| panic!("{e}"));
    sqlx::query("SELECT pg_current_xact_id()")
        .execute(&mut *early_tx)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let mut low_tx = pool.begin().await.unwrap_or_else(|e| panic!("{e}"));
    insert_wallet_event(&mut low_tx, &low).await;
    insert_wallet_event(&mut early_tx, &early).await;
    early_tx.commit().await.unwrap_or_else(|e| panic!("{e}"));
    for other in &others {
        let mut conn = pool.acquire().await.unwrap_or_else(|e| panic!("{e}"));
        insert_wallet_event(&mut conn, other).await;
    }

    // A client reads everything there is: `early`'s event (below the
    // horizon: `low` is the oldest running transaction), not the others.
    let (first, cursor) = pages_until(pool, FeedPoint::START, 1).await;
    assert_eq!(ids(&first), vec![early.clone()]);
    let early_position = first[0].event.position;

    low_tx.commit().await.unwrap_or_else(|e| panic!("{e}"));
    let (next, _) = pages_until(pool, cursor, 4).await;
    let mut expected = vec![low.clone()];
    expected.extend(others.iter().cloned());
    assert_eq!(
        ids(&next),
        expected,
        "the late commit comes first, then the rest"
    );

    // The shape the test is about: `low` drew a lower position than an
    // event the client had already read, so paging by position (after
    // `early_position`) would never have shown it.
    let low_event = &next[0];
    assert!(low_event.event.position < early_position);
    assert!(low_event.point.transaction_id > first[0].point.transaction_id);
    let by_position: Vec<i64> =
        sqlx::query_scalar("SELECT position FROM events WHERE position > $1 ORDER BY position")
            .bind(early_position)
            .fetch_all(pool)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    assert!(!by_position.contains(&low_event.event.position));

    // A client of the older form, holding a position, resumes at the first
    // event above it in feed order: nothing above it is skipped.
    let resumed = audit::resume_after_position(pool, early_position)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let (after_position, _) = pages_until(pool, resumed, 3).await;
    for other in &others {
        assert!(ids(&after_position).contains(other));
    }
    let (from_zero, _) = pages_until(pool, FeedPoint::START, 5).await;
    assert_eq!(from_zero.len(), 5);
}
