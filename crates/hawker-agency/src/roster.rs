//! Hosts and agency rosters. A host belongs to at most one agency at a time
//! (the `agency_host_one_agency_at_a_time` exclusion constraint); joining and
//! leaving are dated.
//!
//! Joining needs the host's consent: the agency sends an invite
//! ([`invite`]), and the stay begins when the host accepts it ([`accept`]),
//! with `joined_at` the moment of acceptance. No one can date a stay ahead
//! (or back): a stay dated years ahead used to block every other agency.
//! The host may decline ([`decline`]), the agency withdraw ([`withdraw`]),
//! and an invite not answered within [`INVITE_TTL_DAYS`] days expires.

use chrono::{DateTime, Utc};
use hawker_core::Claims;
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use uuid::Uuid;

use crate::access::{acts_for_agency, host_of, require_agency};
use crate::page::{self, PageQuery};
use hawker_core::error::{violated_constraint, Error, Result};

/// How long a host has to answer an invite.
pub const INVITE_TTL_DAYS: i64 = 7;
/// How far from now a client-supplied `joined_at` may be (it is then ignored:
/// the stay begins at acceptance).
pub const JOINED_AT_TOLERANCE_SECS: i64 = 300;

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
    /// 1 to 100 characters (Unicode scalar values), not all white space, without control, bidi or zero-width characters.
    #[schema(
        min_length = 1,
        max_length = 100,
        pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f\\u00ad\\u061c\\u180e\\u200b-\\u200f\\u202a-\\u202e\\u2060-\\u2064\\u2066-\\u2069\\ufeff]*[^\\u0000-\\u001f\\u007f-\\u009f\\u00ad\\u061c\\u180e\\u200b-\\u200f\\u202a-\\u202e\\u2060-\\u2064\\u2066-\\u2069\\ufeff \\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000][^\\u0000-\\u001f\\u007f-\\u009f\\u00ad\\u061c\\u180e\\u200b-\\u200f\\u202a-\\u202e\\u2060-\\u2064\\u2066-\\u2069\\ufeff]*$"
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

/// An agency inviting a host onto its roster.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct JoinRoster {
    pub host_id: Uuid,
    /// Deprecated: the stay begins when the host accepts. If given, it must be
    /// within 5 minutes of now (else 400 `bad_joined_at`), and is ignored.
    #[serde(default)]
    pub joined_at: Option<DateTime<Utc>>,
}

/// An invite onto an agency's roster, and what became of it.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Invite {
    pub invite_id: Uuid,
    pub agency_id: Uuid,
    pub agency_name: String,
    pub host_id: Uuid,
    pub handle: String,
    pub display_name: String,
    /// `pending`, `accepted`, `declined`, `withdrawn` or `expired`.
    pub status: String,
    pub created_at: DateTime<Utc>,
    /// A pending invite can be accepted until then.
    pub expires_at: DateTime<Utc>,
    /// When the host accepted or declined, or the agency withdrew it.
    pub answered_at: Option<DateTime<Utc>>,
}

/// A page of a roster.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct RosterPage {
    pub items: Vec<Membership>,
    /// Pass as `cursor` for the next page; absent (null) on the last page.
    pub next_cursor: Option<String>,
}

/// A page of invites.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct InvitePage {
    pub items: Vec<Invite>,
    /// Pass as `cursor` for the next page; absent (null) on the last page.
    pub next_cursor: Option<String>,
}

