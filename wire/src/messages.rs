//! Patient messages (`GET /v1/reservations/{id}/messages`): the message
//! log of a reservation. Each name (kind, channel, status) is written once:
//! serde's and strum's `snake_case` renames give the stored, the JSON and
//! the OpenAPI spelling alike.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Derives every spelling of a message enum from its variant names.
macro_rules! message_enum {
    ($(#[$meta:meta])* pub enum $name:ident { $($(#[$vmeta:meta])* $variant:ident,)+ }) => {
        $(#[$meta])*
        #[derive(
            Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize,
            strum::IntoStaticStr, strum::EnumString, strum::VariantNames,
        )]
        #[serde(rename_all = "snake_case")]
        #[strum(serialize_all = "snake_case")]
        #[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
        pub enum $name { $($(#[$vmeta])* $variant,)+ }

        impl $name {
            /// The stored and JSON name.
            #[must_use]
            pub fn as_str(self) -> &'static str {
                self.into()
            }
        }
    };
}

message_enum! {
    /// Why a message is sent.
    pub enum MessageKind {
        /// The booking was made.
        Confirmation,
        /// The appointment is near (`reminder_minutes_before` its start).
        Reminder,
        /// The booking was cancelled.
        Cancellation,
        /// A block or closure took the slot; the next free starts are offered.
        Displacement,
        /// A freed slot is held for the waitlisted patient for a while.
        WaitlistOffer,
    }
}

message_enum! {
    /// How a message goes out.
    pub enum MessageChannel {
        /// Email over SMTP.
        Email,
        /// An SMS text, handed to the clinic's gateway as a `message.sms` webhook.
        Sms,
    }
}

message_enum! {
    /// Where a message stands.
    pub enum MessageStatus {
        /// Written, not sent yet (or being retried).
        Queued,
        /// Accepted by the SMTP relay (or queued for the SMS gateway's webhooks).
        Sent,
        /// Every attempt failed (`CLINICBOOK_MESSAGE_MAX_ATTEMPTS`).
        Failed,
        /// Not sent: the patient's data was erased first.
        Erased,
    }
}

/// One message of a reservation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MessageView {
    /// Why it was sent.
    pub kind: MessageKind,
    /// How.
    pub channel: MessageChannel,
    /// The address or phone number, or `"[erased]"` after erasure.
    pub to: String,
    /// The language it is written in (`en`, `de`).
    pub language: String,
    /// When it was accepted for delivery.
    pub sent_at: Option<DateTime<Utc>>,
    /// Where it stands.
    pub status: MessageStatus,
    /// Attempts to hand it over so far.
    pub attempts: i32,
}

/// Answer of `GET /v1/reservations/{id}/messages`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MessageList {
    /// The reservation's messages, oldest first.
    pub messages: Vec<MessageView>,
}
