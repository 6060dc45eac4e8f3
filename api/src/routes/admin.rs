//! Admin routes: clinics, opening hours, resources, treatments, pricing
//! rules, programs and promo codes (role `admin`).

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use clinicbook_commands::admin::{
    AddResource, AddTreatment, ClinicCreated, ClinicView, CreateProgram, CreatePromoCode,
    OpeningHoursInput, PricingRulesInput, ProgramCreated, ProgramView, PromoCreated,
    PromoDeactivated, RegisterClinic, ResourceCreated, TreatmentCreated, Updated,
};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::call::{answer, AdminCall, StaffCall};
use crate::error::{ApiError, Problem};
use crate::extract::{Json, Path};
use crate::state::AppState;

/// The admin routes with their OpenAPI descriptions.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(register_clinic))
        .routes(routes!(get_clinic))
        .routes(routes!(set_opening_hours))
        .routes(routes!(add_resource))
        .routes(routes!(add_treatment))
        .routes(routes!(set_pricing_rules))
        .routes(routes!(create_program))
        .routes(routes!(get_program))
        .routes(routes!(create_promo_code))
        .routes(routes!(deactivate_promo_code))
}

/// Register a clinic.
#[utoipa::path(post, path = "/v1/clinics", tag = "admin", request_body = RegisterClinic,
    params(("Idempotency-Key" = Option<String>, Header, description = "makes a retry safe")),
    responses((status = 201, body = ClinicCreated, description = "created; the answer also has `position`"),
        (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 409, body = Problem, description = "already_exists"), (status = 422, body = Problem)))]
async fn register_clinic(
    State(state): State<AppState>,
    AdminCall(call): AdminCall,
    Json(body): Json<RegisterClinic>,
) -> Result<Response, ApiError> {
    let ctx = call.ctx("register_clinic", &body);
    answer(
        StatusCode::CREATED,
        state.commands.register_clinic(&ctx, body).await?,
    )
}

/// A clinic with its hours, resources, treatments, pricing rules and closures.
#[utoipa::path(get, path = "/v1/clinics/{clinic_id}", tag = "admin",
    params(("clinic_id" = Uuid, Path)),
    responses((status = 200, body = ClinicView), (status = 401, body = Problem), (status = 404, body = Problem)))]
async fn get_clinic(
    State(state): State<AppState>,
    _staff: StaffCall,
    Path(clinic_id): Path<Uuid>,
) -> Result<axum::Json<ClinicView>, ApiError> {
    Ok(axum::Json(state.commands.clinic(clinic_id).await?))
}

/// Replace a clinic's weekly opening hours (clinic-local times).
#[utoipa::path(put, path = "/v1/clinics/{clinic_id}/opening-hours", tag = "admin",
    params(("clinic_id" = Uuid, Path)), request_body = OpeningHoursInput,
    responses((status = 200, body = Updated), (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 403, body = Problem), (status = 404, body = Problem)))]
async fn set_opening_hours(
    State(state): State<AppState>,
    AdminCall(call): AdminCall,
    Path(clinic_id): Path<Uuid>,
    Json(body): Json<OpeningHoursInput>,
) -> Result<Response, ApiError> {
    let ctx = call.ctx("set_opening_hours", &body);
    answer(
        StatusCode::OK,
        state
            .commands
            .set_opening_hours(&ctx, clinic_id, body)
            .await?,
    )
}

/// Add a room, device or practitioner.
#[utoipa::path(post, path = "/v1/clinics/{clinic_id}/resources", tag = "admin",
    params(("clinic_id" = Uuid, Path)), request_body = AddResource,
    responses((status = 201, body = ResourceCreated), (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 403, body = Problem), (status = 404, body = Problem), (status = 409, body = Problem)))]
async fn add_resource(
    State(state): State<AppState>,
    AdminCall(call): AdminCall,
    Path(clinic_id): Path<Uuid>,
    Json(body): Json<AddResource>,
) -> Result<Response, ApiError> {
    let ctx = call.ctx("add_resource", &body);
    answer(
        StatusCode::CREATED,
        state.commands.add_resource(&ctx, clinic_id, body).await?,
    )
}

