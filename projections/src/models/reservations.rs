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
use clinicbook_domain::reservation::{PaymentMethod, ReservationEvent, ReservationStatus, Slot};
use clinicbook_eventstore::FeedEvent;
use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;
use uuid::Uuid;

use super::sql::{decode, split, split_opt, uuid_id, Table};
use crate::{Projection, ProjectionError};

/// The projection.
pub const PROJECTION: Projection = Projection {
    name: "reservations",
    ddl: DDL,
    apply,
};

const DDL: &str = r"
-- One row per reservation, waitlist entries included: its current state.
-- Instants are kept to the microsecond; the *_ns columns hold the
-- nanoseconds below it, so answers give instants exactly as recorded.
CREATE TABLE IF NOT EXISTS reservations_reservations (
    reservation_id      uuid PRIMARY KEY,
    status              text NOT NULL,
    patient_id          uuid,
    clinic_id           uuid,
    treatment_id        uuid,
    resource_id         uuid,
    starts_at           timestamptz,
    starts_ns           smallint,
    ends_at             timestamptz,
    ends_ns             smallint,
    earliest            timestamptz,
    earliest_ns         smallint,
    latest              timestamptz,
    latest_ns           smallint,
    base_cents          bigint,
    adjustments_cents   bigint,
    discount_cents      bigint,
    total_cents         bigint,
    payment_method      text,
    package_id          uuid,
    promo_code          text,
    late                boolean,
    refund_cents        bigint,
    fee_cents           bigint,
    session_restored    boolean,
    waitlisted_position bigint,
    last_position       bigint NOT NULL
);
-- The waitlist of a clinic and treatment, oldest first.
CREATE INDEX IF NOT EXISTS reservations_reservations_waitlist
    ON reservations_reservations (clinic_id, treatment_id, waitlisted_position)
    WHERE status = 'waitlisted';
CREATE INDEX IF NOT EXISTS reservations_reservations_patient
    ON reservations_reservations (patient_id);

-- Every change of a reservation: the status after each of its events.
CREATE TABLE IF NOT EXISTS reservations_history (
    reservation_id uuid   NOT NULL,
    sequence       bigint NOT NULL,
    status         text   NOT NULL,
    at             timestamptz NOT NULL,
    at_ns          smallint NOT NULL,
    event_type     text   NOT NULL,
    position       bigint NOT NULL,
    PRIMARY KEY (reservation_id, sequence)
);
";

pub(crate) static RESERVATIONS: Table = Table {
    name: "reservations_reservations",
    key: &["reservation_id"],
    columns: &[
        ("reservation_id", "uuid"),
        ("status", "text"),
        ("patient_id", "uuid"),
        ("clinic_id", "uuid"),
        ("treatment_id", "uuid"),
        ("resource_id", "uuid"),
        ("starts_at", "timestamptz"),
        ("starts_ns", "smallint"),
        ("ends_at", "timestamptz"),
        ("ends_ns", "smallint"),
        ("earliest", "timestamptz"),
        ("earliest_ns", "smallint"),
        ("latest", "timestamptz"),
        ("latest_ns", "smallint"),
        ("base_cents", "bigint"),
        ("adjustments_cents", "bigint"),
        ("discount_cents", "bigint"),
        ("total_cents", "bigint"),
        ("payment_method", "text"),
        ("package_id", "uuid"),
        ("promo_code", "text"),
        ("late", "boolean"),
        ("refund_cents", "bigint"),
        ("fee_cents", "bigint"),
        ("session_restored", "boolean"),
        ("waitlisted_position", "bigint"),
        ("last_position", "bigint"),
    ],
};

pub(crate) static HISTORY: Table = Table {
    name: "reservations_history",
    key: &["reservation_id", "sequence"],
    columns: &[
        ("reservation_id", "uuid"),
        ("sequence", "bigint"),
        ("status", "text"),
        ("at", "timestamptz"),
        ("at_ns", "smallint"),
        ("event_type", "text"),
        ("position", "bigint"),
    ],
};

/// A row of `reservations_reservations`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct Row {
    pub reservation_id: Uuid,
    pub status: String,
    pub patient_id: Option<Uuid>,
    pub clinic_id: Option<Uuid>,
    pub treatment_id: Option<Uuid>,
    pub resource_id: Option<Uuid>,
    pub starts_at: Option<DateTime<Utc>>,
    pub starts_ns: Option<i16>,
    pub ends_at: Option<DateTime<Utc>>,
    pub ends_ns: Option<i16>,
    pub earliest: Option<DateTime<Utc>>,
    pub earliest_ns: Option<i16>,
    pub latest: Option<DateTime<Utc>>,
    pub latest_ns: Option<i16>,
    pub base_cents: Option<i64>,
    pub adjustments_cents: Option<i64>,
    pub discount_cents: Option<i64>,
    pub total_cents: Option<i64>,
    pub payment_method: Option<String>,
    pub package_id: Option<Uuid>,
    pub promo_code: Option<String>,
    pub late: Option<bool>,
    pub refund_cents: Option<i64>,
    pub fee_cents: Option<i64>,
    pub session_restored: Option<bool>,
    pub waitlisted_position: Option<i64>,
    pub last_position: i64,
}

