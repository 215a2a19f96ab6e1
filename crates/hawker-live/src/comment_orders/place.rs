//! Placing a comment-to-buy order: the lineup item at the link number, its
//! live deal, the variant, then the ordinary purchase path. The buyer hears
//! the outcome privately: `comment_order.placed` (the order) or
//! `comment_order.refused` (a code and a message).

use std::time::Duration;

use hawker_commerce::purchase::{place_order, PlaceOrder, MAX_QUANTITY};
use hawker_hub::Notice;
use serde_json::{json, Value};
use uuid::Uuid;

use super::grammar::Intent;
use crate::{Error, Live, Result};

/// The item a line names, and the deal it buys from.
#[derive(Debug, sqlx::FromRow)]
struct Target {
    sku_code: String,
    deal_id: Option<Uuid>,
}

/// Places the order and tells the buyer.
#[tracing::instrument(skip_all, fields(%session, link = intent.link_number, quantity = intent.quantity))]
pub(crate) async fn place(live: &Live, session: Uuid, buyer: &str, intent: Intent, key: &str) {
    // Bounded work per node: a chat storm queues here rather than starving
    // the database pool of the rest of the node.
    let Ok(_slot) = live.inner.comment_slots.acquire().await else {
        return;
    };
    let asked = json!({
        "link_number": intent.link_number,
        "quantity": intent.quantity,
        "variant": intent.variant,
        "idempotency_key": key,
    });
    let notice = match order(live, session, buyer, &intent, key).await {
        Ok((order, replayed)) => {
            metrics::counter!("hawker_comment_orders_total", "outcome" => "placed").increment(1);
            let mut data = asked;
            data["order"] = order;
            data["replayed"] = json!(replayed);
            Notice::new(buyer, "comment_order.placed", data)
        }
        Err(e) => {
            metrics::counter!("hawker_comment_orders_total", "outcome" => e.code()).increment(1);
            let mut data = asked;
            data["code"] = json!(e.code());
            data["message"] = json!(refusal_message(&e));
            Notice::new(buyer, "comment_order.refused", data)
        }
    };
    let notice = notice.in_session(session);
    // The buyer learns the outcome only from this notice: a busy database
    // gets a few tries.
    for attempt in 1..=NOTICE_TRIES {
        match live.hub().publish_notice(&notice).await {
            Ok(_) => return,
            Err(e) if attempt == NOTICE_TRIES => {
                tracing::warn!(error = %e, "comment-to-buy notice not recorded");
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100 * u64::from(attempt))).await,
        }
    }
}

/// Tries at recording a buyer's notice.
const NOTICE_TRIES: u32 = 5;

/// What the buyer reads: the domain message, never an internal error's.
fn refusal_message(e: &Error) -> String {
    match e {
        Error::Internal(_) => "the order could not be placed; try again".to_string(),
        other => other.to_string(),
    }
}

async fn order(live: &Live, session: Uuid, buyer: &str, intent: &Intent, key: &str) -> Result<(Value, bool)> {
    let quantity = i32::try_from(intent.quantity).unwrap_or(i32::MAX);
    if !(1..=MAX_QUANTITY).contains(&quantity) {
        return Err(Error::invalid(
            "bad_quantity",
            format!("quantity must be 1 to {MAX_QUANTITY}"),
        ));
    }
    let link = i32::try_from(intent.link_number).unwrap_or(i32::MAX);
    // The item's live deal if it has one, else its latest (the gate then
    // answers deal_not_started, deal_ended or sold_out).
    let target = sqlx::query_as::<_, Target>(
        "select s.code as sku_code, d.deal_id
           from lineup_item l join sku s using (sku_id)
           left join lateral (select deal_id from deal
                               where deal.lineup_item_id = l.lineup_item_id
                               order by (status = 'live') desc, starts_at desc limit 1) d on true
          where l.session_id = $1 and l.link_number = $2",
    )
    .bind(session)
    .bind(link)
    .fetch_optional(live.db())
    .await?;
    let Some(target) = target else {
        return Err(Error::conflict(
            "no_such_item",
            format!("there is no item #{} in this show", intent.link_number),
        ));
    };
    if let Some(variant) = &intent.variant {
        if !variant.eq_ignore_ascii_case(&target.sku_code) {
            return Err(Error::conflict(
                "bad_variant",
                format!(
                    "item #{} has no variant \"{variant}\" (its code is {})",
                    intent.link_number, target.sku_code
                ),
            ));
        }
    }
    let Some(deal_id) = target.deal_id else {
        return Err(Error::conflict(
            "no_live_deal",
            format!("item #{} is not on sale right now", intent.link_number),
        ));
    };
    let request = PlaceOrder {
        quantity,
        coupon_claim_id: None,
    };
    let placed = place_order(live.commerce(), buyer, deal_id, key, request).await?;
    let order = serde_json::to_value(&placed.order).map_err(anyhow::Error::from)?;
    Ok((order, placed.replayed))
}
