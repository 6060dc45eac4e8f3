//! Extractors whose rejections are problem+json: a JSON body that names
//! the offending field, path and query parameters.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use serde::de::DeserializeOwned;

use crate::error::{ApiError, Code};

/// A JSON request body. Unlike axum's, every rejection is problem+json
/// and says which field is wrong (`detail: "field start: premature end of input"`).
#[derive(Debug, Clone)]
pub struct Json<T>(pub T);

impl<S, T> FromRequest<S> for Json<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let is_json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .map(|v| {
                let v = v.trim();
                v.eq_ignore_ascii_case("application/json") || v.ends_with("+json")
            })
            .unwrap_or(false);
        if !is_json {
            return Err(ApiError::new(
                Code::UnsupportedMediaType,
                "the body must be JSON with Content-Type: application/json",
            ));
        }
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(body_rejection)?;
        parse(&bytes).map(Json)
    }
}

/// Parses a JSON body, naming the path of the offending field.
///
/// A number written with a zero fraction (`3.0`) is the integer it equals:
/// JSON Schema (and so the OpenAPI document) calls it an integer, so an
/// integer field takes it.
///
/// # Errors
/// 400 `invalid_request` naming the field.
pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let value: serde_json::Value = match serde_json::from_slice(bytes) {
        Ok(value) => value,
        // Read it again as `T` to name the field where the JSON breaks (a
        // number out of range, say), when there is one.
        Err(e) => {
            let mut deserializer = serde_json::Deserializer::from_slice(bytes);
            return Err(
                match serde_path_to_error::deserialize::<_, T>(&mut deserializer) {
                    Err(typed) => field_error(typed),
                    Ok(_) => ApiError::bad_request(format!("malformed JSON body: {e}")),
                },
            );
        }
    };
    if has_nul_escape(bytes) {
        return Err(ApiError::bad_request(
            "malformed JSON body: text must not contain NUL (\\u0000)",
        ));
    }
    // Every body is a JSON object; serde would also fill a struct from an
    // array of its fields in order, which the OpenAPI document does not allow.
    if !value.is_object() {
        return Err(ApiError::bad_request(
            "malformed JSON body: the body must be a JSON object",
        ));
    }
    serde_path_to_error::deserialize(integral(value)).map_err(field_error)
}

/// A deserialisation error as a 400 naming the field, when there is one.
fn field_error<E: std::fmt::Display>(e: serde_path_to_error::Error<E>) -> ApiError {
    let path = e.path().to_string();
    let inner = e.into_inner();
    if path == "." || path == "?" || path.is_empty() {
        ApiError::bad_request(format!("malformed JSON body: {inner}"))
    } else {
        ApiError::bad_request(format!("field {path}: {inner}"))
    }
}

/// `value` with every number that has a zero fraction and fits 64 bits
/// written as an integer.
fn integral(value: serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match value {
        Value::Number(n) if !n.is_i64() && !n.is_u64() => {
            let Some(f) = n.as_f64() else {
                return Value::Number(n);
            };
            // 2^63 and 2^64: the first values past i64 and u64.
            const I64_END: f64 = 9_223_372_036_854_775_808.0;
            const U64_END: f64 = 18_446_744_073_709_551_616.0;
            if f.fract() != 0.0 || !f.is_finite() {
                Value::Number(n)
            } else if (-I64_END..I64_END).contains(&f) {
                Value::from(f as i64)
            } else if (0.0..U64_END).contains(&f) {
                Value::from(f as u64)
            } else {
                Value::Number(n)
            }
        }
        Value::Array(items) => Value::Array(items.into_iter().map(integral).collect()),
        Value::Object(map) => {
            Value::Object(map.into_iter().map(|(k, v)| (k, integral(v))).collect())
        }
        other => other,
    }
}

