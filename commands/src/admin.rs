//! The admin use cases: set up clinics (registration, opening hours,
//! resources, treatments, pricing rules) and the catalog (programs, promo
//! codes); the clinic and program views are read from the read side
//! (`clinicbook-projections`). Closures are not here: they displace bookings, so the booking
//! slice owns them.
//!
//! Decisions a reader may ask about:
//!
//! - Inputs carry primitives (strings, UUIDs, cents) and are parsed into
//!   domain types before the unit of work starts, so a malformed request
//!   touches no database; every business rule stays in the aggregates.
//!   Parse errors name the API field (`mon[0][1]`, `rules[0].weekdays[1]`).
//! - Times of day are `HH:MM` on a 24-hour clock. `24:00` is refused
//!   rather than stored as 23:59:59.999999999: a nanosecond value would be
//!   frozen in events forever and would still not let a booking end at
//!   midnight, so a clinic open late closes at `23:59`.
//! - Ids are chosen by the server unless the client sends one (every create
//!   input takes an optional id). A client-chosen treatment id is also how
//!   branches offer "the same" treatment, which a program spanning several
//!   clinics needs.
//! - A change to a clinic that was never registered answers `not_found`
//!   naming the clinic id. Creating a program reads each of its clinics
//!   guarded: today nothing removes a clinic or a treatment, but if that
//!   ever comes, the program cannot be created against a stale read.
//! - A promo code's `treatment_ids` must name treatments some clinic
//!   offers; they are looked up outside the unit of work, which is safe
//!   because treatments are never removed.

mod catalog;
mod clinic;

/// The requests, answers and views, defined once in the wire crate.
pub use clinicbook_wire::admin::{
    format_local_time, parse_local_time, parse_resource_kind, parse_weekday, resource_kind_name,
    AddResource, AddTreatment, ClinicCreated, ClinicView, ClosureView, CreateProgram,
    CreatePromoCode, LastMinuteInput, OpeningHoursInput, PricingRuleInput, PricingRulesInput,
    ProgramCreated, ProgramView, PromoCreated, PromoDeactivated, RegisterClinic, ResourceCreated,
    ResourceView, TreatmentCreated, TreatmentView, Updated,
};

use clinicbook_domain::clinic::Clinic;
use clinicbook_domain::{ClinicId, DomainError};
use clinicbook_eventstore::{UnitOfWork, UowError};

/// The clinic `clinic_id`, read guarded (the command is retried if the
/// clinic changes before it commits), or `not_found` naming the clinic if
/// it was never registered. For use cases that rely on a clinic's state.
///
/// # Errors
/// `DomainError::NotFound` (`clinic <id>`), or loading failed.
pub async fn registered_clinic(
    uow: &mut UnitOfWork,
    clinic_id: ClinicId,
) -> Result<&Clinic, UowError> {
    let clinic = uow.guard::<Clinic>(&clinic_id.to_string()).await?;
    if clinic.is_registered() {
        Ok(clinic)
    } else {
        Err(DomainError::not_found(format!("clinic {clinic_id}")).into())
    }
}
