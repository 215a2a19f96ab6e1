//! The agency side over HTTP (tags `agencies` and `agency`): agencies, hosts
//! and rosters (invites the host accepts), campaigns and their commission terms, scheduling (sessions,
//! shifts, go-live, handoffs, end), statements and live session figures.
//! The rules live in `hawker-agency` and `hawker-ledger`; this module parses,
//! calls and maps errors, and runs no SQL. Session events reach the room
//! through the hub's durable outbox, queued by `hawker-agency`.

use axum::extract::State;
use axum::http::StatusCode;
use hawker_agency::campaigns::{self, Campaign, NewCampaign, NewTerms, Terms, TermsPage, TermsScope};
use hawker_agency::page::PageQuery;
use hawker_agency::roster::{
    self, Agency, Host, Invite, InvitePage, JoinRoster, Membership, NewHost, RosterPage,
};
use hawker_agency::schedule::{
    self, DayQuery, GoLive, NewSession, NewShift, ScheduledSession, SessionPage, Shift, ShiftPage,
};
use hawker_agency::time::{parse_instant, PeriodQuery};
use hawker_core::Role;
use hawker_ledger::figures::{self, SessionFigures};
use hawker_ledger::statements::{self, AgencyStatement, HostStatement};
use serde::Deserialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::auth::Auth;
use super::error::{ApiError, ApiResult, ErrorBody, Json, Path, Query, Unauthenticated, Unavailable};
use super::AppState;

/// The agency side's routes, for `api_router` to merge.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(get_agency))
        .routes(routes!(create_host))
        .routes(routes!(roster, join_roster))
        .routes(routes!(leave_roster))
        .routes(routes!(agency_invites))
        .routes(routes!(withdraw_invite))
        .routes(routes!(host_invites))
        .routes(routes!(accept_invite))
        .routes(routes!(decline_invite))
        .routes(routes!(create_campaign))
        .routes(routes!(get_campaign))
        .routes(routes!(campaign_terms, add_campaign_terms))
        .routes(routes!(session_terms, add_session_terms))
        .routes(routes!(agency_sessions, schedule_session))
        .routes(routes!(session_shifts, book_shift))
        .routes(routes!(cancel_shift))
        .routes(routes!(start_shift))
        .routes(routes!(go_live))
        .routes(routes!(end_session))
        .routes(routes!(host_shifts))
        .routes(routes!(host_statement))
        .routes(routes!(agency_statement))
        .routes(routes!(session_figures))
}

/// An agency and its current roster. Only that agency's tokens and admins may read it.
#[utoipa::path(get, path = "/v1/agencies/{agency_id}", tag = "agencies", security(("bearer" = [])),
    params(("agency_id" = Uuid, Path, description = "the agency")),
    responses(
        (status = 200, body = Agency),
        Unauthenticated,
        (status = 403, body = ErrorBody, description = "the token does not act for this agency"),
        (status = 404, body = ErrorBody),
        Unavailable,
    ))]
#[tracing::instrument(skip_all, fields(%agency_id))]
pub async fn get_agency(
    State(state): State<AppState>,
    auth: Auth,
    Path(agency_id): Path<Uuid>,
) -> ApiResult<Json<Agency>> {
    auth.require_role(&[Role::Agency])?;
    Ok(Json(roster::agency(&state.db, auth.claims(), agency_id).await?))
}

/// Creates a host profile (agencies, admins). Put it on a roster next.
#[utoipa::path(post, path = "/v1/hosts", tag = "agency", security(("bearer" = [])),
    request_body = NewHost,
    responses(
        (status = 201, body = Host),
        (status = 400, body = ErrorBody, description = "bad_handle, bad_display_name, bad_json"),
        Unauthenticated,
        (status = 403, body = ErrorBody, description = "not an agency or admin"),
        (status = 409, body = ErrorBody, description = "handle_taken"),
        Unavailable,
    ))]
