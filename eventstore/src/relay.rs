//! The relay: publishes the committed feed to the JetStream stream
//! `CLINICBOOK_EVENTS`, in feed order, and keeps its checkpoint in Postgres.
//!
//! Several relay processes may run; a session-level advisory lock lets one
//! of them work at a time and a waiting one takes over when the holder's
//! session ends. The relay wakes on a [`Nudge`]: an empty core-NATS message
//! a process sends after each commit that wrote events, outside the
//! transaction. (It used to wake on a `NOTIFY` from a trigger, but NOTIFY
//! takes a database-wide lock at commit and so serialised every committing
//! transaction; see docs/performance.md.) Polling stays the fallback, for
//! writers that do not nudge and nudges that get lost: adaptive, a few
//! milliseconds after the last event it saw, doubling up to
//! [`RelayConfig::poll`] while nothing comes. When events exist above the
//! horizon (a transaction with a lower id is still running) it looks again
//! soon instead of waiting for the next nudge.
//!
//! Each message carries `Nats-Msg-Id: <type>/<id>/<sequence>` (JetStream
//! drops a republished duplicate inside its window), the event's aggregate
//! type, position and transaction id, and the position and transaction id
//! of the event published just before it, so a projector can tell when
//! something went missing on the way, and pass over an event of a kind it
//! does not read without decoding it. The
//! checkpoint moves only after JetStream acknowledged the whole batch; a
//! relay that dies in between publishes the batch again, which is harmless.

use std::future::Future;
use std::time::Duration;

use async_nats::jetstream::{self, stream};
use async_nats::HeaderMap;
use backon::{ConstantBuilder, Retryable};
use clinicbook_domain::AggregateKind;
use futures_util::{FutureExt, StreamExt};
use sqlx::{Acquire, PgConnection, PgPool, Row};
use tokio::time::sleep;
use tracing::{debug, info, warn, Instrument};

use crate::error::StoreError;
use crate::feed::{self, FeedEvent, FeedPoint};

/// The JetStream stream events are published to.
pub const STREAM: &str = "CLINICBOOK_EVENTS";
/// Subjects are `clinicbook.events.<aggregate_type>.<aggregate_id>`.
pub const SUBJECT_PREFIX: &str = "clinicbook.events";

/// Names in NATS: the stream, its subjects and consumers. Deployments
/// sharing one nats-server (the tests, which give each database its own)
/// use a namespace; the default is [`STREAM`] and [`SUBJECT_PREFIX`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Topology {
    /// The stream's name.
    pub stream: String,
    /// Subjects are `<prefix>.<aggregate_type>.<aggregate_id>`.
    pub subject_prefix: String,
    /// Prefixed to durable consumer names.
    pub consumer_prefix: String,
    /// Copies of the stream a JetStream cluster keeps (1 on a single
    /// server; 3 so that a cluster survives the loss of a node).
    pub replicas: usize,
}

impl Default for Topology {
    fn default() -> Self {
        Self {
            stream: STREAM.to_owned(),
            subject_prefix: SUBJECT_PREFIX.to_owned(),
            consumer_prefix: String::new(),
            replicas: 1,
        }
    }
}

impl Topology {
    /// Names of their own for `namespace` (letters, digits, `_` and `-`
    /// kept; anything else becomes `_`).
    #[must_use]
    pub fn namespaced(namespace: &str) -> Self {
        let ns: String = namespace
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        Self {
            stream: format!("{STREAM}_{ns}"),
            subject_prefix: format!("clinicbook.{ns}.events"),
            consumer_prefix: format!("{ns}-"),
            replicas: 1,
        }
    }

    /// The same names, with `replicas` copies of the stream.
    #[must_use]
    pub fn with_replicas(self, replicas: usize) -> Self {
        Self {
            replicas: replicas.max(1),
            ..self
        }
    }

