//! Every read path turns stored events into the current version here, with
//! the domain's pure upcasters, so nothing above the store sees an old shape.

use clinicbook_domain::upcast;
use serde::de::DeserializeOwned;
use serde_json::Value;

/// A stored event's payload text deserialised as the current version of
/// `E`. Current events are parsed once, straight from the text; old ones go
/// through a JSON value and the upcaster.
///
/// # Errors
/// A readable reason: a bad version, a payload the upcaster cannot read, or
/// one that does not deserialise.
pub(crate) fn event_from_text<E: DeserializeOwned>(
    aggregate_type: &str,
    event_type: &str,
    version: &str,
    payload: &str,
) -> Result<E, String> {
    if upcast::needs_upcast(aggregate_type, event_type, version).map_err(|e| e.to_string())? {
        let value: Value = serde_json::from_str(payload).map_err(|e| e.to_string())?;
        let (_, value) = upcast::upcast(aggregate_type, event_type, version, value)
            .map_err(|e| e.to_string())?;
        serde_json::from_value(value).map_err(|e| e.to_string())
    } else {
        serde_json::from_str(payload).map_err(|e| e.to_string())
    }
}

/// A stored event's version and payload as the current version, and the
/// stored version when it differed.
///
/// # Errors
/// A bad version or a payload the upcaster cannot read.
pub(crate) fn current(
    aggregate_type: &str,
    event_type: &str,
    version: String,
    payload: Value,
) -> Result<(String, Value, Option<String>), upcast::UpcastError> {
    if !upcast::needs_upcast(aggregate_type, event_type, &version)? {
        return Ok((version, payload, None));
    }
    let (current, payload) = upcast::upcast(aggregate_type, event_type, &version, payload)?;
    Ok((current, payload, Some(version)))
}
