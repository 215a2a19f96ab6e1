//! Finding sessions: any authenticated caller lists sessions by status,
//! agency, brand, host and planned time, a page at a time, each with its
//! agency, brand and hosts. Commerce adds what it and the hub know (brands
//! in the lineup, the pinned item, viewers): `hawker_commerce::discovery`.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use uuid::Uuid;

use crate::access::SessionStatus;
use crate::page::{self, PageQuery};
use crate::time::parse_instant;
use hawker_core::error::{Error, Result};

/// `?status=&agency_id=&brand_id=&host_id=&from=&to=` of `GET /v1/sessions`.
#[derive(Debug, Clone, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DiscoverQuery {
    /// Only sessions with this status.
    #[param(value_type = Option<String>, pattern = "^(live|scheduled|ended|cancelled)$")]
    pub status: Option<String>,
    /// Only this agency's sessions.
    #[param(value_type = Option<String>, format = Uuid)]
    pub agency_id: Option<String>,
    /// Only sessions of this brand: the session's brand, its campaign's
    /// brand, or a brand with a SKU in its lineup.
    #[param(value_type = Option<String>, format = Uuid)]
    pub brand_id: Option<String>,
    /// Only sessions where this host has a shift that is not cancelled.
    #[param(value_type = Option<String>, format = Uuid)]
    pub host_id: Option<String>,
    /// Only sessions whose planned window ends after this instant (ISO 8601 with offset).
    #[param(format = DateTime)]
    pub from: Option<String>,
    /// Only sessions whose planned window starts before this instant (ISO 8601 with offset).
    #[param(format = DateTime)]
    pub to: Option<String>,
}

/// A parsed [`DiscoverQuery`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DiscoverFilter {
    pub statuses: Vec<SessionStatus>,
    pub agency_id: Option<Uuid>,
    pub brand_id: Option<Uuid>,
    pub host_id: Option<Uuid>,
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
}

fn id(field: &'static str, code: &'static str, value: Option<&str>) -> Result<Option<Uuid>> {
    value
        .map(|v| {
            v.trim()
                .parse::<Uuid>()
                .map_err(|_| Error::invalid(code, format!("{field} must be a UUID")))
        })
        .transpose()
}

impl DiscoverQuery {
    pub fn parse(&self) -> Result<DiscoverFilter> {
        let statuses = match self.status.as_deref() {
            None => Vec::new(),
            Some("live") => vec![SessionStatus::Live],
            Some("scheduled") => vec![SessionStatus::Scheduled],
            Some("ended") => vec![SessionStatus::Ended],
            Some("cancelled") => vec![SessionStatus::Cancelled],
            Some(_) => {
                return Err(Error::invalid(
                    "bad_status",
                    "status must be live, scheduled, ended or cancelled",
                ))
            }
        };
        let from = self
            .from
            .as_deref()
            .map(|v| parse_instant("from", v))
            .transpose()?;
        let to = self.to.as_deref().map(|v| parse_instant("to", v)).transpose()?;
        if let (Some(f), Some(t)) = (from, to) {
            if t <= f {
                return Err(Error::invalid("bad_period", "`to` must be after `from`"));
            }
        }
        Ok(DiscoverFilter {
            statuses,
            agency_id: id("agency_id", "bad_agency_id", self.agency_id.as_deref())?,
            brand_id: id("brand_id", "bad_brand_id", self.brand_id.as_deref())?,
            host_id: id("host_id", "bad_host_id", self.host_id.as_deref())?,
            from,
            to,
        })
    }
}

/// An agency or a brand, by id and name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Named {
    pub id: Uuid,
    pub name: String,
}

/// A host booked in a session.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct SessionHost {
    #[serde(skip)]
    pub session_id: Uuid,
    pub host_id: Uuid,
    pub handle: String,
    pub display_name: String,
    /// On air now.
    pub on_air: bool,
}

/// A session as discovery lists it (the agency's part).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct FoundSession {
    pub session_id: Uuid,
    pub title: String,
    pub status: SessionStatus,
    pub planned_start: DateTime<Utc>,
    pub planned_end: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub ended_at: Option<DateTime<Utc>>,
    pub agency_id: Uuid,
    pub agency_name: String,
    /// The session's own brand and its campaign's brand (deduplicated).
    pub brand_ids: Vec<Uuid>,
    #[sqlx(skip)]
    pub hosts: Vec<SessionHost>,
}

