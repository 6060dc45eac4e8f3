//! Booking: the requests and answers of the booking use cases and the
//! reservation view the read side answers (API.md, "Staff: book").

use chrono::{DateTime, Utc};
use clinicbook_domain::policy::CancellationOutcome;
use clinicbook_domain::pricing::PriceBreakdown;
use clinicbook_domain::reservation::PaymentMethod;
use clinicbook_domain::PackageId;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// How a reservation is paid, as the API spells it in requests and views:
/// `{"method":"package","package_id":…}`, `{"method":"wallet"}` or
/// `{"method":"at_clinic"}`.
///
/// Deserialised through a flat struct of every payment field, checked
/// against the method: serde ignores unknown fields next to the tag of an
/// internally tagged unit variant, and a `package_id` silently dropped
/// from a wallet payment would take the patient's money instead of a
/// session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    tag = "method",
    rename_all = "snake_case",
    deny_unknown_fields,
    try_from = "PaymentFields"
)]
pub enum PaymentInput {
    /// One session of the patient's package.
    Package {
        /// The package to take the session from.
        package_id: Uuid,
    },
    /// The total is debited from the patient's wallet when booking.
    Wallet,
    /// The patient pays at the clinic on the day.
    AtClinic,
}

/// The schema says what [`PaymentFields`] takes: one object per method,
/// `package_id` required for a package and absent (or null) otherwise,
/// nothing else.
#[cfg(feature = "openapi")]
mod payment_schema {
    use utoipa::openapi::schema::{
        KnownFormat, ObjectBuilder, OneOfBuilder, Schema, SchemaFormat, Type,
    };
    use utoipa::openapi::RefOr;

    /// The methods and whether each carries a `package_id`.
    pub(super) const METHODS: [(&str, bool); 3] =
        [("package", true), ("wallet", false), ("at_clinic", false)];

    impl utoipa::PartialSchema for super::PaymentInput {
        fn schema() -> RefOr<Schema> {
            let mut one_of = OneOfBuilder::new().description(Some(
                "How it is paid: `{\"method\":\"package\",\"package_id\":…}`, `{\"method\":\"wallet\"}` or `{\"method\":\"at_clinic\"}`.",
            ));
            for (method, with_package) in METHODS {
                let package_id = if with_package {
                    ObjectBuilder::new()
                        .schema_type(Type::String)
                        .format(Some(SchemaFormat::KnownFormat(KnownFormat::Uuid)))
                        .description(Some("The package to take the session from."))
                } else {
                    ObjectBuilder::new().schema_type(Type::Null)
                };
                let mut object = ObjectBuilder::new()
                    .schema_type(Type::Object)
                    .property(
                        "method",
                        ObjectBuilder::new()
                            .schema_type(Type::String)
                            .enum_values(Some([method])),
                    )
                    .property("package_id", package_id)
                    .required("method")
                    .additional_properties(Some(
                        utoipa::openapi::schema::AdditionalProperties::FreeForm(false),
                    ));
                if with_package {
                    object = object.required("package_id");
                }
                one_of = one_of.item(object);
            }
            one_of.into()
        }
    }

    impl utoipa::ToSchema for super::PaymentInput {}
}

/// The fields a payment may have, all checked against its method.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PaymentFields {
    method: MethodName,
    #[serde(default)]
    package_id: Option<Uuid>,
}

/// The payment methods' API names.
#[derive(Deserialize)]
#[serde(rename_all = "snake_case")]
enum MethodName {
    Package,
    Wallet,
    AtClinic,
}

impl TryFrom<PaymentFields> for PaymentInput {
    type Error = &'static str;

    fn try_from(fields: PaymentFields) -> Result<Self, Self::Error> {
        match (fields.method, fields.package_id) {
            (MethodName::Package, Some(package_id)) => Ok(PaymentInput::Package { package_id }),
            (MethodName::Package, None) => Err("missing field `package_id`"),
            (MethodName::Wallet, None) => Ok(PaymentInput::Wallet),
            (MethodName::AtClinic, None) => Ok(PaymentInput::AtClinic),
            (MethodName::Wallet | MethodName::AtClinic, Some(_)) => {
                Err("unknown field `package_id`: only a package payment has one")
            }
        }
    }
}