/// A row of `reservations_history`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct HistoryRow {
    pub reservation_id: Uuid,
    pub sequence: i64,
    pub status: String,
    pub at: DateTime<Utc>,
    pub at_ns: i16,
    pub event_type: String,
    pub position: i64,
}

/// The stored name of a payment method (`package`, `wallet`, `at_clinic`)
/// and its package.
pub(crate) fn payment_columns(payment: &PaymentMethod) -> (String, Option<Uuid>) {
    match payment {
        PaymentMethod::Package { package_id } => ("package".to_owned(), Some(package_id.0)),
        PaymentMethod::Wallet => ("wallet".to_owned(), None),
        PaymentMethod::AtClinic => ("at_clinic".to_owned(), None),
    }
}

impl Row {
    fn new(reservation_id: Uuid) -> Self {
        Self {
            reservation_id,
            status: ReservationStatus::New.as_str().to_owned(),
            ..Self::default()
        }
    }

    fn set_slot(&mut self, slot: &Slot) {
        self.resource_id = Some(slot.resource_id.0);
        (self.starts_at, self.starts_ns) = split_opt(Some(slot.start));
        (self.ends_at, self.ends_ns) = split_opt(Some(slot.end));
    }

    fn settle(&mut self, status: ReservationStatus, outcome: &CancellationOutcome) {
        self.status = status.as_str().to_owned();
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
                self.status = ReservationStatus::Booked.as_str().to_owned();
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
            ReservationEvent::WaitlistJoined {
                patient_id,
                clinic_id,
                treatment_id,
                earliest,
                latest,
                payment,
                ..
            } => {
                self.status = ReservationStatus::Waitlisted.as_str().to_owned();
                self.patient_id = Some(patient_id.0);
                self.clinic_id = Some(clinic_id.0);
                self.treatment_id = Some(treatment_id.0);
                (self.earliest, self.earliest_ns) = split_opt(Some(*earliest));
                (self.latest, self.latest_ns) = split_opt(Some(*latest));
                (self.payment_method, self.package_id) = {
                    let (method, package) = payment_columns(payment);
                    (Some(method), package)
                };
                self.waitlisted_position = Some(position);
                None
            }
            ReservationEvent::ReservationRescheduled { to, .. } => {
                self.set_slot(to);
                None
            }
            ReservationEvent::ReservationCancelled { outcome, at, .. } => {
                self.settle(ReservationStatus::Cancelled, outcome);
                Some(*at)
            }
            ReservationEvent::CheckedIn { at } => {
                self.status = ReservationStatus::CheckedIn.as_str().to_owned();
                Some(*at)
            }
            ReservationEvent::ReservationCompleted { at } => {
                self.status = ReservationStatus::Completed.as_str().to_owned();
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

fn apply<'a>(
    conn: &'a mut PgConnection,
    events: &'a [FeedEvent],
) -> BoxFuture<'a, Result<(), ProjectionError>> {
    Box::pin(apply_batch(conn, events))
}

async fn apply_batch(conn: &mut PgConnection, events: &[FeedEvent]) -> Result<(), ProjectionError> {
    let mine: Vec<&FeedEvent> = events
        .iter()
        .filter(|event| event.aggregate_type == "Reservation")
        .collect();
    if mine.is_empty() {
        return Ok(());
    }
    let mut ids = Vec::new();
    for event in &mine {
        ids.push(uuid_id(event)?);
    }
    ids.sort_unstable();
    ids.dedup();
    let mut rows: HashMap<Uuid, Row> = RESERVATIONS
        .load::<Row, _>(conn, "reservation_id", &ids)
        .await?
        .into_iter()
        .map(|row| (row.reservation_id, row))
        .collect();
    let mut history = Vec::with_capacity(mine.len());
    for event in mine {
        let id = uuid_id(event)?;
        let change: ReservationEvent = decode(event)?;
        let row = rows.entry(id).or_insert_with(|| Row::new(id));
        let at = row
            .apply(&change, event.position)
            .unwrap_or(event.recorded_at);
        let (at, at_ns) = split(at);
        history.push(HistoryRow {
            reservation_id: id,
            sequence: event.sequence,
            status: row.status.clone(),
            at,
            at_ns,
            event_type: event.event_type.clone(),
            position: event.position,
        });
    }
    let mut rows: Vec<Row> = rows.into_values().collect();
    rows.sort_by_key(|row| row.reservation_id);
    RESERVATIONS.upsert(conn, &rows).await?;
    HISTORY.insert_new(conn, &history).await?;
    Ok(())
}
