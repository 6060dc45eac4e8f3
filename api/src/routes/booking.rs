//! Booking routes: reservations and their life cycle, the waitlist,
//! blocks, closures and quotes (role `staff`; closures role `admin`).

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use clinicbook_wire::booking::ReservationView;
use clinicbook_wire::booking::{
    AddBlock, AddClosure, BlockAdded, BookTreatment, Booked, Cancel, Cancelled, ClosureAdded,
    JoinWaitlist, PriceAnswer, QuoteQuery, Reschedule, StatusChanged, Waitlisted,
};
use clinicbook_wire::messages::MessageList;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::consistency::{wait_for, MinPosition, PositionQuery};
use crate::call::{answer, AdminCall, IdempotencyKeyHeader, StaffCall};
use crate::error::{
    problems, ApiError, Code, ANY, AUTH, BLOCKING, BODY, BOOKING, COMMAND, PARAMS, READ,
};
use crate::extract::{Json, Path, Query};
use crate::state::AppState;

/// The booking routes with their OpenAPI descriptions.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(book))
        .routes(routes!(get_reservation))
        .routes(routes!(reservation_messages))
        .routes(routes!(reschedule))
        .routes(routes!(cancel))
        .routes(routes!(check_in))
        .routes(routes!(complete))
        .routes(routes!(no_show))
        .routes(routes!(join_waitlist))
        .routes(routes!(add_block))
        .routes(routes!(add_closure))
        .routes(routes!(quote))
}

problems!(
    /// The error answers of `book`.
    BookErrors: ANY, AUTH, BODY, COMMAND, BOOKING
);

/// Book a treatment: the slot, the reservation, the payment (package
/// session, wallet debit or at the clinic) and the promo code, all or nothing.
#[utoipa::path(post, path = "/v1/reservations", tag = "staff", request_body = BookTreatment,
    params(IdempotencyKeyHeader),
    responses((status = 201, body = Booked, description = "booked; the answer also has `position`"),
        BookErrors))]
async fn book(
    State(state): State<AppState>,
    StaffCall(call): StaffCall,
    Json(body): Json<BookTreatment>,
) -> Result<Response, ApiError> {
    let ctx = call.ctx("book_treatment", &body);
    answer(StatusCode::CREATED, state.commands.book(&ctx, body).await?)
}

problems!(
    /// The error answers of `get_reservation`.
    GetReservationErrors: ANY, AUTH, PARAMS, READ, &[Code::NotFound]
);

/// A reservation with its status history.
#[utoipa::path(get, path = "/v1/reservations/{reservation_id}", tag = "staff",
    params(("reservation_id" = Uuid, Path), PositionQuery),
    responses((status = 200, body = ReservationView),
        GetReservationErrors))]
async fn get_reservation(
    State(state): State<AppState>,
    _staff: StaffCall,
    Path(reservation_id): Path<Uuid>,
    Query(query): Query<PositionQuery>,
) -> Result<axum::Json<ReservationView>, ApiError> {
    wait_for(&state, "reservations", MinPosition(query.min_position)).await?;
    // Its open waitlist offer comes from the holds read model.
    wait_for(&state, "holds", MinPosition(query.min_position)).await?;
    Ok(axum::Json(state.read.reservation(reservation_id).await?))
}

problems!(
    /// The error answers of `reservation_messages`.
    ReservationMessagesErrors: ANY, AUTH, PARAMS, READ, &[Code::NotFound]
);

/// The messages sent (or being sent) to the patient about a reservation:
/// confirmation, reminder, cancellation, displacement and waitlist offer,
/// by email and SMS, oldest first. `to` is `"[erased]"` once the patient's
/// data is erased. With `min_position`, waits until the messages of that
/// event are decided (and the reservation is in its read model).
#[utoipa::path(get, path = "/v1/reservations/{reservation_id}/messages", tag = "staff",
    params(("reservation_id" = Uuid, Path), PositionQuery),
    responses((status = 200, body = MessageList),
        ReservationMessagesErrors))]
