//! A session's room bans, for its agency and admins: list them, lift one.

use axum::extract::State;
use axum::http::StatusCode;
use hawker_agency::bans::{self, BanPage};
use hawker_agency::page::PageQuery;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::auth::Auth;
use super::error::{ApiResult, ErrorBody, Json, Path, Query, Unauthenticated, Unavailable};
use super::AppState;

/// The ban routes, for `api_router` to merge.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_bans))
        .routes(routes!(lift_ban))
}

/// The bans in force in the session's room, ordered by user, a page at a
/// time (the session's agency, admins). Expired bans are not listed.
#[utoipa::path(get, path = "/v1/sessions/{session_id}/bans", tag = "sessions", security(("bearer" = [])),
    params(("session_id" = Uuid, Path, description = "the session"), PageQuery),
    responses(
        (status = 200, body = BanPage),
        (status = 400, body = ErrorBody, description = "bad_path, bad_limit, bad_cursor"),
        Unauthenticated,
        (status = 403, body = ErrorBody, description = "not the session's agency, nor an admin"),
        (status = 404, body = ErrorBody, description = "no such session"),
        Unavailable,
    ))]
#[tracing::instrument(skip_all, fields(%session_id))]
pub async fn list_bans(
    State(state): State<AppState>,
    auth: Auth,
    Path(session_id): Path<Uuid>,
    Query(page): Query<PageQuery>,
) -> ApiResult<Json<BanPage>> {
    Ok(Json(
        bans::bans(&state.db, &state.hub, auth.claims(), session_id, &page).await?,
    ))
}

/// Lifts a user's ban in the session's room (the session's agency, admins):
/// every node lets the user join again at once, and the room gets
/// `moderation.unbanned` (`by` the caller). Lifting a ban that is not there
/// is not an error.
#[utoipa::path(delete, path = "/v1/sessions/{session_id}/bans/{user}", tag = "sessions",
    security(("bearer" = [])),
    params(
        ("session_id" = Uuid, Path, description = "the session"),
        ("user" = String, Path, min_length = 1, max_length = 64,
            description = "the banned user's id (the token `sub`), percent-encoded"),
    ),
    responses(
        (status = 204, description = "the user is not banned in this room any more"),
        (status = 400, body = ErrorBody, description = "bad_path, bad_user (not 1 to 64 bytes)"),
        Unauthenticated,
        (status = 403, body = ErrorBody, description = "not the session's agency, nor an admin"),
        (status = 404, body = ErrorBody, description = "no such session"),
        Unavailable,
    ))]
#[tracing::instrument(skip_all, fields(%session_id))]
pub async fn lift_ban(
    State(state): State<AppState>,
    auth: Auth,
    Path((session_id, user)): Path<(Uuid, String)>,
) -> ApiResult<StatusCode> {
    bans::unban(&state.db, &state.hub, auth.claims(), session_id, &user).await?;
    Ok(StatusCode::NO_CONTENT)
}
