//! Read-only answers from the aggregates: a price quote and a
//! reservation with its history. Nothing is written.

use chrono::{DateTime, Utc};
use clinicbook_domain::calendar::Calendar;
use clinicbook_domain::clinic::Clinic;
use clinicbook_domain::promo::{PromoCode, PromoCommand};
use clinicbook_domain::reservation::{Reservation, ReservationEvent};
use clinicbook_domain::{
    AggregateKind, DomainError, PatientId, PromoCodeKey, ReservationId, ResourceId, TreatmentId,
};
use clinicbook_eventstore::audit::stream_events;
use clinicbook_eventstore::{EventStore, StoreError, StoredAggregate};

use super::slot::{registered, Appointment};
use super::types::{PriceAnswer, ReservationView, StatusEntry};
use crate::CommandError;

/// Whether `aggregate` accepts `command`, keeping nothing: a read-only
/// check by the aggregate's own rules. (`handle` is the cqrs-es
/// `Aggregate` method, a supertrait of `StoredAggregate`; the sink only
/// collects the events nobody reads.)
async fn accepts<A: StoredAggregate>(aggregate: &A, command: A::Command) -> Result<(), DomainError>
where
    A::Command: Send,
{
    let mut scratch = aggregate.clone();
    scratch.handle(command, &(), &Default::default()).await
}

/// Applies a stored event to an aggregate (cqrs-es `Aggregate::apply`).
fn apply<A: StoredAggregate>(aggregate: &mut A, event: A::Event) {
    aggregate.apply(event);
}

/// What a booking would cost now, checked as booking would check it:
/// the clinic and treatment exist, the start is in the future and inside
/// the bookable hours of one local day, and the promo code (if any) may
/// be redeemed now by the patient (if given) for the treatment.
pub(super) async fn quote(
    store: &EventStore,
    clinic_id: clinicbook_domain::ClinicId,
    treatment_id: TreatmentId,
    start: DateTime<Utc>,
    promo: Option<PromoCodeKey>,
    patient_id: Option<PatientId>,
    now: DateTime<Utc>,
) -> Result<PriceAnswer, CommandError> {
    let (clinic, _) = store.aggregate::<Clinic>(&clinic_id.to_string()).await?;
    registered(&clinic)?;
    let discount = match promo {
        Some(code) => {
            let (promo, _) = store.aggregate::<PromoCode>(code.as_str()).await?;
            let discount = promo
                .discount()
                .cloned()
                .ok_or_else(|| DomainError::not_found(format!("promo code {code}")))?;
            let redeem = PromoCommand::Redeem {
                reservation_id: ReservationId::new(),
                patient_id: patient_id.unwrap_or_default(),
                treatment_id,
                now,
            };
            accepts(&promo, redeem).await?;
            Some(discount)
        }
        None => None,
    };
    let appointment =
        Appointment::resolve(&clinic, treatment_id, None, start, now, discount.as_ref())?;
    // An empty calendar accepts exactly the appointments that start in the
    // future inside the bookable hours.
    let reserve = appointment.reserve(ResourceId::default(), ReservationId::default(), now);
    accepts(&Calendar::default(), reserve).await?;
    Ok(appointment.price.into())
}

/// A reservation replayed from its stream, with the status after each
/// event.
pub(super) async fn reservation(
    store: &EventStore,
    reservation_id: ReservationId,
) -> Result<ReservationView, CommandError> {
    let events = stream_events(
        store.pool(),
        AggregateKind::Reservation.name(),
        &reservation_id.to_string(),
    )
    .await?;
    let mut state = Reservation::default();
    let mut history = Vec::with_capacity(events.len());
    for stored in events {
        let event: ReservationEvent =
            serde_json::from_value(stored.payload).map_err(|source| StoreError::Serde {
                what: format!("Reservation event {}", stored.sequence),
                source,
            })?;
        let at = recorded_time(&event).unwrap_or(stored.recorded_at);
        apply(&mut state, event);
        history.push(StatusEntry {
            status: state.status.as_str().to_owned(),
            at,
            event_type: stored.event_type,
            sequence: stored.sequence,
        });
    }
    Ok(view(state, history)?)
}

/// The instant an event records for itself, if it records one.
fn recorded_time(event: &ReservationEvent) -> Option<DateTime<Utc>> {
    match event {
        ReservationEvent::ReservationBooked { booked_at, .. } => Some(*booked_at),
        ReservationEvent::ReservationCancelled { at, .. }
        | ReservationEvent::CheckedIn { at }
        | ReservationEvent::ReservationCompleted { at }
        | ReservationEvent::MarkedNoShow { at, .. }
        | ReservationEvent::ReservationDisplaced { at, .. } => Some(*at),
        ReservationEvent::WaitlistJoined { .. }
        | ReservationEvent::ReservationRescheduled { .. } => None,
    }
}

/// The view of a replayed reservation.
fn view(state: Reservation, history: Vec<StatusEntry>) -> Result<ReservationView, DomainError> {
    let (
        Some(reservation_id),
        Some(patient_id),
        Some(clinic_id),
        Some(treatment_id),
        Some(payment),
    ) = (
        state.reservation_id,
        state.patient_id,
        state.clinic_id,
        state.treatment_id,
        state.payment,
    )
    else {
        return Err(DomainError::not_found("reservation"));
    };
    Ok(ReservationView {
        reservation_id: reservation_id.0,
        status: state.status.as_str().to_owned(),
        patient_id: patient_id.0,
        clinic_id: clinic_id.0,
        resource_id: state.slot.map(|slot| slot.resource_id.0),
        treatment_id: treatment_id.0,
        start: state.slot.map(|slot| slot.start),
        end: state.slot.map(|slot| slot.end),
        earliest: state.wanted.map(|(earliest, _)| earliest),
        latest: state.wanted.map(|(_, latest)| latest),
        price: state.slot.map(|_| state.price.into()),
        payment: payment.into(),
        promo_code: state.promo_code.map(String::from),
        settlement: state.settlement.map(Into::into),
        history,
    })
}
