//! After a paid order: the brand ships it (carrier and tracking) and marks it
//! delivered; the buyer may ask for a return, with a reason, within
//! `commerce.return_window_secs` of delivery; the brand approves it (the
//! order is refunded in full through [`crate::payments::refund_in`], kind
//! `return`, so the ledger claws the commission back) or refuses it. Every
//! step is an `order_event` with its `kind`.
//!
//! The brand of an order is the brand of its SKU's product; only that brand
//! and admins handle fulfilment and decide returns, and only the buyer asks
//! for a return. Anyone else gets 404 for an order they may not see and 403
//! for one they may see but not change.

use chrono::{DateTime, Utc};
use hawker_core::{Claims, Role};
use serde::Deserialize;
use serde_json::{json, Value};
use sqlx::{Postgres, Transaction};
use uuid::Uuid;

use crate::free_text::clean;
use crate::journey::{self, OrderDetail};
use crate::Commerce;
use hawker_core::error::{Error, Result};

/// Longest carrier name, tracking number, return reason and decision note.
pub const MAX_CARRIER_CHARS: usize = 100;
pub const MAX_TRACKING_CHARS: usize = 100;
pub const MAX_RETURN_TEXT_CHARS: usize = 500;

/// `POST /v1/orders/{order_id}/shipment`.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Shipment {
    /// 1 to 100 characters, not all white space, without control, bidi or zero-width characters.
    #[schema(
        min_length = 1,
        max_length = 100,
        example = "DHL",
        pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f\\u00ad\\u061c\\u180e\\u200b-\\u200f\\u202a-\\u202e\\u2060-\\u2064\\u2066-\\u2069\\ufeff]*[^\\u0000-\\u001f\\u007f-\\u009f\\u00ad\\u061c\\u180e\\u200b-\\u200f\\u202a-\\u202e\\u2060-\\u2064\\u2066-\\u2069\\ufeff \\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000][^\\u0000-\\u001f\\u007f-\\u009f\\u00ad\\u061c\\u180e\\u200b-\\u200f\\u202a-\\u202e\\u2060-\\u2064\\u2066-\\u2069\\ufeff]*$"
    )]
    pub carrier: String,
    /// 1 to 100 printable ASCII characters, no space.
    #[schema(
        min_length = 1,
        max_length = 100,
        example = "JD014600006151",
        pattern = "^[!-~]{1,100}$"
    )]
    pub tracking_number: String,
}

/// `POST /v1/orders/{order_id}/return`.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReturnRequest {
    /// Why, 1 to 500 characters, not all white space; line breaks allowed,
    /// other control, bidi and zero-width characters not.
    #[schema(
        min_length = 1,
        max_length = 500,
        example = "The colour is not as shown",
        pattern = "^[^\\u0000-\\u0009\\u000b-\\u001f\\u007f-\\u009f\\u00ad\\u061c\\u180e\\u200b-\\u200f\\u202a-\\u202e\\u2060-\\u2064\\u2066-\\u2069\\ufeff]*[^\\u0000-\\u001f\\u007f-\\u009f\\u00ad\\u061c\\u180e\\u200b-\\u200f\\u202a-\\u202e\\u2060-\\u2064\\u2066-\\u2069\\ufeff \\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000][^\\u0000-\\u0009\\u000b-\\u001f\\u007f-\\u009f\\u00ad\\u061c\\u180e\\u200b-\\u200f\\u202a-\\u202e\\u2060-\\u2064\\u2066-\\u2069\\ufeff]*$"
    )]
    pub reason: String,
}

/// `POST /v1/orders/{order_id}/return/approve` and `/refuse`.
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReturnDecision {
    /// A note for the buyer, at most 500 characters; line breaks allowed,
    /// other control, bidi and zero-width characters not. "" if absent.
    #[serde(default)]
    #[schema(
        max_length = 500,
        pattern = "^[^\\u0000-\\u0009\\u000b-\\u001f\\u007f-\\u009f\\u00ad\\u061c\\u180e\\u200b-\\u200f\\u202a-\\u202e\\u2060-\\u2064\\u2066-\\u2069\\ufeff]*$"
    )]
    pub note: String,
}

#[derive(sqlx::FromRow)]
struct Locked {
    buyer_id: String,
    status: String,
    amount_minor: i64,
    fulfilment: String,
    delivered_at: Option<DateTime<Utc>>,
    brand_id: Uuid,
}

/// The order row locked for a change, with its brand.
async fn lock(tx: &mut Transaction<'_, Postgres>, order_id: Uuid) -> Result<Locked> {
    sqlx::query_as::<_, Locked>(
        "select o.buyer_id, o.status, o.amount_minor, o.fulfilment, o.delivered_at, p.brand_id
           from customer_order o
           join sku k on k.sku_id = o.sku_id
           join product p on p.product_id = k.product_id
          where o.order_id = $1
            for update of o",
    )
    .bind(order_id)
    .fetch_optional(&mut **tx)
    .await?
    .ok_or(Error::NotFound("order"))
}

