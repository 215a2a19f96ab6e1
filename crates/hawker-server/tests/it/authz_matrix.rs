//! The authorization matrix (issue 11): every HTTP route of the OpenAPI
//! document and every socket command, tried by every role against one world
//! on a real node (real Postgres and Redis), outsiders included: a host on
//! another agency's roster, another agency, another brand.
//!
//! The expected outcomes live in two tables, [`HTTP`] and [`SOCKET`], one
//! line per route or command and one outcome per role in the order of
//! [`ROLES`]. `docs/api.md` ("Authorization matrix") shows the same tables,
//! rendered from these: `the_docs_show_the_authorization_matrix` fails, and
//! prints the expected markdown, when the two differ.
//!
//! Outcomes: `ok` is allowed (2xx, 101 for the socket route, or a 409 state
//! conflict: the request got past authorization); `401` is no token; `403`
//! refused; `404` refused as if the resource did not exist (where its
//! existence is private to those who may see it). On the socket, `ok` is an
//! `ack`, `403` an `error` frame with code `forbidden`, and `401` the
//! handshake refused.
//!
//! **Adding a route or a command** (`every_route_and_command_has_a_row`
//! fails until you do, and when a row names something that does not exist):
//! - a route: a line in [`HTTP`], `"METHOD /path"` exactly as in the OpenAPI
//!   document. A route whose path parameters are the world's
//!   (`{session_id}`, `{agency_id}`, `{host_id}`, `{deal_id}`, `{order_id}`,
//!   `{coupon_drop_id}`, `{giveaway_id}`, `{group_buy_id}`, `{campaign_id}`, `{link_number}`, `{brand_id}`,
//!   `{product_id}`, `{sku_id}`, `{user}`) and that needs no
//!   body needs nothing else. Otherwise add an arm to [`request`] that builds
//!   a request valid in every way but who sends it, with fresh resources
//!   where a second call would conflict (each cell is sent once per role).
//! - a command: a line in [`SOCKET`] and its `data` in [`command_data`].
//! - then rewrite the docs' tables from the test's:
//!   `AUTHZ_MATRIX_WRITE_DOCS=1 cargo test -p hawker-server --test it -- authz_matrix::the_docs`.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicI64, Ordering};

use chrono::Utc;
use futures_util::StreamExt;
use hawker_core::{Claims, Role};
use reqwest::Method;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite;
use uuid::Uuid;

use crate::agency::{book, id, invite, iso, now, roster_host, schedule};
use crate::support::fixtures::{insert_agency, insert_brand_with_sku};
use crate::support::socket::{self, Ws};
use crate::support::{answer, settings_with, spawn_app_with, TestApp};

// ------------------------------------------------------------------ the tables

/// Who tries. Tokens carry distinct subjects, so per-user limits never meet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Who {
    /// No token.
    Anonymous,
    /// A viewer: the buyer of the world's order.
    Viewer,
    /// A viewer the session's host appointed moderator in its room.
    Moderator,
    /// A host on the agency's roster, scheduled in the session.
    Host,
    /// A host on the agency's roster, not scheduled in the session.
    RosterHost,
    /// A host on another agency's roster.
    OtherHost,
    /// The session's agency.
    Agency,
    /// Another agency.
    OtherAgency,
    /// The brand of the session's campaign and of its products.
    Brand,
    /// Another brand.
    OtherBrand,
    Admin,
}

/// The columns of the tables, in order.
const ROLES: [Who; 11] = [
    Who::Anonymous,
    Who::Viewer,
    Who::Moderator,
    Who::Host,
    Who::RosterHost,
    Who::OtherHost,
    Who::Agency,
    Who::OtherAgency,
    Who::Brand,
    Who::OtherBrand,
    Who::Admin,
];

impl Who {
    /// The column's heading in `docs/api.md`.
    fn column(self) -> &'static str {
        match self {
            Who::Anonymous => "anonymous",
            Who::Viewer => "viewer",
            Who::Moderator => "moderator",
            Who::Host => "host",
            Who::RosterHost => "roster host",
            Who::OtherHost => "other host",
            Who::Agency => "agency",
            Who::OtherAgency => "other agency",
            Who::Brand => "brand",
            Who::OtherBrand => "other brand",
            Who::Admin => "admin",
        }
    }
}