pub async fn create_host(
    State(state): State<AppState>,
    auth: Auth,
    Json(new): Json<NewHost>,
) -> ApiResult<(StatusCode, Json<Host>)> {
    let host = roster::create_host(&state.db, auth.claims(), new).await?;
    Ok((StatusCode::CREATED, Json(host)))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RosterQuery {
    /// Also list stays that ended or have not begun.
    #[serde(default)]
    pub include_past: bool,
}

/// The agency's roster: hosts on it now, or every dated stay with `include_past`;
/// a page at a time (`limit`, `cursor`).
#[utoipa::path(get, path = "/v1/agencies/{agency_id}/roster", tag = "agency", security(("bearer" = [])),
    params(("agency_id" = Uuid, Path), RosterQuery, PageQuery),
    responses(
        (status = 200, body = RosterPage),
        (status = 400, body = ErrorBody, description = "bad_path, bad_query, bad_limit, bad_cursor"),
        Unauthenticated,
        (status = 403, body = ErrorBody, description = "the token does not act for this agency"),
        (status = 404, body = ErrorBody, description = "no such agency (admins)"),
        Unavailable,
    ))]
pub async fn roster(
    State(state): State<AppState>,
    auth: Auth,
    Path(agency_id): Path<Uuid>,
    Query(query): Query<RosterQuery>,
    Query(page): Query<PageQuery>,
) -> ApiResult<Json<RosterPage>> {
    Ok(Json(
        roster::roster(&state.db, auth.claims(), agency_id, query.include_past, &page).await?,
    ))
}

/// Invites a host onto the roster: a pending invite, which the host accepts
/// (`POST /v1/hosts/{host_id}/invites/{invite_id}/accept`); the stay begins
/// then. A host belongs to one agency at a time.
#[utoipa::path(post, path = "/v1/agencies/{agency_id}/roster", tag = "agency", security(("bearer" = [])),
    params(("agency_id" = Uuid, Path)), request_body = JoinRoster,
    responses(
        (status = 201, body = Invite, description = "the pending invite"),
        (status = 400, body = ErrorBody,
            description = "bad_path, bad_json (e.g. a time without offset), bad_joined_at (not within 5 minutes of now)"),
        Unauthenticated,
        (status = 403, body = ErrorBody, description = "the token does not act for this agency"),
        (status = 404, body = ErrorBody, description = "no such agency or host"),
        (status = 409, body = ErrorBody,
            description = "host_on_another_roster (names the stay; also this roster), invite_pending"),
        Unavailable,
    ))]
pub async fn join_roster(
    State(state): State<AppState>,
    auth: Auth,
    Path(agency_id): Path<Uuid>,
    Json(join): Json<JoinRoster>,
) -> ApiResult<(StatusCode, Json<Invite>)> {
    let invite = roster::invite(&state.db, auth.claims(), agency_id, join).await?;
    Ok((StatusCode::CREATED, Json(invite)))
}

/// The agency's roster invites, oldest first, a page at a time (the agency, admins).
#[utoipa::path(get, path = "/v1/agencies/{agency_id}/invites", tag = "agency", security(("bearer" = [])),
    params(("agency_id" = Uuid, Path), PageQuery),
    responses(
        (status = 200, body = InvitePage),
        (status = 400, body = ErrorBody, description = "bad_path, bad_limit, bad_cursor"),
        Unauthenticated,
        (status = 403, body = ErrorBody, description = "the token does not act for this agency"),
        Unavailable,
    ))]
pub async fn agency_invites(
    State(state): State<AppState>,
    auth: Auth,
    Path(agency_id): Path<Uuid>,
    Query(page): Query<PageQuery>,
) -> ApiResult<Json<InvitePage>> {
    Ok(Json(
        roster::agency_invites(&state.db, auth.claims(), agency_id, &page).await?,
    ))
}

/// Withdraws a pending invite (the agency, admins).
#[utoipa::path(delete, path = "/v1/agencies/{agency_id}/invites/{invite_id}", tag = "agency",
    security(("bearer" = [])),
    params(("agency_id" = Uuid, Path), ("invite_id" = Uuid, Path)),
    responses(
        (status = 200, body = Invite, description = "the invite, now withdrawn"),
        (status = 400, body = ErrorBody, description = "bad_path"),
        Unauthenticated,
        (status = 403, body = ErrorBody, description = "the token does not act for this agency"),
        (status = 404, body = ErrorBody, description = "no such invite of this agency"),
        (status = 409, body = ErrorBody, description = "invite_not_pending"),
        Unavailable,
    ))]
