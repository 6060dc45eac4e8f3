//! Projectors: durable JetStream pull consumers that apply the relay's
//! messages to read models.
//!
//! A projector catches up from the event store when it starts (its
//! consumer only delivers what is published after it is first created),
//! then takes messages as they come, a batch at a time: events at or before
//! its checkpoint are skipped; a message whose previous point is not the
//! projector's checkpoint means something was lost on the way, and the
//! missing range is read from the events table. A message of an aggregate
//! kind the projection does not read is not even decoded (its headers say
//! where it is), and a batch without one it reads only moves the
//! checkpoint. The batch and the checkpoint commit together, and only then
//! is the batch acked: one ack, of its last message (the consumers ack
//! all up to it; ones made by an older release are acked message by
//! message). When
//! no message comes for a while it looks at the event store again, so a
//! message lost at the end of the stream, or NATS being away, only delays
//! a read model.

use std::future::Future;
use std::time::Duration;

use async_nats::jetstream::consumer::{pull, AckPolicy, DeliverPolicy};
use async_nats::jetstream::{self, Message};
use backon::{ConstantBuilder, Retryable};
use chrono::Utc;
use clinicbook_eventstore::relay::{message_kind, message_point, previous_point, Topology};
use clinicbook_eventstore::{feed, FeedEvent, FeedPoint};
use futures::{FutureExt, StreamExt};
use tokio::time::{sleep, timeout};
use tracing::{debug, warn};

use crate::{Projection, ProjectionError, ReadModels};

/// How a projector works.
#[derive(Clone, Debug)]
pub struct ProjectorConfig {
    /// Most messages applied in one transaction.
    pub batch: usize,
    /// After a batch's first message, how long to wait for more before
    /// applying: under load a transaction then carries many events
    /// instead of one or two, at the price of this much added lag.
    pub gather: Duration,
    /// Without messages for this long, look at the event store.
    pub idle: Duration,
    /// Pause after a failure.
    pub retry: Duration,
    /// Names in NATS.
    pub topology: Topology,
}

impl Default for ProjectorConfig {
    fn default() -> Self {
        Self {
            batch: 500,
            gather: Duration::from_millis(5),
            idle: Duration::from_secs(1),
            retry: Duration::from_millis(500),
            topology: Topology::default(),
        }
    }
}

/// Finds the durable pull consumer `name` on the events stream, or creates
/// it (delivering only what is published from then on); answers it and
/// whether it was created.
///
/// # Errors
/// NATS failed.
pub async fn consumer(
    js: &jetstream::Context,
    topology: &Topology,
    name: &str,
) -> Result<(jetstream::consumer::Consumer<pull::Config>, bool), ProjectionError> {
    let stream = topology.ensure_stream(js).await?;
    let name = topology.consumer(name);
    if let Ok(existing) = stream.get_consumer(&name).await {
        return Ok((existing, false));
    }
    let created = stream
        .get_or_create_consumer(
            &name,
            pull::Config {
                durable_name: Some(name.clone()),
                // One ack per batch, its last message's, acks the batch.
                ack_policy: AckPolicy::All,
                deliver_policy: DeliverPolicy::New,
                ack_wait: Duration::from_secs(30),
                max_ack_pending: 20_000,
                ..Default::default()
            },
        )
        .await
        .map_err(|e| ProjectionError::nats("create a consumer", e))?;
    Ok((created, true))
}

/// One projection's projector.
pub struct Projector {
    read: ReadModels,
    js: jetstream::Context,
    projection: &'static Projection,
    config: ProjectorConfig,
}

impl std::fmt::Debug for Projector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Projector")
            .field("projection", &self.projection.name)
            .finish()
    }
}

impl Projector {
    /// A projector of `projection`.
    #[must_use]
    pub fn new(
        read: ReadModels,
        js: jetstream::Context,
        projection: &'static Projection,
        config: ProjectorConfig,
    ) -> Self {
        Self {
            read,
            js,
            projection,
            config,
        }
    }

