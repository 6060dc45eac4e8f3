//! The delivery workers: one task per subscription, each holding a lease
//! on its subscription's cursor (one worker per subscription across every
//! process), so a slow or failing receiver delays no other subscription.
//! Workers take connections from the pool only for their short queries,
//! never while a receiver answers.
//!
//! A worker queues the events after its cursor (`webhook_cursors`) as
//! delivery rows and moves the cursor in the same transaction, then sends
//! the oldest undelivered row, and only that one, until it is accepted or
//! dead-lettered: each subscription gets its events in feed order, at
//! least once (a crash after the receiver's 2xx and before the row is
//! marked sends it again, with the same `id`).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use clinicbook_eventstore::feed::{self, FeedPoint};
use sqlx::{FromRow, PgConnection, PgPool, Row};
use tokio::sync::{watch, Mutex};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn, Instrument};
use uuid::Uuid;

use crate::names::{webhook_type, ALL};
use crate::sign::signature;

/// How deliveries are paced.
#[derive(Clone, Debug)]
pub struct DeliveryConfig {
    /// The pause after a first failure; doubled after each further one.
    pub base_delay: Duration,
    /// The longest pause between two attempts.
    pub max_delay: Duration,
    /// A delivery still failing this long after its first attempt is
    /// dead-lettered (24 hours).
    pub give_up_after: Duration,
    /// How long a receiver may take to answer (10 s).
    pub timeout: Duration,
    /// How often idle workers look for new events and subscriptions.
    pub poll: Duration,
    /// Events read from the feed at a time.
    pub batch: i64,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        Self {
            base_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(3600),
            give_up_after: Duration::from_secs(24 * 3600),
            timeout: Duration::from_secs(10),
            poll: Duration::from_millis(250),
            batch: 200,
        }
    }
}

impl DeliveryConfig {
    /// The pause before the attempt after `failures` failed ones:
    /// exponential, capped, with jitter (between half and all of it).
    #[must_use]
    pub fn backoff(&self, failures: u32) -> Duration {
        let exp = self
            .base_delay
            .saturating_mul(2u32.saturating_pow(failures.saturating_sub(1).min(30)));
        let capped = exp.min(self.max_delay);
        capped.mul_f64(0.5 + fastrand::f64() * 0.5)
    }
}

/// Starts the supervisor: it starts a worker for every subscription (each
/// runs where it gets the subscription's lock) until `cancel`. An idle
/// worker looks for new events at every change of `commits` (the commit
/// nudges, if the process has them) and at least every `config.poll`.
pub fn spawn(
    pool: PgPool,
    config: DeliveryConfig,
    cancel: CancellationToken,
    commits: Option<watch::Receiver<u64>>,
) -> tokio::task::JoinHandle<()> {
    let client = reqwest::Client::builder()
        .timeout(config.timeout)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap_or_else(|_| reqwest::Client::new());
    tokio::spawn(
        async move {
            let running: Arc<Mutex<HashMap<Uuid, tokio::task::JoinHandle<()>>>> = Arc::default();
            loop {
                match active(&pool).await {
                    Ok(ids) => {
                        let mut running = running.lock().await;
                        running.retain(|_, task| !task.is_finished());
                        for id in ids {
                            if running.contains_key(&id) {
                                continue;
                            }
                            let task = tokio::spawn(
                                run_worker(
                                    pool.clone(),
                                    client.clone(),
                                    config.clone(),
                                    id,
                                    cancel.child_token(),
                                    commits.clone(),
                                )
                                .instrument(tracing::info_span!("webhook", webhook_id = %id)),
                            );
                            running.insert(id, task);
                        }
                    }
                    Err(e) => warn!(error = %e, "cannot list webhooks"),
                }
                tokio::select! {
                    () = cancel.cancelled() => break,
                    () = tokio::time::sleep(config.poll.max(Duration::from_millis(50)) * 4) => {}
                }
            }
        }
        .instrument(tracing::info_span!("webhooks")),
    )
}

async fn active(pool: &PgPool) -> Result<Vec<Uuid>, sqlx::Error> {
    sqlx::query_scalar("SELECT webhook_id FROM webhooks WHERE deleted_at IS NULL")
        .fetch_all(pool)
        .await
}

