//! Live session figures: sales (gross, net of refunds), orders, units,
//! buyers, viewers (current, peak, unique), chat messages, likes and
//! conversion, for the session and per deal and per shift — while it runs
//! and after.
//!
//! Sales come straight from Postgres on every request. The room's counters
//! live in Redis (the hub keeps `viewers` and `likes` in the room's state
//! hash and appends every event to its capped stream), and Redis forgets a
//! room after it ends, so a small worker ([`run_sampler`]) copies them into
//! Postgres about once a second while a session is live: a running tally per
//! session (`session_room_tally`: chat messages counted from the stream,
//! peak viewers) and cumulative samples over time (`session_sample`), which
//! give the per-shift and per-deal figures. While the session is live the
//! figures read the current viewers and likes from Redis directly, so they
//! are at most a second or two old; afterwards they come from the samples.
//!
//! Unique viewers: the hub records no viewer identities, so this is the
//! larger of the peak concurrent viewers and the identified users (those
//! seen joining — the hub announces joins in rooms under
//! `hub.presence_below` — chatting or buying). It is a lower bound, and the
//! conversion (buyers / unique viewers) an upper bound, in large rooms.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use chrono::{DateTime, Utc};
use hawker_core::Claims;
use serde::Serialize;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::access::{load_session, session_role, SessionRole};
use hawker_core::error::{Error, Result};

/// Money in one currency.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Amounts {
    pub currency: String,
    /// Paid orders, after coupon discounts.
    pub gross_minor: i64,
    pub refunds_minor: i64,
    pub net_minor: i64,
}

/// Paid orders.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Sales {
    pub orders: i64,
    pub units: i64,
    pub buyers: i64,
    /// Per currency.
    pub amounts: Vec<Amounts>,
}

/// The room's counters over the whole session.
#[derive(Debug, Clone, Default, Serialize, utoipa::ToSchema)]
pub struct Audience {
    /// Connected now (0 once the session is over).
    pub viewers_now: i64,
    pub peak_viewers: i64,
    /// max(peak viewers, identified users); see the module docs.
    pub unique_viewers: i64,
    pub chat_messages: i64,
    pub likes: i64,
    /// When the room's counters were last copied from Redis.
    pub sampled_at: Option<DateTime<Utc>>,
    /// Times the room's stream moved on faster than the sampler read it:
    /// chat counts are then lower bounds.
    pub stream_gaps: i32,
}

