//! Analysts' reports and the manager's dashboard, from the `reports`
//! projection: revenue by day, clinic, treatment or program;
//! reservations by status with cancellation and no-show rates; package
//! sales and session use; utilisation per resource and day; promo code
//! use; and one clinic's day at a glance.
//!
//! Dates are clinic-local and both ends of a range are inclusive;
//! reservations are selected by the local date of their appointment,
//! package sales by their local purchase date. A range may span at most
//! [`MAX_RANGE_DAYS`] days. Rates and percentages are rounded (rates to
//! four decimals, percentages to one). Utilisation counts as open the
//! opening hours with closures cut out (blocks of single resources do not
//! reduce it) and as booked the appointments holding their slot (booked,
//! checked in, completed, no-show), without buffers.

use std::collections::HashMap;

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;
use uuid::Uuid;

use super::csv::ToCsv;
use super::schedule::{setups, window, Setup};
use crate::models::reports::{RESERVATIONS, RESOURCES, SETUP};
use crate::models::schedule::ResourceRow;
use crate::models::sql::{invalid_row, json_rows};
use crate::{ProjectionError, ReadModels};
use clinicbook_domain::hold::HoldStatus;
use clinicbook_domain::reservation::ReservationStatus;
use strum::{IntoEnumIterator, VariantNames};

/// The longest range a report covers, in days (both ends included).
pub const MAX_RANGE_DAYS: i64 = 366;

/// Statuses in which an appointment holds its resource.
const HOLDING: [ReservationStatus; 4] = [
    ReservationStatus::Booked,
    ReservationStatus::CheckedIn,
    ReservationStatus::Completed,
    ReservationStatus::NoShow,
];

/// The names of `statuses`, to bind as a `text[]`.
fn names_of(statuses: &[ReservationStatus]) -> Vec<&'static str> {
    statuses.iter().map(|status| status.as_str()).collect()
}

/// A status column's text as its status.
///
/// # Errors
/// An [`invalid_row`] of `table` for a name no status has.
fn status_of(table: &'static str, name: &str) -> Result<ReservationStatus, ProjectionError> {
    name.parse()
        .map_err(|_| invalid_row(table, format!("{name:?} is not a reservation status")))
}

impl StatusCounts {
    /// Counts one reservation in `status` (statuses without a count, `new`
    /// and, for days, `waitlisted`, are counted elsewhere or not at all).
    fn add(&mut self, status: ReservationStatus, n: i64) {
        match status {
            ReservationStatus::Booked => self.booked += n,
            ReservationStatus::CheckedIn => self.checked_in += n,
            ReservationStatus::Completed => self.completed += n,
            ReservationStatus::Cancelled => self.cancelled += n,
            ReservationStatus::NoShow => self.no_show += n,
            ReservationStatus::Displaced => self.displaced += n,
            ReservationStatus::New | ReservationStatus::Waitlisted => {}
        }
    }
}

/// A checked range of clinic-local dates, both ends included.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DateRange {
    from: NaiveDate,
    to: NaiveDate,
}

impl DateRange {
    /// `from` to `to`, both included.
    ///
    /// # Errors
    /// [`ProjectionError::Inconsistent`] (`to`) when `to` is before `from` or
    /// the range spans more than [`MAX_RANGE_DAYS`] days.
    pub fn new(from: NaiveDate, to: NaiveDate) -> Result<Self, ProjectionError> {
        if to < from {
            return Err(ProjectionError::Inconsistent {
                field: "to",
                reason: format!("{to} is before from ({from})"),
            });
        }
        if (to - from).num_days() >= MAX_RANGE_DAYS {
            return Err(ProjectionError::Inconsistent {
                field: "to",
                reason: format!("a report spans at most {MAX_RANGE_DAYS} days"),
            });
        }
        Ok(Self { from, to })
    }

    /// The first date.
    #[must_use]
    pub fn from(&self) -> NaiveDate {
        self.from
    }