    /// The subject of an event: one token per aggregate type and id, with
    /// the characters NATS gives a meaning to (`.`, `*`, `>`, whitespace)
    /// replaced.
    #[must_use]
    pub fn subject(&self, aggregate_type: &str, aggregate_id: &str) -> String {
        format!(
            "{}.{}.{}",
            self.subject_prefix,
            token(aggregate_type),
            token(aggregate_id)
        )
    }

    /// The core-NATS subject commits nudge the relay on: outside the
    /// events stream's subjects (JetStream keeps none of them), one per
    /// stream name, so deployments sharing a nats-server do not wake each
    /// other's relays.
    #[must_use]
    pub fn nudge_subject(&self) -> String {
        format!("_clinicbook_nudge.{}", token(&self.stream))
    }

    /// A durable consumer's name.
    #[must_use]
    pub fn consumer(&self, name: &str) -> String {
        format!("{}{name}", self.consumer_prefix)
    }

    /// Creates the events stream if it does not exist (file storage, two
    /// minutes of duplicate detection, [`Topology::replicas`] copies) and
    /// answers it. An existing stream is used as it is.
    ///
    /// # Errors
    /// NATS failed.
    pub async fn ensure_stream(
        &self,
        js: &jetstream::Context,
    ) -> Result<stream::Stream, StoreError> {
        js.get_or_create_stream(stream::Config {
            name: self.stream.clone(),
            subjects: vec![format!("{}.>", self.subject_prefix)],
            storage: stream::StorageType::File,
            duplicate_window: Duration::from_secs(120),
            num_replicas: self.replicas,
            ..Default::default()
        })
        .await
        .map_err(|e| StoreError::nats("create the events stream", e))
    }
}

fn token(raw: &str) -> String {
    raw.chars()
        .map(|c| match c {
            '.' | '*' | '>' => '_',
            c if c.is_whitespace() => '_',
            c => c,
        })
        .collect()
}
/// Wakes the relay after a commit: an empty core-NATS message on the
/// topology's [`Topology::nudge_subject`], sent after the transaction
/// committed (so it takes no lock and adds no work inside the database).
///
/// [`Nudge::send`] never waits: it marks a nudge due, and a task of its own
/// publishes it, so nudges that come while one is on its way fold into one,
/// and a NATS that is away (whose client stops taking messages once its
/// buffer is full) never holds a commit up. A lost nudge only delays the
/// feed until the relay's next poll. The task ends when the `Nudge` is
/// dropped.
#[derive(Debug)]
pub struct Nudge {
    due: tokio::sync::watch::Sender<u64>,
}

impl Nudge {
    /// Nudges through `client` the relay of `topology`; spawns the task
    /// that publishes (call it inside a tokio runtime).
    #[must_use]
    pub fn new(client: async_nats::Client, topology: &Topology) -> Self {
        let (due, mut nudged) = tokio::sync::watch::channel(0u64);
        let subject: async_nats::Subject = topology.nudge_subject().into();
        tokio::spawn(
            async move {
                while nudged.changed().await.is_ok() {
                    nudged.borrow_and_update();
                    if let Err(error) = client.publish(subject.clone(), bytes::Bytes::new()).await
                    {
                        debug!(%error, "relay nudge not sent; the relay's poll picks the events up");
                    }
                }
            }
            .instrument(tracing::debug_span!("relay_nudge")),
        );
        Self { due }
    }

    /// Marks a nudge due; returns at once.
    pub fn send(&self) {
        self.due.send_modify(|n| *n = n.wrapping_add(1));
    }
}

/// Wakes readers of the feed other than the relay (the webhook workers) on
/// the commit nudges of every process (see [`Nudge`]): the counter the
/// answer watches moves on each one. Such a reader still polls, so a lost
/// nudge, or a writer that does not nudge, only delays it until its next
/// poll. The subscription ends when every receiver is dropped.
///
/// # Errors
/// NATS refuses the subscription.
pub async fn commit_nudges(
    client: &async_nats::Client,
    topology: &Topology,
) -> Result<tokio::sync::watch::Receiver<u64>, StoreError> {
    let mut nudges = client
        .subscribe(topology.nudge_subject())
        .await
        .map_err(|e| StoreError::nats("subscribe to commit nudges", e))?;
    let (seen, commits) = tokio::sync::watch::channel(0u64);
    tokio::spawn(
        async move {
            loop {
                tokio::select! {
                    () = seen.closed() => break,
                    nudge = nudges.next() => match nudge {
                        Some(_) => seen.send_modify(|n| *n = n.wrapping_add(1)),
                        None => break,
                    },
                }
            }
        }
        .instrument(tracing::debug_span!("commit_nudges")),
    );
    Ok(commits)
}