pub async fn withdraw_invite(
    State(state): State<AppState>,
    auth: Auth,
    Path((agency_id, invite_id)): Path<(Uuid, Uuid)>,
) -> ApiResult<Json<Invite>> {
    Ok(Json(
        roster::withdraw(&state.db, auth.claims(), agency_id, invite_id).await?,
    ))
}

/// A host's roster invites, oldest first, a page at a time (the host, admins).
#[utoipa::path(get, path = "/v1/hosts/{host_id}/invites", tag = "agency", security(("bearer" = [])),
    params(("host_id" = Uuid, Path), PageQuery),
    responses(
        (status = 200, body = InvitePage),
        (status = 400, body = ErrorBody, description = "bad_path, bad_limit, bad_cursor"),
        Unauthenticated,
        (status = 403, body = ErrorBody, description = "not the host (nor an admin)"),
        Unavailable,
    ))]
pub async fn host_invites(
    State(state): State<AppState>,
    auth: Auth,
    Path(host_id): Path<Uuid>,
    Query(page): Query<PageQuery>,
) -> ApiResult<Json<InvitePage>> {
    Ok(Json(
        roster::host_invites(&state.db, auth.claims(), host_id, &page).await?,
    ))
}

/// The host accepts an invite: they are on the agency's roster from now
/// (`joined_at` is the moment of acceptance). Only the host's own token.
#[utoipa::path(post, path = "/v1/hosts/{host_id}/invites/{invite_id}/accept", tag = "agency",
    security(("bearer" = [])),
    params(("host_id" = Uuid, Path), ("invite_id" = Uuid, Path)),
    responses(
        (status = 200, body = Membership, description = "the stay, begun now"),
        (status = 400, body = ErrorBody, description = "bad_path"),
        Unauthenticated,
        (status = 403, body = ErrorBody, description = "not this host's token (agencies and admins included)"),
        (status = 404, body = ErrorBody, description = "no such invite for this host"),
        (status = 409, body = ErrorBody,
            description = "invite_not_pending, invite_expired, host_on_another_roster"),
        Unavailable,
    ))]
pub async fn accept_invite(
    State(state): State<AppState>,
    auth: Auth,
    Path((host_id, invite_id)): Path<(Uuid, Uuid)>,
) -> ApiResult<Json<Membership>> {
    Ok(Json(
        roster::accept(&state.db, auth.claims(), host_id, invite_id).await?,
    ))
}

/// The host declines an invite. Only the host's own token.
#[utoipa::path(post, path = "/v1/hosts/{host_id}/invites/{invite_id}/decline", tag = "agency",
    security(("bearer" = [])),
    params(("host_id" = Uuid, Path), ("invite_id" = Uuid, Path)),
    responses(
        (status = 200, body = Invite, description = "the invite, now declined"),
        (status = 400, body = ErrorBody, description = "bad_path"),
        Unauthenticated,
        (status = 403, body = ErrorBody, description = "not this host's token (agencies and admins included)"),
        (status = 404, body = ErrorBody, description = "no such invite for this host"),
        (status = 409, body = ErrorBody, description = "invite_not_pending, invite_expired"),
        Unavailable,
    ))]
pub async fn decline_invite(
    State(state): State<AppState>,
    auth: Auth,
    Path((host_id, invite_id)): Path<(Uuid, Uuid)>,
) -> ApiResult<Json<Invite>> {
    Ok(Json(
        roster::decline(&state.db, auth.claims(), host_id, invite_id).await?,
    ))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LeaveQuery {
    /// When the host leaves, ISO 8601 with offset (encode `+` as `%2B`); now if absent.
    #[param(format = DateTime)]
    pub left_at: Option<String>,
}

/// Takes a host off the roster at `left_at` (default now). Refused while the
/// host has shifts booked with this agency after that.
#[utoipa::path(delete, path = "/v1/agencies/{agency_id}/roster/{host_id}", tag = "agency",
    security(("bearer" = [])),
    params(("agency_id" = Uuid, Path), ("host_id" = Uuid, Path), LeaveQuery),
    responses(
        (status = 200, body = Membership, description = "the stay, now dated"),
        (status = 400, body = ErrorBody, description = "bad_path, bad_time"),
        Unauthenticated,
        (status = 403, body = ErrorBody, description = "the token does not act for this agency"),
        (status = 404, body = ErrorBody, description = "the host is not on this roster"),
        (status = 409, body = ErrorBody, description = "host_has_shifts: names the booking"),
        Unavailable,
    ))]
