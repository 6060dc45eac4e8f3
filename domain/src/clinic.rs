//! The `Clinic` aggregate: a branch with its timezone, opening hours,
//! resources, treatments, pricing rules, cancellation policy and closures.

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

use crate::policy::CancellationPolicy;
use crate::pricing::PricingRules;
use crate::schedule::OpeningHours;
use crate::{ClinicId, ClosureId, Money, ResourceId, TreatmentId};

/// What kind of thing a resource is; a treatment needs one kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResourceKind {
    /// A treatment room.
    Room,
    /// A device, e.g. a laser.
    Device,
    /// A practitioner.
    Practitioner,
}

/// A bookable resource of the clinic.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resource {
    /// Its id.
    pub resource_id: ResourceId,
    /// Unique inside the clinic.
    pub name: String,
    /// Its kind.
    pub kind: ResourceKind,
}

/// A treatment the clinic offers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Treatment {
    /// Its id.
    pub treatment_id: TreatmentId,
    /// Unique inside the clinic.
    pub name: String,
    /// Length of the appointment.
    pub duration_minutes: u32,
    /// Time the resource stays free after each booking.
    pub buffer_minutes: u32,
    /// Base price before pricing rules and promo codes.
    pub price: Money,
    /// The kind of resource it is booked on.
    pub resource_kind: ResourceKind,
}

/// A period during which the whole clinic is closed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Closure {
    /// Its id.
    pub closure_id: ClosureId,
    /// Start instant.
    pub start: DateTime<Utc>,
    /// End instant (exclusive).
    pub end: DateTime<Utc>,
    /// Why.
    pub reason: String,
}

/// The `Clinic` aggregate state.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Clinic {
    /// `None` until registered.
    pub clinic_id: Option<ClinicId>,
    /// Display name.
    pub name: String,
    /// IANA timezone; opening hours and dates are in it.
    pub timezone: Option<Tz>,
    /// ISO 4217 currency code of all its prices.
    pub currency: String,
    /// Cancellation notice and late fee.
    pub policy: CancellationPolicy,
    /// Weekly opening hours (closed until set).
    pub opening_hours: OpeningHours,
    /// Its resources.
    pub resources: Vec<Resource>,
    /// Its treatments.
    pub treatments: Vec<Treatment>,
    /// Its pricing rules.
    pub pricing: PricingRules,
    /// Its closures.
    pub closures: Vec<Closure>,
}

/// Commands of the `Clinic` aggregate.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum ClinicCommand {
    /// Create the clinic.
    Register {
        /// New id.
        clinic_id: ClinicId,
        /// Display name (non-empty).
        name: String,
        /// IANA timezone name, e.g. `Europe/Berlin`.
        timezone: String,
        /// Three upper-case letters.
        currency: String,
        /// Notice period for free cancellation.
        cancellation_notice_hours: u32,
        /// Late cancellation fee in percent (0..=100).
        late_cancel_fee_percent: i64,
    },
    /// Replace the weekly opening hours.
    SetOpeningHours {
        /// The new hours.
        hours: OpeningHours,
    },
    /// Add a resource.
    AddResource {
        /// New id.
        resource_id: ResourceId,
        /// Unique name.
        name: String,
        /// Kind.
        kind: ResourceKind,
    },
    /// Add a treatment.
    AddTreatment {
        /// New id.
        treatment_id: TreatmentId,
        /// Unique name.
        name: String,
        /// Positive duration.
        duration_minutes: u32,
        /// Buffer after each booking.
        buffer_minutes: u32,
        /// Non-negative base price.
        price: Money,
        /// Kind of resource needed.
        resource_kind: ResourceKind,
    },
    /// Replace the pricing rules.
    SetPricingRules {
        /// The new rules.
        rules: PricingRules,
    },
    /// Close the clinic for a period.
    AddClosure {
        /// New id.
        closure_id: ClosureId,
        /// Start instant.
        start: DateTime<Utc>,
        /// End instant, after start.
        end: DateTime<Utc>,
        /// Why.
        reason: String,
    },
}

/// Events of the `Clinic` aggregate. Variant names are stored event types: frozen.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum ClinicEvent {
    /// The clinic was created.
    ClinicRegistered {
        /// Its id.
        clinic_id: ClinicId,
        /// Name.
        name: String,
        /// IANA timezone name.
        timezone: String,
        /// Currency.
        currency: String,
        /// Cancellation policy.
        policy: CancellationPolicy,
    },
    /// Opening hours were replaced.
    OpeningHoursSet {
        /// New hours.
        hours: OpeningHours,
    },
    /// A resource was added.
    ResourceAdded {
        /// The resource.
        resource: Resource,
    },
    /// A treatment was added.
    TreatmentAdded {
        /// The treatment.
        treatment: Treatment,
    },
    /// Pricing rules were replaced.
    PricingRulesSet {
        /// New rules.
        rules: PricingRules,
    },
    /// A closure was added.
    ClosureAdded {
        /// The closure.
        closure: Closure,
    },
}
