//! The state every handler shares.

use std::sync::Arc;

use clinicbook_commands::Commands;
use metrics_exporter_prometheus::PrometheusHandle;

use crate::auth::AuthKeys;

/// Shared by all handlers; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    /// The use cases.
    pub commands: Commands,
    /// Token verification.
    pub auth: Arc<AuthKeys>,
    /// Renders `/metrics`.
    pub metrics: PrometheusHandle,
    /// `host:port` of NATS, checked by `/readyz` when set.
    pub nats_addr: Option<String>,
}
