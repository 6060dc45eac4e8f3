//! A clinic's day per resource and the free start times for a
//! treatment, from the `schedule` projection; and the clinic setup
//! (timezone, opening hours, closures) that the reports read from their
//! own copy the same way.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;

use chrono::{DateTime, Duration, NaiveDate, TimeDelta, Utc};
use chrono_tz::Tz;
use clinicbook_domain::clinic::{Clinic, Closure, ResourceKind};
use clinicbook_domain::schedule::{Interval, TimeRange};
use clinicbook_domain::ClosureId;
use clinicbook_eventstore::FeedPoint;
use serde::Serialize;
use sqlx::types::Json;
use sqlx::PgConnection;
use uuid::Uuid;

pub use clinicbook_wire::schedule::{
    Availability, FreeSlot, ResourceDay, ScheduleBlock, ScheduleBooking, ScheduleDay, ScheduleHold,
};

use crate::cache::{AvailabilityKey, Computed};
use crate::models::schedule::{
    BlockRow, HoldRow, ReservationRow, ResourceRow, SetupTables, SlotRow, TreatmentRow, BLOCKS,
    HOLDS, PROJECTION, RESERVATIONS, RESOURCES, SETUP, SLOTS, TREATMENTS,
};
use crate::models::sql::{json_rows, Table};
use crate::{ProjectionError, ReadModels};

/// Free start times are offered on this grid (minutes past the hour, in
/// UTC, which is the clinic's grid too for every timezone whose offset is
/// a multiple of 15 minutes), and at the start of each bookable interval.
pub const SLOT_STEP_MINUTES: i64 = 15;

