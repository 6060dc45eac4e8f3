//! The `schedule` projection: each clinic's setup as the booking rules
//! need it (timezone, opening hours, resources, treatments with duration,
//! buffer and resource kind, closures) and each resource's calendar per
//! clinic-local day (the slots bookings hold, buffer included, the slots
//! holds take, and the blocks), with the reservation behind each slot and
//! its status.
//!
//! It answers a clinic's day and the free start times for a treatment.
//! Slots and blocks come from `Calendar` events, so they are exactly what
//! the write side checks a booking against (a cancelled, rescheduled or
//! displaced booking leaves its calendar; a no-show keeps its slot); the
//! reservation's patient, treatment and status come from `Reservation`
//! events. Instants here are kept to the microsecond.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, NaiveDate, NaiveTime, Utc};
use chrono_tz::Tz;
use clinicbook_domain::calendar::{Booking, CalendarEvent};
use clinicbook_domain::clinic::ClinicEvent;
use clinicbook_domain::clinic::{ResourceKind, Treatment};
use clinicbook_domain::reservation::{ReservationEvent, ReservationStatus};
use clinicbook_domain::schedule::Weekday;
use clinicbook_domain::AggregateKind;
use clinicbook_domain::CalendarId;
use clinicbook_eventstore::FeedEvent;
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;
use uuid::Uuid;

use super::sql::{self, apply_fn, decode, row, uuid_id, Index, Table};
use crate::{Projection, ProjectionError};

/// The projection.
pub const PROJECTION: Projection = Projection {
    name: "schedule",
    tables: &[
        &CLINICS.def,
        &OPENING_HOURS.def,
        &RESOURCES.def,
        &TREATMENTS.def,
        &CLOSURES.def,
        &SLOTS.def,
        &HOLDS.def,
        &BLOCKS.def,
        &RESERVATIONS.def,
    ],
    ddl: "",
    kinds: &[
        AggregateKind::Clinic,
        AggregateKind::Calendar,
        AggregateKind::Reservation,
    ],
    apply: apply_fn!(apply_batch),
};

row! {
    /// A row of `schedule_clinics`: a clinic's name and IANA timezone
    /// (opening hours and dates are in it).
    #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
    pub(crate) struct ClinicRow {
        clinic_id: Uuid,
        name: String,
        timezone: Tz,
    }
}

pub(crate) static CLINICS: Table<ClinicRow> = Table::new("schedule_clinics", &["clinic_id"], &[]);

row! {
    /// A row of `schedule_opening_hours`: one range of a clinic's weekly
    /// opening hours in clinic-local time; weekday 0 is Monday.
    #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
    pub(crate) struct HoursRow {
        clinic_id: Uuid,
        weekday: i16,
        range_no: i16,
        opens: NaiveTime,
        closes: NaiveTime,
    }
}

pub(crate) static OPENING_HOURS: Table<HoursRow> = Table::new(
    "schedule_opening_hours",
    &["clinic_id", "weekday", "range_no"],
    &[],
);

row! {
    /// A row of `schedule_resources`: a resource of a clinic; position
    /// orders them as they were added.
    #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
    pub(crate) struct ResourceRow {
        resource_id: Uuid,
        clinic_id: Uuid,
        name: String,
        kind: ResourceKind,
        position: i64,
    }
}

pub(crate) static RESOURCES: Table<ResourceRow> = Table::new(
    "schedule_resources",
    &["resource_id"],
    &[Index::on(
        "schedule_resources_clinic",
        "(clinic_id, position)",
    )],
);

row! {
    /// A row of `schedule_treatments`: a treatment of a clinic (one
    /// treatment id may be offered by several).
    #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
    pub(crate) struct TreatmentRow {
        clinic_id: Uuid,
        treatment_id: Uuid,
        name: String,
        duration_minutes: i32,
        buffer_minutes: i32,
        price_cents: i64,
        resource_kind: ResourceKind,
    }
}

pub(crate) static TREATMENTS: Table<TreatmentRow> =
    Table::new("schedule_treatments", &["clinic_id", "treatment_id"], &[]);

row! {
    /// A row of `schedule_closures`: a closure of a whole clinic,
    /// `[starts_at, ends_at)`.
    #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
    pub(crate) struct ClosureRow {
        closure_id: Uuid,
        clinic_id: Uuid,
        starts_at: DateTime<Utc>,
        ends_at: DateTime<Utc>,
        reason: String,
    }
}

pub(crate) static CLOSURES: Table<ClosureRow> = Table::new(
    "schedule_closures",
    &["closure_id"],
    &[Index::on(
        "schedule_closures_clinic",
        "(clinic_id, starts_at)",
    )],
);

row! {
    /// A row of `schedule_slots`: a slot held on a resource's calendar (one
    /// per clinic-local day), the appointment `[starts_at, ends_at)`, busy
    /// until `occupied_until`.
    #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
    pub(crate) struct SlotRow {
        resource_id: Uuid,
        local_date: NaiveDate,
        reservation_id: Uuid,
        starts_at: DateTime<Utc>,
        ends_at: DateTime<Utc>,
        occupied_until: DateTime<Utc>,
    }
}