    /// The last date (included).
    #[must_use]
    pub fn to(&self) -> NaiveDate {
        self.to
    }

    fn days(&self) -> impl Iterator<Item = NaiveDate> + '_ {
        self.from.iter_days().take_while(move |day| *day <= self.to)
    }
}

/// What revenue is grouped by.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Serialize,
    Deserialize,
    strum::EnumIter,
    strum::IntoStaticStr,
    strum::VariantNames,
)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum RevenueGrouping {
    /// The appointment's clinic-local date (`YYYY-MM-DD`).
    Day,
    /// The clinic (its id).
    Clinic,
    /// The treatment (its id).
    Treatment,
    /// The program of the package that paid (its id), `none` when no
    /// package paid.
    Program,
}

impl std::str::FromStr for RevenueGrouping {
    type Err = ProjectionError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        // The names are serde's (and strum's) `snake_case`, written once.
        Self::iter()
            .find(|grouping| <&'static str>::from(*grouping) == s)
            .ok_or_else(|| ProjectionError::Invalid {
                field: "group_by",
                reason: format!("{s:?} is not one of {}", Self::VARIANTS.join(", ")),
            })
    }
}

/// `GET /v1/reports/revenue`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RevenueReport {
    /// First date.
    pub from: NaiveDate,
    /// Last date (included).
    pub to: NaiveDate,
    /// What the rows are grouped by.
    pub group_by: RevenueGrouping,
    /// One row per group, in group order.
    pub rows: Vec<RevenueRow>,
}

/// Revenue of one group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RevenueRow {
    /// The date, or the clinic's, treatment's or program's id (`none`:
    /// not paid by a package).
    pub group: String,
    /// The clinic's, treatment's or program's name (none for days).
    pub name: Option<String>,
    /// Base prices plus pricing-rule adjustments of every booked reservation.
    pub gross_cents: i64,
    /// Promo discounts.
    pub discount_cents: i64,
    /// Refunded or not charged after cancellations and displacements.
    pub refund_cents: i64,
    /// `gross - discount - refund`.
    pub net_cents: i64,
    /// Reservations counted.
    pub reservations: i64,
}

/// `GET /v1/reports/reservations`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ReservationsReport {
    /// First date.
    pub from: NaiveDate,
    /// Last date (included).
    pub to: NaiveDate,
    /// One row per clinic.
    pub rows: Vec<ReservationsRow>,
}

/// Reservations of one clinic by status.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ReservationsRow {
    /// The clinic.
    pub clinic_id: Uuid,
    /// Its name.
    pub name: String,
    /// Still booked.
    pub booked: i64,
    /// Checked in.
    pub checked_in: i64,
    /// Completed.
    pub completed: i64,
    /// Cancelled.
    pub cancelled: i64,
    /// Marked no-show.
    pub no_show: i64,
    /// Displaced by a block or closure.
    pub displaced: i64,
    /// All of the above.
    pub total: i64,
    /// `cancelled / total` (0 without reservations).
    pub cancellation_rate: f64,
    /// `no_show / total` (0 without reservations).
    pub no_show_rate: f64,
}

/// `GET /v1/reports/packages`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PackagesReport {
    /// First purchase date.
    pub from: NaiveDate,
    /// Last purchase date (included).
    pub to: NaiveDate,
    /// One row per program.
    pub rows: Vec<PackagesRow>,
}

/// Packages of one program sold in the range.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PackagesRow {
    /// The program.
    pub program_id: Uuid,
    /// Its name.
    pub name: Option<String>,
    /// Packages sold.
    pub sold: i64,
    /// What they were sold for.
    pub revenue_cents: i64,
    /// Sessions they hold.
    pub sessions_total: i64,
    /// Sessions used now (held by reservations).
    pub sessions_used: i64,
    /// Sessions left now.
    pub sessions_left: i64,
}

/// `GET /v1/reports/utilization`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct UtilizationReport {
    /// First date.
    pub from: NaiveDate,
    /// Last date (included).
    pub to: NaiveDate,
    /// One row per resource and day.
    pub rows: Vec<UtilizationRow>,
}

