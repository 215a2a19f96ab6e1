//! Fulfilment and returns over HTTP: the brand ships and delivers, the buyer
//! asks for a return, the brand approves (refund) or refuses it.

use axum::extract::State;
use hawker_commerce::fulfilment::{self, ReturnDecision, ReturnRequest, Shipment};
use hawker_commerce::journey::OrderDetail;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::auth::Auth;
use super::error::{ApiResult, ErrorBody, Json, Path, Unauthenticated, Unavailable};
use super::AppState;

/// The fulfilment and return routes, for `api_router` to merge.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(ship))
        .routes(routes!(deliver))
        .routes(routes!(request_return))
        .routes(routes!(approve_return))
        .routes(routes!(refuse_return))
}

/// The product's brand (or an admin) ships a paid order with its carrier and tracking number.
#[utoipa::path(post, path = "/v1/orders/{order_id}/shipment", tag = "fulfilment", security(("bearer" = [])),
    params(("order_id" = Uuid, Path)), request_body = Shipment,
    responses(
        (status = 200, body = OrderDetail),
        (status = 400, body = ErrorBody, description = "bad_path, bad_json, bad_carrier, bad_tracking_number"),
        Unauthenticated,
        (status = 403, body = ErrorBody, description = "the buyer may not ship their own order"),
        (status = 404, body = ErrorBody, description = "no such order the caller may see"),
        (status = 409, body = ErrorBody, description = "order_not_paid, already_shipped"),
        Unavailable,
    ))]
pub async fn ship(
    State(state): State<AppState>,
    auth: Auth,
    Path(order_id): Path<Uuid>,
    Json(shipment): Json<Shipment>,
) -> ApiResult<Json<OrderDetail>> {
    Ok(Json(
        fulfilment::ship(&state.commerce, auth.claims(), order_id, shipment).await?,
    ))
}

/// The product's brand (or an admin) marks a shipped order delivered; the return window opens.
#[utoipa::path(post, path = "/v1/orders/{order_id}/delivery", tag = "fulfilment", security(("bearer" = [])),
    params(("order_id" = Uuid, Path)),
    responses(
        (status = 200, body = OrderDetail),
        (status = 400, body = ErrorBody, description = "bad_path"),
        Unauthenticated,
        (status = 403, body = ErrorBody, description = "the buyer may not mark their own order delivered"),
        (status = 404, body = ErrorBody, description = "no such order the caller may see"),
        (status = 409, body = ErrorBody, description = "not_shipped, already_delivered"),
        Unavailable,
    ))]
pub async fn deliver(
    State(state): State<AppState>,
    auth: Auth,
    Path(order_id): Path<Uuid>,
) -> ApiResult<Json<OrderDetail>> {
    Ok(Json(
        fulfilment::deliver(&state.commerce, auth.claims(), order_id).await?,
    ))
}

/// The buyer asks to return a delivered, paid order within
/// `commerce.return_window_secs` of its delivery.
#[utoipa::path(post, path = "/v1/orders/{order_id}/return", tag = "fulfilment", security(("bearer" = [])),
    params(("order_id" = Uuid, Path)), request_body = ReturnRequest,
    responses(
        (status = 200, body = OrderDetail),
        (status = 400, body = ErrorBody, description = "bad_path, bad_json, bad_reason"),
        Unauthenticated,
        (status = 404, body = ErrorBody, description = "no such order of the caller's"),
        (status = 409, body = ErrorBody, description = "not_delivered, order_not_paid, return_window_closed, return_exists"),
        Unavailable,
    ))]
pub async fn request_return(
    State(state): State<AppState>,
    auth: Auth,
    Path(order_id): Path<Uuid>,
    Json(request): Json<ReturnRequest>,
) -> ApiResult<Json<OrderDetail>> {
    Ok(Json(
        fulfilment::request_return(&state.commerce, auth.claims(), order_id, request).await?,
    ))
}

/// The product's brand (or an admin) approves a requested return: the order
/// is refunded in full (a refund of kind `return`) and the commission on it
/// is clawed back.
#[utoipa::path(post, path = "/v1/orders/{order_id}/return/approve", tag = "fulfilment", security(("bearer" = [])),
    params(("order_id" = Uuid, Path)), request_body = ReturnDecision,
    responses(
        (status = 200, body = OrderDetail),
        (status = 400, body = ErrorBody, description = "bad_path, bad_json, bad_note"),
        Unauthenticated,
        (status = 403, body = ErrorBody, description = "the buyer may not decide their own return"),
        (status = 404, body = ErrorBody, description = "no such order the caller may see, or no return asked for"),
        (status = 409, body = ErrorBody, description = "return_already_decided, order_not_paid"),
        Unavailable,
    ))]
pub async fn approve_return(
    State(state): State<AppState>,
    auth: Auth,
    Path(order_id): Path<Uuid>,
    Json(decision): Json<ReturnDecision>,
) -> ApiResult<Json<OrderDetail>> {
    Ok(Json(
        fulfilment::decide_return(&state.commerce, auth.claims(), order_id, true, decision).await?,
    ))
}

/// The product's brand (or an admin) refuses a requested return.
#[utoipa::path(post, path = "/v1/orders/{order_id}/return/refuse", tag = "fulfilment", security(("bearer" = [])),
    params(("order_id" = Uuid, Path)), request_body = ReturnDecision,
    responses(
        (status = 200, body = OrderDetail),
        (status = 400, body = ErrorBody, description = "bad_path, bad_json, bad_note"),
        Unauthenticated,
        (status = 403, body = ErrorBody, description = "the buyer may not decide their own return"),
        (status = 404, body = ErrorBody, description = "no such order the caller may see, or no return asked for"),
        (status = 409, body = ErrorBody, description = "return_already_decided"),
        Unavailable,
    ))]
pub async fn refuse_return(
    State(state): State<AppState>,
    auth: Auth,
    Path(order_id): Path<Uuid>,
    Json(decision): Json<ReturnDecision>,
) -> ApiResult<Json<OrderDetail>> {
    Ok(Json(
        fulfilment::decide_return(&state.commerce, auth.claims(), order_id, false, decision).await?,
    ))
}
