//! Waitlists of sold-out deals over HTTP: a viewer joins, reads their place
//! (and open offer) and leaves. The offer itself arrives as the private
//! `waitlist.offer` notice and is bought with `POST /v1/deals/{id}/orders`
//! (docs/protocol.md, "Waitlists").

use axum::extract::State;
use axum::http::StatusCode;
use hawker_commerce::waitlist::{self, WaitlistPlace};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::auth::Auth;
use super::error::{ApiResult, ErrorBody, Json, Path, Unauthenticated, Unavailable};
use super::AppState;

/// Waitlist routes, for `api_router` to merge.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(join_waitlist, waitlist_place, leave_waitlist))
}

/// Joins a sold-out deal's waitlist, at the back. Joining again while in
/// line answers the same place with `replayed: true` (200). The room's
/// `deal.waitlist` count goes up by one.
#[utoipa::path(post, path = "/v1/deals/{deal_id}/waitlist", tag = "commerce", security(("bearer" = [])),
    params(("deal_id" = Uuid, Path)),
    responses(
        (status = 201, body = WaitlistPlace, description = "joined"),
        (status = 200, body = WaitlistPlace, description = "already in line: the same place, `replayed: true`"),
        Unauthenticated,
        (status = 404, body = ErrorBody, description = "no such deal"),
        (status = 409, body = ErrorBody, description = "not_sold_out (the deal still sells, or has not started), \
            deal_ended (its time is over, or it ended otherwise: the list is closed)"),
        Unavailable,
    ))]
pub async fn join_waitlist(
    State(state): State<AppState>,
    auth: Auth,
    Path(deal_id): Path<Uuid>,
) -> ApiResult<(StatusCode, Json<WaitlistPlace>)> {
    let place = waitlist::join(&state.commerce, &auth.claims().sub, deal_id).await?;
    let status = if place.replayed {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((status, Json(place)))
}

/// The caller's place on the deal's waitlist: position and count while in
/// line, the open offer while `offered`, else the final status of their
/// latest entry (`bought`, `passed`, `left`, `closed`); `status: null` (and
/// the count) if they never joined.
#[utoipa::path(get, path = "/v1/deals/{deal_id}/waitlist", tag = "commerce", security(("bearer" = [])),
    params(("deal_id" = Uuid, Path)),
    responses(
        (status = 200, body = WaitlistPlace),
        Unauthenticated,
        (status = 404, body = ErrorBody, description = "no such deal"),
        Unavailable,
    ))]
pub async fn waitlist_place(
    State(state): State<AppState>,
    auth: Auth,
    Path(deal_id): Path<Uuid>,
) -> ApiResult<Json<WaitlistPlace>> {
    Ok(Json(
        waitlist::place(&state.commerce, &auth.claims().sub, deal_id).await?,
    ))
}

/// Leaves the waitlist; an open offer is given up and passes to the next in
/// line. Answers the entry, now `left`.
#[utoipa::path(delete, path = "/v1/deals/{deal_id}/waitlist", tag = "commerce", security(("bearer" = [])),
    params(("deal_id" = Uuid, Path)),
    responses(
        (status = 200, body = WaitlistPlace, description = "left"),
        Unauthenticated,
        (status = 404, body = ErrorBody, description = "no such deal"),
        (status = 409, body = ErrorBody, description = "not_on_waitlist: not in line"),
        Unavailable,
    ))]
pub async fn leave_waitlist(
    State(state): State<AppState>,
    auth: Auth,
    Path(deal_id): Path<Uuid>,
) -> ApiResult<Json<WaitlistPlace>> {
    Ok(Json(
        waitlist::leave(&state.commerce, &auth.claims().sub, deal_id).await?,
    ))
}
