//! Admin routes: clinics, opening hours, resources, treatments, pricing
//! rules, programs and promo codes (role `admin`).

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use clinicbook_wire::admin::{
    AddResource, AddTreatment, ClinicCreated, ClinicView, CreateProgram, CreatePromoCode,
    OpeningHoursInput, PricingRulesInput, ProgramCreated, ProgramView, PromoCreated,
    PromoDeactivated, RegisterClinic, ResourceCreated, TreatmentCreated, Updated,
};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::consistency::{wait_for, MinPosition, PositionQuery};
use crate::call::{answer, AdminCall, IdempotencyKeyHeader, StaffCall};
use crate::error::{problems, ApiError, Code, ANY, AUTH, BODY, COMMAND, PARAMS, READ};
use crate::extract::{Json, Path, Query};
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

problems!(
    /// The error answers of `register_clinic`.
    RegisterClinicErrors: ANY, AUTH, BODY, COMMAND, &[Code::InvalidInput, Code::AlreadyExists]
);

/// Register a clinic.
#[utoipa::path(post, path = "/v1/clinics", tag = "admin", request_body = RegisterClinic,
    params(IdempotencyKeyHeader),
    responses((status = 201, body = ClinicCreated, description = "created; the answer also has `position`"),
        RegisterClinicErrors))]
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

problems!(
    /// The error answers of `get_clinic`.
    GetClinicErrors: ANY, AUTH, PARAMS, READ, &[Code::NotFound]
);

/// A clinic with its hours, resources, treatments, pricing rules and closures.
#[utoipa::path(get, path = "/v1/clinics/{clinic_id}", tag = "admin",
    params(("clinic_id" = Uuid, Path), PositionQuery),
    responses((status = 200, body = ClinicView),
        GetClinicErrors))]
async fn get_clinic(
    State(state): State<AppState>,
    _staff: StaffCall,
    Path(clinic_id): Path<Uuid>,
    Query(query): Query<PositionQuery>,
) -> Result<axum::Json<ClinicView>, ApiError> {
    wait_for(&state, "catalog", MinPosition(query.min_position)).await?;
    Ok(axum::Json(state.read.clinic(clinic_id).await?))
}

problems!(
    /// The error answers of `set_opening_hours`.
    SetOpeningHoursErrors: ANY, AUTH, PARAMS, BODY, COMMAND, &[Code::InvalidInput, Code::InconsistentInput, Code::NotFound]
);

/// Replace a clinic's weekly opening hours (clinic-local times).
#[utoipa::path(put, path = "/v1/clinics/{clinic_id}/opening-hours", tag = "admin",
    params(IdempotencyKeyHeader, ("clinic_id" = Uuid, Path)), request_body = OpeningHoursInput,
    responses((status = 200, body = Updated),
        SetOpeningHoursErrors))]
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

problems!(
    /// The error answers of `add_resource`.
    AddResourceErrors: ANY, AUTH, PARAMS, BODY, COMMAND, &[Code::InvalidInput, Code::NotFound, Code::AlreadyExists, Code::DuplicateName]
);

/// Add a room, device or practitioner.
#[utoipa::path(post, path = "/v1/clinics/{clinic_id}/resources", tag = "admin",
    params(IdempotencyKeyHeader, ("clinic_id" = Uuid, Path)), request_body = AddResource,
    responses((status = 201, body = ResourceCreated),
        AddResourceErrors))]
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

problems!(
    /// The error answers of `add_treatment`.
    AddTreatmentErrors: ANY, AUTH, PARAMS, BODY, COMMAND, &[Code::InvalidInput, Code::NotFound, Code::AlreadyExists, Code::DuplicateName]
);

/// Add a treatment.
#[utoipa::path(post, path = "/v1/clinics/{clinic_id}/treatments", tag = "admin",
    params(IdempotencyKeyHeader, ("clinic_id" = Uuid, Path)), request_body = AddTreatment,
    responses((status = 201, body = TreatmentCreated),
        AddTreatmentErrors))]
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

problems!(
    /// The error answers of `set_pricing_rules`.
    SetPricingRulesErrors: ANY, AUTH, PARAMS, BODY, COMMAND, &[Code::InvalidInput, Code::InconsistentInput, Code::NotFound]
);

/// Replace a clinic's pricing rules.
#[utoipa::path(put, path = "/v1/clinics/{clinic_id}/pricing-rules", tag = "admin",
    params(IdempotencyKeyHeader, ("clinic_id" = Uuid, Path)), request_body = PricingRulesInput,
    responses((status = 200, body = Updated),
        SetPricingRulesErrors))]
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

problems!(
    /// The error answers of `create_program`.
    CreateProgramErrors: ANY, AUTH, BODY, COMMAND, &[Code::InvalidInput, Code::NotFound, Code::AlreadyExists]
);

/// Create a program (a package offer).
#[utoipa::path(post, path = "/v1/programs", tag = "admin", request_body = CreateProgram,
    params(IdempotencyKeyHeader), responses((status = 201, body = ProgramCreated),
        CreateProgramErrors))]
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

problems!(
    /// The error answers of `get_program`.
    GetProgramErrors: ANY, AUTH, PARAMS, READ, &[Code::NotFound]
);

/// A program.
#[utoipa::path(get, path = "/v1/programs/{program_id}", tag = "admin",
    params(("program_id" = Uuid, Path), PositionQuery),
    responses((status = 200, body = ProgramView),
        GetProgramErrors))]
async fn get_program(
    State(state): State<AppState>,
    _staff: StaffCall,
    Path(program_id): Path<Uuid>,
    Query(query): Query<PositionQuery>,
) -> Result<axum::Json<ProgramView>, ApiError> {
    wait_for(&state, "catalog", MinPosition(query.min_position)).await?;
    Ok(axum::Json(state.read.program(program_id).await?))
}

problems!(
    /// The error answers of `create_promo_code`.
    CreatePromoCodeErrors: ANY, AUTH, BODY, COMMAND, &[Code::InvalidInput, Code::InconsistentInput, Code::NotFound, Code::AlreadyExists]
);

/// Create a promo code.
#[utoipa::path(post, path = "/v1/promo-codes", tag = "admin", request_body = CreatePromoCode,
    params(IdempotencyKeyHeader), responses((status = 201, body = PromoCreated),
        CreatePromoCodeErrors))]
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

problems!(
    /// The error answers of `deactivate_promo_code`.
    DeactivatePromoCodeErrors: ANY, AUTH, PARAMS, COMMAND, &[Code::InvalidInput, Code::NotFound]
);

/// Stop a promo code from being redeemed.
#[utoipa::path(post, path = "/v1/promo-codes/{code}/deactivate", tag = "admin",
    params(IdempotencyKeyHeader, ("code" = clinicbook_wire::schema::PromoCode, Path)),
    responses((status = 200, body = PromoDeactivated),
        DeactivatePromoCodeErrors))]
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
