//! Orders that do not come from a flash deal: an auction's winner at the
//! hammer price, a giveaway's winner at no charge, a group buy's participant
//! at the final tier's price. The live formats
//! (`hawker-live`) create them here, one at a time, in their own
//! transaction (the one that records the auction's end or the draw); deals
//! keep their batched path ([`crate::purchase`]).
//!
//! Such an order is an ordinary [`Order`] from then on: it is paid through
//! the same webhook, expires or is cancelled by its buyer the same way
//! (its unit goes back to the SKU, [`crate::units`]), and attribution to the
//! host on air, commissions and figures treat it like a deal's order. The
//! units themselves were taken from the SKU by the auction or giveaway when
//! it started (`hawker_catalog::campaign_skus::take_units`); the order only
//! holds one of them.

use serde_json::json;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::order::{Order, Source, ORDER_COLUMNS};
use crate::purchase::validate_idempotency_key;
use crate::Commerce;
use hawker_core::error::{Error, Result};

/// Where a sourced order comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OrderSource {
    /// The auction the buyer won (or was offered a second chance in).
    Auction(Uuid),
    /// The giveaway the buyer won.
    Giveaway(Uuid),
    /// The group buy the buyer joined (it succeeded).
    GroupBuy(Uuid),
}

impl OrderSource {
    fn source(self) -> Source {
        match self {
            OrderSource::Auction(_) => Source::Auction,
            OrderSource::Giveaway(_) => Source::Giveaway,
            OrderSource::GroupBuy(_) => Source::GroupBuy,
        }
    }

    fn id(self) -> Uuid {
        match self {
            OrderSource::Auction(id) | OrderSource::Giveaway(id) | OrderSource::GroupBuy(id) => id,
        }
    }

    fn name(self) -> &'static str {
        match self {
            OrderSource::Auction(_) => "auction",
            OrderSource::Giveaway(_) => "giveaway",
            OrderSource::GroupBuy(_) => "group_buy",
        }
    }
}

/// One order for a buyer, from an auction or a giveaway (quantity 1) or a
/// group buy (the participant's units).
#[derive(Debug, Clone)]
pub struct SourcedOrder<'a> {
    pub source: OrderSource,
    pub session_id: Uuid,
    /// The lineup item of the session the unit was offered under.
    pub lineup_item_id: Uuid,
    /// The lineup item's SKU.
    pub sku_id: Uuid,
    pub buyer_id: &'a str,
    /// 1 for an auction or a giveaway; 1 to 100 for a group buy.
    pub quantity: i32,
    /// Minor units of `currency`: above zero for an auction, zero for a giveaway.
    pub unit_price_minor: i64,
    pub currency: &'a str,
    /// Unique per buyer, e.g. `auction:<id>:win`; creating again with the
    /// same key returns the order already created.
    pub idempotency_key: String,
}

/// What tells a retry (same key, same order) from a key reused for another.
fn request_hash(o: &SourcedOrder<'_>) -> String {
    format!(
        "{}:{}:{}:{}:{}:{}",
        o.source.name(),
        o.source.id(),
        o.lineup_item_id,
        o.quantity,
        o.unit_price_minor,
        o.currency
    )
}

fn check(o: &SourcedOrder<'_>, max_price_minor: i64) -> Result<()> {
    validate_idempotency_key(&o.idempotency_key)?;
    match o.source {
        OrderSource::Auction(_) if !(1..=max_price_minor).contains(&o.unit_price_minor) => {
            return Err(Error::invalid(
                "bad_price",
                format!(
                    "an auction's order costs 1 to {max_price_minor} minor units (commerce.max_price_minor)"
                ),
            ));
        }
        OrderSource::GroupBuy(_) if !(1..=max_price_minor).contains(&o.unit_price_minor) => {
            return Err(Error::invalid(
                "bad_price",
                format!(
                    "a group buy's unit costs 1 to {max_price_minor} minor units (commerce.max_price_minor)"
                ),
            ));
        }
        OrderSource::Giveaway(_) if o.unit_price_minor != 0 => {
            return Err(Error::invalid("bad_price", "a giveaway's order costs nothing"));
        }
        _ => {}
    }
    let max_quantity = match o.source {
        OrderSource::GroupBuy(_) => crate::purchase::MAX_QUANTITY,
        _ => 1,
    };
    if !(1..=max_quantity).contains(&o.quantity) {
        return Err(Error::invalid(
            "bad_quantity",
            format!("this order's quantity is 1 to {max_quantity}"),
        ));
    }
    if o.currency.len() != 3 || !o.currency.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(Error::invalid(
            "bad_currency",
            "currency must be 3 capital letters",
        ));
    }
    if o.buyer_id.is_empty() || o.buyer_id.len() > 200 {
        return Err(Error::invalid("bad_buyer", "buyer_id must be 1 to 200 bytes"));
    }
    Ok(())
}

