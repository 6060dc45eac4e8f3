//! The waitlist matcher's use case: a freed slot offered to the waiting
//! list, booked for the first candidate the booking rules accept, or, with
//! the clinic's `waitlist_mode: offer`, held for them to confirm.

use clinicbook_domain::clinic::{Clinic, WaitlistMode};
use clinicbook_domain::waitlist::{FreedSlot, WaitlistCandidate};
use clinicbook_domain::{HoldId, ReservationId};
use clinicbook_eventstore::{Actor, CommandMetadata, IdempotencyKey, StoreError};
use tracing::debug;

use super::holds::PlaceHoldCase;
use super::slot::SlotRequest;
use super::BookTreatment;
use crate::{CommandError, Commands, Ctx};

impl Commands {
    /// Books the first of `candidates` (oldest first) that the staff's
    /// booking rules accept into `slot`, and answers it; `None` when none
    /// fits. Each attempt carries an idempotency key made of the slot and
    /// the candidate, so an attempt repeated (after a crash, or by a second
    /// matcher) books nothing twice and answers as the first did.
    ///
    /// # Errors
    /// Storage failed, or conflicts outlasted every retry: worth offering
    /// the slot again later. A refusal only moves on to the next candidate.
    #[tracing::instrument(skip_all, fields(position = slot.position, start = %slot.start))]
    pub async fn fill_freed_slot(
        &self,
        slot: &FreedSlot,
        candidates: &[WaitlistCandidate],
    ) -> Result<Option<ReservationId>, CommandError> {
        let (clinic, _) = self
            .store()
            .aggregate::<Clinic>(&slot.clinic_id.to_string())
            .await?;
        if clinic.settings.waitlist_mode == WaitlistMode::Offer {
            return self.offer_freed_slot(slot, candidates).await;
        }
        for candidate in candidates {
            let input = BookTreatment {
                reservation_id: Some(candidate.reservation_id.0),
                patient_id: candidate.patient_id.0,
                clinic_id: slot.clinic_id.0,
                resource_id: slot.resource_id.0,
                treatment_id: candidate.treatment_id.0,
                start: slot.start,
                payment: candidate.payment.into(),
                promo_code: None,
            };
            let key = slot.idempotency_key(candidate.reservation_id);
            let request = serde_json::to_vec(&input).map_err(|source| StoreError::Serde {
                what: "a waitlist booking".to_owned(),
                source,
            })?;
            let mut ctx = Ctx::new(CommandMetadata::new(
                Actor {
                    subject: "waitlist-matcher".into(),
                    role: "engine".into(),
                },
                "book_treatment",
                key.clone(),
            ));
            ctx.idempotency = Some(IdempotencyKey::new("waitlist", key, &request));
            let reservation = candidate.reservation_id.0;
            match self.book(&ctx, input).await {
                Ok(_) => return Ok(Some(candidate.reservation_id)),
                Err(CommandError::Domain(error)) => {
                    debug!(%reservation, code = error.code(), %error, "waitlisted reservation does not fit the freed slot");
                }
                Err(CommandError::IdempotencyKeyReused) => {
                    debug!(%reservation, "attempted before with another request");
                }
                Err(other) => return Err(other),
            }
        }
        Ok(None)
    }

    /// With `waitlist_mode: offer`: holds `slot` for the first of
    /// `candidates` the booking rules accept, for the clinic's
    /// `offer_minutes`, and answers that reservation; `None` when none
    /// fits. The hold's id is derived from the slot and the candidate and
    /// each attempt carries the matching idempotency key, so an attempt
    /// repeated offers nothing twice.
    ///
    /// # Errors
    /// As [`Commands::fill_freed_slot`].
    async fn offer_freed_slot(
        &self,
        slot: &FreedSlot,
        candidates: &[WaitlistCandidate],
    ) -> Result<Option<ReservationId>, CommandError> {
        for candidate in candidates {
            let key = slot.idempotency_key(candidate.reservation_id);
            let hold_id = HoldId::new();
            let use_case = PlaceHoldCase {
                hold_id,
                request: SlotRequest {
                    patient_id: candidate.patient_id,
                    clinic_id: slot.clinic_id,
                    resource_id: slot.resource_id,
                    treatment_id: candidate.treatment_id,
                    start: slot.start,
                    promo_code: None,
                },
                ttl_seconds: None,
                offer_for: Some(candidate.reservation_id),
                now: self.now(),
            };
            let mut ctx = Ctx::new(CommandMetadata::new(
                Actor {
                    subject: "waitlist-matcher".into(),
                    role: "engine".into(),
                },
                "offer_slot",
                key.clone(),
            ));
            let request = key.clone();
            ctx.idempotency = Some(IdempotencyKey::new(
                "waitlist-offer",
                key,
                request.as_bytes(),
            ));
            let reservation = candidate.reservation_id.0;
            match self.run(&ctx, &use_case).await {
                Ok(_) => return Ok(Some(candidate.reservation_id)),
                Err(CommandError::Domain(error)) => {
                    debug!(%reservation, code = error.code(), %error, "waitlisted reservation cannot be offered the freed slot");
                }
                Err(CommandError::IdempotencyKeyReused) => {
                    debug!(%reservation, "offered before with another request");
                }
                Err(other) => return Err(other),
            }
        }
        Ok(None)
    }
}
