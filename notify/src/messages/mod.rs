//! Patient messages: confirmations, reminders, cancellations,
//! displacements and waitlist offers, by email over SMTP and as SMS texts
//! for the clinic's gateway (`message.sms` webhooks).
//!
//! Like the webhooks, messages are a consumer of the event feed. The
//! [`plan`]ner reads the feed after its cursor (one planner at a time
//! across processes, by a lease) and writes one row per intended message
//! into `messages`, unique per reservation, kind, start and channel, in
//! the transaction that moves its cursor: a message is decided once,
//! whatever restarts. The [`send`]er then claims each queued row, opens
//! the address with the patient's key (an erased patient's row is never
//! sent), renders the [`templates`] and hands the message to the SMTP
//! relay or to the webhooks, retrying failures with backoff up to
//! `max_attempts`. Reminders come from the scheduler of due work: its
//! `ReminderDue` event is what the planner turns into a reminder.
//! The message log ([`log`]) answers `GET /v1/reservations/{id}/messages`.

pub mod log;
pub mod plan;
pub mod send;
pub mod smtp;
pub mod templates;

use std::time::Duration;

pub use clinicbook_wire::messages::{MessageChannel, MessageKind, MessageStatus};

/// How messages are sent.
#[derive(Clone, Debug)]
pub struct MessageConfig {
    /// The SMTP relay (`smtp://host:port`, STARTTLS when the server offers
    /// it; `smtps://` for TLS from the start; `?tls=required` to insist),
    /// none: email messages wait queued.
    pub smtp_url: Option<String>,
    /// The sender address (the clinic's name is its display name).
    pub from: String,
    /// Attempts of one message before it is marked failed.
    pub max_attempts: u32,
    /// The pause after a first failure; doubled after each further one.
    pub base_delay: Duration,
    /// The longest pause between two attempts.
    pub max_delay: Duration,
    /// How often idle workers look for new events and queued messages.
    pub poll: Duration,
    /// Events the planner reads from the feed at a time.
    pub batch: i64,
    /// How long an SMTP conversation may take.
    pub timeout: Duration,
    /// Messages one process sends at once (each sender claims its own).
    pub senders: usize,
}

impl Default for MessageConfig {
    fn default() -> Self {
        Self {
            smtp_url: None,
            from: "no-reply@clinicbook.example".to_owned(),
            max_attempts: 8,
            base_delay: Duration::from_secs(2),
            max_delay: Duration::from_secs(600),
            poll: Duration::from_millis(200),
            batch: 200,
            timeout: Duration::from_secs(20),
            senders: 4,
        }
    }
}

impl MessageConfig {
    /// The pause before the attempt after `failures` failed ones:
    /// exponential, capped, with jitter (between half and all of it).
    #[must_use]
    pub fn backoff(&self, failures: u32) -> Duration {
        let exp = self
            .base_delay
            .saturating_mul(2u32.saturating_pow(failures.saturating_sub(1).min(30)));
        exp.min(self.max_delay).mul_f64(0.5 + fastrand::f64() * 0.5)
    }
}

/// Why the messages could not be planned, sent or listed.
#[derive(Debug, thiserror::Error)]
pub enum MessageError {
    /// The database failed.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// The event store failed (the feed, an aggregate, a patient's key).
    #[error(transparent)]
    Store(#[from] clinicbook_eventstore::StoreError),
    /// A read model failed (availability).
    #[error(transparent)]
    Read(#[from] clinicbook_projections::ProjectionError),
    /// A stored event or row does not decode.
    #[error("cannot decode {what}: {reason}")]
    Decode {
        /// What.
        what: &'static str,
        /// Why.
        reason: String,
    },
    /// A template did not render.
    #[error("template {name}: {reason}")]
    Template {
        /// The template.
        name: String,
        /// Why.
        reason: String,
    },
    /// The message could not be built or handed over (SMTP).
    #[error("sending failed: {0}")]
    Send(String),
}
