//! Wallet and package routes (role `staff`).

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use clinicbook_projections::query::detail::WalletPage;
use clinicbook_wire::money::{
    Balance, Deposit, PackageBought, PackageView, PurchasePackage, TransferPackage, WalletRefund,
    WalletView,
};
use serde::Deserialize;
use utoipa::IntoParams;
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

/// A page of a wallet's history, and the consistency token.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct WalletQuery {
    /// Transactions after this sequence (default 0: from the first); pass
    /// the previous page's `next_after`.
    #[param(minimum = 0, maximum = 9223372036854775807_i64)]
    pub after: Option<i64>,
    /// At most this many transactions (default 100, at most 1000).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<i64>,
    /// Wait until the read model has applied this position (the `position`
    /// of a command's answer).
    #[param(minimum = 0, maximum = 9223372036854775807_i64)]
    pub min_position: Option<i64>,
}

problems!(
    /// The error answers of `get_wallet`.
    GetWalletErrors: ANY, AUTH, PARAMS, READ
);

/// A wallet's balance and a page of its transactions, oldest first (a
/// never-used wallet has balance 0).
#[utoipa::path(get, path = "/v1/wallets/{patient_id}", tag = "staff",
    params(("patient_id" = Uuid, Path), WalletQuery),
    responses((status = 200, body = WalletView),
        GetWalletErrors))]
async fn get_wallet(
    State(state): State<AppState>,
    _staff: StaffCall,
    Path(patient_id): Path<Uuid>,
    Query(query): Query<WalletQuery>,
) -> Result<axum::Json<WalletView>, ApiError> {
    let after = query.after.unwrap_or(0);
    if after < 0 {
        return Err(ApiError::bad_request(
            "after: must be a sequence (0 or more)",
        ));
    }
    let limit = query.limit.unwrap_or(WalletPage::DEFAULT_LIMIT);
    if !(1..=WalletPage::MAX_LIMIT).contains(&limit) {
        return Err(ApiError::bad_request(format!(
            "limit: must be 1 to {}",
            WalletPage::MAX_LIMIT
        )));
    }
    wait_for(&state, "wallets", MinPosition(query.min_position)).await?;
    Ok(axum::Json(
        state
            .read
            .wallet(patient_id, WalletPage { after, limit })
            .await?,
    ))
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