async fn reservation_messages(
    State(state): State<AppState>,
    _staff: StaffCall,
    Path(reservation_id): Path<Uuid>,
    Query(query): Query<PositionQuery>,
) -> Result<axum::Json<MessageList>, ApiError> {
    wait_for(&state, "reservations", MinPosition(query.min_position)).await?;
    if let Some(position) = query.min_position.filter(|p| *p > 0) {
        state
            .messages
            .wait_for(position, super::consistency::WAIT)
            .await?;
    }
    let list = state.messages.of_reservation(reservation_id).await?;
    if list.messages.is_empty() {
        // 404 for a reservation that does not exist (rather than an empty log).
        state.read.reservation(reservation_id).await?;
    }
    Ok(axum::Json(list))
}

problems!(
    /// The error answers of `reschedule`.
    RescheduleErrors: ANY, AUTH, PARAMS, BODY, COMMAND, BOOKING
);

/// Move a booked reservation to another time and/or resource.
#[utoipa::path(post, path = "/v1/reservations/{reservation_id}/reschedule", tag = "staff",
    params(IdempotencyKeyHeader, ("reservation_id" = Uuid, Path)), request_body = Reschedule,
    responses((status = 200, body = Booked),
        RescheduleErrors))]
async fn reschedule(
    State(state): State<AppState>,
    StaffCall(call): StaffCall,
    Path(reservation_id): Path<Uuid>,
    Json(body): Json<Reschedule>,
) -> Result<Response, ApiError> {
    let ctx = call.ctx("reschedule", &body);
    answer(
        StatusCode::OK,
        state
            .commands
            .reschedule(&ctx, reservation_id, body)
            .await?,
    )
}

problems!(
    /// The error answers of `cancel`.
    CancelErrors: ANY, AUTH, PARAMS, BODY, COMMAND, &[Code::NotFound, Code::InvalidTransition, Code::InconsistentInput]
);

/// Cancel a reservation; the cancellation policy decides refund, fee and
/// whether a package session comes back.
#[utoipa::path(post, path = "/v1/reservations/{reservation_id}/cancel", tag = "staff",
    params(IdempotencyKeyHeader, ("reservation_id" = Uuid, Path)), request_body = Cancel,
    responses((status = 200, body = Cancelled),
        CancelErrors))]
async fn cancel(
    State(state): State<AppState>,
    StaffCall(call): StaffCall,
    Path(reservation_id): Path<Uuid>,
    Json(body): Json<Cancel>,
) -> Result<Response, ApiError> {
    let ctx = call.ctx("cancel", &body);
    answer(
        StatusCode::OK,
        state.commands.cancel(&ctx, reservation_id, body).await?,
    )
}

/// A staff route `POST {path}` that moves one reservation a step along its
/// life cycle by the command `$command` and answers `StatusChanged`, with
/// its error answers `$errors` (`$codes` besides the common ones). The
/// steps differ only in path, command and codes, so the handler is
/// written once here.
macro_rules! life_cycle_route {
    ($(#[$doc:meta])* $name:ident = $command:ident at $path:tt,
     $errors:ident: [$($code:expr),+ $(,)?]) => {
        problems!(
            #[doc = concat!("The error answers of `", stringify!($name), "`.")]
            $errors: ANY, AUTH, PARAMS, COMMAND, &[$($code),+]
        );

        $(#[$doc])*
        #[utoipa::path(post, path = $path, tag = "staff",
            params(IdempotencyKeyHeader, ("reservation_id" = Uuid, Path)),
            responses((status = 200, body = StatusChanged),
                $errors))]
        async fn $name(
            State(state): State<AppState>,
            StaffCall(call): StaffCall,
            Path(reservation_id): Path<Uuid>,
        ) -> Result<Response, ApiError> {
            let ctx = call.ctx(stringify!($command), &reservation_id);
            answer(
                StatusCode::OK,
                state.commands.$command(&ctx, reservation_id).await?,
            )
        }
    };
}

