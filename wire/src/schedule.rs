//! The schedule and availability views: what the schedule projection
//! answers for a clinic's day and its free slots.

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// `GET /v1/clinics/{clinic_id}/schedule?date=`: a clinic's local day.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ScheduleDay {
    /// The clinic.
    pub clinic_id: Uuid,
    /// The clinic-local date.
    pub date: NaiveDate,
    /// The clinic's IANA timezone.
    pub timezone: String,
    /// Every resource of the clinic, in the order they were added.
    pub resources: Vec<ResourceDay>,
}

/// One resource's day.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ResourceDay {
    /// The resource.
    pub resource_id: Uuid,
    /// Its name.
    pub name: String,
    /// `room`, `device` or `practitioner`.
    pub kind: String,
    /// The appointments holding it that day, in start order (cancelled,
    /// rescheduled and displaced ones have left; a no-show stays).
    pub bookings: Vec<ScheduleBooking>,
    /// The slots holds take that day (not booked yet), in start order.
    pub holds: Vec<ScheduleHold>,
    /// Its blocks that day (a closure's carry the closure id), in start
    /// order.
    pub blocks: Vec<ScheduleBlock>,
}

/// A slot a hold takes on a resource's day (`POST /v1/holds`): nobody
/// else can book it until the hold is confirmed, released or expired.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ScheduleHold {
    /// The hold.
    pub hold_id: Uuid,
    /// Appointment start (UTC).
    pub start: DateTime<Utc>,
    /// Appointment end (UTC).
    pub end: DateTime<Utc>,
    /// End of the treatment's buffer: the resource is busy until then.
    pub occupied_until: DateTime<Utc>,
}

/// An appointment on a resource's day.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ScheduleBooking {
    /// The reservation.
    pub reservation_id: Uuid,
    /// The patient.
    pub patient_id: Uuid,
    /// The treatment.
    pub treatment_id: Uuid,
    /// Appointment start (UTC).
    pub start: DateTime<Utc>,
    /// Appointment end (UTC).
    pub end: DateTime<Utc>,
    /// End of the treatment's buffer: the resource is busy until then.
    pub occupied_until: DateTime<Utc>,
    /// `booked`, `checked_in`, `completed` or `no_show`.
    pub status: String,
}

/// A block on a resource's day.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ScheduleBlock {
    /// The block (the closure's id for a closure).
    pub block_id: Uuid,
    /// Start (UTC); a block over several days shows its part of this day.
    pub start: DateTime<Utc>,
    /// End (UTC, exclusive).
    pub end: DateTime<Utc>,
    /// Why.
    pub reason: String,
    /// An emergency block (it displaced what it overlapped).
    pub emergency: bool,
}

/// `GET /v1/clinics/{clinic_id}/availability?treatment_id=&date=`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Availability {
    /// The clinic.
    pub clinic_id: Uuid,
    /// The treatment.
    pub treatment_id: Uuid,
    /// The clinic-local date.
    pub date: NaiveDate,
    /// Free slots, by resource (in the order resources were added), then
    /// by start.
    pub slots: Vec<FreeSlot>,
}

/// A start time at which the treatment can be booked on a resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FreeSlot {
    /// The resource.
    pub resource_id: Uuid,
    /// Appointment start (UTC).
    pub start: DateTime<Utc>,
    /// Appointment end (UTC); the resource then stays busy for the
    /// treatment's buffer.
    pub end: DateTime<Utc>,
}
