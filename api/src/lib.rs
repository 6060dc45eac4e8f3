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
pub mod demo;
pub mod error;
pub mod extract;
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
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Requests per second each client may make on average (0: no limit).
    pub rate_per_second: u64,
    /// Requests a client may make in a burst.
    pub burst: u32,
    /// Time after which a request is answered 503.
    pub timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            rate_per_second: 0,
            burst: 200,
            timeout: Duration::from_secs(30),
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
        .merge(routes::money::routes())
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
/// problem bodies, rate limit, timeout, body limit, compression.
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
        .with_state(state);

    let app = if limits.rate_per_second > 0 {
        let period = Duration::from_nanos(1_000_000_000 / limits.rate_per_second.max(1));
        match tower_governor::governor::GovernorConfigBuilder::default()
            .period(period)
            .burst_size(limits.burst.max(1))
            .key_extractor(middleware::ClientKey)
            .finish()
        {
            Some(config) => app.layer(tower_governor::GovernorLayer {
                config: Arc::new(config),
            }),
            None => app,
        }
    } else {
        app
    };

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
