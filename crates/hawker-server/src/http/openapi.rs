//! The OpenAPI document (built from the same route list the router uses, so
//! the two cannot drift) and a self-contained page that renders it.

use axum::response::Html;
use utoipa::openapi::header::{Header, HeaderBuilder};
use utoipa::openapi::path::{Operation, Parameter, ParameterIn};
use utoipa::openapi::response::ResponseBuilder;
use utoipa::openapi::schema::{
    AllOfBuilder, KnownFormat, Object, ObjectBuilder, OneOfBuilder, Schema, SchemaFormat, Type,
};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{Content, OpenApi, Ref, RefOr};
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
        (name = "auctions", description = "Live auctions: start, bid (exact or maximum), the public bid log, void, second-chance offers"),
        (name = "giveaways", description = "Provably fair giveaways: start, enter, the frozen entry list, void"),
        (name = "group buys", description = "Group buys: price tiers by participants, join with a quantity, settled at the final tier's price"),
        (name = "comment-to-buy", description = "Keyword orders typed in chat (\"SOLD 7\"): the session's setting"),
        (name = "catalog", description = "Brand catalogs (products, SKUs, stock movements, import) and campaigns' SKUs, floors and allocations"),
        (name = "calendar", description = "The schedule as iCalendar feeds behind secret, revocable URLs"),
        (name = "payments", description = "The payment provider's webhook, refunds and returns"),
        (name = "reports", description = "Brand reports: sales per product, session, host or agency, returns netted, as JSON or CSV"),
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

/// What every route gets by convention, put in the document here once, so
/// that no route's annotation can forget it (issue #10: 400 was missing on
/// routes with path parameters):
///
/// - an operation with a path parameter answers 400 `bad_path` (an id that
///   is not a UUID), one with query parameters 400 `bad_query`, one with a
///   request body 400 `bad_json`: each is added to the operation's 400 (or
///   a 400 is added) unless its description already names the code;
/// - every 429 and 503 carries `Retry-After` (seconds), as the server sends;
/// - the bounds of the request types that live in files owned elsewhere
///   ([`REQUEST_BOUNDS`]).
pub fn complete(doc: &mut OpenApi) {
    for item in doc.paths.paths.values_mut() {
        let shared = item.parameters.clone().unwrap_or_default();
        for operation in [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.patch,
        ]
        .into_iter()
        .flatten()
        {
            let parameters: Vec<&Parameter> = shared
                .iter()
                .chain(operation.parameters.iter().flatten())
                .collect();
            let has = |place: &ParameterIn| parameters.iter().any(|p| &p.parameter_in == place);
            let mut codes = Vec::new();
            if has(&ParameterIn::Path) {
                codes.push((
                    "bad_path",
                    "a path parameter does not parse (e.g. an id that is not a UUID)",
                ));
            }
            if has(&ParameterIn::Query) {
                codes.push(("bad_query", "the query string does not parse"));
            }
            if operation.request_body.is_some() {
                codes.push(("bad_json", "the body is not JSON of the documented shape"));
            }
            for (code, why) in codes {
                add_bad_request(operation, code, why);
            }
            for (status, response) in operation.responses.responses.iter_mut() {
                if status == "429" || status == "503" {
                    if let RefOr::T(response) = response {
                        response
                            .headers
                            .entry("Retry-After".to_string())
                            .or_insert_with(retry_after_header);
                    }
                }
            }
        }
    }
    if let Some(components) = doc.components.as_mut() {
        for (schema, property, bounds) in REQUEST_BOUNDS {
            let Some(RefOr::T(Schema::Object(object))) = components.schemas.get_mut(*schema) else {
                panic!("REQUEST_BOUNDS names the schema {schema}, which the document lacks");
            };
            let Some(RefOr::T(Schema::Object(field))) = object.properties.get_mut(*property) else {
                panic!("REQUEST_BOUNDS names {schema}.{property}, which the document lacks");
            };
            bounds.apply(field);
        }
        for (schema, fields) in EXACTLY_ONE_OF {
            let Some(entry) = components.schemas.get_mut(*schema) else {
                panic!("EXACTLY_ONE_OF names the schema {schema}, which the document lacks");
            };
            *entry = exactly_one_of(entry.clone(), fields);
        }
    }
}

