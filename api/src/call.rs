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

/// What an `Idempotency-Key` may be: 1 to 255 visible ASCII characters,
/// spaces inside but not around it.
pub const IDEMPOTENCY_KEY_PATTERN: &str = r"^[!-~](?:[ -~]{0,253}[!-~])?$";

/// Whether `key` is an `Idempotency-Key` ([`IDEMPOTENCY_KEY_PATTERN`]).
pub fn is_idempotency_key(key: &[u8]) -> bool {
    let visible = |b: &u8| b.is_ascii_graphic();
    (1..=255).contains(&key.len())
        && key.iter().all(|b| visible(b) || *b == b' ')
        && key.first().is_some_and(visible)
        && key.last().is_some_and(visible)
}

/// The `Idempotency-Key` header of every command, for the OpenAPI document.
pub struct IdempotencyKeyHeader;

impl utoipa::IntoParams for IdempotencyKeyHeader {
    fn into_params(
        _: impl Fn() -> Option<utoipa::openapi::path::ParameterIn>,
    ) -> Vec<utoipa::openapi::path::Parameter> {
        use utoipa::openapi::path::{ParameterBuilder, ParameterIn};
        use utoipa::openapi::schema::{ObjectBuilder, Type};
        use utoipa::openapi::Required;
        vec![ParameterBuilder::new()
            .name("Idempotency-Key")
            .parameter_in(ParameterIn::Header)
            .required(Required::False)
            .description(Some(
                "Makes a retry safe: the same key with the same body answers the first answer again and writes nothing; with another body 422 `idempotency_key_reused`.",
            ))
            .schema(Some(
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .pattern(Some(IDEMPOTENCY_KEY_PATTERN))
                    .min_length(Some(1))
                    .max_length(Some(255)),
            ))
            .build()]
    }
}

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
            Some(value) => match value.to_str() {
                Ok(key) if is_idempotency_key(key.as_bytes()) => Some(key.to_string()),
                _ => {
                    return Err(ApiError::bad_request(
                        "Idempotency-Key must be 1 to 255 visible ASCII characters (spaces only inside)",
                    ))
                }
            },
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

#[cfg(test)]
mod tests {
    use super::is_idempotency_key;

    #[test]
    fn idempotency_keys_are_visible_ascii_with_inner_spaces() {
        for good in ["k", "retry-1", "a b", &"x".repeat(255), "!~"] {
            assert!(is_idempotency_key(good.as_bytes()), "{good:?}");
        }
        for bad in [
            "",
            " a",
            "a ",
            "a\tb",
            "\t",
            "é",
            &"x".repeat(256),
            "a\u{7f}",
        ] {
            assert!(!is_idempotency_key(bad.as_bytes()), "{bad:?}");
        }
    }
}
