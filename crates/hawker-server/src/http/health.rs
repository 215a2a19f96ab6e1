//! Liveness and readiness.

use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde::Serialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;

const CHECK_TIMEOUT: Duration = Duration::from_secs(1);

/// `/healthz` and `/readyz` on the public listener, for `api_router` to merge.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(healthz))
        .routes(routes!(readyz))
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct Health {
    pub status: &'static str,
}

/// Liveness: the process answers. Touches no dependency.
#[utoipa::path(get, path = "/healthz", tag = "operations", responses((status = 200, body = Health)))]
pub async fn healthz() -> axum::Json<Health> {
    axum::Json(Health { status: "ok" })
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct Readiness {
    /// `ready`, `not_ready` or `shutting_down`.
    pub status: &'static str,
    pub postgres: Check,
    pub redis: Check,
    /// This node's own settlement batches commit (they can fail while
    /// `select 1` answers: a path that drops packets, locks never granted).
    pub settlement: Check,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct Check {
    pub ok: bool,
    /// Why the check failed. Only the admin listener shows it: raw
    /// dependency errors (addresses, versions) stay off the public side.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Check {
    fn from_result(result: Result<(), String>) -> Self {
        match result {
            Ok(()) => Check {
                ok: true,
                error: None,
            },
            Err(error) => Check {
                ok: false,
                error: Some(error),
            },
        }
    }
}

async fn check_postgres(state: &AppState) -> Result<(), String> {
    match tokio::time::timeout(CHECK_TIMEOUT, crate::db::ping(&state.db)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(format!("postgres: {e}")),
        Err(_) => Err("postgres: no answer within 1s".to_string()),
    }
}

async fn check_redis(state: &AppState) -> Result<(), String> {
    let mut conn = state.redis.clone();
    let ping = redis::cmd("PING");
    match tokio::time::timeout(CHECK_TIMEOUT, ping.query_async::<String>(&mut conn)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(format!("redis: {e}")),
        Err(_) => Err("redis: no answer within 1s".to_string()),
    }
}

/// Readiness: Postgres and Redis answer, this node's settlement batches
/// commit, and the node is not shutting down.
/// A load balancer stops sending traffic on 503. The public listener says
/// which dependency failed but not its error; the admin listener says both.
#[utoipa::path(get, path = "/readyz", tag = "operations", responses(
    (status = 200, body = Readiness, description = "ready"),
    (status = 503, body = Readiness, description = "a dependency is down, or shutdown has begun"),
))]
pub async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    readiness(&state, false).await
}

/// `/readyz` on the admin listener, with each failed check's error.
pub async fn readyz_admin(State(state): State<AppState>) -> impl IntoResponse {
    readiness(&state, true).await
}

async fn readiness(state: &AppState, show_errors: bool) -> impl IntoResponse {
    let state = state.clone();
    let (pg, redis) = tokio::join!(check_postgres(&state), check_redis(&state));
    let shutting_down = state.shutdown.is_cancelled();
    let settlement = state.commerce.settlement_problem().map_or(Ok(()), Err);
    let ready = pg.is_ok() && redis.is_ok() && settlement.is_ok() && !shutting_down;
    let status = if shutting_down {
        "shutting_down"
    } else if ready {
        "ready"
    } else {
        "not_ready"
    };
    let code = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let mut body = Readiness {
        status,
        postgres: Check::from_result(pg),
        redis: Check::from_result(redis),
        settlement: Check::from_result(settlement),
    };
    if !show_errors {
        body.postgres.error = None;
        body.redis.error = None;
        body.settlement.error = None;
    }
    (code, axum::Json(body))
}
