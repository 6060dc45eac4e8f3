//! Holds: take a slot for a short time (`Hold` Place with `Calendar`
//! Hold), then confirm it into a reservation at the quoted price, release
//! it, or let it expire; and the clinic settings that size them.
//!
//! - **Place** quotes the price now (pricing rules and promo code, which
//!   must exist) and records it on the hold; the `Clinic` is guarded, as a
//!   booking guards it. A retry with the same `hold_id` and request
//!   answers the hold as it was placed. A waitlist offer also opens on
//!   the patient's `PatientOffers`, which refuses a slot overlapping an
//!   offer still open: two matchers offering one patient two slots append
//!   to that one stream, so one of them conflicts and is refused on retry.
//! - **Confirm** is one unit of work: `Hold` Confirm (refused at or after
//!   `expires_at`, recorded or not), `Reservation` Book at the held price,
//!   `Calendar` BookHeld (the held interval becomes the booking's, so
//!   nobody can take it in between), the payment and the promo
//!   redemption. The clinic is not read: the price is the quote's, even if
//!   the pricing rules changed since. A retry answers the booking as made.
//! - **Release** and **expire** free the calendar slot in the same unit of
//!   work; confirm, release and expire close an offer's `PatientOffers`
//!   entry in it too. Expiry is the scheduler's command; it is idempotent: a hold
//!   already ended answers [`Expiry::AlreadyEnded`] and writes nothing.

use chrono::{DateTime, Duration, Utc};
use clinicbook_domain::calendar::{Calendar, CalendarCommand};
use clinicbook_domain::clinic::{Clinic, ClinicCommand, SettingsChange, WaitlistMode};
use clinicbook_domain::hold::{Hold, HoldCommand, HoldStatus, HoldTerms};
use clinicbook_domain::offers::{Offer, PatientOffers, PatientOffersCommand};
use clinicbook_domain::reservation::{PaymentMethod, Reservation, ReservationCommand};
use clinicbook_domain::{ClinicId, DomainError, HoldId, ReservationId};
use clinicbook_eventstore::{UnitOfWork, UowError, UseCase};

use super::book::booked;
use super::payment::{pay, Payer, Purchase};
use super::slot::{registered, SlotRequest};
use crate::due::Expiry;
use clinicbook_wire::booking::Booked;
use clinicbook_wire::holds::{HoldPlaced, HoldReleased, SettingsView};

/// Place a hold: `Hold` Place and `Calendar` Hold, with the `Clinic`
/// guarded.
pub(crate) struct PlaceHoldCase {
    pub hold_id: HoldId,
    pub request: SlotRequest,
    /// `None`: the clinic's `hold_minutes`.
    pub ttl_seconds: Option<u32>,
    /// The waitlisted reservation this hold is offered to (its default
    /// length is then the clinic's `offer_minutes`).
    pub offer_for: Option<ReservationId>,
    /// The current time.
    pub now: DateTime<Utc>,
}

/// The answer for a placed hold (a retry answers its status now).
fn placed(hold: &Hold) -> Result<HoldPlaced, DomainError> {
    match (hold.hold_id, &hold.terms) {
        (Some(hold_id), Some(terms)) => Ok(HoldPlaced {
            hold_id: hold_id.0,
            status: hold.status.as_str().to_owned(),
            resource_id: terms.slot.resource_id.0,
            start: terms.slot.start,
            end: terms.slot.end,
            expires_at: terms.expires_at,
            price: terms.price.into(),
        }),
        _ => Err(DomainError::not_found("hold")),
    }
}

impl PlaceHoldCase {
    /// True when `hold` is this very hold, placed before (a retry).
    fn was_placed(&self, hold: &Hold) -> bool {
        hold.terms.as_ref().is_some_and(|terms| {
            terms.patient_id == self.request.patient_id
                && terms.clinic_id == self.request.clinic_id
                && terms.treatment_id == self.request.treatment_id
                && terms.slot.resource_id == self.request.resource_id
                && terms.slot.start == self.request.start
                && terms.promo_code == self.request.promo_code
                && terms.offer_for == self.offer_for
        })
    }
}

impl UseCase for PlaceHoldCase {
    type Output = HoldPlaced;

