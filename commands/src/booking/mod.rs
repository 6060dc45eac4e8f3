//! The booking use cases of staff: book, reschedule, cancel, check in,
//! complete, no-show, waitlist, blocks and closures, plus a price quote.
//! A reservation's detail is read from the read side
//! (`clinicbook-projections`).
//!
//! Each command is one unit of work over every aggregate it touches,
//! committed in one transaction (DESIGN.md §3): a booking writes the
//! `Reservation`, the `Calendar` of the resource's clinic-local day, the
//! `Package` or `Wallet` that pays and the `PromoCode`, with the `Clinic`
//! guarded so that its hours and prices cannot change under it. Any
//! refusal writes nothing.
//!
//! Decisions (where API.md and DESIGN.md leave room):
//!
//! - **Retries.** Booking (or joining the waitlist) again with the same
//!   `reservation_id` and the same request answers the reservation as it
//!   was made and writes nothing; with another request the reservation
//!   refuses (`invalid_transition`). The answer of a retry carries the
//!   price as booked, even if the price would be different now.
//! - **Inputs.** A `payment` with a field its method does not have (a
//!   `package_id` on a wallet payment) is refused, not ignored. A blank
//!   `promo_code` means none (forms and query strings send empty values).
//! - **Payment.** A wallet booking debits the total with reference
//!   `reservation:<id>` (nothing when the total is zero); a package
//!   booking consumes one session and must use a package of the same
//!   patient (`invalid_input` on `payment.package_id` otherwise).
//! - **Settlement.** Cancellation, displacement and no-show settle through
//!   one function, as the reservation's recorded outcome says: the refund
//!   is credited with reference `refund:reservation:<id>`, a restored
//!   session is given back to the package, and the promo redemption is
//!   released only when the outcome is not late. So a timely cancellation
//!   and a displacement give the code back; a late cancellation and a
//!   no-show keep it used (their fee is part of the discounted price).
//! - **No-show** keeps its calendar slot; cancel, reschedule and
//!   displacement free it.
//! - **Reschedule** keeps the booked price and payment (a package's expiry
//!   is checked when its session is consumed, at booking).
//! - **Blocks** are cut at clinic-local midnights, one `Calendar` per
//!   resource and day, and cover at most 366 days. An emergency block or
//!   a closure over an appointment that is already checked in, completed
//!   or a no-show is refused (`invalid_transition`): it must start after
//!   that appointment. A closure's blocks use the closure id as block id.
//! - **Clinic reads.** Cancel, blocks and waitlist read the clinic without
//!   guarding it: timezone and policy never change once registered, and a
//!   resource or treatment once added stays.
//! - **Quote** answers without writing: it asks an empty calendar and the
//!   promo code whether they would accept the booking.
//! - **History** of a reservation dates each step by the time its event
//!   records (booked at, cancelled at, ...), or the time it was stored for
//!   events that record none (waitlist joined, rescheduled).

mod blocks;
mod book;
mod holds;
mod lifecycle;
mod payment;
mod read;
mod slot;
mod waitlist;

use clinicbook_domain::clinic::SettingsChange;
use clinicbook_domain::reservation::WaitlistEntry;
use clinicbook_domain::{
    BlockId, ClinicId, ClosureId, DomainError, HoldId, PromoCodeKey, ReservationId, ResourceId,
};
use uuid::Uuid;

/// The requests and answers, defined once in the wire crate.
pub use clinicbook_wire::booking::{
    AddBlock, AddClosure, BlockAdded, BookTreatment, Booked, Cancel, Cancelled, ClosureAdded,
    JoinWaitlist, PaymentInput, PriceAnswer, QuoteQuery, Reschedule, ReservationView, Settlement,
    StatusChanged, StatusEntry, Waitlisted,
};

use crate::due::Expiry;
use crate::{CommandError, Commands, Ctx, Done};
use blocks::{BlockResource, Blocking, CloseClinic};
use book::{Book, Move, Wait};
use clinicbook_wire::holds::{
    ConfirmHold, HoldPlaced, HoldReleased, PlaceHold, SettingsInput, SettingsView, MAX_TTL_SECONDS,
    MIN_TTL_SECONDS,
};
use holds::{end_hold, Ending};
use holds::{ChangeSettingsCase, ConfirmHoldCase, ExpireHoldCase, PlaceHoldCase, ReleaseHoldCase};
use lifecycle::{CancelReservation, ChangeStatus, StatusChange};
use slot::SlotRequest;

