//! The waitlist matcher: when a booked slot frees (a cancellation, or a
//! reschedule leaving it), it books the first waitlisted reservation that
//! fits, through the same use case staff use.
//!
//! It keeps tables of its own in `read` (the `waitlist` projection, applied
//! by a projector like the others but never rebuilt: its `waitlist_freed`
//! rows are work to do, not a view): the waiting entries with their wanted
//! window, the slot each booked reservation holds, and one row per freed
//! slot. A worker claims unhandled freed slots with `FOR UPDATE SKIP
//! LOCKED`, so two matcher processes never work on the same one, and tries
//! the candidates oldest first; each attempt carries an idempotency key
//! made of the freed slot and the candidate, so an attempt repeated after a
//! crash books nothing twice. A freed slot's row is deleted once handled
//! (booked, in the past, or fitting no candidate), so the table holds only
//! work to do.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use clinicbook_domain::reservation::{PaymentMethod, ReservationEvent, Slot};
use clinicbook_domain::{ClinicId, PatientId, ReservationId, ResourceId, TreatmentId};
use clinicbook_eventstore::FeedEvent;
use futures::future::BoxFuture;
use sqlx::{PgConnection, Row};
use tokio::time::sleep;
use tracing::{debug, info, warn};
use uuid::Uuid;

use crate::{Projection, ProjectionError, ReadModels};

/// Advisory-lock keys of freed slots are this XOR their position.
const CLAIM_KEY: i64 = 0x5741_4954_0000_0000;

/// The matcher's own projection (not among the rebuildable ones).
pub static WAITLIST: Projection = Projection {
    name: "waitlist",
    tables: &[],
    ddl: DDL,
    apply,
};

const DDL: &str = r"
-- Waitlisted reservations and the window of starts they accept.
CREATE TABLE IF NOT EXISTS waitlist_entries (
    reservation_id uuid PRIMARY KEY,
    patient_id     uuid NOT NULL,
    clinic_id      uuid NOT NULL,
    treatment_id   uuid NOT NULL,
    earliest       timestamptz NOT NULL,
    latest         timestamptz NOT NULL,
    payment        jsonb NOT NULL,
    joined_position bigint NOT NULL
);
CREATE INDEX IF NOT EXISTS waitlist_entries_clinic_idx
    ON waitlist_entries (clinic_id, earliest, latest);
-- The slot each booked reservation holds (to know what a cancellation frees).
CREATE TABLE IF NOT EXISTS waitlist_held (
    reservation_id uuid PRIMARY KEY,
    clinic_id      uuid NOT NULL,
    resource_id    uuid NOT NULL,
    start_at       timestamptz NOT NULL,
    end_at         timestamptz NOT NULL
);
-- Slots that freed: work for the matcher.
CREATE TABLE IF NOT EXISTS waitlist_freed (
    position       bigint PRIMARY KEY,
    clinic_id      uuid NOT NULL,
    resource_id    uuid NOT NULL,
    start_at       timestamptz NOT NULL,
    end_at         timestamptz NOT NULL,
    handled        boolean NOT NULL DEFAULT false,
    booked         uuid
);
CREATE INDEX IF NOT EXISTS waitlist_freed_open_idx ON waitlist_freed (position) WHERE NOT handled;
";

fn apply<'a>(
    conn: &'a mut PgConnection,
    events: &'a [FeedEvent],
) -> BoxFuture<'a, Result<(), ProjectionError>> {
    Box::pin(async move {
        for event in events {
            if event.aggregate_type != "Reservation" {
                continue;
            }
            let parsed: ReservationEvent = serde_json::from_value(event.payload.clone())
                .map_err(|e| ProjectionError::decode(event, e))?;
            let id: Uuid = event
                .aggregate_id
                .parse()
                .map_err(|e| ProjectionError::decode(event, e))?;
            apply_one(conn, event.position, id, parsed).await?;
        }
        Ok(())
    })
}

