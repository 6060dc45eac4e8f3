//! A clinic's day per resource and the free start times for a
//! treatment, from the `schedule` projection; and the clinic setup
//! (timezone, opening hours, closures) that the reports read from their
//! own copy the same way.

use std::collections::HashMap;

use chrono::{DateTime, Duration, NaiveDate, TimeDelta, Utc};
use chrono_tz::Tz;
use clinicbook_domain::clinic::{Clinic, Closure};
use clinicbook_domain::schedule::{Interval, TimeRange};
use clinicbook_domain::ClosureId;
use serde::{Deserialize, Serialize};
use sqlx::types::Json;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::models::schedule::{BlockRow, ReservationRow, SlotRow, TreatmentRow};
use crate::{ProjectionError, ReadModels};

/// Free start times are offered on this grid (minutes past the hour, in
/// UTC, which is the clinic's grid too for every timezone whose offset is
/// a multiple of 15 minutes), and at the start of each bookable interval.
pub const SLOT_STEP_MINUTES: i64 = 15;

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
    /// Its blocks that day (a closure's carry the closure id), in start
    /// order.
    pub blocks: Vec<ScheduleBlock>,
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

/// A clinic as a projection keeps it: name, timezone, opening hours and
/// closures, as a domain `Clinic` so the booking rules' own functions
/// (DST-aware opening intervals, closures cut out) answer.
#[derive(Debug, Clone)]
pub(crate) struct Setup {
    pub timezone: String,
    pub clinic: Clinic,
}

impl Setup {
    /// The clinic's timezone.
    pub fn tz(&self) -> Tz {
        self.clinic.timezone()
    }

    /// Minutes the clinic is open on `date`, closures cut out.
    pub fn open_minutes(&self, date: NaiveDate) -> i64 {
        self.clinic
            .bookable_intervals(date)
            .iter()
            .map(Interval::minutes)
            .sum()
    }

    /// The UTC instants the clinic-local `date` starts and ends at.
    pub fn day_bounds(&self, date: NaiveDate) -> (DateTime<Utc>, DateTime<Utc>) {
        let tz = self.tz();
        let start = |d: NaiveDate| {
            d.and_hms_opt(0, 0, 0)
                .and_then(|midnight| {
                    // A midnight in a DST gap starts the day at the gap's end.
                    (0..=180).step_by(15).find_map(|m| {
                        (midnight + Duration::minutes(m))
                            .and_local_timezone(tz)
                            .earliest()
                    })
                })
                .map(|at| at.with_timezone(&Utc))
                .unwrap_or_else(|| d.and_time(chrono::NaiveTime::MIN).and_utc())
        };
        let next = date.succ_opt().unwrap_or(date);
        (start(date), start(next))
    }
}

#[derive(Deserialize)]
struct ClinicRow {
    clinic_id: Uuid,
    timezone: String,
}

#[derive(Deserialize)]
struct HoursRow {
    clinic_id: Uuid,
    weekday: i16,
    opens: chrono::NaiveTime,
    closes: chrono::NaiveTime,
}

#[derive(Deserialize)]
struct ClosureRow {
    closure_id: Uuid,
    clinic_id: Uuid,
    starts_at: DateTime<Utc>,
    ends_at: DateTime<Utc>,
    reason: String,
}

/// Rows of `SELECT row_to_json(t) FROM {sql}` bound to `clinic_ids` (as
/// `$1`, a JSON array) — `None` for every clinic.
async fn rows<T>(
    conn: &mut PgConnection,
    sql: &str,
    clinic_ids: Option<&[Uuid]>,
) -> Result<Vec<T>, ProjectionError>
where
    T: serde::de::DeserializeOwned + Send + Unpin + 'static,
{
    let rows: Vec<Json<T>> = sqlx::query_scalar(sql)
        .bind(clinic_ids.map(Json))
        .fetch_all(&mut *conn)
        .await?;
    Ok(rows.into_iter().map(|Json(row)| row).collect())
}

