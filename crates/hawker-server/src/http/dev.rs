//! Development-only routes for the web console (`docs/console.md`): mint a
//! token for a demo identity, read the seeded ids (agency, brand, session,
//! hosts), and pay an order the way the payment provider would; and, for the
//! load generator, publish a batch of private notices through the hub's real
//! path. The catalog is the brand's own (`http/catalog.rs`); there is no
//! stand-in here.
//!
//! They exist only when `HAWKER_ENV` is `development` or `test`: a production
//! server does not route them at all (they answer 404 like any unknown path),
//! so no production deployment can mint tokens or fake payments. They are
//! deliberately left out of the OpenAPI document.

use axum::extract::State;
use axum::routing::{get, post};
use axum::Router;
use chrono::{Duration, Utc};
use hawker_agency::access::SessionStatus;
use hawker_agency::{roster, schedule};
use hawker_commerce::order::{get_order, Order};
use hawker_commerce::payments::{self, WebhookOutcome, PAYMENT_SUCCEEDED};
use hawker_core::auth::MAX_SUBJECT_LEN;
use hawker_core::Error as DomainError;
use hawker_core::{Claims, Role};
use hawker_hub::Notice;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use super::auth::Auth;
use super::error::{ApiError, ApiResult, Json, Path};
use super::AppState;
use crate::config::Environment;
use crate::seed;
use std::net::SocketAddr;

/// The longest token the demo route mints.
const MAX_TTL_SECS: u64 = 7 * 86_400;
/// Notices one `POST /v1/dev/notices` publishes at most.
const MAX_NOTICE_BATCH: usize = 1000;
/// A notice's `kind` is 1 to this many characters (as the hub's table says).
const MAX_NOTICE_KIND: usize = 64;

/// Whether the development routes exist: only in development and test, and
/// only when the public listener is bound to a loopback address, so a
/// forgotten environment on a container that binds `0.0.0.0` cannot mint
/// admin tokens or mark orders paid for the world.
pub fn enabled(environment: Environment, listen: SocketAddr) -> bool {
    matches!(environment, Environment::Development | Environment::Test) && listen.ip().is_loopback()
}

