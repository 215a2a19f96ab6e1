//! Group buys over HTTP: the host opens and cancels them, viewers join with
//! a quantity (an `Idempotency-Key` per join, as for a purchase), anyone
//! signed in reads them (docs/protocol.md, "Group buys").

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use hawker_agency::page::PageQuery;
use hawker_live::groupbuys::{
    self, CancelGroupBuy, GroupBuy, GroupBuyPage, GroupBuyView, JoinGroupBuy, Joined, NewGroupBuy,
};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::auth::Auth;
use super::error::{ApiResult, AuthErrors, ErrorBody, Json, Path, Query, Unauthenticated, Unavailable};
use super::AppState;

/// Group-buy routes, for `api_router` to merge.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_group_buy, session_group_buys))
        .routes(routes!(get_group_buy))
        .routes(routes!(join_group_buy))
        .routes(routes!(cancel_group_buy))
}

/// Opens a group buy on a lineup item (host, agency, admin): its stock is
/// taken from the item's campaign now, the lowest tier's price is held to
/// the campaign floor, and the room receives `group_buy.started`.
#[utoipa::path(post, path = "/v1/sessions/{session_id}/group-buys", tag = "group buys", security(("bearer" = [])),
    params(("session_id" = Uuid, Path)), request_body = NewGroupBuy,
    responses(
        (status = 201, body = GroupBuy),
        (status = 400, body = ErrorBody, description = "bad_tiers, bad_min_participants, bad_duration, bad_cap, \
            bad_stock, price_below_floor, bad_json"),
        AuthErrors,
        (status = 404, body = ErrorBody, description = "no such session or lineup item (link number)"),
        (status = 409, body = ErrorBody, description = "group_buy_running (one per lineup item), insufficient_stock \
            (or the campaign's allocation), session_ended"),
        Unavailable,
    ))]
pub async fn create_group_buy(
    State(state): State<AppState>,
    auth: Auth,
    Path(session_id): Path<Uuid>,
    Json(new): Json<NewGroupBuy>,
) -> ApiResult<(StatusCode, Json<GroupBuy>)> {
    let group_buy = groupbuys::create(&state.live, auth.claims(), session_id, new).await?;
    Ok((StatusCode::CREATED, Json(group_buy)))
}

/// The session's group buys, oldest first, a page at a time (`limit`, `cursor`).
#[utoipa::path(get, path = "/v1/sessions/{session_id}/group-buys", tag = "group buys", security(("bearer" = [])),
    params(("session_id" = Uuid, Path), PageQuery),
    responses(
        (status = 200, body = GroupBuyPage),
        (status = 400, body = ErrorBody, description = "bad_limit, bad_cursor"),
        Unauthenticated,
        Unavailable,
    ))]
pub async fn session_group_buys(
    State(state): State<AppState>,
    _auth: Auth,
    Path(session_id): Path<Uuid>,
    Query(page): Query<PageQuery>,
) -> ApiResult<Json<GroupBuyPage>> {
    Ok(Json(
        groupbuys::session_group_buys(&state.live, session_id, &page).await?,
    ))
}

/// One group buy: its tiers, the participants and units so far, the tier
/// in force and the next one; with `you`, the caller's own part (units,
/// invite code, participants they brought, their order once it succeeded).
#[utoipa::path(get, path = "/v1/group-buys/{group_buy_id}", tag = "group buys", security(("bearer" = [])),
    params(("group_buy_id" = Uuid, Path)),
    responses(
        (status = 200, body = GroupBuyView),
        Unauthenticated,
        (status = 404, body = ErrorBody),
        Unavailable,
    ))]
pub async fn get_group_buy(
    State(state): State<AppState>,
    auth: Auth,
    Path(group_buy_id): Path<Uuid>,
) -> ApiResult<Json<GroupBuyView>> {
    Ok(Json(
        groupbuys::get(&state.live, auth.claims(), group_buy_id).await?,
    ))
}

/// Joins a group buy (viewer tokens only) with a quantity. Requires an
/// `Idempotency-Key` header: the same key with the same quantity answers
/// the first join (`replayed: true`, 200); with another quantity,
/// `idempotency_key_reused`. Joining again with a new key adds units, up
/// to the cap. Nobody is charged now: when the countdown ends, each
/// participant gets one order at the final tier's price, or none.
#[utoipa::path(post, path = "/v1/group-buys/{group_buy_id}/joins", tag = "group buys", security(("bearer" = [])),
    params(("group_buy_id" = Uuid, Path),
           ("Idempotency-Key" = String, Header, min_length = 1, max_length = 200,
            pattern = "^[!-~]([ -~]{0,198}[!-~])?$",
            description = "1 to 200 visible ASCII characters (inner spaces allowed), unique per join")),
    request_body = JoinGroupBuy,
    responses(
        (status = 201, body = Joined, description = "joined (committed)"),
        (status = 200, body = Joined, description = "the replay of a committed join (`replayed: true`)"),
        (status = 400, body = ErrorBody, description = "bad_quantity, bad_invite, bad_idempotency_key, missing_idempotency_key, bad_json"),
        Unauthenticated,
        (status = 403, body = ErrorBody, description = "forbidden: host, agency, brand and admin tokens may not join"),
        (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "group_buy_ended, cap_exceeded, sold_out, idempotency_key_reused, duplicate_request"),
        (status = 503, body = ErrorBody, description = "Postgres or Redis unreachable; retry with the same key"),
    ))]
pub async fn join_group_buy(
    State(state): State<AppState>,
    auth: Auth,
    Path(group_buy_id): Path<Uuid>,
    headers: HeaderMap,
    Json(request): Json<JoinGroupBuy>,
) -> ApiResult<(StatusCode, Json<Joined>)> {
    let key = super::commerce::idempotency_key(&headers)?;
    let claims = auth.claims();
    let joined = groupbuys::join(&state.live, &claims.sub, claims.role, group_buy_id, key, request).await?;
    let status = if joined.replayed {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((status, Json(joined)))
}

/// Calls a running group buy off (host, agency, admin): nobody is charged,
/// the units go back, the room gets `group_buy.ended` with `outcome:
/// cancelled` and the reason, each participant a `group_buy.failed` notice.
#[utoipa::path(post, path = "/v1/group-buys/{group_buy_id}/cancel", tag = "group buys", security(("bearer" = [])),
    params(("group_buy_id" = Uuid, Path)), request_body = CancelGroupBuy,
    responses(
        (status = 200, body = GroupBuy),
        (status = 400, body = ErrorBody, description = "bad_reason"),
        AuthErrors,
        (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "group_buy_ended (already settled or cancelled), session_ended"),
        Unavailable,
    ))]
pub async fn cancel_group_buy(
    State(state): State<AppState>,
    auth: Auth,
    Path(group_buy_id): Path<Uuid>,
    Json(body): Json<CancelGroupBuy>,
) -> ApiResult<Json<GroupBuy>> {
    Ok(Json(
        groupbuys::cancel(&state.live, auth.claims(), group_buy_id, body).await?,
    ))
}
