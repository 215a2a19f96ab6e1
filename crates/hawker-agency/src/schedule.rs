//! Scheduling: sessions with a planned start and end, shifts (which host is
//! on air when), and the session's life — go live, hand off, end.
//!
//! A host is never booked into overlapping shifts, whatever the session or
//! agency: the `shift_host_no_overlap` exclusion constraint decides, so two
//! racing bookings cannot both succeed; the loser gets a 409 naming the
//! booking it collided with. Planned times are the booking; actual times are
//! stamped by go-live, handoffs and the end (one `now()` per transaction, so
//! a handoff leaves no gap), and drive attribution and hourly pay.

use chrono::{DateTime, Duration, NaiveDate, SecondsFormat, Utc};
use hawker_core::Claims;
use hawker_hub::{Hub, Publication};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sqlx::{PgConnection, PgPool, Postgres, Transaction};
use uuid::Uuid;

use crate::access::{
    agency_exists, host_exists, load_session, load_session_in, require_agency, require_host_reader,
    require_manager, session_role, SessionRole, SessionStatus,
};
use crate::page::{self, PageQuery};
use crate::time::{day_window, parse_instant, parse_offset, Period};
use hawker_core::error::{violated_constraint, Error, Result};

/// The longest session that can be scheduled.
pub const MAX_SESSION_HOURS: i64 = 24;

/// One shift: a host on air in a session.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Shift {
    pub shift_id: Uuid,
    pub session_id: Uuid,
    pub session_title: String,
    pub agency_id: Uuid,
    pub host_id: Uuid,
    pub host_handle: String,
    pub planned_start: DateTime<Utc>,
    pub planned_end: DateTime<Utc>,
    /// When the host actually went on air (go-live or handoff).
    pub actual_start: Option<DateTime<Utc>>,
    /// When they went off air (handoff or the session's end).
    pub actual_end: Option<DateTime<Utc>>,
    pub cancelled_at: Option<DateTime<Utc>>,
    /// `scheduled`, `on_air`, `done` or `cancelled`.
    pub status: String,
}

const SHIFT_SELECT: &str = "select sh.shift_id, sh.session_id, s.title as session_title, s.agency_id, sh.host_id,
        h.handle as host_handle, sh.planned_start, sh.planned_end, sh.actual_start, sh.actual_end, sh.cancelled_at,
        case when sh.cancelled_at is not null then 'cancelled'
             when sh.actual_end is not null then 'done'
             when sh.actual_start is not null then 'on_air'
             else 'scheduled' end as status
   from shift sh join host h using (host_id) join live_session s using (session_id)";

/// A session with its plan, status and shifts.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct ScheduledSession {
    pub session_id: Uuid,
    pub agency_id: Uuid,
    pub brand_id: Option<Uuid>,
    pub campaign_id: Option<Uuid>,
    pub title: String,
    pub planned_start: DateTime<Utc>,
    pub planned_end: DateTime<Utc>,
    /// `scheduled`, `live`, `ended` or `cancelled`.
    pub status: SessionStatus,
    pub started_at: Option<DateTime<Utc>>,
    pub ended_at: Option<DateTime<Utc>>,
    /// The host on air now, if any.
    pub on_air_host_id: Option<Uuid>,
    /// Shifts in planned order (cancelled ones included).
    #[sqlx(skip)]
    pub shifts: Vec<Shift>,
}

/// A page of shifts.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ShiftPage {
    pub items: Vec<Shift>,
    /// Pass as `cursor` for the next page; absent (null) on the last page.
    pub next_cursor: Option<String>,
}

/// A page of sessions.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct SessionPage {
    pub items: Vec<ScheduledSession>,
    /// Pass as `cursor` for the next page; absent (null) on the last page.
    pub next_cursor: Option<String>,
}

const SESSION_SELECT: &str =
    "select s.session_id, s.agency_id, s.brand_id, s.campaign_id, s.title, s.planned_start,
        s.planned_end, s.status, s.started_at, s.ended_at,
        (select sh.host_id from shift sh where sh.session_id = s.session_id
            and sh.actual_start is not null and sh.actual_end is null limit 1) as on_air_host_id
   from live_session s";

#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewSession {
    /// 1 to 200 characters (Unicode scalar values), not all white space, without control, bidi or zero-width characters.
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f\\u00ad\\u061c\\u180e\\u200b-\\u200f\\u202a-\\u202e\\u2060-\\u2064\\u2066-\\u2069\\ufeff]*[^\\u0000-\\u001f\\u007f-\\u009f\\u00ad\\u061c\\u180e\\u200b-\\u200f\\u202a-\\u202e\\u2060-\\u2064\\u2066-\\u2069\\ufeff \\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000][^\\u0000-\\u001f\\u007f-\\u009f\\u00ad\\u061c\\u180e\\u200b-\\u200f\\u202a-\\u202e\\u2060-\\u2064\\u2066-\\u2069\\ufeff]*$"
    )]
    pub title: String,
    /// ISO 8601 with offset.
    pub planned_start: DateTime<Utc>,
    /// ISO 8601 with offset; after the start, at most 24 hours later.
    pub planned_end: DateTime<Utc>,
    /// The campaign the session belongs to (its terms apply); its brand is the session's.
    #[serde(default)]
    pub campaign_id: Option<Uuid>,
    #[serde(default)]
    pub brand_id: Option<Uuid>,
}

