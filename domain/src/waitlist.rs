//! What the waitlist matcher works on: a slot that freed and the
//! waitlisted reservations that could take it. The read side finds them
//! (it sees cancellations and reschedules go by); the use case that books
//! one of them lives with the other use cases.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::reservation::PaymentMethod;
use crate::{ClinicId, PatientId, ReservationId, ResourceId, TreatmentId};

/// A booked slot that freed (a cancellation, or a reschedule leaving it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FreedSlot {
    /// Global position of the event that freed it: the slot's identity,
    /// so the same freed slot is never offered twice.
    pub position: i64,
    /// The clinic it belongs to: only its waiting list may take it.
    pub clinic_id: ClinicId,
    /// The resource that became free.
    pub resource_id: ResourceId,
    /// When it starts; a candidate must accept this start.
    pub start: DateTime<Utc>,
}

impl FreedSlot {
    /// The idempotency key of booking `candidate` into this slot: an
    /// attempt repeated (after a crash, or by a second matcher) books
    /// nothing twice.
    #[must_use]
    pub fn idempotency_key(&self, candidate: ReservationId) -> String {
        format!("waitlist:{}:{}", self.position, candidate.0)
    }
}

/// A waitlisted reservation whose wanted window holds a freed slot's
/// start, with what booking it needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WaitlistCandidate {
    /// The waiting reservation (booking it books this id).
    pub reservation_id: ReservationId,
    /// Its patient (the wallet a wallet payment debits).
    pub patient_id: PatientId,
    /// The treatment it waits for.
    pub treatment_id: TreatmentId,
    /// The payment it chose when it joined.
    pub payment: PaymentMethod,
}