/// The shortest pause between two polls, right after events were seen.
const POLL_MIN: Duration = Duration::from_millis(5);
/// Advisory-lock key of the relay's leadership.
const LEADER_LOCK: i64 = 0x636c_696e_6963_0001;

/// Message headers the relay sets.
pub mod header {
    /// The event's global position.
    pub const POSITION: &str = "Clinicbook-Position";
    /// The event's transaction id.
    pub const TRANSACTION: &str = "Clinicbook-Transaction-Id";
    /// Position of the event published just before (0 for the first).
    pub const PREV_POSITION: &str = "Clinicbook-Prev-Position";
    /// Transaction id of the event published just before (0 for the first).
    pub const PREV_TRANSACTION: &str = "Clinicbook-Prev-Transaction-Id";
    /// The event's aggregate type (`Reservation`, ...).
    pub const AGGREGATE_TYPE: &str = "Clinicbook-Aggregate-Type";
}

/// How the relay works.
#[derive(Clone, Debug)]
pub struct RelayConfig {
    /// Events read and published per batch.
    pub batch: i64,
    /// Poll interval when no notification comes.
    pub poll: Duration,
    /// Pause after a failure (NATS or the database away).
    pub retry: Duration,
    /// Names in NATS.
    pub topology: Topology,
}

impl Default for RelayConfig {
    fn default() -> Self {
        Self {
            batch: 1000,
            poll: Duration::from_secs(1),
            retry: Duration::from_millis(500),
            topology: Topology::default(),
        }
    }
}

/// Where the relay is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RelayCheckpoint {
    /// The last event published.
    pub point: FeedPoint,
    /// How many events were published in all.
    pub published: i64,
}

/// The relay's checkpoint.
///
/// # Errors
/// The database failed.
pub async fn checkpoint(pool: &PgPool) -> Result<RelayCheckpoint, StoreError> {
    let row = sqlx::query("SELECT transaction_id, position, published FROM relay_checkpoint")
        .fetch_one(pool)
        .await?;
    Ok(RelayCheckpoint {
        point: FeedPoint {
            transaction_id: row.try_get("transaction_id")?,
            position: row.try_get("position")?,
        },
        published: row.try_get("published")?,
    })
}

/// The event store's relay to JetStream.
#[derive(Clone)]
pub struct Relay {
    pool: PgPool,
    js: jetstream::Context,
    config: RelayConfig,
}

impl std::fmt::Debug for Relay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relay")
            .field("config", &self.config)
            .finish()
    }
}

impl Relay {
    /// A relay reading `pool` and publishing through `js`.
    #[must_use]
    pub fn new(pool: PgPool, js: jetstream::Context, config: RelayConfig) -> Self {
        Self { pool, js, config }
    }