/// A promo code as the API sends it: absent or blank means none; anything
/// else must be a well-formed code.
///
/// # Errors
/// `InvalidInput` naming `promo_code`.
fn promo_key(raw: Option<&str>) -> Result<Option<PromoCodeKey>, DomainError> {
    match raw {
        Some(raw) if !raw.trim().is_empty() => {
            PromoCodeKey::parse(raw).map(Some).map_err(|e| match e {
                DomainError::InvalidInput { reason, .. } => {
                    DomainError::invalid("promo_code", reason)
                }
                other => other,
            })
        }
        _ => Ok(None),
    }
}

impl Commands {
    /// Books a treatment on a resource at `start`, paid by package
    /// session, wallet or at the clinic, with an optional promo code.
    ///
    /// # Errors
    /// `invalid_input` (promo code), `not_found` (clinic, resource,
    /// treatment, package, promo code), `resource_kind_mismatch`,
    /// `in_the_past`, `outside_opening_hours`, `slot_unavailable`,
    /// `invalid_transition` (the id is taken by another reservation),
    /// `insufficient_funds`, `no_sessions_left`, `package_expired`,
    /// `package_not_valid_here`, `package_not_for_treatment`, the promo
    /// refusals (`promo_expired`, `promo_inactive`, `promo_exhausted`,
    /// `promo_limit_per_patient`, `promo_not_applicable`); and see
    /// [`CommandError`].
    pub async fn book(
        &self,
        ctx: &Ctx,
        input: BookTreatment,
    ) -> Result<Done<Booked>, CommandError> {
        let use_case = Book {
            reservation_id: input
                .reservation_id
                .map_or_else(ReservationId::new, ReservationId),
            request: SlotRequest::try_from(&input)?,
            payment: input.payment.into(),
            now: self.now(),
        };
        self.run(ctx, &use_case).await
    }

    /// Moves a booked reservation to another start and/or resource; the
    /// price stays as booked.
    ///
    /// # Errors
    /// `not_found`, `invalid_transition` (not booked), and the slot
    /// refusals of [`Commands::book`]; see [`CommandError`].
    pub async fn reschedule(
        &self,
        ctx: &Ctx,
        reservation_id: Uuid,
        input: Reschedule,
    ) -> Result<Done<Booked>, CommandError> {
        let use_case = Move {
            reservation_id: reservation_id.into(),
            start: input.start,
            resource_id: input.resource_id.map(ResourceId),
            now: self.now(),
        };
        self.run(ctx, &use_case).await
    }

    /// Cancels a booking (settled under the clinic's cancellation policy,
    /// its slot freed) or a waitlist entry (nothing to settle).
    ///
    /// # Errors
    /// `not_found`, `invalid_transition`; see [`CommandError`].
    pub async fn cancel(
        &self,
        ctx: &Ctx,
        reservation_id: Uuid,
        input: Cancel,
    ) -> Result<Done<Cancelled>, CommandError> {
        let use_case = CancelReservation {
            reservation_id: reservation_id.into(),
            reason: input.reason,
            now: self.now(),
        };
        self.run(ctx, &use_case).await
    }

    /// Records that the patient of a booked reservation arrived.
    ///
    /// # Errors
    /// `not_found`, `invalid_transition`; see [`CommandError`].
    pub async fn check_in(
        &self,
        ctx: &Ctx,
        reservation_id: Uuid,
    ) -> Result<Done<StatusChanged>, CommandError> {
        self.change_status(ctx, reservation_id, StatusChange::CheckIn)
            .await
    }

    /// Records that a checked-in reservation's treatment was given.
    ///
    /// # Errors
    /// `not_found`, `invalid_transition`; see [`CommandError`].
    pub async fn complete(
        &self,
        ctx: &Ctx,
        reservation_id: Uuid,
    ) -> Result<Done<StatusChanged>, CommandError> {
        self.change_status(ctx, reservation_id, StatusChange::Complete)
            .await
    }

    /// Records that the patient of a booked reservation did not come: the
    /// payment is forfeited and the slot stays taken.
    ///
    /// # Errors
    /// `not_found`, `invalid_transition`; see [`CommandError`].
    pub async fn mark_no_show(
        &self,
        ctx: &Ctx,
        reservation_id: Uuid,
    ) -> Result<Done<StatusChanged>, CommandError> {
        self.change_status(ctx, reservation_id, StatusChange::NoShow)
            .await
    }

