//! The `PromoCode` aggregate (id = the normalised code): discount, validity
//! window, redemption limits and scope.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::pricing::Discount;
use crate::{PatientId, PromoCodeKey, ReservationId, TreatmentId};

/// One redemption.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Redemption {
    /// The reservation it was used for.
    pub reservation_id: ReservationId,
    /// The patient.
    pub patient_id: PatientId,
}

/// The `PromoCode` aggregate state.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PromoCode {
    /// `None` until created.
    pub code: Option<PromoCodeKey>,
    /// What it takes off.
    pub discount: Option<Discount>,
    /// First valid instant.
    pub valid_from: Option<DateTime<Utc>>,
    /// Last valid instant (exclusive).
    pub valid_until: Option<DateTime<Utc>>,
    /// Total redemptions allowed.
    pub max_redemptions: u32,
    /// Redemptions allowed per patient.
    pub per_patient_limit: u32,
    /// Treatments it applies to; `None` for all.
    pub treatment_ids: Option<Vec<TreatmentId>>,
    /// False once deactivated.
    pub active: bool,
    /// Current (not released) redemptions.
    pub redemptions: Vec<Redemption>,
}

/// Commands of the `PromoCode` aggregate.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum PromoCommand {
    /// Create the code.
    Create {
        /// The code.
        code: PromoCodeKey,
        /// Discount: percent 1..=100 or a positive amount.
        discount: Discount,
        /// Window start.
        valid_from: DateTime<Utc>,
        /// Window end (after start).
        valid_until: DateTime<Utc>,
        /// Positive total limit.
        max_redemptions: u32,
        /// Positive per-patient limit.
        per_patient_limit: u32,
        /// Scope; `None` for every treatment.
        treatment_ids: Option<Vec<TreatmentId>>,
    },
    /// Use the code for a reservation (no-op if that reservation already redeemed it).
    Redeem {
        /// The reservation.
        reservation_id: ReservationId,
        /// The patient.
        patient_id: PatientId,
        /// The treatment (scope check).
        treatment_id: TreatmentId,
        /// Current time (window check).
        now: DateTime<Utc>,
    },
    /// Give a redemption back (timely cancel, displacement); no-op if none.
    Release {
        /// The reservation.
        reservation_id: ReservationId,
    },
    /// Stop accepting redemptions.
    Deactivate,
}

/// Events of the `PromoCode` aggregate. Variant names are stored event types: frozen.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum PromoEvent {
    /// Created.
    PromoCodeCreated {
        /// Code.
        code: PromoCodeKey,
        /// Discount.
        discount: Discount,
        /// Window start.
        valid_from: DateTime<Utc>,
        /// Window end.
        valid_until: DateTime<Utc>,
        /// Total limit.
        max_redemptions: u32,
        /// Per-patient limit.
        per_patient_limit: u32,
        /// Scope.
        treatment_ids: Option<Vec<TreatmentId>>,
    },
    /// Redeemed.
    PromoRedeemed {
        /// The reservation.
        reservation_id: ReservationId,
        /// The patient.
        patient_id: PatientId,
    },
    /// A redemption was given back.
    RedemptionReleased {
        /// The reservation.
        reservation_id: ReservationId,
    },
    /// Deactivated.
    PromoCodeDeactivated,
}
