//! Operational routes: liveness, readiness and metrics. They need no token.

use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use serde::Serialize;

use crate::error::{problems, Code, Problem, ANY};
use crate::state::AppState;

problems!(
    /// What an operational route can answer besides its own body.
    OpsErrors: ANY
);

problems!(
    /// What `/readyz` can answer besides its own body (its 503 is below).
    ReadyErrors: &[Code::RateLimited, Code::Internal]
);

/// Liveness: the process answers.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Health {
    /// Always `ok`.
    pub status: &'static str,
}

/// Readiness of the dependencies.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Readiness {
    /// `ok` when everything is reachable, else `degraded`.
    pub status: &'static str,
    /// `ok` or the reason the database is not reachable.
    pub database: String,
    /// `ok`, `not_configured`, or the reason NATS is not reachable.
    pub nats: String,
    /// Committed events the most lagging projection (or the relay) has not
    /// applied yet; absent when it could not be read.
    pub projection_lag_events: Option<i64>,
}

/// The process is up.
#[utoipa::path(get, path = "/healthz", tag = "operations", security(),
    responses((status = 200, body = Health), OpsErrors))]
pub async fn healthz() -> Json<Health> {
    Json(Health { status: "ok" })
}

/// The database and NATS are reachable (503 otherwise), and how many
/// events the most lagging projection (or the relay) is behind.
#[utoipa::path(get, path = "/readyz", tag = "operations", security(),
    responses((status = 200, body = Readiness),
        (status = 503, description = "not ready (a Readiness), or the request timed out (a problem)",
            content((Readiness = "application/json"), (Problem = "application/problem+json"))),
        ReadyErrors))]
pub async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    let database =
        match tokio::time::timeout(Duration::from_secs(2), state.commands.store().ping()).await {
            Ok(Ok(())) => "ok".to_string(),
            Ok(Err(e)) => format!("unreachable: {e}"),
            Err(_) => "unreachable: timed out".to_string(),
        };
    let nats = match &state.nats_addr {
        None => "not_configured".to_string(),
        Some(addr) => {
            match tokio::time::timeout(Duration::from_secs(2), tokio::net::TcpStream::connect(addr))
                .await
            {
                Ok(Ok(_)) => "ok".to_string(),
                Ok(Err(e)) => format!("unreachable: {e}"),
                Err(_) => "unreachable: timed out".to_string(),
            }
        }
    };
    // How far the read side is behind the event store (informational: a
    // lagging projection still answers, and reads wait with min_position).
    let projection_lag_events = if database == "ok" {
        match tokio::time::timeout(Duration::from_secs(2), state.read.max_lag()).await {
            Ok(Ok(lag)) => {
                metrics::gauge!("clinicbook_projection_lag_events").set(lag as f64);
                Some(lag)
            }
            _ => None,
        }
    } else {
        None
    };
    let ready = database == "ok" && (nats == "ok" || nats == "not_configured");
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = Readiness {
        status: if ready { "ok" } else { "degraded" },
        database,
        nats,
        projection_lag_events,
    };
    (status, Json(body))
}

/// Prometheus metrics in the text exposition format.
#[utoipa::path(get, path = "/metrics", tag = "operations", security(),
    responses((status = 200, body = String, content_type = "text/plain"), OpsErrors))]
pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
}