/// Only the order's brand and admins handle its fulfilment and returns.
fn require_brand(claims: &Claims, order: &Locked) -> Result<()> {
    let allowed = match claims.role {
        Role::Admin => true,
        Role::Brand => claims.brand_id == Some(order.brand_id),
        _ => false,
    };
    if allowed {
        Ok(())
    } else if claims.sub == order.buyer_id {
        Err(Error::forbidden(
            "only the product's brand or an admin may do this",
        ))
    } else {
        // Not the buyer, not the brand: do not reveal that the order exists.
        Err(Error::NotFound("order"))
    }
}

async fn record(
    tx: &mut Transaction<'_, Postgres>,
    order_id: Uuid,
    status: &str,
    kind: &str,
    detail: Value,
) -> Result<()> {
    sqlx::query(
        "insert into order_event (order_id, from_status, to_status, detail, kind) values ($1, $2, $2, $3, $4)",
    )
    .bind(order_id)
    .bind(status)
    .bind(detail)
    .bind(kind)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// An order the brand sees after a change.
async fn detail(c: &Commerce, order_id: Uuid) -> Result<OrderDetail> {
    let view = journey::view(c, order_id).await?;
    journey::detail_of(c, view).await
}

/// The brand ships a paid order (`fulfilment` becomes `shipped`).
#[tracing::instrument(skip_all, fields(%order_id, caller = %claims.sub))]
pub async fn ship(c: &Commerce, claims: &Claims, order_id: Uuid, shipment: Shipment) -> Result<OrderDetail> {
    clean(
        "carrier",
        "bad_carrier",
        &shipment.carrier,
        MAX_CARRIER_CHARS,
        false,
        false,
    )?;
    let t = &shipment.tracking_number;
    if t.is_empty() || t.len() > MAX_TRACKING_CHARS || !t.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(Error::invalid(
            "bad_tracking_number",
            "tracking_number must be 1 to 100 printable ASCII characters without spaces",
        ));
    }
    let mut tx = c.db().begin().await?;
    let order = lock(&mut tx, order_id).await?;
    require_brand(claims, &order)?;
    if order.status != "paid" {
        return Err(Error::conflict(
            "order_not_paid",
            format!("only a paid order can be shipped; this one is {}", order.status),
        ));
    }
    if order.fulfilment != "unfulfilled" {
        return Err(Error::conflict(
            "already_shipped",
            "the order has already been shipped",
        ));
    }
    sqlx::query(
        "update customer_order set fulfilment = 'shipped', carrier = $2, tracking_number = $3, shipped_at = now()
          where order_id = $1",
    )
    .bind(order_id)
    .bind(&shipment.carrier)
    .bind(&shipment.tracking_number)
    .execute(&mut *tx)
    .await?;
    let by = &claims.sub;
    let detail_json =
        json!({ "carrier": shipment.carrier, "tracking_number": shipment.tracking_number, "by": by });
    record(&mut tx, order_id, &order.status, "shipped", detail_json).await?;
    tx.commit().await?;
    detail(c, order_id).await
}

/// The brand marks a shipped order delivered: the return window opens.
#[tracing::instrument(skip_all, fields(%order_id, caller = %claims.sub))]
pub async fn deliver(c: &Commerce, claims: &Claims, order_id: Uuid) -> Result<OrderDetail> {
    let mut tx = c.db().begin().await?;
    let order = lock(&mut tx, order_id).await?;
    require_brand(claims, &order)?;
    match order.fulfilment.as_str() {
        "shipped" => {}
        "delivered" => {
            return Err(Error::conflict(
                "already_delivered",
                "the order is already delivered",
            ))
        }
        _ => return Err(Error::conflict("not_shipped", "the order has not been shipped")),
    }
    sqlx::query(
        "update customer_order set fulfilment = 'delivered', delivered_at = now() where order_id = $1",
    )
    .bind(order_id)
    .execute(&mut *tx)
    .await?;
    record(
        &mut tx,
        order_id,
        &order.status,
        "delivered",
        json!({ "by": claims.sub }),
    )
    .await?;
    tx.commit().await?;
    detail(c, order_id).await
}

