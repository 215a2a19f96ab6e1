//! `GET /v1/me`: who the token says you are.

use hawker_core::Claims;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::Auth;
use super::error::{Json, Unauthenticated};
use super::AppState;

/// The `/v1/me` route, for `api_router` to merge.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(me))
}

/// The claims of the presented token.
#[utoipa::path(get, path = "/v1/me", tag = "auth", security(("bearer" = [])), responses(
    (status = 200, body = Claims),
    Unauthenticated,
))]
pub async fn me(auth: Auth) -> Json<Claims> {
    Json(auth.0)
}
