//! `ApiError`: the only type of the API that becomes an error response.
//!
//! Every error is an RFC 9457 `application/problem+json` body
//! `{type, title, status, detail, code}`. The mapping:
//!
//! | cause | status | code |
//! |---|---|---|
//! | malformed JSON, wrong field type, unknown field, bad path or query, `invalid_input` from the domain | 400 | `invalid_request` / `invalid_input` |
//! | missing, expired or forged token | 401 | `unauthorized` |
//! | role not allowed | 403 | `forbidden` |
//! | unknown id or route | 404 | `not_found` |
//! | `slot_unavailable`, `invalid_transition`, `already_exists`, `duplicate_name`, `duplicate_reference` | 409 | as the domain names it |
//! | retries exhausted | 409 | `concurrency_conflict` |
//! | a stream an auditor asks for does not replay | 409 | `stream_corrupt` |
//! | body over 64 KiB | 413 | `payload_too_large` |
//! | wrong content type | 415 | `unsupported_media_type` |
//! | other business rules (`insufficient_funds`, `no_sessions_left`, …) and `idempotency_key_reused` | 422 | as named |
//! | a checkpoint posted to `/v1/audit/verify` whose contents or signature were altered | 422 | `checkpoint_refused` |
//! | rate limit | 429 | `rate_limited` |
//! | storage unavailable, timeout | 503 | `unavailable` |
//! | read model behind the asked `min_position` after 5 s | 503 | `projection_lagging` |
//! | anything else | 500 | `internal` (the body says nothing internal; the cause is logged) |

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use clinicbook_commands::CommandError;
use clinicbook_domain::DomainError;
use clinicbook_projections::ProjectionError;
use serde::Serialize;

/// The problem+json media type.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// An error answer.
#[derive(Debug, Clone)]
pub struct ApiError {
    status: StatusCode,
    code: String,
    detail: String,
}

/// The body of an error answer (RFC 9457 plus `code`).
#[derive(Debug, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct Problem {
    /// A URI naming the kind of problem: `urn:clinicbook:problem:<code>`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Short human summary of the kind of problem.
    pub title: String,
    /// The HTTP status.
    pub status: u16,
    /// What went wrong with this request.
    pub detail: String,
    /// Stable machine-readable code, e.g. `slot_unavailable`.
    pub code: String,
}

impl ApiError {
    /// An error with this status, code and detail.
    pub fn new(status: StatusCode, code: impl Into<String>, detail: impl Into<String>) -> Self {
        Self {
            status,
            code: code.into(),
            detail: detail.into(),
        }
    }

    /// 400 for a malformed request, naming what is wrong.
    pub fn bad_request(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", detail)
    }

    /// 401.
    pub fn unauthorized(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", detail)
    }

    /// 403.
    pub fn forbidden(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", detail)
    }

    /// 404.
    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", detail)
    }

    /// 500; `cause` is logged, never sent.
    pub fn internal(cause: &dyn std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error",
        )
    }

    /// The status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The code.
    pub fn code(&self) -> &str {
        &self.code
    }

    /// The problem body.
    pub fn problem(&self) -> Problem {
        problem(self.status, &self.code, &self.detail)
    }
}

/// A problem body for `status` and `code`.
pub fn problem(status: StatusCode, code: &str, detail: &str) -> Problem {
    Problem {
        kind: format!("urn:clinicbook:problem:{code}"),
        title: status.canonical_reason().unwrap_or("Error").to_string(),
        status: status.as_u16(),
        detail: detail.to_string(),
        code: code.to_string(),
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::to_vec(&self.problem()).unwrap_or_default();
        let mut response = (self.status, body).into_response();
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        if self.status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

/// The status of a domain refusal.
fn domain_status(e: &DomainError) -> StatusCode {
    match e {
        DomainError::NotFound { .. } => StatusCode::NOT_FOUND,
        DomainError::InvalidInput { .. } => StatusCode::BAD_REQUEST,
        DomainError::SlotUnavailable
        | DomainError::InvalidTransition { .. }
        | DomainError::AlreadyExists { .. }
        | DomainError::DuplicateName { .. }
        | DomainError::DuplicateReference { .. } => StatusCode::CONFLICT,
        _ => StatusCode::UNPROCESSABLE_ENTITY,
    }
}

impl From<DomainError> for ApiError {
    fn from(e: DomainError) -> Self {
        ApiError::new(domain_status(&e), e.code(), e.to_string())
    }
}

impl From<ProjectionError> for ApiError {
    fn from(e: ProjectionError) -> Self {
        match e {
            ProjectionError::Lagging { projection, position } => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "projection_lagging",
                format!("the {projection} read model has not reached position {position} yet; try again"),
            ),
            ProjectionError::Invalid { field, reason } => ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_input",
                format!("{field}: {reason}"),
            ),
            ProjectionError::NotFound(what) => ApiError::not_found(what),
            ProjectionError::UnknownProjection(name) => {
                ApiError::not_found(format!("no projection is called {name:?}"))
            }
            other => {
                tracing::error!(error = %other, "read model error");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    "the read models cannot be reached right now; try again",
                )
            }
        }
    }
}

impl From<CommandError> for ApiError {
    fn from(e: CommandError) -> Self {
        match e {
            CommandError::Domain(d) => d.into(),
            CommandError::Conflict { attempts } => {
                metrics::counter!("clinicbook_command_conflicts_total").increment(1);
                ApiError::new(
                    StatusCode::CONFLICT,
                    "concurrency_conflict",
                    format!("other requests changed the same data; gave up after {attempts} attempts, try again"),
                )
            }
            CommandError::IdempotencyKeyReused => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "idempotency_key_reused",
                "this Idempotency-Key was used before with a different request",
            ),
            CommandError::Store(s) => {
                tracing::error!(error = %s, "storage error");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    "the service cannot reach its storage right now; try again",
                )
            }
        }
    }
}
