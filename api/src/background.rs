//! The work `serve` does besides answering HTTP: the relay, the
//! projectors, the waitlist matcher and the scheduler of due work, by
//! role.

use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use clinicbook_commands::due::DueOutcome;
use clinicbook_commands::{CommandError, Commands};
use clinicbook_eventstore::relay::{self, Nudge, Topology};
use clinicbook_projections::service::{self, Background, Batches};
use clinicbook_projections::{ProjectionError, ReadModels};
use tokio_util::sync::CancellationToken;
use tracing::{info, info_span, warn};

/// What one process does; `serve` runs them all by default.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ServeRole {
    /// API, relay and projectors in one process.
    All,
    /// The HTTP API only (scale out: several behind a balancer).
    Api,
    /// The relay only (several may run; one works at a time).
    Relay,
    /// The projectors, the waitlist matcher and the scheduler only.
    Projector,
}

impl ServeRole {
    /// Whether this role answers HTTP requests. Every role serves
    /// `/healthz`, `/readyz` and `/metrics`; only these serve the API.
    #[must_use]
    pub fn serves_api(self) -> bool {
        matches!(self, Self::All | Self::Api)
    }
}

/// Starts the background work of `role` over `commands`' database and the
/// NATS at `nats_url`, with NATS names from `topology` and the given batch
/// sizes.
///
/// # Errors
/// The NATS URL is invalid.
pub async fn start(
    role: ServeRole,
    commands: &Commands,
    read: &ReadModels,
    nats_url: &str,
    topology: &Topology,
    batches: Batches,
) -> Result<Background, ProjectionError> {
    let mut background = Background::new();
    let js = service::connect(nats_url).await?;
    // Whatever the role, this process's commits wake the relay (wherever it
    // runs) through NATS; the relay polls for writers that do not.
    commands
        .store()
        .nudge_relay(Nudge::new(js.client(), topology));
    if role == ServeRole::Api {
        return Ok(background);
    }
    if matches!(role, ServeRole::All | ServeRole::Relay) {
        background.relay(
            read.pool().clone(),
            js.clone(),
            topology.clone(),
            batches.relay,
        );
    }
    if matches!(role, ServeRole::All | ServeRole::Projector) {
        // The webhook workers wake on commits instead of at their next poll.
        background.set_commit_nudges(relay::commit_nudges(&js.client(), topology).await?);
        background.projectors(read, &js, topology, &batches, true);
        background.spawn(
            info_span!("waitlist_matcher"),
            match_waitlist(read.clone(), commands.clone(), background.stop_token()),
        );
        background.spawn(
            info_span!("scheduler"),
            run_due_work(read.clone(), commands.clone(), background.stop_token()),
        );
    }
    Ok(background)
}

/// Pause when no freed slot waits.
const MATCHER_IDLE: Duration = Duration::from_millis(200);

/// How often [`maintain`] purges.
pub const MAINTENANCE_EVERY: std::time::Duration = std::time::Duration::from_secs(60);

/// Adds to `background` the purge of what is kept only for a while, every
/// `every`: idempotency keys older than the store's window, and freed
/// waitlist slots left marked handled by older versions.
pub fn maintain(
    background: &mut Background,
    commands: &Commands,
    read: &ReadModels,
    every: std::time::Duration,
) {
    let store = commands.store().clone();
    let read = read.clone();
    background.every(every, move || {
        let store = store.clone();
        let read = read.clone();
        Box::pin(async move {
            match store.purge_idempotency_keys(1000).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(deleted = n, "expired idempotency keys purged"),
                Err(error) => tracing::warn!(%error, "purging idempotency keys failed; next time"),
            }
            match read.purge_handled().await {
                Ok(0) => {}
                Ok(n) => tracing::info!(deleted = n, "handled freed slots purged"),
                Err(error) => tracing::warn!(%error, "purging freed slots failed; next time"),
            }
        })
    });
}

