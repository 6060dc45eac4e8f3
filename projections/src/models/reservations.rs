//! The `reservations` projection: every reservation (waitlist entries
//! included) with its current state and its status history — what
//! `GET /v1/reservations/{id}` answers — and the waitlist the matcher
//! reads (entries in status `waitlisted` with their wanted window, in the
//! order they joined).
//!
//! It reads only `Reservation` events: a reservation's stream holds all it
//! shows, as the aggregate-based view did.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use clinicbook_domain::policy::CancellationOutcome;
use clinicbook_domain::reservation::{
    PaymentKind, PaymentMethod, ReservationEvent, ReservationStatus, Slot,
};
use clinicbook_domain::AggregateKind;
use clinicbook_eventstore::FeedEvent;
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;
use uuid::Uuid;

use super::sql::{apply_fn, decode, row, uuid_id, Index, Table};
use crate::{Projection, ProjectionError};

/// The projection.
pub const PROJECTION: Projection = Projection {
    name: "reservations",
    tables: &[&RESERVATIONS.def, &HISTORY.def],
    ddl: "",
    kinds: &[AggregateKind::Reservation],
    apply: apply_fn!(apply_batch),
};

row! {
    /// A row of `reservations_reservations`: one reservation, waitlist
    /// entries included, in its current state.
    #[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
    pub(crate) struct Row {
        reservation_id: Uuid,
        status: ReservationStatus,
        patient_id: Option<Uuid>,
        clinic_id: Option<Uuid>,
        treatment_id: Option<Uuid>,
        resource_id: Option<Uuid>,
        starts_at: Option<DateTime<Utc>>,
        ends_at: Option<DateTime<Utc>>,
        earliest: Option<DateTime<Utc>>,
        latest: Option<DateTime<Utc>>,
        base_cents: Option<i64>,
        adjustments_cents: Option<i64>,
        discount_cents: Option<i64>,
        total_cents: Option<i64>,
        payment_method: Option<PaymentKind>,
        package_id: Option<Uuid>,
        promo_code: Option<String>,
        late: Option<bool>,
        refund_cents: Option<i64>,
        fee_cents: Option<i64>,
        session_restored: Option<bool>,
        waitlisted_position: Option<i64>,
        last_position: i64,
    }
}

/// `reservations_reservations`, with the waitlist of a clinic and
/// treatment (oldest first) and each patient's reservations indexed.
pub(crate) static RESERVATIONS: Table<Row> = Table::new(
    "reservations_reservations",
    &["reservation_id"],
    &[
        Index::on(
            "reservations_reservations_waitlist",
            "(clinic_id, treatment_id, waitlisted_position)",
        )
        .only(ReservationStatus::Waitlisted),
        Index::on("reservations_reservations_patient", "(patient_id)"),
    ],
);

row! {
    /// A row of `reservations_history`: a change of a reservation, the
    /// status after one of its events.
    #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
    pub(crate) struct HistoryRow {
        reservation_id: Uuid,
        sequence: i64,
        status: ReservationStatus,
        at: DateTime<Utc>,
        event_type: String,
        position: i64,
    }
}

pub(crate) static HISTORY: Table<HistoryRow> =
    Table::new("reservations_history", &["reservation_id", "sequence"], &[]);

/// The stored name of a payment method and its package.
pub(crate) fn payment_columns(payment: &PaymentMethod) -> (PaymentKind, Option<Uuid>) {
    let package = match payment {
        PaymentMethod::Package { package_id } => Some(package_id.0),
        PaymentMethod::Wallet | PaymentMethod::AtClinic => None,
    };
    (PaymentKind::from(payment), package)
}

impl Row {
    fn new(reservation_id: Uuid) -> Self {
        Self {
            reservation_id,
            status: ReservationStatus::New,
            ..Self::default()
        }
    }

    fn set_slot(&mut self, slot: &Slot) {
        self.resource_id = Some(slot.resource_id.0);
        self.starts_at = Some(slot.start);
        self.ends_at = Some(slot.end);
    }

