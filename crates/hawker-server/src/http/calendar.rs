//! The schedule as an iCalendar feed (tag `calendar`): a host manages the
//! secret URL of their shifts, an agency (or an admin) that of its sessions,
//! and calendar apps fetch `GET /v1/calendar/{token}` with no headers at
//! all. The feed token opens that feed and nothing else: it is no bearer
//! token, and `Auth` never reads it. The rules live in
//! `hawker_agency::calendar_feed`; this module parses, calls and maps errors.

use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use hawker_agency::calendar_feed::{self, NewFeed};
use serde::Serialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::auth::Auth;
use super::error::{ApiResult, ErrorBody, Json, Path, Unauthenticated, Unavailable};
use super::AppState;

/// Where the feeds are served; request logs show this prefix, never the secret after it.
pub const FEED_PATH_PREFIX: &str = "/v1/calendar/";

/// How long a calendar app (or a private cache) may reuse a feed.
const FEED_CACHE_CONTROL: &str = "private, max-age=300";

/// The calendar routes, for `api_router` to merge.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(regenerate_my_feed, revoke_my_feed))
        .routes(routes!(regenerate_agency_feed, revoke_agency_feed))
        .routes(routes!(calendar_feed))
}

/// A feed's secret URL, shown once, when it is made.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CalendarFeed {
    /// The URL to subscribe to in a calendar app. Keep it secret: it opens the feed.
    #[schema(
        example = "https://live.example.com/v1/calendar/q3Jk8tWZ0cVYvH2m1xN4pR7sA9dE6fG5hJ3kL0mN2oP.ics"
    )]
    pub url: String,
    /// The feed token in the URL: 43 url-safe characters (256 random bits).
    /// It opens this feed only, and is stored as a SHA-256 digest.
    pub token: String,
    pub created_at: DateTime<Utc>,
}

fn created(state: &AppState, feed: NewFeed) -> (StatusCode, Json<CalendarFeed>) {
    let base = state.settings.server.public_url.trim_end_matches('/');
    (
        StatusCode::CREATED,
        Json(CalendarFeed {
            url: format!("{base}{FEED_PATH_PREFIX}{}.ics", feed.token),
            token: feed.token,
            created_at: feed.created_at,
        }),
    )
}

/// Creates the caller's (a host's) calendar feed of their shifts, or
/// replaces its secret: the previous URL stops working at once. The token
/// is shown in this answer only.
#[utoipa::path(post, path = "/v1/me/calendar-feed", tag = "calendar", security(("bearer" = [])),
    responses(
        (status = 201, body = CalendarFeed, description = "the new secret URL; any previous one no longer works"),
        Unauthenticated,
        (status = 403, body = ErrorBody, description = "not a host (agencies use their agency's feed)"),
        (status = 404, body = ErrorBody, description = "the token's host does not exist"),
        Unavailable,
    ))]
pub async fn regenerate_my_feed(
    State(state): State<AppState>,
    auth: Auth,
) -> ApiResult<(StatusCode, Json<CalendarFeed>)> {
    let owner = calendar_feed::own_host(&state.db, auth.claims()).await?;
    let feed = calendar_feed::regenerate(&state.db, auth.claims(), owner).await?;
    Ok(created(&state, feed))
}

/// Revokes the caller's (a host's) calendar feed: its URL answers 404 from
/// now on. Idempotent (204 when there was none).
#[utoipa::path(delete, path = "/v1/me/calendar-feed", tag = "calendar", security(("bearer" = [])),
    responses(
        (status = 204, description = "no feed any more"),
        Unauthenticated,
        (status = 403, body = ErrorBody, description = "not a host"),
        (status = 404, body = ErrorBody, description = "the token's host does not exist"),
        Unavailable,
    ))]
