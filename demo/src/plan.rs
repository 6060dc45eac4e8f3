//! Days and free slots: the demo's open days in Berlin time, and a planner
//! that remembers which resource is busy when, so bookings are placed on
//! free slots without asking the server (which has no availability route
//! yet) and two runs on empty databases place them the same way.

use std::collections::HashMap;

use chrono::{DateTime, Datelike, Duration, NaiveDate, TimeZone, Utc};
use chrono_tz::Tz;

use super::catalog::{opening, Chain};

/// The timezone of every branch.
pub(super) const TZ: Tz = chrono_tz::Europe::Berlin;
/// Appointments start on this grid (minutes).
const GRID_MINUTES: u32 = 15;

/// A booked or planned appointment on one resource.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Slot {
    /// Index into [`Chain::branches`].
    pub branch: usize,
    /// Index into the branch's resources.
    pub resource: usize,
    /// The clinic-local date.
    pub date: NaiveDate,
    /// Local start, minutes after midnight.
    pub start: u32,
    /// Local end of the appointment, minutes after midnight.
    pub end: u32,
    /// Local end of the buffer after it.
    pub busy_until: u32,
}

impl Slot {
    /// The start as an instant.
    pub(super) fn start_utc(&self) -> Option<DateTime<Utc>> {
        instant(self.date, self.start)
    }
}

/// The local date of tomorrow in Berlin, as seen at `now`.
pub(super) fn tomorrow(now: DateTime<Utc>) -> NaiveDate {
    let today = now.with_timezone(&TZ).date_naive();
    today.succ_opt().unwrap_or(today)
}

/// The start of today (UTC midnight): a stable "now" for the bodies that
/// need one, so a run resumed the same day sends the same requests.
pub(super) fn start_of_day(now: DateTime<Utc>) -> DateTime<Utc> {
    now.date_naive()
        .and_hms_opt(0, 0, 0)
        .map_or(now, |midnight| midnight.and_utc())
}

/// The open days among the `days` days starting at `first`.
pub(super) fn open_dates(first: NaiveDate, days: u32) -> Vec<NaiveDate> {
    first
        .iter_days()
        .take(days as usize)
        .filter(|date| opening(date.weekday()).is_some())
        .collect()
}

/// The instant of `minutes` after local midnight of `date` in Berlin;
/// `None` for a local time that does not exist or is ambiguous (the
/// night of a DST change, never inside opening hours).
pub(super) fn instant(date: NaiveDate, minutes: u32) -> Option<DateTime<Utc>> {
    let midnight = date.and_hms_opt(0, 0, 0)?;
    let local = midnight + Duration::minutes(i64::from(minutes));
    TZ.from_local_datetime(&local)
        .single()
        .map(|t| t.with_timezone(&Utc))
}

/// Which resource is busy when, as far as the demo booked it.
#[derive(Debug, Default)]
pub(super) struct Planner {
    busy: HashMap<(usize, usize, NaiveDate), Vec<(u32, u32)>>,
}

impl Planner {
    /// Finds a free slot for `treatment` at `branch` on `date` (a random
    /// place on the grid, then the next free one), takes it and returns it;
    /// `None` when the day is full for that treatment.
    pub(super) fn take(
        &mut self,
        rng: &mut fastrand::Rng,
        chain: &Chain,
        branch: usize,
        treatment: usize,
        date: NaiveDate,
    ) -> Option<Slot> {
        self.take_from(chain, branch, treatment, date, |resources, starts| {
            rng.shuffle(resources);
            rng.usize(..starts)
        })
    }

    /// Takes the earliest free slot for `treatment` at `branch` on `date`
    /// (on the first resource that has one) and returns it.
    pub(super) fn take_earliest(
        &mut self,
        chain: &Chain,
        branch: usize,
        treatment: usize,
        date: NaiveDate,
    ) -> Option<Slot> {
        self.take_from(chain, branch, treatment, date, |_, _| 0)
    }

