//! The analysts' routes: schedules, availability, the clinic dashboard and
//! reports, all answered from read models. Staff may read schedules and
//! availability. Reports answer CSV when asked with `Accept: text/csv`.
//! Every route takes `?min_position=N` and waits (up to 5 s) until its
//! projection has applied the event at N.

use std::convert::Infallible;

use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use chrono::NaiveDate;
use clinicbook_projections::query::csv::ToCsv;
use clinicbook_projections::query::reports::{
    Dashboard, DateRange, PackagesReport, PromoReport, ReservationsReport, RevenueGrouping,
    RevenueReport, UtilizationReport,
};
use clinicbook_projections::query::schedule::{Availability, ScheduleDay};
use clinicbook_projections::ProjectionError;
use serde::{Deserialize, Serialize};
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::consistency::{wait_for, MinPosition, PositionQuery};
use crate::auth::{Caller, Role};
use crate::error::{problems, ApiError, Code, ANY, AUTH, PARAMS, READ, REPORT};
use crate::extract::{Path, Query};
use crate::state::AppState;

/// The analysts' routes.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(schedule))
        .routes(routes!(availability))
        .routes(routes!(dashboard))
        .routes(routes!(revenue))
        .routes(routes!(reservations_report))
        .routes(routes!(packages_report))
        .routes(routes!(utilization))
        .routes(routes!(promo_codes))
}

/// `?date=` (clinic-local) and the consistency token.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
struct DayQuery {
    /// Clinic-local date, `YYYY-MM-DD`.
    date: NaiveDate,
    /// Wait until the read model has applied this position.
    #[param(minimum = 0, maximum = 9223372036854775807_i64)]
    min_position: Option<i64>,
}

/// `?treatment_id=&date=` and the consistency token.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
struct AvailabilityQuery {
    /// The treatment to find starts for.
    treatment_id: Uuid,
    /// Clinic-local date, `YYYY-MM-DD`.
    date: NaiveDate,
    /// Wait until the read model has applied this position.
    #[param(minimum = 0, maximum = 9223372036854775807_i64)]
    min_position: Option<i64>,
}

/// A report's range (clinic-local dates, both inclusive), an optional
/// clinic and the consistency token.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
struct ReportQuery {
    /// First day, `YYYY-MM-DD`.
    from: NaiveDate,
    /// Last day, `YYYY-MM-DD` (inclusive).
    to: NaiveDate,
    /// Only this clinic.
    clinic_id: Option<Uuid>,
    /// Wait until the read model has applied this position.
    #[param(minimum = 0, maximum = 9223372036854775807_i64)]
    min_position: Option<i64>,
}

/// The revenue report's query: a range, an optional clinic, a grouping.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
struct RevenueQuery {
    /// First day, `YYYY-MM-DD`.
    from: NaiveDate,
    /// Last day, `YYYY-MM-DD` (inclusive).
    to: NaiveDate,
    /// Only this clinic.
    clinic_id: Option<Uuid>,
    /// `day` (default), `clinic`, `treatment` or `program`.
    group_by: Option<RevenueGrouping>,
    /// Wait until the read model has applied this position.
    #[param(minimum = 0, maximum = 9223372036854775807_i64)]
    min_position: Option<i64>,
}

/// The package report's query: a range of purchase dates.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
struct PackagesQuery {
    /// First day, `YYYY-MM-DD`.
    from: NaiveDate,
    /// Last day, `YYYY-MM-DD` (inclusive).
    to: NaiveDate,
    /// Wait until the read model has applied this position.
    #[param(minimum = 0, maximum = 9223372036854775807_i64)]
    min_position: Option<i64>,
}

fn range(from: NaiveDate, to: NaiveDate) -> Result<DateRange, ApiError> {
    Ok(DateRange::new(from, to)?)
}

/// How the client wants a report: CSV when its `Accept` asks for
/// `text/csv`, else JSON.
#[derive(Debug, Clone, Copy)]
struct Format {
    csv: bool,
}

impl<S: Send + Sync> FromRequestParts<S> for Format {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let csv = parts
            .headers
            .get_all(header::ACCEPT)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .any(|accept| accept.to_ascii_lowercase().contains("text/csv"));
        Ok(Self { csv })
    }
}