pub async fn revoke_my_feed(State(state): State<AppState>, auth: Auth) -> ApiResult<StatusCode> {
    let owner = calendar_feed::own_host(&state.db, auth.claims()).await?;
    calendar_feed::revoke(&state.db, auth.claims(), owner).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Creates the agency's calendar feed of its sessions, or replaces its
/// secret: the previous URL stops working at once. The token is shown in
/// this answer only. The agency's tokens and admins.
#[utoipa::path(post, path = "/v1/agencies/{agency_id}/calendar-feed", tag = "calendar", security(("bearer" = [])),
    params(("agency_id" = Uuid, Path)),
    responses(
        (status = 201, body = CalendarFeed, description = "the new secret URL; any previous one no longer works"),
        Unauthenticated,
        (status = 403, body = ErrorBody, description = "the token does not act for this agency"),
        (status = 404, body = ErrorBody, description = "no such agency (admins)"),
        Unavailable,
    ))]
pub async fn regenerate_agency_feed(
    State(state): State<AppState>,
    auth: Auth,
    Path(agency_id): Path<Uuid>,
) -> ApiResult<(StatusCode, Json<CalendarFeed>)> {
    let owner = calendar_feed::agency_owner(&state.db, auth.claims(), agency_id).await?;
    let feed = calendar_feed::regenerate(&state.db, auth.claims(), owner).await?;
    Ok(created(&state, feed))
}

/// Revokes the agency's calendar feed: its URL answers 404 from now on.
/// Idempotent (204 when there was none). The agency's tokens and admins.
#[utoipa::path(delete, path = "/v1/agencies/{agency_id}/calendar-feed", tag = "calendar", security(("bearer" = [])),
    params(("agency_id" = Uuid, Path)),
    responses(
        (status = 204, description = "no feed any more"),
        Unauthenticated,
        (status = 403, body = ErrorBody, description = "the token does not act for this agency"),
        (status = 404, body = ErrorBody, description = "no such agency (admins)"),
        Unavailable,
    ))]
pub async fn revoke_agency_feed(
    State(state): State<AppState>,
    auth: Auth,
    Path(agency_id): Path<Uuid>,
) -> ApiResult<StatusCode> {
    let owner = calendar_feed::agency_owner(&state.db, auth.claims(), agency_id).await?;
    calendar_feed::revoke(&state.db, auth.claims(), owner).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The schedule as iCalendar (RFC 5545), for calendar apps: no
/// `Authorization`, the secret URL is the credential. A host's feed has one
/// event per shift, an agency's one per session, from 30 days back to 180
/// days ahead; cancelled ones stay, `STATUS:CANCELLED`. The `.ics` suffix is
/// optional. Any token that opens no feed (unknown, revoked, replaced,
/// malformed) gets the same 404.
#[utoipa::path(get, path = "/v1/calendar/{token}", tag = "calendar",
    params(("token" = String, Path, description = "the feed token, optionally followed by `.ics`")),
    responses(
        (status = 200, content_type = "text/calendar", body = String,
            description = "the feed (`text/calendar; charset=utf-8`, `Cache-Control: private, max-age=300`)",
            headers(("Cache-Control" = String, description = "`private, max-age=300`"))),
        (status = 404, body = ErrorBody, description = "not_found: no feed has this token"),
        Unavailable,
    ))]
#[tracing::instrument(skip_all)]
pub async fn calendar_feed(State(state): State<AppState>, Path(token): Path<String>) -> ApiResult<Response> {
    let token = token.strip_suffix(".ics").unwrap_or(&token);
    let console = format!(
        "{}/console",
        state.settings.server.public_url.trim_end_matches('/')
    );
    let body = calendar_feed::feed(&state.db, token, &console).await?;
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/calendar; charset=utf-8"),
    );
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(FEED_CACHE_CONTROL),
    );
    headers.insert(
        header::CONTENT_DISPOSITION,
        HeaderValue::from_static("inline; filename=\"hawker.ics\""),
    );
    // The URL is a secret: no page it links to learns it.
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    Ok(response)
}