/// One resource's day.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct UtilizationRow {
    /// The clinic.
    pub clinic_id: Uuid,
    /// The resource.
    pub resource_id: Uuid,
    /// Its name.
    pub resource_name: String,
    /// The clinic-local date.
    pub date: NaiveDate,
    /// Minutes open (opening hours, closures cut out).
    pub open_minutes: i64,
    /// Minutes of appointments holding the resource.
    pub booked_minutes: i64,
    /// `booked / open * 100`, one decimal (0 when closed).
    pub percent: f64,
}

/// `GET /v1/reports/promo-codes`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PromoReport {
    /// One row per code.
    pub rows: Vec<PromoRow>,
}

/// One promo code's use.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PromoRow {
    /// The code.
    pub code: String,
    /// Redemptions that count (not given back).
    pub redemptions: i64,
    /// Redemptions given back by timely cancellations and displacements.
    pub released: i64,
    /// Discount given by the redemptions that count.
    pub discount_cents: i64,
    /// Redemptions allowed.
    pub max_redemptions: i64,
    /// Still accepting redemptions.
    pub active: bool,
}

/// `GET /v1/clinics/{clinic_id}/dashboard?date=`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Dashboard {
    /// The clinic.
    pub clinic_id: Uuid,
    /// The clinic-local date.
    pub date: NaiveDate,
    /// The day's appointments by status; `waitlisted` counts the waitlist.
    pub counts: StatusCounts,
    /// Booked minutes over open minutes of all resources, one decimal.
    pub occupancy_percent: f64,
    /// Waitlist entries whose wanted window touches the day.
    pub waitlist_length: i64,
    /// The day's displaced appointments, to offer another slot.
    pub displaced_to_rebook: Vec<DashboardAppointment>,
    /// Net revenue of the day's appointments (as the revenue report).
    pub revenue_cents: i64,
    /// Booked or checked-in appointments not over yet, by start (at most 20).
    pub next_appointments: Vec<DashboardAppointment>,
}

/// Reservations of a day by status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct StatusCounts {
    /// Booked.
    pub booked: i64,
    /// Checked in.
    pub checked_in: i64,
    /// Completed.
    pub completed: i64,
    /// Cancelled.
    pub cancelled: i64,
    /// No-show.
    pub no_show: i64,
    /// Displaced.
    pub displaced: i64,
    /// Waiting for a slot that day.
    pub waitlisted: i64,
    /// Slots held that day and not confirmed yet (holds and waitlist
    /// offers): not revenue, not booked.
    pub held: i64,
}

/// An appointment on the dashboard.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DashboardAppointment {
    /// The reservation.
    pub reservation_id: Uuid,
    /// The patient.
    pub patient_id: Uuid,
    /// The treatment.
    pub treatment_id: Uuid,
    /// The resource.
    pub resource_id: Uuid,
    /// Start (UTC).
    pub start: DateTime<Utc>,
    /// End (UTC).
    pub end: DateTime<Utc>,
    /// Its status.
    pub status: String,
}

/// `value` rounded half away from zero to `decimals` places.
fn round(value: f64, decimals: i32) -> f64 {
    let scale = 10_f64.powi(decimals);
    (value * scale).round() / scale
}

/// `part / whole`, 0 when `whole` is 0.
fn ratio(part: i64, whole: i64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64
    }
}

/// Names by id as text, from `SELECT id::text, name ...`.
async fn names(
    conn: &mut PgConnection,
    sql: &str,
) -> Result<HashMap<String, String>, ProjectionError> {
    let rows: Vec<(String, String)> = sqlx::query_as(sql).fetch_all(&mut *conn).await?;
    Ok(rows.into_iter().collect())
}