    /// Runs until `shutdown` completes: waits for leadership, then
    /// publishes; on any failure it lets leadership go, pauses and starts
    /// again, so NATS or the database being away only delays the feed.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let retry = ConstantBuilder::default()
            .with_delay(self.config.retry)
            .without_max_times();
        let relay = (|| self.lead()).retry(retry).notify(|error, _| {
            metrics::counter!("clinicbook_relay_failures_total").increment(1);
            warn!(%error, "relay failed; retrying");
        });
        tokio::select! {
            () = shutdown => {}
            _ = relay => {}
        }
    }

    /// Takes leadership (waiting for it), then publishes until an error.
    async fn lead(&self) -> Result<(), StoreError> {
        let mut leader = self.pool.acquire().await?.detach();
        let mut waiting_logged = false;
        loop {
            let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
                .bind(LEADER_LOCK)
                .fetch_one(&mut leader)
                .await?;
            if locked {
                break;
            }
            metrics::gauge!("clinicbook_relay_leader").set(0.0);
            if !waiting_logged {
                info!("another relay is working; waiting to take over");
                waiting_logged = true;
            }
            sleep(self.config.poll).await;
        }
        info!("relay is the leader");
        metrics::gauge!("clinicbook_relay_leader").set(1.0);
        let result = self.work(&mut leader).await;
        metrics::gauge!("clinicbook_relay_leader").set(0.0);
        result
    }

    async fn work(&self, leader: &mut PgConnection) -> Result<(), StoreError> {
        self.config.topology.ensure_stream(&self.js).await?;
        let mut nudges = self
            .js
            .client()
            .subscribe(self.config.topology.nudge_subject())
            .await
            .map_err(|e| StoreError::nats("subscribe to relay nudges", e))?;
        let mut pause = Duration::from_millis(2);
        let mut idle = POLL_MIN;
        loop {
            let (published, at) = self.publish_batch(leader).await?;
            if i64::try_from(published).unwrap_or(i64::MAX) >= self.config.batch {
                continue;
            }
            if published > 0 {
                pause = Duration::from_millis(2);
                idle = POLL_MIN;
                continue;
            }
            record_oldest_transaction(leader).await?;
            // Nothing below the horizon: if events wait above it, a
            // transaction with a lower id is still open; look again soon.
            let wait = if pending_above(leader, at).await? {
                pause = (pause * 2).min(self.config.poll);
                pause
            } else {
                pause = Duration::from_millis(2);
                // Adaptive: soon after the last events, then less and less
                // often while none come.
                let wait = idle.min(self.config.poll);
                idle = (idle * 2).min(self.config.poll);
                wait
            };
            tokio::select! {
                nudge = nudges.next() => {
                    if nudge.is_none() {
                        return Err(StoreError::nats(
                            "receive relay nudges",
                            "the nudge subscription ended",
                        ));
                    }
                    // Every nudge that came meanwhile is answered by the
                    // same read.
                    while let Some(Some(_)) = nudges.next().now_or_never() {}
                }
                () = sleep(wait) => {}
            }
        }
    }

    /// Publishes the next batch and moves the checkpoint; answers how many
    /// events it published and the checkpoint after the batch.
    async fn publish_batch(
        &self,
        leader: &mut PgConnection,
    ) -> Result<(usize, FeedPoint), StoreError> {
        let at = read_checkpoint(leader).await?;
        let events = feed::read_after(&mut *leader, at, self.config.batch).await?;
        let Some(last) = events.last().map(FeedEvent::point) else {
            return Ok((0, at));
        };
        let mut acks = Vec::with_capacity(events.len());
        let mut previous = at;
        for event in &events {
            let payload = serde_json::to_vec(event).map_err(|source| StoreError::Serde {
                what: "a feed event".to_owned(),
                source,
            })?;
            let ack = self
                .js
                .publish_with_headers(
                    self.config
                        .topology
                        .subject(&event.aggregate_type, &event.aggregate_id),
                    headers(event, previous),
                    payload.into(),
                )
                .await
                .map_err(|e| StoreError::nats("publish an event", e))?;
            acks.push(ack);
            previous = event.point();
        }
        for ack in acks {
            ack.await
                .map_err(|e| StoreError::nats("have an event acknowledged", e))?;
        }
        // Moved on the leader's session: if it was lost, so is the lock,
        // and the update fails instead of racing a new leader.
        let mut tx = leader.begin().await?;
        sqlx::query(
            "UPDATE relay_checkpoint
                SET transaction_id = $1, position = $2, published = published + $3,
                    updated_at = now()",
        )
        .bind(last.transaction_id)
        .bind(last.position)
        .bind(i64::try_from(events.len()).unwrap_or(i64::MAX))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        metrics::counter!("clinicbook_relay_published_total").increment(events.len() as u64);
        metrics::gauge!("clinicbook_relay_position").set(last.position as f64);
        debug!(count = events.len(), position = last.position, "published");
        Ok((events.len(), last))
    }
}