/// The development routes, or `None` where they must not exist.
pub fn router(environment: Environment, listen: SocketAddr) -> Option<Router<AppState>> {
    enabled(environment, listen).then(|| {
        Router::new()
            .route("/v1/dev/token", post(mint_token))
            .route("/v1/dev/demo", get(demo))
            .route("/v1/dev/orders/{order_id}/pay", post(pay_order))
            .route("/v1/dev/notices", post(publish_notices))
    })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenRequest {
    /// The token's `sub`: a host's UUID for a host, any id for a viewer.
    pub user: String,
    pub role: Role,
    #[serde(default)]
    pub agency_id: Option<Uuid>,
    #[serde(default)]
    pub brand_id: Option<Uuid>,
    /// Lifetime; `auth.default_token_ttl_secs` if absent, at most 7 days.
    #[serde(default)]
    pub ttl_secs: Option<u64>,
}

#[derive(Debug, Serialize)]
pub struct MintedToken {
    pub token: String,
    pub claims: Claims,
}

/// `POST /v1/dev/token`: what `hawker token` does, for the console's pages.
async fn mint_token(
    State(state): State<AppState>,
    Json(request): Json<TokenRequest>,
) -> ApiResult<Json<MintedToken>> {
    let user = request.user.trim();
    if user.is_empty() || user.len() > MAX_SUBJECT_LEN {
        return Err(ApiError::bad_request(
            "bad_user",
            format!("user must be 1 to {MAX_SUBJECT_LEN} bytes"),
        ));
    }
    let ttl = request
        .ttl_secs
        .unwrap_or(state.settings.auth.default_token_ttl_secs)
        .clamp(1, MAX_TTL_SECS);
    let mut claims = Claims::new(user, request.role, Duration::seconds(ttl as i64));
    claims.agency_id = request.agency_id;
    claims.brand_id = request.brand_id;
    let token = state
        .keys
        .sign(&claims)
        .map_err(|e| ApiError::Internal(anyhow::anyhow!("signing a dev token: {e}")))?;
    Ok(Json(MintedToken { token, claims }))
}

/// A seeded host, as the console's pages show it.
#[derive(Debug, Serialize)]
pub struct DemoHost {
    pub host_id: Uuid,
    pub handle: String,
    pub display_name: String,
}

/// The ids `hawker seed` creates, and whether it has run.
#[derive(Debug, Serialize)]
pub struct Demo {
    pub agency_id: Uuid,
    pub brand_id: Uuid,
    pub session_id: Uuid,
    /// False until `hawker seed` has run against this database.
    pub seeded: bool,
    pub session_title: Option<String>,
    pub session_status: Option<SessionStatus>,
    pub hosts: Vec<DemoHost>,
}

/// `GET /v1/dev/demo`: the ids `hawker seed` creates, so the console's pages
/// need no configuration.
async fn demo(State(state): State<AppState>) -> ApiResult<Json<Demo>> {
    let session = match schedule::get_session(&state.db, seed::SESSION_ID).await {
        Ok(session) => Some(session),
        Err(DomainError::NotFound(_)) => None,
        Err(e) => return Err(e.into()),
    };
    let hosts = roster::hosts(&state.db, &seed::HOST_IDS)
        .await?
        .into_iter()
        .map(|h| DemoHost {
            host_id: h.host_id,
            handle: h.handle,
            display_name: h.display_name,
        })
        .collect();
    Ok(Json(Demo {
        agency_id: seed::AGENCY_ID,
        brand_id: seed::BRAND_ID,
        session_id: seed::SESSION_ID,
        seeded: session.is_some(),
        session_status: session.as_ref().map(|s| s.status),
        session_title: session.map(|s| s.title),
        hosts,
    }))
}

#[derive(Debug, Serialize)]
pub struct DevPayment {
    pub outcome: WebhookOutcome,
    pub order: Order,
}

/// `POST /v1/dev/orders/{order_id}/pay`: the buyer (or the session's host)
/// pays an order through the real webhook path, signed with this server's
/// webhook secret, so the order, the buyer's notice (`order.paid`) and the figures
/// change exactly as with a real provider.
async fn pay_order(
    State(state): State<AppState>,
    auth: Auth,
    Path(order_id): Path<Uuid>,
) -> ApiResult<Json<DevPayment>> {
    let order = get_order(&state.commerce, auth.claims(), order_id).await?;
    let body = serde_json::to_vec(&serde_json::json!({
        "event_id": format!("dev_{}", Uuid::now_v7().simple()),
        "type": PAYMENT_SUCCEEDED,
        "order_id": order.order_id,
        "amount_minor": order.amount_minor,
        "currency": order.currency,
    }))
    .map_err(|e| ApiError::Internal(e.into()))?;
    let signature = payments::sign(
        &state.settings.payments.webhook_secret,
        Utc::now().timestamp(),
        &body,
    );
    let outcome = payments::handle_webhook(&state.commerce, Some(&signature), &body).await?;
    let order = get_order(&state.commerce, auth.claims(), order_id).await?;
    Ok(Json(DevPayment { outcome, order }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DevNotice {
    /// The user (a token's `sub`) who alone gets it.
    pub user_id: String,
    /// Only in this session's room; absent: in any room.
    #[serde(default)]
    pub session_id: Option<Uuid>,
    pub kind: String,
    /// Shown to the user as it is; `{}` if absent.
    #[serde(default = "empty_object")]
    pub data: Value,
}

fn empty_object() -> Value {
    Value::Object(serde_json::Map::new())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DevNoticeBatch {
    pub notices: Vec<DevNotice>,
}

#[derive(Debug, Serialize)]
pub struct PublishedNotices {
    /// The notices' ids, in the order they were given.
    pub notice_ids: Vec<i64>,
}

/// `POST /v1/dev/notices`: stores a batch of private notices in one
/// transaction with `Hub::enqueue_notice` (as the payment webhook stores
/// `order.paid`) and wakes the relay, which publishes them on Redis to every
/// node. The load generator's notice benchmark drives it.
async fn publish_notices(
    State(state): State<AppState>,
    Json(batch): Json<DevNoticeBatch>,
) -> ApiResult<Json<PublishedNotices>> {
    if batch.notices.is_empty() || batch.notices.len() > MAX_NOTICE_BATCH {
        return Err(ApiError::bad_request(
            "bad_batch",
            format!("notices must hold 1 to {MAX_NOTICE_BATCH} notices"),
        ));
    }
    let mut notices = Vec::with_capacity(batch.notices.len());
    for n in batch.notices {
        if n.user_id.is_empty() || n.user_id.len() > MAX_SUBJECT_LEN {
            return Err(ApiError::bad_request(
                "bad_user",
                format!("user_id must be 1 to {MAX_SUBJECT_LEN} bytes"),
            ));
        }
        let kind_len = n.kind.chars().count();
        if kind_len == 0 || kind_len > MAX_NOTICE_KIND {
            return Err(ApiError::bad_request(
                "bad_kind",
                format!("kind must be 1 to {MAX_NOTICE_KIND} characters"),
            ));
        }
        let notice = Notice::new(n.user_id, n.kind, n.data);
        notices.push(match n.session_id {
            Some(session) => notice.in_session(session),
            None => notice,
        });
    }
    let notice_ids = state.hub.publish_notices(&notices).await?;
    Ok(Json(PublishedNotices { notice_ids }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dev_routes_exist_only_outside_production_and_on_loopback() {
        let loopback: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        let loopback6: SocketAddr = "[::1]:8080".parse().unwrap();
        let public: SocketAddr = "0.0.0.0:8080".parse().unwrap();
        assert!(router(Environment::Production, loopback).is_none());
        assert!(router(Environment::Development, loopback).is_some());
        assert!(router(Environment::Test, loopback6).is_some());
        assert!(router(Environment::Development, public).is_none());
        assert!(router(Environment::Test, public).is_none());
    }
}