#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewShift {
    pub host_id: Uuid,
    /// ISO 8601 with offset, within the session's planned window.
    pub planned_start: DateTime<Utc>,
    pub planned_end: DateTime<Utc>,
}

/// Which shift goes on air with the session.
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GoLive {
    /// Defaults to the caller's next shift (a host), or the session's next
    /// shift in planned order (the agency).
    #[serde(default)]
    pub shift_id: Option<Uuid>,
}

/// Which sessions to list: a calendar day in a UTC offset, or `[from, to)`.
#[derive(Debug, Clone, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DayQuery {
    /// `YYYY-MM-DD`; today (in `utc_offset`) if neither `date` nor `from`/`to` is given.
    pub date: Option<NaiveDate>,
    /// The offset the day is in, e.g. `+08:00` (encode `+` as `%2B`); `Z` if absent.
    #[param(pattern = "^([Zz]|[+ -](0[0-9]|1[0-8]):[0-5][0-9])$")]
    pub utc_offset: Option<String>,
    /// Instead of `date`: start (inclusive), ISO 8601 with offset. With `to`, at most 31 days.
    #[param(format = DateTime)]
    pub from: Option<String>,
    /// Instead of `date`: end (exclusive), ISO 8601 with offset.
    #[param(format = DateTime)]
    pub to: Option<String>,
}

