//! The read side of the waitlist matcher: it sees booked slots free (a
//! cancellation, a reschedule leaving one, a waitlist offer expired or
//! released) and tells the matcher, which books the first waitlisted
//! reservation that fits through the same use case staff use, or with
//! `waitlist_mode: offer` holds the slot for it (`clinicbook_commands`'
//! `fill_freed_slot`). A reservation is never offered the same slot twice.
//! That a patient is never offered two overlapping slots at once is not
//! judged here (this table lags, and two matchers read it at once): the
//! unit of work that places an offer opens it on the patient's
//! `PatientOffers` stream, which refuses an overlapping open offer, and
//! the matcher then moves on to the next candidate (ADR 0008).
//!
//! It keeps tables of its own in `read` (the `waitlist` projection, applied
//! by a projector like the others but never rebuilt: its `waitlist_freed`
//! rows are work to do, not a view): the waiting entries with their wanted
//! window, the slot each booked reservation holds, and one row per freed
//! slot. [`ReadModels::claim_freed_slot`] claims an unhandled freed slot
//! with an advisory lock, so two matcher processes never work on the same
//! one, and answers its candidates oldest first; [`FreedClaim::finish`]
//! deletes it, so the table holds only work to do. A slot that starts in
//! the past, or that no candidate fits, is deleted too; each attempt carries
//! an idempotency key made of the freed slot and the candidate, so an
//! attempt repeated after a crash books nothing twice.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use clinicbook_domain::hold::HoldEvent;
use clinicbook_domain::reservation::{PaymentMethod, ReservationEvent, Slot};
use clinicbook_domain::waitlist::{FreedSlot, WaitlistCandidate};
use clinicbook_domain::{
    AggregateKind, ClinicId, PatientId, ReservationId, ResourceId, TreatmentId,
};
use clinicbook_eventstore::FeedEvent;
use serde::{Deserialize, Serialize};
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, Row};
use tracing::{debug, warn};
use uuid::Uuid;

use crate::models::sql::{apply_fn, decode, read_table_exists, row, uuid_id, Index, Table};
use crate::{Projection, ProjectionError, ReadModels};

/// Advisory-lock keys of freed slots are this XOR their position.
const CLAIM_KEY: i64 = 0x5741_4954_0000_0000;

/// The matcher's own projection (not among the rebuildable ones).
pub static WAITLIST: Projection = Projection {
    name: "waitlist",
    tables: &[&ENTRIES.def, &HELD.def, &FREED.def, &OFFERS.def],
    ddl: "",
    kinds: &[AggregateKind::Hold, AggregateKind::Reservation],
    apply: apply_fn!(apply_batch),
};

row! {
    /// A row of `waitlist_entries`: a waitlisted reservation and the window
    /// of starts it accepts; `joined_position` orders the candidates.
    #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
    struct EntryRow {
        reservation_id: Uuid,
        patient_id: Uuid,
        clinic_id: Uuid,
        treatment_id: Uuid,
        earliest: DateTime<Utc>,
        latest: DateTime<Utc>,
        payment: serde_json::Value,
        joined_position: i64,
    }
}

static ENTRIES: Table<EntryRow> = Table::new(
    "waitlist_entries",
    &["reservation_id"],
    &[Index::on(
        "waitlist_entries_clinic_idx",
        "(clinic_id, earliest, latest)",
    )],
);

row! {
    /// A row of `waitlist_held`: the slot a booked reservation holds, to
    /// know what its cancellation frees.
    #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
    struct HeldRow {
        reservation_id: Uuid,
        clinic_id: Uuid,
        resource_id: Uuid,
        start_at: DateTime<Utc>,
        end_at: DateTime<Utc>,
    }
}

static HELD: Table<HeldRow> = Table::new("waitlist_held", &["reservation_id"], &[]);

row! {
    /// A row of `waitlist_freed`: a slot that freed, work for the matcher
    /// (keyed by the position of the event that freed it).
    #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
    struct FreedRow {
        position: i64,
        clinic_id: Uuid,
        resource_id: Uuid,
        start_at: DateTime<Utc>,
        end_at: DateTime<Utc>,
        handled: bool,
        booked: Option<Uuid>,
    }
}

static FREED: Table<FreedRow> = Table::new(
    "waitlist_freed",
    &["position"],
    &[Index::on("waitlist_freed_open_idx", "(position)").when("NOT handled")],
);

