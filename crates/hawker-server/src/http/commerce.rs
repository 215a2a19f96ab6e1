//! Lineups, pins, flash deals and orders over HTTP.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use hawker_agency::page::PageQuery;
use hawker_commerce::deals::{self, Deal, DealPage, LineupItem, LineupPage, NewDeal, NewLineupItem};
use hawker_commerce::order::{self, Order};
use hawker_commerce::purchase::{self, PlaceOrder};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::auth::Auth;
use super::error::{
    ApiError, ApiResult, AuthErrors, ErrorBody, Json, Path, Query, Unauthenticated, Unavailable,
};
use super::AppState;

/// Lineups, pins, deals and orders, for `api_router` to merge.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(add_lineup_item, lineup))
        .routes(routes!(pin))
        .routes(routes!(create_deal, session_deals))
        .routes(routes!(get_deal))
        .routes(routes!(end_deal))
        .routes(routes!(place_order))
        .routes(routes!(get_order))
}

/// Adds a SKU to the session's lineup (host, agency, admin).
#[utoipa::path(post, path = "/v1/sessions/{session_id}/lineup", tag = "commerce", security(("bearer" = [])),
    params(("session_id" = Uuid, Path)), request_body = NewLineupItem,
    responses(
        (status = 201, body = LineupItem),
        (status = 400, body = ErrorBody, description = "bad_link_number, wrong_brand, bad_json"),
        AuthErrors,
        (status = 404, body = ErrorBody, description = "no such session or SKU"),
        (status = 409, body = ErrorBody, description = "link_number_taken, session_ended"),
        Unavailable,
    ))]
pub async fn add_lineup_item(
    State(state): State<AppState>,
    auth: Auth,
    Path(session_id): Path<Uuid>,
    Json(item): Json<NewLineupItem>,
) -> ApiResult<(StatusCode, Json<LineupItem>)> {
    let item = deals::add_lineup_item(&state.commerce, auth.claims(), session_id, item).await?;
    Ok((StatusCode::CREATED, Json(item)))
}

/// The session's lineup, by link number, a page at a time (`limit`, `cursor`).
#[utoipa::path(get, path = "/v1/sessions/{session_id}/lineup", tag = "commerce", security(("bearer" = [])),
    params(("session_id" = Uuid, Path), PageQuery),
    responses(
        (status = 200, body = LineupPage),
        (status = 400, body = ErrorBody, description = "bad_path, bad_limit, bad_cursor"),
        Unauthenticated,
        Unavailable,
    ))]
pub async fn lineup(
    State(state): State<AppState>,
    _auth: Auth,
    Path(session_id): Path<Uuid>,
    Query(page): Query<PageQuery>,
) -> ApiResult<Json<LineupPage>> {
    Ok(Json(deals::lineup(&state.commerce, session_id, &page).await?))
}

/// "Now showing #N": the room receives `host.pinned`.
#[utoipa::path(post, path = "/v1/sessions/{session_id}/lineup/{link_number}/pin", tag = "commerce",
    security(("bearer" = [])),
    params(("session_id" = Uuid, Path), ("link_number" = i32, Path)),
    responses(
        (status = 200, body = LineupItem),
        AuthErrors, (status = 404, body = ErrorBody, description = "no such session or lineup item"),
        (status = 409, body = ErrorBody, description = "session_ended"),
        (status = 503, body = ErrorBody, description = "Postgres or Redis is unavailable; see Retry-After"),
    ))]
pub async fn pin(
    State(state): State<AppState>,
    auth: Auth,
    Path((session_id, link_number)): Path<(Uuid, i32)>,
) -> ApiResult<Json<LineupItem>> {
    Ok(Json(
        deals::pin(&state.commerce, auth.claims(), session_id, link_number).await?,
    ))
}

/// Launches a flash deal on a lineup item. The room receives `deal.scheduled`,
/// then `deal.started` at `starts_at`, `deal.stock` while it sells, and `deal.ended`.
#[utoipa::path(post, path = "/v1/sessions/{session_id}/deals", tag = "commerce", security(("bearer" = [])),
    params(("session_id" = Uuid, Path)), request_body = NewDeal,
    responses(
        (status = 201, body = Deal),
        (status = 400, body = ErrorBody, description = "bad_price, bad_quantity, bad_cap, bad_countdown, bad_duration"),
        AuthErrors, (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "insufficient_stock, session_ended"),
        Unavailable,
    ))]
pub async fn create_deal(
    State(state): State<AppState>,
    auth: Auth,
    Path(session_id): Path<Uuid>,
    Json(new): Json<NewDeal>,
) -> ApiResult<(StatusCode, Json<Deal>)> {
    let deal = deals::create_deal(&state.commerce, auth.claims(), session_id, new).await?;
    Ok((StatusCode::CREATED, Json(deal)))
}

/// The session's deals, by start time, a page at a time (`limit`, `cursor`).
#[utoipa::path(get, path = "/v1/sessions/{session_id}/deals", tag = "commerce", security(("bearer" = [])),
    params(("session_id" = Uuid, Path), PageQuery),
    responses(
        (status = 200, body = DealPage),
        (status = 400, body = ErrorBody, description = "bad_path, bad_limit, bad_cursor"),
        Unauthenticated,
        Unavailable,
    ))]
