//! A clinic's or a program's current state in the API's field names (the
//! read side's `catalog` projection answers them), and the parts of a
//! clinic built from the domain's types.

use chrono::{DateTime, Utc};
use clinicbook_domain::clinic::{Closure, Resource, Treatment};
use clinicbook_domain::program::Program;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::parse::resource_kind_name;
use super::{OpeningHoursInput, PricingRulesInput};

/// A clinic's setup as it is now.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ClinicView {
    /// Its id.
    pub clinic_id: Uuid,
    /// Display name.
    pub name: String,
    /// IANA timezone.
    pub timezone: String,
    /// ISO 4217 currency code of its prices.
    pub currency: String,
    /// Hours before the start until which a cancellation is free.
    pub cancellation_notice_hours: u32,
    /// Percent of the price kept on a late cancellation.
    pub late_cancel_fee_percent: i64,
    /// Weekly opening hours in local time, as the opening-hours route takes them.
    pub opening_hours: OpeningHoursInput,
    /// Its resources, in the order they were added.
    pub resources: Vec<ResourceView>,
    /// Its treatments, in the order they were added.
    pub treatments: Vec<TreatmentView>,
    /// Its pricing rules, as the pricing-rules route takes them.
    pub pricing_rules: PricingRulesInput,
    /// Its closures, in the order they were added.
    pub closures: Vec<ClosureView>,
}

/// A resource of a clinic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ResourceView {
    /// Its id.
    pub resource_id: Uuid,
    /// Name.
    pub name: String,
    /// `room`, `device` or `practitioner`.
    pub kind: String,
}

/// A treatment a clinic offers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TreatmentView {
    /// Its id.
    pub treatment_id: Uuid,
    /// Name.
    pub name: String,
    /// Length of an appointment.
    pub duration_minutes: u32,
    /// Minutes the resource stays free after each booking.
    pub buffer_minutes: u32,
    /// Base price.
    pub price_cents: i64,
    /// The kind of resource it is booked on.
    pub resource_kind: String,
}

/// A period during which a clinic is closed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ClosureView {
    /// Its id.
    pub closure_id: Uuid,
    /// Start (UTC).
    pub start: DateTime<Utc>,
    /// End, exclusive (UTC).
    pub end: DateTime<Utc>,
    /// Why.
    pub reason: String,
}

/// A catalog program as it is now.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ProgramView {
    /// Its id.
    pub program_id: Uuid,
    /// Name.
    pub name: String,
    /// The treatment of its sessions.
    pub treatment_id: Uuid,
    /// Sessions per package.
    pub sessions: u32,
    /// Price of a package.
    pub price_cents: i64,
    /// Days a package stays valid after purchase.
    pub validity_days: u32,
    /// Clinics where its packages can be used.
    pub clinic_ids: Vec<Uuid>,
}

impl From<&Resource> for ResourceView {
    fn from(r: &Resource) -> Self {
        Self {
            resource_id: r.resource_id.0,
            name: r.name.clone(),
            kind: resource_kind_name(r.kind).to_string(),
        }
    }
}

impl From<&Treatment> for TreatmentView {
    fn from(t: &Treatment) -> Self {
        Self {
            treatment_id: t.treatment_id.0,
            name: t.name.clone(),
            duration_minutes: t.duration_minutes,
            buffer_minutes: t.buffer_minutes,
            price_cents: t.price.cents(),
            resource_kind: resource_kind_name(t.resource_kind).to_string(),
        }
    }
}

impl From<&Closure> for ClosureView {
    fn from(c: &Closure) -> Self {
        Self {
            closure_id: c.closure_id.0,
            start: c.start,
            end: c.end,
            reason: c.reason.clone(),
        }
    }
}

impl ProgramView {
    /// The view of a created program; `None` before creation.
    pub fn of(program: &Program) -> Option<Self> {
        Some(Self {
            program_id: program.program_id?.0,
            name: program.name.clone(),
            treatment_id: program.treatment_id?.0,
            sessions: program.sessions,
            price_cents: program.price.cents(),
            validity_days: program.validity_days,
            clinic_ids: program.clinic_ids.iter().map(|c| c.0).collect(),
        })
    }
}