/// The setup of `clinic_ids` (every clinic when `None`) from the tables
/// `{prefix}_clinics`, `{prefix}_opening_hours` and `{prefix}_closures`,
/// with the closures that overlap `[from, to)`.
pub(crate) async fn setups(
    conn: &mut PgConnection,
    prefix: &str,
    clinic_ids: Option<&[Uuid]>,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<HashMap<Uuid, Setup>, ProjectionError> {
    let filter = "($1::json IS NULL OR clinic_id IN
                   (SELECT value::uuid FROM json_array_elements_text($1::json)))";
    let clinics: Vec<ClinicRow> = rows(
        conn,
        &format!("SELECT row_to_json(t) FROM {prefix}_clinics t WHERE {filter}"),
        clinic_ids,
    )
    .await?;
    let hours: Vec<HoursRow> = rows(
        conn,
        &format!(
            "SELECT row_to_json(t) FROM {prefix}_opening_hours t WHERE {filter}
              ORDER BY clinic_id, weekday, range_no"
        ),
        clinic_ids,
    )
    .await?;
    let closures: Vec<ClosureRow> = {
        let sql = format!(
            "SELECT row_to_json(t) FROM {prefix}_closures t
              WHERE {filter} AND starts_at < $3 AND ends_at > $2 ORDER BY starts_at"
        );
        let rows: Vec<Json<ClosureRow>> = sqlx::query_scalar(&sql)
            .bind(clinic_ids.map(Json))
            .bind(from)
            .bind(to)
            .fetch_all(&mut *conn)
            .await?;
        rows.into_iter().map(|Json(row)| row).collect()
    };
    let mut setups: HashMap<Uuid, Setup> = clinics
        .into_iter()
        .map(|row| {
            let clinic = Clinic {
                timezone: Some(row.timezone.parse().unwrap_or(Tz::UTC)),
                ..Clinic::default()
            };
            (
                row.clinic_id,
                Setup {
                    timezone: row.timezone,
                    clinic,
                },
            )
        })
        .collect();
    for row in hours {
        if let Some(setup) = setups.get_mut(&row.clinic_id) {
            if let Some(day) = usize::try_from(row.weekday)
                .ok()
                .and_then(|day| setup.clinic.opening_hours.days.get_mut(day))
            {
                day.push(TimeRange {
                    from: row.opens,
                    to: row.closes,
                });
            }
        }
    }
    for row in closures {
        if let Some(setup) = setups.get_mut(&row.clinic_id) {
            setup.clinic.closures.push(Closure {
                closure_id: ClosureId(row.closure_id),
                start: row.starts_at,
                end: row.ends_at,
                reason: row.reason,
            });
        }
    }
    Ok(setups)
}

/// A generous UTC window around a local date (any offset is within a day).
pub(crate) fn window(from: NaiveDate, to: NaiveDate) -> (DateTime<Utc>, DateTime<Utc>) {
    let start = from.and_time(chrono::NaiveTime::MIN).and_utc() - TimeDelta::days(2);
    let end = to.and_time(chrono::NaiveTime::MIN).and_utc() + TimeDelta::days(3);
    (start, end)
}

#[derive(Deserialize)]
struct ResourceRow {
    resource_id: Uuid,
    name: String,
    kind: String,
}

impl ReadModels {
    /// One clinic's setup from the `schedule` tables.
    async fn schedule_setup(
        conn: &mut PgConnection,
        clinic_id: Uuid,
        date: NaiveDate,
    ) -> Result<Setup, ProjectionError> {
        let (from, to) = window(date, date);
        setups(conn, "schedule", Some(&[clinic_id]), from, to)
            .await?
            .remove(&clinic_id)
            .ok_or_else(|| ProjectionError::NotFound(format!("clinic {clinic_id}")))
    }

