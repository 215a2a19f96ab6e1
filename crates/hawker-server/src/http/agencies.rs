//! Agencies and their current roster.

use axum::extract::State;
use chrono::{DateTime, Utc};
use hawker_core::Role;
use serde::Serialize;
use uuid::Uuid;

use super::auth::Auth;
use super::error::{ApiError, ApiResult, ErrorBody, Json, Path};
use super::AppState;

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Agency {
    pub agency_id: Uuid,
    pub name: String,
    pub created_at: DateTime<Utc>,
    /// Hosts currently on the roster.
    pub hosts: Vec<RosterHost>,
}

#[derive(Debug, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct RosterHost {
    pub host_id: Uuid,
    pub handle: String,
    pub display_name: String,
    pub joined_at: DateTime<Utc>,
}

/// An agency and its current roster. Only that agency's tokens and admins may read it.
#[utoipa::path(get, path = "/v1/agencies/{agency_id}", tag = "agencies", security(("bearer" = [])),
    params(("agency_id" = Uuid, Path, description = "the agency")),
    responses(
        (status = 200, body = Agency),
        (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody, description = "the token does not act for this agency"),
        (status = 404, body = ErrorBody),
    ))]
#[tracing::instrument(skip_all, fields(%agency_id))]
pub async fn get_agency(
    State(state): State<AppState>,
    auth: Auth,
    Path(agency_id): Path<Uuid>,
) -> ApiResult<Json<Agency>> {
    auth.require_role(&[Role::Agency])?;
    auth.require_agency(agency_id)?;
    let (name, created_at): (String, DateTime<Utc>) =
        sqlx::query_as("select name, created_at from agency where agency_id = $1")
            .bind(agency_id)
            .fetch_optional(&state.db)
            .await?
            .ok_or(ApiError::NotFound("agency"))?;
    let hosts = sqlx::query_as::<_, RosterHost>(
        "select h.host_id, h.handle, h.display_name, ah.joined_at
           from agency_host ah join host h using (host_id)
          where ah.agency_id = $1 and ah.joined_at <= now() and (ah.left_at is null or ah.left_at > now())
          order by h.handle",
    )
    .bind(agency_id)
    .fetch_all(&state.db)
    .await?;
    Ok(Json(Agency {
        agency_id,
        name,
        created_at,
        hosts,
    }))
}
