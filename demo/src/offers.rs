//! A waitlist offer for the demo: the last branch (Potsdam) switches to
//! `waitlist_mode: offer`; on the last demo day a small-area laser session
//! is booked, two patients join the waitlist for its time, and the booking
//! is cancelled. The server's waitlist matcher then holds the freed slot
//! for the first of them for the branch's `offer_minutes` (a day), and
//! `GET /v1/reservations/{id}` of that waitlisted reservation shows
//! `offer: {hold_id, expires_at}`; should it expire, the second gets it.

use std::time::Duration;

use chrono::NaiveDate;
use clinicbook_wire::booking::{
    BookTreatment, Booked, Cancel, Cancelled, JoinWaitlist, PaymentInput, ReservationView,
    Waitlisted,
};
use clinicbook_wire::holds::{SettingsInput, SettingsView};
use reqwest::StatusCode;
use uuid::Uuid;

use crate::catalog::{Chain, LASER_SMALL};
use crate::client::{Api, As};
use crate::ids::{demo_id, key};
use crate::plan::{Planner, Slot};
use crate::{DemoError, OfferSummary};

/// Minutes the offer lasts: long enough to look at it after the demo.
const OFFER_MINUTES: u32 = 1440;
/// Patients waiting for the slot.
const WAITING: usize = 2;
/// How long the load waits for the matcher to make the offer.
const OFFER_WAIT: Duration = Duration::from_secs(15);

/// The waitlisted reservations of the demo offer, first in line first.
fn waiting_ids(seed: u64) -> Vec<Uuid> {
    (0..WAITING)
        .map(|k| demo_id(seed, &format!("offer-waitlist/{k}")))
        .collect()
}

/// The slot the demo offer frees: the earliest small-area laser slot of
/// the last branch on `date` that the `planner` has free (taken there).
pub(super) fn slot(chain: &Chain, planner: &mut Planner, date: NaiveDate) -> Option<Slot> {
    let index = chain.branches.len().checked_sub(1)?;
    planner
        .take_earliest(chain, index, LASER_SMALL, date)
        .filter(|slot| slot.start_utc().is_some())
}

/// Makes the offer (see the module) of `slot` and waits until the matcher
/// has made it; answers what to show.
///
/// # Errors
/// The server refused a request.
pub(super) async fn make(
    api: &Api,
    chain: &Chain,
    slot: Slot,
    seed: u64,
) -> Result<OfferSummary, DemoError> {
    let branch = &chain.branches[slot.branch];
    let treatment = &chain.treatments[LASER_SMALL];
    let start = slot.start_utc().ok_or_else(|| DemoError::BadAnswer {
        what: "the offer's slot".to_owned(),
        detail: format!("{} {} has no instant in Berlin", slot.date, slot.start),
    })?;
    let settings = SettingsInput {
        waitlist_mode: Some("offer".to_owned()),
        offer_minutes: Some(OFFER_MINUTES),
        ..SettingsInput::default()
    };
    let _: SettingsView = api
        .put(
            As::Admin,
            &format!("/v1/clinics/{}/settings", branch.clinic_id),
            &settings,
        )
        .await?
        .parse(StatusCode::OK)?;
    let booking = BookTreatment {
        reservation_id: Some(demo_id(seed, "offer-booking")),
        patient_id: demo_id(seed, "offer-patient/booked"),
        clinic_id: branch.clinic_id,
        resource_id: branch.resources[slot.resource].id,
        treatment_id: treatment.id,
        start,
        payment: PaymentInput::AtClinic,
        promo_code: None,
    };
    let booked: Booked = api
        .post(
            As::Staff,
            "/v1/reservations",
            &booking,
            &key(seed, "offer-booking"),
        )
        .await?
        .parse(StatusCode::CREATED)?;
    let window = chrono::Duration::minutes(30);
    for (k, reservation_id) in waiting_ids(seed).into_iter().enumerate() {
        let entry = JoinWaitlist {
            reservation_id: Some(reservation_id),
            patient_id: demo_id(seed, &format!("offer-patient/{k}")),
            clinic_id: branch.clinic_id,
            treatment_id: treatment.id,
            earliest: start - window,
            latest: start + window,
            payment: PaymentInput::AtClinic,
        };
        let _: Waitlisted = api
            .post(
                As::Staff,
                "/v1/waitlist",
                &entry,
                &key(seed, &format!("offer-waitlist/{k}")),
            )
            .await?
            .parse(StatusCode::CREATED)?;
    }
    let cancel = Cancel {
        reason: "patient moved away; the slot goes to the waitlist".to_owned(),
    };
    let _: Cancelled = api
        .post(
            As::Staff,
            &format!("/v1/reservations/{}/cancel", booked.reservation_id),
            &cancel,
            &key(seed, "offer-cancel"),
        )
        .await?
        .parse(StatusCode::OK)?;
    let until = tokio::time::Instant::now() + OFFER_WAIT;
    loop {
        let found = find(api, chain, seed).await?;
        let offered = found.as_ref().is_some_and(|o| o.hold_id.is_some());
        if offered || tokio::time::Instant::now() > until {
            if !offered {
                tracing::warn!(
                    "no waitlist offer after {} s: is the server's matcher running (role all or projector)?",
                    OFFER_WAIT.as_secs()
                );
            }
            let mut summary = found.unwrap_or_else(|| empty(chain, slot.branch));
            summary.cancelled = Some(booked.reservation_id);
            return Ok(summary);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A summary of branch `index` with nothing found yet.
fn empty(chain: &Chain, index: usize) -> OfferSummary {
    let branch = &chain.branches[index];
    OfferSummary {
        clinic_id: branch.clinic_id,
        clinic: branch.name.to_owned(),
        cancelled: None,
        waitlisted: Vec::new(),
        offered_to: None,
        hold_id: None,
        expires_at: None,
    }
}

/// The demo offer as the server shows it now: the waitlisted reservations
/// and the open offer of the first one that has one; `None` when the
/// demo made none.
///
/// # Errors
/// The server refused a request.
pub(super) async fn find(
    api: &Api,
    chain: &Chain,
    seed: u64,
) -> Result<Option<OfferSummary>, DemoError> {
    let Some(index) = chain.branches.len().checked_sub(1) else {
        return Ok(None);
    };
    let mut found = empty(chain, index);
    for id in waiting_ids(seed) {
        let reply = api
            .get(As::Staff, &format!("/v1/reservations/{id}"))
            .await?;
        if reply.status == StatusCode::NOT_FOUND {
            continue;
        }
        let view: ReservationView = reply.parse(StatusCode::OK)?;
        if let (None, Some(offer)) = (found.hold_id, view.offer) {
            found.offered_to = Some(id);
            found.hold_id = Some(offer.hold_id);
            found.expires_at = Some(offer.expires_at);
        }
        found.waitlisted.push(id);
    }
    Ok((!found.waitlisted.is_empty()).then_some(found))
}
