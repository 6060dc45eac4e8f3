//! The work `serve` does besides answering HTTP: the relay, the
//! projectors and the waitlist matcher, by role.

use std::sync::Arc;

use clinicbook_commands::booking::BookTreatment;
use clinicbook_commands::{CommandError, Commands, Ctx};
use clinicbook_domain::DomainError;
use clinicbook_eventstore::relay::Topology;
use clinicbook_eventstore::{Actor, CommandMetadata, IdempotencyKey};
use clinicbook_projections::service::{self, Background, Batches};
use clinicbook_projections::waitlist::{BookOutcome, WaitlistBooker, WaitlistBooking};
use clinicbook_projections::{ProjectionError, ReadModels};
use futures::future::BoxFuture;

/// What one process does; `serve` runs them all by default.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ServeRole {
    /// API, relay and projectors in one process.
    All,
    /// The HTTP API only (scale out: several behind a balancer).
    Api,
    /// The relay only (several may run; one works at a time).
    Relay,
    /// The projectors and the waitlist matcher only.
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
    if role == ServeRole::Api {
        return Ok(background);
    }
    let js = service::connect(nats_url).await?;
    if matches!(role, ServeRole::All | ServeRole::Relay) {
        background.relay(
            read.pool().clone(),
            js.clone(),
            topology.clone(),
            batches.relay,
        );
    }
    if matches!(role, ServeRole::All | ServeRole::Projector) {
        let booker: Arc<dyn WaitlistBooker> = Arc::new(CommandBooker {
            commands: commands.clone(),
        });
        background.projectors(read, &js, topology, batches.projector, Some(booker));
    }
    Ok(background)
}

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
            match clinicbook_projections::waitlist::Matcher::purge_handled(&read).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(deleted = n, "handled freed slots purged"),
                Err(error) => tracing::warn!(%error, "purging freed slots failed; next time"),
            }
        })
    });
}

/// Books for the waitlist matcher through the staff's booking use case.
struct CommandBooker {
    commands: Commands,
}

impl WaitlistBooker for CommandBooker {
    fn book<'a>(
        &'a self,
        booking: &'a WaitlistBooking,
    ) -> BoxFuture<'a, Result<BookOutcome, String>> {
        Box::pin(async move {
            let input = BookTreatment {
                reservation_id: Some(booking.reservation_id.0),
                patient_id: booking.patient_id.0,
                clinic_id: booking.clinic_id.0,
                resource_id: booking.resource_id.0,
                treatment_id: booking.treatment_id.0,
                start: booking.start,
                payment: booking.payment.into(),
                promo_code: None,
            };
            let request = serde_json::to_vec(&input).map_err(|e| e.to_string())?;
            let mut ctx = Ctx::new(CommandMetadata::new(
                Actor {
                    subject: "waitlist-matcher".into(),
                    role: "engine".into(),
                },
                "book_treatment",
                booking.idempotency_key.clone(),
            ));
            ctx.idempotency = Some(IdempotencyKey::new(
                "waitlist",
                booking.idempotency_key.clone(),
                &request,
            ));
            match self.commands.book(&ctx, input).await {
                Ok(_) => Ok(BookOutcome::Booked),
                Err(CommandError::Domain(error)) => Ok(BookOutcome::Refused(refusal(&error))),
                Err(CommandError::IdempotencyKeyReused) => Ok(BookOutcome::Refused(
                    "attempted before with another request".into(),
                )),
                Err(other) => Err(other.to_string()),
            }
        })
    }
}

fn refusal(error: &DomainError) -> String {
    format!("{}: {error}", error.code())
}