/// Every HTTP route, by role (columns as [`ROLES`]).
#[rustfmt::skip]
const HTTP: &[(&str, &str)] = &[
    // route                                                   anon vwr  mod  host rost othh agcy otha brnd othb admn
    ("GET /healthz",                                           "ok   ok   ok   ok   ok   ok   ok   ok   ok   ok   ok"),
    ("GET /readyz",                                            "ok   ok   ok   ok   ok   ok   ok   ok   ok   ok   ok"),
    ("GET /v1/me",                                             "401  ok   ok   ok   ok   ok   ok   ok   ok   ok   ok"),
    ("GET /v1/sessions/{session_id}",                          "401  ok   ok   ok   ok   ok   ok   ok   ok   ok   ok"),
    ("GET /v1/sessions/{session_id}/ws",                       "401  ok   ok   ok   ok   ok   ok   ok   ok   ok   ok"),
    // Private notices: anyone signed in, their own.
    ("GET /v1/me/notices",                                     "401  ok   ok   ok   ok   ok   ok   ok   ok   ok   ok"),
    ("POST /v1/me/notices/read",                               "401  ok   ok   ok   ok   ok   ok   ok   ok   ok   ok"),
    // A room's bans: its session's agency (not its hosts or moderators).
    ("GET /v1/sessions/{session_id}/bans",                     "401  403  403  403  403  403  ok   403  403  403  ok"),
    ("DELETE /v1/sessions/{session_id}/bans/{user}",           "401  403  403  403  403  403  ok   403  403  403  ok"),
    // Discovery: anyone signed in.
    ("GET /v1/sessions",                                       "401  ok   ok   ok   ok   ok   ok   ok   ok   ok   ok"),
    ("GET /v1/brands/{brand_id}/schedule",                     "401  ok   ok   ok   ok   ok   ok   ok   ok   ok   ok"),
    ("GET /v1/agencies/{agency_id}/schedule",                  "401  ok   ok   ok   ok   ok   ok   ok   ok   ok   ok"),
    // Agencies, hosts and rosters.
    ("GET /v1/agencies/{agency_id}",                           "401  403  403  403  403  403  ok   403  403  403  ok"),
    ("POST /v1/hosts",                                         "401  403  403  403  403  403  ok   ok   403  403  ok"),
    ("GET /v1/agencies/{agency_id}/roster",                    "401  403  403  403  403  403  ok   403  403  403  ok"),
    ("POST /v1/agencies/{agency_id}/roster",                   "401  403  403  403  403  403  ok   403  403  403  ok"),
    ("DELETE /v1/agencies/{agency_id}/roster/{host_id}",       "401  403  403  403  403  403  ok   403  403  403  ok"),
    ("GET /v1/agencies/{agency_id}/invites",                   "401  403  403  403  403  403  ok   403  403  403  ok"),
    ("DELETE /v1/agencies/{agency_id}/invites/{invite_id}",    "401  403  403  403  403  403  ok   403  403  403  ok"),
    ("GET /v1/hosts/{host_id}/invites",                        "401  403  403  ok   403  403  403  403  403  403  ok"),
    // Only the host consents (admins too are refused).
    ("POST /v1/hosts/{host_id}/invites/{invite_id}/accept",    "401  403  403  ok   403  403  403  403  403  403  403"),
    ("POST /v1/hosts/{host_id}/invites/{invite_id}/decline",   "401  403  403  ok   403  403  403  403  403  403  403"),
    // Campaigns and terms: a campaign is private to its parties.
    ("POST /v1/campaigns",                                     "401  403  403  403  403  403  ok   403  ok   403  ok"),
    ("GET /v1/campaigns/{campaign_id}",                        "401  404  404  404  404  404  ok   404  ok   404  ok"),
    ("GET /v1/campaigns/{campaign_id}/terms",                  "401  404  404  404  404  404  ok   404  ok   404  ok"),
    ("POST /v1/campaigns/{campaign_id}/terms",                 "401  404  404  404  404  404  ok   404  ok   404  ok"),
    ("GET /v1/sessions/{session_id}/terms",                    "401  403  403  403  403  403  ok   403  ok   403  ok"),
    ("POST /v1/sessions/{session_id}/terms",                   "401  403  403  403  403  403  ok   403  ok   403  ok"),
    // The side that did not propose answers (the proposer gets 403).
    ("POST /v1/campaigns/{campaign_id}/accept",                "401  404  404  404  404  404  ok   404  ok   404  ok"),
    ("POST /v1/campaigns/{campaign_id}/decline",               "401  404  404  404  404  404  ok   404  ok   404  ok"),
    ("GET /v1/campaigns/{campaign_id}/skus",                   "401  404  404  404  404  404  ok   404  ok   404  ok"),
    // Once the campaign is accepted, only its brand changes its SKUs.
    ("POST /v1/campaigns/{campaign_id}/skus",                  "401  404  404  404  404  404  403  404  ok   404  ok"),
    ("GET /v1/brands/{brand_id}/campaigns",                    "401  403  403  403  403  403  403  403  ok   403  ok"),
    ("GET /v1/agencies/{agency_id}/campaigns",                 "401  403  403  403  403  403  ok   403  403  403  ok"),
    // Catalogs: the brand's own; another's product or SKU is 404, its list or import 403.
    ("POST /v1/brands/{brand_id}/products",                    "401  403  403  403  403  403  403  403  ok   403  ok"),
    ("GET /v1/brands/{brand_id}/products",                     "401  403  403  403  403  403  403  403  ok   403  ok"),
    ("POST /v1/brands/{brand_id}/catalog/import",              "401  403  403  403  403  403  403  403  ok   403  ok"),
    ("GET /v1/products/{product_id}",                          "401  404  404  404  404  404  404  404  ok   404  ok"),
    ("PATCH /v1/products/{product_id}",                        "401  404  404  404  404  404  404  404  ok   404  ok"),
    ("POST /v1/products/{product_id}/skus",                    "401  404  404  404  404  404  404  404  ok   404  ok"),
    ("GET /v1/skus/{sku_id}",                                  "401  404  404  404  404  404  404  404  ok   404  ok"),
    ("PATCH /v1/skus/{sku_id}",                                "401  404  404  404  404  404  404  404  ok   404  ok"),
    ("GET /v1/skus/{sku_id}/stock-movements",                  "401  404  404  404  404  404  404  404  ok   404  ok"),
    ("POST /v1/skus/{sku_id}/stock-movements",                 "401  404  404  404  404  404  404  404  ok   404  ok"),
    // Scheduling: a shift is private to its session's agency and its host.
    ("GET /v1/agencies/{agency_id}/sessions",                  "401  403  403  403  403  403  ok   403  403  403  ok"),
    ("POST /v1/agencies/{agency_id}/sessions",                 "401  403  403  403  403  403  ok   403  403  403  ok"),
    ("GET /v1/sessions/{session_id}/shifts",                   "401  403  403  ok   403  403  ok   403  403  403  ok"),
    ("POST /v1/sessions/{session_id}/shifts",                  "401  403  403  403  403  403  ok   403  403  403  ok"),
    ("DELETE /v1/shifts/{shift_id}",                           "401  404  404  403  404  404  ok   404  404  404  ok"),
    ("POST /v1/shifts/{shift_id}/start",                       "401  404  404  ok   404  404  ok   404  404  404  ok"),
    ("POST /v1/sessions/{session_id}/live",                    "401  403  403  ok   403  403  ok   403  403  403  ok"),
    ("POST /v1/sessions/{session_id}/end",                     "401  403  403  ok   403  403  ok   403  403  403  ok"),
    // Statements and figures.
    ("GET /v1/hosts/{host_id}/shifts",                         "401  403  403  ok   403  403  ok   403  403  403  ok"),
    ("GET /v1/hosts/{host_id}/statement",                      "401  403  403  ok   403  403  ok   403  403  403  ok"),
    ("GET /v1/agencies/{agency_id}/statement",                 "401  403  403  403  403  403  ok   403  403  403  ok"),
    ("GET /v1/sessions/{session_id}/figures",                  "401  403  403  ok   403  403  ok   403  ok   403  ok"),
    // Brand reports: the brand's own, admins.
    ("GET /v1/brands/{brand_id}/reports/sales",                "401  403  403  403  403  403  403  403  ok   403  ok"),
    // Commerce: whoever may host the session runs it; anyone signed in reads and buys.
    ("GET /v1/sessions/{session_id}/sellable-skus",            "401  403  403  ok   ok   403  ok   403  403  403  ok"),
    ("POST /v1/sessions/{session_id}/lineup",                  "401  403  403  ok   ok   403  ok   403  403  403  ok"),
    ("GET /v1/sessions/{session_id}/lineup",                   "401  ok   ok   ok   ok   ok   ok   ok   ok   ok   ok"),
    ("POST /v1/sessions/{session_id}/lineup/{link_number}/pin","401  403  403  ok   ok   403  ok   403  403  403  ok"),
    ("POST /v1/sessions/{session_id}/deals",                   "401  403  403  ok   ok   403  ok   403  403  403  ok"),
    ("GET /v1/sessions/{session_id}/deals",                    "401  ok   ok   ok   ok   ok   ok   ok   ok   ok   ok"),
    ("GET /v1/deals/{deal_id}",                                "401  ok   ok   ok   ok   ok   ok   ok   ok   ok   ok"),
    ("POST /v1/deals/{deal_id}/end",                           "401  403  403  ok   ok   403  ok   403  403  403  ok"),
    ("POST /v1/deals/{deal_id}/orders",                        "401  ok   ok   ok   ok   ok   ok   ok   ok   ok   ok"),
    // Waitlists: anyone signed in may wait for a sold-out deal (the world's deal sells: 409).
    ("POST /v1/deals/{deal_id}/waitlist",                      "401  ok   ok   ok   ok   ok   ok   ok   ok   ok   ok"),
    ("GET /v1/deals/{deal_id}/waitlist",                       "401  ok   ok   ok   ok   ok   ok   ok   ok   ok   ok"),
    ("DELETE /v1/deals/{deal_id}/waitlist",                    "401  ok   ok   ok   ok   ok   ok   ok   ok   ok   ok"),
    // An order is private to its buyer, its session's hosts and agency, its product's brand.
    ("GET /v1/orders/{order_id}",                              "401  ok   404  ok   ok   404  ok   404  ok   404  ok"),
    ("POST /v1/orders/{order_id}/refunds",                     "401  403  404  403  403  404  ok   404  ok   404  ok"),
    // Fulfilment: the product's brand; the buyer asks for a return. The buyer
    // trying a brand's step gets 403, anyone else 404.
    ("POST /v1/orders/{order_id}/shipment",                    "401  403  404  404  404  404  404  404  ok   404  ok"),
    ("POST /v1/orders/{order_id}/delivery",                    "401  403  404  404  404  404  404  404  ok   404  ok"),
    ("POST /v1/orders/{order_id}/return",                      "401  ok   404  404  404  404  404  404  404  404  404"),
    ("POST /v1/orders/{order_id}/return/approve",              "401  403  404  404  404  404  404  404  ok   404  ok"),
    ("POST /v1/orders/{order_id}/return/refuse",               "401  403  404  404  404  404  404  404  ok   404  ok"),
    // The buyer's journey: for the token's sub; another's order is 404.
    ("GET /v1/me/orders",                                      "401  ok   ok   ok   ok   ok   ok   ok   ok   ok   ok"),
    ("GET /v1/me/orders/{order_id}",                           "401  ok   404  404  404  404  404  404  404  404  404"),
    ("POST /v1/me/orders/{order_id}/cancel",                   "401  ok   404  404  404  404  404  404  404  404  404"),
    ("GET /v1/me/coupons",                                     "401  ok   ok   ok   ok   ok   ok   ok   ok   ok   ok"),
    ("GET /v1/me/sessions/{session_id}",                       "401  ok   ok   ok   ok   ok   ok   ok   ok   ok   ok"),
    ("GET /v1/me/shipping-address",                            "401  ok   ok   ok   ok   ok   ok   ok   ok   ok   ok"),
    ("PUT /v1/me/shipping-address",                            "401  ok   ok   ok   ok   ok   ok   ok   ok   ok   ok"),
    ("POST /v1/sessions/{session_id}/coupon-drops",            "401  403  403  ok   ok   403  ok   403  403  403  ok"),
    ("GET /v1/coupon-drops/{coupon_drop_id}",                  "401  ok   ok   ok   ok   ok   ok   ok   ok   ok   ok"),
    ("POST /v1/coupon-drops/{coupon_drop_id}/claims",          "401  ok   ok   ok   ok   ok   ok   ok   ok   ok   ok"),
    ("GET /v1/sessions/{session_id}/coupon-claims",            "401  ok   ok   ok   ok   ok   ok   ok   ok   ok   ok"),
    // Giveaways: whoever may host the session runs them; only viewer tokens enter.
    ("POST /v1/sessions/{session_id}/giveaways",               "401  403  403  ok   ok   403  ok   403  403  403  ok"),
    ("GET /v1/sessions/{session_id}/giveaways",                "401  ok   ok   ok   ok   ok   ok   ok   ok   ok   ok"),
    ("GET /v1/giveaways/{giveaway_id}",                        "401  ok   ok   ok   ok   ok   ok   ok   ok   ok   ok"),
    ("POST /v1/giveaways/{giveaway_id}/entries",               "401  ok   ok   403  403  403  403  403  403  403  403"),
    ("GET /v1/giveaways/{giveaway_id}/entries",                "401  ok   ok   ok   ok   ok   ok   ok   ok   ok   ok"),
    ("POST /v1/giveaways/{giveaway_id}/void",                  "401  403  403  ok   ok   403  ok   403  403  403  ok"),
    // Comment-to-buy: whoever may host the session sets it; anyone signed in reads it.
    ("GET /v1/sessions/{session_id}/comment-to-buy",           "401  ok   ok   ok   ok   ok   ok   ok   ok   ok   ok"),
    ("PUT /v1/sessions/{session_id}/comment-to-buy",           "401  403  403  ok   ok   403  ok   403  403  403  ok"),
    // Auctions: whoever may host the session runs them; only viewers bid;
    // the bid log is public.
    ("POST /v1/sessions/{session_id}/auctions",                "401  403  403  ok   ok   403  ok   403  403  403  ok"),
    ("GET /v1/sessions/{session_id}/auctions",                 "401  ok   ok   ok   ok   ok   ok   ok   ok   ok   ok"),
    ("GET /v1/auctions/{auction_id}",                          "401  ok   ok   ok   ok   ok   ok   ok   ok   ok   ok"),
    ("POST /v1/auctions/{auction_id}/bids",                    "401  ok   ok   403  403  403  403  403  403  403  403"),
    ("GET /v1/auctions/{auction_id}/bids",                     "ok   ok   ok   ok   ok   ok   ok   ok   ok   ok   ok"),
    ("POST /v1/auctions/{auction_id}/void",                    "401  403  403  ok   ok   403  ok   403  403  403  ok"),
    ("POST /v1/auctions/{auction_id}/second-chance",           "401  403  403  ok   ok   403  ok   403  403  403  ok"),
    // Group buys: whoever may host the session runs them; only viewer tokens join.
    ("POST /v1/sessions/{session_id}/group-buys",              "401  403  403  ok   ok   403  ok   403  403  403  ok"),
    ("GET /v1/sessions/{session_id}/group-buys",               "401  ok   ok   ok   ok   ok   ok   ok   ok   ok   ok"),
    ("GET /v1/group-buys/{group_buy_id}",                      "401  ok   ok   ok   ok   ok   ok   ok   ok   ok   ok"),
    ("POST /v1/group-buys/{group_buy_id}/joins",               "401  ok   ok   403  403  403  403  403  403  403  403"),
    ("POST /v1/group-buys/{group_buy_id}/cancel",              "401  403  403  ok   ok   403  ok   403  403  403  ok"),
    // Calendar feeds: a host their own, an agency (and admins) the agency's.
    // The feed itself takes its secret URL; a bearer token neither helps nor hurts.
    ("POST /v1/me/calendar-feed",                              "401  403  403  ok   ok   ok   403  403  403  403  403"),
    ("DELETE /v1/me/calendar-feed",                            "401  403  403  ok   ok   ok   403  403  403  403  403"),
    ("POST /v1/agencies/{agency_id}/calendar-feed",            "401  403  403  403  403  403  ok   403  403  403  ok"),
    ("DELETE /v1/agencies/{agency_id}/calendar-feed",          "401  403  403  403  403  403  ok   403  403  403  ok"),
    ("GET /v1/calendar/{token}",                               "ok   ok   ok   ok   ok   ok   ok   ok   ok   ok   ok"),
    // Signed by the payment provider; a bearer token neither helps nor hurts.
    ("POST /v1/payments/webhook",                              "ok   ok   ok   ok   ok   ok   ok   ok   ok   ok   ok"),
];