impl DayQuery {
    /// The UTC window the query asks for (at most 31 days).
    pub fn window(&self) -> Result<(DateTime<Utc>, DateTime<Utc>)> {
        let (from, to) = match (&self.from, &self.to) {
            (Some(from), Some(to)) => (parse_instant("from", from)?, parse_instant("to", to)?),
            (None, None) => {
                let offset = match &self.utc_offset {
                    Some(o) => parse_offset(o)?,
                    None => parse_offset("Z")?,
                };
                let date = self
                    .date
                    .unwrap_or_else(|| Utc::now().with_timezone(&offset).date_naive());
                day_window(date, offset)?
            }
            _ => {
                return Err(Error::invalid(
                    "bad_period",
                    "give both `from` and `to`, or a `date`",
                ))
            }
        };
        if to <= from || to - from > Duration::days(31) {
            return Err(Error::invalid(
                "bad_period",
                "`to` must be after `from`, at most 31 days later",
            ));
        }
        Ok((from, to))
    }
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

async fn shifts_of(conn: &mut PgConnection, session_ids: &[Uuid]) -> Result<Vec<Shift>> {
    Ok(sqlx::query_as::<_, Shift>(&format!(
        "{SHIFT_SELECT} where sh.session_id = any($1) order by sh.planned_start, sh.created_at"
    ))
    .bind(session_ids)
    .fetch_all(conn)
    .await?)
}

/// A session with its shifts (no rights check).
pub async fn session_view(db: &PgPool, session_id: Uuid) -> Result<ScheduledSession> {
    let mut conn = db.acquire().await?;
    session_view_in(&mut conn, session_id).await
}

/// [`session_view`] on a connection (inside a transaction: with its changes).
async fn session_view_in(conn: &mut PgConnection, session_id: Uuid) -> Result<ScheduledSession> {
    let mut session =
        sqlx::query_as::<_, ScheduledSession>(&format!("{SESSION_SELECT} where s.session_id = $1"))
            .bind(session_id)
            .fetch_optional(&mut *conn)
            .await?
            .ok_or(Error::NotFound("session"))?;
    session.shifts = shifts_of(conn, &[session_id]).await?;
    Ok(session)
}

/// One session as anyone holding a token sees it (viewers need it to join).
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Session {
    pub session_id: Uuid,
    pub agency_id: Uuid,
    pub brand_id: Option<Uuid>,
    pub title: String,
    pub planned_start: DateTime<Utc>,
    pub planned_end: DateTime<Utc>,
    /// `scheduled`, `live`, `ended` or `cancelled`.
    pub status: SessionStatus,
    pub started_at: Option<DateTime<Utc>>,
    pub ended_at: Option<DateTime<Utc>>,
}

/// One session's title, plan and status (no rights check: any token may read it).
pub async fn get_session(db: &PgPool, session_id: Uuid) -> Result<Session> {
    sqlx::query_as::<_, Session>(
        "select session_id, agency_id, brand_id, title, planned_start, planned_end, status,
                started_at, ended_at
           from live_session where session_id = $1",
    )
    .bind(session_id)
    .fetch_optional(db)
    .await?
    .ok_or(Error::NotFound("session"))
}

/// The room's figure of who is on air: the data of `session.live`,
/// `session.handoff` and `session.ended`, and the snapshot's `session`.
fn on_air_figure(session: &ScheduledSession) -> serde_json::Value {
    let on_air = session.on_air_host_id.and_then(|h| {
        session
            .shifts
            .iter()
            .find(|s| s.host_id == h && s.status == "on_air")
    });
    json!({
        "status": session.status,
        "on_air_host_id": session.on_air_host_id,
        "on_air_handle": on_air.map(|s| s.host_handle.as_str()),
        "started_at": session.started_at,
        "ended_at": session.ended_at,
    })
}

/// Queues `event` for the session's room in the transaction that changed
/// the session (published once it commits, exactly once across nodes), and
/// returns the session as the transaction sees it.
async fn announce(conn: &mut PgConnection, session_id: Uuid, event: &str) -> Result<ScheduledSession> {
    let session = session_view_in(conn, session_id).await?;
    let figure = on_air_figure(&session);
    let publication = Publication::new(event, figure.clone()).set_state("session", figure);
    hawker_hub::durable::enqueue(conn, session_id, &publication).await?;
    Ok(session)
}

/// Publishes what was just committed without waiting for the relay's next
/// round. Best effort: every node's relay publishes it anyway.
async fn relay_now(hub: &Hub, session_id: Uuid) {
    if let Err(e) = hub.relay_durable().await {
        tracing::debug!(error = %e, %session_id, "session event left to the relay");
    }
}

/// Schedules a session for the agency.
#[tracing::instrument(skip_all, fields(%agency_id, caller = %claims.sub))]
pub async fn schedule_session(
    db: &PgPool,
    claims: &Claims,
    agency_id: Uuid,
    new: NewSession,
) -> Result<ScheduledSession> {
    require_agency(claims, agency_id)?;
    let title = new.title.trim();
    // The bound is on what was sent (as the schema states it), not on the trimmed title.
    if title.is_empty()
        || new.title.chars().count() > 200
        || hawker_core::text::hidden_char(&new.title, false).is_some()
    {
        return Err(Error::invalid(
            "bad_title",
            "title must be 1 to 200 characters, without control, bidi or zero-width characters",
        ));
    }
    if new.planned_end <= new.planned_start
        || new.planned_end - new.planned_start > Duration::hours(MAX_SESSION_HOURS)
    {
        return Err(Error::invalid(
            "bad_plan",
            format!("planned_end must be after planned_start, at most {MAX_SESSION_HOURS} hours later"),
        ));
    }
    if !agency_exists(db, agency_id).await? {
        return Err(Error::NotFound("agency"));
    }
    let mut brand_id = new.brand_id;
    if let Some(campaign_id) = new.campaign_id {
        let campaign: Option<(Uuid, Uuid)> =
            sqlx::query_as("select agency_id, brand_id from campaign where campaign_id = $1")
                .bind(campaign_id)
                .fetch_optional(db)
                .await?;
        // Another agency's campaign does not exist for this one.
        let campaign_brand = match campaign {
            Some((campaign_agency, brand)) if campaign_agency == agency_id => brand,
            _ => return Err(Error::NotFound("campaign")),
        };
        if brand_id.is_some_and(|b| b != campaign_brand) {
            return Err(Error::invalid(
                "brand_mismatch",
                "brand_id differs from the campaign's brand",
            ));
        }
        brand_id = Some(campaign_brand);
    } else if let Some(brand) = brand_id {
        let exists: bool = sqlx::query_scalar("select exists(select 1 from brand where brand_id = $1)")
            .bind(brand)
            .fetch_one(db)
            .await?;
        if !exists {
            return Err(Error::NotFound("brand"));
        }
    }
    let session_id = Uuid::now_v7();
    sqlx::query(
        "insert into live_session (session_id, agency_id, brand_id, campaign_id, title, planned_start, planned_end)
         values ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(session_id)
    .bind(agency_id)
    .bind(brand_id)
    .bind(new.campaign_id)
    .bind(title)
    .bind(new.planned_start)
    .bind(new.planned_end)
    .execute(db)
    .await?;
    session_view(db, session_id).await
}

/// The agency's sessions whose planned window overlaps `[from, to)`, with
/// shifts, a page at a time in (planned_start, session_id) order.
#[tracing::instrument(skip_all, fields(%agency_id, %from, %to, caller = %claims.sub))]
pub async fn agency_sessions(
    db: &PgPool,
    claims: &Claims,
    agency_id: Uuid,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    page: &PageQuery,
) -> Result<SessionPage> {
    require_agency(claims, agency_id)?;
    let limit = page.limit()?;
    let after = page.after_time_id()?;
    let rows = sqlx::query_as::<_, ScheduledSession>(&format!(
        "{SESSION_SELECT} where s.agency_id = $1 and s.planned_start < $3 and s.planned_end > $2
            and ($4::timestamptz is null or (s.planned_start, s.session_id) > ($4, $5))
          order by s.planned_start, s.session_id
          limit $6"
    ))
    .bind(agency_id)
    .bind(from)
    .bind(to)
    .bind(after.map(|a| a.0))
    .bind(after.map(|a| a.1))
    .bind(limit + 1)
    .fetch_all(db)
    .await?;
    let (mut sessions, next_cursor) =
        page::split(rows, limit, |s| page::time_id(s.planned_start, s.session_id));
    let ids: Vec<Uuid> = sessions.iter().map(|s| s.session_id).collect();
    let mut shifts = shifts_of(&mut *db.acquire().await?, &ids).await?;
    for session in &mut sessions {
        let (mine, rest): (Vec<Shift>, Vec<Shift>) = shifts
            .into_iter()
            .partition(|s| s.session_id == session.session_id);
        session.shifts = mine;
        shifts = rest;
    }
    Ok(SessionPage {
        items: sessions,
        next_cursor,
    })
}

/// Books a host into a session (the session's agency or an admin).
#[tracing::instrument(skip_all, fields(%session_id, host_id = %new.host_id, caller = %claims.sub))]
pub async fn book_shift(db: &PgPool, claims: &Claims, session_id: Uuid, new: NewShift) -> Result<Shift> {
    let session = load_session(db, session_id).await?;
    require_manager(session_role(db, claims, &session).await?)?;
    if session.status.is_over() {
        return Err(Error::conflict(
            "session_ended",
            format!("the session is {}", session.status),
        ));
    }
    if new.planned_end <= new.planned_start {
        return Err(Error::invalid(
            "bad_plan",
            "planned_end must be after planned_start",
        ));
    }
    let (plan_start, plan_end): (DateTime<Utc>, DateTime<Utc>) =
        sqlx::query_as("select planned_start, planned_end from live_session where session_id = $1")
            .bind(session_id)
            .fetch_one(db)
            .await?;
    if new.planned_start < plan_start || new.planned_end > plan_end {
        return Err(Error::invalid(
            "shift_outside_session",
            format!(
                "a shift must lie within the session's plan, {} to {}",
                rfc3339(plan_start),
                rfc3339(plan_end)
            ),
        ));
    }
    if !host_exists(db, new.host_id).await? {
        return Err(Error::NotFound("host"));
    }
    let on_roster: bool = sqlx::query_scalar(
        "select exists(select 1 from agency_host where agency_id = $1 and host_id = $2
                          and joined_at <= $3 and (left_at is null or left_at >= $4))",
    )
    .bind(session.agency_id)
    .bind(new.host_id)
    .bind(new.planned_start)
    .bind(new.planned_end)
    .fetch_one(db)
    .await?;
    if !on_roster {
        return Err(Error::conflict(
            "host_not_on_roster",
            "the host is not on the agency's roster for the whole shift",
        ));
    }
    let shift_id = Uuid::now_v7();
    // No pre-check: the exclusion constraints decide, also between racing requests.
    let inserted = sqlx::query(
        "insert into shift (shift_id, session_id, host_id, planned_start, planned_end, created_by)
         values ($1, $2, $3, $4, $5, $6)",
    )
    .bind(shift_id)
    .bind(session_id)
    .bind(new.host_id)
    .bind(new.planned_start)
    .bind(new.planned_end)
    .bind(&claims.sub)
    .execute(db)
    .await;
    if let Err(e) = inserted {
        return Err(match violated_constraint(&e).as_deref() {
            Some("shift_host_no_overlap") => {
                host_overlap(db, new.host_id, new.planned_start, new.planned_end).await?
            }
            Some("shift_session_no_overlap") => {
                session_overlap(db, session_id, new.planned_start, new.planned_end).await?
            }
            _ => e.into(),
        });
    }
    get_shift(db, shift_id).await
}

/// The 409 for a host already booked then, naming that booking.
async fn host_overlap(db: &PgPool, host_id: Uuid, start: DateTime<Utc>, end: DateTime<Utc>) -> Result<Error> {
    let other: Option<(Uuid, String, DateTime<Utc>, DateTime<Utc>)> = sqlx::query_as(
        "select sh.session_id, h.handle, sh.planned_start, sh.planned_end
           from shift sh join host h using (host_id)
          where sh.host_id = $1 and sh.cancelled_at is null
            and tstzrange(sh.planned_start, sh.planned_end) && tstzrange($2, $3)
          order by sh.planned_start limit 1",
    )
    .bind(host_id)
    .bind(start)
    .bind(end)
    .fetch_optional(db)
    .await?;
    Ok(Error::conflict(
        "shift_overlap",
        match other {
            Some((session, handle, s, e)) => format!(
                "host {handle} is already booked in session {session} from {} to {}",
                rfc3339(s),
                rfc3339(e)
            ),
            None => "the host is already booked at that time".to_string(),
        },
    ))
}

/// The 409 for a session that already has someone on shift then.
async fn session_overlap(
    db: &PgPool,
    session_id: Uuid,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
) -> Result<Error> {
    let other: Option<(Uuid, String, DateTime<Utc>, DateTime<Utc>)> = sqlx::query_as(
        "select sh.shift_id, h.handle, sh.planned_start, sh.planned_end
           from shift sh join host h using (host_id)
          where sh.session_id = $1 and sh.cancelled_at is null
            and tstzrange(sh.planned_start, sh.planned_end) && tstzrange($2, $3)
          order by sh.planned_start limit 1",
    )
    .bind(session_id)
    .bind(start)
    .bind(end)
    .fetch_optional(db)
    .await?;
    Ok(Error::conflict(
        "shift_session_overlap",
        match other {
            Some((shift, handle, s, e)) => format!(
                "session {session_id} already has {handle} on shift {shift} from {} to {}; \
                 one host is on shift at a time",
                rfc3339(s),
                rfc3339(e)
            ),
            None => "the session already has a host on shift at that time".to_string(),
        },
    ))
}

async fn get_shift(db: &PgPool, shift_id: Uuid) -> Result<Shift> {
    sqlx::query_as::<_, Shift>(&format!("{SHIFT_SELECT} where sh.shift_id = $1"))
        .bind(shift_id)
        .fetch_optional(db)
        .await?
        .ok_or(Error::NotFound("shift"))
}

/// The session's shifts: all of them for its agency and admins, a scheduled
/// host's own only for that host; a page at a time in (planned_start,
/// shift_id) order.
#[tracing::instrument(skip_all, fields(%session_id, caller = %claims.sub))]
pub async fn session_shifts(
    db: &PgPool,
    claims: &Claims,
    session_id: Uuid,
    page: &PageQuery,
) -> Result<ShiftPage> {
    let session = load_session(db, session_id).await?;
    let role = session_role(db, claims, &session).await?;
    let only_host = match (role.manages(), role.scheduled_host()) {
        (true, _) => None,
        (false, Some(h)) => Some(h),
        (false, None) => {
            return Err(Error::forbidden(
                "only the session's agency, its hosts or an admin may see its shifts",
            ))
        }
    };
    let limit = page.limit()?;
    let after = page.after_time_id()?;
    let rows = sqlx::query_as::<_, Shift>(&format!(
        "{SHIFT_SELECT} where sh.session_id = $1 and ($2::uuid is null or sh.host_id = $2)
            and ($3::timestamptz is null or (sh.planned_start, sh.shift_id) > ($3, $4))
          order by sh.planned_start, sh.shift_id
          limit $5"
    ))
    .bind(session_id)
    .bind(only_host)
    .bind(after.map(|a| a.0))
    .bind(after.map(|a| a.1))
    .bind(limit + 1)
    .fetch_all(db)
    .await?;
    let (items, next_cursor) = page::split(rows, limit, |s| page::time_id(s.planned_start, s.shift_id));
    Ok(ShiftPage { items, next_cursor })
}

/// A host's shifts whose plan overlaps the period (the host, admins, or an
/// agency the host has been with, which sees only its own sessions' shifts),
/// a page at a time in (planned_start, shift_id) order.
#[tracing::instrument(skip_all, fields(%host_id, caller = %claims.sub))]
pub async fn host_shifts(
    db: &PgPool,
    claims: &Claims,
    host_id: Uuid,
    period: Period,
    page: &PageQuery,
) -> Result<ShiftPage> {
    let reader = require_host_reader(db, claims, host_id).await?;
    let limit = page.limit()?;
    let after = page.after_time_id()?;
    let rows = sqlx::query_as::<_, Shift>(&format!(
        "{SHIFT_SELECT} where sh.host_id = $1 and ($2::uuid is null or s.agency_id = $2)
            and ($3::timestamptz is null or sh.planned_end > $3)
            and ($4::timestamptz is null or sh.planned_start < $4)
            and ($5::timestamptz is null or (sh.planned_start, sh.shift_id) > ($5, $6))
          order by sh.planned_start, sh.shift_id
          limit $7"
    ))
    .bind(host_id)
    .bind(reader.agency())
    .bind(period.from)
    .bind(period.to)
    .bind(after.map(|a| a.0))
    .bind(after.map(|a| a.1))
    .bind(limit + 1)
    .fetch_all(db)
    .await?;
    let (items, next_cursor) = page::split(rows, limit, |s| page::time_id(s.planned_start, s.shift_id));
    Ok(ShiftPage { items, next_cursor })
}

/// A shift and its session locked for a change of state, with the caller's role.
async fn lock_shift(
    tx: &mut Transaction<'_, Postgres>,
    db: &PgPool,
    claims: &Claims,
    shift_id: Uuid,
) -> Result<(ShiftRow, SessionRole)> {
    let session_id: Uuid = sqlx::query_scalar("select session_id from shift where shift_id = $1")
        .bind(shift_id)
        .fetch_optional(&mut **tx)
        .await?
        .ok_or(Error::NotFound("shift"))?;
    // Session first, then shift: the same order as go-live and end.
    sqlx::query("select 1 from live_session where session_id = $1 for update")
        .bind(session_id)
        .execute(&mut **tx)
        .await?;
    let shift = sqlx::query_as::<_, ShiftRow>(
        "select sh.shift_id, sh.session_id, sh.host_id, sh.actual_start, sh.cancelled_at, s.status
           from shift sh join live_session s using (session_id)
          where sh.shift_id = $1 for update of sh",
    )
    .bind(shift_id)
    .fetch_one(&mut **tx)
    .await?;
    let session = load_session(db, session_id).await?;
    let role = session_role(db, claims, &session).await?;
    if !role.manages() {
        match role.scheduled_host() {
            Some(h) if h == shift.host_id => {}
            Some(_) => return Err(Error::forbidden("this is another host's shift")),
            // Shifts of sessions the caller has nothing to do with do not exist for them.
            None => return Err(Error::NotFound("shift")),
        }
    }
    Ok((shift, role))
}

#[derive(Debug, sqlx::FromRow)]
struct ShiftRow {
    shift_id: Uuid,
    session_id: Uuid,
    host_id: Uuid,
    actual_start: Option<DateTime<Utc>>,
    cancelled_at: Option<DateTime<Utc>>,
    /// The session's.
    status: SessionStatus,
}

/// Cancels a shift that has not started (the session's agency or an admin).
#[tracing::instrument(skip_all, fields(%shift_id, caller = %claims.sub))]
pub async fn cancel_shift(db: &PgPool, claims: &Claims, shift_id: Uuid) -> Result<Shift> {
    let mut tx = db.begin().await?;
    let (shift, role) = lock_shift(&mut tx, db, claims, shift_id).await?;
    require_manager(role)?;
    if shift.actual_start.is_some() {
        return Err(Error::conflict(
            "shift_started",
            "the shift has started; it cannot be cancelled",
        ));
    }
    if shift.cancelled_at.is_none() {
        sqlx::query("update shift set cancelled_at = now() where shift_id = $1")
            .bind(shift.shift_id)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    get_shift(db, shift_id).await
}

fn on_air_error(e: sqlx::Error) -> Error {
    match violated_constraint(&e).as_deref() {
        Some("shift_host_on_air_once") => Error::conflict(
            "host_on_air_elsewhere",
            "the host is still on air in another session; end that shift first",
        ),
        Some("shift_session_on_air_once") => Error::conflict(
            "session_has_host_on_air",
            "another host is on air in this session",
        ),
        _ => e.into(),
    }
}

/// Takes a scheduled session live (a host scheduled in it, its agency, or an
/// admin) and puts a shift on air.
#[tracing::instrument(skip_all, fields(%session_id, caller = %claims.sub))]
pub async fn go_live(
    db: &PgPool,
    hub: &Hub,
    claims: &Claims,
    session_id: Uuid,
    request: GoLive,
) -> Result<ScheduledSession> {
    let session = load_session(db, session_id).await?;
    let role = session_role(db, claims, &session).await?;
    let only_host = match (role.manages(), role.scheduled_host()) {
        (true, _) => None,
        (false, Some(h)) => Some(h),
        (false, None) => {
            return Err(Error::forbidden(
                "only a host scheduled in the session, its agency or an admin may take it live",
            ))
        }
    };
    let mut tx = db.begin().await?;
    let status = load_session_in(&mut tx, session_id, true).await?.status;
    if status != SessionStatus::Scheduled {
        return Err(Error::conflict(
            "session_not_scheduled",
            format!("the session is {status}; only a scheduled session can go live"),
        ));
    }
    let shift: Option<(Uuid, Uuid)> = sqlx::query_as(
        "select shift_id, host_id from shift
          where session_id = $1 and cancelled_at is null and actual_start is null
            and ($2::uuid is null or shift_id = $2)
            and ($3::uuid is null or host_id = $3 or $2::uuid is not null)
          order by planned_start limit 1
          for update",
    )
    .bind(session_id)
    .bind(request.shift_id)
    .bind(only_host)
    .fetch_optional(&mut *tx)
    .await?;
    match (&shift, request.shift_id, only_host) {
        (None, Some(_), _) => return Err(Error::NotFound("shift")),
        (Some((_, host)), _, Some(me)) if *host != me => {
            return Err(Error::forbidden("a host goes live on their own shift"));
        }
        (None, None, Some(_)) => {
            return Err(Error::conflict(
                "no_shift_to_start",
                "you have no shift left to start in this session",
            ));
        }
        _ => {}
    }
    sqlx::query("update live_session set status = 'live', started_at = now() where session_id = $1")
        .bind(session_id)
        .execute(&mut *tx)
        .await?;
    if let Some((shift_id, _)) = shift {
        sqlx::query("update shift set actual_start = now() where shift_id = $1")
            .bind(shift_id)
            .execute(&mut *tx)
            .await
            .map_err(on_air_error)?;
    }
    let session = announce(&mut tx, session_id, "session.live").await?;
    tx.commit().await?;
    metrics::counter!("hawker_sessions_live_total").increment(1);
    relay_now(hub, session_id).await;
    Ok(session)
}

/// Hands the session over to this shift's host: the shift on air ends and
/// this one starts at the same instant (the incoming host, the agency, or an admin).
#[tracing::instrument(skip_all, fields(%shift_id, caller = %claims.sub))]
pub async fn start_shift(
    db: &PgPool,
    hub: &Hub,
    claims: &Claims,
    shift_id: Uuid,
) -> Result<ScheduledSession> {
    let mut tx = db.begin().await?;
    let (shift, _) = lock_shift(&mut tx, db, claims, shift_id).await?;
    if shift.status != SessionStatus::Live {
        return Err(Error::conflict(
            "session_not_live",
            format!("the session is {}; go live first", shift.status),
        ));
    }
    if shift.cancelled_at.is_some() {
        return Err(Error::conflict("shift_cancelled", "the shift is cancelled"));
    }
    if shift.actual_start.is_some() {
        return Err(Error::conflict(
            "shift_already_started",
            "the shift has already started",
        ));
    }
    sqlx::query(
        "update shift set actual_end = now()
          where session_id = $1 and actual_start is not null and actual_end is null",
    )
    .bind(shift.session_id)
    .execute(&mut *tx)
    .await?;
    sqlx::query("update shift set actual_start = now() where shift_id = $1")
        .bind(shift.shift_id)
        .execute(&mut *tx)
        .await
        .map_err(on_air_error)?;
    let session = announce(&mut tx, shift.session_id, "session.handoff").await?;
    tx.commit().await?;
    relay_now(hub, shift.session_id).await;
    Ok(session)
}

/// Ends a live session (a host scheduled in it, its agency, or an admin):
/// the shift on air ends with it.
#[tracing::instrument(skip_all, fields(%session_id, caller = %claims.sub))]
pub async fn end_session(
    db: &PgPool,
    hub: &Hub,
    claims: &Claims,
    session_id: Uuid,
) -> Result<ScheduledSession> {
    let session = load_session(db, session_id).await?;
    let role = session_role(db, claims, &session).await?;
    if !(role.manages() || role.scheduled_host().is_some()) {
        return Err(Error::forbidden(
            "only a host scheduled in the session, its agency or an admin may end it",
        ));
    }
    let mut tx = db.begin().await?;
    let status = load_session_in(&mut tx, session_id, true).await?.status;
    if status != SessionStatus::Live {
        return Err(Error::conflict(
            "session_not_live",
            format!("the session is {status}; only a live session can end"),
        ));
    }
    sqlx::query(
        "update shift set actual_end = now()
          where session_id = $1 and actual_start is not null and actual_end is null",
    )
    .bind(session_id)
    .execute(&mut *tx)
    .await?;
    sqlx::query("update live_session set status = 'ended', ended_at = now() where session_id = $1")
        .bind(session_id)
        .execute(&mut *tx)
        .await?;
    let session = announce(&mut tx, session_id, "session.ended").await?;
    tx.commit().await?;
    relay_now(hub, session_id).await;
    Ok(session)
}

/// A shift's plan and on-air times, as live figures window it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ShiftTimes {
    pub shift_id: Uuid,
    pub host_id: Uuid,
    pub host_handle: String,
    pub planned_start: DateTime<Utc>,
    pub planned_end: DateTime<Utc>,
    pub actual_start: Option<DateTime<Utc>>,
    pub actual_end: Option<DateTime<Utc>>,
}

/// The session's shifts that are not cancelled, in planned order (no rights check).
pub async fn shift_times(db: &PgPool, session_id: Uuid) -> Result<Vec<ShiftTimes>> {
    Ok(sqlx::query_as(
        "select sh.shift_id, sh.host_id, h.handle as host_handle, sh.planned_start, sh.planned_end,
                sh.actual_start, sh.actual_end
           from shift sh join host h using (host_id)
          where sh.session_id = $1 and sh.cancelled_at is null
          order by sh.planned_start",
    )
    .bind(session_id)
    .fetch_all(db)
    .await?)
}

/// Sessions live now, or ended within `recently` (whose rooms still hold
/// their final counts).
pub async fn live_or_just_ended(db: &PgPool, recently: std::time::Duration) -> Result<Vec<Uuid>> {
    let recently = Duration::from_std(recently).unwrap_or_else(|_| Duration::seconds(15));
    Ok(sqlx::query_scalar(
        "select session_id from live_session
          where status = 'live' or (status = 'ended' and ended_at > now() - $1::interval)",
    )
    .bind(recently)
    .fetch_all(db)
    .await?)
}

// ------------------------------------------- ended shifts and sessions, in time order
//
// For the commission ledger's accrual worker (no rights checks), which reads
// them page by page: rows in (end, id) order, strictly after `after` (from the
// first if `None`) and, with `before`, ended earlier than that. Ends are
// stamped with `now()` — the start of the ending transaction — so a row can
// become visible after rows stamped later than it; a reader that resumes
// after the last row it saw must look again a while behind it.

/// A shift that has been on air and ended.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct EndedShift {
    pub shift_id: Uuid,
    pub session_id: Uuid,
    /// The session's agency.
    pub agency_id: Uuid,
    pub host_id: Uuid,
    pub actual_start: DateTime<Utc>,
    pub actual_end: DateTime<Utc>,
    /// Whole seconds on air, rounded down.
    pub seconds: i64,
}