impl From<PaymentInput> for PaymentMethod {
    fn from(input: PaymentInput) -> Self {
        match input {
            PaymentInput::Package { package_id } => PaymentMethod::Package {
                package_id: PackageId(package_id),
            },
            PaymentInput::Wallet => PaymentMethod::Wallet,
            PaymentInput::AtClinic => PaymentMethod::AtClinic,
        }
    }
}

impl From<PaymentMethod> for PaymentInput {
    fn from(method: PaymentMethod) -> Self {
        match method {
            PaymentMethod::Package { package_id } => PaymentInput::Package {
                package_id: package_id.0,
            },
            PaymentMethod::Wallet => PaymentInput::Wallet,
            PaymentMethod::AtClinic => PaymentInput::AtClinic,
        }
    }
}

/// A price breakdown in cents of the clinic's currency:
/// `total = base + adjustments - discount`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PriceAnswer {
    /// The treatment's base price.
    pub base_cents: i64,
    /// Pricing rules: peak surcharges (positive), off-peak and last-minute
    /// discounts (negative).
    pub adjustments_cents: i64,
    /// What the promo code takes off.
    pub discount_cents: i64,
    /// What the patient pays.
    pub total_cents: i64,
}

impl From<PriceBreakdown> for PriceAnswer {
    fn from(price: PriceBreakdown) -> Self {
        Self {
            base_cents: price.base.cents(),
            adjustments_cents: price.adjustments.cents(),
            discount_cents: price.discount.cents(),
            total_cents: price.total.cents(),
        }
    }
}

/// `POST /v1/reservations`: book a treatment on a resource.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BookTreatment {
    /// Sent by the client to make a retry safe (a new one otherwise); the id
    /// of a waitlist entry books that entry.
    #[serde(default)]
    pub reservation_id: Option<Uuid>,
    /// The patient (also the id of their wallet).
    pub patient_id: Uuid,
    /// The clinic.
    pub clinic_id: Uuid,
    /// A resource of the clinic, of the kind the treatment needs.
    pub resource_id: Uuid,
    /// A treatment of the clinic.
    pub treatment_id: Uuid,
    /// Appointment start; it ends `duration_minutes` later, the same
    /// clinic-local day.
    #[serde(deserialize_with = "crate::instant::deserialize")]
    #[cfg_attr(feature = "openapi", schema(value_type = crate::schema::Instant))]
    pub start: DateTime<Utc>,
    /// How it is paid.
    pub payment: PaymentInput,
    /// A promo code to redeem (any case; surrounding blanks are ignored).
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<crate::schema::OptionalPromoCode>))]
    pub promo_code: Option<String>,
}

/// A reservation holding a slot: the answer of booking and rescheduling.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Booked {
    /// The reservation.
    pub reservation_id: Uuid,
    /// Always `booked`.
    pub status: String,
    /// The resource it is booked on.
    pub resource_id: Uuid,
    /// Appointment start (UTC).
    pub start: DateTime<Utc>,
    /// Appointment end (UTC); the resource stays busy for the treatment's
    /// buffer after it.
    pub end: DateTime<Utc>,
    /// The price as booked (a reschedule keeps it).
    pub price: PriceAnswer,
}

/// `POST /v1/reservations/{id}/reschedule`: move a booking.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Reschedule {
    /// The new start.
    #[serde(deserialize_with = "crate::instant::deserialize")]
    #[cfg_attr(feature = "openapi", schema(value_type = crate::schema::Instant))]
    pub start: DateTime<Utc>,
    /// Another resource of the same kind; the current one if left out.
    #[serde(default)]
    pub resource_id: Option<Uuid>,
}

/// `POST /v1/reservations/{id}/cancel`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Cancel {
    /// Why it is cancelled (kept in the history).
    #[cfg_attr(feature = "openapi", schema(value_type = crate::schema::Text))]
    pub reason: String,
}

/// What a cancellation settled under the clinic's policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Cancelled {
    /// The reservation.
    pub reservation_id: Uuid,
    /// Always `cancelled`.
    pub status: String,
    /// Credited back to the wallet (wallet payments).
    pub refund_cents: i64,
    /// Kept from a wallet payment, or owed for an at-clinic one.
    pub fee_cents: i64,
    /// The package session was given back.
    pub session_restored: bool,
    /// Cancelled with less notice than the clinic's policy asks for.
    pub late: bool,
}

