//! Use cases that give a reservation a slot or a place in the waitlist:
//! book, reschedule, join the waitlist.

use chrono::{DateTime, Utc};
use clinicbook_domain::calendar::{Calendar, CalendarCommand};
use clinicbook_domain::reservation::{
    PaymentMethod, Reservation, ReservationCommand, ReservationStatus, WaitlistEntry,
};
use clinicbook_domain::{DomainError, ReservationId, ResourceId};
use clinicbook_eventstore::{UnitOfWork, UowError, UseCase};

use super::payment::{check_package, pay, Payer, Purchase};
use super::slot::{calendar_of, clinic, guarded_clinic, Appointment, SlotRequest};
use clinicbook_wire::booking::{Booked, Waitlisted};

/// Book a treatment: `Reservation` Book, `Calendar` Reserve, the payment
/// (`Package` or `Wallet`) and the `PromoCode`, with the `Clinic` guarded.
pub(super) struct Book {
    pub reservation_id: ReservationId,
    pub request: SlotRequest,
    pub payment: PaymentMethod,
    pub now: DateTime<Utc>,
}

impl Book {
    fn payer(&self) -> Payer {
        Payer {
            reservation_id: self.reservation_id,
            patient_id: self.request.patient_id,
            payment: self.payment,
            promo_code: self.request.promo_code.clone(),
        }
    }

    /// True when `reservation` is this very booking, made before: the
    /// request is a retry and its answer is the booking as it was made.
    fn was_made(&self, reservation: &Reservation) -> bool {
        reservation.status == ReservationStatus::Booked
            && reservation.patient_id == Some(self.request.patient_id)
            && reservation.clinic_id == Some(self.request.clinic_id)
            && reservation.treatment_id == Some(self.request.treatment_id)
            && reservation.slot.is_some_and(|slot| {
                slot.resource_id == self.request.resource_id && slot.start == self.request.start
            })
            && reservation.payment == Some(self.payment)
            && reservation.promo_code == self.request.promo_code
    }
}

impl UseCase for Book {
    type Output = Booked;

    async fn run(&self, uow: &mut UnitOfWork) -> Result<Booked, UowError> {
        let id = self.reservation_id.to_string();
        let existing = uow.load::<Reservation>(&id).await?;
        if self.was_made(existing) {
            return Ok(booked(existing)?);
        }
        let request = &self.request;
        let (_, appointment) = request.resolve(uow, self.now).await?;
        uow.handle::<Reservation>(
            &id,
            ReservationCommand::Book {
                reservation_id: self.reservation_id,
                patient_id: request.patient_id,
                clinic_id: request.clinic_id,
                treatment_id: request.treatment_id,
                slot: appointment.slot(request.resource_id),
                price: appointment.price,
                payment: self.payment,
                promo_code: request.promo_code.clone(),
                now: self.now,
            },
        )
        .await?;
        uow.handle::<Calendar>(
            &appointment.calendar(request.resource_id).to_string(),
            appointment.reserve(request.resource_id, self.reservation_id, self.now),
        )
        .await?;
        let purchase = Purchase {
            clinic_id: request.clinic_id,
            treatment_id: request.treatment_id,
            start: request.start,
            total: appointment.price.total,
        };
        pay(uow, &self.payer(), purchase, self.now).await?;
        Ok(booked(uow.load::<Reservation>(&id).await?)?)
    }
}

/// The answer for a booked reservation.
///
/// # Errors
/// `NotFound` when it holds no slot (it never does unless booked).
pub(super) fn booked(reservation: &Reservation) -> Result<Booked, DomainError> {
    match (reservation.reservation_id, reservation.slot) {
        (Some(reservation_id), Some(slot)) => Ok(Booked {
            reservation_id: reservation_id.0,
            status: reservation.status.as_str().to_owned(),
            resource_id: slot.resource_id.0,
            start: slot.start,
            end: slot.end,
            price: reservation.price.into(),
        }),
        _ => Err(DomainError::not_found("reservation")),
    }
}

