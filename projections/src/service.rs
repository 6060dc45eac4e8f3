//! Starting the read side's background work: the relay, the projectors
//! and the waitlist matcher, each a task that stops when asked.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use clinicbook_eventstore::relay::{Relay, RelayConfig, Topology};
use sqlx::PgPool;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::runtime::{Projector, ProjectorConfig};
use crate::waitlist::{Matcher, WaitlistBooker, WAITLIST};
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
        .map_err(|e| ProjectionError::Nats(format!("invalid NATS URL {url:?}: {e}")))?;
    let client = async_nats::ConnectOptions::new()
        .retry_on_initial_connect()
        .connection_timeout(Duration::from_secs(2))
        .name("clinicbook")
        .connect(servers)
        .await
        .map_err(|e| ProjectionError::Nats(e.to_string()))?;
    Ok(jetstream::new(client))
}

/// Batch sizes of the read side's workers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Batches {
    /// Events the relay reads and publishes per batch.
    pub relay: i64,
    /// Messages a projector applies per transaction.
    pub projector: usize,
}

impl Default for Batches {
    fn default() -> Self {
        Self {
            relay: RelayConfig::default().batch,
            projector: ProjectorConfig::default().batch,
        }
    }
}

/// Background tasks of the read side, stopped together.
#[derive(Debug)]
pub struct Background {
    stop: watch::Sender<bool>,
    tasks: JoinSet<()>,
}

impl Default for Background {
    fn default() -> Self {
        Self {
            stop: watch::channel(false).0,
            tasks: JoinSet::new(),
        }
    }
}

impl Background {
    /// No tasks yet.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    fn stopped(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut stop = self.stop.subscribe();
        async move {
            // An error means the sender is gone: stop as well.
            let _ = stop.wait_for(|stop| *stop).await;
        }
    }

    /// Starts the relay.
    pub fn relay(&mut self, pool: PgPool, js: jetstream::Context, topology: Topology, batch: i64) {
        let relay = Relay::new(
            pool,
            js,
            RelayConfig {
                topology,
                batch: batch.max(1),
                ..RelayConfig::default()
            },
        );
        let stopped = self.stopped();
        self.tasks.spawn(relay.run(stopped));
    }

    /// Starts one projector per projection, and the waitlist matcher when a
    /// booker is given.
    pub fn projectors(
        &mut self,
        read: &ReadModels,
        js: &jetstream::Context,
        topology: &Topology,
        batch: usize,
        booker: Option<Arc<dyn WaitlistBooker>>,
    ) {
        let config = ProjectorConfig {
            topology: topology.clone(),
            batch: batch.max(1),
            ..ProjectorConfig::default()
        };
        let mut all: Vec<&'static crate::Projection> = projections().iter().collect();
        if booker.is_some() {
            all.push(&WAITLIST);
        }
        for projection in all {
            let projector = Projector::new(read.clone(), js.clone(), projection, config.clone());
            let stopped = self.stopped();
            self.tasks.spawn(projector.run(stopped));
        }
        if let Some(booker) = booker {
            let matcher = Matcher::new(read.clone(), booker, Duration::from_millis(200));
            let stopped = self.stopped();
            self.tasks.spawn(matcher.run(stopped));
        }
    }

    /// Runs `job` every `period` (the first time after one period) until
    /// stopped; a job in progress is let finish.
    pub fn every(
        &mut self,
        period: Duration,
        job: impl Fn() -> futures::future::BoxFuture<'static, ()> + Send + 'static,
    ) {
        let stopped = self.stopped();
        self.tasks.spawn(async move {
            tokio::pin!(stopped);
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tokio::select! {
                    () = &mut stopped => return,
                    _ = tick.tick() => job().await,
                }
            }
        });
    }

    /// Asks every task to stop and waits for them.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        while self.tasks.join_next().await.is_some() {}
    }
}
