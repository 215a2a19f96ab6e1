//! Who may see and do what on the agency side.
//!
//! - an agency token acts for its own agency only: its roster, sessions,
//!   shifts, campaigns, terms and statement;
//! - a host sees their own shifts and earnings, and runs the sessions they
//!   are scheduled in (go live, hand off, end);
//! - a brand sees its campaigns and the sales of its own products;
//! - an admin may do everything.
//!
//! Refusals are 403 where the resource's existence is no secret (agencies,
//! sessions, hosts) and 404 where it is (campaigns, shifts).

use hawker_core::{Claims, Role};
use sqlx::PgPool;
use uuid::Uuid;

use hawker_core::error::{Error, Result};

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

/// A session as the agency side needs it for rights.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SessionRow {
    pub session_id: Uuid,
    pub agency_id: Uuid,
    pub brand_id: Option<Uuid>,
    pub campaign_id: Option<Uuid>,
    pub status: String,
}

/// How the caller relates to a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionRole {
    /// Admin or the session's agency: everything.
    Manager,
    /// A host with a (not cancelled) shift in the session.
    ScheduledHost(Uuid),
    /// A brand whose products are in the session (or the session's brand).
    Brand(Uuid),
    /// Anyone else.
    Outsider,
}

pub async fn load_session(db: &PgPool, session_id: Uuid) -> Result<SessionRow> {
    sqlx::query_as::<_, SessionRow>(
        "select session_id, agency_id, brand_id, campaign_id, status from live_session where session_id = $1",
    )
    .bind(session_id)
    .fetch_optional(db)
    .await?
    .ok_or(Error::NotFound("session"))
}

/// Works out how `claims` relates to `session`.
pub async fn session_role(db: &PgPool, claims: &Claims, session: &SessionRow) -> Result<SessionRole> {
    if acts_for_agency(claims, session.agency_id) {
        return Ok(SessionRole::Manager);
    }
    if let Some(host_id) = host_of(claims) {
        let scheduled: bool = sqlx::query_scalar(
            "select exists(select 1 from shift where session_id = $1 and host_id = $2 and cancelled_at is null)",
        )
        .bind(session.session_id)
        .bind(host_id)
        .fetch_one(db)
        .await?;
        return Ok(if scheduled {
            SessionRole::ScheduledHost(host_id)
        } else {
            SessionRole::Outsider
        });
    }
    if let Some(brand_id) = brand_of(claims) {
        if session.brand_id == Some(brand_id) {
            return Ok(SessionRole::Brand(brand_id));
        }
        let sells: bool = sqlx::query_scalar(
            "select exists(select 1 from lineup_item l join sku s using (sku_id) join product p using (product_id)
                            where l.session_id = $1 and p.brand_id = $2)",
        )
        .bind(session.session_id)
        .bind(brand_id)
        .fetch_one(db)
        .await?;
        return Ok(if sells {
            SessionRole::Brand(brand_id)
        } else {
            SessionRole::Outsider
        });
    }
    Ok(SessionRole::Outsider)
}

/// Refuses (403) unless the caller manages the session (admin or its agency).
pub fn require_manager(role: SessionRole) -> Result<()> {
    match role {
        SessionRole::Manager => Ok(()),
        _ => Err(Error::forbidden(
            "only the session's agency or an admin may do this",
        )),
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
    pub fn agency(self) -> Option<Uuid> {
        match self {
            HostReader::Everything => None,
            HostReader::Agency(a) => Some(a),
        }
    }
}
