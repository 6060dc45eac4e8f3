//! `ApiError`: the only type of the API that becomes an error response,
//! and [`Code`], every code an error answer can carry, each with its one
//! status.
//!
//! Every error is an RFC 9457 `application/problem+json` body
//! `{type, title, status, detail, code}`. The mapping:
//!
//! | cause | status | code |
//! |---|---|---|
//! | malformed JSON, wrong field type, unknown field, bad path, query or header | 400 | `invalid_request` |
//! | `invalid_input` from the domain (a value the schema also refuses) | 400 | `invalid_input` |
//! | missing, expired or forged token | 401 | `unauthorized` |
//! | role not allowed | 403 | `forbidden` |
//! | unknown id or route | 404 | `not_found` |
//! | a method the route does not take | 405 | `method_not_allowed` |
//! | `slot_unavailable`, `invalid_transition`, `hold_expired`, `hold_released`, `already_exists`, `duplicate_name`, `duplicate_reference` | 409 | as the domain names it |
//! | retries exhausted | 409 | `concurrency_conflict` |
//! | a stream an auditor asks for does not replay | 409 | `stream_corrupt` |
//! | a patient whose personal data was erased | 410 | `patient_erased` |
//! | body over 64 KiB | 413 | `payload_too_large` |
//! | a body without `Content-Type: application/json` | 415 | `unsupported_media_type` |
//! | other business rules (`insufficient_funds`, `no_sessions_left`, …), `inconsistent_input` (fields that disagree with each other or with the stored state) and `idempotency_key_reused` | 422 | as named |
//! | a `min_position` no event has yet | 422 | `unknown_position` |
//! | a checkpoint posted to `/v1/audit/verify` whose contents or signature were altered | 422 | `checkpoint_refused` |
//! | rate limit | 429 | `rate_limited` |
//! | anything else | 500 | `internal` (the body says nothing internal; the cause is logged) |
//! | storage unavailable | 503 | `unavailable` |
//! | the request took longer than the server's timeout | 503 | `timeout` |
//! | read model behind the asked `min_position` after 5 s | 503 | `projection_lagging` |
//!
//! The OpenAPI document lists, per route, the statuses it can answer and
//! the codes of each ([`problem_responses`], used by the routes through
//! [`problems!`]), from this one enum.

use std::collections::BTreeMap;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use clinicbook_commands::CommandError;
use clinicbook_domain::DomainError;
use clinicbook_projections::ProjectionError;
use serde::Serialize;
use utoipa::openapi::content::ContentBuilder;
use utoipa::openapi::response::ResponseBuilder;
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::openapi::{RefOr, Response as OpenApiResponse};

/// The problem+json media type.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// Every code an error answer can carry. Its name (`snake_case` of the
/// variant) is the `code` of the problem body; [`Code::status`] is the one
/// status it is answered with.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, strum::IntoStaticStr, strum::EnumIter,
)]
#[strum(serialize_all = "snake_case")]
pub enum Code {
    /// Malformed JSON, path, query or header; an unknown field.
    InvalidRequest,
    /// A field the domain refuses on its own.
    InvalidInput,
    /// No valid bearer token.
    Unauthorized,
    /// The token's role may not do this.
    Forbidden,
    /// No such thing (or route).
    NotFound,
    /// The route does not take this method.
    MethodNotAllowed,
    /// The id is taken.
    AlreadyExists,
    /// A name that must be unique inside the clinic is taken.
    DuplicateName,
    /// A wallet reference was used before.
    DuplicateReference,
    /// The slot is taken.
    SlotUnavailable,
    /// Not allowed in the current status.
    InvalidTransition,
    /// The hold ran out (`expires_at` passed).
    HoldExpired,
    /// The hold was released.
    HoldReleased,
    /// Concurrent writers won every retry.
    ConcurrencyConflict,
    /// A stream does not replay.
    StreamCorrupt,
    /// The patient's personal data was erased.
    PatientErased,
    /// The body is over 64 KiB.
    PayloadTooLarge,
    /// The body is not JSON.
    UnsupportedMediaType,
    /// A wallet holds less than asked.
    InsufficientFunds,
    /// A package has no session left.
    NoSessionsLeft,
    /// A package expired.
    PackageExpired,
    /// A package is not valid at the clinic.
    PackageNotValidHere,
    /// A package is for another treatment.
    PackageNotForTreatment,
    /// A promo code is outside its window.
    PromoExpired,
    /// A promo code was deactivated.
    PromoInactive,
    /// A promo code has no redemptions left.
    PromoExhausted,
    /// The patient used the promo code as often as allowed.
    PromoLimitPerPatient,
    /// The promo code is not for this treatment.
    PromoNotApplicable,
    /// The booking is not inside opening hours.
    OutsideOpeningHours,
    /// The start is not in the future.
    InThePast,
    /// The resource is of another kind than the treatment needs.
    ResourceKindMismatch,
    /// Fields that disagree with each other or with the stored state.
    InconsistentInput,
    /// The Idempotency-Key was used with another request.
    IdempotencyKeyReused,
    /// `min_position` names a position no event has yet.
    UnknownPosition,
    /// A checkpoint whose contents or signature were altered.
    CheckpointRefused,
    /// Too many requests.
    RateLimited,
    /// A failure of the server.
    Internal,
    /// Storage cannot be reached.
    Unavailable,
    /// The request took too long.
    Timeout,
    /// The read model did not reach `min_position` in time.
    ProjectionLagging,
}