    async fn run(&self, uow: &mut UnitOfWork) -> Result<HoldPlaced, UowError> {
        let id = self.hold_id.to_string();
        let existing = uow.load::<Hold>(&id).await?;
        if existing.status != HoldStatus::New && self.was_placed(existing) {
            return Ok(placed(existing)?);
        }
        let request = &self.request;
        let (clinic, appointment) = request.resolve(uow, self.now).await?;
        let ttl = match (self.ttl_seconds, self.offer_for) {
            (Some(seconds), _) => Duration::seconds(i64::from(seconds)),
            (None, Some(_)) => Duration::minutes(i64::from(clinic.settings.offer_minutes)),
            (None, None) => Duration::minutes(i64::from(clinic.settings.hold_minutes)),
        };
        let calendar_id = appointment.calendar(request.resource_id);
        let slot = appointment.slot(request.resource_id);
        let expires_at = self.now + ttl;
        uow.handle::<Hold>(
            &id,
            HoldCommand::Place {
                hold_id: self.hold_id,
                terms: HoldTerms {
                    patient_id: request.patient_id,
                    clinic_id: request.clinic_id,
                    treatment_id: request.treatment_id,
                    slot,
                    calendar_id,
                    price: appointment.price,
                    promo_code: request.promo_code.clone(),
                    expires_at,
                    offer_for: self.offer_for,
                },
                now: self.now,
            },
        )
        .await?;
        if let Some(reservation_id) = self.offer_for {
            // The patient's offers, in this unit of work: an overlapping
            // offer made meanwhile (another matcher) conflicts here.
            uow.handle::<PatientOffers>(
                &request.patient_id.to_string(),
                PatientOffersCommand::Open {
                    patient_id: request.patient_id,
                    offer: Offer {
                        hold_id: self.hold_id,
                        reservation_id,
                        slot,
                        expires_at,
                    },
                    now: self.now,
                },
            )
            .await?;
        }
        uow.handle::<Calendar>(
            &calendar_id.to_string(),
            CalendarCommand::Hold {
                calendar_id,
                hold_id: self.hold_id,
                start: appointment.start,
                end: appointment.end,
                buffer_minutes: appointment.treatment.buffer_minutes,
                opening: appointment.opening.clone(),
                now: self.now,
            },
        )
        .await?;
        Ok(placed(uow.load::<Hold>(&id).await?)?)
    }
}

/// Confirm a hold: `Hold` Confirm, `Reservation` Book at the held price,
/// `Calendar` BookHeld, the payment and the promo redemption.
pub(crate) struct ConfirmHoldCase {
    pub hold_id: HoldId,
    pub payment: PaymentMethod,
    pub reservation_id: Option<ReservationId>,
    pub now: DateTime<Utc>,
}

impl UseCase for ConfirmHoldCase {
    type Output = Booked;

    async fn run(&self, uow: &mut UnitOfWork) -> Result<Booked, UowError> {
        let id = self.hold_id.to_string();
        let hold = uow.load::<Hold>(&id).await?.clone();
        let Some(terms) = hold.terms.clone() else {
            return Err(DomainError::not_found("hold").into());
        };
        let reservation_id = match (terms.offer_for, self.reservation_id, hold.reservation_id) {
            (Some(offer), Some(asked), _) if asked != offer => {
                return Err(DomainError::inconsistent(
                    "reservation_id",
                    format!("the offer is for reservation {offer}"),
                )
                .into())
            }
            (Some(offer), _, _) => offer,
            (None, Some(asked), _) => asked,
            (None, None, Some(confirmed)) => confirmed,
            (None, None, None) => ReservationId(self.hold_id.0),
        };
        let reservation_key = reservation_id.to_string();
        if hold.status == HoldStatus::Confirmed && hold.reservation_id == Some(reservation_id) {
            return Ok(booked(uow.load::<Reservation>(&reservation_key).await?)?);
        }
        uow.handle::<Hold>(
            &id,
            HoldCommand::Confirm {
                reservation_id,
                now: self.now,
            },
        )
        .await?;
        uow.handle::<Reservation>(
            &reservation_key,
            ReservationCommand::Book {
                reservation_id,
                patient_id: terms.patient_id,
                clinic_id: terms.clinic_id,
                treatment_id: terms.treatment_id,
                slot: terms.slot,
                price: terms.price,
                payment: self.payment,
                promo_code: terms.promo_code.clone(),
                now: self.now,
            },
        )
        .await?;
        uow.handle::<Calendar>(
            &terms.calendar_id.to_string(),
            CalendarCommand::BookHeld {
                hold_id: self.hold_id,
                reservation_id,
            },
        )
        .await?;
        close_offer(uow, self.hold_id, &terms).await?;
        let payer = Payer {
            reservation_id,
            patient_id: terms.patient_id,
            payment: self.payment,
            promo_code: terms.promo_code.clone(),
        };
        let purchase = Purchase {
            clinic_id: terms.clinic_id,
            treatment_id: terms.treatment_id,
            start: terms.slot.start,
            total: terms.price.total,
        };
        pay(uow, &payer, purchase, self.now).await?;
        Ok(booked(uow.load::<Reservation>(&reservation_key).await?)?)
    }
}

