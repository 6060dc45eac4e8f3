//! Upcasters: events stored by older releases, read as the current version.
//!
//! Stored events are never rewritten (the table is append-only and the hash
//! chain covers the stored bytes), so when an event's shape changes the
//! event gets a new major version and a pure function here turns the old
//! stored JSON into the new shape whenever it is read. The event store calls
//! [`upcast`] on every read path (aggregate loads, audit reads, the feed the
//! projectors consume), so nothing above it ever sees an old version.
//!
//! | event | stored | read as | change |
//! |---|---|---|---|
//! | `Reservation` / `ReservationBooked` | 1.x | 2.0.0 | adds `prepaid`: what the booking took from the wallet (v1 took the whole total for a wallet payment, nothing otherwise) |
//!
//! Versions are semantic versions: a new minor or patch version only adds
//! optional fields and needs no upcaster; a new major version does.

use serde_json::{Map, Value};
use thiserror::Error;

use crate::AggregateKind;

/// The version of `ReservationBooked` written by this release.
pub const RESERVATION_BOOKED_VERSION: &str = "2.0.0";

/// Why a stored event cannot be read as the current version.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum UpcastError {
    /// The stored version is not `MAJOR.MINOR.PATCH`.
    #[error("event version {0:?} is not a semantic version")]
    BadVersion(String),
    /// The stored payload lacks what its version promises.
    #[error("{event_type} {version} cannot be upcast: {reason}")]
    Malformed {
        /// The event type.
        event_type: String,
        /// The stored version.
        version: String,
        /// What is missing or wrong.
        reason: String,
    },
}

/// The version this release writes for `event_type` of `aggregate_type`.
/// Every event's version starts at [`crate::EVENT_VERSION`]; an event that
/// changed shape is written at the version its newest upcaster reads it as.
pub fn current_version(aggregate_type: &str, event_type: &str) -> &'static str {
    STEPS
        .iter()
        .rev()
        .find(|s| s.aggregate.name() == aggregate_type && s.event_type == event_type)
        .map_or(crate::EVENT_VERSION, |s| s.to)
}

/// An event body (the object inside `{"Variant": ...}`).
type Body = Map<String, Value>;

/// One step: events of a type whose major version is `from_major` become
/// version `to` by `apply`.
struct Step {
    aggregate: AggregateKind,
    event_type: &'static str,
    from_major: u64,
    to: &'static str,
    apply: fn(Body) -> Result<Body, String>,
}

/// Every upcaster, oldest first.
const STEPS: &[Step] = &[Step {
    aggregate: AggregateKind::Reservation,
    event_type: "ReservationBooked",
    from_major: 1,
    to: RESERVATION_BOOKED_VERSION,
    apply: reservation_booked_v1_to_v2,
}];

/// `ReservationBooked` 1.x → 2.0.0: v1 had no `prepaid`; a v1 booking paid
/// from the wallet was debited its whole total at booking, any other
/// payment nothing.
fn reservation_booked_v1_to_v2(mut body: Map<String, Value>) -> Result<Map<String, Value>, String> {
    let method = body
        .get("payment")
        .and_then(|p| p.get("method"))
        .and_then(Value::as_str)
        .ok_or("payment.method is missing")?;
    let total = body
        .get("price")
        .and_then(|p| p.get("total"))
        .and_then(Value::as_i64)
        .ok_or("price.total is missing or not an integer")?;
    let prepaid = if method == "wallet" { total } else { 0 };
    body.insert("prepaid".to_string(), Value::from(prepaid));
    Ok(body)
}

/// The major version of a `MAJOR.MINOR.PATCH` string.
fn major(version: &str) -> Result<u64, UpcastError> {
    let bad = || UpcastError::BadVersion(version.to_string());
    let mut parts = version.split('.');
    let major = parts.next().and_then(|p| p.parse().ok()).ok_or_else(bad)?;
    for _ in 0..2 {
        parts
            .next()
            .and_then(|p| p.parse::<u64>().ok())
            .ok_or_else(bad)?;
    }
    if parts.next().is_some() {
        return Err(bad());
    }
    Ok(major)
}

fn step_for(aggregate_type: &str, event_type: &str, major: u64) -> Option<&'static Step> {
    STEPS.iter().find(|s| {
        s.aggregate.name() == aggregate_type && s.event_type == event_type && s.from_major == major
    })
}

/// True when a stored event must go through [`upcast`] before it is
/// deserialised. Cheap (no JSON is parsed), so readers call it for every
/// event and parse only the old ones twice.
///
/// # Errors
/// The version is not a semantic version.
pub fn needs_upcast(
    aggregate_type: &str,
    event_type: &str,
    version: &str,
) -> Result<bool, UpcastError> {
    Ok(step_for(aggregate_type, event_type, major(version)?).is_some())
}