    fn settle(&mut self, status: ReservationStatus, outcome: &CancellationOutcome) {
        self.status = status;
        self.late = Some(outcome.late);
        self.refund_cents = Some(outcome.refund.cents());
        self.fee_cents = Some(outcome.fee.cents());
        self.session_restored = Some(outcome.session_restored);
    }

    /// Applies `event` as the aggregate does; answers the time the event
    /// records for itself, if any.
    fn apply(&mut self, event: &ReservationEvent, position: i64) -> Option<DateTime<Utc>> {
        self.last_position = position;
        match event {
            ReservationEvent::ReservationBooked {
                patient_id,
                clinic_id,
                treatment_id,
                slot,
                price,
                payment,
                promo_code,
                booked_at,
                ..
            } => {
                self.status = ReservationStatus::Booked;
                self.patient_id = Some(patient_id.0);
                self.clinic_id = Some(clinic_id.0);
                self.treatment_id = Some(treatment_id.0);
                self.set_slot(slot);
                self.base_cents = Some(price.base.cents());
                self.adjustments_cents = Some(price.adjustments.cents());
                self.discount_cents = Some(price.discount.cents());
                self.total_cents = Some(price.total.cents());
                (self.payment_method, self.package_id) = {
                    let (method, package) = payment_columns(payment);
                    (Some(method), package)
                };
                self.promo_code = promo_code.as_ref().map(|code| code.as_str().to_owned());
                Some(*booked_at)
            }
            ReservationEvent::WaitlistJoined(entry) => {
                self.status = ReservationStatus::Waitlisted;
                self.patient_id = Some(entry.patient_id.0);
                self.clinic_id = Some(entry.clinic_id.0);
                self.treatment_id = Some(entry.treatment_id.0);
                self.earliest = Some(entry.earliest);
                self.latest = Some(entry.latest);
                (self.payment_method, self.package_id) = {
                    let (method, package) = payment_columns(&entry.payment);
                    (Some(method), package)
                };
                self.waitlisted_position = Some(position);
                None
            }
            ReservationEvent::ReservationRescheduled { to, .. } => {
                self.set_slot(to);
                None
            }
            ReservationEvent::ReminderDue { .. } => None,
            ReservationEvent::ReservationCancelled { outcome, at, .. } => {
                self.settle(ReservationStatus::Cancelled, outcome);
                Some(*at)
            }
            ReservationEvent::CheckedIn { at } => {
                self.status = ReservationStatus::CheckedIn;
                Some(*at)
            }
            ReservationEvent::ReservationCompleted { at } => {
                self.status = ReservationStatus::Completed;
                Some(*at)
            }
            ReservationEvent::MarkedNoShow { outcome, at } => {
                self.settle(ReservationStatus::NoShow, outcome);
                Some(*at)
            }
            ReservationEvent::ReservationDisplaced { outcome, at, .. } => {
                self.settle(ReservationStatus::Displaced, outcome);
                Some(*at)
            }
        }
    }
}

async fn apply_batch(conn: &mut PgConnection, events: &[FeedEvent]) -> Result<(), ProjectionError> {
    let mine: Vec<&FeedEvent> = events
        .iter()
        .filter(|event| event.kind() == Some(AggregateKind::Reservation))
        .collect();
    if mine.is_empty() {
        return Ok(());
    }
    let mut rows: HashMap<Uuid, Row> = RESERVATIONS
        .load_streams(conn, &mine, |row: &Row| row.reservation_id)
        .await?;
    let mut history = Vec::with_capacity(mine.len());
    for event in mine {
        let id = uuid_id(event)?;
        let change: ReservationEvent = decode(event)?;
        let row = rows.entry(id).or_insert_with(|| Row::new(id));
        let at = row
            .apply(&change, event.position)
            .unwrap_or(event.recorded_at);
        history.push(HistoryRow {
            reservation_id: id,
            sequence: event.sequence,
            status: row.status,
            at,
            event_type: event.event_type.clone(),
            position: event.position,
        });
    }
    RESERVATIONS.upsert_all(conn, rows).await?;
    HISTORY.insert_new(conn, &history).await?;
    Ok(())
}