row! {
    /// A row of `waitlist_offers`: an offer made (`waitlist_mode` offer), a
    /// hold for a waitlisted reservation. Each keeps the slot from being
    /// offered to the same reservation again, and names the slot its end
    /// frees (the patient's open offers are the `PatientOffers` stream's).
    #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
    struct OfferRow {
        hold_id: Uuid,
        reservation_id: Uuid,
        patient_id: Uuid,
        clinic_id: Uuid,
        resource_id: Uuid,
        start_at: DateTime<Utc>,
        end_at: DateTime<Utc>,
    }
}

static OFFERS: Table<OfferRow> = Table::new(
    "waitlist_offers",
    &["hold_id"],
    &[Index::on(
        "waitlist_offers_slot_idx",
        "(resource_id, start_at)",
    )],
);

/// The key of a `waitlist_entries` row.
#[derive(Serialize)]
struct EntryKey {
    reservation_id: Uuid,
}

/// Applies events in feed order. A run of bookings in a row, what a busy
/// clinic's batch mostly is, is written at once: each booking only ends
/// its own entry and holds its own slot, so the run's entries go in one
/// statement and its slots in another.
async fn apply_batch(conn: &mut PgConnection, events: &[FeedEvent]) -> Result<(), ProjectionError> {
    let mut booked: BTreeMap<Uuid, HeldRow> = BTreeMap::new();
    for event in events {
        let kind = event.kind();
        if !matches!(kind, Some(AggregateKind::Hold | AggregateKind::Reservation)) {
            continue;
        }
        let change = match kind {
            Some(AggregateKind::Reservation) => Some(decode::<ReservationEvent>(event)?),
            _ => None,
        };
        if let Some(ReservationEvent::ReservationBooked {
            clinic_id, slot, ..
        }) = &change
        {
            let id = uuid_id(event)?;
            booked.insert(id, held_row(id, clinic_id.0, *slot));
            continue;
        }
        apply_booked(conn, &mut booked).await?;
        match change {
            Some(change) => apply_one(conn, event.position, uuid_id(event)?, change).await?,
            None => apply_offer(conn, event.position, uuid_id(event)?, decode(event)?).await?,
        }
    }
    apply_booked(conn, &mut booked).await
}

/// Writes a run of bookings (and empties it): their entries end, their
/// slots are held.
async fn apply_booked(
    conn: &mut PgConnection,
    booked: &mut BTreeMap<Uuid, HeldRow>,
) -> Result<(), ProjectionError> {
    if booked.is_empty() {
        return Ok(());
    }
    let run = std::mem::take(booked);
    let keys: Vec<EntryKey> = run
        .keys()
        .map(|&reservation_id| EntryKey { reservation_id })
        .collect();
    ENTRIES.delete(conn, &keys).await?;
    let rows: Vec<HeldRow> = run.into_values().collect();
    HELD.upsert(conn, &rows).await
}

async fn apply_one(
    conn: &mut PgConnection,
    position: i64,
    id: Uuid,
    event: ReservationEvent,
) -> Result<(), ProjectionError> {
    match event {
        ReservationEvent::WaitlistJoined(entry) => {
            let payment =
                serde_json::to_value(entry.payment).map_err(|e| ProjectionError::Invalid {
                    field: "payment",
                    reason: e.to_string(),
                })?;
            let row = EntryRow {
                reservation_id: id,
                patient_id: entry.patient_id.0,
                clinic_id: entry.clinic_id.0,
                treatment_id: entry.treatment_id.0,
                earliest: entry.earliest,
                latest: entry.latest,
                payment,
                joined_position: position,
            };
            ENTRIES.insert_new(conn, &[row]).await?;
        }
        ReservationEvent::ReservationBooked {
            clinic_id, slot, ..
        } => {
            let mut booked = BTreeMap::from([(id, held_row(id, clinic_id.0, slot))]);
            apply_booked(conn, &mut booked).await?;
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
            ENTRIES.delete_where(conn, id).await?;
            let held = sqlx::query(
                "DELETE FROM waitlist_held WHERE reservation_id = $1
                 RETURNING clinic_id, resource_id, start_at, end_at",
            )
            .bind(id)
            .fetch_optional(&mut *conn)
            .await?;
            freed_again(conn, position, held).await?;
        }
        // A displaced slot is taken by the block; a no-show keeps its slot.
        ReservationEvent::ReservationDisplaced { .. } => {
            HELD.delete_where(conn, id).await?;
        }
        ReservationEvent::CheckedIn { .. }
        | ReservationEvent::ReservationCompleted { .. }
        | ReservationEvent::MarkedNoShow { .. }
        | ReservationEvent::ReminderDue { .. } => {}
    }
    Ok(())
}

