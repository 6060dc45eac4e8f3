//! The `Reservation` aggregate: one appointment (or waitlist entry) and its
//! life: `waitlisted → booked → checked_in → completed`, and
//! `booked → cancelled / no_show / displaced`.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::policy::{CancellationOutcome, CancellationPolicy};
use crate::pricing::PriceBreakdown;
use crate::{BlockId, ClinicId, PackageId, PatientId, PromoCodeKey, ReservationId, ResourceId, TreatmentId};

/// How a reservation is paid.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "method", rename_all = "snake_case")]
pub enum PaymentMethod {
    /// One session of a package.
    Package {
        /// The package.
        package_id: PackageId,
    },
    /// Debited from the patient's wallet at booking.
    Wallet,
    /// Paid at the clinic on the day.
    AtClinic,
}

/// Status of a reservation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReservationStatus {
    /// Not created yet.
    #[default]
    New,
    /// Waiting for a slot in a wanted window.
    Waitlisted,
    /// Holds a slot.
    Booked,
    /// The patient arrived.
    CheckedIn,
    /// The treatment was given.
    Completed,
    /// Cancelled by staff.
    Cancelled,
    /// The patient did not come.
    NoShow,
    /// Removed by an emergency block or a closure.
    Displaced,
}

impl ReservationStatus {
    /// The API name of the status (`booked`, `checked_in`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            ReservationStatus::New => "new",
            ReservationStatus::Waitlisted => "waitlisted",
            ReservationStatus::Booked => "booked",
            ReservationStatus::CheckedIn => "checked_in",
            ReservationStatus::Completed => "completed",
            ReservationStatus::Cancelled => "cancelled",
            ReservationStatus::NoShow => "no_show",
            ReservationStatus::Displaced => "displaced",
        }
    }
}

/// The slot a booked reservation holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Slot {
    /// The resource.
    pub resource_id: ResourceId,
    /// Appointment start.
    pub start: DateTime<Utc>,
    /// Appointment end.
    pub end: DateTime<Utc>,
}

/// The `Reservation` aggregate state.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Reservation {
    /// `None` until created.
    pub reservation_id: Option<ReservationId>,
    /// Current status.
    pub status: ReservationStatus,
    /// The patient.
    pub patient_id: Option<PatientId>,
    /// The clinic.
    pub clinic_id: Option<ClinicId>,
    /// The treatment.
    pub treatment_id: Option<TreatmentId>,
    /// The held slot (booked and later statuses).
    pub slot: Option<Slot>,
    /// Wanted window of a waitlist entry: bounds on the start.
    pub wanted: Option<(DateTime<Utc>, DateTime<Utc>)>,
    /// Price recorded at booking.
    pub price: PriceBreakdown,
    /// Payment method.
    pub payment: Option<PaymentMethod>,
    /// Promo code redeemed for it.
    pub promo_code: Option<PromoCodeKey>,
    /// What the cancellation, no-show or displacement settled.
    pub settlement: Option<CancellationOutcome>,
}

/// Commands of the `Reservation` aggregate.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum ReservationCommand {
    /// Book a slot (new reservation, or fulfil a waitlisted one).
    Book {
        /// Id.
        reservation_id: ReservationId,
        /// Patient.
        patient_id: PatientId,
        /// Clinic.
        clinic_id: ClinicId,
        /// Treatment.
        treatment_id: TreatmentId,
        /// Slot.
        slot: Slot,
        /// Price breakdown.
        price: PriceBreakdown,
        /// Payment.
        payment: PaymentMethod,
        /// Redeemed promo code.
        promo_code: Option<PromoCodeKey>,
        /// Current time; the slot must start after it.
        now: DateTime<Utc>,
    },
    /// Join the waitlist for a window of start times.
    JoinWaitlist {
        /// Id.
        reservation_id: ReservationId,
        /// Patient.
        patient_id: PatientId,
        /// Clinic.
        clinic_id: ClinicId,
        /// Treatment.
        treatment_id: TreatmentId,
        /// Earliest wanted start.
        earliest: DateTime<Utc>,
        /// Latest wanted start (not before `earliest`).
        latest: DateTime<Utc>,
        /// Payment to use once booked.
        payment: PaymentMethod,
        /// Current time; `latest` must be after it.
        now: DateTime<Utc>,
    },
    /// Move a booked reservation to another slot.
    Reschedule {
        /// New slot.
        slot: Slot,
        /// Current time; the new slot must start after it.
        now: DateTime<Utc>,
    },
    /// Cancel (booked or waitlisted).
    Cancel {
        /// Why.
        reason: String,
        /// The clinic's policy.
        policy: CancellationPolicy,
        /// Current time.
        now: DateTime<Utc>,
    },
    /// The patient arrived.
    CheckIn {
        /// Current time.
        now: DateTime<Utc>,
    },
    /// The treatment was given (only after check-in).
    Complete {
        /// Current time.
        now: DateTime<Utc>,
    },
    /// The patient did not come.
    MarkNoShow {
        /// Current time.
        now: DateTime<Utc>,
    },
    /// An emergency block or closure took the slot.
    Displace {
        /// The block that displaced it.
        block_id: BlockId,
        /// Current time.
        now: DateTime<Utc>,
    },
}

/// Events of the `Reservation` aggregate. Variant names are stored event types: frozen.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum ReservationEvent {
    /// Booked (new, or from the waitlist).
    ReservationBooked {
        /// Id.
        reservation_id: ReservationId,
        /// Patient.
        patient_id: PatientId,
        /// Clinic.
        clinic_id: ClinicId,
        /// Treatment.
        treatment_id: TreatmentId,
        /// Slot.
        slot: Slot,
        /// Full price breakdown.
        price: PriceBreakdown,
        /// Payment.
        payment: PaymentMethod,
        /// Promo code.
        promo_code: Option<PromoCodeKey>,
        /// When it was booked.
        booked_at: DateTime<Utc>,
    },
    /// Joined the waitlist.
    WaitlistJoined {
        /// Id.
        reservation_id: ReservationId,
        /// Patient.
        patient_id: PatientId,
        /// Clinic.
        clinic_id: ClinicId,
        /// Treatment.
        treatment_id: TreatmentId,
        /// Earliest wanted start.
        earliest: DateTime<Utc>,
        /// Latest wanted start.
        latest: DateTime<Utc>,
        /// Payment.
        payment: PaymentMethod,
    },
    /// Moved to another slot.
    ReservationRescheduled {
        /// The slot it left.
        from: Slot,
        /// The slot it holds now.
        to: Slot,
    },
    /// Cancelled.
    ReservationCancelled {
        /// Why.
        reason: String,
        /// What was settled.
        outcome: CancellationOutcome,
        /// When.
        at: DateTime<Utc>,
    },
    /// Checked in.
    CheckedIn {
        /// When.
        at: DateTime<Utc>,
    },
    /// Completed.
    ReservationCompleted {
        /// When.
        at: DateTime<Utc>,
    },
    /// Marked as no-show; payment forfeited.
    MarkedNoShow {
        /// What was settled (nothing given back).
        outcome: CancellationOutcome,
        /// When.
        at: DateTime<Utc>,
    },
    /// Displaced by a block; payment restored in full.
    ReservationDisplaced {
        /// The block.
        block_id: BlockId,
        /// What was settled.
        outcome: CancellationOutcome,
        /// When.
        at: DateTime<Utc>,
    },
}