/// How long a worker's lease on its subscription lasts without renewal.
const LEASE: Duration = Duration::from_secs(30);

/// Takes or renews `holder`'s lease on the subscription: true when held.
async fn lease(pool: &PgPool, webhook_id: Uuid, holder: Uuid) -> Result<bool, sqlx::Error> {
    let taken = sqlx::query(
        "UPDATE webhook_cursors
            SET leased_by = $2, lease_until = now() + $3 * interval '1 millisecond'
          WHERE webhook_id = $1 AND (leased_by = $2 OR lease_until < now())",
    )
    .bind(webhook_id)
    .bind(holder)
    .bind(i64::try_from(LEASE.as_millis()).unwrap_or(30_000))
    .execute(pool)
    .await?;
    Ok(taken.rows_affected() == 1)
}

async fn release(pool: &PgPool, webhook_id: Uuid, holder: Uuid) {
    let _ = sqlx::query(
        "UPDATE webhook_cursors SET leased_by = NULL, lease_until = '-infinity'
          WHERE webhook_id = $1 AND leased_by = $2",
    )
    .bind(webhook_id)
    .bind(holder)
    .execute(pool)
    .await;
}

async fn run_worker(
    pool: PgPool,
    client: reqwest::Client,
    config: DeliveryConfig,
    webhook_id: Uuid,
    cancel: CancellationToken,
    mut commits: Option<watch::Receiver<u64>>,
) {
    // One worker per subscription across every process: the holder of the
    // cursor's lease, renewed at every step (a process that dies loses it
    // after `LEASE`). A lease held elsewhere ends this worker; the
    // supervisor tries again later.
    let holder = Uuid::new_v4();
    debug!("delivering");
    loop {
        if cancel.is_cancelled() {
            break;
        }
        match lease(&pool, webhook_id, holder).await {
            Ok(true) => {}
            Ok(false) => return,
            Err(e) => {
                warn!(error = %e, "cannot renew the webhook lease");
                return;
            }
        }
        let mut idle = false;
        let pause = match step(&pool, &client, &config, webhook_id).await {
            Ok(Step::Again) => continue,
            Ok(Step::Idle) => {
                idle = true;
                config.poll
            }
            Ok(Step::Wait(pause)) => pause.min(config.poll.max(Duration::from_millis(10)) * 4),
            Ok(Step::Stop) => break,
            Err(e) => {
                warn!(error = %e, "webhook worker step failed");
                config.poll * 4
            }
        };
        tokio::select! {
            () = cancel.cancelled() => break,
            () = tokio::time::sleep(pause) => {}
            () = committed(&mut commits), if idle => {}
        }
    }
    release(&pool, webhook_id, holder).await;
}

/// Resolves at the next commit nudge; never without nudges, or once they
/// have ended (the poll goes on).
async fn committed(commits: &mut Option<watch::Receiver<u64>>) {
    let ended = match commits {
        Some(commits) => commits.changed().await.is_err(),
        None => true,
    };
    if ended {
        *commits = None;
        std::future::pending::<()>().await;
    }
}

enum Step {
    /// Work was done; there may be more.
    Again,
    /// Nothing to do now.
    Idle,
    /// The head of the line is due after this pause.
    Wait(Duration),
    /// The subscription was deleted.
    Stop,
}