life_cycle_route!(
    /// The patient arrived.
    check_in = check_in at "/v1/reservations/{reservation_id}/check-in",
    CheckInErrors: [Code::NotFound, Code::InvalidTransition]
);

life_cycle_route!(
    /// The treatment was given (only after check-in).
    complete = complete at "/v1/reservations/{reservation_id}/complete",
    CompleteErrors: [Code::NotFound, Code::InvalidTransition]
);

life_cycle_route!(
    /// The patient did not come; the payment is forfeited.
    no_show = mark_no_show at "/v1/reservations/{reservation_id}/no-show",
    NoShowErrors: [Code::NotFound, Code::InvalidTransition, Code::InconsistentInput]
);

problems!(
    /// The error answers of `join_waitlist`.
    JoinWaitlistErrors: ANY, AUTH, BODY, COMMAND, BOOKING
);

/// Put a patient on the waitlist for a window of start times.
#[utoipa::path(post, path = "/v1/waitlist", tag = "staff", request_body = JoinWaitlist,
    params(IdempotencyKeyHeader), responses((status = 201, body = Waitlisted),
        JoinWaitlistErrors))]
async fn join_waitlist(
    State(state): State<AppState>,
    StaffCall(call): StaffCall,
    Json(body): Json<JoinWaitlist>,
) -> Result<Response, ApiError> {
    let ctx = call.ctx("join_waitlist", &body);
    answer(
        StatusCode::CREATED,
        state.commands.join_waitlist(&ctx, body).await?,
    )
}

problems!(
    /// The error answers of `add_block`.
    AddBlockErrors: ANY, AUTH, PARAMS, BODY, COMMAND, BLOCKING
);

/// Block a resource; an emergency block displaces overlapping bookings and
/// restores their payment.
#[utoipa::path(post, path = "/v1/resources/{resource_id}/blocks", tag = "staff",
    params(IdempotencyKeyHeader, ("resource_id" = Uuid, Path)), request_body = AddBlock,
    responses((status = 201, body = BlockAdded),
        AddBlockErrors))]
async fn add_block(
    State(state): State<AppState>,
    StaffCall(call): StaffCall,
    Path(resource_id): Path<Uuid>,
    Json(body): Json<AddBlock>,
) -> Result<Response, ApiError> {
    let ctx = call.ctx("add_block", &body);
    answer(
        StatusCode::CREATED,
        state.commands.add_block(&ctx, resource_id, body).await?,
    )
}

problems!(
    /// The error answers of `add_closure`.
    AddClosureErrors: ANY, AUTH, PARAMS, BODY, COMMAND, BLOCKING
);

/// Close a whole clinic for a period, displacing every booking in it.
#[utoipa::path(post, path = "/v1/clinics/{clinic_id}/closures", tag = "admin",
    params(IdempotencyKeyHeader, ("clinic_id" = Uuid, Path)), request_body = AddClosure,
    responses((status = 201, body = ClosureAdded),
        AddClosureErrors))]
async fn add_closure(
    State(state): State<AppState>,
    AdminCall(call): AdminCall,
    Path(clinic_id): Path<Uuid>,
    Json(body): Json<AddClosure>,
) -> Result<Response, ApiError> {
    let ctx = call.ctx("add_closure", &body);
    answer(
        StatusCode::CREATED,
        state.commands.add_closure(&ctx, clinic_id, body).await?,
    )
}

problems!(
    /// The error answers of `quote`.
    QuoteErrors: ANY, AUTH, PARAMS, BOOKING, &[Code::Unavailable]
);

/// The price of a treatment at a time, with the clinic's rules and an
/// optional promo code; writes nothing.
#[utoipa::path(get, path = "/v1/quotes", tag = "staff", params(QuoteQuery),
    responses((status = 200, body = PriceAnswer),
        QuoteErrors))]
async fn quote(
    State(state): State<AppState>,
    _staff: StaffCall,
    Query(query): Query<QuoteQuery>,
) -> Result<axum::Json<PriceAnswer>, ApiError> {
    Ok(axum::Json(state.commands.quote(query).await?))
}