/// Whether well-formed JSON holds a NUL character: only the escape
/// `\u0000` can write one, and PostgreSQL text cannot hold it.
fn has_nul_escape(json: &[u8]) -> bool {
    let mut i = 0;
    while i < json.len() {
        if json[i] == b'\\' {
            if json[i + 1..].starts_with(b"u0000") {
                return true;
            }
            // Skip the escaped character (an escaped backslash included).
            i += 2;
        } else {
            i += 1;
        }
    }
    false
}

/// A NUL written into a path or query (`%00`): refused, as in bodies.
fn refuse_nul(what: &str, text: Option<&str>) -> Result<(), ApiError> {
    if text.is_some_and(|t| t.contains("%00")) {
        return Err(ApiError::bad_request(format!(
            "{what}: text must not contain NUL (%00)"
        )));
    }
    Ok(())
}

fn body_rejection(rejection: BytesRejection) -> ApiError {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::new(
            Code::PayloadTooLarge,
            "the request body is larger than 64 KiB",
        )
    } else {
        ApiError::bad_request(format!("cannot read the request body: {rejection}"))
    }
}

/// An extractor of one part of the URI over axum's extractor of the same
/// name: a NUL written into the part (`$text` of the request's parts), or
/// anything axum rejects, is a 400 problem naming the part (`$what`).
macro_rules! uri_extractor {
    ($(#[$meta:meta])* $name:ident, $what:literal, $text:expr, $($bound:tt)+) => {
        $(#[$meta])*
        #[derive(Debug, Clone)]
        pub struct $name<T>(pub T);

        impl<S, T> FromRequestParts<S> for $name<T>
        where
            S: Send + Sync,
            T: $($bound)+,
        {
            type Rejection = ApiError;

            async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
                let text: fn(&Parts) -> Option<&str> = $text;
                refuse_nul($what, text(parts))?;
                axum::extract::$name::<T>::from_request_parts(parts, state)
                    .await
                    .map(|extracted| $name(extracted.0))
                    .map_err(|e| ApiError::bad_request(format!(concat!($what, ": {}"), e.body_text())))
            }
        }
    };
}

uri_extractor!(
    /// Path parameters; a malformed one (not a UUID, say) is a 400 naming it.
    Path,
    "path parameter",
    |parts| Some(parts.uri.path()),
    DeserializeOwned + Send
);

uri_extractor!(
    /// Query parameters; a malformed or missing one is a 400 naming it.
    Query,
    "query parameter",
    |parts| parts.uri.query(),
    DeserializeOwned
);

#[cfg(test)]
mod tests {
    use super::has_nul_escape;

    #[test]
    fn integral_numbers_read_as_integers() {
        #[derive(serde::Deserialize, Debug, PartialEq)]
        struct Counts {
            a: u32,
            b: i64,
            c: f64,
        }
        let parsed: Counts = super::parse(br#"{"a": 192.0, "b": -5.0, "c": 1.5}"#)
            .unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(
            parsed,
            Counts {
                a: 192,
                b: -5,
                c: 1.5
            }
        );
        for bad in [
            &br#"{"a": 1.5, "b": 0, "c": 0}"#[..],
            br#"{"a": 1, "b": 9223372036854775808.0, "c": 0}"#,
            br#"{"a": 1, "b": 1e300, "c": 0}"#,
            // serde alone would fill the struct from its fields in order.
            br#"[1, 2, 1.5]"#,
        ] {
            assert!(super::parse::<Counts>(bad).is_err());
        }
    }

    #[test]
    fn only_an_escaped_nul_is_a_nul() {
        assert!(has_nul_escape(br#"{"name":"a\u0000b"}"#));
        assert!(has_nul_escape(br#"["\\\u0000"]"#));
        assert!(!has_nul_escape(br#"{"name":"a\\u0000b"}"#));
        assert!(!has_nul_escape(br#"{"name":"a\u0001b\n"}"#));
        assert!(!has_nul_escape(br#"{"name":"\\"}"#));
    }
}