pub async fn leave_roster(
    State(state): State<AppState>,
    auth: Auth,
    Path((agency_id, host_id)): Path<(Uuid, Uuid)>,
    Query(query): Query<LeaveQuery>,
) -> ApiResult<Json<Membership>> {
    let left_at = query
        .left_at
        .as_deref()
        .map(|v| parse_instant("left_at", v))
        .transpose()?;
    Ok(Json(
        roster::leave(&state.db, auth.claims(), agency_id, host_id, left_at).await?,
    ))
}

/// A brand engages an agency: proposed by either of them (for itself), which
/// the other accepts (`POST /v1/campaigns/{campaign_id}/accept`); an admin's
/// campaign is accepted at once.
#[utoipa::path(post, path = "/v1/campaigns", tag = "agency", security(("bearer" = [])),
    request_body = NewCampaign,
    responses(
        (status = 201, body = Campaign),
        (status = 400, body = ErrorBody, description = "bad_name, bad_dates, bad_json"),
        Unauthenticated,
        (status = 403, body = ErrorBody, description = "the token is neither the agency nor the brand"),
        (status = 404, body = ErrorBody, description = "no such brand or agency"),
        Unavailable,
    ))]
pub async fn create_campaign(
    State(state): State<AppState>,
    auth: Auth,
    Json(new): Json<NewCampaign>,
) -> ApiResult<(StatusCode, Json<Campaign>)> {
    let campaign = campaigns::create_campaign(&state.db, auth.claims(), new).await?;
    Ok((StatusCode::CREATED, Json(campaign)))
}

/// A campaign with every version of its terms. Only its agency, its brand and
/// admins know it exists.
#[utoipa::path(get, path = "/v1/campaigns/{campaign_id}", tag = "agency", security(("bearer" = [])),
    params(("campaign_id" = Uuid, Path)),
    responses(
        (status = 200, body = Campaign),
        (status = 400, body = ErrorBody, description = "bad_path"),
        Unauthenticated,
        (status = 404, body = ErrorBody, description = "no such campaign, or not a party to it"),
        Unavailable,
    ))]
pub async fn get_campaign(
    State(state): State<AppState>,
    auth: Auth,
    Path(campaign_id): Path<Uuid>,
) -> ApiResult<Json<Campaign>> {
    Ok(Json(
        campaigns::get_campaign(&state.db, auth.claims(), campaign_id).await?,
    ))
}

/// The versions of a campaign's terms, oldest first, a page at a time (`limit`, `cursor`).
#[utoipa::path(get, path = "/v1/campaigns/{campaign_id}/terms", tag = "agency", security(("bearer" = [])),
    params(("campaign_id" = Uuid, Path), PageQuery),
    responses(
        (status = 200, body = TermsPage),
        (status = 400, body = ErrorBody, description = "bad_path, bad_limit, bad_cursor"),
        Unauthenticated,
        (status = 404, body = ErrorBody, description = "no such campaign, or not a party to it"),
        Unavailable,
    ))]
pub async fn campaign_terms(
    State(state): State<AppState>,
    auth: Auth,
    Path(campaign_id): Path<Uuid>,
    Query(page): Query<PageQuery>,
) -> ApiResult<Json<TermsPage>> {
    Ok(Json(
        campaigns::list_terms(&state.db, auth.claims(), TermsScope::Campaign(campaign_id), &page).await?,
    ))
}

/// Records new terms for the campaign's sessions: a new version, in force from
/// `effective_from` (now if absent, never in the past). Sales already made keep
/// the terms in force when they were made.
#[utoipa::path(post, path = "/v1/campaigns/{campaign_id}/terms", tag = "agency", security(("bearer" = [])),
    params(("campaign_id" = Uuid, Path)), request_body = NewTerms,
    responses(
        (status = 201, body = Terms),
        (status = 400, body = ErrorBody,
            description = "bad_percent, bad_host_share, bad_amount, empty_terms, bad_currency, terms_backdated, bad_json"),
        Unauthenticated,
        (status = 404, body = ErrorBody, description = "no such campaign, or not a party to it"),
        Unavailable,
    ))]
