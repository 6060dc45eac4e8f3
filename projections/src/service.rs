//! Starting the read side's background work: the relay and the
//! projectors, each a task that stops when asked (and, spawned by the API,
//! the waitlist matcher).

use std::future::Future;
use std::time::Duration;

use async_nats::jetstream;
use clinicbook_eventstore::relay::{Relay, RelayConfig, Topology};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info_span, Instrument, Span};

use crate::due::DUE_WORK;
use crate::runtime::{Projector, ProjectorConfig};
use crate::waitlist::WAITLIST;
use crate::{projections, ProjectionError, ReadModels};

/// Connects to NATS at `url` (one URL, or a comma-separated list of a
/// cluster's servers) and answers its JetStream context. The client
/// reconnects by itself, to any server of a cluster; the first connection is
/// retried too, so a process may start before nats-server does.
///
/// # Errors
/// The URL is invalid.
pub async fn connect(url: &str) -> Result<jetstream::Context, ProjectionError> {
    let servers = url
        .split(',')
        .map(|server| server.trim().parse::<async_nats::ServerAddr>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ProjectionError::InvalidNatsUrl {
            url: url.to_owned(),
            source: e.into(),
        })?;
    let client = async_nats::ConnectOptions::new()
        .retry_on_initial_connect()
        .connection_timeout(Duration::from_secs(2))
        .name("clinicbook")
        .connect(servers)
        .await
        .map_err(|e| ProjectionError::nats("connect", e))?;
    Ok(jetstream::new(client))
}

/// Batch sizes of the read side's workers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Batches {
    /// Events the relay reads and publishes per batch.
    pub relay: i64,
    /// Messages a projector applies per transaction.
    pub projector: usize,
    /// How long a projector waits after a batch's first message for more
    /// ([`ProjectorConfig::gather`]).
    pub gather: Duration,
}

impl Default for Batches {
    fn default() -> Self {
        Self {
            relay: RelayConfig::default().batch,
            projector: ProjectorConfig::default().batch,
            gather: ProjectorConfig::default().gather,
        }
    }
}

/// Background tasks of the read side, stopped together: each runs in a
/// span of its own, and [`Background::shutdown`] cancels them and waits
/// until every one has ended.
#[derive(Debug, Default)]
pub struct Background {
    stop: CancellationToken,
    tasks: TaskTracker,
    /// Commit nudges, when the process listens to them (see
    /// [`Background::commit_nudges`]).
    commits: Option<tokio::sync::watch::Receiver<u64>>,
}

impl Background {
    /// No tasks yet.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Cancelled when the tasks are asked to stop: a task spawned with
    /// [`Background::spawn`] watches it to end at a point of its choosing.
    #[must_use]
    pub fn stop_token(&self) -> CancellationToken {
        self.stop.clone()
    }

    /// Keeps `commits` (from `relay::commit_nudges`) for the feed readers
    /// started later.
    pub fn set_commit_nudges(&mut self, commits: tokio::sync::watch::Receiver<u64>) {
        self.commits = Some(commits);
    }

    /// A receiver of the commit nudges, if the process listens to them: it
    /// changes on every commit of any process, so a feed reader can wake at
    /// once instead of at its next poll.
    #[must_use]
    pub fn commit_nudges(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        self.commits.clone()
    }

    /// Spawns `task` inside `span`; [`Background::shutdown`] waits for it.
    pub fn spawn<F>(&self, span: Span, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.tasks.spawn(task.instrument(span));
    }

    /// Starts the relay.
    pub fn relay(&self, pool: PgPool, js: jetstream::Context, topology: Topology, batch: i64) {
        let relay = Relay::new(
            pool,
            js,
            RelayConfig {
                topology,
                batch: batch.max(1),
                ..RelayConfig::default()
            },
        );
        let stopped = self.stop.clone().cancelled_owned();
        self.spawn(info_span!("relay"), relay.run(stopped));
    }

    /// Starts one projector per projection, and one each for the waitlist
    /// matcher's and the scheduler's tables when `waitlist` (the matcher
    /// and the scheduler run use cases: they are spawned by whoever runs
    /// the use cases).
    pub fn projectors(
        &self,
        read: &ReadModels,
        js: &jetstream::Context,
        topology: &Topology,
        batches: &Batches,
        waitlist: bool,
    ) {
        let config = ProjectorConfig {
            topology: topology.clone(),
            batch: batches.projector.max(1),
            gather: batches.gather,
            ..ProjectorConfig::default()
        };
        let mut all: Vec<&'static crate::Projection> = projections().iter().collect();
        if waitlist {
            all.push(&WAITLIST);
            all.push(&DUE_WORK);
        }
        for projection in all {
            let projector = Projector::new(read.clone(), js.clone(), projection, config.clone());
            let stopped = self.stop.clone().cancelled_owned();
            self.spawn(
                info_span!("projector", projection = projection.name),
                projector.run(stopped),
            );
        }
    }

    /// Runs `job` every `period` (the first time after one period) until
    /// stopped; a job in progress is let finish.
    pub fn every(
        &mut self,
        period: Duration,
        job: impl Fn() -> futures::future::BoxFuture<'static, ()> + Send + 'static,
    ) {
        let stop = self.stop_token();
        self.spawn(info_span!("every", ?period), async move {
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tokio::select! {
                    () = stop.cancelled() => return,
                    _ = tick.tick() => job().await,
                }
            }
        });
    }

    /// Asks every task to stop and waits for them.
    pub async fn shutdown(self) {
        self.stop.cancel();
        self.tasks.close();
        self.tasks.wait().await;
    }
}