/// The waitlist matcher: takes each slot the read side saw free and offers
/// it to the waiting list through [`Commands::fill_freed_slot`], until
/// `stop` is cancelled. A failure (the database away, conflicts through
/// every retry) leaves the slot unhandled and is retried with backoff.
async fn match_waitlist(read: ReadModels, commands: Commands, stop: CancellationToken) {
    let retry = ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(500))
        .with_max_delay(Duration::from_secs(10))
        .with_jitter()
        .without_max_times();
    loop {
        let next = (|| fill_next(&read, &commands))
            .retry(retry)
            .notify(|error, pause| {
                warn!(%error, ?pause, "waitlist matcher failed; retrying");
            });
        let pause = tokio::select! {
            () = stop.cancelled() => return,
            filled = next => match filled {
                Ok(true) => Duration::ZERO,
                Ok(false) | Err(_) => MATCHER_IDLE,
            },
        };
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(pause) => {}
        }
    }
}

/// Why the matcher (or the scheduler) could not finish a freed slot (or
/// a piece of due work).
#[derive(Debug, thiserror::Error)]
enum MatchError {
    /// Reading or marking the freed slot failed.
    #[error("waitlist read model: {0}")]
    Read(#[from] ProjectionError),
    /// Booking a candidate failed in a way worth retrying.
    #[error("waitlist booking: {0}")]
    Book(#[from] CommandError),
}

/// Handles one freed slot, if one waits; answers whether it did.
async fn fill_next(read: &ReadModels, commands: &Commands) -> Result<bool, MatchError> {
    let Some(claim) = read.claim_freed_slot(commands.now()).await? else {
        return Ok(false);
    };
    let booked = commands
        .fill_freed_slot(&claim.slot, &claim.candidates)
        .await?;
    if let Some(reservation) = booked {
        info!(reservation = %reservation.0, start = %claim.slot.start, "waitlisted reservation booked into a freed slot");
        metrics::counter!("clinicbook_waitlist_booked_total").increment(1);
    }
    claim.finish(booked).await?;
    Ok(true)
}

/// The longest the scheduler sleeps between looks at the due work: a row
/// written meanwhile (a new hold) is seen within this time, so work is done
/// at most this late (plus the command's own time).
pub const SCHEDULER_POLL: Duration = Duration::from_millis(200);

/// The scheduler of due work: claims each row that fell due (in any
/// process: claims never overlap) and carries it out through
/// [`Commands::do_due_work`], until `stop` is cancelled. A failure leaves
/// the row due and is retried with backoff; a process killed mid-work
/// drops its claim, and the next claim finds the work done or does it.
async fn run_due_work(read: ReadModels, commands: Commands, stop: CancellationToken) {
    let retry = ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(100))
        .with_max_delay(Duration::from_secs(5))
        .with_jitter()
        .without_max_times();
    loop {
        let next = (|| due_next(&read, &commands))
            .retry(retry)
            .notify(|error, pause| {
                warn!(%error, ?pause, "scheduler failed; retrying");
            });
        let pause = tokio::select! {
            () = stop.cancelled() => return,
            pause = next => pause.unwrap_or(SCHEDULER_POLL),
        };
        if pause.is_zero() {
            continue;
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(pause) => {}
        }
    }
}

/// Does the earliest due work, if some is due; answers how long to wait
/// before looking again (zero after work done).
async fn due_next(read: &ReadModels, commands: &Commands) -> Result<Duration, MatchError> {
    let now = commands.now();
    let Some(claim) = read.claim_due(now).await? else {
        let wait = match read.next_due().await? {
            Some(at) => (at - now).to_std().unwrap_or(Duration::ZERO),
            None => SCHEDULER_POLL,
        };
        return Ok(wait.min(SCHEDULER_POLL));
    };
    let late = (now - claim.work.due_at).to_std().unwrap_or(Duration::ZERO);
    match commands.do_due_work(&claim.work).await? {
        DueOutcome::Done => {
            info!(kind = claim.work.kind.as_str(), key = %claim.work.key, late_ms = late.as_millis(), "due work done");
            metrics::counter!("clinicbook_due_work_done_total", "kind" => claim.work.kind.as_str())
                .increment(1);
            metrics::histogram!("clinicbook_due_work_late_seconds", "kind" => claim.work.kind.as_str())
                .record(late.as_secs_f64());
            claim.finish().await?;
            Ok(Duration::ZERO)
        }
        DueOutcome::NotYet => Ok(SCHEDULER_POLL),
    }
}