/// Fails with `NotFound` unless the reports know `clinic_id`.
async fn known_clinic(
    conn: &mut PgConnection,
    clinic_id: Option<Uuid>,
) -> Result<(), ProjectionError> {
    let Some(clinic_id) = clinic_id else {
        return Ok(());
    };
    let known: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM reports_clinics WHERE clinic_id = $1)")
            .bind(clinic_id)
            .fetch_one(&mut *conn)
            .await?;
    if known {
        Ok(())
    } else {
        Err(ProjectionError::NotFound(format!("clinic {clinic_id}")))
    }
}

impl ReadModels {
    /// Revenue of the appointments in `range` (of one clinic, or all),
    /// grouped by day, clinic, treatment or program.
    ///
    /// # Errors
    /// [`ProjectionError::NotFound`] for an unknown clinic; the database
    /// failed.
    pub async fn revenue(
        &self,
        range: DateRange,
        clinic_id: Option<Uuid>,
        group_by: RevenueGrouping,
    ) -> Result<RevenueReport, ProjectionError> {
        let mut conn = self.read_connection().await?;
        known_clinic(&mut conn, clinic_id).await?;
        let group = match group_by {
            RevenueGrouping::Day => "local_date::text",
            RevenueGrouping::Clinic => "clinic_id::text",
            RevenueGrouping::Treatment => "treatment_id::text",
            RevenueGrouping::Program => "coalesce(program_id::text, 'none')",
        };
        let sql = format!(
            "SELECT {group} AS grp, sum(gross_cents)::bigint, sum(discount_cents)::bigint,
                    sum(refund_cents)::bigint, count(*)
               FROM reports_reservations
              WHERE booked AND local_date BETWEEN $1 AND $2
                AND ($3::uuid IS NULL OR clinic_id = $3)
              GROUP BY grp ORDER BY grp"
        );
        let rows: Vec<(String, i64, i64, i64, i64)> = sqlx::query_as(&sql)
            .bind(range.from)
            .bind(range.to)
            .bind(clinic_id)
            .fetch_all(&mut *conn)
            .await?;
        let names = match group_by {
            RevenueGrouping::Day => HashMap::new(),
            RevenueGrouping::Clinic => {
                names(&mut conn, "SELECT clinic_id::text, name FROM reports_clinics").await?
            }
            RevenueGrouping::Treatment => {
                names(
                    &mut conn,
                    "SELECT treatment_id::text, min(name) FROM reports_treatments GROUP BY treatment_id",
                )
                .await?
            }
            RevenueGrouping::Program => {
                names(&mut conn, "SELECT program_id::text, name FROM reports_programs").await?
            }
        };
        let rows = rows
            .into_iter()
            .map(|(group, gross, discount, refund, count)| RevenueRow {
                name: names.get(&group).cloned(),
                group,
                gross_cents: gross,
                discount_cents: discount,
                refund_cents: refund,
                net_cents: gross - discount - refund,
                reservations: count,
            })
            .collect();
        Ok(RevenueReport {
            from: range.from,
            to: range.to,
            group_by,
            rows,
        })
    }

