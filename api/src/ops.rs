//! Operational routes: liveness, readiness and metrics. They need no token.

use std::time::{Duration, Instant};

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
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct Readiness {
    /// `ok` when everything is reachable, else `degraded`.
    pub status: &'static str,
    /// `ok`, or `degraded` when the database did not answer (the reason is
    /// logged, never sent).
    pub database: &'static str,
    /// `ok`, `not_configured`, or `degraded` when NATS is not reachable.
    pub nats: &'static str,
    /// Committed events the most lagging projection (or the relay) has not
    /// applied yet, counted up to 10,000; absent when it could not be
    /// read.
    pub projection_lag_events: Option<i64>,
    /// The SMTP relay of patient emails: `ok`, `not_configured` (email
    /// messages wait queued), or `degraded` when it does not answer.
    /// Informational: it never makes the process unready (messages are
    /// retried).
    pub smtp: &'static str,
}

/// How long `/readyz` answers the figures it last took: probes as often as
/// they like cost the database one look a second.
pub const READINESS_FRESH: Duration = Duration::from_secs(1);

/// Lag beyond this is reported as this.
pub const LAG_COUNT_CAP: i64 = 10_000;

/// The last readiness figures, taken at most once per [`READINESS_FRESH`]
/// however many probes ask (one refresh at a time; the others wait for it).
#[derive(Debug, Default)]
pub struct ReadinessCache {
    last: tokio::sync::Mutex<Option<(Instant, Readiness)>>,
}

impl ReadinessCache {
    async fn get(&self, state: &AppState) -> Readiness {
        let mut last = self.last.lock().await;
        if let Some((taken, figures)) = &*last {
            if taken.elapsed() < READINESS_FRESH {
                return figures.clone();
            }
        }
        let figures = measure(state).await;
        *last = Some((Instant::now(), figures.clone()));
        figures
    }
}

async fn measure(state: &AppState) -> Readiness {
    let database =
        match tokio::time::timeout(Duration::from_secs(2), state.commands.store().ping()).await {
            Ok(Ok(())) => "ok",
            Ok(Err(error)) => {
                tracing::warn!(%error, "readiness: the database does not answer");
                "degraded"
            }
            Err(_) => {
                tracing::warn!("readiness: the database did not answer within 2 s");
                "degraded"
            }
        };
    let nats = match &state.nats_addr {
        None => "not_configured",
        Some(addr) => {
            match tokio::time::timeout(Duration::from_secs(2), tokio::net::TcpStream::connect(addr))
                .await
            {
                Ok(Ok(_)) => "ok",
                Ok(Err(error)) => {
                    tracing::warn!(%error, "readiness: NATS is not reachable");
                    "degraded"
                }
                Err(_) => {
                    tracing::warn!("readiness: NATS did not accept within 2 s");
                    "degraded"
                }
            }
        }
    };
    // How far the read side is behind the event store (informational: a
    // lagging projection still answers, and reads wait with min_position).
    let projection_lag_events = if database == "ok" {
        match tokio::time::timeout(
            Duration::from_secs(2),
            state.read.max_lag_capped(LAG_COUNT_CAP),
        )
        .await
        {
            Ok(Ok(lag)) => {
                metrics::gauge!("clinicbook_projection_lag_events").set(lag as f64);
                Some(lag)
            }
            Ok(Err(error)) => {
                tracing::warn!(%error, "readiness: projection lag not readable");
                None
            }
            Err(_) => None,
        }
    } else {
        None
    };
    let smtp = state.smtp.probe(Duration::from_secs(2)).await.as_str();
    let ready = database == "ok" && nats != "degraded";
    Readiness {
        status: if ready { "ok" } else { "degraded" },
        database,
        nats,
        projection_lag_events,
        smtp,
    }
}

/// The process is up.
#[utoipa::path(get, path = "/healthz", tag = "operations", security(),
    responses((status = 200, body = Health), OpsErrors))]
pub async fn healthz() -> Json<Health> {
    Json(Health { status: "ok" })
}

/// The database and NATS are reachable (503 otherwise), and how many
/// events the most lagging projection (or the relay) is behind; the
/// figures are at most a second old.
#[utoipa::path(get, path = "/readyz", tag = "operations", security(),
    responses((status = 200, body = Readiness),
        (status = 503, description = "not ready (a Readiness), or the request timed out (a problem)",
            content((Readiness = "application/json"), (Problem = "application/problem+json"))),
        ReadyErrors))]
pub async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    let body = state.readiness.get(&state).await;
    let status = if body.status == "ok" {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
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
