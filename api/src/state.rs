//! The state every handler shares.

use std::sync::Arc;

use clinicbook_commands::Commands;
use clinicbook_eventstore::audit::Audit;
use clinicbook_eventstore::checkpoint::AuditKey;
use clinicbook_projections::ReadModels;
use metrics_exporter_prometheus::PrometheusHandle;

use crate::auth::AuthKeys;

/// Shared by all handlers; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    /// The use cases.
    pub commands: Commands,
    /// The read models read routes answer from.
    pub read: ReadModels,
    /// The audit and ops reads of the event store (streams, feed, chain
    /// verification, checkpoints): the API holds no pool.
    pub audit: Audit,
    /// Token verification.
    pub auth: Arc<AuthKeys>,
    /// Renders `/metrics`.
    pub metrics: PrometheusHandle,
    /// `host:port` of NATS, checked by `/readyz` when set.
    pub nats_addr: Option<String>,
    /// Signs audit checkpoints; only its public half is ever answered.
    pub audit_key: Arc<AuditKey>,
    /// Webhook subscriptions and their deliveries.
    pub webhooks: clinicbook_notify::Webhooks,
    /// The patients' message log.
    pub messages: clinicbook_notify::messages::log::Messages,
    /// The SMTP relay email messages go to (its state for `/readyz`).
    pub smtp: clinicbook_notify::messages::smtp::Relay,
    /// What `/readyz` last measured.
    pub readiness: Arc<crate::ops::ReadinessCache>,
}
