//! Clinic-local time: weekly opening hours, their UTC intervals on a given
//! local date (DST-aware), and instant intervals.

use chrono::{DateTime, Datelike, LocalResult, NaiveDate, NaiveDateTime, NaiveTime, TimeZone, Utc};
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

named! {
    /// A day of the week, serialised as `mon` … `sun` like the API.
    #[derive(PartialOrd, Ord)]
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

impl Interval {
    /// The interval `[start, end)`.
    ///
    /// # Errors
    /// `DomainError::InvalidInput` naming the field `end` when `end` is not
    /// after `start`: an empty or reversed interval is never meaningful here.
    pub fn new(start: DateTime<Utc>, end: DateTime<Utc>) -> Result<Self, DomainError> {
        if end <= start {
            return Err(DomainError::inconsistent("end", "must be after start"));
        }
        Ok(Self { start, end })
    }

    /// True when the two intervals share at least one instant. Touching
    /// intervals (`a.end == b.start`) do not overlap.
    pub fn overlaps(&self, other: &Interval) -> bool {
        self.start < other.end && other.start < self.end
    }

    /// True when `other` lies entirely inside this interval.
    pub fn contains(&self, other: &Interval) -> bool {
        self.start <= other.start && other.end <= self.end
    }

    /// Length in whole minutes (rounded down).
    pub fn minutes(&self) -> i64 {
        (self.end - self.start).num_minutes()
    }

    /// What is left of this interval once `hole` is cut out of it: nothing,
    /// the part before the hole, the part after it, or both.
    pub fn minus(&self, hole: &Interval) -> Vec<Interval> {
        if !self.overlaps(hole) {
            return vec![*self];
        }
        [(self.start, hole.start), (hole.end, self.end)]
            .into_iter()
            .filter_map(|(start, end)| Interval::new(start, end).ok())
            .collect()
    }
}

impl Weekday {
    /// All weekdays, Monday first, in the order of [`OpeningHours::days`].
    pub const ALL: [Weekday; 7] = [
        Weekday::Mon,
        Weekday::Tue,
        Weekday::Wed,
        Weekday::Thu,
        Weekday::Fri,
        Weekday::Sat,
        Weekday::Sun,
    ];

    /// The chrono weekday's counterpart.
    pub fn from_chrono(day: chrono::Weekday) -> Self {
        Self::ALL[day.num_days_from_monday() as usize]
    }

    /// The chrono counterpart of this weekday.
    pub fn to_chrono(self) -> chrono::Weekday {
        match self {
            Weekday::Mon => chrono::Weekday::Mon,
            Weekday::Tue => chrono::Weekday::Tue,
            Weekday::Wed => chrono::Weekday::Wed,
            Weekday::Thu => chrono::Weekday::Thu,
            Weekday::Fri => chrono::Weekday::Fri,
            Weekday::Sat => chrono::Weekday::Sat,
            Weekday::Sun => chrono::Weekday::Sun,
        }
    }

    /// The API name: `mon` … `sun` (serde's and strum's `snake_case` of
    /// the variant).
    pub fn as_str(self) -> &'static str {
        self.into()
    }

    /// Position in a week starting on Monday (0) and ending on Sunday (6).
    pub fn index(self) -> usize {
        self as usize
    }
}

impl TimeRange {
    /// True when the local time `t` is inside `[from, to)`.
    pub fn contains(&self, t: NaiveTime) -> bool {
        self.from <= t && t < self.to
    }
}

impl OpeningHours {
    /// Opening hours from seven days of ranges, Monday first.
    ///
    /// # Errors
    /// `DomainError::InvalidInput` naming the field `opening_hours` when a
    /// range does not end after it starts, or a day's ranges are not sorted
    /// or overlap (ranges that touch, `09:00–13:00` and `13:00–17:00`, are
    /// fine).
    pub fn new(days: [Vec<TimeRange>; 7]) -> Result<Self, DomainError> {
        let hours = Self { days };
        hours.validate()?;
        Ok(hours)
    }

