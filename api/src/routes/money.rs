//! Routes of the money use cases.

use utoipa_axum::router::OpenApiRouter;

use crate::state::AppState;

/// The money routes with their OpenAPI descriptions.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
}