/// Ended shifts in (`actual_end`, `shift_id`) order; see the note above.
pub async fn ended_shifts<'e>(
    db: impl sqlx::PgExecutor<'e>,
    after: Option<(DateTime<Utc>, Uuid)>,
    before: Option<DateTime<Utc>>,
    limit: i64,
) -> Result<Vec<EndedShift>> {
    Ok(sqlx::query_as(
        "select sh.shift_id, sh.session_id, s.agency_id, sh.host_id, sh.actual_start, sh.actual_end,
                floor(extract(epoch from sh.actual_end - sh.actual_start))::bigint as seconds
           from shift sh join live_session s using (session_id)
          where sh.actual_end is not null
            and sh.actual_end >= coalesce($1, '-infinity'::timestamptz)
            and (sh.actual_end, sh.shift_id)
                > (coalesce($1, '-infinity'::timestamptz), coalesce($2, '00000000-0000-0000-0000-000000000000'::uuid))
            and sh.actual_end < coalesce($3, 'infinity'::timestamptz)
          order by sh.actual_end, sh.shift_id
          limit $4",
    )
    .bind(after.map(|a| a.0))
    .bind(after.map(|a| a.1))
    .bind(before)
    .bind(limit)
    .fetch_all(db)
    .await?)
}

/// A session that has ended.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct EndedSession {
    pub session_id: Uuid,
    pub agency_id: Uuid,
    pub planned_start: DateTime<Utc>,
    /// When it went live (`None` only for a session ended without going live).
    pub started_at: Option<DateTime<Utc>>,
    pub ended_at: DateTime<Utc>,
}

