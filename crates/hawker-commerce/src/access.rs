//! Who may run a session's commerce (pin, launch deals, drop coupons).

use hawker_core::{Claims, Role};
use sqlx::PgPool;
use uuid::Uuid;

use hawker_core::error::{Error, Result};

/// A session as commerce needs it.
#[derive(Debug, Clone)]
pub struct SessionAccess {
    pub session_id: Uuid,
    pub agency_id: Uuid,
    pub brand_id: Option<Uuid>,
    pub status: String,
    /// The caller may act as the session's host.
    pub can_host: bool,
}

/// Looks the session up and works out whether `claims` may host it: admins,
/// the session's agency, and hosts on that agency's roster now.
pub async fn session_access(db: &PgPool, claims: &Claims, session_id: Uuid) -> Result<SessionAccess> {
    let row: Option<(Uuid, Option<Uuid>, String)> =
        sqlx::query_as("select agency_id, brand_id, status from live_session where session_id = $1")
            .bind(session_id)
            .fetch_optional(db)
            .await?;
    let (agency_id, brand_id, status) = row.ok_or(Error::NotFound("session"))?;
    let can_host = match claims.role {
        Role::Admin => true,
        Role::Agency => claims.agency_id == Some(agency_id),
        Role::Host => match claims.subject_uuid() {
            Some(host_id) => {
                sqlx::query_scalar::<_, bool>(
                    "select exists(select 1 from agency_host where agency_id = $1 and host_id = $2
                    and joined_at <= now() and (left_at is null or left_at > now()))",
                )
                .bind(agency_id)
                .bind(host_id)
                .fetch_one(db)
                .await?
            }
            None => false,
        },
        Role::Viewer | Role::Brand => false,
    };
    Ok(SessionAccess {
        session_id,
        agency_id,
        brand_id,
        status,
        can_host,
    })
}

/// Like [`session_access`], refusing callers who may not host.
pub async fn require_host(db: &PgPool, claims: &Claims, session_id: Uuid) -> Result<SessionAccess> {
    let access = session_access(db, claims, session_id).await?;
    if !access.can_host {
        return Err(Error::forbidden(
            "only the session's host, its agency or an admin may do this",
        ));
    }
    if access.status == "ended" || access.status == "cancelled" {
        return Err(Error::conflict(
            "session_ended",
            format!("the session is {}", access.status),
        ));
    }
    Ok(access)
}