impl Code {
    /// The code as it appears in problem bodies.
    pub fn as_str(self) -> &'static str {
        self.into()
    }

    /// The one status this code is answered with.
    pub fn status(self) -> StatusCode {
        use Code::*;
        match self {
            InvalidRequest | InvalidInput => StatusCode::BAD_REQUEST,
            Unauthorized => StatusCode::UNAUTHORIZED,
            Forbidden => StatusCode::FORBIDDEN,
            NotFound => StatusCode::NOT_FOUND,
            MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            AlreadyExists | DuplicateName | DuplicateReference | SlotUnavailable
            | InvalidTransition | HoldExpired | HoldReleased | ConcurrencyConflict
            | StreamCorrupt => StatusCode::CONFLICT,
            PatientErased => StatusCode::GONE,
            PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            InsufficientFunds
            | NoSessionsLeft
            | PackageExpired
            | PackageNotValidHere
            | PackageNotForTreatment
            | PromoExpired
            | PromoInactive
            | PromoExhausted
            | PromoLimitPerPatient
            | PromoNotApplicable
            | CheckpointRefused
            | OutsideOpeningHours
            | InThePast
            | ResourceKindMismatch
            | InconsistentInput
            | IdempotencyKeyReused
            | UnknownPosition => StatusCode::UNPROCESSABLE_ENTITY,
            RateLimited => StatusCode::TOO_MANY_REQUESTS,
            Internal => StatusCode::INTERNAL_SERVER_ERROR,
            Unavailable | Timeout | ProjectionLagging => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The code of a domain refusal.
    pub fn of_domain(e: &DomainError) -> Self {
        match e {
            DomainError::NotFound { .. } => Code::NotFound,
            DomainError::AlreadyExists { .. } => Code::AlreadyExists,
            DomainError::InvalidInput { .. } => Code::InvalidInput,
            DomainError::InconsistentInput { .. } => Code::InconsistentInput,
            DomainError::SlotUnavailable => Code::SlotUnavailable,
            DomainError::InvalidTransition { .. } => Code::InvalidTransition,
            DomainError::HoldExpired => Code::HoldExpired,
            DomainError::HoldReleased => Code::HoldReleased,
            DomainError::InsufficientFunds { .. } => Code::InsufficientFunds,
            DomainError::DuplicateReference { .. } => Code::DuplicateReference,
            DomainError::NoSessionsLeft => Code::NoSessionsLeft,
            DomainError::PackageExpired => Code::PackageExpired,
            DomainError::PackageNotValidHere => Code::PackageNotValidHere,
            DomainError::PackageNotForTreatment => Code::PackageNotForTreatment,
            DomainError::PromoExpired => Code::PromoExpired,
            DomainError::PromoInactive => Code::PromoInactive,
            DomainError::PromoExhausted => Code::PromoExhausted,
            DomainError::PromoLimitPerPatient => Code::PromoLimitPerPatient,
            DomainError::PromoNotApplicable => Code::PromoNotApplicable,
            DomainError::OutsideOpeningHours => Code::OutsideOpeningHours,
            DomainError::InThePast => Code::InThePast,
            DomainError::DuplicateName { .. } => Code::DuplicateName,
            DomainError::ResourceKindMismatch { .. } => Code::ResourceKindMismatch,
            DomainError::PatientErased => Code::PatientErased,
        }
    }
}

/// What every route can answer whatever it does: the rate limit, the
/// timeout and a failure of the server.
pub const ANY: &[Code] = &[Code::RateLimited, Code::Internal, Code::Timeout];
/// A route that needs a bearer token.
pub const AUTH: &[Code] = &[Code::Unauthorized, Code::Forbidden];
/// A route that takes a JSON body.
pub const BODY: &[Code] = &[
    Code::InvalidRequest,
    Code::PayloadTooLarge,
    Code::UnsupportedMediaType,
];
/// A route with path or query parameters.
pub const PARAMS: &[Code] = &[Code::InvalidRequest];
/// A command: one unit of work, with an optional `Idempotency-Key`.
pub const COMMAND: &[Code] = &[
    Code::InvalidRequest,
    Code::ConcurrencyConflict,
    Code::IdempotencyKeyReused,
    Code::Unavailable,
];
/// A read of a read model, with the consistency token `min_position`.
pub const READ: &[Code] = &[
    Code::InvalidRequest,
    Code::UnknownPosition,
    Code::ProjectionLagging,
    Code::Unavailable,
];

/// A booking, a reschedule, a waitlist entry or a quote: the slot, the
/// payment and the promo code rules.
pub const BOOKING: &[Code] = &[
    Code::InvalidInput,
    Code::InconsistentInput,
    Code::NotFound,
    Code::AlreadyExists,
    Code::SlotUnavailable,
    Code::InvalidTransition,
    Code::DuplicateReference,
    Code::ResourceKindMismatch,
    Code::InThePast,
    Code::OutsideOpeningHours,
    Code::InsufficientFunds,
    Code::NoSessionsLeft,
    Code::PackageExpired,
    Code::PackageNotValidHere,
    Code::PackageNotForTreatment,
    Code::PromoExpired,
    Code::PromoInactive,
    Code::PromoExhausted,
    Code::PromoLimitPerPatient,
    Code::PromoNotApplicable,
];
/// A block or a closure: its range, and the bookings it would displace.
pub const BLOCKING: &[Code] = &[
    Code::InvalidInput,
    Code::InconsistentInput,
    Code::NotFound,
    Code::SlotUnavailable,
    Code::InvalidTransition,
    Code::DuplicateReference,
];
/// A report over a range of dates.
pub const REPORT: &[Code] = &[Code::InvalidInput, Code::InconsistentInput];

/// Declares `$name`, the error answers of one route for the OpenAPI
/// document: every code listed (groups such as [`AUTH`] and single codes
/// alike, each a `&[Code]`), one response per status with its codes as the
/// enum of the problem's `code`. Use it in `responses(...)` of
/// `#[utoipa::path]`.
macro_rules! problems {
    ($(#[$meta:meta])* $name:ident: $($codes:expr),+ $(,)?) => {
        $(#[$meta])*
        pub struct $name;

        impl utoipa::IntoResponses for $name {
            fn responses() -> std::collections::BTreeMap<
                String,
                utoipa::openapi::RefOr<utoipa::openapi::response::Response>,
            > {
                $crate::error::problem_responses(&[$($codes),+])
            }
        }
    };
}
pub(crate) use problems;

/// The error responses of a route that can answer `groups`' codes: one
/// per status, each `application/problem+json` with `status` and `code`
/// limited to what that route gives.
pub fn problem_responses(groups: &[&[Code]]) -> BTreeMap<String, RefOr<OpenApiResponse>> {
    let mut by_status: BTreeMap<u16, Vec<Code>> = BTreeMap::new();
    for &code in groups.iter().flat_map(|g| g.iter()) {
        let codes = by_status.entry(code.status().as_u16()).or_default();
        if !codes.contains(&code) {
            codes.push(code);
        }
    }
    by_status
        .into_iter()
        .map(|(status, codes)| {
            let names: Vec<&'static str> = codes.iter().map(|c| c.as_str()).collect();
            let response = ResponseBuilder::new()
                .description(names.join(", "))
                .content(
                    PROBLEM_JSON,
                    ContentBuilder::new()
                        .schema(Some(problem_schema(status, &names)))
                        .build(),
                )
                .build();
            (status.to_string(), RefOr::T(response))
        })
        .collect()
}

/// The problem body of one status with one of `codes`.
fn problem_schema(status: u16, codes: &[&'static str]) -> ObjectBuilder {
    let text = |description: &str| {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .description(Some(description))
    };
    ObjectBuilder::new()
        .schema_type(Type::Object)
        .property(
            "type",
            text("`urn:clinicbook:problem:<code>`")
                .pattern(Some("^urn:clinicbook:problem:[a-z_]+$")),
        )
        .property("title", text("Short human summary of the kind of problem."))
        .property(
            "status",
            ObjectBuilder::new()
                .schema_type(Type::Integer)
                .enum_values(Some([status]))
                .description(Some("The HTTP status.")),
        )
        .property("detail", text("What went wrong with this request."))
        .property(
            "code",
            text("Stable machine-readable code.").enum_values(Some(codes.iter().copied())),
        )
        .required("type")
        .required("title")
        .required("status")
        .required("detail")
        .required("code")
}

/// An error answer.
#[derive(Debug, Clone)]
pub struct ApiError {
    code: Code,
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
    /// An error with this code (which decides the status) and detail.
    pub fn new(code: Code, detail: impl Into<String>) -> Self {
        Self {
            code,
            detail: detail.into(),
        }
    }

    /// 400 for a malformed request, naming what is wrong.
    pub fn bad_request(detail: impl Into<String>) -> Self {
        Self::new(Code::InvalidRequest, detail)
    }

    /// 401.
    pub fn unauthorized(detail: impl Into<String>) -> Self {
        Self::new(Code::Unauthorized, detail)
    }

    /// 403.
    pub fn forbidden(detail: impl Into<String>) -> Self {
        Self::new(Code::Forbidden, detail)
    }

    /// 404.
    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(Code::NotFound, detail)
    }

    /// 500; `cause` is logged, never sent.
    pub fn internal(cause: &dyn std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "internal error");
        Self::new(Code::Internal, "internal error")
    }

    /// The status.
    pub fn status(&self) -> StatusCode {
        self.code.status()
    }

    /// The code.
    pub fn code(&self) -> Code {
        self.code
    }

    /// The problem body.
    pub fn problem(&self) -> Problem {
        problem(self.code, &self.detail)
    }
}

/// A problem body for `code`, with its status.
pub fn problem(code: Code, detail: &str) -> Problem {
    let status = code.status();
    Problem {
        kind: format!("urn:clinicbook:problem:{}", code.as_str()),
        title: status.canonical_reason().unwrap_or("Error").to_string(),
        status: status.as_u16(),
        detail: detail.to_string(),
        code: code.as_str().to_string(),
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::to_vec(&self.problem()).unwrap_or_default();
        let mut response = (self.status(), body).into_response();
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        if self.code == Code::Unauthorized {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

impl From<DomainError> for ApiError {
    fn from(e: DomainError) -> Self {
        ApiError::new(Code::of_domain(&e), e.to_string())
    }
}

impl From<ProjectionError> for ApiError {
    fn from(e: ProjectionError) -> Self {
        match e {
            ProjectionError::Lagging { projection, position } => ApiError::new(
                Code::ProjectionLagging,
                format!("the {projection} read model has not reached position {position} yet; try again"),
            ),
            ProjectionError::UnknownPosition { position, last } => ApiError::new(
                Code::UnknownPosition,
                format!("min_position: no event has position {position} yet (the last committed is {last})"),
            ),
            ProjectionError::Invalid { field, reason } => {
                ApiError::new(Code::InvalidInput, format!("{field}: {reason}"))
            }
            ProjectionError::Inconsistent { field, reason } => {
                ApiError::new(Code::InconsistentInput, format!("{field}: {reason}"))
            }
            ProjectionError::NotFound(what) => ApiError::not_found(what),
            ProjectionError::UnknownProjection(name) => {
                ApiError::not_found(format!("no projection is called {name:?}"))
            }
            other => {
                tracing::error!(error = %other, "read model error");
                ApiError::new(
                    Code::Unavailable,
                    "the read models cannot be reached right now; try again",
                )
            }
        }
    }
}

impl From<clinicbook_notify::WebhookError> for ApiError {
    fn from(e: clinicbook_notify::WebhookError) -> Self {
        use clinicbook_notify::WebhookError;
        match e {
            WebhookError::Invalid { field, reason } => {
                ApiError::new(Code::InvalidInput, format!("{field}: {reason}"))
            }
            WebhookError::Inconsistent { field, reason } => {
                ApiError::new(Code::InconsistentInput, format!("{field}: {reason}"))
            }
            WebhookError::NotFound(id) => ApiError::not_found(format!("webhook {id} not found")),
            WebhookError::IdempotencyKeyReused => ApiError::new(
                Code::IdempotencyKeyReused,
                "this Idempotency-Key was used before with a different request",
            ),
            WebhookError::KeyOfDeleted(id) => ApiError::new(
                Code::IdempotencyKeyReused,
                format!(
                    "this Idempotency-Key created webhook {id}, which was deleted since; \
                     send a new key to subscribe again"
                ),
            ),
            other => {
                tracing::error!(error = %other, "webhook storage error");
                ApiError::new(
                    Code::Unavailable,
                    "the service cannot reach its storage right now; try again",
                )
            }
        }
    }
}

impl From<clinicbook_notify::messages::MessageError> for ApiError {
    fn from(e: clinicbook_notify::messages::MessageError) -> Self {
        tracing::error!(error = %e, "message log error");
        ApiError::new(
            Code::Unavailable,
            "the service cannot reach its storage right now; try again",
        )
    }
}

impl From<CommandError> for ApiError {
    fn from(e: CommandError) -> Self {
        match e {
            CommandError::Domain(d) => d.into(),
            CommandError::Conflict { attempts } => {
                metrics::counter!("clinicbook_command_conflicts_total").increment(1);
                ApiError::new(
                    Code::ConcurrencyConflict,
                    format!("other requests changed the same data; gave up after {attempts} attempts, try again"),
                )
            }
            CommandError::IdempotencyKeyReused => ApiError::new(
                Code::IdempotencyKeyReused,
                "this Idempotency-Key was used before with a different request",
            ),
            CommandError::Store(s) => {
                tracing::error!(error = %s, "storage error");
                ApiError::new(
                    Code::Unavailable,
                    "the service cannot reach its storage right now; try again",
                )
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use strum::IntoEnumIterator;

    #[test]
    fn every_domain_error_has_the_code_the_domain_names() {
        let money = clinicbook_domain::Money(1);
        let s = || "x".to_string();
        let all = [
            DomainError::NotFound { what: s() },
            DomainError::AlreadyExists { what: s() },
            DomainError::invalid("f", "r"),
            DomainError::inconsistent("f", "r"),
            DomainError::SlotUnavailable,
            DomainError::InvalidTransition {
                from: s(),
                action: s(),
            },
            DomainError::InsufficientFunds {
                balance: money,
                requested: money,
            },
            DomainError::DuplicateReference { reference: s() },
            DomainError::NoSessionsLeft,
            DomainError::PackageExpired,
            DomainError::PackageNotValidHere,
            DomainError::PackageNotForTreatment,
            DomainError::HoldExpired,
            DomainError::HoldReleased,
            DomainError::PromoExpired,
            DomainError::PromoInactive,
            DomainError::PromoExhausted,
            DomainError::PromoLimitPerPatient,
            DomainError::PromoNotApplicable,
            DomainError::OutsideOpeningHours,
            DomainError::InThePast,
            DomainError::DuplicateName { name: s() },
            DomainError::ResourceKindMismatch {
                needed: s(),
                actual: s(),
            },
            DomainError::PatientErased,
        ];
        for e in all {
            assert_eq!(Code::of_domain(&e).as_str(), e.code(), "{e:?}");
        }
    }

    #[test]
    fn a_problem_carries_the_status_of_its_code() {
        for code in Code::iter() {
            let p = problem(code, "d");
            assert_eq!(p.status, code.status().as_u16());
            assert_eq!(p.code, code.as_str());
            assert!(code.status().is_client_error() || code.status().is_server_error());
        }
    }

    #[test]
    fn route_problems_group_codes_by_status() {
        let responses =
            problem_responses(&[ANY, AUTH, &[Code::SlotUnavailable, Code::StreamCorrupt]]);
        let statuses: Vec<&str> = responses.keys().map(String::as_str).collect();
        assert_eq!(statuses, ["401", "403", "409", "429", "500", "503"]);
        let json = serde_json::to_value(&responses["409"]).unwrap_or_default();
        let codes = &json["content"][PROBLEM_JSON]["schema"]["properties"]["code"]["enum"];
        assert_eq!(
            codes,
            &serde_json::json!(["slot_unavailable", "stream_corrupt"])
        );
    }
}