/// Move a booking to another start and/or resource: `Reservation`
/// Reschedule, `Calendar` Release of the old slot and Reserve of the new
/// one (the same calendar, or two), with the `Clinic` guarded. The price
/// stays as booked, and so does the payment.
pub(super) struct Move {
    pub reservation_id: ReservationId,
    pub start: DateTime<Utc>,
    pub resource_id: Option<ResourceId>,
    pub now: DateTime<Utc>,
}

impl UseCase for Move {
    type Output = Booked;

    async fn run(&self, uow: &mut UnitOfWork) -> Result<Booked, UowError> {
        let id = self.reservation_id.to_string();
        let reservation = uow.load::<Reservation>(&id).await?;
        let (Some(from), Some(clinic_id), Some(treatment_id)) = (
            reservation.slot,
            reservation.clinic_id,
            reservation.treatment_id,
        ) else {
            return Err(without_slot(reservation.status).into());
        };
        let resource_id = self.resource_id.unwrap_or(from.resource_id);
        let clinic = guarded_clinic(uow, clinic_id).await?;
        let old_calendar = calendar_of(clinic, &from);
        let appointment = Appointment::resolve(
            clinic,
            treatment_id,
            Some(resource_id),
            self.start,
            self.now,
            None,
        )?;
        uow.handle::<Reservation>(
            &id,
            ReservationCommand::Reschedule {
                slot: appointment.slot(resource_id),
                now: self.now,
            },
        )
        .await?;
        uow.handle::<Calendar>(
            &old_calendar.to_string(),
            CalendarCommand::Release {
                reservation_id: self.reservation_id,
            },
        )
        .await?;
        uow.handle::<Calendar>(
            &appointment.calendar(resource_id).to_string(),
            appointment.reserve(resource_id, self.reservation_id, self.now),
        )
        .await?;
        Ok(booked(uow.load::<Reservation>(&id).await?)?)
    }
}

/// Why a reservation without a slot cannot be moved: it does not exist,
/// or it is a waitlist entry (not booked, which a reschedule needs).
fn without_slot(status: ReservationStatus) -> DomainError {
    match status {
        ReservationStatus::New => DomainError::not_found("reservation"),
        other => DomainError::InvalidTransition {
            from: other.as_str().to_string(),
            action: "reschedule".to_string(),
        },
    }
}

/// Join the waitlist: `Reservation` JoinWaitlist, after checking the
/// clinic, the treatment and a package's owner. Nothing is paid until a
/// slot is booked for it.
pub(super) struct Wait {
    pub entry: WaitlistEntry,
    pub now: DateTime<Utc>,
}

impl Wait {
    /// True when `reservation` is this very entry, made before (a retry).
    fn was_made(&self, reservation: &Reservation) -> bool {
        let entry = &self.entry;
        reservation.status == ReservationStatus::Waitlisted
            && reservation.patient_id == Some(entry.patient_id)
            && reservation.clinic_id == Some(entry.clinic_id)
            && reservation.treatment_id == Some(entry.treatment_id)
            && reservation.wanted == Some((entry.earliest, entry.latest))
            && reservation.payment == Some(entry.payment)
    }

    fn answer(&self) -> Waitlisted {
        Waitlisted {
            reservation_id: self.entry.reservation_id.0,
            status: ReservationStatus::Waitlisted.as_str().to_owned(),
        }
    }
}

impl UseCase for Wait {
    type Output = Waitlisted;

    async fn run(&self, uow: &mut UnitOfWork) -> Result<Waitlisted, UowError> {
        let entry = &self.entry;
        let id = entry.reservation_id.to_string();
        if self.was_made(uow.load::<Reservation>(&id).await?) {
            return Ok(self.answer());
        }
        let clinic = clinic(uow, entry.clinic_id).await?;
        if clinic.treatment(entry.treatment_id).is_none() {
            return Err(DomainError::not_found(format!("treatment {}", entry.treatment_id)).into());
        }
        check_package(uow, &entry.payment, entry.patient_id).await?;
        uow.handle::<Reservation>(
            &id,
            ReservationCommand::JoinWaitlist {
                entry: self.entry,
                now: self.now,
            },
        )
        .await?;
        Ok(self.answer())
    }
}
