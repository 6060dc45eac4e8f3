//! Webhook subscriptions and their deliveries (role `admin`).

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use clinicbook_notify::subscriptions::{
    CreateWebhook, DeliveryPage, WebhookCreated, WebhookDeleted, WebhookList,
};
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::call::{AdminCall, IdempotencyKeyHeader};
use crate::error::{problems, ApiError, Code, ANY, AUTH, BODY, PARAMS};
use crate::extract::{Json, Path, Query};
use crate::state::AppState;

/// The webhook routes with their OpenAPI descriptions.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_webhook, list_webhooks))
        .routes(routes!(delete_webhook))
        .routes(routes!(deliveries))
}

problems!(
    /// The error answers of `create_webhook`.
    CreateWebhookErrors: ANY, AUTH, BODY, &[Code::InvalidInput, Code::InconsistentInput, Code::IdempotencyKeyReused, Code::Unavailable]
);

/// Subscribe a receiver to events committed from now on. Deliveries are
/// `POST url` with `{id, type, occurred_at, data}` and the headers
/// `Clinicbook-Event-Id` and `Clinicbook-Signature: t=<unix seconds>,v1=<hex
/// HMAC-SHA256 of "<t>.<body>" with the secret>`; the secret is answered
/// only here. The same Idempotency-Key and body answer the first
/// subscription again, or 422 `idempotency_key_reused` once it is deleted.
#[utoipa::path(post, path = "/v1/webhooks", tag = "admin", request_body = CreateWebhook,
    params(IdempotencyKeyHeader),
    responses((status = 201, body = WebhookCreated),
        CreateWebhookErrors))]
async fn create_webhook(
    State(state): State<AppState>,
    AdminCall(call): AdminCall,
    Json(body): Json<CreateWebhook>,
) -> Result<Response, ApiError> {
    let ctx = call.ctx("create_webhook", &body);
    let key = ctx
        .idempotency
        .as_ref()
        .map(|k| (k.scope.as_str(), k.key.as_str()));
    let created = state.webhooks.create(&body, key).await?;
    Ok((StatusCode::CREATED, axum::Json(created)).into_response())
}

problems!(
    /// The error answers of `list_webhooks`.
    ListWebhooksErrors: ANY, AUTH, &[Code::Unavailable]
);

/// Every subscription (without secrets).
#[utoipa::path(get, path = "/v1/webhooks", tag = "admin",
    responses((status = 200, body = WebhookList),
        ListWebhooksErrors))]
async fn list_webhooks(
    State(state): State<AppState>,
    AdminCall(_call): AdminCall,
) -> Result<axum::Json<WebhookList>, ApiError> {
    Ok(axum::Json(state.webhooks.list().await?))
}

problems!(
    /// The error answers of `delete_webhook`.
    DeleteWebhookErrors: ANY, AUTH, PARAMS, &[Code::NotFound, Code::Unavailable]
);

/// Stop a subscription; its deliveries stay listed.
#[utoipa::path(delete, path = "/v1/webhooks/{webhook_id}", tag = "admin",
    params(("webhook_id" = Uuid, Path)),
    responses((status = 200, body = WebhookDeleted),
        DeleteWebhookErrors))]
async fn delete_webhook(
    State(state): State<AppState>,
    AdminCall(_call): AdminCall,
    Path(webhook_id): Path<Uuid>,
) -> Result<axum::Json<WebhookDeleted>, ApiError> {
    Ok(axum::Json(state.webhooks.delete(webhook_id).await?))
}

/// A page of deliveries.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct DeliveriesQuery {
    /// Deliveries after this one (the previous page's `next_after`).
    #[param(minimum = 0, maximum = 9223372036854775807_i64)]
    pub after: Option<i64>,
    /// At most this many (default 100, at most 1000).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<i64>,
}

problems!(
    /// The error answers of `deliveries`.
    DeliveriesErrors: ANY, AUTH, PARAMS, &[Code::NotFound, Code::Unavailable]
);

/// A subscription's deliveries in feed order: attempts, last status, when
/// delivered or next tried, and dead letters (given up after 24 h).
#[utoipa::path(get, path = "/v1/webhooks/{webhook_id}/deliveries", tag = "admin",
    params(("webhook_id" = Uuid, Path), DeliveriesQuery),
    responses((status = 200, body = DeliveryPage),
        DeliveriesErrors))]
async fn deliveries(
    State(state): State<AppState>,
    AdminCall(_call): AdminCall,
    Path(webhook_id): Path<Uuid>,
    Query(query): Query<DeliveriesQuery>,
) -> Result<axum::Json<DeliveryPage>, ApiError> {
    let after = query.after.unwrap_or(0);
    if after < 0 {
        return Err(ApiError::bad_request("after: must be 0 or more"));
    }
    let limit = query.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::bad_request("limit: must be 1 to 1000"));
    }
    Ok(axum::Json(
        state.webhooks.deliveries(webhook_id, after, limit).await?,
    ))
}