pub async fn add_campaign_terms(
    State(state): State<AppState>,
    auth: Auth,
    Path(campaign_id): Path<Uuid>,
    Json(new): Json<NewTerms>,
) -> ApiResult<(StatusCode, Json<Terms>)> {
    let terms =
        campaigns::add_terms(&state.db, auth.claims(), TermsScope::Campaign(campaign_id), new).await?;
    Ok((StatusCode::CREATED, Json(terms)))
}

/// The versions of a session's own terms (which replace its campaign's while in
/// force), oldest first, a page at a time (`limit`, `cursor`).
#[utoipa::path(get, path = "/v1/sessions/{session_id}/terms", tag = "agency", security(("bearer" = [])),
    params(("session_id" = Uuid, Path), PageQuery),
    responses(
        (status = 200, body = TermsPage),
        (status = 400, body = ErrorBody, description = "bad_path, bad_limit, bad_cursor"),
        Unauthenticated,
        (status = 403, body = ErrorBody, description = "not the session's agency or brand"),
        (status = 404, body = ErrorBody, description = "no such session"),
        Unavailable,
    ))]
pub async fn session_terms(
    State(state): State<AppState>,
    auth: Auth,
    Path(session_id): Path<Uuid>,
    Query(page): Query<PageQuery>,
) -> ApiResult<Json<TermsPage>> {
    Ok(Json(
        campaigns::list_terms(&state.db, auth.claims(), TermsScope::Session(session_id), &page).await?,
    ))
}

/// Records terms for one session (a new version; see the campaign's terms).
#[utoipa::path(post, path = "/v1/sessions/{session_id}/terms", tag = "agency", security(("bearer" = [])),
    params(("session_id" = Uuid, Path)), request_body = NewTerms,
    responses(
        (status = 201, body = Terms),
        (status = 400, body = ErrorBody,
            description = "bad_percent, bad_host_share, bad_amount, empty_terms, bad_currency, terms_backdated, bad_json"),
        Unauthenticated,
        (status = 403, body = ErrorBody, description = "not the session's agency or brand"),
        (status = 404, body = ErrorBody, description = "no such session"),
        Unavailable,
    ))]
pub async fn add_session_terms(
    State(state): State<AppState>,
    auth: Auth,
    Path(session_id): Path<Uuid>,
    Json(new): Json<NewTerms>,
) -> ApiResult<(StatusCode, Json<Terms>)> {
    let terms = campaigns::add_terms(&state.db, auth.claims(), TermsScope::Session(session_id), new).await?;
    Ok((StatusCode::CREATED, Json(terms)))
}

/// The agency's sessions on a day (`date` in `utc_offset`) or in `[from, to)`,
/// each with its shifts; a page at a time (`limit`, `cursor`).
#[utoipa::path(get, path = "/v1/agencies/{agency_id}/sessions", tag = "agency", security(("bearer" = [])),
    params(("agency_id" = Uuid, Path), DayQuery, PageQuery),
    responses(
        (status = 200, body = SessionPage),
        (status = 400, body = ErrorBody,
            description = "bad_path, bad_query, bad_time, bad_offset, bad_period, bad_date, bad_limit, bad_cursor"),
        Unauthenticated,
        (status = 403, body = ErrorBody, description = "the token does not act for this agency"),
        Unavailable,
    ))]
pub async fn agency_sessions(
    State(state): State<AppState>,
    auth: Auth,
    Path(agency_id): Path<Uuid>,
    Query(query): Query<DayQuery>,
    Query(page): Query<PageQuery>,
) -> ApiResult<Json<SessionPage>> {
    // Authorize before reading the query: a stranger learns nothing from it.
    hawker_agency::access::require_agency(auth.claims(), agency_id)?;
    let (from, to) = query.window()?;
    Ok(Json(
        schedule::agency_sessions(&state.db, auth.claims(), agency_id, from, to, &page).await?,
    ))
}

