//! Patient profiles (role `staff`; erasure: `admin`).
//!
//! Personal fields are sealed before they are stored and opened only here,
//! for the answer: the answers of commands that are stored with
//! idempotency keys hold no personal data (a `PUT` answers the profile it
//! was sent, rebuilt from the request).

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use clinicbook_commands::CommandError;
use clinicbook_domain::{DomainError, PatientId};
use clinicbook_wire::patients::{
    ErasePatient, PatientErased, PatientInput, PatientSaved, PatientView,
};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::consistency::{wait_for, MinPosition, PositionQuery};
use crate::call::{answer, AdminCall, IdempotencyKeyHeader, StaffCall};
use crate::error::{problems, ApiError, Code, ANY, AUTH, BODY, COMMAND, PARAMS, READ};
use crate::extract::{Json, Path, Query};
use crate::state::AppState;

/// The patient routes with their OpenAPI descriptions.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(register_patient))
        .routes(routes!(update_patient, get_patient))
        .routes(routes!(erase_patient))
}

problems!(
    /// The error answers of `register_patient`.
    RegisterPatientErrors: ANY, AUTH, BODY, COMMAND, &[Code::InvalidInput, Code::AlreadyExists]
);

/// Create a patient's profile; name, email and phone are stored encrypted
/// with a key of the patient's own.
#[utoipa::path(post, path = "/v1/patients", tag = "staff", request_body = PatientInput,
    params(IdempotencyKeyHeader),
    responses((status = 201, body = PatientSaved),
        RegisterPatientErrors))]
async fn register_patient(
    State(state): State<AppState>,
    StaffCall(call): StaffCall,
    Json(body): Json<PatientInput>,
) -> Result<Response, ApiError> {
    let ctx = call.ctx("register_patient", &body);
    answer(
        StatusCode::CREATED,
        state.commands.register_patient(&ctx, &body).await?,
    )
}

problems!(
    /// The error answers of `update_patient`.
    UpdatePatientErrors: ANY, AUTH, PARAMS, BODY, COMMAND, &[Code::InvalidInput, Code::InconsistentInput, Code::NotFound, Code::PatientErased]
);

/// Replace a patient's profile; answers the profile.
#[utoipa::path(put, path = "/v1/patients/{patient_id}", tag = "staff",
    params(IdempotencyKeyHeader, ("patient_id" = Uuid, Path)), request_body = PatientInput,
    responses((status = 200, body = PatientView),
        UpdatePatientErrors))]
async fn update_patient(
    State(state): State<AppState>,
    StaffCall(call): StaffCall,
    Path(patient_id): Path<Uuid>,
    Json(body): Json<PatientInput>,
) -> Result<Response, ApiError> {
    let ctx = call.ctx("update_patient", &body);
    let done = state
        .commands
        .update_patient(&ctx, patient_id, &body)
        .await?;
    let view = body.view(patient_id)?;
    answer(StatusCode::OK, done.map(|_| view))
}

problems!(
    /// The error answers of `get_patient`.
    GetPatientErrors: ANY, AUTH, PARAMS, READ, &[Code::NotFound, Code::PatientErased]
);

/// A patient's profile; 410 `patient_erased` once erased.
#[utoipa::path(get, path = "/v1/patients/{patient_id}", tag = "staff",
    params(("patient_id" = Uuid, Path), PositionQuery),
    responses((status = 200, body = PatientView),
        GetPatientErrors))]
async fn get_patient(
    State(state): State<AppState>,
    _staff: StaffCall,
    Path(patient_id): Path<Uuid>,
    Query(query): Query<PositionQuery>,
) -> Result<axum::Json<PatientView>, ApiError> {
    wait_for(&state, "patients", MinPosition(query.min_position)).await?;
    let stored = state.read.patient(patient_id).await?;
    let opener = state
        .commands
        .store()
        .opener(PatientId(patient_id))
        .await
        .map_err(|e| ApiError::from(CommandError::Store(e)))?;
    // The key goes in the erasure's own transaction, so a read model that
    // has not applied `PatientErased` yet still answers 410.
    let (Some(contact), None, false) = (stored.contact, stored.erased_at, opener.is_erased())
    else {
        return Err(DomainError::PatientErased.into());
    };
    let open = |sealed| {
        opener
            .open(sealed)
            .map_err(|e| ApiError::from(CommandError::Store(e)))
    };
    Ok(axum::Json(PatientView {
        patient_id,
        name: open(&contact.name)?,
        email: contact.email.as_ref().map(open).transpose()?,
        phone: contact.phone.as_ref().map(open).transpose()?,
        language: <&'static str>::from(stored.language).to_owned(),
        consent: stored.consent.into(),
    }))
}

problems!(
    /// The error answers of `erase_patient`.
    ErasePatientErrors: ANY, AUTH, PARAMS, BODY, COMMAND, &[Code::InvalidInput, Code::NotFound, Code::PatientErased]
);

/// Erase a patient's personal data (admin): the patient's key is destroyed
/// with the `PatientErased` event, so name, email and phone read as
/// `"[erased]"` everywhere; bookings, payments and reports stay.
#[utoipa::path(post, path = "/v1/patients/{patient_id}/erase", tag = "admin",
    params(IdempotencyKeyHeader, ("patient_id" = Uuid, Path)), request_body = ErasePatient,
    responses((status = 200, body = PatientErased),
        ErasePatientErrors))]
async fn erase_patient(
    State(state): State<AppState>,
    AdminCall(call): AdminCall,
    Path(patient_id): Path<Uuid>,
    Json(body): Json<ErasePatient>,
) -> Result<Response, ApiError> {
    let ctx = call.ctx("erase_patient", &body);
    answer(
        StatusCode::OK,
        state
            .commands
            .erase_patient(&ctx, patient_id, &body)
            .await?,
    )
}
