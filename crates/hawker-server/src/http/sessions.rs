//! Live sessions as seen by anyone holding a token.

use axum::extract::State;
use hawker_agency::schedule::{self, Session};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::auth::Auth;
use super::error::{ApiResult, ErrorBody, Json, Path, Unauthenticated, Unavailable};
use super::AppState;

/// The session route, for `api_router` to merge.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(get_session))
}

/// One session: title, plan and status. Any authenticated caller may read it
/// (viewers need it to join).
#[utoipa::path(get, path = "/v1/sessions/{session_id}", tag = "sessions", security(("bearer" = [])),
    params(("session_id" = Uuid, Path, description = "the session")),
    responses(
        (status = 200, body = Session),
        (status = 400, body = ErrorBody, description = "the id is not a UUID"),
        Unauthenticated,
        (status = 404, body = ErrorBody),
        Unavailable,
    ))]
#[tracing::instrument(skip_all, fields(%session_id))]
pub async fn get_session(
    State(state): State<AppState>,
    _auth: Auth,
    Path(session_id): Path<Uuid>,
) -> ApiResult<Json<Session>> {
    Ok(Json(schedule::get_session(&state.db, session_id).await?))
}
