//! The OpenAPI document: routes register themselves through utoipa-axum,
//! this adds the title, the bearer scheme and the shared schemas.

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::error::Problem;

/// The base document.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "clinicbook",
        version = "1",
        description = "Event-sourced booking engine for multi-branch clinics. All errors are application/problem+json."
    ),
    components(schemas(Problem)),
    modifiers(&BearerAuth),
    security(("bearer" = [])),
    tags(
        (name = "admin", description = "Clinics and catalog (role admin)"),
        (name = "staff", description = "Booking, wallets and packages (role staff)"),
        (name = "analysts", description = "Read models: schedules, availability, dashboard and reports (role analyst; staff may read schedule and availability). Every read takes ?min_position=N"),
        (name = "audit", description = "History, as-of state, hash-chain verification and signed checkpoints (role auditor)"),
        (name = "operations", description = "Health, readiness and metrics (no token)")
    )
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
    }
}
