//! Hosts and agency rosters. A host belongs to at most one agency at a time
//! (the `agency_host_one_agency_at_a_time` exclusion constraint); joining and
//! leaving are dated.

use chrono::{DateTime, Utc};
use hawker_core::Claims;
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use uuid::Uuid;

use crate::access::{acts_for_agency, require_agency};
use hawker_core::error::{violated_constraint, Error, Result};

/// A host's public profile.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Host {
    pub host_id: Uuid,
    pub handle: String,
    pub display_name: String,
    pub created_at: DateTime<Utc>,
}

/// A new host profile.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewHost {
    /// 2 to 32 of `a-z`, `0-9`, `_`. Unique.
    #[schema(min_length = 2, max_length = 32, pattern = "^[a-z0-9_]{2,32}$")]
    pub handle: String,
    /// 1 to 100 characters (Unicode scalar values), not all white space, no NUL (U+0000).
    #[schema(
        min_length = 1,
        max_length = 100,
        pattern = "^[^\\u0000]*[^\\u0000\\t-\\r \\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000][^\\u0000]*$"
    )]
    pub display_name: String,
}

/// One stay of a host on an agency's roster.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Membership {
    pub agency_id: Uuid,
    pub host_id: Uuid,
    pub handle: String,
    pub display_name: String,
    pub joined_at: DateTime<Utc>,
    /// When the host left (or will leave); absent while they stay.
    pub left_at: Option<DateTime<Utc>>,
    /// On the roster right now.
    pub current: bool,
}

/// A host joining a roster.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct JoinRoster {
    pub host_id: Uuid,
    /// ISO 8601 with offset; now if absent.
    #[serde(default)]
    pub joined_at: Option<DateTime<Utc>>,
}

const MEMBERSHIP_SELECT: &str =
    "select ah.agency_id, ah.host_id, h.handle, h.display_name, ah.joined_at, ah.left_at,
        (ah.joined_at <= now() and (ah.left_at is null or ah.left_at > now())) as current
   from agency_host ah join host h using (host_id)";

