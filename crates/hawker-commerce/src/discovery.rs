//! Discovery: the sessions a viewer can find (`GET /v1/sessions`) and the
//! upcoming schedule of a brand or an agency. The agency side lists the
//! sessions (`hawker_agency::discover`); this adds the brands of each
//! lineup, and for live sessions the pinned item and the viewers on every
//! node, from the hub.

use std::collections::{BTreeSet, HashMap};

use chrono::{DateTime, Utc};
use hawker_agency::access::SessionStatus;
use hawker_agency::discover::{self, DiscoverFilter, Named, SessionHost};
use hawker_agency::page::PageQuery;
use serde::Serialize;
use serde_json::Value;
use uuid::Uuid;

use crate::Commerce;
use hawker_core::error::{Error, Result};

/// A session as discovery lists it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ListedSession {
    pub session_id: Uuid,
    pub title: String,
    pub status: SessionStatus,
    pub planned_start: DateTime<Utc>,
    pub planned_end: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub ended_at: Option<DateTime<Utc>>,
    pub agency: Named,
    /// The session's brand, its campaign's brand and the brands in its lineup, by name.
    pub brands: Vec<Named>,
    /// Hosts with a shift that is not cancelled, by handle.
    pub hosts: Vec<SessionHost>,
    /// The item pinned in the room ("now showing"), while live; null otherwise.
    #[schema(value_type = Option<Object>)]
    pub pinned: Option<Value>,
    /// Viewers connected on every node, as last announced; 0 unless live.
    pub viewers: i64,
}

/// A page of sessions.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ListedSessionPage {
    pub items: Vec<ListedSession>,
    /// Pass as `cursor` for the next page; null on the last page.
    pub next_cursor: Option<String>,
}

/// Sessions matching `filter`, a page at a time (any authenticated caller).
pub async fn sessions(c: &Commerce, filter: &DiscoverFilter, page: &PageQuery) -> Result<ListedSessionPage> {
    list(c, filter, false, page).await
}

/// A brand's upcoming sessions (scheduled or live, not planned to be over).
pub async fn brand_schedule(c: &Commerce, brand_id: Uuid, page: &PageQuery) -> Result<ListedSessionPage> {
    if !discover::brand_exists(c.db(), brand_id).await? {
        return Err(Error::NotFound("brand"));
    }
    let filter = DiscoverFilter {
        brand_id: Some(brand_id),
        ..DiscoverFilter::default()
    };
    list(c, &filter, true, page).await
}

/// An agency's upcoming sessions (scheduled or live, not planned to be over).
pub async fn agency_schedule(c: &Commerce, agency_id: Uuid, page: &PageQuery) -> Result<ListedSessionPage> {
    if !hawker_agency::access::agency_exists(c.db(), agency_id).await? {
        return Err(Error::NotFound("agency"));
    }
    let filter = DiscoverFilter {
        agency_id: Some(agency_id),
        ..DiscoverFilter::default()
    };
    list(c, &filter, true, page).await
}

async fn list(
    c: &Commerce,
    filter: &DiscoverFilter,
    upcoming: bool,
    page: &PageQuery,
) -> Result<ListedSessionPage> {
    let brand_sessions: Vec<Uuid> = match filter.brand_id {
        Some(brand) => {
            sqlx::query_scalar(
                "select distinct l.session_id from lineup_item l
               join sku k on k.sku_id = l.sku_id join product p on p.product_id = k.product_id
              where p.brand_id = $1",
            )
            .bind(brand)
            .fetch_all(c.db())
            .await?
        }
        None => Vec::new(),
    };
    let (found, next_cursor) = discover::sessions(c.db(), filter, &brand_sessions, upcoming, page).await?;
    let ids: Vec<Uuid> = found.iter().map(|s| s.session_id).collect();
    let lineup: Vec<(Uuid, Uuid)> = sqlx::query_as(
        "select distinct l.session_id, p.brand_id from lineup_item l
           join sku k on k.sku_id = l.sku_id join product p on p.product_id = k.product_id
          where l.session_id = any($1)",
    )
    .bind(&ids)
    .fetch_all(c.db())
    .await?;
    let mut brands_of: HashMap<Uuid, BTreeSet<Uuid>> = HashMap::new();
    for s in &found {
        brands_of
            .entry(s.session_id)
            .or_default()
            .extend(s.brand_ids.iter().copied());
    }
    for (session, brand) in lineup {
        brands_of.entry(session).or_default().insert(brand);
    }
    let all: Vec<Uuid> = brands_of
        .values()
        .flatten()
        .copied()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let names = discover::brand_names(c.db(), &all).await?;
    let mut items = Vec::with_capacity(found.len());
    for s in found {
        let (pinned, viewers) = if s.status == SessionStatus::Live {
            room_figures(c, s.session_id).await
        } else {
            (None, 0)
        };
        let brands = brands_of
            .remove(&s.session_id)
            .unwrap_or_default()
            .into_iter()
            .filter_map(|id| {
                names.get(&id).map(|name| Named {
                    id,
                    name: name.clone(),
                })
            })
            .collect();
        items.push(ListedSession {
            session_id: s.session_id,
            title: s.title,
            status: s.status,
            planned_start: s.planned_start,
            planned_end: s.planned_end,
            started_at: s.started_at,
            ended_at: s.ended_at,
            agency: Named {
                id: s.agency_id,
                name: s.agency_name,
            },
            brands,
            hosts: s.hosts,
            pinned,
            viewers,
        });
    }
    Ok(ListedSessionPage { items, next_cursor })
}

/// The live room's pinned item and viewer count. A room Redis cannot answer
/// for now lists as unknown (null, 0) rather than failing the whole page.
async fn room_figures(c: &Commerce, session_id: Uuid) -> (Option<Value>, i64) {
    let viewers = match c.hub().room_counters(session_id).await {
        Ok(counters) => counters.viewers,
        Err(e) => {
            tracing::debug!(error = %e, %session_id, "viewer count unavailable");
            0
        }
    };
    let pinned = match c.hub().state_field(session_id, "pinned").await {
        Ok(pinned) => pinned,
        Err(e) => {
            tracing::debug!(error = %e, %session_id, "pinned item unavailable");
            None
        }
    };
    (pinned, viewers)
}
