//! The scheduler's use case: one piece of due work carried out by the
//! command its kind names (a hold's expiry, a booking's reminder), with
//! an idempotency key made of kind, key and due time.

use chrono::{DateTime, Utc};
use clinicbook_domain::due::{DueKind, DueWork};
use clinicbook_domain::reservation::{Reservation, ReservationCommand, ReservationStatus};
use clinicbook_domain::{DomainError, HoldId, ReservationId};
use clinicbook_eventstore::{
    Actor, CommandMetadata, IdempotencyKey, UnitOfWork, UowError, UseCase,
};
use tracing::debug;

use serde::{Deserialize, Serialize};

use crate::{CommandError, Commands, Ctx};

/// What the engine's expiry of a hold did (the answer of its command,
/// stored under its idempotency key).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Expiry {
    /// `HoldExpired` was recorded now and the slot freed.
    Expired,
    /// The hold had already ended (confirmed, released or expired):
    /// nothing was written.
    AlreadyEnded,
    /// The hold does not run out yet (the caller's clock is early).
    NotYet,
}

/// What the scheduler's reminder of a booking did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reminder {
    /// `ReminderDue` was recorded now for the booked start.
    Recorded,
    /// Nothing to remind of: no longer booked, or this start's reminder
    /// fell due before. Nothing was written.
    NotNeeded,
}

/// Record that the reminder of a booking fell due: `Reservation`
/// RecordReminderDue for its current start, once per start.
struct RemindCase {
    reservation_id: ReservationId,
    due_at: DateTime<Utc>,
}

impl UseCase for RemindCase {
    type Output = Reminder;

    async fn run(&self, uow: &mut UnitOfWork) -> Result<Reminder, UowError> {
        let id = self.reservation_id.to_string();
        let reservation = uow.load::<Reservation>(&id).await?;
        let start = match (reservation.status, reservation.slot) {
            (ReservationStatus::Booked, Some(slot))
                if reservation.reminded_for != Some(slot.start) =>
            {
                slot.start
            }
            _ => return Ok(Reminder::NotNeeded),
        };
        uow.handle::<Reservation>(
            &id,
            ReservationCommand::RecordReminderDue {
                start,
                due_at: self.due_at,
            },
        )
        .await?;
        Ok(Reminder::Recorded)
    }
}

/// What carrying out a piece of due work did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DueOutcome {
    /// The work is done (now, or before: nothing was written twice); the
    /// row can go.
    Done,
    /// Not due yet by this process's clock; try again later.
    NotYet,
}

impl Commands {
    /// Carries out `work`. Execution is at least once, the effect exactly
    /// once: the command's aggregate refuses a second terminal event, and
    /// the idempotency key answers a repeat as the first attempt did.
    ///
    /// # Errors
    /// Storage failed or conflicts outlasted every retry: the work stays
    /// due, for another try.
    #[tracing::instrument(skip_all, fields(kind = work.kind.as_str(), key = %work.key))]
    pub async fn do_due_work(&self, work: &DueWork) -> Result<DueOutcome, CommandError> {
        // Checked before the command, so that no "not yet" answer is ever
        // stored under the work's idempotency key.
        if self.now() < work.due_at {
            return Ok(DueOutcome::NotYet);
        }
        let key = work.idempotency_key();
        let mut ctx = Ctx::new(CommandMetadata::new(
            Actor {
                subject: "scheduler".into(),
                role: "engine".into(),
            },
            work.kind.as_str(),
            key.clone(),
        ));
        ctx.idempotency = Some(IdempotencyKey::new("due", key.clone(), key.as_bytes()));
        match work.kind {
            DueKind::HoldExpiry => {
                let Ok(hold_id) = work.key.parse::<HoldId>() else {
                    debug!(key = %work.key, "due hold expiry names no hold id; dropped");
                    return Ok(DueOutcome::Done);
                };
                match self.expire_hold(&ctx, hold_id).await {
                    Ok(done) if done.output == Expiry::NotYet => Ok(DueOutcome::NotYet),
                    Ok(_) => Ok(DueOutcome::Done),
                    Err(CommandError::Domain(DomainError::NotFound { .. })) => {
                        debug!(%hold_id, "due hold expiry for a hold that does not exist; dropped");
                        Ok(DueOutcome::Done)
                    }
                    Err(other) => Err(other),
                }
            }
            DueKind::Reminder => {
                let Ok(reservation_id) = work.key.parse::<uuid::Uuid>() else {
                    debug!(key = %work.key, "due reminder names no reservation id; dropped");
                    return Ok(DueOutcome::Done);
                };
                let use_case = RemindCase {
                    reservation_id: ReservationId(reservation_id),
                    due_at: work.due_at,
                };
                match self.run(&ctx, &use_case).await {
                    Ok(_) => Ok(DueOutcome::Done),
                    Err(CommandError::Domain(DomainError::NotFound { .. })) => {
                        debug!(%reservation_id, "due reminder for a reservation that does not exist; dropped");
                        Ok(DueOutcome::Done)
                    }
                    Err(other) => Err(other),
                }
            }
        }
    }
}
