//! Holds: take a slot while the patient pays or decides, confirm it into a
//! reservation at the quoted price, release it (role `staff`); and the
//! clinic settings that size holds and waitlist offers (role `admin`).

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use clinicbook_wire::booking::Booked;
use clinicbook_wire::holds::{
    ConfirmHold, HoldPlaced, HoldReleased, HoldView, PlaceHold, SettingsInput, SettingsView,
};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::consistency::{wait_for, MinPosition, PositionQuery};
use crate::call::{answer, AdminCall, IdempotencyKeyHeader, StaffCall};
use crate::error::{problems, ApiError, Code, ANY, AUTH, BODY, BOOKING, COMMAND, PARAMS, READ};
use crate::extract::{Json, Path, Query};
use crate::state::AppState;

/// The hold and settings routes with their OpenAPI descriptions.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(place_hold))
        .routes(routes!(get_hold))
        .routes(routes!(confirm_hold))
        .routes(routes!(release_hold))
        .routes(routes!(change_settings))
}

problems!(
    /// The error answers of `place_hold`.
    PlaceHoldErrors: ANY, AUTH, BODY, COMMAND, &[
        Code::InvalidInput,
        Code::InconsistentInput,
        Code::NotFound,
        Code::AlreadyExists,
        Code::SlotUnavailable,
        Code::ResourceKindMismatch,
        Code::InThePast,
        Code::OutsideOpeningHours,
    ]
);

/// Hold a slot for `ttl_seconds` (the clinic's `hold_minutes` by default)
/// at the price quoted now: nobody else can book or hold it meanwhile.
#[utoipa::path(post, path = "/v1/holds", tag = "staff", request_body = PlaceHold,
    params(IdempotencyKeyHeader),
    responses((status = 201, body = HoldPlaced, description = "held; the answer also has `position`"),
        PlaceHoldErrors))]
async fn place_hold(
    State(state): State<AppState>,
    StaffCall(call): StaffCall,
    Json(body): Json<PlaceHold>,
) -> Result<Response, ApiError> {
    let ctx = call.ctx("place_hold", &body);
    answer(
        StatusCode::CREATED,
        state.commands.place_hold(&ctx, body).await?,
    )
}

problems!(
    /// The error answers of `get_hold`.
    GetHoldErrors: ANY, AUTH, PARAMS, READ, &[Code::NotFound]
);

/// A hold and its status.
#[utoipa::path(get, path = "/v1/holds/{hold_id}", tag = "staff",
    params(("hold_id" = Uuid, Path), PositionQuery),
    responses((status = 200, body = HoldView), GetHoldErrors))]
async fn get_hold(
    State(state): State<AppState>,
    _staff: StaffCall,
    Path(hold_id): Path<Uuid>,
    Query(query): Query<PositionQuery>,
) -> Result<axum::Json<HoldView>, ApiError> {
    wait_for(&state, "holds", MinPosition(query.min_position)).await?;
    Ok(axum::Json(state.read.hold(hold_id).await?))
}

problems!(
    /// The error answers of `confirm_hold`.
    ConfirmHoldErrors: ANY, AUTH, PARAMS, BODY, COMMAND, BOOKING, &[Code::HoldExpired, Code::HoldReleased]
);

/// Book the held slot at the price quoted when it was held: the
/// reservation, the payment and the promo redemption, all or nothing.
#[utoipa::path(post, path = "/v1/holds/{hold_id}/confirm", tag = "staff",
    params(IdempotencyKeyHeader, ("hold_id" = Uuid, Path)), request_body = ConfirmHold,
    responses((status = 201, body = Booked, description = "booked; the answer also has `position`"),
        ConfirmHoldErrors))]
async fn confirm_hold(
    State(state): State<AppState>,
    StaffCall(call): StaffCall,
    Path(hold_id): Path<Uuid>,
    Json(body): Json<ConfirmHold>,
) -> Result<Response, ApiError> {
    let ctx = call.ctx("confirm_hold", &(hold_id, &body));
    answer(
        StatusCode::CREATED,
        state.commands.confirm_hold(&ctx, hold_id, body).await?,
    )
}

problems!(
    /// The error answers of `release_hold`.
    ReleaseHoldErrors: ANY, AUTH, PARAMS, COMMAND, &[Code::NotFound, Code::InvalidTransition, Code::HoldExpired]
);

/// Give a hold up: the slot is free at once.
#[utoipa::path(post, path = "/v1/holds/{hold_id}/release", tag = "staff",
    params(IdempotencyKeyHeader, ("hold_id" = Uuid, Path)),
    responses((status = 200, body = HoldReleased), ReleaseHoldErrors))]
async fn release_hold(
    State(state): State<AppState>,
    StaffCall(call): StaffCall,
    Path(hold_id): Path<Uuid>,
) -> Result<Response, ApiError> {
    let ctx = call.ctx("release_hold", &hold_id);
    answer(
        StatusCode::OK,
        state.commands.release_hold(&ctx, hold_id).await?,
    )
}

problems!(
    /// The error answers of `change_settings`.
    ChangeSettingsErrors: ANY, AUTH, PARAMS, BODY, COMMAND, &[Code::InvalidInput, Code::NotFound]
);

/// Change any of a clinic's hold, waitlist-offer and reminder settings;
/// answers all of them.
#[utoipa::path(put, path = "/v1/clinics/{clinic_id}/settings", tag = "admin",
    params(IdempotencyKeyHeader, ("clinic_id" = Uuid, Path)), request_body = SettingsInput,
    responses((status = 200, body = SettingsView), ChangeSettingsErrors))]
async fn change_settings(
    State(state): State<AppState>,
    AdminCall(call): AdminCall,
    Path(clinic_id): Path<Uuid>,
    Json(body): Json<SettingsInput>,
) -> Result<Response, ApiError> {
    let ctx = call.ctx("change_settings", &(clinic_id, &body));
    answer(
        StatusCode::OK,
        state
            .commands
            .change_settings(&ctx, clinic_id, body)
            .await?,
    )
}
