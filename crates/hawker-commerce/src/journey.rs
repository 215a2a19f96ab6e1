//! The buyer's journey, as the buyer sees it: their orders (a page at a
//! time, or one with its events), cancelling a pending order, their
//! coupons, and everything they hold in one session. Every function here is
//! scoped to the caller's own `sub`: another buyer's order is "not found".

use chrono::{DateTime, Utc};
use hawker_agency::page::{self, PageQuery};
use hawker_core::Claims;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::order::Order;
use crate::profile::ShippingAddress;
use crate::units::{self, OrderUnits, ORDER_UNITS_COLUMNS};
use crate::Commerce;
use hawker_core::error::{Error, Result};

/// The statuses an order can have, as the `status` filter accepts them.
pub const ORDER_STATUSES: [&str; 6] = [
    "pending_payment",
    "paid",
    "cancelled",
    "refund_due",
    "refunded",
    "partially_refunded",
];

/// Most orders one session's view lists for a buyer.
pub const SESSION_VIEW_MAX_ORDERS: i64 = 500;

/// An order with what the buyer needs beside it: the product, fulfilment and return.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct OrderView {
    #[serde(flatten)]
    #[sqlx(flatten)]
    pub order: Order,
    pub product_name: String,
    pub sku_name: String,
    /// `unfulfilled`, `shipped` or `delivered`.
    pub fulfilment: String,
    /// The buyer's address when the order was placed (null if they had none).
    #[schema(value_type = Option<ShippingAddress>)]
    pub shipping_address: Option<sqlx::types::Json<ShippingAddress>>,
    pub carrier: Option<String>,
    pub tracking_number: Option<String>,
    pub shipped_at: Option<DateTime<Utc>>,
    pub delivered_at: Option<DateTime<Utc>>,
    /// `requested`, `approved` or `refused`; null if no return was asked for.
    pub return_status: Option<String>,
}

const VIEW_SELECT: &str =
    "select o.order_id, o.source, o.deal_id, o.auction_id, o.giveaway_id, o.group_buy_id, o.session_id, o.lineup_item_id,
        o.sku_id, o.buyer_id, o.quantity, o.unit_price_minor, o.discount_minor, o.amount_minor, o.currency, o.coupon_claim_id,
        o.status, o.created_at, o.expires_at, o.paid_at, o.cancelled_at, o.host_id,
        p.name as product_name, k.name as sku_name, o.fulfilment, o.shipping_address, o.carrier,
        o.tracking_number, o.shipped_at, o.delivered_at, r.status as return_status
   from customer_order o
   join sku k on k.sku_id = o.sku_id
   join product p on p.product_id = k.product_id
   left join order_return r on r.order_id = o.order_id";

/// One step in an order's life.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct OrderEvent {
    /// `created`, `paid`, `paid_after_expiry`, `expired`, `cancelled`,
    /// `refunded`, `shipped`, `delivered`, `return_requested`,
    /// `return_approved` or `return_refused`.
    pub kind: String,
    /// The order's status before, if it changed (null on `created`).
    pub from_status: Option<String>,
    /// The order's status after.
    pub to_status: String,
    /// What the step carried (payment, refund, carrier and tracking, reason...).
    #[schema(value_type = Object)]
    pub detail: Value,
    pub at: DateTime<Utc>,
}

/// The return of an order.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct OrderReturn {
    pub reason: String,
    /// `requested`, `approved` or `refused`.
    pub status: String,
    pub requested_at: DateTime<Utc>,
    pub decided_at: Option<DateTime<Utc>>,
    /// The brand's note with its decision ("" if none).
    pub note: String,
    /// The refund an approval made.
    pub refund_id: Option<Uuid>,
}

/// One order with its whole history.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct OrderDetail {
    #[serde(flatten)]
    pub order: OrderView,
    #[serde(rename = "return")]
    pub order_return: Option<OrderReturn>,
    /// Oldest first.
    pub events: Vec<OrderEvent>,
}

/// A page of the caller's orders, newest first.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct OrderPage {
    pub items: Vec<OrderView>,
    /// Pass as `cursor` for the next page; null on the last page.
    pub next_cursor: Option<String>,
}

/// `?session_id=&status=` of `GET /v1/me/orders`.
#[derive(Debug, Clone, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct OrderFilter {
    /// Only the orders of this session.
    #[param(value_type = Option<String>, format = Uuid)]
    pub session_id: Option<String>,
    /// Only orders with this status.
    #[param(value_type = Option<String>, pattern = "^(pending_payment|paid|cancelled|refund_due|refunded|partially_refunded)$")]
    pub status: Option<String>,
}