/// The room's counters within a time window (a deal, a shift), from samples.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct WindowAudience {
    pub peak_viewers: i64,
    pub chat_messages: i64,
    pub likes: i64,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct DealFigures {
    pub deal_id: Uuid,
    pub sku_id: Uuid,
    pub product_name: String,
    /// `scheduled`, `live` or `ended`.
    pub status: String,
    pub starts_at: DateTime<Utc>,
    /// When it ended, or will end.
    pub ends_at: DateTime<Utc>,
    pub quantity: i32,
    pub sales: Sales,
    pub audience: WindowAudience,
    /// Buyers / peak viewers during the deal.
    pub conversion: Option<f64>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ShiftFigures {
    pub shift_id: Uuid,
    pub host_id: Uuid,
    pub host_handle: String,
    /// The window sales are counted in: on air (or planned, before anyone went on air).
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
    pub sales: Sales,
    pub audience: WindowAudience,
    /// Buyers / peak viewers during the shift.
    pub conversion: Option<f64>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct SessionFigures {
    pub session_id: Uuid,
    /// `scheduled`, `live`, `ended` or `cancelled`.
    pub status: String,
    pub as_of: DateTime<Utc>,
    /// Set when a brand reads: sales of its products only.
    pub brand_id: Option<Uuid>,
    pub sales: Sales,
    pub audience: Audience,
    /// Buyers / unique viewers.
    pub conversion: Option<f64>,
    pub deals: Vec<DealFigures>,
    pub shifts: Vec<ShiftFigures>,
}

fn ratio(buyers: i64, viewers: i64) -> Option<f64> {
    (viewers > 0).then(|| {
        let r = buyers as f64 / viewers as f64;
        (r * 10_000.0).round() / 10_000.0
    })
}

/// A window figures are counted in, keyed by deal or shift id.
struct Window {
    key: Uuid,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
}

#[derive(sqlx::FromRow)]
struct SalesRow {
    scope: String,
    key: Option<Uuid>,
    currency: Option<String>,
    orders: i64,
    units: i64,
    buyers: i64,
    gross: i64,
    refunds: i64,
}

/// Sales for the session (scope `session`), per deal and per window.
async fn sales(
    db: &PgPool,
    session_id: Uuid,
    brand: Option<Uuid>,
    windows: &[Window],
) -> Result<HashMap<(String, Option<Uuid>), Sales>> {
    let keys: Vec<Uuid> = windows.iter().map(|w| w.key).collect();
    let froms: Vec<DateTime<Utc>> = windows.iter().map(|w| w.from).collect();
    let tos: Vec<DateTime<Utc>> = windows.iter().map(|w| w.to).collect();
    let rows: Vec<SalesRow> = sqlx::query_as(
        "with o as (
            select o.order_id, o.deal_id, o.buyer_id, o.quantity, o.amount_minor, o.currency::text as currency,
                   o.created_at,
                   coalesce((select sum(r.amount_minor) from refund r where r.order_id = o.order_id), 0)::bigint
                       as refunded
              from customer_order o
             where o.session_id = $1 and o.paid_at is not null
               and o.status in ('paid', 'partially_refunded', 'refunded')
               and ($2::uuid is null or exists (select 1 from sku k join product p using (product_id)
                                                  where k.sku_id = o.sku_id and p.brand_id = $2))
         ), keyed as (
            select 'session'::text as scope, null::uuid as key, o.* from o
            union all
            select 'deal', o.deal_id, o.* from o
            union all
            select 'window', w.key, o.* from o
              join unnest($3::uuid[], $4::timestamptz[], $5::timestamptz[]) as w(key, from_at, to_at)
                on o.created_at >= w.from_at and o.created_at < w.to_at
         )
         select scope, key, case when grouping(currency) = 0 then currency end as currency,
                count(*)::bigint as orders, coalesce(sum(quantity), 0)::bigint as units,
                count(distinct buyer_id)::bigint as buyers,
                coalesce(sum(amount_minor), 0)::bigint as gross, coalesce(sum(refunded), 0)::bigint as refunds
           from keyed
          group by grouping sets ((scope, key), (scope, key, currency))
          order by scope, key, currency",
    )
    .bind(session_id)
    .bind(brand)
    .bind(&keys)
    .bind(&froms)
    .bind(&tos)
    .fetch_all(db)
    .await?;
    let mut out: HashMap<(String, Option<Uuid>), Sales> = HashMap::new();
    for row in rows {
        let sales = out.entry((row.scope, row.key)).or_default();
        match row.currency {
            None => {
                sales.orders = row.orders;
                sales.units = row.units;
                sales.buyers = row.buyers;
            }
            Some(currency) => sales.amounts.push(Amounts {
                currency,
                gross_minor: row.gross,
                refunds_minor: row.refunds,
                net_minor: row.gross - row.refunds,
            }),
        }
    }
    Ok(out)
}

/// Peak viewers in, and chat and likes added during, each window.
async fn window_audience(
    db: &PgPool,
    session_id: Uuid,
    windows: &[Window],
) -> Result<HashMap<Uuid, WindowAudience>> {
    let keys: Vec<Uuid> = windows.iter().map(|w| w.key).collect();
    let froms: Vec<DateTime<Utc>> = windows.iter().map(|w| w.from).collect();
    let tos: Vec<DateTime<Utc>> = windows.iter().map(|w| w.to).collect();
    let rows: Vec<(Uuid, i64, i64, i64)> = sqlx::query_as(
        "select w.key,
                coalesce((select max(viewers) from session_sample
                           where session_id = $1 and sampled_at >= w.from_at and sampled_at < w.to_at), 0)::bigint,
                (coalesce((select chat_messages from session_sample where session_id = $1 and sampled_at < w.to_at
                            order by sampled_at desc limit 1), 0)
                 - coalesce((select chat_messages from session_sample where session_id = $1 and sampled_at < w.from_at
                              order by sampled_at desc limit 1), 0))::bigint,
                (coalesce((select likes from session_sample where session_id = $1 and sampled_at < w.to_at
                            order by sampled_at desc limit 1), 0)
                 - coalesce((select likes from session_sample where session_id = $1 and sampled_at < w.from_at
                              order by sampled_at desc limit 1), 0))::bigint
           from unnest($2::uuid[], $3::timestamptz[], $4::timestamptz[]) as w(key, from_at, to_at)",
    )
    .bind(session_id)
    .bind(&keys)
    .bind(&froms)
    .bind(&tos)
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(key, peak, chat, likes)| {
            (
                key,
                WindowAudience {
                    peak_viewers: peak,
                    chat_messages: chat.max(0),
                    likes: likes.max(0),
                },
            )
        })
        .collect())
}