pub async fn session_deals(
    State(state): State<AppState>,
    _auth: Auth,
    Path(session_id): Path<Uuid>,
    Query(page): Query<PageQuery>,
) -> ApiResult<Json<DealPage>> {
    Ok(Json(
        deals::session_deals(&state.commerce, session_id, &page).await?,
    ))
}

/// One deal with its sold count.
#[utoipa::path(get, path = "/v1/deals/{deal_id}", tag = "commerce", security(("bearer" = [])),
    params(("deal_id" = Uuid, Path)),
    responses((status = 200, body = Deal), Unauthenticated, (status = 404, body = ErrorBody), Unavailable))]
pub async fn get_deal(
    State(state): State<AppState>,
    _auth: Auth,
    Path(deal_id): Path<Uuid>,
) -> ApiResult<Json<Deal>> {
    Ok(Json(deals::get_deal(&state.commerce, deal_id).await?))
}

/// Ends a deal early (`deal.ended` with reason `ended_by_host`).
#[utoipa::path(post, path = "/v1/deals/{deal_id}/end", tag = "commerce", security(("bearer" = [])),
    params(("deal_id" = Uuid, Path)),
    responses(
        (status = 200, body = Deal),
        AuthErrors, (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "deal_already_ended"),
        Unavailable,
    ))]
pub async fn end_deal(
    State(state): State<AppState>,
    auth: Auth,
    Path(deal_id): Path<Uuid>,
) -> ApiResult<Json<Deal>> {
    Ok(Json(
        deals::end_deal(&state.commerce, auth.claims(), deal_id).await?,
    ))
}

/// Buys from a flash deal. Requires an `Idempotency-Key` header: the same key
/// with the same body returns the first answer; with another body,
/// `idempotency_key_reused`. Answers 201 only once the order is committed.
#[utoipa::path(post, path = "/v1/deals/{deal_id}/orders", tag = "commerce", security(("bearer" = [])),
    params(("deal_id" = Uuid, Path),
           ("Idempotency-Key" = String, Header, min_length = 1, max_length = 200,
            pattern = "^[!-~]([ -~]{0,198}[!-~])?$",
            description = "1 to 200 visible ASCII characters (inner spaces allowed), unique per purchase attempt")),
    request_body = PlaceOrder,
    responses(
        (status = 201, body = Order, description = "committed (or the replay of a committed order)"),
        (status = 400, body = ErrorBody, description = "bad_quantity, bad_idempotency_key, missing_idempotency_key, bad_json"),
        Unauthenticated,
        (status = 404, body = ErrorBody, description = "no such deal"),
        (status = 409, body = ErrorBody, description = "sold_out, cap_exceeded, deal_not_started, deal_ended, coupon_invalid, coupon_below_floor, idempotency_key_reused, duplicate_request"),
        (status = 503, body = ErrorBody, description = "Postgres or Redis unreachable; retry with the same key after Retry-After"),
    ))]
pub async fn place_order(
    State(state): State<AppState>,
    auth: Auth,
    Path(deal_id): Path<Uuid>,
    headers: HeaderMap,
    Json(request): Json<PlaceOrder>,
) -> ApiResult<(StatusCode, Json<Order>)> {
    let key = idempotency_key(&headers)?;
    let placed = purchase::place_order(&state.commerce, &auth.claims().sub, deal_id, key, request).await?;
    Ok((StatusCode::CREATED, Json(placed.order)))
}

/// The `Idempotency-Key` header: absent is `missing_idempotency_key`; present
/// but not visible ASCII (a header value may carry obs-text bytes, which
/// `to_str` refuses) is `bad_idempotency_key`, like any other key the
/// purchase path refuses.
pub(super) fn idempotency_key(headers: &HeaderMap) -> ApiResult<&str> {
    let value = headers.get("idempotency-key").ok_or_else(|| {
        ApiError::bad_request(
            "missing_idempotency_key",
            "the Idempotency-Key header is required",
        )
    })?;
    let key = value.to_str().map_err(|_| purchase::bad_idempotency_key())?;
    purchase::validate_idempotency_key(key)?;
    Ok(key)
}

/// One order: to its buyer, whoever may host its session (its agency, hosts on
/// that agency's roster), the brand of its product, and admins. Anyone else
/// gets 404, as if it did not exist.
#[utoipa::path(get, path = "/v1/orders/{order_id}", tag = "commerce", security(("bearer" = [])),
    params(("order_id" = Uuid, Path)),
    responses((status = 200, body = Order), Unauthenticated,
        (status = 404, body = ErrorBody, description = "no such order, or not the caller's to see"),
        Unavailable))]
pub async fn get_order(
    State(state): State<AppState>,
    auth: Auth,
    Path(order_id): Path<Uuid>,
) -> ApiResult<Json<Order>> {
    Ok(Json(
        order::get_order(&state.commerce, auth.claims(), order_id).await?,
    ))
}
