//! The OpenAPI document: routes register themselves through utoipa-axum,
//! this adds the title, the bearer scheme, the shared schemas and the one
//! rule a derive cannot state (a promo code takes `percent_off` or
//! `amount_off_cents`, exactly one).

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use clinicbook_wire::schema;

use crate::error::Problem;
use crate::routes::audit::AggregateTypeName;

/// The base document.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "clinicbook",
        version = "1",
        description = "Event-sourced booking engine for multi-branch clinics. All errors are application/problem+json."
    ),
    components(schemas(
        Problem,
        // Named only by parameters, which do not register their schemas.
        AggregateTypeName,
        schema::Instant,
        schema::Text,
        schema::PromoCode,
        schema::OptionalPromoCode
    )),
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

/// The whole document once every route is in: the rules the derives
/// cannot state are added.
pub fn finish(mut doc: utoipa::openapi::OpenApi) -> utoipa::openapi::OpenApi {
    OneDiscount.modify(&mut doc);
    ClosedVariants(&["PackagePayment"]).modify(&mut doc);
    doc
}

/// Internally tagged input enums whose variants refuse unknown fields
/// (serde's `deny_unknown_fields`): the derive leaves each variant's object
/// open, this closes it.
struct ClosedVariants(&'static [&'static str]);

impl Modify for ClosedVariants {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::schema::{AdditionalProperties, Schema};
        use utoipa::openapi::RefOr;
        let Some(components) = openapi.components.as_mut() else {
            return;
        };
        for name in self.0 {
            if let Some(RefOr::T(Schema::OneOf(one_of))) = components.schemas.get_mut(*name) {
                for item in &mut one_of.items {
                    if let RefOr::T(Schema::Object(object)) = item {
                        object.additional_properties =
                            Some(Box::new(AdditionalProperties::FreeForm(false)));
                    }
                }
            }
        }
    }
}

/// `CreatePromoCode` takes exactly one of `percent_off` and
/// `amount_off_cents` (each may also be sent as `null`, which is none).
struct OneDiscount;

impl Modify for OneDiscount {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::schema::{AllOfBuilder, ObjectBuilder, OneOfBuilder, Schema, Type};
        use utoipa::openapi::RefOr;
        let Some(components) = openapi.components.as_mut() else {
            return;
        };
        let Some(promo) = components.schemas.remove("CreatePromoCode") else {
            return;
        };
        let given = |field: &str| {
            ObjectBuilder::new()
                .property(field, ObjectBuilder::new().schema_type(Type::Integer))
                .required(field)
        };
        let one_of = OneOfBuilder::new()
            .item(given("percent_off"))
            .item(given("amount_off_cents"));
        let strict = AllOfBuilder::new().item(promo).item(one_of).build();
        components.schemas.insert(
            "CreatePromoCode".to_string(),
            RefOr::T(Schema::AllOf(strict)),
        );
    }
}
