//! The `Package` aggregate: a patient's purchased program of sessions.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::{ClinicId, Money, PackageId, PatientId, ProgramId, ReservationId, TreatmentId};

/// How a package was paid.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "method", rename_all = "snake_case")]
pub enum PackagePayment {
    /// Debited from the wallet.
    Wallet,
    /// Paid outside (card terminal, bank transfer) under this reference.
    External {
        /// The payment reference.
        reference: String,
    },
}

/// The `Package` aggregate state.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Package {
    /// `None` until purchased.
    pub package_id: Option<PackageId>,
    /// Owner.
    pub patient_id: Option<PatientId>,
    /// The program bought.
    pub program_id: Option<ProgramId>,
    /// The treatment its sessions are for.
    pub treatment_id: Option<TreatmentId>,
    /// Sessions bought.
    pub sessions_total: u32,
    /// Sessions consumed and not restored.
    pub sessions_used: u32,
    /// Last instant an appointment may start and use it.
    pub valid_until: Option<DateTime<Utc>>,
    /// Clinics where it may be used.
    pub clinic_ids: Vec<ClinicId>,
    /// Price paid.
    pub price: Money,
    /// Reservations currently holding a session.
    pub consumed_by: Vec<ReservationId>,
}

/// Commands of the `Package` aggregate.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum PackageCommand {
    /// Buy a program.
    Purchase {
        /// Id.
        package_id: PackageId,
        /// Owner.
        patient_id: PatientId,
        /// Program.
        program_id: ProgramId,
        /// Treatment of the program.
        treatment_id: TreatmentId,
        /// Positive number of sessions.
        sessions: u32,
        /// Price paid (non-negative).
        price: Money,
        /// Expiry (after `now`).
        valid_until: DateTime<Utc>,
        /// Clinics where valid (non-empty).
        clinic_ids: Vec<ClinicId>,
        /// Payment.
        payment: PackagePayment,
        /// Current time.
        now: DateTime<Utc>,
    },
    /// Use one session for a reservation (no-op if that reservation already holds one).
    ConsumeSession {
        /// The reservation.
        reservation_id: ReservationId,
        /// Its clinic.
        clinic_id: ClinicId,
        /// Its treatment.
        treatment_id: TreatmentId,
        /// Its start: must not be after `valid_until`.
        appointment_start: DateTime<Utc>,
    },
    /// Give back the session a reservation holds (no-op if it holds none).
    RestoreSession {
        /// The reservation.
        reservation_id: ReservationId,
    },
    /// Make the package valid at another clinic instead of its current ones.
    Transfer {
        /// The new clinic.
        to_clinic_id: ClinicId,
    },
}

/// Events of the `Package` aggregate. Variant names are stored event types: frozen.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum PackageEvent {
    /// Bought.
    PackagePurchased {
        /// Id.
        package_id: PackageId,
        /// Owner.
        patient_id: PatientId,
        /// Program.
        program_id: ProgramId,
        /// Treatment.
        treatment_id: TreatmentId,
        /// Sessions.
        sessions: u32,
        /// Price.
        price: Money,
        /// Expiry.
        valid_until: DateTime<Utc>,
        /// Clinics.
        clinic_ids: Vec<ClinicId>,
        /// Payment.
        payment: PackagePayment,
        /// When.
        purchased_at: DateTime<Utc>,
    },
    /// A session was used by a reservation.
    SessionConsumed {
        /// The reservation.
        reservation_id: ReservationId,
    },
    /// A session was given back.
    SessionRestored {
        /// The reservation.
        reservation_id: ReservationId,
    },
    /// Moved to another clinic.
    PackageTransferred {
        /// Clinics before.
        from_clinic_ids: Vec<ClinicId>,
        /// Clinic now.
        to_clinic_id: ClinicId,
    },
}