/// Ended sessions in (`ended_at`, `session_id`) order; see the note above.
pub async fn ended_sessions<'e>(
    db: impl sqlx::PgExecutor<'e>,
    after: Option<(DateTime<Utc>, Uuid)>,
    before: Option<DateTime<Utc>>,
    limit: i64,
) -> Result<Vec<EndedSession>> {
    Ok(sqlx::query_as(
        "select session_id, agency_id, planned_start, started_at, ended_at
           from live_session
          where status = 'ended' and ended_at is not null
            and ended_at >= coalesce($1, '-infinity'::timestamptz)
            and (ended_at, session_id)
                > (coalesce($1, '-infinity'::timestamptz), coalesce($2, '00000000-0000-0000-0000-000000000000'::uuid))
            and ended_at < coalesce($3, 'infinity'::timestamptz)
          order by ended_at, session_id
          limit $4",
    )
    .bind(after.map(|a| a.0))
    .bind(after.map(|a| a.1))
    .bind(before)
    .bind(limit)
    .fetch_all(db)
    .await?)
}

/// Seconds a host was on air in a session, over its ended shifts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::FromRow)]
pub struct OnAir {
    pub session_id: Uuid,
    pub host_id: Uuid,
    /// Per shift rounded down to whole seconds, then summed.
    pub seconds: i64,
}

