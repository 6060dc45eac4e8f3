//! Webhooks of clinicbook: subscriptions, and their deliveries, driven
//! from the committed event feed by a Postgres-checkpointed worker per
//! subscription (at least once, in feed order per subscription, each
//! signed with HMAC-SHA256), retried with exponential backoff and jitter
//! for 24 hours, then dead-lettered.
//!
//! It reads the event store's feed and owns its own tables
//! (`webhooks`, `webhook_cursors`, `webhook_deliveries`); it depends on
//! the event store only and knows nothing of HTTP routing. Nothing on the
//! write path waits for a receiver.

pub mod names;
pub mod sign;
pub mod subscriptions;
pub mod worker;

pub use subscriptions::{WebhookError, Webhooks};
pub use worker::DeliveryConfig;