/// Every socket command, by role (columns as [`ROLES`]), in the session's room.
#[rustfmt::skip]
const SOCKET: &[(&str, &str)] = &[
    // type                  anon vwr  mod  host rost othh agcy otha brnd othb admn
    ("ping",              "401  ok   ok   ok   ok   ok   ok   ok   ok   ok   ok"),
    ("chat.send",         "401  ok   ok   ok   ok   ok   ok   ok   ok   ok   ok"),
    ("like",              "401  ok   ok   ok   ok   ok   ok   ok   ok   ok   ok"),
    ("host.announce",     "401  403  403  ok   ok   403  ok   403  403  403  ok"),
    ("host.message",      "401  403  403  ok   ok   403  ok   403  403  403  ok"),
    ("host.pin",          "401  403  403  ok   ok   403  ok   403  403  403  ok"),
    ("host.unpin",        "401  403  403  ok   ok   403  ok   403  403  403  ok"),
    ("mod.mute",          "401  403  ok   ok   ok   403  ok   403  403  403  ok"),
    ("mod.ban",           "401  403  ok   ok   ok   403  ok   403  403  403  ok"),
    ("mod.unmute",        "401  403  ok   ok   ok   403  ok   403  403  403  ok"),
    ("mod.unban",         "401  403  ok   ok   ok   403  ok   403  403  403  ok"),
    ("mod.slow_mode",     "401  403  ok   ok   ok   403  ok   403  403  403  ok"),
    ("mod.blocked_words", "401  403  ok   ok   ok   403  ok   403  403  403  ok"),
    ("mod.grant",         "401  403  403  ok   ok   403  ok   403  403  403  ok"),
    ("mod.revoke",        "401  403  403  ok   ok   403  ok   403  403  403  ok"),
    ("deal.buy",          "401  ok   ok   ok   ok   ok   ok   ok   ok   ok   ok"),
    ("coupon.claim",      "401  ok   ok   ok   ok   ok   ok   ok   ok   ok   ok"),
    ("giveaway.enter",    "401  ok   ok   403  403  403  403  403  403  403  403"),
    ("group_buy.join",    "401  ok   ok   403  403  403  403  403  403  403  403"),
    ("auction.bid",       "401  ok   ok   403  403  403  403  403  403  403  403"),
];

/// What a role gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Ok,
    Unauthenticated,
    Forbidden,
    Hidden,
}

impl Outcome {
    fn parse(cell: &str) -> Outcome {
        match cell {
            "ok" => Outcome::Ok,
            "401" => Outcome::Unauthenticated,
            "403" => Outcome::Forbidden,
            "404" => Outcome::Hidden,
            other => panic!("`{other}` is not an outcome (ok, 401, 403, 404)"),
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Unauthenticated => "401",
            Outcome::Forbidden => "403",
            Outcome::Hidden => "404",
        }
    }

    /// The outcome an HTTP status stands for; `None` for any other status
    /// (a 400 says the cell's request is wrong, a 5xx that the server is).
    fn of_status(status: u16) -> Option<Outcome> {
        match status {
            101 | 200..=299 | 409 => Some(Outcome::Ok),
            401 => Some(Outcome::Unauthenticated),
            403 => Some(Outcome::Forbidden),
            404 => Some(Outcome::Hidden),
            _ => None,
        }
    }
}

