//! Wallet and package routes (role `staff`).

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use clinicbook_commands::money::{
    Balance, Deposit, PackageBought, PurchasePackage, TransferPackage, WalletRefund,
};
use clinicbook_projections::query::detail::{PackageView, WalletPage, WalletView};
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::consistency::{wait_for, MinPosition, PositionQuery};
use crate::call::{answer, StaffCall};
use crate::error::{ApiError, Problem};
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

/// Pay money into a patient's wallet; each external reference is credited once.
#[utoipa::path(post, path = "/v1/wallets/{patient_id}/deposits", tag = "staff",
    params(("patient_id" = Uuid, Path), ("Idempotency-Key" = Option<String>, Header)), request_body = Deposit,
    responses((status = 201, body = Balance), (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 403, body = Problem), (status = 409, body = Problem, description = "duplicate_reference")))]
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

/// Pay part of a wallet's balance back out to the patient.
#[utoipa::path(post, path = "/v1/wallets/{patient_id}/refunds", tag = "staff",
    params(("patient_id" = Uuid, Path)), request_body = WalletRefund,
    responses((status = 201, body = Balance), (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 403, body = Problem), (status = 409, body = Problem), (status = 422, body = Problem, description = "insufficient_funds")))]
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
    pub after: Option<i64>,
    /// At most this many transactions (default 100, at most 1000).
    pub limit: Option<i64>,
    /// Wait until the read model has applied this position (the `position`
    /// of a command's answer).
    pub min_position: Option<i64>,
}

/// A wallet's balance and a page of its transactions, oldest first (a
/// never-used wallet has balance 0).
#[utoipa::path(get, path = "/v1/wallets/{patient_id}", tag = "staff",
    params(("patient_id" = Uuid, Path), WalletQuery),
    responses((status = 200, body = WalletView),
        (status = 400, body = Problem, description = "bad after, limit or min_position"),
        (status = 401, body = Problem), (status = 403, body = Problem), (status = 503, body = Problem)))]
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

/// Buy a program as a package, paid from the wallet or externally.
#[utoipa::path(post, path = "/v1/packages", tag = "staff", request_body = PurchasePackage,
    params(("Idempotency-Key" = Option<String>, Header)),
    responses((status = 201, body = PackageBought), (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 403, body = Problem), (status = 404, body = Problem), (status = 409, body = Problem),
        (status = 422, body = Problem, description = "insufficient_funds")))]
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

/// Make a package valid at another clinic instead.
#[utoipa::path(post, path = "/v1/packages/{package_id}/transfer", tag = "staff",
    params(("package_id" = Uuid, Path)), request_body = TransferPackage,
    responses((status = 200, body = PackageView), (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 403, body = Problem), (status = 404, body = Problem)))]
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

/// A package: sessions, expiry, clinics and history.
#[utoipa::path(get, path = "/v1/packages/{package_id}", tag = "staff",
    params(("package_id" = Uuid, Path), PositionQuery),
    responses((status = 200, body = PackageView), (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 403, body = Problem), (status = 404, body = Problem), (status = 503, body = Problem)))]
async fn get_package(
    State(state): State<AppState>,
    _staff: StaffCall,
    Path(package_id): Path<Uuid>,
    Query(query): Query<PositionQuery>,
) -> Result<axum::Json<PackageView>, ApiError> {
    wait_for(&state, "packages", MinPosition(query.min_position)).await?;
    Ok(axum::Json(state.read.package(package_id).await?))
}
