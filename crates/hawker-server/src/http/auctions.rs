//! Live auctions over HTTP: start, read, bid, the public bid log, void and
//! the second-chance offer. The socket's `auction.bid` runs the same
//! `hawker_live::auctions::place_bid`.

use axum::extract::State;
use axum::http::StatusCode;
use hawker_agency::page::PageQuery;
use hawker_live::auctions::{
    self, Auction, AuctionPage, BidAccepted, BidLog, Bidder, NewAuction, PlaceBid, SecondChance, VoidAuction,
};
use serde::Deserialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::auth::Auth;
use super::error::{ApiResult, AuthErrors, ErrorBody, Json, Path, Query, Unauthenticated, Unavailable};
use super::AppState;

/// The auction routes, for `api_router` to merge.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_auction, session_auctions))
        .routes(routes!(get_auction))
        .routes(routes!(place_bid))
        .routes(routes!(bid_log))
        .routes(routes!(void_auction))
        .routes(routes!(second_chance))
}

/// Starts an auction on a lineup item (the session's host, its agency, an
/// admin). Its unit comes out of the campaign allocation now; the room
/// receives `auction.started`.
#[utoipa::path(post, path = "/v1/sessions/{session_id}/auctions", tag = "auctions", security(("bearer" = [])),
    params(("session_id" = Uuid, Path)), request_body = NewAuction,
    responses(
        (status = 201, body = Auction),
        (status = 400, body = ErrorBody, description = "bad_price, bad_reserve, bad_quantity, bad_duration, bad_snipe_window, bad_increments, price_below_floor, bad_json"),
        AuthErrors,
        (status = 404, body = ErrorBody, description = "no such session or lineup item"),
        (status = 409, body = ErrorBody, description = "auction_running, insufficient_stock, allocation_exhausted, sku_not_in_campaign, campaign_not_active, session_ended"),
        Unavailable,
    ))]
pub async fn create_auction(
    State(state): State<AppState>,
    auth: Auth,
    Path(session_id): Path<Uuid>,
    Json(new): Json<NewAuction>,
) -> ApiResult<(StatusCode, Json<Auction>)> {
    let auction = auctions::create_auction(&state.live, auth.claims(), session_id, new).await?;
    Ok((StatusCode::CREATED, Json(auction)))
}

/// The session's auctions, oldest first, a page at a time (`limit`, `cursor`).
#[utoipa::path(get, path = "/v1/sessions/{session_id}/auctions", tag = "auctions", security(("bearer" = [])),
    params(("session_id" = Uuid, Path), PageQuery),
    responses(
        (status = 200, body = AuctionPage),
        (status = 400, body = ErrorBody, description = "bad_path, bad_limit, bad_cursor"),
        Unauthenticated,
        (status = 404, body = ErrorBody, description = "no such session"),
        Unavailable,
    ))]
pub async fn session_auctions(
    State(state): State<AppState>,
    auth: Auth,
    Path(session_id): Path<Uuid>,
    Query(page): Query<PageQuery>,
) -> ApiResult<Json<AuctionPage>> {
    Ok(Json(
        auctions::session_auctions(&state.live, auth.claims(), session_id, &page).await?,
    ))
}

/// One auction. The host side sees its reserve, winner and order; the
/// winner their order; everyone else the public view.
#[utoipa::path(get, path = "/v1/auctions/{auction_id}", tag = "auctions", security(("bearer" = [])),
    params(("auction_id" = Uuid, Path)),
    responses((status = 200, body = Auction), Unauthenticated, (status = 404, body = ErrorBody), Unavailable))]
pub async fn get_auction(
    State(state): State<AppState>,
    auth: Auth,
    Path(auction_id): Path<Uuid>,
) -> ApiResult<Json<Auction>> {
    Ok(Json(
        auctions::get_auction(&state.live, auth.claims(), auction_id).await?,
    ))
}