/// A stored event read as the current version: its version and payload
/// (`{"Variant": {...}}`, as the domain serialises events). An event that
/// is already current comes back unchanged.
///
/// # Errors
/// The version is not a semantic version, or the payload lacks a field its
/// upcaster needs.
pub fn upcast(
    aggregate_type: &str,
    event_type: &str,
    version: &str,
    payload: Value,
) -> Result<(String, Value), UpcastError> {
    let mut version = version.to_string();
    let mut payload = payload;
    while let Some(step) = step_for(aggregate_type, event_type, major(&version)?) {
        let malformed = |reason: String| UpcastError::Malformed {
            event_type: event_type.to_string(),
            version: version.clone(),
            reason,
        };
        let Value::Object(mut wrapper) = payload else {
            return Err(malformed("the payload is not an object".to_string()));
        };
        let body = match wrapper.remove(event_type) {
            Some(Value::Object(body)) => body,
            _ => return Err(malformed(format!("the payload has no {event_type} object"))),
        };
        let body = (step.apply)(body).map_err(malformed)?;
        wrapper.insert(event_type.to_string(), Value::Object(body));
        payload = Value::Object(wrapper);
        version = step.to.to_string();
    }
    Ok((version, payload))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::reservation::ReservationEvent;

    /// A `ReservationBooked` exactly as release 1 stored it.
    fn v1(method: serde_json::Value) -> Value {
        json!({"ReservationBooked": {
            "reservation_id": "00000000-0000-0000-0000-000000000001",
            "patient_id": "00000000-0000-0000-0000-000000000002",
            "clinic_id": "00000000-0000-0000-0000-000000000003",
            "treatment_id": "00000000-0000-0000-0000-000000000004",
            "slot": {"resource_id": "00000000-0000-0000-0000-000000000005",
                     "start": "2030-01-08T09:00:00Z", "end": "2030-01-08T10:00:00Z"},
            "price": {"base": 10000, "adjustments": 2000, "discount": 1000, "total": 11000},
            "payment": method,
            "promo_code": null,
            "booked_at": "2030-01-07T08:00:00Z"
        }})
    }

    fn prepaid_of(event: &ReservationEvent) -> i64 {
        match event {
            ReservationEvent::ReservationBooked { prepaid, .. } => prepaid.cents(),
            other => panic!("not a booking: {other:?}"),
        }
    }

    #[test]
    fn a_v1_wallet_booking_reads_as_v2_prepaid_its_total() {
        let (version, payload) = upcast(
            "Reservation",
            "ReservationBooked",
            "1.0.0",
            v1(json!({"method": "wallet"})),
        )
        .unwrap();
        assert_eq!(version, RESERVATION_BOOKED_VERSION);
        let event: ReservationEvent = serde_json::from_value(payload).unwrap();
        assert_eq!(prepaid_of(&event), 11_000);
    }

    #[test]
    fn a_v1_booking_paid_otherwise_reads_as_v2_prepaid_nothing() {
        for method in [
            json!({"method": "at_clinic"}),
            json!({"method": "package", "package_id": "00000000-0000-0000-0000-000000000009"}),
        ] {
            let (_, payload) =
                upcast("Reservation", "ReservationBooked", "1.2.3", v1(method)).unwrap();
            let event: ReservationEvent = serde_json::from_value(payload).unwrap();
            assert_eq!(prepaid_of(&event), 0);
        }
    }

    #[test]
    fn a_v1_payload_does_not_deserialise_without_the_upcaster() {
        assert!(
            serde_json::from_value::<ReservationEvent>(v1(json!({"method": "wallet"}))).is_err()
        );
    }

    #[test]
    fn current_events_and_other_types_pass_unchanged() {
        let current = json!({"CheckedIn": {"at": "2030-01-08T09:00:00Z"}});
        assert_eq!(
            upcast("Reservation", "CheckedIn", "1.0.0", current.clone()).unwrap(),
            ("1.0.0".to_string(), current)
        );
        let v2 = v1(json!({"method": "wallet"}));
        assert!(!needs_upcast("Reservation", "ReservationBooked", "2.0.0").unwrap());
        assert!(needs_upcast("Reservation", "ReservationBooked", "1.0.0").unwrap());
        assert!(!needs_upcast("Wallet", "ReservationBooked", "1.0.0").unwrap());
        assert_eq!(
            upcast("Reservation", "ReservationBooked", "2.0.0", v2.clone())
                .unwrap()
                .1,
            v2
        );
    }

    #[test]
    fn bad_versions_and_malformed_payloads_are_errors_not_panics() {
        for version in ["1", "1.0", "1.0.0.0", "x.0.0", ""] {
            assert_eq!(
                needs_upcast("Reservation", "ReservationBooked", version),
                Err(UpcastError::BadVersion(version.to_string()))
            );
        }
        for payload in [
            json!([]),
            json!({"Other": {}}),
            json!({"ReservationBooked": {"price": {"total": 1}}}),
            json!({"ReservationBooked": {"payment": {"method": "wallet"}, "price": {"total": "1"}}}),
        ] {
            assert!(matches!(
                upcast("Reservation", "ReservationBooked", "1.0.0", payload),
                Err(UpcastError::Malformed { .. })
            ));
        }
    }

    #[test]
    fn the_current_version_of_each_event() {
        assert_eq!(current_version("Reservation", "ReservationBooked"), "2.0.0");
        assert_eq!(
            current_version("Reservation", "CheckedIn"),
            crate::EVENT_VERSION
        );
        assert_eq!(
            current_version("Wallet", "FundsDeposited"),
            crate::EVENT_VERSION
        );
    }
}