    /// The resources of a clinic (of one kind, if given), in the order
    /// they were added.
    async fn resources(
        conn: &mut PgConnection,
        clinic_id: Uuid,
        kind: Option<&str>,
    ) -> Result<Vec<ResourceRow>, ProjectionError> {
        let rows: Vec<Json<ResourceRow>> = sqlx::query_scalar(
            "SELECT row_to_json(t) FROM schedule_resources t
              WHERE clinic_id = $1 AND ($2::text IS NULL OR kind = $2)
              ORDER BY position",
        )
        .bind(clinic_id)
        .bind(kind)
        .fetch_all(&mut *conn)
        .await?;
        Ok(rows.into_iter().map(|Json(row)| row).collect())
    }

    /// The slots and blocks on the calendars of `resources` on `date`.
    async fn calendars(
        conn: &mut PgConnection,
        resources: &[Uuid],
        date: NaiveDate,
    ) -> Result<(Vec<SlotRow>, Vec<BlockRow>), ProjectionError> {
        let slots: Vec<Json<SlotRow>> = sqlx::query_scalar(
            "SELECT row_to_json(t) FROM schedule_slots t
              WHERE resource_id = ANY($1) AND local_date = $2 ORDER BY starts_at, reservation_id",
        )
        .bind(resources)
        .bind(date)
        .fetch_all(&mut *conn)
        .await?;
        let blocks: Vec<Json<BlockRow>> = sqlx::query_scalar(
            "SELECT row_to_json(t) FROM schedule_blocks t
              WHERE resource_id = ANY($1) AND local_date = $2 ORDER BY starts_at, block_id",
        )
        .bind(resources)
        .bind(date)
        .fetch_all(&mut *conn)
        .await?;
        Ok((
            slots.into_iter().map(|Json(row)| row).collect(),
            blocks.into_iter().map(|Json(row)| row).collect(),
        ))
    }

    /// A clinic's local day per resource: the appointments holding each
    /// resource (with patient, treatment and status) and its blocks.
    ///
    /// # Errors
    /// [`ProjectionError::NotFound`] for a clinic the projection does not
    /// know; the database failed.
    pub async fn schedule(
        &self,
        clinic_id: Uuid,
        date: NaiveDate,
    ) -> Result<ScheduleDay, ProjectionError> {
        let mut conn = self.read_connection().await?;
        let setup = Self::schedule_setup(&mut conn, clinic_id, date).await?;
        let resources = Self::resources(&mut conn, clinic_id, None).await?;
        let ids: Vec<Uuid> = resources.iter().map(|r| r.resource_id).collect();
        let (slots, blocks) = Self::calendars(&mut conn, &ids, date).await?;
        let reservation_ids: Vec<Uuid> = slots.iter().map(|s| s.reservation_id).collect();
        let reservations: HashMap<Uuid, ReservationRow> = crate::models::schedule::RESERVATIONS
            .load::<ReservationRow, _>(&mut conn, "reservation_id", &reservation_ids)
            .await?
            .into_iter()
            .map(|row| (row.reservation_id, row))
            .collect();
        let resources = resources
            .into_iter()
            .map(|resource| ResourceDay {
                bookings: slots
                    .iter()
                    .filter(|slot| slot.resource_id == resource.resource_id)
                    .filter_map(|slot| {
                        let reservation = reservations.get(&slot.reservation_id)?;
                        Some(ScheduleBooking {
                            reservation_id: slot.reservation_id,
                            patient_id: reservation.patient_id,
                            treatment_id: reservation.treatment_id,
                            start: slot.starts_at,
                            end: slot.ends_at,
                            occupied_until: slot.occupied_until,
                            status: reservation.status.clone(),
                        })
                    })
                    .collect(),
                blocks: blocks
                    .iter()
                    .filter(|block| block.resource_id == resource.resource_id)
                    .map(|block| ScheduleBlock {
                        block_id: block.block_id,
                        start: block.starts_at,
                        end: block.ends_at,
                        reason: block.reason.clone(),
                        emergency: block.emergency,
                    })
                    .collect(),
                resource_id: resource.resource_id,
                name: resource.name,
                kind: resource.kind,
            })
            .collect();
        Ok(ScheduleDay {
            clinic_id,
            date,
            timezone: setup.timezone,
            resources,
        })
    }

