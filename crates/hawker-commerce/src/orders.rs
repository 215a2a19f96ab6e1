//! Purchases: `place_order` runs the gate, hands admitted requests to the
//! settlement writer and answers after the commit.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::gate::{key_field, Admission};
use crate::settle::{SettleOutcome, SettleRequest};
use crate::Commerce;
use hawker_core::error::{Error, Result};

pub const MAX_QUANTITY: i32 = 100;

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

pub const ORDER_COLUMNS: &str = "order_id, deal_id, session_id, lineup_item_id, sku_id, buyer_id, quantity, \
    unit_price_minor, discount_minor, amount_minor, currency, coupon_claim_id, status, created_at, expires_at, \
    paid_at, cancelled_at, host_id";

/// The body of a purchase.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PlaceOrder {
    /// 1 to 100 units.
    pub quantity: i32,
    /// A coupon the buyer claimed, applied by the server.
    #[serde(default)]
    pub coupon_claim_id: Option<Uuid>,
}

/// A purchase's answer: the order, and whether it is a replay of an earlier request.
#[derive(Debug, Clone)]
pub struct Placed {
    pub order: Order,
    pub replayed: bool,
}

/// Hash of what the request asks for, to tell a retry from a reused key.
pub fn request_hash(deal_id: Uuid, request: &PlaceOrder) -> String {
    let mut hasher = Sha256::new();
    hasher.update(deal_id.as_bytes());
    hasher.update(request.quantity.to_be_bytes());
    if let Some(coupon) = request.coupon_claim_id {
        hasher.update(coupon.as_bytes());
    }
    hex::encode(&hasher.finalize()[..12])
}

pub fn validate_idempotency_key(key: &str) -> Result<()> {
    if key.is_empty() || key.len() > 200 || key.contains('\n') {
        return Err(Error::invalid(
            "bad_idempotency_key",
            "Idempotency-Key must be 1 to 200 characters without newlines",
        ));
    }
    Ok(())
}

/// Buys `request.quantity` units of a deal for `buyer`.
#[tracing::instrument(skip(c, request), fields(quantity = request.quantity))]
pub async fn place_order(
    c: &Commerce,
    buyer: &str,
    deal_id: Uuid,
    idempotency_key: &str,
    request: PlaceOrder,
) -> Result<Placed> {
    validate_idempotency_key(idempotency_key)?;
    if !(1..=MAX_QUANTITY).contains(&request.quantity) {
        return Err(Error::invalid(
            "bad_quantity",
            format!("quantity must be 1 to {MAX_QUANTITY}"),
        ));
    }
    if c.inner.settler.database_down() {
        return Err(Error::Unavailable { what: "the database" });
    }
    let hash = request_hash(deal_id, &request);
    let field = key_field(buyer, idempotency_key);
    let gate = &c.inner.gate;
    let mut admission = gate
        .admit(deal_id, buyer, request.quantity, &field, &hash)
        .await?;
    for _ in 0..20 {
        if admission != Admission::Missing {
            break;
        }
        gate.rebuild(deal_id).await?;
        admission = gate
            .admit(deal_id, buyer, request.quantity, &field, &hash)
            .await?;
    }
    match admission {
        Admission::Admitted => settle(c, buyer, deal_id, idempotency_key, &hash, &field, &request).await,
        Admission::Repeat(previous) => {
            replay(
                c,
                buyer,
                deal_id,
                idempotency_key,
                &hash,
                &field,
                &request,
                &previous,
            )
            .await
        }
        Admission::NotStarted => Err(Error::conflict(
            "deal_not_started",
            "the deal has not started yet",
        )),
        Admission::Ended => Err(Error::conflict("deal_ended", "the deal has ended")),
        Admission::SoldOut => Err(Error::conflict("sold_out", "the deal is sold out")),
        Admission::CapExceeded { held } => Err(Error::conflict(
            "cap_exceeded",
            format!("the per-buyer cap would be exceeded (you hold {held})"),
        )),
        Admission::Missing => Err(Error::Unavailable {
            what: "the admission gate",
        }),
    }
}

async fn settle(
    c: &Commerce,
    buyer: &str,
    deal_id: Uuid,
    idempotency_key: &str,
    hash: &str,
    field: &str,
    request: &PlaceOrder,
) -> Result<Placed> {
    let outcome = c
        .inner
        .settler
        .submit(SettleRequest {
            deal_id,
            buyer: buyer.to_string(),
            quantity: request.quantity,
            idempotency_key: idempotency_key.to_string(),
            request_hash: hash.to_string(),
            coupon_claim_id: request.coupon_claim_id,
            field: field.to_string(),
        })
        .await?;
    match outcome {
        SettleOutcome::Created(order) => Ok(Placed {
            order,
            replayed: false,
        }),
        SettleOutcome::Existing(order) => Ok(Placed {
            order,
            replayed: true,
        }),
        SettleOutcome::Rejected(error) => Err(error),
    }
}

/// A repeated (buyer, key): the first answer if the body is the same.
#[allow(clippy::too_many_arguments)]
async fn replay(
    c: &Commerce,
    buyer: &str,
    deal_id: Uuid,
    idempotency_key: &str,
    hash: &str,
    field: &str,
    request: &PlaceOrder,
    previous: &str,
) -> Result<Placed> {
    if let Some(pending) = previous.strip_prefix("p:") {
        // Reserved but not settled: in flight, or its node died before the
        // commit. The reservation belongs to this key, so settle it now (the
        // settlement writer returns the existing order if there is one).
        if pending.rsplit(':').next() != Some(hash) {
            return Err(reused());
        }
        for _ in 0..50 {
            if let Some(order) = find_by_key(c, buyer, idempotency_key).await? {
                return same_request(order, hash, c).await;
            }
            // Give an in-flight settlement a moment before taking over.
            tokio::time::sleep(Duration::from_millis(20)).await;
            if c.inner
                .gate
                .admit(deal_id, buyer, request.quantity, field, hash)
                .await?
                != Admission::Repeat(previous.to_string())
            {
                break;
            }
        }
        return settle(c, buyer, deal_id, idempotency_key, hash, field, request).await;
    }
    match find_by_key(c, buyer, idempotency_key).await? {
        Some(order) => same_request(order, hash, c).await,
        None => Err(Error::Unavailable {
            what: "the order store",
        }),
    }
}

fn reused() -> Error {
    Error::conflict(
        "idempotency_key_reused",
        "this Idempotency-Key was used with a different request",
    )
}

async fn same_request(order: Order, hash: &str, c: &Commerce) -> Result<Placed> {
    let stored: Option<String> =
        sqlx::query_scalar("select request_hash from customer_order where order_id = $1")
            .bind(order.order_id)
            .fetch_optional(c.db())
            .await?;
    if stored.as_deref() == Some(hash) {
        Ok(Placed {
            order,
            replayed: true,
        })
    } else {
        Err(reused())
    }
}

async fn find_by_key(c: &Commerce, buyer: &str, idempotency_key: &str) -> Result<Option<Order>> {
    Ok(sqlx::query_as::<_, Order>(&format!(
        "select {ORDER_COLUMNS} from customer_order where buyer_id = $1 and idempotency_key = $2"
    ))
    .bind(buyer)
    .bind(idempotency_key)
    .fetch_optional(c.db())
    .await?)
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
