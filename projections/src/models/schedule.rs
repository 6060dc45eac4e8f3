//! The `schedule` projection: each clinic's setup as the booking rules
//! need it (timezone, opening hours, resources, treatments with duration,
//! buffer and resource kind, closures) and each resource's calendar per
//! clinic-local day (the slots bookings hold, buffer included, and the
//! blocks), with the reservation behind each slot and its status.
//!
//! It answers a clinic's day and the free start times for a treatment.
//! Slots and blocks come from `Calendar` events, so they are exactly what
//! the write side checks a booking against (a cancelled, rescheduled or
//! displaced booking leaves its calendar; a no-show keeps its slot); the
//! reservation's patient, treatment and status come from `Reservation`
//! events. Instants here are kept to the microsecond.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, NaiveDate, NaiveTime, Utc};
use clinicbook_domain::calendar::CalendarEvent;
use clinicbook_domain::clinic::ClinicEvent;
use clinicbook_domain::reservation::{ReservationEvent, ReservationStatus};
use clinicbook_domain::schedule::Weekday;
use clinicbook_domain::CalendarId;
use clinicbook_eventstore::FeedEvent;
use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;
use uuid::Uuid;

use super::sql::{decode, uuid_id, Table};
use crate::{Projection, ProjectionError};

/// The projection.
pub const PROJECTION: Projection = Projection {
    name: "schedule",
    ddl: DDL,
    apply,
};

const DDL: &str = r"
-- Clinics: name and IANA timezone (opening hours and dates are in it).
CREATE TABLE IF NOT EXISTS schedule_clinics (
    clinic_id uuid PRIMARY KEY,
    name      text NOT NULL,
    timezone  text NOT NULL
);

-- Weekly opening hours in clinic-local time; weekday 0 is Monday.
CREATE TABLE IF NOT EXISTS schedule_opening_hours (
    clinic_id uuid     NOT NULL,
    weekday   smallint NOT NULL,
    range_no  smallint NOT NULL,
    opens     time     NOT NULL,
    closes    time     NOT NULL,
    PRIMARY KEY (clinic_id, weekday, range_no)
);

-- Resources of each clinic; position orders them as they were added.
CREATE TABLE IF NOT EXISTS schedule_resources (
    resource_id uuid PRIMARY KEY,
    clinic_id   uuid   NOT NULL,
    name        text   NOT NULL,
    kind        text   NOT NULL,
    position    bigint NOT NULL
);
CREATE INDEX IF NOT EXISTS schedule_resources_clinic ON schedule_resources (clinic_id, position);

-- Treatments of each clinic (one treatment id may be offered by several).
CREATE TABLE IF NOT EXISTS schedule_treatments (
    clinic_id        uuid    NOT NULL,
    treatment_id     uuid    NOT NULL,
    name             text    NOT NULL,
    duration_minutes integer NOT NULL,
    buffer_minutes   integer NOT NULL,
    price_cents      bigint  NOT NULL,
    resource_kind    text    NOT NULL,
    PRIMARY KEY (clinic_id, treatment_id)
);

-- Closures of whole clinics, [starts_at, ends_at).
CREATE TABLE IF NOT EXISTS schedule_closures (
    closure_id uuid PRIMARY KEY,
    clinic_id  uuid NOT NULL,
    starts_at  timestamptz NOT NULL,
    ends_at    timestamptz NOT NULL,
    reason     text NOT NULL
);
CREATE INDEX IF NOT EXISTS schedule_closures_clinic ON schedule_closures (clinic_id, starts_at);

-- The slots held on each resource's calendar (one per clinic-local day):
-- the appointment [starts_at, ends_at), busy until occupied_until.
CREATE TABLE IF NOT EXISTS schedule_slots (
    resource_id    uuid NOT NULL,
    local_date     date NOT NULL,
    reservation_id uuid NOT NULL,
    starts_at      timestamptz NOT NULL,
    ends_at        timestamptz NOT NULL,
    occupied_until timestamptz NOT NULL,
    PRIMARY KEY (resource_id, local_date, reservation_id)
);

-- The blocks on each resource's calendar (a closure's blocks carry the
-- closure id).
CREATE TABLE IF NOT EXISTS schedule_blocks (
    resource_id uuid    NOT NULL,
    local_date  date    NOT NULL,
    block_id    uuid    NOT NULL,
    starts_at   timestamptz NOT NULL,
    ends_at     timestamptz NOT NULL,
    reason      text    NOT NULL,
    emergency   boolean NOT NULL,
    PRIMARY KEY (resource_id, local_date, block_id)
);

