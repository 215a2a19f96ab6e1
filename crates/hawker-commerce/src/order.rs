//! The order, on its own: its type, its columns and how to read one back.
//!
//! The purchase path writes orders ([`crate::purchase`]); payments, expiry and
//! the HTTP layer read them. Keeping the type here means none of them has to
//! import another's internals.

use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

use crate::Commerce;
use hawker_core::error::{Error, Result};

/// An order, as stored and as returned.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Order {
    pub order_id: Uuid,
    pub deal_id: Uuid,
    pub session_id: Uuid,
    pub lineup_item_id: Uuid,
    pub sku_id: Uuid,
    pub buyer_id: String,
    pub quantity: i32,
    pub unit_price_minor: i64,
    pub discount_minor: i64,
    pub amount_minor: i64,
    pub currency: String,
    pub coupon_claim_id: Option<Uuid>,
    /// `pending_payment`, `paid`, `cancelled`, `refund_due`, `refunded`, `partially_refunded`.
    pub status: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub paid_at: Option<DateTime<Utc>>,
    pub cancelled_at: Option<DateTime<Utc>>,
    /// The host on shift when the order was placed.
    pub host_id: Option<Uuid>,
}

/// The `customer_order` columns that make an [`Order`], for `select`/`returning`.
pub const ORDER_COLUMNS: &str = "order_id, deal_id, session_id, lineup_item_id, sku_id, buyer_id, quantity, \
    unit_price_minor, discount_minor, amount_minor, currency, coupon_claim_id, status, created_at, expires_at, \
    paid_at, cancelled_at, host_id";

/// The order a buyer placed with an idempotency key, if any.
pub(crate) async fn find_by_key(c: &Commerce, buyer: &str, idempotency_key: &str) -> Result<Option<Order>> {
    Ok(sqlx::query_as::<_, Order>(&format!(
        "select {ORDER_COLUMNS} from customer_order where buyer_id = $1 and idempotency_key = $2"
    ))
    .bind(buyer)
    .bind(idempotency_key)
    .fetch_optional(c.db())
    .await?)
}

/// The hash of the request that created an order, to tell a retry from a reused key.
pub(crate) async fn request_hash_of(c: &Commerce, order_id: Uuid) -> Result<Option<String>> {
    Ok(
        sqlx::query_scalar("select request_hash from customer_order where order_id = $1")
            .bind(order_id)
            .fetch_optional(c.db())
            .await?,
    )
}

/// One order; buyers see their own, hosts and agencies their session's, admins all.
pub async fn get_order(c: &Commerce, claims: &hawker_core::Claims, order_id: Uuid) -> Result<Order> {
    let order = sqlx::query_as::<_, Order>(&format!(
        "select {ORDER_COLUMNS} from customer_order where order_id = $1"
    ))
    .bind(order_id)
    .fetch_optional(c.db())
    .await?
    .ok_or(Error::NotFound("order"))?;
    if order.buyer_id == claims.sub || claims.is_admin() {
        return Ok(order);
    }
    let access = crate::access::session_access(c.db(), claims, order.session_id).await?;
    if access.can_host {
        Ok(order)
    } else {
        // Someone else's order: do not reveal that it exists.
        Err(Error::NotFound("order"))
    }
}
