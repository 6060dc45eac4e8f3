//! A price quote, answered by the aggregates' own rules without writing
//! anything.

use chrono::{DateTime, Utc};
use clinicbook_domain::calendar::Calendar;
use clinicbook_domain::clinic::Clinic;
use clinicbook_domain::promo::{PromoCode, PromoCommand};
use clinicbook_domain::{
    DomainError, PatientId, PromoCodeKey, ReservationId, ResourceId, TreatmentId,
};
use clinicbook_eventstore::{EventStore, StoredAggregate};
use clinicbook_wire::booking::PriceAnswer;

use super::slot::{registered, Appointment};
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
