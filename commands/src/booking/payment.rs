//! A booking's payment: taken when it is booked (package session or
//! wallet debit, promo redemption) and settled when it ends early
//! (cancellation, displacement, no-show) as the domain's
//! [`CancellationOutcome`] says.

use chrono::{DateTime, Utc};
use clinicbook_domain::package::{Package, PackageCommand};
use clinicbook_domain::policy::CancellationOutcome;
use clinicbook_domain::promo::{PromoCode, PromoCommand};
use clinicbook_domain::reservation::{PaymentMethod, Reservation};
use clinicbook_domain::wallet::{Wallet, WalletCommand};
use clinicbook_domain::{
    ClinicId, DomainError, Money, PatientId, PromoCodeKey, ReservationId, TreatmentId,
};
use clinicbook_eventstore::{UnitOfWork, UowError};

/// Who pays for a reservation, how, and with which promo code.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct Payer {
    /// The reservation paid for.
    pub reservation_id: ReservationId,
    /// The patient (the wallet's id).
    pub patient_id: PatientId,
    /// How.
    pub payment: PaymentMethod,
    /// The promo code redeemed for it.
    pub promo_code: Option<PromoCodeKey>,
}

impl Payer {
    /// The payer of an existing reservation.
    ///
    /// # Errors
    /// `NotFound` (`reservation`) before it exists.
    pub fn of(reservation: &Reservation) -> Result<Self, DomainError> {
        match (
            reservation.reservation_id,
            reservation.patient_id,
            reservation.payment,
        ) {
            (Some(reservation_id), Some(patient_id), Some(payment)) => Ok(Self {
                reservation_id,
                patient_id,
                payment,
                promo_code: reservation.promo_code.clone(),
            }),
            _ => Err(DomainError::not_found("reservation")),
        }
    }
}

/// The wallet reference of a reservation's payment.
pub(super) fn payment_reference(reservation_id: ReservationId) -> String {
    format!("reservation:{reservation_id}")
}

/// The wallet reference of the refund of a reservation's payment.
pub(super) fn refund_reference(reservation_id: ReservationId) -> String {
    format!("refund:reservation:{reservation_id}")
}

/// The discount of a promo code, which must exist.
///
/// # Errors
/// `NotFound` for a code never created.
pub(super) async fn promo_discount(
    uow: &mut UnitOfWork,
    code: &PromoCodeKey,
) -> Result<clinicbook_domain::pricing::Discount, UowError> {
    let promo = uow.load::<PromoCode>(code.as_str()).await?;
    promo
        .discount()
        .cloned()
        .ok_or_else(|| DomainError::not_found(format!("promo code {code}")).into())
}

/// Checks that a package exists and belongs to the patient who uses it.
/// (Which clinic, treatment and dates it is valid for is the package's
/// own rule, checked when a session is consumed.)
///
/// # Errors
/// `NotFound` for a package never purchased; `InvalidInput`
/// (`payment.package_id`) for another patient's package.
pub(super) async fn check_package(
    uow: &mut UnitOfWork,
    payment: &PaymentMethod,
    patient_id: PatientId,
) -> Result<(), UowError> {
    let PaymentMethod::Package { package_id } = payment else {
        return Ok(());
    };
    let package = uow.load::<Package>(&package_id.to_string()).await?;
    if !package.is_purchased() {
        return Err(DomainError::not_found(format!("package {package_id}")).into());
    }
    if package.patient_id != Some(patient_id) {
        return Err(DomainError::inconsistent(
            "payment.package_id",
            "is a package of another patient",
        )
        .into());
    }
    Ok(())
}

/// What a booking is for: the package and promo code rules need it.
#[derive(Clone, Copy, Debug)]
pub(super) struct Purchase {
    /// The clinic.
    pub clinic_id: ClinicId,
    /// The treatment.
    pub treatment_id: TreatmentId,
    /// The appointment's start.
    pub start: DateTime<Utc>,
    /// The price to pay.
    pub total: Money,
}

/// Takes the payment of a new booking in the unit of work: a package
/// session, or a wallet debit of the total (nothing when the total is
/// zero), and redeems the promo code.
///
/// # Errors
/// What the package (`no_sessions_left`, `package_expired`,
/// `package_not_valid_here`, ...), the wallet (`insufficient_funds`) or the
/// promo code (`promo_expired`, `promo_exhausted`, ...) refuse.
pub(super) async fn pay(
    uow: &mut UnitOfWork,
    payer: &Payer,
    purchase: Purchase,
    now: DateTime<Utc>,
) -> Result<(), UowError> {
    match payer.payment {
        PaymentMethod::Package { package_id } => {
            check_package(uow, &payer.payment, payer.patient_id).await?;
            uow.handle::<Package>(
                &package_id.to_string(),
                PackageCommand::ConsumeSession {
                    reservation_id: payer.reservation_id,
                    clinic_id: purchase.clinic_id,
                    treatment_id: purchase.treatment_id,
                    appointment_start: purchase.start,
                },
            )
            .await?;
        }
        PaymentMethod::Wallet if purchase.total > Money::ZERO => {
            uow.handle::<Wallet>(
                &payer.patient_id.to_string(),
                WalletCommand::Debit {
                    amount: purchase.total,
                    reference: payment_reference(payer.reservation_id),
                },
            )
            .await?;
        }
        PaymentMethod::Wallet | PaymentMethod::AtClinic => {}
    }
    if let Some(code) = &payer.promo_code {
        uow.handle::<PromoCode>(
            code.as_str(),
            PromoCommand::Redeem {
                reservation_id: payer.reservation_id,
                patient_id: payer.patient_id,
                treatment_id: purchase.treatment_id,
                now,
            },
        )
        .await?;
    }
    Ok(())
}

/// Gives back, in the unit of work, what a cancellation, displacement or
/// no-show `outcome` says: the refund credited to the wallet, the package
/// session restored. The promo redemption is released unless the outcome
/// is late: a late cancellation or a no-show keeps its redemption (the
/// fee was computed on the discounted price, so the discount was used).
///
/// # Errors
/// What the wallet, package or promo code refuse (none of them should for
/// an outcome the reservation recorded).
pub(super) async fn settle(
    uow: &mut UnitOfWork,
    payer: &Payer,
    outcome: &CancellationOutcome,
) -> Result<(), UowError> {
    match payer.payment {
        PaymentMethod::Wallet if outcome.refund > Money::ZERO => {
            uow.handle::<Wallet>(
                &payer.patient_id.to_string(),
                WalletCommand::Credit {
                    amount: outcome.refund,
                    reference: refund_reference(payer.reservation_id),
                },
            )
            .await?;
        }
        PaymentMethod::Package { package_id } if outcome.session_restored => {
            uow.handle::<Package>(
                &package_id.to_string(),
                PackageCommand::RestoreSession {
                    reservation_id: payer.reservation_id,
                },
            )
            .await?;
        }
        _ => {}
    }
    match &payer.promo_code {
        Some(code) if !outcome.late => {
            uow.handle::<PromoCode>(
                code.as_str(),
                PromoCommand::Release {
                    reservation_id: payer.reservation_id,
                },
            )
            .await?;
        }
        _ => {}
    }
    Ok(())
}