/// Schedules a session (planned start and end, optionally under a campaign).
#[utoipa::path(post, path = "/v1/agencies/{agency_id}/sessions", tag = "agency", security(("bearer" = [])),
    params(("agency_id" = Uuid, Path)), request_body = NewSession,
    responses(
        (status = 201, body = ScheduledSession),
        (status = 400, body = ErrorBody, description = "bad_title, bad_plan, brand_mismatch, bad_json"),
        Unauthenticated,
        (status = 403, body = ErrorBody, description = "the token does not act for this agency"),
        (status = 404, body = ErrorBody, description = "no such agency, brand or campaign (of this agency)"),
        Unavailable,
    ))]
pub async fn schedule_session(
    State(state): State<AppState>,
    auth: Auth,
    Path(agency_id): Path<Uuid>,
    Json(new): Json<NewSession>,
) -> ApiResult<(StatusCode, Json<ScheduledSession>)> {
    let session = schedule::schedule_session(&state.db, auth.claims(), agency_id, new).await?;
    Ok((StatusCode::CREATED, Json(session)))
}

/// The session's shifts: all for its agency and admins, their own for its
/// hosts; a page at a time (`limit`, `cursor`).
#[utoipa::path(get, path = "/v1/sessions/{session_id}/shifts", tag = "agency", security(("bearer" = [])),
    params(("session_id" = Uuid, Path), PageQuery),
    responses(
        (status = 200, body = ShiftPage),
        (status = 400, body = ErrorBody, description = "bad_path, bad_limit, bad_cursor"),
        Unauthenticated,
        (status = 403, body = ErrorBody, description = "not the session's agency or one of its hosts"),
        (status = 404, body = ErrorBody, description = "no such session"),
        Unavailable,
    ))]
pub async fn session_shifts(
    State(state): State<AppState>,
    auth: Auth,
    Path(session_id): Path<Uuid>,
    Query(page): Query<PageQuery>,
) -> ApiResult<Json<ShiftPage>> {
    Ok(Json(
        schedule::session_shifts(&state.db, auth.claims(), session_id, &page).await?,
    ))
}

/// Books a host on shift. A host is never in two overlapping shifts, in any
/// session of any agency, and a session has one host on shift at a time: the
/// 409 names the booking in the way (session, host, time range).
#[utoipa::path(post, path = "/v1/sessions/{session_id}/shifts", tag = "agency", security(("bearer" = [])),
    params(("session_id" = Uuid, Path)), request_body = NewShift,
    responses(
        (status = 201, body = Shift),
        (status = 400, body = ErrorBody, description = "bad_plan, shift_outside_session, bad_json"),
        Unauthenticated,
        (status = 403, body = ErrorBody, description = "not the session's agency"),
        (status = 404, body = ErrorBody, description = "no such session or host"),
        (status = 409, body = ErrorBody,
            description = "shift_overlap (the host's other booking), shift_session_overlap, host_not_on_roster, session_ended"),
        Unavailable,
    ))]
pub async fn book_shift(
    State(state): State<AppState>,
    auth: Auth,
    Path(session_id): Path<Uuid>,
    Json(new): Json<NewShift>,
) -> ApiResult<(StatusCode, Json<Shift>)> {
    let shift = schedule::book_shift(&state.db, auth.claims(), session_id, new).await?;
    Ok((StatusCode::CREATED, Json(shift)))
}

/// Cancels a shift that has not started (the session's agency, admins).
#[utoipa::path(delete, path = "/v1/shifts/{shift_id}", tag = "agency", security(("bearer" = [])),
    params(("shift_id" = Uuid, Path)),
    responses(
        (status = 200, body = Shift),
        (status = 400, body = ErrorBody, description = "bad_path"),
        Unauthenticated,
        (status = 403, body = ErrorBody, description = "the shift's host (only the agency cancels)"),
        (status = 404, body = ErrorBody, description = "no such shift, or not the caller's business"),
        (status = 409, body = ErrorBody, description = "shift_started"),
        Unavailable,
    ))]
pub async fn cancel_shift(
    State(state): State<AppState>,
    auth: Auth,
    Path(shift_id): Path<Uuid>,
) -> ApiResult<Json<Shift>> {
    Ok(Json(
        schedule::cancel_shift(&state.db, auth.claims(), shift_id).await?,
    ))
}