/// A table's rows, parsed and checked for width.
fn rows(table: &'static [(&'static str, &'static str)]) -> Vec<(&'static str, Vec<Outcome>)> {
    table
        .iter()
        .map(|(name, cells)| {
            let outcomes: Vec<Outcome> = cells.split_whitespace().map(Outcome::parse).collect();
            assert_eq!(
                outcomes.len(),
                ROLES.len(),
                "`{name}` has {} outcomes for {} roles",
                outcomes.len(),
                ROLES.len()
            );
            (*name, outcomes)
        })
        .collect()
}

// ------------------------------------------------- completeness and the docs

/// `METHOD /path` of every operation in an OpenAPI document.
fn operations(doc: &Value) -> BTreeSet<String> {
    let paths = doc["paths"].as_object().expect("the document has paths");
    paths
        .iter()
        .flat_map(|(path, item)| {
            ["get", "put", "post", "delete", "patch", "head", "options"]
                .into_iter()
                .filter(|method| item.get(*method).is_some())
                .map(move |method| format!("{} {path}", method.to_uppercase()))
        })
        .collect()
}

/// What is missing from a table and what it names that does not exist.
fn differences(table: &[(&str, &str)], exist: &BTreeSet<String>, what: &str) -> Vec<String> {
    let named: BTreeSet<String> = table.iter().map(|(name, _)| name.to_string()).collect();
    let mut problems: Vec<String> = exist
        .difference(&named)
        .map(|name| format!("{what} `{name}` has no row in the authorization matrix"))
        .collect();
    problems.extend(
        named
            .difference(exist)
            .map(|name| format!("the authorization matrix has a row for `{name}`, which is no {what}")),
    );
    assert_eq!(named.len(), table.len(), "a {what} has two rows");
    problems
}

#[test]
fn every_route_and_command_has_a_row() {
    let doc = serde_json::to_value(hawker_server::http::openapi_document()).unwrap();
    let mut problems = differences(HTTP, &operations(&doc), "route");
    let commands: BTreeSet<String> = hawker_hub::commands::COMMAND_TYPES
        .iter()
        .map(|c| c.to_string())
        .collect();
    problems.extend(differences(SOCKET, &commands, "socket command"));
    rows(HTTP);
    rows(SOCKET);
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

const DOCS_BEGIN: &str = "<!-- authz-matrix: generated by crates/hawker-server/tests/it/authz_matrix.rs -->";
const DOCS_END: &str = "<!-- /authz-matrix -->";

fn markdown_table(first: &str, table: &'static [(&'static str, &'static str)]) -> String {
    let mut out = format!(
        "| {first} | {} |\n|---|{}\n",
        ROLES.map(Who::column).join(" | "),
        "---|".repeat(ROLES.len())
    );
    for (name, outcomes) in rows(table) {
        let cells: Vec<&str> = outcomes.iter().map(|o| o.as_str()).collect();
        out.push_str(&format!("| `{name}` | {} |\n", cells.join(" | ")));
    }
    out
}

/// The generated part of `docs/api.md`'s "Authorization matrix".
fn docs_matrix() -> String {
    format!(
        "{DOCS_BEGIN}\n\nHTTP routes:\n\n{}\nSocket commands (in the session's room):\n\n{}\n{DOCS_END}",
        markdown_table("route", HTTP),
        markdown_table("command", SOCKET)
    )
}

#[test]
fn the_docs_show_the_authorization_matrix() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/api.md");
    let docs = std::fs::read_to_string(&path).unwrap();
    let (start, end) = match (docs.find(DOCS_BEGIN), docs.find(DOCS_END)) {
        (Some(start), Some(end)) if start < end => (start, end + DOCS_END.len()),
        _ => panic!("docs/api.md lacks the markers {DOCS_BEGIN} ... {DOCS_END}"),
    };
    let expected = docs_matrix();
    if docs[start..end] == expected {
        return;
    }
    if std::env::var_os("AUTHZ_MATRIX_WRITE_DOCS").is_some() {
        std::fs::write(&path, format!("{}{expected}{}", &docs[..start], &docs[end..])).unwrap();
        return;
    }
    panic!(
        "docs/api.md's authorization matrix differs from the test's; it should read:\n\n{expected}\n\n\
         (AUTHZ_MATRIX_WRITE_DOCS=1 writes it)"
    );
}

// ------------------------------------------------------------------ the world

/// One agency's session with everything the routes name, and the outsiders.
struct World {
    agency: Uuid,
    other_agency: Uuid,
    brand: Uuid,
    other_brand: Uuid,
    /// On the agency's roster, scheduled in the session.
    host: Uuid,
    /// On the agency's roster, not scheduled in it.
    roster_host: Uuid,
    /// On the other agency's roster.
    other_host: Uuid,
    campaign: Uuid,
    /// The agency's session under the campaign (scheduled, not live).
    session: Uuid,
    /// The brand's SKU, at link #1 of the session, in the campaign.
    sku: Uuid,
    /// The SKU's product.
    product: Uuid,
    /// A deal of the session, selling.
    deal: Uuid,
    /// The viewer's order of that deal, paid.
    order: Uuid,
    order_amount: i64,
    /// A coupon drop of the session, dropped.
    coupon_drop: Uuid,
    /// A giveaway of the session (a coupon of that drop), open for an hour.
    giveaway: Uuid,
    /// A running auction of the session's link #1.
    auction: Uuid,
    /// A running group buy of the session's link #1.
    group_buy: Uuid,
    webhook_secret: String,
    /// Distinct numbers for cells that need their own day or time.
    slot: AtomicI64,
    /// The request each route's refused cells share (see [`attempt`]).
    refusals: HashMap<&'static str, tokio::sync::OnceCell<Request>>,
}

const VIEWER: &str = "matrix-viewer";
const MODERATOR: &str = "matrix-moderator";

impl World {
    fn claims(&self, who: Who) -> Option<Claims> {
        let claims = |sub: &str, role| Claims::new(sub, role, chrono::Duration::hours(1));
        Some(match who {
            Who::Anonymous => return None,
            Who::Viewer => claims(VIEWER, Role::Viewer),
            Who::Moderator => claims(MODERATOR, Role::Viewer),
            Who::Host => claims(&self.host.to_string(), Role::Host),
            Who::RosterHost => claims(&self.roster_host.to_string(), Role::Host),
            Who::OtherHost => claims(&self.other_host.to_string(), Role::Host),
            Who::Agency => Claims {
                agency_id: Some(self.agency),
                ..claims("matrix-agency", Role::Agency)
            },
            Who::OtherAgency => Claims {
                agency_id: Some(self.other_agency),
                ..claims("matrix-other-agency", Role::Agency)
            },
            Who::Brand => Claims {
                brand_id: Some(self.brand),
                ..claims("matrix-brand", Role::Brand)
            },
            Who::OtherBrand => Claims {
                brand_id: Some(self.other_brand),
                ..claims("matrix-other-brand", Role::Brand)
            },
            Who::Admin => claims("matrix-admin", Role::Admin),
        })
    }

    fn token(&self, app: &TestApp, who: Who) -> Option<String> {
        self.claims(who).map(|c| app.keys.sign(&c).unwrap())
    }

    fn slot(&self) -> i64 {
        self.slot.fetch_add(1, Ordering::Relaxed)
    }

    /// `template` with the world's ids for its path parameters.
    fn fill(&self, template: &str) -> String {
        [
            ("{session_id}", self.session.to_string()),
            ("{agency_id}", self.agency.to_string()),
            ("{host_id}", self.host.to_string()),
            ("{deal_id}", self.deal.to_string()),
            ("{order_id}", self.order.to_string()),
            ("{coupon_drop_id}", self.coupon_drop.to_string()),
            ("{giveaway_id}", self.giveaway.to_string()),
            ("{group_buy_id}", self.group_buy.to_string()),
            ("{auction_id}", self.auction.to_string()),
            ("{campaign_id}", self.campaign.to_string()),
            ("{link_number}", "1".to_string()),
            ("{brand_id}", self.brand.to_string()),
            ("{product_id}", self.product.to_string()),
            ("{sku_id}", self.sku.to_string()),
            ("{user}", "matrix-target".to_string()),
        ]
        .iter()
        .fold(template.to_string(), |path, (param, value)| {
            path.replace(param, value)
        })
    }