    /// Checks the rules of [`OpeningHours::new`] on a value built otherwise
    /// (e.g. deserialised from a command).
    ///
    /// # Errors
    /// As [`OpeningHours::new`].
    pub fn validate(&self) -> Result<(), DomainError> {
        for (day, ranges) in Weekday::ALL.iter().zip(&self.days) {
            let invalid = |reason: &str| {
                DomainError::inconsistent("opening_hours", format!("{}: {reason}", day.as_str()))
            };
            if ranges.iter().any(|r| r.from >= r.to) {
                return Err(invalid("every range must end after it starts"));
            }
            if ranges.windows(2).any(|pair| pair[1].from < pair[0].to) {
                return Err(invalid("ranges must be sorted and must not overlap"));
            }
        }
        Ok(())
    }

    /// The local ranges of one weekday.
    pub fn ranges(&self, day: Weekday) -> &[TimeRange] {
        &self.days[day.index()]
    }

    /// The opening intervals, in UTC, of the clinic-local `date` in `tz`.
    ///
    /// Each local range of that date's weekday is converted with the offset
    /// in force at that moment, so DST is respected. On a DST-change day:
    ///
    /// - a local time inside the spring-forward gap (it never happens on the
    ///   wall clock) maps to the first instant after the gap, i.e. the
    ///   transition itself: the clinic opens (or closes) as soon as the clocks
    ///   jump;
    /// - an ambiguous local time (it happens twice when clocks fall back)
    ///   maps to its earliest instant when it starts a range and to its
    ///   latest instant when it ends one: the clinic is open for the whole of
    ///   both occurrences rather than losing an hour of bookings.
    ///
    /// The result is sorted; intervals that overlap or touch are merged (two
    /// touching local ranges are one continuous opening, and the ambiguity
    /// rule above may make neighbouring ranges overlap), and a range that
    /// lies wholly inside a gap (so never happens) is dropped.
    pub fn intervals_utc(&self, tz: Tz, date: NaiveDate) -> Vec<Interval> {
        let day = Weekday::from_chrono(date.weekday());
        let mut merged: Vec<Interval> = Vec::new();
        for range in self.ranges(day) {
            let start = to_utc(tz, date.and_time(range.from), Ambiguity::Earliest);
            let end = to_utc(tz, date.and_time(range.to), Ambiguity::Latest);
            let Ok(interval) = Interval::new(start, end) else {
                continue;
            };
            match merged.last_mut() {
                Some(last) if interval.start <= last.end => last.end = last.end.max(interval.end),
                _ => merged.push(interval),
            }
        }
        merged
    }
}

/// The clinic-local calendar date of an instant.
pub fn local_date(tz: Tz, at: DateTime<Utc>) -> NaiveDate {
    at.with_timezone(&tz).date_naive()
}

/// Which instant an ambiguous local time (clocks falling back) stands for.
#[derive(Clone, Copy)]
enum Ambiguity {
    Earliest,
    Latest,
}

/// The instant of the local time `local` in `tz`; see
/// [`OpeningHours::intervals_utc`] for gaps and ambiguous times.
fn to_utc(tz: Tz, local: NaiveDateTime, ambiguity: Ambiguity) -> DateTime<Utc> {
    match tz.from_local_datetime(&local) {
        LocalResult::Single(at) => at.with_timezone(&Utc),
        LocalResult::Ambiguous(earliest, latest) => match ambiguity {
            Ambiguity::Earliest => earliest.with_timezone(&Utc),
            Ambiguity::Latest => latest.with_timezone(&Utc),
        },
        LocalResult::None => end_of_gap(tz, local),
    }
}

/// The first instant whose local time in `tz` is after `local`, a local time
/// that falls in a gap: that is the transition which skips over it.
///
/// Every real UTC offset is within ±16 hours, so the instant lies in
/// `[local - 16h, local + 16h]` read as UTC; a binary search over whole
/// seconds (offsets and transitions are whole seconds) finds it exactly,
/// whatever the length of the gap.
fn end_of_gap(tz: Tz, local: NaiveDateTime) -> DateTime<Utc> {
    let local_after = |secs: i64| {
        DateTime::from_timestamp(secs, 0).map(|at| at.with_timezone(&tz).naive_local() > local)
    };
    let bound = 16 * 3600;
    let mut lo = local.and_utc().timestamp() - bound; // local time before `local`
    let mut hi = local.and_utc().timestamp() + bound; // local time after `local`
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        match local_after(mid) {
            Some(true) => hi = mid,
            Some(false) => lo = mid,
            None => break, // outside chrono's range: keep the bound found so far
        }
    }
    DateTime::from_timestamp(hi, 0).unwrap_or(local.and_utc())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)] // a broken fixture should fail the test loudly