/// Handoff: this shift's host goes on air and the shift on air ends at the
/// same instant (the incoming host, the agency, admins). Orders from that
/// instant on are attributed to the incoming host. The room receives `session.handoff`.
#[utoipa::path(post, path = "/v1/shifts/{shift_id}/start", tag = "agency", security(("bearer" = [])),
    params(("shift_id" = Uuid, Path)),
    responses(
        (status = 200, body = ScheduledSession),
        (status = 400, body = ErrorBody, description = "bad_path"),
        Unauthenticated,
        (status = 403, body = ErrorBody, description = "another host's shift"),
        (status = 404, body = ErrorBody, description = "no such shift, or not the caller's business"),
        (status = 409, body = ErrorBody,
            description = "session_not_live, shift_cancelled, shift_already_started, host_on_air_elsewhere"),
        Unavailable,
    ))]
pub async fn start_shift(
    State(state): State<AppState>,
    auth: Auth,
    Path(shift_id): Path<Uuid>,
) -> ApiResult<Json<ScheduledSession>> {
    Ok(Json(
        schedule::start_shift(&state.db, &state.hub, auth.claims(), shift_id).await?,
    ))
}

/// Takes a scheduled session live (a host scheduled in it, its agency,
/// admins) and puts a shift on air: the caller's next one for a host, the
/// session's next one (or `shift_id`) for the agency. The room receives `session.live`.
#[utoipa::path(post, path = "/v1/sessions/{session_id}/live", tag = "agency", security(("bearer" = [])),
    params(("session_id" = Uuid, Path)),
    request_body(content = Option<GoLive>, description = "optional: no body (or `null`) starts the next shift"),
    responses(
        (status = 200, body = ScheduledSession),
        (status = 400, body = ErrorBody, description = "bad_path, bad_json"),
        Unauthenticated,
        (status = 403, body = ErrorBody, description = "not scheduled in the session, not its agency"),
        (status = 404, body = ErrorBody, description = "no such session or shift"),
        (status = 409, body = ErrorBody,
            description = "session_not_scheduled, no_shift_to_start, host_on_air_elsewhere"),
        Unavailable,
    ))]
pub async fn go_live(
    State(state): State<AppState>,
    auth: Auth,
    Path(session_id): Path<Uuid>,
    body: axum::body::Bytes,
) -> ApiResult<Json<ScheduledSession>> {
    // No body, or `null`, is the default.
    let request: GoLive = if body.iter().all(u8::is_ascii_whitespace) {
        GoLive::default()
    } else {
        serde_json::from_slice::<Option<GoLive>>(&body)
            .map_err(|e| ApiError::bad_request("bad_json", e.to_string()))?
            .unwrap_or_default()
    };
    Ok(Json(
        schedule::go_live(&state.db, &state.hub, auth.claims(), session_id, request).await?,
    ))
}

/// Ends a live session and the shift on air (a host scheduled in it, its agency,
/// admins). The room receives `session.ended`.
#[utoipa::path(post, path = "/v1/sessions/{session_id}/end", tag = "agency", security(("bearer" = [])),
    params(("session_id" = Uuid, Path)),
    responses(
        (status = 200, body = ScheduledSession),
        (status = 400, body = ErrorBody, description = "bad_path"),
        Unauthenticated,
        (status = 403, body = ErrorBody, description = "not scheduled in the session, not its agency"),
        (status = 404, body = ErrorBody, description = "no such session"),
        (status = 409, body = ErrorBody, description = "session_not_live"),
        Unavailable,
    ))]
pub async fn end_session(
    State(state): State<AppState>,
    auth: Auth,
    Path(session_id): Path<Uuid>,
) -> ApiResult<Json<ScheduledSession>> {
    Ok(Json(
        schedule::end_session(&state.db, &state.hub, auth.claims(), session_id).await?,
    ))
}

/// A host's shifts in a period (the host, admins; an agency the host has been
/// with sees the shifts in its own sessions); a page at a time (`limit`, `cursor`).
#[utoipa::path(get, path = "/v1/hosts/{host_id}/shifts", tag = "agency", security(("bearer" = [])),
    params(("host_id" = Uuid, Path), PeriodQuery, PageQuery),
    responses(
        (status = 200, body = ShiftPage),
        (status = 400, body = ErrorBody, description = "bad_path, bad_time, bad_period, bad_limit, bad_cursor"),
        Unauthenticated,
        (status = 403, body = ErrorBody, description = "another host, an agency the host was never with, a brand, a viewer"),
        Unavailable,
    ))]