    /// Seeds the world through the HTTP API (agencies and brands, which have
    /// no routes, through SQL).
    async fn build(app: &TestApp, webhook_secret: String) -> World {
        let agency = insert_agency(&app.db).await;
        let other_agency = insert_agency(&app.db).await;
        let (brand, sku) = insert_brand_with_sku(&app.db, 2500, 100_000).await;
        let (other_brand, _) = insert_brand_with_sku(&app.db, 2500, 100_000).await;
        let host = roster_host(app, agency).await;
        let roster_host_id = roster_host(app, agency).await;
        let other_host = roster_host(app, other_agency).await;
        let agency_token = app.agency_token(agency);
        let ok = |(status, body): (u16, Value), want: u16| {
            assert_eq!(status, want, "{body}");
            body
        };
        let campaign = ok(
            app.send(
                Method::POST,
                "/v1/campaigns",
                &agency_token,
                Some(json!({"brand_id": brand, "agency_id": agency, "name": "Matrix"})),
            )
            .await,
            201,
        );
        let campaign_id = id(&campaign, "campaign_id");
        // The brand accepts the agency's proposal and puts its SKU in it.
        let brand_token = app.brand_token(brand);
        ok(
            app.send(
                Method::POST,
                &format!("/v1/campaigns/{campaign_id}/accept"),
                &brand_token,
                None,
            )
            .await,
            200,
        );
        ok(
            app.send(
                Method::POST,
                &format!("/v1/campaigns/{campaign_id}/skus"),
                &brand_token,
                Some(json!({"items": [{"sku_id": sku, "floor_price_minor": 1}]})),
            )
            .await,
            200,
        );
        let product: Uuid = sqlx::query_scalar("select product_id from sku where sku_id = $1")
            .bind(sku)
            .fetch_one(&app.db)
            .await
            .unwrap();
        let start = now();
        let session = schedule(
            app,
            agency,
            json!({"title": "Matrix", "campaign_id": id(&campaign, "campaign_id"), "planned_start": iso(start),
                   "planned_end": iso(start + chrono::Duration::hours(24))}),
        )
        .await;
        let session_id = id(&session, "session_id");
        let (status, shift) = book(
            app,
            agency,
            session_id,
            host,
            start,
            start + chrono::Duration::minutes(30),
        )
        .await;
        assert_eq!(status, 201, "{shift}");
        let post = |path: String, body: Value| {
            let token = agency_token.clone();
            async move { app.send(Method::POST, &path, &token, Some(body)).await }
        };
        ok(
            post(
                format!("/v1/sessions/{session_id}/lineup"),
                json!({"sku_id": sku, "link_number": 1}),
            )
            .await,
            201,
        );
        let deal = ok(
            post(
                format!("/v1/sessions/{session_id}/deals"),
                json!({"link_number": 1, "price_minor": 1000, "quantity": 10_000, "per_buyer_cap": 50,
                       "duration_secs": 1200}),
            )
            .await,
            201,
        );
        let deal = id(&deal, "deal_id");
        let drop = ok(
            post(
                format!("/v1/sessions/{session_id}/coupon-drops"),
                json!({"total": 1000, "discount_kind": "percent", "discount_value": 10,
                       "per_viewer_limit": 10, "claim_window_secs": 3600}),
            )
            .await,
            201,
        );
        let giveaway = ok(
            post(
                format!("/v1/sessions/{session_id}/giveaways"),
                json!({"coupon_drop_id": id(&drop, "coupon_drop_id"), "winners": 1, "entry_window_secs": 3600}),
            )
            .await,
            201,
        );
        let auction = ok(
            post(
                format!("/v1/sessions/{session_id}/auctions"),
                json!({"link_number": 1, "start_price_minor": 1000, "increments": [{"step_minor": 100}],
                       "duration_secs": 300, "mode": "anti_snipe"}),
            )
            .await,
            201,
        );
        let group_buy = ok(
            post(
                format!("/v1/sessions/{session_id}/group-buys"),
                json!({"link_number": 1, "tiers": [{"min_participants": 1, "price_minor": 1000}],
                       "min_participants": 1, "duration_secs": 3600, "per_buyer_cap": 100, "stock": 1000}),
            )
            .await,
            201,
        );
        // The host appoints the moderator in the session's room.
        let mut host_socket = socket::join(app.addr, session_id, &app.host_token(host)).await;
        let granted = host_socket.call("mod.grant", json!({"user": MODERATOR})).await;
        assert_eq!(granted["type"], "ack", "{granted}");
        let world = World {
            agency,
            other_agency,
            brand,
            other_brand,
            host,
            roster_host: roster_host_id,
            other_host,
            campaign: id(&campaign, "campaign_id"),
            session: session_id,
            sku,
            product,
            deal,
            order: Uuid::nil(),
            order_amount: 0,
            coupon_drop: id(&drop, "coupon_drop_id"),
            giveaway: id(&giveaway, "giveaway_id"),
            auction: id(&auction, "auction_id"),
            group_buy: id(&group_buy, "group_buy_id"),
            webhook_secret,
            slot: AtomicI64::new(0),
            refusals: HTTP
                .iter()
                .map(|(route, _)| (*route, Default::default()))
                .collect(),
        };
        // The viewer buys, and the payment provider reports the payment.
        let viewer = world.token(app, Who::Viewer).unwrap();
        let order = ok(
            send(
                app,
                Some(&viewer),
                Request::new(Method::POST, format!("/v1/deals/{deal}/orders"))
                    .header("idempotency-key", "matrix-order")
                    .json(json!({"quantity": 2})),
            )
            .await,
            201,
        );
        let world = World {
            order: id(&order, "order_id"),
            order_amount: order["amount_minor"].as_i64().unwrap(),
            ..world
        };
        let paid = ok(
            send(
                app,
                None,
                world.payment_event("matrix-payment", world.order, world.order_amount),
            )
            .await,
            200,
        );
        assert_eq!(paid["outcome"], "applied", "{paid}");
        world
    }

    /// A signed `payment.succeeded` for `order`.
    fn payment_event(&self, event_id: &str, order: Uuid, amount_minor: i64) -> Request {
        let body = json!({"event_id": event_id, "type": "payment.succeeded", "order_id": order,
                          "amount_minor": amount_minor, "currency": "USD"})
        .to_string()
        .into_bytes();
        let signature = hawker_commerce::payments::sign(&self.webhook_secret, Utc::now().timestamp(), &body);
        Request::new(Method::POST, "/v1/payments/webhook".into())
            .header("x-hawker-signature", &signature)
            .raw(body, "application/json")
    }

    /// A new order of the viewer's for one unit of the world's deal, paid,
    /// then taken through fulfilment: shipped, delivered and with a return
    /// asked for, as far as `stage` says (0 to 3).
    async fn fulfilment_order(&self, app: &TestApp, stage: u8) -> Uuid {
        let viewer = self.token(app, Who::Viewer);
        let (status, order) = send(
            app,
            viewer.as_deref(),
            Request::new(Method::POST, format!("/v1/deals/{}/orders", self.deal))
                .header("idempotency-key", &format!("matrix-{}", Uuid::new_v4()))
                .json(json!({"quantity": 1})),
        )
        .await;
        assert_eq!(status, 201, "{order}");
        let order_id = id(&order, "order_id");
        let amount = order["amount_minor"].as_i64().unwrap();
        let event = self.payment_event(&format!("matrix-{}", Uuid::new_v4()), order_id, amount);
        let (status, paid) = send(app, None, event).await;
        assert_eq!((status, &paid["outcome"]), (200, &json!("applied")), "{paid}");
        let brand = self.token(app, Who::Brand);
        let steps = [
            (
                brand.as_deref(),
                "shipment",
                json!({"carrier": "DHL", "tracking_number": "M1"}),
            ),
            (brand.as_deref(), "delivery", Value::Null),
            (viewer.as_deref(), "return", json!({"reason": "not as shown"})),
        ];
        for (token, step, body) in steps.into_iter().take(usize::from(stage)) {
            let request = Request::new(Method::POST, format!("/v1/orders/{order_id}/{step}"));
            let request = if body.is_null() {
                request
            } else {
                request.json(body)
            };
            let (status, reply) = send(app, token, request).await;
            assert_eq!(status, 200, "{step}: {reply}");
        }
        order_id
    }