/// Bids: an exact `amount_minor`, a `max_minor` (the server bids for you by
/// the increment up to it), or both. Only viewers bid.
#[utoipa::path(post, path = "/v1/auctions/{auction_id}/bids", tag = "auctions", security(("bearer" = [])),
    params(("auction_id" = Uuid, Path)), request_body = PlaceBid,
    responses(
        (status = 201, body = BidAccepted, description = "accepted, in the auction's global order (`seq`); `leading` false when another maximum answered it"),
        (status = 400, body = ErrorBody, description = "bad_bid, bad_json"),
        Unauthenticated,
        (status = 403, body = ErrorBody, description = "hosts, agencies, brands and admins cannot bid; buyers at risk (unpaid auction wins) cannot bid"),
        (status = 404, body = ErrorBody, description = "no such auction"),
        (status = 409, body = ErrorBody, description = "bid_too_low (the message names the minimum acceptable bid), already_leading, auction_ended"),
        Unavailable,
    ))]
pub async fn place_bid(
    State(state): State<AppState>,
    auth: Auth,
    Path(auction_id): Path<Uuid>,
    Json(bid): Json<PlaceBid>,
) -> ApiResult<(StatusCode, Json<BidAccepted>)> {
    let accepted = auctions::place_bid(&state.live, &Bidder::of(auth.claims()), auction_id, bid).await?;
    Ok((StatusCode::CREATED, Json(accepted)))
}

/// Where a page of the bid log starts.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct BidLogQuery {
    /// Bids after this `seq` (default 0: from the first).
    #[serde(default)]
    #[param(minimum = 0)]
    pub after: Option<i64>,
    /// 1 to 1,000 (default 1,000).
    #[serde(default)]
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<i64>,
}

/// The public bid log: accepted bids in their global order with pseudonymous
/// bidders, the terms, and (once the auction is over) every bid's maximum and
/// the reserve, so anyone can replay it (docs/protocol.md, "Auctions").
#[utoipa::path(get, path = "/v1/auctions/{auction_id}/bids", tag = "auctions",
    params(("auction_id" = Uuid, Path), BidLogQuery),
    responses(
        (status = 200, body = BidLog),
        (status = 400, body = ErrorBody, description = "bad_limit, bad_query"),
        (status = 404, body = ErrorBody),
        Unavailable,
    ))]
pub async fn bid_log(
    State(state): State<AppState>,
    Path(auction_id): Path<Uuid>,
    Query(query): Query<BidLogQuery>,
) -> ApiResult<Json<BidLog>> {
    Ok(Json(
        auctions::bid_log(&state.live, auction_id, query.after, query.limit).await?,
    ))
}

/// Voids a running auction with a reason (the session's host, its agency, an
/// admin): nobody wins, the unit goes back, the room receives `auction.voided`.
#[utoipa::path(post, path = "/v1/auctions/{auction_id}/void", tag = "auctions", security(("bearer" = [])),
    params(("auction_id" = Uuid, Path)), request_body = VoidAuction,
    responses(
        (status = 200, body = Auction),
        (status = 400, body = ErrorBody, description = "bad_reason, bad_json"),
        AuthErrors, (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "auction_over, session_ended"),
        Unavailable,
    ))]
pub async fn void_auction(
    State(state): State<AppState>,
    auth: Auth,
    Path(auction_id): Path<Uuid>,
    Json(void): Json<VoidAuction>,
) -> ApiResult<Json<Auction>> {
    Ok(Json(
        auctions::void_auction(&state.live, auth.claims(), auction_id, void).await?,
    ))
}

/// The winner's order lapsed (expired or cancelled unpaid): offers the unit
/// to the runner-up at their last (highest) bid, which creates their order.
/// Once per auction; recorded.
#[utoipa::path(post, path = "/v1/auctions/{auction_id}/second-chance", tag = "auctions", security(("bearer" = [])),
    params(("auction_id" = Uuid, Path)),
    responses(
        (status = 201, body = SecondChance),
        AuthErrors, (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "no_winner, winner_order_open, second_chance_made, no_runner_up, runner_up_below_reserve, insufficient_stock, session_ended"),
        Unavailable,
    ))]
pub async fn second_chance(
    State(state): State<AppState>,
    auth: Auth,
    Path(auction_id): Path<Uuid>,
) -> ApiResult<(StatusCode, Json<SecondChance>)> {
    let offer = auctions::second_chance(&state.live, auth.claims(), auction_id).await?;
    Ok((StatusCode::CREATED, Json(offer)))
}
