//! Request middleware of our own: metrics per matched route, problem+json
//! for error answers produced outside the handlers (timeouts, rate limits,
//! panics, unknown methods).

use std::time::Instant;

use axum::body::Body;
use axum::extract::{MatchedPath, Request};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::{problem, ApiError, Code, PROBLEM_JSON};

/// Counts requests and records their latency, labelled by matched route.
pub async fn record_metrics(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".to_string());
    let method = request.method().to_string();
    let started = Instant::now();
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    let labels = [("method", method), ("route", route), ("status", status)];
    metrics::counter!("clinicbook_http_requests_total", &labels).increment(1);
    metrics::histogram!("clinicbook_http_request_duration_seconds", &labels)
        .record(started.elapsed().as_secs_f64());
    response
}

/// Turns an error answer that is not problem+json yet (a rate limit, a
/// 405, a 413 from a layer) into one, keeping its headers. Its status
/// becomes its code's (a 408 or 504 is answered as the `timeout` it is,
/// 503), so that every answer is one the OpenAPI document lists.
pub async fn problem_bodies(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    let status = response.status();
    // A problem already, or a JSON body a route answers on purpose (the
    // 503 of `/readyz` says what is not ready).
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| {
            let v = v.as_bytes();
            v.starts_with(PROBLEM_JSON.as_bytes()) || v.starts_with(b"application/json")
        });
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let (code, detail) = match status {
        StatusCode::METHOD_NOT_ALLOWED => (
            Code::MethodNotAllowed,
            "this route does not take that method",
        ),
        StatusCode::REQUEST_TIMEOUT | StatusCode::GATEWAY_TIMEOUT => {
            (Code::Timeout, "the request took too long")
        }
        StatusCode::TOO_MANY_REQUESTS => (
            Code::RateLimited,
            "too many requests; slow down and retry later",
        ),
        StatusCode::PAYLOAD_TOO_LARGE => (
            Code::PayloadTooLarge,
            "the request body is larger than 64 KiB",
        ),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => (
            Code::UnsupportedMediaType,
            "the body must be JSON with Content-Type: application/json",
        ),
        StatusCode::NOT_FOUND => (Code::NotFound, "no such route"),
        s if s.is_server_error() => (Code::Internal, "internal error"),
        _ => (Code::InvalidRequest, "the request was not accepted"),
    };
    let (mut parts, _) = response.into_parts();
    parts.status = code.status();
    let body = serde_json::to_vec(&problem(code, detail)).unwrap_or_default();
    parts
        .headers
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(body))
}

/// The answer to a panic inside a handler: a bare 500 (the panic is logged).
pub fn panic_response(panic: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let message = panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or("unknown panic");
    ApiError::internal(&format!("handler panicked: {message}")).into_response()
}
