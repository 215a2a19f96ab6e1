//! The OpenAPI document (built from the same route list the router uses, so
//! the two cannot drift) and a self-contained page that renders it.

use axum::response::Html;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::Modify;

#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "hawker",
        description = "Backend for livestream commerce: live sessions, real-time rooms, flash deals, \
                       coupon drops, orders and agency commissions. Every error body is \
                       `{\"error\": code, \"message\": text}`.",
    ),
    modifiers(&BearerAuth),
    tags(
        (name = "operations", description = "Health and readiness"),
        (name = "auth", description = "Tokens"),
        (name = "sessions", description = "Live sessions"),
        (name = "agencies", description = "MCN agencies"),
        (name = "commerce", description = "Lineups, pins, flash deals and orders"),
        (name = "agency", description = "Rosters, campaigns and terms, shifts, commissions, statements and live figures"),
        (name = "coupons", description = "Coupon drops and claims"),
        (name = "payments", description = "The payment provider's webhook, refunds and returns"),
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

/// A page that lists every operation of `/openapi.json` with its parameters,
/// bodies and responses. No CDN: it works with only hawker reachable.
pub async fn docs_page() -> Html<&'static str> {
    Html(include_str!("docs_page.html"))
}