    /// A session of the agency on a day of its own (three hours), with a
    /// first shift for a new host of the roster, a second for `second_host`,
    /// and a free third hour; live if `live`. Returns (session, second shift).
    async fn side_session(&self, app: &TestApp, second_host: Uuid, live: bool) -> (Uuid, Uuid) {
        let day = now().date_naive().and_hms_opt(0, 0, 0).unwrap().and_utc();
        let start = day + chrono::Duration::days(2 + self.slot());
        let session = schedule(
            app,
            self.agency,
            json!({"title": "Side", "brand_id": self.brand, "planned_start": iso(start),
                   "planned_end": iso(start + chrono::Duration::hours(3))}),
        )
        .await;
        let session_id = id(&session, "session_id");
        let first_host = roster_host(app, self.agency).await;
        let mid = start + chrono::Duration::hours(1);
        let (s1, _) = book(app, self.agency, session_id, first_host, start, mid).await;
        let (s2, second) = book(
            app,
            self.agency,
            session_id,
            second_host,
            mid,
            mid + chrono::Duration::hours(1),
        )
        .await;
        assert_eq!((s1, s2), (201, 201), "{second}");
        if live {
            let (status, body) = app
                .send(
                    Method::POST,
                    &format!("/v1/sessions/{session_id}/live"),
                    &app.agency_token(self.agency),
                    None,
                )
                .await;
            assert_eq!(status, 200, "{body}");
        }
        (session_id, id(&second, "shift_id"))
    }

    /// A host on nobody's roster, straight into the table.
    async fn free_host(&self, app: &TestApp) -> Uuid {
        let host = Uuid::new_v4();
        sqlx::query("insert into host (host_id, handle, display_name) values ($1, $2, 'Free')")
            .bind(host)
            .bind(format!("h_{}", &host.simple().to_string()[..12]))
            .execute(&app.db)
            .await
            .unwrap();
        host
    }
}

// ------------------------------------------------------------- HTTP requests