/// The new status of a reservation after check-in, completion or no-show.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct StatusChanged {
    /// The reservation.
    pub reservation_id: Uuid,
    /// `checked_in`, `completed` or `no_show`.
    pub status: String,
}

/// `POST /v1/waitlist`: wait for a slot of a treatment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct JoinWaitlist {
    /// Sent by the client to make a retry safe (a new one otherwise).
    #[serde(default)]
    pub reservation_id: Option<Uuid>,
    /// The patient.
    pub patient_id: Uuid,
    /// The clinic.
    pub clinic_id: Uuid,
    /// A treatment of the clinic.
    pub treatment_id: Uuid,
    /// Earliest acceptable start.
    #[serde(deserialize_with = "crate::instant::deserialize")]
    #[cfg_attr(feature = "openapi", schema(value_type = crate::schema::Instant))]
    pub earliest: DateTime<Utc>,
    /// Latest acceptable start (in the future, not before `earliest`).
    #[serde(deserialize_with = "crate::instant::deserialize")]
    #[cfg_attr(feature = "openapi", schema(value_type = crate::schema::Instant))]
    pub latest: DateTime<Utc>,
    /// How it will be paid once booked (nothing is taken now).
    pub payment: PaymentInput,
}

/// A waitlist entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Waitlisted {
    /// The entry (a reservation in status `waitlisted`).
    pub reservation_id: Uuid,
    /// Always `waitlisted`.
    pub status: String,
}

/// `POST /v1/resources/{resource_id}/blocks`: make a resource unbookable.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AddBlock {
    /// Start of the blocked time.
    #[serde(deserialize_with = "crate::instant::deserialize")]
    #[cfg_attr(feature = "openapi", schema(value_type = crate::schema::Instant))]
    pub start: DateTime<Utc>,
    /// End of the blocked time (exclusive).
    #[serde(deserialize_with = "crate::instant::deserialize")]
    #[cfg_attr(feature = "openapi", schema(value_type = crate::schema::Instant))]
    pub end: DateTime<Utc>,
    /// Why (shown in the schedule).
    #[cfg_attr(feature = "openapi", schema(value_type = crate::schema::Text))]
    pub reason: String,
    /// Displace the bookings it overlaps (their payment is given back)
    /// instead of being refused with `slot_unavailable`.
    pub emergency: bool,
}

/// A block that was placed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BlockAdded {
    /// The block (the same id on every day it covers).
    pub block_id: Uuid,
    /// Reservations it displaced, in start order.
    pub displaced: Vec<Uuid>,
}

/// `POST /v1/clinics/{clinic_id}/closures`: close the whole clinic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AddClosure {
    /// Start of the closure.
    #[serde(deserialize_with = "crate::instant::deserialize")]
    #[cfg_attr(feature = "openapi", schema(value_type = crate::schema::Instant))]
    pub start: DateTime<Utc>,
    /// End of the closure (exclusive).
    #[serde(deserialize_with = "crate::instant::deserialize")]
    #[cfg_attr(feature = "openapi", schema(value_type = crate::schema::Instant))]
    pub end: DateTime<Utc>,
    /// Why.
    #[cfg_attr(feature = "openapi", schema(value_type = crate::schema::Text))]
    pub reason: String,
}

/// A closure that was added.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ClosureAdded {
    /// The closure (also the block id on every resource's calendars).
    pub closure_id: Uuid,
    /// Reservations it displaced, in start order.
    pub displaced: Vec<Uuid>,
}

/// `GET /v1/quotes`: what a booking would cost, without booking.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema, utoipa::IntoParams))]
#[cfg_attr(feature = "openapi", into_params(parameter_in = Query))]
pub struct QuoteQuery {
    /// The clinic.
    pub clinic_id: Uuid,
    /// A treatment of the clinic.
    pub treatment_id: Uuid,
    /// Appointment start.
    #[serde(deserialize_with = "crate::instant::deserialize")]
    #[cfg_attr(feature = "openapi", schema(value_type = crate::schema::Instant))]
    #[cfg_attr(feature = "openapi", param(value_type = crate::schema::Instant))]
    pub start: DateTime<Utc>,
    /// A promo code to apply.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<crate::schema::OptionalPromoCode>))]
    #[cfg_attr(feature = "openapi", param(value_type = Option<crate::schema::OptionalPromoCode>))]
    pub promo_code: Option<String>,
    /// The patient, to check the promo code's per-patient limit.
    #[serde(default)]
    pub patient_id: Option<Uuid>,
}