#[derive(sqlx::FromRow)]
struct DealRow {
    deal_id: Uuid,
    sku_id: Uuid,
    product_name: String,
    status: String,
    starts_at: DateTime<Utc>,
    ends_at: DateTime<Utc>,
    quantity: i32,
}

#[derive(sqlx::FromRow)]
struct ShiftRow {
    shift_id: Uuid,
    host_id: Uuid,
    host_handle: String,
    planned_start: DateTime<Utc>,
    planned_end: DateTime<Utc>,
    actual_start: Option<DateTime<Utc>>,
    actual_end: Option<DateTime<Utc>>,
}

#[derive(sqlx::FromRow, Default)]
struct TallyRow {
    viewers: i64,
    peak_viewers: i64,
    likes: i64,
    chat_messages: i64,
    stream_gaps: i32,
    sampled_at: Option<DateTime<Utc>>,
}

/// The live counters from the room's state in Redis: (viewers, likes).
async fn live_counters(redis: &mut redis::aio::ConnectionManager, session_id: Uuid) -> Option<(i64, i64)> {
    let mut command = redis::cmd("HMGET");
    command
        .arg(room_key(session_id, "state"))
        .arg("viewers")
        .arg("likes");
    let reply: redis::RedisResult<(Option<String>, Option<String>)> =
        match tokio::time::timeout(Duration::from_millis(500), command.query_async(redis)).await {
            Ok(r) => r,
            Err(_) => return None,
        };
    let (viewers, likes) = reply.ok()?;
    let number = |v: Option<String>| v.and_then(|s| s.trim().parse::<i64>().ok()).unwrap_or(0);
    Some((number(viewers), number(likes)))
}

/// Figures of one session. The session's agency, its scheduled hosts and
/// admins see everything; a brand selling in it sees its own products' sales.
#[tracing::instrument(skip_all, fields(%session_id, caller = %claims.sub), err)]
pub async fn session_figures(
    db: &PgPool,
    redis: Option<redis::aio::ConnectionManager>,
    claims: &Claims,
    session_id: Uuid,
) -> Result<SessionFigures> {
    let session = load_session(db, session_id).await?;
    let brand =
        match session_role(db, claims, &session).await? {
            SessionRole::Manager | SessionRole::ScheduledHost(_) => None,
            SessionRole::Brand(b) => Some(b),
            SessionRole::Outsider => return Err(Error::forbidden(
                "only the session's agency, its hosts, brands selling in it or an admin may see its figures",
            )),
        };
    let now = Utc::now();
    let deals: Vec<DealRow> = sqlx::query_as(
        "select d.deal_id, d.sku_id, p.name as product_name, d.status, d.starts_at,
                coalesce(d.ended_at, d.ends_at) as ends_at, d.quantity
           from deal d join sku k using (sku_id) join product p using (product_id)
          where d.session_id = $1 and ($2::uuid is null or p.brand_id = $2)
          order by d.starts_at, d.deal_id",
    )
    .bind(session_id)
    .bind(brand)
    .fetch_all(db)
    .await?;
    let shifts: Vec<ShiftRow> = sqlx::query_as(
        "select sh.shift_id, sh.host_id, h.handle as host_handle, sh.planned_start, sh.planned_end,
                sh.actual_start, sh.actual_end
           from shift sh join host h using (host_id)
          where sh.session_id = $1 and sh.cancelled_at is null
          order by sh.planned_start",
    )
    .bind(session_id)
    .fetch_all(db)
    .await?;
    // Shift windows follow attribution (`host_on_shift`): on air if anyone
    // went on air, otherwise the plan.
    let anyone_on_air = shifts.iter().any(|s| s.actual_start.is_some());
    let shift_window = |s: &ShiftRow| -> Option<(DateTime<Utc>, DateTime<Utc>)> {
        match (s.actual_start, s.actual_end) {
            (Some(from), Some(to)) => Some((from, to)),
            (Some(from), None) => Some((from, now.max(from))),
            (None, _) if !anyone_on_air => Some((s.planned_start, s.planned_end)),
            (None, _) => None,
        }
    };
    let mut windows: Vec<Window> = Vec::new();
    for s in &shifts {
        if let Some((from, to)) = shift_window(s) {
            windows.push(Window {
                key: s.shift_id,
                from,
                to,
            });
        }
    }
    let deal_windows: Vec<Window> = deals
        .iter()
        .map(|d| Window {
            key: d.deal_id,
            from: d.starts_at,
            to: d.ends_at.min(now).max(d.starts_at),
        })
        .collect();
    let mut by_key = sales(db, session_id, brand, &windows).await?;
    windows.extend(deal_windows);
    let audience_by_key = window_audience(db, session_id, &windows).await?;

    let tally: TallyRow = sqlx::query_as(
        "select viewers, peak_viewers, likes, chat_messages, stream_gaps, sampled_at
           from session_room_tally where session_id = $1",
    )
    .bind(session_id)
    .fetch_optional(db)
    .await?
    .unwrap_or_default();
    let identified: i64 = sqlx::query_scalar(
        "select count(*)::bigint from (
            select user_id from session_viewer where session_id = $1
            union
            select buyer_id from customer_order where session_id = $1 and status <> 'cancelled') u",
    )
    .bind(session_id)
    .fetch_one(db)
    .await?;
    let live = session.status == "live";
    let (mut viewers_now, mut likes) = (if live { tally.viewers } else { 0 }, tally.likes);
    if live {
        if let Some(mut redis) = redis {
            if let Some((v, l)) = live_counters(&mut redis, session_id).await {
                viewers_now = v;
                likes = likes.max(l);
            }
        }
    }
    let peak_viewers = tally.peak_viewers.max(viewers_now);
    let session_sales = by_key.remove(&("session".to_string(), None)).unwrap_or_default();
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
            let sales = by_key
                .remove(&("deal".to_string(), Some(d.deal_id)))
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
            let sales = by_key
                .remove(&("window".to_string(), Some(s.shift_id)))
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
        status: session.status,
        as_of: now,
        brand_id: brand,
        conversion: ratio(session_sales.buyers, unique_viewers),
        sales: session_sales,
        audience,
        deals,
        shifts,
    })
}

