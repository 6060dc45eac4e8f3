//! Use cases that move a reservation along its life: cancel, check in,
//! complete, no-show.

use chrono::{DateTime, Utc};
use clinicbook_domain::calendar::{Calendar, CalendarCommand};
use clinicbook_domain::policy::CancellationOutcome;
use clinicbook_domain::reservation::{
    Reservation, ReservationCommand, ReservationEvent, ReservationStatus,
};
use clinicbook_domain::{DomainError, ReservationId};
use clinicbook_eventstore::{UnitOfWork, UowError, UseCase};

use super::payment::{settle, Payer};
use super::slot::{calendar_of, clinic};
use clinicbook_wire::booking::{Cancelled, StatusChanged};

/// What a cancellation, no-show or displacement recorded in `events` (the
/// reservation's events of this unit of work).
pub(super) fn outcome_of(events: &[ReservationEvent]) -> CancellationOutcome {
    events
        .iter()
        .find_map(|event| match event {
            ReservationEvent::ReservationCancelled { outcome, .. }
            | ReservationEvent::MarkedNoShow { outcome, .. }
            | ReservationEvent::ReservationDisplaced { outcome, .. } => Some(*outcome),
            _ => None,
        })
        .unwrap_or_default()
}

/// Cancel a booking or a waitlist entry: `Reservation` Cancel under the
/// clinic's policy, `Calendar` Release of a booked slot, and the payment
/// settled as the outcome says. The clinic is read, not guarded: its
/// policy and timezone never change once registered.
pub(super) struct CancelReservation {
    pub reservation_id: ReservationId,
    pub reason: String,
    pub now: DateTime<Utc>,
}

impl UseCase for CancelReservation {
    type Output = Cancelled;

    async fn run(&self, uow: &mut UnitOfWork) -> Result<Cancelled, UowError> {
        let id = self.reservation_id.to_string();
        let reservation = uow.load::<Reservation>(&id).await?.clone();
        let payer = Payer::of(&reservation)?;
        let clinic_id = reservation
            .clinic_id
            .ok_or_else(|| DomainError::not_found("reservation"))?;
        let clinic = clinic(uow, clinic_id).await?;
        let policy = clinic.policy();
        let held = match (reservation.status, reservation.slot) {
            (ReservationStatus::Booked, Some(slot)) => Some(calendar_of(clinic, &slot)),
            _ => None,
        };
        let events = uow
            .handle::<Reservation>(
                &id,
                ReservationCommand::Cancel {
                    reason: self.reason.clone(),
                    policy,
                    now: self.now,
                },
            )
            .await?;
        if let Some(calendar) = held {
            uow.handle::<Calendar>(
                &calendar.to_string(),
                CalendarCommand::Release {
                    reservation_id: self.reservation_id,
                },
            )
            .await?;
        }
        let outcome = outcome_of(&events);
        settle(uow, &payer, &outcome).await?;
        Ok(Cancelled {
            reservation_id: self.reservation_id.0,
            status: ReservationStatus::Cancelled.as_str().to_owned(),
            refund_cents: outcome.refund.cents(),
            fee_cents: outcome.fee.cents(),
            session_restored: outcome.session_restored,
            late: outcome.late,
        })
    }
}

/// A change of status staff record as it happens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum StatusChange {
    /// The patient arrived.
    CheckIn,
    /// The treatment was given.
    Complete,
    /// The patient did not come.
    NoShow,
}

/// Check in, complete or mark a no-show: `Reservation` only. A no-show
/// forfeits the payment (its outcome gives nothing back, and a late
/// outcome keeps the promo redemption, so settling it touches nothing)
/// and keeps its slot on the calendar: a no-show is recorded around the
/// start, when the time is lost anyway, and the schedule and utilisation
/// keep showing what the time was reserved for. Only cancel, reschedule
/// and displacement free a slot.
pub(super) struct ChangeStatus {
    pub reservation_id: ReservationId,
    pub change: StatusChange,
    pub now: DateTime<Utc>,
}

impl UseCase for ChangeStatus {
    type Output = StatusChanged;

    async fn run(&self, uow: &mut UnitOfWork) -> Result<StatusChanged, UowError> {
        let id = self.reservation_id.to_string();
        let now = self.now;
        let command = match self.change {
            StatusChange::CheckIn => ReservationCommand::CheckIn { now },
            StatusChange::Complete => ReservationCommand::Complete { now },
            StatusChange::NoShow => ReservationCommand::MarkNoShow { now },
        };
        let events = uow.handle::<Reservation>(&id, command).await?;
        let reservation = uow.load::<Reservation>(&id).await?;
        let status = reservation.status;
        if self.change == StatusChange::NoShow {
            let payer = Payer::of(reservation)?;
            settle(uow, &payer, &outcome_of(&events)).await?;
        }
        Ok(StatusChanged {
            reservation_id: self.reservation_id.0,
            status: status.as_str().to_owned(),
        })
    }
}