/// Offers: a hold placed for a waitlisted reservation is recorded; when
/// it expires or is released, its slot is freed again, for the next in
/// line (the reservation that had it is not offered it again).
async fn apply_offer(
    conn: &mut PgConnection,
    position: i64,
    hold_id: Uuid,
    event: HoldEvent,
) -> Result<(), ProjectionError> {
    match event {
        HoldEvent::Held { terms, .. } => {
            let Some(reservation_id) = terms.offer_for else {
                return Ok(());
            };
            let offer = OfferRow {
                hold_id,
                reservation_id: reservation_id.0,
                patient_id: terms.patient_id.0,
                clinic_id: terms.clinic_id.0,
                resource_id: terms.slot.resource_id.0,
                start_at: terms.slot.start,
                end_at: terms.slot.end,
            };
            OFFERS.insert_new(conn, &[offer]).await?;
        }
        // A confirmed offer's slot is booked (and its entry gone with
        // `ReservationBooked`).
        HoldEvent::HoldConfirmed { .. } => {}
        HoldEvent::HoldExpired { .. } | HoldEvent::HoldReleased { .. } => {
            let offer = sqlx::query(
                "SELECT clinic_id, resource_id, start_at, end_at FROM waitlist_offers
                  WHERE hold_id = $1",
            )
            .bind(hold_id)
            .fetch_optional(&mut *conn)
            .await?;
            freed_again(conn, position, offer).await?;
        }
    }
    Ok(())
}

/// Records the slot `id` holds now (a booking, a reschedule's new slot).
/// The row of a reservation `id` of `clinic` holding `slot`.
fn held_row(id: Uuid, clinic: Uuid, slot: Slot) -> HeldRow {
    HeldRow {
        reservation_id: id,
        clinic_id: clinic,
        resource_id: slot.resource_id.0,
        start_at: slot.start,
        end_at: slot.end,
    }
}

async fn hold(
    conn: &mut PgConnection,
    id: Uuid,
    clinic: Uuid,
    slot: Slot,
) -> Result<(), ProjectionError> {
    HELD.upsert(conn, &[held_row(id, clinic, slot)]).await
}

/// The slot a row that held one (`clinic_id, resource_id, start_at,
/// end_at`: a cancelled booking's, an offer that ended) is freed again.
async fn freed_again(
    conn: &mut PgConnection,
    position: i64,
    row: Option<PgRow>,
) -> Result<(), ProjectionError> {
    let Some(row) = row else {
        return Ok(());
    };
    let slot = Slot {
        resource_id: ResourceId(row.try_get("resource_id")?),
        start: row.try_get("start_at")?,
        end: row.try_get("end_at")?,
    };
    freed(conn, position, row.try_get("clinic_id")?, slot).await
}

/// Records `slot` of `clinic` as freed by the event at `position`.
async fn freed(
    conn: &mut PgConnection,
    position: i64,
    clinic: Uuid,
    slot: Slot,
) -> Result<(), ProjectionError> {
    let freed = FreedRow {
        position,
        clinic_id: clinic,
        resource_id: slot.resource_id.0,
        start_at: slot.start,
        end_at: slot.end,
        handled: false,
        booked: None,
    };
    FREED.insert_new(conn, &[freed]).await
}

/// A freed slot claimed by this process, with the candidates that could
/// take it, oldest first. The claim is a transaction-scoped advisory lock:
/// no other matcher works on the slot until [`FreedClaim::finish`] (or the
/// claim is dropped, which lets the slot go unhandled, for a later try).
pub struct FreedClaim {
    tx: sqlx::Transaction<'static, sqlx::Postgres>,
    /// The slot.
    pub slot: FreedSlot,
    /// The waitlisted reservations whose window holds its start, in the
    /// order they joined (empty when the slot starts in the past).
    pub candidates: Vec<WaitlistCandidate>,
}

impl std::fmt::Debug for FreedClaim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FreedClaim")
            .field("slot", &self.slot)
            .field("candidates", &self.candidates.len())
            .finish()
    }
}

impl FreedClaim {
    /// Marks the slot handled, naming the reservation booked into it (if
    /// one was), and lets the claim go.
    ///
    /// # Errors
    /// The database failed; the slot stays unhandled.
    pub async fn finish(mut self, booked: Option<ReservationId>) -> Result<(), ProjectionError> {
        // Handled: the row is work done, so it goes (what was booked is in
        // the event store, under the attempt's idempotency key).
        sqlx::query("DELETE FROM read.waitlist_freed WHERE position = $1")
            .bind(self.slot.position)
            .execute(&mut *self.tx)
            .await?;
        self.tx.commit().await?;
        if booked.is_none() {
            debug!(position = self.slot.position, start = %self.slot.start,
                   "no waitlisted reservation took the freed slot");
        }
        Ok(())
    }
}