fn valid_handle(handle: &str) -> bool {
    (2..=32).contains(&handle.len())
        && handle
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// Creates a host profile (agencies and admins).
#[tracing::instrument(skip_all, fields(handle = %new.handle, caller = %claims.sub))]
pub async fn create_host(db: &PgPool, claims: &Claims, new: NewHost) -> Result<Host> {
    if !(claims.is_admin() || claims.role == hawker_core::Role::Agency) {
        return Err(Error::forbidden("only agencies and admins may create hosts"));
    }
    if !valid_handle(&new.handle) {
        return Err(Error::invalid(
            "bad_handle",
            "handle must be 2 to 32 of a-z, 0-9 and _",
        ));
    }
    let name = new.display_name.trim();
    // The bound is on what was sent (as the schema states it), not on the trimmed name.
    if name.is_empty() || new.display_name.chars().count() > 100 || name.contains('\0') {
        return Err(Error::invalid(
            "bad_display_name",
            "display_name must be 1 to 100 characters, without NUL",
        ));
    }
    sqlx::query_as::<_, Host>(
        "insert into host (host_id, handle, display_name) values ($1, $2, $3)
         returning host_id, handle, display_name, created_at",
    )
    .bind(Uuid::now_v7())
    .bind(&new.handle)
    .bind(name)
    .fetch_one(db)
    .await
    .map_err(|e| match violated_constraint(&e).as_deref() {
        Some("host_handle_key") => {
            Error::conflict("handle_taken", format!("the handle `{}` is taken", new.handle))
        }
        _ => e.into(),
    })
}

async fn require_agency_exists(db: &PgPool, agency_id: Uuid) -> Result<()> {
    let exists: bool = sqlx::query_scalar("select exists(select 1 from agency where agency_id = $1)")
        .bind(agency_id)
        .fetch_one(db)
        .await?;
    if exists {
        Ok(())
    } else {
        Err(Error::NotFound("agency"))
    }
}

/// The agency's roster: current members, or every stay past and future too.
#[tracing::instrument(skip_all, fields(%agency_id, caller = %claims.sub))]
pub async fn roster(
    db: &PgPool,
    claims: &Claims,
    agency_id: Uuid,
    include_past: bool,
) -> Result<Vec<Membership>> {
    require_agency(claims, agency_id)?;
    require_agency_exists(db, agency_id).await?;
    Ok(sqlx::query_as::<_, Membership>(&format!(
        "{MEMBERSHIP_SELECT}
          where ah.agency_id = $1
            and ($2 or (ah.joined_at <= now() and (ah.left_at is null or ah.left_at > now())))
          order by h.handle, ah.joined_at"
    ))
    .bind(agency_id)
    .bind(include_past)
    .fetch_all(db)
    .await?)
}

/// Puts a host on the roster from `joined_at` (default now), open-ended.
#[tracing::instrument(skip_all, fields(%agency_id, host_id = %join.host_id, caller = %claims.sub))]
pub async fn join(db: &PgPool, claims: &Claims, agency_id: Uuid, join: JoinRoster) -> Result<Membership> {
    require_agency(claims, agency_id)?;
    require_agency_exists(db, agency_id).await?;
    let host_exists: bool = sqlx::query_scalar("select exists(select 1 from host where host_id = $1)")
        .bind(join.host_id)
        .fetch_one(db)
        .await?;
    if !host_exists {
        return Err(Error::NotFound("host"));
    }
    let inserted = sqlx::query(
        "insert into agency_host (agency_id, host_id, joined_at) values ($1, $2, coalesce($3, now()))",
    )
    .bind(agency_id)
    .bind(join.host_id)
    .bind(join.joined_at)
    .execute(db)
    .await;
    if let Err(e) = inserted {
        return Err(match violated_constraint(&e).as_deref() {
            Some("agency_host_one_agency_at_a_time") | Some("agency_host_pkey") => {
                roster_conflict(db, claims, join.host_id, join.joined_at).await?
            }
            _ => e.into(),
        });
    }
    sqlx::query_as::<_, Membership>(&format!(
        "{MEMBERSHIP_SELECT} where ah.agency_id = $1 and ah.host_id = $2 order by ah.joined_at desc limit 1"
    ))
    .bind(agency_id)
    .bind(join.host_id)
    .fetch_one(db)
    .await
    .map_err(Into::into)
}

/// The 409 for a host already on a roster then, naming the stay it overlaps.
async fn roster_conflict(
    db: &PgPool,
    claims: &Claims,
    host_id: Uuid,
    at: Option<DateTime<Utc>>,
) -> Result<Error> {
    let other: Option<(Uuid, DateTime<Utc>, Option<DateTime<Utc>>)> = sqlx::query_as(
        "select agency_id, joined_at, left_at from agency_host
          where host_id = $1 and (left_at is null or left_at > coalesce($2, now()))
          order by joined_at limit 1",
    )
    .bind(host_id)
    .bind(at)
    .fetch_optional(db)
    .await?;
    Ok(Error::conflict(
        "host_on_another_roster",
        match other {
            Some((agency, joined, left)) => {
                let whose = if acts_for_agency(claims, agency) {
                    "this agency's roster"
                } else {
                    "another agency's roster"
                };
                let until = left
                    .map(|l| l.to_rfc3339())
                    .unwrap_or_else(|| "open-ended".into());
                format!(
                    "the host is on {whose} from {} to {until}; a host belongs to one agency at a time",
                    joined.to_rfc3339()
                )
            }
            None => "the host is on a roster at that time; a host belongs to one agency at a time".into(),
        },
    ))
}

/// Takes a host off the roster at `left_at` (default now). Refused while the
/// host still has shifts booked in this agency's sessions after that moment.
#[tracing::instrument(skip_all, fields(%agency_id, %host_id, caller = %claims.sub))]
pub async fn leave(
    db: &PgPool,
    claims: &Claims,
    agency_id: Uuid,
    host_id: Uuid,
    left_at: Option<DateTime<Utc>>,
) -> Result<Membership> {
    require_agency(claims, agency_id)?;
    require_agency_exists(db, agency_id).await?;
    let mut tx = db.begin().await?;
    let stay: Option<(DateTime<Utc>, DateTime<Utc>)> = sqlx::query_as(
        "select joined_at, coalesce($3, now()) from agency_host
          where agency_id = $1 and host_id = $2
            and (left_at is null or left_at > coalesce($3, now()))
            and joined_at < coalesce($3, now())
          order by joined_at desc limit 1
          for update",
    )
    .bind(agency_id)
    .bind(host_id)
    .bind(left_at)
    .fetch_optional(&mut *tx)
    .await?;
    let (joined_at, at) = stay.ok_or(Error::NotFound("host on this roster"))?;
    let booked: Option<(Uuid, DateTime<Utc>, DateTime<Utc>)> = sqlx::query_as(
        "select sh.session_id, sh.planned_start, sh.planned_end
           from shift sh join live_session s using (session_id)
          where s.agency_id = $1 and sh.host_id = $2 and sh.cancelled_at is null
            and sh.actual_end is null and sh.planned_end > $3
          order by sh.planned_start limit 1",
    )
    .bind(agency_id)
    .bind(host_id)
    .bind(at)
    .fetch_optional(&mut *tx)
    .await?;
    if let Some((session, start, end)) = booked {
        return Err(Error::conflict(
            "host_has_shifts",
            format!(
                "the host is booked in session {session} from {} to {}; cancel the shift first",
                start.to_rfc3339(),
                end.to_rfc3339()
            ),
        ));
    }
    sqlx::query(
        "update agency_host set left_at = $4 where agency_id = $1 and host_id = $2 and joined_at = $3",
    )
    .bind(agency_id)
    .bind(host_id)
    .bind(joined_at)
    .bind(at)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    sqlx::query_as::<_, Membership>(&format!(
        "{MEMBERSHIP_SELECT} where ah.agency_id = $1 and ah.host_id = $2 and ah.joined_at = $3"
    ))
    .bind(agency_id)
    .bind(host_id)
    .bind(joined_at)
    .fetch_one(db)
    .await
    .map_err(Into::into)
}

/// An agency and the hosts on its roster now.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Agency {
    pub agency_id: Uuid,
    pub name: String,
    pub created_at: DateTime<Utc>,
    /// Hosts currently on the roster.
    pub hosts: Vec<RosterHost>,
}

