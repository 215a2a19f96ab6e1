//! `GET /v1/me/notices` and `POST /v1/me/notices/read`: the HTTP side of
//! private notices, for a client that was away (the socket delivers them live).

use axum::extract::State;
use hawker_agency::page::{self, PageQuery};
use hawker_hub::StoredNotice;
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::Auth;
use super::error::{ApiError, ApiResult, ErrorBody, Json, Query, Unauthenticated, Unavailable};
use super::AppState;

/// Ids one `POST /v1/me/notices/read` may name at most.
const MAX_READ_IDS: usize = 100;

/// The notice routes, for `api_router` to merge.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_notices))
        .routes(routes!(mark_read))
}

/// A page of the caller's notices.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct NoticePage {
    /// Oldest first (by `notice_id`).
    pub items: Vec<StoredNotice>,
    /// Pass as `cursor` for the next page; absent (null) on the last page.
    pub next_cursor: Option<String>,
}

/// The caller's unexpired private notices (delivered or not, read or not),
/// oldest first, a page at a time (`limit`, `cursor`).
#[utoipa::path(get, path = "/v1/me/notices", tag = "auth", security(("bearer" = [])),
    params(PageQuery),
    responses(
        (status = 200, body = NoticePage),
        (status = 400, body = ErrorBody, description = "bad_query, bad_limit, bad_cursor"),
        Unauthenticated,
        Unavailable,
    ))]
pub async fn list_notices(
    State(state): State<AppState>,
    auth: Auth,
    Query(page): Query<PageQuery>,
) -> ApiResult<Json<NoticePage>> {
    let limit = page.limit()?;
    let after = page.after_int()?;
    let rows = state.hub.list_notices(&auth.0.sub, after, limit + 1).await?;
    let (items, next_cursor) = page::split(rows, limit, |n| page::int(n.notice_id));
    Ok(Json(NoticePage { items, next_cursor }))
}

/// Which notices to mark read: `ids`, every one up to `up_to`, or both
/// (`{}` marks nothing).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MarkRead {
    /// Notice ids, at most 100. Ids that are not the caller's, or are
    /// expired, are ignored.
    #[schema(max_items = 100)]
    pub ids: Option<Vec<i64>>,
    /// Every notice of the caller with an id up to this one.
    pub up_to: Option<i64>,
}

/// How many notices changed.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Marked {
    /// Notices newly marked read (already read ones are not counted).
    pub marked: u64,
}

/// Marks some of the caller's notices read: read notices are no longer
/// delivered when a socket joins, and show `read_at` in the list.
#[utoipa::path(post, path = "/v1/me/notices/read", tag = "auth", security(("bearer" = [])),
    request_body = MarkRead,
    responses(
        (status = 200, body = Marked),
        (status = 400, body = ErrorBody, description = "bad_json, bad_read (more than 100 ids)"),
        Unauthenticated,
        Unavailable,
    ))]
pub async fn mark_read(
    State(state): State<AppState>,
    auth: Auth,
    Json(body): Json<MarkRead>,
) -> ApiResult<Json<Marked>> {
    let ids = body.ids.unwrap_or_default();
    if ids.len() > MAX_READ_IDS {
        return Err(ApiError::bad_request(
            "bad_read",
            format!("ids may name at most {MAX_READ_IDS} notices"),
        ));
    }
    let marked = state.hub.mark_notices_read(&auth.0.sub, &ids, body.up_to).await?;
    Ok(Json(Marked { marked }))
}