/// A room's key in Redis, as the hub names it (`hawker-hub/src/store.rs`).
fn room_key(session_id: Uuid, what: &str) -> String {
    format!("hawker:room:{{{session_id}}}:{what}")
}

/// Copies the counters of live rooms into Postgres every `every` until `shutdown`.
pub async fn run_sampler(
    db: PgPool,
    redis: redis::aio::ConnectionManager,
    every: Duration,
    shutdown: CancellationToken,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let round = tokio::select! {
            _ = shutdown.cancelled() => return,
            round = sample(&db, &redis) => round,
        };
        if let Err(e) = round {
            tracing::debug!(error = %e, "room sampling deferred");
        }
    }
}

/// One round: every live session, and those that ended in the last 15 s
/// (for their final counts). Returns how many were sampled.
#[tracing::instrument(skip_all, err)]
pub async fn sample(db: &PgPool, redis: &redis::aio::ConnectionManager) -> Result<usize> {
    let sessions: Vec<Uuid> = sqlx::query_scalar(
        "select session_id from live_session
          where status = 'live' or (status = 'ended' and ended_at > now() - interval '15 seconds')",
    )
    .fetch_all(db)
    .await?;
    let mut sampled = 0;
    for session_id in sessions {
        let mut redis = redis.clone();
        match sample_session(db, &mut redis, session_id).await {
            Ok(true) => sampled += 1,
            Ok(false) => {}
            Err(e) => tracing::debug!(error = %e, %session_id, "room not sampled"),
        }
    }
    Ok(sampled)
}

/// What the sampler takes from one stream entry.
#[derive(serde::Deserialize)]
struct StreamEvent {
    #[serde(rename = "type")]
    event_type: String,
    #[serde(default)]
    from: Option<String>,
    #[serde(default)]
    data: serde_json::Value,
}

/// Stream entries read per round and session, at most.
const STREAM_PAGE: usize = 1000;
const STREAM_PAGES: usize = 10;

/// Runs a Redis command with a deadline: a sampler must not hang on Redis.
async fn query<T: redis::FromRedisValue>(
    command: &redis::Cmd,
    redis: &mut redis::aio::ConnectionManager,
) -> Result<T> {
    match tokio::time::timeout(Duration::from_secs(1), command.query_async(redis)).await {
        Ok(Ok(value)) => Ok(value),
        _ => Err(Error::Unavailable { what: "redis" }),
    }
}