    /// Reservations in `range` (of one clinic, or all) by status per
    /// clinic, with cancellation and no-show rates. Waitlist entries never
    /// booked have no appointment date and are not counted.
    ///
    /// # Errors
    /// [`ProjectionError::NotFound`] for an unknown clinic; the database
    /// failed.
    pub async fn reservations_report(
        &self,
        range: DateRange,
        clinic_id: Option<Uuid>,
    ) -> Result<ReservationsReport, ProjectionError> {
        let mut conn = self.read_connection().await?;
        known_clinic(&mut conn, clinic_id).await?;
        let counted: Vec<(Uuid, String, Option<String>, i64)> = sqlx::query_as(
            "SELECT c.clinic_id, c.name, r.status, count(r.reservation_id)
               FROM reports_clinics c
               LEFT JOIN reports_reservations r
                 ON r.clinic_id = c.clinic_id AND r.booked AND r.local_date BETWEEN $1 AND $2
              WHERE $3::uuid IS NULL OR c.clinic_id = $3
              GROUP BY c.clinic_id, c.name, r.status
              ORDER BY c.name, c.clinic_id",
        )
        .bind(range.from)
        .bind(range.to)
        .bind(clinic_id)
        .fetch_all(&mut *conn)
        .await?;
        let mut clinics: Vec<(Uuid, String, StatusCounts)> = Vec::new();
        for (clinic_id, name, status, n) in counted {
            if clinics.last().is_none_or(|(last, _, _)| *last != clinic_id) {
                clinics.push((clinic_id, name, StatusCounts::default()));
            }
            if let (Some(status), Some((_, _, counts))) = (status, clinics.last_mut()) {
                counts.add(status_of(RESERVATIONS.def.name, &status)?, n);
            }
        }
        let rows = clinics
            .into_iter()
            .map(|(clinic_id, name, c)| {
                let total =
                    c.booked + c.checked_in + c.completed + c.cancelled + c.no_show + c.displaced;
                ReservationsRow {
                    clinic_id,
                    name,
                    booked: c.booked,
                    checked_in: c.checked_in,
                    completed: c.completed,
                    cancelled: c.cancelled,
                    no_show: c.no_show,
                    displaced: c.displaced,
                    total,
                    cancellation_rate: round(ratio(c.cancelled, total), 4),
                    no_show_rate: round(ratio(c.no_show, total), 4),
                }
            })
            .collect();
        Ok(ReservationsReport {
            from: range.from,
            to: range.to,
            rows,
        })
    }

    /// Packages sold in `range` (by local purchase date) per program: how
    /// many, for how much, and their sessions used and left now.
    ///
    /// # Errors
    /// The database failed.
    pub async fn packages_report(
        &self,
        range: DateRange,
    ) -> Result<PackagesReport, ProjectionError> {
        let mut conn = self.read_connection().await?;
        let rows: Vec<(Uuid, Option<String>, i64, i64, i64, i64)> = sqlx::query_as(
            "SELECT p.program_id, min(g.name), count(*), sum(p.price_cents)::bigint,
                    sum(p.sessions_total)::bigint, sum(p.sessions_used)::bigint
               FROM reports_packages p
               LEFT JOIN reports_programs g ON g.program_id = p.program_id
              WHERE p.program_id IS NOT NULL AND p.purchase_date BETWEEN $1 AND $2
              GROUP BY p.program_id
              ORDER BY min(g.name), p.program_id",
        )
        .bind(range.from)
        .bind(range.to)
        .fetch_all(&mut *conn)
        .await?;
        let rows = rows
            .into_iter()
            .map(
                |(program_id, name, sold, revenue, total, used)| PackagesRow {
                    program_id,
                    name,
                    sold,
                    revenue_cents: revenue,
                    sessions_total: total,
                    sessions_used: used,
                    sessions_left: total - used,
                },
            )
            .collect();
        Ok(PackagesReport {
            from: range.from,
            to: range.to,
            rows,
        })
    }

    /// Utilisation per resource and day in `range` (of one clinic, or
    /// all): open minutes, booked minutes, percent.
    ///
    /// # Errors
    /// [`ProjectionError::NotFound`] for an unknown clinic; the database
    /// failed.
    pub async fn utilization(
        &self,
        range: DateRange,
        clinic_id: Option<Uuid>,
    ) -> Result<UtilizationReport, ProjectionError> {
        let mut conn = self.read_connection().await?;
        known_clinic(&mut conn, clinic_id).await?;
        let only = clinic_id.map(|id| vec![id]);
        let (from, to) = window(range.from, range.to);
        let setups = setups(&mut conn, &SETUP, only.as_deref(), from, to).await?;
        let query = sqlx::query_scalar(
            "SELECT row_to_json(r) FROM reports_resources r
               JOIN reports_clinics c ON c.clinic_id = r.clinic_id
              WHERE $1::uuid IS NULL OR r.clinic_id = $1
              ORDER BY c.name, c.clinic_id, r.position",
        )
        .bind(clinic_id);
        let resources: Vec<ResourceRow> = json_rows(query, &mut conn, RESOURCES.def.name).await?;
        let booked = booked_minutes(&mut conn, range.from, range.to, clinic_id).await?;
        let mut rows = Vec::new();
        for resource in resources {
            let Some(setup) = setups.get(&resource.clinic_id) else {
                continue;
            };
            for date in range.days() {
                let open = setup.open_minutes(date);
                let booked = booked
                    .get(&(resource.resource_id, date))
                    .copied()
                    .unwrap_or(0);
                rows.push(UtilizationRow {
                    clinic_id: resource.clinic_id,
                    resource_id: resource.resource_id,
                    resource_name: resource.name.clone(),
                    date,
                    open_minutes: open,
                    booked_minutes: booked,
                    percent: round(ratio(booked, open) * 100.0, 1),
                });
            }
        }
        Ok(UtilizationReport {
            from: range.from,
            to: range.to,
            rows,
        })
    }