const INVITE_SELECT: &str = "select i.invite_id, i.agency_id, a.name as agency_name, i.host_id, h.handle,
        h.display_name,
        case when i.status = 'pending' and i.expires_at <= now() then 'expired' else i.status end as status,
        i.created_at, i.expires_at, i.answered_at
   from roster_invite i join agency a using (agency_id) join host h using (host_id)";

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
    if name.is_empty()
        || new.display_name.chars().count() > 100
        || hawker_core::text::hidden_char(&new.display_name, false).is_some()
    {
        return Err(Error::invalid(
            "bad_display_name",
            "display_name must be 1 to 100 characters, without control, bidi or zero-width characters",
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

/// The agency's roster: current members, or every stay past and future too,
/// a page at a time in (handle, joined_at) order.
#[tracing::instrument(skip_all, fields(%agency_id, caller = %claims.sub))]
pub async fn roster(
    db: &PgPool,
    claims: &Claims,
    agency_id: Uuid,
    include_past: bool,
    page: &PageQuery,
) -> Result<RosterPage> {
    require_agency(claims, agency_id)?;
    let limit = page.limit()?;
    let after = page.after_text_time()?;
    require_agency_exists(db, agency_id).await?;
    let rows = sqlx::query_as::<_, Membership>(&format!(
        "{MEMBERSHIP_SELECT}
          where ah.agency_id = $1
            and ($2 or (ah.joined_at <= now() and (ah.left_at is null or ah.left_at > now())))
            and ($3::text is null or (h.handle, ah.joined_at) > ($3, $4))
          order by h.handle, ah.joined_at
          limit $5"
    ))
    .bind(agency_id)
    .bind(include_past)
    .bind(after.as_ref().map(|a| a.0.as_str()))
    .bind(after.as_ref().map(|a| a.1))
    .bind(limit + 1)
    .fetch_all(db)
    .await?;
    let (items, next_cursor) = page::split(rows, limit, |m| page::text_time(&m.handle, m.joined_at));
    Ok(RosterPage { items, next_cursor })
}

/// Invites a host onto the agency's roster (the agency or an admin). The
/// host is on the roster only once they accept. Refused (409) while the host
/// is on a roster now or ahead — this one or another — or already has a
/// pending invite from this agency.
#[tracing::instrument(skip_all, fields(%agency_id, host_id = %join.host_id, caller = %claims.sub))]
pub async fn invite(db: &PgPool, claims: &Claims, agency_id: Uuid, join: JoinRoster) -> Result<Invite> {
    require_agency(claims, agency_id)?;
    if let Some(at) = join.joined_at {
        let off = (at - Utc::now()).num_seconds().abs();
        if off > JOINED_AT_TOLERANCE_SECS {
            return Err(Error::invalid(
                "bad_joined_at",
                "a stay begins when the host accepts the invite; joined_at may only be now \
                 (within 5 minutes) or absent",
            ));
        }
    }
    require_agency_exists(db, agency_id).await?;
    let host_exists: bool = sqlx::query_scalar("select exists(select 1 from host where host_id = $1)")
        .bind(join.host_id)
        .fetch_one(db)
        .await?;
    if !host_exists {
        return Err(Error::NotFound("host"));
    }
    let mut tx = db.begin().await?;
    // Serialises invites and acceptances of one host.
    sqlx::query("select 1 from host where host_id = $1 for update")
        .bind(join.host_id)
        .execute(&mut *tx)
        .await?;
    let on_a_roster: bool = sqlx::query_scalar(
        "select exists(select 1 from agency_host where host_id = $1 and (left_at is null or left_at > now()))",
    )
    .bind(join.host_id)
    .fetch_one(&mut *tx)
    .await?;
    if on_a_roster {
        drop(tx);
        return Err(roster_conflict(db, claims, join.host_id, None).await?);
    }
    // A pending invite that ran out is closed, so a new one can be sent.
    sqlx::query(
        "update roster_invite set status = 'expired', answered_at = expires_at
          where agency_id = $1 and host_id = $2 and status = 'pending' and expires_at <= now()",
    )
    .bind(agency_id)
    .bind(join.host_id)
    .execute(&mut *tx)
    .await?;
    let invite_id = Uuid::now_v7();
    let inserted = sqlx::query(
        "insert into roster_invite (invite_id, agency_id, host_id, invited_by, expires_at)
         values ($1, $2, $3, $4, now() + make_interval(days => $5::int))",
    )
    .bind(invite_id)
    .bind(agency_id)
    .bind(join.host_id)
    .bind(&claims.sub)
    .bind(INVITE_TTL_DAYS as i32)
    .execute(&mut *tx)
    .await;
    if let Err(e) = inserted {
        return Err(match violated_constraint(&e).as_deref() {
            Some("roster_invite_one_pending") => Error::conflict(
                "invite_pending",
                "the host already has a pending invite from this agency",
            ),
            _ => e.into(),
        });
    }
    tx.commit().await?;
    get_invite(db, invite_id).await
}

async fn get_invite(db: &PgPool, invite_id: Uuid) -> Result<Invite> {
    sqlx::query_as::<_, Invite>(&format!("{INVITE_SELECT} where i.invite_id = $1"))
        .bind(invite_id)
        .fetch_optional(db)
        .await?
        .ok_or(Error::NotFound("invite"))
}

/// Refuses (403) unless the token is host `host_id` itself: only the host
/// consents, not their agency, another host or an admin.
fn require_the_host(claims: &Claims, host_id: Uuid) -> Result<()> {
    if host_of(claims) == Some(host_id) {
        Ok(())
    } else {
        Err(Error::forbidden(
            "only the host themselves may answer their invites",
        ))
    }
}

/// Locks the host's pending invite `invite_id` (404 if it is not theirs; 409
/// if it was answered or has expired).
async fn lock_pending(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    host_id: Uuid,
    invite_id: Uuid,
) -> Result<Uuid> {
    // The host row first: the same order as `invite`.
    sqlx::query("select 1 from host where host_id = $1 for update")
        .bind(host_id)
        .execute(&mut **tx)
        .await?;
    let row: Option<(Uuid, String, bool)> = sqlx::query_as(
        "select agency_id, status, expires_at <= now() from roster_invite
          where invite_id = $1 and host_id = $2 for update",
    )
    .bind(invite_id)
    .bind(host_id)
    .fetch_optional(&mut **tx)
    .await?;
    match row {
        None => Err(Error::NotFound("invite")),
        Some((_, status, _)) if status != "pending" => Err(Error::conflict(
            "invite_not_pending",
            format!("the invite is {status}"),
        )),
        Some((_, _, true)) => Err(Error::conflict(
            "invite_expired",
            "the invite has expired; the agency may send a new one",
        )),
        Some((agency_id, _, false)) => Ok(agency_id),
    }
}

/// The host accepts an invite: the stay begins now. 409
/// `host_on_another_roster` if the host joined another roster meanwhile.
#[tracing::instrument(skip_all, fields(%host_id, %invite_id, caller = %claims.sub))]
pub async fn accept(db: &PgPool, claims: &Claims, host_id: Uuid, invite_id: Uuid) -> Result<Membership> {
    require_the_host(claims, host_id)?;
    let mut tx = db.begin().await?;
    let agency_id = lock_pending(&mut tx, host_id, invite_id).await?;
    let joined_at: DateTime<Utc> = sqlx::query_scalar("select now()").fetch_one(&mut *tx).await?;
    let inserted = sqlx::query(
        "insert into agency_host (agency_id, host_id, joined_at, invite_id) values ($1, $2, $3, $4)",
    )
    .bind(agency_id)
    .bind(host_id)
    .bind(joined_at)
    .bind(invite_id)
    .execute(&mut *tx)
    .await;
    if let Err(e) = inserted {
        return Err(match violated_constraint(&e).as_deref() {
            Some("agency_host_one_agency_at_a_time") | Some("agency_host_pkey") => {
                drop(tx);
                roster_conflict(db, claims, host_id, Some(joined_at)).await?
            }
            _ => e.into(),
        });
    }
    sqlx::query("update roster_invite set status = 'accepted', answered_at = $2 where invite_id = $1")
        .bind(invite_id)
        .bind(joined_at)
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

/// The host declines an invite.
#[tracing::instrument(skip_all, fields(%host_id, %invite_id, caller = %claims.sub))]
pub async fn decline(db: &PgPool, claims: &Claims, host_id: Uuid, invite_id: Uuid) -> Result<Invite> {
    require_the_host(claims, host_id)?;
    let mut tx = db.begin().await?;
    lock_pending(&mut tx, host_id, invite_id).await?;
    sqlx::query("update roster_invite set status = 'declined', answered_at = now() where invite_id = $1")
        .bind(invite_id)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    get_invite(db, invite_id).await
}

/// The agency withdraws a pending invite (the agency or an admin).
#[tracing::instrument(skip_all, fields(%agency_id, %invite_id, caller = %claims.sub))]
pub async fn withdraw(db: &PgPool, claims: &Claims, agency_id: Uuid, invite_id: Uuid) -> Result<Invite> {
    require_agency(claims, agency_id)?;
    let row: Option<(String, bool)> = sqlx::query_as(
        "update roster_invite set status = 'withdrawn', answered_at = now()
          where invite_id = $1 and agency_id = $2 and status = 'pending' and expires_at > now()
          returning status, true",
    )
    .bind(invite_id)
    .bind(agency_id)
    .fetch_optional(db)
    .await?;
    if row.is_none() {
        // Not this agency's (404), or no longer pending (409).
        let current = get_invite(db, invite_id)
            .await
            .ok()
            .filter(|i| i.agency_id == agency_id)
            .ok_or(Error::NotFound("invite"))?;
        return Err(Error::conflict(
            "invite_not_pending",
            format!("the invite is {}", current.status),
        ));
    }
    get_invite(db, invite_id).await
}

/// The agency's invites, oldest first, a page at a time (the agency or an admin).
#[tracing::instrument(skip_all, fields(%agency_id, caller = %claims.sub))]
pub async fn agency_invites(
    db: &PgPool,
    claims: &Claims,
    agency_id: Uuid,
    page: &PageQuery,
) -> Result<InvitePage> {
    require_agency(claims, agency_id)?;
    list_invites(db, "i.agency_id = $1", agency_id, page).await
}

/// A host's invites, oldest first, a page at a time (the host or an admin).
#[tracing::instrument(skip_all, fields(%host_id, caller = %claims.sub))]
pub async fn host_invites(
    db: &PgPool,
    claims: &Claims,
    host_id: Uuid,
    page: &PageQuery,
) -> Result<InvitePage> {
    if !(claims.is_admin() || host_of(claims) == Some(host_id)) {
        return Err(Error::forbidden(
            "only the host or an admin may read a host's invites",
        ));
    }
    list_invites(db, "i.host_id = $1", host_id, page).await
}

async fn list_invites(db: &PgPool, filter: &str, id: Uuid, page: &PageQuery) -> Result<InvitePage> {
    let limit = page.limit()?;
    let after = page.after_time_id()?;
    let rows = sqlx::query_as::<_, Invite>(&format!(
        "{INVITE_SELECT}
          where {filter}
            and ($2::timestamptz is null or (i.created_at, i.invite_id) > ($2, $3))
          order by i.created_at, i.invite_id
          limit $4"
    ))
    .bind(id)
    .bind(after.map(|a| a.0))
    .bind(after.map(|a| a.1))
    .bind(limit + 1)
    .fetch_all(db)
    .await?;
    let (items, next_cursor) = page::split(rows, limit, |i| page::time_id(i.created_at, i.invite_id));
    Ok(InvitePage { items, next_cursor })
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
    /// Hosts currently on the roster, by handle: the first 100 (the whole
    /// roster, paged: `GET /v1/agencies/{agency_id}/roster`).
    pub hosts: Vec<RosterHost>,
    /// How many hosts are on the roster now.
    pub host_count: i64,
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
          order by h.handle
          limit $2",
    )
    .bind(agency_id)
    .bind(page::MAX_LIMIT)
    .fetch_all(db)
    .await?;
    let host_count: i64 = sqlx::query_scalar(
        "select count(*) from agency_host
          where agency_id = $1 and joined_at <= now() and (left_at is null or left_at > now())",
    )
    .bind(agency_id)
    .fetch_one(db)
    .await?;
    Ok(Agency {
        agency_id,
        name,
        created_at,
        hosts,
        host_count,
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