/// Request types that need exactly one of two optional fields (not null),
/// as the server checks (e.g. a giveaway's prize is a lineup item or a
/// coupon drop). The document states it as `allOf: [<the type>, oneOf: [{the
/// first, a string, required}, {the second, a string, required}]]`: exactly
/// one branch holds when exactly one of the two is given.
pub const EXACTLY_ONE_OF: &[(&str, [&str; 2])] = &[("NewGiveaway", ["lineup_item_id", "coupon_drop_id"])];

fn exactly_one_of(schema: RefOr<Schema>, fields: &[&str; 2]) -> RefOr<Schema> {
    let branch = |field: &str| {
        ObjectBuilder::new()
            .property(
                field,
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .format(Some(SchemaFormat::KnownFormat(KnownFormat::Uuid))),
            )
            .required(field)
    };
    let one_of = OneOfBuilder::new()
        .item(branch(fields[0]))
        .item(branch(fields[1]));
    AllOfBuilder::new().item(schema).item(one_of).into()
}

/// Adds `code` to the operation's 400, creating the 400 if it has none.
fn add_bad_request(operation: &mut Operation, code: &str, why: &str) {
    let responses = &mut operation.responses.responses;
    match responses.get_mut("400") {
        Some(RefOr::T(response)) => {
            if !response.description.contains(code) {
                response.description = format!("{}; {code}", response.description.trim_end_matches('.'));
            }
        }
        Some(RefOr::Ref(_)) => {}
        None => {
            let response = ResponseBuilder::new()
                .description(format!("{code}: {why}"))
                .content(
                    "application/json",
                    Content::new(Some(Ref::from_schema_name("ErrorBody"))),
                )
                .build();
            responses.insert("400".to_string(), RefOr::T(response));
        }
    }
}

fn retry_after_header() -> Header {
    HeaderBuilder::new()
        .schema(
            ObjectBuilder::new()
                .schema_type(Type::Integer)
                .format(Some(SchemaFormat::KnownFormat(KnownFormat::Int64)))
                .minimum(Some(0)),
        )
        .description(Some("seconds to wait before retrying"))
        .build()
}

/// Bounds of one request field, as the docs state them and the server checks.
#[derive(Debug, Clone, Copy, Default)]
pub struct Bounds {
    pub minimum: Option<i64>,
    pub maximum: Option<i64>,
}

impl Bounds {
    const fn range(minimum: i64, maximum: i64) -> Self {
        Bounds {
            minimum: Some(minimum),
            maximum: Some(maximum),
        }
    }

    fn apply(&self, field: &mut Object) {
        if let Some(minimum) = self.minimum {
            field.minimum = Some((minimum as isize).into());
        }
        if let Some(maximum) = self.maximum {
            field.maximum = Some((maximum as isize).into());
        }
    }
}

/// The bounds of request types defined in `hawker-commerce`'s `deals.rs` and
/// `purchase/entry.rs`, stated in `docs/api.md` and checked by the server.
/// (The other request types carry theirs as `#[schema(...)]` attributes.)
/// `complete` panics if one names a field the document lacks, and the test
/// `the_openapi_document_states_the_documented_bounds` builds the document.
pub const REQUEST_BOUNDS: &[(&str, &str, Bounds)] = &[
    ("NewLineupItem", "link_number", Bounds::range(1, 9999)),
    ("NewDeal", "link_number", Bounds::range(1, 9999)),
    (
        "NewDeal",
        "price_minor",
        Bounds::range(1, hawker_commerce::config::DEFAULT_MAX_PRICE_MINOR),
    ),
    ("NewDeal", "quantity", Bounds::range(1, 1_000_000)),
    ("NewDeal", "per_buyer_cap", Bounds::range(1, 1_000_000)),
    ("NewDeal", "countdown_secs", Bounds::range(0, 300)),
    ("NewDeal", "duration_secs", Bounds::range(60, 1200)),
    ("PlaceOrder", "quantity", Bounds::range(1, 100)),
];
