//! The HTTP API of clinicbook (axum): routing, authentication, errors as
//! problem+json, idempotency keys, OpenAPI, health and metrics.
//!
//! Handlers are thin: they extract the body and the caller, build the
//! command context and call a use case of `clinicbook-commands`. This crate
//! has no SQL and no business rules.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::error_handling::HandleErrorLayer;
use axum::extract::DefaultBodyLimit;
use axum::response::IntoResponse;
use axum::{BoxError, Router};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::compression::CompressionLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use utoipa_swagger_ui::SwaggerUi;

pub mod audit_cli;
pub mod auth;
pub mod background;
pub mod call;
pub mod error;
pub mod extract;
pub mod keys;
pub mod limit;
pub mod middleware;
pub mod openapi;
pub mod ops;
pub mod routes;
pub mod state;

pub use state::AppState;

use crate::call::REQUEST_ID;
use crate::error::{ApiError, Code};

/// Largest accepted request body.
pub const BODY_LIMIT: usize = 64 * 1024;

/// Limits applied by [`router`].
#[derive(Clone, Debug)]
pub struct Limits {
    /// Requests per second each client may make on average (0: no limit).
    /// A client is a token subject, or a peer address for requests without
    /// a valid token ([`limit`]).
    pub rate_per_second: u64,
    /// Requests a client may make in a burst.
    pub burst: u32,
    /// Time after which a request is answered 503.
    pub timeout: Duration,
    /// Peers whose `X-Forwarded-For` names the client (reverse proxies).
    pub trusted_proxies: limit::TrustedProxies,
    /// Clients the limiter keeps buckets for before dropping idle ones early.
    pub limiter_capacity: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            rate_per_second: 0,
            burst: 200,
            timeout: Duration::from_secs(30),
            trusted_proxies: limit::TrustedProxies::default(),
            limiter_capacity: limit::DEFAULT_CAPACITY,
        }
    }
}

/// How long an API database session may sit idle inside a transaction
/// (`serve`, and the short work of the auditor's tools); the relay,
/// projectors, waitlist matcher, rebuilds and checks connect without it.
#[derive(Clone, Copy, Debug, clap::Args)]
pub struct SessionArgs {
    /// Milliseconds an API database session may sit idle inside a
    /// transaction before PostgreSQL ends it (it would hold stream locks
    /// meanwhile). Long work — relay, projectors, the waitlist matcher,
    /// rebuilds, `replay --all --check` — has no such limit.
    #[arg(
        long,
        env = "CLINICBOOK_IDLE_TRANSACTION_TIMEOUT_MS",
        default_value_t = 10_000
    )]
    pub idle_transaction_timeout_ms: u64,
}

impl Default for SessionArgs {
    fn default() -> Self {
        Self {
            idle_transaction_timeout_ms: 10_000,
        }
    }
}

impl SessionArgs {
    /// The API's sessions.
    #[must_use]
    pub fn api(self) -> clinicbook_eventstore::Sessions {
        clinicbook_eventstore::Sessions::Api {
            idle_in_transaction: Duration::from_millis(self.idle_transaction_timeout_ms),
        }
    }
}

/// The Prometheus recorder of this process (installed once).
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new().build_recorder();
            let handle = recorder.handle();
            // Fails only if another recorder was installed first; then the
            // handle just renders nothing.
            let _ = metrics::set_global_recorder(recorder);
            handle
        })
        .clone()
}

/// The OpenAPI document of every route.
pub fn openapi() -> utoipa::openapi::OpenApi {
    openapi::finish(api_routes().split_for_parts().1)
}

fn api_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .routes(routes!(ops::healthz))
        .routes(routes!(ops::readyz))
        .routes(routes!(ops::metrics))
        .merge(routes::admin::routes())
        .merge(routes::booking::routes())
        .merge(routes::holds::routes())
        .merge(routes::money::routes())
        .merge(routes::patients::routes())
        .merge(routes::webhooks::routes())
        .merge(routes::analytics::routes())
        .merge(routes::audit::routes())
}

/// Only `/healthz`, `/readyz` and `/metrics`: what a relay or projector
/// process serves.
pub fn ops_router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", axum::routing::get(ops::healthz))
        .route("/readyz", axum::routing::get(ops::readyz))
        .route("/metrics", axum::routing::get(ops::metrics))
        .with_state(state)
}

/// The whole application: every route with its middleware, outer to
/// inner: catch-panic, request id, trace, propagate request id, metrics,
/// problem bodies, timeout, body limit, compression, then authentication
/// with the rate limit ([`limit::authenticate`]).
pub fn router(state: AppState, limits: Limits) -> Router {
    let (api, spec) = api_routes().split_for_parts();
    let spec = openapi::finish(spec);
    let app = api
        .merge(SwaggerUi::new("/docs").url("/openapi.json", spec))
        .fallback(|| async { ApiError::not_found("no such route") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                Code::MethodNotAllowed,
                "this route does not take that method",
            )
        })
        .with_state(state.clone());

    let limiter = limit::RateLimiter::new(
        limits.rate_per_second,
        limits.burst,
        limits.limiter_capacity,
    )
    .map(Arc::new);
    if let Some(limiter) = &limiter {
        limiter.sweep_in_background();
    }
    let gate = limit::Gate {
        auth: state.auth.clone(),
        limiter,
        proxies: limits.trusted_proxies.clone(),
    };
    let app = app.layer(axum::middleware::from_fn_with_state(
        gate,
        limit::authenticate,
    ));
    app.layer(
        ServiceBuilder::new()
            .layer(CatchPanicLayer::custom(middleware::panic_response))
            .layer(SetRequestIdLayer::new(REQUEST_ID.clone(), MakeRequestUuid))
            .layer(TraceLayer::new_for_http().make_span_with(|request: &axum::http::Request<_>| {
                let request_id = request
                    .headers()
                    .get(&REQUEST_ID)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default();
                tracing::info_span!("request", %request_id, method = %request.method(), path = %request.uri().path())
            }))
            .layer(PropagateRequestIdLayer::new(REQUEST_ID.clone()))
            .layer(axum::middleware::from_fn(middleware::record_metrics))
            .layer(axum::middleware::from_fn(middleware::problem_bodies))
            .layer(HandleErrorLayer::new(|_: BoxError| async {
                ApiError::new(Code::Timeout, "the request took too long").into_response()
            }))
            .timeout(limits.timeout)
            .layer(DefaultBodyLimit::max(BODY_LIMIT))
            .layer(CompressionLayer::new()),
    )
}

/// Serves `router` on `listener` until `shutdown` resolves, then finishes
/// the requests in flight.
///
/// # Errors
/// The listener failed.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(
        listener,
        router.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
}

/// Resolves on SIGTERM or ctrl-c.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}