    async fn change_status(
        &self,
        ctx: &Ctx,
        reservation_id: Uuid,
        change: StatusChange,
    ) -> Result<Done<StatusChanged>, CommandError> {
        let use_case = ChangeStatus {
            reservation_id: reservation_id.into(),
            change,
            now: self.now(),
        };
        self.run(ctx, &use_case).await
    }

    /// Puts a patient on the waitlist for a treatment, starting between
    /// `earliest` and `latest`.
    ///
    /// # Errors
    /// `not_found` (clinic, treatment, package), `invalid_input`
    /// (`latest` before `earliest`, another patient's package),
    /// `in_the_past` (`latest` not in the future), `invalid_transition`
    /// (the id is taken); see [`CommandError`].
    pub async fn join_waitlist(
        &self,
        ctx: &Ctx,
        input: JoinWaitlist,
    ) -> Result<Done<Waitlisted>, CommandError> {
        let use_case = Wait {
            entry: WaitlistEntry {
                reservation_id: input
                    .reservation_id
                    .map_or_else(ReservationId::new, ReservationId),
                patient_id: input.patient_id.into(),
                clinic_id: input.clinic_id.into(),
                treatment_id: input.treatment_id.into(),
                earliest: input.earliest,
                latest: input.latest,
                payment: input.payment.into(),
            },
            now: self.now(),
        };
        self.run(ctx, &use_case).await
    }

    /// Blocks a resource for a time range; an emergency block displaces
    /// the bookings it overlaps and gives their payment back.
    ///
    /// # Errors
    /// `not_found` (resource), `invalid_input` (`end`), `slot_unavailable`
    /// (a non-emergency block over a booking), `invalid_transition` (an
    /// emergency block over a checked-in or finished appointment); see
    /// [`CommandError`].
    pub async fn add_block(
        &self,
        ctx: &Ctx,
        resource_id: Uuid,
        input: AddBlock,
    ) -> Result<Done<BlockAdded>, CommandError> {
        let resource_id = ResourceId(resource_id);
        let use_case = BlockResource {
            clinic_id: self.clinic_of(resource_id).await?,
            resource_id,
            block: Blocking {
                block_id: BlockId::new(),
                start: input.start,
                end: input.end,
                reason: input.reason,
                emergency: input.emergency,
            },
            now: self.now(),
        };
        self.run(ctx, &use_case).await
    }

    /// Closes a clinic for a time range: every resource is blocked and
    /// the bookings in the range are displaced with their payment given
    /// back; later bookings in the range are refused.
    ///
    /// # Errors
    /// `not_found` (clinic), `invalid_input` (`end`), `invalid_transition`
    /// (over a checked-in or finished appointment); see [`CommandError`].
    pub async fn add_closure(
        &self,
        ctx: &Ctx,
        clinic_id: Uuid,
        input: AddClosure,
    ) -> Result<Done<ClosureAdded>, CommandError> {
        let use_case = CloseClinic {
            clinic_id: ClinicId(clinic_id),
            closure_id: ClosureId::new(),
            start: input.start,
            end: input.end,
            reason: input.reason,
            now: self.now(),
        };
        self.run(ctx, &use_case).await
    }

    /// The price a booking would have now, checked as a booking would be
    /// (without a resource); writes nothing.
    ///
    /// # Errors
    /// `invalid_input` (promo code), `not_found` (clinic, treatment, promo
    /// code), `in_the_past`, `outside_opening_hours`, the promo refusals;
    /// `Store` when loading fails.
    pub async fn quote(&self, query: QuoteQuery) -> Result<PriceAnswer, CommandError> {
        read::quote(
            self.store(),
            query.clinic_id.into(),
            query.treatment_id.into(),
            query.start,
            promo_key(query.promo_code.as_deref())?,
            query.patient_id.map(Into::into),
            self.now(),
        )
        .await
    }

