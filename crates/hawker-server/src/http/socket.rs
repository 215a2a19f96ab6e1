//! `GET /v1/sessions/{session_id}/ws`: the session's real-time room.

use std::sync::Arc;

use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{Extension, State};
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use futures_util::FutureExt;
use hawker_agency::room_rights::RoomRights;
use hawker_hub::hub::Refusal;
use hawker_hub::{CommerceCommands, Member, SessionRights};
use serde::Deserialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::client_ip::ClientIp;

use super::auth::{Auth, SocketAuth, WS_PROTOCOL};
use super::error::{ApiError, ApiResult, ErrorBody, Path, Query, Unauthenticated};
use super::AppState;

/// The room's socket route, for `api_router` to merge.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(session_socket))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct SocketParams {
    /// `epoch:offset` of the last event the client saw, to resume.
    pub resume: Option<String>,
    /// The id of the last private notice the client has: every unexpired,
    /// unread notice after it is delivered again after the welcome.
    #[param(value_type = Option<i64>, minimum = 0)]
    pub notices_after: Option<String>,
    /// The token, for clients that can set neither a header nor a subprotocol.
    pub access_token: Option<String>,
}

/// Opens the session's room as a WebSocket (JSON text frames; see
/// `docs/protocol.md`). Browsers authenticate with the subprotocols
/// `hawker.v1, bearer.<token>`; other clients with `Authorization: Bearer`
/// or `?access_token=`.
#[utoipa::path(get, path = "/v1/sessions/{session_id}/ws", tag = "sessions", security(("bearer" = [])),
    params(("session_id" = Uuid, Path, description = "the session"), SocketParams),
    responses(
        (status = 101, description = "switching to the WebSocket protocol"),
        (status = 400, body = ErrorBody, description = "not a WebSocket request, or a bad `resume` or `notices_after`"),
        Unauthenticated,
        (status = 403, body = ErrorBody, description = "origin not allowed"),
        (status = 404, body = ErrorBody, description = "no such session"),
        (status = 409, body = ErrorBody, description = "the session has ended"),
        (status = 429, body = ErrorBody, description = "too_many_connections: too many sockets for this user, \
            or from this client address"),
        (status = 503, body = ErrorBody, description = "this node is full or shutting down, or the database \
            is unavailable; see Retry-After"),
    ))]
#[tracing::instrument(skip_all, fields(%session_id, user = %auth.0.sub))]
pub async fn session_socket(
    State(state): State<AppState>,
    auth: SocketAuth,
    Path(session_id): Path<Uuid>,
    Query(params): Query<SocketParams>,
    headers: HeaderMap,
    client: Option<Extension<ClientIp>>,
    upgrade: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> ApiResult<Response> {
    let upgrade = upgrade.map_err(|e| ApiError::bad_request("not_websocket", e.body_text()))?;
    let auth = Auth::from(auth);
    if state.shutdown.is_cancelled() {
        // Draining: the client should open its socket on another node.
        return Err(ApiError::Unavailable {
            what: "this node (shutting down)",
            retry_after_secs: 1,
        });
    }
    check_origin(&state, &headers)?;
    let resume = match params.resume.as_deref() {
        None | Some("") => None,
        Some(value) => Some(hawker_hub::protocol::parse_resume(value).ok_or_else(|| {
            ApiError::bad_request(
                "bad_resume",
                "resume must be `epoch:offset`, as in the last event received",
            )
        })?),
    };
    let notices_after = match params.notices_after.as_deref() {
        None | Some("") => None,
        Some(value) => Some(value.parse::<i64>().ok().filter(|n| *n >= 0).ok_or_else(|| {
            ApiError::bad_request(
                "bad_notices_after",
                "notices_after must be the id of a notice (a whole number, 0 or more)",
            )
        })?),
    };
    let access =
        hawker_agency::session_cache::session_access(&state.sessions, &state.db, &auth.0, session_id).await?;
    let status = access.session.status;
    if status.is_over() {
        return Err(ApiError::Conflict {
            code: "session_ended",
            message: format!("the session is {status}"),
        });
    }
    // The session's hosts (on its agency's roster now), its agency, and admins may host.
    let can_host = access.role.may_host();
    let name = hawker_agency::room_rights::display_name(&state.db, &auth.0).await?;
    let member = Member {
        user: auth.0.sub.clone(),
        role: auth.0.role,
        can_host,
        can_moderate: can_host,
        name,
        token_expires_at: Some(auth.0.exp),
    };
    let permit = state.hub.admit(&member.user).map_err(|refusal| match refusal {
        Refusal::TooManyForUser => ApiError::TooMany {
            code: "too_many_connections",
            message: "this user has too many sockets open on this node".into(),
        },
        Refusal::NodeFull => ApiError::Unavailable {
            what: "this node (socket limit reached)",
            retry_after_secs: 1,
        },
    })?;
    // One client address holds at most `server.max_connections_per_ip`
    // sockets, also behind a trusted proxy (whose TCP connections are exempt
    // from the listener's cap).
    let address_slot = match client {
        Some(Extension(ClientIp(ip))) => {
            Some(state.client_sockets.admit(ip).ok_or_else(|| ApiError::TooMany {
                code: "too_many_connections",
                message: "this address has too many sockets open on this node".into(),
            })?)
        }
        None => None,
    };
    let wants_protocol = headers
        .get(header::SEC_WEBSOCKET_PROTOCOL)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|p| p.trim() == WS_PROTOCOL));
    let mut upgrade = hawker_hub::connection::configure(upgrade, &state.hub);
    if wants_protocol {
        upgrade = upgrade.protocols([WS_PROTOCOL]);
    }
    let hub = state.hub.clone();
    let tasks = state.tasks.clone();
    // The socket's `deal.buy`, `coupon.claim`, `auction.bid` and
    // `giveaway.enter`, held by the connection only while it is open.
    let commerce: Arc<dyn CommerceCommands> = Arc::new(super::socket_commands::SocketCommands {
        commerce: state.commerce.clone(),
        live: state.live.clone(),
    });
    // The socket asks again, while open, whether its user may still host.
    let rights: Arc<dyn SessionRights> = Arc::new(RoomRights::new(
        state.db.clone(),
        auth.0.clone(),
        access.session.clone(),
    ));
    Ok(upgrade
        .on_failed_upgrade(|e| tracing::debug!(error = %e, "websocket upgrade failed"))
        .on_upgrade(move |socket| {
            // Called here, not in the tracked future: `serve` takes the
            // socket apart at once, so no future keeps room for it.
            let serving = hub.serve(
                socket,
                session_id,
                member,
                resume,
                notices_after,
                permit,
                commerce,
                rights,
            );
            // `map`, not an `async` block awaiting `serving`: such a block
            // keeps the future twice (as captured and as awaited), and this
            // one lives as long as the socket.
            tasks.track_future(serving.map(move |()| drop(address_slot)))
        })
        .into_response())
}

fn check_origin(state: &AppState, headers: &HeaderMap) -> ApiResult<()> {
    let allowed = &state.settings.hub.allowed_origins;
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return Ok(());
    };
    if allowed.iter().any(|a| a == "*" || a.eq_ignore_ascii_case(origin)) {
        Ok(())
    } else {
        Err(ApiError::forbidden(format!(
            "origin `{origin}` may not open sockets here"
        )))
    }
}