async fn apply_one(
    conn: &mut PgConnection,
    position: i64,
    id: Uuid,
    event: ReservationEvent,
) -> Result<(), ProjectionError> {
    match event {
        ReservationEvent::WaitlistJoined {
            patient_id,
            clinic_id,
            treatment_id,
            earliest,
            latest,
            payment,
            ..
        } => {
            let payment = serde_json::to_value(payment).map_err(|e| ProjectionError::Invalid {
                field: "payment",
                reason: e.to_string(),
            })?;
            sqlx::query(
                "INSERT INTO waitlist_entries
                   (reservation_id, patient_id, clinic_id, treatment_id, earliest, latest, payment, joined_position)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (reservation_id) DO NOTHING",
            )
            .bind(id)
            .bind(patient_id.0)
            .bind(clinic_id.0)
            .bind(treatment_id.0)
            .bind(earliest)
            .bind(latest)
            .bind(payment)
            .bind(position)
            .execute(&mut *conn)
            .await?;
        }
        ReservationEvent::ReservationBooked {
            clinic_id, slot, ..
        } => {
            sqlx::query("DELETE FROM waitlist_entries WHERE reservation_id = $1")
                .bind(id)
                .execute(&mut *conn)
                .await?;
            hold(conn, id, clinic_id.0, slot).await?;
        }
        ReservationEvent::ReservationRescheduled { from, to } => {
            let clinic: Option<Uuid> =
                sqlx::query_scalar("SELECT clinic_id FROM waitlist_held WHERE reservation_id = $1")
                    .bind(id)
                    .fetch_optional(&mut *conn)
                    .await?;
            if let Some(clinic) = clinic {
                freed(conn, position, clinic, from).await?;
                hold(conn, id, clinic, to).await?;
            }
        }
        ReservationEvent::ReservationCancelled { .. } => {
            sqlx::query("DELETE FROM waitlist_entries WHERE reservation_id = $1")
                .bind(id)
                .execute(&mut *conn)
                .await?;
            let held = sqlx::query(
                "DELETE FROM waitlist_held WHERE reservation_id = $1
                 RETURNING clinic_id, resource_id, start_at, end_at",
            )
            .bind(id)
            .fetch_optional(&mut *conn)
            .await?;
            if let Some(row) = held {
                let slot = Slot {
                    resource_id: ResourceId(row.try_get("resource_id")?),
                    start: row.try_get("start_at")?,
                    end: row.try_get("end_at")?,
                };
                freed(conn, position, row.try_get("clinic_id")?, slot).await?;
            }
        }
        // A displaced slot is taken by the block; a no-show keeps its slot.
        ReservationEvent::ReservationDisplaced { .. } => {
            sqlx::query("DELETE FROM waitlist_held WHERE reservation_id = $1")
                .bind(id)
                .execute(&mut *conn)
                .await?;
        }
        ReservationEvent::CheckedIn { .. }
        | ReservationEvent::ReservationCompleted { .. }
        | ReservationEvent::MarkedNoShow { .. } => {}
    }
    Ok(())
}

async fn hold(
    conn: &mut PgConnection,
    id: Uuid,
    clinic: Uuid,
    slot: Slot,
) -> Result<(), ProjectionError> {
    sqlx::query(
        "INSERT INTO waitlist_held (reservation_id, clinic_id, resource_id, start_at, end_at)
         VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (reservation_id) DO UPDATE
            SET clinic_id = $2, resource_id = $3, start_at = $4, end_at = $5",
    )
    .bind(id)
    .bind(clinic)
    .bind(slot.resource_id.0)
    .bind(slot.start)
    .bind(slot.end)
    .execute(conn)
    .await?;
    Ok(())
}

async fn freed(
    conn: &mut PgConnection,
    position: i64,
    clinic: Uuid,
    slot: Slot,
) -> Result<(), ProjectionError> {
    sqlx::query(
        "INSERT INTO waitlist_freed (position, clinic_id, resource_id, start_at, end_at)
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (position) DO NOTHING",
    )
    .bind(position)
    .bind(clinic)
    .bind(slot.resource_id.0)
    .bind(slot.start)
    .bind(slot.end)
    .execute(conn)
    .await?;
    Ok(())
}

/// A booking the matcher asks for: a waitlisted reservation into a freed
/// slot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WaitlistBooking {
    /// Made of the freed slot and the candidate: the same attempt twice
    /// writes once.
    pub idempotency_key: String,
    /// The waitlisted reservation.
    pub reservation_id: ReservationId,
    /// Its patient.
    pub patient_id: PatientId,
    /// Its clinic.
    pub clinic_id: ClinicId,
    /// Its treatment.
    pub treatment_id: TreatmentId,
    /// The freed slot's resource.
    pub resource_id: ResourceId,
    /// The freed slot's start.
    pub start: DateTime<Utc>,
    /// The payment it chose when it joined.
    pub payment: PaymentMethod,
}

/// What became of an attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BookOutcome {
    /// Booked (or booked before by the same attempt).
    Booked,
    /// The booking's rules refused it (the slot does not fit this
    /// treatment, the package ran out, ...): try the next candidate.
    Refused(String),
}

/// Books for the matcher; the API wires it to the staff's booking use case.
pub trait WaitlistBooker: Send + Sync + 'static {
    /// Books `booking`.
    ///
    /// # Errors
    /// A failure worth trying again later (the database away).
    fn book<'a>(
        &'a self,
        booking: &'a WaitlistBooking,
    ) -> BoxFuture<'a, Result<BookOutcome, String>>;
}

/// The matcher's worker.
pub struct Matcher {
    read: ReadModels,
    booker: Arc<dyn WaitlistBooker>,
    poll: Duration,
}

impl std::fmt::Debug for Matcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Matcher").field("poll", &self.poll).finish()
    }
}

impl Matcher {
    /// A matcher reading `read` and booking through `booker`.
    #[must_use]
    pub fn new(read: ReadModels, booker: Arc<dyn WaitlistBooker>, poll: Duration) -> Self {
        Self { read, booker, poll }
    }