/// One HTTP request of a cell.
#[derive(Clone)]
struct Request {
    method: Method,
    path: String,
    headers: Vec<(&'static str, String)>,
    json: Option<Value>,
    raw: Option<(Vec<u8>, &'static str)>,
}

impl Request {
    fn new(method: Method, path: String) -> Request {
        Request {
            method,
            path,
            headers: Vec::new(),
            json: None,
            raw: None,
        }
    }

    fn json(mut self, body: Value) -> Request {
        self.json = Some(body);
        self
    }

    fn raw(mut self, body: Vec<u8>, content_type: &'static str) -> Request {
        self.raw = Some((body, content_type));
        self
    }

    fn header(mut self, name: &'static str, value: &str) -> Request {
        self.headers.push((name, value.to_string()));
        self
    }
}

async fn send(app: &TestApp, token: Option<&str>, request: Request) -> (u16, Value) {
    let mut builder = app.http.request(request.method, app.url(&request.path));
    if let Some(token) = token {
        builder = builder.bearer_auth(token);
    }
    for (name, value) in request.headers {
        builder = builder.header(name, value);
    }
    if let Some(body) = request.json {
        builder = builder.json(&body);
    }
    if let Some((body, content_type)) = request.raw {
        builder = builder.header("content-type", content_type).body(body);
    }
    answer(builder.send().await.unwrap()).await
}

/// The request of `route` for `who`: valid in every way but who sends it.
async fn request(app: &TestApp, w: &World, route: &str, who: Who) -> Request {
    let (method, template) = route.split_once(' ').unwrap();
    let method = Method::from_bytes(method.as_bytes()).unwrap();
    let plain = Request::new(method.clone(), w.fill(template));
    let (a, h) = (w.agency, w.host);
    let request = match route {
        "POST /v1/hosts" => {
            let handle = format!("h_{}", &Uuid::new_v4().simple().to_string()[..12]);
            plain.json(json!({"handle": handle, "display_name": "New"}))
        }
        "POST /v1/agencies/{agency_id}/roster" => plain.json(json!({"host_id": w.free_host(app).await})),
        "DELETE /v1/agencies/{agency_id}/roster/{host_id}" => {
            let host = roster_host(app, a).await;
            Request::new(method, format!("/v1/agencies/{a}/roster/{host}"))
        }
        "DELETE /v1/agencies/{agency_id}/invites/{invite_id}" => {
            let invite_id = id(&invite(app, a, w.free_host(app).await).await, "invite_id");
            Request::new(method, format!("/v1/agencies/{a}/invites/{invite_id}"))
        }
        "POST /v1/hosts/{host_id}/invites/{invite_id}/accept"
        | "POST /v1/hosts/{host_id}/invites/{invite_id}/decline" => {
            // An invite for the world's host from a third agency, straight into
            // the table (the API refuses it: the host is on a roster now, so
            // accepting it is a 409 for the host).
            let third = insert_agency(&app.db).await;
            let invite_id = Uuid::new_v4();
            sqlx::query(
                "insert into roster_invite (invite_id, agency_id, host_id, invited_by, expires_at)
                 values ($1, $2, $3, 'test', now() + interval '1 day')",
            )
            .bind(invite_id)
            .bind(third)
            .bind(h)
            .execute(&app.db)
            .await
            .unwrap();
            Request::new(
                method,
                template
                    .replace("{host_id}", &h.to_string())
                    .replace("{invite_id}", &invite_id.to_string()),
            )
        }
        "POST /v1/campaigns" => plain.json(json!({"brand_id": w.brand, "agency_id": a, "name": "New"})),
        "POST /v1/campaigns/{campaign_id}/terms" => {
            plain.json(json!({"percent_bps": 800, "host_share_bps": 5000, "currency": "USD"}))
        }
        "POST /v1/sessions/{session_id}/terms" => {
            plain.json(json!({"slot_fee_minor": 1000, "host_share_bps": 0, "currency": "USD"}))
        }
        "GET /v1/agencies/{agency_id}/sessions" => Request::new(
            method,
            format!("/v1/agencies/{a}/sessions?date=2031-01-01&utc_offset=%2B08:00"),
        ),
        "POST /v1/agencies/{agency_id}/sessions" => plain.json(json!({
            "title": "New", "planned_start": "2031-01-01T10:00:00+08:00",
            "planned_end": "2031-01-01T12:00:00+08:00"})),
        "POST /v1/sessions/{session_id}/shifts" => {
            // After the world host's first half hour, ten minutes each.
            let from = now() + chrono::Duration::minutes(60 + w.slot() * 10);
            plain.json(
                json!({"host_id": roster_host(app, a).await, "planned_start": iso(from),
                              "planned_end": iso(from + chrono::Duration::minutes(10))}),
            )
        }
        "DELETE /v1/shifts/{shift_id}" => {
            let (_, shift) = w.side_session(app, roster_host(app, a).await, false).await;
            // The world's host is scheduled in the side session too, on another shift.
            sqlx::query(
                "insert into shift (shift_id, session_id, host_id, planned_start, planned_end, created_by)
                 select gen_random_uuid(), session_id, $2, planned_end, planned_end + interval '1 hour', 'test'
                   from shift where shift_id = $1",
            )
            .bind(shift)
            .bind(h)
            .execute(&app.db)
            .await
            .unwrap();
            Request::new(method, format!("/v1/shifts/{shift}"))
        }
        "POST /v1/shifts/{shift_id}/start"
        | "POST /v1/sessions/{session_id}/live"
        | "POST /v1/sessions/{session_id}/end" => {
            // The world's host has the second shift of a side session when
            // trying as that host; a new host of the roster otherwise.
            let second = if who == Who::Host {
                h
            } else {
                roster_host(app, a).await
            };
            let live = route != "POST /v1/sessions/{session_id}/live";
            let (session, shift) = w.side_session(app, second, live).await;
            let path = match route {
                "POST /v1/shifts/{shift_id}/start" => format!("/v1/shifts/{shift}/start"),
                "POST /v1/sessions/{session_id}/live" => format!("/v1/sessions/{session}/live"),
                _ => format!("/v1/sessions/{session}/end"),
            };
            Request::new(method, path)
        }
        "POST /v1/sessions/{session_id}/lineup" => plain.json(json!({"sku_id": w.sku})),
        "POST /v1/sessions/{session_id}/deals" => {
            plain.json(json!({
            "link_number": 1, "price_minor": 1000, "quantity": 10, "per_buyer_cap": 1, "duration_secs": 600}))
        }
        "POST /v1/deals/{deal_id}/end" => {
            let (status, deal) = app
                .send(
                    Method::POST,
                    &format!("/v1/sessions/{}/deals", w.session),
                    &app.agency_token(a),
                    Some(
                        json!({"link_number": 1, "price_minor": 1000, "quantity": 10, "per_buyer_cap": 1,
                                "duration_secs": 600}),
                    ),
                )
                .await;
            assert_eq!(status, 201, "{deal}");
            Request::new(method, format!("/v1/deals/{}/end", id(&deal, "deal_id")))
        }
        "POST /v1/deals/{deal_id}/orders" => plain
            .header("idempotency-key", &format!("matrix-{}", Uuid::new_v4()))
            .json(json!({"quantity": 1})),
        "POST /v1/orders/{order_id}/refunds" => plain.json(json!({"amount_minor": 1, "reason": "matrix"})),
        "POST /v1/sessions/{session_id}/auctions" => plain.json(json!({
            "link_number": 1, "start_price_minor": 1000, "increments": [{"step_minor": 100}], "duration_secs": 60,
            "mode": "sudden_death"})),
        "POST /v1/auctions/{auction_id}/bids" => plain.json(json!({"max_minor": 1_000_000 + w.slot() * 1000})),
        "POST /v1/auctions/{auction_id}/void" => plain.json(json!({"reason": "matrix"})),
        "POST /v1/sessions/{session_id}/coupon-drops" => plain.json(json!({
            "total": 10, "discount_kind": "percent", "discount_value": 10, "claim_window_secs": 600})),
        "POST /v1/sessions/{session_id}/giveaways" => plain.json(json!({
            "coupon_drop_id": w.coupon_drop, "winners": 1, "entry_window_secs": 600})),
        "POST /v1/giveaways/{giveaway_id}/void" => {
            // A giveaway of its own, so the world's stays open.
            let (status, giveaway) = app
                .send(
                    Method::POST,
                    &format!("/v1/sessions/{}/giveaways", w.session),
                    &app.agency_token(a),
                    Some(json!({"coupon_drop_id": w.coupon_drop, "winners": 1, "entry_window_secs": 600})),
                )
                .await;
            assert_eq!(status, 201, "{giveaway}");
            Request::new(method, format!("/v1/giveaways/{}/void", id(&giveaway, "giveaway_id")))
                .json(json!({"reason": "matrix"}))
        }
        "POST /v1/sessions/{session_id}/group-buys" => plain.json(json!({
            "link_number": 1, "tiers": [{"min_participants": 1, "price_minor": 1000}], "min_participants": 1,
            "duration_secs": 600, "per_buyer_cap": 1, "stock": 1})),
        "POST /v1/group-buys/{group_buy_id}/joins" => plain
            .header("idempotency-key", &format!("matrix-{}", Uuid::new_v4()))
            .json(json!({"quantity": 1})),
        // The world's own group buy: the first cell allowed cancels it, the
        // others then get 409 `group_buy_ended` (allowed, and past the checks).
        "POST /v1/group-buys/{group_buy_id}/cancel" => plain.json(json!({"reason": "matrix"})),
        "PUT /v1/sessions/{session_id}/comment-to-buy" => plain.json(json!({"enabled": false})),
        "POST /v1/payments/webhook" => {
            w.payment_event(&format!("matrix-{}", Uuid::new_v4()), w.order, w.order_amount)
        }
        "POST /v1/me/notices/read" => plain.json(json!({"up_to": 1})),
        "POST /v1/campaigns/{campaign_id}/accept" | "POST /v1/campaigns/{campaign_id}/decline" => {
            // A new proposal, made by the side that is not trying: the brand
            // proposes unless the brand tries.
            let proposer = if who == Who::Brand {
                app.agency_token(a)
            } else {
                app.brand_token(w.brand)
            };
            let (status, campaign) = app
                .send(
                    Method::POST,
                    "/v1/campaigns",
                    &proposer,
                    Some(json!({"brand_id": w.brand, "agency_id": a, "name": "Proposal"})),
                )
                .await;
            assert_eq!(status, 201, "{campaign}");
            let campaign = id(&campaign, "campaign_id");
            Request::new(method, template.replace("{campaign_id}", &campaign.to_string()))
        }
        "POST /v1/campaigns/{campaign_id}/skus" => {
            plain.json(json!({"items": [{"sku_id": w.sku, "floor_price_minor": 1}]}))
        }
        "POST /v1/brands/{brand_id}/products" => plain.json(json!({
            "name": "Matrix Serum",
            "skus": [{"code": fresh_code(), "name": "30 ml", "price_minor": 3450, "currency": "USD", "stock": 5}]})),
        "POST /v1/brands/{brand_id}/catalog/import" => {
            let csv = format!("product_name,sku_code,sku_name,price_minor,currency\nMatrix Balm,{},Mint,999,USD\n", fresh_code());
            plain.raw(csv.into_bytes(), "text/csv")
        }
        "PATCH /v1/products/{product_id}" => plain.json(json!({"name": "Lipstick"})),
        "POST /v1/products/{product_id}/skus" => plain.json(json!({
            "code": fresh_code(), "name": "Coral", "price_minor": 2500, "currency": "USD"})),
        "PATCH /v1/skus/{sku_id}" => plain.json(json!({"name": "Ruby"})),
        "POST /v1/skus/{sku_id}/stock-movements" => plain.json(json!({"kind": "restock", "delta": 1, "note": "matrix"})),
        "PUT /v1/me/shipping-address" => plain.json(json!({
            "name": "Mia Chen", "line1": "12 Harbour Street", "city": "Singapore", "postal_code": "049318",
            "country": "SG"})),
        "POST /v1/orders/{order_id}/shipment"
        | "POST /v1/orders/{order_id}/delivery"
        | "POST /v1/orders/{order_id}/return"
        | "POST /v1/orders/{order_id}/return/approve"
        | "POST /v1/orders/{order_id}/return/refuse" => {
            // An order of the viewer's of its own, one step short of this one.
            let (stage, body) = match route {
                "POST /v1/orders/{order_id}/shipment" => {
                    (0, json!({"carrier": "DHL", "tracking_number": "JD014600006151"}))
                }
                "POST /v1/orders/{order_id}/delivery" => (1, Value::Null),
                "POST /v1/orders/{order_id}/return" => (2, json!({"reason": "The colour is not as shown"})),
                _ => (3, json!({"note": "matrix"})),
            };
            let order = w.fulfilment_order(app, stage).await;
            let request = Request::new(method, template.replace("{order_id}", &order.to_string()));
            if body.is_null() {
                request
            } else {
                request.json(body)
            }
        }
        "GET /v1/calendar/{token}" => {
            // The other agency's feed: no other row's cell replaces it.
            let (status, feed) = app
                .send(
                    Method::POST,
                    &format!("/v1/agencies/{}/calendar-feed", w.other_agency),
                    &app.agency_token(w.other_agency),
                    None,
                )
                .await;
            assert_eq!(status, 201, "{feed}");
            Request::new(method, format!("/v1/calendar/{}.ics", feed["token"].as_str().unwrap()))
        }
        _ => plain,
    };
    assert!(
        !request.path.contains('{'),
        "`{route}` names an id the world does not have: add an arm to `request`"
    );
    request
}

/// A SKU code no other cell uses.
fn fresh_code() -> String {
    format!("MX-{}", &Uuid::new_v4().simple().to_string()[..12])
}

/// Routes whose cells put the world's host on air in a side session.
const PUTS_THE_HOST_ON_AIR: [&str; 4] = [
    "DELETE /v1/shifts/{shift_id}",
    "POST /v1/shifts/{shift_id}/start",
    "POST /v1/sessions/{session_id}/live",
    "POST /v1/sessions/{session_id}/end",
];

/// Tries `route` as `who`, expected to get `want`: the status, and the body
/// for the report. A cell expected to succeed gets a request of its own; the
/// cells expected to be refused share one per route, built as for an
/// outsider (a refusal changes nothing, and a wrong success fails the test).
async fn attempt(app: &TestApp, w: &World, route: &'static str, who: Who, want: Outcome) -> (u16, Value) {
    let token = w.token(app, who);
    let request = if want == Outcome::Ok {
        request(app, w, route, who).await
    } else {
        w.refusals[route]
            .get_or_init(|| request(app, w, route, Who::Anonymous))
            .await
            .clone()
    };
    if route == "GET /v1/sessions/{session_id}/ws" {
        return (handshake(app, w.session, token.as_deref()).await, Value::Null);
    }
    let (status, reply) = send(app, token.as_deref(), request).await;
    // A side session left live would keep its host on air: end it.
    if let Some(session) = reply["session_id"].as_str() {
        if reply["status"] == "live" && session != w.session.to_string() {
            app.send(
                Method::POST,
                &format!("/v1/sessions/{session}/end"),
                &w.token(app, Who::Admin).unwrap(),
                None,
            )
            .await;
        }
    }
    (status, reply)
}

/// The status of a WebSocket handshake to the session's room (101 when it opens).
async fn handshake(app: &TestApp, session: Uuid, token: Option<&str>) -> u16 {
    let url = match token {
        Some(token) => format!("ws://{}/v1/sessions/{session}/ws?access_token={token}", app.addr),
        None => format!("ws://{}/v1/sessions/{session}/ws", app.addr),
    };
    match tokio_tungstenite::connect_async(url).await {
        Ok((mut stream, response)) => {
            let _ = stream.close(None).await;
            response.status().as_u16()
        }
        Err(tungstenite::Error::Http(response)) => response.status().as_u16(),
        Err(e) => panic!("handshake failed without an answer: {e}"),
    }
}

fn report(kind: &str, name: &str, who: Who, want: Outcome, got: &str, detail: &Value) -> String {
    format!(
        "{kind} `{name}` as {}: expected {}, got {got} {detail}",
        who.column(),
        want.as_str()
    )
}

async fn app_and_world() -> (TestApp, World) {
    let settings = settings_with(&[]);
    let secret = settings.payments.webhook_secret.clone();
    let app = spawn_app_with(settings).await;
    let world = World::build(&app, secret).await;
    (app, world)
}

#[tokio::test]
async fn every_route_answers_every_role_as_the_matrix_says() {
    let (app, w) = app_and_world().await;
    // The rows cover exactly the routes this server documents and serves.
    let (status, doc) = answer(app.get("/openapi.json", None).await).await;
    assert_eq!(status, 200);
    let problems = differences(HTTP, &operations(&doc), "route");
    assert!(problems.is_empty(), "{}", problems.join("\n"));

    // Rows run side by side, their cells one after another; the rows that
    // put the world's host on air run one after another too (a host is on
    // air in one session at a time).
    let (on_air, others): (Vec<_>, Vec<_>) = rows(HTTP)
        .into_iter()
        .partition(|(route, _)| PUTS_THE_HOST_ON_AIR.contains(route));
    let groups = std::iter::once(on_air).chain(others.into_iter().map(|row| vec![row]));
    let (app, w) = (&app, &w);
    let mut wrong: Vec<String> = futures_util::stream::iter(groups)
        .map(|group| async move {
            let mut wrong = Vec::new();
            for (route, outcomes) in group {
                for (who, want) in ROLES.into_iter().zip(outcomes) {
                    let (status, reply) = attempt(app, w, route, who, want).await;
                    if Outcome::of_status(status) != Some(want) {
                        wrong.push(report("route", route, who, want, &status.to_string(), &reply));
                    }
                }
            }
            wrong
        })
        .buffer_unordered(4)
        .flat_map(futures_util::stream::iter)
        .collect()
        .await;
    wrong.sort();
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));

