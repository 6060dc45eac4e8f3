//! Bearer-token authentication: HS256 JWTs with claims `sub`, `role`, `exp`.
//! A missing or bad token is 401; a role that may not call the route is 403;
//! `admin` may call everything.

use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, HeaderMap};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use crate::error::ApiError;
use crate::state::AppState;

/// The four roles of the contract.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum, strum::IntoStaticStr,
)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum Role {
    /// May do everything.
    Admin,
    /// Books, moves, cancels; wallets and packages.
    Staff,
    /// Reads read models and reports.
    Analyst,
    /// Reads history and verifies it.
    Auditor,
}

impl Role {
    /// The role's name in tokens (serde's and strum's `snake_case` of the
    /// variant, so it is written once).
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// The claims of a clinicbook token.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Claims {
    /// Subject: who the caller is.
    pub sub: String,
    /// Role.
    pub role: Role,
    /// Expiry, seconds since the Unix epoch.
    pub exp: u64,
}

/// Signing and verification keys derived from the shared secret.
pub struct AuthKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
}

impl std::fmt::Debug for AuthKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AuthKeys(..)")
    }
}

impl AuthKeys {
    /// Keys for HS256 with `secret`.
    pub fn new(secret: &SecretString) -> Self {
        let bytes = secret.expose_secret().as_bytes();
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 5;
        validation.set_required_spec_claims(&["exp", "sub"]);
        Self {
            encoding: EncodingKey::from_secret(bytes),
            decoding: DecodingKey::from_secret(bytes),
            validation,
        }
    }

    /// A signed token for `sub` with `role`, valid for `ttl_seconds`.
    ///
    /// # Errors
    /// Signing failed (it does not with HS256 and a valid key).
    pub fn issue(
        &self,
        sub: &str,
        role: Role,
        ttl_seconds: u64,
    ) -> Result<String, jsonwebtoken::errors::Error> {
        let claims = Claims {
            sub: sub.to_string(),
            role,
            exp: unix_now().saturating_add(ttl_seconds),
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
    }

    /// The verified claims of `token`.
    ///
    /// # Errors
    /// 401 when the token is malformed, forged, expired or has no valid role.
    pub fn verify(&self, token: &str) -> Result<Claims, ApiError> {
        jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map(|data| data.claims)
            .map_err(|e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => {
                    ApiError::unauthorized("the token has expired")
                }
                _ => ApiError::unauthorized("the token is not valid"),
            })
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The authenticated caller of a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    /// The token's subject.
    pub sub: String,
    /// The token's role.
    pub role: Role,
}

impl Caller {
    /// Allows the call when the caller is admin or has one of `roles`.
    ///
    /// # Errors
    /// 403 otherwise.
    pub fn allow(&self, roles: &[Role]) -> Result<(), ApiError> {
        if self.role == Role::Admin || roles.contains(&self.role) {
            Ok(())
        } else {
            Err(ApiError::forbidden(format!(
                "the role {} may not do this",
                self.role.as_str()
            )))
        }
    }
}

/// The token of an `Authorization: Bearer <token>` header.
///
/// # Errors
/// 401 when the header is missing or not of that form.
pub fn bearer_token(headers: &HeaderMap) -> Result<&str, ApiError> {
    let value = headers
        .get(header::AUTHORIZATION)
        .ok_or_else(|| ApiError::unauthorized("missing Authorization: Bearer token"))?;
    value
        .to_str()
        .ok()
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| ApiError::unauthorized("the Authorization header must be `Bearer <token>`"))
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        // Verified once by the middleware ([`crate::limit::authenticate`]);
        // verified here when the router runs without it.
        if let Some(caller) = parts.extensions.get::<Caller>() {
            return Ok(caller.clone());
        }
        let claims = state.auth.verify(bearer_token(&parts.headers)?)?;
        Ok(Caller {
            sub: claims.sub,
            role: claims.role,
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::Role;

    #[test]
    fn role_names_are_the_token_names() {
        for (role, name) in [
            (Role::Admin, "admin"),
            (Role::Staff, "staff"),
            (Role::Analyst, "analyst"),
            (Role::Auditor, "auditor"),
        ] {
            assert_eq!(role.as_str(), name);
            assert_eq!(serde_json::to_value(role).unwrap(), name);
            let parsed: Role = serde_json::from_value(name.into()).unwrap();
            assert_eq!(parsed, role);
        }
    }
}
