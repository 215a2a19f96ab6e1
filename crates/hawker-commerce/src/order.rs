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

/// What an order came from; the order names that source's id and no other.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, sqlx::Type, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum Source {
    /// A flash deal (`deal_id`).
    Deal,
    /// An auction's winner, at the hammer price (`auction_id`).
    Auction,
    /// A giveaway's winner, at no charge (`giveaway_id`).
    Giveaway,
    /// A group buy's participant, at the final tier's price (`group_buy_id`).
    GroupBuy,
}

/// An order, as stored and as returned.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Order {
    pub order_id: Uuid,
    /// Where the order came from; exactly that source's id is set.
    pub source: Source,
    /// The deal of a `deal` order; null otherwise.
    pub deal_id: Option<Uuid>,
    /// The auction of an `auction` order; null otherwise.
    pub auction_id: Option<Uuid>,
    /// The giveaway of a `giveaway` order; null otherwise.
    pub giveaway_id: Option<Uuid>,
    /// The group buy of a `group_buy` order; null otherwise.
    pub group_buy_id: Option<Uuid>,
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
    // Written by `wire`: an order is serialised for every purchase.
    #[serde(serialize_with = "hawker_core::wire::time")]
    pub created_at: DateTime<Utc>,
    #[serde(serialize_with = "hawker_core::wire::time")]
    pub expires_at: DateTime<Utc>,
    #[serde(serialize_with = "hawker_core::wire::option_time")]
    pub paid_at: Option<DateTime<Utc>>,
    #[serde(serialize_with = "hawker_core::wire::option_time")]
    pub cancelled_at: Option<DateTime<Utc>>,
    /// The host on shift when the order was placed.
    pub host_id: Option<Uuid>,
}

impl Order {
    /// The deal, auction, giveaway or group buy whose units the order holds.
    pub fn unit_source(&self) -> Option<hawker_catalog::campaign_skus::UnitSource> {
        unit_source(
            self.source,
            [self.deal_id, self.auction_id, self.giveaway_id, self.group_buy_id],
        )
    }
}

/// The catalog's name for an order's source, from its columns.
pub(crate) fn unit_source(
    source: Source,
    [deal_id, auction_id, giveaway_id, group_buy_id]: [Option<Uuid>; 4],
) -> Option<hawker_catalog::campaign_skus::UnitSource> {
    use hawker_catalog::campaign_skus::UnitSource;
    match source {
        Source::Deal => deal_id.map(UnitSource::Deal),
        Source::Auction => auction_id.map(UnitSource::Auction),
        Source::Giveaway => giveaway_id.map(UnitSource::Giveaway),
        Source::GroupBuy => group_buy_id.map(UnitSource::GroupBuy),
    }
}

/// The `customer_order` columns that make an [`Order`], for `select`/`returning`.
pub const ORDER_COLUMNS: &str = "order_id, source, deal_id, auction_id, giveaway_id, group_buy_id, session_id, lineup_item_id, sku_id, buyer_id, quantity, \
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

/// One order, to those who may know it exists ([`may_see`]); anyone else
/// is told there is no such order.
pub async fn get_order(c: &Commerce, claims: &hawker_core::Claims, order_id: Uuid) -> Result<Order> {
    let order = sqlx::query_as::<_, Order>(&format!(
        "select {ORDER_COLUMNS} from customer_order where order_id = $1"
    ))
    .bind(order_id)
    .fetch_optional(c.db())
    .await?
    .ok_or(Error::NotFound("order"))?;
    if may_see(c, claims, order_id, &order.buyer_id, order.session_id).await? {
        Ok(order)
    } else {
        Err(Error::NotFound("order"))
    }
}

/// Who may know that an order exists: its buyer, admins, whoever may host
/// its session (its agency, hosts on that agency's roster now) and the brand
/// of its product. Every route that names an order answers anyone else 404,
/// as if it did not exist; one that they may see but not act on, 403.
pub(crate) async fn may_see(
    c: &Commerce,
    claims: &hawker_core::Claims,
    order_id: Uuid,
    buyer_id: &str,
    session_id: Uuid,
) -> Result<bool> {
    if buyer_id == claims.sub || claims.is_admin() {
        return Ok(true);
    }
    if let Some(brand) = hawker_agency::access::brand_of(claims) {
        let owner: Option<Uuid> = sqlx::query_scalar(
            "select p.brand_id from customer_order o
               join sku k on k.sku_id = o.sku_id
               join product p on p.product_id = k.product_id
              where o.order_id = $1",
        )
        .bind(order_id)
        .fetch_optional(c.db())
        .await?;
        return Ok(owner == Some(brand));
    }
    Ok(crate::access::session_access(c.db(), claims, session_id)
        .await?
        .can_host)
}