pub(crate) static SLOTS: Table<SlotRow> = Table::new(
    "schedule_slots",
    &["resource_id", "local_date", "reservation_id"],
    &[],
);

row! {
    /// A row of `schedule_holds`: a slot a hold takes on a resource's
    /// calendar until it is booked, released or expired, busy until
    /// `occupied_until` as a booking would be.
    #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
    pub(crate) struct HoldRow {
        resource_id: Uuid,
        local_date: NaiveDate,
        hold_id: Uuid,
        starts_at: DateTime<Utc>,
        ends_at: DateTime<Utc>,
        occupied_until: DateTime<Utc>,
    }
}

pub(crate) static HOLDS: Table<HoldRow> = Table::new(
    "schedule_holds",
    &["resource_id", "local_date", "hold_id"],
    &[],
);

row! {
    /// A row of `schedule_blocks`: a block on a resource's calendar (a
    /// closure's blocks carry the closure id).
    #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
    pub(crate) struct BlockRow {
        resource_id: Uuid,
        local_date: NaiveDate,
        block_id: Uuid,
        starts_at: DateTime<Utc>,
        ends_at: DateTime<Utc>,
        reason: String,
        emergency: bool,
    }
}

pub(crate) static BLOCKS: Table<BlockRow> = Table::new(
    "schedule_blocks",
    &["resource_id", "local_date", "block_id"],
    &[],
);

row! {
    /// A row of `schedule_reservations`: who and what a booked
    /// reservation is for, and its status.
    #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
    pub(crate) struct ReservationRow {
        reservation_id: Uuid,
        clinic_id: Uuid,
        patient_id: Uuid,
        treatment_id: Uuid,
        status: ReservationStatus,
    }
}

pub(crate) static RESERVATIONS: Table<ReservationRow> =
    Table::new("schedule_reservations", &["reservation_id"], &[]);

/// The key of a slot, for deletes.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
struct SlotKey {
    resource_id: Uuid,
    local_date: NaiveDate,
    reservation_id: Uuid,
}

/// The key of a held slot, for deletes.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
struct HoldKey {
    resource_id: Uuid,
    local_date: NaiveDate,
    hold_id: Uuid,
}

/// The tables of a clinic's setup that both `schedule` and `reports`
/// keep, each projection its own copy (see the module docs of `models`):
/// the rows are the same, so one function applies clinic events to both.
pub(crate) struct SetupTables {
    /// Name and timezone.
    pub clinics: &'static Table<ClinicRow>,
    /// Weekly opening hours.
    pub hours: &'static Table<HoursRow>,
    /// Resources.
    pub resources: &'static Table<ResourceRow>,
    /// Closures.
    pub closures: &'static Table<ClosureRow>,
}

/// The schedule's copy of the clinics' setup.
pub(crate) static SETUP: SetupTables = SetupTables {
    clinics: &CLINICS,
    hours: &OPENING_HOURS,
    resources: &RESOURCES,
    closures: &CLOSURES,
};

impl SetupTables {
    /// Applies one clinic event (clinic events are rare: one statement
    /// each). A treatment added is answered, with its clinic, for the
    /// projection to keep as it needs.
    ///
    /// # Errors
    /// The event does not decode, its timezone is unknown, or the
    /// database failed.
    pub(crate) async fn apply(
        &self,
        conn: &mut PgConnection,
        event: &FeedEvent,
    ) -> Result<Option<(Uuid, Treatment)>, ProjectionError> {
        let clinic_id = uuid_id(event)?;
        match decode::<ClinicEvent>(event)? {
            ClinicEvent::ClinicRegistered { name, timezone, .. } => {
                let row = ClinicRow {
                    clinic_id,
                    name,
                    timezone: sql::timezone(event, &timezone)?,
                };
                self.clinics.upsert(conn, &[row]).await?;
            }
            ClinicEvent::OpeningHoursSet { hours } => {
                self.hours.delete_where(conn, clinic_id).await?;
                self.hours
                    .upsert(conn, &hours_rows(clinic_id, &hours))
                    .await?;
            }
            ClinicEvent::ResourceAdded { resource } => {
                let row = ResourceRow {
                    resource_id: resource.resource_id.0,
                    clinic_id,
                    name: resource.name,
                    kind: resource.kind,
                    position: event.position,
                };
                self.resources.upsert(conn, &[row]).await?;
            }
            ClinicEvent::TreatmentAdded { treatment } => return Ok(Some((clinic_id, treatment))),
            ClinicEvent::ClosureAdded { closure } => {
                let row = ClosureRow {
                    closure_id: closure.closure_id.0,
                    clinic_id,
                    starts_at: closure.start,
                    ends_at: closure.end,
                    reason: closure.reason,
                };
                self.closures.upsert(conn, &[row]).await?;
            }
            ClinicEvent::PricingRulesSet { .. } | ClinicEvent::SettingsChanged { .. } => {}
        }
        Ok(None)
    }
}