/// A clinic as a projection keeps it: timezone, opening hours and
/// closures, as a domain `Clinic` so the booking rules' own functions
/// (DST-aware opening intervals, closures cut out) answer.
#[derive(Debug, Clone)]
pub(crate) struct Setup {
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

/// Rows of `table` whose `clinic_id` is one of `clinic_ids` (every row
/// when `None`), then `more` SQL (further conditions and the order), with
/// `$2` and `$3` bound to the ends of `during` when given.
async fn clinic_rows<R>(
    conn: &mut PgConnection,
    table: &Table<R>,
    clinic_ids: Option<&[Uuid]>,
    more: &str,
    during: Option<(DateTime<Utc>, DateTime<Utc>)>,
) -> Result<Vec<R>, ProjectionError>
where
    R: serde::de::DeserializeOwned + Serialize + Send + Sync + Unpin + 'static,
{
    let sql = format!(
        "SELECT row_to_json(t) FROM {} t
          WHERE ($1::json IS NULL OR clinic_id IN
                 (SELECT value::uuid FROM json_array_elements_text($1::json))) {more}",
        table.def.name
    );
    let query = sqlx::query_scalar(&sql).bind(clinic_ids.map(Json));
    let query = match during {
        Some((from, to)) => query.bind(from).bind(to),
        None => query,
    };
    json_rows(query, conn, table.def.name).await
}

/// The rows of the calendar table `table` (slots, holds or blocks) on the
/// calendars of `resources` on `date`, in start order, ties by `id_column`.
async fn calendar_rows<R>(
    conn: &mut PgConnection,
    table: &Table<R>,
    id_column: &str,
    resources: &[Uuid],
    date: NaiveDate,
) -> Result<Vec<R>, ProjectionError>
where
    R: serde::de::DeserializeOwned + Serialize + Send + Sync + Unpin + 'static,
{
    let sql = format!(
        "SELECT row_to_json(t) FROM {} t
          WHERE resource_id = ANY($1) AND local_date = $2 ORDER BY starts_at, {id_column}",
        table.def.name
    );
    let query = sqlx::query_scalar(&sql).bind(resources).bind(date);
    json_rows(query, conn, table.def.name).await
}

/// A row of a resource's calendar on a day: a slot, a hold or a block.
trait OnCalendar {
    /// The resource whose calendar it is on.
    fn resource_id(&self) -> Uuid;
    /// The time it keeps the resource busy (a booking's and a hold's
    /// buffer included).
    fn busy(&self) -> Interval;
}

/// [`OnCalendar`] for a row type: its resource and the column its busy
/// time ends at.
macro_rules! on_calendar {
    ($row:ty, $busy_until:ident) => {
        impl OnCalendar for $row {
            fn resource_id(&self) -> Uuid {
                self.resource_id
            }

            fn busy(&self) -> Interval {
                Interval {
                    start: self.starts_at,
                    end: self.$busy_until,
                }
            }
        }
    };
}

on_calendar!(SlotRow, occupied_until);
on_calendar!(HoldRow, occupied_until);
on_calendar!(BlockRow, ends_at);

/// The rows of `rows` on `resource`'s calendar.
fn on<R: OnCalendar>(rows: &[R], resource: Uuid) -> impl Iterator<Item = &R> {
    rows.iter().filter(move |row| row.resource_id() == resource)
}

impl From<&HoldRow> for ScheduleHold {
    fn from(hold: &HoldRow) -> Self {
        ScheduleHold {
            hold_id: hold.hold_id,
            start: hold.starts_at,
            end: hold.ends_at,
            occupied_until: hold.occupied_until,
        }
    }
}

impl From<&BlockRow> for ScheduleBlock {
    fn from(block: &BlockRow) -> Self {
        ScheduleBlock {
            block_id: block.block_id,
            start: block.starts_at,
            end: block.ends_at,
            reason: block.reason.clone(),
            emergency: block.emergency,
        }
    }
}

/// The setup of `clinic_ids` (every clinic when `None`) from one
/// projection's copy of it, with the closures that overlap `[from, to)`.
pub(crate) async fn setups(
    conn: &mut PgConnection,
    tables: &SetupTables,
    clinic_ids: Option<&[Uuid]>,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<HashMap<Uuid, Setup>, ProjectionError> {
    let clinics = clinic_rows(conn, tables.clinics, clinic_ids, "", None).await?;
    let hours = clinic_rows(
        conn,
        tables.hours,
        clinic_ids,
        "ORDER BY clinic_id, weekday, range_no",
        None,
    )
    .await?;
    let closures = clinic_rows(
        conn,
        tables.closures,
        clinic_ids,
        "AND starts_at < $3 AND ends_at > $2 ORDER BY starts_at",
        Some((from, to)),
    )
    .await?;
    let mut setups: HashMap<Uuid, Setup> = clinics
        .into_iter()
        .map(|row| {
            let clinic = Clinic {
                timezone: Some(row.timezone),
                ..Clinic::default()
            };
            (row.clinic_id, Setup { clinic })
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

impl ReadModels {
    /// One clinic's setup from the `schedule` tables.
    async fn schedule_setup(
        conn: &mut PgConnection,
        clinic_id: Uuid,
        date: NaiveDate,
    ) -> Result<Setup, ProjectionError> {
        let (from, to) = window(date, date);
        setups(conn, &SETUP, Some(&[clinic_id]), from, to)
            .await?
            .remove(&clinic_id)
            .ok_or_else(|| ProjectionError::NotFound(format!("clinic {clinic_id}")))
    }

    /// The resources of a clinic (of one kind, if given), in the order
    /// they were added.
    async fn resources(
        conn: &mut PgConnection,
        clinic_id: Uuid,
        kind: Option<ResourceKind>,
    ) -> Result<Vec<ResourceRow>, ProjectionError> {
        let query = sqlx::query_scalar(
            "SELECT row_to_json(t) FROM schedule_resources t
              WHERE clinic_id = $1 AND ($2::text IS NULL OR kind = $2)
              ORDER BY position",
        )
        .bind(clinic_id)
        .bind(kind.map(ResourceKind::as_str));
        json_rows(query, conn, RESOURCES.def.name).await
    }

    /// The slots, holds and blocks on the calendars of `resources` on `date`.
    async fn calendars(
        conn: &mut PgConnection,
        resources: &[Uuid],
        date: NaiveDate,
    ) -> Result<(Vec<SlotRow>, Vec<HoldRow>, Vec<BlockRow>), ProjectionError> {
        let slots = calendar_rows(conn, &SLOTS, "reservation_id", resources, date).await?;
        let blocks = calendar_rows(conn, &BLOCKS, "block_id", resources, date).await?;
        let holds = calendar_rows(conn, &HOLDS, "hold_id", resources, date).await?;
        Ok((slots, holds, blocks))
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
        let (slots, holds, blocks) = Self::calendars(&mut conn, &ids, date).await?;
        let reservation_ids: Vec<Uuid> = slots.iter().map(|s| s.reservation_id).collect();
        let reservations: HashMap<Uuid, ReservationRow> = RESERVATIONS
            .load_by(&mut conn, &reservation_ids, |row: &ReservationRow| {
                row.reservation_id
            })
            .await?;
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
                            status: reservation.status.as_str().to_owned(),
                        })
                    })
                    .collect(),
                holds: on(&holds, resource.resource_id)
                    .map(ScheduleHold::from)
                    .collect(),
                blocks: on(&blocks, resource.resource_id)
                    .map(ScheduleBlock::from)
                    .collect(),
                resource_id: resource.resource_id,
                name: resource.name,
                kind: resource.kind.as_str().to_owned(),
            })
            .collect();
        Ok(ScheduleDay {
            clinic_id,
            date,
            timezone: setup.tz().name().to_owned(),
            resources,
        })
    }

    /// The start times on `date` (clinic-local) at which `treatment_id`
    /// can be booked, per resource of the treatment's kind, by the rules
    /// the write side checks: the appointment lies inside the clinic's
    /// opening hours of that day (DST-aware, closures cut out), starts
    /// after `now`, and its busy time (the treatment's buffer included)
    /// overlaps no booking's or hold's busy time and no block on that resource's
    /// calendar. Starts are offered every [`SLOT_STEP_MINUTES`] and at
    /// the start of each opening interval.
    ///
    /// Answered from the availability cache ([`crate::cache`]) while
    /// nothing the answer depends on has changed.
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
        let (key, computed) = self.available(clinic_id, treatment_id, date).await?;
        Ok(computed.answer(key, now))
    }

    /// [`ReadModels::availability`] as its JSON, rendered once per cached
    /// answer (and per `now` that leaves out other slots).
    ///
    /// # Errors
    /// As [`ReadModels::availability`].
    pub async fn availability_json(
        &self,
        clinic_id: Uuid,
        treatment_id: Uuid,
        date: NaiveDate,
        now: DateTime<Utc>,
    ) -> Result<Bytes, ProjectionError> {
        let (key, computed) = self.available(clinic_id, treatment_id, date).await?;
        computed
            .json(key, now)
            .map_err(|e| ProjectionError::InvalidRow {
                table: SLOTS.def.name,
                reason: format!("its availability answer does not render: {e}"),
            })
    }

    /// The free slots of `treatment_id` on `date`, from the cache when it
    /// holds them and they are still good, else computed (and kept).
    async fn available(
        &self,
        clinic_id: Uuid,
        treatment_id: Uuid,
        date: NaiveDate,
    ) -> Result<(AvailabilityKey, Arc<Computed>), ProjectionError> {
        let key = AvailabilityKey {
            clinic_id,
            treatment_id,
            date,
        };
        let live = self.checkpoint(PROJECTION.name).await?.point;
        if let Some(computed) = self.availability_cache().get(&key, live).await {
            return Ok((key, computed));
        }
        let mut conn = self.read_connection().await?;
        let computed = Arc::new(Self::compute_availability(&mut conn, key).await?);
        self.availability_cache().put(key, computed.clone()).await;
        Ok((key, computed))
    }

    /// Every free slot of `key`'s treatment on its day, whatever the time,
    /// with the checkpoint of the snapshot they were read in.
    async fn compute_availability(
        conn: &mut PgConnection,
        key: AvailabilityKey,
    ) -> Result<Computed, ProjectionError> {
        let AvailabilityKey {
            clinic_id,
            treatment_id,
            date,
        } = key;
        let at = snapshot_point(conn).await?;
        let setup = Self::schedule_setup(conn, clinic_id, date).await?;
        let query = sqlx::query_scalar(
            "SELECT row_to_json(t) FROM schedule_treatments t
              WHERE clinic_id = $1 AND treatment_id = $2",
        )
        .bind(clinic_id)
        .bind(treatment_id);
        let treatment: Option<TreatmentRow> = json_rows(query, conn, TREATMENTS.def.name)
            .await?
            .into_iter()
            .next();
        let Some(treatment) = treatment else {
            return Err(ProjectionError::NotFound(format!(
                "treatment {treatment_id} at clinic {clinic_id}"
            )));
        };
        let resources = Self::resources(conn, clinic_id, Some(treatment.resource_kind)).await?;
        let ids: Vec<Uuid> = resources.iter().map(|r| r.resource_id).collect();
        let (slots, holds, blocks) = Self::calendars(conn, &ids, date).await?;
        let duration = Duration::minutes(i64::from(treatment.duration_minutes));
        let busy_for = duration + Duration::minutes(i64::from(treatment.buffer_minutes));
        let opening = setup.clinic.bookable_intervals(date);
        let mut free = Vec::new();
        for resource in &resources {
            let id = resource.resource_id;
            let taken: Vec<Interval> = on(&slots, id)
                .map(OnCalendar::busy)
                .chain(on(&holds, id).map(OnCalendar::busy))
                .chain(on(&blocks, id).map(OnCalendar::busy))
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
                    // Starts at or before `now` are cut when answering.
                    if open.contains(&appointment) && !taken.iter().any(|t| t.overlaps(&busy)) {
                        free.push(FreeSlot {
                            resource_id: resource.resource_id,
                            start,
                            end: appointment.end,
                        });
                    }
                }
            }
        }
        Ok(Computed::new(at, ids, free))
    }
}

/// The `schedule` checkpoint as the caller's snapshot sees it.
async fn snapshot_point(conn: &mut PgConnection) -> Result<FeedPoint, ProjectionError> {
    let row: Option<(i64, i64)> =
        sqlx::query_as("SELECT transaction_id, position FROM checkpoints WHERE projection = $1")
            .bind(PROJECTION.name)
            .fetch_optional(conn)
            .await?;
    Ok(
        row.map_or(FeedPoint::START, |(transaction_id, position)| FeedPoint {
            transaction_id,
            position,
        }),
    )
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
