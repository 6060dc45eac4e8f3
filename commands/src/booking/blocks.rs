//! Use cases that take time away from resources: a block on one resource,
//! a closure of the whole clinic; and the displacement of the bookings an
//! emergency block overlaps, shared by both.

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use clinicbook_domain::calendar::{Calendar, CalendarCommand, CalendarEvent};
use clinicbook_domain::clinic::{Clinic, ClinicCommand};
use clinicbook_domain::reservation::{Reservation, ReservationCommand};
use clinicbook_domain::{BlockId, CalendarId, ClinicId, ClosureId, DomainError, ResourceId};
use clinicbook_eventstore::{UnitOfWork, UowError, UseCase};

use super::lifecycle::outcome_of;
use super::payment::{settle, Payer};
use super::slot::{clinic, local_days};
use super::{end_hold, Ending};
use clinicbook_wire::booking::{BlockAdded, ClosureAdded};

/// A block to place on one or more resources.
#[derive(Clone, Debug)]
pub(super) struct Blocking {
    /// Its id, the same on every calendar it covers.
    pub block_id: BlockId,
    /// Start.
    pub start: DateTime<Utc>,
    /// End (exclusive).
    pub end: DateTime<Utc>,
    /// Why.
    pub reason: String,
    /// Displace overlapping bookings instead of being refused.
    pub emergency: bool,
}

/// Ends a hold an emergency block takes over: released, or expired when
/// its time already ran out (a release is refused then).
///
/// # Errors
/// What the hold refuses.
async fn give_up_hold(
    uow: &mut UnitOfWork,
    hold_id: clinicbook_domain::HoldId,
    now: DateTime<Utc>,
) -> Result<(), UowError> {
    let hold = uow
        .load::<clinicbook_domain::hold::Hold>(&hold_id.to_string())
        .await?;
    let ending = if hold.expires_at().is_some_and(|at| now >= at) {
        Ending::Expire
    } else {
        Ending::Release
    };
    end_hold(uow, hold_id, ending, now).await
}

/// Places `block` on every clinic-local day of its range on each of
/// `resources` (one `Calendar` per resource and day), then displaces every
/// booking it took over: `Reservation` Displace and its payment given back
/// in full (package session, wallet credit, promo release).
///
/// Returns the displaced reservations in start order.
///
/// # Errors
/// `InvalidInput` (`end`) for an empty, reversed or too long range;
/// `SlotUnavailable` when a non-emergency block overlaps a booking or a
/// hold (an emergency block releases the holds it overlaps);
/// `InvalidTransition` when an emergency block overlaps an appointment
/// that is no longer merely booked (checked in, completed, no-show): such
/// a block must start after it.
pub(super) async fn block_and_displace(
    uow: &mut UnitOfWork,
    tz: Tz,
    resources: &[ResourceId],
    block: &Blocking,
    now: DateTime<Utc>,
) -> Result<Vec<uuid::Uuid>, UowError> {
    let days = local_days(tz, block.start, block.end)?;
    let mut displaced = Vec::new();
    for &resource_id in resources {
        for (date, piece) in &days {
            let calendar_id = CalendarId {
                resource_id,
                date: *date,
            };
            if block.emergency {
                let calendar = uow.load::<Calendar>(&calendar_id.to_string()).await?;
                let holds: Vec<_> = calendar
                    .overlapping_holds(piece)
                    .iter()
                    .map(|hold| hold.hold_id)
                    .collect();
                for hold_id in holds {
                    give_up_hold(uow, hold_id, now).await?;
                }
            }
            let events = uow
                .handle::<Calendar>(
                    &calendar_id.to_string(),
                    CalendarCommand::Block {
                        calendar_id,
                        block_id: block.block_id,
                        start: piece.start,
                        end: piece.end,
                        reason: block.reason.clone(),
                        emergency: block.emergency,
                    },
                )
                .await?;
            displaced.extend(events.into_iter().flat_map(|event| match event {
                CalendarEvent::BlockAdded { displaced, .. } => displaced,
                _ => Vec::new(),
            }));
        }
    }
    let mut by_start = Vec::with_capacity(displaced.len());
    for reservation_id in displaced {
        let id = reservation_id.to_string();
        let reservation = uow.load::<Reservation>(&id).await?;
        let payer = Payer::of(reservation)?;
        let start = reservation.slot.map(|slot| slot.start);
        let events = uow
            .handle::<Reservation>(
                &id,
                ReservationCommand::Displace {
                    block_id: block.block_id,
                    now,
                },
            )
            .await?;
        settle(uow, &payer, &outcome_of(&events)).await?;
        by_start.push((start, reservation_id));
    }
    by_start.sort();
    Ok(by_start.into_iter().map(|(_, id)| id.0).collect())
}

/// Block one resource: its clinic (found by the caller) read for the
/// timezone, then [`block_and_displace`].
pub(super) struct BlockResource {
    pub clinic_id: ClinicId,
    pub resource_id: ResourceId,
    pub block: Blocking,
    pub now: DateTime<Utc>,
}

impl UseCase for BlockResource {
    type Output = BlockAdded;

    async fn run(&self, uow: &mut UnitOfWork) -> Result<BlockAdded, UowError> {
        let clinic = clinic(uow, self.clinic_id).await?;
        if clinic.resource(self.resource_id).is_none() {
            return Err(DomainError::not_found(format!("resource {}", self.resource_id)).into());
        }
        let tz = clinic.timezone();
        let displaced =
            block_and_displace(uow, tz, &[self.resource_id], &self.block, self.now).await?;
        Ok(BlockAdded {
            block_id: self.block.block_id.0,
            displaced,
        })
    }
}

/// Close the clinic: `Clinic` AddClosure (so later bookings see it in the
/// bookable intervals), and an emergency block with the closure's id on
/// every resource for every local day of the range, displacing what it
/// overlaps.
pub(super) struct CloseClinic {
    pub clinic_id: ClinicId,
    pub closure_id: ClosureId,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub reason: String,
    pub now: DateTime<Utc>,
}

impl UseCase for CloseClinic {
    type Output = ClosureAdded;

    async fn run(&self, uow: &mut UnitOfWork) -> Result<ClosureAdded, UowError> {
        let id = self.clinic_id.to_string();
        uow.handle::<Clinic>(
            &id,
            ClinicCommand::AddClosure {
                closure_id: self.closure_id,
                start: self.start,
                end: self.end,
                reason: self.reason.clone(),
            },
        )
        .await?;
        let clinic = uow.load::<Clinic>(&id).await?;
        let tz = clinic.timezone();
        let resources: Vec<ResourceId> = clinic.resources.iter().map(|r| r.resource_id).collect();
        let block = Blocking {
            block_id: BlockId(self.closure_id.0),
            start: self.start,
            end: self.end,
            reason: self.reason.clone(),
            emergency: true,
        };
        let displaced = block_and_displace(uow, tz, &resources, &block, self.now).await?;
        Ok(ClosureAdded {
            closure_id: self.closure_id.0,
            displaced,
        })
    }
}