/// Sessions matching `filter`, in (planned_start, session_id) order, a page
/// at a time. `brand_sessions` are the sessions where the filter's brand
/// sells through the lineup (commerce's knowledge), which match a brand filter
/// too. `upcoming` keeps only scheduled and live sessions not planned to be over.
pub async fn sessions(
    db: &PgPool,
    filter: &DiscoverFilter,
    brand_sessions: &[Uuid],
    upcoming: bool,
    page: &PageQuery,
) -> Result<(Vec<FoundSession>, Option<String>)> {
    let limit = page.limit()?;
    let after = page.after_time_id()?;
    let statuses: Vec<&str> = filter.statuses.iter().map(|s| s.as_str()).collect();
    let rows = sqlx::query_as::<_, FoundSession>(
        "select s.session_id, s.title, s.status, s.planned_start, s.planned_end, s.started_at, s.ended_at,
                s.agency_id, a.name as agency_name,
                array(select distinct b from unnest(array[s.brand_id, c.brand_id]) as b where b is not null) as brand_ids
           from live_session s
           join agency a on a.agency_id = s.agency_id
           left join campaign c on c.campaign_id = s.campaign_id
          where (cardinality($1::text[]) = 0 or s.status = any($1))
            and ($2::uuid is null or s.agency_id = $2)
            and ($3::uuid is null or s.brand_id = $3 or c.brand_id = $3 or s.session_id = any($4))
            and ($5::uuid is null or exists (select 1 from shift sh where sh.session_id = s.session_id
                                                and sh.host_id = $5 and sh.cancelled_at is null))
            and ($6::timestamptz is null or s.planned_end > $6)
            and ($7::timestamptz is null or s.planned_start < $7)
            and (not $8 or (s.status in ('scheduled', 'live') and s.planned_end > now()))
            and ($9::timestamptz is null or (s.planned_start, s.session_id) > ($9, $10))
          order by s.planned_start, s.session_id
          limit $11",
    )
    .bind(&statuses)
    .bind(filter.agency_id)
    .bind(filter.brand_id)
    .bind(brand_sessions)
    .bind(filter.host_id)
    .bind(filter.from)
    .bind(filter.to)
    .bind(upcoming)
    .bind(after.map(|a| a.0))
    .bind(after.map(|a| a.1))
    .bind(limit + 1)
    .fetch_all(db)
    .await?;
    let (mut found, next) = page::split(rows, limit, |s| page::time_id(s.planned_start, s.session_id));
    let ids: Vec<Uuid> = found.iter().map(|s| s.session_id).collect();
    let hosts = sqlx::query_as::<_, SessionHost>(
        "select distinct on (sh.session_id, sh.host_id)
                sh.session_id, sh.host_id, h.handle, h.display_name,
                bool_or(sh.actual_start is not null and sh.actual_end is null)
                    over (partition by sh.session_id, sh.host_id) as on_air
           from shift sh join host h on h.host_id = sh.host_id
          where sh.session_id = any($1) and sh.cancelled_at is null
          order by sh.session_id, sh.host_id, sh.planned_start",
    )
    .bind(&ids)
    .fetch_all(db)
    .await?;
    let mut by_session: HashMap<Uuid, Vec<SessionHost>> = HashMap::new();
    for h in hosts {
        by_session.entry(h.session_id).or_default().push(h);
    }
    for s in &mut found {
        s.hosts = by_session.remove(&s.session_id).unwrap_or_default();
    }
    Ok((found, next))
}

/// The names of these brands.
pub async fn brand_names(db: &PgPool, brand_ids: &[Uuid]) -> Result<HashMap<Uuid, String>> {
    let rows: Vec<(Uuid, String)> =
        sqlx::query_as("select brand_id, name from brand where brand_id = any($1)")
            .bind(brand_ids)
            .fetch_all(db)
            .await?;
    Ok(rows.into_iter().collect())
}

/// Whether a brand exists.
pub async fn brand_exists(db: &PgPool, brand_id: Uuid) -> Result<bool> {
    Ok(
        sqlx::query_scalar("select exists (select 1 from brand where brand_id = $1)")
            .bind(brand_id)
            .fetch_one(db)
            .await?,
    )
}