    /// Every promo code's use: redemptions that count, those given back,
    /// and the discount given.
    ///
    /// # Errors
    /// The database failed.
    pub async fn promo_codes(&self) -> Result<PromoReport, ProjectionError> {
        let mut conn = self.read_connection().await?;
        let rows: Vec<(String, i64, i64, i64, i64, bool)> = sqlx::query_as(
            "SELECT p.code,
                    count(d.reservation_id) FILTER (WHERE NOT d.released),
                    count(d.reservation_id) FILTER (WHERE d.released),
                    coalesce(sum(r.discount_cents) FILTER (WHERE NOT d.released), 0)::bigint,
                    p.max_redemptions::bigint, p.active
               FROM reports_promo_codes p
               LEFT JOIN reports_promo_redemptions d ON d.code = p.code
               LEFT JOIN reports_reservations r ON r.reservation_id = d.reservation_id
              GROUP BY p.code, p.max_redemptions, p.active
              ORDER BY p.code",
        )
        .fetch_all(&mut *conn)
        .await?;
        let rows = rows
            .into_iter()
            .map(
                |(code, redemptions, released, discount, max_redemptions, active)| PromoRow {
                    code,
                    redemptions,
                    released,
                    discount_cents: discount,
                    max_redemptions,
                    active,
                },
            )
            .collect();
        Ok(PromoReport { rows })
    }

