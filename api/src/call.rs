//! `Call`: what a command handler needs besides its body: the caller, the
//! request id, and the idempotency key, turned into the command's context.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderName, StatusCode};
use axum::response::{IntoResponse, Response};
use clinicbook_commands::{Ctx, Done};
use clinicbook_eventstore::{Actor, CommandMetadata, IdempotencyKey};
use serde::Serialize;

use crate::auth::{Caller, Role};
use crate::error::ApiError;
use crate::state::AppState;

/// The request-id header, set by the middleware when the client sent none.
pub static REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
static IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");

/// The caller and request facts of one command request.
#[derive(Debug, Clone)]
pub struct Call {
    /// Who calls.
    pub caller: Caller,
    request_id: String,
    idempotency_key: Option<String>,
    /// `METHOD path`, the scope of idempotency keys.
    route: String,
}

impl Call {
    /// Allows the call when the caller has one of `roles` (or is admin).
    ///
    /// # Errors
    /// 403 otherwise.
    pub fn allow(&self, roles: &[Role]) -> Result<(), ApiError> {
        self.caller.allow(roles)
    }

    /// The command context: metadata from the token and request, and the
    /// idempotency key bound to this caller, route and body.
    pub fn ctx<B: Serialize>(&self, command: &str, body: &B) -> Ctx {
        let metadata = CommandMetadata::new(
            Actor {
                subject: self.caller.sub.clone(),
                role: self.caller.role.as_str().to_string(),
            },
            command,
            self.request_id.clone(),
        );
        let idempotency = self.idempotency_key.as_ref().map(|key| {
            let body = serde_json::to_vec(body).unwrap_or_default();
            IdempotencyKey::new(
                format!("{} {}", self.caller.sub, self.route),
                key.clone(),
                &body,
            )
        });
        Ctx {
            metadata,
            idempotency,
        }
    }
}

impl FromRequestParts<AppState> for Call {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let caller = Caller::from_request_parts(parts, state).await?;
        let request_id = parts
            .headers
            .get(&REQUEST_ID)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let idempotency_key = match parts.headers.get(&IDEMPOTENCY_KEY) {
            None => None,
            Some(value) => {
                let key = value.to_str().ok().map(str::trim).unwrap_or_default();
                if key.is_empty() || key.len() > 255 {
                    return Err(ApiError::bad_request(
                        "Idempotency-Key must be 1 to 255 visible ASCII characters",
                    ));
                }
                Some(key.to_string())
            }
        };
        Ok(Call {
            caller,
            request_id,
            idempotency_key,
            route: format!("{} {}", parts.method, parts.uri.path()),
        })
    }
}

/// A command's answer: its output as JSON with `position` added.
pub fn answer<T: Serialize>(status: StatusCode, done: Done<T>) -> Result<Response, ApiError> {
    let mut body = serde_json::to_value(&done.output).map_err(|e| ApiError::internal(&e))?;
    if let serde_json::Value::Object(map) = &mut body {
        map.insert("position".to_string(), done.position.into());
    }
    if done.replayed {
        metrics::counter!("clinicbook_idempotent_replays_total").increment(1);
    }
    if done.attempts > 1 {
        metrics::counter!("clinicbook_command_retries_total")
            .increment(u64::from(done.attempts - 1));
    }
    Ok((status, axum::Json(body)).into_response())
}

/// A [`Call`] by an admin; any other role is refused with 403 before the
/// body is read.
#[derive(Debug, Clone)]
pub struct AdminCall(pub Call);

impl FromRequestParts<AppState> for AdminCall {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let call = Call::from_request_parts(parts, state).await?;
        call.allow(&[])?;
        Ok(AdminCall(call))
    }
}

/// A [`Call`] by staff (or an admin); other roles get 403 before the body
/// is read.
#[derive(Debug, Clone)]
pub struct StaffCall(pub Call);

impl FromRequestParts<AppState> for StaffCall {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let call = Call::from_request_parts(parts, state).await?;
        call.allow(&[Role::Staff])?;
        Ok(StaffCall(call))
    }
}