#[derive(sqlx::FromRow)]
struct Existing {
    #[sqlx(flatten)]
    order: Order,
    request_hash: String,
}

async fn existing(tx: &mut PgConnection, o: &SourcedOrder<'_>) -> Result<Option<Order>> {
    let row: Option<Existing> = sqlx::query_as(&format!(
        "select {ORDER_COLUMNS}, request_hash from customer_order where buyer_id = $1 and idempotency_key = $2"
    ))
    .bind(o.buyer_id)
    .bind(&o.idempotency_key)
    .fetch_optional(&mut *tx)
    .await?;
    match row {
        Some(row) if row.request_hash == request_hash(o) => Ok(Some(row.order)),
        Some(_) => Err(Error::conflict(
            "idempotency_key_reused",
            "the buyer already has an order with this key, for something else",
        )),
        None => Ok(None),
    }
}

/// In the caller's transaction: inserts one order, attributed
/// to the host on air in the session now (as deal orders are,
/// `hawker_agency::schedule::hosts_on_air`), expiring after the payment
/// window (`commerce.order_ttl_secs`). A giveaway's order (price 0) is
/// created `paid`, with `paid_at` now. A repeated idempotency key for the
/// same buyer and the same source returns the existing order (no second
/// row); the same key for something else is refused
/// (`idempotency_key_reused`). The lineup item must be the session's and
/// sell the SKU.
#[tracing::instrument(skip_all, fields(source = o.source.name(), source_id = %o.source.id(), buyer = o.buyer_id), err)]
pub async fn create_order(c: &Commerce, tx: &mut PgConnection, o: SourcedOrder<'_>) -> Result<Order> {
    check(&o, c.config().max_price_minor)?;
    if let Some(order) = existing(tx, &o).await? {
        return Ok(order);
    }
    let item_matches: bool = sqlx::query_scalar(
        "select exists(select 1 from lineup_item where lineup_item_id = $1 and session_id = $2 and sku_id = $3)",
    )
    .bind(o.lineup_item_id)
    .bind(o.session_id)
    .bind(o.sku_id)
    .fetch_one(&mut *tx)
    .await?;
    if !item_matches {
        return Err(Error::NotFound("lineup item"));
    }
    let on_air = hawker_agency::schedule::hosts_on_air(&mut *tx, &[o.session_id]).await?;
    let host_id = on_air.get(&o.session_id).copied().flatten();
    let (auction_id, giveaway_id, group_buy_id) = match o.source {
        OrderSource::Auction(id) => (Some(id), None, None),
        OrderSource::Giveaway(id) => (None, Some(id), None),
        OrderSource::GroupBuy(id) => (None, None, Some(id)),
    };
    let amount = o
        .unit_price_minor
        .checked_mul(i64::from(o.quantity))
        .ok_or_else(|| Error::invalid("bad_quantity", "the order's amount does not fit"))?;
    let free = matches!(o.source, OrderSource::Giveaway(_));
    let ttl_secs = i64::try_from(c.config().order_ttl_secs).unwrap_or(i64::MAX);
    let inserted: Option<Order> = sqlx::query_as(&format!(
        "insert into customer_order (order_id, source, auction_id, giveaway_id, group_buy_id, session_id,
                lineup_item_id, sku_id, buyer_id, quantity, unit_price_minor, discount_minor, amount_minor,
                currency, status, idempotency_key, request_hash, expires_at, paid_at, host_id, shipping_address)
         values ($1, $2, $3, $4, $16, $5, $6, $7, $8, $17, $9, 0, $18, $10,
                 case when $11 then 'paid' else 'pending_payment' end, $12, $13,
                 now() + make_interval(secs => $14), case when $11 then now() end, $15,
                 (select p.shipping_address from viewer_profile p where p.viewer_id = $8))
         on conflict on constraint customer_order_idempotency do nothing
         returning {ORDER_COLUMNS}"
    ))
    .bind(Uuid::now_v7())
    .bind(o.source.source())
    .bind(auction_id)
    .bind(giveaway_id)
    .bind(o.session_id)
    .bind(o.lineup_item_id)
    .bind(o.sku_id)
    .bind(o.buyer_id)
    .bind(o.unit_price_minor)
    .bind(o.currency)
    .bind(free)
    .bind(&o.idempotency_key)
    .bind(request_hash(&o))
    .bind(ttl_secs as f64)
    .bind(host_id)
    .bind(group_buy_id)
    .bind(o.quantity)
    .bind(amount)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(order) = inserted else {
        // Another transaction inserted the same (buyer, key) and committed
        // while this one waited on it.
        return existing(tx, &o).await?.ok_or(Error::Unavailable {
            what: "the order (retry with the same key)",
        });
    };
    // A giveaway's order is created paid: one event says both.
    sqlx::query(
        "insert into order_event (order_id, to_status, detail, kind)
         values ($1, $2, $3, case when $4 then 'created' end)",
    )
    .bind(order.order_id)
    .bind(&order.status)
    .bind(json!({ "by": o.source.name(), format!("{}_id", o.source.name()): o.source.id() }))
    .bind(free)
    .execute(&mut *tx)
    .await?;
    metrics::counter!("hawker_sourced_orders_total", "source" => o.source.name()).increment(1);
    Ok(order)
}

