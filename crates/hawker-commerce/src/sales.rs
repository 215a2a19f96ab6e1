//! Read-only figures over commerce's tables for other crates (live session
//! figures in `hawker-ledger`, the console's catalog in `hawker-server`): a
//! session's deals, its paid sales per scope, its buyers, whether a brand
//! sells in it, and the SKUs on offer; and, for the ledger's commission
//! accrual, paid orders and refunds in time order ([`paid_orders`],
//! [`refunds`]). Typed rows; nothing here writes or touches Redis.

use chrono::{DateTime, Utc};

use sqlx::{PgExecutor, PgPool};
use uuid::Uuid;

use hawker_core::error::Result;

/// One deal of a session, as figures show it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct DealSummary {
    pub deal_id: Uuid,
    pub sku_id: Uuid,
    pub product_name: String,
    /// `scheduled`, `live` or `ended`.
    pub status: String,
    pub starts_at: DateTime<Utc>,
    /// When it ended, or will end.
    pub ends_at: DateTime<Utc>,
    pub quantity: i32,
}

/// The session's deals in start order; with `brand`, only that brand's products.
pub async fn session_deals(db: &PgPool, session_id: Uuid, brand: Option<Uuid>) -> Result<Vec<DealSummary>> {
    Ok(sqlx::query_as(
        "select d.deal_id, d.sku_id, p.name as product_name, d.status, d.starts_at,
                coalesce(d.ended_at, d.ends_at) as ends_at, d.quantity
           from deal d join sku k using (sku_id) join product p using (product_id)
          where d.session_id = $1 and ($2::uuid is null or p.brand_id = $2)
          order by d.starts_at, d.deal_id",
    )
    .bind(session_id)
    .bind(brand)
    .fetch_all(db)
    .await?)
}

/// A time window sales are also counted in, keyed by the caller (a shift).
#[derive(Debug, Clone, Copy)]
pub struct SalesWindow {
    pub key: Uuid,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
}

/// What a row of [`session_sales`] counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SalesScope {
    /// The whole session.
    Session,
    /// One deal (the row's key is the deal id).
    Deal(Option<Uuid>),
    /// One [`SalesWindow`] (the row's key is the window's).
    Window(Option<Uuid>),
}

/// Paid sales of one scope: the totals (`currency` `None`) or one currency's amounts.
#[derive(Debug, Clone)]
pub struct SalesRow {
    pub scope: SalesScope,
    pub currency: Option<String>,
    pub orders: i64,
    pub units: i64,
    pub buyers: i64,
    /// Paid amounts, after coupon discounts.
    pub gross_minor: i64,
    pub refunds_minor: i64,
}

#[derive(sqlx::FromRow)]
struct RawSalesRow {
    scope: String,
    key: Option<Uuid>,
    currency: Option<String>,
    orders: i64,
    units: i64,
    buyers: i64,
    gross: i64,
    refunds: i64,
}

/// Paid orders of the session (with `brand`, of its products only), net of
/// refunds: for the session and per window (orders of every source), per
/// deal (deal orders); per scope one row of
/// totals and one per currency.
pub async fn session_sales(
    db: &PgPool,
    session_id: Uuid,
    brand: Option<Uuid>,
    windows: &[SalesWindow],
) -> Result<Vec<SalesRow>> {
    let keys: Vec<Uuid> = windows.iter().map(|w| w.key).collect();
    let froms: Vec<DateTime<Utc>> = windows.iter().map(|w| w.from).collect();
    let tos: Vec<DateTime<Utc>> = windows.iter().map(|w| w.to).collect();
    let rows: Vec<RawSalesRow> = sqlx::query_as(
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
            select 'deal', o.deal_id, o.* from o where o.deal_id is not null
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
    Ok(rows
        .into_iter()
        .filter_map(|row| {
            let scope = match row.scope.as_str() {
                "session" => SalesScope::Session,
                "deal" => SalesScope::Deal(row.key),
                "window" => SalesScope::Window(row.key),
                _ => return None,
            };
            Some(SalesRow {
                scope,
                currency: row.currency,
                orders: row.orders,
                units: row.units,
                buyers: row.buyers,
                gross_minor: row.gross,
                refunds_minor: row.refunds,
            })
        })
        .collect())
}

/// Everyone who placed a (not cancelled) order in the session.
pub async fn session_buyers(db: &PgPool, session_id: Uuid) -> Result<Vec<String>> {
    Ok(sqlx::query_scalar(
        "select distinct buyer_id from customer_order where session_id = $1 and status <> 'cancelled'",
    )
    .bind(session_id)
    .fetch_all(db)
    .await?)
}

/// True if `buyer_id` bought in the session: an order that is not cancelled,
/// from a deal or an auction (winning a giveaway is not buying). Read by
/// the buyer index (`buyer_id` leads `customer_order_idempotency`).
pub async fn bought_in_session(db: &PgPool, session_id: Uuid, buyer_id: &str) -> Result<bool> {
    Ok(sqlx::query_scalar(
        "select exists(select 1 from customer_order
                        where buyer_id = $2 and session_id = $1 and status <> 'cancelled' and source <> 'giveaway')",
    )
    .bind(session_id)
    .bind(buyer_id)
    .fetch_one(db)
    .await?)
}