    /// The start times on `date` (clinic-local) at which `treatment_id`
    /// can be booked, per resource of the treatment's kind, by the rules
    /// the write side checks: the appointment lies inside the clinic's
    /// opening hours of that day (DST-aware, closures cut out), starts
    /// after `now`, and its busy time (the treatment's buffer included)
    /// overlaps no booking's busy time and no block on that resource's
    /// calendar. Starts are offered every [`SLOT_STEP_MINUTES`] and at
    /// the start of each opening interval.
    ///
    /// # Errors
    /// [`ProjectionError::NotFound`] for a clinic, or a treatment of that
    /// clinic, the projection does not know; the database failed.
    pub async fn availability(
        &self,
        clinic_id: Uuid,
        treatment_id: Uuid,
        date: NaiveDate,
        now: DateTime<Utc>,
    ) -> Result<Availability, ProjectionError> {
        let mut conn = self.read_connection().await?;
        let setup = Self::schedule_setup(&mut conn, clinic_id, date).await?;
        let treatment: Option<Json<TreatmentRow>> = sqlx::query_scalar(
            "SELECT row_to_json(t) FROM schedule_treatments t
              WHERE clinic_id = $1 AND treatment_id = $2",
        )
        .bind(clinic_id)
        .bind(treatment_id)
        .fetch_optional(&mut *conn)
        .await?;
        let Some(Json(treatment)) = treatment else {
            return Err(ProjectionError::NotFound(format!(
                "treatment {treatment_id} at clinic {clinic_id}"
            )));
        };
        let resources =
            Self::resources(&mut conn, clinic_id, Some(&treatment.resource_kind)).await?;
        let ids: Vec<Uuid> = resources.iter().map(|r| r.resource_id).collect();
        let (slots, blocks) = Self::calendars(&mut conn, &ids, date).await?;
        let duration = Duration::minutes(i64::from(treatment.duration_minutes));
        let busy_for = duration + Duration::minutes(i64::from(treatment.buffer_minutes));
        let opening = setup.clinic.bookable_intervals(date);
        let mut free = Vec::new();
        for resource in &resources {
            let taken: Vec<Interval> = slots
                .iter()
                .filter(|slot| slot.resource_id == resource.resource_id)
                .map(|slot| Interval {
                    start: slot.starts_at,
                    end: slot.occupied_until,
                })
                .chain(
                    blocks
                        .iter()
                        .filter(|block| block.resource_id == resource.resource_id)
                        .map(|block| Interval {
                            start: block.starts_at,
                            end: block.ends_at,
                        }),
                )
                .collect();
            for open in &opening {
                for start in starts(open) {
                    let appointment = Interval {
                        start,
                        end: start + duration,
                    };
                    let busy = Interval {
                        start,
                        end: start + busy_for,
                    };
                    if start > now
                        && open.contains(&appointment)
                        && !taken.iter().any(|t| t.overlaps(&busy))
                    {
                        free.push(FreeSlot {
                            resource_id: resource.resource_id,
                            start,
                            end: appointment.end,
                        });
                    }
                }
            }
        }
        Ok(Availability {
            clinic_id,
            treatment_id,
            date,
            slots: free,
        })
    }
}

/// Candidate starts inside `open`: its start, then every grid point.
fn starts(open: &Interval) -> Vec<DateTime<Utc>> {
    let step = SLOT_STEP_MINUTES * 60;
    let first = open.start.timestamp();
    let mut next = first - first.rem_euclid(step) + step;
    let mut starts = vec![open.start];
    while next < open.end.timestamp() {
        if let Some(at) = DateTime::from_timestamp(next, 0) {
            starts.push(at);
        }
        next += step;
    }
    starts
}
