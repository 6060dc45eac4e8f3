//! What goes wrong in a clinic's fortnight: a laser breaks down (an
//! emergency block that displaces its bookings), one branch closes for a
//! day (a closure that displaces every booking of that day), and patients
//! wait for a slot on the busiest day (waitlist entries).

use std::collections::BTreeMap;

use chrono::{DateTime, Datelike, NaiveDate, Utc};
use clinicbook_wire::booking::{
    AddBlock, AddClosure, BlockAdded, ClosureAdded, JoinWaitlist, PaymentInput, Waitlisted,
};
use reqwest::StatusCode;
use uuid::Uuid;

use super::bookings::{on_a_laser, Made};
use super::catalog::{opening, Chain, CONSULTATION, LASER_SMALL};
use super::client::{each, Api, As};
use super::ids::{demo_id, key};
use super::patients::Patient;
use super::plan::instant;
use super::DemoError;

/// Length of the laser breakdown.
const BLOCK_MINUTES: u32 = 180;
/// The branch that prefers to close for a day (Potsdam).
const CLOSING_BRANCH: usize = 2;

/// The laser that breaks down and when.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct BlockTarget {
    /// Index into [`Chain::branches`].
    pub branch: usize,
    /// Index into the branch's resources.
    pub resource: usize,
    /// The local date.
    pub date: NaiveDate,
    /// Local start, minutes after midnight.
    pub start: u32,
    /// Local end, minutes after midnight.
    pub end: u32,
}

/// The branch that closes and when.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct ClosureTarget {
    /// Index into [`Chain::branches`].
    pub branch: usize,
    /// The local date it is closed.
    pub date: NaiveDate,
}

/// An emergency block as placed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlockSummary {
    /// The block.
    pub block_id: Uuid,
    /// The branch's name.
    pub clinic: String,
    /// The laser's name.
    pub resource: String,
    /// The laser's id.
    pub resource_id: Uuid,
    /// Start (UTC).
    pub start: DateTime<Utc>,
    /// End (UTC).
    pub end: DateTime<Utc>,
    /// The reservations it displaced.
    pub displaced: Vec<Uuid>,
}

/// A closure as placed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClosureSummary {
    /// The closure.
    pub closure_id: Uuid,
    /// The branch's name.
    pub clinic: String,
    /// The branch's id.
    pub clinic_id: Uuid,
    /// The local date it is closed.
    pub date: NaiveDate,
    /// Why.
    pub reason: String,
    /// The reservations it displaced.
    pub displaced: Vec<Uuid>,
}

/// The laser with the most bookings on one day (not `last_date`): it
/// breaks down from its first booking of that day for three hours.
pub(super) fn block_target(
    chain: &Chain,
    made: &[Made],
    last_date: NaiveDate,
) -> Option<BlockTarget> {
    let mut days: BTreeMap<(usize, usize, NaiveDate), Vec<u32>> = BTreeMap::new();
    for m in made.iter().filter(|m| on_a_laser(chain, m)) {
        let slot = m.booking.slot;
        if slot.date != last_date {
            days.entry((slot.branch, slot.resource, slot.date))
                .or_default()
                .push(slot.start);
        }
    }
    let ((branch, resource, date), starts) = days
        .into_iter()
        .max_by_key(|(place, starts)| (starts.len(), std::cmp::Reverse(*place)))?;
    let start = starts.into_iter().min()?;
    let close = opening(date.weekday()).map_or(start + BLOCK_MINUTES, |(_, close)| close);
    Some(BlockTarget {
        branch,
        resource,
        date,
        start,
        end: (start + BLOCK_MINUTES).min(close),
    })
}

/// The day (not `last_date`, not the block's branch and day) with the most
/// bookings at one branch, Potsdam's if it has any: that branch closes then.
pub(super) fn closure_target(
    made: &[Made],
    block: Option<BlockTarget>,
    last_date: NaiveDate,
) -> Option<ClosureTarget> {
    let mut days: BTreeMap<(usize, NaiveDate), usize> = BTreeMap::new();
    for m in made {
        let slot = m.booking.slot;
        let blocked = block.is_some_and(|b| (b.branch, b.date) == (slot.branch, slot.date));
        if slot.date != last_date && !blocked {
            *days.entry((slot.branch, slot.date)).or_default() += 1;
        }
    }
    days.into_iter()
        .max_by_key(|&((branch, date), count)| {
            (branch == CLOSING_BRANCH, count, std::cmp::Reverse(date))
        })
        .map(|((branch, date), _)| ClosureTarget { branch, date })
}