impl ReadModels {
    /// Claims the oldest freed slot no other matcher holds, if any, with
    /// its candidates. A slot handled meanwhile by a matcher that let its
    /// claim go is skipped.
    ///
    /// # Errors
    /// The database failed.
    pub async fn claim_freed_slot(
        &self,
        now: DateTime<Utc>,
    ) -> Result<Option<FreedClaim>, ProjectionError> {
        let mut tx = self.pool().begin().await?;
        if !read_table_exists(&mut *tx, FREED.def.name).await? {
            return Ok(None);
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
            return Ok(None);
        };
        let row = sqlx::query(
            "SELECT clinic_id, resource_id, start_at, handled FROM read.waitlist_freed
              WHERE position = $1",
        )
        .bind(position)
        .fetch_optional(&mut *tx)
        .await?;
        // Handled (and so deleted) meanwhile by another matcher.
        let Some(row) = row else {
            return Ok(None);
        };
        let slot = FreedSlot {
            position,
            clinic_id: ClinicId(row.try_get("clinic_id")?),
            resource_id: ResourceId(row.try_get("resource_id")?),
            start: row.try_get("start_at")?,
        };
        let handled: bool = row.try_get("handled")?;
        let mut candidates = Vec::new();
        if !handled && slot.start > now {
            // Not a reservation offered this very slot before. (A patient
            // with an open offer overlapping it is refused by the offer's
            // own unit of work, not filtered here from a lagging table.)
            let rows = sqlx::query(
                "SELECT reservation_id, patient_id, treatment_id, payment FROM read.waitlist_entries e
                  WHERE clinic_id = $1 AND earliest <= $2 AND latest >= $2
                    AND NOT EXISTS (SELECT 1 FROM read.waitlist_offers o
                                     WHERE o.reservation_id = e.reservation_id
                                       AND o.resource_id = $3 AND o.start_at = $2)
                  ORDER BY joined_position",
            )
            .bind(slot.clinic_id.0)
            .bind(slot.start)
            .bind(slot.resource_id.0)
            .fetch_all(&mut *tx)
            .await?;
            for row in rows {
                let reservation_id = ReservationId(row.try_get("reservation_id")?);
                let payment: serde_json::Value = row.try_get("payment")?;
                let payment = match serde_json::from_value::<PaymentMethod>(payment) {
                    Ok(payment) => payment,
                    Err(error) => {
                        // Written by this projection from a stored event, so
                        // unreadable only if the table is not ours: counted.
                        metrics::counter!("clinicbook_read_model_invalid_rows_total", "table" => "waitlist_entries")
                            .increment(1);
                        warn!(reservation = %reservation_id.0, %error, "unreadable waitlist payment; candidate skipped");
                        continue;
                    }
                };
                candidates.push(WaitlistCandidate {
                    reservation_id,
                    patient_id: PatientId(row.try_get("patient_id")?),
                    treatment_id: TreatmentId(row.try_get("treatment_id")?),
                    payment,
                });
            }
        }
        Ok(Some(FreedClaim {
            tx,
            slot,
            candidates,
        }))
    }

    /// How many freed slots wait for the matcher: zero once it has filled
    /// (or given up on) every slot the read side saw free.
    ///
    /// # Errors
    /// The database failed.
    pub async fn freed_slots_waiting(&self) -> Result<i64, ProjectionError> {
        if !read_table_exists(self.pool(), FREED.def.name).await? {
            return Ok(0);
        }
        Ok(
            sqlx::query_scalar("SELECT count(*) FROM read.waitlist_freed WHERE NOT handled")
                .fetch_one(self.pool())
                .await?,
        )
    }

    /// Deletes freed slots marked handled (by versions that kept them);
    /// answers how many.
    ///
    /// # Errors
    /// The database failed.
    pub async fn purge_handled(&self) -> Result<u64, ProjectionError> {
        if !read_table_exists(self.pool(), FREED.def.name).await? {
            return Ok(0);
        }
        Ok(sqlx::query("DELETE FROM read.waitlist_freed WHERE handled")
            .execute(self.pool())
            .await?
            .rows_affected())
    }
}
