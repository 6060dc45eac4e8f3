//! Requests, answers and views of holds, waitlist offers and clinic
//! settings (API.md, "Holds").

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::booking::{PaymentInput, PriceAnswer};

/// The shortest hold a request may ask for, in seconds.
pub const MIN_TTL_SECONDS: u32 = 30;

/// The longest hold a request may ask for, in seconds.
pub const MAX_TTL_SECONDS: u32 = 3600;

/// `POST /v1/holds`: take a slot for a short time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PlaceHold {
    /// Sent by the client to make a retry safe (a new one otherwise).
    #[serde(default)]
    pub hold_id: Option<Uuid>,
    /// The patient it is held for.
    pub patient_id: Uuid,
    /// The clinic.
    pub clinic_id: Uuid,
    /// A resource of the clinic, of the kind the treatment needs.
    pub resource_id: Uuid,
    /// A treatment of the clinic.
    pub treatment_id: Uuid,
    /// Appointment start.
    #[serde(deserialize_with = "crate::instant::deserialize")]
    #[cfg_attr(feature = "openapi", schema(value_type = crate::schema::Instant))]
    pub start: DateTime<Utc>,
    /// How long the hold lasts, 30 to 3600 seconds; the clinic's
    /// `hold_minutes` when left out.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(minimum = 30, maximum = 3600))]
    pub ttl_seconds: Option<u32>,
    /// A promo code the quoted price includes; redeemed on confirm.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<crate::schema::OptionalPromoCode>))]
    pub promo_code: Option<String>,
}

/// Answer of `POST /v1/holds`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HoldPlaced {
    /// The hold.
    pub hold_id: Uuid,
    /// `held` (a retry answers the hold's status now).
    pub status: String,
    /// The resource held.
    pub resource_id: Uuid,
    /// Appointment start (UTC).
    pub start: DateTime<Utc>,
    /// Appointment end (UTC).
    pub end: DateTime<Utc>,
    /// When the hold runs out (UTC): a confirm from then on is refused.
    pub expires_at: DateTime<Utc>,
    /// The price quoted now; a confirm books at this price.
    pub price: PriceAnswer,
}

/// `POST /v1/holds/{hold_id}/confirm`: book the held slot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ConfirmHold {
    /// How it is paid.
    pub payment: PaymentInput,
    /// The new reservation's id; the hold's id when left out (so a retry
    /// books nothing twice). A waitlist offer books its waitlisted
    /// reservation, which this must then name or leave out.
    #[serde(default)]
    pub reservation_id: Option<Uuid>,
}

/// Answer of `POST /v1/holds/{hold_id}/release`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HoldReleased {
    /// Always `released`.
    pub status: String,
}

/// `PUT /v1/clinics/{clinic_id}/settings`: any of the settings; the others
/// stay.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SettingsInput {
    /// How long a hold lasts when it names no `ttl_seconds`, 1 to 60
    /// minutes (default 10).
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 60))]
    pub hold_minutes: Option<u32>,
    /// `auto_book` (default) or `offer`.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<crate::schema::WaitlistMode>))]
    pub waitlist_mode: Option<String>,
    /// How long a waitlist offer lasts, 5 to 1440 minutes (default 30).
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(minimum = 5, maximum = 1440))]
    pub offer_minutes: Option<u32>,
    /// How long before the start a reminder goes out, 1 to 10080 minutes
    /// (default 1440).
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 10080))]
    pub reminder_minutes_before: Option<u32>,
}

/// Answer of `PUT /v1/clinics/{clinic_id}/settings`: every setting as it
/// now is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SettingsView {
    /// Minutes a hold lasts by default.
    pub hold_minutes: u32,
    /// `auto_book` or `offer`.
    #[cfg_attr(feature = "openapi", schema(value_type = crate::schema::WaitlistMode))]
    pub waitlist_mode: String,
    /// Minutes a waitlist offer lasts.
    pub offer_minutes: u32,
    /// Minutes before the start a reminder goes out.
    pub reminder_minutes_before: u32,
}

/// `GET /v1/holds/{hold_id}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HoldView {
    /// The hold.
    pub hold_id: Uuid,
    /// `held`, `confirmed`, `released` or `expired`.
    #[cfg_attr(feature = "openapi", schema(value_type = crate::schema::HoldStatus))]
    pub status: String,
    /// When it runs out (UTC).
    pub expires_at: DateTime<Utc>,
    /// The reservation it became, once confirmed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reservation_id: Option<Uuid>,
    /// The waitlisted reservation it is offered to, for an offer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub offer_for: Option<Uuid>,
    /// The patient.
    pub patient_id: Uuid,
    /// The clinic.
    pub clinic_id: Uuid,
    /// The resource.
    pub resource_id: Uuid,
    /// The treatment.
    pub treatment_id: Uuid,
    /// Appointment start (UTC).
    pub start: DateTime<Utc>,
    /// Appointment end (UTC).
    pub end: DateTime<Utc>,
    /// The price quoted when held.
    pub price: PriceAnswer,
}

/// An open waitlist offer, as a reservation's view shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Offer {
    /// The hold to confirm.
    pub hold_id: Uuid,
    /// When the offer runs out (UTC).
    pub expires_at: DateTime<Utc>,
}
