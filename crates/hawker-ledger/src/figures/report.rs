//! The figures of one session as a caller may see them: who may read them
//! (the session-access rule, plus commerce's lineup for brands), and their
//! assembly from commerce's sales, the agency's shifts, the sampler's
//! tallies and the hub's live counters.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use hawker_agency::schedule::{self, ShiftTimes};
use hawker_agency::{SessionRole, SessionStatus};
use hawker_commerce::sales::{self, SalesScope, SalesWindow};
use hawker_core::Claims;
use hawker_hub::Hub;
use sqlx::PgPool;
use uuid::Uuid;

use super::samples::{self, Window};
use super::{ratio, Amounts, Audience, DealFigures, Sales, SessionFigures, ShiftFigures};
use hawker_core::error::{Error, Result};

/// Whose figures the caller sees: `None` everything, `Some(brand)` only
/// that brand's products' sales.
async fn reader(db: &PgPool, claims: &Claims, session_id: Uuid) -> Result<(SessionStatus, Option<Uuid>)> {
    let access = hawker_agency::access::session_access(db, claims, session_id).await?;
    let status = access.session.status;
    let brand = match access.role {
        role if role.manages() || role.scheduled_host().is_some() => None,
        SessionRole::Brand {
            brand_id,
            session_brand: true,
        } => Some(brand_id),
        SessionRole::Brand { brand_id, .. } if sales::brand_sells_in(db, session_id, brand_id).await? => {
            Some(brand_id)
        }
        _ => {
            return Err(Error::forbidden(
                "only the session's agency, its hosts, brands selling in it or an admin may see its figures",
            ))
        }
    };
    Ok((status, brand))
}

/// Sales keyed by scope.
fn sales_by_scope(rows: Vec<sales::SalesRow>) -> HashMap<SalesScope, Sales> {
    let mut out: HashMap<SalesScope, Sales> = HashMap::new();
    for row in rows {
        let sales = out.entry(row.scope).or_default();
        match row.currency {
            None => {
                sales.orders = row.orders;
                sales.units = row.units;
                sales.buyers = row.buyers;
            }
            Some(currency) => sales.amounts.push(Amounts {
                currency,
                gross_minor: row.gross_minor,
                refunds_minor: row.refunds_minor,
                net_minor: row.gross_minor.saturating_sub(row.refunds_minor),
            }),
        }
    }
    out
}

/// Figures of one session. The session's agency, its scheduled hosts and
/// admins see everything; a brand selling in it sees its own products' sales.
/// `hub` gives the live counters while the session is live.
#[tracing::instrument(skip_all, fields(%session_id, caller = %claims.sub))]
pub async fn session_figures(
    db: &PgPool,
    hub: Option<&Hub>,
    claims: &Claims,
    session_id: Uuid,
) -> Result<SessionFigures> {
    let (status, brand) = reader(db, claims, session_id).await?;
    let now = Utc::now();
    let deals = sales::session_deals(db, session_id, brand).await?;
    let shifts = schedule::shift_times(db, session_id).await?;
    // Shift windows follow attribution (`host_on_shift`): on air if anyone
    // went on air, otherwise the plan.
    let anyone_on_air = shifts.iter().any(|s| s.actual_start.is_some());
    let shift_window = |s: &ShiftTimes| -> Option<(DateTime<Utc>, DateTime<Utc>)> {
        match (s.actual_start, s.actual_end) {
            (Some(from), Some(to)) => Some((from, to)),
            (Some(from), None) => Some((from, now.max(from))),
            (None, _) if !anyone_on_air => Some((s.planned_start, s.planned_end)),
            (None, _) => None,
        }
    };
    let mut windows: Vec<Window> = shifts
        .iter()
        .filter_map(|s| {
            shift_window(s).map(|(from, to)| Window {
                key: s.shift_id,
                from,
                to,
            })
        })
        .collect();
    let sales_windows: Vec<SalesWindow> = windows
        .iter()
        .map(|w| SalesWindow {
            key: w.key,
            from: w.from,
            to: w.to,
        })
        .collect();
    let mut by_scope = sales_by_scope(sales::session_sales(db, session_id, brand, &sales_windows).await?);
    windows.extend(deals.iter().map(|d| Window {
        key: d.deal_id,
        from: d.starts_at,
        to: d.ends_at.min(now).max(d.starts_at),
    }));
    let audience_by_key = samples::window_audience(db, session_id, &windows).await?;

    let tally = samples::tally(db, session_id).await?;
    let identified: HashSet<String> = samples::seen_viewers(db, session_id)
        .await?
        .into_iter()
        .chain(sales::session_buyers(db, session_id).await?)
        .collect();
    let identified = i64::try_from(identified.len()).unwrap_or(i64::MAX);
    let live = status == SessionStatus::Live;
    let (mut viewers_now, mut likes) = (if live { tally.viewers } else { 0 }, tally.likes);
    if live {
        if let Some(hub) = hub {
            if let Ok(counters) = hub.room_counters(session_id).await {
                viewers_now = counters.viewers;
                likes = likes.max(counters.likes);
            }
        }
    }
    let peak_viewers = tally.peak_viewers.max(viewers_now);
    let session_sales = by_scope.remove(&SalesScope::Session).unwrap_or_default();
    let unique_viewers = peak_viewers.max(identified).max(session_sales.buyers);
    let audience = Audience {
        viewers_now,
        peak_viewers,
        unique_viewers,
        chat_messages: tally.chat_messages,
        likes,
        sampled_at: tally.sampled_at,
        stream_gaps: tally.stream_gaps,
    };

    let deals = deals
        .into_iter()
        .map(|d| {
            let sales = by_scope
                .remove(&SalesScope::Deal(Some(d.deal_id)))
                .unwrap_or_default();
            let audience = audience_by_key.get(&d.deal_id).cloned().unwrap_or_default();
            DealFigures {
                conversion: ratio(sales.buyers, audience.peak_viewers.max(sales.buyers)),
                deal_id: d.deal_id,
                sku_id: d.sku_id,
                product_name: d.product_name,
                status: d.status,
                starts_at: d.starts_at,
                ends_at: d.ends_at,
                quantity: d.quantity,
                sales,
                audience,
            }
        })
        .collect();
    let shifts = shifts
        .iter()
        .map(|s| {
            let window = shift_window(s);
            let sales = by_scope
                .remove(&SalesScope::Window(Some(s.shift_id)))
                .unwrap_or_default();
            let audience = audience_by_key.get(&s.shift_id).cloned().unwrap_or_default();
            ShiftFigures {
                conversion: ratio(sales.buyers, audience.peak_viewers.max(sales.buyers)),
                shift_id: s.shift_id,
                host_id: s.host_id,
                host_handle: s.host_handle.clone(),
                from: window.map(|w| w.0),
                to: window.map(|w| w.1),
                sales,
                audience,
            }
        })
        .collect();
    Ok(SessionFigures {
        session_id,
        status,
        as_of: now,
        brand_id: brand,
        conversion: ratio(session_sales.buyers, unique_viewers),
        sales: session_sales,
        audience,
        deals,
        shifts,
    })
}