/// A host on an agency's roster now.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct RosterHost {
    pub host_id: Uuid,
    pub handle: String,
    pub display_name: String,
    pub joined_at: DateTime<Utc>,
}

/// An agency and its current roster (the agency itself or an admin).
#[tracing::instrument(skip_all, fields(%agency_id, caller = %claims.sub))]
pub async fn agency(db: &PgPool, claims: &Claims, agency_id: Uuid) -> Result<Agency> {
    require_agency(claims, agency_id)?;
    let (name, created_at): (String, DateTime<Utc>) =
        sqlx::query_as("select name, created_at from agency where agency_id = $1")
            .bind(agency_id)
            .fetch_optional(db)
            .await?
            .ok_or(Error::NotFound("agency"))?;
    let hosts = sqlx::query_as::<_, RosterHost>(
        "select h.host_id, h.handle, h.display_name, ah.joined_at
           from agency_host ah join host h using (host_id)
          where ah.agency_id = $1 and ah.joined_at <= now() and (ah.left_at is null or ah.left_at > now())
          order by h.handle",
    )
    .bind(agency_id)
    .fetch_all(db)
    .await?;
    Ok(Agency {
        agency_id,
        name,
        created_at,
        hosts,
    })
}

/// The profiles of `host_ids` that exist, ordered by handle.
pub async fn hosts(db: &PgPool, host_ids: &[Uuid]) -> Result<Vec<Host>> {
    Ok(sqlx::query_as::<_, Host>(
        "select host_id, handle, display_name, created_at from host
          where host_id = any($1) order by handle",
    )
    .bind(host_ids)
    .fetch_all(db)
    .await?)
}

/// Handles of hosts, ordered by handle.
pub async fn handles(db: &PgPool, host_ids: &[Uuid]) -> Result<Vec<(Uuid, String)>> {
    Ok(
        sqlx::query_as("select host_id, handle from host where host_id = any($1) order by handle")
            .bind(host_ids)
            .fetch_all(db)
            .await?,
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn handles_are_checked_like_the_database_does() {
        assert!(super::valid_handle("mia_live"));
        assert!(!super::valid_handle("Mia"));
        assert!(!super::valid_handle("m"));
        assert!(!super::valid_handle("a-b"));
    }
}
