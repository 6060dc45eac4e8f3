//! The life of the bookings: a share of them is checked in, completed,
//! marked no-show, cancelled or moved, the rest stays booked. Check-in,
//! complete and no-show are accepted at any time while a reservation is
//! booked, so the demo drives future bookings through every status.
//!
//! Bookings that a later emergency block or closure will displace are left
//! booked (a block may not displace an appointment already checked in),
//! and no slot is freed on the last day, where the waitlist entries wait.

use std::sync::{Mutex, PoisonError};

use chrono::NaiveDate;
use clinicbook_domain::reservation::ReservationStatus;
use clinicbook_wire::booking::{Booked, Cancel, Cancelled, Reschedule, StatusChanged};
use reqwest::StatusCode;
use uuid::Uuid;

use super::bookings::Made;
use super::catalog::Chain;
use super::client::{each, Api, As};
use super::ids::key;
use super::plan::{Planner, Slot};
use super::DemoError;

/// Why patients cancel.
const CANCEL_REASONS: [&str; 4] = [
    "patient is ill",
    "patient has a work conflict",
    "patient is travelling",
    "patient asked to cancel by phone",
];

/// What happens to a booking, in the order quotas are filled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Action {
    /// Cancelled by the patient.
    Cancel,
    /// Moved to another slot.
    Reschedule(Slot),
    /// The patient did not come.
    NoShow,
    /// The patient is in the waiting room.
    CheckIn,
    /// Checked in, then treated.
    Complete,
    /// Stays booked.
    Keep,
}

/// Percent of the bookings that get each action.
const SHARES: [(Kind, usize); 5] = [
    (Kind::Cancel, 10),
    (Kind::Reschedule, 6),
    (Kind::NoShow, 7),
    (Kind::CheckIn, 10),
    (Kind::Complete, 25),
];

/// An action without its data, for quotas.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Cancel,
    Reschedule,
    NoShow,
    CheckIn,
    Complete,
}

impl Kind {
    /// Frees the slot: not on the last day, where the waitlist waits.
    fn frees_a_slot(self) -> bool {
        matches!(self, Kind::Cancel | Kind::Reschedule)
    }
}

/// Where the loader must not drive bookings or move them to.
pub(super) struct Frozen {
    /// `(branch, date)` pairs an emergency block or a closure will hit.
    pub days: Vec<(usize, NaiveDate)>,
    /// The last open day (the waitlist's).
    pub last_date: NaiveDate,
}

impl Frozen {
    fn holds(&self, slot: &Slot) -> bool {
        self.days.contains(&(slot.branch, slot.date))
    }
}

/// What happened to one booking.
#[derive(Clone, Debug)]
pub(super) struct Outcome {
    /// The reservation.
    pub id: Uuid,
    /// Its status now.
    pub status: ReservationStatus,
    /// It was moved.
    pub rescheduled: bool,
    /// Credited back to the wallet by a cancellation.
    pub refund_cents: i64,
}

/// Chooses an action for every booking: quotas of [`SHARES`] over the
/// bookings not frozen, in a shuffled order, at least one of each.
/// Targets of moves are taken from `planner` (a free slot on a day that
/// is neither frozen nor the last).
pub(super) fn plan(
    rng: &mut fastrand::Rng,
    chain: &Chain,
    made: &[Made],
    frozen: &Frozen,
    planner: &mut Planner,
    dates: &[NaiveDate],
) -> Vec<Action> {
    let mut actions = vec![Action::Keep; made.len()];
    let mut order: Vec<usize> = (0..made.len())
        .filter(|&i| !frozen.holds(&made[i].booking.slot))
        .collect();
    rng.shuffle(&mut order);
    let mut quotas: Vec<(Kind, usize)> = SHARES
        .iter()
        .map(|&(kind, percent)| (kind, (order.len() * percent / 100).max(1)))
        .collect();
    let move_dates: Vec<NaiveDate> = dates
        .iter()
        .copied()
        .filter(|&d| d != frozen.last_date)
        .collect();
    for i in order {
        let booking = &made[i].booking;
        let on_last_day = booking.slot.date == frozen.last_date;
        for (kind, left) in &mut quotas {
            if *left == 0 || (on_last_day && kind.frees_a_slot()) {
                continue;
            }
            let action = match kind {
                Kind::Cancel => Some(Action::Cancel),
                Kind::Reschedule => move_target(
                    rng,
                    chain,
                    booking.slot.branch,
                    booking.treatment,
                    frozen,
                    planner,
                    &move_dates,
                )
                .map(Action::Reschedule),
                Kind::NoShow => Some(Action::NoShow),
                Kind::CheckIn => Some(Action::CheckIn),
                Kind::Complete => Some(Action::Complete),
            };
            if let Some(action) = action {
                actions[i] = action;
                *left -= 1;
                break;
            }
        }
    }
    actions
}