/// What a cancellation, no-show or displacement settled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Settlement {
    /// Less notice than the policy asks for (always for a no-show).
    pub late: bool,
    /// Credited back to the wallet.
    pub refund_cents: i64,
    /// Kept from a wallet payment, or owed for an at-clinic one.
    pub fee_cents: i64,
    /// The package session was given back.
    pub session_restored: bool,
}

impl From<CancellationOutcome> for Settlement {
    fn from(outcome: CancellationOutcome) -> Self {
        Self {
            late: outcome.late,
            refund_cents: outcome.refund.cents(),
            fee_cents: outcome.fee.cents(),
            session_restored: outcome.session_restored,
        }
    }
}

/// One step of a reservation's history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct StatusEntry {
    /// The status after the event.
    pub status: String,
    /// When it happened: the time the event records (booked, cancelled,
    /// checked in, ...), else the time it was stored.
    pub at: DateTime<Utc>,
    /// The stored event type, e.g. `ReservationRescheduled`.
    pub event_type: String,
    /// The event's sequence in the reservation's stream.
    pub sequence: i64,
}

/// `GET /v1/reservations/{id}`: a reservation with its status history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ReservationView {
    /// The reservation.
    pub reservation_id: Uuid,
    /// Current status.
    pub status: String,
    /// The patient.
    pub patient_id: Uuid,
    /// The clinic.
    pub clinic_id: Uuid,
    /// The resource (none for a waitlist entry).
    pub resource_id: Option<Uuid>,
    /// The treatment.
    pub treatment_id: Uuid,
    /// Appointment start (none for a waitlist entry).
    pub start: Option<DateTime<Utc>>,
    /// Appointment end (none for a waitlist entry).
    pub end: Option<DateTime<Utc>>,
    /// Earliest wanted start of a waitlist entry.
    pub earliest: Option<DateTime<Utc>>,
    /// Latest wanted start of a waitlist entry.
    pub latest: Option<DateTime<Utc>>,
    /// The price as booked (none while waitlisted).
    pub price: Option<PriceAnswer>,
    /// How it is paid.
    pub payment: PaymentInput,
    /// The promo code redeemed for it.
    pub promo_code: Option<String>,
    /// What its cancellation, no-show or displacement settled.
    pub settlement: Option<Settlement>,
    /// Every change, oldest first.
    pub history: Vec<StatusEntry>,
    /// The open waitlist offer (`waitlist_mode: offer`): the hold to
    /// confirm and when it runs out. Only while waitlisted with one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offer: Option<crate::holds::Offer>,
}

#[cfg(all(test, feature = "openapi"))]
mod tests {
    use super::payment_schema::METHODS;
    use super::PaymentInput;

    #[test]
    fn the_payment_schema_lists_the_methods_serde_takes() {
        for (method, with_package) in METHODS {
            let mut body = serde_json::json!({ "method": method });
            if with_package {
                body["package_id"] = serde_json::json!(uuid::Uuid::nil());
            }
            let payment: PaymentInput =
                serde_json::from_value(body.clone()).unwrap_or_else(|e| panic!("{body}: {e}"));
            assert_eq!(serde_json::to_value(payment).ok(), Some(body));
            // `package_id: null` is no package_id.
            if !with_package {
                let null = serde_json::json!({ "method": method, "package_id": null });
                assert!(serde_json::from_value::<PaymentInput>(null).is_ok());
            }
        }
        for payment in [
            PaymentInput::Package {
                package_id: uuid::Uuid::nil(),
            },
            PaymentInput::Wallet,
            PaymentInput::AtClinic,
        ] {
            let json = serde_json::to_value(payment).unwrap_or_default();
            assert!(METHODS.iter().any(|(m, _)| json["method"] == *m), "{json}");
        }
    }
}