async fn step(
    pool: &PgPool,
    client: &reqwest::Client,
    config: &DeliveryConfig,
    webhook_id: Uuid,
) -> Result<Step, crate::WebhookError> {
    let Some(hook) = sqlx::query(
        "SELECT url, events, secret FROM webhooks WHERE webhook_id = $1 AND deleted_at IS NULL",
    )
    .bind(webhook_id)
    .fetch_optional(pool)
    .await?
    else {
        return Ok(Step::Stop);
    };
    let url: String = hook.try_get("url")?;
    let events: Vec<String> = hook.try_get("events")?;
    let secret: String = hook.try_get("secret")?;

    let head = sqlx::query(
        "SELECT event_id, body, attempts, first_attempt_at, next_attempt_at, position, type
           FROM webhook_deliveries
          WHERE webhook_id = $1 AND delivered_at IS NULL AND dead_lettered_at IS NULL
          ORDER BY seq LIMIT 1",
    )
    .bind(webhook_id)
    .fetch_optional(pool)
    .await?;
    if let Some(row) = head {
        let next: DateTime<Utc> = row.try_get("next_attempt_at")?;
        let now = Utc::now();
        if next > now {
            return Ok(Step::Wait((next - now).to_std().unwrap_or_default()));
        }
        let delivery = Pending::from_row(&row)?;
        attempt(pool, client, config, webhook_id, &url, &secret, delivery).await?;
        return Ok(Step::Again);
    }

    let cursor =
        sqlx::query("SELECT transaction_id, position FROM webhook_cursors WHERE webhook_id = $1")
            .bind(webhook_id)
            .fetch_optional(pool)
            .await?;
    let after = match cursor {
        Some(row) => FeedPoint {
            transaction_id: row.try_get("transaction_id")?,
            position: row.try_get("position")?,
        },
        None => FeedPoint::START,
    };
    let batch = feed::read_after(pool, after, config.batch).await?;
    let Some(last) = batch.last().map(feed::FeedEvent::point) else {
        return Ok(Step::Idle);
    };
    let mut tx = pool.begin().await?;
    for event in &batch {
        let Some(name) = webhook_type(&event.aggregate_type, &event.event_type) else {
            continue;
        };
        if !events.iter().any(|e| e == ALL || e == name) {
            continue;
        }
        let event_id = format!(
            "{}/{}/{}",
            event.aggregate_type, event.aggregate_id, event.sequence
        );
        let body = serde_json::json!({
            "id": event_id,
            "type": name,
            "occurred_at": event.recorded_at,
            "data": {
                "aggregate_type": event.aggregate_type,
                "aggregate_id": event.aggregate_id,
                "sequence": event.sequence,
                "position": event.position,
                "event": event.body(),
            },
        });
        sqlx::query(
            "INSERT INTO webhook_deliveries (webhook_id, event_id, position, type, body)
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
        )
        .bind(webhook_id)
        .bind(&event_id)
        .bind(event.position)
        .bind(name)
        .bind(body.to_string())
        .execute(&mut *tx)
        .await?;
        metrics::counter!("clinicbook_webhook_deliveries_queued_total").increment(1);
    }
    save_cursor(&mut tx, webhook_id, last).await?;
    tx.commit().await?;
    Ok(Step::Again)
}

/// Sets `webhook_id`'s cursor to `at`: the events up to it are queued.
///
/// # Errors
/// The database failed.
pub(crate) async fn save_cursor(
    conn: &mut PgConnection,
    webhook_id: Uuid,
    at: FeedPoint,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO webhook_cursors (webhook_id, transaction_id, position) VALUES ($1, $2, $3)
         ON CONFLICT (webhook_id) DO UPDATE SET transaction_id = EXCLUDED.transaction_id,
                                                position = EXCLUDED.position",
    )
    .bind(webhook_id)
    .bind(at.transaction_id)
    .bind(at.position)
    .execute(conn)
    .await?;
    Ok(())
}

/// The oldest delivery of a subscription not yet accepted or dead-lettered.
#[derive(sqlx::FromRow)]
struct Pending {
    event_id: String,
    body: String,
    attempts: i32,
    first_attempt_at: Option<DateTime<Utc>>,
    position: i64,
    #[sqlx(rename = "type")]
    event_type: String,
}

/// How an attempt ended.
#[derive(Clone, Copy)]
enum Outcome {
    /// The receiver accepted it (2xx).
    Delivered,
    /// It failed for longer than `give_up_after`: it is given up.
    DeadLettered,
    /// It failed; another attempt follows.
    Failed,
}

impl Outcome {
    /// The delivery's column the outcome sets to its instant.
    fn column(self) -> &'static str {
        match self {
            Outcome::Delivered => "delivered_at",
            Outcome::DeadLettered => "dead_lettered_at",
            Outcome::Failed => "next_attempt_at",
        }
    }

    /// Its `outcome` label of `clinicbook_webhook_deliveries_total`.
    fn label(self) -> &'static str {
        match self {
            Outcome::Delivered => "delivered",
            Outcome::DeadLettered => "dead_lettered",
            Outcome::Failed => "failed",
        }
    }
}