impl OrderFilter {
    fn parse(&self) -> Result<(Option<Uuid>, Option<&'static str>)> {
        let session = self
            .session_id
            .as_deref()
            .map(|s| {
                s.trim()
                    .parse::<Uuid>()
                    .map_err(|_| Error::invalid("bad_session_id", "session_id must be a UUID"))
            })
            .transpose()?;
        let status = self
            .status
            .as_deref()
            .map(|s| {
                ORDER_STATUSES.iter().copied().find(|k| *k == s).ok_or_else(|| {
                    Error::invalid(
                        "bad_status",
                        format!("status must be one of {}", ORDER_STATUSES.join(", ")),
                    )
                })
            })
            .transpose()?;
        Ok((session, status))
    }
}

/// The caller's orders, newest first, a page at a time.
#[tracing::instrument(skip_all, fields(caller = %claims.sub))]
pub async fn my_orders(
    c: &Commerce,
    claims: &Claims,
    filter: &OrderFilter,
    page: &PageQuery,
) -> Result<OrderPage> {
    let (session, status) = filter.parse()?;
    let limit = page.limit()?;
    let after = page.after_time_id()?;
    let rows = sqlx::query_as::<_, OrderView>(&format!(
        "{VIEW_SELECT}
          where o.buyer_id = $1
            and ($2::uuid is null or o.session_id = $2)
            and ($3::text is null or o.status = $3)
            and ($4::timestamptz is null or (o.created_at, o.order_id) < ($4, $5))
          order by o.created_at desc, o.order_id desc
          limit $6"
    ))
    .bind(&claims.sub)
    .bind(session)
    .bind(status)
    .bind(after.map(|a| a.0))
    .bind(after.map(|a| a.1))
    .bind(limit + 1)
    .fetch_all(c.db())
    .await?;
    let (items, next_cursor) = page::split(rows, limit, |o| {
        page::time_id(o.order.created_at, o.order.order_id)
    });
    Ok(OrderPage { items, next_cursor })
}

/// One order of the caller's with its events and return (others' orders are not found).
pub async fn my_order(c: &Commerce, claims: &Claims, order_id: Uuid) -> Result<OrderDetail> {
    let order = sqlx::query_as::<_, OrderView>(&format!(
        "{VIEW_SELECT} where o.order_id = $1 and o.buyer_id = $2"
    ))
    .bind(order_id)
    .bind(&claims.sub)
    .fetch_optional(c.db())
    .await?
    .ok_or(Error::NotFound("order"))?;
    detail_of(c, order).await
}

/// An order's return and events beside it.
pub(crate) async fn detail_of(c: &Commerce, order: OrderView) -> Result<OrderDetail> {
    let order_id = order.order.order_id;
    let order_return = sqlx::query_as::<_, OrderReturn>(
        "select reason, status, requested_at, decided_at, note, refund_id from order_return where order_id = $1",
    )
    .bind(order_id)
    .fetch_optional(c.db())
    .await?;
    let events = sqlx::query_as::<_, OrderEvent>(
        "select coalesce(kind, case to_status
                    when 'pending_payment' then 'created'
                    when 'paid' then 'paid'
                    when 'refund_due' then 'paid_after_expiry'
                    when 'refunded' then 'refunded'
                    when 'partially_refunded' then 'refunded'
                    when 'cancelled' then case when detail->>'reason' = 'payment_expired'
                                               then 'expired' else 'cancelled' end
                    else to_status end) as kind,
                from_status, to_status, detail, at, order_event_id
           from order_event where order_id = $1
         union all
         -- A deal order's row is its own creation record (no event is
         -- written when the settlement creates it).
         select 'created', null, 'pending_payment', '{\"by\": \"settlement\"}'::jsonb, o.created_at, 0
           from customer_order o
          where o.order_id = $1
            and not exists (select 1 from order_event e where e.order_id = o.order_id and e.from_status is null)
          order by order_event_id",
    )
    .bind(order_id)
    .fetch_all(c.db())
    .await?;
    Ok(OrderDetail {
        order,
        order_return,
        events,
    })
}

/// An order of the caller's, viewed (after a change).
pub(crate) async fn view(c: &Commerce, order_id: Uuid) -> Result<OrderView> {
    sqlx::query_as::<_, OrderView>(&format!("{VIEW_SELECT} where o.order_id = $1"))
        .bind(order_id)
        .fetch_optional(c.db())
        .await?
        .ok_or(Error::NotFound("order"))
}

