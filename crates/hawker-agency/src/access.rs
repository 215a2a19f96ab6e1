//! Who may see and do what on the agency side — and the one session-access
//! rule every crate uses ([`session_access`]).
//!
//! - an agency token acts for its own agency only: its roster, sessions,
//!   shifts, campaigns, terms and statement;
//! - a host sees their own shifts and earnings, runs the sessions they are
//!   scheduled in (go live, hand off, end), and may host the room of any
//!   session of the agency whose roster they are on now;
//! - a brand sees its campaigns and the sales of its own products;
//! - an admin may do everything.
//!
//! Refusals are 403 where the resource's existence is no secret (agencies,
//! sessions, hosts) and 404 where it is (campaigns, shifts).

use hawker_core::{Claims, Role};
use serde::{Deserialize, Serialize};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use hawker_core::error::{Error, Result};

/// A session's life: `scheduled` → `live` → `ended`, or `cancelled`.
/// Stored and serialised as lowercase text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, sqlx::Type, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
#[sqlx(type_name = "text", rename_all = "lowercase")]
pub enum SessionStatus {
    Scheduled,
    Live,
    Ended,
    Cancelled,
}

impl SessionStatus {
    /// The stored and serialised name.
    pub fn as_str(self) -> &'static str {
        match self {
            SessionStatus::Scheduled => "scheduled",
            SessionStatus::Live => "live",
            SessionStatus::Ended => "ended",
            SessionStatus::Cancelled => "cancelled",
        }
    }

    /// Ended or cancelled: nothing more happens in it.
    pub fn is_over(self) -> bool {
        matches!(self, SessionStatus::Ended | SessionStatus::Cancelled)
    }
}

impl std::fmt::Display for SessionStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// True if `claims` is an admin or an agency token acting for `agency_id`.
pub fn acts_for_agency(claims: &Claims, agency_id: Uuid) -> bool {
    claims.is_admin() || (claims.role == Role::Agency && claims.agency_id == Some(agency_id))
}

/// Refuses (403) unless `claims` is an admin or acts for `agency_id`.
pub fn require_agency(claims: &Claims, agency_id: Uuid) -> Result<()> {
    if acts_for_agency(claims, agency_id) {
        Ok(())
    } else {
        Err(Error::forbidden("this token does not act for that agency"))
    }
}

/// The host a host token speaks for.
pub fn host_of(claims: &Claims) -> Option<Uuid> {
    (claims.role == Role::Host)
        .then(|| claims.subject_uuid())
        .flatten()
}

/// The brand a brand token speaks for.
pub fn brand_of(claims: &Claims) -> Option<Uuid> {
    (claims.role == Role::Brand).then_some(claims.brand_id).flatten()
}

/// A session as rights need it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SessionRow {
    pub session_id: Uuid,
    pub agency_id: Uuid,
    pub brand_id: Option<Uuid>,
    pub campaign_id: Option<Uuid>,
    pub status: SessionStatus,
}

/// How the caller relates to a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionRole {
    /// An admin token.
    Admin,
    /// A token of the session's agency.
    Agency,
    /// A host token.
    Host {
        host_id: Uuid,
        /// Has a (not cancelled) shift in the session.
        scheduled: bool,
        /// On the roster of the session's agency now.
        on_roster: bool,
    },
    /// A brand token.
    Brand {
        brand_id: Uuid,
        /// The session's own brand. A brand that only sells in the session
        /// (commerce's lineup) is `false` here: `hawker-commerce` knows the lineup.
        session_brand: bool,
    },
    /// Anyone else: viewers, other agencies.
    Outsider,
}

impl SessionRole {
    /// Admin or the session's agency: may do everything with it.
    pub fn manages(self) -> bool {
        matches!(self, SessionRole::Admin | SessionRole::Agency)
    }

    /// May run the session's room and commerce: admins, the session's
    /// agency, and hosts on its agency's roster now.
    pub fn may_host(self) -> bool {
        match self {
            SessionRole::Admin | SessionRole::Agency => true,
            SessionRole::Host { on_roster, .. } => on_roster,
            SessionRole::Brand { .. } | SessionRole::Outsider => false,
        }
    }

    /// The host, if a host scheduled in the session.
    pub fn scheduled_host(self) -> Option<Uuid> {
        match self {
            SessionRole::Host {
                host_id,
                scheduled: true,
                ..
            } => Some(host_id),
            _ => None,
        }
    }

    /// The brand, if the session's own brand.
    pub fn session_brand(self) -> Option<Uuid> {
        match self {
            SessionRole::Brand {
                brand_id,
                session_brand: true,
            } => Some(brand_id),
            _ => None,
        }
    }
}

/// A session and how the caller relates to it.
#[derive(Debug, Clone)]
pub struct SessionAccess {
    pub session: SessionRow,
    pub role: SessionRole,
}

/// The session's row (404 if there is none).
pub async fn load_session(db: &PgPool, session_id: Uuid) -> Result<SessionRow> {
    let mut conn = db.acquire().await?;
    load_session_in(&mut conn, session_id, false).await
}

/// The session's row read on `conn` (404 if there is none), for callers
/// inside their own transaction (commerce's refunds).
pub async fn load_session_on(conn: &mut PgConnection, session_id: Uuid) -> Result<SessionRow> {
    load_session_in(conn, session_id, false).await
}