/// One attempt at a delivery, as its row records it.
struct Attempted<'a> {
    webhook_id: Uuid,
    delivery: &'a Pending,
    /// Attempts so far, this one included.
    attempts: i32,
    /// The receiver's status, if it answered.
    status: Option<i32>,
    /// When the first attempt was made.
    first: DateTime<Utc>,
}

impl Attempted<'_> {
    /// Records the attempt on its delivery row and counts it: `outcome`
    /// with its column set to `at`.
    async fn record(
        &self,
        pool: &PgPool,
        outcome: Outcome,
        at: DateTime<Utc>,
    ) -> Result<(), sqlx::Error> {
        let sql = format!(
            "UPDATE webhook_deliveries
                SET attempts = $3, last_status = $4, first_attempt_at = $5, {} = $6
              WHERE webhook_id = $1 AND event_id = $2",
            outcome.column()
        );
        sqlx::query(&sql)
            .bind(self.webhook_id)
            .bind(&self.delivery.event_id)
            .bind(self.attempts)
            .bind(self.status)
            .bind(self.first)
            .bind(at)
            .execute(pool)
            .await?;
        metrics::counter!("clinicbook_webhook_deliveries_total", "outcome" => outcome.label())
            .increment(1);
        Ok(())
    }
}

async fn attempt(
    pool: &PgPool,
    client: &reqwest::Client,
    config: &DeliveryConfig,
    webhook_id: Uuid,
    url: &str,
    secret: &str,
    delivery: Pending,
) -> Result<(), crate::WebhookError> {
    let now = Utc::now();
    let header = signature(secret, now.timestamp(), delivery.body.as_bytes());
    let sent = client
        .post(url)
        .header("content-type", "application/json")
        .header("Clinicbook-Event-Id", &delivery.event_id)
        .header("Clinicbook-Signature", header)
        .body(delivery.body.clone())
        .send()
        .await;
    let status = sent.as_ref().ok().map(|r| i32::from(r.status().as_u16()));
    let accepted = sent.as_ref().is_ok_and(|r| r.status().is_success());
    let attempts = delivery.attempts.saturating_add(1);
    let first = delivery.first_attempt_at.unwrap_or(now);
    let done_at = Utc::now();
    let attempted = Attempted {
        webhook_id,
        delivery: &delivery,
        attempts,
        status,
        first,
    };
    if accepted {
        attempted.record(pool, Outcome::Delivered, done_at).await?;
        let occurred = serde_json::from_str::<serde_json::Value>(&delivery.body)
            .ok()
            .and_then(|b| {
                b["occurred_at"]
                    .as_str()
                    .and_then(|t| t.parse::<DateTime<Utc>>().ok())
            });
        if let Some(occurred) = occurred {
            let lag = (done_at - occurred).to_std().unwrap_or_default();
            metrics::histogram!("clinicbook_webhook_delivery_lag_seconds")
                .record(lag.as_secs_f64());
        }
        debug!(event_id = %delivery.event_id, position = delivery.position, "delivered");
        return Ok(());
    }
    let failures = u32::try_from(attempts).unwrap_or(u32::MAX);
    let give_up = (done_at - first).to_std().unwrap_or_default() >= config.give_up_after;
    if give_up {
        attempted
            .record(pool, Outcome::DeadLettered, done_at)
            .await?;
        info!(event_id = %delivery.event_id, event_type = %delivery.event_type, attempts, "dead-lettered");
        return Ok(());
    }
    let next = done_at
        + chrono::Duration::from_std(config.backoff(failures)).unwrap_or(chrono::Duration::zero());
    attempted.record(pool, Outcome::Failed, next).await?;
    debug!(event_id = %delivery.event_id, ?status, attempts, "delivery failed; retrying");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_is_capped_and_jittered() {
        let config = DeliveryConfig::default();
        for _ in 0..100 {
            let first = config.backoff(1);
            assert!(first >= Duration::from_millis(500) && first <= Duration::from_secs(1));
            let fifth = config.backoff(5);
            assert!(fifth >= Duration::from_secs(8) && fifth <= Duration::from_secs(16));
            let late = config.backoff(40);
            assert!(late >= Duration::from_secs(1800) && late <= Duration::from_secs(3600));
        }
    }
}