/// How a hold ends without becoming a reservation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Ending {
    /// Staff (or the patient) gave it up.
    Release,
    /// Its time ran out.
    Expire,
}

/// Ends a hold in the unit of work, its calendar slot freed.
///
/// # Errors
/// What the hold refuses (see [`Hold::decide`]).
pub(crate) async fn end_hold(
    uow: &mut UnitOfWork,
    hold_id: HoldId,
    ending: Ending,
    now: DateTime<Utc>,
) -> Result<(), UowError> {
    let id = hold_id.to_string();
    let hold = uow.load::<Hold>(&id).await?;
    let Some(terms) = hold.terms.clone() else {
        return Err(DomainError::not_found("hold").into());
    };
    let command = match ending {
        Ending::Release => HoldCommand::Release { now },
        Ending::Expire => HoldCommand::Expire { now },
    };
    uow.handle::<Hold>(&id, command).await?;
    uow.handle::<Calendar>(
        &terms.calendar_id.to_string(),
        CalendarCommand::ReleaseHold { hold_id },
    )
    .await?;
    close_offer(uow, hold_id, &terms).await
}

/// Closes the patient's offer of an offered hold that ends (confirmed,
/// released or expired), in the unit of work that ends it.
async fn close_offer(
    uow: &mut UnitOfWork,
    hold_id: HoldId,
    terms: &HoldTerms,
) -> Result<(), UowError> {
    if terms.offer_for.is_some() {
        uow.handle::<PatientOffers>(
            &terms.patient_id.to_string(),
            PatientOffersCommand::Close { hold_id },
        )
        .await?;
    }
    Ok(())
}

/// Release a hold.
pub(crate) struct ReleaseHoldCase {
    pub hold_id: HoldId,
    pub now: DateTime<Utc>,
}

impl UseCase for ReleaseHoldCase {
    type Output = HoldReleased;

    async fn run(&self, uow: &mut UnitOfWork) -> Result<HoldReleased, UowError> {
        end_hold(uow, self.hold_id, Ending::Release, self.now).await?;
        Ok(HoldReleased {
            status: HoldStatus::Released.as_str().to_owned(),
        })
    }
}

/// Expire a hold whose time ran out (the scheduler's due work).
pub(crate) struct ExpireHoldCase {
    pub hold_id: HoldId,
    pub now: DateTime<Utc>,
}

impl UseCase for ExpireHoldCase {
    type Output = Expiry;

    async fn run(&self, uow: &mut UnitOfWork) -> Result<Expiry, UowError> {
        let hold = uow.load::<Hold>(&self.hold_id.to_string()).await?;
        if hold.status != HoldStatus::Held {
            return Ok(Expiry::AlreadyEnded);
        }
        if hold.expires_at().is_some_and(|at| self.now < at) {
            return Ok(Expiry::NotYet);
        }
        end_hold(uow, self.hold_id, Ending::Expire, self.now).await?;
        Ok(Expiry::Expired)
    }
}

/// Change some of a clinic's settings and answer all of them.
pub(crate) struct ChangeSettingsCase {
    pub clinic_id: ClinicId,
    pub change: SettingsChange,
}

impl UseCase for ChangeSettingsCase {
    type Output = SettingsView;

    async fn run(&self, uow: &mut UnitOfWork) -> Result<SettingsView, UowError> {
        let id = self.clinic_id.to_string();
        registered(uow.load::<Clinic>(&id).await?)?;
        uow.handle::<Clinic>(
            &id,
            ClinicCommand::ChangeSettings {
                change: self.change,
            },
        )
        .await?;
        Ok(settings_view(uow.load::<Clinic>(&id).await?.settings))
    }
}

/// The waitlist mode an API request names.
///
/// # Errors
/// `InvalidInput` naming `waitlist_mode`.
pub(crate) fn waitlist_mode(raw: &str) -> Result<WaitlistMode, DomainError> {
    raw.parse()
        .map_err(|_| DomainError::invalid("waitlist_mode", "must be `auto_book` or `offer`"))
}

/// The answer of a settings change: every setting as it now is.
fn settings_view(settings: clinicbook_domain::clinic::ClinicSettings) -> SettingsView {
    SettingsView {
        hold_minutes: settings.hold_minutes,
        waitlist_mode: settings.waitlist_mode.as_str().to_owned(),
        offer_minutes: settings.offer_minutes,
        reminder_minutes_before: settings.reminder_minutes_before,
    }
}
