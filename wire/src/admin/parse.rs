//! The admin API's primitive values to and from domain types: weekday keys,
//! clinic-local `HH:MM` times and resource kinds. Public so that every
//! slice and the API read and write them the same way.

use chrono::{NaiveTime, Timelike};
use clinicbook_domain::clinic::ResourceKind;
use clinicbook_domain::schedule::Weekday;
use clinicbook_domain::DomainError;
use strum::VariantNames;

/// A weekday as the API writes it: `mon`, `tue`, … `sun`.
///
/// # Errors
/// `DomainError::InvalidInput` naming `field` for anything else.
pub fn parse_weekday(field: &str, raw: &str) -> Result<Weekday, DomainError> {
    Weekday::ALL
        .into_iter()
        .find(|day| day.as_str() == raw)
        .ok_or_else(|| {
            DomainError::invalid(
                field,
                format!("{raw:?} is not a weekday (mon, tue, wed, thu, fri, sat, sun)"),
            )
        })
}

/// A clinic-local time of day written `HH:MM` on a 24-hour clock, two
/// digits each (`09:00`, `17:30`).
///
/// `24:00` is refused: a time of day cannot be the end of the day, and
/// storing 23:59:59.999999999 instead would freeze an odd value in events
/// without letting a booking end at midnight. Close at `23:59`.
///
/// # Errors
/// `DomainError::InvalidInput` naming `field` when `raw` is not such a time.
pub fn parse_local_time(field: &str, raw: &str) -> Result<NaiveTime, DomainError> {
    if raw == "24:00" {
        return Err(DomainError::invalid(
            field,
            "24:00 is not a time of day; the latest is 23:59",
        ));
    }
    let two_digits = |s: &str| s.len() == 2 && s.bytes().all(|b| b.is_ascii_digit());
    raw.split_once(':')
        .filter(|(hours, minutes)| two_digits(hours) && two_digits(minutes))
        .and_then(|(hours, minutes)| {
            NaiveTime::from_hms_opt(hours.parse().ok()?, minutes.parse().ok()?, 0)
        })
        .ok_or_else(|| {
            DomainError::invalid(
                field,
                format!("{raw:?} is not a time of day written HH:MM (00:00 to 23:59)"),
            )
        })
}

/// A time of day as the API writes it: `HH:MM`, or `HH:MM:SS` for a time
/// with seconds (which the admin use cases never store).
pub fn format_local_time(time: NaiveTime) -> String {
    if time.second() == 0 && time.nanosecond() == 0 {
        time.format("%H:%M").to_string()
    } else {
        time.format("%H:%M:%S").to_string()
    }
}

/// A resource kind as the API writes it: `room`, `device` or
/// `practitioner`.
///
/// # Errors
/// `DomainError::InvalidInput` naming `field` for anything else.
pub fn parse_resource_kind(field: &str, raw: &str) -> Result<ResourceKind, DomainError> {
    raw.parse().map_err(|_| {
        DomainError::invalid(
            field,
            format!(
                "{raw:?} is not a resource kind ({})",
                ResourceKind::VARIANTS.join(", ")
            ),
        )
    })
}

/// The API name of a resource kind (the domain's own, see
/// [`ResourceKind::as_str`]).
pub fn resource_kind_name(kind: ResourceKind) -> &'static str {
    kind.as_str()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field_of(e: DomainError) -> String {
        match e {
            DomainError::InvalidInput { field, .. } => field,
            other => panic!("expected invalid_input, got {other:?}"),
        }
    }

    #[test]
    fn weekdays_round_trip() {
        for day in Weekday::ALL {
            assert_eq!(parse_weekday("d", day.as_str()), Ok(day));
        }
        for bad in ["Mon", "monday", "", "mo"] {
            assert_eq!(
                field_of(parse_weekday("rules[0].weekdays[2]", bad).unwrap_err()),
                "rules[0].weekdays[2]"
            );
        }
    }

    #[test]
    fn times_are_two_digit_hours_and_minutes() {
        let t = |h, m| NaiveTime::from_hms_opt(h, m, 0).unwrap();
        assert_eq!(parse_local_time("f", "00:00"), Ok(t(0, 0)));
        assert_eq!(parse_local_time("f", "09:05"), Ok(t(9, 5)));
        assert_eq!(parse_local_time("f", "23:59"), Ok(t(23, 59)));
        for bad in [
            "24:00", "25:00", "9:00", "09:60", "09:00:00", "0900", "+9:00", " 09:00", "ab:cd", "",
        ] {
            assert_eq!(
                field_of(parse_local_time("mon[0][1]", bad).unwrap_err()),
                "mon[0][1]",
                "{bad:?}"
            );
        }
    }

    #[test]
    fn times_format_back_to_what_they_parse_from() {
        for raw in ["00:00", "09:05", "23:59"] {
            assert_eq!(format_local_time(parse_local_time("f", raw).unwrap()), raw);
        }
        let with_seconds = NaiveTime::from_hms_opt(9, 0, 30).unwrap();
        assert_eq!(format_local_time(with_seconds), "09:00:30");
    }

    /// The API names of the resource kinds, as the contract writes them.
    const RESOURCE_KINDS: [(&str, ResourceKind); 3] = [
        ("room", ResourceKind::Room),
        ("device", ResourceKind::Device),
        ("practitioner", ResourceKind::Practitioner),
    ];

    #[test]
    fn resource_kinds_round_trip() {
        for (name, kind) in RESOURCE_KINDS {
            assert_eq!(parse_resource_kind("kind", name), Ok(kind));
            assert_eq!(resource_kind_name(kind), name);
        }
        assert_eq!(
            field_of(parse_resource_kind("resource_kind", "Laser").unwrap_err()),
            "resource_kind"
        );
    }
}