    /// Takes the first free slot, trying the resources in the order `order`
    /// leaves them and the grid's starts from the offset it answers (given
    /// how many starts there are).
    fn take_from(
        &mut self,
        chain: &Chain,
        branch: usize,
        treatment: usize,
        date: NaiveDate,
        order: impl FnOnce(&mut [usize], usize) -> usize,
    ) -> Option<Slot> {
        let (open, close) = opening(date.weekday())?;
        let t = &chain.treatments[treatment];
        let latest = close.checked_sub(t.duration_minutes)?;
        let starts: Vec<u32> = (open..=latest).step_by(GRID_MINUTES as usize).collect();
        let mut resources = chain.resources_for(branch, treatment);
        if starts.is_empty() || resources.is_empty() {
            return None;
        }
        let offset = order(&mut resources, starts.len());
        for resource in resources {
            for i in 0..starts.len() {
                let start = starts[(offset + i) % starts.len()];
                let slot = Slot {
                    branch,
                    resource,
                    date,
                    start,
                    end: start + t.duration_minutes,
                    busy_until: start + t.duration_minutes + t.buffer_minutes,
                };
                if self.is_free(&slot) && slot.start_utc().is_some() {
                    self.hold(&slot);
                    return Some(slot);
                }
            }
        }
        None
    }

    /// Marks `slot` busy.
    pub(super) fn hold(&mut self, slot: &Slot) {
        self.busy
            .entry((slot.branch, slot.resource, slot.date))
            .or_default()
            .push((slot.start, slot.busy_until));
    }

    /// Marks `slot` free again (after a cancellation or a move).
    pub(super) fn release(&mut self, slot: &Slot) {
        if let Some(held) = self.busy.get_mut(&(slot.branch, slot.resource, slot.date)) {
            held.retain(|&range| range != (slot.start, slot.busy_until));
        }
    }

    fn is_free(&self, slot: &Slot) -> bool {
        self.busy
            .get(&(slot.branch, slot.resource, slot.date))
            .is_none_or(|held| {
                held.iter()
                    .all(|&(start, until)| slot.busy_until <= start || until <= slot.start)
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn date(y: i32, m: u32, d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, d).unwrap_or_default()
    }

    #[test]
    fn sundays_are_not_open_days() {
        // 2026-03-01 is a Sunday.
        let dates = open_dates(date(2026, 3, 1), 14);
        assert_eq!(dates.len(), 12);
        assert!(dates.iter().all(|d| d.weekday() != chrono::Weekday::Sun));
    }

    #[test]
    fn planned_slots_never_overlap_and_stay_inside_opening_hours() {
        let chain = Chain::new(1);
        let mut planner = Planner::default();
        let mut rng = fastrand::Rng::with_seed(1);
        let day = date(2026, 3, 7); // a Saturday, 10:00-16:00
        let mut slots = Vec::new();
        while let Some(slot) = planner.take(&mut rng, &chain, 0, 1, day) {
            slots.push(slot);
        }
        // Two lasers, 6 h each, 75 busy minutes per large-area session;
        // random starts leave gaps, but each laser takes at least two.
        assert!(slots.len() >= 4, "{}", slots.len());
        for (i, a) in slots.iter().enumerate() {
            assert!(a.start >= 600 && a.end <= 960, "{a:?}");
            for b in &slots[i + 1..] {
                let apart =
                    a.resource != b.resource || a.busy_until <= b.start || b.busy_until <= a.start;
                assert!(apart, "{a:?} {b:?}");
            }
        }
    }

    #[test]
    fn a_released_slot_can_be_taken_again() {
        let chain = Chain::new(1);
        let mut planner = Planner::default();
        let mut rng = fastrand::Rng::with_seed(2);
        let day = date(2026, 3, 7);
        let mut slots = Vec::new();
        while let Some(slot) = planner.take(&mut rng, &chain, 0, 3, day) {
            slots.push(slot);
        }
        assert!(planner.take(&mut rng, &chain, 0, 3, day).is_none());
        planner.release(&slots[0]);
        assert_eq!(planner.take(&mut rng, &chain, 0, 3, day), Some(slots[0]));
    }
}
