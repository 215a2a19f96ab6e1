//! Live sessions as seen by anyone holding a token.

use axum::extract::State;
use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

use super::auth::Auth;
use super::error::{ApiError, ApiResult, ErrorBody, Json, Path};
use super::AppState;

#[derive(Debug, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Session {
    pub session_id: Uuid,
    pub agency_id: Uuid,
    pub brand_id: Option<Uuid>,
    pub title: String,
    pub planned_start: DateTime<Utc>,
    pub planned_end: DateTime<Utc>,
    /// `scheduled`, `live`, `ended` or `cancelled`.
    pub status: String,
    pub started_at: Option<DateTime<Utc>>,
    pub ended_at: Option<DateTime<Utc>>,
}

/// One session: title, plan and status. Any authenticated caller may read it
/// (viewers need it to join).
#[utoipa::path(get, path = "/v1/sessions/{session_id}", tag = "sessions", security(("bearer" = [])),
    params(("session_id" = Uuid, Path, description = "the session")),
    responses(
        (status = 200, body = Session),
        (status = 400, body = ErrorBody, description = "the id is not a UUID"),
        (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody),
    ))]
#[tracing::instrument(skip_all, fields(%session_id))]
pub async fn get_session(
    State(state): State<AppState>,
    _auth: Auth,
    Path(session_id): Path<Uuid>,
) -> ApiResult<Json<Session>> {
    let session = sqlx::query_as::<_, Session>(
        "select session_id, agency_id, brand_id, title, planned_start, planned_end, status,
                started_at, ended_at
           from live_session where session_id = $1",
    )
    .bind(session_id)
    .fetch_optional(&state.db)
    .await?
    .ok_or(ApiError::NotFound("session"))?;
    Ok(Json(session))
}