    /// One clinic's local day at a glance, as of `now`.
    ///
    /// # Errors
    /// [`ProjectionError::NotFound`] for an unknown clinic; the database
    /// failed.
    pub async fn dashboard(
        &self,
        clinic_id: Uuid,
        date: NaiveDate,
        now: DateTime<Utc>,
    ) -> Result<Dashboard, ProjectionError> {
        let mut conn = self.read_connection().await?;
        let (from, to) = window(date, date);
        let setup: Setup = setups(&mut conn, &SETUP, Some(&[clinic_id]), from, to)
            .await?
            .remove(&clinic_id)
            .ok_or_else(|| ProjectionError::NotFound(format!("clinic {clinic_id}")))?;
        #[derive(Deserialize)]
        struct Row {
            reservation_id: Uuid,
            patient_id: Option<Uuid>,
            treatment_id: Option<Uuid>,
            resource_id: Option<Uuid>,
            starts_at: Option<DateTime<Utc>>,
            ends_at: Option<DateTime<Utc>>,
            status: ReservationStatus,
            gross_cents: i64,
            discount_cents: i64,
            refund_cents: i64,
        }
        let query = sqlx::query_scalar(
            "SELECT row_to_json(r) FROM reports_reservations r
              WHERE clinic_id = $1 AND local_date = $2 AND booked
              ORDER BY starts_at, reservation_id",
        )
        .bind(clinic_id)
        .bind(date);
        let rows: Vec<Row> = json_rows(query, &mut conn, RESERVATIONS.def.name).await?;
        let (day_start, day_end) = setup.day_bounds(date);
        let waitlisted: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM reports_reservations
              WHERE clinic_id = $1 AND status = $4 AND earliest < $3 AND latest >= $2",
        )
        .bind(clinic_id)
        .bind(day_start)
        .bind(day_end)
        .bind(ReservationStatus::Waitlisted.as_str())
        .fetch_one(&mut *conn)
        .await?;
        let held: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM holds_holds
              WHERE clinic_id = $1 AND status = $4 AND starts_at >= $2 AND starts_at < $3",
        )
        .bind(clinic_id)
        .bind(day_start)
        .bind(day_end)
        .bind(HoldStatus::Held.as_str())
        .fetch_one(&mut *conn)
        .await?;
        let resources: i64 =
            sqlx::query_scalar("SELECT count(*) FROM reports_resources WHERE clinic_id = $1")
                .bind(clinic_id)
                .fetch_one(&mut *conn)
                .await?;
        let mut counts = StatusCounts {
            waitlisted,
            held,
            ..StatusCounts::default()
        };
        let mut revenue = 0;
        let mut booked_minutes = 0;
        let mut displaced = Vec::new();
        let mut next = Vec::new();
        for row in rows {
            revenue += row.gross_cents - row.discount_cents - row.refund_cents;
            counts.add(row.status, 1);
            let (Some(patient_id), Some(treatment_id), Some(resource_id), Some(start), Some(end)) = (
                row.patient_id,
                row.treatment_id,
                row.resource_id,
                row.starts_at,
                row.ends_at,
            ) else {
                continue;
            };
            if HOLDING.contains(&row.status) {
                booked_minutes += (end - start).num_minutes();
            }
            let appointment = DashboardAppointment {
                reservation_id: row.reservation_id,
                patient_id,
                treatment_id,
                resource_id,
                start,
                end,
                status: row.status.as_str().to_owned(),
            };
            match row.status {
                ReservationStatus::Displaced => displaced.push(appointment),
                ReservationStatus::Booked | ReservationStatus::CheckedIn
                    if end > now && next.len() < 20 =>
                {
                    next.push(appointment)
                }
                _ => {}
            }
        }
        let open = setup.open_minutes(date) * resources;
        Ok(Dashboard {
            clinic_id,
            date,
            counts,
            occupancy_percent: round(ratio(booked_minutes, open) * 100.0, 1),
            waitlist_length: waitlisted,
            displaced_to_rebook: displaced,
            revenue_cents: revenue,
            next_appointments: next,
        })
    }
}

/// Booked minutes per resource and local date.
async fn booked_minutes(
    conn: &mut PgConnection,
    from: NaiveDate,
    to: NaiveDate,
    clinic_id: Option<Uuid>,
) -> Result<HashMap<(Uuid, NaiveDate), i64>, ProjectionError> {
    let rows: Vec<(Uuid, NaiveDate, i64)> = sqlx::query_as(
        "SELECT resource_id, local_date,
                (sum(extract(epoch FROM ends_at - starts_at)) / 60)::bigint
           FROM reports_reservations
          WHERE local_date BETWEEN $1 AND $2 AND status = ANY($4)
            AND ($3::uuid IS NULL OR clinic_id = $3) AND resource_id IS NOT NULL
          GROUP BY resource_id, local_date",
    )
    .bind(from)
    .bind(to)
    .bind(clinic_id)
    .bind(names_of(&HOLDING))
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(resource, date, minutes)| ((resource, date), minutes))
        .collect())
}

macro_rules! csv_rows {
    ($($report:ty => $row:ty),+ $(,)?) => {$(
        impl ToCsv for $report {
            type Row = $row;
            fn rows(&self) -> &[$row] {
                &self.rows
            }
        }
    )+};
}

csv_rows! {
    RevenueReport => RevenueRow,
    ReservationsReport => ReservationsRow,
    PackagesReport => PackagesRow,
    UtilizationReport => UtilizationRow,
    PromoReport => PromoRow,
}