/// A group buy's settlement: one order per participant.
#[derive(Debug, Clone)]
pub struct GroupBuyOrders<'a> {
    pub group_buy_id: Uuid,
    pub session_id: Uuid,
    pub lineup_item_id: Uuid,
    pub sku_id: Uuid,
    /// The final tier's unit price, minor units of `currency`.
    pub unit_price_minor: i64,
    pub currency: &'a str,
    /// (buyer, units), one per participant.
    pub participants: &'a [(String, i32)],
}

/// In the caller's transaction: one `pending_payment` order per participant
/// of a group buy that succeeded, all at the final tier's price, attributed
/// to the host on air now, with the idempotency key `group_buy:<id>` (so a
/// settlement run twice creates no second order). Inserted in one
/// statement; returns (buyer, order id) of every participant's order.
pub async fn create_group_buy_orders(
    c: &Commerce,
    tx: &mut PgConnection,
    g: GroupBuyOrders<'_>,
) -> Result<Vec<(String, Uuid)>> {
    let max = c.config().max_price_minor;
    if !(1..=max).contains(&g.unit_price_minor) {
        return Err(Error::invalid(
            "bad_price",
            format!("a group buy's unit costs 1 to {max} minor units (commerce.max_price_minor)"),
        ));
    }
    let key = format!("group_buy:{}", g.group_buy_id);
    let mut ids = Vec::with_capacity(g.participants.len());
    let mut buyers = Vec::with_capacity(g.participants.len());
    let mut quantities = Vec::with_capacity(g.participants.len());
    let mut amounts = Vec::with_capacity(g.participants.len());
    let mut hashes = Vec::with_capacity(g.participants.len());
    for (buyer, units) in g.participants {
        let amount = g
            .unit_price_minor
            .checked_mul(i64::from(*units))
            .ok_or_else(|| Error::invalid("bad_quantity", "an order's amount does not fit"))?;
        ids.push(Uuid::now_v7());
        buyers.push(buyer.as_str());
        quantities.push(*units);
        amounts.push(amount);
        hashes.push(format!(
            "group_buy:{}:{}:{}:{}:{}",
            g.group_buy_id, g.lineup_item_id, units, g.unit_price_minor, g.currency
        ));
    }
    let on_air = hawker_agency::schedule::hosts_on_air(&mut *tx, &[g.session_id]).await?;
    let host_id = on_air.get(&g.session_id).copied().flatten();
    let ttl_secs = i64::try_from(c.config().order_ttl_secs).unwrap_or(i64::MAX);
    let created: Vec<(String, Uuid)> = sqlx::query_as(
        "insert into customer_order (order_id, source, group_buy_id, session_id, lineup_item_id, sku_id,
                buyer_id, quantity, unit_price_minor, discount_minor, amount_minor, currency, status,
                idempotency_key, request_hash, expires_at, host_id, shipping_address)
         select u.order_id, 'group_buy', $1, $2, $3, $4, u.buyer, u.quantity, $5, 0, u.amount, $6,
                'pending_payment', $7, u.hash, now() + make_interval(secs => $8), $9,
                (select p.shipping_address from viewer_profile p where p.viewer_id = u.buyer)
           from unnest($10::uuid[], $11::text[], $12::int[], $13::bigint[], $14::text[])
                as u(order_id, buyer, quantity, amount, hash)
         on conflict on constraint customer_order_idempotency do nothing
         returning buyer_id, order_id",
    )
    .bind(g.group_buy_id)
    .bind(g.session_id)
    .bind(g.lineup_item_id)
    .bind(g.sku_id)
    .bind(g.unit_price_minor)
    .bind(g.currency)
    .bind(&key)
    .bind(ttl_secs as f64)
    .bind(host_id)
    .bind(&ids)
    .bind(&buyers)
    .bind(&quantities)
    .bind(&amounts)
    .bind(&hashes)
    .fetch_all(&mut *tx)
    .await?;
    let created_ids: Vec<Uuid> = created.iter().map(|(_, id)| *id).collect();
    sqlx::query(
        "insert into order_event (order_id, to_status, detail)
         select unnest($1::uuid[]), 'pending_payment', $2",
    )
    .bind(&created_ids)
    .bind(json!({ "by": "group_buy", "group_buy_id": g.group_buy_id }))
    .execute(&mut *tx)
    .await?;
    metrics::counter!("hawker_sourced_orders_total", "source" => "group_buy").increment(created.len() as u64);
    Ok(created)
}
