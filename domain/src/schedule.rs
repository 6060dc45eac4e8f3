//! Clinic-local time: weekly opening hours, their UTC intervals on a given
//! local date (DST-aware), and instant intervals.

use chrono::{DateTime, NaiveDate, NaiveTime, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

use crate::DomainError;

/// A half-open span of time `[start, end)` in UTC.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Interval {
    /// First instant inside the interval.
    pub start: DateTime<Utc>,
    /// First instant after the interval.
    pub end: DateTime<Utc>,
}

/// A day of the week, serialised as `mon` … `sun` like the API.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Weekday {
    /// Monday.
    Mon,
    /// Tuesday.
    Tue,
    /// Wednesday.
    Wed,
    /// Thursday.
    Thu,
    /// Friday.
    Fri,
    /// Saturday.
    Sat,
    /// Sunday.
    Sun,
}

/// A clinic-local time range `[from, to)` within one day.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TimeRange {
    /// Local opening time.
    pub from: NaiveTime,
    /// Local closing time (exclusive); after `from`.
    pub to: NaiveTime,
}

/// Weekly opening hours in clinic-local time: for each weekday, sorted,
/// non-overlapping ranges. A weekday with no ranges is closed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpeningHours {
    /// Ranges per weekday, Monday first (index 0) to Sunday (index 6).
    pub days: [Vec<TimeRange>; 7],
}
