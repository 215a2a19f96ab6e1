//! Comment-to-buy over HTTP: the host (its agency, an admin) turns keyword
//! ordering in chat on or off for a session; anyone signed in reads the
//! setting (docs/protocol.md, "Comment-to-buy").

use axum::extract::State;
use hawker_live::comment_orders::{self, CommentToBuy, SetCommentToBuy};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::auth::Auth;
use super::error::{ApiResult, AuthErrors, ErrorBody, Json, Path, Unauthenticated, Unavailable};
use super::AppState;

/// Comment-to-buy routes, for `api_router` to merge.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(get_comment_to_buy, set_comment_to_buy))
}

/// The session's comment-to-buy setting (off, `SOLD` and `BUY`, marked,
/// `updated_at` null, until the host first sets it).
#[utoipa::path(get, path = "/v1/sessions/{session_id}/comment-to-buy", tag = "comment-to-buy",
    security(("bearer" = [])),
    params(("session_id" = Uuid, Path)),
    responses(
        (status = 200, body = CommentToBuy),
        Unauthenticated,
        (status = 404, body = ErrorBody, description = "no such session"),
        Unavailable,
    ))]
pub async fn get_comment_to_buy(
    State(state): State<AppState>,
    _auth: Auth,
    Path(session_id): Path<Uuid>,
) -> ApiResult<Json<CommentToBuy>> {
    Ok(Json(comment_orders::get(&state.live, session_id).await?))
}

/// Turns comment-to-buy on or off (host, agency, admin). `keywords` and
/// `mark_orders` are kept when absent. The room receives a
/// `comment_to_buy` event and the snapshot key `comment_to_buy`; every node
/// applies the change to chat lines within `live.comment_cache_ms`.
#[utoipa::path(put, path = "/v1/sessions/{session_id}/comment-to-buy", tag = "comment-to-buy",
    security(("bearer" = [])),
    params(("session_id" = Uuid, Path)), request_body = SetCommentToBuy,
    responses(
        (status = 200, body = CommentToBuy),
        (status = 400, body = ErrorBody, description = "bad_keywords, bad_json"),
        AuthErrors,
        (status = 404, body = ErrorBody, description = "no such session"),
        (status = 409, body = ErrorBody, description = "session_ended"),
        Unavailable,
    ))]
pub async fn set_comment_to_buy(
    State(state): State<AppState>,
    auth: Auth,
    Path(session_id): Path<Uuid>,
    Json(new): Json<SetCommentToBuy>,
) -> ApiResult<Json<CommentToBuy>> {
    Ok(Json(
        comment_orders::set(&state.live, auth.claims(), session_id, new).await?,
    ))
}
