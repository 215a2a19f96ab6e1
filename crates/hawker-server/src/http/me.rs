//! `GET /v1/me`: who the token says you are.

use hawker_core::Claims;

use super::auth::Auth;
use super::error::{ErrorBody, Json};

/// The claims of the presented token.
#[utoipa::path(get, path = "/v1/me", tag = "auth", security(("bearer" = [])), responses(
    (status = 200, body = Claims),
    (status = 401, body = ErrorBody, description = "missing, malformed, expired or foreign token"),
))]
pub async fn me(auth: Auth) -> Json<Claims> {
    Json(auth.0)
}