/// A report in the format the client asked for ([`Format`]): every
/// report route answers one, so the five of them share this one answer.
struct Negotiated<T> {
    format: Format,
    report: T,
}

impl<T: Serialize + ToCsv> IntoResponse for Negotiated<T> {
    fn into_response(self) -> Response {
        if self.format.csv {
            (
                [(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/csv; charset=utf-8"),
                )],
                self.report.to_csv(),
            )
                .into_response()
        } else {
            axum::Json(self.report).into_response()
        }
    }
}

/// What every report route does once its caller and query are checked:
/// wait for the `reports` projection to pass the consistency token, then
/// run `read` (a future: it starts only after the wait) and answer in the
/// asked format.
async fn report<T>(
    state: &AppState,
    format: Format,
    min_position: Option<i64>,
    read: impl std::future::Future<Output = Result<T, ProjectionError>>,
) -> Result<Negotiated<T>, ApiError> {
    wait_for(state, "reports", MinPosition(min_position)).await?;
    Ok(Negotiated {
        format,
        report: read.await?,
    })
}

problems!(
    /// The error answers of `schedule`.
    ScheduleErrors: ANY, AUTH, PARAMS, READ, &[Code::NotFound]
);

/// A clinic's day per resource: bookings and blocks.
#[utoipa::path(get, path = "/v1/clinics/{clinic_id}/schedule", tag = "analysts",
    params(("clinic_id" = Uuid, Path), DayQuery),
    responses((status = 200, body = ScheduleDay),
        ScheduleErrors))]
async fn schedule(
    State(state): State<AppState>,
    caller: Caller,
    Path(clinic_id): Path<Uuid>,
    Query(query): Query<DayQuery>,
) -> Result<axum::Json<ScheduleDay>, ApiError> {
    caller.allow(&[Role::Analyst, Role::Staff])?;
    wait_for(&state, "schedule", MinPosition(query.min_position)).await?;
    Ok(axum::Json(
        state.read.schedule(clinic_id, query.date).await?,
    ))
}

problems!(
    /// The error answers of `availability`.
    AvailabilityErrors: ANY, AUTH, PARAMS, READ, &[Code::NotFound]
);

/// Free start times per resource for a treatment on a day (instants in UTC).
#[utoipa::path(get, path = "/v1/clinics/{clinic_id}/availability", tag = "analysts",
    params(("clinic_id" = Uuid, Path), AvailabilityQuery),
    responses((status = 200, body = Availability),
        AvailabilityErrors))]
async fn availability(
    State(state): State<AppState>,
    caller: Caller,
    Path(clinic_id): Path<Uuid>,
    Query(query): Query<AvailabilityQuery>,
) -> Result<Response, ApiError> {
    caller.allow(&[Role::Analyst, Role::Staff])?;
    wait_for(&state, "schedule", MinPosition(query.min_position)).await?;
    let now = state.commands.now();
    // An `Availability`, rendered once per cached answer.
    let json = state
        .read
        .availability_json(clinic_id, query.treatment_id, query.date, now)
        .await?;
    Ok((
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        json,
    )
        .into_response())
}

problems!(
    /// The error answers of `dashboard`.
    DashboardErrors: ANY, AUTH, PARAMS, READ, &[Code::NotFound]
);

/// A clinic's day for its manager: counts by status, occupancy, waitlist,
/// displaced to rebook, revenue, next appointments.
#[utoipa::path(get, path = "/v1/clinics/{clinic_id}/dashboard", tag = "analysts",
    params(("clinic_id" = Uuid, Path), DayQuery),
    responses((status = 200, body = Dashboard),
        DashboardErrors))]
async fn dashboard(
    State(state): State<AppState>,
    caller: Caller,
    Path(clinic_id): Path<Uuid>,
    Query(query): Query<DayQuery>,
) -> Result<axum::Json<Dashboard>, ApiError> {
    caller.allow(&[Role::Analyst])?;
    wait_for(&state, "reports", MinPosition(query.min_position)).await?;
    let now = state.commands.now();
    Ok(axum::Json(
        state.read.dashboard(clinic_id, query.date, now).await?,
    ))
}

problems!(
    /// The error answers of `revenue`.
    RevenueErrors: ANY, AUTH, PARAMS, READ, REPORT, &[Code::NotFound]
);

