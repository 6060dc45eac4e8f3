//! Routes of the booking use cases.

use utoipa_axum::router::OpenApiRouter;

use crate::state::AppState;

/// The booking routes with their OpenAPI descriptions.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
}