    /// Holds a slot for a patient for `ttl_seconds` (the clinic's
    /// `hold_minutes` by default), at the price quoted now.
    ///
    /// # Errors
    /// `invalid_input` (`ttl_seconds` outside 30..=3600, promo code), the
    /// slot refusals of [`Commands::book`] (`slot_unavailable`,
    /// `outside_opening_hours`, `in_the_past`, `not_found`,
    /// `resource_kind_mismatch`), `already_exists` (the id is another
    /// hold's); see [`CommandError`].
    pub async fn place_hold(
        &self,
        ctx: &Ctx,
        input: PlaceHold,
    ) -> Result<Done<HoldPlaced>, CommandError> {
        if let Some(ttl) = input.ttl_seconds {
            if !(MIN_TTL_SECONDS..=MAX_TTL_SECONDS).contains(&ttl) {
                return Err(DomainError::invalid(
                    "ttl_seconds",
                    format!("must be within {MIN_TTL_SECONDS}..={MAX_TTL_SECONDS}"),
                )
                .into());
            }
        }
        let use_case = PlaceHoldCase {
            hold_id: input.hold_id.map_or_else(HoldId::new, HoldId),
            request: SlotRequest::try_from(&input)?,
            ttl_seconds: input.ttl_seconds,
            offer_for: None,
            now: self.now(),
        };
        self.run(ctx, &use_case).await
    }

    /// Books a held slot at the price quoted when it was held, paid by
    /// package, wallet or at the clinic, the hold's promo code redeemed.
    ///
    /// # Errors
    /// `not_found` (hold), `hold_expired` (at or after `expires_at`),
    /// `hold_released`, `invalid_transition` (confirmed as another
    /// reservation, or the reservation id is taken), the payment and promo
    /// refusals of [`Commands::book`]; see [`CommandError`].
    pub async fn confirm_hold(
        &self,
        ctx: &Ctx,
        hold_id: Uuid,
        input: ConfirmHold,
    ) -> Result<Done<Booked>, CommandError> {
        let use_case = ConfirmHoldCase {
            hold_id: HoldId(hold_id),
            payment: input.payment.into(),
            reservation_id: input.reservation_id.map(ReservationId),
            now: self.now(),
        };
        self.run(ctx, &use_case).await
    }

    /// Gives a hold up: its slot is free at once. Releasing twice answers
    /// the same.
    ///
    /// # Errors
    /// `not_found`, `hold_expired`, `invalid_transition` (confirmed); see
    /// [`CommandError`].
    pub async fn release_hold(
        &self,
        ctx: &Ctx,
        hold_id: Uuid,
    ) -> Result<Done<HoldReleased>, CommandError> {
        let use_case = ReleaseHoldCase {
            hold_id: HoldId(hold_id),
            now: self.now(),
        };
        self.run(ctx, &use_case).await
    }

    /// Records that a hold's time ran out and frees its slot: the
    /// scheduler's command. Idempotent: a hold that already ended answers
    /// [`Expiry::AlreadyEnded`] and writes nothing.
    ///
    /// # Errors
    /// `not_found` (no such hold); see [`CommandError`].
    pub async fn expire_hold(
        &self,
        ctx: &Ctx,
        hold_id: HoldId,
    ) -> Result<Done<Expiry>, CommandError> {
        let use_case = ExpireHoldCase {
            hold_id,
            now: self.now(),
        };
        self.run(ctx, &use_case).await
    }

    /// Changes some of a clinic's settings and answers all of them.
    ///
    /// # Errors
    /// `invalid_input` naming a value out of range or an unknown
    /// `waitlist_mode`; `not_found` (clinic); see [`CommandError`].
    pub async fn change_settings(
        &self,
        ctx: &Ctx,
        clinic_id: Uuid,
        input: SettingsInput,
    ) -> Result<Done<SettingsView>, CommandError> {
        let change = SettingsChange {
            hold_minutes: input.hold_minutes,
            waitlist_mode: input
                .waitlist_mode
                .as_deref()
                .map(holds::waitlist_mode)
                .transpose()?,
            offer_minutes: input.offer_minutes,
            reminder_minutes_before: input.reminder_minutes_before,
        };
        let use_case = ChangeSettingsCase {
            clinic_id: ClinicId(clinic_id),
            change,
        };
        self.run(ctx, &use_case).await
    }

    /// The clinic that added a resource.
    async fn clinic_of(&self, resource_id: ResourceId) -> Result<ClinicId, CommandError> {
        let id = resource_id.to_string();
        let clinics = self
            .store()
            .lookup(
                clinicbook_domain::AggregateKind::Clinic,
                "ResourceAdded",
                &["ResourceAdded", "resource", "resource_id"],
                &id,
            )
            .await?;
        clinics
            .iter()
            .find_map(|clinic| clinic.parse::<ClinicId>().ok())
            .ok_or_else(|| DomainError::not_found(format!("resource {id}")).into())
    }
}
