//! Wallet and package routes (role `staff`).

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use clinicbook_commands::money::{
    Balance, Deposit, PackageBought, PurchasePackage, TransferPackage, WalletRefund,
};
use clinicbook_projections::query::detail::{PackageView, WalletView};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::consistency::{wait_for, MinPosition, PositionQuery};
use crate::call::{answer, IdempotencyKeyHeader, StaffCall};
use crate::error::{problems, ApiError, Code, ANY, AUTH, BODY, COMMAND, PARAMS, READ};
use crate::extract::{Json, Path, Query};
use crate::state::AppState;

/// The wallet and package routes with their OpenAPI descriptions.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(deposit))
        .routes(routes!(refund))
        .routes(routes!(get_wallet))
        .routes(routes!(purchase_package))
        .routes(routes!(transfer_package))
        .routes(routes!(get_package))
}

problems!(
    /// The error answers of `deposit`.
    DepositErrors: ANY, AUTH, PARAMS, BODY, COMMAND, &[Code::InvalidInput, Code::InconsistentInput, Code::DuplicateReference]
);

/// Pay money into a patient's wallet; each external reference is credited once.
#[utoipa::path(post, path = "/v1/wallets/{patient_id}/deposits", tag = "staff",
    params(IdempotencyKeyHeader, ("patient_id" = Uuid, Path)), request_body = Deposit,
    responses((status = 201, body = Balance),
        DepositErrors))]
async fn deposit(
    State(state): State<AppState>,
    StaffCall(call): StaffCall,
    Path(patient_id): Path<Uuid>,
    Json(body): Json<Deposit>,
) -> Result<Response, ApiError> {
    let ctx = call.ctx("deposit", &body);
    answer(
        StatusCode::CREATED,
        state.commands.deposit(&ctx, patient_id, body).await?,
    )
}

problems!(
    /// The error answers of `refund`.
    RefundErrors: ANY, AUTH, PARAMS, BODY, COMMAND, &[Code::InvalidInput, Code::InconsistentInput, Code::DuplicateReference, Code::InsufficientFunds]
);

/// Pay part of a wallet's balance back out to the patient.
#[utoipa::path(post, path = "/v1/wallets/{patient_id}/refunds", tag = "staff",
    params(IdempotencyKeyHeader, ("patient_id" = Uuid, Path)), request_body = WalletRefund,
    responses((status = 201, body = Balance),
        RefundErrors))]
async fn refund(
    State(state): State<AppState>,
    StaffCall(call): StaffCall,
    Path(patient_id): Path<Uuid>,
    Json(body): Json<WalletRefund>,
) -> Result<Response, ApiError> {
    let ctx = call.ctx("wallet_refund", &body);
    answer(
        StatusCode::CREATED,
        state.commands.refund(&ctx, patient_id, body).await?,
    )
}

problems!(
    /// The error answers of `get_wallet`.
    GetWalletErrors: ANY, AUTH, PARAMS, READ
);

/// A wallet's balance and transactions (a never-used wallet has balance 0).
#[utoipa::path(get, path = "/v1/wallets/{patient_id}", tag = "staff",
    params(("patient_id" = Uuid, Path), PositionQuery),
    responses((status = 200, body = WalletView),
        GetWalletErrors))]
async fn get_wallet(
    State(state): State<AppState>,
    _staff: StaffCall,
    Path(patient_id): Path<Uuid>,
    Query(query): Query<PositionQuery>,
) -> Result<axum::Json<WalletView>, ApiError> {
    wait_for(&state, "wallets", MinPosition(query.min_position)).await?;
    Ok(axum::Json(state.read.wallet(patient_id).await?))
}

problems!(
    /// The error answers of `purchase_package`.
    PurchasePackageErrors: ANY, AUTH, BODY, COMMAND, &[Code::InvalidInput, Code::InconsistentInput, Code::NotFound, Code::AlreadyExists, Code::InsufficientFunds, Code::DuplicateReference]
);

/// Buy a program as a package, paid from the wallet or externally.
#[utoipa::path(post, path = "/v1/packages", tag = "staff", request_body = PurchasePackage,
    params(IdempotencyKeyHeader),
    responses((status = 201, body = PackageBought),
        PurchasePackageErrors))]
async fn purchase_package(
    State(state): State<AppState>,
    StaffCall(call): StaffCall,
    Json(body): Json<PurchasePackage>,
) -> Result<Response, ApiError> {
    let ctx = call.ctx("purchase_package", &body);
    answer(
        StatusCode::CREATED,
        state.commands.purchase_package(&ctx, body).await?,
    )
}

problems!(
    /// The error answers of `transfer_package`.
    TransferPackageErrors: ANY, AUTH, PARAMS, BODY, COMMAND, &[Code::NotFound]
);

/// Make a package valid at another clinic instead.
#[utoipa::path(post, path = "/v1/packages/{package_id}/transfer", tag = "staff",
    params(IdempotencyKeyHeader, ("package_id" = Uuid, Path)), request_body = TransferPackage,
    responses((status = 200, body = PackageView),
        TransferPackageErrors))]
async fn transfer_package(
    State(state): State<AppState>,
    StaffCall(call): StaffCall,
    Path(package_id): Path<Uuid>,
    Json(body): Json<TransferPackage>,
) -> Result<Response, ApiError> {
    let ctx = call.ctx("transfer_package", &body);
    answer(
        StatusCode::OK,
        state
            .commands
            .transfer_package(&ctx, package_id, body)
            .await?,
    )
}

problems!(
    /// The error answers of `get_package`.
    GetPackageErrors: ANY, AUTH, PARAMS, READ, &[Code::NotFound]
);

/// A package: sessions, expiry, clinics and history.
#[utoipa::path(get, path = "/v1/packages/{package_id}", tag = "staff",
    params(("package_id" = Uuid, Path), PositionQuery),
    responses((status = 200, body = PackageView),
        GetPackageErrors))]
async fn get_package(
    State(state): State<AppState>,
    _staff: StaffCall,
    Path(package_id): Path<Uuid>,
    Query(query): Query<PositionQuery>,
) -> Result<axum::Json<PackageView>, ApiError> {
    wait_for(&state, "packages", MinPosition(query.min_position)).await?;
    Ok(axum::Json(state.read.package(package_id).await?))
}