-- Who and what each booked reservation is for, and its status.
CREATE TABLE IF NOT EXISTS schedule_reservations (
    reservation_id uuid PRIMARY KEY,
    clinic_id      uuid NOT NULL,
    patient_id     uuid NOT NULL,
    treatment_id   uuid NOT NULL,
    status         text NOT NULL
);
";

pub(crate) static CLINICS: Table = Table {
    name: "schedule_clinics",
    key: &["clinic_id"],
    columns: &[
        ("clinic_id", "uuid"),
        ("name", "text"),
        ("timezone", "text"),
    ],
};

pub(crate) static RESOURCES: Table = Table {
    name: "schedule_resources",
    key: &["resource_id"],
    columns: &[
        ("resource_id", "uuid"),
        ("clinic_id", "uuid"),
        ("name", "text"),
        ("kind", "text"),
        ("position", "bigint"),
    ],
};

pub(crate) static TREATMENTS: Table = Table {
    name: "schedule_treatments",
    key: &["clinic_id", "treatment_id"],
    columns: &[
        ("clinic_id", "uuid"),
        ("treatment_id", "uuid"),
        ("name", "text"),
        ("duration_minutes", "integer"),
        ("buffer_minutes", "integer"),
        ("price_cents", "bigint"),
        ("resource_kind", "text"),
    ],
};

pub(crate) static CLOSURES: Table = Table {
    name: "schedule_closures",
    key: &["closure_id"],
    columns: &[
        ("closure_id", "uuid"),
        ("clinic_id", "uuid"),
        ("starts_at", "timestamptz"),
        ("ends_at", "timestamptz"),
        ("reason", "text"),
    ],
};

pub(crate) static OPENING_HOURS: Table = Table {
    name: "schedule_opening_hours",
    key: &["clinic_id", "weekday", "range_no"],
    columns: &[
        ("clinic_id", "uuid"),
        ("weekday", "smallint"),
        ("range_no", "smallint"),
        ("opens", "time"),
        ("closes", "time"),
    ],
};

pub(crate) static SLOTS: Table = Table {
    name: "schedule_slots",
    key: &["resource_id", "local_date", "reservation_id"],
    columns: &[
        ("resource_id", "uuid"),
        ("local_date", "date"),
        ("reservation_id", "uuid"),
        ("starts_at", "timestamptz"),
        ("ends_at", "timestamptz"),
        ("occupied_until", "timestamptz"),
    ],
};

pub(crate) static BLOCKS: Table = Table {
    name: "schedule_blocks",
    key: &["resource_id", "local_date", "block_id"],
    columns: &[
        ("resource_id", "uuid"),
        ("local_date", "date"),
        ("block_id", "uuid"),
        ("starts_at", "timestamptz"),
        ("ends_at", "timestamptz"),
        ("reason", "text"),
        ("emergency", "boolean"),
    ],
};

pub(crate) static RESERVATIONS: Table = Table {
    name: "schedule_reservations",
    key: &["reservation_id"],
    columns: &[
        ("reservation_id", "uuid"),
        ("clinic_id", "uuid"),
        ("patient_id", "uuid"),
        ("treatment_id", "uuid"),
        ("status", "text"),
    ],
};

/// A row of `schedule_clinics`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct ClinicRow {
    pub clinic_id: Uuid,
    pub name: String,
    pub timezone: String,
}

/// A row of `schedule_resources`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct ResourceRow {
    pub resource_id: Uuid,
    pub clinic_id: Uuid,
    pub name: String,
    pub kind: String,
    pub position: i64,
}

/// A row of `schedule_treatments`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct TreatmentRow {
    pub clinic_id: Uuid,
    pub treatment_id: Uuid,
    pub name: String,
    pub duration_minutes: i32,
    pub buffer_minutes: i32,
    pub price_cents: i64,
    pub resource_kind: String,
}

/// A row of `schedule_closures`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct ClosureRow {
    pub closure_id: Uuid,
    pub clinic_id: Uuid,
    pub starts_at: DateTime<Utc>,
    pub ends_at: DateTime<Utc>,
    pub reason: String,
}

/// A row of `schedule_opening_hours`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct HoursRow {
    pub clinic_id: Uuid,
    pub weekday: i16,
    pub range_no: i16,
    pub opens: NaiveTime,
    pub closes: NaiveTime,
}

/// A row of `schedule_slots`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct SlotRow {
    pub resource_id: Uuid,
    pub local_date: NaiveDate,
    pub reservation_id: Uuid,
    pub starts_at: DateTime<Utc>,
    pub ends_at: DateTime<Utc>,
    pub occupied_until: DateTime<Utc>,
}