/// Revenue (gross, discount, refund, net cents) per day, clinic, treatment
/// or program, by appointment date.
#[utoipa::path(get, path = "/v1/reports/revenue", tag = "analysts", params(RevenueQuery),
    responses((status = 200, content((RevenueReport = "application/json"), (String = "text/csv"))),
        RevenueErrors))]
async fn revenue(
    State(state): State<AppState>,
    caller: Caller,
    format: Format,
    Query(query): Query<RevenueQuery>,
) -> Result<Negotiated<RevenueReport>, ApiError> {
    caller.allow(&[Role::Analyst])?;
    let range = range(query.from, query.to)?;
    let group_by = query.group_by.unwrap_or(RevenueGrouping::Day);
    let read = state.read.revenue(range, query.clinic_id, group_by);
    report(&state, format, query.min_position, read).await
}

problems!(
    /// The error answers of `reservations_report`.
    ReservationsReportErrors: ANY, AUTH, PARAMS, READ, REPORT, &[Code::NotFound]
);

/// Reservations per clinic by status, with cancellation and no-show rates.
#[utoipa::path(get, path = "/v1/reports/reservations", tag = "analysts", params(ReportQuery),
    responses((status = 200, content((ReservationsReport = "application/json"), (String = "text/csv"))),
        ReservationsReportErrors))]
async fn reservations_report(
    State(state): State<AppState>,
    caller: Caller,
    format: Format,
    Query(query): Query<ReportQuery>,
) -> Result<Negotiated<ReservationsReport>, ApiError> {
    caller.allow(&[Role::Analyst])?;
    let read = state
        .read
        .reservations_report(range(query.from, query.to)?, query.clinic_id);
    report(&state, format, query.min_position, read).await
}

problems!(
    /// The error answers of `packages_report`.
    PackagesReportErrors: ANY, AUTH, PARAMS, READ, REPORT
);

/// Per program: packages sold, revenue, sessions used and left (by
/// purchase date).
#[utoipa::path(get, path = "/v1/reports/packages", tag = "analysts", params(PackagesQuery),
    responses((status = 200, content((PackagesReport = "application/json"), (String = "text/csv"))),
        PackagesReportErrors))]
async fn packages_report(
    State(state): State<AppState>,
    caller: Caller,
    format: Format,
    Query(query): Query<PackagesQuery>,
) -> Result<Negotiated<PackagesReport>, ApiError> {
    caller.allow(&[Role::Analyst])?;
    let read = state.read.packages_report(range(query.from, query.to)?);
    report(&state, format, query.min_position, read).await
}

problems!(
    /// The error answers of `utilization`.
    UtilizationErrors: ANY, AUTH, PARAMS, READ, REPORT, &[Code::NotFound]
);

/// Per resource and day: open minutes, booked minutes, percent.
#[utoipa::path(get, path = "/v1/reports/utilization", tag = "analysts", params(ReportQuery),
    responses((status = 200, content((UtilizationReport = "application/json"), (String = "text/csv"))),
        UtilizationErrors))]
async fn utilization(
    State(state): State<AppState>,
    caller: Caller,
    format: Format,
    Query(query): Query<ReportQuery>,
) -> Result<Negotiated<UtilizationReport>, ApiError> {
    caller.allow(&[Role::Analyst])?;
    let read = state
        .read
        .utilization(range(query.from, query.to)?, query.clinic_id);
    report(&state, format, query.min_position, read).await
}

problems!(
    /// The error answers of `promo_codes`.
    PromoCodesReportErrors: ANY, AUTH, PARAMS, READ
);

/// Per promo code: redemptions and discount given.
#[utoipa::path(get, path = "/v1/reports/promo-codes", tag = "analysts", params(PositionQuery),
    responses((status = 200, content((PromoReport = "application/json"), (String = "text/csv"))),
        PromoCodesReportErrors))]
async fn promo_codes(
    State(state): State<AppState>,
    caller: Caller,
    format: Format,
    Query(query): Query<PositionQuery>,
) -> Result<Negotiated<PromoReport>, ApiError> {
    caller.allow(&[Role::Analyst])?;
    let read = state.read.promo_codes();
    report(&state, format, query.min_position, read).await
}
