//! Read-only questions other crates ask about orders that lapsed (expired
//! or cancelled without payment): whether one order did, and how many a
//! buyer let lapse lately for one source (the live crate's "buyer at risk").

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use hawker_core::error::{Error, Result};

/// Whether `order_id` lapsed: cancelled (expired or by the buyer) and never
/// paid. 404 if there is no such order.
pub async fn order_lapsed(conn: &mut PgConnection, order_id: Uuid) -> Result<bool> {
    let row: Option<(String, Option<DateTime<Utc>>)> =
        sqlx::query_as("select status, paid_at from customer_order where order_id = $1")
            .bind(order_id)
            .fetch_optional(conn)
            .await?;
    let (status, paid_at) = row.ok_or(Error::NotFound("order"))?;
    Ok(status == "cancelled" && paid_at.is_none())
}

/// How many orders of `source` (`auction`, `giveaway`, …) `buyer` let lapse
/// since `since`.
pub async fn lapsed_orders_of(db: &PgPool, buyer: &str, source: &str, since: DateTime<Utc>) -> Result<i64> {
    Ok(sqlx::query_scalar(
        "select count(*) from customer_order
          where buyer_id = $1 and source = $2 and status = 'cancelled' and paid_at is null and created_at >= $3",
    )
    .bind(buyer)
    .bind(source)
    .bind(since)
    .fetch_one(db)
    .await?)
}