fn move_target(
    rng: &mut fastrand::Rng,
    chain: &Chain,
    branch: usize,
    treatment: usize,
    frozen: &Frozen,
    planner: &mut Planner,
    dates: &[NaiveDate],
) -> Option<Slot> {
    let allowed: Vec<NaiveDate> = dates
        .iter()
        .copied()
        .filter(|&d| !frozen.days.contains(&(branch, d)))
        .collect();
    (0..4).find_map(|_| {
        let date = *rng.choice(&allowed)?;
        planner.take(rng, chain, branch, treatment, date)
    })
}

/// Carries out the actions, at most `concurrency` bookings at once (the
/// steps of one booking in order), and says what happened to each.
///
/// # Errors
/// A refusal the loader did not expect, or a transport failure.
pub(super) async fn run(
    api: &Api,
    chain: &Chain,
    planner: &Mutex<Planner>,
    made: &[Made],
    actions: &[Action],
    seed: u64,
    concurrency: usize,
) -> Result<Vec<Outcome>, DemoError> {
    let work: Vec<(&Made, Action)> = made.iter().zip(actions.iter().copied()).collect();
    each(work, concurrency, |(made, action)| {
        act(api, chain, planner, made, action, seed)
    })
    .await
}

async fn act(
    api: &Api,
    chain: &Chain,
    planner: &Mutex<Planner>,
    made: &Made,
    action: Action,
    seed: u64,
) -> Result<Outcome, DemoError> {
    let id = made.booking.id;
    let index = made.booking.index;
    let path = |step: &str| format!("/v1/reservations/{id}/{step}");
    let step_key = |step: &str| key(seed, &format!("life/{index}/{step}"));
    let mut outcome = Outcome {
        id,
        status: ReservationStatus::Booked,
        rescheduled: false,
        refund_cents: 0,
    };
    match action {
        Action::Keep => {}
        Action::CheckIn | Action::Complete | Action::NoShow => {
            let steps: &[&str] = match action {
                Action::Complete => &["check-in", "complete"],
                Action::CheckIn => &["check-in"],
                _ => &["no-show"],
            };
            for step in steps {
                let changed: StatusChanged = api
                    .post_empty(As::Staff, &path(step), &step_key(step))
                    .await?
                    .parse(StatusCode::OK)?;
                outcome.status = changed.status.parse().map_err(|_| DemoError::BadAnswer {
                    what: format!("POST {}", path(step)),
                    detail: format!("unknown status {:?}", changed.status),
                })?;
            }
        }
        Action::Cancel => {
            let body = Cancel {
                reason: CANCEL_REASONS[index % CANCEL_REASONS.len()].to_string(),
            };
            let cancelled: Cancelled = api
                .post(As::Staff, &path("cancel"), &body, &step_key("cancel"))
                .await?
                .parse(StatusCode::OK)?;
            outcome.status = ReservationStatus::Cancelled;
            outcome.refund_cents = cancelled.refund_cents;
            release(planner, &made.booking.slot);
        }
        Action::Reschedule(slot) => {
            outcome.rescheduled = reschedule(api, chain, made, slot, seed).await?;
            if outcome.rescheduled {
                release(planner, &made.booking.slot);
            }
        }
    }
    Ok(outcome)
}

/// Moves a booking to `slot`; `false` when the slot was taken meanwhile.
async fn reschedule(
    api: &Api,
    chain: &Chain,
    made: &Made,
    slot: Slot,
    seed: u64,
) -> Result<bool, DemoError> {
    let Some(start) = slot.start_utc() else {
        return Ok(false);
    };
    let body = Reschedule {
        start,
        resource_id: Some(chain.branches[slot.branch].resources[slot.resource].id),
    };
    let path = format!("/v1/reservations/{}/reschedule", made.booking.id);
    let label = format!("life/{}/reschedule", made.booking.index);
    let reply = api
        .post(As::Staff, &path, &body, &key(seed, &label))
        .await?;
    if reply.status == StatusCode::CONFLICT && reply.code() == "slot_unavailable" {
        return Ok(false);
    }
    reply.parse::<Booked>(StatusCode::OK).map(|_| true)
}

fn release(planner: &Mutex<Planner>, slot: &Slot) {
    planner
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .release(slot);
}
