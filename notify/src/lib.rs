//! Webhooks of clinicbook: subscriptions, and their deliveries, driven
//! from the committed event feed by a Postgres-checkpointed worker per
//! subscription (at least once, in feed order per subscription, each
//! signed with HMAC-SHA256), retried with exponential backoff and jitter
//! for 24 hours, then dead-lettered.
//!
//! Patient messages ([`messages`]) are a consumer of the same feed: one
//! row per intended message, written before it is sent, sent by email over
//! SMTP or handed to the clinic's SMS gateway as `message.sms` webhooks.
//!
//! It reads the event store's feed (and the availability read model, for
//! the free starts a displacement offers) and owns its own tables
//! (`webhooks`, `webhook_cursors`, `webhook_deliveries`, `messages`,
//! `message_cursor`); it knows nothing of HTTP routing. Nothing on the
//! write path waits for a receiver or an SMTP relay.

pub mod messages;
pub mod names;
pub mod sign;
pub mod subscriptions;
pub mod worker;

pub use subscriptions::{WebhookError, Webhooks};
pub use worker::DeliveryConfig;
