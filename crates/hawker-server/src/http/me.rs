//! `/v1/me`: who the token says you are, and the buyer's journey as the
//! buyer sees it (their orders, coupons, one session's holdings, their
//! shipping address). Every route here is scoped to the token's `sub`.

use axum::extract::State;
use hawker_agency::page::PageQuery;
use hawker_commerce::journey::{self, CouponPage, OrderDetail, OrderFilter, OrderPage, SessionHoldings};
use hawker_commerce::profile::{self, Profile, ShippingAddress};
use hawker_core::Claims;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::auth::Auth;
use super::error::{ApiResult, ErrorBody, Json, Path, Query, Unauthenticated, Unavailable};
use super::AppState;

/// The `/v1/me` routes, for `api_router` to merge.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(me))
        .routes(routes!(my_orders))
        .routes(routes!(my_order))
        .routes(routes!(cancel_order))
        .routes(routes!(my_coupons))
        .routes(routes!(my_session))
        .routes(routes!(shipping_address, set_shipping_address))
}

/// The claims of the presented token.
#[utoipa::path(get, path = "/v1/me", tag = "auth", security(("bearer" = [])), responses(
    (status = 200, body = Claims),
    Unauthenticated,
))]
pub async fn me(auth: Auth) -> Json<Claims> {
    Json(auth.0)
}

/// The caller's orders, newest first, a page at a time; only orders the
/// token's `sub` placed, never another buyer's.
#[utoipa::path(get, path = "/v1/me/orders", tag = "journey", security(("bearer" = [])),
    params(OrderFilter, PageQuery),
    responses(
        (status = 200, body = OrderPage),
        (status = 400, body = ErrorBody, description = "bad_query, bad_session_id, bad_status, bad_limit, bad_cursor"),
        Unauthenticated,
        Unavailable,
    ))]
pub async fn my_orders(
    State(state): State<AppState>,
    auth: Auth,
    Query(filter): Query<OrderFilter>,
    Query(page): Query<PageQuery>,
) -> ApiResult<Json<OrderPage>> {
    Ok(Json(
        journey::my_orders(&state.commerce, auth.claims(), &filter, &page).await?,
    ))
}

/// One of the caller's orders with its fulfilment, return and events (404 for another buyer's).
#[utoipa::path(get, path = "/v1/me/orders/{order_id}", tag = "journey", security(("bearer" = [])),
    params(("order_id" = Uuid, Path)),
    responses(
        (status = 200, body = OrderDetail),
        (status = 400, body = ErrorBody, description = "bad_path"),
        Unauthenticated,
        (status = 404, body = ErrorBody, description = "no such order of the caller's"),
        Unavailable,
    ))]
pub async fn my_order(
    State(state): State<AppState>,
    auth: Auth,
    Path(order_id): Path<Uuid>,
) -> ApiResult<Json<OrderDetail>> {
    Ok(Json(
        journey::my_order(&state.commerce, auth.claims(), order_id).await?,
    ))
}

/// Cancels one of the caller's orders that waits for payment. Its units go
/// back at once: to the deal while it runs (the room gets `order.cancelled`
/// and a `deal.stock` figure), to the SKU after.
#[utoipa::path(post, path = "/v1/me/orders/{order_id}/cancel", tag = "journey", security(("bearer" = [])),
    params(("order_id" = Uuid, Path)),
    responses(
        (status = 200, body = OrderDetail),
        (status = 400, body = ErrorBody, description = "bad_path"),
        Unauthenticated,
        (status = 404, body = ErrorBody, description = "no such order of the caller's"),
        (status = 409, body = ErrorBody, description = "order_not_pending"),
        Unavailable,
    ))]
pub async fn cancel_order(
    State(state): State<AppState>,
    auth: Auth,
    Path(order_id): Path<Uuid>,
) -> ApiResult<Json<OrderDetail>> {
    Ok(Json(
        journey::cancel_order(&state.commerce, auth.claims(), order_id).await?,
    ))
}

/// The coupons the caller claimed, newest first, a page at a time.
#[utoipa::path(get, path = "/v1/me/coupons", tag = "journey", security(("bearer" = [])),
    params(PageQuery),
    responses(
        (status = 200, body = CouponPage),
        (status = 400, body = ErrorBody, description = "bad_query, bad_limit, bad_cursor"),
        Unauthenticated,
        Unavailable,
    ))]
pub async fn my_coupons(
    State(state): State<AppState>,
    auth: Auth,
    Query(page): Query<PageQuery>,
) -> ApiResult<Json<CouponPage>> {
    Ok(Json(
        journey::my_coupons(&state.commerce, auth.claims(), &page).await?,
    ))
}

/// Everything the caller holds in one session: their orders and the coupons they claimed.
#[utoipa::path(get, path = "/v1/me/sessions/{session_id}", tag = "journey", security(("bearer" = [])),
    params(("session_id" = Uuid, Path)),
    responses(
        (status = 200, body = SessionHoldings),
        (status = 400, body = ErrorBody, description = "bad_path"),
        Unauthenticated,
        (status = 404, body = ErrorBody, description = "no such session"),
        Unavailable,
    ))]
pub async fn my_session(
    State(state): State<AppState>,
    auth: Auth,
    Path(session_id): Path<Uuid>,
) -> ApiResult<Json<SessionHoldings>> {
    Ok(Json(
        journey::my_session(&state.commerce, auth.claims(), session_id).await?,
    ))
}

/// The caller's shipping address (null until given).
#[utoipa::path(get, path = "/v1/me/shipping-address", tag = "journey", security(("bearer" = [])),
    responses((status = 200, body = Profile), Unauthenticated, Unavailable))]
pub async fn shipping_address(State(state): State<AppState>, auth: Auth) -> ApiResult<Json<Profile>> {
    Ok(Json(profile::profile(&state.commerce, auth.claims()).await?))
}

/// Keeps a shipping address on the caller's profile (replacing the last);
/// each order placed from then on carries a copy of it.
#[utoipa::path(put, path = "/v1/me/shipping-address", tag = "journey", security(("bearer" = [])),
    request_body = ShippingAddress,
    responses(
        (status = 200, body = Profile),
        (status = 400, body = ErrorBody, description = "bad_address, bad_json"),
        Unauthenticated,
        Unavailable,
    ))]
pub async fn set_shipping_address(
    State(state): State<AppState>,
    auth: Auth,
    Json(address): Json<ShippingAddress>,
) -> ApiResult<Json<Profile>> {
    Ok(Json(
        profile::set_shipping_address(&state.commerce, auth.claims(), address).await?,
    ))
}