/// The buyer asks to return a delivered order, within the return window.
#[tracing::instrument(skip_all, fields(%order_id, caller = %claims.sub))]
pub async fn request_return(
    c: &Commerce,
    claims: &Claims,
    order_id: Uuid,
    request: ReturnRequest,
) -> Result<OrderDetail> {
    clean(
        "reason",
        "bad_reason",
        &request.reason,
        MAX_RETURN_TEXT_CHARS,
        true,
        false,
    )?;
    let mut tx = c.db().begin().await?;
    let order = lock(&mut tx, order_id).await?;
    if order.buyer_id != claims.sub {
        return Err(Error::NotFound("order"));
    }
    let Some(delivered_at) = order.delivered_at else {
        return Err(Error::conflict(
            "not_delivered",
            "only a delivered order can be returned",
        ));
    };
    if order.status != "paid" {
        return Err(Error::conflict(
            "order_not_paid",
            format!("only a paid order can be returned; this one is {}", order.status),
        ));
    }
    let window = c.config().return_window_secs;
    let window = chrono::Duration::seconds(i64::try_from(window).unwrap_or(i64::MAX / 1000));
    let closes = delivered_at
        .checked_add_signed(window)
        .unwrap_or(DateTime::<Utc>::MAX_UTC);
    let now: DateTime<Utc> = sqlx::query_scalar("select now()").fetch_one(&mut *tx).await?;
    if now > closes {
        return Err(Error::conflict(
            "return_window_closed",
            format!(
                "returns close {}s after delivery; this one closed at {closes}",
                c.config().return_window_secs
            ),
        ));
    }
    let inserted = sqlx::query(
        "insert into order_return (order_id, reason) values ($1, $2) on conflict (order_id) do nothing",
    )
    .bind(order_id)
    .bind(&request.reason)
    .execute(&mut *tx)
    .await?;
    if inserted.rows_affected() == 0 {
        return Err(Error::conflict(
            "return_exists",
            "a return was already asked for this order",
        ));
    }
    record(
        &mut tx,
        order_id,
        &order.status,
        "return_requested",
        json!({ "reason": request.reason }),
    )
    .await?;
    tx.commit().await?;
    journey::my_order(c, claims, order_id).await
}

/// The brand approves (the order is refunded in full, kind `return`) or
/// refuses a requested return.
#[tracing::instrument(skip_all, fields(%order_id, approve, caller = %claims.sub))]
pub async fn decide_return(
    c: &Commerce,
    claims: &Claims,
    order_id: Uuid,
    approve: bool,
    decision: ReturnDecision,
) -> Result<OrderDetail> {
    clean(
        "note",
        "bad_note",
        &decision.note,
        MAX_RETURN_TEXT_CHARS,
        true,
        true,
    )?;
    let mut tx = c.db().begin().await?;
    let order = lock(&mut tx, order_id).await?;
    require_brand(claims, &order)?;
    let status: Option<String> = sqlx::query_scalar("select status from order_return where order_id = $1")
        .bind(order_id)
        .fetch_optional(&mut *tx)
        .await?;
    match status.as_deref() {
        Some("requested") => {}
        Some(_) => {
            return Err(Error::conflict(
                "return_already_decided",
                "the return has already been decided",
            ))
        }
        None => return Err(Error::NotFound("return")),
    }
    let (kind, refund_id) = if approve {
        let already: i64 = sqlx::query_scalar(
            "select coalesce(sum(amount_minor), 0)::bigint from refund where order_id = $1",
        )
        .bind(order_id)
        .fetch_one(&mut *tx)
        .await?;
        let amount = order.amount_minor.checked_sub(already).unwrap_or(0);
        if amount <= 0 {
            return Err(Error::conflict(
                "order_not_paid",
                "nothing is left to refund on this order",
            ));
        }
        let reason = if decision.note.is_empty() {
            "return approved"
        } else {
            decision.note.as_str()
        };
        let refund = crate::payments::refund_in(&mut tx, claims, order_id, amount, reason, "return").await?;
        ("return_approved", Some(refund.refund_id))
    } else {
        ("return_refused", None)
    };
    sqlx::query(
        "update order_return set status = $2, decided_at = now(), decided_by = $3, note = $4, refund_id = $5
          where order_id = $1",
    )
    .bind(order_id)
    .bind(if approve { "approved" } else { "refused" })
    .bind(&claims.sub)
    .bind(&decision.note)
    .bind(refund_id)
    .execute(&mut *tx)
    .await?;
    let status_now: String = sqlx::query_scalar("select status from customer_order where order_id = $1")
        .bind(order_id)
        .fetch_one(&mut *tx)
        .await?;
    record(
        &mut tx,
        order_id,
        &status_now,
        kind,
        json!({ "note": decision.note, "refund_id": refund_id, "by": claims.sub }),
    )
    .await?;
    tx.commit().await?;
    if approve {
        metrics::counter!("hawker_refunds_total", "kind" => "return").increment(1);
    }
    detail(c, order_id).await
}