/// Places the emergency block (a staff action).
///
/// # Errors
/// A refusal, or a transport failure.
pub(super) async fn block(
    api: &Api,
    chain: &Chain,
    target: BlockTarget,
    seed: u64,
) -> Result<Option<BlockSummary>, DemoError> {
    let branch = &chain.branches[target.branch];
    let resource = &branch.resources[target.resource];
    let (Some(start), Some(end)) = (
        instant(target.date, target.start),
        instant(target.date, target.end),
    ) else {
        return Ok(None);
    };
    let body = AddBlock {
        start,
        end,
        reason: format!(
            "{}: cooling failure, service technician on the way",
            resource.name
        ),
        emergency: true,
    };
    let added: BlockAdded = api
        .post(
            As::Staff,
            &format!("/v1/resources/{}/blocks", resource.id),
            &body,
            &key(seed, "block"),
        )
        .await?
        .parse(StatusCode::CREATED)?;
    Ok(Some(BlockSummary {
        block_id: added.block_id,
        clinic: branch.name.to_string(),
        resource: resource.name.clone(),
        resource_id: resource.id,
        start,
        end,
        displaced: added.displaced,
    }))
}

/// Closes a branch for a whole local day (an admin action).
///
/// # Errors
/// A refusal, or a transport failure.
pub(super) async fn close(
    api: &Api,
    chain: &Chain,
    target: ClosureTarget,
    seed: u64,
) -> Result<Option<ClosureSummary>, DemoError> {
    let branch = &chain.branches[target.branch];
    let next = target.date.succ_opt().unwrap_or(target.date);
    let (Some(start), Some(end)) = (instant(target.date, 0), instant(next, 0)) else {
        return Ok(None);
    };
    let reason = "Team training day".to_string();
    let body = AddClosure {
        start,
        end,
        reason: reason.clone(),
    };
    let added: ClosureAdded = api
        .post(
            As::Admin,
            &format!("/v1/clinics/{}/closures", branch.clinic_id),
            &body,
            &key(seed, "closure"),
        )
        .await?
        .parse(StatusCode::CREATED)?;
    Ok(Some(ClosureSummary {
        closure_id: added.closure_id,
        clinic: branch.name.to_string(),
        clinic_id: branch.clinic_id,
        date: target.date,
        reason,
        displaced: added.displaced,
    }))
}

/// `count` waitlist entries for the late afternoon of `date`, spread
/// over the branches: a laser session or a consultation, to be paid from
/// the wallet when the patient has one, else at the clinic.
pub(super) fn waitlist_entries(
    chain: &Chain,
    patients: &[Patient],
    rng: &mut fastrand::Rng,
    date: NaiveDate,
    count: usize,
    seed: u64,
) -> Vec<JoinWaitlist> {
    let Some((_, close)) = opening(date.weekday()) else {
        return Vec::new();
    };
    let (Some(earliest), Some(latest)) = (instant(date, close - 180), instant(date, close - 60))
    else {
        return Vec::new();
    };
    (0..count)
        .filter_map(|k| {
            let patient = rng.choice(patients)?;
            let treatment = if k % 3 == 2 {
                CONSULTATION
            } else {
                LASER_SMALL
            };
            Some(JoinWaitlist {
                reservation_id: Some(demo_id(seed, &format!("waitlist/{k}"))),
                patient_id: patient.id,
                clinic_id: chain.branches[k % chain.branches.len()].clinic_id,
                treatment_id: chain.treatments[treatment].id,
                earliest,
                latest,
                payment: if patient.deposit_cents > 0 {
                    PaymentInput::Wallet
                } else {
                    PaymentInput::AtClinic
                },
            })
        })
        .collect()
}

/// Puts the `entries` on the waitlist; returns their reservation ids.
///
/// # Errors
/// A refusal, or a transport failure.
pub(super) async fn join_waitlist(
    api: &Api,
    entries: Vec<JoinWaitlist>,
    seed: u64,
    concurrency: usize,
) -> Result<Vec<Uuid>, DemoError> {
    let indexed: Vec<(usize, JoinWaitlist)> = entries.into_iter().enumerate().collect();
    each(indexed, concurrency, |(k, entry)| async move {
        let joined: Waitlisted = api
            .post(
                As::Staff,
                "/v1/waitlist",
                &entry,
                &key(seed, &format!("waitlist/{k}")),
            )
            .await?
            .parse(StatusCode::CREATED)?;
        Ok(joined.reservation_id)
    })
    .await
}
