//! Instants as clients send them: RFC 3339 with any offset, converted to
//! UTC and cut to the microsecond (the precision clinicbook records, see
//! [`clinicbook_domain::micros`]). chrono also accepts a second of 60 at any minute and
//! then computes ends one second short, so a `:60` second is refused here,
//! in the one place every input instant is read.

use chrono::{DateTime, Timelike, Utc};
use serde::de::Error;
use serde::{Deserialize, Deserializer};

/// Deserialises an input instant, refusing a leap second, cut to the
/// microsecond.
///
/// # Errors
/// The text is not RFC 3339, or its second is 60.
pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<DateTime<Utc>, D::Error> {
    let instant = DateTime::<Utc>::deserialize(deserializer)?;
    if instant.nanosecond() >= 1_000_000_000 {
        return Err(D::Error::custom(
            "a second of 60 is not accepted; use :59 or the next minute",
        ));
    }
    Ok(clinicbook_domain::micros(instant))
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    #[derive(Deserialize)]
    struct At {
        #[serde(deserialize_with = "super::deserialize")]
        at: chrono::DateTime<chrono::Utc>,
    }

    #[test]
    fn converts_offsets_and_refuses_a_leap_second() {
        let at: At = serde_json::from_str(r#"{"at":"2030-06-29T12:59:59+02:00"}"#).unwrap();
        assert_eq!(at.at.to_rfc3339(), "2030-06-29T10:59:59+00:00");
        assert!(serde_json::from_str::<At>(r#"{"at":"2030-06-29T10:59:60Z"}"#).is_err());
    }

    #[test]
    fn cuts_to_the_microsecond() {
        let at: At = serde_json::from_str(r#"{"at":"2030-06-29T10:00:00.123456999Z"}"#).unwrap();
        assert_eq!(at.at.to_rfc3339(), "2030-06-29T10:00:00.123456+00:00");
        let later = at.at + chrono::TimeDelta::nanoseconds(789);
        assert_eq!(clinicbook_domain::micros(later), at.at);
    }
}