pub async fn host_shifts(
    State(state): State<AppState>,
    auth: Auth,
    Path(host_id): Path<Uuid>,
    Query(period): Query<PeriodQuery>,
    Query(page): Query<PageQuery>,
) -> ApiResult<Json<ShiftPage>> {
    let period = period.parse()?;
    Ok(Json(
        schedule::host_shifts(&state.db, auth.claims(), host_id, period, &page).await?,
    ))
}

/// A host's earnings for a period, from the ledger: entries (a page at a
/// time: `limit`, `cursor`), totals over the whole period and net payable
/// (the host, admins; an agency the host has been with sees its part).
#[utoipa::path(get, path = "/v1/hosts/{host_id}/statement", tag = "agency", security(("bearer" = [])),
    params(("host_id" = Uuid, Path), PeriodQuery, PageQuery),
    responses(
        (status = 200, body = HostStatement),
        (status = 400, body = ErrorBody, description = "bad_path, bad_time, bad_period, bad_limit, bad_cursor"),
        Unauthenticated,
        (status = 403, body = ErrorBody, description = "another host, an agency the host was never with, a brand, a viewer"),
        (status = 404, body = ErrorBody, description = "no such host (admins)"),
        Unavailable,
    ))]
pub async fn host_statement(
    State(state): State<AppState>,
    auth: Auth,
    Path(host_id): Path<Uuid>,
    Query(period): Query<PeriodQuery>,
    Query(page): Query<PageQuery>,
) -> ApiResult<Json<HostStatement>> {
    let period = period.parse()?;
    Ok(Json(
        statements::host_statement(&state.db, auth.claims(), host_id, period, &page).await?,
    ))
}

/// The agency's commissions for a period, from the ledger: its entries (a
/// page at a time: `limit`, `cursor`), and over the whole period what the
/// agency keeps, what each host is owed, and the total.
#[utoipa::path(get, path = "/v1/agencies/{agency_id}/statement", tag = "agency", security(("bearer" = [])),
    params(("agency_id" = Uuid, Path), PeriodQuery, PageQuery),
    responses(
        (status = 200, body = AgencyStatement),
        (status = 400, body = ErrorBody, description = "bad_path, bad_time, bad_period, bad_limit, bad_cursor"),
        Unauthenticated,
        (status = 403, body = ErrorBody, description = "the token does not act for this agency"),
        (status = 404, body = ErrorBody, description = "no such agency (admins)"),
        Unavailable,
    ))]
pub async fn agency_statement(
    State(state): State<AppState>,
    auth: Auth,
    Path(agency_id): Path<Uuid>,
    Query(period): Query<PeriodQuery>,
    Query(page): Query<PageQuery>,
) -> ApiResult<Json<AgencyStatement>> {
    let period = period.parse()?;
    Ok(Json(
        statements::agency_statement(&state.db, auth.claims(), agency_id, period, &page).await?,
    ))
}

/// Live figures: sales (gross, net of refunds), orders, units, buyers,
/// viewers, chat, likes and conversion, for the session, per deal and per
/// shift — seconds old while live, kept after the end. A brand sees only its
/// own products' sales.
#[utoipa::path(get, path = "/v1/sessions/{session_id}/figures", tag = "agency", security(("bearer" = [])),
    params(("session_id" = Uuid, Path)),
    responses(
        (status = 200, body = SessionFigures),
        (status = 400, body = ErrorBody, description = "bad_path"),
        Unauthenticated,
        (status = 403, body = ErrorBody,
            description = "not the session's agency, one of its hosts or a brand selling in it"),
        (status = 404, body = ErrorBody, description = "no such session"),
        Unavailable,
    ))]
pub async fn session_figures(
    State(state): State<AppState>,
    auth: Auth,
    Path(session_id): Path<Uuid>,
) -> ApiResult<Json<SessionFigures>> {
    Ok(Json(
        figures::session_figures(&state.db, Some(&state.hub), auth.claims(), session_id).await?,
    ))
}