/// Add a treatment.
#[utoipa::path(post, path = "/v1/clinics/{clinic_id}/treatments", tag = "admin",
    params(("clinic_id" = Uuid, Path)), request_body = AddTreatment,
    responses((status = 201, body = TreatmentCreated), (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 403, body = Problem), (status = 404, body = Problem), (status = 409, body = Problem)))]
async fn add_treatment(
    State(state): State<AppState>,
    AdminCall(call): AdminCall,
    Path(clinic_id): Path<Uuid>,
    Json(body): Json<AddTreatment>,
) -> Result<Response, ApiError> {
    let ctx = call.ctx("add_treatment", &body);
    answer(
        StatusCode::CREATED,
        state.commands.add_treatment(&ctx, clinic_id, body).await?,
    )
}

/// Replace a clinic's pricing rules.
#[utoipa::path(put, path = "/v1/clinics/{clinic_id}/pricing-rules", tag = "admin",
    params(("clinic_id" = Uuid, Path)), request_body = PricingRulesInput,
    responses((status = 200, body = Updated), (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 403, body = Problem), (status = 404, body = Problem)))]
async fn set_pricing_rules(
    State(state): State<AppState>,
    AdminCall(call): AdminCall,
    Path(clinic_id): Path<Uuid>,
    Json(body): Json<PricingRulesInput>,
) -> Result<Response, ApiError> {
    let ctx = call.ctx("set_pricing_rules", &body);
    answer(
        StatusCode::OK,
        state
            .commands
            .set_pricing_rules(&ctx, clinic_id, body)
            .await?,
    )
}

/// Create a program (a package offer).
#[utoipa::path(post, path = "/v1/programs", tag = "admin", request_body = CreateProgram,
    responses((status = 201, body = ProgramCreated), (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 403, body = Problem), (status = 404, body = Problem), (status = 409, body = Problem)))]
async fn create_program(
    State(state): State<AppState>,
    AdminCall(call): AdminCall,
    Json(body): Json<CreateProgram>,
) -> Result<Response, ApiError> {
    let ctx = call.ctx("create_program", &body);
    answer(
        StatusCode::CREATED,
        state.commands.create_program(&ctx, body).await?,
    )
}

/// A program.
#[utoipa::path(get, path = "/v1/programs/{program_id}", tag = "admin",
    params(("program_id" = Uuid, Path)),
    responses((status = 200, body = ProgramView), (status = 401, body = Problem), (status = 404, body = Problem)))]
async fn get_program(
    State(state): State<AppState>,
    _staff: StaffCall,
    Path(program_id): Path<Uuid>,
) -> Result<axum::Json<ProgramView>, ApiError> {
    Ok(axum::Json(state.commands.program(program_id).await?))
}

/// Create a promo code.
#[utoipa::path(post, path = "/v1/promo-codes", tag = "admin", request_body = CreatePromoCode,
    responses((status = 201, body = PromoCreated), (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 403, body = Problem), (status = 404, body = Problem), (status = 409, body = Problem)))]
async fn create_promo_code(
    State(state): State<AppState>,
    AdminCall(call): AdminCall,
    Json(body): Json<CreatePromoCode>,
) -> Result<Response, ApiError> {
    let ctx = call.ctx("create_promo_code", &body);
    answer(
        StatusCode::CREATED,
        state.commands.create_promo_code(&ctx, body).await?,
    )
}

/// Stop a promo code from being redeemed.
#[utoipa::path(post, path = "/v1/promo-codes/{code}/deactivate", tag = "admin",
    params(("code" = String, Path)),
    responses((status = 200, body = PromoDeactivated), (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 404, body = Problem)))]
async fn deactivate_promo_code(
    State(state): State<AppState>,
    AdminCall(call): AdminCall,
    Path(code): Path<String>,
) -> Result<Response, ApiError> {
    let ctx = call.ctx("deactivate_promo_code", &code);
    answer(
        StatusCode::OK,
        state.commands.deactivate_promo_code(&ctx, &code).await?,
    )
}