/// The buyer cancels their own pending order: it is `cancelled` and its units
/// go back at once, exactly as when it expires (the deal and the gate while
/// the deal runs, with a `deal.stock` figure in the room; the SKU after it
/// ended, or at once for an auction's order).
#[tracing::instrument(skip_all, fields(%order_id, caller = %claims.sub))]
pub async fn cancel_order(c: &Commerce, claims: &Claims, order_id: Uuid) -> Result<OrderDetail> {
    let mut tx = c.db().begin().await?;
    #[derive(sqlx::FromRow)]
    struct Locked {
        status: String,
        #[sqlx(flatten)]
        units: OrderUnits,
    }
    let row: Option<Locked> = sqlx::query_as(&format!(
        "select status, {ORDER_UNITS_COLUMNS} from customer_order where order_id = $1 for update"
    ))
    .bind(order_id)
    .fetch_optional(&mut *tx)
    .await?;
    let Locked { status, units: order } = match row {
        Some(r) if r.units.buyer_id == claims.sub => r,
        // Someone else's order: do not reveal that it exists.
        _ => return Err(Error::NotFound("order")),
    };
    if status != "pending_payment" {
        return Err(Error::conflict(
            "order_not_pending",
            format!("only an order waiting for payment can be cancelled; this one is {status}"),
        ));
    }
    sqlx::query("update customer_order set status = 'cancelled', cancelled_at = now() where order_id = $1")
        .bind(order_id)
        .execute(&mut *tx)
        .await?;
    sqlx::query(
        "insert into order_event (order_id, from_status, to_status, detail, kind)
         values ($1, 'pending_payment', 'cancelled', $2, 'cancelled')",
    )
    .bind(order_id)
    .bind(json!({ "reason": "cancelled_by_buyer", "units_returned": true, "by": claims.sub }))
    .execute(&mut *tx)
    .await?;
    let back = units::give_back(&mut tx, &[order], "cancelled_by_buyer").await?;
    tx.commit().await?;
    metrics::counter!("hawker_orders_cancelled_total").increment(1);
    back.announce(c).await;
    my_order(c, claims, order_id).await
}

/// A coupon the caller claimed, with its drop's terms.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct MyCoupon {
    /// Pass this as `coupon_claim_id` when buying.
    pub coupon_claim_id: Uuid,
    pub coupon_drop_id: Uuid,
    pub session_id: Uuid,
    /// `percent` or `fixed`.
    pub discount_kind: String,
    /// Percent (1 to 100) or minor units of `currency`.
    pub discount_value: i64,
    pub currency: Option<String>,
    pub min_spend_minor: i64,
    /// The drop's deal or lineup item, if it is limited to one.
    pub deal_id: Option<Uuid>,
    pub lineup_item_id: Option<Uuid>,
    pub claimed_at: DateTime<Utc>,
    /// Set when an order used it.
    pub used_at: Option<DateTime<Utc>>,
}

/// A page of the caller's coupons, newest claim first.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct CouponPage {
    pub items: Vec<MyCoupon>,
    /// Pass as `cursor` for the next page; null on the last page.
    pub next_cursor: Option<String>,
}

const COUPON_SELECT: &str = "select c.coupon_claim_id, c.coupon_drop_id, d.session_id, d.discount_kind,
        d.discount_value, d.currency, d.min_spend_minor, d.deal_id, d.lineup_item_id, c.claimed_at, c.used_at
   from coupon_claim c join coupon_drop d on d.coupon_drop_id = c.coupon_drop_id";

/// The caller's claimed coupons, newest first, a page at a time.
pub async fn my_coupons(c: &Commerce, claims: &Claims, page: &PageQuery) -> Result<CouponPage> {
    let limit = page.limit()?;
    let after = page.after_time_id()?;
    let rows = sqlx::query_as::<_, MyCoupon>(&format!(
        "{COUPON_SELECT}
          where c.viewer_id = $1
            and ($2::timestamptz is null or (c.claimed_at, c.coupon_claim_id) < ($2, $3))
          order by c.claimed_at desc, c.coupon_claim_id desc
          limit $4"
    ))
    .bind(&claims.sub)
    .bind(after.map(|a| a.0))
    .bind(after.map(|a| a.1))
    .bind(limit + 1)
    .fetch_all(c.db())
    .await?;
    let (items, next_cursor) = page::split(rows, limit, |k| page::time_id(k.claimed_at, k.coupon_claim_id));
    Ok(CouponPage { items, next_cursor })
}

/// Everything the caller holds in one session.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct SessionHoldings {
    pub session_id: Uuid,
    /// The caller's orders in the session, newest first (at most 500).
    pub orders: Vec<OrderView>,
    /// The coupons the caller claimed in the session, newest first.
    pub coupons: Vec<MyCoupon>,
}

/// The caller's orders and coupons in one session (an unknown session is a 404).
pub async fn my_session(c: &Commerce, claims: &Claims, session_id: Uuid) -> Result<SessionHoldings> {
    hawker_agency::access::load_session(c.db(), session_id).await?;
    let orders = sqlx::query_as::<_, OrderView>(&format!(
        "{VIEW_SELECT} where o.buyer_id = $1 and o.session_id = $2
          order by o.created_at desc, o.order_id desc limit $3"
    ))
    .bind(&claims.sub)
    .bind(session_id)
    .bind(SESSION_VIEW_MAX_ORDERS)
    .fetch_all(c.db())
    .await?;
    let coupons = sqlx::query_as::<_, MyCoupon>(&format!(
        "{COUPON_SELECT} where c.viewer_id = $1 and d.session_id = $2
          order by c.claimed_at desc, c.coupon_claim_id desc"
    ))
    .bind(&claims.sub)
    .bind(session_id)
    .fetch_all(c.db())
    .await?;
    Ok(SessionHoldings {
        session_id,
        orders,
        coupons,
    })
}