/// Samples one room, unless another node did within the last 0.9 s (or is
/// doing it now: the tally row is taken with `skip locked`).
async fn sample_session(
    db: &PgPool,
    redis: &mut redis::aio::ConnectionManager,
    session_id: Uuid,
) -> Result<bool> {
    sqlx::query("insert into session_room_tally (session_id) values ($1) on conflict do nothing")
        .bind(session_id)
        .execute(db)
        .await?;
    let mut tx = db.begin().await?;
    let tally: Option<(String, i64, i64, bool)> = sqlx::query_as(
        "select epoch, last_offset, chat_messages,
                coalesce(sampled_at > now() - interval '900 milliseconds', false)
           from session_room_tally where session_id = $1
            for update skip locked",
    )
    .bind(session_id)
    .fetch_optional(&mut *tx)
    .await?;
    let Some((epoch, mut last_offset, mut chat, fresh)) = tally else {
        return Ok(false);
    };
    if fresh {
        return Ok(false);
    }
    let mut command = redis::cmd("HMGET");
    command
        .arg(room_key(session_id, "state"))
        .arg("viewers")
        .arg("likes");
    let (viewers, likes): (Option<String>, Option<String>) = query(&command, redis).await?;
    let mut command = redis::cmd("HGET");
    command.arg(room_key(session_id, "meta")).arg("epoch");
    let room_epoch: Option<String> = query(&command, redis).await?;
    let room_epoch = room_epoch.unwrap_or_default();
    let mut gaps = 0;
    if room_epoch != epoch {
        // A new room (first sample, or Redis lost the old one): read it from the start.
        last_offset = 0;
    }
    let mut users: HashSet<String> = HashSet::new();
    if !room_epoch.is_empty() {
        for _ in 0..STREAM_PAGES {
            let mut command = redis::cmd("XRANGE");
            command
                .arg(room_key(session_id, "stream"))
                .arg(format!("{}-0", last_offset + 1))
                .arg("+")
                .arg("COUNT")
                .arg(STREAM_PAGE);
            let page: redis::streams::StreamRangeReply = query(&command, redis).await?;
            let count = page.ids.len();
            for entry in page.ids {
                let offset: i64 = entry
                    .id
                    .split('-')
                    .next()
                    .and_then(|o| o.parse().ok())
                    .unwrap_or(last_offset + 1);
                if offset > last_offset + 1 {
                    gaps += 1;
                }
                last_offset = offset.max(last_offset);
                let Some(frame) = entry.get::<String>("f") else {
                    continue;
                };
                let Ok(event) = serde_json::from_str::<StreamEvent>(&frame) else {
                    continue;
                };
                match event.event_type.as_str() {
                    "chat" => {
                        chat += 1;
                        if let Some(user) = event.from {
                            users.insert(user);
                        }
                    }
                    "presence.joined" => {
                        if let Some(user) = event.data.get("user").and_then(|u| u.as_str()) {
                            users.insert(user.to_string());
                        }
                    }
                    _ => {}
                }
            }
            if count < STREAM_PAGE {
                break;
            }
        }
    }
    let number = |v: Option<String>| v.and_then(|s| s.trim().parse::<i64>().ok()).unwrap_or(0);
    let (viewers, likes) = (number(viewers), number(likes));
    sqlx::query(
        "update session_room_tally
            set epoch = $2, last_offset = $3, chat_messages = $4, viewers = $5,
                peak_viewers = greatest(peak_viewers, $5), likes = greatest(likes, $6),
                stream_gaps = stream_gaps + $7, sampled_at = now()
          where session_id = $1",
    )
    .bind(session_id)
    .bind(&room_epoch)
    .bind(last_offset)
    .bind(chat)
    .bind(viewers)
    .bind(likes)
    .bind(gaps)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "insert into session_sample (session_id, sampled_at, viewers, likes, chat_messages)
         select session_id, now(), viewers, likes, chat_messages from session_room_tally where session_id = $1
         on conflict do nothing",
    )
    .bind(session_id)
    .execute(&mut *tx)
    .await?;
    if !users.is_empty() {
        let users: Vec<String> = users.into_iter().collect();
        sqlx::query(
            "insert into session_viewer (session_id, user_id)
             select $1, u from unnest($2::text[]) as u on conflict do nothing",
        )
        .bind(session_id)
        .bind(&users)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(true)
}