/// Applies one clinic event.
async fn apply_clinic(conn: &mut PgConnection, event: &FeedEvent) -> Result<(), ProjectionError> {
    if let Some((clinic_id, treatment)) = SETUP.apply(conn, event).await? {
        let row = TreatmentRow {
            clinic_id,
            treatment_id: treatment.treatment_id.0,
            name: treatment.name,
            duration_minutes: i32::try_from(treatment.duration_minutes).unwrap_or(i32::MAX),
            buffer_minutes: i32::try_from(treatment.buffer_minutes).unwrap_or(i32::MAX),
            price_cents: treatment.price.cents(),
            resource_kind: treatment.resource_kind,
        };
        TREATMENTS.upsert(conn, &[row]).await?;
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
    holds: BTreeMap<HoldKey, Option<HoldRow>>,
    blocks: Vec<BlockRow>,
}

impl Calendars {
    fn apply(&mut self, event: &FeedEvent) -> Result<(), ProjectionError> {
        let calendar: CalendarId = event
            .aggregate_id
            .parse()
            .map_err(|e| sql::invalid(event, e))?;
        let key = |reservation_id: Uuid| SlotKey {
            resource_id: calendar.resource_id.0,
            local_date: calendar.date,
            reservation_id,
        };
        let hold_key = |hold_id: Uuid| HoldKey {
            resource_id: calendar.resource_id.0,
            local_date: calendar.date,
            hold_id,
        };
        match decode::<CalendarEvent>(event)? {
            CalendarEvent::SlotReserved { booking, .. } => self.book(calendar, &booking),
            CalendarEvent::SlotReleased { reservation_id } => {
                self.slots.insert(key(reservation_id.0), None);
            }
            CalendarEvent::SlotHeld { hold, .. } => {
                let row = HoldRow {
                    resource_id: calendar.resource_id.0,
                    local_date: calendar.date,
                    hold_id: hold.hold_id.0,
                    starts_at: hold.start,
                    ends_at: hold.end,
                    occupied_until: hold.occupied_until,
                };
                self.holds.insert(hold_key(hold.hold_id.0), Some(row));
            }
            CalendarEvent::HeldSlotReleased { hold_id } => {
                self.holds.insert(hold_key(hold_id.0), None);
            }
            CalendarEvent::HeldSlotBooked { hold_id, booking } => {
                self.holds.insert(hold_key(hold_id.0), None);
                self.book(calendar, &booking);
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

    /// The slot `booking` holds on `calendar` from now on.
    fn book(&mut self, calendar: CalendarId, booking: &Booking) {
        let row = SlotRow {
            resource_id: calendar.resource_id.0,
            local_date: calendar.date,
            reservation_id: booking.reservation_id.0,
            starts_at: booking.start,
            ends_at: booking.end,
            occupied_until: booking.occupied_until,
        };
        let key = SlotKey {
            resource_id: row.resource_id,
            local_date: row.local_date,
            reservation_id: row.reservation_id,
        };
        self.slots.insert(key, Some(row));
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
        let mut gone = Vec::new();
        let mut holds = Vec::new();
        for (key, hold) in self.holds {
            match hold {
                Some(row) => holds.push(row),
                None => gone.push(key),
            }
        }
        HOLDS.delete(conn, &gone).await?;
        HOLDS.upsert(conn, &holds).await?;
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
    let mut rows: HashMap<Uuid, ReservationRow> = RESERVATIONS
        .load_streams(conn, events, |row: &ReservationRow| row.reservation_id)
        .await?;
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
                        status: ReservationStatus::Booked,
                    },
                );
                continue;
            }
            // Waitlist entries hold no slot; rescheduling keeps the status.
            ReservationEvent::WaitlistJoined { .. }
            | ReservationEvent::ReservationRescheduled { .. }
            | ReservationEvent::ReminderDue { .. } => continue,
            ReservationEvent::ReservationCancelled { .. } => ReservationStatus::Cancelled,
            ReservationEvent::CheckedIn { .. } => ReservationStatus::CheckedIn,
            ReservationEvent::ReservationCompleted { .. } => ReservationStatus::Completed,
            ReservationEvent::MarkedNoShow { .. } => ReservationStatus::NoShow,
            ReservationEvent::ReservationDisplaced { .. } => ReservationStatus::Displaced,
        };
        if let Some(row) = rows.get_mut(&id) {
            row.status = status;
        }
    }
    RESERVATIONS.upsert_all(conn, rows).await
}

async fn apply_batch(conn: &mut PgConnection, events: &[FeedEvent]) -> Result<(), ProjectionError> {
    let mut calendars = Calendars::default();
    let mut reservations = Vec::new();
    for event in events {
        match event.kind() {
            Some(AggregateKind::Clinic) => apply_clinic(conn, event).await?,
            Some(AggregateKind::Calendar) => calendars.apply(event)?,
            Some(AggregateKind::Reservation) => reservations.push(event),
            _ => {}
        }
    }
    calendars.write(conn).await?;
    apply_reservations(conn, &reservations).await?;
    Ok(())
}