    /// Runs until `shutdown` completes; failures (NATS or the database
    /// away) pause it and start it again.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let name = self.projection.name;
        let retry = ConstantBuilder::default()
            .with_delay(self.config.retry)
            .without_max_times();
        let consume = (|| self.consume()).retry(retry).notify(|error, _| {
            metrics::counter!("clinicbook_projector_failures_total", "projection" => name)
                .increment(1);
            warn!(projection = name, %error, "projector failed; retrying");
        });
        tokio::select! {
            () = shutdown => {}
            _ = consume => {}
        }
    }

    async fn consume(&self) -> Result<(), ProjectionError> {
        self.read.ensure(self.projection).await?;
        // Without NATS, keep the read model moving from the event store.
        let (consumer, created) = loop {
            match consumer(
                &self.js,
                &self.config.topology,
                &format!("projector-{}", self.projection.name),
            )
            .await
            {
                Ok(found) => break found,
                Err(error) => {
                    debug!(projection = self.projection.name, %error, "no consumer yet");
                    self.catch_up().await?;
                    sleep(self.config.idle).await;
                }
            }
        };
        // A new consumer delivers only what is published from now on: take
        // everything before from the event store. An existing one holds
        // what this projector has not acked yet, gaps detected as usual.
        if created {
            self.catch_up().await?;
        }
        // Where this projector's checkpoint is, as far as it knows: read
        // again after every catch-up, moved by every batch it applies.
        let mut checkpoint = self.read.checkpoint(self.projection.name).await?.point;
        // Consumers made before acks were per batch ack every message.
        let ack_all = consumer.cached_info().config.ack_policy == AckPolicy::All;
        let mut messages = consumer
            .stream()
            .max_messages_per_batch(self.config.batch)
            .heartbeat(Duration::from_secs(5))
            .expires(Duration::from_secs(30))
            .messages()
            .await
            .map_err(|e| ProjectionError::nats("pull messages", e))?;
        loop {
            let first = match timeout(self.config.idle, messages.next()).await {
                Err(_) => {
                    self.catch_up().await?;
                    checkpoint = self.read.checkpoint(self.projection.name).await?.point;
                    continue;
                }
                Ok(None) => {
                    return Err(ProjectionError::nats(
                        "keep the message stream open",
                        "the message stream ended",
                    ))
                }
                Ok(Some(Err(e))) => return Err(ProjectionError::nats("receive a message", e)),
                Ok(Some(Ok(message))) => message,
            };
            let mut batch = vec![first];
            let gathered_by = tokio::time::Instant::now() + self.config.gather;
            while batch.len() < self.config.batch {
                let next = match messages.next().now_or_never() {
                    Some(next) => next,
                    None => match tokio::time::timeout_at(gathered_by, messages.next()).await {
                        Ok(next) => next,
                        Err(_) => break,
                    },
                };
                match next {
                    Some(Ok(message)) => batch.push(message),
                    Some(Err(e)) => return Err(ProjectionError::nats("receive a message", e)),
                    // The stream ended: apply what came; the next read says so.
                    None => break,
                }
            }
            checkpoint = self.handle(&batch, checkpoint).await?;
            let acked = match batch.split_last() {
                Some((last, _)) if ack_all => std::slice::from_ref(last),
                _ => &batch[..],
            };
            for message in acked {
                if let Err(error) = message.ack().await {
                    debug!(projection = self.projection.name, %error, "ack failed; the message comes again and is skipped");
                }
            }
        }
    }

    async fn catch_up(&self) -> Result<(), ProjectionError> {
        let batch = i64::try_from(self.config.batch).unwrap_or(i64::MAX);
        let applied = self.read.catch_up(self.projection, batch).await?;
        if applied > 0 {
            metrics::counter!("clinicbook_projector_caught_up_total", "projection" => self.projection.name)
                .increment(applied);
            debug!(
                projection = self.projection.name,
                applied, "caught up from the event store"
            );
        }
        Ok(())
    }

    /// Applies a batch of messages taken after `checkpoint` (filling gaps
    /// from the event store, at most a batch of events at a time); answers
    /// the checkpoint after it. A message of a kind the
    /// projection does not read is not decoded: its headers say where it
    /// is in the feed.
    async fn handle(
        &self,
        batch: &[Message],
        mut checkpoint: FeedPoint,
    ) -> Result<FeedPoint, ProjectionError> {
        let name = self.projection.name;
        let limit = i64::try_from(self.config.batch.max(1)).unwrap_or(i64::MAX);
        let mut cursor = checkpoint;
        let mut taken: Vec<(FeedPoint, Option<FeedEvent>)> = Vec::with_capacity(batch.len());
        for message in batch {
            let headers = message.headers.as_ref();
            let passed = headers.and_then(|headers| {
                let kind = message_kind(headers)?;
                (!self.projection.reads(Some(kind))).then_some(message_point(headers)?)
            });
            let (point, event) = match passed {
                Some(point) => (point, None),
                None => match serde_json::from_slice::<FeedEvent>(&message.payload) {
                    Ok(event) => (event.point(), Some(event)),
                    Err(error) => {
                        warn!(projection = name, %error, subject = %message.subject, "not a feed event; dropped");
                        continue;
                    }
                },
            };
            if point <= cursor {
                continue;
            }
            let previous = headers.and_then(previous_point);
            if previous != Some(cursor) {
                // The missing range, a batch at a time: what is gathered is
                // applied (its checkpoint moved) before the next is read, so
                // memory stays bounded however large the gap.
                loop {
                    let missing =
                        feed::read_between(self.read.pool(), cursor, point, limit).await?;
                    let Some(last) = missing.last().map(FeedEvent::point) else {
                        break;
                    };
                    let full = i64::try_from(missing.len()).unwrap_or(i64::MAX) >= limit;
                    metrics::counter!("clinicbook_projector_gap_events_total", "projection" => name)
                        .increment(missing.len() as u64);
                    warn!(
                        projection = name,
                        missing = missing.len(),
                        "gap in the stream; filled from the event store"
                    );
                    cursor = last;
                    taken.extend(
                        missing
                            .into_iter()
                            .map(|event| (event.point(), Some(event))),
                    );
                    if !full {
                        break;
                    }
                    checkpoint = self.apply_taken(checkpoint, &taken).await?;
                    taken.clear();
                }
            }
            cursor = point;
            taken.push((point, event));
        }
        self.apply_taken(checkpoint, &taken).await
    }

    /// Applies what was taken after `checkpoint` (in feed order) and
    /// records the lag of the events applied; answers the checkpoint after.
    async fn apply_taken(
        &self,
        checkpoint: FeedPoint,
        taken: &[(FeedPoint, Option<FeedEvent>)],
    ) -> Result<FeedPoint, ProjectionError> {
        let refs: Vec<(FeedPoint, Option<&FeedEvent>)> = taken
            .iter()
            .map(|(point, event)| (*point, event.as_ref()))
            .collect();
        let point = self
            .read
            .advance(self.projection, checkpoint, &refs)
            .await?;
        self.record_lag(taken.iter().filter_map(|(_, event)| event.as_ref()), point);
        Ok(point)
    }

    /// Records, per event the projection read, the lag from the time its
    /// transaction recorded it to now (just after the batch's commit), and
    /// the projection's position.
    fn record_lag<'a>(&self, events: impl Iterator<Item = &'a FeedEvent>, point: FeedPoint) {
        let name = self.projection.name;
        let now = Utc::now();
        for event in events.filter(|event| self.projection.reads(event.kind())) {
            let lag = (now - event.recorded_at).num_microseconds().unwrap_or(0) as f64 / 1e6;
            metrics::histogram!("clinicbook_projection_lag_seconds", "projection" => name)
                .record(lag);
        }
        metrics::gauge!("clinicbook_projection_position", "projection" => name)
            .set(point.position as f64);
    }
}