/// The key of a slot, for deletes.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
struct SlotKey {
    resource_id: Uuid,
    local_date: NaiveDate,
    reservation_id: Uuid,
}

/// A row of `schedule_blocks`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct BlockRow {
    pub resource_id: Uuid,
    pub local_date: NaiveDate,
    pub block_id: Uuid,
    pub starts_at: DateTime<Utc>,
    pub ends_at: DateTime<Utc>,
    pub reason: String,
    pub emergency: bool,
}

/// A row of `schedule_reservations`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct ReservationRow {
    pub reservation_id: Uuid,
    pub clinic_id: Uuid,
    pub patient_id: Uuid,
    pub treatment_id: Uuid,
    pub status: String,
}

/// The stored (and API) name of a resource kind.
pub(crate) fn kind_name(kind: clinicbook_domain::clinic::ResourceKind) -> &'static str {
    use clinicbook_domain::clinic::ResourceKind;
    match kind {
        ResourceKind::Room => "room",
        ResourceKind::Device => "device",
        ResourceKind::Practitioner => "practitioner",
    }
}

/// Applies one clinic event (clinic events are rare: one statement each).
async fn apply_clinic(conn: &mut PgConnection, event: &FeedEvent) -> Result<(), ProjectionError> {
    let clinic_id = uuid_id(event)?;
    match decode::<ClinicEvent>(event)? {
        ClinicEvent::ClinicRegistered { name, timezone, .. } => {
            let row = ClinicRow {
                clinic_id,
                name,
                timezone,
            };
            CLINICS.upsert(conn, &[row]).await?;
        }
        ClinicEvent::OpeningHoursSet { hours } => {
            sqlx::query("DELETE FROM schedule_opening_hours WHERE clinic_id = $1")
                .bind(clinic_id)
                .execute(&mut *conn)
                .await?;
            OPENING_HOURS
                .upsert(conn, &hours_rows(clinic_id, &hours))
                .await?;
        }
        ClinicEvent::ResourceAdded { resource } => {
            let row = ResourceRow {
                resource_id: resource.resource_id.0,
                clinic_id,
                name: resource.name,
                kind: kind_name(resource.kind).to_owned(),
                position: event.position,
            };
            RESOURCES.upsert(conn, &[row]).await?;
        }
        ClinicEvent::TreatmentAdded { treatment } => {
            let row = TreatmentRow {
                clinic_id,
                treatment_id: treatment.treatment_id.0,
                name: treatment.name,
                duration_minutes: i32::try_from(treatment.duration_minutes).unwrap_or(i32::MAX),
                buffer_minutes: i32::try_from(treatment.buffer_minutes).unwrap_or(i32::MAX),
                price_cents: treatment.price.cents(),
                resource_kind: kind_name(treatment.resource_kind).to_owned(),
            };
            TREATMENTS.upsert(conn, &[row]).await?;
        }
        ClinicEvent::ClosureAdded { closure } => {
            let row = ClosureRow {
                closure_id: closure.closure_id.0,
                clinic_id,
                starts_at: closure.start,
                ends_at: closure.end,
                reason: closure.reason,
            };
            CLOSURES.upsert(conn, &[row]).await?;
        }
        ClinicEvent::PricingRulesSet { .. } => {}
    }
    Ok(())
}

/// Opening hours as rows, one per local range.
pub(crate) fn hours_rows(
    clinic_id: Uuid,
    hours: &clinicbook_domain::schedule::OpeningHours,
) -> Vec<HoursRow> {
    let mut rows = Vec::new();
    for day in Weekday::ALL {
        for (no, range) in hours.ranges(day).iter().enumerate() {
            rows.push(HoursRow {
                clinic_id,
                weekday: i16::try_from(day.index()).unwrap_or(0),
                range_no: i16::try_from(no).unwrap_or(i16::MAX),
                opens: range.from,
                closes: range.to,
            });
        }
    }
    rows
}

/// What a batch does to calendars: for each slot key, the slot it holds
/// at the end of the batch (`None`: released or displaced); and the
/// blocks added.
#[derive(Default)]
struct Calendars {
    slots: BTreeMap<SlotKey, Option<SlotRow>>,
    blocks: Vec<BlockRow>,
}