mod tests {
    use super::*;

    fn hm(h: u32, m: u32) -> NaiveTime {
        NaiveTime::from_hms_opt(h, m, 0).unwrap()
    }

    fn range(from: (u32, u32), to: (u32, u32)) -> TimeRange {
        TimeRange {
            from: hm(from.0, from.1),
            to: hm(to.0, to.1),
        }
    }

    fn utc(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    fn date(s: &str) -> NaiveDate {
        s.parse().unwrap()
    }

    fn every_day(ranges: Vec<TimeRange>) -> OpeningHours {
        OpeningHours::new(std::array::from_fn(|_| ranges.clone())).unwrap()
    }

    fn iv(start: &str, end: &str) -> Interval {
        Interval::new(utc(start), utc(end)).unwrap()
    }

    const BERLIN: Tz = chrono_tz::Europe::Berlin;

    #[test]
    fn interval_new_refuses_empty_and_reversed() {
        let a = utc("2026-01-01T10:00:00Z");
        let b = utc("2026-01-01T11:00:00Z");
        assert_eq!(Interval::new(a, b).unwrap().minutes(), 60);
        assert_eq!(
            Interval::new(a, a),
            Err(DomainError::inconsistent("end", "must be after start"))
        );
        assert!(Interval::new(b, a).is_err());
    }

    #[test]
    fn interval_overlap_and_containment() {
        let a = iv("2026-01-01T10:00:00Z", "2026-01-01T11:00:00Z");
        let touching = iv("2026-01-01T11:00:00Z", "2026-01-01T12:00:00Z");
        let crossing = iv("2026-01-01T10:59:00Z", "2026-01-01T12:00:00Z");
        let inner = iv("2026-01-01T10:15:00Z", "2026-01-01T10:45:00Z");
        assert!(!a.overlaps(&touching) && !touching.overlaps(&a));
        assert!(a.overlaps(&crossing) && crossing.overlaps(&a));
        assert!(a.overlaps(&inner) && inner.overlaps(&a));
        assert!(a.contains(&inner) && a.contains(&a));
        assert!(!inner.contains(&a) && !a.contains(&crossing));
    }

    #[test]
    fn interval_minus_cuts_a_hole() {
        let day = iv("2026-01-01T08:00:00Z", "2026-01-01T17:00:00Z");
        let lunch = iv("2026-01-01T12:00:00Z", "2026-01-01T13:00:00Z");
        assert_eq!(
            day.minus(&lunch),
            vec![
                iv("2026-01-01T08:00:00Z", "2026-01-01T12:00:00Z"),
                iv("2026-01-01T13:00:00Z", "2026-01-01T17:00:00Z"),
            ]
        );
        let morning = iv("2026-01-01T07:00:00Z", "2026-01-01T09:00:00Z");
        assert_eq!(
            day.minus(&morning),
            vec![iv("2026-01-01T09:00:00Z", "2026-01-01T17:00:00Z")]
        );
        let evening = iv("2026-01-01T17:00:00Z", "2026-01-01T18:00:00Z");
        assert_eq!(day.minus(&evening), vec![day]);
        let all = iv("2026-01-01T00:00:00Z", "2026-01-02T00:00:00Z");
        assert!(day.minus(&all).is_empty());
    }

    #[test]
    fn weekday_round_trips_through_chrono() {
        for day in Weekday::ALL {
            assert_eq!(Weekday::from_chrono(day.to_chrono()), day);
        }
        assert_eq!(Weekday::from_chrono(chrono::Weekday::Sun), Weekday::Sun);
        assert_eq!(Weekday::Wed.index(), 2);
        assert_eq!(serde_json::to_string(&Weekday::Fri).unwrap(), "\"fri\"");
    }

    #[test]
    fn opening_hours_accept_sorted_touching_ranges_and_closed_days() {
        let mut days: [Vec<TimeRange>; 7] = Default::default();
        days[0] = vec![range((9, 0), (13, 0)), range((13, 0), (17, 0))];
        assert!(OpeningHours::new(days).is_ok());
    }

    #[test]
    fn opening_hours_refuse_empty_reversed_unsorted_or_overlapping_ranges() {
        let bad = [
            vec![range((9, 0), (9, 0))],
            vec![range((18, 0), (9, 0))],
            vec![range((14, 0), (18, 0)), range((9, 0), (12, 0))],
            vec![range((9, 0), (13, 0)), range((12, 0), (18, 0))],
        ];
        for ranges in bad {
            let mut days: [Vec<TimeRange>; 7] = Default::default();
            days[4] = ranges;
            let err = OpeningHours::new(days).unwrap_err();
            assert!(
                matches!(&err, DomainError::InconsistentInput { field, reason } if field == "opening_hours" && reason.starts_with("fri")),
                "{err:?}"
            );
        }
    }

    #[test]
    fn berlin_9_to_18_is_8_to_17_utc_in_winter_and_7_to_16_in_summer() {
        let hours = every_day(vec![range((9, 0), (18, 0))]);
        assert_eq!(
            hours.intervals_utc(BERLIN, date("2026-01-15")),
            vec![iv("2026-01-15T08:00:00Z", "2026-01-15T17:00:00Z")]
        );
        assert_eq!(
            hours.intervals_utc(BERLIN, date("2026-07-15")),
            vec![iv("2026-07-15T07:00:00Z", "2026-07-15T16:00:00Z")]
        );
    }

    #[test]
    fn daytime_hours_on_both_dst_change_days() {
        let hours = every_day(vec![range((9, 0), (18, 0))]);
        // 2026-03-29: clocks jump 02:00 CET -> 03:00 CEST, the day is CEST from 09:00.
        assert_eq!(
            hours.intervals_utc(BERLIN, date("2026-03-29")),
            vec![iv("2026-03-29T07:00:00Z", "2026-03-29T16:00:00Z")]
        );
        // 2026-10-25: clocks fall back 03:00 CEST -> 02:00 CET, the day is CET from 09:00.
        assert_eq!(
            hours.intervals_utc(BERLIN, date("2026-10-25")),
            vec![iv("2026-10-25T08:00:00Z", "2026-10-25T17:00:00Z")]
        );
    }

    #[test]
    fn night_hours_across_the_spring_forward_gap() {
        // 01:00 CET = 00:00Z; 04:00 CEST = 02:00Z: only two real hours.
        let hours = every_day(vec![range((1, 0), (4, 0))]);
        let spring = hours.intervals_utc(BERLIN, date("2026-03-29"));
        assert_eq!(
            spring,
            vec![iv("2026-03-29T00:00:00Z", "2026-03-29T02:00:00Z")]
        );
        assert_eq!(spring[0].minutes(), 120);
    }

    #[test]
    fn night_hours_across_the_fall_back_overlap() {
        // 01:00 CEST = 23:00Z the day before; 04:00 CET = 03:00Z: four real hours.
        let hours = every_day(vec![range((1, 0), (4, 0))]);
        let autumn = hours.intervals_utc(BERLIN, date("2026-10-25"));
        assert_eq!(
            autumn,
            vec![iv("2026-10-24T23:00:00Z", "2026-10-25T03:00:00Z")]
        );
        assert_eq!(autumn[0].minutes(), 240);
    }

    #[test]
    fn a_start_in_the_gap_opens_when_the_clocks_jump() {
        // 02:30 does not exist on 2026-03-29: the first instant after the gap is 01:00Z (03:00 CEST).
        let hours = every_day(vec![range((2, 30), (5, 0))]);
        assert_eq!(
            hours.intervals_utc(BERLIN, date("2026-03-29")),
            vec![iv("2026-03-29T01:00:00Z", "2026-03-29T03:00:00Z")]
        );
        // An end in the gap closes at the jump too.
        let hours = every_day(vec![range((1, 0), (2, 30))]);
        assert_eq!(
            hours.intervals_utc(BERLIN, date("2026-03-29")),
            vec![iv("2026-03-29T00:00:00Z", "2026-03-29T01:00:00Z")]
        );
    }

    #[test]
    fn a_range_wholly_inside_the_gap_is_dropped() {
        let hours = every_day(vec![range((2, 10), (2, 50)), range((9, 0), (10, 0))]);
        assert_eq!(
            hours.intervals_utc(BERLIN, date("2026-03-29")),
            vec![iv("2026-03-29T07:00:00Z", "2026-03-29T08:00:00Z")]
        );
    }

    #[test]
    fn ambiguous_times_take_the_earliest_start_and_the_latest_end() {
        // 02:30 happens at 00:30Z (CEST) and again at 01:30Z (CET).
        let starts = every_day(vec![range((2, 30), (5, 0))]);
        assert_eq!(
            starts.intervals_utc(BERLIN, date("2026-10-25")),
            vec![iv("2026-10-25T00:30:00Z", "2026-10-25T04:00:00Z")]
        );
        let ends = every_day(vec![range((0, 0), (2, 30))]);
        assert_eq!(
            ends.intervals_utc(BERLIN, date("2026-10-25")),
            vec![iv("2026-10-24T22:00:00Z", "2026-10-25T01:30:00Z")]
        );
    }

    #[test]
    fn touching_or_overlapping_intervals_are_merged() {
        let hours = every_day(vec![
            range((1, 0), (2, 30)),
            range((2, 30), (4, 0)),
            range((9, 0), (12, 0)),
            range((12, 0), (13, 0)),
            range((14, 0), (15, 0)),
        ]);
        assert_eq!(
            hours.intervals_utc(BERLIN, date("2026-10-25")),
            vec![
                iv("2026-10-24T23:00:00Z", "2026-10-25T03:00:00Z"),
                iv("2026-10-25T08:00:00Z", "2026-10-25T12:00:00Z"),
                iv("2026-10-25T13:00:00Z", "2026-10-25T14:00:00Z"),
            ]
        );
    }

    #[test]
    fn only_the_dates_weekday_is_used_and_closed_days_give_nothing() {
        let mut days: [Vec<TimeRange>; 7] = Default::default();
        days[Weekday::Mon.index()] = vec![range((9, 0), (10, 0))];
        let hours = OpeningHours::new(days).unwrap();
        // 2026-06-01 is a Monday, 2026-06-02 a Tuesday.
        assert_eq!(hours.intervals_utc(BERLIN, date("2026-06-01")).len(), 1);
        assert!(hours.intervals_utc(BERLIN, date("2026-06-02")).is_empty());
    }

    #[test]
    fn gaps_of_other_lengths_are_found_exactly() {
        // Lord Howe Island moves its clocks by 30 minutes: 2026-10-04 02:00 -> 02:30 (+10:30 -> +11).
        let lord_howe = chrono_tz::Australia::Lord_Howe;
        let hours = every_day(vec![range((2, 15), (3, 0))]);
        assert_eq!(
            hours.intervals_utc(lord_howe, date("2026-10-04")),
            vec![iv("2026-10-03T15:30:00Z", "2026-10-03T16:00:00Z")]
        );
        // Samoa skipped 2011-12-30 entirely.
        let samoa = chrono_tz::Pacific::Apia;
        let hours = every_day(vec![range((9, 0), (17, 0))]);
        assert!(hours.intervals_utc(samoa, date("2011-12-30")).is_empty());
    }

    #[test]
    fn local_date_uses_the_clinic_timezone() {
        assert_eq!(
            local_date(BERLIN, utc("2026-06-01T22:30:00Z")),
            date("2026-06-02")
        );
        assert_eq!(
            local_date(BERLIN, utc("2026-01-01T22:30:00Z")),
            date("2026-01-01")
        );
        assert_eq!(
            local_date(chrono_tz::UTC, utc("2026-06-01T23:59:59Z")),
            date("2026-06-01")
        );
    }
}