    /// Handles freed slots until `shutdown` completes.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        loop {
            let pause = match self.handle_next().await {
                Ok(true) => Duration::ZERO,
                Ok(false) => self.poll,
                Err(error) => {
                    warn!(%error, "waitlist matcher failed; retrying");
                    self.poll.max(Duration::from_millis(500))
                }
            };
            tokio::select! {
                () = &mut shutdown => return,
                () = sleep(pause) => {}
            }
        }
    }

    /// Handles one freed slot, if any is waiting; answers whether it did.
    ///
    /// # Errors
    /// The database failed or the booker failed in a way worth retrying;
    /// the slot stays unhandled.
    pub async fn handle_next(&self) -> Result<bool, ProjectionError> {
        let mut tx = self.read.pool().begin().await?;
        let exists: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM pg_tables WHERE schemaname = 'read' AND tablename = 'waitlist_freed')",
        )
        .fetch_one(&mut *tx)
        .await?;
        if !exists {
            return Ok(false);
        }
        // Claimed with an advisory lock, not a row lock: a row lock would
        // give this transaction an id while it books, and hold the relay's
        // horizon (and so the whole feed) back meanwhile.
        let open: Vec<i64> = sqlx::query_scalar(
            "SELECT position FROM read.waitlist_freed WHERE NOT handled ORDER BY position LIMIT 16",
        )
        .fetch_all(&mut *tx)
        .await?;
        let mut claimed = None;
        for position in open {
            let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_xact_lock($1)")
                .bind(CLAIM_KEY ^ position)
                .fetch_one(&mut *tx)
                .await?;
            if locked {
                claimed = Some(position);
                break;
            }
        }
        let Some(position) = claimed else {
            return Ok(false);
        };
        let slot = sqlx::query(
            "SELECT position, clinic_id, resource_id, start_at, handled FROM read.waitlist_freed
              WHERE position = $1",
        )
        .bind(position)
        .fetch_optional(&mut *tx)
        .await?;
        // Handled (and so deleted) meanwhile by another matcher that let its
        // claim go?
        let Some(slot) = slot else {
            return Ok(true);
        };
        let handled: bool = slot.try_get("handled")?;
        if handled {
            return Ok(true);
        }
        let clinic: Uuid = slot.try_get("clinic_id")?;
        let resource: Uuid = slot.try_get("resource_id")?;
        let start: DateTime<Utc> = slot.try_get("start_at")?;
        let mut booked = None;
        if start > Utc::now() {
            let candidates = sqlx::query(
                "SELECT reservation_id, patient_id, treatment_id, payment FROM read.waitlist_entries
                  WHERE clinic_id = $1 AND earliest <= $2 AND latest >= $2
                  ORDER BY joined_position",
            )
            .bind(clinic)
            .bind(start)
            .fetch_all(&mut *tx)
            .await?;
            for candidate in candidates {
                let reservation: Uuid = candidate.try_get("reservation_id")?;
                let payment: serde_json::Value = candidate.try_get("payment")?;
                let Ok(payment) = serde_json::from_value::<PaymentMethod>(payment) else {
                    continue;
                };
                let booking = WaitlistBooking {
                    idempotency_key: format!("waitlist:{position}:{reservation}"),
                    reservation_id: ReservationId(reservation),
                    patient_id: PatientId(candidate.try_get("patient_id")?),
                    clinic_id: ClinicId(clinic),
                    treatment_id: TreatmentId(candidate.try_get("treatment_id")?),
                    resource_id: ResourceId(resource),
                    start,
                    payment,
                };
                match self.booker.book(&booking).await {
                    Ok(BookOutcome::Booked) => {
                        info!(%reservation, %start, "waitlisted reservation booked into a freed slot");
                        metrics::counter!("clinicbook_waitlist_booked_total").increment(1);
                        booked = Some(reservation);
                        break;
                    }
                    Ok(BookOutcome::Refused(reason)) => {
                        debug!(%reservation, reason, "waitlisted reservation does not fit the freed slot");
                    }
                    Err(error) => return Err(ProjectionError::Booking(error)),
                }
            }
        }
        // Handled: the row is work done, so it goes (what was booked is in
        // the event store, under the attempt's idempotency key).
        sqlx::query("DELETE FROM read.waitlist_freed WHERE position = $1")
            .bind(position)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        if booked.is_none() {
            debug!(position, %start, "no waitlisted reservation took the freed slot");
        }
        Ok(true)
    }

    /// Deletes freed slots marked handled (by versions that kept them);
    /// answers how many.
    ///
    /// # Errors
    /// The database failed.
    pub async fn purge_handled(read: &ReadModels) -> Result<u64, ProjectionError> {
        let exists: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM pg_tables WHERE schemaname = 'read' AND tablename = 'waitlist_freed')",
        )
        .fetch_one(read.pool())
        .await?;
        if !exists {
            return Ok(0);
        }
        Ok(sqlx::query("DELETE FROM read.waitlist_freed WHERE handled")
            .execute(read.pool())
            .await?
            .rows_affected())
    }
}
