//! Provably fair giveaways over HTTP: the host starts and voids them, viewers
//! enter (as with the `giveaway.enter` socket command), anyone signed in reads
//! them and, once the window has closed, the frozen entry list the draw is
//! computed from (docs/protocol.md, "Giveaway draws").

use axum::extract::State;
use axum::http::StatusCode;
use hawker_agency::page::PageQuery;
use hawker_live::giveaways::{self, entry, EntryList, Giveaway, GiveawayPage, NewGiveaway, VoidGiveaway};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::auth::Auth;
use super::error::{ApiResult, AuthErrors, ErrorBody, Json, Path, Query, Unauthenticated, Unavailable};
use super::AppState;

/// Giveaway routes, for `api_router` to merge.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_giveaway, session_giveaways))
        .routes(routes!(get_giveaway))
        .routes(routes!(enter_giveaway, giveaway_entries))
        .routes(routes!(void_giveaway))
}

/// Starts a giveaway (host, agency, admin). An item prize takes one unit per
/// winner from the item's campaign now. The room receives `giveaway.started`
/// with `seed_hash`, the commitment to the draw's secret seed.
#[utoipa::path(post, path = "/v1/sessions/{session_id}/giveaways", tag = "giveaways", security(("bearer" = [])),
    params(("session_id" = Uuid, Path)), request_body = NewGiveaway,
    responses(
        (status = 201, body = Giveaway),
        (status = 400, body = ErrorBody, description = "bad_prize, bad_winners, bad_window"),
        AuthErrors,
        (status = 404, body = ErrorBody, description = "no such session, lineup item (of the session) or coupon drop"),
        (status = 409, body = ErrorBody, description = "insufficient_stock (or the campaign's allocation), \
            coupon_exhausted (fewer coupons left than winners), session_ended"),
        Unavailable,
    ))]
pub async fn create_giveaway(
    State(state): State<AppState>,
    auth: Auth,
    Path(session_id): Path<Uuid>,
    Json(new): Json<NewGiveaway>,
) -> ApiResult<(StatusCode, Json<Giveaway>)> {
    let giveaway = giveaways::create(&state.live, auth.claims(), session_id, new).await?;
    Ok((StatusCode::CREATED, Json(giveaway)))
}

/// The session's giveaways, oldest first, a page at a time (`limit`, `cursor`).
#[utoipa::path(get, path = "/v1/sessions/{session_id}/giveaways", tag = "giveaways", security(("bearer" = [])),
    params(("session_id" = Uuid, Path), PageQuery),
    responses(
        (status = 200, body = GiveawayPage),
        (status = 400, body = ErrorBody, description = "bad_limit, bad_cursor"),
        Unauthenticated,
        Unavailable,
    ))]
pub async fn session_giveaways(
    State(state): State<AppState>,
    _auth: Auth,
    Path(session_id): Path<Uuid>,
    Query(page): Query<PageQuery>,
) -> ApiResult<Json<GiveawayPage>> {
    Ok(Json(
        giveaways::session_giveaways(&state.live, session_id, &page).await?,
    ))
}

/// One giveaway: its prize, window and status; once closed the frozen list's
/// count and hash; once drawn the seed, the winning entry ids and the
/// candidates skipped as absent.
#[utoipa::path(get, path = "/v1/giveaways/{giveaway_id}", tag = "giveaways", security(("bearer" = [])),
    params(("giveaway_id" = Uuid, Path)),
    responses(
        (status = 200, body = Giveaway),
        Unauthenticated,
        (status = 404, body = ErrorBody),
        Unavailable,
    ))]
pub async fn get_giveaway(
    State(state): State<AppState>,
    _auth: Auth,
    Path(giveaway_id): Path<Uuid>,
) -> ApiResult<Json<Giveaway>> {
    Ok(Json(giveaways::get(&state.live, giveaway_id).await?))
}

/// Enters the caller (viewer tokens only), once: entering again answers the
/// same entry with `replayed: true`. The entry id is the caller's pseudonym
/// in the published list.
#[utoipa::path(post, path = "/v1/giveaways/{giveaway_id}/entries", tag = "giveaways", security(("bearer" = [])),
    params(("giveaway_id" = Uuid, Path)),
    responses(
        (status = 201, body = entry::Entry, description = "entered"),
        (status = 200, body = entry::Entry, description = "already entered: the same entry, `replayed: true`"),
        Unauthenticated,
        (status = 403, body = ErrorBody, description = "forbidden: host, agency, brand and admin tokens may not enter"),
        (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "giveaway_closed, not_eligible (only buyers in the session)"),
        Unavailable,
    ))]
pub async fn enter_giveaway(
    State(state): State<AppState>,
    auth: Auth,
    Path(giveaway_id): Path<Uuid>,
) -> ApiResult<(StatusCode, Json<entry::Entry>)> {
    let claims = auth.claims();
    let caller = entry::Caller {
        user: &claims.sub,
        role: claims.role,
        can_host: false,
        room: None,
    };
    let entry = entry::enter(&state.live, &caller, giveaway_id).await?;
    let status = if entry.replayed {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((status, Json(entry)))
}

/// The frozen entry list (every entry id, sorted) with its count and hash,
/// once the entry window has closed: each entrant can find their own entry
/// id, and with the seed revealed at the draw anyone can recompute the
/// winners (`hawker verify-draw`).
#[utoipa::path(get, path = "/v1/giveaways/{giveaway_id}/entries", tag = "giveaways", security(("bearer" = [])),
    params(("giveaway_id" = Uuid, Path)),
    responses(
        (status = 200, body = EntryList),
        Unauthenticated,
        (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "giveaway_open: published when the window closes"),
        Unavailable,
    ))]
pub async fn giveaway_entries(
    State(state): State<AppState>,
    _auth: Auth,
    Path(giveaway_id): Path<Uuid>,
) -> ApiResult<Json<EntryList>> {
    Ok(Json(giveaways::entries(&state.live, giveaway_id).await?))
}

/// Calls a giveaway off before its draw (host, agency, admin), with a reason
/// the room sees (`giveaway.voided`); an item prize's units go back.
#[utoipa::path(post, path = "/v1/giveaways/{giveaway_id}/void", tag = "giveaways", security(("bearer" = [])),
    params(("giveaway_id" = Uuid, Path)), request_body = VoidGiveaway,
    responses(
        (status = 200, body = Giveaway),
        (status = 400, body = ErrorBody, description = "bad_reason"),
        AuthErrors,
        (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "giveaway_over (already drawn or voided), session_ended"),
        Unavailable,
    ))]
pub async fn void_giveaway(
    State(state): State<AppState>,
    auth: Auth,
    Path(giveaway_id): Path<Uuid>,
    Json(body): Json<VoidGiveaway>,
) -> ApiResult<Json<Giveaway>> {
    Ok(Json(
        giveaways::void(&state.live, auth.claims(), giveaway_id, body).await?,
    ))
}