    // Where a host may read, only their own part: their shifts of the session.
    let host = w.token(app, Who::Host);
    let (status, shifts) = send(
        app,
        host.as_deref(),
        Request::new(Method::GET, format!("/v1/sessions/{}/shifts", w.session)),
    )
    .await;
    let items = shifts["items"].as_array().unwrap();
    assert!(
        status == 200 && !items.is_empty() && items.iter().all(|s| s["host_id"] == json!(w.host)),
        "{shifts}"
    );
    // The buyer's routes answer for the token's sub: another viewer's lists
    // hold only their own orders (from their cell of the orders row), none of
    // the buyer's.
    let moderator = w.token(app, Who::Moderator);
    for path in [
        "/v1/me/orders".to_string(),
        format!("/v1/me/sessions/{}", w.session),
    ] {
        let (status, mine) = send(app, moderator.as_deref(), Request::new(Method::GET, path)).await;
        let orders = mine.get("items").or_else(|| mine.get("orders"));
        assert!(
            status == 200
                && orders
                    .and_then(Value::as_array)
                    .is_some_and(|o| o.iter().all(|o| o["buyer_id"] == MODERATOR)),
            "{mine}"
        );
    }
    // Another agency cannot put the agency's host on its roster.
    let (status, body) = send(
        app,
        w.token(app, Who::OtherAgency).as_deref(),
        Request::new(Method::POST, format!("/v1/agencies/{}/roster", w.other_agency))
            .json(json!({"host_id": w.host})),
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (409, Some("host_on_another_roster")),
        "{body}"
    );
}

// ------------------------------------------------------------ socket commands

/// The `data` of `kind`: valid in every way but who sends it.
fn command_data(w: &World, kind: &str) -> Value {
    match kind {
        "ping" | "host.unpin" => json!({}),
        "chat.send" => json!({"text": "hello from the matrix"}),
        "like" => json!({"count": 1}),
        "host.announce" | "host.message" => json!({"text": "try #1"}),
        "host.pin" => json!({"item": {"link_number": 1}}),
        "mod.mute" | "mod.ban" => json!({"user": "matrix-target", "seconds": 60}),
        "mod.unmute" | "mod.unban" => json!({"user": "matrix-target"}),
        "mod.slow_mode" => json!({"seconds": 0}),
        "mod.blocked_words" => json!({"words": []}),
        "mod.grant" | "mod.revoke" => json!({"user": "matrix-appointee"}),
        "deal.buy" => {
            json!({"deal_id": w.deal, "quantity": 1, "idempotency_key": Uuid::new_v4().to_string()})
        }
        "coupon.claim" => json!({"coupon_drop_id": w.coupon_drop}),
        "giveaway.enter" => json!({"giveaway_id": w.giveaway}),
        "group_buy.join" => json!({"group_buy_id": w.group_buy, "quantity": 1,
                                   "idempotency_key": Uuid::new_v4().to_string()}),
        "auction.bid" => json!({"auction_id": w.auction, "max_minor": 1_000_000 + w.slot() * 1000}),
        other => panic!("no data for `{other}`: add it to `command_data`"),
    }
}

#[tokio::test]
async fn every_socket_command_answers_every_role_as_the_matrix_says() {
    let (app, w) = app_and_world().await;
    let mut sockets: Vec<(Who, Ws)> = Vec::new();
    for who in ROLES {
        if let Some(token) = w.token(&app, who) {
            sockets.push((who, socket::join(app.addr, w.session, &token).await));
        }
    }
    // The moderator's rights hold once the host's appointment (in
    // `World::build`) has reached the room on this node.
    let moderator = ROLES[1..].iter().position(|w| *w == Who::Moderator).unwrap();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let reply = sockets[moderator]
            .1
            .call("mod.unmute", json!({"user": "nobody"}))
            .await;
        if reply["type"] == "ack" {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the moderator never got rights: {reply}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }

    let mut wrong = Vec::new();
    for (kind, outcomes) in rows(SOCKET) {
        for (who, want) in ROLES.into_iter().zip(outcomes) {
            let (got, detail) = match sockets.iter_mut().find(|(w, _)| *w == who) {
                // No token: the room does not open.
                None => {
                    let status = handshake(&app, w.session, None).await;
                    (Outcome::of_status(status), json!(status))
                }
                Some((_, ws)) => {
                    let reply = ws.call(kind, command_data(&w, kind)).await;
                    let got = match (reply["type"].as_str(), reply["code"].as_str()) {
                        (Some("ack"), _) => Some(Outcome::Ok),
                        (Some("error"), Some("forbidden")) => Some(Outcome::Forbidden),
                        _ => None,
                    };
                    (got, reply)
                }
            };
            if got != Some(want) {
                let got = got.map_or("an unexpected answer", Outcome::as_str);
                wrong.push(report("command", kind, who, want, got, &detail));
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}
