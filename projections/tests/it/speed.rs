//! How fast each projection applies a large feed (ignored by default;
//! `cargo test -p clinicbook-projections --test it speed -- --ignored
//! --nocapture`). The scenario's events are copied with every UUID
//! renamed per copy, so each copy is a clinic world of its own, and
//! applied in batches of 1000 to scratch tables, as a rebuild does.

use std::time::Instant;

use clinicbook_eventstore::{feed, FeedEvent, FeedPoint};
use clinicbook_projections::checkpoint::{apply_in, create_tables};
use clinicbook_projections::projections;
use uuid::Uuid;

use crate::common::world;
use crate::scenario;

/// `text` with every UUID in it renamed for copy `k`.
fn rename(text: &str, k: u32) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('"') {
        out.push_str(&rest[..=at]);
        rest = &rest[at + 1..];
        if rest.len() >= 36 {
            if let Ok(id) = Uuid::parse_str(&rest[..36]) {
                let mut bytes = *id.as_bytes();
                for (byte, key) in bytes[12..].iter_mut().zip(k.to_be_bytes()) {
                    *byte ^= key;
                }
                out.push_str(&Uuid::from_bytes(bytes).to_string());
                rest = &rest[36..];
            }
        }
    }
    out.push_str(rest);
    out
}

#[tokio::test]
#[ignore = "a measurement, not a check"]
async fn apply_speed() {
    let copies: u32 = std::env::var("COPIES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(500);
    let w = world().await;
    scenario::build(&w).await;
    w.catch_up().await;
    let pool = &w.db.pool;
    let events = feed::read_after(pool, FeedPoint::START, 1_000_000)
        .await
        .unwrap();
    let template = serde_json::to_string(&events).unwrap();
    let n = events.len() as i64;
    let mut all: Vec<FeedEvent> = Vec::new();
    for k in 1..=copies {
        let mut copy: Vec<FeedEvent> = serde_json::from_str(&rename(&template, k)).unwrap();
        for (i, event) in copy.iter_mut().enumerate() {
            event.position = i64::from(k) * n + i as i64;
            event.transaction_id = event.position;
            // Calendar ids hold the resource id unquoted.
            if event.aggregate_type == "Calendar" {
                event.aggregate_id =
                    rename(&format!("\"{}", event.aggregate_id), k)[1..].to_owned();
            }
        }
        all.extend(copy);
    }
    println!("{} events", all.len());
    for (i, projection) in projections().iter().enumerate() {
        let schema = format!("speed_{i}");
        sqlx::query(&format!("CREATE SCHEMA {schema}"))
            .execute(pool)
            .await
            .unwrap();
        let mut tx = pool.begin().await.unwrap();
        create_tables(&mut tx, &schema, projection).await.unwrap();
        tx.commit().await.unwrap();
        let started = Instant::now();
        for batch in all.chunks(1000) {
            let mut tx = pool.begin().await.unwrap();
            apply_in(&mut tx, &schema, projection, batch).await.unwrap();
            tx.commit().await.unwrap();
        }
        let took = started.elapsed();
        println!(
            "{:>12}: {:>8.0} events/s ({:?})",
            projection.name,
            all.len() as f64 / took.as_secs_f64(),
            took
        );
    }
}