impl Calendars {
    fn apply(&mut self, event: &FeedEvent) -> Result<(), ProjectionError> {
        let calendar: CalendarId = event
            .aggregate_id
            .parse()
            .map_err(|e| ProjectionError::decode(event, e))?;
        let key = |reservation_id: Uuid| SlotKey {
            resource_id: calendar.resource_id.0,
            local_date: calendar.date,
            reservation_id,
        };
        match decode::<CalendarEvent>(event)? {
            CalendarEvent::SlotReserved { booking, .. } => {
                let row = SlotRow {
                    resource_id: calendar.resource_id.0,
                    local_date: calendar.date,
                    reservation_id: booking.reservation_id.0,
                    starts_at: booking.start,
                    ends_at: booking.end,
                    occupied_until: booking.occupied_until,
                };
                self.slots.insert(key(booking.reservation_id.0), Some(row));
            }
            CalendarEvent::SlotReleased { reservation_id } => {
                self.slots.insert(key(reservation_id.0), None);
            }
            CalendarEvent::BlockAdded {
                block, displaced, ..
            } => {
                for reservation_id in displaced {
                    self.slots.insert(key(reservation_id.0), None);
                }
                self.blocks.push(BlockRow {
                    resource_id: calendar.resource_id.0,
                    local_date: calendar.date,
                    block_id: block.block_id.0,
                    starts_at: block.start,
                    ends_at: block.end,
                    reason: block.reason,
                    emergency: block.emergency,
                });
            }
        }
        Ok(())
    }

    async fn write(self, conn: &mut PgConnection) -> Result<(), ProjectionError> {
        let mut gone = Vec::new();
        let mut held = Vec::new();
        for (key, slot) in self.slots {
            match slot {
                Some(row) => held.push(row),
                None => gone.push(key),
            }
        }
        SLOTS.delete(conn, &gone).await?;
        SLOTS.upsert(conn, &held).await?;
        BLOCKS.upsert(conn, &self.blocks).await?;
        Ok(())
    }
}

/// Status and identity of the booked reservations a batch touches.
async fn apply_reservations(
    conn: &mut PgConnection,
    events: &[&FeedEvent],
) -> Result<(), ProjectionError> {
    if events.is_empty() {
        return Ok(());
    }
    let mut ids = Vec::new();
    for event in events {
        ids.push(uuid_id(event)?);
    }
    ids.sort_unstable();
    ids.dedup();
    let mut rows: HashMap<Uuid, ReservationRow> = RESERVATIONS
        .load::<ReservationRow, _>(conn, "reservation_id", &ids)
        .await?
        .into_iter()
        .map(|row| (row.reservation_id, row))
        .collect();
    for event in events {
        let id = uuid_id(event)?;
        let status = match decode::<ReservationEvent>(event)? {
            ReservationEvent::ReservationBooked {
                clinic_id,
                patient_id,
                treatment_id,
                ..
            } => {
                rows.insert(
                    id,
                    ReservationRow {
                        reservation_id: id,
                        clinic_id: clinic_id.0,
                        patient_id: patient_id.0,
                        treatment_id: treatment_id.0,
                        status: ReservationStatus::Booked.as_str().to_owned(),
                    },
                );
                continue;
            }
            // Waitlist entries hold no slot; rescheduling keeps the status.
            ReservationEvent::WaitlistJoined { .. }
            | ReservationEvent::ReservationRescheduled { .. } => continue,
            ReservationEvent::ReservationCancelled { .. } => ReservationStatus::Cancelled,
            ReservationEvent::CheckedIn { .. } => ReservationStatus::CheckedIn,
            ReservationEvent::ReservationCompleted { .. } => ReservationStatus::Completed,
            ReservationEvent::MarkedNoShow { .. } => ReservationStatus::NoShow,
            ReservationEvent::ReservationDisplaced { .. } => ReservationStatus::Displaced,
        };
        if let Some(row) = rows.get_mut(&id) {
            row.status = status.as_str().to_owned();
        }
    }
    let mut rows: Vec<ReservationRow> = rows.into_values().collect();
    rows.sort_by_key(|row| row.reservation_id);
    RESERVATIONS.upsert(conn, &rows).await
}

fn apply<'a>(
    conn: &'a mut PgConnection,
    events: &'a [FeedEvent],
) -> BoxFuture<'a, Result<(), ProjectionError>> {
    Box::pin(apply_batch(conn, events))
}

async fn apply_batch(conn: &mut PgConnection, events: &[FeedEvent]) -> Result<(), ProjectionError> {
    let mut calendars = Calendars::default();
    let mut reservations = Vec::new();
    for event in events {
        match event.aggregate_type.as_str() {
            "Clinic" => apply_clinic(conn, event).await?,
            "Calendar" => calendars.apply(event)?,
            "Reservation" => reservations.push(event),
            _ => {}
        }
    }
    calendars.write(conn).await?;
    apply_reservations(conn, &reservations).await?;
    Ok(())
}