/// The session's row on `conn`, optionally locked `for update`.
pub(crate) async fn load_session_in(
    conn: &mut PgConnection,
    session_id: Uuid,
    lock: bool,
) -> Result<SessionRow> {
    let sql = if lock {
        "select session_id, agency_id, brand_id, campaign_id, status from live_session
          where session_id = $1 for update"
    } else {
        "select session_id, agency_id, brand_id, campaign_id, status from live_session where session_id = $1"
    };
    sqlx::query_as::<_, SessionRow>(sql)
        .bind(session_id)
        .fetch_optional(conn)
        .await?
        .ok_or(Error::NotFound("session"))
}

/// The one session-access rule: the session (404 if none) and the caller's
/// role in it.
pub async fn session_access(db: &PgPool, claims: &Claims, session_id: Uuid) -> Result<SessionAccess> {
    let session = load_session(db, session_id).await?;
    let role = session_role(db, claims, &session).await?;
    Ok(SessionAccess { session, role })
}

/// Works out how `claims` relates to `session`.
pub async fn session_role(db: &PgPool, claims: &Claims, session: &SessionRow) -> Result<SessionRole> {
    if claims.is_admin() {
        return Ok(SessionRole::Admin);
    }
    if acts_for_agency(claims, session.agency_id) {
        return Ok(SessionRole::Agency);
    }
    if let Some(host_id) = host_of(claims) {
        let (scheduled, on_roster): (bool, bool) = sqlx::query_as(
            "select exists(select 1 from shift where session_id = $1 and host_id = $2 and cancelled_at is null),
                    exists(select 1 from agency_host where agency_id = $3 and host_id = $2
                            and joined_at <= now() and (left_at is null or left_at > now()))",
        )
        .bind(session.session_id)
        .bind(host_id)
        .bind(session.agency_id)
        .fetch_one(db)
        .await?;
        return Ok(SessionRole::Host {
            host_id,
            scheduled,
            on_roster,
        });
    }
    if let Some(brand_id) = brand_of(claims) {
        return Ok(SessionRole::Brand {
            brand_id,
            session_brand: session.brand_id == Some(brand_id),
        });
    }
    Ok(SessionRole::Outsider)
}

/// Refuses (403) unless the caller manages the session (admin or its agency).
pub fn require_manager(role: SessionRole) -> Result<()> {
    if role.manages() {
        Ok(())
    } else {
        Err(Error::forbidden(
            "only the session's agency or an admin may do this",
        ))
    }
}

/// True if `host_id` has ever been on `agency_id`'s roster.
pub async fn ever_on_roster(db: &PgPool, agency_id: Uuid, host_id: Uuid) -> Result<bool> {
    Ok(
        sqlx::query_scalar("select exists(select 1 from agency_host where agency_id = $1 and host_id = $2)")
            .bind(agency_id)
            .bind(host_id)
            .fetch_one(db)
            .await?,
    )
}

/// Who may read a host's shifts and statement: the host, an admin, or an
/// agency the host has been with (which then sees only its own part).
pub async fn require_host_reader(db: &PgPool, claims: &Claims, host_id: Uuid) -> Result<HostReader> {
    if claims.is_admin() {
        return Ok(HostReader::Everything);
    }
    if host_of(claims) == Some(host_id) {
        return Ok(HostReader::Everything);
    }
    if let (Role::Agency, Some(agency_id)) = (claims.role, claims.agency_id) {
        if ever_on_roster(db, agency_id, host_id).await? {
            return Ok(HostReader::Agency(agency_id));
        }
    }
    Err(Error::forbidden(
        "only the host, an agency the host has been with, or an admin may read this",
    ))
}

/// What a reader of a host's data may see.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostReader {
    Everything,
    /// Only what concerns this agency's sessions.
    Agency(Uuid),
}

impl HostReader {
    /// The agency the reader is limited to, if any.
    pub fn agency(self) -> Option<Uuid> {
        match self {
            HostReader::Everything => None,
            HostReader::Agency(a) => Some(a),
        }
    }
}

/// True if `host_id` exists.
pub async fn host_exists(db: &PgPool, host_id: Uuid) -> Result<bool> {
    Ok(
        sqlx::query_scalar("select exists(select 1 from host where host_id = $1)")
            .bind(host_id)
            .fetch_one(db)
            .await?,
    )
}

/// True if `agency_id` exists.
pub async fn agency_exists(db: &PgPool, agency_id: Uuid) -> Result<bool> {
    Ok(
        sqlx::query_scalar("select exists(select 1 from agency where agency_id = $1)")
            .bind(agency_id)
            .fetch_one(db)
            .await?,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_managers_and_hosts_on_the_roster_may_host() {
        let host = |scheduled, on_roster| SessionRole::Host {
            host_id: Uuid::nil(),
            scheduled,
            on_roster,
        };
        assert!(SessionRole::Admin.may_host());
        assert!(SessionRole::Agency.may_host());
        assert!(host(false, true).may_host());
        assert!(!host(true, false).may_host());
        assert_eq!(host(true, false).scheduled_host(), Some(Uuid::nil()));
        assert!(!SessionRole::Brand {
            brand_id: Uuid::nil(),
            session_brand: true
        }
        .may_host());
        assert!(!SessionRole::Outsider.may_host());
        assert_eq!(
            serde_json::to_value(SessionStatus::Cancelled).ok(),
            Some(serde_json::json!("cancelled"))
        );
    }
}
