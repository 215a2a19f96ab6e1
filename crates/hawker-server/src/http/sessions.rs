//! Live sessions as seen by anyone holding a token.

use axum::extract::State;
use hawker_agency::discover::DiscoverQuery;
use hawker_agency::page::PageQuery;
use hawker_agency::schedule::{self, Session};
use hawker_commerce::discovery::{self, ListedSessionPage};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::auth::Auth;
use super::error::{ApiResult, ErrorBody, Json, Path, Query, Unauthenticated, Unavailable};
use super::AppState;

/// The session route, for `api_router` to merge.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(get_session))
        .routes(routes!(list_sessions))
        .routes(routes!(brand_schedule))
        .routes(routes!(agency_schedule))
}

/// Finds sessions by status, agency, brand, host and planned time, in
/// planned-start order, a page at a time. Each comes with its agency,
/// brands, hosts and, while live, the pinned item and the viewer count.
/// Any authenticated caller.
#[utoipa::path(get, path = "/v1/sessions", tag = "sessions", security(("bearer" = [])),
    params(DiscoverQuery, PageQuery),
    responses(
        (status = 200, body = ListedSessionPage),
        (status = 400, body = ErrorBody, description = "bad_query, bad_status, bad_agency_id, bad_brand_id, bad_host_id, bad_time, bad_period, bad_limit, bad_cursor"),
        Unauthenticated,
        Unavailable,
    ))]
pub async fn list_sessions(
    State(state): State<AppState>,
    _auth: Auth,
    Query(query): Query<DiscoverQuery>,
    Query(page): Query<PageQuery>,
) -> ApiResult<Json<ListedSessionPage>> {
    let filter = query.parse()?;
    Ok(Json(discovery::sessions(&state.commerce, &filter, &page).await?))
}

/// A brand's upcoming sessions: scheduled or live and not planned to be
/// over, in planned-start order. Any authenticated caller.
#[utoipa::path(get, path = "/v1/brands/{brand_id}/schedule", tag = "sessions", security(("bearer" = [])),
    params(("brand_id" = Uuid, Path), PageQuery),
    responses(
        (status = 200, body = ListedSessionPage),
        (status = 400, body = ErrorBody, description = "bad_path, bad_query, bad_limit, bad_cursor"),
        Unauthenticated,
        (status = 404, body = ErrorBody, description = "no such brand"),
        Unavailable,
    ))]
pub async fn brand_schedule(
    State(state): State<AppState>,
    _auth: Auth,
    Path(brand_id): Path<Uuid>,
    Query(page): Query<PageQuery>,
) -> ApiResult<Json<ListedSessionPage>> {
    Ok(Json(
        discovery::brand_schedule(&state.commerce, brand_id, &page).await?,
    ))
}

/// An agency's upcoming sessions: scheduled or live and not planned to be
/// over, in planned-start order. Any authenticated caller.
#[utoipa::path(get, path = "/v1/agencies/{agency_id}/schedule", tag = "sessions", security(("bearer" = [])),
    params(("agency_id" = Uuid, Path), PageQuery),
    responses(
        (status = 200, body = ListedSessionPage),
        (status = 400, body = ErrorBody, description = "bad_path, bad_query, bad_limit, bad_cursor"),
        Unauthenticated,
        (status = 404, body = ErrorBody, description = "no such agency"),
        Unavailable,
    ))]
pub async fn agency_schedule(
    State(state): State<AppState>,
    _auth: Auth,
    Path(agency_id): Path<Uuid>,
    Query(page): Query<PageQuery>,
) -> ApiResult<Json<ListedSessionPage>> {
    Ok(Json(
        discovery::agency_schedule(&state.commerce, agency_id, &page).await?,
    ))
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