/// True if the brand's products are in the session's lineup.
pub async fn brand_sells_in(db: &PgPool, session_id: Uuid, brand_id: Uuid) -> Result<bool> {
    Ok(sqlx::query_scalar(
        "select exists(select 1 from lineup_item l join sku s using (sku_id) join product p using (product_id)
                        where l.session_id = $1 and p.brand_id = $2)",
    )
    .bind(session_id)
    .bind(brand_id)
    .fetch_one(db)
    .await?)
}

// ------------------------------------------------------ sales facts, in time order
//
// For the commission ledger's accrual worker, which reads them page by page:
// each function returns its rows in (time, id) order, strictly after `after`
// (from the first if `None`) and, with `before`, stamped earlier than that.
// Times are stamped with `now()` — the start of the writing transaction — so a
// row can become visible after rows stamped later than it; a reader that
// resumes after the last row it saw must look again a while behind it.

/// A paid order (refunded since or not), as the ledger accrues its sale.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct PaidOrder {
    pub order_id: Uuid,
    pub session_id: Uuid,
    /// The host on shift when it was placed (attributed at purchase).
    pub host_id: Option<Uuid>,
    /// What was paid: after coupon discounts, before refunds.
    pub amount_minor: i64,
    pub currency: String,
    /// When it was placed.
    pub created_at: DateTime<Utc>,
    pub paid_at: DateTime<Utc>,
}

const PAID_ORDER_COLUMNS: &str = "o.order_id, o.session_id, o.host_id, o.amount_minor,
    o.currency::text as currency, o.created_at, o.paid_at";

/// Paid orders in (`paid_at`, `order_id`) order; see the note above.
pub async fn paid_orders<'e>(
    db: impl PgExecutor<'e>,
    after: Option<(DateTime<Utc>, Uuid)>,
    before: Option<DateTime<Utc>>,
    limit: i64,
) -> Result<Vec<PaidOrder>> {
    Ok(sqlx::query_as(&format!(
        "select {PAID_ORDER_COLUMNS}
           from customer_order o
          where o.paid_at is not null and o.status in ('paid', 'partially_refunded', 'refunded')
            and o.paid_at >= coalesce($1, '-infinity'::timestamptz)
            and (o.paid_at, o.order_id) > (coalesce($1, '-infinity'::timestamptz), coalesce($2, '{NIL}'::uuid))
            and o.paid_at < coalesce($3, 'infinity'::timestamptz)
          order by o.paid_at, o.order_id
          limit $4"
    ))
    .bind(after.map(|a| a.0))
    .bind(after.map(|a| a.1))
    .bind(before)
    .bind(limit)
    .fetch_all(db)
    .await?)
}

/// Those of `order_ids` that are paid (refunded since or not), in no particular order.
pub async fn paid_orders_by_id<'e>(db: impl PgExecutor<'e>, order_ids: &[Uuid]) -> Result<Vec<PaidOrder>> {
    Ok(sqlx::query_as(&format!(
        "select {PAID_ORDER_COLUMNS}
           from customer_order o
          where o.order_id = any($1)
            and o.paid_at is not null and o.status in ('paid', 'partially_refunded', 'refunded')"
    ))
    .bind(order_ids)
    .fetch_all(db)
    .await?)
}

/// A refund or return, with what the ledger needs of its order.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct RefundFact {
    pub refund_id: Uuid,
    pub order_id: Uuid,
    /// `refund` or `return`.
    pub kind: String,
    pub amount_minor: i64,
    pub created_at: DateTime<Utc>,
    /// The order's paid amount.
    pub order_amount_minor: i64,
    /// What the order's refunds before this one, in (`created_at`, `refund_id`) order, add up to.
    pub refunded_before_minor: i64,
    pub currency: String,
    pub host_id: Option<Uuid>,
    pub session_id: Uuid,
}

/// Refunds and returns in (`created_at`, `refund_id`) order; see the note above.
pub async fn refunds<'e>(
    db: impl PgExecutor<'e>,
    after: Option<(DateTime<Utc>, Uuid)>,
    before: Option<DateTime<Utc>>,
    limit: i64,
) -> Result<Vec<RefundFact>> {
    Ok(sqlx::query_as(&format!(
        "select r.refund_id, r.order_id, r.kind, r.amount_minor, r.created_at,
                o.amount_minor as order_amount_minor,
                (select coalesce(sum(x.amount_minor), 0)::bigint from refund x
                  where x.order_id = r.order_id and (x.created_at, x.refund_id) < (r.created_at, r.refund_id))
                    as refunded_before_minor,
                o.currency::text as currency, o.host_id, o.session_id
           from refund r join customer_order o using (order_id)
          where r.created_at >= coalesce($1, '-infinity'::timestamptz)
            and (r.created_at, r.refund_id) > (coalesce($1, '-infinity'::timestamptz), coalesce($2, '{NIL}'::uuid))
            and r.created_at < coalesce($3, 'infinity'::timestamptz)
          order by r.created_at, r.refund_id
          limit $4"
    ))
    .bind(after.map(|a| a.0))
    .bind(after.map(|a| a.1))
    .bind(before)
    .bind(limit)
    .fetch_all(db)
    .await?)
}

/// The nil UUID, below every id: a `None` position reads from the first row.
const NIL: &str = "00000000-0000-0000-0000-000000000000";