/// Per session and host, in (session, host) order: time on air in ended shifts.
pub async fn seconds_on_air<'e>(db: impl sqlx::PgExecutor<'e>, session_ids: &[Uuid]) -> Result<Vec<OnAir>> {
    Ok(sqlx::query_as(
        "select session_id, host_id, sum(floor(extract(epoch from actual_end - actual_start)))::bigint as seconds
           from shift where session_id = any($1) and actual_end is not null
          group by session_id, host_id
          order by session_id, host_id",
    )
    .bind(session_ids)
    .fetch_all(db)
    .await?)
}

/// Each of these sessions' agency, as (session, agency), in no particular order.
pub async fn session_agencies<'e>(
    db: impl sqlx::PgExecutor<'e>,
    session_ids: &[Uuid],
) -> Result<Vec<(Uuid, Uuid)>> {
    Ok(
        sqlx::query_as("select session_id, agency_id from live_session where session_id = any($1)")
            .bind(session_ids)
            .fetch_all(db)
            .await?,
    )
}

/// Who is on air now (at the transaction's `now()`) in each of `sessions`,
/// by the attribution rule `host_on_shift()`: one query for a whole batch of
/// orders, on the caller's connection (commerce's settlement stamps each
/// order with the host it is attributed to).
pub async fn hosts_on_air(
    conn: &mut sqlx::PgConnection,
    sessions: &[Uuid],
) -> Result<std::collections::HashMap<Uuid, Option<Uuid>>> {
    let rows: Vec<(Uuid, Option<Uuid>)> =
        sqlx::query_as("select s, host_on_shift(s, now()) from unnest($1::uuid[]) as s")
            .bind(sessions)
            .fetch_all(conn)
            .await?;
    Ok(rows.into_iter().collect())
}
