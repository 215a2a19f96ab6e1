//! Coupon drops over HTTP: the host creates a drop, viewers claim coupons.
//! The same claim is the `coupon.claim` socket command.

use axum::extract::State;
use axum::http::StatusCode;
use hawker_agency::page::PageQuery;
use hawker_commerce::coupons::{self, CouponClaim, CouponClaimPage, CouponDrop, NewCouponDrop};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::auth::Auth;
use super::error::{ApiResult, ErrorBody, Json, Path, Query, Unauthenticated, Unavailable};
use super::AppState;

/// Coupon drops and claims, for `api_router` to merge.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_coupon_drop))
        .routes(routes!(my_coupon_claims))
        .routes(routes!(get_coupon_drop))
        .routes(routes!(claim_coupon))
}

/// Creates a coupon drop (host, agency, admin). Without `drop_at` the coupons
/// drop at once (`dropped`) and the room receives `coupon.dropped`; with it the
/// drop is `scheduled`, the room receives `coupon.scheduled` now and
/// `coupon.dropped` at that time, exactly once across nodes.
#[utoipa::path(post, path = "/v1/sessions/{session_id}/coupon-drops", tag = "coupons",
    security(("bearer" = [])),
    params(("session_id" = Uuid, Path, description = "the session")),
    request_body = NewCouponDrop,
    responses(
        (status = 201, body = CouponDrop, description = "the drop"),
        (status = 400, body = ErrorBody, description = "bad_total, bad_discount_kind, bad_discount_value, \
            bad_currency, bad_min_spend, bad_per_viewer_limit, bad_claim_window, bad_drop_at, \
            bad_restriction (the lineup item or deal is not this session's), currency_mismatch, bad_json"),
        Unauthenticated,
        (status = 403, body = ErrorBody, description = "not the session's host, its agency or an admin"),
        (status = 404, body = ErrorBody, description = "no such session"),
        (status = 409, body = ErrorBody, description = "session_ended"),
        Unavailable,
    ))]
pub async fn create_coupon_drop(
    State(state): State<AppState>,
    auth: Auth,
    Path(session_id): Path<Uuid>,
    Json(new): Json<NewCouponDrop>,
) -> ApiResult<(StatusCode, Json<CouponDrop>)> {
    let drop = coupons::create_drop(&state.commerce, auth.claims(), session_id, new).await?;
    Ok((StatusCode::CREATED, Json(drop)))
}

/// One coupon drop: its discount, window and how many coupons are left.
#[utoipa::path(get, path = "/v1/coupon-drops/{coupon_drop_id}", tag = "coupons",
    security(("bearer" = [])),
    params(("coupon_drop_id" = Uuid, Path, description = "the drop")),
    responses(
        (status = 200, body = CouponDrop),
        (status = 400, body = ErrorBody, description = "bad_path: the id is not a UUID"),
        Unauthenticated,
        (status = 404, body = ErrorBody, description = "no such drop"),
        Unavailable,
    ))]
pub async fn get_coupon_drop(
    State(state): State<AppState>,
    _auth: Auth,
    Path(coupon_drop_id): Path<Uuid>,
) -> ApiResult<Json<CouponDrop>> {
    Ok(Json(coupons::get_drop(&state.commerce, coupon_drop_id).await?))
}

/// Claims a coupon for the caller (any authenticated user). Never more claims
/// than coupons, at most `per_viewer_limit` per viewer, only during the window.
/// Pass the claim's id as `coupon_claim_id` when buying.
#[utoipa::path(post, path = "/v1/coupon-drops/{coupon_drop_id}/claims", tag = "coupons",
    security(("bearer" = [])),
    params(("coupon_drop_id" = Uuid, Path, description = "the drop")),
    responses(
        (status = 201, body = CouponClaim, description = "the caller's claim"),
        (status = 400, body = ErrorBody, description = "bad_path: the id is not a UUID"),
        Unauthenticated,
        (status = 404, body = ErrorBody, description = "no such drop"),
        (status = 409, body = ErrorBody, description = "coupon_not_dropped (before the drop), \
            coupon_window_closed, coupon_exhausted (every coupon is claimed), \
            coupon_already_claimed (the caller holds its per-viewer limit)"),
        Unavailable,
    ))]
pub async fn claim_coupon(
    State(state): State<AppState>,
    auth: Auth,
    Path(coupon_drop_id): Path<Uuid>,
) -> ApiResult<(StatusCode, Json<CouponClaim>)> {
    let claim =
        coupons::claim_with_flag(&state.commerce, &state.redis, &auth.claims().sub, coupon_drop_id).await?;
    Ok((StatusCode::CREATED, Json(claim)))
}

/// The caller's coupon claims in a session (used or not), oldest first, a
/// page at a time (`limit`, `cursor`).
#[utoipa::path(get, path = "/v1/sessions/{session_id}/coupon-claims", tag = "coupons",
    security(("bearer" = [])),
    params(("session_id" = Uuid, Path, description = "the session"), PageQuery),
    responses(
        (status = 200, body = CouponClaimPage),
        (status = 400, body = ErrorBody, description = "bad_path: the id is not a UUID; bad_limit, bad_cursor"),
        Unauthenticated,
        Unavailable,
    ))]
pub async fn my_coupon_claims(
    State(state): State<AppState>,
    auth: Auth,
    Path(session_id): Path<Uuid>,
    Query(page): Query<PageQuery>,
) -> ApiResult<Json<CouponClaimPage>> {
    Ok(Json(
        coupons::list_claims_for_viewer(&state.commerce, &auth.claims().sub, session_id, &page).await?,
    ))
}