/// Whether events exist after `at` at all: when the feed below the horizon
/// shows none, they wait above it for an older transaction to end.
async fn pending_above(leader: &mut PgConnection, at: FeedPoint) -> Result<bool, StoreError> {
    // Not `EXISTS`: PostgreSQL drops the ORDER BY inside it, estimates a
    // third of the table after any point and scans it all from the start
    // when nothing is there (18 ms at 30k events); the first row in index
    // order is one index descent at any size.
    let pending: bool = sqlx::query_scalar(
        "SELECT (SELECT 1 FROM events
                  WHERE (transaction_id, position) > ($1::text::xid8, $2)
                  ORDER BY events.transaction_id, events.position LIMIT 1) IS NOT NULL",
    )
    .bind(at.transaction_id)
    .bind(at.position)
    .fetch_one(leader)
    .await?;
    Ok(pending)
}

/// The headers of `event`, published after `previous`.
fn headers(event: &FeedEvent, previous: FeedPoint) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(
        "Nats-Msg-Id",
        format!(
            "{}/{}/{}",
            event.aggregate_type, event.aggregate_id, event.sequence
        )
        .as_str(),
    );
    headers.insert(header::AGGREGATE_TYPE, event.aggregate_type.as_str());
    headers.insert(header::POSITION, event.position.to_string().as_str());
    headers.insert(
        header::TRANSACTION,
        event.transaction_id.to_string().as_str(),
    );
    headers.insert(
        header::PREV_POSITION,
        previous.position.to_string().as_str(),
    );
    headers.insert(
        header::PREV_TRANSACTION,
        previous.transaction_id.to_string().as_str(),
    );
    headers
}

async fn read_checkpoint(conn: &mut PgConnection) -> Result<FeedPoint, StoreError> {
    let row = sqlx::query("SELECT transaction_id, position FROM relay_checkpoint")
        .fetch_one(conn)
        .await?;
    Ok(FeedPoint {
        transaction_id: row.try_get("transaction_id")?,
        position: row.try_get("position")?,
    })
}

/// Exports the age of the oldest transaction holding an id: it holds the
/// horizon, and so the whole feed, back.
async fn record_oldest_transaction(conn: &mut PgConnection) -> Result<(), StoreError> {
    let age: f64 = sqlx::query_scalar(
        "SELECT coalesce(extract(epoch FROM now() - min(xact_start)), 0)::float8
           FROM pg_stat_activity WHERE backend_xid IS NOT NULL",
    )
    .fetch_one(conn)
    .await?;
    metrics::gauge!("clinicbook_relay_oldest_transaction_seconds").set(age);
    Ok(())
}

/// A point named by two of a relay message's headers.
fn point_in(headers: &HeaderMap, transaction: &str, position: &str) -> Option<FeedPoint> {
    Some(FeedPoint {
        transaction_id: headers.get(transaction)?.as_str().parse().ok()?,
        position: headers.get(position)?.as_str().parse().ok()?,
    })
}

/// The previous point a relay message names, from its headers.
#[must_use]
pub fn previous_point(headers: &HeaderMap) -> Option<FeedPoint> {
    point_in(headers, header::PREV_TRANSACTION, header::PREV_POSITION)
}

/// The point of the event a relay message carries, from its headers.
#[must_use]
pub fn message_point(headers: &HeaderMap) -> Option<FeedPoint> {
    point_in(headers, header::TRANSACTION, header::POSITION)
}

/// The aggregate kind of the event a relay message carries, from its
/// headers (`None` when they do not say, as in messages of releases before
/// the header, or name a kind this release does not know).
#[must_use]
pub fn message_kind(headers: &HeaderMap) -> Option<AggregateKind> {
    headers.get(header::AGGREGATE_TYPE)?.as_str().parse().ok()
}
