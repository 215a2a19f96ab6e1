//! Who may run a session's commerce (pin, launch deals, drop coupons): the
//! agency side's one session-access rule, [`hawker_agency::access::session_access`],
//! seen as commerce needs it.

use hawker_agency::SessionStatus;
use hawker_core::Claims;
use sqlx::PgPool;
use uuid::Uuid;

use hawker_core::error::{Error, Result};

/// A session as commerce needs it.
#[derive(Debug, Clone)]
pub struct SessionAccess {
    pub session_id: Uuid,
    pub agency_id: Uuid,
    pub brand_id: Option<Uuid>,
    pub status: SessionStatus,
    /// The caller may act as the session's host.
    pub can_host: bool,
}

/// Looks the session up and works out whether `claims` may host it: admins,
/// the session's agency, and hosts on that agency's roster now.
pub async fn session_access(db: &PgPool, claims: &Claims, session_id: Uuid) -> Result<SessionAccess> {
    let access = hawker_agency::access::session_access(db, claims, session_id).await?;
    Ok(SessionAccess {
        session_id,
        agency_id: access.session.agency_id,
        brand_id: access.session.brand_id,
        status: access.session.status,
        can_host: access.role.may_host(),
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
    if access.status.is_over() {
        return Err(Error::conflict(
            "session_ended",
            format!("the session is {}", access.status),
        ));
    }
    Ok(access)
}
